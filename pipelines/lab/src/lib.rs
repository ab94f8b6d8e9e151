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
pub mod notify;

use async_trait::async_trait;
use carehub_pipeline::{Context, Handled, Handler, HandlerError};
use carehub_schema::contracts::{
    EHR_ORDER_STATUS, LAB_ORDER, LAB_RESULTS, LAB_STATUS, LabItem, LabOrder, LabPatient, LabResults, LabStatusReport,
    ORDER_UPSERTED, OrderAction, Outbound, ValueType,
};
use carehub_schema::lab::{self, LabJob, LabStatus, Transition};
use carehub_schema::{Action, ActorKind, AuditEntry, DeadLetters, Envelope, NewDeadLetter, repo};
use serde::Deserialize;
use sqlx::PgConnection;
use uuid::Uuid;

pub use config::LabConfig;
pub use notify::{ClinicRoute, LabRouting, OrderStatusMessage};

const SOURCE: &str = "/carehub/pipelines/lab";
const ACTOR: &str = "pipeline:lab";

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

/// Turns new and changed orders into `lab.orders.v1` records. It follows the
/// events topic for `carehub.order.upserted.v1`, whichever connector the
/// order came from (HL7 ORM/OML today, FHIR ServiceRequest next).
#[derive(Debug, Clone)]
pub struct LabDispatch {
    pub topics: LabTopics,
    pub routing: LabRouting,
}

#[derive(Debug, Deserialize)]
struct OrderUpserted {
    id: Uuid,
}

/// Order statuses after which the lab should stop.
const WITHDRAWN: &[&str] = &["revoked", "entered-in-error"];

#[async_trait]
impl Handler for LabDispatch {
    fn name(&self) -> &str {
        "lab_dispatch"
    }

    fn accepts(&self, event_type: &str) -> bool {
        event_type == ORDER_UPSERTED
    }

    fn ignores(&self, event_type: &str) -> bool {
        event_type != ORDER_UPSERTED
    }

    async fn handle(&self, conn: &mut PgConnection, ctx: &Context, event: &Envelope) -> Result<Handled, HandlerError> {
        let upserted = OrderUpserted::deserialize(&event.data)
            .map_err(|e| HandlerError::rejected("invalid_data", format!("{ORDER_UPSERTED}: {e}")))?;
        let order = lab::order_for_lab(conn, upserted.id)
            .await?
            .ok_or_else(|| HandlerError::rejected("unknown_reference", format!("order {} is unknown", upserted.id)))?;
        if !self.routing.dispatches(order.clinic.as_deref()) {
            return Ok(Handled::default());
        }
        let withdrawn = WITHDRAWN.contains(&order.status.as_str());
        let action = match lab::lock_job(conn, order.id).await? {
            None if withdrawn => return Ok(Handled::default()),
            None => {
                lab::open_job(conn, order.id, order.version, Some(ctx.message_id)).await?;
                OrderAction::New
            }
            // Already told (a redelivered or older event): nothing new to say.
            Some(job) if job.dispatched_version >= order.version => return Ok(Handled::default()),
            Some(job) if job.lab_status().is_terminal() => return Ok(Handled::default()),
            Some(job) if withdrawn && job.cancel_requested => return Ok(Handled::default()),
            Some(_) => {
                let action = if withdrawn {
                    OrderAction::Cancel
                } else {
                    OrderAction::Amend
                };
                lab::mark_dispatched(
                    conn,
                    order.id,
                    order.version,
                    action == OrderAction::Cancel,
                    Some(ctx.message_id),
                )
                .await?;
                action
            }
        };
        let items = lab::order_items(conn, order.id).await?;
        let scans = lab::order_scans(conn, order.id).await?;
        let data = LabOrder {
            action,
            order_id: order.id,
            order_version: order.version,
            order_number: carehub_schema::model::Identifier {
                system: order.placer_system.clone(),
                value: order.placer_number.clone(),
                type_code: None,
            },
            clinic: order.clinic.clone(),
            patient: LabPatient {
                id: order.patient_id,
                sex: order.sex.clone(),
                birth_year: order.birth_year,
            },
            items: items
                .into_iter()
                .map(|i| LabItem {
                    code_system: i.code_system,
                    code: i.code,
                    display: i.display,
                    quantity: i.quantity,
                })
                .collect(),
            device_spec: order.device_spec.clone(),
            scans,
            due_date: order.due_date,
            priority: order.priority.clone(),
            note: order.note.clone(),
        };
        let out = Envelope::new(LAB_ORDER, SOURCE, serde_json::json!(data))
            .with_subject(format!("service_order/{}", order.id));
        ctx.publish(&self.topics.orders, &order.id.to_string(), out.clone());
        Ok(Handled {
            patient_id: Some(order.patient_id),
            audit: vec![
                AuditEntry::new(ActorKind::System, ACTOR, Action::Send, "service_order")
                    .entity(order.id)
                    .message(Some(ctx.message_id))
                    .origin(ctx.origin.clone())
                    .detail(serde_json::json!({
                        "to": self.topics.orders,
                        "lab_action": action,
                        "order_version": order.version,
                        "event_id": out.id,
                    })),
            ],
        })
    }
}

/// Applies the lab's status reports: the order's state machine, its
/// timeline and audit trail, and the messages that tell the clinic.
#[derive(Debug, Clone)]
pub struct LabStatusPipeline {
    pub topics: LabTopics,
    pub routing: LabRouting,
}

/// Where a report stands against the job's sequence.
enum Position {
    Next,
    Ahead,
    Applied(String),
}

#[async_trait]
impl Handler for LabStatusPipeline {
    fn name(&self) -> &str {
        "lab_status"
    }

    fn accepts(&self, event_type: &str) -> bool {
        event_type == LAB_STATUS
    }

    async fn handle(&self, conn: &mut PgConnection, ctx: &Context, event: &Envelope) -> Result<Handled, HandlerError> {
        let report = LabStatusReport::deserialize(&event.data)
            .map_err(|e| HandlerError::rejected("invalid_data", format!("{LAB_STATUS}: {e}")))?;
        report
            .check()
            .map_err(|reason| HandlerError::rejected("invalid_data", reason))?;
        let mut job = lab::lock_job(conn, report.order_id).await?.ok_or_else(|| {
            HandlerError::rejected(
                "unknown_reference",
                format!("order {} was not sent to the lab", report.order_id),
            )
        })?;
        let mut handled = Handled::default();
        let position = if report.sequence == job.last_sequence + 1 {
            Position::Next
        } else if report.sequence > job.last_sequence + 1 {
            Position::Ahead
        } else {
            Position::Applied(
                lab::applied_status(conn, job.order_id, report.sequence)
                    .await?
                    .unwrap_or_default(),
            )
        };
        match position {
            Position::Applied(status) if status == report.status.as_str() => {
                // The same report again (the lab resent it under a new event id).
                return Ok(handled);
            }
            Position::Applied(status) => {
                return Err(HandlerError::rejected(
                    "sequence_conflict",
                    format!(
                        "order {} report {} says {} but report {} already said {status}",
                        job.order_id, report.sequence, report.status, report.sequence
                    ),
                ));
            }
            Position::Ahead => {
                let held = lab::hold(
                    conn,
                    job.order_id,
                    report.sequence,
                    &serde_json::json!(event),
                    Some(ctx.message_id),
                )
                .await?;
                handled.audit.push(
                    AuditEntry::new(ActorKind::System, ACTOR, Action::Update, "lab_job")
                        .entity(job.order_id)
                        .message(Some(ctx.message_id))
                        .origin(ctx.origin.clone())
                        .detail(serde_json::json!({
                            "held": held,
                            "sequence": report.sequence,
                            "waiting_for": job.last_sequence + 1,
                            "event_id": event.id,
                        })),
                );
                return Ok(handled);
            }
            Position::Next => {}
        }
        self.apply(conn, ctx, ctx.message_id, &mut job, &report, &event.id, &mut handled)
            .await?;
        // Reports that arrived early and were waiting for this one.
        while let Some((held, msg)) = lab::take_held(conn, job.order_id, job.last_sequence + 1).await? {
            let env: Envelope = serde_json::from_value(held)
                .map_err(|e| HandlerError::rejected("invalid_data", format!("held report: {e}")))?;
            let next = LabStatusReport::deserialize(&env.data)
                .map_err(|e| HandlerError::rejected("invalid_data", format!("held report: {e}")))?;
            let msg = msg.unwrap_or(ctx.message_id);
            sqlx::query("SAVEPOINT held_report").execute(&mut *conn).await?;
            // Events of a held report that is undone are given back with its writes.
            let published = ctx.outbox.len();
            match self.apply(conn, ctx, msg, &mut job, &next, &env.id, &mut handled).await {
                Ok(()) => {
                    sqlx::query("RELEASE SAVEPOINT held_report").execute(&mut *conn).await?;
                }
                Err(HandlerError::Rejected { code, reason }) => {
                    // The report that arrived now stands; the held one that
                    // cannot follow it becomes a dead letter of its own
                    // (replayable), and later ones stay held behind it.
                    sqlx::query("ROLLBACK TO SAVEPOINT held_report")
                        .execute(&mut *conn)
                        .await?;
                    ctx.outbox.truncate(published);
                    let payload =
                        serde_json::to_vec(&env).map_err(|e| HandlerError::rejected("invalid_data", e.to_string()))?;
                    let id = DeadLetters::insert(
                        conn,
                        &NewDeadLetter {
                            consumer: self.name(),
                            topic: ctx.origin.strip_prefix("kafka:").unwrap_or(&ctx.origin),
                            partition: None,
                            offset: None,
                            key: Some(job.order_id.to_string().as_bytes()),
                            payload: &payload,
                            event_id: Some(&env.id),
                            message_id: Some(msg),
                            error_code: code,
                            reason: &reason,
                        },
                    )
                    .await?;
                    handled.audit.push(
                        AuditEntry::new(ActorKind::System, ACTOR, Action::Update, "lab_job")
                            .entity(job.order_id)
                            .message(Some(msg))
                            .origin(ctx.origin.clone())
                            .detail(serde_json::json!({ "dead_letter": id, "error_code": code, "event_id": env.id })),
                    );
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(handled)
    }
}

impl LabStatusPipeline {
    #[allow(clippy::too_many_arguments)]
    async fn apply(
        &self,
        conn: &mut PgConnection,
        ctx: &Context,
        message_id: Uuid,
        job: &mut LabJob,
        report: &LabStatusReport,
        event_id: &str,
        handled: &mut Handled,
    ) -> Result<(), HandlerError> {
        let from = job.lab_status();
        if !from.can_go_to(report.status) {
            return Err(HandlerError::rejected(
                "invalid_transition",
                format!(
                    "order {} cannot go from {from} to {} (report {})",
                    job.order_id, report.status, report.sequence
                ),
            ));
        }
        let t = Transition {
            sequence: report.sequence,
            to: report.status,
            reason: report.reason.as_deref(),
            carrier: report.carrier.as_deref(),
            tracking_number: report.tracking_number.as_deref(),
            occurred_at: report.occurred_at,
            event_id,
        };
        let applied = lab::apply_transition(conn, job, &t, Some(message_id)).await?;
        job.last_sequence = report.sequence;
        job.status = report.status.as_str().to_owned();
        job.remakes = applied.remakes;
        if report.carrier.is_some() {
            job.carrier = report.carrier.clone();
        }
        if report.tracking_number.is_some() {
            job.tracking_number = report.tracking_number.clone();
        }

        let order = lab::order_for_lab(conn, job.order_id)
            .await?
            .ok_or_else(|| HandlerError::rejected("unknown_reference", format!("order {} is gone", job.order_id)))?;
        let route = self.routing.route(order.clinic.as_deref());
        // Items and identifiers only go into the HL7 message: read them only for one.
        let (items, identifiers) = if route.hl7_destination.is_some() {
            (
                lab::order_items(conn, order.id).await?,
                repo::patient_identifiers(&mut *conn, order.patient_id).await?,
            )
        } else {
            (Vec::new(), Vec::new())
        };
        let change = notify::StatusChange {
            order: &order,
            items: &items,
            identifiers: &identifiers,
            status: report.status,
            sequence: report.sequence,
            reason: report.reason.as_deref(),
            carrier: job.carrier.as_deref(),
            tracking_number: job.tracking_number.as_deref(),
            remakes: applied.remakes,
            order_status: &order.status,
            at: report.occurred_at.unwrap_or_else(chrono::Utc::now),
        };
        let mut sent = Vec::new();
        if let Some(destination) = &route.hl7_destination {
            let control_id = notify::control_id(&change);
            let text = notify::hl7_status_message(&self.routing, &route, &change, &control_id);
            let out = Outbound::new(destination.clone(), text.as_bytes()).into_envelope(SOURCE);
            // Keyed by destination: one clinic's messages stay in order.
            ctx.publish(&self.topics.hl7_outbound, destination, out.clone());
            sent.push(serde_json::json!({ "to": "hl7", "destination": destination, "control_id": control_id, "event_id": out.id }));
        }
        if route.fhir_events {
            let out = Envelope::new(EHR_ORDER_STATUS, SOURCE, notify::ehr_event(&change))
                .with_subject(format!("service_request/{}", order.id));
            ctx.publish(&self.topics.ehr_events, &order.id.to_string(), out.clone());
            sent.push(serde_json::json!({ "to": self.topics.ehr_events, "event_id": out.id }));
        }
        handled.patient_id = Some(order.patient_id);
        handled.audit.push(
            AuditEntry::new(ActorKind::System, ACTOR, Action::Update, "lab_job")
                .entity(order.id)
                .message(Some(message_id))
                .origin(ctx.origin.clone())
                .detail(serde_json::json!({
                    "from": applied.from,
                    "to": applied.to,
                    "sequence": report.sequence,
                    "event_id": event_id,
                    "notified": sent,
                })),
        );
        if let Some(status) = applied.order_status {
            handled.audit.push(
                AuditEntry::new(ActorKind::System, ACTOR, Action::Update, "service_order")
                    .entity(order.id)
                    .message(Some(message_id))
                    .origin(ctx.origin.clone())
                    .detail(serde_json::json!({ "status": status })),
            );
        }
        if let Some(id) = applied.shipment_id {
            handled.audit.push(
                AuditEntry::new(
                    ActorKind::System,
                    ACTOR,
                    if report.status == LabStatus::Shipped {
                        Action::Create
                    } else {
                        Action::Update
                    },
                    "shipment",
                )
                .entity(id)
                .message(Some(message_id))
                .origin(ctx.origin.clone()),
            );
        }
        Ok(())
    }
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
