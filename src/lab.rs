//! `carehub lab …`: the lab side of the journey for trying carehub out
//! (`simulate`, a stand-in lab speaking the real topics), and an order's
//! timeline as the canonical record and its audit trail tell it.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use carehub_schema::contracts::{LAB_ORDER, LAB_STATUS, LabOrder, LabStatusReport, OrderAction};
use carehub_schema::lab::LabStatus;
use carehub_schema::{Action, ActorKind, AuditEntry, AuditLog, Envelope};
use rdkafka::consumer::Consumer as _;
use rdkafka::producer::FutureRecord;

use crate::config::Config;

/// The journey `simulate` reports for each new order: a failed quality
/// check and a remake included, so every kind of step is seen.
const JOURNEY: [LabStatus; 8] = [
    LabStatus::Accepted,
    LabStatus::InProduction,
    LabStatus::QcFailed,
    LabStatus::InProduction,
    LabStatus::QcPassed,
    LabStatus::ReadyToShip,
    LabStatus::Shipped,
    LabStatus::Delivered,
];

/// `carehub lab simulate`: reads new orders from the lab orders topic (its
/// own consumer group) and reports the journey above for each, one step
/// every `step_ms`. Stops after `orders` orders when given.
pub async fn simulate(cfg: &Config, group: &str, orders: Option<usize>, step_ms: u64) -> anyhow::Result<ExitCode> {
    let lab = &cfg.pipelines.lab;
    // The stand-in lab is the lab's own consumer: the broker's groups, no leases.
    let consumer = carehub_kafka::group_consumer(&cfg.kafka, group, &lab.orders_topic, None)
        .with_context(|| format!("consuming {}", lab.orders_topic))?;
    let producer = carehub_kafka::idempotent_producer(&cfg.kafka)?;
    eprintln!("lab simulate: waiting for orders on {}", lab.orders_topic);
    let mut done = 0;
    while orders.is_none_or(|n| done < n) {
        let rec = carehub_kafka::KafkaRecord::from(consumer.recv().await.context("receiving a lab order")?.detach());
        let order = Envelope::from_slice(rec.payload())
            .ok()
            .filter(|e| e.event_type == LAB_ORDER)
            .and_then(|e| serde_json::from_value::<LabOrder>(e.data).ok());
        carehub_kafka::store_next_offset(&consumer, &rec).context("storing the lab order's offset")?;
        let Some(order) = order.filter(|o| o.action == OrderAction::New) else {
            continue;
        };
        println!(
            "lab: order {} ({} item(s), due {}) received",
            order.order_id,
            order.items.len(),
            order.due_date.map_or("-".to_owned(), |d| d.to_string())
        );
        for (i, status) in JOURNEY.into_iter().enumerate() {
            tokio::time::sleep(Duration::from_millis(step_ms)).await;
            let report = LabStatusReport {
                order_id: order.order_id,
                sequence: i as i64 + 1,
                status,
                reason: (status == LabStatus::QcFailed).then(|| "fit check failed: heel cup too narrow".to_owned()),
                carrier: (status == LabStatus::Shipped).then(|| "DHL".to_owned()),
                tracking_number: (status == LabStatus::Shipped).then(|| format!("JD{:016}", order.order_version)),
                occurred_at: Some(chrono::Utc::now()),
            };
            let env = Envelope::new(LAB_STATUS, "/carehub/cli/lab-simulate", serde_json::json!(report));
            let payload = serde_json::to_string(&env)?;
            let key = order.order_id.to_string();
            producer
                .send(
                    FutureRecord::to(&lab.status_topic).key(&key).payload(&payload),
                    Duration::from_secs(30),
                )
                .await
                .map_err(|(e, _)| e)
                .with_context(|| format!("producing to {}", lab.status_topic))?;
            println!("lab: reported {} {status}", report.sequence);
        }
        done += 1;
    }
    consumer.commit_consumer_state(rdkafka::consumer::CommitMode::Sync).ok();
    Ok(ExitCode::SUCCESS)
}

/// `carehub lab timeline ORDER`: what arrived, what was sent, each status,
/// in order. ORDER is carehub's order id or the clinic's order number. With
/// `wait`, first waits until the order reached the end of its journey and
/// the clinic accepted every message. The look is audited (actor `actor`).
pub async fn timeline(cfg: &Config, order: &str, wait_secs: u64, actor: &str) -> anyhow::Result<ExitCode> {
    let pool = crate::commands::connect(cfg).await?;
    let deadline = Instant::now() + Duration::from_secs(wait_secs);
    let (order_id, status) = loop {
        let row = carehub_schema::views::order_progress(&pool, order).await?;
        let finished = |r: &carehub_schema::views::OrderProgress| {
            r.lab_status
                .as_deref()
                .and_then(LabStatus::parse)
                .is_some_and(|s| s.is_terminal())
                && r.notices_accepted >= r.notices
        };
        match row {
            Some(r) if wait_secs == 0 || finished(&r) => break (r.order_id, r.lab_status),
            _ if Instant::now() > deadline => {
                if wait_secs == 0 {
                    bail!("no order {order}");
                }
                bail!("order {order} did not finish its journey within {wait_secs}s (is `carehub serve` running?)");
            }
            _ => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    };
    let steps = carehub_schema::views::order_timeline(&pool, order_id).await?;
    println!(
        "order {order_id}: lab status {}",
        status.as_deref().unwrap_or("not sent to the lab")
    );
    for s in &steps {
        let detail: serde_json::Value = s
            .detail
            .as_deref()
            .and_then(|d| serde_json::from_str(d).ok())
            .unwrap_or_default();
        let what = match (s.action.as_str(), s.entity_type.as_str()) {
            ("create", "service_order") => format!(
                "arrived     {} {} (stored, acknowledged)",
                s.message_type.as_deref().unwrap_or("message"),
                s.control_id.as_deref().unwrap_or("")
            ),
            ("update", "service_order") if detail.get("status").is_some() => {
                format!("order       status {}", detail["status"].as_str().unwrap_or(""))
            }
            ("update", "service_order") => format!(
                "arrived     {} {} (order changed)",
                s.message_type.as_deref().unwrap_or("message"),
                s.control_id.as_deref().unwrap_or("")
            ),
            ("send", "service_order") => format!(
                "to the lab  {} {} (order version {})",
                detail["to"].as_str().unwrap_or(""),
                detail["lab_action"].as_str().unwrap_or(""),
                detail["order_version"]
            ),
            ("update", "lab_job") if detail.get("held").is_some() => format!(
                "held        report {} until report {} arrives",
                detail["sequence"], detail["waiting_for"]
            ),
            ("update", "lab_job") if detail.get("dead_letter").is_some() => format!(
                "refused     dead letter {} ({})",
                detail["dead_letter"],
                detail["error_code"].as_str().unwrap_or("")
            ),
            ("update", "lab_job") => format!(
                "lab status  {} {} -> {}",
                detail["sequence"],
                detail["from"].as_str().unwrap_or(""),
                detail["to"].as_str().unwrap_or("")
            ),
            ("send", "hl7_message") => format!(
                "to clinic   HL7 {} {} accepted",
                detail["message_type"].as_str().unwrap_or(""),
                s.entity_id.as_deref().unwrap_or("")
            ),
            (action, entity) => format!("{action:<11} {entity}"),
        };
        println!("{}  {what}  [{}]", s.at.format("%H:%M:%S%.3f"), s.actor_id);
    }
    AuditLog::append(
        &mut *pool.acquire().await?,
        &[AuditEntry::new(ActorKind::User, actor, Action::Read, "service_order")
            .entity(order_id)
            .origin("cli:lab timeline")],
    )
    .await?;
    Ok(ExitCode::SUCCESS)
}
