//! [`Hl7Ingress`]: the MLLP listener's [`InboundSink`] on the connector kit's
//! [`Ingress`]. Each message is stored (message store + onward record
//! `carehub.hl7v2.received.v1` in the outbox, or a dead letter) before it is
//! acknowledged; what the message's content deserves (AA, AE, AR) is the
//! [`Hl7Judge`]'s call, which the binary wires to the HL7 pipeline's mapping
//! so that content errors are answered at once.
//!
//! A message whose MSH-10 cannot identify it is kept under a key of its own
//! (`hl7:unparsed:<uuid>`), never taken for another's duplicate. A changed
//! duplicate (same MSH-4/3/10, other bytes) is held for review: the first
//! copy stands. A message the store refuses for good is kept as a dead
//! letter and answered AR 207, so the sender stops resending it.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use carehub_connector_kit::ChangedContent;
use carehub_connector_kit::ingress::{Arrival, Ingress, IngressSpec, Judgement, Stored};
use carehub_schema::contracts::Received;
use carehub_schema::message_store::fit_column;
use sqlx::PgPool;

use crate::codec::identity::source_key;
use crate::codec::{AckError, Message};
use crate::listener::{Inbound, InboundSink, Unavailable, Verdict};

/// The check before acknowledgement of a parsed message.
pub trait Hl7Judge: Send + Sync + 'static {
    /// What `msg` deserves. `identified` is false when its MSH-10 cannot
    /// identify it (empty, too long, NUL): it is then stored under a key of
    /// its own.
    fn judge(&self, msg: &Message<'_>) -> Judged;
}

/// A judge's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Judged {
    pub verdict: Verdict,
    pub identified: bool,
}

/// The key of a message's onward record: one sender's (or, with
/// [`OrderBy::Patient`](crate::config::OrderBy), one patient's) messages stay
/// on one partition, in order. The patient part is a name-based UUID (v5) of
/// the first PID-3 repetition, never the identifier itself: the topic
/// carries no MRN, and the key stays the same across restarts and upgrades.
fn ordering_key(msg: &crate::codec::Message<'_>, order_by: crate::config::OrderBy) -> String {
    let msh = msg.msh();
    let mut key = format!("{}:{}", msh.field(4).raw(), msh.field(3).raw());
    if order_by == crate::config::OrderBy::Patient {
        let pid3 = msg.get("PID-3");
        let first = pid3
            .raw()
            .split(msg.delimiters().repetition as char)
            .next()
            .unwrap_or("");
        if !first.is_empty() {
            key.push(':');
            key.push_str(
                &uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, first.as_bytes())
                    .simple()
                    .to_string(),
            );
        }
    }
    key
}

/// How an [`Hl7Ingress`] is set up.
#[derive(Debug, Clone)]
pub struct Hl7IngressConfig {
    /// The HL7 pipeline's topic (`[pipelines.hl7] topic`).
    pub topic: String,
    /// The listener's address, named in the onward records.
    pub listener: String,
    pub store_timeout: Duration,
    pub store_workers: usize,
    /// The scope kept in order ([`crate::config::OrderBy`]).
    pub order_by: crate::config::OrderBy,
}

/// Most messages one store transaction takes.
const MAX_BATCH: usize = 500;

/// The MLLP listener's sink: stores, then answers (see the module's documentation).
pub struct Hl7Ingress {
    ingress: Ingress,
    judge: Arc<dyn Hl7Judge>,
    order_by: crate::config::OrderBy,
}

impl std::fmt::Debug for Hl7Ingress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hl7Ingress").field("ingress", &self.ingress).finish()
    }
}

impl Hl7Ingress {
    pub fn start(pool: PgPool, cfg: Hl7IngressConfig, judge: Arc<dyn Hl7Judge>) -> Self {
        let listener = cfg.listener.clone();
        let order_by = cfg.order_by;
        let ingress = Ingress::start(IngressSpec {
            pool,
            connector: crate::CONNECTOR,
            protocol: "hl7v2",
            topic: cfg.topic,
            // Its dead letters are the HL7 pipeline's to replay.
            consumer: "hl7".to_owned(),
            workers: cfg.store_workers,
            max_batch: MAX_BATCH,
            store_timeout: cfg.store_timeout,
            // A sender reusing a control id for other content is a mistake to
            // review, not a correction to apply (HL7 corrects with A08/ORC).
            on_changed: ChangedContent::HoldForReview,
            onward: Arc::new(move |message_id, arrival: &Arrival| {
                Received::new(message_id, &arrival.peer, &listener).into_envelope(Some(&arrival.key))
            }),
        });
        Hl7Ingress {
            ingress,
            judge,
            order_by,
        }
    }

    /// The arrival to store and the answer the message gets once stored.
    fn prepare(&self, inbound: &Inbound<'_>) -> (Arrival, Verdict) {
        let unparsed_key = || format!("hl7:unparsed:{}", uuid::Uuid::now_v7());
        let (verdict, key, partition_key, message_type, control_id) = match inbound.parsed {
            Ok(msg) => {
                let judged = self.judge.judge(msg);
                let sender = ordering_key(msg, self.order_by);
                if judged.identified {
                    let id = Some(msg.control_id().to_owned());
                    (judged.verdict, source_key(msg), sender, Some(msg.type_label()), id)
                } else {
                    (judged.verdict, unparsed_key(), sender, Some(msg.type_label()), None)
                }
            }
            Err(e) => {
                let (code, location) = e.hl7_error();
                let mut err = AckError::new(code, e.to_string());
                err.location = location;
                let peer = inbound.peer.ip().to_string();
                (Verdict::Rejected(err), unparsed_key(), peer, None, None)
            }
        };
        let judgement = match &verdict {
            Verdict::Accepted => Judgement::Accept,
            Verdict::Error(e) | Verdict::Rejected(e) => Judgement::Refuse {
                code: match &verdict {
                    Verdict::Error(_) => "invalid_data",
                    _ if message_type.is_none() || control_id.is_none() => "invalid_envelope",
                    _ => "unknown_type",
                },
                reason: e.text.clone(),
                detail: serde_json::json!({ "hl7_error": e.code }),
            },
        };
        let arrival = Arrival {
            key,
            partition_key: fit_column(&partition_key),
            message_type: message_type.as_deref().map(fit_column),
            control_id: control_id.as_deref().map(fit_column),
            peer: inbound.peer.to_string(),
            origin: format!("mllp:{}", inbound.peer),
            raw: inbound.raw.to_vec(),
            judgement,
        };
        (arrival, verdict)
    }
}

#[async_trait]
impl InboundSink for Hl7Ingress {
    async fn store(&self, inbound: Inbound<'_>) -> Result<Verdict, Unavailable> {
        let (arrival, verdict) = self.prepare(&inbound);
        match self.ingress.store(arrival).await {
            // Stored now or before: the message's own answer, the same every time.
            Ok(Stored::New { .. } | Stored::Duplicate { .. } | Stored::NewVersion { .. }) => Ok(verdict),
            Ok(Stored::Unstorable { dead_letter_id, reason }) => Ok(Verdict::Rejected(AckError::new(
                207,
                format!("message cannot be stored: {reason}; kept as dead letter {dead_letter_id}"),
            ))),
            Err(e) => Err(Unavailable(e.0)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ordering_key;
    use crate::codec::Message;
    use crate::config::OrderBy;

    #[test]
    fn messages_are_ordered_per_sender_or_per_patient_as_configured() {
        let text = |mrn: &str| {
            format!(
                "MSH|^~\\&|EHR|NORTHCLINIC|CAREHUB|LAB|20261125101500||ADT^A08|C1|P|2.5.1\r\
PID|1||{mrn}^^^NORTHCLINIC&2.999.1&ISO^MR~SSN-1^^^USSSA^SS||Testpatient^Alex\r"
            )
        };
        let (a, b) = (text("P-1"), text("P-2"));
        let (a, b) = (Message::parse(&a).expect("a"), Message::parse(&b).expect("b"));
        assert_eq!(ordering_key(&a, OrderBy::Sender), "NORTHCLINIC:EHR");
        assert_eq!(ordering_key(&a, OrderBy::Sender), ordering_key(&b, OrderBy::Sender));
        let first = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, b"P-1^^^NORTHCLINIC&2.999.1&ISO^MR");
        assert_eq!(
            ordering_key(&a, OrderBy::Patient),
            format!("NORTHCLINIC:EHR:{}", first.simple()),
            "the first PID-3 repetition only, as a name-based UUID"
        );
        assert!(!ordering_key(&a, OrderBy::Patient).contains("P-1"), "no MRN in the key");
        assert_ne!(ordering_key(&a, OrderBy::Patient), ordering_key(&b, OrderBy::Patient));
        let huge = text(&"9".repeat(100_000));
        let huge = Message::parse(&huge).expect("huge PID-3");
        assert_eq!(
            ordering_key(&huge, OrderBy::Patient).len(),
            "NORTHCLINIC:EHR:".len() + 32,
            "an oversized identifier gives a key of fixed size"
        );
        let none = "MSH|^~\\&|EHR|NORTHCLINIC|CAREHUB|LAB|20261125101500||QRY^A19|C2|P|2.5.1\r";
        let none = Message::parse(none).expect("no PID");
        assert_eq!(
            ordering_key(&none, OrderBy::Patient),
            "NORTHCLINIC:EHR",
            "no patient: the sender's order"
        );
    }
}
