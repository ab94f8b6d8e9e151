//! The `carehub hl7 send|parse|receive` tools, and the MLLP listener's wiring:
//! the listener stores through `carehub_hl7::Hl7Ingress` (stored before
//! acknowledged, see there) and judges content with the HL7 pipeline's mapping.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use carehub_hl7::codec::{Message, batch, charset};
use carehub_hl7::{Hl7Ingress, Hl7IngressConfig, MllpSender, SendError, SenderConfig};
use carehub_pipeline_hl7::map;
use sqlx::PgPool;

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
    let judge = carehub_pipeline_hl7::MappingJudge::with_application_acks(cfg.pipelines.hl7.ack_destinations.clone());
    let sink = Arc::new(Hl7Ingress::start(
        pool,
        Hl7IngressConfig {
            topic: cfg.pipelines.hl7.topic.clone(),
            listener: cfg.hl7.listener.listen.to_string(),
            store_timeout: Duration::from_millis(cfg.hl7.store_timeout_ms),
            store_workers: cfg.hl7.store_workers,
        },
        Arc::new(judge),
    ));
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
