//! Read models for operators: what `carehub trace` and `carehub lab
//! timeline` show, and the synthetic patients `carehub fhir load-synthetic`
//! loads. The SQL lives here, beside the tables; the binary only prints.
//! Callers audit what they show (patient data shown is patient data read).

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::{OutboxRow, Result, StoredMessage};

/// The first stored message with this control id (MSH-10, an event id).
pub async fn message_by_control_id(pool: &PgPool, control_id: &str) -> Result<Option<StoredMessage>> {
    Ok(
        sqlx::query_as("SELECT * FROM message WHERE control_id = $1 ORDER BY received_at LIMIT 1")
            .bind(control_id)
            .fetch_optional(pool)
            .await?,
    )
}

/// The outbox records a message caused, in order.
pub async fn outbox_of(pool: &PgPool, message_id: Uuid) -> Result<Vec<OutboxRow>> {
    Ok(
        sqlx::query_as("SELECT * FROM outbox WHERE payload->'data'->>'source_message_id' = $1 ORDER BY id")
            .bind(message_id.to_string())
            .fetch_all(pool)
            .await?,
    )
}

/// The canonical rows a message wrote, each as `{"table": …, "row": …}`
/// (a patient with its identifiers).
pub async fn rows_written_by(pool: &PgPool, message_id: Uuid) -> Result<Vec<serde_json::Value>> {
    let rows: Vec<(serde_json::Value,)> = sqlx::query_as(
        "SELECT jsonb_build_object('table', 'organization', 'row', to_jsonb(o)) FROM organization o WHERE source_message_id = $1
         UNION ALL
         SELECT jsonb_build_object('table', 'patient', 'row', to_jsonb(p) || jsonb_build_object('identifiers',
                (SELECT jsonb_agg(jsonb_build_object('system', i.system, 'value', i.value, 'type', i.type_code))
                   FROM patient_identifier i WHERE i.patient_id = p.id)))
           FROM patient p WHERE source_message_id = $1",
    )
    .bind(message_id)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|(r,)| r).collect())
}

/// A message's dead letters: id, error code, reason.
pub async fn dead_letters_of(pool: &PgPool, message_id: Uuid) -> Result<Vec<(i64, String, String)>> {
    Ok(
        sqlx::query_as("SELECT id, error_code, reason FROM dead_letter WHERE message_id = $1 ORDER BY id")
            .bind(message_id)
            .fetch_all(pool)
            .await?,
    )
}

/// Where an order is on its journey.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct OrderProgress {
    pub order_id: Uuid,
    /// The lab job's status; `None` before it went to the lab.
    pub lab_status: Option<String>,
    /// HL7 notices sent to the clinic, and how many the clinic accepted.
    pub notices: i64,
    pub notices_accepted: i64,
}

/// The progress of the order `order` (carehub's id or the clinic's number).
pub async fn order_progress(pool: &PgPool, order: &str) -> Result<Option<OrderProgress>> {
    Ok(sqlx::query_as(
        "SELECT o.id AS order_id, j.status AS lab_status,
                (SELECT count(*) FROM audit_log a, jsonb_array_elements(a.detail::jsonb->'notified') n
                  WHERE a.entity_type = 'lab_job' AND a.entity_id = o.id::text AND n.value->>'to' = 'hl7') AS notices,
                (SELECT count(*) FROM audit_log a, jsonb_array_elements(a.detail::jsonb->'notified') n
                  WHERE a.entity_type = 'lab_job' AND a.entity_id = o.id::text AND n.value->>'to' = 'hl7'
                    AND EXISTS (SELECT 1 FROM audit_log s WHERE s.entity_type = 'hl7_message'
                                   AND s.entity_id = n.value->>'control_id')) AS notices_accepted
           FROM service_order o LEFT JOIN lab_job j ON j.order_id = o.id
          WHERE o.id::text = $1 OR o.placer_number = $1
          ORDER BY o.created_at DESC LIMIT 1",
    )
    .bind(order)
    .fetch_optional(pool)
    .await?)
}

/// One step of an order's timeline: an audit entry about the order, its
/// lab job or the HL7 notices sent for it, with the message it came from.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct TimelineStep {
    pub at: DateTime<Utc>,
    pub actor_id: String,
    pub action: String,
    pub entity_type: String,
    pub entity_id: Option<String>,
    pub detail: Option<String>,
    pub message_type: Option<String>,
    pub control_id: Option<String>,
}

/// The order's timeline, in the audit trail's order. The lab's HL7 notices
/// carry control ids `L<last 12 hex digits of the order id>.<n>`.
pub async fn order_timeline(pool: &PgPool, order_id: Uuid) -> Result<Vec<TimelineStep>> {
    Ok(sqlx::query_as(
        "SELECT a.at, a.actor_id, a.action, a.entity_type, a.entity_id, a.detail, m.message_type, m.control_id
           FROM audit_log a LEFT JOIN message m ON m.id = a.message_id
          WHERE a.entity_id = $1
             OR (a.entity_type = 'hl7_message' AND a.entity_id LIKE $2)
          ORDER BY a.seq",
    )
    .bind(order_id.to_string())
    .bind(format!("L{}.%", &order_id.simple().to_string()[20..]))
    .fetch_all(pool)
    .await?)
}

/// How many patients carry an identifier of `system`.
pub async fn patients_in_system(pool: &PgPool, system: &str) -> Result<i64> {
    let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM patient_identifier WHERE system = $1")
        .bind(system)
        .fetch_one(pool)
        .await?;
    Ok(n)
}

/// Synthetic patients numbered `from..=to` (name `Synthetic`/`Pat<n>`, a
/// birth date and sex from the number, identifier `S-<n>` in `system`), in
/// one statement; their ids, for the caller's audit entries.
pub async fn insert_synthetic_patients(conn: &mut PgConnection, from: i64, to: i64, system: &str) -> Result<Vec<Uuid>> {
    let ids: Vec<(Uuid,)> = sqlx::query_as(
        "WITH src AS MATERIALIZED (SELECT gen_random_uuid() AS id, i FROM generate_series($1::bigint, $2::bigint) i),
              p AS (INSERT INTO patient (id, family_name, given_names, birth_date, sex)
                    SELECT id, 'Synthetic', ARRAY['Pat' || i], date '1930-01-01' + (i % 30000)::int,
                           CASE i % 2 WHEN 0 THEN 'female' ELSE 'male' END
                      FROM src RETURNING id)
         INSERT INTO patient_identifier (patient_id, system, value, type_code)
         SELECT id, $3, 'S-' || lpad(i::text, 9, '0'), 'MR' FROM src RETURNING patient_id",
    )
    .bind(from)
    .bind(to)
    .bind(system)
    .fetch_all(conn)
    .await?;
    Ok(ids.into_iter().map(|(id,)| id).collect())
}
