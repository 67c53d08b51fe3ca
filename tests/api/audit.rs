//! The audit trail: one record per request, durable before egress, no raw text anywhere.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::helpers::*;

const CANARY_CARD: &str = "4000056655665556";
const CANARY_SSN: &str = "219-09-9999";
const CANARY_EMAIL: &str = "canary.person@example.org";
const CANARY_TEXT: &str = "zebra-marmalade-47";

#[tokio::test]
async fn every_request_leaves_one_record_without_raw_text() {
    let veil = Veil::start().await;
    let requests = vec![
        (
            KEY_DEFAULT,
            user(&format!("card {CANARY_CARD} {CANARY_TEXT}")),
        ),
        (
            KEY_DEFAULT,
            user(&format!("ssn {CANARY_SSN} {CANARY_TEXT}")),
        ),
        (
            KEY_DEFAULT,
            user(&format!("mail {CANARY_EMAIL} {CANARY_TEXT}")),
        ),
        (KEY_DEFAULT, user(&format!("plain {CANARY_TEXT}"))),
        ("bad-key", user(&format!("mail {CANARY_EMAIL}"))),
    ];
    let mut ids = Vec::new();
    for (key, body) in &requests {
        let resp = veil.chat(key, body.clone()).await;
        ids.push(
            resp.headers()["x-veil-request-id"]
                .to_str()
                .unwrap()
                .to_owned(),
        );
        let _ = resp.bytes().await;
    }
    let mut streamed = user(&format!("mail {CANARY_EMAIL} {CANARY_TEXT}"));
    streamed["stream"] = json!(true);
    let resp = veil.chat(KEY_DEFAULT, streamed).await;
    ids.push(
        resp.headers()["x-veil-request-id"]
            .to_str()
            .unwrap()
            .to_owned(),
    );
    let _ = sse_data(resp).await;

    let rows = veil.wait_rows(2 * ids.len()).await;
    let mut kinds: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in &rows {
        kinds
            .entry(r.request_id.clone())
            .or_default()
            .push(r.kind.clone());
    }
    assert_eq!(kinds.len(), ids.len());
    for id in &ids {
        assert_eq!(
            kinds.get(id),
            Some(&vec!["decision".to_owned(), "outcome".to_owned()]),
            "{id}"
        );
    }
    let actions: Vec<_> = rows.iter().filter_map(|r| r.action.clone()).collect();
    assert_eq!(
        actions,
        vec!["block", "local", "redact", "allow", "reject", "redact"]
    );
    assert!(veil::audit::verify(&rows).is_empty(), "hash chain intact");

    // The redact record carries types, offsets and HMACs — and no value.
    let redact: Value = serde_json::from_str(&rows[4].body).unwrap();
    let email = &redact["entities"][0];
    assert_eq!(email["entity"], "EMAIL");
    assert_eq!(email["spans"][0]["field"], "messages[0].content");
    assert_eq!(email["spans"][0]["start"], 5);
    assert_eq!(email["spans"][0]["hmac"].as_str().unwrap().len(), 16);
    assert!(redact["policy_digest"].as_str().unwrap().len() == 64);
}

#[tokio::test]
async fn canaries_never_reach_the_database_files() {
    let veil = Veil::start().await;
    for text in [
        format!("card {CANARY_CARD} {CANARY_TEXT}"),
        format!("ssn {CANARY_SSN} {CANARY_TEXT}"),
        format!("mail {CANARY_EMAIL} {CANARY_TEXT}"),
    ] {
        let _ = veil.chat(KEY_DEFAULT, user(&text)).await.bytes().await;
        let mut s = user(&text);
        s["stream"] = json!(true);
        let _ = sse_data(veil.chat(KEY_DEFAULT, s).await).await;
    }
    let _ = veil.wait_rows(12).await;
    let db = veil.db.clone();
    // Read while running (WAL not yet checkpointed), then every file after shutdown.
    let mut bytes = veil.db_bytes();
    assert!(
        contains(&bytes, "audit_log"),
        "the sweep reads the real database"
    );
    let Veil { running, dir, .. } = veil;
    if let Some(r) = running {
        r.shutdown().await;
    }
    // An export of the whole log joins the sweep, as do the checkpoint and key files.
    let export = dir.path().join("export");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_veil"))
        .args(["--config", "/nonexistent/veil.toml", "audit", "export"])
        .args(["--db", &format!("sqlite://{}", db.display())])
        .arg(&export)
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let checkpoints = dir.path().join("audit-checkpoints.jsonl");
    assert!(
        std::fs::read_to_string(&checkpoints).is_ok_and(|t| t.contains("signature")),
        "the sweep reads the checkpoint file"
    );
    let mut files = 0;
    for sub in [dir.path().to_owned(), export] {
        for entry in std::fs::read_dir(sub).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() {
                bytes.extend(std::fs::read(path).unwrap_or_default());
                files += 1;
            }
        }
    }
    assert!(
        files >= 8,
        "database, keys, checkpoints and the export's four files"
    );
    assert!(db.exists());
    for canary in [CANARY_CARD, CANARY_SSN, CANARY_EMAIL, CANARY_TEXT] {
        assert!(
            !contains(&bytes, canary),
            "canary {canary} found in the audit files"
        );
    }
}

#[tokio::test]
async fn audit_outage_fails_closed_with_zero_egress() {
    // 1 s: room for the write after the outage when the whole suite loads the machine.
    let veil = Veil::start_with(|c| c.audit.write_timeout_ms = 1000).await;
    // Another process holds the write lock: writes wait and time out.
    let url = format!("sqlite://{}", veil.db.display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let mut conn = pool.acquire().await.unwrap();
    sqlx::query("BEGIN EXCLUSIVE")
        .execute(&mut *conn)
        .await
        .unwrap();
    let resp = veil.chat(KEY_DEFAULT, user("hello there")).await;
    assert_eq!(resp.status(), 503);
    let refused = resp.headers()["x-veil-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["error"]["code"], "audit_unavailable");
    assert_eq!(
        veil.mock.hits(),
        0,
        "nothing leaves without a durable decision"
    );
    let ready = veil.client.get(veil.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    sqlx::query("ROLLBACK").execute(&mut *conn).await.unwrap();
    drop(conn);
    // The writer retries the refused request's rows by itself and becomes ready again.
    assert!(
        veil.wait_ready().await,
        "/readyz recovers once the database is back"
    );
    let resp = veil.chat(KEY_DEFAULT, user("hello again")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(veil.mock.hits(), 1);
    // The refused request left exactly one decision and one outcome, in order.
    let rows = veil.wait_rows(4).await;
    let trail: Vec<_> = rows
        .iter()
        .filter(|r| r.request_id == refused)
        .map(|r| (r.kind.as_str(), r.outcome.as_deref()))
        .collect();
    assert_eq!(
        trail,
        [("decision", None), ("outcome", Some("audit_unavailable"))]
    );
    assert!(veil::audit::verify(&rows).is_empty(), "hash chain intact");
}

fn verify_cli(db: &std::path::Path) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_veil"))
        .args(["--config", repo().join("veil.toml").to_str().unwrap()])
        .args(["audit", "verify"])
        .env("VEIL_AUDIT_URL", format!("sqlite://{}", db.display()))
        .env("RUST_LOG", "error")
        .output()
        .unwrap()
}

fn file_bytes(path: &std::path::Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_default()
}

#[tokio::test]
async fn verify_reads_only_and_refuses_a_missing_database() {
    // Missing: an error, and nothing is created.
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nowhere/audit.db");
    let o = verify_cli(&missing);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no audit database at"));
    assert!(!dir.path().join("nowhere").exists());

    // Live, with a request whose decision is written and whose outcome is not yet: verify
    // neither writes an `outcome_unknown` for it nor changes a byte of the database.
    let veil = Veil::start().await;
    veil.mock.set_mode(Mode::StallMidStream);
    let mut body = user("stream please");
    body["stream"] = json!(true);
    let resp = veil.chat(KEY_DEFAULT, body).await;
    assert_eq!(resp.status(), 200);
    let rows = veil.wait_rows(1).await;
    assert_eq!(
        rows.len(),
        1,
        "the decision is written, the outcome is pending"
    );
    let before = (
        file_bytes(&veil.db),
        file_bytes(&veil.db.with_extension("db-wal")),
    );
    let o = verify_cli(&veil.db);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // The server's key files beside the database are found: the MACs are checked too.
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "ok: 1 rows, chain intact; MACs checked; 0 signed checkpoint(s) matched\n"
    );
    let after = (
        file_bytes(&veil.db),
        file_bytes(&veil.db.with_extension("db-wal")),
    );
    assert!(before == after, "verify changed the database");
    // The stream ends (idle timeout); its one outcome is the real one.
    let _ = sse_data(resp).await;
    let rows = veil.wait_rows(2).await;
    let outcomes: Vec<_> = rows.iter().filter(|r| r.kind == "outcome").collect();
    assert_eq!(outcomes.len(), 1);
    assert_eq!(outcomes[0].outcome.as_deref(), Some("upstream_error"));
    veil.stop().await;
}

#[tokio::test]
async fn a_second_server_on_the_same_sqlite_file_is_refused() {
    let first = Veil::start().await;
    let url = format!("sqlite://{}", first.db.display());
    let mock = Mock::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(&mock, dir.path());
    c.audit.url = url.clone();
    let err = veil::server::start(c.clone(), env)
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.contains("another veil server is writing the audit database"),
        "{err}"
    );
    // Once the first one has stopped, the file is free.
    first.stop().await;
    let second = veil::server::start(c, env)
        .await
        .expect("starts once the file is free");
    second.shutdown().await;
}

fn query_cli(db: &std::path::Path, args: &[&str]) -> String {
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_veil"))
        .args(["--config", repo().join("veil.toml").to_str().unwrap()])
        .args(["audit", "query"])
        .args(args)
        .env("VEIL_AUDIT_URL", format!("sqlite://{}", db.display()))
        .env("VEIL_HMAC_KEY", "test-hmac-key")
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[tokio::test]
async fn auditors_query_by_filter_and_by_value_without_the_log_holding_it() {
    let mut veil = Veil::start().await;
    for (key, text) in [
        (KEY_DEFAULT, "my SSN is 536-22-8745"),
        (KEY_HIPAA, "SSN 536 22 8745 for the claim"),
        (KEY_DEFAULT, "mail jane.morrow@example.com"),
        (KEY_DEFAULT, "charge 4111 1111 1111 1111"),
        (KEY_DEFAULT, "what is a mutex?"),
    ] {
        let _ = veil.chat(key, user(text)).await.bytes().await;
    }
    veil.wait_rows(10).await;
    let db = veil.db.clone();
    // Stopped, but its temporary directory (and the database) kept.
    if let Some(r) = veil.running.take() {
        r.shutdown().await;
    }

    // "Did this SSN go anywhere?" — both spellings, found by digest.
    let out = query_cli(
        &db,
        &[
            "--value",
            "536-22-8745",
            "--type",
            "SSN",
            "--format",
            "jsonl",
        ],
    );
    let rows: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2, "{out}");
    assert!(
        rows.iter()
            .all(|r| r["action"] == "local" && r["entities"]["SSN"] == 1)
    );
    for raw in ["536-22-8745", "536 22 8745", "536228745"] {
        assert!(!out.contains(raw), "{out}");
    }

    let out = query_cli(&db, &["--action", "block", "--format", "jsonl"]);
    let rows: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["rules"], json!(["pci.card.block"]));
    assert_eq!(rows[0]["status"], 403);

    let out = query_cli(
        &db,
        &["--entity", "EMAIL", "--route", "mock", "--format", "csv"],
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0],
        "ts,request_id,tenant,key_id,action,route,rules,entities,outcome,status"
    );
    assert_eq!(lines.len(), 2, "{out}");
    assert!(
        lines[1].contains(",k-default,redact,mock,contact.redact,EMAILx1,completed,200"),
        "{out}"
    );

    let out = query_cli(&db, &["--key", "k-hipaa"]);
    assert!(out.ends_with("1 request(s)\n"), "{out}");
    let out = query_cli(&db, &["--rule", "identifiers.local"]);
    assert!(out.ends_with("1 request(s)\n"), "{out}");
    let out = query_cli(&db, &["--to", "2000-01-01"]);
    assert!(out.ends_with("0 request(s)\n"), "{out}");

    let stats = query_cli(&db, &["--stats"]);
    assert!(stats.starts_with("5 request(s)\n"), "{stats}");
    for line in [
        "  local                    2",
        "  block                    1",
        "  SSN                      2",
        "  test                     5",
    ] {
        assert!(stats.contains(line), "{line:?} in {stats}");
    }
}

#[tokio::test]
async fn verify_reports_the_first_broken_link_as_json_and_checks_ranges() {
    let mut veil = Veil::start().await;
    for text in ["one", "two", "three"] {
        let _ = veil.chat(KEY_DEFAULT, user(text)).await.bytes().await;
    }
    veil.wait_rows(6).await;
    let db = veil.db.clone();
    if let Some(r) = veil.running.take() {
        r.shutdown().await;
    }
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_veil"))
            .args([
                "audit",
                "verify",
                "--db",
                &format!("sqlite://{}", db.display()),
            ])
            .args(args)
            .env("RUST_LOG", "error")
            .output()
            .unwrap()
    };
    let o = run(&["--from", "3", "--to", "4", "--json"]);
    assert_eq!(o.status.code(), Some(0));
    let doc: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (doc["rows"].clone(), doc["intact"].clone()),
        (json!(2), json!(true))
    );

    // Someone with write access drops the guard and edits an outcome.
    {
        use sqlx::Connection;
        let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
            .await
            .unwrap();
        sqlx::query("DROP TRIGGER audit_log_no_update")
            .execute(&mut conn)
            .await
            .unwrap();
        sqlx::query(
            "UPDATE audit_log SET body = replace(body, 'completed', 'blocked') WHERE seq = 4",
        )
        .execute(&mut conn)
        .await
        .unwrap();
    }
    let o = run(&["--json"]);
    assert_eq!(o.status.code(), Some(1));
    let doc: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(doc["intact"], false);
    assert_eq!(doc["first_problem"]["seq"], 4);
    let o = run(&[]);
    assert!(
        String::from_utf8_lossy(&o.stdout)
            .ends_with("1 problem(s) in 6 rows; the first at seq 4\n"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
}

const ADMIN_TOKEN: &str = "test-admin-token";

#[tokio::test]
async fn the_admin_api_answers_only_the_admin_token_and_audits_every_read() {
    // Off unless configured.
    let off = Veil::start().await;
    let resp = off
        .client
        .get(off.url("/admin/audit"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["error"]["code"], "admin_disabled");
    off.stop().await;

    let veil = Veil::start_with(|c| {
        c.admin.token_sha256 = Some(veil::auth::hash_key(ADMIN_TOKEN));
    })
    .await;
    let _ = veil
        .chat(KEY_DEFAULT, user("charge 4111 1111 1111 1111"))
        .await
        .bytes()
        .await;
    let _ = veil
        .chat(KEY_DEFAULT, user("mail a.b@example.com"))
        .await
        .bytes()
        .await;
    let get = |path: &str, token: Option<&str>| {
        let mut req = veil.client.get(veil.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send()
    };
    // An API key, or no token: refused, and the attempt is recorded with the key's id.
    for token in [Some(KEY_DEFAULT), None, Some("guess")] {
        let resp = get("/admin/audit", token).await.unwrap();
        assert_eq!(resp.status(), 403, "{token:?}");
        let err: Value = resp.json().await.unwrap();
        assert_eq!(err["error"]["code"], "admin_forbidden");
    }
    let resp = get("/admin/audit?action=block", Some(ADMIN_TOKEN))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    let data = body["data"].as_array().unwrap();
    assert_eq!(data.len(), 1);
    assert_eq!(data[0]["rules"], json!(["pci.card.block"]));
    let stats: Value = get("/admin/audit/stats", Some(ADMIN_TOKEN))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["by_action"]["block"], 1);
    assert_eq!(stats["by_action"]["redact"], 1);
    let verify: Value = get("/admin/audit/verify", Some(ADMIN_TOKEN))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(verify["intact"], true);
    let resp = get("/admin/audit?smuggled=1", Some(ADMIN_TOKEN))
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);

    // Every admin request is itself in the log: 3 refused, 3 answered, 1 malformed.
    let rows = veil.wait_rows(4 + 2 * 7).await;
    let admin: Vec<Value> = rows
        .iter()
        .filter(|r| r.kind == "decision")
        .map(|r| serde_json::from_str::<Value>(&r.body).unwrap())
        .filter(|d| d["endpoint"].as_str().unwrap().starts_with("/admin/"))
        .collect();
    assert_eq!(admin.len(), 7);
    assert_eq!(admin[0]["key_id"], "k-default");
    assert_eq!(admin[0]["reason_code"], "admin_forbidden");
    assert_eq!(
        admin
            .iter()
            .filter(|d| d["key_id"] == "admin" && d["action"] == "allow")
            .count(),
        3
    );
    assert!(!contains(&veil.db_bytes(), ADMIN_TOKEN));
    veil.stop().await;
}
