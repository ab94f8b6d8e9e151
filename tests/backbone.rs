//! The backbone's guarantees, against the real PostgreSQL and broker:
//! outbox delivery in order (also after a relay crash), consumer crash between
//! commit and offset commit, dead letters and replay, the audit hash chain,
//! duplicate inbound messages, and migrations.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use carehub_kafka::{OutboxRelay, RelayConfig, dlq_topic};
use carehub_pipeline::ConsumerRunner;
use carehub_pipeline::{Engine, Processed, ReplayOutcome};
use carehub_pipeline_intake::IntakePipeline;
use carehub_schema::{Action, ActorKind, AuditEntry, AuditLog, Envelope, Outbox};
use common::*;
use serde_json::json;
use tokio::sync::watch;

fn intake_engine(db: &TestDb, events_topic: &str) -> Engine {
    Engine::new(db.pool.clone(), Arc::new(IntakePipeline::new(events_topic)))
}

#[tokio::test]
async fn migrations_apply_to_an_empty_database_and_again_harmlessly() {
    let db = empty_db().await;
    carehub_schema::migrate(&db.pool).await.expect("first run");
    let tables = count(
        &db.pool,
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'",
    )
    .await;
    carehub_schema::migrate(&db.pool).await.expect("second run");
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
        )
        .await,
        tables
    );
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM _sqlx_migrations WHERE success").await,
        carehub_schema::MIGRATOR.iter().count() as i64
    );
    for t in [
        "patient",
        "patient_identifier",
        "practitioner",
        "organization",
        "service_order",
        "order_item",
        "order_status_history",
        "observation",
        "imaging_study",
        "invoice",
        "invoice_line",
        "payment",
        "shipment",
        "document",
        "message",
        "message_key",
        "audit_log",
        "outbox",
        "dead_letter",
        "consumed_event",
    ] {
        let n = count(
            &db.pool,
            &format!("SELECT count(*) FROM information_schema.tables WHERE table_name = '{t}'"),
        )
        .await;
        assert_eq!(n, 1, "table {t}");
    }
    // The message store is partitioned by month, with this month and the next ones present.
    let parts = count(
        &db.pool,
        "SELECT count(*) FROM pg_inherits i JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'message'",
    )
    .await;
    assert_eq!(parts, 5, "last month, this month and three ahead");
}

#[tokio::test]
async fn outbox_reaches_kafka_in_order_per_key_even_after_a_relay_crash_mid_batch() {
    let db = fresh_db().await;
    let topic = unique_topic("outbox");
    create_topics(&[&topic]).await;
    let keys = ["k0", "k1", "k2", "k3", "k4"];
    let total = 300;
    for i in 0..total {
        let key = keys[i % keys.len()];
        let event = Envelope::new("carehub.test.sequenced.v1", "/test", json!({ "key": key, "seq": i }));
        let mut tx = db.pool.begin().await.expect("tx");
        Outbox::enqueue(&mut tx, &topic, key, &event).await.expect("enqueue");
        tx.commit().await.expect("commit");
    }
    let relay = |batch| {
        OutboxRelay::new(
            db.pool.clone(),
            producer(),
            RelayConfig {
                batch_size: batch,
                poll_interval_ms: 10,
                ..RelayConfig::default()
            },
        )
    };

    // First relay: takes a batch of 100, publishes the first 60, and dies before marking them sent.
    let crashed = relay(100);
    let rows = crashed.fetch().await.expect("fetch");
    assert_eq!(rows.len(), 100);
    let published = crashed.publish(&rows[..60]).await;
    assert_eq!(published.len(), 60);
    drop(crashed);
    assert_eq!(
        Outbox::backlog(&db.pool).await.expect("backlog"),
        total as i64,
        "nothing was marked"
    );

    // A new relay takes over and drains the outbox.
    let relay = relay(100);
    while Outbox::backlog(&db.pool).await.expect("backlog") > 0 {
        relay.run_once().await.expect("round");
    }

    let records = read_topic(&topic, total + 60, Duration::from_secs(30));
    assert_eq!(records.len(), total + 60, "every event, the crashed batch's 60 twice");
    // Per key: in partition order, and deduplicated by event id as consumers do, seq ascends
    // and every event is present.
    let mut per_key: BTreeMap<String, Vec<(i32, i64, u64, String)>> = BTreeMap::new();
    for r in &records {
        let env = Envelope::from_slice(&r.payload).expect("envelope");
        let seq = env.data["seq"].as_u64().expect("seq");
        per_key
            .entry(r.key.clone().expect("key"))
            .or_default()
            .push((r.partition, r.offset, seq, env.id));
    }
    for (key, mut recs) in per_key {
        let partitions: HashSet<i32> = recs.iter().map(|r| r.0).collect();
        assert_eq!(partitions.len(), 1, "key {key} stays on one partition");
        recs.sort_by_key(|r| r.1);
        let mut seen = HashSet::new();
        let deduped: Vec<u64> = recs.iter().filter(|r| seen.insert(r.3.clone())).map(|r| r.2).collect();
        assert!(
            deduped.windows(2).all(|w| w[0] < w[1]),
            "key {key} out of order: {deduped:?}"
        );
        assert_eq!(deduped.len(), total / keys.len(), "key {key} complete");
    }
}

#[tokio::test]
async fn a_consumer_that_dies_after_its_commit_but_before_the_offset_commit_has_no_second_effect() {
    let db = fresh_db().await;
    let topic = unique_topic("intake");
    let events = unique_topic("events");
    create_topics(&[&topic, &dlq_topic(&topic), &events]).await;
    let group = format!("g-{}", uuid::Uuid::new_v4().simple());
    let event = patient_event("MRN-CRASH", None);
    produce(&producer(), &topic, "p", &bytes(&event)).await;
    let (_stop, mut shutdown) = watch::channel(false);

    // First consumer: the transaction commits, then the process "dies" (no acknowledge).
    let first = ConsumerRunner::new(&kafka(), &group, &topic, intake_engine(&db, &events), producer()).expect("runner");
    let rec = first.receive().await.expect("record");
    let processed = first.handle(&rec, &mut shutdown).await.expect("handled");
    assert!(matches!(processed, Processed::Applied { .. }), "{processed:?}");
    let first_offset = rec.offset();
    drop(first);

    // Its replacement in the same group gets the record again and finds it applied.
    let second =
        ConsumerRunner::new(&kafka(), &group, &topic, intake_engine(&db, &events), producer()).expect("runner");
    let rec = second.receive().await.expect("redelivered");
    assert_eq!(rec.offset(), first_offset, "the same record is redelivered");
    let processed = second.handle(&rec, &mut shutdown).await.expect("handled");
    assert_eq!(
        processed,
        Processed::Duplicate {
            event_id: event.id.clone()
        }
    );
    second.acknowledge(&rec).expect("ack");

    assert_eq!(count(&db.pool, "SELECT count(*) FROM patient").await, 1);
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM outbox").await,
        1,
        "one outbound event"
    );
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM message").await,
        1,
        "one stored message"
    );
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM audit_log WHERE action = 'create'").await,
        1
    );
}

#[tokio::test]
async fn the_same_inbound_message_twice_has_one_effect() {
    let db = fresh_db().await;
    let topic = unique_topic("intake");
    let events = unique_topic("events");
    create_topics(&[&topic, &dlq_topic(&topic), &events]).await;
    let event = patient_event("MRN-TWICE", None);
    let p = producer();
    // A sender that retried: two records, two offsets, one event id.
    produce(&p, &topic, "p", &bytes(&event)).await;
    produce(&p, &topic, "p", &bytes(&event)).await;

    let (stop, shutdown) = watch::channel(false);
    let runner =
        ConsumerRunner::new(&kafka(), &format!("g-{topic}"), &topic, intake_engine(&db, &events), p).expect("runner");
    let task = tokio::spawn(runner.run(shutdown));
    let pool = db.pool.clone();
    let dup = eventually(Duration::from_secs(30), || async {
        let n = count(&pool, "SELECT count(*) FROM consumed_event").await;
        let received = common::count(&pool, "SELECT count(*) FROM message_key").await;
        (n == 1 && received == 1).then_some(())
    })
    .await;
    assert!(dup.is_some(), "event applied");
    // Give the second record time to be handled, then check it changed nothing.
    let lag_gone = eventually(Duration::from_secs(30), || async {
        let text = carehub_schema::MessageStore::find_by_key(&pool, &format!("kafka:{topic}:{}", event.id))
            .await
            .ok()??;
        (text.status == "processed").then_some(())
    })
    .await;
    assert!(lag_gone.is_some());
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.send(true).expect("stop");
    task.await.expect("runner stops");

    assert_eq!(count(&db.pool, "SELECT count(*) FROM patient").await, 1);
    assert_eq!(count(&db.pool, "SELECT count(*) FROM outbox").await, 1);
    assert_eq!(count(&db.pool, "SELECT count(*) FROM message").await, 1);
    assert_eq!(count(&db.pool, "SELECT count(*) FROM dead_letter").await, 0);
}

#[tokio::test]
async fn a_poison_record_is_dead_lettered_with_its_reason_and_replays_after_the_fix() {
    let db = fresh_db().await;
    let topic = unique_topic("intake");
    let events = unique_topic("events");
    create_topics(&[&topic, &dlq_topic(&topic), &events]).await;
    let p = producer();
    // The patient names a clinic carehub does not know yet.
    let poison = patient_event("MRN-POISON", Some("CLINIC-LATE"));
    produce(&p, &topic, "p", &bytes(&poison)).await;
    // And a record that is not an envelope at all.
    produce(&p, &topic, "x", b"\x00\x01 not json").await;

    let (stop, shutdown) = watch::channel(false);
    let engine = intake_engine(&db, &events);
    let runner =
        ConsumerRunner::new(&kafka(), &format!("g-{topic}"), &topic, engine.clone(), p.clone()).expect("runner");
    let task = tokio::spawn(runner.run(shutdown));
    let pool = db.pool.clone();
    let dead = eventually(Duration::from_secs(30), || async {
        let n = count(&pool, "SELECT count(*) FROM dead_letter").await;
        (n == 2).then_some(())
    })
    .await;
    assert!(dead.is_some(), "both records dead-lettered");

    let (id, code, reason, status): (i64, String, String, String) =
        sqlx::query_as("SELECT id, error_code, reason, status FROM dead_letter WHERE event_id = $1")
            .bind(&poison.id)
            .fetch_one(&db.pool)
            .await
            .expect("dead letter of the poison record");
    assert_eq!((code.as_str(), status.as_str()), ("unknown_reference", "open"));
    assert!(reason.contains("CLINIC-LATE"), "{reason}");
    let (garbage_code,): (String,) = sqlx::query_as("SELECT error_code FROM dead_letter WHERE event_id IS NULL")
        .fetch_one(&db.pool)
        .await
        .expect("garbage dead letter");
    assert_eq!(garbage_code, "invalid_envelope");
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM message WHERE status = 'failed'").await,
        2,
        "raw bytes kept"
    );

    // Both also went to <topic>.dlq with the reason in headers.
    let dlq = read_topic(&dlq_topic(&topic), 2, Duration::from_secs(30));
    assert_eq!(dlq.len(), 2);
    let forwarded = dlq
        .iter()
        .find(|r| r.payload == bytes(&poison))
        .expect("poison forwarded verbatim");
    assert_eq!(
        forwarded.headers.get("carehub-error-code").map(String::as_str),
        Some("unknown_reference")
    );
    assert_eq!(forwarded.headers.get("carehub-dead-letter-id"), Some(&id.to_string()));
    stop.send(true).expect("stop");
    task.await.expect("runner stops");

    // Replay before the fix: still failing, still open.
    let again = engine.replay(id, "tester").await.expect("replay");
    assert!(
        matches!(
            again,
            ReplayOutcome::StillFailing {
                code: "unknown_reference",
                ..
            }
        ),
        "{again:?}"
    );
    assert_eq!(count(&db.pool, "SELECT count(*) FROM patient").await, 0);

    // The fix: the clinic arrives. Then the replay applies the original record.
    let fix = organization_event("CLINIC-LATE");
    let applied = engine
        .process(&carehub_pipeline::InboundRecord {
            topic: &topic,
            partition: None,
            offset: None,
            key: None,
            payload: &bytes(&fix),
        })
        .await
        .expect("organization");
    assert!(matches!(applied, Processed::Applied { .. }));
    let replayed = engine.replay(id, "tester").await.expect("replay");
    assert!(matches!(replayed, ReplayOutcome::Applied { .. }), "{replayed:?}");
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM patient WHERE managing_organization_id IS NOT NULL"
        )
        .await,
        1
    );
    assert_eq!(
        count(
            &db.pool,
            &format!("SELECT count(*) FROM dead_letter WHERE id = {id} AND status = 'replayed'")
        )
        .await,
        1
    );
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM audit_log WHERE action = 'replay' AND actor_id = 'tester'"
        )
        .await,
        1
    );
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM message WHERE status = 'processed' AND patient_id IS NOT NULL"
        )
        .await,
        1,
        "the failed message is now processed"
    );
    // A second replay does nothing.
    assert_eq!(
        engine.replay(id, "tester").await.expect("replay"),
        ReplayOutcome::NotOpen {
            status: "replayed".into()
        }
    );
    assert_eq!(count(&db.pool, "SELECT count(*) FROM patient").await, 1);
}

#[tokio::test]
async fn audit_verify_passes_then_names_the_row_a_superuser_tampered_with() {
    let db = fresh_db().await;
    // Concurrent writers: the chain must not fork.
    let mut tasks = Vec::new();
    for w in 0..8 {
        let pool = db.pool.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..10 {
                let mut tx = pool.begin().await.expect("tx");
                let entry =
                    AuditEntry::new(ActorKind::System, format!("writer-{w}"), Action::Create, "patient").entity(i);
                AuditLog::append(&mut tx, &[entry]).await.expect("append");
                tx.commit().await.expect("commit");
            }
        }));
    }
    for t in tasks {
        t.await.expect("writer");
    }
    let v = AuditLog::verify(&db.pool).await.expect("verify");
    assert_eq!((v.rows, v.first_break), (80, None));

    // The database itself refuses changes.
    for sql in [
        "UPDATE audit_log SET actor_id = 'x' WHERE seq = 1",
        "DELETE FROM audit_log WHERE seq = 1",
        "TRUNCATE audit_log",
    ] {
        let err = sqlx::query(sql).execute(&db.pool).await.expect_err(sql);
        assert!(err.to_string().contains("append-only"), "{sql}: {err}");
    }

    // A superuser disables the trigger and edits row 37.
    let mut conn = db.pool.acquire().await.expect("conn");
    sqlx::query("ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only")
        .execute(&mut *conn)
        .await
        .expect("disable");
    sqlx::query("UPDATE audit_log SET actor_id = 'mallory' WHERE seq = 37")
        .execute(&mut *conn)
        .await
        .expect("tamper");
    sqlx::query("ALTER TABLE audit_log ENABLE TRIGGER audit_log_append_only")
        .execute(&mut *conn)
        .await
        .expect("enable");
    drop(conn);
    let v = AuditLog::verify(&db.pool).await.expect("verify");
    let broken = v.first_break.expect("tamper detected");
    assert_eq!(broken.seq, 37);

    // The operator command says the same, with exit code 1.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_carehub"))
        .args(["audit", "verify"])
        .env("CAREHUB_DATABASE__URL", &db.url)
        .output()
        .expect("run carehub");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("seq=37"), "{stdout}");
}

#[tokio::test]
async fn retention_drops_whole_old_partitions_and_their_keys_only() {
    let db = fresh_db().await;
    // Partitions back to two years ago, and a message in an old and in the current month.
    sqlx::query("SELECT carehub_ensure_message_partitions(24, 0)")
        .execute(&db.pool)
        .await
        .expect("partitions");
    for (key, age) in [("old", "14 months"), ("new", "0 days")] {
        sqlx::query(
            "WITH k AS (INSERT INTO message_key VALUES ($1, gen_random_uuid(), now() - $2::interval) RETURNING *)
             INSERT INTO message (id, received_at, connector, protocol, source_key, status, raw)
             SELECT message_id, received_at, 'test', 'test', source_key, 'processed', '\\x00' FROM k",
        )
        .bind(key)
        .bind(age)
        .execute(&db.pool)
        .await
        .expect("insert message");
    }
    let before = count(
        &db.pool,
        "SELECT count(*) FROM pg_inherits WHERE inhparent = 'message'::regclass",
    )
    .await;
    let mut conn = db.pool.acquire().await.expect("conn");
    let dropped = carehub_schema::MessageStore::drop_partitions(&mut conn, 12)
        .await
        .expect("retention");
    drop(conn);
    assert!(dropped.len() >= 12, "{dropped:?}");
    let after = count(
        &db.pool,
        "SELECT count(*) FROM pg_inherits WHERE inhparent = 'message'::regclass",
    )
    .await;
    assert_eq!(before - after, dropped.len() as i64);
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM message").await,
        1,
        "the current month stays"
    );
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM message_key WHERE source_key = 'old'").await,
        0
    );
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM message_key WHERE source_key = 'new'").await,
        1
    );
    // The month that is 12 months back is kept: whole months only.
    let twelve_back: (bool,) = sqlx::query_as(
        "SELECT to_regclass(format('message_%s', to_char(date_trunc('month', now() AT TIME ZONE 'UTC') - interval '12 months', 'YYYY_MM'))) IS NOT NULL",
    )
    .fetch_one(&db.pool)
    .await
    .expect("query");
    assert!(twelve_back.0);
}

#[tokio::test]
async fn after_a_clean_stop_the_group_resumes_at_the_next_record_skipping_none() {
    let db = fresh_db().await;
    let topic = unique_topic("intake");
    let events = unique_topic("events");
    // One partition, so "the next record" is well defined.
    carehub_kafka::ensure_topics(
        &kafka(),
        &[carehub_kafka::TopicSpec {
            name: topic.clone(),
            partitions: Some(1),
        }],
    )
    .await
    .expect("topic");
    create_topics(&[&dlq_topic(&topic), &events]).await;
    let p = producer();
    for mrn in ["MRN-R1", "MRN-R2", "MRN-R3"] {
        produce(&p, &topic, "k", &bytes(&patient_event(mrn, None))).await;
    }
    let group = format!("g-{}", uuid::Uuid::new_v4().simple());
    let (_stop, mut shutdown) = watch::channel(false);

    let first = ConsumerRunner::new(&kafka(), &group, &topic, intake_engine(&db, &events), p.clone()).expect("runner");
    let rec = first.receive().await.expect("record");
    assert_eq!(rec.offset(), 0);
    first.handle(&rec, &mut shutdown).await.expect("handled");
    first.acknowledge(&rec).expect("ack");
    // A clean stop commits what was acknowledged.
    let (stop_first, first_shutdown) = watch::channel(true);
    first.run(first_shutdown).await;
    drop(stop_first);

    let second = ConsumerRunner::new(&kafka(), &group, &topic, intake_engine(&db, &events), p).expect("runner");
    let rec = second.receive().await.expect("record");
    assert_eq!(rec.offset(), 1, "resumes right after the acknowledged record");
}

#[tokio::test]
async fn a_batch_commits_once_and_a_poison_record_in_it_undoes_nothing_else() {
    let db = fresh_db().await;
    let engine = intake_engine(&db, "events");
    let org = organization_event("CLINIC-B");
    let patient = patient_event("MRN-B1", Some("CLINIC-B"));
    let orphan = patient_event("MRN-B2", Some("NO-SUCH-CLINIC"));
    let (org_b, patient_b, orphan_b) = (bytes(&org), bytes(&patient), bytes(&orphan));
    fn rec(offset: i64, payload: &[u8]) -> carehub_pipeline::InboundRecord<'_> {
        carehub_pipeline::InboundRecord {
            topic: "intake",
            partition: Some(0),
            offset: Some(offset),
            key: None,
            payload,
        }
    }
    let batch = [
        rec(0, &org_b),
        rec(1, &orphan_b),
        rec(2, &patient_b),
        // The same event again in the same batch: no second effect.
        rec(3, &patient_b),
        rec(4, b"not json"),
    ];
    let out = engine.process_batch(&batch).await.expect("batch");
    assert!(matches!(out[0], Processed::Applied { .. }), "{:?}", out[0]);
    assert!(
        matches!(
            out[1],
            Processed::DeadLettered {
                code: "unknown_reference",
                new: true,
                ..
            }
        ),
        "{:?}",
        out[1]
    );
    assert!(matches!(out[2], Processed::Applied { .. }), "{:?}", out[2]);
    assert!(matches!(out[3], Processed::Duplicate { .. }), "{:?}", out[3]);
    assert!(
        matches!(
            out[4],
            Processed::DeadLettered {
                code: "invalid_envelope",
                ..
            }
        ),
        "{:?}",
        out[4]
    );
    assert_eq!(count(&db.pool, "SELECT count(*) FROM organization").await, 1);
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM patient").await,
        1,
        "the orphan left nothing"
    );
    assert_eq!(count(&db.pool, "SELECT count(*) FROM dead_letter").await, 2);
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM outbox").await,
        2,
        "one event per applied record"
    );
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM message WHERE status = 'processed'").await,
        2
    );
    // Every record's ingest is audited, in batch order, and the chain holds.
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM audit_log WHERE action = 'ingest'").await,
        4
    );
    assert!(AuditLog::verify(&db.pool).await.expect("verify").first_break.is_none());

    // The batch again (a redelivery after a crash before the offset commit).
    let again = engine.process_batch(&batch).await.expect("batch again");
    assert!(matches!(again[0], Processed::Duplicate { .. }));
    assert!(matches!(again[1], Processed::DeadLettered { new: false, .. }));
    assert_eq!(count(&db.pool, "SELECT count(*) FROM dead_letter").await, 2);
    assert_eq!(count(&db.pool, "SELECT count(*) FROM outbox").await, 2);
}

#[tokio::test]
async fn audit_appends_outside_a_transaction_still_chain_one_after_another() {
    let db = fresh_db().await;
    let mut tasks = Vec::new();
    for w in 0..8 {
        let pool = db.pool.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..25 {
                // A pooled connection in autocommit mode, as a request handler has.
                let mut conn = pool.acquire().await.expect("connection");
                AuditLog::append(
                    &mut conn,
                    &[AuditEntry::new(ActorKind::User, format!("reader-{w}"), Action::Read, "patient").entity(i)],
                )
                .await
                .expect("append");
            }
        }));
    }
    for t in tasks {
        t.await.expect("writer");
    }
    assert_eq!(count(&db.pool, "SELECT count(*) FROM audit_log").await, 200);
    let v = AuditLog::verify(&db.pool).await.expect("verify");
    assert!(v.first_break.is_none(), "{:?}", v.first_break);
}

/// The ingress's one rule for "same key, other content", and the two things a
/// connector may make of it: HL7 holds the changed copy for review (no
/// effect), DICOM stores it as a new version that goes on like a new message.
#[tokio::test]
async fn a_changed_duplicate_is_held_or_becomes_a_new_version_as_the_connector_says() {
    use carehub_connector_kit::{Arrival, ChangedContent, Ingress, IngressSpec, Judgement, Stored};
    let db = fresh_db().await;
    let ingress = |connector: &'static str, on_changed| {
        Ingress::start(IngressSpec {
            pool: db.pool.clone(),
            connector,
            protocol: "test",
            topic: "onward".into(),
            consumer: "test".into(),
            workers: 1,
            max_batch: 8,
            store_timeout: Duration::from_secs(10),
            on_changed,
            onward: Arc::new(|id, a: &Arrival| {
                Envelope::new("carehub.test.v1", "test", json!({ "message": id })).with_subject(a.key.clone())
            }),
        })
    };
    let arrival = |key: &str, raw: &str| Arrival {
        key: key.into(),
        partition_key: key.into(),
        message_type: None,
        control_id: None,
        peer: "127.0.0.1:1".into(),
        origin: "test:127.0.0.1:1".into(),
        raw: raw.as_bytes().to_vec(),
        judgement: Judgement::Accept,
    };
    let onward = |key: &'static str| {
        let pool = db.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM outbox WHERE key = $1")
                .bind(key)
                .fetch_one(&pool)
                .await
                .expect("outbox counted")
        }
    };

    let held = ingress("held", ChangedContent::HoldForReview);
    let Ok(Stored::New { message_id: first }) = held.store(arrival("k-held", "one")).await else {
        panic!("a new key is stored");
    };
    let again = held.store(arrival("k-held", "one")).await.expect("stored");
    assert_eq!(
        again,
        Stored::Duplicate {
            message_id: first,
            changed: false
        }
    );
    let changed = held.store(arrival("k-held", "two")).await.expect("stored");
    assert_eq!(
        changed,
        Stored::Duplicate {
            message_id: first,
            changed: true
        }
    );
    assert_eq!(onward("k-held").await, 1, "held: no second effect");

    let versioned = ingress("versioned", ChangedContent::NewVersion);
    let Ok(Stored::New { message_id: v1 }) = versioned.store(arrival("k-ver", "one")).await else {
        panic!("a new key is stored");
    };
    let Ok(Stored::NewVersion {
        message_id: v2,
        previous,
    }) = versioned.store(arrival("k-ver", "two")).await
    else {
        panic!("other content under the key is a new version");
    };
    assert_eq!(previous, v1);
    assert_ne!(v2, v1);
    // The key now names the new version: its content again is a plain duplicate.
    let again = versioned.store(arrival("k-ver", "two")).await.expect("stored");
    assert_eq!(
        again,
        Stored::Duplicate {
            message_id: v2,
            changed: false
        }
    );
    assert_eq!(onward("k-ver").await, 2, "each version goes on once");

    let conflicts: Vec<(String, String, Option<uuid::Uuid>)> =
        sqlx::query_as("SELECT connector, status, version_id FROM message_conflict ORDER BY id")
            .fetch_all(&db.pool)
            .await
            .expect("conflicts read");
    assert_eq!(
        conflicts,
        vec![
            ("held".to_owned(), "open".to_owned(), None),
            ("versioned".to_owned(), "applied".to_owned(), Some(v2)),
        ]
    );
    let raws: Vec<Vec<u8>> = sqlx::query_scalar("SELECT raw FROM message WHERE connector = 'versioned' ORDER BY id")
        .fetch_all(&db.pool)
        .await
        .expect("versions read");
    assert_eq!(raws, vec![b"one".to_vec(), b"two".to_vec()], "both versions kept");
}
