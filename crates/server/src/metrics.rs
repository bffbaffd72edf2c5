//! Prometheus metrics: the recorder and the catalogue of metric names.
//!
//! Metrics are process-global (the `metrics` facade has one recorder per
//! process). Every name is prefixed `parley_`; the catalogue with their
//! meaning is the table in docs/operations.md, and a test below fails when a
//! metric used in the code is missing from it.

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
        "parley_store_rejected_total",
        "parley_sessions_expired_total",
        "parley_sessions_revoked_total",
        "parley_logins_throttled_total",
        "parley_ephemeral_dropped_total",
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

/// How often histogram samples are folded into their distributions.
const UPKEEP: std::time::Duration = std::time::Duration::from_secs(5);

/// Folds recorded histogram samples into their distributions every few
/// seconds, for as long as the runtime runs. The exporter keeps every sample
/// until it is folded, which otherwise happens only when /metrics is
/// scraped: a node nobody scrapes (a laptop, a fleet without Prometheus)
/// would keep one sample per commit batch forever.
pub fn spawn_upkeep(handle: PrometheusHandle) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(UPKEEP);
        loop {
            tick.tick().await;
            handle.run_upkeep();
        }
    });
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// The `parley_*` names passed to `metrics::{counter,gauge,histogram}!`
    /// in a source text.
    fn metric_names(source: &str) -> Vec<String> {
        let mut names = Vec::new();
        for macro_call in ["counter!(\"", "gauge!(\"", "histogram!(\""] {
            let mut rest = source;
            while let Some(at) = rest.find(macro_call) {
                rest = &rest[at + macro_call.len()..];
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if name.starts_with("parley_") {
                    names.push(name);
                }
            }
        }
        names
    }

    fn sources(dir: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).expect("read src dir") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                sources(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(std::fs::read_to_string(&path).expect("read source"));
            }
        }
    }

    #[test]
    fn every_metric_is_in_the_operations_catalogue() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut texts = Vec::new();
        sources(&root.join("src"), &mut texts);
        let mut names: Vec<String> = texts.iter().flat_map(|t| metric_names(t)).collect();
        names.sort();
        names.dedup();
        assert!(names.len() > 10, "found only {names:?}");
        let catalogue = std::fs::read_to_string(root.join("../../docs/operations.md"))
            .expect("read docs/operations.md");
        let missing: Vec<&String> = names
            .iter()
            .filter(|n| !catalogue.contains(n.as_str()))
            .collect();
        assert!(
            missing.is_empty(),
            "metrics missing from docs/operations.md: {missing:?}"
        );
    }

    #[test]
    fn finds_names_in_macro_calls() {
        // Built with concat! so that this file's own text holds no such call.
        let src = concat!(
            "metrics::counter",
            r#"!("parley_a_total").increment(1); gauge"#,
            r#"!("other"); metrics::histogram"#,
            r#"!("parley_b_seconds")"#
        );
        assert_eq!(
            metric_names(src),
            vec!["parley_a_total", "parley_b_seconds"]
        );
    }
}
