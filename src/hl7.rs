//! The `carehub hl7 send|parse|receive` tools. (The MLLP listener of
//! `carehub serve` is `carehub_hl7::component`, registered in `registry.rs`.)

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use carehub_hl7::codec::{Message, batch, charset};
use carehub_hl7::{MllpSender, SendError, SenderConfig};
use carehub_pipeline_hl7::map;

/// The messages of a file (one, several, or a batch), segments CR-separated.
#[cfg(feature = "fhir")]
pub fn message_texts(path: &Path) -> anyhow::Result<Vec<String>> {
    Ok(read_message_file(path)?.messages)
}

fn read_message_file(path: &Path) -> anyhow::Result<batch::MessageFile> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    batch::message_file(&bytes).with_context(|| format!("{}", path.display()))
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
    let batch::MessageFile {
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
            "segments": carehub_hl7::codec::json::segments(&msg),
            "mapping": mapping,
        }));
    }
    let doc = serde_json::json!({ "file": file.display().to_string(), "batch": batch, "messages": out });
    println!("{}", serde_json::to_string_pretty(&doc)?);
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
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

/// `carehub patient repair-splits [--apply]`: one JSON line per patient
/// found; with `--apply` each that has a survivor is merged into it (one
/// transaction each, audited). Exit 1 when some could not be resolved.
pub async fn repair_splits(cfg: &crate::config::Config, apply: bool, actor: &str) -> anyhow::Result<ExitCode> {
    use carehub_pipeline_hl7::repair;
    let pool = crate::commands::connect(cfg).await?;
    let mut conn = pool.acquire().await?;
    let splits = repair::find_split_patients(&mut conn).await?;
    drop(conn);
    let mut unresolved = 0;
    for split in &splits {
        let merged = if apply && split.survivor_id.is_some() {
            let mut tx = pool.begin().await?;
            let done = repair::repair(&mut tx, split, actor).await?;
            tx.commit().await?;
            done
        } else {
            false
        };
        unresolved += usize::from(split.survivor_id.is_none());
        println!("{}", serde_json::json!({ "split": split, "merged": merged }));
    }
    eprintln!(
        "{} split patient(s), {} without a survivor{}",
        splits.len(),
        unresolved,
        if apply { "" } else { " (dry run: --apply merges)" }
    );
    Ok(if unresolved == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
