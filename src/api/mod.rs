//! The HTTP edge: routes, thin handlers, and the mapping of pipeline replies to HTTP.
//!
//! Handlers gather facts (headers, client address, body bytes within the size limit), call one
//! pipeline function, and turn its plain [`Reply`] into a response with the `x-veil-*`
//! headers. Paths are canonicalized first (repeated and trailing slashes), so no spelling of a
//! path reaches a route that skips scanning; every `/v1` request, known or not, is audited.

pub mod error;
pub mod openai;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::StreamExt;
use serde_json::json;

use crate::pipeline::{self, AppState, BodyUnread, ChatInput, Reply, ReplyBody, RequestMeta};

/// `x-veil-request-id`.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-veil-request-id");
/// `x-veil-action`.
pub const ACTION: HeaderName = HeaderName::from_static("x-veil-action");
/// `x-veil-route`.
pub const ROUTE: HeaderName = HeaderName::from_static("x-veil-route");

/// The application's routes (see [`app`] for the served service).
pub fn router(
    state: Arc<AppState>,
    metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
) -> Router {
    let metrics_route = get(move || {
        let handle = metrics.clone();
        async move {
            match handle {
                Some(h) => h.render().into_response(),
                None => StatusCode::NOT_FOUND.into_response(),
            }
        }
    });
    Router::new()
        .route(
            "/v1/chat/completions",
            post(chat).fallback(method_not_allowed),
        )
        .route("/v1/models", get(models).fallback(method_not_allowed))
        .route("/admin/audit", get(admin).fallback(method_not_allowed))
        .route(
            "/admin/audit/stats",
            get(admin).fallback(method_not_allowed),
        )
        .route(
            "/admin/audit/verify",
            get(admin).fallback(method_not_allowed),
        )
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", metrics_route)
        .fallback(not_found)
        .with_state(state)
}

/// The router behind path canonicalization. (A `Router::layer` would run after routing, too
/// late to canonicalize; this wraps the whole router.) The server puts each connection's
/// [`ConnectInfo`] in its requests' extensions.
pub fn app(
    state: Arc<AppState>,
    metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
) -> impl tower::Service<Request, Response = Response, Error = Infallible, Future: Send>
+ Clone
+ Send
+ 'static {
    use tower::Layer;
    axum::middleware::map_request(canonical_path).layer(router(state, metrics))
}

/// Collapses repeated slashes and drops a trailing slash.
async fn canonical_path(mut req: Request) -> Request {
    let path = req.uri().path();
    if path.contains("//") || (path.len() > 1 && path.ends_with('/')) {
        let mut canon = String::with_capacity(path.len());
        for part in path.split('/').filter(|p| !p.is_empty()) {
            canon.push('/');
            canon.push_str(part);
        }
        if canon.is_empty() {
            canon.push('/');
        }
        if let Some(q) = req.uri().query() {
            canon.push('?');
            canon.push_str(q);
        }
        if let Ok(uri) = canon.parse::<Uri>() {
            *req.uri_mut() = uri;
        }
    }
    req
}

fn meta(state: &AppState, addr: SocketAddr, uri: &Uri, headers: &HeaderMap) -> RequestMeta {
    let _ = state;
    RequestMeta {
        request_id: uuid::Uuid::now_v7().to_string(),
        client_addr: addr.to_string(),
        endpoint: sanitize_path(uri.path()),
        started: Instant::now(),
        authorization: headers
            .get(header::AUTHORIZATION)
            .map(|v| v.as_bytes().to_vec()),
    }
}

/// Paths are client-controlled: keep them printable and short for the audit log.
fn sanitize_path(path: &str) -> String {
    path.chars()
        .take(128)
        .map(|c| if c.is_ascii_graphic() { c } else { '?' })
        .collect()
}

async fn chat(
    State(state): State<Arc<AppState>>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    req: Request,
) -> Response {
    let (parts, body) = req.into_parts();
    let meta = meta(&state, addr, &parts.uri, &parts.headers);
    let header_str = |name| {
        parts
            .headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
            .map(str::to_owned)
    };
    let limit = state.server.max_body_bytes;
    let secs = state.server.body_timeout_secs;
    let snap = state.snapshot.load_full();
    let auth = snap.keys.authenticate(meta.authorization.as_deref());
    // Only a caller with a key can make veil hold a body: a refused key's body is not read
    // (the pipeline refuses the key before it would look at the body).
    // A client trickling its body would otherwise hold the connection and the bytes so far.
    let body = if auth.is_err() {
        Ok(bytes::Bytes::new())
    } else {
        match tokio::time::timeout(
            std::time::Duration::from_secs(secs),
            axum::body::to_bytes(body, limit),
        )
        .await
        {
            Ok(Ok(bytes)) => Ok(bytes),
            Ok(Err(_)) => Err(BodyUnread::TooLarge(limit)),
            Err(_) => Err(BodyUnread::TooSlow(secs)),
        }
    };
    let input = ChatInput {
        meta,
        snap,
        auth,
        content_type: header_str(header::CONTENT_TYPE),
        content_encoding: header_str(header::CONTENT_ENCODING),
        body,
    };
    respond(pipeline::chat(state, input).await)
}

async fn models(
    State(state): State<Arc<AppState>>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let meta = meta(&state, addr, &uri, &headers);
    respond(pipeline::models(state, meta).await)
}

/// Filters of the admin audit endpoints (`?tenant=…&action=…`), as `veil audit query` has them.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct AdminParams {
    from: Option<String>,
    to: Option<String>,
    tenant: Option<String>,
    key: Option<String>,
    action: Option<String>,
    route: Option<String>,
    rule: Option<String>,
    entity: Option<String>,
    status: Option<i64>,
    outcome: Option<String>,
    request_id: Option<String>,
    limit: Option<usize>,
    from_seq: Option<i64>,
    to_seq: Option<i64>,
}

impl AdminParams {
    fn query(self) -> crate::audit::Query {
        crate::audit::Query {
            from: self.from,
            to: self.to,
            tenant: self.tenant,
            key_id: self.key,
            action: self.action,
            route: self.route,
            rule: self.rule,
            entity: self.entity,
            status: self.status,
            outcome: self.outcome,
            request_id: self.request_id,
            hmac: None,
            // A page at a time over HTTP.
            limit: Some(self.limit.unwrap_or(1000).min(10_000)),
        }
    }
}

/// `GET /admin/audit[/stats|/verify]`: the filters from the query string, the read from the
/// path.
async fn admin(
    State(state): State<Arc<AppState>>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let meta = meta(&state, addr, &uri, &headers);
    let params = match admin_params(uri.query().unwrap_or_default()) {
        Ok(p) => p,
        Err(message) => {
            let error = error::ApiError::InvalidRequest(openai::InvalidRequest {
                message,
                param: None,
            });
            return respond(pipeline::reject(state, meta, error).await);
        }
    };
    let read = match uri.path() {
        "/admin/audit/stats" => {
            let mut q = params.query();
            q.limit = None;
            pipeline::AdminRead::Stats(q)
        }
        "/admin/audit/verify" => pipeline::AdminRead::Verify {
            from: params.from_seq,
            to: params.to_seq,
        },
        _ => pipeline::AdminRead::Requests(params.query()),
    };
    respond(pipeline::admin(state, meta, read).await)
}

/// Parses query parameters strictly (unknown names refused, never values echoed).
fn admin_params(query: &str) -> Result<AdminParams, String> {
    axum::extract::Query::<AdminParams>::try_from_uri(
        &format!("/?{query}")
            .parse::<Uri>()
            .map_err(|_| "malformed query string".to_owned())?,
    )
    .map(|q| q.0)
    .map_err(|_| {
        "unknown or malformed parameter; use from, to, tenant, key, action, route, rule, entity, status, outcome, request_id, limit, from_seq, to_seq".to_owned()
    })
}

async fn not_found(
    State(state): State<Arc<AppState>>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let meta = meta(&state, addr, &uri, &headers);
    respond(pipeline::reject(state, meta, error::ApiError::NotFound).await)
}

async fn method_not_allowed(
    State(state): State<Arc<AppState>>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let _ = method;
    let meta = meta(&state, addr, &uri, &headers);
    respond(pipeline::reject(state, meta, error::ApiError::MethodNotAllowed).await)
}

async fn healthz() -> Response {
    Json(json!({"status": "ok"})).into_response()
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let report = pipeline::readiness(&state).await;
    let status = if report.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(report.body)).into_response()
}

/// Turns a pipeline reply into HTTP.
fn respond(reply: Reply) -> Response {
    let mut resp = match reply.body {
        ReplyBody::Json(v) => Json(v).into_response(),
        ReplyBody::Error(e) => e.into_response(),
        ReplyBody::Stream(rx) => {
            let events = tokio_stream::wrappers::ReceiverStream::new(rx)
                .map(|data| Ok::<_, Infallible>(Event::default().data(data)));
            let mut r = Sse::new(events).into_response();
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            r
        }
    };
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&reply.request_id) {
        h.insert(REQUEST_ID, v);
    }
    if let Ok(v) = HeaderValue::from_str(&reply.action) {
        h.insert(ACTION, v);
    }
    if let Some(v) = reply.route.and_then(|r| HeaderValue::from_str(&r).ok()) {
        h.insert(ROUTE, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;

    #[tokio::test]
    async fn canonicalizes_path_variants() {
        for (raw, want) in [
            ("//v1/chat/completions", "/v1/chat/completions"),
            ("/v1//chat/completions/", "/v1/chat/completions"),
            ("/v1/models/?x=1", "/v1/models?x=1"),
            ("/v1%2Fchat/completions", "/v1%2Fchat/completions"),
            ("/", "/"),
        ] {
            let req = Request::builder()
                .uri(raw)
                .body(Body::empty())
                .unwrap_or_else(|e| panic!("{e}"));
            let req = canonical_path(req).await;
            assert_eq!(req.uri().to_string(), want);
        }
    }
}
