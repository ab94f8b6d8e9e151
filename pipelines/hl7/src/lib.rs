//! The HL7 v2 pipeline: messages the MLLP listener received (topic
//! `carehub.hl7v2.inbound.v1`, event type `carehub.hl7v2.received.v1`) become
//! canonical rows, audit entries and outbound events, in one transaction.
//!
//! The message is filed in the message store as the HL7 bytes it arrived as,
//! under the source key `hl7:<MSH-4>:<MSH-3>:<MSH-10>`: a sender's resend of
//! the same message is found there and has no second effect.
//!
//! [`map`] says where each field goes; [`validate`] is the same mapping, run
//! by the listener before it acknowledges, so content errors are answered AE
//! at once. What needs the database (an order change for an unknown order, a
//! merge of an unknown patient, a transition the order's state forbids) is
//! found here, after the ACK, and dead-lettered with the reason.

pub mod app_ack;
pub mod config;
pub mod fhir_load;
pub mod judge;
pub mod map;
mod orders;
pub mod repair;

use async_trait::async_trait;
use carehub_core::internal_events::Hl7SegmentsUnmapped;
use carehub_hl7::codec::Message;
use carehub_pipeline::{Context, Handled, Handler, HandlerError, StoredRef};
use carehub_schema::contracts::{
    APPOINTMENT_UPSERTED, ENCOUNTER_UPSERTED, HL7_RECEIVED, INVOICE_UPSERTED, OBSERVATION_UPSERTED, ORDER_UPSERTED,
    PATIENT_MERGED, PATIENT_UPSERTED, PatientMerged, Received, RecordChanged,
};
use carehub_schema::patient_batch::{self, BatchRefusal};
use carehub_schema::records;
use carehub_schema::repo::{self, PatientData, Upserted};
use carehub_schema::{Action, ActorKind, AuditEntry, Envelope};
use serde::Deserialize;
use sqlx::PgConnection;

pub use config::Hl7PipelineConfig;
pub use judge::MappingJudge;
pub use map::{Command, FACILITY_SYSTEM, MAX_CONTROL_ID, Mapped, MappingError, identity_error, map, nul_error};

pub(crate) const SOURCE: &str = "/carehub/pipelines/hl7";
const ACTOR: &str = "pipeline:hl7";

pub use carehub_hl7::codec::identity::source_key;

/// The listener's check before it acknowledges: the mapping, without the database.
pub fn validate(msg: &Message<'_>) -> Result<(), MappingError> {
    map(msg).map(|_| ())
}

#[derive(Debug, Clone)]
pub struct Hl7Pipeline {
    /// Topic the outbound events go to (through the outbox).
    pub events_topic: String,
    /// Topic of outbound HL7 messages (application ACKs go there).
    pub outbound_topic: String,
    /// Where senders in enhanced mode get their application ACKs.
    pub ack_routes: app_ack::AckRoutes,
    /// Also load each message, converted to FHIR R4, into the FHIR store ([`fhir_load`]).
    pub load_fhir: bool,
}

impl Hl7Pipeline {
    pub fn new(events_topic: impl Into<String>) -> Self {
        Hl7Pipeline {
            events_topic: events_topic.into(),
            outbound_topic: String::new(),
            ack_routes: Default::default(),
            load_fhir: false,
        }
    }

    /// Loads each message, converted to FHIR R4, into the FHIR store too.
    pub fn with_fhir_load(mut self, load: bool) -> Self {
        self.load_fhir = load;
        self
    }

    /// Sends application ACKs (enhanced mode) on `outbound_topic` to the
    /// destinations `routes` names per sending facility.
    pub fn with_application_acks(mut self, outbound_topic: impl Into<String>, routes: app_ack::AckRoutes) -> Self {
        self.outbound_topic = outbound_topic.into();
        self.ack_routes = routes;
        self
    }

    /// Writes the application ACK `msg` asked for, if any, through the outbox.
    fn acknowledge(
        &self,
        ctx: &Context,
        msg: &Message<'_>,
        outcome: carehub_hl7::codec::Outcome,
        error: Option<&carehub_hl7::codec::AckError>,
    ) {
        if let Some((destination, env)) = app_ack::application_ack(msg, outcome, error, &self.ack_routes) {
            ctx.publish(&self.outbound_topic, &destination, env);
        }
    }
}

/// The bytes of the stored message `event` refers to (the engine loaded them).
fn stored_bytes<'c>(ctx: &'c Context, event: &Envelope) -> Result<&'c [u8], HandlerError> {
    Received::deserialize(&event.data)
        .map_err(|e| HandlerError::rejected("invalid_envelope", format!("{HL7_RECEIVED}: {e}")))?;
    ctx.raw
        .as_deref()
        .ok_or_else(|| HandlerError::rejected("unknown_reference", "the stored message's bytes are missing"))
}

/// Collects audit entries and outbound events of one message.
struct Effects<'c> {
    ctx: &'c Context,
    topic: &'c str,
    audit: Vec<AuditEntry>,
    /// The message's patient, when the batch already wrote it set-wise.
    resolved: Option<Upserted>,
}

impl Effects<'_> {
    fn record(&mut self, entity: &str, up: Upserted, event_type: &str, extra: serde_json::Value) {
        let event = RecordChanged::new(&up, self.ctx.message_id).into_envelope(event_type, SOURCE, entity, extra);
        let action = if up.created { Action::Create } else { Action::Update };
        self.audit.push(
            AuditEntry::new(ActorKind::System, ACTOR, action, entity)
                .entity(up.id)
                .message(Some(self.ctx.message_id))
                .origin(self.ctx.origin.clone())
                .detail(serde_json::json!({ "event_id": event.id })),
        );
        self.ctx.publish(self.topic, &up.id.to_string(), event);
    }
}

async fn upsert_patient(
    conn: &mut PgConnection,
    fx: &mut Effects<'_>,
    data: &PatientData,
) -> Result<Upserted, HandlerError> {
    let up = match fx.resolved.take() {
        Some(up) => up,
        None => repo::upsert_patient(conn, data, Some(fx.ctx.message_id))
            .await?
            .map_err(|r| HandlerError::rejected(r.error_code(), r.to_string()))?,
    };
    fx.record("patient", up, PATIENT_UPSERTED, serde_json::json!({}));
    Ok(up)
}

/// The orders or results the run wrote for the message, else the message's
/// own written now (a run of one).
async fn written_alone(
    conn: &mut PgConnection,
    written: Option<orders::Written>,
    mapped: &Mapped,
    patient: Upserted,
    ctx: &Context,
) -> Result<orders::Written, HandlerError> {
    Ok(match written {
        Some(w) => w,
        None => orders::run_orders(conn, &[mapped], &[patient], &[ctx.message_id])
            .await?
            .pop()
            .unwrap_or_default(),
    })
}

/// What the set pass already wrote for one message of the batch.
#[derive(Debug, Default)]
struct Resolved {
    patient: Option<Upserted>,
    encounter: Option<Upserted>,
    /// Its orders, results or appointment's order, when the run wrote them.
    written: Option<orders::Written>,
}

/// The encounters of a run of messages whose patients are written
/// (`ups`, in the run's order), in one statement; `None` for a message with
/// none. A run that names one visit twice leaves them to each message (one
/// statement cannot change a row twice, and the second must see the first).
async fn run_encounters(
    conn: &mut PgConnection,
    mapped: &[Mapped],
    ups: &[Upserted],
    records: &[(Context, &Envelope)],
) -> Result<Vec<Option<Upserted>>, HandlerError> {
    let mut items = Vec::new();
    let mut at = Vec::new();
    let mut visits = std::collections::HashSet::new();
    for (i, m) in mapped.iter().enumerate() {
        if let (Command::UpsertPatient { encounter: Some(e), .. }, Some(p)) = (&m.command, ups.get(i)) {
            if !visits.insert((&e.visit.system, &e.visit.value)) {
                return Ok(vec![None; mapped.len()]);
            }
            items.push((p.id, e, Some(records[i].0.message_id)));
            at.push(i);
        }
    }
    let mut out = vec![None; mapped.len()];
    if items.is_empty() {
        return Ok(out);
    }
    for (i, up) in at.into_iter().zip(records::upsert_encounters(conn, &items).await?) {
        out[i] = Some(up);
    }
    Ok(out)
}

#[async_trait]
impl Handler for Hl7Pipeline {
    fn name(&self) -> &str {
        "hl7"
    }

    fn accepts(&self, event_type: &str) -> bool {
        event_type == HL7_RECEIVED
    }

    fn stored(&self, event: &Envelope) -> Option<StoredRef> {
        let rec = Received::deserialize(&event.data).ok()?;
        Some(StoredRef {
            message_id: rec.message_id,
            connector: carehub_hl7::CONNECTOR,
            origin: Some(format!("mllp:{}", rec.peer)),
        })
    }

    async fn handle(&self, conn: &mut PgConnection, ctx: &Context, event: &Envelope) -> Result<Handled, HandlerError> {
        let text = decoded(ctx, event)?;
        let msg = parsed(&text)?;
        let mapped = map(&msg).map_err(|e| HandlerError::rejected(e.dead_letter_code(), e.reason))?;
        self.apply(conn, ctx, &msg, &mapped, Resolved::default()).await
    }

    /// The batch's messages parsed and mapped first; each run of them
    /// between merges has its patients written set-wise
    /// ([`patient_batch::upsert_patients`]), then each message's other rows
    /// in order. A merge (A40) changes who holds which identifier: it is
    /// applied on its own, between the runs.
    async fn handle_batch(
        &self,
        conn: &mut PgConnection,
        records: &[(Context, &Envelope)],
    ) -> Result<Vec<Handled>, HandlerError> {
        let texts = records
            .iter()
            .map(|(ctx, event)| decoded(ctx, event))
            .collect::<Result<Vec<_>, _>>()?;
        let msgs = texts.iter().map(|t| parsed(t)).collect::<Result<Vec<_>, _>>()?;
        let mapped = msgs
            .iter()
            .map(|m| map(m).map_err(|e| HandlerError::rejected(e.dead_letter_code(), e.reason)))
            .collect::<Result<Vec<_>, _>>()?;
        let merges = |i: &usize| matches!(mapped[*i].command, Command::MergePatients { .. });
        let mut out = Vec::with_capacity(records.len());
        let mut start = 0;
        while start < records.len() {
            if merges(&start) {
                out.push(
                    self.apply(
                        conn,
                        &records[start].0,
                        &msgs[start],
                        &mapped[start],
                        Resolved::default(),
                    )
                    .await?,
                );
                start += 1;
                continue;
            }
            let end = (start..records.len()).find(merges).unwrap_or(records.len());
            let items: Vec<(&PatientData, Option<uuid::Uuid>)> = (start..end)
                .filter_map(|i| mapped[i].command.patient().map(|p| (p, Some(records[i].0.message_id))))
                .collect();
            let ups = patient_batch::upsert_patients(conn, &items)
                .await?
                .map_err(|r| match r {
                    BatchRefusal::Refused { reason, .. } => {
                        HandlerError::rejected(reason.error_code(), reason.to_string())
                    }
                    // Applied again record by record, where the race is retried.
                    BatchRefusal::Raced => HandlerError::rejected("invalid_data", "patient identifiers raced"),
                })?;
            let encounters = run_encounters(conn, &mapped[start..end], &ups, &records[start..end]).await?;
            let run: Vec<&Mapped> = mapped[start..end].iter().collect();
            let ids: Vec<uuid::Uuid> = records[start..end].iter().map(|(ctx, _)| ctx.message_id).collect();
            let written = orders::run_orders(conn, &run, &ups, &ids).await?;
            for (((i, up), encounter), written) in (start..end).zip(ups).zip(encounters).zip(written) {
                let resolved = Resolved {
                    patient: Some(up),
                    encounter,
                    written: Some(written),
                };
                out.push(self.apply(conn, &records[i].0, &msgs[i], &mapped[i], resolved).await?);
            }
            start = end;
        }
        Ok(out)
    }

    /// A message dead-lettered here was answered CA (enhanced mode) or AA
    /// (original mode) by the listener; in enhanced mode its sender now gets
    /// the application ACK: AE, or AR for a type this hub does not process.
    async fn rejected(
        &self,
        _conn: &mut PgConnection,
        ctx: &Context,
        event: &Envelope,
        code: &str,
        reason: &str,
    ) -> Result<(), HandlerError> {
        let Ok(raw) = stored_bytes(ctx, event) else {
            return Ok(());
        };
        let Ok((text, _)) = carehub_hl7::codec::decode_text(raw) else {
            return Ok(());
        };
        let Ok(msg) = Message::parse(&text) else { return Ok(()) };
        let (outcome, error) = match validate(&msg) {
            Err(e) if e.reject => (carehub_hl7::codec::Outcome::Reject, e.ack_error()),
            Err(e) => (carehub_hl7::codec::Outcome::Error, e.ack_error()),
            // Refused for what the database holds (unknown order, forbidden
            // transition): 204 unknown key identifier, else 207 application error.
            Ok(()) => (
                carehub_hl7::codec::Outcome::Error,
                carehub_hl7::codec::AckError::new(
                    if code == "unknown_reference" { 204 } else { 207 },
                    reason.to_owned(),
                ),
            ),
        };
        self.acknowledge(ctx, &msg, outcome, Some(&error));
        Ok(())
    }
}

impl Hl7Pipeline {
    /// Applies one mapped message: its canonical rows, events, audit entries
    /// and application ACK. `resolved`: its rows the batch already wrote.
    async fn apply(
        &self,
        conn: &mut PgConnection,
        ctx: &Context,
        msg: &Message<'_>,
        mapped: &Mapped,
        resolved: Resolved,
    ) -> Result<Handled, HandlerError> {
        let label = msg.metric_label();
        for (segment, count) in &mapped.unmapped {
            Hl7SegmentsUnmapped {
                message_type: &label,
                segment,
                count: *count as u64,
            }
            .emit();
        }
        let mut fx = Effects {
            ctx,
            topic: &self.events_topic,
            audit: Vec::new(),
            resolved: resolved.patient,
        };
        let msg_id = Some(ctx.message_id);
        let mut canonical = fhir_load::CanonicalIds::default();
        let patient_id = match &mapped.command {
            Command::UpsertPatient { patient, encounter } => {
                let p = upsert_patient(conn, &mut fx, patient).await?;
                if let Some(e) = encounter {
                    let up = match resolved.encounter {
                        Some(up) => up,
                        None => records::upsert_encounter(conn, p.id, e, msg_id).await?,
                    };
                    fx.record(
                        "encounter",
                        up,
                        ENCOUNTER_UPSERTED,
                        serde_json::json!({ "status": e.status }),
                    );
                }
                p.id
            }
            Command::MergePatients { survivor, prior } => {
                let s = upsert_patient(conn, &mut fx, survivor).await?;
                let merged = records::merge_patient(conn, s.id, prior, msg_id)
                    .await?
                    .ok_or_else(|| {
                        HandlerError::rejected(
                            "unknown_reference",
                            "A40: no patient holds the MRG-1 identifiers to merge",
                        )
                    })?;
                let event = Envelope::new(
                    PATIENT_MERGED,
                    SOURCE,
                    serde_json::json!(PatientMerged {
                        id: s.id,
                        merged_id: merged,
                        source_message_id: ctx.message_id,
                    }),
                )
                .with_subject(format!("patient/{}", s.id));
                fx.audit.push(
                    AuditEntry::new(ActorKind::System, ACTOR, Action::Update, "patient")
                        .entity(merged)
                        .message(msg_id)
                        .origin(ctx.origin.clone())
                        .detail(serde_json::json!({ "merged_into": s.id, "event_id": event.id })),
                );
                ctx.publish(&self.events_topic, &s.id.to_string(), event);
                s.id
            }
            Command::Orders { patient, orders, .. } => {
                let p = upsert_patient(conn, &mut fx, patient).await?;
                let written = written_alone(conn, resolved.written, mapped, p, ctx).await?;
                let self::orders::Written::Orders {
                    clinic,
                    orderers,
                    applied,
                } = written
                else {
                    return Err(HandlerError::rejected(
                        "invalid_data",
                        "the message's orders were not applied",
                    ));
                };
                if let Some(up) = clinic.filter(|c| c.created) {
                    fx.audit.push(
                        AuditEntry::new(ActorKind::System, ACTOR, Action::Create, "organization")
                            .entity(up.id)
                            .message(msg_id)
                            .origin(ctx.origin.clone()),
                    );
                }
                for ((o, orderer), applied) in orders.iter().zip(orderers).zip(applied) {
                    if let Some(up) = orderer {
                        fx.audit.push(
                            AuditEntry::new(
                                ActorKind::System,
                                ACTOR,
                                if up.created { Action::Create } else { Action::Update },
                                "practitioner",
                            )
                            .entity(up.id)
                            .message(msg_id)
                            .origin(ctx.origin.clone()),
                        );
                    }
                    let numbers = std::iter::once(&o.placer).chain(&o.filler).map(|n| n.value.clone());
                    canonical.orders.push((numbers.collect(), applied.upserted().id));
                    fx.record(
                        "service_order",
                        applied.upserted(),
                        ORDER_UPSERTED,
                        applied.event_data(),
                    );
                }
                p.id
            }
            Command::Results { patient, results } => {
                let p = upsert_patient(conn, &mut fx, patient).await?;
                let written = written_alone(conn, resolved.written, mapped, p, ctx).await?;
                let (order_ids, rows) = match written {
                    self::orders::Written::Results { order_ids, rows } => (order_ids, rows),
                    _ => (vec![None; results.len()], None),
                };
                let ups = match rows {
                    Some(rows) => rows,
                    // A result key twice in the message: one by one, the second sees the first.
                    None => {
                        let mut ups = Vec::with_capacity(results.len());
                        for (r, order_id) in results.iter().zip(&order_ids) {
                            ups.push(records::upsert_observation(conn, p.id, *order_id, r, msg_id).await?);
                        }
                        ups
                    }
                };
                for ((r, order_id), up) in results.iter().zip(order_ids).zip(ups) {
                    canonical.observations.push((r.code.clone(), up.id));
                    if let Some(o) = order_id {
                        let numbers = [&r.placer, &r.filler].into_iter().flatten().map(|n| n.value.clone());
                        canonical.orders.push((numbers.collect(), o));
                    }
                    fx.record(
                        "observation",
                        up,
                        OBSERVATION_UPSERTED,
                        serde_json::json!({ "order_id": order_id, "status": r.status }),
                    );
                }
                p.id
            }
            Command::Appointment { patient, appointment } => {
                let p = upsert_patient(conn, &mut fx, patient).await?;
                let order_id = match (resolved.written, &appointment.placer_order) {
                    (Some(self::orders::Written::Appointment { order_id }), _) => order_id,
                    (_, Some(n)) => records::find_order(conn, n).await?,
                    (_, None) => None,
                };
                let up = records::upsert_appointment(conn, p.id, order_id, appointment, msg_id).await?;
                fx.record(
                    "appointment",
                    up,
                    APPOINTMENT_UPSERTED,
                    serde_json::json!({ "status": appointment.status }),
                );
                p.id
            }
            Command::Charges { patient, invoice } => {
                let p = upsert_patient(conn, &mut fx, patient).await?;
                let (up, lines) = records::add_charges(conn, p.id, invoice, msg_id).await?;
                fx.record(
                    "invoice",
                    up,
                    INVOICE_UPSERTED,
                    serde_json::json!({ "lines_added": lines }),
                );
                p.id
            }
        };
        if self.load_fhir {
            canonical.patient = Some(patient_id);
            let written = fhir_load::load(conn, ctx, ACTOR, msg, &canonical).await?;
            fx.audit.extend(written);
        }
        self.acknowledge(ctx, msg, carehub_hl7::codec::Outcome::Accept, None);
        Ok(Handled {
            patient_id: Some(patient_id),
            audit: fx.audit,
        })
    }
}

/// The text of the stored message `event` refers to.
fn decoded(ctx: &Context, event: &Envelope) -> Result<String, HandlerError> {
    let raw = stored_bytes(ctx, event)?;
    let (text, _) =
        carehub_hl7::codec::decode_text(raw).map_err(|e| HandlerError::rejected("invalid_data", e.to_string()))?;
    Ok(text.into_owned())
}

fn parsed(text: &str) -> Result<Message<'_>, HandlerError> {
    Message::parse(text).map_err(|e| HandlerError::rejected("invalid_data", e.to_string()))
}

/// Registers the HL7 pipeline: `[pipelines.hl7] topic` into the canonical record.
pub fn register(registry: &mut carehub_connector_kit::Registry, cfg: &Hl7PipelineConfig) {
    let handler = Hl7Pipeline::new(&cfg.events_topic)
        .with_application_acks(&cfg.outbound_topic, cfg.ack_destinations.clone())
        .with_fhir_load(cfg.load_fhir);
    registry.register(carehub_pipeline::PipelineComponent {
        topic: cfg.topic.clone(),
        group: cfg.group.clone(),
        enabled: cfg.enabled,
        writes: vec![cfg.events_topic.clone(), cfg.outbound_topic.clone()],
        handler: std::sync::Arc::new(handler),
    });
}
