//! Financial segments: IN1/IN2 (Coverage, the payer), GT1 (the guarantor),
//! ACC (an accident), DB1 (disability), BLG (billing → Account).

use serde_json::{Map, Value, json};

use crate::datatypes as dt;
use crate::patient::gender;
use crate::{Builder, Last};

impl Builder<'_> {
    pub(crate) fn in1(&mut self, i: usize) -> bool {
        let mut c = Map::new();
        c.insert("status".into(), json!("active"));
        if let Some(p) = self.patient_ref() {
            c.insert("beneficiary".into(), p);
        }
        // The plan type (IN1-15) is the coverage's type; the plan (IN1-2) its class.
        let plan = self.f(i, 2);
        if let Some(t) = dt::codeable(&self.f(i, 15)) {
            c.insert("type".into(), t);
        }
        if let Some(value) = plan.component(1).text() {
            c.insert(
                "class".into(),
                json!([{ "type": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/coverage-class", "code": "plan" }] },
                         "value": value, "name": plan.component(2).text().unwrap_or_else(|| value.clone()) }]),
            );
        }
        let company_id = self.f(i, 3);
        let company_name = self.f(i, 4);
        let id = dt::identifier(&company_id);
        let payor = self.organization(
            company_name.component(1).text(),
            id.as_ref().and_then(|i| i["value"].as_str().map(str::to_owned)),
            id.as_ref().and_then(|i| i["system"].as_str().map(str::to_owned)),
        );
        // The insurer's address (IN1-5), and whom to call there (IN1-6, IN1-7).
        if let Some(e) = payor
            .as_ref()
            .and_then(|r| r["reference"].as_str())
            .and_then(|r| self.entry_of(r))
        {
            let address: Vec<Value> = self.addresses(i, 5);
            if !address.is_empty() {
                self.fill(e, "address", Value::Array(address));
            }
            let mut contact = Map::new();
            if let Some(n) = self.f(i, 6).repetitions().find_map(|n| dt::human_name(&n, 1)) {
                contact.insert("name".into(), n);
            }
            let telecom: Vec<Value> = self.contact_points(i, 7);
            if !telecom.is_empty() {
                contact.insert("telecom".into(), Value::Array(telecom));
            }
            if !contact.is_empty() {
                self.fill(e, "contact", json!([contact]));
            }
        }
        c.insert(
            "payor".into(),
            json!([payor.unwrap_or_else(|| json!({ "display": "unknown payor" }))]),
        );
        let start = self.f(i, 12);
        let end = self.f(i, 13);
        if let Some(p) = dt::period(&start, &end) {
            c.insert("period".into(), p);
        }
        if let Some(rel) = dt::codeable(&self.f(i, 17)) {
            c.insert("relationship".into(), rel);
        }
        // IN1-36, the policy number, identifies the coverage; IN1-8/9 its group.
        if let Some(policy) = self.f(i, 36).text() {
            c.insert(
                "identifier".into(),
                json!([{ "value": policy, "type": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MB" }], "text": "policy number" } }]),
            );
        }
        if let Some(group) = self.f(i, 8).text() {
            let name = self.f(i, 9).text().unwrap_or_else(|| group.clone());
            let class = json!({ "type": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/coverage-class", "code": "group" }] },
                                "value": group, "name": name });
            match c.get_mut("class") {
                Some(Value::Array(classes)) => classes.push(class),
                _ => {
                    c.insert("class".into(), json!([class]));
                }
            }
        }
        // IN1-11 (IN1-10 its id): the insured's group employer, holding the policy.
        let employer = self.f(i, 11);
        let employer_id = self.f(i, 10);
        if let Some(org) = self.organization(employer.component(1).text(), employer_id.component(1).text(), None) {
            c.insert("policyHolder".into(), org);
        }
        // The insured (IN1-16 name, 18 birth date, 19 address, 43 sex, 49 id),
        // when not the patient (IN1-17 relationship SEL), is the subscriber.
        let relation = self.f(i, 17).component(1).text();
        // The patient insured as self: IN1-49 is the patient's insured id.
        if relation.as_deref() == Some("SEL")
            && let Some(&p) = self.by_key.get("Patient|patient")
        {
            for id in self.identifiers(i, 49) {
                self.push(p, "identifier", id);
            }
        }
        let names: Vec<Value> = self
            .f(i, 16)
            .repetitions()
            .filter_map(|n| dt::human_name(&n, 1))
            .collect();
        if !names.is_empty() && relation.as_deref() != Some("SEL") {
            let mut r = Map::new();
            if let Some(p) = self.patient_ref() {
                r.insert("patient".into(), p);
            }
            r.insert("name".into(), Value::Array(names));
            if let Some(d) = dt::date_time(&self.f(i, 18)) {
                r.insert("birthDate".into(), json!(d.get(..10).unwrap_or(&d)));
            }
            let addresses: Vec<Value> = self.addresses(i, 19);
            if !addresses.is_empty() {
                r.insert("address".into(), Value::Array(addresses));
            }
            if let Some(g) = gender(self.f(i, 43).component(1).text().as_deref()) {
                r.insert("gender".into(), json!(g));
            }
            let ids = self.identifiers(i, 49);
            if !ids.is_empty() {
                r.insert("identifier".into(), Value::Array(ids));
            }
            if let Some(rel) = dt::codeable(&self.f(i, 17)) {
                r.insert("relationship".into(), json!([rel]));
            }
            let e = self.add("RelatedPerson", &format!("insured|{i}"), r);
            c.insert("subscriber".into(), self.reference(e));
        }
        let e = self.add("Coverage", &format!("in1|{i}"), c);
        // The patient's account is paid through this coverage.
        if let Some(&a) = self.by_key.get("Account|account") {
            let reference = self.reference(e);
            self.push(a, "coverage", json!({ "coverage": reference }));
        }
        self.last = Last::Entry(e);
        true
    }

    /// IN2 (after IN1): the Medicare (IN2-6) and Medicaid (IN2-8) numbers
    /// identify the coverage too.
    pub(crate) fn in2(&mut self, i: usize) -> bool {
        let Last::Entry(c) = self.last else {
            return false;
        };
        if self.entries[c].0 != "Coverage" {
            return false;
        }
        // They are the patient's numbers too, as is the military id (IN2-10);
        // IN2-7 is the patient's name on the Medicaid case.
        let patient = self.by_key.get("Patient|patient").copied();
        for (n, code, system) in [
            (6, "MC", "http://hl7.org/fhir/sid/us-medicare"),
            (8, "MA", "urn:carehub:hl7-aa:medicaid"),
            (10, "MI", "urn:carehub:hl7-aa:military"),
        ] {
            if let Some(v) = self.f(i, n).text() {
                let id = json!({ "value": v, "system": system, "type": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": code }] } });
                if n != 10 {
                    self.push(c, "identifier", id.clone());
                }
                if let Some(p) = patient {
                    self.push(p, "identifier", id);
                }
            }
        }
        if let (Some(p), Some(name)) = (patient, dt::human_name(&self.f(i, 7), 1)) {
            self.push(p, "name", name);
        }
        // IN2-1 (the insured's employee id) and IN2-2 (SSN) identify the insured.
        let insured = self.entries[c].2["subscriber"]["reference"]
            .as_str()
            .and_then(|r| self.entry_of(r));
        let mut ids = self.identifiers(i, 1);
        if let Some(ssn) = self.f(i, 2).text() {
            ids.push(dt::ssn(ssn));
        }
        if let Some(r) = insured {
            for id in ids {
                self.push(r, "identifier", id);
            }
        }
        // IN2-61, the patient's member number with its plan.
        for id in self.identifiers(i, 61) {
            self.push(c, "identifier", id.clone());
            if let Some(p) = patient {
                self.push(p, "identifier", id);
            }
        }
        true
    }

    /// GT1: the guarantor → RelatedPerson (the Account's guarantor).
    pub(crate) fn gt1(&mut self, i: usize) -> bool {
        let mut r = Map::new();
        if let Some(p) = self.patient_ref() {
            r.insert("patient".into(), p);
        }
        // GT1-2 (guarantor number), GT1-19 (employee number), GT1-12 (SSN).
        let mut ids = self.identifiers(i, 2);
        ids.extend(self.identifiers(i, 19));
        if let Some(ssn) = self.f(i, 12).text() {
            ids.push(dt::ssn(ssn));
        }
        if !ids.is_empty() {
            r.insert("identifier".into(), Value::Array(ids));
        }
        // GT1-11 = SEL: the patient is the guarantor; the guarantor's numbers
        // are the patient's, and the account's guarantor is the Patient.
        let relationship = dt::codeable(&self.f(i, 11));
        let is_self = relationship.as_ref().is_some_and(|r| {
            r["coding"][0]["code"]
                .as_str()
                .is_some_and(|c| c.eq_ignore_ascii_case("SEL"))
        });
        if is_self && let Some(patient) = self.patient_ref() {
            if let Some(Value::Array(new)) = r.remove("identifier")
                && let Some(pe) = self.known("Patient", "patient")
            {
                for id in new {
                    let known = self.entries[pe].2["identifier"]
                        .as_array()
                        .is_some_and(|ids| ids.iter().any(|k| k["value"] == id["value"]));
                    if !known {
                        self.push(pe, "identifier", id);
                    }
                }
            }
            if let Some(&a) = self.by_key.get("Account|account") {
                self.push(a, "guarantor", json!({ "party": patient }));
            }
            return true;
        }
        // GT1-21: a guarantor that is an organization.
        let org = self.f(i, 21);
        let organization = self.xon(&org);
        let names: Vec<Value> = self
            .f(i, 3)
            .repetitions()
            .filter_map(|n| dt::human_name(&n, 1))
            .collect();
        if !names.is_empty() {
            r.insert("name".into(), Value::Array(names));
        }
        let addresses: Vec<Value> = self.addresses(i, 5);
        if !addresses.is_empty() {
            r.insert("address".into(), Value::Array(addresses));
        }
        let telecom: Vec<Value> = self.contact_points(i, 6);
        if !telecom.is_empty() {
            r.insert("telecom".into(), Value::Array(telecom));
        }
        if let Some(d) = dt::date_time(&self.f(i, 8)) {
            r.insert("birthDate".into(), json!(d.get(..10).unwrap_or(&d)));
        }
        if let Some(g) = gender(self.f(i, 9).component(1).text().as_deref()) {
            r.insert("gender".into(), json!(g));
        }
        if r.len() <= 1 {
            // No person: the organization (GT1-21), if any, is the guarantor.
            let Some(o) = organization else { return false };
            if let Some(&a) = self.by_key.get("Account|account") {
                self.push(a, "guarantor", json!({ "party": o }));
            }
            return true;
        }
        if let Some(rel) = relationship {
            r.insert("relationship".into(), json!([rel]));
        }
        let e = self.add("RelatedPerson", &format!("gt1|{i}"), r);
        if let Some(&a) = self.by_key.get("Account|account") {
            let reference = self.reference(e);
            self.push(a, "guarantor", json!({ "party": reference }));
        }
        self.last = Last::Entry(e);
        true
    }

    /// ACC: an accident → its place (ACC-3, with the address ACC-11) as a
    /// Location and who recorded it (ACC-7).
    pub(crate) fn acc(&mut self, i: usize) -> bool {
        if let Some(name) = self.f(i, 3).text() {
            let mut l = Map::new();
            l.insert("name".into(), json!(name));
            if let Some(a) = dt::address(&self.f(i, 11)) {
                l.insert("address".into(), a);
            }
            self.add("Location", &format!("accident|{name}"), l);
        }
        self.practitioner(i, 7);
        true
    }

    /// DB1: the patient's disability → the disabled person's identifier
    /// (DB1-3) is the patient's.
    pub(crate) fn db1(&mut self, i: usize) -> bool {
        // DB1-2: whose disability — the patient's (PT, or unsaid) is mapped.
        if !matches!(self.f(i, 2).text().as_deref(), None | Some("PT")) {
            return false;
        }
        let ids = self.identifiers(i, 3);
        let Some(&p) = self.by_key.get("Patient|patient") else {
            return false;
        };
        for id in ids {
            self.push(p, "identifier", id);
        }
        true
    }

    /// BLG: billing of an order → the Account (BLG-3) it is charged to.
    pub(crate) fn blg(&mut self, i: usize) -> bool {
        let ids = self.identifiers(i, 3);
        if ids.is_empty() {
            return false;
        }
        let _ = self.f(i, 2); // charge type (CR, CH…): the ChargeItems say it
        let key = self.field(i, 3).raw().to_owned();
        let mut a = Map::new();
        a.insert("identifier".into(), Value::Array(ids));
        a.insert("status".into(), json!("active"));
        if let Some(p) = self.patient_ref() {
            a.insert("subject".into(), json!([p]));
        }
        let e = self.add("Account", &format!("blg|{key}"), a);
        self.support_order(e);
        true
    }

    /// Entry `e` supports the current order, where its type has room for it.
    pub(crate) fn support_order(&mut self, e: usize) {
        let Some(order) = self.current_order() else { return };
        if let Some(key) = crate::orders::OrderKind::of_type(&self.entries[order].0).and_then(|k| k.supporting()) {
            let reference = self.reference(e);
            self.push(order, key, reference);
        }
    }
}
