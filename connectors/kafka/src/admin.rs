use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

use crate::{Error, KafkaConfig, Result};

/// A topic carehub needs.
#[derive(Debug, Clone)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: Option<i32>,
}

impl TopicSpec {
    pub fn new(name: impl Into<String>) -> Self {
        TopicSpec {
            name: name.into(),
            partitions: None,
        }
    }
}

/// Creates the topics that do not exist yet. Existing topics are left as they are.
pub async fn ensure_topics(cfg: &KafkaConfig, topics: &[TopicSpec]) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = cfg.client_config().create()?;
    // A broker that does not answer is said so within seconds, not after
    // the admin request's own minute-long timeout (hardening item 14).
    let admin = std::sync::Arc::new(admin);
    let probe = admin.clone();
    let reachable = tokio::task::spawn_blocking(move || {
        probe
            .inner()
            .fetch_metadata(None, Duration::from_secs(3))
            .map(|m| !m.brokers().is_empty())
    })
    .await
    .unwrap_or(Ok(false));
    match reachable {
        Ok(true) => {}
        Ok(false) => return Err(Error::Unreachable("no broker in the cluster's metadata".into())),
        Err(e) => return Err(Error::Unreachable(e.to_string())),
    }
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|t| {
            NewTopic::new(
                &t.name,
                t.partitions.unwrap_or(cfg.topic_partitions),
                TopicReplication::Fixed(cfg.replication_factor),
            )
        })
        .collect();
    let opts = AdminOptions::new()
        .operation_timeout(Some(Duration::from_secs(10)))
        .request_timeout(Some(Duration::from_secs(15)));
    for result in admin.create_topics(&new, &opts).await? {
        match result {
            Ok(topic) => tracing::info!(topic, "topic created"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(Error::CreateTopic {
                    topic,
                    reason: code.to_string(),
                });
            }
        }
    }
    Ok(())
}

/// True when the broker answers a metadata request within `timeout`. Uses the
/// producer's own connection, so a readiness probe opens nothing new.
pub async fn broker_reachable(producer: &FutureProducer, timeout: Duration) -> bool {
    let producer = producer.clone();
    tokio::task::spawn_blocking(move || {
        producer
            .client()
            .fetch_metadata(None, timeout)
            .is_ok_and(|m| !m.brokers().is_empty())
    })
    .await
    .unwrap_or(false)
}

/// Scans `topic` from the beginning for the record whose envelope id is
/// `event_id` (`carehub trace`): its partition, offset and payload.
pub fn find_event(
    cfg: &KafkaConfig,
    topic: &str,
    event_id: &str,
    deadline: Instant,
) -> Option<(i32, i64, serde_json::Value)> {
    let consumer: BaseConsumer = cfg
        .client_config()
        .set("group.id", "carehub-trace")
        .set("enable.auto.commit", "false")
        .create()
        .ok()?;
    let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(5)).ok()?;
    let mut tpl = TopicPartitionList::new();
    for p in md.topics().first()?.partitions() {
        tpl.add_partition_offset(topic, p.id(), Offset::Beginning).ok()?;
    }
    consumer.assign(&tpl).ok()?;
    while Instant::now() < deadline + Duration::from_secs(5) {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(500)) {
            let Some(bytes) = m.payload() else { continue };
            let Ok(v) = serde_json::from_slice::<serde_json::Value>(bytes) else {
                continue;
            };
            if v.get("id").and_then(|i| i.as_str()) == Some(event_id) {
                return Some((m.partition(), m.offset(), v));
            }
        }
    }
    None
}
