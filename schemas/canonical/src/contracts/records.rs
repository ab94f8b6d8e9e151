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
