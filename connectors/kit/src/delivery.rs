//! Delivering outbound records to a third party (a clinic's MLLP endpoint,
//! an EHR's FHIR server): one record at a time, in order, the offset stored
//! only after the receiver accepted or refused it.
//!
//! A crash re-sends at most the record in hand. A record delivered before
//! (its delivery committed, its offset not yet) is recognised by its event id
//! and not sent again. A refusal (or an unreadable record) becomes a dead
//! letter with its reason and goes to `<topic>.dlq`; `carehub dlq replay`
//! puts it back on the topic. Every delivery is audited (`send`) and
//! emits `MessageSent`; every refusal `DeadLettered`.

use std::time::Duration;

use async_trait::async_trait;
use carehub_core::internal_events::{ComponentError, DeadLettered, DuplicateSkipped, MessageSent, Stage};
use carehub_kafka::{GroupConsumer, KafkaConfig, KafkaRecord, store_next_offset};
use carehub_schema::{Action, ActorKind, AuditEntry, AuditLog, DeadLetters, Envelope, NewDeadLetter, consumed};
use rdkafka::producer::{FutureProducer, FutureRecord};
use sqlx::PgPool;
use tokio::sync::watch;

use crate::{Error, Result};

/// What became of one record.
#[derive(Debug)]
pub enum Delivery {
    /// The receiver took it: audited as a `send` of `entity_type`/`entity_id`.
    Accepted {
        entity_type: &'static str,
        entity_id: String,
        origin: String,
        detail: serde_json::Value,
    },
    /// Refused, or undeliverable as it is: a dead letter.
    Refused { code: &'static str, reason: String },
    /// Nobody to deliver it to (no receiver configured for it): acknowledged.
    Nothing,
}

/// One kind of receiver.
#[async_trait]
pub trait Deliver: Send {
    /// The consumer's name: dead letters, deduplication, the audit actor.
    fn name(&self) -> &'static str;

    /// Delivers `env` until the receiver accepts or refuses it (retrying
    /// what may pass later). `None`: shutdown came first.
    async fn deliver(&mut self, env: Envelope, shutdown: &mut watch::Receiver<bool>) -> Option<Delivery>;
}

/// Feeds one consumer group into one [`Deliver`]: one record at a time, in
/// the topic's order per partition (a key's records stay in order).
pub struct DeliveryRunner<D> {
    consumer: GroupConsumer,
    producer: FutureProducer,
    pool: PgPool,
    topic: String,
    deliverer: D,
}

impl<D: Deliver> std::fmt::Debug for DeliveryRunner<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeliveryRunner")
            .field("consumer", &self.deliverer.name())
            .field("topic", &self.topic)
            .finish()
    }
}

impl<D: Deliver> DeliveryRunner<D> {
    /// Joins `group` on `topic`; `producer` forwards dead letters to `<topic>.dlq`.
    pub fn new(
        kafka: &KafkaConfig,
        group: &str,
        topic: &str,
        pool: PgPool,
        producer: FutureProducer,
        deliverer: D,
    ) -> Result<Self> {
        Ok(DeliveryRunner {
            consumer: carehub_kafka::group_consumer(kafka, group, topic, Some(pool.clone()))?,
            producer,
            pool,
            topic: topic.to_owned(),
            deliverer,
        })
    }

    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let name = self.deliverer.name();
        tracing::info!(consumer = name, topic = %self.topic, "outbound delivery started");
        loop {
            let msg = tokio::select! {
                m = self.consumer.recv() => m,
                _ = shutdown.changed() => return,
            };
            let msg = match msg {
                Ok(m) => KafkaRecord::from(m.detach()),
                Err(e) => {
                    ComponentError {
                        component: name,
                        stage: Stage::Receiving,
                        error_code: "receive_failed",
                        error: &e,
                    }
                    .emit();
                    if carehub_kafka::wait(&mut shutdown, Duration::from_secs(1)).await {
                        return;
                    }
                    continue;
                }
            };
            let payload = msg.payload().to_vec();
            let mut event_id = None;
            let mut event_type = None;
            let delivery = match Envelope::from_slice(&payload) {
                Err(e) => Delivery::Refused {
                    code: "invalid_envelope",
                    reason: e.to_string(),
                },
                Ok(env) => {
                    // Delivered before (the offset was not committed when the
                    // hub stopped): the receiver has it, do not send it twice.
                    if matches!(consumed::is_claimed(&self.pool, name, &env.id).await, Ok(true)) {
                        DuplicateSkipped {
                            connector: name,
                            event_id: &env.id,
                        }
                        .emit();
                        self.store_offset(&msg);
                        continue;
                    }
                    event_id = Some(env.id.clone());
                    event_type = Some(env.event_type.clone());
                    match self.deliverer.deliver(env, &mut shutdown).await {
                        Some(d) => d,
                        None => return, // shutting down with the record in hand: not acknowledged
                    }
                }
            };
            // The outcome is recorded before the offset is stored; a failure
            // here leaves the record to be delivered again.
            loop {
                match self.record(&msg, &payload, event_id.as_deref(), &delivery).await {
                    Ok(()) => break,
                    Err(e) => {
                        ComponentError {
                            component: name,
                            stage: Stage::Processing,
                            error_code: "store_unavailable",
                            error: &e,
                        }
                        .emit();
                        if carehub_kafka::wait(&mut shutdown, Duration::from_secs(2)).await {
                            return;
                        }
                    }
                }
            }
            if let (Delivery::Accepted { .. }, Some(ty)) = (&delivery, event_type.as_deref()) {
                MessageSent {
                    connector: name,
                    message_type: ty,
                    count: 1,
                }
                .emit();
            }
            self.store_offset(&msg);
        }
    }

    /// Marks `msg` done: its offset is committed with the next auto-commit.
    fn store_offset(&self, msg: &KafkaRecord) {
        if let Err(e) = store_next_offset(&self.consumer, msg) {
            ComponentError {
                component: self.deliverer.name(),
                stage: Stage::Processing,
                error_code: "offset_store_failed",
                error: &e,
            }
            .emit();
        }
    }

    /// Audits a delivery (remembering its event id), or stores a refusal as
    /// a dead letter and forwards it to `<topic>.dlq`.
    async fn record(
        &self,
        msg: &KafkaRecord,
        payload: &[u8],
        event_id: Option<&str>,
        delivery: &Delivery,
    ) -> Result<()> {
        let name = self.deliverer.name();
        if matches!(delivery, Delivery::Nothing) {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        match delivery {
            Delivery::Nothing => {}
            Delivery::Accepted {
                entity_type,
                entity_id,
                origin,
                detail,
            } => {
                if let Some(id) = event_id {
                    consumed::claim(&mut tx, name, id).await?;
                }
                let mut detail = detail.clone();
                if let Some(d) = detail.as_object_mut() {
                    d.insert("offset".into(), msg.offset().into());
                }
                AuditLog::append(
                    &mut tx,
                    &[AuditEntry::new(ActorKind::Connector, name, Action::Send, *entity_type)
                        .entity(entity_id)
                        .origin(origin.clone())
                        .detail(detail)],
                )
                .await?;
                tx.commit().await?;
            }
            Delivery::Refused { code, reason } => {
                let id = DeadLetters::insert(
                    &mut tx,
                    &NewDeadLetter {
                        consumer: name,
                        topic: msg.topic(),
                        partition: Some(msg.partition()),
                        offset: Some(msg.offset()),
                        key: msg.key(),
                        payload,
                        event_id,
                        message_id: None,
                        error_code: code,
                        reason,
                    },
                )
                .await?;
                tx.commit().await?;
                DeadLettered {
                    pipeline: name,
                    error_code: code,
                    dead_letter_id: id,
                }
                .emit();
                carehub_kafka::forward_dead_letter(&self.producer, msg.topic(), msg.key(), payload, id, code, reason)
                    .await?;
            }
        }
        Ok(())
    }
}

/// Replays an outbound dead letter: its record goes back on the topic it
/// came from, and the dead letter is marked replayed (audited).
pub async fn replay(pool: &PgPool, producer: &FutureProducer, id: i64, actor: &str) -> Result<()> {
    let mut tx = pool.begin().await?;
    let dl = DeadLetters::lock(&mut tx, id).await?;
    if dl.status != "open" {
        return Err(Error::NotOpen { id, status: dl.status });
    }
    let mut record = FutureRecord::to(&dl.topic).payload(&dl.payload);
    if let Some(key) = dl.key.as_deref() {
        record = record.key(key);
    }
    producer
        .send(record, Duration::from_secs(30))
        .await
        .map_err(|(e, _)| carehub_kafka::Error::Kafka(e))?;
    DeadLetters::mark_replayed(&mut tx, id).await?;
    AuditLog::append(
        &mut tx,
        &[AuditEntry::new(ActorKind::User, actor, Action::Replay, "dead_letter")
            .entity(id)
            .origin(format!("kafka:{}", dl.topic))],
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

#[async_trait]
impl Deliver for Box<dyn Deliver + Sync> {
    fn name(&self) -> &'static str {
        self.as_ref().name()
    }

    async fn deliver(&mut self, env: Envelope, shutdown: &mut watch::Receiver<bool>) -> Option<Delivery> {
        self.as_mut().deliver(env, shutdown).await
    }
}

/// Makes a component's receiver when it starts.
pub type MakeDeliverer = Box<dyn Fn() -> Result<Box<dyn Deliver + Sync>, crate::BoxError> + Send + Sync>;

/// A delivery as a [`Component`](crate::Component): `topic` read by
/// `group`, each record handed to the receiver `make` builds.
pub struct DeliveryComponent {
    /// The receiver's name: its dead letters' consumer, the audit actor.
    pub consumer: &'static str,
    pub topic: String,
    pub group: String,
    pub enabled: bool,
    pub make: MakeDeliverer,
}

impl std::fmt::Debug for DeliveryComponent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeliveryComponent")
            .field("consumer", &self.consumer)
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl crate::Component for DeliveryComponent {
    fn name(&self) -> String {
        self.consumer.to_owned()
    }

    fn enabled(&self) -> bool {
        self.enabled
    }

    fn topics(&self) -> crate::Topics {
        crate::Topics {
            reads: vec![self.topic.clone()],
            writes: Vec::new(),
        }
    }

    async fn start(&self, rt: &crate::Runtime) -> Result<Vec<crate::Task>, crate::BoxError> {
        let deliverer = (self.make)()?;
        let runner = DeliveryRunner::new(
            &rt.kafka,
            &self.group,
            &self.topic,
            rt.pool.clone(),
            rt.producer.clone(),
            deliverer,
        )?;
        Ok(vec![Box::pin(runner.run(rt.shutdown.clone()))])
    }

    fn dead_letters(&self) -> Option<String> {
        Some(self.consumer.to_owned())
    }

    async fn replay(
        &self,
        pool: &PgPool,
        kafka: &KafkaConfig,
        id: i64,
        actor: &str,
    ) -> Result<crate::Replayed, crate::BoxError> {
        let producer = carehub_kafka::idempotent_producer(kafka)?;
        replay(pool, &producer, id, actor).await?;
        Ok(crate::Replayed {
            done: true,
            said: format!("dead letter {id} replayed: its message is back on the outbound topic for delivery"),
        })
    }
}
