//! The pipelines this binary runs: which topic feeds which engine.

use std::sync::Arc;

use carehub_pipeline::Engine;
use carehub_pipeline_intake::IntakePipeline;
use sqlx::PgPool;

use crate::config::Config;

/// A pipeline wired to its source topic and consumer group.
#[derive(Debug, Clone)]
pub struct PipelineSpec {
    pub topic: String,
    pub group: String,
    pub enabled: bool,
    pub engine: Engine,
}

pub fn all(cfg: &Config, pool: &PgPool) -> Vec<PipelineSpec> {
    let intake = &cfg.pipelines.intake;
    vec![PipelineSpec {
        topic: intake.topic.clone(),
        group: intake.group.clone(),
        enabled: intake.enabled,
        engine: Engine::new(pool.clone(), Arc::new(IntakePipeline::new(&intake.events_topic))),
    }]
}

/// Every topic carehub reads or writes, created at start-up.
pub fn topics(cfg: &Config) -> Vec<String> {
    let intake = &cfg.pipelines.intake;
    vec![
        intake.topic.clone(),
        carehub_kafka::dlq_topic(&intake.topic),
        intake.events_topic.clone(),
    ]
}
