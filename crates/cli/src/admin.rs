//! `parley admin`: what an operator does without the web UI, on the store a
//! node uses (`--database-url` / `PARLEY_DATABASE_URL`, with `parley
//! serve`'s default). It may run while nodes serve the same store: they
//! read disabled users and revoked tokens from it within
//! `PARLEY_REVOCATION_REFRESH` and close those users' connections.
//!
//! A user is named by their exact spelling, or by any spelling of it when
//! that is not an account's exact name (names are unique
//! case-insensitively; an exact spelling picks one of the accounts of an
//! older version that differ only in case — docs/operations.md).

use std::io::{BufRead, IsTerminal, Write};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use parley_server::http::api::{check_password, check_username};
use parley_server::store::{Account, Store, StoreError};

#[derive(Args)]
pub struct AdminArgs {
    /// The store, as `parley serve` takes it: `sqlite://FILE` or `postgres://…`.
    #[arg(
        long,
        env = "PARLEY_DATABASE_URL",
        default_value = "sqlite://parley.db",
        hide_env_values = true
    )]
    database_url: String,

    /// File holding the store's URL, instead of PARLEY_DATABASE_URL.
    #[arg(
        long,
        env = "PARLEY_DATABASE_URL_FILE",
        conflicts_with = "database_url"
    )]
    database_url_file: Option<std::path::PathBuf>,

    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Manage users: create, disable, enable, reset-password, promote, list.
    #[command(subcommand)]
    User(UserCommand),
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create a user. The password is PARLEY_PASSWORD, else the first line
    /// of standard input.
    Create { name: String },
    /// Disable a user: every token of theirs is revoked, their open
    /// connections are closed (4401) within seconds on every node, and login
    /// is refused.
    Disable { name: String },
    /// Enable a disabled user again (tokens revoked by the disable stay
    /// revoked; they log in again).
    Enable { name: String },
    /// Set a user's password (PARLEY_PASSWORD, else the first line of
    /// standard input); every token of theirs is revoked.
    ResetPassword { name: String },
    /// Make a user a server admin (`role: admin`).
    Promote { name: String },
    /// List users: name, role, status, creation time.
    List,
}

pub fn run(args: AdminArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let database_url = match &args.database_url_file {
        Some(path) => parley_server::config::read_secret_file(path)?,
        None => args.database_url,
    };
    runtime.block_on(async {
        let redacted = parley_server::store::redact(&database_url);
        let store = parley_server::store::open(&database_url, 2)
            .await
            .with_context(|| format!("opening the store at {redacted}"))?;
        let AdminCommand::User(command) = args.command;
        user(store.as_ref(), command).await
    })
}

async fn user(store: &dyn Store, command: UserCommand) -> anyhow::Result<()> {
    match command {
        UserCommand::Create { name } => {
            check_username(&name).map_err(|e| anyhow::anyhow!(e.message))?;
            let password = read_password(&name)?;
            check_password("password", &password).map_err(|e| anyhow::anyhow!(e.message))?;
            let hash =
                parley_server::auth::password::hash(&password).map_err(anyhow::Error::msg)?;
            match store.create_user(&name, &hash).await {
                Err(StoreError::Conflict(_)) => bail!(
                    "username {name:?} is taken (names are unique case-insensitively): see \
                     `parley admin user list`"
                ),
                other => other?,
            }
            println!("created user {name}");
        }
        UserCommand::Disable { name } => {
            let account = find(store, &name).await?;
            store.set_disabled(&account.name, true).await?;
            println!(
                "disabled {}: their tokens are revoked and their connections closed on every \
                 node within seconds; login is refused",
                account.name
            );
        }
        UserCommand::Enable { name } => {
            let account = find(store, &name).await?;
            match store.set_disabled(&account.name, false).await {
                Err(StoreError::Conflict(why)) => bail!("cannot enable {}: {why}", account.name),
                other => other?,
            };
            println!("enabled {}", account.name);
        }
        UserCommand::ResetPassword { name } => {
            let account = find(store, &name).await?;
            let password = read_password(&account.name)?;
            check_password("password", &password).map_err(|e| anyhow::anyhow!(e.message))?;
            let hash =
                parley_server::auth::password::hash(&password).map_err(anyhow::Error::msg)?;
            store.set_password(&account.name, &hash).await?;
            println!(
                "new password for {}; their tokens are revoked",
                account.name
            );
        }
        UserCommand::Promote { name } => {
            let account = find(store, &name).await?;
            store.set_role(&account.name, "admin").await?;
            println!("{} is an admin", account.name);
        }
        UserCommand::List => {
            let accounts = store.accounts().await?;
            print!("{}", table(&accounts));
        }
    }
    Ok(())
}

async fn find(store: &dyn Store, name: &str) -> anyhow::Result<Account> {
    match store.find_account(name).await? {
        Some(account) => Ok(account),
        None => bail!("no user {name:?} (see `parley admin user list`)"),
    }
}

/// PARLEY_PASSWORD, else the first line of standard input (prompted for
/// on a terminal).
fn read_password(name: &str) -> anyhow::Result<String> {
    if let Ok(password) = std::env::var("PARLEY_PASSWORD") {
        return Ok(password);
    }
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("password for {name} (echoed): ");
        std::io::stderr().flush().ok();
    }
    let mut line = String::new();
    stdin
        .lock()
        .read_line(&mut line)
        .context("reading the password from standard input")?;
    let password = line.strip_suffix('\n').unwrap_or(&line);
    let password = password.strip_suffix('\r').unwrap_or(password);
    if password.is_empty() {
        bail!("no password: set PARLEY_PASSWORD or give it on standard input");
    }
    Ok(password.to_string())
}

/// `parley admin user list`: one line per user, columns aligned.
fn table(accounts: &[Account]) -> String {
    let width = accounts
        .iter()
        .map(|a| a.name.len())
        .max()
        .unwrap_or(0)
        .max(4);
    let mut out = format!(
        "{:width$}  {:5}  {:8}  {:24}  NOTE\n",
        "NAME", "ROLE", "STATUS", "CREATED"
    );
    for a in accounts {
        let status = if a.disabled { "disabled" } else { "enabled" };
        let note = match (&a.key, a.disabled) {
            (None, false) => "differs only in case from another name: disable one of them",
            (None, true) => "differs only in case from another name",
            _ => "",
        };
        let created = parley_protocol::time::format_millis(a.created_ms);
        out.push_str(
            format!(
                "{:width$}  {:5}  {:8}  {:24}  {note}",
                a.name, a.role, status, created
            )
            .trim_end(),
        );
        out.push('\n');
    }
    out
}
