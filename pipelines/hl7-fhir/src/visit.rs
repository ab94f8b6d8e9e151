//! The visit: PV1 (Encounter, its locations and participants) and PV2.

use serde_json::{Map, Value, json};

use crate::datatypes as dt;
use crate::{Builder, Last};

impl Builder<'_> {
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
}
