//! Where the chain key, the checkpoint signing key and the checkpoint file come from: the
//! environment first, else files (created on a server's first start, with mode 0600). Commands
//! that only read (`veil audit verify`) never create anything.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use zeroize::Zeroizing;

use super::checkpoint::{self, Signer};
use super::{AuditError, ChainKey, Checkpointing, Evidence, Sealing};
use crate::config::AuditConfig;

fn err(message: String) -> AuditError {
    AuditError::Keys(message)
}

/// Reads a secret file, or creates it with `make()` (mode 0600) when it does not exist.
fn read_or_create(
    path: &Path,
    make: impl Fn() -> Zeroizing<String>,
) -> Result<Zeroizing<String>, AuditError> {
    match std::fs::read_to_string(path) {
        Ok(text) => return Ok(Zeroizing::new(text.trim().to_owned())),
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(err(format!("cannot read {}: {e}", path.display())));
        }
        Err(_) => {}
    }
    if let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent)
            .map_err(|e| err(format!("cannot create {}: {e}", parent.display())))?;
    }
    let secret = make();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| err(format!("cannot create {}: {e}", path.display())))?;
    file.write_all(secret.as_bytes())
        .and_then(|()| file.write_all(b"\n"))
        .and_then(|()| file.sync_all())
        .map_err(|e| err(format!("cannot write {}: {e}", path.display())))?;
    tracing::warn!(
        file = %path.display(),
        "created a new audit key file; in production set the key in the environment or keep \
         the file away from the database host"
    );
    Ok(secret)
}

fn random_hex() -> Zeroizing<String> {
    let bytes: Zeroizing<[u8; 32]> = Zeroizing::new(rand::random());
    Zeroizing::new(hex::encode(*bytes))
}

/// The chain key and checkpoint signer for a server: from the environment, else from the
/// configured (or default) files, created if missing. `value_key` is the value-digest key,
/// which the chain key must differ from.
pub fn sealing(
    cfg: &AuditConfig,
    value_key: Option<&str>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Sealing, AuditError> {
    let chain_text = match env(&cfg.chain_key_env).filter(|k| !k.is_empty()) {
        Some(k) => Zeroizing::new(k),
        None => {
            let Some(path) = cfg.chain_key_path() else {
                return Err(err(format!(
                    "set {} (or audit.chain_key_file): a shared audit database needs one chain \
                     key for every instance",
                    cfg.chain_key_env
                )));
            };
            read_or_create(&path, random_hex)?
        }
    };
    if value_key.is_some_and(|v| v == chain_text.as_str()) {
        return Err(err(format!(
            "the audit chain key ({}) must not be the value-digest key",
            cfg.chain_key_env
        )));
    }
    let key = ChainKey::new(chain_text.as_bytes()).map_err(err)?;
    let signer_text = match env(&cfg.signing_key_env).filter(|k| !k.is_empty()) {
        Some(k) => Zeroizing::new(k),
        None => {
            let Some(path) = cfg.signing_key_path() else {
                return Err(err(format!(
                    "set {} (or audit.signing_key_file) to sign audit checkpoints",
                    cfg.signing_key_env
                )));
            };
            read_or_create(&path, Signer::generate_hex)?
        }
    };
    let signer = Signer::from_hex(&signer_text).map_err(err)?;
    if let Some(path) = cfg.public_key_path() {
        let text = format!(
            "# veil audit checkpoint public key (key id {})\n{}\n",
            checkpoint::key_id(&signer.public()),
            checkpoint::public_hex(&signer.public())
        );
        if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
            std::fs::write(&path, text)
                .map_err(|e| err(format!("cannot write {}: {e}", path.display())))?;
        }
    }
    Ok(Sealing {
        key,
        checkpoints: Some(Checkpointing {
            signer,
            file: cfg.checkpoint_path(),
            every_rows: cfg.checkpoint_rows.max(1),
            every: Duration::from_secs(cfg.checkpoint_secs.max(1)),
        }),
        retention_days: Some(cfg.retention_days),
    })
}

/// What `veil audit verify` checks with, read only: the chain key if it is in the environment
/// or its file exists; public keys from `public_keys` (else the configured file, if present);
/// checkpoints from `checkpoint_files` (else the configured file, if present). Unreadable
/// checkpoint lines are returned as notices.
pub fn evidence(
    cfg: &AuditConfig,
    env: impl Fn(&str) -> Option<String>,
    public_keys: &[PathBuf],
    checkpoint_files: &[PathBuf],
) -> Result<(Evidence, Vec<String>), AuditError> {
    let chain_text = match env(&cfg.chain_key_env).filter(|k| !k.is_empty()) {
        Some(k) => Some(Zeroizing::new(k)),
        None => match cfg.chain_key_path() {
            Some(path) if path.is_file() => Some(Zeroizing::new(
                std::fs::read_to_string(&path)
                    .map_err(|e| err(format!("cannot read {}: {e}", path.display())))?
                    .trim()
                    .to_owned(),
            )),
            _ => None,
        },
    };
    let key = chain_text
        .map(|t| ChainKey::new(t.as_bytes()))
        .transpose()
        .map_err(err)?;
    let configured = |p: Option<PathBuf>| p.filter(|p| p.is_file()).into_iter().collect::<Vec<_>>();
    let key_files = if public_keys.is_empty() {
        configured(cfg.public_key_path())
    } else {
        public_keys.to_vec()
    };
    let mut keys = Vec::new();
    for path in &key_files {
        keys.extend(checkpoint::read_public_keys(path).map_err(err)?);
    }
    let cp_files = if checkpoint_files.is_empty() {
        configured(cfg.checkpoint_path())
    } else {
        checkpoint_files.to_vec()
    };
    let mut checkpoints = Vec::new();
    let mut notices = Vec::new();
    for path in &cp_files {
        let (cps, damaged) = checkpoint::read_file(path).map_err(err)?;
        let source = path.display().to_string();
        checkpoints.extend(cps.into_iter().map(|cp| (source.clone(), cp)));
        notices.extend(damaged);
    }
    Ok((
        Evidence {
            key,
            public_keys: keys,
            checkpoints,
            retention_days: Some(cfg.retention_days),
        },
        notices,
    ))
}
