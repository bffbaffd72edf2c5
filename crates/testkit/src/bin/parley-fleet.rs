//! `parley-fleet`: a whole Parley fleet on one machine, for people and demos.
//!
//! Starts PostgreSQL (initdb in a temp dir), redis-server, N `parley serve`
//! nodes sharing them, and nginx in front (ip_hash = the Kubernetes Service's
//! ClientIP affinity, WebSocket upgrades, long timeouts) — all on free
//! 127.0.0.1 ports — prints where everything is, and stops all of it on
//! Ctrl-C. PostgreSQL, Redis and nginx come from Debian's packages.
//!
//!     cargo build -p parley && cargo run -p parley-testkit --bin parley-fleet -- --nodes 3
//!
//! `--roll-after SECS` rehearses a rolling update, as a Deployment does it:
//! SECS after start, every node in turn gets SIGTERM (drain), is waited for,
//! and is started again on the same port; `--roll-gap SECS` pauses between
//! two nodes. Run `parley bench --scenario resume` against the nodes at the
//! same time to check that the restarts lose and duplicate nothing.
//! `--sync-standby` puts PostgreSQL on a primary plus a synchronous standby
//! (`pg_basebackup -R`; every commit, so every ack, waits for the standby)
//! and gives the nodes both hosts in one multi-host URL
//! (`target_session_attrs=read-write`): what docs/benchmarks.md compares
//! with one PostgreSQL, and a place to rehearse a failover by hand
//! (docs/operations.md, "Losing a database server").
//! Nodes inherit the launcher's environment (e.g. `PARLEY_DRAIN_SPREAD`);
//! with `PARLEY_NODE_LOGS=DIR` each node logs to `DIR/node-PORT.log`.

use std::time::Duration;

use parley_testkit::services::Nginx;
use parley_testkit::{Fleet, SECRET};

fn usage() -> ! {
    eprintln!(
        "usage: parley-fleet [--nodes N] [--parley PATH_TO_PARLEY_BINARY] [--sync-standby] [--roll-after SECS [--roll-gap SECS]]"
    );
    std::process::exit(2)
}

#[tokio::main]
async fn main() {
    let mut nodes = 3usize;
    let mut binary: Option<String> = None;
    let mut roll_after: Option<f64> = None;
    let mut roll_gap = 0.0f64;
    let mut sync_standby = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--nodes" => {
                nodes = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or_else(|| usage())
            }
            "--parley" => binary = Some(args.next().unwrap_or_else(|| usage())),
            "--roll-after" => roll_after = Some(seconds(args.next())),
            "--roll-gap" => roll_gap = seconds(args.next()),
            "--sync-standby" => sync_standby = true,
            _ => usage(),
        }
    }
    let binary = binary.unwrap_or_else(|| {
        // By default the `parley` built next to this launcher.
        std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(|d| d.join("parley")))
            .filter(|p| p.exists())
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| {
                eprintln!("parley binary not found next to this launcher: run `cargo build -p parley` or pass --parley");
                std::process::exit(1)
            })
    });
    // Nodes run in their own temp dirs: a relative path would not resolve there.
    let binary = std::fs::canonicalize(&binary)
        .map(|p| p.display().to_string())
        .unwrap_or_else(|e| {
            eprintln!("parley binary {binary}: {e}");
            std::process::exit(1)
        });

    let env = [("PARLEY_LOG", "info"), ("PARLEY_LOG_FORMAT", "text")];
    let fleet = if sync_standby {
        eprintln!(
            "starting a PostgreSQL primary with a synchronous standby, Redis and {nodes} nodes …"
        );
        Fleet::start_replicated(&binary, nodes, &env).await
    } else {
        eprintln!("starting PostgreSQL, Redis and {nodes} nodes …");
        Fleet::start(&binary, nodes, &env).await
    };
    let upstreams: Vec<_> = fleet.nodes.iter().map(|n| n.addr).collect();
    let nginx = match tokio::task::spawn_blocking(move || Nginx::start(&upstreams)).await {
        Ok(nginx) => nginx,
        Err(e) => {
            eprintln!("starting nginx failed: {e}");
            std::process::exit(1)
        }
    };

    println!("Parley fleet is up.");
    println!("  web UI and API (nginx): {}", nginx.url());
    println!("  WebSocket:              {}", nginx.ws_url());
    for (i, n) in fleet.nodes.iter().enumerate() {
        println!("  node {i}:                 http://{}", n.addr);
    }
    println!("  PostgreSQL:             {}", fleet.postgres.url());
    if let Some(standby) = &fleet.standby {
        println!("  synchronous standby:    {}", standby.url());
        println!("  nodes' database URL:    {}", fleet.database_url());
    }
    println!("  Redis:                  {}", fleet.redis.url());
    println!(
        "  JWT secret:             {SECRET}  (mint tokens: parley token --secret {SECRET} --user NAME)"
    );
    println!("Ctrl-C (or SIGTERM) stops everything.");

    let mut fleet = fleet;
    if let Some(after) = roll_after {
        tokio::select! {
            _ = roll(&mut fleet, after, roll_gap) => {}
            _ = stop_requested() => {}
        }
    }
    stop_requested().await;
    eprintln!("stopping …");
    drop(nginx);
    for node in &mut fleet.nodes {
        node.signal("TERM");
    }
    for node in &mut fleet.nodes {
        let _ = tokio::time::timeout(
            Duration::from_secs(30),
            node.wait_exit(Duration::from_secs(30)),
        )
        .await;
    }
    drop(fleet);
}

/// Ctrl-C or SIGTERM (what a script or a supervisor sends): either stops
/// everything the launcher started, rather than leaving it running.
async fn stop_requested() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(e) => {
            eprintln!("cannot listen for SIGTERM ({e}); Ctrl-C only");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

fn seconds(arg: Option<String>) -> f64 {
    arg.and_then(|s| s.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .unwrap_or_else(|| usage())
}

/// One rolling restart of every node, in order, each on its own port.
async fn roll(fleet: &mut Fleet, after: f64, gap: f64) {
    tokio::time::sleep(Duration::from_secs_f64(after)).await;
    let started = tokio::time::Instant::now();
    let at = || started.elapsed().as_secs_f64();
    println!("rolling restart: {} nodes", fleet.nodes.len());
    for i in 0..fleet.nodes.len() {
        let t0 = at();
        fleet.nodes[i].signal("TERM");
        let code = fleet.nodes[i].wait_exit(Duration::from_secs(120)).await;
        let t1 = at();
        fleet.restart_node(i).await;
        println!(
            "  node {i}: SIGTERM at {t0:.1} s, exited ({code:?}) at {t1:.1} s, ready again at {:.1} s",
            at()
        );
        if i + 1 < fleet.nodes.len() {
            tokio::time::sleep(Duration::from_secs_f64(gap)).await;
        }
    }
    println!("rolling restart done in {:.1} s", at());
}
