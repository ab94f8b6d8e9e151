//! Orders and results: ORC, OBR, TQ1, OBX, NTE, SPM.

use base64::Engine as _;
use serde_json::{Map, Value, json};

use crate::datatypes as dt;
use crate::{Builder, Last};

impl Builder<'_> {
    /// ORC starts an order: a ServiceRequest (OBR completes it).
    pub(crate) fn orc(&mut self, i: usize) -> bool {
        let placer = self.f(i, 2);
        let filler = self.f(i, 3);
        let key = placer
            .component(1)
            .text()
            .or_else(|| filler.component(1).text())
            .unwrap_or_else(|| format!("orc|{i}"));
        let mut s = Map::new();
        let control = self.f(i, 1).text().unwrap_or_default();
        let status = self.f(i, 5).text();
        s.insert("status".into(), json!(order_status(&control, status.as_deref())));
        s.insert("intent".into(), json!("order"));
        if let Some(ids) = dt::placer_filler(&placer, &filler) {
            s.insert("identifier".into(), ids);
        }
        if let Some(p) = self.patient_ref() {
            s.insert("subject".into(), p);
        }
        if let Some(e) = self.encounter_ref() {
            s.insert("encounter".into(), e);
        }
        if let Some(t) = dt::date_time(&self.f(i, 9)) {
            s.insert("authoredOn".into(), json!(t));
        }
        if let Some(r) = self
            .practitioner_roles(i, 12, "OP", "Ordering Provider")
            .into_iter()
            .next()
        {
            s.insert("requester".into(), r);
        }
        // The patient's account pays for it.
        if let Some(&a) = self.by_key.get("Account|account") {
            s.insert("supportingInfo".into(), json!([self.reference(a)]));
        }
        // ORC-4, the placer group number: the requisition the order is part of.
        if let Some(group) = dt::entity_identifier(&self.f(i, 4), Some("PGN")) {
            s.insert("requisition".into(), group);
        }
        // ORC-21..23: the ordering facility, the requester's organization.
        let facility = self.f(i, 21);
        if let Some(org) = self.xon(&facility)
            && let Some(role) = s
                .get("requester")
                .and_then(|r| r["reference"].as_str())
                .and_then(|r| self.entry_of(r))
        {
            self.set(role, "organization", org);
        }
        let e = self.add("ServiceRequest", &format!("order|{key}"), s);
        // ORC-8, the parent order.
        let parent = self.f(i, 8);
        if let Some(p) = parent.component(1).subcomponent(1).text() {
            let mut ps = Map::new();
            ps.insert("status".into(), json!("active"));
            ps.insert("intent".into(), json!("order"));
            ps.insert("identifier".into(), json!([{ "value": p, "type": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "PLAC" }] } }]));
            if let Some(subject) = self.patient_ref() {
                ps.insert("subject".into(), subject);
            }
            let pe = self.add("ServiceRequest", &format!("order|{p}"), ps);
            let reference = self.reference(pe);
            self.push(e, "basedOn", reference);
        }
        self.order = Some(e);
        self.report = None;
        self.last = Last::Entry(e);
        true
    }

    /// OBR: the order's details, and for results (ORU) the DiagnosticReport.
    pub(crate) fn obr(&mut self, i: usize) -> bool {
        let placer = self.f(i, 2);
        let filler = self.f(i, 3);
        let order = match self.order {
            Some(o) => o,
            None => {
                // An OBR without an ORC (ORU): the order it reports on.
                let key = placer
                    .component(1)
                    .text()
                    .or_else(|| filler.component(1).text())
                    .unwrap_or_else(|| format!("obr|{i}"));
                let mut s = Map::new();
                s.insert("status".into(), json!("completed"));
                s.insert("intent".into(), json!("order"));
                if let Some(ids) = dt::placer_filler(&placer, &filler) {
                    s.insert("identifier".into(), ids);
                }
                if let Some(p) = self.patient_ref() {
                    s.insert("subject".into(), p);
                }
                self.add("ServiceRequest", &format!("order|{key}"), s)
            }
        };
        let code = dt::codeable(&self.f(i, 4));
        if let Some(c) = &code {
            self.set(order, "code", c.clone());
        }
        let observed = dt::date_time(&self.f(i, 7));
        if let Some(t) = &observed
            && self.entries[order].2.get("occurrencePeriod").is_none()
        {
            self.set(order, "occurrenceDateTime", json!(t));
        }
        let requesters = self.practitioner_roles(i, 16, "OP", "Ordering Provider");
        // OBR-28: who gets copies of the results.
        let copies = self.practitioner_roles(i, 28, "RCT", "Results Copies To");
        if !copies.is_empty() {
            self.set(order, "performer", Value::Array(copies));
        }
        if let (Some(r), true) = (
            requesters.into_iter().next(),
            self.entries[order].2.get("requester").is_none(),
        ) {
            self.set(order, "requester", r);
        }
        let _ = self.f(i, 27);
        // OBR-10: who collected the specimen.
        let collectors = self.practitioner(i, 10);
        let interpreters = [
            (32, "PI", "Primary Interpreter"),
            (33, "AI", "Assistant/Alternate Interpreter"),
        ]
        .into_iter()
        .flat_map(|(n, code, display)| self.ndl_roles(i, n, code, display))
        .collect::<Vec<_>>();
        self.ndl_roles(i, 34, "TN", "Technician");
        self.ndl_roles(i, 35, "TR", "Transcriptionist");
        let issued = dt::date_time(&self.f(i, 22));
        let result_status = self.f(i, 25).text();
        let (kind, _) = self.msg.message_type();
        if kind == "ORU" || result_status.is_some() {
            let mut r = Map::new();
            r.insert("status".into(), json!(report_status(result_status.as_deref())));
            r.insert("code".into(), code.unwrap_or_else(|| json!({ "text": "unspecified" })));
            r.insert("basedOn".into(), json!([self.reference(order)]));
            // The report is known by its order's numbers (OBR-2, OBR-3).
            if let Some(ids) = self.entries[order].2.get("identifier").cloned() {
                r.insert("identifier".into(), ids);
            }
            if let Some(p) = self.patient_ref() {
                r.insert("subject".into(), p);
            }
            if let Some(e) = self.encounter_ref() {
                r.insert("encounter".into(), e);
            }
            if let Some(t) = observed {
                r.insert("effectiveDateTime".into(), json!(t));
            }
            if let Some(t) = issued.and_then(|t| t.contains('T').then_some(t)) {
                r.insert("issued".into(), json!(t));
            }
            if !interpreters.is_empty() {
                r.insert("resultsInterpreter".into(), Value::Array(interpreters));
            }
            let e = self.add("DiagnosticReport", &format!("report|{i}"), r);
            self.report = Some(e);
        }
        // Without an SPM in its group, the order's specimen is known by
        // OBR-7, the collection time.
        if let Some(t) = dt::date_time(&self.f(i, 7))
            && !self.group_has(i, "SPM")
        {
            let mut sp = Map::new();
            sp.insert("collection".into(), json!({ "collectedDateTime": t }));
            if let Some(p) = self.patient_ref() {
                sp.insert("subject".into(), p);
            }
            sp.insert("request".into(), json!([self.reference(order)]));
            let e = self.add("Specimen", &format!("obr|{i}"), sp);
            let reference = self.reference(e);
            self.push(order, "specimen", reference.clone());
            if let Some(r) = self.report {
                self.push(r, "specimen", reference);
            }
        }
        self.order = None;
        self.last = Last::Entry(order);
        // Later OBX belong to this OBR's order (and report).
        self.order_of_obx = Some(order);
        // A new OBR starts a new group of observations and its specimen.
        self.group_observations.clear();
        self.specimen = None;
        self.collector = collectors.into_iter().next();
        true
    }

    pub(crate) fn tq1(&mut self, i: usize) -> bool {
        let start = self.f(i, 7);
        let end = self.f(i, 8);
        let priority = self.f(i, 9).component(1).text();
        let target = self.order.or(self.order_of_obx);
        if let Some(o) = target {
            if let Some(p) = dt::period(&start, &end) {
                // One occurrence[x]: the timing quantity's period wins over OBR-7.
                self.remove(o, "occurrenceDateTime");
                self.set(o, "occurrencePeriod", p);
            }
            if let Some(p) = priority.as_deref().map(priority_of) {
                self.set(o, "priority", json!(p));
            }
        }
        true
    }

    pub(crate) fn obx(&mut self, i: usize) -> bool {
        // Under TXA (MDM), OBX carry the document's content (and are
        // observations still).
        if let Some(d) = self.document {
            let value = self.f(i, 5);
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
        if let Some(order) = self.order_of_obx.or(self.order) {
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
        // Responsible observer (16), performing organization (23) and its
        // medical director (25).
        let mut performers = self.practitioner_roles(i, 16, "RO", "Responsible Observer");
        // The observers themselves, beside their role.
        performers.extend(self.practitioner(i, 16));
        let lab = self.f(i, 23);
        if let Some(org) = self.xon(&lab) {
            performers.push(org);
        }
        performers.extend(self.practitioner_roles(i, 25, "MDIR", "Medical Director"));
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
                    | "Specimen" | "Immunization" => {
                        let mut note = Map::new();
                        if let Some(a) = author {
                            note.insert("authorReference".into(), a);
                        }
                        note.insert("text".into(), json!(text.join("\n")));
                        self.push(e, "note", Value::Object(note));
                        true
                    }
                    // Appointment has a comment, not notes.
                    "Appointment" => {
                        self.set(e, "comment", json!(text.join("\n")));
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
        let mut ids: Vec<Value> = [
            dt::sub_entity_identifier(&id.component(1), Some("PGN")),
            dt::sub_entity_identifier(&id.component(2), Some("FGN")),
        ]
        .into_iter()
        .flatten()
        .collect();
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
            let pids: Vec<Value> = [
                dt::sub_entity_identifier(&p.component(1), Some("PGN")),
                dt::sub_entity_identifier(&p.component(2), Some("FGN")),
            ]
            .into_iter()
            .flatten()
            .collect();
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

/// ORC-1 / ORC-5 → ServiceRequest.status.
fn order_status(control: &str, status: Option<&str>) -> &'static str {
    match (control, status) {
        ("CA" | "OC" | "DC" | "CR", _) | (_, Some("CA" | "DC")) => "revoked",
        ("HD" | "OH", _) | (_, Some("HD")) => "on-hold",
        (_, Some("CM")) => "completed",
        _ => "active",
    }
}

/// OBR-25 → DiagnosticReport.status.
fn report_status(status: Option<&str>) -> &'static str {
    match status {
        Some("F") => "final",
        Some("C") => "corrected",
        Some("X") => "cancelled",
        Some("P" | "R" | "S" | "I" | "O") => "preliminary",
        Some("A") => "partial",
        _ => "unknown",
    }
}

/// TQ1-9 / OBR-27 priority → ServiceRequest.priority.
fn priority_of(code: &str) -> &'static str {
    match code {
        "S" => "stat",
        "A" | "P" | "C" => "asap",
        "U" => "urgent",
        _ => "routine",
    }
}
