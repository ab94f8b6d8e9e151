//! The operations endpoint: liveness, readiness and Prometheus metrics.

use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use rdkafka::producer::FutureProducer;
use serde_json::json;
use sqlx::PgPool;

#[derive(Clone)]
pub struct OpsState {
    pub pool: PgPool,
    pub producer: FutureProducer,
    pub metrics: PrometheusHandle,
    /// The listeners and pipelines that must be up (bound, consuming, not stalled).
    pub health: carehub_core::Health,
    pub stall_limit: Duration,
}

pub fn router(state: OpsState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn healthz() -> impl IntoResponse {
    axum::Json(json!({ "status": "ok" }))
}

/// Ready only when PostgreSQL and the broker both answer now, every enabled
/// listener is bound and every pipeline is consuming, none stalled longer
/// than `[pipelines.retry] stall_after_secs`.
async fn readyz(State(state): State<OpsState>) -> impl IntoResponse {
    let timeout = Duration::from_secs(1);
    let (postgres, kafka) = tokio::join!(
        carehub_schema::db::reachable(&state.pool, timeout),
        carehub_kafka::broker_reachable(&state.producer, timeout)
    );
    let (components_ready, components) = state.health.report(state.stall_limit);
    let ready = postgres && kafka && components_ready;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        axum::Json(json!({ "ready": ready, "postgres": postgres, "kafka": kafka, "components": components })),
    )
}

async fn metrics(State(state): State<OpsState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}
