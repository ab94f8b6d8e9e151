//! `[pipelines.intake]`.

use serde::{Deserialize, Serialize};

/// The intake pipeline: canonical commands (patient, organization) from Kafka.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntakeConfig {
    /// Run this pipeline's consumer in `carehub serve`.
    #[serde(default = "carehub_core::default_true")]
    pub enabled: bool,
    /// Topic the commands arrive on; its dead letters go to `<topic>.dlq`.
    #[serde(default = "default_intake_topic")]
    pub topic: String,
    /// Consumer group id.
    #[serde(default = "default_intake_group")]
    pub group: String,
    /// Topic the resulting events are published to (through the outbox).
    #[serde(default = "carehub_schema::contracts::default_events_topic")]
    pub events_topic: String,
}

fn default_intake_topic() -> String {
    "carehub.intake.v1".to_owned()
}
fn default_intake_group() -> String {
    "carehub-intake".to_owned()
}

impl Default for IntakeConfig {
    fn default() -> Self {
        IntakeConfig {
            enabled: true,
            topic: default_intake_topic(),
            group: default_intake_group(),
            events_topic: carehub_schema::contracts::default_events_topic(),
        }
    }
}
