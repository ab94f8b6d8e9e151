//! FHIR R4 → HL7 v2.5.1, so that results and status reach clinics that only
//! speak v2: ADT^A08 from a Patient, ORU^R01 from a DiagnosticReport and its
//! Observations, ORM^O01 / OML^O21 order status from a ServiceRequest (and
//! its Task). The inverse of the v2 → FHIR maps, field for field, so that a
//! round trip v2 → FHIR → v2 keeps what was mapped.
//!
//! The input is a Bundle (a `collection`, `batch`, or what `to_fhir` gives);
//! references between its resources (`Patient/<id>`) are followed inside it.

use carehub_hl7::codec::er7::Delimiters;
use carehub_hl7::codec::escape::encode;
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
    let d = Delimiters::default();
    let e = |s: &str| encode(s, &d).into_owned();
    let (msh9, event) = match kind {
        V2Message::AdtA08 => ("ADT^A08^ADT_A01", Some("A08")),
        V2Message::OruR01 => ("ORU^R01^ORU_R01", None),
        V2Message::OrmO01 => ("ORM^O01^ORM_O01", None),
        V2Message::OmlO21 => ("OML^O21^OML_O21", None),
    };
    let mut out = format!(
        "MSH|^~\\&|{}|{}|{}|{}|{}||{msh9}|{}|P|2.5.1\r",
        e(&header.sending_application),
        e(&header.sending_facility),
        e(&header.receiving_application),
        e(&header.receiving_facility),
        header.timestamp,
        e(&header.control_id)
    );
    if let Some(ev) = event {
        out.push_str(&format!("EVN|{ev}|{}\r", header.timestamp));
    }
    match kind {
        V2Message::AdtA08 => {
            let p = b.first("Patient").ok_or(FromFhirError::Missing("Patient"))?;
            out.push_str(&pid(p));
            out.push_str("PV1|1|N\r");
        }
        V2Message::OruR01 => {
            let report = b
                .first("DiagnosticReport")
                .ok_or(FromFhirError::Missing("DiagnosticReport"))?;
            let patient = b.follow(&report["subject"]).or_else(|| b.first("Patient"));
            out.push_str(&pid(patient.ok_or(FromFhirError::Missing("Patient"))?));
            let order = report["basedOn"]
                .as_array()
                .and_then(|o| o.first())
                .and_then(|r| b.follow(r));
            let (placer, filler) = order.map(order_numbers).unwrap_or_default();
            out.push_str(&format!("ORC|RE|{placer}|{filler}\r"));
            out.push_str(&format!(
                "OBR|1|{placer}|{filler}|{}|||{}||||||||||||||||||{}\r",
                cwe(&report["code"]),
                dtm(report["effectiveDateTime"].as_str()),
                match report["status"].as_str() {
                    Some("final") => "F",
                    Some("corrected" | "amended") => "C",
                    Some("cancelled") => "X",
                    Some("partial") => "A",
                    Some("preliminary") => "P",
                    _ => "",
                }
            ));
            let results: Vec<&Value> = report["result"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|r| b.follow(r))
                .collect();
            for (i, o) in results.iter().enumerate() {
                out.push_str(&obx(i + 1, o));
            }
        }
        V2Message::OrmO01 | V2Message::OmlO21 => {
            let sr = b
                .first("ServiceRequest")
                .ok_or(FromFhirError::Missing("ServiceRequest"))?;
            let patient = b.follow(&sr["subject"]).or_else(|| b.first("Patient"));
            out.push_str(&pid(patient.ok_or(FromFhirError::Missing("Patient"))?));
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
            out.push_str(&format!(
                "ORC|{control}|{placer}|{filler}||{orc5}||||{}\r",
                dtm(sr["authoredOn"].as_str())
            ));
            out.push_str(&format!("OBR|1|{placer}|{filler}|{}\r", cwe(&sr["code"])));
            for (i, n) in sr["note"].as_array().into_iter().flatten().enumerate() {
                if let Some(t) = n["text"].as_str() {
                    out.push_str(&format!("NTE|{}|L|{}\r", i + 1, e(t)));
                }
            }
        }
    }
    Ok(out)
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

fn esc(s: &str) -> String {
    encode(s, &Delimiters::default()).into_owned()
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
fn cwe(c: &Value) -> String {
    let codings: Vec<&Value> = c["coding"].as_array().into_iter().flatten().collect();
    let triplet = |x: Option<&&Value>| -> [String; 3] {
        match x {
            Some(x) => [
                esc(x["code"].as_str().unwrap_or("")),
                esc(x["display"].as_str().unwrap_or("")),
                x["system"].as_str().map(|s| esc(&system_name(s))).unwrap_or_default(),
            ],
            None => Default::default(),
        }
    };
    let [c1, c2, c3] = triplet(codings.first());
    let [c4, c5, c6] = triplet(codings.get(1));
    let text = c["text"].as_str().map(esc).unwrap_or_default();
    let mut parts = vec![c1, c2, c3, c4, c5, c6, String::new(), String::new(), text];
    if parts[0].is_empty() && parts[1].is_empty() {
        // Text only: CWE.2 carries it.
        parts[1] = parts[8].clone();
        parts[8].clear();
    }
    trim_components(parts)
}

fn trim_components(mut parts: Vec<String>) -> String {
    while parts.last().is_some_and(String::is_empty) {
        parts.pop();
    }
    parts.join("^")
}

/// The authority of an identifier system, as CX.4 / EI namespace&universal&type.
fn authority(system: Option<&str>) -> String {
    match system {
        Some(s) if s.starts_with("urn:oid:") => format!("&{}&ISO", &s[8..]),
        Some(s) if s.starts_with("urn:carehub:hl7-aa:") => esc(&percent_decode(&s[19..])),
        Some(s) => format!("&{}&URI", esc(s)),
        None => String::new(),
    }
}

/// Identifier → CX.
fn cx(id: &Value) -> String {
    let type_code = id["type"]["coding"][0]["code"].as_str().map(esc).unwrap_or_default();
    trim_components(vec![
        esc(id["value"].as_str().unwrap_or("")),
        String::new(),
        String::new(),
        authority(id["system"].as_str()),
        type_code,
    ])
}

/// HumanName → XPN.
fn xpn(n: &Value) -> String {
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
    trim_components(vec![
        esc(n["family"].as_str().unwrap_or("")),
        esc(given.first().copied().unwrap_or("")),
        esc(given.get(1).copied().unwrap_or("")),
        esc(n["suffix"][0].as_str().unwrap_or("")),
        esc(n["prefix"][0].as_str().unwrap_or("")),
        String::new(),
        use_code.to_owned(),
    ])
}

/// Address → XAD.
fn xad(a: &Value) -> String {
    let use_code = match (a["use"].as_str(), a["type"].as_str()) {
        (Some("home"), _) => "H",
        (Some("work"), _) => "O",
        (Some("temp"), _) => "C",
        (_, Some("postal")) => "M",
        _ => "",
    };
    trim_components(vec![
        esc(a["line"][0].as_str().unwrap_or("")),
        esc(a["line"][1].as_str().unwrap_or("")),
        esc(a["city"].as_str().unwrap_or("")),
        esc(a["state"].as_str().unwrap_or("")),
        esc(a["postalCode"].as_str().unwrap_or("")),
        esc(a["country"].as_str().unwrap_or("")),
        use_code.to_owned(),
    ])
}

/// ContactPoint → XTN.
fn xtn(c: &Value) -> String {
    let value = esc(c["value"].as_str().unwrap_or(""));
    let use_code = match c["use"].as_str() {
        Some("home") => "PRN",
        Some("work") => "WPN",
        _ => "",
    };
    match c["system"].as_str() {
        Some("email") => format!("^NET^Internet^{value}"),
        Some("fax") => format!("{value}^{use_code}^FX"),
        Some("pager") => format!("{value}^{use_code}^BP"),
        _ if c["use"] == "mobile" => format!("{value}^^CP"),
        _ => trim_components(vec![value, use_code.to_owned(), "PH".to_owned()]),
    }
}

fn repeat(items: &Value, f: fn(&Value) -> String) -> String {
    items
        .as_array()
        .into_iter()
        .flatten()
        .map(f)
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("~")
}

/// Patient → PID.
fn pid(p: &Value) -> String {
    let telecom: Vec<&Value> = p["telecom"].as_array().into_iter().flatten().collect();
    let home: Vec<String> = telecom.iter().filter(|t| t["use"] != "work").map(|t| xtn(t)).collect();
    let work: Vec<String> = telecom.iter().filter(|t| t["use"] == "work").map(|t| xtn(t)).collect();
    let sex = match p["gender"].as_str() {
        Some("male") => "M",
        Some("female") => "F",
        Some("other") => "O",
        Some("unknown") => "U",
        _ => "",
    };
    let fields = vec![
        "PID".to_owned(),
        "1".to_owned(),
        String::new(),
        repeat(&p["identifier"], cx),
        String::new(),
        repeat(&p["name"], xpn),
        String::new(),
        dtm(p["birthDate"].as_str()),
        sex.to_owned(),
        String::new(),
        String::new(),
        repeat(&p["address"], xad),
        String::new(),
        home.join("~"),
        work.join("~"),
        String::new(),
        if p["maritalStatus"].is_object() {
            cwe(&p["maritalStatus"])
        } else {
            String::new()
        },
    ];
    let mut fields = fields;
    // The extensions the forward map writes, back in their fields.
    let extension = |url: &str| -> Option<&Value> {
        p["extension"]
            .as_array()?
            .iter()
            .find(|e| e["url"].as_str().is_some_and(|u| u.ends_with(url)))
    };
    let us_core = |url: &str| -> String {
        extension(url)
            .and_then(|e| e["extension"].as_array())
            .into_iter()
            .flatten()
            .filter(|part| part["url"] == "ombCategory" || part["url"] == "detailed")
            .map(|part| cwe(&json!({ "coding": [part["valueCoding"]] })))
            .collect::<Vec<_>>()
            .join("~")
    };
    let preferred_language = p["communication"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["preferred"] == true)
        .map(|c| cwe(&c["language"]))
        .unwrap_or_default();
    let citizenship: Vec<String> = p["extension"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["url"].as_str().is_some_and(|u| u.ends_with("patient-citizenship")))
        .map(|e| cwe(&e["extension"][0]["valueCodeableConcept"]))
        .collect();
    let part_of = |url: &str, part: &str| -> String {
        extension(url)
            .and_then(|e| e["extension"].as_array())
            .and_then(|parts| parts.iter().find(|x| x["url"] == part))
            .map(|x| cwe(&x["valueCodeableConcept"]))
            .unwrap_or_default()
    };
    let later: [(usize, String); 11] = [
        (12, p["address"][0]["district"].as_str().map(esc).unwrap_or_default()),
        (
            6,
            extension("patient-mothersMaidenName")
                .and_then(|e| e["valueString"].as_str())
                .map(esc)
                .unwrap_or_default(),
        ),
        (10, us_core("us-core-race")),
        (15, preferred_language),
        (
            17,
            extension("patient-religion")
                .map(|e| cwe(&e["valueCodeableConcept"]))
                .unwrap_or_default(),
        ),
        (22, us_core("us-core-ethnicity")),
        (
            23,
            extension("patient-birthPlace")
                .and_then(|e| e["valueAddress"]["text"].as_str())
                .map(esc)
                .unwrap_or_default(),
        ),
        (26, citizenship.join("~")),
        (28, part_of("patient-nationality", "code")),
        (35, part_of("patient-animal", "species")),
        (36, part_of("patient-animal", "breed")),
    ];
    for (n, value) in later {
        if value.is_empty() {
            continue;
        }
        if fields.len() <= n {
            fields.resize(n + 1, String::new());
        }
        fields[n] = value;
    }
    while fields.last().is_some_and(String::is_empty) {
        fields.pop();
    }
    format!("{}\r", fields.join("|"))
}

/// The placer and filler numbers (EI) of a ServiceRequest.
fn order_numbers(sr: &Value) -> (String, String) {
    let mut placer = String::new();
    let mut filler = String::new();
    for id in sr["identifier"].as_array().into_iter().flatten() {
        let ei = trim_components(vec![
            esc(id["value"].as_str().unwrap_or("")),
            ei_authority(id["system"].as_str()),
        ]);
        match id["type"]["coding"][0]["code"].as_str() {
            Some("FILL") => filler = ei,
            _ if placer.is_empty() => placer = ei,
            _ => {}
        }
    }
    (placer, filler)
}

/// An identifier system as EI.2-4 (namespace^universal^type).
fn ei_authority(system: Option<&str>) -> String {
    match system {
        Some(s) if s.starts_with("urn:oid:") => format!("^{}^ISO", &s[8..]),
        Some(s) if s.starts_with("urn:carehub:hl7-aa:") => esc(&percent_decode(&s[19..])),
        Some(s) => format!("^{}^URI", esc(s)),
        None => String::new(),
    }
}

/// Observation → OBX.
fn obx(set_id: usize, o: &Value) -> String {
    let (kind, value, unit) = if let Some(q) = o.get("valueQuantity") {
        let unit = match (q["code"].as_str(), q["unit"].as_str(), q["system"].as_str()) {
            (Some(c), u, Some(s)) => trim_components(vec![esc(c), esc(u.unwrap_or(c)), esc(&system_name(s))]),
            (_, Some(u), _) => esc(u),
            _ => String::new(),
        };
        ("NM", q["value"].to_string(), unit)
    } else if let Some(c) = o.get("valueCodeableConcept") {
        ("CWE", cwe(c), String::new())
    } else if let Some(s) = o["valueString"].as_str() {
        (
            "ST",
            s.split('\n').map(esc).collect::<Vec<_>>().join("~"),
            String::new(),
        )
    } else if let Some(t) = o["valueDateTime"].as_str() {
        ("DTM", dtm(Some(t)), String::new())
    } else {
        ("", String::new(), String::new())
    };
    let flags = o["interpretation"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["coding"][0]["code"].as_str().map(esc))
        .collect::<Vec<_>>()
        .join("~");
    let status = match o["status"].as_str() {
        Some("final") => "F",
        Some("corrected" | "amended") => "C",
        Some("cancelled") => "X",
        Some("entered-in-error") => "W",
        _ => "P",
    };
    let fields = vec![
        "OBX".to_owned(),
        set_id.to_string(),
        kind.to_owned(),
        cwe(&o["code"]),
        String::new(),
        value,
        unit,
        o["referenceRange"][0]["text"].as_str().map(esc).unwrap_or_default(),
        flags,
        String::new(),
        String::new(),
        status.to_owned(),
        String::new(),
        String::new(),
        dtm(o["effectiveDateTime"].as_str()),
    ];
    let mut fields = fields;
    while fields.last().is_some_and(String::is_empty) {
        fields.pop();
    }
    format!("{}\r", fields.join("|"))
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
