//! `[hl7]`: the MLLP listener and the destinations of outbound messages.

use serde::{Deserialize, Serialize};

use crate::{ListenerConfig, SenderConfig};

/// The HL7 v2 MLLP listener.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hl7Config {
    /// Run the MLLP listener in `carehub serve`.
    #[serde(default = "carehub_core::default_true")]
    pub enabled: bool,
    /// Milliseconds the broker has to confirm a received message before the
    /// sender is answered AR (error 207, "send it again later").
    #[serde(default = "default_store_timeout_ms")]
    pub store_timeout_ms: u64,
    /// Store transactions running at a time; each takes every message waiting
    /// (group commit), so this bounds the listener's parallel commits.
    #[serde(default = "default_store_workers")]
    pub store_workers: usize,
    #[serde(default)]
    pub listener: ListenerConfig,
    /// Where outbound messages go: `[hl7.destinations.<name>]` with the
    /// receiver's `endpoint` and the sender's timeouts and retries. A
    /// `carehub.hl7v2.send.v1` event names its destination.
    #[serde(default)]
    pub destinations: std::collections::BTreeMap<String, SenderConfig>,
}

const fn default_store_timeout_ms() -> u64 {
    10_000
}
const fn default_store_workers() -> usize {
    4
}

impl Default for Hl7Config {
    fn default() -> Self {
        Hl7Config {
            enabled: true,
            store_timeout_ms: default_store_timeout_ms(),
            store_workers: default_store_workers(),
            listener: ListenerConfig::default(),
            destinations: Default::default(),
        }
    }
}
