//! The floor of any proxy hop on this machine, for `scripts/bench_proxy.py --setups bare`: an
//! HTTP server that forwards every `POST /v1/chat/completions` body to the upstream and returns
//! its answer, on the same stack veil serves with (tokio's default runtime, axum, reqwest with
//! rustls) and doing nothing else — no parsing, detection, policy or audit. What veil costs
//! beyond this is veil's work; what this costs beyond a direct request is the extra hop.
//!
//! usage: cargo run --release --example bare_proxy -- LISTEN UPSTREAM_URL

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;

async fn forward(
    State((client, upstream)): State<(reqwest::Client, String)>,
    body: Bytes,
) -> Response {
    let answer = client
        .post(&upstream)
        .header(header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await;
    let answer = match answer {
        Ok(a) => a.bytes().await,
        Err(e) => Err(e),
    };
    match answer {
        Ok(bytes) => ([(header::CONTENT_TYPE, "application/json")], bytes).into_response(),
        Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    }
}

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:18082".to_owned());
    let upstream = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:18081/v1/chat/completions".to_owned());
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async move {
            let client = reqwest::Client::builder()
                .use_rustls_tls()
                .build()
                .map_err(std::io::Error::other)?;
            let listener = tokio::net::TcpListener::bind(&listen).await?;
            let app = Router::new()
                .route("/v1/chat/completions", post(forward))
                .with_state((client, upstream));
            axum::serve(listener, app).await
        })
}
