-- The lab's manufacturing of an order (FHIR Task for a ServiceRequest):
-- the state of each order at the lab, driven by lab.status.v1 events.
CREATE TABLE lab_job (
    order_id          uuid PRIMARY KEY REFERENCES service_order (id),
    status            text NOT NULL CHECK (status IN ('requested', 'accepted', 'rejected', 'in_production',
                                                     'qc_passed', 'qc_failed', 'ready_to_ship', 'shipped',
                                                     'delivered', 'cancelled')),
    -- The lab numbers its status events per order (1, 2, …): the last one applied.
    last_sequence     bigint NOT NULL DEFAULT 0,
    -- The order version last sent on lab.orders.v1 (a stale amendment is not resent).
    dispatched_version integer NOT NULL,
    cancel_requested  boolean NOT NULL DEFAULT false,
    remakes           integer NOT NULL DEFAULT 0,
    status_reason     text,
    carrier           text,
    tracking_number   text,
    version           integer NOT NULL DEFAULT 1,
    source_message_id uuid,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);

-- Every transition a status event made, in order: the order's timeline at the lab.
CREATE TABLE lab_job_event (
    order_id          uuid NOT NULL REFERENCES service_order (id),
    sequence          bigint NOT NULL,
    from_status       text NOT NULL,
    to_status         text NOT NULL,
    reason            text,
    event_id          text NOT NULL,
    occurred_at       timestamptz,
    applied_at        timestamptz NOT NULL DEFAULT now(),
    source_message_id uuid,
    PRIMARY KEY (order_id, sequence)
);

-- Status events that arrived before their predecessor (a gap in the
-- sequence): held here and applied, in order, when the gap is filled.
CREATE TABLE lab_status_held (
    order_id          uuid NOT NULL REFERENCES service_order (id),
    sequence          bigint NOT NULL,
    event             jsonb NOT NULL,
    source_message_id uuid,
    held_at           timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (order_id, sequence)
);
