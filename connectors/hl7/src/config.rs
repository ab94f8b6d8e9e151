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
    /// The scope in which received messages are applied in order (the key
    /// of their onward record, hence their partition): `"sender"` (MSH-4 and
    /// MSH-3: one sending application's messages in the order received,
    /// whatever patient they concern) or `"patient"` (sender and a name-based
    /// UUID of the first PID-3 identifier, never the MRN itself: one patient's messages
    /// in order, different patients' applied concurrently on the topic's
    /// partitions). `"patient"` lets one busy sender's feed use every
    /// partition; a message that names no patient keeps the sender's order.
    /// Its one difference: a message for a patient sent after an A40 that
    /// merged that patient away may be applied before the merge.
    #[serde(default)]
    pub order_by: OrderBy,
    #[serde(default)]
    pub listener: ListenerConfig,
    /// Where outbound messages go: `[hl7.destinations.<name>]` with the
    /// receiver's `endpoint` and the sender's timeouts and retries. A
    /// `carehub.hl7v2.send.v1` event names its destination.
    #[serde(default)]
    pub destinations: std::collections::BTreeMap<String, SenderConfig>,
}

/// See [`Hl7Config::order_by`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OrderBy {
    #[default]
    Sender,
    Patient,
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
            order_by: OrderBy::default(),
            listener: ListenerConfig::default(),
            destinations: Default::default(),
        }
    }
}
