//! The HL7 v2 wire format, without I/O: ER7 structure, escapes, character
//! sets, batches, acknowledgements and MLLP framing.

pub mod ack;
pub mod batch;
pub mod builder;
pub mod charset;
pub mod er7;
pub mod identity;
pub mod json;
#[cfg(feature = "net")]
pub mod mllp;
pub mod xml;

pub use ack::{AckCode, AckError, AckMode, Outcome, ReceivedAck};
pub use builder::{FieldValue, MessageBuilder, SegmentBuilder};
pub use charset::Charset;
pub use er7::escape;
pub use er7::{Delimiters, ErrorLocation, Message, ParseError, Segment, Value};

/// A message's bytes as ER7 text: the character set applied (MSH-18), and
/// the XML encoding converted when the bytes are v2.xml.
pub fn decode_text(bytes: &[u8]) -> Result<(std::borrow::Cow<'_, str>, Charset), ParseError> {
    let (text, cs) = charset::decode(bytes)?;
    if xml::looks_like_xml(&text) {
        return Ok((std::borrow::Cow::Owned(xml::to_er7(&text)?), cs));
    }
    Ok((text, cs))
}
