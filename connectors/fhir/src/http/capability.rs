//! `GET /metadata`: the CapabilityStatement, what this server does.

use super::*;

pub(super) async fn metadata(headers: HeaderMap) -> Result<impl IntoResponse, Outcome> {
    negotiate(&headers)?;
    Ok(fhir_json(&capability_statement()))
}

/// What this server does, and nothing more.
pub fn capability_statement() -> Value {
    let param = |name: &str, ty: &str| json!({ "name": name, "type": ty });
    let common = [param("_id", "token"), param("_lastUpdated", "date")];
    let resource = |ty: &str| {
        let mut params: Vec<Value> = common.to_vec();
        match ty {
            "Patient" | "Organization" | "Practitioner" => params.push(param("identifier", "token")),
            "Observation" => params.extend([
                param("patient", "reference"),
                param("subject", "reference"),
                param("status", "token"),
                param("code", "token"),
                param("date", "date"),
            ]),
            "ServiceRequest" => params.extend([
                param("identifier", "token"),
                param("patient", "reference"),
                param("subject", "reference"),
                param("status", "token"),
            ]),
            "Task" => params.extend([param("patient", "reference"), param("status", "token")]),
            "Invoice" => params.extend([
                param("identifier", "token"),
                param("patient", "reference"),
                param("subject", "reference"),
                param("status", "token"),
            ]),
            _ => params.extend([
                param("identifier", "token"),
                param("patient", "reference"),
                param("subject", "reference"),
                param("status", "token"),
                param("code", "token"),
            ]),
        }
        let include: &[&str] = match ty {
            "ServiceRequest" => &[
                "ServiceRequest:patient",
                "ServiceRequest:subject",
                "ServiceRequest:requester",
            ],
            "Observation" => &["Observation:patient", "Observation:subject", "Observation:based-on"],
            "Task" => &["Task:patient", "Task:focus", "Task:based-on"],
            "Patient" => &["Patient:organization"],
            _ => &[],
        };
        let writable = store::WRITABLE.contains(&ty);
        let mut interactions = vec!["read", "vread", "search-type", "history-instance", "history-type"];
        if writable {
            interactions.extend(["create", "update", "delete"]);
        }
        let mut r = json!({
            "type": ty,
            "interaction": interactions.iter().map(|c| json!({ "code": c })).collect::<Vec<_>>(),
            "versioning": "versioned-update",
            "readHistory": true,
            "updateCreate": writable,
            "conditionalCreate": writable,
            "conditionalUpdate": false,
            "conditionalDelete": "not-supported",
            "searchParam": params,
        });
        // FHIR has no empty arrays: no `_include` targets, no element.
        if !include.is_empty() {
            r["searchInclude"] = json!(include);
        }
        r
    };
    let mut types: Vec<&str> = store::CANONICAL
        .iter()
        .chain(store::WRITABLE)
        .chain(store::LOADED)
        .copied()
        .collect();
    types.sort_unstable();
    types.dedup();
    let mut served: Vec<Value> = types.iter().map(|t| resource(t)).collect();
    served.push(json!({
        "type": "AuditEvent",
        "interaction": [{ "code": "read" }, { "code": "search-type" }],
        "searchParam": [param("entity", "reference"), param("agent", "reference")],
    }));
    json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-11-25",
        "kind": "instance",
        "software": { "name": "carehub", "version": env!("CARGO_PKG_VERSION") },
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json"],
        "rest": [{
            "mode": "server",
            "security": {
                "service": [{ "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/restful-security-service", "code": "SMART-on-FHIR" }] }],
                "description": "OAuth2 bearer JWT (HS256, RS256, ES256) with SMART v1 scopes (patient/, user/, system/; .read, .write, .*); every access is audited",
            },
            "resource": served,
            "interaction": [{ "code": "transaction" }, { "code": "batch" }],
            "operation": [{ "name": "convert-hl7v2", "definition": "urn:carehub:operation:convert-hl7v2" }],
        }],
    })
}
