//! What one durable audit commit costs, one request at a time, on the disk of `DIR`:
//!
//! 0. the floor of any durable write there: 1 KB written over a block of a file already
//!    allocated and flushed (`pwrite` + `fdatasync`, no metadata to journal), on this thread;
//! 1. the bare SQLite transaction the SQLite store runs (`BEGIN IMMEDIATE`, read the tail,
//!    insert, `COMMIT`, WAL, `synchronous = FULL`) on a thread of its own, asked and answered
//!    from a tokio task, as veil's writer is;
//! 2. the same transaction through sqlx's asynchronous driver (every statement a hand-off to the
//!    connection's thread), as veil's writer ran it before issue 27;
//! 3. `AuditLog::seal` of a decision: queue, chain, MAC, commit, acknowledge.
//!
//! `cargo run --release --example commit_latency [-- DIR [COMMITS]]` (DIR defaults to the
//! current directory: a scratch directory is made in it and removed). Prints p50/p90/p99.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::str::FromStr;
use std::time::{Duration, Instant};

use sqlx::ConnectOptions as _;
use veil::audit::{AuditLog, ChainKey, DecisionRecord, OutcomeRecord, Sealing};

const TRANSACTION: [&str; 4] = [
    "BEGIN IMMEDIATE",
    "SELECT seq FROM t ORDER BY seq DESC LIMIT 1",
    "INSERT INTO t (hash, body) VALUES (?1, ?2)",
    "COMMIT",
];

fn percentiles(mut v: Vec<f64>) -> String {
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() as f64 * q) as usize).min(v.len() - 1)] * 1e3;
    format!(
        "p50 {:.3} ms  p90 {:.3} ms  p99 {:.3} ms",
        at(0.5),
        at(0.9),
        at(0.99)
    )
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let base = args.next().unwrap_or_else(|| ".".to_owned());
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(3_000);
    let dir = tempfile::tempdir_in(base).unwrap();
    let (hash, body) = ("h".repeat(64), "x".repeat(600));

    let flushed = {
        use std::os::unix::fs::FileExt as _;
        let f = std::fs::File::create(dir.path().join("flush.bin")).unwrap();
        f.write_all_at(&vec![0u8; 1 << 20], 0).unwrap();
        f.sync_all().unwrap();
        let block = [b'x'; 1024];
        (0..n)
            .map(|i| {
                let started = Instant::now();
                f.write_all_at(&block, (i as u64 % 1024) * 1024).unwrap();
                f.sync_data().unwrap();
                started.elapsed().as_secs_f64()
            })
            .collect::<Vec<_>>()
    };
    println!("pwrite + fdatasync (floor)     {}", percentiles(flushed));

    let path = dir.path().join("thread.db");
    let (tx, mut rx) = tokio::sync::mpsc::channel::<tokio::sync::oneshot::Sender<()>>(64);
    let (h, b) = (hash.clone(), body.clone());
    std::thread::spawn(move || {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.pragma_update(None, "journal_mode", "WAL").unwrap();
        c.pragma_update(None, "synchronous", "FULL").unwrap();
        c.execute_batch("CREATE TABLE t (seq INTEGER PRIMARY KEY, hash TEXT, body TEXT)")
            .unwrap();
        while let Some(ack) = rx.blocking_recv() {
            c.execute_batch(TRANSACTION[0]).unwrap();
            let _tail: Option<i64> = c.query_row(TRANSACTION[1], [], |r| r.get(0)).ok();
            c.execute(TRANSACTION[2], [&h, &b]).unwrap();
            c.execute_batch(TRANSACTION[3]).unwrap();
            let _ = ack.send(());
        }
    });
    let mut times = Vec::new();
    for _ in 0..n {
        let started = Instant::now();
        let (ack, done) = tokio::sync::oneshot::channel();
        tx.send(ack).await.unwrap();
        done.await.unwrap();
        times.push(started.elapsed().as_secs_f64());
    }
    println!("SQLite on its own thread       {}", percentiles(times));

    let options = sqlx::sqlite::SqliteConnectOptions::from_str(&format!(
        "sqlite://{}",
        dir.path().join("sqlx.db").display()
    ))
    .unwrap()
    .create_if_missing(true)
    .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
    .synchronous(sqlx::sqlite::SqliteSynchronous::Full);
    let mut c = options.connect().await.unwrap();
    sqlx::query("CREATE TABLE t (seq INTEGER PRIMARY KEY, hash TEXT, body TEXT)")
        .execute(&mut c)
        .await
        .unwrap();
    let mut times = Vec::new();
    for _ in 0..n {
        let started = Instant::now();
        sqlx::query(TRANSACTION[0]).execute(&mut c).await.unwrap();
        sqlx::query(TRANSACTION[1])
            .fetch_optional(&mut c)
            .await
            .unwrap();
        sqlx::query(TRANSACTION[2])
            .bind(&hash)
            .bind(&body)
            .execute(&mut c)
            .await
            .unwrap();
        sqlx::query(TRANSACTION[3]).execute(&mut c).await.unwrap();
        times.push(started.elapsed().as_secs_f64());
    }
    println!("SQLite through sqlx            {}", percentiles(times));

    let sealing = Sealing {
        key: ChainKey::new(&[7; 32]).unwrap(),
        checkpoints: None,
        retention_days: None,
    };
    let url = format!("sqlite://{}", dir.path().join("audit.db").display());
    let (log, writer) = AuditLog::open(&url, Duration::from_secs(30), 8_192, sealing)
        .await
        .unwrap();
    let mut times = Vec::new();
    for i in 0..n {
        let id = format!("r{i}");
        let decision = DecisionRecord {
            request_id: id.clone(),
            action: "allow".into(),
            client_addr: "10.0.0.7:51234".into(),
            endpoint: "/v1/chat/completions".into(),
            ..Default::default()
        };
        let started = Instant::now();
        log.seal(decision, ()).await.unwrap();
        times.push(started.elapsed().as_secs_f64());
        log.finish(OutcomeRecord {
            request_id: id,
            outcome: "completed".into(),
            status: 200,
            ..Default::default()
        })
        .await
        .unwrap();
    }
    println!("AuditLog::seal (a decision)    {}", percentiles(times));
    drop(log);
    assert_eq!(writer.finish(Duration::from_secs(10)).await, 0);
}
