//! Immunizations (RXA, RXR), documents (TXA), charges (FT1), appointments (SCH, AIS, AIL, AIP, AIG).

use serde_json::{Map, Value, json};

use crate::datatypes as dt;
use crate::{Builder, Last};

impl Builder<'_> {
    pub(crate) fn rxa(&mut self, i: usize) -> bool {
        let mut m = Map::new();
        let completion = self.f(i, 20).text();
        m.insert(
            "status".into(),
            json!(match completion.as_deref() {
                Some("RE" | "NA") => "not-done",
                Some("PA") => "completed",
                _ => "completed",
            }),
        );
        m.insert(
            "vaccineCode".into(),
            dt::codeable(&self.f(i, 5)).unwrap_or_else(|| json!({ "text": "unknown" })),
        );
        if let Some(p) = self.patient_ref() {
            m.insert("patient".into(), p);
        }
        m.insert(
            "occurrenceDateTime".into(),
            json!(dt::date_time(&self.f(i, 3)).unwrap_or_else(|| "unknown".into())),
        );
        let amount = self.f(i, 6).text();
        let units = self.f(i, 7);
        if let Some(q) = amount.filter(|a| a != "999").and_then(|a| dt::quantity(&a, &units)) {
            m.insert("doseQuantity".into(), q);
        }
        let performers: Vec<Value> = self
            .practitioner(i, 10)
            .into_iter()
            .map(|actor| json!({ "actor": actor }))
            .collect();
        if !performers.is_empty() {
            m.insert("performer".into(), Value::Array(performers));
        }
        if let Some(lot) = self.f(i, 15).text() {
            m.insert("lotNumber".into(), json!(lot));
        }
        if let Some(t) = dt::date_time(&self.f(i, 16)) {
            m.insert("expirationDate".into(), json!(t.get(..10).unwrap_or(&t)));
        }
        let maker = self.f(i, 17);
        if let Some(org) = self.organization(maker.component(2).text(), maker.component(1).text(), None) {
            m.insert("manufacturer".into(), org);
        }
        // "unknown" is no dateTime: no administration date, no resource.
        if m["occurrenceDateTime"] == "unknown" {
            m.remove("occurrenceDateTime");
            m.insert("occurrenceString".into(), json!("unknown"));
        }
        // The ORC before it gives the administration's numbers.
        if let Some(ids) = self.order.and_then(|o| self.entries[o].2.get("identifier").cloned()) {
            m.insert("identifier".into(), ids);
        }
        if let Some(e) = self.encounter_ref() {
            m.insert("encounter".into(), e);
        }
        // Where it was given: RXA-27 (PL, v2.6+), else RXA-11 (LA2: the
        // facility is its fourth component, as in a PL).
        let place = self.f(i, 27);
        let at = self.f(i, 11);
        if let Some(l) = self.location(&place).or_else(|| self.location(&at)) {
            m.insert("location".into(), l);
        }
        let e = self.add("Immunization", &format!("rxa|{i}"), m);
        self.immunization = Some(e);
        self.last = Last::Entry(e);
        true
    }

    pub(crate) fn rxr(&mut self, i: usize) -> bool {
        let route = dt::codeable(&self.f(i, 1));
        let site = dt::codeable(&self.f(i, 2));
        if let Some(m) = self.immunization {
            if let Some(r) = route {
                self.set(m, "route", r);
            }
            if let Some(s) = site {
                self.set(m, "site", s);
            }
            return true;
        }
        // After RXO/RXE: the route and site of the order's dosage.
        if let Last::Entry(m) = self.last
            && self.entries[m].0 == "MedicationRequest"
            && (route.is_some() || site.is_some())
        {
            let mut dosage = match self.entries[m]
                .2
                .get_mut("dosageInstruction")
                .and_then(|d| d.get_mut(0))
                .map(Value::take)
            {
                Some(Value::Object(d)) => d,
                _ => Map::new(),
            };
            if let Some(r) = route {
                dosage.insert("route".into(), r);
            }
            if let Some(s) = site {
                dosage.insert("site".into(), s);
            }
            self.set(m, "dosageInstruction", json!([dosage]));
            return true;
        }
        false
    }

    pub(crate) fn txa(&mut self, i: usize) -> bool {
        let mut d = Map::new();
        let status = self.f(i, 17).text();
        d.insert("status".into(), json!("current"));
        if let Some(s) = status.as_deref().and_then(|s| match s {
            "AU" | "LA" => Some("final"),
            "IP" | "IN" | "PA" | "DI" | "DO" => Some("preliminary"),
            "CA" => Some("entered-in-error"),
            _ => None,
        }) {
            d.insert("docStatus".into(), json!(s));
        }
        if let Some(t) = dt::codeable(&self.f(i, 2)) {
            d.insert("type".into(), t);
        }
        if let Some(p) = self.patient_ref() {
            d.insert("subject".into(), p);
        }
        let _ = self.f(i, 3);
        let activity = self.f(i, 4);
        if let Some(t) = dt::date_time(&activity).filter(|t| t.contains('T')) {
            d.insert("date".into(), json!(t));
        }
        // The clinical context: when the documented activity took place (4),
        // and the order the document answers (MDM: its ORC/OBR come first).
        let mut context = Map::new();
        if let Some(t) = dt::date_time(&activity) {
            context.insert("period".into(), json!({ "start": t }));
        }
        if let Some(order) = self.current_order() {
            context.insert("related".into(), json!([self.reference(order)]));
        }
        if let Some(e) = self.encounter_ref() {
            context.insert("encounter".into(), json!([e]));
        }
        if !context.is_empty() {
            d.insert("context".into(), Value::Object(context));
        }
        let unique = self.f(i, 12);
        if let Some(id) = dt::entity_identifier(&unique, None) {
            d.insert("masterIdentifier".into(), id);
        }
        // Authors: primary activity provider (5), originator (9); authenticators (10, 22).
        let mut authors = self.practitioner(i, 5);
        authors.extend(self.practitioner(i, 9));
        if !authors.is_empty() {
            d.insert("author".into(), Value::Array(authors));
        }
        let mut authenticators = self.practitioner(i, 10);
        authenticators.extend(self.practitioner(i, 22));
        if let Some(a) = authenticators.into_iter().next() {
            d.insert("authenticator".into(), a);
        }
        let key = unique.component(1).text().unwrap_or_else(|| format!("txa|{i}"));
        let e = self.add("DocumentReference", &format!("doc|{key}"), d);
        self.document = Some(e);
        self.last = Last::Entry(e);
        true
    }

    pub(crate) fn ft1(&mut self, i: usize) -> bool {
        let mut c = Map::new();
        c.insert("status".into(), json!("billable"));
        if let Some(p) = self.patient_ref() {
            c.insert("subject".into(), p);
        }
        if let Some(e) = self.encounter_ref() {
            c.insert("context".into(), e);
        }
        let id = self.f(i, 2);
        if let Some(ident) = dt::entity_identifier(&id, None) {
            c.insert("identifier".into(), json!([ident]));
        }
        if let Some(t) = dt::date_time(&self.f(i, 4)) {
            c.insert("occurrenceDateTime".into(), json!(t));
        }
        if let Some(t) = dt::codeable(&self.f(i, 6)) {
            c.insert(
                "definitionUri".into(),
                json!([format!(
                    "urn:carehub:hl7-transaction-type:{}",
                    t["coding"][0]["code"].as_str().unwrap_or("unknown")
                )]),
            );
        }
        c.insert(
            "code".into(),
            dt::codeable(&self.f(i, 7)).unwrap_or_else(|| json!({ "text": "unspecified" })),
        );
        if let Some(q) = self.f(i, 10).text().and_then(|q| q.parse::<serde_json::Number>().ok()) {
            c.insert("quantity".into(), json!({ "value": q }));
        }
        let amount = self.f(i, 11);
        if let Some(v) = amount
            .component(1)
            .text()
            .and_then(|v| v.parse::<serde_json::Number>().ok())
        {
            let mut money = Map::new();
            money.insert("value".into(), Value::Number(v));
            if let Some(cur) = amount.component(2).text() {
                money.insert("currency".into(), json!(cur));
            }
            c.insert("priceOverride".into(), Value::Object(money));
        }
        // Performed by (20), ordered by (21).
        let mut performers: Vec<Value> = self
            .practitioner(i, 20)
            .into_iter()
            .map(|actor| json!({ "actor": actor }))
            .collect();
        if let Some(orderer) = self.practitioner(i, 21).into_iter().next() {
            c.insert("enterer".into(), orderer);
        }
        if !performers.is_empty() {
            c.insert("performer".into(), Value::Array(std::mem::take(&mut performers)));
        }
        // FT1-24: who entered the charge, when FT1-21 named no orderer.
        if let Some(who) = self.practitioner(i, 24).into_iter().next()
            && !c.contains_key("enterer")
        {
            c.insert("enterer".into(), who);
        }
        if let Some(t) = dt::date_time(&self.f(i, 5)) {
            c.insert("enteredDate".into(), json!(t));
        }
        // FT1-13, the department: the charge's cost center.
        let department = self.f(i, 13);
        if let Some(org) = self.organization(department.component(2).text(), department.component(1).text(), None) {
            c.insert("costCenter".into(), org);
        }
        // FT1-32 performing and FT1-33 ordering facility.
        for (n, key) in [(32, "performingOrganization"), (33, "requestingOrganization")] {
            let facility = self.f(i, n);
            if let Some(org) = self.xon(&facility) {
                c.insert(key.into(), org);
            }
        }
        let reasons: Vec<Value> = self.f(i, 19).repetitions().filter_map(|r| dt::codeable(&r)).collect();
        if !reasons.is_empty() {
            c.insert("reason".into(), Value::Array(reasons));
        }
        // What was charged for: the procedure (FT1-25), the drug dispensed
        // (FT1-29 NDC code, FT1-42 quantity, FT1-41 prescription number).
        let mut services = Vec::new();
        if let Some(code) = dt::codeable(&self.f(i, 25)) {
            let mut p = Map::new();
            p.insert("status".into(), json!("unknown"));
            p.insert("code".into(), code);
            if let Some(s) = self.patient_ref() {
                p.insert("subject".into(), s);
            }
            let e = self.add("Procedure", &format!("ft1|{i}"), p);
            services.push(self.reference(e));
        }
        if let Some(drug) = dt::codeable(&self.f(i, 29)) {
            let mut m = Map::new();
            m.insert("status".into(), json!("unknown"));
            m.insert("medicationCodeableConcept".into(), drug);
            if let Some(s) = self.patient_ref() {
                m.insert("subject".into(), s);
            }
            let amount = self.f(i, 42);
            if let Some(q) = amount
                .component(1)
                .text()
                .and_then(|q| q.parse::<serde_json::Number>().ok())
            {
                let mut quantity = Map::new();
                quantity.insert("value".into(), Value::Number(q));
                if let Some(unit) = amount.component(2).subcomponent(2).text() {
                    quantity.insert("unit".into(), json!(unit));
                }
                m.insert("quantity".into(), Value::Object(quantity));
            }
            if let Some(rx) = self.f(i, 41).text() {
                m.insert(
                    "authorizingPrescription".into(),
                    json!([{ "identifier": { "value": rx }, "type": "MedicationRequest" }]),
                );
            }
            let e = self.add("MedicationDispense", &format!("ft1|{i}"), m);
            services.push(self.reference(e));
        }
        if !services.is_empty() {
            c.insert("service".into(), Value::Array(services));
        }
        // FT1-34 (item number) and FT1-35 (model number): the device charged for.
        let item = self.f(i, 34);
        if let Some(id) = dt::entity_identifier(&item, None) {
            let mut d = Map::new();
            d.insert("identifier".into(), json!([id]));
            if let Some(model) = self.f(i, 35).text() {
                d.insert("modelNumber".into(), json!(model));
            }
            if let Some(s) = self.patient_ref() {
                d.insert("patient".into(), s);
            }
            let e = self.add("Device", &format!("ft1|{i}"), d);
            c.insert("productReference".into(), self.reference(e));
        }
        if let Some(&a) = self.by_key.get("Account|account") {
            c.insert("account".into(), json!([self.reference(a)]));
        }
        let e = self.add("ChargeItem", &format!("ft1|{i}"), c);
        self.last = Last::Entry(e);
        true
    }

    pub(crate) fn sch(&mut self, i: usize) -> bool {
        let mut a = Map::new();
        let placer = self.f(i, 1);
        let filler = self.f(i, 2);
        if let Some(ids) = dt::placer_filler(&placer, &filler) {
            a.insert("identifier".into(), ids);
        }
        let status = self.f(i, 25).component(1).text();
        a.insert(
            "status".into(),
            json!(match status.as_deref() {
                Some("Booked") => "booked",
                Some("Cancelled" | "Deleted") => "cancelled",
                Some("Complete") => "fulfilled",
                Some("Noshow") => "noshow",
                Some("Pending" | "Waitlist") => "pending",
                Some("Started") => "arrived",
                _ => "booked",
            }),
        );
        if let Some(r) = dt::codeable(&self.f(i, 6)) {
            a.insert("reasonCode".into(), json!([r]));
        }
        if let Some(t) = dt::codeable(&self.f(i, 7)) {
            a.insert("appointmentType".into(), t);
        }
        let timing = self.f(i, 11);
        if let Some(t) = dt::date_time(&timing.component(4)).filter(|t| t.contains('T')) {
            a.insert("start".into(), json!(t));
        }
        if let Some(t) = dt::date_time(&timing.component(5)).filter(|t| t.contains('T')) {
            a.insert("end".into(), json!(t));
        }
        let mut participants = Vec::new();
        if let Some(p) = self.patient_ref() {
            participants.push(json!({ "actor": p, "status": "accepted" }));
        }
        if participants.is_empty() {
            participants.push(json!({ "status": "needs-action", "type": [{ "text": "patient" }] }));
        }
        a.insert("participant".into(), Value::Array(participants));
        // The placer's (SCH-12..15), the filler's (16..19) and the enterer's
        // (20..22) contacts: who, their phone and where; they support the appointment.
        let mut supporting = Vec::new();
        for (person, phone, place, role) in [
            (12, 13, 15, "placer contact"),
            (16, 17, 19, "filler contact"),
            (20, 21, 22, "entered by"),
        ] {
            let who = self.practitioner(i, person).into_iter().next();
            let location = self.f(i, place);
            let location = self.location(&location);
            let telecom: Vec<Value> = self.contact_points(i, phone);
            if who.is_none() && location.is_none() {
                continue;
            }
            let mut r = Map::new();
            r.insert("code".into(), json!([{ "text": role }]));
            if let Some(w) = who {
                r.insert("practitioner".into(), w);
            }
            if let Some(l) = location {
                r.insert("location".into(), json!([l]));
            }
            if !telecom.is_empty() {
                r.insert("telecom".into(), Value::Array(telecom));
            }
            let e = self.add("PractitionerRole", &format!("sch|{i}|{person}"), r);
            supporting.push(self.reference(e));
        }
        if !supporting.is_empty() {
            a.insert("supportingInformation".into(), Value::Array(supporting));
        }
        let key = filler
            .component(1)
            .text()
            .or_else(|| placer.component(1).text())
            .unwrap_or_else(|| format!("sch|{i}"));
        let e = self.add("Appointment", &format!("appointment|{key}"), a);
        self.appointment = Some(e);
        self.appointment_timed = false;
        self.last = Last::Entry(e);
        true
    }

    /// AIS (service), AIL (location), AIP (personnel), AIG (resource): each
    /// a participant with its own time (start, duration), which together make
    /// the appointment's start and end; the service asked for (AIS-3) is also
    /// the ServiceRequest the appointment is based on, a resource (AIG-3) a
    /// Device.
    pub(crate) fn resource_of_appointment(&mut self, i: usize) -> bool {
        let Some(a) = self.appointment else {
            return false;
        };
        let name = self.seg(i).name();
        // Start date/time and duration (with its units) of each kind.
        let (start_at, duration_at) = match name {
            "AIS" => (4, 7),
            "AIG" => (8, 11),
            _ => (6, 9),
        };
        let start = dt::instant(&self.f(i, start_at));
        let units = self.f(i, duration_at + 1).component(1).text();
        let minutes = self
            .f(i, duration_at)
            .text()
            .and_then(|d| d.trim().parse::<f64>().ok())
            .map(|d| match units.as_deref() {
                Some("s" | "S") => d / 60.0,
                Some("h" | "H" | "hr") => d * 60.0,
                Some("d" | "D") => d * 1440.0,
                _ => d,
            });
        let end = match (&start, minutes) {
            (Some(s), Some(m)) => chrono::DateTime::parse_from_rfc3339(s)
                .ok()
                .map(|t| (t + chrono::Duration::seconds((m * 60.0).round() as i64)).to_rfc3339()),
            _ => None,
        };
        let mut period = Map::new();
        if let Some(s) = &start {
            period.insert("start".into(), json!(s));
        }
        if let Some(e) = &end {
            period.insert("end".into(), json!(e));
        }
        self.widen_appointment(a, start.as_deref(), end.as_deref());
        // An NTE after the resource is about the appointment (AIS: its service).
        self.last = Last::Entry(a);
        let mut participant = Map::new();
        match name {
            "AIS" => {
                let Some(code) = dt::codeable(&self.f(i, 3)) else {
                    return !period.is_empty();
                };
                self.push(a, "serviceType", code.clone());
                let mut sr = Map::new();
                sr.insert("status".into(), json!("active"));
                sr.insert("intent".into(), json!("order"));
                sr.insert("code".into(), code);
                match self.patient_ref() {
                    Some(p) => {
                        sr.insert("subject".into(), p);
                    }
                    None => return true,
                }
                if let Some(e) = self.encounter_ref() {
                    sr.insert("encounter".into(), e);
                }
                let e = self.add("ServiceRequest", &format!("ais|{i}"), sr);
                let reference = self.reference(e);
                self.push(a, "basedOn", reference);
                self.appointment_service = Some(e);
                self.last = Last::Entry(e);
                return true;
            }
            "AIL" => {
                let place = self.f(i, 3);
                let Some(l) = self.location(&place) else { return false };
                participant.insert("actor".into(), l);
            }
            "AIP" => {
                let Some(who) = self.practitioner(i, 3).into_iter().next() else {
                    return false;
                };
                participant.insert("actor".into(), who);
                if let Some(role) = dt::codeable(&self.f(i, 4)) {
                    participant.insert("type".into(), json!([role]));
                }
            }
            _ => {
                let resource = self.f(i, 3);
                let Some(id) = resource.component(1).text() else {
                    return false;
                };
                let mut d = Map::new();
                d.insert("identifier".into(), json!([{ "value": id }]));
                if let Some(name) = resource.component(2).text() {
                    d.insert(
                        "deviceName".into(),
                        json!([{ "name": name, "type": "user-friendly-name" }]),
                    );
                }
                let dev = self.add("Device", &format!("aig|{}", resource.raw()), d);
                participant.insert("actor".into(), self.reference(dev));
                if let Some(kind) = dt::codeable(&self.f(i, 4)) {
                    participant.insert("type".into(), json!([kind]));
                }
            }
        }
        // The service of the resource group is asked of these: the place,
        // the people and the equipment that follow its AIS.
        if let (Some(sr), Some(actor)) = (self.appointment_service, participant.get("actor").cloned()) {
            let key = if name == "AIL" {
                "locationReference"
            } else {
                "performer"
            };
            self.push(sr, key, actor);
        }
        participant.insert("status".into(), json!("accepted"));
        if !period.is_empty() {
            participant.insert("period".into(), Value::Object(period));
        }
        self.push(a, "participant", Value::Object(participant));
        true
    }

    /// The appointment starts with its earliest resource and ends with its
    /// latest (instants compared as instants); the first resource's times
    /// replace SCH-11's.
    pub(crate) fn widen_appointment(&mut self, a: usize, start: Option<&str>, end: Option<&str>) {
        let at = |s: Option<&str>| s.and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok());
        let timed = self.appointment_timed;
        let appointment = &self.entries[a].2;
        let new_start = start
            .filter(|s| !timed || at(appointment["start"].as_str()).is_none_or(|t| at(Some(s)).is_some_and(|m| m < t)));
        let new_end = end
            .filter(|e| !timed || at(appointment["end"].as_str()).is_some_and(|m| at(Some(e)).is_none_or(|t| m < t)));
        if let Some(s) = new_start {
            self.set(a, "start", json!(s));
        }
        if let Some(e) = new_end {
            self.set(a, "end", json!(e));
        }
        self.appointment_timed = true;
    }

    /// RGS starts a resource group: the AIx that follow serve a new service.
    pub(crate) fn rgs(&mut self, _i: usize) -> bool {
        self.appointment_service = None;
        self.appointment.is_some()
    }
}
