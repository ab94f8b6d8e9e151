//! FHIR R4 → canonical: where a Patient or ServiceRequest an EHR wrote over
//! FHIR becomes the patient or order the rest of the hub works from. The
//! counterpart of the HL7 pipeline's `map.rs` (PID → patient, ORC/OBR → order).
//!
//! | FHIR element                                   | canonical                                  |
//! |------------------------------------------------|--------------------------------------------|
//! | Patient.identifier (system, value, type)       | patient_identifier                         |
//! | Patient.name (official, else first)            | family_name, given_names                   |
//! | Patient.gender, birthDate (full dates)         | sex, birth_date                            |
//! | Patient.telecom phone / email (first)          | phone, email                               |
//! | Patient.address (first)                        | address (JSON)                             |
//! | Patient.managingOrganization.identifier        | managing_organization_id (must exist)      |
//! | ServiceRequest.identifier PLAC (else first)    | placer_system, placer_number               |
//! | ServiceRequest.identifier FILL                 | filler_system, filler_number               |
//! | ServiceRequest.status, priority                | status, priority                           |
//! | ServiceRequest.code.coding                     | order_item (one per coding)                |
//! | ServiceRequest.occurrence[x] (date, period end)| due_date                                   |
//! | ServiceRequest.note.text                       | note                                       |
//! | the writing client (token client_id)           | clinic (organization `urn:carehub:fhir-client`) |
//!
//! A resource without an identifier is known by its FHIR id
//! (`urn:carehub:fhir-id:<type>`).

use carehub_schema::model::{Identifier, Sex};
use carehub_schema::records::{ItemData, OrderData};
use carehub_schema::repo::{HumanName, PatientData};
use chrono::NaiveDate;
use serde_json::Value;

/// Identifier system of the clinics EHRs write for: their client id.
pub const CLIENT_SYSTEM: &str = "urn:carehub:fhir-client";

fn id_system(resource_type: &str) -> String {
    format!("urn:carehub:fhir-id:{resource_type}")
}

fn type_code(identifier: &Value) -> Option<String> {
    identifier["type"]["coding"]
        .as_array()?
        .iter()
        .find_map(|c| c["code"].as_str())
        .map(str::to_owned)
}

fn identifiers(v: &Value) -> Vec<Identifier> {
    v["identifier"]
        .as_array()
        .map(|ids| {
            ids.iter()
                .filter_map(|i| {
                    Some(Identifier {
                        system: i["system"].as_str().unwrap_or("").to_owned(),
                        value: i["value"].as_str()?.to_owned(),
                        type_code: type_code(i),
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

fn text(v: &Value) -> Option<String> {
    v.as_str().map(str::to_owned)
}

/// A Patient → what the hub keeps of it.
pub fn patient_data(id: &str, v: &Value) -> PatientData {
    let mut ids = identifiers(v);
    if ids.is_empty() {
        ids.push(Identifier {
            system: id_system("Patient"),
            value: id.to_owned(),
            type_code: None,
        });
    }
    let names = v["name"].as_array().cloned().unwrap_or_default();
    let name = names
        .iter()
        .find(|n| n["use"] == "official")
        .or(names.first())
        .map(|n| HumanName {
            family: text(&n["family"]),
            given: n["given"]
                .as_array()
                .map(|g| g.iter().filter_map(text).collect())
                .unwrap_or_default(),
        });
    let telecom = |system: &str| {
        v["telecom"]
            .as_array()
            .and_then(|t| t.iter().find(|c| c["system"] == system))
            .and_then(|c| text(&c["value"]))
    };
    PatientData {
        identifiers: ids,
        name,
        birth_date: v["birthDate"]
            .as_str()
            .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok()),
        sex: match v["gender"].as_str() {
            Some("male") => Some(Sex::Male),
            Some("female") => Some(Sex::Female),
            Some("other") => Some(Sex::Other),
            Some("unknown") => Some(Sex::Unknown),
            _ => None,
        },
        phone: telecom("phone"),
        email: telecom("email"),
        address: v["address"].as_array().and_then(|a| a.first()).cloned(),
        managing_organization: v["managingOrganization"]["identifier"]["value"]
            .as_str()
            .map(|value| Identifier {
                system: v["managingOrganization"]["identifier"]["system"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned(),
                value: value.to_owned(),
                type_code: None,
            }),
    }
}

/// The order number a ServiceRequest is known by: PLAC, else its first
/// identifier, else its FHIR id.
pub fn placer(id: &str, v: &Value) -> Identifier {
    let ids = identifiers(v);
    ids.iter()
        .find(|i| i.type_code.as_deref() == Some("PLAC"))
        .or(ids.iter().find(|i| i.type_code.as_deref() != Some("FILL")))
        .cloned()
        .unwrap_or(Identifier {
            system: id_system("ServiceRequest"),
            value: id.to_owned(),
            type_code: None,
        })
}

/// A ServiceRequest → an order change. `exists`: whether the hub has the
/// order already (new: order control NW; else XO, a change).
pub fn order_data(id: &str, v: &Value, exists: bool) -> OrderData {
    let status = match v["status"].as_str() {
        Some("draft") => "draft",
        Some("on-hold") => "on-hold",
        Some("revoked") => "revoked",
        Some("completed") => "completed",
        Some("entered-in-error") => "entered-in-error",
        _ => "active",
    };
    let priority = match v["priority"].as_str() {
        Some("urgent") => "urgent",
        Some("asap") => "asap",
        Some("stat") => "stat",
        _ => "routine",
    };
    let date = |s: &str| NaiveDate::parse_from_str(s.get(..10).unwrap_or(s), "%Y-%m-%d").ok();
    let due_date = v["occurrenceDateTime"]
        .as_str()
        .and_then(date)
        .or_else(|| v["occurrencePeriod"]["end"].as_str().and_then(date));
    let items = v["code"]["coding"]
        .as_array()
        .map(|c| {
            c.iter()
                .filter_map(|coding| {
                    Some(ItemData {
                        code_system: coding["system"].as_str().unwrap_or("").to_owned(),
                        code: coding["code"].as_str()?.to_owned(),
                        display: text(&coding["display"]),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let notes: Vec<String> = v["note"]
        .as_array()
        .map(|n| n.iter().filter_map(|a| text(&a["text"])).collect())
        .unwrap_or_default();
    OrderData {
        placer: placer(id, v),
        filler: identifiers(v)
            .into_iter()
            .find(|i| i.type_code.as_deref() == Some("FILL")),
        control: if exists { "XO" } else { "NW" }.to_owned(),
        status: Some(status),
        priority,
        due_date,
        orderer: None,
        items,
        note: (!notes.is_empty()).then(|| notes.join("\n")),
        observations: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn patient_elements_become_columns() {
        let p = json!({
            "resourceType": "Patient",
            "identifier": [{ "system": "urn:mrn", "value": "M1", "type": { "coding": [{ "code": "MR" }] } }],
            "name": [{ "use": "usual", "given": ["Al"] }, { "use": "official", "family": "Doe", "given": ["Alex", "J"] }],
            "gender": "female",
            "birthDate": "1980-02-29",
            "telecom": [{ "system": "email", "value": "a@b.c" }, { "system": "phone", "value": "555" }],
        });
        let d = patient_data("x", &p);
        assert_eq!(d.identifiers[0].type_code.as_deref(), Some("MR"));
        assert_eq!(d.name.as_ref().and_then(|n| n.family.as_deref()), Some("Doe"));
        assert_eq!(d.name.map(|n| n.given), Some(vec!["Alex".to_owned(), "J".to_owned()]));
        assert_eq!(d.sex, Some(Sex::Female));
        assert_eq!(d.birth_date, NaiveDate::from_ymd_opt(1980, 2, 29));
        assert_eq!((d.phone.as_deref(), d.email.as_deref()), (Some("555"), Some("a@b.c")));
        let bare = patient_data("pat-1", &json!({ "resourceType": "Patient", "birthDate": "1980" }));
        assert_eq!(bare.identifiers[0].value, "pat-1");
        assert_eq!(bare.birth_date, None);
    }

    #[test]
    fn service_request_elements_become_an_order() {
        let sr = json!({
            "resourceType": "ServiceRequest",
            "identifier": [
                { "system": "urn:filler", "value": "F9", "type": { "coding": [{ "code": "FILL" }] } },
                { "system": "urn:placer", "value": "P7", "type": { "coding": [{ "code": "PLAC" }] } },
            ],
            "status": "active",
            "priority": "urgent",
            "code": { "coding": [{ "system": "urn:devices", "code": "AFO", "display": "Ankle-foot orthosis" }] },
            "occurrenceDateTime": "2026-12-01T10:00:00Z",
            "note": [{ "text": "left" }],
        });
        let o = order_data("x", &sr, false);
        assert_eq!(o.placer.value, "P7");
        assert_eq!(o.filler.map(|f| f.value).as_deref(), Some("F9"));
        assert_eq!(
            (o.control.as_str(), o.status, o.priority),
            ("NW", Some("active"), "urgent")
        );
        assert_eq!(o.items[0].code, "AFO");
        assert_eq!(o.due_date, NaiveDate::from_ymd_opt(2026, 12, 1));
        assert_eq!(o.note.as_deref(), Some("left"));
        let changed = order_data("x", &json!({ "status": "revoked" }), true);
        assert_eq!((changed.control.as_str(), changed.status), ("XO", Some("revoked")));
        assert_eq!(changed.placer.system, "urn:carehub:fhir-id:ServiceRequest");
    }
}
