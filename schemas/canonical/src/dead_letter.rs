//! Dead letters: records a consumer could not handle, kept with the reason and
//! the original bytes so that they can be replayed once the cause is fixed.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::Result;

#[derive(Debug, Clone)]
pub struct NewDeadLetter<'a> {
    pub consumer: &'a str,
    pub topic: &'a str,
    pub partition: Option<i32>,
    pub offset: Option<i64>,
    pub key: Option<&'a [u8]>,
    pub payload: &'a [u8],
    pub event_id: Option<&'a str>,
    pub message_id: Option<Uuid>,
    /// Bounded code for metrics and search (`invalid_envelope`, `unknown_reference`, …).
    pub error_code: &'a str,
    /// Human-readable reason; ids and codes only, never PHI.
    pub reason: &'a str,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DeadLetter {
    pub id: i64,
    pub consumer: String,
    pub topic: String,
    pub kafka_partition: Option<i32>,
    pub kafka_offset: Option<i64>,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub event_id: Option<String>,
    pub message_id: Option<Uuid>,
    pub error_code: String,
    pub reason: String,
    pub status: String,
    pub replay_count: i32,
    pub created_at: DateTime<Utc>,
    pub replayed_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct DeadLetters;

impl DeadLetters {
    pub async fn insert(conn: &mut PgConnection, dl: &NewDeadLetter<'_>) -> Result<i64> {
        let (id,): (i64,) = sqlx::query_as(
            "INSERT INTO dead_letter (consumer, topic, kafka_partition, kafka_offset, key, payload,
                                      event_id, message_id, error_code, reason)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id",
        )
        .bind(dl.consumer)
        .bind(dl.topic)
        .bind(dl.partition)
        .bind(dl.offset)
        .bind(dl.key)
        .bind(dl.payload)
        .bind(dl.event_id)
        .bind(dl.message_id)
        .bind(dl.error_code)
        .bind(dl.reason)
        .fetch_one(&mut *conn)
        .await?;
        Ok(id)
    }

    /// [`list`](Self::list) for a person (`actor`, seen from `origin`): dead
    /// letters hold messages' bytes, so each one shown is a read on the
    /// audit trail, committed before the rows are returned.
    pub async fn list_audited(
        pool: &PgPool,
        status: Option<&str>,
        limit: i64,
        actor: &str,
        origin: &str,
    ) -> Result<Vec<DeadLetter>> {
        let rows = Self::list(pool, status, limit).await?;
        if !rows.is_empty() {
            let entries: Vec<crate::AuditEntry> = rows
                .iter()
                .map(|d| {
                    crate::AuditEntry::new(crate::ActorKind::User, actor, crate::Action::Read, "dead_letter")
                        .entity(d.id)
                        .message(d.message_id)
                        .origin(origin.to_owned())
                })
                .collect();
            let mut tx = pool.begin().await?;
            crate::AuditLog::append(&mut tx, &entries).await?;
            tx.commit().await?;
        }
        Ok(rows)
    }

    /// The consumer (pipeline or delivery) that owns dead letter `id`, if it exists.
    pub async fn consumer_of(pool: &PgPool, id: i64) -> Result<Option<String>> {
        let row: Option<(String,)> = sqlx::query_as("SELECT consumer FROM dead_letter WHERE id = $1")
            .bind(id)
            .fetch_optional(pool)
            .await?;
        Ok(row.map(|(c,)| c))
    }

    /// Dead letters, newest first; `status` filters (`open`, `replayed`, `discarded`).
    pub async fn list(pool: &PgPool, status: Option<&str>, limit: i64) -> Result<Vec<DeadLetter>> {
        Ok(sqlx::query_as(
            "SELECT * FROM dead_letter WHERE ($1::text IS NULL OR status = $1) ORDER BY id DESC LIMIT $2",
        )
        .bind(status)
        .bind(limit)
        .fetch_all(pool)
        .await?)
    }

    /// Locks one dead letter for replay in the caller's transaction.
    pub async fn lock(conn: &mut PgConnection, id: i64) -> Result<DeadLetter> {
        sqlx::query_as("SELECT * FROM dead_letter WHERE id = $1 FOR UPDATE")
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?
            .ok_or_else(|| crate::Error::NotFound {
                entity: "dead letter",
                key: id.to_string(),
            })
    }

    pub async fn mark_replayed(conn: &mut PgConnection, id: i64) -> Result<()> {
        sqlx::query(
            "UPDATE dead_letter SET status = 'replayed', replay_count = replay_count + 1, replayed_at = now()
             WHERE id = $1",
        )
        .bind(id)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }
}
