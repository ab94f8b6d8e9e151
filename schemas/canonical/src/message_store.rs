//! The message store: every inbound message kept verbatim, found by metadata.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::Result;

/// An inbound message as a connector hands it over.
#[derive(Debug, Clone)]
pub struct NewMessage<'a> {
    /// Connector instance that received it (`hl7_mllp`, `kafka_intake`).
    pub connector: &'a str,
    /// Wire protocol (`hl7v2`, `fhir`, `kafka`, `stripe`).
    pub protocol: &'a str,
    /// Message type as the protocol names it (`ADT^A01`, `carehub.patient.upsert.v1`).
    pub message_type: Option<&'a str>,
    /// The sender's own id for the message (HL7 MSH-10, event id).
    pub control_id: Option<&'a str>,
    /// Idempotency key, unique per source: the same key twice is the same message.
    pub source_key: &'a str,
    /// Remote address, for the audit trail.
    pub origin: Option<&'a str>,
    pub raw: &'a [u8],
}

/// What [`MessageStore::ingest`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ingested {
    /// Stored for the first time.
    New { id: Uuid, received_at: DateTime<Utc> },
    /// The key was seen before: nothing written, here is the first copy.
    Duplicate { id: Uuid, received_at: DateTime<Utc> },
}

impl Ingested {
    pub fn id(&self) -> Uuid {
        match self {
            Ingested::New { id, .. } | Ingested::Duplicate { id, .. } => *id,
        }
    }
    pub fn is_duplicate(&self) -> bool {
        matches!(self, Ingested::Duplicate { .. })
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StoredMessage {
    pub id: Uuid,
    pub received_at: DateTime<Utc>,
    pub connector: String,
    pub protocol: String,
    pub message_type: Option<String>,
    pub control_id: Option<String>,
    pub source_key: String,
    pub patient_id: Option<Uuid>,
    pub status: String,
    pub processed_at: Option<DateTime<Utc>>,
    pub error: Option<String>,
    pub origin: Option<String>,
    pub raw: Vec<u8>,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct MessageStore;

impl MessageStore {
    /// Stores a message unless its source key was seen before. Run it inside the
    /// transaction whose commit is the point after which the sender is acknowledged.
    pub async fn ingest(conn: &mut PgConnection, msg: &NewMessage<'_>) -> Result<Ingested> {
        let id = Uuid::now_v7();
        let received_at = Utc::now();
        let claimed: Option<(Uuid,)> = sqlx::query_as(
            "INSERT INTO message_key (source_key, message_id, received_at) VALUES ($1, $2, $3)
             ON CONFLICT (source_key) DO NOTHING RETURNING message_id",
        )
        .bind(msg.source_key)
        .bind(id)
        .bind(received_at)
        .fetch_optional(&mut *conn)
        .await?;
        if claimed.is_none() {
            let (id, received_at): (Uuid, DateTime<Utc>) =
                sqlx::query_as("SELECT message_id, received_at FROM message_key WHERE source_key = $1")
                    .bind(msg.source_key)
                    .fetch_one(&mut *conn)
                    .await?;
            return Ok(Ingested::Duplicate { id, received_at });
        }
        sqlx::query(
            "INSERT INTO message (id, received_at, connector, protocol, message_type, control_id,
                                  source_key, status, origin, raw)
             VALUES ($1, $2, $3, $4, $5, $6, $7, 'received', $8, $9)",
        )
        .bind(id)
        .bind(received_at)
        .bind(msg.connector)
        .bind(msg.protocol)
        .bind(msg.message_type)
        .bind(msg.control_id)
        .bind(msg.source_key)
        .bind(msg.origin)
        .bind(msg.raw)
        .execute(&mut *conn)
        .await?;
        Ok(Ingested::New { id, received_at })
    }

    /// [`ingest`](Self::ingest) for many messages in two statements, for a
    /// receiver that commits several messages per transaction (group commit).
    /// The result is in input order; a key that appears twice in `msgs` is
    /// new the first time and a duplicate after.
    pub async fn ingest_batch(conn: &mut PgConnection, msgs: &[NewMessage<'_>]) -> Result<Vec<Ingested>> {
        let received_at = Utc::now();
        let ids: Vec<Uuid> = msgs.iter().map(|_| Uuid::now_v7()).collect();
        let keys: Vec<&str> = msgs.iter().map(|m| m.source_key).collect();
        let claimed: Vec<(String, Uuid)> = sqlx::query_as(
            "INSERT INTO message_key (source_key, message_id, received_at)
             SELECT k, i, $3 FROM UNNEST($1::text[], $2::uuid[]) AS t(k, i)
             ON CONFLICT (source_key) DO NOTHING RETURNING source_key, message_id",
        )
        .bind(&keys)
        .bind(&ids)
        .bind(received_at)
        .fetch_all(&mut *conn)
        .await?;
        let claimed: std::collections::HashMap<String, Uuid> = claimed.into_iter().collect();
        let mut out = Vec::with_capacity(msgs.len());
        let mut fresh = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (i, m) in msgs.iter().enumerate() {
            match claimed.get(m.source_key) {
                Some(id) if *id == ids[i] && seen.insert(m.source_key) => {
                    out.push(Ingested::New { id: *id, received_at });
                    fresh.push(i);
                }
                _ => out.push(Ingested::Duplicate {
                    id: Uuid::nil(),
                    received_at,
                }),
            }
        }
        // Duplicates name the first copy.
        let dup_keys: Vec<&str> = out
            .iter()
            .zip(msgs)
            .filter(|(o, _)| o.is_duplicate())
            .map(|(_, m)| m.source_key)
            .collect();
        if !dup_keys.is_empty() {
            let firsts: Vec<(String, Uuid, DateTime<Utc>)> = sqlx::query_as(
                "SELECT source_key, message_id, received_at FROM message_key WHERE source_key = ANY($1)",
            )
            .bind(&dup_keys)
            .fetch_all(&mut *conn)
            .await?;
            let firsts: std::collections::HashMap<String, (Uuid, DateTime<Utc>)> =
                firsts.into_iter().map(|(k, i, t)| (k, (i, t))).collect();
            for (o, m) in out.iter_mut().zip(msgs) {
                if o.is_duplicate()
                    && let Some((id, at)) = firsts.get(m.source_key)
                {
                    *o = Ingested::Duplicate {
                        id: *id,
                        received_at: *at,
                    };
                }
            }
        }
        if fresh.is_empty() {
            return Ok(out);
        }
        let pick = |f: &dyn Fn(&NewMessage<'_>) -> Option<String>| -> Vec<Option<String>> {
            fresh.iter().map(|&i| f(&msgs[i])).collect()
        };
        let fresh_ids: Vec<Uuid> = fresh.iter().map(|&i| ids[i]).collect();
        let raws: Vec<&[u8]> = fresh.iter().map(|&i| msgs[i].raw).collect();
        sqlx::query(
            "INSERT INTO message (id, received_at, connector, protocol, message_type, control_id,
                                  source_key, status, origin, raw)
             SELECT i, $2, c, p, t, ci, k, 'received', o, r
               FROM UNNEST($1::uuid[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
                           $8::text[], $9::bytea[]) AS x(i, c, p, t, ci, k, o, r)",
        )
        .bind(&fresh_ids)
        .bind(received_at)
        .bind(pick(&|m| Some(m.connector.to_owned())))
        .bind(pick(&|m| Some(m.protocol.to_owned())))
        .bind(pick(&|m| m.message_type.map(str::to_owned)))
        .bind(pick(&|m| m.control_id.map(str::to_owned)))
        .bind(pick(&|m| Some(m.source_key.to_owned())))
        .bind(pick(&|m| m.origin.map(str::to_owned)))
        .bind(&raws)
        .execute(&mut *conn)
        .await?;
        Ok(out)
    }

    /// Marks a message handled, linking it to the patient it concerned.
    pub async fn mark_processed(conn: &mut PgConnection, id: Uuid, patient_id: Option<Uuid>) -> Result<()> {
        sqlx::query(
            "UPDATE message SET status = 'processed', processed_at = clock_timestamp(), error = NULL,
                    patient_id = COALESCE($2, patient_id)
             WHERE id = $1",
        )
        .bind(id)
        .bind(patient_id)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    pub async fn mark_failed(conn: &mut PgConnection, id: Uuid, error: &str) -> Result<()> {
        sqlx::query("UPDATE message SET status = 'failed', processed_at = clock_timestamp(), error = $2 WHERE id = $1")
            .bind(id)
            .bind(error)
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    pub async fn get(pool: &PgPool, id: Uuid) -> Result<Option<StoredMessage>> {
        Ok(sqlx::query_as("SELECT * FROM message WHERE id = $1")
            .bind(id)
            .fetch_optional(pool)
            .await?)
    }

    pub async fn find_by_key(pool: &PgPool, source_key: &str) -> Result<Option<StoredMessage>> {
        Ok(sqlx::query_as(
            "SELECT m.* FROM message m JOIN message_key k
               ON k.message_id = m.id AND k.received_at = m.received_at
             WHERE k.source_key = $1",
        )
        .bind(source_key)
        .fetch_optional(pool)
        .await?)
    }

    /// Drops the monthly partitions that ended before the month `keep_months`
    /// ago, with their idempotency keys. Returns the dropped partitions.
    pub async fn drop_partitions(conn: &mut PgConnection, keep_months: i32) -> Result<Vec<String>> {
        let rows: Vec<(String,)> = sqlx::query_as("SELECT carehub_drop_message_partitions($1)")
            .bind(keep_months)
            .fetch_all(&mut *conn)
            .await?;
        Ok(rows.into_iter().map(|(n,)| n).collect())
    }

    /// Creates the monthly partitions from last month to three months ahead.
    pub async fn ensure_partitions(pool: &PgPool) -> Result<i32> {
        let (created,): (i32,) = sqlx::query_as("SELECT carehub_ensure_message_partitions(1, 3)")
            .fetch_one(pool)
            .await?;
        if created > 0 {
            tracing::info!(created, "message store partitions created");
        }
        Ok(created)
    }
}
