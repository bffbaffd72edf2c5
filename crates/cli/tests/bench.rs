//! `parley bench` end to end: a real node (`parley serve` child process) and
//! the real `parley bench --json` as a second process, checked on its report:
//! every acked message reached every member, exactly once.

#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

use std::time::Duration;

use parley_testkit::report_count as n;
use parley_testkit::{NodeProcess, eventually, metric};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_parley");

/// Node settings for these tests: room for the bench's send rate, and a
/// short drain so a SIGTERM finishes quickly.
const NODE_ENV: &[(&str, &str)] = &[
    ("PARLEY_SEND_RATE", "1000"),
    ("PARLEY_DRAIN_GRACE", "200ms"),
    ("PARLEY_DRAIN_SPREAD", "500ms"),
    ("PARLEY_DRAIN_TIMEOUT", "5s"),
];

fn bench_command(url: &str, args: &[&str]) -> tokio::process::Command {
    parley_testkit::bench_command(BIN, &[url], args)
}

/// Waits for a bench process and parses its one JSON report.
async fn report_of(child: tokio::process::Child) -> Value {
    report_within(child, Duration::from_secs(50)).await
}

async fn report_within(child: tokio::process::Child, limit: Duration) -> Value {
    parley_testkit::bench_report(child, limit).await
}

async fn bench(url: &str, args: &[&str]) -> Value {
    let child = bench_command(url, args).spawn().expect("bench starts");
    report_of(child).await
}

/// The exactly-once checks every messaging run must pass.
fn assert_exact(r: &Value) {
    assert_eq!(n(r, "lost"), 0, "{r}");
    assert_eq!(n(r, "duplicates"), 0, "{r}");
    assert_eq!(n(r, "seq_gaps"), 0, "{r}");
    assert_eq!(n(r, "unexpected"), 0, "{r}");
    assert!(n(r, "expected") > 0, "{r}");
    assert_eq!(n(r, "received"), n(r, "expected"), "{r}");
    assert_eq!(n(r, "acked"), n(r, "sent"), "{r}");
    assert_eq!(n(r, "send_errors"), 0, "{r}");
}

#[tokio::test(flavor = "multi_thread")]
async fn chat_delivers_every_acked_message_to_every_member() {
    let node = NodeProcess::start(BIN, NODE_ENV).await;
    let r = bench(
        &node.ws_url(),
        &[
            "--connections",
            "200",
            "--rooms",
            "10",
            "--ramp-up",
            "1",
            "--duration",
            "5",
            "--msg-interval",
            "500",
        ],
    )
    .await;
    assert_eq!(r["scenario"], "chat");
    assert_eq!(n(&r, "requested"), 200);
    assert_eq!(n(&r, "connected"), 200, "{r}");
    assert_eq!(n(&r, "disconnected"), 0, "{r}");
    assert_eq!(n(&r, "errors"), 0, "{r}");
    assert_exact(&r);
    // 10 rooms of 20: every acked message is expected by 20 members.
    assert_eq!(n(&r, "expected"), n(&r, "acked") * 20, "{r}");
    // 200 senders at 2/s for 5 s.
    assert!(n(&r, "acked") >= 1_500, "{r}");
    let node_id = format!("node-{}", node.addr.port());
    assert_eq!(r["nodes"][&node_id], 200, "{r}");
    let e2e = &r["latency_ms"]["e2e"];
    assert_eq!(e2e["count"], n(&r, "received"), "{r}");
    assert!(e2e["p99"].as_f64().is_some_and(|p| p > 0.0), "{r}");
    assert!(
        r["latency_ms"]["ack"]["p50"]
            .as_f64()
            .is_some_and(|p| p > 0.0),
        "{r}"
    );
    assert!(
        r["delivered_per_s"].as_f64().is_some_and(|d| d > 0.0),
        "{r}"
    );
}

/// The CI load run: 2,000 connections in 20 rooms of 100 for 20 s (400
/// msgs/s, 40,000 deliveries/s) on the default embedded node. It must end
/// with every acked message delivered to every member exactly once; its
/// latencies are not checked here (a shared CI box), see docs/benchmarks.md.
#[tokio::test(flavor = "multi_thread")]
async fn two_thousand_connections_for_twenty_seconds_lose_nothing() {
    let node = NodeProcess::start(BIN, NODE_ENV).await;
    let child = bench_command(
        &node.ws_url(),
        &[
            "--connections",
            "2000",
            "--rooms",
            "20",
            "--ramp-up",
            "4",
            "--duration",
            "20",
            "--msg-interval",
            "5000",
            "--drain",
            "30",
        ],
    )
    .spawn()
    .expect("bench starts");
    let r = report_within(child, Duration::from_secs(120)).await;
    assert_eq!(n(&r, "connected"), 2000, "{r}");
    assert_eq!(n(&r, "errors"), 0, "{r}");
    assert_eq!(n(&r, "disconnected"), 0, "{r}");
    assert_exact(&r);
    assert_eq!(n(&r, "expected"), n(&r, "acked") * 100, "{r}");
    // 2,000 senders, one send per 5 s, for 20 s.
    assert!(n(&r, "acked") >= 6_000, "{r}");
}

#[tokio::test(flavor = "multi_thread")]
async fn hold_counts_idle_connections_per_node() {
    let node = NodeProcess::start(BIN, NODE_ENV).await;
    let r = bench(
        &node.ws_url(),
        &[
            "--scenario",
            "hold",
            "--connections",
            "300",
            "--ramp-up",
            "1",
            "--duration",
            "1",
            "--source-ips",
            "127.0.0.1-127.0.0.3",
        ],
    )
    .await;
    assert_eq!(r["scenario"], "hold");
    assert_eq!(n(&r, "connected"), 300, "{r}");
    assert_eq!(n(&r, "active_at_end"), 300, "{r}");
    assert_eq!(n(&r, "errors"), 0, "{r}");
    assert_eq!(n(&r, "sent"), 0, "{r}");
    let node_id = format!("node-{}", node.addr.port());
    assert_eq!(r["nodes"][&node_id], 300, "{r}");
}

#[tokio::test(flavor = "multi_thread")]
async fn workers_split_a_run_and_their_reports_merge() {
    let node = NodeProcess::start(BIN, NODE_ENV).await;
    let r = bench(
        &node.ws_url(),
        &[
            "--workers",
            "2",
            "--threads",
            "1",
            "--connections",
            "120",
            "--rooms",
            "6",
            "--senders",
            "0.5",
            "--ramp-up",
            "1",
            "--duration",
            "3",
            "--msg-interval",
            "400",
        ],
    )
    .await;
    assert_eq!(r["workers"], 2);
    assert_eq!(n(&r, "requested"), 120, "{r}");
    assert_eq!(n(&r, "connected"), 120, "{r}");
    assert_exact(&r);
    assert_eq!(n(&r, "expected"), n(&r, "acked") * 20, "{r}");
    // Latencies are merged too: one send→ack sample per acked message.
    assert_eq!(r["latency_ms"]["ack"]["count"], n(&r, "acked"), "{r}");
}

#[tokio::test(flavor = "multi_thread")]
async fn resume_loses_nothing_across_a_node_restart() {
    let mut node = NodeProcess::start(BIN, NODE_ENV).await;
    let bench = bench_command(
        &node.ws_url(),
        &[
            "--scenario",
            "resume",
            "--connections",
            "100",
            "--rooms",
            "10",
            "--ramp-up",
            "1",
            "--duration",
            "8",
            "--msg-interval",
            "250",
            "--drain",
            "20",
        ],
    )
    .spawn()
    .expect("bench starts");

    // Mid-run — every connection up and messages flowing — drain the node
    // (sessions closed with 1001, pending appends flushed), keep it down a
    // moment, and start it again on the same port and database.
    eventually(
        "all 100 bench connections up and messages stored",
        Duration::from_secs(15),
        || async {
            let connections = metric(&node.http(), "parley_connections").await;
            let stored = metric(&node.http(), "parley_messages_stored_total").await;
            (connections == Some(100.0) && stored.is_some_and(|n| n > 0.0)).then_some(())
        },
    )
    .await;
    node.signal("TERM");
    assert_eq!(node.wait_exit(Duration::from_secs(15)).await, Some(0));
    // Deliberate: the node stays down a moment, so that the clients' first
    // reconnection attempts fail and they must retry.
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Same port and database, so that the clients find the node again.
    let mut env = NODE_ENV.to_vec();
    env.push(("PARLEY_NODE_ID", "restarted"));
    let _restarted = NodeProcess::spawn_at(BIN, &node.dir, node.addr.port(), &env).await;

    let r = report_of(bench).await;
    assert_eq!(r["scenario"], "resume");
    assert_eq!(n(&r, "connected"), 100, "{r}");
    assert!(
        n(&r, "disconnected") >= 100,
        "every connection was drained: {r}"
    );
    assert!(n(&r, "reconnects") >= 100, "and came back: {r}");
    assert_eq!(n(&r, "active_at_end"), 100, "{r}");
    assert_exact(&r);
    assert_eq!(r["nodes"]["restarted"], 100, "{r}");
    assert!(
        r["error_kinds"]["closed: 1001"]
            .as_u64()
            .is_some_and(|c| c >= 100),
        "{r}"
    );
}

/// `--mix`: replies, edits, deletes and reactions besides messages. Every
/// acked event of every type reaches every member exactly once (the
/// accounting keys on (room, seq), whatever the type), and the report
/// counts each type.
#[tokio::test(flavor = "multi_thread")]
async fn a_mix_of_event_types_is_delivered_exactly_once() {
    let node = NodeProcess::start(BIN, NODE_ENV).await;
    let r = bench(
        &node.ws_url(),
        &[
            "--connections",
            "40",
            "--rooms",
            "4",
            "--ramp-up",
            "1",
            "--duration",
            "4",
            "--msg-interval",
            "100",
            "--mix",
            "edit=15,react=20,delete=10,reply=15",
        ],
    )
    .await;
    assert_eq!(n(&r, "connected"), 40, "{r}");
    assert_eq!(n(&r, "errors"), 0, "{r}");
    assert_exact(&r);
    // 4 rooms of 10: every acked event is expected by 10 members.
    assert_eq!(n(&r, "expected"), n(&r, "acked") * 10, "{r}");
    assert_eq!(r["mix"], "reply=15,edit=15,delete=10,react=20", "{r}");
    let by_type = &r["by_type"];
    let mut acked = 0;
    let mut received = 0;
    for kind in ["message", "reply", "edit", "delete", "react"] {
        let count = |field: &str| {
            by_type[kind][field]
                .as_u64()
                .unwrap_or_else(|| panic!("no {kind}.{field}: {r}"))
        };
        assert!(count("acked") > 0, "no {kind} acked: {r}");
        assert_eq!(count("acked"), count("sent"), "{kind}: {r}");
        assert_eq!(count("received"), count("acked") * 10, "{kind}: {r}");
        acked += count("acked");
        received += count("received");
    }
    assert_eq!(acked, n(&r, "acked"), "{r}");
    assert_eq!(received, n(&r, "received"), "{r}");
}
