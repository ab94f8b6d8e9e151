//! carehub's Kafka plumbing, on rdkafka (librdkafka).
//!
//! - [`KafkaConfig`]: brokers and client settings.
//! - [`ensure_topics`]: creates topics at start-up (the broker here does not auto-create).
//! - [`idempotent_producer`]: `enable.idempotence=true`, `acks=all`.
//! - [`OutboxRelay`]: publishes the transactional outbox in order, then marks it sent.
//! - [`group_consumer`], [`store_next_offset`], [`forward_dead_letter`]: what every
//!   runner of a consumer group shares (the pipeline engine's `ConsumerRunner`, the
//!   connector kit's delivery runner): offsets stored only when told, dead letters
//!   forwarded to `<topic>.dlq`.

mod admin;
mod config;
mod consumer;
mod leases;
mod producer;
mod relay;

pub use admin::{TopicSpec, broker_reachable, ensure_topics, find_event};
pub use config::{Assignment, KafkaConfig};
pub use consumer::{
    KafkaRecord, REJOIN_AFTER, RetryConfig, dlq_topic, forward_dead_letter, group_consumer, rejoin_if_stuck,
    report_lag, store_next_offset,
};
pub use leases::{GroupConsumer, PartitionLeases};
pub use producer::{idempotent_producer, idempotent_producer_with_linger};
pub use relay::{OutboxRelay, RelayConfig, backoff, next_delay, wait};

/// Errors of the Kafka plumbing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("creating topic {topic}: {reason}")]
    CreateTopic { topic: String, reason: String },
    #[error(transparent)]
    Store(#[from] carehub_schema::Error),
    #[error("broker not reachable within 3 s: {0}")]
    Unreachable(String),
    #[error("kafka consumer stream ended")]
    StreamEnded,
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        Error::Store(e.into())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
