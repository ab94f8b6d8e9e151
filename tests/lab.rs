//! The lab's manufacturing over Kafka through the running hub: an order
//! arrives over MLLP, goes to the lab on its topic, the lab's status reports
//! come back, and the clinic's MLLP peer hears every step, in order. Real
//! PostgreSQL, broker and sockets; the lab is this test, speaking the topics.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use carehub_hl7::codec::Message;
use carehub_schema::Envelope;
use carehub_schema::contracts::{LAB_ORDER, LAB_RESULTS, LAB_STATUS, LabOrder, OrderAction};
use common::*;
use serde_json::json;
use uuid::Uuid;

/// A hub whose clinic NORTHCLINIC gets HL7 status messages at `peer`.
async fn lab_hub(peer: &str) -> Hub {
    let db = fresh_db().await;
    start_hub_with(
        db,
        vec![
            ("CAREHUB_HL7__DESTINATIONS__NORTH__ENDPOINT", peer.to_owned()),
            ("CAREHUB_HL7__DESTINATIONS__NORTH__MIN_BACKOFF_MS", "50".to_owned()),
            (
                "CAREHUB_PIPELINES__LAB__CLINICS__NORTHCLINIC__HL7_DESTINATION",
                "north".to_owned(),
            ),
        ],
    )
    .await
}

/// The clinic orders a device: ORM^O01 over MLLP, accepted (AA).
async fn order_device(hub: &Hub, control_id: &str, placer: &str) {
    let text = fixture("orm_o01.hl7")
        .replace("ORM0001", control_id)
        .replace("PO-5001", placer);
    let ack = send_until_accepted(&hub.mllp, &wire(&text), Duration::from_secs(60))
        .await
        .expect("the order is acknowledged");
    assert_eq!(ack.code.as_str(), "AA", "{ack:?}");
}

/// The lab's side: the order records it received (envelope, data).
fn lab_orders(hub: &Hub, want: usize) -> Vec<(Envelope, LabOrder, String)> {
    let topic = env_value(&hub.envs, "CAREHUB_PIPELINES__LAB__ORDERS_TOPIC");
    read_topic(&topic, want, Duration::from_secs(90))
        .into_iter()
        .map(|r| {
            let env = Envelope::from_slice(&r.payload).expect("envelope");
            assert_eq!(env.event_type, LAB_ORDER);
            let order: LabOrder = serde_json::from_value(env.data.clone()).expect("lab order");
            (env, order, String::from_utf8_lossy(&r.payload).into_owned())
        })
        .collect()
}

/// The lab reports a status.
async fn report(hub: &Hub, order: Uuid, sequence: i64, status: &str, extra: serde_json::Value) -> String {
    let topic = env_value(&hub.envs, "CAREHUB_PIPELINES__LAB__STATUS_TOPIC");
    let mut data = json!({ "order_id": order, "sequence": sequence, "status": status });
    if let (Some(d), serde_json::Value::Object(extra)) = (data.as_object_mut(), extra) {
        d.extend(extra);
    }
    let env = Envelope::new(LAB_STATUS, "/test/lab", data);
    produce(&producer(), &topic, &order.to_string(), &bytes(&env)).await;
    env.id
}

/// ORC-5 and the lab status named in the NTE of each status message.
fn statuses(messages: &[String]) -> Vec<(String, String)> {
    messages
        .iter()
        .map(|text| {
            let msg = Message::parse(text).expect("status message parses");
            let note = msg.get("NTE-3").decoded().into_owned();
            let status = note
                .strip_prefix("Lab status ")
                .and_then(|n| n.split_whitespace().next())
                .unwrap_or("")
                .to_owned();
            (msg.get("ORC-5").raw().to_owned(), status)
        })
        .collect()
}

async fn event_processed(pool: &sqlx::PgPool, event_id: &str) -> bool {
    eventually(Duration::from_secs(60), || async {
        let n = count(
            pool,
            &format!("SELECT count(*) FROM message WHERE control_id = '{event_id}' AND status <> 'received'"),
        )
        .await;
        (n > 0).then_some(())
    })
    .await
    .is_some()
}

const JOURNEY: [(&str, &str); 8] = [
    ("accepted", "SC"),
    ("in_production", "IP"),
    ("qc_failed", "IP"),
    ("in_production", "IP"),
    ("qc_passed", "IP"),
    ("ready_to_ship", "IP"),
    ("shipped", "IP"),
    ("delivered", "CM"),
];

fn journey_extra(status: &str) -> serde_json::Value {
    match status {
        "qc_failed" => json!({ "reason": "heel cup cracked in QC" }),
        "shipped" => json!({ "carrier": "DHL", "tracking_number": "JD014600006281230" }),
        _ => json!({}),
    }
}

#[tokio::test]
async fn an_order_travels_to_the_lab_and_every_status_reaches_the_clinic_in_order() {
    let (peer, seen) = mllp_peer().await;
    let hub = lab_hub(&peer).await;
    let pool = &hub.db.pool;
    order_device(&hub, "LAB0001", "PO-7001").await;

    // One lab order, with what manufacturing needs and nothing that names the patient.
    let orders = lab_orders(&hub, 1);
    assert_eq!(orders.len(), 1, "one lab order");
    let (_, order, raw) = &orders[0];
    assert_eq!(order.action, OrderAction::New);
    assert_eq!(order.order_number.value, "PO-7001");
    assert_eq!(order.clinic.as_deref(), Some("NORTHCLINIC"));
    assert_eq!(order.items[0].code, "L3000");
    assert_eq!(order.patient.birth_year, Some(1980));
    assert_eq!(order.patient.sex.as_deref(), Some("female"));
    assert_eq!(order.priority, "routine");
    assert!(order.device_spec.is_some(), "device specification");
    for phi in ["Testpatient", "Alex", "P-1001", "19800102", "1980-01-02"] {
        assert!(!raw.contains(phi), "the lab order carries {phi}: {raw}");
    }

    for (i, (status, _)) in JOURNEY.iter().enumerate() {
        report(&hub, order.order_id, i as i64 + 1, status, journey_extra(status)).await;
    }
    let all = eventually(Duration::from_secs(120), || async {
        (received(&seen).len() >= JOURNEY.len()).then_some(())
    })
    .await;
    assert!(all.is_some(), "the clinic heard: {:?}", statuses(&received(&seen)));
    let heard = statuses(&received(&seen));
    let want: Vec<(String, String)> = JOURNEY
        .iter()
        .map(|(s, orc5)| ((*orc5).to_owned(), (*s).to_owned()))
        .collect();
    assert_eq!(heard, want, "each status once, in order, with its ORC-5");
    let messages = received(&seen);
    let first = Message::parse(&messages[0]).expect("parses");
    assert_eq!(first.type_label(), "ORM^O01");
    assert_eq!(first.get("ORC-2.1").raw(), "PO-7001");
    assert_eq!(
        first.get("PID-3.1").raw(),
        "P-1001",
        "the clinic recognises its patient"
    );

    // The canonical record and its history.
    let (status, remakes, last): (String, i32, i64) =
        sqlx::query_as("SELECT status, remakes, last_sequence FROM lab_job WHERE order_id = $1")
            .bind(order.order_id)
            .fetch_one(pool)
            .await
            .expect("lab job");
    assert_eq!((status.as_str(), remakes, last), ("delivered", 1, 8));
    let timeline: Vec<(String,)> =
        sqlx::query_as("SELECT to_status FROM lab_job_event WHERE order_id = $1 ORDER BY sequence")
            .bind(order.order_id)
            .fetch_all(pool)
            .await
            .expect("timeline");
    let timeline: Vec<&str> = timeline.iter().map(|(s,)| s.as_str()).collect();
    assert_eq!(timeline, JOURNEY.map(|(s, _)| s));
    let (order_status,): (String,) = sqlx::query_as("SELECT status FROM service_order WHERE id = $1")
        .bind(order.order_id)
        .fetch_one(pool)
        .await
        .expect("order");
    assert_eq!(order_status, "completed");
    let (shipment, tracking): (String, Option<String>) =
        sqlx::query_as("SELECT status, tracking_number FROM shipment WHERE order_id = $1")
            .bind(order.order_id)
            .fetch_one(pool)
            .await
            .expect("shipment");
    assert_eq!(
        (shipment.as_str(), tracking.as_deref()),
        ("delivered", Some("JD014600006281230"))
    );

    // The audit trail: sent to the lab, each transition, each delivery to the clinic.
    let trail: Vec<(String, String, serde_json::Value)> = sqlx::query_as(
        "SELECT action, entity_type, coalesce(detail, 'null')::jsonb FROM audit_log
          WHERE entity_id = $1 ORDER BY seq",
    )
    .bind(order.order_id.to_string())
    .fetch_all(pool)
    .await
    .expect("audit");
    let transitions: Vec<&str> = trail
        .iter()
        .filter(|(a, e, _)| a == "update" && e == "lab_job")
        .map(|(_, _, d)| d["to"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(transitions, JOURNEY.map(|(s, _)| s));
    assert_eq!(
        trail
            .iter()
            .filter(|(a, e, d)| a == "send" && e == "service_order" && d["lab_action"] == "new")
            .count(),
        1,
        "the dispatch to the lab is audited"
    );
    let delivered = eventually(Duration::from_secs(30), || async {
        (count(
            pool,
            "SELECT count(*) FROM audit_log WHERE action = 'send' AND entity_type = 'hl7_message'",
        )
        .await
            >= JOURNEY.len() as i64)
            .then_some(())
    })
    .await;
    assert!(delivered.is_some(), "each delivery to the clinic is audited");

    // And the EHR events: one Task per change, in order.
    let ehr = env_value(&hub.envs, "CAREHUB_PIPELINES__LAB__EHR_EVENTS_TOPIC");
    let tasks: Vec<String> = read_topic(&ehr, JOURNEY.len(), Duration::from_secs(60))
        .iter()
        .map(|r| {
            let env = Envelope::from_slice(&r.payload).expect("envelope");
            env.data["task"]["businessStatus"]["coding"][0]["code"]
                .as_str()
                .unwrap_or("")
                .to_owned()
        })
        .collect();
    assert_eq!(tasks, JOURNEY.map(|(s, _)| s));
}

#[tokio::test]
async fn reports_out_of_order_are_held_duplicates_are_harmless_and_invalid_ones_are_dead_lettered() {
    let (peer, seen) = mllp_peer().await;
    let hub = lab_hub(&peer).await;
    let pool = &hub.db.pool;
    order_device(&hub, "LAB0002", "PO-7002").await;
    let order = lab_orders(&hub, 1).remove(0).1;

    // Report 2 overtakes report 1: held, then both applied in the lab's order.
    let early = report(&hub, order.order_id, 2, "in_production", json!({})).await;
    assert!(event_processed(pool, &early).await);
    assert_eq!(
        count(pool, "SELECT count(*) FROM lab_status_held").await,
        1,
        "held until report 1 arrives"
    );
    report(&hub, order.order_id, 1, "accepted", json!({})).await;
    let both = eventually(Duration::from_secs(60), || async {
        (received(&seen).len() >= 2).then_some(())
    })
    .await;
    assert!(both.is_some(), "{:?}", statuses(&received(&seen)));
    assert_eq!(
        statuses(&received(&seen)),
        [
            ("SC".to_owned(), "accepted".to_owned()),
            ("IP".to_owned(), "in_production".to_owned())
        ]
    );
    assert_eq!(count(pool, "SELECT count(*) FROM lab_status_held").await, 0);

    // The lab sends report 2 again under a new event id: no second effect.
    let outbox_before = count(pool, "SELECT count(*) FROM outbox").await;
    let again = report(&hub, order.order_id, 2, "in_production", json!({})).await;
    assert!(event_processed(pool, &again).await);
    assert_eq!(
        count(pool, "SELECT count(*) FROM outbox").await,
        outbox_before,
        "nothing new to send"
    );
    assert_eq!(
        count(pool, "SELECT count(*) FROM lab_job_event").await,
        2,
        "no second transition"
    );

    // Shipped straight from production: refused, dead-lettered with the reason.
    let skip = report(
        &hub,
        order.order_id,
        3,
        "shipped",
        json!({ "carrier": "DHL", "tracking_number": "JD1" }),
    )
    .await;
    // Report 2 says something else now: a conflict. An unknown order: a dead letter too.
    let conflict = report(&hub, order.order_id, 2, "cancelled", json!({})).await;
    let unknown = report(&hub, Uuid::now_v7(), 1, "accepted", json!({})).await;
    let incomplete = report(&hub, order.order_id, 3, "qc_failed", json!({})).await;
    for id in [&skip, &conflict, &unknown, &incomplete] {
        assert!(event_processed(pool, id).await, "{id} handled");
    }
    let letters: BTreeMap<String, (String, String)> = sqlx::query_as::<_, (String, String, String)>(
        "SELECT event_id, error_code, reason FROM dead_letter WHERE consumer = 'lab_status'",
    )
    .fetch_all(pool)
    .await
    .expect("dead letters")
    .into_iter()
    .map(|(id, code, reason)| (id, (code, reason)))
    .collect();
    assert_eq!(letters[&skip].0, "invalid_transition");
    assert!(
        letters[&skip].1.contains("cannot go from in_production to shipped"),
        "{}",
        letters[&skip].1
    );
    assert_eq!(letters[&conflict].0, "sequence_conflict");
    assert_eq!(letters[&unknown].0, "unknown_reference");
    assert_eq!(letters[&incomplete].0, "invalid_data");
    assert!(
        letters[&incomplete].1.contains("needs a reason"),
        "{}",
        letters[&incomplete].1
    );
    let (status,): (String,) = sqlx::query_as("SELECT status FROM lab_job WHERE order_id = $1")
        .bind(order.order_id)
        .fetch_one(pool)
        .await
        .expect("job");
    assert_eq!(status, "in_production", "no silent state change");
    assert_eq!(
        received(&seen).len(),
        2,
        "the clinic heard nothing of the refused reports"
    );
}

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

#[tokio::test]
async fn the_labs_results_become_observations_and_reach_the_clinic_as_oru_r01() {
    let (peer, seen) = mllp_peer().await;
    let hub = lab_hub(&peer).await;
    let pool = &hub.db.pool;
    order_device(&hub, "LAB0004", "PO-7004").await;
    let order = lab_orders(&hub, 1).remove(0).1;
    let topic = env_value(&hub.envs, "CAREHUB_PIPELINES__LAB__RESULTS_TOPIC");
    let data = json!({
        "order_id": order.order_id,
        "report_id": "QC-1",
        "status": "final",
        "results": [
            { "code_system": "urn:carehub:lab:measure", "code": "HEEL-W", "display": "Heel cup width",
              "value_type": "quantity", "value": "61.50", "unit": "mm", "reference_range": "58-64", "interpretation": "N" },
            { "code_system": "urn:carehub:lab:qc", "code": "FIT", "value_type": "string", "value": "pass" }
        ]
    });
    let first = Envelope::new(LAB_RESULTS, "/test/lab", data.clone());
    produce(&producer(), &topic, &order.order_id.to_string(), &bytes(&first)).await;
    // The same report again (a resend under a new event id): replaces, does not add.
    let again = Envelope::new(LAB_RESULTS, "/test/lab", data);
    produce(&producer(), &topic, &order.order_id.to_string(), &bytes(&again)).await;
    let bad = Envelope::new(
        LAB_RESULTS,
        "/test/lab",
        json!({ "order_id": order.order_id, "report_id": "QC-2", "status": "final",
                "results": [{ "code_system": "s", "code": "X", "value_type": "quantity", "value": "many" }] }),
    );
    produce(&producer(), &topic, &order.order_id.to_string(), &bytes(&bad)).await;
    for id in [&first.id, &again.id, &bad.id] {
        assert!(event_processed(pool, id).await, "{id} handled");
    }

    let obs: Vec<(String, Option<String>, Option<String>, String)> = sqlx::query_as(
        "SELECT code, value_quantity::text, value_string, status FROM observation WHERE order_id = $1 ORDER BY code",
    )
    .bind(order.order_id)
    .fetch_all(pool)
    .await
    .expect("observations");
    assert_eq!(
        obs,
        [
            ("FIT".to_owned(), None, Some("pass".to_owned()), "final".to_owned()),
            ("HEEL-W".to_owned(), Some("61.50".to_owned()), None, "final".to_owned()),
        ],
        "one observation per result, decimals exact, not doubled by the resend"
    );
    let (code, reason): (String, String) =
        sqlx::query_as("SELECT error_code, reason FROM dead_letter WHERE consumer = 'lab_results'")
            .fetch_one(pool)
            .await
            .expect("dead letter");
    assert_eq!(code, "invalid_data");
    assert!(reason.contains("not a number"), "{reason}");

    let got = eventually(Duration::from_secs(60), || async {
        (!received(&seen).is_empty()).then_some(())
    })
    .await;
    assert!(got.is_some(), "the clinic received the results");
    let messages = received(&seen);
    let oru = Message::parse(&messages[0]).expect("parses");
    assert_eq!(oru.type_label(), "ORU^R01");
    assert_eq!(oru.get("ORC-2.1").raw(), "PO-7004");
    assert_eq!(oru.get("PID-3.1").raw(), "P-1001");
    assert_eq!(oru.get("OBX-3.1").raw(), "HEEL-W");
    assert_eq!(oru.get("OBX-5").raw(), "61.50");
    assert_eq!(oru.get("OBX-11").raw(), "F");
    assert_eq!(oru.get("OBX[2]-5").raw(), "pass");
    // The resend produced the same message (same MSH-10), which the clinic can drop.
    let ids: std::collections::BTreeSet<String> = control_ids(&seen).into_iter().collect();
    assert_eq!(ids.len(), 1, "{:?}", control_ids(&seen));
    assert_eq!(
        count(pool, "SELECT count(*) FROM audit_log WHERE entity_type = 'observation'").await,
        4,
        "each observation write audited (created, then updated by the resend)"
    );
}

#[tokio::test]
async fn a_changed_order_is_amended_at_the_lab_and_a_withdrawn_one_cancelled() {
    let (peer, seen) = mllp_peer().await;
    let hub = lab_hub(&peer).await;
    order_device(&hub, "LAB0005", "PO-7005").await;
    let order = lab_orders(&hub, 1).remove(0).1;
    report(&hub, order.order_id, 1, "accepted", json!({})).await;

    // The clinic changes the order (ORC-1 XO, a new note), then withdraws it (CA).
    let change = fixture("orm_o01.hl7")
        .replace("ORM0001", "LAB0005X")
        .replace("PO-5001", "PO-7005")
        .replace("ORC|NW|", "ORC|XO|")
        .replace("patient active runner", "patient active runner; add metatarsal pad");
    let ack = send_until_accepted(&hub.mllp, &wire(&change), Duration::from_secs(60))
        .await
        .expect("change acknowledged");
    assert_eq!(ack.code.as_str(), "AA", "{ack:?}");
    let amended = lab_orders(&hub, 2);
    assert_eq!(amended.len(), 2, "the amendment reached the lab");
    assert_eq!(amended[1].1.action, OrderAction::Amend);
    assert!(amended[1].1.order_version > order.order_version);
    assert!(
        amended[1]
            .1
            .note
            .as_deref()
            .is_some_and(|n| n.contains("metatarsal pad")),
        "{:?}",
        amended[1].1.note
    );

    let cancel = fixture("orm_o01.hl7")
        .replace("ORM0001", "LAB0005C")
        .replace("PO-5001", "PO-7005")
        .replace("ORC|NW|", "ORC|CA|");
    let ack = send_until_accepted(&hub.mllp, &wire(&cancel), Duration::from_secs(60))
        .await
        .expect("cancel acknowledged");
    assert_eq!(ack.code.as_str(), "AA", "{ack:?}");
    let all = lab_orders(&hub, 3);
    assert_eq!(all.len(), 3, "the cancel request reached the lab");
    assert_eq!(all[2].1.action, OrderAction::Cancel);

    // The lab stops: the clinic hears accepted, then the cancel (ORC-1 OC, ORC-5 CA).
    report(&hub, order.order_id, 2, "cancelled", json!({})).await;
    let both = eventually(Duration::from_secs(60), || async {
        (received(&seen).len() >= 2).then_some(())
    })
    .await;
    assert!(both.is_some(), "{:?}", statuses(&received(&seen)));
    let last = Message::parse(&received(&seen)[1])
        .expect("parses")
        .get("ORC-1")
        .raw()
        .to_owned();
    assert_eq!(last, "OC");
    assert_eq!(
        statuses(&received(&seen)),
        [
            ("SC".to_owned(), "accepted".to_owned()),
            ("CA".to_owned(), "cancelled".to_owned())
        ]
    );
    let (job, order_status): (String, String) = sqlx::query_as(
        "SELECT j.status, o.status FROM lab_job j JOIN service_order o ON o.id = j.order_id WHERE j.order_id = $1",
    )
    .bind(order.order_id)
    .fetch_one(&hub.db.pool)
    .await
    .expect("job");
    assert_eq!((job.as_str(), order_status.as_str()), ("cancelled", "revoked"));
}

#[tokio::test]
async fn the_stand_in_lab_and_clinic_tools_run_a_journey_that_the_timeline_shows() {
    let clinic = format!("127.0.0.1:{}", free_port());
    let hub = lab_hub(&clinic).await;
    let envs = hub.envs.clone();
    // `carehub hl7 receive` as the clinic's EHR, `carehub lab simulate` as the lab.
    let receiver = std::process::Command::new(BIN)
        .args(["hl7", "receive", "--listen", &clinic, "--count", "8"])
        .envs(envs.iter().cloned())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("hl7 receive");
    let _receiver = Server(receiver);
    let lab = std::process::Command::new(BIN)
        .args(["lab", "simulate", "--orders", "1", "--step-ms", "50", "--group"])
        .arg(format!("sim-{}", Uuid::new_v4().simple()))
        .envs(envs.iter().cloned())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("lab simulate");
    let _lab = Server(lab);
    order_device(&hub, "LAB0006", "PO-7006").await;

    let timeline = tokio::task::spawn_blocking(move || {
        std::process::Command::new(BIN)
            .args(["lab", "timeline", "PO-7006", "--wait", "120", "--actor", "test"])
            .envs(envs.iter().cloned())
            .output()
            .expect("lab timeline")
    })
    .await
    .expect("join");
    let text = String::from_utf8_lossy(&timeline.stdout).into_owned();
    assert!(
        timeline.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&timeline.stderr)
    );
    assert!(text.contains("lab status delivered"), "{text}");
    assert!(text.contains("arrived     ORM^O01 LAB0006"), "{text}");
    assert!(text.contains("to the lab  "), "{text}");
    let statuses: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split("lab status  ").nth(1))
        .filter_map(|rest| rest.split(" -> ").nth(1))
        .map(|s| s.split_whitespace().next().unwrap_or(""))
        .collect();
    assert_eq!(statuses, JOURNEY.map(|(s, _)| s));
    assert_eq!(
        text.lines().filter(|l| l.contains("to clinic   HL7 ORM^O01")).count(),
        JOURNEY.len(),
        "{text}"
    );
    // Looking at the timeline is itself audited.
    assert_eq!(
        count(
            &hub.db.pool,
            "SELECT count(*) FROM audit_log WHERE action = 'read' AND actor_id = 'test'"
        )
        .await,
        1
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
            .map(|(status, at)| (at.clone(), status.clone()))
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
