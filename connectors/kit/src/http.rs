//! What protects every HTTP listener of the hub (the FHIR endpoint, the
//! operations endpoint, webhooks) from hostile clients: a connection cap, a
//! deadline for the request head, a deadline for the whole request (body
//! included), limits on the URI, the headers and the body, and one error
//! shape per listener ([`ErrorShape`]): every refusal has it, the ones
//! axum's extractors and the router make included. A FHIR endpoint answers
//! OperationOutcomes; the others JSON ([`JsonErrors`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

/// Limits of an HTTP listener (`[fhir.http]` for the FHIR endpoint).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpLimits {
    /// Most connections served at once; more wait in the kernel's queue.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Seconds a client has to send a request's head (line and headers).
    #[serde(default = "default_header_timeout_secs")]
    pub header_timeout_secs: u64,
    /// Seconds a request may take, its body included; past it: 408.
    #[serde(default = "default_request_timeout_secs")]
    pub request_timeout_secs: u64,
    /// Largest request body in bytes; past it: 413.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// Longest request target (path and query) in bytes; past it: 414.
    #[serde(default = "default_max_uri_bytes")]
    pub max_uri_bytes: usize,
    /// Most bytes of request headers; past it: 431.
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: usize,
}

const fn default_max_connections() -> usize {
    512
}
const fn default_header_timeout_secs() -> u64 {
    10
}
const fn default_request_timeout_secs() -> u64 {
    30
}
const fn default_max_body_bytes() -> usize {
    2 * 1024 * 1024
}
const fn default_max_uri_bytes() -> usize {
    8 * 1024
}
const fn default_max_header_bytes() -> usize {
    16 * 1024
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_connections: default_max_connections(),
            header_timeout_secs: default_header_timeout_secs(),
            request_timeout_secs: default_request_timeout_secs(),
            max_body_bytes: default_max_body_bytes(),
            max_uri_bytes: default_max_uri_bytes(),
            max_header_bytes: default_max_header_bytes(),
        }
    }
}

/// How a listener's refusals look: its error body for a status, and how to
/// tell a response that already has it.
pub trait ErrorShape: Clone + Send + Sync + 'static {
    /// The listener's error response for `status`, saying `diagnostics`.
    fn refuse(&self, status: StatusCode, diagnostics: String) -> Response;
    /// Whether `res` is one of this listener's own error bodies.
    fn is_shaped(&self, res: &Response) -> bool;
}

/// Errors as `application/json`: `{"error": {"status": 413, "message": "…"}}`.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonErrors;

impl ErrorShape for JsonErrors {
    fn refuse(&self, status: StatusCode, diagnostics: String) -> Response {
        let body = serde_json::json!({ "error": { "status": status.as_u16(), "message": diagnostics } });
        (status, axum::Json(body)).into_response()
    }

    fn is_shaped(&self, res: &Response) -> bool {
        res.headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"))
    }
}

/// Wraps `router` with the request checks and the listener's one error shape.
pub fn protect<E: ErrorShape>(router: axum::Router, limits: &HttpLimits, shape: E) -> axum::Router {
    let guard = Arc::new((limits.clone(), shape));
    router
        .layer(axum::extract::DefaultBodyLimit::max(limits.max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(guard, check::<E>))
}

async fn check<E: ErrorShape>(State(guard): State<Arc<(HttpLimits, E)>>, req: Request, next: Next) -> Response {
    let (limits, shape) = (&guard.0, &guard.1);
    let refuse = |status, diagnostics| shape.refuse(status, diagnostics);
    let uri_len = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if uri_len > limits.max_uri_bytes {
        return refuse(
            StatusCode::URI_TOO_LONG,
            format!("the request target exceeds {} bytes", limits.max_uri_bytes),
        );
    }
    let header_bytes: usize = req.headers().iter().map(|(k, v)| k.as_str().len() + v.len() + 4).sum();
    if header_bytes > limits.max_header_bytes {
        return refuse(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!("the request headers exceed {} bytes", limits.max_header_bytes),
        );
    }
    let res = match tokio::time::timeout(Duration::from_secs(limits.request_timeout_secs.max(1)), next.run(req)).await {
        Ok(res) => res,
        Err(_) => {
            return refuse(
                StatusCode::REQUEST_TIMEOUT,
                "the request took too long to arrive or to answer".to_owned(),
            );
        }
    };
    shaped(res, shape).await
}

/// An error response without the listener's shape (axum's 413 for a body
/// over the limit, its 400 for a path or query that is not UTF-8, the
/// router's 405) gets it, with its status and headers kept. Its text is
/// axum's, which names the problem, never the content.
async fn shaped<E: ErrorShape>(res: Response, shape: &E) -> Response {
    let status = res.status();
    if status.as_u16() < 400 || shape.is_shaped(&res) {
        return res;
    }
    let (mut parts, body) = res.into_parts();
    let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let mut diagnostics = String::from_utf8_lossy(&text).trim().to_owned();
    if diagnostics.is_empty() {
        diagnostics = status.canonical_reason().unwrap_or("refused").to_owned();
    }
    let (new_parts, new_body) = shape.refuse(status, diagnostics).into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    for (k, v) in &new_parts.headers {
        parts.headers.insert(k, v.clone());
    }
    Response::from_parts(parts, new_body)
}

/// Serves `app` on `listener` with `limits`: at most `max_connections`
/// connections at once (the rest wait to be accepted), and a deadline for
/// each request head (hyper's header read timeout), until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    limits: &HttpLimits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto::Builder;
    use hyper_util::service::TowerToHyperService;

    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let header_timeout = Duration::from_secs(limits.header_timeout_secs.max(1));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let mut stop = stop_rx.clone();
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = stop.changed() => break,
        };
        let (stream, _peer): (tokio::net::TcpStream, SocketAddr) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "HTTP listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        let service = TowerToHyperService::new(app.clone());
        let mut stop = stop_rx.clone();
        connections.spawn(async move {
            let mut builder = Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout);
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = stop.changed() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.as_mut().await;
                }
            }
            drop(permit);
        });
        // Reap finished connections so the set does not only grow.
        while connections.try_join_next().is_some() {}
    }
    // Let the connections in hand finish their request (bounded by the request timeout).
    let _ = tokio::time::timeout(Duration::from_secs(limits.request_timeout_secs.max(1)), async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    Ok(())
}
