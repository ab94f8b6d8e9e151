//! HL7 v2 → FHIR through the running hub: `POST /$convert-hl7v2`, the
//! converted resources loaded into the FHIR store (`[pipelines.hl7]
//! load_fhir`) from the corpus and over MLLP, read back as FHIR.

mod common;

use std::time::Duration;

use common::fhir_write::*;
use common::*;
use serde_json::{Value, json};

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
    let (hub, fhir) = write_hub().await;
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
    let (hub, fhir) = write_hub().await;
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
        outbox: Default::default(),
    };
    let patient = uuid::Uuid::now_v7();
    let canonical = CanonicalIds {
        patient: Some(patient),
        ..Default::default()
    };
    let text = fixture("adt_a01_full.hl7");
    let first = load(
        &mut conn,
        &ctx,
        "pipeline:hl7",
        &carehub_hl7::codec::Message::parse(&text).expect("parses"),
        &canonical,
    )
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
    let again = load(
        &mut conn,
        &ctx,
        "pipeline:hl7",
        &carehub_hl7::codec::Message::parse(&text).expect("parses"),
        &canonical,
    )
    .await
    .expect("loads");
    assert!(again.is_empty(), "{again:?}");
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM fhir_resource_version").await,
        versions
    );

    // The visit's class changed: the Encounter alone gets a second version.
    let changed = text.replace("PV1|1|I|", "PV1|1|O|");
    let third = load(
        &mut conn,
        &ctx,
        "pipeline:hl7",
        &carehub_hl7::codec::Message::parse(&changed).expect("parses"),
        &canonical,
    )
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
