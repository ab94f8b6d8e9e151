-- Canonical homes for what HL7 v2 messages carry beyond patients and orders.

-- A visit (HL7 PV1, FHIR Encounter): ADT A01/A04 open it, A03 closes it.
CREATE TABLE encounter (
    id                uuid PRIMARY KEY,
    patient_id        uuid NOT NULL REFERENCES patient (id),
    -- PV1-19 visit number with its assigning authority, unique per source.
    visit_system      text NOT NULL,
    visit_number      text NOT NULL,
    class             text,
    status            text NOT NULL CHECK (status IN ('planned', 'in-progress', 'finished', 'cancelled')),
    location          text,
    admitted_at       timestamptz,
    discharged_at     timestamptz,
    source_message_id uuid,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    UNIQUE (visit_system, visit_number)
);
CREATE INDEX encounter_patient ON encounter (patient_id);

-- An appointment (HL7 SIU SCH/AIS, FHIR Appointment).
CREATE TABLE appointment (
    id                   uuid PRIMARY KEY,
    -- SCH-1 / SCH-2 with their assigning authorities.
    placer_system        text NOT NULL,
    placer_id            text NOT NULL,
    filler_id            text,
    patient_id           uuid NOT NULL REFERENCES patient (id),
    order_id             uuid REFERENCES service_order (id),
    status               text NOT NULL CHECK (status IN ('proposed', 'pending', 'booked', 'arrived', 'fulfilled', 'cancelled', 'noshow', 'entered-in-error')),
    reason_code          text,
    reason_display       text,
    start_at             timestamptz,
    duration_minutes     integer,
    location             text,
    source_message_id    uuid,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    UNIQUE (placer_system, placer_id)
);
CREATE INDEX appointment_patient ON appointment (patient_id);

-- The source's identity of a result (order, code, sub-id), so a corrected
-- result updates the observation it corrects instead of adding another.
ALTER TABLE observation ADD COLUMN result_key text UNIQUE;
