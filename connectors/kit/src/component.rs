//! Components: what `carehub serve` runs. Each connector and pipeline crate
//! offers its components; the binary registers them in one list, and
//! `serve` (start-up, readiness, topic creation) and `dlq replay` iterate
//! that list, so they never name a connector.

use std::future::Future;
use std::pin::Pin;

use async_trait::async_trait;
use carehub_core::Health;
use carehub_kafka::{KafkaConfig, RetryConfig};
use rdkafka::producer::FutureProducer;
use sqlx::PgPool;
use tokio::sync::watch;

/// A task a component runs until shutdown.
pub type Task = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A component's start-up or replay failure, said to the operator.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What a starting component gets from the hub.
#[derive(Clone)]
pub struct Runtime {
    pub pool: PgPool,
    pub producer: FutureProducer,
    pub kafka: KafkaConfig,
    /// `[pipelines.retry]`.
    pub retry: RetryConfig,
    /// Readiness (`/readyz`): a component reports each name of [`Component::health`].
    pub health: Health,
    pub shutdown: watch::Receiver<bool>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("kafka", &self.kafka)
            .finish_non_exhaustive()
    }
}

/// The topics a component uses; all are created at start-up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Topics {
    /// Topics it consumes: their `<topic>.dlq` is created too.
    pub reads: Vec<String>,
    /// Topics it writes (through the outbox).
    pub writes: Vec<String>,
}

/// What `dlq replay` did with a component's dead letter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replayed {
    /// True when the dead letter is dealt with (applied, re-sent, applied before).
    pub done: bool,
    /// One sentence for the operator.
    pub said: String,
}

/// One thing `carehub serve` runs: a listener, a delivery, a pipeline.
#[async_trait]
pub trait Component: Send + Sync {
    /// Its name in logs (`mllp_listener`, `hl7_outbound`, `pipeline:hl7`).
    fn name(&self) -> String;

    /// Whether `serve` starts it (its configuration's `enabled`). Topics and
    /// dead letters of a disabled component are still known.
    fn enabled(&self) -> bool {
        true
    }

    fn topics(&self) -> Topics {
        Topics::default()
    }

    /// Names it reports under in `/readyz`. They are registered before any
    /// component starts, so the hub is not ready until each has reported.
    fn health(&self) -> Vec<String> {
        Vec::new()
    }

    /// Binds and starts; the tasks run until `rt.shutdown`.
    async fn start(&self, rt: &Runtime) -> Result<Vec<Task>, BoxError>;

    /// The `consumer` of the dead letters it owns, if it has any.
    fn dead_letters(&self) -> Option<String> {
        None
    }

    /// Replays one of its dead letters (`carehub dlq replay`).
    async fn replay(&self, pool: &PgPool, kafka: &KafkaConfig, id: i64, actor: &str) -> Result<Replayed, BoxError> {
        let _ = (pool, kafka, actor);
        Err(format!("{} has no dead letters to replay (dead letter {id})", self.name()).into())
    }
}

/// The components of this hub, in start order.
#[derive(Default)]
pub struct Registry {
    components: Vec<Box<dyn Component>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.components.iter().map(|c| c.name()))
            .finish()
    }
}

impl Registry {
    pub fn register(&mut self, component: impl Component + 'static) -> &mut Self {
        self.components.push(Box::new(component));
        self
    }

    pub fn iter(&self) -> impl Iterator<Item = &dyn Component> {
        self.components.iter().map(|c| c.as_ref())
    }

    /// Every topic a component reads or writes, each read topic's `.dlq`
    /// after it, without repeats, in registration order.
    pub fn topics(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let mut add = |t: String| {
            if !out.contains(&t) {
                out.push(t);
            }
        };
        for c in self.iter() {
            let t = c.topics();
            for r in t.reads {
                let dlq = carehub_kafka::dlq_topic(&r);
                add(r);
                add(dlq);
            }
            for w in t.writes {
                add(w);
            }
        }
        out
    }

    /// The component that owns dead letters of `consumer`.
    pub fn owner_of_dead_letters(&self, consumer: &str) -> Option<&dyn Component> {
        self.iter().find(|c| c.dead_letters().as_deref() == Some(consumer))
    }
}
