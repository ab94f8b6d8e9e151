//! [`MllpSender`]: HL7 v2 over MLLP, outbound.
//!
//! One message in flight per connection. After writing a message the sender
//! waits for the ACK whose MSA-2 equals the message's MSH-10; an ACK for
//! anything else is logged and ignored, never credited. A timeout drops the
//! connection (so a late ACK lands on a closed socket, not on the next
//! message) and the same message, with the same MSH-10, is sent again after
//! an exponential backoff: a receiver that deduplicates sees one message. AE
//! (CE) is retried the same way; AR (CR) is final and returned to the caller,
//! who dead-letters it.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use carehub_core::internal_events::{Hl7AckReceived, MessageSent};
use futures::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

use crate::codec::ack::ReceivedAck;
use crate::codec::charset;
use crate::codec::er7::Message;
use crate::codec::mllp::MllpCodec;

pub const CONNECTOR: &str = "hl7_mllp_sender";

/// How an [`MllpSender`] reaches its peer and how hard it tries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SenderConfig {
    /// The receiver, `host:port`.
    pub endpoint: String,
    /// Milliseconds to wait for the ACK of one message.
    #[serde(default = "default_ack_timeout_ms")]
    pub ack_timeout_ms: u64,
    /// Milliseconds to wait for a connection.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Attempts per message (timeouts, AE, connection failures) before giving up.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: usize,
    /// First and largest delay between attempts, in milliseconds.
    #[serde(default = "default_min_backoff_ms")]
    pub min_backoff_ms: u64,
    #[serde(default = "default_max_backoff_ms")]
    pub max_backoff_ms: u64,
    /// Largest ACK accepted, in bytes.
    #[serde(default = "default_max_frame_bytes")]
    pub max_frame_bytes: usize,
}

const fn default_ack_timeout_ms() -> u64 {
    10_000
}
const fn default_connect_timeout_ms() -> u64 {
    5_000
}
const fn default_max_attempts() -> usize {
    5
}
const fn default_min_backoff_ms() -> u64 {
    200
}
const fn default_max_backoff_ms() -> u64 {
    30_000
}
const fn default_max_frame_bytes() -> usize {
    1024 * 1024
}

impl SenderConfig {
    pub fn new(endpoint: impl Into<String>) -> Self {
        SenderConfig {
            endpoint: endpoint.into(),
            ack_timeout_ms: default_ack_timeout_ms(),
            connect_timeout_ms: default_connect_timeout_ms(),
            max_attempts: default_max_attempts(),
            min_backoff_ms: default_min_backoff_ms(),
            max_backoff_ms: default_max_backoff_ms(),
            max_frame_bytes: default_max_frame_bytes(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    #[error("not a sendable HL7 message: {0}")]
    Invalid(String),
    /// AR or CR: the receiver refuses it; resending will not help.
    #[error("rejected by the receiver ({code:?}): {text}")]
    Rejected {
        ack: Box<ReceivedAck>,
        code: crate::codec::AckCode,
        text: String,
    },
    #[error("gave up after {attempts} attempts: {last}")]
    GaveUp { attempts: usize, last: String },
}

/// Sends messages to one receiver, one at a time.
#[derive(Debug)]
pub struct MllpSender {
    config: SenderConfig,
    conn: Option<Framed<TcpStream, MllpCodec>>,
}

/// Why one attempt did not end in an accept.
enum Attempt {
    Retry(String),
    Final(SendError),
}

impl MllpSender {
    pub fn new(config: SenderConfig) -> Self {
        MllpSender { config, conn: None }
    }

    /// Sends `message` (segments separated by CR) and returns its accepting ACK.
    pub async fn send(&mut self, message: &[u8]) -> Result<ReceivedAck, SendError> {
        let (text, _) = charset::decode(message).map_err(|e| SendError::Invalid(e.to_string()))?;
        let parsed = Message::parse(&text).map_err(|e| SendError::Invalid(e.to_string()))?;
        let control_id = parsed.control_id().to_owned();
        if control_id.is_empty() {
            return Err(SendError::Invalid("MSH-10 (message control id) is empty".into()));
        }
        let label = parsed.metric_label();
        let mut delays = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(self.config.min_backoff_ms))
            .with_max_delay(Duration::from_millis(self.config.max_backoff_ms))
            .with_jitter()
            .without_max_times()
            .build();
        let attempts = self.config.max_attempts.max(1);
        let mut last = String::new();
        for attempt in 1..=attempts {
            match self.attempt(message, &control_id).await {
                Ok(ack) => {
                    MessageSent {
                        connector: CONNECTOR,
                        message_type: &label,
                        count: 1,
                    }
                    .emit();
                    return Ok(ack);
                }
                Err(Attempt::Final(e)) => return Err(e),
                Err(Attempt::Retry(why)) => {
                    tracing::warn!(
                        endpoint = %self.config.endpoint,
                        control_id = %control_id,
                        attempt,
                        reason = %why,
                        "MLLP send not accepted; will retry"
                    );
                    last = why;
                    if attempt < attempts {
                        tokio::time::sleep(delays.next().unwrap_or(Duration::from_secs(1))).await;
                    }
                }
            }
        }
        Err(SendError::GaveUp { attempts, last })
    }

    async fn attempt(&mut self, message: &[u8], control_id: &str) -> Result<ReceivedAck, Attempt> {
        if self.conn.is_none() {
            let connect = TcpStream::connect(&self.config.endpoint);
            let stream = tokio::time::timeout(Duration::from_millis(self.config.connect_timeout_ms), connect)
                .await
                .map_err(|_| Attempt::Retry(format!("connecting to {} timed out", self.config.endpoint)))?
                .map_err(|e| Attempt::Retry(format!("connecting to {}: {e}", self.config.endpoint)))?;
            let _ = stream.set_nodelay(true);
            self.conn = Some(Framed::new(stream, MllpCodec::new(self.config.max_frame_bytes)));
        }
        let result = self.exchange(message, control_id).await;
        if matches!(result, Err(Attempt::Retry(_))) {
            // Whatever arrives late on this connection must not meet the next message.
            self.conn = None;
        }
        result
    }

    async fn exchange(&mut self, message: &[u8], control_id: &str) -> Result<ReceivedAck, Attempt> {
        let timeout = Duration::from_millis(self.config.ack_timeout_ms);
        let Some(conn) = self.conn.as_mut() else {
            return Err(Attempt::Retry("no connection".into()));
        };
        conn.send(message)
            .await
            .map_err(|e| Attempt::Retry(format!("writing: {e}")))?;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let frame = match tokio::time::timeout_at(deadline, conn.next()).await {
                Err(_) => return Err(Attempt::Retry(format!("no ACK within {} ms", timeout.as_millis()))),
                Ok(None) => return Err(Attempt::Retry("connection closed before the ACK".into())),
                Ok(Some(Err(e))) => return Err(Attempt::Retry(format!("reading the ACK: {e}"))),
                Ok(Some(Ok(frame))) => frame,
            };
            let Some(ack) = read_ack(&frame) else {
                tracing::warn!(endpoint = %self.config.endpoint, "reply is not an HL7 ACK; ignored");
                continue;
            };
            if ack.acked_control_id != control_id {
                tracing::warn!(
                    endpoint = %self.config.endpoint,
                    expected = %control_id,
                    got = %ack.acked_control_id,
                    "ACK for another message ignored"
                );
                continue;
            }
            Hl7AckReceived {
                connector: CONNECTOR,
                code: ack.code.as_str(),
                control_id,
            }
            .emit();
            return if ack.code.is_accept() {
                Ok(ack)
            } else if ack.code.is_reject() {
                let text = ack.text.clone().unwrap_or_default();
                Err(Attempt::Final(SendError::Rejected {
                    code: ack.code,
                    text,
                    ack: Box::new(ack),
                }))
            } else {
                Err(Attempt::Retry(format!(
                    "{}: {}",
                    ack.code.as_str(),
                    ack.text.unwrap_or_default()
                )))
            };
        }
    }
}

fn read_ack(frame: &[u8]) -> Option<ReceivedAck> {
    let (text, _) = charset::decode(frame).ok()?;
    let msg = Message::parse(&text).ok()?;
    ReceivedAck::read(&msg)
}
