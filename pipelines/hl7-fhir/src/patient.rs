//! The patient: PID, PD1, NK1, and the datatypes of people (identifiers,
//! contact points, addresses, gender). The visit is in `visit`, clinical
//! segments in `clinical`, financial ones in `financial`, participants in
//! `participants`.

use serde_json::{Map, Value, json};

use crate::datatypes as dt;
use crate::{Builder, Last};

impl Builder<'_> {
    pub(crate) fn pid(&mut self, i: usize) -> bool {
        let mut p = Map::new();
        let mut ids = Vec::new();
        for n in [2, 3, 4] {
            let field = self.f(i, n);
            for r in field.repetitions() {
                if let Some(mut id) = dt::identifier(&r) {
                    if let Some(org) = self.authority(&r.component(4)) {
                        id["assigner"] = org;
                    }
                    ids.push(id);
                }
            }
        }
        // PID-19 (SSN) and PID-20 (driver's licence) are identifiers too.
        if let Some(ssn) = self.f(i, 19).text() {
            ids.push(json!({ "value": ssn, "type": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "SS" }] } }));
        }
        let licence = self.f(i, 20);
        if let Some(dl) = licence.component(1).text() {
            ids.push(json!({ "value": dl, "type": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "DL" }] } }));
        }
        if !ids.is_empty() {
            p.insert("identifier".into(), Value::Array(ids));
        }
        let mut names: Vec<Value> = self
            .f(i, 5)
            .repetitions()
            .filter_map(|r| dt::human_name(&r, 1))
            .collect();
        // PID-9: other names the patient is known by.
        names.extend(self.f(i, 9).repetitions().filter_map(|r| {
            dt::human_name(&r, 1).map(|mut n| {
                n["use"] = json!("nickname");
                n
            })
        }));
        if !names.is_empty() {
            p.insert("name".into(), Value::Array(names));
        }
        if let Some(d) = dt::date_time(&self.f(i, 7)) {
            p.insert("birthDate".into(), json!(d.get(..10).unwrap_or(&d)));
        }
        if let Some(g) = gender(self.f(i, 8).component(1).text().as_deref()) {
            p.insert("gender".into(), json!(g));
        }
        let addresses: Vec<Value> = self.addresses(i, 11);
        if !addresses.is_empty() {
            p.insert("address".into(), Value::Array(addresses));
        }
        let mut telecom: Vec<Value> = self.contact_points(i, 13);
        telecom.extend(self.f(i, 14).repetitions().filter_map(|r| {
            dt::contact_point(&r).map(|mut c| {
                c["use"] = json!("work");
                c
            })
        }));
        if !telecom.is_empty() {
            p.insert("telecom".into(), Value::Array(telecom));
        }
        if let Some(m) = dt::codeable(&self.f(i, 16)) {
            p.insert("maritalStatus".into(), m);
        }
        match (self.f(i, 24).text().as_deref(), self.f(i, 25).text()) {
            (_, Some(order)) if order.parse::<i64>().is_ok() => {
                p.insert("multipleBirthInteger".into(), json!(order.parse::<i64>().unwrap_or(1)));
            }
            (Some("Y"), _) => {
                p.insert("multipleBirthBoolean".into(), json!(true));
            }
            (Some("N"), _) => {
                p.insert("multipleBirthBoolean".into(), json!(false));
            }
            _ => {}
        }
        match (dt::date_time(&self.f(i, 29)), self.f(i, 30).text().as_deref()) {
            (Some(t), _) => {
                p.insert("deceasedDateTime".into(), json!(t));
            }
            (None, Some("Y")) => {
                p.insert("deceasedBoolean".into(), json!(true));
            }
            (None, Some("N")) => {
                p.insert("deceasedBoolean".into(), json!(false));
            }
            _ => {}
        }
        self.pid_demographics(i, &mut p);
        let e = self.add("Patient", "patient", p);
        let (t, id, _) = &self.entries[e];
        self.patient = Some(format!("{t}/{id}"));
        // PID-18, the patient account: an Account of its own.
        let account = self.f(i, 18);
        if let Some(mut ident) = dt::identifier(&account) {
            if let Some(org) = self.authority(&account.component(4)) {
                ident["assigner"] = org;
            }
            let mut a = Map::new();
            a.insert("identifier".into(), json!([ident]));
            a.insert("status".into(), json!("active"));
            a.insert("subject".into(), json!([{ "reference": self.patient.clone() }]));
            self.add("Account", "account", a);
        }
        self.pid = Some(i);
        // PID-21, the mother's identifiers: with next of kin, the first NK1
        // is that person; without, the mother is a RelatedPerson of her own.
        if !self.msg.segments().iter().any(|s| s.name() == "NK1") {
            let ids = self.identifiers(i, 21);
            if !ids.is_empty() {
                let mut r = Map::new();
                r.insert("identifier".into(), Value::Array(ids));
                r.insert("relationship".into(), json!([mother()]));
                r.insert("gender".into(), json!("female"));
                if let Some(p) = self.patient_ref() {
                    r.insert("patient".into(), p);
                }
                self.add("RelatedPerson", "mother", r);
            }
        }
        self.last = Last::Entry(e);
        true
    }

    /// PID-6, 10, 12, 15, 17, 22, 23, 26, 28, 35, 36, 40: what FHIR R4 holds in
    /// `communication`, the address, or the core and US Core extensions the
    /// v2-to-FHIR guide names for them.
    fn pid_demographics(&mut self, i: usize, p: &mut Map<String, Value>) {
        let mut extensions = Vec::new();
        // PID-6: the mother's maiden name (its family name).
        if let Some(name) = self.f(i, 6).component(1).subcomponent(1).text() {
            extensions.push(json!({
                "url": "http://hl7.org/fhir/StructureDefinition/patient-mothersMaidenName",
                "valueString": name,
            }));
        }
        // PID-10 race and PID-22 ethnic group: US Core's extensions, OMB
        // categories where the code is one, the other CDC codes as detail.
        const RACE_OMB: &[&str] = &["1002-5", "2028-9", "2054-5", "2076-8", "2106-3", "UNK", "ASKU"];
        const ETHNICITY_OMB: &[&str] = &["2135-2", "2186-5", "UNK", "ASKU"];
        for (n, url, omb) in [
            (
                10,
                "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race",
                RACE_OMB,
            ),
            (
                22,
                "http://hl7.org/fhir/us/core/StructureDefinition/us-core-ethnicity",
                ETHNICITY_OMB,
            ),
        ] {
            let field = self.f(i, n);
            if let Some(e) = us_core_category(&field, url, omb) {
                extensions.push(e);
            }
        }
        // PID-17 religion, PID-23 birth place, PID-26 citizenship: core extensions.
        if let Some(c) = dt::codeable(&self.f(i, 17)) {
            extensions.push(json!({
                "url": "http://hl7.org/fhir/StructureDefinition/patient-religion",
                "valueCodeableConcept": c,
            }));
        }
        if let Some(place) = self.f(i, 23).text() {
            extensions.push(json!({
                "url": "http://hl7.org/fhir/StructureDefinition/patient-birthPlace",
                "valueAddress": { "text": place },
            }));
        }
        for c in self.f(i, 26).repetitions().filter_map(|r| dt::codeable(&r)) {
            extensions.push(json!({
                "url": "http://hl7.org/fhir/StructureDefinition/patient-citizenship",
                "extension": [{ "url": "code", "valueCodeableConcept": c }],
            }));
        }
        // PID-28 nationality; PID-35 species and PID-36 breed (a patient who is
        // an animal): core extensions too.
        if let Some(c) = dt::codeable(&self.f(i, 28)) {
            extensions.push(json!({
                "url": "http://hl7.org/fhir/StructureDefinition/patient-nationality",
                "extension": [{ "url": "code", "valueCodeableConcept": c }],
            }));
        }
        let animal: Vec<Value> = [(35, "species"), (36, "breed")]
            .into_iter()
            .filter_map(|(n, part)| {
                dt::codeable(&self.f(i, n)).map(|c| json!({ "url": part, "valueCodeableConcept": c }))
            })
            .collect();
        if !animal.is_empty() {
            extensions.push(json!({
                "url": "http://hl7.org/fhir/StructureDefinition/patient-animal",
                "extension": animal,
            }));
        }
        if !extensions.is_empty() {
            p.insert("extension".into(), Value::Array(extensions));
        }
        // PID-15: the primary language, the one preferred.
        if let Some(language) = dt::codeable(&self.f(i, 15)) {
            p.insert(
                "communication".into(),
                json!([{ "language": language, "preferred": true }]),
            );
        }
        // PID-12: the county, where the first address does not name it (XAD.9).
        // (Read only where there is an address to hold it: else it is reported.)
        if matches!(p.get("address"), Some(Value::Array(a)) if !a.is_empty())
            && let Some(county) = self.f(i, 12).component(1).text()
            && let Some(Value::Array(addresses)) = p.get_mut("address")
            && let Some(Value::Object(first)) = addresses.first_mut()
            && !first.contains_key("district")
        {
            first.insert("district".into(), Value::String(county));
        }
        // PID-40 (v2.7+): the patient's telecommunication, after PID-13/14.
        let more: Vec<Value> = self.contact_points(i, 40);
        if !more.is_empty() {
            match p.get_mut("telecom") {
                Some(Value::Array(telecom)) => {
                    for t in more {
                        if !telecom.contains(&t) {
                            telecom.push(t);
                        }
                    }
                }
                _ => {
                    p.insert("telecom".into(), Value::Array(more));
                }
            }
        }
    }

    pub(crate) fn pd1(&mut self, i: usize) -> bool {
        // PD1-3, the patient's primary facility, manages the patient.
        let facility = self.f(i, 3);
        if let (Some(org), Some(&p)) = (self.xon(&facility), self.by_key.get("Patient|patient")) {
            self.set(p, "managingOrganization", org);
        }
        // The practitioner, and their role as primary care provider.
        let mut gp = self.practitioner_roles(i, 4, "PP", "Primary Care Provider");
        let roles = gp.clone();
        for r in roles {
            if let Some(p) = r["reference"]
                .as_str()
                .and_then(|x| self.entry_of(x))
                .and_then(|e| self.entries[e].2.get("practitioner").cloned())
            {
                gp.push(p);
            }
        }
        if let (Some(&p), false) = (self.by_key.get("Patient|patient"), gp.is_empty()) {
            self.set(p, "generalPractitioner", Value::Array(gp));
        }
        true
    }

    pub(crate) fn nk1(&mut self, i: usize) -> bool {
        let mut r = Map::new();
        if let Some(p) = self.patient_ref() {
            r.insert("patient".into(), p);
        }
        let names: Vec<Value> = self
            .f(i, 2)
            .repetitions()
            .filter_map(|n| dt::human_name(&n, 1))
            .collect();
        if !names.is_empty() {
            r.insert("name".into(), Value::Array(names));
        }
        let mut relationship: Vec<Value> = dt::codeable(&self.f(i, 3)).into_iter().collect();
        relationship.extend(dt::codeable(&self.f(i, 7)));
        let addresses: Vec<Value> = self.addresses(i, 4);
        if !addresses.is_empty() {
            r.insert("address".into(), Value::Array(addresses));
        }
        let mut telecom: Vec<Value> = self.contact_points(i, 5);
        telecom.extend(self.contact_points(i, 6));
        if !telecom.is_empty() {
            r.insert("telecom".into(), Value::Array(telecom));
        }
        if let Some(g) = gender(self.f(i, 15).component(1).text().as_deref()) {
            r.insert("gender".into(), json!(g));
        }
        if let Some(d) = dt::date_time(&self.f(i, 16)) {
            r.insert("birthDate".into(), json!(d.get(..10).unwrap_or(&d)));
        }
        // The contact person (NK1-30 name, 31 telecom, 32 address) is this
        // person too.
        let contact_names: Vec<Value> = self
            .f(i, 30)
            .repetitions()
            .filter_map(|n| dt::human_name(&n, 1))
            .collect();
        if !contact_names.is_empty() {
            match r.get_mut("name") {
                Some(Value::Array(names)) => names.extend(contact_names),
                _ => {
                    r.insert("name".into(), Value::Array(contact_names));
                }
            }
        }
        if let Some(p) = dt::period(&self.f(i, 8), &self.f(i, 9)) {
            r.insert("period".into(), p);
        }
        // Identifiers: NK1-12 (employee number), NK1-33, NK1-37 (SSN), and
        // on the first NK1 the mother's (PID-21) when she is next of kin.
        let mut ids = self.identifiers(i, 12);
        ids.extend(self.identifiers(i, 33));
        if let Some(ssn) = self.f(i, 37).text() {
            ids.push(json!({ "value": ssn, "system": "http://hl7.org/fhir/sid/us-ssn" }));
        }
        let first_nk1 = !self.msg.segments()[..i].iter().any(|s| s.name() == "NK1");
        if let (Some(pid), true) = (self.pid, first_nk1) {
            let mother_ids = self.identifiers(pid, 21);
            if !mother_ids.is_empty() {
                ids.extend(mother_ids);
                relationship.push(mother());
            }
        }
        if !ids.is_empty() {
            r.insert("identifier".into(), Value::Array(ids));
        }
        if !relationship.is_empty() {
            r.insert("relationship".into(), Value::Array(relationship));
        }
        // NK1-13, the next of kin as an organization.
        let org = self.f(i, 13);
        self.xon(&org);
        let e = self.add("RelatedPerson", &format!("nk1|{i}"), r);
        self.last = Last::Entry(e);
        true
    }

    /// The CX repetitions of field `n`, each with its assigning authority.
    /// A repeating XTN field → ContactPoints.
    pub(crate) fn contact_points(&mut self, i: usize, n: usize) -> Vec<Value> {
        self.f(i, n)
            .repetitions()
            .filter_map(|t| dt::contact_point(&t))
            .collect()
    }

    /// A repeating XAD field → Addresses.
    pub(crate) fn addresses(&mut self, i: usize, n: usize) -> Vec<Value> {
        self.f(i, n).repetitions().filter_map(|a| dt::address(&a)).collect()
    }

    pub(crate) fn identifiers(&mut self, i: usize, n: usize) -> Vec<Value> {
        let field = self.f(i, n);
        let mut out = Vec::new();
        for r in field.repetitions() {
            if let Some(mut id) = dt::identifier(&r) {
                if let Some(org) = self.authority(&r.component(4)) {
                    id["assigner"] = org;
                }
                out.push(id);
            }
        }
        out
    }
}

/// The relationship of the patient's mother (PID-21).
fn mother() -> Value {
    json!({ "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/v3-RoleCode", "code": "MTH", "display": "mother" }] })
}

/// HL7 table 0001 → administrative gender.
pub(crate) fn gender(code: Option<&str>) -> Option<&'static str> {
    Some(match code? {
        "M" => "male",
        "F" => "female",
        "O" | "A" | "N" => "other",
        _ => "unknown",
    })
}

/// A race or ethnicity field (CWE, repeating) → US Core's complex extension:
/// each code an `ombCategory` when it is one of `omb`, else `detailed`, and
/// the required `text` (the first display, else the codes).
fn us_core_category(field: &carehub_hl7::codec::er7::Value<'_>, url: &str, omb: &[&str]) -> Option<Value> {
    let cdc = dt::code_system("CDCREC");
    let mut parts = Vec::new();
    let mut words = Vec::new();
    for rep in field.repetitions() {
        let Some(code) = rep.component(1).text() else {
            continue;
        };
        let display = rep.component(2).text();
        let system = if matches!(code.as_str(), "UNK" | "ASKU") {
            "http://terminology.hl7.org/CodeSystem/v3-NullFlavor"
        } else {
            &cdc
        };
        let mut coding = Map::new();
        coding.insert("system".into(), json!(system));
        coding.insert("code".into(), json!(code));
        if let Some(d) = &display {
            coding.insert("display".into(), json!(d));
        }
        let slice = if omb.contains(&code.as_str()) {
            "ombCategory"
        } else {
            "detailed"
        };
        parts.push(json!({ "url": slice, "valueCoding": coding }));
        words.push(display.unwrap_or(code));
    }
    if parts.is_empty() {
        return None;
    }
    parts.push(json!({ "url": "text", "valueString": words.join(", ") }));
    Some(json!({ "url": url, "extension": parts }))
}
