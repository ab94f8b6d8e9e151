//! Where a served resource comes from, and what a write does.
//!
//! Reading `<type>/<id>`: the version an EHR wrote (the FHIR store, verbatim)
//! when there is one, a delete answering 410; otherwise the resource
//! generated from the canonical record ([`crate::resources`]). A stored
//! ServiceRequest carries the hub's current status: the lab flow moves it.
//!
//! Writing: validate against R4, store the new version and — for Patient and
//! ServiceRequest — queue the `carehub.fhir.resource.written.v1` event for
//! the intake pipeline, in the caller's transaction; the write's audit entry
//! is returned for the caller to append in that same transaction. The intake pipeline turns the written version
//! into the canonical patient or order, as the HL7 pipeline does for an ORM:
//! the order then enters the lab flow.

use carehub_schema::fhir_store::{self, SearchKeys, StoredResource};
use carehub_schema::{Action, ActorKind, AuditEntry, Envelope, Outbox};
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::auth::{Access, Grant, Principal};
use crate::outcome::{Outcome, Status};
use crate::raw::RawResource;
use crate::resources::{self, Found};
use crate::validate;

/// Event type of a FHIR write the hub takes in (data: resource_type, id, version_id, client).
use carehub_schema::contracts::{FHIR_WRITTEN, ResourceWritten};
const SOURCE: &str = "/carehub/connectors/fhir";

pub use crate::resources::{CANONICAL, HUB_FED, LOADED, WRITABLE, is_served, is_stored};

/// A resource as served.
#[derive(Debug, Clone)]
pub struct Served {
    /// JSON text.
    pub body: String,
    pub version: i32,
    pub updated: DateTime<Utc>,
    /// The patient compartment it is in, `Patient/<id>`.
    pub patient: Option<String>,
}

#[derive(Debug)]
pub enum Lookup {
    Found(Served),
    /// Deleted.
    Gone,
    Missing,
}

impl Served {
    fn from_found(f: Found) -> Self {
        Served {
            body: f.body.to_string(),
            version: f.version,
            updated: f.updated,
            patient: (!f.patient.is_nil()).then(|| format!("Patient/{}", f.patient)),
        }
    }

    /// Whether a `patient/` token for `patient` reaches it.
    pub fn in_compartment(&self, patient: Uuid) -> bool {
        self.patient.as_deref() == Some(format!("Patient/{patient}").as_str())
    }
}

/// The current resource `<resource_type>/<id>`.
pub async fn lookup(conn: &mut PgConnection, resource_type: &str, id: &str) -> carehub_schema::Result<Lookup> {
    if is_stored(resource_type)
        && let Some(s) = fhir_store::current(&mut *conn, resource_type, id).await?
    {
        return Ok(match served_version(conn, s).await? {
            Some(served) => Lookup::Found(served),
            None => Lookup::Gone,
        });
    }
    Ok(match canonical(conn, resource_type, id).await? {
        Some(f) => Lookup::Found(Served::from_found(f)),
        None => Lookup::Missing,
    })
}

/// A stored version as served (`None` for a delete), ServiceRequest with the hub's status.
pub async fn served_version(conn: &mut PgConnection, s: StoredResource) -> carehub_schema::Result<Option<Served>> {
    let Some(mut body) = s.body else {
        return Ok(None);
    };
    if s.resource_type == "ServiceRequest"
        && let Ok(order) = Uuid::parse_str(&s.id)
    {
        let status: Option<(String,)> = sqlx::query_as("SELECT status FROM service_order WHERE id = $1")
            .bind(order)
            .fetch_optional(&mut *conn)
            .await?;
        if let (Some((status,)), Ok(mut raw)) = (status, RawResource::parse(&body))
            && raw.str("status").as_deref() != Some(status.as_str())
        {
            raw.set("status", &json!(status));
            body = raw.to_json();
        }
    }
    Ok(Some(Served {
        body,
        version: s.version_id,
        updated: s.last_updated,
        patient: s.patient_ref,
    }))
}

/// The resource generated from the canonical record, if `id` names one.
pub async fn canonical(
    conn: &mut PgConnection,
    resource_type: &str,
    id: &str,
) -> carehub_schema::Result<Option<Found>> {
    let Ok(id) = Uuid::parse_str(id) else {
        return Ok(None);
    };
    match resource_type {
        "Patient" => resources::patient(conn, id).await,
        "ServiceRequest" => resources::service_request(conn, id).await,
        "Observation" => resources::observation(conn, id).await,
        "Organization" => resources::organization(conn, id).await,
        "Practitioner" => resources::practitioner(conn, id).await,
        "Task" => resources::task(conn, id).await,
        "Invoice" => resources::invoice(conn, id).await,
        _ => Ok(None),
    }
}

/// Who writes, for the audit trail and the hub.
#[derive(Debug, Clone)]
pub struct Writer {
    pub principal: Principal,
    /// Topic of the intake pipeline (`[fhir] intake_topic`).
    pub intake_topic: String,
    /// What the audit entries name as origin (`fhir:PUT Patient/1`).
    pub origin: String,
}

impl Writer {
    pub fn actor_kind(&self) -> ActorKind {
        self.principal.actor_kind()
    }

    /// The writer's [`reach`].
    pub fn reach(&self, resource_type: &str, access: Access) -> Result<Option<Uuid>, Outcome> {
        reach(&self.principal, resource_type, access)
    }
}

/// A token's reach for `access` to `resource_type`: all, one patient's
/// compartment (`Some`), or 403.
pub fn reach(principal: &Principal, resource_type: &str, access: Access) -> Result<Option<Uuid>, Outcome> {
    match principal.grant(resource_type, access) {
        Grant::All => Ok(None),
        Grant::Patient(p) => Ok(Some(p)),
        Grant::None => Err(Outcome::new(
            Status::FORBIDDEN,
            "forbidden",
            format!(
                "the token's scopes do not allow {} {resource_type}",
                if access == Access::Read { "reading" } else { "writing" }
            ),
        )),
    }
}

/// Whether a resource in `patient_ref`'s compartment is within `reach`.
pub fn within(reach: Option<Uuid>, patient_ref: Option<&str>) -> Result<(), Outcome> {
    match reach {
        Some(p) if patient_ref != Some(format!("Patient/{p}").as_str()) => Err(Outcome::new(
            Status::FORBIDDEN,
            "forbidden",
            "the token's patient scope does not reach this resource",
        )),
        _ => Ok(()),
    }
}

/// What a write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteKind {
    Created,
    Updated,
    Deleted,
    /// A conditional create found its match: nothing written.
    Matched,
}

#[derive(Debug, Clone)]
pub struct Written {
    pub resource_type: String,
    pub id: String,
    pub version_id: i32,
    pub last_updated: DateTime<Utc>,
    /// The stored JSON text (`None` after a delete).
    pub body: Option<String>,
    pub kind: WriteKind,
    /// The audit entry of the write, for the caller to append in the same
    /// transaction (`None` when nothing was written).
    pub audit: Option<AuditEntry>,
}

impl Written {
    /// The HTTP status a REST write answers with.
    pub fn status(&self) -> Status {
        match self.kind {
            WriteKind::Created => Status::CREATED,
            WriteKind::Deleted => Status::NO_CONTENT,
            _ => Status::OK,
        }
    }

    pub fn etag(&self) -> String {
        format!("W/\"{}\"", self.version_id)
    }

    pub fn location(&self) -> String {
        format!("{}/{}/_history/{}", self.resource_type, self.id, self.version_id)
    }
}

fn bad(diagnostics: impl Into<String>) -> Outcome {
    Outcome::new(Status::BAD_REQUEST, "invalid", diagnostics)
}

/// Parses and validates a body for `<resource_type>`; structure errors are 400.
pub fn parse(resource_type: &str, text: &str) -> Result<(RawResource, Value), Outcome> {
    let raw = RawResource::parse(text).map_err(|e| bad(format!("the body is not a JSON object: {e}")))?;
    let value: Value = serde_json::from_str(text).map_err(|e| bad(format!("the body is not JSON: {e}")))?;
    match raw.str("resourceType") {
        Some(t) if t == resource_type => {}
        other => {
            return Err(bad(format!("the body's resourceType {other:?} is not {resource_type}")));
        }
    }
    let issues = validate::validate(&value);
    if !issues.is_empty() {
        return Err(Outcome::issues(Status::BAD_REQUEST, "structure", &issues));
    }
    Ok((raw, value))
}

/// The current version number of `<type>/<id>`, stored or canonical, for
/// If-Match and the next version's number (`None` when absent or deleted),
/// with the stored row, locked, when there is one.
async fn current_version(
    conn: &mut PgConnection,
    resource_type: &str,
    id: &str,
) -> carehub_schema::Result<(Option<StoredResource>, Option<i32>)> {
    if let Some(s) = fhir_store::lock_current(conn, resource_type, id).await? {
        let v = (!s.deleted).then_some(s.version_id);
        return Ok((Some(s), v));
    }
    Ok((None, canonical(conn, resource_type, id).await?.map(|f| f.version)))
}

/// `If-Match: W/"3"` → 3.
fn parse_if_match(value: &str) -> Result<i32, Outcome> {
    value
        .trim()
        .trim_start_matches("W/")
        .trim_matches('"')
        .parse()
        .map_err(|_| bad(format!("If-Match {value:?} is not a version ETag such as W/\"1\"")))
}

/// `POST <type>`: a new resource with a server-assigned id; with
/// `If-None-Exist` (`identifier=system|value` or `_id=…`), the match when there
/// is exactly one (nothing written), 412 when there are several.
/// `id`: the id a transaction assigned in advance (for its `urn:uuid:` references).
pub async fn create(
    conn: &mut PgConnection,
    w: &Writer,
    resource_type: &str,
    text: &str,
    if_none_exist: Option<&str>,
    id: Option<String>,
) -> Result<Written, Outcome> {
    writable(resource_type)?;
    let reach = w.reach(resource_type, Access::Write)?;
    let (raw, value) = parse(resource_type, text)?;
    if let Some(criteria) = if_none_exist {
        // Two creates with the same criteria must not both miss each other.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(format!("fhir-create:{resource_type}?{criteria}"))
            .execute(&mut *conn)
            .await?;
        let found = matching(conn, resource_type, criteria).await?;
        match found.as_slice() {
            [] => {}
            [one] => {
                if let Lookup::Found(s) = lookup(conn, resource_type, one).await? {
                    return Ok(Written {
                        resource_type: resource_type.to_owned(),
                        id: one.clone(),
                        version_id: s.version,
                        last_updated: s.updated,
                        body: Some(s.body),
                        kind: WriteKind::Matched,
                        audit: None,
                    });
                }
            }
            many => {
                return Err(Outcome::new(
                    Status::PRECONDITION_FAILED,
                    "multiple-matches",
                    format!("If-None-Exist {criteria:?} matches {} resources", many.len()),
                ));
            }
        }
    }
    let id = id.unwrap_or_else(|| Uuid::now_v7().to_string());
    store(conn, w, reach, resource_type, &id, raw, &value, None, 1, "POST").await
}

/// `PUT <type>/<id>`: a new version, or the first one under a client-chosen
/// id (update as create). `If-Match` must name the current version (412).
pub async fn update(
    conn: &mut PgConnection,
    w: &Writer,
    resource_type: &str,
    id: &str,
    text: &str,
    if_match: Option<&str>,
) -> Result<Written, Outcome> {
    writable(resource_type)?;
    let reach = w.reach(resource_type, Access::Write)?;
    let (raw, value) = parse(resource_type, text)?;
    match raw.str("id") {
        Some(body_id) if body_id == id => {}
        other => return Err(bad(format!("the body's id {other:?} must be the URL's id {id:?}"))),
    }
    let (stored, current) = current_version(conn, resource_type, id).await?;
    if reach.is_some()
        && current.is_some()
        && let Lookup::Found(s) = lookup(conn, resource_type, id).await?
    {
        within(reach, s.patient.as_deref())?;
    }
    if let Some(expected) = if_match.map(parse_if_match).transpose()?
        && current != Some(expected)
    {
        return Err(Outcome::new(
            Status::PRECONDITION_FAILED,
            "conflict",
            format!(
                "{resource_type}/{id} is at version {}, not {expected}",
                current.map_or("none".to_owned(), |v| v.to_string())
            ),
        ));
    }
    let replaces = stored.as_ref().map(|s| s.version_id);
    let next = stored.as_ref().map(|s| s.version_id).max(current).unwrap_or(0) + 1;
    store(conn, w, reach, resource_type, id, raw, &value, replaces, next, "PUT").await
}

/// `DELETE <type>/<id>`: a delete version; reads then answer 410. The
/// canonical record behind a Patient or ServiceRequest is kept (records are
/// retained; an order is cancelled by its status, not by deleting it).
pub async fn delete(
    conn: &mut PgConnection,
    w: &Writer,
    resource_type: &str,
    id: &str,
    if_match: Option<&str>,
) -> Result<Written, Outcome> {
    writable(resource_type)?;
    let reach = w.reach(resource_type, Access::Write)?;
    let (stored, current) = current_version(conn, resource_type, id).await?;
    if let Some(expected) = if_match.map(parse_if_match).transpose()?
        && current != Some(expected)
    {
        return Err(Outcome::new(
            Status::PRECONDITION_FAILED,
            "conflict",
            format!("{resource_type}/{id} is not at version {expected}"),
        ));
    }
    if reach.is_some()
        && let Lookup::Found(s) = lookup(conn, resource_type, id).await?
    {
        within(reach, s.patient.as_deref())?;
    }
    let Some(current) = current else {
        // Nothing there (or deleted already): deleting again changes nothing.
        return Ok(Written {
            resource_type: resource_type.to_owned(),
            id: id.to_owned(),
            version_id: stored.map_or(0, |s| s.version_id),
            last_updated: Utc::now(),
            body: None,
            kind: WriteKind::Deleted,
            audit: None,
        });
    };
    let next = stored.as_ref().map(|s| s.version_id).max(Some(current)).unwrap_or(0) + 1;
    let at = Utc::now();
    let keys = SearchKeys::default();
    let written = fhir_store::write(
        conn,
        fhir_store::Write {
            resource_type,
            id,
            replaces: stored.as_ref().map(|s| s.version_id),
            version_id: next,
            body: None,
            method: "DELETE",
            keys: &keys,
            at,
            event_id: None,
        },
    )
    .await?;
    if !written {
        return Err(concurrent(resource_type, id));
    }
    Ok(Written {
        resource_type: resource_type.to_owned(),
        id: id.to_owned(),
        version_id: next,
        last_updated: at,
        body: None,
        kind: WriteKind::Deleted,
        audit: Some(audit_entry(w, Action::Delete, resource_type, id, next)),
    })
}

fn writable(resource_type: &str) -> Result<(), Outcome> {
    if WRITABLE.contains(&resource_type) {
        return Ok(());
    }
    let (status, why) = if is_served(resource_type) || resource_type == "AuditEvent" {
        (
            Status::METHOD_NOT_ALLOWED,
            format!("{resource_type} is read-only here (see /metadata)"),
        )
    } else {
        (
            Status::NOT_FOUND,
            format!("resource type {resource_type} is not served (see /metadata)"),
        )
    };
    Err(Outcome::new(status, "not-supported", why))
}

fn concurrent(resource_type: &str, id: &str) -> Outcome {
    Outcome::new(
        Status::CONFLICT,
        "conflict",
        format!("{resource_type}/{id} was changed by another request at the same time; retry"),
    )
}

/// Ids matching `If-None-Exist` criteria: `identifier=system|value` or `_id=…`.
async fn matching(conn: &mut PgConnection, resource_type: &str, criteria: &str) -> Result<Vec<String>, Outcome> {
    let (name, value) = criteria
        .split_once('=')
        .ok_or_else(|| bad(format!("If-None-Exist {criteria:?} is not name=value")))?;
    let value = value.replace("%7C", "|").replace("%7c", "|");
    match name {
        "_id" => Ok(match lookup(conn, resource_type, &value).await? {
            Lookup::Found(_) => vec![value],
            _ => vec![],
        }),
        "identifier" => {
            let with_system = if value.contains('|') {
                value
            } else {
                format!("|{value}")
            };
            let mut ids = fhir_store::ids_with_identifier(&mut *conn, resource_type, &with_system).await?;
            let (system, v) = with_system.split_once('|').unwrap_or(("", &with_system));
            let canonical: Vec<(Uuid,)> = match resource_type {
                "Patient" => {
                    sqlx::query_as("SELECT patient_id FROM patient_identifier WHERE system = $1 AND value = $2")
                        .bind(system)
                        .bind(v)
                        .fetch_all(&mut *conn)
                        .await?
                }
                "ServiceRequest" => {
                    sqlx::query_as("SELECT id FROM service_order WHERE placer_system = $1 AND placer_number = $2")
                        .bind(system)
                        .bind(v)
                        .fetch_all(&mut *conn)
                        .await?
                }
                _ => vec![],
            };
            for (id,) in canonical {
                let id = id.to_string();
                if !ids.contains(&id) && matches!(lookup(conn, resource_type, &id).await?, Lookup::Found(_)) {
                    ids.push(id);
                }
            }
            Ok(ids)
        }
        other => Err(bad(format!("If-None-Exist supports identifier and _id, not {other:?}"))),
    }
}

/// Stores a version with the server's `id` and `meta`, audits it and, for
/// the hub-fed types, queues the event the intake pipeline applies.
#[allow(clippy::too_many_arguments)]
async fn store(
    conn: &mut PgConnection,
    w: &Writer,
    reach: Option<Uuid>,
    resource_type: &str,
    id: &str,
    mut raw: RawResource,
    value: &Value,
    replaces: Option<i32>,
    version_id: i32,
    method: &str,
) -> Result<Written, Outcome> {
    let keys = fhir_store::search_keys(resource_type, id, value);
    within(reach, keys.patient_ref.as_deref())?;
    if resource_type == "ServiceRequest" {
        check_subject(conn, keys.patient_ref.as_deref()).await?;
    }
    let at = Utc::now();
    let mut meta = match &value["meta"] {
        Value::Object(m) => m.clone(),
        _ => serde_json::Map::new(),
    };
    meta.insert("versionId".into(), json!(version_id.to_string()));
    meta.insert(
        "lastUpdated".into(),
        json!(at.to_rfc3339_opts(SecondsFormat::Micros, true)),
    );
    raw.set("id", &json!(id));
    raw.set("meta", &Value::Object(meta));
    let body = raw.to_json();
    let event = HUB_FED.contains(&resource_type).then(|| {
        Envelope::new(
            FHIR_WRITTEN,
            SOURCE,
            json!(ResourceWritten {
                resource_type: resource_type.to_owned(),
                id: id.to_owned(),
                version_id,
                client: w.principal.client().to_owned(),
            }),
        )
        .with_subject(format!("{resource_type}/{id}"))
    });
    let event_id = event.as_ref().and_then(|e| Uuid::parse_str(&e.id).ok());
    let written = fhir_store::write(
        conn,
        fhir_store::Write {
            resource_type,
            id,
            replaces,
            version_id,
            body: Some(&body),
            method,
            keys: &keys,
            at,
            event_id,
        },
    )
    .await?;
    if !written {
        return Err(concurrent(resource_type, id));
    }
    if let Some(event) = event {
        // Keyed by patient: a patient's writes reach the pipeline in order.
        let key = keys.patient_ref.as_deref().unwrap_or(id);
        Outbox::enqueue(conn, &w.intake_topic, key, &event).await?;
    }
    let action = if replaces.is_none() {
        Action::Create
    } else {
        Action::Update
    };
    Ok(Written {
        audit: Some(audit_entry(w, action, resource_type, id, version_id)),
        resource_type: resource_type.to_owned(),
        id: id.to_owned(),
        version_id,
        last_updated: at,
        body: Some(body),
        kind: if replaces.is_none() {
            WriteKind::Created
        } else {
            WriteKind::Updated
        },
    })
}

/// An order must be for a patient the hub knows (422 otherwise): the lab
/// flow needs one.
async fn check_subject(conn: &mut PgConnection, patient_ref: Option<&str>) -> Result<(), Outcome> {
    let unknown = |why: String| Outcome::new(Status::UNPROCESSABLE_ENTITY, "processing", why);
    let Some(id) = patient_ref.and_then(|r| r.strip_prefix("Patient/")) else {
        return Err(unknown(
            "ServiceRequest.subject must reference a Patient (Patient/<id>)".into(),
        ));
    };
    match lookup(conn, "Patient", id).await? {
        Lookup::Found(_) => Ok(()),
        _ => Err(unknown(format!(
            "ServiceRequest.subject Patient/{id} is not known here"
        ))),
    }
}

/// The audit entity type of a resource type: the canonical entity where
/// there is one (`Patient` → `patient`), else the resource type itself.
pub fn audit_entity(resource_type: &str) -> String {
    resources::entity_type_of(resource_type)
        .map(str::to_owned)
        .unwrap_or_else(|| resource_type.to_owned())
}

fn audit_entry(w: &Writer, action: Action, resource_type: &str, id: &str, version_id: i32) -> AuditEntry {
    AuditEntry::new(w.actor_kind(), w.principal.actor(), action, audit_entity(resource_type))
        .entity(id)
        .origin(w.origin.clone())
        .detail(json!({ "version_id": version_id }))
}

/// FHIR's id grammar: 1 to 64 of `A-Z a-z 0-9 - .` (R4 §2.24.0.1, type id).
pub fn is_fhir_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// An id fit to be named in a diagnostic or the audit trail: itself when it
/// is one, else a placeholder (it may be anything a client sent).
pub fn safe_id(id: &str) -> std::borrow::Cow<'_, str> {
    if is_fhir_id(id) {
        std::borrow::Cow::Borrowed(id)
    } else {
        std::borrow::Cow::Borrowed("(not an id)")
    }
}
