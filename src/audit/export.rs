//! Exporting a range of the chain so that it can be verified on another machine: the rows with
//! every column, the signed checkpoints over them, the public key(s), and a manifest with the
//! SHA-256 of each file. The range is extended to the first checkpoint at or after its end, so
//! that its last row is signed.

use std::io::{BufRead as _, BufWriter, Write as _};
use std::path::Path;

use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::checkpoint::{self, Checkpoint};
use super::{AuditError, AuditStore, Evidence, StoredRow, Verifier};

/// Format marker of the manifest.
pub const FORMAT: &str = "veil-audit-export/1";
const ROWS: &str = "rows.jsonl";
const CHECKPOINTS: &str = "checkpoints.jsonl";
const PUBLIC_KEYS: &str = "public-keys.pub";
const MANIFEST: &str = "manifest.json";

/// What an export holds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Manifest {
    /// [`FORMAT`].
    pub format: String,
    /// First sequence number exported.
    pub from_seq: i64,
    /// Last sequence number exported.
    pub to_seq: i64,
    /// Rows exported.
    pub rows: u64,
    /// Checkpoints exported.
    pub checkpoints: u64,
    /// When the export was written.
    pub created: String,
    /// SHA-256 of each file, by name.
    pub files: std::collections::BTreeMap<String, String>,
}

fn io(path: &Path, e: impl std::fmt::Display) -> AuditError {
    AuditError::Database(format!("{}: {e}", path.display()))
}

fn sha256_file(path: &Path) -> Result<String, AuditError> {
    let bytes = std::fs::read(path).map_err(|e| io(path, e))?;
    Ok(hex::encode(Sha256::digest(bytes)))
}

/// Writes the rows `from..=to` (extended to the next signed checkpoint) into `dir`, which must
/// be empty or absent.
pub async fn export(
    store: &dyn AuditStore,
    from: i64,
    to: i64,
    public_keys: &[VerifyingKey],
    dir: &Path,
) -> Result<Manifest, AuditError> {
    if dir.exists()
        && std::fs::read_dir(dir)
            .map_err(|e| io(dir, e))?
            .next()
            .is_some()
    {
        return Err(io(dir, "the export directory is not empty"));
    }
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let from = from.max(1);
    let all = store.checkpoints().await?;
    let end = all.iter().map(|c| c.seq).find(|s| *s >= to).unwrap_or(to);
    let rows_path = dir.join(ROWS);
    let mut out = BufWriter::new(std::fs::File::create(&rows_path).map_err(|e| io(&rows_path, e))?);
    let (mut after, mut count, mut last) = (from - 1, 0u64, None);
    loop {
        let page = store.rows_page(after, end, 10_000).await?;
        let Some(tail) = page.last() else { break };
        after = tail.seq;
        for row in &page {
            serde_json::to_writer(&mut out, row).map_err(|e| io(&rows_path, e))?;
            out.write_all(b"\n").map_err(|e| io(&rows_path, e))?;
        }
        count += page.len() as u64;
        last = Some(after);
    }
    out.flush().map_err(|e| io(&rows_path, e))?;
    let Some(to_seq) = last else {
        return Err(AuditError::Database(format!(
            "no rows between sequence numbers {from} and {end}"
        )));
    };
    let cps: Vec<&Checkpoint> = all
        .iter()
        .filter(|c| c.seq >= from && c.seq <= to_seq)
        .collect();
    let cp_path = dir.join(CHECKPOINTS);
    let mut text = String::new();
    for cp in &cps {
        text.push_str(&serde_json::to_string(cp).map_err(|e| io(&cp_path, e))?);
        text.push('\n');
    }
    std::fs::write(&cp_path, text).map_err(|e| io(&cp_path, e))?;
    let key_path = dir.join(PUBLIC_KEYS);
    let keys: String = public_keys
        .iter()
        .map(|k| format!("{}\n", checkpoint::public_hex(k)))
        .collect();
    std::fs::write(&key_path, keys).map_err(|e| io(&key_path, e))?;
    let mut files = std::collections::BTreeMap::new();
    for name in [ROWS, CHECKPOINTS, PUBLIC_KEYS] {
        files.insert(name.to_owned(), sha256_file(&dir.join(name))?);
    }
    let manifest = Manifest {
        format: FORMAT.to_owned(),
        from_seq: from,
        to_seq,
        rows: count,
        checkpoints: cps.len() as u64,
        created: super::now(),
        files,
    };
    let path = dir.join(MANIFEST);
    let json = serde_json::to_string_pretty(&manifest).map_err(|e| io(&path, e))?;
    std::fs::write(&path, json + "\n").map_err(|e| io(&path, e))?;
    Ok(manifest)
}

/// Verifies an export: the files against the manifest, the rows' chain, MACs with the chain
/// key if `evidence` has it, and the checkpoints with `evidence`'s public keys — or, when none
/// is given, with the key inside the export (said in a notice: a key that travels with the data
/// proves nothing about who signed it).
pub fn verify_export(dir: &Path, evidence: &Evidence) -> Result<(Manifest, Verifier), AuditError> {
    let path = dir.join(MANIFEST);
    let manifest: Manifest =
        serde_json::from_str(&std::fs::read_to_string(&path).map_err(|e| io(&path, e))?)
            .map_err(|e| io(&path, e))?;
    if manifest.format != FORMAT {
        return Err(io(&path, format!("not a {FORMAT} export")));
    }
    let mut v = if manifest.from_seq == 1 {
        Verifier::from_genesis()
    } else {
        Verifier::from_inside()
    };
    let mut problems = Vec::new();
    for (name, digest) in &manifest.files {
        let file = dir.join(name);
        if !file.is_file() || sha256_file(&file)? != *digest {
            problems.push(format!(
                "{name} does not match the manifest (altered or missing)"
            ));
        }
    }
    let mut evidence = evidence.clone();
    let mut notices = Vec::new();
    if evidence.public_keys.is_empty() {
        let keys = dir.join(PUBLIC_KEYS);
        if keys.is_file() {
            evidence.public_keys = checkpoint::read_public_keys(&keys).unwrap_or_default();
            notices.push(
                "checkpoints checked with the public key inside the export; pass --public-key \
                 from a source you trust"
                    .to_owned(),
            );
        }
    }
    let cp_path = dir.join(CHECKPOINTS);
    if cp_path.is_file() {
        let (cps, damaged) = checkpoint::read_file(&cp_path).map_err(AuditError::Database)?;
        let source = format!("the export's {CHECKPOINTS}");
        evidence
            .checkpoints
            .extend(cps.into_iter().map(|cp| (source.clone(), cp)));
        problems.extend(damaged);
    }
    v.use_evidence(
        evidence.key.clone(),
        &evidence.public_keys,
        &evidence.checkpoints,
    );
    let rows_path = dir.join(ROWS);
    let file = std::fs::File::open(&rows_path).map_err(|e| io(&rows_path, e))?;
    let mut last = None;
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| io(&rows_path, e))?;
        match serde_json::from_str::<StoredRow>(&line) {
            Ok(row) => {
                last = Some(row.seq);
                v.feed(std::slice::from_ref(&row));
            }
            Err(e) => problems.push(format!("{ROWS} line {}: not a row ({e})", i + 1)),
        }
    }
    if v.rows != manifest.rows || last != Some(manifest.to_seq) {
        problems.push(format!(
            "the export holds {} rows ending at {:?}; its manifest says {} ending at {}",
            v.rows, last, manifest.rows, manifest.to_seq
        ));
    }
    let covered = v.last_matched;
    if covered != Some(manifest.to_seq) {
        notices.push(format!(
            "rows after {} are not covered by a signed checkpoint in this export",
            covered.map_or_else(|| "the start".to_owned(), |c| format!("sequence {c}"))
        ));
    }
    v.finish(false);
    for p in problems {
        v.problems
            .insert(0, super::ChainProblem { seq: 0, problem: p });
    }
    v.notices.extend(notices);
    Ok((manifest, v))
}
