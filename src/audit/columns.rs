//! Rows read back from either database, decoded in one place: the stores select the same
//! columns in the same order.

use sqlx::{ColumnIndex, Decode, Row, Type};

use super::{Checkpoint, RequestRow, StoredRow};

/// One multi-row `INSERT INTO audit_log` of chained rows (`NewRow`s) for database `$db`, with
/// the columns in the order both stores' migrations define. A macro, not a function: each
/// database binds the same fields through its own `Encode` impls.
macro_rules! insert_rows {
    ($db:ty, $rows:expr) => {{
        let mut insert = sqlx::QueryBuilder::<$db>::new(
            "INSERT INTO audit_log (seq, request_id, kind, ts, tenant, action, outcome, status, \
             body, prev_hash, hash, scheme, mac) ",
        );
        insert.push_values($rows, |mut b, r| {
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
        insert
    }};
}
pub(super) use insert_rows;

/// `seq, request_id, kind, ts, tenant, action, outcome, status, body, prev_hash, hash, scheme,
/// mac`.
pub(super) fn stored_row<'r, R>(r: &'r R) -> StoredRow
where
    R: Row,
    usize: ColumnIndex<R>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
    String: Decode<'r, R::Database> + Type<R::Database>,
{
    StoredRow {
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
        scheme: r.get(11),
        mac: r.get(12),
    }
}

/// `seq, head, ts, key_id, signature`.
pub(super) fn checkpoint<'r, R>(r: &'r R) -> Checkpoint
where
    R: Row,
    usize: ColumnIndex<R>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
    String: Decode<'r, R::Database> + Type<R::Database>,
{
    Checkpoint {
        seq: r.get(0),
        head: r.get(1),
        ts: r.get(2),
        key_id: r.get(3),
        signature: r.get(4),
    }
}

/// `seq, ts, request_id, tenant, key_id, model, action, route, rules, entities, policy, outcome,
/// status, error_code` (rules and entities as JSON text).
pub(super) fn request_row<'r, R>(r: &'r R) -> RequestRow
where
    R: Row,
    usize: ColumnIndex<R>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
    String: Decode<'r, R::Database> + Type<R::Database>,
{
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
}
