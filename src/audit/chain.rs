//! The keyed hash chain.
//!
//! Each row carries two digests. `hash` is SHA-256 over every stored column and the previous
//! row's hash, so anyone can recompute the links (and an exported range can be checked on
//! another machine). `mac` is HMAC-SHA256 of that hash under the chain key, which only the
//! servers and the auditors hold: editing a row and recomputing the hashes after it (the
//! attack a plain SHA-256 chain cannot see) leaves every MAC from that row on wrong.
//!
//! Rows written before the chain was keyed are scheme `v1` (SHA-256 over some columns, no MAC).
//! They are accepted only before the first keyed row, whose hash covers theirs; a `v1` row after
//! a `v2` one is a downgrade, and a chain that ends in `v1` rows is unprotected.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::StoredRow;

/// Legacy rows: SHA-256 over prev, seq, kind, request id, time and body.
pub const SCHEME_V1: &str = "v1";
/// Keyed rows: SHA-256 over every column, and an HMAC of it.
pub const SCHEME_V2: &str = "v2";

/// A row ready to be chained: everything but its position and digests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRow {
    /// Request (or event) id.
    pub request_id: String,
    /// `decision`, `outcome` or `event`.
    pub kind: String,
    /// RFC 3339 time the row was queued.
    pub ts: String,
    /// Tenant column.
    pub tenant: Option<String>,
    /// Action column.
    pub action: Option<String>,
    /// Outcome column.
    pub outcome: Option<String>,
    /// Status column.
    pub status: Option<i64>,
    /// Canonical JSON body.
    pub body: String,
}

/// The secret that keys the chain; distinct from the key of value digests.
#[derive(Clone)]
pub struct ChainKey {
    key: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for ChainKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChainKey(..)")
    }
}

impl ChainKey {
    /// A key from its bytes (at least 16).
    pub fn new(key: &[u8]) -> Result<Self, String> {
        if key.len() < 16 {
            return Err("the audit chain key must be at least 16 bytes".to_owned());
        }
        Ok(Self {
            key: Zeroizing::new(key.to_vec()),
        })
    }

    /// HMAC-SHA256 of a row hash, hex.
    pub fn mac(&self, hash: &str) -> String {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.key) else {
            return String::new();
        };
        mac.update(b"veil-audit-row/2\0");
        mac.update(hash.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// Whether `mac` is this key's MAC of `hash` (compared in constant time).
    pub fn check(&self, hash: &str, mac: &str) -> bool {
        let Ok(mut m) = Hmac::<Sha256>::new_from_slice(&self.key) else {
            return false;
        };
        m.update(b"veil-audit-row/2\0");
        m.update(hash.as_bytes());
        hex::decode(mac).is_ok_and(|bytes| m.verify_slice(&bytes).is_ok())
    }

    /// Chains `rows` after the row `(seq, hash)` (`(0, GENESIS)` for an empty log).
    pub fn link(&self, tail: (i64, &str), rows: &[NewRow]) -> Vec<StoredRow> {
        let (mut seq, mut prev) = (tail.0, tail.1.to_owned());
        rows.iter()
            .map(|r| {
                seq += 1;
                let mut row = StoredRow {
                    seq,
                    request_id: r.request_id.clone(),
                    kind: r.kind.clone(),
                    ts: r.ts.clone(),
                    tenant: r.tenant.clone(),
                    action: r.action.clone(),
                    outcome: r.outcome.clone(),
                    status: r.status,
                    body: r.body.clone(),
                    prev_hash: std::mem::take(&mut prev),
                    hash: String::new(),
                    scheme: SCHEME_V2.to_owned(),
                    mac: None,
                };
                row.hash = row.content_hash();
                row.mac = Some(self.mac(&row.hash));
                prev.clone_from(&row.hash);
                row
            })
            .collect()
    }
}

impl StoredRow {
    /// The hash this row should carry given its columns and `prev_hash`, under its scheme.
    pub fn content_hash(&self) -> String {
        if self.scheme == SCHEME_V1 {
            return v1_hash(self);
        }
        let mut h = Sha256::new();
        h.update(b"veil-audit-row/2\0");
        let status = self.status.map(|s| s.to_string());
        let fields: [Option<&str>; 11] = [
            Some(&self.scheme),
            Some(&self.prev_hash),
            Some(&self.seq.to_string()),
            Some(&self.request_id),
            Some(&self.kind),
            Some(&self.ts),
            self.tenant.as_deref(),
            self.action.as_deref(),
            self.outcome.as_deref(),
            status.as_deref(),
            Some(&self.body),
        ];
        // Length-prefixed, with absent distinct from empty: no two rows encode alike.
        for field in fields {
            match field {
                None => h.update([0u8]),
                Some(v) => {
                    h.update([1u8]);
                    h.update((v.len() as u64).to_be_bytes());
                    h.update(v.as_bytes());
                }
            }
        }
        hex::encode(h.finalize())
    }
}

fn v1_hash(row: &StoredRow) -> String {
    let mut h = Sha256::new();
    for part in [
        row.prev_hash.as_str(),
        &row.seq.to_string(),
        &row.kind,
        &row.request_id,
        &row.ts,
        &row.body,
    ] {
        h.update(part.as_bytes());
        h.update([0u8]);
    }
    hex::encode(h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> NewRow {
        NewRow {
            request_id: "r1".into(),
            kind: "decision".into(),
            ts: "2026-01-01T00:00:00Z".into(),
            tenant: Some("clinic".into()),
            action: Some("block".into()),
            outcome: None,
            status: None,
            body: "{}".into(),
        }
    }

    #[test]
    fn every_column_changes_the_hash() {
        let key = ChainKey::new(&[7; 32]).unwrap_or_else(|e| panic!("{e}"));
        let base = key.link((0, super::super::GENESIS), &[row()]).remove(0);
        assert!(key.check(&base.hash, base.mac.as_deref().unwrap_or_default()));
        let edits: [fn(&mut StoredRow); 12] = [
            |r| r.seq = 2,
            |r| r.request_id = "r2".into(),
            |r| r.kind = "outcome".into(),
            |r| r.ts = "2026-01-01T00:00:01Z".into(),
            |r| r.tenant = None,
            |r| r.tenant = Some(String::new()),
            |r| r.action = Some("allow".into()),
            |r| r.outcome = Some("completed".into()),
            |r| r.status = Some(200),
            |r| r.body = "{ }".into(),
            |r| r.prev_hash = "1".repeat(64),
            |r| r.scheme = "v3".into(),
        ];
        for (i, edit) in edits.iter().enumerate() {
            let mut r = base.clone();
            edit(&mut r);
            assert_ne!(r.content_hash(), base.hash, "edit {i} not covered");
        }
        // Moving text between adjacent columns is an edit too.
        let mut a = base.clone();
        a.tenant = Some("clin".into());
        a.action = Some("icblock".into());
        assert_ne!(a.content_hash(), base.hash);
    }

    #[test]
    fn the_mac_needs_the_key() {
        let key = ChainKey::new(&[7; 32]).unwrap_or_else(|e| panic!("{e}"));
        let other = ChainKey::new(&[8; 32]).unwrap_or_else(|e| panic!("{e}"));
        let r = key.link((0, super::super::GENESIS), &[row()]).remove(0);
        let mac = r.mac.clone().unwrap_or_default();
        assert!(key.check(&r.hash, &mac));
        assert!(!other.check(&r.hash, &mac));
        assert!(!key.check(&r.hash, "zz"));
        assert!(ChainKey::new(b"short").is_err());
    }
}
