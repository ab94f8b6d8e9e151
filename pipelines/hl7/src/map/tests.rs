use super::*;

fn fixture(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/hl7")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn mapped(name: &str) -> Mapped {
    let text = fixture(name);
    let msg = Message::parse(&text).expect("fixture parses");
    map(&msg).expect("fixture maps")
}

#[test]
fn adt_a01_maps_the_patient_and_opens_the_visit() {
    let m = mapped("adt_a01.hl7");
    let Command::UpsertPatient { patient, encounter } = m.command else {
        panic!("{:?}", m.command)
    };
    assert_eq!(patient.identifiers.len(), 2);
    assert_eq!(patient.identifiers[0].system, "urn:oid:1.2.826.0.1.9999.1");
    assert_eq!(patient.identifiers[0].value, "P-1001");
    assert_eq!(patient.identifiers[0].type_code.as_deref(), Some("MR"));
    assert_eq!(patient.identifiers[1].system, "urn:carehub:hl7-aa:NATION");
    let name = patient.name.expect("name");
    assert_eq!(name.family.as_deref(), Some("Testpatient"));
    assert_eq!(name.given, ["Alex", "Q"]);
    assert_eq!(patient.birth_date, NaiveDate::from_ymd_opt(1980, 1, 2));
    assert_eq!(patient.sex, Some(Sex::Female));
    assert_eq!(patient.phone.as_deref(), Some("5550100"));
    assert_eq!(patient.email.as_deref(), Some("alex@example.test"));
    let addr = patient.address.expect("address");
    assert_eq!(addr["city"], "Testville");
    assert_eq!(addr["line"], serde_json::json!(["12 Test Street", "Apt 3"]));
    let enc = encounter.expect("visit");
    assert_eq!(enc.visit.value, "V-9001");
    assert_eq!(enc.status, "in-progress");
    assert_eq!(enc.class.as_deref(), Some("I"));
    assert_eq!(enc.location.as_deref(), Some("WARD1/R12/B1"));
    assert!(enc.admitted_at.is_some());
    // Z-segments are not mapped, and are counted rather than dropped unseen.
    assert_eq!(m.unmapped.get("ZPI"), Some(&1));
}

#[test]
fn adt_a03_closes_the_visit() {
    let Command::UpsertPatient { encounter, .. } = mapped("adt_a03.hl7").command else {
        panic!()
    };
    let enc = encounter.expect("visit");
    assert_eq!(enc.status, "finished");
    assert_eq!(
        enc.discharged_at.map(|t| t.to_rfc3339()),
        Some("2026-11-26T08:55:00+00:00".to_owned())
    );
}

#[test]
fn adt_a40_names_survivor_and_prior() {
    let Command::MergePatients { survivor, prior } = mapped("adt_a40.hl7").command else {
        panic!()
    };
    assert_eq!(survivor.identifiers[0].value, "P-1001");
    assert_eq!(prior[0].value, "P-2002");
}

#[test]
fn orm_o01_maps_order_items_orderer_and_device_spec() {
    let Command::Orders {
        patient,
        orders,
        clinic,
    } = mapped("orm_o01.hl7").command
    else {
        panic!()
    };
    assert_eq!(patient.identifiers[0].value, "P-1001");
    let clinic = clinic.expect("the sending facility names the clinic");
    assert_eq!(
        (clinic.system.as_str(), clinic.value.as_str()),
        (FACILITY_SYSTEM, "NORTHCLINIC")
    );
    assert_eq!(orders.len(), 1);
    let o = &orders[0];
    assert_eq!(o.placer.value, "PO-5001");
    assert_eq!(o.placer.system, "urn:carehub:hl7-aa:NORTHCLINIC");
    assert_eq!(o.control, "NW");
    assert_eq!(o.status, Some("active"));
    assert_eq!(o.priority, "routine");
    assert_eq!(o.due_date, NaiveDate::from_ymd_opt(2026, 12, 20));
    assert_eq!(o.items[0].code, "L3000");
    assert_eq!(o.items[0].code_system, "urn:carehub:hl7-cs:HCPCS");
    let orderer = o.orderer.as_ref().expect("orderer");
    assert_eq!(orderer.identifier.system, "urn:oid:1.2.826.0.1.9999.3");
    assert_eq!(orderer.name.family.as_deref(), Some("Doctor"));
    assert_eq!(o.note.as_deref(), Some("Left foot, flat arch; patient active runner"));
    assert_eq!(o.observations.len(), 2);
    assert_eq!(o.observations[0]["value"], "26.5");
    assert_eq!(o.observations[1]["value"], "carbon fibre");
}

#[test]
fn oml_o21_takes_priority_from_tq1() {
    let Command::Orders { orders, .. } = mapped("oml_o21.hl7").command else {
        panic!()
    };
    assert_eq!(orders[0].priority, "stat");
    assert_eq!(orders[0].items[0].code, "L1906");
}

#[test]
fn oru_r01_maps_each_obx_to_an_observation() {
    let Command::Results { results, .. } = mapped("oru_r01.hl7").command else {
        panic!()
    };
    assert_eq!(results.len(), 3);
    assert_eq!(results[0].value, ResultValue::Quantity("26.4".into()));
    assert_eq!(results[0].unit.as_deref(), Some("cm"));
    assert_eq!(results[0].reference_range.as_deref(), Some("26.0-27.0"));
    assert_eq!(results[0].status, "final");
    assert_eq!(results[1].value, ResultValue::String("Shell within tolerance".into()));
    assert_eq!(results[2].value, ResultValue::Coded("PASS".into()));
    assert_eq!(results[2].status, "preliminary");
    assert_eq!(results[0].filler.as_ref().map(|f| f.value.as_str()), Some("LAB-77"));
    assert!(
        results[0].result_key.ends_with("|FIT-LEN|"),
        "{}",
        results[0].result_key
    );
}

#[test]
fn siu_s12_maps_the_appointment() {
    let Command::Appointment { appointment, .. } = mapped("siu_s12.hl7").command else {
        panic!()
    };
    assert_eq!(appointment.placer.value, "APT-100");
    assert_eq!(appointment.status, "booked");
    assert_eq!(appointment.duration_minutes, Some(30));
    assert_eq!(appointment.reason_code.as_deref(), Some("FIT"));
    assert_eq!(appointment.location.as_deref(), Some("ROOM2"));
    assert_eq!(
        appointment.start_at.map(|t| t.to_rfc3339()),
        Some("2026-12-01T09:30:00+00:00".to_owned())
    );
}

#[test]
fn dft_p03_maps_charges_in_minor_units() {
    let Command::Charges { invoice, .. } = mapped("dft_p03.hl7").command else {
        panic!()
    };
    assert_eq!(invoice.number, "V-9001");
    assert_eq!(invoice.currency, "EUR");
    assert_eq!(invoice.lines.len(), 2);
    assert_eq!(invoice.lines[0].amount_minor, 24000);
    assert_eq!(invoice.lines[1].unit_price_minor, 4500);
    assert_eq!(invoice.lines[1].amount_minor, 9000);
    assert_eq!(invoice.lines[1].description, "Fitting");
}

#[test]
fn content_errors_name_the_field() {
    let text = fixture("adt_a01.hl7").replace("P-1001^^^NORTHCLINIC&1.2.826.0.1.9999.1&ISO^MR~SSN-555^^^NATION^SS", "");
    let msg = Message::parse(&text).expect("parses");
    let err = map(&msg).expect_err("no identifier");
    assert_eq!(err.code, 101);
    assert!(!err.reject);
    assert_eq!(err.location, Some(ErrorLocation::field("PID", 1, 3)));

    let text = fixture("adt_a01.hl7").replace("|19800102|", "|1980-01-02|");
    let msg = Message::parse(&text).expect("parses");
    let err = map(&msg).expect_err("bad date");
    assert_eq!((err.code, err.location), (102, Some(ErrorLocation::field("PID", 1, 7))));

    let text = fixture("oru_r01.hl7").replace("||26.4|cm", "||long|cm");
    let msg = Message::parse(&text).expect("parses");
    assert_eq!(map(&msg).expect_err("not a number").code, 102);
}

#[test]
fn unsupported_types_and_versions_are_rejections() {
    let text = fixture("adt_a01.hl7").replace("ADT^A01^ADT_A01", "MFN^M02");
    let err = map(&Message::parse(&text).expect("parses")).expect_err("type");
    assert_eq!((err.code, err.reject), (200, true));
    let text = fixture("adt_a01.hl7").replace("ADT^A01^ADT_A01", "ADT^A99");
    assert_eq!(
        map(&Message::parse(&text).expect("parses")).expect_err("event").code,
        201
    );
    let text = fixture("adt_a01.hl7").replace("|2.5.1|", "|3.0|");
    assert_eq!(
        map(&Message::parse(&text).expect("parses")).expect_err("version").code,
        203
    );
}

#[test]
fn timestamps_and_amounts() {
    assert_eq!(
        hl7_timestamp("20261125101500.1234+0100").map(|t| t.to_rfc3339()),
        Some("2026-11-25T09:15:00+00:00".to_owned())
    );
    assert_eq!(
        hl7_timestamp("202611251015").map(|t| t.to_rfc3339()),
        Some("2026-11-25T10:15:00+00:00".to_owned())
    );
    assert!(hl7_timestamp("2026-11-25").is_none());
    assert_eq!(minor_units("12.5"), Some(1250));
    assert_eq!(minor_units("-3"), Some(-300));
    assert_eq!(minor_units("0.125"), Some(13));
    assert_eq!(minor_units("1,00"), None);
}

/// Hardening items 4 and 12 (on 305005c a blank MSH-10 mapped, and a NUL
/// byte reached PostgreSQL after AA).
#[test]
fn a_blank_or_overlong_control_id_is_a_rejection_and_a_nul_byte_an_error_naming_only_where() {
    let text = fixture("adt_a01.hl7");
    for control_id in ["", "   "] {
        let bad = text.replace("ADT0001", control_id);
        let msg = Message::parse(&bad).expect("parses");
        let e = map(&msg).expect_err("refused");
        assert!(e.reject, "AR, not AE");
        assert_eq!((e.code, e.location), (101, Some(ErrorLocation::field("MSH", 1, 10))));
    }
    let long = text.replace("ADT0001", &"9".repeat(MAX_CONTROL_ID + 1));
    let e = map(&Message::parse(&long).expect("parses")).expect_err("refused");
    assert!(e.reject);
    assert_eq!(e.code, 102);
    let fits = text.replace("ADT0001", &"9".repeat(MAX_CONTROL_ID));
    assert!(map(&Message::parse(&fits).expect("parses")).is_ok());

    let nul = text.replace("Testpatient", "Test\u{0}patient");
    let e = map(&Message::parse(&nul).expect("parses")).expect_err("refused");
    assert!(!e.reject, "AE, not AR");
    assert_eq!(
        (e.code, e.location.clone()),
        (102, Some(ErrorLocation::field("PID", 1, 5)))
    );
    assert!(
        !e.reason.contains("Test"),
        "names the field, not its content: {}",
        e.reason
    );
    let in_msh = text.replace("ADT0001", "ADT\u{0}0001");
    let e = map(&Message::parse(&in_msh).expect("parses")).expect_err("refused");
    assert_eq!(e.location, Some(ErrorLocation::field("MSH", 1, 10)));
}

/// #14's bug: one rule for assigning authorities. A PID-3 whose CX.4 is a
/// bare universal id (`&ABC`, no type) was `ABC` in the canonical record and
/// `urn:carehub:hl7-aa:ABC` in the FHIR conversion (so, with load_fhir, one
/// identifier under two systems). Now both are the latter.
#[test]
fn a_bare_universal_id_gets_one_system_in_the_record_and_in_fhir() {
    let text = fixture("adt_a01.hl7").replace("P-1001^^^NORTHCLINIC&1.2.826.0.1.9999.1&ISO^MR", "P-1001^^^&ABC^MR");
    let msg = Message::parse(&text).expect("parses");
    let Command::UpsertPatient { patient, .. } = map(&msg).expect("maps").command else {
        panic!("an ADT")
    };
    let canonical = patient
        .identifiers
        .iter()
        .find(|i| i.value == "P-1001")
        .expect("PID-3")
        .system
        .clone();
    let converted = carehub_hl7_fhir::to_fhir(&text).expect("converts").bundle;
    let fhir_system = converted["entry"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| &e["resource"])
        .find(|r| r["resourceType"] == "Patient")
        .and_then(|p| p["identifier"].as_array())
        .and_then(|ids| ids.iter().find(|i| i["value"] == "P-1001"))
        .and_then(|i| i["system"].as_str())
        .expect("the Patient's PID-3")
        .to_owned();
    assert_eq!(canonical, "urn:carehub:hl7-aa:ABC");
    assert_eq!(fhir_system, canonical);
}
