//! FHIR R4 → HL7 v2.5.1, so that results and status reach clinics that only
//! speak v2: ADT^A08 from a Patient, ORU^R01 from a DiagnosticReport and its
//! Observations, ORM^O01 / OML^O21 order status from a ServiceRequest (and
//! its Task). The inverse of the v2 → FHIR maps, field for field, so that a
//! round trip v2 → FHIR → v2 keeps what was mapped.
//!
//! The input is a Bundle (a `collection`, `batch`, or what `to_fhir` gives);
//! references between its resources (`Patient/<id>`) are followed inside it.

use carehub_hl7::codec::identity::authority_of;
use carehub_hl7::codec::{Delimiters, FieldValue, MessageBuilder, SegmentBuilder};
use serde_json::{Value, json};

/// The v2 message to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum V2Message {
    AdtA08,
    OruR01,
    OrmO01,
    OmlO21,
}

impl V2Message {
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_uppercase().replace('^', "_").as_str() {
            "ADT_A08" => Some(V2Message::AdtA08),
            "ORU_R01" => Some(V2Message::OruR01),
            "ORM_O01" => Some(V2Message::OrmO01),
            "OML_O21" => Some(V2Message::OmlO21),
            _ => None,
        }
    }
}

/// MSH values the resources do not carry.
#[derive(Debug, Clone)]
pub struct Header {
    pub sending_application: String,
    pub sending_facility: String,
    pub receiving_application: String,
    pub receiving_facility: String,
    pub control_id: String,
    /// HL7 DTM of the message.
    pub timestamp: String,
}

#[derive(Debug, thiserror::Error)]
pub enum FromFhirError {
    #[error("the Bundle has no {0}")]
    Missing(&'static str),
}

/// Builds `kind` from the resources of `bundle`.
pub fn from_fhir(bundle: &Value, kind: V2Message, header: &Header) -> Result<String, FromFhirError> {
    let b = Resources::of(bundle);
    let (msh9, event) = match kind {
        V2Message::AdtA08 => (["ADT", "A08", "ADT_A01"], Some("A08")),
        V2Message::OruR01 => (["ORU", "R01", "ORU_R01"], None),
        V2Message::OrmO01 => (["ORM", "O01", "ORM_O01"], None),
        V2Message::OmlO21 => (["OML", "O21", "OML_O21"], None),
    };
    let mut out = MessageBuilder::new(Delimiters::default());
    out.push(
        SegmentBuilder::new("MSH")
            .field(3, &header.sending_application)
            .field(4, &header.sending_facility)
            .field(5, &header.receiving_application)
            .field(6, &header.receiving_facility)
            .field(7, &header.timestamp)
            .field(9, FieldValue::composite(msh9))
            .field(10, &header.control_id)
            .field(11, "P")
            .field(12, "2.5.1"),
    );
    if let Some(ev) = event {
        out.push(SegmentBuilder::new("EVN").field(1, ev).field(2, &header.timestamp));
    }
    match kind {
        V2Message::AdtA08 => {
            let p = b.first("Patient").ok_or(FromFhirError::Missing("Patient"))?;
            out.push(pid(p))
                .push(SegmentBuilder::new("PV1").field(1, "1").field(2, "N"));
        }
        V2Message::OruR01 => {
            let report = b
                .first("DiagnosticReport")
                .ok_or(FromFhirError::Missing("DiagnosticReport"))?;
            let patient = b.follow(&report["subject"]).or_else(|| b.first("Patient"));
            out.push(pid(patient.ok_or(FromFhirError::Missing("Patient"))?));
            let order = report["basedOn"]
                .as_array()
                .and_then(|o| o.first())
                .and_then(|r| b.follow(r));
            let (placer, filler) = order.map(order_numbers).unwrap_or_default();
            let status = match report["status"].as_str() {
                Some("final") => "F",
                Some("corrected" | "amended") => "C",
                Some("cancelled") => "X",
                Some("partial") => "A",
                Some("preliminary") => "P",
                _ => "",
            };
            out.push(
                SegmentBuilder::new("ORC")
                    .field(1, "RE")
                    .field(2, placer.clone())
                    .field(3, filler.clone()),
            )
            .push(
                SegmentBuilder::new("OBR")
                    .field(1, "1")
                    .field(2, placer)
                    .field(3, filler)
                    .field(4, cwe(&report["code"]))
                    .field(7, dtm(report["effectiveDateTime"].as_str()))
                    .field(25, status),
            );
            let results = report["result"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|r| b.follow(r));
            for (i, o) in results.enumerate() {
                out.push(obx(i + 1, o));
            }
        }
        V2Message::OrmO01 | V2Message::OmlO21 => {
            let sr = b
                .first("ServiceRequest")
                .ok_or(FromFhirError::Missing("ServiceRequest"))?;
            let patient = b.follow(&sr["subject"]).or_else(|| b.first("Patient"));
            out.push(pid(patient.ok_or(FromFhirError::Missing("Patient"))?));
            let (placer, filler) = order_numbers(sr);
            // The Task's business status names the lab's step when given.
            let task = b.first("Task");
            let (control, orc5) = match (sr["status"].as_str(), task.and_then(|t| t["status"].as_str())) {
                (Some("revoked"), _) | (_, Some("cancelled" | "rejected")) => ("OC", "CA"),
                (Some("completed"), _) | (_, Some("completed")) => ("SC", "CM"),
                (Some("on-hold"), _) | (_, Some("on-hold")) => ("SC", "HD"),
                (_, Some("in-progress" | "accepted")) => ("SC", "IP"),
                _ => ("SC", "SC"),
            };
            out.push(
                SegmentBuilder::new("ORC")
                    .field(1, control)
                    .field(2, placer.clone())
                    .field(3, filler.clone())
                    .field(5, orc5)
                    .field(9, dtm(sr["authoredOn"].as_str())),
            )
            .push(
                SegmentBuilder::new("OBR")
                    .field(1, "1")
                    .field(2, placer)
                    .field(3, filler)
                    .field(4, cwe(&sr["code"])),
            );
            let notes = sr["note"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|n| n["text"].as_str());
            for (i, text) in notes.enumerate() {
                out.push(SegmentBuilder::new("NTE").field(1, i + 1).field(2, "L").field(3, text));
            }
        }
    }
    Ok(out.finish())
}

/// The resources of a Bundle, found by type and by reference.
struct Resources<'b> {
    all: Vec<&'b Value>,
}

impl<'b> Resources<'b> {
    fn of(bundle: &'b Value) -> Self {
        Resources {
            all: bundle["entry"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|e| &e["resource"])
                .collect(),
        }
    }

    fn first(&self, resource_type: &str) -> Option<&'b Value> {
        self.all.iter().copied().find(|r| r["resourceType"] == resource_type)
    }

    /// The resource a `{ "reference": "Type/id" }` names, in the Bundle.
    fn follow(&self, reference: &Value) -> Option<&'b Value> {
        let (t, id) = reference["reference"].as_str()?.split_once('/')?;
        self.all
            .iter()
            .copied()
            .find(|r| r["resourceType"] == t && r["id"] == id)
    }
}

/// FHIR date / dateTime → HL7 DTM (`2026-11-20T10:30:00+01:00` → `20261120103000+0100`).
pub fn dtm(s: Option<&str>) -> String {
    let Some(s) = s else { return String::new() };
    let (main, zone) = match s.find('T') {
        Some(t) => {
            let rest = &s[t + 1..];
            match rest.rfind(['+', '-', 'Z']) {
                Some(z) => (format!("{}{}", &s[..t], &rest[..z]), &rest[z..]),
                None => (s.to_owned(), ""),
            }
        }
        None => (s.to_owned(), ""),
    };
    let digits: String = main.chars().filter(|c| c.is_ascii_digit() || *c == '.').collect();
    let zone = match zone {
        "Z" => "+0000".to_owned(),
        z => z.replace(':', ""),
    };
    format!("{digits}{zone}")
}

/// A FHIR code system URI → the HL7 table 0396 name (inverse of `code_system`).
fn system_name(uri: &str) -> String {
    match uri {
        "http://loinc.org" => "LN".into(),
        "http://snomed.info/sct" => "SCT".into(),
        "http://hl7.org/fhir/sid/icd-10" => "I10".into(),
        "http://hl7.org/fhir/sid/icd-10-cm" => "I10C".into(),
        "http://hl7.org/fhir/sid/icd-9-cm" => "I9C".into(),
        "http://www.ama-assn.org/go/cpt" => "C4".into(),
        "http://hl7.org/fhir/sid/cvx" => "CVX".into(),
        "http://hl7.org/fhir/sid/mvx" => "MVX".into(),
        "http://hl7.org/fhir/sid/ndc" => "NDC".into(),
        "http://www.nlm.nih.gov/research/umls/rxnorm" => "RXNORM".into(),
        "http://unitsofmeasure.org" => "UCUM".into(),
        "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets" => "HCPCS".into(),
        "urn:oid:2.16.840.1.113883.6.238" => "CDCREC".into(),
        "urn:ietf:bcp:47" => "ISO639".into(),
        "urn:iso:std:iso:3166" => "ISO3166".into(),
        u => match u.strip_prefix("http://terminology.hl7.org/CodeSystem/v2-") {
            Some(table) => format!("HL7{table}"),
            None => u
                .strip_prefix("urn:carehub:hl7-code-system:")
                .map(percent_decode)
                .unwrap_or_else(|| u.to_owned()),
        },
    }
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned()
}

/// CodeableConcept → CWE (first coding as the primary triplet, the second as
/// the alternate; text as original text).
fn cwe(c: &Value) -> FieldValue {
    let codings: Vec<&Value> = c["coding"].as_array().into_iter().flatten().collect();
    let triplet = |x: Option<&&Value>| -> [FieldValue; 3] {
        match x {
            Some(x) => [
                x["code"].as_str().into(),
                x["display"].as_str().into(),
                x["system"].as_str().map(system_name).into(),
            ],
            None => Default::default(),
        }
    };
    let [c1, c2, c3] = triplet(codings.first());
    let [c4, c5, c6] = triplet(codings.get(1));
    let text: FieldValue = c["text"].as_str().into();
    if c1.is_empty() && c2.is_empty() {
        // Text only: CWE.2 carries it.
        return FieldValue::composite([c1, text, c3, c4, c5, c6]);
    }
    FieldValue::composite([c1, c2, c3, c4, c5, c6, FieldValue::Empty, FieldValue::Empty, text])
}

/// Identifier → CX (value, authority in CX.4 as subcomponents, type in CX.5).
fn cx(id: &Value) -> FieldValue {
    FieldValue::composite([
        id["value"].as_str().into(),
        FieldValue::Empty,
        FieldValue::Empty,
        id["system"]
            .as_str()
            .map_or(FieldValue::Empty, |s| FieldValue::composite(authority_of(s))),
        id["type"]["coding"][0]["code"].as_str().into(),
    ])
}

/// HumanName → XPN.
fn xpn(n: &Value) -> FieldValue {
    let given: Vec<&str> = n["given"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let use_code = match n["use"].as_str() {
        Some("official") => "L",
        Some("usual") => "D",
        Some("maiden") => "M",
        Some("nickname") => "N",
        Some("temp") => "T",
        Some("anonymous") => "S",
        _ => "",
    };
    FieldValue::composite([
        n["family"].as_str().unwrap_or(""),
        given.first().copied().unwrap_or(""),
        given.get(1).copied().unwrap_or(""),
        n["suffix"][0].as_str().unwrap_or(""),
        n["prefix"][0].as_str().unwrap_or(""),
        "",
        use_code,
    ])
}

/// Address → XAD.
fn xad(a: &Value) -> FieldValue {
    let use_code = match (a["use"].as_str(), a["type"].as_str()) {
        (Some("home"), _) => "H",
        (Some("work"), _) => "O",
        (Some("temp"), _) => "C",
        (_, Some("postal")) => "M",
        _ => "",
    };
    FieldValue::composite([
        a["line"][0].as_str().unwrap_or(""),
        a["line"][1].as_str().unwrap_or(""),
        a["city"].as_str().unwrap_or(""),
        a["state"].as_str().unwrap_or(""),
        a["postalCode"].as_str().unwrap_or(""),
        a["country"].as_str().unwrap_or(""),
        use_code,
    ])
}

/// ContactPoint → XTN.
fn xtn(c: &Value) -> FieldValue {
    let value = c["value"].as_str().unwrap_or("");
    let use_code = match c["use"].as_str() {
        Some("home") => "PRN",
        Some("work") => "WPN",
        _ => "",
    };
    let parts = match c["system"].as_str() {
        Some("email") => ["", "NET", "Internet", value],
        Some("fax") => [value, use_code, "FX", ""],
        Some("pager") => [value, use_code, "BP", ""],
        _ if c["use"] == "mobile" => [value, "", "CP", ""],
        _ => [value, use_code, "PH", ""],
    };
    FieldValue::composite(parts)
}

/// The items of a JSON array, each written by `f`.
fn each(items: &Value, f: fn(&Value) -> FieldValue) -> impl Iterator<Item = FieldValue> + '_ {
    items.as_array().into_iter().flatten().map(f)
}

/// Patient → PID.
fn pid(p: &Value) -> SegmentBuilder {
    let telecom: Vec<&Value> = p["telecom"].as_array().into_iter().flatten().collect();
    let home = telecom.iter().filter(|t| t["use"] != "work").map(|t| xtn(t));
    let work = telecom.iter().filter(|t| t["use"] == "work").map(|t| xtn(t));
    let sex = match p["gender"].as_str() {
        Some("male") => "M",
        Some("female") => "F",
        Some("other") => "O",
        Some("unknown") => "U",
        _ => "",
    };
    // The extensions the forward map writes, back in their fields.
    let extension = |url: &str| -> Option<&Value> {
        p["extension"]
            .as_array()?
            .iter()
            .find(|e| e["url"].as_str().is_some_and(|u| u.ends_with(url)))
    };
    let us_core = |url: &str| -> Vec<FieldValue> {
        extension(url)
            .and_then(|e| e["extension"].as_array())
            .into_iter()
            .flatten()
            .filter(|part| part["url"] == "ombCategory" || part["url"] == "detailed")
            .map(|part| cwe(&json!({ "coding": [part["valueCoding"]] })))
            .collect()
    };
    let preferred_language = p["communication"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["preferred"] == true)
        .map(|c| cwe(&c["language"]))
        .unwrap_or_default();
    let citizenship = p["extension"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["url"].as_str().is_some_and(|u| u.ends_with("patient-citizenship")))
        .map(|e| cwe(&e["extension"][0]["valueCodeableConcept"]));
    let part_of = |url: &str, part: &str| -> FieldValue {
        extension(url)
            .and_then(|e| e["extension"].as_array())
            .and_then(|parts| parts.iter().find(|x| x["url"] == part))
            .map(|x| cwe(&x["valueCodeableConcept"]))
            .unwrap_or_default()
    };
    let marital = if p["maritalStatus"].is_object() {
        cwe(&p["maritalStatus"])
    } else {
        FieldValue::Empty
    };
    SegmentBuilder::new("PID")
        .field(1, "1")
        .repeated(3, each(&p["identifier"], cx))
        .repeated(5, each(&p["name"], xpn))
        .field(
            6,
            extension("patient-mothersMaidenName").and_then(|e| e["valueString"].as_str()),
        )
        .field(7, dtm(p["birthDate"].as_str()))
        .field(8, sex)
        .repeated(10, us_core("us-core-race"))
        .repeated(11, each(&p["address"], xad))
        .field(12, p["address"][0]["district"].as_str())
        .repeated(13, home)
        .repeated(14, work)
        .field(15, preferred_language)
        .field(16, marital)
        .field(
            17,
            extension("patient-religion")
                .map(|e| cwe(&e["valueCodeableConcept"]))
                .unwrap_or_default(),
        )
        .repeated(22, us_core("us-core-ethnicity"))
        .field(
            23,
            extension("patient-birthPlace").and_then(|e| e["valueAddress"]["text"].as_str()),
        )
        .repeated(26, citizenship)
        .field(28, part_of("patient-nationality", "code"))
        .field(35, part_of("patient-animal", "species"))
        .field(36, part_of("patient-animal", "breed"))
}

/// The placer and filler numbers (EI: number, then the authority as EI.2-4)
/// of a ServiceRequest.
fn order_numbers(sr: &Value) -> (FieldValue, FieldValue) {
    let mut placer = FieldValue::Empty;
    let mut filler = FieldValue::Empty;
    for id in sr["identifier"].as_array().into_iter().flatten() {
        let [ns, universal, kind] = id["system"].as_str().map(authority_of).unwrap_or_default();
        let ei = FieldValue::composite([id["value"].as_str().into(), ns, universal, kind]);
        match id["type"]["coding"][0]["code"].as_str() {
            Some("FILL") => filler = ei,
            _ if placer.is_empty() => placer = ei,
            _ => {}
        }
    }
    (placer, filler)
}

/// Observation → OBX.
fn obx(set_id: usize, o: &Value) -> SegmentBuilder {
    let (kind, value, unit): (&str, Vec<FieldValue>, FieldValue) = if let Some(q) = o.get("valueQuantity") {
        let unit = match (q["code"].as_str(), q["unit"].as_str(), q["system"].as_str()) {
            (Some(c), u, Some(s)) => FieldValue::composite([c.to_owned(), u.unwrap_or(c).to_owned(), system_name(s)]),
            (_, Some(u), _) => u.into(),
            _ => FieldValue::Empty,
        };
        ("NM", vec![q["value"].to_string().into()], unit)
    } else if let Some(c) = o.get("valueCodeableConcept") {
        ("CWE", vec![cwe(c)], FieldValue::Empty)
    } else if let Some(s) = o["valueString"].as_str() {
        // One repetition per line.
        ("ST", s.split('\n').map(FieldValue::from).collect(), FieldValue::Empty)
    } else if let Some(t) = o["valueDateTime"].as_str() {
        ("DTM", vec![dtm(Some(t)).into()], FieldValue::Empty)
    } else {
        ("", Vec::new(), FieldValue::Empty)
    };
    let flags = o["interpretation"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["coding"][0]["code"].as_str());
    let status = match o["status"].as_str() {
        Some("final") => "F",
        Some("corrected" | "amended") => "C",
        Some("cancelled") => "X",
        Some("entered-in-error") => "W",
        _ => "P",
    };
    SegmentBuilder::new("OBX")
        .field(1, set_id)
        .field(2, kind)
        .field(3, cwe(&o["code"]))
        .repeated(5, value)
        .field(6, unit)
        .field(7, o["referenceRange"][0]["text"].as_str())
        .repeated(8, flags)
        .field(11, status)
        .field(14, dtm(o["effectiveDateTime"].as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_systems_go_back() {
        assert_eq!(dtm(Some("2026-11-20T10:30:00+01:00")), "20261120103000+0100");
        assert_eq!(dtm(Some("1980-01-02")), "19800102");
        assert_eq!(dtm(Some("2026-11-20T10:30:00.25Z")), "20261120103000.25+0000");
        assert_eq!(system_name("http://loinc.org"), "LN");
        assert_eq!(system_name("urn:carehub:hl7-code-system:Payor%20ID"), "Payor ID");
        assert_eq!(system_name("http://terminology.hl7.org/CodeSystem/v2-0005"), "HL70005");
    }
}
