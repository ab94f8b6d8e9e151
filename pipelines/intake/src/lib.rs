//! The intake pipeline: systems that already speak carehub's canonical model
//! (a lab's master-data feed, a migration tool) send commands on the intake
//! topic; each becomes a canonical change, an audit entry and an outbound
//! event in one transaction.
//!
//! | event type (in)                     | effect                        | event (out, on the events topic)   |
//! |-------------------------------------|-------------------------------|------------------------------------|
//! | `carehub.organization.upsert.v1`    | organization by identifier    | `carehub.organization.upserted.v1` |
//! | `carehub.patient.upsert.v1`         | patient matched by identifier | `carehub.patient.upserted.v1`      |
//!
//! Outbound events carry ids and versions only, never demographics.

use async_trait::async_trait;
use carehub_pipeline::{Context, Handled, Handler, HandlerError};
use carehub_schema::repo::{self, OrganizationData, PatientData, Upserted};
use carehub_schema::{Action, ActorKind, AuditEntry, Envelope, Outbox};
use sqlx::PgConnection;

pub const ORGANIZATION_UPSERT: &str = "carehub.organization.upsert.v1";
pub const PATIENT_UPSERT: &str = "carehub.patient.upsert.v1";
pub const ORGANIZATION_UPSERTED: &str = "carehub.organization.upserted.v1";
pub const PATIENT_UPSERTED: &str = "carehub.patient.upserted.v1";

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

    async fn announce(
        &self,
        conn: &mut PgConnection,
        ctx: &Context,
        event_type: &str,
        entity: &str,
        up: Upserted,
    ) -> Result<AuditEntry, HandlerError> {
        let event = Envelope::new(
            event_type,
            SOURCE,
            serde_json::json!({
                "id": up.id,
                "created": up.created,
                "version": up.version,
                "source_message_id": ctx.message_id,
            }),
        )
        .with_subject(format!("{entity}/{}", up.id));
        Outbox::enqueue(conn, &self.events_topic, &up.id.to_string(), &event).await?;
        let action = if up.created { Action::Create } else { Action::Update };
        Ok(AuditEntry::new(ActorKind::System, "pipeline:intake", action, entity)
            .entity(up.id)
            .message(Some(ctx.message_id))
            .origin(ctx.origin.clone())
            .detail(serde_json::json!({ "version": up.version, "event_id": event.id })))
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
        matches!(event_type, ORGANIZATION_UPSERT | PATIENT_UPSERT)
    }

    async fn handle(&self, conn: &mut PgConnection, ctx: &Context, event: &Envelope) -> Result<Handled, HandlerError> {
        match event.event_type.as_str() {
            ORGANIZATION_UPSERT => {
                let data: OrganizationData = parse(event)?;
                let up = repo::upsert_organization(conn, &data, Some(ctx.message_id)).await?;
                let audit = self
                    .announce(conn, ctx, ORGANIZATION_UPSERTED, "organization", up)
                    .await?;
                Ok(Handled {
                    patient_id: None,
                    audit: vec![audit],
                })
            }
            PATIENT_UPSERT => {
                let data: PatientData = parse(event)?;
                let up = repo::upsert_patient(conn, &data, Some(ctx.message_id))
                    .await?
                    .map_err(|r| HandlerError::rejected(r.error_code(), r.to_string()))?;
                let audit = self.announce(conn, ctx, PATIENT_UPSERTED, "patient", up).await?;
                Ok(Handled {
                    patient_id: Some(up.id),
                    audit: vec![audit],
                })
            }
            other => Err(HandlerError::rejected(
                "unknown_type",
                format!("intake does not handle {other:?}"),
            )),
        }
    }
}
