//! Patients upserted set-wise: what [`repo::upsert_patient`](crate::repo::upsert_patient)
//! does for each of a batch's records, in their order, in four statements
//! for the whole batch (managing organizations, the patients holding the
//! batch's identifiers — locked in id order —, the patient rows, the
//! identifiers).
//!
//! The batch is resolved in memory first, record after record, exactly as
//! one call per record would resolve it: a record matches the patient that
//! holds any of its identifiers (in the database or given them by an
//! earlier record of the batch), a new patient is created when none does,
//! versions count every write, the last write's values stand and a
//! managing organization, once known, is kept. Anything one call would
//! refuse is refused here with the record's index; an identifier another
//! transaction claimed meanwhile is [`BatchRefusal::Raced`], and the caller
//! applies the batch record by record instead (where the race is retried).

use std::collections::{BTreeSet, HashMap};

use sqlx::PgConnection;
use uuid::Uuid;

use crate::Result;
use crate::model::Identifier;
use crate::repo::{PatientData, PatientRejected, Upserted};

/// Why a batch of patient writes was not applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchRefusal {
    /// Record `index` is refused, as one call would refuse it.
    Refused { index: usize, reason: PatientRejected },
    /// An identifier was claimed by another transaction meanwhile.
    Raced,
}

type Key = (String, String);

/// The final row of one patient after the batch's writes.
struct FinalRow<'a> {
    data: &'a PatientData,
    organization: Option<Uuid>,
    source_message_id: Option<Uuid>,
    version: i32,
}

/// Upserts `items` (a patient's data and its source message) in order; one
/// [`Upserted`] per item. Run it inside the caller's transaction; on
/// `Ok(Err(_))` the caller rolls back whatever it wrote.
pub async fn upsert_patients(
    conn: &mut PgConnection,
    items: &[(&PatientData, Option<Uuid>)],
) -> Result<std::result::Result<Vec<Upserted>, BatchRefusal>> {
    if items.is_empty() {
        return Ok(Ok(Vec::new()));
    }
    // Per item its identifiers, distinct and sorted (the rule of upsert_patient).
    let mut per_item: Vec<Vec<&Identifier>> = Vec::with_capacity(items.len());
    for (index, (data, _)) in items.iter().enumerate() {
        let mut ids: Vec<&Identifier> = Vec::with_capacity(data.identifiers.len());
        for i in &data.identifiers {
            if !ids.iter().any(|k| k.system == i.system && k.value == i.value) {
                ids.push(i);
            }
        }
        if ids.is_empty() {
            return Ok(Err(BatchRefusal::Refused {
                index,
                reason: PatientRejected::NoIdentifier,
            }));
        }
        ids.sort_by(|a, b| (&a.system, &a.value).cmp(&(&b.system, &b.value)));
        per_item.push(ids);
    }
    let organizations = find_organizations(conn, items).await?;
    let all: BTreeSet<Key> = per_item
        .iter()
        .flatten()
        .map(|i| (i.system.clone(), i.value.clone()))
        .collect();
    let (systems, values): (Vec<&str>, Vec<&str>) = all.iter().map(|(s, v)| (s.as_str(), v.as_str())).unzip();
    let held: Vec<(String, String, Uuid, i32)> = sqlx::query_as(
        "SELECT i.system, i.value, p.id, p.version FROM patient p
           JOIN patient_identifier i ON i.patient_id = p.id
           JOIN UNNEST($1::text[], $2::text[]) AS k(system, value) ON k.system = i.system AND k.value = i.value
          ORDER BY p.id FOR UPDATE OF p",
    )
    .bind(&systems)
    .bind(&values)
    .fetch_all(&mut *conn)
    .await?;
    let mut holder: HashMap<Key, Uuid> = HashMap::with_capacity(all.len());
    let mut versions: HashMap<Uuid, i32> = HashMap::new();
    for (system, value, id, version) in held {
        holder.insert((system, value), id);
        versions.insert(id, version);
    }

    let mut rows: HashMap<Uuid, FinalRow<'_>> = HashMap::new();
    let mut type_codes: HashMap<Key, (Uuid, Option<&str>)> = HashMap::new();
    let mut out = Vec::with_capacity(items.len());
    for (index, ((data, message), ids)) in items.iter().zip(&per_item).enumerate() {
        let organization = match &data.managing_organization {
            None => None,
            Some(o) => match organizations.get(&(o.system.clone(), o.value.clone())) {
                Some(id) => Some(*id),
                None => {
                    return Ok(Err(BatchRefusal::Refused {
                        index,
                        reason: PatientRejected::UnknownOrganization {
                            system: o.system.clone(),
                            value: o.value.clone(),
                        },
                    }));
                }
            },
        };
        let matches: BTreeSet<Uuid> = ids
            .iter()
            .filter_map(|i| holder.get(&(i.system.clone(), i.value.clone())).copied())
            .collect();
        if matches.len() > 1 {
            return Ok(Err(BatchRefusal::Refused {
                index,
                reason: PatientRejected::AmbiguousIdentifiers(matches.len()),
            }));
        }
        let (id, created) = match matches.first() {
            Some(id) => (*id, false),
            None => (Uuid::now_v7(), true),
        };
        let version = versions.get(&id).map_or(1, |v| v + 1);
        versions.insert(id, version);
        for i in ids {
            let key = (i.system.clone(), i.value.clone());
            holder.insert(key.clone(), id);
            type_codes.insert(key, (id, i.type_code.as_deref()));
        }
        let kept = rows.get(&id).and_then(|r| r.organization);
        rows.insert(
            id,
            FinalRow {
                data,
                organization: organization.or(kept),
                source_message_id: *message,
                version,
            },
        );
        out.push(Upserted { id, created, version });
    }

    write_rows(conn, &rows).await?;
    // Identifiers in (system, value) order, the order concurrent writers claim them in.
    let mut claims: Vec<(&Key, &(Uuid, Option<&str>))> = type_codes.iter().collect();
    claims.sort_by(|a, b| a.0.cmp(b.0));
    let ids: Vec<Uuid> = claims.iter().map(|(_, (id, _))| *id).collect();
    let systems: Vec<&str> = claims.iter().map(|((s, _), _)| s.as_str()).collect();
    let values: Vec<&str> = claims.iter().map(|((_, v), _)| v.as_str()).collect();
    let types: Vec<Option<&str>> = claims.iter().map(|(_, (_, t))| *t).collect();
    let claimed: Vec<(String,)> = sqlx::query_as(
        "INSERT INTO patient_identifier (patient_id, system, value, type_code)
         SELECT p, s, v, t FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[]) WITH ORDINALITY AS k(p, s, v, t, n)
          ORDER BY n
         ON CONFLICT (system, value) DO UPDATE SET type_code = EXCLUDED.type_code
          WHERE patient_identifier.patient_id = EXCLUDED.patient_id
         RETURNING system",
    )
    .bind(&ids)
    .bind(&systems)
    .bind(&values)
    .bind(&types)
    .fetch_all(&mut *conn)
    .await?;
    if claimed.len() != claims.len() {
        return Ok(Err(BatchRefusal::Raced));
    }
    Ok(Ok(out))
}

/// The managing organizations the items name, by identifier, in one query.
async fn find_organizations(
    conn: &mut PgConnection,
    items: &[(&PatientData, Option<Uuid>)],
) -> Result<HashMap<Key, Uuid>> {
    let wanted: BTreeSet<Key> = items
        .iter()
        .filter_map(|(d, _)| d.managing_organization.as_ref())
        .map(|o| (o.system.clone(), o.value.clone()))
        .collect();
    if wanted.is_empty() {
        return Ok(HashMap::new());
    }
    let (systems, values): (Vec<&str>, Vec<&str>) = wanted.iter().map(|(s, v)| (s.as_str(), v.as_str())).unzip();
    let found: Vec<(String, String, Uuid)> = sqlx::query_as(
        "SELECT o.identifier_system, o.identifier_value, o.id FROM organization o
           JOIN UNNEST($1::text[], $2::text[]) AS k(system, value)
             ON k.system = o.identifier_system AND k.value = o.identifier_value",
    )
    .bind(&systems)
    .bind(&values)
    .fetch_all(&mut *conn)
    .await?;
    Ok(found.into_iter().map(|(s, v, id)| ((s, v), id)).collect())
}

/// Every patient's final row in one statement, in id order (the lock order).
async fn write_rows(conn: &mut PgConnection, rows: &HashMap<Uuid, FinalRow<'_>>) -> Result<()> {
    let mut ordered: Vec<(&Uuid, &FinalRow<'_>)> = rows.iter().collect();
    ordered.sort_by_key(|(id, _)| **id);
    let ids: Vec<Uuid> = ordered.iter().map(|(id, _)| **id).collect();
    let family: Vec<Option<&str>> = ordered
        .iter()
        .map(|(_, r)| r.data.name.as_ref().and_then(|n| n.family.as_deref()))
        .collect();
    // text[] per row: PostgreSQL arrays cannot nest unevenly, so as JSON.
    let given: Vec<serde_json::Value> = ordered
        .iter()
        .map(|(_, r)| serde_json::json!(r.data.name.as_ref().map_or(&[][..], |n| &n.given[..])))
        .collect();
    let birth: Vec<Option<chrono::NaiveDate>> = ordered.iter().map(|(_, r)| r.data.birth_date).collect();
    let sex: Vec<Option<&str>> = ordered.iter().map(|(_, r)| r.data.sex.map(|s| s.as_str())).collect();
    let phone: Vec<Option<&str>> = ordered.iter().map(|(_, r)| r.data.phone.as_deref()).collect();
    let email: Vec<Option<&str>> = ordered.iter().map(|(_, r)| r.data.email.as_deref()).collect();
    let address: Vec<Option<&serde_json::Value>> = ordered.iter().map(|(_, r)| r.data.address.as_ref()).collect();
    let org: Vec<Option<Uuid>> = ordered.iter().map(|(_, r)| r.organization).collect();
    let source: Vec<Option<Uuid>> = ordered.iter().map(|(_, r)| r.source_message_id).collect();
    let version: Vec<i32> = ordered.iter().map(|(_, r)| r.version).collect();
    sqlx::query(
        "INSERT INTO patient (id, family_name, given_names, birth_date, sex, phone, email, address,
                              managing_organization_id, source_message_id, version)
         SELECT i, f, ARRAY(SELECT jsonb_array_elements_text(g)), b, s, ph, e, a, o, m, v
           FROM UNNEST($1::uuid[], $2::text[], $3::jsonb[], $4::date[], $5::text[], $6::text[], $7::text[],
                       $8::jsonb[], $9::uuid[], $10::uuid[], $11::int[]) AS x(i, f, g, b, s, ph, e, a, o, m, v)
         ON CONFLICT (id) DO UPDATE
            SET family_name = EXCLUDED.family_name, given_names = EXCLUDED.given_names,
                birth_date = EXCLUDED.birth_date, sex = EXCLUDED.sex, phone = EXCLUDED.phone,
                email = EXCLUDED.email, address = EXCLUDED.address,
                managing_organization_id = COALESCE(EXCLUDED.managing_organization_id,
                                                    patient.managing_organization_id),
                source_message_id = EXCLUDED.source_message_id,
                version = EXCLUDED.version, updated_at = now()",
    )
    .bind(&ids)
    .bind(&family)
    .bind(&given)
    .bind(&birth)
    .bind(&sex)
    .bind(&phone)
    .bind(&email)
    .bind(&address)
    .bind(&org)
    .bind(&source)
    .bind(&version)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
