//! A WebSocket session's life: it lives no longer than its token (expiry, a
//! second `hello`, revocation through the registry), it ends with a real
//! closing handshake (never a TCP reset, even for a client that is sending),
//! and the frame rules around it (unknown frame types, history limits,
//! nonces) — issue 12, faults 3 and 6 and the smaller ones.

#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use parley_client::http;
use parley_client::protocol::token::{Claims, sign};
use parley_client::protocol::{ClientFrame, ErrorCode, ServerFrame, close, parse_server_frame};
use parley_client::{ClientError, ConnectOptions, Connection};
use parley_testkit::{NodeProcess, SECRET, TestNode, fetch_all, token};
use tokio_tungstenite::tungstenite::Message as Ws;

const WAIT: Duration = Duration::from_secs(5);
const BIN: &str = env!("CARGO_BIN_EXE_parley");

/// A token for `user` expiring `ttl_s` seconds from now (negative: already
/// expired); returns it and its `exp`.
fn token_expiring_in(user: &str, ttl_s: i64) -> (String, i64) {
    let now = parley_protocol::time::now_s();
    let claims = Claims {
        sub: user.to_string(),
        exp: now + ttl_s,
        iat: Some(now),
        nbf: None,
    };
    (sign(SECRET.as_bytes(), &claims), claims.exp)
}

fn now_ms() -> i64 {
    parley_protocol::time::now_ms()
}

/// Reads until the connection ends. Returns the frames read and how it
/// ended; fails if that takes longer than `limit`.
async fn frames_until_closed(
    conn: &mut Connection,
    limit: Duration,
    what: &str,
) -> (Vec<ServerFrame>, ClientError) {
    let mut frames = Vec::new();
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match conn.recv_timeout(left).await {
            Ok(frame) => frames.push(frame),
            Err(ClientError::Timeout(_)) => {
                panic!("{what}: still open after {limit:?}; frames: {frames:?}")
            }
            Err(e) => return (frames, e),
        }
    }
}

/// Asserts that a session ended with `error unauthorized` (with `re`) as its
/// last frame, then close 4401.
fn assert_closed_unauthorized(frames: &[ServerFrame], end: &ClientError, re: Option<u64>) {
    assert_eq!(
        end.close_code(),
        Some(close::UNAUTHORIZED),
        "{end}; {frames:?}"
    );
    match frames.last() {
        Some(ServerFrame::Error { code, re: got, .. }) => {
            assert_eq!(*code, ErrorCode::Unauthorized, "{frames:?}");
            assert_eq!(*got, re, "{frames:?}");
        }
        other => panic!("the last frame must be error unauthorized, got {other:?}"),
    }
}

fn no_ack(frames: &[ServerFrame]) {
    assert!(
        !frames.iter().any(|f| matches!(f, ServerFrame::Ack { .. })),
        "nothing is acked after the token expired: {frames:?}"
    );
}

// ---------------------------------------------------------------------------
// Fault 3: a session outlives its token.

/// A session is closed with `error unauthorized` + 4401 once its token's
/// `exp` plus the leeway has passed — whether the token came with `hello`
/// or with the upgrade — while its peer is idle or sending; nothing it sends
/// after that point is acked or stored, and no push follows the error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_closes_its_sessions_with_4401() {
    let node = TestNode::start_with(|c| c.token_leeway = Duration::ZERO).await;
    let mut bob = node.connect("bob").await;
    bob.join("general", None).await.unwrap();

    let (tok, exp) = token_expiring_in("alice", 2);
    // Idle, authenticated with hello.
    let mut idle = Connection::connect(&node.ws_url()).await.unwrap();
    idle.hello(&tok).await.unwrap();
    idle.join("general", None).await.unwrap();
    // Authenticated at the upgrade.
    let opts = ConnectOptions {
        bearer: Some(tok.clone()),
        ..Default::default()
    };
    let mut upgraded = Connection::connect_with(&node.ws_url(), &opts)
        .await
        .unwrap();
    upgraded.await_welcome().await.unwrap();
    upgraded.join("general", None).await.unwrap();
    // Sends once the token has expired, before the node noticed it.
    let mut late = Connection::connect(&node.ws_url()).await.unwrap();
    late.hello(&tok).await.unwrap();
    late.join("general", None).await.unwrap();
    late.send("general", "while valid", Some("late-0"))
        .await
        .unwrap();

    // Pushes flow while the token is valid.
    let pusher = tokio::spawn(async move {
        for i in 0.. {
            if bob
                .send("general", &format!("push {i}"), Some(&format!("bob-{i}")))
                .await
                .is_err()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            if now_ms() > (exp + 3) * 1000 {
                break;
            }
        }
        bob
    });

    let late_task = tokio::spawn(async move {
        let at = u64::try_from(exp * 1000 - now_ms()).unwrap_or(0) + 5;
        tokio::time::sleep(Duration::from_millis(at)).await;
        // The send may race the node's sweep: either way, it is not acked.
        let _ = late
            .send_frame(&ClientFrame::Send {
                id: Some(99),
                room: Some("general".into()),
                to: None,
                text: "after expiry".into(),
                nonce: Some("late-1".into()),
                reply_to: None,
            })
            .await;
        let (frames, end) = frames_until_closed(&mut late, WAIT, "late").await;
        (frames, end)
    });

    for (name, conn) in [("idle", &mut idle), ("upgraded", &mut upgraded)] {
        let (frames, end) = frames_until_closed(conn, Duration::from_secs(6), name).await;
        let closed_at = now_ms();
        assert_closed_unauthorized(&frames, &end, None);
        assert!(
            closed_at >= exp * 1000,
            "{name}: closed before the token expired ({closed_at} < {exp}000)"
        );
        assert!(
            closed_at <= exp * 1000 + 1500,
            "{name}: closed {} ms after the expiry",
            closed_at - exp * 1000
        );
        assert!(
            frames.iter().any(|f| matches!(f, ServerFrame::Message(_))),
            "{name}: pushes arrived while the token was valid"
        );
    }
    let (frames, end) = late_task.await.unwrap();
    assert_closed_unauthorized(&frames, &end, None);
    no_ack(&frames);

    let mut bob = pusher.await.unwrap();
    bob.ping().await.unwrap();
    let texts: Vec<String> = fetch_all(&node.http(), "general")
        .await
        .into_iter()
        .map(|m| m.text)
        .collect();
    assert!(texts.contains(&"while valid".to_string()));
    assert!(
        !texts.contains(&"after expiry".to_string()),
        "a send after the expiry was stored"
    );
    // A new connection with the token is refused, as before.
    let mut again = Connection::connect(&node.ws_url()).await.unwrap();
    assert_eq!(
        again.hello(&tok).await.unwrap_err().code(),
        Some(ErrorCode::Unauthorized)
    );
}

/// The leeway (`PARLEY_TOKEN_LEEWAY`) delays the close: a token 1 s past its
/// `exp` still serves within a 3 s leeway.
#[tokio::test]
async fn the_leeway_is_honoured() {
    let node = TestNode::start_with(|c| c.token_leeway = Duration::from_secs(3)).await;
    let (tok, exp) = token_expiring_in("alice", 1);
    let mut alice = Connection::connect(&node.ws_url()).await.unwrap();
    alice.hello(&tok).await.unwrap();
    alice.join("general", None).await.unwrap();
    let wait = u64::try_from((exp + 1) * 1000 - now_ms()).unwrap_or(0);
    tokio::time::sleep(Duration::from_millis(wait)).await;
    alice
        .send("general", "inside the leeway", None)
        .await
        .unwrap();
    let (frames, end) = frames_until_closed(&mut alice, WAIT, "alice").await;
    assert_closed_unauthorized(&frames, &end, None);
    assert!(now_ms() >= (exp + 3) * 1000, "closed before exp + leeway");
}

/// A second `hello` with a valid token of the same user gives the session
/// that token's expiry — later or earlier.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_hello_of_the_same_user_replaces_the_expiry() {
    let node = TestNode::start_with(|c| c.token_leeway = Duration::ZERO).await;
    let (short, short_exp) = token_expiring_in("alice", 2);
    let mut alice = Connection::connect(&node.ws_url()).await.unwrap();
    alice.hello(&short).await.unwrap();
    alice.join("general", None).await.unwrap();
    // Extended before it expires: it outlives the first token.
    let w = alice.hello(&token("alice")).await.unwrap();
    assert_eq!(w.user, "alice");
    let wait = u64::try_from(short_exp * 1000 + 1000 - now_ms()).unwrap_or(0);
    tokio::time::sleep(Duration::from_millis(wait)).await;
    alice
        .send("general", "the first token has expired", None)
        .await
        .unwrap();
    // A shorter token: the session now ends with it.
    let (shorter, exp) = token_expiring_in("alice", 1);
    alice.hello(&shorter).await.unwrap();
    let (frames, end) = frames_until_closed(&mut alice, WAIT, "alice").await;
    assert_closed_unauthorized(&frames, &end, None);
    let closed_at = now_ms();
    assert!(
        (exp * 1000..=exp * 1000 + 1500).contains(&closed_at),
        "closed at {closed_at}, the token expired at {exp}000"
    );
}

/// Any other second `hello` — garbage, an expired token, another user's
/// token — is answered `error unauthorized` (with its `re`) and closes the
/// session with 4401; the first identity does not live on.
#[tokio::test]
async fn a_second_hello_with_another_token_closes_the_session() {
    let node = TestNode::start_with(|c| c.token_leeway = Duration::ZERO).await;
    let (expired, _) = token_expiring_in("alice", -5);
    for (case, bad) in [
        ("garbage", "not-a-token".to_string()),
        ("expired", expired),
        ("another user", token("mallory")),
    ] {
        let mut alice = node.connect("alice").await;
        alice.join("general", None).await.unwrap();
        alice
            .send_frame(&ClientFrame::Hello {
                id: Some(42),
                token: bad,
                client: None,
            })
            .await
            .unwrap();
        let (frames, end) = frames_until_closed(&mut alice, WAIT, case).await;
        assert!(
            !frames
                .iter()
                .any(|f| matches!(f, ServerFrame::Welcome { .. })),
            "{case}: welcomed: {frames:?}"
        );
        assert_closed_unauthorized(&frames, &end, Some(42));
    }
}

/// The registry API for revocation: `close_where` closes exactly the
/// matching sessions, after the given error frame, with the given code.
#[tokio::test]
async fn close_where_closes_the_matching_sessions() {
    use parley_server::session::TokenId;
    let node = TestNode::start().await;
    let alice_token = token("alice");
    let mut alice = Connection::connect(&node.ws_url()).await.unwrap();
    alice.hello(&alice_token).await.unwrap();
    alice.join("general", None).await.unwrap();
    // Another token of alice's (`token` would mint the same one within a second).
    let mut alice_other = Connection::connect(&node.ws_url()).await.unwrap();
    alice_other
        .hello(&token_expiring_in("alice", 600).0)
        .await
        .unwrap();
    let mut bob = node.connect("bob").await;
    let revoked = TokenId::of(&alice_token);
    let error = ServerFrame::error(None, ErrorCode::Unauthorized, "token revoked");
    let closed = node.server().sessions().close_where(
        |auth| auth.token == revoked,
        close::UNAUTHORIZED,
        &error,
    );
    assert_eq!(closed, 1);
    let (frames, end) = frames_until_closed(&mut alice, WAIT, "alice").await;
    assert_closed_unauthorized(&frames, &end, None);
    alice_other.ping().await.unwrap();
    // By user and issue time (logout-all, a disabled user).
    let closed = node.server().sessions().close_where(
        |auth| &*auth.user == "alice" && auth.iat.is_some(),
        close::UNAUTHORIZED,
        &error,
    );
    assert_eq!(closed, 1);
    let (frames, end) = frames_until_closed(&mut alice_other, WAIT, "alice 2").await;
    assert_closed_unauthorized(&frames, &end, None);
    bob.ping().await.unwrap();
}

// ---------------------------------------------------------------------------
// Fault 6: a client that is sending when it is closed gets the close frame,
// not a TCP reset.

/// How one raw client's connection ended.
#[derive(Debug)]
struct Outcome {
    /// (request id → seq) of every ack received.
    acks: HashMap<u64, u64>,
    rate_limited: usize,
    /// The close code, or what happened instead (a reset, EOF, …).
    end: Result<u16, String>,
    /// A write that failed on the socket (a reset, a broken pipe): the
    /// node dropped the connection under a client that was sending.
    write_error: Option<String>,
}

impl Outcome {
    /// The close code, if the connection ended with a close frame and no
    /// write ever failed.
    fn clean_close(&self) -> Result<u16, String> {
        match &self.write_error {
            Some(e) => Err(format!("a write failed: {e} (then {:?})", self.end)),
            None => self.end.clone(),
        }
    }
}

/// Connects as `user`, joins `room`, then sends as fast as it can (with at
/// most `window` sends unanswered, so that the node's outbound queue does
/// not overflow) until the connection ends, reading everything.
async fn busy_client(url: String, user: String, room: String, window: usize) -> Outcome {
    let (ws, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .unwrap();
    let (mut tx, mut rx) = ws.split();
    let hello = format!(r#"{{"type":"hello","id":1,"token":"{}"}}"#, token(&user));
    tx.send(Ws::text(hello)).await.unwrap();
    tx.send(Ws::text(format!(
        r#"{{"type":"join","id":2,"room":"{room}"}}"#
    )))
    .await
    .unwrap();
    loop {
        let Some(Ok(Ws::Text(t))) = rx.next().await else {
            panic!("{user}: no joined")
        };
        if matches!(parse_server_frame(&t), Ok(ServerFrame::Joined { .. })) {
            break;
        }
    }
    let permits = Arc::new(tokio::sync::Semaphore::new(window));
    let writer = tokio::spawn({
        let permits = permits.clone();
        let user = user.clone();
        async move {
            use tokio_tungstenite::tungstenite::Error;
            for i in 3u64.. {
                let Ok(permit) = permits.acquire().await else {
                    return None;
                };
                permit.forget();
                let frame = format!(
                    r#"{{"type":"send","id":{i},"room":"{room}","text":"m{i}","nonce":"{user}-{i}"}}"#
                );
                match tx.send(Ws::text(frame)).await {
                    Ok(()) => {}
                    // The close frame was read: sending is over.
                    Err(Error::ConnectionClosed | Error::AlreadyClosed | Error::Protocol(_)) => {
                        return None;
                    }
                    Err(e) => return Some(e.to_string()),
                }
            }
            None
        }
    });
    let mut outcome = Outcome {
        acks: HashMap::new(),
        rate_limited: 0,
        end: Err("still open".into()),
        write_error: None,
    };
    loop {
        match rx.next().await {
            Some(Ok(Ws::Text(t))) => match parse_server_frame(&t) {
                Ok(ServerFrame::Ack { re, seq, .. }) => {
                    outcome.acks.insert(re.unwrap(), seq);
                    permits.add_permits(1);
                }
                Ok(ServerFrame::Error { code, .. }) => {
                    if code == ErrorCode::RateLimited {
                        outcome.rate_limited += 1;
                    }
                    permits.add_permits(1);
                }
                Ok(_) => {}
                Err(e) => panic!("{user}: unparseable {t}: {e}"),
            },
            Some(Ok(Ws::Close(frame))) => {
                outcome.end = Ok(frame.map_or(1005, |f| u16::from(f.code)));
                break;
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                outcome.end = Err(format!("error before the close frame: {e}"));
                break;
            }
            None => {
                outcome.end = Err("stream ended before the close frame".into());
                break;
            }
        }
    }
    permits.close();
    // Go on reading: tungstenite sends its reply to the close frame, and the
    // node ends the TCP connection.
    let _ = tokio::time::timeout(WAIT, async { while rx.next().await.is_some() {} }).await;
    outcome.write_error = tokio::time::timeout(WAIT, writer)
        .await
        .expect("the writer stops")
        .unwrap();
    outcome
}

/// Several clients send as fast as they can while the node drains
/// (SIGTERM): each sees close 1001 (never a reset or an abrupt end, on a
/// read or a write), and every ack it got refers to its stored message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_clients_see_1001_when_the_node_drains() {
    const CLIENTS: usize = 32;
    let mut node = NodeProcess::start(
        BIN,
        &[
            ("PARLEY_DRAIN_GRACE", "300ms"),
            ("PARLEY_DRAIN_SPREAD", "500ms"),
            ("PARLEY_DRAIN_TIMEOUT", "10s"),
        ],
    )
    .await;
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            tokio::spawn(busy_client(
                node.ws_url(),
                format!("busy{i}"),
                format!("busy-{i}"),
                64,
            ))
        })
        .collect();
    // Let them get going, then drain.
    tokio::time::sleep(Duration::from_millis(700)).await;
    node.signal("TERM");
    let mut outcomes = Vec::new();
    for c in clients {
        outcomes.push(c.await.unwrap());
    }
    assert_eq!(node.wait_exit(Duration::from_secs(15)).await, Some(0));
    // A second process on the same database (the first one's temp dir lives on).
    let reader = NodeProcess::spawn(BIN, &node.dir, &[]).await;
    let mut failures = Vec::new();
    for (i, outcome) in outcomes.iter().enumerate() {
        if outcome.clean_close() != Ok(close::GOING_AWAY) {
            failures.push(format!(
                "busy{i}: {:?} after {} acks",
                outcome.clean_close(),
                outcome.acks.len()
            ));
        }
        assert!(!outcome.acks.is_empty(), "busy{i} was sending");
        let stored: HashMap<u64, Option<String>> = fetch_all(&reader.http(), &format!("busy-{i}"))
            .await
            .into_iter()
            .map(|m| (m.seq, m.nonce))
            .collect();
        for (re, seq) in &outcome.acks {
            assert_eq!(
                stored.get(seq),
                Some(&Some(format!("busy{i}-{re}"))),
                "busy{i}: ack of request {re} (seq {seq}) is not its stored message"
            );
        }
    }
    assert!(
        failures.is_empty(),
        "clients that did not see 1001: {failures:#?}"
    );
}

/// A flooder closed for its rate-limit strikes sees 4429, not a reset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flooders_see_4429_not_a_reset() {
    let node = TestNode::start_with(|c| {
        c.send_rate = 1.0;
        c.send_burst = 5;
        c.rate_limit_strikes = 20;
    })
    .await;
    let clients: Vec<_> = (0..6)
        .map(|i| {
            tokio::spawn(busy_client(
                node.ws_url(),
                format!("flooder{i}"),
                format!("flood-{i}"),
                100_000,
            ))
        })
        .collect();
    let mut failures = Vec::new();
    for (i, c) in clients.into_iter().enumerate() {
        let outcome = c.await.unwrap();
        assert!(outcome.rate_limited >= 19, "flooder{i}: {outcome:?}");
        if outcome.clean_close() != Ok(close::RATE_LIMITED) {
            failures.push(format!("flooder{i}: {:?}", outcome.clean_close()));
        }
    }
    assert!(
        failures.is_empty(),
        "flooders that did not see 4429: {failures:#?}"
    );
}

// ---------------------------------------------------------------------------
// The smaller ones.

/// `limit=0` is `bad_request` on REST and WebSocket; a limit above
/// `PARLEY_HISTORY_MAX` is lowered to it.
#[tokio::test]
async fn history_limit_zero_is_a_bad_request() {
    let node = TestNode::start_with(|c| c.history_max = 5).await;
    let mut alice = node.connect("alice").await;
    alice.join("general", None).await.unwrap();
    for i in 0..8 {
        alice.send("general", &format!("m{i}"), None).await.unwrap();
    }
    let t = token("alice");
    let r = http::request(
        &node.http(),
        "GET",
        "/api/rooms/general/messages?limit=0",
        Some(&t),
        None,
    )
    .await
    .unwrap();
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(
        r.clone().ok().unwrap_err().code(),
        Some(ErrorCode::BadRequest)
    );
    let e = alice
        .history("general", None, None, Some(0))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::BadRequest), "{e}");
    let e = alice
        .history("general", None, Some(2), Some(0))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::BadRequest), "{e}");
    // Above the maximum: clamped, as documented.
    let page = http::messages(&node.http(), &t, "general", None, None, Some(100))
        .await
        .unwrap();
    assert_eq!(page.messages.len(), 5);
    assert!(page.more);
    let (messages, more) = alice
        .history("general", None, Some(0), Some(100))
        .await
        .unwrap();
    assert_eq!((messages.len(), more), (5, true));
    let (messages, _) = alice.history("general", None, None, Some(1)).await.unwrap();
    assert_eq!(messages.len(), 1);
}

/// Unknown frame types get `bad_request` with their `re` but never count
/// toward the 1008 close (a newer client talking to an older node); malformed
/// frames still do, and an unknown type between them does not reset the run.
#[tokio::test]
async fn unknown_frame_types_never_count_toward_1008() {
    let node = TestNode::start().await;
    let mut alice = node.connect("alice").await;
    alice.join("general", None).await.unwrap();
    for i in 0..30 {
        let frame =
            format!(r#"{{"type":"search","id":{i},"q":"hello","room":"general","limit":5}}"#);
        alice.send_text(frame).await.unwrap();
        match alice.recv_timeout(WAIT).await.unwrap() {
            ServerFrame::Error { code, re, message } => {
                assert_eq!((code, re), (ErrorCode::BadRequest, Some(i)), "{message}");
                assert!(message.contains("unknown frame type"), "{message}");
            }
            other => panic!("expected an error, got {other:?}"),
        }
    }
    alice.ping().await.unwrap();
    // Before a hello too.
    let mut anon = Connection::connect(&node.ws_url()).await.unwrap();
    for i in 0..12 {
        anon.send_text(format!(r#"{{"type":"kick","id":{i},"room":"r"}}"#))
            .await
            .unwrap();
        let f = anon.recv_timeout(WAIT).await.unwrap();
        assert!(
            matches!(
                f,
                ServerFrame::Error {
                    code: ErrorCode::BadRequest,
                    ..
                }
            ),
            "{f:?}"
        );
    }
    anon.hello(&token("anon")).await.unwrap();

    // Malformed frames still count: 9, an unknown type, then the 10th.
    for _ in 0..9 {
        alice.send_text("not json").await.unwrap();
        alice.recv_timeout(WAIT).await.unwrap();
    }
    alice
        .send_text(r#"{"type":"kick","room":"general"}"#)
        .await
        .unwrap();
    alice.recv_timeout(WAIT).await.unwrap();
    alice.send_text(r#"{"type":"join","id":5}"#).await.unwrap();
    let (frames, end) = frames_until_closed(&mut alice, WAIT, "alice").await;
    assert_eq!(
        end.close_code(),
        Some(close::POLICY_VIOLATION),
        "{end}; {frames:?}"
    );
}

/// The nonce limit is 64 *bytes* of UTF-8 (docs/protocol.md), not characters.
#[tokio::test]
async fn the_nonce_limit_is_64_bytes() {
    let node = TestNode::start().await;
    let mut alice = node.connect("alice").await;
    alice.join("general", None).await.unwrap();
    alice
        .send("general", "ascii", Some(&"n".repeat(64)))
        .await
        .unwrap();
    // 21 × 3 bytes = 63 bytes: accepted; 22 × 3 = 66 bytes (22 chars): refused.
    alice
        .send("general", "63 bytes", Some(&"€".repeat(21)))
        .await
        .unwrap();
    for nonce in ["n".repeat(65), "€".repeat(22), String::new()] {
        let e = alice.send("general", "x", Some(&nonce)).await.unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::BadRequest), "{nonce:?}: {e}");
    }
}

/// A repeated nonce is the retry of a send whose ack was lost: it gets the
/// original's ack, even with another text, and stores nothing
/// (docs/protocol.md).
#[tokio::test]
async fn a_repeated_nonce_with_another_text_gets_the_original_ack() {
    let node = TestNode::start().await;
    let mut alice = node.connect("alice").await;
    alice.join("general", None).await.unwrap();
    let first = alice
        .send("general", "original", Some("n-1"))
        .await
        .unwrap();
    let again = alice.send("general", "edited", Some("n-1")).await.unwrap();
    assert_eq!(again.seq, first.seq);
    assert_eq!(again.ts, first.ts);
    let all = fetch_all(&node.http(), "general").await;
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].text, "original");
}
