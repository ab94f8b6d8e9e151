use std::sync::Arc;
use std::time::Instant;

use carehub_core::internal_events::{DeadLettered, DuplicateSkipped, MessageProcessed, MessageReceived};
use carehub_schema::{
    Action, ActorKind, AuditEntry, AuditLog, DeadLetters, Envelope, Ingested, MessageStore, NewDeadLetter, NewMessage,
    Outbox, consumed,
};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::handler::OutboxBuffer;
use crate::{Context, Error, Handler, HandlerError, Result};

/// A record as a source delivers it (a Kafka record, or a dead letter replayed).
#[derive(Debug, Clone, Copy)]
pub struct InboundRecord<'a> {
    pub topic: &'a str,
    pub partition: Option<i32>,
    pub offset: Option<i64>,
    pub key: Option<&'a [u8]>,
    pub payload: &'a [u8],
}

/// What happened to one record. Every variant means "acknowledge it".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Processed {
    Applied {
        message_id: Uuid,
    },
    /// An event type the pipeline passes over ([`crate::Handler::ignores`]).
    Skipped,
    /// Already applied by this pipeline: no second effect.
    Duplicate {
        event_id: String,
    },
    /// Stored as a dead letter; the source should also forward it to `<topic>.dlq`.
    DeadLettered {
        id: i64,
        code: &'static str,
        reason: String,
        new: bool,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplayOutcome {
    Applied {
        message_id: Uuid,
    },
    /// The pipeline applied the event in the meantime (redelivered): closed.
    AlreadyApplied,
    /// It fails again; the dead letter stays open with the new reason.
    StillFailing {
        code: &'static str,
        reason: String,
    },
    NotOpen {
        status: String,
    },
}

/// Runs one [`Handler`] over records with exactly-once effects.
#[derive(Clone)]
pub struct Engine {
    pub(crate) pool: PgPool,
    pub(crate) handler: Arc<dyn Handler>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("pipeline", &self.handler.name())
            .finish()
    }
}

pub(crate) const CONNECTOR: &str = "kafka";

/// What a batch reports once it committed (metrics, logs).
pub(crate) enum Emit {
    Received { message_type: String },
    Processed { message_type: String, started: Instant },
    DeadLettered { code: &'static str, id: i64 },
    Duplicate { event_id: String },
}

/// A stored message's status, bytes and its open dead letter of this pipeline.
pub(crate) struct StoredRow {
    pub(crate) status: String,
    pub(crate) raw: Vec<u8>,
    pub(crate) dead_letter: Option<(i64, String, String)>,
}

/// The message `id` of the message store, with its open dead letter for `consumer`.
async fn load_stored(conn: &mut PgConnection, consumer: &str, id: Uuid) -> Result<Option<StoredRow>> {
    type Row = (String, Vec<u8>, Option<i64>, Option<String>, Option<String>);
    let row: Option<Row> = sqlx::query_as(
        "SELECT m.status, m.raw, d.id, d.error_code, d.reason FROM message m
           LEFT JOIN LATERAL (SELECT id, error_code, reason FROM dead_letter
                               WHERE consumer = $1 AND message_id = m.id AND status = 'open'
                               ORDER BY id LIMIT 1) d ON true
          WHERE m.id = $2",
    )
    .bind(consumer)
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.map(|(status, raw, id, code, reason)| StoredRow {
        status,
        raw,
        dead_letter: match (id, code, reason) {
            (Some(id), Some(code), Some(reason)) => Some((id, code, reason)),
            _ => None,
        },
    }))
}

/// Writes the events a transaction's handlers published, in one statement.
pub(crate) async fn write_outbox(conn: &mut PgConnection, outbox: &OutboxBuffer) -> Result<()> {
    let events = outbox.take();
    let rows: Vec<(&str, &str, &Envelope)> = events
        .iter()
        .map(|e| (e.topic.as_str(), e.key.as_str(), &e.event))
        .collect();
    Outbox::enqueue_many(conn, &rows).await?;
    Ok(())
}

pub(crate) fn source_key(rec: &InboundRecord<'_>, env: Option<&Envelope>) -> String {
    match env {
        Some(env) => format!("kafka:{}:{}", rec.topic, env.id),
        // Without an envelope there is no event id: the record's position is its identity.
        None => format!(
            "kafka:{}/{}/{}",
            rec.topic,
            rec.partition.map_or("-".into(), |p| p.to_string()),
            rec.offset.map_or("-".into(), |o| o.to_string())
        ),
    }
}

impl Engine {
    pub fn new(pool: PgPool, handler: Arc<dyn Handler>) -> Self {
        Engine { pool, handler }
    }

    pub fn name(&self) -> &str {
        self.handler.name()
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Handles one record. `Ok` means the record may be acknowledged; `Err`
    /// means storage is unavailable and the record must be delivered again.
    pub async fn process(&self, rec: &InboundRecord<'_>) -> Result<Processed> {
        let mut out = self.process_batch(std::slice::from_ref(rec)).await?;
        Ok(out.pop().unwrap_or(Processed::Skipped))
    }

    /// Handles records in one transaction, in order: one commit and one
    /// audit-chain append for all of them. `Ok` holds one outcome per record,
    /// and every record may be acknowledged; `Err` means storage is
    /// unavailable and nothing of the batch was committed: deliver it all again.
    ///
    /// A batch is first applied set-wise ([`apply_set`](Self::apply_set):
    /// the lookups, claims, message-store updates, outbox rows and audit
    /// entries of all records in one statement each, no savepoints). Only
    /// when a record of it is refused is the batch applied again record by
    /// record, each in a savepoint of its own ([`process_each`](Self::process_each)),
    /// so that one record's rejection (a dead letter) undoes nothing else.
    pub async fn process_batch(&self, recs: &[InboundRecord<'_>]) -> Result<Vec<Processed>> {
        if let Some(out) = self.apply_set(recs).await? {
            return Ok(out);
        }
        self.process_each(recs).await
    }

    /// The retry pass: the batch record by record, each in a savepoint.
    pub(crate) async fn process_each(&self, recs: &[InboundRecord<'_>]) -> Result<Vec<Processed>> {
        let mut tx = self.pool.begin().await?;
        let mut audit = Vec::new();
        let mut emits = Vec::new();
        let outbox = OutboxBuffer::default();
        let mut out = Vec::with_capacity(recs.len());
        for rec in recs {
            sqlx::query("SAVEPOINT record").execute(&mut *tx).await?;
            let published = outbox.len();
            let (processed, keep) = self.process_in(&mut tx, rec, &outbox, &mut audit, &mut emits).await?;
            let end = if keep {
                "RELEASE SAVEPOINT record"
            } else {
                outbox.truncate(published);
                "ROLLBACK TO SAVEPOINT record"
            };
            sqlx::query(end).execute(&mut *tx).await?;
            out.push(processed);
        }
        write_outbox(&mut tx, &outbox).await?;
        AuditLog::append_in(&mut tx, &audit).await?;
        tx.commit().await?;
        self.report(&emits);
        Ok(out)
    }

    /// Reports a committed batch (metrics, logs).
    pub(crate) fn report(&self, emits: &[Emit]) {
        let name = self.handler.name();
        for e in emits {
            match e {
                Emit::Received { message_type } => MessageReceived {
                    connector: name,
                    message_type,
                }
                .emit(),
                Emit::Processed { message_type, started } => MessageProcessed {
                    pipeline: name,
                    message_type,
                    elapsed: started.elapsed(),
                }
                .emit(),
                Emit::DeadLettered { code, id } => DeadLettered {
                    pipeline: name,
                    error_code: code,
                    dead_letter_id: *id,
                }
                .emit(),
                Emit::Duplicate { event_id } => DuplicateSkipped {
                    connector: name,
                    event_id,
                }
                .emit(),
            }
        }
    }

    /// One record of a batch, inside its savepoint. The flag says whether its
    /// writes stay (false: roll back to the savepoint, nothing to keep).
    async fn process_in(
        &self,
        tx: &mut PgConnection,
        rec: &InboundRecord<'_>,
        outbox: &OutboxBuffer,
        audit: &mut Vec<AuditEntry>,
        emits: &mut Vec<Emit>,
    ) -> Result<(Processed, bool)> {
        let started = Instant::now();
        let name = self.handler.name();
        let origin = format!("kafka:{}", rec.topic);
        let (env, rejection) = match Envelope::from_slice(rec.payload) {
            Ok(env) if self.handler.ignores(&env.event_type) => return Ok((Processed::Skipped, false)),
            Ok(env) if self.handler.accepts(&env.event_type) => (Some(env), None),
            Ok(env) => {
                let reason = format!("pipeline {name} does not handle event type {:?}", env.event_type);
                (Some(env), Some(HandlerError::rejected("unknown_type", reason)))
            }
            Err(e) => (None, Some(HandlerError::rejected("invalid_envelope", e.to_string()))),
        };
        // A bounded label: a type this pipeline handles (not refused just
        // above as unknown), else `other`.
        let message_type = match (&env, &rejection) {
            (None, _) => "unparsed",
            (Some(e), None) => e.event_type.as_str(),
            (Some(_), Some(_)) => "other",
        };
        emits.push(Emit::Received {
            message_type: message_type.to_owned(),
        });

        // A record that refers to a message its ingress stored (the bytes are
        // in the message store, not on the topic) is that message; any other
        // record is filed in the message store itself, keyed by topic and event id.
        let mut rejection = rejection;
        let stored = env
            .as_ref()
            .filter(|_| rejection.is_none())
            .and_then(|e| self.handler.stored(e));
        let key = source_key(rec, env.as_ref());
        let mut origin = origin;
        let mut connector = CONNECTOR;
        let mut raw = None;
        let (message_id, seen_before) = match &stored {
            Some(s) => match load_stored(&mut *tx, name, s.message_id).await? {
                Some(row) => {
                    origin = s.origin.clone().unwrap_or(origin);
                    connector = s.connector;
                    raw = Some(row.raw);
                    (s.message_id, Some((row.status, row.dead_letter)))
                }
                None => {
                    rejection = Some(HandlerError::rejected(
                        "unknown_reference",
                        format!("message {} is not in the message store", s.message_id),
                    ));
                    let filed = self.file_record(&mut *tx, rec, env.as_ref(), &key, &origin).await?;
                    (filed.id(), None)
                }
            },
            None => {
                let ingested = self.file_record(&mut *tx, rec, env.as_ref(), &key, &origin).await?;
                let seen = if ingested.is_duplicate() {
                    load_stored(&mut *tx, name, ingested.id())
                        .await?
                        .map(|row| (row.status, row.dead_letter))
                } else {
                    None
                };
                (ingested.id(), seen)
            }
        };

        // Seen before: a redelivered poison record must not open a second
        // dead letter, and a message applied once (a sender's resend under a
        // new event id) has no second effect.
        if let Some((status, dead_letter)) = &seen_before {
            if let Some((id, code, reason)) = dead_letter {
                let processed = Processed::DeadLettered {
                    id: *id,
                    code: static_code(code),
                    reason: reason.clone(),
                    new: false,
                };
                return Ok((processed, false));
            }
            if status == "processed" {
                let event_id = env.as_ref().map_or_else(|| key.clone(), |e| e.id.clone());
                emits.push(Emit::Duplicate {
                    event_id: event_id.clone(),
                });
                return Ok((Processed::Duplicate { event_id }, false));
            }
        }

        let result = match (rejection, &env) {
            (Some(rejected), _) => Err(rejected),
            (None, Some(env)) => {
                let ctx = Context {
                    message_id,
                    origin: origin.clone(),
                    replay: false,
                    raw: raw.clone(),
                    outbox: outbox.clone(),
                };
                match self.claim_and_handle(&mut *tx, &ctx, env).await {
                    Ok(None) => {
                        emits.push(Emit::Duplicate {
                            event_id: env.id.clone(),
                        });
                        let processed = Processed::Duplicate {
                            event_id: env.id.clone(),
                        };
                        return Ok((processed, false));
                    }
                    Ok(Some(handled)) => Ok(handled),
                    Err(e) => Err(e),
                }
            }
            (None, None) => Err(HandlerError::rejected("invalid_envelope", "no envelope")),
        };

        match result {
            Ok(handled) => {
                MessageStore::mark_processed(&mut *tx, message_id, handled.patient_id).await?;
                audit.push(
                    AuditEntry::new(ActorKind::Connector, connector, Action::Ingest, "message")
                        .entity(message_id)
                        .message(Some(message_id))
                        .origin(origin.clone()),
                );
                audit.extend(handled.audit);
                emits.push(Emit::Processed {
                    message_type: message_type.to_owned(),
                    started,
                });
                Ok((Processed::Applied { message_id }, true))
            }
            Err(HandlerError::Store(e)) if e.is_transient() => Err(Error::Store(e)),
            Err(err) => {
                let (code, reason) = rejection_of(err);
                let id = dead_letter(&mut *tx, name, rec, env.as_ref(), Some(message_id), code, &reason).await?;
                if let Some(env) = &env {
                    let ctx = Context {
                        message_id,
                        origin: origin.clone(),
                        replay: false,
                        raw,
                        outbox: outbox.clone(),
                    };
                    sqlx::query("SAVEPOINT answer").execute(&mut *tx).await?;
                    let published = outbox.len();
                    match self.handler.rejected(&mut *tx, &ctx, env, code, &reason).await {
                        Err(HandlerError::Store(e)) if e.is_transient() => return Err(Error::Store(e)),
                        Err(e) => {
                            // The dead letter stands; only the answer is lost (logged).
                            outbox.truncate(published);
                            sqlx::query("ROLLBACK TO SAVEPOINT answer").execute(&mut *tx).await?;
                            tracing::warn!(pipeline = name, dead_letter = id, error = %e, "answering the source of a dead letter failed");
                        }
                        Ok(()) => {
                            sqlx::query("RELEASE SAVEPOINT answer").execute(&mut *tx).await?;
                        }
                    }
                }
                audit.push(
                    AuditEntry::new(ActorKind::Connector, connector, Action::Ingest, "message")
                        .entity(message_id)
                        .message(Some(message_id))
                        .origin(origin)
                        .detail(serde_json::json!({ "dead_letter": id, "error_code": code })),
                );
                emits.push(Emit::DeadLettered { code, id });
                let processed = Processed::DeadLettered {
                    id,
                    code,
                    reason,
                    new: true,
                };
                Ok((processed, true))
            }
        }
    }

    /// Claims the event for this pipeline and runs the handler, both inside a
    /// savepoint: a rejection undoes the handler's writes and the claim (so a
    /// replay can apply the event later) while the message row and the dead
    /// letter still commit. `Ok(None)`: the event was applied before.
    async fn claim_and_handle(
        &self,
        tx: &mut PgConnection,
        ctx: &Context,
        env: &Envelope,
    ) -> Result<Option<crate::Handled>, HandlerError> {
        sqlx::query("SAVEPOINT handler").execute(&mut *tx).await?;
        if !consumed::claim(tx, self.handler.name(), &env.id).await? {
            sqlx::query("RELEASE SAVEPOINT handler").execute(&mut *tx).await?;
            return Ok(None);
        }
        let published = ctx.outbox.len();
        let result = self.handler.handle(tx, ctx, env).await;
        match &result {
            Ok(_) => sqlx::query("RELEASE SAVEPOINT handler").execute(&mut *tx).await?,
            Err(HandlerError::Store(e)) if e.is_transient() => return result.map(Some),
            Err(_) => {
                ctx.outbox.truncate(published);
                sqlx::query("ROLLBACK TO SAVEPOINT handler").execute(&mut *tx).await?
            }
        };
        result.map(Some)
    }

    /// Dead-letters a record that cannot be applied because the store keeps
    /// refusing it (not because the store is down), in a transaction of its
    /// own that writes only the dead letter, the referred message's status
    /// and an audit entry: what failed before cannot fail it again.
    pub async fn dead_letter_unprocessable(&self, rec: &InboundRecord<'_>, failure: &Error) -> Result<Processed> {
        let name = self.handler.name();
        let env = Envelope::from_slice(rec.payload).ok();
        let message_id = env.as_ref().and_then(|e| self.handler.stored(e)).map(|s| s.message_id);
        // The error's class and code, never the data it may quote.
        let reason = match failure {
            Error::Store(e) => format!(
                "the store refused the record repeatedly ({})",
                e.code().unwrap_or("no SQLSTATE")
            ),
            other => format!("the record could not be applied: {other}"),
        };
        let code = "store_error";
        let mut tx = self.pool.begin().await?;
        let id = dead_letter(&mut tx, name, rec, env.as_ref(), message_id, code, &reason).await?;
        let entry = AuditEntry::new(ActorKind::Connector, CONNECTOR, Action::Ingest, "dead_letter")
            .entity(id)
            .message(message_id)
            .origin(format!("kafka:{}", rec.topic))
            .detail(serde_json::json!({ "error_code": code }));
        AuditLog::append(&mut tx, &[entry]).await?;
        tx.commit().await?;
        DeadLettered {
            pipeline: name,
            error_code: code,
            dead_letter_id: id,
        }
        .emit();
        Ok(Processed::DeadLettered {
            id,
            code,
            reason,
            new: true,
        })
    }

    /// Files a record in the message store under its own key (topic and event id).
    async fn file_record(
        &self,
        conn: &mut PgConnection,
        rec: &InboundRecord<'_>,
        env: Option<&Envelope>,
        key: &str,
        origin: &str,
    ) -> Result<Ingested> {
        let new_message = NewMessage {
            connector: CONNECTOR,
            protocol: "kafka",
            message_type: env.map(|e| e.event_type.as_str()),
            control_id: env.map(|e| e.id.as_str()),
            source_key: key,
            origin: Some(origin),
            raw: rec.payload,
            // A record under a key already filed is the same record again.
            on_changed: carehub_schema::ChangedContent::HoldForReview,
        };
        Ok(MessageStore::ingest(conn, &new_message).await?)
    }

    /// Replays dead letter `id` through this pipeline now. `actor` names the
    /// operator for the audit trail.
    pub async fn replay(&self, id: i64, actor: &str) -> Result<ReplayOutcome> {
        let name = self.handler.name();
        let mut tx = self.pool.begin().await?;
        let dl = match DeadLetters::lock(&mut tx, id).await {
            Ok(dl) => dl,
            Err(carehub_schema::Error::NotFound { .. }) => return Err(Error::UnknownDeadLetter(id)),
            Err(e) => return Err(e.into()),
        };
        if dl.consumer != name {
            return Err(Error::WrongPipeline {
                id,
                consumer: dl.consumer,
                pipeline: name.to_owned(),
            });
        }
        if dl.status != "open" {
            return Ok(ReplayOutcome::NotOpen { status: dl.status });
        }
        let message_id = dl.message_id.unwrap_or_else(Uuid::now_v7);
        let origin = format!("kafka:{}", dl.topic);
        let outbox = OutboxBuffer::default();

        let result = match Envelope::from_slice(&dl.payload) {
            Err(e) => Err(HandlerError::rejected("invalid_envelope", e.to_string())),
            Ok(env) if !self.handler.accepts(&env.event_type) => Err(HandlerError::rejected(
                "unknown_type",
                format!("pipeline {name} does not handle event type {:?}", env.event_type),
            )),
            Ok(env) => {
                let raw = match self.handler.stored(&env) {
                    Some(s) => load_stored(&mut tx, name, s.message_id).await?.map(|row| row.raw),
                    None => None,
                };
                let ctx = Context {
                    message_id,
                    origin: origin.clone(),
                    replay: true,
                    raw,
                    outbox: outbox.clone(),
                };
                match self.claim_and_handle(&mut tx, &ctx, &env).await {
                    Ok(None) => {
                        DeadLetters::mark_replayed(&mut tx, id).await?;
                        tx.commit().await?;
                        return Ok(ReplayOutcome::AlreadyApplied);
                    }
                    Ok(Some(handled)) => Ok(handled),
                    Err(e) => Err(e),
                }
            }
        };
        match result {
            Ok(handled) => {
                MessageStore::mark_processed(&mut tx, message_id, handled.patient_id).await?;
                DeadLetters::mark_replayed(&mut tx, id).await?;
                let mut audit = vec![
                    AuditEntry::new(ActorKind::User, actor, Action::Replay, "dead_letter")
                        .entity(id)
                        .message(Some(message_id))
                        .origin(origin),
                ];
                audit.extend(handled.audit);
                write_outbox(&mut tx, &outbox).await?;
                AuditLog::append(&mut tx, &audit).await?;
                tx.commit().await?;
                Ok(ReplayOutcome::Applied { message_id })
            }
            Err(HandlerError::Store(e)) if e.is_transient() => Err(Error::Store(e)),
            Err(err) => {
                let (code, reason) = rejection_of(err);
                sqlx::query(
                    "UPDATE dead_letter SET error_code = $2, reason = $3, replay_count = replay_count + 1
                     WHERE id = $1",
                )
                .bind(id)
                .bind(code)
                .bind(&reason)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(ReplayOutcome::StillFailing { code, reason })
            }
        }
    }
}

/// Marks the record's stored message failed and opens its dead letter.
async fn dead_letter(
    conn: &mut PgConnection,
    consumer: &str,
    rec: &InboundRecord<'_>,
    env: Option<&Envelope>,
    message_id: Option<Uuid>,
    code: &str,
    reason: &str,
) -> Result<i64> {
    if let Some(id) = message_id {
        MessageStore::mark_failed(&mut *conn, id, reason).await?;
    }
    Ok(DeadLetters::insert(
        conn,
        &NewDeadLetter {
            consumer,
            topic: rec.topic,
            partition: rec.partition,
            offset: rec.offset,
            key: rec.key,
            payload: rec.payload,
            event_id: env.map(|e| e.id.as_str()),
            message_id,
            error_code: code,
            reason,
        },
    )
    .await?)
}

fn rejection_of(err: HandlerError) -> (&'static str, String) {
    match err {
        HandlerError::Rejected { code, reason } => (code, reason),
        // The database's own message may quote the value it refused (a name,
        // a date): the reason keeps its SQLSTATE only (hardening item 9).
        HandlerError::Store(e) => (
            "store_error",
            format!("the store refused the record (SQLSTATE {})", e.code().unwrap_or("none")),
        ),
    }
}

/// Error codes are a bounded set; map a stored one back for the metric label.
pub(crate) fn static_code(code: &str) -> &'static str {
    match code {
        "invalid_envelope" => "invalid_envelope",
        "unknown_type" => "unknown_type",
        "invalid_data" => "invalid_data",
        "unknown_reference" => "unknown_reference",
        "invalid_transition" => "invalid_transition",
        "sequence_conflict" => "sequence_conflict",
        "store_error" => "store_error",
        _ => "other",
    }
}
