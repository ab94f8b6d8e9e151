//! The FHIR write tests' helpers: a hub with its token secret, calls that
//! check every answer is valid R4.

use std::collections::HashMap;

use serde_json::Value;

use super::*;

pub const SECRET: &str = "fhir-write-test-secret-at-least-32-bytes";

pub async fn write_hub() -> (Hub, String) {
    super::fhir_hub(SECRET).await
}

pub fn token(hub: &Hub, args: &[&str]) -> String {
    fhir_token(hub, args)
}

pub struct Answer {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub text: String,
    pub json: Value,
}

pub fn call(addr: &str, method: &str, path: &str, token: &str, body: &str, extra: &[(&str, &str)]) -> Answer {
    let auth = format!("Bearer {token}");
    let mut headers = vec![
        ("Authorization", auth.as_str()),
        ("Accept", "application/fhir+json"),
        ("Content-Type", "application/fhir+json"),
    ];
    // A header given in `extra` replaces the default of the same name.
    headers.retain(|(k, _)| !extra.iter().any(|(e, _)| e.eq_ignore_ascii_case(k)));
    headers.extend_from_slice(extra);
    let (status, headers, text) = http_request(addr, method, path, &headers, body);
    let json: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    // Whatever the endpoint answers must itself be valid R4.
    if json.get("resourceType").is_some() {
        let issues = carehub_fhir::validate::validate(&json);
        assert!(
            issues.is_empty(),
            "{method} {path} answered invalid R4: {issues:?}\n{json:#}"
        );
    }
    Answer {
        status,
        headers,
        text,
        json,
    }
}

pub fn outcome_code(v: &Value) -> &str {
    assert_eq!(v["resourceType"], "OperationOutcome", "{v}");
    v["issue"][0]["code"].as_str().unwrap_or("")
}
