//! The embedded SQLite audit store (WAL, `synchronous = FULL`: a commit is on disk).
//!
//! Appends go through one dedicated connection with explicit `BEGIN IMMEDIATE` / `COMMIT`. After
//! any error that connection is closed and a fresh one is opened for the next attempt: SQLite
//! may or may not have rolled back a transaction whose write failed (disk full, I/O error), and a
//! connection left inside one would make the next "commit" a no-op savepoint — a success reported
//! for rows that never reach the disk.

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{ConnectOptions as _, Connection as _, Row as _};

use super::query::{Query, RequestRow, Stats};
use super::{AuditError, AuditStore, BoxFuture, StoredRow};

/// SQLite-backed [`AuditStore`].
#[derive(Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
    options: SqliteConnectOptions,
    writer: tokio::sync::Mutex<Option<SqliteConnection>>,
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
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{path}"))
            .map_err(db)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(2));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options.clone())
            .await
            .map_err(db)?;
        sqlx::migrate!("./migrations/sqlite")
            .run(&pool)
            .await
            .map_err(db)?;
        Ok(Self {
            pool,
            options,
            writer: tokio::sync::Mutex::new(None),
            _lock: Some(lock),
        })
    }
}

impl SqliteStore {
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
            .connect_with(options.clone())
            .await
            .map_err(db)?;
        Ok(Self {
            pool,
            options,
            writer: tokio::sync::Mutex::new(None),
            _lock: None,
        })
    }
}

/// `FROM audit_requests WHERE …` with every filter of `q` bound.
fn push_filtered(qb: &mut sqlx::QueryBuilder<'_, sqlx::Sqlite>, q: &Query) {
    qb.push(" FROM audit_requests WHERE 1 = 1");
    let text = [
        (" AND ts >= ", &q.from),
        (" AND ts < ", &q.to),
        (" AND tenant = ", &q.tenant),
        (" AND key_id = ", &q.key_id),
        (" AND action = ", &q.action),
        (" AND route = ", &q.route),
        (" AND outcome = ", &q.outcome),
        (" AND request_id = ", &q.request_id),
    ];
    for (clause, value) in text {
        if let Some(v) = value {
            qb.push(clause).push_bind(v.clone());
        }
    }
    if let Some(status) = q.status {
        qb.push(" AND status = ").push_bind(status);
    }
    if let Some(rule) = &q.rule {
        qb.push(
            " AND EXISTS (SELECT 1 FROM json_each(rules) WHERE json_extract(value, '$.rule') = ",
        )
        .push_bind(rule.clone())
        .push(")");
    }
    if let Some(entity) = &q.entity {
        qb.push(
            " AND EXISTS (SELECT 1 FROM json_each(entities) WHERE json_extract(value, '$.entity') = ",
        )
        .push_bind(entity.clone())
        .push(")");
    }
    if let Some(hmac) = &q.hmac {
        qb.push(
            " AND EXISTS (SELECT 1 FROM json_each(entities) e, json_each(json_extract(e.value, '$.spans')) s \
             WHERE json_extract(s.value, '$.hmac') = ",
        )
        .push_bind(hmac.clone())
        .push(")");
    }
}

/// Inserts `rows` in one transaction on `conn`.
async fn insert_all(conn: &mut SqliteConnection, rows: &[StoredRow]) -> Result<(), sqlx::Error> {
    sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await?;
    for r in rows {
        sqlx::query(
            "INSERT INTO audit_log (seq, request_id, kind, ts, tenant, action, outcome, status, body, prev_hash, hash) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(r.seq)
        .bind(&r.request_id)
        .bind(&r.kind)
        .bind(&r.ts)
        .bind(&r.tenant)
        .bind(&r.action)
        .bind(&r.outcome)
        .bind(r.status)
        .bind(&r.body)
        .bind(&r.prev_hash)
        .bind(&r.hash)
        .execute(&mut *conn)
        .await?;
    }
    sqlx::query("COMMIT").execute(&mut *conn).await?;
    Ok(())
}

impl AuditStore for SqliteStore {
    fn tail(&self) -> BoxFuture<'_, Result<Option<(i64, String)>, AuditError>> {
        Box::pin(async move {
            let row = sqlx::query("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
                .fetch_optional(&self.pool)
                .await
                .map_err(db)?;
            Ok(row.map(|r| (r.get::<i64, _>(0), r.get::<String, _>(1))))
        })
    }

    fn append<'a>(&'a self, rows: &'a [StoredRow]) -> BoxFuture<'a, Result<(), AuditError>> {
        Box::pin(async move {
            let mut slot = self.writer.lock().await;
            let conn = match slot.as_mut() {
                Some(c) => c,
                None => slot.insert(self.options.connect().await.map_err(db)?),
            };
            let result = insert_all(conn, rows).await;
            if let Err(e) = result {
                // Whatever state the failed transaction left, it goes with this connection.
                if let Some(conn) = slot.take() {
                    let _ = conn.close().await;
                }
                return Err(db(e));
            }
            Ok(())
        })
    }

    fn open_decisions(&self) -> BoxFuture<'_, Result<Vec<String>, AuditError>> {
        Box::pin(async move {
            let rows = sqlx::query(
                "SELECT d.request_id FROM audit_log d WHERE d.kind = 'decision' AND NOT EXISTS \
                 (SELECT 1 FROM audit_log o WHERE o.request_id = d.request_id AND o.kind = 'outcome') \
                 ORDER BY d.seq",
            )
            .fetch_all(&self.pool)
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
            let rows = sqlx::query(
                "SELECT seq, request_id, kind, ts, tenant, action, outcome, status, body, prev_hash, hash \
                 FROM audit_log WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT ?",
            )
            .bind(after)
            .bind(to)
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
            Ok(rows
                .iter()
                .map(|r| StoredRow {
                    seq: r.get(0),
                    request_id: r.get(1),
                    kind: r.get(2),
                    ts: r.get(3),
                    tenant: r.get(4),
                    action: r.get(5),
                    outcome: r.get(6),
                    status: r.get(7),
                    body: r.get(8),
                    prev_hash: r.get(9),
                    hash: r.get(10),
                })
                .collect())
        })
    }

    fn query<'a>(&'a self, q: &'a Query) -> BoxFuture<'a, Result<Vec<RequestRow>, AuditError>> {
        Box::pin(async move {
            let mut qb = sqlx::QueryBuilder::new(
                "SELECT seq, ts, request_id, tenant, key_id, model, action, route, rules, entities, \
                 policy, outcome, status, error_code",
            );
            push_filtered(&mut qb, q);
            qb.push(" ORDER BY seq DESC");
            if let Some(limit) = q.limit {
                qb.push(" LIMIT ")
                    .push_bind(i64::try_from(limit).unwrap_or(i64::MAX));
            }
            let rows = qb.build().fetch_all(&self.pool).await.map_err(db)?;
            Ok(rows
                .iter()
                .map(|r| {
                    RequestRow::from_columns(
                        r.get(0),
                        r.get(1),
                        r.get(2),
                        r.get(3),
                        r.get(4),
                        r.get(5),
                        r.get(6),
                        r.get(7),
                        r.get(8),
                        r.get(9),
                        r.get(10),
                        r.get(11),
                        r.get(12),
                        r.get(13),
                    )
                })
                .collect())
        })
    }

    fn stats<'a>(&'a self, q: &'a Query) -> BoxFuture<'a, Result<Stats, AuditError>> {
        Box::pin(async move {
            let mut stats = Stats::default();
            let groups: [(&str, &str); 5] = [
                ("action", "COALESCE(action, '-')"),
                ("route", "COALESCE(route, '-')"),
                ("tenant", "COALESCE(tenant, '-')"),
                ("day", "substr(ts, 1, 10)"),
                (
                    "entity",
                    "(SELECT group_concat(json_extract(value, '$.entity'), ' ') FROM json_each(entities))",
                ),
            ];
            for (name, expr) in groups {
                let mut qb = sqlx::QueryBuilder::new(format!("SELECT {expr} AS k, COUNT(*) AS n"));
                push_filtered(&mut qb, q);
                qb.push(" GROUP BY k");
                let rows = qb.build().fetch_all(&self.pool).await.map_err(db)?;
                for r in rows {
                    let key: Option<String> = r.get(0);
                    let n = u64::try_from(r.get::<i64, _>(1)).unwrap_or(0);
                    let map = match name {
                        "action" => &mut stats.by_action,
                        "route" => &mut stats.by_route,
                        "tenant" => &mut stats.by_tenant,
                        "day" => &mut stats.by_day,
                        _ => &mut stats.by_entity,
                    };
                    if name == "entity" {
                        // A request counts once for each type it carried.
                        for t in key.unwrap_or_default().split_whitespace() {
                            *map.entry(t.to_owned()).or_default() += n;
                        }
                    } else {
                        *map.entry(key.unwrap_or_else(|| "-".to_owned()))
                            .or_default() += n;
                    }
                    if name == "action" {
                        stats.requests += n;
                    }
                }
            }
            Ok(stats)
        })
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), AuditError>> {
        Box::pin(async move {
            sqlx::query("SELECT 1")
                .execute(&self.pool)
                .await
                .map(|_| ())
                .map_err(db)
        })
    }
}
