//! A minimal OpenAI-compatible upstream for `scripts/bench_proxy.py`: answers every
//! `POST /v1/chat/completions` with the same small completion, as fast as it can, so that what a
//! load test through veil measures beyond it is veil.
//!
//! usage: cargo run --release --example mock_upstream -- 127.0.0.1:18081

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::post;

const ANSWER: &str = r#"{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"First-line treatment depends on severity and local resistance patterns."},"finish_reason":"stop"}],"usage":{"prompt_tokens":250,"completion_tokens":12,"total_tokens":262}}"#;

async fn chat(_body: axum::body::Bytes) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], ANSWER)
}

fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:18081".to_owned());
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?
        .block_on(async move {
            let listener = tokio::net::TcpListener::bind(&addr).await?;
            let app = Router::new().route("/v1/chat/completions", post(chat));
            axum::serve(listener, app).await
        })
}
