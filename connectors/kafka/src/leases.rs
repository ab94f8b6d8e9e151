//! Which carehub instance consumes which partition, decided in PostgreSQL
//! instead of by the broker's group coordinator (hardening item 19).
//!
//! Why: Tansu 0.6's coordinator keeps a group's leader while the group is
//! forming even after that leader died (its `missed_heartbeat` for a forming
//! group drops the member but not `state.leader`), and answers every other
//! member's SyncGroup with REBALANCE_IN_PROGRESS: a hub killed while it led a
//! joining group leaves the group unable to form, for good. Seen as the
//! "consumer-group stall" (a restarted hub that consumed nothing); reproduced
//! by `tests/serve.rs` killing hubs repeatedly while they join.
//!
//! How: each consumer holds, on a PostgreSQL connection of its own, a
//! session advisory lock per partition it consumes, and one "member" lock
//! that says it is alive. Every [`REBALANCE_EVERY`] (and before its first
//! record) it counts the live members of its group, takes free partitions up
//! to its share (`ceil(partitions / members)`) and gives back what exceeds
//! it, between two batches, after committing their offsets. A process that
//! dies loses its connection and with it its locks, at once: no timeout, no
//! coordinator. Offsets are still committed to the broker under the group
//! id (a group nobody joins accepts commits), and records are applied
//! exactly once by the pipelines whatever the assignment does.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaResult;
use rdkafka::message::BorrowedMessage;
use rdkafka::{Offset, TopicPartitionList};
use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::Mutex;

use carehub_core::internal_events::{ComponentError, Stage};

/// How often the share is looked at again.
pub const REBALANCE_EVERY: Duration = Duration::from_secs(3);

/// Most members a group can have (member slots tried in turn).
const MAX_MEMBERS: i32 = 256;

/// FNV-1a: a stable 32-bit key for a group's locks (PostgreSQL's two-int
/// advisory lock space: `(class, object)`).
fn key(name: &str, salt: u32) -> i32 {
    let mut h: u32 = 0x811c_9dc5 ^ salt;
    for b in name.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h as i32
}

struct State {
    conn: Option<PgConnection>,
    member_slot: Option<i32>,
    owned: BTreeSet<i32>,
    next: Instant,
}

/// The partitions this consumer holds, leased in PostgreSQL.
pub struct PartitionLeases {
    pool: PgPool,
    group: String,
    topic: String,
    partition_class: i32,
    member_class: i32,
    state: Mutex<State>,
}

impl std::fmt::Debug for PartitionLeases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartitionLeases")
            .field("group", &self.group)
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl PartitionLeases {
    pub fn new(pool: PgPool, group: &str, topic: &str) -> Self {
        let scope = format!("{group}\u{0}{topic}");
        PartitionLeases {
            pool,
            group: group.to_owned(),
            topic: topic.to_owned(),
            partition_class: key(&scope, 0),
            member_class: key(&scope, 0x5a5a_5a5a),
            state: Mutex::new(State {
                conn: None,
                member_slot: None,
                owned: BTreeSet::new(),
                next: Instant::now(),
            }),
        }
    }

    /// Looks at the share again when it is due, and assigns `consumer` the
    /// partitions held. Call it only between batches: a partition given up
    /// has no record of it in flight.
    pub async fn rebalance_if_due(&self, consumer: &Arc<StreamConsumer>) {
        let mut state = self.state.lock().await;
        if Instant::now() < state.next {
            return;
        }
        state.next = Instant::now() + REBALANCE_EVERY;
        if let Err(e) = self.rebalance(&mut state, consumer).await {
            ComponentError {
                component: "kafka_consumer",
                stage: Stage::Receiving,
                error_code: "lease_failed",
                error: &e,
            }
            .emit();
            // The locks live and die with the connection: start over.
            if let Some(conn) = state.conn.take() {
                let _ = conn.close().await;
            }
            state.member_slot = None;
            if !state.owned.is_empty() {
                state.owned.clear();
                let _ = consumer.assign(&TopicPartitionList::new());
            }
            state.next = Instant::now() + Duration::from_secs(1);
        }
    }

    /// When the next look is due.
    pub async fn next_due(&self) -> Instant {
        self.state.lock().await.next
    }

    async fn rebalance(&self, state: &mut State, consumer: &Arc<StreamConsumer>) -> lease_error::Result<()> {
        if state.conn.is_none() {
            state.conn = Some(self.pool.acquire().await?.detach());
        }
        let partitions = partition_count(consumer, &self.topic).await?;
        let (member_class, partition_class) = (self.member_class, self.partition_class);
        let State {
            conn,
            member_slot,
            owned,
            ..
        } = state;
        let conn = conn.as_mut().ok_or(lease_error::Error::Gone)?;
        if member_slot.is_none() {
            for slot in 0..MAX_MEMBERS {
                if try_lock(conn, member_class, slot).await? {
                    *member_slot = Some(slot);
                    break;
                }
            }
        }
        let (members,): (i64,) = sqlx::query_as(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid::int4 = $1 AND objsubid = 2 AND granted",
        )
        .bind(member_class)
        .fetch_one(&mut *conn)
        .await?;
        let members = members.max(1) as usize;
        let share = partitions.div_ceil(members);
        let before = owned.clone();
        // Give back what exceeds the share (highest first), after its offsets are committed.
        while owned.len() > share {
            let Some(p) = owned.iter().next_back().copied() else {
                break;
            };
            let _ = consumer.commit_consumer_state(rdkafka::consumer::CommitMode::Sync);
            unlock(conn, partition_class, p).await?;
            owned.remove(&p);
        }
        // Take free partitions up to the share.
        for p in 0..partitions as i32 {
            if owned.len() >= share {
                break;
            }
            if !owned.contains(&p) && try_lock(conn, partition_class, p).await? {
                owned.insert(p);
            }
        }
        // Partitions beyond the topic's count (it shrank? it cannot) are left as they are.
        if *owned != before {
            let mut tpl = TopicPartitionList::new();
            for p in owned.iter() {
                tpl.add_partition_offset(&self.topic, *p, Offset::Stored)?;
            }
            consumer.assign(&tpl)?;
            tracing::info!(
                group = %self.group,
                topic = %self.topic,
                members,
                partitions = ?owned,
                "partitions leased"
            );
        }
        Ok(())
    }
}

async fn try_lock(conn: &mut PgConnection, class: i32, object: i32) -> Result<bool, sqlx::Error> {
    let (locked,): (bool,) = sqlx::query_as("SELECT pg_try_advisory_lock($1, $2)")
        .bind(class)
        .bind(object)
        .fetch_one(&mut *conn)
        .await?;
    Ok(locked)
}

async fn unlock(conn: &mut PgConnection, class: i32, object: i32) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_unlock($1, $2)")
        .bind(class)
        .bind(object)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

async fn partition_count(consumer: &Arc<StreamConsumer>, topic: &str) -> lease_error::Result<usize> {
    // Metadata is a blocking call in librdkafka: off the async threads.
    let (consumer, name) = (consumer.clone(), topic.to_owned());
    let n = tokio::task::spawn_blocking(move || {
        consumer
            .fetch_metadata(Some(&name), Duration::from_secs(5))
            .map(|md| md.topics().first().map_or(0, |t| t.partitions().len()))
    })
    .await
    .map_err(|_| lease_error::Error::Gone)??;
    if n == 0 {
        return Err(lease_error::Error::NoPartitions(topic.to_owned()));
    }
    Ok(n)
}

/// The errors of a lease round (kept local: none leaves this module).
mod lease_error {
    #[derive(Debug, thiserror::Error)]
    pub enum Error {
        #[error("PostgreSQL: {0}")]
        Db(#[from] sqlx::Error),
        #[error("kafka: {0}")]
        Kafka(#[from] rdkafka::error::KafkaError),
        #[error("topic {0} has no partitions (yet)")]
        NoPartitions(String),
        #[error("the lease connection is gone")]
        Gone,
    }
    pub type Result<T> = std::result::Result<T, Error>;
}

/// A consumer whose partitions are leased in PostgreSQL ([`PartitionLeases`]),
/// or assigned by the broker's group coordinator when built without leases.
pub struct GroupConsumer {
    consumer: Arc<StreamConsumer>,
    leases: Option<PartitionLeases>,
}

impl std::fmt::Debug for GroupConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupConsumer")
            .field("leases", &self.leases)
            .finish_non_exhaustive()
    }
}

impl GroupConsumer {
    pub(crate) fn new(consumer: StreamConsumer, leases: Option<PartitionLeases>) -> Self {
        GroupConsumer {
            consumer: Arc::new(consumer),
            leases,
        }
    }

    /// The next record. With leases, the share is looked at first when due
    /// (this is the point between two batches), and while no record comes.
    pub async fn recv(&self) -> KafkaResult<BorrowedMessage<'_>> {
        let Some(leases) = &self.leases else {
            return self.consumer.recv().await;
        };
        loop {
            leases.rebalance_if_due(&self.consumer).await;
            let due = leases.next_due().await;
            tokio::select! {
                m = self.consumer.recv() => return m,
                _ = tokio::time::sleep_until(due.into()) => {}
            }
        }
    }

    /// True when a lease round is due: a runner with batches in flight
    /// finishes them (their offsets stored) before it receives again, so a
    /// partition is never given back with a batch of it still running.
    pub async fn lease_round_due(&self) -> bool {
        match &self.leases {
            Some(leases) => Instant::now() >= leases.next_due().await,
            None => false,
        }
    }

    /// The underlying consumer (offsets, assignment, metadata; and records
    /// already waiting, taken without a rebalance in the middle of a batch).
    pub fn inner(&self) -> &Arc<StreamConsumer> {
        &self.consumer
    }

    /// True when the broker's group coordinator assigns the partitions.
    pub fn broker_assigned(&self) -> bool {
        self.leases.is_none()
    }
}

impl std::ops::Deref for GroupConsumer {
    type Target = StreamConsumer;
    fn deref(&self) -> &StreamConsumer {
        &self.consumer
    }
}
