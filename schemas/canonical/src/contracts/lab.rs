//! The lab's Kafka contracts (`data` of the backbone envelope). JSON Schemas:
//! `schemas/json/carehub.lab.*.v1.json`; examples in `schemas/examples/`.

use crate::lab::LabStatus;
use crate::model::Identifier;
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderAction {
    New,
    /// The clinic changed the order: the whole order again, newer version.
    Amend,
    /// The clinic withdrew the order; the lab answers `cancelled` (or goes on
    /// and reports why not, if it cannot stop).
    Cancel,
}

/// `data` of `carehub.lab.order.v1`: what manufacturing needs and no more
/// (minimum necessary: no name, MRN, address or full birth date).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabOrder {
    pub action: OrderAction,
    /// carehub's id of the order: the lab quotes it in every status report.
    pub order_id: Uuid,
    /// Grows with every change of the order; an amendment carries the new one.
    pub order_version: i32,
    /// The clinic's order number (placer number and its system).
    pub order_number: Identifier,
    /// The ordering clinic's identifier value.
    pub clinic: Option<String>,
    pub patient: LabPatient,
    pub items: Vec<LabItem>,
    /// Measurements, materials, side: as the clinic gave them.
    pub device_spec: Option<serde_json::Value>,
    /// Scans attached to the order (DICOM Study Instance UIDs).
    pub scans: Vec<String>,
    pub due_date: Option<NaiveDate>,
    /// `routine`, `urgent`, `asap` or `stat`.
    pub priority: String,
    /// The clinic's note for the technician.
    pub note: Option<String>,
}

/// The patient as manufacturing needs them: a pseudonymous id, sex and year of birth.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabPatient {
    pub id: Uuid,
    pub sex: Option<String>,
    pub birth_year: Option<i32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabItem {
    pub code_system: String,
    pub code: String,
    pub display: Option<String>,
    /// Decimal as text (exact).
    pub quantity: String,
}

/// `data` of `carehub.lab.status.v1`, from the lab.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabStatusReport {
    /// `order_id` of the lab order.
    pub order_id: Uuid,
    /// The lab's number for this report, per order: 1, 2, 3, … in the order
    /// the lab made the changes. carehub applies them in this order.
    pub sequence: i64,
    pub status: LabStatus,
    /// Required for `rejected` and `qc_failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Required for `shipped`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub carrier: Option<String>,
    /// Required for `shipped`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracking_number: Option<String>,
    /// When the change happened at the lab (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub occurred_at: Option<DateTime<Utc>>,
}

impl LabStatusReport {
    /// What the schema cannot say: the fields a status needs.
    pub fn check(&self) -> Result<(), String> {
        if self.sequence < 1 {
            return Err(format!("sequence must be 1 or more, got {}", self.sequence));
        }
        let has = |f: &Option<String>| f.as_deref().is_some_and(|s| !s.trim().is_empty());
        match self.status {
            LabStatus::Requested => Err("`requested` is carehub's own status, not the lab's to report".into()),
            LabStatus::Rejected | LabStatus::QcFailed if !has(&self.reason) => {
                Err(format!("status {} needs a reason", self.status))
            }
            LabStatus::Shipped if !has(&self.carrier) || !has(&self.tracking_number) => {
                Err("status shipped needs carrier and tracking_number".into())
            }
            _ => Ok(()),
        }
    }
}

/// `data` of `carehub.lab.results.v1`: measurements and quality-control data
/// of an order's device, as one report. The same `report_id` again replaces
/// that report's values (a correction), it does not add to them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabResults {
    pub order_id: Uuid,
    /// The lab's id of this report.
    pub report_id: String,
    pub status: ReportStatus,
    pub results: Vec<LabResult>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issued_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportStatus {
    Preliminary,
    Final,
    Corrected,
}

impl ReportStatus {
    /// Observation.status.
    pub fn as_str(self) -> &'static str {
        match self {
            ReportStatus::Preliminary => "preliminary",
            ReportStatus::Final => "final",
            ReportStatus::Corrected => "corrected",
        }
    }

    /// HL7 table 0085 (OBX-11) and 0123 (OBR-25).
    pub fn hl7(self) -> &'static str {
        match self {
            ReportStatus::Preliminary => "P",
            ReportStatus::Final => "F",
            ReportStatus::Corrected => "C",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabResult {
    pub code_system: String,
    pub code: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display: Option<String>,
    /// `quantity` (a decimal in `value`), `string` or `coded`.
    pub value_type: ValueType,
    /// The value as text (decimals exact).
    pub value: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference_range: Option<String>,
    /// HL7 table 0078 / FHIR interpretation code (N, A, H, L, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interpretation: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueType {
    Quantity,
    String,
    Coded,
}

impl LabResults {
    pub fn check(&self) -> Result<(), String> {
        if self.report_id.trim().is_empty() {
            return Err("report_id is empty".into());
        }
        if self.results.is_empty() {
            return Err("a results report needs at least one result".into());
        }
        for r in &self.results {
            if r.code.trim().is_empty() || r.code_system.trim().is_empty() {
                return Err("every result needs code_system and code".into());
            }
            if r.value_type == ValueType::Quantity && r.value.parse::<f64>().is_err() {
                return Err(format!("result {}: {:?} is not a number", r.code, r.value));
            }
        }
        Ok(())
    }
}

/// `data` of `carehub.ehr.order_status.v1`: an order's status for the EHRs
/// of its clinic, as the FHIR resources they are sent (Task and
/// ServiceRequest, built by the lab pipeline's notices).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EhrOrderStatus {
    /// The ordering clinic's identifier value; the push's subscribers follow it.
    pub clinic: Option<String>,
    pub order_id: Uuid,
    pub lab_status: LabStatus,
    /// The lab's report number this status came with.
    pub sequence: i64,
    pub task: serde_json::Value,
    pub service_request: serde_json::Value,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(status: LabStatus) -> LabStatusReport {
        LabStatusReport {
            order_id: Uuid::nil(),
            sequence: 1,
            status,
            reason: None,
            carrier: None,
            tracking_number: None,
            occurred_at: None,
        }
    }

    #[test]
    fn a_status_needs_what_it_says() {
        assert!(report(LabStatus::Accepted).check().is_ok());
        assert!(report(LabStatus::QcFailed).check().is_err());
        assert!(report(LabStatus::Rejected).check().is_err());
        assert!(report(LabStatus::Shipped).check().is_err());
        assert!(report(LabStatus::Requested).check().is_err());
        let shipped = LabStatusReport {
            carrier: Some("DHL".into()),
            tracking_number: Some("JD0001".into()),
            ..report(LabStatus::Shipped)
        };
        assert!(shipped.check().is_ok());
        let zero = LabStatusReport {
            sequence: 0,
            ..report(LabStatus::Accepted)
        };
        assert!(zero.check().is_err());
    }

    #[test]
    fn unknown_fields_and_statuses_are_refused() {
        let id = Uuid::nil();
        let bad = serde_json::json!({ "order_id": id, "sequence": 1, "status": "lost" });
        assert!(serde_json::from_value::<LabStatusReport>(bad).is_err());
        let extra = serde_json::json!({ "order_id": id, "sequence": 1, "status": "accepted", "x": 1 });
        assert!(serde_json::from_value::<LabStatusReport>(extra).is_err());
    }
}
