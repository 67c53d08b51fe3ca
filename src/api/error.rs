//! The one error type at the HTTP edge, mapped in one `match` to status, OpenAI-shaped body,
//! and the audit outcome. Messages name rules, fields and remedies — never request values.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::openai::{ErrorBody, ErrorDetail, InvalidRequest};
use crate::auth::AuthError;
use crate::json::BodyError;
use crate::route::cloud::CloudError;

/// Everything that can end a request early.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Missing, malformed, unknown or revoked key.
    #[error(transparent)]
    Unauthorized(#[from] AuthError),
    /// Body over the size limit.
    #[error("request body larger than {0} bytes")]
    PayloadTooLarge(usize),
    /// The body did not arrive within the time allowed.
    #[error("request body not received within {0} s")]
    BodyTimeout(u64),
    /// Not `application/json`, or compressed.
    #[error("{0}")]
    UnsupportedMediaType(&'static str),
    /// Not acceptable JSON.
    #[error(transparent)]
    BadJson(#[from] BodyError),
    /// JSON that is not a valid request.
    #[error(transparent)]
    InvalidRequest(#[from] InvalidRequest),
    /// The policy blocked the request.
    #[error("request blocked by policy rule '{rule}': {reason}")]
    Blocked {
        /// Deciding rule id.
        rule: String,
        /// Entity types and counts, never values.
        reason: String,
    },
    /// Neither an upstream nor the local model serves the model. The name is not repeated in the
    /// message: it is client text, and messages are logged.
    #[error(
        "the requested model is not served by any configured upstream or the local model; GET /v1/models lists them"
    )]
    ModelNotFound,
    /// The local model cannot answer; nothing is sent to a cloud instead.
    #[error(
        "the local model is unavailable ({0}); this request must stay local, so it was not sent to any cloud; retry later"
    )]
    LocalUnavailable(String),
    /// All local sequences busy and the queue full.
    #[error("the local model is busy; this request must stay local; retry after {0} s")]
    LocalBusy(u32),
    /// Prompt longer than the local context.
    #[error(
        "the prompt has {prompt_tokens} tokens but the local model's context holds {context}; shorten the conversation"
    )]
    ContextLengthExceeded {
        /// Prompt tokens.
        prompt_tokens: usize,
        /// Context size.
        context: u32,
    },
    /// The local model failed while generating.
    #[error("local generation failed ({0}); retry the request")]
    LocalGeneration(String),
    /// The decision could not be recorded, so nothing was sent.
    #[error("the audit log is unavailable, so the request was not processed; retry later")]
    AuditUnavailable,
    /// The cloud upstream failed.
    #[error(transparent)]
    Upstream(#[from] CloudError),
    /// Unknown path.
    #[error("unknown endpoint; veil serves /v1/chat/completions and /v1/models")]
    NotFound,
    /// Known path, wrong method.
    #[error("method not allowed on this endpoint")]
    MethodNotAllowed,
    /// The admin API needs the admin token (an API key is not one).
    #[error(
        "the admin API needs the admin token (Authorization: Bearer <admin token>); API keys are not admin tokens"
    )]
    AdminForbidden,
    /// No admin token is configured, so the admin API is off.
    #[error("the admin API is off: set admin.token_sha256 in veil.toml (veil key hash prints it)")]
    AdminDisabled,
    /// The audit log could not be read.
    #[error("the audit log could not be read; see the veil logs")]
    AuditRead,
    /// Not built yet: a clear error, never a fake answer.
    #[error("{0} is not supported by this version of veil")]
    NotImplemented(&'static str),
    /// A bug or an impossible state; details are in the logs.
    #[error("internal error; see the veil logs for request id")]
    Internal,
}

/// Status, OpenAI error type, code, and audit outcome for an error.
pub struct Mapped {
    /// HTTP status.
    pub status: StatusCode,
    /// OpenAI `type`.
    pub kind: &'static str,
    /// OpenAI `code`, also the audit `error_code`.
    pub code: &'static str,
    /// Audit outcome.
    pub outcome: &'static str,
    /// `Retry-After` seconds or HTTP date.
    pub retry_after: Option<String>,
    /// Offending parameter.
    pub param: Option<String>,
}

impl ApiError {
    /// The one mapping from errors to status codes and codes.
    pub fn mapped(&self) -> Mapped {
        use StatusCode as S;
        let m = |status, kind, code, outcome| Mapped {
            status,
            kind,
            code,
            outcome,
            retry_after: None,
            param: None,
        };
        match self {
            Self::Unauthorized(_) => m(
                S::UNAUTHORIZED,
                "authentication_error",
                "invalid_api_key",
                "rejected",
            ),
            Self::PayloadTooLarge(_) => m(
                S::PAYLOAD_TOO_LARGE,
                "invalid_request_error",
                "payload_too_large",
                "rejected",
            ),
            Self::BodyTimeout(_) => m(
                S::REQUEST_TIMEOUT,
                "invalid_request_error",
                "body_timeout",
                "rejected",
            ),
            Self::UnsupportedMediaType(_) => m(
                S::UNSUPPORTED_MEDIA_TYPE,
                "invalid_request_error",
                "unsupported_media_type",
                "rejected",
            ),
            Self::BadJson(e) => m(
                S::BAD_REQUEST,
                "invalid_request_error",
                match e {
                    BodyError::DuplicateKey(_) => "duplicate_json_key",
                    BodyError::TooDeep(_) => "json_too_deep",
                    _ => "invalid_json",
                },
                "rejected",
            ),
            Self::InvalidRequest(e) => Mapped {
                param: e.param.clone(),
                ..m(
                    S::BAD_REQUEST,
                    "invalid_request_error",
                    "invalid_request",
                    "rejected",
                )
            },
            Self::Blocked { .. } => m(
                S::FORBIDDEN,
                "policy_violation",
                "policy_blocked",
                "blocked",
            ),
            Self::ModelNotFound => Mapped {
                param: Some("model".to_owned()),
                ..m(
                    S::NOT_FOUND,
                    "invalid_request_error",
                    "model_not_found",
                    "rejected",
                )
            },
            Self::LocalUnavailable(_) => Mapped {
                retry_after: Some("30".to_owned()),
                ..m(
                    S::SERVICE_UNAVAILABLE,
                    "server_error",
                    "local_model_unavailable",
                    "local_unavailable",
                )
            },
            Self::LocalBusy(secs) => Mapped {
                retry_after: Some(secs.to_string()),
                ..m(
                    S::SERVICE_UNAVAILABLE,
                    "server_error",
                    "local_model_busy",
                    "local_busy",
                )
            },
            Self::ContextLengthExceeded { .. } => Mapped {
                param: Some("messages".to_owned()),
                ..m(
                    S::BAD_REQUEST,
                    "invalid_request_error",
                    "context_length_exceeded",
                    "rejected",
                )
            },
            Self::LocalGeneration(_) => m(
                S::INTERNAL_SERVER_ERROR,
                "server_error",
                "local_generation_failed",
                "local_error",
            ),
            Self::AuditUnavailable => Mapped {
                retry_after: Some("5".to_owned()),
                ..m(
                    S::SERVICE_UNAVAILABLE,
                    "server_error",
                    "audit_unavailable",
                    "audit_unavailable",
                )
            },
            Self::Upstream(e) => match e {
                CloudError::Unavailable { .. } => m(
                    S::SERVICE_UNAVAILABLE,
                    "server_error",
                    "upstream_unavailable",
                    "upstream_error",
                ),
                CloudError::Timeout => m(
                    S::GATEWAY_TIMEOUT,
                    "server_error",
                    "upstream_timeout",
                    "upstream_error",
                ),
                CloudError::Connect => m(
                    S::BAD_GATEWAY,
                    "server_error",
                    "upstream_unreachable",
                    "upstream_error",
                ),
                CloudError::BadResponse(_) => m(
                    S::BAD_GATEWAY,
                    "server_error",
                    "upstream_bad_response",
                    "upstream_error",
                ),
                CloudError::Status {
                    status,
                    retry_after,
                    ..
                } => {
                    let (status, kind, code) = match *status {
                        429 => (
                            S::TOO_MANY_REQUESTS,
                            "rate_limit_error",
                            "upstream_rate_limited",
                        ),
                        400..=499 => (
                            S::from_u16(*status).unwrap_or(S::BAD_GATEWAY),
                            "invalid_request_error",
                            "upstream_rejected",
                        ),
                        _ => (S::BAD_GATEWAY, "server_error", "upstream_error"),
                    };
                    Mapped {
                        retry_after: retry_after.clone(),
                        ..m(status, kind, code, "upstream_error")
                    }
                }
            },
            Self::NotFound => m(
                S::NOT_FOUND,
                "invalid_request_error",
                "not_found",
                "rejected",
            ),
            Self::MethodNotAllowed => m(
                S::METHOD_NOT_ALLOWED,
                "invalid_request_error",
                "method_not_allowed",
                "rejected",
            ),
            Self::AdminForbidden => m(
                S::FORBIDDEN,
                "permission_error",
                "admin_forbidden",
                "rejected",
            ),
            Self::AdminDisabled => m(
                S::FORBIDDEN,
                "permission_error",
                "admin_disabled",
                "rejected",
            ),
            Self::AuditRead => m(
                S::SERVICE_UNAVAILABLE,
                "server_error",
                "audit_unavailable",
                "error",
            ),
            Self::NotImplemented(_) => m(
                S::NOT_IMPLEMENTED,
                "invalid_request_error",
                "not_implemented",
                "rejected",
            ),
            Self::Internal => m(
                S::INTERNAL_SERVER_ERROR,
                "server_error",
                "internal_error",
                "error",
            ),
        }
    }

    /// The message for the client. Upstream errors keep the upstream's own message.
    fn message(&self) -> String {
        if let Self::Upstream(CloudError::Status {
            error: Some(e),
            status,
            ..
        }) = self
            && let Some(msg) = e.get("message").and_then(Value::as_str)
        {
            return format!("upstream returned {status}: {msg}");
        }
        self.to_string()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mapped = self.mapped();
        let body = ErrorBody {
            error: ErrorDetail {
                message: self.message(),
                kind: mapped.kind,
                param: mapped.param,
                code: mapped.code,
            },
        };
        let mut resp = (mapped.status, axum::Json(body)).into_response();
        if let Some(v) = mapped
            .retry_after
            .and_then(|r| HeaderValue::from_str(&r).ok())
        {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        resp
    }
}

#[cfg(feature = "local-model")]
impl From<crate::route::local::LocalError> for ApiError {
    fn from(e: crate::route::local::LocalError) -> Self {
        use crate::route::local::LocalError as L;
        match e {
            L::Unavailable { reason } => Self::LocalUnavailable(reason),
            L::Busy { retry_after_secs } => Self::LocalBusy(retry_after_secs),
            L::ContextLengthExceeded {
                prompt_tokens,
                context,
            } => Self::ContextLengthExceeded {
                prompt_tokens,
                context,
            },
            L::InvalidRequest(message) => Self::InvalidRequest(InvalidRequest {
                message,
                param: None,
            }),
            L::Generation(m) => Self::LocalGeneration(m),
        }
    }
}
