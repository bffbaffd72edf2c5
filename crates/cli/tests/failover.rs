//! Losing a PostgreSQL server (issue 17): a fleet on a primary with a
//! synchronous standby — real ones, Debian's PostgreSQL, `pg_basebackup -R`
//! — whose nodes are given both hosts in one libpq multi-host URL.
//!
//! - The primary is killed (SIGKILL, like a lost machine) under the
//!   `resume` load of `parley bench`, the standby is promoted: the nodes
//!   find it, sends in the window are refused `unavailable` and resent with
//!   their nonce, and the run ends exactly once — nothing acked is lost,
//!   nothing is stored or delivered twice. The test prints the failover
//!   window and the refusals (docs/operations.md, "Losing a database
//!   server").
//! - The standby dies: the primary acks nothing until a synchronous standby
//!   confirms again — an ack means the commit is on two servers.
//! - The primary is cut off, not killed (SIGSTOP: its connections stay open
//!   and silent, as in a network partition) while a commit runs on it: the
//!   node abandons that commit once it has switched to the promoted
//!   standby, instead of waiting for TCP to give up (minutes).

#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

use std::time::{Duration, Instant};

use parley_client::{Client, ClientConfig, Event, http};
use parley_testkit::report_count as n;
use parley_testkit::services::Postgres;
use parley_testkit::{Fleet, eventually, fetch_all, metric, token};
use tokio::sync::mpsc::UnboundedReceiver;

const BIN: &str = env!("CARGO_BIN_EXE_parley");

/// Room for the bench's send rate.
const NODE_ENV: &[(&str, &str)] = &[("PARLEY_SEND_RATE", "1000")];

fn bench_command(urls: &[String], args: &[&str]) -> tokio::process::Command {
    let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
    parley_testkit::bench_command(BIN, &urls, args)
}

/// The sum of a metric over the nodes.
async fn fleet_metric(fleet: &Fleet, name: &str) -> f64 {
    let mut sum = 0.0;
    for node in &fleet.nodes {
        sum += metric(&node.http(), name).await.unwrap_or(0.0);
    }
    sum
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_killed_standby_promoted_resume_load_ends_exactly_once() {
    const CONNECTIONS: usize = 60;
    let mut fleet = Fleet::start_replicated(BIN, 3, NODE_ENV).await;
    let urls = fleet.ws_urls();
    let bench = bench_command(
        &urls,
        &[
            "--scenario",
            "resume",
            "--connections",
            &CONNECTIONS.to_string(),
            "--rooms",
            "6",
            "--ramp-up",
            "1",
            "--duration",
            "12",
            "--msg-interval",
            "200",
            "--drain",
            "30",
        ],
    )
    .spawn()
    .expect("bench starts");

    // Mid-run: every connection up and messages being stored.
    eventually(
        "all bench connections up and messages stored",
        Duration::from_secs(20),
        || async {
            let connections = fleet_metric(&fleet, "parley_connections").await;
            let stored = fleet_metric(&fleet, "parley_messages_stored_total").await;
            (connections == CONNECTIONS as f64 && stored > 100.0).then_some(())
        },
    )
    .await;

    // Lose the primary; promote the standby, as an operator (or Patroni,
    // CloudNativePG) does. Blocking calls: block this worker thread,
    // keeping the fleet borrowed.
    let killed_at = Instant::now();
    tokio::task::block_in_place(|| fleet.postgres.kill9());
    // From here on, a commit a node counts as stored went to the new primary.
    let mut stored_at_kill = Vec::new();
    for node in &fleet.nodes {
        stored_at_kill.push(
            metric(&node.http(), "parley_messages_stored_total")
                .await
                .unwrap_or(0.0),
        );
    }
    let standby = fleet.standby.as_ref().expect("a standby");
    tokio::task::block_in_place(|| standby.promote());
    let promoted_after = killed_at.elapsed();

    // The failover window of each node: until it stores again.
    let mut windows = Vec::new();
    for (i, node) in fleet.nodes.iter().enumerate() {
        let what = format!("node {i} to store messages on the new primary");
        eventually(&what, Duration::from_secs(30), || async {
            let stored = metric(&node.http(), "parley_messages_stored_total").await;
            stored.is_some_and(|s| s > stored_at_kill[i]).then_some(())
        })
        .await;
        windows.push(killed_at.elapsed());
    }
    let window = windows.iter().max().copied().unwrap_or_default();

    let r = parley_testkit::bench_report(bench, Duration::from_secs(90)).await;
    let refused = r["error_kinds"]["send: unavailable"].as_u64().unwrap_or(0);
    let failed_batches = fleet_metric(&fleet, "parley_store_append_errors_total").await;
    eprintln!(
        "failover: standby promoted {:.2} s after the kill; every node storing again after {:.2} s \
         (per node: {:?}); sends refused with unavailable (then resent with their nonce): {refused}; \
         append batches failed: {failed_batches}; acked {} of {} sent; lost {}, duplicates {}, unexpected {}",
        promoted_after.as_secs_f64(),
        window.as_secs_f64(),
        windows
            .iter()
            .map(|w| format!("{:.2}s", w.as_secs_f64()))
            .collect::<Vec<_>>(),
        n(&r, "acked"),
        n(&r, "sent"),
        n(&r, "lost"),
        n(&r, "duplicates"),
        n(&r, "unexpected"),
    );

    // Exactly once: every acked message reached every member, none twice,
    // nothing arrived that was not acked, every send was acked in the end.
    assert_eq!(n(&r, "lost"), 0, "{r}");
    assert_eq!(n(&r, "duplicates"), 0, "{r}");
    assert_eq!(n(&r, "seq_gaps"), 0, "{r}");
    assert_eq!(n(&r, "unexpected"), 0, "{r}");
    assert!(n(&r, "expected") > 0, "{r}");
    assert_eq!(n(&r, "received"), n(&r, "expected"), "{r}");
    assert_eq!(n(&r, "acked"), n(&r, "sent"), "{r}");
    assert_eq!(n(&r, "active_at_end"), CONNECTIONS as u64, "{r}");
    // The only refusals were the failover's.
    let kinds = r["error_kinds"].as_object().expect("error kinds");
    for (kind, count) in kinds {
        assert!(
            !kind.starts_with("send:") || kind == "send: unavailable",
            "sends refused with {kind} ({count}): {r}"
        );
    }
    assert_eq!(n(&r, "send_errors"), refused, "{r}");

    // The new primary holds each acked message once: the bench is the only
    // writer, and every send of it was acked.
    let (stored, distinct) = {
        let counts = tokio::task::block_in_place(|| {
            standby.psql("SELECT count(*), count(DISTINCT (room, sender, nonce)) FROM messages")
        });
        let (a, b) = counts.split_once('|').expect("two counts");
        (
            a.parse::<u64>().expect("count"),
            b.parse::<u64>().expect("count"),
        )
    };
    assert_eq!(stored, distinct, "a message was stored twice");
    assert_eq!(stored, n(&r, "acked"), "stored = acked, on the new primary");
    assert!(!tokio::task::block_in_place(|| standby.in_recovery()));
    // Readiness follows: every node is ready again, on the new primary.
    for node in &fleet.nodes {
        let r = http::request(&node.http(), "GET", "/readyz", None, None)
            .await
            .unwrap();
        assert_eq!(r.status, 200, "node {} ready after the failover", node.addr);
    }
}

async fn wait_joined(events: &mut UnboundedReceiver<Event>) {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), events.recv())
            .await
            .expect("joined in time")
        {
            Some(Event::Joined { .. }) => return,
            Some(_) => continue,
            None => panic!("client stopped"),
        }
    }
}

/// The next ack or refusal of a send, if one comes within `limit`.
async fn next_answer(events: &mut UnboundedReceiver<Event>, limit: Duration) -> Option<Event> {
    tokio::time::timeout(limit, async {
        loop {
            match events.recv().await {
                Some(e @ (Event::Acked { .. } | Event::SendFailed { .. })) => return e,
                Some(_) => continue,
                None => panic!("client stopped"),
            }
        }
    })
    .await
    .ok()
}

/// A fleet of `nodes` on a primary and a synchronous standby, and alice in
/// `room` with "one" acked (seq 1); then the standby is stopped (cleanly:
/// its walreceiver disconnects) and alice's "two" waits on the primary for
/// a synchronous standby — a commit in flight, its connection taken, its
/// query sent. Returns the fleet (without its standby), the stopped
/// standby, alice and her events.
async fn commit_waiting_for_the_standby(
    nodes: usize,
    room: &str,
) -> (Fleet, Postgres, Client, UnboundedReceiver<Event>) {
    let mut fleet = Fleet::start_replicated(BIN, nodes, &[]).await;
    let urls = fleet.ws_urls();
    let mut config = ClientConfig::new(urls[0].clone(), token("alice"));
    config.rooms = vec![room.to_string()];
    let (alice, mut events) = Client::start(config);
    wait_joined(&mut events).await;
    alice.send(room, "one");
    assert!(matches!(
        next_answer(&mut events, Duration::from_secs(10)).await,
        Some(Event::Acked { seq: 1, .. })
    ));
    let mut standby = fleet.standby.take().expect("a standby");
    tokio::task::block_in_place(|| standby.stop());
    alice.send(room, "two");
    let primary = &fleet.postgres;
    eventually(
        "the append to wait for a synchronous standby",
        Duration::from_secs(10),
        || async {
            let waiting = tokio::task::block_in_place(|| {
                primary.psql("SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep'")
            });
            (waiting != "0").then_some(())
        },
    )
    .await;
    (fleet, standby, alice, events)
}

/// The room holds alice's "one" and "two", each once, in that order.
async fn assert_one_then_two(http: &str, room: &str) {
    let texts: Vec<String> = fetch_all(http, room)
        .await
        .into_iter()
        .map(|m| m.text)
        .collect();
    assert_eq!(texts, ["one", "two"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_its_synchronous_standby_the_primary_acks_nothing() {
    // The standby goes away; the commit waits on the primary for a
    // synchronous standby …
    let (mut fleet, mut standby, alice, mut events) =
        commit_waiting_for_the_standby(2, "sync").await;
    // … and the node does not ack it meanwhile (nor refuse it: it is not
    // known to be lost). Readiness stays: reads still work.
    let answer = next_answer(&mut events, Duration::from_secs(3)).await;
    assert!(answer.is_none(), "answered without a standby: {answer:?}");
    let ready = http::request(&fleet.nodes[1].http(), "GET", "/readyz", None, None)
        .await
        .unwrap();
    eprintln!(
        "without the standby: the send waits for it (SyncRep); /readyz says {}",
        ready.status
    );

    // The standby returns and catches up: the waiting commit completes and
    // is acked, once.
    tokio::task::block_in_place(|| standby.restart());
    let answer = next_answer(&mut events, Duration::from_secs(30)).await;
    assert!(
        matches!(answer, Some(Event::Acked { seq: 2, .. })),
        "{answer:?}"
    );
    assert_one_then_two(&fleet.nodes[1].http(), "sync").await;
    alice.stop().await;
    fleet.standby = Some(standby);
}

/// A primary cut off mid-commit: once the node has found the promoted
/// standby, the commit hanging on the old primary is abandoned
/// (`unavailable`, nothing acked) and the client's resend is stored on the
/// new primary, once. Without that, the node's committer would wait on the
/// silent connection until TCP gave up — on loopback, for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_cut_off_mid_commit_does_not_hold_the_node() {
    // A commit in flight on the primary, waiting for its standby …
    let (mut fleet, mut standby, alice, mut events) =
        commit_waiting_for_the_standby(1, "cut").await;
    // … when the primary goes silent, and the standby (back, without that
    // commit) is promoted.
    fleet.postgres.freeze();
    tokio::task::block_in_place(|| standby.restart());
    let promoted_at = Instant::now();
    tokio::task::block_in_place(|| standby.promote());
    let answer = next_answer(&mut events, Duration::from_secs(60)).await;
    eprintln!(
        "primary cut off: the send was acked {:.1?} after the promotion",
        promoted_at.elapsed()
    );
    assert!(
        matches!(answer, Some(Event::Acked { seq: 2, .. })),
        "{answer:?}"
    );
    let refused = metric(&fleet.nodes[0].http(), "parley_store_append_errors_total")
        .await
        .unwrap_or(0.0);
    assert!(
        refused >= 1.0,
        "the hanging commit was abandoned, not completed"
    );
    assert_one_then_two(&fleet.nodes[0].http(), "cut").await;
    alice.stop().await;
    // A stopped server ignores every signal but SIGKILL.
    tokio::task::block_in_place(|| fleet.postgres.kill9());
    fleet.standby = Some(standby);
}
