//! `[fhir]`: the FHIR endpoint, its tokens, rate limits, HTTP limits, and
//! the EHRs that get order status pushed.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::auth::AuthConfig;

/// `[fhir]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FhirConfig {
    /// Run the FHIR endpoint in `carehub serve`.
    #[serde(default = "carehub_core::default_true")]
    pub enabled: bool,
    /// Address it listens on.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    #[serde(default)]
    pub auth: AuthConfig,
    /// Requests per second one client (token `client_id`, else `sub`) may
    /// make, sustained; 0 turns the limit off. Past it: 429.
    #[serde(default = "default_rate")]
    pub rate_limit_per_second: u32,
    /// Requests a client may make at once above the sustained rate.
    #[serde(default = "default_burst")]
    pub rate_limit_burst: u32,
    /// EHRs that get the order status of their clinic's orders pushed:
    /// `[fhir.push.<name>]`.
    #[serde(default)]
    pub push: std::collections::BTreeMap<String, EhrSubscriber>,
    /// Consumer group of the push (reads the lab's `ehr_events_topic`).
    #[serde(default = "default_push_group")]
    pub push_group: String,
    /// The HTTP listener's limits: connections, deadlines, sizes.
    #[serde(default)]
    pub http: carehub_connector_kit::http::HttpLimits,
}

/// One EHR that follows a clinic's orders.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EhrSubscriber {
    /// The EHR's FHIR base URL; Task and ServiceRequest are PUT under it.
    pub base_url: String,
    /// The clinic whose orders it follows (identifier value, any case).
    pub clinic: String,
    /// Bearer token the EHR expects, if any. Secret: never logged.
    #[serde(default)]
    pub bearer_token: Option<carehub_core::SensitiveString>,
    /// Milliseconds one request may take.
    #[serde(default = "default_push_timeout_ms")]
    pub timeout_ms: u64,
    /// Attempts (timeouts, 5xx, 408, 429) before the event is dead-lettered.
    #[serde(default = "default_push_attempts")]
    pub max_attempts: usize,
    /// Exponential backoff between attempts.
    #[serde(default = "default_push_min_backoff_ms")]
    pub min_backoff_ms: u64,
    #[serde(default = "default_push_max_backoff_ms")]
    pub max_backoff_ms: u64,
}

fn default_push_group() -> String {
    "carehub-ehr-push".to_owned()
}
const fn default_push_timeout_ms() -> u64 {
    10_000
}
const fn default_push_attempts() -> usize {
    5
}
const fn default_push_min_backoff_ms() -> u64 {
    200
}
const fn default_push_max_backoff_ms() -> u64 {
    30_000
}

const fn default_rate() -> u32 {
    1000
}
const fn default_burst() -> u32 {
    2000
}
fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8081))
}

impl Default for FhirConfig {
    fn default() -> Self {
        FhirConfig {
            enabled: true,
            listen: default_listen(),
            auth: AuthConfig::default(),
            rate_limit_per_second: default_rate(),
            rate_limit_burst: default_burst(),
            push: Default::default(),
            push_group: default_push_group(),
            http: Default::default(),
        }
    }
}
