//! Who takes part: ROL and PRT (roles and participations), CTI (a clinical
//! trial), PDA (the patient's death).

use serde_json::{Map, Value, json};

use crate::datatypes as dt;
use crate::{Builder, Last};

impl Builder<'_> {
    /// ROL: a role of a person in the patient's care → PractitionerRole
    /// (code ROL-3, who ROL-4, period ROL-5/6, specialty ROL-9, telecom
    /// ROL-12, location ROL-13); a primary care provider is the patient's
    /// general practitioner, another role one of the visit's participants.
    pub(crate) fn rol(&mut self, i: usize) -> bool {
        let _ = self.f(i, 2); // action code (AD, UP, DE): the message's event says it
        let role = dt::codeable(&self.f(i, 3));
        let who = self.practitioner(i, 4);
        let Some(who) = who.into_iter().next() else {
            return false;
        };
        let mut r = Map::new();
        if let Some(c) = &role {
            r.insert("code".into(), json!([c]));
        }
        let start = self.f(i, 5);
        let end = self.f(i, 6);
        if let Some(p) = dt::period(&start, &end) {
            r.insert("period".into(), p);
        }
        if let Some(s) = dt::codeable(&self.f(i, 9)) {
            r.insert("specialty".into(), json!([s]));
        }
        let telecom: Vec<Value> = self.contact_points(i, 12);
        if !telecom.is_empty() {
            r.insert("telecom".into(), Value::Array(telecom));
        }
        let place = self.f(i, 13);
        if let Some(l) = self.location(&place) {
            r.insert("location".into(), json!([l]));
        }
        let org = self.f(i, 14);
        if let Some(o) = self.xon(&org) {
            r.insert("organization".into(), o);
        }
        r.insert("practitioner".into(), who);
        let e = self.add("PractitionerRole", &format!("rol|{i}"), r);
        let reference = self.reference(e);
        let primary = role.as_ref().and_then(|c| c["coding"][0]["code"].as_str()) == Some("PP");
        // The segment the ROL's group starts with.
        let anchor = self.msg.segments()[..i]
            .iter()
            .rev()
            .map(|s| s.name())
            .find(|n| !matches!(*n, "ROL" | "NTE" | "PRT" | "ARV"));
        // A ROL in a procedure's group (after PR1) performed that procedure,
        // in its role.
        if anchor == Some("PR1")
            && let Last::Entry(procedure) = self.last
            && self.entries[procedure].0 == "Procedure"
        {
            let mut performer = Map::new();
            if let Some(c) = role {
                performer.insert("function".into(), c);
            }
            performer.insert("actor".into(), reference);
            self.push(procedure, "performer", Value::Object(performer));
            return true;
        }
        // A ROL in the visit's group (after PV1/PV2) is a participant of the
        // visit, whatever the role; a primary care provider is the patient's too.
        let in_visit = anchor.is_some_and(|n| matches!(n, "PV1" | "PV2"));
        if let Some(enc) = self.visit
            && (in_visit || !primary)
        {
            self.push(enc, "participant", json!({ "individual": reference.clone() }));
        }
        if primary && let Some(&p) = self.by_key.get("Patient|patient") {
            self.push(p, "generalPractitioner", reference);
        }
        true
    }

    /// PRT (v2.7+, participation): who took part in what is around it, and
    /// in which role → a PractitionerRole (role PRT-4, person PRT-5,
    /// specialty PRT-6, organization PRT-8, location PRT-9, period
    /// PRT-11/12, telecom PRT-15) and the device PRT-10 names.
    pub(crate) fn prt(&mut self, i: usize) -> bool {
        let _ = self.f(i, 2); // action code (AD, UP, DE): the message's event says it
        let mut r = Map::new();
        if let Some(c) = dt::codeable(&self.f(i, 4)) {
            r.insert("code".into(), json!([c]));
        }
        if let Some(who) = self.practitioner(i, 5).into_iter().next() {
            r.insert("practitioner".into(), who);
        }
        if let Some(s) = dt::codeable(&self.f(i, 6)) {
            r.insert("specialty".into(), json!([s]));
        }
        let org = self.f(i, 8);
        if let Some(o) = self.xon(&org) {
            r.insert("organization".into(), o);
        }
        let place = self.f(i, 9);
        if let Some(l) = self.location(&place) {
            // The place is the organization's.
            if let Some(o) = r.get("organization").cloned() {
                self.manage_locations(&l, &o);
            }
            r.insert("location".into(), json!([l]));
        }
        let start = self.f(i, 11);
        let end = self.f(i, 12);
        if let Some(p) = dt::period(&start, &end) {
            r.insert("period".into(), p);
        }
        let telecom: Vec<Value> = self.contact_points(i, 15);
        if !telecom.is_empty() {
            r.insert("telecom".into(), Value::Array(telecom));
        }
        // The device taking part (PRT-10) and what its label says (PRT-16
        // UDI device identifier, 17 manufactured, 18 expires, 19 lot, 20
        // serial number, 21 donation identification).
        let mut label = Map::new();
        let udi = self.f(i, 16);
        if let Some(di) = udi.component(1).text() {
            let mut carrier = Map::new();
            carrier.insert("deviceIdentifier".into(), json!(di));
            if let Some(issuer) = dt::assigner_system(
                udi.component(2).text(),
                udi.component(3).text(),
                udi.component(4).text(),
            ) {
                carrier.insert("issuer".into(), json!(issuer));
            }
            label.insert("udiCarrier".into(), json!([carrier]));
        }
        for (n, key) in [(17, "manufactureDate"), (18, "expirationDate")] {
            if let Some(t) = dt::date_time(&self.f(i, n)) {
                label.insert(key.into(), json!(t));
            }
        }
        for (n, key) in [(19, "lotNumber"), (20, "serialNumber"), (21, "distinctIdentifier")] {
            if let Some(v) = self.f(i, n).component(1).text() {
                label.insert(key.into(), json!(v.trim()));
            }
        }
        let device = self.f(i, 10);
        let ids: Vec<String> = device.repetitions().filter_map(|d| d.component(1).text()).collect();
        for id in &ids {
            let mut dv = Map::new();
            dv.insert("identifier".into(), json!([{ "value": id }]));
            let e = self.add("Device", &format!("prt|{id}"), dv);
            // The same device named again may bring its label this time.
            for (k, v) in &label {
                self.fill(e, k, v.clone());
            }
        }
        if ids.is_empty() && !label.is_empty() {
            self.add("Device", &format!("prt-label|{i}"), label);
        }
        if !r.is_empty() {
            self.add("PractitionerRole", &format!("prt|{i}"), r);
        }
        true
    }

    /// CTI: the clinical trial an order is part of → ResearchStudy (sponsor
    /// study id CTI-1, phase CTI-2), supporting the order.
    pub(crate) fn cti(&mut self, i: usize) -> bool {
        let study = self.f(i, 1);
        let Some(id) = dt::entity_identifier(&study, None) else {
            return false;
        };
        let mut r = Map::new();
        r.insert("status".into(), json!("active"));
        r.insert("identifier".into(), json!([id]));
        if let Some(phase) = dt::codeable(&self.f(i, 2)) {
            r.insert("phase".into(), phase);
        }
        let e = self.add("ResearchStudy", &format!("cti|{}", study.raw()), r);
        self.support_order(e);
        true
    }

    /// PDA: the patient's death and autopsy → the causes (PDA-1) as
    /// Conditions, the place of death (PDA-2)
    /// and the practitioners who certified it (PDA-5) and performed the
    /// autopsy (PDA-8); PDA-4, when the certificate was signed, dates the
    /// death when PID-29 did not.
    pub(crate) fn pda(&mut self, i: usize) -> bool {
        // PDA-1: the causes of death, each a Condition of the patient.
        let causes: Vec<Value> = self.f(i, 1).repetitions().filter_map(|c| dt::codeable(&c)).collect();
        for (k, code) in causes.into_iter().enumerate() {
            let mut c = Map::new();
            c.insert("code".into(), code);
            if let Some(p) = self.patient_ref() {
                c.insert("subject".into(), p);
            }
            c.insert("note".into(), json!([{ "text": "cause of death (PDA-1)" }]));
            self.add("Condition", &format!("death-cause|{k}"), c);
        }
        let place = self.f(i, 2);
        self.location(&place);
        self.practitioner(i, 5);
        self.practitioner(i, 8);
        let signed = dt::date_time(&self.f(i, 4));
        if let (Some(t), Some(&p)) = (signed, self.by_key.get("Patient|patient"))
            && self.entries[p].2.get("deceasedDateTime").is_none()
        {
            self.remove(p, "deceasedBoolean");
            self.set(p, "deceasedDateTime", json!(t));
        }
        true
    }
}
