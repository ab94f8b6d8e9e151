//! The audit trail: append-only and hash-chained.
//!
//! Row n's hash is `SHA-256(hash(n-1) || canonical(n))`, where `canonical` is the
//! compact JSON array of the row's fields (see [`CanonicalRow::bytes`]). Appending
//! locks the single chain-head row until the transaction ends, so the chain
//! follows commit order and two writers can never fork it. Keep the append late
//! in a transaction: the head lock is held until commit.

use chrono::{DateTime, SubsecRound, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::Result;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ActorKind {
    User,
    System,
    Connector,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Create,
    Read,
    Update,
    Delete,
    Ingest,
    Send,
    Replay,
}

impl ActorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ActorKind::User => "user",
            ActorKind::System => "system",
            ActorKind::Connector => "connector",
        }
    }
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Read => "read",
            Action::Update => "update",
            Action::Delete => "delete",
            Action::Ingest => "ingest",
            Action::Send => "send",
            Action::Replay => "replay",
        }
    }
}

/// One audited action. Never put PHI in `detail`: ids and codes only.
#[derive(Debug, Clone)]
pub struct AuditEntry {
    pub actor_kind: ActorKind,
    pub actor_id: String,
    pub action: Action,
    pub entity_type: String,
    pub entity_id: Option<String>,
    /// The inbound message that caused the action (provenance).
    pub message_id: Option<Uuid>,
    /// Remote address or topic the action came from.
    pub origin: Option<String>,
    /// Free JSON text with ids and codes (stored as text so its hash is byte-exact).
    pub detail: Option<String>,
}

impl AuditEntry {
    pub fn new(
        actor_kind: ActorKind,
        actor_id: impl Into<String>,
        action: Action,
        entity_type: impl Into<String>,
    ) -> Self {
        AuditEntry {
            actor_kind,
            actor_id: actor_id.into(),
            action,
            entity_type: entity_type.into(),
            entity_id: None,
            message_id: None,
            origin: None,
            detail: None,
        }
    }
    pub fn entity(mut self, id: impl ToString) -> Self {
        self.entity_id = Some(id.to_string());
        self
    }
    pub fn message(mut self, id: Option<Uuid>) -> Self {
        self.message_id = id;
        self
    }
    pub fn origin(mut self, origin: impl Into<String>) -> Self {
        self.origin = Some(origin.into());
        self
    }
    pub fn detail(mut self, detail: serde_json::Value) -> Self {
        self.detail = Some(detail.to_string());
        self
    }
}

/// A row as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AuditRow {
    pub seq: i64,
    pub at: DateTime<Utc>,
    pub actor_kind: String,
    pub actor_id: String,
    pub action: String,
    pub entity_type: String,
    pub entity_id: Option<String>,
    pub message_id: Option<Uuid>,
    pub origin: Option<String>,
    pub detail: Option<String>,
    pub prev_hash: Vec<u8>,
    pub hash: Vec<u8>,
}

/// The first row where the chain does not hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainBreak {
    pub seq: i64,
    pub reason: String,
}

/// Outcome of [`AuditLog::verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verification {
    pub rows: u64,
    pub first_break: Option<ChainBreak>,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct AuditLog;

/// The fields a row's hash covers, borrowed from an entry or a stored row.
#[derive(Debug, Clone, Copy)]
pub struct CanonicalRow<'a> {
    pub seq: i64,
    pub at: DateTime<Utc>,
    pub actor_kind: &'a str,
    pub actor_id: &'a str,
    pub action: &'a str,
    pub entity_type: &'a str,
    pub entity_id: Option<&'a str>,
    pub message_id: Option<Uuid>,
    pub origin: Option<&'a str>,
    pub detail: Option<&'a str>,
}

impl CanonicalRow<'_> {
    /// The bytes hashed after the previous hash: a compact JSON array, with the
    /// time as integer microseconds so no time-zone or format can change it.
    pub fn bytes(&self) -> Vec<u8> {
        serde_json::json!([
            self.seq,
            self.at.timestamp_micros(),
            self.actor_kind,
            self.actor_id,
            self.action,
            self.entity_type,
            self.entity_id,
            self.message_id.map(|m| m.to_string()),
            self.origin,
            self.detail,
        ])
        .to_string()
        .into_bytes()
    }
}

impl AuditRow {
    fn canonical(&self) -> CanonicalRow<'_> {
        CanonicalRow {
            seq: self.seq,
            at: self.at,
            actor_kind: &self.actor_kind,
            actor_id: &self.actor_id,
            action: &self.action,
            entity_type: &self.entity_type,
            entity_id: self.entity_id.as_deref(),
            message_id: self.message_id,
            origin: self.origin.as_deref(),
            detail: self.detail.as_deref(),
        }
    }
}

fn chain_hash(prev: &[u8], canonical: &[u8]) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(prev);
    h.update(canonical);
    h.finalize().to_vec()
}

impl AuditLog {
    /// Appends entries to the chain inside the caller's transaction (a
    /// savepoint of it), or in a transaction of its own when the connection
    /// has none: the head row's lock must last until the rows are written,
    /// else two appends could take the same sequence number.
    pub async fn append(conn: &mut PgConnection, entries: &[AuditEntry]) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        Self::append_locked(&mut tx, entries).await?;
        tx.commit().await?;
        Ok(())
    }

    /// [`append`](Self::append) inside the caller's transaction itself,
    /// without a savepoint of its own: the set-wise paths (a pipeline batch,
    /// an ingress batch) keep savepoints for the retry pass only.
    pub async fn append_in(tx: &mut sqlx::Transaction<'_, sqlx::Postgres>, entries: &[AuditEntry]) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        Self::append_locked(tx, entries).await
    }

    async fn append_locked(conn: &mut PgConnection, entries: &[AuditEntry]) -> Result<()> {
        let (mut seq, mut prev): (i64, Vec<u8>) =
            sqlx::query_as("SELECT seq, hash FROM audit_chain_head WHERE id = 1 FOR UPDATE")
                .fetch_one(&mut *conn)
                .await?;
        // PostgreSQL keeps microseconds: hash exactly what will be read back.
        let at = Utc::now().trunc_subsecs(6);
        let mut seqs = Vec::with_capacity(entries.len());
        let mut ats = Vec::with_capacity(entries.len());
        let mut kinds = Vec::with_capacity(entries.len());
        let mut actors = Vec::with_capacity(entries.len());
        let mut actions = Vec::with_capacity(entries.len());
        let mut etypes = Vec::with_capacity(entries.len());
        let mut eids = Vec::with_capacity(entries.len());
        let mut mids = Vec::with_capacity(entries.len());
        let mut origins = Vec::with_capacity(entries.len());
        let mut details = Vec::with_capacity(entries.len());
        let mut prevs = Vec::with_capacity(entries.len());
        let mut hashes = Vec::with_capacity(entries.len());
        for e in entries {
            seq += 1;
            let canonical = CanonicalRow {
                seq,
                at,
                actor_kind: e.actor_kind.as_str(),
                actor_id: &e.actor_id,
                action: e.action.as_str(),
                entity_type: &e.entity_type,
                entity_id: e.entity_id.as_deref(),
                message_id: e.message_id,
                origin: e.origin.as_deref(),
                detail: e.detail.as_deref(),
            }
            .bytes();
            let hash = chain_hash(&prev, &canonical);
            seqs.push(seq);
            ats.push(at);
            kinds.push(e.actor_kind.as_str());
            actors.push(e.actor_id.as_str());
            actions.push(e.action.as_str());
            etypes.push(e.entity_type.as_str());
            eids.push(e.entity_id.as_deref());
            mids.push(e.message_id);
            origins.push(e.origin.as_deref());
            details.push(e.detail.as_deref());
            prevs.push(std::mem::replace(&mut prev, hash.clone()));
            hashes.push(hash);
        }
        sqlx::query(
            "INSERT INTO audit_log (seq, at, actor_kind, actor_id, action, entity_type, entity_id,
                                    message_id, origin, detail, prev_hash, hash)
             SELECT * FROM UNNEST($1::bigint[], $2::timestamptz[], $3::text[], $4::text[], $5::text[],
                                  $6::text[], $7::text[], $8::uuid[], $9::text[], $10::text[],
                                  $11::bytea[], $12::bytea[])",
        )
        .bind(&seqs)
        .bind(&ats)
        .bind(&kinds)
        .bind(&actors)
        .bind(&actions)
        .bind(&etypes)
        .bind(&eids)
        .bind(&mids)
        .bind(&origins)
        .bind(&details)
        .bind(&prevs)
        .bind(&hashes)
        .execute(&mut *conn)
        .await?;
        sqlx::query("UPDATE audit_chain_head SET seq = $1, hash = $2 WHERE id = 1")
            .bind(seq)
            .bind(&prev)
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    /// Walks the whole chain in order and names the first row that does not hold:
    /// a changed field, a changed hash, a missing or inserted row.
    pub async fn verify(pool: &PgPool) -> Result<Verification> {
        const PAGE: i64 = 5_000;
        let mut prev = vec![0u8; 32];
        let mut expected_seq = 1i64;
        let mut rows = 0u64;
        loop {
            let page: Vec<AuditRow> = sqlx::query_as("SELECT * FROM audit_log WHERE seq >= $1 ORDER BY seq LIMIT $2")
                .bind(expected_seq)
                .bind(PAGE)
                .fetch_all(pool)
                .await?;
            let done = (page.len() as i64) < PAGE;
            for row in page {
                rows += 1;
                if let Some(reason) = check_row(&row, expected_seq, &prev) {
                    return Ok(Verification {
                        rows,
                        first_break: Some(ChainBreak { seq: row.seq, reason }),
                    });
                }
                prev = row.hash;
                expected_seq += 1;
            }
            if done {
                break;
            }
        }
        // The head must agree with the last row, or rows were cut off the end.
        let (head_seq, head_hash): (i64, Vec<u8>) =
            sqlx::query_as("SELECT seq, hash FROM audit_chain_head WHERE id = 1")
                .fetch_one(pool)
                .await?;
        if head_seq != expected_seq - 1 || head_hash != prev {
            return Ok(Verification {
                rows,
                first_break: Some(ChainBreak {
                    seq: expected_seq,
                    reason: format!("chain head says {head_seq} rows, the trail has {}", expected_seq - 1),
                }),
            });
        }
        Ok(Verification {
            rows,
            first_break: None,
        })
    }

    /// Entries about one entity or caused by one message, oldest first.
    pub async fn for_message(pool: &PgPool, message_id: Uuid) -> Result<Vec<AuditRow>> {
        Ok(
            sqlx::query_as("SELECT * FROM audit_log WHERE message_id = $1 ORDER BY seq")
                .bind(message_id)
                .fetch_all(pool)
                .await?,
        )
    }
}

fn check_row(row: &AuditRow, expected_seq: i64, prev: &[u8]) -> Option<String> {
    if row.seq != expected_seq {
        return Some(format!("row {expected_seq} is missing (next row is {})", row.seq));
    }
    if row.prev_hash != prev {
        return Some("prev_hash does not match the previous row's hash".to_owned());
    }
    if chain_hash(prev, &row.canonical().bytes()) != row.hash {
        return Some("content does not match its hash (row changed after it was written)".to_owned());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_form_is_stable_and_covers_every_field() {
        let at = DateTime::from_timestamp_micros(1_700_000_000_123_456).expect("time");
        let row = CanonicalRow {
            seq: 1,
            at,
            actor_kind: "system",
            actor_id: "carehub",
            action: "create",
            entity_type: "patient",
            entity_id: Some("x"),
            message_id: None,
            origin: None,
            detail: None,
        };
        let a = row.bytes();
        let b = CanonicalRow {
            entity_id: Some("y"),
            ..row
        }
        .bytes();
        assert_eq!(
            String::from_utf8(a.clone()).expect("utf8"),
            r#"[1,1700000000123456,"system","carehub","create","patient","x",null,null,null]"#
        );
        assert_ne!(chain_hash(&[0; 32], &a), chain_hash(&[0; 32], &b));
    }
}

/// Appends audit entries for many concurrent callers in shared transactions
/// (group commit): the chain head is locked once per batch instead of once
/// per caller. Each caller's `append` returns once its entries committed, so
/// an answer that depends on its audit entry (a FHIR read) is only sent after it.
#[derive(Debug, Clone)]
pub struct AuditWriter {
    commit: crate::group_commit::GroupCommit<Vec<AuditEntry>, std::result::Result<(), String>>,
}

/// Most callers one batch takes.
const WRITER_BATCH: usize = 512;

impl AuditWriter {
    /// Starts the writer's task on `pool`.
    pub fn start(pool: PgPool) -> Self {
        let commit = crate::group_commit::GroupCommit::start("audit writer", WRITER_BATCH, 1, move |batch| {
            let pool = pool.clone();
            async move {
                let entries: Vec<AuditEntry> = batch.iter().flatten().cloned().collect();
                let result = async {
                    let mut conn = pool.acquire().await?;
                    AuditLog::append(&mut conn, &entries).await
                }
                .await
                .map_err(|e| e.to_string());
                vec![result; batch.len()]
            }
        });
        AuditWriter { commit }
    }

    /// Appends `entries` and waits until they are committed.
    pub async fn append(&self, entries: Vec<AuditEntry>) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        self.commit
            .submit(entries)
            .await
            .map_err(|e| crate::Error::Unavailable(e.to_string()))?
            .map_err(crate::Error::Unavailable)
    }
}
