//! Redaction: replaces detected values before a request leaves, and restores them in answers.
//!
//! The redaction map lives in memory for one request and is zeroized when dropped. Restoring
//! is exact: only tokens veil issued for this request are replaced; tokens inside tool-call
//! arguments are restored as JSON-escaped text so the arguments stay valid JSON.

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;
use zeroize::Zeroizing;

use crate::audit::ValueDigester;
use crate::detect::EntityType;
use crate::extract::{Location, Step};
use crate::policy::{Operator, Policy};
use crate::scan::Scanned;

/// A value held only in memory and wiped when dropped.
#[derive(PartialEq, Eq, Hash)]
struct Secret(String);

impl Drop for Secret {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

/// Tokens issued for one request, and the values they stand for.
#[derive(Default)]
pub struct RedactionMap {
    by_value: HashMap<(EntityType, Secret), String>,
    by_token: HashMap<String, Zeroizing<String>>,
    counters: BTreeMap<EntityType, usize>,
    longest: usize,
}

impl std::fmt::Debug for RedactionMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RedactionMap({} tokens)", self.by_token.len())
    }
}

impl RedactionMap {
    /// Number of restorable tokens.
    pub fn len(&self) -> usize {
        self.by_token.len()
    }

    /// Whether nothing restorable was issued.
    pub fn is_empty(&self) -> bool {
        self.by_token.is_empty()
    }

    fn token(
        &mut self,
        entity: &EntityType,
        value: &str,
        op: Operator,
        digester: &ValueDigester,
    ) -> String {
        let key = (entity.clone(), Secret(value.to_owned()));
        if let Some(t) = self.by_value.get(&key) {
            return t.clone();
        }
        let token = match op {
            Operator::Hash => {
                let d = digester.digest(entity.as_str(), value);
                format!("<{}_{}>", entity.as_str(), d.get(..8).unwrap_or(&d))
            }
            _ => {
                let n = self.counters.entry(entity.clone()).or_default();
                *n += 1;
                format!("<{}_{}>", entity.as_str(), n)
            }
        };
        self.longest = self.longest.max(token.len());
        self.by_token
            .insert(token.clone(), Zeroizing::new(value.to_owned()));
        self.by_value.insert(key, token.clone());
        token
    }

    /// Replaces every token issued for this request in `text`.
    pub fn restore(&self, text: &str, json_escape: bool) -> String {
        if self.by_token.is_empty() || !text.contains('<') {
            return text.to_owned();
        }
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(open) = rest.find('<') {
            let (before, from) = rest.split_at(open);
            out.push_str(before);
            let candidate = from
                .find('>')
                .filter(|&close| close < self.longest)
                .and_then(|close| from.get(..=close));
            match candidate.and_then(|c| self.by_token.get(c).map(|v| (c, v))) {
                Some((token, value)) => {
                    if json_escape {
                        let quoted = serde_json::to_string(value.as_str()).unwrap_or_default();
                        out.push_str(
                            quoted
                                .get(1..quoted.len().saturating_sub(1))
                                .unwrap_or_default(),
                        );
                    } else {
                        out.push_str(value);
                    }
                    rest = from.get(token.len()..).unwrap_or_default();
                }
                None => {
                    out.push('<');
                    rest = from.get(1..).unwrap_or_default();
                }
            }
        }
        out.push_str(rest);
        out
    }

    /// Restores every string in an answer (tool-call `arguments` JSON-escaped).
    pub fn restore_value(&self, value: &mut Value) {
        self.restore_in(value, false);
    }

    fn restore_in(&self, value: &mut Value, escape: bool) {
        match value {
            Value::String(s) => {
                let restored = self.restore(s, escape);
                *s = restored;
            }
            Value::Array(items) => items.iter_mut().for_each(|v| self.restore_in(v, escape)),
            Value::Object(map) => {
                for (k, v) in map.iter_mut() {
                    self.restore_in(v, escape || k == "arguments");
                }
            }
            _ => {}
        }
    }

    /// A restorer for one streamed text channel (one choice's content or one tool call's
    /// arguments).
    pub fn stream(&self, json_escape: bool) -> StreamRestorer<'_> {
        StreamRestorer {
            map: self,
            held: String::new(),
            json_escape,
        }
    }
}

/// Restores tokens in streamed text, holding back just enough that no token is emitted half
/// restored (a token split across chunks is completed before it is replaced).
#[derive(Debug)]
pub struct StreamRestorer<'a> {
    map: &'a RedactionMap,
    held: String,
    json_escape: bool,
}

impl StreamRestorer<'_> {
    /// Feeds a chunk; returns the text that can be sent now.
    pub fn push(&mut self, chunk: &str) -> String {
        self.held.push_str(chunk);
        let cut = self.safe_prefix_len();
        let ready: String = self.held.drain(..cut).collect();
        self.map.restore(&ready, self.json_escape)
    }

    /// Everything still held, at the end of the stream.
    pub fn finish(&mut self) -> String {
        let rest = std::mem::take(&mut self.held);
        self.map.restore(&rest, self.json_escape)
    }

    /// Length of the held text that cannot be the start of an unfinished token.
    fn safe_prefix_len(&self) -> usize {
        let Some(open) = self.held.rfind('<') else {
            return self.held.len();
        };
        let tail = self.held.get(open + 1..).unwrap_or_default();
        let could_be_token = tail.len() + 1 < self.map.longest.max(2)
            && tail.bytes().all(|b| {
                b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_' || b.is_ascii_hexdigit()
            });
        if could_be_token {
            open
        } else {
            self.held.len()
        }
    }
}

fn mask(value: &str, keep_last: usize) -> String {
    let total = value.chars().filter(|c| c.is_alphanumeric()).count();
    let mut seen = 0;
    value
        .chars()
        .map(|c| {
            if c.is_alphanumeric() {
                seen += 1;
                if seen > total.saturating_sub(keep_last) && c.is_ascii_digit() {
                    c
                } else {
                    '*'
                }
            } else {
                c
            }
        })
        .collect()
}

/// Counts of replaced values by entity type, for headers and metrics.
pub type RedactionCounts = BTreeMap<EntityType, usize>;

/// Replaces every finding the decision marked in `body`, returning the map for restoring.
pub fn apply(
    scanned: &Scanned,
    marks: &[bool],
    policy: &Policy,
    digester: &ValueDigester,
    body: &mut Value,
) -> (RedactionMap, RedactionCounts) {
    let ops: Vec<Option<Operator>> = scanned
        .findings
        .iter()
        .zip(marks)
        .map(|(f, &marked)| marked.then(|| policy.operator(&f.entity)))
        .collect();
    apply_ops(scanned, &ops, digester, body)
}

/// Replaces each finding that has an operator in `ops` (one entry per finding) with it.
/// Overlapping findings are replaced once, with the operator of the highest-scoring one.
pub fn apply_ops(
    scanned: &Scanned,
    ops: &[Option<Operator>],
    digester: &ValueDigester,
    body: &mut Value,
) -> (RedactionMap, RedactionCounts) {
    let mut map = RedactionMap::default();
    let mut counts = RedactionCounts::new();
    let mut spans: BTreeMap<usize, Vec<Span>> = BTreeMap::new();
    for ((finding, pieces), op) in scanned.findings.iter().zip(&scanned.pieces).zip(ops) {
        let Some(op) = *op else {
            continue;
        };
        *counts.entry(finding.entity.clone()).or_default() += 1;
        for p in pieces {
            spans.entry(p.segment).or_default().push(Span {
                start: p.start,
                end: p.end,
                entity: finding.entity.clone(),
                score: finding.score,
                op,
            });
        }
    }
    // New text per segment.
    let mut edits: Vec<(Location, String)> = Vec::new();
    for (seg, mut list) in spans {
        let Some(segment) = scanned.extracted.segments.get(seg) else {
            continue;
        };
        list.sort_by(|a, b| a.start.cmp(&b.start).then(b.end.cmp(&a.end)));
        let merged = merge(list);
        let text = &segment.text;
        let mut out = String::with_capacity(text.len());
        let mut at = 0;
        for span in merged {
            let (Some(before), Some(value)) =
                (text.get(at..span.start), text.get(span.start..span.end))
            else {
                continue;
            };
            out.push_str(before);
            let replacement = match span.op {
                op @ (Operator::Placeholder | Operator::Hash) => {
                    map.token(&span.entity, value, op, digester)
                }
                Operator::Mask => mask(value, 0),
                Operator::Last4 => mask(value, 4),
            };
            out.push_str(&replacement);
            at = span.end;
        }
        out.push_str(text.get(at..).unwrap_or_default());
        edits.push((segment.location.clone(), out));
    }
    write_back(body, edits);
    (map, counts)
}

/// A value with every letter and digit replaced by `*`, for showing where a value was without
/// showing it.
pub fn masked(value: &str) -> String {
    mask(value, 0)
}

/// One replacement inside one segment.
struct Span {
    start: usize,
    end: usize,
    entity: EntityType,
    score: f32,
    op: Operator,
}

/// Merges overlapping spans; the merged span takes the entity and operator of its
/// highest-scoring member.
fn merge(sorted: Vec<Span>) -> Vec<Span> {
    let mut out: Vec<Span> = Vec::new();
    for span in sorted {
        match out.last_mut() {
            Some(last) if span.start < last.end => {
                last.end = last.end.max(span.end);
                if span.score > last.score {
                    last.entity = span.entity;
                    last.score = span.score;
                    last.op = span.op;
                }
            }
            _ => out.push(span),
        }
    }
    out
}

fn write_back(body: &mut Value, edits: Vec<(Location, String)>) {
    // Edits inside JSON-in-a-string (tool-call arguments) are applied to the parsed document,
    // which is serialized once.
    let mut nested: BTreeMap<Vec<Step>, Vec<(Location, String)>> = BTreeMap::new();
    for (loc, text) in edits {
        if loc.inner.is_some() {
            nested
                .entry(loc.path.clone())
                .or_default()
                .push((loc, text));
        } else {
            set(body, &loc.path, loc.is_key, text);
        }
    }
    for (path, edits) in nested {
        let Some(Value::String(args)) = get_mut(body, &path) else {
            continue;
        };
        let Ok(mut doc) = serde_json::from_str::<Value>(args) else {
            continue;
        };
        // Keys renamed last so that value paths stay valid.
        let (keys, values): (Vec<_>, Vec<_>) = edits.into_iter().partition(|(l, _)| l.is_key);
        for (loc, text) in values.into_iter().chain(keys) {
            if let Some(inner) = &loc.inner {
                set(&mut doc, inner, loc.is_key, text);
            }
        }
        if let Ok(s) = serde_json::to_string(&doc) {
            *args = s;
        }
    }
}

fn get_mut<'a>(root: &'a mut Value, path: &[Step]) -> Option<&'a mut Value> {
    path.iter().try_fold(root, |v, step| match (step, v) {
        (Step::Key(k), Value::Object(m)) => m.get_mut(k),
        (Step::Index(i), Value::Array(a)) => a.get_mut(*i),
        _ => None,
    })
}

fn set(root: &mut Value, path: &[Step], is_key: bool, text: String) {
    if is_key {
        let Some((Step::Key(old), parent)) = path.split_last() else {
            return;
        };
        if let Some(Value::Object(map)) = get_mut(root, parent) {
            // Rebuild to keep member order; a renamed key that collides keeps the first value.
            let taken = std::mem::take(map);
            for (k, v) in taken {
                let k = if &k == old { text.clone() } else { k };
                map.entry(k).or_insert(v);
            }
        }
    } else if let Some(v) = get_mut(root, path) {
        *v = Value::String(text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::Finding;
    use crate::extract;
    use crate::scan::Piece;
    use serde_json::json;

    fn policy() -> Policy {
        crate::policy::compile(
            std::path::Path::new("p.toml"),
            "[defaults]\naction = 'allow'\non_detector_error = 'block'\non_unscannable = 'local'\n\
             [redaction.operators]\nCREDIT_CARD = 'last4'\nSSN = 'hash'\n",
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn scanned(body: &Value, needles: &[(&str, EntityType)]) -> Scanned {
        let extracted = extract::chat(body, 16);
        let mut findings = Vec::new();
        let mut pieces = Vec::new();
        for (seg_i, seg) in extracted.segments.iter().enumerate() {
            for (needle, entity) in needles {
                for (start, _) in seg.text.match_indices(needle) {
                    findings.push(Finding {
                        start: 0,
                        end: 0,
                        entity: entity.clone(),
                        score: 0.9,
                        recognizer: "t",
                    });
                    pieces.push(vec![Piece {
                        segment: seg_i,
                        start,
                        end: start + needle.len(),
                    }]);
                }
            }
        }
        Scanned {
            extracted,
            findings,
            pieces,
            failed: false,
            classifier_unavailable: false,
            elapsed: std::time::Duration::ZERO,
        }
    }

    #[test]
    fn redacts_everywhere_and_restores_exactly() {
        let mut body = json!({"model": "m", "messages": [
            {"role": "user", "content": "mail jane@x.org or jane@x.org, ssn 536-22-8726"},
            {"role": "assistant", "tool_calls": [{"id": "c", "type": "function",
                "function": {"name": "f", "arguments": "{\"to\":\"jane@x.org\"}"}}]}
        ]});
        let s = scanned(
            &body,
            &[
                ("jane@x.org", EntityType::Email),
                ("536-22-8726", EntityType::Ssn),
            ],
        );
        let marks = vec![true; s.findings.len()];
        let digester = ValueDigester::new(b"k");
        let (map, counts) = apply(&s, &marks, &policy(), &digester, &mut body);
        let out = body.to_string();
        assert!(
            !out.contains("jane@x.org") && !out.contains("536-22-8726"),
            "{out}"
        );
        assert!(out.contains("<EMAIL_1> or <EMAIL_1>"), "{out}");
        assert_eq!(counts.get(&EntityType::Email), Some(&3));
        // Tool-call arguments are still valid JSON after redaction.
        let args = body["messages"][1]["tool_calls"][0]["function"]["arguments"]
            .as_str()
            .unwrap_or_default();
        assert_eq!(
            serde_json::from_str::<Value>(args).ok(),
            Some(json!({"to": "<EMAIL_1>"}))
        );
        // Restoring the redacted request gives back the original text.
        let mut answer = body.clone();
        map.restore_value(&mut answer);
        assert!(
            answer
                .to_string()
                .contains("jane@x.org or jane@x.org, ssn 536-22-8726")
        );
    }

    #[test]
    fn last4_and_mask_are_not_restorable() {
        let mut body = json!({"model": "m", "messages": [{"role": "user", "content": "card 4111 1111 1111 1111"}]});
        let s = scanned(&body, &[("4111 1111 1111 1111", EntityType::CreditCard)]);
        let (map, _) = apply(&s, &[true], &policy(), &ValueDigester::new(b"k"), &mut body);
        assert_eq!(body["messages"][0]["content"], "card **** **** **** 1111");
        assert!(map.is_empty());
    }

    #[test]
    fn stream_restorer_never_emits_half_a_token() {
        let mut map = RedactionMap::default();
        let digester = ValueDigester::new(b"k");
        let t = map.token(
            &EntityType::Email,
            "a@b.co",
            Operator::Placeholder,
            &digester,
        );
        assert_eq!(t, "<EMAIL_1>");
        let mut r = map.stream(false);
        let mut out = String::new();
        for chunk in ["Write to ", "<EM", "AIL", "_1", "> now <", "b> 3 < 4", ""] {
            let emitted = r.push(chunk);
            assert!(
                !emitted.contains("<EM") && !emitted.contains("AIL_"),
                "{emitted}"
            );
            out.push_str(&emitted);
        }
        out.push_str(&r.finish());
        assert_eq!(out, "Write to a@b.co now <b> 3 < 4");
    }

    #[test]
    fn restore_escapes_inside_arguments() {
        let mut map = RedactionMap::default();
        let t = map.token(
            &EntityType::Person,
            "O\"Brien",
            Operator::Placeholder,
            &ValueDigester::new(b"k"),
        );
        let mut v = json!({"arguments": format!("{{\"n\":\"{t}\"}}"), "content": t});
        map.restore_value(&mut v);
        assert_eq!(v["content"], "O\"Brien");
        let args: Value =
            serde_json::from_str(v["arguments"].as_str().unwrap_or_default()).unwrap_or_default();
        assert_eq!(args["n"], "O\"Brien");
    }
}
