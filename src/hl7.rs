//! The HL7 v2 edge of the binary: the MLLP listener's sink, and the
//! `carehub hl7 send|parse` tools.
//!
//! What "stored before acknowledged" means for MLLP: before AA is sent, the
//! message's bytes are in the message store (PostgreSQL, under its source key
//! `hl7:<MSH-4>:<MSH-3>:<MSH-10>`) AND its `carehub.hl7v2.received.v1`
//! record is on the HL7 pipeline's topic (`acks=all`, idempotent producer).
//! The record is produced inside the message-store transaction and the
//! transaction commits after the broker confirmed, so when either PostgreSQL
//! or the broker is down the sender gets AR with error 207 and resends. A
//! record that reached the broker while the commit failed is found by its
//! source key when the pipeline applies it: no second effect.
//!
//! A message whose content the mapping refuses (see
//! `carehub_pipeline_hl7::validate`) is stored as failed with a dead letter
//! and the reason, in the same transaction, and answered AE (content) or AR
//! (unsupported type or version). `carehub dlq replay` runs it through the
//! HL7 pipeline once the cause is fixed.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_trait::async_trait;
use carehub_hl7::codec::{AckError, Message, batch, charset};
use carehub_hl7::listener::{CONNECTOR, Inbound, InboundSink, Unavailable, Verdict};
use carehub_hl7::{MllpSender, SendError, SenderConfig};
use carehub_pipeline_hl7::{Received, map, source_key, validate};
use carehub_schema::{Action, ActorKind, AuditEntry, AuditLog, DeadLetters, MessageStore, NewDeadLetter, NewMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use sqlx::PgPool;

/// Stores each received message (message store + pipeline topic) before it is acknowledged.
pub struct Hl7Store {
    pub pool: PgPool,
    pub producer: FutureProducer,
    /// The HL7 pipeline's topic (and, for dead letters, its consumer name).
    pub topic: String,
    pub pipeline: String,
    pub listener: String,
    pub store_timeout: Duration,
}

impl std::fmt::Debug for Hl7Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hl7Store").field("topic", &self.topic).finish()
    }
}

fn unavailable(what: &str) -> impl FnOnce(carehub_schema::Error) -> Unavailable + '_ {
    move |e| Unavailable(format!("{what}: {e}"))
}

#[async_trait]
impl InboundSink for Hl7Store {
    async fn store(&self, inbound: Inbound<'_>) -> Result<Verdict, Unavailable> {
        match tokio::time::timeout(self.store_timeout, self.store_now(inbound)).await {
            Ok(r) => r,
            Err(_) => Err(Unavailable(format!(
                "not stored within {} ms",
                self.store_timeout.as_millis()
            ))),
        }
    }
}

impl Hl7Store {
    async fn store_now(&self, inbound: Inbound<'_>) -> Result<Verdict, Unavailable> {
        let origin = format!("mllp:{}", inbound.peer);
        let (verdict, key, partition_key, message_type, control_id) = match inbound.parsed {
            Ok(msg) => {
                let verdict = match validate(msg) {
                    Ok(()) => Verdict::Accepted,
                    Err(e) if e.reject => Verdict::Rejected(e.ack_error()),
                    Err(e) => Verdict::Error(e.ack_error()),
                };
                // One sender's messages stay on one partition, in order.
                let msh = msg.msh();
                let sender = format!("{}:{}", msh.field(4).raw(), msh.field(3).raw());
                (
                    verdict,
                    source_key(msg),
                    sender,
                    Some(msg.type_label()),
                    Some(msg.control_id().to_owned()),
                )
            }
            Err(e) => (
                Verdict::Rejected(AckError::new(100, e.to_string())),
                format!("hl7:unparsed:{}", uuid::Uuid::now_v7()),
                inbound.peer.ip().to_string(),
                None,
                None,
            ),
        };
        let envelope = Received::new(inbound.raw, inbound.peer, &self.listener).into_envelope(Some(&key));
        let payload = serde_json::to_vec(&envelope).map_err(|e| Unavailable(e.to_string()))?;

        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(|e| Unavailable(format!("PostgreSQL: {e}")))?;
        let ingested = MessageStore::ingest(
            &mut tx,
            &NewMessage {
                connector: CONNECTOR,
                protocol: "hl7v2",
                message_type: message_type.as_deref(),
                control_id: control_id.as_deref(),
                source_key: &key,
                origin: Some(&origin),
                raw: inbound.raw,
            },
        )
        .await
        .map_err(unavailable("message store"))?;
        if ingested.is_duplicate() {
            // Stored (and published) before: the same answer again, no second effect.
            return Ok(verdict);
        }
        match &verdict {
            Verdict::Accepted => {
                let record = FutureRecord::to(&self.topic).key(&partition_key).payload(&payload);
                self.producer
                    .send(record, Timeout::After(self.store_timeout))
                    .await
                    .map_err(|(e, _)| Unavailable(format!("broker: {e}")))?;
            }
            Verdict::Error(e) | Verdict::Rejected(e) => {
                let code = match &verdict {
                    Verdict::Error(_) => "invalid_data",
                    _ if message_type.is_none() => "invalid_envelope",
                    _ => "unknown_type",
                };
                let message_id = ingested.id();
                MessageStore::mark_failed(&mut tx, message_id, &e.text)
                    .await
                    .map_err(unavailable("message store"))?;
                let dead_letter = DeadLetters::insert(
                    &mut tx,
                    &NewDeadLetter {
                        consumer: &self.pipeline,
                        topic: &self.topic,
                        partition: None,
                        offset: None,
                        key: Some(partition_key.as_bytes()),
                        payload: &payload,
                        event_id: Some(&envelope.id),
                        message_id: Some(message_id),
                        error_code: code,
                        reason: &e.text,
                    },
                )
                .await
                .map_err(unavailable("dead letters"))?;
                AuditLog::append(
                    &mut tx,
                    &[AuditEntry::new(ActorKind::Connector, CONNECTOR, Action::Ingest, "message")
                        .entity(message_id)
                        .message(Some(message_id))
                        .origin(origin.clone())
                        .detail(serde_json::json!({ "dead_letter": dead_letter, "error_code": code, "hl7_error": e.code }))],
                )
                .await
                .map_err(unavailable("audit trail"))?;
                carehub_core::internal_events::DeadLettered {
                    pipeline: &self.pipeline,
                    error_code: code,
                    dead_letter_id: dead_letter,
                }
                .emit();
            }
        }
        tx.commit()
            .await
            .map_err(|e| Unavailable(format!("PostgreSQL commit: {e}")))?;
        Ok(verdict)
    }
}

/// The messages of a file: a batch, a file of messages, comments skipped;
/// segment terminators normalised to CR for the wire.
fn messages_of(path: &Path) -> anyhow::Result<Vec<Vec<u8>>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let (text, _) = carehub_hl7::codec::decode_text(&bytes).with_context(|| format!("{}", path.display()))?;
    let clean = batch::strip_comments(&text);
    let split = batch::split(&clean).with_context(|| format!("{}", path.display()))?;
    Ok(split
        .messages
        .iter()
        .map(|m| {
            let segments: Vec<&str> = m.split(['\r', '\n']).filter(|l| !l.trim().is_empty()).collect();
            let mut out = segments.join("\r");
            out.push('\r');
            let msh18 = Message::header(&out)
                .map(|h| h.msh().field(18).raw().to_owned())
                .unwrap_or_default();
            charset::encode(&out, &msh18).into_owned()
        })
        .collect())
}

/// `carehub hl7 send FILE --to HOST:PORT`: each message over one MLLP
/// connection, each ACK printed. Exit 1 when any message was not accepted.
pub async fn send(file: &Path, to: &str, ack_timeout_ms: u64, max_attempts: usize) -> anyhow::Result<ExitCode> {
    let messages = messages_of(file)?;
    let mut config = SenderConfig::new(to);
    config.ack_timeout_ms = ack_timeout_ms;
    config.max_attempts = max_attempts;
    let mut sender = MllpSender::new(config);
    let mut failed = 0;
    for (i, m) in messages.iter().enumerate() {
        let (text, _) = charset::decode(m)?;
        let control_id = Message::header(&text)
            .map(|h| h.control_id().to_owned())
            .unwrap_or_default();
        match sender.send(m).await {
            Ok(ack) => println!(
                "{}/{} {control_id}: {}{}",
                i + 1,
                messages.len(),
                ack.code.as_str(),
                ack.text.map(|t| format!(" ({t})")).unwrap_or_default()
            ),
            Err(SendError::Rejected { ack, .. }) => {
                failed += 1;
                println!(
                    "{}/{} {control_id}: {} {}",
                    i + 1,
                    messages.len(),
                    ack.code.as_str(),
                    ack.text.unwrap_or_default()
                );
            }
            Err(e) => {
                failed += 1;
                println!("{}/{} {control_id}: not accepted: {e}", i + 1, messages.len());
            }
        }
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `carehub hl7 parse FILE`: the structure of each message as JSON, with
/// what the mapping makes of it and the segments it leaves unmapped.
pub fn parse(file: &Path) -> anyhow::Result<ExitCode> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let (text, cs) = carehub_hl7::codec::decode_text(&bytes).with_context(|| format!("{}", file.display()))?;
    let clean = batch::strip_comments(&text);
    let split = batch::split(&clean).with_context(|| format!("{}", file.display()))?;
    let mut out = Vec::new();
    let mut failed = false;
    for m in &split.messages {
        let msg = match Message::parse(m) {
            Ok(msg) => msg,
            Err(e) => {
                failed = true;
                out.push(serde_json::json!({ "error": e.to_string() }));
                continue;
            }
        };
        let segments: Vec<serde_json::Value> = msg
            .segments()
            .iter()
            .map(|s| {
                let fields: Vec<serde_json::Value> = s
                    .fields()
                    .enumerate()
                    .map(|(i, f)| field_json(&f, s.name() == "MSH" && i < 2))
                    .collect();
                serde_json::json!({ "segment": s.name(), "fields": fields })
            })
            .collect();
        let mapping = match map(&msg) {
            Ok(mapped) => serde_json::json!({ "command": mapped.command, "unmapped_segments": mapped.unmapped }),
            Err(e) => {
                serde_json::json!({ "error": { "hl7_code": e.code, "reason": e.reason, "reject": e.reject } })
            }
        };
        out.push(serde_json::json!({
            "type": msg.type_label(),
            "control_id": msg.control_id(),
            "version": msg.version(),
            "charset": cs,
            "encoding_characters": msg.delimiters().encoding_characters(),
            "segments": segments,
            "mapping": mapping,
        }));
    }
    let doc = serde_json::json!({ "file": file.display().to_string(), "batch": split.batch, "messages": out });
    println!("{}", serde_json::to_string_pretty(&doc)?);
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// A field as JSON: a string when simple, else repetitions → components → subcomponents.
fn field_json(v: &carehub_hl7::codec::Value<'_>, opaque: bool) -> serde_json::Value {
    if opaque {
        return v.raw().into();
    }
    let reps: Vec<serde_json::Value> = v
        .repetitions()
        .map(|r| {
            let comps: Vec<serde_json::Value> = r
                .components()
                .map(|c| {
                    let subs: Vec<serde_json::Value> = c.subcomponents().map(|s| s.decoded().into()).collect();
                    if subs.len() == 1 {
                        subs.into_iter().next().unwrap_or_default()
                    } else {
                        subs.into()
                    }
                })
                .collect();
            if comps.len() == 1 {
                comps.into_iter().next().unwrap_or_default()
            } else {
                comps.into()
            }
        })
        .collect();
    if reps.len() == 1 {
        reps.into_iter().next().unwrap_or_default()
    } else {
        reps.into()
    }
}

/// Builds the MLLP listener for `carehub serve`.
pub async fn listener(
    cfg: &crate::config::Config,
    pool: PgPool,
    producer: FutureProducer,
) -> anyhow::Result<carehub_hl7::MllpListener> {
    let sink = Arc::new(Hl7Store {
        pool,
        producer,
        topic: cfg.pipelines.hl7.topic.clone(),
        pipeline: "hl7".to_owned(),
        listener: cfg.hl7.listener.listen.to_string(),
        store_timeout: Duration::from_millis(cfg.hl7.store_timeout_ms),
    });
    carehub_hl7::MllpListener::bind(cfg.hl7.listener.clone(), sink)
        .await
        .with_context(|| format!("binding hl7.listener.listen = {}", cfg.hl7.listener.listen))
}
