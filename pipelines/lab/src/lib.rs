//! The lab's manufacturing over Kafka: an order's journey from the clinic to
//! the lab and back.
//!
//! ```text
//! order.upserted (events topic) ─► LabDispatch ─► lab.orders.v1 ─► the lab
//! the lab ─► lab.status.v1 ─► LabStatusPipeline ─► lab_job + history + audit
//!                                               ├► carehub.hl7v2.send.v1 (ORC-5 to the clinic)
//!                                               └► ehr.events.v1 (FHIR Task + ServiceRequest)
//! the lab ─► lab.results.v1 ─► LabResultsPipeline ─► observation + audit
//!                                               └► carehub.hl7v2.send.v1 (ORU^R01 to the clinic)
//! ```
//!
//! Both are engine handlers: each record's effects (canonical rows, outbox
//! records, audit entries) commit in one transaction, exactly once.
//!
//! Ordering rule for status reports: the lab numbers them per order
//! (`sequence` 1, 2, …). The next number is applied; a later one is held
//! (`lab_status_held`) and applied as soon as the gap is filled; an earlier
//! one already applied with the same status is a duplicate (no effect), with
//! another status a conflict (dead letter). A transition the state machine
//! ([`carehub_schema::lab::LabStatus::can_go_to`]) forbids is dead-lettered
//! with the reason; reports held behind it wait until it is replayed.

pub mod config;
mod dispatch;
pub mod notify;
mod status;

use async_trait::async_trait;
use carehub_pipeline::{Context, Handled, Handler, HandlerError};
use carehub_schema::contracts::{LAB_RESULTS, LabResults, Outbound, ValueType};
use carehub_schema::lab;
use carehub_schema::{Action, ActorKind, AuditEntry, Envelope, repo};
use serde::Deserialize;
use sqlx::PgConnection;

pub use config::LabConfig;
pub use dispatch::LabDispatch;
pub use notify::{ClinicRoute, LabRouting, OrderStatusMessage};
pub use status::LabStatusPipeline;

pub(crate) const SOURCE: &str = "/carehub/pipelines/lab";
pub(crate) const ACTOR: &str = "pipeline:lab";

/// Topics the lab pipelines write to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabTopics {
    /// `lab.orders.v1`.
    pub orders: String,
    /// The HL7 outbound topic (`carehub.hl7v2.send.v1` records).
    pub hl7_outbound: String,
    /// `ehr.events.v1`.
    pub ehr_events: String,
}

/// Applies the lab's results: observations linked to the order, and the
/// results sent to the clinic as ORU^R01.
#[derive(Debug, Clone)]
pub struct LabResultsPipeline {
    pub topics: LabTopics,
    pub routing: LabRouting,
}

#[async_trait]
impl Handler for LabResultsPipeline {
    fn name(&self) -> &str {
        "lab_results"
    }

    fn accepts(&self, event_type: &str) -> bool {
        event_type == LAB_RESULTS
    }

    async fn handle(&self, conn: &mut PgConnection, ctx: &Context, event: &Envelope) -> Result<Handled, HandlerError> {
        let report = LabResults::deserialize(&event.data)
            .map_err(|e| HandlerError::rejected("invalid_data", format!("{LAB_RESULTS}: {e}")))?;
        report
            .check()
            .map_err(|reason| HandlerError::rejected("invalid_data", reason))?;
        if lab::lock_job(conn, report.order_id).await?.is_none() {
            return Err(HandlerError::rejected(
                "unknown_reference",
                format!("order {} was not sent to the lab", report.order_id),
            ));
        }
        let order = lab::order_for_lab(conn, report.order_id)
            .await?
            .ok_or_else(|| HandlerError::rejected("unknown_reference", format!("order {} is gone", report.order_id)))?;
        let mut handled = Handled {
            patient_id: Some(order.patient_id),
            audit: Vec::new(),
        };
        for r in &report.results {
            let data = carehub_schema::records::ResultData {
                placer: None,
                filler: None,
                // One observation per order, report and code: a corrected
                // report replaces its values.
                result_key: format!("lab:{}:{}:{}|{}", order.id, report.report_id, r.code_system, r.code),
                status: report.status.as_str(),
                code_system: r.code_system.clone(),
                code: r.code.clone(),
                display: r.display.clone(),
                value: match r.value_type {
                    ValueType::Quantity => carehub_schema::records::ResultValue::Quantity(r.value.clone()),
                    ValueType::String => carehub_schema::records::ResultValue::String(r.value.clone()),
                    ValueType::Coded => carehub_schema::records::ResultValue::Coded(r.value.clone()),
                },
                unit: r.unit.clone(),
                reference_range: r.reference_range.clone(),
                interpretation: r.interpretation.clone(),
                effective_at: report.issued_at,
            };
            let up = carehub_schema::records::upsert_observation(
                conn,
                order.patient_id,
                Some(order.id),
                &data,
                Some(ctx.message_id),
            )
            .await?;
            handled.audit.push(
                AuditEntry::new(
                    ActorKind::System,
                    ACTOR,
                    if up.created { Action::Create } else { Action::Update },
                    "observation",
                )
                .entity(up.id)
                .message(Some(ctx.message_id))
                .origin(ctx.origin.clone())
                .detail(serde_json::json!({ "order_id": order.id, "report_id": report.report_id })),
            );
        }
        let route = self.routing.route(order.clinic.as_deref());
        if let Some(destination) = &route.hl7_destination {
            let items = lab::order_items(conn, order.id).await?;
            let identifiers = repo::patient_identifiers(&mut *conn, order.patient_id).await?;
            let control_id = notify::results_control_id(&order, &report.report_id);
            let text = notify::hl7_results_message(
                &self.routing,
                &route,
                &order,
                &items,
                &identifiers,
                &report,
                &control_id,
            );
            let out = Outbound::new(destination.clone(), text.as_bytes()).into_envelope(SOURCE);
            ctx.publish(&self.topics.hl7_outbound, destination, out.clone());
            handled.audit.push(
                AuditEntry::new(ActorKind::System, ACTOR, Action::Send, "service_order")
                    .entity(order.id)
                    .message(Some(ctx.message_id))
                    .origin(ctx.origin.clone())
                    .detail(serde_json::json!({
                        "to": "hl7", "destination": destination, "control_id": control_id,
                        "message_type": "ORU^R01", "event_id": out.id,
                    })),
            );
        }
        Ok(handled)
    }
}

/// Registers the lab's pipelines: dispatch (orders to the lab), status
/// reports and results from it. `hl7_outbound` is the HL7 outbound topic
/// the clinics' notices go to.
pub fn register(registry: &mut carehub_connector_kit::Registry, cfg: &LabConfig, hl7_outbound: &str) {
    let topics = LabTopics {
        orders: cfg.orders_topic.clone(),
        hl7_outbound: hl7_outbound.to_owned(),
        ehr_events: cfg.ehr_events_topic.clone(),
    };
    let writes = vec![
        topics.orders.clone(),
        topics.hl7_outbound.clone(),
        topics.ehr_events.clone(),
    ];
    let pipelines: [(&String, &String, std::sync::Arc<dyn Handler>); 3] = [
        (
            &cfg.events_topic,
            &cfg.dispatch_group,
            std::sync::Arc::new(LabDispatch {
                topics: topics.clone(),
                routing: cfg.routing(),
            }),
        ),
        (
            &cfg.status_topic,
            &cfg.status_group,
            std::sync::Arc::new(LabStatusPipeline {
                topics: topics.clone(),
                routing: cfg.routing(),
            }),
        ),
        (
            &cfg.results_topic,
            &cfg.results_group,
            std::sync::Arc::new(LabResultsPipeline {
                topics: topics.clone(),
                routing: cfg.routing(),
            }),
        ),
    ];
    for (topic, group, handler) in pipelines {
        registry.register(carehub_pipeline::PipelineComponent {
            topic: topic.clone(),
            group: group.clone(),
            enabled: cfg.enabled,
            writes: writes.clone(),
            handler,
        });
    }
}
