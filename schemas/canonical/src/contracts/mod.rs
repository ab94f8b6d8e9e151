//! Every Kafka contract of carehub in one place: the event type names and the
//! structs of their `data`, as `schemas/json/<type>.json` describes them (the
//! test `tests/schemas.rs` holds the two together). Connectors and pipelines
//! name a contract from here; none defines its own.
//!
//! A contract's type name carries its version (`.v1`); a change that breaks a
//! reader gets a new name and a new schema file, never an edit of the old one.

pub mod dicom;
pub mod fhir;
pub mod hl7;
pub mod lab;
pub mod records;

pub use dicom::InstanceReceived;
pub use fhir::ResourceWritten;
pub use hl7::{Outbound, Received};
pub use lab::{
    EhrOrderStatus, LabItem, LabOrder, LabPatient, LabResult, LabResults, LabStatusReport, OrderAction, ReportStatus,
    ValueType,
};
pub use records::{OrganizationUpsert, PatientMerged, PatientUpsert, RecordChanged};

/// The default topic of the canonical record's announcements (`[pipelines.*] events_topic`).
pub const DEFAULT_EVENTS_TOPIC: &str = "carehub.events.v1";

/// [`DEFAULT_EVENTS_TOPIC`] as a serde default of the pipelines' `events_topic`.
pub fn default_events_topic() -> String {
    DEFAULT_EVENTS_TOPIC.to_owned()
}

// Inbound, from the connectors.

/// A received HL7 v2 message, stored by the MLLP ingress (topic `carehub.hl7v2.inbound.v1`).
pub const HL7_RECEIVED: &str = "carehub.hl7v2.received.v1";
/// An instance the DIMSE server stored (topic `[dicom] topic`).
pub const DICOM_RECEIVED: &str = "carehub.dicom.instance.received.v1";
/// A FHIR resource an EHR wrote (intake topic).
pub const FHIR_WRITTEN: &str = "carehub.fhir.resource.written.v1";
/// An organization to create or change (intake topic).
pub const ORGANIZATION_UPSERT: &str = "carehub.organization.upsert.v1";
/// A patient to create or change (intake topic).
pub const PATIENT_UPSERT: &str = "carehub.patient.upsert.v1";

// Announcements of the canonical record (events topics): ids and versions only.

pub const PATIENT_UPSERTED: &str = "carehub.patient.upserted.v1";
pub const PATIENT_MERGED: &str = "carehub.patient.merged.v1";
pub const ORGANIZATION_UPSERTED: &str = "carehub.organization.upserted.v1";
pub const ENCOUNTER_UPSERTED: &str = "carehub.encounter.upserted.v1";
pub const ORDER_UPSERTED: &str = "carehub.order.upserted.v1";
pub const OBSERVATION_UPSERTED: &str = "carehub.observation.upserted.v1";
pub const APPOINTMENT_UPSERTED: &str = "carehub.appointment.upserted.v1";
pub const INVOICE_UPSERTED: &str = "carehub.invoice.upserted.v1";

// Outbound, to the connectors that deliver.

/// An HL7 v2 message to deliver over MLLP (outbound topic).
pub const HL7_SEND: &str = "carehub.hl7v2.send.v1";
/// An order for the lab (topic `lab.orders.v1`).
pub const LAB_ORDER: &str = "carehub.lab.order.v1";
/// A status report from the lab (topic `lab.status.v1`).
pub const LAB_STATUS: &str = "carehub.lab.status.v1";
/// Results from the lab (topic `lab.results.v1`).
pub const LAB_RESULTS: &str = "carehub.lab.results.v1";
/// The default topic of [`EHR_ORDER_STATUS`] (`[pipelines.lab] ehr_events_topic`).
pub const DEFAULT_EHR_EVENTS_TOPIC: &str = "ehr.events.v1";
/// An order's status for EHRs (topic `ehr.events.v1`).
pub const EHR_ORDER_STATUS: &str = "carehub.ehr.order_status.v1";

/// Every contract's type name: each has its JSON Schema in `schemas/json`.
pub const ALL: &[&str] = &[
    HL7_RECEIVED,
    DICOM_RECEIVED,
    FHIR_WRITTEN,
    ORGANIZATION_UPSERT,
    PATIENT_UPSERT,
    PATIENT_UPSERTED,
    PATIENT_MERGED,
    ORGANIZATION_UPSERTED,
    ENCOUNTER_UPSERTED,
    ORDER_UPSERTED,
    OBSERVATION_UPSERTED,
    APPOINTMENT_UPSERTED,
    INVOICE_UPSERTED,
    HL7_SEND,
    LAB_ORDER,
    LAB_STATUS,
    LAB_RESULTS,
    EHR_ORDER_STATUS,
];
