//! Signed checkpoints: "the chain had `seq` rows and ended in `head` at `ts`", signed with
//! Ed25519. veil writes one every N rows or T seconds (and at shutdown) into the database and
//! appends it to a file outside it. A checkpoint held outside the database is what makes a cut
//! tail, or the whole database swapped for an older copy, visible: the log no longer reaches a
//! point it was signed to have reached.

use std::io::{BufRead as _, Write as _};
use std::path::Path;

use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// One signed statement about the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Sequence number of the last row covered.
    pub seq: i64,
    /// That row's hash.
    pub head: String,
    /// When it was signed (RFC 3339 UTC).
    pub ts: String,
    /// Which key signed it: the first 16 hex digits of SHA-256 of the public key.
    pub key_id: String,
    /// Ed25519 signature of [`Checkpoint::message`], hex.
    pub signature: String,
}

impl Checkpoint {
    /// The bytes that are signed.
    pub fn message(seq: i64, head: &str, ts: &str) -> Vec<u8> {
        format!("veil-audit-checkpoint/1\n{seq}\n{head}\n{ts}\n").into_bytes()
    }

    /// Checks the signature with whichever of `keys` has this checkpoint's key id.
    pub fn check(&self, keys: &[VerifyingKey]) -> Result<(), String> {
        let Some(key) = keys.iter().find(|k| key_id(k) == self.key_id) else {
            return Err(format!(
                "signed by key {} which is not among the public keys given",
                self.key_id
            ));
        };
        let bytes: [u8; 64] = hex::decode(&self.signature)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or("signature is not 64 hex-encoded bytes")?;
        key.verify(
            &Self::message(self.seq, &self.head, &self.ts),
            &Signature::from_bytes(&bytes),
        )
        .map_err(|_| "signature does not verify (checkpoint forged or altered)".to_owned())
    }
}

/// The id of a public key.
pub fn key_id(key: &VerifyingKey) -> String {
    let digest = hex::encode(Sha256::digest(key.as_bytes()));
    digest.get(..16).unwrap_or(&digest).to_owned()
}

/// The Ed25519 key that signs checkpoints.
pub struct Signer {
    key: SigningKey,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signer({})", key_id(&self.key.verifying_key()))
    }
}

impl Signer {
    /// A signer from a 32-byte seed.
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        Self {
            key: SigningKey::from_bytes(seed),
        }
    }

    /// A signer from hex text (64 hex digits: the 32-byte seed).
    pub fn from_hex(text: &str) -> Result<Self, String> {
        let bytes = Zeroizing::new(
            hex::decode(text.trim())
                .map_err(|_| "the checkpoint signing key is not hex".to_owned())?,
        );
        let seed: Zeroizing<[u8; 32]> =
            Zeroizing::new(bytes.as_slice().try_into().map_err(|_| {
                "the checkpoint signing key must be 32 bytes (64 hex digits)".to_owned()
            })?);
        Ok(Self::from_seed(&seed))
    }

    /// A new random key, as hex (for a key file).
    pub fn generate_hex() -> Zeroizing<String> {
        let seed: Zeroizing<[u8; 32]> = Zeroizing::new(rand::random());
        Zeroizing::new(hex::encode(*seed))
    }

    /// The public key.
    pub fn public(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    /// Signs the chain head `(seq, head)` now.
    pub fn sign(&self, seq: i64, head: &str, ts: &str) -> Checkpoint {
        let signature = self.key.sign(&Checkpoint::message(seq, head, ts));
        Checkpoint {
            seq,
            head: head.to_owned(),
            ts: ts.to_owned(),
            key_id: key_id(&self.public()),
            signature: hex::encode(signature.to_bytes()),
        }
    }
}

/// A public key as written to a `.pub` file: 64 hex digits.
pub fn public_hex(key: &VerifyingKey) -> String {
    hex::encode(key.as_bytes())
}

/// Reads public keys from a file: one per line, 64 hex digits; `#` comments allowed.
pub fn read_public_keys(path: &Path) -> Result<Vec<VerifyingKey>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read public key file {}: {e}", path.display()))?;
    let keys = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let bytes: [u8; 32] = hex::decode(l)
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| format!("{}: not a 32-byte hex public key", path.display()))?;
            VerifyingKey::from_bytes(&bytes)
                .map_err(|_| format!("{}: not a valid Ed25519 public key", path.display()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if keys.is_empty() {
        return Err(format!("{}: no public key in the file", path.display()));
    }
    Ok(keys)
}

/// Appends a checkpoint to a JSON-lines file and syncs it.
pub fn append_to_file(path: &Path, cp: &Checkpoint) -> std::io::Result<()> {
    if let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent)?;
    }
    let mut line = serde_json::to_vec(cp).map_err(std::io::Error::other)?;
    line.push(b'\n');
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    file.write_all(&line)?;
    file.sync_data()
}

/// Reads a checkpoint file. A line that does not parse is reported, not skipped silently: a
/// checkpoint file is evidence, and a damaged one is itself a finding.
pub fn read_file(path: &Path) -> Result<(Vec<Checkpoint>, Vec<String>), String> {
    let file = std::fs::File::open(path)
        .map_err(|e| format!("cannot read checkpoint file {}: {e}", path.display()))?;
    let mut checkpoints = Vec::new();
    let mut damaged = Vec::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| format!("{}: {e}", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Checkpoint>(&line) {
            Ok(cp) => checkpoints.push(cp),
            Err(e) => damaged.push(format!(
                "{} line {}: not a checkpoint ({e})",
                path.display(),
                i + 1
            )),
        }
    }
    Ok((checkpoints, damaged))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_verifies_only_unaltered_and_with_its_key() {
        let signer = Signer::from_seed(&[3; 32]);
        let other = Signer::from_seed(&[4; 32]);
        let cp = signer.sign(10, &"a".repeat(64), "2026-01-01T00:00:00Z");
        assert_eq!(cp.check(&[other.public(), signer.public()]), Ok(()));
        assert!(cp.check(&[other.public()]).is_err());
        for edit in [
            |c: &mut Checkpoint| c.seq = 11,
            |c: &mut Checkpoint| c.head = "b".repeat(64),
            |c: &mut Checkpoint| c.ts = "2027-01-01T00:00:00Z".into(),
            |c: &mut Checkpoint| c.signature = "00".repeat(64),
        ] {
            let mut c = cp.clone();
            edit(&mut c);
            assert!(c.check(&[signer.public()]).is_err());
        }
    }

    #[test]
    fn keys_and_files_round_trip() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let hex_key = Signer::generate_hex();
        let signer = Signer::from_hex(&hex_key).unwrap_or_else(|e| panic!("{e}"));
        assert!(Signer::from_hex("abcd").is_err());
        let pub_path = dir.path().join("k.pub");
        std::fs::write(
            &pub_path,
            format!("# veil\n{}\n", public_hex(&signer.public())),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let keys = read_public_keys(&pub_path).unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("c/cp.jsonl");
        let a = signer.sign(1, "h1", "t1");
        let b = signer.sign(2, "h2", "t2");
        append_to_file(&path, &a).unwrap_or_else(|e| panic!("{e}"));
        append_to_file(&path, &b).unwrap_or_else(|e| panic!("{e}"));
        // A torn last line (a crash mid-append) is reported.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("{e}"));
        f.write_all(b"{\"seq\":3,\"he")
            .unwrap_or_else(|e| panic!("{e}"));
        let (cps, damaged) = read_file(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cps, [a.clone(), b]);
        assert_eq!(damaged.len(), 1);
        assert_eq!(a.check(&keys), Ok(()));
    }
}
