//! HL7 v2 → FHIR on messages of our own (`tests/fixtures/hl7`): every
//! resource valid R4, the same message the same Bundle, the resources each
//! message type must give, golden Bundles (`tests/golden`, rewritten with
//! CAREHUB_BLESS=1 after a deliberate change, then reviewed in the diff),
//! and the report of what was not mapped.

use std::path::{Path, PathBuf};

mod common;

use carehub_hl7_fhir::to_fhir;
use common::*;
use serde_json::{Value, json};

fn golden(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name.replace(".hl7", ".json"))
}

/// Message → the resource types it must give.
const CASES: &[(&str, &[&str])] = &[
    ("adt_a01.hl7", &["MessageHeader", "Provenance", "Patient", "Encounter"]),
    ("adt_a03.hl7", &["Patient", "Encounter"]),
    ("adt_a04_z.hl7", &["Patient", "Encounter", "Location"]),
    ("adt_a08.hl7", &["Patient"]),
    ("adt_a40.hl7", &["Patient"]),
    ("orm_o01.hl7", &["Patient", "ServiceRequest", "Practitioner"]),
    ("oml_o21.hl7", &["Patient", "ServiceRequest"]),
    (
        "oru_r01.hl7",
        &["Patient", "ServiceRequest", "DiagnosticReport", "Observation"],
    ),
    ("siu_s12.hl7", &["Patient", "Appointment", "Location"]),
    ("dft_p03.hl7", &["Patient", "Encounter", "ChargeItem"]),
    (
        "vxu_v04.hl7",
        &["Patient", "Immunization", "Practitioner", "Organization"],
    ),
    ("mdm_t02.hl7", &["Patient", "Encounter", "DocumentReference"]),
    (
        "adt_a01_full.hl7",
        &["Patient", "RelatedPerson", "Encounter", "Coverage", "Provenance"],
    ),
    (
        "orm_o01_full.hl7",
        &[
            "ServiceRequest",
            "PractitionerRole",
            "Condition",
            "ResearchStudy",
            "Account",
        ],
    ),
    (
        "oru_r01_full.hl7",
        &["DiagnosticReport", "PractitionerRole", "Specimen", "Observation"],
    ),
    (
        "dft_p03_full.hl7",
        &["ChargeItem", "Procedure", "MedicationDispense", "Device"],
    ),
    (
        "orm_o01_supplies.hl7",
        &["MedicationRequest", "Medication", "NutritionOrder", "SupplyRequest"],
    ),
];

#[test]
fn each_message_type_gives_valid_deterministic_bundles_as_golden() {
    let bless = std::env::var_os("CAREHUB_BLESS").is_some();
    for (name, types) in CASES {
        let text = fixture(name);
        let first = to_fhir(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        let again = to_fhir(&text).expect("converts");
        assert_eq!(
            first.bundle, again.bundle,
            "{name}: the same message gives the same Bundle"
        );
        for t in *types {
            assert!(!resources(&first.bundle, t).is_empty(), "{name}: no {t}");
        }
        for entry in first.bundle["entry"].as_array().expect("entries") {
            let r = &entry["resource"];
            let issues = carehub_fhir::validate::validate(r);
            assert!(
                issues.is_empty(),
                "{name}: {} is not valid R4: {issues:?}\n{r:#}",
                r["resourceType"]
            );
            let url = entry["request"]["url"].as_str().expect("url");
            assert_eq!(
                url,
                format!(
                    "{}/{}",
                    r["resourceType"].as_str().unwrap_or(""),
                    r["id"].as_str().unwrap_or("")
                )
            );
        }
        let path = golden(name);
        let pretty = serde_json::to_string_pretty(&first.bundle).expect("json") + "\n";
        if bless {
            std::fs::write(&path, &pretty).expect("write golden");
        }
        let want = std::fs::read_to_string(&path)
            .unwrap_or_else(|_| panic!("{} missing: run with CAREHUB_BLESS=1 and review it", path.display()));
        assert_eq!(pretty, want, "{name}: differs from {}", path.display());
    }
}

#[test]
fn fields_land_where_the_mapping_says() {
    let oru = to_fhir(&fixture("oru_r01.hl7")).expect("ORU").bundle;
    let patient = resources(&oru, "Patient")[0];
    assert_eq!(patient["identifier"][0]["value"], "P-1001");
    assert_eq!(patient["identifier"][0]["system"], "urn:oid:1.2.826.0.1.9999.1");
    assert_eq!(patient["birthDate"], "1980-01-02");
    assert_eq!(patient["gender"], "female");
    let observations = resources(&oru, "Observation");
    assert_eq!(observations.len(), 3);
    assert_eq!(observations[0]["valueQuantity"]["value"].to_string(), "26.4");
    assert_eq!(observations[0]["valueQuantity"]["unit"], "cm");
    assert_eq!(observations[0]["referenceRange"][0]["text"], "26.0-27.0");
    assert_eq!(observations[1]["valueString"], "Shell within tolerance");
    assert_eq!(observations[2]["valueCodeableConcept"]["coding"][0]["code"], "PASS");
    assert_eq!(observations[2]["status"], "preliminary");
    let report = resources(&oru, "DiagnosticReport")[0];
    assert_eq!(report["result"].as_array().map(Vec::len), Some(3));
    assert_eq!(report["code"]["coding"][0]["code"], "L3000");
    let order = resources(&oru, "ServiceRequest")[0];
    assert_eq!(order["identifier"][0]["value"], "PO-5001");
    assert_eq!(order["identifier"][1]["value"], "LAB-77");
    let subject = format!("Patient/{}", patient["id"].as_str().expect("id"));
    assert!(
        observations
            .iter()
            .all(|o| o["subject"]["reference"] == subject.as_str())
    );

    let vxu = to_fhir(&fixture("vxu_v04.hl7")).expect("VXU").bundle;
    let shot = resources(&vxu, "Immunization")[0];
    assert_eq!(
        shot["vaccineCode"]["coding"][0]["system"],
        "http://hl7.org/fhir/sid/cvx"
    );
    assert_eq!(shot["occurrenceDateTime"], "2026-11-20T10:30:00+01:00");
    assert_eq!(shot["lotNumber"], "LOT-77");
    assert_eq!(shot["doseQuantity"]["code"], "mL");
    assert_eq!(shot["site"]["coding"][0]["code"], "LD");
    // RXA-11: where it was given.
    let at = shot["location"]["reference"].as_str().expect("location");
    assert!(
        resources(&vxu, "Location")
            .iter()
            .any(|l| at.ends_with(l["id"].as_str().unwrap_or("-")) && l["name"] == "NORTHCLINIC")
    );

    let mdm = to_fhir(&fixture("mdm_t02.hl7")).expect("MDM").bundle;
    let doc = resources(&mdm, "DocumentReference")[0];
    assert_eq!(doc["masterIdentifier"]["value"], "DOC-42");
    assert_eq!(doc["docStatus"], "final");
    use base64::Engine as _;
    let content = base64::engine::general_purpose::STANDARD
        .decode(doc["content"][0]["attachment"]["data"].as_str().expect("data"))
        .expect("base64");
    assert_eq!(
        String::from_utf8(content).expect("utf8"),
        "Orthosis fitted, gait improved.\nReview in six weeks."
    );
    // The document answers the order before it (OBR-31: why it was asked for).
    assert_eq!(doc["context"]["period"]["start"], "2026-11-26T08:55:00+01:00");
    let order = target(&mdm, &doc["context"]["related"][0]);
    assert_eq!(order["identifier"][0]["value"], "PO-7001");
    assert_eq!(codes(&order["reasonCode"][0]), ["M21.6"]);
    // ED: the PDF as sent (already Base64), typed; RP: a pointer, as the URL.
    assert_eq!(
        doc["content"][1]["attachment"],
        json!({ "contentType": "application/pdf", "data": "JVBERi0xLjQK" })
    );
    assert_eq!(
        doc["content"][2]["attachment"],
        json!({ "contentType": "video/mp4", "url": "https://clinic.example/videos/42" })
    );

    let siu = to_fhir(&fixture("siu_s12.hl7")).expect("SIU").bundle;
    let visit = resources(&siu, "Appointment")[0];
    assert_eq!(visit["status"], "booked");
    assert_eq!(visit["serviceType"][0]["coding"][0]["code"], "FIT");
}

#[test]
fn not_hl7_is_an_error_not_a_panic() {
    assert!(to_fhir("hello").is_err());
    assert!(to_fhir("").is_err());
}

/// The external corpus (`$CAREHUB_CORPUS/hl7v2`, default `../shared/corpus`):
/// every message of every file converts, and every resource produced is
/// valid R4. How much of the expected Bundles is reproduced is
/// `carehub hl7 score-conversion`'s figure (README).
#[test]
fn every_corpus_message_converts_to_valid_r4() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let Some(dir) = carehub_core::corpus::part(&root, "hl7v2/ms-fhir-converter/input") else {
        return;
    };
    let entries = std::fs::read_dir(&dir).expect("corpus dir");
    let (mut messages, mut resources) = (0, 0);
    for entry in entries {
        let path = entry.expect("entry").path();
        let bytes = std::fs::read(&path).expect("read");
        let (text, _) = carehub_hl7::codec::decode_text(&bytes).expect("decodes");
        let clean = carehub_hl7::codec::batch::strip_comments(&text);
        let split = carehub_hl7::codec::batch::split(&clean).expect("splits");
        for m in &split.messages {
            messages += 1;
            let c = to_fhir(m).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            for e in c.bundle["entry"].as_array().expect("entries") {
                resources += 1;
                let issues = carehub_fhir::validate::validate(&e["resource"]);
                assert!(issues.is_empty(), "{}: {issues:?}", path.display());
            }
        }
    }
    println!("{messages} corpus messages converted; {resources} resources, all valid R4");
    assert!(messages > 0);
}

/// The elements each direction maps, compared without ids and references
/// (which name resources of one Bundle or the other).
fn mapped(r: &Value) -> Value {
    let keep: &[&str] = match r["resourceType"].as_str() {
        Some("Patient") => &[
            "identifier",
            "name",
            "birthDate",
            "gender",
            "address",
            "telecom",
            "extension",
            "communication",
        ],
        Some("Observation") => &[
            "code",
            "status",
            "valueQuantity",
            "valueString",
            "valueCodeableConcept",
            "referenceRange",
            "interpretation",
            "effectiveDateTime",
        ],
        Some("DiagnosticReport") => &["code", "status", "effectiveDateTime"],
        Some("ServiceRequest") => &["identifier", "code", "status", "note"],
        _ => &[],
    };
    let mut out = serde_json::Map::new();
    for k in keep {
        if let Some(v) = r.get(*k) {
            let mut v = v.clone();
            if let Value::Array(items) = &mut v {
                for i in items {
                    if let Value::Object(o) = i {
                        o.remove("assigner");
                    }
                }
            }
            out.insert((*k).to_owned(), v);
        }
    }
    Value::Object(out)
}

fn header_of(text: &str) -> carehub_hl7_fhir::to_v2::Header {
    let m = carehub_hl7::codec::er7::Message::parse(text).expect("parses");
    let f = |n: usize| m.msh().field(n).raw().to_owned();
    carehub_hl7_fhir::to_v2::Header {
        sending_application: f(3),
        sending_facility: f(4),
        receiving_application: f(5),
        receiving_facility: f(6),
        control_id: m.control_id().to_owned(),
        timestamp: f(7),
    }
}

#[test]
fn a_round_trip_v2_to_fhir_to_v2_keeps_what_was_mapped() {
    use carehub_hl7_fhir::to_v2::{V2Message, from_fhir};
    for (name, kind, types) in [
        (
            "oru_r01.hl7",
            V2Message::OruR01,
            &["Patient", "DiagnosticReport", "Observation"][..],
        ),
        ("orm_o01.hl7", V2Message::OrmO01, &["Patient", "ServiceRequest"][..]),
        ("oml_o21.hl7", V2Message::OmlO21, &["Patient", "ServiceRequest"][..]),
        ("adt_a08.hl7", V2Message::AdtA08, &["Patient"][..]),
        ("adt_a01_full.hl7", V2Message::AdtA08, &["Patient"][..]),
    ] {
        let text = fixture(name);
        let first = to_fhir(&text).expect("to FHIR").bundle;
        let back = from_fhir(&first, kind, &header_of(&text)).expect("to v2");
        carehub_hl7::codec::er7::Message::parse(&back).unwrap_or_else(|e| panic!("{name}: {e}\n{back}"));
        let second = to_fhir(&back).unwrap_or_else(|e| panic!("{name}: {e}")).bundle;
        for t in types {
            let a: Vec<Value> = resources(&first, t).into_iter().map(mapped).collect();
            let b: Vec<Value> = resources(&second, t).into_iter().map(mapped).collect();
            assert!(!a.is_empty(), "{name}: no {t}");
            assert_eq!(
                a,
                b,
                "{name}: {t} changed on the way back\n{}",
                back.replace('\r', "\n")
            );
        }
    }
}
