//! No patient data in the log, the dead letters, the ACKs' ERR-8, the
//! OperationOutcomes or `carehub dlq list` (hardening item 9), with the hub
//! logging at debug level. Marker values are sent in good and in refused
//! input, and the test first proves they were really sent (stored), so it
//! cannot pass by seeing nothing.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use carehub_hl7::codec::mllp;
use common::*;

const FAMILY: &str = "Zyxmarkerfamily";
const MRN: &str = "MRN-PHI-778177";
const BIRTH: &str = "19770707";
const SECRET: &str = "phi-test-secret-at-least-32-bytes-long!";

fn markers(text: &str) -> Vec<&'static str> {
    [FAMILY, MRN, BIRTH, "1977-07-07", "1977-07-77"]
        .into_iter()
        .filter(|m| text.contains(m))
        .collect()
}

#[tokio::test]
async fn no_patient_data_reaches_logs_dead_letters_acks_outcomes_or_dlq_list() {
    let db = fresh_db().await;
    let log_path = std::env::temp_dir().join(format!("carehub-phi-{}.log", uuid::Uuid::new_v4().simple()));
    let intake = unique_topic("intake");
    let events = unique_topic("events");
    let port = free_port();
    let mut envs = hub_env(&db, &intake, &events, port);
    envs.push(("CAREHUB_FHIR__AUTH__HS256_SECRET", SECRET.to_owned()));
    let log = std::fs::File::create(&log_path).expect("log file");
    let server = Server(
        Command::new(BIN)
            .arg("serve")
            .envs(envs.iter().cloned())
            .env("RUST_LOG", "debug")
            .stderr(Stdio::from(log))
            .spawn()
            .expect("serve"),
    );
    let mllp_addr = env_value(&envs, "CAREHUB_HL7__LISTENER__LISTEN");
    let fhir = env_value(&envs, "CAREHUB_FHIR__LISTEN");
    assert!(
        wait_http(port, "/readyz", 200, Duration::from_secs(60)).is_some(),
        "ready"
    );

    let adt = fixture("adt_a01.hl7")
        .replace("Testpatient", FAMILY)
        .replace("P-1001", MRN)
        .replace("19800102", BIRTH);
    let mut answers = String::new();
    // A good message, applied.
    let reply = exchange(&mllp_addr, &mllp::frame(&wire(&adt))).expect("ACK");
    answers.push_str(&String::from_utf8_lossy(&reply));
    // Refused ones: a first segment whose third byte is inside a UTF-8
    // character (the log used to carry the whole line), a NUL in a field,
    // a bad birth date, an unknown segment before MSH.
    let first_segment = format!("PI\u{e9}|1||{MRN}||{FAMILY}^Ann||{BIRTH}|F\r");
    let nul = adt
        .replace(FAMILY, &format!("{FAMILY}\u{0}"))
        .replace("ADT0001", "PHI0002");
    let bad_date = adt.replace(BIRTH, "19770777").replace("ADT0001", "PHI0003");
    let no_pid_3 = adt
        .replace(
            &format!("{MRN}^^^NORTHCLINIC&1.2.826.0.1.9999.1&ISO^MR~SSN-555^^^NATION^SS"),
            "",
        )
        .replace("ADT0001", "PHI0004");
    for bad in [first_segment.into_bytes(), wire(&nul), wire(&bad_date), wire(&no_pid_3)] {
        if let Some(reply) = exchange(&mllp_addr, &mllp::frame(&bad)) {
            answers.push_str(&String::from_utf8_lossy(&reply));
        }
    }
    // FHIR: a Patient with the markers and invalid values.
    let token = {
        let out = Command::new(BIN)
            .args(["token", "issue", "--sub", "phi-test", "--role", "clinician"])
            .envs(envs.iter().cloned())
            .output()
            .expect("token");
        String::from_utf8(out.stdout).expect("utf8").trim().to_owned()
    };
    let body = format!(
        r#"{{"resourceType":"Patient","identifier":[{{"system":"urn:oid:2.999.9","value":"{MRN}"}}],"name":[{{"family":"{FAMILY}"}}],"birthDate":"1977-07-77","gender":"{FAMILY}"}}"#
    );
    let auth = format!("Bearer {token}");
    let (status, _, text) = http_request(
        &fhir,
        "POST",
        "/Patient",
        &[("Authorization", &auth), ("Content-Type", "application/fhir+json")],
        &body,
    );
    assert_eq!(status, 400, "{text}");
    answers.push_str(&text);
    let (_, _, text) = http_request(
        &fhir,
        "GET",
        &format!("/Patient?identifier=urn:oid:2.999.9%7C{MRN}%00"),
        &[("Authorization", &auth)],
        "",
    );
    answers.push_str(&text);

    // The markers really went in: the good message is applied, the refused
    // ones are stored verbatim.
    assert!(processed(&db.pool, "ADT0001").await);
    let (family,): (Option<String>,) = sqlx::query_as("SELECT family_name FROM patient")
        .fetch_one(&db.pool)
        .await
        .expect("the patient");
    assert_eq!(family.as_deref(), Some(FAMILY));
    let raws: Vec<(Vec<u8>,)> = sqlx::query_as("SELECT raw FROM message")
        .fetch_all(&db.pool)
        .await
        .expect("raw");
    let stored = raws
        .iter()
        .filter(|(r,)| String::from_utf8_lossy(r).contains(FAMILY))
        .count();
    assert!(stored >= 4, "{stored} stored messages carry the marker");

    let out = Command::new(BIN)
        .args(["dlq", "list", "--actor", "phi-test"])
        .envs(envs.iter().cloned())
        .output()
        .expect("dlq list");
    assert!(out.status.success());
    let listing = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(listing.lines().count() >= 4, "dead letters listed: {listing}");
    let reasons: Vec<(String,)> = sqlx::query_as("SELECT reason FROM dead_letter")
        .fetch_all(&db.pool)
        .await
        .expect("reasons");
    let reasons: String = reasons.into_iter().map(|(r,)| r + "\n").collect();
    let listed: i64 = count(
        &db.pool,
        "SELECT count(*) FROM audit_log WHERE action = 'read' AND entity_type = 'dead_letter' AND actor_id = 'phi-test'",
    )
    .await;
    assert!(listed >= 4, "reading the dead letters is audited");

    drop(server);
    let log = std::fs::read_to_string(&log_path).expect("log");
    assert!(log.lines().count() > 50, "the hub logged at debug level");
    for (what, text) in [
        ("log", &log),
        ("answers", &answers),
        ("dead letters", &reasons),
        ("dlq list", &listing),
    ] {
        let found = markers(text);
        assert!(found.is_empty(), "{what} carries {found:?}");
    }
    let _ = std::fs::remove_file(&log_path);
}
