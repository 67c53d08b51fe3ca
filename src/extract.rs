//! Every text-bearing field of a validated request, with the path to write it back.
//!
//! The walk covers all messages and roles, string content and text parts, message names,
//! refusals, tool-call ids, names and arguments (parsed as JSON when they are JSON, so values
//! can be redacted and the arguments stay valid JSON), tool definitions, and every string and
//! object key inside free-form fields (metadata, response formats, schemas, stop sequences).
//! Only the enum-like `role`/`type` fields are skipped. `model` is scanned too — it is a
//! client-chosen string that goes upstream — but as an identifier, not prose: it comes last and
//! only the pattern tier reads it (the classifier would read model names as people). Image, audio
//! and file parts cannot be scanned and are reported as such.

use serde_json::Value;

/// One step of a path into the request JSON.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Step {
    /// Object member.
    Key(String),
    /// Array element.
    Index(usize),
}

/// Where a segment's text lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// Path to the string in the request.
    pub path: Vec<Step>,
    /// When the string holds JSON (tool-call arguments), the path inside that document.
    pub inner: Option<Vec<Step>>,
    /// The text is an object key (renamed on redaction), not a value.
    pub is_key: bool,
}

impl Location {
    /// The field as the audit log and `veil policy explain` name it: `messages[1].content`,
    /// `#/path` inside a JSON document held in a string, `#key` for an object key.
    pub fn field(&self) -> String {
        let mut field = render(&self.path);
        if let Some(inner) = &self.inner {
            field.push_str("#/");
            field.push_str(&render(inner));
        }
        if self.is_key {
            field.push_str("#key");
        }
        field
    }
}

impl Location {
    /// Whether this is the text of a message: its string `content` or a text part of it. A
    /// value split between two of them in a row is read across the split.
    pub fn is_message_text(&self) -> bool {
        if self.is_key || self.inner.is_some() {
            return false;
        }
        let content = |rest: &[Step]| match rest {
            [Step::Key(k)] => k == "content",
            [Step::Key(k), Step::Index(_), Step::Key(t)] => k == "content" && t == "text",
            _ => false,
        };
        match self.path.as_slice() {
            [Step::Key(m), Step::Index(_), rest @ ..] => m == "messages" && content(rest),
            _ => false,
        }
    }
}

/// One piece of text to scan.
#[derive(Debug, Clone)]
pub struct Segment {
    /// Where it came from.
    pub location: Location,
    /// The text.
    pub text: String,
    /// Text people write, read by every detector; `false` for identifiers (the model name),
    /// which only the pattern tier reads. Identifiers come after all prose.
    pub prose: bool,
}

/// A part that cannot be scanned (image, audio, file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unscannable {
    /// JSON path of the part, e.g. `messages[1].content[0]`.
    pub path: String,
    /// `image_url`, `input_audio` or `file`.
    pub kind: &'static str,
}

/// Everything that must be scanned in one request.
#[derive(Debug, Clone, Default)]
pub struct Extracted {
    /// Text segments in document order.
    pub segments: Vec<Segment>,
    /// Parts that cannot be scanned.
    pub unscannable: Vec<Unscannable>,
}

/// The separator between segments in the joined scan document: a space, so that a value split
/// across two parts or messages is still seen as one value.
pub const SEPARATOR: &str = " ";

impl Extracted {
    /// All segments joined with [`SEPARATOR`], and the byte offset where each segment starts.
    pub fn joined(&self) -> (String, Vec<usize>) {
        let total: usize = self.segments.iter().map(|s| s.text.len() + 1).sum();
        let mut doc = String::with_capacity(total);
        let mut starts = Vec::with_capacity(self.segments.len());
        for (i, s) in self.segments.iter().enumerate() {
            if i > 0 {
                doc.push_str(SEPARATOR);
            }
            starts.push(doc.len());
            doc.push_str(&s.text);
        }
        (doc, starts)
    }
}

/// The model name's trailing version date (`-2024-08-06`, `-20241022`, `@20240620`): where it
/// starts, if there is one. It is a version, not a date about anyone.
pub fn model_version_suffix(model: &str) -> Option<usize> {
    static SUFFIX: std::sync::LazyLock<Option<regex::Regex>> =
        std::sync::LazyLock::new(|| regex::Regex::new(r"[-@](?:\d{4}-\d{2}-\d{2}|\d{8})$").ok());
    SUFFIX.as_ref()?.find(model).map(|m| m.start())
}

/// Extracts the segments of a chat request that has passed validation.
pub fn chat(request: &Value, max_depth: usize) -> Extracted {
    let mut out = Extracted::default();
    let Value::Object(top) = request else {
        return out;
    };
    for (key, value) in top {
        let path = vec![Step::Key(key.clone())];
        match key.as_str() {
            "model" => {}
            "messages" => {
                for (i, m) in value.as_array().into_iter().flatten().enumerate() {
                    let mut p = path.clone();
                    p.push(Step::Index(i));
                    message(m, p, max_depth, &mut out);
                }
            }
            "tools" | "functions" => {
                for (i, t) in value.as_array().into_iter().flatten().enumerate() {
                    let mut p = path.clone();
                    p.push(Step::Index(i));
                    structured(t, p, &mut out);
                }
            }
            _ => free(value, path, None, &mut out),
        }
    }
    if let Some(Value::String(model)) = top.get("model")
        && !model.is_empty()
    {
        out.segments.push(Segment {
            location: Location {
                path: vec![Step::Key("model".to_owned())],
                inner: None,
                is_key: false,
            },
            text: model.clone(),
            prose: false,
        });
    }
    out
}

fn push(out: &mut Extracted, path: Vec<Step>, inner: Option<Vec<Step>>, text: &str, is_key: bool) {
    if text.is_empty() {
        return;
    }
    out.segments.push(Segment {
        location: Location {
            path,
            inner,
            is_key,
        },
        text: text.to_owned(),
        prose: true,
    });
}

fn child(path: &[Step], step: Step) -> Vec<Step> {
    let mut p = path.to_vec();
    p.push(step);
    p
}

fn message(m: &Value, path: Vec<Step>, max_depth: usize, out: &mut Extracted) {
    let Value::Object(fields) = m else {
        return;
    };
    for (key, value) in fields {
        let p = child(&path, Step::Key(key.clone()));
        match (key.as_str(), value) {
            ("role", _) => {}
            ("content", Value::Array(parts)) => {
                for (i, part) in parts.iter().enumerate() {
                    content_part(part, child(&p, Step::Index(i)), out);
                }
            }
            ("tool_calls", Value::Array(calls)) => {
                for (i, call) in calls.iter().enumerate() {
                    tool_call(call, child(&p, Step::Index(i)), max_depth, out);
                }
            }
            ("function_call", call) => function(call, p, max_depth, out),
            _ => free(value, p, None, out),
        }
    }
}

fn content_part(part: &Value, path: Vec<Step>, out: &mut Extracted) {
    let Value::Object(fields) = part else {
        return;
    };
    let kind = fields
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let unscannable = match kind {
        "image_url" => Some("image_url"),
        "input_audio" => Some("input_audio"),
        "file" => Some("file"),
        _ => None,
    };
    if let Some(kind) = unscannable {
        out.unscannable.push(Unscannable {
            path: render(&path),
            kind,
        });
        return;
    }
    for (key, value) in fields {
        if key != "type" {
            free(value, child(&path, Step::Key(key.clone())), None, out);
        }
    }
}

fn tool_call(call: &Value, path: Vec<Step>, max_depth: usize, out: &mut Extracted) {
    let Value::Object(fields) = call else {
        return;
    };
    for (key, value) in fields {
        let p = child(&path, Step::Key(key.clone()));
        match key.as_str() {
            "type" => {}
            "function" => function(value, p, max_depth, out),
            _ => free(value, p, None, out),
        }
    }
}

/// A `{name, arguments}` object: arguments that parse as JSON are walked inside.
fn function(call: &Value, path: Vec<Step>, max_depth: usize, out: &mut Extracted) {
    let Value::Object(fields) = call else {
        free(call, path, None, out);
        return;
    };
    for (key, value) in fields {
        let p = child(&path, Step::Key(key.clone()));
        match (key.as_str(), value) {
            ("arguments", Value::String(args)) => {
                match crate::json::parse_json(args.as_bytes(), max_depth) {
                    Ok(doc @ (Value::Object(_) | Value::Array(_))) => {
                        free(&doc, p, Some(Vec::new()), out);
                    }
                    _ => push(out, p, None, args, false),
                }
            }
            _ => free(value, p, None, out),
        }
    }
}

/// Tool and function definitions: `type` is structural, the rest is text.
fn structured(v: &Value, path: Vec<Step>, out: &mut Extracted) {
    let Value::Object(fields) = v else {
        free(v, path, None, out);
        return;
    };
    for (key, value) in fields {
        let p = child(&path, Step::Key(key.clone()));
        match (key.as_str(), value) {
            ("type", Value::String(_)) => {}
            ("function", Value::Object(_)) => structured(value, p, out),
            _ => free(value, p, None, out),
        }
    }
}

/// Every string and every object key below `v`. With `inner`, `path` points at a string
/// holding a JSON document and `inner` is the path inside it.
fn free(v: &Value, path: Vec<Step>, inner: Option<Vec<Step>>, out: &mut Extracted) {
    match v {
        Value::String(s) => push(out, path, inner, s, false),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let (p, n) = descend(&path, &inner, Step::Index(i));
                free(item, p, n, out);
            }
        }
        Value::Object(fields) => {
            for (key, value) in fields {
                let (p, n) = descend(&path, &inner, Step::Key(key.clone()));
                push(out, p.clone(), n.clone(), key, true);
                free(value, p, n, out);
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

fn descend(path: &[Step], inner: &Option<Vec<Step>>, step: Step) -> (Vec<Step>, Option<Vec<Step>>) {
    match inner {
        Some(i) => (path.to_vec(), Some(child(i, step))),
        None => (child(path, step), None),
    }
}

/// `messages[1].content[0]` style rendering of a path (field names only, never values).
pub fn render(path: &[Step]) -> String {
    let mut s = String::new();
    for step in path {
        match step {
            Step::Key(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(k);
            }
            Step::Index(i) => {
                s.push('[');
                s.push_str(&i.to_string());
                s.push(']');
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn texts(e: &Extracted) -> Vec<&str> {
        e.segments.iter().map(|s| s.text.as_str()).collect()
    }

    #[test]
    fn finds_every_text_bearing_field() {
        let v = json!({
            "model": "gpt-4o",
            "user": "u@example.com",
            "stop": ["STOP-A"],
            "metadata": {"case": "M1"},
            "messages": [
                {"role": "system", "content": "S1", "name": "N1"},
                {"role": "user", "content": [{"type": "text", "text": "T1"},
                    {"type": "image_url", "image_url": {"url": "data:x"}}]},
                {"role": "assistant", "content": null, "refusal": "R1", "tool_calls": [
                    {"id": "call_1", "type": "function",
                     "function": {"name": "lookup", "arguments": "{\"ssn\":\"A1\",\"list\":[\"A2\"]}"}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "TR1"}
            ],
            "tools": [{"type": "function", "function": {"name": "lookup", "description": "D1",
                "parameters": {"type": "object", "properties": {"ssn": {"description": "P1"}}}}}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "J1"}}
        });
        let e = chat(&v, 16);
        let t = texts(&e);
        for want in [
            "u@example.com",
            "STOP-A",
            "case",
            "M1",
            "S1",
            "N1",
            "T1",
            "R1",
            "call_1",
            "lookup",
            "A1",
            "A2",
            "ssn",
            "TR1",
            "D1",
            "P1",
            "J1",
        ] {
            assert!(t.contains(&want), "missing {want}: {t:?}");
        }
        // The model is scanned as an identifier, last.
        assert_eq!(
            e.segments.last().map(|s| (s.text.as_str(), s.prose)),
            Some(("gpt-4o", false))
        );
        assert!(!t.contains(&"user") && !t.contains(&"function"), "{t:?}");
        assert_eq!(
            e.unscannable,
            vec![Unscannable {
                path: "messages[1].content[1]".into(),
                kind: "image_url"
            }]
        );
    }

    #[test]
    fn tool_arguments_are_walked_inside() {
        let v = json!({"messages": [{"role": "assistant", "tool_calls": [{"id": "c", "type": "function",
            "function": {"name": "f", "arguments": "{\"k\":\"V\"}"}}]}]});
        let e = chat(&v, 16);
        let seg = e.segments.iter().find(|s| s.text == "V");
        let loc = seg.map(|s| s.location.clone());
        assert_eq!(loc.and_then(|l| l.inner), Some(vec![Step::Key("k".into())]));
    }

    #[test]
    fn non_json_arguments_are_one_segment() {
        let v = json!({"messages": [{"role": "assistant", "tool_calls": [{"id": "c", "type": "function",
            "function": {"name": "f", "arguments": "not json"}}]}]});
        assert!(texts(&chat(&v, 16)).contains(&"not json"));
    }

    #[test]
    fn joined_document_maps_segments() {
        let v = json!({"messages": [{"role": "user", "content": "ab"}, {"role": "user", "content": "cd"}]});
        let e = chat(&v, 16);
        let (doc, starts) = e.joined();
        assert_eq!(doc, "ab cd");
        assert_eq!(starts, vec![0, 3]);
    }
}
