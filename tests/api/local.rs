//! The local model in the request path: real llama.cpp generation, never the cloud.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::*;

const SSN_PROMPT: &str =
    "My SSN is 536-22-8726. In one sentence, what is a social security number for?";

fn ssn(max_tokens: u32) -> Value {
    json!({"model": "gpt-4o-mini", "max_tokens": max_tokens, "temperature": 0,
           "messages": [{"role": "user", "content": SSN_PROMPT}]})
}

#[tokio::test]
async fn sensitive_prompt_is_answered_locally_with_real_token_counts() {
    let _serial = local_lock().await;
    let veil = Veil::start_with(with_local_model).await;
    veil.local_ready().await;
    let resp = veil.chat(KEY_HIPAA, ssn(24)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-veil-action"], "local");
    assert_eq!(resp.headers()["x-veil-route"], "local");
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(answer["object"], "chat.completion");
    assert_eq!(answer["model"], "SmolLM2-135M-Instruct.Q4_1");
    let text = answer["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(!text.trim().is_empty());
    let finish = answer["choices"][0]["finish_reason"].as_str().unwrap();
    assert!(finish == "stop" || finish == "length");
    // Usage is what the tokenizer says for the rendered prompt.
    let request: veil::api::openai::ChatRequest = serde_json::from_value(ssn(24)).unwrap();
    let expected = veil.local_prompt_tokens(&request);
    assert_eq!(
        answer["usage"]["prompt_tokens"].as_u64(),
        Some(expected as u64)
    );
    let completion = answer["usage"]["completion_tokens"].as_u64().unwrap();
    assert!(completion > 0 && completion <= 24);
    assert_eq!(veil.mock.hits(), 0, "local means local");
    let rows = veil.wait_rows(2).await;
    let outcome: Value = serde_json::from_str(&rows[1].body).unwrap();
    assert_eq!(outcome["completion_tokens"].as_u64(), Some(completion));
    assert!(
        !rows.iter().any(|r| r.body.contains(text.trim())),
        "answer text in the audit log"
    );
}

#[tokio::test]
async fn local_streaming_delivers_openai_chunks() {
    let _serial = local_lock().await;
    let veil = Veil::start_with(with_local_model).await;
    veil.local_ready().await;
    let mut body = ssn(16);
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let resp = veil.chat(KEY_HIPAA, body).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-veil-route"], "local");
    let events = sse_data(resp).await;
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let text = streamed_text(&events);
    assert!(!text.trim().is_empty());
    let usage: Value = events
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .find(|v| v["usage"].is_object())
        .unwrap();
    assert!(usage["usage"]["completion_tokens"].as_u64().unwrap() <= 16);
    assert_eq!(veil.mock.hits(), 0);
}

#[tokio::test]
async fn greedy_decoding_is_deterministic() {
    let _serial = local_lock().await;
    let veil = Veil::start_with(with_local_model).await;
    veil.local_ready().await;
    let a: Value = veil.chat(KEY_HIPAA, ssn(20)).await.json().await.unwrap();
    let b: Value = veil.chat(KEY_HIPAA, ssn(20)).await.json().await.unwrap();
    assert_eq!(
        a["choices"][0]["message"]["content"],
        b["choices"][0]["message"]["content"]
    );
}

#[tokio::test]
async fn beyond_slots_and_queue_requests_get_503_with_retry_after() {
    let _serial = local_lock().await;
    let veil = Veil::start_with(|c| {
        with_local_model(c);
        c.local.parallel = 1;
        c.local.queue = 1;
    })
    .await;
    veil.local_ready().await;
    let long = json!({"model": "gpt-4o-mini", "max_tokens": 200, "temperature": 0.7, "seed": 1,
        "messages": [{"role": "user", "content": format!("{SSN_PROMPT} Then write a long poem about the sea.")}]});
    let (a, b, c) = tokio::join!(
        veil.chat(KEY_HIPAA, long.clone()),
        veil.chat(KEY_HIPAA, long.clone()),
        veil.chat(KEY_HIPAA, long.clone())
    );
    let mut statuses = vec![
        a.status().as_u16(),
        b.status().as_u16(),
        c.status().as_u16(),
    ];
    let busy = [a, b, c].into_iter().find(|r| r.status() == 503).unwrap();
    assert_eq!(busy.headers()["x-veil-route"], "local");
    assert!(busy.headers().contains_key("retry-after"));
    let err: Value = busy.json().await.unwrap();
    assert_eq!(err["error"]["code"], "local_model_busy");
    statuses.sort_unstable();
    assert_eq!(
        statuses,
        vec![200, 200, 503],
        "one runs, one waits, one is refused"
    );
    assert_eq!(veil.mock.hits(), 0);
}

#[tokio::test]
async fn client_disconnect_stops_generation_and_frees_the_slot() {
    let _serial = local_lock().await;
    let veil = Veil::start_with(|c| {
        with_local_model(c);
        c.local.parallel = 1;
        c.local.queue = 0;
    })
    .await;
    veil.local_ready().await;
    let mut body = json!({"model": "gpt-4o-mini", "max_tokens": 1500, "temperature": 0.8, "seed": 7, "stream": true,
        "messages": [{"role": "user", "content": format!("{SSN_PROMPT} Then tell a very long story.")}]});
    let mut resp = veil.chat(KEY_HIPAA, body.clone()).await;
    assert_eq!(resp.status(), 200);
    let _ = resp.chunk().await.unwrap();
    let _ = resp.chunk().await.unwrap();
    drop(resp);
    // The slot comes back: with one slot and no queue, a new request is admitted.
    let mut admitted = false;
    for _ in 0..100 {
        body["max_tokens"] = json!(4);
        let r = veil.chat(KEY_HIPAA, body.clone()).await;
        if r.status() == 200 {
            let _ = sse_data(r).await;
            admitted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        admitted,
        "the slot of the disconnected client was not freed"
    );
    let stats = veil.local_stats();
    assert!(
        stats.completion_tokens_total < 1000,
        "generation went on after the disconnect: {stats:?}"
    );
    let rows = veil.wait_rows(4).await;
    assert_eq!(rows[1].outcome.as_deref(), Some("client_aborted"));
}

#[tokio::test]
async fn prompt_longer_than_the_context_is_400_before_any_work() {
    let _serial = local_lock().await;
    let veil = Veil::start_with(|c| {
        with_local_model(c);
        c.local.context_size = 128;
    })
    .await;
    veil.local_ready().await;
    let long = format!(
        "{SSN_PROMPT} {}",
        "Please consider this carefully. ".repeat(60)
    );
    let resp = veil.chat(KEY_HIPAA, user(&long)).await;
    assert_eq!(resp.status(), 400);
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["error"]["code"], "context_length_exceeded");
    assert_eq!(veil.local_stats().completion_tokens_total, 0);
    assert_eq!(veil.mock.hits(), 0);
}

#[tokio::test]
async fn missing_or_corrupt_model_is_503_and_never_cloud() {
    let _serial = local_lock().await;
    let dir = tempfile::tempdir().unwrap();
    let random = dir.path().join("random.gguf");
    std::fs::write(
        &random,
        (0..4096u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect::<Vec<u8>>(),
    )
    .unwrap();
    let truncated = dir.path().join("truncated.gguf");
    let real = std::fs::read(local_model_path()).unwrap();
    std::fs::write(&truncated, &real[..real.len() / 3]).unwrap();
    for (path, sha) in [
        (dir.path().join("missing.gguf"), None),
        (random, None),
        (truncated, None),
        (local_model_path(), Some("00".repeat(32))),
    ] {
        let p = path.clone();
        let veil = Veil::start_with(move |c| {
            with_local_model(c);
            c.local.model = p;
            c.local.sha256 = sha;
        })
        .await;
        let status = veil.local_ready().await;
        assert!(
            matches!(status, veil::route::local::LocalStatus::Failed { .. }),
            "{path:?}: {status:?}"
        );
        let ready = veil.client.get(veil.url("/readyz")).send().await.unwrap();
        assert_eq!(ready.status(), 503);
        let report: Value = ready.json().await.unwrap();
        assert_eq!(report["local_model"]["status"], "failed", "{report}");
        let resp = veil.chat(KEY_HIPAA, ssn(8)).await;
        assert_eq!(resp.status(), 503, "{path:?}");
        let err: Value = resp.json().await.unwrap();
        assert_eq!(err["error"]["code"], "local_model_unavailable");
        // A clean prompt still goes to the cloud: only local traffic is affected.
        assert_eq!(veil.chat(KEY_HIPAA, user("hello")).await.status(), 200);
        assert_eq!(
            veil.mock.hits(),
            1,
            "{path:?}: local traffic reached the cloud"
        );
    }
}

#[tokio::test]
async fn models_lists_the_local_model() {
    let _serial = local_lock().await;
    let veil = Veil::start_with(with_local_model).await;
    veil.local_ready().await;
    let v: Value = veil
        .client
        .get(veil.url("/v1/models"))
        .bearer_auth(KEY_DEFAULT)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["id"] == "SmolLM2-135M-Instruct.Q4_1"),
        "{v}"
    );
    let ready = veil.client.get(veil.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
}
