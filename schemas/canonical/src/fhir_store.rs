//! FHIR resources as written to the FHIR endpoint, every version verbatim
//! (`fhir_resource_version`) and the current one with its search keys
//! (`fhir_resource`). The connector decides what is valid; this module only
//! keeps versions consistent: a write names the version it replaces, and
//! loses (returns `None`) when another writer got there first.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use crate::Result;

/// Types the HL7 v2 pipeline loads into this store from converted messages
/// (`[pipelines.hl7] load_fhir`) that nothing else writes: the FHIR
/// endpoint serves them read-only.
pub const LOADED_FROM_HL7: &[&str] = &[
    "Account",
    "AllergyIntolerance",
    "Appointment",
    "ChargeItem",
    "Condition",
    "Coverage",
    "Device",
    "Encounter",
    "EpisodeOfCare",
    "Immunization",
    "Location",
    "Medication",
    "MedicationDispense",
    "MedicationRequest",
    "MessageHeader",
    "NutritionOrder",
    "PractitionerRole",
    "Procedure",
    "RelatedPerson",
    "ResearchStudy",
    "Specimen",
    "SupplyRequest",
];

/// One version of a resource.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct StoredResource {
    pub resource_type: String,
    pub id: String,
    pub version_id: i32,
    pub last_updated: DateTime<Utc>,
    pub deleted: bool,
    /// The JSON text; `None` for a delete.
    pub body: Option<String>,
    /// The patient compartment it belongs to, `Patient/<id>`.
    pub patient_ref: Option<String>,
}

/// What search and conditional interactions look up, taken from the body.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SearchKeys {
    /// `system|value`.
    pub identifiers: Vec<String>,
    /// `Patient/<id>`.
    pub patient_ref: Option<String>,
    pub status: Option<String>,
    /// `system|code`.
    pub codes: Vec<String>,
}

/// A write: the new version and what it replaces.
#[derive(Debug, Clone, Copy)]
pub struct Write<'a> {
    pub resource_type: &'a str,
    pub id: &'a str,
    /// The current version this write replaces (`None`: the resource is new here).
    pub replaces: Option<i32>,
    /// The number the new version gets.
    pub version_id: i32,
    pub body: Option<&'a str>,
    pub method: &'a str,
    pub keys: &'a SearchKeys,
    /// When it is written (the server's clock; `meta.lastUpdated` says the same).
    pub at: DateTime<Utc>,
    /// The event that feeds it to the hub, if any.
    pub event_id: Option<uuid::Uuid>,
}

/// The columns of a [`StoredResource`] (a macro: sqlx wants literal SQL).
macro_rules! columns {
    () => {
        "resource_type, id, version_id, last_updated, deleted, body, patient_ref"
    };
}

/// The current version (a delete included).
pub async fn current<'e>(
    ex: impl sqlx::PgExecutor<'e>,
    resource_type: &str,
    id: &str,
) -> Result<Option<StoredResource>> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM fhir_resource WHERE resource_type = $1 AND id = $2"
    ))
    .bind(resource_type)
    .bind(id)
    .fetch_optional(ex)
    .await?)
}

/// The current version, locked until the transaction ends.
pub async fn lock_current(conn: &mut PgConnection, resource_type: &str, id: &str) -> Result<Option<StoredResource>> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM fhir_resource WHERE resource_type = $1 AND id = $2 FOR UPDATE"
    ))
    .bind(resource_type)
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?)
}

/// One past version (`vread`).
pub async fn version<'e>(
    ex: impl sqlx::PgExecutor<'e>,
    resource_type: &str,
    id: &str,
    version_id: i32,
) -> Result<Option<StoredResource>> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM fhir_resource_version WHERE resource_type = $1 AND id = $2 AND version_id = $3"
    ))
    .bind(resource_type)
    .bind(id)
    .bind(version_id)
    .fetch_optional(ex)
    .await?)
}

/// `_history` of one resource (`id`) or of a type, newest first, with the
/// method each version was written by.
pub async fn history<'e>(
    ex: impl sqlx::PgExecutor<'e>,
    resource_type: &str,
    id: Option<&str>,
    since: Option<DateTime<Utc>>,
    count: i64,
) -> Result<Vec<(StoredResource, String)>> {
    let rows: Vec<HistoryRow> = sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        ", method FROM fhir_resource_version
         WHERE resource_type = $1 AND ($2::text IS NULL OR id = $2)
           AND ($3::timestamptz IS NULL OR last_updated >= $3)
         ORDER BY last_updated DESC, version_id DESC LIMIT $4"
    ))
    .bind(resource_type)
    .bind(id)
    .bind(since)
    .bind(count)
    .fetch_all(ex)
    .await?;
    Ok(rows.into_iter().map(|r| (r.resource, r.method)).collect())
}

#[derive(sqlx::FromRow)]
struct HistoryRow {
    #[sqlx(flatten)]
    resource: StoredResource,
    method: String,
}

/// Writes a version and makes it current. Returns false when the current
/// version is no longer `w.replaces` (a concurrent writer won): nothing is written.
pub async fn write(conn: &mut PgConnection, w: Write<'_>) -> Result<bool> {
    let k = w.keys;
    let res = sqlx::query(
        "INSERT INTO fhir_resource (resource_type, id, version_id, last_updated, deleted, body,
                                    identifiers, patient_ref, status, codes)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
         ON CONFLICT (resource_type, id) DO UPDATE
            SET version_id = EXCLUDED.version_id, last_updated = EXCLUDED.last_updated,
                deleted = EXCLUDED.deleted, body = EXCLUDED.body, identifiers = EXCLUDED.identifiers,
                patient_ref = EXCLUDED.patient_ref, status = EXCLUDED.status, codes = EXCLUDED.codes
            WHERE fhir_resource.version_id = $11",
    )
    .bind(w.resource_type)
    .bind(w.id)
    .bind(w.version_id)
    .bind(w.at)
    .bind(w.body.is_none())
    .bind(w.body)
    .bind(&k.identifiers)
    .bind(&k.patient_ref)
    .bind(&k.status)
    .bind(&k.codes)
    // A new resource must not exist yet: no version is -1.
    .bind(w.replaces.unwrap_or(-1))
    .execute(&mut *conn)
    .await?;
    if res.rows_affected() == 0 {
        return Ok(false);
    }
    sqlx::query(
        "INSERT INTO fhir_resource_version (resource_type, id, version_id, last_updated, deleted, body,
                                            patient_ref, method, event_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(w.resource_type)
    .bind(w.id)
    .bind(w.version_id)
    .bind(w.at)
    .bind(w.body.is_none())
    .bind(w.body)
    .bind(&k.patient_ref)
    .bind(w.method)
    .bind(w.event_id)
    .execute(&mut *conn)
    .await?;
    Ok(true)
}

/// The current ids of `resource_type` holding identifier `system|value`.
pub async fn ids_with_identifier<'e>(
    ex: impl sqlx::PgExecutor<'e>,
    resource_type: &str,
    identifier: &str,
) -> Result<Vec<String>> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT id FROM fhir_resource
         WHERE resource_type = $1 AND NOT deleted AND identifiers @> ARRAY[$2]",
    )
    .bind(resource_type)
    .bind(identifier)
    .fetch_all(ex)
    .await?;
    Ok(rows.into_iter().map(|(id,)| id).collect())
}

/// Search over stored resources of one type.
#[derive(Debug, Clone, Default)]
pub struct StoredQuery {
    pub ids: Vec<String>,
    /// `system|value` matches exactly; a bare `value` matches it in any system.
    pub identifier: Option<String>,
    /// `Patient/<id>`.
    pub patient_ref: Option<String>,
    pub status: Option<String>,
    /// As `identifier`, over the codes.
    pub code: Option<String>,
    /// (SQL operator, time).
    pub last_updated: Vec<(&'static str, DateTime<Utc>)>,
    pub count: i64,
    pub offset: i64,
    pub descending: bool,
}

/// The current, not deleted resources of `resource_type` matching `q`.
pub async fn search<'e>(
    ex: impl sqlx::PgExecutor<'e>,
    resource_type: &str,
    q: &StoredQuery,
) -> Result<Vec<StoredResource>> {
    let mut b = sqlx::QueryBuilder::<sqlx::Postgres>::new(concat!(
        "SELECT ",
        columns!(),
        " FROM fhir_resource WHERE NOT deleted AND resource_type = "
    ));
    b.push_bind(resource_type.to_owned());
    if !q.ids.is_empty() {
        b.push(" AND id = ANY(").push_bind(q.ids.clone()).push(")");
    }
    for (column, value) in [("identifiers", &q.identifier), ("codes", &q.code)] {
        let Some(v) = value else { continue };
        if v.contains('|') {
            b.push(format!(" AND {column} @> ARRAY["))
                .push_bind(v.clone())
                .push("]");
        } else {
            // Any system: "<anything>|value".
            b.push(format!(" AND EXISTS (SELECT 1 FROM unnest({column}) t WHERE t LIKE "))
                .push_bind(format!("%|{}", v.replace('%', "\\%").replace('_', "\\_")))
                .push(")");
        }
    }
    if let Some(p) = &q.patient_ref {
        b.push(" AND patient_ref = ").push_bind(p.clone());
    }
    if let Some(s) = &q.status {
        b.push(" AND status = ").push_bind(s.clone());
    }
    for (op, at) in &q.last_updated {
        b.push(format!(" AND last_updated {op} ")).push_bind(*at);
    }
    b.push(if q.descending {
        " ORDER BY last_updated DESC, id"
    } else {
        " ORDER BY last_updated, id"
    });
    b.push(" LIMIT ")
        .push_bind(q.count)
        .push(" OFFSET ")
        .push_bind(q.offset);
    Ok(b.build_query_as().fetch_all(ex).await?)
}

/// What search and conditional interactions look up, from the body.
pub fn search_keys(resource_type: &str, id: &str, v: &serde_json::Value) -> SearchKeys {
    let identifiers = v["identifier"]
        .as_array()
        .map(|ids| {
            ids.iter()
                .filter_map(|i| {
                    let value = i["value"].as_str()?;
                    Some(format!("{}|{value}", i["system"].as_str().unwrap_or("")))
                })
                .collect()
        })
        .unwrap_or_default();
    let patient_ref = if resource_type == "Patient" {
        Some(format!("Patient/{id}"))
    } else {
        ["subject", "patient", "for", "beneficiary"]
            .iter()
            .filter_map(|e| v[*e]["reference"].as_str())
            .find(|r| r.starts_with("Patient/"))
            .map(str::to_owned)
    };
    let mut codes = Vec::new();
    for element in ["code", "category", "type"] {
        let concepts = match &v[element] {
            serde_json::Value::Array(items) => items.iter().collect(),
            c @ serde_json::Value::Object(_) => vec![c],
            _ => vec![],
        };
        for c in concepts {
            for coding in c["coding"].as_array().into_iter().flatten() {
                if let Some(code) = coding["code"].as_str() {
                    codes.push(format!("{}|{code}", coding["system"].as_str().unwrap_or("")));
                }
            }
        }
    }
    SearchKeys {
        identifiers,
        patient_ref,
        status: v["status"].as_str().map(str::to_owned),
        codes,
    }
}
