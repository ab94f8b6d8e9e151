use std::collections::BTreeMap;

use rdkafka::ClientConfig;
use serde::{Deserialize, Serialize};

/// How carehub reaches the Kafka-protocol broker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap servers, comma separated (`host:port,host:port`).
    #[serde(default = "default_brokers")]
    pub brokers: String,
    /// Client id sent to the broker (appears in broker logs and quotas).
    #[serde(default = "default_client_id")]
    pub client_id: String,
    /// Partitions of the topics carehub creates at start-up.
    #[serde(default = "default_partitions")]
    pub topic_partitions: i32,
    /// Replication factor of the topics carehub creates.
    #[serde(default = "default_replication")]
    pub replication_factor: i32,
    /// Milliseconds a produced record may wait for acknowledgement before it fails.
    #[serde(default = "default_message_timeout_ms")]
    pub message_timeout_ms: u32,
    /// This instance's stable id in consumer groups (Kafka static membership,
    /// `group.instance.id`). Must differ between instances that run at the same
    /// time (a pod name, a host name); empty turns static membership off.
    /// Default: the host name.
    #[serde(default = "default_instance_id")]
    pub instance_id: String,
    /// Who decides which instance consumes which partition: `leases`
    /// (PostgreSQL advisory locks; the default: a killed instance's
    /// partitions are free at once, whatever the broker's coordinator does)
    /// or `broker` (Kafka consumer-group rebalancing, static membership).
    #[serde(default)]
    pub assignment: Assignment,
    /// Extra librdkafka properties (TLS, SASL, tuning) passed as they are.
    #[serde(default)]
    /// Printed with secret ones (`sasl.password`, …) redacted.
    #[serde(serialize_with = "redact_secret_properties")]
    pub properties: BTreeMap<String, String>,
}

/// `[kafka] assignment`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Assignment {
    #[default]
    Leases,
    Broker,
}

fn default_brokers() -> String {
    "127.0.0.1:9092".to_owned()
}
fn default_client_id() -> String {
    "carehub".to_owned()
}
fn default_instance_id() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .map_or_else(|| "carehub".to_owned(), |h| format!("carehub-{h}"))
}
const fn default_partitions() -> i32 {
    3
}
const fn default_replication() -> i32 {
    1
}
const fn default_message_timeout_ms() -> u32 {
    30_000
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: default_brokers(),
            client_id: default_client_id(),
            topic_partitions: default_partitions(),
            replication_factor: default_replication(),
            message_timeout_ms: default_message_timeout_ms(),
            instance_id: default_instance_id(),
            assignment: Assignment::default(),
            properties: BTreeMap::new(),
        }
    }
}

impl KafkaConfig {
    /// The base librdkafka configuration every carehub client starts from.
    pub fn client_config(&self) -> ClientConfig {
        let mut cfg = ClientConfig::new();
        cfg.set("bootstrap.servers", &self.brokers)
            .set("client.id", &self.client_id);
        for (k, v) in &self.properties {
            cfg.set(k, v);
        }
        cfg
    }
}

/// The properties as printed: a secret one's value is `**REDACTED**`.
fn redact_secret_properties<S: serde::Serializer>(
    properties: &BTreeMap<String, String>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut map = serializer.serialize_map(Some(properties.len()))?;
    for (k, v) in properties {
        let v = if carehub_core::is_secret_setting(k) {
            carehub_core::REDACTED
        } else {
            v
        };
        map.serialize_entry(k, v)?;
    }
    map.end()
}
