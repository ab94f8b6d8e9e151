//! Where HL7 v2 fields become canonical values. Pure: no database, so the
//! MLLP listener can run it before it acknowledges (content errors answer AE
//! at once) and the pipeline runs the same code when it applies the message.
//!
//! | HL7                        | canonical                                           |
//! |----------------------------|-----------------------------------------------------|
//! | PID-3 (CX.1, CX.4, CX.5)   | `patient_identifier` (value, system, type)          |
//! | PID-5 (XPN.1, .2, .3)      | `patient.family_name`, `given_names`                |
//! | PID-7, PID-8               | `patient.birth_date`, `sex`                         |
//! | PID-11, PID-13             | `patient.address` (JSON), `phone`, `email`          |
//! | PV1-19, PV1-2, PV1-3, PV1-44/45 | `encounter` (visit number, class, location, times) |
//! | MRG-1                      | the patient merged into the PID patient (A40)       |
//! | MSH-4 (orders)             | `service_order.clinic_id` (organization, kind clinic) |
//! | ORC-1/5, ORC-2/3, OBR-2/3  | `service_order` status, placer and filler numbers   |
//! | ORC-12 / OBR-16            | `practitioner` (orderer)                            |
//! | OBR-4                      | `order_item` code                                   |
//! | TQ1-9 / ORC-7.6 / OBR-27.6 | `service_order.priority`; TQ1-8 / ORC-7.5 `due_date`|
//! | OBX under OBR (orders)     | `service_order.device_spec.observations`            |
//! | NTE under ORC/OBR          | `service_order.note`                                |
//! | OBX (ORU)                  | `observation` (code, value, unit, range, flags, status) |
//! | SCH, AIS, AIL (SIU)        | `appointment`                                       |
//! | FT1 (DFT)                  | `invoice_line`, on the visit's (PV1-19) invoice     |
//!
//! Identifier systems: CX.4 with an ISO universal id becomes `urn:oid:<oid>`;
//! another universal id is used as it is; a bare namespace becomes
//! `urn:carehub:hl7-aa:<namespace>`; no CX.4 falls back to the sending
//! facility (MSH-4). Segments a message type does not map are listed in
//! [`Mapped::unmapped`]: they stay in the raw message, counted.

use std::collections::BTreeMap;

use carehub_hl7::codec::ack::AckError;
use carehub_hl7::codec::er7::{ErrorLocation, Message, Segment, Value};
use carehub_schema::model::{Identifier, Sex};
use carehub_schema::records::{
    AppointmentData, ChargeLine, EncounterData, InvoiceData, ItemData, OrderData, PractitionerData, ResultData,
    ResultValue,
};
use carehub_schema::repo::{HumanName, PatientData};
use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone, Utc};
use serde::Serialize;

/// Why a message cannot be mapped: the HL7 error for the ACK, and whether it
/// is a rejection (AR: unsupported type or version) or an error (AE: content).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct MappingError {
    pub code: u16,
    pub location: Option<ErrorLocation>,
    pub reason: String,
    pub reject: bool,
}

impl MappingError {
    fn missing(seg: &str, seq: usize, field: usize, what: &str) -> Self {
        MappingError {
            code: 101,
            location: Some(ErrorLocation::field(seg, seq, field)),
            reason: format!("{seg}-{field} ({what}) is required"),
            reject: false,
        }
    }

    fn invalid(seg: &str, seq: usize, field: usize, what: &str) -> Self {
        MappingError {
            code: 102,
            location: Some(ErrorLocation::field(seg, seq, field)),
            reason: format!("{seg}-{field} is not a valid {what}"),
            reject: false,
        }
    }

    fn unsupported(code: u16, field: usize, reason: String) -> Self {
        MappingError {
            code,
            location: Some(ErrorLocation::field("MSH", 1, field)),
            reason,
            reject: true,
        }
    }

    fn rejecting(mut self) -> Self {
        self.reject = true;
        self
    }

    /// The ERR content for the ACK.
    pub fn ack_error(&self) -> AckError {
        AckError {
            code: self.code,
            location: self.location.clone(),
            text: self.reason.clone(),
        }
    }

    /// The bounded dead-letter code.
    pub fn dead_letter_code(&self) -> &'static str {
        if self.reject { "unknown_type" } else { "invalid_data" }
    }
}

/// A message turned into canonical commands.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Mapped {
    pub command: Command,
    /// Segments this message type does not map, with how often they occur.
    pub unmapped: BTreeMap<String, usize>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Command {
    /// ADT A01/A04/A05/A08/A28/A31 (and A03 with the visit closed).
    UpsertPatient {
        patient: PatientData,
        encounter: Option<EncounterData>,
    },
    /// ADT A40: `prior` (MRG-1) is merged into `survivor` (PID).
    MergePatients {
        survivor: PatientData,
        prior: Vec<Identifier>,
    },
    /// ORM O01 / OML O21: new orders, changes, cancels, status.
    Orders {
        patient: PatientData,
        orders: Vec<OrderData>,
        /// The ordering clinic: the sending facility (MSH-4).
        clinic: Option<Identifier>,
    },
    /// ORU R01: results.
    Results {
        patient: PatientData,
        results: Vec<ResultData>,
    },
    /// SIU S12–S15.
    Appointment {
        patient: PatientData,
        appointment: AppointmentData,
    },
    /// DFT P03: charges.
    Charges { patient: PatientData, invoice: InvoiceData },
}

impl Command {
    /// The patient the command writes first (the survivor is not: a merge
    /// is applied on its own).
    pub fn patient(&self) -> Option<&PatientData> {
        match self {
            Command::UpsertPatient { patient, .. }
            | Command::Orders { patient, .. }
            | Command::Results { patient, .. }
            | Command::Appointment { patient, .. }
            | Command::Charges { patient, .. } => Some(patient),
            Command::MergePatients { .. } => None,
        }
    }
}

/// The message types and triggers this pipeline maps.
pub fn supported(code: &str, trigger: &str) -> Option<bool> {
    let ok = match code {
        "ADT" => matches!(trigger, "A01" | "A03" | "A04" | "A05" | "A08" | "A28" | "A31" | "A40"),
        "ORM" => trigger == "O01",
        "OML" => trigger == "O21",
        "ORU" => trigger == "R01",
        "SIU" => matches!(trigger, "S12" | "S13" | "S14" | "S15"),
        "DFT" => trigger == "P03",
        _ => return None,
    };
    Some(ok)
}

/// Longest MSH-10 accepted: the length HL7 v2.7+ gives the field (v2.5: 20).
/// Longer ones are refused rather than truncated, since the control id is
/// the message's identity (its idempotency key and the ACK's MSA-2).
pub const MAX_CONTROL_ID: usize = 199;

/// What makes a message unidentifiable (MSH-10 blank or over-long): such a
/// message has no key of its own and is refused AR, never taken as a
/// duplicate of another (hardening item 4).
pub fn identity_error(msg: &Message<'_>) -> Option<MappingError> {
    let control_id = msg.control_id();
    if control_id.trim().is_empty() {
        return Some(MappingError::missing("MSH", 1, 10, "message control id").rejecting());
    }
    if control_id.len() > MAX_CONTROL_ID {
        let mut e = MappingError::invalid("MSH", 1, 10, "message control id");
        e.reason = format!("MSH-10 is longer than {MAX_CONTROL_ID} characters");
        return Some(e.rejecting());
    }
    None
}

/// A NUL byte anywhere in the message: refused AE (ERR 102) before it is
/// acknowledged, since PostgreSQL text cannot hold it and stripping it would
/// alter clinical data silently (hardening item 12). The error names where,
/// never what.
pub fn nul_error(msg: &Message<'_>) -> Option<MappingError> {
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for seg in msg.segments() {
        let seq = seen.entry(seg.name()).and_modify(|n| *n += 1).or_insert(1);
        let raw = seg.raw();
        let Some(at) = raw.bytes().position(|b| b == 0) else {
            continue;
        };
        let sep = msg.delimiters().field;
        let fields_before = raw.as_bytes()[..at].iter().filter(|&&b| b == sep).count();
        // MSH-1 is the separator itself, so MSH's fields count one further.
        let field = if seg.name() == "MSH" {
            fields_before + 1
        } else {
            fields_before
        };
        let name = seg.name();
        return Some(MappingError {
            code: 102,
            location: Some(ErrorLocation::field(name, *seq, field)),
            reason: format!("{name}-{field} contains a NUL byte (0x00)"),
            reject: false,
        });
    }
    None
}

/// Maps one message, or says why it cannot be.
pub fn map(msg: &Message<'_>) -> Result<Mapped, MappingError> {
    if let Some(e) = identity_error(msg).or_else(|| nul_error(msg)) {
        return Err(e);
    }
    let version = msg.version();
    let major_minor = version.trim().split('.').take(2).collect::<Vec<_>>().join(".");
    if !matches!(
        major_minor.as_str(),
        "2.1" | "2.2" | "2.3" | "2.4" | "2.5" | "2.6" | "2.7" | "2.8" | "2.9"
    ) {
        return Err(MappingError::unsupported(
            203,
            12,
            format!("HL7 version {version:?} is not supported (2.1 to 2.9 are)"),
        ));
    }
    let (code, trigger) = msg.message_type();
    match supported(code, trigger) {
        None => {
            return Err(MappingError::unsupported(
                200,
                9,
                format!("message type {code} is not handled"),
            ));
        }
        Some(false) => {
            return Err(MappingError::unsupported(
                201,
                9,
                format!("event {code}^{trigger} is not handled"),
            ));
        }
        Some(true) => {}
    }
    let ctx = Ctx::new(msg);
    let (command, used): (Command, &[&str]) = match code {
        "ADT" if trigger == "A40" => (merge(&ctx)?, &["MSH", "EVN", "PID", "PD1", "MRG"]),
        "ADT" => {
            let patient = patient(&ctx)?;
            let encounter = encounter(&ctx, trigger)?;
            (
                Command::UpsertPatient { patient, encounter },
                &["MSH", "EVN", "PID", "PV1"],
            )
        }
        "ORM" | "OML" => (
            Command::Orders {
                patient: patient(&ctx)?,
                orders: orders(&ctx)?,
                clinic: sending_facility(msg),
            },
            &["MSH", "PID", "ORC", "OBR", "OBX", "NTE", "TQ1"],
        ),
        "ORU" => (
            Command::Results {
                patient: patient(&ctx)?,
                results: results(&ctx)?,
            },
            &["MSH", "PID", "OBR", "OBX", "ORC"],
        ),
        "SIU" => (
            Command::Appointment {
                patient: patient(&ctx)?,
                appointment: appointment(&ctx, trigger)?,
            },
            &["MSH", "SCH", "PID", "AIS", "AIL", "RGS"],
        ),
        _ => (
            Command::Charges {
                patient: patient(&ctx)?,
                invoice: charges(&ctx)?,
            },
            &["MSH", "EVN", "PID", "PV1", "FT1"],
        ),
    };
    let mut unmapped = BTreeMap::new();
    for seg in msg.segments() {
        if !used.contains(&seg.name()) {
            *unmapped.entry(seg.name().to_owned()).or_insert(0) += 1;
        }
    }
    Ok(Mapped { command, unmapped })
}

/// The message with its sending facility, for identifier fallbacks.
struct Ctx<'m, 'a> {
    msg: &'m Message<'a>,
    facility_system: String,
}

impl<'m, 'a> Ctx<'m, 'a> {
    fn new(msg: &'m Message<'a>) -> Self {
        let facility = msg.msh().field(4);
        let facility_system = hd_system(&facility).unwrap_or_else(|| {
            let app = msg.msh().field(3).component(1).decoded().into_owned();
            format!("urn:carehub:hl7-facility:{app}")
        });
        Ctx { msg, facility_system }
    }

    fn seg(&self, name: &str) -> Option<&'m Segment<'a>> {
        self.msg.segment(name)
    }
}

/// An assigning authority (HD: namespace, universal id, universal id type)
/// as an identifier system URI; the one rule for CX.4, EI.2-4, XCN.9 and MSH-4.
/// The one rule of `carehub_hl7::codec::identity`, shared with the FHIR
/// conversion (they used to disagree on a bare universal id).
fn authority_system(namespace: Option<String>, universal: Option<String>, kind: Option<String>) -> Option<String> {
    carehub_hl7::codec::identity::assigner_system(namespace, universal, kind)
}

/// HD as the components of a field (MSH-4).
fn hd_system(hd: &Value<'_>) -> Option<String> {
    authority_system(hd.component(1).text(), hd.component(2).text(), hd.component(3).text())
}

/// The sending facility (MSH-4) as an organization identifier: its namespace
/// (or universal id) under the system `urn:carehub:hl7-facility`. Routing
/// configuration (`[lab.clinics.<value>]`) names clinics by this value.
pub fn sending_facility(msg: &Message<'_>) -> Option<Identifier> {
    let hd = msg.msh().field(4);
    let value = hd.component(1).text().or_else(|| hd.component(2).text())?;
    Some(Identifier {
        system: FACILITY_SYSTEM.to_owned(),
        value,
        type_code: None,
    })
}

/// Identifier system of organizations known by their HL7 facility name.
pub const FACILITY_SYSTEM: &str = "urn:carehub:hl7-facility";

/// HD as the subcomponents of a component (CX.4 inside PID-3, XCN.9).
fn hd_sub_system(c: &Value<'_>) -> Option<String> {
    authority_system(
        c.subcomponent(1).text(),
        c.subcomponent(2).text(),
        c.subcomponent(3).text(),
    )
}

/// YYYY[MM[DD[...]]] → a date (full dates only).
pub fn hl7_date(s: &str) -> Option<NaiveDate> {
    let d = s.get(..8)?;
    if !d.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    NaiveDate::parse_from_str(d, "%Y%m%d").ok()
}

/// DTM `YYYYMMDD[HH[MM[SS[.S…]]]][+/-ZZZZ]` → UTC; without an offset, UTC is assumed.
pub fn hl7_timestamp(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    let (body, offset) = match s.find(['+', '-']) {
        Some(i) if i >= 8 => (&s[..i], Some(&s[i..])),
        _ => (s, None),
    };
    let body = body.split('.').next()?;
    if body.len() < 8 || !body.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let padded = format!("{body:0<14}");
    let naive = NaiveDateTime::parse_from_str(&padded[..14], "%Y%m%d%H%M%S").ok()?;
    let offset_secs = match offset {
        Some(o) if o.len() == 5 => {
            let sign = if o.starts_with('-') { -1 } else { 1 };
            let h: i32 = o[1..3].parse().ok()?;
            let m: i32 = o[3..5].parse().ok()?;
            sign * (h * 3600 + m * 60)
        }
        Some(_) => return None,
        None => 0,
    };
    let tz = chrono::FixedOffset::east_opt(offset_secs)?;
    Some(tz.from_local_datetime(&naive).single()?.with_timezone(&Utc))
}

fn opt_ts(v: &Value<'_>, seg: &str, field: usize) -> Result<Option<DateTime<Utc>>, MappingError> {
    match v.component(1).text() {
        None => Ok(None),
        Some(t) => hl7_timestamp(&t)
            .map(Some)
            .ok_or_else(|| MappingError::invalid(seg, 1, field, "timestamp")),
    }
}

mod financial;
mod orders;
mod patient;
mod results;
mod scheduling;

use financial::*;
use orders::*;
use patient::*;
use results::*;
use scheduling::*;

#[cfg(test)]
mod tests;
