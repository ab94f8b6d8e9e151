//! The FHIR REST server (axum): `GET /metadata`, read and search of the
//! canonical record's resources (see [`capability_statement`]). Every answer is
//! `application/fhir+json`; every error an OperationOutcome; every read of a
//! resource an audit entry naming the token's subject.

use std::net::SocketAddr;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use carehub_schema::{Action, ActorKind, AuditEntry, AuditWriter};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use crate::auth::{Access, AuthConfig, AuthError, Authenticator, Grant, Principal};
use crate::resources::{self, Found};
use crate::search::Search;

/// Connector name in audit entries and metrics.
pub const CONNECTOR: &str = "fhir";
const FHIR_JSON: &str = "application/fhir+json; charset=utf-8";

/// `[fhir]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FhirConfig {
    /// Run the FHIR endpoint in `carehub serve`.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Address it listens on.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    #[serde(default)]
    pub auth: AuthConfig,
    /// Requests per second one client (token `client_id`, else `sub`) may
    /// make, sustained; 0 turns the limit off. Past it: 429.
    #[serde(default = "default_rate")]
    pub rate_limit_per_second: u32,
    /// Requests a client may make at once above the sustained rate.
    #[serde(default = "default_burst")]
    pub rate_limit_burst: u32,
    /// EHRs that get the order status of their clinic's orders pushed:
    /// `[fhir.push.<name>]`.
    #[serde(default)]
    pub push: std::collections::BTreeMap<String, EhrSubscriber>,
    /// Consumer group of the push (reads the lab's `ehr_events_topic`).
    #[serde(default = "default_push_group")]
    pub push_group: String,
}

/// One EHR that follows a clinic's orders.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EhrSubscriber {
    /// The EHR's FHIR base URL; Task and ServiceRequest are PUT under it.
    pub base_url: String,
    /// The clinic whose orders it follows (identifier value, any case).
    pub clinic: String,
    /// Bearer token the EHR expects, if any. Secret: never logged.
    #[serde(default)]
    pub bearer_token: Option<carehub_core::SensitiveString>,
    /// Milliseconds one request may take.
    #[serde(default = "default_push_timeout_ms")]
    pub timeout_ms: u64,
    /// Attempts (timeouts, 5xx, 408, 429) before the event is dead-lettered.
    #[serde(default = "default_push_attempts")]
    pub max_attempts: usize,
    /// Exponential backoff between attempts.
    #[serde(default = "default_push_min_backoff_ms")]
    pub min_backoff_ms: u64,
    #[serde(default = "default_push_max_backoff_ms")]
    pub max_backoff_ms: u64,
}

fn default_push_group() -> String {
    "carehub-ehr-push".to_owned()
}
const fn default_push_timeout_ms() -> u64 {
    10_000
}
const fn default_push_attempts() -> usize {
    5
}
const fn default_push_min_backoff_ms() -> u64 {
    200
}
const fn default_push_max_backoff_ms() -> u64 {
    30_000
}

const fn default_true() -> bool {
    true
}
const fn default_rate() -> u32 {
    1000
}
const fn default_burst() -> u32 {
    2000
}
fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8081))
}

impl Default for FhirConfig {
    fn default() -> Self {
        FhirConfig {
            enabled: true,
            listen: default_listen(),
            auth: AuthConfig::default(),
            rate_limit_per_second: default_rate(),
            rate_limit_burst: default_burst(),
            push: Default::default(),
            push_group: default_push_group(),
        }
    }
}

type Limiter = governor::DefaultKeyedRateLimiter<String>;

#[derive(Clone)]
struct AppState {
    pool: PgPool,
    audit: AuditWriter,
    auth: Authenticator,
    limiter: Option<std::sync::Arc<Limiter>>,
}

/// A keyed GCRA limiter for `per_second` sustained and `burst` at once; `None` when off.
fn limiter(per_second: u32, burst: u32) -> Option<std::sync::Arc<Limiter>> {
    let rate = std::num::NonZeroU32::new(per_second)?;
    let burst = std::num::NonZeroU32::new(burst.max(per_second)).unwrap_or(rate);
    Some(std::sync::Arc::new(governor::RateLimiter::keyed(
        governor::Quota::per_second(rate).allow_burst(burst),
    )))
}

/// An error as FHIR answers it: an OperationOutcome with its HTTP status.
#[derive(Debug)]
pub struct Outcome {
    status: StatusCode,
    /// FHIR issue-type code (`not-found`, `login`, `forbidden`, …).
    code: &'static str,
    diagnostics: String,
}

impl Outcome {
    pub fn new(status: StatusCode, code: &'static str, diagnostics: impl Into<String>) -> Self {
        Outcome {
            status,
            code,
            diagnostics: diagnostics.into(),
        }
    }

    pub fn body(&self) -> Value {
        json!({
            "resourceType": "OperationOutcome",
            "issue": [{ "severity": "error", "code": self.code, "diagnostics": self.diagnostics }],
        })
    }
}

impl IntoResponse for Outcome {
    fn into_response(self) -> Response {
        let mut res = (self.status, fhir_json(&self.body())).into_response();
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            res.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"carehub\""),
            );
        }
        res
    }
}

impl From<sqlx::Error> for Outcome {
    fn from(e: sqlx::Error) -> Self {
        tracing::error!(error = %e, "FHIR request failed on the database");
        Outcome::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "transient",
            "the record is unavailable; try again",
        )
    }
}

impl From<carehub_schema::Error> for Outcome {
    fn from(e: carehub_schema::Error) -> Self {
        tracing::error!(error = %e, "FHIR request failed on the database");
        Outcome::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "transient",
            "the record is unavailable; try again",
        )
    }
}

fn fhir_json(v: &Value) -> impl IntoResponse + use<> {
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON))],
        v.to_string(),
    )
}

/// The router; `listen` serves it.
pub fn router(config: &FhirConfig, pool: PgPool, auth: Authenticator) -> Router {
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
        .route("/metadata", get(metadata))
        .route("/AuditEvent", get(audit_events))
        .route("/AuditEvent/{id}", get(audit_event))
        .route("/{resource_type}", get(search))
        .route("/{resource_type}/{id}", get(read))
        .fallback(unsupported)
        .with_state(AppState {
            audit: AuditWriter::start(pool.clone()),
            pool,
            auth,
            limiter,
        })
}

/// Binds `config.listen` and serves until `shutdown` resolves.
pub async fn serve(
    config: &FhirConfig,
    pool: PgPool,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let auth = Authenticator::new(&config.auth).map_err(ServeError::Auth)?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| ServeError::Bind(config.listen, e))?;
    tracing::info!(listen = %config.listen, "FHIR endpoint listening");
    axum::serve(listener, router(config, pool, auth))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|e| ServeError::Bind(config.listen, e))
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("fhir.auth: {0}")]
    Auth(AuthError),
    #[error("fhir.listen = {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
}

/// JSON only: a client that accepts neither JSON nor anything gets 406.
fn negotiate(headers: &HeaderMap) -> Result<(), Outcome> {
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

fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<Principal, Outcome> {
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

async fn metadata(headers: HeaderMap) -> Result<impl IntoResponse, Outcome> {
    negotiate(&headers)?;
    Ok(fhir_json(&capability_statement()))
}

/// What this server does, and nothing more.
pub fn capability_statement() -> Value {
    let param = |name: &str, ty: &str| json!({ "name": name, "type": ty });
    let common = [param("_id", "token"), param("_lastUpdated", "date")];
    let read_only = |ty: &str| {
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
            _ => params.extend([param("patient", "reference"), param("status", "token")]),
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
        json!({
            "type": ty,
            "interaction": [{ "code": "read" }, { "code": "search-type" }],
            "searchInclude": include,
            "versioning": "versioned",
            "readHistory": false,
            "updateCreate": false,
            "searchParam": params,
        })
    };
    let served: Vec<Value> = [
        "Observation",
        "Organization",
        "Patient",
        "Practitioner",
        "ServiceRequest",
        "Task",
    ]
    .iter()
    .map(|t| read_only(t))
    .collect();
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
        }],
    })
}

async fn read(
    State(state): State<AppState>,
    Path((resource_type, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, Outcome> {
    negotiate(&headers)?;
    let principal = authenticate(&state, &headers)?;
    let entity = entity_of(&resource_type)?;
    let grant = read_grant(&principal, &resource_type)?;
    let not_found = || {
        Outcome::new(
            StatusCode::NOT_FOUND,
            "not-found",
            format!("{resource_type}/{id} is not known"),
        )
    };
    let Ok(uuid) = Uuid::parse_str(&id) else {
        return Err(not_found());
    };
    let mut conn = state.pool.acquire().await?;
    let found = fetch(&mut conn, &resource_type, uuid).await?.ok_or_else(not_found)?;
    if let Grant::Patient(p) = grant
        && p != found.patient
    {
        return Err(Outcome::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("{resource_type}/{id} is outside the token's patient compartment"),
        ));
    }
    drop(conn);
    state
        .audit
        .append(vec![
            AuditEntry::new(actor_kind(&principal), principal.actor(), Action::Read, entity)
                .entity(uuid)
                .origin(format!("fhir:GET {resource_type}/{id}")),
        ])
        .await?;
    let mut res = fhir_json(&found.body).into_response();
    let h = res.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&format!("W/\"{}\"", found.version)) {
        h.insert(header::ETAG, v);
    }
    if let Ok(v) = HeaderValue::from_str(&found.updated.format("%a, %d %b %Y %H:%M:%S GMT").to_string()) {
        h.insert(header::LAST_MODIFIED, v);
    }
    Ok(res)
}

/// Resource types in a patient's compartment (what `patient/` scopes reach).
const IN_PATIENT_COMPARTMENT: &[&str] = &["Patient", "ServiceRequest", "Task", "Observation"];

/// The canonical entity behind a served resource type.
fn entity_of(resource_type: &str) -> Result<&'static str, Outcome> {
    match resource_type {
        "Patient" => Ok("patient"),
        "ServiceRequest" => Ok("service_order"),
        "Task" => Ok("lab_job"),
        "Observation" => Ok("observation"),
        "Organization" => Ok("organization"),
        "Practitioner" => Ok("practitioner"),
        _ => Err(Outcome::new(
            StatusCode::NOT_FOUND,
            "not-supported",
            format!("resource type {resource_type} is not served (see /metadata)"),
        )),
    }
}

fn read_grant(principal: &Principal, resource_type: &str) -> Result<Grant, Outcome> {
    match principal.grant(resource_type, Access::Read) {
        Grant::None => Err(Outcome::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("the token's scopes do not allow reading {resource_type}"),
        )),
        g => Ok(g),
    }
}

fn actor_kind(principal: &Principal) -> ActorKind {
    if principal
        .scopes
        .iter()
        .any(|s| s.context == crate::auth::Context::System)
    {
        ActorKind::System
    } else {
        ActorKind::User
    }
}

async fn fetch(conn: &mut sqlx::PgConnection, resource_type: &str, id: Uuid) -> carehub_schema::Result<Option<Found>> {
    match resource_type {
        "Patient" => resources::patient(conn, id).await,
        "ServiceRequest" => resources::service_request(conn, id).await,
        "Observation" => resources::observation(conn, id).await,
        "Organization" => resources::organization(conn, id).await,
        "Practitioner" => resources::practitioner(conn, id).await,
        _ => resources::task(conn, id).await,
    }
}

/// `GET /<type>?…`: a searchset Bundle; each resource returned is audited.
async fn search(
    State(state): State<AppState>,
    Path(resource_type): Path<String>,
    Query(params): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Result<Response, Outcome> {
    negotiate(&headers)?;
    let principal = authenticate(&state, &headers)?;
    let entity = entity_of(&resource_type)?;
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
    let mut ids: Vec<(Uuid,)> = search.query(compartment).build_query_as().fetch_all(&mut *conn).await?;
    let more = ids.len() as i64 > search.count;
    ids.truncate(search.count as usize);
    let base = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(|h| format!("http://{h}"))
        .unwrap_or_default();
    let mut entries = Vec::with_capacity(ids.len());
    let mut audit = Vec::with_capacity(ids.len());
    // Each resource returned is a read of its own: an entry and an audit entry.
    let mut add = |ty: &str, entity: &'static str, id: Uuid, found: Found, mode: &str| {
        audit.push(
            AuditEntry::new(actor_kind(&principal), principal.actor(), Action::Read, entity)
                .entity(id)
                .origin(format!("fhir:GET {resource_type}?")),
        );
        entries.push(json!({
            "fullUrl": format!("{base}/{ty}/{id}"),
            "resource": found.body,
            "search": { "mode": mode },
        }));
    };
    // The matches' bodies, kept only when `_include` follows their references.
    let mut matches = Vec::new();
    for (id,) in ids {
        let Some(found) = fetch(&mut conn, &resource_type, id).await? else {
            continue; // deleted between the two queries
        };
        if !search.include.is_empty() {
            matches.push(found.body.clone());
        }
        add(&resource_type, entity, id, found, "match");
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
            let (Ok(id), Ok(entity)) = (Uuid::parse_str(id), entity_of(ty)) else {
                continue;
            };
            if !included.insert(reference.clone()) {
                continue;
            }
            let reach = principal.grant(ty, Access::Read);
            let Some(found) = fetch(&mut conn, ty, id).await? else {
                continue;
            };
            let allowed = match reach {
                Grant::All => true,
                Grant::Patient(p) => p == found.patient,
                Grant::None => false,
            };
            if allowed {
                add(ty, entity, id, found, "include");
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
    let bundle = json!({
        "resourceType": "Bundle",
        "type": "searchset",
        "link": links,
        "entry": entries,
    });
    Ok(fhir_json(&bundle).into_response())
}

/// `GET /AuditEvent/<seq>`: one audit entry; the look is audited too.
async fn audit_event(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Outcome> {
    negotiate(&headers)?;
    let principal = authenticate(&state, &headers)?;
    audit_grant(&principal)?;
    let not_found = || {
        Outcome::new(
            StatusCode::NOT_FOUND,
            "not-found",
            format!("AuditEvent/{id} is not known"),
        )
    };
    let seq: i64 = id.parse().map_err(|_| not_found())?;
    let row: Option<carehub_schema::audit::AuditRow> = sqlx::query_as("SELECT * FROM audit_log WHERE seq = $1")
        .bind(seq)
        .fetch_optional(&state.pool)
        .await?;
    let row = row.ok_or_else(not_found)?;
    state
        .audit
        .append(vec![
            AuditEntry::new(actor_kind(&principal), principal.actor(), Action::Read, "audit_log")
                .entity(seq)
                .origin(format!("fhir:GET AuditEvent/{seq}")),
        ])
        .await?;
    Ok(fhir_json(&resources::audit_event(&row)).into_response())
}

/// `GET /AuditEvent?entity=<Type>/<id>&agent=<actor>&_count=n`: newest first.
async fn audit_events(
    State(state): State<AppState>,
    Query(params): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Result<Response, Outcome> {
    negotiate(&headers)?;
    let principal = authenticate(&state, &headers)?;
    audit_grant(&principal)?;
    let mut q = sqlx::QueryBuilder::<sqlx::Postgres>::new("SELECT * FROM audit_log WHERE true");
    let mut count = crate::search::DEFAULT_COUNT;
    for (name, value) in &params {
        match name.as_str() {
            "entity" => {
                let (ty, id) = value
                    .split_once('/')
                    .and_then(|(t, i)| resources::entity_type_of(t).map(|e| (e, i)))
                    .ok_or_else(|| {
                        Outcome::new(
                            StatusCode::BAD_REQUEST,
                            "invalid",
                            format!("entity {value:?} is not a reference to a served type"),
                        )
                    })?;
                q.push(" AND entity_type = ")
                    .push_bind(ty)
                    .push(" AND entity_id = ")
                    .push_bind(id.to_owned());
            }
            "agent" => {
                q.push(" AND actor_id = ").push_bind(value.clone());
            }
            "_count" => {
                count = value
                    .parse::<i64>()
                    .map_err(|_| {
                        Outcome::new(
                            StatusCode::BAD_REQUEST,
                            "invalid",
                            format!("_count {value:?} is not a number"),
                        )
                    })?
                    .clamp(0, crate::search::MAX_COUNT);
            }
            other => {
                return Err(Outcome::new(
                    StatusCode::BAD_REQUEST,
                    "invalid",
                    format!("search parameter {other:?} is not supported on AuditEvent (entity, agent, _count)"),
                ));
            }
        }
    }
    q.push(" ORDER BY seq DESC LIMIT ").push_bind(count);
    let rows: Vec<carehub_schema::audit::AuditRow> = q.build_query_as().fetch_all(&state.pool).await?;
    state
        .audit
        .append(
            rows.iter()
                .map(|r| {
                    AuditEntry::new(actor_kind(&principal), principal.actor(), Action::Read, "audit_log")
                        .entity(r.seq)
                        .origin("fhir:GET AuditEvent?")
                })
                .collect(),
        )
        .await?;
    let bundle = json!({
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": rows.iter().map(|r| json!({ "resource": resources::audit_event(r), "search": { "mode": "match" } })).collect::<Vec<_>>(),
    });
    Ok(fhir_json(&bundle).into_response())
}

/// Reading the trail needs AuditEvent read access for all patients.
fn audit_grant(principal: &Principal) -> Result<(), Outcome> {
    match principal.grant("AuditEvent", Access::Read) {
        Grant::All => Ok(()),
        _ => Err(Outcome::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "the token's scopes do not allow reading AuditEvent",
        )),
    }
}

async fn unsupported() -> Outcome {
    Outcome::new(
        StatusCode::NOT_FOUND,
        "not-supported",
        "no such interaction (see /metadata for what is served)",
    )
}
