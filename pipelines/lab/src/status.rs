//! The lab's status reports applied to the order's state machine, its
//! timeline and audit trail, and the messages that tell the clinic.
//!
//! One implementation for one report and for a batch ([`Handler::handle`]
//! is a batch of one): the batch's jobs, orders, held reports, items and
//! identifiers are read in one statement each, the reports are judged and
//! applied in memory in record order, and the batch's rows are written in
//! one statement per table ([`lab_batch::StatusWrites`]). Nothing is
//! written before the last report is judged, so a report that cannot be
//! applied (the batch's own, or a held one) needs no savepoint.

use std::collections::HashMap;

use async_trait::async_trait;
use carehub_pipeline::{Context, Handled, Handler, HandlerError};
use carehub_schema::contracts::{EHR_ORDER_STATUS, LAB_STATUS, LabStatusReport, Outbound};
use carehub_schema::lab::{LabJob, LabStatus};
use carehub_schema::lab_batch::{self, HeldReport, JobEvent, JobUpdate, OrderStatusChange, StatusBatch, StatusWrites};
use carehub_schema::model::{OrderItem, PatientIdentifier};
use carehub_schema::{Action, ActorKind, AuditEntry, DeadLetters, Envelope, NewDeadLetter};
use serde::Deserialize;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{ACTOR, LabRouting, LabTopics, SOURCE, notify};

/// Applies the lab's status reports (see the crate's ordering rule).
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

/// A report waiting for the gap before it: held before this batch (`in_db`)
/// or held by one of its reports.
struct HeldSlot {
    event: serde_json::Value,
    message_id: Option<Uuid>,
    in_db: bool,
}

/// The batch's state in memory, between what was read and what is written.
struct Batch {
    jobs: HashMap<Uuid, (LabJob, i32)>,
    loaded: StatusBatch,
    held: HashMap<(Uuid, i64), HeldSlot>,
    items: HashMap<Uuid, Vec<OrderItem>>,
    identifiers: HashMap<Uuid, Vec<PatientIdentifier>>,
    writes: StatusWrites,
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
        let mut out = self.apply_reports(conn, &[(ctx.clone(), event)]).await?;
        Ok(out.pop().unwrap_or_default())
    }

    async fn handle_batch(
        &self,
        conn: &mut PgConnection,
        records: &[(Context, &Envelope)],
    ) -> Result<Vec<Handled>, HandlerError> {
        self.apply_reports(conn, records).await
    }
}

fn parse(event: &Envelope) -> Result<LabStatusReport, HandlerError> {
    let report = LabStatusReport::deserialize(&event.data)
        .map_err(|e| HandlerError::rejected("invalid_data", format!("{LAB_STATUS}: {e}")))?;
    report
        .check()
        .map_err(|reason| HandlerError::rejected("invalid_data", reason))?;
    Ok(report)
}

impl LabStatusPipeline {
    async fn apply_reports(
        &self,
        conn: &mut PgConnection,
        records: &[(Context, &Envelope)],
    ) -> Result<Vec<Handled>, HandlerError> {
        let reports = records
            .iter()
            .map(|(_, event)| parse(event))
            .collect::<Result<Vec<_>, _>>()?;
        let order_ids: Vec<Uuid> = reports.iter().map(|r| r.order_id).collect();
        let mut loaded = StatusBatch::load(conn, &order_ids).await?;
        if let Some(r) = reports.iter().find(|r| !loaded.jobs.contains_key(&r.order_id)) {
            return Err(HandlerError::rejected(
                "unknown_reference",
                format!("order {} was not sent to the lab", r.order_id),
            ));
        }
        let again: Vec<(Uuid, i64)> = reports
            .iter()
            .filter(|r| {
                loaded
                    .jobs
                    .get(&r.order_id)
                    .is_some_and(|j| r.sequence <= j.last_sequence)
            })
            .map(|r| (r.order_id, r.sequence))
            .collect();
        loaded.load_applied(conn, &again).await?;
        // Items and identifiers only go into HL7 messages: read them only for those.
        let hl7_orders: Vec<&carehub_schema::lab::OrderForLab> = loaded
            .orders
            .values()
            .filter(|o| self.routing.route(o.clinic.as_deref()).hl7_destination.is_some())
            .collect();
        let item_ids: Vec<Uuid> = hl7_orders.iter().map(|o| o.id).collect();
        let patient_ids: Vec<Uuid> = hl7_orders.iter().map(|o| o.patient_id).collect();
        let items = carehub_schema::lab::items_of(conn, &item_ids).await?;
        let identifiers = lab_batch::identifiers_of(conn, &patient_ids).await?;
        let held = std::mem::take(&mut loaded.held)
            .into_iter()
            .map(|h: HeldReport| {
                (
                    (h.order_id, h.sequence),
                    HeldSlot {
                        event: h.event,
                        message_id: h.source_message_id,
                        in_db: true,
                    },
                )
            })
            .collect();
        let mut batch = Batch {
            jobs: std::mem::take(&mut loaded.jobs)
                .into_iter()
                .map(|(id, job)| (id, (job, 0)))
                .collect(),
            loaded,
            held,
            items,
            identifiers,
            writes: StatusWrites::default(),
        };

        let mut out = Vec::with_capacity(records.len());
        for ((ctx, event), report) in records.iter().zip(&reports) {
            out.push(self.judge(conn, &mut batch, ctx, event, report).await?);
        }

        let Batch {
            jobs, held, mut writes, ..
        } = batch;
        writes.jobs = jobs
            .into_values()
            .filter(|(_, transitions)| *transitions > 0)
            .map(|(job, transitions)| JobUpdate {
                order_id: job.order_id,
                status: job.status,
                last_sequence: job.last_sequence,
                status_reason: job.status_reason,
                carrier: job.carrier,
                tracking_number: job.tracking_number,
                remakes: job.remakes,
                transitions,
                source_message_id: job.source_message_id.unwrap_or_default(),
            })
            .collect();
        writes.held = held
            .into_iter()
            .filter(|(_, slot)| !slot.in_db)
            .map(|((order_id, sequence), slot)| HeldReport {
                order_id,
                sequence,
                event: slot.event,
                source_message_id: slot.message_id,
            })
            .collect();
        writes.write(conn).await?;
        Ok(out)
    }

    /// One report of the batch: applied, held, a duplicate or refused.
    async fn judge(
        &self,
        conn: &mut PgConnection,
        batch: &mut Batch,
        ctx: &Context,
        event: &Envelope,
        report: &LabStatusReport,
    ) -> Result<Handled, HandlerError> {
        let mut handled = Handled::default();
        let order_id = report.order_id;
        let last = batch.jobs.get(&order_id).map_or(0, |(j, _)| j.last_sequence);
        let position = if report.sequence == last + 1 {
            Position::Next
        } else if report.sequence > last + 1 {
            Position::Ahead
        } else {
            let applied = batch.loaded.applied.get(&(order_id, report.sequence));
            Position::Applied(applied.cloned().unwrap_or_default())
        };
        match position {
            // The same report again (the lab resent it under a new event id).
            Position::Applied(status) if status == report.status.as_str() => return Ok(handled),
            Position::Applied(status) => {
                return Err(HandlerError::rejected(
                    "sequence_conflict",
                    format!(
                        "order {order_id} report {} says {} but report {} already said {status}",
                        report.sequence, report.status, report.sequence
                    ),
                ));
            }
            Position::Ahead => {
                // A second copy of a held (order, sequence) is ignored.
                let key = (order_id, report.sequence);
                let newly = !batch.held.contains_key(&key);
                if newly {
                    batch.held.insert(
                        key,
                        HeldSlot {
                            event: serde_json::json!(event),
                            message_id: Some(ctx.message_id),
                            in_db: false,
                        },
                    );
                }
                handled.audit.push(
                    AuditEntry::new(ActorKind::System, ACTOR, Action::Update, "lab_job")
                        .entity(order_id)
                        .message(Some(ctx.message_id))
                        .origin(ctx.origin.clone())
                        .detail(serde_json::json!({
                            "held": newly,
                            "sequence": report.sequence,
                            "waiting_for": last + 1,
                            "event_id": event.id,
                        })),
                );
                return Ok(handled);
            }
            Position::Next => {}
        }
        self.transition(conn, batch, ctx, ctx.message_id, report, &event.id, &mut handled)
            .await?;
        // Reports that arrived early and were waiting for this one.
        loop {
            let next = batch.jobs.get(&order_id).map_or(0, |(j, _)| j.last_sequence) + 1;
            let Some(slot) = batch.held.remove(&(order_id, next)) else {
                break;
            };
            if slot.in_db {
                batch.writes.taken.push((order_id, next));
            }
            let env: Envelope = serde_json::from_value(slot.event)
                .map_err(|e| HandlerError::rejected("invalid_data", format!("held report: {e}")))?;
            let held = LabStatusReport::deserialize(&env.data)
                .map_err(|e| HandlerError::rejected("invalid_data", format!("held report: {e}")))?;
            let msg = slot.message_id.unwrap_or(ctx.message_id);
            match self
                .transition(conn, batch, ctx, msg, &held, &env.id, &mut handled)
                .await
            {
                Ok(()) => {}
                Err(HandlerError::Rejected { code, reason }) => {
                    // The report that arrived now stands; the held one that
                    // cannot follow it becomes a dead letter of its own
                    // (replayable), and later ones stay held behind it.
                    let payload =
                        serde_json::to_vec(&env).map_err(|e| HandlerError::rejected("invalid_data", e.to_string()))?;
                    let id = DeadLetters::insert(
                        conn,
                        &NewDeadLetter {
                            consumer: self.name(),
                            topic: ctx.origin.strip_prefix("kafka:").unwrap_or(&ctx.origin),
                            partition: None,
                            offset: None,
                            key: Some(order_id.to_string().as_bytes()),
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
                            .entity(order_id)
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

    /// Moves the job by `report` in memory (its rows are written with the
    /// batch's), and publishes what the clinic is told. Refuses before it
    /// changes anything.
    #[allow(clippy::too_many_arguments)]
    async fn transition(
        &self,
        conn: &mut PgConnection,
        batch: &mut Batch,
        ctx: &Context,
        message_id: Uuid,
        report: &LabStatusReport,
        event_id: &str,
        handled: &mut Handled,
    ) -> Result<(), HandlerError> {
        let order_id = report.order_id;
        let (job, transitions) = batch.jobs.get_mut(&order_id).ok_or_else(|| {
            HandlerError::rejected("unknown_reference", format!("order {order_id} was not sent to the lab"))
        })?;
        let from = job.lab_status();
        if !from.can_go_to(report.status) {
            return Err(HandlerError::rejected(
                "invalid_transition",
                format!(
                    "order {order_id} cannot go from {from} to {} (report {})",
                    report.status, report.sequence
                ),
            ));
        }
        let order = batch
            .loaded
            .orders
            .get_mut(&order_id)
            .ok_or_else(|| HandlerError::rejected("unknown_reference", format!("order {order_id} is gone")))?;
        let remake = from == LabStatus::QcFailed && report.status == LabStatus::InProduction;
        let shipment_carrier = report.carrier.clone().or_else(|| job.carrier.clone());
        let shipment_tracking = report.tracking_number.clone().or_else(|| job.tracking_number.clone());
        job.status = report.status.as_str().to_owned();
        job.last_sequence = report.sequence;
        job.status_reason = report.reason.clone();
        job.carrier = shipment_carrier.clone();
        job.tracking_number = shipment_tracking.clone();
        job.remakes += i32::from(remake);
        job.source_message_id = Some(message_id);
        job.version += 1;
        *transitions += 1;
        batch
            .loaded
            .applied
            .insert((order_id, report.sequence), report.status.as_str().to_owned());
        batch.writes.events.push(JobEvent {
            order_id,
            sequence: report.sequence,
            from_status: from.as_str().to_owned(),
            to_status: report.status.as_str().to_owned(),
            reason: report.reason.clone(),
            event_id: event_id.to_owned(),
            occurred_at: report.occurred_at,
            source_message_id: message_id,
        });
        let order_status = report.status.order_status();
        if let Some(status) = order_status {
            batch.writes.order_changes.push(OrderStatusChange {
                order_id,
                from_status: std::mem::replace(&mut order.status, status.to_owned()),
                to_status: status.to_owned(),
                reason: format!("lab status {}", report.status),
                source_message_id: message_id,
            });
            order.version += 1;
        }
        let shipment_id = match report.status {
            LabStatus::Shipped => Some(
                lab_batch::record_shipment(
                    conn,
                    order_id,
                    shipment_carrier.as_deref().unwrap_or("unknown"),
                    shipment_tracking.as_deref(),
                    report.occurred_at,
                    message_id,
                )
                .await?,
            ),
            LabStatus::Delivered => lab_batch::record_delivery(conn, order_id, report.occurred_at, message_id).await?,
            _ => None,
        };

        let route = self.routing.route(order.clinic.as_deref());
        let no_items = Vec::new();
        let no_identifiers = Vec::new();
        let change = notify::StatusChange {
            order,
            items: batch.items.get(&order_id).unwrap_or(&no_items),
            identifiers: batch.identifiers.get(&order.patient_id).unwrap_or(&no_identifiers),
            status: report.status,
            sequence: report.sequence,
            reason: report.reason.as_deref(),
            carrier: job.carrier.as_deref(),
            tracking_number: job.tracking_number.as_deref(),
            remakes: job.remakes,
            order_status: &order.status,
            at: report.occurred_at.unwrap_or_else(chrono::Utc::now),
        };
        let mut sent = Vec::new();
        if let Some(destination) = &route.hl7_destination {
            let control_id = notify::control_id(&change);
            let text = notify::hl7_status_message(&self.routing, &route, &change, &control_id);
            let out = Outbound::new(destination.clone(), text.as_bytes()).into_envelope(SOURCE);
            sent.push(serde_json::json!({ "to": "hl7", "destination": destination, "control_id": control_id, "event_id": out.id }));
            // Keyed by destination: one clinic's messages stay in order.
            ctx.publish(&self.topics.hl7_outbound, destination, out);
        }
        if route.fhir_events {
            let out = Envelope::new(EHR_ORDER_STATUS, SOURCE, notify::ehr_event(&change))
                .with_subject(format!("service_request/{order_id}"));
            sent.push(serde_json::json!({ "to": self.topics.ehr_events, "event_id": out.id }));
            ctx.publish(&self.topics.ehr_events, &order_id.to_string(), out);
        }
        handled.patient_id = Some(order.patient_id);
        handled.audit.push(
            AuditEntry::new(ActorKind::System, ACTOR, Action::Update, "lab_job")
                .entity(order_id)
                .message(Some(message_id))
                .origin(ctx.origin.clone())
                .detail(serde_json::json!({
                    "from": from,
                    "to": report.status,
                    "sequence": report.sequence,
                    "event_id": event_id,
                    "notified": sent,
                })),
        );
        if let Some(status) = order_status {
            handled.audit.push(
                AuditEntry::new(ActorKind::System, ACTOR, Action::Update, "service_order")
                    .entity(order_id)
                    .message(Some(message_id))
                    .origin(ctx.origin.clone())
                    .detail(serde_json::json!({ "status": status })),
            );
        }
        if let Some(id) = shipment_id {
            let action = if report.status == LabStatus::Shipped {
                Action::Create
            } else {
                Action::Update
            };
            handled.audit.push(
                AuditEntry::new(ActorKind::System, ACTOR, action, "shipment")
                    .entity(id)
                    .message(Some(message_id))
                    .origin(ctx.origin.clone()),
            );
        }
        Ok(())
    }
}
