//! `parley-fleet`: a whole Parley fleet on one machine, for people and demos.
//!
//! Starts PostgreSQL (initdb in a temp dir), redis-server, N `parley serve`
//! nodes sharing them, and nginx in front (ip_hash = the Kubernetes Service's
//! ClientIP affinity, WebSocket upgrades, long timeouts) — all on free
//! 127.0.0.1 ports — prints where everything is, and stops all of it on
//! Ctrl-C. PostgreSQL, Redis and nginx come from Debian's packages.
//!
//!     cargo build -p parley && cargo run -p parley-testkit --bin parley-fleet -- --nodes 3

use std::time::Duration;

use parley_testkit::services::Nginx;
use parley_testkit::{Fleet, SECRET};

fn usage() -> ! {
    eprintln!("usage: parley-fleet [--nodes N] [--parley PATH_TO_PARLEY_BINARY]");
    std::process::exit(2)
}

#[tokio::main]
async fn main() {
    let mut nodes = 3usize;
    let mut binary: Option<String> = None;
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

    eprintln!("starting PostgreSQL, Redis and {nodes} nodes …");
    let fleet = Fleet::start(
        &binary,
        nodes,
        &[("PARLEY_LOG", "info"), ("PARLEY_LOG_FORMAT", "text")],
    )
    .await;
    let upstreams: Vec<_> = fleet.nodes.iter().map(|n| n.addr).collect();
    let nginx = tokio::task::spawn_blocking(move || Nginx::start(&upstreams))
        .await
        .expect("nginx task");

    println!("Parley fleet is up.");
    println!("  web UI and API (nginx): {}", nginx.url());
    println!("  WebSocket:              {}", nginx.ws_url());
    for (i, n) in fleet.nodes.iter().enumerate() {
        println!("  node {i}:                 http://{}", n.addr);
    }
    println!("  PostgreSQL:             {}", fleet.postgres.url());
    println!("  Redis:                  {}", fleet.redis.url());
    println!(
        "  JWT secret:             {SECRET}  (mint tokens: parley token --secret {SECRET} --user NAME)"
    );
    println!("Ctrl-C stops everything.");

    let _ = tokio::signal::ctrl_c().await;
    eprintln!("stopping …");
    drop(nginx);
    let mut fleet = fleet;
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
