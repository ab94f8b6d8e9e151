//! The lab's manufacturing over Kafka through the running hub: an order
//! arrives over MLLP, goes to the lab on its topic, the lab's status reports
//! come back, and the clinic's MLLP peer hears every step, in order. Real
//! PostgreSQL, broker and sockets; the lab is this test, speaking the topics.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use carehub_hl7::codec::Message;
use carehub_schema::Envelope;
use carehub_schema::contracts::{LAB_RESULTS, OrderAction};
use common::lab::*;
use common::*;
use serde_json::json;
use uuid::Uuid;

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

/// Reports that wait in the topic while the hub is down arrive as one batch
/// and are judged in memory in the lab's order, as one by one: within the
/// batch a report ahead of its turn is held and applied when its gap is
/// filled, a second copy is harmless, and a held report that cannot follow
/// becomes a dead letter of its own while the report that arrived stands.
#[tokio::test]
async fn reports_waiting_in_one_batch_are_applied_in_the_labs_order_as_one_by_one() {
    let (peer, seen) = mllp_peer().await;
    let mut hub = lab_hub(&peer).await;
    order_device(&hub, "LAB0031", "PO-7031").await;
    order_device(&hub, "LAB0032", "PO-7032").await;
    let orders: Vec<Uuid> = lab_orders(&hub, 2).into_iter().map(|(_, o, _)| o.order_id).collect();
    let (a, b) = (orders[0], orders[1]);

    hub.server.0.kill().expect("kill -9");
    let _ = hub.server.0.wait();
    report(&hub, a, 3, "qc_passed", json!({})).await;
    report(&hub, a, 1, "accepted", json!({})).await;
    report(&hub, a, 1, "accepted", json!({})).await;
    report(&hub, a, 2, "in_production", json!({})).await;
    let cannot_follow = report(
        &hub,
        b,
        2,
        "shipped",
        json!({ "carrier": "DHL", "tracking_number": "JD2" }),
    )
    .await;
    report(&hub, b, 1, "accepted", json!({})).await;
    hub.server = serve(&hub.envs);

    let pool = &hub.db.pool;
    let done = eventually(Duration::from_secs(90), || async {
        (count(
            pool,
            "SELECT count(*) FROM message WHERE connector = 'kafka' AND status = 'received'",
        )
        .await
            == 0
            && count(pool, "SELECT count(*) FROM lab_job_event").await >= 4
            && received(&seen).len() >= 4)
            .then_some(())
    })
    .await;
    assert!(done.is_some(), "{:?}", statuses(&received(&seen)));
    let job = |id: Uuid| async move {
        sqlx::query_as::<_, (String, i64)>("SELECT status, last_sequence FROM lab_job WHERE order_id = $1")
            .bind(id)
            .fetch_one(pool)
            .await
            .expect("job")
    };
    assert_eq!(job(a).await, ("qc_passed".to_owned(), 3), "1, 2, then the held 3");
    assert_eq!(
        job(b).await,
        ("accepted".to_owned(), 1),
        "the report that arrived stands"
    );
    let timeline: Vec<(Uuid, i64, String)> =
        sqlx::query_as("SELECT order_id, sequence, to_status FROM lab_job_event ORDER BY order_id = $1 DESC, sequence")
            .bind(a)
            .fetch_all(pool)
            .await
            .expect("timeline");
    assert_eq!(
        timeline,
        [
            (a, 1, "accepted".to_owned()),
            (a, 2, "in_production".to_owned()),
            (a, 3, "qc_passed".to_owned()),
            (b, 1, "accepted".to_owned()),
        ]
    );
    let letters: Vec<(String, String)> =
        sqlx::query_as("SELECT event_id, error_code FROM dead_letter WHERE consumer = 'lab_status'")
            .fetch_all(pool)
            .await
            .expect("dead letters");
    assert_eq!(letters, [(cannot_follow, "invalid_transition".to_owned())]);
    assert_eq!(count(pool, "SELECT count(*) FROM lab_status_held").await, 0);
    let mut heard = statuses(&received(&seen));
    heard.sort();
    assert_eq!(
        heard,
        [
            ("IP".to_owned(), "in_production".to_owned()),
            ("IP".to_owned(), "qc_passed".to_owned()),
            ("SC".to_owned(), "accepted".to_owned()),
            ("SC".to_owned(), "accepted".to_owned()),
        ],
        "each applied change told once, the refused one not at all"
    );
    // Each order's waiting reports went in one transaction (the set pass),
    // not one by one.
    for id in [a, b] {
        let txs = count(
            pool,
            &format!("SELECT count(DISTINCT xmin::text) FROM lab_job_event WHERE order_id = '{id}'"),
        )
        .await;
        assert_eq!(txs, 1, "order {id}: its reports applied in one batch");
    }
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

/// Order events waiting together (the lab dispatch was off while the clinic
/// ordered, changed and withdrew) reach the lab as they would one by one:
/// each sees the order as it now stands, so the lab hears each order once —
/// a new order at its latest version, a change to one it knew, nothing of
/// one withdrawn before it heard of it.
#[tokio::test]
async fn order_events_waiting_together_reach_the_lab_as_they_would_one_by_one() {
    let (peer, _seen) = mllp_peer().await;
    let mut hub = lab_hub(&peer).await;
    order_device(&hub, "LAB0051", "PO-7051").await;
    let known = lab_orders(&hub, 1).remove(0).1;
    assert_eq!(known.action, OrderAction::New);

    let restart = |hub: &mut Hub, lab: bool| {
        hub.server.0.kill().expect("kill");
        let _ = hub.server.0.wait();
        hub.envs.retain(|(k, _)| *k != "CAREHUB_PIPELINES__LAB__ENABLED");
        hub.envs.push(("CAREHUB_PIPELINES__LAB__ENABLED", lab.to_string()));
        hub.server = serve(&hub.envs);
    };
    restart(&mut hub, false);
    let orm = |control: &str, placer: &str, orc: &str, note: &str| {
        wire(
            &fixture("orm_o01.hl7")
                .replace("ORM0001", control)
                .replace("PO-5001", placer)
                .replace("ORC|NW|", &format!("ORC|{orc}|"))
                .replace("patient active runner", note),
        )
    };
    for msg in [
        orm("LAB0052", "PO-7052", "NW", "first"),
        orm("LAB0052X", "PO-7052", "XO", "second thoughts"),
        orm("LAB0053", "PO-7053", "NW", "first"),
        orm("LAB0053C", "PO-7053", "CA", "first"),
        orm("LAB0051X", "PO-7051", "XO", "add metatarsal pad"),
    ] {
        let ack = send_until_accepted(&hub.mllp, &msg, Duration::from_secs(60))
            .await
            .expect("acknowledged");
        assert_eq!(ack.code.as_str(), "AA", "{ack:?}");
    }
    let pool = hub.db.pool.clone();
    let order_of = |placer: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query_as::<_, (Uuid, i32)>("SELECT id, version FROM service_order WHERE placer_number = $1")
                .bind(placer)
                .fetch_one(&pool)
                .await
                .expect("order")
        }
    };
    // The HL7 pipeline applied all five before the lab dispatch starts.
    let applied = eventually(Duration::from_secs(60), || async {
        (count(
            &pool,
            "SELECT count(*) FROM message WHERE connector = 'hl7_mllp' AND status = 'processed'",
        )
        .await
            >= 6)
            .then_some(())
    })
    .await;
    assert!(applied.is_some(), "the orders were applied");
    let (a, a_version) = order_of("PO-7052").await;
    let (b, _) = order_of("PO-7053").await;
    let (c, c_version) = order_of("PO-7051").await;
    restart(&mut hub, true);

    let done = eventually(Duration::from_secs(90), || async {
        (count(
            &pool,
            "SELECT count(*) FROM consumed_event WHERE consumer = 'lab_dispatch'",
        )
        .await
            >= 6)
            .then_some(())
    })
    .await;
    assert!(done.is_some(), "the dispatch took the six order events");
    let told = lab_orders(&hub, 3);
    // The topic's partitions are read one after another: compare as sets.
    let mut told: Vec<String> = told
        .iter()
        .map(|(_, o, _)| format!("{:?} {} v{}", o.action, o.order_id, o.order_version))
        .collect();
    told.sort();
    let mut want = vec![
        format!("{:?} {c} v{}", OrderAction::New, known.order_version),
        format!("{:?} {a} v{a_version}", OrderAction::New),
        format!("{:?} {c} v{c_version}", OrderAction::Amend),
    ];
    want.sort();
    assert_eq!(
        told, want,
        "the new order at its latest version, the change, nothing of {b}"
    );
    let jobs: Vec<(Uuid, i32, bool)> =
        sqlx::query_as("SELECT order_id, dispatched_version, cancel_requested FROM lab_job ORDER BY order_id")
            .fetch_all(&pool)
            .await
            .expect("jobs");
    let mut want = vec![(a, a_version, false), (c, c_version, false)];
    want.sort();
    assert_eq!(
        jobs, want,
        "no job for the order withdrawn before the lab heard of it ({b})"
    );
}
