//! Which events a consumer has already applied: the idempotency of handlers.

use sqlx::PgConnection;

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
