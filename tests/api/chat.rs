//! The four actions end to end, tools, models, headers.

use serde_json::{Value, json};

use crate::helpers::*;

#[tokio::test]
async fn clean_prompt_is_forwarded_unchanged() {
    let veil = Veil::start().await;
    let body = json!({"model": "gpt-4o-mini", "temperature": 0.2, "max_tokens": 50,
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is the capital of France?"}]});
    let resp = veil.chat(KEY_DEFAULT, body.clone()).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-veil-action"], "allow");
    assert_eq!(resp.headers()["x-veil-route"], "mock");
    assert!(resp.headers().contains_key("x-veil-request-id"));
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        "You said: What is the capital of France?"
    );
    assert_eq!(veil.mock.hits(), 1);
    let sent: Value = serde_json::from_str(&veil.mock.bodies()[0]).unwrap();
    assert_eq!(
        sent, body,
        "an allowed request reaches the upstream unchanged"
    );
    // The upstream gets veil's key, never the client's.
    let h = &veil.mock.headers()[0];
    assert_eq!(h["authorization"], "Bearer upstream-secret");
}

#[tokio::test]
async fn card_number_is_blocked_and_names_the_rule() {
    let veil = Veil::start().await;
    let resp = veil
        .chat(KEY_DEFAULT, user("Charge card 4111 1111 1111 1111 please"))
        .await;
    assert_eq!(resp.status(), 403);
    assert_eq!(resp.headers()["x-veil-action"], "block");
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["error"]["code"], "policy_blocked");
    let msg = err["error"]["message"].as_str().unwrap();
    assert!(msg.contains("pci.card.block"), "{msg}");
    assert!(
        !msg.contains("4111"),
        "the error never echoes the value: {msg}"
    );
    assert_eq!(
        veil.mock.hits(),
        0,
        "a blocked request never reaches the cloud"
    );
}

#[tokio::test]
async fn email_is_redacted_upstream_and_restored_in_the_answer() {
    let veil = Veil::start().await;
    let resp = veil
        .chat(
            KEY_DEFAULT,
            user("Write to jane.doe@example.com about the invoice"),
        )
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-veil-action"], "redact");
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        "You said: Write to jane.doe@example.com about the invoice"
    );
    assert_eq!(veil.mock.hits(), 1);
    let sent = &veil.mock.bodies()[0];
    assert!(
        !sent.contains("jane.doe@example.com"),
        "sensitive value upstream: {sent}"
    );
    assert!(sent.contains("<EMAIL_1>"), "{sent}");
}

#[tokio::test]
async fn local_decision_without_local_model_is_503_and_never_cloud() {
    let veil = Veil::start().await;
    let resp = veil
        .chat(
            KEY_DEFAULT,
            user("My SSN is 536-22-8726, what should I do?"),
        )
        .await;
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["x-veil-action"], "local");
    assert_eq!(resp.headers()["x-veil-route"], "local");
    assert!(resp.headers().contains_key("retry-after"));
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["error"]["code"], "local_model_unavailable");
    assert_eq!(veil.mock.hits(), 0, "local means local");
}

#[tokio::test]
async fn unscannable_image_part_stays_local() {
    let veil = Veil::start().await;
    let body = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "what is in this picture?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]}]});
    let resp = veil.chat(KEY_DEFAULT, body).await;
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["x-veil-action"], "local");
    assert_eq!(veil.mock.hits(), 0);
    let rows = veil.wait_rows(2).await;
    assert!(
        rows[0].body.contains("veil.unscannable"),
        "{}",
        rows[0].body
    );
}

#[tokio::test]
async fn tool_calls_are_scanned_redacted_and_restored() {
    let veil = Veil::start().await;
    let body = json!({
    "model": "gpt-4o-mini",
    "tools": [{"type": "function", "function": {"name": "echo", "description": "Echo text",
        "parameters": {"type": "object", "properties": {"echo": {"type": "string"}}}}}],
    "messages": [
        {"role": "user", "content": "Email bob@example.org the summary"},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "call_0", "type": "function",
            "function": {"name": "lookup", "arguments": "{\"contact\":\"bob@example.org\"}"}}]},
        {"role": "tool", "tool_call_id": "call_0", "content": "found bob@example.org"},
        {"role": "user", "content": "Email bob@example.org the summary"}
    ]});
    let resp = veil.chat(KEY_DEFAULT, body).await;
    assert_eq!(resp.status(), 200);
    let sent = &veil.mock.bodies()[0];
    assert!(!sent.contains("bob@example.org"), "{sent}");
    let sent: Value = serde_json::from_str(sent).unwrap();
    let args = sent["messages"][1]["tool_calls"][0]["function"]["arguments"]
        .as_str()
        .unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(args).unwrap(),
        json!({"contact": "<EMAIL_1>"})
    );
    let answer: Value = resp.json().await.unwrap();
    let call = &answer["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"];
    let args: Value = serde_json::from_str(call.as_str().unwrap()).unwrap();
    assert_eq!(args["echo"], "You said: Email bob@example.org the summary");
}

#[tokio::test]
async fn email_in_system_prompt_name_and_metadata_is_redacted() {
    let veil = Veil::start().await;
    let body = json!({"model": "gpt-4o-mini", "user": "carol@example.net", "metadata": {"ticket": "from carol@example.net"},
        "messages": [{"role": "system", "content": "Reply to carol@example.net"}, {"role": "user", "content": "hello", "name": "carol"}]});
    let resp = veil.chat(KEY_DEFAULT, body).await;
    assert_eq!(resp.status(), 200);
    let sent = &veil.mock.bodies()[0];
    assert!(!sent.contains("carol@example.net"), "{sent}");
}

#[tokio::test]
async fn models_lists_configured_models() {
    let veil = Veil::start().await;
    let resp = veil
        .client
        .get(veil.url("/v1/models"))
        .bearer_auth(KEY_DEFAULT)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    let ids: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    assert!(ids.contains(&"test-model"), "{ids:?}");
    let resp = veil
        .client
        .get(veil.url("/v1/models"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
}

#[tokio::test]
async fn unknown_model_is_404_without_cloud() {
    let veil = Veil::start().await;
    let mut body = user("hello");
    body["model"] = json!("claude-3");
    let resp = veil.chat(KEY_DEFAULT, body).await;
    assert_eq!(resp.status(), 404);
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["error"]["code"], "model_not_found");
    assert_eq!(veil.mock.hits(), 0);
}

#[tokio::test]
async fn upstream_failures_map_to_clear_errors() {
    let veil = Veil::start().await;
    veil.mock.set_mode(Mode::Status(429));
    let resp = veil.chat(KEY_DEFAULT, user("hi")).await;
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "7");
    veil.mock.set_mode(Mode::Status(500));
    let resp = veil.chat(KEY_DEFAULT, user("hi")).await;
    assert_eq!(resp.status(), 502);
    veil.mock.set_mode(Mode::Malformed);
    let resp = veil.chat(KEY_DEFAULT, user("hi")).await;
    assert_eq!(resp.status(), 502);
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["error"]["code"], "upstream_bad_response");
    let rows = veil.wait_rows(6).await;
    let outcomes: Vec<_> = rows.iter().filter_map(|r| r.outcome.clone()).collect();
    assert_eq!(outcomes, vec!["upstream_error"; 3]);
}

#[tokio::test]
async fn missing_upstream_key_is_503_not_an_unauthenticated_call() {
    let veil =
        Veil::start_with(|c| c.upstreams[0].api_key_env = Some("NOT_SET_ANYWHERE".into())).await;
    let resp = veil.chat(KEY_DEFAULT, user("hi")).await;
    assert_eq!(resp.status(), 503);
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["error"]["code"], "upstream_unavailable");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("NOT_SET_ANYWHERE")
    );
    assert_eq!(veil.mock.hits(), 0);
}
