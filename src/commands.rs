//! The operator commands other than `serve`.

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use carehub_pipeline::ReplayOutcome;
use carehub_schema::audit::AuditRow;
use carehub_schema::{
    Action, ActorKind, AuditEntry, AuditLog, DeadLetters, Envelope, MessageStore, OutboxRow, StoredMessage,
};
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::FutureRecord;
use rdkafka::{Offset, TopicPartitionList};
use serde_json::json;
use sqlx::PgPool;

use crate::config::Config;

/// A pool that has answered once, or an error naming the server.
pub async fn connect(cfg: &Config) -> anyhow::Result<PgPool> {
    let pool = crate::db::pool(&cfg.database).context("database.url")?;
    sqlx::query("SELECT 1")
        .execute(&pool)
        .await
        .with_context(|| format!("PostgreSQL at {} is unreachable", crate::db::describe(&cfg.database)))?;
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
        crate::db::describe(&cfg.database)
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
    let rows = DeadLetters::list(&pool, status, limit).await?;
    // Dead letters hold messages' bytes: reading them is on the trail
    // (hardening item 9), one entry per dead letter shown.
    if !rows.is_empty() {
        let entries: Vec<AuditEntry> = rows
            .iter()
            .map(|d| {
                AuditEntry::new(ActorKind::User, actor, Action::Read, "dead_letter")
                    .entity(d.id)
                    .message(d.message_id)
                    .origin("cli:dlq list")
            })
            .collect();
        let mut tx = pool.begin().await?;
        AuditLog::append(&mut tx, &entries).await?;
        tx.commit().await?;
    }
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

/// `carehub patient repair-splits [--apply]`: one JSON line per patient
/// found; with `--apply` each that has a survivor is merged into it (one
/// transaction each, audited). Exit 1 when some could not be resolved.
pub async fn repair_splits(cfg: &Config, apply: bool, actor: &str) -> anyhow::Result<ExitCode> {
    use carehub_pipeline_hl7::repair;
    let pool = connect(cfg).await?;
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

pub async fn dlq_replay(cfg: &Config, id: i64, actor: &str) -> anyhow::Result<ExitCode> {
    let pool = connect(cfg).await?;
    let (consumer,): (String,) = sqlx::query_as("SELECT consumer FROM dead_letter WHERE id = $1")
        .bind(id)
        .fetch_optional(&pool)
        .await?
        .with_context(|| format!("dead letter {id} does not exist"))?;
    if consumer == carehub_hl7::outbound::CONSUMER || consumer == carehub_fhir::push::CONSUMER {
        let producer = carehub_kafka::idempotent_producer(&cfg.kafka)?;
        carehub_connector_kit::replay(&pool, &producer, id, actor).await?;
        println!("dead letter {id} replayed: its message is back on the outbound topic for delivery");
        return Ok(ExitCode::SUCCESS);
    }
    let Some(spec) = crate::pipelines::all(cfg, &pool)
        .into_iter()
        .find(|p| p.engine.name() == consumer)
    else {
        bail!("dead letter {id} belongs to pipeline {consumer:?}, which this carehub does not run");
    };
    match spec.engine.replay(id, actor).await? {
        ReplayOutcome::Applied { message_id } => {
            println!("dead letter {id} replayed: applied (message {message_id})");
            Ok(ExitCode::SUCCESS)
        }
        ReplayOutcome::AlreadyApplied => {
            println!("dead letter {id}: the event had already been applied; marked replayed");
            Ok(ExitCode::SUCCESS)
        }
        ReplayOutcome::StillFailing { code, reason } => {
            println!("dead letter {id} still fails ({code}): {reason}");
            Ok(ExitCode::FAILURE)
        }
        ReplayOutcome::NotOpen { status } => {
            println!("dead letter {id} is {status}, not open: nothing to do");
            Ok(ExitCode::FAILURE)
        }
    }
}

pub async fn retention(cfg: &Config, keep_months: i32, actor: &str) -> anyhow::Result<ExitCode> {
    let pool = connect(cfg).await?;
    let mut tx = pool.begin().await?;
    let dropped = MessageStore::drop_partitions(&mut tx, keep_months).await?;
    let entries: Vec<AuditEntry> = dropped
        .iter()
        .map(|p| {
            AuditEntry::new(ActorKind::User, actor, Action::Delete, "message_partition")
                .entity(p)
                .detail(json!({ "keep_months": keep_months }))
        })
        .collect();
    AuditLog::append(&mut tx, &entries).await?;
    tx.commit().await?;
    if dropped.is_empty() {
        println!("no message partitions older than {keep_months} months");
    }
    for p in dropped {
        println!("dropped {p}");
    }
    Ok(ExitCode::SUCCESS)
}

pub fn config_check(cfg: &Config) -> anyhow::Result<ExitCode> {
    crate::db::pool(&cfg.database).context("database.url is not a PostgreSQL URL")?;
    println!("{}", cfg.redacted_toml().context("printing the configuration")?);
    eprintln!("configuration OK");
    Ok(ExitCode::SUCCESS)
}

pub async fn intake_send(cfg: &Config, event_type: &str, file: &Path) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let data: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", file.display()))?;
    let event = Envelope::new(event_type, "/carehub/cli", data);
    let producer = carehub_kafka::idempotent_producer(&cfg.kafka)?;
    let payload = serde_json::to_string(&event)?;
    let topic = &cfg.pipelines.intake.topic;
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
        let msg: Option<StoredMessage> =
            sqlx::query_as("SELECT * FROM message WHERE control_id = $1 ORDER BY received_at LIMIT 1")
                .bind(event_id)
                .fetch_optional(&pool)
                .await?;
        if let Some(m) = msg {
            let unsent = outbox_of(&pool, m.id).await?.iter().any(|r| r.sent_at.is_none());
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
    let rows: Vec<(serde_json::Value,)> = sqlx::query_as(
        "SELECT jsonb_build_object('table', 'organization', 'row', to_jsonb(o)) FROM organization o WHERE source_message_id = $1
         UNION ALL
         SELECT jsonb_build_object('table', 'patient', 'row', to_jsonb(p) || jsonb_build_object('identifiers',
                (SELECT jsonb_agg(jsonb_build_object('system', i.system, 'value', i.value, 'type', i.type_code))
                   FROM patient_identifier i WHERE i.patient_id = p.id)))
           FROM patient p WHERE source_message_id = $1",
    )
    .bind(msg.id)
    .fetch_all(&pool)
    .await?;
    // Showing patient data is a read of patient data: audit it first.
    let reads: Vec<AuditEntry> = rows
        .iter()
        .filter(|(r,)| r["table"] == "patient")
        .filter_map(|(r,)| r["row"]["id"].as_str())
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
    for (row,) in &rows {
        print_json(row);
    }

    println!("\n== audit entries");
    for a in AuditLog::for_message(&pool, msg.id).await? {
        print_audit(&a);
    }

    let dead: Vec<(i64, String, String)> =
        sqlx::query_as("SELECT id, error_code, reason FROM dead_letter WHERE message_id = $1 ORDER BY id")
            .bind(msg.id)
            .fetch_all(&pool)
            .await?;
    for (id, code, reason) in &dead {
        println!("\n== dead letter {id}: {code}: {reason}");
    }

    let outbox = outbox_of(&pool, msg.id).await?;
    println!("\n== outbound Kafka records ({})", outbox.len());
    for row in &outbox {
        match find_record(cfg, &row.topic, &row.event_id.to_string(), deadline) {
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

async fn outbox_of(pool: &PgPool, message_id: uuid::Uuid) -> anyhow::Result<Vec<OutboxRow>> {
    Ok(
        sqlx::query_as("SELECT * FROM outbox WHERE payload->'data'->>'source_message_id' = $1 ORDER BY id")
            .bind(message_id.to_string())
            .fetch_all(pool)
            .await?,
    )
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

/// Scans `topic` from the beginning for the record whose envelope id is `event_id`.
fn find_record(cfg: &Config, topic: &str, event_id: &str, deadline: Instant) -> Option<(i32, i64, serde_json::Value)> {
    let consumer: BaseConsumer = cfg
        .kafka
        .client_config()
        .set("group.id", "carehub-trace")
        .set("enable.auto.commit", "false")
        .create()
        .ok()?;
    let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(5)).ok()?;
    let mut tpl = TopicPartitionList::new();
    for p in md.topics().first()?.partitions() {
        tpl.add_partition_offset(topic, p.id(), Offset::Beginning).ok()?;
    }
    consumer.assign(&tpl).ok()?;
    while Instant::now() < deadline + Duration::from_secs(5) {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(500)) {
            let Some(bytes) = m.payload() else { continue };
            let Ok(v) = serde_json::from_slice::<serde_json::Value>(bytes) else {
                continue;
            };
            if v.get("id").and_then(|i| i.as_str()) == Some(event_id) {
                return Some((m.partition(), m.offset(), v));
            }
        }
    }
    None
}

/// `carehub token issue`: an HS256 access token for the FHIR endpoint.
pub fn token_issue(
    cfg: &Config,
    sub: &str,
    role: Option<&str>,
    scope: Option<&str>,
    patient: Option<uuid::Uuid>,
    minutes: Option<i64>,
) -> anyhow::Result<ExitCode> {
    let scope = match (role, scope) {
        (Some(r), _) => carehub_fhir::Role::parse(r)
            .with_context(|| format!("unknown role {r:?} (clinician, admin, lab_technician, system)"))?
            .scopes()
            .to_owned(),
        (None, Some(s)) => s.to_owned(),
        (None, None) => bail!("give --role or --scope"),
    };
    let token = carehub_fhir::auth::issue(&cfg.fhir.auth, sub, &scope, patient, minutes)?;
    println!("{token}");
    Ok(ExitCode::SUCCESS)
}
