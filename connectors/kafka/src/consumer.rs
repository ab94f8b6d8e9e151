use std::sync::Arc;
use std::time::Duration;

use carehub_core::Health;
use carehub_core::internal_events::{ComponentError, ConsumerLag, PipelineStalled, Stage};
use carehub_pipeline::{Engine, InboundRecord, Processed};
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Header, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use tokio::sync::watch;

use crate::leases::GroupConsumer;
use crate::relay::{backoff, next_delay, wait};
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
    fn delays(&self) -> backon::ExponentialBackoff {
        use backon::BackoffBuilder;
        backon::ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(Duration::from_millis(self.max_backoff_ms.max(100)))
            .with_jitter()
            .without_max_times()
            .build()
    }
}

/// Silence after which a consumer checks that it holds partitions.
const REJOIN_AFTER: Duration = Duration::from_secs(30);

/// Most records one pipeline transaction takes.
pub const MAX_BATCH: usize = 256;

/// A record taken from the consumer, detached from librdkafka's buffers.
#[derive(Debug, Clone)]
pub struct KafkaRecord(OwnedMessage);

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
    fn inbound(&self) -> InboundRecord<'_> {
        InboundRecord {
            topic: self.topic(),
            partition: Some(self.partition()),
            offset: Some(self.offset()),
            key: self.0.key(),
            payload: self.payload(),
        }
    }
}

/// Feeds one consumer group into one pipeline.
///
/// Per batch: [`receive`](Self::receive) a record and take whatever else is
/// already waiting (up to [`MAX_BATCH`]), [`handle_batch`](Self::handle_batch)
/// (the pipeline's one PostgreSQL transaction for them commits), then
/// [`acknowledge`](Self::acknowledge) each (the offset is stored; librdkafka
/// commits stored offsets every second, on rebalance and on close). A crash
/// before `acknowledge` redelivers the records, and the pipeline finds them
/// already applied. Transient storage failures are retried with backoff and
/// never skip a record. When the topic is quiet a batch is one record: no
/// record waits for others.
pub struct ConsumerRunner {
    consumer: Arc<GroupConsumer>,
    producer: FutureProducer,
    engine: Engine,
    group: String,
    topic: String,
    retry: RetryConfig,
    health: Health,
}

impl std::fmt::Debug for ConsumerRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsumerRunner")
            .field("group", &self.group)
            .field("topic", &self.topic)
            .finish()
    }
}

impl ConsumerRunner {
    /// Joins `group` on `topic`. `producer` forwards dead letters to `<topic>.dlq`.
    pub fn new(cfg: &KafkaConfig, group: &str, topic: &str, engine: Engine, producer: FutureProducer) -> Result<Self> {
        let consumer = group_consumer(cfg, group, topic, Some(engine.pool().clone()))?;
        Ok(ConsumerRunner {
            consumer: Arc::new(consumer),
            producer,
            engine,
            group: group.to_owned(),
            topic: topic.to_owned(),
            retry: RetryConfig::default(),
            health: Health::default(),
        })
    }

    /// Retries bounded by `retry`; readiness and stalls reported to `health`
    /// as `pipeline:<name>`.
    pub fn with_retry(mut self, retry: RetryConfig, health: Health) -> Self {
        self.retry = retry;
        self.health = health;
        self.health.register(&self.component());
        self
    }

    fn component(&self) -> String {
        format!("pipeline:{}", self.engine.name())
    }

    pub async fn receive(&self) -> Result<KafkaRecord> {
        let msg = self.consumer.recv().await?;
        Ok(KafkaRecord(msg.detach()))
    }

    /// Watchdog, run after [`REJOIN_AFTER`] of silence: when the group has
    /// records waiting and its committed offsets did not move since the last
    /// look (nobody in the group is consuming), the member leaves and joins
    /// again. Seen with Tansu after a member was killed while joining: the
    /// restarted member stayed without an assignment, or (in the 10,000-message
    /// SIGKILL test) with one that delivered nothing more. A member that is
    /// merely spare or idle sees the others' offsets move and stays put.
    /// Returns the committed total for the next look.
    async fn rejoin_if_stuck(&self, previous: Option<i64>) -> Option<i64> {
        if !self.consumer.broker_assigned() {
            // Leased partitions do not depend on the coordinator.
            return None;
        }
        let assigned = self.consumer.assignment().map(|a| a.count()).unwrap_or(0);
        let (consumer, topic) = (self.consumer.inner().clone(), self.topic.clone());
        let progress = tokio::task::spawn_blocking(move || -> Option<(i64, i64)> {
            let timeout = Duration::from_secs(5);
            let md = consumer.fetch_metadata(Some(&topic), timeout).ok()?;
            let mut tpl = TopicPartitionList::new();
            for p in md.topics().first()?.partitions() {
                tpl.add_partition(&topic, p.id());
            }
            let committed = consumer.committed_offsets(tpl, timeout).ok()?;
            let (mut total, mut lag) = (0, 0);
            for el in committed.elements() {
                let (low, high) = consumer.fetch_watermarks(&topic, el.partition(), timeout).ok()?;
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
            tracing::warn!(group = %self.group, topic = %self.topic, lag, assigned, "records waiting and the group is not moving; joining again");
            self.consumer.unsubscribe();
            if let Err(e) = self.consumer.subscribe(&[&self.topic]) {
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

    /// Takes the records already waiting in the consumer's queue, without
    /// waiting for more, up to `max`.
    async fn waiting(&self, max: usize) -> Vec<KafkaRecord> {
        let mut out = Vec::new();
        while out.len() < max {
            // The inner consumer: no lease round in the middle of a batch.
            match tokio::time::timeout(Duration::ZERO, self.consumer.inner().recv()).await {
                Ok(Ok(msg)) => out.push(KafkaRecord(msg.detach())),
                _ => break,
            }
        }
        out
    }

    /// Runs the records through the pipeline in one transaction. While
    /// storage is down (a transient failure) it retries, never skipping a
    /// record, and reports the stall. A failure that is not transient is the
    /// records' own: the batch is split into single records, each retried
    /// at most `max_attempts` times and then dead-lettered (`store_error`),
    /// so one poison record never holds its partition, or the others, for
    /// longer than its bounded retries. `None`: shutdown came first.
    pub async fn handle_batch(
        &self,
        recs: &[KafkaRecord],
        shutdown: &mut watch::Receiver<bool>,
    ) -> Option<Vec<Processed>> {
        let inbound: Vec<InboundRecord<'_>> = recs.iter().map(KafkaRecord::inbound).collect();
        let mut delays = self.retry.delays();
        loop {
            let started = std::time::Instant::now();
            match self.engine.process_batch(&inbound).await {
                Ok(processed) => {
                    self.moving();
                    tracing::debug!(
                        group = %self.group,
                        records = inbound.len(),
                        elapsed_us = started.elapsed().as_micros() as u64,
                        "batch committed"
                    );
                    return Some(processed);
                }
                Err(e) if !e.is_transient() && inbound.len() > 1 => {
                    self.failed(&e);
                    let mut out = Vec::with_capacity(inbound.len());
                    for rec in &inbound {
                        out.push(self.handle_alone(rec, shutdown).await?);
                    }
                    return Some(out);
                }
                Err(e) if !e.is_transient() => return self.handle_alone(&inbound[0], shutdown).await.map(|p| vec![p]),
                Err(e) => {
                    self.failed(&e);
                    if wait(shutdown, next_delay(&mut delays)).await {
                        return None;
                    }
                }
            }
        }
    }

    /// One record whose batch failed for a reason of its own: retried at
    /// most `max_attempts` times, then dead-lettered. Transient failures in
    /// between are waited out (they are not the record's fault).
    async fn handle_alone(&self, rec: &InboundRecord<'_>, shutdown: &mut watch::Receiver<bool>) -> Option<Processed> {
        let mut delays = self.retry.delays();
        let mut refused = 0;
        loop {
            let outcome = if refused >= self.retry.max_attempts {
                match self.engine.process(rec).await {
                    Err(e) if !e.is_transient() => self.engine.dead_letter_unprocessable(rec, &e).await,
                    other => other,
                }
            } else {
                self.engine.process(rec).await
            };
            match outcome {
                Ok(processed) => {
                    self.moving();
                    return Some(processed);
                }
                Err(e) => {
                    if !e.is_transient() {
                        refused += 1;
                    }
                    self.failed(&e);
                    if wait(shutdown, next_delay(&mut delays)).await {
                        return None;
                    }
                }
            }
        }
    }

    fn failed(&self, e: &carehub_pipeline::Error) {
        // A refusal's own text may quote the refused value (patient data):
        // only its SQLSTATE is logged. An outage's text is about the
        // connection and is logged whole.
        let refused;
        let error: &dyn std::fmt::Display = match e {
            carehub_pipeline::Error::Store(s) if !e.is_transient() => {
                refused = format!("the store refused the batch (SQLSTATE {})", s.code().unwrap_or("none"));
                &refused
            }
            other => other,
        };
        ComponentError {
            component: "kafka_consumer",
            stage: Stage::Processing,
            error_code: if e.is_transient() {
                "store_unavailable"
            } else {
                "store_refused"
            },
            error,
        }
        .emit();
        let component = self.component();
        self.health.set_stalled(&component, true);
        PipelineStalled {
            pipeline: self.engine.name(),
            seconds: self.health.stalled_for(&component).map_or(0.0, |d| d.as_secs_f64()),
        }
        .emit();
    }

    fn moving(&self) {
        let component = self.component();
        if self.health.stalled_for(&component).is_some() {
            self.health.set_stalled(&component, false);
            PipelineStalled {
                pipeline: self.engine.name(),
                seconds: 0.0,
            }
            .emit();
        }
    }

    /// Runs a batch as one transaction per partition, the partitions at the
    /// same time: records of one partition (one key's records) stay in order,
    /// and the database round trips of different partitions overlap. Each
    /// partition's transaction retries on its own. Outcomes come back in the
    /// batch's order; `None`: shutdown came first.
    async fn handle_by_partition(
        &self,
        batch: &[KafkaRecord],
        shutdown: &watch::Receiver<bool>,
    ) -> Option<Vec<Processed>> {
        let mut partitions: Vec<(i32, Vec<usize>)> = Vec::new();
        for (i, rec) in batch.iter().enumerate() {
            match partitions.iter_mut().find(|(p, _)| *p == rec.partition()) {
                Some((_, idx)) => idx.push(i),
                None => partitions.push((rec.partition(), vec![i])),
            }
        }
        let runs = partitions.iter().map(|(_, idx)| {
            let recs: Vec<KafkaRecord> = idx.iter().map(|&i| batch[i].clone()).collect();
            let mut shutdown = shutdown.clone();
            async move { self.handle_batch(&recs, &mut shutdown).await }
        });
        let results = futures::future::join_all(runs).await;
        let mut out: Vec<Option<Processed>> = vec![None; batch.len()];
        for ((_, idx), result) in partitions.iter().zip(results) {
            for (&i, processed) in idx.iter().zip(result?) {
                out[i] = Some(processed);
            }
        }
        out.into_iter().collect()
    }

    /// Runs the record through the pipeline, retrying while storage is down.
    pub async fn handle(&self, rec: &KafkaRecord, shutdown: &mut watch::Receiver<bool>) -> Option<Processed> {
        self.handle_batch(std::slice::from_ref(rec), shutdown)
            .await
            .and_then(|mut out| out.pop())
    }

    /// Forwards a new dead letter to `<topic>.dlq` with its reason in headers.
    async fn forward_dead_letter(&self, rec: &KafkaRecord, id: i64, code: &str, reason: &str) -> Result<()> {
        forward_dead_letter(
            &self.producer,
            rec.topic(),
            rec.0.key(),
            rec.payload(),
            id,
            code,
            reason,
        )
        .await
    }

    /// Stores the position after the record for the next commit.
    pub fn acknowledge(&self, rec: &KafkaRecord) -> Result<()> {
        // rd_kafka_offsets_store takes the next offset to consume, stated
        // explicitly here. (The older rd_kafka_offset_store behind
        // `store_offset` adds one itself: passing `offset + 1` to it skips a
        // record per partition at every restart.)
        let mut next = TopicPartitionList::new();
        next.add_partition_offset(rec.topic(), rec.partition(), Offset::Offset(rec.offset() + 1))?;
        self.consumer.store_offsets(&next)?;
        Ok(())
    }

    /// Receives, handles and acknowledges records until `shutdown`.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        tracing::info!(group = %self.group, topic = %self.topic, "consumer started");
        self.health.set_ready(&self.component(), true);
        let lag = tokio::spawn(report_lag(
            self.consumer.inner().clone(),
            self.group.clone(),
            shutdown.clone(),
        ));
        let mut watched = None;
        while !*shutdown.borrow() {
            let rec = tokio::select! {
                r = self.receive() => r,
                _ = shutdown.changed() => break,
                _ = tokio::time::sleep(REJOIN_AFTER) => {
                    watched = self.rejoin_if_stuck(watched).await;
                    continue;
                }
            };
            let first = match rec {
                Ok(rec) => rec,
                Err(e) => {
                    ComponentError {
                        component: "kafka_consumer",
                        stage: Stage::Receiving,
                        error_code: "receive_failed",
                        error: &e,
                    }
                    .emit();
                    if wait(&mut shutdown, Duration::from_secs(1)).await {
                        break;
                    }
                    continue;
                }
            };
            let mut batch = vec![first];
            batch.extend(self.waiting(MAX_BATCH - 1).await);
            let Some(outcomes) = self.handle_by_partition(&batch, &shutdown).await else {
                break;
            };
            for (rec, processed) in batch.iter().zip(&outcomes) {
                if let Processed::DeadLettered { id, code, reason, .. } = processed {
                    let mut delays = backoff();
                    while let Err(e) = self.forward_dead_letter(rec, *id, code, reason).await {
                        ComponentError {
                            component: "kafka_consumer",
                            stage: Stage::Sending,
                            error_code: "dlq_forward_failed",
                            error: &e,
                        }
                        .emit();
                        if wait(&mut shutdown, next_delay(&mut delays)).await {
                            // Not acknowledged: redelivered after restart, and the
                            // engine finds the open dead letter instead of a new one.
                            lag.abort();
                            return;
                        }
                    }
                }
                if let Err(e) = self.acknowledge(rec) {
                    ComponentError {
                        component: "kafka_consumer",
                        stage: Stage::Processing,
                        error_code: "offset_store_failed",
                        error: &e,
                    }
                    .emit();
                }
            }
        }
        lag.abort();
        // Commit what was acknowledged before leaving the group.
        if let Err(e) = self.consumer.commit_consumer_state(rdkafka::consumer::CommitMode::Sync) {
            tracing::debug!(error = %e, "final offset commit skipped");
        }
        tracing::info!(group = %self.group, "consumer stopped");
    }
}

/// Reports records between the group's position and each partition's end.
async fn report_lag(consumer: Arc<StreamConsumer>, group: String, mut shutdown: watch::Receiver<bool>) {
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
