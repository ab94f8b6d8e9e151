-- Audit trail: append-only, hash-chained.
--
-- Each row's hash = SHA-256(previous row's hash || canonical JSON of the row),
-- computed by carehub (AuditLog::append) while it holds the chain head's row
-- lock, so rows are chained in commit order. `carehub audit verify` recomputes
-- the chain. The database refuses UPDATE, DELETE and TRUNCATE on the trail.
CREATE TABLE audit_log (
    seq         bigint PRIMARY KEY,
    at          timestamptz NOT NULL,
    actor_kind  text NOT NULL CHECK (actor_kind IN ('user', 'system', 'connector')),
    actor_id    text NOT NULL,
    action      text NOT NULL CHECK (action IN ('create', 'read', 'update', 'delete', 'ingest', 'send', 'replay')),
    entity_type text NOT NULL,
    entity_id   text,
    message_id  uuid,
    origin      text,
    detail      text,
    prev_hash   bytea NOT NULL,
    hash        bytea NOT NULL
);
CREATE INDEX audit_log_entity ON audit_log (entity_type, entity_id);
CREATE INDEX audit_log_message ON audit_log (message_id) WHERE message_id IS NOT NULL;
CREATE INDEX audit_log_at ON audit_log (at);

CREATE TABLE audit_chain_head (
    id   integer PRIMARY KEY CHECK (id = 1),
    seq  bigint NOT NULL,
    hash bytea NOT NULL
);
INSERT INTO audit_chain_head (id, seq, hash) VALUES (1, 0, '\x0000000000000000000000000000000000000000000000000000000000000000');

CREATE FUNCTION carehub_audit_log_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER audit_log_append_only
    BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION carehub_audit_log_refuse();
CREATE TRIGGER audit_log_no_truncate
    BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION carehub_audit_log_refuse();
CREATE TRIGGER audit_chain_head_no_delete
    BEFORE DELETE OR TRUNCATE ON audit_chain_head
    FOR EACH STATEMENT EXECUTE FUNCTION carehub_audit_log_refuse();
