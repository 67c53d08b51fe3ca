//! Cloud upstreams: OpenAI-compatible HTTP APIs reached with reqwest (rustls).
//!
//! Only a [`Sealed`] request — one whose decision is durable in the audit log — can be sent, and
//! its body is a [`Cleared`] value that only the decision core makes: the scanned (and possibly
//! redacted) JSON, re-serialized. Client headers are never forwarded.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use serde_json::Value;
use zeroize::Zeroizing;

use super::sse::{SseError, SseEvent, SseParser};
use crate::audit::Sealed;
use crate::config::UpstreamConfig;
use crate::decide::Cleared;
use crate::policy::Wildcard;

/// One configured upstream.
pub struct Upstream {
    /// Name recorded as the route.
    pub name: Arc<str>,
    base_url: String,
    api_key: Option<Zeroizing<String>>,
    missing_key: Option<String>,
    models: Vec<Wildcard>,
    model_names: Vec<String>,
    timeout: Duration,
    /// How long a stream may stay silent.
    pub idle_timeout: Duration,
    max_response: usize,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("name", &self.name)
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

/// A request ready to leave: the upstream and the body the policy cleared.
#[derive(Debug)]
pub struct Outbound {
    /// Where it goes.
    pub upstream: Arc<Upstream>,
    /// What is sent: only the decision core makes a [`Cleared`] body.
    pub body: Cleared,
}

/// Why the upstream did not give a usable answer.
#[derive(Debug, thiserror::Error)]
pub enum CloudError {
    /// The upstream cannot be used (e.g. its API key variable is not set).
    #[error("upstream {upstream} is not available: {reason}")]
    Unavailable {
        /// Upstream name.
        upstream: Arc<str>,
        /// What to fix.
        reason: String,
    },
    /// No answer in time.
    #[error("upstream did not answer in time")]
    Timeout,
    /// Connection, DNS or TLS failure.
    #[error("upstream unreachable")]
    Connect,
    /// The upstream answered with an error status.
    #[error("upstream returned status {status}")]
    Status {
        /// HTTP status.
        status: u16,
        /// `Retry-After` from the upstream.
        retry_after: Option<String>,
        /// The upstream's error object, if it sent OpenAI-shaped JSON.
        error: Option<Value>,
    },
    /// The answer is not what the protocol promises.
    #[error("upstream sent an invalid answer: {0}")]
    BadResponse(&'static str),
}

/// All cloud upstreams and the HTTP client.
#[derive(Debug, Clone)]
pub struct Cloud {
    client: reqwest::Client,
    upstreams: Vec<Arc<Upstream>>,
}

impl Cloud {
    /// Builds the upstreams, reading API keys through `env`.
    pub fn new(
        configs: &[UpstreamConfig],
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .use_rustls_tls()
            .connect_timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        let upstreams = configs
            .iter()
            .map(|c| {
                let api_key = c
                    .api_key_env
                    .as_deref()
                    .and_then(&env)
                    .filter(|k| !k.is_empty());
                let missing_key = match (&c.api_key_env, &api_key) {
                    (Some(var), None) => Some(format!("set the environment variable {var}")),
                    _ => None,
                };
                Arc::new(Upstream {
                    name: Arc::from(c.name.as_str()),
                    base_url: c.base_url.trim_end_matches('/').to_owned(),
                    api_key: api_key.map(Zeroizing::new),
                    missing_key,
                    models: c.models.iter().map(|m| Wildcard::new(m)).collect(),
                    model_names: c
                        .models
                        .iter()
                        .filter(|m| !m.contains('*'))
                        .cloned()
                        .collect(),
                    timeout: Duration::from_secs(c.timeout_secs),
                    idle_timeout: Duration::from_secs(c.idle_timeout_secs),
                    max_response: c.max_response_bytes,
                })
            })
            .collect();
        Ok(Self { client, upstreams })
    }

    /// The first upstream serving `model`.
    pub fn select(&self, model: &str) -> Option<Arc<Upstream>> {
        self.upstreams
            .iter()
            .find(|u| u.models.iter().any(|w| w.matches(model)))
            .cloned()
    }

    /// Model names listed explicitly (not by wildcard), with their upstream.
    pub fn models(&self) -> Vec<(String, Arc<str>)> {
        self.upstreams
            .iter()
            .flat_map(|u| u.model_names.iter().map(|m| (m.clone(), u.name.clone())))
            .collect()
    }

    fn request(&self, up: &Upstream, body: &Value) -> Result<reqwest::RequestBuilder, CloudError> {
        if let Some(reason) = &up.missing_key {
            return Err(CloudError::Unavailable {
                upstream: up.name.clone(),
                reason: reason.clone(),
            });
        }
        let mut req = self
            .client
            .post(format!("{}/chat/completions", up.base_url))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(
                serde_json::to_vec(body)
                    .map_err(|_| CloudError::BadResponse("unserializable request"))?,
            );
        if let Some(key) = &up.api_key {
            req = req.bearer_auth(key.as_str());
        }
        Ok(req)
    }

    /// Sends a non-streaming request and returns the parsed answer.
    pub async fn complete(&self, sealed: &Sealed<Outbound>) -> Result<Value, CloudError> {
        let out = sealed.get();
        let up = &out.upstream;
        let send = self.request(up, out.body.body())?.send();
        let resp = tokio::time::timeout(up.timeout, send)
            .await
            .map_err(|_| CloudError::Timeout)?
            .map_err(map_reqwest)?;
        let resp = check_status(resp).await?;
        let body = tokio::time::timeout(up.timeout, read_limited(resp, up.max_response))
            .await
            .map_err(|_| CloudError::Timeout)??;
        let value: Value = serde_json::from_slice(&body)
            .map_err(|_| CloudError::BadResponse("truncated or malformed JSON"))?;
        if value.get("error").is_some_and(|e| !e.is_null()) {
            return Err(CloudError::BadResponse(
                "error object in a successful response",
            ));
        }
        if !value.get("choices").is_some_and(Value::is_array) {
            return Err(CloudError::BadResponse("no choices in the answer"));
        }
        Ok(value)
    }

    /// Sends a streaming request; yields parsed events until the upstream ends.
    pub async fn stream(
        &self,
        sealed: &Sealed<Outbound>,
    ) -> Result<impl Stream<Item = Result<SseEvent, CloudError>> + Send + use<>, CloudError> {
        let out = sealed.get();
        let up = &out.upstream;
        let send = self.request(up, out.body.body())?.send();
        let resp = tokio::time::timeout(up.timeout, send)
            .await
            .map_err(|_| CloudError::Timeout)?
            .map_err(map_reqwest)?;
        let resp = check_status(resp).await?;
        let mut parser = SseParser::new(up.max_response.min(4 * 1024 * 1024));
        let bytes = resp.bytes_stream();
        let events = bytes
            .map(move |chunk: Result<Bytes, reqwest::Error>| match chunk {
                Ok(b) => parser.push(&b).map_err(|e| match e {
                    SseError::TooLarge(_) => CloudError::BadResponse("event too large"),
                    SseError::InvalidUtf8 => CloudError::BadResponse("event not UTF-8"),
                }),
                Err(_) => Err(CloudError::Connect),
            })
            .flat_map(|r| {
                futures::stream::iter(match r {
                    Ok(events) => events.into_iter().map(Ok).collect::<Vec<_>>(),
                    Err(e) => vec![Err(e)],
                })
            });
        Ok(events)
    }
}

fn map_reqwest(e: reqwest::Error) -> CloudError {
    if e.is_timeout() {
        CloudError::Timeout
    } else {
        CloudError::Connect
    }
}

async fn check_status(resp: reqwest::Response) -> Result<reqwest::Response, CloudError> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.len() < 64 && v.bytes().all(|b| b.is_ascii_graphic() || b == b' '))
        .map(str::to_owned);
    let body = read_limited(resp, 64 * 1024).await.ok();
    let error = body
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|v| v.get("error").cloned())
        .filter(Value::is_object);
    Err(CloudError::Status {
        status: status.as_u16(),
        retry_after,
        error,
    })
}

async fn read_limited(resp: reqwest::Response, limit: usize) -> Result<Vec<u8>, CloudError> {
    let mut out = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|_| CloudError::BadResponse("connection closed mid-answer"))?;
        if out.len() + chunk.len() > limit {
            return Err(CloudError::BadResponse(
                "answer larger than max_response_bytes",
            ));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}
