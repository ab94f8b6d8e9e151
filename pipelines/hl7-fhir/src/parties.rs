//! People, organizations and places any segment names: practitioners
//! (XCN), their roles, organizations (XON, HD) and locations (PL).

use serde_json::{Map, Value, json};

use carehub_hl7::codec::er7::Value as V2;

use crate::datatypes as dt;
use crate::*;

impl<'m> Builder<'m> {
    /// XCN starting at field `n` of segment `i` → a Practitioner, deduplicated
    /// by its number and name.
    pub(crate) fn practitioner(&mut self, i: usize, n: usize) -> Vec<Value> {
        let field = self.f(i, n);
        let mut refs = Vec::new();
        for rep in field.repetitions() {
            let number = rep.component(1).text();
            let name = dt::human_name(&rep, 2);
            if number.is_none() && name.is_none() {
                continue;
            }
            let key = format!(
                "{}|{}",
                number.as_deref().unwrap_or_default(),
                name.as_ref().map(|n| n.to_string()).unwrap_or_default()
            );
            if let Some(e) = self.known("Practitioner", &key) {
                refs.push(self.reference(e));
                continue;
            }
            let mut p = Map::new();
            if let Some(num) = &number {
                let aa = rep.component(9);
                let system = dt::assigner_system(
                    aa.subcomponent(1).text(),
                    aa.subcomponent(2).text(),
                    aa.subcomponent(3).text(),
                );
                let mut ident = Map::new();
                ident.insert("value".into(), json!(num));
                if let Some(s) = system {
                    ident.insert("system".into(), json!(s));
                }
                if let Some(t) = rep.component(13).text() {
                    ident.insert(
                        "type".into(),
                        json!({ "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": t }] }),
                    );
                }
                // XCN.9, the assigning authority, is an organization of its own.
                if let Some(org) = self.authority(&aa) {
                    ident.insert("assigner".into(), org);
                }
                p.insert("identifier".into(), json!([ident]));
            }
            if let Some(nm) = name {
                p.insert("name".into(), Value::Array(vec![nm]));
            }
            let e = self.add("Practitioner", &key, p);
            refs.push(self.reference(e));
        }
        refs
    }

    /// The XCN of field `n` as PractitionerRoles with a role code (HL7 table
    /// 0443: OP ordering provider, RO responsible observer, PP primary care
    /// provider, …), each naming its Practitioner.
    pub(crate) fn practitioner_roles(&mut self, i: usize, n: usize, role: &str, display: &str) -> Vec<Value> {
        self.practitioner_roles_in(i, n, role, display, None)
    }

    /// [`Builder::practitioner_roles`] held in an organization (OBX-25, the
    /// medical director of OBX-23's performing organization).
    pub(crate) fn practitioner_roles_in(
        &mut self,
        i: usize,
        n: usize,
        role: &str,
        display: &str,
        organization: Option<&Value>,
    ) -> Vec<Value> {
        let practitioners = self.practitioner(i, n);
        practitioners
            .into_iter()
            .map(|who| {
                let mut r = Map::new();
                r.insert(
                    "code".into(),
                    json!([{ "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/v2-0443", "code": role, "display": display }] }]),
                );
                let mut key = format!("{role}|{}", who["reference"].as_str().unwrap_or(""));
                if let Some(org) = organization {
                    key.push('|');
                    key.push_str(org["reference"].as_str().unwrap_or(""));
                    r.insert("organization".into(), org.clone());
                }
                r.insert("practitioner".into(), who);
                let e = self.add("PractitionerRole", &key, r);
                self.reference(e)
            })
            .collect()
    }

    /// XON / HD → an Organization, deduplicated by name and identifier.
    pub(crate) fn organization(
        &mut self,
        name: Option<String>,
        id_value: Option<String>,
        system: Option<String>,
    ) -> Option<Value> {
        if name.is_none() && id_value.is_none() {
            return None;
        }
        let key = format!(
            "{}|{}|{}",
            name.as_deref().unwrap_or_default(),
            id_value.as_deref().unwrap_or_default(),
            system.as_deref().unwrap_or_default()
        );
        if let Some(e) = self.known("Organization", &key) {
            return Some(self.reference(e));
        }
        let mut o = Map::new();
        if let Some(v) = id_value {
            let mut ident = Map::new();
            ident.insert("value".into(), Value::String(v));
            if let Some(s) = system {
                ident.insert("system".into(), Value::String(s));
            }
            o.insert("identifier".into(), Value::Array(vec![Value::Object(ident)]));
        }
        if let Some(n) = name {
            o.insert("name".into(), Value::String(n));
        }
        let e = self.add("Organization", &key, o);
        Some(self.reference(e))
    }

    /// XON → Organization: name (XON.1), identifier XON.10, else the
    /// older XON.3, with XON.6 as its assigning authority.
    pub(crate) fn xon(&mut self, v: &V2<'m>) -> Option<Value> {
        let id = v.component(10).text().or_else(|| v.component(3).text());
        let aa = v.component(6);
        let system = dt::assigner_system(
            aa.subcomponent(1).text(),
            aa.subcomponent(2).text(),
            aa.subcomponent(3).text(),
        );
        self.organization(v.component(1).text(), id, system)
    }

    /// HD (MSH-4, MSH-6) → Organization: the namespace, and the universal id
    /// as a URI (`urn:oid:` for ISO), each an identifier.
    pub(crate) fn facility(&mut self, v: &V2<'m>) -> Option<Value> {
        self.hd(v.component(1).text(), v.component(2).text(), v.component(3).text())
    }

    /// An assigning authority (CX.4, EI.2-4, XCN.9 as subcomponents) → Organization.
    pub(crate) fn authority(&mut self, v: &V2<'m>) -> Option<Value> {
        self.hd(
            v.subcomponent(1).text(),
            v.subcomponent(2).text(),
            v.subcomponent(3).text(),
        )
    }

    pub(crate) fn hd(&mut self, ns: Option<String>, universal: Option<String>, kind: Option<String>) -> Option<Value> {
        let universal = universal.map(|u| match kind.as_deref() {
            Some("ISO") if !u.starts_with("urn:") => format!("urn:oid:{u}"),
            _ => u,
        });
        if ns.is_none() && universal.is_none() {
            return None;
        }
        let key = format!(
            "hd|{}|{}",
            ns.as_deref().unwrap_or_default(),
            universal.as_deref().unwrap_or_default()
        );
        if let Some(e) = self.known("Organization", &key) {
            return Some(self.reference(e));
        }
        let mut ids = Vec::new();
        if let Some(n) = ns {
            ids.push(json!({ "value": n }));
        }
        if let Some(u) = universal {
            ids.push(json!({ "value": u, "system": "urn:ietf:rfc:3986" }));
        }
        let mut o = Map::new();
        o.insert("identifier".into(), Value::Array(ids));
        let e = self.add("Organization", &key, o);
        Some(self.reference(e))
    }

    /// PL → a Location per level given — facility (PL.4), building (.7),
    /// floor (.8), point of care (.1), room (.2), bed (.3) — each `partOf`
    /// the one above; the most specific is returned.
    pub(crate) fn location(&mut self, v: &V2<'m>) -> Option<Value> {
        self.location_at(v, &[(4, "si"), (7, "bu"), (8, "lvl"), (1, "wa"), (2, "ro"), (3, "bd")])
    }

    /// The levels of a place (`layout`: component and physical type, from
    /// the widest down) → a Location per level given, each `partOf` the one
    /// above; the most specific is returned.
    pub(crate) fn location_at(&mut self, v: &V2<'m>, layout: &[(usize, &str)]) -> Option<Value> {
        let mut parent: Option<Value> = None;
        let mut path = String::new();
        for &(n, physical) in layout {
            let c = v.component(n);
            let Some(name) = c.subcomponent(1).text() else {
                continue;
            };
            path.push_str(&format!("{n}={name}|"));
            if let Some(e) = self.known("Location", &path) {
                parent = Some(self.reference(e));
                continue;
            }
            let mut l = Map::new();
            l.insert("name".into(), json!(name));
            l.insert("mode".into(), json!("instance"));
            l.insert(
                "physicalType".into(),
                json!({ "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/location-physical-type", "code": physical }] }),
            );
            if let Some(u) = c.subcomponent(2).text() {
                let value = match c.subcomponent(3).text().as_deref() {
                    Some("ISO") if !u.starts_with("urn:") => format!("urn:oid:{u}"),
                    _ => u,
                };
                l.insert(
                    "identifier".into(),
                    json!([{ "value": value, "system": "urn:ietf:rfc:3986" }]),
                );
            }
            if let Some(p) = parent.take() {
                l.insert("partOf".into(), p);
            }
            let e = self.add("Location", &path, l);
            parent = Some(self.reference(e));
        }
        parent
    }

    /// NDL (OBR-32..35: name, period and place of a result's interpreter,
    /// technician, transcriptionist) → a PractitionerRole with a role code
    /// (HL7 table 0443), its Practitioner and Location.
    pub(crate) fn ndl_roles(&mut self, i: usize, n: usize, role: &str, display: &str) -> Vec<Value> {
        let field = self.f(i, n);
        let mut out = Vec::new();
        for (k, rep) in field.repetitions().enumerate() {
            let name = rep.component(1);
            let mut p = Map::new();
            if let Some(id) = name.subcomponent(1).text() {
                p.insert("identifier".into(), json!([{ "value": id }]));
            }
            let mut hn = Map::new();
            if let Some(f) = name.subcomponent(2).text() {
                hn.insert("family".into(), json!(f));
            }
            let given: Vec<String> = [3, 4].into_iter().filter_map(|s| name.subcomponent(s).text()).collect();
            if !given.is_empty() {
                hn.insert("given".into(), json!(given));
            }
            if !hn.is_empty() {
                p.insert("name".into(), json!([hn]));
            }
            let mut r = Map::new();
            r.insert(
                "code".into(),
                json!([{ "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/v2-0443", "code": role, "display": display }] }]),
            );
            if !p.is_empty() {
                let key = format!("{}|{}", name.subcomponent(1).raw(), name.subcomponent(2).raw());
                let e = self.add("Practitioner", &format!("ndl|{key}"), p);
                r.insert("practitioner".into(), self.reference(e));
            }
            if let Some(period) = dt::period(&rep.component(2), &rep.component(3)) {
                r.insert("period".into(), period);
            }
            if let Some(l) = self.location_at(
                &rep,
                &[(7, "si"), (10, "bu"), (11, "lvl"), (4, "wa"), (5, "ro"), (6, "bd")],
            ) {
                r.insert("location".into(), json!([l]));
            }
            if r.len() > 1 {
                let e = self.add("PractitionerRole", &format!("ndl|{i}|{n}|{k}"), r);
                out.push(self.reference(e));
            }
        }
        out
    }
}
