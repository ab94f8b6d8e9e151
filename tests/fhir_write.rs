//! FHIR writes over HTTP against the running hub, real PostgreSQL and the
//! Kafka-protocol broker: create, update (as create too), conditional
//! create, If-Match, delete, vread, _history, batch and transaction Bundles,
//! R4 validation; Patient and ServiceRequest writes reaching the canonical
//! record and the lab flow; every write audited.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

const SECRET: &str = "fhir-write-test-secret-at-least-32-bytes";

async fn fhir_hub() -> (Hub, String) {
    common::fhir_hub(SECRET).await
}

fn token(hub: &Hub, args: &[&str]) -> String {
    fhir_token(hub, args)
}

struct Answer {
    status: u16,
    headers: HashMap<String, String>,
    text: String,
    json: Value,
}

fn call(addr: &str, method: &str, path: &str, token: &str, body: &str, extra: &[(&str, &str)]) -> Answer {
    let auth = format!("Bearer {token}");
    let mut headers = vec![
        ("Authorization", auth.as_str()),
        ("Accept", "application/fhir+json"),
        ("Content-Type", "application/fhir+json"),
    ];
    // A header given in `extra` replaces the default of the same name.
    headers.retain(|(k, _)| !extra.iter().any(|(e, _)| e.eq_ignore_ascii_case(k)));
    headers.extend_from_slice(extra);
    let (status, headers, text) = http_request(addr, method, path, &headers, body);
    let json: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    // Whatever the endpoint answers must itself be valid R4.
    if json.get("resourceType").is_some() {
        let issues = carehub_fhir::validate::validate(&json);
        assert!(
            issues.is_empty(),
            "{method} {path} answered invalid R4: {issues:?}\n{json:#}"
        );
    }
    Answer {
        status,
        headers,
        text,
        json,
    }
}

fn outcome_code(v: &Value) -> &str {
    assert_eq!(v["resourceType"], "OperationOutcome", "{v}");
    v["issue"][0]["code"].as_str().unwrap_or("")
}

const PATIENT: &str = r#"{"resourceType":"Patient","identifier":[{"system":"urn:oid:2.999.1","value":"W-1"}],"name":[{"family":"Writer","given":["Wanda"]}],"gender":"female","birthDate":"1975-05-05","extension":[{"url":"https://carehub.example/fhir/StructureDefinition/foot-length-cm","valueDecimal":26.50}]}"#;

#[tokio::test]
async fn writes_are_versioned_stored_verbatim_validated_and_audited() {
    let (hub, fhir) = fhir_hub().await;
    let pool = &hub.db.pool;
    let admin = token(&hub, &["--sub", "ops-1", "--role", "admin"]);

    // Create: 201, Location with the version, ETag, the body as stored.
    let created = call(&fhir, "POST", "/Patient", &admin, PATIENT, &[]);
    assert_eq!(created.status, 201, "{}", created.text);
    let id = created.json["id"].as_str().expect("server-assigned id").to_owned();
    assert!(created.headers["location"].ends_with(&format!("/Patient/{id}/_history/1")));
    assert_eq!(created.headers["etag"], "W/\"1\"");
    assert_eq!(created.json["meta"]["versionId"], "1");
    // The decimal comes back exactly as sent, not as a float (26.5).
    assert!(created.text.contains("\"valueDecimal\":26.50"), "{}", created.text);
    let read = call(&fhir, "GET", &format!("/Patient/{id}"), &admin, "", &[]);
    assert_eq!(read.status, 200);
    assert_eq!(read.text, created.text);

    // Update with the current version; a stale If-Match is 412.
    let changed = PATIENT
        .replacen('{', &format!("{{\"id\":\"{id}\","), 1)
        .replace("Wanda", "Wendy");
    let v2 = call(
        &fhir,
        "PUT",
        &format!("/Patient/{id}"),
        &admin,
        &changed,
        &[("If-Match", "W/\"1\"")],
    );
    assert_eq!(
        (v2.status, v2.headers["etag"].as_str()),
        (200, "W/\"2\""),
        "{}",
        v2.text
    );
    let stale = call(
        &fhir,
        "PUT",
        &format!("/Patient/{id}"),
        &admin,
        &changed,
        &[("If-Match", "W/\"1\"")],
    );
    assert_eq!((stale.status, outcome_code(&stale.json)), (412, "conflict"));
    // The URL's id and the body's must agree.
    let wrong_id = call(&fhir, "PUT", "/Patient/someone-else", &admin, &changed, &[]);
    assert_eq!(wrong_id.status, 400);

    // vread and history.
    let v1 = call(&fhir, "GET", &format!("/Patient/{id}/_history/1"), &admin, "", &[]);
    assert_eq!(
        (v1.status, v1.json["name"][0]["given"][0].as_str()),
        (200, Some("Wanda"))
    );
    let history = call(&fhir, "GET", &format!("/Patient/{id}/_history"), &admin, "", &[]);
    assert_eq!(history.json["type"], "history");
    let versions: Vec<&str> = history.json["entry"]
        .as_array()
        .expect("entries")
        .iter()
        .filter_map(|e| e["resource"]["meta"]["versionId"].as_str())
        .collect();
    assert_eq!(versions, ["2", "1"]);
    assert_eq!(history.json["entry"][1]["request"]["method"], "POST");

    // Update as create under a client-chosen id.
    let chosen = PATIENT
        .replacen('{', "{\"id\":\"pat-chosen-1\",", 1)
        .replace("W-1", "W-2");
    let made = call(&fhir, "PUT", "/Patient/pat-chosen-1", &admin, &chosen, &[]);
    assert_eq!(made.status, 201, "{}", made.text);
    let type_history = call(&fhir, "GET", "/Patient/_history?_count=10", &admin, "", &[]);
    assert_eq!(type_history.json["total"], 3, "{}", type_history.text);

    // Conditional create: one match → 200 with it, nothing new; the criteria
    // also find patients the canonical record holds.
    let again = call(
        &fhir,
        "POST",
        "/Patient",
        &admin,
        PATIENT,
        &[("If-None-Exist", "identifier=urn:oid:2.999.1|W-1")],
    );
    assert_eq!((again.status, again.json["id"].as_str()), (200, Some(id.as_str())));
    let fresh = call(
        &fhir,
        "POST",
        "/Patient",
        &admin,
        &PATIENT.replace("W-1", "W-3"),
        &[("If-None-Exist", "identifier=urn:oid:2.999.1|W-3")],
    );
    assert_eq!(fresh.status, 201);

    // Delete: 204, then 410; the old versions stay readable.
    let gone = call(&fhir, "DELETE", "/Patient/pat-chosen-1", &admin, "", &[]);
    assert_eq!(gone.status, 204);
    let read = call(&fhir, "GET", "/Patient/pat-chosen-1", &admin, "", &[]);
    assert_eq!((read.status, outcome_code(&read.json)), (410, "deleted"));
    let old = call(&fhir, "GET", "/Patient/pat-chosen-1/_history/1", &admin, "", &[]);
    assert_eq!(old.status, 200);
    let search = call(&fhir, "GET", "/Patient?_id=pat-chosen-1", &admin, "", &[]);
    assert_eq!(
        search.json["entry"].as_array().map_or(0, Vec::len),
        0,
        "{}",
        search.text
    );

    // Bad input: each a clear OperationOutcome, nothing stored.
    let before: (i64,) = sqlx::query_as("SELECT count(*) FROM fhir_resource_version")
        .fetch_one(pool)
        .await
        .expect("count");
    let invalid = call(
        &fhir,
        "POST",
        "/Patient",
        &admin,
        r#"{"resourceType":"Patient","gender":"woman","birthDate":"1975-13-01","favouriteColour":"blue"}"#,
        &[],
    );
    assert_eq!(invalid.status, 400, "{}", invalid.text);
    let where_: Vec<&str> = invalid.json["issue"]
        .as_array()
        .expect("issues")
        .iter()
        .filter_map(|i| i["expression"][0].as_str())
        .collect();
    assert_eq!(
        where_,
        ["Patient.birthDate", "Patient.favouriteColour", "Patient.gender"]
    );
    let not_json = call(&fhir, "POST", "/Patient", &admin, "{\"resourceType\":", &[]);
    assert_eq!(not_json.status, 400);
    let other_type = call(
        &fhir,
        "POST",
        "/Patient",
        &admin,
        r#"{"resourceType":"Practitioner"}"#,
        &[],
    );
    assert_eq!(other_type.status, 400);
    let xml = call(
        &fhir,
        "POST",
        "/Patient",
        &admin,
        "<Patient/>",
        &[("Content-Type", "application/fhir+xml")],
    );
    assert_eq!(xml.status, 415);
    let task = call(&fhir, "POST", "/Task", &admin, r#"{"resourceType":"Task"}"#, &[]);
    assert_eq!((task.status, outcome_code(&task.json)), (405, "not-supported"));
    let orphan = call(
        &fhir,
        "POST",
        "/ServiceRequest",
        &admin,
        r#"{"resourceType":"ServiceRequest","status":"active","intent":"order","subject":{"reference":"Patient/nobody"}}"#,
        &[],
    );
    assert_eq!((orphan.status, outcome_code(&orphan.json)), (422, "processing"));
    let after: (i64,) = sqlx::query_as("SELECT count(*) FROM fhir_resource_version")
        .fetch_one(pool)
        .await
        .expect("count");
    assert_eq!(after, before);

    // Scopes: a clinician writes patients but not observations; no token, 401.
    let clinician = token(&hub, &["--sub", "dr-w", "--role", "clinician"]);
    let obs = r#"{"resourceType":"Observation","status":"final","code":{"text":"foot length"},"valueQuantity":{"value":26.50,"unit":"cm"}}"#;
    let refused = call(&fhir, "POST", "/Observation", &clinician, obs, &[]);
    assert_eq!((refused.status, outcome_code(&refused.json)), (403, "forbidden"));
    let allowed = call(
        &fhir,
        "POST",
        "/Patient",
        &clinician,
        &PATIENT.replace("W-1", "W-4"),
        &[],
    );
    assert_eq!(allowed.status, 201);
    let (status, _, _) = http_request(
        &fhir,
        "POST",
        "/Patient",
        &[("Content-Type", "application/fhir+json")],
        PATIENT,
    );
    assert_eq!(status, 401);
    // A patient-scoped token writes only in its own compartment.
    let own = token(&hub, &["--sub", "app-1", "--scope", "patient/*.*", "--patient", &id]);
    let mine = obs.replacen('{', &format!("{{\"subject\":{{\"reference\":\"Patient/{id}\"}},"), 1);
    assert_eq!(call(&fhir, "POST", "/Observation", &own, &mine, &[]).status, 201);
    let theirs = obs.replacen('{', "{\"subject\":{\"reference\":\"Patient/pat-chosen-1\"},", 1);
    assert_eq!(call(&fhir, "POST", "/Observation", &own, &theirs, &[]).status, 403);

    // Every write left an audit entry naming the actor and the version.
    let audit: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT actor_id, action, detail FROM audit_log WHERE entity_type = 'patient' AND entity_id = $1
         AND action <> 'read' AND actor_kind = 'user' ORDER BY seq",
    )
    .bind(&id)
    .fetch_all(pool)
    .await
    .expect("audit");
    let actions: Vec<&str> = audit.iter().map(|(_, a, _)| a.as_str()).collect();
    assert_eq!(actions, ["create", "update"]);
    assert!(audit.iter().all(|(actor, _, _)| actor == "ops-1"));
    assert!(audit[1].2.contains("\"version_id\":2"), "{:?}", audit[1]);
    let deleted: (i64,) =
        sqlx::query_as("SELECT count(*) FROM audit_log WHERE entity_id = 'pat-chosen-1' AND action = 'delete'")
            .fetch_one(pool)
            .await
            .expect("audit");
    assert_eq!(deleted.0, 1);
}

#[tokio::test]
async fn a_service_request_written_over_fhir_becomes_the_canonical_order_and_reaches_the_lab() {
    let (hub, fhir) = fhir_hub().await;
    let pool = &hub.db.pool;
    let ehr = token(&hub, &["--sub", "ehr-north", "--role", "system"]);
    let patient = call(&fhir, "POST", "/Patient", &ehr, PATIENT, &[]);
    assert_eq!(patient.status, 201, "{}", patient.text);
    let pid = patient.json["id"].as_str().expect("id").to_owned();
    let sr = json!({
        "resourceType": "ServiceRequest",
        "identifier": [{ "system": "urn:oid:2.999.2", "value": "ORD-FHIR-1", "type": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "PLAC" }] } }],
        "status": "active",
        "intent": "order",
        "priority": "urgent",
        "code": { "coding": [{ "system": "urn:oid:2.999.3", "code": "AFO-L", "display": "Ankle-foot orthosis, left" }] },
        "subject": { "reference": format!("Patient/{pid}") },
        "occurrenceDateTime": "2026-12-15",
    });
    let order = call(&fhir, "POST", "/ServiceRequest", &ehr, &sr.to_string(), &[]);
    assert_eq!(order.status, 201, "{}", order.text);
    let oid = order.json["id"].as_str().expect("id").to_owned();

    // The intake pipeline applies it: the canonical patient and order share
    // the FHIR ids; the lab flow takes the order as it takes an HL7 ORM's.
    let oid_uuid = uuid::Uuid::parse_str(&oid).expect("uuid id");
    let dispatched = eventually(Duration::from_secs(60), || async {
        sqlx::query_as::<_, (String, String, uuid::Uuid, String)>(
            "SELECT o.placer_number, o.priority, o.patient_id, j.status
               FROM service_order o JOIN lab_job j ON j.order_id = o.id WHERE o.id = $1",
        )
        .bind(oid_uuid)
        .fetch_optional(pool)
        .await
        .ok()
        .flatten()
    })
    .await
    .expect("the order reaches the lab flow");
    assert_eq!(
        (
            dispatched.0.as_str(),
            dispatched.1.as_str(),
            dispatched.2.to_string(),
            dispatched.3.as_str()
        ),
        ("ORD-FHIR-1", "urgent", pid.clone(), "requested")
    );
    let family: (Option<String>,) = sqlx::query_as("SELECT family_name FROM patient WHERE id = $1")
        .bind(uuid::Uuid::parse_str(&pid).expect("uuid"))
        .fetch_one(pool)
        .await
        .expect("canonical patient");
    assert_eq!(family.0.as_deref(), Some("Writer"));
    let clinic: (String,) = sqlx::query_as(
        "SELECT c.identifier_value FROM service_order o JOIN organization c ON c.id = o.clinic_id WHERE o.id = $1",
    )
    .bind(oid_uuid)
    .fetch_one(pool)
    .await
    .expect("clinic");
    assert_eq!(clinic.0, "ehr-north");
    // Its Task is there to follow, and the order's item is the coded device.
    let task = call(&fhir, "GET", &format!("/Task/{oid}"), &ehr, "", &[]);
    assert_eq!(
        (task.status, task.json["status"].as_str()),
        (200, Some("requested")),
        "{}",
        task.text
    );
    let items: (String,) = sqlx::query_as("SELECT code FROM order_item WHERE order_id = $1")
        .bind(oid_uuid)
        .fetch_one(pool)
        .await
        .expect("item");
    assert_eq!(items.0, "AFO-L");

    // The intake events name the stored versions, as their schema says; no
    // patient data in them.
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/json/carehub.fhir.resource.written.v1.json"),
        )
        .expect("schema"),
    )
    .expect("json");
    let validator = jsonschema::validator_for(&schema).expect("schema compiles");
    let events: Vec<(Value,)> =
        sqlx::query_as("SELECT payload FROM outbox WHERE payload->>'type' = 'carehub.fhir.resource.written.v1'")
            .fetch_all(pool)
            .await
            .expect("outbox");
    assert_eq!(events.len(), 2);
    for (event,) in &events {
        assert!(validator.is_valid(&event["data"]), "{event}");
        assert!(!event.to_string().contains("Writer"), "no names on Kafka: {event}");
    }

    // Revoking it over FHIR cancels the canonical order.
    let mut revoked = order.json.clone();
    revoked["status"] = json!("revoked");
    let v2 = call(
        &fhir,
        "PUT",
        &format!("/ServiceRequest/{oid}"),
        &ehr,
        &revoked.to_string(),
        &[("If-Match", "W/\"1\"")],
    );
    assert_eq!(v2.status, 200, "{}", v2.text);
    let status = eventually(Duration::from_secs(60), || async {
        sqlx::query_as::<_, (String,)>("SELECT status FROM service_order WHERE id = $1 AND status = 'revoked'")
            .bind(oid_uuid)
            .fetch_optional(pool)
            .await
            .ok()
            .flatten()
    })
    .await;
    assert!(status.is_some(), "the revocation reached the canonical order");
}

#[tokio::test]
async fn a_transaction_is_all_or_nothing_and_resolves_its_urn_references() {
    let (hub, fhir) = fhir_hub().await;
    let pool = &hub.db.pool;
    let ehr = token(&hub, &["--sub", "ehr-south", "--role", "system"]);
    let patient: Value = serde_json::from_str(PATIENT).expect("json");
    let bundle = |observation_value: Value| {
        json!({
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [
                { "fullUrl": "urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a", "resource": patient,
                  "request": { "method": "POST", "url": "Patient" } },
                { "fullUrl": "urn:uuid:88f151c0-a954-468a-88bd-5ae15c08e059",
                  "resource": { "resourceType": "Observation", "status": "final",
                                "code": { "coding": [{ "system": "http://loinc.org", "code": "8302-2" }] },
                                "subject": { "reference": "urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a" },
                                "valueQuantity": observation_value },
                  "request": { "method": "POST", "url": "Observation" } },
            ],
        })
        .to_string()
        // A decimal as a client writes it, kept exact through the transaction.
        .replace("\"value\":172.0", "\"value\":172.50")
    };
    let done = call(
        &fhir,
        "POST",
        "/",
        &ehr,
        &bundle(json!({ "value": 172.0, "unit": "cm" })),
        &[],
    );
    assert_eq!(done.status, 200, "{}", done.text);
    assert_eq!(done.json["type"], "transaction-response");
    let locations: Vec<&str> = done.json["entry"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| {
            assert_eq!(e["response"]["status"], "201 Created");
            e["response"]["location"].as_str().expect("location")
        })
        .collect();
    let patient_ref = locations[0].split("/_history").next().expect("ref");
    let obs = call(
        &fhir,
        "GET",
        &format!("/{}", locations[1].split("/_history").next().expect("ref")),
        &ehr,
        "",
        &[],
    );
    assert_eq!(obs.json["subject"]["reference"], patient_ref, "{}", obs.text);
    assert!(obs.text.contains("\"value\":172.50"), "{}", obs.text);

    // One bad entry: the whole transaction is refused, nothing stored.
    let before: (i64,) = sqlx::query_as("SELECT count(*) FROM fhir_resource")
        .fetch_one(pool)
        .await
        .expect("count");
    let failed = call(&fhir, "POST", "/", &ehr, &bundle(json!({ "value": "tall" })), &[]);
    assert_eq!(failed.status, 400, "{}", failed.text);
    assert!(
        failed.json["issue"][0]["expression"][0]
            .as_str()
            .is_some_and(|e| e.starts_with("Bundle.entry[1].resource.Observation.valueQuantity")),
        "{}",
        failed.text
    );
    let after: (i64,) = sqlx::query_as("SELECT count(*) FROM fhir_resource")
        .fetch_one(pool)
        .await
        .expect("count");
    assert_eq!(after, before);

    // A batch answers each entry: the good one stored, the bad one refused.
    let batch = bundle(json!({ "value": "tall" })).replace("\"transaction\"", "\"batch\"");
    let mixed = call(&fhir, "POST", "/", &ehr, &batch, &[]);
    assert_eq!(mixed.status, 200, "{}", mixed.text);
    assert_eq!(mixed.json["type"], "batch-response");
    assert_eq!(mixed.json["entry"][0]["response"]["status"], "201 Created");
    assert_eq!(mixed.json["entry"][1]["response"]["status"], "400 Bad Request");
    assert_eq!(
        mixed.json["entry"][1]["response"]["outcome"]["resourceType"],
        "OperationOutcome"
    );
}

#[tokio::test]
async fn the_auth_matrix_holds_for_every_role_scope_and_interaction() {
    let (hub, fhir) = fhir_hub().await;
    let admin = token(&hub, &["--sub", "ops-m", "--role", "admin"]);
    let patient = call(&fhir, "POST", "/Patient", &admin, PATIENT, &[]);
    let pid = patient.json["id"].as_str().expect("id").to_owned();
    let other = call(&fhir, "POST", "/Patient", &admin, &PATIENT.replace("W-1", "W-9"), &[]);
    let other_id = other.json["id"].as_str().expect("id").to_owned();
    let report = |subject: &str| {
        format!(
            r#"{{"resourceType":"DiagnosticReport","status":"final","code":{{"text":"gait analysis"}},"subject":{{"reference":"Patient/{subject}"}}}}"#
        )
    };
    let dr = call(&fhir, "POST", "/DiagnosticReport", &admin, &report(&pid), &[]);
    let dr_id = dr.json["id"].as_str().expect("id").to_owned();
    let tokens = [
        ("clinician", token(&hub, &["--sub", "m-clin", "--role", "clinician"])),
        ("admin", admin.clone()),
        (
            "lab_technician",
            token(&hub, &["--sub", "m-lab", "--role", "lab_technician"]),
        ),
        ("system", token(&hub, &["--sub", "m-sys", "--role", "system"])),
        (
            "patient/*.read",
            token(
                &hub,
                &["--sub", "m-app", "--scope", "patient/*.read", "--patient", &pid],
            ),
        ),
        (
            "user/Patient.read",
            token(&hub, &["--sub", "m-narrow", "--scope", "user/Patient.read"]),
        ),
    ];
    // (interaction, method, path, body) → expected status per token, in the order above.
    let cases: Vec<(&str, &str, String, String, [u16; 6])> = vec![
        (
            "read Patient",
            "GET",
            format!("/Patient/{pid}"),
            String::new(),
            [200, 200, 200, 200, 200, 200],
        ),
        (
            "read another patient",
            "GET",
            format!("/Patient/{other_id}"),
            String::new(),
            // Outside its compartment a patient token gets what an unknown id gets.
            [200, 200, 200, 200, 404, 200],
        ),
        (
            "search DiagnosticReport",
            "GET",
            "/DiagnosticReport".into(),
            String::new(),
            [200, 200, 200, 200, 200, 403],
        ),
        (
            "read DiagnosticReport",
            "GET",
            format!("/DiagnosticReport/{dr_id}"),
            String::new(),
            [200, 200, 200, 200, 200, 403],
        ),
        (
            "create Patient",
            "POST",
            "/Patient".into(),
            PATIENT.replace("W-1", "W-8"),
            [201, 201, 403, 201, 403, 403],
        ),
        (
            "create DiagnosticReport",
            "POST",
            "/DiagnosticReport".into(),
            report(&pid),
            [403, 201, 201, 201, 403, 403],
        ),
        (
            "delete DiagnosticReport",
            "DELETE",
            format!("/DiagnosticReport/{dr_id}"),
            String::new(),
            [403, 204, 204, 204, 403, 403],
        ),
        (
            "read AuditEvent",
            "GET",
            "/AuditEvent?_count=1".into(),
            String::new(),
            [200, 200, 403, 200, 403, 403],
        ),
        (
            "update Task",
            "PUT",
            format!("/Task/{pid}"),
            r#"{"resourceType":"Task"}"#.into(),
            [405, 405, 405, 405, 405, 405],
        ),
    ];
    let mut wrong = Vec::new();
    for (what, method, path, body, expected) in &cases {
        for ((who, tok), want) in tokens.iter().zip(expected) {
            // Deletes would change what later rows see: only refusals are asked.
            if *method == "DELETE" && *want != 403 {
                continue;
            }
            let got = call(&fhir, method, path, tok, body, &[]).status;
            if got != *want {
                wrong.push(format!("{who} {what}: {got}, expected {want}"));
            }
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
    // The system role may delete; the read then answers 410.
    let sys = &tokens[3].1;
    assert_eq!(
        call(&fhir, "DELETE", &format!("/DiagnosticReport/{dr_id}"), sys, "", &[]).status,
        204
    );
    assert_eq!(
        call(&fhir, "GET", &format!("/DiagnosticReport/{dr_id}"), sys, "", &[]).status,
        410
    );
}

#[tokio::test]
async fn resources_kept_only_as_written_are_searched_and_their_writes_show_as_audit_events() {
    let (hub, fhir) = fhir_hub().await;
    let admin = token(&hub, &["--sub", "ops-s", "--role", "admin"]);
    let patient = call(&fhir, "POST", "/Patient", &admin, PATIENT, &[]);
    let pid = patient.json["id"].as_str().expect("id").to_owned();
    for (i, code) in ["gait", "scan", "gait"].iter().enumerate() {
        let doc = format!(
            r#"{{"resourceType":"DocumentReference","identifier":[{{"system":"urn:oid:2.999.5","value":"D-{i}"}}],"status":"current","type":{{"coding":[{{"system":"urn:oid:2.999.6","code":"{code}"}}]}},"subject":{{"reference":"Patient/{pid}"}},"content":[{{"attachment":{{"contentType":"application/pdf","url":"https://files.carehub.example/{i}.pdf"}}}}]}}"#
        );
        assert_eq!(call(&fhir, "POST", "/DocumentReference", &admin, &doc, &[]).status, 201);
    }
    let ids = |path: &str| -> Vec<String> {
        let found = call(&fhir, "GET", path, &admin, "", &[]);
        assert_eq!(found.status, 200, "{}", found.text);
        found.json["entry"]
            .as_array()
            .expect("entries")
            .iter()
            .filter_map(|e| e["resource"]["identifier"][0]["value"].as_str().map(str::to_owned))
            .collect()
    };
    assert_eq!(
        ids(&format!("/DocumentReference?patient={pid}&_sort=_lastUpdated")),
        ["D-0", "D-1", "D-2"]
    );
    assert_eq!(
        ids("/DocumentReference?code=urn:oid:2.999.6|gait&_sort=-_lastUpdated"),
        ["D-2", "D-0"]
    );
    assert_eq!(ids("/DocumentReference?identifier=D-1"), ["D-1"]);
    assert_eq!(ids("/DocumentReference?_count=2").len(), 2);
    assert_eq!(
        call(&fhir, "GET", "/DocumentReference?name=x", &admin, "", &[]).status,
        400
    );
    // A Patient written over FHIR is found by identifier (from the store and,
    // once the intake pipeline applied it, the record: the same id, once).
    assert_eq!(ids("/Patient?identifier=urn:oid:2.999.1|W-1"), ["W-1"]);
    // The writes are on the audit trail, as AuditEvents.
    let events = call(
        &fhir,
        "GET",
        &format!("/AuditEvent?entity=Patient/{pid}"),
        &admin,
        "",
        &[],
    );
    let actions: Vec<&str> = events.json["entry"]
        .as_array()
        .expect("entries")
        .iter()
        .filter(|e| e["resource"]["agent"][0]["who"]["identifier"]["value"] == "ops-s")
        .filter_map(|e| e["resource"]["action"].as_str())
        .collect();
    assert!(actions.contains(&"C"), "{}", events.text);
    let docs = call(&fhir, "GET", "/AuditEvent?_count=50", &admin, "", &[]);
    assert!(
        docs.json["entry"]
            .as_array()
            .expect("entries")
            .iter()
            .any(|e| e["resource"]["entity"][0]["what"]["reference"]
                .as_str()
                .is_some_and(|r| r.starts_with("DocumentReference/"))),
        "{}",
        docs.text
    );
}

/// The converter's expected Bundles (`$CAREHUB_CORPUS/hl7v2/ms-fhir-converter`):
/// real-world R4 batches of PUTs. An entry of a type carehub serves is
/// accepted as sent exactly when it conforms to R4 (a few of the converter's
/// own entries do not), and refused with 400 otherwise; entries of other
/// types are answered 404 in the batch response.
#[tokio::test]
async fn the_converter_batches_from_the_corpus_load_where_their_types_are_served() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let Some(dir) = carehub_core::corpus::part(root, "hl7v2/ms-fhir-converter/expected") else {
        return;
    };
    let (hub, fhir) = fhir_hub().await;
    let admin = token(&hub, &["--sub", "loader", "--role", "admin"]);
    let served = carehub_fhir::store::WRITABLE;
    let (mut accepted, mut invalid, mut refused, mut unserved) = (0, 0, Vec::new(), 0);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("dir")
        .flat_map(|d| std::fs::read_dir(d.expect("entry").path()).expect("dir"))
        .map(|f| f.expect("file").path())
        .collect();
    files.sort();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("read");
        let sent: Value = serde_json::from_str(text.trim_start_matches('\u{feff}')).expect("json");
        let answer = call(&fhir, "POST", "/", &admin, text.trim_start_matches('\u{feff}'), &[]);
        assert_eq!(answer.status, 200, "{}: {}", file.display(), answer.text);
        for (e, r) in sent["entry"]
            .as_array()
            .expect("entries")
            .iter()
            .zip(answer.json["entry"].as_array().expect("answers"))
        {
            let ty = e["resource"]["resourceType"].as_str().unwrap_or("");
            let status = r["response"]["status"].as_str().unwrap_or("");
            if e.get("request").is_none() {
                // An entry that does not say what to do with it is refused alone.
                assert!(status.starts_with("400"), "{ty} without request: {status}");
            } else if carehub_fhir::store::LOADED.contains(&ty) {
                // Served, read-only: only the HL7 pipeline loads them.
                assert!(status.starts_with("405"), "{ty}: {status}");
                unserved += 1;
            } else if !served.contains(&ty) {
                assert!(status.starts_with("404"), "{ty}: {status}");
                unserved += 1;
            } else if status.starts_with("20") {
                accepted += 1;
                assert!(
                    carehub_fhir::validate::validate(&e["resource"]).is_empty(),
                    "{ty} accepted"
                );
            } else if status.starts_with("400")
                && (!carehub_fhir::validate::validate(&e["resource"]).is_empty() || e["resource"]["id"].is_null())
            {
                // The converter's own output breaks R4 here (a code outside a
                // required value set, a missing required element, no id).
                invalid += 1;
            } else {
                refused.push(format!(
                    "{} {ty}: {status} {}",
                    file.file_name()
                        .map(|f| f.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                    r["response"]["outcome"]["issue"][0]["diagnostics"]
                ));
            }
        }
    }
    println!(
        "{} bundles: {accepted} entries of served types accepted, {invalid} refused as not conforming to R4, {unserved} of types not written over FHIR",
        files.len(),
    );
    assert!(refused.is_empty(), "refused though valid: {refused:#?}");
    assert!(accepted > 0);
}

#[tokio::test]
async fn convert_hl7v2_answers_a_bundle_and_what_was_not_mapped() {
    let (hub, fhir) = fhir_hub().await;
    let clinician = token(&hub, &["--sub", "dr-conv", "--role", "clinician"]);
    let message = fixture("adt_a04_z.hl7");
    let raw = call(
        &fhir,
        "POST",
        "/$convert-hl7v2",
        &clinician,
        &message,
        &[("Content-Type", "x-application/hl7-v2+er7")],
    );
    assert_eq!(raw.status, 200, "{}", raw.text);
    assert_eq!(raw.json["resourceType"], "Parameters");
    let params = raw.json["parameter"].as_array().expect("parameters");
    let bundle = &params[0]["resource"];
    assert_eq!(
        (params[0]["name"].as_str(), bundle["type"].as_str()),
        (Some("bundle"), Some("batch"))
    );
    let types: Vec<&str> = bundle["entry"]
        .as_array()
        .expect("entries")
        .iter()
        .filter_map(|e| e["resource"]["resourceType"].as_str())
        .collect();
    assert!(types.contains(&"Patient") && types.contains(&"Encounter"), "{types:?}");
    let unmapped: Vec<&str> = params[1..].iter().filter_map(|p| p["valueString"].as_str()).collect();
    assert!(unmapped.contains(&"ZPI-1 (segment 5)"), "{unmapped:?}");
    // The same message in a Parameters resource: the same Bundle.
    let wrapped = json!({ "resourceType": "Parameters", "parameter": [{ "name": "message", "valueString": message }] });
    let again = call(&fhir, "POST", "/$convert-hl7v2", &clinician, &wrapped.to_string(), &[]);
    assert_eq!(again.json["parameter"][0]["resource"], *bundle);
    // Nothing was stored; the conversion was audited.
    let stored: (i64,) = sqlx::query_as("SELECT count(*) FROM fhir_resource")
        .fetch_one(&hub.db.pool)
        .await
        .expect("count");
    assert_eq!(stored.0, 0);
    let audited: (i64,) =
        sqlx::query_as("SELECT count(*) FROM audit_log WHERE entity_type = 'hl7v2_message' AND actor_id = 'dr-conv'")
            .fetch_one(&hub.db.pool)
            .await
            .expect("audit");
    assert_eq!(audited.0, 2);
    // Not HL7: 400; no token: 401.
    let bad = call(
        &fhir,
        "POST",
        "/$convert-hl7v2",
        &clinician,
        "hello",
        &[("Content-Type", "text/plain")],
    );
    assert_eq!((bad.status, outcome_code(&bad.json)), (400, "invalid"));
    let (status, _, _) = http_request(
        &fhir,
        "POST",
        "/$convert-hl7v2",
        &[("Content-Type", "text/plain")],
        &message,
    );
    assert_eq!(status, 401);
}

#[tokio::test]
async fn with_load_fhir_messages_over_mllp_read_as_fhir_linked_to_the_canonical_record() {
    let hub = start_hub_with(
        fresh_db().await,
        vec![
            ("CAREHUB_FHIR__AUTH__HS256_SECRET", SECRET.to_owned()),
            ("CAREHUB_PIPELINES__HL7__LOAD_FHIR", "true".to_owned()),
        ],
    )
    .await;
    let fhir = env_value(&hub.envs, "CAREHUB_FHIR__LISTEN");
    assert!(wait_listening(&fhir, Duration::from_secs(30)).await, "FHIR endpoint up");
    let pool = &hub.db.pool;
    let admin = token(&hub, &["--sub", "ops-1", "--role", "admin"]);
    let converted_id = |text: &str, ty: &str| -> String {
        let bundle = carehub_hl7_fhir::to_fhir(text).expect("converts").bundle;
        bundle["entry"]
            .as_array()
            .expect("entries")
            .iter()
            .map(|e| &e["resource"])
            .find(|r| r["resourceType"] == ty)
            .and_then(|r| r["id"].as_str())
            .unwrap_or_else(|| panic!("no {ty}"))
            .to_owned()
    };
    let read = |path: String| {
        let fhir = fhir.clone();
        let admin = admin.clone();
        async move {
            eventually(Duration::from_secs(60), || {
                let a = call(&fhir, "GET", &path, &admin, "", &[]);
                async move { (a.status == 200).then_some(a.json) }
            })
            .await
            .unwrap_or_else(|| panic!("{path} is not served"))
        }
    };

    // An admission: the visit, the next of kin, the coverage are served.
    let adt = fixture("adt_a01_full.hl7");
    let ack = send_until_accepted(&hub.mllp, &wire(&adt), Duration::from_secs(60))
        .await
        .expect("ACK");
    assert_eq!(ack.code.as_str(), "AA");
    let visit = read(format!("/Encounter/{}", converted_id(&adt, "Encounter"))).await;
    let (patient,): (uuid::Uuid,) = sqlx::query_as("SELECT patient_id FROM patient_identifier WHERE value = 'P-2002'")
        .fetch_one(pool)
        .await
        .expect("the canonical patient");
    // The converted patient is the canonical one: referred to, not copied.
    assert_eq!(visit["subject"]["reference"], format!("Patient/{patient}"));
    let copy = call(
        &fhir,
        "GET",
        &format!("/Patient/{}", converted_id(&adt, "Patient")),
        &admin,
        "",
        &[],
    );
    assert_eq!(copy.status, 404, "{}", copy.text);
    let coverages = call(
        &fhir,
        "GET",
        &format!("/Coverage?patient=Patient/{patient}"),
        &admin,
        "",
        &[],
    );
    assert_eq!(coverages.status, 200, "{}", coverages.text);
    assert_eq!(
        coverages.json["entry"].as_array().map(Vec::len),
        Some(1),
        "{}",
        coverages.text
    );
    // Read-only here, audited as written by the pipeline.
    let id = visit["id"].as_str().expect("id");
    let put = call(
        &fhir,
        "PUT",
        &format!("/Encounter/{id}"),
        &admin,
        &visit.to_string(),
        &[],
    );
    assert_eq!(put.status, 405, "{}", put.text);
    let audited = count(
        pool,
        &format!("SELECT count(*) FROM audit_log WHERE entity_type = 'Encounter' AND entity_id = '{id}' AND actor_id = 'pipeline:hl7' AND action = 'create'"),
    )
    .await;
    assert_eq!(audited, 1);

    // An order, then its results: the report points at the canonical order
    // and the canonical observation.
    let orm = fixture("orm_o01_full.hl7");
    let ack = send_until_accepted(&hub.mllp, &wire(&orm), Duration::from_secs(60))
        .await
        .expect("ACK");
    assert_eq!(ack.code.as_str(), "AA");
    let condition = read(format!("/Condition/{}", converted_id(&orm, "Condition"))).await;
    assert_eq!(condition["code"]["coding"][0]["code"], "M21.4");
    let oru = fixture("oru_r01_full.hl7");
    let ack = send_until_accepted(&hub.mllp, &wire(&oru), Duration::from_secs(60))
        .await
        .expect("ACK");
    assert_eq!(ack.code.as_str(), "AA");
    let report = read(format!("/DiagnosticReport/{}", converted_id(&oru, "DiagnosticReport"))).await;
    let (order,): (uuid::Uuid,) = sqlx::query_as("SELECT id FROM service_order WHERE placer_number = 'PO-6001'")
        .fetch_one(pool)
        .await
        .expect("the canonical order");
    assert_eq!(report["basedOn"][0]["reference"], format!("ServiceRequest/{order}"));
    let (observation,): (uuid::Uuid,) = sqlx::query_as("SELECT id FROM observation WHERE code = 'FIT-LEN'")
        .fetch_one(pool)
        .await
        .expect("the canonical observation");
    assert_eq!(report["result"][0]["reference"], format!("Observation/{observation}"));
    let result = read(format!("/Observation/{observation}")).await;
    assert_eq!(result["code"]["coding"][0]["code"], "FIT-LEN");
    // The specimens came along, in the patient's compartment.
    let specimen = read(format!("/Specimen/{}", converted_id(&oru, "Specimen"))).await;
    assert_eq!(specimen["subject"], report["subject"]);
}

#[tokio::test]
async fn a_converted_message_loaded_again_writes_nothing_and_a_change_writes_a_version() {
    use carehub_pipeline_hl7::fhir_load::{CanonicalIds, load};
    use carehub_schema::Action;
    let db = fresh_db().await;
    let mut conn = db.pool.acquire().await.expect("connection");
    let ctx = carehub_pipeline::Context {
        message_id: uuid::Uuid::now_v7(),
        origin: "kafka:test".into(),
        replay: false,
        raw: None,
    };
    let patient = uuid::Uuid::now_v7();
    let canonical = CanonicalIds {
        patient: Some(patient),
        ..Default::default()
    };
    let text = fixture("adt_a01_full.hl7");
    let first = load(&mut conn, &ctx, "pipeline:hl7", &text, &canonical)
        .await
        .expect("loads");
    assert!(first.len() > 10, "{} resources", first.len());
    assert!(first.iter().all(|a| a.action == Action::Create));
    let versions = count(&db.pool, "SELECT count(*) FROM fhir_resource_version").await;
    assert_eq!(versions as usize, first.len());
    // The converted Patient is the canonical one: not stored, referred to.
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM fhir_resource WHERE resource_type = 'Patient'"
        )
        .await,
        0
    );
    let in_compartment = count(
        &db.pool,
        &format!("SELECT count(*) FROM fhir_resource WHERE patient_ref = 'Patient/{patient}'"),
    )
    .await;
    assert!(in_compartment >= 4, "{in_compartment} in the patient's compartment");

    // Loaded again (a redelivery): nothing written, nothing audited.
    let again = load(&mut conn, &ctx, "pipeline:hl7", &text, &canonical)
        .await
        .expect("loads");
    assert!(again.is_empty(), "{again:?}");
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM fhir_resource_version").await,
        versions
    );

    // The visit's class changed: the Encounter alone gets a second version.
    let changed = text.replace("PV1|1|I|", "PV1|1|O|");
    let third = load(&mut conn, &ctx, "pipeline:hl7", &changed, &canonical)
        .await
        .expect("loads");
    assert_eq!(third.len(), 1, "{third:?}");
    assert_eq!(third[0].entity_type, "Encounter");
    assert_eq!(third[0].action, Action::Update);
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM fhir_resource WHERE resource_type = 'Encounter' AND version_id = 2"
        )
        .await,
        1
    );
}

#[test]
fn every_type_the_converter_produces_is_served_once_loaded() {
    // load_fhir stores what the converter produces: each type must be one
    // the FHIR endpoint serves, else it would be kept and never read.
    let mut texts: Vec<String> =
        std::fs::read_dir(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hl7"))
            .expect("fixtures")
            .filter_map(|e| std::fs::read_to_string(e.expect("entry").path()).ok())
            .collect();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    if let Some(dir) = carehub_core::corpus::part(root, "hl7v2/ms-fhir-converter/input") {
        for e in std::fs::read_dir(dir).expect("corpus") {
            if let Ok(bytes) = std::fs::read(e.expect("entry").path())
                && let Ok((text, _)) = carehub_hl7::codec::decode_text(&bytes)
            {
                texts.push(text.into_owned());
            }
        }
    }
    let mut produced = std::collections::BTreeSet::new();
    for text in &texts {
        if let Ok(c) = carehub_hl7_fhir::to_fhir(text) {
            for e in c.bundle["entry"].as_array().expect("entries") {
                produced.insert(e["resource"]["resourceType"].as_str().unwrap_or("").to_owned());
            }
        }
    }
    assert!(produced.len() > 20, "{produced:?}");
    let unserved: Vec<&String> = produced.iter().filter(|t| !carehub_fhir::store::is_served(t)).collect();
    assert!(unserved.is_empty(), "converted but not served: {unserved:?}");
}
