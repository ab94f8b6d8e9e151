//! The message store: every inbound message kept verbatim, found by metadata.

use std::collections::HashMap;

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
    /// What to do when the key was seen with other content.
    pub on_changed: ChangedContent,
}

/// The one rule for "same key, other content" is the stored content hash;
/// what follows from it is each connector's to say.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ChangedContent {
    /// Recorded in `message_conflict` for review and not applied; the first
    /// copy stands (HL7: a sender reusing a control id for another message).
    #[default]
    HoldForReview,
    /// Stored as a new version under the same key, which now names it; the
    /// earlier version is kept and the change is recorded in
    /// `message_conflict` as applied (DICOM: an instance sent again with
    /// other content).
    NewVersion,
}

/// What [`MessageStore::ingest`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ingested {
    /// Stored for the first time.
    New { id: Uuid, received_at: DateTime<Utc> },
    /// The key was seen before: nothing written, here is the first copy.
    /// `changed`: this copy's content differs from the first's (its content
    /// hash does); it was recorded in `message_conflict` for review.
    Duplicate {
        id: Uuid,
        received_at: DateTime<Utc>,
        changed: bool,
    },
    /// The key was seen with other content and the message asked for
    /// [`ChangedContent::NewVersion`]: stored as `id`, superseding `previous`.
    NewVersion {
        id: Uuid,
        previous: Uuid,
        received_at: DateTime<Utc>,
    },
}

impl Ingested {
    pub fn id(&self) -> Uuid {
        match self {
            Ingested::New { id, .. } | Ingested::Duplicate { id, .. } | Ingested::NewVersion { id, .. } => *id,
        }
    }
    pub fn is_duplicate(&self) -> bool {
        matches!(self, Ingested::Duplicate { .. })
    }
    /// A duplicate key with other content (held for review or a new version).
    pub fn is_changed_duplicate(&self) -> bool {
        matches!(
            self,
            Ingested::Duplicate { changed: true, .. } | Ingested::NewVersion { .. }
        )
    }
}

/// Longest idempotency key stored as it is. A longer one is stored as the
/// SHA-256 of itself: a btree index row holds at most 2,704 bytes, and a key
/// the index refuses would make a message impossible to store (hardening item 2).
const MAX_KEY_BYTES: usize = 512;

/// The key as the `message_key` table holds it.
pub fn stored_key(source_key: &str) -> std::borrow::Cow<'_, str> {
    if source_key.len() <= MAX_KEY_BYTES {
        return std::borrow::Cow::Borrowed(source_key);
    }
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(source_key.as_bytes());
    // Keep a readable prefix (the connector and sender), then the hash.
    let mut cut = 64;
    while !source_key.is_char_boundary(cut) {
        cut -= 1;
    }
    std::borrow::Cow::Owned(format!("{}…sha256:{}", &source_key[..cut], hex::encode(digest)))
}

/// The first copy under a key: its id, when it came, its content hash.
type FirstCopy = (Uuid, DateTime<Utc>, Option<Vec<u8>>);

/// Longest metadata value (type, control id) kept in an indexed column.
const MAX_COLUMN_BYTES: usize = 256;

/// A sender's value made fit for an indexed text column: no NUL (PostgreSQL
/// text cannot hold it; the raw bytes keep it) and at most
/// [`MAX_COLUMN_BYTES`] (an index row has a size limit). The raw bytes are
/// always stored whole; these columns only find them.
pub fn fit_column(value: &str) -> String {
    let mut s = if value.contains('\0') {
        value.replace('\0', "\u{FFFD}")
    } else {
        value.to_owned()
    };
    if s.len() > MAX_COLUMN_BYTES {
        let mut cut = MAX_COLUMN_BYTES;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

fn content_hash(raw: &[u8]) -> Vec<u8> {
    use sha2::Digest as _;
    sha2::Sha256::digest(raw).to_vec()
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

/// Messages whose keys [`MessageStore::claim_batch`] claimed, their rows
/// not yet written.
#[derive(Debug)]
pub struct ClaimedBatch<'a> {
    msgs: &'a [NewMessage<'a>],
    ingested: Vec<Ingested>,
    /// Indexes into `msgs` of the messages whose rows are to be written.
    fresh: Vec<usize>,
    ids: Vec<Uuid>,
    keys: Vec<std::borrow::Cow<'a, str>>,
    received_at: DateTime<Utc>,
}

impl ClaimedBatch<'_> {
    /// What became of each message, in input order (as [`MessageStore::ingest_batch`] says).
    pub fn ingested(&self) -> &[Ingested] {
        &self.ingested
    }

    /// Writes the new messages' rows in one statement: those in `applied`
    /// (message id, the patient it concerned) as processed, the others as
    /// received. Returns the entries of `applied` that are not among them
    /// (stored before: for [`MessageStore::mark_processed_many`]).
    pub async fn write(
        &self,
        conn: &mut PgConnection,
        applied: Vec<(Uuid, Option<Uuid>)>,
    ) -> Result<Vec<(Uuid, Option<Uuid>)>> {
        let mine: std::collections::HashSet<Uuid> = self.fresh.iter().map(|&i| self.ids[i]).collect();
        let (processed, before): (HashMap<Uuid, Option<Uuid>>, Vec<_>) = {
            let (m, b): (Vec<_>, Vec<_>) = applied.into_iter().partition(|(m, _)| mine.contains(m));
            (m.into_iter().collect(), b)
        };
        if self.fresh.is_empty() {
            return Ok(before);
        }
        let msgs = self.msgs;
        let pick = |f: &dyn Fn(&NewMessage<'_>) -> Option<String>| -> Vec<Option<String>> {
            self.fresh.iter().map(|&i| f(&msgs[i])).collect()
        };
        let ids: Vec<Uuid> = self.fresh.iter().map(|&i| self.ids[i]).collect();
        let keys: Vec<&str> = self.fresh.iter().map(|&i| self.keys[i].as_ref()).collect();
        let raws: Vec<&[u8]> = self.fresh.iter().map(|&i| msgs[i].raw).collect();
        let done: Vec<bool> = ids.iter().map(|id| processed.contains_key(id)).collect();
        let patients: Vec<Option<Uuid>> = ids.iter().map(|id| processed.get(id).copied().flatten()).collect();
        sqlx::query(
            "INSERT INTO message (id, received_at, connector, protocol, message_type, control_id,
                                  source_key, status, origin, raw, processed_at, patient_id)
             SELECT i, $2, c, p, t, ci, k, CASE WHEN d THEN 'processed' ELSE 'received' END, o, r,
                    CASE WHEN d THEN clock_timestamp() END, pt
               FROM UNNEST($1::uuid[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
                           $8::text[], $9::bytea[], $10::bool[], $11::uuid[]) AS x(i, c, p, t, ci, k, o, r, d, pt)",
        )
        .bind(&ids)
        .bind(self.received_at)
        .bind(pick(&|m| Some(m.connector.to_owned())))
        .bind(pick(&|m| Some(m.protocol.to_owned())))
        .bind(pick(&|m| m.message_type.map(fit_column)))
        .bind(pick(&|m| m.control_id.map(fit_column)))
        .bind(&keys)
        .bind(pick(&|m| m.origin.map(str::to_owned)))
        .bind(&raws)
        .bind(&done)
        .bind(&patients)
        .execute(&mut *conn)
        .await?;
        Ok(before)
    }
}

impl MessageStore {
    /// Stores a message unless its source key was seen before. Run it inside the
    /// transaction whose commit is the point after which the sender is acknowledged.
    pub async fn ingest(conn: &mut PgConnection, msg: &NewMessage<'_>) -> Result<Ingested> {
        Ok(Self::ingest_batch(conn, std::slice::from_ref(msg))
            .await?
            .pop()
            .unwrap_or(Ingested::New {
                id: Uuid::nil(),
                received_at: Utc::now(),
            }))
    }

    /// [`ingest`](Self::ingest) for many messages in two statements, for a
    /// receiver that commits several messages per transaction (group commit).
    /// The result is in input order; a key that appears twice in `msgs` is
    /// new the first time and a duplicate after.
    pub async fn ingest_batch(conn: &mut PgConnection, msgs: &[NewMessage<'_>]) -> Result<Vec<Ingested>> {
        let claimed = Self::claim_batch(conn, msgs).await?;
        claimed.write(conn, Vec::new()).await?;
        Ok(claimed.ingested)
    }

    /// The first half of [`ingest_batch`](Self::ingest_batch): the keys are
    /// claimed (new, duplicate or new version decided, conflicts recorded)
    /// and the new messages' rows are left to [`ClaimedBatch::write`] in
    /// the same transaction. A pipeline that files records itself writes
    /// them after applying them, already processed: one insert per row
    /// instead of an insert and an update.
    pub async fn claim_batch<'a>(conn: &mut PgConnection, msgs: &'a [NewMessage<'a>]) -> Result<ClaimedBatch<'a>> {
        let received_at = Utc::now();
        let ids: Vec<Uuid> = msgs.iter().map(|_| Uuid::now_v7()).collect();
        let keys: Vec<std::borrow::Cow<'_, str>> = msgs.iter().map(|m| stored_key(m.source_key)).collect();
        let hashes: Vec<Vec<u8>> = msgs.iter().map(|m| content_hash(m.raw)).collect();
        let claimed: Vec<(String, Uuid)> = sqlx::query_as(
            "INSERT INTO message_key (source_key, message_id, received_at, content_sha256)
             SELECT k, i, $3, h FROM UNNEST($1::text[], $2::uuid[], $4::bytea[]) AS t(k, i, h)
             ON CONFLICT (source_key) DO NOTHING RETURNING source_key, message_id",
        )
        .bind(&keys)
        .bind(&ids)
        .bind(received_at)
        .bind(&hashes)
        .fetch_all(&mut *conn)
        .await?;
        let claimed: std::collections::HashMap<String, Uuid> = claimed.into_iter().collect();
        let mut out = Vec::with_capacity(msgs.len());
        let mut fresh = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut duplicates = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            match claimed.get(key.as_ref()) {
                Some(id) if *id == ids[i] && seen.insert(key.as_ref()) => {
                    out.push(Ingested::New { id: *id, received_at });
                    fresh.push(i);
                }
                _ => {
                    duplicates.push(i);
                    out.push(Ingested::Duplicate {
                        id: Uuid::nil(),
                        received_at,
                        changed: false,
                    });
                }
            }
        }
        if !duplicates.is_empty() {
            // Duplicates name the first copy; the content hash tells a resend
            // from a changed message under the same key.
            let dup_keys: Vec<&str> = duplicates.iter().map(|&i| keys[i].as_ref()).collect();
            let firsts: Vec<(String, FirstCopy)> = sqlx::query_as::<_, (String, Uuid, DateTime<Utc>, Option<Vec<u8>>)>(
                "SELECT source_key, message_id, received_at, content_sha256 FROM message_key
                  WHERE source_key = ANY($1)",
            )
            .bind(&dup_keys)
            .fetch_all(&mut *conn)
            .await?
            .into_iter()
            .map(|(k, i, t, h)| (k, (i, t, h)))
            .collect();
            let mut current: std::collections::HashMap<String, FirstCopy> = firsts.into_iter().collect();
            // (message index, the copy it differs from, applied as a new version)
            let mut conflicts = Vec::new();
            for &i in &duplicates {
                let Some((id, at, hash)) = current.get(keys[i].as_ref()).cloned() else {
                    continue;
                };
                // Keys stored before hashes were kept have none: not judged.
                let changed = hash.as_ref().is_some_and(|h| *h != hashes[i]);
                if changed && msgs[i].on_changed == ChangedContent::NewVersion {
                    out[i] = Ingested::NewVersion {
                        id: ids[i],
                        previous: id,
                        received_at,
                    };
                    fresh.push(i);
                    conflicts.push((i, id, true));
                    // A later copy in this batch is judged against this version.
                    current.insert(keys[i].to_string(), (ids[i], received_at, Some(hashes[i].clone())));
                    continue;
                }
                out[i] = Ingested::Duplicate {
                    id,
                    received_at: at,
                    changed,
                };
                if changed {
                    conflicts.push((i, id, false));
                }
            }
            for (i, first, applied) in conflicts {
                let m = &msgs[i];
                sqlx::query(
                    "INSERT INTO message_conflict (source_key, message_id, connector, origin, content_sha256, raw,
                                                   status, version_id)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .bind(keys[i].as_ref())
                .bind(first)
                .bind(m.connector)
                .bind(m.origin)
                .bind(&hashes[i])
                .bind(m.raw)
                .bind(if applied { "applied" } else { "open" })
                .bind(applied.then_some(ids[i]))
                .execute(&mut *conn)
                .await?;
                if applied {
                    sqlx::query(
                        "UPDATE message_key SET message_id = $2, content_sha256 = $3, received_at = $4
                          WHERE source_key = $1",
                    )
                    .bind(keys[i].as_ref())
                    .bind(ids[i])
                    .bind(&hashes[i])
                    .bind(received_at)
                    .execute(&mut *conn)
                    .await?;
                }
            }
        }
        Ok(ClaimedBatch {
            msgs,
            ingested: out,
            fresh,
            ids,
            keys,
            received_at,
        })
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

    /// [`mark_processed`](Self::mark_processed) for many messages in one
    /// statement: `(message id, patient id)`.
    pub async fn mark_processed_many(conn: &mut PgConnection, done: &[(Uuid, Option<Uuid>)]) -> Result<()> {
        if done.is_empty() {
            return Ok(());
        }
        let ids: Vec<Uuid> = done.iter().map(|(m, _)| *m).collect();
        let patients: Vec<Option<Uuid>> = done.iter().map(|(_, p)| *p).collect();
        // `id = ANY($1)`, not a join with UNNEST: once PostgreSQL plans
        // this prepared statement generically, it joins the partitioned
        // table by hash over a scan of every row (measured: 62 ms for 150
        // messages in a partition of 80,000, growing with it), where the
        // array finds the rows through each partition's key (3.5 ms).
        sqlx::query(
            "UPDATE message m SET status = 'processed', processed_at = clock_timestamp(), error = NULL,
                    patient_id = COALESCE(($2::uuid[])[array_position($1::uuid[], m.id)], m.patient_id)
              WHERE m.id = ANY($1)",
        )
        .bind(&ids)
        .bind(&patients)
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
        .bind(stored_key(source_key).as_ref())
        .fetch_optional(pool)
        .await?)
    }

    /// [`drop_partitions`](Self::drop_partitions) by a person (`actor`), each
    /// dropped partition a `delete` on the audit trail, in one transaction.
    pub async fn apply_retention(pool: &PgPool, keep_months: i32, actor: &str) -> Result<Vec<String>> {
        let mut tx = pool.begin().await?;
        let dropped = Self::drop_partitions(&mut tx, keep_months).await?;
        let entries: Vec<crate::AuditEntry> = dropped
            .iter()
            .map(|p| {
                crate::AuditEntry::new(
                    crate::ActorKind::User,
                    actor,
                    crate::Action::Delete,
                    "message_partition",
                )
                .entity(p)
                .detail(serde_json::json!({ "keep_months": keep_months }))
            })
            .collect();
        crate::AuditLog::append(&mut tx, &entries).await?;
        tx.commit().await?;
        Ok(dropped)
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
