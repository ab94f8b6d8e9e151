//! Canonical types: one struct per table of `migrations/*_canonical.sql`.
//!
//! Where a protocol field becomes a column is written in the pipelines
//! (`pipelines/*/src/map*.rs`); these types are the destination they share.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// An identifier with its assigning authority (HL7 CX.1 + CX.4, FHIR Identifier).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Identifier {
    /// Assigning authority as a URI (`urn:oid:…`, `https://clinic.example/mrn`).
    pub system: String,
    pub value: String,
    /// Identifier type code (HL7 table 0203: MR, PI, NPI, …).
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "type")]
    pub type_code: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sex {
    Male,
    Female,
    Other,
    Unknown,
}

impl Sex {
    pub fn as_str(self) -> &'static str {
        match self {
            Sex::Male => "male",
            Sex::Female => "female",
            Sex::Other => "other",
            Sex::Unknown => "unknown",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OrganizationKind {
    Clinic,
    Lab,
    Payer,
    Carrier,
    Other,
}

impl OrganizationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OrganizationKind::Clinic => "clinic",
            OrganizationKind::Lab => "lab",
            OrganizationKind::Payer => "payer",
            OrganizationKind::Carrier => "carrier",
            OrganizationKind::Other => "other",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct Organization {
    pub id: Uuid,
    pub kind: String,
    pub name: String,
    pub identifier_system: String,
    pub identifier_value: String,
    pub phone: Option<String>,
    pub email: Option<String>,
    pub address: Option<serde_json::Value>,
    pub active: bool,
    pub version: i32,
    pub source_message_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct Patient {
    pub id: Uuid,
    pub family_name: Option<String>,
    pub given_names: Vec<String>,
    pub birth_date: Option<NaiveDate>,
    pub sex: Option<String>,
    pub phone: Option<String>,
    pub email: Option<String>,
    pub address: Option<serde_json::Value>,
    pub managing_organization_id: Option<Uuid>,
    /// Set when this record was merged into a surviving one.
    pub merged_into_id: Option<Uuid>,
    pub active: bool,
    pub version: i32,
    pub source_message_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct PatientIdentifier {
    pub patient_id: Uuid,
    pub system: String,
    pub value: String,
    pub type_code: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct Practitioner {
    pub id: Uuid,
    pub family_name: Option<String>,
    pub given_names: Vec<String>,
    pub identifier_system: String,
    pub identifier_value: String,
    pub organization_id: Option<Uuid>,
    pub phone: Option<String>,
    pub email: Option<String>,
    pub version: i32,
    pub source_message_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A clinic's order for a device or service (HL7 ORC/OBR, FHIR ServiceRequest).
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct Order {
    pub id: Uuid,
    pub placer_system: String,
    pub placer_number: String,
    pub filler_system: Option<String>,
    pub filler_number: Option<String>,
    pub patient_id: Uuid,
    pub orderer_id: Option<Uuid>,
    pub clinic_id: Option<Uuid>,
    pub lab_id: Option<Uuid>,
    pub status: String,
    pub priority: String,
    pub due_date: Option<NaiveDate>,
    /// Device specification (type, side, measurements, materials) as the lab needs it.
    pub device_spec: Option<serde_json::Value>,
    pub note: Option<String>,
    pub version: i32,
    pub source_message_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct OrderItem {
    pub order_id: Uuid,
    pub line_no: i32,
    pub code_system: String,
    pub code: String,
    pub display: Option<String>,
    /// PostgreSQL numeric, read as text to stay exact: select `quantity::text`.
    pub quantity: String,
    pub body_site: Option<String>,
    pub laterality: Option<String>,
    pub device_spec: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct OrderStatusChange {
    pub id: i64,
    pub order_id: Uuid,
    pub from_status: Option<String>,
    pub to_status: String,
    pub reason: Option<String>,
    pub at: DateTime<Utc>,
    pub source_message_id: Option<Uuid>,
}

/// A result (HL7 OBX, FHIR Observation). Numeric values are read as text to stay exact.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct Observation {
    pub id: Uuid,
    pub patient_id: Uuid,
    pub order_id: Option<Uuid>,
    pub status: String,
    pub code_system: String,
    pub code: String,
    pub display: Option<String>,
    pub value_type: String,
    /// PostgreSQL numeric, read as text to stay exact: select `value_quantity::text`.
    pub value_quantity: Option<String>,
    pub value_unit: Option<String>,
    pub value_string: Option<String>,
    pub value_code: Option<String>,
    pub interpretation: Option<String>,
    pub reference_range: Option<String>,
    pub effective_at: Option<DateTime<Utc>>,
    pub issued_at: Option<DateTime<Utc>>,
    pub source_message_id: Option<Uuid>,
}

#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct ImagingStudy {
    pub id: Uuid,
    pub study_instance_uid: String,
    pub patient_id: Uuid,
    pub order_id: Option<Uuid>,
    pub accession_number: Option<String>,
    pub modalities: Vec<String>,
    pub description: Option<String>,
    pub started_at: Option<DateTime<Utc>>,
    pub series_count: i32,
    pub instance_count: i32,
    pub source_message_id: Option<Uuid>,
}

/// Money in minor units (cents) with an ISO 4217 currency code.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct Invoice {
    pub id: Uuid,
    pub number: String,
    pub order_id: Option<Uuid>,
    pub patient_id: Option<Uuid>,
    pub organization_id: Option<Uuid>,
    pub status: String,
    pub currency: String,
    pub total_minor: i64,
    pub issued_at: Option<DateTime<Utc>>,
    pub source_message_id: Option<Uuid>,
}

#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct InvoiceLine {
    pub invoice_id: Uuid,
    pub line_no: i32,
    pub code: Option<String>,
    pub description: String,
    pub unit_price_minor: i64,
    pub amount_minor: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct Payment {
    pub id: Uuid,
    pub invoice_id: Option<Uuid>,
    /// `stripe`, …; `provider_ref` is the provider's id (a PaymentIntent id).
    pub provider: String,
    pub provider_ref: String,
    pub amount_minor: i64,
    pub currency: String,
    pub status: String,
    pub paid_at: Option<DateTime<Utc>>,
    pub source_message_id: Option<Uuid>,
}

#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct Shipment {
    pub id: Uuid,
    pub order_id: Uuid,
    pub carrier: String,
    pub service_level: Option<String>,
    pub tracking_number: Option<String>,
    pub status: String,
    pub shipped_at: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub source_message_id: Option<Uuid>,
}

/// A document or scan attached to a patient or order (inline bytes or a URL).
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct Document {
    pub id: Uuid,
    pub patient_id: Option<Uuid>,
    pub order_id: Option<Uuid>,
    pub kind: String,
    pub content_type: String,
    #[serde(skip)]
    pub content: Option<Vec<u8>>,
    pub url: Option<String>,
    pub sha256: Option<Vec<u8>>,
    pub source_message_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
}
