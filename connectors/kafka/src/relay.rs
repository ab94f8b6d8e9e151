use std::sync::Arc;
use std::time::{Duration, Instant};

use carehub_core::internal_events::{ComponentError, MessageSent, OutboxPublished, Stage};
use carehub_schema::{Outbox, UnsentEvent};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::{Deserialize, Serialize};
use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::{Mutex, watch};

use crate::Result;

/// Outbox relay settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayConfig {
    /// Most rows published per round.
    #[serde(default = "default_batch_size")]
    pub batch_size: i64,
    /// Milliseconds to wait before looking again when the outbox is empty.
    #[serde(default = "default_poll_interval_ms")]
    pub poll_interval_ms: u64,
}

const fn default_batch_size() -> i64 {
    500
}
const fn default_poll_interval_ms() -> u64 {
    50
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            batch_size: default_batch_size(),
            poll_interval_ms: default_poll_interval_ms(),
        }
    }
}

/// Key of the PostgreSQL advisory lock that elects the one active relay, so
/// that several carehub instances never publish the same key out of order.
const RELAY_LOCK_KEY: i64 = 0x6361_7265_6875_6201;

/// Publishes the transactional outbox to Kafka.
///
/// A round reads the oldest unsent rows in id order, sends them all through the
/// idempotent producer, waits for every delivery report and stamps `sent_at` on
/// the longest prefix that was delivered. A crash between publishing and
/// stamping re-publishes those rows on the next round: at least once, in order
/// per key, and consumers drop the repeats by event id.
#[derive(Clone)]
pub struct OutboxRelay {
    pool: PgPool,
    producer: FutureProducer,
    config: RelayConfig,
    /// The last backlog count and when it was taken.
    backlog: Arc<Mutex<Option<(Instant, i64)>>>,
}

/// How often a relay that is behind counts its backlog (the gauge).
const BACKLOG_EVERY: Duration = Duration::from_secs(2);

impl std::fmt::Debug for OutboxRelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboxRelay")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl OutboxRelay {
    pub fn new(pool: PgPool, producer: FutureProducer, config: RelayConfig) -> Self {
        OutboxRelay {
            pool,
            producer,
            config,
            backlog: Arc::default(),
        }
    }

    /// The oldest unsent rows.
    pub async fn fetch(&self) -> Result<Vec<UnsentEvent>> {
        Ok(Outbox::unsent_to_publish(&self.pool, self.config.batch_size).await?)
    }

    /// Sends `rows` and returns the ids of the longest delivered prefix.
    pub async fn publish(&self, rows: &[UnsentEvent]) -> Vec<i64> {
        let mut pending = Vec::with_capacity(rows.len());
        for row in rows {
            let record = FutureRecord::to(&row.topic).key(&row.key).payload(&row.payload);
            match self.producer.send_result(record) {
                Ok(delivery) => pending.push((row.id, delivery)),
                Err((e, _)) => {
                    // Queue full or producer failed: publish what was queued, retry the rest.
                    ComponentError {
                        component: "outbox_relay",
                        stage: Stage::Sending,
                        error_code: "enqueue_failed",
                        error: &e,
                    }
                    .emit();
                    break;
                }
            }
        }
        let mut delivered = Vec::with_capacity(pending.len());
        let mut failed = false;
        for (id, delivery) in pending {
            // Later records must still be awaited so none is left in flight,
            // but only the prefix before a failure counts as delivered.
            let ok = matches!(delivery.await, Ok(Ok(_)));
            if !ok && !failed {
                failed = true;
                ComponentError {
                    component: "outbox_relay",
                    stage: Stage::Sending,
                    error_code: "delivery_failed",
                    error: &format!("outbox row {id} not delivered"),
                }
                .emit();
            }
            if ok && !failed {
                delivered.push(id);
            }
        }
        delivered
    }

    pub async fn mark_sent(&self, ids: &[i64]) -> Result<()> {
        Ok(Outbox::mark_sent(&self.pool, ids).await?)
    }

    /// One round: fetch, publish, mark. Returns how many rows were published.
    pub async fn run_once(&self) -> Result<usize> {
        let rows = self.fetch().await?;
        if rows.is_empty() {
            OutboxPublished { count: 0, backlog: 0 }.emit();
            return Ok(0);
        }
        // A round that found fewer rows than it may take emptied the
        // outbox (as of its read): no need to count what is left.
        let full = rows.len() as i64 >= self.config.batch_size;
        let delivered = self.publish(&rows).await;
        self.mark_sent(&delivered).await?;
        MessageSent {
            connector: "kafka",
            message_type: "outbox",
            count: delivered.len() as u64,
        }
        .emit();
        let backlog = if full { self.backlog().await } else { 0 };
        OutboxPublished {
            count: delivered.len() as u64,
            backlog,
        }
        .emit();
        Ok(delivered.len())
    }

    /// Runs until `shutdown` turns true. Only the instance that holds the relay
    /// lock publishes; the others wait as standbys.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let idle = Duration::from_millis(self.config.poll_interval_ms);
        let mut delays = backoff();
        while !*shutdown.borrow() {
            let mut lock_conn = match self.acquire_leadership().await {
                Ok(Some(conn)) => conn,
                Ok(None) => {
                    // Another instance is the active relay.
                    if wait(&mut shutdown, Duration::from_secs(2)).await {
                        return;
                    }
                    continue;
                }
                Err(e) => {
                    ComponentError {
                        component: "outbox_relay",
                        stage: Stage::Processing,
                        error_code: "lock_failed",
                        error: &e,
                    }
                    .emit();
                    if wait(&mut shutdown, next_delay(&mut delays)).await {
                        return;
                    }
                    continue;
                }
            };
            tracing::info!("outbox relay active");
            loop {
                if *shutdown.borrow() {
                    let _ = lock_conn.close().await;
                    return;
                }
                match self.run_once().await {
                    Ok(n) => {
                        delays = backoff();
                        if n == 0 && wait(&mut shutdown, idle).await {
                            let _ = lock_conn.close().await;
                            return;
                        }
                    }
                    Err(e) => {
                        ComponentError {
                            component: "outbox_relay",
                            stage: Stage::Sending,
                            error_code: "round_failed",
                            error: &e,
                        }
                        .emit();
                        if wait(&mut shutdown, next_delay(&mut delays)).await {
                            return;
                        }
                        // Leadership holds only while the lock's connection lives.
                        if lock_conn.ping().await.is_err() {
                            break;
                        }
                    }
                }
            }
        }
    }

    /// Rows still unsent, counted at most every [`BACKLOG_EVERY`]: a count
    /// scans the unsent rows, and a relay that is behind must spend its
    /// round trips publishing, not counting. In between, the last count.
    async fn backlog(&self) -> i64 {
        let mut last = self.backlog.lock().await;
        if let Some((at, n)) = *last
            && at.elapsed() < BACKLOG_EVERY
        {
            return n;
        }
        let n = Outbox::backlog(&self.pool).await.unwrap_or(-1);
        *last = Some((Instant::now(), n));
        n
    }

    async fn acquire_leadership(&self) -> Result<Option<PgConnection>> {
        let mut conn = self.pool.acquire().await?.detach();
        let (locked,): (bool,) = sqlx::query_as("SELECT pg_try_advisory_lock($1)")
            .bind(RELAY_LOCK_KEY)
            .fetch_one(&mut conn)
            .await?;
        if locked {
            Ok(Some(conn))
        } else {
            let _ = conn.close().await;
            Ok(None)
        }
    }
}

/// Delays between retries: exponential from 100 ms to 10 s with jitter, unbounded.
pub fn backoff() -> backon::ExponentialBackoff {
    use backon::BackoffBuilder;
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(10))
        .with_jitter()
        .without_max_times()
        .build()
}

pub fn next_delay(delays: &mut backon::ExponentialBackoff) -> Duration {
    delays.next().unwrap_or(Duration::from_secs(10))
}

/// Sleeps for `d`; returns true when shutdown was requested meanwhile.
pub async fn wait(shutdown: &mut watch::Receiver<bool>, d: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => *shutdown.borrow(),
        _ = shutdown.changed() => true,
    }
}
