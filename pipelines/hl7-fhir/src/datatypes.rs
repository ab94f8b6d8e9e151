//! HL7 v2 data types → FHIR R4 data types, after the HL7 v2-to-FHIR
//! mapping guide's datatype maps (CX → Identifier, XPN → HumanName, XAD →
//! Address, XTN → ContactPoint, CWE/CE/CNE → CodeableConcept, DTM/TS →
//! dateTime, CQ/NM → Quantity). Each returns `None` when the value is empty,
//! so that no empty element is ever produced.

use base64::Engine as _;
use carehub_hl7::codec::er7::Value as V2;
use serde_json::{Map, Value, json};

fn put(obj: &mut Map<String, Value>, key: &str, value: Option<Value>) {
    if let Some(v) = value {
        obj.insert(key.to_owned(), v);
    }
}

fn s(v: Option<String>) -> Option<Value> {
    v.map(Value::String)
}

/// Coding systems named in CWE.3 / CE.3 (HL7 table 0396) → FHIR URIs.
pub fn code_system(name: &str) -> String {
    match name.to_ascii_uppercase().as_str() {
        "LN" | "LOINC" => "http://loinc.org".into(),
        "SCT" | "SNM" | "SNOMED" | "SNOMEDCT" | "SNM3" => "http://snomed.info/sct".into(),
        "I10" | "ICD10" => "http://hl7.org/fhir/sid/icd-10".into(),
        "I10C" | "ICD10CM" => "http://hl7.org/fhir/sid/icd-10-cm".into(),
        "I9" | "I9C" | "ICD9" => "http://hl7.org/fhir/sid/icd-9-cm".into(),
        "CPT" | "C4" => "http://www.ama-assn.org/go/cpt".into(),
        "CVX" => "http://hl7.org/fhir/sid/cvx".into(),
        "MVX" => "http://hl7.org/fhir/sid/mvx".into(),
        "NDC" => "http://hl7.org/fhir/sid/ndc".into(),
        "RXNORM" => "http://www.nlm.nih.gov/research/umls/rxnorm".into(),
        "UCUM" => "http://unitsofmeasure.org".into(),
        "HCPCS" => "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets".into(),
        "CDCREC" => "urn:oid:2.16.840.1.113883.6.238".into(),
        // ISO 639 language codes are BCP 47 tags, FHIR's language system.
        "ISO639" => "urn:ietf:bcp:47".into(),
        "ISO3166" => "urn:iso:std:iso:3166".into(),
        other if other.starts_with("HL7") && other[3..].chars().all(|c| c.is_ascii_digit()) && other.len() == 7 => {
            format!("http://terminology.hl7.org/CodeSystem/v2-{}", &other[3..])
        }
        _ => format!("urn:carehub:hl7-code-system:{}", urn_part(name)),
    }
}

pub use carehub_hl7::codec::identity::{assigner_system, urn_part};

/// One coding from a triplet (code, text, system) of a CWE.
fn coding(code: Option<String>, display: Option<String>, system: Option<String>) -> Option<Value> {
    let code = code?;
    let mut c = Map::new();
    put(&mut c, "system", system.map(|s| Value::String(code_system(&s))));
    c.insert("code".into(), Value::String(code));
    put(&mut c, "display", s(display));
    Some(Value::Object(c))
}

/// CWE / CE / CNE → CodeableConcept: the primary and the alternate triplet,
/// and the original text (CWE.9) or the first display as `text`.
pub fn codeable(v: &V2<'_>) -> Option<Value> {
    let c = |n| v.component(n).text();
    let codings: Vec<Value> = [coding(c(1), c(2), c(3)), coding(c(4), c(5), c(6))]
        .into_iter()
        .flatten()
        .collect();
    let mut out = Map::new();
    if !codings.is_empty() {
        out.insert("coding".into(), Value::Array(codings));
    }
    match c(9).or_else(|| if c(1).is_none() { c(2) } else { None }) {
        Some(t) => {
            out.insert("text".into(), Value::String(t));
        }
        None if out.is_empty() => return None,
        None => {}
    }
    Some(Value::Object(out))
}

/// CX → Identifier (value, system from CX.4, type from CX.5, period CX.7/8).
pub fn identifier(v: &V2<'_>) -> Option<Value> {
    let value = v.component(1).text()?;
    let aa = v.component(4);
    let system = assigner_system(
        aa.subcomponent(1).text(),
        aa.subcomponent(2).text(),
        aa.subcomponent(3).text(),
    );
    let mut out = Map::new();
    out.insert("value".into(), Value::String(value));
    put(&mut out, "system", s(system));
    if let Some(t) = v.component(5).text() {
        out.insert(
            "type".into(),
            json!({ "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": t }] }),
        );
    }
    if let Some(p) = period(&v.component(7), &v.component(8)) {
        out.insert("period".into(), p);
    }
    Some(Value::Object(out))
}

/// EI (entity identifier: ORC-2/3, OBR-2/3, SPM-2) → Identifier, typed.
pub fn entity_identifier(v: &V2<'_>, type_code: Option<&str>) -> Option<Value> {
    ei(|n| v.component(n).text(), type_code)
}

/// An EI inside a component (EIP.1 / EIP.2, as in SPM-2 and SPM-3: its
/// parts are subcomponents) → Identifier, typed.
pub fn sub_entity_identifier(c: &V2<'_>, type_code: Option<&str>) -> Option<Value> {
    ei(|n| c.subcomponent(n).text(), type_code)
}

/// EI from its parts (`part(1)` the value, 2-4 the assigning authority).
fn ei(part: impl Fn(usize) -> Option<String>, type_code: Option<&str>) -> Option<Value> {
    let value = part(1)?;
    let system = assigner_system(part(2), part(3), part(4));
    let mut out = Map::new();
    out.insert("value".into(), Value::String(value));
    put(&mut out, "system", s(system));
    if let Some(t) = type_code {
        out.insert(
            "type".into(),
            json!({ "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": t }] }),
        );
    }
    Some(Value::Object(out))
}

/// EIP (SPM-2, SPM-3: a placer's and a filler's number as subcomponents)
/// → the identifiers PGN and FGN.
pub fn eip_identifiers(v: &V2<'_>) -> Vec<Value> {
    [
        sub_entity_identifier(&v.component(1), Some("PGN")),
        sub_entity_identifier(&v.component(2), Some("FGN")),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// A US social security number → Identifier (type SS).
pub fn ssn(value: String) -> Value {
    json!({ "value": value, "system": "http://hl7.org/fhir/sid/us-ssn",
            "type": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "SS" }] } })
}

/// A placer and a filler number (EI) → the identifiers PLAC and FILL
/// (ORC-2/3, OBR-2/3, SCH-1/2); `None` when neither is given.
pub fn placer_filler(placer: &V2<'_>, filler: &V2<'_>) -> Option<Value> {
    let ids: Vec<Value> = [
        entity_identifier(placer, Some("PLAC")),
        entity_identifier(filler, Some("FILL")),
    ]
    .into_iter()
    .flatten()
    .collect();
    (!ids.is_empty()).then_some(Value::Array(ids))
}

/// XPN (or the name part of an XCN starting at `first`) → HumanName.
pub fn human_name(v: &V2<'_>, first: usize) -> Option<Value> {
    let c = |n: usize| v.component(first + n - 1).text();
    let family = v.component(first).subcomponent(1).text();
    let given: Vec<Value> = [c(2), c(3)].into_iter().flatten().map(Value::String).collect();
    let mut out = Map::new();
    put(&mut out, "family", s(family));
    if !given.is_empty() {
        out.insert("given".into(), Value::Array(given));
    }
    if let Some(suffix) = c(4) {
        out.insert("suffix".into(), json!([suffix]));
    }
    if let Some(prefix) = c(5) {
        out.insert("prefix".into(), json!([prefix]));
    }
    if out.is_empty() {
        return None;
    }
    // XPN.7 name type code → use (HL7 table 0200 → name-use).
    let type_code = if first == 1 { c(7) } else { c(10) };
    if let Some(u) = type_code.and_then(|t| match t.as_str() {
        "L" => Some("official"),
        "D" => Some("usual"),
        "M" | "B" => Some("maiden"),
        "N" | "A" => Some("nickname"),
        "T" => Some("temp"),
        "S" | "P" => Some("anonymous"),
        _ => None,
    }) {
        out.insert("use".into(), Value::String(u.into()));
    }
    Some(Value::Object(out))
}

/// XAD → Address.
pub fn address(v: &V2<'_>) -> Option<Value> {
    let c = |n: usize| v.component(n).text();
    let mut out = Map::new();
    let lines: Vec<Value> = [v.component(1).subcomponent(1).text(), c(2)]
        .into_iter()
        .flatten()
        .map(Value::String)
        .collect();
    if !lines.is_empty() {
        out.insert("line".into(), Value::Array(lines));
    }
    put(&mut out, "city", s(c(3)));
    put(&mut out, "state", s(c(4)));
    put(&mut out, "postalCode", s(c(5)));
    put(&mut out, "country", s(c(6)));
    put(&mut out, "district", s(c(9)));
    if out.is_empty() {
        return None;
    }
    // XAD.7 address type (table 0190) → use / type.
    match c(7).as_deref() {
        Some("H") => {
            out.insert("use".into(), json!("home"));
        }
        Some("O" | "B") => {
            out.insert("use".into(), json!("work"));
        }
        Some("C") => {
            out.insert("use".into(), json!("temp"));
        }
        Some("M") => {
            out.insert("type".into(), json!("postal"));
        }
        _ => {}
    }
    Some(Value::Object(out))
}

/// XTN → ContactPoint: the number (XTN.1, else built from XTN.5-8) or the
/// e-mail (XTN.4); system from XTN.3, use from XTN.2.
pub fn contact_point(v: &V2<'_>) -> Option<Value> {
    let c = |n: usize| v.component(n).text();
    let equipment = c(3);
    let (system, value) = match equipment.as_deref() {
        Some("Internet" | "X.400") => ("email", c(4).or_else(|| c(1))?),
        Some("FX") => ("fax", c(1).or_else(|| number(&c))?),
        Some("BP") => ("pager", c(1).or_else(|| number(&c))?),
        _ => match c(1).or_else(|| number(&c)) {
            Some(n) => ("phone", n),
            None => ("email", c(4)?),
        },
    };
    let mut out = Map::new();
    out.insert("system".into(), json!(system));
    out.insert("value".into(), Value::String(value));
    match c(2).as_deref() {
        Some("PRN" | "ORN" | "VHN") => {
            out.insert("use".into(), json!("home"));
        }
        Some("WPN") => {
            out.insert("use".into(), json!("work"));
        }
        _ if equipment.as_deref() == Some("CP") => {
            out.insert("use".into(), json!("mobile"));
        }
        _ => {}
    }
    Some(Value::Object(out))
}

fn number(c: &dyn Fn(usize) -> Option<String>) -> Option<String> {
    let parts: Vec<String> = [c(5).map(|x| format!("+{x}")), c(6), c(7)]
        .into_iter()
        .flatten()
        .collect();
    let mut n = (!parts.is_empty()).then(|| parts.join(" "))?;
    if let Some(ext) = c(8) {
        n.push_str(&format!(" ext. {ext}"));
    }
    Some(n)
}

/// DTM / TS → FHIR date or dateTime, precision kept: `YYYY`, `YYYY-MM`,
/// `YYYY-MM-DD`; with a time, seconds and the offset given (FHIR wants a
/// zone with a time: without one the date alone is kept).
pub fn date_time(v: &V2<'_>) -> Option<String> {
    dtm(&v.component(1).text()?)
}

/// [`date_time`] of a raw DTM string.
pub fn dtm(raw: &str) -> Option<String> {
    let (stamp, zone) = match raw.find(['+', '-']) {
        Some(i) => (&raw[..i], Some(&raw[i..])),
        None => (raw, None),
    };
    let (digits, fraction) = match stamp.split_once('.') {
        Some((d, f)) => (d, Some(f)),
        None => (stamp, None),
    };
    if !digits.chars().all(|c| c.is_ascii_digit()) || digits.len() < 4 {
        return None;
    }
    let date = match digits.len() {
        4 | 5 => digits[..4].to_owned(),
        6 | 7 => format!("{}-{}", &digits[..4], &digits[4..6]),
        _ => format!("{}-{}-{}", &digits[..4], &digits[4..6], &digits[6..8]),
    };
    let (Some(zone), true) = (zone, digits.len() >= 10) else {
        return Some(date);
    };
    if zone.len() != 5 || !zone[1..].chars().all(|c| c.is_ascii_digit()) {
        return Some(date);
    }
    let hh = &digits[8..10];
    let mm = digits.get(10..12).unwrap_or("00");
    let ss = digits.get(12..14).unwrap_or("00");
    let frac = fraction.map(|f| format!(".{f}")).unwrap_or_default();
    Some(format!("{date}T{hh}:{mm}:{ss}{frac}{}:{}", &zone[..3], &zone[3..]))
}

/// DTM → FHIR instant (a time to the second with its offset). A time given
/// without an offset is read as UTC: an instant needs one, and HL7 leaves it
/// to the sender. `None` for less than a time to the minute.
pub fn instant(v: &V2<'_>) -> Option<String> {
    let raw = v.component(1).text()?;
    let zoned = if raw.contains(['+', '-']) {
        raw
    } else {
        format!("{raw}+0000")
    };
    dtm(&zoned).filter(|t| t.contains('T'))
}

/// DR or two DTMs → Period.
pub fn period(start: &V2<'_>, end: &V2<'_>) -> Option<Value> {
    let mut out = Map::new();
    put(&mut out, "start", s(date_time(start)));
    put(&mut out, "end", s(date_time(end)));
    (!out.is_empty()).then_some(Value::Object(out))
}

/// NM + CWE unit → Quantity (the number as written: decimals exact).
pub fn quantity(number: &str, unit: &V2<'_>) -> Option<Value> {
    let n: serde_json::Number = number.trim().parse().ok()?;
    let mut out = Map::new();
    out.insert("value".into(), Value::Number(n));
    if let Some(code) = unit.component(1).text() {
        out.insert(
            "unit".into(),
            Value::String(unit.component(2).text().unwrap_or_else(|| code.clone())),
        );
        if let Some(system) = unit.component(3).text() {
            out.insert("system".into(), Value::String(code_system(&system)));
            out.insert("code".into(), Value::String(code));
        }
    }
    Some(Value::Object(out))
}

/// An OBX-5 repetition carrying a document's content → Attachment, by the
/// OBX-2 value type: ED (encapsulated data: type 2, subtype 3, encoding 4 —
/// `Base64`, `Hex` or `A` for plain text — data 5), RP (reference pointer:
/// the pointer 1 as the URL, type 3, subtype 4); any other type is text.
pub fn attachment(value_type: &str, v: &V2<'_>) -> Option<Value> {
    let mut out = Map::new();
    match value_type {
        "ED" => {
            let bytes = match (v.component(4).text().as_deref(), v.component(5).text()) {
                (_, None) => None,
                (Some(e), Some(d)) if e.eq_ignore_ascii_case("base64") => {
                    // Already Base64; what is not is not carried as if it were.
                    let d: String = d.split_whitespace().collect();
                    base64::engine::general_purpose::STANDARD.decode(&d).ok().map(|_| d)
                }
                (Some(e), Some(d)) if e.eq_ignore_ascii_case("hex") => hex::decode(d.trim())
                    .ok()
                    .map(|b| base64::engine::general_purpose::STANDARD.encode(b)),
                (_, Some(d)) => Some(base64::engine::general_purpose::STANDARD.encode(d.as_bytes())),
            };
            let media = media_type(v.component(2).text().as_deref(), v.component(3).text().as_deref());
            match (bytes, media) {
                (Some(b), m) => {
                    out.insert(
                        "contentType".into(),
                        json!(m.unwrap_or_else(|| "application/octet-stream".into())),
                    );
                    out.insert("data".into(), json!(b));
                }
                (None, Some(m)) => {
                    out.insert("contentType".into(), json!(m));
                }
                (None, None) => return None,
            }
        }
        "RP" => {
            let pointer = v.component(1).text()?;
            if let Some(m) = media_type(v.component(3).text().as_deref(), v.component(4).text().as_deref()) {
                out.insert("contentType".into(), json!(m));
            }
            out.insert("url".into(), json!(pointer));
        }
        _ => {
            let text = v.text()?;
            out.insert("contentType".into(), json!("text/plain"));
            out.insert(
                "data".into(),
                json!(base64::engine::general_purpose::STANDARD.encode(text.as_bytes())),
            );
        }
    }
    Some(Value::Object(out))
}

/// An ED/RP type of data (HL7 table 0191, or a MIME top-level type) and
/// subtype (table 0291, or a MIME subtype) → a MIME type, when it can be told.
fn media_type(kind: Option<&str>, subtype: Option<&str>) -> Option<String> {
    let sub = subtype.map(str::to_ascii_lowercase);
    let kind = kind.map(str::to_ascii_lowercase);
    const TOP: &[&str] = &["application", "audio", "image", "text", "video", "multipart", "model"];
    match (kind.as_deref(), sub.as_deref()) {
        (Some(k), Some(s)) if TOP.contains(&k) => Some(format!("{k}/{s}")),
        (_, Some("pdf")) => Some("application/pdf".into()),
        (_, Some("rtf")) => Some("application/rtf".into()),
        (_, Some("xml")) => Some("application/xml".into()),
        (_, Some("html")) => Some("text/html".into()),
        (_, Some("jpeg" | "jpg")) => Some("image/jpeg".into()),
        (_, Some("png")) => Some("image/png".into()),
        (_, Some("gif")) => Some("image/gif".into()),
        (_, Some("tiff")) => Some("image/tiff".into()),
        (_, Some("dicom")) => Some("application/dicom".into()),
        (Some("tx" | "text" | "ft"), _) => Some("text/plain".into()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use carehub_hl7::codec::er7::Message;

    fn field(segment: &str, n: usize) -> (String, usize) {
        (format!("MSH|^~\\&|A|B|C|D|20260101||ADT^A01|1|P|2.5\r{segment}"), n)
    }

    #[test]
    fn datatypes_map_as_the_guide_says() {
        let (text, _) = field(
            "PID|1||123^^^HOSP&1.2.3&ISO^MR~456^^^SSA^SS||Doe^John^Q^Jr^Dr^^L||19800102|M|||1 Main St^Apt 2^Town^ST^12345^USA^H||555-1234^PRN^PH~^NET^Internet^a@b.c",
            0,
        );
        let m = Message::parse(&text).expect("parses");
        let pid = m.segment("PID").expect("pid");
        let ids: Vec<Value> = pid.field(3).repetitions().filter_map(|r| identifier(&r)).collect();
        assert_eq!(ids[0]["system"], "urn:oid:1.2.3");
        assert_eq!(ids[0]["type"]["coding"][0]["code"], "MR");
        assert_eq!(ids[1]["system"], "urn:carehub:hl7-aa:SSA");
        let name = human_name(&pid.field(5).repetitions().next().expect("name"), 1).expect("name");
        assert_eq!(
            name,
            json!({ "family": "Doe", "given": ["John", "Q"], "suffix": ["Jr"], "prefix": ["Dr"], "use": "official" })
        );
        assert_eq!(dtm("19800102").as_deref(), Some("1980-01-02"));
        assert_eq!(dtm("198808181126+0215").as_deref(), Some("1988-08-18T11:26:00+02:15"));
        assert_eq!(
            dtm("20260101120000.25-0500").as_deref(),
            Some("2026-01-01T12:00:00.25-05:00")
        );
        assert_eq!(dtm("202601011200").as_deref(), Some("2026-01-01"));
        let addr = address(&pid.field(11)).expect("address");
        assert_eq!(addr["line"], json!(["1 Main St", "Apt 2"]));
        assert_eq!(addr["use"], "home");
        let tel: Vec<Value> = pid.field(13).repetitions().filter_map(|r| contact_point(&r)).collect();
        assert_eq!(tel[0], json!({ "system": "phone", "value": "555-1234", "use": "home" }));
        assert_eq!(tel[1]["value"], "a@b.c");
        assert_eq!(code_system("HL70005"), "http://terminology.hl7.org/CodeSystem/v2-0005");
        let (text, _) = field(
            "OBX|1|ED|X||^AP^PDF^Hex^255044~^TEXT^^A^Hi there~^AP^PDF^Base64^not base64!~^image^png||",
            0,
        );
        let m = Message::parse(&text).expect("parses");
        let eds: Vec<Option<Value>> = m
            .segment("OBX")
            .expect("obx")
            .field(5)
            .repetitions()
            .map(|r| attachment("ED", &r))
            .collect();
        // Hex becomes Base64 (`%PD` = 0x25 0x50 0x44), table 0291's PDF a MIME type.
        assert_eq!(
            eds[0],
            Some(json!({ "contentType": "application/pdf", "data": "JVBE" }))
        );
        assert_eq!(
            eds[1],
            Some(json!({ "contentType": "text/plain", "data": "SGkgdGhlcmU=" }))
        );
        // Data that claims Base64 and is not is not passed on as if it were.
        assert_eq!(eds[2], Some(json!({ "contentType": "application/pdf" })));
        assert_eq!(eds[3], Some(json!({ "contentType": "image/png" })));
        assert_eq!(
            quantity("61.50", &pid.field(99)).expect("q")["value"].to_string(),
            "61.5"
        );
    }
}
