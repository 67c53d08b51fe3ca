//! Tamper evidence, end to end: a real writer fills a log, the test tampers with it in SQL the
//! way someone with database access could (triggers dropped, public hashes recomputed), and
//! `veil audit verify` must say where. The six cases of the issue — an update of any column, a
//! delete, a reorder, an insert (re-chained too), a cut tail, an older copy of the database —
//! plus a downgrade to the unkeyed scheme and exports.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use sqlx::Connection as _;
use veil::audit::{
    AuditLog, ChainKey, Checkpointing, DecisionRecord, OutcomeRecord, Sealing, Signer, StoredRow,
};

const CHAIN_KEY: &str = "test-chain-key-0123456789abcdef";
const SEED: [u8; 32] = [5; 32];

/// A log written by a real writer, and where its evidence lives.
struct Log {
    dir: tempfile::TempDir,
    url: String,
    db: Db,
}

enum Db {
    Sqlite(PathBuf),
    Postgres { admin: String, name: String },
}

impl Drop for Log {
    fn drop(&mut self) {
        if let Db::Postgres { admin, name } = &self.db {
            let (admin, name) = (admin.clone(), name.clone());
            // A runtime of its own: drop may run inside or outside one.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    if let Ok(mut c) = sqlx::PgConnection::connect(&admin).await {
                        let _ =
                            sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                                .execute(&mut c)
                                .await;
                    }
                });
            })
            .join();
        }
    }
}

#[derive(Clone, Copy)]
enum Backend {
    Sqlite,
    Postgres,
}

/// The PostgreSQL server the tests use: `VEIL_TEST_POSTGRES_URL`, else the local one. The tests
/// never skip: without a server they fail.
fn postgres_admin_url() -> String {
    std::env::var("VEIL_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

fn with_database(url: &str, name: &str) -> String {
    let (base, _) = url.rsplit_once('/').unwrap();
    format!("{base}/{name}")
}

impl Log {
    async fn new(backend: Backend) -> Self {
        let dir = tempfile::tempdir().unwrap();
        match backend {
            Backend::Sqlite => {
                let path = dir.path().join("audit.db");
                Self {
                    url: format!("sqlite://{}", path.display()),
                    db: Db::Sqlite(path),
                    dir,
                }
            }
            Backend::Postgres => {
                let admin = postgres_admin_url();
                let name = format!("veil_test_{}", uuid::Uuid::new_v4().simple());
                let mut c = sqlx::PgConnection::connect(&admin)
                    .await
                    .unwrap_or_else(|e| {
                        panic!("PostgreSQL at {admin} (set VEIL_TEST_POSTGRES_URL): {e}")
                    });
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&mut c)
                    .await
                    .unwrap();
                Self {
                    url: with_database(&admin, &name),
                    db: Db::Postgres { admin, name },
                    dir,
                }
            }
        }
    }

    fn checkpoints(&self) -> PathBuf {
        self.dir.path().join("checkpoints.jsonl")
    }

    fn public_key(&self) -> PathBuf {
        self.dir.path().join("signing.pub")
    }

    /// Writes `requests` requests (two rows each), signing a checkpoint every 4 rows and at
    /// shutdown.
    async fn write(&self, first: usize, requests: usize) {
        let sealing = Sealing {
            key: ChainKey::new(CHAIN_KEY.as_bytes()).unwrap(),
            checkpoints: Some(Checkpointing {
                signer: Signer::from_seed(&SEED),
                file: Some(self.checkpoints()),
                every_rows: 4,
                every: Duration::from_secs(3600),
            }),
            retention_days: None,
        };
        let signer = Signer::from_seed(&SEED);
        std::fs::write(
            self.public_key(),
            veil::audit::checkpoint::public_hex(&signer.public()),
        )
        .unwrap();
        let (log, task) = AuditLog::open(&self.url, Duration::from_secs(10), 64, sealing)
            .await
            .unwrap();
        for i in first..first + requests {
            let id = format!("req-{i}");
            let decision = DecisionRecord {
                request_id: id.clone(),
                tenant: Some(if i % 2 == 0 { "clinic" } else { "billing" }.into()),
                action: if i % 3 == 0 { "block" } else { "redact" }.into(),
                ..Default::default()
            };
            let outcome = OutcomeRecord {
                request_id: id,
                outcome: if i % 3 == 0 { "blocked" } else { "completed" }.into(),
                status: if i % 3 == 0 { 403 } else { 200 },
                ..Default::default()
            };
            log.record(decision, outcome).await.unwrap();
        }
        drop(log);
        assert_eq!(task.finish(Duration::from_secs(10)).await, 0);
    }

    /// Runs `veil audit verify --json` with the checkpoint file and public key; `key`: whether
    /// the chain key is given.
    fn verify(&self, key: bool) -> (i32, Value) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_veil"));
        cmd.args([
            "--config",
            "/nonexistent/veil.toml",
            "audit",
            "verify",
            "--json",
        ])
        .args(["--db", &self.url])
        .arg("--checkpoints")
        .arg(self.checkpoints())
        .arg("--public-key")
        .arg(self.public_key())
        .env("RUST_LOG", "error")
        .env_remove("VEIL_AUDIT_CHAIN_KEY");
        if key {
            cmd.env("VEIL_AUDIT_CHAIN_KEY", CHAIN_KEY);
        }
        run_json(cmd)
    }

    async fn rows(&self) -> Vec<StoredRow> {
        let store = veil::audit::open_read_only(&self.url).await.unwrap();
        store.rows().await.unwrap()
    }

    /// Runs SQL as an attacker with full access: the append-only triggers are dropped first.
    async fn tamper(&self, statements: &[String]) {
        match &self.db {
            Db::Sqlite(path) => {
                let mut c =
                    sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
                        .await
                        .unwrap();
                for s in [
                    "DROP TRIGGER IF EXISTS audit_log_no_update",
                    "DROP TRIGGER IF EXISTS audit_log_no_delete",
                ] {
                    sqlx::query(s).execute(&mut c).await.unwrap();
                }
                for s in statements {
                    sqlx::query(s).execute(&mut c).await.unwrap();
                }
            }
            Db::Postgres { .. } => {
                let mut c = sqlx::PgConnection::connect(&self.url).await.unwrap();
                sqlx::query("ALTER TABLE audit_log DISABLE TRIGGER USER")
                    .execute(&mut c)
                    .await
                    .unwrap();
                for s in statements {
                    sqlx::query(s).execute(&mut c).await.unwrap();
                }
            }
        }
    }

    /// Replaces every row with `rows`, as someone rewriting the log would.
    async fn rewrite(&self, rows: &[StoredRow]) {
        let mut sql = vec!["DELETE FROM audit_log".to_owned()];
        for r in rows {
            sql.push(format!(
                "INSERT INTO audit_log (seq, request_id, kind, ts, tenant, action, outcome, status, \
                 body, prev_hash, hash, scheme, mac) VALUES ({}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {})",
                r.seq,
                lit(&r.request_id),
                lit(&r.kind),
                lit(&r.ts),
                opt(r.tenant.as_deref()),
                opt(r.action.as_deref()),
                opt(r.outcome.as_deref()),
                r.status.map_or("NULL".to_owned(), |s| s.to_string()),
                lit(&r.body),
                lit(&r.prev_hash),
                lit(&r.hash),
                lit(&r.scheme),
                opt(r.mac.as_deref()),
            ));
        }
        self.tamper(&sql).await;
    }
}

const COLUMNS: &str = "seq, request_id, kind, ts, tenant, action, outcome, status, body, prev_hash, hash, scheme, mac";

fn lit(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn opt(s: Option<&str>) -> String {
    s.map_or("NULL".to_owned(), lit)
}

fn run_json(mut cmd: Command) -> (i32, Value) {
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let doc: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {stdout}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), doc)
}

/// Recomputes every public hash and link from the first row on, as an attacker without the
/// chain key can; MACs stay as they were.
fn rechain(rows: &mut [StoredRow]) {
    let mut prev = veil::audit::GENESIS.to_owned();
    for (i, r) in rows.iter_mut().enumerate() {
        r.seq = i64::try_from(i).unwrap() + 1;
        r.prev_hash = prev;
        r.hash = r.content_hash();
        prev = r.hash.clone();
    }
}

fn first_problem(doc: &Value) -> (i64, String) {
    let p = &doc["first_problem"];
    (
        p["seq"].as_i64().unwrap_or(-1),
        p["problem"].as_str().unwrap_or_default().to_owned(),
    )
}

fn assert_found(doc: &Value, code: i32, seq: i64, needle: &str, case: &str) {
    assert_eq!(code, 1, "{case}: verify must fail: {doc:#}");
    let (at, problem) = first_problem(doc);
    assert_eq!(at, seq, "{case}: {doc:#}");
    assert!(problem.contains(needle), "{case}: {problem}");
}

async fn intact_log_verifies(backend: Backend) {
    let log = Log::new(backend).await;
    log.write(0, 5).await;
    let (code, doc) = log.verify(true);
    assert_eq!(code, 0, "{doc:#}");
    assert_eq!(doc["rows"], 10);
    assert_eq!(doc["macs_checked"], true);
    // Every 4 rows, and the last at shutdown: 4, 8, 10 — in the database and in the file.
    assert_eq!(doc["checkpoints_matched"], 3, "{doc:#}");
    assert_eq!(doc["last_checkpoint"], 10);
    let file = std::fs::read_to_string(log.checkpoints()).unwrap();
    assert_eq!(file.lines().count(), 3);
    // Every row is keyed.
    assert!(
        log.rows()
            .await
            .iter()
            .all(|r| r.scheme == "v2" && r.mac.is_some())
    );
}

async fn update_of_any_column(backend: Backend) {
    let edits = [
        ("action", "action = 'allow'"),
        ("tenant", "tenant = 'other'"),
        ("outcome", "outcome = 'blocked'"),
        ("status", "status = 500"),
        ("body", "body = '{}'"),
        ("ts", "ts = '2020-01-01T00:00:00Z'"),
        ("request_id", "request_id = 'forged'"),
        ("kind", "kind = 'event'"),
        ("hash", "hash = '00'"),
        ("mac", "mac = '00'"),
        ("scheme", "scheme = 'v3'"),
    ];
    for (column, set) in edits {
        let log = Log::new(backend).await;
        log.write(0, 5).await;
        // Row 3 is a decision (action, tenant) and row 4 an outcome (outcome, status).
        let seq = if matches!(column, "outcome" | "status") {
            4
        } else {
            3
        };
        log.tamper(&[format!("UPDATE audit_log SET {set} WHERE seq = {seq}")])
            .await;
        let (code, doc) = log.verify(true);
        assert_eq!(code, 1, "{column}: {doc:#}");
        assert_eq!(first_problem(&doc).0, seq, "{column}: {doc:#}");
    }
}

async fn recomputed_edit(backend: Backend) {
    let log = Log::new(backend).await;
    log.write(0, 5).await;
    // A blocked request (req-0, rows 1-2) made to read "allow", every hash after it recomputed.
    let mut rows = log.rows().await;
    assert_eq!(rows[0].action.as_deref(), Some("block"));
    rows[0].action = Some("allow".into());
    rechain(&mut rows);
    log.rewrite(&rows).await;
    // With the key: the MAC of the first edited row.
    let (code, doc) = log.verify(true);
    assert_found(&doc, code, 1, "MAC", "recomputed, keyed");
    // Without the key: the first checkpoint signed after it.
    let (code, doc) = log.verify(false);
    assert_eq!(doc["macs_checked"], false);
    assert_found(&doc, code, 4, "checkpoint", "recomputed, unkeyed");
}

async fn delete_reorder_insert(backend: Backend) {
    // A row deleted from the middle.
    let log = Log::new(backend).await;
    log.write(0, 5).await;
    log.tamper(&["DELETE FROM audit_log WHERE seq = 5".to_owned()])
        .await;
    let (code, doc) = log.verify(true);
    assert_found(&doc, code, 6, "missing or reordered", "delete");

    // Two rows swapped.
    let log = Log::new(backend).await;
    log.write(0, 5).await;
    log.tamper(&[
        "UPDATE audit_log SET seq = 100 WHERE seq = 3".to_owned(),
        "UPDATE audit_log SET seq = 3 WHERE seq = 4".to_owned(),
        "UPDATE audit_log SET seq = 4 WHERE seq = 100".to_owned(),
    ])
    .await;
    let (code, doc) = log.verify(true);
    assert_eq!(code, 1, "reorder: {doc:#}");
    assert_eq!(first_problem(&doc).0, 3, "reorder: {doc:#}");

    // A forged row inserted, naively and re-chained.
    for rechained in [false, true] {
        let log = Log::new(backend).await;
        log.write(0, 5).await;
        let mut rows = log.rows().await;
        let mut forged = rows[4].clone();
        forged.request_id = "forged".into();
        forged.action = Some("allow".into());
        rows.insert(5, forged);
        if rechained {
            rechain(&mut rows);
        } else {
            for (i, r) in rows.iter_mut().enumerate() {
                r.seq = i64::try_from(i).unwrap() + 1;
            }
        }
        log.rewrite(&rows).await;
        let (code, doc) = log.verify(true);
        assert_eq!(code, 1, "insert (rechained {rechained}): {doc:#}");
        assert_eq!(first_problem(&doc).0, 6, "insert: {doc:#}");
        // Re-chained, it is still found without the key: the checkpoint at 8 no longer matches.
        if rechained {
            let (code, doc) = log.verify(false);
            assert_found(&doc, code, 8, "checkpoint", "insert, unkeyed");
        }
    }
}

async fn cut_tail_and_older_copy(backend: Backend) {
    // The last rows cut off.
    let log = Log::new(backend).await;
    log.write(0, 5).await;
    log.tamper(&["DELETE FROM audit_log WHERE seq > 8".to_owned()])
        .await;
    let (code, doc) = log.verify(true);
    assert_found(&doc, code, 10, "cut from the tail", "truncation");

    // The database replaced by an older copy of itself (its own checkpoint table included).
    let log = Log::new(backend).await;
    log.write(0, 3).await;
    let restore = snapshot(&log).await;
    log.write(3, 3).await;
    restore_snapshot(&log, restore).await;
    assert_eq!(log.rows().await.len(), 6);
    let (code, doc) = log.verify(true);
    assert_found(&doc, code, 12, "older copy", "older copy");
}

/// What an older copy of the database needs to be put back.
enum Snapshot {
    File(PathBuf),
    Tables,
}

async fn snapshot(log: &Log) -> Snapshot {
    match &log.db {
        Db::Sqlite(path) => {
            // A consistent copy, made by SQLite itself (a file copy could catch a checkpoint
            // half done).
            let copy = log.dir.path().join("older-copy.db");
            let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
                .await
                .unwrap();
            sqlx::query(&format!("VACUUM INTO {}", lit(&copy.display().to_string())))
                .execute(&mut c)
                .await
                .unwrap();
            c.close().await.unwrap();
            Snapshot::File(copy)
        }
        Db::Postgres { .. } => {
            log.tamper(&[
                "CREATE TABLE old_log AS SELECT * FROM audit_log".to_owned(),
                "CREATE TABLE old_checkpoints AS SELECT * FROM audit_checkpoints".to_owned(),
            ])
            .await;
            Snapshot::Tables
        }
    }
}

async fn restore_snapshot(log: &Log, snapshot: Snapshot) {
    match snapshot {
        Snapshot::File(copy) => {
            let Db::Sqlite(path) = &log.db else { panic!() };
            for s in ["-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{s}", path.display()));
            }
            std::fs::copy(copy, path).unwrap();
        }
        Snapshot::Tables => {
            log.tamper(&[
                "ALTER TABLE audit_checkpoints DISABLE TRIGGER USER".to_owned(),
                "DELETE FROM audit_log".to_owned(),
                format!("INSERT INTO audit_log ({COLUMNS}) SELECT {COLUMNS} FROM old_log"),
                "DELETE FROM audit_checkpoints".to_owned(),
                "INSERT INTO audit_checkpoints SELECT * FROM old_checkpoints".to_owned(),
                "DROP TABLE old_log".to_owned(),
                "DROP TABLE old_checkpoints".to_owned(),
            ])
            .await;
        }
    }
}

async fn downgrade(backend: Backend) {
    // The last row rewritten as a legacy unkeyed row, with a valid legacy hash.
    let log = Log::new(backend).await;
    log.write(0, 5).await;
    let mut rows = log.rows().await;
    let last = rows.len() - 1;
    rows[last].scheme = "v1".into();
    rows[last].mac = None;
    rows[last].hash = rows[last].content_hash();
    log.rewrite(&rows).await;
    let (code, doc) = log.verify(true);
    assert_found(&doc, code, 10, "downgraded", "downgrade of one row");

    // The whole log rewritten as legacy rows, consistent among themselves.
    let log = Log::new(backend).await;
    log.write(0, 5).await;
    let mut rows = log.rows().await;
    rows[0].action = Some("allow".into());
    for r in &mut rows {
        r.scheme = "v1".into();
        r.mac = None;
    }
    rechain(&mut rows);
    log.rewrite(&rows).await;
    let (code, doc) = log.verify(true);
    assert_eq!(code, 1, "{doc:#}");
    let problems = doc["problems"].to_string();
    assert!(problems.contains("unkeyed"), "{doc:#}");
    assert!(problems.contains("checkpoint"), "{doc:#}");
}

fn export_cli(log: &Log, dir: &Path, range: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_veil"))
        .args(["--config", "/nonexistent/veil.toml", "audit", "export"])
        .args(["--db", &log.url])
        .args(range)
        .arg(dir)
        .env("RUST_LOG", "error")
        .output()
        .unwrap()
}

fn verify_export(dir: &Path, public_key: Option<&Path>, key: bool) -> (i32, Value) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_veil"));
    cmd.args([
        "--config",
        "/nonexistent/veil.toml",
        "audit",
        "verify",
        "--json",
    ])
    .arg("--export")
    .arg(dir)
    .env("RUST_LOG", "error")
    .env_remove("VEIL_AUDIT_CHAIN_KEY");
    if let Some(p) = public_key {
        cmd.arg("--public-key").arg(p);
    }
    if key {
        cmd.env("VEIL_AUDIT_CHAIN_KEY", CHAIN_KEY);
    }
    run_json(cmd)
}

async fn export_round_trip(backend: Backend) {
    let log = Log::new(backend).await;
    log.write(0, 5).await;
    // The public key travels with the export when it sits beside the database's default files;
    // here it is passed out of band.
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("export");
    let o = export_cli(&log, &dir, &["--from", "3", "--to", "6"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap();
    // Extended to the next signed checkpoint (8).
    assert_eq!(
        (manifest["from_seq"].as_i64(), manifest["to_seq"].as_i64()),
        (Some(3), Some(8))
    );
    let (code, doc) = verify_export(&dir, Some(&log.public_key()), true);
    assert_eq!(code, 0, "{doc:#}");
    assert_eq!(doc["rows"], 6);
    assert_eq!(doc["checkpoints_matched"], 2, "{doc:#}");

    // A non-empty directory is refused.
    let o = export_cli(&log, &dir, &[]);
    assert!(!o.status.success());

    // One row's action edited in the export: the manifest digest and the row hash say so.
    let rows_path = dir.join("rows.jsonl");
    let text = std::fs::read_to_string(&rows_path).unwrap();
    let edited = text.replacen("\"action\":\"block\"", "\"action\":\"allow\"", 1);
    assert_ne!(edited, text, "the export holds a blocked request");
    std::fs::write(&rows_path, &edited).unwrap();
    let (code, doc) = verify_export(&dir, Some(&log.public_key()), false);
    assert_eq!(code, 1, "{doc:#}");
    let problems = doc["problems"].to_string();
    assert!(problems.contains("does not match the manifest"), "{doc:#}");
    assert!(problems.contains("row altered"), "{doc:#}");

    // Signed with another key than the one given: every checkpoint is refused.
    let other = out.path().join("other.pub");
    std::fs::write(
        &other,
        veil::audit::checkpoint::public_hex(&Signer::from_seed(&[6; 32]).public()),
    )
    .unwrap();
    std::fs::write(&rows_path, &text).unwrap();
    let (code, doc) = verify_export(&dir, Some(&other), true);
    assert_eq!(code, 1, "{doc:#}");
    assert!(
        doc["problems"]
            .to_string()
            .contains("not among the public keys")
    );
}

/// Retention: `prune` cuts at a signed checkpoint after verifying, records itself, and leaves a
/// chain that verifies; a prefix cut elsewhere, or within the retention period, is reported.
async fn prune(backend: Backend) {
    let log = Log::new(backend).await;
    log.write(0, 5).await;
    let config = |days: u64| {
        let path = log.dir.path().join(format!("veil-{days}.toml"));
        std::fs::write(
            &path,
            format!(
                "[audit]\nurl = {:?}\nretention_days = {days}\npublic_key_file = {:?}\ncheckpoint_file = {:?}\n",
                log.url,
                log.public_key(),
                log.checkpoints()
            ),
        )
        .unwrap();
        path
    };
    let cli = |config: &Path, args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_veil"))
            .arg("--config")
            .arg(config)
            .arg("audit")
            .args(args)
            .env("VEIL_AUDIT_CHAIN_KEY", CHAIN_KEY)
            .env("RUST_LOG", "error")
            .output()
            .unwrap()
    };
    let (none, six_years) = (config(0), config(6 * 365 + 2));
    let now = "9999-01-01";
    // Within the retention period: refused, nothing removed.
    let o = cli(&six_years, &["prune", "--before", "2026-01-01T00:00:00Z"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("retention"));
    // A date in the future is within any retention period.
    let o = cli(&none, &["prune", "--before", now]);
    assert!(
        !o.status.success(),
        "the future is within any retention period"
    );
    let before = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let o = cli(&none, &["prune", "--before", &before]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // The last checkpoint is at 10 (shutdown): everything goes; the prune event stays.
    let rows = log.rows().await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].seq, 11);
    assert!(rows[0].body.contains("audit_prune"));
    let verify = |config: &Path| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_veil"));
        cmd.arg("--config")
            .arg(config)
            .args(["audit", "verify", "--json"])
            .env("VEIL_AUDIT_CHAIN_KEY", CHAIN_KEY)
            .env("RUST_LOG", "error");
        run_json(cmd)
    };
    let (code, doc) = verify(&none);
    assert_eq!(code, 0, "{doc:#}");
    assert!(doc["notices"].to_string().contains("pruned"), "{doc:#}");
    // Held to six years, the same log is missing rows it must keep.
    let (code, doc) = verify(&six_years);
    assert_found(&doc, code, 11, "retention", "pruned too early");

    // Rows removed at no checkpoint: not a prune, a deletion.
    let log = Log::new(backend).await;
    log.write(0, 5).await;
    log.tamper(&["DELETE FROM audit_log WHERE seq <= 3".to_owned()])
        .await;
    let (code, doc) = log.verify(true);
    assert_found(&doc, code, 4, "missing", "prefix cut at no checkpoint");
}

const SQLITE: Backend = Backend::Sqlite;
const POSTGRES: Backend = Backend::Postgres;

macro_rules! both {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test] async fn $name() { super::$name(super::SQLITE).await; })*
        }
        mod postgres {
            $(#[tokio::test] async fn $name() { super::$name(super::POSTGRES).await; })*
        }
    };
}

both!(
    intact_log_verifies,
    update_of_any_column,
    recomputed_edit,
    delete_reorder_insert,
    cut_tail_and_older_copy,
    downgrade,
    export_round_trip,
    prune,
);

/// Two instances (two writers, each with its own signing key) append to one PostgreSQL database
/// at once: one chain, every row once, verified with both public keys; a writer whose database
/// connections are killed recovers by itself.
#[tokio::test]
async fn postgres_two_instances_extend_one_chain() {
    let log = Log::new(POSTGRES).await;
    let open = |seed: u8, file: &str| {
        let sealing = Sealing {
            key: ChainKey::new(CHAIN_KEY.as_bytes()).unwrap(),
            checkpoints: Some(Checkpointing {
                signer: Signer::from_seed(&[seed; 32]),
                file: Some(log.dir.path().join(file)),
                every_rows: 10,
                every: Duration::from_secs(3600),
            }),
            retention_days: None,
        };
        AuditLog::open(&log.url, Duration::from_secs(10), 256, sealing)
    };
    let (a, task_a) = open(1, "a.jsonl").await.unwrap();
    let (b, task_b) = open(2, "b.jsonl").await.unwrap();
    let write = |log: AuditLog, name: &'static str| async move {
        for i in 0..50 {
            let id = format!("{name}-{i}");
            let d = DecisionRecord {
                request_id: id.clone(),
                action: "allow".into(),
                ..Default::default()
            };
            let o = OutcomeRecord {
                request_id: id,
                outcome: "completed".into(),
                status: 200,
                ..Default::default()
            };
            log.record(d, o).await.unwrap();
        }
        log
    };
    let (a, b) = tokio::join!(write(a, "a"), write(b, "b"));

    // Kill every connection to the database: the next writes fail over to fresh connections.
    let Db::Postgres { admin, name } = &log.db else {
        panic!()
    };
    let mut c = sqlx::PgConnection::connect(admin).await.unwrap();
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
        .bind(name)
        .execute(&mut c)
        .await
        .unwrap();
    // Each attempt is a new request; a refused one is still written once the writer recovers.
    let mut attempts = 0;
    let mut sealed = false;
    while attempts < 20 && !sealed {
        attempts += 1;
        let d = DecisionRecord {
            request_id: format!("after-kill-{attempts}"),
            action: "allow".into(),
            ..Default::default()
        };
        sealed = a.seal(d, ()).await.is_ok();
        if !sealed {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert!(
        sealed,
        "the writer recovers after its connections are killed"
    );
    drop((a, b));
    assert_eq!(task_a.finish(Duration::from_secs(10)).await, 0);
    assert_eq!(task_b.finish(Duration::from_secs(10)).await, 0);

    let rows = log.rows().await;
    assert_eq!(rows.len(), 200 + attempts, "every row exactly once");
    let keys = log.dir.path().join("both.pub");
    std::fs::write(
        &keys,
        format!(
            "{}\n{}\n",
            veil::audit::checkpoint::public_hex(&Signer::from_seed(&[1; 32]).public()),
            veil::audit::checkpoint::public_hex(&Signer::from_seed(&[2; 32]).public())
        ),
    )
    .unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_veil"));
    cmd.args([
        "--config",
        "/nonexistent/veil.toml",
        "audit",
        "verify",
        "--json",
    ])
    .args(["--db", &log.url])
    .arg("--checkpoints")
    .arg(log.dir.path().join("a.jsonl"))
    .arg("--checkpoints")
    .arg(log.dir.path().join("b.jsonl"))
    .arg("--public-key")
    .arg(&keys)
    .env("VEIL_AUDIT_CHAIN_KEY", CHAIN_KEY)
    .env("RUST_LOG", "error");
    let (code, doc) = run_json(cmd);
    assert_eq!(code, 0, "{doc:#}");
    assert_eq!(doc["rows"], 200 + attempts);
    assert!(doc["checkpoints_matched"].as_u64().unwrap() >= 4, "{doc:#}");
}

/// A batch whose commit landed but whose acknowledgement was lost is retried: the rows already
/// stored are skipped, not written twice and not a unique-key failure that would wedge the
/// writer.
#[tokio::test]
async fn postgres_a_retried_batch_that_landed_is_not_written_twice() {
    let log = Log::new(POSTGRES).await;
    let store = veil::audit::open_writer(&log.url).await.unwrap();
    let key = ChainKey::new(CHAIN_KEY.as_bytes()).unwrap();
    let row = |id: &str| veil::audit::NewRow {
        request_id: id.into(),
        kind: "decision".into(),
        ts: "2026-12-01T00:00:00Z".into(),
        tenant: None,
        action: Some("allow".into()),
        outcome: None,
        status: None,
        body: "{}".into(),
    };
    let first = [row("a"), row("b")];
    let head = store.append(&first, &key).await.unwrap();
    assert_eq!(head.0, 2);
    // The retry carries the same rows, and one queued since.
    let retry = [row("a"), row("b"), row("c")];
    let head = store.append(&retry, &key).await.unwrap();
    assert_eq!(head.0, 3);
    let rows = store.rows().await.unwrap();
    let ids: Vec<_> = rows.iter().map(|r| r.request_id.as_str()).collect();
    assert_eq!(ids, ["a", "b", "c"]);
    assert!(veil::audit::verify(&rows).is_empty());
}
