//! Results: OBX (Observations and their report), NTE (notes), SPM (Specimen).

use serde_json::{Map, Value, json};

use base64::Engine as _;

use crate::datatypes as dt;
use crate::orders::*;
use crate::{Builder, Last};

impl Builder<'_> {
    pub(crate) fn obx(&mut self, i: usize) -> bool {
        // Under TXA (MDM), OBX carry the document's content (and are
        // observations still).
        if let Some(d) = self.document {
            let value = self.f(i, 5);
            let value_type = self.f(i, 2).text().unwrap_or_default();
            if matches!(value_type.as_str(), "ED" | "RP") {
                for rep in value.repetitions() {
                    if let Some(a) = dt::attachment(&value_type, &rep) {
                        self.push(d, "content", json!({ "attachment": a }));
                    }
                }
            } else {
                // Text lines (TX, FT, ST…): one text/plain attachment.
                let content: Vec<String> = value.repetitions().filter_map(|r| r.text()).collect();
                if !content.is_empty() {
                    let data = base64::engine::general_purpose::STANDARD.encode(content.join("\n").as_bytes());
                    self.push(
                        d,
                        "content",
                        json!({ "attachment": { "contentType": "text/plain", "data": data } }),
                    );
                }
            }
        }
        // An ED or RP result elsewhere is a document (a PDF, an image, a
        // pointer to one): no Observation value can hold it in R4, it is a
        // report's presented form.
        let value_type = self.f(i, 2).text().unwrap_or_default();
        if self.document.is_none() && matches!(value_type.as_str(), "ED" | "RP") {
            return self.obx_report(i, &value_type);
        }
        let mut o = Map::new();
        let status = self.f(i, 11).text();
        o.insert(
            "status".into(),
            json!(match status.as_deref() {
                Some("F") => "final",
                Some("C") => "corrected",
                Some("X" | "D") => "cancelled",
                Some("W") => "entered-in-error",
                Some("P" | "R" | "S" | "I" | "O") => "preliminary",
                Some("A") => "amended",
                _ => "final",
            }),
        );
        o.insert(
            "code".into(),
            dt::codeable(&self.f(i, 3)).unwrap_or_else(|| json!({ "text": "unspecified" })),
        );
        if let Some(p) = self.patient_ref() {
            o.insert("subject".into(), p);
        }
        if let Some(e) = self.encounter_ref() {
            o.insert("encounter".into(), e);
        }
        if let Some(order) = self.current_order() {
            o.insert("basedOn".into(), json!([self.reference(order)]));
        }
        // Under RXA (VXU), an OBX observes the administration.
        if let Some(m) = self.immunization {
            o.insert("partOf".into(), json!([self.reference(m)]));
        }
        let value_type = self.f(i, 2).text().unwrap_or_default();
        let value = self.f(i, 5);
        let unit = self.f(i, 6);
        let first = value.repetitions().next();
        match (value_type.as_str(), first) {
            ("NM" | "SN", Some(v)) => {
                let number = if value_type == "SN" {
                    v.component(2)
                } else {
                    v.component(1)
                };
                if let Some(q) = number.text().and_then(|n| dt::quantity(&n, &unit)) {
                    o.insert("valueQuantity".into(), q);
                }
            }
            ("CE" | "CWE" | "CNE", Some(v)) => {
                if let Some(c) = dt::codeable(&v) {
                    o.insert("valueCodeableConcept".into(), c);
                }
            }
            ("DT" | "TS" | "DTM", Some(v)) => {
                if let Some(t) = dt::date_time(&v) {
                    o.insert("valueDateTime".into(), json!(t));
                }
            }
            ("TM", Some(v)) => {
                if let Some(t) = v.text() {
                    o.insert("valueTime".into(), json!(t));
                }
            }
            (_, Some(_)) => {
                let text: Vec<String> = value.repetitions().filter_map(|r| r.text()).collect();
                if !text.is_empty() {
                    o.insert("valueString".into(), json!(text.join("\n")));
                }
            }
            (_, None) => {}
        }
        if let Some(range) = self.f(i, 7).text() {
            o.insert("referenceRange".into(), json!([{ "text": range }]));
        }
        let flags: Vec<Value> = self
            .f(i, 8)
            .repetitions()
            .filter_map(|r| {
                r.component(1).text().map(|c| {
                    json!({ "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation", "code": c }] })
                })
            })
            .collect();
        if !flags.is_empty() {
            o.insert("interpretation".into(), Value::Array(flags));
        }
        if let Some(t) = dt::date_time(&self.f(i, 14)) {
            o.insert("effectiveDateTime".into(), json!(t));
        }
        // OBX-19: when the analysis was done (effective is when the specimen was taken).
        if let Some(t) = dt::date_time(&self.f(i, 19)) {
            o.insert(
                "extension".into(),
                json!([{ "url": "http://hl7.org/fhir/StructureDefinition/observation-analysis-date-time", "valueDateTime": t }]),
            );
        }
        // Responsible observer (16), performing organization (23) and its
        // medical director (25).
        let mut performers = self.practitioner_roles(i, 16, "RO", "Responsible Observer");
        // The observers themselves, beside their role.
        performers.extend(self.practitioner(i, 16));
        performers.extend(self.lab_performers(i));
        if !performers.is_empty() {
            o.insert("performer".into(), Value::Array(performers));
        }
        if let Some(m) = dt::codeable(&self.f(i, 17)) {
            o.insert("method".into(), m);
        }
        // Equipment instance (18): the device that measured.
        let equipment = self.f(i, 18);
        if let Some(ident) = dt::entity_identifier(&equipment, None) {
            let mut device = Map::new();
            device.insert("identifier".into(), json!([ident]));
            let key = format!("equipment|{}", equipment.raw());
            let dev = self.add("Device", &key, device);
            o.insert("device".into(), self.reference(dev));
        }
        if let Some(b) = dt::codeable(&self.f(i, 20)) {
            o.insert("bodySite".into(), b);
        }
        if let Some(ident) = dt::entity_identifier(&self.f(i, 21), None) {
            o.insert("identifier".into(), json!([ident]));
        }
        if let Some(s) = self.specimen {
            o.insert("specimen".into(), self.reference(s));
        }
        let e = self.add("Observation", &format!("obx|{i}"), o);
        self.group_observations.push(e);
        if let Some(r) = self.report {
            let reference = self.reference(e);
            self.push(r, "result", reference);
        }
        self.last = Last::Entry(e);
        true
    }

    /// OBX-25, the medical director of OBX-23's organization, then that
    /// organization: who performed an OBX besides its observers.
    pub(crate) fn lab_performers(&mut self, i: usize) -> Vec<Value> {
        let lab = self.performing_lab(i);
        let mut performers = self.practitioner_roles_in(i, 25, "MDIR", "Medical Director", lab.as_ref());
        performers.extend(lab);
        performers
    }

    /// OBX-23, the performing organization, with its address (OBX-24).
    pub(crate) fn performing_lab(&mut self, i: usize) -> Option<Value> {
        let lab = self.f(i, 23);
        let org = self.xon(&lab)?;
        let address: Vec<Value> = self.addresses(i, 24);
        if !address.is_empty()
            && let Some(e) = org["reference"].as_str().and_then(|r| self.entry_of(r))
        {
            self.fill(e, "address", Value::Array(address));
        }
        Some(org)
    }

    /// An OBX carrying a document (ED, RP) → a DiagnosticReport coded by
    /// OBX-3, presented in the document, based on the order it follows.
    pub(crate) fn obx_report(&mut self, i: usize, value_type: &str) -> bool {
        let forms: Vec<Value> = self
            .f(i, 5)
            .repetitions()
            .filter_map(|rep| dt::attachment(value_type, &rep))
            .collect();
        let mut r = Map::new();
        let status = match self.f(i, 11).text().as_deref() {
            Some("W") => "entered-in-error",
            Some("D") => "cancelled",
            other => report_status(other),
        };
        r.insert("status".into(), json!(status));
        r.insert(
            "code".into(),
            dt::codeable(&self.f(i, 3)).unwrap_or_else(|| json!({ "text": "unspecified" })),
        );
        if let Some(order) = self.current_order() {
            r.insert("basedOn".into(), json!([self.reference(order)]));
        }
        if let Some(p) = self.patient_ref() {
            r.insert("subject".into(), p);
        }
        if let Some(e) = self.encounter_ref() {
            r.insert("encounter".into(), e);
        }
        if let Some(t) = dt::date_time(&self.f(i, 14)) {
            r.insert("effectiveDateTime".into(), json!(t));
        }
        // Responsible observer (16), performing organization (23) and its
        // medical director (25), as for an Observation.
        let observers = self.practitioner_roles(i, 16, "RO", "Responsible Observer");
        if !observers.is_empty() {
            r.insert("resultsInterpreter".into(), Value::Array(observers));
        }
        let performers = self.lab_performers(i);
        if !performers.is_empty() {
            r.insert("performer".into(), Value::Array(performers));
        }
        if let Some(s) = self.specimen {
            r.insert("specimen".into(), json!([self.reference(s)]));
        }
        if !forms.is_empty() {
            r.insert("presentedForm".into(), Value::Array(forms));
        }
        let e = self.add("DiagnosticReport", &format!("obx|{i}"), r);
        self.last = Last::Entry(e);
        true
    }

    pub(crate) fn nte(&mut self, i: usize) -> bool {
        let text: Vec<String> = self.f(i, 3).repetitions().filter_map(|r| r.text()).collect();
        // NTE-5: who wrote the note.
        let author = self.practitioner(i, 5).into_iter().next();
        match (self.last, text.is_empty()) {
            (_, true) => true,
            (Last::Entry(e), false) => {
                let kind = self.entries[e].0.clone();
                match kind.as_str() {
                    "ServiceRequest" | "Observation" | "AllergyIntolerance" | "Condition" | "Procedure"
                    | "Specimen" | "Immunization" | "MedicationRequest" | "NutritionOrder" => {
                        let mut note = Map::new();
                        if let Some(a) = author {
                            note.insert("authorReference".into(), a);
                        }
                        note.insert("text".into(), json!(text.join("\n")));
                        self.push(e, "note", Value::Object(note));
                        true
                    }
                    // Appointment has one comment, not notes: each NTE adds a paragraph.
                    "Appointment" => {
                        let comment = match self.entries[e].2["comment"].as_str() {
                            Some(before) => format!("{before}\n\n{}", text.join("\n")),
                            None => text.join("\n"),
                        };
                        self.set(e, "comment", json!(comment));
                        true
                    }
                    _ => false,
                }
            }
            (Last::None, false) => false,
        }
    }

    pub(crate) fn spm(&mut self, i: usize) -> bool {
        let mut s = Map::new();
        let id = self.f(i, 2);
        // SPM-2: the placer's and the filler's numbers (EIP); SPM-31 other
        // identifiers (CX); SPM-32 the shipment's (EI); SPM-30 the accession.
        let mut ids = dt::eip_identifiers(&id);
        ids.extend(self.identifiers(i, 31));
        ids.extend(dt::entity_identifier(&self.f(i, 32), None));
        if !ids.is_empty() {
            s.insert("identifier".into(), Value::Array(ids));
        }
        if let Some(acc) = self.identifiers(i, 30).into_iter().next() {
            s.insert("accessionIdentifier".into(), acc);
        }
        // SPM-3: the specimens this one was taken from.
        let parents = self.f(i, 3);
        let mut parent_refs = Vec::new();
        for p in parents.repetitions() {
            let pids = dt::eip_identifiers(&p);
            if pids.is_empty() {
                continue;
            }
            let mut ps = Map::new();
            ps.insert("identifier".into(), Value::Array(pids));
            if let Some(subject) = self.patient_ref() {
                ps.insert("subject".into(), subject);
            }
            let pe = self.add("Specimen", &format!("parent|{}", p.raw()), ps);
            parent_refs.push(self.reference(pe));
        }
        if !parent_refs.is_empty() {
            s.insert("parent".into(), Value::Array(parent_refs));
        }
        if let Some(t) = dt::codeable(&self.f(i, 4)) {
            s.insert("type".into(), t);
        }
        if let Some(p) = self.patient_ref() {
            s.insert("subject".into(), p);
        }
        let collected = self.f(i, 17);
        let mut collection = Map::new();
        if let Some(t) = dt::date_time(&collected.component(1)) {
            collection.insert("collectedDateTime".into(), json!(t));
        }
        // The collector OBR-10 named.
        if let Some(who) = self.collector.clone() {
            collection.insert("collector".into(), who);
        }
        if !collection.is_empty() {
            s.insert("collection".into(), Value::Object(collection));
        }
        if let Some(t) = dt::date_time(&self.f(i, 18)) {
            s.insert("receivedTime".into(), json!(t));
        }
        let e = self.add("Specimen", &format!("spm|{i}"), s);
        // The specimen of the order group: its observations were made on it,
        // and the order asked for it.
        self.specimen = Some(e);
        if let Some(order) = self.order_of_obx.or(self.order) {
            let reference = self.reference(e);
            self.push(order, "specimen", reference.clone());
            self.set(e, "request", json!([self.reference(order)]));
        }
        let reference = self.reference(e);
        for o in self.group_observations.clone() {
            if self.entries[o].2.get("specimen").is_none() {
                self.set(o, "specimen", reference.clone());
            }
        }
        if let Some(r) = self.report {
            let reference = self.reference(e);
            self.push(r, "specimen", reference);
        }
        self.last = Last::Entry(e);
        true
    }
}
