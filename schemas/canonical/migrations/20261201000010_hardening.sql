-- Hardening (issue 13).
--
-- The content hash of each stored message, beside its idempotency key: a
-- second message under the same key with the same hash is a duplicate with
-- no effect; with another hash it is a changed duplicate, kept for review
-- in message_conflict (never applied silently, never dropped silently).
ALTER TABLE message_key ADD COLUMN content_sha256 bytea;

CREATE TABLE message_conflict (
    id             bigserial PRIMARY KEY,
    source_key     text NOT NULL,
    -- The first copy, the one the key names in message_key.
    message_id     uuid NOT NULL,
    received_at    timestamptz NOT NULL DEFAULT now(),
    connector      text NOT NULL,
    origin         text,
    content_sha256 bytea NOT NULL,
    raw            bytea NOT NULL,
    status         text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'reviewed'))
);
CREATE INDEX message_conflict_message ON message_conflict (message_id);
CREATE INDEX message_conflict_open ON message_conflict (received_at) WHERE status = 'open';
