//! HL7 v2 → FHIR by segment family: the people, places and events around
//! the patient, orders of every kind, charges, visits, appointments,
//! guarantors, and what is not mapped.

mod common;

use carehub_hl7_fhir::to_fhir;
use common::*;
use serde_json::{Value, json};

/// A segment with the given fields (field number, value), the others empty.
fn segment(name: &str, fields: &[(usize, &str)]) -> String {
    let last = fields.iter().map(|&(n, _)| n).max().unwrap_or(0);
    let mut f = vec![""; last + 1];
    f[0] = name;
    for &(n, v) in fields {
        f[n] = v;
    }
    f.join("|")
}

#[test]
fn people_places_and_events_around_the_patient_are_linked() {
    let adt = to_fhir(&fixture("adt_a01_full.hl7")).expect("ADT").bundle;
    // MSH-4 is part of MSH-22's organization.
    let header = resources(&adt, "MessageHeader")[0];
    let sender = target(&adt, &header["sender"]);
    // MSH-24/25: the network addresses are the endpoints; MSH-19 the Bundle's language.
    assert_eq!(header["source"]["endpoint"], "mllp://ehr.northclinic.example");
    assert_eq!(header["destination"][0]["endpoint"], "urn:oid:1.2.826.0.1.9999.9.1");
    assert_eq!(adt["language"], "de-DE");
    assert_eq!(target(&adt, &sender["partOf"])["name"], "North Health Group");
    // EVN: a Provenance of its own, recorded at EVN-2, by the operator, at the facility.
    let event = resources(&adt, "Provenance")
        .into_iter()
        .find(|p| p["reason"].is_array())
        .expect("the event's provenance");
    assert_eq!(event["recorded"], "2026-12-01T08:55:00+00:00");
    assert_eq!(codes(&event["reason"][0]), ["01"]);
    assert_eq!(target(&adt, &event["agent"][0]["who"])["name"][0]["family"], "Operator");
    // NK1 with the mother's identifier (PID-21), the contact person's name, SSN, employee number.
    let kin = resources(&adt, "RelatedPerson")
        .into_iter()
        .find(|r| r["name"][0]["family"] == "Testparent" && r["telecom"].is_array())
        .expect("next of kin");
    let ids: Vec<&str> = kin["identifier"]
        .as_array()
        .expect("ids")
        .iter()
        .filter_map(|i| i["value"].as_str())
        .collect();
    assert_eq!(ids, ["E-42", "SSN-777", "M-77"]);
    assert_eq!(kin["name"][1]["given"][0], "Samantha");
    assert_eq!(kin["gender"], "female");
    assert!(
        kin["relationship"]
            .as_array()
            .expect("relationships")
            .iter()
            .any(|r| codes(r) == ["MTH"])
    );
    // PV1-5 pre-admission number, PV1-37 discharged to, PV1-19 with its assigner.
    let visit = resources(&adt, "Encounter")[0];
    assert_eq!(visit["hospitalization"]["preAdmissionIdentifier"]["value"], "PRE-9");
    assert_eq!(target(&adt, &visit["hospitalization"]["destination"])["name"], "Home");
    assert!(visit["identifier"][0]["assigner"].is_object());
    // DB1-3 and IN2's Medicare/Medicaid numbers are the patient's.
    let patient = resources(&adt, "Patient")[0];
    // PID-15 the language spoken, PID-12 the county, PID-40 one more number.
    assert_eq!(
        patient["communication"],
        json!([{ "language": { "coding": [{ "code": "de", "display": "German", "system": "urn:ietf:bcp:47" }] }, "preferred": true }])
    );
    assert_eq!(patient["address"][0]["district"], "Northshire");
    assert!(
        patient["telecom"]
            .as_array()
            .expect("telecom")
            .contains(&json!({ "system": "phone", "value": "+49 170 5550100", "use": "home" }))
    );
    // PID-6, 10, 17, 22, 23, 26 in the extensions the v2-to-FHIR guide names.
    let extension = |url: &str| -> &Value {
        patient["extension"]
            .as_array()
            .expect("extensions")
            .iter()
            .find(|e| e["url"].as_str().is_some_and(|u| u.ends_with(url)))
            .unwrap_or_else(|| panic!("no {url}"))
    };
    assert_eq!(extension("patient-mothersMaidenName")["valueString"], "Maiden");
    let race = &extension("us-core-race")["extension"];
    assert_eq!(race[0]["url"], "ombCategory");
    assert_eq!(race[0]["valueCoding"]["code"], "2106-3");
    assert_eq!(race[0]["valueCoding"]["system"], "urn:oid:2.16.840.1.113883.6.238");
    assert_eq!(race[1]["valueCoding"]["code"], "2028-9");
    assert_eq!(race[2], json!({ "url": "text", "valueString": "White, Asian" }));
    assert_eq!(
        extension("us-core-ethnicity")["extension"][0]["valueCoding"]["code"],
        "2186-5"
    );
    assert_eq!(codes(&extension("patient-religion")["valueCodeableConcept"]), ["AGN"]);
    assert_eq!(extension("patient-birthPlace")["valueAddress"]["text"], "Hamburg");
    assert_eq!(
        codes(&extension("patient-citizenship")["extension"][0]["valueCodeableConcept"]),
        ["DEU"]
    );
    assert_eq!(
        codes(&extension("patient-nationality")["extension"][0]["valueCodeableConcept"]),
        ["DEU"]
    );
    // PV1: how the stay began and ended, and the patient type.
    let stay = &resources(&adt, "Encounter")[0];
    let h = &stay["hospitalization"];
    assert_eq!(codes(&h["reAdmission"]), ["R"]);
    assert_eq!(codes(&h["admitSource"]), ["7"]);
    assert_eq!(codes(&h["specialCourtesy"][0]), ["VIP"]);
    assert_eq!(codes(&h["dischargeDisposition"]), ["01"]);
    assert_eq!(codes(&h["dietPreference"][0]), ["D"]);
    assert_eq!(codes(&stay["type"][1]), ["OUT"]);
    // DG1-15: the diagnosis's rank in the visit.
    assert_eq!(stay["diagnosis"][0]["rank"], 2);
    assert_eq!(
        codes(&target(&adt, &stay["diagnosis"][0]["condition"])["code"]),
        ["M21.6"]
    );
    let pids: Vec<&str> = patient["identifier"]
        .as_array()
        .expect("ids")
        .iter()
        .filter_map(|i| i["value"].as_str())
        .collect();
    for id in ["P-2002", "DIS-5", "MEDICARE-1", "MEDICAID-1"] {
        assert!(pids.contains(&id), "{id} in {pids:?}");
    }
    // The insured (IN1-16..) with IN2-1/2, the employer holding the policy.
    let coverage = resources(&adt, "Coverage")[0];
    let insured = target(&adt, &coverage["subscriber"]);
    assert_eq!(insured["gender"], "female");
    assert!(
        insured["identifier"]
            .as_array()
            .expect("ids")
            .iter()
            .any(|i| i["value"] == "SSN-777")
    );
    assert_eq!(target(&adt, &coverage["policyHolder"])["name"], "Testparent employer");
    // IN1-5..7: the insurer's address and whom to call there.
    let insurer = target(&adt, &coverage["payor"][0]);
    assert_eq!(insurer["address"][0]["line"][0], "9 Payer Plaza");
    assert_eq!(insurer["contact"][0]["name"]["family"], "Claims");
    assert_eq!(insurer["contact"][0]["telecom"][0]["value"], "555 0100");
    // PDA-2 and ACC-3 are places; PDA-4 dates the death.
    let places: Vec<&str> = resources(&adt, "Location")
        .iter()
        .filter_map(|l| l["name"].as_str())
        .collect();
    assert!(places.contains(&"Sports hall"), "{places:?}");
    assert_eq!(patient["deceasedDateTime"], "2026-12-01");
    // RF1: the referral is a ServiceRequest of its own.
    let referral = resources(&adt, "ServiceRequest")[0];
    assert_eq!(referral["identifier"][0]["value"], "REF-1");
    assert_eq!(referral["identifier"][1]["value"], "EXT-9");
    assert_eq!(referral["status"], "active");
    assert_eq!(referral["priority"], "routine");
    // A referral in SNOMED CT's words, then the sender's referral type.
    assert_eq!(codes(&referral["category"][0]), ["3457005"]);
    assert_eq!(codes(&referral["category"][1]), ["Med"]);
    assert_eq!(codes(&referral["reasonCode"][0]), ["GAIT"]);
    assert_eq!(referral["reasonCode"][0]["text"], "Walks with a limp");
    assert_eq!(
        referral["occurrencePeriod"],
        json!({ "start": "2026-11-30", "end": "2027-05-30" })
    );
    assert_eq!(referral["authoredOn"], "2026-11-29");
    // RF1-19 and RF1-20: who is authorized to do what is referred.
    assert_eq!(target(&adt, &referral["performer"][0])["name"], "ORTHOLAB Fitting");
    assert_eq!(target(&adt, &referral["performer"][1])["name"][0]["family"], "Maker");
    assert_eq!(referral["note"][0]["text"], "Bring current orthosis");
    assert_eq!(
        referral["subject"]["reference"],
        format!("Patient/{}", patient["id"].as_str().unwrap_or(""))
    );
}

#[test]
fn orders_carry_participants_reasons_studies_and_accounts() {
    let orm = to_fhir(&fixture("orm_o01_full.hl7")).expect("ORM").bundle;
    let order = resources(&orm, "ServiceRequest")[0];
    assert_eq!(order["requisition"]["value"], "GRP-6");
    assert_eq!(codes(&target(&orm, &order["reasonReference"][0])["code"]), ["M21.4"]);
    let supporting: Vec<&str> = order["supportingInfo"]
        .as_array()
        .expect("supportingInfo")
        .iter()
        .map(|r| target(&orm, r)["resourceType"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(supporting, ["Account", "ResearchStudy", "Account"]);
    // ORC-8: the parent order, known by its placer and filler numbers.
    let parent = target(&orm, &order["basedOn"][0]);
    let numbers: Vec<(&str, &str)> = parent["identifier"]
        .as_array()
        .expect("ids")
        .iter()
        .map(|i| {
            (
                i["value"].as_str().unwrap_or(""),
                i["type"]["coding"][0]["code"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(numbers, [("PO-5000", "PLAC"), ("LAB-5000", "FILL")]);
    // ORC-21: the ordering facility is the requester's organization.
    let requester = target(&orm, &order["requester"]);
    assert_eq!(target(&orm, &requester["organization"])["name"], "North Clinic");
    // OBR-7 without SPM: the specimen collected then.
    let specimen = target(&orm, &order["specimen"][0]);
    // (a time without an offset is no FHIR dateTime: the date is kept)
    assert_eq!(specimen["collection"]["collectedDateTime"], "2026-12-01");
    // PRT: a role with its organization, managing the place, and the device.
    let role = resources(&orm, "PractitionerRole")
        .into_iter()
        .find(|r| r["location"].is_array())
        .expect("the PRT role");
    assert_eq!(codes(&role["code"][0]), ["OP"]);
    let place = target(&orm, &role["location"][0]);
    assert_eq!(place["managingOrganization"], role["organization"]);
    // PRT-10 the device, PRT-16..20 its label (UDI, dates, lot, serial number).
    let scanner = resources(&orm, "Device")
        .into_iter()
        .find(|d| d["identifier"][0]["value"] == "SCANNER-1")
        .expect("PRT-10's device");
    assert_eq!(
        scanner["udiCarrier"][0],
        json!({ "deviceIdentifier": "(01)00643169001763", "issuer": "urn:oid:2.16.840.1.113883.3.3719" })
    );
    assert_eq!(scanner["manufactureDate"], "2025-04-01");
    assert_eq!(scanner["expirationDate"], "2030-07-12");
    assert_eq!(scanner["lotNumber"], "LOT-7");
    assert_eq!(scanner["serialNumber"], "SN-42");

    let oru = to_fhir(&fixture("oru_r01_full.hl7")).expect("ORU").bundle;
    let report = resources(&oru, "DiagnosticReport")[0];
    let interpreter = target(&oru, &report["resultsInterpreter"][0]);
    assert_eq!(codes(&interpreter["code"][0]), ["PI"]);
    assert_eq!(
        target(&oru, &interpreter["practitioner"])["name"][0]["family"],
        "Interpreter"
    );
    let technician = resources(&oru, "PractitionerRole")
        .into_iter()
        .find(|r| codes(&r["code"][0]) == ["TN"])
        .expect("OBR-34's technician");
    assert_eq!(technician["period"]["start"], "2026-12-01");
    assert_eq!(target(&oru, &technician["location"][0])["name"], "R2");
    let observation = resources(&oru, "Observation")[0];
    assert_eq!(
        target(&oru, &observation["note"][0]["authorReference"])["name"][0]["family"],
        "Noter"
    );
    // OBR-29: the parent order, known by the same numbers as in ORC-8.
    let oru_order = target(&oru, &report["basedOn"][0]);
    let parent = target(&oru, &oru_order["basedOn"][0]);
    assert_eq!(parent["identifier"][1]["value"], "LAB-5000");
    let orm = to_fhir(&fixture("orm_o01_full.hl7")).expect("ORM").bundle;
    let orm_parent = resources(&orm, "ServiceRequest")
        .into_iter()
        .find(|s| s["identifier"][0]["value"] == "PO-5000")
        .expect("ORC-8's parent");
    assert_eq!(parent["identifier"], orm_parent["identifier"]);
    // An ED result is a document: a report presented in it, based on the order.
    let document = resources(&oru, "DiagnosticReport")
        .into_iter()
        .find(|r| r["presentedForm"].is_array())
        .expect("OBX-2 ED's report");
    assert_eq!(codes(&document["code"]), ["FIT-PDF"]);
    assert_eq!(
        document["presentedForm"][0],
        json!({ "contentType": "application/pdf", "data": "JVBERi0xLjQK" })
    );
    assert_eq!(document["basedOn"], report["basedOn"]);
    assert_eq!(target(&oru, &document["performer"][0])["name"], "Ortho Lab");
    assert!(
        !resources(&oru, "Observation")
            .iter()
            .any(|o| codes(&o["code"]) == ["FIT-PDF"])
    );
    // OBX-19: when the analysis was done; OBX-24: where the lab is.
    assert_eq!(
        observation["extension"][0],
        json!({ "url": "http://hl7.org/fhir/StructureDefinition/observation-analysis-date-time", "valueDateTime": "2026-12-01T14:30:00+01:00" })
    );
    // OBX-25 directs OBX-23, the performing organization.
    let director = observation["performer"]
        .as_array()
        .expect("performers")
        .iter()
        .map(|p| target(&oru, p))
        .find(|r| r["resourceType"] == "PractitionerRole" && codes(&r["code"][0]) == ["MDIR"])
        .expect("OBX-25's medical director");
    assert_eq!(target(&oru, &director["organization"])["name"], "Ortho Lab");
    assert_eq!(
        target(&oru, &director["organization"])["address"][0]["city"],
        "Testville"
    );
    assert_eq!(target(&oru, &director["practitioner"])["name"][0]["family"], "Director");
    let specimen = resources(&oru, "Specimen")
        .into_iter()
        .find(|s| s["parent"].is_array())
        .expect("SPM's specimen");
    let sids: Vec<&str> = specimen["identifier"]
        .as_array()
        .expect("ids")
        .iter()
        .filter_map(|i| i["value"].as_str())
        .collect();
    assert_eq!(sids, ["SP-1", "SP-1F", "SHIP-1"]);
    assert_eq!(specimen["accessionIdentifier"]["value"], "ACC-77");
    assert_eq!(target(&oru, &specimen["parent"][0])["identifier"][0]["value"], "SP-0");
    assert_eq!(
        target(&oru, &specimen["collection"]["collector"])["name"][0]["family"],
        "Collector"
    );
}

#[test]
fn drug_diet_and_supply_orders_are_their_own_requests() {
    let orm = to_fhir(&fixture("orm_o01_supplies.hl7")).expect("ORM").bundle;
    // No ServiceRequest: each ORC's group says what it orders.
    assert!(resources(&orm, "ServiceRequest").is_empty());
    let drug = resources(&orm, "MedicationRequest")[0];
    assert_eq!(drug["identifier"][0]["value"], "RX-1");
    assert_eq!(
        codes(&target(&orm, &drug["medicationReference"])["code"]),
        ["00000-1111-22"]
    );
    let dosage = &drug["dosageInstruction"][0];
    assert_eq!(dosage["doseAndRate"][0]["doseQuantity"]["value"], 1);
    assert_eq!(dosage["patientInstruction"], "Take with food");
    assert_eq!(dosage["timing"]["repeat"]["boundsPeriod"]["end"], "2026-12-10");
    assert_eq!(drug["dispenseRequest"]["quantity"]["value"], 20);
    assert_eq!(drug["dispenseRequest"]["numberOfRepeatsAllowed"], 1);
    assert_eq!(drug["priority"], "routine");
    let diet = resources(&orm, "NutritionOrder")[0];
    assert_eq!(codes(&diet["oralDiet"]["type"][0]), ["LF"]);
    assert_eq!(diet["oralDiet"]["instruction"], "No dairy");
    assert_eq!(codes(&target(&orm, &diet["allergyIntolerance"][0])["code"]), ["LAC"]);
    let supply = resources(&orm, "SupplyRequest")[0];
    assert_eq!(codes(&supply["itemCodeableConcept"]), ["FOAM-3"]);
    assert_eq!(supply["quantity"]["value"], 2);
    assert_eq!(target(&orm, &supply["deliverFrom"])["name"], "Orthotics department");
    assert_eq!(target(&orm, &supply["supplier"][0])["name"], "Insole Supplies Ltd");
    assert_eq!(supply["identifier"][1]["value"], "GRP-9");
}

#[test]
fn a_charge_names_what_it_is_for() {
    let dft = to_fhir(&fixture("dft_p03_full.hl7")).expect("DFT").bundle;
    let charge = resources(&dft, "ChargeItem")[0];
    assert_eq!(target(&dft, &charge["costCenter"])["name"], "Orthotics department");
    assert_eq!(target(&dft, &charge["enterer"])["name"][0]["family"], "Enterer");
    assert_eq!(target(&dft, &charge["performingOrganization"])["name"], "Ortho Lab");
    assert_eq!(target(&dft, &charge["requestingOrganization"])["name"], "North Clinic");
    let services: Vec<&Value> = charge["service"]
        .as_array()
        .expect("services")
        .iter()
        .map(|r| target(&dft, r))
        .collect();
    assert_eq!(codes(&services[0]["code"]), ["97760"]);
    assert_eq!(codes(&services[1]["medicationCodeableConcept"]), ["00000-0000-00"]);
    assert_eq!(services[1]["quantity"]["value"], 2);
    assert_eq!(services[1]["authorizingPrescription"][0]["identifier"]["value"], "RX-1");
    let device = target(&dft, &charge["productReference"]);
    assert_eq!(device["modelNumber"], "MODEL-5");
    assert!(charge["account"].is_array());
    // PR1-6 category, PR1-23 place, PR1-25 parent procedure.
    let procedure = resources(&dft, "Procedure")
        .into_iter()
        .find(|p| p["partOf"].is_array())
        .expect("PR1's procedure");
    assert_eq!(codes(&procedure["category"]), ["T"]);
    assert_eq!(
        target(&dft, &procedure["partOf"][0])["identifier"][0]["value"],
        "PR-PARENT-1"
    );
    assert_eq!(target(&dft, &procedure["location"])["name"], "R12");
    // A ROL in the procedure's group performed it, in its role.
    let performer = &procedure["performer"][0];
    assert_eq!(codes(&performer["function"]), ["AT"]);
    assert_eq!(
        target(&dft, &target(&dft, &performer["actor"])["practitioner"])["name"][0]["family"],
        "Cutter"
    );
    // A self-insured patient: IN1-49 is the patient's.
    let patient = resources(&dft, "Patient")[0];
    assert!(
        patient["identifier"]
            .as_array()
            .expect("ids")
            .iter()
            .any(|i| i["value"] == "INS-1001")
    );
}

#[test]
fn a_prior_visit_is_a_visit_of_its_own_not_merged_into_the_message_s() {
    // OML^O21 with a prior result: its PV1 (visit V-0) is not the message's (V-1).
    let text = [
        "MSH|^~\\&|LIS|NORTHCLINIC|LAB|ORTHOLAB|20261201100000||OML^O21^OML_O21|OML0042|P|2.5.1",
        "PID|1||P-1001^^^NORTHCLINIC^MR||Testpatient^Alex||19800102|F",
        "PV1|1|O|WARD1^R1^^NORTHCLINIC||||||||||||||||V-1^^^NORTHCLINIC^VN",
        "PV2|||GAIT^Gait review^L",
        "ORC|NW|PO-9001^NORTHCLINIC",
        "OBR|1|PO-9001^NORTHCLINIC||L3000^Foot orthosis, custom^HCPCS",
        "PV1|1|P|WARD2^R7^^NORTHCLINIC||||||||||||||||V-0^^^NORTHCLINIC^VN",
        "PV2|||FALL^Fall^L",
        "PV1|1|O|WARD1^R1^^NORTHCLINIC||||||||||||||||V-1^^^NORTHCLINIC^VN",
    ]
    .join("\r");
    let bundle = to_fhir(&text).expect("converts").bundle;
    let visits = resources(&bundle, "Encounter");
    assert_eq!(visits.len(), 2, "V-1 named twice is one visit, V-0 another");
    let (first, prior) = (visits[0], visits[1]);
    assert_eq!(first["identifier"][0]["value"], "V-1");
    assert_eq!(prior["identifier"][0]["value"], "V-0");
    assert_eq!(prior["class"]["code"], "PRENC");
    // Each PV2 goes with the PV1 before it; the order is the message's visit's.
    assert_eq!(codes(&first["reasonCode"][0]), ["GAIT"]);
    assert_eq!(codes(&prior["reasonCode"][0]), ["FALL"]);
    let order = resources(&bundle, "ServiceRequest")[0];
    assert_eq!(
        order["encounter"]["reference"],
        format!("Encounter/{}", first["id"].as_str().unwrap_or(""))
    );
}

#[test]
fn a_tq1_after_sch_times_the_appointment_and_ntes_after_its_resources_are_kept() {
    // SIU^S12 v2.6+: TQ1 gives the timing that SCH-11 (deprecated) gave.
    let text = [
        "MSH|^~\\&|SCHED|NORTHCLINIC|CAREHUB|ORTHOLAB|20261125130000||SIU^S12^SIU_S12|SIU0042|P|2.6",
        "SCH|APT-7^NORTHCLINIC|APT-F-7^ORTHOLAB|||||FIT^Fitting appointment^L|FITTING|30|min|^^30^202612010930+0100^202612011000+0100",
        "TQ1|||||||202612011000+0100|202612011030+0100",
        "NTE|1||Bring the old orthosis",
        "PID|1||P-1001^^^NORTHCLINIC^MR||Testpatient^Alex||19800102|F",
        "RGS|1",
        "AIS|1||FIT^Fitting^L",
        "NTE|1||Cast first",
        "AIL|1||ROOM2^^^NORTHCLINIC",
        "NTE|1||Room with parallel bars",
    ]
    .join("\r");
    let conversion = to_fhir(&text).expect("converts");
    let visit = resources(&conversion.bundle, "Appointment")[0];
    assert_eq!(visit["start"], "2026-12-01T10:00:00+01:00");
    assert_eq!(visit["end"], "2026-12-01T10:30:00+01:00");
    assert!(!conversion.unmapped.iter().any(|u| u.segment == "TQ1"));
    // NTE after SCH or an AIL: the appointment's comment; after AIS: its service's note.
    assert_eq!(visit["comment"], "Bring the old orthosis\n\nRoom with parallel bars");
    let service = target(&conversion.bundle, &visit["basedOn"][0]);
    assert_eq!(service["note"][0]["text"], "Cast first");
    assert!(!conversion.unmapped.iter().any(|u| u.segment == "NTE"));
}

#[test]
fn a_patient_who_is_an_animal_has_its_species_and_breed() {
    let pid = segment(
        "PID",
        &[
            (1, "1"),
            (3, "PET-7^^^VETCLINIC^MR"),
            (5, "Rex"),
            (35, "448771007^Canis lupus subsp. familiaris^SCT"),
            (36, "58108001^Golden retriever^SCT"),
        ],
    );
    let text = format!("MSH|^~\\&|VET|VETCLINIC|CAREHUB|ORTHOLAB|20261201100000||ADT^A04^ADT_A01|VET0001|P|2.8\r{pid}");
    let bundle = to_fhir(&text).expect("converts").bundle;
    let patient = resources(&bundle, "Patient")[0];
    let animal = &patient["extension"][0];
    assert_eq!(animal["url"], "http://hl7.org/fhir/StructureDefinition/patient-animal");
    assert_eq!(animal["extension"][0]["url"], "species");
    assert_eq!(codes(&animal["extension"][0]["valueCodeableConcept"]), ["448771007"]);
    assert_eq!(codes(&animal["extension"][1]["valueCodeableConcept"]), ["58108001"]);
}

#[test]
fn a_guarantor_is_the_patient_a_relative_or_an_organization() {
    let gt1 = |fields: &[(usize, &str)]| segment("GT1", fields);
    let text = [
        "MSH|^~\\&|EHR|NORTHCLINIC|CAREHUB|ORTHOLAB|20261201100000||ADT^A04^ADT_A01|ADT0042|P|2.5.1".to_owned(),
        "PID|1||P-1001^^^NORTHCLINIC^MR||Testpatient^Alex||19800102|F||||||||||ACC-1^^^NORTHCLINIC^AN".to_owned(),
        gt1(&[(1, "1"), (2, "G-1^^^NORTHCLINIC"), (11, "SEL^Self^HL70063")]),
        gt1(&[(1, "2"), (3, "Payer^Paula"), (9, "F"), (11, "MTH^Mother^HL70063")]),
        gt1(&[(1, "3"), (11, "EMR^Employer^HL70063"), (21, "Acme Corp")]),
    ]
    .join("\r");
    let bundle = to_fhir(&text).expect("converts").bundle;
    let patient = resources(&bundle, "Patient")[0];
    let account = resources(&bundle, "Account")[0];
    let parties: Vec<&Value> = account["guarantor"]
        .as_array()
        .expect("guarantors")
        .iter()
        .map(|g| target(&bundle, &g["party"]))
        .collect();
    // GT1-11 SEL: the patient, whose numbers the guarantor's are.
    assert_eq!(parties[0]["id"], patient["id"]);
    assert!(
        patient["identifier"]
            .as_array()
            .expect("ids")
            .iter()
            .any(|i| i["value"] == "G-1")
    );
    // A person: a RelatedPerson in the relationship GT1-11 says.
    assert_eq!(parties[1]["resourceType"], "RelatedPerson");
    assert_eq!(codes(&parties[1]["relationship"][0]), ["MTH"]);
    // No person, an organization (GT1-21): the organization.
    assert_eq!(parties[2]["name"], "Acme Corp");
    assert_eq!(resources(&bundle, "RelatedPerson").len(), 1);
}

#[test]
fn an_encoded_pharmacy_order_is_a_medication_request() {
    // RDE^O11: ORC + RXE (+ RXR, the route).
    let rxe = segment(
        "RXE",
        &[
            (2, "0143963401^Nicardipine 40 mg/200 mL^NDC"),
            (3, "5"),
            (4, "15"),
            (5, "mg/h^mg/h^UCUM"),
            (6, "BAG^Bag^L"),
            (7, "^Titrate to BP below 180"),
            (10, "200"),
            (11, "mL^mL^UCUM"),
            (12, "2"),
            (23, "25"),
            (24, "mL/h^mL/h^UCUM"),
        ],
    );
    let text = [
        "MSH|^~\\&|PHARM|NORTHCLINIC|CAREHUB|ORTHOLAB|20261201100000||RDE^O11^RDE_O11|RDE0042|P|2.5.1".to_owned(),
        "PID|1||P-1001^^^NORTHCLINIC^MR||Testpatient^Alex||19800102|F".to_owned(),
        "ORC|NW|RX-1^NORTHCLINIC".to_owned(),
        rxe,
        "RXR|IV^Intravenous^HL70162|LA^Left arm^HL70163".to_owned(),
    ]
    .join("\r");
    let conversion = to_fhir(&text).expect("converts");
    let bundle = &conversion.bundle;
    let request = resources(bundle, "MedicationRequest")[0];
    assert_eq!(request["identifier"][0]["value"], "RX-1");
    let medication = target(bundle, &request["medicationReference"]);
    assert_eq!(codes(&medication["code"]), ["0143963401"]);
    assert_eq!(codes(&medication["form"]), ["BAG"]);
    let dosage = &request["dosageInstruction"][0];
    assert_eq!(dosage["text"], "Titrate to BP below 180");
    let dose = &dosage["doseAndRate"][0];
    assert_eq!(dose["doseRange"]["low"]["value"], 5);
    assert_eq!(dose["doseRange"]["high"]["value"], 15);
    assert_eq!(dose["rateQuantity"]["value"], 25);
    assert_eq!(codes(&dosage["route"]), ["IV"]);
    assert_eq!(codes(&dosage["site"]), ["LA"]);
    assert_eq!(request["dispenseRequest"]["quantity"]["value"], 200);
    assert_eq!(request["dispenseRequest"]["numberOfRepeatsAllowed"], 2);
    assert!(
        !conversion
            .unmapped
            .iter()
            .any(|u| u.segment == "RXE" || u.segment == "RXR")
    );
}

#[test]
fn what_is_not_mapped_is_reported_z_segments_included() {
    let c = to_fhir(&fixture("adt_a04_z.hl7")).expect("converts");
    let said: Vec<String> = c.unmapped.iter().map(ToString::to_string).collect();
    // The Z-segment's fields, and a PID field no mapping takes (PID-37).
    assert!(said.contains(&"ZPI-1 (segment 5)".to_owned()), "{said:?}");
    assert!(said.contains(&"ZPI-2 (segment 5)".to_owned()), "{said:?}");
    assert!(said.contains(&"ZPI-3 (segment 5)".to_owned()), "{said:?}");
    assert!(said.contains(&"PID-37 (segment 3)".to_owned()), "{said:?}");
    // What was mapped is not reported.
    for mapped in ["PID-3 ", "PID-5 ", "PID-7 ", "MSH-9 ", "MSH-10 ", "PV1-3 "] {
        assert!(!said.iter().any(|s| s.starts_with(mapped)), "{mapped}: {said:?}");
    }
    // MSH-11 (processing id) has no place in FHIR: said, not dropped.
    assert!(said.contains(&"MSH-11 (segment 1)".to_owned()), "{said:?}");
    assert_eq!(said.len(), 5, "{said:?}");
}
