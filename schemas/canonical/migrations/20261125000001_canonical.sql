-- Canonical record: the one model every connector maps into.
--
-- Every table that a message can change carries `source_message_id`: the id of
-- the inbound message (table `message`) that last changed the row. It is not a
-- foreign key because `message` is partitioned by time and retention drops whole
-- partitions; the full history of which message did what is in `audit_log`.

CREATE TABLE organization (
    id                uuid PRIMARY KEY,
    kind              text NOT NULL CHECK (kind IN ('clinic', 'lab', 'payer', 'carrier', 'other')),
    name              text NOT NULL,
    identifier_system text NOT NULL,
    identifier_value  text NOT NULL,
    phone             text,
    email             text,
    address           jsonb,
    active            boolean NOT NULL DEFAULT true,
    version           integer NOT NULL DEFAULT 1,
    source_message_id uuid,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    UNIQUE (identifier_system, identifier_value)
);

CREATE TABLE patient (
    id                        uuid PRIMARY KEY,
    family_name               text,
    given_names               text[] NOT NULL DEFAULT '{}',
    birth_date                date,
    sex                       text CHECK (sex IN ('male', 'female', 'other', 'unknown')),
    phone                     text,
    email                     text,
    address                   jsonb,
    managing_organization_id  uuid REFERENCES organization (id),
    -- After a merge (HL7 A40, FHIR Patient.link replaced-by) the non-surviving
    -- record points at the survivor and becomes inactive.
    merged_into_id            uuid REFERENCES patient (id),
    active                    boolean NOT NULL DEFAULT true,
    version                   integer NOT NULL DEFAULT 1,
    source_message_id         uuid,
    created_at                timestamptz NOT NULL DEFAULT now(),
    updated_at                timestamptz NOT NULL DEFAULT now()
);

-- Identifiers with their assigning authority (HL7 CX.4 / FHIR Identifier.system).
-- One (system, value) names exactly one patient.
CREATE TABLE patient_identifier (
    patient_id uuid NOT NULL REFERENCES patient (id),
    system     text NOT NULL,
    value      text NOT NULL,
    type_code  text,
    PRIMARY KEY (system, value)
);
CREATE INDEX patient_identifier_patient ON patient_identifier (patient_id);

CREATE TABLE practitioner (
    id                uuid PRIMARY KEY,
    family_name       text,
    given_names       text[] NOT NULL DEFAULT '{}',
    identifier_system text NOT NULL,
    identifier_value  text NOT NULL,
    organization_id   uuid REFERENCES organization (id),
    phone             text,
    email             text,
    version           integer NOT NULL DEFAULT 1,
    source_message_id uuid,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    UNIQUE (identifier_system, identifier_value)
);

-- "order" is an SQL keyword, hence service_order (FHIR ServiceRequest, HL7 ORC/OBR).
CREATE TABLE service_order (
    id                uuid PRIMARY KEY,
    placer_system     text NOT NULL,
    placer_number     text NOT NULL,
    filler_system     text,
    filler_number     text,
    patient_id        uuid NOT NULL REFERENCES patient (id),
    orderer_id        uuid REFERENCES practitioner (id),
    clinic_id         uuid REFERENCES organization (id),
    lab_id            uuid REFERENCES organization (id),
    status            text NOT NULL,
    priority          text NOT NULL DEFAULT 'routine' CHECK (priority IN ('routine', 'urgent', 'asap', 'stat')),
    due_date          date,
    device_spec       jsonb,
    note              text,
    version           integer NOT NULL DEFAULT 1,
    source_message_id uuid,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    UNIQUE (placer_system, placer_number)
);
CREATE INDEX service_order_patient ON service_order (patient_id);
CREATE UNIQUE INDEX service_order_filler ON service_order (filler_system, filler_number)
    WHERE filler_number IS NOT NULL;

CREATE TABLE order_item (
    order_id     uuid NOT NULL REFERENCES service_order (id),
    line_no      integer NOT NULL,
    code_system  text NOT NULL,
    code         text NOT NULL,
    display      text,
    quantity     numeric NOT NULL DEFAULT 1,
    body_site    text,
    laterality   text,
    device_spec  jsonb,
    PRIMARY KEY (order_id, line_no)
);

CREATE TABLE order_status_history (
    id                bigserial PRIMARY KEY,
    order_id          uuid NOT NULL REFERENCES service_order (id),
    from_status       text,
    to_status         text NOT NULL,
    reason            text,
    at                timestamptz NOT NULL DEFAULT now(),
    source_message_id uuid
);
CREATE INDEX order_status_history_order ON order_status_history (order_id, id);

CREATE TABLE observation (
    id                uuid PRIMARY KEY,
    patient_id        uuid NOT NULL REFERENCES patient (id),
    order_id          uuid REFERENCES service_order (id),
    status            text NOT NULL CHECK (status IN ('registered', 'preliminary', 'final', 'amended', 'corrected', 'cancelled', 'entered-in-error')),
    code_system       text NOT NULL,
    code              text NOT NULL,
    display           text,
    value_type        text NOT NULL CHECK (value_type IN ('quantity', 'string', 'coded', 'none')),
    value_quantity    numeric,
    value_unit        text,
    value_string      text,
    value_code        text,
    interpretation    text,
    reference_range   text,
    effective_at      timestamptz,
    issued_at         timestamptz,
    source_message_id uuid,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX observation_patient ON observation (patient_id);
CREATE INDEX observation_order ON observation (order_id);

CREATE TABLE imaging_study (
    id                 uuid PRIMARY KEY,
    study_instance_uid text NOT NULL UNIQUE,
    patient_id         uuid NOT NULL REFERENCES patient (id),
    order_id           uuid REFERENCES service_order (id),
    accession_number   text,
    modalities         text[] NOT NULL DEFAULT '{}',
    description        text,
    started_at         timestamptz,
    series_count       integer NOT NULL DEFAULT 0,
    instance_count     integer NOT NULL DEFAULT 0,
    source_message_id  uuid,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now()
);

-- Money is kept in minor units (cents) with an ISO 4217 currency, as Stripe does.
CREATE TABLE invoice (
    id                uuid PRIMARY KEY,
    number            text NOT NULL UNIQUE,
    order_id          uuid REFERENCES service_order (id),
    patient_id        uuid REFERENCES patient (id),
    organization_id   uuid REFERENCES organization (id),
    status            text NOT NULL CHECK (status IN ('draft', 'issued', 'balanced', 'cancelled', 'entered-in-error')),
    currency          text NOT NULL,
    total_minor       bigint NOT NULL DEFAULT 0,
    issued_at         timestamptz,
    source_message_id uuid,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE invoice_line (
    invoice_id       uuid NOT NULL REFERENCES invoice (id),
    line_no          integer NOT NULL,
    code             text,
    description      text NOT NULL,
    quantity         numeric NOT NULL DEFAULT 1,
    unit_price_minor bigint NOT NULL,
    amount_minor     bigint NOT NULL,
    PRIMARY KEY (invoice_id, line_no)
);

CREATE TABLE payment (
    id                uuid PRIMARY KEY,
    invoice_id        uuid REFERENCES invoice (id),
    provider          text NOT NULL,
    provider_ref      text NOT NULL,
    amount_minor      bigint NOT NULL,
    currency          text NOT NULL,
    status            text NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed', 'refunded', 'cancelled')),
    paid_at           timestamptz,
    source_message_id uuid,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    UNIQUE (provider, provider_ref)
);

CREATE TABLE shipment (
    id                uuid PRIMARY KEY,
    order_id          uuid NOT NULL REFERENCES service_order (id),
    carrier           text NOT NULL,
    service_level     text,
    tracking_number   text,
    status            text NOT NULL CHECK (status IN ('created', 'label_purchased', 'in_transit', 'out_for_delivery', 'delivered', 'returned', 'failure', 'cancelled')),
    shipped_at        timestamptz,
    delivered_at      timestamptz,
    source_message_id uuid,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX shipment_tracking ON shipment (carrier, tracking_number) WHERE tracking_number IS NOT NULL;

CREATE TABLE document (
    id                uuid PRIMARY KEY,
    patient_id        uuid REFERENCES patient (id),
    order_id          uuid REFERENCES service_order (id),
    kind              text NOT NULL,
    content_type      text NOT NULL,
    content           bytea,
    url               text,
    sha256            bytea,
    source_message_id uuid,
    created_at        timestamptz NOT NULL DEFAULT now(),
    CHECK (content IS NOT NULL OR url IS NOT NULL)
);
