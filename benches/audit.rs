#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Audit log throughput and query latency, on SQLite and PostgreSQL.
//!
//! - `write`: requests as the server makes them — `seal` a decision (durable before it
//!   returns), then `finish` its outcome — from many concurrent tasks; prints decisions/s.
//!   Target: at least 5,000 decisions/s on each store.
//! - `query`: a log of 10 million rows (5 million requests, 10 tenants, 30 days), generated in
//!   SQL; times `veil audit query` and `--stats` for one tenant and one day. Target: under 1 s.
//!
//! Run: `make bench-audit` (or `cargo bench --bench audit -- write|query [sqlite|postgres]`).
//! PostgreSQL: `VEIL_TEST_POSTGRES_URL`, else postgres://postgres@127.0.0.1:5432/test.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::Connection as _;
use veil::audit::{
    AuditLog, ChainKey, Checkpointing, DecisionRecord, EntityRecord, OutcomeRecord, Query, Sealing,
    Signer, SpanRecord,
};

fn admin_url() -> String {
    std::env::var("VEIL_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

async fn fresh_postgres(name: &str) -> String {
    let admin = admin_url();
    let mut c = sqlx::PgConnection::connect(&admin).await.unwrap();
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut c)
        .await
        .unwrap();
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut c)
        .await
        .unwrap();
    let (base, _) = admin.rsplit_once('/').unwrap();
    format!("{base}/{name}")
}

fn decision(id: String, tenant: usize) -> DecisionRecord {
    DecisionRecord {
        request_id: id,
        key_id: Some(format!("k-{tenant}")),
        tenant: Some(format!("tenant-{tenant}")),
        client_addr: "10.0.0.7:51234".into(),
        endpoint: "/v1/chat/completions".into(),
        model: Some("gpt-4o-mini".into()),
        action: "redact".into(),
        route: Some("openai".into()),
        policy: Some("hipaa".into()),
        policy_digest: Some("ab".repeat(32)),
        detectors: vec!["patterns-1".into(), "classifier-3".into()],
        entities: vec![EntityRecord {
            entity: "PERSON".into(),
            count: 1,
            spans: vec![SpanRecord {
                field: "messages[0].content".into(),
                start: 12,
                end: 22,
                score: 0.93,
                recognizer: "classifier".into(),
                hmac: "0123456789abcdef".into(),
            }],
        }],
        scan_ms: 1.7,
        ..Default::default()
    }
}

async fn write(url: &str, label: &str, requests: usize, concurrency: usize) {
    let dir = tempfile::tempdir().unwrap();
    let sealing = Sealing {
        key: ChainKey::new(&[7; 32]).unwrap(),
        checkpoints: Some(Checkpointing {
            signer: Signer::from_seed(&[8; 32]),
            file: Some(dir.path().join("checkpoints.jsonl")),
            every_rows: 1_000,
            every: Duration::from_secs(60),
        }),
        retention_days: None,
    };
    let (log, task) = AuditLog::open(url, Duration::from_secs(30), 8_192, sealing)
        .await
        .unwrap();
    let log = Arc::new(log);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..concurrency {
        let log = log.clone();
        let label = label.to_owned();
        tasks.push(tokio::spawn(async move {
            for i in (t..requests).step_by(concurrency) {
                let id = format!("{label}-{i}");
                log.seal(decision(id.clone(), i % 10), ()).await.unwrap();
                log.finish(OutcomeRecord {
                    request_id: id,
                    outcome: "completed".into(),
                    status: 200,
                    total_ms: 12.5,
                    ..Default::default()
                })
                .await
                .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let secs = started.elapsed().as_secs_f64();
    drop(log);
    assert_eq!(task.finish(Duration::from_secs(30)).await, 0);
    println!(
        "{label:8} {requests} requests, {concurrency} concurrent: {:.0} decisions/s ({:.0} rows/s), {secs:.2} s",
        requests as f64 / secs,
        2.0 * requests as f64 / secs
    );
}

/// A decision body and an outcome body as the writer stores them (the hash columns are filler:
/// the query benchmark does not verify).
const DECISION_BODY: &str = r#"{"key_id":"k-T","tenant":"tenant-T","client_addr":"10.0.0.7:51234","endpoint":"/v1/chat/completions","model":"gpt-4o-mini","action":"redact","route":"openai","reason_code":null,"rules":[{"rule":"hipaa.names.redact","why":"PERSON found"}],"policy":"hipaa","policy_digest":"abab","detectors":["patterns-1"],"entities":[{"entity":"PERSON","count":1,"spans":[{"field":"messages[0].content","start":12,"end":22,"score":0.93,"recognizer":"classifier","hmac":"0123456789abcdef"}]}],"unscannable":[],"scan_ms":1.7,"stream":false}"#;
const OUTCOME_BODY: &str = r#"{"outcome":"completed","status":200,"error_code":null,"upstream_ms":300.0,"total_ms":312.5,"prompt_tokens":120,"completion_tokens":80}"#;

/// SQL that fills `audit_log` with `n` requests (2n rows): request i is tenant i % 10, on day
/// (i * 30 / n) of November 2026.
fn fill_sql(n: u64, postgres: bool) -> Vec<String> {
    let ts = |seq: &str| {
        if postgres {
            format!(
                "to_char(timestamp '2026-11-01' + (({seq} * 30.0 / {n})::float8 * interval '1 day'), 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"
            )
        } else {
            format!(
                "strftime('%Y-%m-%dT%H:%M:%SZ', '2026-11-01', '+' || ({seq} * 30.0 / {n}) || ' days')"
            )
        }
    };
    let series = if postgres {
        format!("generate_series(0, {}) AS g(i)", n - 1)
    } else {
        format!(
            "(WITH RECURSIVE c(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM c WHERE i < {}) SELECT i FROM c) g",
            n - 1
        )
    };
    let tenant = "'tenant-' || (i % 10)";
    let d_body = format!(
        "replace('{}', 'T\",', (i % 10) || '\",')",
        DECISION_BODY.replace('\'', "''")
    );
    vec![
        format!(
            "INSERT INTO audit_log (seq, request_id, kind, ts, tenant, action, outcome, status, body, prev_hash, hash, scheme, mac) \
             SELECT 2 * i + 1, 'r-' || i, 'decision', {}, {tenant}, 'redact', NULL, NULL, {d_body}, 'x', 'x', 'v2', 'x' FROM {series}",
            ts("i")
        ),
        format!(
            "INSERT INTO audit_log (seq, request_id, kind, ts, tenant, action, outcome, status, body, prev_hash, hash, scheme, mac) \
             SELECT 2 * i + 2, 'r-' || i, 'outcome', {}, NULL, NULL, 'completed', 200, '{}', 'x', 'x', 'v2', 'x' FROM {series}",
            ts("i"),
            OUTCOME_BODY
        ),
    ]
}

async fn query(url: &str, label: &str, postgres: bool, requests: u64) {
    // Create and migrate through veil itself, then fill in SQL.
    {
        let store = veil::audit::open_writer(url).await.unwrap();
        drop(store);
    }
    let filled = Instant::now();
    if postgres {
        let mut c = sqlx::PgConnection::connect(url).await.unwrap();
        for s in fill_sql(requests, true) {
            sqlx::query(&s).execute(&mut c).await.unwrap();
        }
        sqlx::query("ANALYZE audit_log")
            .execute(&mut c)
            .await
            .unwrap();
        c.close().await.unwrap();
    } else {
        let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
        for s in fill_sql(requests, false) {
            sqlx::query(&s).execute(&mut c).await.unwrap();
        }
        sqlx::query("ANALYZE").execute(&mut c).await.unwrap();
        c.close().await.unwrap();
    }
    println!(
        "{label:8} filled {} rows in {:.0} s",
        2 * requests,
        filled.elapsed().as_secs_f64()
    );
    let store = veil::audit::open_read_only(url).await.unwrap();
    let q = Query {
        tenant: Some("tenant-3".into()),
        from: Some("2026-11-17".into()),
        to: Some("2026-11-18".into()),
        ..Default::default()
    };
    for round in 0..3 {
        let t = Instant::now();
        let rows = store.query(&q).await.unwrap();
        let query_ms = t.elapsed().as_secs_f64() * 1e3;
        let t = Instant::now();
        let stats = store.stats(&q).await.unwrap();
        let stats_ms = t.elapsed().as_secs_f64() * 1e3;
        let t = Instant::now();
        let q_entity = Query {
            entity: Some("PERSON".into()),
            limit: Some(100),
            ..q.clone()
        };
        let few = store.query(&q_entity).await.unwrap();
        let entity_ms = t.elapsed().as_secs_f64() * 1e3;
        println!(
            "{label:8} round {round}: query one tenant/day -> {} requests in {query_ms:.0} ms; \
             --stats ({} requests) in {stats_ms:.0} ms; --entity PERSON --limit 100 -> {} in {entity_ms:.0} ms",
            rows.len(),
            stats.requests,
            few.len()
        );
    }
}

#[tokio::main]
async fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this binary without it,
    // and then it only checks that the benchmark works, with a few requests.
    if !std::env::args().any(|a| a == "--bench") {
        let dir = tempfile::tempdir().unwrap();
        let sqlite = format!("sqlite://{}", dir.path().join("smoke.db").display());
        write(&sqlite, "sqlite", 200, 8).await;
        write(
            &fresh_postgres("veil_bench_smoke").await,
            "postgres",
            200,
            8,
        )
        .await;
        return;
    }
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let what = args.first().map_or("write", String::as_str);
    let stores: Vec<&str> = match args.get(1).map(String::as_str) {
        Some(s) => vec![s],
        None => vec!["sqlite", "postgres"],
    };
    let dir = tempfile::tempdir().unwrap();
    for store in stores {
        let postgres = store == "postgres";
        let url = if postgres {
            fresh_postgres(&format!("veil_bench_{what}")).await
        } else {
            format!(
                "sqlite://{}",
                dir.path().join(format!("{what}.db")).display()
            )
        };
        match what {
            "write" => {
                for concurrency in [1, 64, 256] {
                    let requests = if concurrency == 1 { 2_000 } else { 50_000 };
                    let url = if postgres {
                        fresh_postgres(&format!("veil_bench_w{concurrency}")).await
                    } else {
                        format!(
                            "sqlite://{}",
                            dir.path().join(format!("w{concurrency}.db")).display()
                        )
                    };
                    write(&url, store, requests, concurrency).await;
                }
            }
            "query" => {
                let requests = std::env::var("VEIL_BENCH_REQUESTS")
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(5_000_000);
                query(&url, store, postgres, requests).await;
            }
            other => panic!("unknown benchmark {other}; use write or query"),
        }
    }
}
