//! What `/readyz` reports: every component that must be up for carehub to be
//! ready registers here, says when it is (a listener once bound, a pipeline
//! once consuming) and when it is stuck (a pipeline whose batch keeps
//! failing). Ready means every registered component is ready and none has
//! been stalled longer than the configured time.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, Default)]
struct State {
    ready: bool,
    stalled_since: Option<Instant>,
}

/// Shared readiness of the running components.
#[derive(Debug, Clone, Default)]
pub struct Health(Arc<Mutex<BTreeMap<String, State>>>);

/// One component as `/readyz` shows it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ComponentStatus {
    pub component: String,
    pub ready: bool,
    /// Seconds its work has been retrying without progress, when it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stalled_seconds: Option<f64>,
}

impl Health {
    /// Adds a component that is not ready yet.
    pub fn register(&self, component: &str) {
        self.with(|m| {
            m.entry(component.to_owned()).or_default();
        });
    }

    pub fn set_ready(&self, component: &str, ready: bool) {
        self.with(|m| m.entry(component.to_owned()).or_default().ready = ready);
    }

    /// Marks the component stalled from now (if it was not already), or moving again.
    pub fn set_stalled(&self, component: &str, stalled: bool) {
        self.with(|m| {
            let s = m.entry(component.to_owned()).or_default();
            s.stalled_since = match (stalled, s.stalled_since) {
                (true, Some(since)) => Some(since),
                (true, None) => Some(Instant::now()),
                (false, _) => None,
            };
        });
    }

    /// How long the component has been stalled, if it is.
    pub fn stalled_for(&self, component: &str) -> Option<Duration> {
        let mut out = None;
        self.with(|m| out = m.get(component).and_then(|s| s.stalled_since).map(|t| t.elapsed()));
        out
    }

    /// Every component, and whether all are ready with none stalled longer than `stall_limit`.
    pub fn report(&self, stall_limit: Duration) -> (bool, Vec<ComponentStatus>) {
        let mut all = true;
        let mut out = Vec::new();
        self.with(|m| {
            for (name, s) in m.iter() {
                let stalled = s.stalled_since.map(|t| t.elapsed());
                let ok = s.ready && stalled.is_none_or(|d| d <= stall_limit);
                all &= ok;
                out.push(ComponentStatus {
                    component: name.clone(),
                    ready: ok,
                    stalled_seconds: stalled.map(|d| d.as_secs_f64()),
                });
            }
        });
        (all, out)
    }

    fn with(&self, f: impl FnOnce(&mut BTreeMap<String, State>)) {
        // A poisoned lock only means a panic elsewhere mid-update of plain flags.
        let mut guard = self.0.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_every_component_is_and_none_is_stalled_too_long() {
        let h = Health::default();
        assert!(h.report(Duration::from_secs(1)).0, "nothing registered");
        h.register("mllp_listener");
        h.register("pipeline:hl7");
        assert!(!h.report(Duration::from_secs(1)).0);
        h.set_ready("mllp_listener", true);
        h.set_ready("pipeline:hl7", true);
        assert!(h.report(Duration::from_secs(1)).0);
        h.set_stalled("pipeline:hl7", true);
        assert!(h.report(Duration::from_secs(60)).0, "stalled, but not for long");
        assert!(!h.report(Duration::ZERO).0, "stalled past the limit");
        h.set_stalled("pipeline:hl7", false);
        assert!(h.report(Duration::ZERO).0);
    }
}
