//! Rows read back from either database, decoded in one place: the stores select the same
//! columns ([`LOG_COLUMNS`]) in the same order.

use sqlx::{ColumnIndex, Decode, Row, Type};

use super::{Checkpoint, RequestRow, StoredRow};

/// The columns of `audit_log` in the order both stores' migrations define, for their inserts
/// and row reads.
pub(super) const LOG_COLUMNS: &str = "seq, request_id, kind, ts, tenant, action, outcome, status, body, prev_hash, hash, scheme, mac";

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
