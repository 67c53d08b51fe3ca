//! `veil.toml`: the one configuration file, parsed strictly and completed from the environment.
//!
//! The file holds no secrets: upstream API keys, the HMAC key and the admin token come from
//! environment variables named in the file. Parsing errors name the file and line:column.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not match the schema.
    #[error(transparent)]
    Parse(#[from] TomlError),
    /// The file parsed but a value is not acceptable.
    #[error("{path}: {key}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The key path, e.g. `upstream[0].base_url`.
        key: String,
        /// What is wrong and what to do.
        message: String,
    },
}

/// The whole `veil.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// HTTP listener and request limits.
    #[serde(default)]
    pub server: ServerConfig,
    /// Audit database.
    #[serde(default)]
    pub audit: AuditConfig,
    /// Where the policy files live.
    #[serde(default)]
    pub policies: PoliciesConfig,
    /// Cloud upstreams (OpenAI-compatible base URLs).
    #[serde(default, rename = "upstream")]
    pub upstreams: Vec<UpstreamConfig>,
    /// API keys, stored as SHA-256 hashes.
    #[serde(default, rename = "key")]
    pub keys: Vec<KeyConfig>,
    /// The in-process local model.
    #[serde(default)]
    pub local: LocalModelConfig,
    /// Detection settings shared by all policies.
    #[serde(default)]
    pub detect: DetectConfig,
    /// The token classifier.
    #[serde(default)]
    pub classifier: ClassifierSettings,
    /// Environment variable holding the HMAC key for audit value digests and hash redaction.
    #[serde(default = "default_hmac_key_env")]
    pub hmac_key_env: String,
    /// The admin API.
    #[serde(default)]
    pub admin: AdminConfig,
}

/// The admin API (audit queries over HTTP).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Hex SHA-256 of the admin token (`veil key hash` prints it); unset, the admin API is off.
    /// The token is never an API key.
    #[serde(default)]
    pub token_sha256: Option<String>,
}

/// HTTP listener and request limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
    /// Deepest accepted JSON nesting.
    pub max_json_depth: usize,
    /// Most messages accepted in one request.
    pub max_messages: usize,
    /// Largest `n` accepted.
    pub max_choices: u32,
    /// Largest `max_tokens` accepted.
    pub max_tokens_limit: u32,
    /// Seconds a whole request may take before the client gets a timeout.
    pub request_timeout_secs: u64,
    /// Seconds to wait for in-flight requests on shutdown.
    pub shutdown_grace_secs: u64,
    /// Seconds a client has to send a request's head (slow clients hold a connection no
    /// longer).
    pub header_timeout_secs: u64,
    /// Seconds a client has to send a request's body once its head is in.
    pub body_timeout_secs: u64,
    /// Connections open at once; more wait in the listen backlog until one closes.
    pub max_connections: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body_bytes: 1024 * 1024,
            max_json_depth: 64,
            max_messages: 2048,
            max_choices: 8,
            max_tokens_limit: 32_768,
            request_timeout_secs: 600,
            shutdown_grace_secs: 30,
            header_timeout_secs: 30,
            body_timeout_secs: 30,
            max_connections: 1024,
        }
    }
}

/// Audit database settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// `sqlite://path` (created if missing) or `postgres://…`.
    pub url: String,
    /// Milliseconds a decision write may take before the request fails closed.
    pub write_timeout_ms: u64,
    /// Rows waiting to be written before new requests fail closed.
    pub queue: usize,
    /// Environment variable holding the chain key (HMAC of every row; at least 16 bytes, and not
    /// the value-digest key). Every instance writing one database, and every auditor verifying
    /// it, needs the same key.
    pub chain_key_env: String,
    /// Where the chain key is kept when the variable is unset (created on first start; the
    /// default sits beside a SQLite database, which suits a single machine, not production).
    pub chain_key_file: Option<PathBuf>,
    /// Environment variable holding the checkpoint signing key (Ed25519 seed, 64 hex digits).
    pub signing_key_env: String,
    /// Where the signing key is kept when the variable is unset (created on first start).
    pub signing_key_file: Option<PathBuf>,
    /// Where the public key is written at start, for auditors (`--public-key`).
    pub public_key_file: Option<PathBuf>,
    /// File outside the database each signed checkpoint is appended to.
    pub checkpoint_file: Option<PathBuf>,
    /// Sign a checkpoint after this many rows…
    pub checkpoint_rows: u64,
    /// …or this many seconds after the last one, if rows were written since.
    pub checkpoint_secs: u64,
    /// Days rows are kept at least: `veil audit prune` removes nothing younger, and `verify`
    /// reports a log missing younger rows (six years: HIPAA's retention for documentation,
    /// 45 CFR 164.316(b)(2); PCI DSS 10.5.1 asks for one).
    pub retention_days: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            url: "sqlite://data/audit.db".to_owned(),
            write_timeout_ms: 2_000,
            queue: 4_096,
            chain_key_env: "VEIL_AUDIT_CHAIN_KEY".to_owned(),
            chain_key_file: None,
            signing_key_env: "VEIL_AUDIT_SIGNING_KEY".to_owned(),
            signing_key_file: None,
            public_key_file: None,
            checkpoint_file: None,
            checkpoint_rows: 1_000,
            checkpoint_secs: 60,
            retention_days: 6 * 365 + 2,
        }
    }
}

impl AuditConfig {
    /// The directory of a SQLite database, where key and checkpoint files go by default.
    fn sqlite_dir(&self) -> Option<PathBuf> {
        let path = Path::new(self.url.strip_prefix("sqlite://")?);
        Some(path.parent().unwrap_or(Path::new(".")).to_owned())
    }

    fn file_or_default(&self, set: Option<&PathBuf>, name: &str) -> Option<PathBuf> {
        set.cloned()
            .or_else(|| self.sqlite_dir().map(|dir| dir.join(name)))
    }

    /// The chain key file in effect (none: PostgreSQL without one set).
    pub fn chain_key_path(&self) -> Option<PathBuf> {
        self.file_or_default(self.chain_key_file.as_ref(), "audit-chain.key")
    }

    /// The signing key file in effect.
    pub fn signing_key_path(&self) -> Option<PathBuf> {
        self.file_or_default(self.signing_key_file.as_ref(), "audit-signing.key")
    }

    /// The public key file in effect.
    pub fn public_key_path(&self) -> Option<PathBuf> {
        self.file_or_default(self.public_key_file.as_ref(), "audit-signing.pub")
    }

    /// The checkpoint file in effect.
    pub fn checkpoint_path(&self) -> Option<PathBuf> {
        self.file_or_default(self.checkpoint_file.as_ref(), "audit-checkpoints.jsonl")
    }
}

/// Where the policy files live.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoliciesConfig {
    /// Directory of `*.toml` policy files; each file's stem is the policy name.
    pub dir: PathBuf,
    /// Seconds between checks for changed policy files (0 disables hot reload; SIGHUP still works).
    pub reload_secs: u64,
    /// Milliseconds changed files must stay unchanged before they are loaded: a file still being
    /// written is never compiled.
    pub debounce_ms: u64,
}

impl Default for PoliciesConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("policies"),
            reload_secs: 2,
            debounce_ms: 500,
        }
    }
}

/// One OpenAI-compatible cloud upstream.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Name recorded as the route in the audit log.
    pub name: String,
    /// Base URL including the version path, e.g. `https://api.openai.com/v1`.
    pub base_url: String,
    /// Environment variable holding the upstream API key (omit for keyless upstreams).
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Model names served by this upstream; `*` at the end matches a prefix.
    #[serde(default = "default_models")]
    pub models: Vec<String>,
    /// Seconds to wait for the upstream to start answering.
    #[serde(default = "default_upstream_timeout")]
    pub timeout_secs: u64,
    /// Seconds a stream may stay silent before veil ends it with an error event.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout_secs: u64,
    /// Largest non-streaming answer accepted from the upstream, in bytes.
    #[serde(default = "default_max_response")]
    pub max_response_bytes: usize,
    /// A business-associate agreement covers this upstream, so it may receive PHI. Only
    /// `veil policy check` reads it: it warns when a policy lets PHI reach an upstream without.
    #[serde(default)]
    pub baa: bool,
}

/// One API key, stored as the hex SHA-256 of the key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// Identifier recorded in the audit log instead of the key.
    pub id: String,
    /// Hex SHA-256 of the bearer token (`veil key hash` prints it).
    pub sha256: String,
    /// Tenant the key belongs to.
    pub tenant: String,
    /// Name of the policy file (without `.toml`) applied to this key's requests.
    pub policy: String,
    /// A revoked key is refused, and the refusal is audited with the key id.
    #[serde(default)]
    pub revoked: bool,
}

/// The in-process local model.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LocalModelConfig {
    /// Path to a GGUF model; empty disables the local model.
    pub model: PathBuf,
    /// Expected hex SHA-256 of the model file; checked at load when set.
    pub sha256: Option<String>,
    /// Context window per sequence, in tokens.
    pub context_size: u32,
    /// Threads used for generation.
    pub threads: i32,
    /// Prompt-processing batch size, in tokens.
    pub batch_size: u32,
    /// Sequences generated concurrently.
    pub parallel: usize,
    /// Requests that may wait for a free sequence before new ones get 503.
    pub queue: usize,
    /// Seconds a request may wait in the queue.
    pub queue_timeout_secs: u64,
    /// Completion length when the request does not say.
    pub default_max_tokens: u32,
}

impl Default for LocalModelConfig {
    fn default() -> Self {
        Self {
            model: PathBuf::new(),
            sha256: None,
            context_size: 2048,
            threads: 2,
            batch_size: 512,
            parallel: 2,
            queue: 16,
            queue_timeout_secs: 30,
            default_max_tokens: 256,
        }
    }
}

/// Detection settings shared by all policies.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectConfig {
    /// Milliseconds detection may take for one request before `on_detector_error` applies.
    pub timeout_ms: u64,
    /// Concurrent detection jobs (each runs on the blocking pool).
    pub concurrency: usize,
    /// Messages whose classifier findings are remembered per tenant and policy (0: none), so a
    /// conversation resending its history pays the model only for new text. With it the
    /// classifier reads each message on its own, after the end of the one before, instead of
    /// the whole request as one text, and reads each answer while the classifier is idle.
    pub cache_entries: usize,
    /// Seconds a remembered segment stays.
    pub cache_ttl_secs: u64,
}

impl Default for DetectConfig {
    fn default() -> Self {
        Self {
            timeout_ms: 2_000,
            concurrency: 4,
            cache_entries: 4096,
            cache_ttl_secs: 600,
        }
    }
}

/// What to do when the classifier cannot be loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnMissing {
    /// Refuse to start.
    Refuse,
    /// Start, and treat every request as unscannable (the policy's `on_unscannable` applies).
    Unscannable,
}

/// The token classifier.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClassifierSettings {
    /// Directory with `model.onnx`, `tokenizer.json`, `manifest.toml`; empty disables the classifier.
    pub dir: PathBuf,
    /// The ONNX Runtime shared library (`VEIL_ORT_LIB` overrides).
    pub ort_library: PathBuf,
    /// Intra-op threads of each inference session.
    pub threads: usize,
    /// Inference sessions: requests classified at once (each a copy of the model's session,
    /// ~20 MB). Two sessions of two threads keep one request's latency and let a second request
    /// use a core the first leaves idle (`docs/benchmarks.md`).
    pub sessions: usize,
    /// Windows per inference batch.
    pub batch: usize,
    /// What to do when the model is missing or corrupt.
    pub on_missing: OnMissing,
    /// Which integer kernels run the model's products.
    pub weights: Weights,
    /// Decoding rules switched off, by id (`veil scan --ablate` measures each; see
    /// `detect::classifier::rules::RULES`). Empty: all run.
    pub rules_off: Vec<String>,
}

/// How the classifier's quantized products run. Both give the same scores bit for bit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Weights {
    /// int8 weights (about twice as fast) on CPUs where ONNX Runtime multiplies them exactly
    /// (x86 with VNNI), the shipped uint8 weights elsewhere.
    #[default]
    Auto,
    /// Always the shipped uint8 weights.
    Portable,
}

impl Default for ClassifierSettings {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("models/classifier"),
            ort_library: PathBuf::from(".cache/onnxruntime/libonnxruntime.so.1.31.1"),
            threads: 2,
            sessions: 2,
            batch: 16,
            on_missing: OnMissing::Refuse,
            weights: Weights::Auto,
            rules_off: Vec::new(),
        }
    }
}

fn default_hmac_key_env() -> String {
    "VEIL_HMAC_KEY".to_owned()
}
fn default_models() -> Vec<String> {
    vec!["*".to_owned()]
}
fn default_upstream_timeout() -> u64 {
    120
}
fn default_idle_timeout() -> u64 {
    60
}
fn default_max_response() -> usize {
    16 * 1024 * 1024
}

/// Environment variables that override file settings (never secrets in the file).
pub mod env {
    /// Overrides `server.listen`.
    pub const LISTEN: &str = "VEIL_LISTEN";
    /// Overrides `audit.url`.
    pub const AUDIT_URL: &str = "VEIL_AUDIT_URL";
    /// Overrides `local.model`.
    pub const LOCAL_MODEL: &str = "VEIL_LOCAL_MODEL";
    /// Overrides `policies.dir`.
    pub const POLICIES_DIR: &str = "VEIL_POLICIES_DIR";
    /// Overrides `classifier.ort_library`.
    pub const ORT_LIB: &str = "VEIL_ORT_LIB";
    /// Overrides `classifier.dir`.
    pub const CLASSIFIER_DIR: &str = "VEIL_CLASSIFIER_DIR";
}

impl Config {
    /// Reads and validates a config file, then applies environment overrides.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut config = Self::parse(path, &text)?;
        config.apply_env(path, |k| std::env::var(k).ok())?;
        config.resolve_paths(path);
        Ok(config)
    }

    /// Parses and validates config text; `path` only names the source in errors.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let config: Config = parse_toml(path, text)?;
        config.validate(path)?;
        Ok(config)
    }

    /// Applies `VEIL_*` overrides read through `get`.
    pub fn apply_env(
        &mut self,
        path: &Path,
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<(), ConfigError> {
        if let Some(v) = get(env::LISTEN) {
            self.server.listen = v.parse().map_err(|_| ConfigError::Invalid {
                path: path.to_owned(),
                key: env::LISTEN.to_owned(),
                message: "expected an address like 127.0.0.1:8080".to_owned(),
            })?;
        }
        if let Some(v) = get(env::AUDIT_URL) {
            self.audit.url = v;
        }
        if let Some(v) = get(env::LOCAL_MODEL) {
            self.local.model = PathBuf::from(v);
        }
        if let Some(v) = get(env::POLICIES_DIR) {
            self.policies.dir = PathBuf::from(v);
        }
        if let Some(v) = get(env::ORT_LIB) {
            self.classifier.ort_library = PathBuf::from(v);
        }
        if let Some(v) = get(env::CLASSIFIER_DIR) {
            self.classifier.dir = PathBuf::from(v);
        }
        for u in &mut self.upstreams {
            let var = format!(
                "VEIL_UPSTREAM_{}_BASE_URL",
                u.name.to_ascii_uppercase().replace('-', "_")
            );
            if let Some(v) = get(&var) {
                u.base_url = v;
            }
        }
        Ok(())
    }

    /// Makes relative paths relative to the config file's directory.
    fn resolve_paths(&mut self, path: &Path) {
        let base = path.parent().unwrap_or(Path::new("."));
        let fix = |p: &mut PathBuf| {
            if !p.as_os_str().is_empty() && p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.policies.dir);
        fix(&mut self.local.model);
        fix(&mut self.classifier.dir);
        fix(&mut self.classifier.ort_library);
        for p in [
            &mut self.audit.chain_key_file,
            &mut self.audit.signing_key_file,
            &mut self.audit.public_key_file,
            &mut self.audit.checkpoint_file,
        ]
        .into_iter()
        .flatten()
        {
            fix(p);
        }
        if let Some(rest) = self.audit.url.strip_prefix("sqlite://") {
            let p = Path::new(rest);
            if p.is_relative() && !rest.starts_with(':') {
                self.audit.url = format!("sqlite://{}", base.join(p).display());
            }
        }
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key: String, message: &str| ConfigError::Invalid {
            path: path.to_owned(),
            key,
            message: message.to_owned(),
        };
        let mut names = BTreeMap::new();
        for (i, u) in self.upstreams.iter().enumerate() {
            if names.insert(u.name.as_str(), i).is_some() {
                return Err(invalid(
                    format!("upstream[{i}].name"),
                    "duplicate upstream name; give each upstream its own name",
                ));
            }
            if !(u.base_url.starts_with("https://") || u.base_url.starts_with("http://")) {
                return Err(invalid(
                    format!("upstream[{i}].base_url"),
                    "must start with https:// or http://",
                ));
            }
            if u.models.is_empty() {
                return Err(invalid(
                    format!("upstream[{i}].models"),
                    "list at least one model name or \"*\"",
                ));
            }
        }
        let mut ids = BTreeMap::new();
        for (i, k) in self.keys.iter().enumerate() {
            if ids.insert(k.id.as_str(), i).is_some() {
                return Err(invalid(format!("key[{i}].id"), "duplicate key id"));
            }
            if k.sha256.len() != 64 || !k.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(invalid(
                    format!("key[{i}].sha256"),
                    "must be 64 hex digits; run `veil key hash` to produce it",
                ));
            }
        }
        if let Some(h) = &self.admin.token_sha256 {
            if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(invalid(
                    "admin.token_sha256".to_owned(),
                    "must be 64 hex digits; run `veil key hash` to produce it",
                ));
            }
            if self.keys.iter().any(|k| k.sha256.eq_ignore_ascii_case(h)) {
                return Err(invalid(
                    "admin.token_sha256".to_owned(),
                    "the admin token must not also be an API key; give it its own token",
                ));
            }
        }
        if self.server.max_body_bytes == 0 || self.server.max_json_depth == 0 {
            return Err(invalid(
                "server".to_owned(),
                "max_body_bytes and max_json_depth must be positive",
            ));
        }
        if self.server.header_timeout_secs == 0
            || self.server.body_timeout_secs == 0
            || self.server.max_connections == 0
        {
            return Err(invalid(
                "server".to_owned(),
                "header_timeout_secs, body_timeout_secs and max_connections must be positive",
            ));
        }
        if self.local.parallel == 0 {
            return Err(invalid("local.parallel".to_owned(), "must be at least 1"));
        }
        Ok(())
    }
}

/// A TOML file that failed to parse into its schema: file, line:column, key path, message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}:{line}:{column}: {key}{sep}{message}", path = .path.display(), sep = if .key.is_empty() { "" } else { ": " })]
pub struct TomlError {
    /// The file.
    pub path: PathBuf,
    /// 1-based line of the offending item (0 when unknown).
    pub line: usize,
    /// 1-based column of the offending item (0 when unknown).
    pub column: usize,
    /// Key path such as `rules[2].action`; empty when the error is syntactic.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl TomlError {
    /// An error at a byte offset of `text`.
    pub fn at(path: &Path, text: &str, offset: Option<usize>, key: &str, message: &str) -> Self {
        let (line, column) = offset.map_or((0, 0), |o| line_column(text, o));
        Self {
            path: path.to_owned(),
            line,
            column,
            key: key.to_owned(),
            message: message.to_owned(),
        }
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut at = offset.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    let before = text.get(..at).unwrap_or_default();
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
    (line, column)
}

/// Parses TOML text into `T`, reporting the key path and line:column of any error.
pub fn parse_toml<T: serde::de::DeserializeOwned>(path: &Path, text: &str) -> Result<T, TomlError> {
    let de = toml::Deserializer::new(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        // `toml::Spanned` fields show up in the path as a private serde key; readers want the
        // key they wrote.
        let key = e
            .path()
            .to_string()
            .replace(".$__serde_spanned_private_value", "");
        let key = if key == "." { String::new() } else { key };
        let inner = e.inner();
        let message = inner.message().trim().replace('\n', "; ");
        TomlError::at(path, text, inner.span().map(|s| s.start), &key, &message)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_key_is_rejected_with_line_and_column() {
        let err = Config::parse(Path::new("veil.toml"), "[server]\nlisen = \"x\"\n")
            .map(|_| ())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.starts_with("veil.toml:2:1: "), "{err}");
        assert!(err.contains("lisen"), "{err}");
    }

    #[test]
    fn wrong_type_names_key_path() {
        let err = Config::parse(
            Path::new("veil.toml"),
            "[server]\nmax_body_bytes = \"big\"\n",
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(
            err.starts_with("veil.toml:2:18: server.max_body_bytes: "),
            "{err}"
        );
    }

    #[test]
    fn slow_client_limits_must_be_positive() {
        for key in [
            "header_timeout_secs",
            "body_timeout_secs",
            "max_connections",
        ] {
            let err = Config::parse(Path::new("v.toml"), &format!("[server]\n{key} = 0\n"))
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(err.contains(key), "{key}: {err}");
        }
        let c = Config::parse(Path::new("v.toml"), "").map(|c| c.server);
        let (header, body, conns) = c
            .map(|s| {
                (
                    s.header_timeout_secs,
                    s.body_timeout_secs,
                    s.max_connections,
                )
            })
            .unwrap_or_default();
        assert_eq!((header, body, conns), (30, 30, 1024));
    }

    #[test]
    fn bad_key_hash_is_rejected() {
        let text = "[[key]]\nid='a'\nsha256='abc'\ntenant='t'\npolicy='default'\n";
        let err = Config::parse(Path::new("veil.toml"), text)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("key[0].sha256"), "{err}");
    }

    #[test]
    fn classifier_weights_parse_and_a_typo_is_refused() {
        let parse = |v: &str| {
            Config::parse(
                Path::new("v.toml"),
                &format!("[classifier]\nweights = \"{v}\"\n"),
            )
            .map(|c| c.classifier.weights)
            .map_err(|e| e.to_string())
        };
        assert_eq!(parse("auto"), Ok(Weights::Auto));
        assert_eq!(parse("portable"), Ok(Weights::Portable));
        let err = parse("fast").err().unwrap_or_default();
        assert!(err.contains("classifier.weights"), "{err}");
        let default = Config::parse(Path::new("v.toml"), "").map(|c| c.classifier.weights);
        assert_eq!(default.ok(), Some(Weights::Auto));
    }

    #[test]
    fn env_overrides_apply() {
        let mut c = Config::parse(Path::new("v.toml"), "").unwrap_or_else(|e| panic!("{e}"));
        c.apply_env(Path::new("v.toml"), |k| {
            (k == env::LISTEN).then(|| "127.0.0.1:9999".to_owned())
        })
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.server.listen.port(), 9999);
    }
}
