//! The FHIR endpoint over HTTP against the running hub and real PostgreSQL:
//! the record an HL7 message created, read as FHIR resources; the token and
//! scope checks; every read audited.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

const SECRET: &str = "fhir-test-secret-at-least-32-bytes-long";

async fn fhir_hub() -> (Hub, String) {
    common::fhir_hub(SECRET).await
}

fn token(hub: &Hub, args: &[&str]) -> String {
    fhir_token(hub, args)
}

fn get(
    addr: &str,
    path: &str,
    token: Option<&str>,
    accept: &str,
) -> (u16, Value, std::collections::HashMap<String, String>) {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("Accept", accept)];
    if let Some(a) = &auth {
        headers.push(("Authorization", a.as_str()));
    }
    let (status, h, body) = http_request(addr, "GET", path, &headers, "");
    let json = serde_json::from_str(&body).unwrap_or(Value::Null);
    // Whatever the endpoint serves must itself be valid R4.
    if json.get("resourceType").is_some() {
        let issues = carehub_fhir::validate::validate(&json);
        assert!(issues.is_empty(), "GET {path} served invalid R4: {issues:?}\n{json:#}");
    }
    (status, json, h)
}

fn interactions_of(cap: &Value, ty: &str) -> Vec<String> {
    cap["rest"][0]["resource"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["type"] == ty)
        .flat_map(|r| r["interaction"].as_array().cloned().unwrap_or_default())
        .filter_map(|i| i["code"].as_str().map(str::to_owned))
        .collect()
}

fn issue_code(v: &Value) -> &str {
    assert_eq!(v["resourceType"], "OperationOutcome", "{v}");
    v["issue"][0]["code"].as_str().unwrap_or("")
}

#[tokio::test]
async fn the_record_reads_as_fhir_with_tokens_scopes_and_an_audit_entry_per_read() {
    let (hub, fhir) = fhir_hub().await;
    let pool = &hub.db.pool;
    // An order over MLLP gives a patient and a service request.
    let ack = send_until_accepted(&hub.mllp, &wire(&fixture("orm_o01.hl7")), Duration::from_secs(60))
        .await
        .expect("ACK");
    assert_eq!(ack.code.as_str(), "AA");
    let ids = eventually(Duration::from_secs(60), || async {
        sqlx::query_as::<_, (uuid::Uuid, uuid::Uuid)>("SELECT id, patient_id FROM service_order")
            .fetch_optional(pool)
            .await
            .ok()
            .flatten()
    })
    .await;
    let (order, patient) = ids.expect("the order is stored");

    // The CapabilityStatement needs no token and names what is served.
    let (status, cap, h) = get(&fhir, "/metadata", None, "application/fhir+json");
    assert_eq!(status, 200);
    assert!(h["content-type"].starts_with("application/fhir+json"));
    assert_eq!(cap["fhirVersion"], "4.0.1");
    let issues = carehub_fhir::validate::validate(&cap);
    assert!(issues.is_empty(), "the CapabilityStatement is valid R4: {issues:?}");
    let types: Vec<&str> = cap["rest"][0]["resource"]
        .as_array()
        .expect("resources")
        .iter()
        .filter_map(|r| r["type"].as_str())
        .collect();
    assert_eq!(
        types,
        [
            "Account",
            "AllergyIntolerance",
            "Appointment",
            "ChargeItem",
            "Condition",
            "Coverage",
            "Device",
            "DiagnosticReport",
            "DocumentReference",
            "Encounter",
            "EpisodeOfCare",
            "ImagingStudy",
            "Immunization",
            "Invoice",
            "Location",
            "Medication",
            "MedicationDispense",
            "MedicationRequest",
            "MessageHeader",
            "NutritionOrder",
            "Observation",
            "Organization",
            "Patient",
            "Practitioner",
            "PractitionerRole",
            "Procedure",
            "Provenance",
            "RelatedPerson",
            "ResearchStudy",
            "ServiceRequest",
            "Specimen",
            "SupplyRequest",
            "Task",
            "AuditEvent"
        ]
    );
    // What only the HL7 v2 pipeline loads (load_fhir) is read-only.
    assert!(!interactions_of(&cap, "Encounter").contains(&"create".to_owned()));
    assert!(interactions_of(&cap, "Encounter").contains(&"search-type".to_owned()));
    // Writes where they are taken, and only there.
    let interactions = |ty: &str| interactions_of(&cap, ty);
    assert!(interactions("ServiceRequest").contains(&"create".to_owned()));
    assert!(!interactions("Task").contains(&"update".to_owned()));
    assert!(interactions("Task").contains(&"vread".to_owned()));

    // No token: 401 with an OperationOutcome and a challenge.
    let (status, body, h) = get(&fhir, &format!("/Patient/{patient}"), None, "application/fhir+json");
    assert_eq!((status, issue_code(&body)), (401, "login"));
    assert!(h.contains_key("www-authenticate"));
    // A token signed with another key, an expired one: 401.
    let forged = carehub_fhir::auth::issue(
        &carehub_fhir::AuthConfig {
            hs256_secret: Some("some-other-secret-that-is-long-enough".into()),
            ..Default::default()
        },
        "mallory",
        "system/*.*",
        None,
        None,
    )
    .expect("forged");
    let (status, _, _) = get(&fhir, &format!("/Patient/{patient}"), Some(&forged), "*/*");
    assert_eq!(status, 401);
    let expired = token(&hub, &["--sub", "dr-old", "--role", "clinician", "--minutes=-2"]);
    let (status, body, _) = get(&fhir, &format!("/Patient/{patient}"), Some(&expired), "*/*");
    assert_eq!(status, 401, "{body}");

    // A clinician reads the patient: identifiers, name, gender, birth date; ETag.
    let clinician = token(&hub, &["--sub", "dr-77", "--role", "clinician"]);
    let (status, p, h) = get(
        &fhir,
        &format!("/Patient/{patient}"),
        Some(&clinician),
        "application/fhir+json",
    );
    assert_eq!(status, 200, "{p}");
    assert_eq!(p["resourceType"], "Patient");
    assert_eq!(p["id"], patient.to_string());
    assert_eq!(p["identifier"][0]["value"], "P-1001");
    assert_eq!(p["identifier"][0]["system"], "urn:oid:1.2.826.0.1.9999.1");
    assert_eq!(p["name"][0]["family"], "Testpatient");
    assert_eq!(p["gender"], "female");
    assert_eq!(p["birthDate"], "1980-01-02");
    assert_eq!(
        h["etag"],
        format!("W/\"{}\"", p["meta"]["versionId"].as_str().expect("versionId"))
    );
    let (status, sr, _) = get(&fhir, &format!("/ServiceRequest/{order}"), Some(&clinician), "*/*");
    assert_eq!(status, 200, "{sr}");
    assert_eq!(sr["status"], "active");
    assert_eq!(sr["intent"], "order");
    assert_eq!(sr["subject"]["reference"], format!("Patient/{patient}"));
    assert_eq!(sr["identifier"][0]["value"], "PO-5001");
    assert_eq!(sr["code"]["coding"][0]["code"], "L3000");
    // The order went to the lab: its Task.
    let task = eventually(Duration::from_secs(60), || {
        let (fhir, clinician) = (fhir.clone(), clinician.clone());
        async move {
            let (status, t, _) = get(&fhir, &format!("/Task/{order}"), Some(&clinician), "*/*");
            (status == 200).then_some(t)
        }
    })
    .await
    .expect("the Task of the lab order");
    assert_eq!(task["status"], "requested");
    assert_eq!(task["basedOn"][0]["reference"], format!("ServiceRequest/{order}"));

    // Not found, unknown type, XML: OperationOutcomes with their statuses.
    let (status, body, _) = get(
        &fhir,
        &format!("/Patient/{}", uuid::Uuid::now_v7()),
        Some(&clinician),
        "*/*",
    );
    assert_eq!((status, issue_code(&body)), (404, "not-found"));
    let (status, body, _) = get(&fhir, "/Patient/not-a-uuid", Some(&clinician), "*/*");
    assert_eq!((status, issue_code(&body)), (404, "not-found"));
    let (status, body, _) = get(&fhir, &format!("/Basic/{patient}"), Some(&clinician), "*/*");
    assert_eq!((status, issue_code(&body)), (404, "not-supported"));
    let (status, body, _) = get(
        &fhir,
        &format!("/Patient/{patient}"),
        Some(&clinician),
        "application/fhir+xml",
    );
    assert_eq!((status, issue_code(&body)), (406, "not-supported"));

    // Scopes: a lab technician may not read ... Task yes, a Patient with only
    // patient/ scopes of another patient: 403.
    let tech = token(&hub, &["--sub", "tech-1", "--scope", "user/Task.read"]);
    let (status, body, _) = get(&fhir, &format!("/Patient/{patient}"), Some(&tech), "*/*");
    assert_eq!((status, issue_code(&body)), (403, "forbidden"));
    let (status, _, _) = get(&fhir, &format!("/Task/{order}"), Some(&tech), "*/*");
    assert_eq!(status, 200);
    let other = uuid::Uuid::now_v7().to_string();
    let portal = token(
        &hub,
        &["--sub", "pat-9", "--scope", "patient/*.read", "--patient", &other],
    );
    // Outside the compartment the answer is an unknown id's (hardening item
    // 13: it was 403, which told the token that the id exists).
    let (status, outside, _) = get(&fhir, &format!("/Patient/{patient}"), Some(&portal), "*/*");
    let (unknown_status, unknown, _) = get(&fhir, &format!("/Patient/{other}"), Some(&portal), "*/*");
    assert_eq!(
        (status, unknown_status),
        (404, 404),
        "outside the compartment, as unknown"
    );
    assert_eq!(issue_code(&outside), issue_code(&unknown));
    let own = token(
        &hub,
        &[
            "--sub",
            "pat-1",
            "--scope",
            "patient/*.read",
            "--patient",
            &patient.to_string(),
        ],
    );
    let (status, _, _) = get(&fhir, &format!("/ServiceRequest/{order}"), Some(&own), "*/*");
    assert_eq!(status, 200, "inside the compartment");

    // Every successful read left an audit entry naming the reader.
    let reads: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT actor_id, entity_type, entity_id FROM audit_log
          WHERE action = 'read' AND coalesce(detail, '') NOT LIKE '%\"refused\"%' ORDER BY seq",
    )
    .fetch_all(pool)
    .await
    .expect("audit");
    // The refused reads are on the trail too, marked refused (hardening item 13).
    let refused: Vec<(String, String)> = sqlx::query_as(
        "SELECT actor_id, entity_id FROM audit_log WHERE action = 'read' AND detail LIKE '%\"refused\"%' ORDER BY seq",
    )
    .fetch_all(pool)
    .await
    .expect("audit");
    assert!(
        refused.contains(&("tech-1".to_owned(), patient.to_string())),
        "{refused:?}"
    );
    assert!(
        refused.contains(&("pat-9".to_owned(), patient.to_string())),
        "{refused:?}"
    );
    let expect = |actor: &str, entity: &str, id: &str| (actor.to_owned(), entity.to_owned(), id.to_owned());
    assert!(
        reads.contains(&expect("dr-77", "patient", &patient.to_string())),
        "{reads:?}"
    );
    assert!(reads.contains(&expect("dr-77", "service_order", &order.to_string())));
    assert!(reads.contains(&expect("tech-1", "lab_job", &order.to_string())));
    assert!(reads.contains(&expect("pat-1", "service_order", &order.to_string())));
    assert!(
        !reads
            .iter()
            .any(|(actor, ..)| actor == "mallory" || actor == "pat-9" || actor == "dr-old"),
        "refused requests read nothing"
    );
    // The endpoint counts each request under its FHIR interaction (bounded).
    let m = metrics_text(&hub);
    let missing = missing_component_events(
        &m,
        "connector",
        "fhir",
        &[carehub_core::internal_events::metric::MESSAGES_RECEIVED],
    );
    assert!(missing.is_empty(), "fhir did not emit {missing:?}");
    assert!(m.contains("message_type=\"read\""), "reads counted as `read`");
}

#[tokio::test]
async fn searches_return_bundles_page_by_page_and_audit_each_resource_returned() {
    let (hub, fhir) = fhir_hub().await;
    let pool = &hub.db.pool;
    for (i, id) in ["P-3001", "P-3002", "P-3003"].iter().enumerate() {
        let text = fixture("orm_o01.hl7")
            .replace("P-1001", id)
            .replace("ORM0001", &format!("SRCH{i}"))
            .replace("PO-5001", &format!("PO-8{i}"));
        let ack = send_until_accepted(&hub.mllp, &wire(&text), Duration::from_secs(60))
            .await
            .expect("ACK");
        assert_eq!(ack.code.as_str(), "AA");
    }
    let stored = eventually(Duration::from_secs(60), || async {
        (count(pool, "SELECT count(*) FROM service_order").await == 3).then_some(())
    })
    .await;
    assert!(stored.is_some());
    let clinician = token(&hub, &["--sub", "dr-s", "--role", "clinician"]);

    // By identifier: exactly the one patient.
    let (status, b, _) = get(
        &fhir,
        "/Patient?identifier=urn%3Aoid%3A1.2.826.0.1.9999.1%7CP-3002",
        Some(&clinician),
        "*/*",
    );
    assert_eq!(status, 200, "{b}");
    assert_eq!(
        (b["resourceType"].as_str(), b["type"].as_str()),
        (Some("Bundle"), Some("searchset"))
    );
    let entries = b["entry"].as_array().expect("entries");
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["resource"]["identifier"][0]["value"], "P-3002");
    let patient = entries[0]["resource"]["id"].as_str().expect("id").to_owned();
    // The patient's orders.
    let (status, b, _) = get(
        &fhir,
        &format!("/ServiceRequest?patient=Patient/{patient}"),
        Some(&clinician),
        "*/*",
    );
    assert_eq!(status, 200);
    assert_eq!(b["entry"].as_array().map(Vec::len), Some(1));
    assert_eq!(b["entry"][0]["resource"]["identifier"][0]["value"], "PO-81");

    // Paging: two pages of one with _count=2, newest first, following `next`.
    let (status, b, _) = get(
        &fhir,
        "/ServiceRequest?_count=2&_sort=-_lastUpdated",
        Some(&clinician),
        "*/*",
    );
    assert_eq!(status, 200);
    let first: Vec<String> = b["entry"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| {
            e["resource"]["identifier"][0]["value"]
                .as_str()
                .unwrap_or("")
                .to_owned()
        })
        .collect();
    assert_eq!(first, ["PO-82", "PO-81"]);
    let next = b["link"]
        .as_array()
        .and_then(|l| l.iter().find(|l| l["relation"] == "next"))
        .and_then(|l| l["url"].as_str())
        .expect("a next link")
        .to_owned();
    let path = next.split_once(&fhir).map(|(_, p)| p.to_owned()).expect("same base");
    let (status, b, _) = get(&fhir, &path, Some(&clinician), "*/*");
    assert_eq!(status, 200);
    assert_eq!(b["entry"][0]["resource"]["identifier"][0]["value"], "PO-80");
    assert!(
        !b["link"]
            .as_array()
            .expect("links")
            .iter()
            .any(|l| l["relation"] == "next"),
        "last page"
    );

    // A patient's own token sees only their own orders.
    let own = token(
        &hub,
        &["--sub", "pat-3002", "--scope", "patient/*.read", "--patient", &patient],
    );
    let (_, b, _) = get(&fhir, "/ServiceRequest", Some(&own), "*/*");
    assert_eq!(b["entry"].as_array().map(Vec::len), Some(1));

    // Unknown parameters and bad values: 400, not ignored.
    for bad in [
        "/Patient?name=Testpatient",
        "/Patient?_lastUpdated=sa2026-01-01",
        "/Patient?_count=many",
    ] {
        let (status, b, _) = get(&fhir, bad, Some(&clinician), "*/*");
        assert_eq!((status, issue_code(&b)), (400, "invalid"), "{bad}");
    }

    // Each resource a search returned is an audit entry of its own.
    assert_eq!(
        count(
            pool,
            "SELECT count(*) FROM audit_log WHERE action = 'read' AND actor_id = 'dr-s'"
        )
        .await,
        1 + 1 + 2 + 1
    );
    assert_eq!(
        count(
            pool,
            "SELECT count(*) FROM audit_log WHERE action = 'read' AND actor_id = 'pat-3002'"
        )
        .await,
        1
    );
}

#[tokio::test]
async fn a_client_over_its_rate_gets_429_and_others_are_not_slowed() {
    let db = fresh_db().await;
    let hub = start_hub_with(
        db,
        vec![
            ("CAREHUB_FHIR__AUTH__HS256_SECRET", SECRET.to_owned()),
            ("CAREHUB_FHIR__RATE_LIMIT_PER_SECOND", "1".to_owned()),
            ("CAREHUB_FHIR__RATE_LIMIT_BURST", "2".to_owned()),
        ],
    )
    .await;
    let fhir = env_value(&hub.envs, "CAREHUB_FHIR__LISTEN");
    assert!(wait_listening(&fhir, Duration::from_secs(30)).await, "FHIR endpoint up");
    let busy = token(&hub, &["--sub", "busy-client", "--role", "system"]);
    let calm = token(&hub, &["--sub", "calm-client", "--role", "system"]);
    let statuses: Vec<u16> = (0..4).map(|_| get(&fhir, "/Patient", Some(&busy), "*/*").0).collect();
    assert_eq!(&statuses[..2], [200, 200], "the burst is served");
    assert!(statuses[2..].contains(&429), "then throttled: {statuses:?}");
    let (status, body, h) = get(&fhir, "/Patient", Some(&busy), "*/*");
    assert_eq!((status, issue_code(&body)), (429, "throttled"));
    assert_eq!(h.get("retry-after").map(String::as_str), Some("1"));
    assert_eq!(
        get(&fhir, "/Patient", Some(&calm), "*/*").0,
        200,
        "another client is not slowed"
    );
}

#[tokio::test]
async fn observations_practitioners_and_organizations_read_and_search_as_fhir() {
    let (hub, fhir) = fhir_hub().await;
    let pool = &hub.db.pool;
    // The result after its order is applied, as a lab sends it: the two come
    // from different senders (different partitions), so sent back to back
    // the ORU could be applied first and find no order to attach to.
    for (name, control_id) in [("orm_o01.hl7", "ORM0001"), ("oru_r01.hl7", "ORU0001")] {
        let ack = send_until_accepted(&hub.mllp, &wire(&fixture(name)), Duration::from_secs(60))
            .await
            .expect("ACK");
        assert_eq!(ack.code.as_str(), "AA", "{name}");
        assert!(processed(pool, control_id).await, "{name} applied");
    }
    let seen = eventually(Duration::from_secs(60), || async {
        (count(pool, "SELECT count(*) FROM observation").await > 0).then_some(())
    })
    .await;
    assert!(seen.is_some(), "the ORU's observations are stored");
    let clinician = token(&hub, &["--sub", "dr-o", "--role", "clinician"]);
    let (_, sr, _) = get(&fhir, "/ServiceRequest?identifier=PO-5001", Some(&clinician), "*/*");
    let order = &sr["entry"][0]["resource"];
    let patient = order["subject"]["reference"].as_str().expect("subject").to_owned();

    // The orderer, through the order's reference.
    let requester = order["requester"]["reference"].as_str().expect("requester").to_owned();
    let (status, pr, _) = get(&fhir, &format!("/{requester}"), Some(&clinician), "*/*");
    assert_eq!(status, 200, "{pr}");
    assert_eq!(pr["resourceType"], "Practitioner");
    assert_eq!(pr["name"][0]["family"], "Doctor");
    // The clinic, by its identifier.
    let (status, orgs, _) = get(
        &fhir,
        "/Organization?identifier=urn%3Acarehub%3Ahl7-facility%7CNORTHCLINIC",
        Some(&clinician),
        "*/*",
    );
    assert_eq!(status, 200, "{orgs}");
    assert_eq!(orgs["entry"][0]["resource"]["name"], "NORTHCLINIC");
    // The patient's observations, linked to the order.
    let (status, obs, _) = get(
        &fhir,
        &format!("/Observation?patient={patient}"),
        Some(&clinician),
        "*/*",
    );
    assert_eq!(status, 200, "{obs}");
    let entries = obs["entry"].as_array().expect("entries");
    assert!(!entries.is_empty());
    let o = &entries[0]["resource"];
    assert_eq!(o["resourceType"], "Observation");
    assert_eq!(o["subject"]["reference"], patient);
    assert!(
        o.get("valueQuantity").is_some() || o.get("valueString").is_some() || o.get("valueCodeableConcept").is_some(),
        "{o}"
    );
    let code = o["code"]["coding"][0]["code"].as_str().expect("code").to_owned();
    let (_, by_code, _) = get(&fhir, &format!("/Observation?code={code}"), Some(&clinician), "*/*");
    assert!(!by_code["entry"].as_array().expect("entries").is_empty());
    // Observations by effective date.
    let (_, dated, _) = get(
        &fhir,
        "/Observation?date=ge2026-11-28&date=lt2026-11-29",
        Some(&clinician),
        "*/*",
    );
    assert!(!dated["entry"].as_array().expect("entries").is_empty(), "{dated}");
    let (_, none, _) = get(&fhir, "/Observation?date=lt2020-01-01", Some(&clinician), "*/*");
    assert_eq!(none["entry"].as_array().map_or(0, Vec::len), 0);
    // _include: the order with its patient and orderer in one Bundle, each once.
    let (status, inc, _) = get(
        &fhir,
        "/ServiceRequest?identifier=PO-5001&_include=ServiceRequest:patient&_include=ServiceRequest:requester",
        Some(&clinician),
        "*/*",
    );
    assert_eq!(status, 200, "{inc}");
    let modes: Vec<(String, String)> = inc["entry"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| {
            (
                e["search"]["mode"].as_str().unwrap_or("").to_owned(),
                e["resource"]["resourceType"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    let want: Vec<(String, String)> = [
        ("match", "ServiceRequest"),
        ("include", "Patient"),
        ("include", "Practitioner"),
    ]
    .iter()
    .map(|(m, t)| ((*m).to_owned(), (*t).to_owned()))
    .collect();
    assert_eq!(modes, want);
    let (status, body, _) = get(&fhir, "/ServiceRequest?_include=Task:focus", Some(&clinician), "*/*");
    assert_eq!((status, issue_code(&body)), (400, "invalid"));
    // A patient's own token reaches their observations, not the clinic.
    let pid = patient.trim_start_matches("Patient/").to_owned();
    let own = token(
        &hub,
        &["--sub", "pat-o", "--scope", "patient/*.read", "--patient", &pid],
    );
    let (status, _, _) = get(&fhir, "/Observation", Some(&own), "*/*");
    assert_eq!(status, 200);
    let (status, body, _) = get(&fhir, "/Organization", Some(&own), "*/*");
    assert_eq!((status, issue_code(&body)), (403, "forbidden"));
    // Its _include stops at the compartment: the patient, not the orderer.
    let (_, inc, _) = get(
        &fhir,
        "/ServiceRequest?_include=ServiceRequest:patient&_include=ServiceRequest:requester",
        Some(&own),
        "*/*",
    );
    let types: Vec<&str> = inc["entry"]
        .as_array()
        .expect("entries")
        .iter()
        .filter_map(|e| e["resource"]["resourceType"].as_str())
        .collect();
    assert_eq!(types, ["ServiceRequest", "Patient"]);
}

#[tokio::test]
async fn charges_from_a_dft_read_and_search_as_an_invoice() {
    let (hub, fhir) = fhir_hub().await;
    let pool = &hub.db.pool;
    let ack = send_until_accepted(&hub.mllp, &wire(&fixture("dft_p03.hl7")), Duration::from_secs(60))
        .await
        .expect("ACK");
    assert_eq!(ack.code.as_str(), "AA");
    let stored = eventually(Duration::from_secs(60), || async {
        sqlx::query_as::<_, (uuid::Uuid, uuid::Uuid)>("SELECT id, patient_id FROM invoice")
            .fetch_optional(pool)
            .await
            .ok()
            .flatten()
    })
    .await;
    let (invoice, patient) = stored.expect("the charges make an invoice");
    let admin = token(&hub, &["--sub", "billing-1", "--role", "admin"]);
    let (status, body, h) = get(&fhir, &format!("/Invoice/{invoice}"), Some(&admin), "*/*");
    assert_eq!(status, 200, "{body}");
    assert_eq!(h["etag"], "W/\"1\"");
    assert_eq!(body["identifier"][0]["value"], "V-9001");
    assert_eq!(body["status"], "draft");
    assert_eq!(body["subject"]["reference"], format!("Patient/{patient}"));
    assert_eq!(
        body["totalGross"],
        serde_json::json!({ "value": 330.0, "currency": "EUR" })
    );
    let lines = body["lineItem"].as_array().expect("lines");
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["chargeItemCodeableConcept"]["coding"][0]["code"], "L3000");
    assert_eq!(lines[1]["priceComponent"][0]["factor"], 2.0);
    assert!(carehub_fhir::validate::validate(&body).is_empty(), "{body}");
    let (_, found, _) = get(
        &fhir,
        &format!("/Invoice?patient={patient}&status=draft"),
        Some(&admin),
        "*/*",
    );
    assert_eq!(found["entry"][0]["resource"]["id"], invoice.to_string());
    let (_, none, _) = get(&fhir, "/Invoice?identifier=V-0000", Some(&admin), "*/*");
    assert_eq!(none["entry"].as_array().map_or(0, Vec::len), 0);
}
