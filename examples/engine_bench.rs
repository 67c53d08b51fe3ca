//! Benchmark of the local model: veil's HTTP path, the engine called directly, and a minimal
//! llama-cpp-2 loop, on the same model.
//!
//! `cargo run --release --example engine_bench [-- ROUNDS]`
//!
//! Reports, per side, the median over ROUNDS (default 5) runs of: prefill tokens/s (long
//! prompt, one completion token), time to first token, and decode tokens/s (greedy, a fixed
//! number of tokens), and for the engine and HTTP sides the median TTFT of a two-token prompt
//! (the path's own overhead, without prefill noise). Each measurement runs in a fresh child process (llama.cpp allows one
//! backend per process), rotating the order of the sides so background load hits all alike.
//!
//! The `http` side starts veil in process on a loopback port, with a policy that keeps every
//! request local and the shipped classifier when `VEIL_ORT_LIB` is set, and streams the same
//! requests through `POST /v1/chat/completions`: its TTFT includes authentication, parsing,
//! detection (reported separately from the audit log's `scan_ms`), the durable audit write and
//! SSE framing.
//! The model comes from `VEIL_TEST_MODEL` (default: SmolLM2-135M-Instruct.Q4_1); threads from
//! `BENCH_THREADS` (default 2); the audit database goes to a temporary directory, or to
//! `BENCH_AUDIT_DIR`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::num::NonZeroU32;
use std::process::Command;
use std::time::{Duration, Instant};

use futures::StreamExt;
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::{LlamaChatMessage, LlamaModel};
use llama_cpp_2::sampling::LlamaSampler;
use veil::route::local::engine::{
    ChatTurn, GenEvent, GenerateRequest, LocalConfig, LocalEngine, LocalStatus,
};

/// The model `make assets` fetches into the repository.
const DEFAULT_MODEL: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/models/SmolLM2-135M-Instruct.Q4_1.gguf"
);
/// llama.cpp threads; `BENCH_THREADS` overrides (default 2, the machine's core count).
fn threads() -> i32 {
    std::env::var("BENCH_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2)
}
const CONTEXT: u32 = 2048;
const BATCH: u32 = 512;
/// Decode length measured (the engine stops earlier only at end-of-generation, which the
/// chosen prompt does not reach within this many tokens; the bench checks).
const DECODE_TOKENS: u32 = 200;
/// Short-prompt requests per child for the overhead measurement.
const SHORT_RUNS: usize = 15;

fn model_path() -> String {
    std::env::var("VEIL_TEST_MODEL").unwrap_or_else(|_| DEFAULT_MODEL.into())
}

fn prefill_question() -> String {
    let para = "Privacy engineering is the discipline of building systems that respect the \
                people whose data they process, by design and by default. ";
    format!("{}\nSummarise the text above.", para.repeat(16))
}

const DECODE_QUESTION: &str = "Write a 1000-word essay about the history of Rome.";

/// One measurement, printed by a child as `name value` lines.
#[derive(Debug, Default, Clone, Copy)]
struct Sample {
    prefill_tokens: f64,
    prefill_secs: f64,
    ttft_secs: f64,
    decode_tokens: f64,
    decode_secs: f64,
    /// Median TTFT of a two-token prompt ("Hi", one completion token): prefill is a few ms,
    /// so what remains is the path's own overhead.
    short_ttft_secs: f64,
}

impl Sample {
    fn print(&self) {
        println!("prefill_tokens {}", self.prefill_tokens);
        println!("prefill_secs {}", self.prefill_secs);
        println!("ttft_secs {}", self.ttft_secs);
        println!("decode_tokens {}", self.decode_tokens);
        println!("decode_secs {}", self.decode_secs);
        println!("short_ttft_secs {}", self.short_ttft_secs);
    }

    fn parse(out: &str) -> Sample {
        let mut s = Sample::default();
        for line in out.lines() {
            let mut it = line.split_whitespace();
            let (Some(k), Some(v)) = (it.next(), it.next()) else {
                continue;
            };
            let Ok(v) = v.parse::<f64>() else { continue };
            match k {
                "prefill_tokens" => s.prefill_tokens = v,
                "prefill_secs" => s.prefill_secs = v,
                "ttft_secs" => s.ttft_secs = v,
                "decode_tokens" => s.decode_tokens = v,
                "decode_secs" => s.decode_secs = v,
                "short_ttft_secs" => s.short_ttft_secs = v,
                _ => {}
            }
        }
        s
    }
}

fn request(question: &str, max_tokens: u32) -> GenerateRequest {
    GenerateRequest {
        messages: vec![ChatTurn {
            role: "user".into(),
            content: question.into(),
        }],
        max_tokens: Some(max_tokens),
        temperature: Some(0.0),
        ..GenerateRequest::default()
    }
}

/// Child: measure through `LocalEngine`.
async fn engine_sample() -> Sample {
    let engine = LocalEngine::start(LocalConfig {
        context_size: CONTEXT,
        threads: threads(),
        batch_size: BATCH,
        parallel: 1,
        queue: 0,
        queue_timeout: Duration::from_secs(60),
        ..LocalConfig::new(model_path())
    });
    assert_eq!(engine.ready().await, LocalStatus::Ready);
    // Warm-up (page in the mapped weights).
    let mut g = engine.generate(request("Hi", 4)).await.unwrap();
    while g.next().await.is_some() {}

    // Prefill + TTFT: long prompt, one completion token. The first event arrives when the
    // first token was sampled.
    let req = request(&prefill_question(), 1);
    let t0 = Instant::now();
    let mut g = engine.generate(req).await.unwrap();
    let prompt_tokens = g.prompt_tokens();
    let _first = g.next().await;
    let ttft = t0.elapsed().as_secs_f64();
    while g.next().await.is_some() {}

    let mut short = Vec::new();
    for _ in 0..SHORT_RUNS {
        let t0 = Instant::now();
        let mut g = engine.generate(request("Hi", 1)).await.unwrap();
        let _first = g.next().await;
        short.push(t0.elapsed().as_secs_f64());
        while g.next().await.is_some() {}
    }

    // Decode: time from the first token to the last.
    let mut g = engine
        .generate(request(DECODE_QUESTION, DECODE_TOKENS))
        .await
        .unwrap();
    let mut first: Option<Instant> = None;
    let mut completion = 0;
    while let Some(event) = g.next().await {
        match event {
            GenEvent::Delta(_) => {
                first.get_or_insert_with(Instant::now);
            }
            GenEvent::Done(usage, _) => completion = usage.completion_tokens,
            GenEvent::Failed(err) => panic!("{err}"),
        }
    }
    let decode_secs = first.unwrap().elapsed().as_secs_f64();
    assert_eq!(completion, DECODE_TOKENS, "the decode prompt ended early");
    Sample {
        prefill_tokens: f64::from(prompt_tokens),
        // The engine does not expose prefill alone; TTFT is its upper bound.
        prefill_secs: ttft,
        short_ttft_secs: median(short),
        ttft_secs: ttft,
        decode_tokens: f64::from(completion - 1),
        decode_secs,
    }
}

/// Child: the same work as a minimal direct llama-cpp-2 loop.
fn raw_sample() -> Sample {
    let mut backend = LlamaBackend::init().unwrap();
    backend.void_logs();
    let model =
        LlamaModel::load_from_file(&backend, model_path(), &LlamaModelParams::default()).unwrap();
    let template = model.chat_template(None).unwrap();
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(CONTEXT))
        .with_n_batch(BATCH)
        .with_n_threads(threads())
        .with_n_threads_batch(threads());
    let mut ctx = model.new_context(&backend, params).unwrap();
    let mut batch = LlamaBatch::new(BATCH as usize, 1);
    let vocab = model.vocab();

    // Renders, tokenizes, prefills and greedily samples up to `n` tokens; returns
    // (prompt tokens, prefill secs, ttft secs, decode secs for tokens 2..=n, tokens sampled).
    let mut generate = |question: &str, n: u32| {
        let t0 = Instant::now();
        let chat = [LlamaChatMessage::new("user".into(), question.into()).unwrap()];
        let rendered = model.apply_chat_template(&template, &chat, true).unwrap();
        let tokens = vocab.tokenize(rendered.as_bytes(), true, true);
        ctx.clear_kv_cache();
        batch.clear();
        batch.add_sequence(&tokens, 0, false).unwrap();
        let t_prefill = Instant::now();
        ctx.decode(&mut batch).unwrap();
        let mut sampler = LlamaSampler::greedy();
        let mut token = sampler.sample(&ctx, batch.n_tokens() - 1);
        let _ = vocab.token_to_piece(token, false, None);
        let prefill = t_prefill.elapsed().as_secs_f64();
        let ttft = t0.elapsed().as_secs_f64();
        let t_decode = Instant::now();
        let mut pos = tokens.len() as i32;
        let mut sampled = 1;
        while sampled < n && !vocab.is_eog(token) {
            batch.clear();
            batch.add(token, pos, &[0], true).unwrap();
            pos += 1;
            ctx.decode(&mut batch).unwrap();
            token = sampler.sample(&ctx, 0);
            let _ = vocab.token_to_piece(token, false, None);
            sampled += 1;
        }
        (
            tokens.len(),
            prefill,
            ttft,
            t_decode.elapsed().as_secs_f64(),
            sampled,
        )
    };
    let _ = generate("Hi", 4);
    let (prompt_tokens, prefill, ttft, _, _) = generate(&prefill_question(), 1);
    let (_, _, _, decode_secs, sampled) = generate(DECODE_QUESTION, DECODE_TOKENS);
    assert_eq!(sampled, DECODE_TOKENS, "the decode prompt ended early");
    Sample {
        prefill_tokens: prompt_tokens as f64,
        prefill_secs: prefill,
        ttft_secs: ttft,
        decode_tokens: f64::from(sampled - 1),
        decode_secs,
        short_ttft_secs: 0.0,
    }
}

/// Child: the same work through veil's HTTP path.
async fn http_sample() -> Sample {
    use serde_json::{Value, json};
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    std::fs::write(
        policies.join("bench.toml"),
        "[[rules]]\nid = \"bench.all.local\"\naction = \"local\"\n",
    )
    .unwrap();
    let mut config = veil::config::Config::parse(std::path::Path::new("bench.toml"), "").unwrap();
    config.server.listen = "127.0.0.1:0".parse().unwrap();
    // `BENCH_AUDIT_DIR` (e.g. /dev/shm) separates the cost of the durable audit write.
    let audit_dir =
        std::env::var("BENCH_AUDIT_DIR").map_or_else(|_| dir.path().to_owned(), Into::into);
    let audit_db = audit_dir.join(format!("bench-audit-{}.db", std::process::id()));
    config.audit.url = format!("sqlite://{}", audit_db.display());
    config.policies.dir = policies;
    config.local.model = model_path().into();
    config.local.context_size = CONTEXT;
    config.local.batch_size = BATCH;
    config.local.threads = threads();
    config.local.parallel = 1;
    config.keys = vec![veil::config::KeyConfig {
        id: "bench".into(),
        sha256: veil::auth::hash_key("bench-key"),
        tenant: "bench".into(),
        policy: "bench".into(),
        revoked: false,
    }];
    match std::env::var("VEIL_ORT_LIB") {
        Ok(lib) => {
            config.classifier.dir =
                concat!(env!("CARGO_MANIFEST_DIR"), "/models/classifier").into();
            config.classifier.ort_library = lib.into();
        }
        Err(_) => config.classifier.dir = std::path::PathBuf::new(),
    }
    let running = veil::server::start(config, |_| None).await.unwrap();
    assert_eq!(
        running.state.local.ready().await,
        veil::route::local::LocalStatus::Ready
    );
    let url = format!("http://{}/v1/chat/completions", running.addr);
    let client = reqwest::Client::new();
    // Streams one request; returns (prompt tokens, completion tokens, ttft, decode secs).
    let run = |question: String, n: u32| {
        let client = client.clone();
        let url = url.clone();
        async move {
            let body = json!({"model": "local", "stream": true, "max_tokens": n, "temperature": 0,
                "stream_options": {"include_usage": true},
                "messages": [{"role": "user", "content": question}]});
            let t0 = Instant::now();
            let resp = client
                .post(&url)
                .bearer_auth("bench-key")
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200);
            let mut stream = resp.bytes_stream();
            let (mut first, mut last) = (None::<Instant>, None::<Instant>);
            let mut usage = (0u64, 0u64);
            let mut buf = String::new();
            while let Some(chunk) = stream.next().await {
                buf.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
                while let Some(end) = buf.find("\n\n") {
                    let event: String = buf.drain(..end + 2).collect();
                    let Some(data) = event.trim().strip_prefix("data: ") else {
                        continue;
                    };
                    let Ok(v) = serde_json::from_str::<Value>(data) else {
                        continue;
                    };
                    if v["choices"][0]["delta"]["content"]
                        .as_str()
                        .is_some_and(|c| !c.is_empty())
                    {
                        let now = Instant::now();
                        first.get_or_insert(now);
                        last = Some(now);
                    }
                    if let Some(u) = v["usage"].as_object() {
                        usage = (
                            u["prompt_tokens"].as_u64().unwrap(),
                            u["completion_tokens"].as_u64().unwrap(),
                        );
                    }
                }
            }
            let first = first.unwrap();
            let ttft = (first - t0).as_secs_f64();
            let decode = (last.unwrap() - first).as_secs_f64();
            (usage.0, usage.1, ttft, decode)
        }
    };
    let _ = run("Hi".into(), 4).await;
    let (prompt_tokens, _, ttft, _) = run(prefill_question(), 1).await;
    let mut short = Vec::new();
    for _ in 0..SHORT_RUNS {
        short.push(run("Hi".into(), 1).await.2);
    }
    let (_, completion, _, decode_secs) = run(DECODE_QUESTION.into(), DECODE_TOKENS).await;
    assert_eq!(
        completion,
        u64::from(DECODE_TOKENS),
        "the decode prompt ended early"
    );
    let rows = running.state.audit.rows().await.unwrap();
    let scans: Vec<f64> = rows
        .iter()
        .filter(|r| r.kind == "decision")
        .filter_map(|r| serde_json::from_str::<Value>(&r.body).ok()?["scan_ms"].as_f64())
        .collect();
    println!("scan_ms {}", scans.get(1).copied().unwrap_or_default());
    // Decision rows in order: warm-up, long prompt, the short prompts, the decode prompt.
    println!(
        "short_scan_ms {}",
        median(scans.get(2..2 + SHORT_RUNS).unwrap_or_default().to_vec())
    );
    running.shutdown().await;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", audit_db.display()));
    }
    Sample {
        prefill_tokens: prompt_tokens as f64,
        prefill_secs: ttft,
        ttft_secs: ttft,
        decode_tokens: completion as f64 - 1.0,
        decode_secs,
        short_ttft_secs: median(short),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn child_raw(mode: &str) -> String {
    let out = Command::new(std::env::current_exe().unwrap())
        .arg(mode)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{mode} child failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn child(mode: &str) -> Sample {
    Sample::parse(&child_raw(mode))
}

fn report(name: &str, samples: &[Sample]) -> (f64, f64, f64) {
    let prefill = median(
        samples
            .iter()
            .map(|s| s.prefill_tokens / s.prefill_secs)
            .collect(),
    );
    let ttft = median(samples.iter().map(|s| s.ttft_secs * 1000.0).collect());
    let decode = median(
        samples
            .iter()
            .map(|s| s.decode_tokens / s.decode_secs)
            .collect(),
    );
    println!(
        "{name:<8} prefill {prefill:>8.1} tok/s ({} prompt tokens)   TTFT {ttft:>7.1} ms   decode {decode:>6.1} tok/s ({} tokens)",
        samples[0].prefill_tokens,
        samples[0].decode_tokens + 1.0
    );
    (prefill, ttft, decode)
}

/// The 1/5/15-minute load averages, to judge how much other work shared the CPU.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn main() {
    let arg = std::env::args().nth(1).unwrap_or_default();
    match arg.as_str() {
        "--engine-child" => {
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(engine_sample()).print();
            return;
        }
        "--raw-child" => {
            raw_sample().print();
            return;
        }
        "--http-child" => {
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(http_sample()).print();
            return;
        }
        _ => {}
    }
    let rounds: usize = arg.parse().unwrap_or(5);
    println!(
        "model {}  threads {}  context {CONTEXT}  batch {BATCH}  rounds {rounds}",
        model_path(),
        threads()
    );
    println!("load average before: {}", load_average());
    let (mut engine, mut raw, mut http) = (Vec::new(), Vec::new(), Vec::new());
    let mut scans = Vec::new();
    let mut short_scans = Vec::new();
    for round in 0..rounds {
        // Rotate which side goes first so drift in background load cancels out.
        for side in 0..3 {
            match (round + side) % 3 {
                0 => engine.push(child("--engine-child")),
                1 => raw.push(child("--raw-child")),
                _ => {
                    let out = child_raw("--http-child");
                    scans.push(
                        out.lines()
                            .find_map(|l| l.strip_prefix("scan_ms ")?.parse::<f64>().ok())
                            .unwrap_or_default(),
                    );
                    short_scans.push(
                        out.lines()
                            .find_map(|l| l.strip_prefix("short_scan_ms ")?.parse::<f64>().ok())
                            .unwrap_or_default(),
                    );
                    http.push(Sample::parse(&out));
                }
            }
        }
    }
    println!("load average after:  {}", load_average());
    let (_, e_ttft, e_decode) = report("engine", &engine);
    let (_, r_ttft, r_decode) = report("raw", &raw);
    let (_, h_ttft, h_decode) = report("http", &http);
    let scan = median(scans);
    let short = |v: &[Sample]| median(v.iter().map(|s| s.short_ttft_secs * 1000.0).collect());
    println!(
        "short prompt TTFT: engine {:.2} ms, http {:.2} ms: veil's HTTP path adds {:+.2} ms (of which detection {:.2} ms)",
        short(&engine),
        short(&http),
        short(&http) - short(&engine),
        median(short_scans)
    );
    println!(
        "engine vs raw:  decode {:+.1}%  TTFT {:+.1} ms",
        (e_decode / r_decode - 1.0) * 100.0,
        e_ttft - r_ttft
    );
    println!(
        "http vs engine: decode {:+.1}%  TTFT {:+.1} ms (of which detection {scan:.1} ms, the rest {:+.1} ms)",
        (h_decode / e_decode - 1.0) * 100.0,
        h_ttft - e_ttft,
        h_ttft - e_ttft - scan
    );
}
