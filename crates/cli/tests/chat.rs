//! `parley chat` end to end, against a real `parley serve` process (and a
//! fleet of them): line mode through pipes, signing in with a password, and
//! the TUI driven in tmux.

#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

use std::process::Stdio;
use std::time::Duration;

use parley_client::http;
use parley_client::protocol::RoomEvent;
use parley_testkit::{
    Fleet, NodeProcess, event_kind, eventually, fetch_all, fetch_all_events, poll_until, token,
    without_parley_env,
};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

const BIN: &str = env!("CARGO_BIN_EXE_parley");
const WAIT: Duration = Duration::from_secs(15);

/// A `parley chat` child process in line mode, stdin and stdout piped.
struct Chat {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::UnboundedReceiver<String>,
    seen: Vec<String>,
    stderr: JoinHandle<String>,
}

struct Finished {
    code: Option<i32>,
    stdout: Vec<String>,
    stderr: String,
}

impl Chat {
    fn spawn(name: &str, args: &[&str], env: &[(&str, &str)]) -> Chat {
        let mut cmd = Command::new(BIN);
        cmd.arg("chat")
            .args(args)
            .env_remove("PARLEY_TOKEN")
            .env_remove("PARLEY_PASSWORD")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("parley chat starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut stderr = child.stderr.take().expect("piped stderr");
        let (tx, lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = tokio::spawn(async move {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text).await;
            text
        });
        Chat {
            name: name.to_string(),
            stdin: child.stdin.take(),
            child,
            lines,
            seen: Vec::new(),
            stderr,
        }
    }

    /// A client signed in with a minted token.
    fn with_token(user: &str, node: &NodeProcess, extra: &[&str]) -> Chat {
        let tok = token(user);
        let url = node.ws_url();
        let mut args = vec!["--url", url.as_str(), "--token", tok.as_str()];
        args.extend_from_slice(extra);
        Chat::spawn(user, &args, &[])
    }

    async fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin still open");
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .expect("write to chat stdin");
        stdin.flush().await.expect("flush chat stdin");
    }

    /// Waits for a line that `matches`; returns it.
    async fn expect(&mut self, what: &str, matches: impl Fn(&str) -> bool) -> String {
        if let Some(line) = self.seen.iter().find(|l| matches(l)) {
            return line.clone();
        }
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let line = self.next_line(what, deadline).await;
            if matches(&line) {
                return line;
            }
        }
    }

    /// Waits until `n` lines have matched, for a line shown again (`*
    /// joined ROOM` after a re-join); returns the last.
    async fn expect_times(
        &mut self,
        what: &str,
        n: usize,
        matches: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let found: Vec<&String> = self.seen.iter().filter(|l| matches(l)).collect();
            if found.len() >= n {
                return found[n - 1].clone();
            }
            self.next_line(&format!("{what} (#{n})"), deadline).await;
        }
    }

    /// The next line of stdout (kept in `seen`); fails the test at the
    /// deadline, showing what came.
    async fn next_line(&mut self, what: &str, deadline: tokio::time::Instant) -> String {
        match tokio::time::timeout_at(deadline, self.lines.recv()).await {
            Ok(Some(line)) => {
                self.seen.push(line.clone());
                line
            }
            Ok(None) | Err(_) => {
                let _ = self.child.kill().await;
                let stderr = tokio::time::timeout(Duration::from_secs(2), &mut self.stderr)
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .unwrap_or_default();
                panic!(
                    "{}: no line {what} within {WAIT:?}; stdout so far:\n{}\nstderr:\n{stderr}",
                    self.name,
                    self.seen.join("\n"),
                );
            }
        }
    }

    async fn expect_line(&mut self, wanted: &str) -> String {
        self.expect(&format!("== {wanted:?}"), |l| l == wanted)
            .await
    }

    async fn expect_prefix(&mut self, prefix: &str) -> String {
        self.expect(&format!("starting {prefix:?}"), |l| l.starts_with(prefix))
            .await
    }

    async fn expect_suffix(&mut self, suffix: &str) -> String {
        self.expect(&format!("ending {suffix:?}"), |l| l.ends_with(suffix))
            .await
    }

    /// Closes stdin (EOF) and waits for the process to exit.
    async fn finish(mut self) -> Finished {
        self.stdin = None;
        let status = match tokio::time::timeout(WAIT, self.child.wait()).await {
            Ok(status) => status.expect("wait for chat"),
            Err(_) => {
                let _ = self.child.kill().await;
                panic!(
                    "{}: did not exit within {WAIT:?} after EOF; stdout:\n{}",
                    self.name,
                    self.seen.join("\n")
                );
            }
        };
        while let Some(line) = self.lines.recv().await {
            self.seen.push(line);
        }
        let stderr = tokio::time::timeout(WAIT, &mut self.stderr)
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        Finished {
            code: status.code(),
            stdout: self.seen,
            stderr,
        }
    }
}

/// Parses `[room] #seq from: text`.
fn parse_message(line: &str) -> Option<(&str, u64, &str, &str)> {
    let rest = line.strip_prefix('[')?;
    let (room, rest) = rest.split_once("] #")?;
    let (seq, rest) = rest.split_once(' ')?;
    let (from, text) = rest.split_once(": ")?;
    Some((room, seq.parse().ok()?, from, text))
}

/// The seqs of the lines showing `text` from `from` in `room`.
fn seqs_of(lines: &[String], room: &str, from: &str, text: &str) -> Vec<u64> {
    lines
        .iter()
        .filter_map(|l| parse_message(l))
        .filter(|(r, _, f, t)| (*r, *f, *t) == (room, from, text))
        .map(|(_, seq, _, _)| seq)
        .collect()
}

#[tokio::test]
async fn two_line_mode_clients_chat_through_one_node() {
    let node = NodeProcess::start(BIN, &[]).await;
    let mut alice = Chat::with_token("alice", &node, &[]);
    alice.expect_prefix("* connected to node ").await;
    alice.expect_line("* joined general").await;
    let mut bob = Chat::with_token("bob", &node, &["--room", "general"]);
    bob.expect_line("* joined general").await;
    alice.expect_line("* bob joined general").await;

    alice.send("hello from alice").await;
    bob.send("hi from bob, with: colons [and] #hashes").await;
    for chat in [&mut alice, &mut bob] {
        chat.expect_suffix(" alice: hello from alice").await;
        chat.expect_suffix(" bob: hi from bob, with: colons [and] #hashes")
            .await;
    }
    // Commands answer with status lines.
    bob.send("/who").await;
    bob.expect_line("* 2 in general: alice, bob").await;
    alice.send("/rooms").await;
    alice.expect_prefix("* room general: ").await;
    alice.send("/nonsense").await;
    alice.expect_prefix("* unknown command /nonsense").await;

    let alice = alice.finish().await;
    let bob = bob.finish().await;
    for out in [&alice, &bob] {
        assert_eq!(out.code, Some(0), "exit code; stderr: {}", out.stderr);
        let from_alice = seqs_of(&out.stdout, "general", "alice", "hello from alice");
        let from_bob = seqs_of(
            &out.stdout,
            "general",
            "bob",
            "hi from bob, with: colons [and] #hashes",
        );
        assert_eq!(
            from_alice.len(),
            1,
            "exactly once:\n{}",
            out.stdout.join("\n")
        );
        assert_eq!(
            from_bob.len(),
            1,
            "exactly once:\n{}",
            out.stdout.join("\n")
        );
        let mut seqs = [from_alice[0], from_bob[0]];
        seqs.sort();
        assert_eq!(seqs, [1, 2], "the two messages are seq 1 and 2");
        // Every stdout line is a message line or a status line.
        for line in &out.stdout {
            assert!(
                line.starts_with("* ") || parse_message(line).is_some(),
                "unexpected line {line:?}"
            );
        }
    }
    // Both saw the same seq for the same message.
    assert_eq!(
        seqs_of(&alice.stdout, "general", "alice", "hello from alice"),
        seqs_of(&bob.stdout, "general", "alice", "hello from alice")
    );
}

#[tokio::test]
async fn history_on_join_and_direct_messages() {
    let node = NodeProcess::start(BIN, &[]).await;
    let mut carol = parley_testkit::connect(&node.ws_url(), "carol").await;
    carol.join("lobby", None).await.expect("join lobby");
    for i in 1..=55 {
        carol
            .send("lobby", &format!("m{i}"), None)
            .await
            .expect("send to lobby");
    }
    carol.close().await;
    // Joining shows the room's latest history (the node's page: 50).
    let mut dave = Chat::with_token("dave", &node, &["--room", "lobby"]);
    dave.expect_line("* joined lobby").await;
    dave.expect_line("[lobby] #6 carol: m6").await;
    dave.expect_line("[lobby] #55 carol: m55").await;

    // With stdin at EOF at once, the history is still printed before exit.
    let frank = Chat::with_token("frank", &node, &["--room", "lobby"]);
    let out = frank.finish().await;
    assert_eq!(out.code, Some(0), "stderr: {}", out.stderr);
    assert!(
        out.stdout.iter().any(|l| l == "[lobby] #55 carol: m55"),
        "stdout: {:?}",
        out.stdout
    );

    // --to talks in the DM room; the other side gets it pushed unasked.
    let mut erin = Chat::with_token("erin", &node, &["--to", "dave"]);
    erin.expect_line("* joined dm:dave:erin").await;
    erin.send("psst").await;
    erin.expect_line("[dm:dave:erin] #1 erin: psst").await;
    dave.expect_line("[dm:dave:erin] #1 erin: psst").await;
    // /dm switches dave's target; the answer lands in the DM room.
    dave.send("/dm erin").await;
    dave.expect_line("* joined dm:dave:erin").await;
    dave.send("hi erin").await;
    erin.expect_line("[dm:dave:erin] #2 dave: hi erin").await;
    dave.expect_line("[dm:dave:erin] #2 dave: hi erin").await;
    // /history N pages older messages over REST.
    dave.send("/join lobby").await;
    dave.expect_line("* now talking in lobby").await;
    assert!(dave.seen.iter().all(|l| !l.starts_with("[lobby] #5 ")));
    dave.send("/history 5").await;
    dave.expect_line("* 5 older messages of lobby:").await;
    dave.expect_line("[lobby] #1 carol: m1").await;
    dave.expect_line("[lobby] #5 carol: m5").await;
    dave.expect_line("* that is the beginning of lobby").await;

    let dave = dave.finish().await;
    let erin = erin.finish().await;
    assert_eq!(dave.code, Some(0), "stderr: {}", dave.stderr);
    assert_eq!(erin.code, Some(0), "stderr: {}", erin.stderr);
    assert_eq!(seqs_of(&erin.stdout, "dm:dave:erin", "erin", "psst"), [1]);
    assert_eq!(seqs_of(&dave.stdout, "dm:dave:erin", "erin", "psst"), [1]);
    assert_eq!(
        seqs_of(&erin.stdout, "dm:dave:erin", "dave", "hi erin"),
        [2]
    );
}

#[tokio::test]
async fn register_then_log_in_with_a_password() {
    let node = NodeProcess::start(BIN, &[]).await;
    let url = node.ws_url();
    let good = [("PARLEY_PASSWORD", "correct horse")];

    let mut carol = Chat::spawn(
        "carol",
        &["--url", &url, "--user", "carol", "--register"],
        &good,
    );
    carol.expect_prefix("* connected to node node-").await;
    carol.expect_line("* joined general").await;
    carol.send("registered and here").await;
    carol
        .expect_line("[general] #1 carol: registered and here")
        .await;
    let out = carol.finish().await;
    assert_eq!(out.code, Some(0), "stderr: {}", out.stderr);

    // Logging in again sees the message in the history.
    let mut again = Chat::spawn("carol-again", &["--url", &url, "--user", "carol"], &good);
    again
        .expect_line("[general] #1 carol: registered and here")
        .await;
    let out = again.finish().await;
    assert_eq!(out.code, Some(0), "stderr: {}", out.stderr);

    // Without PARLEY_PASSWORD and without a terminal, the password is the
    // first line of stdin.
    let mut piped = Chat::spawn("carol-piped", &["--url", &url, "--user", "carol"], &[]);
    piped.send("correct horse").await;
    piped.send("typed after the password").await;
    piped
        .expect_line("[general] #2 carol: typed after the password")
        .await;
    let out = piped.finish().await;
    assert_eq!(out.code, Some(0), "stderr: {}", out.stderr);

    // A wrong password: a clear error, a non-zero exit, no chat.
    let wrong = Chat::spawn(
        "carol-wrong",
        &["--url", &url, "--user", "carol"],
        &[("PARLEY_PASSWORD", "wrong horse")],
    );
    let out = wrong.finish().await;
    assert_ne!(out.code, Some(0), "a wrong password must fail");
    assert!(
        out.stderr
            .contains("logging in as carol failed: wrong username or password"),
        "stderr: {}",
        out.stderr
    );
    assert!(out.stdout.is_empty(), "stdout: {:?}", out.stdout);

    // Registering a taken name fails too.
    let taken = Chat::spawn(
        "carol-taken",
        &["--url", &url, "--user", "carol", "--register"],
        &good,
    );
    let out = taken.finish().await;
    assert_ne!(out.code, Some(0));
    assert!(out.stderr.contains("HTTP 409"), "stderr: {}", out.stderr);

    // A token the node refuses.
    let forged = Chat::spawn("forged", &["--url", &url, "--token", "not.a.token"], &[]);
    let out = forged.finish().await;
    assert_ne!(out.code, Some(0));
    assert!(
        out.stderr.contains("refused the token"),
        "stderr: {}",
        out.stderr
    );
}

/// Starts `parley serve` at `addr` on the database in `dir` — a node
/// restarted where it was — and waits until it is ready.
async fn serve_at(addr: std::net::SocketAddr, dir: &std::path::Path) -> Child {
    let child = without_parley_env(&mut Command::new(BIN))
        .arg("serve")
        .env("PARLEY_LISTEN", addr.to_string())
        .env(
            "PARLEY_DATABASE_URL",
            format!("sqlite://{}", dir.join("parley.db").display()),
        )
        .env("PARLEY_JWT_SECRET", parley_testkit::SECRET)
        .env("PARLEY_NODE_ID", "restarted")
        .env("PARLEY_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("parley serve starts");
    let base = format!("http://{addr}");
    let what = format!("the restarted node at {addr} to become ready");
    eventually(&what, WAIT, || async {
        let r = http::request(&base, "GET", "/readyz", None, None).await;
        r.is_ok_and(|r| r.status == 200).then_some(())
    })
    .await;
    child
}

/// Alice chats on a node (fast drain) and sends `text` as #1; then the
/// node drains and exits. Returns the stopped node (to restart where it
/// was), her chat, and what it printed after `* disconnected: `.
async fn alice_loses_her_node(text: &str) -> (NodeProcess, Chat, String) {
    alice_loses_her_node_in("general", text).await
}

/// [`alice_loses_her_node`] in `room`: one bob made (its owner; alice a
/// plain member) unless it is general.
async fn alice_loses_her_node_in(room: &str, text: &str) -> (NodeProcess, Chat, String) {
    let fast_drain = [
        ("PARLEY_DRAIN_GRACE", "100ms"),
        ("PARLEY_DRAIN_SPREAD", "100ms"),
    ];
    let mut node = NodeProcess::start(BIN, &fast_drain).await;
    if room != "general" {
        http::create_room(&node.http(), &token("bob"), room, None, false)
            .await
            .expect("bob makes the room");
    }
    let mut alice = Chat::with_token("alice", &node, &["--room", room]);
    alice.expect_line(&format!("* joined {room}")).await;
    alice.send(text).await;
    alice
        .expect_line(&format!("[{room}] #1 alice: {text}"))
        .await;
    node.signal("TERM");
    node.wait_exit(WAIT).await;
    let lost = alice.expect_prefix("* disconnected: ").await;
    (node, alice, lost)
}

/// A part typed while the node is away is carried out when the client is
/// back, and the room is not re-joined.
#[tokio::test]
async fn a_part_typed_while_disconnected_is_carried_out_and_not_resumed() {
    let (node, mut alice, _) = alice_loses_her_node_in("lobby", "bye soon").await;
    alice.send("/part").await;
    let _restarted = serve_at(node.addr, &node.dir).await;
    alice
        .expect_line("* reconnected to node restarted as alice")
        .await;
    alice.expect_line("* you parted #lobby").await;
    alice
        .expect_line("* not in a room now; /join ROOM or /dm USER")
        .await;
    let out = alice.finish().await;
    assert_eq!(out.code, Some(0), "stderr: {}", out.stderr);
    assert!(
        !out.stdout.iter().any(|l| l == "* resumed lobby"),
        "{}",
        out.stdout.join("\n")
    );
    let members = http::members(&node.http(), &token("bob"), "lobby")
        .await
        .expect("lobby's members");
    let names: Vec<&str> = members.members.iter().map(|m| m.user.as_str()).collect();
    assert_eq!(names, ["bob"]);
}

#[tokio::test]
async fn line_mode_reports_disconnect_and_resume() {
    // The node drains (close 1001) and goes away.
    let (node, mut alice, lost) = alice_loses_her_node("before").await;
    assert!(lost.ends_with(", reconnecting"), "{lost}");

    // It comes back where it was; the client resumes on its own.
    let _restarted = serve_at(node.addr, &node.dir).await;
    alice
        .expect_line("* reconnected to node restarted as alice")
        .await;
    alice.expect_line("* resumed general").await;
    http::post_message(&node.http(), &token("bob"), "general", "while away", None)
        .await
        .expect("REST send");
    alice.send("after").await;
    alice.expect_suffix(" bob: while away").await;
    alice.expect_suffix(" alice: after").await;

    let out = alice.finish().await;
    assert_eq!(out.code, Some(0), "stderr: {}", out.stderr);
    assert_eq!(seqs_of(&out.stdout, "general", "alice", "before"), [1]);
    assert_eq!(
        seqs_of(&out.stdout, "general", "bob", "while away").len(),
        1
    );
    assert_eq!(seqs_of(&out.stdout, "general", "alice", "after").len(), 1);
}

/// A tmux server of its own (`-L`), killed on drop with everything in it.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn new() -> Tmux {
        let found = std::process::Command::new("tmux")
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            found,
            "this test drives the TUI in tmux, and tmux is not installed \
             (apt-get install tmux); CI must install it"
        );
        Tmux {
            socket: format!(
                "parley-chat-test-{}-{}",
                std::process::id(),
                rand::random::<u32>()
            ),
        }
    }

    fn run(&self, args: &[&str]) -> String {
        let out = std::process::Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("tmux runs");
        assert!(
            out.status.success(),
            "tmux {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "chat"])
    }

    async fn wait_for(&self, what: &str) -> String {
        let mut screen = String::new();
        let found = poll_until(WAIT, || {
            screen = self.screen();
            std::future::ready(screen.contains(what).then_some(()))
        })
        .await;
        assert!(
            found.is_some(),
            "{what:?} did not appear on the screen within {WAIT:?}; the screen:\n{screen}"
        );
        screen
    }
}

impl Tmux {
    async fn wait_gone(&self, what: &str) {
        let mut screen = String::new();
        let gone = poll_until(WAIT, || {
            screen = self.screen();
            std::future::ready((!screen.contains(what)).then_some(()))
        })
        .await;
        assert!(
            gone.is_some(),
            "{what:?} stayed on the screen for {WAIT:?}; the screen:\n{screen}"
        );
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = std::process::Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .output();
    }
}

#[tokio::test]
async fn the_tui_in_tmux_sends_and_shows_messages() {
    let tmux = Tmux::new();
    let node = NodeProcess::start(BIN, &[]).await;
    // `sleep 60` keeps the pane (and its last screen) after `parley chat`
    // exits, so that the exit status can be read from it; the tmux server is
    // killed on drop.
    let command = format!(
        "env -u PARLEY_TOKEN -u PARLEY_PASSWORD '{BIN}' chat --url '{}' --token '{}'; \
         echo parley-exited-$?; sleep 60",
        node.ws_url(),
        token("alice")
    );
    tmux.run(&[
        "new-session",
        "-d",
        "-s",
        "chat",
        "-x",
        "120",
        "-y",
        "30",
        &command,
    ]);
    let screen = tmux.wait_for("* joined general").await;
    assert!(screen.contains("● online"), "status bar:\n{screen}");
    assert!(screen.contains("\ngeneral>"), "input line:\n{screen}");

    tmux.run(&["send-keys", "-t", "chat", "-l", "hello from the tui"]);
    tmux.wait_for("general> hello from the tui").await;
    tmux.run(&["send-keys", "-t", "chat", "Enter"]);
    let screen = tmux.wait_for("alice: hello from the tui").await;
    assert!(
        screen.contains("#1 [general] alice: hello from the tui"),
        "message pane:\n{screen}"
    );
    // The room list above the status bar; reacting redraws the message.
    assert!(screen.contains("rooms: general"), "room list:\n{screen}");
    tmux.run(&["send-keys", "-t", "chat", "-l", "/react 1 👍"]);
    tmux.run(&["send-keys", "-t", "chat", "Enter"]);
    tmux.wait_for("alice: hello from the tui · 👍").await;
    let stored = fetch_all(&node.http(), "general").await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].text, "hello from the tui");

    // A message from someone else shows up live, and is read: the pane
    // shows its end.
    let hi = http::post_message(&node.http(), &token("bob"), "general", "hi tui", None)
        .await
        .expect("REST send");
    tmux.wait_for("[general] bob: hi tui").await;
    wait_read(&node, "alice", "general", hi.seq).await;

    // Scrolled up into history, what arrives below is not read (on any of
    // alice's devices) until she scrolls back down.
    let mut last = hi.seq;
    for i in 1..=25 {
        let text = format!("filler {i}");
        let m = http::post_message(&node.http(), &token("dora"), "general", &text, None)
            .await
            .expect("REST send");
        last = m.seq;
    }
    tmux.wait_for("dora: filler 25").await;
    wait_read(&node, "alice", "general", last).await;
    tmux.run(&["send-keys", "-t", "chat", "PPage"]);
    tmux.wait_for("scrolled up (PgDn, Esc)").await;
    let below = http::post_message(&node.http(), &token("bob"), "general", "below", None)
        .await
        .expect("REST send");
    // The room list counts it: the client has it, and has not read it.
    tmux.wait_for("rooms: general 1").await;
    let rooms = http::rooms(&node.http(), &token("alice")).await.unwrap();
    let general = rooms.iter().find(|r| r.room == "general").unwrap();
    assert_eq!(general.read_seq, Some(last), "not read while scrolled up");
    tmux.run(&["send-keys", "-t", "chat", "NPage"]);
    wait_read(&node, "alice", "general", below.seq).await;
    tmux.wait_gone("rooms: general 1").await;

    // A room of one's own: the header shows it private, one's role and
    // its topic.
    tmux.run(&[
        "send-keys",
        "-t",
        "chat",
        "-l",
        "/create plans --private lunch on friday",
    ]);
    tmux.run(&["send-keys", "-t", "chat", "Enter"]);
    tmux.wait_for("#plans (private, you are owner) — lunch on friday")
        .await;

    tmux.run(&["send-keys", "-t", "chat", "-l", "/quit"]);
    tmux.run(&["send-keys", "-t", "chat", "Enter"]);
    tmux.wait_for("parley-exited-0").await;
}

/// The line of a status that shows message `seq` of `room` again after a
/// change: `* WHAT: [room] #seq …`.
fn changed(what: &str, room: &str, seq: u64, from: &str, body: &str) -> String {
    format!("* {what}: [{room}] #{seq} {from}: {body}")
}

#[tokio::test]
async fn replies_edits_deletes_reactions_search_and_unread_between_two_clients() {
    let node = NodeProcess::start(BIN, &[]).await;
    two_people_chat(&node, &node).await;
}

/// The same two people on a fleet: alice on one node, bob on another, the
/// nodes sharing PostgreSQL and Redis. Each change reaches the other node
/// live; search and read state come from the shared store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_edits_deletes_reactions_search_and_unread_across_a_fleet() {
    let fleet = Fleet::start(BIN, 2, &[]).await;
    two_people_chat(&fleet.nodes[0], &fleet.nodes[1]).await;
}

/// Waits until `user`'s read position in `room`, as `node` reports it in
/// `GET /api/rooms`, is `seq`.
async fn wait_read(node: &NodeProcess, user: &str, room: &str, seq: u64) {
    let tok = token(user);
    let what = format!("{user}'s read position in {room} on {}", node.http());
    eventually(&what, WAIT, || async {
        let rooms = http::rooms(&node.http(), &tok).await.ok()?;
        let r = rooms.into_iter().find(|r| r.room == room)?;
        (r.read_seq == Some(seq)).then_some(())
    })
    .await;
}

/// `user`'s client connected to `node` (its id is `node-PORT`, see
/// `parley_testkit`) and in general.
async fn in_general(user: &str, node: &NodeProcess) -> Chat {
    let mut chat = Chat::with_token(user, node, &[]);
    let port = node.addr.port();
    chat.expect_line(&format!("* connected to node node-{port} as {user}"))
        .await;
    chat.expect_line("* joined general").await;
    chat
}

/// Waits until both chats have shown `line`.
async fn both_see(alice: &mut Chat, bob: &mut Chat, line: &str) {
    all_see([alice, bob], line).await;
}

/// Waits until every one of `chats` has shown `line`.
async fn all_see<const N: usize>(chats: [&mut Chat; N], line: &str) {
    for chat in chats {
        chat.expect_line(line).await;
    }
}

/// Alice (her `parley chat` connected to `alice_node`) and bob (to
/// `bob_node`) send, reply, edit, react, delete, search and read, each
/// seeing the other's doings live in their terminal.
async fn two_people_chat(alice_node: &NodeProcess, bob_node: &NodeProcess) {
    let mut alice = in_general("alice", alice_node).await;
    let mut bob = in_general("bob", bob_node).await;
    alice.expect_line("* bob joined general").await;

    // A message and a reply that quotes it; both sides see both.
    alice.send("lunch at noon?").await;
    let first = "[general] #1 alice: lunch at noon?";
    bob.expect_line(first).await;
    bob.send("/reply 1 sounds good").await;
    let reply = "[general] #2 bob: sounds good (↪ #1 alice: lunch at noon?)";
    for chat in [&mut alice, &mut bob] {
        chat.expect_line(first).await;
        chat.expect_line(reply).await;
    }

    // Alice edits her message; bob may not.
    alice.send("/edit 1 lunch at one?").await;
    let edited = changed(
        "alice edited",
        "general",
        1,
        "alice",
        "lunch at one? (edited)",
    );
    both_see(&mut alice, &mut bob, &edited).await;
    bob.send("/edit 1 hijacked").await;
    bob.expect_line("* #1 is alice's message; you can edit only your own")
        .await;
    // A reaction, toggled off again by the same command.
    bob.send("/react 1 👍").await;
    let reacted = changed(
        "bob reacted 👍",
        "general",
        1,
        "alice",
        "lunch at one? (edited) · 👍 1",
    );
    both_see(&mut alice, &mut bob, &reacted).await;
    alice.send("/react #1 👍").await;
    let both = changed(
        "alice reacted 👍",
        "general",
        1,
        "alice",
        "lunch at one? (edited) · 👍 2",
    );
    bob.expect_line(&both).await;
    bob.send("/react 1 👍").await;
    let back = changed(
        "bob took back 👍",
        "general",
        1,
        "alice",
        "lunch at one? (edited) · 👍 1",
    );
    both_see(&mut alice, &mut bob, &back).await;
    // The author deletes (and the room's owners and moderators): the
    // server refuses bob alice's message, and takes his own.
    bob.send("/delete 1").await;
    bob.expect_prefix("* delete not sent (forbidden): ").await;
    bob.send("/delete 2").await;
    let deleted = changed(
        "bob deleted",
        "general",
        2,
        "bob",
        "[deleted] (↪ #1 alice: lunch at one?)",
    );
    both_see(&mut alice, &mut bob, &deleted).await;
    // Alice replies too, and deletes her own reply.
    alice.send("/reply 1 or at two").await;
    let second_reply = "[general] #8 alice: or at two (↪ #1 alice: lunch at one?)";
    both_see(&mut alice, &mut bob, second_reply).await;
    alice.send("/delete 8").await;
    let deleted = changed(
        "alice deleted",
        "general",
        8,
        "alice",
        "[deleted] (↪ #1 alice: lunch at one?)",
    );
    both_see(&mut alice, &mut bob, &deleted).await;

    // Search, on either node, finds the edited text, not the old one or
    // the deleted replies.
    for chat in [&mut alice, &mut bob] {
        chat.send("/search lunch").await;
        chat.expect_line("* search \"lunch\": 1 result, newest first:")
            .await;
        chat.expect_line("* found [general] #1 alice: lunch at one?")
            .await;
        chat.send("/search noon").await;
        chat.expect_line("* search \"noon\": nothing found").await;
    }

    // Reading: general is where both look, so it is read up to its last
    // event (seq 9: three messages, an edit, three reactions, two deletes).
    wait_read(alice_node, "alice", "general", 9).await;
    wait_read(bob_node, "bob", "general", 9).await;
    // Bob reads random once, then looks at general again; what alice says
    // in random meanwhile is unread for him, a mention among it.
    alice.send("/join random").await;
    alice.expect_line("* joined random").await;
    alice.send("first in random").await;
    alice
        .expect_line("[random] #1 alice: first in random")
        .await;
    bob.send("/join random").await;
    bob.expect_line("[random] #1 alice: first in random").await;
    wait_read(bob_node, "bob", "random", 1).await;
    bob.send("/join general").await;
    bob.expect_line("* now talking in general").await;
    alice.send("anyone here?").await;
    alice.send("@bob look").await;
    bob.expect_line("[random] #2 alice: anyone here?").await;
    bob.expect_line("[random] #3 alice: @bob look").await;
    bob.send("/rooms").await;
    let random = bob.expect_prefix("* room random: ").await;
    assert!(
        random.ends_with(" 3 messages, 2 unread, 1 mention"),
        "{random}"
    );
    // Looking at random again reads it; the counts clear.
    bob.send("/join random").await;
    bob.expect_line("* now talking in random").await;
    wait_read(bob_node, "bob", "random", 3).await;
    bob.send("/rooms").await;
    bob.expect("random without unread", |l| {
        l.starts_with("* room random: ") && l.ends_with(" 3 messages, 0 unread")
    })
    .await;

    let alice = alice.finish().await;
    let bob = bob.finish().await;
    for out in [&alice, &bob] {
        assert_eq!(out.code, Some(0), "stderr: {}", out.stderr);
        // Message lines stay once per seq; the changes are status lines.
        for seq in [1, 8] {
            let prefix = format!("[general] #{seq} ");
            assert_eq!(
                out.stdout.iter().filter(|l| l.starts_with(&prefix)).count(),
                1,
                "{}",
                out.stdout.join("\n")
            );
        }
    }
}

/// Edits, reactions and replies typed while the node is away are queued
/// with their nonce and carried out once when the client is back.
#[tokio::test]
async fn changes_typed_while_disconnected_are_carried_out_once() {
    let (node, mut alice, _) = alice_loses_her_node("draft").await;
    alice.send("/edit 1 final").await;
    alice.send("/react 1 🎉").await;
    alice.send("/reply 1 see above").await;

    let _restarted = serve_at(node.addr, &node.dir).await;
    alice.expect_line("* resumed general").await;
    alice
        .expect_line(&changed(
            "alice edited",
            "general",
            1,
            "alice",
            "final (edited)",
        ))
        .await;
    alice
        .expect_line(&changed(
            "alice reacted 🎉",
            "general",
            1,
            "alice",
            "final (edited) · 🎉 1",
        ))
        .await;
    alice
        .expect_line("[general] #4 alice: see above (↪ #1 alice: final)")
        .await;
    let out = alice.finish().await;
    assert_eq!(out.code, Some(0), "stderr: {}", out.stderr);

    let kinds: Vec<&str> = fetch_all_events(&node.http(), "general")
        .await
        .iter()
        .map(event_kind)
        .collect();
    assert_eq!(kinds, ["message", "edited", "reaction", "message"]);
}

#[tokio::test]
async fn an_owner_and_a_moderator_run_a_private_room() {
    let node = NodeProcess::start(BIN, &[]).await;
    private_room_moderated(&node, &node, &node).await;
}

/// The same three on a fleet: the owner and the third member on one node,
/// the moderator on the other, so every event, kick and ban crosses nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_and_a_moderator_run_a_private_room_across_a_fleet() {
    let fleet = Fleet::start(BIN, 2, &[]).await;
    private_room_moderated(&fleet.nodes[0], &fleet.nodes[1], &fleet.nodes[0]).await;
}

/// The line of a member or topic event: `* [plans] #SEQ TEXT`.
fn event(seq: u64, text: &str) -> String {
    format!("* [plans] #{seq} {text}")
}

/// Alice creates the private room plans and invites bob and carol; she
/// makes bob a moderator, who sets the topic, kicks carol and — invited
/// again — bans her. Each of them drives a `parley chat` (alice's on
/// `alice_node`, …) and sees every step live; the one taken out is told
/// by whom, and is kept out.
async fn private_room_moderated(
    alice_node: &NodeProcess,
    bob_node: &NodeProcess,
    carol_node: &NodeProcess,
) {
    let mut alice = in_general("alice", alice_node).await;
    let mut bob = in_general("bob", bob_node).await;
    let mut carol = in_general("carol", carol_node).await;

    alice.send("/create plans --private friday lunch").await;
    alice
        .expect_line("* created room plans (private), topic: friday lunch")
        .await;
    alice.expect_line("* joined plans").await;
    // Private: nobody else gets in, nor sees it.
    carol.send("/join plans").await;
    carol
        .expect_prefix("* cannot join plans (forbidden): ")
        .await;
    carol.expect_line("* now talking in general").await;
    carol.send("/rooms").await;
    carol.expect_prefix("* room general: ").await;

    // Invited, bob joins and sees the room's log so far; carol's invite he
    // sees live.
    alice.send("/invite bob").await;
    alice.expect_line(&event(1, "alice added bob")).await;
    bob.send("/join plans").await;
    bob.expect_line("* joined plans").await;
    bob.expect_line(&event(1, "alice added bob")).await;
    alice.expect_line("* bob joined plans").await;
    alice.send("/invite carol").await;
    all_see([&mut alice, &mut bob], &event(2, "alice added carol")).await;
    carol.send("/join plans").await;
    carol.expect_line("* joined plans").await;
    carol.expect_line(&event(2, "alice added carol")).await;

    // The owner makes bob a moderator; he sets the topic.
    alice.send("/role bob moderator").await;
    let promoted = event(3, "alice made bob moderator");
    all_see([&mut alice, &mut bob, &mut carol], &promoted).await;
    bob.send("/topic lunch on friday, 1pm").await;
    let topic = event(4, "bob set the topic: lunch on friday, 1pm");
    all_see([&mut alice, &mut bob, &mut carol], &topic).await;
    carol.send("/topic").await;
    carol
        .expect_line("* topic of plans: lunch on friday, 1pm")
        .await;
    carol.send("hi all").await;
    all_see(
        [&mut alice, &mut bob, &mut carol],
        "[plans] #5 carol: hi all",
    )
    .await;
    // A member moderates nothing; a moderator not the owner.
    carol.send("/kick bob").await;
    carol.expect_prefix("* kick bob failed (forbidden): ").await;
    bob.send("/kick alice").await;
    bob.expect_prefix("* kick alice failed (forbidden): ").await;
    alice.send("/members").await;
    alice
        .expect_line("* 3 members of plans: alice (owner), bob (moderator), carol (member)")
        .await;

    // The moderator kicks carol: everyone sees it, carol is told by whom
    // and is out — a private room does not let her back by herself.
    bob.send("/kick carol").await;
    let kicked = event(6, "bob kicked carol");
    all_see([&mut alice, &mut bob, &mut carol], &kicked).await;
    carol
        .expect_line("* you were kicked from #plans by bob")
        .await;
    carol.expect_line("* now talking in general").await;
    alice.send("/who").await;
    alice.expect_line("* 2 in plans: alice, bob").await;
    // Each refused join is shown: this is her second.
    let refused_join = |l: &str| l.starts_with("* cannot join plans (forbidden): ");
    carol.send("/join plans").await;
    carol.expect_times("a refused join", 2, refused_join).await;

    // Invited again, then banned, with a reason: out, and kept out.
    alice.send("/invite carol").await;
    all_see([&mut alice, &mut bob], &event(7, "alice added carol")).await;
    carol.send("/join plans").await;
    carol
        .expect_times("a second join", 2, |l| l == "* joined plans")
        .await;
    // What she saw before is not shown again.
    carol.expect_line(&event(7, "alice added carol")).await;
    bob.send("/ban carol spamming links").await;
    let banned = event(8, "bob banned carol: spamming links");
    all_see([&mut alice, &mut bob, &mut carol], &banned).await;
    carol
        .expect_line("* you were banned from #plans by bob: spamming links")
        .await;
    carol.send("/join plans").await;
    carol.expect_times("a refused join", 3, refused_join).await;
    alice.send("/invite carol").await;
    alice
        .expect_prefix("* invite carol failed (conflict): ")
        .await;
    bob.send("/bans").await;
    bob.expect_line("* 1 ban in plans:").await;
    bob.expect("carol's ban", |l| {
        l.starts_with("* banned carol by bob at ") && l.ends_with(": spamming links")
    })
    .await;
    alice.send("/members").await;
    alice
        .expect_line("* 2 members of plans: alice (owner), bob (moderator)")
        .await;
    // The room list marks the room private and says whose role is what.
    for (chat, role) in [(&mut alice, "owner"), (&mut bob, "moderator")] {
        chat.send("/rooms").await;
        let line = chat.expect_prefix("* room plans: ").await;
        assert!(
            line.starts_with(&format!("* room plans: private, you are {role}, ")),
            "{line}"
        );
        assert!(line.ends_with(" · topic: lunch on friday, 1pm"), "{line}");
    }
    // The last owner cannot part; she stays.
    alice.send("/part").await;
    alice
        .expect_prefix("* part plans failed (conflict): ")
        .await;
    // Bob parts: the room is gone from his terminal, and alice sees it.
    bob.send("/part").await;
    all_see([&mut alice], &event(9, "bob parted")).await;
    bob.expect_line("* you parted #plans").await;
    bob.expect_line("* now talking in general").await;

    let alice = alice.finish().await;
    let bob = bob.finish().await;
    let carol = carol.finish().await;
    for out in [&alice, &bob, &carol] {
        assert_eq!(out.code, Some(0), "stderr: {}", out.stderr);
        // Each event once, in every terminal that saw it.
        for seq in 1..=8 {
            let prefix = format!("* [plans] #{seq} ");
            let n = out.stdout.iter().filter(|l| l.starts_with(&prefix)).count();
            assert!(n <= 1, "#{seq} {n} times:\n{}", out.stdout.join("\n"));
        }
    }
    // Carol's rooms do not show plans.
    assert!(
        !carol.stdout.iter().any(|l| l.starts_with("* room plans")),
        "{}",
        carol.stdout.join("\n")
    );
    // The room's log, as its owner reads it.
    let page = http::messages(
        &alice_node.http(),
        &token("alice"),
        "plans",
        None,
        None,
        None,
    )
    .await
    .expect("the owner reads plans");
    let kinds: Vec<String> = page
        .messages
        .iter()
        .map(|e| match e {
            RoomEvent::Member(m) => format!("{} {}", m.change.as_str(), m.user),
            RoomEvent::Topic(_) => "topic".into(),
            RoomEvent::Message(m) => format!("message {}", m.from),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "added bob",
            "added carol",
            "role bob",
            "topic",
            "message carol",
            "removed carol",
            "added carol",
            "banned carol",
            "removed bob",
        ]
    );
}
