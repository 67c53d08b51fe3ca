//! The decision core: a chat request and its caller, under one [`Snapshot`], become one
//! [`Decision`] — every text-bearing field extracted, detected, every rule of the caller's policy
//! evaluated, the route chosen and the body that may leave built (redacted when the policy says
//! so).
//!
//! No HTTP types and no I/O: the server and every `veil policy` command call [`decide`], so a
//! test, an explanation or a diff shows exactly what the server does. Only this module makes a
//! [`Cleared`] body, and the cloud route sends nothing else: a request that was not decided here
//! cannot leave.

use std::sync::Arc;
use std::time::Instant;

use serde_json::{Value, json};

use crate::auth::Principal;
use crate::extract::{self, Extracted, Step};
use crate::policy::{Action, Facts, Policy, Verdict};
use crate::redact::{self, RedactionMap};
use crate::route::cloud::Upstream;
use crate::scan::{self, Detectors, Scanned};
use crate::snapshot::Snapshot;

/// A chat request as the core sees it: the validated JSON body and the requested model.
#[derive(Debug, Clone)]
pub struct Request {
    /// The requested model (already checked to be a short identifier by the edge).
    pub model: String,
    /// The whole validated body; every text-bearing field in it is scanned.
    pub body: Value,
}

impl Request {
    /// A request whose body the edge has validated.
    pub fn new(model: impl Into<String>, body: Value) -> Self {
        Self {
            model: model.into(),
            body,
        }
    }

    /// A one-message user request, as `veil policy explain --text` and the test files write it.
    pub fn from_text(model: &str, text: &str) -> Self {
        Self::new(
            model,
            json!({"model": model, "messages": [{"role": "user", "content": text}]}),
        )
    }

    /// For a stream whose client did not ask for usage, asks the upstream for it in `body` (the
    /// body that leaves), so the audit log has token counts; the edge does not pass the
    /// usage-only chunk to that client.
    pub fn ask_usage(&self, body: &mut Value) {
        let streams = self.body.get("stream").and_then(Value::as_bool) == Some(true);
        let wants = self
            .body
            .get("stream_options")
            .and_then(|o| o.get("include_usage"))
            .and_then(Value::as_bool)
            == Some(true);
        if !streams || wants {
            return;
        }
        if let Some(obj) = body.as_object_mut() {
            let opts = obj.entry("stream_options").or_insert_with(|| json!({}));
            if let Some(o) = opts.as_object_mut() {
                o.insert("include_usage".to_owned(), Value::Bool(true));
            }
        }
    }
}

/// A body the policy cleared to leave: scanned, decided `allow` or `redact`, and redacted. Only
/// [`decide`] makes one; the cloud route takes nothing else.
#[derive(Debug)]
pub struct Cleared(Value);

impl Cleared {
    /// The JSON that goes upstream.
    pub fn body(&self) -> &Value {
        &self.0
    }
}

/// Where the request goes.
#[derive(Debug)]
pub enum Route {
    /// Refused; the rule and reason (types and counts, never values) name why.
    Block {
        /// The deciding rule's id.
        rule: Arc<str>,
        /// Why it matched.
        reason: String,
    },
    /// Answered by the in-process model; nothing leaves the machine.
    Local,
    /// Sent to a cloud upstream.
    Cloud {
        /// The upstream serving the requested model.
        upstream: Arc<Upstream>,
        /// What it receives.
        body: Cleared,
        /// Tokens to restore in the answer (`redact` only).
        restore: Option<RedactionMap>,
    },
    /// The policy lets the request out, but no upstream serves the requested model.
    NoUpstream,
}

impl Route {
    /// `local`, the upstream's name, or `None` (blocked, or no upstream).
    pub fn name(&self) -> Option<&str> {
        match self {
            Self::Local => Some("local"),
            Self::Cloud { upstream, .. } => Some(&upstream.name),
            Self::Block { .. } | Self::NoUpstream => None,
        }
    }
}

/// Everything decided about one request.
#[derive(Debug)]
pub struct Decision {
    /// The policy that decided (name, digest, rules).
    pub policy: Arc<Policy>,
    /// Versions of the detectors that ran, for the audit record.
    pub detectors: Vec<String>,
    /// What was scanned and found.
    pub scanned: Scanned,
    /// Every rule evaluated, the winning action and why it won.
    pub verdict: Verdict,
    /// Where the request goes, with the body that would leave.
    pub route: Route,
}

impl Decision {
    /// The action taken.
    pub fn action(&self) -> Action {
        self.verdict.action
    }

    /// Whether something was detected in the field at `path` (e.g. `model`): then its value must
    /// not be recorded as it is.
    pub fn flags(&self, path: &[Step]) -> bool {
        self.scanned.pieces.iter().flatten().any(|p| {
            self.scanned
                .extracted
                .segments
                .get(p.segment)
                .is_some_and(|s| s.location.path == path && s.location.inner.is_none())
        })
    }
}

/// Why no decision could be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecideError {
    /// The caller's policy is not in the snapshot.
    #[error("policy {0:?} is not loaded; check the key's policy name and the policies directory")]
    UnknownPolicy(String),
}

/// Decides one request: extract, detect, evaluate the caller's policy, choose the route and
/// build the body that may leave.
pub fn decide(
    request: &Request,
    principal: &Principal,
    snapshot: &Snapshot,
) -> Result<Decision, DecideError> {
    decide_with(request, principal, snapshot, |detectors, extracted| {
        scan::scan(detectors, extracted, &principal.tenant)
    })
}

/// Prepares the next turn of `request`'s conversation: reads `answer` (the assistant message
/// just returned for it) as the client will send it back, after `request`'s messages, and
/// remembers the classifier's findings in the caller's segment cache, so that next turn only
/// the new question costs the model. Decides nothing and records nothing; returns how many
/// readings ran the model (0 without a cache or a classifier).
pub fn prime(
    request: &Request,
    answer: Value,
    principal: &Principal,
    snapshot: &Snapshot,
) -> Result<usize, PrimeError> {
    let set = snapshot
        .policies
        .get(&principal.policy)
        .ok_or_else(|| DecideError::UnknownPolicy(principal.policy.to_string()))?;
    let mut next = request.body.clone();
    let Some(messages) = next.get_mut("messages").and_then(Value::as_array_mut) else {
        return Ok(0);
    };
    messages.push(answer);
    let extracted = extract::chat(&next, snapshot.max_json_depth);
    Ok(scan::prime(&set.detectors, &extracted, &principal.tenant)?)
}

/// Why a conversation's next turn could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum PrimeError {
    /// No decision either.
    #[error(transparent)]
    Decide(#[from] DecideError),
    /// The classifier failed.
    #[error(transparent)]
    Classifier(#[from] crate::detect::classifier::ClassifierError),
}

/// Decides one request whose detection could not finish (timed out or crashed): nothing is
/// allowed on the strength of it, and the policy's `on_detector_error` applies.
pub fn decide_undetected(
    request: &Request,
    principal: &Principal,
    snapshot: &Snapshot,
    started: Instant,
) -> Result<Decision, DecideError> {
    decide_with(request, principal, snapshot, |_, extracted| {
        Scanned::failed(extracted, started.elapsed())
    })
}

fn decide_with(
    request: &Request,
    principal: &Principal,
    snapshot: &Snapshot,
    detect: impl FnOnce(&Detectors, Extracted) -> Scanned,
) -> Result<Decision, DecideError> {
    let set = snapshot
        .policies
        .get(&principal.policy)
        .ok_or_else(|| DecideError::UnknownPolicy(principal.policy.to_string()))?;
    let policy = set.policy.clone();
    let extracted = extract::chat(&request.body, snapshot.max_json_depth);
    let scanned = detect(&set.detectors, extracted);
    let verdict = policy.decide(&Facts {
        findings: &scanned.findings,
        tenant: &principal.tenant,
        model: &request.model,
        detector_failed: scanned.failed,
        unscannable: scanned.extracted.unscannable.len()
            + usize::from(scanned.classifier_unavailable),
    });
    let route = match verdict.action {
        Action::Block => match verdict.deciding_rule() {
            Some(hit) => Route::Block {
                rule: hit.rule.clone(),
                reason: hit.reason.clone(),
            },
            None => Route::Block {
                rule: Arc::from("veil.default"),
                reason: "no rule matched and the policy's default action is block".to_owned(),
            },
        },
        Action::Local => Route::Local,
        Action::Allow | Action::Redact => match snapshot.cloud.select(&request.model) {
            None => Route::NoUpstream,
            Some(upstream) => {
                let mut body = request.body.clone();
                let restore = (verdict.action == Action::Redact).then(|| {
                    let (map, _) = redact::apply(
                        &scanned,
                        &verdict.redact,
                        &policy,
                        &snapshot.digester,
                        &mut body,
                    );
                    map
                });
                request.ask_usage(&mut body);
                Route::Cloud {
                    upstream,
                    body: Cleared(body),
                    restore,
                }
            }
        },
    };
    Ok(Decision {
        policy,
        detectors: set.detectors.versions(),
        scanned,
        verdict,
        route,
    })
}
