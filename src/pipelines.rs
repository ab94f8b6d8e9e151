//! The pipelines this binary runs: which topic feeds which engine.

use std::sync::Arc;

use carehub_pipeline::Engine;
use carehub_pipeline_hl7::Hl7Pipeline;
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
    let hl7 = &cfg.pipelines.hl7;
    vec![
        PipelineSpec {
            topic: intake.topic.clone(),
            group: intake.group.clone(),
            enabled: intake.enabled,
            engine: Engine::new(pool.clone(), Arc::new(IntakePipeline::new(&intake.events_topic))),
        },
        PipelineSpec {
            topic: hl7.topic.clone(),
            group: hl7.group.clone(),
            enabled: hl7.enabled,
            engine: Engine::new(pool.clone(), Arc::new(Hl7Pipeline::new(&hl7.events_topic))),
        },
    ]
}

/// Every topic carehub reads or writes, created at start-up.
pub fn topics(cfg: &Config) -> Vec<String> {
    let mut topics = Vec::new();
    for (topic, events) in [
        (&cfg.pipelines.intake.topic, &cfg.pipelines.intake.events_topic),
        (&cfg.pipelines.hl7.topic, &cfg.pipelines.hl7.events_topic),
    ] {
        for t in [topic.clone(), carehub_kafka::dlq_topic(topic), events.clone()] {
            if !topics.contains(&t) {
                topics.push(t);
            }
        }
    }
    for t in [
        cfg.pipelines.hl7.outbound_topic.clone(),
        carehub_kafka::dlq_topic(&cfg.pipelines.hl7.outbound_topic),
    ] {
        if !topics.contains(&t) {
            topics.push(t);
        }
    }
    topics
}
