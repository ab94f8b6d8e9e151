//! The pipelines this binary runs: which topic feeds which engine.

use std::sync::Arc;

use carehub_pipeline::Engine;
use carehub_pipeline_hl7::Hl7Pipeline;
use carehub_pipeline_intake::IntakePipeline;
use carehub_pipeline_lab::{LabDispatch, LabResultsPipeline, LabStatusPipeline, LabTopics};
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
    let lab = &cfg.pipelines.lab;
    let lab_topics = LabTopics {
        orders: lab.orders_topic.clone(),
        hl7_outbound: hl7.outbound_topic.clone(),
        ehr_events: lab.ehr_events_topic.clone(),
    };
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
            engine: Engine::new(
                pool.clone(),
                Arc::new(
                    Hl7Pipeline::new(&hl7.events_topic)
                        .with_application_acks(&hl7.outbound_topic, hl7.ack_destinations.clone())
                        .with_fhir_load(hl7.load_fhir),
                ),
            ),
        },
        PipelineSpec {
            topic: lab.events_topic.clone(),
            group: lab.dispatch_group.clone(),
            enabled: lab.enabled,
            engine: Engine::new(
                pool.clone(),
                Arc::new(LabDispatch {
                    topics: lab_topics.clone(),
                    routing: lab.routing(),
                }),
            ),
        },
        PipelineSpec {
            topic: lab.status_topic.clone(),
            group: lab.status_group.clone(),
            enabled: lab.enabled,
            engine: Engine::new(
                pool.clone(),
                Arc::new(LabStatusPipeline {
                    topics: lab_topics.clone(),
                    routing: lab.routing(),
                }),
            ),
        },
        PipelineSpec {
            topic: lab.results_topic.clone(),
            group: lab.results_group.clone(),
            enabled: lab.enabled,
            engine: Engine::new(
                pool.clone(),
                Arc::new(LabResultsPipeline {
                    topics: lab_topics,
                    routing: lab.routing(),
                }),
            ),
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
    let lab = &cfg.pipelines.lab;
    for t in [
        cfg.pipelines.hl7.outbound_topic.clone(),
        carehub_kafka::dlq_topic(&cfg.pipelines.hl7.outbound_topic),
        lab.events_topic.clone(),
        carehub_kafka::dlq_topic(&lab.events_topic),
        lab.orders_topic.clone(),
        lab.status_topic.clone(),
        carehub_kafka::dlq_topic(&lab.status_topic),
        lab.results_topic.clone(),
        carehub_kafka::dlq_topic(&lab.results_topic),
        lab.ehr_events_topic.clone(),
        carehub_kafka::dlq_topic(&lab.ehr_events_topic),
    ] {
        if !topics.contains(&t) {
            topics.push(t);
        }
    }
    topics
}
