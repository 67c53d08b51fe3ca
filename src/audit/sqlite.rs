//! The embedded SQLite audit store (WAL, `synchronous = FULL`: a commit is on disk).
//!
//! Appends go through one dedicated connection with explicit `BEGIN IMMEDIATE` / `COMMIT`. After
//! any error that connection is closed and a fresh one is opened for the next attempt: SQLite
//! may or may not have rolled back a transaction whose write failed (disk full, I/O error), and a
//! connection left inside one would make the next "commit" a no-op savepoint — a success reported
//! for rows that never reach the disk.
//!
//! That connection is synchronous (rusqlite) and its calls block: the writer of a SQLite log
//! runs on a thread of its own ([`AuditStore::blocking`]). Through sqlx's asynchronous driver every
//! statement was a hand-off to the connection's thread and back, which cost more than the commit
//! itself (issue 27; `docs/benchmarks.md`). Reads keep sqlx's pool.

use std::str::FromStr;
use std::time::Duration;

use rusqlite::OptionalExtension as _;
use sqlx::Row as _;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use super::columns;
use super::query::{Dialect, Query, RequestRow, Stats, push_filtered};
use super::{AuditError, AuditStore, BoxFuture, ChainKey, Checkpoint, GENESIS, NewRow, StoredRow};

/// SQLite-backed [`AuditStore`].
#[derive(Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// `<database>-shm`, checked before every use of a connection that may be new.
    shm: std::path::PathBuf,
    /// The database file, for the writer's connection.
    path: std::path::PathBuf,
    writer: std::sync::Mutex<Option<rusqlite::Connection>>,
    /// The writer's exclusive lock on `<path>.lock`, held while the store lives: two writers
    /// would each extend the chain from their own idea of its tail.
    _lock: Option<std::fs::File>,
}

/// Takes the one-writer lock of the database at `path`.
fn writer_lock(path: &str) -> Result<std::fs::File, AuditError> {
    let lock_path = format!("{path}.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(db)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(AuditError::Database(format!(
            "another veil server is writing the audit database {path} (it holds {lock_path}); \
             run one server per SQLite file, or give each its own audit.url"
        ))),
        Err(std::fs::TryLockError::Error(e)) => Err(db(e)),
    }
}

/// SQLite maps `<database>-shm` into memory. A new connection on a `-shm` it cannot write (made
/// immutable, say) does not get an error: the process dies of SIGBUS inside SQLite (measured).
/// So before any connection may be opened, the file is opened for writing here, and a failure is
/// an ordinary audit error: the request fails closed and the writer retries.
fn check_shm(shm: &std::path::Path) -> Result<(), AuditError> {
    match std::fs::OpenOptions::new().read(true).write(true).open(shm) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(AuditError::Database(format!(
            "cannot write {} ({e}); SQLite needs its shared-memory file writable",
            shm.display()
        ))),
    }
}

/// How long a statement waits for another connection's lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(2);

fn db(e: impl std::fmt::Display) -> AuditError {
    AuditError::Database(e.to_string())
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and runs the migrations.
    pub async fn open(path: &str) -> Result<Self, AuditError> {
        if let Some(parent) = std::path::Path::new(path).parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent).map_err(db)?;
        }
        let lock = writer_lock(path)?;
        let shm = std::path::PathBuf::from(format!("{path}-shm"));
        check_shm(&shm)?;
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{path}"))
            .map_err(db)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(BUSY_TIMEOUT);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await
            .map_err(db)?;
        sqlx::migrate!("./migrations/sqlite")
            .run(&pool)
            .await
            .map_err(db)?;
        Ok(Self {
            pool,
            shm,
            path: path.into(),
            writer: std::sync::Mutex::new(None),
            _lock: Some(lock),
        })
    }
}

impl SqliteStore {
    /// The pool, once the `-shm` file is known to be writable (the pool may open a connection).
    fn pool(&self) -> Result<&SqlitePool, AuditError> {
        if self._lock.is_some() {
            check_shm(&self.shm)?;
        }
        Ok(&self.pool)
    }

    /// A new writer connection, after the same check. The migrations (run by the pool) made
    /// the database WAL; the writer commits with `synchronous = FULL`.
    fn connect_writer(&self) -> Result<rusqlite::Connection, AuditError> {
        check_shm(&self.shm)?;
        let conn = rusqlite::Connection::open_with_flags(
            &self.path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(db)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(db)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(db)?;
        Ok(conn)
    }

    /// Runs `f` on the writer's connection (opened if needed; blocks). After an error the
    /// connection is closed, whatever state the failed transaction left going with it.
    fn with_writer<T>(
        &self,
        f: impl FnOnce(&mut rusqlite::Connection) -> rusqlite::Result<T>,
    ) -> Result<T, AuditError> {
        let mut slot = self
            .writer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let conn = match slot.as_mut() {
            Some(c) => c,
            None => slot.insert(self.connect_writer()?),
        };
        f(conn).map_err(|e| {
            slot.take();
            db(e)
        })
    }

    /// Opens an existing database for reading only (no directory, file, migration or write).
    pub async fn open_read_only(path: &str) -> Result<Self, AuditError> {
        if !std::path::Path::new(path).is_file() {
            return Err(AuditError::Database(format!(
                "no audit database at {path}; check audit.url (or VEIL_AUDIT_URL)"
            )));
        }
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{path}"))
            .map_err(db)?
            .read_only(true)
            .create_if_missing(false)
            .busy_timeout(Duration::from_secs(2));
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .map_err(db)?;
        Ok(Self {
            pool,
            shm: std::path::PathBuf::from(format!("{path}-shm")),
            path: path.into(),
            writer: std::sync::Mutex::new(None),
            _lock: None,
        })
    }
}

/// How SQLite looks inside the JSON columns of `audit_requests`.
const DIALECT: Dialect = Dialect {
    rule: "EXISTS (SELECT 1 FROM json_each(rules) WHERE json_extract(value, '$.rule') = ",
    entity: "EXISTS (SELECT 1 FROM json_each(entities) WHERE json_extract(value, '$.entity') = ",
    hmac: "EXISTS (SELECT 1 FROM json_each(entities) e, json_each(json_extract(e.value, '$.spans')) s \
           WHERE json_extract(s.value, '$.hmac') = ",
    entity_list: "(SELECT group_concat(json_extract(value, '$.entity'), ' ') FROM json_each(entities))",
};

/// The writer's insert of one row (built once: it is the key of the prepared-statement cache).
static INSERT_ROW: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "INSERT INTO audit_log ({}) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
        columns::LOG_COLUMNS
    )
});

/// Chains `rows` after the stored tail and inserts them, in one transaction on `conn`.
fn insert_all(
    conn: &mut rusqlite::Connection,
    rows: &[NewRow],
    key: &ChainKey,
) -> rusqlite::Result<(i64, String)> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    // Read inside the write transaction: the tail cannot move under it.
    let tail = tx
        .query_row(
            "SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?
        .unwrap_or((0, GENESIS.to_owned()));
    let chained = key.link((tail.0, &tail.1), rows);
    {
        // One statement per row is cheap here: the connection runs on this thread.
        let mut insert = tx.prepare_cached(&INSERT_ROW)?;
        for r in &chained {
            insert.execute(rusqlite::params![
                r.seq,
                r.request_id,
                r.kind,
                r.ts,
                r.tenant,
                r.action,
                r.outcome,
                r.status,
                r.body,
                r.prev_hash,
                r.hash,
                r.scheme,
                r.mac,
            ])?;
        }
    }
    tx.commit()?;
    Ok(chained.last().map_or(tail, |r| (r.seq, r.hash.clone())))
}

impl AuditStore for SqliteStore {
    fn blocking(&self) -> bool {
        true
    }

    fn tail(&self) -> BoxFuture<'_, Result<Option<(i64, String)>, AuditError>> {
        Box::pin(async move {
            let row = sqlx::query("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
                .fetch_optional(self.pool()?)
                .await
                .map_err(db)?;
            Ok(row.map(|r| (r.get::<i64, _>(0), r.get::<String, _>(1))))
        })
    }

    fn append<'a>(
        &'a self,
        rows: &'a [NewRow],
        key: &'a ChainKey,
    ) -> BoxFuture<'a, Result<(i64, String), AuditError>> {
        Box::pin(async move { self.with_writer(|conn| insert_all(conn, rows, key)) })
    }

    fn add_checkpoint<'a>(&'a self, cp: &'a Checkpoint) -> BoxFuture<'a, Result<(), AuditError>> {
        Box::pin(async move {
            self.with_writer(|conn| {
                conn.execute(
                    "INSERT INTO audit_checkpoints (seq, head, ts, key_id, signature) \
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                    rusqlite::params![cp.seq, cp.head, cp.ts, cp.key_id, cp.signature],
                )
                .map(|_| ())
            })
        })
    }

    fn seq_bounds<'a>(
        &'a self,
        from: Option<&'a str>,
        to: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Option<(i64, i64)>, AuditError>> {
        Box::pin(async move {
            let row = sqlx::query(
                "SELECT MIN(seq), MAX(seq) FROM audit_log WHERE (?1 IS NULL OR ts >= ?1) AND (?2 IS NULL OR ts < ?2)",
            )
            .bind(from)
            .bind(to)
            .fetch_one(self.pool()?)
            .await
            .map_err(db)?;
            let (lo, hi): (Option<i64>, Option<i64>) = (row.get(0), row.get(1));
            Ok(lo.zip(hi))
        })
    }

    fn prune(&self, through: i64) -> BoxFuture<'_, Result<u64, AuditError>> {
        // Blocks while it deletes: `veil audit prune` runs with the server stopped.
        Box::pin(async move {
            self.with_writer(|conn| {
                // SQLite's DDL is transactional: the trigger is gone only inside this transaction.
                let tx =
                    conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                tx.execute_batch("DROP TRIGGER audit_log_no_delete")?;
                let n = tx.execute("DELETE FROM audit_log WHERE seq <= ?1", [through])?;
                tx.execute_batch(
                    "CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log \
                     BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END",
                )?;
                tx.commit()?;
                Ok(n as u64)
            })
        })
    }

    fn checkpoints(&self) -> BoxFuture<'_, Result<Vec<Checkpoint>, AuditError>> {
        Box::pin(async move {
            let rows = sqlx::query(
                "SELECT seq, head, ts, key_id, signature FROM audit_checkpoints ORDER BY seq",
            )
            .fetch_all(self.pool()?)
            .await
            .map_err(db)?;
            Ok(rows.iter().map(columns::checkpoint).collect())
        })
    }

    fn open_decisions(&self) -> BoxFuture<'_, Result<Vec<String>, AuditError>> {
        Box::pin(async move {
            let rows = sqlx::query(
                "SELECT d.request_id FROM audit_log d WHERE d.kind = 'decision' AND NOT EXISTS \
                 (SELECT 1 FROM audit_log o WHERE o.request_id = d.request_id AND o.kind = 'outcome') \
                 ORDER BY d.seq",
            )
            .fetch_all(self.pool()?)
            .await
            .map_err(db)?;
            Ok(rows.iter().map(|r| r.get::<String, _>(0)).collect())
        })
    }

    fn rows(&self) -> BoxFuture<'_, Result<Vec<StoredRow>, AuditError>> {
        self.rows_page(0, i64::MAX, i64::MAX)
    }

    fn rows_page(
        &self,
        after: i64,
        to: i64,
        limit: i64,
    ) -> BoxFuture<'_, Result<Vec<StoredRow>, AuditError>> {
        Box::pin(async move {
            let sql = format!(
                "SELECT {} FROM audit_log WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT ?",
                columns::LOG_COLUMNS
            );
            let rows = sqlx::query(&sql)
                .bind(after)
                .bind(to)
                .bind(limit)
                .fetch_all(self.pool()?)
                .await
                .map_err(db)?;
            Ok(rows.iter().map(columns::stored_row).collect())
        })
    }

    fn query<'a>(&'a self, q: &'a Query) -> BoxFuture<'a, Result<Vec<RequestRow>, AuditError>> {
        Box::pin(async move {
            let mut qb = sqlx::QueryBuilder::new(
                "SELECT seq, ts, request_id, tenant, key_id, model, action, route, rules, entities, \
                 policy, outcome, status, error_code",
            );
            push_filtered(&mut qb, q, &DIALECT);
            qb.push(" ORDER BY seq DESC");
            if let Some(limit) = q.limit {
                qb.push(" LIMIT ")
                    .push_bind(i64::try_from(limit).unwrap_or(i64::MAX));
            }
            let rows = qb.build().fetch_all(self.pool()?).await.map_err(db)?;
            Ok(rows.iter().map(columns::request_row).collect())
        })
    }

    fn stats<'a>(&'a self, q: &'a Query) -> BoxFuture<'a, Result<Stats, AuditError>> {
        Box::pin(async move {
            let mut stats = Stats::default();
            for (group, expr) in DIALECT.groups() {
                let mut qb = sqlx::QueryBuilder::new(format!("SELECT {expr} AS k, COUNT(*) AS n"));
                push_filtered(&mut qb, q, &DIALECT);
                qb.push(" GROUP BY k");
                for r in qb.build().fetch_all(self.pool()?).await.map_err(db)? {
                    stats.add(group, r.get(0), r.get(1));
                }
            }
            Ok(stats)
        })
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let writer = self
                .writer
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take();
            if let Some(conn) = writer {
                let _ = conn.close();
            }
            self.pool.close().await;
        })
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), AuditError>> {
        Box::pin(async move {
            sqlx::query("SELECT 1")
                .execute(self.pool()?)
                .await
                .map(|_| ())
                .map_err(db)
        })
    }
}
