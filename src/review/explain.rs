//! `veil policy explain`: the whole decision trace for one request — each finding, every rule
//! with why it matched or not, the winning action and why it won, the route, and the body the
//! upstream would receive. Values are masked unless asked for.

use std::fmt::Write as _;

use serde_json::{Value, json};

use crate::audit::ValueDigester;
use crate::auth::Principal;
use crate::decide::{Decision, Request, Route};
use crate::policy::Operator;
use crate::redact;

/// How to show the trace.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Show detected values as they are (otherwise every letter and digit is `*`).
    pub show_values: bool,
}

/// One finding's piece inside one field.
struct Shown {
    field: String,
    start: usize,
    end: usize,
    entity: String,
    score: f32,
    recognizer: &'static str,
    value: String,
}

fn findings(d: &Decision, opts: Options) -> Vec<Shown> {
    let mut out = Vec::new();
    for (f, pieces) in d.scanned.findings.iter().zip(&d.scanned.pieces) {
        for p in pieces {
            let Some(seg) = d.scanned.extracted.segments.get(p.segment) else {
                continue;
            };
            let text = &seg.text;
            let value = text.get(p.start..p.end).unwrap_or_default();
            let chars = |b: usize| text.get(..b).map_or(0, |s| s.chars().count());
            out.push(Shown {
                field: seg.location.field(),
                start: chars(p.start),
                end: chars(p.end),
                entity: f.entity.as_str().to_owned(),
                score: f.score,
                recognizer: f.recognizer,
                value: if opts.show_values {
                    value.to_owned()
                } else {
                    redact::masked(value)
                },
            });
        }
    }
    out
}

/// The body the upstream would receive; with values hidden, the findings left in it are masked
/// too (the redacted ones show their placeholders, as sent).
fn upstream_body(
    request: &Request,
    d: &Decision,
    digester: &ValueDigester,
    opts: Options,
) -> Option<Value> {
    let Route::Cloud { body, .. } = &d.route else {
        return None;
    };
    if opts.show_values {
        return Some(body.body().clone());
    }
    let ops: Vec<Option<Operator>> = d
        .scanned
        .findings
        .iter()
        .zip(&d.verdict.redact)
        .map(|(f, &redacted)| {
            Some(if redacted {
                d.policy.operator(&f.entity)
            } else {
                Operator::Mask
            })
        })
        .collect();
    let mut shown = request.body.clone();
    redact::apply_ops(&d.scanned, &ops, digester, &mut shown);
    request.ask_usage(&mut shown);
    Some(shown)
}

fn route_text(d: &Decision) -> String {
    match &d.route {
        Route::Block { rule, .. } => format!(
            "none: the client gets 403 policy_blocked naming rule {rule:?}; nothing is sent"
        ),
        Route::Local => {
            "local: answered by the in-process model; nothing leaves the machine".to_owned()
        }
        Route::Cloud { upstream, .. } => format!("{} (cloud)", upstream.name),
        Route::NoUpstream => {
            "none: no upstream serves the requested model; the client gets 404 model_not_found"
                .to_owned()
        }
    }
}

/// The trace as text.
pub fn text(
    request: &Request,
    principal: &Principal,
    d: &Decision,
    digester: &ValueDigester,
    opts: Options,
) -> String {
    let mut out = String::new();
    let p = &d.policy;
    let _ = writeln!(
        out,
        "policy     {} ({}, sha256:{})",
        p.name,
        p.file.display(),
        p.digest
    );
    let _ = writeln!(
        out,
        "caller     key {}, tenant {}",
        principal.key_id, principal.tenant
    );
    let _ = writeln!(out, "model      {}", request.model);
    let _ = writeln!(out, "detectors  {}", d.detectors.join(", "));
    let shown = findings(d, opts);
    let _ = writeln!(out, "\nfindings ({})", d.scanned.findings.len());
    let spans: Vec<String> = shown
        .iter()
        .map(|f| format!("{}..{}", f.start, f.end))
        .collect();
    let w = |get: &dyn Fn(&Shown) -> usize| shown.iter().map(get).max().unwrap_or(0);
    let (wf, we, wr) = (
        w(&|f| f.field.len()),
        w(&|f| f.entity.len()),
        w(&|f| f.recognizer.len()),
    );
    let ws = spans.iter().map(String::len).max().unwrap_or(0);
    for (f, span) in shown.iter().zip(&spans) {
        let _ = writeln!(
            out,
            "  {:<wf$}  {span:<ws$}  {:<we$}  {:.2}  {:<wr$}  {:?}",
            f.field, f.entity, f.score, f.recognizer, f.value
        );
    }
    for u in &d.scanned.extracted.unscannable {
        let _ = writeln!(out, "  {}  unscannable ({})", u.path, u.kind);
    }
    if d.scanned.classifier_unavailable {
        let _ = writeln!(out, "  *  unscannable (classifier_unavailable)");
    }
    let _ = writeln!(out, "\nrules");
    let width = d
        .verdict
        .rules
        .iter()
        .map(|r| r.rule.len())
        .max()
        .unwrap_or(0);
    for r in &d.verdict.rules {
        let _ = writeln!(
            out,
            "  {}  {:<width$}  {:<6}  {}",
            if r.matched { "MATCH" } else { "-    " },
            r.rule,
            r.action.as_str(),
            r.reason
        );
    }
    let _ = writeln!(
        out,
        "\naction     {}: {}",
        d.action().as_str(),
        d.verdict.why
    );
    let _ = writeln!(out, "route      {}", route_text(d));
    match upstream_body(request, d, digester, opts) {
        Some(body) => {
            let note = if opts.show_values {
                ""
            } else {
                " (values of findings masked; --show-values shows them)"
            };
            let _ = writeln!(out, "\nupstream body{note}");
            let pretty = serde_json::to_string_pretty(&body).unwrap_or_default();
            for line in pretty.lines() {
                let _ = writeln!(out, "  {line}");
            }
        }
        None => {
            let _ = writeln!(out, "\nupstream body\n  nothing leaves veil");
        }
    }
    out
}

/// The trace as one JSON document.
pub fn json(
    request: &Request,
    principal: &Principal,
    d: &Decision,
    digester: &ValueDigester,
    opts: Options,
) -> Value {
    let findings: Vec<Value> = findings(d, opts)
        .into_iter()
        .map(|f| {
            // Four decimals: the f32 score as written, not its f64 expansion.
            let score = (f64::from(f.score) * 1e4).round() / 1e4;
            json!({"field": f.field, "start": f.start, "end": f.end, "entity": f.entity,
                   "score": score, "recognizer": f.recognizer, "value": f.value})
        })
        .collect();
    let unscannable: Vec<Value> = d
        .scanned
        .extracted
        .unscannable
        .iter()
        .map(|u| json!({"field": u.path, "kind": u.kind}))
        .collect();
    let route = match &d.route {
        Route::Block { rule, reason } => json!({"kind": "block", "rule": rule, "reason": reason}),
        Route::Local => json!({"kind": "local"}),
        Route::Cloud { upstream, .. } => json!({"kind": "cloud", "upstream": upstream.name}),
        Route::NoUpstream => json!({"kind": "no_upstream"}),
    };
    json!({
        "policy": {"name": d.policy.name, "file": d.policy.file, "digest": d.policy.digest},
        "caller": {"key_id": principal.key_id, "tenant": principal.tenant},
        "model": request.model,
        "detectors": d.detectors,
        "findings": findings,
        "unscannable": unscannable,
        "classifier_unavailable": d.scanned.classifier_unavailable,
        "detector_failed": d.scanned.failed,
        "rules": d.verdict.rules,
        "action": d.action(),
        "why": d.verdict.why,
        "route": route,
        "upstream_body": upstream_body(request, d, digester, opts),
        "values_masked": !opts.show_values,
    })
}
