//! The OpenAI chat-completions wire format, as far as veil must understand it.
//!
//! Requests are validated against these types with `deny_unknown_fields`: a field veil does
//! not know is rejected, never forwarded unscanned. The typed view is used for routing and
//! for the local model; scanning and forwarding work on the validated JSON value itself, so
//! fields veil only passes through are never lost or reordered.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A validated `POST /v1/chat/completions` body.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // Fields exist so that validation knows them; veil reads a few.
pub struct ChatRequest {
    /// Requested model.
    pub model: String,
    /// The conversation.
    pub messages: Vec<Message>,
    /// Server-sent events instead of one JSON answer.
    #[serde(default)]
    pub stream: Option<bool>,
    /// Streaming options.
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    /// Sampling temperature.
    #[serde(default)]
    pub temperature: Option<f32>,
    /// Nucleus sampling.
    #[serde(default)]
    pub top_p: Option<f32>,
    /// Number of choices.
    #[serde(default)]
    pub n: Option<u32>,
    /// Stop sequences.
    #[serde(default)]
    pub stop: Option<Stop>,
    /// Legacy completion length limit.
    #[serde(default)]
    pub max_tokens: Option<u32>,
    /// Completion length limit.
    #[serde(default)]
    pub max_completion_tokens: Option<u32>,
    /// Presence penalty.
    #[serde(default)]
    pub presence_penalty: Option<f32>,
    /// Frequency penalty.
    #[serde(default)]
    pub frequency_penalty: Option<f32>,
    /// Token biases.
    #[serde(default)]
    pub logit_bias: Option<serde_json::Map<String, Value>>,
    /// Return log-probabilities.
    #[serde(default)]
    pub logprobs: Option<bool>,
    /// Alternatives per position.
    #[serde(default)]
    pub top_logprobs: Option<u32>,
    /// Sampling seed.
    #[serde(default)]
    pub seed: Option<i64>,
    /// End-user identifier (scanned like text).
    #[serde(default)]
    pub user: Option<String>,
    /// Tool definitions.
    #[serde(default)]
    pub tools: Option<Vec<Tool>>,
    /// Tool choice.
    #[serde(default)]
    pub tool_choice: Option<Value>,
    /// Parallel tool calls.
    #[serde(default)]
    pub parallel_tool_calls: Option<bool>,
    /// Response format (may hold a JSON schema with text).
    #[serde(default)]
    pub response_format: Option<Value>,
    /// Deprecated function definitions.
    #[serde(default)]
    pub functions: Option<Vec<FunctionDef>>,
    /// Deprecated function choice.
    #[serde(default)]
    pub function_call: Option<Value>,
    /// Free-form metadata.
    #[serde(default)]
    pub metadata: Option<serde_json::Map<String, Value>>,
    /// Whether the upstream may store the completion.
    #[serde(default)]
    pub store: Option<bool>,
    /// Service tier.
    #[serde(default)]
    pub service_tier: Option<String>,
    /// Reasoning effort.
    #[serde(default)]
    pub reasoning_effort: Option<String>,
    /// Verbosity.
    #[serde(default)]
    pub verbosity: Option<String>,
    /// Output modalities.
    #[serde(default)]
    pub modalities: Option<Vec<String>>,
    /// Predicted output.
    #[serde(default)]
    pub prediction: Option<Value>,
    /// Audio output options.
    #[serde(default)]
    pub audio: Option<Value>,
    /// Web search options.
    #[serde(default)]
    pub web_search_options: Option<Value>,
    /// Stable end-user identifier for abuse detection.
    #[serde(default)]
    pub safety_identifier: Option<String>,
    /// Prompt cache key.
    #[serde(default)]
    pub prompt_cache_key: Option<String>,
}

/// Streaming options.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamOptions {
    /// Send a final chunk with usage.
    #[serde(default)]
    pub include_usage: Option<bool>,
    /// Obfuscation padding.
    #[serde(default)]
    pub include_obfuscation: Option<bool>,
}

/// `stop`: one string or several.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    /// One stop sequence.
    One(String),
    /// Several stop sequences.
    Many(Vec<String>),
}

impl Stop {
    /// The stop sequences as a list.
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            Self::One(s) => vec![s.clone()],
            Self::Many(v) => v.clone(),
        }
    }
}

/// One message of the conversation.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "role", rename_all = "lowercase", deny_unknown_fields)]
#[allow(dead_code)]
pub enum Message {
    /// System instructions.
    System {
        /// Text.
        content: Content,
        /// Participant name.
        #[serde(default)]
        name: Option<String>,
    },
    /// Developer instructions.
    Developer {
        /// Text.
        content: Content,
        /// Participant name.
        #[serde(default)]
        name: Option<String>,
    },
    /// The user's turn.
    User {
        /// Text and media parts.
        content: Content,
        /// Participant name.
        #[serde(default)]
        name: Option<String>,
    },
    /// An earlier answer.
    Assistant {
        /// Text, if any.
        #[serde(default)]
        content: Option<Content>,
        /// Participant name.
        #[serde(default)]
        name: Option<String>,
        /// Tool calls the assistant made.
        #[serde(default)]
        tool_calls: Option<Vec<ToolCall>>,
        /// A refusal.
        #[serde(default)]
        refusal: Option<String>,
        /// Deprecated function call.
        #[serde(default)]
        function_call: Option<FunctionCall>,
        /// Reference to earlier audio.
        #[serde(default)]
        audio: Option<Value>,
    },
    /// A tool result.
    Tool {
        /// The result.
        content: Content,
        /// The call it answers.
        tool_call_id: String,
    },
    /// A deprecated function result.
    Function {
        /// The result.
        content: Option<String>,
        /// The function.
        name: String,
    },
}

impl Message {
    /// The role name.
    pub fn role(&self) -> &'static str {
        match self {
            Self::System { .. } => "system",
            Self::Developer { .. } => "developer",
            Self::User { .. } => "user",
            Self::Assistant { .. } => "assistant",
            Self::Tool { .. } => "tool",
            Self::Function { .. } => "function",
        }
    }

    /// The message's text, parts joined; media parts contribute nothing.
    pub fn text(&self) -> String {
        match self {
            Self::System { content, .. }
            | Self::Developer { content, .. }
            | Self::User { content, .. }
            | Self::Tool { content, .. } => content.text(),
            Self::Assistant { content, .. } => {
                content.as_ref().map(Content::text).unwrap_or_default()
            }
            Self::Function { content, .. } => content.clone().unwrap_or_default(),
        }
    }
}

/// Message content: a string or a list of parts.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Content {
    /// Plain text.
    Text(String),
    /// Typed parts.
    Parts(Vec<Part>),
}

impl Content {
    /// Text parts joined with newlines.
    pub fn text(&self) -> String {
        match self {
            Self::Text(s) => s.clone(),
            Self::Parts(parts) => parts
                .iter()
                .filter_map(|p| match p {
                    Part::Text { text } => Some(text.as_str()),
                    Part::Refusal { refusal } => Some(refusal.as_str()),
                    _ => None,
                })
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }
}

/// A content part.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
#[allow(dead_code)]
pub enum Part {
    /// Text.
    Text {
        /// The text.
        text: String,
    },
    /// An image (unscannable).
    ImageUrl {
        /// URL or data URI.
        image_url: Value,
    },
    /// Audio (unscannable).
    InputAudio {
        /// Base64 audio.
        input_audio: Value,
    },
    /// A file (unscannable).
    File {
        /// File reference or data.
        file: Value,
    },
    /// A refusal (assistant history).
    Refusal {
        /// The refusal text.
        refusal: String,
    },
}

/// A tool call in assistant history.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct ToolCall {
    /// Call id.
    pub id: String,
    /// Always `function`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The call.
    pub function: FunctionCall,
}

/// A function name and JSON-encoded arguments.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct FunctionCall {
    /// Function name.
    pub name: String,
    /// Arguments, a JSON document in a string.
    pub arguments: String,
}

/// A tool definition.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct Tool {
    /// Always `function`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The function.
    pub function: FunctionDef,
}

/// A function definition.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct FunctionDef {
    /// Name.
    pub name: String,
    /// Description.
    #[serde(default)]
    pub description: Option<String>,
    /// JSON schema of the arguments.
    #[serde(default)]
    pub parameters: Option<Value>,
    /// Strict schema adherence.
    #[serde(default)]
    pub strict: Option<bool>,
}

/// Why a request body is not a valid chat request. Messages name fields, never values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct InvalidRequest {
    /// Sentence for the client.
    pub message: String,
    /// Field path, when known.
    pub param: Option<String>,
}

/// Limits applied while validating.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most messages.
    pub max_messages: usize,
    /// Largest `n`.
    pub max_choices: u32,
    /// Largest completion length.
    pub max_tokens: u32,
}

impl From<&crate::config::ServerConfig> for Limits {
    fn from(s: &crate::config::ServerConfig) -> Self {
        Self {
            max_messages: s.max_messages,
            max_choices: s.max_choices,
            max_tokens: s.max_tokens_limit,
        }
    }
}

/// Parses a chat request body strictly and validates it: the typed view for routing and the
/// local model, and the JSON value that is scanned and forwarded. The server and the review
/// commands accept exactly the same requests.
pub fn parse_chat(
    bytes: &[u8],
    limits: Limits,
    max_depth: usize,
) -> Result<(ChatRequest, Value), super::error::ApiError> {
    let value = crate::json::parse_json(bytes, max_depth)?;
    let request = ChatRequest::from_value(&value, limits)?;
    Ok((request, value))
}

impl ChatRequest {
    /// Validates a parsed body against the wire format and veil's limits.
    pub fn from_value(value: &Value, limits: Limits) -> Result<Self, InvalidRequest> {
        let req: ChatRequest = serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.inner().to_string();
            let message = if let Some(field) = inner
                .strip_prefix("unknown field `")
                .and_then(|r| r.split('`').next())
            {
                let shown = if is_identifier(field) {
                    field
                } else {
                    "(unprintable)"
                };
                format!("unknown field `{shown}` (at `{path}`); veil forwards only fields it scans")
            } else if inner.starts_with("missing field") {
                // "missing field `x`" names only our own schema's field.
                format!(
                    "{} at `{path}`",
                    inner.split(" at line").next().unwrap_or(&inner)
                )
            } else {
                format!("invalid value at `{path}`; see the OpenAI chat completions reference")
            };
            InvalidRequest {
                message,
                param: Some(path),
            }
        })?;
        req.check(limits)?;
        Ok(req)
    }

    fn check(&self, limits: Limits) -> Result<(), InvalidRequest> {
        let bad = |param: &str, message: String| {
            Err(InvalidRequest {
                message,
                param: Some(param.to_owned()),
            })
        };
        if self.model.is_empty()
            || self.model.len() > 128
            || !self
                .model
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._:/-@".contains(c))
        {
            return bad(
                "model",
                "model names use letters, digits and . _ : / - @ (at most 128)".to_owned(),
            );
        }
        if self.messages.is_empty() {
            return bad("messages", "messages must not be empty".to_owned());
        }
        if self.messages.len() > limits.max_messages {
            return bad(
                "messages",
                format!("at most {} messages per request", limits.max_messages),
            );
        }
        if self.n.unwrap_or(1) == 0 || self.n.unwrap_or(1) > limits.max_choices {
            return bad(
                "n",
                format!("n must be between 1 and {}", limits.max_choices),
            );
        }
        for (name, v) in [
            ("max_tokens", self.max_tokens),
            ("max_completion_tokens", self.max_completion_tokens),
        ] {
            if v.is_some_and(|v| v == 0 || v > limits.max_tokens) {
                return bad(
                    name,
                    format!("{name} must be between 1 and {}", limits.max_tokens),
                );
            }
        }
        Ok(())
    }

    /// Whether the answer streams.
    pub fn is_stream(&self) -> bool {
        self.stream.unwrap_or(false)
    }

    /// The completion length the client asked for.
    pub fn max_tokens(&self) -> Option<u32> {
        self.max_completion_tokens.or(self.max_tokens)
    }

    /// The conversation and sampling parameters, for the local model.
    ///
    /// Roles map onto what chat templates know: `developer` is a system turn, tool and function
    /// results are user turns marked as such. Media parts never reach here: they are
    /// unscannable, and the text of their message is kept.
    #[cfg(feature = "local-model")]
    pub fn local_request(&self) -> crate::route::local::GenerateRequest {
        let messages = self
            .messages
            .iter()
            .map(|m| {
                let (role, prefix) = match m {
                    Message::System { .. } | Message::Developer { .. } => ("system", ""),
                    Message::User { .. } => ("user", ""),
                    Message::Assistant { .. } => ("assistant", ""),
                    Message::Tool { .. } | Message::Function { .. } => ("user", "Tool result: "),
                };
                crate::route::local::engine::ChatTurn {
                    role: role.to_owned(),
                    content: format!("{prefix}{}", m.text()),
                }
            })
            .collect();
        crate::route::local::GenerateRequest {
            messages,
            max_tokens: self.max_tokens(),
            temperature: self.temperature,
            top_p: self.top_p,
            seed: self.seed.map(i64::unsigned_abs),
            stop: self.stop.as_ref().map(|s| s.to_vec()).unwrap_or_default(),
        }
    }
}

fn is_identifier(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// OpenAI's error body.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// OpenAI's error object.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorDetail {
    /// Human-readable sentence.
    pub message: String,
    /// Error class, e.g. `invalid_request_error`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Offending parameter.
    pub param: Option<String>,
    /// Machine-readable code, e.g. `policy_blocked`.
    pub code: &'static str,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const LIMITS: Limits = Limits {
        max_messages: 10,
        max_choices: 4,
        max_tokens: 1000,
    };

    #[test]
    fn accepts_sdk_shapes() {
        let v = json!({
            "model": "gpt-4o-mini",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "hi"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function",
                    "function": {"name": "f", "arguments": "{\"a\":1}"}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "ok"}
            ],
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
            "stream": true, "stream_options": {"include_usage": true}, "max_tokens": 5
        });
        let r = ChatRequest::from_value(&v, LIMITS);
        assert!(r.is_ok(), "{r:?}");
    }

    #[test]
    fn rejects_unknown_fields_everywhere() {
        for (v, param) in [
            (
                json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "smuggle": "x"}),
                "smuggle",
            ),
            (
                json!({"model": "m", "messages": [{"role": "user", "content": "x", "extra": 1}]}),
                "messages[0]",
            ),
            (
                json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "video", "v": 1}]}]}),
                "messages[0]",
            ),
        ] {
            let e = ChatRequest::from_value(&v, LIMITS).err();
            assert!(e.is_some(), "{v}");
            let e = e.unwrap_or_else(|| unreachable!());
            assert!(
                e.param.as_deref().is_some_and(|p| p.starts_with(param)),
                "{e:?}"
            );
        }
    }

    #[test]
    fn errors_do_not_echo_values() {
        let v = json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "n": "123-45-6789"});
        let e = ChatRequest::from_value(&v, LIMITS)
            .err()
            .map(|e| e.message)
            .unwrap_or_default();
        assert!(!e.contains("123-45-6789") && e.contains("`n`"), "{e}");
    }

    #[test]
    fn limits_are_enforced() {
        let v = json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "n": 50});
        assert!(ChatRequest::from_value(&v, LIMITS).is_err());
        let v = json!({"model": "m", "messages": []});
        assert!(ChatRequest::from_value(&v, LIMITS).is_err());
        let v = json!({"model": "m x", "messages": [{"role": "user", "content": "x"}]});
        assert!(ChatRequest::from_value(&v, LIMITS).is_err());
    }
}
