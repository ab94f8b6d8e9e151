//! [`LabDispatch`]: new and changed orders to the lab's `lab.orders.v1`,
//! applied set-wise — a batch's jobs, orders, items and scans read in four
//! statements, its jobs opened and marked in two — and one record alone
//! (the engine's retry pass) the same way, so that the rule lives once.

use async_trait::async_trait;
use carehub_pipeline::{Context, Handled, Handler, HandlerError};
use carehub_schema::contracts::{LAB_ORDER, LabItem, LabOrder, LabPatient, ORDER_UPSERTED, OrderAction};
use carehub_schema::lab::LabJob;
use carehub_schema::lab_batch::{DispatchBatch, DispatchWrites, JobDispatched, JobOpened};
use carehub_schema::{Action, ActorKind, AuditEntry, Envelope};
use serde::Deserialize;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{ACTOR, LabRouting, LabTopics, SOURCE};

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

/// What the lab is to be told about an order, given its job so far.
fn decide(order_status: &str, order_version: i32, job: Option<&LabJob>) -> Option<OrderAction> {
    let withdrawn = WITHDRAWN.contains(&order_status);
    match job {
        None if withdrawn => None,
        None => Some(OrderAction::New),
        // Already told (a redelivered or older event): nothing new to say.
        Some(job) if job.dispatched_version >= order_version => None,
        Some(job) if job.lab_status().is_terminal() => None,
        Some(job) if withdrawn && job.cancel_requested => None,
        Some(_) if withdrawn => Some(OrderAction::Cancel),
        Some(_) => Some(OrderAction::Amend),
    }
}

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
        let mut out = self.dispatch(conn, &[(ctx, event)]).await?;
        Ok(out.pop().unwrap_or_default())
    }

    async fn handle_batch(
        &self,
        conn: &mut PgConnection,
        records: &[(Context, &Envelope)],
    ) -> Result<Vec<Handled>, HandlerError> {
        let records: Vec<(&Context, &Envelope)> = records.iter().map(|(c, e)| (c, *e)).collect();
        self.dispatch(conn, &records).await
    }
}

impl LabDispatch {
    /// The records in order; a record about an order met earlier in the
    /// batch sees what the earlier one did to its job.
    async fn dispatch(
        &self,
        conn: &mut PgConnection,
        records: &[(&Context, &Envelope)],
    ) -> Result<Vec<Handled>, HandlerError> {
        let ids = records
            .iter()
            .map(|(_, event)| {
                OrderUpserted::deserialize(&event.data)
                    .map(|u| u.id)
                    .map_err(|e| HandlerError::rejected("invalid_data", format!("{ORDER_UPSERTED}: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let batch = DispatchBatch::load(conn, &ids).await?;
        if let Some(id) = ids.iter().find(|id| !batch.orders.contains_key(id)) {
            return Err(HandlerError::rejected(
                "unknown_reference",
                format!("order {id} is unknown"),
            ));
        }
        // Every record of an order sees the order as it stands now (as one
        // by one would: each reads the current row). After the first has
        // told the lab, the others find the job told of that version: an
        // order's job is written at most once per batch.
        let mut writes = DispatchWrites::default();
        let mut told = std::collections::HashSet::new();
        let mut out = Vec::with_capacity(records.len());
        for ((ctx, _), id) in records.iter().zip(&ids) {
            let order = &batch.orders[id];
            let job = batch.jobs.get(id);
            let action = match self.routing.dispatches(order.clinic.as_deref()) && !told.contains(id) {
                true => decide(&order.status, order.version, job),
                false => None,
            };
            let Some(action) = action else {
                out.push(Handled::default());
                continue;
            };
            told.insert(*id);
            let source_message_id = Some(ctx.message_id);
            match job {
                None => writes.opened.push(JobOpened {
                    order_id: *id,
                    version: order.version,
                    source_message_id,
                }),
                Some(_) => writes.dispatched.push(JobDispatched {
                    order_id: *id,
                    version: order.version,
                    cancel: action == OrderAction::Cancel,
                    source_message_id,
                }),
            }
            out.push(self.announce(ctx, order, action, &batch));
        }
        writes.write(conn).await?;
        Ok(out)
    }

    /// The `lab.orders.v1` record of `action` for `order`, and its audit entry.
    fn announce(
        &self,
        ctx: &Context,
        order: &carehub_schema::lab::OrderForLab,
        action: OrderAction,
        batch: &DispatchBatch,
    ) -> Handled {
        let items = batch.items.get(&order.id).cloned().unwrap_or_default();
        let scans = batch.scans.get(&order.id).cloned().unwrap_or_default();
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
        let audit = AuditEntry::new(ActorKind::System, ACTOR, Action::Send, "service_order")
            .entity(order.id)
            .message(Some(ctx.message_id))
            .origin(ctx.origin.clone())
            .detail(serde_json::json!({
                "to": self.topics.orders,
                "lab_action": action,
                "order_version": order.version,
                "event_id": out.id,
            }));
        ctx.publish(&self.topics.orders, &order.id.to_string(), out);
        Handled {
            patient_id: Some(order.patient_id),
            audit: vec![audit],
        }
    }
}
