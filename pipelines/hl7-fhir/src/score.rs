//! How much of an expected Bundle a conversion reproduces. Ids differ between
//! converters, so structure is compared: an expected resource is matched
//! when carehub's Bundle has a resource of the same type holding all its key
//! elements — identifier values, names, codes, dates (instants compared as
//! instants, whatever offset they are written in) and the types of the
//! resources it refers to. Each of carehub's resources matches at most one.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

/// What was matched, in all and per resource type.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Score {
    pub expected: usize,
    pub matched: usize,
    /// resource type → (expected, matched).
    pub by_type: BTreeMap<String, (usize, usize)>,
}

impl Score {
    pub fn add(&mut self, other: &Score) {
        self.expected += other.expected;
        self.matched += other.matched;
        for (t, (e, m)) in &other.by_type {
            let slot = self.by_type.entry(t.clone()).or_default();
            slot.0 += e;
            slot.1 += m;
        }
    }

    pub fn share(&self) -> f64 {
        if self.expected == 0 {
            1.0
        } else {
            self.matched as f64 / self.expected as f64
        }
    }
}

const DATES: &[&str] = &[
    "birthDate",
    "effectiveDateTime",
    "authoredOn",
    "occurrenceDateTime",
    "onsetDateTime",
    "performedDateTime",
    "recorded",
    "issued",
    "start",
    "end",
];
const CONCEPTS: &[&str] = &[
    "code",
    "vaccineCode",
    "type",
    "category",
    "class",
    "valueCodeableConcept",
];

/// An instant in UTC when `s` has a time, else the date as written.
fn normal_date(s: &str) -> String {
    match chrono::DateTime::parse_from_rfc3339(s) {
        Ok(t) => t.with_timezone(&chrono::Utc).to_rfc3339(),
        Err(_) => s.to_owned(),
    }
}

fn codes(v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::Array(items) => items.iter().for_each(|i| codes(i, out)),
        Value::Object(o) => {
            if let Some(c) = o.get("code").and_then(Value::as_str) {
                out.insert(format!("code:{c}"));
            }
            if let Some(Value::Array(cs)) = o.get("coding") {
                for c in cs {
                    if let Some(code) = c.get("code").and_then(Value::as_str) {
                        out.insert(format!("code:{code}"));
                    }
                }
            }
        }
        _ => {}
    }
}

fn references(v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::Array(items) => items.iter().for_each(|i| references(i, out)),
        Value::Object(o) => {
            for (k, child) in o {
                if k == "reference"
                    && let Some(r) = child.as_str()
                    && let Some((t, _)) = r.split_once('/')
                {
                    out.insert(format!("ref:{t}"));
                } else if k != "contained" {
                    references(child, out);
                }
            }
        }
        _ => {}
    }
}

/// The key elements of a resource.
pub fn keys(r: &Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for ident in r["identifier"].as_array().into_iter().flatten() {
        if let Some(v) = ident["value"].as_str() {
            out.insert(format!("id:{v}"));
        }
    }
    match &r["name"] {
        Value::String(n) => {
            out.insert(format!("name:{n}"));
        }
        Value::Array(names) => {
            for n in names {
                if let Some(f) = n["family"].as_str() {
                    out.insert(format!("name:{f}"));
                }
            }
        }
        _ => {}
    }
    for d in DATES {
        if let Some(s) = r[*d].as_str() {
            out.insert(format!("{d}:{}", normal_date(s)));
        }
    }
    for c in CONCEPTS {
        codes(&r[*c], &mut out);
    }
    if let Some(g) = r["gender"].as_str() {
        out.insert(format!("gender:{g}"));
    }
    references(r, &mut out);
    out
}

/// Scores `ours` against `expected` (two Bundles): the most expected
/// resources that can each be given a distinct resource of carehub's
/// holding its key elements (a maximum bipartite matching, per type — a
/// first-come pairing would let a resource with few keys take the only
/// candidate of one with more).
pub fn score(expected: &Value, ours: &Value) -> Score {
    let resources = |b: &Value| -> Vec<(String, BTreeSet<String>)> {
        b["entry"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| &e["resource"])
            .map(|r| (r["resourceType"].as_str().unwrap_or("").to_owned(), keys(r)))
            .collect()
    };
    let candidates = resources(ours);
    let wanted = resources(expected);
    let mut s = Score::default();
    let mut types: BTreeSet<&str> = BTreeSet::new();
    for (t, _) in &wanted {
        types.insert(t);
    }
    for t in types {
        let want: Vec<&BTreeSet<String>> = wanted.iter().filter(|(wt, _)| wt == t).map(|(_, k)| k).collect();
        let have: Vec<&BTreeSet<String>> = candidates.iter().filter(|(ct, _)| ct == t).map(|(_, k)| k).collect();
        let fits: Vec<Vec<usize>> = want
            .iter()
            .map(|w| (0..have.len()).filter(|&c| w.is_subset(have[c])).collect())
            .collect();
        let matched = maximum_matching(&fits, have.len());
        let slot = s.by_type.entry(t.to_owned()).or_default();
        slot.0 += want.len();
        slot.1 += matched;
        s.expected += want.len();
        s.matched += matched;
    }
    s
}

/// The size of a maximum matching between the left nodes (`fits[l]`: the
/// right nodes `l` may pair with) and `right` right nodes — Kuhn's
/// augmenting paths.
fn maximum_matching(fits: &[Vec<usize>], right: usize) -> usize {
    fn augment(l: usize, fits: &[Vec<usize>], owner: &mut [Option<usize>], seen: &mut [bool]) -> bool {
        for &r in &fits[l] {
            if seen[r] {
                continue;
            }
            seen[r] = true;
            if owner[r].is_none_or(|other| augment(other, fits, owner, seen)) {
                owner[r] = Some(l);
                return true;
            }
        }
        false
    }
    let mut owner = vec![None; right];
    (0..fits.len())
        .filter(|&l| augment(l, fits, &mut owner, &mut vec![false; right]))
        .count()
}

/// For each expected resource of `resource_type` that no resource of
/// carehub's matched: the key elements the closest candidate lacks.
pub fn misses(expected: &Value, ours: &Value, resource_type: &str) -> Vec<BTreeSet<String>> {
    let of_type = |b: &Value| -> Vec<BTreeSet<String>> {
        b["entry"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| &e["resource"])
            .filter(|r| r["resourceType"] == resource_type)
            .map(keys)
            .collect()
    };
    let candidates = of_type(ours);
    of_type(expected)
        .into_iter()
        .filter(|want| !candidates.iter().any(|c| want.is_subset(c)))
        .map(|want| {
            candidates
                .iter()
                .map(|c| want.difference(c).cloned().collect::<BTreeSet<_>>())
                .min_by_key(BTreeSet::len)
                .unwrap_or(want)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn structure_is_compared_not_ids_and_instants_as_instants() {
        let expected = json!({ "entry": [
            { "resource": { "resourceType": "Patient", "id": "a", "identifier": [{ "value": "1" }], "birthDate": "1980-01-02" } },
            { "resource": { "resourceType": "Observation", "id": "b", "code": { "coding": [{ "code": "8867-4" }] },
                            "subject": { "reference": "Patient/a" }, "effectiveDateTime": "2021-10-20T14:41:00+05:30" } },
            { "resource": { "resourceType": "Location", "id": "c", "name": "Ward 3" } },
        ]});
        let ours = json!({ "entry": [
            { "resource": { "resourceType": "Patient", "id": "x", "identifier": [{ "value": "1", "system": "s" }], "birthDate": "1980-01-02", "gender": "male" } },
            { "resource": { "resourceType": "Observation", "id": "y", "code": { "coding": [{ "code": "8867-4" }] },
                            "subject": { "reference": "Patient/x" }, "effectiveDateTime": "2021-10-20T11:26:00+02:15" } },
        ]});
        let s = score(&expected, &ours);
        assert_eq!((s.expected, s.matched), (3, 2));
        assert_eq!(s.by_type["Location"], (1, 0));
    }
}
