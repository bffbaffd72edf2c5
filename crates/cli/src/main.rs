//! `parley`: the one binary.
//!
//! - `parley serve` — run a node (see `parley serve --help` for every setting)
//! - `parley chat` — the terminal client
//! - `parley bench` — the load generator
//! - `parley token` — mint a token with the shared secret, as an operator's backend would
//! - `parley admin` — manage users on the store, without the web UI

mod admin;
mod chat;
mod logging;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "parley",
    version,
    about = "Parley: a real-time chat server that runs on a laptop and scales out on Kubernetes"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node: HTTP + WebSocket on one port, embedded SQLite by default.
    Serve(Box<parley_server::Config>),
    /// Chat in a terminal (full-screen TUI, or line mode when piped).
    Chat(chat::ChatArgs),
    /// Load-test a node or a fleet over many WebSocket connections.
    Bench(parley_bench::BenchArgs),
    /// Print a token for USER signed with the shared secret (what an
    /// operator's own backend does to sign its users in).
    Token(TokenArgs),
    /// Manage users on the configured store (what an operator does without
    /// the web UI): `parley admin user create|disable|enable|reset-password|promote|list`.
    Admin(admin::AdminArgs),
}

#[derive(clap::Args)]
struct TokenArgs {
    /// The shared HS256 secret (the node's PARLEY_JWT_SECRET).
    #[arg(
        long,
        env = "PARLEY_JWT_SECRET",
        hide_env_values = true,
        required_unless_present = "secret_file"
    )]
    secret: Option<String>,
    /// File holding the shared secret (the node's PARLEY_JWT_SECRET_FILE).
    #[arg(long, env = "PARLEY_JWT_SECRET_FILE", conflicts_with = "secret")]
    secret_file: Option<std::path::PathBuf>,
    /// The username the token speaks for.
    #[arg(long)]
    user: String,
    /// How long the token is valid.
    #[arg(long, default_value = "24h", value_parser = parley_server::config::parse_duration)]
    ttl: std::time::Duration,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(config) => serve(*config),
        Command::Chat(args) => chat::run(args),
        Command::Bench(args) => parley_bench::run(args),
        Command::Admin(args) => admin::run(args),
        Command::Token(args) => {
            anyhow::ensure!(
                parley_protocol::valid_username(&args.user),
                "{:?} is not a valid username (1–32 of A–Z a–z 0–9 _ . -)",
                args.user
            );
            use parley_protocol::token::{Claims, sign};
            let secret = match (args.secret, &args.secret_file) {
                (_, Some(path)) => parley_server::config::read_secret_file(path)?,
                (Some(secret), None) => secret,
                (None, None) => anyhow::bail!("give --secret or --secret-file"),
            };
            let claims = Claims::issued(args.user, parley_protocol::time::now_s(), args.ttl);
            println!("{}", sign(secret.as_bytes(), &claims));
            Ok(())
        }
    }
}

fn serve(config: parley_server::Config) -> anyhow::Result<()> {
    logging::init(&config.log, config.log_format)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let server = parley_server::Server::start(config).await?;
        parley_server::shutdown::signal().await;
        server.stop().await
    })
}
