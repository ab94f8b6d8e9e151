//! The `load_fhir` option: each message, once applied to the canonical
//! record, is also converted to FHIR R4 ([`carehub_hl7_fhir::convert`], of the message the pipeline parsed) and
//! its resources are written to the FHIR store in the same transaction —
//! so an EHR reads the visit, the allergies, the coverage, the specimens of
//! a message that arrived over MLLP.
//!
//! What the canonical record already holds is not written twice: the
//! converted Patient is the canonical patient, a converted ServiceRequest
//! whose placer or filler number is a canonical order is that order, and a
//! converted Observation of an ORU result is the canonical observation.
//! Every reference to them is rewritten to the canonical id; everything
//! else is stored under the converter's deterministic id, a new version
//! only when its content changed (a redelivered message writes nothing).

use std::collections::HashMap;

use carehub_pipeline::{Context, HandlerError};
use carehub_schema::{Action, ActorKind, AuditEntry, fhir_store};
use chrono::{SecondsFormat, Utc};
use serde_json::{Value, json};
use sqlx::PgConnection;
use uuid::Uuid;

/// The canonical rows a message gave, for the converted resources to point at.
#[derive(Debug, Clone, Default)]
pub struct CanonicalIds {
    pub patient: Option<Uuid>,
    /// A canonical order and its placer and filler numbers.
    pub orders: Vec<(Vec<String>, Uuid)>,
    /// Canonical observations with their code, in the order of the OBX.
    pub observations: Vec<(String, Uuid)>,
}

/// Converts `msg` (parsed once, by the pipeline) and writes what the
/// canonical record does not hold to the FHIR store; the audit entries of
/// the writes.
pub async fn load(
    conn: &mut PgConnection,
    ctx: &Context,
    actor: &str,
    msg: &carehub_hl7::codec::Message<'_>,
    canonical: &CanonicalIds,
) -> Result<Vec<AuditEntry>, HandlerError> {
    let mut conversion = carehub_hl7_fhir::convert(msg);
    // The resources taken out of the Bundle, not copied.
    let resources: Vec<Value> = match conversion.bundle["entry"].take() {
        Value::Array(entries) => entries.into_iter().map(|mut e| e["resource"].take()).collect(),
        _ => Vec::new(),
    };
    let links = links(&resources, canonical);
    let mut audit = Vec::new();
    for mut r in resources {
        let (Some(ty), Some(id)) = (r["resourceType"].as_str(), r["id"].as_str()) else {
            continue;
        };
        let (ty, id) = (ty.to_owned(), id.to_owned());
        if links.contains_key(&format!("{ty}/{id}")) {
            continue;
        }
        relink(&mut r, &links);
        // The Bundle itself is not kept: its MessageHeader stands for it.
        if let Some(Value::Array(targets)) = r.get_mut("target") {
            targets.retain(|t| !t["reference"].as_str().is_some_and(|x| x.starts_with("Bundle/")));
        }
        if let Some((action, version)) = store(conn, &ty, &id, r).await? {
            audit.push(
                AuditEntry::new(ActorKind::System, actor, action, ty.as_str())
                    .entity(&id)
                    .message(Some(ctx.message_id))
                    .origin(ctx.origin.clone())
                    .detail(json!({ "version_id": version, "converted_from": "hl7v2" })),
            );
        }
    }
    Ok(audit)
}

/// Converted reference → canonical reference.
fn links(resources: &[Value], canonical: &CanonicalIds) -> HashMap<String, String> {
    let mut links = HashMap::new();
    let mut observations = canonical
        .observations
        .iter()
        .map(|o| Some(o.clone()))
        .collect::<Vec<_>>();
    for r in resources {
        let (Some(ty), Some(id)) = (r["resourceType"].as_str(), r["id"].as_str()) else {
            continue;
        };
        let from = format!("{ty}/{id}");
        let to = match ty {
            "Patient" => canonical.patient.map(|p| format!("Patient/{p}")),
            "ServiceRequest" => {
                let numbers: Vec<&str> = r["identifier"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|i| i["value"].as_str())
                    .collect();
                canonical
                    .orders
                    .iter()
                    .find(|(known, _)| known.iter().any(|n| numbers.contains(&n.as_str())))
                    .map(|(_, o)| format!("ServiceRequest/{o}"))
            }
            "Observation" => {
                let code = r["code"]["coding"][0]["code"].as_str().unwrap_or("");
                observations
                    .iter_mut()
                    .find(|o| o.as_ref().is_some_and(|(c, _)| c == code))
                    .and_then(Option::take)
                    .map(|(_, o)| format!("Observation/{o}"))
            }
            _ => None,
        };
        if let Some(to) = to {
            links.insert(from, to);
        }
    }
    links
}

/// Rewrites every `reference` that names a linked resource.
fn relink(v: &mut Value, links: &HashMap<String, String>) {
    match v {
        Value::Object(o) => {
            for (k, child) in o.iter_mut() {
                if k == "reference"
                    && let Some(to) = child.as_str().and_then(|r| links.get(r))
                {
                    *child = json!(to);
                } else {
                    relink(child, links);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|i| relink(i, links)),
        _ => {}
    }
}

/// Writes `r` as the next version of `<ty>/<id>` unless the current one
/// holds the same content; the action and version written.
async fn store(
    conn: &mut PgConnection,
    ty: &str,
    id: &str,
    mut r: Value,
) -> Result<Option<(Action, i32)>, HandlerError> {
    // The resources of a new message are new: written at once, without a
    // look first (one statement fewer each). Only when one exists already
    // (a redelivery, an update of the same visit) is it read and compared.
    let mut look = false;
    for _ in 0..3 {
        let current = if look {
            fhir_store::lock_current(conn, ty, id).await?
        } else {
            None
        };
        look = true;
        if let Some(body) = current.as_ref().and_then(|c| c.body.as_deref()) {
            let mut stored: Value = serde_json::from_str(body).unwrap_or(Value::Null);
            if let Value::Object(o) = &mut stored {
                o.remove("meta");
            }
            if stored == r {
                return Ok(None);
            }
        }
        let replaces = current.as_ref().map(|c| c.version_id);
        let version = replaces.unwrap_or(0) + 1;
        let at = Utc::now();
        r["meta"] = json!({
            "versionId": version.to_string(),
            "lastUpdated": at.to_rfc3339_opts(SecondsFormat::Micros, true),
        });
        let body = r.to_string();
        let keys = fhir_store::search_keys(ty, id, &r);
        let written = fhir_store::write(
            conn,
            fhir_store::Write {
                resource_type: ty,
                id,
                replaces,
                version_id: version,
                body: Some(&body),
                method: "PUT",
                keys: &keys,
                at,
                event_id: None,
            },
        )
        .await?;
        if written {
            let action = if replaces.is_some() {
                Action::Update
            } else {
                Action::Create
            };
            return Ok(Some((action, version)));
        }
        // Lost to a concurrent writer: compared again without this meta.
        if let Value::Object(o) = &mut r {
            o.remove("meta");
        }
    }
    Err(HandlerError::rejected(
        "conflict",
        format!("{ty}/{id}: written concurrently twice"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_resources_are_linked_not_copied() {
        let patient = Uuid::now_v7();
        let order = Uuid::now_v7();
        let obs = Uuid::now_v7();
        let resources = vec![
            json!({ "resourceType": "Patient", "id": "p1" }),
            json!({ "resourceType": "ServiceRequest", "id": "s1", "identifier": [{ "value": "PO-1" }] }),
            json!({ "resourceType": "ServiceRequest", "id": "s2", "identifier": [{ "value": "OTHER" }] }),
            json!({ "resourceType": "Observation", "id": "o1", "code": { "coding": [{ "code": "A" }] } }),
            json!({ "resourceType": "Observation", "id": "o2", "code": { "coding": [{ "code": "A" }] } }),
        ];
        let canonical = CanonicalIds {
            patient: Some(patient),
            orders: vec![(vec!["PO-1".into()], order)],
            observations: vec![("A".into(), obs)],
        };
        let links = links(&resources, &canonical);
        assert_eq!(links["Patient/p1"], format!("Patient/{patient}"));
        assert_eq!(links["ServiceRequest/s1"], format!("ServiceRequest/{order}"));
        assert_eq!(links["Observation/o1"], format!("Observation/{obs}"));
        // One canonical observation stands for one converted one only.
        assert!(!links.contains_key("Observation/o2"));
        assert!(!links.contains_key("ServiceRequest/s2"));
        let mut enc =
            json!({ "subject": { "reference": "Patient/p1" }, "basedOn": [{ "reference": "ServiceRequest/s2" }] });
        relink(&mut enc, &links);
        assert_eq!(enc["subject"]["reference"], format!("Patient/{patient}"));
        assert_eq!(enc["basedOn"][0]["reference"], "ServiceRequest/s2");
    }
}
