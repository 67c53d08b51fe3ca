//! Policies are code: hot reload is atomic, and a bad file keeps the last good policy.

use std::time::Duration;

use serde_json::Value;

use crate::helpers::*;

async fn code_for(veil: &Veil, text: &str) -> (u16, String) {
    let resp = veil.chat(KEY_DEFAULT, user(text)).await;
    let status = resp.status().as_u16();
    let action = resp.headers()["x-veil-action"].to_str().unwrap().to_owned();
    let _ = resp.bytes().await;
    (status, action)
}

#[tokio::test]
async fn hot_reload_swaps_good_policies_and_keeps_the_last_good_one() {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(repo().join("policies")).unwrap() {
        let p = entry.unwrap().path();
        if p.is_file() {
            std::fs::copy(&p, dir.path().join(p.file_name().unwrap())).unwrap();
        }
    }
    let policies = dir.path().to_owned();
    let veil = Veil::start_with(|c| {
        c.policies.dir = policies.clone();
        c.policies.reload_secs = 1;
    })
    .await;
    assert_eq!(
        code_for(&veil, "mail a.b@example.com").await,
        (200, "redact".into())
    );

    // A half-written, invalid file: rejected, the last good policy stays active.
    let default = dir.path().join("default.toml");
    let good = std::fs::read_to_string(&default).unwrap();
    std::fs::write(&default, "[[rules]]\nid = \"broken\nentities = [").unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        code_for(&veil, "mail a.b@example.com").await,
        (200, "redact".into())
    );

    // A valid change: emails are now blocked.
    std::fs::write(
        &default,
        good.replace("id = \"contact.redact\"", "id = \"contact.block\"")
            .replace(
                "entities = [\"EMAIL\", \"PHONE\", \"IP_ADDRESS\", \"ADDRESS\"]\naction = \"redact\"",
                "entities = [\"EMAIL\", \"PHONE\", \"IP_ADDRESS\", \"ADDRESS\"]\naction = \"block\"",
            ),
    )
    .unwrap();
    let mut last = (0, String::new());
    for _ in 0..50 {
        last = code_for(&veil, "mail a.b@example.com").await;
        if last.0 == 403 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(last, (403, "block".into()));
    // The audit record carries the digest of the policy that decided.
    let rows = veil.wait_rows(2).await;
    let first: Value = serde_json::from_str(&rows[0].body).unwrap();
    let last_decision = rows.iter().rev().find(|r| r.kind == "decision").unwrap();
    let last_decision: Value = serde_json::from_str(&last_decision.body).unwrap();
    assert_ne!(first["policy_digest"], last_decision["policy_digest"]);
}

#[tokio::test]
async fn invalid_policy_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("default.toml"),
        "[[rules]]\nid = \"x\"\nentities = [\"SNN\"]\naction = \"block\"\n",
    )
    .unwrap();
    let mock = Mock::start().await;
    let db = tempfile::tempdir().unwrap();
    let mut c = config(&mock, db.path());
    c.policies.dir = dir.path().to_owned();
    let err = veil::server::start(c, env)
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.contains("default.toml:3:13: rules[0].entities[0]: unknown entity type \"SNN\""),
        "{err}"
    );
}

/// A copy of the shipped policies in a temporary directory, served with hot reload every second.
async fn reloading_veil(debounce_ms: u64) -> (Veil, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(repo().join("policies")).unwrap() {
        let p = entry.unwrap().path();
        if p.is_file() {
            std::fs::copy(&p, dir.path().join(p.file_name().unwrap())).unwrap();
        }
    }
    let policies = dir.path().to_owned();
    let veil = Veil::start_with(|c| {
        c.policies.dir = policies.clone();
        c.policies.reload_secs = 1;
        c.policies.debounce_ms = debounce_ms;
    })
    .await;
    (veil, dir)
}

/// The audit events (reloads), as JSON bodies.
async fn events(veil: &Veil) -> Vec<Value> {
    veil.rows()
        .await
        .iter()
        .filter(|r| r.kind == "event")
        .map(|r| serde_json::from_str(&r.body).unwrap())
        .collect()
}

/// Waits until the audit log holds `n` events.
async fn wait_events(veil: &Veil, n: usize) -> Vec<Value> {
    for _ in 0..100 {
        let e = events(veil).await;
        if e.len() >= n {
            return e;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    events(veil).await
}

fn sha256(text: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

async fn card_under_hipaa(veil: &Veil) -> (u16, String) {
    let resp = veil
        .chat(KEY_HIPAA, user("Bill 4111 1111 1111 1111 for the visit"))
        .await;
    let status = resp.status().as_u16();
    let action = resp.headers()["x-veil-action"].to_str().unwrap().to_owned();
    let _ = resp.bytes().await;
    (status, action)
}

#[tokio::test]
async fn a_reload_that_would_fail_open_is_refused_and_audited() {
    let (veil, dir) = reloading_veil(300).await;
    let hipaa = dir.path().join("hipaa.toml");
    let good = std::fs::read_to_string(&hipaa).unwrap();
    assert_eq!(card_under_hipaa(&veil).await, (403, "block".into()));
    let cut_mid_write =
        &good[..good.find("[[rules]]").unwrap() + "[[rules]]\nid = \"hipaa.ca".len()];
    let variants = [
        ("empty", String::new()),
        (
            "comment-only",
            "# hipaa policy, being rewritten\n".to_owned(),
        ),
        ("defaults-only", "[defaults]\n".to_owned()),
        (
            "no [defaults] action",
            good.replace("[defaults]\naction = \"allow\"\n", "[defaults]\n"),
        ),
        (
            "syntax error",
            good.replace("action = \"block\"", "action = block"),
        ),
        ("cut mid-write", cut_mid_write.to_owned()),
    ];
    for (i, (what, text)) in variants.iter().enumerate() {
        std::fs::write(&hipaa, text).unwrap();
        let events = wait_events(&veil, i + 1).await;
        assert_eq!(events.len(), i + 1, "{what}: one event per refused reload");
        let e = &events[i];
        assert_eq!(e["event"], "policy_reload", "{what}");
        assert_eq!(e["status"], "refused", "{what}: {e}");
        assert!(
            e["file"].as_str().unwrap().ends_with("hipaa.toml"),
            "{what}"
        );
        assert_eq!(
            e["old_digest"],
            sha256(&good),
            "{what}: the active version's digest"
        );
        assert_eq!(
            e["new_digest"],
            sha256(text),
            "{what}: the refused version's digest"
        );
        assert!(
            e["reason"].as_str().unwrap().contains("hipaa.toml"),
            "{what}: {e}"
        );
        // The last good policy is still the one deciding: the card is refused, nothing leaves.
        assert_eq!(
            card_under_hipaa(&veil).await,
            (403, "block".into()),
            "{what}"
        );
    }
    assert_eq!(veil.mock.hits(), 0);
    let metrics = veil
        .client
        .get(veil.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("veil_policy_reload_failures_total"),
        "refused reloads are counted"
    );
    // Decisions still carry the digest of the good file.
    let rows = veil.rows().await;
    for r in rows.iter().filter(|r| r.kind == "decision") {
        let d: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(d["policy_digest"], sha256(&good));
    }
    veil.stop().await;
}

#[tokio::test]
async fn a_file_still_being_written_is_not_loaded_and_an_accepted_reload_is_audited() {
    let (veil, dir) = reloading_veil(2000).await;
    let hipaa = dir.path().join("hipaa.toml");
    let good = std::fs::read_to_string(&hipaa).unwrap();
    // The writer stops at a line boundary before the rules: on its own this is a valid policy
    // that allows cards, and it must never become active.
    let partial = &good[..good.find("[[rules]]").unwrap()];
    let edited = good.replace(
        "description = \"HIPAA Safe Harbor",
        "description = \"(edited) HIPAA Safe Harbor",
    );
    std::fs::write(&hipaa, partial).unwrap();
    let until = tokio::time::Instant::now() + Duration::from_millis(1000);
    while tokio::time::Instant::now() < until {
        assert_eq!(card_under_hipaa(&veil).await, (403, "block".into()));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    std::fs::write(&hipaa, &edited).unwrap();
    let events = wait_events(&veil, 1).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["status"], "accepted");
    assert_eq!(events[0]["old_digest"], sha256(&good));
    assert_eq!(events[0]["new_digest"], sha256(&edited));
    assert_eq!(card_under_hipaa(&veil).await, (403, "block".into()));
    assert_eq!(veil.mock.hits(), 0);
    let rows = veil.rows().await;
    assert!(
        rows.iter().all(|r| !r.body.contains(&sha256(partial))),
        "the partial file was never loaded"
    );
    veil.stop().await;
}

#[tokio::test]
async fn a_request_in_flight_during_a_reload_finishes_with_the_version_it_started_with() {
    let (veil, dir) = reloading_veil(200).await;
    let default = dir.path().join("default.toml");
    let good = std::fs::read_to_string(&default).unwrap();
    veil.mock.set_mode(Mode::Delay(2500));
    let in_flight = veil.spawn_chat(KEY_DEFAULT, user("mail a.b@example.com"));
    // Wait until the request has been decided and is waiting on the upstream.
    for _ in 0..100 {
        if veil.mock.hits() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(veil.mock.hits(), 1);
    let blocking = good.replace(
        "entities = [\"EMAIL\", \"PHONE\", \"IP_ADDRESS\", \"ADDRESS\"]\naction = \"redact\"",
        "entities = [\"EMAIL\", \"PHONE\", \"IP_ADDRESS\", \"ADDRESS\"]\naction = \"block\"",
    );
    std::fs::write(&default, &blocking).unwrap();
    let events = wait_events(&veil, 1).await;
    assert_eq!(events[0]["status"], "accepted");
    veil.mock.set_mode(Mode::Echo);
    // New requests are decided by the new version...
    assert_eq!(
        code_for(&veil, "mail a.b@example.com").await,
        (403, "block".into())
    );
    // ...the one in flight ends as its version decided: redacted out, restored in the answer.
    let resp = in_flight.await.unwrap().unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-veil-action"], "redact");
    let body: Value = resp.json().await.unwrap();
    let answer = body["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(answer.contains("a.b@example.com"), "{answer}");
    assert!(!veil.mock.bodies()[0].contains("a.b@example.com"));
    assert_eq!(veil.mock.hits(), 1);
    let rows = veil.wait_rows(6).await;
    let digests: Vec<(String, String)> = rows
        .iter()
        .filter(|r| r.kind == "decision")
        .map(|r| {
            let d: Value = serde_json::from_str(&r.body).unwrap();
            (
                d["action"].as_str().unwrap().to_owned(),
                d["policy_digest"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        digests,
        vec![
            ("redact".to_owned(), sha256(&good)),
            ("block".to_owned(), sha256(&blocking))
        ]
    );
    veil.stop().await;
}
