use std::time::{Duration, Instant};

use carehub_core::internal_events::{ComponentError, MessageSent, OutboxPublished, Stage};
use carehub_schema::{OUTBOX_LANES, Outbox, UnsentEvent, all_lanes};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::{Deserialize, Serialize};
use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::watch;

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
    /// Workers publishing at once, each its share of the outbox's 8 lanes
    /// (1 to 8; a key's events always go out in order, by one worker). Two
    /// by default: on 2 cores one fell behind the ingress and pipelines at
    /// 2,000 msg/s and four took their CPU (measured, README); raise it
    /// where cores are free and the outbox backlog grows.
    #[serde(default = "default_workers")]
    pub workers: usize,
}

const fn default_batch_size() -> i64 {
    500
}
const fn default_poll_interval_ms() -> u64 {
    50
}
const fn default_workers() -> usize {
    2
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            batch_size: default_batch_size(),
            poll_interval_ms: default_poll_interval_ms(),
            workers: default_workers(),
        }
    }
}

/// Class of the PostgreSQL advisory locks (one per outbox lane, the lane
/// being the object) that elect the one worker publishing a lane, so that
/// several carehub instances never publish the same key out of order.
const RELAY_LOCK_CLASS: i32 = 0x6368_7262;

/// How often a worker that holds fewer lanes than it serves tries the
/// others again (their holder, another instance, may have died).
const LANES_RETRY: Duration = Duration::from_secs(2);

/// Publishes the transactional outbox to Kafka.
///
/// The outbox has [`OUTBOX_LANES`] lanes (a key's lane is its hash), and
/// `[outbox] workers` workers each publish their share of them, each lane
/// under an advisory lock of its own: one relay could not publish what the
/// ingress and the pipelines write (one round trip to PostgreSQL and one
/// wait for the broker after another), several publish at once, and a key's
/// events still go out in order, by one worker.
///
/// A round reads a lane's oldest unsent rows in id order, sends them all through the
/// idempotent producer, waits for every delivery report and stamps `sent_at` on
/// the longest prefix that was delivered. A crash between publishing and
/// stamping re-publishes those rows on the next round: at least once, in order
/// per key, and consumers drop the repeats by event id.
#[derive(Clone)]
pub struct OutboxRelay {
    pool: PgPool,
    producer: FutureProducer,
    config: RelayConfig,
    /// The lanes this relay publishes ([`fetch`](Self::fetch), [`run_once`](Self::run_once)).
    lanes: Vec<i16>,
}

impl std::fmt::Debug for OutboxRelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboxRelay")
            .field("config", &self.config)
            .field("lanes", &self.lanes)
            .finish_non_exhaustive()
    }
}

impl OutboxRelay {
    /// A relay of every lane.
    pub fn new(pool: PgPool, producer: FutureProducer, config: RelayConfig) -> Self {
        OutboxRelay {
            pool,
            producer,
            config,
            lanes: all_lanes(),
        }
    }

    /// The oldest unsent rows of this relay's lanes.
    pub async fn fetch(&self) -> Result<Vec<UnsentEvent>> {
        Ok(Outbox::unsent_to_publish(&self.pool, &self.lanes, self.config.batch_size).await?)
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

    /// One round over this relay's lanes: fetch, publish, mark. Returns how
    /// many rows were published.
    pub async fn run_once(&self) -> Result<usize> {
        let rows = self.fetch().await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let delivered = self.publish(&rows).await;
        self.mark_sent(&delivered).await?;
        MessageSent {
            connector: "kafka",
            message_type: "outbox",
            count: delivered.len() as u64,
        }
        .emit();
        OutboxPublished {
            count: delivered.len() as u64,
            backlog: None,
        }
        .emit();
        Ok(delivered.len())
    }

    /// Runs until `shutdown` turns true: `[outbox] workers` workers share
    /// the lanes (worker `w` serves the lanes `l` with `l % workers == w`)
    /// and publish those whose lock they hold; the backlog gauge is counted
    /// beside them every [`BACKLOG_EVERY`].
    pub async fn run(self, shutdown: watch::Receiver<bool>) {
        let workers = self.config.workers.clamp(1, OUTBOX_LANES as usize);
        let mut tasks = tokio::task::JoinSet::new();
        for w in 0..workers {
            let mut worker = self.clone();
            worker.lanes = all_lanes().into_iter().filter(|l| *l as usize % workers == w).collect();
            tasks.spawn(worker.run_worker(shutdown.clone()));
        }
        tasks.spawn(report_backlog(self.pool.clone(), shutdown));
        while tasks.join_next().await.is_some() {}
    }

    /// One worker: holds what it can of its lanes' locks (the others wait
    /// as standbys, tried again every [`LANES_RETRY`]) and publishes them.
    async fn run_worker(self, mut shutdown: watch::Receiver<bool>) {
        let idle = Duration::from_millis(self.config.poll_interval_ms);
        let mut delays = backoff();
        while !*shutdown.borrow() {
            let mut lock_conn = match self.pool.acquire().await {
                Ok(conn) => conn.detach(),
                Err(e) => {
                    self.lock_failed(&e.into());
                    if wait(&mut shutdown, next_delay(&mut delays)).await {
                        return;
                    }
                    continue;
                }
            };
            let mut held = self.clone();
            held.lanes.clear();
            let mut retry_at = Instant::now();
            loop {
                if *shutdown.borrow() {
                    let _ = lock_conn.close().await;
                    return;
                }
                if held.lanes.len() < self.lanes.len() && Instant::now() >= retry_at {
                    retry_at = Instant::now() + LANES_RETRY;
                    match self.take_lanes(&mut lock_conn, &mut held.lanes).await {
                        Ok(true) => tracing::info!(lanes = ?held.lanes, "outbox relay lanes held"),
                        Ok(false) => {}
                        Err(e) => {
                            self.lock_failed(&e);
                            break; // the locks live and die with their connection
                        }
                    }
                }
                if held.lanes.is_empty() {
                    // Another instance publishes these lanes.
                    if wait(&mut shutdown, LANES_RETRY).await {
                        let _ = lock_conn.close().await;
                        return;
                    }
                    continue;
                }
                match held.run_once().await {
                    Ok(n) => {
                        delays = backoff();
                        // With several workers, a round far from full waits
                        // before the next one so that rows gather: every
                        // round costs its round trips whatever it carries,
                        // and workers each taking a few rows at a time spend
                        // on round trips the CPU the ingress and pipelines need.
                        let thin = self.config.workers > 1 && (n as i64) < self.config.batch_size / 4;
                        if (n == 0 || thin) && wait(&mut shutdown, idle).await {
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
                        // The lanes are held only while the locks' connection lives.
                        if lock_conn.ping().await.is_err() {
                            break;
                        }
                    }
                }
            }
        }
    }

    /// Tries the locks of this worker's lanes not in `held`; true when it took one.
    async fn take_lanes(&self, conn: &mut PgConnection, held: &mut Vec<i16>) -> Result<bool> {
        let mut took = false;
        for lane in &self.lanes {
            if held.contains(lane) {
                continue;
            }
            let (locked,): (bool,) = sqlx::query_as("SELECT pg_try_advisory_lock($1, $2)")
                .bind(RELAY_LOCK_CLASS)
                .bind(i32::from(*lane))
                .fetch_one(&mut *conn)
                .await?;
            if locked {
                held.push(*lane);
                took = true;
            }
        }
        held.sort_unstable();
        Ok(took)
    }

    fn lock_failed(&self, e: &crate::Error) {
        ComponentError {
            component: "outbox_relay",
            stage: Stage::Processing,
            error_code: "lock_failed",
            error: e,
        }
        .emit();
    }
}

/// How often the backlog gauge is counted: a count scans the unsent rows,
/// and a relay that is behind must spend its round trips publishing.
const BACKLOG_EVERY: Duration = Duration::from_secs(2);

/// Sets the backlog gauge (rows not yet published) every [`BACKLOG_EVERY`].
async fn report_backlog(pool: PgPool, mut shutdown: watch::Receiver<bool>) {
    loop {
        if let Ok(n) = Outbox::backlog(&pool).await {
            OutboxPublished {
                count: 0,
                backlog: Some(n),
            }
            .emit();
        }
        if wait(&mut shutdown, BACKLOG_EVERY).await {
            return;
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
