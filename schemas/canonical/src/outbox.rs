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

    /// [`unsent`](Self::unsent) as the relay needs them: the payload as
    /// JSON text, ready to publish (no `Value` tree built and printed again).
    pub async fn unsent_to_publish(pool: &PgPool, limit: i64) -> Result<Vec<UnsentEvent>> {
        Ok(sqlx::query_as(
            "SELECT id, topic, key, payload::text AS payload FROM outbox WHERE sent_at IS NULL ORDER BY id LIMIT $1",
        )
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
