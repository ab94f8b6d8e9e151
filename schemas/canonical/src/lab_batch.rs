//! The lab-status tables read and written for a whole batch of reports:
//! one statement per table, whatever the batch's size. The decisions (which
//! report is next, held, a duplicate or a conflict; what each transition
//! changes) are the lab pipeline's, taken in memory between
//! [`StatusBatch::load`] and [`StatusBatch::write`].
//!
//! Lock order: `lab_job` rows, then `service_order` rows, each in id order —
//! two batches (two partitions of the status topic, or the dispatch
//! pipeline) never wait on each other in a circle.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::Result;
use crate::lab::{LabJob, OrderForLab};
use crate::model::PatientIdentifier;

/// A report held (in `lab_status_held`) until the gap before it is filled.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct HeldReport {
    pub order_id: Uuid,
    pub sequence: i64,
    pub event: serde_json::Value,
    pub source_message_id: Option<Uuid>,
}

/// What the batch's reports need to be judged and applied, read and locked
/// in a handful of statements.
#[derive(Debug, Default)]
pub struct StatusBatch {
    /// The jobs, locked (`FOR UPDATE`) until the transaction ends.
    pub jobs: HashMap<Uuid, LabJob>,
    /// The orders, locked too: a transition may change an order's status.
    pub orders: HashMap<Uuid, OrderForLab>,
    /// Reports already held for these orders.
    pub held: Vec<HeldReport>,
    /// The status each (order, sequence) of `applied_asked` moved its job to.
    pub applied: HashMap<(Uuid, i64), String>,
}

impl StatusBatch {
    /// Locks and reads the jobs and orders of `order_ids`, the reports held
    /// for them and, for `applied_asked` (reports at or below their job's
    /// sequence), the status each applied report set.
    pub async fn load(conn: &mut PgConnection, order_ids: &[Uuid]) -> Result<Self> {
        let (ids, jobs) = lock_jobs(conn, order_ids).await?;
        let orders: Vec<OrderForLab> = sqlx::query_as(concat!(
            crate::lab::order_for_lab_select!(),
            " WHERE o.id = ANY($1) ORDER BY o.id FOR UPDATE OF o"
        ))
        .bind(&ids)
        .fetch_all(&mut *conn)
        .await?;
        let held: Vec<HeldReport> = sqlx::query_as(
            "SELECT order_id, sequence, event, source_message_id FROM lab_status_held
              WHERE order_id = ANY($1) ORDER BY order_id, sequence",
        )
        .bind(&ids)
        .fetch_all(&mut *conn)
        .await?;
        Ok(StatusBatch {
            jobs,
            orders: orders.into_iter().map(|o| (o.id, o)).collect(),
            held,
            applied: HashMap::new(),
        })
    }

    /// Reads the status applied by each of `asked` (order, sequence), for
    /// reports that arrived again: one statement.
    pub async fn load_applied(&mut self, conn: &mut PgConnection, asked: &[(Uuid, i64)]) -> Result<()> {
        if asked.is_empty() {
            return Ok(());
        }
        let (orders, sequences): (Vec<Uuid>, Vec<i64>) = asked.iter().copied().unzip();
        let rows: Vec<(Uuid, i64, String)> = sqlx::query_as(
            "SELECT e.order_id, e.sequence, e.to_status FROM lab_job_event e
               JOIN unnest($1::uuid[], $2::bigint[]) a(order_id, sequence)
                 ON a.order_id = e.order_id AND a.sequence = e.sequence",
        )
        .bind(&orders)
        .bind(&sequences)
        .fetch_all(&mut *conn)
        .await?;
        self.applied
            .extend(rows.into_iter().map(|(o, s, status)| ((o, s), status)));
        Ok(())
    }
}

/// The jobs of `order_ids`, locked (`FOR UPDATE`) in id order — the lock
/// order above — with the ids sorted and deduplicated for the batch's other reads.
async fn lock_jobs(conn: &mut PgConnection, order_ids: &[Uuid]) -> Result<(Vec<Uuid>, HashMap<Uuid, LabJob>)> {
    let mut ids = order_ids.to_vec();
    ids.sort_unstable();
    ids.dedup();
    let jobs: Vec<LabJob> =
        sqlx::query_as("SELECT * FROM lab_job WHERE order_id = ANY($1) ORDER BY order_id FOR UPDATE")
            .bind(&ids)
            .fetch_all(&mut *conn)
            .await?;
    Ok((ids, jobs.into_iter().map(|j| (j.order_id, j)).collect()))
}

/// Identifiers of `patient_ids`, each patient's by system and value: one statement.
pub async fn identifiers_of(
    conn: &mut PgConnection,
    patient_ids: &[Uuid],
) -> Result<HashMap<Uuid, Vec<PatientIdentifier>>> {
    let mut out: HashMap<Uuid, Vec<PatientIdentifier>> = HashMap::new();
    if patient_ids.is_empty() {
        return Ok(out);
    }
    let rows: Vec<PatientIdentifier> = sqlx::query_as(
        "SELECT * FROM patient_identifier WHERE patient_id = ANY($1) ORDER BY patient_id, system, value",
    )
    .bind(patient_ids)
    .fetch_all(&mut *conn)
    .await?;
    for row in rows {
        out.entry(row.patient_id).or_default().push(row);
    }
    Ok(out)
}

/// A job's state after the batch (its last applied transition).
#[derive(Debug, Clone, PartialEq)]
pub struct JobUpdate {
    pub order_id: Uuid,
    pub status: String,
    pub last_sequence: i64,
    pub status_reason: Option<String>,
    pub carrier: Option<String>,
    pub tracking_number: Option<String>,
    pub remakes: i32,
    /// How many transitions the batch applied to the job (its version grows by as many).
    pub transitions: i32,
    pub source_message_id: Uuid,
}

/// One row of `lab_job_event`.
#[derive(Debug, Clone, PartialEq)]
pub struct JobEvent {
    pub order_id: Uuid,
    pub sequence: i64,
    pub from_status: String,
    pub to_status: String,
    pub reason: Option<String>,
    pub event_id: String,
    pub occurred_at: Option<DateTime<Utc>>,
    pub source_message_id: Uuid,
}

/// An order status change (the ServiceRequest's), one row of `order_status_history`.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderStatusChange {
    pub order_id: Uuid,
    pub from_status: String,
    pub to_status: String,
    pub reason: String,
    pub source_message_id: Uuid,
}

/// Everything a batch of reports writes, in one statement per table.
#[derive(Debug, Default)]
pub struct StatusWrites {
    pub jobs: Vec<JobUpdate>,
    pub events: Vec<JobEvent>,
    /// In the order they happened; an order's last is its status now.
    pub order_changes: Vec<OrderStatusChange>,
    /// Held reports applied now (removed from `lab_status_held`).
    pub taken: Vec<(Uuid, i64)>,
    /// Reports newly held.
    pub held: Vec<HeldReport>,
}

impl StatusWrites {
    pub async fn write(&self, conn: &mut PgConnection) -> Result<()> {
        if !self.jobs.is_empty() {
            let mut jobs: Vec<&JobUpdate> = self.jobs.iter().collect();
            jobs.sort_by_key(|j| j.order_id);
            sqlx::query(
                "UPDATE lab_job j
                    SET status = u.status, last_sequence = u.last_sequence, status_reason = u.status_reason,
                        carrier = COALESCE(u.carrier, j.carrier),
                        tracking_number = COALESCE(u.tracking_number, j.tracking_number),
                        remakes = u.remakes, source_message_id = u.source_message_id,
                        version = j.version + u.transitions, updated_at = now()
                   FROM unnest($1::uuid[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[],
                               $7::int[], $8::int[], $9::uuid[])
                        AS u(order_id, status, last_sequence, status_reason, carrier, tracking_number,
                             remakes, transitions, source_message_id)
                  WHERE j.order_id = u.order_id",
            )
            .bind(jobs.iter().map(|j| j.order_id).collect::<Vec<_>>())
            .bind(jobs.iter().map(|j| j.status.as_str()).collect::<Vec<_>>())
            .bind(jobs.iter().map(|j| j.last_sequence).collect::<Vec<_>>())
            .bind(jobs.iter().map(|j| j.status_reason.as_deref()).collect::<Vec<_>>())
            .bind(jobs.iter().map(|j| j.carrier.as_deref()).collect::<Vec<_>>())
            .bind(jobs.iter().map(|j| j.tracking_number.as_deref()).collect::<Vec<_>>())
            .bind(jobs.iter().map(|j| j.remakes).collect::<Vec<_>>())
            .bind(jobs.iter().map(|j| j.transitions).collect::<Vec<_>>())
            .bind(jobs.iter().map(|j| j.source_message_id).collect::<Vec<_>>())
            .execute(&mut *conn)
            .await?;
        }
        if !self.events.is_empty() {
            let e = &self.events;
            sqlx::query(
                "INSERT INTO lab_job_event (order_id, sequence, from_status, to_status, reason, event_id, occurred_at,
                                            source_message_id)
                 SELECT * FROM unnest($1::uuid[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[],
                                      $7::timestamptz[], $8::uuid[])",
            )
            .bind(e.iter().map(|x| x.order_id).collect::<Vec<_>>())
            .bind(e.iter().map(|x| x.sequence).collect::<Vec<_>>())
            .bind(e.iter().map(|x| x.from_status.as_str()).collect::<Vec<_>>())
            .bind(e.iter().map(|x| x.to_status.as_str()).collect::<Vec<_>>())
            .bind(e.iter().map(|x| x.reason.as_deref()).collect::<Vec<_>>())
            .bind(e.iter().map(|x| x.event_id.as_str()).collect::<Vec<_>>())
            .bind(e.iter().map(|x| x.occurred_at).collect::<Vec<_>>())
            .bind(e.iter().map(|x| x.source_message_id).collect::<Vec<_>>())
            .execute(&mut *conn)
            .await?;
        }
        if !self.order_changes.is_empty() {
            // Each order's last change is its status; its version grows by its number of changes.
            let mut last: HashMap<Uuid, (&OrderStatusChange, i32)> = HashMap::new();
            for c in &self.order_changes {
                let entry = last.entry(c.order_id).or_insert((c, 0));
                *entry = (c, entry.1 + 1);
            }
            let mut orders: Vec<(&OrderStatusChange, i32)> = last.into_values().collect();
            orders.sort_by_key(|(c, _)| c.order_id);
            sqlx::query(
                "UPDATE service_order o
                    SET status = u.status, source_message_id = u.source_message_id,
                        version = o.version + u.changes, updated_at = now()
                   FROM unnest($1::uuid[], $2::text[], $3::uuid[], $4::int[])
                        AS u(id, status, source_message_id, changes)
                  WHERE o.id = u.id",
            )
            .bind(orders.iter().map(|(c, _)| c.order_id).collect::<Vec<_>>())
            .bind(orders.iter().map(|(c, _)| c.to_status.as_str()).collect::<Vec<_>>())
            .bind(orders.iter().map(|(c, _)| c.source_message_id).collect::<Vec<_>>())
            .bind(orders.iter().map(|(_, n)| *n).collect::<Vec<_>>())
            .execute(&mut *conn)
            .await?;
            let c = &self.order_changes;
            crate::order_book::insert_status_history(
                conn,
                &c.iter()
                    .map(|x| {
                        let from = Some(x.from_status.as_str());
                        (
                            x.order_id,
                            from,
                            x.to_status.as_str(),
                            x.reason.as_str(),
                            Some(x.source_message_id),
                        )
                    })
                    .collect::<Vec<_>>(),
            )
            .await?;
        }
        if !self.taken.is_empty() {
            let (orders, sequences): (Vec<Uuid>, Vec<i64>) = self.taken.iter().copied().unzip();
            sqlx::query(
                "DELETE FROM lab_status_held h USING unnest($1::uuid[], $2::bigint[]) AS t(order_id, sequence)
                  WHERE h.order_id = t.order_id AND h.sequence = t.sequence",
            )
            .bind(&orders)
            .bind(&sequences)
            .execute(&mut *conn)
            .await?;
        }
        if !self.held.is_empty() {
            let h = &self.held;
            sqlx::query(
                "INSERT INTO lab_status_held (order_id, sequence, event, source_message_id)
                 SELECT * FROM unnest($1::uuid[], $2::bigint[], $3::jsonb[], $4::uuid[])
                 ON CONFLICT DO NOTHING",
            )
            .bind(h.iter().map(|x| x.order_id).collect::<Vec<_>>())
            .bind(h.iter().map(|x| x.sequence).collect::<Vec<_>>())
            .bind(h.iter().map(|x| &x.event).collect::<Vec<_>>())
            .bind(h.iter().map(|x| x.source_message_id).collect::<Vec<_>>())
            .execute(&mut *conn)
            .await?;
        }
        Ok(())
    }
}

/// Records the shipment of a shipped order (one row per shipment; rare
/// enough in a batch to be written one by one).
pub async fn record_shipment(
    conn: &mut PgConnection,
    order_id: Uuid,
    carrier: &str,
    tracking_number: Option<&str>,
    shipped_at: Option<DateTime<Utc>>,
    msg: Uuid,
) -> Result<Uuid> {
    let (id,): (Uuid,) = sqlx::query_as(
        "INSERT INTO shipment (id, order_id, carrier, tracking_number, status, shipped_at, source_message_id)
         VALUES ($1, $2, $3, $4, 'in_transit', COALESCE($5, now()), $6)
         ON CONFLICT (carrier, tracking_number) WHERE tracking_number IS NOT NULL DO UPDATE
            SET status = 'in_transit', updated_at = now()
         RETURNING id",
    )
    .bind(Uuid::now_v7())
    .bind(order_id)
    .bind(carrier)
    .bind(tracking_number)
    .bind(shipped_at)
    .bind(msg)
    .fetch_one(&mut *conn)
    .await?;
    Ok(id)
}

/// Marks an order's latest shipment delivered; `None` if it has none.
pub async fn record_delivery(
    conn: &mut PgConnection,
    order_id: Uuid,
    delivered_at: Option<DateTime<Utc>>,
    msg: Uuid,
) -> Result<Option<Uuid>> {
    let row: Option<(Uuid,)> = sqlx::query_as(
        "UPDATE shipment SET status = 'delivered', delivered_at = COALESCE($2, now()),
                             source_message_id = $3, updated_at = now()
          WHERE id = (SELECT id FROM shipment WHERE order_id = $1 ORDER BY created_at DESC LIMIT 1)
         RETURNING id",
    )
    .bind(order_id)
    .bind(delivered_at)
    .bind(msg)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.map(|(id,)| id))
}

/// What the dispatch of a batch of order events needs, in four statements:
/// the orders' jobs (locked, in id order: the lock order above), the
/// orders as the lab sees them, their items and their scans.
#[derive(Debug, Default)]
pub struct DispatchBatch {
    pub jobs: HashMap<Uuid, LabJob>,
    pub orders: HashMap<Uuid, OrderForLab>,
    pub items: HashMap<Uuid, Vec<crate::model::OrderItem>>,
    pub scans: HashMap<Uuid, Vec<String>>,
}

impl DispatchBatch {
    pub async fn load(conn: &mut PgConnection, order_ids: &[Uuid]) -> Result<Self> {
        let (ids, jobs) = lock_jobs(conn, order_ids).await?;
        let orders: Vec<OrderForLab> =
            sqlx::query_as(concat!(crate::lab::order_for_lab_select!(), " WHERE o.id = ANY($1)"))
                .bind(&ids)
                .fetch_all(&mut *conn)
                .await?;
        let items = crate::lab::items_of(conn, &ids).await?;
        let scan_rows: Vec<(Uuid, String)> = sqlx::query_as(
            "SELECT order_id, study_instance_uid FROM imaging_study
              WHERE order_id = ANY($1) ORDER BY order_id, created_at",
        )
        .bind(&ids)
        .fetch_all(&mut *conn)
        .await?;
        let mut scans: HashMap<Uuid, Vec<String>> = HashMap::new();
        for (order_id, uid) in scan_rows {
            scans.entry(order_id).or_default().push(uid);
        }
        Ok(DispatchBatch {
            jobs,
            orders: orders.into_iter().map(|o| (o.id, o)).collect(),
            items,
            scans,
        })
    }
}

/// A job opened for an order sent to the lab (status `requested`).
#[derive(Debug, Clone, PartialEq)]
pub struct JobOpened {
    pub order_id: Uuid,
    pub version: i32,
    pub source_message_id: Option<Uuid>,
}

/// An order version (an amendment or a cancel request) sent to the lab.
#[derive(Debug, Clone, PartialEq)]
pub struct JobDispatched {
    pub order_id: Uuid,
    pub version: i32,
    pub cancel: bool,
    pub source_message_id: Option<Uuid>,
}

/// What a dispatch batch writes: one statement per kind, rows in order id
/// order (the lock order).
#[derive(Debug, Default)]
pub struct DispatchWrites {
    pub opened: Vec<JobOpened>,
    pub dispatched: Vec<JobDispatched>,
}

impl DispatchWrites {
    pub async fn write(&mut self, conn: &mut PgConnection) -> Result<()> {
        self.opened.sort_by_key(|j| j.order_id);
        self.dispatched.sort_by_key(|j| j.order_id);
        if !self.opened.is_empty() {
            let o = &self.opened;
            sqlx::query(
                "INSERT INTO lab_job (order_id, status, dispatched_version, source_message_id)
                 SELECT i, 'requested', v, m FROM unnest($1::uuid[], $2::int[], $3::uuid[]) AS u(i, v, m)",
            )
            .bind(o.iter().map(|j| j.order_id).collect::<Vec<_>>())
            .bind(o.iter().map(|j| j.version).collect::<Vec<_>>())
            .bind(o.iter().map(|j| j.source_message_id).collect::<Vec<_>>())
            .execute(&mut *conn)
            .await?;
        }
        if !self.dispatched.is_empty() {
            let d = &self.dispatched;
            sqlx::query(
                "UPDATE lab_job j
                    SET dispatched_version = u.v, cancel_requested = j.cancel_requested OR u.c,
                        source_message_id = u.m, version = j.version + 1, updated_at = now()
                   FROM unnest($1::uuid[], $2::int[], $3::bool[], $4::uuid[]) AS u(i, v, c, m)
                  WHERE j.order_id = u.i",
            )
            .bind(d.iter().map(|j| j.order_id).collect::<Vec<_>>())
            .bind(d.iter().map(|j| j.version).collect::<Vec<_>>())
            .bind(d.iter().map(|j| j.cancel).collect::<Vec<_>>())
            .bind(d.iter().map(|j| j.source_message_id).collect::<Vec<_>>())
            .execute(&mut *conn)
            .await?;
        }
        Ok(())
    }
}
