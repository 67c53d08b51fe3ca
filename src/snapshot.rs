//! The compiled, immutable state every request works from: policies with their detectors,
//! API keys and upstreams. Built whole, swapped atomically; a request loads it once, so a
//! reload never mixes versions within one request.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use crate::auth::Keys;
use crate::config::Config;
use crate::detect::PatternDetector;
use crate::policy::{self, Policy};
use crate::route::cloud::Cloud;
use crate::scan::Detectors;

/// A policy and the detectors built from its dictionaries.
#[derive(Debug, Clone)]
pub struct PolicySet {
    /// The compiled policy.
    pub policy: Arc<Policy>,
    /// Its detectors.
    pub detectors: Arc<Detectors>,
}

/// Everything compiled from configuration and policy files.
#[derive(Debug)]
pub struct Snapshot {
    /// Policies by name.
    pub policies: HashMap<Arc<str>, PolicySet>,
    /// API keys.
    pub keys: Keys,
    /// Cloud upstreams.
    pub cloud: Cloud,
}

/// Why a snapshot could not be built; veil refuses to start (or keeps the last good one).
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// A policy file is invalid.
    #[error(transparent)]
    Policy(#[from] policy::PolicyError),
    /// A policy's dictionaries could not be compiled.
    #[error("policy {policy}: {message}")]
    Detector {
        /// Policy name.
        policy: String,
        /// What is wrong.
        message: String,
    },
    /// A key names a policy that does not exist.
    #[error("key {key_id}: policy {policy:?} not found in the policies directory")]
    UnknownPolicy {
        /// Key id.
        key_id: String,
        /// Policy name.
        policy: String,
    },
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

impl Snapshot {
    /// Compiles configuration and the policy directory.
    pub fn build(
        config: &Config,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, SnapshotError> {
        let policies = policy::load_dir(&config.policies.dir)?;
        Self::from_policies(config, policies, env)
    }

    /// Compiles configuration with already-loaded policies.
    pub fn from_policies(
        config: &Config,
        policies: HashMap<Arc<str>, Arc<Policy>>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, SnapshotError> {
        let mut sets = HashMap::new();
        for (name, policy) in policies {
            let patterns =
                PatternDetector::new(&policy.patterns).map_err(|e| SnapshotError::Detector {
                    policy: name.to_string(),
                    message: e.to_string(),
                })?;
            sets.insert(
                name,
                PolicySet {
                    policy,
                    detectors: Arc::new(Detectors { patterns }),
                },
            );
        }
        let keys = Keys::new(&config.keys);
        for (key_id, policy) in keys.policies() {
            if !sets.contains_key(policy) {
                return Err(SnapshotError::UnknownPolicy {
                    key_id: key_id.to_owned(),
                    policy: policy.to_owned(),
                });
            }
        }
        let cloud =
            Cloud::new(&config.upstreams, env).map_err(|e| SnapshotError::Client(e.to_string()))?;
        Ok(Self {
            policies: sets,
            keys,
            cloud,
        })
    }

    /// Loads a single policy file for the CLI (`veil scan --policy FILE`).
    pub fn policy_set(path: &Path) -> Result<PolicySet, SnapshotError> {
        let text = std::fs::read_to_string(path).map_err(|source| {
            SnapshotError::Policy(policy::PolicyError::Read {
                path: path.to_owned(),
                source,
            })
        })?;
        let policy = policy::compile(path, &text).map_err(policy::PolicyError::from)?;
        let patterns =
            PatternDetector::new(&policy.patterns).map_err(|e| SnapshotError::Detector {
                policy: policy.name.to_string(),
                message: e.to_string(),
            })?;
        Ok(PolicySet {
            policy: Arc::new(policy),
            detectors: Arc::new(Detectors { patterns }),
        })
    }
}
