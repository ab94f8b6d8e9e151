//! Orders and results: ORC, OBR, TQ1, OBX, NTE, SPM.

use base64::Engine as _;
use serde_json::{Map, Value, json};

use carehub_hl7::codec::er7::Value as V2;

use crate::datatypes as dt;
use crate::{Builder, Last};

impl Builder<'_> {
    /// ORC starts an order: a ServiceRequest (OBR completes it) — or, when
    /// its group holds RXO, ODS or RQD, a MedicationRequest, NutritionOrder
    /// or SupplyRequest ([`OrderKind`]).
    pub(crate) fn orc(&mut self, i: usize) -> bool {
        let kind = OrderKind::of(self, i);
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
        s.insert(
            "status".into(),
            json!(kind.status(order_status(&control, status.as_deref()))),
        );
        if kind != OrderKind::Supply {
            s.insert("intent".into(), json!("order"));
        }
        if let Some(ids) = dt::placer_filler(&placer, &filler) {
            s.insert("identifier".into(), ids);
        }
        if let Some(p) = self.patient_ref() {
            s.insert(kind.subject().into(), p);
        }
        if let (Some(e), Some(key)) = (self.encounter_ref(), kind.encounter()) {
            s.insert(key.into(), e);
        }
        // When it was ordered; a nutrition order must say (else the message's time).
        let ordered = dt::date_time(&self.f(i, 9)).or_else(|| {
            (kind == OrderKind::Nutrition)
                .then(|| dt::date_time(&self.field(0, 7)))
                .flatten()
        });
        if let Some(t) = ordered {
            s.insert(kind.authored().into(), json!(t));
        }
        if let Some(r) = self
            .practitioner_roles(i, 12, "OP", "Ordering Provider")
            .into_iter()
            .next()
        {
            s.insert(kind.requester().into(), r);
        }
        // The patient's account pays for it.
        if let (Some(&a), Some(key)) = (self.by_key.get("Account|account"), kind.supporting()) {
            s.insert(key.into(), json!([self.reference(a)]));
        }
        // ORC-4, the placer group number: the requisition the order is part of.
        if let Some(group) = dt::entity_identifier(&self.f(i, 4), Some("PGN")) {
            match kind.requisition() {
                Some(key) => {
                    s.insert(key.into(), group);
                }
                None => {
                    if let Some(Value::Array(ids)) = s.get_mut("identifier") {
                        ids.push(group);
                    }
                }
            }
        }
        // ORC-21..23: the ordering facility, the requester's organization.
        let facility = self.f(i, 21);
        if let Some(org) = self.xon(&facility)
            && let Some(role) = s
                .get(kind.requester())
                .and_then(|r| r["reference"].as_str())
                .and_then(|r| self.entry_of(r))
        {
            self.set(role, "organization", org);
        }
        let e = self.add(kind.resource_type(), &format!("order|{key}"), s);
        // ORC-8, the parent order.
        if kind.has_based_on() {
            self.parent_order(i, 8, e);
        }
        self.order = Some(e);
        self.report = None;
        self.last = Last::Entry(e);
        true
    }

    /// OBR: the order's details, and for results (ORU) the DiagnosticReport.
    /// An EIP (ORC-8, OBR-29: the parent's placer and filler numbers) →
    /// the parent ServiceRequest the order `e` is based on.
    fn parent_order(&mut self, i: usize, n: usize, e: usize) {
        let parent = self.f(i, n);
        let (placer, filler) = (parent.component(1), parent.component(2));
        let ids: Vec<Value> = [
            dt::sub_entity_identifier(&placer, Some("PLAC")),
            dt::sub_entity_identifier(&filler, Some("FILL")),
        ]
        .into_iter()
        .flatten()
        .collect();
        let Some(key) = ids.first().and_then(|id| id["value"].as_str()).map(str::to_owned) else {
            return;
        };
        let mut ps = Map::new();
        ps.insert("status".into(), json!("active"));
        ps.insert("intent".into(), json!("order"));
        ps.insert("identifier".into(), Value::Array(ids));
        if let Some(subject) = self.patient_ref() {
            ps.insert("subject".into(), subject);
        }
        // An order the message already holds under these numbers is the parent.
        let pe = self.add("ServiceRequest", &format!("order|{key}"), ps);
        if pe == e {
            return;
        }
        let reference = self.reference(pe);
        let already = self.entries[e].2["basedOn"]
            .as_array()
            .is_some_and(|b| b.contains(&reference));
        if !already {
            self.push(e, "basedOn", reference);
        }
    }

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
        // OBR-29: the parent order (ORC-8's, when both are given).
        if OrderKind::of_type(&self.entries[order].0).is_some_and(|k| k.has_based_on()) {
            self.parent_order(i, 29, order);
        }
        // OBR-31: the reasons for the study.
        let reasons: Vec<Value> = self.f(i, 31).repetitions().filter_map(|r| dt::codeable(&r)).collect();
        if !reasons.is_empty() {
            self.set(order, "reasonCode", Value::Array(reasons));
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
            // OBR-8, the end of the collection, makes it a period.
            let collection = match dt::date_time(&self.f(i, 8)) {
                Some(end) => json!({ "collectedPeriod": { "start": t, "end": end } }),
                None => json!({ "collectedDateTime": t }),
            };
            sp.insert("collection".into(), collection);
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
        let Some(o) = target else {
            // After SCH (SIU, v2.6+), TQ1 times the appointment in place of SCH-11.
            let Some(a) = self.appointment else { return false };
            let instant = |v| dt::date_time(&v).filter(|t| t.contains('T'));
            let (start, end) = (instant(start), instant(end));
            if start.is_none() && end.is_none() {
                return false;
            }
            self.widen_appointment(a, start.as_deref(), end.as_deref());
            return true;
        };
        let kind = OrderKind::of_type(&self.entries[o].0);
        if let Some(p) = dt::period(&start, &end) {
            match kind {
                Some(OrderKind::Service) => {
                    // One occurrence[x]: the timing quantity's period wins over OBR-7.
                    self.remove(o, "occurrenceDateTime");
                    self.set(o, "occurrencePeriod", p);
                }
                Some(OrderKind::Medication) => {
                    let timing = json!({ "repeat": { "boundsPeriod": p } });
                    match self.entries[o]
                        .2
                        .get_mut("dosageInstruction")
                        .and_then(|d| d.get_mut(0))
                    {
                        Some(dosage) => dosage["timing"] = timing,
                        None => self.set(o, "dosageInstruction", json!([{ "timing": timing }])),
                    }
                }
                Some(OrderKind::Supply) => self.set(o, "occurrencePeriod", p),
                _ => {}
            }
        }
        if let (Some(p), false) = (priority.as_deref().map(priority_of), kind == Some(OrderKind::Nutrition)) {
            self.set(o, "priority", json!(p));
        }
        true
    }

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
    fn lab_performers(&mut self, i: usize) -> Vec<Value> {
        let lab = self.performing_lab(i);
        let mut performers = self.practitioner_roles_in(i, 25, "MDIR", "Medical Director", lab.as_ref());
        performers.extend(lab);
        performers
    }

    /// OBX-23, the performing organization, with its address (OBX-24).
    fn performing_lab(&mut self, i: usize) -> Option<Value> {
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
    fn obx_report(&mut self, i: usize, value_type: &str) -> bool {
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

impl Builder<'_> {
    /// The MedicationRequest, NutritionOrder or SupplyRequest the ORC before
    /// made, if it made one of `kind`.
    fn order_of(&self, kind: OrderKind) -> Option<usize> {
        self.order.filter(|&o| self.entries[o].0 == kind.resource_type())
    }

    /// RXO (pharmacy order) → the MedicationRequest's medication (RXO-1, a
    /// Medication with its form RXO-5), dose (RXO-2, units RXO-4),
    /// instructions (RXO-6 pharmacist, RXO-7 patient) and dispense (RXO-11
    /// amount, RXO-12 units, RXO-13 refills).
    pub(crate) fn rxo(&mut self, i: usize) -> bool {
        self.pharmacy_order(
            i,
            &PharmacyFields {
                code: 1,
                form: 5,
                dose: 2,
                dose_max: None,
                dose_units: 4,
                instructions: 6,
                patient_instructions: Some(7),
                dispense: 11,
                dispense_units: 12,
                refills: 13,
                rate: None,
            },
        )
    }

    /// RXE (pharmacy encoded order, RDE) → the MedicationRequest as for RXO:
    /// give code 2 (form 6), amount 3 (to 4 as a range) in units 5,
    /// administration instructions 7, dispense 10 in units 11, refills 12,
    /// rate 23 in units 24.
    pub(crate) fn rxe(&mut self, i: usize) -> bool {
        self.pharmacy_order(
            i,
            &PharmacyFields {
                code: 2,
                form: 6,
                dose: 3,
                dose_max: Some(4),
                dose_units: 5,
                instructions: 7,
                patient_instructions: None,
                dispense: 10,
                dispense_units: 11,
                refills: 12,
                rate: Some((23, 24)),
            },
        )
    }

    /// RXO / RXE → the MedicationRequest's Medication, dosage and dispense.
    fn pharmacy_order(&mut self, i: usize, at: &PharmacyFields) -> bool {
        let Some(m) = self.order_of(OrderKind::Medication) else {
            return false;
        };
        let name = self.seg(i).name().to_ascii_lowercase();
        if let Some(code) = dt::codeable(&self.f(i, at.code)) {
            let mut med = Map::new();
            med.insert("code".into(), code);
            if let Some(form) = dt::codeable(&self.f(i, at.form)) {
                med.insert("form".into(), form);
            }
            let key = self.field(i, at.code).raw().to_owned();
            let e = self.add("Medication", &format!("{name}|{key}"), med);
            let reference = self.reference(e);
            self.set(m, "medicationReference", reference);
        }
        let mut dosage = Map::new();
        let units = self.f(i, at.dose_units);
        let low = self.f(i, at.dose).text().and_then(|d| dt::quantity(&d, &units));
        let high = at
            .dose_max
            .and_then(|n| self.f(i, n).text())
            .and_then(|d| dt::quantity(&d, &units));
        let mut dose_and_rate = Map::new();
        match (low, high) {
            (Some(l), Some(h)) => {
                dose_and_rate.insert("doseRange".into(), json!({ "low": l, "high": h }));
            }
            (Some(q), None) | (None, Some(q)) => {
                dose_and_rate.insert("doseQuantity".into(), q);
            }
            (None, None) => {}
        }
        if let Some((amount, rate_units)) = at.rate {
            let rate_units = self.f(i, rate_units);
            if let Some(r) = self.f(i, amount).text().and_then(|d| dt::quantity(&d, &rate_units)) {
                dose_and_rate.insert("rateQuantity".into(), r);
            }
        }
        if !dose_and_rate.is_empty() {
            dosage.insert("doseAndRate".into(), json!([dose_and_rate]));
        }
        // CWE instructions: their text (component 2), else as written.
        let instructions = |v: V2<'_>| -> Vec<String> {
            v.repetitions()
                .filter_map(|r| r.component(2).text().or_else(|| r.text()))
                .collect()
        };
        let text = instructions(self.f(i, at.instructions));
        if !text.is_empty() {
            dosage.insert("text".into(), json!(text.join("\n")));
        }
        if let Some(n) = at.patient_instructions {
            let patient = instructions(self.f(i, n));
            if !patient.is_empty() {
                dosage.insert("patientInstruction".into(), json!(patient.join("\n")));
            }
        }
        if !dosage.is_empty() {
            self.set(m, "dosageInstruction", json!([dosage]));
        }
        let mut dispense = Map::new();
        let dispense_units = self.f(i, at.dispense_units);
        if let Some(q) = self
            .f(i, at.dispense)
            .text()
            .and_then(|d| dt::quantity(&d, &dispense_units))
        {
            dispense.insert("quantity".into(), q);
        }
        if let Some(n) = self.f(i, at.refills).text().and_then(|n| n.trim().parse::<u32>().ok()) {
            dispense.insert("numberOfRepeatsAllowed".into(), json!(n));
        }
        if !dispense.is_empty() {
            self.set(m, "dispenseRequest", Value::Object(dispense));
        }
        self.last = Last::Entry(m);
        true
    }

    /// ODS (dietary order) → the NutritionOrder's oral diet: the diet codes
    /// (ODS-3) and the instructions (ODS-4).
    pub(crate) fn ods(&mut self, i: usize) -> bool {
        let Some(n) = self.order_of(OrderKind::Nutrition) else {
            return false;
        };
        let _ = self.f(i, 1); // type (D diet, P preference, S supplement): the codes say what
        let mut diet = Map::new();
        let types: Vec<Value> = self.f(i, 3).repetitions().filter_map(|r| dt::codeable(&r)).collect();
        if !types.is_empty() {
            diet.insert("type".into(), Value::Array(types));
        }
        let text: Vec<String> = self.f(i, 4).repetitions().filter_map(|r| r.text()).collect();
        if !text.is_empty() {
            diet.insert("instruction".into(), json!(text.join("\n")));
        }
        if !diet.is_empty() {
            self.set(n, "oralDiet", Value::Object(diet));
        }
        true
    }

    /// RQD (requisition detail) → the SupplyRequest's item (RQD-2, else
    /// RQD-4), quantity (RQD-5, units RQD-6), the department it is asked
    /// of (RQD-9) and when it is needed (RQD-10).
    pub(crate) fn rqd(&mut self, i: usize) -> bool {
        let Some(r) = self.order_of(OrderKind::Supply) else {
            return false;
        };
        let item = dt::codeable(&self.f(i, 2)).or_else(|| dt::codeable(&self.f(i, 4)));
        self.set(
            r,
            "itemCodeableConcept",
            item.unwrap_or_else(|| json!({ "text": "unspecified" })),
        );
        let units = self.f(i, 6);
        let quantity = self
            .f(i, 5)
            .text()
            .and_then(|q| dt::quantity(&q, &units))
            // Required in FHIR, and not given: said to be unknown, not guessed.
            .unwrap_or_else(|| json!({ "extension": [{ "url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason", "valueCode": "unknown" }] }));
        self.set(r, "quantity", quantity);
        let department = self.f(i, 9);
        if let Some(org) = self.organization(department.component(2).text(), department.component(1).text(), None) {
            self.set(r, "deliverFrom", org);
        }
        if let Some(t) = dt::date_time(&self.f(i, 10)) {
            self.set(r, "occurrenceDateTime", json!(t));
        }
        true
    }

    /// RQ1 (after RQD) → the supplier (RQ1-2, manufacturer).
    pub(crate) fn rq1(&mut self, i: usize) -> bool {
        let Some(r) = self.order_of(OrderKind::Supply) else {
            return false;
        };
        let maker = self.f(i, 2);
        match self.organization(maker.component(2).text(), maker.component(1).text(), None) {
            Some(org) => {
                self.set(r, "supplier", json!([org]));
                true
            }
            None => false,
        }
    }
}

impl Builder<'_> {
    /// RF1 (referral) → a ServiceRequest: status (RF1-1), priority (RF1-2),
    /// type as category (RF1-3), the originating and external referral
    /// numbers (RF1-6, RF1-11), when it takes effect (RF1-7), why (RF1-10).
    pub(crate) fn rf1(&mut self, i: usize) -> bool {
        let Some(patient) = self.patient_ref() else {
            return false;
        };
        let mut s = Map::new();
        let status = match self.f(i, 1).component(1).text().as_deref() {
            Some("A") => "active",
            Some("P") => "draft",
            Some("R") => "revoked",
            Some("E") => "completed",
            _ => "unknown",
        };
        s.insert("status".into(), json!(status));
        s.insert("intent".into(), json!("order"));
        s.insert("subject".into(), patient);
        if let Some(e) = self.encounter_ref() {
            s.insert("encounter".into(), e);
        }
        if let Some(p) = self.f(i, 2).component(1).text().map(|c| match c.as_str() {
            "S" => "stat",
            "A" => "asap",
            _ => "routine",
        }) {
            s.insert("priority".into(), json!(p));
        }
        // A referral, in SNOMED CT's words (3457005 "Patient referral"),
        // then RF1-3, the referral type as the sender codes it.
        let mut categories = vec![
            json!({ "coding": [{ "system": "http://snomed.info/sct", "code": "3457005", "display": "Patient referral" }] }),
        ];
        categories.extend(dt::codeable(&self.f(i, 3)));
        s.insert("category".into(), Value::Array(categories));
        let ids: Vec<Value> = [
            dt::entity_identifier(&self.f(i, 6), Some("PLAC")),
            dt::entity_identifier(&self.f(i, 11), None),
        ]
        .into_iter()
        .flatten()
        .collect();
        let key = ids
            .first()
            .and_then(|id| id["value"].as_str())
            .map(str::to_owned)
            .unwrap_or_else(|| format!("rf1|{i}"));
        if !ids.is_empty() {
            s.insert("identifier".into(), Value::Array(ids));
        }
        // The referral holds from its effective date (7) to its expiration
        // date (8); it was processed (authored) on 9.
        if let Some(period) = dt::period(&self.f(i, 7), &self.f(i, 8)) {
            s.insert("occurrencePeriod".into(), period);
        }
        if let Some(t) = dt::date_time(&self.f(i, 9)) {
            s.insert("authoredOn".into(), json!(t));
        }
        let mut reasons: Vec<Value> = self.f(i, 10).repetitions().filter_map(|r| dt::codeable(&r)).collect();
        // RF1-14, the reason in words: the text of the coded reason, or a reason of its own.
        if let Some(text) = self.f(i, 14).text() {
            match reasons.first_mut() {
                Some(Value::Object(first)) if !first.contains_key("text") => {
                    first.insert("text".into(), Value::String(text));
                }
                _ => reasons.push(json!({ "text": text })),
            }
        }
        if !reasons.is_empty() {
            s.insert("reasonCode".into(), Value::Array(reasons));
        }
        // Who is authorized to perform what is referred: the provider
        // organization (19) and the health professional (20).
        let organization = self.f(i, 19);
        let mut performers: Vec<Value> = self.xon(&organization).into_iter().collect();
        performers.extend(self.practitioner(i, 20));
        if !performers.is_empty() {
            s.insert("performer".into(), Value::Array(performers));
        }
        let comments: Vec<Value> = self
            .f(i, 24)
            .repetitions()
            .filter_map(|r| r.text())
            .map(|t| json!({ "text": t }))
            .collect();
        if !comments.is_empty() {
            s.insert("note".into(), Value::Array(comments));
        }
        let e = self.add("ServiceRequest", &format!("referral|{key}"), s);
        self.last = Last::Entry(e);
        true
    }
}

/// Where RXO and RXE keep the same things.
struct PharmacyFields {
    code: usize,
    form: usize,
    dose: usize,
    dose_max: Option<usize>,
    dose_units: usize,
    instructions: usize,
    patient_instructions: Option<usize>,
    dispense: usize,
    dispense_units: usize,
    refills: usize,
    /// The give rate's amount and units.
    rate: Option<(usize, usize)>,
}

/// What an ORC orders, by the order detail segment of its group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OrderKind {
    Service,
    /// RXO (pharmacy order) or RXE (pharmacy encoded order).
    Medication,
    /// ODS (dietary order).
    Nutrition,
    /// RQD (requisition of supplies).
    Supply,
}

impl OrderKind {
    fn of(b: &Builder<'_>, i: usize) -> OrderKind {
        if b.group_has(i, "RXO") || b.group_has(i, "RXE") {
            OrderKind::Medication
        } else if b.group_has(i, "ODS") {
            OrderKind::Nutrition
        } else if b.group_has(i, "RQD") {
            OrderKind::Supply
        } else {
            OrderKind::Service
        }
    }

    pub(crate) fn resource_type(self) -> &'static str {
        match self {
            OrderKind::Service => "ServiceRequest",
            OrderKind::Medication => "MedicationRequest",
            OrderKind::Nutrition => "NutritionOrder",
            OrderKind::Supply => "SupplyRequest",
        }
    }

    /// The ServiceRequest status in this resource's value set.
    fn status(self, s: &'static str) -> &'static str {
        match (self, s) {
            (OrderKind::Medication | OrderKind::Supply, "revoked") => "cancelled",
            (OrderKind::Supply, "on-hold") => "suspended",
            _ => s,
        }
    }

    fn subject(self) -> &'static str {
        match self {
            OrderKind::Nutrition => "patient",
            OrderKind::Supply => "deliverTo",
            _ => "subject",
        }
    }

    fn encounter(self) -> Option<&'static str> {
        (self != OrderKind::Supply).then_some("encounter")
    }

    fn authored(self) -> &'static str {
        match self {
            OrderKind::Nutrition => "dateTime",
            _ => "authoredOn",
        }
    }

    fn requester(self) -> &'static str {
        match self {
            OrderKind::Nutrition => "orderer",
            _ => "requester",
        }
    }

    /// Where supporting information goes (an account, a study).
    pub(crate) fn supporting(self) -> Option<&'static str> {
        match self {
            OrderKind::Service => Some("supportingInfo"),
            OrderKind::Medication => Some("supportingInformation"),
            _ => None,
        }
    }

    fn requisition(self) -> Option<&'static str> {
        match self {
            OrderKind::Service => Some("requisition"),
            OrderKind::Medication => Some("groupIdentifier"),
            _ => None,
        }
    }

    fn has_based_on(self) -> bool {
        matches!(self, OrderKind::Service | OrderKind::Medication)
    }

    /// Whether a diagnosis can be this order's reason.
    pub(crate) fn has_reason(self) -> bool {
        self != OrderKind::Nutrition
    }

    pub(crate) fn of_type(t: &str) -> Option<OrderKind> {
        [
            OrderKind::Service,
            OrderKind::Medication,
            OrderKind::Nutrition,
            OrderKind::Supply,
        ]
        .into_iter()
        .find(|k| k.resource_type() == t)
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
