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

/// Every CX repetition of a field as identifiers.
fn identifiers(ctx: &Ctx<'_, '_>, field: &Value<'_>) -> Vec<Identifier> {
    field
        .repetitions()
        .filter_map(|rep| {
            let value = rep.component(1).text()?;
            let system = hd_sub_system(&rep.component(4)).unwrap_or_else(|| ctx.facility_system.clone());
            Some(Identifier {
                system,
                value,
                type_code: rep.component(5).text(),
            })
        })
        .collect()
}

/// EI (entity identifier): EI.1 with EI.2 namespace / EI.3 universal id.
fn entity_id(ctx: &Ctx<'_, '_>, v: &Value<'_>) -> Option<Identifier> {
    let value = v.component(1).text()?;
    let system = authority_system(v.component(2).text(), v.component(3).text(), v.component(4).text())
        .unwrap_or_else(|| ctx.facility_system.clone());
    Some(Identifier {
        system,
        value,
        type_code: None,
    })
}

fn patient(ctx: &Ctx<'_, '_>) -> Result<PatientData, MappingError> {
    let pid = ctx
        .seg("PID")
        .ok_or_else(|| MappingError::missing("PID", 1, 0, "patient identification segment"))?;
    let mut ids = identifiers(ctx, &pid.field(3));
    if ids.is_empty() {
        // v2.1–2.3 senders put the external id in PID-2.
        ids = identifiers(ctx, &pid.field(2));
    }
    if ids.is_empty() {
        return Err(MappingError::missing("PID", 1, 3, "patient identifier"));
    }
    let name_field = pid.field(5);
    let name = name_field.repetitions().next().and_then(|n| {
        let family = n.component(1).subcomponent(1).text();
        let mut given: Vec<String> = Vec::new();
        given.extend(n.component(2).text());
        given.extend(n.component(3).text());
        (family.is_some() || !given.is_empty()).then_some(HumanName { family, given })
    });
    let birth_date = match pid.field(7).component(1).text() {
        None => None,
        Some(ts) => Some(hl7_date(&ts).ok_or_else(|| MappingError::invalid("PID", 1, 7, "date of birth"))?),
    };
    let sex = pid.field(8).text().map(|s| match s.as_str() {
        "M" => Sex::Male,
        "F" => Sex::Female,
        "O" | "A" | "X" => Sex::Other,
        _ => Sex::Unknown,
    });
    let address = pid.field(11).repetitions().next().and_then(|a| {
        // XAD.1 is SAD: street address, else street name (SAD.2).
        let street = a
            .component(1)
            .subcomponent(1)
            .text()
            .or_else(|| a.component(1).subcomponent(2).text());
        let line2 = a.component(2).text();
        let city = a.component(3).text();
        let state = a.component(4).text();
        let postal = a.component(5).text();
        let country = a.component(6).text();
        let lines: Vec<String> = street.into_iter().chain(line2).collect();
        if lines.is_empty() && city.is_none() && postal.is_none() {
            return None;
        }
        Some(serde_json::json!({
            "line": lines, "city": city, "state": state, "postal_code": postal, "country": country,
        }))
    });
    let mut phone = None;
    let mut email = None;
    for rep in pid.field(13).repetitions() {
        let is_email = rep.component(2).raw() == "NET" || rep.component(3).raw() == "Internet";
        if is_email {
            email = email.or_else(|| rep.component(4).text());
        } else {
            let formatted = rep
                .component(1)
                .text()
                .or_else(|| rep.component(12).text())
                .or_else(|| {
                    let area = rep.component(6).text().unwrap_or_default();
                    let local = rep.component(7).text()?;
                    Some(format!("{area}{local}"))
                });
            phone = phone.or(formatted);
        }
    }
    Ok(PatientData {
        identifiers: ids,
        name,
        birth_date,
        sex,
        phone,
        email,
        address,
        managing_organization: None,
    })
}

fn encounter(ctx: &Ctx<'_, '_>, trigger: &str) -> Result<Option<EncounterData>, MappingError> {
    let Some(pv1) = ctx.seg("PV1") else {
        return Ok(None);
    };
    let Some(visit) = identifiers(ctx, &pv1.field(19)).into_iter().next() else {
        return Ok(None);
    };
    let admitted_at = opt_ts(&pv1.field(44), "PV1", 44)?;
    let discharged_at = opt_ts(&pv1.field(45), "PV1", 45)?;
    let status = match trigger {
        "A03" => "finished",
        "A05" => "planned",
        _ if discharged_at.is_some() => "finished",
        _ => "in-progress",
    };
    let location = pv1.field(3);
    let location = [1, 2, 3]
        .iter()
        .filter_map(|&c| location.component(c).text())
        .collect::<Vec<_>>()
        .join("/");
    Ok(Some(EncounterData {
        visit,
        class: pv1.field(2).text(),
        status,
        location: (!location.is_empty()).then_some(location),
        admitted_at,
        discharged_at,
    }))
}

fn merge(ctx: &Ctx<'_, '_>) -> Result<Command, MappingError> {
    let survivor = patient(ctx)?;
    let mrg = ctx
        .seg("MRG")
        .ok_or_else(|| MappingError::missing("MRG", 1, 1, "merge segment"))?;
    let prior = identifiers(ctx, &mrg.field(1));
    if prior.is_empty() {
        return Err(MappingError::missing("MRG", 1, 1, "prior patient identifier"));
    }
    Ok(Command::MergePatients { survivor, prior })
}

fn priority(code: &str) -> &'static str {
    match code.trim() {
        "S" => "stat",
        "A" | "P" | "C" => "asap",
        "U" => "urgent",
        _ => "routine",
    }
}

/// ORC-1 and ORC-5 → the canonical status this message sets.
fn order_status(control: &str, orc5: Option<&str>) -> Option<&'static str> {
    match control {
        "NW" | "RL" => Some("active"),
        "CA" | "OC" | "DC" | "CR" | "OD" => Some("revoked"),
        "HD" | "OH" => Some("on-hold"),
        "SC" | "SN" | "XO" | "XX" => orc5.and_then(|s| match s {
            "CM" => Some("completed"),
            "CA" | "DC" => Some("revoked"),
            "HD" => Some("on-hold"),
            "ER" => Some("entered-in-error"),
            "IP" | "SC" | "A" => Some("active"),
            _ => None,
        }),
        _ => None,
    }
}

fn orders(ctx: &Ctx<'_, '_>) -> Result<Vec<OrderData>, MappingError> {
    let mut out: Vec<OrderData> = Vec::new();
    let mut orc_seq = 0;
    let mut obr_seq = 0;
    // Segments after an ORC belong to its order until the next ORC.
    for seg in ctx.msg.segments() {
        match seg.name() {
            "ORC" => {
                orc_seq += 1;
                let control = seg
                    .field(1)
                    .text()
                    .ok_or_else(|| MappingError::missing("ORC", orc_seq, 1, "order control"))?;
                let placer = entity_id(ctx, &seg.field(2));
                let filler = entity_id(ctx, &seg.field(3));
                let status = order_status(&control, seg.field(5).text().as_deref());
                let orderer = practitioner(ctx, &seg.field(12));
                let timing = seg.field(7);
                out.push(OrderData {
                    placer: placer.unwrap_or(Identifier {
                        system: String::new(),
                        value: String::new(),
                        type_code: None,
                    }),
                    filler,
                    control,
                    status,
                    priority: priority(timing.component(6).raw()),
                    due_date: timing.component(5).text().and_then(|t| hl7_date(&t)),
                    orderer,
                    items: Vec::new(),
                    note: None,
                    observations: Vec::new(),
                });
            }
            "OBR" => {
                obr_seq += 1;
                let Some(order) = out.last_mut() else {
                    return Err(MappingError {
                        code: 100,
                        location: Some(ErrorLocation::field("OBR", obr_seq, 0)),
                        reason: "OBR before any ORC".into(),
                        reject: false,
                    });
                };
                if order.placer.value.is_empty()
                    && let Some(p) = entity_id(ctx, &seg.field(2))
                {
                    order.placer = p;
                }
                if order.filler.is_none() {
                    order.filler = entity_id(ctx, &seg.field(3));
                }
                if order.orderer.is_none() {
                    order.orderer = practitioner(ctx, &seg.field(16));
                }
                let service = seg.field(4);
                let code = service
                    .component(1)
                    .text()
                    .ok_or_else(|| MappingError::missing("OBR", obr_seq, 4, "universal service identifier"))?;
                order.items.push(ItemData {
                    code_system: code_system(service.component(3).text().as_deref(), &ctx.facility_system),
                    code,
                    display: service.component(2).text(),
                });
                let obr_priority = seg.field(27).component(6).raw();
                if order.priority == "routine" && !obr_priority.is_empty() {
                    order.priority = priority(obr_priority);
                }
                if order.priority == "routine" && !seg.field(5).raw().is_empty() {
                    order.priority = priority(seg.field(5).raw());
                }
            }
            "TQ1" => {
                if let Some(order) = out.last_mut() {
                    if let Some(p) = seg.field(9).component(1).text() {
                        order.priority = priority(&p);
                    }
                    if let Some(end) = seg.field(8).component(1).text() {
                        order.due_date = hl7_date(&end).or(order.due_date);
                    }
                }
            }
            "NTE" => {
                if let (Some(order), Some(text)) = (out.last_mut(), nte_text(seg)) {
                    order.note = Some(match order.note.take() {
                        Some(n) => format!("{n}\n{text}"),
                        None => text,
                    });
                }
            }
            "OBX" => {
                if let Some(order) = out.last_mut() {
                    let id = seg.field(3);
                    order.observations.push(serde_json::json!({
                        "code": id.component(1).text(),
                        "display": id.component(2).text(),
                        "system": id.component(3).text(),
                        "value": seg.field(5).text(),
                        "unit": seg.field(6).component(1).text(),
                    }));
                }
            }
            _ => {}
        }
    }
    if out.is_empty() {
        return Err(MappingError::missing("ORC", 1, 1, "common order segment"));
    }
    for (i, order) in out.iter().enumerate() {
        if order.placer.value.is_empty() {
            return Err(MappingError::missing("ORC", i + 1, 2, "placer order number"));
        }
    }
    Ok(out)
}

fn nte_text(seg: &Segment<'_>) -> Option<String> {
    let parts: Vec<String> = seg.field(3).repetitions().filter_map(|r| r.text()).collect();
    (!parts.is_empty()).then(|| parts.join("\n"))
}

/// XCN → a practitioner.
fn practitioner(ctx: &Ctx<'_, '_>, xcn: &Value<'_>) -> Option<PractitionerData> {
    let rep = xcn.repetitions().next()?;
    let value = rep.component(1).text()?;
    let system = hd_sub_system(&rep.component(9)).unwrap_or_else(|| ctx.facility_system.clone());
    let mut given = Vec::new();
    given.extend(rep.component(3).text());
    given.extend(rep.component(4).text());
    Some(PractitionerData {
        identifier: Identifier {
            system,
            value,
            type_code: rep.component(13).text(),
        },
        name: HumanName {
            family: rep.component(2).subcomponent(1).text(),
            given,
        },
    })
}

/// Coding system (CWE.3) as a URI: the common HL7 table 0396 names, else as written.
fn code_system(name: Option<&str>, fallback: &str) -> String {
    match name {
        Some("LN") => "http://loinc.org".into(),
        Some("SCT") | Some("SNM") => "http://snomed.info/sct".into(),
        Some("I10") | Some("ICD10") => "http://hl7.org/fhir/sid/icd-10".into(),
        Some("CPT") | Some("C4") => "http://www.ama-assn.org/go/cpt".into(),
        Some("UCUM") => "http://unitsofmeasure.org".into(),
        Some(other) => format!("urn:carehub:hl7-cs:{other}"),
        None => format!("{fallback}#local"),
    }
}

fn result_status(code: &str) -> &'static str {
    match code {
        "F" | "U" => "final",
        "C" => "corrected",
        "X" | "D" => "cancelled",
        "W" => "entered-in-error",
        "O" | "N" => "registered",
        _ => "preliminary",
    }
}

fn results(ctx: &Ctx<'_, '_>) -> Result<Vec<ResultData>, MappingError> {
    let mut out = Vec::new();
    let mut placer = None;
    let mut filler = None;
    let mut obr_index = 0;
    let mut obx_seq = 0;
    for seg in ctx.msg.segments() {
        match seg.name() {
            "OBR" => {
                obr_index += 1;
                placer = entity_id(ctx, &seg.field(2));
                filler = entity_id(ctx, &seg.field(3));
            }
            "OBX" => {
                obx_seq += 1;
                let id = seg.field(3);
                let code = id
                    .component(1)
                    .text()
                    .ok_or_else(|| MappingError::missing("OBX", obx_seq, 3, "observation identifier"))?;
                let value_type = seg.field(2).text().unwrap_or_default();
                let raw_value = seg.field(5);
                let value = match (value_type.as_str(), raw_value.text()) {
                    (_, None) => ResultValue::None,
                    ("NM" | "SN", Some(v)) => {
                        if v.parse::<f64>().is_err() && value_type == "NM" {
                            return Err(MappingError::invalid("OBX", obx_seq, 5, "number (OBX-2 is NM)"));
                        }
                        ResultValue::Quantity(v)
                    }
                    ("CE" | "CWE" | "CNE", Some(_)) => {
                        ResultValue::Coded(raw_value.component(1).text().unwrap_or_default())
                    }
                    (_, Some(v)) => {
                        // Text results may repeat (one line per repetition).
                        let lines: Vec<String> = raw_value.repetitions().filter_map(|r| r.text()).collect();
                        ResultValue::String(if lines.len() > 1 { lines.join("\n") } else { v })
                    }
                };
                let order_ref = filler
                    .as_ref()
                    .or(placer.as_ref())
                    .map_or_else(|| format!("obr{obr_index}"), |i| format!("{}|{}", i.system, i.value));
                let sub_id = seg.field(4).raw();
                out.push(ResultData {
                    placer: placer.clone(),
                    filler: filler.clone(),
                    result_key: format!("{order_ref}|{code}|{sub_id}"),
                    status: result_status(seg.field(11).raw()),
                    code_system: code_system(id.component(3).text().as_deref(), &ctx.facility_system),
                    code,
                    display: id.component(2).text(),
                    value,
                    unit: seg.field(6).component(1).text(),
                    reference_range: seg.field(7).text(),
                    interpretation: seg.field(8).text(),
                    effective_at: opt_ts(&seg.field(14), "OBX", 14)?,
                });
            }
            _ => {}
        }
    }
    if out.is_empty() {
        return Err(MappingError::missing("OBX", 1, 3, "observation result"));
    }
    Ok(out)
}

fn appointment(ctx: &Ctx<'_, '_>, trigger: &str) -> Result<AppointmentData, MappingError> {
    let sch = ctx
        .seg("SCH")
        .ok_or_else(|| MappingError::missing("SCH", 1, 1, "schedule activity segment"))?;
    let placer = entity_id(ctx, &sch.field(1))
        .or_else(|| entity_id(ctx, &sch.field(2)))
        .ok_or_else(|| MappingError::missing("SCH", 1, 1, "appointment id"))?;
    let status = match trigger {
        "S15" => "cancelled",
        _ => match sch.field(25).component(1).raw() {
            "Pending" | "Waitlist" => "pending",
            "Cancelled" | "Deleted" => "cancelled",
            "Complete" => "fulfilled",
            "Noshow" => "noshow",
            _ => "booked",
        },
    };
    let timing = sch.field(11);
    let ais = ctx.seg("AIS");
    let start = match ais.map(|a| a.field(4)).filter(|f| !f.is_empty()) {
        Some(f) => opt_ts(&f, "AIS", 4)?,
        None => opt_ts(&timing.component(4), "SCH", 11)?,
    };
    let duration = sch
        .field(9)
        .text()
        .or_else(|| ais.and_then(|a| a.field(7).text()))
        .and_then(|d| d.parse::<i32>().ok());
    let reason = sch.field(7);
    let location = ctx.seg("AIL").and_then(|a| a.field(3).component(1).text());
    Ok(AppointmentData {
        placer,
        filler_id: sch.field(2).component(1).text(),
        status,
        reason_code: reason.component(1).text(),
        reason_display: reason.component(2).text(),
        start_at: start,
        duration_minutes: duration,
        location,
        placer_order: entity_id(ctx, &sch.field(26)),
    })
}

fn charges(ctx: &Ctx<'_, '_>) -> Result<InvoiceData, MappingError> {
    let number = ctx
        .seg("PV1")
        .and_then(|pv1| pv1.field(19).component(1).text())
        .or_else(|| ctx.seg("PID").and_then(|pid| pid.field(18).component(1).text()))
        .ok_or_else(|| MappingError::missing("PV1", 1, 19, "visit number (or PID-18 account number)"))?;
    let mut lines = Vec::new();
    let mut currency: Option<String> = None;
    for (i, ft1) in ctx.msg.segments_named("FT1").enumerate() {
        let seq = i + 1;
        let code = ft1.field(7);
        let quantity = ft1.field(10).text().unwrap_or_else(|| "1".into());
        let qty: f64 = quantity
            .parse()
            .map_err(|_| MappingError::invalid("FT1", seq, 10, "quantity"))?;
        let extended = ft1.field(11);
        let unit = ft1.field(12);
        let amount_minor = match extended.component(1).text() {
            Some(a) => Some(minor_units(&a).ok_or_else(|| MappingError::invalid("FT1", seq, 11, "amount"))?),
            None => None,
        };
        let unit_minor = match unit.component(1).text() {
            Some(a) => Some(minor_units(&a).ok_or_else(|| MappingError::invalid("FT1", seq, 12, "amount"))?),
            None => None,
        };
        let (unit_price_minor, amount_minor) = match (unit_minor, amount_minor) {
            (Some(u), Some(a)) => (u, a),
            (Some(u), None) => (u, (u as f64 * qty).round() as i64),
            (None, Some(a)) => (if qty != 0.0 { (a as f64 / qty).round() as i64 } else { a }, a),
            (None, None) => return Err(MappingError::missing("FT1", seq, 11, "transaction amount")),
        };
        // Credits and payments reduce the balance.
        let sign = if matches!(ft1.field(6).raw(), "CD" | "PY" | "AJ") {
            -1
        } else {
            1
        };
        currency = currency
            .or_else(|| extended.component(2).text())
            .or_else(|| unit.component(2).text());
        lines.push(ChargeLine {
            code: code.component(1).text(),
            description: code
                .component(2)
                .text()
                .or_else(|| ft1.field(8).text())
                .or_else(|| code.component(1).text())
                .unwrap_or_else(|| "charge".into()),
            quantity,
            unit_price_minor,
            amount_minor: sign * amount_minor,
        });
    }
    if lines.is_empty() {
        return Err(MappingError::missing("FT1", 1, 0, "financial transaction"));
    }
    Ok(InvoiceData {
        number,
        // ISO 4217 "XXX": no currency given.
        currency: currency.unwrap_or_else(|| "XXX".into()),
        lines,
    })
}

/// "12.5" → 1250 (two decimal places, as MO amounts are written).
fn minor_units(s: &str) -> Option<i64> {
    let s = s.trim();
    let (neg, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    if whole.is_empty() && frac.is_empty() || !whole.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    if !frac.chars().all(|c| c.is_ascii_digit()) || frac.len() > 4 {
        return None;
    }
    let whole: i64 = if whole.is_empty() { 0 } else { whole.parse().ok()? };
    let mut cents = format!("{frac:0<2}");
    let round_up = cents.len() > 2 && cents.as_bytes()[2] >= b'5';
    cents.truncate(2);
    let v = whole * 100 + cents.parse::<i64>().ok()? + i64::from(round_up);
    Some(if neg { -v } else { v })
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

#[cfg(test)]
mod tests;
