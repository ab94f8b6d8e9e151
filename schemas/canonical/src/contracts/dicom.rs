//! `data` of the DICOM contracts.

use serde::{Deserialize, Serialize};

use crate::Envelope;

/// `data` of a `carehub.dicom.instance.received.v1` event: an instance the
/// DIMSE server stored (its bytes fsynced under their content hash, its
/// metadata in the message store) before it answered C-STORE success. The
/// record refers to the stored message; it never carries the instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceReceived {
    /// The message-store id: its bytes are the instance's metadata (JSON).
    pub message_id: uuid::Uuid,
    /// SHA-256 of the instance's bytes (hex): where the storage keeps them.
    pub sha256: String,
    /// The sender's address (`ip:port`).
    pub peer: String,
    /// The sender's calling AE title.
    pub calling_ae: String,
}

impl InstanceReceived {
    /// The envelope the DIMSE server writes to the outbox.
    pub fn into_envelope(self, source_key: &str) -> Envelope {
        Envelope::new(
            super::DICOM_RECEIVED,
            "/carehub/connectors/dicom",
            serde_json::json!(self),
        )
        .with_subject(format!("message/{source_key}"))
    }
}
