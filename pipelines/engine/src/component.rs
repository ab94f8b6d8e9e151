//! A pipeline as a connector-kit [`Component`]: its topic read by its
//! consumer group through a [`ConsumerRunner`], its dead letters replayed
//! through its [`Engine`].

use std::sync::Arc;

use async_trait::async_trait;
use carehub_connector_kit::{BoxError, Component, Replayed, Runtime, Task, Topics};
use carehub_kafka::KafkaConfig;
use sqlx::PgPool;

use crate::{ConsumerRunner, Engine, Handler, ReplayOutcome};

/// One pipeline wired to its source topic and consumer group.
#[derive(Clone)]
pub struct PipelineComponent {
    pub topic: String,
    pub group: String,
    pub enabled: bool,
    /// The topics its handler writes to (through the outbox).
    pub writes: Vec<String>,
    pub handler: Arc<dyn Handler>,
}

impl std::fmt::Debug for PipelineComponent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipelineComponent")
            .field("pipeline", &self.handler.name())
            .field("topic", &self.topic)
            .field("group", &self.group)
            .finish()
    }
}

impl PipelineComponent {
    /// Its engine on `pool`.
    pub fn engine(&self, pool: &PgPool) -> Engine {
        Engine::new(pool.clone(), self.handler.clone())
    }
}

#[async_trait]
impl Component for PipelineComponent {
    fn name(&self) -> String {
        format!("pipeline:{}", self.handler.name())
    }

    fn enabled(&self) -> bool {
        self.enabled
    }

    fn topics(&self) -> Topics {
        Topics {
            reads: vec![self.topic.clone()],
            writes: self.writes.clone(),
        }
    }

    async fn start(&self, rt: &Runtime) -> Result<Vec<Task>, BoxError> {
        let runner = ConsumerRunner::new(
            &rt.kafka,
            &self.group,
            &self.topic,
            self.engine(&rt.pool),
            rt.producer.clone(),
        )?
        .with_retry(rt.retry.clone(), rt.health.clone());
        Ok(vec![Box::pin(runner.run(rt.shutdown.clone()))])
    }

    fn dead_letters(&self) -> Option<String> {
        Some(self.handler.name().to_owned())
    }

    async fn replay(&self, pool: &PgPool, _kafka: &KafkaConfig, id: i64, actor: &str) -> Result<Replayed, BoxError> {
        let (done, said) = match self.engine(pool).replay(id, actor).await? {
            ReplayOutcome::Applied { message_id } => (
                true,
                format!("dead letter {id} replayed: applied (message {message_id})"),
            ),
            ReplayOutcome::AlreadyApplied => (
                true,
                format!("dead letter {id}: the event had already been applied; marked replayed"),
            ),
            ReplayOutcome::StillFailing { code, reason } => {
                (false, format!("dead letter {id} still fails ({code}): {reason}"))
            }
            ReplayOutcome::NotOpen { status } => {
                (false, format!("dead letter {id} is {status}, not open: nothing to do"))
            }
        };
        Ok(Replayed { done, said })
    }
}
