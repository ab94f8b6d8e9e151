//! The EHR push: `carehub.ehr.order_status.v1` events (the lab's
//! `ehr_events_topic`) delivered to each EHR subscribed to the order's clinic
//! (`[fhir.push.<name>]`) as FHIR updates — `PUT <base>/Task/<id>` and
//! `PUT <base>/ServiceRequest/<id>` — in order, by the
//! connector kit's [`DeliveryRunner`](carehub_connector_kit::DeliveryRunner). Timeouts, 5xx, 408
//! and 429 are retried with exponential backoff; after `max_attempts`, or at
//! once for another 4xx, the event becomes a dead letter (consumer
//! `ehr_push`) that `carehub dlq replay` sends again.

use std::time::Duration;

use async_trait::async_trait;
use backon::{BackoffBuilder, ExponentialBuilder};
use carehub_connector_kit::{Deliver, Delivery, wait};
use carehub_schema::Envelope;
use carehub_schema::contracts::{EHR_ORDER_STATUS, EhrOrderStatus};
use serde_json::Value;
use tokio::sync::watch;

use crate::config::EhrSubscriber;

/// The dead letters' consumer name.
pub const CONSUMER: &str = "ehr_push";

pub struct EhrPush {
    subscribers: Vec<(String, EhrSubscriber)>,
    client: reqwest::Client,
}

impl std::fmt::Debug for EhrPush {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EhrPush")
            .field("subscribers", &self.subscribers.len())
            .finish()
    }
}

impl EhrPush {
    /// Pushes to `subscribers` (`[fhir.push.<name>]`).
    pub fn new(subscribers: std::collections::BTreeMap<String, EhrSubscriber>) -> Result<Self, reqwest::Error> {
        Ok(EhrPush {
            subscribers: subscribers.into_iter().collect(),
            client: reqwest::Client::builder().build()?,
        })
    }

    /// PUTs `resource` until the EHR answers 2xx; `Err` is the refusal.
    async fn put(
        &self,
        name: &str,
        sub: &EhrSubscriber,
        resource: &Value,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Option<Result<u16, (&'static str, String)>> {
        let ty = resource["resourceType"].as_str().unwrap_or("");
        let id = resource["id"].as_str().unwrap_or("");
        let url = format!("{}/{ty}/{id}", sub.base_url.trim_end_matches('/'));
        let mut delays = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(sub.min_backoff_ms))
            .with_max_delay(Duration::from_millis(sub.max_backoff_ms))
            .with_max_times(sub.max_attempts.saturating_sub(1))
            .build();
        loop {
            let mut req = self
                .client
                .put(&url)
                .timeout(Duration::from_millis(sub.timeout_ms))
                .header("Content-Type", "application/fhir+json")
                .header("Accept", "application/fhir+json")
                .body(resource.to_string());
            if let Some(token) = &sub.bearer_token {
                req = req.bearer_auth(token.expose());
            }
            let failure = match req.send().await {
                Ok(res) if res.status().is_success() => return Some(Ok(res.status().as_u16())),
                Ok(res) => {
                    let status = res.status();
                    let retry = status.is_server_error() || matches!(status.as_u16(), 408 | 429);
                    let reason = format!("{name}: PUT {ty}/{id} answered {status}");
                    if !retry {
                        return Some(Err(("rejected_by_receiver", reason)));
                    }
                    reason
                }
                Err(e) => format!("{name}: PUT {ty}/{id} failed: {e}"),
            };
            tracing::warn!(subscriber = name, resource = ty, reason = %failure, "EHR push attempt failed");
            match delays.next() {
                Some(d) => {
                    if wait(shutdown, d).await {
                        return None;
                    }
                }
                None => return Some(Err(("delivery_failed", failure))),
            }
        }
    }
}

#[async_trait]
impl Deliver for EhrPush {
    fn name(&self) -> &'static str {
        CONSUMER
    }

    async fn deliver(&mut self, env: Envelope, shutdown: &mut watch::Receiver<bool>) -> Option<Delivery> {
        if env.event_type != EHR_ORDER_STATUS {
            return Some(Delivery::Refused {
                code: "unknown_type",
                reason: format!("{CONSUMER} does not handle {:?}", env.event_type),
            });
        }
        let clinic = env.data["clinic"].as_str().unwrap_or("");
        let targets: Vec<(String, EhrSubscriber)> = self
            .subscribers
            .iter()
            .filter(|(_, s)| s.clinic.eq_ignore_ascii_case(clinic))
            .cloned()
            .collect();
        if targets.is_empty() {
            return Some(Delivery::Nothing);
        }
        // The contract's struct: an event that is not one is refused whole.
        let status: EhrOrderStatus = match serde_json::from_value(env.data) {
            Ok(s) => s,
            Err(e) => {
                return Some(Delivery::Refused {
                    code: "invalid_data",
                    reason: format!("{EHR_ORDER_STATUS}: {e}"),
                });
            }
        };
        let (task, order) = (&status.task, &status.service_request);
        if task["resourceType"] != "Task" || order["resourceType"] != "ServiceRequest" {
            return Some(Delivery::Refused {
                code: "invalid_data",
                reason: format!("{EHR_ORDER_STATUS}: task and service_request resources are required"),
            });
        }
        for (name, sub) in &targets {
            for resource in [task, order] {
                if let Err((code, reason)) = self.put(name, sub, resource, shutdown).await? {
                    return Some(Delivery::Refused { code, reason });
                }
            }
        }
        Some(Delivery::Accepted {
            entity_type: "service_order",
            entity_id: status.order_id.to_string(),
            origin: format!(
                "fhir-push:{}",
                targets.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(",")
            ),
            detail: serde_json::json!({
                "task_status": task["status"],
                "lab_status": status.lab_status,
                "event_id": env.id,
            }),
        })
    }
}
