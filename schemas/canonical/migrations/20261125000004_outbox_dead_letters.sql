-- Transactional outbox: rows are written in the same transaction as the
-- canonical change they announce; OutboxRelay publishes unsent rows in id
-- order and then stamps sent_at. A relay crash between publish and stamp
-- re-publishes those rows; consumers dedupe by event_id.
CREATE TABLE outbox (
    id         bigserial PRIMARY KEY,
    event_id   uuid NOT NULL UNIQUE,
    topic      text NOT NULL,
    key        text NOT NULL,
    payload    jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    sent_at    timestamptz
);
CREATE INDEX outbox_unsent ON outbox (id) WHERE sent_at IS NULL;

-- Events a consumer group has already applied (idempotent handlers).
CREATE TABLE consumed_event (
    consumer     text NOT NULL,
    event_id     text NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);

-- Records that could not be handled, with the reason and the original payload.
CREATE TABLE dead_letter (
    id           bigserial PRIMARY KEY,
    consumer     text NOT NULL,
    topic        text NOT NULL,
    kafka_partition integer,
    kafka_offset bigint,
    key          bytea,
    payload      bytea NOT NULL,
    event_id     text,
    message_id   uuid,
    error_code   text NOT NULL,
    reason       text NOT NULL,
    status       text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'replayed', 'discarded')),
    replay_count integer NOT NULL DEFAULT 0,
    created_at   timestamptz NOT NULL DEFAULT now(),
    replayed_at  timestamptz
);
CREATE INDEX dead_letter_open ON dead_letter (created_at) WHERE status = 'open';
