//! The canonical record as FHIR R4 resources (read side). Each function
//! says where a column goes; ids are the canonical ids.

use carehub_schema::lab::LabStatus;
use carehub_schema::model::Patient;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};
use sqlx::PgConnection;
use uuid::Uuid;

/// Types generated from the canonical record when no stored version exists.
pub const CANONICAL: &[&str] = &[
    "Invoice",
    "Observation",
    "Organization",
    "Patient",
    "Practitioner",
    "ServiceRequest",
    "Task",
];
/// Types an EHR may create, update and delete. Task is the hub's own (the
/// lab's progress) and AuditEvent the trail's: both read-only.
pub const WRITABLE: &[&str] = &[
    "DiagnosticReport",
    "DocumentReference",
    "ImagingStudy",
    "Invoice",
    "Observation",
    "Organization",
    "Patient",
    "Practitioner",
    "Provenance",
    "ServiceRequest",
];
/// Writes of these feed the canonical record.
pub const HUB_FED: &[&str] = &["Patient", "ServiceRequest"];

/// Types only loaded by the HL7 v2 pipeline (converted messages): read-only.
pub const LOADED: &[&str] = carehub_schema::fhir_store::LOADED_FROM_HL7;

/// Whether `<type>` is served at all.
pub fn is_served(resource_type: &str) -> bool {
    CANONICAL.contains(&resource_type) || is_stored(resource_type)
}

/// Whether `<type>` may have versions in the FHIR store (written here or
/// loaded by the HL7 v2 pipeline).
pub fn is_stored(resource_type: &str) -> bool {
    WRITABLE.contains(&resource_type) || LOADED.contains(&resource_type)
}

fn instant(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn meta(version: i32, updated: DateTime<Utc>) -> Value {
    json!({ "versionId": version.to_string(), "lastUpdated": instant(updated) })
}

/// A resource with what its response headers need (ETag, Last-Modified) and
/// the patient whose compartment it is in.
#[derive(Debug, Clone)]
pub struct Found {
    pub body: Value,
    pub version: i32,
    pub updated: DateTime<Utc>,
    pub patient: Uuid,
}

#[derive(sqlx::FromRow)]
struct PatientRow {
    #[sqlx(flatten)]
    p: Patient,
    identifiers: sqlx::types::Json<Vec<IdentifierRow>>,
}

#[derive(serde::Deserialize)]
struct IdentifierRow {
    system: String,
    value: String,
    type_code: Option<String>,
}

/// `patient` → Patient. identifier ← `patient_identifier` (system, value,
/// type), name ← family/given, gender ← sex, birthDate, telecom ← phone/email,
/// address ← the address JSON, managingOrganization, link replaced-by ← merged_into_id.
pub async fn patient(conn: &mut PgConnection, id: Uuid) -> carehub_schema::Result<Option<Found>> {
    // One round trip for the row and its identifiers: reads are the hot path.
    let Some(PatientRow { p, identifiers }): Option<PatientRow> = sqlx::query_as(
        "SELECT p.*, COALESCE((SELECT json_agg(json_build_object('system', i.system, 'value', i.value,
                                                                 'type_code', i.type_code)
                                               ORDER BY i.system, i.value)
                                 FROM patient_identifier i WHERE i.patient_id = p.id), '[]'::json) AS identifiers
           FROM patient p WHERE p.id = $1",
    )
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    else {
        return Ok(None);
    };
    let ids = identifiers.0;
    let mut body = json!({
        "resourceType": "Patient",
        "id": p.id,
        "meta": meta(p.version, p.updated_at),
        "active": p.active,
        "identifier": ids.iter().map(|i| {
            let mut v = json!({ "system": i.system, "value": i.value });
            if let Some(t) = &i.type_code {
                v["type"] = json!({ "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": t }] });
            }
            v
        }).collect::<Vec<_>>(),
    });
    if let Some(name) = human_name(p.family_name.as_deref(), &p.given_names) {
        body["name"] = json!([name]);
    }
    if let Some(sex) = &p.sex {
        body["gender"] = json!(sex);
    }
    if let Some(d) = p.birth_date {
        body["birthDate"] = json!(d.to_string());
    }
    contact(&mut body, p.phone.as_deref(), p.email.as_deref());
    if let Some(a) = &p.address {
        let mut addr = json!({});
        for (from, to) in [
            ("line", "line"),
            ("city", "city"),
            ("state", "state"),
            ("postal_code", "postalCode"),
            ("country", "country"),
        ] {
            if let Some(v) = a.get(from).filter(|v| !v.is_null() && *v != &json!([])) {
                addr[to] = v.clone();
            }
        }
        body["address"] = json!([addr]);
    }
    if let Some(org) = p.managing_organization_id {
        body["managingOrganization"] = json!({ "reference": format!("Organization/{org}") });
    }
    if let Some(survivor) = p.merged_into_id {
        body["link"] = json!([{ "other": { "reference": format!("Patient/{survivor}") }, "type": "replaced-by" }]);
    }
    Ok(Some(Found {
        body,
        version: p.version,
        updated: p.updated_at,
        patient: p.id,
    }))
}

type OrderRow = (
    Uuid,
    String,
    String,
    Option<String>,
    Option<String>,
    Uuid,
    Option<Uuid>,
    String,
    String,
    i32,
    DateTime<Utc>,
    DateTime<Utc>,
    Option<String>,
);

/// `service_order` → ServiceRequest. identifier ← placer (PLAC) and filler
/// (FILL) numbers, status, intent `order`, priority, code ← the items,
/// subject, requester ← orderer, authoredOn ← created_at, note.
pub async fn service_request(conn: &mut PgConnection, id: Uuid) -> carehub_schema::Result<Option<Found>> {
    let row: Option<OrderRow> = sqlx::query_as(
        "SELECT id, placer_system, placer_number, filler_system, filler_number, patient_id, orderer_id, status,
                priority, version, created_at, updated_at, note
           FROM service_order WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((id, psys, pnum, fsys, fnum, patient, orderer, status, priority, version, created, updated, note)) = row
    else {
        return Ok(None);
    };
    let items = carehub_schema::lab::order_items(&mut *conn, id).await?;
    let v2 = "http://terminology.hl7.org/CodeSystem/v2-0203";
    let mut identifier =
        vec![json!({ "type": { "coding": [{ "system": v2, "code": "PLAC" }] }, "system": psys, "value": pnum })];
    if let (Some(s), Some(n)) = (fsys, fnum) {
        identifier.push(json!({ "type": { "coding": [{ "system": v2, "code": "FILL" }] }, "system": s, "value": n }));
    }
    let mut body = json!({
        "resourceType": "ServiceRequest",
        "id": id,
        "meta": meta(version, updated),
        "identifier": identifier,
        "status": status,
        "intent": "order",
        "priority": priority,
        "subject": { "reference": format!("Patient/{patient}") },
        "authoredOn": instant(created),
    });
    if !items.is_empty() {
        body["code"] = json!({ "coding": items.iter().map(|item| {
            let mut c = json!({ "system": item.code_system, "code": item.code });
            if let Some(d) = &item.display { c["display"] = json!(d); }
            c
        }).collect::<Vec<_>>() });
    }
    if let Some(o) = orderer {
        body["requester"] = json!({ "reference": format!("Practitioner/{o}") });
    }
    if let Some(n) = note {
        body["note"] = json!([{ "text": n }]);
    }
    Ok(Some(Found {
        body,
        version,
        updated,
        patient,
    }))
}

/// status, reason, version, created, updated, patient.
type TaskRow = (String, Option<String>, i32, DateTime<Utc>, DateTime<Utc>, Uuid);

/// `lab_job` → Task (the lab's work on the order): status from the lab
/// status, businessStatus = the lab status, basedOn/focus = the ServiceRequest.
pub async fn task(conn: &mut PgConnection, id: Uuid) -> carehub_schema::Result<Option<Found>> {
    let row: Option<TaskRow> = sqlx::query_as(
        "SELECT j.status, j.status_reason, j.version, j.created_at, j.updated_at, o.patient_id
           FROM lab_job j JOIN service_order o ON o.id = j.order_id WHERE j.order_id = $1",
    )
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((status, reason, version, created, updated, patient)) = row else {
        return Ok(None);
    };
    let lab = LabStatus::parse(&status).unwrap_or(LabStatus::Requested);
    let sr = format!("ServiceRequest/{id}");
    let mut body = json!({
        "resourceType": "Task",
        "id": id,
        "meta": meta(version, updated),
        "basedOn": [{ "reference": sr }],
        "status": lab.fhir_task_status(),
        "businessStatus": { "coding": [{ "system": carehub_schema::lab::LAB_STATUS_SYSTEM, "code": lab.as_str() }], "text": lab.as_str() },
        "intent": "order",
        "focus": { "reference": sr },
        "for": { "reference": format!("Patient/{patient}") },
        "authoredOn": instant(created),
        "lastModified": instant(updated),
    });
    if let Some(r) = reason {
        body["statusReason"] = json!({ "text": r });
    }
    Ok(Some(Found {
        body,
        version,
        updated,
        patient,
    }))
}

/// HumanName from a family name and given names; `None` when both are empty.
fn human_name(family: Option<&str>, given: &[String]) -> Option<Value> {
    if family.is_none() && given.is_empty() {
        return None;
    }
    let mut name = json!({});
    if let Some(f) = family {
        name["family"] = json!(f);
    }
    if !given.is_empty() {
        name["given"] = json!(given);
    }
    Some(name)
}

/// Telecom (phone, email) of a patient, organization or practitioner.
fn contact(body: &mut Value, phone: Option<&str>, email: Option<&str>) {
    let mut telecom = Vec::new();
    if let Some(p) = phone {
        telecom.push(json!({ "system": "phone", "value": p }));
    }
    if let Some(e) = email {
        telecom.push(json!({ "system": "email", "value": e }));
    }
    if !telecom.is_empty() {
        body["telecom"] = json!(telecom);
    }
}

/// `organization` → Organization: identifier, name, active, type ← kind, telecom.
/// Not in a patient's compartment (`patient` is nil).
pub async fn organization(conn: &mut PgConnection, id: Uuid) -> carehub_schema::Result<Option<Found>> {
    let Some(o): Option<carehub_schema::model::Organization> =
        sqlx::query_as("SELECT * FROM organization WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?
    else {
        return Ok(None);
    };
    let mut body = json!({
        "resourceType": "Organization",
        "id": o.id,
        "meta": meta(o.version, o.updated_at),
        "identifier": [{ "system": o.identifier_system, "value": o.identifier_value }],
        "active": o.active,
        "type": [{ "coding": [{ "system": "urn:carehub:organization-kind", "code": o.kind }] }],
        "name": o.name,
    });
    contact(&mut body, o.phone.as_deref(), o.email.as_deref());
    Ok(Some(Found {
        body,
        version: o.version,
        updated: o.updated_at,
        patient: Uuid::nil(),
    }))
}

/// `practitioner` → Practitioner: identifier, name, telecom. Not in a patient's compartment.
pub async fn practitioner(conn: &mut PgConnection, id: Uuid) -> carehub_schema::Result<Option<Found>> {
    let Some(p): Option<carehub_schema::model::Practitioner> =
        sqlx::query_as("SELECT * FROM practitioner WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?
    else {
        return Ok(None);
    };
    let mut body = json!({
        "resourceType": "Practitioner",
        "id": p.id,
        "meta": meta(p.version, p.updated_at),
        "identifier": [{ "system": p.identifier_system, "value": p.identifier_value }],
    });
    if let Some(name) = human_name(p.family_name.as_deref(), &p.given_names) {
        body["name"] = json!([name]);
    }
    contact(&mut body, p.phone.as_deref(), p.email.as_deref());
    Ok(Some(Found {
        body,
        version: p.version,
        updated: p.updated_at,
        patient: Uuid::nil(),
    }))
}

/// The columns [`invoice`] reads.
#[derive(Debug, sqlx::FromRow)]
struct InvoiceRow {
    id: Uuid,
    number: String,
    patient_id: Option<Uuid>,
    organization_id: Option<Uuid>,
    status: String,
    currency: String,
    total_minor: i64,
    issued_at: Option<DateTime<Utc>>,
    version: i32,
    updated_at: DateTime<Utc>,
}

/// Identifier system of invoice numbers (for DFT: the visit or account number).
pub const INVOICE_NUMBER_SYSTEM: &str = "urn:carehub:invoice-number";

/// Minor units → an amount in the currency (ISO 4217 exponents).
fn money(minor: i64, currency: &str) -> Value {
    let exponent = match currency {
        "JPY" | "KRW" | "ISK" | "CLP" | "VND" | "XOF" | "XAF" => 0,
        "BHD" | "KWD" | "OMR" | "JOD" | "TND" | "IQD" | "LYD" => 3,
        _ => 2,
    };
    json!({ "value": minor as f64 / 10f64.powi(exponent), "currency": currency })
}

/// `invoice` + `invoice_line` → Invoice: identifier ← number, status,
/// subject, issuer, date ← issued_at, lineItem ← each line (code,
/// description, quantity, unit price), totalGross ← total.
pub async fn invoice(conn: &mut PgConnection, id: Uuid) -> carehub_schema::Result<Option<Found>> {
    let Some(i): Option<InvoiceRow> = sqlx::query_as(
        "SELECT id, number, patient_id, organization_id, status, currency, total_minor, issued_at, version, updated_at
           FROM invoice WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    else {
        return Ok(None);
    };
    let lines: Vec<(i32, Option<String>, String, String, i64)> = sqlx::query_as(
        "SELECT line_no, code, description, quantity::text, unit_price_minor FROM invoice_line
          WHERE invoice_id = $1 ORDER BY line_no",
    )
    .bind(id)
    .fetch_all(&mut *conn)
    .await?;
    let mut body = json!({
        "resourceType": "Invoice",
        "id": i.id,
        "meta": meta(i.version, i.updated_at),
        "identifier": [{ "system": INVOICE_NUMBER_SYSTEM, "value": i.number }],
        "status": i.status,
        "totalGross": money(i.total_minor, &i.currency),
    });
    if let Some(p) = i.patient_id {
        body["subject"] = json!({ "reference": format!("Patient/{p}") });
    }
    if let Some(o) = i.organization_id {
        body["issuer"] = json!({ "reference": format!("Organization/{o}") });
    }
    if let Some(at) = i.issued_at {
        body["date"] = json!(instant(at));
    }
    if !lines.is_empty() {
        body["lineItem"] = lines
            .iter()
            .map(|(no, code, description, quantity, unit)| {
                let mut concept = json!({ "text": description });
                if let Some(c) = code {
                    concept["coding"] = json!([{ "system": "urn:carehub:charge-code", "code": c }]);
                }
                let mut price = json!({ "type": "base", "amount": money(*unit, &i.currency) });
                if let Ok(q) = quantity.parse::<f64>() {
                    price["factor"] = json!(q);
                }
                json!({ "sequence": no, "chargeItemCodeableConcept": concept, "priceComponent": [price] })
            })
            .collect();
    }
    Ok(Some(Found {
        body,
        version: i.version,
        updated: i.updated_at,
        patient: i.patient_id.unwrap_or_else(Uuid::nil),
    }))
}

/// The columns [`observation`] reads.
#[derive(Debug, sqlx::FromRow)]
struct ObservationRow {
    id: Uuid,
    patient_id: Uuid,
    order_id: Option<Uuid>,
    status: String,
    code_system: String,
    code: String,
    display: Option<String>,
    value_type: String,
    value_quantity: Option<String>,
    value_unit: Option<String>,
    value_string: Option<String>,
    value_code: Option<String>,
    interpretation: Option<String>,
    reference_range: Option<String>,
    effective_at: Option<DateTime<Utc>>,
    issued_at: Option<DateTime<Utc>>,
    updated_at: DateTime<Utc>,
}

/// `observation` → Observation: status, code, subject, basedOn ← the order,
/// `value[x]` ← value_type (Quantity, string, CodeableConcept), interpretation,
/// referenceRange (text), effectiveDateTime, issued.
pub async fn observation(conn: &mut PgConnection, id: Uuid) -> carehub_schema::Result<Option<Found>> {
    let Some(o): Option<ObservationRow> = sqlx::query_as(
        "SELECT id, patient_id, order_id, status, code_system, code, display, value_type,
                value_quantity::text AS value_quantity, value_unit, value_string, value_code, interpretation,
                reference_range, effective_at, issued_at, updated_at
           FROM observation WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    else {
        return Ok(None);
    };
    let mut coding = json!({ "system": o.code_system, "code": o.code });
    if let Some(d) = &o.display {
        coding["display"] = json!(d);
    }
    let mut body = json!({
        "resourceType": "Observation",
        "id": o.id,
        "meta": { "lastUpdated": instant(o.updated_at) },
        "status": o.status,
        "code": { "coding": [coding] },
        "subject": { "reference": format!("Patient/{}", o.patient_id) },
    });
    if let Some(order) = o.order_id {
        body["basedOn"] = json!([{ "reference": format!("ServiceRequest/{order}") }]);
    }
    match o.value_type.as_str() {
        "quantity" => {
            if let Some(n) = o
                .value_quantity
                .as_deref()
                .and_then(|q| q.parse::<serde_json::Number>().ok())
            {
                let mut q = json!({ "value": n });
                if let Some(u) = &o.value_unit {
                    q["unit"] = json!(u);
                }
                body["valueQuantity"] = q;
            }
        }
        "coded" => {
            if let Some(c) = &o.value_code {
                body["valueCodeableConcept"] = json!({ "coding": [{ "code": c }] });
            }
        }
        "string" => {
            if let Some(s) = &o.value_string {
                body["valueString"] = json!(s);
            }
        }
        _ => {}
    }
    if let Some(i) = &o.interpretation {
        body["interpretation"] = json!([{ "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation", "code": i }] }]);
    }
    if let Some(r) = &o.reference_range {
        body["referenceRange"] = json!([{ "text": r }]);
    }
    if let Some(t) = o.effective_at {
        body["effectiveDateTime"] = json!(instant(t));
    }
    if let Some(t) = o.issued_at {
        body["issued"] = json!(instant(t));
    }
    Ok(Some(Found {
        body,
        version: 1,
        updated: o.updated_at,
        patient: o.patient_id,
    }))
}

/// FHIR resource types of canonical entities, both ways.
const ENTITY_TYPES: &[(&str, &str)] = &[
    ("patient", "Patient"),
    ("service_order", "ServiceRequest"),
    ("lab_job", "Task"),
    ("invoice", "Invoice"),
    ("observation", "Observation"),
    ("organization", "Organization"),
    ("practitioner", "Practitioner"),
];

/// The canonical entity type of a FHIR resource type (`Patient` → `patient`).
pub fn entity_type_of(resource_type: &str) -> Option<&'static str> {
    ENTITY_TYPES.iter().find(|(_, r)| *r == resource_type).map(|(e, _)| *e)
}

/// One `audit_log` row → AuditEvent (read-only; the trail is append-only).
/// action ← create C, read R, update U, delete D, ingest/send/replay E;
/// agent ← the actor (requestor when a user); entity ← the resource it concerned.
pub fn audit_event(row: &carehub_schema::audit::AuditRow) -> Value {
    let action = match row.action.as_str() {
        "create" => "C",
        "read" => "R",
        "update" => "U",
        "delete" => "D",
        _ => "E",
    };
    // Canonical entities by their resource type; resources kept only in the
    // FHIR store are audited under their resource type already.
    let resource_type = ENTITY_TYPES
        .iter()
        .find(|(e, _)| *e == row.entity_type)
        .map(|(_, r)| *r)
        .or_else(|| WRITABLE.iter().chain(LOADED).copied().find(|r| *r == row.entity_type));
    let what = match (resource_type, &row.entity_id) {
        (Some(r), Some(id)) => json!({ "reference": format!("{r}/{id}") }),
        (_, id) => {
            json!({ "identifier": { "system": "urn:carehub:entity", "value": format!("{}/{}", row.entity_type, id.as_deref().unwrap_or("")) } })
        }
    };
    let mut event = json!({
        "resourceType": "AuditEvent",
        "id": row.seq.to_string(),
        "type": { "system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest", "display": "RESTful Operation" },
        "subtype": [{ "system": "urn:carehub:audit-action", "code": row.action }],
        "action": action,
        "recorded": instant(row.at),
        "outcome": "0",
        "agent": [{
            "who": { "identifier": { "system": format!("urn:carehub:{}", row.actor_kind), "value": row.actor_id } },
            "requestor": row.actor_kind == "user",
        }],
        "source": { "observer": { "display": "carehub" } },
        "entity": [{ "what": what }],
    });
    if let Some(origin) = &row.origin {
        event["source"]["site"] = json!(origin);
    }
    event
}
