-- The keyed chain and signed checkpoints.
--
-- Rows written from now on are scheme 'v2': `hash` is SHA-256 over every column and the previous
-- hash, `mac` the HMAC of it under the chain key. Existing rows stay as they were, scheme 'v1';
-- the first v2 row's hash covers theirs. Adding columns fires no trigger and rewrites no row.
ALTER TABLE audit_log ADD COLUMN scheme TEXT NOT NULL DEFAULT 'v1';
ALTER TABLE audit_log ADD COLUMN mac TEXT;

-- Signed statements "the chain reached seq with this head", also appended to a file outside
-- the database (audit.checkpoint_file).
CREATE TABLE audit_checkpoints (
    seq        INTEGER NOT NULL,
    head       TEXT    NOT NULL,
    ts         TEXT    NOT NULL,
    key_id     TEXT    NOT NULL,
    signature  TEXT    NOT NULL,
    PRIMARY KEY (seq, key_id)
);

CREATE TRIGGER audit_checkpoints_no_update BEFORE UPDATE ON audit_checkpoints
BEGIN SELECT RAISE(ABORT, 'audit_checkpoints is append-only'); END;
CREATE TRIGGER audit_checkpoints_no_delete BEFORE DELETE ON audit_checkpoints
BEGIN SELECT RAISE(ABORT, 'audit_checkpoints is append-only'); END;
