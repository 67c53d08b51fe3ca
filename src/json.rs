//! Strict JSON: the structure veil scans is exactly the structure it forwards. Request bodies
//! and the JSON documents inside tool-call arguments are parsed with it.
//!
//! Duplicate object keys are rejected (a parser that keeps the last copy would let a benign
//! copy be scanned and a sensitive copy be forwarded), nesting is bounded, and the input must
//! be valid UTF-8 without lone surrogate escapes. The parsed value is re-serialized for the
//! upstream; the client's bytes are never forwarded.

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, Error as _, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// Why a body is not acceptable JSON.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// The bytes are not UTF-8.
    #[error("request body is not valid UTF-8")]
    InvalidUtf8,
    /// The same key appears twice in one object.
    #[error("duplicate JSON key {0:?}; send each key once")]
    DuplicateKey(String),
    /// The nesting is deeper than allowed.
    #[error("JSON nesting deeper than {0} levels")]
    TooDeep(usize),
    /// Anything else the JSON parser rejects (position only, never content).
    #[error("malformed JSON at line {line}, column {column}: {kind}")]
    Malformed {
        /// Line of the error.
        line: usize,
        /// Column of the error.
        column: usize,
        /// Parser category of the error.
        kind: &'static str,
    },
}

/// Parses a request body strictly.
pub fn parse_json(bytes: &[u8], max_depth: usize) -> Result<Value, BodyError> {
    let text = std::str::from_utf8(bytes).map_err(|_| BodyError::InvalidUtf8)?;
    let mut de = serde_json::Deserializer::from_str(text);
    let seed = Strict {
        depth: 0,
        max_depth,
    };
    let value = seed.deserialize(&mut de).map_err(map_err)?;
    de.end().map_err(map_err)?;
    Ok(value)
}

fn map_err(e: serde_json::Error) -> BodyError {
    let msg = e.to_string();
    // Our own errors travel through serde_json as custom messages; recover them.
    if let Some(rest) = msg.strip_prefix(DUP) {
        let key = rest.split(" at line").next().unwrap_or_default();
        return BodyError::DuplicateKey(key.chars().take(64).collect());
    }
    if let Some(rest) = msg.strip_prefix(DEEP) {
        let n = rest
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        return BodyError::TooDeep(n);
    }
    let kind = match e.classify() {
        serde_json::error::Category::Io => "read error",
        serde_json::error::Category::Syntax => "syntax error",
        serde_json::error::Category::Data => "invalid value",
        serde_json::error::Category::Eof => "unexpected end of input",
    };
    let kind = if msg.contains("surrogate") {
        "invalid unicode escape (lone surrogate)"
    } else if msg.contains("recursion limit") {
        "nesting too deep"
    } else {
        kind
    };
    BodyError::Malformed {
        line: e.line(),
        column: e.column(),
        kind,
    }
}

const DUP: &str = "veil-duplicate-key:";
const DEEP: &str = "veil-too-deep:";

#[derive(Clone, Copy)]
struct Strict {
    depth: usize,
    max_depth: usize,
}

impl Strict {
    fn nested<E: serde::de::Error>(self) -> Result<Self, E> {
        if self.depth >= self.max_depth {
            return Err(E::custom(format_args!("{DEEP}{}", self.max_depth)));
        }
        Ok(Self {
            depth: self.depth + 1,
            ..self
        })
    }
}

impl<'de> DeserializeSeed<'de> for Strict {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Value, E> {
        serde_json::Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("non-finite number"))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let inner = self.nested()?;
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(inner)? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let inner = self.nested()?;
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                let shown: String = key.chars().take(64).collect();
                return Err(A::Error::custom(format_args!("{DUP}{shown}")));
            }
            let v = map.next_value_seed(inner)?;
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_json() {
        let v = parse_json(br#"{"a":[1,2,{"b":"c"}],"d":null}"#, 8);
        assert!(v.is_ok(), "{v:?}");
    }

    #[test]
    fn rejects_duplicate_keys_at_any_depth() {
        assert_eq!(
            parse_json(br#"{"messages":[],"messages":[1]}"#, 8),
            Err(BodyError::DuplicateKey("messages".into()))
        );
        assert_eq!(
            parse_json(br#"{"a":{"x":1,"x":2}}"#, 8),
            Err(BodyError::DuplicateKey("x".into()))
        );
    }

    #[test]
    fn escaped_duplicate_is_still_a_duplicate() {
        // "\u0061" is "a": two spellings of one key.
        assert_eq!(
            parse_json(br#"{"a":1,"\u0061":2}"#, 8),
            Err(BodyError::DuplicateKey("a".into()))
        );
    }

    #[test]
    fn rejects_deep_nesting() {
        let deep = format!("{}{}", "[".repeat(20), "]".repeat(20));
        assert_eq!(parse_json(deep.as_bytes(), 10), Err(BodyError::TooDeep(10)));
        assert!(parse_json(deep.as_bytes(), 20).is_ok());
    }

    #[test]
    fn rejects_bad_encoding_and_trailing_data() {
        assert_eq!(
            parse_json(b"{\"a\":\"\xff\"}", 8),
            Err(BodyError::InvalidUtf8)
        );
        assert!(matches!(
            parse_json(br#"{"a":"\ud800"}"#, 8),
            Err(BodyError::Malformed { .. })
        ));
        assert!(matches!(
            parse_json(br#"{"a":1} {"b":2}"#, 8),
            Err(BodyError::Malformed { .. })
        ));
    }

    #[test]
    fn error_messages_never_echo_values() {
        let e = parse_json(br#"{"ssn":"123-45-6789" "#, 8)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(!e.contains("123-45-6789"), "{e}");
    }
}
