//! carehub's HL7 v2 edge.
//!
//! - [`codec`]: the wire format (ER7 parsing, escapes, character sets,
//!   batches, ACKs, MLLP framing), with no I/O.
//! - [`listener`]: [`MllpListener`] accepts MLLP connections, hands every
//!   message to an [`InboundSink`] that stores it durably, and only then ACKs.
//! - [`ingress`]: [`Hl7Ingress`], the listener's sink on the connector kit's
//!   ingress: stored (message store + outbox) before acknowledged.
//! - [`sender`]: [`MllpSender`] delivers outbound messages one at a time and
//!   matches each ACK to the message it acknowledges.
//! - [`outbound`]: [`Hl7Deliverer`], the connector kit's delivery of
//!   `carehub.hl7v2.send.v1` records over MLLP.
//!
//! Without the `net` feature the crate is [`codec`] alone.

pub mod codec;
#[cfg(feature = "net")]
pub mod component;
#[cfg(feature = "net")]
pub mod config;
#[cfg(feature = "net")]
pub mod ingress;
#[cfg(feature = "net")]
pub mod listener;
#[cfg(feature = "net")]
pub mod outbound;
#[cfg(feature = "net")]
pub mod sender;

/// The MLLP listener's name in metrics, dead letters and audit entries.
pub const CONNECTOR: &str = "hl7_mllp";

#[cfg(feature = "net")]
pub use config::{Hl7Config, OrderBy};
#[cfg(feature = "net")]
pub use ingress::{Hl7Ingress, Hl7IngressConfig, Hl7Judge};
#[cfg(feature = "net")]
pub use listener::{Inbound, InboundSink, ListenerConfig, MllpListener, TlsConfig, Unavailable, Verdict};
#[cfg(feature = "net")]
pub use outbound::Hl7Deliverer;
#[cfg(feature = "net")]
pub use sender::{MllpSender, SendError, SenderConfig};
