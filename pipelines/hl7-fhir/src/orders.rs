//! Orders: ORC, OBR, TQ1, RF1 (referrals), and what an order is
//! ([`OrderKind`]). Results are in `results`, pharmacy orders in `pharmacy`.

use serde_json::{Map, Value, json};

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
    pub(crate) fn parent_order(&mut self, i: usize, n: usize, e: usize) {
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
}

impl Builder<'_> {}

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
    pub(crate) fn of(b: &Builder<'_>, i: usize) -> OrderKind {
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
    pub(crate) fn status(self, s: &'static str) -> &'static str {
        match (self, s) {
            (OrderKind::Medication | OrderKind::Supply, "revoked") => "cancelled",
            (OrderKind::Supply, "on-hold") => "suspended",
            _ => s,
        }
    }

    pub(crate) fn subject(self) -> &'static str {
        match self {
            OrderKind::Nutrition => "patient",
            OrderKind::Supply => "deliverTo",
            _ => "subject",
        }
    }

    pub(crate) fn encounter(self) -> Option<&'static str> {
        (self != OrderKind::Supply).then_some("encounter")
    }

    pub(crate) fn authored(self) -> &'static str {
        match self {
            OrderKind::Nutrition => "dateTime",
            _ => "authoredOn",
        }
    }

    pub(crate) fn requester(self) -> &'static str {
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

    pub(crate) fn requisition(self) -> Option<&'static str> {
        match self {
            OrderKind::Service => Some("requisition"),
            OrderKind::Medication => Some("groupIdentifier"),
            _ => None,
        }
    }

    pub(crate) fn has_based_on(self) -> bool {
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
pub(crate) fn order_status(control: &str, status: Option<&str>) -> &'static str {
    match (control, status) {
        ("CA" | "OC" | "DC" | "CR", _) | (_, Some("CA" | "DC")) => "revoked",
        ("HD" | "OH", _) | (_, Some("HD")) => "on-hold",
        (_, Some("CM")) => "completed",
        _ => "active",
    }
}

/// OBR-25 → DiagnosticReport.status.
pub(crate) fn report_status(status: Option<&str>) -> &'static str {
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
pub(crate) fn priority_of(code: &str) -> &'static str {
    match code {
        "S" => "stat",
        "A" | "P" | "C" => "asap",
        "U" => "urgent",
        _ => "routine",
    }
}
