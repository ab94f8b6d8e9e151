//! `[pipelines.hl7]`.

use serde::{Deserialize, Serialize};

/// The HL7 pipeline: messages the MLLP listener received, into the canonical record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hl7PipelineConfig {
    /// Run this pipeline's consumer in `carehub serve`.
    #[serde(default = "carehub_core::default_true")]
    pub enabled: bool,
    /// Topic the MLLP listener writes received messages to; dead letters go to `<topic>.dlq`.
    #[serde(default = "default_hl7_topic")]
    pub topic: String,
    /// Consumer group id.
    #[serde(default = "default_hl7_group")]
    pub group: String,
    /// Topic the resulting events are published to (through the outbox).
    #[serde(default = "carehub_schema::contracts::default_events_topic")]
    pub events_topic: String,
    /// Topic of messages to deliver over MLLP (`carehub.hl7v2.send.v1`);
    /// its dead letters go to `<outbound_topic>.dlq`.
    #[serde(default = "default_hl7_outbound_topic")]
    pub outbound_topic: String,
    /// Consumer group of the outbound delivery.
    #[serde(default = "default_hl7_outbound_group")]
    pub outbound_group: String,
    /// Application ACKs (enhanced mode, MSH-15/16): sending facility (MSH-4.1,
    /// any case) → the `[hl7.destinations]` entry its ACKs are delivered to.
    /// A sender without an entry gets commit ACKs only.
    #[serde(default)]
    pub ack_destinations: std::collections::BTreeMap<String, String>,
    /// Also convert each message to FHIR R4 and load the resources the
    /// canonical record does not hold (visits, allergies, coverage,
    /// specimens…) into the FHIR store, in the same transaction.
    #[serde(default)]
    pub load_fhir: bool,
}

fn default_hl7_outbound_topic() -> String {
    "carehub.hl7v2.outbound.v1".to_owned()
}
fn default_hl7_outbound_group() -> String {
    "carehub-hl7-out".to_owned()
}

fn default_hl7_topic() -> String {
    "carehub.hl7v2.inbound.v1".to_owned()
}
fn default_hl7_group() -> String {
    "carehub-hl7".to_owned()
}

impl Default for Hl7PipelineConfig {
    fn default() -> Self {
        Hl7PipelineConfig {
            enabled: true,
            topic: default_hl7_topic(),
            group: default_hl7_group(),
            events_topic: carehub_schema::contracts::default_events_topic(),
            outbound_topic: default_hl7_outbound_topic(),
            outbound_group: default_hl7_outbound_group(),
            ack_destinations: Default::default(),
            load_fhir: false,
        }
    }
}
