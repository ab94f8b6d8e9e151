//! Which events a consumer has already applied: the idempotency of handlers.

use sqlx::{PgConnection, PgPool};

use crate::Result;

/// Records that `consumer` applies `event_id` in the current transaction.
/// Returns false when it was applied before: the caller must skip it. The row
/// commits or rolls back with the handler's effect, so the pair is exactly once.
pub async fn claim(conn: &mut PgConnection, consumer: &str, event_id: &str) -> Result<bool> {
    let res = sqlx::query("INSERT INTO consumed_event (consumer, event_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
        .bind(consumer)
        .bind(event_id)
        .execute(&mut *conn)
        .await?;
    Ok(res.rows_affected() == 1)
}

/// [`claim`] for many events in one statement: returns the ids claimed now
/// (those applied before are not among them). An id twice in the list is
/// claimed once.
pub async fn claim_many(conn: &mut PgConnection, consumer: &str, event_ids: &[&str]) -> Result<Vec<String>> {
    Ok(sqlx::query_scalar(
        "INSERT INTO consumed_event (consumer, event_id)
         SELECT $1, e FROM UNNEST($2::text[]) AS e
         ON CONFLICT DO NOTHING RETURNING event_id",
    )
    .bind(consumer)
    .bind(event_ids)
    .fetch_all(&mut *conn)
    .await?)
}

/// Whether `consumer` applied `event_id` already (committed).
pub async fn is_claimed(pool: &PgPool, consumer: &str, event_id: &str) -> Result<bool> {
    let row: Option<(i32,)> = sqlx::query_as("SELECT 1 FROM consumed_event WHERE consumer = $1 AND event_id = $2")
        .bind(consumer)
        .bind(event_id)
        .fetch_optional(pool)
        .await?;
    Ok(row.is_some())
}
