//! Repair of patients split in two before hardening item 3 was fixed: two
//! first messages for one new patient, applied in concurrent transactions,
//! each created a patient, and the second kept none of the identifiers (the
//! first held them). Such a patient has no identifier; the message that
//! made it names the identifiers, and so the patient it belongs to. The
//! repair merges it into that patient as an A40 merge does (its orders,
//! results, visits… move over, it points at the survivor), audited.

use carehub_hl7::codec::Message;
use carehub_schema::repo::PatientData;
use carehub_schema::{Action, ActorKind, AuditEntry, AuditLog, records, repo};
use serde::Serialize;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{Command, map};

/// A patient without identifiers, and the one it was split from, if found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SplitPatient {
    pub patient_id: Uuid,
    /// The message that created it.
    pub source_message_id: Option<Uuid>,
    /// The patient holding that message's identifiers.
    pub survivor_id: Option<Uuid>,
    /// Why no survivor was found, when none was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unresolved: Option<&'static str>,
}

fn patient_of(command: &Command) -> Option<&PatientData> {
    match command {
        Command::UpsertPatient { patient, .. }
        | Command::Orders { patient, .. }
        | Command::Results { patient, .. }
        | Command::Appointment { patient, .. }
        | Command::Charges { patient, .. } => Some(patient),
        Command::MergePatients { survivor, .. } => Some(survivor),
    }
}

/// Active patients without identifiers, each with the patient its message names.
pub async fn find_split_patients(conn: &mut PgConnection) -> Result<Vec<SplitPatient>, carehub_schema::Error> {
    let ghosts: Vec<(Uuid, Option<Uuid>)> = sqlx::query_as(
        "SELECT p.id, p.source_message_id FROM patient p
          WHERE p.merged_into_id IS NULL
            AND NOT EXISTS (SELECT 1 FROM patient_identifier i WHERE i.patient_id = p.id)
          ORDER BY p.created_at",
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut out = Vec::with_capacity(ghosts.len());
    for (patient_id, source_message_id) in ghosts {
        let mut split = SplitPatient {
            patient_id,
            source_message_id,
            survivor_id: None,
            unresolved: None,
        };
        let raw: Option<(String, Vec<u8>)> = match source_message_id {
            Some(id) => {
                sqlx::query_as("SELECT protocol, raw FROM message WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&mut *conn)
                    .await?
            }
            None => None,
        };
        split.unresolved = match raw {
            None => Some("its message is not in the message store"),
            Some((protocol, _)) if protocol != "hl7v2" => Some("its message is not HL7 v2"),
            Some((_, raw)) => match identifiers_of(&raw) {
                None => Some("its message names no patient identifier"),
                Some(identifiers) => {
                    let holders = repo::lock_patients_holding(conn, &identifiers).await?;
                    split.survivor_id = holders.into_iter().find(|h| *h != patient_id);
                    split
                        .survivor_id
                        .is_none()
                        .then_some("no other patient holds its identifiers")
                }
            },
        };
        out.push(split);
    }
    Ok(out)
}

fn identifiers_of(raw: &[u8]) -> Option<Vec<carehub_schema::model::Identifier>> {
    let (text, _) = carehub_hl7::codec::decode_text(raw).ok()?;
    let msg = Message::parse(&text).ok()?;
    let mapped = map(&msg).ok()?;
    let ids = patient_of(&mapped.command)?.identifiers.clone();
    (!ids.is_empty()).then_some(ids)
}

/// Merges `split` into its survivor, as A40 does, with an audit entry
/// naming `actor`. Returns false when it has no survivor.
pub async fn repair(conn: &mut PgConnection, split: &SplitPatient, actor: &str) -> Result<bool, carehub_schema::Error> {
    let Some(survivor) = split.survivor_id else {
        return Ok(false);
    };
    records::merge_patient_into(conn, survivor, split.patient_id, split.source_message_id).await?;
    let entry = AuditEntry::new(ActorKind::User, actor, Action::Update, "patient")
        .entity(split.patient_id)
        .message(split.source_message_id)
        .origin("cli:patient repair-splits")
        .detail(serde_json::json!({ "merged_into": survivor, "reason": "split by a concurrent first message" }));
    AuditLog::append(conn, &[entry]).await?;
    Ok(true)
}
