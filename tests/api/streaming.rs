//! Streaming: pass-through, restore across chunk boundaries, aborts and upstream faults.

use serde_json::{Value, json};

use crate::helpers::*;

#[tokio::test]
async fn stream_passes_every_chunk_through() {
    let veil = Veil::start().await;
    let mut body = user("Tell me a story about a lighthouse keeper");
    body["stream"] = json!(true);
    let resp = veil.chat(KEY_DEFAULT, body).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    assert_eq!(resp.headers()["x-veil-action"], "allow");
    let events = sse_data(resp).await;
    let reply = "You said: Tell me a story about a lighthouse keeper";
    // role chunk + one chunk per 3 characters + finish chunk + [DONE]
    let expected = 1 + reply.chars().count().div_ceil(3) + 1 + 1;
    assert_eq!(events.len(), expected, "{events:?}");
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    assert_eq!(streamed_text(&events), reply);
    // veil asked for usage for its audit log, but the client did not: no usage chunk.
    assert!(
        events.iter().all(|e| !e.contains("\"usage\"")),
        "{events:?}"
    );
    let sent: Value = serde_json::from_str(&veil.mock.bodies()[0]).unwrap();
    assert_eq!(sent["stream_options"]["include_usage"], true);
    let rows = veil.wait_rows(2).await;
    assert_eq!(rows[1].outcome.as_deref(), Some("completed"));
    assert!(
        rows[1].body.contains("\"completion_tokens\":22"),
        "{}",
        rows[1].body
    );
}

#[tokio::test]
async fn stream_usage_is_passed_when_asked() {
    let veil = Veil::start().await;
    let mut body = user("hello");
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let events = sse_data(veil.chat(KEY_DEFAULT, body).await).await;
    assert!(
        events.iter().any(|e| e.contains("\"total_tokens\":33")),
        "{events:?}"
    );
}

#[tokio::test]
async fn redacted_stream_is_restored_across_chunk_boundaries() {
    let veil = Veil::start().await;
    let mut body = user("Please contact jane.doe@example.com and then 555-867-5309 today");
    body["stream"] = json!(true);
    let resp = veil.chat(KEY_DEFAULT, body).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-veil-action"], "redact");
    let events = sse_data(resp).await;
    let sent = &veil.mock.bodies()[0];
    assert!(!sent.contains("jane.doe@example.com"), "{sent}");
    // The mock streams 3 characters at a time, so every placeholder arrives split.
    let text = streamed_text(&events);
    assert!(text.contains("jane.doe@example.com"), "{text}");
    assert!(!text.contains("<EMAIL"), "{text}");
    for e in &events {
        assert!(
            !e.contains("<EM") && !e.contains("AIL_"),
            "half a placeholder leaked: {e}"
        );
    }
}

#[tokio::test]
async fn redacted_stream_restores_tool_call_arguments() {
    let veil = Veil::start().await;
    let body = json!({"model": "gpt-4o-mini", "stream": true,
        "tools": [{"type": "function", "function": {"name": "echo", "parameters": {"type": "object"}}}],
        "messages": [{"role": "user", "content": "ping ops@example.com now"}]});
    let events = sse_data(veil.chat(KEY_DEFAULT, body).await).await;
    let args: String = events
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .flat_map(|v| {
            v["choices"][0]["delta"]["tool_calls"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|c| c["function"]["arguments"].as_str().map(str::to_owned))
        .collect();
    let parsed: Value = serde_json::from_str(&args).unwrap_or_else(|e| panic!("{e}: {args}"));
    assert_eq!(parsed["echo"], "You said: ping ops@example.com now");
}

#[tokio::test]
async fn blocked_stream_request_is_a_plain_error() {
    let veil = Veil::start().await;
    let mut body = user("card 5555 5555 5555 4444");
    body["stream"] = json!(true);
    let resp = veil.chat(KEY_DEFAULT, body).await;
    assert_eq!(resp.status(), 403);
    assert_eq!(veil.mock.hits(), 0);
}

#[tokio::test]
async fn client_abort_mid_stream_is_recorded() {
    let veil = Veil::start().await;
    veil.mock.set_mode(Mode::StallMidStream);
    let mut body = user("long answer please");
    body["stream"] = json!(true);
    let mut resp = veil.chat(KEY_DEFAULT, body).await;
    assert_eq!(resp.status(), 200);
    let first = resp.chunk().await.unwrap();
    assert!(first.is_some());
    drop(resp);
    let rows = veil.wait_rows(2).await;
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1].outcome.as_deref(), Some("client_aborted"));
}

#[tokio::test]
async fn silent_upstream_stream_ends_with_an_error_event() {
    let veil = Veil::start().await;
    veil.mock.set_mode(Mode::StallMidStream);
    let mut body = user("hello");
    body["stream"] = json!(true);
    let events = sse_data(veil.chat(KEY_DEFAULT, body).await).await;
    let last = events.last().cloned().unwrap_or_default();
    assert!(last.contains("upstream_timeout"), "{events:?}");
    let rows = veil.wait_rows(2).await;
    assert_eq!(rows[1].outcome.as_deref(), Some("upstream_error"));
}

#[tokio::test]
async fn malformed_upstream_event_ends_with_an_error_event() {
    let veil = Veil::start().await;
    veil.mock.set_mode(Mode::MalformedStream);
    let mut body = user("hello");
    body["stream"] = json!(true);
    let events = sse_data(veil.chat(KEY_DEFAULT, body).await).await;
    assert!(
        events
            .last()
            .is_some_and(|e| e.contains("upstream_bad_response")),
        "{events:?}"
    );
}
