//! The HL7 v2 wire format, without I/O: ER7 structure, escapes, character
//! sets, batches, acknowledgements and MLLP framing.

pub mod ack;
pub mod batch;
pub mod charset;
pub mod er7;
pub mod escape;
pub mod mllp;

pub use ack::{AckCode, AckError, AckMode, Outcome, ReceivedAck};
pub use charset::Charset;
pub use er7::{Delimiters, ErrorLocation, Message, ParseError, Segment, Value};
