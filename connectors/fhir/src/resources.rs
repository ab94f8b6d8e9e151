//! The canonical record as FHIR R4 resources (read side). Each function
//! says where a column goes; ids are the canonical ids.

use carehub_schema::lab::LabStatus;
use carehub_schema::model::{Patient, PatientIdentifier};
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};
use sqlx::PgConnection;
use uuid::Uuid;

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

/// `patient` → Patient. identifier ← `patient_identifier` (system, value,
/// type), name ← family/given, gender ← sex, birthDate, telecom ← phone/email,
/// address ← the address JSON, managingOrganization, link replaced-by ← merged_into_id.
pub async fn patient(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<Option<Found>> {
    let Some(p): Option<Patient> = sqlx::query_as("SELECT * FROM patient WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
    else {
        return Ok(None);
    };
    let ids: Vec<PatientIdentifier> =
        sqlx::query_as("SELECT * FROM patient_identifier WHERE patient_id = $1 ORDER BY system, value")
            .bind(id)
            .fetch_all(&mut *conn)
            .await?;
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
    if p.family_name.is_some() || !p.given_names.is_empty() {
        let mut name = json!({});
        if let Some(f) = &p.family_name {
            name["family"] = json!(f);
        }
        if !p.given_names.is_empty() {
            name["given"] = json!(p.given_names);
        }
        body["name"] = json!([name]);
    }
    if let Some(sex) = &p.sex {
        body["gender"] = json!(sex);
    }
    if let Some(d) = p.birth_date {
        body["birthDate"] = json!(d.to_string());
    }
    let mut telecom = Vec::new();
    if let Some(phone) = &p.phone {
        telecom.push(json!({ "system": "phone", "value": phone }));
    }
    if let Some(email) = &p.email {
        telecom.push(json!({ "system": "email", "value": email }));
    }
    if !telecom.is_empty() {
        body["telecom"] = json!(telecom);
    }
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
pub async fn service_request(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<Option<Found>> {
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
    let items: Vec<(String, String, Option<String>)> =
        sqlx::query_as("SELECT code_system, code, display FROM order_item WHERE order_id = $1 ORDER BY line_no")
            .bind(id)
            .fetch_all(&mut *conn)
            .await?;
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
        body["code"] = json!({ "coding": items.iter().map(|(system, code, display)| {
            let mut c = json!({ "system": system, "code": code });
            if let Some(d) = display { c["display"] = json!(d); }
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
pub async fn task(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<Option<Found>> {
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
