-- Events that are not requests (a policy reload accepted or refused) join the same chain as
-- `event` rows: request_id holds the event's own id, body its canonical JSON.
--
-- SQLite cannot alter a CHECK constraint, so the table is rebuilt with its rows, triggers,
-- indexes and view. Dropping a table fires no trigger, and the rows are copied unchanged
-- (seq, hashes and all), so the chain verifies exactly as before.
DROP VIEW audit_requests;
DROP TRIGGER audit_log_no_update;
DROP TRIGGER audit_log_no_delete;

CREATE TABLE audit_log_v2 (
    seq        INTEGER PRIMARY KEY,
    request_id TEXT    NOT NULL,
    kind       TEXT    NOT NULL CHECK (kind IN ('decision', 'outcome', 'event')),
    ts         TEXT    NOT NULL,
    tenant     TEXT,
    action     TEXT,
    outcome    TEXT,
    status     INTEGER,
    body       TEXT    NOT NULL,
    prev_hash  TEXT    NOT NULL,
    hash       TEXT    NOT NULL,
    UNIQUE (request_id, kind)
);
INSERT INTO audit_log_v2 SELECT seq, request_id, kind, ts, tenant, action, outcome, status, body, prev_hash, hash FROM audit_log;
DROP TABLE audit_log;
ALTER TABLE audit_log_v2 RENAME TO audit_log;

CREATE INDEX audit_log_ts ON audit_log (ts);
CREATE INDEX audit_log_tenant ON audit_log (tenant, ts);

CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;

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

-- One line per event, for people querying the log.
CREATE VIEW audit_events AS
SELECT seq,
       ts,
       request_id                          AS event_id,
       json_extract(body, '$.event')       AS event,
       json_extract(body, '$.status')      AS status,
       json_extract(body, '$.file')        AS file,
       json_extract(body, '$.old_digest')  AS old_digest,
       json_extract(body, '$.new_digest')  AS new_digest,
       json_extract(body, '$.reason')      AS reason
FROM audit_log
WHERE kind = 'event';
