//! Counters, the report of a run, the merge of worker reports, and the text
//! rendering.
//!
//! A process (the only one, or one worker of several) ends with a
//! [`WorkerOutput`]: plain counts, latency histograms as `(value, count)`
//! pairs, node and error tallies. [`finish`] merges any number of them into
//! the [`Report`] — sums, merged histograms, percentiles, rates — so one
//! process and N workers go through the same code.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::mix::KindCounts;
use crate::plan::{Plan, Scenario};
use crate::stats::{self, Summary, fmt_ms, group_thousands};

macro_rules! tally {
    ($( $(#[$doc:meta])* $name:ident ),* $(,)?) => {
        /// The counts of a run (or of one worker's share of it).
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
        pub struct Tally {
            $( $(#[$doc])* pub $name: u64, )*
        }

        impl Tally {
            /// Adds `other`'s counts to these.
            pub fn add(&mut self, other: &Tally) {
                $( self.$name += other.$name; )*
            }
        }

        /// Live counters shared by the connection tasks of one process.
        #[derive(Debug, Default)]
        pub struct Counters {
            $( pub $name: AtomicU64, )*
        }

        impl Counters {
            pub fn snapshot(&self) -> Tally {
                Tally { $( $name: self.$name.load(Ordering::Relaxed), )* }
            }
        }
    };
}

tally! {
    /// Connections the run asked for.
    requested,
    /// Connections that were welcomed at least once.
    connected,
    /// Connections that were never welcomed.
    failed,
    /// Connections lost during the run (closed by the node, or broken).
    disconnected,
    /// Successful reconnections after a loss (`resume`).
    reconnects,
    /// Failed connection attempts, error replies and protocol errors.
    errors,
    /// Connections still open when the run stopped.
    active_at_end,
    /// Messages sent (a resend of the same message is not counted again).
    sent,
    /// Distinct messages acked (stored).
    acked,
    /// Sends answered with an error (rate_limited, unavailable, …).
    send_errors,
    /// Distinct deliveries of messages to members (live or from history).
    received,
    /// The same seq pushed twice on one live stream.
    duplicates,
    /// Seqs skipped on a live stream.
    seq_gaps,
    /// For each acked message, the members joined when it was acked.
    expected,
    /// Expected deliveries that never happened.
    lost,
    /// Deliveries of messages never acked (or after the member left).
    unexpected,
}

impl Counters {
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// What one process reports at the end of its share of a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkerOutput {
    pub tally: Tally,
    /// Send → ack latencies, µs, as (value, count).
    pub ack_us: Vec<(u64, u64)>,
    /// Send → receive latencies, µs, as (value, count).
    pub e2e_us: Vec<(u64, u64)>,
    /// Connections per node (`welcome.node` of each connection's last session).
    pub nodes: BTreeMap<String, u64>,
    pub error_kinds: BTreeMap<String, u64>,
    /// Sent, acked and received per operation type (`message`, `reply`,
    /// `edit`, `delete`, `react`).
    #[serde(default)]
    pub by_type: BTreeMap<String, KindCounts>,
    /// Unix µs of the first send and of the last delivery.
    pub first_send_us: Option<u64>,
    pub last_delivery_us: Option<u64>,
    pub ramp_s: f64,
    pub run_s: f64,
    pub drain_s: f64,
}

/// Latency percentiles, milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Latencies {
    /// Send → ack (the message is stored).
    pub ack: Summary,
    /// Send → receive, over every receiving member.
    pub e2e: Summary,
}

/// How long each phase took, seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Phases {
    pub ramp: f64,
    pub run: f64,
    pub drain: f64,
}

/// The report of a whole run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub scenario: Scenario,
    pub run_id: String,
    pub urls: Vec<String>,
    pub workers: usize,
    pub rooms: usize,
    pub members_per_room: usize,
    pub senders: usize,
    pub msg_interval_ms: u64,
    /// Messages per second the senders tried to send.
    pub offered_per_s: f64,
    pub ramp_up_s: f64,
    pub duration_s: f64,
    #[serde(flatten)]
    pub tally: Tally,
    pub latency_ms: Latencies,
    /// Acked messages per second of the run phase.
    pub acked_per_s: f64,
    /// Deliveries per second, from the first send to the last delivery.
    pub delivered_per_s: f64,
    pub nodes: BTreeMap<String, u64>,
    pub error_kinds: BTreeMap<String, u64>,
    /// `--mix` as run (`none`: plain messages only).
    pub mix: String,
    /// Sent, acked and received per operation type; the loss accounting
    /// (`expected`, `lost`, …) covers every type alike.
    pub by_type: BTreeMap<String, KindCounts>,
    pub phases_s: Phases,
}

fn add_map(into: &mut BTreeMap<String, u64>, from: &BTreeMap<String, u64>) {
    for (k, v) in from {
        *into.entry(k.clone()).or_default() += v;
    }
}

/// Merges the outputs of every process of a run into its report.
pub fn finish(plan: &Plan, outputs: &[WorkerOutput]) -> anyhow::Result<Report> {
    let mut tally = Tally::default();
    let mut ack = stats::histogram()?;
    let mut e2e = stats::histogram()?;
    let mut nodes = BTreeMap::new();
    let mut error_kinds = BTreeMap::new();
    let mut by_type: BTreeMap<String, KindCounts> = BTreeMap::new();
    let mut phases = Phases::default();
    let mut first_send: Option<u64> = None;
    let mut last_delivery: Option<u64> = None;
    for out in outputs {
        tally.add(&out.tally);
        stats::add_pairs(&mut ack, &out.ack_us);
        stats::add_pairs(&mut e2e, &out.e2e_us);
        add_map(&mut nodes, &out.nodes);
        add_map(&mut error_kinds, &out.error_kinds);
        for (kind, counts) in &out.by_type {
            by_type.entry(kind.clone()).or_default().add(counts);
        }
        phases.ramp = phases.ramp.max(out.ramp_s);
        phases.run = phases.run.max(out.run_s);
        phases.drain = phases.drain.max(out.drain_s);
        first_send = match (first_send, out.first_send_us) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        last_delivery = last_delivery.max(out.last_delivery_us);
    }
    let window_s = match (first_send, last_delivery) {
        (Some(a), Some(b)) if b > a => (b - a) as f64 / 1e6,
        _ => phases.run,
    };
    let per_s = |n: u64, secs: f64| {
        if secs > 0.0 {
            round1(n as f64 / secs)
        } else {
            0.0
        }
    };
    Ok(Report {
        scenario: plan.scenario,
        run_id: plan.run_id.clone(),
        urls: plan.targets.iter().map(|t| t.url.clone()).collect(),
        workers: plan.workers,
        rooms: plan.rooms,
        members_per_room: if plan.rooms == 0 {
            0
        } else {
            plan.connections.div_ceil(plan.rooms)
        },
        senders: plan.total_senders(),
        msg_interval_ms: plan.msg_interval.as_millis() as u64,
        offered_per_s: round1(plan.offered_rate()),
        ramp_up_s: plan.ramp_up.as_secs_f64(),
        duration_s: plan.duration.as_secs_f64(),
        tally,
        latency_ms: Latencies {
            ack: stats::summarize(&ack),
            e2e: stats::summarize(&e2e),
        },
        acked_per_s: per_s(tally.acked, phases.run),
        delivered_per_s: per_s(tally.received, window_s),
        nodes,
        error_kinds,
        mix: plan.mix.flag(),
        by_type,
        phases_s: phases,
    })
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

/// The report as a table for a terminal.
pub fn render(r: &Report) -> String {
    let n = group_thousands;
    let mut s = String::new();
    let scenario = match r.scenario {
        Scenario::Hold => "hold",
        Scenario::Chat => "chat",
        Scenario::Resume => "resume",
    };
    let _ = writeln!(
        s,
        "PARLEY BENCH  {scenario}  {} connections, {} s run (run {})",
        n(r.tally.requested),
        r.duration_s,
        r.run_id
    );
    let _ = writeln!(s, "{}", "─".repeat(60));
    let _ = writeln!(s, "Connections");
    let t = &r.tally;
    for (label, v) in [
        ("connected", t.connected),
        ("failed", t.failed),
        ("disconnected", t.disconnected),
        ("reconnects", t.reconnects),
        ("errors", t.errors),
        ("open at end", t.active_at_end),
    ] {
        let _ = writeln!(s, "  {label:<14}{:>14}", n(v));
    }
    if r.scenario.has_rooms() {
        let _ = writeln!(
            s,
            "Messages  ({} rooms × ≤{} members, {} senders every {} ms = {}/s offered)",
            r.rooms, r.members_per_room, r.senders, r.msg_interval_ms, r.offered_per_s
        );
        for (label, v) in [
            ("sent", t.sent),
            ("acked", t.acked),
            ("send errors", t.send_errors),
            ("expected", t.expected),
            ("received", t.received),
            ("lost", t.lost),
            ("unexpected", t.unexpected),
            ("duplicates", t.duplicates),
            ("seq gaps", t.seq_gaps),
        ] {
            let _ = writeln!(s, "  {label:<14}{:>14}", n(v));
        }
        let _ = writeln!(
            s,
            "  {:<14}{:>14}\n  {:<14}{:>14}",
            "acked/s",
            n(r.acked_per_s.round() as u64),
            "delivered/s",
            n(r.delivered_per_s.round() as u64)
        );
        if !r.by_type.is_empty() {
            let _ = writeln!(s, "By type  (mix {})", r.mix);
            let _ = writeln!(
                s,
                "  {:<14}{:>14} {:>10} {:>12}",
                "", "sent", "acked", "received"
            );
            for (kind, c) in &r.by_type {
                let _ = writeln!(
                    s,
                    "  {kind:<14}{:>14} {:>10} {:>12}",
                    n(c.sent),
                    n(c.acked),
                    n(c.received)
                );
            }
        }
        let _ = writeln!(
            s,
            "Latency (ms)  {:>8} {:>8} {:>8} {:>8} {:>8}",
            "p50", "p90", "p99", "p99.9", "max"
        );
        for (label, l) in [
            ("send→ack", r.latency_ms.ack),
            ("end-to-end", r.latency_ms.e2e),
        ] {
            let _ = writeln!(
                s,
                "  {label:<12}{:>8} {:>8} {:>8} {:>8} {:>8}",
                fmt_ms(l.p50),
                fmt_ms(l.p90),
                fmt_ms(l.p99),
                fmt_ms(l.p999),
                fmt_ms(l.max)
            );
        }
    }
    let _ = writeln!(s, "Nodes");
    if r.nodes.is_empty() {
        let _ = writeln!(s, "  (none)");
    }
    for (node, count) in &r.nodes {
        let _ = writeln!(s, "  {node:<26}{:>8}", n(*count));
    }
    if !r.error_kinds.is_empty() {
        let _ = writeln!(s, "Errors");
        for (kind, count) in &r.error_kinds {
            let _ = writeln!(s, "  {:>8}  {kind}", n(*count));
        }
    }
    let _ = writeln!(
        s,
        "Phases: ramp {:.1} s, run {:.1} s, drain {:.1} s",
        r.phases_s.ramp, r.phases_s.run, r.phases_s.drain
    );
    s
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::plan::resolve;

    fn plan() -> Plan {
        Plan {
            scenario: Scenario::Chat,
            connections: 200,
            rooms: 10,
            senders: 0.5,
            targets: vec![resolve("ws://127.0.0.1:1/ws").unwrap()],
            source_ips: vec![],
            workers: 2,
            worker_index: None,
            run_id: "00000001".into(),
            ramp_up: Duration::from_secs(1),
            duration: Duration::from_secs(10),
            msg_interval: Duration::from_millis(1000),
            msg_size: 64,
            mix: crate::mix::Mix::default(),
            drain: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            threads: 1,
        }
    }

    fn output(acked: u64, lat_us: u64, node: &str) -> WorkerOutput {
        WorkerOutput {
            tally: Tally {
                requested: 100,
                connected: 100,
                acked,
                expected: acked * 20,
                received: acked * 20,
                ..Tally::default()
            },
            ack_us: vec![(lat_us, acked)],
            e2e_us: vec![(lat_us * 2, acked * 20)],
            nodes: BTreeMap::from([(node.to_string(), 100)]),
            error_kinds: BTreeMap::from([("closed: 4408".to_string(), 1)]),
            by_type: BTreeMap::from([(
                "edit".to_string(),
                KindCounts {
                    sent: 1,
                    acked: 1,
                    received: 20,
                },
            )]),
            first_send_us: Some(1_000_000),
            last_delivery_us: Some(11_000_000),
            ramp_s: 1.0,
            run_s: 10.0,
            drain_s: 0.5,
        }
    }

    #[test]
    fn worker_outputs_merge_into_one_report() {
        let a = output(500, 1000, "node-a");
        let b = output(500, 3000, "node-b");
        let r = finish(&plan(), &[a, b]).unwrap();
        assert_eq!(r.tally.requested, 200);
        assert_eq!(r.tally.acked, 1000);
        assert_eq!(r.tally.expected, r.tally.received);
        assert_eq!(r.latency_ms.ack.count, 1000);
        assert!(
            (r.latency_ms.ack.p50 - 1.0).abs() < 0.01,
            "{:?}",
            r.latency_ms
        );
        assert!(
            (r.latency_ms.ack.p99 - 3.0).abs() < 0.01,
            "{:?}",
            r.latency_ms
        );
        assert_eq!(r.nodes.len(), 2);
        assert_eq!(r.error_kinds["closed: 4408"], 2);
        assert_eq!(r.acked_per_s, 100.0);
        assert_eq!(r.delivered_per_s, 2000.0);
        assert_eq!(r.senders, 100);
        assert_eq!(r.offered_per_s, 100.0);
        assert_eq!(r.by_type["edit"].received, 40);
        assert_eq!(r.mix, "none");
        assert!(render(&r).contains("By type"));
    }

    #[test]
    fn the_json_report_is_flat_for_its_counts() {
        let r = finish(&plan(), &[output(10, 100, "n")]).unwrap();
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["lost"], 0);
        assert_eq!(v["expected"], 200);
        assert_eq!(v["scenario"], "chat");
        assert!(v["latency_ms"]["e2e"]["p99"].is_number());
        let text = render(&r);
        assert!(text.contains("lost"), "{text}");
        assert!(text.contains("end-to-end"), "{text}");
    }

    #[test]
    fn worker_output_survives_json() {
        let o = output(7, 123, "n");
        let back: WorkerOutput = serde_json::from_str(&serde_json::to_string(&o).unwrap()).unwrap();
        assert_eq!(back, o);
    }

    #[test]
    fn tallies_add() {
        let mut a = Tally {
            lost: 1,
            sent: 2,
            ..Tally::default()
        };
        a.add(&a.clone());
        assert_eq!((a.lost, a.sent), (2, 4));
        let c = Counters::default();
        Counters::bump(&c.errors);
        assert_eq!(c.snapshot().errors, 1);
    }
}
