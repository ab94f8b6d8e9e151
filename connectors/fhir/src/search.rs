//! Search over the canonical record: `GET /<type>?<params>` → a searchset
//! Bundle. Parameters: `_id`, `_lastUpdated` (prefixes eq, gt, ge, lt, le),
//! `_count` (default 20, at most 100), `_sort` (`_lastUpdated` or
//! `-_lastUpdated`), `_offset` (paging, as the `next` link gives it); Patient:
//! `identifier` (`system|value`, `value`, `system|`); ServiceRequest:
//! `patient` / `subject`, `status`, `identifier`; Task: `patient`, `status`.
//! An unknown parameter or a malformed value is refused (400), never ignored.

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::{Postgres, QueryBuilder};
use uuid::Uuid;

/// A search, parsed and checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Search {
    pub resource_type: String,
    /// `_id` as given (stored resources may have client-chosen ids).
    pub ids: Vec<String>,
    pub identifier: Option<(Option<String>, Option<String>)>,
    /// `patient` / `subject` as `Patient/<id>`.
    pub patient: Option<String>,
    pub status: Option<String>,
    /// `code` (Observation): (system, code).
    pub code: Option<(Option<String>, Option<String>)>,
    pub last_updated: Vec<(&'static str, DateTime<Utc>)>,
    /// `date` (Observation: effective time), with its prefixes.
    pub date: Vec<(&'static str, DateTime<Utc>)>,
    /// `_include`: the elements whose references are added to the Bundle.
    pub include: Vec<&'static str>,
    pub count: i64,
    pub offset: i64,
    pub descending: bool,
}

pub const DEFAULT_COUNT: i64 = 20;
pub const MAX_COUNT: i64 = 100;

/// `Patient/<id>` or `<id>` → `Patient/<id>`.
fn reference(v: &str, ty: &str) -> Result<String, String> {
    let id = v.strip_prefix(&format!("{ty}/")).unwrap_or(v);
    if id.is_empty() || id.contains('/') {
        return Err(format!("the value is not a {ty} reference"));
    }
    Ok(format!("{ty}/{id}"))
}

/// Types kept only in the FHIR store (written over FHIR, or loaded by the
/// HL7 v2 pipeline), whose search takes identifier, code, status, patient.
fn stored_only(resource_type: &str) -> bool {
    crate::store::is_stored(resource_type) && !crate::store::CANONICAL.contains(&resource_type)
}

/// The element an `_include` follows (`ServiceRequest:patient` → `subject`).
fn include(resource_type: &str, value: &str) -> Result<&'static str, String> {
    let element = match value.split_once(':') {
        Some(("ServiceRequest", "patient" | "subject")) | Some(("Observation", "patient" | "subject")) => "subject",
        Some(("ServiceRequest", "requester")) => "requester",
        Some(("Task", "patient")) => "for",
        Some(("Task", "focus" | "based-on")) => "focus",
        Some(("Observation", "based-on")) => "basedOn",
        Some(("Patient", "organization")) => "managingOrganization",
        _ => return Err(format!("_include {value:?} is not supported")),
    };
    if !value.starts_with(&format!("{resource_type}:")) {
        return Err(format!("_include {value:?} does not start from {resource_type}"));
    }
    Ok(element)
}

/// A token parameter: `system|code`, `code`, `system|`.
fn token(value: &str) -> (Option<String>, Option<String>) {
    match value.split_once('|') {
        Some((sys, val)) => (
            Some(sys.to_owned()).filter(|x| !x.is_empty()),
            Some(val.to_owned()).filter(|x| !x.is_empty()),
        ),
        None => (None, Some(value.to_owned())),
    }
}

fn date(v: &str) -> Result<(&'static str, DateTime<Utc>), String> {
    let (op, rest) = match v.get(..2) {
        Some("eq") => ("=", &v[2..]),
        Some("gt") => (">", &v[2..]),
        Some("ge") => (">=", &v[2..]),
        Some("lt") => ("<", &v[2..]),
        Some("le") => ("<=", &v[2..]),
        Some(p) if p.chars().all(|c| c.is_ascii_alphabetic()) => {
            return Err(format!("prefix {p:?} is not supported (eq, gt, ge, lt, le)"));
        }
        _ => ("=", v),
    };
    if let Ok(t) = DateTime::parse_from_rfc3339(rest) {
        return Ok((op, t.with_timezone(&Utc)));
    }
    NaiveDate::parse_from_str(rest, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| (op, t.and_utc()))
        .ok_or_else(|| "the value is not a date or instant".to_owned())
}

/// A parameter name fit for a diagnostic: FHIR's search names are short
/// and printable; anything else is not quoted.
fn safe_name(name: &str) -> String {
    if !name.is_empty() && name.len() <= 64 && name.bytes().all(|b| b.is_ascii_graphic()) {
        format!("{name:?}")
    } else {
        "(unreadable name)".to_owned()
    }
}

impl Search {
    /// Reads the query parameters of a search on `resource_type`.
    pub fn parse(resource_type: &str, params: &[(String, String)]) -> Result<Search, String> {
        let mut s = Search {
            resource_type: resource_type.to_owned(),
            ids: Vec::new(),
            identifier: None,
            patient: None,
            status: None,
            code: None,
            last_updated: Vec::new(),
            date: Vec::new(),
            include: Vec::new(),
            count: DEFAULT_COUNT,
            offset: 0,
            descending: false,
        };
        for (name, value) in params {
            // A value no resource can hold never reaches the database
            // (hardening item 12: a NUL was answered 503 "try again").
            if value.chars().any(|c| c == '\0') || name.chars().any(char::is_control) {
                return Err(format!(
                    "search parameter {} holds a NUL or control character",
                    safe_name(name)
                ));
            }
            match (resource_type, name.as_str()) {
                (_, "_id") => {
                    for v in value.split(',').map(str::trim) {
                        if v.is_empty()
                            || v.len() > 64
                            || !v.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
                        {
                            return Err("_id holds a value that is not an id".to_owned());
                        }
                        s.ids.push(v.to_owned());
                    }
                }
                // Checked by the endpoint before any handler: JSON only (else 406).
                (_, "_format") => {}
                (_, "_lastUpdated") => s.last_updated.push(date(value)?),
                ("Observation", "date") => s.date.push(date(value)?),
                (_, "_include") => s.include.push(include(resource_type, value)?),
                (_, "_count") => {
                    // A negative page size is an error, not an empty page (item 17).
                    let n: i64 = value
                        .parse()
                        .ok()
                        .filter(|n| *n >= 0)
                        .ok_or_else(|| "_count is not a number of entries (0 or more)".to_owned())?;
                    s.count = n.min(MAX_COUNT);
                }
                (_, "_offset") => {
                    s.offset = value
                        .parse::<i64>()
                        .ok()
                        .filter(|n| *n >= 0)
                        .ok_or_else(|| "_offset is not a position (0 or more)".to_owned())?;
                }
                (_, "_sort") => match value.as_str() {
                    "_lastUpdated" => s.descending = false,
                    "-_lastUpdated" => s.descending = true,
                    other => {
                        return Err(format!(
                            "_sort {other:?} is not supported (_lastUpdated, -_lastUpdated)"
                        ));
                    }
                },
                ("Patient" | "ServiceRequest" | "Organization" | "Practitioner" | "Invoice", "identifier") => {
                    s.identifier = Some(token(value));
                }
                ("Observation", "code") => s.code = Some(token(value)),
                ("ServiceRequest" | "Observation", "patient" | "subject") | ("Task", "patient") => {
                    s.patient = Some(reference(value, "Patient")?);
                }
                ("ServiceRequest" | "Task" | "Observation" | "Invoice", "status") => s.status = Some(value.clone()),
                ("Invoice", "patient" | "subject") => s.patient = Some(reference(value, "Patient")?),
                (t, "identifier") if stored_only(t) => s.identifier = Some(token(value)),
                (t, "code") if stored_only(t) => s.code = Some(token(value)),
                (t, "status") if stored_only(t) => s.status = Some(value.clone()),
                (t, "patient" | "subject") if stored_only(t) => {
                    s.patient = Some(reference(value, "Patient")?);
                }
                (_, other) => {
                    return Err(format!(
                        "search parameter {} is not supported on {resource_type}",
                        safe_name(other)
                    ));
                }
            }
        }
        Ok(s)
    }

    /// Whether the canonical record can hold matches (else only the FHIR store).
    pub fn has_canonical(&self) -> bool {
        !stored_only(&self.resource_type)
    }

    /// The same search over the FHIR store, for the first `limit` matches.
    pub fn stored(
        &self,
        compartment: Option<Uuid>,
        limit: i64,
        offset: i64,
    ) -> carehub_schema::fhir_store::StoredQuery {
        let join = |t: &Option<(Option<String>, Option<String>)>| {
            t.as_ref().and_then(|(sys, val)| {
                let val = val.clone()?;
                Some(match sys {
                    Some(sys) => format!("{sys}|{val}"),
                    None => val,
                })
            })
        };
        carehub_schema::fhir_store::StoredQuery {
            ids: self.ids.clone(),
            identifier: join(&self.identifier),
            patient_ref: compartment
                .map(|p| format!("Patient/{p}"))
                .or_else(|| self.patient.clone()),
            status: self.status.clone(),
            code: join(&self.code),
            last_updated: self.last_updated.clone(),
            count: limit,
            offset,
            descending: self.descending,
        }
    }

    /// The ids and times of the first `limit` matches after `offset`, in
    /// order; `compartment` limits to one patient.
    pub fn query(&self, compartment: Option<Uuid>, limit: i64, offset: i64) -> QueryBuilder<Postgres> {
        let (table, id, patient, updated) = match self.resource_type.as_str() {
            "Patient" => ("patient t", "t.id", "t.id", "t.updated_at"),
            "ServiceRequest" => ("service_order t", "t.id", "t.patient_id", "t.updated_at"),
            "Observation" => ("observation t", "t.id", "t.patient_id", "t.updated_at"),
            "Invoice" => ("invoice t", "t.id", "t.patient_id", "t.updated_at"),
            // Not in a patient compartment: the handler refuses patient-scoped searches.
            "Organization" => ("organization t", "t.id", "NULL::uuid", "t.updated_at"),
            "Practitioner" => ("practitioner t", "t.id", "NULL::uuid", "t.updated_at"),
            _ => (
                "lab_job t JOIN service_order o ON o.id = t.order_id",
                "t.order_id",
                "o.patient_id",
                "t.updated_at",
            ),
        };
        let mut q = QueryBuilder::new(format!("SELECT {id}, {updated} FROM {table} WHERE true"));
        if !self.ids.is_empty() {
            // Canonical ids are UUIDs; another id can only be a stored resource.
            let ids: Vec<Uuid> = self.ids.iter().filter_map(|i| Uuid::parse_str(i).ok()).collect();
            q.push(format!(" AND {id} = ANY(")).push_bind(ids).push(")");
        }
        if let Some(p) = &self.patient {
            match p.strip_prefix("Patient/").and_then(|i| Uuid::parse_str(i).ok()) {
                Some(p) => q.push(format!(" AND {patient} = ")).push_bind(p),
                None => q.push(" AND false"),
            };
        }
        if let Some(p) = compartment {
            q.push(format!(" AND {patient} = ")).push_bind(p);
        }
        if let Some(status) = &self.status {
            q.push(" AND t.status = ").push_bind(status.clone());
        }
        for (op, at) in &self.last_updated {
            q.push(format!(" AND {updated} {op} ")).push_bind(*at);
        }
        for (op, at) in &self.date {
            q.push(format!(" AND t.effective_at {op} ")).push_bind(*at);
        }
        if let Some((system, code)) = &self.code {
            if let Some(sys) = system {
                q.push(" AND t.code_system = ").push_bind(sys.clone());
            }
            if let Some(c) = code {
                q.push(" AND t.code = ").push_bind(c.clone());
            }
        }
        if let Some((system, value)) = &self.identifier {
            match self.resource_type.as_str() {
                "Organization" | "Practitioner" => {
                    if let Some(sys) = system {
                        q.push(" AND t.identifier_system = ").push_bind(sys.clone());
                    }
                    if let Some(val) = value {
                        q.push(" AND t.identifier_value = ").push_bind(val.clone());
                    }
                }
                "Invoice" => {
                    if system
                        .as_deref()
                        .is_some_and(|s| s != crate::resources::INVOICE_NUMBER_SYSTEM)
                    {
                        q.push(" AND false");
                    }
                    if let Some(val) = value {
                        q.push(" AND t.number = ").push_bind(val.clone());
                    }
                }
                "Patient" => {
                    q.push(" AND EXISTS (SELECT 1 FROM patient_identifier i WHERE i.patient_id = t.id");
                    if let Some(sys) = system {
                        q.push(" AND i.system = ").push_bind(sys.clone());
                    }
                    if let Some(val) = value {
                        q.push(" AND i.value = ").push_bind(val.clone());
                    }
                    q.push(")");
                }
                _ => {
                    q.push(" AND ((true");
                    if let Some(sys) = system {
                        q.push(" AND t.placer_system = ").push_bind(sys.clone());
                    }
                    if let Some(val) = value {
                        q.push(" AND t.placer_number = ").push_bind(val.clone());
                    }
                    q.push(") OR (t.filler_number IS NOT NULL");
                    if let Some(sys) = system {
                        q.push(" AND t.filler_system = ").push_bind(sys.clone());
                    }
                    if let Some(val) = value {
                        q.push(" AND t.filler_number = ").push_bind(val.clone());
                    }
                    q.push("))");
                }
            }
        }
        q.push(format!(
            " ORDER BY {updated} {dir}, {id} {dir} LIMIT ",
            dir = if self.descending { "DESC" } else { "ASC" }
        ));
        q.push_bind(limit).push(" OFFSET ").push_bind(offset);
        q
    }

    /// The query string of another page of this search.
    pub fn page_link(&self, params: &[(String, String)], offset: i64) -> String {
        let mut out: Vec<String> = params
            .iter()
            .filter(|(k, _)| k != "_offset")
            .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
            .collect();
        out.push(format!("_offset={offset}"));
        format!("{}?{}", self.resource_type, out.join("&"))
    }
}

/// Everything but RFC 3986's unreserved characters.
const RESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encodes a query component (RFC 3986 unreserved characters kept).
fn encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, RESERVED).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn parameters_parse_and_unknown_ones_are_refused() {
        let s = Search::parse(
            "Patient",
            &p(&[
                ("identifier", "urn:oid:1.2|P-1"),
                ("_lastUpdated", "ge2026-11-01"),
                ("_count", "500"),
                ("_sort", "-_lastUpdated"),
            ]),
        )
        .expect("valid");
        assert_eq!(s.identifier, Some((Some("urn:oid:1.2".into()), Some("P-1".into()))));
        assert_eq!(s.last_updated[0].0, ">=");
        assert_eq!(s.count, MAX_COUNT);
        assert!(s.descending);
        assert!(Search::parse("Patient", &p(&[("name", "x")])).is_err());
        assert!(Search::parse("Patient", &p(&[("_lastUpdated", "sa2026-01-01")])).is_err());
        assert!(Search::parse("Patient", &p(&[("_lastUpdated", "yesterday")])).is_err());
        assert!(Search::parse("Patient", &p(&[("_id", "no/pe")])).is_err());
        assert!(Search::parse("Patient", &p(&[("status", "active")])).is_err());
        let sr = Search::parse(
            "ServiceRequest",
            &p(&[("subject", "Patient/019abf3c-6f0e-71c4-8a11-5d2c9e4f0a13")]),
        )
        .expect("valid");
        assert!(sr.patient.is_some());
        let inc = Search::parse("ServiceRequest", &p(&[("_include", "ServiceRequest:patient")])).expect("valid");
        assert_eq!(inc.include, ["subject"]);
        assert!(Search::parse("ServiceRequest", &p(&[("_include", "Task:patient")])).is_err());
        assert!(Search::parse("ServiceRequest", &p(&[("_include", "ServiceRequest:nothing")])).is_err());
        let d = Search::parse("Observation", &p(&[("date", "lt2027-01-01")])).expect("valid");
        assert_eq!(d.date[0].0, "<");
        assert_eq!(
            sr.page_link(&p(&[("subject", "Patient/x y")]), 20),
            "ServiceRequest?subject=Patient%2Fx%20y&_offset=20"
        );
    }

    /// Hardening items 12, 13 and 17 (on 305005c: a NUL reached PostgreSQL
    /// and was answered 503, `_count=-1` gave 200, errors quoted the value).
    #[test]
    fn nul_and_negative_counts_are_refused_without_quoting_the_value() {
        for (name, value) in [("identifier", "urn:x|MRN\u{0}1"), ("_count", "-1"), ("_id", "a\u{0}")] {
            let err = Search::parse("Patient", &p(&[(name, value)])).expect_err(name);
            assert!(!err.contains("MRN") && !err.contains("-1"), "{err}");
        }
        let err = Search::parse("Patient", &p(&[("_lastUpdated", "1980-13-45T99")])).expect_err("date");
        assert!(!err.contains("1980"), "{err}");
        assert!(Search::parse("Patient", &p(&[("_count", "0")])).is_ok());
    }
}
