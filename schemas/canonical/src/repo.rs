//! Writes and reads of canonical entities, composed by pipelines inside their
//! transaction. Each write stamps `source_message_id` (provenance); the
//! pipeline appends the matching audit entries.

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::model::{Identifier, Organization, OrganizationKind, Patient, PatientIdentifier, Sex};
use crate::{Error, Result};

/// Whether an upsert created the entity or changed an existing one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Upserted {
    pub id: Uuid,
    pub created: bool,
    pub version: i32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrganizationData {
    pub kind: OrganizationKind,
    pub name: String,
    pub identifier: Identifier,
    #[serde(default)]
    pub phone: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub address: Option<serde_json::Value>,
}

/// Creates or updates the organization named by its identifier.
pub async fn upsert_organization(
    conn: &mut PgConnection,
    org: &OrganizationData,
    source_message_id: Option<Uuid>,
) -> Result<Upserted> {
    let (id, version, created): (Uuid, i32, bool) = sqlx::query_as(
        "INSERT INTO organization (id, kind, name, identifier_system, identifier_value, phone, email,
                                   address, source_message_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (identifier_system, identifier_value) DO UPDATE
            SET kind = EXCLUDED.kind, name = EXCLUDED.name, phone = EXCLUDED.phone,
                email = EXCLUDED.email, address = EXCLUDED.address,
                source_message_id = EXCLUDED.source_message_id,
                version = organization.version + 1, updated_at = now()
         RETURNING id, version, (xmax = 0) AS created",
    )
    .bind(Uuid::now_v7())
    .bind(org.kind.as_str())
    .bind(&org.name)
    .bind(&org.identifier.system)
    .bind(&org.identifier.value)
    .bind(&org.phone)
    .bind(&org.email)
    .bind(&org.address)
    .bind(source_message_id)
    .fetch_one(&mut *conn)
    .await?;
    Ok(Upserted { id, created, version })
}

/// The organization holding `identifier`, created (with `name`) when there is
/// none. An existing one is left as it is: its name and details come from
/// where organizations are managed (the intake pipeline), not from a header.
pub async fn ensure_organization(
    conn: &mut PgConnection,
    kind: OrganizationKind,
    identifier: &Identifier,
    name: &str,
    source_message_id: Option<Uuid>,
) -> Result<Upserted> {
    let inserted: Option<(Uuid,)> = sqlx::query_as(
        "INSERT INTO organization (id, kind, name, identifier_system, identifier_value, source_message_id)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (identifier_system, identifier_value) DO NOTHING RETURNING id",
    )
    .bind(Uuid::now_v7())
    .bind(kind.as_str())
    .bind(name)
    .bind(&identifier.system)
    .bind(&identifier.value)
    .bind(source_message_id)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some((id,)) = inserted {
        return Ok(Upserted {
            id,
            created: true,
            version: 1,
        });
    }
    let (id, version): (Uuid, i32) =
        sqlx::query_as("SELECT id, version FROM organization WHERE identifier_system = $1 AND identifier_value = $2")
            .bind(&identifier.system)
            .bind(&identifier.value)
            .fetch_one(&mut *conn)
            .await?;
    Ok(Upserted {
        id,
        created: false,
        version,
    })
}

pub async fn find_organization(conn: &mut PgConnection, identifier: &Identifier) -> Result<Option<Organization>> {
    Ok(
        sqlx::query_as("SELECT * FROM organization WHERE identifier_system = $1 AND identifier_value = $2")
            .bind(&identifier.system)
            .bind(&identifier.value)
            .fetch_optional(&mut *conn)
            .await?,
    )
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HumanName {
    #[serde(default)]
    pub family: Option<String>,
    #[serde(default)]
    pub given: Vec<String>,
}

/// What a source knows about a patient.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatientData {
    /// At least one; the patient is matched by any of them.
    pub identifiers: Vec<Identifier>,
    #[serde(default)]
    pub name: Option<HumanName>,
    #[serde(default)]
    pub birth_date: Option<NaiveDate>,
    #[serde(default)]
    pub sex: Option<Sex>,
    #[serde(default)]
    pub phone: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub address: Option<serde_json::Value>,
    /// The clinic that manages the patient, by its identifier; it must exist.
    #[serde(default)]
    pub managing_organization: Option<Identifier>,
}

/// Why a patient write was refused: the caller dead-letters it with this reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatientRejected {
    #[error("a patient needs at least one identifier")]
    NoIdentifier,
    #[error("identifiers name {0} different patients")]
    AmbiguousIdentifiers(usize),
    #[error("managing organization {system}|{value} is unknown")]
    UnknownOrganization { system: String, value: String },
}

impl PatientRejected {
    /// The bounded dead-letter code: a missing reference, or bad data.
    pub fn error_code(&self) -> &'static str {
        match self {
            PatientRejected::UnknownOrganization { .. } => "unknown_reference",
            _ => "invalid_data",
        }
    }
}

/// Creates or updates a patient matched by identifier. The matched row is
/// locked first (ordering rule of the outbox). Returns `Ok(Err(_))` when the
/// data is refused for a reason that fixing the data or the reference fixes.
pub async fn upsert_patient(
    conn: &mut PgConnection,
    data: &PatientData,
    source_message_id: Option<Uuid>,
) -> Result<Result<Upserted, PatientRejected>> {
    upsert_patient_as(conn, data, source_message_id, None).await
}

/// [`upsert_patient`], a new patient taking `new_id` when given (a FHIR
/// write's id, so that the record and the FHIR resource share it).
pub async fn upsert_patient_as(
    conn: &mut PgConnection,
    data: &PatientData,
    source_message_id: Option<Uuid>,
    new_id: Option<Uuid>,
) -> Result<Result<Upserted, PatientRejected>> {
    if data.identifiers.is_empty() {
        return Ok(Err(PatientRejected::NoIdentifier));
    }
    let org_id = match &data.managing_organization {
        None => None,
        Some(ident) => match find_organization(conn, ident).await? {
            Some(org) => Some(org.id),
            None => {
                return Ok(Err(PatientRejected::UnknownOrganization {
                    system: ident.system.clone(),
                    value: ident.value.clone(),
                }));
            }
        },
    };
    // The same identifier twice in one resource or PID-3 is one identifier
    // (hardening item 7): merged, the first type code kept. Sorted, so that
    // concurrent writers claim identifiers in one order and cannot deadlock.
    let mut identifiers: Vec<&Identifier> = Vec::with_capacity(data.identifiers.len());
    for i in &data.identifiers {
        if !identifiers.iter().any(|k| k.system == i.system && k.value == i.value) {
            identifiers.push(i);
        }
    }
    identifiers.sort_by(|a, b| (&a.system, &a.value).cmp(&(&b.system, &b.value)));
    let owned: Vec<Identifier> = identifiers.into_iter().cloned().collect();

    // The identifier is the arbiter (hardening item 3): a new patient exists
    // only once it holds all its identifiers. Two first messages for the same
    // new patient in concurrent transactions both find nobody; the second to
    // claim an identifier waits for the first to commit, finds it taken, and
    // starts again, this time finding the patient the first one created.
    for _ in 0..3 {
        let matches = lock_patients_holding(conn, &owned).await?;
        if matches.len() > 1 {
            return Ok(Err(PatientRejected::AmbiguousIdentifiers(matches.len())));
        }
        let existing = matches.first().copied();
        let id = existing.or(new_id).unwrap_or_else(Uuid::now_v7);
        let upserted = write_patient_row(conn, id, data, org_id, source_message_id).await?;
        let taken = claim_identifiers(conn, id, &owned).await?;
        if taken.is_empty() {
            return Ok(Ok(upserted));
        }
        if existing.is_none() {
            // Another transaction created this patient meanwhile: give up the
            // row just written and the identifiers it took, and match again.
            sqlx::query("DELETE FROM patient_identifier WHERE patient_id = $1")
                .bind(id)
                .execute(&mut *conn)
                .await?;
            sqlx::query("DELETE FROM patient WHERE id = $1")
                .bind(id)
                .execute(&mut *conn)
                .await?;
            continue;
        }
        // The matched patient could not take an identifier another patient holds.
        return Ok(Err(PatientRejected::AmbiguousIdentifiers(2)));
    }
    Err(Error::Unavailable(
        "patient identifiers kept changing under concurrent writers".into(),
    ))
}

/// Inserts or updates the patient row `id`.
async fn write_patient_row(
    conn: &mut PgConnection,
    id: Uuid,
    data: &PatientData,
    org_id: Option<Uuid>,
    source_message_id: Option<Uuid>,
) -> Result<Upserted> {
    let name = data.name.clone().unwrap_or(HumanName {
        family: None,
        given: vec![],
    });
    let sex = data.sex.map(Sex::as_str);
    let (version, created): (i32, bool) = sqlx::query_as(
        "INSERT INTO patient (id, family_name, given_names, birth_date, sex, phone, email, address,
                              managing_organization_id, source_message_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
         ON CONFLICT (id) DO UPDATE
            SET family_name = EXCLUDED.family_name, given_names = EXCLUDED.given_names,
                birth_date = EXCLUDED.birth_date, sex = EXCLUDED.sex, phone = EXCLUDED.phone,
                email = EXCLUDED.email, address = EXCLUDED.address,
                managing_organization_id = COALESCE(EXCLUDED.managing_organization_id,
                                                    patient.managing_organization_id),
                source_message_id = EXCLUDED.source_message_id,
                version = patient.version + 1, updated_at = now()
         RETURNING version, (xmax = 0) AS created",
    )
    .bind(id)
    .bind(&name.family)
    .bind(&name.given)
    .bind(data.birth_date)
    .bind(sex)
    .bind(&data.phone)
    .bind(&data.email)
    .bind(&data.address)
    .bind(org_id)
    .bind(source_message_id)
    .fetch_one(&mut *conn)
    .await?;
    Ok(Upserted { id, created, version })
}

/// Gives `identifiers` (distinct, sorted) to patient `id`: the ones nobody
/// holds are inserted, the ones `id` holds get their type code updated.
/// Returns those another patient holds (nothing is taken from it).
async fn claim_identifiers(conn: &mut PgConnection, id: Uuid, identifiers: &[Identifier]) -> Result<Vec<Identifier>> {
    let systems: Vec<&str> = identifiers.iter().map(|i| i.system.as_str()).collect();
    let values: Vec<&str> = identifiers.iter().map(|i| i.value.as_str()).collect();
    let types: Vec<Option<&str>> = identifiers.iter().map(|i| i.type_code.as_deref()).collect();
    let mine: Vec<(String, String)> = sqlx::query_as(
        "INSERT INTO patient_identifier (patient_id, system, value, type_code)
         SELECT $1, s, v, t FROM UNNEST($2::text[], $3::text[], $4::text[]) WITH ORDINALITY AS k(s, v, t, n)
          ORDER BY n
         ON CONFLICT (system, value) DO UPDATE SET type_code = EXCLUDED.type_code
          WHERE patient_identifier.patient_id = EXCLUDED.patient_id
         RETURNING system, value",
    )
    .bind(id)
    .bind(&systems)
    .bind(&values)
    .bind(&types)
    .fetch_all(&mut *conn)
    .await?;
    Ok(identifiers
        .iter()
        .filter(|i| !mine.iter().any(|(s, v)| *s == i.system && *v == i.value))
        .cloned()
        .collect())
}

/// The patients holding any of `identifiers`, locked in id order (the
/// ordering rule that keeps concurrent writers from deadlocking).
pub async fn lock_patients_holding(conn: &mut PgConnection, identifiers: &[Identifier]) -> Result<Vec<Uuid>> {
    let systems: Vec<&str> = identifiers.iter().map(|i| i.system.as_str()).collect();
    let values: Vec<&str> = identifiers.iter().map(|i| i.value.as_str()).collect();
    let rows: Vec<(Uuid,)> = sqlx::query_as(
        "SELECT p.id FROM patient p
         WHERE p.id IN (SELECT i.patient_id FROM patient_identifier i
                          JOIN UNNEST($1::text[], $2::text[]) AS k(system, value)
                            ON k.system = i.system AND k.value = i.value)
         ORDER BY p.id FOR UPDATE",
    )
    .bind(&systems)
    .bind(&values)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.into_iter().map(|(id,)| id).collect())
}

pub async fn get_patient(pool: &PgPool, id: Uuid) -> Result<Patient> {
    sqlx::query_as("SELECT * FROM patient WHERE id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await?
        .ok_or_else(|| Error::NotFound {
            entity: "patient",
            key: id.to_string(),
        })
}

pub async fn patient_identifiers<'e>(ex: impl sqlx::PgExecutor<'e>, id: Uuid) -> Result<Vec<PatientIdentifier>> {
    Ok(
        sqlx::query_as("SELECT * FROM patient_identifier WHERE patient_id = $1 ORDER BY system, value")
            .bind(id)
            .fetch_all(ex)
            .await?,
    )
}
