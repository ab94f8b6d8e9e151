//! The operator commands other than `serve`.

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use carehub_schema::audit::AuditRow;
use carehub_schema::views;
use carehub_schema::{Action, ActorKind, AuditEntry, AuditLog, DeadLetters, Envelope, MessageStore, StoredMessage};
use rdkafka::producer::FutureRecord;
use serde_json::json;
use sqlx::PgPool;

use crate::config::Config;

/// A pool that has answered once, or an error naming the server.
pub async fn connect(cfg: &Config) -> anyhow::Result<PgPool> {
    let pool = carehub_schema::db::pool(&cfg.database).context("database.url")?;
    sqlx::query("SELECT 1").execute(&pool).await.with_context(|| {
        format!(
            "PostgreSQL at {} is unreachable",
            carehub_schema::db::describe(&cfg.database)
        )
    })?;
    Ok(pool)
}

pub async fn migrate(cfg: &Config) -> anyhow::Result<ExitCode> {
    let pool = connect(cfg).await?;
    carehub_schema::migrate(&pool).await.context("applying migrations")?;
    let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM _sqlx_migrations")
        .fetch_one(&pool)
        .await?;
    println!(
        "migrations applied: {n} (database {})",
        carehub_schema::db::describe(&cfg.database)
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn audit_verify(cfg: &Config) -> anyhow::Result<ExitCode> {
    let pool = connect(cfg).await?;
    let v = AuditLog::verify(&pool).await?;
    match v.first_break {
        None => {
            println!("audit trail intact: {} rows verified", v.rows);
            Ok(ExitCode::SUCCESS)
        }
        Some(b) => {
            println!("audit trail BROKEN at row seq={}: {}", b.seq, b.reason);
            Ok(ExitCode::FAILURE)
        }
    }
}

pub async fn dlq_list(cfg: &Config, status: Option<&str>, limit: i64, actor: &str) -> anyhow::Result<ExitCode> {
    let pool = connect(cfg).await?;
    let rows = DeadLetters::list_audited(&pool, status, limit, actor, "cli:dlq list").await?;
    if rows.is_empty() {
        println!("no dead letters");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:>6}  {:<9} {:<10} {:<22} {:<20} {:>7}  reason",
        "id", "status", "pipeline", "topic", "error_code", "replays"
    );
    for d in rows {
        println!(
            "{:>6}  {:<9} {:<10} {:<22} {:<20} {:>7}  {}",
            d.id, d.status, d.consumer, d.topic, d.error_code, d.replay_count, d.reason
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn dlq_replay(cfg: &Config, id: i64, actor: &str) -> anyhow::Result<ExitCode> {
    let pool = connect(cfg).await?;
    let consumer = DeadLetters::consumer_of(&pool, id)
        .await?
        .with_context(|| format!("dead letter {id} does not exist"))?;
    let registry = crate::registry::registry(cfg);
    let Some(owner) = registry.owner_of_dead_letters(&consumer) else {
        bail!("dead letter {id} belongs to {consumer:?}, which this carehub does not run");
    };
    let replayed = owner
        .replay(&pool, &cfg.kafka, id, actor)
        .await
        .map_err(|e| anyhow::anyhow!("replaying dead letter {id}: {e}"))?;
    println!("{}", replayed.said);
    Ok(if replayed.done {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

pub async fn retention(cfg: &Config, keep_months: i32, actor: &str) -> anyhow::Result<ExitCode> {
    let pool = connect(cfg).await?;
    let dropped = MessageStore::apply_retention(&pool, keep_months, actor).await?;
    if dropped.is_empty() {
        println!("no message partitions older than {keep_months} months");
    }
    for p in dropped {
        println!("dropped {p}");
    }
    Ok(ExitCode::SUCCESS)
}

pub fn config_check(cfg: &Config) -> anyhow::Result<ExitCode> {
    carehub_schema::db::pool(&cfg.database).context("database.url is not a PostgreSQL URL")?;
    println!("{}", cfg.redacted_toml().context("printing the configuration")?);
    eprintln!("configuration OK");
    Ok(ExitCode::SUCCESS)
}

/// Publishes the JSON in `file` as the `data` of an `event_type` envelope to `topic`.
pub async fn publish_event(cfg: &Config, topic: &str, event_type: &str, file: &Path) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let data: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", file.display()))?;
    let event = Envelope::new(event_type, "/carehub/cli", data);
    let producer = carehub_kafka::idempotent_producer(&cfg.kafka)?;
    let payload = serde_json::to_string(&event)?;
    producer
        .send(
            FutureRecord::to(topic).key(&event.id).payload(&payload),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| e)
        .with_context(|| format!("producing to {topic} at {}", cfg.kafka.brokers))?;
    println!("{}", event.id);
    Ok(ExitCode::SUCCESS)
}

pub async fn trace(cfg: &Config, event_id: &str, wait_secs: u64, actor: &str) -> anyhow::Result<ExitCode> {
    let pool = connect(cfg).await?;
    let deadline = Instant::now() + Duration::from_secs(wait_secs);
    // Wait until the pipeline handled the event and the relay published its results.
    let msg: StoredMessage = loop {
        if let Some(m) = views::message_by_control_id(&pool, event_id).await? {
            let unsent = views::outbox_of(&pool, m.id).await?.iter().any(|r| r.sent_at.is_none());
            if m.status != "received" && !unsent {
                break m;
            }
        }
        if Instant::now() > deadline {
            bail!("event {event_id} was not processed within {wait_secs}s (is `carehub serve` running?)");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    println!("== inbound message (message store)");
    print_json(&json!({
        "id": msg.id, "received_at": msg.received_at, "connector": msg.connector, "protocol": msg.protocol,
        "message_type": msg.message_type, "control_id": msg.control_id, "source_key": msg.source_key,
        "status": msg.status, "processed_at": msg.processed_at, "error": msg.error,
        "patient_id": msg.patient_id, "raw_bytes": msg.raw.len(),
    }));

    println!(
        "\n== canonical rows written by this message (source_message_id = {})",
        msg.id
    );
    let rows = views::rows_written_by(&pool, msg.id).await?;
    // Showing patient data is a read of patient data: audit it first.
    let reads: Vec<AuditEntry> = rows
        .iter()
        .filter(|r| r["table"] == "patient")
        .filter_map(|r| r["row"]["id"].as_str())
        .map(|id| {
            AuditEntry::new(ActorKind::User, actor, Action::Read, "patient")
                .entity(id)
                .message(Some(msg.id))
                .origin("cli:trace")
        })
        .collect();
    let mut tx = pool.begin().await?;
    AuditLog::append(&mut tx, &reads).await?;
    tx.commit().await?;
    for row in &rows {
        print_json(row);
    }

    println!("\n== audit entries");
    for a in AuditLog::for_message(&pool, msg.id).await? {
        print_audit(&a);
    }

    for (id, code, reason) in &views::dead_letters_of(&pool, msg.id).await? {
        println!("\n== dead letter {id}: {code}: {reason}");
    }

    let outbox = views::outbox_of(&pool, msg.id).await?;
    println!("\n== outbound Kafka records ({})", outbox.len());
    for row in &outbox {
        match carehub_kafka::find_event(&cfg.kafka, &row.topic, &row.event_id.to_string(), deadline) {
            Some((partition, offset, payload)) => {
                println!(
                    "topic {} partition {partition} offset {offset} key {}",
                    row.topic, row.key
                );
                print_json(&payload);
            }
            None => println!("topic {}: event {} not found on the broker", row.topic, row.event_id),
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_json(v: &serde_json::Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string()));
}

fn print_audit(a: &AuditRow) {
    println!(
        "#{:<5} {} {:<9} {:<18} {:<7} {} {} {}",
        a.seq,
        a.at.format("%H:%M:%S%.3f"),
        a.actor_kind,
        a.actor_id,
        a.action,
        a.entity_type,
        a.entity_id.as_deref().unwrap_or("-"),
        a.detail.as_deref().unwrap_or("")
    );
}
