//! HL7 v2 ⇄ FHIR R4. This file: HL7 v2 → FHIR; [`to_v2`]: back, for the
//! clinics that only speak v2.
//!
//! HL7 v2 → FHIR R4: a message becomes a `batch` Bundle of PUTs, following
//! the HL7 v2-to-FHIR mapping guidance, and the list of what was not mapped.
//!
//! | segment | resource                                                 | fields mapped |
//! |---------|----------------------------------------------------------|---------------|
//! | MSH     | MessageHeader; Organization (4, 6 `partOf` 22, 23); Provenance; Device (3) | 3, 4, 5, 6, 7, 9, 10, 12, 19, 22, 23, 24, 25 |
//! | EVN     | Provenance of the event (recorded, reason, operator, facility) | 2, 4, 5, 6, 7 |
//! | SFT     | Device (the sending software)                            | 1, 2, 3, 4 |
//! | PID     | Patient (extensions: 6, 10, 17, 22, 23, 26, 28, 35, 36); Account (18); RelatedPerson (21, the mother) | 2-26, 28-30, 35, 36, 40 |
//! | PD1     | Patient.managingOrganization, generalPractitioner        | 3, 4 |
//! | NK1     | RelatedPerson (with the contact person 30, PID-21 on the first) | 2, 3, 4, 5, 6, 7, 8, 9, 12, 13, 15, 16, 30, 33, 37 |
//! | PV1     | Encounter; Location per PL level; Practitioner; EpisodeOfCare (54) | 2-11, 13, 14, 16-19, 36-39, 42-45, 50, 52, 54 |
//! | PV2     | Encounter.location, reasonCode, referrer                 | 1, 3, 13 |
//! | ROL/PRT | PractitionerRole (PRT: organization, location, Device 10; ROL after PR1: the procedure's performer) | ROL 3-6, 9, 12-14; PRT 4-6, 8-12, 15-21 |
//! | AL1     | AllergyIntolerance                                       | 2, 3, 4, 5, 6 |
//! | DG1     | Condition (inside an order: its reasonReference)         | 3, 4, 5, 6, 15, 16, 20 |
//! | PR1     | Procedure (category 6, location 23, partOf 25)           | 3, 4, 5, 6, 8, 11, 12, 19, 23, 25 |
//! | IN1/IN2 | Coverage; payor and policy holder Organizations; the insured RelatedPerson | IN1 2-13, 15-19, 36, 43, 49; IN2 1, 2, 6, 7, 8, 10, 61 |
//! | GT1     | the account's guarantor: RelatedPerson; 11 = SEL the Patient; no person the Organization (21) | 2, 3, 5, 6, 8, 9, 11, 12, 19, 21 |
//! | ORC     | ServiceRequest, or with RXO/RXE/ODS/RQD a MedicationRequest/NutritionOrder/SupplyRequest | 1, 2, 3, 4, 5, 8, 9, 12, 21 |
//! | RXO     | MedicationRequest: Medication, dosage, dispense         | 1, 2, 4, 5, 6, 7, 11, 12, 13 |
//! | RXE     | MedicationRequest as RXO (dose range 3-4, rate 23-24); RXR after it: route, site | 2, 3, 4, 5, 6, 7, 10, 11, 12, 23, 24 |
//! | ODS     | NutritionOrder.oralDiet                                  | 1, 3, 4 |
//! | RF1     | ServiceRequest (a referral; performers 19, 20)           | 1, 2, 3, 6, 7, 8, 9, 10, 11, 14, 19, 20, 24 |
//! | RQD/RQ1 | SupplyRequest: item, quantity, department, needed; supplier | RQD 2, 4, 5, 6, 9, 10; RQ1 2 |
//! | OBR     | ServiceRequest / DiagnosticReport; PractitionerRole (32-35); Specimen (7 without SPM) | 2, 3, 4, 7, 10, 16, 22, 25, 27, 28, 29, 31, 32, 33, 34, 35 |
//! | TQ1     | ServiceRequest.occurrence, priority; after SCH: Appointment start, end | 7, 8, 9 |
//! | OBX     | Observation (DocumentReference content under TXA, partOf the RXA); ED/RP: a DiagnosticReport presented in the document; 25 the director of 23 | 2, 3, 5, 6, 7, 8, 11, 14, 16, 17, 18, 19, 20, 21, 23, 24, 25 |
//! | NTE     | `note` of the resource before it (author 5)              | 3, 5 |
//! | SPM     | Specimen (parent 3, accession 30, other ids 31, 32)      | 2, 3, 4, 17, 18, 30, 31, 32 |
//! | CTI     | ResearchStudy supporting the order                       | 1, 2 |
//! | BLG     | Account supporting the order                             | 2, 3 |
//! | RXA/RXR | Immunization                                             | RXA 3, 5, 6, 7, 10, 15, 16, 17, 20; RXR 1, 2 |
//! | TXA     | DocumentReference (context: 4, the order it answers)     | 2, 3, 4, 5, 9, 10, 12, 17, 22 |
//! | FT1     | ChargeItem; Procedure (25), MedicationDispense (29, 41, 42), Device (34, 35) | 2, 4-7, 10, 11, 13, 19-21, 24, 25, 29, 32-35, 41, 42 |
//! | SCH     | Appointment; contacts as PractitionerRoles               | 1, 2, 6, 7, 11, 12, 13, 15, 16, 17, 19, 20, 21, 22, 25 |
//! | AIS/AIL/AIP | Appointment.serviceType, participant                 | 3 / 3 / 3 |
//! | PDA     | Condition (causes, 1); Location (2); Practitioner (5, 8); Patient.deceased (4) | 1, 2, 4, 5, 8 |
//! | ACC     | Location (3 with the address 11); Practitioner (7)       | 3, 7, 11 |
//! | DB1     | Patient.identifier (the patient's disability, 3)         | 2, 3 |
//!
//! Resource ids are deterministic: a UUID v5 of the sending application and
//! facility, the message control id and what the resource is (the patient, an
//! OBX's position, a practitioner's number…), so the same message gives the
//! same Bundle and loading it again is an update-as-create of the same
//! resources. A practitioner or organization named twice is one resource.
//!
//! What was not mapped is reported, never dropped silently: every non-empty
//! field no mapper read, and every segment without a mapper (Z-segments
//! included), as `SEG-n` (with the segment's position in the message).

mod clinical;
pub mod corpus;
pub mod datatypes;
mod financial;
mod header;
mod orders;
mod other;
mod participants;
mod parties;
mod patient;
mod pharmacy;
mod results;
pub mod score;
pub mod to_v2;
mod visit;

use std::collections::HashSet;

use rustc_hash::FxHashMap;

use carehub_hl7::codec::er7::{Message, Segment, Value as V2};
use serde_json::{Map, Value, json};
use uuid::Uuid;

/// The UUID namespace of carehub's converted resources.
const NAMESPACE: Uuid = Uuid::from_u128(0x6a1f_3c2e_8b4d_4e61_9f0a_2c7d_5e8b_1a34);

/// Segments whose field 1 is a Set ID.
const SET_ID_FIRST: &[&str] = &[
    "AIG", "AIL", "AIP", "AIS", "AL1", "DB1", "DG1", "RQD", "FT1", "GT1", "IN1", "NK1", "NTE", "OBR", "OBX", "PID",
    "PR1", "PV1", "PV2", "SPM", "TQ1", "TXA", "ROL", "RGS",
];

/// A message that cannot be converted.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("not an HL7 v2 message: {0}")]
    Parse(String),
}

/// A field or segment the conversion did not carry into the Bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unmapped {
    /// Segment name (`PID`, `ZPI`).
    pub segment: String,
    /// 1-based position of the segment in the message.
    pub position: usize,
    /// The field (`None`: the whole segment has no mapper and was empty past its name).
    pub field: Option<usize>,
}

impl std::fmt::Display for Unmapped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.field {
            Some(n) => write!(f, "{}-{n} (segment {})", self.segment, self.position),
            None => write!(f, "{} (segment {})", self.segment, self.position),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Conversion {
    /// A `batch` Bundle of PUTs (`<type>/<id>`).
    pub bundle: Value,
    pub unmapped: Vec<Unmapped>,
}

/// Converts one HL7 v2 message (ER7 text; CR or LF segment separators).
/// Any message type converts: segments are mapped wherever they appear, and
/// what has no mapping is reported in [`Conversion::unmapped`].
pub fn to_fhir(text: &str) -> Result<Conversion, ConvertError> {
    let msg = Message::parse(text).map_err(|e| ConvertError::Parse(e.to_string()))?;
    Ok(convert(&msg))
}

/// [`to_fhir`] of a message already parsed: a caller that parsed it for
/// something else (the HL7 pipeline's mapping) does not parse it twice.
pub fn convert(msg: &Message<'_>) -> Conversion {
    let mut b = Builder::new(msg);
    b.convert();
    b.finish()
}

/// The UUID v5 of what a resource is (`key`) in the message `seed` names:
/// of the name `seed|type|key`, hashed in parts (the same UUID as
/// `Uuid::new_v5` of the joined name, without building it).
fn resource_id(seed: &str, resource_type: &str, key: &str) -> String {
    let mut sha = sha1_smol::Sha1::new();
    for part in [
        NAMESPACE.as_bytes().as_slice(),
        seed.as_bytes(),
        b"|",
        resource_type.as_bytes(),
        b"|",
        key.as_bytes(),
    ] {
        sha.update(part);
    }
    let digest = sha.digest().bytes();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_sha1_bytes(bytes).into_uuid().to_string()
}

/// Sets `key` of every `target` resource to references to all resources
/// of `sources`, each as `wrap` makes it.
fn link_all(
    built: &mut [(String, String, Value)],
    sources: &[&str],
    target: &str,
    key: &str,
    wrap: fn(Value) -> Value,
) {
    let refs: Vec<Value> = built
        .iter()
        .filter(|(t, _, _)| sources.contains(&t.as_str()))
        .map(|(t, id, _)| wrap(reference_to(format!("{t}/{id}"))))
        .collect();
    if refs.is_empty() {
        return;
    }
    for (t, _, r) in built.iter_mut() {
        if t == target {
            r[key] = Value::Array(refs.clone());
        }
    }
}

/// `{ "reference": r }`.
fn reference_to(r: String) -> Value {
    let mut m = Map::new();
    m.insert("reference".into(), Value::String(r));
    Value::Object(m)
}

/// The resource a segment made, for NTE and children to attach to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Last {
    None,
    Entry(usize),
}

struct Builder<'m> {
    msg: &'m Message<'m>,
    /// `fields[i][n - 1]`: field n of segment i.
    fields: Vec<Vec<V2<'m>>>,
    seed: String,
    /// The Bundle's id (deterministic like the resources'), computed once.
    bundle_id: String,
    entries: Vec<(String, String, Value)>,
    /// `type|key` → entry: what a resource is, to make it once.
    by_key: FxHashMap<String, usize>,
    /// `used[i][n - 1]`: field n of segment i was read by a mapper.
    used: Vec<Vec<bool>>,
    mapped_segments: HashSet<usize>,
    patient: Option<String>,
    /// The PID segment's position.
    pid: Option<usize>,
    /// The message's visit (the first PV1), which its resources name.
    encounter: Option<String>,
    /// The Encounter of the latest PV1, for the PV2, ROL and DG1 after it.
    visit: Option<usize>,
    order: Option<usize>,
    /// The order (and report) the OBX that follow an OBR belong to.
    order_of_obx: Option<usize>,
    report: Option<usize>,
    /// The Observations and the Specimen of the current OBR group.
    group_observations: Vec<usize>,
    specimen: Option<usize>,
    document: Option<usize>,
    immunization: Option<usize>,
    appointment: Option<usize>,
    /// Who collected the specimens of the current OBR (OBR-10).
    collector: Option<Value>,
    /// The ServiceRequest of the current resource group's AIS.
    appointment_service: Option<usize>,
    /// Whether an AIS/AIL/AIP/AIG has timed the current appointment (then
    /// SCH-11 no longer counts).
    appointment_timed: bool,
    last: Last,
    message_header: Option<usize>,
    /// MSH-19, the message's language: the Bundle's.
    language: Option<String>,
}

impl<'m> Builder<'m> {
    fn new(msg: &'m Message<'m>) -> Self {
        // Each segment split into its fields once: mappers read fields by
        // number, and finding field n anew each time is quadratic.
        let fields: Vec<Vec<V2<'m>>> = msg.segments().iter().map(|s| s.fields().collect()).collect();
        let fields_used = fields.iter().map(|f| vec![false; f.len()]).collect();
        let h = msg.msh();
        let seed = format!("{}|{}|{}", h.field(3).raw(), h.field(4).raw(), msg.control_id());
        let bundle_id = resource_id(&seed, "Bundle", "bundle");
        Builder {
            msg,
            fields,
            seed,
            bundle_id,
            entries: Vec::new(),
            by_key: FxHashMap::default(),
            used: fields_used,
            mapped_segments: HashSet::new(),
            patient: None,
            pid: None,
            encounter: None,
            visit: None,
            order: None,
            order_of_obx: None,
            report: None,
            group_observations: Vec::new(),
            specimen: None,
            document: None,
            immunization: None,
            appointment: None,
            collector: None,
            appointment_timed: false,
            appointment_service: None,
            last: Last::None,
            message_header: None,
            language: None,
        }
    }

    /// Field `n` of segment `i`, recorded as mapped.
    fn f(&mut self, i: usize, n: usize) -> V2<'m> {
        // A field past the segment's end is empty: nothing to report.
        if let Some(u) = self.used[i].get_mut(n.wrapping_sub(1)) {
            *u = true;
        }
        self.field(i, n)
    }

    /// Field `n` of segment `i` from the fields split once ([`Builder::new`]).
    fn field(&self, i: usize, n: usize) -> V2<'m> {
        match self.fields[i].get(n.wrapping_sub(1)) {
            Some(v) => *v,
            None => self.msg.segments()[i].field(n),
        }
    }

    fn seg(&self, i: usize) -> &Segment<'m> {
        &self.msg.segments()[i]
    }

    fn id(&self, resource_type: &str, key: &str) -> String {
        resource_id(&self.seed, resource_type, key)
    }

    /// Adds a resource under a key (the same key: the same resource, first
    /// one kept); returns its entry index.
    fn add(&mut self, resource_type: &str, key: &str, mut resource: Map<String, Value>) -> usize {
        let full = format!("{resource_type}|{key}");
        if let Some(&i) = self.by_key.get(&full) {
            return i;
        }
        let id = self.id(resource_type, key);
        resource.insert("resourceType".into(), Value::String(resource_type.to_owned()));
        resource.insert("id".into(), Value::String(id.clone()));
        self.entries
            .push((resource_type.to_owned(), id, Value::Object(resource)));
        self.by_key.insert(full, self.entries.len() - 1);
        self.entries.len() - 1
    }

    /// The entry already made for what `key` names, if any: a resource
    /// named again (a practitioner, a place, an organization) is not built
    /// twice.
    fn known(&self, resource_type: &str, key: &str) -> Option<usize> {
        self.by_key.get(&format!("{resource_type}|{key}")).copied()
    }

    /// The entry a `Type/id` reference names.
    fn entry_of(&self, reference: &str) -> Option<usize> {
        let (t, id) = reference.split_once('/')?;
        self.entries.iter().position(|(et, eid, _)| et == t && eid == id)
    }

    fn reference(&self, entry: usize) -> Value {
        let (t, id, _) = &self.entries[entry];
        reference_to(format!("{t}/{id}"))
    }

    fn set(&mut self, entry: usize, key: &str, value: Value) {
        if let Value::Object(o) = &mut self.entries[entry].2 {
            o.insert(key.to_owned(), value);
        }
    }

    /// Sets `key` only where the resource has none yet (a resource named
    /// again may bring what it lacked the first time).
    fn fill(&mut self, entry: usize, key: &str, value: Value) {
        if self.entries[entry].2.get(key).is_none() {
            self.set(entry, key, value);
        }
    }

    fn remove(&mut self, entry: usize, key: &str) {
        if let Value::Object(o) = &mut self.entries[entry].2 {
            o.remove(key);
        }
    }

    fn push(&mut self, entry: usize, key: &str, value: Value) {
        if let Value::Object(o) = &mut self.entries[entry].2 {
            match o.get_mut(key) {
                Some(Value::Array(items)) => items.push(value),
                _ => {
                    o.insert(key.to_owned(), Value::Array(vec![value]));
                }
            }
        }
    }

    fn patient_ref(&self) -> Option<Value> {
        self.patient.clone().map(reference_to)
    }

    fn encounter_ref(&self) -> Option<Value> {
        self.encounter.clone().map(reference_to)
    }

    /// Whether a `name` segment follows segment `i` before the next order
    /// (ORC or OBR) starts.
    fn group_has(&self, i: usize, name: &str) -> bool {
        self.msg.segments()[i + 1..]
            .iter()
            .map(|s| s.name())
            .take_while(|n| !matches!(*n, "ORC" | "OBR"))
            .any(|n| n == name)
    }

    /// The order the segments being read belong to.
    fn current_order(&self) -> Option<usize> {
        self.order_of_obx.or(self.order)
    }

    fn convert(&mut self) {
        let count = self.msg.segments().len();
        for i in 0..count {
            let name = self.seg(i).name();
            let mapped = match name {
                "MSH" => self.msh(i),
                "EVN" => self.evn(i),
                "SFT" => self.sft(i),
                "PID" => self.pid(i),
                "PD1" => self.pd1(i),
                "NK1" => self.nk1(i),
                "PV1" => self.pv1(i),
                "PV2" => self.pv2(i),
                "AL1" => self.al1(i),
                "DG1" => self.dg1(i),
                "PR1" => self.pr1(i),
                "IN1" => self.in1(i),
                "ORC" => self.orc(i),
                "OBR" => self.obr(i),
                "TQ1" => self.tq1(i),
                "OBX" => self.obx(i),
                "NTE" => self.nte(i),
                "SPM" => self.spm(i),
                "RXA" => self.rxa(i),
                "RXR" => self.rxr(i),
                "TXA" => self.txa(i),
                "FT1" => self.ft1(i),
                "SCH" => self.sch(i),
                "AIS" | "AIL" | "AIP" | "AIG" => self.resource_of_appointment(i),
                "RGS" => self.rgs(i),
                "ROL" => self.rol(i),
                "PRT" => self.prt(i),
                "CTI" => self.cti(i),
                "PDA" => self.pda(i),
                "ACC" => self.acc(i),
                "DB1" => self.db1(i),
                "BLG" => self.blg(i),
                "RXO" => self.rxo(i),
                "RXE" => self.rxe(i),
                "ODS" => self.ods(i),
                "RQD" => self.rqd(i),
                "RQ1" => self.rq1(i),
                "RF1" => self.rf1(i),
                "GT1" => self.gt1(i),
                "IN2" => self.in2(i),
                _ => false,
            };
            if mapped {
                self.mapped_segments.insert(i);
            }
        }
        // The message header names what the message brought.
        if let Some(h) = self.message_header {
            let focus: Vec<Value> = self
                .entries
                .iter()
                .enumerate()
                .filter(|(e, (t, _, _))| {
                    *e != h
                        && matches!(
                            t.as_str(),
                            "Patient"
                                | "ServiceRequest"
                                | "DiagnosticReport"
                                | "Immunization"
                                | "Appointment"
                                | "DocumentReference"
                        )
                })
                .map(|(_, (t, id, _))| json!({ "reference": format!("{t}/{id}") }))
                .collect();
            if !focus.is_empty() {
                self.set(h, "focus", Value::Array(focus));
            }
        }
    }
}

impl Builder<'_> {
    /// The Bundle and the unmapped report.
    fn finish(self) -> Conversion {
        let bundle_id = self.bundle_id.clone();
        let language = self.language.clone();
        let mut unmapped = Vec::new();
        for (i, seg) in self.msg.segments().iter().enumerate() {
            let name = seg.name();
            let mapped = self.mapped_segments.contains(&i);
            // MSH-1 and MSH-2 are the delimiters themselves.
            // A Set ID (field 1 of repeating segments) only numbers the segment.
            let first = match name {
                "MSH" => 3,
                n if SET_ID_FIRST.contains(&n) => 2,
                _ => 1,
            };
            let mut any = false;
            for (k, value) in self.fields[i].iter().enumerate().skip(first - 1) {
                let n = k + 1;
                let carried = mapped && self.used[i][k];
                if !carried && !value.is_empty() {
                    unmapped.push(Unmapped {
                        segment: name.to_owned(),
                        position: i + 1,
                        field: Some(n),
                    });
                    any = true;
                }
            }
            if !mapped && !any {
                unmapped.push(Unmapped {
                    segment: name.to_owned(),
                    position: i + 1,
                    field: None,
                });
            }
        }
        let mut built = self.entries;
        // A charge is supported by the orders (of any kind), the
        // observations and the diagnoses its message carries (DG1 and OBX
        // follow FT1 in a DFT: known only now); a diet order
        // knows the patient's allergies (AL1); the episode of care (PV1-54)
        // carries the visit's diagnoses.
        let as_is = |r: Value| r;
        link_all(
            &mut built,
            &[
                "ServiceRequest",
                "MedicationRequest",
                "NutritionOrder",
                "SupplyRequest",
                "Observation",
                "Condition",
            ],
            "ChargeItem",
            "supportingInformation",
            as_is,
        );
        link_all(
            &mut built,
            &["AllergyIntolerance"],
            "NutritionOrder",
            "allergyIntolerance",
            as_is,
        );
        link_all(&mut built, &["Condition"], "EpisodeOfCare", "diagnosis", |r| {
            let mut d = Map::new();
            d.insert("condition".into(), r);
            Value::Object(d)
        });
        // SCH comes before PID: the appointment's patient is known only now.
        if let Some(patient) = &self.patient {
            for (t, _, r) in &mut built {
                if t != "Appointment" {
                    continue;
                }
                for p in r["participant"].as_array_mut().into_iter().flatten() {
                    if p.get("actor").is_none() && p["type"][0]["text"] == "patient" {
                        *p = json!({ "actor": reference_to(patient.clone()), "status": "accepted" });
                    }
                }
            }
        }
        // MedicationRequest.medication is required: an RXO without RXO-1.
        for (t, _, r) in &mut built {
            if t == "MedicationRequest" && r.get("medicationReference").is_none() {
                r["medicationCodeableConcept"] = json!({ "text": "unspecified" });
            }
        }
        // DocumentReference.content is required: a document whose text did
        // not come (no OBX) is named by its title, TXA-2's text.
        for (t, _, r) in &mut built {
            if t == "DocumentReference" && r.get("content").is_none() {
                let title = r["type"]["text"]
                    .as_str()
                    .or(r["type"]["coding"][0]["display"].as_str())
                    .or(r["type"]["coding"][0]["code"].as_str())
                    .unwrap_or("document")
                    .to_owned();
                r["content"] = json!([{ "attachment": { "title": title } }]);
            }
        }
        // Built by hand: `json!` would copy each resource through the serializer.
        let entries: Vec<Value> = built
            .into_iter()
            .map(|(t, id, resource)| {
                let mut request = Map::new();
                request.insert("method".into(), Value::String("PUT".into()));
                request.insert("url".into(), Value::String(format!("{t}/{id}")));
                let mut entry = Map::new();
                entry.insert("fullUrl".into(), Value::String(format!("urn:uuid:{id}")));
                entry.insert("resource".into(), resource);
                entry.insert("request".into(), Value::Object(request));
                Value::Object(entry)
            })
            .collect();
        Conversion {
            bundle: {
                let mut b = Map::new();
                b.insert("resourceType".into(), Value::String("Bundle".into()));
                b.insert("id".into(), Value::String(bundle_id));
                if let Some(language) = language {
                    b.insert("language".into(), Value::String(language));
                }
                b.insert("type".into(), Value::String("batch".into()));
                b.insert("entry".into(), Value::Array(entries));
                Value::Object(b)
            },
            unmapped,
        }
    }
}
