//! What a policy reviewer runs: `veil policy check | test | explain | diff`.
//!
//! `check` reads only the policy files and `veil.toml` (no detector, no classifier, no ONNX
//! Runtime). `test`, `explain` and `diff` build the same [`Snapshot`] the server builds and call
//! the same [`decide`](crate::decide::decide): what they report is what the server does.

pub mod check;
pub mod diff;
pub mod explain;
pub mod suite;

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::api::openai::{self, Limits};
use crate::audit::ValueDigester;
use crate::auth::Principal;
use crate::config::{Config, ConfigError};
use crate::decide::{DecideError, Request};
use crate::scan::ClassifierState;
use crate::snapshot::{self, Snapshot, SnapshotError};

/// Why a review command could not run (as opposed to finding problems in a policy).
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    /// `veil.toml` is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The policies, keys or classifier could not be loaded.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    /// No decision could be made.
    #[error(transparent)]
    Decide(#[from] DecideError),
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// An input (test file, corpus line, request file) is not what the command expects.
    #[error("{0}")]
    Input(String),
}

/// The configuration and the process-wide parts (classifier, HMAC key) shared by every snapshot
/// a review command builds.
#[derive(Debug)]
pub struct Workspace {
    /// `veil.toml`, as loaded.
    pub config: Config,
    classifier: ClassifierState,
    digester: ValueDigester,
}

impl Workspace {
    /// Loads `veil.toml` and the classifier it names (the same one the server would load).
    pub fn open(config_file: &Path) -> Result<Self, ReviewError> {
        let config = Config::load(config_file)?;
        let classifier = snapshot::load_classifier(&config.classifier)?;
        Ok(Self::with(config, classifier))
    }

    /// A workspace over an already loaded configuration and classifier.
    pub fn with(config: Config, classifier: ClassifierState) -> Self {
        let digester = snapshot::digester(&config, |k| std::env::var(k).ok());
        Self {
            config,
            classifier,
            digester,
        }
    }

    /// The snapshot the server would build with the policies in `dir` (its configured directory
    /// when `None`). No upstream key is read: review commands send nothing.
    pub fn snapshot(&self, dir: Option<&Path>) -> Result<Snapshot, ReviewError> {
        let mut config = self.config.clone();
        if let Some(dir) = dir {
            config.policies.dir = dir.to_owned();
        }
        Ok(Snapshot::build(
            &config,
            &self.classifier,
            self.digester.clone(),
            |_| None,
        )?)
    }

    /// The caller a review input names: a key id from `veil.toml` (its tenant and policy), or a
    /// policy and a tenant. A policy given with a key overrides the key's.
    pub fn principal(
        &self,
        key: Option<&str>,
        policy: Option<&str>,
        tenant: Option<&str>,
    ) -> Result<Principal, ReviewError> {
        match key {
            Some(id) => {
                let k = self
                    .config
                    .keys
                    .iter()
                    .find(|k| k.id == id)
                    .ok_or_else(|| {
                        ReviewError::Input(format!(
                            "no key with id {id:?} in veil.toml; use a key id (not the key itself) or give --policy"
                        ))
                    })?;
                Ok(Principal {
                    key_id: k.id.as_str().into(),
                    tenant: tenant.unwrap_or(&k.tenant).into(),
                    policy: policy.unwrap_or(&k.policy).into(),
                })
            }
            None => {
                let policy = policy.ok_or_else(|| {
                    ReviewError::Input("name a policy or a key id from veil.toml".to_owned())
                })?;
                Ok(Principal {
                    key_id: "-".into(),
                    tenant: tenant.unwrap_or(DEFAULT_TENANT).into(),
                    policy: policy.into(),
                })
            }
        }
    }

    /// A whole chat request, validated exactly as the server validates it.
    pub fn request(&self, json: &[u8]) -> Result<Request, ReviewError> {
        let (chat, value) = openai::parse_chat(
            json,
            Limits::from(&self.config.server),
            self.config.server.max_json_depth,
        )
        .map_err(|e| ReviewError::Input(format!("not a chat request veil accepts: {e}")))?;
        Ok(Request::new(chat.model, value))
    }

    /// A chat request given as a JSON value (a test case's `request`, a corpus line).
    pub fn request_value(&self, value: &Value) -> Result<Request, ReviewError> {
        self.request(value.to_string().as_bytes())
    }
}

/// Tenant of a review input that names a policy but no key.
pub const DEFAULT_TENANT: &str = "default";

/// Model of a review input that gives text but no model.
pub const DEFAULT_MODEL: &str = "gpt-4o-mini";
