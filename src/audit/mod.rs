//! The audit log: one record per request, append-only and hash-chained, never any text.
//!
//! A request leaves two linked rows: its `decision` (who, what was found, which rules, which
//! action and route) and its `outcome` (status, latencies, tokens, how it ended). For traffic
//! that leaves the machine, the decision row is durable **before** the first byte goes
//! upstream: [`AuditLog::seal`] is the only way to obtain the [`Sealed`] value the routing
//! stage requires. If the write does not finish within the configured time, the request fails
//! closed with `audit_unavailable`.
//!
//! One writer task owns the chain: it batches queued rows into one transaction (group commit),
//! computes each row's hash from the previous one, and acknowledges every waiting request. Rows
//! whose write fails are kept, in order, and written first by the next attempt (retried with
//! backoff while the database is down), so a request refused during an outage still leaves its
//! decision and outcome once the database is back; the log is unhealthy from a failed or
//! overdue write until a write succeeds again.

pub mod chain;
pub mod checkpoint;
mod columns;
pub mod export;
pub mod keys;
mod postgres;
mod query;
mod sqlite;
mod verify;

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;
use tokio::sync::{mpsc, oneshot};

pub use chain::{ChainKey, NewRow};
pub use checkpoint::{Checkpoint, Signer};
pub use postgres::PostgresStore;
pub use query::{Format, Query, RequestRow, Stats, render};
pub use sqlite::SqliteStore;
pub use verify::{ChainProblem, Evidence, Verifier, verify, verify_store};

use crate::policy::RuleHit;

/// Hash of the row before the first one.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Why the audit log could not be written or read.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuditError {
    /// The database refused or failed (message from the driver; it never holds request text).
    #[error("audit database error: {0}")]
    Database(String),
    /// The write did not finish in time, or the queue is full.
    #[error("the audit log did not accept the record in time")]
    Timeout,
    /// The writer has stopped.
    #[error("the audit writer has stopped")]
    Closed,
    /// A key or checkpoint file is missing, unreadable or invalid.
    #[error("audit keys: {0}")]
    Keys(String),
    /// The URL names an unsupported database.
    #[error("unsupported audit database URL; use sqlite://path or postgres://…")]
    UnsupportedUrl,
}

/// Everything decided about a request before it is answered.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DecisionRecord {
    /// Request id (also in `x-veil-request-id`).
    #[serde(skip)]
    pub request_id: String,
    /// Id of the API key, never the key.
    pub key_id: Option<String>,
    /// The key's tenant.
    pub tenant: Option<String>,
    /// Client socket address.
    pub client_addr: String,
    /// Request path, canonical.
    pub endpoint: String,
    /// Requested model.
    pub model: Option<String>,
    /// `allow | redact | local | block`, or `reject` when the request never reached a decision.
    pub action: String,
    /// `local`, the cloud upstream's name, or none.
    pub route: Option<String>,
    /// Machine-readable reason for rejections and blocks.
    pub reason_code: Option<String>,
    /// Rules that matched, with reasons.
    pub rules: Vec<RuleHit>,
    /// Policy name.
    pub policy: Option<String>,
    /// SHA-256 of the policy file.
    pub policy_digest: Option<String>,
    /// Detector and model versions.
    pub detectors: Vec<String>,
    /// Entity counts by type, with offsets and keyed HMACs.
    pub entities: Vec<EntityRecord>,
    /// Parts that could not be scanned.
    pub unscannable: Vec<UnscannableRecord>,
    /// Milliseconds spent detecting.
    pub scan_ms: f64,
    /// Whether the request asked for streaming.
    pub stream: bool,
}

/// Findings of one entity type.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct EntityRecord {
    /// Entity type.
    pub entity: String,
    /// How many findings.
    pub count: usize,
    /// Where they are.
    pub spans: Vec<SpanRecord>,
}

/// One finding's location and keyed digest.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SpanRecord {
    /// Field path, e.g. `messages[1].content`.
    pub field: String,
    /// Start, in Unicode code points within the field.
    pub start: usize,
    /// End, in Unicode code points.
    pub end: usize,
    /// Score of the finding.
    pub score: f32,
    /// Recognizer that found it.
    pub recognizer: String,
    /// HMAC-SHA256 of the value under the deployment's key (first 16 hex digits).
    pub hmac: String,
}

/// An unscannable part.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct UnscannableRecord {
    /// Field path.
    pub field: String,
    /// Kind of part.
    pub kind: String,
}

/// How a request ended.
#[derive(Debug, Clone, Default, Serialize)]
pub struct OutcomeRecord {
    /// Request id.
    #[serde(skip)]
    pub request_id: String,
    /// `completed | blocked | rejected | upstream_error | client_aborted | local_unavailable |
    /// audit_unavailable | timeout | outcome_unknown | …`
    pub outcome: String,
    /// HTTP status sent to the client.
    pub status: u16,
    /// Error code sent to the client, if any.
    pub error_code: Option<String>,
    /// Milliseconds until the upstream (or local model) finished.
    pub upstream_ms: Option<f64>,
    /// Milliseconds for the whole request.
    pub total_ms: f64,
    /// Prompt tokens, as reported by the model.
    pub prompt_tokens: Option<u64>,
    /// Completion tokens, as reported by the model.
    pub completion_tokens: Option<u64>,
}

/// Something that happened to veil itself rather than to a request (a policy reload accepted or
/// refused), kept in the same chain as the requests.
#[derive(Debug, Clone, Default, Serialize)]
pub struct EventRecord {
    /// Event id (stored in the `request_id` column).
    #[serde(skip)]
    pub id: String,
    /// What happened, e.g. `policy_reload`.
    pub event: String,
    /// `accepted` or `refused`.
    pub status: String,
    /// The file concerned.
    pub file: String,
    /// SHA-256 of the file's active version before, if it existed.
    pub old_digest: Option<String>,
    /// SHA-256 of the file's new version, if it still exists.
    pub new_digest: Option<String>,
    /// Why (the error for a refusal; never request text).
    pub reason: String,
}

/// One row as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct StoredRow {
    /// Chain position.
    pub seq: i64,
    /// Request id.
    pub request_id: String,
    /// `decision`, `outcome` or `event`.
    pub kind: String,
    /// RFC 3339 timestamp (UTC) of when the row was queued — the moment of the request, even
    /// when an outage delayed its write.
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
    /// Previous row's hash.
    pub prev_hash: String,
    /// This row's hash (SHA-256 over every column and `prev_hash`).
    pub hash: String,
    /// Chain scheme: `v2` (keyed) or `v1` (legacy rows written before the chain was keyed).
    pub scheme: String,
    /// HMAC of `hash` under the chain key (`v2` rows).
    pub mac: Option<String>,
}

/// A boxed future, so that stores can be trait objects.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where audit rows are kept. SQLite today; PostgreSQL implements the same trait.
pub trait AuditStore: Send + Sync + 'static {
    /// Whether the writer's calls ([`Self::append`], [`Self::add_checkpoint`], [`Self::close`])
    /// block the thread they run on: the writer then runs on a thread of its own.
    fn blocking(&self) -> bool {
        false
    }
    /// Sequence number and hash of the last row, if any.
    fn tail(&self) -> BoxFuture<'_, Result<Option<(i64, String)>, AuditError>>;
    /// Chains `rows` after the last stored row and appends them, in one transaction that
    /// excludes every other writer of the same database (several veil instances may share
    /// one). Returns the new chain head `(seq, hash)`.
    fn append<'a>(
        &'a self,
        rows: &'a [NewRow],
        key: &'a ChainKey,
    ) -> BoxFuture<'a, Result<(i64, String), AuditError>>;
    /// Stores a signed checkpoint.
    fn add_checkpoint<'a>(&'a self, cp: &'a Checkpoint) -> BoxFuture<'a, Result<(), AuditError>>;
    /// Every checkpoint stored, in sequence order.
    fn checkpoints(&self) -> BoxFuture<'_, Result<Vec<Checkpoint>, AuditError>>;
    /// Deletes the rows with `seq <= through` (retention), past the append-only triggers, in
    /// one transaction. Returns how many were deleted.
    fn prune(&self, through: i64) -> BoxFuture<'_, Result<u64, AuditError>>;
    /// The first and last sequence numbers of rows with `from <= ts < to` (RFC 3339 or dates).
    fn seq_bounds<'a>(
        &'a self,
        from: Option<&'a str>,
        to: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Option<(i64, i64)>, AuditError>>;
    /// Request ids whose decision has no outcome (a crash between the two).
    fn open_decisions(&self) -> BoxFuture<'_, Result<Vec<String>, AuditError>>;
    /// All rows in chain order (for tests; `verify` reads in pages).
    fn rows(&self) -> BoxFuture<'_, Result<Vec<StoredRow>, AuditError>>;
    /// Up to `limit` rows with `after < seq <= to`, in chain order.
    fn rows_page(
        &self,
        after: i64,
        to: i64,
        limit: i64,
    ) -> BoxFuture<'_, Result<Vec<StoredRow>, AuditError>>;
    /// Whether the database answers.
    fn ping(&self) -> BoxFuture<'_, Result<(), AuditError>>;
    /// Closes every connection and waits until they are closed (SQLite checkpoints its WAL
    /// then); the writer calls it when it stops, after every handle to the log is gone.
    fn close(&self) -> BoxFuture<'_, ()>;
    /// Requests matching a query, newest first.
    fn query<'a>(&'a self, q: &'a Query) -> BoxFuture<'a, Result<Vec<RequestRow>, AuditError>>;
    /// Counts over the requests matching a query.
    fn stats<'a>(&'a self, q: &'a Query) -> BoxFuture<'a, Result<Stats, AuditError>>;
}

/// Proof that a decision record is durable; the routing stage takes nothing else.
#[derive(Debug)]
pub struct Sealed<T> {
    inner: T,
}

impl<T> Sealed<T> {
    /// The sealed value.
    pub fn into_inner(self) -> T {
        self.inner
    }

    /// A reference to the sealed value.
    pub fn get(&self) -> &T {
        &self.inner
    }
}

enum Row {
    Decision(Box<DecisionRecord>),
    Outcome(OutcomeRecord),
    Event(EventRecord),
}

struct Job {
    rows: Vec<Row>,
    ack: Option<oneshot::Sender<Result<(), AuditError>>>,
    /// When the job was queued; a write is overdue by its oldest job's age.
    queued: Instant,
    /// The same moment as wall-clock time: the rows' timestamp, however late they are written.
    ts: String,
}

/// Opens the store named by `url` for reading only: nothing is created, migrated or written, and
/// a database that does not exist is an error. For `veil audit` commands, which may run beside a
/// live server.
pub async fn open_read_only(url: &str) -> Result<Arc<dyn AuditStore>, AuditError> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        Ok(Arc::new(SqliteStore::open_read_only(path).await?))
    } else if is_postgres(url) {
        Ok(Arc::new(PostgresStore::open_read_only(url).await?))
    } else {
        Err(AuditError::UnsupportedUrl)
    }
}

/// Opens the store named by `url` as a writer (created and migrated; for SQLite, the one-writer
/// lock is taken).
pub async fn open_writer(url: &str) -> Result<Arc<dyn AuditStore>, AuditError> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        Ok(Arc::new(SqliteStore::open(path).await?))
    } else if is_postgres(url) {
        Ok(Arc::new(PostgresStore::open(url).await?))
    } else {
        Err(AuditError::UnsupportedUrl)
    }
}

/// Appends one event row directly (commands that hold the store without running a server).
pub async fn append_event(
    store: &dyn AuditStore,
    key: &ChainKey,
    event: EventRecord,
) -> Result<(i64, String), AuditError> {
    store
        .append(&[to_new(&Row::Event(event), &now())], key)
        .await
}

fn is_postgres(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// Keyed digests of detected values, for correlation without storing them.
#[derive(Clone)]
pub struct ValueDigester {
    key: Arc<[u8]>,
}

impl std::fmt::Debug for ValueDigester {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ValueDigester(..)")
    }
}

impl ValueDigester {
    /// A digester with this key.
    pub fn new(key: &[u8]) -> Self {
        Self { key: key.into() }
    }

    /// HMAC-SHA256 of `entity:value`, hex, over the value's canonical form ([`canonical`]): the
    /// same SSN typed `536-22-8745` or `536 22 8745` has one digest, so `veil audit query
    /// --value` finds it in either form.
    pub fn digest(&self, entity: &str, value: &str) -> String {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.key) else {
            return String::new();
        };
        mac.update(entity.as_bytes());
        mac.update(b":");
        mac.update(canonical(value).as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }
}

/// A value as digested: normalized as the detectors read it (NFKC, invisible characters
/// removed, every decimal digit in ASCII), lower-cased, keeping only letters, digits and `@`.
pub fn canonical(value: &str) -> String {
    crate::detect::normalize::normalize(value)
        .text
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == '@')
        .flat_map(char::to_lowercase)
        .collect()
}

/// Handle to the audit writer; cheap to clone.
#[derive(Clone)]
pub struct AuditLog {
    tx: mpsc::Sender<Job>,
    timeout: Duration,
    health: Arc<Health>,
    store: Arc<dyn AuditStore>,
    /// The writer's own key and public key, for verifying over the admin API.
    evidence: Arc<Evidence>,
    checkpoint_file: Option<std::path::PathBuf>,
}

/// What the writer reports about its writes; read by [`AuditLog::is_healthy`].
#[derive(Debug)]
struct Health {
    /// Whether the last finished write succeeded.
    last_ok: AtomicBool,
    /// Milliseconds after `epoch` (plus one) at which the oldest job of the running write was
    /// queued; 0 when idle.
    busy_since: AtomicU64,
    epoch: Instant,
    /// Rows handed to the writer and not written yet (queued or kept for retry).
    unwritten: AtomicU64,
}

impl Health {
    fn new() -> Self {
        Self {
            last_ok: AtomicBool::new(true),
            busy_since: AtomicU64::new(0),
            epoch: Instant::now(),
            unwritten: AtomicU64::new(0),
        }
    }

    fn ms(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_millis())
            .unwrap_or(u64::MAX - 1)
            .saturating_add(1)
    }

    fn begin(&self, oldest: Instant) {
        self.busy_since.store(self.ms(oldest), Ordering::Relaxed);
    }

    fn end(&self, ok: bool) {
        self.last_ok.store(ok, Ordering::Relaxed);
        self.busy_since.store(0, Ordering::Relaxed);
    }

    /// The last write succeeded and none has been running for longer than `limit`.
    fn is_healthy(&self, limit: Duration) -> bool {
        let since = self.busy_since.load(Ordering::Relaxed);
        let overdue = since != 0
            && u128::from(self.ms(Instant::now()).saturating_sub(since)) >= limit.as_millis();
        self.last_ok.load(Ordering::Relaxed) && !overdue
    }
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("healthy", &self.is_healthy())
            .finish()
    }
}

/// The writer task. After every [`AuditLog`] is dropped it writes what it still holds, retrying
/// while the database fails; [`WriterTask::finish`] waits for that and says what was lost.
#[derive(Debug)]
pub struct WriterTask {
    /// Closed when the writer has stopped (its store closed).
    done: oneshot::Receiver<()>,
    /// The writer's task, when it runs on the caller's runtime (a thread cannot be aborted).
    task: Option<tokio::task::AbortHandle>,
    health: Arc<Health>,
}

impl WriterTask {
    /// Waits up to `within` for the writer to write everything queued (call it after dropping
    /// every [`AuditLog`]). Returns the number of rows that could not be written: 0 when all
    /// landed.
    pub async fn finish(self, within: Duration) -> u64 {
        if tokio::time::timeout(within, self.done).await.is_err()
            && let Some(task) = &self.task
        {
            task.abort();
        }
        let lost = self.health.unwritten.load(Ordering::Relaxed);
        if lost > 0 {
            metrics::counter!("veil_audit_rows_dropped_total").increment(lost);
        }
        lost
    }
}

impl AuditLog {
    /// Opens the store named by `url`, closes decisions left open by a crash (`outcome_unknown`),
    /// and starts the writer.
    pub async fn open(
        url: &str,
        timeout: Duration,
        queue: usize,
        sealing: Sealing,
    ) -> Result<(Self, WriterTask), AuditError> {
        Self::with_store(open_writer(url).await?, timeout, queue, sealing).await
    }

    /// Starts the writer over an existing store.
    pub async fn with_store(
        store: Arc<dyn AuditStore>,
        timeout: Duration,
        queue: usize,
        sealing: Sealing,
    ) -> Result<(Self, WriterTask), AuditError> {
        let (tx, rx) = mpsc::channel(queue.max(1));
        let health = Arc::new(Health::new());
        let tail = store.tail().await?;
        let evidence = Arc::new(Evidence {
            key: Some(sealing.key.clone()),
            public_keys: sealing
                .checkpoints
                .iter()
                .map(|c| c.signer.public())
                .collect(),
            checkpoints: Vec::new(),
            retention_days: sealing.retention_days,
        });
        let checkpoint_file = sealing.checkpoints.as_ref().and_then(|c| c.file.clone());
        let task = spawn_writer(store.clone(), rx, sealing, tail, health.clone())?;
        let log = Self {
            tx,
            timeout,
            health,
            store,
            evidence,
            checkpoint_file,
        };
        let open = log.store.open_decisions().await?;
        if !open.is_empty() {
            tracing::warn!(
                count = open.len(),
                "closing decisions left open by an earlier crash"
            );
            let rows = open
                .into_iter()
                .map(|request_id| {
                    Row::Outcome(OutcomeRecord {
                        request_id,
                        outcome: "outcome_unknown".to_owned(),
                        ..OutcomeRecord::default()
                    })
                })
                .collect();
            log.submit(rows).await?;
        }
        Ok((log, task))
    }

    /// Whether the last write succeeded and no write has been running for longer than the
    /// write timeout.
    pub fn is_healthy(&self) -> bool {
        self.health.is_healthy(self.timeout)
    }

    /// Checks that the database answers.
    pub async fn ping(&self) -> Result<(), AuditError> {
        tokio::time::timeout(self.timeout, self.store.ping())
            .await
            .map_err(|_| AuditError::Timeout)?
    }

    /// Writes the decision durably, then hands back `payload` as proof.
    pub async fn seal<T>(
        &self,
        decision: DecisionRecord,
        payload: T,
    ) -> Result<Sealed<T>, AuditError> {
        self.submit(vec![Row::Decision(Box::new(decision))]).await?;
        Ok(Sealed { inner: payload })
    }

    /// Writes a request's outcome and waits for it to be durable.
    pub async fn finish(&self, outcome: OutcomeRecord) -> Result<(), AuditError> {
        self.submit(vec![Row::Outcome(outcome)]).await
    }

    /// Writes a decision and its outcome together (requests answered without routing).
    pub async fn record(
        &self,
        decision: DecisionRecord,
        outcome: OutcomeRecord,
    ) -> Result<(), AuditError> {
        self.submit(vec![
            Row::Decision(Box::new(decision)),
            Row::Outcome(outcome),
        ])
        .await
    }

    /// Writes an event and waits for it to be durable.
    pub async fn event(&self, event: EventRecord) -> Result<(), AuditError> {
        self.submit(vec![Row::Event(event)]).await
    }

    /// Queues an outcome (and its decision, if not written yet) without waiting, for paths
    /// that cannot await, such as a dropped request future.
    pub fn record_detached(&self, decision: Option<DecisionRecord>, outcome: OutcomeRecord) {
        let mut rows: Vec<Row> = decision
            .into_iter()
            .map(|d| Row::Decision(Box::new(d)))
            .collect();
        rows.push(Row::Outcome(outcome));
        self.health
            .unwritten
            .fetch_add(rows.len() as u64, Ordering::Relaxed);
        let job = Job {
            rows,
            ack: None,
            queued: Instant::now(),
            ts: now(),
        };
        match self.tx.try_send(job) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(job)) => {
                let tx = self.tx.clone();
                if let Ok(handle) = tokio::runtime::Handle::try_current() {
                    handle.spawn(async move {
                        let _ = tx.send(job).await;
                    });
                } else {
                    tracing::error!("audit queue full outside the runtime; outcome lost");
                }
            }
            Err(mpsc::error::TrySendError::Closed(job)) => {
                tracing::error!("audit writer stopped; outcome lost");
                self.health
                    .unwritten
                    .fetch_sub(job.rows.len() as u64, Ordering::Relaxed);
            }
        }
    }

    /// All rows, in chain order.
    pub async fn rows(&self) -> Result<Vec<StoredRow>, AuditError> {
        self.store.rows().await
    }

    /// Requests matching a query (the admin API).
    pub async fn query(&self, q: &Query) -> Result<Vec<RequestRow>, AuditError> {
        self.store.query(q).await
    }

    /// Counts over the requests matching a query (the admin API).
    pub async fn stats(&self, q: &Query) -> Result<Stats, AuditError> {
        self.store.stats(q).await
    }

    /// Verifies the chain, or the rows `from..=to` of it (the admin API).
    pub async fn verify(&self, from: Option<i64>, to: Option<i64>) -> Result<Verifier, AuditError> {
        let mut evidence = (*self.evidence).clone();
        if let Some(path) = &self.checkpoint_file
            && path.exists()
        {
            let (cps, damaged) = checkpoint::read_file(path).map_err(AuditError::Database)?;
            let source = path.display().to_string();
            evidence
                .checkpoints
                .extend(cps.into_iter().map(|cp| (source.clone(), cp)));
            if let Some(first) = damaged.first() {
                tracing::warn!(damaged = damaged.len(), first = %first, "checkpoint file has unreadable lines");
            }
        }
        verify_store(self.store.as_ref(), from, to, &evidence).await
    }

    async fn submit(&self, rows: Vec<Row>) -> Result<(), AuditError> {
        let started = Instant::now();
        let kind = match rows.first() {
            Some(Row::Decision(_)) => "decision",
            Some(Row::Outcome(_)) => "outcome",
            _ => "event",
        };
        self.health
            .unwritten
            .fetch_add(rows.len() as u64, Ordering::Relaxed);
        let (ack, done) = oneshot::channel();
        let job = Job {
            rows,
            ack: Some(ack),
            queued: Instant::now(),
            ts: now(),
        };
        // Queue synchronously when there is room, so that a caller dropped while waiting for
        // the acknowledgement cannot lose the record.
        let queued = match self.tx.try_send(job) {
            Ok(()) => None,
            Err(mpsc::error::TrySendError::Full(job)) => Some(job),
            Err(mpsc::error::TrySendError::Closed(job)) => {
                self.health
                    .unwritten
                    .fetch_sub(job.rows.len() as u64, Ordering::Relaxed);
                return Err(AuditError::Closed);
            }
        };
        let result = tokio::time::timeout(self.timeout, async {
            if let Some(job) = queued {
                self.tx.send(job).await.map_err(|_| AuditError::Closed)?;
            }
            done.await.map_err(|_| AuditError::Closed)?
        })
        .await
        .unwrap_or(Err(AuditError::Timeout));
        if result.is_err() {
            metrics::counter!("veil_audit_write_failures_total").increment(1);
        }
        // How long a request waits for its rows to be durable (group commit included): the
        // part of veil's overhead the audit log owns.
        metrics::histogram!("veil_audit_wait_seconds", "first_row" => kind)
            .record(started.elapsed().as_secs_f64());
        result
    }
}

/// Most jobs gathered into one transaction (rows kept for retry come on top).
const MAX_BATCH: usize = 256;
/// Most rows kept for retry while the database fails; beyond it the oldest are dropped (logged
/// and counted in `veil_audit_rows_dropped_total`).
const MAX_PENDING: usize = 10_000;
/// First and longest wait before retrying rows whose write failed.
const RETRY_MIN: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(1);

/// How the writer signs checkpoints.
#[derive(Debug)]
pub struct Checkpointing {
    /// The signing key.
    pub signer: Signer,
    /// The file outside the database each checkpoint is appended to.
    pub file: Option<std::path::PathBuf>,
    /// Sign after this many new rows…
    pub every_rows: u64,
    /// …or this long after the last checkpoint, whichever comes first (only if rows were added).
    pub every: Duration,
}

/// Chain key and checkpoints, for the writer.
#[derive(Debug)]
pub struct Sealing {
    /// The key of the chain's MACs.
    pub key: ChainKey,
    /// Signed checkpoints (none: not signed; tests of other things only).
    pub checkpoints: Option<Checkpointing>,
    /// The retention period, in days, that `verify` holds a pruned log to.
    pub retention_days: Option<u64>,
}

/// Checkpoint bookkeeping of the writer.
struct Marks {
    cfg: Option<Checkpointing>,
    /// The chain head after the last successful append.
    head: Option<(i64, String)>,
    /// Rows appended since the last checkpoint.
    since: u64,
    last: Instant,
}

impl Marks {
    /// When the next checkpoint is due by time, if one is pending.
    fn due(&self) -> Option<tokio::time::Instant> {
        let cfg = self.cfg.as_ref()?;
        (self.since > 0).then(|| tokio::time::Instant::from_std(self.last + cfg.every))
    }

    /// Signs the current head and stores it in the database and the checkpoint file. A failure
    /// is logged and counted, and retried at the next occasion.
    async fn sign(&mut self, store: &dyn AuditStore) {
        let (Some(cfg), Some((seq, head))) = (self.cfg.as_ref(), self.head.as_ref()) else {
            return;
        };
        self.last = Instant::now();
        let cp = cfg.signer.sign(*seq, head, &now());
        let stored = store.add_checkpoint(&cp).await;
        let filed = match &cfg.file {
            Some(path) => {
                let (path, line) = (path.clone(), cp.clone());
                tokio::task::spawn_blocking(move || checkpoint::append_to_file(&path, &line))
                    .await
                    .map_err(std::io::Error::other)
                    .and_then(|r| r)
                    .map_err(|e| e.to_string())
            }
            None => Ok(()),
        };
        match (stored, filed) {
            (Ok(()), Ok(())) => {
                self.since = 0;
                tracing::info!(seq = cp.seq, head = %cp.head, key_id = %cp.key_id, "audit checkpoint signed");
                metrics::counter!("veil_audit_checkpoints_total").increment(1);
            }
            (stored, filed) => {
                tracing::error!(
                    seq = cp.seq,
                    database = ?stored.err().map(|e| e.to_string()),
                    file = ?filed.err(),
                    "audit checkpoint could not be stored; retried later"
                );
                metrics::counter!("veil_audit_checkpoint_failures_total").increment(1);
            }
        }
    }
}

/// Starts the writer: on a thread of its own, with a single-threaded runtime, when the store
/// blocks (SQLite: a request then waits for one hand-off to that thread and one back, not for
/// the scheduling of a task and of a driver thread per statement); else as a task.
fn spawn_writer(
    store: Arc<dyn AuditStore>,
    rx: mpsc::Receiver<Job>,
    sealing: Sealing,
    tail: Option<(i64, String)>,
    health: Arc<Health>,
) -> Result<WriterTask, AuditError> {
    let (stopped, done) = oneshot::channel();
    let run = writer(store.clone(), rx, sealing, tail, health.clone());
    let task = if store.blocking() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .map_err(|e| AuditError::Database(format!("cannot start the audit writer: {e}")))?;
        std::thread::Builder::new()
            .name("veil-audit-writer".to_owned())
            .spawn(move || {
                runtime.block_on(run);
                let _ = stopped.send(());
            })
            .map_err(|e| AuditError::Database(format!("cannot start the audit writer: {e}")))?;
        None
    } else {
        let handle = tokio::spawn(async move {
            run.await;
            let _ = stopped.send(());
        });
        Some(handle.abort_handle())
    };
    Ok(WriterTask { done, task, health })
}

/// Waits until `at`, or forever.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn writer(
    store: Arc<dyn AuditStore>,
    mut rx: mpsc::Receiver<Job>,
    sealing: Sealing,
    tail: Option<(i64, String)>,
    health: Arc<Health>,
) {
    let key = sealing.key;
    let mut marks = Marks {
        cfg: sealing.checkpoints,
        head: tail,
        since: 0,
        last: Instant::now(),
    };
    // Rows of failed writes, oldest first (each with the time it was queued); written before
    // anything newer.
    let mut pending: VecDeque<NewRow> = VecDeque::new();
    let mut backoff = RETRY_MIN;
    let mut open = true;
    loop {
        let mut jobs = Vec::new();
        if pending.is_empty() {
            tokio::select! {
                job = rx.recv() => match job {
                    Some(job) => jobs.push(job),
                    None => break,
                },
                () = sleep_until(marks.due()) => {
                    marks.sign(store.as_ref()).await;
                    continue;
                }
            }
        } else if open {
            // Retry when the backoff ends, or at once when new rows arrive.
            tokio::select! {
                job = rx.recv() => match job {
                    Some(job) => jobs.push(job),
                    None => open = false,
                },
                () = tokio::time::sleep(backoff) => {}
            }
        } else {
            // Shutting down with rows the database refused: keep trying until the caller's
            // deadline ([`WriterTask::finish`]) gives up on them.
            tokio::time::sleep(backoff).await;
        }
        while jobs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        for job in &mut jobs {
            let ts = std::mem::take(&mut job.ts);
            pending.extend(
                std::mem::take(&mut job.rows)
                    .iter()
                    .map(|row| to_new(row, &ts)),
            );
        }

        health.begin(
            jobs.iter()
                .map(|job| job.queued)
                .min()
                .unwrap_or_else(Instant::now),
        );
        let rows = pending.make_contiguous();
        let result = store.append(rows, &key).await;
        health.end(result.is_ok());
        let result = match result {
            Ok(head) => {
                marks.head = Some(head);
                marks.since += pending.len() as u64;
                health
                    .unwritten
                    .fetch_sub(pending.len() as u64, Ordering::Relaxed);
                pending.clear();
                backoff = RETRY_MIN;
                Ok(())
            }
            Err(e) => {
                tracing::error!(error = %e, rows = pending.len(), "audit write failed; rows kept for retry");
                if pending.len() > MAX_PENDING {
                    let dropped = pending.len() - MAX_PENDING;
                    pending.drain(..dropped);
                    health
                        .unwritten
                        .fetch_sub(dropped as u64, Ordering::Relaxed);
                    tracing::error!(dropped, "audit retry buffer full; oldest rows dropped");
                    metrics::counter!("veil_audit_rows_dropped_total").increment(dropped as u64);
                }
                backoff = (backoff * 2).min(RETRY_MAX);
                Err(e)
            }
        };
        for job in jobs {
            if let Some(ack) = job.ack {
                let _ = ack.send(result.clone());
            }
        }
        if marks
            .cfg
            .as_ref()
            .is_some_and(|cfg| marks.since >= cfg.every_rows)
        {
            marks.sign(store.as_ref()).await;
        }
    }
    // A last checkpoint at shutdown, so that the tail written since the previous one is signed.
    if marks.since > 0 {
        marks.sign(store.as_ref()).await;
    }
    store.close().await;
}

fn to_new(row: &Row, ts: &str) -> NewRow {
    let (request_id, kind, tenant, action, outcome, status, body) = match row {
        Row::Decision(d) => (
            d.request_id.clone(),
            "decision",
            d.tenant.clone(),
            Some(d.action.clone()),
            None,
            None,
            serde_json::to_string(d),
        ),
        Row::Outcome(o) => (
            o.request_id.clone(),
            "outcome",
            None,
            None,
            Some(o.outcome.clone()),
            Some(i64::from(o.status)),
            serde_json::to_string(o),
        ),
        Row::Event(e) => (
            e.id.clone(),
            "event",
            None,
            None,
            None,
            None,
            serde_json::to_string(e),
        ),
    };
    NewRow {
        request_id,
        kind: kind.to_owned(),
        ts: ts.to_owned(),
        tenant,
        action,
        outcome,
        status,
        body: body.unwrap_or_else(|_| "{}".to_owned()),
    }
}

fn now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> ChainKey {
        ChainKey::new(&[9; 32]).unwrap_or_else(|e| panic!("{e}"))
    }

    fn sealing() -> Sealing {
        Sealing {
            key: key(),
            checkpoints: None,
            retention_days: None,
        }
    }

    async fn log() -> (AuditLog, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let url = format!("sqlite://{}", dir.path().join("a.db").display());
        let (log, _task) = AuditLog::open(&url, Duration::from_secs(5), 16, sealing())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        (log, dir)
    }

    #[tokio::test]
    async fn chain_verifies_and_detects_tampering() {
        let (log, _dir) = log().await;
        for i in 0..3 {
            let d = DecisionRecord {
                request_id: format!("r{i}"),
                action: "allow".into(),
                ..Default::default()
            };
            let o = OutcomeRecord {
                request_id: format!("r{i}"),
                outcome: "completed".into(),
                status: 200,
                ..Default::default()
            };
            log.record(d, o).await.unwrap_or_else(|e| panic!("{e}"));
        }
        let rows = log.rows().await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(rows.len(), 6);
        assert!(verify(&rows).is_empty());

        let mut altered = rows.clone();
        altered[2].body = altered[2].body.replace("allow", "block");
        assert_eq!(verify(&altered).first().map(|p| p.seq), Some(3));
        let mut removed = rows.clone();
        removed.remove(1);
        assert!(!verify(&removed).is_empty());
        let mut swapped = rows;
        swapped.swap(3, 4);
        assert!(!verify(&swapped).is_empty());
    }

    #[tokio::test]
    async fn verify_reads_in_pages_and_ranges() {
        let (log, _dir) = log().await;
        for i in 0..5 {
            log.record(
                decision(&format!("r{i}")),
                outcome(&format!("r{i}"), "completed"),
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        }
        let store = log.store.clone();
        // Pages of 3 over 10 rows: the same verdict as reading them whole.
        let v = verify::verify_pages(store.as_ref(), None, None, &Evidence::default(), 3)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((v.rows, v.problems.len()), (10, 0));
        // A range starting inside the chain takes its first link as given.
        let v = verify::verify_pages(store.as_ref(), Some(5), Some(8), &Evidence::default(), 3)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((v.rows, v.problems.len()), (4, 0));
        // A break between two pages is still seen, at its row.
        let mut rows = store.rows().await.unwrap_or_else(|e| panic!("{e}"));
        rows[3].body = rows[3].body.replace("completed", "blocked");
        let mut split = Verifier::from_genesis();
        split.feed(&rows[..3]);
        split.feed(&rows[3..]);
        assert_eq!(split.problems.first().map(|p| p.seq), Some(4));
    }

    /// SQLite underneath; `append` fails while `down` is set and first sleeps `stall` ms.
    struct Flaky {
        inner: SqliteStore,
        down: AtomicBool,
        stall: AtomicU64,
    }

    impl AuditStore for Flaky {
        fn tail(&self) -> BoxFuture<'_, Result<Option<(i64, String)>, AuditError>> {
            self.inner.tail()
        }
        fn append<'a>(
            &'a self,
            rows: &'a [NewRow],
            key: &'a ChainKey,
        ) -> BoxFuture<'a, Result<(i64, String), AuditError>> {
            Box::pin(async move {
                let stall = self.stall.load(Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(stall)).await;
                if self.down.load(Ordering::Relaxed) {
                    return Err(AuditError::Database("database is locked".into()));
                }
                self.inner.append(rows, key).await
            })
        }
        fn add_checkpoint<'a>(
            &'a self,
            cp: &'a Checkpoint,
        ) -> BoxFuture<'a, Result<(), AuditError>> {
            self.inner.add_checkpoint(cp)
        }
        fn checkpoints(&self) -> BoxFuture<'_, Result<Vec<Checkpoint>, AuditError>> {
            self.inner.checkpoints()
        }
        fn seq_bounds<'a>(
            &'a self,
            from: Option<&'a str>,
            to: Option<&'a str>,
        ) -> BoxFuture<'a, Result<Option<(i64, i64)>, AuditError>> {
            self.inner.seq_bounds(from, to)
        }
        fn prune(&self, through: i64) -> BoxFuture<'_, Result<u64, AuditError>> {
            self.inner.prune(through)
        }
        fn open_decisions(&self) -> BoxFuture<'_, Result<Vec<String>, AuditError>> {
            self.inner.open_decisions()
        }
        fn rows(&self) -> BoxFuture<'_, Result<Vec<StoredRow>, AuditError>> {
            self.inner.rows()
        }
        fn rows_page(
            &self,
            after: i64,
            to: i64,
            limit: i64,
        ) -> BoxFuture<'_, Result<Vec<StoredRow>, AuditError>> {
            self.inner.rows_page(after, to, limit)
        }
        fn ping(&self) -> BoxFuture<'_, Result<(), AuditError>> {
            self.inner.ping()
        }
        fn close(&self) -> BoxFuture<'_, ()> {
            self.inner.close()
        }
        fn query<'a>(&'a self, q: &'a Query) -> BoxFuture<'a, Result<Vec<RequestRow>, AuditError>> {
            self.inner.query(q)
        }
        fn stats<'a>(&'a self, q: &'a Query) -> BoxFuture<'a, Result<Stats, AuditError>> {
            self.inner.stats(q)
        }
    }

    async fn flaky(timeout_ms: u64) -> (AuditLog, Arc<Flaky>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("a.db");
        let inner = SqliteStore::open(&path.display().to_string())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let store = Arc::new(Flaky {
            inner,
            down: AtomicBool::new(false),
            stall: AtomicU64::new(0),
        });
        let (log, _task) = AuditLog::with_store(
            store.clone(),
            Duration::from_millis(timeout_ms),
            16,
            sealing(),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        (log, store, dir)
    }

    fn decision(id: &str) -> DecisionRecord {
        DecisionRecord {
            request_id: id.into(),
            action: "allow".into(),
            ..Default::default()
        }
    }

    fn outcome(id: &str, outcome: &str) -> OutcomeRecord {
        OutcomeRecord {
            request_id: id.into(),
            outcome: outcome.into(),
            ..Default::default()
        }
    }

    async fn wait_rows(log: &AuditLog, n: usize) -> Vec<StoredRow> {
        for _ in 0..200 {
            let rows = log.rows().await.unwrap_or_else(|e| panic!("{e}"));
            if rows.len() >= n {
                return rows;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        log.rows().await.unwrap_or_else(|e| panic!("{e}"))
    }

    #[tokio::test]
    async fn rows_of_a_failed_write_are_retried_in_order_once_the_database_is_back() {
        let (log, store, _dir) = flaky(1000).await;
        log.record(decision("before"), outcome("before", "completed"))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        store.down.store(true, Ordering::Relaxed);
        assert!(log.seal(decision("during"), ()).await.is_err());
        log.record_detached(None, outcome("during", "audit_unavailable"));
        let queued_by = time::OffsetDateTime::now_utc();
        assert!(!log.is_healthy(), "a failed write makes the log unhealthy");
        // The outage lasts: the writer's retries fail for a while.
        tokio::time::sleep(Duration::from_millis(300)).await;
        store.down.store(false, Ordering::Relaxed);
        // No new request: the writer retries by itself.
        let rows = wait_rows(&log, 4).await;
        let kinds: Vec<_> = rows
            .iter()
            .map(|r| (r.request_id.as_str(), r.kind.as_str()))
            .collect();
        assert_eq!(
            kinds,
            [
                ("before", "decision"),
                ("before", "outcome"),
                ("during", "decision"),
                ("during", "outcome")
            ]
        );
        for row in rows.iter().filter(|r| r.request_id == "during") {
            let ts = time::OffsetDateTime::parse(
                &row.ts,
                &time::format_description::well_known::Rfc3339,
            )
            .unwrap_or_else(|e| panic!("{e}"));
            assert!(
                ts <= queued_by,
                "a retried row keeps the time it was queued, not the retry's"
            );
        }
        assert!(verify(&rows).is_empty());
        assert!(log.is_healthy(), "healthy again after a successful write");
        log.record(decision("after"), outcome("after", "completed"))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let rows = log.rows().await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(rows.len(), 6, "every row written exactly once");
        assert!(verify(&rows).is_empty());
    }

    async fn flaky_with_task(
        timeout_ms: u64,
    ) -> (AuditLog, WriterTask, Arc<Flaky>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let inner = SqliteStore::open(&dir.path().join("a.db").display().to_string())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let store = Arc::new(Flaky {
            inner,
            down: AtomicBool::new(false),
            stall: AtomicU64::new(0),
        });
        let (log, task) = AuditLog::with_store(
            store.clone(),
            Duration::from_millis(timeout_ms),
            16,
            sealing(),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        (log, task, store, dir)
    }

    #[tokio::test]
    async fn shutdown_flushes_pending_rows_or_says_how_many_are_lost() {
        // The database comes back during the shutdown window: everything lands.
        let (log, task, store, dir) = flaky_with_task(200).await;
        store.down.store(true, Ordering::Relaxed);
        for i in 0..3 {
            log.record_detached(
                Some(decision(&format!("r{i}"))),
                outcome(&format!("r{i}"), "completed"),
            );
        }
        let reader = store.clone();
        drop(log);
        let revive = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            reader.down.store(false, Ordering::Relaxed);
        });
        assert_eq!(task.finish(Duration::from_secs(5)).await, 0);
        let _ = revive.await;
        // The writer closed its store when it stopped: read the file afresh.
        let db = dir.path().join("a.db").display().to_string();
        let reader = SqliteStore::open_read_only(&db)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let rows = reader.rows().await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(rows.len(), 6);
        assert!(verify(&rows).is_empty());

        // It stays down: the rows are counted as lost, not silently dropped.
        let (log, task, store, _dir) = flaky_with_task(200).await;
        store.down.store(true, Ordering::Relaxed);
        for i in 0..4 {
            log.record_detached(
                Some(decision(&format!("s{i}"))),
                outcome(&format!("s{i}"), "completed"),
            );
        }
        drop(log);
        assert_eq!(task.finish(Duration::from_millis(500)).await, 8);
    }

    #[tokio::test]
    async fn an_overdue_write_is_unhealthy_until_it_finishes() {
        let (log, store, _dir) = flaky(100).await;
        store.stall.store(400, Ordering::Relaxed);
        assert!(matches!(
            log.seal(decision("slow"), ()).await,
            Err(AuditError::Timeout)
        ));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!log.is_healthy(), "a write running past the timeout");
        store.stall.store(0, Ordering::Relaxed);
        let rows = wait_rows(&log, 1).await;
        assert_eq!(rows.len(), 1, "the slow write still lands, once");
        assert!(log.is_healthy());
    }

    #[tokio::test]
    async fn open_decisions_are_closed_on_restart() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let url = format!("sqlite://{}", dir.path().join("a.db").display());
        {
            let (log, task) = AuditLog::open(&url, Duration::from_secs(5), 16, sealing())
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            let d = DecisionRecord {
                request_id: "crashed".into(),
                action: "allow".into(),
                ..Default::default()
            };
            log.seal(d, ()).await.unwrap_or_else(|e| panic!("{e}"));
            drop(log);
            assert_eq!(task.finish(Duration::from_secs(5)).await, 0);
        }
        let (log, _task) = AuditLog::open(&url, Duration::from_secs(5), 16, sealing())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let rows = log.rows().await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1].outcome.as_deref(), Some("outcome_unknown"));
        assert!(verify(&rows).is_empty());
    }
}
