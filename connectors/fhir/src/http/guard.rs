//! The FHIR endpoint's HTTP guard: the connector kit's limits
//! ([`carehub_connector_kit::http`]) with FHIR's error shape (every refusal an
//! OperationOutcome, the ones axum's extractors and the router make
//! included) and FHIR's `_format` rule.

use axum::extract::Request;
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use carehub_connector_kit::http::ErrorShape;
pub use carehub_connector_kit::http::{HttpLimits, serve};

use crate::outcome::Outcome;

/// Refusals as OperationOutcomes.
#[derive(Debug, Clone, Copy, Default)]
pub struct FhirErrors;

impl ErrorShape for FhirErrors {
    fn refuse(&self, status: StatusCode, diagnostics: String) -> Response {
        Outcome::new(status, issue_code(status), diagnostics).into_response()
    }

    fn is_shaped(&self, res: &Response) -> bool {
        res.headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/fhir+json"))
    }
}

/// Wraps `router` with the kit's request checks, FHIR's error shape, the
/// `_format` rule and the endpoint's internal events.
pub fn protect(router: axum::Router, limits: &HttpLimits) -> axum::Router {
    let router = router
        .layer(axum::middleware::from_fn(format_check))
        .layer(axum::middleware::from_fn(observe));
    carehub_connector_kit::http::protect(router, limits, FhirErrors)
}

/// The FHIR interaction a request is (bounded: a metric label).
fn interaction(method: &axum::http::Method, path: &str) -> &'static str {
    use axum::http::Method;
    let segments: Vec<&str> = path.trim_matches('/').split('/').filter(|s| !s.is_empty()).collect();
    match (method, segments.as_slice()) {
        (&Method::GET, ["metadata"]) => "capabilities",
        (&Method::POST, []) => "batch-transaction",
        (&Method::POST, ["$convert-hl7v2"]) => "convert-hl7v2",
        (&Method::GET, [_]) => "search-type",
        (&Method::GET, [_, "_history"] | [_, _, "_history"]) => "history",
        (&Method::GET, [_, _, "_history", _]) => "vread",
        (&Method::GET, [_, _]) => "read",
        (&Method::POST, [_]) => "create",
        (&Method::PUT, [_, _]) => "update",
        (&Method::DELETE, [_, _]) => "delete",
        _ => "other",
    }
}

/// Each request is a `MessageReceived` of its interaction; an answer the
/// endpoint failed to give (5xx) a `ComponentError`.
async fn observe(req: Request, next: Next) -> Response {
    use carehub_core::internal_events::{ComponentError, MessageReceived, Stage};
    let kind = interaction(req.method(), req.uri().path());
    MessageReceived {
        connector: crate::http::CONNECTOR,
        message_type: kind,
    }
    .emit();
    let res = next.run(req).await;
    if res.status().is_server_error() {
        ComponentError {
            component: crate::http::CONNECTOR,
            stage: Stage::Processing,
            error_code: if res.status() == StatusCode::SERVICE_UNAVAILABLE {
                "store_unavailable"
            } else {
                "internal"
            },
            error: &res.status(),
        }
        .emit();
    }
    res
}

/// The FHIR issue type for an HTTP status that the router or an extractor
/// produced without an OperationOutcome.
fn issue_code(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => "login",
        403 => "forbidden",
        404 => "not-found",
        405 | 406 | 415 => "not-supported",
        408 => "timeout",
        413 | 414 | 431 => "too-costly",
        429 => "throttled",
        s if s >= 500 => "exception",
        _ => "invalid",
    }
}

async fn format_check(req: Request, next: Next) -> Response {
    // JSON is the only format served: `_format` asking for another is 406,
    // never a JSON answer with 200 (hardening item 17).
    if let Some(query) = req.uri().query()
        && let Some(format) = query
            .split('&')
            .filter_map(|p| p.split_once('='))
            .find(|(k, _)| *k == "_format")
            .map(|(_, v)| v)
    {
        let format = percent_encoding::percent_decode_str(format).decode_utf8_lossy();
        if !matches!(format.as_ref(), "json" | "application/json" | "application/fhir+json") {
            return FhirErrors.refuse(
                StatusCode::NOT_ACCEPTABLE,
                "only JSON is served (_format=json)".to_owned(),
            );
        }
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Method;

    #[test]
    fn each_request_is_one_of_a_few_interactions() {
        assert_eq!(interaction(&Method::GET, "/Patient/123"), "read");
        assert_eq!(interaction(&Method::GET, "/Patient"), "search-type");
        assert_eq!(interaction(&Method::GET, "/Patient/1/_history/2"), "vread");
        assert_eq!(interaction(&Method::PUT, "/Task/1"), "update");
        assert_eq!(interaction(&Method::POST, "/"), "batch-transaction");
        assert_eq!(interaction(&Method::PATCH, "/a/b/c/d/e"), "other");
    }
}
