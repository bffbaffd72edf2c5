//! `/healthz` (liveness), `/readyz` (readiness) and `/metrics`.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde_json::json;

use crate::node::Node;

/// 200 while the process runs and its runtime answers.
pub async fn healthz() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

/// 200 when the node can serve: not draining and its store answers. The bus
/// is deliberately not checked (invariant 8): a Redis blip must not take every
/// node out of the Service at once.
pub async fn readyz(State(node): State<Arc<Node>>) -> impl IntoResponse {
    if node.drain.is_draining() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "draining"})),
        );
    }
    match tokio::time::timeout(Duration::from_secs(2), node.store.ping()).await {
        Ok(Ok(())) => (
            StatusCode::OK,
            Json(json!({"status": "ready", "node": node.node_id})),
        ),
        Ok(Err(e)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "store unavailable", "error": e.to_string()})),
        ),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "store timeout"})),
        ),
    }
}

pub async fn metrics(State(node): State<Arc<Node>>) -> impl IntoResponse {
    metrics::gauge!("parley_draining").set(if node.drain.is_draining() { 1.0 } else { 0.0 });
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        node.metrics.render(),
    )
}
