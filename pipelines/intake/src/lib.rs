//! The intake pipeline: systems that already speak carehub's canonical model
//! (a lab's master-data feed, a migration tool) send commands on the intake
//! topic; each becomes a canonical change, an audit entry and an outbound
//! event in one transaction.
//!
//! | event type (in)                     | effect                        | event (out, on the events topic)   |
//! |-------------------------------------|-------------------------------|------------------------------------|
//! | `carehub.organization.upsert.v1`    | organization by identifier    | `carehub.organization.upserted.v1` |
//! | `carehub.patient.upsert.v1`         | patient matched by identifier | `carehub.patient.upserted.v1`      |
//! | `carehub.fhir.resource.written.v1`  | Patient → patient; ServiceRequest → order ([`fhir`]) | `carehub.patient.upserted.v1`, `carehub.order.upserted.v1` |
//!
//! A FHIR write event names the stored version (type, id, version); the
//! resource itself is read from the FHIR store, so no patient data travels
//! on Kafka. A new patient or order takes the FHIR id. An order upserted here
//! enters the lab flow exactly as an HL7 ORM's does (LabDispatch follows
//! `carehub.order.upserted.v1`, whoever placed the order).
//!
//! Outbound events carry ids and versions only, never demographics.

pub mod config;
mod fhir;

pub use config::IntakeConfig;

use async_trait::async_trait;
use carehub_pipeline::{Context, Handled, Handler, HandlerError};
use carehub_schema::contracts::{
    FHIR_WRITTEN, ORDER_UPSERTED, ORGANIZATION_UPSERT, ORGANIZATION_UPSERTED, OrganizationUpsert, PATIENT_UPSERT,
    PATIENT_UPSERTED, PatientUpsert, RecordChanged, ResourceWritten,
};
use carehub_schema::fhir_store;
use carehub_schema::model::{Identifier, OrganizationKind};
use carehub_schema::records;
use carehub_schema::repo::{self, Upserted};
use carehub_schema::{Action, ActorKind, AuditEntry, Envelope};
use sqlx::PgConnection;
use uuid::Uuid;

const SOURCE: &str = "/carehub/pipelines/intake";

#[derive(Debug, Clone)]
pub struct IntakePipeline {
    /// Topic the outbound events go to (through the outbox).
    pub events_topic: String,
}

impl IntakePipeline {
    pub fn new(events_topic: impl Into<String>) -> Self {
        IntakePipeline {
            events_topic: events_topic.into(),
        }
    }

    /// Queues the entity's event (ids, version, `extra`) and returns its audit entry.
    fn announce(
        &self,
        ctx: &Context,
        event_type: &str,
        entity: &str,
        up: Upserted,
        extra: serde_json::Value,
    ) -> AuditEntry {
        let event = RecordChanged::new(&up, ctx.message_id).into_envelope(event_type, SOURCE, entity, extra);
        let action = if up.created { Action::Create } else { Action::Update };
        let entry = AuditEntry::new(ActorKind::System, "pipeline:intake", action, entity)
            .entity(up.id)
            .message(Some(ctx.message_id))
            .origin(ctx.origin.clone())
            .detail(serde_json::json!({ "version": up.version, "event_id": event.id }));
        ctx.publish(&self.events_topic, &up.id.to_string(), event);
        entry
    }
}

fn parse<T: serde::de::DeserializeOwned>(event: &Envelope) -> Result<T, HandlerError> {
    T::deserialize(&event.data)
        .map_err(|e| HandlerError::rejected("invalid_data", format!("{}: {e}", event.event_type)))
}

#[async_trait]
impl Handler for IntakePipeline {
    fn name(&self) -> &str {
        "intake"
    }

    fn accepts(&self, event_type: &str) -> bool {
        matches!(event_type, ORGANIZATION_UPSERT | PATIENT_UPSERT | FHIR_WRITTEN)
    }

    async fn handle(&self, conn: &mut PgConnection, ctx: &Context, event: &Envelope) -> Result<Handled, HandlerError> {
        match event.event_type.as_str() {
            ORGANIZATION_UPSERT => {
                let data: OrganizationUpsert = parse(event)?;
                let up = repo::upsert_organization(conn, &data, Some(ctx.message_id)).await?;
                let audit = self.announce(ctx, ORGANIZATION_UPSERTED, "organization", up, serde_json::json!({}));
                Ok(Handled {
                    patient_id: None,
                    audit: vec![audit],
                })
            }
            PATIENT_UPSERT => {
                let data: PatientUpsert = parse(event)?;
                let up = repo::upsert_patient(conn, &data, Some(ctx.message_id))
                    .await?
                    .map_err(|r| HandlerError::rejected(r.error_code(), r.to_string()))?;
                let audit = self.announce(ctx, PATIENT_UPSERTED, "patient", up, serde_json::json!({}));
                Ok(Handled {
                    patient_id: Some(up.id),
                    audit: vec![audit],
                })
            }
            FHIR_WRITTEN => self.fhir_written(conn, ctx, event).await,
            other => Err(HandlerError::rejected(
                "unknown_type",
                format!("intake does not handle {other:?}"),
            )),
        }
    }
}

impl IntakePipeline {
    async fn fhir_written(
        &self,
        conn: &mut PgConnection,
        ctx: &Context,
        event: &Envelope,
    ) -> Result<Handled, HandlerError> {
        let w: ResourceWritten = parse(event)?;
        let resource = stored(conn, &w.resource_type, &w.id, Some(w.version_id)).await?;
        let mut audit = Vec::new();
        match w.resource_type.as_str() {
            "Patient" => {
                let up = self.fhir_patient(conn, ctx, &w.id, &resource, &mut audit).await?;
                Ok(Handled {
                    patient_id: Some(up.id),
                    audit,
                })
            }
            "ServiceRequest" => {
                let patient_id = self.subject(conn, ctx, &resource, &mut audit).await?;
                let clinic = Identifier {
                    system: fhir::CLIENT_SYSTEM.to_owned(),
                    value: w.client.clone(),
                    type_code: None,
                };
                let org =
                    repo::ensure_organization(conn, OrganizationKind::Clinic, &clinic, &w.client, Some(ctx.message_id))
                        .await?;
                if org.created {
                    audit.push(
                        AuditEntry::new(ActorKind::System, "pipeline:intake", Action::Create, "organization")
                            .entity(org.id)
                            .message(Some(ctx.message_id))
                            .origin(ctx.origin.clone()),
                    );
                }
                let exists = records::find_order(conn, &fhir::placer(&w.id, &resource))
                    .await?
                    .is_some();
                let order = fhir::order_data(&w.id, &resource, exists);
                let applied = carehub_schema::order_book::apply_order_as(
                    conn,
                    patient_id,
                    None,
                    Some(org.id),
                    &order,
                    Some(ctx.message_id),
                    Uuid::parse_str(&w.id).ok(),
                )
                .await?
                .map_err(|r| HandlerError::rejected(r.error_code(), r.to_string()))?;
                audit.push(self.announce(
                    ctx,
                    ORDER_UPSERTED,
                    "service_order",
                    applied.upserted(),
                    applied.event_data(),
                ));
                Ok(Handled {
                    patient_id: Some(patient_id),
                    audit,
                })
            }
            other => Err(HandlerError::rejected(
                "unknown_type",
                format!("a FHIR {other} write does not feed the canonical record"),
            )),
        }
    }

    async fn fhir_patient(
        &self,
        conn: &mut PgConnection,
        ctx: &Context,
        id: &str,
        resource: &serde_json::Value,
        audit: &mut Vec<AuditEntry>,
    ) -> Result<Upserted, HandlerError> {
        let data = fhir::patient_data(id, resource);
        let up = repo::upsert_patient_as(conn, &data, Some(ctx.message_id), Uuid::parse_str(id).ok())
            .await?
            .map_err(|r| HandlerError::rejected(r.error_code(), r.to_string()))?;
        audit.push(self.announce(ctx, PATIENT_UPSERTED, "patient", up, serde_json::json!({})));
        Ok(up)
    }

    /// The canonical patient of an order's subject: a Patient written over
    /// FHIR is applied first (the same, idempotently, if it already was).
    async fn subject(
        &self,
        conn: &mut PgConnection,
        ctx: &Context,
        resource: &serde_json::Value,
        audit: &mut Vec<AuditEntry>,
    ) -> Result<Uuid, HandlerError> {
        let reference = resource["subject"]["reference"].as_str().unwrap_or("");
        let unknown = || {
            HandlerError::rejected(
                "unknown_reference",
                format!("subject {reference:?} is not a known Patient"),
            )
        };
        let id = reference.strip_prefix("Patient/").ok_or_else(unknown)?;
        if let Some(current) = fhir_store::current(&mut *conn, "Patient", id).await?
            && let Some(body) = current.body
        {
            let patient: serde_json::Value = serde_json::from_str(&body)
                .map_err(|e| HandlerError::rejected("invalid_data", format!("stored Patient/{id}: {e}")))?;
            return Ok(self.fhir_patient(conn, ctx, id, &patient, audit).await?.id);
        }
        let uuid = Uuid::parse_str(id).map_err(|_| unknown())?;
        let known: Option<(Uuid,)> = sqlx::query_as("SELECT id FROM patient WHERE id = $1")
            .bind(uuid)
            .fetch_optional(&mut *conn)
            .await
            .map_err(carehub_schema::Error::from)?;
        known.map(|(id,)| id).ok_or_else(unknown)
    }
}

/// A stored FHIR resource's body (the given version, else the current one).
async fn stored(
    conn: &mut PgConnection,
    resource_type: &str,
    id: &str,
    version: Option<i32>,
) -> Result<serde_json::Value, HandlerError> {
    let found = match version {
        Some(v) => fhir_store::version(&mut *conn, resource_type, id, v).await?,
        None => fhir_store::current(&mut *conn, resource_type, id).await?,
    };
    let body = found.and_then(|r| r.body).ok_or_else(|| {
        HandlerError::rejected(
            "unknown_reference",
            format!("{resource_type}/{id} is not in the FHIR store"),
        )
    })?;
    serde_json::from_str(&body)
        .map_err(|e| HandlerError::rejected("invalid_data", format!("{resource_type}/{id}: {e}")))
}

/// Registers the intake pipeline: `[pipelines.intake] topic` into the canonical record.
pub fn register(registry: &mut carehub_connector_kit::Registry, cfg: &IntakeConfig) {
    registry.register(carehub_pipeline::PipelineComponent {
        topic: cfg.topic.clone(),
        group: cfg.group.clone(),
        enabled: cfg.enabled,
        writes: vec![cfg.events_topic.clone()],
        handler: std::sync::Arc::new(IntakePipeline::new(&cfg.events_topic)),
    });
}
