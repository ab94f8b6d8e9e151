//! The patient and the visit: PID, PD1, NK1, PV1, PV2, AL1, DG1, PR1, IN1.

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

    pub(crate) fn pv1(&mut self, i: usize) -> bool {
        let mut enc = Map::new();
        let class = self.f(i, 2).component(1).text();
        let (code, display) = match class.as_deref() {
            Some("I") => ("IMP", "inpatient encounter"),
            Some("E") => ("EMER", "emergency"),
            Some("P") => ("PRENC", "pre-admission"),
            Some("R") => ("IMP", "inpatient encounter"),
            Some("B") => ("AMB", "ambulatory"),
            _ => ("AMB", "ambulatory"),
        };
        enc.insert(
            "class".into(),
            json!({ "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": code, "display": display }),
        );
        let discharged = dt::date_time(&self.f(i, 45));
        enc.insert(
            "status".into(),
            json!(if discharged.is_some() {
                "finished"
            } else {
                "in-progress"
            }),
        );
        if let Some(p) = self.patient_ref() {
            enc.insert("subject".into(), p);
        }
        let visit = self.identifiers(i, 19);
        if !visit.is_empty() {
            enc.insert("identifier".into(), Value::Array(visit));
        }
        // PV1-5, the pre-admission number.
        if let Some(pre) = self.identifiers(i, 5).into_iter().next() {
            enc.insert("hospitalization".into(), json!({ "preAdmissionIdentifier": pre }));
        }
        let start = self.f(i, 44);
        if let Some(p) = dt::period(&start, &self.field(i, 45)) {
            enc.insert("period".into(), p);
        }
        let mut locations = Vec::new();
        // Assigned (3), prior (6), temporary (11), pending (42), prior temporary (43).
        for (n, status) in [
            (3, "active"),
            (6, "completed"),
            (11, "active"),
            (42, "planned"),
            (43, "completed"),
        ] {
            let place = self.f(i, n);
            if let Some(l) = self.location(&place) {
                locations.push(json!({ "location": l, "status": status }));
            }
        }
        if !locations.is_empty() {
            enc.insert("location".into(), Value::Array(locations));
        }
        for v in self.identifiers(i, 50) {
            let ids = enc.entry("identifier").or_insert_with(|| json!([]));
            if let Value::Array(a) = ids {
                a.push(v);
            }
        }
        // PV1-37, where the patient was discharged to (DLD: a location
        // code with its name and coding system as subcomponents).
        let to = self.f(i, 37).component(1);
        if let Some(name) = to.subcomponent(2).text().or_else(|| to.subcomponent(1).text()) {
            let mut l = Map::new();
            if let (Some(code), Some(_)) = (to.subcomponent(1).text(), to.subcomponent(2).text()) {
                let mut ident = Map::new();
                ident.insert("value".into(), json!(code));
                if let Some(system) = to.subcomponent(3).text() {
                    ident.insert("system".into(), json!(dt::code_system(&system)));
                }
                l.insert("identifier".into(), json!([ident]));
            }
            l.insert("name".into(), json!(name));
            let e = self.add("Location", &format!("discharged-to|{name}"), l);
            let destination = self.reference(e);
            match enc.get_mut("hospitalization") {
                Some(Value::Object(h)) => {
                    h.insert("destination".into(), destination);
                }
                _ => {
                    enc.insert("hospitalization".into(), json!({ "destination": destination }));
                }
            }
        }
        // Admission and discharge: PV1-13 re-admission, 14 admit source,
        // 16 VIP indicator, 36 discharge disposition, 38 diet.
        let mut stay = Vec::new();
        for (n, key, many) in [
            (13, "reAdmission", false),
            (14, "admitSource", false),
            (16, "specialCourtesy", true),
            (36, "dischargeDisposition", false),
            (38, "dietPreference", true),
        ] {
            if let Some(c) = dt::codeable(&self.f(i, n)) {
                stay.push((key, if many { json!([c]) } else { c }));
            }
        }
        if !stay.is_empty() {
            if !matches!(enc.get("hospitalization"), Some(Value::Object(_))) {
                enc.insert("hospitalization".into(), json!({}));
            }
            if let Some(Value::Object(h)) = enc.get_mut("hospitalization") {
                for (key, value) in stay {
                    h.insert(key.into(), value);
                }
            }
        }
        // PV1-4 admission type and PV1-18 patient type.
        let types: Vec<Value> = [4, 18]
            .into_iter()
            .filter_map(|n| dt::codeable(&self.f(i, n)))
            .collect();
        if !types.is_empty() {
            enc.insert("type".into(), Value::Array(types));
        }
        if let Some(s) = dt::codeable(&self.f(i, 10)) {
            enc.insert("serviceType".into(), s);
        }
        let mut participants = Vec::new();
        for (n, role) in [(7, "ATND"), (8, "REF"), (9, "CON"), (17, "ADM"), (52, "PART")] {
            for who in self.practitioner(i, n) {
                participants.push(json!({
                    "type": [{ "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": role }] }],
                    "individual": who,
                }));
            }
        }
        if !participants.is_empty() {
            enc.insert("participant".into(), Value::Array(participants));
        }
        if let Some(&a) = self.by_key.get("Account|account") {
            enc.insert("account".into(), json!([self.reference(a)]));
        }
        // PV1-54, the service episode (v2.8): an EpisodeOfCare the visit belongs to.
        let episode = self.identifiers(i, 54);
        if !episode.is_empty() {
            let mut ep = Map::new();
            ep.insert("identifier".into(), Value::Array(episode));
            ep.insert("status".into(), json!("active"));
            if let Some(p) = self.patient_ref() {
                ep.insert("patient".into(), p);
            }
            let e = self.add("EpisodeOfCare", "episode", ep);
            enc.insert("episodeOfCare".into(), json!([self.reference(e)]));
        }
        let facility = self.f(i, 39);
        if let Some(org) = self.organization(facility.component(1).text(), None, None) {
            enc.insert("serviceProvider".into(), org);
        }
        // The first PV1 is the message's visit; a later one (OML's prior
        // results, each with its own PV1) is a visit of its own unless it
        // names the same visit number (PV1-19).
        let number = self.field(i, 19).component(1).text();
        let key = match (self.known("Encounter", "encounter"), &number) {
            (None, _) => "encounter".to_owned(),
            (Some(first), Some(n))
                if self.entries[first].2["identifier"]
                    .as_array()
                    .is_some_and(|ids| ids.iter().any(|id| id["value"] == n.as_str())) =>
            {
                "encounter".to_owned()
            }
            (Some(_), n) => format!("visit|{}", n.clone().unwrap_or_else(|| i.to_string())),
        };
        let e = self.add("Encounter", &key, enc);
        if self.encounter.is_none() {
            let (t, id, _) = &self.entries[e];
            self.encounter = Some(format!("{t}/{id}"));
        }
        // PV2, ROL and DG1 that follow belong to this visit.
        self.visit = Some(e);
        self.last = Last::Entry(e);
        true
    }

    pub(crate) fn pv2(&mut self, i: usize) -> bool {
        let prior = self.f(i, 1);
        if let (Some(l), Some(e)) = (self.location(&prior), self.visit) {
            self.push(e, "location", json!({ "location": l, "status": "planned" }));
        }
        let reason = dt::codeable(&self.f(i, 3));
        if let (Some(e), Some(r)) = (self.visit, reason) {
            self.set(e, "reasonCode", json!([r]));
        }
        // PV2-13, the referral source: a participant of type referrer.
        let referrers = self.practitioner(i, 13);
        if let Some(e) = self.visit {
            for who in referrers {
                self.push(
                    e,
                    "participant",
                    json!({ "type": [{ "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "REF" }] }], "individual": who }),
                );
            }
        }
        true
    }

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
    fn support_order(&mut self, e: usize) {
        let Some(order) = self.current_order() else { return };
        if let Some(key) = crate::orders::OrderKind::of_type(&self.entries[order].0).and_then(|k| k.supporting()) {
            let reference = self.reference(e);
            self.push(order, key, reference);
        }
    }

    /// The organization manages a Location and the places above it.
    pub(crate) fn manage_locations(&mut self, location: &Value, org: &Value) {
        let mut next = location["reference"].as_str().and_then(|r| self.entry_of(r));
        while let Some(e) = next {
            self.set(e, "managingOrganization", org.clone());
            next = self.entries[e].2["partOf"]["reference"]
                .as_str()
                .and_then(|r| self.entry_of(r));
        }
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
