//! Every Kafka payload has a JSON Schema under schemas/json, and what carehub
//! really produces conforms to it.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use carehub_pipeline::{Engine, InboundRecord, Processed};
use carehub_pipeline_intake::IntakePipeline;
use carehub_schema::Envelope;
use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas")
}

fn load(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A validator for schemas/json/<name>.json, with the sibling schemas it references.
fn validator(name: &str) -> jsonschema::Validator {
    let dir = root().join("json");
    let mut registry = jsonschema::Registry::new();
    for entry in std::fs::read_dir(&dir).expect("schemas/json") {
        let schema = load(&entry.expect("entry").path());
        let id = schema["$id"].as_str().expect("$id").to_owned();
        registry = registry.add(id, schema).expect("register schema");
    }
    let registry = registry.prepare().expect("schemas resolve");
    jsonschema::options()
        .should_validate_formats(true)
        .with_registry(&registry)
        .build(&load(&dir.join(format!("{name}.json"))))
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn assert_valid(v: &jsonschema::Validator, instance: &Value, what: &str) {
    let errors: Vec<String> = v
        .iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{what}: {errors:?}");
}

/// The contracts module and schemas/json name the same payloads, one to one.
#[test]
fn every_contract_has_its_schema_and_every_schema_its_contract() {
    let mut files: Vec<String> = std::fs::read_dir(root().join("json"))
        .expect("schemas/json")
        .map(|e| {
            e.expect("entry")
                .path()
                .file_stem()
                .expect("stem")
                .to_string_lossy()
                .into_owned()
        })
        .filter(|name| name.starts_with("carehub."))
        .collect();
    files.sort();
    let mut contracts: Vec<String> = carehub_schema::contracts::ALL.iter().map(|s| s.to_string()).collect();
    contracts.sort();
    assert_eq!(contracts, files, "contracts::ALL against schemas/json/carehub.*.json");
    for ty in carehub_schema::contracts::ALL {
        // Each file's $id names its own type: a copied file is caught too.
        let schema = load(&root().join("json").join(format!("{ty}.json")));
        assert!(
            schema["$id"]
                .as_str()
                .is_some_and(|id| id.ends_with(&format!("/{ty}.json"))),
            "{ty}: $id {}",
            schema["$id"]
        );
    }
}

#[test]
fn examples_conform_and_bad_data_does_not() {
    for entry in std::fs::read_dir(root().join("examples")).expect("examples") {
        let path = entry.expect("entry").path();
        let name = path.file_stem().expect("stem").to_string_lossy().into_owned();
        assert_valid(&validator(&name), &load(&path), &name);
    }
    let v = validator("carehub.patient.upsert.v1");
    assert!(
        !v.is_valid(&serde_json::json!({ "identifiers": [] })),
        "an identifier is required"
    );
    assert!(!v.is_valid(&serde_json::json!({ "identifiers": [{ "system": "s", "value": "v" }], "shoe_size": 44 })));
}

#[tokio::test]
async fn events_the_pipeline_emits_conform_to_their_schemas() {
    let db = common::fresh_db().await;
    let engine = Engine::new(db.pool.clone(), Arc::new(IntakePipeline::new("events")));
    for kind in ["organization", "patient"] {
        let data = load(&root().join(format!("examples/carehub.{kind}.upsert.v1.json")));
        let event = Envelope::new(format!("carehub.{kind}.upsert.v1"), "/test", data);
        let bytes = serde_json::to_vec(&event).expect("json");
        // The inbound envelope itself conforms.
        assert_valid(
            &validator("envelope.v1"),
            &serde_json::from_slice(&bytes).expect("json"),
            "inbound envelope",
        );
        let rec = InboundRecord {
            topic: "intake",
            partition: Some(0),
            offset: Some(0),
            key: None,
            payload: &bytes,
        };
        assert!(matches!(
            engine.process(&rec).await.expect("process"),
            Processed::Applied { .. }
        ));
    }
    let rows = carehub_schema::Outbox::unsent(&db.pool, 10).await.expect("outbox");
    assert_eq!(rows.len(), 2);
    for row in rows {
        assert_valid(&validator("envelope.v1"), &row.payload, "outbound envelope");
        let ty = row.payload["type"].as_str().expect("type").to_owned();
        assert_valid(&validator(&ty), &row.payload["data"], &ty);
    }
}

#[tokio::test]
async fn events_the_hl7_pipeline_emits_conform_to_their_schemas() {
    let db = common::fresh_db().await;
    let engine = Engine::new(
        db.pool.clone(),
        Arc::new(carehub_pipeline_hl7::Hl7Pipeline::new("events")),
    );
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hl7");
    let prior = std::fs::read_to_string(fixtures.join("adt_a01.hl7"))
        .expect("fixture")
        .replace("P-1001", "P-2002")
        .replace("SSN-555", "SSN-556")
        .replace("ADT0001", "ADT0000");
    let mut texts = vec![prior];
    for name in [
        "adt_a01.hl7",
        "adt_a08.hl7",
        "orm_o01.hl7",
        "oml_o21.hl7",
        "oru_r01.hl7",
        "siu_s12.hl7",
        "dft_p03.hl7",
        "adt_a03.hl7",
        "adt_a40.hl7",
    ] {
        texts.push(std::fs::read_to_string(fixtures.join(name)).expect("fixture"));
    }
    for (i, text) in texts.iter().enumerate() {
        let raw = text.lines().collect::<Vec<_>>().join("\r");
        let event = common::stored_hl7(&db.pool, raw.as_bytes()).await;
        let bytes = serde_json::to_vec(&event).expect("json");
        let value: Value = serde_json::from_slice(&bytes).expect("json");
        assert_valid(&validator("envelope.v1"), &value, "inbound envelope");
        assert_valid(
            &validator(carehub_schema::contracts::HL7_RECEIVED),
            &value["data"],
            "received data",
        );
        let rec = InboundRecord {
            topic: "hl7",
            partition: Some(0),
            offset: Some(i as i64),
            key: None,
            payload: &bytes,
        };
        let processed = engine.process(&rec).await.expect("process");
        assert!(matches!(processed, Processed::Applied { .. }), "{i}: {processed:?}");
    }
    let rows = carehub_schema::Outbox::unsent(&db.pool, 1000).await.expect("outbox");
    let mut types = std::collections::BTreeSet::new();
    for row in rows {
        assert_valid(&validator("envelope.v1"), &row.payload, "outbound envelope");
        let ty = row.payload["type"].as_str().expect("type").to_owned();
        assert_valid(&validator(&ty), &row.payload["data"], &ty);
        types.insert(ty);
    }
    for ty in [
        "carehub.patient.upserted.v1",
        "carehub.patient.merged.v1",
        "carehub.encounter.upserted.v1",
        "carehub.order.upserted.v1",
        "carehub.observation.upserted.v1",
        "carehub.appointment.upserted.v1",
        "carehub.invoice.upserted.v1",
    ] {
        assert!(types.contains(ty), "{ty} emitted: {types:?}");
    }
}

#[tokio::test]
async fn records_the_lab_pipelines_emit_conform_to_their_schemas() {
    use carehub_pipeline_lab::{LabDispatch, LabRouting, LabStatusPipeline, LabTopics};
    let db = common::fresh_db().await;
    let topics = LabTopics {
        orders: "lab.orders".into(),
        hl7_outbound: "hl7.out".into(),
        ehr_events: "ehr".into(),
    };
    let mut routing = LabRouting::default();
    routing.clinics.insert(
        "NORTHCLINIC".into(),
        carehub_pipeline_lab::ClinicRoute {
            hl7_destination: Some("north".into()),
            ..Default::default()
        },
    );
    let hl7 = Engine::new(
        db.pool.clone(),
        Arc::new(carehub_pipeline_hl7::Hl7Pipeline::new("events")),
    );
    let dispatch = Engine::new(
        db.pool.clone(),
        Arc::new(LabDispatch {
            topics: topics.clone(),
            routing: routing.clone(),
        }),
    );
    let status = Engine::new(db.pool.clone(), Arc::new(LabStatusPipeline { topics, routing }));
    let run = |engine: &Engine, env: &Envelope, offset: i64| {
        let engine = engine.clone();
        let bytes = serde_json::to_vec(env).expect("json");
        async move {
            let rec = InboundRecord {
                topic: "t",
                partition: Some(0),
                offset: Some(offset),
                key: None,
                payload: &bytes,
            };
            engine.process(&rec).await.expect("process")
        }
    };
    let orm = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hl7/orm_o01.hl7"))
        .expect("fixture")
        .lines()
        .collect::<Vec<_>>()
        .join("\r");
    let received = common::stored_hl7(&db.pool, orm.as_bytes()).await;
    assert!(matches!(run(&hl7, &received, 0).await, Processed::Applied { .. }));
    let upserted: Vec<Value> = carehub_schema::Outbox::unsent(&db.pool, 100)
        .await
        .expect("outbox")
        .into_iter()
        .map(|r| r.payload)
        .filter(|p| p["type"] == carehub_schema::contracts::ORDER_UPSERTED)
        .collect();
    let upserted: Envelope = serde_json::from_value(upserted[0].clone()).expect("envelope");
    assert!(matches!(run(&dispatch, &upserted, 1).await, Processed::Applied { .. }));
    let (order_id,): (uuid::Uuid,) = sqlx::query_as("SELECT order_id FROM lab_job")
        .fetch_one(&db.pool)
        .await
        .expect("lab job");
    for (seq, data) in [
        (1, serde_json::json!({ "status": "accepted" })),
        (2, serde_json::json!({ "status": "in_production" })),
        (3, serde_json::json!({ "status": "qc_failed", "reason": "seam" })),
    ] {
        let mut data = data;
        data["order_id"] = serde_json::json!(order_id);
        data["sequence"] = serde_json::json!(seq);
        assert_valid(
            &validator(carehub_schema::contracts::LAB_STATUS),
            &data,
            "status report",
        );
        let env = Envelope::new(carehub_schema::contracts::LAB_STATUS, "/test/lab", data);
        assert!(matches!(run(&status, &env, 1 + seq).await, Processed::Applied { .. }));
    }
    let results = load(&root().join("examples/carehub.lab.results.v1.json"));
    let mut results = results;
    results["order_id"] = serde_json::json!(order_id);
    let env = Envelope::new(carehub_schema::contracts::LAB_RESULTS, "/test/lab", results);
    let engine = Engine::new(
        db.pool.clone(),
        Arc::new(carehub_pipeline_lab::LabResultsPipeline {
            topics: LabTopics {
                orders: "lab.orders".into(),
                hl7_outbound: "hl7.out".into(),
                ehr_events: "ehr".into(),
            },
            routing: LabRouting::default(),
        }),
    );
    assert!(matches!(run(&engine, &env, 10).await, Processed::Applied { .. }));
    let mut types = std::collections::BTreeSet::new();
    for row in carehub_schema::Outbox::unsent(&db.pool, 1000).await.expect("outbox") {
        assert_valid(&validator("envelope.v1"), &row.payload, "outbound envelope");
        let ty = row.payload["type"].as_str().expect("type").to_owned();
        assert_valid(&validator(&ty), &row.payload["data"], &ty);
        types.insert(ty);
    }
    for ty in [
        carehub_schema::contracts::LAB_ORDER,
        carehub_schema::contracts::EHR_ORDER_STATUS,
        carehub_schema::contracts::HL7_SEND,
    ] {
        assert!(types.contains(ty), "{ty} emitted: {types:?}");
    }
    let bad = serde_json::json!({ "order_id": order_id, "sequence": 4, "status": "shipped" });
    assert!(
        !validator(carehub_schema::contracts::LAB_STATUS).is_valid(&bad),
        "shipped needs a carrier"
    );
}
