//! Clinical segments of the patient: AL1 (AllergyIntolerance), DG1
//! (Condition), PR1 (Procedure).

use serde_json::{Map, Value, json};

use crate::datatypes as dt;
use crate::{Builder, Last};

impl Builder<'_> {
    pub(crate) fn al1(&mut self, i: usize) -> bool {
        let mut a = Map::new();
        a.insert(
            "clinicalStatus".into(),
            json!({ "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical", "code": "active" }] }),
        );
        if let Some(p) = self.patient_ref() {
            a.insert("patient".into(), p);
        }
        if let Some(code) = dt::codeable(&self.f(i, 3)) {
            a.insert("code".into(), code);
        }
        if let Some(category) = self.f(i, 2).component(1).text().and_then(|c| match c.as_str() {
            "DA" | "MA" => Some("medication"),
            "FA" => Some("food"),
            "EA" | "PA" | "AA" | "LA" => Some("environment"),
            _ => None,
        }) {
            a.insert("category".into(), json!([category]));
        }
        let severity = self.f(i, 4).component(1).text().and_then(|s| match s.as_str() {
            "SV" => Some("severe"),
            "MO" => Some("moderate"),
            "MI" => Some("mild"),
            _ => None,
        });
        let manifestation: Vec<Value> = self
            .f(i, 5)
            .repetitions()
            .filter_map(|r| r.component(1).text().map(|t| json!({ "text": t })))
            .collect();
        if !manifestation.is_empty() || severity.is_some() {
            let mut reaction = Map::new();
            if !manifestation.is_empty() {
                reaction.insert("manifestation".into(), Value::Array(manifestation));
            } else {
                reaction.insert("manifestation".into(), json!([{ "text": "unspecified" }]));
            }
            if let Some(s) = severity {
                reaction.insert("severity".into(), json!(s));
            }
            a.insert("reaction".into(), json!([reaction]));
        }
        if let Some(t) = dt::date_time(&self.f(i, 6)) {
            a.insert("onsetDateTime".into(), json!(t));
        }
        let e = self.add("AllergyIntolerance", &format!("al1|{i}"), a);
        self.last = Last::Entry(e);
        true
    }

    pub(crate) fn dg1(&mut self, i: usize) -> bool {
        let mut c = Map::new();
        c.insert(
            "category".into(),
            json!([{ "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/condition-category", "code": "encounter-diagnosis" }] }]),
        );
        if let Some(p) = self.patient_ref() {
            c.insert("subject".into(), p);
        }
        if let Some(e) = self.encounter_ref() {
            c.insert("encounter".into(), e);
        }
        match (dt::codeable(&self.f(i, 3)), self.f(i, 4).text()) {
            (Some(mut code), description) => {
                if let (Some(d), None) = (description, code.get("text")) {
                    code["text"] = json!(d);
                }
                c.insert("code".into(), code);
            }
            (None, Some(d)) => {
                c.insert("code".into(), json!({ "text": d }));
            }
            (None, None) => {}
        }
        if let Some(t) = dt::date_time(&self.f(i, 5)) {
            c.insert("onsetDateTime".into(), json!(t));
        }
        let _ = self.f(i, 6);
        if let Some(who) = self.practitioner(i, 16).into_iter().next() {
            c.insert("asserter".into(), who);
        }
        if let Some(ident) = dt::entity_identifier(&self.f(i, 20), None) {
            c.insert("identifier".into(), json!([ident]));
        }
        let e = self.add("Condition", &format!("dg1|{i}"), c);
        // Within an order (ORM, OML), the diagnosis is the order's reason.
        if let Some(order) = self.current_order()
            && crate::orders::OrderKind::of_type(&self.entries[order].0).is_some_and(|k| k.has_reason())
        {
            let reference = self.reference(e);
            self.push(order, "reasonReference", reference);
        }
        if let Some(enc) = self.visit {
            let reference = self.reference(e);
            // DG1-15, the diagnosis priority, is its rank in the visit.
            let mut diagnosis = Map::new();
            diagnosis.insert("condition".into(), reference);
            // (A priority that is no positive number is left to the unmapped report.)
            if let Some(rank) = self
                .field(i, 15)
                .text()
                .and_then(|r| r.trim().parse::<u32>().ok())
                .filter(|r| *r > 0)
            {
                let _ = self.f(i, 15);
                diagnosis.insert("rank".into(), json!(rank));
            }
            self.push(enc, "diagnosis", Value::Object(diagnosis));
        }
        self.last = Last::Entry(e);
        true
    }

    pub(crate) fn pr1(&mut self, i: usize) -> bool {
        let mut p = Map::new();
        p.insert("status".into(), json!("completed"));
        if let Some(s) = self.patient_ref() {
            p.insert("subject".into(), s);
        }
        match (dt::codeable(&self.f(i, 3)), self.f(i, 4).text()) {
            (Some(code), _) => {
                p.insert("code".into(), code);
            }
            (None, Some(d)) => {
                p.insert("code".into(), json!({ "text": d }));
            }
            _ => {}
        }
        if let Some(t) = dt::date_time(&self.f(i, 5)) {
            p.insert("performedDateTime".into(), json!(t));
        }
        // Anesthesiologist (8), surgeon (11), procedure practitioner (12).
        let mut performers = Vec::new();
        for n in [8, 11, 12] {
            performers.extend(
                self.practitioner(i, n)
                    .into_iter()
                    .map(|actor| json!({ "actor": actor })),
            );
        }
        if !performers.is_empty() {
            p.insert("performer".into(), Value::Array(performers));
        }
        if let Some(ident) = dt::entity_identifier(&self.f(i, 19), None) {
            p.insert("identifier".into(), json!([ident]));
        }
        // PR1-6, the functional type (A anesthesia, D diagnostic, …).
        if let Some(c) = dt::codeable(&self.f(i, 6)) {
            p.insert("category".into(), c);
        }
        // PR1-25, the procedure this one is part of.
        let parent = self.f(i, 25);
        if let Some(pid) = dt::entity_identifier(&parent, None) {
            let mut pp = Map::new();
            pp.insert("status".into(), json!("unknown"));
            pp.insert("identifier".into(), json!([pid]));
            if let Some(s) = self.patient_ref() {
                pp.insert("subject".into(), s);
            }
            let pe = self.add("Procedure", &format!("parent|{}", parent.raw()), pp);
            p.insert("partOf".into(), json!([self.reference(pe)]));
        }
        // PR1-23, where it was done.
        let place = self.f(i, 23);
        if let Some(l) = self.location(&place) {
            p.insert("location".into(), l);
        }
        let e = self.add("Procedure", &format!("pr1|{i}"), p);
        self.last = Last::Entry(e);
        true
    }
}
