//! The compiled, immutable state every request works from: policies with their detectors,
//! API keys and upstreams. Built whole, swapped atomically; a request loads it once, so a
//! reload never mixes versions within one request.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use crate::auth::Keys;
use crate::config::{ClassifierSettings, Config, OnMissing};
use crate::detect::PatternDetector;
use crate::detect::classifier::{Classifier, ClassifierConfig};
use crate::policy::{self, Policy};
use crate::route::cloud::Cloud;
use crate::scan::{ClassifierState, Detectors};

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
    /// The classifier could not be loaded and `classifier.on_missing` is `refuse`.
    #[error(
        "classifier: {0} (set classifier.on_missing = \"unscannable\" to start anyway and keep every request local)"
    )]
    Classifier(String),
}

/// Loads the classifier once per process, as `classifier` in `veil.toml` says.
pub fn load_classifier(settings: &ClassifierSettings) -> Result<ClassifierState, SnapshotError> {
    if settings.dir.as_os_str().is_empty() {
        return Ok(ClassifierState::Disabled);
    }
    let cfg = ClassifierConfig {
        dir: settings.dir.clone(),
        ort_library: settings.ort_library.clone(),
        threads: settings.threads,
        batch: settings.batch,
        weights: settings.weights,
    };
    match Classifier::load(&cfg) {
        Ok(c) => Ok(ClassifierState::Loaded(Arc::new(c))),
        Err(e) if settings.on_missing == OnMissing::Unscannable => {
            tracing::error!(error = %e, "classifier unavailable; every request will be treated as unscannable");
            Ok(ClassifierState::Unavailable(e.to_string()))
        }
        Err(e) => Err(SnapshotError::Classifier(e.to_string())),
    }
}

fn detectors(policy: &Policy, classifier: &ClassifierState) -> Result<Detectors, SnapshotError> {
    let patterns = PatternDetector::new(&policy.patterns).map_err(|e| SnapshotError::Detector {
        policy: policy.name.to_string(),
        message: e.to_string(),
    })?;
    Ok(Detectors::new(
        patterns,
        classifier.clone(),
        policy.classifier_thresholds.clone(),
        &policy.patterns.allow,
    ))
}

impl Snapshot {
    /// Compiles configuration and the policy directory.
    pub fn build(
        config: &Config,
        classifier: &ClassifierState,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, SnapshotError> {
        let policies = policy::load_dir(&config.policies.dir)?;
        let mut sets = HashMap::new();
        for (name, policy) in policies {
            let detectors = Arc::new(detectors(&policy, classifier)?);
            sets.insert(name, PolicySet { policy, detectors });
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

    /// Loads a single policy file for the CLI (`veil scan --policy NAME`).
    pub fn policy_set(
        path: &Path,
        classifier: &ClassifierState,
    ) -> Result<PolicySet, SnapshotError> {
        let text = std::fs::read_to_string(path).map_err(|source| {
            SnapshotError::Policy(policy::PolicyError::Read {
                path: path.to_owned(),
                source,
            })
        })?;
        let policy = policy::compile(path, &text).map_err(policy::PolicyError::from)?;
        let detectors = Arc::new(detectors(&policy, classifier)?);
        Ok(PolicySet {
            policy: Arc::new(policy),
            detectors,
        })
    }
}

/// A shareable way to read environment variables (secrets are read again on reload).
pub type Env = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// Rebuilds the snapshot when policy files change; a bad file keeps the last good snapshot.
pub struct Reloader {
    config: Config,
    classifier: ClassifierState,
    env: Env,
    fingerprint: String,
}

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloader")
            .field("dir", &self.config.policies.dir)
            .finish_non_exhaustive()
    }
}

/// What a reload check did.
#[derive(Debug)]
pub enum Reload {
    /// Files unchanged.
    Unchanged,
    /// A new snapshot is active.
    Swapped,
    /// Files changed but do not compile; the last good snapshot stays active.
    Rejected(SnapshotError),
}

impl Reloader {
    /// A reloader for the snapshot built from `config`.
    pub fn new(config: Config, classifier: ClassifierState, env: Env) -> Self {
        let fingerprint = fingerprint(&config.policies.dir);
        Self {
            config,
            classifier,
            env,
            fingerprint,
        }
    }

    /// Rebuilds if the policy files changed (or `force`), swapping atomically on success.
    pub fn check(&mut self, target: &arc_swap::ArcSwap<Snapshot>, force: bool) -> Reload {
        let now = fingerprint(&self.config.policies.dir);
        if !force && now == self.fingerprint {
            return Reload::Unchanged;
        }
        let env = self.env.clone();
        match Snapshot::build(&self.config, &self.classifier, move |k| env(k)) {
            Ok(snap) => {
                self.fingerprint = now;
                target.store(Arc::new(snap));
                metrics::counter!("veil_policy_reloads_total").increment(1);
                Reload::Swapped
            }
            Err(e) => {
                // Remember the bad state so the same error is reported once, not every tick.
                self.fingerprint = now;
                metrics::counter!("veil_policy_reload_failures_total").increment(1);
                Reload::Rejected(e)
            }
        }
    }
}

/// SHA-256 over the names and contents of the policy files.
fn fingerprint(dir: &Path) -> String {
    use sha2::{Digest, Sha256};
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    paths.retain(|p: &std::path::PathBuf| p.extension().is_some_and(|x| x == "toml"));
    paths.sort();
    let mut h = Sha256::new();
    for p in paths {
        h.update(p.to_string_lossy().as_bytes());
        h.update([0]);
        h.update(std::fs::read(&p).unwrap_or_default());
        h.update([0]);
    }
    hex::encode(h.finalize())
}
