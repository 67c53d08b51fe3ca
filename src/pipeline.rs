//! The request pipeline: authenticate → validate the wire format → decide (extract, detect,
//! policy, redact: [`crate::decide`]) → seal the decision in the audit log → route → restore →
//! record the outcome.
//!
//! The edge's wire types stop here: the core gets a plain [`Request`]. Each stage consumes the
//! previous stage's output: routing to a cloud needs a [`Sealed`](crate::audit::Sealed) outbound
//! request holding a [`Cleared`](crate::decide::Cleared) body, which only `decide` makes and
//! which is sealed only once the decision is durable. A [`Trail`] follows every request and writes exactly one audit record for it,
//! whatever happens — including a client that goes away (its drop records `client_aborted`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, mpsc};

use crate::api::error::ApiError;
use crate::api::openai::{self, ChatRequest, Limits};
use crate::audit::{
    AuditLog, DecisionRecord, EntityRecord, OutcomeRecord, Sealed, SpanRecord, UnscannableRecord,
    ValueDigester,
};
use crate::auth::{AuthError, Principal};
use crate::config::ServerConfig;
use crate::decide::{self, DecideError, Decision, Request, Route};
use crate::redact::{RedactionMap, StreamRestorer};
use crate::route::cloud::{CloudError, Outbound};
#[cfg(feature = "local-model")]
use crate::route::local::{FinishReason, GenEvent, Generation};
use crate::route::local::{LocalModel, LocalStatus};
use crate::route::sse::SseEvent;
use crate::scan::ClassifierState;
use crate::snapshot::Snapshot;

/// Everything a request needs, shared by all requests.
#[derive(Debug)]
pub struct AppState {
    /// Compiled policies, keys and upstreams; swapped atomically on reload.
    pub snapshot: ArcSwap<Snapshot>,
    /// The audit log.
    pub audit: AuditLog,
    /// Runs decisions off the async runtime, bounded.
    pub decider: Decider,
    /// The local model.
    pub local: LocalModel,
    /// Limits.
    pub server: ServerConfig,
    /// The admin API's token (hashed).
    pub admin: crate::config::AdminConfig,
}

/// Facts about the HTTP request, gathered by the edge.
#[derive(Debug, Clone)]
pub struct RequestMeta {
    /// Request id (also sent as `x-veil-request-id`).
    pub request_id: String,
    /// Client socket address.
    pub client_addr: String,
    /// Canonical path.
    pub endpoint: String,
    /// When the request arrived.
    pub started: Instant,
    /// Raw `Authorization` header.
    pub authorization: Option<Vec<u8>>,
}

/// A chat request as the edge received it.
#[derive(Debug)]
pub struct ChatInput {
    /// HTTP facts.
    pub meta: RequestMeta,
    /// `Content-Type`.
    pub content_type: Option<String>,
    /// `Content-Encoding`.
    pub content_encoding: Option<String>,
    /// The snapshot the request is handled with (its key was checked against it).
    pub snap: Arc<Snapshot>,
    /// The caller, by that snapshot's keys.
    pub auth: Result<Principal, AuthError>,
    /// The body, or why it was not read (a refused key's body is not read).
    pub body: Result<Bytes, BodyUnread>,
}

/// Why a request's body was not read.
#[derive(Debug, Clone, Copy)]
pub enum BodyUnread {
    /// It exceeded the size limit (bytes).
    TooLarge(usize),
    /// It did not arrive within the time allowed (seconds).
    TooSlow(u64),
}

/// The answer, in plain types; the edge turns it into HTTP.
#[derive(Debug)]
pub struct Reply {
    /// Request id.
    pub request_id: String,
    /// Action taken, or `reject` before a decision.
    pub action: String,
    /// Route taken, if any.
    pub route: Option<String>,
    /// The body.
    pub body: ReplyBody,
}

/// The body of a reply.
#[derive(Debug)]
pub enum ReplyBody {
    /// One JSON document with status 200.
    Json(Value),
    /// Server-sent event payloads (`data:` values), ending with `[DONE]`.
    Stream(mpsc::Receiver<String>),
    /// An error.
    Error(ApiError),
}

/// Follows one request and writes its audit record exactly once.
pub struct Trail {
    audit: AuditLog,
    decision: DecisionRecord,
    sealed: bool,
    /// The decision went to the audit writer (which keeps and retries it if the write fails), so
    /// only the outcome follows, also when the request is dropped while the seal is pending.
    queued: bool,
    finished: bool,
    started: Instant,
    upstream_started: Option<Instant>,
}

impl std::fmt::Debug for Trail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trail")
            .field("request_id", &self.decision.request_id)
            .field("sealed", &self.sealed)
            .finish()
    }
}

impl Trail {
    /// Starts the trail of a request.
    pub fn new(audit: &AuditLog, meta: &RequestMeta) -> Self {
        Self {
            audit: audit.clone(),
            decision: DecisionRecord {
                request_id: meta.request_id.clone(),
                client_addr: meta.client_addr.clone(),
                endpoint: meta.endpoint.clone(),
                action: "reject".to_owned(),
                ..DecisionRecord::default()
            },
            sealed: false,
            queued: false,
            finished: false,
            started: meta.started,
            upstream_started: None,
        }
    }

    /// Makes the decision durable and returns the payload as proof.
    async fn seal<T>(&mut self, payload: T) -> Result<Sealed<T>, ApiError> {
        self.queued = true;
        match self.audit.seal(self.decision.clone(), payload).await {
            Ok(s) => {
                self.sealed = true;
                self.upstream_started = Some(Instant::now());
                Ok(s)
            }
            Err(e) => {
                tracing::error!(request_id = %self.decision.request_id, error = %e, "decision not recorded; failing closed");
                Err(ApiError::AuditUnavailable)
            }
        }
    }

    fn outcome(
        &self,
        status: u16,
        outcome: &str,
        error_code: Option<&str>,
        usage: Option<(u64, u64)>,
    ) -> OutcomeRecord {
        OutcomeRecord {
            request_id: self.decision.request_id.clone(),
            outcome: outcome.to_owned(),
            status,
            error_code: error_code.map(str::to_owned),
            upstream_ms: self
                .upstream_started
                .map(|t| t.elapsed().as_secs_f64() * 1e3),
            total_ms: self.started.elapsed().as_secs_f64() * 1e3,
            prompt_tokens: usage.map(|u| u.0),
            completion_tokens: usage.map(|u| u.1),
        }
    }

    /// Writes the outcome: queued behind a durable decision, or written with the decision (and
    /// waited for) when none was written yet — a request refused before routing must not be
    /// answered before its one record is on disk.
    async fn finish(
        mut self,
        status: u16,
        outcome: &str,
        error_code: Option<&str>,
        usage: Option<(u64, u64)>,
    ) {
        self.finished = true;
        let record = self.outcome(status, outcome, error_code, usage);
        metrics::counter!("veil_requests_total", "action" => self.decision.action.clone(), "outcome" => outcome.to_owned())
            .increment(1);
        let result = if self.sealed {
            // The decision is durable; the outcome joins the writer's next group commit without
            // holding the answer back (a crash before that commit leaves the decision, which
            // the next start closes as `outcome_unknown`). Waiting for it doubled the audit's
            // share of every request's latency (docs/benchmarks.md, issue 27).
            self.audit.record_detached(None, record);
            Ok(())
        } else if self.queued {
            // The log is failing and the answer is already `audit_unavailable`: queue the outcome
            // behind its decision without waiting a second time.
            self.audit.record_detached(None, record);
            Ok(())
        } else {
            self.audit.record(self.decision.clone(), record).await
        };
        if let Err(e) = result {
            tracing::error!(request_id = %self.decision.request_id, error = %e, "outcome not recorded yet; the audit writer retries it");
        }
    }
}

impl Drop for Trail {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        // The request future was dropped: the client went away before the answer was sent.
        let record = self.outcome(499, "client_aborted", None, None);
        let decision = (!self.sealed && !self.queued).then(|| self.decision.clone());
        self.audit.record_detached(decision, record);
    }
}

/// Handles `POST /v1/chat/completions`.
pub async fn chat(state: Arc<AppState>, input: ChatInput) -> Reply {
    let started = std::time::Instant::now();
    let snap = input.snap.clone();
    let mut trail = Trail::new(&state.audit, &input.meta);
    let request_id = input.meta.request_id.clone();
    let timeout = std::time::Duration::from_secs(state.server.request_timeout_secs);
    let result = match tokio::time::timeout(timeout, run(&state, &snap, input, &mut trail)).await {
        Ok(r) => r,
        Err(_) => Err(ApiError::Upstream(CloudError::Timeout)),
    };
    let action = trail.decision.action.clone();
    let route = trail.decision.route.clone();
    let body = match result {
        Ok(Success::Json { body, usage }) => {
            trail.finish(200, "completed", None, usage).await;
            ReplyBody::Json(body)
        }
        Ok(Success::Stream(rx)) => {
            // The streaming task owns the trail now (it finished this copy's duty).
            trail.finished = true;
            ReplyBody::Stream(rx)
        }
        Err(e) => {
            let m = e.mapped();
            if !trail.sealed {
                trail.decision.reason_code = Some(m.code.to_owned());
            }
            trail
                .finish(m.status.as_u16(), m.outcome, Some(m.code), None)
                .await;
            ReplyBody::Error(e)
        }
    };
    metrics::histogram!("veil_request_seconds").record(started.elapsed().as_secs_f64());
    Reply {
        request_id,
        action,
        route,
        body,
    }
}

enum Success {
    Json {
        body: Value,
        usage: Option<(u64, u64)>,
    },
    Stream(mpsc::Receiver<String>),
}

async fn run(
    state: &Arc<AppState>,
    snap: &Arc<Snapshot>,
    input: ChatInput,
    trail: &mut Trail,
) -> Result<Success, ApiError> {
    let principal = input.auth.inspect_err(|e| {
        if let AuthError::Revoked { key_id } = e {
            trail.decision.key_id = Some(key_id.to_string());
        }
    })?;
    trail.decision.key_id = Some(principal.key_id.to_string());
    trail.decision.tenant = Some(principal.tenant.to_string());

    check_media(
        input.content_type.as_deref(),
        input.content_encoding.as_deref(),
    )?;
    let bytes = input.body.map_err(|unread| match unread {
        BodyUnread::TooLarge(limit) => ApiError::PayloadTooLarge(limit),
        BodyUnread::TooSlow(secs) => ApiError::BodyTimeout(secs),
    })?;
    let (chat, value) = openai::parse_chat(
        &bytes,
        Limits::from(&state.server),
        state.server.max_json_depth,
    )?;
    trail.decision.stream = chat.is_stream();
    // The model must be one veil serves: a configured upstream's pattern or the local model.
    // Anything else is refused before detection, never forwarded, and not recorded (the audit
    // keeps only configured model names; the field is client text).
    if snap.cloud.select(&chat.model).is_none()
        && state.local.model_id().as_deref() != Some(chat.model.as_str())
    {
        return Err(ApiError::ModelNotFound);
    }

    let request = Arc::new(Request::new(chat.model.clone(), value));
    let decide_started = std::time::Instant::now();
    let decision = state
        .decider
        .decide(
            request.clone(),
            bytes.len(),
            principal.clone(),
            snap.clone(),
        )
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "no decision");
            ApiError::Internal
        })?;
    metrics::histogram!("veil_decide_seconds").record(decide_started.elapsed().as_secs_f64());
    // The model name is client text too: recorded only once scanned, masked if anything was
    // found in it.
    trail.decision.model = Some(
        if decision.flags(&[crate::extract::Step::Key("model".to_owned())]) {
            crate::redact::masked(&chat.model)
        } else {
            chat.model.clone()
        },
    );
    trail.decision.policy = Some(decision.policy.name.to_string());
    trail.decision.policy_digest = Some(decision.policy.digest.clone());
    trail.decision.detectors = decision.detectors.clone();
    record_scan(&mut trail.decision, &decision, &snap.digester);
    tracing::info!(
        request_id = %trail.decision.request_id,
        tenant = %principal.tenant,
        action = decision.action().as_str(),
        findings = decision.scanned.findings.len(),
        "decided"
    );

    let primer = state.decider.primer(&request, &principal, snap);
    match decision.route {
        Route::Block { rule, reason } => Err(ApiError::Blocked {
            rule: rule.to_string(),
            reason,
        }),
        Route::Local => {
            trail.decision.route = Some("local".to_owned());
            answer_locally(state, &chat, trail, primer).await
        }
        Route::NoUpstream => Err(ApiError::ModelNotFound),
        Route::Cloud {
            upstream,
            body,
            restore,
        } => {
            trail.decision.route = Some(upstream.name.to_string());
            let client_wants_usage = chat
                .stream_options
                .as_ref()
                .and_then(|o| o.include_usage)
                .unwrap_or(false);
            let sealed = trail.seal(Outbound { upstream, body }).await?;
            if chat.is_stream() {
                let events = snap.cloud.stream(&sealed).await?;
                let handoff = trail.hand_off();
                Ok(Success::Stream(spawn_stream(
                    events,
                    sealed,
                    restore,
                    handoff,
                    client_wants_usage,
                    primer,
                )))
            } else {
                let upstream_started = std::time::Instant::now();
                let mut answer = snap.cloud.complete(&sealed).await?;
                metrics::histogram!("veil_upstream_seconds")
                    .record(upstream_started.elapsed().as_secs_f64());
                if let Some(map) = &restore {
                    map.restore_value(&mut answer);
                }
                if let Some(primer) = primer {
                    primer.prime_completion(&answer);
                }
                let usage = usage_of(&answer);
                Ok(Success::Json {
                    body: answer,
                    usage,
                })
            }
        }
    }
}

/// Largest body decided on the request's own task when its policy runs no classifier.
const INLINE_DECISION_BYTES: usize = 16 * 1024;

/// Runs [`decide`](crate::decide::decide) off the async runtime, with a bound on concurrency
/// and on time (small bodies under a policy without the classifier: on the request's task). A
/// timeout or a panic never lets a request through undecided: the policy's `on_detector_error`
/// applies.
#[derive(Debug, Clone)]
pub struct Decider {
    permits: Arc<Semaphore>,
    timeout: Duration,
    /// One conversation's next turn is prepared at a time, and only while the classifier is
    /// idle ([`Primer`]).
    priming: Arc<Semaphore>,
}

impl Decider {
    /// A decider allowing `concurrency` decisions at once, each limited to `timeout`.
    pub fn new(concurrency: usize, timeout: Duration) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            timeout,
            priming: Arc::new(Semaphore::new(1)),
        }
    }

    /// What it takes to prepare the next turn of `request`'s conversation once it is answered;
    /// `None` when the caller's policy has no segment cache or no classifier (nothing to gain).
    fn primer(
        &self,
        request: &Arc<Request>,
        principal: &Principal,
        snap: &Arc<Snapshot>,
    ) -> Option<Primer> {
        let set = snap.policies.get(&principal.policy)?;
        let ClassifierState::Loaded(classifier) = &set.detectors.classifier else {
            return None;
        };
        set.detectors.cache.as_ref()?;
        Some(Primer {
            gate: self.priming.clone(),
            classifier: classifier.clone(),
            request: request.clone(),
            principal: principal.clone(),
            snap: snap.clone(),
        })
    }

    async fn decide(
        &self,
        request: Arc<Request>,
        body_bytes: usize,
        principal: Principal,
        snap: Arc<Snapshot>,
    ) -> Result<Decision, DecideError> {
        let started = Instant::now();
        // A small body under a policy without the classifier is decided where it is: its scan
        // costs tens of microseconds, less than the hand-off to the blocking pool and back
        // (~0.1 ms at 2,000 rps; docs/benchmarks.md). A panic is still contained.
        let patterns_only = snap
            .policies
            .get(&principal.policy)
            .is_some_and(|set| !set.detectors.classifier_loaded() && !set.detectors.unavailable());
        if patterns_only && body_bytes <= INLINE_DECISION_BYTES {
            return match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                decide::decide(&request, &principal, &snap)
            })) {
                Ok(decision) => decision,
                Err(_) => {
                    tracing::error!("detector failed (panic); applying on_detector_error");
                    decide::decide_undetected(&request, &principal, &snap, started)
                }
            };
        }
        let job = async {
            let _permit = self.permits.acquire().await.ok()?;
            let (r, p, s) = (request.clone(), principal.clone(), snap.clone());
            tokio::task::spawn_blocking(move || decide::decide(&r, &p, &s))
                .await
                .ok()
        };
        match tokio::time::timeout(self.timeout, job).await {
            Ok(Some(decision)) => decision,
            Ok(None) => {
                tracing::error!("detector failed (panic); applying on_detector_error");
                decide::decide_undetected(&request, &principal, &snap, started)
            }
            Err(_) => {
                tracing::warn!(
                    timeout_ms = self.timeout.as_millis() as u64,
                    "detection timed out; applying on_detector_error"
                );
                decide::decide_undetected(&request, &principal, &snap, started)
            }
        }
    }
}

/// Prepares a conversation's next turn in the background ([`decide::prime`]): the answer the
/// client has just received comes back as history next turn, and read now — while no classifier
/// session runs — it costs that turn nothing. Skipped, never queued, when the classifier is
/// busy or another priming runs: requests come first.
struct Primer {
    gate: Arc<Semaphore>,
    classifier: Arc<crate::detect::classifier::Classifier>,
    request: Arc<Request>,
    principal: Principal,
    snap: Arc<Snapshot>,
}

/// Largest answer read ahead (its JSON): a longer one would hold a classifier session for long
/// enough to delay requests; it is read next turn, as without read-ahead.
const PRIME_MAX_BYTES: usize = 8 * 1024;

impl Primer {
    fn prime(self, answer: Value) {
        // The cheap checks first: the answer is measured only when it would be read.
        let permit = match self.gate.clone().try_acquire_owned() {
            Ok(permit) if self.classifier.idle() && answer.to_string().len() <= PRIME_MAX_BYTES => {
                permit
            }
            _ => {
                metrics::counter!("veil_detect_cache_prime_skipped_total").increment(1);
                return;
            }
        };
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            match decide::prime(&self.request, answer, &self.principal, &self.snap) {
                Ok(n) => metrics::counter!("veil_detect_cache_primed_total").increment(n as u64),
                Err(e) => tracing::warn!(error = %e, "could not prepare the next turn"),
            }
        });
    }

    /// Primes with the assistant message of `body`'s first choice (a chat completion).
    fn prime_completion(self, body: &Value) {
        if let Some(message) = body.pointer("/choices/0/message") {
            self.prime(message.clone());
        }
    }
}

/// A streamed answer's first choice, put together as the client will send it back: its text
/// and its tool calls, in the order and shape of a non-streamed answer.
#[derive(Default)]
struct Transcript {
    content: String,
    calls: BTreeMap<u64, StreamedCall>,
    /// A refusal or a legacy function call streamed, or more than [`PRIME_MAX_BYTES`]: the
    /// message is not rebuilt (no priming) and nothing more is kept.
    other: bool,
}

#[derive(Default)]
struct StreamedCall {
    id: String,
    kind: String,
    name: String,
    arguments: String,
}

impl Transcript {
    fn chunk(&mut self, chunk: &Value) {
        if self.other {
            return;
        }
        for choice in chunk
            .get("choices")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if choice.get("index").and_then(Value::as_u64).unwrap_or(0) != 0 {
                continue;
            }
            let Some(delta) = choice.get("delta") else {
                continue;
            };
            if let Some(Value::String(c)) = delta.get("content") {
                self.content.push_str(c);
            }
            for call in delta
                .get("tool_calls")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let index = call.get("index").and_then(Value::as_u64).unwrap_or(0);
                let entry = self.calls.entry(index).or_default();
                fn text(v: Option<&Value>) -> &str {
                    v.and_then(Value::as_str).unwrap_or_default()
                }
                entry.id.push_str(text(call.get("id")));
                entry.kind.push_str(text(call.get("type")));
                let function = call.get("function");
                entry
                    .name
                    .push_str(text(function.and_then(|f| f.get("name"))));
                entry
                    .arguments
                    .push_str(text(function.and_then(|f| f.get("arguments"))));
            }
            if ["refusal", "function_call"]
                .iter()
                .any(|k| delta.get(*k).is_some_and(|v| !v.is_null()))
            {
                self.other = true;
            }
        }
        let kept = self.content.len()
            + self
                .calls
                .values()
                .map(|c| c.id.len() + c.kind.len() + c.name.len() + c.arguments.len())
                .sum::<usize>();
        if self.other || kept > PRIME_MAX_BYTES {
            *self = Self {
                other: true,
                ..Self::default()
            };
        }
    }

    fn message(self) -> Option<Value> {
        if self.other || (self.content.is_empty() && self.calls.is_empty()) {
            return None;
        }
        let mut message = json!({
            "role": "assistant",
            "content": if self.content.is_empty() { Value::Null } else { Value::String(self.content) },
        });
        if !self.calls.is_empty() {
            let calls: Vec<Value> = self
                .calls
                .into_values()
                .map(|c| {
                    json!({"id": c.id, "type": c.kind,
                           "function": {"name": c.name, "arguments": c.arguments}})
                })
                .collect();
            if let Some(m) = message.as_object_mut() {
                m.insert("tool_calls".to_owned(), Value::Array(calls));
            }
        }
        Some(message)
    }
}

impl Trail {
    /// Moves the duty to finish into a new trail (for a task that outlives the handler).
    fn hand_off(&mut self) -> Trail {
        self.finished = true;
        Trail {
            audit: self.audit.clone(),
            decision: self.decision.clone(),
            sealed: self.sealed,
            queued: self.queued,
            finished: false,
            started: self.started,
            upstream_started: self.upstream_started,
        }
    }
}

fn check_media(content_type: Option<&str>, encoding: Option<&str>) -> Result<(), ApiError> {
    let json = content_type
        .and_then(|c| c.split(';').next())
        .is_some_and(|c| c.trim().eq_ignore_ascii_case("application/json"));
    if !json {
        return Err(ApiError::UnsupportedMediaType(
            "send the body as Content-Type: application/json",
        ));
    }
    if encoding.is_some_and(|e| !e.trim().eq_ignore_ascii_case("identity")) {
        return Err(ApiError::UnsupportedMediaType(
            "compressed request bodies are not accepted; send the body uncompressed",
        ));
    }
    Ok(())
}

/// Fills the audit decision from the scan and the policy's verdict (types, offsets, HMACs).
fn record_scan(record: &mut DecisionRecord, decision: &Decision, digester: &ValueDigester) {
    let scanned = &decision.scanned;
    record.action = decision.action().as_str().to_owned();
    record.rules = decision.verdict.hits.clone();
    record.scan_ms = scanned.elapsed.as_secs_f64() * 1e3;
    let mut by_type: std::collections::BTreeMap<String, EntityRecord> = Default::default();
    for (f, pieces) in scanned.findings.iter().zip(&scanned.pieces) {
        let entry = by_type
            .entry(f.entity.as_str().to_owned())
            .or_insert_with(|| EntityRecord {
                entity: f.entity.as_str().to_owned(),
                count: 0,
                spans: Vec::new(),
            });
        entry.count += 1;
        for p in pieces {
            let Some(seg) = scanned.extracted.segments.get(p.segment) else {
                continue;
            };
            let text = &seg.text;
            let value = text.get(p.start..p.end).unwrap_or_default();
            let chars = |b: usize| text.get(..b).map_or(0, |s| s.chars().count());
            let d = digester.digest(f.entity.as_str(), value);
            entry.spans.push(SpanRecord {
                field: seg.location.field(),
                start: chars(p.start),
                end: chars(p.end),
                score: f.score,
                recognizer: f.recognizer.to_owned(),
                hmac: d.get(..16).unwrap_or(&d).to_owned(),
            });
        }
    }
    record.entities = by_type.into_values().collect();
    record.unscannable = scanned
        .extracted
        .unscannable
        .iter()
        .map(|u| UnscannableRecord {
            field: u.path.clone(),
            kind: u.kind.to_owned(),
        })
        .collect();
    if scanned.classifier_unavailable {
        record.unscannable.push(UnscannableRecord {
            field: "*".to_owned(),
            kind: "classifier_unavailable".to_owned(),
        });
    }
}

fn usage_of(v: &Value) -> Option<(u64, u64)> {
    let u = v.get("usage")?;
    Some((
        u.get("prompt_tokens")?.as_u64()?,
        u.get("completion_tokens")?.as_u64()?,
    ))
}

/// Restores tokens in streamed chunks: one restorer per choice content and per tool call.
struct ChunkRestorer<'a> {
    map: &'a RedactionMap,
    channels: HashMap<(u64, Option<u64>), StreamRestorer<'a>>,
}

impl<'a> ChunkRestorer<'a> {
    fn new(map: &'a RedactionMap) -> Self {
        Self {
            map,
            channels: HashMap::new(),
        }
    }

    fn chunk(&mut self, chunk: &mut Value) {
        let Some(choices) = chunk.get_mut("choices").and_then(Value::as_array_mut) else {
            return;
        };
        for choice in choices {
            let idx = choice.get("index").and_then(Value::as_u64).unwrap_or(0);
            let finishing = choice.get("finish_reason").is_some_and(|f| !f.is_null());
            let Some(delta) = choice.get_mut("delta").and_then(Value::as_object_mut) else {
                continue;
            };
            let content = self.channel((idx, None), false);
            if let Some(Value::String(c)) = delta.get_mut("content") {
                *c = content.push(c);
            }
            if finishing {
                let rest = content.finish();
                if !rest.is_empty() {
                    match delta.get_mut("content") {
                        Some(Value::String(c)) => c.push_str(&rest),
                        _ => {
                            delta.insert("content".to_owned(), Value::String(rest));
                        }
                    }
                }
            }
            if let Some(Value::String(r)) = delta.get_mut("refusal") {
                *r = self.map.restore(r, false);
            }
            let mut flushed = Vec::new();
            if let Some(calls) = delta.get_mut("tool_calls").and_then(Value::as_array_mut) {
                for call in calls {
                    let t = call.get("index").and_then(Value::as_u64).unwrap_or(0);
                    if let Some(Value::String(a)) = call
                        .get_mut("function")
                        .and_then(|f| f.get_mut("arguments"))
                    {
                        let r = self.channel((idx, Some(t)), true);
                        *a = r.push(a);
                    }
                }
            }
            if finishing {
                for ((c, t), r) in self.channels.iter_mut() {
                    if let (true, Some(t)) = (*c == idx, t) {
                        let rest = r.finish();
                        if !rest.is_empty() {
                            flushed.push(json!({"index": t, "function": {"arguments": rest}}));
                        }
                    }
                }
            }
            if !flushed.is_empty() {
                match delta.get_mut("tool_calls").and_then(Value::as_array_mut) {
                    Some(calls) => calls.extend(flushed),
                    None => {
                        delta.insert("tool_calls".to_owned(), Value::Array(flushed));
                    }
                }
            }
        }
    }

    fn channel(&mut self, key: (u64, Option<u64>), json_escape: bool) -> &mut StreamRestorer<'a> {
        let map = self.map;
        self.channels
            .entry(key)
            .or_insert_with(|| map.stream(json_escape))
    }

    /// Text still held at the end of a stream without finish reasons, as one extra chunk.
    fn leftovers(&mut self, template: &Value) -> Option<Value> {
        let mut choices = Vec::new();
        for ((c, t), r) in self.channels.iter_mut() {
            let rest = r.finish();
            if rest.is_empty() {
                continue;
            }
            let delta = match t {
                None => json!({"content": rest}),
                Some(t) => json!({"tool_calls": [{"index": t, "function": {"arguments": rest}}]}),
            };
            choices.push(json!({"index": c, "delta": delta, "finish_reason": null}));
        }
        if choices.is_empty() {
            return None;
        }
        let mut chunk = template.clone();
        if let Some(o) = chunk.as_object_mut() {
            o.insert("choices".to_owned(), Value::Array(choices));
            o.remove("usage");
        }
        Some(chunk)
    }
}

fn error_event(code: &str, message: &str) -> String {
    json!({"error": {"message": message, "type": "server_error", "param": null, "code": code}})
        .to_string()
}

/// Pumps upstream events to the client, restoring tokens, until the end, an error, an idle
/// timeout or the client going away; then records the outcome.
fn spawn_stream(
    events: impl futures::Stream<Item = Result<SseEvent, CloudError>> + Send + 'static,
    sealed: Sealed<Outbound>,
    restore: Option<RedactionMap>,
    trail: Trail,
    client_wants_usage: bool,
    primer: Option<Primer>,
) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel::<String>(32);
    let idle = sealed.get().upstream.idle_timeout;
    tokio::spawn(async move {
        let _sealed = sealed;
        let empty = RedactionMap::default();
        let map = restore.as_ref().unwrap_or(&empty);
        let mut restorer = ChunkRestorer::new(map);
        let mut transcript = primer.as_ref().map(|_| Transcript::default());
        let mut usage = None;
        let mut last = Value::Null;
        let mut events = std::pin::pin!(events);
        let (status, outcome, code): (u16, &str, Option<&str>) = loop {
            let next = tokio::select! {
                _ = tx.closed() => break (499, "client_aborted", None),
                n = tokio::time::timeout(idle, events.next()) => n,
            };
            let event = match next {
                Err(_) => {
                    let _ = tx
                        .send(error_event(
                            "upstream_timeout",
                            "the upstream stream went silent; ending it",
                        ))
                        .await;
                    break (200, "upstream_error", Some("upstream_timeout"));
                }
                Ok(None) => {
                    let _ = tx
                        .send(error_event(
                            "upstream_error",
                            "the upstream stream ended early",
                        ))
                        .await;
                    break (200, "upstream_error", Some("upstream_truncated"));
                }
                Ok(Some(Err(_))) => {
                    let _ = tx
                        .send(error_event("upstream_error", "the upstream stream broke"))
                        .await;
                    break (200, "upstream_error", Some("upstream_bad_response"));
                }
                Ok(Some(Ok(event))) => event,
            };
            if event.data.trim() == "[DONE]" {
                if let Some(extra) = restorer.leftovers(&last) {
                    if let Some(t) = &mut transcript {
                        t.chunk(&extra);
                    }
                    let _ = tx.send(extra.to_string()).await;
                }
                let _ = tx.send("[DONE]".to_owned()).await;
                if let (Some(primer), Some(message)) =
                    (primer, transcript.take().and_then(Transcript::message))
                {
                    primer.prime(message);
                }
                break (200, "completed", None);
            }
            let Ok(mut chunk) = serde_json::from_str::<Value>(&event.data) else {
                let _ = tx
                    .send(error_event(
                        "upstream_bad_response",
                        "the upstream sent a malformed event",
                    ))
                    .await;
                break (200, "upstream_error", Some("upstream_bad_response"));
            };
            if chunk.get("error").is_some_and(|e| !e.is_null()) {
                let _ = tx.send(chunk.to_string()).await;
                break (200, "upstream_error", Some("upstream_error"));
            }
            if let Some(u) = usage_of(&chunk) {
                usage = Some(u);
            }
            let usage_only = chunk
                .get("choices")
                .and_then(Value::as_array)
                .is_some_and(Vec::is_empty)
                && chunk.get("usage").is_some_and(|u| !u.is_null());
            if !client_wants_usage {
                if usage_only {
                    continue;
                }
                if let Some(o) = chunk.as_object_mut() {
                    o.remove("usage");
                }
            }
            restorer.chunk(&mut chunk);
            if let Some(t) = &mut transcript {
                t.chunk(&chunk);
            }
            last = chunk.clone();
            if tx.send(chunk.to_string()).await.is_err() {
                break (499, "client_aborted", None);
            }
        };
        trail.finish(status, outcome, code, usage).await;
    });
    rx
}

/// Handles `GET /v1/models`: the explicitly configured cloud models and the local model.
pub async fn models(state: Arc<AppState>, meta: RequestMeta) -> Reply {
    let snap = state.snapshot.load_full();
    let mut trail = Trail::new(&state.audit, &meta);
    let request_id = meta.request_id.clone();
    let principal = match snap.keys.authenticate(meta.authorization.as_deref()) {
        Ok(p) => p,
        Err(e) => {
            if let AuthError::Revoked { key_id } = &e {
                trail.decision.key_id = Some(key_id.to_string());
            }
            return reject_with(trail, request_id, ApiError::Unauthorized(e)).await;
        }
    };
    trail.decision.key_id = Some(principal.key_id.to_string());
    trail.decision.tenant = Some(principal.tenant.to_string());
    trail.decision.action = "allow".to_owned();
    let mut data: Vec<Value> = snap
        .cloud
        .models()
        .into_iter()
        .map(|(id, owner)| json!({"id": id, "object": "model", "created": 0, "owned_by": owner.to_string()}))
        .collect();
    if let Some(id) = state.local.model_id() {
        data.push(json!({"id": id, "object": "model", "created": 0, "owned_by": "veil-local"}));
    }
    trail.finish(200, "completed", None, None).await;
    Reply {
        request_id,
        action: "allow".to_owned(),
        route: None,
        body: ReplyBody::Json(json!({"object": "list", "data": data})),
    }
}

/// What an admin request reads.
#[derive(Debug, Clone)]
pub enum AdminRead {
    /// Requests matching a query.
    Requests(crate::audit::Query),
    /// Counts over them.
    Stats(crate::audit::Query),
    /// The chain, or the rows `from..=to`.
    Verify {
        /// First sequence number.
        from: Option<i64>,
        /// Last sequence number.
        to: Option<i64>,
    },
}

/// Handles `GET /admin/audit*`: only with the admin token (an API key gets 403), and every read,
/// allowed or refused, is itself an audit record.
pub async fn admin(state: Arc<AppState>, meta: RequestMeta, read: AdminRead) -> Reply {
    let mut trail = Trail::new(&state.audit, &meta);
    let request_id = meta.request_id.clone();
    let Some(want) = state.admin.token_sha256.as_deref() else {
        return reject_with(trail, request_id, ApiError::AdminDisabled).await;
    };
    let presented = meta
        .authorization
        .as_deref()
        .and_then(|h| std::str::from_utf8(h).ok())
        .and_then(|h| h.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| crate::auth::hash_key(token.trim()));
    if !presented.is_some_and(|h| h.eq_ignore_ascii_case(want)) {
        // Name the API key if it was one: an application trying to read the log is worth seeing.
        let snap = state.snapshot.load();
        if let Ok(p) = snap.keys.authenticate(meta.authorization.as_deref()) {
            trail.decision.key_id = Some(p.key_id.to_string());
            trail.decision.tenant = Some(p.tenant.to_string());
        }
        return reject_with(trail, request_id, ApiError::AdminForbidden).await;
    }
    trail.decision.key_id = Some("admin".to_owned());
    trail.decision.action = "allow".to_owned();
    let result = match &read {
        AdminRead::Requests(q) => state
            .audit
            .query(q)
            .await
            .map(|rows| json!({"object": "list", "data": rows})),
        AdminRead::Stats(q) => state
            .audit
            .stats(q)
            .await
            .map(|s| serde_json::to_value(s).unwrap_or_default()),
        AdminRead::Verify { from, to } => state.audit.verify(*from, *to).await.map(|v| v.report()),
    };
    match result {
        Ok(body) => {
            trail.finish(200, "completed", None, None).await;
            Reply {
                request_id,
                action: "allow".to_owned(),
                route: None,
                body: ReplyBody::Json(body),
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "admin read failed");
            reject_with(trail, request_id, ApiError::AuditRead).await
        }
    }
}

/// Answers a request with an error before any decision (unknown path, wrong method), audited.
pub async fn reject(state: Arc<AppState>, meta: RequestMeta, error: ApiError) -> Reply {
    let trail = Trail::new(&state.audit, &meta);
    reject_with(trail, meta.request_id, error).await
}

async fn reject_with(mut trail: Trail, request_id: String, error: ApiError) -> Reply {
    let m = error.mapped();
    trail.decision.reason_code = Some(m.code.to_owned());
    trail
        .finish(m.status.as_u16(), m.outcome, Some(m.code), None)
        .await;
    Reply {
        request_id,
        action: "reject".to_owned(),
        route: None,
        body: ReplyBody::Error(error),
    }
}

/// What `/readyz` reports.
#[derive(Debug)]
pub struct Readiness {
    /// Whether veil can serve every route its policies may choose.
    pub ready: bool,
    /// Per-component detail.
    pub body: Value,
}

/// Checks the audit database and the local model.
pub async fn readiness(state: &AppState) -> Readiness {
    let audit_ok = state.audit.ping().await.is_ok() && state.audit.is_healthy();
    let (local_ok, local) = match state.local.status() {
        LocalStatus::Ready => (
            true,
            json!({"status": "ready", "model": state.local.model_id()}),
        ),
        LocalStatus::Loading => (false, json!({"status": "loading"})),
        LocalStatus::Disabled { reason } => {
            (false, json!({"status": "disabled", "reason": reason}))
        }
        LocalStatus::Failed { reason } => (false, json!({"status": "failed", "reason": reason})),
    };
    let snap = state.snapshot.load();
    let mut policies: Vec<Value> = snap
        .policies
        .values()
        .map(|p| json!({"name": p.policy.name.to_string(), "digest": p.policy.digest}))
        .collect();
    policies.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    // Every policy shares the process's one classifier. Unavailable does not make veil unready:
    // requests are then unscannable and the policies' `on_unscannable` applies.
    let classifier = snap
        .policies
        .values()
        .next()
        .map_or(json!({"status": "disabled"}), |p| {
            match &p.detectors.classifier {
                ClassifierState::Disabled => json!({"status": "disabled"}),
                ClassifierState::Loaded(c) => json!({"status": "ready", "model": c.version()}),
                ClassifierState::Unavailable(reason) => {
                    json!({"status": "unavailable", "reason": reason})
                }
            }
        });
    let ready = audit_ok && (local_ok || !state.local.is_configured());
    Readiness {
        ready,
        body: json!({
            "ready": ready,
            "audit": if audit_ok { "ok" } else { "unavailable" },
            "local_model": local,
            "classifier": classifier,
            "policies": policies,
        }),
    }
}

/// Answers with the in-process model. The decision is recorded first, like every route.
#[cfg(feature = "local-model")]
async fn answer_locally(
    state: &Arc<AppState>,
    request: &ChatRequest,
    trail: &mut Trail,
    primer: Option<Primer>,
) -> Result<Success, ApiError> {
    let engine = state.local.engine()?;
    if request.n.unwrap_or(1) != 1 {
        return Err(ApiError::InvalidRequest(
            crate::api::openai::InvalidRequest {
                message: "the local model returns one choice; set n to 1".to_owned(),
                param: Some("n".to_owned()),
            },
        ));
    }
    let sealed = trail.seal(request.local_request()).await?;
    let mut generation = engine.generate(sealed.into_inner()).await?;
    let answer = LocalAnswer {
        id: format!("chatcmpl-{}", trail.decision.request_id),
        model: engine.model_id().to_owned(),
        created: time::OffsetDateTime::now_utc().unix_timestamp(),
    };
    if request.is_stream() {
        let include_usage = request
            .stream_options
            .as_ref()
            .and_then(|o| o.include_usage)
            .unwrap_or(false);
        let handoff = trail.hand_off();
        return Ok(Success::Stream(spawn_local_stream(
            generation,
            answer,
            handoff,
            include_usage,
            primer,
        )));
    }
    let mut text = String::new();
    let (usage, finish) = loop {
        match generation.recv().await {
            Some(GenEvent::Delta(d)) => text.push_str(&d),
            Some(GenEvent::Done(u, f)) => break (u, f),
            Some(GenEvent::Failed(e)) => return Err(e.into()),
            None => {
                return Err(ApiError::LocalGeneration(
                    "the generation ended without a result".to_owned(),
                ));
            }
        }
    };
    let body = json!({
        "id": answer.id,
        "object": "chat.completion",
        "created": answer.created,
        "model": answer.model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "finish_reason": finish_reason(finish),
        }],
        "usage": {
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.prompt_tokens + usage.completion_tokens,
        },
    });
    if let Some(primer) = primer {
        primer.prime_completion(&body);
    }
    Ok(Success::Json {
        body,
        usage: Some((
            u64::from(usage.prompt_tokens),
            u64::from(usage.completion_tokens),
        )),
    })
}

#[cfg(not(feature = "local-model"))]
async fn answer_locally(
    state: &Arc<AppState>,
    _request: &ChatRequest,
    _trail: &mut Trail,
    _primer: Option<Primer>,
) -> Result<Success, ApiError> {
    Err(ApiError::LocalUnavailable(match state.local.status() {
        LocalStatus::Disabled { reason } | LocalStatus::Failed { reason } => reason,
        LocalStatus::Loading | LocalStatus::Ready => "no local model engine".to_owned(),
    }))
}

#[cfg(feature = "local-model")]
struct LocalAnswer {
    id: String,
    model: String,
    created: i64,
}

#[cfg(feature = "local-model")]
fn finish_reason(f: FinishReason) -> &'static str {
    match f {
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
    }
}

/// Streams a local generation as OpenAI chunks. The client going away drops the generation,
/// which frees its slot within one decode step.
#[cfg(feature = "local-model")]
fn spawn_local_stream(
    mut generation: Generation,
    answer: LocalAnswer,
    trail: Trail,
    include_usage: bool,
    primer: Option<Primer>,
) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel::<String>(32);
    tokio::spawn(async move {
        let chunk = |delta: Value, finish: Value| {
            json!({
                "id": answer.id, "object": "chat.completion.chunk", "created": answer.created,
                "model": answer.model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            })
            .to_string()
        };
        let opened = tx
            .send(chunk(
                json!({"role": "assistant", "content": ""}),
                Value::Null,
            ))
            .await
            .is_ok();
        let aborted = (499, "client_aborted", None, None);
        let (mut primer, mut text) = (primer, String::new());
        let (status, outcome, code, usage): (u16, &str, Option<&str>, Option<(u64, u64)>) =
            if !opened {
                aborted
            } else {
                loop {
                    let event = tokio::select! {
                        _ = tx.closed() => break aborted,
                        e = generation.recv() => e,
                    };
                    match event {
                        Some(GenEvent::Delta(d)) => {
                            // Past the read-ahead bound, nothing more is kept.
                            if primer.is_some() && text.len() <= PRIME_MAX_BYTES {
                                text.push_str(&d);
                            }
                            if tx
                                .send(chunk(json!({"content": d}), Value::Null))
                                .await
                                .is_err()
                            {
                                break aborted;
                            }
                        }
                        Some(GenEvent::Done(u, f)) => {
                            let _ = tx.send(chunk(json!({}), json!(finish_reason(f)))).await;
                            if include_usage {
                                let usage = json!({
                                    "id": answer.id, "object": "chat.completion.chunk",
                                    "created": answer.created, "model": answer.model, "choices": [],
                                    "usage": {"prompt_tokens": u.prompt_tokens,
                                              "completion_tokens": u.completion_tokens,
                                              "total_tokens": u.prompt_tokens + u.completion_tokens},
                                });
                                let _ = tx.send(usage.to_string()).await;
                            }
                            let _ = tx.send("[DONE]".to_owned()).await;
                            if let Some(primer) = primer.take()
                                && !text.is_empty()
                            {
                                let text = std::mem::take(&mut text);
                                primer.prime(json!({"role": "assistant", "content": text}));
                            }
                            let tokens =
                                (u64::from(u.prompt_tokens), u64::from(u.completion_tokens));
                            break (200, "completed", None, Some(tokens));
                        }
                        Some(GenEvent::Failed(_)) | None => {
                            let _ = tx
                                .send(error_event(
                                    "local_generation_failed",
                                    "the local model failed while generating",
                                ))
                                .await;
                            break (200, "local_error", Some("local_generation_failed"), None);
                        }
                    }
                }
            };
        drop(generation);
        trail.finish(status, outcome, code, usage).await;
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delta(delta: Value) -> Value {
        json!({"choices": [{"index": 0, "delta": delta, "finish_reason": null}]})
    }

    #[test]
    fn a_streamed_answer_is_put_together_as_a_non_streamed_one() {
        let mut t = Transcript::default();
        for d in [
            json!({"role": "assistant", "content": ""}),
            json!({"content": "Checking "}),
            json!({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                "function": {"name": "lookup", "arguments": ""}}]}),
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"q\": "}}]}),
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "\"x\"}"}}]}),
            json!({"content": "now."}),
        ] {
            t.chunk(&delta(d));
        }
        // Another choice is not this answer.
        t.chunk(&json!({"choices": [{"index": 1, "delta": {"content": "other"}}]}));
        assert_eq!(
            t.message().map(|m| m.to_string()),
            Some(
                json!({"role": "assistant", "content": "Checking now.", "tool_calls": [
                    {"id": "call_1", "type": "function",
                     "function": {"name": "lookup", "arguments": "{\"q\": \"x\"}"}}]})
                .to_string()
            )
        );
        let mut refused = Transcript::default();
        refused.chunk(&delta(json!({"refusal": "I cannot help with that."})));
        assert_eq!(refused.message(), None);
        let mut long = Transcript::default();
        for _ in 0..=PRIME_MAX_BYTES / 100 {
            long.chunk(&delta(json!({"content": "x".repeat(100)})));
        }
        assert!(
            long.other && long.content.is_empty(),
            "nothing more is kept"
        );
        long.chunk(&delta(json!({"content": "more"})));
        assert_eq!(long.message(), None);
        assert_eq!(Transcript::default().message(), None);
    }
}
