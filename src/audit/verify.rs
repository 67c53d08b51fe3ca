//! Verifying the chain: every link, every row's content, every MAC when the chain key is at hand,
//! and every signed checkpoint — those in the database and those kept outside it.
//!
//! Which tampering shows how: an edited column changes the row's hash; a deleted, inserted or
//! moved row breaks the sequence or a `prev_hash` link; hashes recomputed after an edit leave the
//! MACs wrong (they need the key) and disagree with any later signed checkpoint; a cut tail or an
//! older copy of the database ends before a checkpoint signed further on.

use std::collections::BTreeMap;

use ed25519_dalek::VerifyingKey;

use super::chain::{SCHEME_V1, SCHEME_V2};
use super::{AuditError, AuditStore, ChainKey, Checkpoint, GENESIS, StoredRow};

/// A problem found by a [`Verifier`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainProblem {
    /// Sequence number of the row (or checkpoint) where the problem shows.
    pub seq: i64,
    /// What is wrong.
    pub problem: String,
}

/// What a verification may use beyond the rows.
#[derive(Debug, Default, Clone)]
pub struct Evidence {
    /// The chain key: with it, every row's MAC is checked.
    pub key: Option<ChainKey>,
    /// Public keys of the checkpoint signers.
    pub public_keys: Vec<VerifyingKey>,
    /// Checkpoints kept outside the database, with where each came from.
    pub checkpoints: Vec<(String, Checkpoint)>,
    /// Rows signed less than this many days ago must still be there: a chain that starts after
    /// seq 1 is a pruned one only if its first row follows a checkpoint older than this.
    pub retention_days: Option<u64>,
}

/// Checks the links and hashes of rows that start the chain (no key, no checkpoints).
pub fn verify(rows: &[StoredRow]) -> Vec<ChainProblem> {
    let mut v = Verifier::from_genesis();
    v.feed(rows);
    v.finish(true);
    v.problems
}

/// Verifies the rows `from..=to` of a store (the whole chain by default), reading a page of
/// rows at a time, against the store's own checkpoints and those of `evidence`.
pub async fn verify_store(
    store: &dyn AuditStore,
    from: Option<i64>,
    to: Option<i64>,
    evidence: &Evidence,
) -> Result<Verifier, AuditError> {
    verify_pages(store, from, to, evidence, 10_000).await
}

pub(super) async fn verify_pages(
    store: &dyn AuditStore,
    from: Option<i64>,
    to: Option<i64>,
    evidence: &Evidence,
    page: i64,
) -> Result<Verifier, AuditError> {
    let mut after = from.map_or(0, |f| f.saturating_sub(1)).max(0);
    let mut v = if after == 0 {
        Verifier::from_genesis()
    } else {
        Verifier::from_inside()
    };
    let mut checkpoints: Vec<(String, Checkpoint)> = store
        .checkpoints()
        .await?
        .into_iter()
        .map(|cp| ("database".to_owned(), cp))
        .collect();
    checkpoints.extend(evidence.checkpoints.iter().cloned());
    v.use_evidence(evidence.key.clone(), &evidence.public_keys, &checkpoints);
    v.retention_days = evidence.retention_days;
    let end = to.unwrap_or(i64::MAX);
    loop {
        let rows = store.rows_page(after, end, page).await?;
        let Some(last) = rows.last() else { break };
        after = last.seq;
        v.feed(&rows);
        if i64::try_from(rows.len()).unwrap_or(page) < page {
            break;
        }
    }
    v.finish(to.is_none());
    Ok(v)
}

/// Checks a chain piece by piece, so that a log of any size is verified in constant memory
/// (checkpoints aside: one small entry per signed checkpoint).
#[derive(Debug, Clone)]
pub struct Verifier {
    prev: Option<String>,
    expected_seq: Option<i64>,
    key: Option<ChainKey>,
    /// Signed heads by sequence number, with where each came from and when it was signed.
    anchors: BTreeMap<i64, (String, String, String)>,
    retention_days: Option<u64>,
    /// Rows `1..=n` were pruned at a signed checkpoint.
    pub pruned_through: Option<i64>,
    keyed_seen: bool,
    /// First row of the unkeyed run the chain currently ends in.
    unkeyed_from: Option<i64>,
    last_seq: Option<i64>,
    /// Rows checked so far.
    pub rows: u64,
    /// Whether row MACs were checked (the chain key was given).
    pub macs_checked: bool,
    /// Signed checkpoints whose signature verified.
    pub checkpoints_valid: u64,
    /// Checkpoints whose row was read and matched.
    pub checkpoints_matched: u64,
    /// The highest sequence number a valid checkpoint signs.
    pub last_checkpoint: Option<i64>,
    /// The last row read that matched a signed checkpoint.
    pub last_matched: Option<i64>,
    /// What is wrong, in chain order (checkpoint problems first).
    pub problems: Vec<ChainProblem>,
    /// What could not be checked, and why.
    pub notices: Vec<String>,
}

impl Verifier {
    /// A verifier for a chain read from its first row.
    pub fn from_genesis() -> Self {
        Self {
            prev: Some(GENESIS.to_owned()),
            expected_seq: Some(1),
            ..Self::from_inside()
        }
    }

    /// A verifier for a range that starts inside the chain: its first row's link to the row
    /// before it is taken as given (checked only when that row is read too).
    pub fn from_inside() -> Self {
        Self {
            prev: None,
            expected_seq: None,
            key: None,
            anchors: BTreeMap::new(),
            retention_days: None,
            pruned_through: None,
            keyed_seen: false,
            unkeyed_from: None,
            last_seq: None,
            rows: 0,
            macs_checked: false,
            checkpoints_valid: 0,
            checkpoints_matched: 0,
            last_checkpoint: None,
            last_matched: None,
            problems: Vec::new(),
            notices: Vec::new(),
        }
    }

    /// Checks rows against the chain key and the signed checkpoints too. Checkpoints whose
    /// signature fails are problems; without public keys they cannot be used at all.
    pub fn use_evidence(
        &mut self,
        key: Option<ChainKey>,
        public_keys: &[VerifyingKey],
        checkpoints: &[(String, Checkpoint)],
    ) {
        self.macs_checked = key.is_some();
        if key.is_none() {
            self.notices.push(
                "row MACs not checked: the chain key is not available (an edit whose hashes \
                 were recomputed is then caught only by a later signed checkpoint)"
                    .to_owned(),
            );
        }
        self.key = key;
        if public_keys.is_empty() {
            if !checkpoints.is_empty() {
                self.notices.push(format!(
                    "{} checkpoint(s) not used: no public key to check their signatures",
                    checkpoints.len()
                ));
            }
            return;
        }
        for (source, cp) in checkpoints {
            if let Err(why) = cp.check(public_keys) {
                self.problems.push(ChainProblem {
                    seq: cp.seq,
                    problem: format!("checkpoint from {source}: {why}"),
                });
                continue;
            }
            self.checkpoints_valid += 1;
            self.last_checkpoint = self.last_checkpoint.max(Some(cp.seq));
            match self.anchors.get(&cp.seq) {
                Some((head, other, _)) if *head != cp.head => self.problems.push(ChainProblem {
                    seq: cp.seq,
                    problem: format!(
                        "signed checkpoints from {other} and {source} disagree on the head at \
                         this sequence number"
                    ),
                }),
                Some(_) => {}
                None => {
                    self.anchors
                        .insert(cp.seq, (cp.head.clone(), source.clone(), cp.ts.clone()));
                }
            }
        }
    }

    /// Checks the next rows, in chain order.
    pub fn feed(&mut self, rows: &[StoredRow]) {
        for row in rows {
            self.check_row(row);
        }
    }

    fn problem(&mut self, seq: i64, problem: impl Into<String>) {
        self.problems.push(ChainProblem {
            seq,
            problem: problem.into(),
        });
    }

    /// A chain read from its start whose first row is not seq 1 was pruned, if that row follows
    /// a signed checkpoint exactly and that checkpoint is older than the retention period.
    fn accept_pruned_start(&mut self, row: &StoredRow) {
        let through = row.seq - 1;
        let Some((head, _, signed)) = self.anchors.get(&through).cloned() else {
            return;
        };
        if head != row.prev_hash {
            return;
        }
        self.pruned_through = Some(through);
        self.expected_seq = Some(row.seq);
        self.prev = Some(row.prev_hash.clone());
        self.notices.push(format!(
            "rows 1..={through} were pruned; the first row left follows the checkpoint signed \
             at {signed}"
        ));
        let signed_at =
            time::OffsetDateTime::parse(&signed, &time::format_description::well_known::Rfc3339);
        if let (Some(days), Ok(at)) = (self.retention_days, signed_at) {
            let limit = time::OffsetDateTime::now_utc()
                - time::Duration::days(i64::try_from(days).unwrap_or(i64::MAX / 86_400));
            if at > limit {
                self.problem(
                    row.seq,
                    format!(
                        "rows 1..={through} are gone although they were signed at {signed}, \
                         within the retention period ({days} days)"
                    ),
                );
            }
        }
    }

    fn check_row(&mut self, row: &StoredRow) {
        if self.rows == 0 && self.expected_seq == Some(1) && row.seq > 1 {
            self.accept_pruned_start(row);
        }
        self.rows += 1;
        if let Some(expected) = self.expected_seq
            && row.seq != expected
        {
            self.problem(
                row.seq,
                format!("expected sequence {expected}: rows are missing or reordered"),
            );
        }
        if self.prev.as_ref().is_some_and(|p| *p != row.prev_hash) {
            self.problem(row.seq, "previous-hash link broken");
        }
        if row.content_hash() != row.hash {
            self.problem(row.seq, "content does not match its hash (row altered)");
        }
        match row.scheme.as_str() {
            SCHEME_V2 => {
                self.keyed_seen = true;
                self.unkeyed_from = None;
                if let Some(key) = &self.key
                    && !row.mac.as_deref().is_some_and(|m| key.check(&row.hash, m))
                {
                    self.problem(
                        row.seq,
                        "MAC does not match under the chain key (row altered and the chain \
                         recomputed, or written with another key)",
                    );
                }
            }
            SCHEME_V1 if self.keyed_seen => self.problem(
                row.seq,
                "unkeyed (v1) row after keyed rows: the chain was downgraded",
            ),
            SCHEME_V1 => {
                self.unkeyed_from.get_or_insert(row.seq);
            }
            other => self.problem(row.seq, format!("unknown chain scheme {other:?}")),
        }
        if let Some((head, source, _)) = self.anchors.get(&row.seq) {
            if *head == row.hash {
                self.checkpoints_matched += 1;
                self.last_matched = Some(row.seq);
            } else {
                let problem = format!(
                    "does not match the checkpoint signed for this row (from {source}): the row \
                     or one before it was altered and the chain recomputed"
                );
                self.problem(row.seq, problem);
            }
        }
        self.prev = Some(row.hash.clone());
        self.expected_seq = Some(row.seq + 1);
        self.last_seq = Some(row.seq);
    }

    /// The verdict as one JSON document (the CLI's `--json` and the admin API).
    pub fn report(&self) -> serde_json::Value {
        let problems: Vec<serde_json::Value> = self
            .problems
            .iter()
            .map(|p| serde_json::json!({"seq": p.seq, "problem": p.problem}))
            .collect();
        serde_json::json!({
            "rows": self.rows,
            "intact": problems.is_empty(),
            "macs_checked": self.macs_checked,
            "checkpoints_valid": self.checkpoints_valid,
            "checkpoints_matched": self.checkpoints_matched,
            "last_checkpoint": self.last_checkpoint,
            "first_problem": problems.first(),
            "problems": problems,
            "notices": self.notices,
        })
    }

    /// Ends the check. `to_end`: the rows read were the whole rest of the chain, so a signed
    /// checkpoint beyond them means rows are missing from the tail.
    pub fn finish(&mut self, to_end: bool) {
        self.finish_checks(to_end);
        self.problems.sort_by_key(|p| p.seq);
    }

    fn finish_checks(&mut self, to_end: bool) {
        if let Some(from) = self.unkeyed_from.take() {
            self.problem(
                from,
                "the chain ends in unkeyed (v1) rows that no keyed row covers: anyone could \
                 have rewritten them",
            );
        }
        if !to_end {
            return;
        }
        let last = self.last_seq.unwrap_or(0);
        let beyond: Vec<(i64, String)> = self
            .anchors
            .range(last + 1..)
            .map(|(seq, (_, source, _))| (*seq, source.clone()))
            .collect();
        if let Some((seq, source)) = beyond.last() {
            self.problem(
                *seq,
                format!(
                    "a checkpoint (from {source}) was signed when the log reached this \
                     sequence number, but it ends at {last}: rows were cut from the tail or \
                     the database was replaced by an older copy"
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::NewRow;

    fn new_row(id: &str) -> NewRow {
        NewRow {
            request_id: id.into(),
            kind: "decision".into(),
            ts: "2026-01-01T00:00:00Z".into(),
            tenant: None,
            action: Some("allow".into()),
            outcome: None,
            status: None,
            body: "{}".into(),
        }
    }

    /// Rows as an older veil wrote them: scheme v1, no MAC.
    fn legacy(n: i64) -> Vec<StoredRow> {
        let mut prev = GENESIS.to_owned();
        (1..=n)
            .map(|seq| {
                let mut r = StoredRow {
                    seq,
                    request_id: format!("old-{seq}"),
                    kind: "decision".into(),
                    ts: "2025-01-01T00:00:00Z".into(),
                    tenant: None,
                    action: Some("allow".into()),
                    outcome: None,
                    status: None,
                    body: "{}".into(),
                    prev_hash: prev.clone(),
                    hash: String::new(),
                    scheme: SCHEME_V1.into(),
                    mac: None,
                };
                r.hash = r.content_hash();
                prev.clone_from(&r.hash);
                r
            })
            .collect()
    }

    fn check(rows: &[StoredRow], key: &ChainKey) -> Vec<ChainProblem> {
        let mut v = Verifier::from_genesis();
        v.use_evidence(Some(key.clone()), &[], &[]);
        v.feed(rows);
        v.finish(true);
        v.problems
    }

    #[test]
    fn legacy_rows_are_accepted_only_under_keyed_ones() {
        let key = ChainKey::new(&[1; 32]).unwrap_or_else(|e| panic!("{e}"));
        let mut rows = legacy(3);
        // Before the first keyed row: not protected, and said so.
        let problems = check(&rows, &key);
        assert_eq!(problems.len(), 1);
        assert!(
            problems
                .iter()
                .all(|p| p.seq == 1 && p.problem.contains("unkeyed"))
        );
        // The upgrade: keyed rows chained after the legacy head cover it.
        let head = rows
            .last()
            .map(|r| (r.seq, r.hash.clone()))
            .unwrap_or_default();
        rows.extend(key.link((head.0, &head.1), &[new_row("a"), new_row("b")]));
        assert_eq!(check(&rows, &key), []);
        // A legacy row after keyed ones is a downgrade.
        let tail = rows
            .last()
            .map(|r| (r.seq, r.hash.clone()))
            .unwrap_or_default();
        let mut old = legacy(1).remove(0);
        old.seq = tail.0 + 1;
        old.prev_hash = tail.1;
        old.hash = old.content_hash();
        rows.push(old);
        let problems = check(&rows, &key);
        assert!(
            problems
                .iter()
                .any(|p| p.seq == 6 && p.problem.contains("downgraded"))
        );
    }
}
