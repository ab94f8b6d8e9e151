//! Bundles: building them with resources kept verbatim, and `POST /` of a
//! `batch` or `transaction` Bundle.
//!
//! A transaction is one database transaction: every entry or none. Entries
//! run in the order FHIR prescribes (DELETE, POST, PUT, GET); a POST whose
//! `fullUrl` is `urn:uuid:…` gets its id first, and every reference to that
//! urn in the Bundle's resources is rewritten to `<type>/<id>` before
//! anything is stored. The first failing entry rolls all back and is answered
//! with its OperationOutcome and status, naming the entry.
//! A batch runs each entry on its own (a savepoint each) and answers each.

use std::collections::HashMap;

use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use sqlx::PgConnection;

use carehub_schema::AuditEntry;

use crate::auth::Access;
use crate::outcome::{Outcome, Status};
use crate::raw::RawResource;
use crate::store::{self, Lookup, Writer, Written};

/// One `Bundle.entry` as sent.
#[derive(Debug, Default, Serialize)]
pub struct Entry {
    #[serde(rename = "fullUrl", skip_serializing_if = "Option::is_none")]
    pub full_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource: Option<Box<RawValue>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub search: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response: Option<Value>,
}

/// A stored body as an entry's resource, verbatim.
pub fn raw(body: String) -> Option<Box<RawValue>> {
    RawValue::from_string(body).ok()
}

#[derive(Serialize)]
struct BundleOut<'a> {
    #[serde(rename = "resourceType")]
    resource_type: &'static str,
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    total: Option<i64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    link: Vec<Value>,
    // FHIR has no empty arrays: a Bundle with nothing in it has no `entry`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    entry: Vec<Entry>,
}

/// The JSON text of a Bundle.
pub fn json(kind: &str, total: Option<i64>, link: Vec<Value>, entry: Vec<Entry>) -> String {
    serde_json::to_string(&BundleOut {
        resource_type: "Bundle",
        kind,
        total,
        link,
        entry,
    })
    .unwrap_or_default()
}

/// One entry of a batch or transaction, as read.
struct Request {
    index: usize,
    full_url: Option<String>,
    method: String,
    /// `<type>`, `<type>/<id>`.
    url: String,
    if_none_exist: Option<String>,
    if_match: Option<String>,
    /// The resource's JSON text, verbatim.
    resource: Option<String>,
    /// Why the entry cannot be run (a batch answers it; a transaction fails).
    problem: Option<String>,
}

fn bad(diagnostics: impl Into<String>) -> Outcome {
    Outcome::new(Status::BAD_REQUEST, "invalid", diagnostics)
}

/// Reads the Bundle: its type and entries.
fn read(text: &str) -> Result<(String, Vec<Request>), Outcome> {
    let bundle = RawResource::parse(text).map_err(|e| bad(format!("the body is not a JSON object: {e}")))?;
    if bundle.str("resourceType").as_deref() != Some("Bundle") {
        return Err(bad("POST / takes a Bundle"));
    }
    let kind = bundle.str("type").unwrap_or_default();
    if kind != "batch" && kind != "transaction" {
        return Err(bad(format!(
            "Bundle.type {kind:?}: POST / takes a batch or a transaction"
        )));
    }
    let entries: Vec<Box<RawValue>> = match bundle.get("entry") {
        None => Vec::new(),
        Some(e) => serde_json::from_str(e.get()).map_err(|e| bad(format!("Bundle.entry: {e}")))?,
    };
    let mut out = Vec::with_capacity(entries.len());
    for (index, e) in entries.iter().enumerate() {
        let entry = RawResource::parse(e.get()).map_err(|e| bad(format!("Bundle.entry[{index}]: {e}")))?;
        let request: Value = entry
            .get("request")
            .and_then(|r| serde_json::from_str(r.get()).ok())
            .unwrap_or(Value::Null);
        let text = |k: &str| request[k].as_str().map(str::to_owned);
        let (method, url) = (text("method"), text("url"));
        out.push(Request {
            index,
            full_url: entry.str("fullUrl"),
            problem: (method.is_none() || url.is_none())
                .then(|| "Bundle.entry.request with method and url is required".to_owned()),
            method: method.unwrap_or_default(),
            url: url.unwrap_or_default().trim_start_matches('/').to_owned(),
            if_none_exist: text("ifNoneExist"),
            if_match: text("ifMatch"),
            resource: entry.get("resource").map(|r| r.get().to_owned()),
        });
    }
    Ok((kind, out))
}

/// The order FHIR processes a transaction's entries in.
fn rank(method: &str) -> u8 {
    match method {
        "DELETE" => 0,
        "POST" => 1,
        "PUT" | "PATCH" => 2,
        _ => 3,
    }
}

/// `POST /` with a batch or transaction Bundle: the response Bundle's text,
/// or the OperationOutcome that rolled a transaction back.
/// The audit entries of what was done come with it, for the caller to append.
pub async fn process(conn: &mut PgConnection, w: &Writer, text: &str) -> Result<(String, Vec<AuditEntry>), Outcome> {
    let (kind, mut requests) = read(text)?;
    let transaction = kind == "transaction";
    // urn:uuid fullUrls of new resources → the ids they get.
    let mut assigned: HashMap<String, (String, String)> = HashMap::new();
    if transaction {
        for r in &requests {
            if r.method == "POST"
                && let Some(full) = r.full_url.as_deref().filter(|f| f.starts_with("urn:uuid:"))
            {
                assigned.insert(full.to_owned(), (r.url.clone(), uuid::Uuid::now_v7().to_string()));
            }
        }
        for r in &mut requests {
            if let Some(body) = &mut r.resource {
                for (urn, (ty, id)) in &assigned {
                    let quoted = format!("\"{urn}\"");
                    if body.contains(&quoted) {
                        *body = body.replace(&quoted, &format!("\"{ty}/{id}\""));
                    }
                }
            }
        }
        requests.sort_by_key(|r| (rank(&r.method), r.index));
    }
    let mut answers: Vec<(usize, Entry)> = Vec::with_capacity(requests.len());
    let mut audit = Vec::new();
    for r in &requests {
        let id = r
            .full_url
            .as_ref()
            .and_then(|f| assigned.get(f))
            .map(|(_, id)| id.clone());
        let answer = if transaction {
            let (answer, entry) = one(conn, w, r, id).await.map_err(|e| e.in_entry(r.index))?;
            audit.extend(entry);
            answer
        } else {
            let mut sp = sqlx::Connection::begin(&mut *conn).await?;
            match one(&mut sp, w, r, None).await {
                Ok((a, entry)) => {
                    sp.commit().await?;
                    audit.extend(entry);
                    a
                }
                Err(e) => {
                    sp.rollback().await?;
                    Entry {
                        response: Some(json!({
                            "status": status_line(e.status()),
                            "outcome": e.body(),
                        })),
                        ..Default::default()
                    }
                }
            }
        };
        answers.push((r.index, answer));
    }
    // The response lists entries in the request's order.
    answers.sort_by_key(|(i, _)| *i);
    let response = json(
        &format!("{kind}-response"),
        None,
        Vec::new(),
        answers.into_iter().map(|(_, e)| e).collect(),
    );
    Ok((response, audit))
}

fn status_line(status: Status) -> String {
    status.line()
}

fn written(mut w: Written) -> (Entry, Option<AuditEntry>) {
    let audit = w.audit.take();
    let entry = Entry {
        response: Some(json!({
            "status": status_line(w.status()),
            "location": w.location(),
            "etag": w.etag(),
            "lastModified": w.last_updated.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        })),
        ..Default::default()
    };
    (entry, audit)
}

/// One entry: a write, or a read (`GET <type>/<id>`); with its audit entry.
async fn one(
    conn: &mut PgConnection,
    w: &Writer,
    r: &Request,
    id: Option<String>,
) -> Result<(Entry, Option<AuditEntry>), Outcome> {
    if let Some(problem) = &r.problem {
        return Err(bad(problem.clone()));
    }
    let (ty, target) = match r
        .url
        .split_once('?')
        .map_or(r.url.as_str(), |(path, _)| path)
        .split_once('/')
    {
        Some((ty, id)) => (ty.to_owned(), Some(id.to_owned())),
        None => (r.url.clone(), None),
    };
    let body = || {
        r.resource
            .as_deref()
            .ok_or_else(|| bad(format!("{} {} needs a resource", r.method, r.url)))
    };
    match (r.method.as_str(), target) {
        ("POST", None) => Ok(written(
            store::create(conn, w, &ty, body()?, r.if_none_exist.as_deref(), id).await?,
        )),
        ("PUT", Some(target)) => Ok(written(
            store::update(conn, w, &ty, &target, body()?, r.if_match.as_deref()).await?,
        )),
        ("DELETE", Some(target)) => Ok(written(
            store::delete(conn, w, &ty, &target, r.if_match.as_deref()).await?,
        )),
        ("GET", Some(target)) if !r.url.contains('?') => {
            crate::policy::served_type(&ty)?;
            let reach = w.reach(&ty, Access::Read)?;
            match store::lookup(conn, &ty, &target).await? {
                Lookup::Found(s) => {
                    store::within(reach, s.patient.as_deref())?;
                    let entry = crate::policy::read_entry(&w.principal, &ty, &target, w.origin.clone());
                    let answer = Entry {
                        resource: raw(s.body),
                        response: Some(json!({ "status": "200 OK", "etag": format!("W/\"{}\"", s.version) })),
                        ..Default::default()
                    };
                    Ok((answer, Some(entry)))
                }
                Lookup::Gone => Err(crate::policy::gone(&ty, &target)),
                Lookup::Missing => Err(crate::policy::not_found(&ty, &target)),
            }
        }
        (method, _) => Err(bad(format!(
            "{method} {} is not supported in a Bundle (POST <type>, PUT/DELETE <type>/<id>, GET <type>/<id>)",
            r.url
        ))),
    }
}
