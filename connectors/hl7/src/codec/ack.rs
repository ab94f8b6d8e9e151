//! Acknowledgements (v2.5.1 §2.9): building the ACK a receiver answers with,
//! and reading the one a sender gets back.
//!
//! The ACK's MSH mirrors the received one: sender and receiver swapped, the
//! received delimiters, processing id, version and character set, MSH-9
//! `ACK^<trigger>^ACK`, a fresh control id. MSA-2 is the received MSH-10. An
//! error or rejection carries an ERR segment with the HL7 error code (table
//! 0357) and its location: ERR-2/3/4 from v2.5 on, ERR-1 before it.

use super::builder::{FieldValue, MessageBuilder, SegmentBuilder};
use super::er7::{Delimiters, ErrorLocation, Message};

/// MSA-1 (table 0008).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum AckCode {
    /// Application accept / error / reject (original mode, application ACK).
    AA,
    AE,
    AR,
    /// Commit accept / error / reject (enhanced mode, accept ACK).
    CA,
    CE,
    CR,
}

impl AckCode {
    pub fn as_str(self) -> &'static str {
        match self {
            AckCode::AA => "AA",
            AckCode::AE => "AE",
            AckCode::AR => "AR",
            AckCode::CA => "CA",
            AckCode::CE => "CE",
            AckCode::CR => "CR",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.trim() {
            "AA" => AckCode::AA,
            "AE" => AckCode::AE,
            "AR" => AckCode::AR,
            "CA" => AckCode::CA,
            "CE" => AckCode::CE,
            "CR" => AckCode::CR,
            _ => return None,
        })
    }

    pub fn is_accept(self) -> bool {
        matches!(self, AckCode::AA | AckCode::CA)
    }

    pub fn is_reject(self) -> bool {
        matches!(self, AckCode::AR | AckCode::CR)
    }
}

/// The outcome a receiver reports, independent of the acknowledgement mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Accept,
    Error,
    Reject,
}

/// MSH-15 / MSH-16 (table 0155): when an acknowledgement is wanted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckCondition {
    Always,
    Never,
    ErrorOnly,
    SuccessOnly,
}

impl AckCondition {
    fn parse(s: &str) -> Self {
        match s.trim() {
            "NE" => AckCondition::Never,
            "ER" => AckCondition::ErrorOnly,
            "SU" => AckCondition::SuccessOnly,
            _ => AckCondition::Always,
        }
    }

    pub fn wants(self, outcome: Outcome) -> bool {
        match self {
            AckCondition::Always => true,
            AckCondition::Never => false,
            AckCondition::ErrorOnly => outcome != Outcome::Accept,
            AckCondition::SuccessOnly => outcome == Outcome::Accept,
        }
    }
}

/// Original mode (MSH-15 and MSH-16 empty) or enhanced mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckMode {
    Original,
    Enhanced {
        accept: AckCondition,
        application: AckCondition,
    },
}

impl AckMode {
    pub fn of(msg: &Message<'_>) -> Self {
        let accept = msg.msh().field(15).raw();
        let application = msg.msh().field(16).raw();
        if accept.trim().is_empty() && application.trim().is_empty() {
            AckMode::Original
        } else {
            AckMode::Enhanced {
                accept: AckCondition::parse(accept),
                application: AckCondition::parse(application),
            }
        }
    }

    /// The MSA-1 code that acknowledges receipt with this outcome, or `None`
    /// when the sender asked not to be acknowledged in that case.
    pub fn receipt_code(self, outcome: Outcome) -> Option<AckCode> {
        match self {
            AckMode::Original => Some(match outcome {
                Outcome::Accept => AckCode::AA,
                Outcome::Error => AckCode::AE,
                Outcome::Reject => AckCode::AR,
            }),
            AckMode::Enhanced { accept, .. } => accept.wants(outcome).then_some(match outcome {
                Outcome::Accept => AckCode::CA,
                Outcome::Error => AckCode::CE,
                Outcome::Reject => AckCode::CR,
            }),
        }
    }
}

/// An error to report in ERR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckError {
    /// HL7 table 0357: 100 segment sequence, 101 required field missing, 102
    /// data type, 103 table value not found, 200 unsupported message type, 201
    /// unsupported event, 202 unsupported processing id, 203 unsupported
    /// version, 207 application internal error.
    pub code: u16,
    pub location: Option<ErrorLocation>,
    /// A short explanation for the sender's operators (never patient data).
    pub text: String,
}

impl AckError {
    pub fn new(code: u16, text: impl Into<String>) -> Self {
        AckError {
            code,
            location: None,
            text: text.into(),
        }
    }

    pub fn at(mut self, location: ErrorLocation) -> Self {
        self.location = Some(location);
        self
    }
}

/// The text of HL7 table 0357 for a code.
pub fn error_text(code: u16) -> &'static str {
    match code {
        0 => "Message accepted",
        100 => "Segment sequence error",
        101 => "Required field missing",
        102 => "Data type error",
        103 => "Table value not found",
        104 => "Value too long",
        200 => "Unsupported message type",
        201 => "Unsupported event code",
        202 => "Unsupported processing id",
        203 => "Unsupported version id",
        204 => "Unknown key identifier",
        205 => "Duplicate key identifier",
        206 => "Application record locked",
        _ => "Application internal error",
    }
}

/// HL7 timestamp (DTM) of now, in UTC.
pub fn timestamp_now() -> String {
    chrono::Utc::now().format("%Y%m%d%H%M%S%.3f+0000").to_string()
}

/// Builds the ACK for `received`. Segments end with CR.
pub fn build(received: &Message<'_>, code: AckCode, error: Option<&AckError>, control_id: &str) -> String {
    let msh = received.msh();
    let trigger = msh.field(9).component(2).raw();
    let msg_type = if trigger.is_empty() {
        FieldValue::text("ACK")
    } else {
        FieldValue::composite([
            FieldValue::text("ACK"),
            FieldValue::encoded(trigger),
            FieldValue::text("ACK"),
        ])
    };
    // Sender and receiver swapped; what is mirrored stays as received.
    let mirrored = |n: usize| FieldValue::encoded(msh.field(n).raw());
    let mut out = MessageBuilder::new(received.delimiters());
    out.push(
        SegmentBuilder::new("MSH")
            .field(3, mirrored(5))
            .field(4, mirrored(6))
            .field(5, mirrored(3))
            .field(6, mirrored(4))
            .field(7, timestamp_now())
            .field(9, msg_type)
            .field(10, control_id)
            .field(11, mirrored(11))
            .field(12, mirrored(12))
            .field(18, mirrored(18)),
    );
    push_msa_err(&mut out, received.version(), code, received.control_id(), error);
    out.finish()
}

/// The ACK for bytes that are not a readable message (no usable MSH): a
/// minimal header from the receiver, an empty MSA-2.
pub fn build_unparsed(code: AckCode, error: &AckError, receiving_application: &str, control_id: &str) -> String {
    let mut out = MessageBuilder::new(Delimiters::default());
    out.push(
        SegmentBuilder::new("MSH")
            .field(3, receiving_application)
            .field(7, timestamp_now())
            .field(9, "ACK")
            .field(10, control_id)
            .field(11, "P")
            .field(12, "2.5.1"),
    );
    push_msa_err(&mut out, "2.5.1", code, "", Some(error));
    out.finish()
}

fn push_msa_err(out: &mut MessageBuilder, version: &str, code: AckCode, acked_id: &str, error: Option<&AckError>) {
    let modern = version_at_least(version, 2, 5);
    let msa = SegmentBuilder::new("MSA")
        .field(1, code.as_str())
        .field(2, FieldValue::encoded(acked_id));
    out.push(match (error, modern) {
        // MSA-3, the text message, was withdrawn in v2.5 (it moved to ERR-8).
        (Some(e), false) => msa.field(3, e.text.as_str()),
        _ => msa,
    });
    let Some(e) = error else { return };
    let loc = e.location.as_ref();
    let location = [
        FieldValue::from(loc.map(|l| l.segment.as_str())),
        loc.map_or(FieldValue::Empty, |l| l.sequence.into()),
        loc.and_then(|l| l.field).map_or(FieldValue::Empty, FieldValue::from),
    ];
    let coded = [
        FieldValue::text(e.code.to_string()),
        FieldValue::text(error_text(e.code)),
        FieldValue::text("HL70357"),
    ];
    let err = if modern {
        let severity = if code.is_accept() { "W" } else { "E" };
        SegmentBuilder::new("ERR")
            .field(2, FieldValue::composite(location))
            .field(3, FieldValue::composite(coded))
            .field(4, severity)
            .field(8, e.text.as_str())
    } else {
        // Before v2.5: ERR-1 is one CM, the location and then the code as subcomponents.
        let [seg, seq, field] = location;
        SegmentBuilder::new("ERR").field(
            1,
            FieldValue::composite([seg, seq, field, FieldValue::composite(coded)]),
        )
    };
    out.push(err);
}

/// True when an HL7 version string (`2.5.1`) is at least `major.minor`.
pub fn version_at_least(version: &str, major: u32, minor: u32) -> bool {
    let mut parts = version.trim().split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let ma = parts.next().unwrap_or(0);
    let mi = parts.next().unwrap_or(0);
    (ma, mi) >= (major, minor)
}

/// An acknowledgement as a sender reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedAck {
    pub code: AckCode,
    /// MSA-2: the control id of the message it acknowledges.
    pub acked_control_id: String,
    /// ERR-3 code (or ERR-1.4.1 before v2.5), when present.
    pub error_code: Option<u16>,
    /// ERR-8, else MSA-3, else the code's table text.
    pub text: Option<String>,
}

impl ReceivedAck {
    /// Reads MSA and ERR; `None` when the message has no valid MSA-1.
    pub fn read(msg: &Message<'_>) -> Option<Self> {
        let code = AckCode::parse(msg.get("MSA-1").raw())?;
        let acked_control_id = msg.get("MSA-2").decoded().into_owned();
        let modern_code = msg.get("ERR-3.1").raw().parse().ok();
        let old_code = msg.get("ERR-1.4").subcomponent(1).raw().parse().ok();
        let error_code = modern_code.or(old_code);
        let text = msg
            .get("ERR-8")
            .text()
            .or_else(|| msg.get("MSA-3").text())
            .or_else(|| error_code.map(|c| error_text(c).to_owned()));
        Some(ReceivedAck {
            code,
            acked_control_id,
            error_code,
            text,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSG: &str =
        "MSH|^~\\&|EHR|CLINIC|CAREHUB|LAB|20261125101500||ADT^A01^ADT_A01|MSG0001|P|2.5.1||||||UNICODE UTF-8\rPID|1||X";

    #[test]
    fn mirrors_the_header_and_acknowledges_the_control_id() {
        let m = Message::parse(MSG).expect("parses");
        let ack = build(&m, AckCode::AA, None, "ACK-1");
        let a = Message::parse(&ack).expect("the ACK parses");
        assert_eq!(a.get("MSH-3").raw(), "CAREHUB");
        assert_eq!(a.get("MSH-4").raw(), "LAB");
        assert_eq!(a.get("MSH-5").raw(), "EHR");
        assert_eq!(a.get("MSH-6").raw(), "CLINIC");
        assert_eq!(a.get("MSH-9").raw(), "ACK^A01^ACK");
        assert_eq!(a.get("MSH-10").raw(), "ACK-1");
        assert_eq!(a.get("MSH-11").raw(), "P");
        assert_eq!(a.get("MSH-12").raw(), "2.5.1");
        assert_eq!(a.get("MSH-18").raw(), "UNICODE UTF-8");
        assert_eq!(a.get("MSA-1").raw(), "AA");
        assert_eq!(a.get("MSA-2").raw(), "MSG0001");
        assert!(a.segment("ERR").is_none());
        let r = ReceivedAck::read(&a).expect("readable");
        assert_eq!(r.code, AckCode::AA);
        assert_eq!(r.acked_control_id, "MSG0001");
    }

    #[test]
    fn errors_carry_an_err_segment_with_code_and_location() {
        let m = Message::parse(MSG).expect("parses");
        let err = AckError::new(101, "PID-3 (patient identifier) is required").at(ErrorLocation::field("PID", 1, 3));
        let ack = build(&m, AckCode::AE, Some(&err), "ACK-2");
        let a = Message::parse(&ack).expect("parses");
        assert_eq!(a.get("MSA-1").raw(), "AE");
        assert_eq!(a.get("ERR-2").raw(), "PID^1^3");
        assert_eq!(a.get("ERR-3").raw(), "101^Required field missing^HL70357");
        assert_eq!(a.get("ERR-4").raw(), "E");
        assert_eq!(a.get("ERR-8").decoded(), "PID-3 (patient identifier) is required");
        let r = ReceivedAck::read(&a).expect("readable");
        assert_eq!((r.code, r.error_code), (AckCode::AE, Some(101)));
    }

    #[test]
    fn before_v2_5_the_error_goes_to_err_1_and_msa_3() {
        let old = MSG.replace("|2.5.1|", "|2.3|");
        let m = Message::parse(&old).expect("parses");
        let err = AckError::new(200, "ZZZ^Z01 is not handled").at(ErrorLocation::field("MSH", 1, 9));
        let ack = build(&m, AckCode::AR, Some(&err), "ACK-3");
        let a = Message::parse(&ack).expect("parses");
        assert_eq!(a.get("MSA-3").decoded(), "ZZZ^Z01 is not handled");
        assert_eq!(a.get("ERR-1").raw(), "MSH^1^9^200&Unsupported message type&HL70357");
        assert_eq!(ReceivedAck::read(&a).expect("readable").error_code, Some(200));
    }

    #[test]
    fn answers_with_the_senders_delimiters() {
        let text = "MSH$*#!@$A$B$C$D$2026$$ORU*R01$X9$P$2.4\rPID$1";
        let m = Message::parse(text).expect("parses");
        let ack = build(&m, AckCode::AA, None, "A*1");
        assert!(ack.starts_with("MSH$*#!@$C$D$A$B$"), "{ack}");
        let a = Message::parse(&ack).expect("parses");
        assert_eq!(a.get("MSH-10").decoded(), "A*1");
        assert_eq!(a.get("MSA-2").raw(), "X9");
    }

    #[test]
    fn enhanced_mode_follows_msh_15() {
        let with = |a: &str, b: &str| MSG.replace("|2.5.1|", &format!("|2.5.1|||{a}|{b}|"));
        let text = with("AL", "NE");
        let m = Message::parse(&text).expect("parses");
        let mode = AckMode::of(&m);
        assert!(matches!(mode, AckMode::Enhanced { .. }));
        assert_eq!(mode.receipt_code(Outcome::Accept), Some(AckCode::CA));
        assert_eq!(mode.receipt_code(Outcome::Reject), Some(AckCode::CR));
        let text = with("ER", "AL");
        let m = Message::parse(&text).expect("parses");
        let mode = AckMode::of(&m);
        assert_eq!(mode.receipt_code(Outcome::Accept), None);
        assert_eq!(mode.receipt_code(Outcome::Error), Some(AckCode::CE));
        let m = Message::parse(MSG).expect("parses");
        assert_eq!(AckMode::of(&m), AckMode::Original);
        assert_eq!(AckMode::of(&m).receipt_code(Outcome::Error), Some(AckCode::AE));
    }

    #[test]
    fn unreadable_input_still_gets_an_answer() {
        let ack = build_unparsed(AckCode::AR, &AckError::new(100, "no MSH"), "CAREHUB", "X1");
        let a = Message::parse(&ack).expect("parses");
        assert_eq!(a.get("MSA-1").raw(), "AR");
        assert_eq!(a.get("MSA-2").raw(), "");
        assert_eq!(a.get("ERR-3.1").raw(), "100");
    }
}
