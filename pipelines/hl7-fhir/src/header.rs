//! MSH, EVN, SFT: the message itself → MessageHeader, Provenance, Device.

use serde_json::{Map, Value, json};

use crate::Builder;
use crate::datatypes as dt;

impl Builder<'_> {
    /// MSH-24 / MSH-25 as an endpoint; read (and so not reported) only when
    /// it names one.
    fn endpoint(&mut self, i: usize, n: usize) -> Option<String> {
        let address = endpoint_of(&self.field(i, n))?;
        let _ = self.f(i, n);
        Some(address)
    }

    pub(crate) fn msh(&mut self, i: usize) -> bool {
        let (kind, event) = self.msg.message_type();
        let _ = self.f(i, 9);
        let _ = self.f(i, 10);
        let _ = self.f(i, 12);
        let mut h = Map::new();
        h.insert(
            "eventCoding".into(),
            json!({ "system": "http://terminology.hl7.org/CodeSystem/v2-0003", "code": event }),
        );
        let app = self.f(i, 3);
        let mut source = Map::new();
        source.insert(
            "name".into(),
            json!(app.component(1).text().unwrap_or_else(|| "unknown".into())),
        );
        // The sending network address (MSH-24) is the source's endpoint; without
        // it, the application's universal id (HD.2), else its namespace.
        let endpoint = match (self.endpoint(i, 24), app.component(2).text(), app.component(1).text()) {
            (Some(address), _, _) => address,
            (None, Some(u), _) => format!("urn:oid:{u}"),
            (None, None, Some(n)) => format!("urn:carehub:hl7-application:{}", dt::urn_part(&n)),
            (None, None, None) => "urn:carehub:hl7-application:unknown".to_owned(),
        };
        source.insert("endpoint".into(), json!(endpoint));
        h.insert("source".into(), Value::Object(source));
        // The receiving application (MSH-5) at its network address (MSH-25).
        let to = self.f(i, 5);
        let address = self.endpoint(i, 25);
        let name = to.component(1).text();
        if name.is_some() || address.is_some() {
            let mut d = Map::new();
            let endpoint = address.unwrap_or_else(|| {
                format!(
                    "urn:carehub:hl7-application:{}",
                    dt::urn_part(name.as_deref().unwrap_or_default())
                )
            });
            if let Some(n) = name {
                d.insert("name".into(), json!(n));
            }
            d.insert("endpoint".into(), json!(endpoint));
            h.insert("destination".into(), json!([d]));
        }
        // MSH-19: the language the message is written in, the Bundle's.
        self.language = self.f(i, 19).component(1).text();
        let sending = self.f(i, 4);
        if let Some(org) = self.facility(&sending) {
            h.insert("sender".into(), org);
        }
        let receiving = self.f(i, 6);
        if let Some(org) = self.facility(&receiving)
            && let Some(Value::Array(d)) = h.get_mut("destination")
            && let Some(Value::Object(first)) = d.first_mut()
        {
            first.insert("receiver".into(), org);
        }
        // MSH-22 / MSH-23: the organizations responsible for the sending and
        // the receiving facility — each facility is `partOf` its own.
        for (n, facility) in [(22, h.get("sender").cloned()), (23, receiver_of(&h))] {
            let org = self.f(i, n);
            let Some(r) = self.xon(&org) else { continue };
            if let Some(f) = facility
                .as_ref()
                .and_then(|f| f["reference"].as_str())
                .and_then(|f| self.entry_of(f))
            {
                self.set(f, "partOf", r.clone());
            }
            if n == 22 {
                h.insert("responsible".into(), r);
            }
        }
        let h_sender = h.get("sender").cloned();
        let e = self.add("MessageHeader", "header", h);
        self.message_header = Some(e);
        let mut p = Map::new();
        let when = self.f(i, 7);
        if let Some(t) = dt::instant(&when) {
            p.insert("recorded".into(), json!(t));
        }
        p.insert("activity".into(), json!({ "text": format!("{kind}^{event}") }));
        // What the message brought: the Bundle (its id is deterministic too) and its header.
        let bundle = format!("Bundle/{}", self.bundle_id);
        p.insert("target".into(), json!([{ "reference": bundle }, self.reference(e)]));
        // The author: the sending application (MSH-3) as a Device, on behalf
        // of the sending facility (MSH-4).
        let mut agent = Map::new();
        agent.insert(
            "type".into(),
            json!({ "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type", "code": "author" }] }),
        );
        let who = self
            .application_device()
            .unwrap_or_else(|| json!({ "display": "unknown application" }));
        agent.insert("who".into(), who);
        if let Some(org) = h_sender {
            agent.insert("onBehalfOf".into(), org);
        }
        p.insert("agent".into(), json!([agent]));
        self.add("Provenance", "message", p);
        true
    }

    /// EVN: the trigger event as the source system recorded it → a
    /// Provenance of its own (the message's is MSH's): recorded EVN-2 (else
    /// the message's time), occurred EVN-6, reason EVN-4, the operator EVN-5
    /// as agent, the event facility EVN-7 as location.
    pub(crate) fn evn(&mut self, i: usize) -> bool {
        let _ = self.f(i, 1); // the event type: MSH-9 says it too
        let mut p = Map::new();
        let recorded = self.f(i, 2);
        // MSH is segment 0: its time stands in for a missing EVN-2.
        let recorded = dt::instant(&recorded).or_else(|| dt::instant(&self.field(0, 7)));
        let Some(recorded) = recorded else {
            return false;
        };
        p.insert("recorded".into(), json!(recorded));
        if let Some(t) = dt::date_time(&self.f(i, 6)) {
            p.insert("occurredDateTime".into(), json!(t));
        }
        if let Some(r) = dt::codeable(&self.f(i, 4)) {
            p.insert("reason".into(), json!([r]));
        }
        let (kind, event) = self.msg.message_type();
        p.insert("activity".into(), json!({ "text": format!("{kind}^{event}") }));
        let bundle = format!("Bundle/{}", self.bundle_id);
        let mut targets = vec![json!({ "reference": bundle })];
        if let Some(h) = self.message_header {
            targets.push(self.reference(h));
        }
        p.insert("target".into(), Value::Array(targets));
        let operators = self.practitioner(i, 5);
        let agents: Vec<Value> = operators
            .into_iter()
            .map(|who| json!({ "type": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type", "code": "enterer" }] }, "who": who }))
            .collect();
        if agents.is_empty() {
            // An agent is required: the sending application stands for the operator.
            let who = self
                .application_device()
                .unwrap_or_else(|| json!({ "display": "unknown operator" }));
            p.insert("agent".into(), json!([{ "who": who }]));
        } else {
            p.insert("agent".into(), Value::Array(agents));
        }
        let facility = self.f(i, 7);
        if let Some(name) = facility.component(1).text() {
            let mut l = Map::new();
            l.insert("name".into(), json!(name));
            if let Some(u) = facility.component(2).text() {
                let value = if facility.component(3).text().as_deref() == Some("ISO") {
                    format!("urn:oid:{u}")
                } else {
                    u
                };
                l.insert(
                    "identifier".into(),
                    json!([{ "value": value, "system": "urn:ietf:rfc:3986" }]),
                );
            }
            l.insert("mode".into(), json!("instance"));
            let loc = self.add("Location", &format!("event-facility|{}", facility.raw()), l);
            p.insert("location".into(), self.reference(loc));
        }
        self.add("Provenance", "event", p);
        true
    }

    pub(crate) fn sft(&mut self, i: usize) -> bool {
        let vendor = self.f(i, 1);
        let version = self.f(i, 2);
        let name = self.f(i, 3);
        let binary = self.f(i, 4);
        let mut d = Map::new();
        if let Some(v) = vendor.component(1).text() {
            d.insert("manufacturer".into(), json!(v));
        }
        if let Some(n) = name.text() {
            d.insert("deviceName".into(), json!([{ "name": n, "type": "manufacturer-name" }]));
        }
        if let Some(v) = version.text() {
            d.insert("version".into(), json!([{ "value": v }]));
        }
        if let Some(m) = binary.text() {
            d.insert("modelNumber".into(), json!(m));
        }
        self.add("Device", &format!("software|{i}"), d);
        true
    }
}

impl Builder<'_> {
    /// The sending application (MSH-3) as a Device: the author of the message.
    fn application_device(&mut self) -> Option<Value> {
        let name = self.field(0, 3).component(1).text()?;
        let mut d = Map::new();
        d.insert("identifier".into(), json!([{ "value": name }]));
        let dev = self.add("Device", &format!("application|{name}"), d);
        Some(self.reference(dev))
    }
}

/// The receiving facility of a MessageHeader being built.
fn receiver_of(h: &Map<String, Value>) -> Option<Value> {
    h.get("destination")?.get(0)?.get("receiver").cloned()
}

/// A network address (HD: MSH-24, MSH-25) → an endpoint URI: an ISO OID as
/// `urn:oid:`, a DNS name as the `mllp://` host it is reached at, a URI as
/// written.
fn endpoint_of(v: &carehub_hl7::codec::er7::Value<'_>) -> Option<String> {
    let universal = v.component(2).text()?;
    Some(match v.component(3).text().as_deref() {
        Some("ISO") if !universal.starts_with("urn:") => format!("urn:oid:{universal}"),
        Some("DNS") if !universal.contains(':') => format!("mllp://{universal}"),
        _ if universal.contains(':') => universal,
        _ => format!("urn:carehub:hl7-address:{}", dt::urn_part(&universal)),
    })
}
