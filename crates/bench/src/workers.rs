//! `--workers N`: one run over N child processes of this same binary.
//!
//! One process may hold at most so many open files (20,000 here), so a run of
//! 100k connections needs several. The parent starts
//! `<current exe> bench … --worker-index i` N times with the same run id,
//! each child runs its share (whole rooms, see [`crate::plan`]) and prints
//! its [`WorkerOutput`] as one JSON line, and the parent merges them. The
//! secret goes to the children in their environment, not on a command line.

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::BenchArgs;
use crate::plan::Plan;
use crate::report::WorkerOutput;

/// The command line of worker `index`: every setting explicit, so the
/// parent's environment variables cannot disagree with it.
pub fn worker_args(args: &BenchArgs, plan: &Plan, index: usize) -> Vec<String> {
    let mut out: Vec<String> = vec![
        "bench".into(),
        "--json".into(),
        "--scenario".into(),
        scenario_name(plan).into(),
        "--connections".into(),
        plan.connections.to_string(),
        "--senders".into(),
        plan.senders.to_string(),
        "--ramp-up".into(),
        plan.ramp_up.as_secs_f64().to_string(),
        "--duration".into(),
        plan.duration.as_secs_f64().to_string(),
        "--msg-interval".into(),
        plan.msg_interval.as_millis().to_string(),
        "--msg-size".into(),
        plan.msg_size.to_string(),
        "--mix".into(),
        plan.mix.flag(),
        "--drain".into(),
        plan.drain.as_secs_f64().to_string(),
        "--connect-timeout".into(),
        plan.connect_timeout.as_secs_f64().to_string(),
        "--threads".into(),
        plan.threads.to_string(),
        "--workers".into(),
        plan.workers.to_string(),
        "--worker-index".into(),
        index.to_string(),
        "--run-id".into(),
        plan.run_id.clone(),
    ];
    if plan.rooms > 0 {
        out.extend(["--rooms".into(), plan.rooms.to_string()]);
    }
    for target in &plan.targets {
        out.extend(["--url".into(), target.url.clone()]);
    }
    if let Some(ips) = &args.source_ips {
        out.extend(["--source-ips".into(), ips.clone()]);
    }
    out
}

fn scenario_name(plan: &Plan) -> &'static str {
    match plan.scenario {
        crate::plan::Scenario::Hold => "hold",
        crate::plan::Scenario::Chat => "chat",
        crate::plan::Scenario::Resume => "resume",
    }
}

struct Worker {
    index: usize,
    child: Child,
    stdout: std::thread::JoinHandle<std::io::Result<String>>,
}

/// Runs the workers and returns their outputs (an error if any failed).
pub fn run(
    args: &BenchArgs,
    plan: &Plan,
    secret: &str,
    progress: bool,
) -> anyhow::Result<Vec<WorkerOutput>> {
    let exe = std::env::current_exe().context("finding this program to start workers")?;
    let mut workers = Vec::with_capacity(plan.workers);
    for index in 0..plan.workers {
        let mut child = Command::new(&exe)
            .args(worker_args(args, plan, index))
            .env("PARLEY_JWT_SECRET", secret)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting worker {index}"))?;
        let mut stdout = child
            .stdout
            .take()
            .context("worker stdout is not captured")?;
        let reader = std::thread::spawn(move || {
            let mut text = String::new();
            stdout.read_to_string(&mut text).map(|_| text)
        });
        workers.push(Worker {
            index,
            child,
            stdout: reader,
        });
    }
    let limit = plan.ramp_up
        + plan.connect_timeout * 2
        + plan.duration
        + plan.drain
        + Duration::from_secs(60);
    let waited = wait_all(&mut workers, limit, progress);
    let mut outputs = Vec::with_capacity(workers.len());
    let mut failures = Vec::new();
    for w in workers {
        let text = w
            .stdout
            .join()
            .ok()
            .and_then(|r| r.ok())
            .unwrap_or_default();
        match serde_json::from_str::<WorkerOutput>(text.trim()) {
            Ok(out) => outputs.push(out),
            Err(e) => failures.push(format!("worker {}: no report ({e})", w.index)),
        }
    }
    waited?;
    if !failures.is_empty() {
        anyhow::bail!("{}", failures.join("; "));
    }
    Ok(outputs)
}

/// Waits for every worker; kills the ones still running after `limit`.
fn wait_all(workers: &mut [Worker], limit: Duration, progress: bool) -> anyhow::Result<()> {
    let start = Instant::now();
    let spinner = (progress && std::io::IsTerminal::is_terminal(&std::io::stderr())).then(|| {
        let s = indicatif::ProgressBar::new_spinner();
        s.set_message(format!("{} workers running", workers.len()));
        s
    });
    let mut running: Vec<bool> = vec![true; workers.len()];
    let mut failed = Vec::new();
    while running.iter().any(|r| *r) {
        for (i, w) in workers.iter_mut().enumerate() {
            if !running[i] {
                continue;
            }
            match w.child.try_wait() {
                Ok(Some(status)) => {
                    running[i] = false;
                    if !status.success() {
                        failed.push(format!("worker {} exited with {status}", w.index));
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    running[i] = false;
                    failed.push(format!("worker {}: {e}", w.index));
                }
            }
        }
        if start.elapsed() > limit {
            for (i, w) in workers.iter_mut().enumerate() {
                if running[i] {
                    let _ = w.child.kill();
                    let _ = w.child.wait();
                    failed.push(format!("worker {} did not finish in time", w.index));
                }
            }
            break;
        }
        if let Some(s) = &spinner {
            s.tick();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if let Some(s) = spinner {
        s.finish_and_clear();
    }
    if failed.is_empty() {
        Ok(())
    } else {
        anyhow::bail!("{}", failed.join("; "))
    }
}
