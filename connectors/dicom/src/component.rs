//! Registration: the association server as a listener component.

use async_trait::async_trait;
use carehub_connector_kit::{BoxError, Component, Registry, Runtime, Task};

use crate::{DicomConfig, DimseListener};

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

    fn health(&self) -> Vec<String> {
        vec![LISTENER_HEALTH.to_owned()]
    }

    async fn start(&self, rt: &Runtime) -> Result<Vec<Task>, BoxError> {
        let listen = self.cfg.listen.clone();
        let listener = DimseListener::bind(self.cfg.clone())
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
