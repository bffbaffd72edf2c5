//! `parley bench`: the load generator.
//!
//! Opens many WebSocket connections to one node or a fleet, puts them in
//! rooms, sends, and accounts for every message exactly: each acked message
//! must reach every member that was joined when it was acked. The report
//! (text, or one JSON object with `--json`) holds connection counts, message
//! counts with `lost`, duplicates and seq gaps, send→ack and end-to-end
//! latency percentiles from HDR histograms, delivered messages per second,
//! and the distribution of connections over nodes (`welcome.node`).
//!
//! Scenarios ([`plan::Scenario`]): `hold` (idle connections), `chat` (rooms
//! with senders), `resume` (chat that survives node restarts). `--mix`
//! ([`mix`]) makes a share of the operations replies, edits, deletes and
//! reactions: every one is a room event with its own `seq`, accounted for
//! exactly like a message, and the report counts them by type.
//!
//! Reading order: [`plan`] (who does what) → [`runner`] (phases of one
//! process) → [`conn`] (one connection) → [`accounting`] (loss) →
//! [`report`] (merge and rendering); [`workers`] splits a run over
//! processes past the per-process open-files limit.

pub mod accounting;
pub mod conn;
pub mod ips;
pub mod mix;
pub mod plan;
pub mod report;
pub mod runner;
pub mod shared;
pub mod stats;
pub mod wire;
pub mod workers;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use plan::{Plan, Scenario};

/// Options of `parley bench`. The load-shape flags are also the environment
/// variables load testers know: CONNECTIONS, RAMP_UP, DURATION, MSG_INTERVAL.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// What the connections do: hold (idle), chat (rooms with senders),
    /// resume (chat with auto-reconnect and resume, for node restarts).
    #[arg(long, value_enum, default_value = "chat")]
    pub scenario: Scenario,

    /// WebSocket URL of a node (`ws://host:port/ws`). Repeat or
    /// comma-separate for several; connections are spread round-robin.
    #[arg(
        long = "url",
        env = "PARLEY_BENCH_URL",
        value_delimiter = ',',
        default_value = "ws://127.0.0.1:8080/ws"
    )]
    pub urls: Vec<String>,

    /// Concurrent connections (each is its own user).
    #[arg(long, env = "CONNECTIONS", default_value_t = 10_000)]
    pub connections: usize,

    /// Seconds over which the connections are opened.
    #[arg(long, env = "RAMP_UP", default_value_t = 60.0, value_parser = seconds)]
    pub ramp_up: f64,

    /// Seconds the load is held (senders send) after the ramp.
    #[arg(long, env = "DURATION", default_value_t = 300.0, value_parser = seconds)]
    pub duration: f64,

    /// Milliseconds between two sends of one sending connection.
    #[arg(long, env = "MSG_INTERVAL", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub msg_interval: u64,

    /// Messages per second over the whole run, instead of --msg-interval:
    /// sets each sender's interval from the number of senders. A low, fixed
    /// rate on an idle node shows the latency floor (send→ack, delivery):
    /// e.g. `--connections 200 --rooms 2 --senders 0.05 --rate 50`.
    #[arg(long, conflicts_with = "msg_interval")]
    pub rate: Option<f64>,

    /// Rooms (default: connections / members-per-room).
    #[arg(long)]
    pub rooms: Option<usize>,

    /// Members per room, when --rooms is not given (default 100).
    #[arg(long)]
    pub members_per_room: Option<usize>,

    /// Share of each room's members that send, 0..1.
    #[arg(long, default_value_t = 1.0, value_parser = share)]
    pub senders: f64,

    /// Bytes of text per message (its header — send time, sender — included).
    #[arg(long, default_value_t = 100)]
    pub msg_size: usize,

    /// Share of the operations, in percent, that are other room events
    /// than plain messages: e.g. `edit=5,react=10,delete=1,reply=5`.
    /// Edits, deletes and reactions go to the sender's own messages
    /// (reactions toggle on and off), replies to the room's latest message.
    /// Every event counts in the loss accounting like a message.
    #[arg(long, default_value = "none", value_parser = mix::Mix::parse)]
    pub mix: mix::Mix,

    /// Source addresses to bind, e.g. 127.0.0.1-127.0.0.8 (each has ~28k
    /// ephemeral ports); connections use them round-robin.
    #[arg(long)]
    pub source_ips: Option<String>,

    /// Child processes to split the run over (each holds its share of the
    /// connections: one process may only open so many files).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=256))]
    pub workers: u64,

    /// The nodes' HS256 secret: the bench mints its users' tokens with it.
    #[arg(long, env = "PARLEY_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// Print one JSON object with the full report (and no progress bar).
    #[arg(long)]
    pub json: bool,

    /// Longest wait, in seconds after the run, for acks and deliveries in
    /// flight before what is missing counts as lost.
    #[arg(long, default_value_t = 10.0, value_parser = seconds)]
    pub drain: f64,

    /// Seconds a connection attempt (and a join) may take.
    #[arg(long, default_value_t = 10.0, value_parser = seconds)]
    pub connect_timeout: f64,

    /// Runtime threads of each bench process (default: one per core).
    #[arg(long)]
    pub threads: Option<usize>,

    /// Internal: the share this worker process runs.
    #[arg(long, hide = true)]
    pub worker_index: Option<usize>,

    /// Internal: the run id shared by the workers of one run.
    #[arg(long, hide = true)]
    pub run_id: Option<String>,
}

/// A non-negative number of seconds.
fn seconds(text: &str) -> Result<f64, String> {
    match text.trim().trim_end_matches('s').parse::<f64>() {
        Ok(v) if (0.0..1e7).contains(&v) => Ok(v),
        _ => Err(format!("{text:?} is not a number of seconds")),
    }
}

/// A share between 0 and 1.
fn share(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("{text:?} is not a share between 0 and 1")),
    }
}

/// Ephemeral ports of one source address towards one destination (Linux
/// default range 32768–60999), minus a margin for other sockets.
const PORTS_PER_ADDRESS: usize = 28_000;

/// Whether the connections fit in the ephemeral ports: without
/// `--source-ips`, ~28k per target address; with, ~28k per source address
/// (a bound socket's port cannot be shared across destinations).
pub fn check_ports(connections: usize, targets: usize, source_ips: usize) -> Result<(), String> {
    let (per, what) = if source_ips == 0 {
        (connections.div_ceil(targets.max(1)), "target")
    } else {
        (connections.div_ceil(source_ips), "source address")
    };
    if per > PORTS_PER_ADDRESS {
        return Err(format!(
            "{per} connections per {what} exceed the ~{PORTS_PER_ADDRESS} ephemeral ports of one address; \
             add addresses with --source-ips (e.g. 127.0.0.1-127.0.0.{})",
            connections.div_ceil(PORTS_PER_ADDRESS).max(2)
        ));
    }
    Ok(())
}

impl BenchArgs {
    /// Checks the flags and derives the plan.
    pub fn plan(&self) -> anyhow::Result<Plan> {
        anyhow::ensure!(self.connections > 0, "--connections must be at least 1");
        let rooms = if self.scenario.has_rooms() {
            plan::derive_rooms(self.connections, self.rooms, self.members_per_room)
                .map_err(anyhow::Error::msg)?
        } else {
            0
        };
        let targets = self
            .urls
            .iter()
            .map(|u| plan::resolve(u.trim()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(anyhow::Error::msg)?;
        anyhow::ensure!(!targets.is_empty(), "give at least one --url");
        let source_ips = match &self.source_ips {
            Some(text) => ips::parse_source_ips(text).map_err(anyhow::Error::msg)?,
            None => Vec::new(),
        };
        check_ports(self.connections, targets.len(), source_ips.len())
            .map_err(anyhow::Error::msg)?;
        let workers = self.workers as usize;
        if let Some(i) = self.worker_index {
            anyhow::ensure!(
                i < workers,
                "--worker-index {i} is not below --workers {workers}"
            );
        }
        let run_id = match &self.run_id {
            Some(id) => {
                anyhow::ensure!(
                    (1..=12).contains(&id.len())
                        && id
                            .bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()),
                    "--run-id must be 1–12 of a–z 0–9"
                );
                id.clone()
            }
            None => plan::new_run_id(),
        };
        let threads = self
            .threads
            .filter(|&t| t > 0)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
        let mut plan = Plan {
            scenario: self.scenario,
            connections: self.connections,
            rooms,
            senders: self.senders,
            targets,
            source_ips,
            workers,
            worker_index: self.worker_index,
            run_id,
            ramp_up: Duration::from_secs_f64(self.ramp_up),
            duration: Duration::from_secs_f64(self.duration),
            msg_interval: Duration::from_millis(self.msg_interval),
            msg_size: self.msg_size,
            mix: self.mix,
            drain: Duration::from_secs_f64(self.drain),
            connect_timeout: Duration::from_secs_f64(self.connect_timeout.max(0.1)),
            threads,
        };
        if let Some(rate) = self.rate {
            anyhow::ensure!(
                rate.is_finite() && rate > 0.0,
                "--rate must be a positive number of messages per second"
            );
            let senders = plan.total_senders();
            anyhow::ensure!(senders > 0, "--rate needs at least one sender (--senders)");
            plan.msg_interval = Duration::from_secs_f64(senders as f64 / rate);
            anyhow::ensure!(
                plan.msg_interval >= Duration::from_millis(1),
                "--rate {rate} is more than one message per millisecond per sender"
            );
        }
        Ok(plan)
    }
}

/// Runs `parley bench`; blocks until the run is over and the report printed.
pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let plan = Arc::new(args.plan()?);
    let secret = args.jwt_secret.clone().filter(|s| !s.is_empty()).context(
        "--jwt-secret (or PARLEY_JWT_SECRET) is required: the bench signs its users' \
             tokens with the nodes' secret, as an operator's backend would",
    )?;
    if plan.worker_index.is_some() {
        let out = runner::run_process(plan, secret.as_bytes(), false)?;
        println!("{}", serde_json::to_string(&out)?);
        return Ok(());
    }
    let progress = !args.json;
    let outputs = if plan.workers > 1 {
        workers::run(&args, &plan, &secret, progress)?
    } else {
        vec![runner::run_process(
            plan.clone(),
            secret.as_bytes(),
            progress,
        )?]
    };
    let report = report::finish(&plan, &outputs)?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", report::render(&report));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    fn parse(args: &[&str]) -> Result<BenchArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("bench").chain(args.iter().copied())).map(|c| c.bench)
    }

    #[test]
    fn flags_make_a_plan() {
        let a = parse(&[
            "--connections",
            "200",
            "--rooms",
            "10",
            "--duration",
            "5",
            "--msg-interval",
            "250",
            "--url",
            "ws://127.0.0.1:1/ws,ws://127.0.0.1:2/ws",
            "--source-ips",
            "127.0.0.1-127.0.0.4",
        ])
        .unwrap();
        let p = a.plan().unwrap();
        assert_eq!(p.rooms, 10);
        assert_eq!(p.targets.len(), 2);
        assert_eq!(p.source_ips.len(), 4);
        assert_eq!(p.duration, Duration::from_secs(5));
        assert_eq!(p.offered_rate(), 800.0);
        assert_eq!(p.run_id.len(), 8);
    }

    #[test]
    fn rate_sets_the_interval_from_the_senders() {
        let url = ["--url", "ws://127.0.0.1:1/ws"];
        let args = |extra: &[&'static str]| {
            let mut v = vec!["--connections", "200", "--rooms", "2", "--senders", "0.05"];
            v.extend_from_slice(&url);
            v.extend_from_slice(extra);
            parse(&v).unwrap()
        };
        let p = args(&["--rate", "50"]).plan().unwrap();
        assert_eq!(p.total_senders(), 10);
        assert_eq!(p.msg_interval, Duration::from_millis(200));
        assert!((p.offered_rate() - 50.0).abs() < 1e-9);
        assert!(args(&["--rate", "0"]).plan().is_err());
        assert!(
            args(&["--rate", "1000000"]).plan().is_err(),
            "over 1/ms per sender"
        );
        assert!(parse(&["--rate", "5", "--msg-interval", "100"]).is_err());
    }

    #[test]
    fn bad_flags_are_refused() {
        assert!(parse(&["--senders", "1.5"]).is_err());
        assert!(parse(&["--msg-interval", "0"]).is_err());
        assert!(parse(&["--duration", "-1"]).is_err());
        assert!(parse(&["--scenario", "storm"]).is_err());
        assert!(parse(&["--workers", "0"]).is_err());
        let a = parse(&["--connections", "10", "--rooms", "20"]).unwrap();
        assert!(a.plan().is_err());
        let a = parse(&["--url", "http://127.0.0.1/ws", "--connections", "10"]).unwrap();
        assert!(a.plan().is_err());
        let a = parse(&[
            "--worker-index",
            "2",
            "--workers",
            "2",
            "--connections",
            "10",
        ])
        .unwrap();
        assert!(a.plan().is_err());
        let a = parse(&["--run-id", "NOT-OK", "--connections", "10"]).unwrap();
        assert!(a.plan().is_err());
    }

    #[test]
    fn ports_per_address() {
        assert!(check_ports(20_000, 1, 0).is_ok());
        assert!(check_ports(50_000, 1, 0).is_err());
        assert!(check_ports(50_000, 2, 0).is_ok());
        assert!(check_ports(100_000, 5, 4).is_ok());
        assert!(check_ports(100_000, 5, 2).is_err());
    }

    #[test]
    fn workers_get_explicit_settings() {
        let a = parse(&[
            "--connections",
            "100",
            "--workers",
            "2",
            "--scenario",
            "resume",
        ])
        .unwrap();
        let p = a.plan().unwrap();
        let w = workers::worker_args(&a, &p, 1);
        let again = parse(&w[1..].iter().map(String::as_str).collect::<Vec<_>>()).unwrap();
        let q = again.plan().unwrap();
        assert_eq!(q.worker_index, Some(1));
        assert_eq!(q.run_id, p.run_id);
        assert_eq!(q.rooms, p.rooms);
        assert_eq!(q.scenario, Scenario::Resume);
        assert!(q.mix.is_none());
        let a = parse(&[
            "--connections",
            "100",
            "--workers",
            "2",
            "--mix",
            "edit=5,react=10",
        ])
        .unwrap();
        let p = a.plan().unwrap();
        let w = workers::worker_args(&a, &p, 0);
        let again = parse(&w[1..].iter().map(String::as_str).collect::<Vec<_>>()).unwrap();
        assert_eq!(again.plan().unwrap().mix, p.mix);
        assert_eq!(p.mix.percent(mix::Kind::React), 10);
        assert!(parse(&["--mix", "edit=80,react=80"]).is_err());
        assert!(again.json);
        assert!(!w.iter().any(|s| s.contains("secret")), "{w:?}");
    }
}
