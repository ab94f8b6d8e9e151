//! The set pass: a batch applied with one statement per table for the
//! engine's own rows — the stored messages read (or the records filed) at
//! once, every event id claimed at once, the message-store rows marked
//! processed at once, the batch's outbox events and audit entries written
//! at once — and the handlers run in record order in between, without
//! savepoints. A record that is refused (or refers to nothing, or is not a
//! type the pipeline takes) sends the whole batch, undone, to the retry pass
//! ([`Engine::process_each`]), where each record has a savepoint of its own
//! and the refused one is dead-lettered alone.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use carehub_schema::{
    Action, ActorKind, AuditEntry, AuditLog, ChangedContent, Envelope, MessageStore, NewMessage, consumed,
};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::engine::{CONNECTOR, Emit, StoredRow, source_key, write_outbox};
use crate::handler::OutboxBuffer;
use crate::{Context, Engine, Error, HandlerError, InboundRecord, Processed, Result};

/// Where a record's stored message came from, for the audit trail.
struct Source {
    message_id: Uuid,
    /// Stored by an ingress (the record refers to it), not filed here.
    by_ingress: bool,
    connector: &'static str,
    origin: String,
}

impl Engine {
    /// Applies `recs` set-wise in one transaction. `Ok(None)`: a record needs
    /// the retry pass; nothing was written.
    pub(crate) async fn apply_set(&self, recs: &[InboundRecord<'_>]) -> Result<Option<Vec<Processed>>> {
        let name = self.handler.name();
        let mut envs = Vec::with_capacity(recs.len());
        for rec in recs {
            match Envelope::from_slice(rec.payload) {
                Ok(env) if self.handler.ignores(&env.event_type) => envs.push(None),
                Ok(env) if self.handler.accepts(&env.event_type) => envs.push(Some(env)),
                // Not an envelope, or a type this pipeline does not take: a dead letter.
                _ => return Ok(None),
            }
        }
        let mut tx = self.pool.begin().await?;

        // The stored message of each record: the one its ingress stored, or
        // the record itself, filed under its topic and event id.
        let keys: Vec<String> = recs.iter().zip(&envs).map(|(r, e)| source_key(r, e.as_ref())).collect();
        let mut sources: Vec<Option<Source>> = Vec::with_capacity(recs.len());
        let mut to_file = Vec::new();
        let mut lookup = Vec::new();
        let origins: Vec<String> = recs.iter().map(|r| format!("kafka:{}", r.topic)).collect();
        for (i, env) in envs.iter().enumerate() {
            let origin = origins[i].clone();
            let source = env.as_ref().map(|env| match self.handler.stored(env) {
                Some(s) => {
                    lookup.push(s.message_id);
                    Source {
                        message_id: s.message_id,
                        by_ingress: true,
                        connector: s.connector,
                        origin: s.origin.unwrap_or(origin),
                    }
                }
                None => {
                    to_file.push(i);
                    Source {
                        message_id: Uuid::nil(),
                        by_ingress: false,
                        connector: CONNECTOR,
                        origin,
                    }
                }
            });
            sources.push(source);
        }
        let news: Vec<NewMessage<'_>> = to_file
            .iter()
            .filter_map(|&i| {
                let env = envs[i].as_ref()?;
                Some(NewMessage {
                    connector: CONNECTOR,
                    protocol: "kafka",
                    message_type: Some(env.event_type.as_str()),
                    control_id: Some(env.id.as_str()),
                    source_key: &keys[i],
                    origin: Some(origins[i].as_str()),
                    raw: recs[i].payload,
                    // A record under a key already filed is the same record again.
                    on_changed: ChangedContent::HoldForReview,
                })
            })
            .collect();
        // The keys are claimed now; the rows of the records filed here are
        // written once they are applied (already processed), below.
        let filed = MessageStore::claim_batch(&mut tx, &news).await?;
        for (&i, ingested) in to_file.iter().zip(filed.ingested()) {
            if let Some(s) = sources[i].as_mut() {
                s.message_id = ingested.id();
            }
            if ingested.is_duplicate() {
                lookup.push(ingested.id());
            }
        }
        let mut rows = load_stored_many(&mut tx, name, &lookup).await?;

        // Seen before (dead-lettered, or applied), or twice in this batch.
        let mut out: Vec<Processed> = vec![Processed::Skipped; recs.len()];
        let mut emits = Vec::new();
        let mut in_batch = HashSet::new();
        let mut to_claim = Vec::new();
        for (i, env) in envs.iter().enumerate() {
            let (Some(env), Some(source)) = (env, &sources[i]) else {
                continue;
            };
            emits.push(Emit::Received {
                message_type: env.event_type.clone(),
            });
            let id = source.message_id;
            match rows.get(&id) {
                None if source.by_ingress => return Ok(None), // refers to nothing
                Some(StoredRow {
                    dead_letter: Some((dl, code, reason)),
                    ..
                }) => {
                    out[i] = Processed::DeadLettered {
                        id: *dl,
                        code: crate::engine::static_code(code),
                        reason: reason.clone(),
                        new: false,
                    };
                    continue;
                }
                Some(row) if row.status == "processed" => {
                    out[i] = duplicate(env, &mut emits);
                    continue;
                }
                _ => {}
            }
            if !in_batch.insert(id) {
                out[i] = duplicate(env, &mut emits);
                continue;
            }
            to_claim.push(i);
        }
        let event_ids: Vec<&str> = to_claim
            .iter()
            .filter_map(|&i| envs[i].as_ref().map(|e| e.id.as_str()))
            .collect();
        let claimed = claim_many(&mut tx, name, &event_ids).await?;

        let outbox = OutboxBuffer::default();
        let mut batch: Vec<(Context, &Envelope)> = Vec::with_capacity(to_claim.len());
        let mut applying = Vec::with_capacity(to_claim.len());
        for &i in &to_claim {
            let (Some(env), Some(source)) = (&envs[i], &sources[i]) else {
                continue;
            };
            if !claimed.contains(env.id.as_str()) {
                out[i] = duplicate(env, &mut emits);
                continue;
            }
            let ctx = Context {
                message_id: source.message_id,
                origin: source.origin.clone(),
                replay: false,
                raw: rows.remove(&source.message_id).map(|r| r.raw),
                outbox: outbox.clone(),
            };
            batch.push((ctx, env));
            applying.push(i);
        }
        let started = Instant::now();
        let handled = match self.handler.handle_batch(&mut tx, &batch).await {
            Ok(handled) if handled.len() == batch.len() => handled,
            Err(HandlerError::Store(e)) if e.is_transient() => return Err(Error::Store(e)),
            // Refused, or the store refused it: undone, the retry pass
            // dead-letters the record alone.
            _ => return Ok(None),
        };
        let mut audit = Vec::new();
        let mut applied = Vec::with_capacity(batch.len());
        for ((i, (ctx, env)), handled) in applying.iter().zip(&batch).zip(handled) {
            let Some(source) = &sources[*i] else { continue };
            applied.push((ctx.message_id, handled.patient_id));
            audit.push(
                AuditEntry::new(ActorKind::Connector, source.connector, Action::Ingest, "message")
                    .entity(ctx.message_id)
                    .message(Some(ctx.message_id))
                    .origin(ctx.origin.clone()),
            );
            audit.extend(handled.audit);
            emits.push(Emit::Processed {
                message_type: env.event_type.clone(),
                started,
            });
            out[*i] = Processed::Applied {
                message_id: ctx.message_id,
            };
        }
        let stored_before = filed.write(&mut tx, applied).await?;
        MessageStore::mark_processed_many(&mut tx, &stored_before).await?;
        write_outbox(&mut tx, &outbox).await?;
        AuditLog::append_in(&mut tx, &audit).await?;
        tx.commit().await?;
        self.report(&emits);
        Ok(Some(out))
    }
}

fn duplicate(env: &Envelope, emits: &mut Vec<Emit>) -> Processed {
    emits.push(Emit::Duplicate {
        event_id: env.id.clone(),
    });
    Processed::Duplicate {
        event_id: env.id.clone(),
    }
}

/// The messages `ids` of the message store, with their open dead letters for `consumer`.
async fn load_stored_many(conn: &mut PgConnection, consumer: &str, ids: &[Uuid]) -> Result<HashMap<Uuid, StoredRow>> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    type Row = (Uuid, String, Vec<u8>, Option<i64>, Option<String>, Option<String>);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT m.id, m.status, m.raw, d.id, d.error_code, d.reason FROM message m
           LEFT JOIN LATERAL (SELECT id, error_code, reason FROM dead_letter
                               WHERE consumer = $1 AND message_id = m.id AND status = 'open'
                               ORDER BY id LIMIT 1) d ON true
          WHERE m.id = ANY($2)",
    )
    .bind(consumer)
    .bind(ids)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, status, raw, dl, code, reason)| {
            let dead_letter = match (dl, code, reason) {
                (Some(dl), Some(code), Some(reason)) => Some((dl, code, reason)),
                _ => None,
            };
            (
                id,
                StoredRow {
                    status,
                    raw,
                    dead_letter,
                },
            )
        })
        .collect())
}

/// Claims `event_ids` for `consumer` in one statement; returns those claimed
/// now (not applied before). An id twice in the list is claimed once.
async fn claim_many(conn: &mut PgConnection, consumer: &str, event_ids: &[&str]) -> Result<HashSet<String>> {
    if event_ids.is_empty() {
        return Ok(HashSet::new());
    }
    Ok(consumed::claim_many(conn, consumer, event_ids)
        .await?
        .into_iter()
        .collect())
}
