use std::sync::Arc;
use std::time::Duration;

use carehub_core::internal_events::{ComponentError, ConsumerLag, Stage};
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Header, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use tokio::sync::watch;

use crate::leases::GroupConsumer;
use crate::relay::wait;
use crate::{Error, KafkaConfig, Result};

/// The dead-letter topic of `topic`.
pub fn dlq_topic(topic: &str) -> String {
    format!("{topic}.dlq")
}

/// A consumer of `topic` in `group` that stores offsets only when told to
/// (`store_offsets` after the work is done) and commits stored offsets every
/// second. With `leases` (a PostgreSQL pool, and `[kafka] assignment =
/// "leases"`, the default) its partitions are leased in PostgreSQL
/// ([`PartitionLeases`](crate::PartitionLeases)); otherwise it subscribes and
/// the broker's coordinator assigns them, with static membership when
/// `instance_id` is set.
pub fn group_consumer(cfg: &KafkaConfig, group: &str, topic: &str, leases: Option<PgPool>) -> Result<GroupConsumer> {
    let mut client = cfg.client_config();
    client
        .set("group.id", group)
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        // Offsets are stored by `acknowledge`, only after the pipeline committed.
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "10000")
        // The group waits this long for a member that died without leaving
        // (kill -9) before it rebalances: 30 s instead of librdkafka's 5 min.
        .set("max.poll.interval.ms", "30000");
    let leased = leases.filter(|_| cfg.assignment == crate::Assignment::Leases);
    if leased.is_none() && !cfg.instance_id.is_empty() {
        // Static membership (KIP-345): a restarted instance takes its old
        // place in the group at once. Tansu never expires a member that died
        // without leaving, so without this a kill -9 stalls its partitions.
        client.set("group.instance.id", &cfg.instance_id);
    }
    // Settings from [kafka.properties] win over these defaults.
    for (k, v) in &cfg.properties {
        client.set(k, v);
    }
    let consumer: StreamConsumer = client.create()?;
    let leases = match leased {
        Some(pool) => Some(crate::PartitionLeases::new(pool, group, topic)),
        None => {
            consumer.subscribe(&[topic])?;
            None
        }
    };
    Ok(GroupConsumer::new(consumer, leases))
}

/// Forwards the original bytes of a record to `<topic>.dlq`, with the dead
/// letter's id, error code, reason and original topic in headers.
pub async fn forward_dead_letter(
    producer: &FutureProducer,
    topic: &str,
    key: Option<&[u8]>,
    payload: &[u8],
    id: i64,
    code: &str,
    reason: &str,
) -> Result<()> {
    let dlq = dlq_topic(topic);
    let id = id.to_string();
    let headers = OwnedHeaders::new()
        .insert(Header {
            key: "carehub-dead-letter-id",
            value: Some(id.as_bytes()),
        })
        .insert(Header {
            key: "carehub-error-code",
            value: Some(code.as_bytes()),
        })
        .insert(Header {
            key: "carehub-reason",
            value: Some(reason.as_bytes()),
        })
        .insert(Header {
            key: "carehub-original-topic",
            value: Some(topic.as_bytes()),
        });
    let mut record = FutureRecord::to(&dlq).payload(payload).headers(headers);
    if let Some(key) = key {
        record = record.key(key);
    }
    producer
        .send(record, Duration::from_secs(30))
        .await
        .map(|_| ())
        .map_err(|(e, _)| Error::Kafka(e))
}

/// `[pipelines.retry]`: how a pipeline retries a batch that fails.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Attempts for a record the store refuses (not because it is down)
    /// before it is dead-lettered (`store_error`). A failing batch is split
    /// into single records first, so only the failing one is dead-lettered.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Longest wait between two attempts, in milliseconds (backoff starts at
    /// 100 ms and doubles). One record that keeps failing delays the others
    /// by at most `max_attempts × max_backoff_ms` (+ the attempts' own time).
    #[serde(default = "default_max_backoff_ms")]
    pub max_backoff_ms: u64,
    /// Seconds a pipeline may retry without progress (PostgreSQL down, say)
    /// before `/readyz` answers 503; `carehub_pipeline_stalled_seconds` shows
    /// the same for alerts.
    #[serde(default = "default_stall_after_secs")]
    pub stall_after_secs: u64,
}

const fn default_max_attempts() -> u32 {
    5
}
const fn default_max_backoff_ms() -> u64 {
    2_000
}
const fn default_stall_after_secs() -> u64 {
    60
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_attempts: default_max_attempts(),
            max_backoff_ms: default_max_backoff_ms(),
            stall_after_secs: default_stall_after_secs(),
        }
    }
}

impl RetryConfig {
    /// The waits between attempts: 100 ms doubling up to `max_backoff_ms`, with jitter.
    pub fn delays(&self) -> backon::ExponentialBackoff {
        use backon::BackoffBuilder;
        backon::ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(Duration::from_millis(self.max_backoff_ms.max(100)))
            .with_jitter()
            .without_max_times()
            .build()
    }
}

/// Silence after which a runner checks that its group is moving ([`rejoin_if_stuck`]).
pub const REJOIN_AFTER: Duration = Duration::from_secs(30);

/// A record taken from the consumer, detached from librdkafka's buffers.
#[derive(Debug, Clone)]
pub struct KafkaRecord(OwnedMessage);

impl From<OwnedMessage> for KafkaRecord {
    fn from(msg: OwnedMessage) -> Self {
        KafkaRecord(msg)
    }
}

impl KafkaRecord {
    pub fn topic(&self) -> &str {
        self.0.topic()
    }
    pub fn partition(&self) -> i32 {
        self.0.partition()
    }
    pub fn offset(&self) -> i64 {
        self.0.offset()
    }
    pub fn payload(&self) -> &[u8] {
        self.0.payload().unwrap_or_default()
    }
    pub fn key(&self) -> Option<&[u8]> {
        self.0.key()
    }
}

/// Stores the position after `rec` for the next commit: the one way a
/// runner marks a record done (librdkafka commits stored offsets every
/// second, on rebalance and on close).
pub fn store_next_offset(consumer: &GroupConsumer, rec: &KafkaRecord) -> Result<()> {
    // rd_kafka_offsets_store takes the next offset to consume, stated
    // explicitly here. (The older rd_kafka_offset_store behind
    // `store_offset` adds one itself: passing `offset + 1` to it skips a
    // record per partition at every restart.)
    let mut next = TopicPartitionList::new();
    next.add_partition_offset(rec.topic(), rec.partition(), Offset::Offset(rec.offset() + 1))?;
    consumer.store_offsets(&next)?;
    Ok(())
}

/// Watchdog, run after [`REJOIN_AFTER`] of silence: when the group has
/// records waiting and its committed offsets did not move since the last
/// look (nobody in the group is consuming), the member leaves and joins
/// again. Seen with Tansu after a member was killed while joining: the
/// restarted member stayed without an assignment, or (in the 10,000-message
/// SIGKILL test) with one that delivered nothing more. A member that is
/// merely spare or idle sees the others' offsets move and stays put.
/// Returns the committed total for the next look.
pub async fn rejoin_if_stuck(consumer: &GroupConsumer, group: &str, topic: &str, previous: Option<i64>) -> Option<i64> {
    if !consumer.broker_assigned() {
        // Leased partitions do not depend on the coordinator.
        return None;
    }
    let assigned = consumer.assignment().map(|a| a.count()).unwrap_or(0);
    let (inner, topic_name) = (consumer.inner().clone(), topic.to_owned());
    let progress = tokio::task::spawn_blocking(move || -> Option<(i64, i64)> {
        let timeout = Duration::from_secs(5);
        let md = inner.fetch_metadata(Some(&topic_name), timeout).ok()?;
        let mut tpl = TopicPartitionList::new();
        for p in md.topics().first()?.partitions() {
            tpl.add_partition(&topic_name, p.id());
        }
        let committed = inner.committed_offsets(tpl, timeout).ok()?;
        let (mut total, mut lag) = (0, 0);
        for el in committed.elements() {
            let (low, high) = inner.fetch_watermarks(&topic_name, el.partition(), timeout).ok()?;
            let at = match el.offset() {
                Offset::Offset(o) => o,
                _ => low,
            };
            total += at;
            lag += (high - at).max(0);
        }
        Some((total, lag))
    })
    .await
    .ok()
    .flatten();
    let (total, lag) = progress?;
    if lag > 0 && previous == Some(total) {
        tracing::warn!(group = %group, topic = %topic, lag, assigned, "records waiting and the group is not moving; joining again");
        consumer.unsubscribe();
        if let Err(e) = consumer.subscribe(&[topic]) {
            ComponentError {
                component: "kafka_consumer",
                stage: Stage::Receiving,
                error_code: "rejoin_failed",
                error: &e,
            }
            .emit();
        }
        return None;
    }
    Some(total)
}

/// Reports records between the group's position and each partition's end.
pub async fn report_lag(consumer: Arc<StreamConsumer>, group: String, mut shutdown: watch::Receiver<bool>) {
    loop {
        if wait(&mut shutdown, Duration::from_secs(5)).await {
            return;
        }
        let c = consumer.clone();
        let lags = tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            let Ok(position) = c.position() else { return out };
            for el in position.elements() {
                let Ok((_, high)) = c.fetch_watermarks(el.topic(), el.partition(), Duration::from_secs(2)) else {
                    continue;
                };
                let pos = match el.offset() {
                    Offset::Offset(o) => o,
                    _ => continue,
                };
                out.push((el.topic().to_owned(), el.partition(), (high - pos).max(0)));
            }
            out
        })
        .await
        .unwrap_or_default();
        for (topic, partition, lag) in lags {
            ConsumerLag {
                group: &group,
                topic: &topic,
                partition,
                lag,
            }
            .emit();
        }
    }
}
