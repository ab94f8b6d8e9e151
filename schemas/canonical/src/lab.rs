//! An order's manufacturing at the lab (`lab_job`): its state machine and the
//! writes that move it. The lab pipeline (`pipelines/lab`) drives it from
//! `lab.status.v1`; the transitions allowed are here, next to the table.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::Result;

/// Where an order stands at the lab.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LabStatus {
    /// Sent on lab.orders.v1, not yet answered.
    Requested,
    Accepted,
    Rejected,
    InProduction,
    QcPassed,
    /// Quality control failed: a remake (`in_production` again) follows.
    QcFailed,
    ReadyToShip,
    Shipped,
    Delivered,
    Cancelled,
}

impl LabStatus {
    pub const ALL: [LabStatus; 10] = [
        LabStatus::Requested,
        LabStatus::Accepted,
        LabStatus::Rejected,
        LabStatus::InProduction,
        LabStatus::QcPassed,
        LabStatus::QcFailed,
        LabStatus::ReadyToShip,
        LabStatus::Shipped,
        LabStatus::Delivered,
        LabStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LabStatus::Requested => "requested",
            LabStatus::Accepted => "accepted",
            LabStatus::Rejected => "rejected",
            LabStatus::InProduction => "in_production",
            LabStatus::QcPassed => "qc_passed",
            LabStatus::QcFailed => "qc_failed",
            LabStatus::ReadyToShip => "ready_to_ship",
            LabStatus::Shipped => "shipped",
            LabStatus::Delivered => "delivered",
            LabStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Nothing follows these.
    pub fn is_terminal(self) -> bool {
        matches!(self, LabStatus::Rejected | LabStatus::Delivered | LabStatus::Cancelled)
    }

    /// The transitions the lab may report. Cancelling is possible until the
    /// device left the lab; a failed QC goes back to production (a remake).
    pub fn can_go_to(self, next: LabStatus) -> bool {
        use LabStatus::*;
        matches!(
            (self, next),
            (Requested, Accepted | Rejected)
                | (Accepted, InProduction)
                | (InProduction, QcPassed | QcFailed)
                | (QcFailed, InProduction)
                | (QcPassed, ReadyToShip)
                | (ReadyToShip, Shipped)
                | (Shipped, Delivered)
                | (
                    Requested | Accepted | InProduction | QcFailed | QcPassed | ReadyToShip,
                    Cancelled
                )
        )
    }

    /// The ServiceRequest status this lab status implies, where it changes it.
    pub fn order_status(self) -> Option<&'static str> {
        match self {
            LabStatus::Delivered => Some("completed"),
            LabStatus::Rejected | LabStatus::Cancelled => Some("revoked"),
            _ => None,
        }
    }
}

impl LabStatus {
    /// FHIR R4 task-status of the order's Task.
    pub fn fhir_task_status(self) -> &'static str {
        match self {
            LabStatus::Requested => "requested",
            LabStatus::Accepted => "accepted",
            LabStatus::Rejected => "rejected",
            LabStatus::Cancelled => "cancelled",
            LabStatus::Delivered => "completed",
            LabStatus::InProduction
            | LabStatus::QcPassed
            | LabStatus::QcFailed
            | LabStatus::ReadyToShip
            | LabStatus::Shipped => "in-progress",
        }
    }
}

/// Code system of the lab statuses (FHIR Task.businessStatus).
pub const LAB_STATUS_SYSTEM: &str = "urn:carehub:lab-status";

impl std::fmt::Display for LabStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One row of `lab_job`.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct LabJob {
    pub order_id: Uuid,
    pub status: String,
    pub last_sequence: i64,
    pub dispatched_version: i32,
    pub cancel_requested: bool,
    pub remakes: i32,
    pub status_reason: Option<String>,
    pub carrier: Option<String>,
    pub tracking_number: Option<String>,
    pub version: i32,
    pub source_message_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl LabJob {
    pub fn lab_status(&self) -> LabStatus {
        // The column's CHECK constraint admits only these names.
        LabStatus::parse(&self.status).unwrap_or(LabStatus::Requested)
    }
}

/// The job of `order_id`, locked until the transaction ends.
pub async fn lock_job(conn: &mut PgConnection, order_id: Uuid) -> Result<Option<LabJob>> {
    Ok(sqlx::query_as("SELECT * FROM lab_job WHERE order_id = $1 FOR UPDATE")
        .bind(order_id)
        .fetch_optional(&mut *conn)
        .await?)
}

/// What the lab is told about an order: the minimum manufacturing needs.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct OrderForLab {
    pub id: Uuid,
    pub version: i32,
    pub status: String,
    pub placer_system: String,
    pub placer_number: String,
    pub priority: String,
    pub due_date: Option<NaiveDate>,
    pub device_spec: Option<serde_json::Value>,
    pub note: Option<String>,
    pub patient_id: Uuid,
    pub sex: Option<String>,
    pub birth_year: Option<i32>,
    /// The clinic's identifier value (for HL7 orders: the sending facility).
    pub clinic: Option<String>,
}

/// The columns and joins of [`OrderForLab`]; one order here, a batch's in
/// [`crate::lab_batch::StatusBatch::load`].
macro_rules! order_for_lab_select {
    () => {
        "SELECT o.id, o.version, o.status, o.placer_system, o.placer_number, o.priority, o.due_date,
                o.device_spec, o.note, o.patient_id, p.sex,
                EXTRACT(YEAR FROM p.birth_date)::int AS birth_year, c.identifier_value AS clinic
           FROM service_order o
           JOIN patient p ON p.id = o.patient_id
           LEFT JOIN organization c ON c.id = o.clinic_id"
    };
}
pub(crate) use order_for_lab_select;

pub async fn order_for_lab(conn: &mut PgConnection, order_id: Uuid) -> Result<Option<OrderForLab>> {
    Ok(sqlx::query_as(concat!(order_for_lab_select!(), " WHERE o.id = $1"))
        .bind(order_id)
        .fetch_optional(&mut *conn)
        .await?)
}

/// An order's items, in line order.
pub async fn order_items(conn: &mut PgConnection, order_id: Uuid) -> Result<Vec<crate::model::OrderItem>> {
    let mut items = items_of(conn, &[order_id]).await?;
    Ok(items.remove(&order_id).unwrap_or_default())
}

/// Items of `order_ids`, each order's in line order: one statement.
pub async fn items_of(
    conn: &mut PgConnection,
    order_ids: &[Uuid],
) -> Result<std::collections::HashMap<Uuid, Vec<crate::model::OrderItem>>> {
    let mut out: std::collections::HashMap<Uuid, Vec<crate::model::OrderItem>> = Default::default();
    if order_ids.is_empty() {
        return Ok(out);
    }
    let rows: Vec<crate::model::OrderItem> = sqlx::query_as(
        "SELECT order_id, line_no, code_system, code, display, quantity::text AS quantity, body_site, laterality,
                device_spec
           FROM order_item WHERE order_id = ANY($1) ORDER BY order_id, line_no",
    )
    .bind(order_ids)
    .fetch_all(&mut *conn)
    .await?;
    for row in rows {
        out.entry(row.order_id).or_default().push(row);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::LabStatus::{self, *};

    #[test]
    fn the_happy_path_and_a_remake_are_allowed() {
        let path = [
            Requested,
            Accepted,
            InProduction,
            QcFailed,
            InProduction,
            QcPassed,
            ReadyToShip,
            Shipped,
            Delivered,
        ];
        for w in path.windows(2) {
            assert!(w[0].can_go_to(w[1]), "{} -> {}", w[0], w[1]);
        }
    }

    #[test]
    fn nothing_leaves_a_terminal_status_and_nothing_skips_quality_control() {
        for t in LabStatus::ALL.into_iter().filter(|s| s.is_terminal()) {
            for next in LabStatus::ALL {
                assert!(!t.can_go_to(next), "{t} -> {next}");
            }
        }
        assert!(!InProduction.can_go_to(Shipped));
        assert!(!InProduction.can_go_to(ReadyToShip));
        assert!(!QcFailed.can_go_to(ReadyToShip));
        assert!(!Accepted.can_go_to(Shipped));
        assert!(!Shipped.can_go_to(Cancelled), "a shipped device is not cancelled");
    }

    #[test]
    fn names_round_trip() {
        for s in LabStatus::ALL {
            assert_eq!(LabStatus::parse(s.as_str()), Some(s));
            assert_eq!(serde_json::to_value(s).ok(), Some(serde_json::json!(s.as_str())));
        }
        assert_eq!(LabStatus::parse("lost"), None);
    }
}
