use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use carehub_schema::Envelope;
use sqlx::PgConnection;
use uuid::Uuid;

/// An event for the transactional outbox: written by the engine, for the
/// whole batch in one statement, in the transaction that applies it.
#[derive(Debug, Clone)]
pub struct OutboxEvent {
    pub topic: String,
    /// The Kafka key: one key's events stay in order.
    pub key: String,
    pub event: Envelope,
}

/// The events a batch's handlers publish, in order. Shared by the records of
/// one transaction; a record whose writes are undone gives its events back
/// ([`truncate`](Self::truncate) to the [`len`](Self::len) before it).
#[derive(Debug, Clone, Default)]
pub struct OutboxBuffer(Arc<Mutex<Vec<OutboxEvent>>>);

impl OutboxBuffer {
    fn events(&self) -> std::sync::MutexGuard<'_, Vec<OutboxEvent>> {
        // A push cannot leave the vector half-written: a poisoned lock is usable.
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn push(&self, event: OutboxEvent) {
        self.events().push(event);
    }

    pub fn len(&self) -> usize {
        self.events().len()
    }

    pub fn is_empty(&self) -> bool {
        self.events().is_empty()
    }

    pub fn truncate(&self, len: usize) {
        self.events().truncate(len);
    }

    pub fn take(&self) -> Vec<OutboxEvent> {
        std::mem::take(&mut *self.events())
    }
}

/// What a handler knows about the record it handles.
#[derive(Debug, Clone)]
pub struct Context {
    /// The message-store id of the record: stamp it on every canonical write
    /// (`source_message_id`) and audit entry (provenance).
    pub message_id: Uuid,
    /// Where the record came from (`kafka:<topic>`), for the audit trail.
    pub origin: String,
    /// True when an operator replays a dead letter.
    pub replay: bool,
    /// The stored message's bytes, for a record that refers to one ([`Handler::stored`]).
    pub raw: Option<Vec<u8>>,
    /// Where [`publish`](Self::publish) puts the record's outbound events.
    pub outbox: OutboxBuffer,
}

impl Context {
    /// Queues an event for the transactional outbox. It commits with the
    /// record's other writes (the engine writes the batch's events in one
    /// statement before the commit), or not at all.
    pub fn publish(&self, topic: &str, key: &str, event: Envelope) {
        self.outbox.push(OutboxEvent {
            topic: topic.to_owned(),
            key: key.to_owned(),
            event,
        });
    }
}

/// A handled record's result.
#[derive(Debug, Clone, Default)]
pub struct Handled {
    /// The patient the record concerned, indexed on the stored message.
    pub patient_id: Option<Uuid>,
    /// Audit entries for what the handler changed; the engine appends them
    /// after its own `ingest` entry, at the end of the transaction.
    pub audit: Vec<carehub_schema::AuditEntry>,
}

/// Why a handler did not apply a record.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// The record cannot be applied as it is: dead-letter it with this reason.
    /// `code` is bounded (`unknown_type`, `invalid_data`, `unknown_reference`).
    #[error("{code}: {reason}")]
    Rejected { code: &'static str, reason: String },
    /// The store failed; transient failures are retried, others dead-lettered.
    #[error(transparent)]
    Store(#[from] carehub_schema::Error),
}

impl From<sqlx::Error> for HandlerError {
    fn from(e: sqlx::Error) -> Self {
        HandlerError::Store(e.into())
    }
}

impl HandlerError {
    pub fn rejected(code: &'static str, reason: impl Into<String>) -> Self {
        HandlerError::Rejected {
            code,
            reason: reason.into(),
        }
    }
}

/// A record that refers to a message an ingress already stored (HL7 v2
/// bytes the MLLP listener took): the record carries the message's id, the
/// message store its bytes. The engine applies the stored message, and
/// duplicates and dead letters are judged on it.
#[derive(Debug, Clone)]
pub struct StoredRef {
    /// The message-store id.
    pub message_id: Uuid,
    /// Connector that received it (`hl7_mllp`), for the audit trail.
    pub connector: &'static str,
    /// The remote address it came from.
    pub origin: Option<String>,
}

/// One pipeline's logic. It runs inside the engine's transaction: everything
/// it writes (canonical rows, outbox events, audit entries) commits together
/// or not at all, so it needs no idempotency of its own.
#[async_trait]
pub trait Handler: Send + Sync {
    /// Stable name: the consumer identity for deduplication and dead letters.
    fn name(&self) -> &str;

    /// Event types this pipeline accepts; others are dead-lettered as `unknown_type`.
    fn accepts(&self, event_type: &str) -> bool;

    /// Event types this pipeline passes over: acknowledged with no effect and
    /// not stored (a pipeline that follows a shared event topic for one type).
    fn ignores(&self, _event_type: &str) -> bool {
        false
    }

    /// The stored message the record refers to. `None` (the default) files
    /// the Kafka record itself in the message store, keyed by topic and event id.
    fn stored(&self, _event: &Envelope) -> Option<StoredRef> {
        None
    }

    async fn handle(&self, conn: &mut PgConnection, ctx: &Context, event: &Envelope) -> Result<Handled, HandlerError>;

    /// Applies a batch's records in order, in the engine's set pass (no
    /// savepoints: any error undoes the batch, which the engine then applies
    /// record by record with [`handle`](Self::handle)). The default calls
    /// `handle` for each; a pipeline that can write its rows set-wise (one
    /// statement per table for the batch) overrides it.
    async fn handle_batch(
        &self,
        conn: &mut PgConnection,
        records: &[(Context, &Envelope)],
    ) -> Result<Vec<Handled>, HandlerError> {
        let mut out = Vec::with_capacity(records.len());
        for (ctx, event) in records {
            out.push(self.handle(conn, ctx, event).await?);
        }
        Ok(out)
    }

    /// Called after the engine dead-lettered `event` (in the same
    /// transaction; the handler's own writes were undone): a pipeline that
    /// owes its source an answer (an HL7 application ACK) writes it here,
    /// through the outbox. The default does nothing.
    async fn rejected(
        &self,
        _conn: &mut PgConnection,
        _ctx: &Context,
        _event: &Envelope,
        _code: &str,
        _reason: &str,
    ) -> Result<(), HandlerError> {
        Ok(())
    }
}
