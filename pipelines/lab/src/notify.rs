//! What the clinic is told when the lab's status of its order changes: an
//! HL7 v2 order status message (ORC-5) and a FHIR Task + ServiceRequest pair.
//! Both are built from the canonical record, never from the lab's message.

use std::collections::BTreeMap;

use carehub_hl7::codec::identity::authority_of;
use carehub_hl7::codec::{Delimiters, FieldValue, MessageBuilder, SegmentBuilder};
use carehub_schema::lab::{LabStatus, OrderForLab};
use carehub_schema::model::{OrderItem, PatientIdentifier};

use carehub_schema::contracts::{EhrOrderStatus, LabResults, ValueType};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// Which HL7 message carries an order's status to a clinic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum OrderStatusMessage {
    /// ORM^O01 with ORC-1 `SC` (v2.3.1): for clinics that order with ORM.
    #[default]
    #[serde(rename = "ORM^O01")]
    OrmO01,
    /// OML^O21 with ORC-1 `SC` (v2.5.1): for clinics that order with OML.
    #[serde(rename = "OML^O21")]
    OmlO21,
}

/// What one clinic receives, by its identifier value (`[lab.clinics.<value>]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClinicRoute {
    /// The `[hl7.destinations.<name>]` that receives HL7 status messages;
    /// none: the clinic gets no HL7.
    #[serde(default)]
    pub hl7_destination: Option<String>,
    /// `ORM^O01` or `OML^O21`.
    #[serde(default)]
    pub hl7_order_message: OrderStatusMessage,
    /// MSH-5 (receiving application) of messages to the clinic.
    #[serde(default = "default_application")]
    pub hl7_application: String,
    /// Publish Task / ServiceRequest status events for the clinic's EHR.
    #[serde(default = "carehub_core::default_true")]
    pub fhir_events: bool,
}

fn default_application() -> String {
    "EHR".to_owned()
}

impl Default for ClinicRoute {
    fn default() -> Self {
        ClinicRoute {
            hl7_destination: None,
            hl7_order_message: OrderStatusMessage::default(),
            hl7_application: default_application(),
            fhir_events: true,
        }
    }
}

/// Which orders go to the lab, and who hears about them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabRouting {
    /// Send every clinic's orders to the lab; false: only those of clinics
    /// listed in `clinics`.
    #[serde(default = "carehub_core::default_true")]
    pub all_clinics: bool,
    /// MSH-3 / MSH-4 of the messages carehub sends.
    #[serde(default = "default_sender")]
    pub hl7_sending_application: String,
    #[serde(default = "default_sender")]
    pub hl7_sending_facility: String,
    #[serde(default)]
    pub clinics: BTreeMap<String, ClinicRoute>,
}

fn default_sender() -> String {
    "CAREHUB".to_owned()
}

impl Default for LabRouting {
    fn default() -> Self {
        LabRouting {
            all_clinics: true,
            hl7_sending_application: default_sender(),
            hl7_sending_facility: default_sender(),
            clinics: BTreeMap::new(),
        }
    }
}

impl LabRouting {
    /// Does an order of `clinic` go to the lab?
    pub fn dispatches(&self, clinic: Option<&str>) -> bool {
        self.all_clinics || self.find(clinic).is_some()
    }

    /// The route of `clinic`: its own, or the default (FHIR events, no HL7).
    pub fn route(&self, clinic: Option<&str>) -> ClinicRoute {
        self.find(clinic).cloned().unwrap_or_default()
    }

    /// Clinic names match without regard to ASCII case: environment
    /// overrides (`CAREHUB_PIPELINES__LAB__CLINICS__<NAME>__…`) arrive lower-cased.
    fn find(&self, clinic: Option<&str>) -> Option<&ClinicRoute> {
        let clinic = clinic?;
        self.clinics
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(clinic))
            .map(|(_, route)| route)
    }
}

/// One status change, with what the clinic needs to recognise the order.
#[derive(Debug, Clone)]
pub struct StatusChange<'a> {
    pub order: &'a OrderForLab,
    pub items: &'a [OrderItem],
    pub identifiers: &'a [PatientIdentifier],
    pub status: LabStatus,
    pub sequence: i64,
    pub reason: Option<&'a str>,
    pub carrier: Option<&'a str>,
    pub tracking_number: Option<&'a str>,
    pub remakes: i32,
    /// The ServiceRequest's status after the change.
    pub order_status: &'a str,
    pub at: DateTime<Utc>,
}

/// HL7 table 0038 (order status) for a lab status.
pub fn orc5(status: LabStatus) -> &'static str {
    match status {
        LabStatus::Requested | LabStatus::Accepted => "SC",
        LabStatus::Rejected | LabStatus::Cancelled => "CA",
        LabStatus::Delivered => "CM",
        LabStatus::InProduction
        | LabStatus::QcPassed
        | LabStatus::QcFailed
        | LabStatus::ReadyToShip
        | LabStatus::Shipped => "IP",
    }
}

/// The MSH-10 of a status message: the same change always gets the same
/// one (a resend after a crash is recognisable by the clinic), unique per
/// order and sequence, within the 20 characters older versions allow.
pub fn control_id(change: &StatusChange<'_>) -> String {
    let id = change.order.id.simple().to_string();
    format!("L{}.{}", &id[20..], change.sequence)
}

/// The order status message for the clinic, segments ending in CR.
pub fn hl7_status_message(
    routing: &LabRouting,
    route: &ClinicRoute,
    change: &StatusChange<'_>,
    control_id: &str,
) -> String {
    let (msg_type, version) = match route.hl7_order_message {
        OrderStatusMessage::OrmO01 => (["ORM", "O01", "ORM_O01"], "2.3.1"),
        OrderStatusMessage::OmlO21 => (["OML", "O21", "OML_O21"], "2.5.1"),
    };
    let ts = change.at.format("%Y%m%d%H%M%S").to_string();
    let control = match change.status {
        LabStatus::Cancelled | LabStatus::Rejected => "OC",
        _ => "SC",
    };
    let mut out = MessageBuilder::new(Delimiters::default());
    out.push(header(routing, route, change.order, &ts, msg_type, control_id, version))
        .push(pid(change.identifiers))
        // ORC-1 control, -2 placer, -5 status, -9 when, -16 reason (CE: text in .2).
        .push(
            SegmentBuilder::new("ORC")
                .field(1, control)
                .field(2, placer_ei(change.order))
                .field(5, orc5(change.status))
                .field(9, ts.as_str())
                .field(16, FieldValue::composite([FieldValue::Empty, change.reason.into()])),
        );
    for (i, item) in change.items.iter().enumerate() {
        out.push(
            SegmentBuilder::new("OBR")
                .field(1, i + 1)
                .field(2, placer_ei(change.order))
                .field(4, service_ce(item)),
        );
    }
    let mut note = format!("Lab status {} (report {})", change.status, change.sequence);
    if let Some(r) = change.reason {
        note.push_str(&format!(": {r}"));
    }
    if change.remakes > 0 {
        note.push_str(&format!("; remakes {}", change.remakes));
    }
    if let (Some(c), Some(t)) = (change.carrier, change.tracking_number) {
        note.push_str(&format!("; shipped with {c}, tracking {t}"));
    }
    out.push(SegmentBuilder::new("NTE").field(1, "1").field(2, "L").field(3, note));
    out.finish()
}

/// The lab's results for the clinic as ORU^R01 (v2.5.1): the order's
/// ORC/OBR, one OBX per result, statuses from the report (F, P, C).
pub fn hl7_results_message(
    routing: &LabRouting,
    route: &ClinicRoute,
    order: &OrderForLab,
    items: &[OrderItem],
    identifiers: &[PatientIdentifier],
    report: &LabResults,
    control_id: &str,
) -> String {
    let at = report.issued_at.unwrap_or_else(Utc::now);
    let ts = at.format("%Y%m%d%H%M%S").to_string();
    let status = report.status.hl7();
    let mut out = MessageBuilder::new(Delimiters::default());
    out.push(header(
        routing,
        route,
        order,
        &ts,
        ["ORU", "R01", "ORU_R01"],
        control_id,
        "2.5.1",
    ))
    .push(pid(identifiers))
    .push(
        SegmentBuilder::new("ORC")
            .field(1, "RE")
            .field(2, placer_ei(order))
            .field(9, ts.as_str()),
    )
    // OBR-7 observation time, -22 results reported, -25 result status.
    .push(
        SegmentBuilder::new("OBR")
            .field(1, "1")
            .field(2, placer_ei(order))
            .field(4, items.first().map(service_ce).unwrap_or_default())
            .field(7, ts.as_str())
            .field(22, ts.as_str())
            .field(25, status),
    );
    for (i, r) in report.results.iter().enumerate() {
        let value_type = match r.value_type {
            ValueType::Quantity => "NM",
            ValueType::String => "ST",
            ValueType::Coded => "CWE",
        };
        out.push(
            SegmentBuilder::new("OBX")
                .field(1, i + 1)
                .field(2, value_type)
                .field(
                    3,
                    FieldValue::composite([
                        r.code.as_str(),
                        r.display.as_deref().unwrap_or(""),
                        code_system_name(&r.code_system),
                    ]),
                )
                .field(5, r.value.as_str())
                .field(6, r.unit.as_deref())
                .field(7, r.reference_range.as_deref())
                .field(8, r.interpretation.as_deref())
                .field(11, status)
                .field(14, ts.as_str()),
        );
    }
    out.finish()
}

/// The MSH of a message to the clinic.
fn header(
    routing: &LabRouting,
    route: &ClinicRoute,
    order: &OrderForLab,
    ts: &str,
    msg_type: [&str; 3],
    control_id: &str,
    version: &str,
) -> SegmentBuilder {
    SegmentBuilder::new("MSH")
        .field(3, routing.hl7_sending_application.as_str())
        .field(4, routing.hl7_sending_facility.as_str())
        .field(5, route.hl7_application.as_str())
        .field(6, order.clinic.as_deref())
        .field(7, ts)
        .field(9, FieldValue::composite(msg_type))
        .field(10, control_id)
        .field(11, "P")
        .field(12, version)
}

/// PID with the patient's identifiers (PID-3, CX), so the clinic recognises them.
fn pid(identifiers: &[PatientIdentifier]) -> SegmentBuilder {
    let pid3 = identifiers.iter().map(|i| {
        FieldValue::composite([
            FieldValue::text(&i.value),
            FieldValue::Empty,
            FieldValue::Empty,
            FieldValue::composite(authority_of(&i.system)),
            i.type_code.as_deref().into(),
        ])
    });
    SegmentBuilder::new("PID").field(1, "1").repeated(3, pid3)
}

/// The clinic's order number as EI (ORC-2, OBR-2): number, then the authority.
fn placer_ei(order: &OrderForLab) -> FieldValue {
    let [ns, universal, kind] = authority_of(&order.placer_system);
    FieldValue::composite([FieldValue::text(&order.placer_number), ns, universal, kind])
}

/// OBR-4 from an order item.
fn service_ce(item: &OrderItem) -> FieldValue {
    FieldValue::composite([
        item.code.as_str(),
        item.display.as_deref().unwrap_or(""),
        code_system_name(&item.code_system),
    ])
}

/// MSH-10 of a results message: the same report always gets the same one.
pub fn results_control_id(order: &OrderForLab, report_id: &str) -> String {
    // FNV-1a: a stable short digest of the lab's report id.
    let mut h: u32 = 0x811c_9dc5;
    for b in report_id.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    let id = order.id.simple().to_string();
    format!("R{}.{h:08x}", &id[22..])
}

/// An HL7 coding system name from a canonical code system.
fn code_system_name(system: &str) -> &str {
    system.strip_prefix("urn:carehub:hl7-cs:").unwrap_or(system)
}

pub use carehub_schema::lab::LAB_STATUS_SYSTEM;

/// `data` of `carehub.ehr.order_status.v1`: the order's Task and ServiceRequest
/// as FHIR R4 resources (the parts that changed), for the EHR push.
pub fn ehr_event(change: &StatusChange<'_>) -> serde_json::Value {
    let order = change.order;
    let sr_ref = format!("ServiceRequest/{}", order.id);
    let patient_ref = format!("Patient/{}", order.patient_id);
    let identifier = json!([{ "system": order.placer_system, "value": order.placer_number }]);
    let mut task = json!({
        "resourceType": "Task",
        "id": order.id,
        "identifier": identifier,
        "basedOn": [{ "reference": sr_ref }],
        "status": change.status.fhir_task_status(),
        "businessStatus": {
            "coding": [{ "system": LAB_STATUS_SYSTEM, "code": change.status.as_str() }],
            "text": change.status.as_str(),
        },
        "intent": "order",
        "focus": { "reference": sr_ref },
        "for": { "reference": patient_ref },
        "lastModified": change.at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    });
    if let Some(reason) = change.reason {
        task["statusReason"] = json!({ "text": reason });
    }
    json!(EhrOrderStatus {
        clinic: order.clinic.clone(),
        order_id: order.id,
        lab_status: change.status,
        sequence: change.sequence,
        task,
        service_request: json!({
            "resourceType": "ServiceRequest",
            "id": order.id,
            "identifier": identifier,
            "status": change.order_status,
            "intent": "order",
            "subject": { "reference": patient_ref },
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use carehub_hl7::codec::Message;
    use uuid::Uuid;

    fn order() -> OrderForLab {
        OrderForLab {
            id: Uuid::parse_str("019abcde-0000-7000-8000-0123456789ab").expect("uuid"),
            version: 1,
            status: "active".into(),
            placer_system: "urn:carehub:hl7-aa:NORTHCLINIC".into(),
            placer_number: "PO-5001".into(),
            priority: "routine".into(),
            due_date: None,
            device_spec: None,
            note: None,
            patient_id: Uuid::nil(),
            sex: Some("female".into()),
            birth_year: Some(1980),
            clinic: Some("NORTHCLINIC".into()),
        }
    }

    fn change<'a>(
        o: &'a OrderForLab,
        items: &'a [OrderItem],
        ids: &'a [PatientIdentifier],
        status: LabStatus,
    ) -> StatusChange<'a> {
        StatusChange {
            order: o,
            items,
            identifiers: ids,
            status,
            sequence: 4,
            reason: Some("heel cup cracked | remake"),
            carrier: None,
            tracking_number: None,
            remakes: 1,
            order_status: "active",
            at: DateTime::parse_from_rfc3339("2026-11-25T12:00:00Z")
                .expect("ts")
                .with_timezone(&Utc),
        }
    }

    #[test]
    fn the_status_message_parses_and_carries_orc5_and_the_clinics_order_number() {
        let o = order();
        let items = [OrderItem {
            order_id: o.id,
            line_no: 1,
            code_system: "urn:carehub:hl7-cs:HCPCS".into(),
            code: "L3000".into(),
            display: Some("Foot orthosis, custom".into()),
            quantity: "1".into(),
            body_site: None,
            laterality: None,
            device_spec: None,
        }];
        let ids = [PatientIdentifier {
            patient_id: Uuid::nil(),
            system: "urn:oid:1.2.826.0.1.9999.1".into(),
            value: "P-1001".into(),
            type_code: Some("MR".into()),
        }];
        let c = change(&o, &items, &ids, LabStatus::QcFailed);
        let route = ClinicRoute {
            hl7_destination: Some("north".into()),
            ..ClinicRoute::default()
        };
        let id = control_id(&c);
        assert_eq!(id, "L0123456789ab.4");
        let text = hl7_status_message(&LabRouting::default(), &route, &c, &id);
        let msg = Message::parse(&text).expect("parses");
        assert_eq!(msg.type_label(), "ORM^O01");
        assert_eq!(msg.control_id(), "L0123456789ab.4");
        assert_eq!(msg.get("MSH-6").raw(), "NORTHCLINIC");
        assert_eq!(msg.get("ORC-1").raw(), "SC");
        assert_eq!(msg.get("ORC-2.1").raw(), "PO-5001");
        assert_eq!(msg.get("ORC-2.2").raw(), "NORTHCLINIC");
        assert_eq!(msg.get("ORC-5").raw(), "IP");
        assert_eq!(msg.get("PID-3.4").raw(), "&1.2.826.0.1.9999.1&ISO");
        assert_eq!(msg.get("OBR-4.1").raw(), "L3000");
        assert_eq!(msg.get("OBR-4.3").raw(), "HCPCS");
        let note = msg.get("NTE-3").decoded().into_owned();
        assert!(
            note.contains("qc_failed") && note.contains("heel cup cracked | remake"),
            "{note}"
        );
        assert!(note.contains("remakes 1"), "{note}");
    }

    #[test]
    fn oml_clinics_get_oml_and_a_cancel_is_order_control_oc() {
        let o = order();
        let c = change(&o, &[], &[], LabStatus::Cancelled);
        let route = ClinicRoute {
            hl7_order_message: OrderStatusMessage::OmlO21,
            ..ClinicRoute::default()
        };
        let text = hl7_status_message(&LabRouting::default(), &route, &c, "X1");
        let msg = Message::parse(&text).expect("parses");
        assert_eq!(msg.type_label(), "OML^O21");
        assert_eq!(msg.version(), "2.5.1");
        assert_eq!(msg.get("ORC-1").raw(), "OC");
        assert_eq!(msg.get("ORC-5").raw(), "CA");
        assert_eq!(msg.get("ORC-16.2").decoded(), "heel cup cracked | remake");
    }

    /// EI.2-4 are components (not an HD in EI.2's subcomponents, as the
    /// hand-built writer had it): the clinic reads its OID placer system back.
    #[test]
    fn an_oid_placer_system_goes_back_in_ei_3_and_ei_4() {
        let o = OrderForLab {
            placer_system: "urn:oid:1.2.826.0.1.9999.7".into(),
            ..order()
        };
        let c = change(&o, &[], &[], LabStatus::Accepted);
        let text = hl7_status_message(&LabRouting::default(), &ClinicRoute::default(), &c, "X2");
        let msg = Message::parse(&text).expect("parses");
        assert_eq!(msg.get("ORC-2.1").raw(), "PO-5001");
        assert_eq!(msg.get("ORC-2.2").raw(), "");
        assert_eq!(msg.get("ORC-2.3").raw(), "1.2.826.0.1.9999.7");
        assert_eq!(msg.get("ORC-2.4").raw(), "ISO");
    }

    #[test]
    fn the_ehr_event_is_a_task_based_on_the_service_request() {
        let o = order();
        let c = change(&o, &[], &[], LabStatus::QcFailed);
        let ev = ehr_event(&c);
        assert_eq!(ev["task"]["resourceType"], "Task");
        assert_eq!(ev["task"]["status"], "in-progress");
        assert_eq!(ev["task"]["intent"], "order");
        assert_eq!(ev["task"]["businessStatus"]["coding"][0]["code"], "qc_failed");
        assert_eq!(
            ev["task"]["basedOn"][0]["reference"],
            format!("ServiceRequest/{}", o.id)
        );
        assert_eq!(ev["service_request"]["status"], "active");
        assert_eq!(ev["task"]["statusReason"]["text"], "heel cup cracked | remake");
    }

    #[test]
    fn results_go_to_the_clinic_as_oru_r01_with_one_obx_each() {
        use carehub_schema::contracts::{LabResult, ReportStatus};
        let o = order();
        let report = LabResults {
            order_id: o.id,
            report_id: "QC-1".into(),
            status: ReportStatus::Final,
            results: vec![
                LabResult {
                    code_system: "urn:carehub:hl7-cs:L".into(),
                    code: "HEEL-W".into(),
                    display: Some("Heel width".into()),
                    value_type: ValueType::Quantity,
                    value: "61.5".into(),
                    unit: Some("mm".into()),
                    reference_range: Some("58-64".into()),
                    interpretation: Some("N".into()),
                },
                LabResult {
                    code_system: "urn:carehub:hl7-cs:L".into(),
                    code: "QC".into(),
                    display: None,
                    value_type: ValueType::String,
                    value: "pass ^ visual".into(),
                    unit: None,
                    reference_range: None,
                    interpretation: None,
                },
            ],
            issued_at: None,
        };
        let id = results_control_id(&o, "QC-1");
        assert_eq!(id.len(), 20);
        assert_eq!(id, results_control_id(&o, "QC-1"), "stable");
        assert_ne!(id, results_control_id(&o, "QC-2"));
        let text = hl7_results_message(
            &LabRouting::default(),
            &ClinicRoute::default(),
            &o,
            &[],
            &[],
            &report,
            &id,
        );
        let msg = Message::parse(&text).expect("parses");
        assert_eq!(msg.type_label(), "ORU^R01");
        assert_eq!(msg.get("OBR-25").raw(), "F");
        assert_eq!(msg.get("OBX-2").raw(), "NM");
        assert_eq!(msg.get("OBX-5").raw(), "61.5");
        assert_eq!(msg.get("OBX-6").raw(), "mm");
        assert_eq!(msg.get("OBX-11").raw(), "F");
        assert_eq!(
            msg.get("OBX[2]-5").decoded(),
            "pass ^ visual",
            "escaped on the wire, exact when read"
        );
    }

    #[test]
    fn clinics_are_found_whatever_the_case_of_their_name() {
        let mut routing = LabRouting {
            all_clinics: false,
            ..LabRouting::default()
        };
        routing.clinics.insert(
            "northclinic".into(),
            ClinicRoute {
                hl7_destination: Some("north".into()),
                ..ClinicRoute::default()
            },
        );
        assert!(routing.dispatches(Some("NORTHCLINIC")));
        assert!(!routing.dispatches(Some("SOUTH")));
        assert!(!routing.dispatches(None));
        assert_eq!(
            routing.route(Some("NorthClinic")).hl7_destination.as_deref(),
            Some("north")
        );
        assert_eq!(routing.route(Some("SOUTH")), ClinicRoute::default());
    }

    #[test]
    fn every_lab_status_has_an_hl7_and_a_fhir_status() {
        for s in LabStatus::ALL {
            assert!(["SC", "CA", "CM", "IP"].contains(&orc5(s)));
            assert!(!s.fhir_task_status().is_empty());
        }
        assert_eq!(LabStatus::Delivered.fhir_task_status(), "completed");
        assert_eq!(orc5(LabStatus::Delivered), "CM");
    }
}
