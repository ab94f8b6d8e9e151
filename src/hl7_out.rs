//! Outbound HL7 v2: `carehub.hl7v2.send.v1` records (written by pipelines
//! through the outbox) delivered over MLLP to their named destination.
//!
//! One record at a time, in order: the next is read only after the receiver
//! accepted this one (AA/CA, MSA-2 matching MSH-10, see `MllpSender`), and the
//! offset is stored only then, so a crash re-sends at most the message in
//! hand, with its MSH-10, which the receiver recognises. Timeouts and AE are
//! retried by the sender with backoff; when it gives up the delivery pauses
//! and tries the same message again, never skipping it. AR/CR, an unknown
//! destination or an unreadable record go to the dead letters (consumer
//! `hl7_out`) and `<topic>.dlq` with the reason; `carehub dlq replay` puts
//! such a record back on the topic once the cause is fixed. Every delivered
//! message is audited (`send`).

use std::collections::HashMap;
use std::time::Duration;

use carehub_core::internal_events::{ComponentError, DeadLettered, DuplicateSkipped, Stage};
use carehub_hl7::codec::{Message, decode_text};
use carehub_hl7::{MllpSender, SendError, SenderConfig};
use carehub_pipeline_hl7::{Outbound, SEND};
use carehub_schema::{Action, ActorKind, AuditEntry, AuditLog, DeadLetters, Envelope, NewDeadLetter, consumed};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message as _, Offset, TopicPartitionList};
use sqlx::PgPool;
use tokio::sync::watch;

/// The dead letters' consumer name.
pub const CONSUMER: &str = "hl7_out";

pub struct Hl7Outbound {
    consumer: StreamConsumer,
    producer: FutureProducer,
    pool: PgPool,
    topic: String,
    destinations: std::collections::BTreeMap<String, SenderConfig>,
    senders: HashMap<String, MllpSender>,
}

impl std::fmt::Debug for Hl7Outbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hl7Outbound").field("topic", &self.topic).finish()
    }
}

/// What became of one record.
enum Delivery {
    Accepted {
        destination: String,
        control_id: String,
        message_type: String,
    },
    Refused {
        code: &'static str,
        reason: String,
    },
}

impl Hl7Outbound {
    pub fn new(cfg: &crate::config::Config, pool: PgPool, producer: FutureProducer) -> anyhow::Result<Self> {
        let p = &cfg.pipelines.hl7;
        Ok(Hl7Outbound {
            consumer: carehub_kafka::group_consumer(&cfg.kafka, &p.outbound_group, &p.outbound_topic)?,
            producer,
            pool,
            topic: p.outbound_topic.clone(),
            destinations: cfg.hl7.destinations.clone(),
            senders: HashMap::new(),
        })
    }

    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        tracing::info!(topic = %self.topic, destinations = self.destinations.len(), "HL7 outbound delivery started");
        loop {
            let msg = tokio::select! {
                m = self.consumer.recv() => m,
                _ = shutdown.changed() => return,
            };
            let msg = match msg {
                Ok(m) => m.detach(),
                Err(e) => {
                    ComponentError {
                        component: "hl7_outbound",
                        stage: Stage::Receiving,
                        error_code: "receive_failed",
                        error: &e,
                    }
                    .emit();
                    if carehub_kafka::wait(&mut shutdown, Duration::from_secs(1)).await {
                        return;
                    }
                    continue;
                }
            };
            let payload = msg.payload().unwrap_or_default().to_vec();
            // Delivered before (the offset was not committed when the hub
            // stopped): the receiver already accepted it, do not send it twice.
            let event_id = Envelope::from_slice(&payload).ok().map(|e| e.id);
            if let Some(id) = &event_id
                && matches!(consumed::is_claimed(&self.pool, CONSUMER, id).await, Ok(true))
            {
                DuplicateSkipped {
                    connector: CONSUMER,
                    event_id: id,
                }
                .emit();
                self.store_offset(&msg);
                continue;
            }
            let Some(delivery) = self.deliver(&payload, &mut shutdown).await else {
                return; // shutting down with the message in hand: it is not acknowledged
            };
            // The outcome is recorded before the offset is stored; a failure here
            // leaves the record to be delivered again (the receiver dedupes by MSH-10).
            loop {
                match self.record(&msg, &payload, &delivery).await {
                    Ok(()) => break,
                    Err(e) => {
                        ComponentError {
                            component: "hl7_outbound",
                            stage: Stage::Processing,
                            error_code: "store_unavailable",
                            error: &e,
                        }
                        .emit();
                        if carehub_kafka::wait(&mut shutdown, Duration::from_secs(2)).await {
                            return;
                        }
                    }
                }
            }
            self.store_offset(&msg);
        }
    }

    /// Marks `msg` done: its offset is committed with the next auto-commit.
    fn store_offset(&self, msg: &rdkafka::message::OwnedMessage) {
        let mut next = TopicPartitionList::new();
        let stored = next
            .add_partition_offset(msg.topic(), msg.partition(), Offset::Offset(msg.offset() + 1))
            .and_then(|()| self.consumer.store_offsets(&next));
        if let Err(e) = stored {
            ComponentError {
                component: "hl7_outbound",
                stage: Stage::Processing,
                error_code: "offset_store_failed",
                error: &e,
            }
            .emit();
        }
    }

    /// Sends one record's message until the receiver accepts or refuses it.
    /// `None`: shutdown came first.
    async fn deliver(&mut self, payload: &[u8], shutdown: &mut watch::Receiver<bool>) -> Option<Delivery> {
        let refused = |code, reason: String| Some(Delivery::Refused { code, reason });
        let env = match Envelope::from_slice(payload) {
            Ok(env) if env.event_type == SEND => env,
            Ok(env) => {
                return refused(
                    "unknown_type",
                    format!("{CONSUMER} does not handle {:?}", env.event_type),
                );
            }
            Err(e) => return refused("invalid_envelope", e.to_string()),
        };
        let out: Outbound = match serde_json::from_value(env.data) {
            Ok(o) => o,
            Err(e) => return refused("invalid_data", format!("{SEND}: {e}")),
        };
        let Some(config) = self.destinations.get(&out.destination).cloned() else {
            return refused(
                "unknown_destination",
                format!(
                    "destination {:?} is not configured ([hl7.destinations])",
                    out.destination
                ),
            );
        };
        let raw = match out.raw() {
            Ok(r) => r,
            Err(e) => return refused("invalid_data", format!("raw_base64: {e}")),
        };
        let (control_id, message_type) = match decode_text(&raw).ok().and_then(|(t, _)| {
            Message::parse(&t)
                .ok()
                .map(|m| (m.control_id().to_owned(), m.type_label()))
        }) {
            Some(x) => x,
            None => return refused("invalid_data", "not a readable HL7 v2 message".into()),
        };
        let sender = self
            .senders
            .entry(out.destination.clone())
            .or_insert_with(|| MllpSender::new(config));
        loop {
            let attempt = tokio::select! {
                r = sender.send(&raw) => r,
                _ = shutdown.changed() => return None,
            };
            match attempt {
                Ok(_) => {
                    return Some(Delivery::Accepted {
                        destination: out.destination,
                        control_id,
                        message_type,
                    });
                }
                Err(SendError::Rejected { code, text, .. }) => {
                    return refused(
                        "rejected_by_receiver",
                        format!("{} {}: {text}", out.destination, code.as_str()),
                    );
                }
                Err(SendError::Invalid(reason)) => return refused("invalid_data", reason),
                Err(e) => {
                    ComponentError {
                        component: "hl7_outbound",
                        stage: Stage::Sending,
                        error_code: "not_accepted",
                        error: &e,
                    }
                    .emit();
                    if carehub_kafka::wait(shutdown, Duration::from_secs(5)).await {
                        return None;
                    }
                }
            }
        }
    }

    /// Audits a delivery, or stores a refusal as a dead letter and forwards it to `<topic>.dlq`.
    async fn record(
        &self,
        msg: &rdkafka::message::OwnedMessage,
        payload: &[u8],
        delivery: &Delivery,
    ) -> anyhow::Result<()> {
        let mut tx = self.pool.begin().await?;
        match delivery {
            Delivery::Accepted {
                destination,
                control_id,
                message_type,
            } => {
                // Remembered with the audit entry: a redelivery of this record
                // (offset not yet committed at a crash) is not sent again.
                if let Ok(env) = Envelope::from_slice(payload) {
                    consumed::claim(&mut tx, CONSUMER, &env.id).await?;
                }
                AuditLog::append(
                    &mut tx,
                    &[AuditEntry::new(
                        ActorKind::Connector,
                        carehub_hl7::sender::CONNECTOR,
                        Action::Send,
                        "hl7_message",
                    )
                    .entity(control_id)
                    .origin(format!("mllp:{destination}"))
                    .detail(serde_json::json!({ "message_type": message_type, "offset": msg.offset() }))],
                )
                .await?;
                tx.commit().await?;
            }
            Delivery::Refused { code, reason } => {
                let id = DeadLetters::insert(
                    &mut tx,
                    &NewDeadLetter {
                        consumer: CONSUMER,
                        topic: msg.topic(),
                        partition: Some(msg.partition()),
                        offset: Some(msg.offset()),
                        key: msg.key(),
                        payload,
                        event_id: Envelope::from_slice(payload).ok().map(|e| e.id).as_deref(),
                        message_id: None,
                        error_code: code,
                        reason,
                    },
                )
                .await?;
                tx.commit().await?;
                DeadLettered {
                    pipeline: CONSUMER,
                    error_code: code,
                    dead_letter_id: id,
                }
                .emit();
                carehub_kafka::forward_dead_letter(&self.producer, msg.topic(), msg.key(), payload, id, code, reason)
                    .await
                    .map_err(|e| anyhow::anyhow!("forwarding dead letter {id}: {e}"))?;
            }
        }
        Ok(())
    }
}

/// Replays an outbound dead letter: its record goes back on the topic it
/// came from, and the dead letter is marked replayed (audited).
pub async fn replay(pool: &PgPool, producer: &FutureProducer, id: i64, actor: &str) -> anyhow::Result<()> {
    let mut tx = pool.begin().await?;
    let dl = DeadLetters::lock(&mut tx, id).await?;
    anyhow::ensure!(dl.status == "open", "dead letter {id} is {}, not open", dl.status);
    let mut record = FutureRecord::to(&dl.topic).payload(&dl.payload);
    if let Some(key) = dl.key.as_deref() {
        record = record.key(key);
    }
    producer
        .send(record, Duration::from_secs(30))
        .await
        .map_err(|(e, _)| anyhow::anyhow!("re-publishing to {}: {e}", dl.topic))?;
    DeadLetters::mark_replayed(&mut tx, id).await?;
    AuditLog::append(
        &mut tx,
        &[AuditEntry::new(ActorKind::User, actor, Action::Replay, "dead_letter")
            .entity(id)
            .origin(format!("kafka:{}", dl.topic))],
    )
    .await?;
    tx.commit().await?;
    Ok(())
}
