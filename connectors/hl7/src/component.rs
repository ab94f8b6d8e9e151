//! The HL7 connector's components: the MLLP listener (stored before
//! acknowledged, [`Hl7Ingress`]) and the outbound delivery over MLLP
//! ([`Hl7Deliverer`]).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use carehub_connector_kit::{BoxError, Component, DeliveryComponent, Registry, Runtime, Task, Topics};

use crate::ingress::{Hl7Ingress, Hl7IngressConfig, Hl7Judge};
use crate::outbound::CONSUMER;
use crate::{Hl7Config, Hl7Deliverer, MllpListener};

/// Where the HL7 connector's records go and come from: the HL7 pipeline's
/// topics (`[pipelines.hl7]`).
#[derive(Debug, Clone)]
pub struct Hl7Topics {
    /// Received messages' records (`carehub.hl7v2.received.v1`).
    pub inbound: String,
    /// Messages to deliver (`carehub.hl7v2.send.v1`), and the delivery's group.
    pub outbound: String,
    pub outbound_group: String,
    /// Run the outbound delivery (it goes with the HL7 pipeline).
    pub outbound_enabled: bool,
}

/// Registers the MLLP listener and the outbound delivery.
pub fn register(registry: &mut Registry, cfg: &Hl7Config, topics: &Hl7Topics, judge: Arc<dyn Hl7Judge>) {
    registry.register(MllpListenerComponent {
        cfg: cfg.clone(),
        topic: topics.inbound.clone(),
        judge,
    });
    let destinations = cfg.destinations.clone();
    registry.register(DeliveryComponent {
        consumer: CONSUMER,
        topic: topics.outbound.clone(),
        group: topics.outbound_group.clone(),
        enabled: topics.outbound_enabled,
        make: Box::new(move || Ok(Box::new(Hl7Deliverer::new(destinations.clone())))),
    });
}

/// The readiness name of the listener.
pub const LISTENER_HEALTH: &str = "mllp_listener";

struct MllpListenerComponent {
    cfg: Hl7Config,
    topic: String,
    judge: Arc<dyn Hl7Judge>,
}

#[async_trait]
impl Component for MllpListenerComponent {
    fn name(&self) -> String {
        LISTENER_HEALTH.to_owned()
    }

    fn enabled(&self) -> bool {
        self.cfg.enabled
    }

    fn topics(&self) -> Topics {
        Topics {
            reads: Vec::new(),
            writes: vec![self.topic.clone()],
        }
    }

    fn health(&self) -> Vec<String> {
        vec![LISTENER_HEALTH.to_owned()]
    }

    async fn start(&self, rt: &Runtime) -> Result<Vec<Task>, BoxError> {
        let sink = Arc::new(Hl7Ingress::start(
            rt.pool.clone(),
            Hl7IngressConfig {
                topic: self.topic.clone(),
                listener: self.cfg.listener.listen.to_string(),
                store_timeout: Duration::from_millis(self.cfg.store_timeout_ms),
                store_workers: self.cfg.store_workers,
                order_by: self.cfg.order_by,
            },
            self.judge.clone(),
        ));
        let listen = self.cfg.listener.listen;
        let listener = MllpListener::bind(self.cfg.listener.clone(), sink)
            .await
            .map_err(|e| format!("binding hl7.listener.listen = {listen}: {e}"))?;
        // Bound: connections are queued by the kernel from here on.
        rt.health.set_ready(LISTENER_HEALTH, true);
        Ok(vec![Box::pin(listener.run(rt.shutdown.clone()))])
    }
}
