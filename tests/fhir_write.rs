//! FHIR writes over HTTP against the running hub, real PostgreSQL and the
//! Kafka-protocol broker: create, update (as create too), conditional
//! create, If-Match, delete, vread, _history, batch and transaction Bundles,
//! R4 validation; Patient and ServiceRequest writes reaching the canonical
//! record and the lab flow; every write audited.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

use common::fhir_write::*;

const PATIENT: &str = r#"{"resourceType":"Patient","identifier":[{"system":"urn:oid:2.999.1","value":"W-1"}],"name":[{"family":"Writer","given":["Wanda"]}],"gender":"female","birthDate":"1975-05-05","extension":[{"url":"https://carehub.example/fhir/StructureDefinition/foot-length-cm","valueDecimal":26.50}]}"#;

#[tokio::test]
async fn writes_are_versioned_stored_verbatim_validated_and_audited() {
    let (hub, fhir) = write_hub().await;
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
    let (hub, fhir) = write_hub().await;
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
    let (hub, fhir) = write_hub().await;
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
    let (hub, fhir) = write_hub().await;
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
    let (hub, fhir) = write_hub().await;
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
