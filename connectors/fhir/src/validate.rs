//! Structural validation against the FHIR R4 (4.0.1) definitions, before a
//! write is accepted: known elements only, cardinality (required, single vs
//! array, one choice of a `[x]`), value types and the formats of primitives,
//! required bindings on `code` elements whose value set is enumerable, no
//! empty strings, arrays or objects; contained resources and Bundle entries
//! are validated as resources. Not checked: invariants (FHIRPath
//! constraints), profiles, extensible bindings, terminology servers.
//!
//! The tables (`r4/structure.json`) are generated from HL7's definitions by
//! `scripts/fhir-r4-structure.py`.

use std::collections::HashMap;
use std::sync::LazyLock;

use regex::Regex;
use serde::Deserialize;
use serde_json::Value;

/// One problem, located by a FHIRPath-like expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for Issue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

#[derive(Debug, Deserialize)]
struct Structure {
    types: HashMap<String, TypeDef>,
    valuesets: HashMap<String, Vec<String>>,
}

#[derive(Debug, Deserialize)]
struct TypeDef {
    kind: String,
    elements: Vec<ElementDef>,
}

/// `[name, type, multiple, required, choice group, required value set]`.
#[derive(Debug, Deserialize)]
struct ElementDef(String, String, u8, u8, Option<String>, Option<String>);

static STRUCTURE: LazyLock<Structure> = LazyLock::new(|| {
    serde_json::from_str(include_str!("../r4/structure.json")).unwrap_or_else(|e| {
        // The file is generated and checked in: a broken one is a build defect.
        panic!("connectors/fhir/r4/structure.json is unreadable: {e}")
    })
});

fn re(pattern: &str) -> Regex {
    Regex::new(pattern).unwrap_or_else(|e| panic!("bad built-in pattern {pattern}: {e}"))
}

// The regular expressions of the R4 primitive types (datatypes.html).
static ID: LazyLock<Regex> = LazyLock::new(|| re(r"^[A-Za-z0-9\-\.]{1,64}$"));
static CODE: LazyLock<Regex> = LazyLock::new(|| re(r"^[^\s]+( [^\s]+)*$"));
static DATE: LazyLock<Regex> = LazyLock::new(|| {
    re(r"^([0-9]([0-9]([0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000)(-(0[1-9]|1[0-2])(-(0[1-9]|[1-2][0-9]|3[0-1]))?)?$")
});
static DATE_TIME: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"^([0-9]([0-9]([0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000)(-(0[1-9]|1[0-2])(-(0[1-9]|[1-2][0-9]|3[0-1])(T([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]+)?(Z|(\+|-)((0[0-9]|1[0-3]):[0-5][0-9]|14:00)))?)?)?$",
    )
});
static INSTANT: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"^([0-9]([0-9]([0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000)-(0[1-9]|1[0-2])-(0[1-9]|[1-2][0-9]|3[0-1])T([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]+)?(Z|(\+|-)((0[0-9]|1[0-3]):[0-5][0-9]|14:00))$",
    )
});
static TIME: LazyLock<Regex> = LazyLock::new(|| re(r"^([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]+)?$"));
static OID: LazyLock<Regex> = LazyLock::new(|| re(r"^urn:oid:[0-2](\.(0|[1-9][0-9]*))+$"));
static UUID: LazyLock<Regex> =
    LazyLock::new(|| re(r"^urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"));
static BASE64: LazyLock<Regex> = LazyLock::new(|| re(r"^(\s*([0-9a-zA-Z+/=]){4}\s*)+$"));

/// Whether `name` is a resource type of R4.
pub fn is_resource_type(name: &str) -> bool {
    STRUCTURE.types.get(name).is_some_and(|t| t.kind == "resource")
}

/// Validates a resource; empty when it conforms.
pub fn validate(resource: &Value) -> Vec<Issue> {
    let mut issues = Vec::new();
    resource_at(resource, "", &mut issues);
    issues
}

fn issue(issues: &mut Vec<Issue>, path: &str, message: impl Into<String>) {
    issues.push(Issue {
        path: path.to_owned(),
        message: message.into(),
    });
}

fn resource_at(v: &Value, path: &str, issues: &mut Vec<Issue>) {
    let Some(obj) = v.as_object() else {
        return issue(issues, path, "a resource must be a JSON object");
    };
    let Some(rt) = obj.get("resourceType").and_then(Value::as_str) else {
        return issue(issues, path, "resourceType is missing");
    };
    if !is_resource_type(rt) {
        return issue(issues, path, format!("{rt:?} is not an R4 resource type"));
    }
    let here = if path.is_empty() {
        rt.to_owned()
    } else {
        format!("{path}/*{rt}")
    };
    object_of(rt, obj, &here, true, issues);
}

/// Checks an object against the elements of `type_name`.
fn object_of(
    type_name: &str,
    obj: &serde_json::Map<String, Value>,
    path: &str,
    is_resource: bool,
    issues: &mut Vec<Issue>,
) {
    let Some(def) = STRUCTURE.types.get(type_name) else {
        return issue(issues, path, format!("type {type_name} is unknown"));
    };
    if obj.is_empty() || (is_resource && obj.len() == 1) {
        return issue(issues, path, "an element must have content");
    }
    let mut choices: HashMap<&str, &str> = HashMap::new();
    for (key, value) in obj {
        if is_resource && key == "resourceType" {
            continue;
        }
        let (name, is_extension_part) = match key.strip_prefix('_') {
            Some(n) => (n, true),
            None => (key.as_str(), false),
        };
        let Some(el) = def.elements.iter().find(|e| e.0 == name) else {
            issue(issues, &format!("{path}.{key}"), "unknown element");
            continue;
        };
        if let Some(group) = &el.4
            && let Some(other) = choices.insert(group.as_str(), el.0.as_str())
            && other != el.0
        {
            issue(
                issues,
                &format!("{path}.{key}"),
                format!("only one of {group}[x] may be given (also {other})"),
            );
        }
        let child = format!("{path}.{key}");
        if is_extension_part {
            if !is_primitive(&el.1) {
                issue(
                    issues,
                    &child,
                    format!("{name} is not a primitive element: _{name} is unknown"),
                );
                continue;
            }
            each(value, el.2 == 1, &child, issues, &mut |item, p, issues| {
                if !item.is_null() {
                    element_value("Element", None, item, p, issues);
                }
            });
            continue;
        }
        // In an array of primitives, null stands for a value given only in "_<name>".
        let nulls_allowed = obj.contains_key(&format!("_{name}"));
        each(value, el.2 == 1, &child, issues, &mut |item, p, issues| {
            if item.is_null() && nulls_allowed {
                return;
            }
            element_value(&el.1, el.5.as_deref(), item, p, issues);
        });
    }
    let present = |name: &str| obj.contains_key(name) || obj.contains_key(&format!("_{name}"));
    for el in def.elements.iter().filter(|e| e.3 == 1) {
        match &el.4 {
            // A required choice: one of its alternatives (reported once, by the group).
            Some(group) => {
                let first = def.elements.iter().find(|e| e.4.as_ref() == Some(group));
                if first.is_some_and(|f| f.0 == el.0)
                    && !def
                        .elements
                        .iter()
                        .any(|e| e.4.as_ref() == Some(group) && present(&e.0))
                {
                    issue(issues, &format!("{path}.{group}[x]"), "required element is missing");
                }
            }
            None if !present(&el.0) => issue(issues, &format!("{path}.{}", el.0), "required element is missing"),
            None => {}
        }
    }
    rules(type_name, obj, path, issues);
}

/// The core invariants and security checks carehub enforces beyond structure
/// (bdl-, per-1, att- and the validator's security rules).
fn rules(type_name: &str, obj: &serde_json::Map<String, Value>, path: &str, issues: &mut Vec<Issue>) {
    let text = |k: &str| obj.get(k).and_then(Value::as_str);
    match type_name {
        "Bundle" => {
            let entries = obj
                .get("entry")
                .and_then(Value::as_array)
                .map(Vec::as_slice)
                .unwrap_or_default();
            for (i, e) in entries.iter().enumerate() {
                if let Some(url) = e.get("fullUrl").and_then(Value::as_str)
                    && !is_absolute(url)
                {
                    issue(
                        issues,
                        &format!("{path}.entry[{i}].fullUrl"),
                        "the fullUrl must be an absolute URL".to_owned(),
                    );
                }
                if text("type") == Some("searchset")
                    && e.get("resource").is_some_and(|r| {
                        r.get("id").is_none()
                            && r.get("resourceType").and_then(Value::as_str) != Some("OperationOutcome")
                    })
                {
                    issue(
                        issues,
                        &format!("{path}.entry[{i}].resource"),
                        "search results must have ids",
                    );
                }
            }
            let mut relations = std::collections::HashSet::new();
            let links = obj
                .get("link")
                .and_then(Value::as_array)
                .map(Vec::as_slice)
                .unwrap_or_default();
            for (i, l) in links.iter().enumerate() {
                if let Some(r) = l.get("relation").and_then(Value::as_str)
                    && !relations.insert(r)
                {
                    issue(
                        issues,
                        &format!("{path}.link[{i}]"),
                        format!("the link relation {r:?} may occur only once"),
                    );
                }
            }
        }
        "Period" => {
            if let (Some(start), Some(end)) = (text("start"), text("end"))
                && !period_in_order(start, end)
            {
                issue(issues, path, "per-1: start must have a lower value than end");
            }
        }
        "Attachment" => {
            if let (Some(data), Some(size)) = (text("data"), obj.get("size").and_then(Value::as_u64)) {
                use base64::Engine as _;
                let clean: String = data.chars().filter(|c| !c.is_whitespace()).collect();
                if let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(clean)
                    && bytes.len() as u64 != size
                {
                    issue(
                        issues,
                        &format!("{path}.size"),
                        format!("size {size} does not match the data's {} bytes", bytes.len()),
                    );
                }
            }
        }
        "Coding" => {
            if let Some(system) = text("system")
                && !is_absolute(system)
            {
                issue(
                    issues,
                    &format!("{path}.system"),
                    "Coding.system must be an absolute URI".to_owned(),
                );
            }
        }
        _ => {}
    }
}

/// per-1 as FHIRPath evaluates `start <= end`: instants compare as
/// instants; values of different precision compare on what they share, and
/// where that is equal the comparison is empty, which fails the constraint.
fn period_in_order(start: &str, end: &str) -> bool {
    if let (Ok(s), Ok(e)) = (
        chrono::DateTime::parse_from_rfc3339(start),
        chrono::DateTime::parse_from_rfc3339(end),
    ) {
        return s <= e;
    }
    if start.len() == end.len() {
        return start <= end; // same precision: ISO text orders as time does
    }
    let shared = start.len().min(end.len()).min(10);
    start[..shared.min(start.len())] < end[..shared.min(end.len())]
}

/// An absolute URI (`scheme:…`), as fullUrl and Coding.system must be.
fn is_absolute(uri: &str) -> bool {
    uri.split_once(':').is_some_and(|(scheme, rest)| {
        !rest.is_empty()
            && scheme.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            && scheme.chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
    })
}

/// Applies `f` to a single value or to each item of an array, checking which
/// of the two the element's cardinality allows.
fn each(
    value: &Value,
    multiple: bool,
    path: &str,
    issues: &mut Vec<Issue>,
    f: &mut dyn FnMut(&Value, &str, &mut Vec<Issue>),
) {
    match (value, multiple) {
        (Value::Array(items), true) => {
            if items.is_empty() {
                return issue(issues, path, "an array must not be empty");
            }
            for (i, item) in items.iter().enumerate() {
                f(item, &format!("{path}[{i}]"), issues);
            }
        }
        (Value::Array(_), false) => issue(issues, path, "a single value is expected, not an array"),
        (_, true) => issue(issues, path, "an array is expected"),
        (v, false) => f(v, path, issues),
    }
}

fn is_primitive(type_name: &str) -> bool {
    STRUCTURE
        .types
        .get(type_name)
        .is_some_and(|t| t.kind == "primitive-type")
}

fn element_value(type_name: &str, binding: Option<&str>, v: &Value, path: &str, issues: &mut Vec<Issue>) {
    if type_name == "Resource" {
        return resource_at(v, path, issues);
    }
    if is_primitive(type_name) {
        return primitive(type_name, binding, v, path, issues);
    }
    let target = type_name.strip_prefix('#').unwrap_or(type_name);
    match v {
        Value::Object(obj) => object_of(target, obj, path, false, issues),
        _ => issue(issues, path, format!("a {type_name} must be a JSON object")),
    }
}

fn primitive(type_name: &str, binding: Option<&str>, v: &Value, path: &str, issues: &mut Vec<Issue>) {
    let ok = match type_name {
        "boolean" => v.is_boolean(),
        "integer" => v.as_i64().is_some_and(|n| i32::try_from(n).is_ok()),
        "positiveInt" => v.as_i64().is_some_and(|n| n > 0 && i32::try_from(n).is_ok()),
        "unsignedInt" => v.as_i64().is_some_and(|n| n >= 0 && i32::try_from(n).is_ok()),
        "decimal" => v.is_number(),
        _ => match v.as_str() {
            None => false,
            Some(s) => {
                if s.is_empty() {
                    return issue(issues, path, "a string must not be empty");
                }
                match type_name {
                    "id" => ID.is_match(s),
                    "code" => CODE.is_match(s),
                    "date" => DATE.is_match(s),
                    "dateTime" => DATE_TIME.is_match(s),
                    "instant" => INSTANT.is_match(s),
                    "time" => TIME.is_match(s),
                    "oid" => OID.is_match(s),
                    "uuid" => UUID.is_match(s),
                    "uri" | "url" | "canonical" => !s.chars().any(char::is_whitespace),
                    "base64Binary" => BASE64.is_match(s),
                    "xhtml" => xhtml(s),
                    // string, markdown
                    _ => true,
                }
            }
        },
    };
    if !ok {
        // The element is named, its value never quoted: it may be a birth
        // date or a name (hardening item 13).
        return issue(issues, path, format!("the value is not a valid {type_name}"));
    }
    if let (Some(url), Some(code)) = (binding, v.as_str())
        && let Some(codes) = STRUCTURE.valuesets.get(url)
        && codes.binary_search_by(|c| c.as_str().cmp(code)).is_err()
    {
        issue(issues, path, format!("the code is not in the required value set {url}"));
    }
}

/// Narrative: one XHTML `div` in the XHTML namespace, without active content.
fn xhtml(s: &str) -> bool {
    let t = s.trim();
    let lower = t.to_ascii_lowercase();
    t.starts_with("<div")
        && t.ends_with("</div>")
        && t.contains("xmlns=\"http://www.w3.org/1999/xhtml\"")
        && !lower.contains("<script")
        && !lower.contains("javascript:")
        && !has_event_attribute(&lower)
}

/// `onclick=`-style attributes inside tags.
fn has_event_attribute(lower: &str) -> bool {
    lower
        .split('<')
        .skip(1)
        .filter_map(|tag| tag.split('>').next())
        .any(|tag| {
            tag.split_whitespace()
                .skip(1)
                .any(|attr| attr.starts_with("on") && attr.contains('='))
        })
}

/// One case of the FHIR validator test cases (`cases.json` in their folder),
/// as this validation judges it.
#[derive(Debug, Clone)]
pub struct CaseResult {
    pub name: String,
    pub expected_error_count: usize,
    /// What this validation found (a file that is not JSON: one issue saying so).
    pub issues: Vec<Issue>,
}

impl CaseResult {
    /// Judged right: a valid case (no expected errors) accepted, an invalid one
    /// refused. Error counts are not compared: the official validator also
    /// checks invariants, profiles and terminology, which carehub does not.
    pub fn right(&self) -> bool {
        (self.expected_error_count == 0) == self.issues.is_empty()
    }
}

#[derive(Deserialize)]
struct Case {
    name: String,
    file: String,
    expected_error_count: usize,
}

/// How many cases were judged right: valid ones accepted, invalid ones refused.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CaseTally {
    pub valid: usize,
    pub valid_accepted: usize,
    pub invalid: usize,
    pub invalid_refused: usize,
}

impl CaseTally {
    pub fn of(results: &[CaseResult]) -> Self {
        let mut t = CaseTally::default();
        for r in results {
            if r.expected_error_count == 0 {
                t.valid += 1;
                t.valid_accepted += usize::from(r.right());
            } else {
                t.invalid += 1;
                t.invalid_refused += usize::from(r.right());
            }
        }
        t
    }
}

/// Validates every case listed in `dir/cases.json`.
pub fn judge_cases(dir: &std::path::Path) -> std::io::Result<Vec<CaseResult>> {
    let cases: Vec<Case> = serde_json::from_str(&std::fs::read_to_string(dir.join("cases.json"))?)?;
    let mut out = Vec::with_capacity(cases.len());
    for case in cases {
        let text = std::fs::read_to_string(dir.join(&case.file))?;
        let issues = match serde_json::from_str::<Value>(text.trim_start_matches('\u{feff}')) {
            Ok(v) => validate(&v),
            Err(e) => vec![Issue {
                path: String::new(),
                message: format!("not JSON: {e}"),
            }],
        };
        out.push(CaseResult {
            name: case.name,
            expected_error_count: case.expected_error_count,
            issues,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_plain_patient_conforms() {
        let p = json!({
            "resourceType": "Patient",
            "identifier": [{ "system": "urn:mrn", "value": "1" }],
            "gender": "female",
            "birthDate": "1980-02-29",
            "deceasedBoolean": false,
            "text": { "status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">x</div>" },
        });
        assert_eq!(validate(&p), vec![]);
    }

    #[test]
    fn names_each_structural_error() {
        let p = json!({
            "resourceType": "Patient",
            "identifier": { "system": "urn:mrn", "value": "1" },
            "gender": "woman",
            "birthDate": "1980-13-01",
            "deceasedBoolean": false,
            "deceasedDateTime": "2020",
            "favouriteColour": "blue",
            "name": [],
            "contact": [{ "gender": "male", "telecom": [{ "value": "" }] }],
        });
        let issues = validate(&p);
        let at: Vec<&str> = issues.iter().map(|i| i.path.as_str()).collect();
        assert!(at.contains(&"Patient.identifier"), "{issues:?}");
        assert!(at.contains(&"Patient.gender"), "{issues:?}");
        assert!(at.contains(&"Patient.birthDate"), "{issues:?}");
        assert!(at.iter().any(|p| p.starts_with("Patient.deceased")), "{issues:?}");
        assert!(at.contains(&"Patient.favouriteColour"), "{issues:?}");
        assert!(at.contains(&"Patient.name"), "{issues:?}");
        assert!(at.contains(&"Patient.contact[0].telecom[0].value"), "{issues:?}");
        assert_eq!(issues.len(), 7, "{issues:?}");
    }

    #[test]
    fn required_elements_and_contained_resources() {
        let sr = json!({
            "resourceType": "ServiceRequest",
            "contained": [{ "resourceType": "Practitioner", "id": "p1", "active": "yes" }],
            "intent": "order",
        });
        let issues = validate(&sr);
        assert!(issues.iter().any(|i| i.path == "ServiceRequest.status"), "{issues:?}");
        assert!(issues.iter().any(|i| i.path == "ServiceRequest.subject"), "{issues:?}");
        assert!(
            issues
                .iter()
                .any(|i| i.path == "ServiceRequest.contained[0]/*Practitioner.active"),
            "{issues:?}"
        );
        assert!(!validate(&json!({ "resourceType": "Nonsense" })).is_empty());
        assert!(!validate(&json!({ "resourceType": "Patient", "id": "a b" })).is_empty());
    }
}
