//! The transactional outbox, table side. `carehub-kafka`'s OutboxRelay publishes it.
//!
//! Ordering rule: events for one key must be enqueued by transactions that
//! first lock that key's aggregate row (an UPDATE or SELECT … FOR UPDATE of
//! the patient, order, …). Then ids, which the relay publishes in order, follow
//! commit order for that key.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::{Envelope, Result};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OutboxRow {
    pub id: i64,
    pub event_id: Uuid,
    pub topic: String,
    pub key: String,
    pub payload: serde_json::Value,
    pub created_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
}

/// Lanes of the outbox: a key's events always travel in the same lane
/// (the hash of its key), and each lane is published in id order by
/// one relay worker at a time, so that several workers publish at once and
/// every key's events stay in order. Fixed: a key must never change lanes.
pub const OUTBOX_LANES: i16 = 8;

/// The oldest unsent rows of some lanes. A row's lane, in SQL:
/// PostgreSQL's own stable text hash (the one hash partitioning uses) of
/// the partition key, masked to [`OUTBOX_LANES`].
const UNSENT_OF_LANES: &str = "SELECT id, topic, key, payload::text AS payload FROM outbox
  WHERE sent_at IS NULL AND (hashtextextended(key, 0) & 7)::int2 = ANY($1) ORDER BY id LIMIT $2";

/// Every lane.
pub fn all_lanes() -> Vec<i16> {
    (0..OUTBOX_LANES).collect()
}

/// An outbox row waiting to be published.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UnsentEvent {
    pub id: i64,
    pub topic: String,
    pub key: String,
    /// The event, JSON.
    pub payload: String,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Outbox;

impl Outbox {
    /// Queues `event` for `topic` under partition key `key`, in the caller's transaction.
    pub async fn enqueue(conn: &mut PgConnection, topic: &str, key: &str, event: &Envelope) -> Result<i64> {
        let event_id = Uuid::parse_str(&event.id)
            .map_err(|_| crate::Error::Invalid(format!("outbox event id {:?} is not a UUID", event.id)))?;
        let (id,): (i64,) = sqlx::query_as(
            "INSERT INTO outbox (event_id, topic, key, payload) VALUES ($1, $2, $3, $4::text::jsonb) RETURNING id",
        )
        .bind(event_id)
        .bind(topic)
        .bind(key)
        .bind(serde_json::to_string(event)?)
        .fetch_one(&mut *conn)
        .await?;
        Ok(id)
    }

    /// [`enqueue`](Self::enqueue) for many events in one statement, ids in
    /// the order given (the relay publishes them in that order).
    pub async fn enqueue_batch(conn: &mut PgConnection, topic: &str, events: &[(&str, &Envelope)]) -> Result<()> {
        let all: Vec<(&str, &str, &Envelope)> = events.iter().map(|(k, e)| (topic, *k, *e)).collect();
        Self::enqueue_many(conn, &all).await
    }

    /// Events of several topics (`(topic, key, event)`) in one statement, ids
    /// in the order given.
    pub async fn enqueue_many(conn: &mut PgConnection, events: &[(&str, &str, &Envelope)]) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let mut topics = Vec::with_capacity(events.len());
        let mut ids = Vec::with_capacity(events.len());
        let mut keys = Vec::with_capacity(events.len());
        let mut payloads = Vec::with_capacity(events.len());
        for (topic, key, event) in events {
            topics.push(*topic);
            ids.push(
                Uuid::parse_str(&event.id)
                    .map_err(|_| crate::Error::Invalid(format!("outbox event id {:?} is not a UUID", event.id)))?,
            );
            keys.push(*key);
            // Text straight from the envelope (PostgreSQL parses it into
            // jsonb), without a `Value` tree built in between.
            payloads.push(serde_json::to_string(event)?);
        }
        sqlx::query(
            "INSERT INTO outbox (event_id, topic, key, payload)
             SELECT e, t, k, p::jsonb FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[])
                    WITH ORDINALITY AS x(e, t, k, p, n)
              ORDER BY n",
        )
        .bind(&ids)
        .bind(&topics)
        .bind(&keys)
        .bind(&payloads)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    /// The oldest unsent rows, in id order.
    pub async fn unsent(pool: &PgPool, limit: i64) -> Result<Vec<OutboxRow>> {
        Ok(
            sqlx::query_as("SELECT * FROM outbox WHERE sent_at IS NULL ORDER BY id LIMIT $1")
                .bind(limit)
                .fetch_all(pool)
                .await?,
        )
    }

    /// The oldest unsent rows of `lanes` (see [`OUTBOX_LANES`]), in id order, as
    /// the relay needs them: the payload as JSON text, ready to publish (no
    /// `Value` tree built and printed again).
    pub async fn unsent_to_publish(pool: &PgPool, lanes: &[i16], limit: i64) -> Result<Vec<UnsentEvent>> {
        Ok(sqlx::query_as(UNSENT_OF_LANES)
            .bind(lanes)
            .bind(limit)
            .fetch_all(pool)
            .await?)
    }

    pub async fn mark_sent(pool: &PgPool, ids: &[i64]) -> Result<()> {
        sqlx::query("UPDATE outbox SET sent_at = now() WHERE id = ANY($1) AND sent_at IS NULL")
            .bind(ids)
            .execute(pool)
            .await?;
        Ok(())
    }

    /// Number of rows not yet published.
    pub async fn backlog(pool: &PgPool) -> Result<i64> {
        let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM outbox WHERE sent_at IS NULL")
            .fetch_one(pool)
            .await?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_lane_expression_has_as_many_lanes_as_the_constant_says() {
        // The query masks the hash with `& 7`.
        assert_eq!(super::OUTBOX_LANES, 8);
        assert!(super::UNSENT_OF_LANES.contains("& 7)"));
        assert_eq!(super::all_lanes(), (0..8).collect::<Vec<i16>>());
    }
}
