//! One process's share of a run: its own tokio runtime, the ramp, the
//! phases, and the accounting at the end.
//!
//! Ramp: connections are started evenly over RAMP_UP; the run phase starts
//! once every one of them has either joined or failed its first attempt.
//! Run: senders send for DURATION. Drain: no new sends; it ends as soon as
//! every send is answered and every member holds every acked message of its
//! room — or at the drain timeout, and whatever is missing then is lost.
//! Stop: every connection closes, and each hands back what it received.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use parley_protocol::time::now_s;
use parley_protocol::token::{self, Claims};
use tokio::time::Instant;

use crate::accounting::{Deliveries, account};
use crate::conn::{self, Outcome, Spec};
use crate::plan::Plan;
use crate::report::WorkerOutput;
use crate::shared::{Phase, Shared};
use crate::stats;

/// How long the connections get to close and report at the end.
const COLLECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Open files a process needs besides its connections.
const SPARE_FILES: u64 = 256;

/// Runs this process's connections; blocks until the run is over.
pub fn run_process(plan: Arc<Plan>, secret: &[u8], progress: bool) -> anyhow::Result<WorkerOutput> {
    let local = plan.local_connections().len();
    ensure_open_files(local as u64 + SPARE_FILES, plan.connections)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(plan.threads.max(1))
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(drive(plan, secret, progress))
}

async fn drive(plan: Arc<Plan>, secret: &[u8], progress: bool) -> anyhow::Result<WorkerOutput> {
    let conns = plan.local_connections();
    let n = conns.len();
    let shared = Arc::new(Shared::new(plan.clone())?);
    let bar = Progress::new(progress, n as u64);
    let lifetime = plan.ramp_up + plan.duration + plan.drain + plan.connect_timeout * 2;
    let exp = now_s() + lifetime.as_secs() as i64 + 3600;

    // Ramp.
    let ramp_start = Instant::now();
    let mut tasks = Vec::with_capacity(n);
    for (k, &conn) in conns.iter().enumerate() {
        let at = ramp_start + plan.ramp_up.mul_f64(k as f64 / n.max(1) as f64);
        if at > Instant::now() {
            tokio::time::sleep_until(at).await;
            bar.ramp(&shared);
        }
        let room = plan.room_of(conn);
        if room.is_some() {
            shared.waiting.fetch_add(1, Ordering::SeqCst);
        }
        let spec = Spec {
            conn,
            // Minted locally with the fleet's shared secret, as an operator's
            // backend does: 100k users need no register call (and no argon2
            // hashing on the node under test).
            token: token::sign(secret, &Claims::new(plan.user_name(conn), exp)),
            room,
            sender: plan.is_sender(conn),
        };
        tasks.push(tokio::spawn(conn::run(spec, shared.clone())));
    }
    // Every connection gets connect_timeout to connect and as long to join.
    let settle_by = Instant::now() + plan.connect_timeout * 2 + Duration::from_secs(1);
    while (shared.settled.load(Ordering::SeqCst) as usize) < n && Instant::now() < settle_by {
        tokio::time::sleep(Duration::from_millis(50)).await;
        bar.ramp(&shared);
    }
    let ramp_s = ramp_start.elapsed().as_secs_f64();

    // Run.
    shared.set_phase(Phase::Run);
    bar.start_run(plan.duration);
    let run_start = Instant::now();
    let run_end = run_start + plan.duration;
    while Instant::now() < run_end {
        let step = run_end
            .saturating_duration_since(Instant::now())
            .min(Duration::from_millis(250));
        tokio::time::sleep(step).await;
        bar.run(&shared, run_start.elapsed());
    }
    let run_s = run_start.elapsed().as_secs_f64();

    // Drain.
    shared.set_phase(Phase::Drain);
    let drain_start = Instant::now();
    if plan.scenario.has_rooms() {
        while drain_start.elapsed() < plan.drain
            && (shared.inflight.load(Ordering::SeqCst) > 0
                || shared.waiting.load(Ordering::SeqCst) > 0)
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
            bar.drain(&shared);
        }
    }
    let drain_s = drain_start.elapsed().as_secs_f64();

    // Stop.
    shared.set_phase(Phase::Stop);
    bar.finish();
    let deadline = Instant::now() + COLLECT_TIMEOUT;
    let mut outcomes = Vec::with_capacity(n);
    for mut task in tasks {
        match tokio::time::timeout_at(deadline, &mut task).await {
            Ok(Ok(outcome)) => outcomes.push(outcome),
            Ok(Err(_)) => shared.error("bench: connection task failed"),
            Err(_) => {
                task.abort();
                shared.error("bench: connection did not stop in time");
            }
        }
    }
    account_all(&shared, n, &outcomes, [ramp_s, run_s, drain_s])
}

/// The process's output: counters, exact loss accounting, latencies.
fn account_all(
    shared: &Shared,
    requested: usize,
    outcomes: &[Outcome],
    [ramp_s, run_s, drain_s]: [f64; 3],
) -> anyhow::Result<WorkerOutput> {
    let mut tally = shared.counters.snapshot();
    tally.requested = requested as u64;
    tally.connected = outcomes.iter().filter(|o| o.connected).count() as u64;
    tally.failed = tally.requested - tally.connected;
    tally.active_at_end = outcomes.iter().filter(|o| o.open_at_end).count() as u64;
    let mut deliveries = Deliveries::default();
    let mut nodes = BTreeMap::new();
    for o in outcomes {
        if let Some(node) = &o.node {
            *nodes.entry(node.clone()).or_default() += 1;
        }
        if let Some(member) = &o.member {
            deliveries.add(&account(&shared.rooms[member.room].acked(), member));
        }
    }
    tally.expected = deliveries.expected;
    tally.lost = deliveries.lost;
    tally.unexpected = deliveries.unexpected;
    tally.received = deliveries.delivered + deliveries.unexpected;
    Ok(WorkerOutput {
        tally,
        ack_us: stats::to_pairs(&shared.ack_latency.merged()?),
        e2e_us: stats::to_pairs(&shared.e2e_latency.merged()?),
        nodes,
        error_kinds: shared.error_kinds(),
        by_type: shared.by_kind.snapshot(),
        first_send_us: outcomes.iter().filter_map(|o| o.first_send_us).min(),
        last_delivery_us: outcomes.iter().filter_map(|o| o.last_delivery_us).max(),
        ramp_s,
        run_s,
        drain_s,
    })
}

/// Raises the soft limit of open files to what `need` asks, if the hard
/// limit allows; otherwise says how many workers would fit. (The one unsafe
/// code in the workspace: two libc calls on a struct we own.)
#[allow(unsafe_code)]
fn ensure_open_files(need: u64, total_connections: usize) -> anyhow::Result<()> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct we pass, which we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Ok(()); // cannot tell: try anyway
    }
    if limit.rlim_cur >= need {
        return Ok(());
    }
    if limit.rlim_max < need {
        let per_process = limit.rlim_max.saturating_sub(SPARE_FILES).max(1);
        anyhow::bail!(
            "this process may open at most {} files, too few for {} connections; \
             split the run over processes with --workers {}",
            limit.rlim_max,
            need - SPARE_FILES,
            (total_connections as u64).div_ceil(per_process)
        );
    }
    limit.rlim_cur = limit.rlim_max;
    // SAFETY: setrlimit only reads the struct we pass.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        anyhow::bail!("could not raise the open-files limit to {}", limit.rlim_max);
    }
    Ok(())
}

/// The progress bar on stderr (hidden with --json or without a terminal).
struct Progress {
    bar: Option<ProgressBar>,
    last: std::sync::Mutex<Option<Instant>>,
}

impl Progress {
    fn new(enabled: bool, connections: u64) -> Self {
        let bar = (enabled && std::io::stderr().is_terminal()).then(|| {
            let bar =
                ProgressBar::with_draw_target(Some(connections), ProgressDrawTarget::stderr());
            if let Ok(style) = ProgressStyle::with_template(
                "{prefix:>5} [{elapsed_precise}] [{bar:24}] {pos}/{len} {wide_msg}",
            ) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_prefix("ramp");
            bar
        });
        Self {
            bar,
            last: std::sync::Mutex::new(None),
        }
    }

    /// At most 10 redraws a second.
    fn due(&self) -> bool {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < Duration::from_millis(100)) {
            return false;
        }
        *last = Some(now);
        true
    }

    fn status(shared: &Shared) -> String {
        let t = shared.counters.snapshot();
        format!(
            "open {} | sent {} acked {} recv {} | errors {}",
            shared.open.load(Ordering::Relaxed),
            t.sent,
            t.acked,
            t.received,
            t.errors
        )
    }

    fn ramp(&self, shared: &Shared) {
        if let Some(bar) = &self.bar
            && self.due()
        {
            bar.set_position(shared.settled.load(Ordering::Relaxed));
            bar.set_message(Self::status(shared));
        }
    }

    fn start_run(&self, duration: Duration) {
        if let Some(bar) = &self.bar {
            bar.set_prefix("run");
            bar.set_length(duration.as_secs().max(1));
            bar.set_position(0);
        }
    }

    fn run(&self, shared: &Shared, elapsed: Duration) {
        if let Some(bar) = &self.bar
            && self.due()
        {
            bar.set_position(elapsed.as_secs());
            bar.set_message(Self::status(shared));
        }
    }

    fn drain(&self, shared: &Shared) {
        if let Some(bar) = &self.bar
            && self.due()
        {
            bar.set_prefix("drain");
            bar.set_message(format!(
                "inflight {} | members waiting {} | {}",
                shared.inflight.load(Ordering::Relaxed),
                shared.waiting.load(Ordering::Relaxed),
                Self::status(shared)
            ));
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
