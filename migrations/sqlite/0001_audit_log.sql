-- The audit log: append-only, hash-chained. Each request leaves a `decision` row (written
-- before anything is sent upstream) and an `outcome` row (written when the answer ends),
-- linked by request_id. Rows hold entity types, counts, offsets, rule ids and keyed HMACs,
-- never prompt or answer text.
CREATE TABLE audit_log (
    seq        INTEGER PRIMARY KEY,              -- position in the chain, from 1
    request_id TEXT    NOT NULL,
    kind       TEXT    NOT NULL CHECK (kind IN ('decision', 'outcome')),
    ts         TEXT    NOT NULL,                 -- RFC 3339 UTC
    tenant     TEXT,
    action     TEXT,                             -- decision rows
    outcome    TEXT,                             -- outcome rows
    status     INTEGER,                          -- outcome rows
    body       TEXT    NOT NULL,                 -- canonical JSON of the record
    prev_hash  TEXT    NOT NULL,                 -- hash of row seq-1 (64 zeros for the first)
    hash       TEXT    NOT NULL,                 -- sha256(prev_hash, seq, kind, request_id, ts, body)
    UNIQUE (request_id, kind)
);

CREATE INDEX audit_log_ts ON audit_log (ts);
CREATE INDEX audit_log_tenant ON audit_log (tenant, ts);

-- Append-only: the database refuses updates and deletes of audit rows.
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;

-- One row per request, for people querying the log.
CREATE VIEW audit_requests AS
SELECT d.request_id                               AS request_id,
       d.seq                                      AS seq,
       d.ts                                       AS ts,
       d.tenant                                   AS tenant,
       json_extract(d.body, '$.key_id')           AS key_id,
       json_extract(d.body, '$.client_addr')      AS client_addr,
       json_extract(d.body, '$.endpoint')         AS endpoint,
       json_extract(d.body, '$.model')            AS model,
       d.action                                   AS action,
       json_extract(d.body, '$.route')            AS route,
       json_extract(d.body, '$.reason_code')      AS reason_code,
       json_extract(d.body, '$.rules')            AS rules,
       json_extract(d.body, '$.policy')           AS policy,
       json_extract(d.body, '$.policy_digest')    AS policy_digest,
       json_extract(d.body, '$.entities')         AS entities,
       o.outcome                                  AS outcome,
       o.status                                   AS status,
       json_extract(o.body, '$.error_code')       AS error_code,
       json_extract(d.body, '$.scan_ms')          AS scan_ms,
       json_extract(o.body, '$.upstream_ms')      AS upstream_ms,
       json_extract(o.body, '$.total_ms')         AS total_ms,
       json_extract(o.body, '$.prompt_tokens')    AS prompt_tokens,
       json_extract(o.body, '$.completion_tokens') AS completion_tokens
FROM audit_log d
LEFT JOIN audit_log o ON o.request_id = d.request_id AND o.kind = 'outcome'
WHERE d.kind = 'decision';
