//! The REST handlers of writes and history: create, update, delete,
//! `POST /` (batch and transaction), vread and `_history`. A write — the
//! version, its audit entry and, for the hub-fed types, the outbox event — is
//! committed before it is answered ([`crate::store`], [`crate::commit`]).

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use carehub_schema::fhir_store;
use serde_json::json;

use super::{AppState, Authenticated, answer_read, base_url, fhir_text, resource_response};
use crate::auth::Access;
use crate::auth::Principal;
use crate::bundle::{self, Entry};
use crate::commit::{Done, Op};
use crate::outcome::Outcome;
use crate::policy::{gone, not_found, read_entry, read_grant, served_type};
use crate::store::{self, Lookup, WriteKind, Writer, Written};

/// JSON bodies only: FHIR JSON or plain JSON (415 otherwise).
fn json_body(headers: &HeaderMap) -> Result<(), Outcome> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|c| c.to_str().ok())
        .unwrap_or("");
    let media = ct.split(';').next().unwrap_or("").trim();
    if matches!(media, "application/fhir+json" | "application/json") {
        Ok(())
    } else {
        Err(Outcome::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "not-supported",
            format!("the body must be application/fhir+json, not {ct:?}"),
        ))
    }
}

fn header_str<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn writer(state: &AppState, principal: Principal, origin: String) -> Result<Writer, Outcome> {
    Ok(Writer {
        principal,
        intake_topic: state.intake_topic.clone(),
        origin,
    })
}

fn answer(headers: &HeaderMap, w: Written) -> Response {
    let status = StatusCode::from_u16(w.status().as_u16()).unwrap_or(StatusCode::OK);
    if w.kind == WriteKind::Deleted {
        return StatusCode::NO_CONTENT.into_response();
    }
    let location = (w.kind == WriteKind::Created).then(|| format!("{}/{}", base_url(headers), w.location()));
    resource_response(
        status,
        w.body.unwrap_or_default(),
        w.version_id,
        w.last_updated,
        location,
    )
}

/// Runs a write through the group commit and answers it.
async fn written(state: &AppState, headers: &HeaderMap, op: Op, w: Writer) -> Result<Response, Outcome> {
    match state.writes.run(op, w).await? {
        Done::Written(w) => Ok(answer(headers, *w)),
        Done::Bundle(response) => Ok(fhir_text(response)),
    }
}

/// `POST /<type>` (`If-None-Exist` for a conditional create).
pub(crate) async fn create(
    State(state): State<AppState>,
    Path(resource_type): Path<String>,
    headers: HeaderMap,
    Authenticated(principal): Authenticated,
    body: String,
) -> Result<Response, Outcome> {
    let w = writer(&state, principal, format!("fhir:POST {resource_type}"))?;
    json_body(&headers)?;
    let op = Op::Create {
        if_none_exist: header_str(&headers, "if-none-exist").map(str::to_owned),
        resource_type,
        body,
    };
    written(&state, &headers, op, w).await
}

/// `PUT /<type>/<id>` (`If-Match` for optimistic locking).
pub(crate) async fn update(
    State(state): State<AppState>,
    Path((resource_type, id)): Path<(String, String)>,
    headers: HeaderMap,
    Authenticated(principal): Authenticated,
    body: String,
) -> Result<Response, Outcome> {
    let w = writer(&state, principal, format!("fhir:PUT {resource_type}/{id}"))?;
    json_body(&headers)?;
    let op = Op::Update {
        if_match: header_str(&headers, "if-match").map(str::to_owned),
        resource_type,
        id,
        body,
    };
    written(&state, &headers, op, w).await
}

/// `DELETE /<type>/<id>`: 204; reads then answer 410.
pub(crate) async fn delete(
    State(state): State<AppState>,
    Path((resource_type, id)): Path<(String, String)>,
    headers: HeaderMap,
    Authenticated(principal): Authenticated,
) -> Result<Response, Outcome> {
    let w = writer(&state, principal, format!("fhir:DELETE {resource_type}/{id}"))?;
    let op = Op::Delete {
        if_match: header_str(&headers, "if-match").map(str::to_owned),
        resource_type,
        id,
    };
    written(&state, &headers, op, w).await
}

/// `POST /` with a batch or transaction Bundle.
pub(crate) async fn bundle(
    State(state): State<AppState>,
    headers: HeaderMap,
    Authenticated(principal): Authenticated,
    body: String,
) -> Result<Response, Outcome> {
    let w = writer(&state, principal, "fhir:POST /".to_owned())?;
    json_body(&headers)?;
    match state.writes.run(Op::Bundle { body }, w).await? {
        Done::Bundle(response) => Ok(fhir_text(response)),
        Done::Written(w) => Ok(answer(&headers, *w)),
    }
}

/// `GET /<type>/<id>/_history/<version>`.
pub(crate) async fn vread(
    State(state): State<AppState>,
    Path((resource_type, id, version)): Path<(String, String, String)>,
    Authenticated(principal): Authenticated,
) -> Result<Response, Outcome> {
    served_type(&resource_type)?;
    let grant = read_grant(&principal, &resource_type)?;
    let missing = || {
        Outcome::new(
            StatusCode::NOT_FOUND,
            "not-found",
            format!("{resource_type}/{id} has no version {version}"),
        )
    };
    let v: i32 = version.parse().map_err(|_| missing())?;
    let mut conn = state.pool.acquire().await?;
    let served = match fhir_store::version(&mut *conn, &resource_type, &id, v).await? {
        Some(stored) => store::served_version(&mut conn, stored)
            .await?
            .ok_or_else(|| gone(&resource_type, &id))?,
        // A resource only the canonical record holds has its current version.
        None => match store::lookup(&mut conn, &resource_type, &id).await? {
            Lookup::Found(s) if s.version == v => s,
            Lookup::Missing => return Err(not_found(&resource_type, &id)),
            _ => return Err(missing()),
        },
    };
    drop(conn);
    let origin = format!("fhir:GET {resource_type}/{id}/_history/{v}");
    answer_read(&state, &principal, &grant, served, &resource_type, &id, origin).await
}

/// `GET /<type>/<id>/_history`.
pub(crate) async fn instance_history(
    State(state): State<AppState>,
    Path((resource_type, id)): Path<(String, String)>,
    Query(params): Query<Vec<(String, String)>>,
    headers: HeaderMap,
    Authenticated(principal): Authenticated,
) -> Result<Response, Outcome> {
    history(state, resource_type, Some(id), params, headers, principal).await
}

/// `GET /<type>/_history`.
pub(crate) async fn type_history(
    State(state): State<AppState>,
    Path(resource_type): Path<String>,
    Query(params): Query<Vec<(String, String)>>,
    headers: HeaderMap,
    Authenticated(principal): Authenticated,
) -> Result<Response, Outcome> {
    history(state, resource_type, None, params, headers, principal).await
}

/// A history Bundle, newest first (`_count`, `_since`). It lists the
/// versions written over FHIR; a resource only the canonical record holds
/// has one entry, its current version (the record keeps no earlier bodies).
async fn history(
    state: AppState,
    resource_type: String,
    id: Option<String>,
    params: Vec<(String, String)>,
    headers: HeaderMap,
    principal: Principal,
) -> Result<Response, Outcome> {
    served_type(&resource_type)?;
    let reach = store::reach(&principal, &resource_type, Access::Read)?;
    let mut count = crate::search::DEFAULT_COUNT;
    let mut since = None;
    for (name, value) in &params {
        let bad = |what: &str| {
            Outcome::new(
                StatusCode::BAD_REQUEST,
                "invalid",
                format!("{name} {value:?} is not {what}"),
            )
        };
        match name.as_str() {
            "_count" => {
                count = value
                    .parse::<i64>()
                    .map_err(|_| bad("a number"))?
                    .clamp(0, crate::search::MAX_COUNT)
            }
            "_since" => {
                since = Some(
                    chrono::DateTime::parse_from_rfc3339(value)
                        .map_err(|_| bad("an instant"))?
                        .with_timezone(&chrono::Utc),
                )
            }
            other => {
                return Err(Outcome::new(
                    StatusCode::BAD_REQUEST,
                    "invalid",
                    format!("{other:?} is not supported on _history (_count, _since)"),
                ));
            }
        }
    }
    let mut conn = state.pool.acquire().await?;
    let versions = fhir_store::history(&mut *conn, &resource_type, id.as_deref(), since, count).await?;
    let base = base_url(&headers);
    let mut entries = Vec::new();
    let mut audit = Vec::new();
    let origin = format!(
        "fhir:GET {resource_type}/{}_history",
        id.as_deref().map(|i| format!("{i}/")).unwrap_or_default()
    );
    for (v, method) in versions {
        if reach.is_some() && store::within(reach, v.patient_ref.as_deref()).is_err() {
            continue;
        }
        let rid = v.id.clone();
        let (version, at) = (v.version_id, v.last_updated);
        let deleted = v.deleted;
        let body = store::served_version(&mut conn, v).await?;
        let status = match (deleted, version) {
            (true, _) => "204 No Content",
            (false, 1) => "201 Created",
            _ => "200 OK",
        };
        audit.push(read_entry(&principal, &resource_type, &rid, origin.clone()));
        entries.push(Entry {
            full_url: Some(format!("{base}/{resource_type}/{rid}")),
            resource: body.and_then(|b| bundle::raw(b.body)),
            request: Some(json!({
                "method": method,
                "url": if method == "POST" { resource_type.clone() } else { format!("{resource_type}/{rid}") },
            })),
            response: Some(json!({
                "status": status,
                "etag": format!("W/\"{version}\""),
                "lastModified": at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            })),
            ..Default::default()
        });
    }
    if entries.is_empty()
        && let Some(id) = &id
    {
        match store::lookup(&mut conn, &resource_type, id).await? {
            Lookup::Found(s) => {
                store::within(reach, s.patient.as_deref())?;
                audit.push(read_entry(&principal, &resource_type, id, origin.clone()));
                entries.push(Entry {
                    full_url: Some(format!("{base}/{resource_type}/{id}")),
                    resource: bundle::raw(s.body),
                    request: Some(json!({ "method": "PUT", "url": format!("{resource_type}/{id}") })),
                    response: Some(json!({ "status": "200 OK", "etag": format!("W/\"{}\"", s.version) })),
                    ..Default::default()
                });
            }
            _ => return Err(not_found(&resource_type, id)),
        }
    }
    drop(conn);
    state.audit.append(audit).await?;
    let total = entries.len() as i64;
    Ok(fhir_text(bundle::json("history", Some(total), Vec::new(), entries)))
}
