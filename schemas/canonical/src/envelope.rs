//! The envelope every Kafka payload travels in.
//!
//! It is a CloudEvents 1.0 event in structured JSON mode (a published standard
//! rather than a format of our own): `specversion`, `id`, `type`, `source`,
//! `time`, `subject`, `data`. The payload's version is part of `type`
//! (`carehub.patient.upserted.v1`), and its JSON Schema is
//! `schemas/json/<type>.json`; the envelope's own is `schemas/json/envelope.v1.json`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub const SPEC_VERSION: &str = "1.0";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    pub specversion: String,
    /// Unique per event; consumers dedupe on it.
    pub id: String,
    /// `<namespace>.<noun>.<verb>.v<N>`, e.g. `carehub.patient.upserted.v1`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// Who produced the event, as a URI reference (`/carehub/intake`, `urn:lab:acme`).
    pub source: String,
    pub time: DateTime<Utc>,
    /// The entity the event is about (`patient/<uuid>`); never PHI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(default = "default_content_type")]
    pub datacontenttype: String,
    pub data: serde_json::Value,
}

fn default_content_type() -> String {
    "application/json".to_owned()
}

impl Envelope {
    /// A new event with a time-ordered id (UUID v7) and the current time.
    pub fn new(event_type: impl Into<String>, source: impl Into<String>, data: serde_json::Value) -> Self {
        Envelope {
            specversion: SPEC_VERSION.to_owned(),
            id: Uuid::now_v7().to_string(),
            event_type: event_type.into(),
            source: source.into(),
            time: Utc::now(),
            subject: None,
            datacontenttype: default_content_type(),
            data,
        }
    }

    pub fn with_subject(mut self, subject: impl Into<String>) -> Self {
        self.subject = Some(subject.into());
        self
    }

    /// Parses and checks the envelope itself (not its data).
    pub fn from_slice(bytes: &[u8]) -> Result<Self, EnvelopeError> {
        let env: Envelope = serde_json::from_slice(bytes).map_err(EnvelopeError::Json)?;
        if env.specversion != SPEC_VERSION {
            return Err(EnvelopeError::Version(env.specversion));
        }
        if env.id.is_empty() {
            return Err(EnvelopeError::Missing("id"));
        }
        if env.event_type.is_empty() {
            return Err(EnvelopeError::Missing("type"));
        }
        Ok(env)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    #[error("not a carehub envelope: {0}")]
    Json(serde_json::Error),
    #[error("unsupported envelope specversion {0:?} (expected \"1.0\")")]
    Version(String),
    #[error("envelope field {0:?} is empty")]
    Missing(&'static str),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_wrong_version() {
        let env = Envelope::new("carehub.test.v1", "/test", serde_json::json!({"a": 1})).with_subject("patient/1");
        let bytes = serde_json::to_vec(&env).expect("serialize");
        assert_eq!(Envelope::from_slice(&bytes).expect("parse"), env);

        let mut v: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
        v["specversion"] = "0.3".into();
        let err = Envelope::from_slice(v.to_string().as_bytes()).expect_err("old version");
        assert!(err.to_string().contains("0.3"), "{err}");

        let err = Envelope::from_slice(b"{\"id\":1}").expect_err("garbage");
        assert!(matches!(err, EnvelopeError::Json(_)));
    }
}
