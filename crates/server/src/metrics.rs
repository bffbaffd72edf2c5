//! Prometheus metrics: the recorder and the catalogue of metric names.
//!
//! Metrics are process-global (the `metrics` facade has one recorder per
//! process). Names, all prefixed `parley_`:
//! - `connections` (gauge), `connections_total`, `sessions_closed_total{code}`
//! - `rooms_active` (gauge): rooms with at least one local subscriber
//! - `messages_received_total` (sends accepted), `messages_stored_total`,
//!   `messages_delivered_total` (frames queued to sessions)
//! - `store_append_seconds`, `store_batch_size` (histograms, per group commit)
//! - `store_append_errors_total`, `queue_overflows_total`, `heartbeat_timeouts_total`,
//!   `frames_rejected_total{reason}`, `rate_limited_total`
//! - `gap_fills_total`, `anti_entropy_repairs_total`
//! - `draining` (gauge, 1 while the node drains)
//! - `bus_connected` (gauge), `bus_reconnects_total`, `bus_publish_dropped_total` (fleet)
//! - `build_info{version,bus}` (always 1)

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Registers the node's metrics at zero, so that a fresh node already shows
/// them (dashboards, `increase()` alerts and the connections HPA need the
/// series to exist before the first event).
pub fn register_defaults(bus: &str) {
    for name in [
        "parley_connections_total",
        "parley_messages_received_total",
        "parley_messages_stored_total",
        "parley_messages_delivered_total",
        "parley_store_append_errors_total",
        "parley_queue_overflows_total",
        "parley_heartbeat_timeouts_total",
        "parley_rate_limited_total",
        "parley_gap_fills_total",
        "parley_anti_entropy_repairs_total",
    ] {
        metrics::counter!(name).increment(0);
    }
    for name in [
        "parley_connections",
        "parley_rooms_active",
        "parley_draining",
    ] {
        metrics::gauge!(name).set(0.0);
    }
    metrics::gauge!("parley_build_info", "version" => env!("CARGO_PKG_VERSION"), "bus" => bus.to_string()).set(1.0);
}

/// Installs the Prometheus recorder once per process and returns its handle.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Suffix("_seconds".to_string()),
                    &[
                        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                        5.0,
                    ],
                )
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("parley_store_batch_size".to_string()),
                        &[1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0],
                    )
                })
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics may be empty");
            }
            handle
        })
        .clone()
}
