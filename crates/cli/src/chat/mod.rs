//! `parley chat`: the terminal client (protocol v1).
//!
//! ```text
//! parley chat --server HOST --port PORT --user NAME [--room ROOM] [--to USER]
//! parley chat --url ws://HOST:PORT/ws --token TOKEN
//! ```
//!
//! Signing in: `--token TOKEN` (or env `PARLEY_TOKEN`) skips the login;
//! otherwise the password of `--user` comes from env `PARLEY_PASSWORD` or a
//! prompt (without echo on a terminal, else the first line of stdin), and
//! `--register` creates the account first. Before chatting the client says
//! hello once, so a refused token or an unreachable node is an error with a
//! non-zero exit instead of endless reconnecting.
//!
//! It joins `--room` (default `general`) — or, with `--to USER`, the DM room
//! `dm:<a>:<b>` of the two users (plus `--room` only if given) — shows the
//! room's history and then live messages, and sends each typed line to the
//! current room or DM. The connection is the resilient
//! [`parley_client::Client`]: it reconnects, resumes every room with `since`
//! and delivers every event exactly once, in order. Commands: `/join ROOM`,
//! `/leave [ROOM]` (stop showing it; still a member), `/part [ROOM]` (end
//! the membership), `/rooms` (with unread messages and mentions, private
//! rooms marked, one's role and each topic), `/who`, `/create NAME
//! [--private] [TOPIC]`, `/topic [TEXT]`, `/members`, and for owners and
//! moderators `/invite USER`, `/kick USER`, `/ban USER [REASON]`, `/unban
//! USER`, `/bans`, and for owners `/role USER owner|moderator|member`
//! (`/promote USER`, `/demote USER`),
//! `/dm USER`, `/history` (what this client holds of the current room),
//! `/history N` (N older ones, over REST), `/reply SEQ TEXT`, `/edit SEQ
//! TEXT` (one's own messages), `/delete SEQ` (one's own; any, for owners
//! and moderators), `/react SEQ EMOJI` (adds
//! one's reaction, or takes it back), `/search WORDS` (over every room one
//! may read), `/help`, `/quit`; `//text` sends text that starts with a
//! slash. The room being looked at is read: its read position follows its
//! last event, so the user's other devices and `/rooms` show it as read.
//!
//! # Two modes
//!
//! When stdin and stdout are both terminals (and `--lines` is not given), a
//! full-screen TUI: a header (the current room, private or not, one's role
//! in it, its topic), message pane with UTC `HH:MM:SS` times, a room list,
//! a status bar (user, connection state, room, who is typing) and an input
//! line.
//!
//! Otherwise **line mode**, for scripts and tests. Each line of stdin is one
//! typed line. Each line of stdout is one of:
//!
//! ```text
//! [ROOM] #SEQ FROM: TEXT      a message (history first, then live; own messages too,
//!                             as the server pushes them back), exactly once per seq
//! * [ROOM] #SEQ EVENT         a member or topic event, once per seq: `alice added bob`,
//!                             `bob kicked carol`, `bob banned carol: REASON`, `bob
//!                             unbanned carol`, `alice made bob moderator`, `carol
//!                             parted`, `bob set the topic: TOPIC`, `bob cleared the topic`
//! * STATUS                    anything else
//! ```
//!
//! TEXT is the message in its current state: its text, or `[deleted]`;
//! then ` (edited)` once edited, ` (↪ #N FROM: QUOTE)` for a reply (the
//! start of the message it answers; `(↪ #N)` when not held), and ` · 👍 2
//! 🎉 1` for its reactions. A plain message is its text alone. When a
//! message shown changes, a status line shows it again:
//! `* bob edited: [general] #4 bob: lunch at 1? (edited)` (also `deleted`,
//! `reacted 👍`, `took back 👍`). `/search` answers with status lines
//! `* found [ROOM] #SEQ FROM: TEXT`, newest first.
//!
//! Control characters in any field are escaped (`\n`, `\r`, `\t`,
//! `\u{1b}`, …), so a message is always exactly one line; a DM shows its DM
//! room, e.g. `[dm:alice:bob] #3 bob: hi`. Status lines include, verbatim
//! up to the `…`:
//!
//! ```text
//! * connected to node NODE as USER
//! * joined ROOM
//! * disconnected: REASON, reconnecting
//! * reconnected to node NODE as USER
//! * resumed ROOM
//! * left ROOM
//! * USER joined ROOM / * USER left ROOM      (presence)
//! * message not sent (CODE): …               (a send the server refused)
//! * cannot join ROOM (CODE): …               (a private room, a ban)
//! * you were kicked from #ROOM by USER        (the room is dropped; also `banned`,
//!                                              with `: REASON`)
//! * you parted #ROOM
//! * ACTION failed (CODE): …                  (a refused /invite, /kick, /topic, …)
//! * error (CODE): …
//! ```
//!
//! Errors of the user's own input (a bad command, a text over 4096 bytes)
//! are status lines too. At EOF of stdin (or `/quit`) the client waits up to
//! 3 s for its sends to be acknowledged and its joins answered (so
//! `parley chat --token T </dev/null` prints a room's recent history), then
//! exits 0. It exits non-zero
//! with a message on stderr when signing in fails or the server refuses the
//! token.

mod auth;
mod command;
mod format;
mod line;
mod session;
mod state;
mod tui;

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use parley_client::protocol::{dm_room, valid_room, valid_username};
use parley_client::{Client, ClientConfig};
use tokio::sync::mpsc;

use self::state::{ChatState, Output, Target};

/// Options of `parley chat`.
#[derive(Debug, Clone, clap::Args)]
pub struct ChatArgs {
    /// Server host name or address.
    #[arg(long, default_value = "127.0.0.1")]
    pub server: String,
    /// Server port.
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// The server's WebSocket URL (ws://HOST:PORT/ws), instead of --server and --port.
    #[arg(long, conflicts_with_all = ["server", "port"])]
    pub url: Option<String>,
    /// Username to log in as (password from PARLEY_PASSWORD or a prompt).
    #[arg(long, short = 'u')]
    pub user: Option<String>,
    /// Room to join and talk in [default: general, unless --to is given].
    #[arg(long, short = 'r')]
    pub room: Option<String>,
    /// Talk to this user in private (their DM room).
    #[arg(long)]
    pub to: Option<String>,
    /// A token to use instead of logging in (e.g. from `parley token`).
    #[arg(long, env = "PARLEY_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Create the account (with the password) before chatting.
    #[arg(long)]
    pub register: bool,
    /// Line mode even on a terminal: one line per message or status.
    #[arg(long)]
    pub lines: bool,
}

/// Where the server is: its WebSocket URL and its HTTP base.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub ws_url: String,
    pub http: String,
}

impl Endpoint {
    /// From `--url`, or from `--server` and `--port`.
    pub fn new(server: &str, port: u16, url: Option<&str>) -> anyhow::Result<Endpoint> {
        let Some(url) = url else {
            let host = if server.contains(':') && !server.starts_with('[') {
                format!("[{server}]")
            } else {
                server.to_string()
            };
            return Ok(Endpoint {
                ws_url: format!("ws://{host}:{port}/ws"),
                http: format!("http://{host}:{port}"),
            });
        };
        if url.starts_with("wss://") {
            bail!("{url}: TLS (wss://) is not supported by the client; use ws://");
        }
        let Some(rest) = url.strip_prefix("ws://") else {
            bail!("{url}: the URL must look like ws://HOST:PORT/ws");
        };
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        if authority.is_empty() || authority.contains('@') {
            bail!("{url}: the URL must look like ws://HOST:PORT/ws");
        }
        let has_port = authority.rsplit_once(':').is_some_and(|(host, port)| {
            !port.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit())
                && (!host.contains(':') || host.ends_with(']'))
        });
        let http = if has_port {
            format!("http://{authority}")
        } else {
            format!("http://{authority}:80")
        };
        Ok(Endpoint {
            ws_url: url.to_string(),
            http,
        })
    }
}

/// The rooms to join at start and where typed text goes first.
pub fn plan(
    room: Option<&str>,
    to: Option<&str>,
    me: &str,
) -> anyhow::Result<(Vec<String>, Target)> {
    if let Some(room) = room
        && !valid_room(room)
    {
        bail!(
            "{room:?} is not a room name (a–z 0–9 _ -, starting with a letter or digit, at most 64)"
        );
    }
    match to {
        Some(to) => {
            if !valid_username(to) {
                bail!("--to {to:?} is not a valid username");
            }
            if to == me {
                bail!("--to {to}: that is you");
            }
            let mut rooms = vec![dm_room(me, to)];
            rooms.extend(room.map(str::to_string));
            Ok((rooms, Target::dm(me, to)))
        }
        None => {
            let room = room.unwrap_or("general");
            Ok((vec![room.to_string()], Target::of_room(room, me)))
        }
    }
}

/// Runs `parley chat`.
pub fn run(args: ChatArgs) -> anyhow::Result<()> {
    let endpoint = Endpoint::new(&args.server, args.port, args.url.as_deref())?;
    let use_tui = !args.lines && std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    let credentials = auth::credentials(
        args.token.as_deref(),
        args.user.as_deref(),
        args.register,
        std::env::var("PARLEY_PASSWORD").ok(),
        auth::prompt_password,
    )?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let result = runtime.block_on(chat(args, endpoint, credentials, use_tui));
    runtime.shutdown_timeout(Duration::from_millis(500));
    result
}

async fn chat(
    args: ChatArgs,
    endpoint: Endpoint,
    credentials: auth::Credentials,
    use_tui: bool,
) -> anyhow::Result<()> {
    let token = auth::obtain_token(&endpoint.http, credentials).await?;
    let welcome = auth::check_token(&endpoint.ws_url, &token).await?;
    let me = welcome.user;
    if let Some(user) = &args.user
        && *user != me
    {
        bail!("--user {user} does not match the token, which is for {me}");
    }
    let (rooms, target) = plan(args.room.as_deref(), args.to.as_deref(), &me)?;

    let mut state = ChatState::new(&me, Some(target));
    for room in &rooms {
        state.joining(room);
    }
    let mut config = ClientConfig::new(endpoint.ws_url.clone(), token.clone());
    config.rooms = rooms;
    config.nonce_prefix = "chat".into();
    let (client, mut events) = Client::start(config);
    let (notices_tx, mut notices) = mpsc::unbounded_channel();
    let session = session::Session::new(client, endpoint.http.clone(), token, notices_tx);

    let result = if use_tui {
        let stop = Arc::new(AtomicBool::new(false));
        let result: anyhow::Result<()> = async {
            let mut tui = tui::Tui::enter()?;
            let mut keys = tui::terminal_events(stop.clone())?;
            let hello = Output::Status(format!(
                "connecting to {} as {me}; type a message and Enter, /help lists the commands, Ctrl-C quits",
                endpoint.ws_url
            ));
            session::Frontend::show(&mut tui, &state, vec![hello])?;
            session::drive(&mut tui, &mut state, &session, &mut events, &mut notices, &mut keys).await
        }
        .await;
        stop.store(true, Ordering::Relaxed);
        result
    } else {
        let mut lines = line::stdin_lines()?;
        let mut out = line::Lines::new(std::io::stdout());
        session::drive(
            &mut out,
            &mut state,
            &session,
            &mut events,
            &mut notices,
            &mut lines,
        )
        .await
    };
    session.stop().await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_from_server_and_port() {
        assert_eq!(
            Endpoint::new("chat.example", 9000, None).unwrap(),
            Endpoint {
                ws_url: "ws://chat.example:9000/ws".into(),
                http: "http://chat.example:9000".into()
            }
        );
        assert_eq!(
            Endpoint::new("::1", 8080, None).unwrap().ws_url,
            "ws://[::1]:8080/ws"
        );
    }

    #[test]
    fn endpoints_from_a_url() {
        let e = Endpoint::new("ignored", 1, Some("ws://127.0.0.1:4000/ws")).unwrap();
        assert_eq!(e.ws_url, "ws://127.0.0.1:4000/ws");
        assert_eq!(e.http, "http://127.0.0.1:4000");
        assert_eq!(
            Endpoint::new("", 1, Some("ws://host/ws")).unwrap().http,
            "http://host:80"
        );
        assert_eq!(
            Endpoint::new("", 1, Some("ws://[::1]:5/ws")).unwrap().http,
            "http://[::1]:5"
        );
        assert_eq!(
            Endpoint::new("", 1, Some("ws://[::1]/ws")).unwrap().http,
            "http://[::1]:80"
        );
        for bad in ["http://h:1/ws", "wss://h/ws", "ws://", "ws:///ws", "h:1"] {
            assert!(Endpoint::new("", 1, Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn plans() {
        assert_eq!(
            plan(None, None, "alice").unwrap(),
            (vec!["general".to_string()], Target::Room("general".into()))
        );
        assert_eq!(plan(Some("random"), None, "alice").unwrap().0, ["random"]);
        assert_eq!(
            plan(None, Some("bob"), "carol").unwrap(),
            (vec!["dm:bob:carol".to_string()], Target::dm("carol", "bob"))
        );
        assert_eq!(
            plan(Some("x"), Some("bob"), "carol").unwrap().0,
            ["dm:bob:carol", "x"]
        );
        assert!(plan(Some("Bad Room"), None, "a").is_err());
        assert!(plan(None, Some("alice"), "alice").is_err());
        assert!(plan(None, Some("al ice"), "alice").is_err());
        // A DM room given as --room is the DM with the other member.
        assert_eq!(
            plan(Some("dm:alice:bob"), None, "bob").unwrap().1,
            Target::dm("bob", "alice")
        );
    }
}
