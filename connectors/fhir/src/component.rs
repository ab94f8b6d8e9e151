//! The FHIR connector's components: the FHIR R4 endpoint and the EHR push
//! (the connector kit's delivery of order status to subscribed EHRs).

use async_trait::async_trait;
use carehub_connector_kit::{BoxError, Component, DeliveryComponent, Registry, Runtime, Task, Topics};

use crate::config::FhirConfig;
use crate::http::{Hl7Converter, bind};
use crate::push::{CONSUMER, EhrPush};

/// The topics the FHIR connector uses.
#[derive(Debug, Clone)]
pub struct FhirTopics {
    /// Where FHIR writes of Patient and ServiceRequest go (the intake pipeline's topic).
    pub intake: String,
    /// Order status for EHRs, which the push delivers (`[pipelines.lab] ehr_events_topic`).
    pub ehr_events: String,
}

/// The readiness name of the endpoint.
pub const ENDPOINT_HEALTH: &str = "fhir_endpoint";

/// Registers the endpoint and, when EHRs subscribe (`[fhir.push]`), the push.
pub fn register(registry: &mut Registry, cfg: &FhirConfig, topics: &FhirTopics, converter: Option<Hl7Converter>) {
    registry.register(FhirEndpoint {
        cfg: cfg.clone(),
        intake_topic: topics.intake.clone(),
        converter,
    });
    let subscribers = cfg.push.clone();
    registry.register(DeliveryComponent {
        consumer: CONSUMER,
        topic: topics.ehr_events.clone(),
        group: cfg.push_group.clone(),
        enabled: !cfg.push.is_empty(),
        make: Box::new(move || Ok(Box::new(EhrPush::new(subscribers.clone())?))),
    });
}

struct FhirEndpoint {
    cfg: FhirConfig,
    intake_topic: String,
    converter: Option<Hl7Converter>,
}

#[async_trait]
impl Component for FhirEndpoint {
    fn name(&self) -> String {
        ENDPOINT_HEALTH.to_owned()
    }

    fn enabled(&self) -> bool {
        self.cfg.enabled
    }

    fn topics(&self) -> Topics {
        Topics {
            reads: Vec::new(),
            writes: vec![self.intake_topic.clone()],
        }
    }

    fn health(&self) -> Vec<String> {
        vec![ENDPOINT_HEALTH.to_owned()]
    }

    async fn start(&self, rt: &Runtime) -> Result<Vec<Task>, BoxError> {
        let fhir = bind(&self.cfg, rt.pool.clone(), &self.intake_topic, self.converter.clone()).await?;
        rt.health.set_ready(ENDPOINT_HEALTH, true);
        let mut stop = rt.shutdown.clone();
        Ok(vec![Box::pin(async move {
            let stopped = async move {
                let _ = stop.changed().await;
            };
            if let Err(e) = fhir.run(stopped).await {
                tracing::error!(error = %e, "the FHIR endpoint stopped");
            }
        })])
    }
}
