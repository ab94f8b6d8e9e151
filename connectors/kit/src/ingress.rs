//! [`Ingress`]: the one way a connector stores what it receives before it
//! acknowledges it (MLLP ACK, HTTP 2xx, DIMSE response, webhook 2xx).
//!
//! One group-committed PostgreSQL transaction writes, for every message
//! taken: the message-store row (raw bytes, idempotency key, content hash),
//! and then either its onward record in the transactional outbox (accepted)
//! or its dead letter and audit entry (refused). The broker is not in the
//! acknowledgement path: PostgreSQL down → never acknowledged; broker down →
//! acknowledged once stored, and the outbox relay publishes it when the
//! broker is back (the pipeline applies it exactly once).
//!
//! Same key, same content hash: a duplicate, answered as before with no
//! second effect. Same key, other content: a changed duplicate, recorded in
//! `message_conflict` (metric `carehub_messages_changed_duplicate_total`,
//! ids in the log); the connector's [`ChangedContent`] says what follows —
//! held for review and not applied, the first copy standing (HL7), or stored
//! as a new version whose onward record goes on like a new message's (DICOM).
//!
//! A batch that fails for one message's sake is tried again a message at a
//! time; a message that can never be stored is kept as a dead letter with
//! its bytes and the reason ([`Stored::Unstorable`]), so nothing is lost and
//! the sender can be told to stop resending it.

use std::sync::Arc;
use std::time::Duration;

use carehub_core::internal_events::{ChangedDuplicate, DeadLettered};
use carehub_schema::{
    Action, ActorKind, AuditEntry, AuditLog, ChangedContent, DeadLetters, Envelope, GroupCommit, Ingested,
    MessageStore, NewDeadLetter, NewMessage, Outbox,
};
use sqlx::PgPool;
use uuid::Uuid;

/// One message a connector took, judged before it is stored.
#[derive(Debug, Clone)]
pub struct Arrival {
    /// The idempotency key: the same message again has the same key.
    pub key: String,
    /// The onward record's Kafka key: one sender's messages stay in order.
    pub partition_key: String,
    pub message_type: Option<String>,
    pub control_id: Option<String>,
    /// The sender's address (`10.0.0.1:51234`).
    pub peer: String,
    /// Where it came from (`mllp:10.0.0.1:51234`), for the audit trail.
    pub origin: String,
    pub raw: Vec<u8>,
    pub judgement: Judgement,
}

/// What the connector made of a message before storing it.
#[derive(Debug, Clone, PartialEq)]
pub enum Judgement {
    /// Goes on: its onward record is written to the outbox.
    Accept,
    /// Stored, marked failed and dead-lettered with the reason; no onward record.
    Refuse {
        /// A bounded error code (`invalid_data`, `unknown_type`, …).
        code: &'static str,
        reason: String,
        /// The connector's own detail for the audit entry (no PHI).
        detail: serde_json::Value,
    },
}

/// What became of a message.
#[derive(Debug, Clone, PartialEq)]
pub enum Stored {
    /// Stored now, with its onward record or its dead letter.
    New { message_id: Uuid },
    /// Stored before: no second effect. `changed`: with other content, held
    /// for review ([`ChangedContent::HoldForReview`]).
    Duplicate { message_id: Uuid, changed: bool },
    /// Stored before with other content, and stored now as a new version
    /// ([`ChangedContent::NewVersion`]) with its onward record or dead letter.
    NewVersion { message_id: Uuid, previous: Uuid },
    /// The store refused this content for good: kept as a dead letter.
    Unstorable { dead_letter_id: i64, reason: String },
}

/// Storage is unavailable: do not acknowledge, the sender tries again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unavailable(pub String);

/// Builds the onward record of a stored message.
pub type Onward = Arc<dyn Fn(Uuid, &Arrival) -> Envelope + Send + Sync>;

/// How an [`Ingress`] is set up.
pub struct IngressSpec {
    pub pool: PgPool,
    /// The connector's name (`hl7_mllp`): message store, audit, metrics.
    pub connector: &'static str,
    /// The message store's protocol column (`hl7v2`).
    pub protocol: &'static str,
    /// The topic of the onward records.
    pub topic: String,
    /// Who owns the dead letters (the pipeline that would have applied them):
    /// `carehub dlq replay` hands them back to it.
    pub consumer: String,
    /// Transactions at a time.
    pub workers: usize,
    /// Most messages one transaction takes.
    pub max_batch: usize,
    /// Longest wait for the store before the message is answered unavailable.
    pub store_timeout: Duration,
    /// Same key, other content: held for review or a new version.
    pub on_changed: ChangedContent,
    pub onward: Onward,
}

impl std::fmt::Debug for IngressSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IngressSpec")
            .field("connector", &self.connector)
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

/// Stores messages before they are acknowledged (see the module's documentation).
#[derive(Clone)]
pub struct Ingress {
    commit: GroupCommit<Arrival, Result<Stored, Unavailable>>,
    connector: &'static str,
    store_timeout: Duration,
}

impl std::fmt::Debug for Ingress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ingress").field("connector", &self.connector).finish()
    }
}

impl Ingress {
    pub fn start(spec: IngressSpec) -> Self {
        let (connector, store_timeout, workers, max_batch) =
            (spec.connector, spec.store_timeout, spec.workers, spec.max_batch);
        let target = Arc::new(spec);
        let commit = GroupCommit::start("message store", max_batch, workers, move |batch: Vec<Arrival>| {
            let target = target.clone();
            async move { store_batch(&target, batch).await }
        });
        Ingress {
            commit,
            connector,
            store_timeout,
        }
    }

    /// Stores `arrival`; `Ok` means it is durable and may be acknowledged.
    pub async fn store(&self, arrival: Arrival) -> Result<Stored, Unavailable> {
        match tokio::time::timeout(self.store_timeout, self.commit.submit(arrival)).await {
            Ok(Ok(result)) => result,
            Ok(Err(stopped)) => Err(Unavailable(stopped.to_string())),
            Err(_) => Err(Unavailable(format!(
                "not stored within {} ms",
                self.store_timeout.as_millis()
            ))),
        }
    }
}

/// Why a store transaction failed: storage is down (retry later), or this
/// content can never be stored.
enum Failure {
    Unavailable(Unavailable),
    Refused(String),
}

fn failure(what: &str) -> impl FnOnce(carehub_schema::Error) -> Failure + '_ {
    move |e| {
        if e.is_transient() {
            Failure::Unavailable(Unavailable(format!("{what}: {e}")))
        } else {
            // The database answered and refused this content: retrying cannot help.
            Failure::Refused(format!(
                "the {what} refused the message ({})",
                e.code().unwrap_or("no SQLSTATE")
            ))
        }
    }
}

fn down(what: &'static str) -> impl FnOnce(sqlx::Error) -> Failure {
    move |e| Failure::Unavailable(Unavailable(format!("{what}: {e}")))
}

async fn store_batch(spec: &IngressSpec, batch: Vec<Arrival>) -> Vec<Result<Stored, Unavailable>> {
    let items: Vec<&Arrival> = batch.iter().collect();
    match write(spec, &items).await {
        Ok(stored) => stored.into_iter().map(Ok).collect(),
        // One message must not hold the others hostage: a failed batch is
        // tried again one message at a time, so only what fails alone is refused.
        Err(_) if items.len() > 1 => {
            let mut out = Vec::with_capacity(items.len());
            for item in &items {
                out.push(write_alone(spec, item).await);
            }
            out
        }
        Err(_) => vec![write_alone(spec, items[0]).await],
    }
}

async fn write_alone(spec: &IngressSpec, item: &Arrival) -> Result<Stored, Unavailable> {
    match write(spec, &[item]).await {
        Ok(mut stored) => Ok(stored.remove(0)),
        Err(Failure::Unavailable(u)) => Err(u),
        Err(Failure::Refused(reason)) => {
            let mut tx = spec
                .pool
                .begin()
                .await
                .map_err(|e| Unavailable(format!("PostgreSQL: {e}")))?;
            let id = dead_letter(&mut tx, spec, item, &item.raw, None, None, "store_error", &reason)
                .await
                .map_err(|e| Unavailable(format!("dead letters: {e}")))?;
            let audit = AuditEntry::new(ActorKind::Connector, spec.connector, Action::Ingest, "dead_letter")
                .entity(id)
                .origin(item.origin.clone())
                .detail(serde_json::json!({ "error_code": "store_error" }));
            AuditLog::append(&mut tx, &[audit])
                .await
                .map_err(|e| Unavailable(format!("audit trail: {e}")))?;
            tx.commit()
                .await
                .map_err(|e| Unavailable(format!("PostgreSQL commit: {e}")))?;
            announce(spec, &[("store_error", id)]);
            Ok(Stored::Unstorable {
                dead_letter_id: id,
                reason,
            })
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn dead_letter(
    conn: &mut sqlx::PgConnection,
    spec: &IngressSpec,
    item: &Arrival,
    payload: &[u8],
    event_id: Option<&str>,
    message_id: Option<Uuid>,
    code: &str,
    reason: &str,
) -> Result<i64, carehub_schema::Error> {
    DeadLetters::insert(
        conn,
        &NewDeadLetter {
            consumer: &spec.consumer,
            topic: &spec.topic,
            partition: None,
            offset: None,
            key: Some(item.partition_key.as_bytes()),
            payload,
            event_id,
            message_id,
            error_code: code,
            reason,
        },
    )
    .await
}

fn announce(spec: &IngressSpec, dead_letters: &[(&str, i64)]) {
    for (code, id) in dead_letters {
        DeadLettered {
            pipeline: &spec.consumer,
            error_code: code,
            dead_letter_id: *id,
        }
        .emit();
    }
}

/// One transaction for a batch: new messages into the message store, the
/// accepted ones' records into the outbox, the refused ones into the dead
/// letters; one commit.
async fn write(spec: &IngressSpec, items: &[&Arrival]) -> Result<Vec<Stored>, Failure> {
    let started = std::time::Instant::now();
    let mut tx = spec.pool.begin().await.map_err(down("PostgreSQL"))?;
    let news: Vec<NewMessage<'_>> = items
        .iter()
        .map(|p| NewMessage {
            connector: spec.connector,
            protocol: spec.protocol,
            message_type: p.message_type.as_deref(),
            control_id: p.control_id.as_deref(),
            source_key: &p.key,
            origin: Some(&p.origin),
            raw: &p.raw,
            on_changed: spec.on_changed,
        })
        .collect();
    let ingested = MessageStore::ingest_batch(&mut tx, &news)
        .await
        .map_err(failure("message store"))?;
    let mut out = Vec::with_capacity(items.len());
    let mut audit = Vec::new();
    let mut dead_letters = Vec::new();
    let mut records: Vec<(&str, Envelope)> = Vec::new();
    for (p, ing) in items.iter().zip(&ingested) {
        let message_id = ing.id();
        match *ing {
            Ingested::Duplicate { changed, .. } => {
                if changed {
                    ChangedDuplicate {
                        connector: spec.connector,
                        message_id,
                        new_version: None,
                    }
                    .emit();
                }
                out.push(Stored::Duplicate { message_id, changed });
                continue;
            }
            Ingested::NewVersion { previous, .. } => {
                ChangedDuplicate {
                    connector: spec.connector,
                    message_id: previous,
                    new_version: Some(message_id),
                }
                .emit();
                out.push(Stored::NewVersion { message_id, previous });
            }
            Ingested::New { .. } => out.push(Stored::New { message_id }),
        }
        let envelope = (spec.onward)(message_id, p);
        let (code, reason, detail) = match &p.judgement {
            Judgement::Accept => {
                records.push((&p.partition_key, envelope));
                continue;
            }
            Judgement::Refuse { code, reason, detail } => (*code, reason, detail),
        };
        MessageStore::mark_failed(&mut tx, message_id, reason)
            .await
            .map_err(failure("message store"))?;
        let payload = serde_json::to_vec(&envelope).map_err(|e| Failure::Refused(e.to_string()))?;
        let id = dead_letter(
            &mut tx,
            spec,
            p,
            &payload,
            Some(&envelope.id),
            Some(message_id),
            code,
            reason,
        )
        .await
        .map_err(failure("dead letters"))?;
        let mut detail = detail.clone();
        if let Some(d) = detail.as_object_mut() {
            d.insert("dead_letter".into(), id.into());
            d.insert("error_code".into(), code.into());
        }
        audit.push(
            AuditEntry::new(ActorKind::Connector, spec.connector, Action::Ingest, "message")
                .entity(message_id)
                .message(Some(message_id))
                .origin(p.origin.clone())
                .detail(detail),
        );
        dead_letters.push((code, id));
    }
    let refs: Vec<(&str, &Envelope)> = records.iter().map(|(k, e)| (*k, e)).collect();
    Outbox::enqueue_batch(&mut tx, &spec.topic, &refs)
        .await
        .map_err(failure("outbox"))?;
    if !audit.is_empty() {
        AuditLog::append_in(&mut tx, &audit)
            .await
            .map_err(failure("audit trail"))?;
    }
    let stored = started.elapsed();
    tx.commit().await.map_err(down("PostgreSQL commit"))?;
    // Where a batch's time goes, for tuning (debug level).
    tracing::debug!(
        connector = spec.connector,
        batch = items.len(),
        store_ms = stored.as_secs_f64() * 1e3,
        commit_ms = (started.elapsed() - stored).as_secs_f64() * 1e3,
        "ingress batch"
    );
    announce(spec, &dead_letters);
    Ok(out)
}
