//! Registration: the association server as a listener component.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use carehub_connector_kit::{
    BoxError, ChangedContent, Component, Ingress, IngressSpec, Registry, Runtime, Task, Topics,
};

use crate::store::{StoreService, onward};
use crate::{DicomConfig, DimseListener, FileStore};

const LISTENER_HEALTH: &str = "dicom_listener";

struct DimseListenerComponent {
    cfg: DicomConfig,
}

#[async_trait]
impl Component for DimseListenerComponent {
    fn name(&self) -> String {
        "dicom:listener".to_owned()
    }

    fn enabled(&self) -> bool {
        self.cfg.enabled
    }

    fn topics(&self) -> Topics {
        Topics {
            reads: Vec::new(),
            writes: vec![self.cfg.topic.clone()],
        }
    }

    fn health(&self) -> Vec<String> {
        vec![LISTENER_HEALTH.to_owned()]
    }

    async fn start(&self, rt: &Runtime) -> Result<Vec<Task>, BoxError> {
        let files =
            FileStore::open(&self.cfg.storage).map_err(|e| format!("dicom.storage = {}: {e}", self.cfg.storage))?;
        let ingress = Ingress::start(IngressSpec {
            pool: rt.pool.clone(),
            connector: crate::CONNECTOR,
            protocol: "dicom",
            topic: self.cfg.topic.clone(),
            // The imaging pipeline (to come) owns its dead letters.
            consumer: "dicom".to_owned(),
            workers: 2,
            max_batch: 64,
            store_timeout: Duration::from_millis(self.cfg.store_timeout_ms),
            // The same SOP Instance UID with other content is kept as a new
            // version (answered with a warning), never silently dropped.
            on_changed: ChangedContent::NewVersion,
            onward: Arc::new(onward),
        });
        let store = StoreService {
            store: Arc::new(files),
            ingress,
            max_instance_bytes: self.cfg.max_instance_bytes,
        };
        let listen = self.cfg.listen.clone();
        let listener = DimseListener::bind(self.cfg.clone(), Some(store))
            .await
            .map_err(|e| format!("binding dicom.listen = {listen}: {e}"))?;
        rt.health.set_ready(LISTENER_HEALTH, true);
        Ok(vec![Box::pin(listener.run(rt.shutdown.clone()))])
    }
}

/// Registers the DICOM connector's components.
pub fn register(registry: &mut Registry, cfg: &DicomConfig) {
    registry.register(DimseListenerComponent { cfg: cfg.clone() });
}
