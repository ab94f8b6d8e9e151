//! Outbound delivery of the lab's status changes: the EHR push (FHIR PUTs)
//! and, with HL7 over MLLP, the one delivery runner killed mid-stream.

mod common;

use std::time::Duration;

use common::lab::*;
use common::*;
use serde_json::json;
use uuid::Uuid;

#[tokio::test]
async fn killed_midway_the_journey_resumes_with_nothing_lost_and_nothing_repeated() {
    let (peer, seen) = mllp_peer().await;
    let mut hub = lab_hub(&peer).await;
    order_device(&hub, "LAB0003", "PO-7003").await;
    let order = lab_orders(&hub, 1).remove(0).1;
    for (i, (status, _)) in JOURNEY[..4].iter().enumerate() {
        report(&hub, order.order_id, i as i64 + 1, status, journey_extra(status)).await;
    }
    let some = eventually(Duration::from_secs(60), || async {
        (received(&seen).len() >= 2).then_some(())
    })
    .await;
    assert!(some.is_some(), "{:?}", statuses(&received(&seen)));

    // SIGKILL: no shutdown, no final commit.
    hub.server.0.kill().expect("kill -9");
    let _ = hub.server.0.wait();
    for (i, (status, _)) in JOURNEY.iter().enumerate().skip(4) {
        report(&hub, order.order_id, i as i64 + 1, status, journey_extra(status)).await;
    }
    hub.server = serve(&hub.envs);

    let all = eventually(Duration::from_secs(120), || async {
        let ids: std::collections::BTreeSet<String> = control_ids(&seen).into_iter().collect();
        (ids.len() >= JOURNEY.len()).then_some(())
    })
    .await;
    assert!(all.is_some(), "the clinic heard: {:?}", statuses(&received(&seen)));
    let pool = &hub.db.pool;
    assert_eq!(
        count(pool, "SELECT count(*) FROM lab_job_event").await,
        JOURNEY.len() as i64,
        "each transition applied once"
    );
    assert_eq!(
        count(
            pool,
            "SELECT count(*) FROM audit_log WHERE action = 'update' AND entity_type = 'lab_job'"
        )
        .await,
        JOURNEY.len() as i64
    );
    assert_eq!(
        count(
            pool,
            "SELECT count(*) FROM outbox WHERE payload->>'type' = 'carehub.hl7v2.send.v1'"
        )
        .await,
        JOURNEY.len() as i64,
        "one status message per transition"
    );
    // The clinic got every status in order. Deliveries are remembered with
    // their audit entry, so a redelivered record is not sent again; only a
    // message whose ACK arrived in the instant before that commit (the kill
    // landing between the two) could be sent twice, under the same MSH-10.
    let ids = control_ids(&seen);
    let mut first_seen: Vec<String> = Vec::new();
    for id in &ids {
        if !first_seen.contains(id) {
            first_seen.push(id.clone());
        }
    }
    let heard: Vec<String> = statuses(&received(&seen))
        .into_iter()
        .zip(&ids)
        .scan(Vec::<String>::new(), |done, ((_, s), id)| {
            let new = !done.contains(id);
            done.push(id.clone());
            Some(new.then_some(s))
        })
        .flatten()
        .collect();
    assert_eq!(heard, JOURNEY.map(|(s, _)| s.to_owned()));
    assert!(
        ids.len() - first_seen.len() <= 1,
        "at most the message in flight at the kill is repeated: {ids:?}"
    );
}

/// A clinic's EHR as a FHIR server (a stand-in: the real one is a third
/// party): it keeps every PUT (type, id, status) and answers 503 to the
/// first one, so the push has to retry; with `refuse`, it answers every PUT
/// 422 (an OperationOutcome-worthy refusal).
async fn fhir_ehr(refuse: bool) -> (String, std::sync::Arc<std::sync::Mutex<Vec<(String, String, String)>>>) {
    use axum::extract::{Path, State};
    use axum::http::StatusCode;
    type Log = std::sync::Arc<std::sync::Mutex<Vec<(String, String, String)>>>;
    type Calls = std::sync::Arc<std::sync::atomic::AtomicUsize>;
    async fn put(
        State((log, calls, refuse)): State<(Log, Calls, bool)>,
        Path((ty, id)): Path<(String, String)>,
        body: String,
    ) -> StatusCode {
        if refuse {
            return StatusCode::UNPROCESSABLE_ENTITY;
        }
        if calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
            return StatusCode::SERVICE_UNAVAILABLE;
        }
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        let status = v["status"].as_str().unwrap_or("").to_owned();
        log.lock().expect("log").push((ty, id, status));
        StatusCode::OK
    }
    let log: Log = Default::default();
    let app = axum::Router::new()
        .route("/fhir/{ty}/{id}", axum::routing::put(put))
        .with_state((log.clone(), Calls::default(), refuse));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}/fhir"), log)
}

#[tokio::test]
async fn each_status_is_pushed_to_the_clinics_ehr_in_order_as_task_and_service_request() {
    let (peer, _) = mllp_peer().await;
    let (ehr, puts) = fhir_ehr(false).await;
    let db = fresh_db().await;
    let hub = start_hub_with(
        db,
        vec![
            ("CAREHUB_HL7__DESTINATIONS__NORTH__ENDPOINT", peer),
            (
                "CAREHUB_PIPELINES__LAB__CLINICS__NORTHCLINIC__HL7_DESTINATION",
                "north".to_owned(),
            ),
            ("CAREHUB_FHIR__PUSH__NORTH__BASE_URL", ehr),
            ("CAREHUB_FHIR__PUSH__NORTH__CLINIC", "NORTHCLINIC".to_owned()),
            ("CAREHUB_FHIR__PUSH__NORTH__MIN_BACKOFF_MS", "50".to_owned()),
            ("CAREHUB_FHIR__PUSH_GROUP", format!("push-{}", Uuid::new_v4().simple())),
        ],
    )
    .await;
    order_device(&hub, "LAB0007", "PO-7007").await;
    let order = lab_orders(&hub, 1).remove(0).1;
    for (i, (status, _)) in JOURNEY[..3].iter().enumerate() {
        report(&hub, order.order_id, i as i64 + 1, status, journey_extra(status)).await;
    }
    let all = eventually(Duration::from_secs(90), || async {
        (puts.lock().expect("puts").len() >= 6).then_some(())
    })
    .await;
    assert!(all.is_some(), "the EHR got: {:?}", puts.lock().expect("puts"));
    let id = order.order_id.to_string();
    let got = puts.lock().expect("puts").clone();
    let want: Vec<(String, String, String)> = [
        ("Task", "accepted"),
        ("ServiceRequest", "active"),
        ("Task", "in-progress"),
        ("ServiceRequest", "active"),
        ("Task", "in-progress"),
        ("ServiceRequest", "active"),
    ]
    .iter()
    .map(|(t, s)| ((*t).to_owned(), id.clone(), (*s).to_owned()))
    .collect();
    assert_eq!(got, want, "in order, the first after a retry");
    let pushed = eventually(Duration::from_secs(30), || async {
        let n = count(
            &hub.db.pool,
            "SELECT count(*) FROM audit_log WHERE action = 'send' AND actor_id = 'ehr_push'",
        )
        .await;
        (n == 3).then_some(())
    })
    .await;
    assert!(pushed.is_some(), "each push audited once");

    // Each component emitted the events it must (bounded labels only).
    use carehub_core::internal_events::metric;
    let m = metrics_text(&hub);
    for (label, value, events) in [
        (
            "connector",
            "hl7_mllp",
            &[metric::MESSAGES_RECEIVED, metric::HL7_ACKS_SENT][..],
        ),
        ("connector", "lab_status", &[metric::MESSAGES_RECEIVED][..]),
        ("connector", "hl7_out", &[metric::MESSAGES_SENT][..]),
        ("connector", "ehr_push", &[metric::MESSAGES_SENT][..]),
        ("connector", "hl7_mllp_sender", &[metric::HL7_ACKS_RECEIVED][..]),
    ] {
        let missing = missing_component_events(&m, label, value, events);
        assert!(missing.is_empty(), "{value} did not emit {missing:?}");
    }
    assert!(
        m.contains("message_type=\"ORM^O01\""),
        "the order counted under its (bounded) MSH-9 label"
    );
}

#[tokio::test]
async fn a_push_the_ehr_refuses_is_dead_lettered_with_its_reason() {
    let (peer, _) = mllp_peer().await;
    let (ehr, _) = fhir_ehr(true).await;
    let db = fresh_db().await;
    let hub = start_hub_with(
        db,
        vec![
            ("CAREHUB_HL7__DESTINATIONS__NORTH__ENDPOINT", peer),
            ("CAREHUB_FHIR__PUSH__NORTH__BASE_URL", ehr),
            ("CAREHUB_FHIR__PUSH__NORTH__CLINIC", "northclinic".to_owned()),
            ("CAREHUB_FHIR__PUSH_GROUP", format!("push-{}", Uuid::new_v4().simple())),
        ],
    )
    .await;
    order_device(&hub, "LAB0008", "PO-7008").await;
    let order = lab_orders(&hub, 1).remove(0).1;
    report(&hub, order.order_id, 1, "accepted", json!({})).await;
    let letter = eventually(Duration::from_secs(60), || async {
        sqlx::query_as::<_, (String, String)>("SELECT error_code, reason FROM dead_letter WHERE consumer = 'ehr_push'")
            .fetch_optional(&hub.db.pool)
            .await
            .ok()
            .flatten()
    })
    .await;
    let (code, reason) = letter.expect("a dead letter");
    assert_eq!(code, "rejected_by_receiver");
    assert!(reason.contains("PUT Task/") && reason.contains("422"), "{reason}");
}

/// An EHR that logs each Task it is sent: (business status, lastModified),
/// lastModified telling one status change from another.
async fn task_ehr() -> (String, std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>) {
    use axum::extract::{Path, State};
    use axum::http::StatusCode;
    type Log = std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>;
    async fn put(State(log): State<Log>, Path((ty, _id)): Path<(String, String)>, body: String) -> StatusCode {
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        if ty == "Task" {
            let status = v["businessStatus"]["text"].as_str().unwrap_or("").to_owned();
            let at = v["lastModified"].as_str().unwrap_or("").to_owned();
            log.lock().expect("log").push((status, at));
        }
        StatusCode::OK
    }
    let log: Log = Default::default();
    let app = axum::Router::new()
        .route("/fhir/{ty}/{id}", axum::routing::put(put))
        .with_state(log.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}/fhir"), log)
}

/// The values in the order first seen under their key, and how many
/// deliveries repeated a key seen before.
fn first_seen(deliveries: &[(String, String)]) -> (Vec<String>, usize) {
    let mut keys: Vec<&String> = Vec::new();
    let mut values = Vec::new();
    for (key, value) in deliveries {
        if !keys.contains(&key) {
            keys.push(key);
            values.push(value.clone());
        }
    }
    (values, deliveries.len() - keys.len())
}

/// The one delivery runner, both receivers at once (HL7 over MLLP to the
/// clinic, FHIR PUTs to its EHR), the hub killed with SIGKILL mid-stream:
/// each receiver gets every status change, in order, and at most the one in
/// flight at the kill twice (its delivery commit did not happen; the record
/// is redelivered and sent again under the same MSH-10 / lastModified);
/// each delivery is remembered and audited once.
#[tokio::test]
async fn killed_mid_delivery_the_hl7_and_ehr_receivers_get_everything_in_order() {
    let (peer, seen) = mllp_peer().await;
    let (ehr, tasks) = task_ehr().await;
    let db = fresh_db().await;
    let mut hub = start_hub_with(
        db,
        vec![
            ("CAREHUB_HL7__DESTINATIONS__NORTH__ENDPOINT", peer),
            ("CAREHUB_HL7__DESTINATIONS__NORTH__MIN_BACKOFF_MS", "50".to_owned()),
            (
                "CAREHUB_PIPELINES__LAB__CLINICS__NORTHCLINIC__HL7_DESTINATION",
                "north".to_owned(),
            ),
            ("CAREHUB_FHIR__PUSH__NORTH__BASE_URL", ehr),
            ("CAREHUB_FHIR__PUSH__NORTH__CLINIC", "NORTHCLINIC".to_owned()),
            ("CAREHUB_FHIR__PUSH__NORTH__MIN_BACKOFF_MS", "50".to_owned()),
            ("CAREHUB_FHIR__PUSH_GROUP", format!("push-{}", Uuid::new_v4().simple())),
        ],
    )
    .await;
    order_device(&hub, "LAB0011", "PO-7011").await;
    let order = lab_orders(&hub, 1).remove(0).1;
    for (i, (status, _)) in JOURNEY[..4].iter().enumerate() {
        report(&hub, order.order_id, i as i64 + 1, status, journey_extra(status)).await;
    }
    let some = eventually(Duration::from_secs(60), || async {
        (received(&seen).len() >= 2 && tasks.lock().expect("tasks").len() >= 2).then_some(())
    })
    .await;
    assert!(some.is_some(), "deliveries started before the kill");

    hub.server.0.kill().expect("kill -9");
    let _ = hub.server.0.wait();
    for (i, (status, _)) in JOURNEY.iter().enumerate().skip(4) {
        report(&hub, order.order_id, i as i64 + 1, status, journey_extra(status)).await;
    }
    hub.server = serve(&hub.envs);

    let hl7 = || -> Vec<(String, String)> {
        control_ids(&seen)
            .into_iter()
            .zip(statuses(&received(&seen)).into_iter().map(|(_, s)| s))
            .collect()
    };
    let ehr = || -> Vec<(String, String)> {
        tasks
            .lock()
            .expect("tasks")
            .iter()
            // A push is the change it says (its time and status): reports
            // applied in one batch may share a millisecond.
            .map(|(status, at)| (format!("{at} {status}"), status.clone()))
            .collect()
    };
    let all = eventually(Duration::from_secs(120), || async {
        (first_seen(&hl7()).0.len() >= JOURNEY.len() && first_seen(&ehr()).0.len() >= JOURNEY.len()).then_some(())
    })
    .await;
    assert!(all.is_some(), "HL7 heard {:?}; the EHR {:?}", hl7(), ehr());

    let (hl7_order, hl7_repeats) = first_seen(&hl7());
    assert_eq!(hl7_order, JOURNEY.map(|(s, _)| s.to_owned()), "HL7 in order");
    assert!(
        hl7_repeats <= 1,
        "HL7: at most the message in flight repeated: {:?}",
        hl7()
    );
    let (ehr_order, ehr_repeats) = first_seen(&ehr());
    assert_eq!(ehr_order, JOURNEY.map(|(s, _)| s.to_owned()), "EHR in order");
    assert!(
        ehr_repeats <= 1,
        "EHR: at most the push in flight repeated: {:?}",
        ehr()
    );
    for consumer in ["hl7_out", "ehr_push"] {
        let sends = eventually(Duration::from_secs(30), || async {
            let n = count(
                &hub.db.pool,
                &format!("SELECT count(*) FROM audit_log WHERE action = 'send' AND actor_id = '{consumer}'"),
            )
            .await;
            (n == JOURNEY.len() as i64).then_some(n)
        })
        .await;
        assert!(sends.is_some(), "{consumer}: each delivery remembered and audited once");
    }
}

/// Records on the EHR events topic that are not the contract — not an
/// envelope, the contract's data malformed (no sequence, a Task that is
/// not one) — are refused as dead letters with their reason; the EHR hears
/// nothing of them and the push goes on with the next record.
#[tokio::test]
async fn malformed_ehr_events_are_dead_lettered_and_never_pushed() {
    let (ehr, puts) = fhir_ehr(false).await;
    let db = fresh_db().await;
    let hub = start_hub_with(
        db,
        vec![
            ("CAREHUB_FHIR__PUSH__NORTH__BASE_URL", ehr),
            ("CAREHUB_FHIR__PUSH__NORTH__CLINIC", "NORTHCLINIC".to_owned()),
            ("CAREHUB_FHIR__PUSH_GROUP", format!("push-{}", Uuid::new_v4().simple())),
        ],
    )
    .await;
    let topic = env_value(&hub.envs, "CAREHUB_PIPELINES__LAB__EHR_EVENTS_TOPIC");
    let order = Uuid::new_v4();
    let no_sequence = carehub_schema::Envelope::new(
        carehub_schema::contracts::EHR_ORDER_STATUS,
        "/test/forged",
        json!({ "clinic": "NORTHCLINIC", "order_id": order, "lab_status": "accepted",
                "task": { "resourceType": "Task", "id": order }, "service_request": { "resourceType": "ServiceRequest", "id": order } }),
    );
    let not_a_task = carehub_schema::Envelope::new(
        carehub_schema::contracts::EHR_ORDER_STATUS,
        "/test/forged",
        json!({ "clinic": "NORTHCLINIC", "order_id": order, "lab_status": "accepted", "sequence": 1,
                "task": { "resourceType": "Patient", "id": order }, "service_request": { "resourceType": "ServiceRequest", "id": order } }),
    );
    let p = producer();
    let key = order.to_string();
    produce(&p, &topic, &key, b"{not json").await;
    produce(&p, &topic, &key, &bytes(&no_sequence)).await;
    produce(&p, &topic, &key, &bytes(&not_a_task)).await;
    let letters = eventually(Duration::from_secs(60), || async {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT error_code, reason FROM dead_letter WHERE consumer = 'ehr_push' ORDER BY kafka_offset",
        )
        .fetch_all(&hub.db.pool)
        .await
        .unwrap_or_default();
        (rows.len() == 3).then_some(rows)
    })
    .await
    .expect("three dead letters");
    assert_eq!(letters[0].0, "invalid_envelope", "{letters:?}");
    assert_eq!(letters[1].0, "invalid_data", "{letters:?}");
    assert!(
        letters[1].1.contains("sequence"),
        "the reason names what is missing: {letters:?}"
    );
    assert_eq!(letters[2].0, "invalid_data", "{letters:?}");
    assert!(letters[2].1.contains("task"), "{letters:?}");
    assert!(puts.lock().expect("puts").is_empty(), "nothing pushed");
}

/// Two hubs' relays, four workers each, publish an outbox that is still
/// being written: each lane has one publisher at a time (no event twice,
/// nothing crashed), and every key's events arrive in the order written.
#[tokio::test]
async fn relay_workers_of_two_instances_share_the_lanes_and_keep_each_keys_order() {
    use carehub_kafka::{OutboxRelay, RelayConfig};
    use carehub_schema::{Envelope, Outbox};

    let db = fresh_db().await;
    let topic = unique_topic("lanes");
    create_topics(&[&topic]).await;
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let config = RelayConfig {
        batch_size: 50,
        poll_interval_ms: 10,
        workers: 4,
    };
    let relays: Vec<_> = (0..2)
        .map(|_| tokio::spawn(OutboxRelay::new(db.pool.clone(), producer(), config.clone()).run(shutdown.clone())))
        .collect();
    let (keys, per_key) = (24, 25);
    for round in 0..per_key {
        // One transaction per round writes one event for every key.
        let mut tx = db.pool.begin().await.expect("tx");
        for k in 0..keys {
            let event = Envelope::new("carehub.test.sequenced.v1", "/test", json!({ "seq": round }));
            Outbox::enqueue(&mut tx, &topic, &format!("key-{k}"), &event)
                .await
                .expect("enqueue");
        }
        tx.commit().await.expect("commit");
    }
    let total = keys * per_key;
    let drained = eventually(Duration::from_secs(60), || async {
        (Outbox::backlog(&db.pool).await.expect("backlog") == 0).then_some(())
    })
    .await;
    assert!(drained.is_some(), "the relays published the outbox");
    let _ = stop.send(true);
    for r in relays {
        r.await.expect("relay stopped");
    }

    let records = read_topic(&topic, total, Duration::from_secs(30));
    // Anything published twice would be here beyond `total` (read for a while more).
    let extra = read_topic(&topic, total + 1, Duration::from_secs(2));
    assert_eq!(extra.len(), total, "every event once: no lane had two publishers");
    let mut seqs: std::collections::BTreeMap<String, Vec<(i64, u64)>> = Default::default();
    for r in &records {
        let env = Envelope::from_slice(&r.payload).expect("envelope");
        seqs.entry(r.key.clone().expect("key"))
            .or_default()
            .push((r.offset, env.data["seq"].as_u64().expect("seq")));
    }
    assert_eq!(seqs.len(), keys);
    for (key, mut s) in seqs {
        s.sort();
        let order: Vec<u64> = s.iter().map(|x| x.1).collect();
        assert_eq!(order, (0..per_key as u64).collect::<Vec<_>>(), "key {key}");
    }
}
