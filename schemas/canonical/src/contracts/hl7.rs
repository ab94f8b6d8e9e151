//! `data` of the HL7 v2 contracts.

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::Envelope;

/// `data` of a `carehub.hl7v2.received.v1` event: a message the MLLP
/// listener stored. The record refers to the stored bytes instead of
/// carrying them, so whatever the listener accepts fits on the topic, and
/// nothing reaches the topic that the store refused (it is written through
/// the outbox in the same transaction as the message).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Received {
    /// The message-store id of the message, its bytes as they arrived.
    pub message_id: uuid::Uuid,
    /// The sender's address (`ip:port`).
    pub peer: String,
    /// The listener that took it (`ip:port`).
    pub listener: String,
}

impl Received {
    pub fn new(message_id: uuid::Uuid, peer: impl ToString, listener: impl ToString) -> Self {
        Received {
            message_id,
            peer: peer.to_string(),
            listener: listener.to_string(),
        }
    }

    /// The envelope the listener writes to the outbox.
    pub fn into_envelope(self, source_key: Option<&str>) -> Envelope {
        let env = Envelope::new(
            super::HL7_RECEIVED,
            "/carehub/connectors/hl7_mllp",
            serde_json::json!(self),
        );
        match source_key {
            Some(k) => env.with_subject(format!("message/{k}")),
            None => env,
        }
    }
}

/// `data` of a `carehub.hl7v2.send.v1` event: a message for a configured
/// MLLP destination. Pipelines write it through the outbox; the HL7 outbound
/// delivery sends it and stores its offset only once the receiver accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Outbound {
    /// The name of a `[hl7.destinations.<name>]` entry.
    pub destination: String,
    /// The message, segments separated by CR, in the character set its MSH-18 names.
    pub raw_base64: String,
}

impl Outbound {
    pub fn new(destination: impl Into<String>, raw: &[u8]) -> Self {
        Outbound {
            destination: destination.into(),
            raw_base64: base64::engine::general_purpose::STANDARD.encode(raw),
        }
    }

    pub fn raw(&self) -> Result<Vec<u8>, base64::DecodeError> {
        base64::engine::general_purpose::STANDARD.decode(&self.raw_base64)
    }

    /// The envelope a pipeline (`source`, e.g. `/carehub/pipelines/hl7`) writes to the outbox.
    pub fn into_envelope(self, source: &str) -> Envelope {
        let subject = format!("destination/{}", self.destination);
        Envelope::new(super::HL7_SEND, source, serde_json::json!(self)).with_subject(subject)
    }
}
