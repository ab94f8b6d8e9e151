//! Clinical records beyond patients and organizations: visits, practitioners,
//! orders, results, appointments and charges. The `*Data` types are what a
//! pipeline maps a source message into; the functions write them inside the
//! pipeline's transaction, stamping `source_message_id` (provenance).

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::Result;
use crate::model::Identifier;
use crate::repo::{HumanName, Upserted};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EncounterData {
    pub visit: Identifier,
    pub class: Option<String>,
    /// `planned`, `in-progress`, `finished`, `cancelled`.
    pub status: &'static str,
    pub location: Option<String>,
    pub admitted_at: Option<DateTime<Utc>>,
    pub discharged_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PractitionerData {
    pub identifier: Identifier,
    pub name: HumanName,
}

/// What one ORC group says about an order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OrderData {
    pub placer: Identifier,
    pub filler: Option<Identifier>,
    /// ORC-1 (NW, CA, OC, DC, XO, SC, HD, RL, …).
    pub control: String,
    /// The canonical status this message sets, when it sets one.
    pub status: Option<&'static str>,
    pub priority: &'static str,
    pub due_date: Option<NaiveDate>,
    pub orderer: Option<PractitionerData>,
    pub items: Vec<ItemData>,
    pub note: Option<String>,
    /// OBX given with the order (measurements, materials): the device specification.
    pub observations: Vec<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ItemData {
    pub code_system: String,
    pub code: String,
    pub display: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResultData {
    /// The order (placer or filler number) the result belongs to, if given.
    pub placer: Option<Identifier>,
    pub filler: Option<Identifier>,
    /// Unique per source result: order number, code, OBX-4.
    pub result_key: String,
    pub status: &'static str,
    pub code_system: String,
    pub code: String,
    pub display: Option<String>,
    pub value: ResultValue,
    pub unit: Option<String>,
    pub reference_range: Option<String>,
    pub interpretation: Option<String>,
    pub effective_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", content = "value", rename_all = "snake_case")]
pub enum ResultValue {
    Quantity(String),
    String(String),
    Coded(String),
    None,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AppointmentData {
    pub placer: Identifier,
    pub filler_id: Option<String>,
    pub status: &'static str,
    pub reason_code: Option<String>,
    pub reason_display: Option<String>,
    pub start_at: Option<DateTime<Utc>>,
    pub duration_minutes: Option<i32>,
    pub location: Option<String>,
    pub placer_order: Option<Identifier>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InvoiceData {
    /// The invoice's number: the visit (PV1-19) or account (PID-18) the charges are for.
    pub number: String,
    pub currency: String,
    pub lines: Vec<ChargeLine>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChargeLine {
    pub code: Option<String>,
    pub description: String,
    pub quantity: String,
    pub unit_price_minor: i64,
    pub amount_minor: i64,
}

/// Statuses an order cannot leave.
pub const TERMINAL_ORDER_STATUSES: &[&str] = &["revoked", "completed", "entered-in-error"];

/// Why an order change was refused; the pipeline dead-letters it with this reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrderRejected {
    #[error("order {system}|{value} is unknown (order control {control})")]
    Unknown {
        system: String,
        value: String,
        control: String,
    },
    #[error("order {placer} cannot go from {from} to {to}")]
    Transition { placer: String, from: String, to: String },
}

impl OrderRejected {
    /// The bounded dead-letter code.
    pub fn error_code(&self) -> &'static str {
        match self {
            OrderRejected::Unknown { .. } => "unknown_reference",
            OrderRejected::Transition { .. } => "invalid_transition",
        }
    }
}

/// What applying one order did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OrderApplied {
    pub id: Uuid,
    pub created: bool,
    pub version: i32,
    pub from_status: Option<String>,
    pub status: String,
}

impl OrderApplied {
    /// The order as an upserted entity (its event and audit entry).
    pub fn upserted(&self) -> Upserted {
        Upserted {
            id: self.id,
            created: self.created,
            version: self.version,
        }
    }

    /// What `carehub.order.upserted.v1` adds to an entity event: the status change.
    pub fn event_data(&self) -> serde_json::Value {
        serde_json::json!({ "status": self.status, "from_status": self.from_status })
    }
}

pub async fn upsert_practitioner(
    conn: &mut PgConnection,
    p: &PractitionerData,
    source_message_id: Option<Uuid>,
) -> Result<Upserted> {
    let mut up = upsert_practitioners(conn, &[(p, source_message_id)]).await?;
    up.pop().ok_or_else(|| crate::Error::NotFound {
        entity: "practitioner",
        key: p.identifier.value.clone(),
    })
}

/// Upserts a batch's practitioners in one statement, each identifier once
/// (rows locked in identifier order): its occurrences folded as one upsert
/// after another would leave the row — the last name given, the last
/// message, the version grown by each. The results in the items' order,
/// each as its own upsert would have returned it.
pub async fn upsert_practitioners(
    conn: &mut PgConnection,
    items: &[(&PractitionerData, Option<Uuid>)],
) -> Result<Vec<Upserted>> {
    struct Folded<'a> {
        family: Option<&'a str>,
        given: &'a [String],
        source_message_id: Option<Uuid>,
        count: i32,
    }
    if items.is_empty() {
        return Ok(Vec::new());
    }
    let mut folded: std::collections::BTreeMap<(&str, &str), Folded<'_>> = Default::default();
    let mut occurrence = Vec::with_capacity(items.len());
    for (p, msg) in items {
        let f = folded
            .entry((p.identifier.system.as_str(), p.identifier.value.as_str()))
            .or_insert(Folded {
                family: None,
                given: &[],
                source_message_id: None,
                count: 0,
            });
        f.family = p.name.family.as_deref().or(f.family);
        if !p.name.given.is_empty() {
            f.given = &p.name.given;
        }
        f.source_message_id = *msg;
        occurrence.push(f.count);
        f.count += 1;
    }
    let rows: Vec<(Uuid, i32, bool, String, String)> = sqlx::query_as(
        "INSERT INTO practitioner (id, family_name, given_names, identifier_system, identifier_value,
                                  source_message_id, version)
         SELECT id, family_name, ARRAY(SELECT jsonb_array_elements_text(given_names)), identifier_system,
                identifier_value, source_message_id, version
           FROM unnest($1::uuid[], $2::text[], $3::jsonb[], $4::text[], $5::text[], $6::uuid[], $7::int[])
                AS u(id, family_name, given_names, identifier_system, identifier_value, source_message_id, version)
         ON CONFLICT (identifier_system, identifier_value) DO UPDATE
            SET family_name = COALESCE(EXCLUDED.family_name, practitioner.family_name),
                given_names = CASE WHEN cardinality(EXCLUDED.given_names) > 0
                                   THEN EXCLUDED.given_names ELSE practitioner.given_names END,
                source_message_id = EXCLUDED.source_message_id,
                version = practitioner.version + EXCLUDED.version, updated_at = now()
         RETURNING id, version, (xmax = 0) AS created, identifier_system, identifier_value",
    )
    .bind(folded.values().map(|_| Uuid::now_v7()).collect::<Vec<_>>())
    .bind(folded.values().map(|f| f.family).collect::<Vec<_>>())
    .bind(folded.values().map(|f| serde_json::json!(f.given)).collect::<Vec<_>>())
    .bind(folded.keys().map(|k| k.0).collect::<Vec<_>>())
    .bind(folded.keys().map(|k| k.1).collect::<Vec<_>>())
    .bind(folded.values().map(|f| f.source_message_id).collect::<Vec<_>>())
    .bind(folded.values().map(|f| f.count).collect::<Vec<_>>())
    .fetch_all(&mut *conn)
    .await?;
    let by_identifier: std::collections::HashMap<(String, String), (Uuid, i32, bool)> = rows
        .into_iter()
        .map(|(id, version, created, system, value)| ((system, value), (id, version, created)))
        .collect();
    items
        .iter()
        .zip(occurrence)
        .map(|((p, _), k)| {
            let key = (p.identifier.system.clone(), p.identifier.value.clone());
            let (id, last, created) = *by_identifier.get(&key).ok_or_else(|| crate::Error::NotFound {
                entity: "practitioner",
                key: p.identifier.value.clone(),
            })?;
            let count = folded[&(key.0.as_str(), key.1.as_str())].count;
            Ok(Upserted {
                id,
                created: created && k == 0,
                version: last - (count - 1 - k),
            })
        })
        .collect()
}

pub async fn upsert_encounter(
    conn: &mut PgConnection,
    patient_id: Uuid,
    e: &EncounterData,
    source_message_id: Option<Uuid>,
) -> Result<Upserted> {
    let mut up = upsert_encounters(conn, &[(patient_id, e, source_message_id)]).await?;
    up.pop().ok_or_else(|| crate::Error::NotFound {
        entity: "encounter",
        key: e.visit.value.clone(),
    })
}

/// An encounter to upsert: its patient, data and source message.
pub type EncounterItem<'a> = (Uuid, &'a EncounterData, Option<Uuid>);

/// Upserts a batch's encounters in one statement (rows locked in visit
/// order); the results in the items' order. Each visit at most once in
/// `items`: a statement cannot change one row twice, so a batch naming one
/// visit twice writes them one by one.
pub async fn upsert_encounters(conn: &mut PgConnection, items: &[EncounterItem<'_>]) -> Result<Vec<Upserted>> {
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by(|&a, &b| {
        let (va, vb) = (&items[a].1.visit, &items[b].1.visit);
        (&va.system, &va.value).cmp(&(&vb.system, &vb.value))
    });
    let e = |i: usize| items[order[i]].1;
    let n = order.len();
    let rows: Vec<(Uuid, bool, String, String)> = sqlx::query_as(
        "INSERT INTO encounter (id, patient_id, visit_system, visit_number, class, status, location,
                                admitted_at, discharged_at, source_message_id)
         SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
                              $8::timestamptz[], $9::timestamptz[], $10::uuid[])
         ON CONFLICT (visit_system, visit_number) DO UPDATE
            SET patient_id = EXCLUDED.patient_id,
                class = COALESCE(EXCLUDED.class, encounter.class),
                status = EXCLUDED.status,
                location = COALESCE(EXCLUDED.location, encounter.location),
                admitted_at = COALESCE(EXCLUDED.admitted_at, encounter.admitted_at),
                discharged_at = COALESCE(EXCLUDED.discharged_at, encounter.discharged_at),
                source_message_id = EXCLUDED.source_message_id, updated_at = now()
         RETURNING id, (xmax = 0) AS created, visit_system, visit_number",
    )
    .bind((0..n).map(|_| Uuid::now_v7()).collect::<Vec<_>>())
    .bind(order.iter().map(|&i| items[i].0).collect::<Vec<_>>())
    .bind((0..n).map(|i| e(i).visit.system.as_str()).collect::<Vec<_>>())
    .bind((0..n).map(|i| e(i).visit.value.as_str()).collect::<Vec<_>>())
    .bind((0..n).map(|i| e(i).class.as_deref()).collect::<Vec<_>>())
    .bind((0..n).map(|i| e(i).status).collect::<Vec<_>>())
    .bind((0..n).map(|i| e(i).location.as_deref()).collect::<Vec<_>>())
    .bind((0..n).map(|i| e(i).admitted_at).collect::<Vec<_>>())
    .bind((0..n).map(|i| e(i).discharged_at).collect::<Vec<_>>())
    .bind(order.iter().map(|&i| items[i].2).collect::<Vec<_>>())
    .fetch_all(&mut *conn)
    .await?;
    let by_visit: std::collections::HashMap<(String, String), (Uuid, bool)> = rows
        .into_iter()
        .map(|(id, created, system, value)| ((system, value), (id, created)))
        .collect();
    items
        .iter()
        .map(|(_, e, _)| {
            by_visit
                .get(&(e.visit.system.clone(), e.visit.value.clone()))
                .map(|&(id, created)| Upserted {
                    id,
                    created,
                    version: 1,
                })
                .ok_or_else(|| crate::Error::NotFound {
                    entity: "encounter",
                    key: e.visit.value.clone(),
                })
        })
        .collect()
}

/// Merges the patient holding `prior` into `survivor_id`: the prior record
/// points at the survivor and becomes inactive, and what referred to it
/// (orders, results, visits, appointments, studies, documents, invoices) now
/// refers to the survivor. `None` when no patient holds `prior`.
pub async fn merge_patient(
    conn: &mut PgConnection,
    survivor_id: Uuid,
    prior: &[Identifier],
    source_message_id: Option<Uuid>,
) -> Result<Option<Uuid>> {
    let holders = crate::repo::lock_patients_holding(conn, prior).await?;
    let Some(prior_id) = holders.into_iter().find(|id| *id != survivor_id) else {
        return Ok(None);
    };
    merge_patient_into(conn, survivor_id, prior_id, source_message_id).await?;
    Ok(Some(prior_id))
}

/// [`merge_patient`] of the patient `prior_id` itself (a patient split in
/// two, found by `carehub patient repair-splits`).
pub async fn merge_patient_into(
    conn: &mut PgConnection,
    survivor_id: Uuid,
    prior_id: Uuid,
    source_message_id: Option<Uuid>,
) -> Result<()> {
    sqlx::query(
        "UPDATE patient SET merged_into_id = $2, active = false, source_message_id = $3,
                version = version + 1, updated_at = now()
          WHERE id = $1",
    )
    .bind(prior_id)
    .bind(survivor_id)
    .bind(source_message_id)
    .execute(&mut *conn)
    .await?;
    for table in [
        "service_order",
        "observation",
        "encounter",
        "appointment",
        "imaging_study",
        "document",
        "invoice",
    ] {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE {table} SET patient_id = $2 WHERE patient_id = $1"
        )))
        .bind(prior_id)
        .bind(survivor_id)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// An order by placer or filler number.
pub async fn find_order(conn: &mut PgConnection, number: &Identifier) -> Result<Option<Uuid>> {
    let row: Option<(Uuid,)> = sqlx::query_as(
        "SELECT id FROM service_order
          WHERE (placer_system = $1 AND placer_number = $2) OR (filler_system = $1 AND filler_number = $2)
          LIMIT 1",
    )
    .bind(&number.system)
    .bind(&number.value)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.map(|(id,)| id))
}

pub async fn upsert_observation(
    conn: &mut PgConnection,
    patient_id: Uuid,
    order_id: Option<Uuid>,
    r: &ResultData,
    source_message_id: Option<Uuid>,
) -> Result<Upserted> {
    let mut up = upsert_observations(conn, &[(patient_id, order_id, r, source_message_id)]).await?;
    up.pop().ok_or_else(|| crate::Error::NotFound {
        entity: "observation",
        key: r.result_key.clone(),
    })
}

/// Upserts observations in one statement (rows locked in result-key
/// order); the results in the items' order. Each result key at most once in
/// `items` (one statement cannot change a row twice).
pub async fn upsert_observations(
    conn: &mut PgConnection,
    items: &[(Uuid, Option<Uuid>, &ResultData, Option<Uuid>)],
) -> Result<Vec<Upserted>> {
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by(|&a, &b| items[a].2.result_key.cmp(&items[b].2.result_key));
    // (value_type, numeric, string, code) of each result.
    type Columns<'a> = (&'a str, Option<&'a str>, Option<&'a str>, Option<&'a str>);
    let values: Vec<Columns<'_>> = order
        .iter()
        .map(|&i| {
            let (value_type, quantity, string, code) = match &items[i].2.value {
                ResultValue::Quantity(q) => ("quantity", Some(q.as_str()), None, None),
                ResultValue::String(s) => ("string", None, Some(s.as_str()), None),
                ResultValue::Coded(c) => ("coded", None, None, Some(c.as_str())),
                ResultValue::None => ("none", None, None, None),
            };
            // SN values such as "<5" are kept as text; only plain numbers go to the numeric column.
            let numeric = quantity.filter(|q| q.parse::<f64>().is_ok());
            let string = string.or(quantity.filter(|q| q.parse::<f64>().is_err()));
            let value_type = if numeric.is_none() && value_type == "quantity" {
                "string"
            } else {
                value_type
            };
            (value_type, numeric, string, code)
        })
        .collect();
    let r = |i: usize| items[order[i]].2;
    let n = order.len();
    let rows: Vec<(Uuid, bool, String)> = sqlx::query_as(
        "INSERT INTO observation (id, patient_id, order_id, status, code_system, code, display, value_type,
                                  value_quantity, value_unit, value_string, value_code, interpretation,
                                  reference_range, effective_at, issued_at, result_key, source_message_id)
         SELECT id, patient_id, order_id, status, code_system, code, display, value_type, value_quantity::numeric,
                value_unit, value_string, value_code, interpretation, reference_range, effective_at, now(),
                result_key, source_message_id
           FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::text[], $7::text[],
                       $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::text[], $14::text[],
                       $15::timestamptz[], $16::text[], $17::uuid[])
                AS u(id, patient_id, order_id, status, code_system, code, display, value_type, value_quantity,
                     value_unit, value_string, value_code, interpretation, reference_range, effective_at,
                     result_key, source_message_id)
         ON CONFLICT (result_key) DO UPDATE
            SET patient_id = EXCLUDED.patient_id, order_id = COALESCE(EXCLUDED.order_id, observation.order_id),
                status = EXCLUDED.status, display = EXCLUDED.display, value_type = EXCLUDED.value_type,
                value_quantity = EXCLUDED.value_quantity, value_unit = EXCLUDED.value_unit,
                value_string = EXCLUDED.value_string, value_code = EXCLUDED.value_code,
                interpretation = EXCLUDED.interpretation, reference_range = EXCLUDED.reference_range,
                effective_at = EXCLUDED.effective_at, issued_at = now(),
                source_message_id = EXCLUDED.source_message_id, updated_at = now()
         RETURNING id, (xmax = 0) AS created, result_key",
    )
    .bind((0..n).map(|_| Uuid::now_v7()).collect::<Vec<_>>())
    .bind(order.iter().map(|&i| items[i].0).collect::<Vec<_>>())
    .bind(order.iter().map(|&i| items[i].1).collect::<Vec<_>>())
    .bind((0..n).map(|i| r(i).status).collect::<Vec<_>>())
    .bind((0..n).map(|i| r(i).code_system.as_str()).collect::<Vec<_>>())
    .bind((0..n).map(|i| r(i).code.as_str()).collect::<Vec<_>>())
    .bind((0..n).map(|i| r(i).display.as_deref()).collect::<Vec<_>>())
    .bind(values.iter().map(|v| v.0).collect::<Vec<_>>())
    .bind(values.iter().map(|v| v.1).collect::<Vec<_>>())
    .bind((0..n).map(|i| r(i).unit.as_deref()).collect::<Vec<_>>())
    .bind(values.iter().map(|v| v.2).collect::<Vec<_>>())
    .bind(values.iter().map(|v| v.3).collect::<Vec<_>>())
    .bind((0..n).map(|i| r(i).interpretation.as_deref()).collect::<Vec<_>>())
    .bind((0..n).map(|i| r(i).reference_range.as_deref()).collect::<Vec<_>>())
    .bind((0..n).map(|i| r(i).effective_at).collect::<Vec<_>>())
    .bind((0..n).map(|i| r(i).result_key.as_str()).collect::<Vec<_>>())
    .bind(order.iter().map(|&i| items[i].3).collect::<Vec<_>>())
    .fetch_all(&mut *conn)
    .await?;
    let by_key: std::collections::HashMap<String, (Uuid, bool)> = rows
        .into_iter()
        .map(|(id, created, key)| (key, (id, created)))
        .collect();
    items
        .iter()
        .map(|(_, _, r, _)| {
            by_key
                .get(&r.result_key)
                .map(|&(id, created)| Upserted {
                    id,
                    created,
                    version: 1,
                })
                .ok_or_else(|| crate::Error::NotFound {
                    entity: "observation",
                    key: r.result_key.clone(),
                })
        })
        .collect()
}

pub async fn upsert_appointment(
    conn: &mut PgConnection,
    patient_id: Uuid,
    order_id: Option<Uuid>,
    a: &AppointmentData,
    source_message_id: Option<Uuid>,
) -> Result<Upserted> {
    let (id, created): (Uuid, bool) = sqlx::query_as(
        "INSERT INTO appointment (id, placer_system, placer_id, filler_id, patient_id, order_id, status,
                                  reason_code, reason_display, start_at, duration_minutes, location, source_message_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
         ON CONFLICT (placer_system, placer_id) DO UPDATE
            SET filler_id = COALESCE(EXCLUDED.filler_id, appointment.filler_id), patient_id = EXCLUDED.patient_id,
                order_id = COALESCE(EXCLUDED.order_id, appointment.order_id), status = EXCLUDED.status,
                reason_code = COALESCE(EXCLUDED.reason_code, appointment.reason_code),
                reason_display = COALESCE(EXCLUDED.reason_display, appointment.reason_display),
                start_at = COALESCE(EXCLUDED.start_at, appointment.start_at),
                duration_minutes = COALESCE(EXCLUDED.duration_minutes, appointment.duration_minutes),
                location = COALESCE(EXCLUDED.location, appointment.location),
                source_message_id = EXCLUDED.source_message_id, updated_at = now()
         RETURNING id, (xmax = 0) AS created",
    )
    .bind(Uuid::now_v7())
    .bind(&a.placer.system)
    .bind(&a.placer.value)
    .bind(&a.filler_id)
    .bind(patient_id)
    .bind(order_id)
    .bind(a.status)
    .bind(&a.reason_code)
    .bind(&a.reason_display)
    .bind(a.start_at)
    .bind(a.duration_minutes)
    .bind(&a.location)
    .bind(source_message_id)
    .fetch_one(&mut *conn)
    .await?;
    Ok(Upserted {
        id,
        created,
        version: 1,
    })
}

/// Adds charge lines to the patient's draft invoice `number` (created when
/// absent) and recomputes its total. Returns the invoice and the lines added.
pub async fn add_charges(
    conn: &mut PgConnection,
    patient_id: Uuid,
    inv: &InvoiceData,
    source_message_id: Option<Uuid>,
) -> Result<(Upserted, usize)> {
    let (id, created, version): (Uuid, bool, i32) = sqlx::query_as(
        "INSERT INTO invoice (id, number, patient_id, status, currency, source_message_id)
         VALUES ($1, $2, $3, 'draft', $4, $5)
         ON CONFLICT (number) DO UPDATE SET source_message_id = EXCLUDED.source_message_id, updated_at = now(),
                                            version = invoice.version + 1
         RETURNING id, (xmax = 0) AS created, version",
    )
    .bind(Uuid::now_v7())
    .bind(&inv.number)
    .bind(patient_id)
    .bind(&inv.currency)
    .bind(source_message_id)
    .fetch_one(&mut *conn)
    .await?;
    let (next,): (i32,) =
        sqlx::query_as("SELECT COALESCE(max(line_no), 0) + 1 FROM invoice_line WHERE invoice_id = $1")
            .bind(id)
            .fetch_one(&mut *conn)
            .await?;
    for (i, l) in inv.lines.iter().enumerate() {
        sqlx::query(
            "INSERT INTO invoice_line (invoice_id, line_no, code, description, quantity, unit_price_minor, amount_minor)
             VALUES ($1, $2, $3, $4, $5::numeric, $6, $7)",
        )
        .bind(id)
        .bind(next + i as i32)
        .bind(&l.code)
        .bind(&l.description)
        .bind(&l.quantity)
        .bind(l.unit_price_minor)
        .bind(l.amount_minor)
        .execute(&mut *conn)
        .await?;
    }
    sqlx::query(
        "UPDATE invoice SET total_minor = (SELECT COALESCE(sum(amount_minor), 0) FROM invoice_line WHERE invoice_id = $1)
          WHERE id = $1",
    )
    .bind(id)
    .execute(&mut *conn)
    .await?;
    Ok((Upserted { id, created, version }, inv.lines.len()))
}
