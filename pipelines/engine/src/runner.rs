//! [`ConsumerRunner`]: feeds a consumer group into a pipeline [`Engine`],
//! storing each offset only after the pipeline's transaction committed.

use std::sync::Arc;
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt as _};
use tracing::Instrument as _;

use carehub_core::Health;
use carehub_core::internal_events::{ComponentError, PipelineStalled, Stage};
use carehub_kafka::{
    GroupConsumer, KafkaConfig, KafkaRecord, REJOIN_AFTER, RetryConfig, backoff, forward_dead_letter, group_consumer,
    next_delay, rejoin_if_stuck, report_lag, store_next_offset, wait,
};
use rdkafka::consumer::Consumer as _;
use rdkafka::producer::FutureProducer;
use tokio::sync::watch;

use crate::flows::PartitionFlows;
use crate::{Engine, InboundRecord, Processed};

/// Most records one pipeline transaction takes.
pub const MAX_BATCH: usize = 256;

/// Most records received and not yet in a batch, and most bytes of them:
/// memory stays bounded while the partitions' batches run. Deep on
/// purpose: a broker may hand out one partition's backlog before the next
/// one's (Tansu fills a fetch response partition by partition, up to
/// `fetch.max.bytes`), and the runner reads past the records of partitions
/// in flight to reach those of the others, so that every partition has a
/// batch running. librdkafka's own prefetch is bounded beside it by its
/// `queued.max.messages.kbytes` (settable in `[kafka.properties]`).
const MAX_WAITING: usize = 64 * MAX_BATCH;
const MAX_WAITING_BYTES: usize = 32 << 20;

fn inbound(rec: &KafkaRecord) -> InboundRecord<'_> {
    InboundRecord {
        topic: rec.topic(),
        partition: Some(rec.partition()),
        offset: Some(rec.offset()),
        key: rec.key(),
        payload: rec.payload(),
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
    pub fn new(
        cfg: &KafkaConfig,
        group: &str,
        topic: &str,
        engine: Engine,
        producer: FutureProducer,
    ) -> carehub_kafka::Result<Self> {
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

    pub async fn receive(&self) -> carehub_kafka::Result<KafkaRecord> {
        let msg = self.consumer.recv().await?;
        Ok(KafkaRecord::from(msg.detach()))
    }

    /// Takes the records already waiting in the consumer's queue, without
    /// waiting for more, up to `max`.
    async fn waiting(&self, max: usize) -> Vec<KafkaRecord> {
        let mut out = Vec::new();
        while out.len() < max {
            // The inner consumer: no lease round in the middle of a batch.
            match tokio::time::timeout(Duration::ZERO, self.consumer.inner().recv()).await {
                Ok(Ok(msg)) => out.push(KafkaRecord::from(msg.detach())),
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
        let inbound: Vec<InboundRecord<'_>> = recs.iter().map(inbound).collect();
        let mut delays = self.retry.delays();
        loop {
            let started = std::time::Instant::now();
            // The span lets a bench count the statements a batch issues
            // (sqlx logs each one at debug inside it).
            let span = tracing::debug_span!("pipeline_batch", group = %self.group);
            match self.engine.process_batch(&inbound).instrument(span.clone()).await {
                Ok(processed) => {
                    self.moving();
                    span.in_scope(|| {
                        tracing::debug!(
                            records = inbound.len(),
                            elapsed_us = started.elapsed().as_micros() as u64,
                            "batch committed"
                        )
                    });
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

    fn failed(&self, e: &crate::Error) {
        // A refusal's own text may quote the refused value (patient data):
        // only its SQLSTATE is logged. An outage's text is about the
        // connection and is logged whole.
        let refused;
        let error: &dyn std::fmt::Display = match e {
            crate::Error::Store(s) if !e.is_transient() => {
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

    /// One partition's batch, for [`run`](Self::run): the records come back
    /// with their outcomes (`None`: shutdown came first).
    async fn partition_batch(
        &self,
        recs: Vec<KafkaRecord>,
        mut shutdown: watch::Receiver<bool>,
    ) -> (Vec<KafkaRecord>, Option<Vec<Processed>>) {
        let out = self.handle_batch(&recs, &mut shutdown).await;
        (recs, out)
    }

    /// Runs the record through the pipeline, retrying while storage is down.
    pub async fn handle(&self, rec: &KafkaRecord, shutdown: &mut watch::Receiver<bool>) -> Option<Processed> {
        self.handle_batch(std::slice::from_ref(rec), shutdown)
            .await
            .and_then(|mut out| out.pop())
    }

    /// Forwards a new dead letter to `<topic>.dlq` with its reason in headers.
    async fn forward_dead_letter(
        &self,
        rec: &KafkaRecord,
        id: i64,
        code: &str,
        reason: &str,
    ) -> carehub_kafka::Result<()> {
        forward_dead_letter(&self.producer, rec.topic(), rec.key(), rec.payload(), id, code, reason).await
    }

    /// Stores the position after the record for the next commit.
    pub fn acknowledge(&self, rec: &KafkaRecord) -> carehub_kafka::Result<()> {
        store_next_offset(&self.consumer, rec)
    }

    /// Receives, handles and acknowledges records until `shutdown`.
    ///
    /// Partitions flow on their own ([`PartitionFlows`]): each has at most
    /// one batch in flight, so its records (one key's records) stay in
    /// order, and a partition's next batch — what arrived meanwhile —
    /// starts as soon as its previous one committed, while the others'
    /// batches still run. The partitions' round trips and commits overlap
    /// instead of every batch waiting for the slowest of a shared one.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        tracing::info!(group = %self.group, topic = %self.topic, "consumer started");
        self.health.set_ready(&self.component(), true);
        let lag = tokio::spawn(report_lag(
            self.consumer.inner().clone(),
            self.group.clone(),
            shutdown.clone(),
        ));
        let mut watched = None;
        let mut flows = PartitionFlows::default();
        let mut in_flight = FuturesUnordered::new();
        // A receive that failed is not tried again before a batch in flight
        // ends: a broken consumer must not spin beside the running batches.
        let mut receive_failed = false;
        loop {
            let stopping = *shutdown.borrow();
            if !stopping {
                for recs in flows.ready(MAX_BATCH) {
                    in_flight.push(self.partition_batch(recs, shutdown.clone()));
                }
            }
            if in_flight.is_empty() {
                if stopping {
                    break;
                }
                // Idle: wait for a record, the lease round first when due.
                let rec = tokio::select! {
                    r = self.receive() => r,
                    _ = shutdown.changed() => continue,
                    _ = tokio::time::sleep(REJOIN_AFTER) => {
                        watched = rejoin_if_stuck(&self.consumer, &self.group, &self.topic, watched).await;
                        continue;
                    }
                };
                match rec {
                    Ok(rec) => {
                        flows.push(rec);
                        flows.extend(self.waiting(MAX_BATCH - 1).await);
                    }
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
                    }
                }
                continue;
            }
            // A due lease round waits until nothing is in flight (above).
            let take = !stopping
                && !receive_failed
                && flows.len() < MAX_WAITING
                && flows.bytes() < MAX_WAITING_BYTES
                && !self.consumer.lease_round_due().await;
            tokio::select! {
                Some((recs, outcomes)) = in_flight.next() => {
                    if let Some(p) = recs.first().map(KafkaRecord::partition) {
                        flows.done(p);
                    }
                    receive_failed = false;
                    // None: shutdown came first; not acknowledged, redelivered.
                    if let Some(outcomes) = outcomes
                        && !self.finish(&recs, &outcomes, &mut shutdown).await
                    {
                        lag.abort();
                        return;
                    }
                }
                m = self.consumer.inner().recv(), if take => match m {
                    Ok(msg) => {
                        flows.push(KafkaRecord::from(msg.detach()));
                        flows.extend(self.waiting(MAX_BATCH - 1).await);
                    }
                    Err(e) => {
                        receive_failed = true;
                        ComponentError {
                            component: "kafka_consumer",
                            stage: Stage::Receiving,
                            error_code: "receive_failed",
                            error: &e,
                        }
                        .emit();
                    }
                },
                _ = shutdown.changed(), if !stopping => {}
            }
        }
        lag.abort();
        // Commit what was acknowledged before leaving the group.
        if let Err(e) = self.consumer.commit_consumer_state(rdkafka::consumer::CommitMode::Sync) {
            tracing::debug!(error = %e, "final offset commit skipped");
        }
        tracing::info!(group = %self.group, "consumer stopped");
    }

    /// After a batch committed: its new dead letters forwarded to
    /// `<topic>.dlq`, then every record's offset stored. `false`: shutdown
    /// came while the forward was failing (not acknowledged: redelivered
    /// after restart, and the engine finds the open dead letter instead of
    /// a new one).
    async fn finish(&self, recs: &[KafkaRecord], outcomes: &[Processed], shutdown: &mut watch::Receiver<bool>) -> bool {
        for (rec, processed) in recs.iter().zip(outcomes) {
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
                    if wait(shutdown, next_delay(&mut delays)).await {
                        return false;
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
        true
    }
}
