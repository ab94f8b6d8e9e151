//! Lab status figures. Prints figures; asserts nothing about speed.
//!
//!   cargo bench --bench lab        # needs scripts/services.sh up
//!
//! Status reports from Kafka into the canonical record + audit trail +
//! outbox (an HL7 status message and a FHIR event per report): BENCH_ORDERS
//! orders (default 2000) are seeded at the lab, their reports (accepted,
//! in_production, qc_passed, ready_to_ship: 4 per order) are produced to the
//! status topic, then a `carehub serve` of its own (release build, only the
//! lab pipelines on, the outbox relay publishing) applies them. The figure is
//! reports applied per second, from the hub's start to the last transition,
//! read against the ceiling measured in the same run (`support/ceiling.rs`:
//! PostgreSQL alone writing the same rows in the same transactions, and
//! the broker alone producing the same events).

#[path = "support/ceiling.rs"]
mod ceiling;
#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use carehub_schema::Envelope;
use carehub_schema::contracts::LAB_STATUS;
use common::*;
use rdkafka::producer::FutureRecord;
use uuid::Uuid;

const STEPS: [&str; 4] = ["accepted", "in_production", "qc_passed", "ready_to_ship"];

#[tokio::main]
async fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("lab bench: run it with `cargo bench --bench lab`");
        return;
    }
    let orders = knob("BENCH_ORDERS", 2000);
    println!(
        "carehub lab bench, {} cores: {orders} orders x {} status reports",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        STEPS.len()
    );
    let db = fresh_db().await;
    let intake = unique_topic("intake");
    let events = unique_topic("events");
    let port = free_port();
    let mut envs = hub_env(&db, &intake, &events, port);
    envs.extend([
        ("CAREHUB_HL7__ENABLED", "false".to_owned()),
        ("CAREHUB_PIPELINES__HL7__ENABLED", "false".to_owned()),
        ("CAREHUB_PIPELINES__INTAKE__ENABLED", "false".to_owned()),
        (
            "CAREHUB_PIPELINES__LAB__CLINICS__BENCHCLINIC__HL7_DESTINATION",
            "bench".to_owned(),
        ),
    ]);
    let status_topic = env_value(&envs, "CAREHUB_PIPELINES__LAB__STATUS_TOPIC");
    create_topics(&[&status_topic]).await;

    // Orders already at the lab (set up directly: not what is measured).
    sqlx::query(
        "WITH org AS (INSERT INTO organization (id, kind, name, identifier_system, identifier_value)
                      VALUES (gen_random_uuid(), 'clinic', 'Bench clinic', 'urn:carehub:hl7-facility', 'BENCHCLINIC')
                      RETURNING id),
              pat AS (INSERT INTO patient (id, family_name, birth_date, sex)
                      SELECT gen_random_uuid(), 'Benchpatient', date '1980-01-02' + i, 'female'
                        FROM generate_series(1, $1) i RETURNING id),
              ids AS (INSERT INTO patient_identifier (patient_id, system, value, type_code)
                      SELECT id, 'urn:oid:2.999.1', 'B-' || id, 'MR' FROM pat RETURNING patient_id),
              ord AS (INSERT INTO service_order (id, placer_system, placer_number, patient_id, clinic_id, status)
                      SELECT gen_random_uuid(), 'urn:carehub:hl7-aa:BENCHCLINIC', 'PO-' || p.id, p.id, org.id, 'active'
                        FROM pat p, org RETURNING id)
         INSERT INTO lab_job (order_id, status, dispatched_version) SELECT id, 'requested', 1 FROM ord",
    )
    .bind(orders as i32)
    .execute(&db.pool)
    .await
    .expect("seed orders");
    let ids: Vec<(Uuid,)> = sqlx::query_as("SELECT order_id FROM lab_job")
        .fetch_all(&db.pool)
        .await
        .expect("orders");

    let producer = carehub_kafka::idempotent_producer_with_linger(&kafka(), 5).expect("producer");
    let started = Instant::now();
    let mut pending = Vec::new();
    for (seq, status) in STEPS.iter().enumerate() {
        for (id,) in &ids {
            let data = serde_json::json!({ "order_id": id, "sequence": seq + 1, "status": status });
            let env = Envelope::new(LAB_STATUS, "/bench/lab", data);
            let (key, payload) = (id.to_string(), bytes(&env));
            let producer = producer.clone();
            let topic = status_topic.clone();
            pending.push(tokio::spawn(async move {
                producer
                    .send(
                        FutureRecord::to(&topic).key(&key).payload(&payload),
                        Duration::from_secs(60),
                    )
                    .await
                    .map_err(|(e, _)| e)
                    .expect("produce");
            }));
        }
    }
    for p in pending {
        p.await.expect("join");
    }
    let total = ids.len() * STEPS.len();
    println!("  produced {total} reports in {:.1} s", started.elapsed().as_secs_f64());

    let started = Instant::now();
    let hub = spawn_serve(&envs, "BENCH_HUB_LOG");
    let pool = db.pool.clone();
    let first = std::sync::Mutex::new(None::<(Instant, i64)>);
    let done = eventually(Duration::from_secs(3600), || async {
        let n = count(&pool, "SELECT count(*) FROM lab_job_event").await;
        let mut f = first.lock().expect("first");
        if n > 0 && f.is_none() {
            *f = Some((Instant::now(), n));
        }
        (n >= total as i64).then_some(())
    })
    .await;
    let first = first.into_inner().expect("first");
    let secs = started.elapsed().as_secs_f64();
    let (steady, steady_n) = first.map_or((secs, total as i64), |(t, n)| {
        (t.elapsed().as_secs_f64(), total as i64 - n)
    });
    let outbox = count(&pool, "SELECT count(*) FROM outbox").await;
    let audit = count(&pool, "SELECT count(*) FROM audit_log").await;
    println!(
        "  applied {total} reports in {secs:.1} s from the hub's start = {:.0} reports/s; \
         from the first applied: {:.0} reports/s{}",
        total as f64 / secs,
        steady_n as f64 / steady.max(0.001),
        if done.is_some() { "" } else { " (timed out)" }
    );
    println!("  wrote {outbox} outbox records and {audit} audit entries");
    drop(hub);

    let ceiling = ceiling::Ceiling {
        seed: &[
            "organization",
            "patient",
            "patient_identifier",
            "service_order",
            "lab_job",
        ],
        reset: &[
            "UPDATE lab_job SET status = 'requested', last_sequence = 0, version = 1",
            "UPDATE service_order SET status = 'active', version = 1",
        ],
        rows: vec![
            ceiling::Rows::insert("message", "message t", "t.xmin"),
            ceiling::Rows::insert("message_key", "message_key t", "t.xmin"),
            ceiling::Rows::update(
                "lab_job",
                "lab_job t JOIN lab_job_event e ON e.order_id = t.order_id",
                "e.xmin",
                "x.order_id = u.order_id",
                "status = u.status, last_sequence = u.last_sequence, status_reason = u.status_reason, \
                 version = u.version, source_message_id = u.source_message_id, updated_at = u.updated_at",
            ),
            ceiling::Rows::insert("lab_job_event", "lab_job_event t", "t.xmin"),
            ceiling::Rows::update(
                "service_order",
                "service_order t JOIN order_status_history h ON h.order_id = t.id",
                "h.xmin",
                "x.id = u.id",
                "status = u.status, version = u.version, source_message_id = u.source_message_id, \
                 updated_at = u.updated_at",
            ),
            ceiling::Rows::insert("order_status_history", "order_status_history t", "t.xmin"),
            ceiling::Rows::insert("consumed_event", "consumed_event t", "t.xmin"),
            ceiling::Rows::insert(
                "outbox",
                ceiling::created("outbox", "", "t.created_at", "lab_status"),
                "c.x",
            ),
            ceiling::Rows::insert("audit_log", ceiling::audit_by_message(), "g.x"),
        ],
        per_batch: &["UPDATE audit_chain_head SET seq = seq + 1 WHERE id = 1"],
        records: total,
        consumer: "lab_status",
    };
    let pg = ceiling.postgres(&db).await;
    let broker = ceiling::broker_ceiling(&db, "true").await;
    let rate = total as f64 / secs;
    println!(
        "  lab status {rate:.0} reports/s = {:.0} % of PostgreSQL alone ({:.0} reports/s, best of 1-4 connections: {}, \
         {} transactions); broker alone {:.0} reports/s ({:.2} events per report)",
        100.0 * rate / pg.best.max(1.0),
        pg.best,
        pg.best_connections,
        pg.transactions,
        broker * total as f64 / outbox.max(1) as f64,
        outbox as f64 / total.max(1) as f64,
    );
}
