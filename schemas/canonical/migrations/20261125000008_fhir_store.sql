-- FHIR resources as EHRs wrote them (connectors/fhir): every version kept
-- verbatim as JSON text, so decimals and elements carehub does not map come
-- back exactly as sent. Patient and ServiceRequest writes also feed the
-- canonical record through the intake pipeline; the canonical tables stay the
-- one record the hub works from.
CREATE TABLE fhir_resource_version (
    resource_type text NOT NULL,
    id            text NOT NULL,
    version_id    integer NOT NULL,
    last_updated  timestamptz NOT NULL,
    deleted       boolean NOT NULL,
    -- NULL for a delete.
    body          text,
    -- The patient it is about, "Patient/<id>" (subject, patient or the Patient itself).
    patient_ref   text,
    -- POST, PUT or DELETE: the _history entry's request.
    method        text NOT NULL CHECK (method IN ('POST', 'PUT', 'DELETE')),
    -- The outbox event that fed this version to the hub (Patient, ServiceRequest).
    event_id      uuid,
    PRIMARY KEY (resource_type, id, version_id)
);
CREATE INDEX fhir_resource_version_type_time ON fhir_resource_version (resource_type, last_updated);

-- The current version of each, with what search needs extracted at write time.
CREATE TABLE fhir_resource (
    resource_type text NOT NULL,
    id            text NOT NULL,
    version_id    integer NOT NULL,
    last_updated  timestamptz NOT NULL,
    deleted       boolean NOT NULL,
    body          text,
    -- "system|value" of each identifier.
    identifiers   text[] NOT NULL DEFAULT '{}',
    -- The patient it is about, "Patient/<id>" (subject, patient or the Patient itself).
    patient_ref   text,
    status        text,
    -- "system|code" of each coding of code / type / category.
    codes         text[] NOT NULL DEFAULT '{}',
    PRIMARY KEY (resource_type, id)
);
CREATE INDEX fhir_resource_identifiers ON fhir_resource USING gin (identifiers);
CREATE INDEX fhir_resource_patient ON fhir_resource (resource_type, patient_ref);
CREATE INDEX fhir_resource_updated ON fhir_resource (resource_type, last_updated);
