//! Accounts and sessions (protocol-chat.md §5, issue 12 faults 2 and 4):
//! usernames are unique case-insensitively and every way in (register,
//! login, a token's `sub`, DM names) folds case the same way; tokens can be
//! revoked (logout, logout-all, password change, a disabled user) on every
//! node within 5 s, closing the connections that use them with 4401; failed
//! logins are throttled cluster-wide; `parley admin` manages users on the
//! configured store; stores with names that differ only in case are
//! migrated, or refused with the names to resolve.

#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use parley_client::protocol::{ErrorCode, ServerFrame, close};
use parley_client::{ClientError, ConnectOptions, Connection, Welcome, http};
use parley_testkit::{Fleet, NodeProcess, SECRET, TestNode, eventually, free_port, token};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BIN: &str = env!("CARGO_BIN_EXE_parley");
const PW: &str = "correct horse";
const NEW_PW: &str = "battery staple";
/// A revoked token is refused, and its connections closed, within this.
const REVOKE_LIMIT: Duration = Duration::from_secs(5);
const WAIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------- helpers

async fn call(
    base: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> http::Response {
    http::request(
        base,
        method,
        path,
        token,
        body.map(|b| serde_json::to_vec(&b).unwrap()),
    )
    .await
    .unwrap_or_else(|e| panic!("{method} {base}{path}: {e}"))
}

fn error_code(r: &http::Response) -> String {
    r.json::<Value>()
        .ok()
        .and_then(|v| v["error"]["code"].as_str().map(str::to_string))
        .unwrap_or_else(|| format!("(no error code in {:?})", r.text()))
}

fn user_name(r: &http::Response) -> String {
    let v: Value = r.json().unwrap();
    v["user"]["name"].as_str().unwrap().to_string()
}

fn token_of(r: &http::Response) -> String {
    let v: Value = r.json().unwrap();
    v["token"].as_str().unwrap().to_string()
}

async fn register(base: &str, name: &str, password: &str) -> http::Response {
    let body = json!({"username": name, "password": password});
    call(base, "POST", "/api/auth/register", None, Some(body)).await
}

async fn login(base: &str, name: &str, password: &str) -> http::Response {
    let body = json!({"username": name, "password": password});
    call(base, "POST", "/api/auth/login", None, Some(body)).await
}

/// Registers `name` and returns its token.
async fn registered(base: &str, name: &str) -> String {
    let r = register(base, name, PW).await;
    assert_eq!(r.status, 201, "register {name}: {}", r.text());
    token_of(&r)
}

/// Logs in and returns the token.
async fn logged_in(base: &str, name: &str, password: &str) -> String {
    let r = login(base, name, password).await;
    assert_eq!(r.status, 200, "login {name}: {}", r.text());
    token_of(&r)
}

async fn hello(ws_url: &str, token: &str) -> Result<Welcome, ClientError> {
    let mut c = Connection::connect(ws_url).await.unwrap();
    c.hello(token).await
}

async fn open(ws_url: &str, token: &str) -> Connection {
    let mut c = Connection::connect(ws_url).await.unwrap();
    c.hello(token).await.unwrap();
    c
}

/// A connection authenticated with the upgrade request's bearer token.
async fn open_bearer(ws_url: &str, token: &str) -> Connection {
    let opts = ConnectOptions {
        bearer: Some(token.to_string()),
        ..Default::default()
    };
    let mut c = Connection::connect_with(ws_url, &opts).await.unwrap();
    c.await_welcome().await.unwrap();
    c
}

/// Status of `GET /api/rooms` with `token`.
async fn rooms_status(base: &str, token: &str) -> u16 {
    call(base, "GET", "/api/rooms", Some(token), None)
        .await
        .status
}

/// Waits (at most `limit`) for an open connection to get `error
/// unauthorized` and then close 4401.
async fn expect_revoked(what: &str, conn: &mut Connection, limit: Duration) {
    let deadline = tokio::time::Instant::now() + limit;
    let mut saw_error = false;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match conn.recv_timeout(left).await {
            Ok(ServerFrame::Error {
                code: ErrorCode::Unauthorized,
                ..
            }) => {
                saw_error = true;
            }
            Ok(_) => {}
            Err(ClientError::Timeout(_)) => {
                panic!("{what}: still open {limit:?} after the revocation")
            }
            Err(e) => {
                assert!(saw_error, "{what}: closed without error unauthorized: {e}");
                assert_eq!(e.close_code(), Some(close::UNAUTHORIZED), "{what}: {e}");
                return;
            }
        }
    }
}

/// Waits (at most `limit`) until `GET /api/rooms` with `token` is 401.
async fn expect_refused_within(base: &str, token: &str, limit: Duration) {
    eventually(
        &format!("the token to be refused by {base}"),
        limit,
        || async move { (rooms_status(base, token).await == 401).then_some(()) },
    )
    .await
}

/// `POST /api/auth/login` over a raw socket, with an optional
/// `X-Forwarded-For`: (status, Retry-After).
async fn raw_login(
    addr: std::net::SocketAddr,
    name: &str,
    password: &str,
    forwarded_for: Option<&str>,
) -> (u16, Option<u64>) {
    let body = json!({"username": name, "password": password}).to_string();
    let xff = forwarded_for
        .map(|a| format!("X-Forwarded-For: {a}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "POST /api/auth/login HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n{xff}Connection: close\r\n\r\n{body}",
        body.len()
    );
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let text = String::from_utf8_lossy(&response);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {text:?}"));
    let retry_after = text
        .split("\r\n\r\n")
        .next()
        .unwrap_or("")
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("retry-after")
                .then(|| v.trim().parse().ok())?
        });
    (status, retry_after)
}

/// The Retry-After of a 429, in seconds.
fn retry_after(r: &http::Response) -> u64 {
    r.headers
        .get("retry-after")
        .unwrap_or_else(|| panic!("429 without Retry-After: {:?}", r.headers))
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// Runs `parley admin --database-url URL ARGS…`, with `stdin` as its input.
async fn admin(url: &str, args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = tokio::process::Command::new(BIN);
    parley_testkit::without_parley_env(&mut cmd)
        .arg("admin")
        .args(["--database-url", url])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).await.unwrap();
    }
    drop(input);
    tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("parley admin finishes")
        .unwrap()
}

/// `admin`, which must succeed; returns its stdout.
async fn admin_ok(url: &str, args: &[&str], stdin: Option<&str>) -> String {
    let out = admin(url, args, stdin).await;
    assert!(
        out.status.success(),
        "parley admin {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The `parley admin user list` row of `name`: its whitespace-separated columns.
fn listed(list: &str, name: &str) -> Vec<String> {
    list.lines()
        .map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .find(|cols| cols.first().is_some_and(|c| c == name))
        .unwrap_or_else(|| panic!("{name} not listed in:\n{list}"))
}

/// Runs `parley serve` on `database_url` and expects it to refuse to start;
/// returns what it printed.
async fn serve_refuses(database_url: &str, extra: &[(&str, &str)]) -> String {
    let mut cmd = tokio::process::Command::new(BIN);
    parley_testkit::without_parley_env(&mut cmd)
        .arg("serve")
        .env("PARLEY_LISTEN", format!("127.0.0.1:{}", free_port()))
        .env("PARLEY_DATABASE_URL", database_url)
        .env("PARLEY_JWT_SECRET", SECRET)
        .env("PARLEY_LOG_FORMAT", "text")
        .envs(extra.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(30), cmd.output())
        .await
        .expect("parley serve should exit at once, refusing the store")
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "serve started:\n{text}");
    text
}

// ------------------------------------------- fault 2: case-insensitive names

#[tokio::test]
async fn names_that_differ_only_in_case_are_one_account() {
    let node = TestNode::start().await;
    let base = node.http();
    let r = register(&base, "alice", PW).await;
    assert_eq!(r.status, 201, "{}", r.text());
    for variant in ["Alice", "ALICE", "aLiCe"] {
        let r = register(&base, variant, "another password").await;
        assert_eq!(
            (r.status, error_code(&r)),
            (409, "conflict".to_string()),
            "registering {variant} while alice exists: {}",
            r.text()
        );
    }
    // The registered spelling is kept, and login in any case finds it.
    let r = register(&base, "Bob", PW).await;
    assert_eq!((r.status, user_name(&r)), (201, "Bob".to_string()));
    for spelling in ["alice", "ALICE", "Alice"] {
        let r = login(&base, spelling, PW).await;
        assert_eq!(r.status, 200, "login as {spelling}: {}", r.text());
        assert_eq!(user_name(&r), "alice");
    }
    for spelling in ["bob", "BOB", "Bob"] {
        let r = login(&base, spelling, PW).await;
        assert_eq!(r.status, 200, "login as {spelling}: {}", r.text());
        assert_eq!(user_name(&r), "Bob");
    }
    // Another variant's password is just a wrong password.
    assert_eq!(login(&base, "Alice", "another password").await.status, 401);
}

#[tokio::test]
async fn token_subjects_fold_case_to_the_registered_user_on_ws_and_rest() {
    let node = TestNode::start().await;
    let base = node.http();
    registered(&base, "Bob").await;
    for sub in ["bob", "BOB", "Bob"] {
        let w = hello(&node.ws_url(), &token(sub)).await.unwrap();
        assert_eq!(w.user, "Bob", "a token for {sub:?} is Bob");
    }
    // A name nobody registered is its case-folded self.
    for sub in ["zed", "Zed", "ZED"] {
        assert_eq!(
            hello(&node.ws_url(), &token(sub)).await.unwrap().user,
            "zed"
        );
    }
    // REST agrees with the WebSocket.
    let mut carol = open(&node.ws_url(), &token("carol")).await;
    carol.join("general", None).await.unwrap();
    let m = http::post_message(&base, &token("BOB"), "general", "hi", None)
        .await
        .unwrap();
    assert_eq!(m.from, "Bob");
    assert_eq!(carol.next_message(WAIT).await.unwrap().from, "Bob");

    // DM rooms use the case-folded names, whatever spelling was used.
    let mut bob = open(&node.ws_url(), &token("bob")).await;
    let ack = carol.send_dm("BOB", "psst", None).await.unwrap();
    assert_eq!(ack.room, "dm:bob:carol");
    let m = bob.next_message(WAIT).await.unwrap();
    assert_eq!((m.room.as_str(), m.text.as_str()), ("dm:bob:carol", "psst"));
    let page = http::messages(&base, &token("BOB"), "dm:bob:carol", None, None, None)
        .await
        .unwrap();
    assert_eq!(page.messages.len(), 1);
    let listed = http::rooms(&base, &token("Bob")).await.unwrap();
    assert!(
        listed.iter().any(|r| r.room == "dm:bob:carol"),
        "{listed:?}"
    );
    // Another spelling of the room is not an alias of it.
    assert_eq!(
        bob.join("dm:Bob:carol", None).await.unwrap_err().code(),
        Some(ErrorCode::BadRequest)
    );
    // Nor is another spelling of yourself someone else.
    assert_eq!(
        bob.send_dm("BOB", "me?", None).await.unwrap_err().code(),
        Some(ErrorCode::BadRequest)
    );
    // A third user stays out, whatever the case.
    let e = http::messages(&base, &token("Dave"), "dm:bob:carol", None, None, None)
        .await
        .unwrap_err();
    assert!(matches!(e, ClientError::Http { status: 403, .. }), "{e}");
}

// ------------------------------------------------- fault 4: revocation

#[tokio::test]
async fn logout_revokes_this_token_and_closes_its_connections() {
    let node = TestNode::start().await;
    let (base, ws) = (node.http(), node.ws_url());
    registered(&base, "alice").await;
    let t1 = logged_in(&base, "alice", PW).await;
    let t2 = logged_in(&base, "ALICE", PW).await;
    let mut by_hello = open(&ws, &t1).await;
    let mut by_upgrade = open_bearer(&ws, &t1).await;
    let mut other = open(&ws, &t2).await;

    let r = call(&base, "POST", "/api/auth/logout", Some(&t1), None).await;
    assert_eq!(r.status, 204, "logout: {}", r.text());
    expect_revoked("hello session", &mut by_hello, REVOKE_LIMIT).await;
    expect_revoked("upgrade session", &mut by_upgrade, REVOKE_LIMIT).await;
    assert_eq!(rooms_status(&base, &t1).await, 401);
    let e = hello(&ws, &t1).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Unauthorized), "{e}");
    let opts = ConnectOptions {
        bearer: Some(t1.clone()),
        ..Default::default()
    };
    assert!(Connection::connect_with(&ws, &opts).await.is_err());
    // Logging out twice: the token is no longer valid.
    let r = call(&base, "POST", "/api/auth/logout", Some(&t1), None).await;
    assert_eq!(r.status, 401);
    // The user's other token is untouched.
    assert_eq!(rooms_status(&base, &t2).await, 200);
    other.ping().await.unwrap();
}

#[tokio::test]
async fn logout_all_and_password_change_revoke_every_token_of_the_user() {
    let node = TestNode::start().await;
    let (base, ws) = (node.http(), node.ws_url());
    let t0 = registered(&base, "alice").await;
    let t1 = logged_in(&base, "alice", PW).await;
    let minted = token("Alice"); // an operator's backend's token
    let mut c0 = open(&ws, &t0).await;
    let mut c1 = open(&ws, &minted).await;
    let bob = registered(&base, "bob").await;

    let r = call(&base, "POST", "/api/auth/logout-all", Some(&t1), None).await;
    assert_eq!(r.status, 204, "logout-all: {}", r.text());
    expect_revoked("c0", &mut c0, REVOKE_LIMIT).await;
    expect_revoked("c1", &mut c1, REVOKE_LIMIT).await;
    for t in [&t0, &t1, &minted] {
        assert_eq!(rooms_status(&base, t).await, 401);
    }
    assert_eq!(rooms_status(&base, &bob).await, 200, "bob is not alice");
    // Logging in again works at once.
    let t2 = logged_in(&base, "alice", PW).await;
    assert_eq!(rooms_status(&base, &t2).await, 200);
    let mut c2 = open(&ws, &t2).await;

    // Password change: the old password must be right, the new one valid.
    let change = |old: &str, new: &str| json!({"old": old, "new": new});
    let r = call(
        &base,
        "POST",
        "/api/auth/password",
        Some(&t2),
        Some(change("wrong password", NEW_PW)),
    )
    .await;
    assert_eq!((r.status, error_code(&r)), (403, "forbidden".to_string()));
    let r = call(
        &base,
        "POST",
        "/api/auth/password",
        Some(&t2),
        Some(change(PW, "short")),
    )
    .await;
    assert_eq!((r.status, error_code(&r)), (400, "bad_request".to_string()));
    let r = call(
        &base,
        "POST",
        "/api/auth/password",
        Some(&t2),
        Some(change(PW, NEW_PW)),
    )
    .await;
    assert_eq!(r.status, 200, "password change: {}", r.text());
    assert_eq!(user_name(&r), "alice");
    let t3 = token_of(&r);
    // ...which logged out every other token, and returned a working one.
    expect_revoked("c2", &mut c2, REVOKE_LIMIT).await;
    assert_eq!(rooms_status(&base, &t2).await, 401);
    assert_eq!(rooms_status(&base, &t3).await, 200);
    assert_eq!(hello(&ws, &t3).await.unwrap().user, "alice");
    assert_eq!(login(&base, "alice", PW).await.status, 401);
    assert_eq!(login(&base, "alice", NEW_PW).await.status, 200);
    // A user who never registered has no password to change.
    let r = call(
        &base,
        "POST",
        "/api/auth/password",
        Some(&token("zed")),
        Some(change(PW, NEW_PW)),
    )
    .await;
    assert_eq!((r.status, error_code(&r)), (404, "not_found".to_string()));
}

// ---------------------------------------------------- fault 4: throttling

#[tokio::test]
async fn failed_logins_are_throttled_until_the_window_passes() {
    let node = NodeProcess::start(BIN, &[("PARLEY_LOGIN_WINDOW", "4s")]).await;
    let base = node.http();
    registered(&base, "alice").await;
    // A success resets the username's count.
    for _ in 0..4 {
        assert_eq!(login(&base, "alice", "wrong password").await.status, 401);
    }
    assert_eq!(login(&base, "alice", PW).await.status, 200);
    for _ in 0..5 {
        assert_eq!(login(&base, "Alice", "wrong password").await.status, 401);
    }
    // The sixth attempt is refused, even with the right password, in any case.
    let r = login(&base, "ALICE", PW).await;
    assert_eq!(
        (r.status, error_code(&r)),
        (429, "rate_limited".to_string())
    );
    let wait = retry_after(&r);
    assert!((1..=4).contains(&wait), "Retry-After {wait}");
    let r = login(&base, "alice", PW).await;
    assert_eq!(r.status, 429);
    // Other users are not affected.
    registered(&base, "bob").await;
    assert_eq!(login(&base, "bob", PW).await.status, 200);
    // Once the window has passed, the right password works again.
    tokio::time::sleep(Duration::from_secs(retry_after(&r)) + Duration::from_millis(300)).await;
    assert_eq!(login(&base, "alice", PW).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_throttling_is_cluster_wide() {
    let fleet = Fleet::start(BIN, 2, &[]).await;
    let bases: Vec<String> = fleet.nodes.iter().map(|n| n.http()).collect();
    registered(&bases[0], "alice").await;
    registered(&bases[1], "bob").await;
    // Five failures, spread over both nodes...
    for i in 0..5 {
        let r = login(&bases[i % 2], "alice", "wrong password").await;
        assert_eq!(r.status, 401, "attempt {i}: {}", r.text());
    }
    // ...and both nodes refuse the sixth, with Retry-After.
    for base in &bases {
        let r = login(base, "alice", PW).await;
        assert_eq!(
            (r.status, error_code(&r)),
            (429, "rate_limited".to_string())
        );
        let wait = retry_after(&r);
        assert!((1..=900).contains(&wait), "Retry-After {wait}");
    }
    assert_eq!(login(&bases[1], "bob", PW).await.status, 200);
    // 50 failures from one address (here: of 45 more usernames) throttle
    // that address, whatever the username.
    for i in 0..45 {
        let r = login(&bases[i % 2], &format!("nobody{i}"), "wrong password").await;
        assert_eq!(r.status, 401, "failure {}: {}", i + 6, r.text());
    }
    for base in &bases {
        let r = login(base, "bob", PW).await;
        assert_eq!(r.status, 429, "after 50 failures from this address");
        assert!(retry_after(&r) >= 1);
    }
}

#[tokio::test]
async fn the_client_address_is_the_peer_unless_a_proxy_is_trusted() {
    // Not trusted (the default): X-Forwarded-For cannot dodge the limit.
    let node = NodeProcess::start(BIN, &[]).await;
    for i in 0..50 {
        let xff = format!("10.0.0.{i}");
        let (status, _) =
            raw_login(node.addr, &format!("u{i}"), "wrong password", Some(&xff)).await;
        assert_eq!(status, 401);
    }
    let (status, retry) = raw_login(node.addr, "fresh", "wrong password", Some("10.9.9.9")).await;
    assert_eq!(status, 429);
    assert!(retry.is_some_and(|r| r >= 1));
    drop(node);

    // Trusted: the address the proxy appended is the client's.
    let node = NodeProcess::start(BIN, &[("PARLEY_TRUST_PROXY", "true")]).await;
    for i in 0..50 {
        let (status, _) = raw_login(
            node.addr,
            &format!("u{i}"),
            "wrong password",
            Some("10.0.0.1"),
        )
        .await;
        assert_eq!(status, 401);
    }
    let (status, _) = raw_login(node.addr, "fresh", "wrong password", Some("10.0.0.1")).await;
    assert_eq!(status, 429, "10.0.0.1 is throttled");
    let (status, _) = raw_login(
        node.addr,
        "fresh",
        "wrong password",
        Some("203.0.113.5, 10.0.0.2"),
    )
    .await;
    assert_eq!(
        status, 401,
        "10.0.0.2 is not (a client cannot choose by prepending)"
    );
}

// ------------------------------------------- fault 4: across the fleet

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_reaches_every_node_within_5s() {
    let fleet = Fleet::start(BIN, 2, &[]).await;
    let bases: Vec<String> = fleet.nodes.iter().map(|n| n.http()).collect();
    let ws = fleet.ws_urls();
    let t0 = registered(&bases[0], "alice").await;
    let t1 = logged_in(&bases[1], "Alice", PW).await;
    let mut far = open(&ws[1], &t0).await;
    let mut near = open_bearer(&ws[0], &t0).await;
    let mut keep = open(&ws[1], &t1).await;

    // Logout on node 0: node 1 closes its connection and refuses the token.
    let start = Instant::now();
    let r = call(&bases[0], "POST", "/api/auth/logout", Some(&t0), None).await;
    assert_eq!(r.status, 204, "{}", r.text());
    expect_revoked("node 1", &mut far, REVOKE_LIMIT).await;
    expect_revoked("node 0", &mut near, REVOKE_LIMIT).await;
    expect_refused_within(&bases[1], &t0, REVOKE_LIMIT.saturating_sub(start.elapsed())).await;
    assert_eq!(rooms_status(&bases[0], &t0).await, 401);
    keep.ping().await.unwrap();

    // Logout-all on node 1 reaches node 0's connections.
    let t2 = logged_in(&bases[0], "alice", PW).await;
    let mut c2 = open(&ws[0], &t2).await;
    let r = call(&bases[1], "POST", "/api/auth/logout-all", Some(&t1), None).await;
    assert_eq!(r.status, 204, "{}", r.text());
    expect_revoked("logout-all, node 1", &mut keep, REVOKE_LIMIT).await;
    expect_revoked("logout-all, node 0", &mut c2, REVOKE_LIMIT).await;
    expect_refused_within(&bases[0], &t2, REVOKE_LIMIT).await;

    // A user disabled with `parley admin` on the shared PostgreSQL: every
    // node closes their connections and refuses their tokens and logins.
    let tb = registered(&bases[0], "Bob").await;
    let mut b0 = open(&ws[0], &tb).await;
    let mut b1 = open(&ws[1], &token("bob")).await;
    let url = fleet.postgres.url();
    admin_ok(&url, &["user", "disable", "BOB"], None).await;
    expect_revoked("disabled, node 0", &mut b0, REVOKE_LIMIT).await;
    expect_revoked("disabled, node 1", &mut b1, REVOKE_LIMIT).await;
    for base in &bases {
        let r = login(base, "bob", PW).await;
        assert_eq!((r.status, error_code(&r)), (403, "forbidden".to_string()));
        assert_eq!(rooms_status(base, &token("bob")).await, 401);
    }
    admin_ok(&url, &["user", "enable", "bob"], None).await;
    let tb = logged_in(&bases[1], "bob", PW).await;
    assert_eq!(hello(&ws[1], &tb).await.unwrap().user, "Bob");
    // The other node learns of the enable within its refresh, too.
    eventually("node 0 to accept bob again", REVOKE_LIMIT, || async {
        hello(&ws[0], &tb)
            .await
            .ok()
            .map(|w| assert_eq!(w.user, "Bob"))
    })
    .await;
    // Fresh tokens minted after the enable work again (once the node has seen it).
    eventually(
        "bob's minted tokens to work again",
        REVOKE_LIMIT,
        || async {
            let t = token("bob");
            (rooms_status(&bases[1], &t).await == 200).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case_folding_holds_across_nodes() {
    let fleet = Fleet::start(BIN, 2, &[]).await;
    let bases: Vec<String> = fleet.nodes.iter().map(|n| n.http()).collect();
    let ws = fleet.ws_urls();
    registered(&bases[0], "Carol").await;
    let r = register(&bases[1], "carol", PW).await;
    assert_eq!((r.status, error_code(&r)), (409, "conflict".to_string()));
    assert_eq!(user_name(&login(&bases[1], "CAROL", PW).await), "Carol");
    // A DM to any spelling reaches the user's connections on the other node.
    let mut carol = open(&ws[1], &token("carol")).await;
    assert_eq!(carol.welcome.as_ref().unwrap().user, "Carol");
    let mut dave = open(&ws[0], &token("Dave")).await;
    let ack = dave.send_dm("CAROL", "hello", None).await.unwrap();
    assert_eq!(ack.room, "dm:carol:dave");
    let m = carol.next_message(WAIT).await.unwrap();
    assert_eq!(
        (m.room.as_str(), m.from.as_str()),
        ("dm:carol:dave", "dave")
    );
}

// ----------------------------------------------------------------- admin

#[tokio::test]
async fn admin_commands_manage_users_in_a_sqlite_file() {
    let dir = tempfile::TempDir::new().unwrap();
    let url = format!("sqlite://{}", dir.path().join("parley.db").display());
    admin_ok(&url, &["user", "create", "Alice"], Some(&format!("{PW}\n"))).await;
    let out = admin(
        &url,
        &["user", "create", "ALICE"],
        Some("another password\n"),
    )
    .await;
    assert!(!out.status.success(), "a case variant is a conflict");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("taken"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = admin(&url, &["user", "create", "eve"], Some("short\n")).await;
    assert!(!out.status.success(), "a too short password is refused");
    admin_ok(&url, &["user", "create", "bob"], Some(&format!("{PW}\n"))).await;
    admin_ok(&url, &["user", "promote", "alice"], None).await;
    let list = admin_ok(&url, &["user", "list"], None).await;
    assert_eq!(listed(&list, "Alice")[1..3], ["admin", "enabled"], "{list}");
    assert_eq!(listed(&list, "bob")[1..3], ["user", "enabled"], "{list}");
    let out = admin(&url, &["user", "disable", "nobody"], None).await;
    assert!(!out.status.success(), "unknown users are an error");

    // With a node serving the same file.
    let node = NodeProcess::spawn(BIN, dir.path(), &[]).await;
    let (base, ws) = (node.http(), node.ws_url());
    // The login reply says who is a server admin (a client offers them
    // every room's tools; the server decides).
    for (name, admin) in [("alice", Some(true)), ("bob", None)] {
        let r = login(&base, name, PW).await;
        let v: serde_json::Value = serde_json::from_str(&r.text()).unwrap();
        assert_eq!(v["user"]["admin"].as_bool(), admin, "{name}: {v}");
    }
    let t = logged_in(&base, "alice", PW).await;
    let mut c = open(&ws, &t).await;
    let mut minted = open(&ws, &token("ALICE")).await;
    admin_ok(&url, &["user", "disable", "alice"], None).await;
    expect_revoked("disabled alice", &mut c, REVOKE_LIMIT).await;
    expect_revoked("disabled alice, minted", &mut minted, REVOKE_LIMIT).await;
    let r = login(&base, "alice", PW).await;
    assert_eq!((r.status, error_code(&r)), (403, "forbidden".to_string()));
    let list = admin_ok(&url, &["user", "list"], None).await;
    assert_eq!(
        listed(&list, "Alice")[1..3],
        ["admin", "disabled"],
        "{list}"
    );
    assert_eq!(
        hello(&ws, &token("alice")).await.unwrap_err().code(),
        Some(ErrorCode::Unauthorized)
    );

    admin_ok(&url, &["user", "enable", "ALICE"], None).await;
    let t = logged_in(&base, "alice", PW).await;
    let mut c = open(&ws, &t).await;
    assert_eq!(c.welcome.as_ref().unwrap().user, "Alice");
    // reset-password: the new password works, the old one and the old tokens do not.
    admin_ok(
        &url,
        &["user", "reset-password", "alice"],
        Some(&format!("{NEW_PW}\n")),
    )
    .await;
    expect_revoked("after reset-password", &mut c, REVOKE_LIMIT).await;
    assert_eq!(rooms_status(&base, &t).await, 401);
    assert_eq!(login(&base, "alice", PW).await.status, 401);
    assert_eq!(login(&base, "alice", NEW_PW).await.status, 200);
    // The password may also come from PARLEY_PASSWORD.
    let mut cmd = tokio::process::Command::new(BIN);
    parley_testkit::without_parley_env(&mut cmd)
        .args(["admin", "--database-url", &url, "user", "create", "carol"])
        .env("PARLEY_PASSWORD", PW)
        .stdin(Stdio::null());
    assert!(cmd.status().await.unwrap().success());
    assert_eq!(login(&base, "carol", PW).await.status, 200);
}

// ------------------------------------------------------------- migration

/// What a store of an earlier version holds: users who differ only in case,
/// and their DM rooms under the names of the time.
const LEGACY_USERS: [(&str, &str); 4] = [
    ("alice", "alice's password"),
    ("Alice", "Alice's password"),
    ("ALICE", "ALICE's password"),
    ("Bob", "Bob's password"),
];

fn legacy_rows() -> Vec<String> {
    let mut sql = Vec::new();
    for (i, (name, password)) in LEGACY_USERS.iter().enumerate() {
        let hash = parley_server::auth::password::hash(password).unwrap();
        sql.push(format!(
            "INSERT INTO users (name, password_hash, created_ms) VALUES ('{name}', '{hash}', {i})"
        ));
    }
    sql.push(
        "INSERT INTO rooms (name, last_seq, created_ms) VALUES ('dm:Bob:alice', 2, 0), ('general', 1, 0)"
            .into(),
    );
    sql.push(
        "INSERT INTO messages (room, seq, sender, body, ts_ms, nonce) VALUES \
         ('dm:Bob:alice', 1, 'alice', 'hi Bob', 1000, NULL), \
         ('dm:Bob:alice', 2, 'Bob', 'hi alice', 2000, NULL), \
         ('general', 1, 'Bob', 'hello all', 3000, NULL)"
            .into(),
    );
    sql
}

/// A SQLite file at schema version 1 with [`legacy_rows`].
async fn legacy_sqlite(path: &Path) -> String {
    use sqlx::Connection as _;
    let url = format!("sqlite://{}", path.display());
    let options: sqlx::sqlite::SqliteConnectOptions = url
        .parse::<sqlx::sqlite::SqliteConnectOptions>()
        .unwrap()
        .create_if_missing(true);
    let mut conn = sqlx::SqliteConnection::connect_with(&options)
        .await
        .unwrap();
    sqlx::raw_sql(
        "CREATE TABLE parley_migrations (version INTEGER PRIMARY KEY, applied_ms INTEGER NOT NULL); \
         INSERT INTO parley_migrations VALUES (1, 0);",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    sqlx::raw_sql(include_str!("../../server/migrations/sqlite/0001_init.sql"))
        .execute(&mut conn)
        .await
        .unwrap();
    for stmt in legacy_rows() {
        sqlx::raw_sql(sqlx::AssertSqlSafe(stmt))
            .execute(&mut conn)
            .await
            .unwrap();
    }
    conn.close().await.unwrap();
    url
}

/// A PostgreSQL database at schema version 1 with [`legacy_rows`].
async fn legacy_postgres(url: &str) {
    use sqlx::Connection as _;
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    sqlx::raw_sql(
        "CREATE TABLE parley_migrations (version BIGINT PRIMARY KEY, applied_ms BIGINT NOT NULL); \
         INSERT INTO parley_migrations VALUES (1, 0);",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    sqlx::raw_sql(include_str!(
        "../../server/migrations/postgres/0001_init.sql"
    ))
    .execute(&mut conn)
    .await
    .unwrap();
    for stmt in legacy_rows() {
        sqlx::raw_sql(sqlx::AssertSqlSafe(stmt))
            .execute(&mut conn)
            .await
            .unwrap();
    }
    conn.close().await.unwrap();
}

/// What a migrated legacy store must look like, once the operator disabled
/// `Alice` and `ALICE`: one alice, DMs under the case-folded names.
async fn check_migrated(bases: &[String], ws: &[String]) {
    for base in bases {
        let r = login(base, "ALICE", "alice's password").await;
        assert_eq!((r.status, user_name(&r)), (200, "alice".to_string()));
        assert_eq!(login(base, "Alice", "Alice's password").await.status, 401);
        let r = register(base, "aLICE", PW).await;
        assert_eq!(r.status, 409, "{}", r.text());
        let r = login(base, "bob", "Bob's password").await;
        assert_eq!((r.status, user_name(&r)), (200, "Bob".to_string()));
    }
    let w = hello(&ws[ws.len() - 1], &token("BOB")).await.unwrap();
    assert_eq!(w.user, "Bob");
    // The DM room of the old spelling is now the case-folded one.
    let page = http::messages(&bases[0], &token("bob"), "dm:alice:bob", None, None, None)
        .await
        .unwrap();
    let texts: Vec<&str> = page
        .messages
        .iter()
        .filter_map(|e| e.as_message())
        .map(|m| m.text.as_str())
        .collect();
    assert_eq!(texts, ["hi Bob", "hi alice"]);
    let rooms = http::rooms(&bases[0], &token("alice")).await.unwrap();
    let names: Vec<&str> = rooms.iter().map(|r| r.room.as_str()).collect();
    assert!(names.contains(&"dm:alice:bob"), "{names:?}");
    assert!(!names.iter().any(|n| n.starts_with("dm:Bob")), "{names:?}");
    // New messages continue the same sequence.
    let m = http::post_message(&bases[0], &token("Alice"), "dm:alice:bob", "again", None)
        .await
        .unwrap();
    assert_eq!((m.seq, m.from.as_str()), (3, "alice"));
}

async fn resolve_collisions(url: &str, refusal: &str) {
    for name in ["alice", "Alice", "ALICE"] {
        assert!(refusal.contains(name), "{name} is not named in:\n{refusal}");
    }
    assert!(refusal.contains("parley admin user disable"), "{refusal}");
    // The admin command works on the refused store and shows the collision.
    let list = admin_ok(url, &["user", "list"], None).await;
    for (name, _) in LEGACY_USERS {
        listed(&list, name);
    }
    admin_ok(url, &["user", "disable", "Alice"], None).await;
    let out = admin(url, &["user", "enable", "Alice"], None).await;
    assert!(
        !out.status.success(),
        "enabling a colliding account again is refused"
    );
    admin_ok(url, &["user", "disable", "ALICE"], None).await;
}

#[tokio::test]
async fn a_sqlite_store_with_case_collisions_is_refused_until_resolved() {
    let dir = tempfile::TempDir::new().unwrap();
    let url = legacy_sqlite(&dir.path().join("parley.db")).await;
    let refusal = serve_refuses(&url, &[]).await;
    resolve_collisions(&url, &refusal).await;
    let node = NodeProcess::spawn(BIN, dir.path(), &[]).await;
    check_migrated(&[node.http()], &[node.ws_url()]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_store_with_case_collisions_is_refused_until_resolved() {
    let postgres = tokio::task::spawn_blocking(parley_testkit::services::Postgres::start)
        .await
        .unwrap();
    let redis = tokio::task::spawn_blocking(parley_testkit::services::Redis::start)
        .await
        .unwrap();
    let (url, redis_url) = (postgres.url(), redis.url());
    legacy_postgres(&url).await;
    let refusal = serve_refuses(&url, &[("PARLEY_REDIS_URL", redis_url.as_str())]).await;
    resolve_collisions(&url, &refusal).await;
    let env = [
        ("PARLEY_DATABASE_URL", url.as_str()),
        ("PARLEY_REDIS_URL", redis_url.as_str()),
    ];
    let a = NodeProcess::start(BIN, &env).await;
    let b = NodeProcess::start(BIN, &env).await;
    check_migrated(&[a.http(), b.http()], &[a.ws_url(), b.ws_url()]).await;
}
