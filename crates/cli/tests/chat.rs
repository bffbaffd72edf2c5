//! `parley chat` end to end, against a real `parley serve` process: line
//! mode through pipes, signing in with a password, and the TUI driven in
//! tmux.

#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

use std::process::Stdio;
use std::time::Duration;

use parley_client::http;
use parley_testkit::{NodeProcess, eventually, fetch_all, poll_until, token, without_parley_env};
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
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(line)) => {
                    self.seen.push(line.clone());
                    if matches(&line) {
                        return line;
                    }
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

#[tokio::test]
async fn line_mode_reports_disconnect_and_resume() {
    let fast_drain = [
        ("PARLEY_DRAIN_GRACE", "100ms"),
        ("PARLEY_DRAIN_SPREAD", "100ms"),
    ];
    let mut node = NodeProcess::start(BIN, &fast_drain).await;
    let mut alice = Chat::with_token("alice", &node, &[]);
    alice.expect_line("* joined general").await;
    alice.send("before").await;
    alice.expect_line("[general] #1 alice: before").await;

    // The node drains (close 1001) and goes away.
    node.signal("TERM");
    node.wait_exit(WAIT).await;
    let lost = alice.expect_prefix("* disconnected: ").await;
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
        screen.contains("[general] alice: hello from the tui"),
        "message pane:\n{screen}"
    );
    let stored = fetch_all(&node.http(), "general").await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].text, "hello from the tui");

    // A message from someone else shows up live.
    http::post_message(&node.http(), &token("bob"), "general", "hi tui", None)
        .await
        .expect("REST send");
    tmux.wait_for("[general] bob: hi tui").await;

    tmux.run(&["send-keys", "-t", "chat", "-l", "/quit"]);
    tmux.run(&["send-keys", "-t", "chat", "Enter"]);
    tmux.wait_for("parley-exited-0").await;
}
