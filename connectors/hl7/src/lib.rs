//! carehub's HL7 v2 edge.
//!
//! - [`codec`]: the wire format (ER7 parsing, escapes, character sets,
//!   batches, ACKs, MLLP framing), with no I/O.
//! - [`listener`]: [`MllpListener`] accepts MLLP connections, hands every
//!   message to an [`InboundSink`] that stores it durably, and only then ACKs.
//! - [`sender`]: [`MllpSender`] delivers outbound messages one at a time and
//!   matches each ACK to the message it acknowledges.

pub mod codec;
pub mod listener;
pub mod sender;

pub use listener::{Inbound, InboundSink, ListenerConfig, MllpListener, TlsConfig, Unavailable, Verdict};
pub use sender::{MllpSender, SendError, SenderConfig};
