//! `data` of the canonical record's announcements (`carehub.<entity>.upserted.v1`).

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::Envelope;
use crate::repo::Upserted;

/// A canonical row was created or changed: ids and versions only, readers
/// fetch the content through carehub (no PHI on the topic).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordChanged {
    pub id: Uuid,
    pub created: bool,
    pub version: i32,
    /// The inbound message that caused the change.
    pub source_message_id: Uuid,
}

impl RecordChanged {
    pub fn new(up: &Upserted, source_message_id: Uuid) -> Self {
        RecordChanged {
            id: up.id,
            created: up.created,
            version: up.version,
            source_message_id,
        }
    }

    /// The announcement of `entity` (`patient`, `service_order`, …) by
    /// `source`, with `extra` fields of the event type (an order's
    /// `status` and `from_status`) beside the ids.
    pub fn into_envelope(self, event_type: &str, source: &str, entity: &str, extra: serde_json::Value) -> Envelope {
        let subject = format!("{entity}/{}", self.id);
        let mut data = serde_json::json!(self);
        if let (Some(d), serde_json::Value::Object(extra)) = (data.as_object_mut(), extra) {
            d.extend(extra);
        }
        Envelope::new(event_type, source, data).with_subject(subject)
    }
}

/// `data` of `carehub.patient.merged.v1`: patient `merged_id` was merged into
/// the surviving patient `id` (HL7 ADT A40); it is inactive and points at it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatientMerged {
    /// The surviving patient.
    pub id: Uuid,
    pub merged_id: Uuid,
    pub source_message_id: Uuid,
}

/// `data` of `carehub.patient.upsert.v1`: a patient to create or change, in
/// the canonical record's own shape (identifiers, names, demographics).
pub type PatientUpsert = crate::repo::PatientData;

/// `data` of `carehub.organization.upsert.v1`.
pub type OrganizationUpsert = crate::repo::OrganizationData;
