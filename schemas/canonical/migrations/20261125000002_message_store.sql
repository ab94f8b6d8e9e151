-- Message store: every inbound message, raw bytes verbatim, with indexed metadata.
--
-- Partitioned by month on received_at so that retention is `DROP TABLE
-- message_YYYY_MM` and index scans stay within the partitions a query names.
-- Partitions are created ahead of time by carehub_ensure_message_partitions(),
-- called by `carehub migrate` and daily by `carehub serve`.
CREATE TABLE message (
    id           uuid NOT NULL,
    received_at  timestamptz NOT NULL,
    connector    text NOT NULL,
    protocol     text NOT NULL,
    message_type text,
    control_id   text,
    source_key   text NOT NULL,
    patient_id   uuid,
    status       text NOT NULL CHECK (status IN ('received', 'processed', 'failed')),
    processed_at timestamptz,
    error        text,
    origin       text,
    raw          bytea NOT NULL,
    PRIMARY KEY (id, received_at)
) PARTITION BY RANGE (received_at);

CREATE INDEX message_received ON message (received_at);
CREATE INDEX message_connector_type ON message (connector, message_type, received_at);
CREATE INDEX message_control_id ON message (control_id) WHERE control_id IS NOT NULL;
CREATE INDEX message_patient ON message (patient_id) WHERE patient_id IS NOT NULL;
CREATE INDEX message_status ON message (status, received_at) WHERE status <> 'processed';

-- Idempotency keys live outside the partitioned table: a unique index on a
-- partitioned table must contain the partition key, which would let the same
-- key in two different months pass as two messages. Keys are per source:
-- "hl7:<sending facility>:<MSH-10>", "stripe:<event id>", "kafka:<topic>/<partition>/<offset>".
CREATE TABLE message_key (
    source_key  text PRIMARY KEY,
    message_id  uuid NOT NULL,
    received_at timestamptz NOT NULL
);

CREATE FUNCTION carehub_ensure_message_partitions(months_back integer, months_ahead integer)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    first_month date := date_trunc('month', now() AT TIME ZONE 'UTC')::date - make_interval(months => months_back);
    m date;
    created integer := 0;
    part text;
BEGIN
    FOR i IN 0 .. (months_back + months_ahead) LOOP
        m := (first_month + make_interval(months => i))::date;
        part := format('message_%s', to_char(m, 'YYYY_MM'));
        IF to_regclass(part) IS NULL THEN
            EXECUTE format(
                'CREATE TABLE %I PARTITION OF message FOR VALUES FROM (%L) TO (%L)',
                part,
                (m::timestamp AT TIME ZONE 'UTC'),
                ((m + interval '1 month')::timestamp AT TIME ZONE 'UTC'));
            created := created + 1;
        END IF;
    END LOOP;
    RETURN created;
END;
$$;

SELECT carehub_ensure_message_partitions(1, 3);
