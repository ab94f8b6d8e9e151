use metrics::{counter, gauge};

use super::{InternalEvent, metric};

/// An HL7 acknowledgement went back to a sender (MLLP listener).
#[derive(Debug)]
pub struct Hl7AckSent<'a> {
    pub connector: &'a str,
    pub message_type: &'a str,
    /// MSA-1: AA, AE, AR, CA, CE, CR.
    pub code: &'a str,
    /// The acknowledged MSH-10 (an id, not patient data).
    pub control_id: &'a str,
}

impl InternalEvent for Hl7AckSent<'_> {
    fn emit(self) {
        tracing::debug!(
            connector = self.connector,
            message_type = self.message_type,
            ack = self.code,
            control_id = self.control_id,
            "HL7 ACK sent"
        );
        counter!(metric::HL7_ACKS_SENT, "connector" => self.connector.to_owned(), "code" => self.code.to_owned())
            .increment(1);
    }
}

/// An HL7 acknowledgement came back to the MLLP sender.
#[derive(Debug)]
pub struct Hl7AckReceived<'a> {
    pub connector: &'a str,
    pub code: &'a str,
    pub control_id: &'a str,
}

impl InternalEvent for Hl7AckReceived<'_> {
    fn emit(self) {
        tracing::debug!(
            connector = self.connector,
            ack = self.code,
            control_id = self.control_id,
            "HL7 ACK received"
        );
        counter!(metric::HL7_ACKS_RECEIVED, "connector" => self.connector.to_owned(), "code" => self.code.to_owned())
            .increment(1);
    }
}

/// MLLP connections open now, per connector.
#[derive(Debug)]
pub struct Hl7Connections<'a> {
    pub connector: &'a str,
    pub delta: f64,
}

impl InternalEvent for Hl7Connections<'_> {
    fn emit(self) {
        gauge!(metric::HL7_CONNECTIONS, "connector" => self.connector.to_owned()).increment(self.delta);
    }
}

/// Segments a mapping did not turn into canonical data: they stay in the raw
/// message, and are counted here so nothing is dropped unseen.
#[derive(Debug)]
pub struct Hl7SegmentsUnmapped<'a> {
    pub message_type: &'a str,
    pub segment: &'a str,
    pub count: u64,
}

impl InternalEvent for Hl7SegmentsUnmapped<'_> {
    fn emit(self) {
        counter!(
            metric::HL7_UNMAPPED_SEGMENTS,
            "message_type" => self.message_type.to_owned(),
            "segment" => self.segment.to_owned()
        )
        .increment(self.count);
    }
}
