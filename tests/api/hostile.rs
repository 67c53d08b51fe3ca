//! Protocol abuse: bad keys, bad bodies, smuggling attempts, slow and numerous clients. None of
//! it reaches the cloud.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use crate::helpers::*;

async fn raw(
    veil: &Veil,
    path: &str,
    key: Option<&str>,
    content_type: &str,
    body: impl Into<reqwest::Body>,
) -> reqwest::Response {
    let mut req = veil
        .client
        .post(veil.url(path))
        .header("content-type", content_type)
        .body(body);
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn bad_missing_and_revoked_keys_are_401_and_audited() {
    let veil = Veil::start().await;
    for key in [Some("wrong-key"), None, Some(KEY_REVOKED)] {
        let resp = raw(
            &veil,
            "/v1/chat/completions",
            key,
            "application/json",
            user("hi").to_string(),
        )
        .await;
        assert_eq!(resp.status(), 401, "{key:?}");
        let err: Value = resp.json().await.unwrap();
        assert_eq!(err["error"]["code"], "invalid_api_key");
    }
    assert_eq!(veil.mock.hits(), 0);
    let rows = veil.wait_rows(6).await;
    assert_eq!(rows.len(), 6);
    assert!(
        rows.iter()
            .filter(|r| r.kind == "outcome")
            .all(|r| r.status == Some(401))
    );
    // The revoked key is identified by id; no key material is stored.
    assert!(
        rows[4].body.contains("\"key_id\":\"k-revoked\""),
        "{}",
        rows[4].body
    );
    let db = veil.db_bytes();
    assert!(!contains(&db, "wrong-key") && !contains(&db, KEY_REVOKED));
}

#[tokio::test]
async fn duplicate_keys_are_rejected_before_scanning() {
    let veil = Veil::start().await;
    let smuggle = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello"}],"messages":[{"role":"user","content":"card 4111111111111111"}]}"#;
    let resp = raw(
        &veil,
        "/v1/chat/completions",
        Some(KEY_DEFAULT),
        "application/json",
        smuggle,
    )
    .await;
    assert_eq!(resp.status(), 400);
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["error"]["code"], "duplicate_json_key");
    assert_eq!(veil.mock.hits(), 0);
}

#[tokio::test]
async fn oversized_bodies_are_413_with_and_without_length() {
    let veil = Veil::start().await;
    let big = format!(
        r#"{{"model":"gpt-4o-mini","messages":[{{"role":"user","content":"{}"}}]}}"#,
        "a".repeat(100 * 1024)
    );
    let resp = raw(
        &veil,
        "/v1/chat/completions",
        Some(KEY_DEFAULT),
        "application/json",
        big.clone(),
    )
    .await;
    assert_eq!(resp.status(), 413);
    // Chunked, without Content-Length.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = big
        .into_bytes()
        .chunks(8192)
        .map(|c| Ok(c.to_vec()))
        .collect();
    let body = reqwest::Body::wrap_stream(futures::stream::iter(chunks));
    let resp = raw(
        &veil,
        "/v1/chat/completions",
        Some(KEY_DEFAULT),
        "application/json",
        body,
    )
    .await;
    assert_eq!(resp.status(), 413);
    assert_eq!(veil.mock.hits(), 0);
}

#[tokio::test]
async fn malformed_and_mistyped_bodies_are_rejected() {
    let veil = Veil::start().await;
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        ("application/json", b"{\"model\":".to_vec(), 400, "invalid_json"),
        ("application/json", b"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"\xff\"}]}".to_vec(), 400, "invalid_json"),
        ("application/json", br#"{"model":"gpt-4o","messages":[{"role":"user","content":"\ud800"}]}"#.to_vec(), 400, "invalid_json"),
        ("application/json", format!("{}{}", "[".repeat(200), "]".repeat(200)).into_bytes(), 400, "json_too_deep"),
        ("text/plain", user("hi").to_string().into_bytes(), 415, "unsupported_media_type"),
        ("application/json", json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}], "smuggled": "4111111111111111"}).to_string().into_bytes(), 400, "invalid_request"),
        ("application/json", json!({"model": "gpt-4o", "messages": [{"role": "user", "content": [{"type": "video", "video": "x"}]}]}).to_string().into_bytes(), 400, "invalid_request"),
        ("application/json", json!({"model": "gpt-4o", "n": 1000, "messages": [{"role": "user", "content": "x"}]}).to_string().into_bytes(), 400, "invalid_request"),
    ];
    for (ct, body, status, code) in cases {
        let resp = raw(&veil, "/v1/chat/completions", Some(KEY_DEFAULT), ct, body).await;
        assert_eq!(resp.status(), status, "{code}");
        let err: Value = resp.json().await.unwrap();
        assert_eq!(err["error"]["code"], code);
        assert!(
            !err["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .contains("4111")
        );
    }
    let resp = veil
        .client
        .post(veil.url("/v1/chat/completions"))
        .bearer_auth(KEY_DEFAULT)
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(user("hi").to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 415);
    assert_eq!(veil.mock.hits(), 0);
}

#[tokio::test]
async fn path_variants_route_through_the_scanner() {
    let veil = Veil::start().await;
    for path in [
        "//v1/chat/completions",
        "/v1/chat/completions/",
        "/v1//chat//completions",
    ] {
        let resp = raw(
            &veil,
            path,
            Some(KEY_DEFAULT),
            "application/json",
            user("card 4111 1111 1111 1111").to_string(),
        )
        .await;
        assert_eq!(resp.status(), 403, "{path}");
    }
    for path in [
        "/v1/chat%2Fcompletions",
        "/v2/chat/completions",
        "/v1/completions",
    ] {
        let resp = raw(
            &veil,
            path,
            Some(KEY_DEFAULT),
            "application/json",
            user("card 4111 1111 1111 1111").to_string(),
        )
        .await;
        assert_eq!(resp.status(), 404, "{path}");
    }
    let resp = veil
        .client
        .get(veil.url("/v1/chat/completions"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 405);
    assert_eq!(veil.mock.hits(), 0);
    // Every one of them was audited.
    let rows = veil.wait_rows(14).await;
    assert_eq!(rows.len(), 14);
}

#[tokio::test]
async fn a_model_name_cannot_force_a_route_or_smuggle_text() {
    let veil = Veil::start().await;
    let mut body = user("My SSN is 536-22-8726");
    body["model"] = json!("gpt-4o");
    let resp = veil
        .client
        .post(veil.url("/v1/chat/completions"))
        .bearer_auth(KEY_DEFAULT)
        .header("x-veil-route", "mock")
        .header("x-veil-action", "allow")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    body["model"] = json!("gpt 536-22-8726");
    let resp = veil.chat(KEY_DEFAULT, body).await;
    assert_eq!(resp.status(), 400);
    assert_eq!(veil.mock.hits(), 0);
}

#[tokio::test]
async fn value_split_across_messages_is_detected() {
    let veil = Veil::start().await;
    let body = json!({"model": "gpt-4o", "messages": [
        {"role": "user", "content": [{"type": "text", "text": "card 4111 1111"}, {"type": "text", "text": "1111 1111"}]}]});
    let resp = veil.chat(KEY_DEFAULT, body).await;
    assert_eq!(resp.status(), 403);
    assert_eq!(veil.mock.hits(), 0);
}

#[tokio::test]
async fn opaque_encoded_blob_is_unscannable() {
    use base64::Engine;
    let veil = Veil::start().await;
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let bytes: Vec<u8> = (0..900)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    let blob = base64::engine::general_purpose::STANDARD.encode(bytes);
    let resp = veil
        .chat(KEY_DEFAULT, user(&format!("decode this for me: {blob}")))
        .await;
    assert_eq!(resp.status(), 503, "unscannable content stays local");
    assert_eq!(resp.headers()["x-veil-action"], "local");
    assert_eq!(veil.mock.hits(), 0);
    let rows = veil.wait_rows(2).await;
    assert!(rows[0].body.contains("opaque_blob"), "{}", rows[0].body);
}

#[tokio::test]
async fn encoded_sensitive_value_is_detected() {
    use base64::Engine;
    let veil = Veil::start().await;
    let encoded = base64::engine::general_purpose::STANDARD.encode("card 4111 1111 1111 1111");
    let resp = veil
        .chat(KEY_DEFAULT, user(&format!("what is {encoded}?")))
        .await;
    assert_eq!(resp.status(), 403);
    assert_eq!(veil.mock.hits(), 0);
}

/// Reads from `tcp` until the server closes it or `within` passes; what it sent, and whether
/// it closed.
async fn read_until_closed(tcp: &mut tokio::net::TcpStream, within: Duration) -> (String, bool) {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, tcp.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&got).into_owned(), true),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => return (String::from_utf8_lossy(&got).into_owned(), false),
        }
    }
}

#[tokio::test]
async fn a_client_trickling_its_headers_is_cut_off_at_the_header_timeout() {
    let veil = Veil::start_with(|c| c.server.header_timeout_secs = 1).await;
    let mut tcp = tokio::net::TcpStream::connect(veil.addr).await.unwrap();
    tcp.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nHost: veil\r\n")
        .await
        .unwrap();
    // One more header line every 200 ms: each byte is in time, the head never ends.
    let started = tokio::time::Instant::now();
    let mut closed = false;
    while started.elapsed() < Duration::from_secs(5) {
        if tcp.write_all(b"X-Slow: 1\r\n").await.is_err() {
            closed = true;
            break;
        }
        let (_, eof) = read_until_closed(&mut tcp, Duration::from_millis(200)).await;
        if eof {
            closed = true;
            break;
        }
    }
    assert!(closed, "a trickled head held the connection for 5 s");
    assert!(started.elapsed() >= Duration::from_millis(800));
    // Nothing was decided, nothing went anywhere; other clients are served.
    assert_eq!(veil.mock.hits(), 0);
    assert_eq!(veil.chat(KEY_DEFAULT, user("hello")).await.status(), 200);
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_at_the_header_timeout() {
    let veil = Veil::start_with(|c| c.server.header_timeout_secs = 1).await;
    let mut tcp = tokio::net::TcpStream::connect(veil.addr).await.unwrap();
    let (_, closed) = read_until_closed(&mut tcp, Duration::from_secs(5)).await;
    assert!(closed, "an idle connection was held for 5 s");
}

#[tokio::test]
async fn a_client_trickling_its_body_gets_408_and_one_audited_refusal() {
    let veil = Veil::start_with(|c| c.server.body_timeout_secs = 1).await;
    let body = user("hello").to_string();
    let mut tcp = tokio::net::TcpStream::connect(veil.addr).await.unwrap();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: veil\r\nAuthorization: Bearer {KEY_DEFAULT}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp.write_all(&body.as_bytes()[..10]).await.unwrap();
    let (answer, _) = read_until_closed(&mut tcp, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"body_timeout\""), "{answer}");
    assert_eq!(veil.mock.hits(), 0);
    let rows = veil.wait_rows(2).await;
    assert_eq!(rows.len(), 2, "one decision and one outcome");
    assert_eq!(rows[0].kind, "decision");
    assert_eq!(rows[1].kind, "outcome");
    assert_eq!(rows[1].status, Some(408));
    assert!(rows[1].body.contains("\"rejected\""), "{}", rows[1].body);
}

#[tokio::test]
async fn an_unknown_key_is_refused_without_waiting_for_its_body() {
    let veil = Veil::start().await;
    let mut tcp = tokio::net::TcpStream::connect(veil.addr).await.unwrap();
    // A head announcing a body that never comes (the body timeout is 30 s).
    tcp.write_all(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: veil\r\nAuthorization: Bearer not-a-key\r\nContent-Type: application/json\r\nContent-Length: 900000\r\n\r\n{",
    )
    .await
    .unwrap();
    let (answer, _) = read_until_closed(&mut tcp, Duration::from_secs(3)).await;
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert!(answer.contains("\"invalid_api_key\""), "{answer}");
    let rows = veil.wait_rows(2).await;
    assert_eq!(rows.len(), 2, "one decision and one outcome");
    assert_eq!(rows[1].status, Some(401));
    assert_eq!(veil.mock.hits(), 0);
}

#[tokio::test]
async fn connections_over_the_limit_wait_until_one_closes() {
    let veil = Veil::start_with(|c| c.server.max_connections = 2).await;
    let idle_a = tokio::net::TcpStream::connect(veil.addr).await.unwrap();
    let idle_b = tokio::net::TcpStream::connect(veil.addr).await.unwrap();
    // Both slots are taken by idle connections: a third client is not served…
    let waiting = veil.spawn_chat(KEY_DEFAULT, user("hello"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!waiting.is_finished(), "served beyond max_connections");
    assert_eq!(veil.mock.hits(), 0);
    // …until one of them closes.
    drop(idle_a);
    let status = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("served once a slot was free")
        .unwrap()
        .unwrap()
        .status();
    assert_eq!(status, 200);
    drop(idle_b);
}
