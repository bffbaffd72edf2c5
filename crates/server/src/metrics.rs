//! Prometheus metrics: the recorder and the catalogue of metric names.
//!
//! Metrics are process-global (the `metrics` facade has one recorder per
//! process). Names, all prefixed `parley_`:
//! - `connections` (gauge), `connections_total`, `sessions_closed_total{code}`
//! - `rooms_active` (gauge): rooms with at least one local subscriber
//! - `messages_received_total` (sends accepted), `messages_stored_total`,
//!   `messages_delivered_total` (frames queued to sessions)
//! - `store_append_seconds`, `store_batch_size` (histograms, per group commit)
//! - `store_append_errors_total`, `queue_overflows_total`,
//!   `frames_rejected_total{reason}`, `rate_limited_total`
//! - `gap_fills_total`, `anti_entropy_repairs_total`
//! - `draining` (gauge, 1 while the node drains)

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

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
