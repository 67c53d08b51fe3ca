//! The compiled, immutable state every request works from: policies with their detectors,
//! API keys and upstreams. Built whole, swapped atomically; a request loads it once, so a
//! reload never mixes versions within one request.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::audit::ValueDigester;
use crate::auth::Keys;
use crate::config::{ClassifierSettings, Config, OnMissing};
use crate::detect::PatternDetector;
use crate::detect::classifier::cache::SegmentCache;
use crate::detect::classifier::rules::RuleSet;
use crate::detect::classifier::{Classifier, ClassifierConfig};
use crate::policy::{self, Policy, Sources};
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
    /// Keyed digests for audit records and `hash` redaction (one key for the process).
    pub digester: ValueDigester,
    /// Deepest JSON nesting accepted (tool-call arguments are parsed with it).
    pub max_json_depth: usize,
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
    /// `classifier.rules_off` names a rule that does not exist.
    #[error("classifier.rules_off: {0}")]
    Rules(#[from] crate::detect::classifier::rules::UnknownRule),
}

/// Loads the classifier once per process, as `classifier` in `veil.toml` says.
pub fn load_classifier(settings: &ClassifierSettings) -> Result<ClassifierState, SnapshotError> {
    if settings.dir.as_os_str().is_empty() {
        return Ok(ClassifierState::Disabled);
    }
    // An unknown rule id is a configuration error whatever `on_missing` says.
    let rules = RuleSet::without(&settings.rules_off)?;
    let cfg = ClassifierConfig {
        dir: settings.dir.clone(),
        ort_library: settings.ort_library.clone(),
        threads: settings.threads,
        sessions: settings.sessions,
        batch: settings.batch,
        weights: settings.weights,
        rules,
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
        digester: ValueDigester,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, SnapshotError> {
        let sources = Sources::read(&config.policies.dir)?;
        Self::build_from(config, &sources, classifier, digester, env)
    }

    /// Compiles configuration and policy files already read.
    pub fn build_from(
        config: &Config,
        sources: &Sources,
        classifier: &ClassifierState,
        digester: ValueDigester,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, SnapshotError> {
        let mut sets = HashMap::new();
        for (name, policy) in sources.compile()? {
            // Each snapshot starts with empty caches: a reload of policies or of the model
            // never serves findings made under the old ones.
            let cache = SegmentCache::new(
                config.detect.cache_entries,
                std::time::Duration::from_secs(config.detect.cache_ttl_secs),
            );
            let detectors = Arc::new(detectors(&policy, classifier)?.with_cache(cache));
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
            digester,
            max_json_depth: config.server.max_json_depth,
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

/// The key for audit digests and `hash` redaction: from the environment variable `veil.toml`
/// names, or random for this process (digests then do not correlate across restarts).
pub fn digester(config: &Config, env: impl Fn(&str) -> Option<String>) -> ValueDigester {
    match env(&config.hmac_key_env).filter(|k| !k.is_empty()) {
        Some(key) => ValueDigester::new(key.as_bytes()),
        None => {
            let key: [u8; 32] = rand::random();
            ValueDigester::new(&key)
        }
    }
}

/// A shareable way to read environment variables (secrets are read again on reload).
pub type Env = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// One policy file that differs between the active snapshot and the files on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileChange {
    /// The file.
    pub file: PathBuf,
    /// SHA-256 of the active version (none: the file is new).
    pub old_digest: Option<String>,
    /// SHA-256 of the version on disk (none: the file was removed).
    pub new_digest: Option<String>,
}

/// Rebuilds the snapshot when policy files change and have stopped changing; a bad file keeps
/// the last good snapshot.
pub struct Reloader {
    config: Config,
    classifier: ClassifierState,
    digester: ValueDigester,
    env: Env,
    /// The files the active snapshot was built from.
    active: Sources,
    /// The files last acted on (swapped in or refused): not acted on again until they change.
    seen: Sources,
    /// Files that differ from `seen`, and since when they have stayed as they are.
    pending: Option<(Sources, Instant)>,
    /// The directory could not be read last time (reported once).
    unreadable: bool,
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
    /// Files unchanged since they were last acted on.
    Unchanged,
    /// Files changed and are waiting to stay unchanged for the debounce time.
    Settling,
    /// A new snapshot is active; these files changed.
    Swapped(Vec<FileChange>),
    /// Files changed but do not compile; the last good snapshot stays active.
    Rejected(SnapshotError, Vec<FileChange>),
}

impl Reloader {
    /// A reloader for the snapshot built from `config` and `active` (the files it was built from).
    pub fn new(
        config: Config,
        classifier: ClassifierState,
        digester: ValueDigester,
        env: Env,
        active: Sources,
    ) -> Self {
        Self {
            config,
            classifier,
            digester,
            env,
            seen: active.clone(),
            active,
            pending: None,
            unreadable: false,
        }
    }

    /// How long changed files must stay unchanged before they are loaded.
    pub fn debounce(&self) -> Duration {
        Duration::from_millis(self.config.policies.debounce_ms)
    }

    /// The policy directory.
    pub fn dir(&self) -> &Path {
        &self.config.policies.dir
    }

    /// Rebuilds when the files changed and have stayed unchanged for the debounce time (or at
    /// once when `force`), swapping atomically on success. The snapshot is compiled from the
    /// same bytes that were compared, so a file that changes meanwhile is never half-read.
    pub fn check(&mut self, target: &arc_swap::ArcSwap<Snapshot>, force: bool) -> Reload {
        let now = Instant::now();
        let current = match Sources::read(&self.config.policies.dir) {
            Ok(s) => s,
            Err(e) => {
                self.pending = None;
                if std::mem::replace(&mut self.unreadable, true) && !force {
                    return Reload::Unchanged;
                }
                metrics::counter!("veil_policy_reload_failures_total").increment(1);
                return Reload::Rejected(e.into(), Vec::new());
            }
        };
        self.unreadable = false;
        if !force {
            if current == self.seen {
                self.pending = None;
                return Reload::Unchanged;
            }
            match &self.pending {
                Some((files, since)) if *files == current => {
                    if now.duration_since(*since) < self.debounce() {
                        return Reload::Settling;
                    }
                }
                _ => {
                    self.pending = Some((current, now));
                    return Reload::Settling;
                }
            }
        }
        self.pending = None;
        if !force && current == self.active {
            // Back to the active files (a refused edit undone): nothing to load.
            self.seen = current;
            return Reload::Unchanged;
        }
        let changes = changes(&self.active, &current);
        self.seen = current.clone();
        let env = self.env.clone();
        match Snapshot::build_from(
            &self.config,
            &current,
            &self.classifier,
            self.digester.clone(),
            move |k| env(k),
        ) {
            Ok(snap) => {
                target.store(Arc::new(snap));
                self.active = current;
                metrics::counter!("veil_policy_reloads_total").increment(1);
                Reload::Swapped(changes)
            }
            Err(e) => {
                metrics::counter!("veil_policy_reload_failures_total").increment(1);
                Reload::Rejected(e, changes)
            }
        }
    }
}

/// Files added, removed or modified between two reads.
fn changes(old: &Sources, new: &Sources) -> Vec<FileChange> {
    let (old, new) = (old.digests(), new.digests());
    let files: BTreeSet<&PathBuf> = old.keys().chain(new.keys()).collect();
    files
        .into_iter()
        .filter(|f| old.get(*f) != new.get(*f))
        .map(|f| FileChange {
            file: f.clone(),
            old_digest: old.get(f).cloned(),
            new_digest: new.get(f).cloned(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_decoding_rule_refuses_to_start_whatever_on_missing_says() {
        let settings = ClassifierSettings {
            rules_off: vec!["plain_words".to_owned(), "no_such_rule".to_owned()],
            on_missing: OnMissing::Unscannable,
            ..ClassifierSettings::default()
        };
        let err = load_classifier(&settings).unwrap_err().to_string();
        assert!(
            err.contains("unknown decoding rule \"no_such_rule\"") && err.contains("plain_words"),
            "{err}"
        );
    }
}
