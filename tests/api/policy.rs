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
        std::fs::copy(&p, dir.path().join(p.file_name().unwrap())).unwrap();
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
