//! The FHIR endpoint's HTTP layer (axum): the router, the extractors, the
//! OperationOutcome responses; `GET /metadata`, read and search of the
//! canonical record's resources (see [`capability_statement`]), and the
//! writes ([`write`]). Every answer is `application/fhir+json`; every error
//! an OperationOutcome; every read of a resource an audit entry naming the
//! token's subject. What a request does is the domain's (`store`, `bundle`,
//! `commit`, `policy`), which knows nothing of HTTP.

mod audit_event;
mod capability;
pub mod guard;
pub mod write;

use audit_event::{audit_event, audit_events};
pub use capability::capability_statement;
use capability::metadata;

use std::net::SocketAddr;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use carehub_schema::{Action, AuditEntry, AuditWriter};
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use crate::auth::{Access, AuthError, Authenticator, Grant, Principal};
use crate::config::FhirConfig;
use crate::outcome::{Outcome, Status};
use crate::policy::{
    IN_PATIENT_COMPARTMENT, gone, in_reach, not_found, read_entry, read_grant, refused_read_entry, served_type,
};
use crate::resources;
use crate::search::Search;
use crate::store::{self, Lookup, Served};

/// Connector name in audit entries and metrics.
pub const CONNECTOR: &str = "fhir";
const FHIR_JSON: &str = "application/fhir+json; charset=utf-8";

type Limiter = governor::DefaultKeyedRateLimiter<String>;

#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) pool: PgPool,
    pub(crate) audit: AuditWriter,
    auth: Authenticator,
    limiter: Option<std::sync::Arc<Limiter>>,
    /// Where hub-fed writes go (the intake pipeline's topic).
    pub(crate) intake_topic: String,
    pub(crate) writes: crate::commit::GroupCommit,
    converter: Option<Hl7Converter>,
}

/// A keyed GCRA limiter for `per_second` sustained and `burst` at once; `None` when off.
fn limiter(per_second: u32, burst: u32) -> Option<std::sync::Arc<Limiter>> {
    let rate = std::num::NonZeroU32::new(per_second)?;
    let burst = std::num::NonZeroU32::new(burst.max(per_second)).unwrap_or(rate);
    Some(std::sync::Arc::new(governor::RateLimiter::keyed(
        governor::Quota::per_second(rate).allow_burst(burst),
    )))
}

impl From<StatusCode> for Status {
    fn from(s: StatusCode) -> Self {
        Status::from_u16(s.as_u16())
    }
}

impl IntoResponse for Outcome {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status().as_u16()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut res = (status, fhir_json(&self.body())).into_response();
        if status == StatusCode::TOO_MANY_REQUESTS {
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if status == StatusCode::UNAUTHORIZED {
            res.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"carehub\""),
            );
        }
        res
    }
}

fn fhir_json(v: &Value) -> impl IntoResponse + use<> {
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON))],
        v.to_string(),
    )
}

/// HL7 v2 text → (FHIR Bundle, what was not mapped), for `POST /$convert-hl7v2`.
/// Given by the binary: the FHIR connector does not depend on the HL7 one.
pub type Hl7Converter = std::sync::Arc<dyn Fn(&str) -> Result<(Value, Vec<String>), String> + Send + Sync>;

/// The router; `listen` serves it. Patient and ServiceRequest writes are
/// queued for the intake pipeline on `intake_topic`; `converter` answers
/// `POST /$convert-hl7v2` (absent: 404).
pub fn router(
    config: &FhirConfig,
    pool: PgPool,
    auth: Authenticator,
    intake_topic: &str,
    converter: Option<Hl7Converter>,
) -> Router {
    let limiter = limiter(config.rate_limit_per_second, config.rate_limit_burst);
    if let Some(l) = limiter.clone() {
        // Forget clients that went quiet, so the table does not only grow.
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_secs(60)).await;
                if std::sync::Arc::strong_count(&l) == 1 {
                    return; // the router is gone
                }
                l.retain_recent();
            }
        });
    }
    Router::new()
        .route("/", post(write::bundle))
        .route("/$convert-hl7v2", post(convert_hl7v2))
        .route("/metadata", get(metadata))
        .route("/AuditEvent", get(audit_events))
        .route("/AuditEvent/{id}", get(audit_event))
        .route("/{resource_type}", get(search).post(write::create))
        .route("/{resource_type}/_history", get(write::type_history))
        .route(
            "/{resource_type}/{id}",
            get(read).put(write::update).delete(write::delete),
        )
        .route("/{resource_type}/{id}/_history", get(write::instance_history))
        .route("/{resource_type}/{id}/_history/{version}", get(write::vread))
        .fallback(unsupported)
        .with_state(AppState {
            audit: AuditWriter::start(pool.clone()),
            writes: crate::commit::GroupCommit::start(pool.clone()),
            pool,
            auth,
            limiter,
            intake_topic: intake_topic.to_owned(),
            converter,
        })
}

/// Binds `config.listen` and serves until `shutdown` resolves.
pub async fn serve(
    config: &FhirConfig,
    pool: PgPool,
    intake_topic: &str,
    converter: Option<Hl7Converter>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    bind(config, pool, intake_topic, converter).await?.run(shutdown).await
}

/// The FHIR endpoint with its keys read and its address bound: from here on
/// connections are accepted (queued until [`BoundFhir::run`]).
pub struct BoundFhir {
    listen: SocketAddr,
    listener: tokio::net::TcpListener,
    app: axum::Router,
    limits: guard::HttpLimits,
}

impl std::fmt::Debug for BoundFhir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoundFhir").field("listen", &self.listen).finish()
    }
}

/// Reads the endpoint's keys and binds its address; a bad key or a taken
/// address is an error here, before anything is served.
pub async fn bind(
    config: &FhirConfig,
    pool: PgPool,
    intake_topic: &str,
    converter: Option<Hl7Converter>,
) -> Result<BoundFhir, ServeError> {
    let auth = Authenticator::new(&config.auth).map_err(ServeError::Auth)?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| ServeError::Bind(config.listen, e))?;
    tracing::info!(listen = %config.listen, "FHIR endpoint listening");
    Ok(BoundFhir {
        listen: config.listen,
        listener,
        app: guard::protect(router(config, pool, auth, intake_topic, converter), &config.http),
        limits: config.http.clone(),
    })
}

impl BoundFhir {
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()> + Send + 'static) -> Result<(), ServeError> {
        guard::serve(self.listener, self.app, &self.limits, shutdown)
            .await
            .map_err(|e| ServeError::Bind(self.listen, e))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("fhir.auth: {0}")]
    Auth(AuthError),
    #[error("fhir.listen = {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
}

/// The caller of a FHIR interaction: its `Accept` negotiated (JSON only) and
/// its bearer token verified and rate-limited — the prologue every handler
/// that touches data shares, in one extractor. What it may do with which
/// type is [`crate::policy`]'s, per handler.
pub(crate) struct Authenticated(pub(crate) Principal);

impl axum::extract::FromRequestParts<AppState> for Authenticated {
    type Rejection = Outcome;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &AppState) -> Result<Self, Outcome> {
        negotiate(&parts.headers)?;
        authenticate(state, &parts.headers).map(Authenticated)
    }
}

/// JSON only: a client that accepts neither JSON nor anything gets 406.
pub(crate) fn negotiate(headers: &HeaderMap) -> Result<(), Outcome> {
    let Some(accept) = headers.get(header::ACCEPT).and_then(|a| a.to_str().ok()) else {
        return Ok(());
    };
    let ok = accept.split(',').any(|t| {
        let t = t.split(';').next().unwrap_or("").trim();
        matches!(
            t,
            "*/*" | "application/*" | "application/json" | "application/fhir+json"
        ) || t.is_empty()
    });
    if ok {
        Ok(())
    } else {
        Err(Outcome::new(
            StatusCode::NOT_ACCEPTABLE,
            "not-supported",
            format!("only application/fhir+json is served, not {accept}"),
        ))
    }
}

pub(crate) fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<Principal, Outcome> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
        .ok_or_else(|| Outcome::new(StatusCode::UNAUTHORIZED, "login", AuthError::Missing.to_string()))?;
    let principal = state.auth.verify(token.trim()).map_err(|e| {
        tracing::info!(reason = %e, "FHIR request refused: token");
        Outcome::new(StatusCode::UNAUTHORIZED, "login", e.to_string())
    })?;
    if let Some(limiter) = &state.limiter
        && limiter.check_key(&principal.client().to_owned()).is_err()
    {
        return Err(Outcome::new(
            StatusCode::TOO_MANY_REQUESTS,
            "throttled",
            format!("client {} exceeds its request rate; retry shortly", principal.client()),
        ));
    }
    Ok(principal)
}

async fn read(
    State(state): State<AppState>,
    Path((resource_type, id)): Path<(String, String)>,
    Authenticated(principal): Authenticated,
) -> Result<Response, Outcome> {
    served_type(&resource_type)?;
    let origin = format!("fhir:GET {resource_type}/{}", crate::store::safe_id(&id));
    let grant = match read_grant(&principal, &resource_type) {
        Ok(g) => g,
        Err(refused) => {
            let entry = refused_read_entry(
                &principal,
                &resource_type,
                &crate::store::safe_id(&id),
                origin,
                &refused,
            );
            state.audit.append(vec![entry]).await?;
            return Err(refused);
        }
    };
    // An id no resource can have (not FHIR's id grammar, a NUL byte) is
    // unknown: it never reaches the database (hardening item 12).
    if !crate::store::is_fhir_id(&id) {
        return Err(not_found(&resource_type, &crate::store::safe_id(&id)));
    }
    let mut conn = state.pool.acquire().await?;
    let served = match store::lookup(&mut conn, &resource_type, &id).await? {
        Lookup::Found(s) => s,
        Lookup::Gone => return Err(gone(&resource_type, &id)),
        Lookup::Missing => return Err(not_found(&resource_type, &id)),
    };
    drop(conn);
    answer_read(&state, &principal, &grant, served, &resource_type, &id, origin).await
}

/// A read's answer, once the token's reach is checked and the read audited.
pub(crate) async fn answer_read(
    state: &AppState,
    principal: &Principal,
    grant: &Grant,
    served: Served,
    resource_type: &str,
    id: &str,
    origin: String,
) -> Result<Response, Outcome> {
    if let Err(refused) = in_reach(grant, &served, resource_type, id) {
        let entry = refused_read_entry(principal, resource_type, id, origin, &refused);
        state.audit.append(vec![entry]).await?;
        return Err(refused);
    }
    state
        .audit
        .append(vec![read_entry(principal, resource_type, id, origin)])
        .await?;
    Ok(resource_response(
        StatusCode::OK,
        served.body,
        served.version,
        served.updated,
        None,
    ))
}

/// A resource body with its ETag, Last-Modified and, for a create, Location.
pub(crate) fn resource_response(
    status: StatusCode,
    body: String,
    version: i32,
    updated: chrono::DateTime<chrono::Utc>,
    location: Option<String>,
) -> Response {
    let mut res = (
        status,
        [(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON))],
        body,
    )
        .into_response();
    let h = res.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&format!("W/\"{version}\"")) {
        h.insert(header::ETAG, v);
    }
    if let Ok(v) = HeaderValue::from_str(&updated.format("%a, %d %b %Y %H:%M:%S GMT").to_string()) {
        h.insert(header::LAST_MODIFIED, v);
    }
    if let Some(loc) = location
        && let Ok(v) = HeaderValue::from_str(&loc)
    {
        h.insert(header::LOCATION, v);
    }
    res
}

/// The base URL entries' fullUrl start with.
pub(crate) fn base_url(headers: &HeaderMap) -> String {
    headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(|h| format!("http://{h}"))
        .unwrap_or_default()
}

/// `GET /<type>?…`: a searchset Bundle; each resource returned is audited.
/// Types the canonical record holds are searched there and in the FHIR
/// store (resources written over FHIR that the record does not hold), merged.
async fn search(
    State(state): State<AppState>,
    Path(resource_type): Path<String>,
    Query(params): Query<Vec<(String, String)>>,
    headers: HeaderMap,
    Authenticated(principal): Authenticated,
) -> Result<Response, Outcome> {
    served_type(&resource_type)?;
    let grant = read_grant(&principal, &resource_type)?;
    let search = Search::parse(&resource_type, &params)
        .map_err(|reason| Outcome::new(StatusCode::BAD_REQUEST, "invalid", reason))?;
    let compartment = match grant {
        Grant::Patient(_) if !IN_PATIENT_COMPARTMENT.contains(&resource_type.as_str()) => {
            return Err(Outcome::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("{resource_type} is outside the token's patient compartment"),
            ));
        }
        Grant::Patient(p) => Some(p),
        _ => None,
    };
    let mut conn = state.pool.acquire().await?;
    // One more than a page tells whether there is a next page.
    let window = search.offset + search.count + 1;
    let mut hits: Vec<(chrono::DateTime<chrono::Utc>, String)> = Vec::new();
    // The stored matches come with their bodies: kept, not fetched again.
    let mut stored_matches = std::collections::HashMap::new();
    if search.has_canonical() && store::CANONICAL.contains(&resource_type.as_str()) {
        let rows: Vec<(Uuid, chrono::DateTime<chrono::Utc>)> = search
            .query(compartment, window, 0)
            .build_query_as()
            .fetch_all(&mut *conn)
            .await?;
        hits.extend(rows.into_iter().map(|(id, at)| (at, id.to_string())));
    }
    if store::is_stored(&resource_type) {
        let stored =
            carehub_schema::fhir_store::search(&mut *conn, &resource_type, &search.stored(compartment, window, 0))
                .await?;
        for r in stored {
            if !hits.iter().any(|(_, id)| *id == r.id) {
                hits.push((r.last_updated, r.id.clone()));
            }
            stored_matches.insert(r.id.clone(), r);
        }
    }
    hits.sort();
    if search.descending {
        hits.reverse();
    }
    let page: Vec<String> = hits
        .into_iter()
        .skip(search.offset as usize)
        .take(search.count as usize + 1)
        .map(|(_, id)| id)
        .collect();
    let more = page.len() as i64 > search.count;
    let base = base_url(&headers);
    let mut entries = Vec::with_capacity(page.len());
    let mut audit = Vec::with_capacity(page.len());
    // Each resource returned is a read of its own: an entry and an audit entry.
    let mut add = |ty: &str, id: &str, body: String, mode: &'static str| {
        audit.push(read_entry(&principal, ty, id, format!("fhir:GET {resource_type}?")));
        entries.push(crate::bundle::Entry {
            full_url: Some(format!("{base}/{ty}/{id}")),
            resource: crate::bundle::raw(body),
            search: Some(json!({ "mode": mode })),
            ..Default::default()
        });
    };
    // The matches' bodies, parsed only when `_include` follows their references.
    let mut matches = Vec::new();
    for id in page.iter().take(search.count as usize) {
        let found = match stored_matches.remove(id) {
            Some(r) => store::served_version(&mut conn, r).await?,
            None => match store::lookup(&mut conn, &resource_type, id).await? {
                Lookup::Found(f) => Some(f),
                _ => None,
            },
        };
        let Some(found) = found else {
            continue; // deleted
        };
        if compartment.is_some_and(|p| !found.in_compartment(p)) {
            continue;
        }
        if !search.include.is_empty()
            && let Ok(v) = serde_json::from_str::<Value>(&found.body)
        {
            matches.push(v);
        }
        add(&resource_type, id, found.body, "match");
    }
    // `_include`: the resources the matches refer to, once each, within the
    // token's reach; each is a read like any other.
    let mut included = std::collections::BTreeSet::new();
    for element in &search.include {
        let refs: Vec<String> = matches
            .iter()
            .flat_map(|resource| {
                let v = &resource[*element];
                let items = if v.is_array() {
                    v.as_array().cloned().unwrap_or_default()
                } else {
                    vec![v.clone()]
                };
                items
                    .into_iter()
                    .filter_map(|r| r["reference"].as_str().map(str::to_owned))
            })
            .collect();
        for reference in refs {
            let Some((ty, id)) = reference.split_once('/') else {
                continue;
            };
            if !store::is_served(ty) || !included.insert(reference.clone()) {
                continue;
            }
            let Lookup::Found(found) = store::lookup(&mut conn, ty, id).await? else {
                continue;
            };
            let allowed = match principal.grant(ty, Access::Read) {
                Grant::All => true,
                Grant::Patient(p) => found.in_compartment(p),
                Grant::None => false,
            };
            if allowed {
                add(ty, id, found.body, "include");
            }
        }
    }
    drop(conn);
    state.audit.append(audit).await?;
    let mut links =
        vec![json!({ "relation": "self", "url": format!("{base}/{}", search.page_link(&params, search.offset)) })];
    if more {
        links.push(json!({ "relation": "next", "url": format!("{base}/{}", search.page_link(&params, search.offset + search.count)) }));
    }
    if search.offset > 0 {
        let prev = (search.offset - search.count).max(0);
        links.push(json!({ "relation": "previous", "url": format!("{base}/{}", search.page_link(&params, prev)) }));
    }
    Ok(fhir_text(crate::bundle::json("searchset", None, links, entries)))
}

pub(crate) fn fhir_text(body: String) -> Response {
    ([(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON))], body).into_response()
}

/// `POST /$convert-hl7v2`: an HL7 v2 message (the body as ER7 text,
/// `x-application/hl7-v2+er7` or `text/plain`; or a Parameters resource with
/// a `message` valueString) → a Parameters resource: `bundle` (the FHIR
/// Bundle, nothing stored) and one `unmapped` valueString per field or
/// segment not mapped. Any valid token may convert; each conversion is audited.
async fn convert_hl7v2(
    State(state): State<AppState>,
    headers: HeaderMap,
    Authenticated(principal): Authenticated,
    body: String,
) -> Result<Response, Outcome> {
    let Some(converter) = &state.converter else {
        return Err(Outcome::new(
            StatusCode::NOT_FOUND,
            "not-supported",
            "$convert-hl7v2 is not offered here",
        ));
    };
    let media = headers
        .get(header::CONTENT_TYPE)
        .and_then(|c| c.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_owned();
    let message = match media.as_str() {
        "x-application/hl7-v2+er7" | "text/plain" | "application/hl7-v2" => body,
        "application/fhir+json" | "application/json" => {
            let p: Value = serde_json::from_str(&body)
                .map_err(|e| Outcome::new(StatusCode::BAD_REQUEST, "invalid", format!("the body is not JSON: {e}")))?;
            p["parameter"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|x| x["name"] == "message")
                .and_then(|x| x["valueString"].as_str())
                .map(str::to_owned)
                .ok_or_else(|| {
                    Outcome::new(
                        StatusCode::BAD_REQUEST,
                        "required",
                        "a Parameters resource with a `message` valueString is expected",
                    )
                })?
        }
        other => {
            return Err(Outcome::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "not-supported",
                format!("send the message as x-application/hl7-v2+er7, or in Parameters, not {other:?}"),
            ));
        }
    };
    let (bundle, unmapped) = converter(&message)
        .map_err(|e| Outcome::new(StatusCode::BAD_REQUEST, "invalid", format!("not converted: {e}")))?;
    let resources = bundle["entry"].as_array().map_or(0, Vec::len);
    state
        .audit
        .append(vec![
            AuditEntry::new(principal.actor_kind(), principal.actor(), Action::Read, "hl7v2_message")
                .origin("fhir:POST $convert-hl7v2")
                .detail(json!({ "resources": resources, "unmapped": unmapped.len() })),
        ])
        .await?;
    let mut parameter = vec![json!({ "name": "bundle", "resource": bundle })];
    parameter.extend(
        unmapped
            .into_iter()
            .map(|u| json!({ "name": "unmapped", "valueString": u })),
    );
    Ok(fhir_json(&json!({ "resourceType": "Parameters", "parameter": parameter })).into_response())
}

async fn unsupported() -> Outcome {
    Outcome::new(
        StatusCode::NOT_FOUND,
        "not-supported",
        "no such interaction (see /metadata for what is served)",
    )
}
