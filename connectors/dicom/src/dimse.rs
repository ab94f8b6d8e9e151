//! DIMSE command sets (PS3.7 section 9.3 and annex E): read from and written
//! to the Implicit VR Little Endian bytes every command travels in, with
//! dicom-object. dicom-rs has no service layer: the commands, their fields
//! and statuses are carehub's.

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::entries::IMPLICIT_VR_LITTLE_ENDIAN;

/// The Verification SOP Class (PS3.4 annex A).
pub const VERIFICATION: &str = "1.2.840.10008.1.1";

/// Command Field values (PS3.7 E.1).
pub mod field {
    pub const C_STORE_RQ: u16 = 0x0001;
    pub const C_STORE_RSP: u16 = 0x8001;
    pub const C_ECHO_RQ: u16 = 0x0030;
    pub const C_ECHO_RSP: u16 = 0x8030;
}

/// CommandDataSetType: no data set follows (PS3.7 E.1).
pub const NO_DATA_SET: u16 = 0x0101;

/// Status values (PS3.7 annex C; C-STORE's in PS3.4 B.2.3).
pub mod status {
    pub const SUCCESS: u16 = 0x0000;
    /// C-STORE: stored as a new version of an instance received before with other content.
    pub const WARNING_NEW_VERSION: u16 = 0xB000;
    pub const NOT_AUTHORIZED: u16 = 0x0124;
    pub const SOP_CLASS_NOT_SUPPORTED: u16 = 0x0122;
    pub const OUT_OF_RESOURCES: u16 = 0xA700;
    pub const DATA_SET_MISMATCH: u16 = 0xA900;
    pub const CANNOT_UNDERSTAND: u16 = 0xC000;
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the command set does not parse: {0}")]
    Parse(String),
    #[error("the command set lacks {0}")]
    Missing(&'static str),
    #[error("the command set cannot be written: {0}")]
    Write(String),
}

/// A received request's command set: what a response needs of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub field: u16,
    pub message_id: u16,
    pub affected_sop_class: Option<String>,
    pub affected_sop_instance: Option<String>,
    /// Whether a data set follows the command.
    pub has_data_set: bool,
}

fn ts() -> dicom_encoding::TransferSyntax {
    IMPLICIT_VR_LITTLE_ENDIAN.erased()
}

fn uid(obj: &InMemDicomObject, tag: dicom_core::Tag) -> Option<String> {
    let e = obj.element_opt(tag).ok().flatten()?;
    let s = e.to_str().ok()?;
    Some(s.trim_end_matches(['\0', ' ']).to_owned())
}

impl Command {
    /// Reads a command set (the bytes of its command PDVs, reassembled).
    pub fn parse(bytes: &[u8]) -> Result<Command, Error> {
        check_lengths(bytes)?;
        let obj = InMemDicomObject::read_dataset_with_ts(bytes, &ts()).map_err(|e| Error::Parse(e.to_string()))?;
        let int = |tag, name| -> Result<u16, Error> {
            obj.element_opt(tag)
                .ok()
                .flatten()
                .and_then(|e| e.to_int::<u16>().ok())
                .ok_or(Error::Missing(name))
        };
        Ok(Command {
            field: int(tags::COMMAND_FIELD, "CommandField (0000,0100)")?,
            message_id: int(tags::MESSAGE_ID, "MessageID (0000,0110)")?,
            affected_sop_class: uid(&obj, tags::AFFECTED_SOP_CLASS_UID),
            affected_sop_instance: uid(&obj, tags::AFFECTED_SOP_INSTANCE_UID),
            has_data_set: int(tags::COMMAND_DATA_SET_TYPE, "CommandDataSetType (0000,0800)")? != NO_DATA_SET,
        })
    }
}

/// A command set is group 0000 only, Implicit VR Little Endian, no
/// sequences (PS3.7 6.3.1): each element's declared length must fit in
/// what is left. Checked before parsing, because the parser reserves (and
/// zeroes) a value's declared length before reading it: twelve hostile
/// bytes declaring 4 GiB would cost 4 GiB.
fn check_lengths(mut bytes: &[u8]) -> Result<(), Error> {
    while !bytes.is_empty() {
        let [g0, g1, _, _, l0, l1, l2, l3, rest @ ..] = bytes else {
            return Err(Error::Parse("a truncated element header".into()));
        };
        if u16::from_le_bytes([*g0, *g1]) != 0x0000 {
            return Err(Error::Parse("an element outside group 0000".into()));
        }
        let len = u32::from_le_bytes([*l0, *l1, *l2, *l3]) as usize;
        if len > rest.len() {
            return Err(Error::Parse(format!(
                "an element of {len} bytes where {} remain",
                rest.len()
            )));
        }
        bytes = &rest[len..];
    }
    Ok(())
}

/// A response command set without a data set: `field`, the request's
/// message id, `status`, the affected SOP class and instance, and an
/// ErrorComment (0000,0902) saying why, for a status other than success.
pub fn response(field: u16, request: &Command, status: u16, comment: Option<&str>) -> Result<Vec<u8>, Error> {
    let mut obj = InMemDicomObject::new_empty();
    if let Some(class) = &request.affected_sop_class {
        obj.put(DataElement::new(
            tags::AFFECTED_SOP_CLASS_UID,
            VR::UI,
            PrimitiveValue::from(even_uid(class)),
        ));
    }
    obj.put(DataElement::new(
        tags::COMMAND_FIELD,
        VR::US,
        PrimitiveValue::from(field),
    ));
    obj.put(DataElement::new(
        tags::MESSAGE_ID_BEING_RESPONDED_TO,
        VR::US,
        PrimitiveValue::from(request.message_id),
    ));
    obj.put(DataElement::new(
        tags::COMMAND_DATA_SET_TYPE,
        VR::US,
        PrimitiveValue::from(NO_DATA_SET),
    ));
    obj.put(DataElement::new(tags::STATUS, VR::US, PrimitiveValue::from(status)));
    if let Some(instance) = &request.affected_sop_instance {
        obj.put(DataElement::new(
            tags::AFFECTED_SOP_INSTANCE_UID,
            VR::UI,
            PrimitiveValue::from(even_uid(instance)),
        ));
    }
    if let Some(comment) = comment {
        // LO: at most 64 characters, even length.
        let mut c: String = comment
            .chars()
            .filter(|c| c.is_ascii() && !c.is_ascii_control())
            .take(64)
            .collect();
        if c.len() % 2 == 1 {
            c.push(' ');
        }
        obj.put(DataElement::new(tags::ERROR_COMMENT, VR::LO, PrimitiveValue::from(c)));
    }
    let mut body = Vec::new();
    obj.write_dataset_with_ts(&mut body, &ts())
        .map_err(|e| Error::Write(e.to_string()))?;
    // CommandGroupLength (0000,0000): the bytes after it (PS3.7 E.1).
    let mut group = InMemDicomObject::new_empty();
    group.put(DataElement::new(
        tags::COMMAND_GROUP_LENGTH,
        VR::UL,
        PrimitiveValue::from(body.len() as u32),
    ));
    let mut out = Vec::new();
    group
        .write_dataset_with_ts(&mut out, &ts())
        .map_err(|e| Error::Write(e.to_string()))?;
    out.extend_from_slice(&body);
    Ok(out)
}

/// A UID padded to even length with NUL (PS3.5 9.1).
fn even_uid(uid: &str) -> String {
    let mut s = uid.to_owned();
    if s.len() % 2 == 1 {
        s.push('\0');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_echo_response_answers_the_request_it_reads() {
        let mut rq = InMemDicomObject::new_empty();
        rq.put(DataElement::new(
            tags::AFFECTED_SOP_CLASS_UID,
            VR::UI,
            PrimitiveValue::from(even_uid(VERIFICATION)),
        ));
        rq.put(DataElement::new(
            tags::COMMAND_FIELD,
            VR::US,
            PrimitiveValue::from(field::C_ECHO_RQ),
        ));
        rq.put(DataElement::new(tags::MESSAGE_ID, VR::US, PrimitiveValue::from(7u16)));
        rq.put(DataElement::new(
            tags::COMMAND_DATA_SET_TYPE,
            VR::US,
            PrimitiveValue::from(NO_DATA_SET),
        ));
        let mut bytes = Vec::new();
        rq.write_dataset_with_ts(&mut bytes, &ts()).expect("write");
        let cmd = Command::parse(&bytes).expect("parse");
        assert_eq!(cmd.field, field::C_ECHO_RQ);
        assert_eq!(cmd.message_id, 7);
        assert_eq!(cmd.affected_sop_class.as_deref(), Some(VERIFICATION));
        assert!(!cmd.has_data_set);

        let rsp = response(field::C_ECHO_RSP, &cmd, status::SUCCESS, None).expect("response");
        let back = InMemDicomObject::read_dataset_with_ts(&rsp[..], &ts()).expect("reads");
        let int = |t| back.element(t).expect("present").to_int::<u32>().expect("int");
        assert_eq!(int(tags::COMMAND_FIELD), u32::from(field::C_ECHO_RSP));
        assert_eq!(
            int(tags::MESSAGE_ID_BEING_RESPONDED_TO),
            7,
            "the request's own id, not a stale one"
        );
        assert_eq!(int(tags::STATUS), 0);
        assert_eq!(
            int(tags::COMMAND_GROUP_LENGTH) as usize,
            rsp.len() - 12,
            "group length counts what follows it"
        );
        assert_eq!(uid(&back, tags::AFFECTED_SOP_CLASS_UID).as_deref(), Some(VERIFICATION));
        assert!(
            Command::parse(b"\x08\x00").is_err(),
            "truncated input is an error, not a panic"
        );
        // A length far beyond the bytes: refused before anything is reserved for it.
        let mut huge = vec![0x00, 0x00, 0x00, 0x01, 0xF0, 0xFF, 0xFF, 0xFF];
        huge.extend([1, 2, 3, 4]);
        assert!(matches!(Command::parse(&huge), Err(Error::Parse(_))));
        assert!(
            Command::parse(&[0x08, 0x00, 0x16, 0x00, 0, 0, 0, 0]).is_err(),
            "not group 0000"
        );
    }
}
