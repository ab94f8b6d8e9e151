//! Backbone figures, against the real PostgreSQL and broker on 127.0.0.1
//! (`scripts/services.sh up` first):
//!
//!   cargo bench --bench backbone
//!
//! Knobs: BENCH_EVENTS (pipeline and relay events, default 20000),
//! BENCH_ROWS (message-store rows for the search figures, default 1000000).
//! Prints figures; asserts nothing about speed.

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use carehub_kafka::{OutboxRelay, RelayConfig, dlq_topic};
use carehub_pipeline::ConsumerRunner;
use carehub_pipeline::Engine;
use carehub_pipeline_intake::IntakePipeline;
use carehub_schema::{Action, ActorKind, AuditEntry, AuditLog, Envelope, Outbox};
use common::*;
use tokio::sync::watch;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() {
    // `cargo bench` passes --bench; any other caller (a test runner listing or
    // running all targets) must not start a minutes-long benchmark.
    if !std::env::args().any(|a| a == "--bench") {
        println!("backbone bench: run it with `cargo bench --bench backbone`");
        return;
    }
    let events = knob("BENCH_EVENTS", 20_000);
    let rows = knob("BENCH_ROWS", 1_000_000);
    println!(
        "carehub backbone bench: {events} events, {rows} message-store rows, {} cores",
        num_cpus()
    );
    engine_only(events.min(5_000)).await;
    pipeline(events).await;
    relay(events).await;
    audit().await;
    if rows > 0 {
        message_store(rows).await;
    }
}

/// The pipeline engine without Kafka: where the per-record time goes in PostgreSQL.
async fn engine_only(n: usize) {
    let db = fresh_db().await;
    let engine = Engine::new(db.pool.clone(), Arc::new(IntakePipeline::new("events")));
    let payloads: Vec<Vec<u8>> = (0..n)
        .map(|i| bytes(&patient_event(&format!("MRN-E{i:07}"), None)))
        .collect();
    for tasks in [1usize, 4] {
        let started = Instant::now();
        let chunk = n / tasks / 2;
        let offset = if tasks == 1 { 0 } else { n / 2 };
        let mut handles = Vec::new();
        for t in 0..tasks {
            let engine = engine.clone();
            let mine: Vec<Vec<u8>> = payloads[offset + t * chunk..offset + (t + 1) * chunk].to_vec();
            handles.push(tokio::spawn(async move {
                for (i, payload) in mine.iter().enumerate() {
                    let rec = carehub_pipeline::InboundRecord {
                        topic: "bench",
                        partition: Some(t as i32),
                        offset: Some(i as i64),
                        key: None,
                        payload,
                    };
                    engine.process(&rec).await.expect("process");
                }
            }));
        }
        for h in handles {
            h.await.expect("task");
        }
        let done = chunk * tasks;
        let elapsed = started.elapsed();
        println!(
            "engine only ({tasks} task(s), no Kafka):      {done} events in {:.2}s = {:.0} events/s",
            elapsed.as_secs_f64(),
            done as f64 / elapsed.as_secs_f64()
        );
    }
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Kafka → ConsumerRunner → Engine (message store + claim + upsert + outbox + audit) → offset.
async fn pipeline(n: usize) {
    let db = fresh_db().await;
    let topic = unique_topic("bench-intake");
    let events = unique_topic("bench-events");
    create_topics(&[&topic, &dlq_topic(&topic), &events]).await;
    let p = producer();
    let started = Instant::now();
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let sends = chunk.iter().map(|i| {
            let payload = bytes(&patient_event(&format!("MRN-B{i:07}"), None));
            let (p, topic) = (p.clone(), topic.clone());
            async move { produce(&p, &topic, &format!("k{i}"), &payload).await }
        });
        futures::future::join_all(sends).await;
    }
    let produced = started.elapsed();
    println!(
        "produce (idempotent, acks=all):          {n} records in {:.2}s = {:.0} records/s",
        produced.as_secs_f64(),
        n as f64 / produced.as_secs_f64()
    );

    let started = Instant::now();
    let read = tokio::task::spawn_blocking({
        let topic = topic.clone();
        move || read_topic(&topic, n, Duration::from_secs(600)).len()
    })
    .await
    .expect("read");
    let elapsed = started.elapsed();
    println!(
        "consume only (1 reader, no processing):  {read} records in {:.2}s = {:.0} records/s",
        elapsed.as_secs_f64(),
        read as f64 / elapsed.as_secs_f64()
    );

    let engine = Engine::new(db.pool.clone(), Arc::new(IntakePipeline::new(&events)));
    let (stop, shutdown) = watch::channel(false);
    // One consumer per partition, as `serve` would run with more instances.
    let mut tasks = Vec::new();
    let started = Instant::now();
    let consumers = knob("BENCH_CONSUMERS", 3);
    for i in 0..consumers {
        // Instances of one group: each needs its own static-membership id.
        let cfg = carehub_kafka::KafkaConfig {
            instance_id: format!("bench-{i}"),
            ..kafka()
        };
        let runner =
            ConsumerRunner::new(&cfg, &format!("g-{topic}"), &topic, engine.clone(), p.clone()).expect("runner");
        tasks.push(tokio::spawn(runner.run(shutdown.clone())));
    }
    let pool = db.pool.clone();
    // Group join and first assignment are counted apart from steady state.
    eventually(Duration::from_secs(120), || async {
        (count(&pool, "SELECT count(*) FROM consumed_event").await >= 1).then_some(())
    })
    .await
    .expect("first applied");
    let joined = started.elapsed();
    let steady_from = Instant::now();
    let first = count(&pool, "SELECT count(*) FROM consumed_event").await;
    eventually(Duration::from_secs(600), || async {
        (count(&pool, "SELECT count(*) FROM consumed_event").await >= n as i64).then_some(())
    })
    .await
    .expect("all applied");
    let steady = steady_from.elapsed();
    println!(
        "  group join to first record {:.2}s; steady state {:.0} events/s",
        joined.as_secs_f64(),
        (n as i64 - first) as f64 / steady.as_secs_f64()
    );
    let elapsed = started.elapsed();
    println!(
        "pipeline ({consumers} consumer(s), 1 tx per record): {n} events in {:.2}s = {:.0} events/s",
        elapsed.as_secs_f64(),
        n as f64 / elapsed.as_secs_f64()
    );
    stop.send(true).expect("stop");
    for t in tasks {
        let _ = t.await;
    }
}

/// Outbox rows → Kafka, marked sent.
async fn relay(n: usize) {
    let db = fresh_db().await;
    let topic = unique_topic("bench-relay");
    create_topics(&[&topic]).await;
    let mut tx = db.pool.begin().await.expect("tx");
    for i in 0..n {
        let e = Envelope::new("carehub.bench.v1", "/bench", serde_json::json!({ "i": i }));
        Outbox::enqueue(&mut tx, &topic, &format!("k{}", i % 64), &e)
            .await
            .expect("enqueue");
    }
    tx.commit().await.expect("commit");
    let relay = OutboxRelay::new(
        db.pool.clone(),
        producer(),
        RelayConfig {
            batch_size: 1000,
            poll_interval_ms: 10,
            ..RelayConfig::default()
        },
    );
    let started = Instant::now();
    while Outbox::backlog(&db.pool).await.expect("backlog") > 0 {
        relay.run_once().await.expect("round");
    }
    let elapsed = started.elapsed();
    println!(
        "outbox relay (batches of 1000):          {n} events in {:.2}s = {:.0} events/s",
        elapsed.as_secs_f64(),
        n as f64 / elapsed.as_secs_f64()
    );
}

/// Audit appends: one entry per transaction from 8 writers, and 100 per transaction.
async fn audit() {
    let db = fresh_db().await;
    let per_writer = 500;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..8 {
        let pool = db.pool.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..per_writer {
                let mut tx = pool.begin().await.expect("tx");
                let e = AuditEntry::new(ActorKind::System, format!("w{w}"), Action::Read, "patient").entity(i);
                AuditLog::append(&mut tx, &[e]).await.expect("append");
                tx.commit().await.expect("commit");
            }
        }));
    }
    for t in tasks {
        t.await.expect("writer");
    }
    let elapsed = started.elapsed();
    println!(
        "audit append (8 writers, 1 per tx):      {} entries in {:.2}s = {:.0} entries/s",
        8 * per_writer,
        elapsed.as_secs_f64(),
        (8 * per_writer) as f64 / elapsed.as_secs_f64()
    );
    let started = Instant::now();
    for b in 0..100 {
        let mut tx = db.pool.begin().await.expect("tx");
        let batch: Vec<_> = (0..100)
            .map(|i| AuditEntry::new(ActorKind::System, "batch", Action::Read, "patient").entity(b * 100 + i))
            .collect();
        AuditLog::append(&mut tx, &batch).await.expect("append");
        tx.commit().await.expect("commit");
    }
    let elapsed = started.elapsed();
    println!(
        "audit append (100 per tx):               10000 entries in {:.2}s = {:.0} entries/s",
        elapsed.as_secs_f64(),
        10_000.0 / elapsed.as_secs_f64()
    );
    let started = Instant::now();
    let v = AuditLog::verify(&db.pool).await.expect("verify");
    println!(
        "audit verify:                            {} rows in {:.2}s",
        v.rows,
        started.elapsed().as_secs_f64()
    );
}

/// Searches by indexed metadata with `rows` messages spread over five months.
async fn message_store(rows: usize) {
    let db = fresh_db().await;
    sqlx::query("SELECT carehub_ensure_message_partitions(4, 0)")
        .execute(&db.pool)
        .await
        .expect("partitions");
    let started = Instant::now();
    sqlx::query(
        "INSERT INTO message (id, received_at, connector, protocol, message_type, control_id, source_key,
                              patient_id, status, raw)
         SELECT gen_random_uuid(),
                date_trunc('month', now()) - interval '4 months' + (g / $1::float8) * interval '120 days',
                CASE g % 3 WHEN 0 THEN 'hl7_mllp' WHEN 1 THEN 'kafka' ELSE 'fhir_r4' END, 'hl7v2',
                CASE g % 4 WHEN 0 THEN 'ADT^A01' WHEN 1 THEN 'ORM^O01' WHEN 2 THEN 'ORU^R01' ELSE 'ADT^A08' END,
                'CTRL' || g, 'bench:' || g,
                ('00000000-0000-4000-8000-' || lpad(to_hex(g % 200000), 12, '0'))::uuid,
                CASE WHEN g % 1000 = 0 THEN 'failed' ELSE 'processed' END,
                convert_to('MSH|^~\\&|BENCH|' || g, 'UTF8')
           FROM generate_series(1, $1) g",
    )
    .bind(rows as i64)
    .execute(&db.pool)
    .await
    .expect("load");
    sqlx::query("ANALYZE message").execute(&db.pool).await.expect("analyze");
    println!(
        "message store load:                      {rows} rows in {:.1}s",
        started.elapsed().as_secs_f64()
    );

    let queries: [(&str, &str); 4] = [
        (
            "by control id",
            "SELECT id FROM message WHERE control_id = 'CTRL' || $1",
        ),
        (
            "by patient (newest 20)",
            "SELECT id FROM message WHERE patient_id = ('00000000-0000-4000-8000-' || lpad(to_hex($1 % 200000), 12, '0'))::uuid ORDER BY received_at DESC LIMIT 20",
        ),
        (
            "failed in the last month",
            "SELECT id FROM message WHERE status <> 'processed' AND received_at > now() - interval '1 month' AND $1 >= 0 LIMIT 50",
        ),
        (
            "by connector+type, one day",
            "SELECT count(*) FROM message WHERE connector = 'hl7_mllp' AND message_type = 'ORU^R01' AND received_at >= date_trunc('month', now()) - interval '2 months' + ($1 % 28) * interval '1 day' AND received_at < date_trunc('month', now()) - interval '2 months' + ($1 % 28 + 1) * interval '1 day'",
        ),
    ];
    for (name, sql) in queries {
        let mut times = Vec::with_capacity(500);
        for i in 0..500i64 {
            let g = (i * 7919) % rows as i64 + 1;
            let t = Instant::now();
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(g)
                .fetch_all(&db.pool)
                .await
                .expect(name);
            times.push(t.elapsed());
        }
        times.sort();
        println!(
            "search {name:<27} p50 {:>7.2} ms  p99 {:>7.2} ms",
            percentile(&times, 0.5).as_secs_f64() * 1e3,
            percentile(&times, 0.99).as_secs_f64() * 1e3
        );
    }
}
