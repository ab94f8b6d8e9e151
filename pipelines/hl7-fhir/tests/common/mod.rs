//! Helpers of the conversion tests: fixtures and finding resources in a Bundle.
#![allow(dead_code)]

use std::path::Path;

use serde_json::Value;

pub fn codes(v: &Value) -> Vec<&str> {
    v["coding"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["code"].as_str())
        .collect()
}

pub fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/hl7")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn resources<'b>(bundle: &'b Value, resource_type: &str) -> Vec<&'b Value> {
    bundle["entry"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| &e["resource"])
        .filter(|r| r["resourceType"] == resource_type)
        .collect()
}

/// The resource `reference` (`Type/id`) names in `bundle`.
pub fn target<'b>(bundle: &'b Value, reference: &Value) -> &'b Value {
    let r = reference["reference"].as_str().expect("a reference");
    bundle["entry"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| &e["resource"])
        .find(|x| {
            format!(
                "{}/{}",
                x["resourceType"].as_str().unwrap_or(""),
                x["id"].as_str().unwrap_or("")
            ) == r
        })
        .unwrap_or_else(|| panic!("{r} is not in the Bundle"))
}
