//! Values that were measured going upstream raw, each pinned: the request is refused or kept
//! local (the cloud mock is hit zero times), or the value is replaced before it leaves; the
//! audit database never holds it.

use serde_json::{Value, json};

use crate::helpers::*;

async fn action_of(veil: &Veil, key: &str, body: Value) -> (u16, String) {
    let resp = veil.chat(key, body).await;
    let status = resp.status().as_u16();
    let action = resp.headers()["x-veil-action"].to_str().unwrap().to_owned();
    let _ = resp.bytes().await;
    (status, action)
}

fn two_messages(a: &str, b: &str) -> Value {
    json!({"model": "gpt-4o-mini", "messages": [
        {"role": "user", "content": a},
        {"role": "user", "content": b}
    ]})
}

#[tokio::test]
async fn a_card_in_the_model_name_is_refused_and_not_recorded() {
    let veil = Veil::start().await;
    let body = json!({"model": "gpt-4111111111111111", "messages": [{"role": "user", "content": "hello"}]});
    assert_eq!(
        action_of(&veil, KEY_DEFAULT, body).await,
        (403, "block".into())
    );
    assert_eq!(veil.mock.hits(), 0);
    let rows = veil.wait_rows(2).await;
    let decision: Value = serde_json::from_str(&rows[0].body).unwrap();
    assert_eq!(decision["model"], "***-****************");
    assert_eq!(decision["entities"][0]["spans"][0]["field"], "model");
    assert!(!contains(&veil.db_bytes(), "4111111111111111"));
    veil.stop().await;
}

/// A model no upstream and not the local model serves is refused before detection: 404
/// `model_not_found`, nothing sent anywhere, and the record keeps no model name (it is client
/// text) — the message does not repeat it either.
#[tokio::test]
async fn an_unconfigured_model_name_is_refused_unread_and_unrecorded() {
    let veil = Veil::start().await;
    for model in ["my-ssn-536-22-8745", "claude-536228745"] {
        let body = json!({"model": model, "messages": [{"role": "user", "content": "hello"}]});
        let resp = veil.chat(KEY_DEFAULT, body).await;
        assert_eq!(resp.status(), 404, "{model}");
        let text = resp.text().await.unwrap();
        assert!(text.contains("model_not_found"), "{text}");
        assert!(
            !text.contains("536"),
            "the error does not echo the model: {text}"
        );
    }
    assert_eq!(veil.mock.hits(), 0);
    let rows = veil.wait_rows(4).await;
    for row in rows.iter().filter(|r| r.kind == "decision") {
        let decision: Value = serde_json::from_str(&row.body).unwrap();
        assert_eq!(decision["model"], Value::Null, "{decision}");
        assert_eq!(decision["reason_code"], "model_not_found", "{decision}");
    }
    let bytes = veil.db_bytes();
    assert!(!contains(&bytes, "536-22-8745") && !contains(&bytes, "536228745"));
    veil.stop().await;
}

#[tokio::test]
async fn a_phone_number_in_the_model_name_does_not_leave() {
    let veil = Veil::start().await;
    let body =
        json!({"model": "gpt-617-555-0142", "messages": [{"role": "user", "content": "hello"}]});
    let (status, action) = action_of(&veil, KEY_DEFAULT, body).await;
    assert_eq!(action, "redact");
    // The upstream is asked for a model that is a placeholder: it does not exist there, but the
    // number never left.
    assert!(status == 200 || status >= 400);
    for b in veil.mock.bodies() {
        assert!(!b.contains("555-0142"), "{b}");
    }
    assert!(!contains(&veil.db_bytes(), "555-0142"));
    veil.stop().await;
}

#[tokio::test]
async fn dated_model_names_are_versions_not_dates() {
    let veil = Veil::start().await;
    for model in ["gpt-4o-2024-08-06", "gpt-4o-mini-20240718"] {
        let body =
            json!({"model": model, "messages": [{"role": "user", "content": "What is a mutex?"}]});
        assert_eq!(
            action_of(&veil, KEY_HIPAA, body).await,
            (200, "allow".into()),
            "{model}"
        );
    }
    let bodies = veil.mock.bodies();
    assert!(bodies[0].contains("\"gpt-4o-2024-08-06\""));
    assert!(bodies[1].contains("\"gpt-4o-mini-20240718\""));
    veil.stop().await;
}

#[tokio::test]
async fn values_split_across_two_messages_are_found() {
    let veil = Veil::start().await;
    // An SSN kept local (no local model here: 503, and nothing goes to the cloud).
    let (_, action) = action_of(
        &veil,
        KEY_DEFAULT,
        two_messages("my SSN is 536-22", "-8745 thanks"),
    )
    .await;
    assert_eq!(action, "local");
    // A card refused.
    assert_eq!(
        action_of(
            &veil,
            KEY_DEFAULT,
            two_messages("card 4111111111", "111111 please")
        )
        .await,
        (403, "block".into())
    );
    // An email replaced in both parts.
    let (status, action) = action_of(
        &veil,
        KEY_DEFAULT,
        two_messages("write to jane.mor", "row@example.com today"),
    )
    .await;
    assert_eq!((status, action.as_str()), (200, "redact"));
    assert_eq!(veil.mock.hits(), 1);
    let sent = &veil.mock.bodies()[0];
    assert!(
        !sent.contains("row@example.com") && !sent.contains("jane.mor"),
        "{sent}"
    );
    assert!(!contains(&veil.db_bytes(), "536-22"));
    veil.stop().await;
}

#[tokio::test]
async fn ssns_in_the_forms_people_type_stay_home() {
    let veil = Veil::start().await;
    for text in [
        "my social is 536228745",
        "SSN 536 22 8745",
        "the number on file is 536 22 8745",
        "SSN: 900-12-3456 (from the form)",
    ] {
        let (_, action) = action_of(&veil, KEY_DEFAULT, user(text)).await;
        assert_eq!(action, "local", "{text}");
    }
    assert_eq!(veil.mock.hits(), 0);
    veil.stop().await;
}
