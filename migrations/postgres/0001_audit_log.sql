-- The audit log in PostgreSQL, shared by several veil instances: the same columns, chain and
-- checkpoints as the SQLite log (migrations/sqlite). Appends take a transaction-scoped advisory
-- lock, read the tail, chain their rows after it and commit, so the instances extend one chain.
-- Text columns hold exactly the bytes that were hashed (ts as RFC 3339 text, body as JSON text).
CREATE TABLE audit_log (
    seq        BIGINT  PRIMARY KEY,
    request_id TEXT    NOT NULL,
    kind       TEXT    NOT NULL CHECK (kind IN ('decision', 'outcome', 'event')),
    ts         TEXT    NOT NULL,
    tenant     TEXT,
    action     TEXT,
    outcome    TEXT,
    status     BIGINT,
    body       TEXT    NOT NULL,
    prev_hash  TEXT    NOT NULL,
    hash       TEXT    NOT NULL,
    scheme     TEXT    NOT NULL DEFAULT 'v2',
    mac        TEXT,
    -- The body parsed once, at insert, for queries (derived: it cannot be written on its own,
    -- and the chain covers `body`).
    doc        JSONB   GENERATED ALWAYS AS (body::jsonb) STORED,
    UNIQUE (request_id, kind)
);

CREATE INDEX audit_log_ts ON audit_log (ts);
CREATE INDEX audit_log_tenant ON audit_log (tenant, ts);

CREATE TABLE audit_checkpoints (
    seq        BIGINT NOT NULL,
    head       TEXT   NOT NULL,
    ts         TEXT   NOT NULL,
    key_id     TEXT   NOT NULL,
    signature  TEXT   NOT NULL,
    PRIMARY KEY (seq, key_id)
);

-- Append-only: updates, deletes and truncation are refused — except the deletes of
-- `veil audit prune`, which marks its transaction (the chain, not this trigger, is what
-- protects against someone with write access; the trigger stops mistakes).
CREATE FUNCTION veil_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND TG_TABLE_NAME = 'audit_log'
       AND current_setting('veil.prune', true) = 'on' THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION '% is append-only', TG_TABLE_NAME;
END;
$$;
CREATE TRIGGER audit_log_no_change BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION veil_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION veil_append_only();
CREATE TRIGGER audit_checkpoints_no_change BEFORE UPDATE OR DELETE ON audit_checkpoints
    FOR EACH ROW EXECUTE FUNCTION veil_append_only();
CREATE TRIGGER audit_checkpoints_no_truncate BEFORE TRUNCATE ON audit_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION veil_append_only();

-- One row per request, for people querying the log.
CREATE VIEW audit_requests AS
SELECT d.request_id                               AS request_id,
       d.seq                                      AS seq,
       d.ts                                       AS ts,
       d.tenant                                   AS tenant,
       d.doc ->> 'key_id'                 AS key_id,
       d.doc ->> 'client_addr'            AS client_addr,
       d.doc ->> 'endpoint'               AS endpoint,
       d.doc ->> 'model'                  AS model,
       d.action                                   AS action,
       d.doc ->> 'route'                  AS route,
       d.doc ->> 'reason_code'            AS reason_code,
       d.doc -> 'rules'                   AS rules,
       d.doc ->> 'policy'                 AS policy,
       d.doc ->> 'policy_digest'          AS policy_digest,
       d.doc -> 'entities'                AS entities,
       o.outcome                                  AS outcome,
       o.status                                   AS status,
       o.doc ->> 'error_code'             AS error_code,
       (d.doc ->> 'scan_ms')::float8      AS scan_ms,
       (o.doc ->> 'upstream_ms')::float8  AS upstream_ms,
       (o.doc ->> 'total_ms')::float8     AS total_ms,
       (o.doc ->> 'prompt_tokens')::bigint     AS prompt_tokens,
       (o.doc ->> 'completion_tokens')::bigint AS completion_tokens
FROM audit_log d
LEFT JOIN audit_log o ON o.request_id = d.request_id AND o.kind = 'outcome'
WHERE d.kind = 'decision';

CREATE VIEW audit_events AS
SELECT seq,
       ts,
       request_id                     AS event_id,
       doc ->> 'event'        AS event,
       doc ->> 'status'       AS status,
       doc ->> 'file'         AS file,
       doc ->> 'old_digest'   AS old_digest,
       doc ->> 'new_digest'   AS new_digest,
       doc ->> 'reason'       AS reason
FROM audit_log
WHERE kind = 'event';
