//! Outbound HL7 v2: `carehub.hl7v2.send.v1` records (written by pipelines
//! through the outbox) delivered over MLLP to their named destination, by
//! the connector kit's [`DeliveryRunner`](carehub_connector_kit::DeliveryRunner): one at a time, in
//! order, the offset stored only after the receiver's answer.
//!
//! The next record is read only after the receiver accepted this one (AA/CA,
//! MSA-2 matching MSH-10, see `MllpSender`), so a crash re-sends at most the
//! message in hand, with its MSH-10. Timeouts and AE are retried by the
//! sender with backoff; when it gives up the delivery pauses and tries the
//! same message again, never skipping it. AR/CR, an unknown destination or an
//! unreadable record go to the dead letters (consumer `hl7_out`).

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use carehub_connector_kit::{Deliver, Delivery, wait};
use carehub_core::internal_events::{ComponentError, Stage};
use carehub_schema::Envelope;
use carehub_schema::contracts::{HL7_SEND as SEND, Outbound};
use tokio::sync::watch;

use crate::codec::{Message, decode_text};
use crate::{MllpSender, SendError, SenderConfig};

/// The dead letters' consumer name.
pub const CONSUMER: &str = "hl7_out";

/// Delivers HL7 messages to `[hl7.destinations]`.
pub struct Hl7Deliverer {
    destinations: std::collections::BTreeMap<String, SenderConfig>,
    senders: HashMap<String, MllpSender>,
}

impl std::fmt::Debug for Hl7Deliverer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hl7Deliverer")
            .field("destinations", &self.destinations.len())
            .finish()
    }
}

impl Hl7Deliverer {
    pub fn new(destinations: std::collections::BTreeMap<String, SenderConfig>) -> Self {
        Hl7Deliverer {
            destinations,
            senders: HashMap::new(),
        }
    }
}

#[async_trait]
impl Deliver for Hl7Deliverer {
    fn name(&self) -> &'static str {
        CONSUMER
    }

    async fn deliver(&mut self, env: Envelope, shutdown: &mut watch::Receiver<bool>) -> Option<Delivery> {
        let refused = |code, reason: String| Some(Delivery::Refused { code, reason });
        if env.event_type != SEND {
            return refused(
                "unknown_type",
                format!("{CONSUMER} does not handle {:?}", env.event_type),
            );
        }
        let out: Outbound = match serde_json::from_value(env.data) {
            Ok(o) => o,
            Err(e) => return refused("invalid_data", format!("{SEND}: {e}")),
        };
        let Some(config) = self.destinations.get(&out.destination).cloned() else {
            return refused(
                "unknown_destination",
                format!(
                    "destination {:?} is not configured ([hl7.destinations])",
                    out.destination
                ),
            );
        };
        let raw = match out.raw() {
            Ok(r) => r,
            Err(e) => return refused("invalid_data", format!("raw_base64: {e}")),
        };
        let (control_id, message_type) = match decode_text(&raw).ok().and_then(|(t, _)| {
            Message::parse(&t)
                .ok()
                .map(|m| (m.control_id().to_owned(), m.type_label()))
        }) {
            Some(x) => x,
            None => return refused("invalid_data", "not a readable HL7 v2 message".into()),
        };
        let sender = self
            .senders
            .entry(out.destination.clone())
            .or_insert_with(|| MllpSender::new(config));
        loop {
            let attempt = tokio::select! {
                r = sender.send(&raw) => r,
                _ = shutdown.changed() => return None,
            };
            match attempt {
                Ok(_) => {
                    return Some(Delivery::Accepted {
                        entity_type: "hl7_message",
                        entity_id: control_id,
                        origin: format!("mllp:{}", out.destination),
                        detail: serde_json::json!({ "message_type": message_type }),
                    });
                }
                Err(SendError::Rejected { code, text, .. }) => {
                    return refused(
                        "rejected_by_receiver",
                        format!("{} {}: {text}", out.destination, code.as_str()),
                    );
                }
                Err(SendError::Invalid(reason)) => return refused("invalid_data", reason),
                Err(e) => {
                    ComponentError {
                        component: "hl7_outbound",
                        stage: Stage::Sending,
                        error_code: "not_accepted",
                        error: &e,
                    }
                    .emit();
                    if wait(shutdown, Duration::from_secs(5)).await {
                        return None;
                    }
                }
            }
        }
    }
}
