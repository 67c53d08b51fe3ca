//! The PostgreSQL audit store, for several veil instances behind a load balancer sharing one
//! trail.
//!
//! One chain for all instances: an append runs in one transaction that first takes a
//! transaction-scoped advisory lock, then reads the tail, chains its rows after it, inserts them
//! and commits (`synchronous_commit` as the server has it: on by default, so a commit is
//! durable). The lock serialises appends across instances only for the length of one group
//! commit. An append is idempotent: rows whose `(request_id, kind)` is already stored — a commit
//! whose acknowledgement was lost, then retried — are skipped rather than failing the batch
//! forever.

use std::str::FromStr;
use std::time::Duration;

use sqlx::Row as _;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use super::columns;
use super::query::{Dialect, Query, RequestRow, Stats, push_filtered};
use super::{AuditError, AuditStore, BoxFuture, ChainKey, Checkpoint, GENESIS, NewRow, StoredRow};

/// Advisory lock key of the chain ("veil" in ASCII).
const CHAIN_LOCK: i64 = 0x7665_696c;
/// Rows per INSERT statement (13 parameters each; PostgreSQL takes at most 65,535).
const INSERT_CHUNK: usize = 1_000;

const DIALECT: Dialect = Dialect {
    rule: "EXISTS (SELECT 1 FROM jsonb_array_elements(rules) r WHERE r ->> 'rule' = ",
    entity: "EXISTS (SELECT 1 FROM jsonb_array_elements(entities) e WHERE e ->> 'entity' = ",
    hmac: "EXISTS (SELECT 1 FROM jsonb_array_elements(entities) e, \
           jsonb_array_elements(e -> 'spans') s WHERE s ->> 'hmac' = ",
    entity_list: "(SELECT string_agg(e ->> 'entity', ' ') FROM jsonb_array_elements(entities) e)",
};

/// Decisions without an outcome are closed as `outcome_unknown` at start only when older than
/// this: other instances may be serving younger ones right now.
const RECONCILE_AFTER: time::Duration = time::Duration::hours(1);

fn reconcile_before() -> String {
    (time::OffsetDateTime::now_utc() - RECONCILE_AFTER)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn db(e: impl std::fmt::Display) -> AuditError {
    AuditError::Database(e.to_string())
}

/// PostgreSQL-backed [`AuditStore`].
#[derive(Debug)]
pub struct PostgresStore {
    pool: PgPool,
}

impl PostgresStore {
    /// Connects and runs the migrations (sqlx serialises concurrent migrators with an advisory
    /// lock, so instances starting together are safe).
    pub async fn open(url: &str) -> Result<Self, AuditError> {
        let options = PgConnectOptions::from_str(url).map_err(db)?;
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await
            .map_err(db)?;
        sqlx::migrate!("./migrations/postgres")
            .run(&pool)
            .await
            .map_err(db)?;
        Ok(Self { pool })
    }

    /// Connects for reading only: every transaction is read-only, nothing is migrated, and a
    /// database without the audit tables is an error.
    pub async fn open_read_only(url: &str) -> Result<Self, AuditError> {
        let options = PgConnectOptions::from_str(url)
            .map_err(db)?
            .options([("default_transaction_read_only", "on")]);
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await
            .map_err(db)?;
        let exists: Option<String> = sqlx::query_scalar("SELECT to_regclass('audit_log')::text")
            .fetch_one(&pool)
            .await
            .map_err(db)?;
        if exists.is_none() {
            return Err(AuditError::Database(
                "no audit log in this PostgreSQL database; check audit.url (or VEIL_AUDIT_URL)"
                    .to_owned(),
            ));
        }
        Ok(Self { pool })
    }
}

async fn insert_all(
    pool: &PgPool,
    rows: &[NewRow],
    key: &ChainKey,
) -> Result<(i64, String), sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(CHAIN_LOCK)
        .execute(&mut *tx)
        .await?;
    let tail = sqlx::query("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
        .fetch_optional(&mut *tx)
        .await?
        .map_or((0, GENESIS.to_owned()), |r| (r.get(0), r.get(1)));
    // A retried batch whose earlier commit landed starts with rows already stored: one point
    // lookup says so, and only then are the stored ones filtered out.
    let landed = match rows.first() {
        Some(first) => sqlx::query("SELECT 1 FROM audit_log WHERE request_id = $1 AND kind = $2")
            .bind(&first.request_id)
            .bind(&first.kind)
            .fetch_optional(&mut *tx)
            .await?
            .is_some(),
        None => false,
    };
    let fresh: Vec<NewRow> = if landed {
        let ids: Vec<String> = rows.iter().map(|r| r.request_id.clone()).collect();
        let stored: std::collections::HashSet<(String, String)> =
            sqlx::query("SELECT request_id, kind FROM audit_log WHERE request_id = ANY($1)")
                .bind(&ids)
                .fetch_all(&mut *tx)
                .await?
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect();
        rows.iter()
            .filter(|r| !stored.contains(&(r.request_id.clone(), r.kind.clone())))
            .cloned()
            .collect()
    } else {
        rows.to_vec()
    };
    let chained = key.link((tail.0, &tail.1), &fresh);
    for chunk in chained.chunks(INSERT_CHUNK) {
        let mut insert = sqlx::QueryBuilder::<sqlx::Postgres>::new(format!(
            "INSERT INTO audit_log ({}) ",
            super::columns::LOG_COLUMNS
        ));
        insert.push_values(chunk, |mut b, r| {
            b.push_bind(r.seq)
                .push_bind(&r.request_id)
                .push_bind(&r.kind)
                .push_bind(&r.ts)
                .push_bind(&r.tenant)
                .push_bind(&r.action)
                .push_bind(&r.outcome)
                .push_bind(r.status)
                .push_bind(&r.body)
                .push_bind(&r.prev_hash)
                .push_bind(&r.hash)
                .push_bind(&r.scheme)
                .push_bind(&r.mac);
        });
        insert.build().execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(chained.last().map_or(tail, |r| (r.seq, r.hash.clone())))
}

impl AuditStore for PostgresStore {
    fn tail(&self) -> BoxFuture<'_, Result<Option<(i64, String)>, AuditError>> {
        Box::pin(async move {
            let row = sqlx::query("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
                .fetch_optional(&self.pool)
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
        Box::pin(async move { insert_all(&self.pool, rows, key).await.map_err(db) })
    }

    fn add_checkpoint<'a>(&'a self, cp: &'a Checkpoint) -> BoxFuture<'a, Result<(), AuditError>> {
        Box::pin(async move {
            sqlx::query(
                "INSERT INTO audit_checkpoints (seq, head, ts, key_id, signature) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            )
            .bind(cp.seq)
            .bind(&cp.head)
            .bind(&cp.ts)
            .bind(&cp.key_id)
            .bind(&cp.signature)
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(db)
        })
    }

    fn prune(&self, through: i64) -> BoxFuture<'_, Result<u64, AuditError>> {
        Box::pin(async move {
            let result: Result<u64, sqlx::Error> = async {
                let mut tx = self.pool.begin().await?;
                // The append-only trigger lets a delete through only in a transaction that
                // says it is pruning (see migrations/postgres).
                sqlx::query("SELECT set_config('veil.prune', 'on', true)")
                    .execute(&mut *tx)
                    .await?;
                let n = sqlx::query("DELETE FROM audit_log WHERE seq <= $1")
                    .bind(through)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                tx.commit().await?;
                Ok(n)
            }
            .await;
            result.map_err(db)
        })
    }

    fn checkpoints(&self) -> BoxFuture<'_, Result<Vec<Checkpoint>, AuditError>> {
        Box::pin(async move {
            let rows = sqlx::query(
                "SELECT seq, head, ts, key_id, signature FROM audit_checkpoints ORDER BY seq",
            )
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
            Ok(rows.iter().map(columns::checkpoint).collect())
        })
    }

    fn seq_bounds<'a>(
        &'a self,
        from: Option<&'a str>,
        to: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Option<(i64, i64)>, AuditError>> {
        Box::pin(async move {
            let row = sqlx::query(
                "SELECT MIN(seq), MAX(seq) FROM audit_log \
                 WHERE ($1::text IS NULL OR ts >= $1) AND ($2::text IS NULL OR ts < $2)",
            )
            .bind(from)
            .bind(to)
            .fetch_one(&self.pool)
            .await
            .map_err(db)?;
            let (lo, hi): (Option<i64>, Option<i64>) = (row.get(0), row.get(1));
            Ok(lo.zip(hi))
        })
    }

    fn open_decisions(&self) -> BoxFuture<'_, Result<Vec<String>, AuditError>> {
        Box::pin(async move {
            let rows = sqlx::query(
                "SELECT d.request_id FROM audit_log d WHERE d.kind = 'decision' AND d.ts < $1 \
                 AND NOT EXISTS (SELECT 1 FROM audit_log o WHERE o.request_id = d.request_id \
                 AND o.kind = 'outcome') ORDER BY d.seq",
            )
            .bind(reconcile_before())
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
            let sql = format!(
                "SELECT {} FROM audit_log WHERE seq > $1 AND seq <= $2 ORDER BY seq LIMIT $3",
                super::columns::LOG_COLUMNS
            );
            let rows = sqlx::query(&sql)
                .bind(after)
                .bind(to)
                .bind(limit)
                .fetch_all(&self.pool)
                .await
                .map_err(db)?;
            Ok(rows.iter().map(columns::stored_row).collect())
        })
    }

    fn query<'a>(&'a self, q: &'a Query) -> BoxFuture<'a, Result<Vec<RequestRow>, AuditError>> {
        Box::pin(async move {
            let mut qb = sqlx::QueryBuilder::new(
                "SELECT seq, ts, request_id, tenant, key_id, model, action, route, rules::text, \
                 entities::text, policy, outcome, status, error_code",
            );
            push_filtered(&mut qb, q, &DIALECT);
            qb.push(" ORDER BY seq DESC");
            if let Some(limit) = q.limit {
                qb.push(" LIMIT ")
                    .push_bind(i64::try_from(limit).unwrap_or(i64::MAX));
            }
            let rows = qb.build().fetch_all(&self.pool).await.map_err(db)?;
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
                for r in qb.build().fetch_all(&self.pool).await.map_err(db)? {
                    stats.add(group, r.get(0), r.get(1));
                }
            }
            Ok(stats)
        })
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move { self.pool.close().await })
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
