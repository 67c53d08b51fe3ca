//! The harness: a counting mock upstream and a veil instance configured to use it.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

use veil::audit::StoredRow;
use veil::config::{Config, KeyConfig, UpstreamConfig};
use veil::server::Running;

/// API keys the harness configures, by policy.
pub const KEY_DEFAULT: &str = "test-key-default";
pub const KEY_HIPAA: &str = "test-key-hipaa";
pub const KEY_PCI: &str = "test-key-pci";
pub const KEY_REVOKED: &str = "test-key-revoked";

/// What the mock upstream does with the next requests.
#[derive(Debug, Clone)]
pub enum Mode {
    /// Answers "You said: <last user text>" (streamed in 3-character chunks when asked).
    Echo,
    /// Answers with this status and an OpenAI error body (and Retry-After for 429).
    Status(u16),
    /// Answers 200 with a body that is not JSON.
    Malformed,
    /// Streams two chunks, then stays silent forever.
    StallMidStream,
    /// Answers a streaming request with a chunk that is not JSON.
    MalformedStream,
    /// Waits this many milliseconds, then answers like `Echo`.
    Delay(u64),
}

#[derive(Clone)]
pub struct Mock {
    pub addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    bodies: Arc<Mutex<Vec<String>>>,
    headers: Arc<Mutex<Vec<HeaderMap>>>,
    mode: Arc<Mutex<Mode>>,
}

impl Mock {
    pub async fn start() -> Self {
        let mock = Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            hits: Arc::default(),
            bodies: Arc::default(),
            headers: Arc::default(),
            mode: Arc::new(Mutex::new(Mode::Echo)),
        };
        let app = Router::new()
            .route("/v1/chat/completions", post(mock_chat))
            .with_state(mock.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind mock");
        let addr = listener.local_addr().expect("mock addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, ..mock }
    }

    /// Number of requests the mock received.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// Raw bodies received, in order.
    pub fn bodies(&self) -> Vec<String> {
        self.bodies.lock().expect("lock").clone()
    }

    /// Headers received, in order.
    pub fn headers(&self) -> Vec<HeaderMap> {
        self.headers.lock().expect("lock").clone()
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.mode.lock().expect("lock") = mode;
    }
}

fn last_user_text(req: &Value) -> String {
    let msgs = req["messages"].as_array().cloned().unwrap_or_default();
    let last = msgs
        .iter()
        .rev()
        .find(|m| m["role"] == "user")
        .cloned()
        .unwrap_or(Value::Null);
    match &last["content"] {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

async fn mock_chat(State(mock): State<Mock>, headers: HeaderMap, body: String) -> Response {
    mock.hits.fetch_add(1, Ordering::SeqCst);
    mock.bodies.lock().expect("lock").push(body.clone());
    mock.headers.lock().expect("lock").push(headers);
    let mode = mock.mode.lock().expect("lock").clone();
    if let Mode::Delay(ms) = mode {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let req: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let reply = format!("You said: {}", last_user_text(&req));
    let model = req["model"].as_str().unwrap_or("m").to_owned();
    let with_tools = req.get("tools").is_some();
    match mode {
        Mode::Status(code) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut r = (
                status,
                axum::Json(json!({"error": {"message": "mock failure", "type": "server_error", "code": "mock"}})),
            )
                .into_response();
            if code == 429 {
                r.headers_mut()
                    .insert("retry-after", "7".parse().expect("header"));
            }
            return r;
        }
        Mode::Malformed => return (StatusCode::OK, "{\"choices\": [").into_response(),
        _ => {}
    }
    if req["stream"] == true {
        let include_usage = req["stream_options"]["include_usage"] == true;
        let chunk = |delta: Value, finish: Value| {
            json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1, "model": model,
                   "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
            .to_string()
        };
        let mut events = vec![chunk(
            json!({"role": "assistant", "content": ""}),
            Value::Null,
        )];
        if with_tools {
            let args = json!({"echo": reply}).to_string();
            let chars: Vec<char> = args.chars().collect();
            events.push(chunk(
                json!({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                "function": {"name": "echo", "arguments": ""}}]}),
                Value::Null,
            ));
            for piece in chars.chunks(3) {
                let piece: String = piece.iter().collect();
                events.push(chunk(
                    json!({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}),
                    Value::Null,
                ));
            }
            events.push(chunk(json!({}), json!("tool_calls")));
        } else {
            let chars: Vec<char> = reply.chars().collect();
            for piece in chars.chunks(3) {
                let piece: String = piece.iter().collect();
                events.push(chunk(json!({"content": piece}), Value::Null));
            }
            events.push(chunk(json!({}), json!("stop")));
        }
        if include_usage {
            events.push(
                json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1, "model": model,
                       "choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 22, "total_tokens": 33}})
                .to_string(),
            );
        }
        let stall = matches!(mode, Mode::StallMidStream);
        let malformed = matches!(mode, Mode::MalformedStream);
        let stream = async_stream(events, stall, malformed);
        return Response::builder()
            .header("content-type", "text/event-stream")
            .body(axum::body::Body::from_stream(stream))
            .expect("response");
    }
    let message = if with_tools {
        json!({"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
            "function": {"name": "echo", "arguments": json!({"echo": reply}).to_string()}}]})
    } else {
        json!({"role": "assistant", "content": reply})
    };
    axum::Json(json!({
        "id": "chatcmpl-mock", "object": "chat.completion", "created": 1, "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": if with_tools { "tool_calls" } else { "stop" }}],
        "usage": {"prompt_tokens": 11, "completion_tokens": 22, "total_tokens": 33}
    }))
    .into_response()
}

fn async_stream(
    events: Vec<String>,
    stall: bool,
    malformed: bool,
) -> impl futures::Stream<Item = Result<bytes::Bytes, std::io::Error>> {
    let mut frames: Vec<String> = events
        .into_iter()
        .map(|e| format!("data: {e}\n\n"))
        .collect();
    if malformed {
        frames.truncate(2);
        frames.push("data: {not json\n\n".to_owned());
    }
    if stall {
        frames.truncate(2);
    } else {
        frames.push("data: [DONE]\n\n".to_owned());
    }
    let s = futures::stream::iter(frames.into_iter().map(|f| Ok(bytes::Bytes::from(f))));
    futures::StreamExt::chain(
        s,
        futures::stream::once(async move {
            if stall {
                futures::future::pending::<()>().await;
            }
            Ok(bytes::Bytes::new())
        }),
    )
}

/// A veil instance in front of a mock.
pub struct Veil {
    pub addr: SocketAddr,
    pub mock: Mock,
    pub db: PathBuf,
    pub dir: tempfile::TempDir,
    pub running: Option<Running>,
    pub client: reqwest::Client,
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn key(id: &str, key: &str, policy: &str, revoked: bool) -> KeyConfig {
    KeyConfig {
        id: id.to_owned(),
        sha256: veil::auth::hash_key(key),
        tenant: "test".to_owned(),
        policy: policy.to_owned(),
        revoked,
    }
}

/// A config pointing at the mock, with the shipped policies and a temporary database.
pub fn config(mock: &Mock, dir: &Path) -> Config {
    let mut c = Config::parse(Path::new("test.toml"), "").expect("empty config");
    c.server.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    c.server.max_body_bytes = 64 * 1024;
    c.audit.url = format!("sqlite://{}", dir.join("audit.db").display());
    c.policies.dir = repo().join("policies");
    // Pipeline tests use the pattern tier only (fast, deterministic); classifier tests opt in
    // with `with_classifier`.
    c.classifier.dir = PathBuf::new();
    c.upstreams = vec![UpstreamConfig {
        name: "mock".to_owned(),
        base_url: format!("http://{}/v1", mock.addr),
        api_key_env: Some("MOCK_UPSTREAM_KEY".to_owned()),
        models: vec!["gpt-*".to_owned(), "test-model".to_owned()],
        timeout_secs: 10,
        idle_timeout_secs: 2,
        max_response_bytes: 1 << 20,
        baa: false,
    }];
    c.keys = vec![
        key("k-default", KEY_DEFAULT, "default", false),
        key("k-hipaa", KEY_HIPAA, "hipaa", false),
        key("k-pci", KEY_PCI, "pci", false),
        key("k-revoked", KEY_REVOKED, "default", true),
    ];
    c
}

pub fn env(k: &str) -> Option<String> {
    match k {
        "MOCK_UPSTREAM_KEY" => Some("upstream-secret".to_owned()),
        "VEIL_HMAC_KEY" => Some("test-hmac-key".to_owned()),
        _ => None,
    }
}

impl Veil {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> Self {
        let mock = Mock::start().await;
        let dir = tempfile::tempdir().expect("tempdir");
        let mut c = config(&mock, dir.path());
        tweak(&mut c);
        let running = veil::server::start(c, env).await.expect("veil starts");
        Self {
            addr: running.addr,
            mock,
            db: dir.path().join("audit.db"),
            dir,
            running: Some(running),
            client: reqwest::Client::new(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub async fn chat(&self, key: &str, body: Value) -> reqwest::Response {
        self.client
            .post(self.url("/v1/chat/completions"))
            .bearer_auth(key)
            .json(&body)
            .send()
            .await
            .expect("request")
    }

    /// Sends a chat request on a task of its own (for requests that must wait on something).
    pub fn spawn_chat(
        &self,
        key: &'static str,
        body: Value,
    ) -> tokio::task::JoinHandle<reqwest::Result<reqwest::Response>> {
        let request = self
            .client
            .post(self.url("/v1/chat/completions"))
            .bearer_auth(key)
            .json(&body);
        tokio::spawn(request.send())
    }

    pub async fn rows(&self) -> Vec<StoredRow> {
        let state = &self.running.as_ref().expect("running").state;
        state.audit.rows().await.expect("audit rows")
    }

    /// Waits until the audit log holds `n` rows (outcomes of streams are written at their end).
    pub async fn wait_rows(&self, n: usize) -> Vec<StoredRow> {
        for _ in 0..200 {
            let rows = self.rows().await;
            if rows.len() >= n {
                return rows;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        self.rows().await
    }

    /// Every byte of the audit database, its WAL and shared memory.
    pub fn db_bytes(&self) -> Vec<u8> {
        let mut all = Vec::new();
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let p = PathBuf::from(format!("{}{suffix}", self.db.display()));
            if let Ok(b) = std::fs::read(&p) {
                all.extend(b);
            }
        }
        all
    }

    /// Waits up to 10 s for `/readyz` to answer 200; whether it did.
    pub async fn wait_ready(&self) -> bool {
        for _ in 0..100 {
            if self
                .client
                .get(self.url("/readyz"))
                .send()
                .await
                .unwrap()
                .status()
                == 200
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }

    pub async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
    }
}

pub fn user(text: &str) -> Value {
    json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]})
}

pub fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// Reads an SSE response into its data payloads.
pub async fn sse_data(resp: reqwest::Response) -> Vec<String> {
    let text = resp.text().await.expect("body");
    text.split("\n\n")
        .filter_map(|e| {
            let data: Vec<&str> = e
                .lines()
                .filter_map(|l| l.strip_prefix("data: ").or(l.strip_prefix("data:")))
                .collect();
            (!data.is_empty()).then(|| data.join("\n"))
        })
        .collect()
}

/// The concatenated `delta.content` of SSE chunks.
pub fn streamed_text(events: &[String]) -> String {
    events
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect()
}

/// The classifier under test: `VEIL_CLASSIFIER_DIR` (a candidate model) or the shipped one.
pub fn classifier_dir() -> PathBuf {
    std::env::var("VEIL_CLASSIFIER_DIR")
        .ok()
        .filter(|d| !d.is_empty())
        .map_or_else(|| repo().join("models/classifier"), PathBuf::from)
}

/// Enables the classifier (ONNX Runtime from `VEIL_ORT_LIB` or `.cache/onnxruntime`).
pub fn with_classifier(c: &mut Config) {
    c.classifier.dir = classifier_dir();
    c.classifier.ort_library = std::env::var("VEIL_ORT_LIB")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo().join(".cache/onnxruntime/libonnxruntime.so.1.31.1"));
}

/// The GGUF model the local tests use: `VEIL_TEST_MODEL` or the one `make` fetches.
pub fn local_model_path() -> PathBuf {
    let path = std::env::var("VEIL_TEST_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo().join("models/SmolLM2-135M-Instruct.Q4_1.gguf"));
    assert!(
        path.exists(),
        "local model {} not found: run `make assets` (or set VEIL_TEST_MODEL)",
        path.display()
    );
    path
}

/// Enables the local model (SmolLM2 by default). One llama.cpp thread: tests run side by side
/// on a small machine, and llama.cpp's spinning threads collapse when they share cores.
pub fn with_local_model(c: &mut Config) {
    c.local.model = local_model_path();
    c.local.context_size = 1024;
    c.local.parallel = 2;
    c.local.queue = 4;
    c.local.threads = 1;
}

/// Local-model tests hold this lock so that only one engine generates at a time.
pub async fn local_lock() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

impl Veil {
    /// The `/readyz` body.
    pub async fn readyz(&self) -> serde_json::Value {
        self.client
            .get(self.url("/readyz"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Waits until the local model is ready or failed.
    pub async fn local_ready(&self) -> veil::route::local::LocalStatus {
        let state = &self.running.as_ref().expect("running").state;
        tokio::time::timeout(Duration::from_secs(120), state.local.ready())
            .await
            .expect("local model loads in time")
    }

    /// Prompt tokens the engine counts for a request.
    pub fn local_prompt_tokens(&self, req: &veil::api::openai::ChatRequest) -> usize {
        let state = &self.running.as_ref().expect("running").state;
        let engine = state.local.engine().expect("engine");
        engine
            .prompt_tokens(&req.local_request())
            .expect("prompt tokens")
    }

    /// Engine counters.
    pub fn local_stats(&self) -> veil::route::local::engine::LocalStats {
        let state = &self.running.as_ref().expect("running").state;
        state.local.engine().expect("engine").stats()
    }
}
