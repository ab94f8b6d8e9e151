//! The lab journey's helpers: a hub with a clinic's MLLP destination, the
//! clinic's order, the lab's reports, the notices the clinic heard.

use std::time::Duration;

use carehub_hl7::codec::Message;
use carehub_schema::Envelope;
use carehub_schema::contracts::{LAB_ORDER, LAB_STATUS, LabOrder};
use uuid::Uuid;

use super::*;

/// A hub whose clinic NORTHCLINIC gets HL7 status messages at `peer`.
pub async fn lab_hub(peer: &str) -> Hub {
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
pub async fn order_device(hub: &Hub, control_id: &str, placer: &str) {
    let text = fixture("orm_o01.hl7")
        .replace("ORM0001", control_id)
        .replace("PO-5001", placer);
    let ack = send_until_accepted(&hub.mllp, &wire(&text), Duration::from_secs(60))
        .await
        .expect("the order is acknowledged");
    assert_eq!(ack.code.as_str(), "AA", "{ack:?}");
}

/// The lab's side: the order records it received (envelope, data).
pub fn lab_orders(hub: &Hub, want: usize) -> Vec<(Envelope, LabOrder, String)> {
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
pub async fn report(hub: &Hub, order: Uuid, sequence: i64, status: &str, extra: serde_json::Value) -> String {
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
pub fn statuses(messages: &[String]) -> Vec<(String, String)> {
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

pub async fn event_processed(pool: &sqlx::PgPool, event_id: &str) -> bool {
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

pub const JOURNEY: [(&str, &str); 8] = [
    ("accepted", "SC"),
    ("in_production", "IP"),
    ("qc_failed", "IP"),
    ("in_production", "IP"),
    ("qc_passed", "IP"),
    ("ready_to_ship", "IP"),
    ("shipped", "IP"),
    ("delivered", "CM"),
];

pub fn journey_extra(status: &str) -> serde_json::Value {
    match status {
        "qc_failed" => json!({ "reason": "heel cup cracked in QC" }),
        "shipped" => json!({ "carrier": "DHL", "tracking_number": "JD014600006281230" }),
        _ => json!({}),
    }
}
