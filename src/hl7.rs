//! The HL7 v2 edge of the binary: the MLLP listener's sink, and the
//! `carehub hl7 send|parse` tools.
//!
//! What "stored before acknowledged" means for MLLP: before AA is sent, one
//! PostgreSQL transaction has committed the message's bytes to the message
//! store (under its source key `hl7:<MSH-4>:<MSH-3>:<MSH-10>`) and, in the
//! outbox, its `carehub.hl7v2.received.v1` record for the HL7 pipeline's
//! topic. The record refers to the stored message (its id), it does not
//! carry the bytes: whatever the listener accepts fits on the topic, and
//! nothing reaches the topic that the store refused. The `OutboxRelay`
//! publishes it. PostgreSQL down: AR with error 207, never AA. The broker
//! down: AA once stored; the pipeline applies the message when the broker
//! is back.
//!
//! A message whose content the mapping refuses (see
//! `carehub_pipeline_hl7::validate`) is stored as failed with a dead letter
//! and the reason, in the same transaction, and answered AE (content) or AR
//! (unsupported type or version, no usable MSH-10). A message the store
//! cannot take at all is kept as a dead letter and answered AR.
//! `carehub dlq replay` runs a dead letter through the HL7 pipeline once the
//! cause is fixed.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_trait::async_trait;
use carehub_core::internal_events::{ChangedDuplicate, DeadLettered};
use carehub_hl7::codec::{AckError, Message, batch, charset};
use carehub_hl7::listener::{CONNECTOR, Inbound, InboundSink, Unavailable, Verdict};
use carehub_hl7::{MllpSender, SendError, SenderConfig};
use carehub_pipeline_hl7::{identity_error, map, source_key, validate};
use carehub_schema::contracts::Received;
use carehub_schema::message_store::fit_column;
use carehub_schema::{
    Action, ActorKind, AuditEntry, AuditLog, DeadLetters, Envelope, MessageStore, NewDeadLetter, NewMessage, Outbox,
};
use sqlx::PgPool;
use tokio::sync::{Mutex, mpsc, oneshot};

/// Most messages one store transaction takes.
const MAX_BATCH: usize = 500;

/// Stores each received message (message store + outbox record) before it
/// is acknowledged. Messages arriving together on many connections share one
/// transaction (group commit): `workers` transactions run at a time, each
/// taking whatever messages are waiting, so a busy listener pays one commit
/// for many messages, and an idle one answers at once.
pub struct Hl7Store {
    jobs: mpsc::Sender<Job>,
    listener: String,
    store_timeout: Duration,
    /// Senders that get application ACKs (enhanced mode): their content
    /// errors are committed (CA) and answered AE by the pipeline.
    ack_routes: carehub_pipeline_hl7::app_ack::AckRoutes,
}

impl std::fmt::Debug for Hl7Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hl7Store").field("listener", &self.listener).finish()
    }
}

/// What the store needs to know; shared by its workers.
struct StoreTarget {
    pool: PgPool,
    /// The HL7 pipeline's topic, and its name (the consumer of its dead letters).
    topic: String,
    pipeline: String,
    listener: String,
}

/// One received message, prepared on its connection's task.
struct Prepared {
    verdict: Verdict,
    key: String,
    partition_key: String,
    message_type: Option<String>,
    control_id: Option<String>,
    origin: String,
    peer: String,
    raw: Vec<u8>,
}

/// Why a store transaction failed: storage is down (retry later), or this
/// content can never be stored (keep it as a dead letter, refuse it).
enum StoreFailure {
    Unavailable(Unavailable),
    Refused(String),
}

impl From<Unavailable> for StoreFailure {
    fn from(u: Unavailable) -> Self {
        StoreFailure::Unavailable(u)
    }
}

struct Job {
    item: Prepared,
    reply: oneshot::Sender<Result<Verdict, Unavailable>>,
}

impl Hl7Store {
    pub fn start(pool: PgPool, topic: String, listener: String, store_timeout: Duration, workers: usize) -> Self {
        let (jobs, rx) = mpsc::channel::<Job>(MAX_BATCH * workers.max(1) * 2);
        let rx = Arc::new(Mutex::new(rx));
        let target = Arc::new(StoreTarget {
            pool,
            topic,
            pipeline: "hl7".to_owned(),
            listener: listener.clone(),
        });
        for _ in 0..workers.max(1) {
            tokio::spawn(worker(rx.clone(), target.clone()));
        }
        Hl7Store {
            jobs,
            listener,
            store_timeout,
            ack_routes: Default::default(),
        }
    }

    /// See [`carehub_pipeline_hl7::app_ack`].
    pub fn with_application_acks(mut self, routes: carehub_pipeline_hl7::app_ack::AckRoutes) -> Self {
        self.ack_routes = routes;
        self
    }

    /// In enhanced mode, with an application ACK wanted and a destination for
    /// it, a content error is the application's to report: the commit ACK is
    /// CA (stored) and the pipeline answers AE. Otherwise the error is
    /// answered at once (AE, or CE in enhanced mode).
    fn answered_later(&self, msg: &Message<'_>, e: &carehub_pipeline_hl7::MappingError) -> bool {
        !e.reject && carehub_pipeline_hl7::app_ack::routed(msg, carehub_hl7::codec::Outcome::Error, &self.ack_routes)
    }

    fn prepare(&self, inbound: &Inbound<'_>) -> Prepared {
        let origin = format!("mllp:{}", inbound.peer);
        let unparsed_key = || format!("hl7:unparsed:{}", uuid::Uuid::now_v7());
        let identity = inbound.parsed.ok().and_then(|msg| identity_error(msg));
        let (verdict, key, partition_key, message_type, control_id) = match (inbound.parsed, identity) {
            // A message without a usable MSH-10 has no identity: it is kept
            // under a key of its own, never taken for another's duplicate.
            (Ok(msg), Some(e)) => {
                let e = e.ack_error();
                let msh = msg.msh();
                (
                    Verdict::Rejected(e),
                    unparsed_key(),
                    format!("{}:{}", msh.field(4).raw(), msh.field(3).raw()),
                    Some(msg.type_label()),
                    None,
                )
            }
            (Ok(msg), None) => {
                let verdict = match validate(msg) {
                    Ok(()) => Verdict::Accepted,
                    Err(e) if self.answered_later(msg, &e) => Verdict::Accepted,
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
            (Err(e), _) => {
                let (code, location) = e.hl7_error();
                let mut err = AckError::new(code, e.to_string());
                err.location = location;
                (
                    Verdict::Rejected(err),
                    unparsed_key(),
                    inbound.peer.ip().to_string(),
                    None,
                    None,
                )
            }
        };
        Prepared {
            verdict,
            key,
            partition_key: fit_column(&partition_key),
            message_type: message_type.as_deref().map(fit_column),
            control_id: control_id.as_deref().map(fit_column),
            origin,
            peer: inbound.peer.to_string(),
            raw: inbound.raw.to_vec(),
        }
    }
}

#[async_trait]
impl InboundSink for Hl7Store {
    async fn store(&self, inbound: Inbound<'_>) -> Result<Verdict, Unavailable> {
        let item = self.prepare(&inbound);
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job { item, reply })
            .await
            .map_err(|_| Unavailable("the store is shutting down".into()))?;
        match tokio::time::timeout(self.store_timeout, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(Unavailable("the store dropped the message".into())),
            Err(_) => Err(Unavailable(format!(
                "not stored within {} ms",
                self.store_timeout.as_millis()
            ))),
        }
    }
}

/// Takes whatever messages are waiting (at least one), stores them in one
/// transaction, answers each.
async fn worker(rx: Arc<Mutex<mpsc::Receiver<Job>>>, target: Arc<StoreTarget>) {
    loop {
        let batch = {
            let mut rx = rx.lock().await;
            let Some(first) = rx.recv().await else { return };
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            batch
        };
        let items: Vec<&Prepared> = batch.iter().map(|j| &j.item).collect();
        let results: Vec<Result<Verdict, Unavailable>> = match target.write(&items).await {
            Ok(()) => items.iter().map(|p| Ok(p.verdict.clone())).collect(),
            // One message must not hold the others hostage: a failed batch is
            // tried again one message at a time, so only what fails alone is refused.
            Err(_) if batch.len() > 1 => {
                let mut results = Vec::with_capacity(batch.len());
                for item in &items {
                    results.push(target.write_alone(item).await);
                }
                results
            }
            Err(_) => vec![target.write_alone(items[0]).await],
        };
        for (job, result) in batch.into_iter().zip(results) {
            let _ = job.reply.send(result);
        }
    }
}

fn unavailable(what: &str) -> impl FnOnce(carehub_schema::Error) -> StoreFailure + '_ {
    move |e| {
        if e.is_transient() {
            StoreFailure::Unavailable(Unavailable(format!("{what}: {e}")))
        } else {
            // The database answered and refused this content: retrying cannot help.
            StoreFailure::Refused(format!(
                "the {what} refused the message ({})",
                e.code().unwrap_or("no SQLSTATE")
            ))
        }
    }
}

impl StoreTarget {
    /// One message on its own; one that can never be stored is kept as a
    /// dead letter (its bytes, the reason) and refused AR, so the sender
    /// stops resending it and nothing is lost (hardening item 2).
    async fn write_alone(&self, item: &Prepared) -> Result<Verdict, Unavailable> {
        match self.write(&[item]).await {
            Ok(()) => Ok(item.verdict.clone()),
            Err(StoreFailure::Unavailable(u)) => Err(u),
            Err(StoreFailure::Refused(reason)) => {
                let mut tx = self
                    .pool
                    .begin()
                    .await
                    .map_err(|e| Unavailable(format!("PostgreSQL: {e}")))?;
                let id = self
                    .dead_letter(&mut tx, item, &item.raw, None, None, "store_error", &reason)
                    .await
                    .map_err(|e| Unavailable(format!("dead letters: {e}")))?;
                let audit = AuditEntry::new(ActorKind::Connector, CONNECTOR, Action::Ingest, "dead_letter")
                    .entity(id)
                    .origin(item.origin.clone())
                    .detail(serde_json::json!({ "error_code": "store_error" }));
                AuditLog::append(&mut tx, &[audit])
                    .await
                    .map_err(|e| Unavailable(format!("audit trail: {e}")))?;
                tx.commit()
                    .await
                    .map_err(|e| Unavailable(format!("PostgreSQL commit: {e}")))?;
                self.announce(vec![("store_error", id)]);
                Ok(Verdict::Rejected(AckError::new(
                    207,
                    format!("message cannot be stored: {reason}; kept as dead letter {id}"),
                )))
            }
        }
    }

    /// A dead letter of the HL7 pipeline for a message the listener took.
    #[allow(clippy::too_many_arguments)]
    async fn dead_letter(
        &self,
        conn: &mut sqlx::PgConnection,
        item: &Prepared,
        payload: &[u8],
        event_id: Option<&str>,
        message_id: Option<uuid::Uuid>,
        code: &str,
        reason: &str,
    ) -> Result<i64, carehub_schema::Error> {
        DeadLetters::insert(
            conn,
            &NewDeadLetter {
                consumer: &self.pipeline,
                topic: &self.topic,
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

    fn announce(&self, dead_letters: Vec<(&'static str, i64)>) {
        for (code, id) in dead_letters {
            DeadLettered {
                pipeline: &self.pipeline,
                error_code: code,
                dead_letter_id: id,
            }
            .emit();
        }
    }

    /// Stores a batch: new messages into the message store, the accepted
    /// ones' records into the outbox, the refused ones into the dead letters;
    /// one commit.
    async fn write(&self, items: &[&Prepared]) -> Result<(), StoreFailure> {
        let started = std::time::Instant::now();
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(|e| Unavailable(format!("PostgreSQL: {e}")))?;
        let news: Vec<NewMessage<'_>> = items
            .iter()
            .map(|p| NewMessage {
                connector: CONNECTOR,
                protocol: "hl7v2",
                message_type: p.message_type.as_deref(),
                control_id: p.control_id.as_deref(),
                source_key: &p.key,
                origin: Some(&p.origin),
                raw: &p.raw,
            })
            .collect();
        let ingested = MessageStore::ingest_batch(&mut tx, &news)
            .await
            .map_err(unavailable("message store"))?;
        let mut audit = Vec::new();
        let mut dead_letters = Vec::new();
        let mut records: Vec<(&str, Envelope)> = Vec::new();
        for (p, ing) in items.iter().zip(&ingested) {
            if ing.is_changed_duplicate() {
                // Same key, other content: kept for review, not applied (HL7
                // holds it; the first copy stands).
                ChangedDuplicate {
                    connector: CONNECTOR,
                    message_id: ing.id(),
                }
                .emit();
            }
            if ing.is_duplicate() {
                // Stored (and announced) before: the same answer, no second effect.
                continue;
            }
            let message_id = ing.id();
            let envelope = Received::new(message_id, &p.peer, &self.listener).into_envelope(Some(&p.key));
            let e = match &p.verdict {
                Verdict::Accepted => {
                    records.push((&p.partition_key, envelope));
                    continue;
                }
                Verdict::Error(e) | Verdict::Rejected(e) => e,
            };
            let code = match &p.verdict {
                Verdict::Error(_) => "invalid_data",
                _ if p.message_type.is_none() || p.control_id.is_none() => "invalid_envelope",
                _ => "unknown_type",
            };
            MessageStore::mark_failed(&mut tx, message_id, &e.text)
                .await
                .map_err(unavailable("message store"))?;
            let payload = serde_json::to_vec(&envelope).map_err(|e| Unavailable(e.to_string()))?;
            let id = self
                .dead_letter(
                    &mut tx,
                    p,
                    &payload,
                    Some(&envelope.id),
                    Some(message_id),
                    code,
                    &e.text,
                )
                .await
                .map_err(unavailable("dead letters"))?;
            audit.push(
                AuditEntry::new(ActorKind::Connector, CONNECTOR, Action::Ingest, "message")
                    .entity(message_id)
                    .message(Some(message_id))
                    .origin(p.origin.clone())
                    .detail(serde_json::json!({ "dead_letter": id, "error_code": code, "hl7_error": e.code })),
            );
            dead_letters.push((code, id));
        }
        let refs: Vec<(&str, &Envelope)> = records.iter().map(|(k, e)| (*k, e)).collect();
        Outbox::enqueue_batch(&mut tx, &self.topic, &refs)
            .await
            .map_err(unavailable("outbox"))?;
        if !audit.is_empty() {
            AuditLog::append(&mut tx, &audit)
                .await
                .map_err(unavailable("audit trail"))?;
        }
        let stored = started.elapsed();
        tx.commit()
            .await
            .map_err(|e| Unavailable(format!("PostgreSQL commit: {e}")))?;
        // Where a batch's time goes, for tuning (debug level).
        tracing::debug!(
            batch = items.len(),
            store_ms = stored.as_secs_f64() * 1e3,
            commit_ms = (started.elapsed() - stored).as_secs_f64() * 1e3,
            "MLLP store batch"
        );
        self.announce(dead_letters);
        Ok(())
    }
}

/// The messages of a file (one, several, or a batch; comment lines skipped),
/// each with CR between segments as on the wire, and the character set applied.
struct MessageFile {
    messages: Vec<String>,
    charset: carehub_hl7::codec::Charset,
    batch: bool,
}

/// The messages of a file (one, several, or a batch), segments CR-separated.
pub fn message_texts(path: &Path) -> anyhow::Result<Vec<String>> {
    Ok(read_message_file(path)?.messages)
}

fn read_message_file(path: &Path) -> anyhow::Result<MessageFile> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let (text, charset) = carehub_hl7::codec::decode_text(&bytes).with_context(|| format!("{}", path.display()))?;
    let clean = batch::strip_comments(&text);
    let split = batch::split(&clean).with_context(|| format!("{}", path.display()))?;
    let messages = split
        .messages
        .iter()
        .map(|m| {
            let mut out = m
                .split(['\r', '\n'])
                .filter(|l| !l.trim().is_empty())
                .collect::<Vec<_>>()
                .join("\r");
            out.push('\r');
            out
        })
        .collect();
    Ok(MessageFile {
        messages,
        charset,
        batch: split.batch,
    })
}

/// `carehub hl7 send FILE --to HOST:PORT`: each message over one MLLP
/// connection, each ACK printed. Exit 1 when any message was not accepted.
pub async fn send(file: &Path, to: &str, ack_timeout_ms: u64, max_attempts: usize) -> anyhow::Result<ExitCode> {
    let messages = read_message_file(file)?.messages;
    let mut config = SenderConfig::new(to);
    config.ack_timeout_ms = ack_timeout_ms;
    config.max_attempts = max_attempts;
    let mut sender = MllpSender::new(config);
    let mut failed = 0;
    for (i, text) in messages.iter().enumerate() {
        let header = Message::header(text).ok();
        let control_id = header.as_ref().map(|h| h.control_id().to_owned()).unwrap_or_default();
        let msh18 = header.as_ref().map_or("", |h| h.msh().field(18).raw());
        let m = charset::encode(text, msh18);
        match sender.send(&m).await {
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
    let MessageFile {
        messages,
        charset: cs,
        batch,
    } = read_message_file(file)?;
    let mut out = Vec::new();
    let mut failed = false;
    for m in &messages {
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
    let doc = serde_json::json!({ "file": file.display().to_string(), "batch": batch, "messages": out });
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
pub async fn listener(cfg: &crate::config::Config, pool: PgPool) -> anyhow::Result<carehub_hl7::MllpListener> {
    let sink = Arc::new(
        Hl7Store::start(
            pool,
            cfg.pipelines.hl7.topic.clone(),
            cfg.hl7.listener.listen.to_string(),
            Duration::from_millis(cfg.hl7.store_timeout_ms),
            cfg.hl7.store_workers,
        )
        .with_application_acks(cfg.pipelines.hl7.ack_destinations.clone()),
    );
    carehub_hl7::MllpListener::bind(cfg.hl7.listener.clone(), sink)
        .await
        .with_context(|| format!("binding hl7.listener.listen = {}", cfg.hl7.listener.listen))
}

/// `carehub hl7 receive --listen HOST:PORT`: a plain MLLP receiver that
/// prints a line per message (type, control id, order status, note) and
/// answers AA. It stands in for a clinic's EHR when trying carehub out; it
/// stores nothing. Stops after `count` messages when given.
pub async fn receive(listen: &str, count: Option<usize>) -> anyhow::Result<ExitCode> {
    use futures::{SinkExt, StreamExt};
    use tokio_util::codec::Framed;

    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    eprintln!("hl7 receive: listening on {listen}");
    let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(64);
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut framed = Framed::new(conn, carehub_hl7::codec::mllp::MllpCodec::new(1 << 20));
                while let Some(Ok(frame)) = framed.next().await {
                    let Ok((text, _)) = carehub_hl7::codec::decode_text(&frame) else {
                        return;
                    };
                    let Ok(msg) = Message::parse(&text) else { return };
                    let mut line = format!("{} {}", msg.type_label(), msg.control_id());
                    if msg.segment("ORC").is_some() {
                        line.push_str(&format!(
                            " ORC-1={} ORC-5={}",
                            msg.get("ORC-1").raw(),
                            msg.get("ORC-5").raw()
                        ));
                    }
                    if let Some(note) = msg.segment("NTE").and_then(|s| s.field(3).text()) {
                        line.push_str(&format!(" | {note}"));
                    }
                    let ack = carehub_hl7::codec::ack::build(&msg, carehub_hl7::codec::AckCode::AA, None, &msg_id());
                    if framed.send(ack.into_bytes()).await.is_err() || tx.send(line).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let mut n = 0;
    while let Some(line) = rx.recv().await {
        println!("{line}");
        n += 1;
        if count.is_some_and(|c| n >= c) {
            break;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn msg_id() -> String {
    uuid::Uuid::now_v7().simple().to_string()[12..32].to_owned()
}
