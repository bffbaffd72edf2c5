//! Every frame type and REST endpoint of protocol v1 against a real node,
//! over real sockets: success paths and error paths.

#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

use std::time::Duration;

use parley_client::http;
use parley_client::protocol::{ClientFrame, ErrorCode, PresenceState, ServerFrame, close};
use parley_client::{ClientError, Connection};
use parley_testkit::{TestNode, connect, eventually, metric, token};

const WAIT: Duration = Duration::from_secs(5);

fn server_code(e: ClientError) -> ErrorCode {
    e.code()
        .unwrap_or_else(|| panic!("expected a server error, got {e}"))
}

#[tokio::test]
async fn hello_welcome_ping_pong() {
    let node = TestNode::start().await;
    let mut c = Connection::connect(&node.ws_url()).await.unwrap();
    let w = c.hello(&token("alice")).await.unwrap();
    assert_eq!(w.user, "alice");
    assert_eq!(w.node, "test-node");
    assert_eq!(w.heartbeat_s, 25);
    assert!(!w.session.is_empty());
    c.ping().await.unwrap();
    // A raw ping frame gets a pong with the same id.
    c.send_text(r#"{"type":"ping","id":77}"#).await.unwrap();
    assert_eq!(
        c.recv_timeout(WAIT).await.unwrap(),
        ServerFrame::Pong { re: Some(77) }
    );
}

#[tokio::test]
async fn token_at_upgrade_skips_hello() {
    let node = TestNode::start().await;
    let opts = parley_client::ConnectOptions {
        bearer: Some(token("bob")),
        ..Default::default()
    };
    let mut c = Connection::connect_with(&node.ws_url(), &opts)
        .await
        .unwrap();
    assert_eq!(c.await_welcome().await.unwrap().user, "bob");
    // ?token= works too (browsers cannot set headers on a WebSocket).
    let url = format!("{}?token={}", node.ws_url(), token("carol"));
    let mut c = Connection::connect(&url).await.unwrap();
    assert_eq!(c.await_welcome().await.unwrap().user, "carol");
    // A bad token at upgrade is refused with 401 before any WebSocket exists.
    let url = format!("{}?token=not-a-token", node.ws_url());
    assert!(Connection::connect(&url).await.is_err());
}

#[tokio::test]
async fn join_send_ack_and_push_to_every_member() {
    let node = TestNode::start().await;
    let mut alice = node.connect("alice").await;
    let mut bob = node.connect("bob").await;
    let j = alice.join("general", None).await.unwrap();
    assert_eq!((j.last_seq, j.history.len(), j.more), (0, 0, false));
    assert_eq!(j.members, vec!["alice"]);
    let j = bob.join("general", None).await.unwrap();
    assert_eq!(j.members, vec!["alice", "bob"]);
    // Alice hears that bob joined.
    match alice.recv_timeout(WAIT).await.unwrap() {
        ServerFrame::Presence { room, user, state } => {
            assert_eq!(
                (room.as_str(), user.as_str(), state),
                ("general", "bob", PresenceState::Joined)
            )
        }
        other => panic!("expected presence, got {other:?}"),
    }

    let ack = alice.send("general", "hello", Some("n-1")).await.unwrap();
    assert_eq!((ack.room.as_str(), ack.seq), ("general", 1));
    assert!(
        ack.ts.ends_with('Z') && ack.ts.len() == 24,
        "RFC 3339 with ms: {}",
        ack.ts
    );
    for conn in [&mut alice, &mut bob] {
        let m = conn.next_message(WAIT).await.unwrap();
        assert_eq!(
            (m.seq, m.from.as_str(), m.text.as_str()),
            (1, "alice", "hello")
        );
        assert_eq!(m.nonce.as_deref(), Some("n-1"));
        assert_eq!(m.ts, ack.ts);
    }
}

#[tokio::test]
async fn join_returns_latest_history_or_since() {
    let node = TestNode::start_with(|c| c.history_page = 5).await;
    let mut alice = node.connect("alice").await;
    alice.join("general", None).await.unwrap();
    for i in 1..=12 {
        alice.send("general", &format!("m{i}"), None).await.unwrap();
    }
    let mut bob = node.connect("bob").await;
    let j = bob.join("general", None).await.unwrap();
    let seqs: Vec<u64> = j.history.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, vec![8, 9, 10, 11, 12], "latest page, oldest first");
    assert!(j.more, "older messages exist");
    assert_eq!(j.last_seq, 12);

    let mut carol = node.connect("carol").await;
    let j = carol.join("general", Some(9)).await.unwrap();
    let seqs: Vec<u64> = j.history.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, vec![10, 11, 12]);
    assert!(!j.more);
    assert_eq!(j.last_seq, 12);
    // Nothing missed: since = last_seq gives an empty history.
    let mut dave = node.connect("dave").await;
    let j = dave.join("general", Some(12)).await.unwrap();
    assert!(j.history.is_empty());
    assert_eq!(j.last_seq, 12);
}

#[tokio::test]
async fn since_join_beyond_the_limit_says_more_and_pages_forward() {
    let node = TestNode::start_with(|c| c.history_max = 4).await;
    let mut alice = node.connect("alice").await;
    alice.join("general", None).await.unwrap();
    for i in 1..=10 {
        alice.send("general", &format!("m{i}"), None).await.unwrap();
    }
    let mut bob = node.connect("bob").await;
    let j = bob.join("general", Some(0)).await.unwrap();
    assert_eq!(
        j.history.iter().map(|m| m.seq).collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
    assert!(j.more);
    assert_eq!(j.last_seq, 10);
    let (page, more) = bob
        .history("general", None, Some(4), Some(4))
        .await
        .unwrap();
    assert_eq!(
        page.iter().map(|m| m.seq).collect::<Vec<_>>(),
        vec![5, 6, 7, 8]
    );
    assert!(more);
    let (page, more) = bob
        .history("general", None, Some(8), Some(4))
        .await
        .unwrap();
    assert_eq!(page.iter().map(|m| m.seq).collect::<Vec<_>>(), vec![9, 10]);
    assert!(!more);
}

#[tokio::test]
async fn history_pages_backwards() {
    let node = TestNode::start().await;
    let mut alice = node.connect("alice").await;
    alice.join("general", None).await.unwrap();
    for i in 1..=7 {
        alice.send("general", &format!("m{i}"), None).await.unwrap();
    }
    let (page, more) = alice
        .history("general", Some(6), None, Some(3))
        .await
        .unwrap();
    assert_eq!(
        page.iter().map(|m| m.seq).collect::<Vec<_>>(),
        vec![3, 4, 5]
    );
    assert!(more);
    let (page, more) = alice
        .history("general", Some(3), None, Some(3))
        .await
        .unwrap();
    assert_eq!(page.iter().map(|m| m.seq).collect::<Vec<_>>(), vec![1, 2]);
    assert!(!more);
    // Unknown room: not_found.
    let e = alice
        .history("nowhere", None, None, None)
        .await
        .unwrap_err();
    assert_eq!(server_code(e), ErrorCode::NotFound);
    // Bad room name: bad_request.
    let e = alice
        .history("Not A Room", None, None, None)
        .await
        .unwrap_err();
    assert_eq!(server_code(e), ErrorCode::BadRequest);
}

#[tokio::test]
async fn leave_stops_pushes_and_announces_presence() {
    let node = TestNode::start().await;
    let mut alice = node.connect("alice").await;
    let mut bob = node.connect("bob").await;
    alice.join("general", None).await.unwrap();
    bob.join("general", None).await.unwrap();
    let _presence = alice.recv_timeout(WAIT).await.unwrap();
    bob.leave("general").await.unwrap();
    match alice.recv_timeout(WAIT).await.unwrap() {
        ServerFrame::Presence { user, state, .. } => {
            assert_eq!((user.as_str(), state), ("bob", PresenceState::Left))
        }
        other => panic!("expected presence left, got {other:?}"),
    }
    alice.send("general", "after bob left", None).await.unwrap();
    assert_eq!(
        alice.next_message(WAIT).await.unwrap().text,
        "after bob left"
    );
    assert!(
        bob.recv_timeout(Duration::from_millis(300)).await.is_err(),
        "no push after leave"
    );
    // Leaving again, or sending to a room not joined: clear errors.
    assert_eq!(
        server_code(bob.leave("general").await.unwrap_err()),
        ErrorCode::NotFound
    );
    assert_eq!(
        server_code(bob.send("general", "x", None).await.unwrap_err()),
        ErrorCode::Forbidden
    );
}

#[tokio::test]
async fn typing_reaches_others_only() {
    let node = TestNode::start().await;
    let mut alice = node.connect("alice").await;
    let mut bob = node.connect("bob").await;
    alice.join("general", None).await.unwrap();
    bob.join("general", None).await.unwrap();
    let _presence = alice.recv_timeout(WAIT).await.unwrap();
    bob.typing("general").await.unwrap();
    assert_eq!(
        alice.recv_timeout(WAIT).await.unwrap(),
        ServerFrame::Typing {
            room: "general".into(),
            user: "bob".into()
        }
    );
    assert!(
        bob.recv_timeout(Duration::from_millis(300)).await.is_err(),
        "no echo of own typing"
    );
    // Typing in a room not joined is refused.
    let id = bob.next_id();
    let e = bob
        .request(
            id,
            &ClientFrame::Typing {
                id: Some(id),
                room: "other".into(),
            },
        )
        .await
        .unwrap_err();
    assert_eq!(server_code(e), ErrorCode::Forbidden);
}

#[tokio::test]
async fn direct_messages_reach_both_users_without_joining() {
    let node = TestNode::start().await;
    let mut alice = node.connect("alice").await;
    let mut bob = node.connect("bob").await;
    let ack = alice.send_dm("bob", "psst", Some("dm-1")).await.unwrap();
    assert_eq!((ack.room.as_str(), ack.seq), ("dm:alice:bob", 1));
    for conn in [&mut bob, &mut alice] {
        let m = conn.next_message(WAIT).await.unwrap();
        assert_eq!(
            (m.room.as_str(), m.text.as_str(), m.from.as_str()),
            ("dm:alice:bob", "psst", "alice")
        );
    }
    // Bob can join the DM room and read it; he replies through it.
    let j = bob.join("dm:alice:bob", Some(0)).await.unwrap();
    assert_eq!(j.history.len(), 1);
    let ack = bob.send("dm:alice:bob", "hi alice", None).await.unwrap();
    assert_eq!(ack.seq, 2);
    assert_eq!(alice.next_message(WAIT).await.unwrap().text, "hi alice");
    // Errors: to self, to an invalid name, room and to together, neither.
    assert_eq!(
        server_code(alice.send_dm("alice", "me", None).await.unwrap_err()),
        ErrorCode::BadRequest
    );
    assert_eq!(
        server_code(alice.send_dm("no one", "x", None).await.unwrap_err()),
        ErrorCode::BadRequest
    );
    let id = alice.next_id();
    let both = ClientFrame::Send {
        id: Some(id),
        room: Some("general".into()),
        to: Some("bob".into()),
        text: "x".into(),
        nonce: None,
        reply_to: None,
    };
    assert_eq!(
        server_code(alice.request(id, &both).await.unwrap_err()),
        ErrorCode::BadRequest
    );
    let id = alice.next_id();
    let neither = ClientFrame::Send {
        id: Some(id),
        room: None,
        to: None,
        text: "x".into(),
        nonce: None,
        reply_to: None,
    };
    assert_eq!(
        server_code(alice.request(id, &neither).await.unwrap_err()),
        ErrorCode::BadRequest
    );
}

#[tokio::test]
async fn nonce_makes_sends_idempotent() {
    let node = TestNode::start().await;
    let mut alice = node.connect("alice").await;
    alice.join("general", None).await.unwrap();
    let first = alice.send("general", "once", Some("same")).await.unwrap();
    let again = alice.send("general", "once", Some("same")).await.unwrap();
    assert_eq!(
        first.seq, again.seq,
        "a repeated nonce acks the original seq"
    );
    assert_eq!(first.ts, again.ts);
    let other = alice.send("general", "twice", Some("other")).await.unwrap();
    assert_eq!(other.seq, first.seq + 1);
    // The same nonce from another user is a different message.
    let mut bob = node.connect("bob").await;
    bob.join("general", None).await.unwrap();
    let bobs = bob.send("general", "mine", Some("same")).await.unwrap();
    assert_eq!(bobs.seq, other.seq + 1);
    let (page, _) = alice.history("general", None, Some(0), None).await.unwrap();
    assert_eq!(page.len(), 3, "stored once per (sender, nonce)");
    // Overlong nonce.
    let long = "n".repeat(65);
    assert_eq!(
        server_code(alice.send("general", "x", Some(&long)).await.unwrap_err()),
        ErrorCode::BadRequest
    );
}

#[tokio::test]
async fn text_limits() {
    let node = TestNode::start().await;
    let mut alice = node.connect("alice").await;
    alice.join("general", None).await.unwrap();
    let max = "é".repeat(2048); // 4096 bytes of UTF-8
    assert!(alice.send("general", &max, None).await.is_ok());
    let over = format!("{max}x");
    assert_eq!(
        server_code(alice.send("general", &over, None).await.unwrap_err()),
        ErrorCode::TooLarge
    );
    assert_eq!(
        server_code(alice.send("general", "   ", None).await.unwrap_err()),
        ErrorCode::BadRequest
    );
    // The connection is still usable after errors.
    alice.ping().await.unwrap();
}

#[tokio::test]
async fn rate_limit_errors_then_closes_4429() {
    let node = TestNode::start_with(|c| {
        c.send_rate = 0.001;
        c.send_burst = 3;
        c.rate_limit_strikes = 5;
    })
    .await;
    let mut alice = node.connect("alice").await;
    alice.join("general", None).await.unwrap();
    for _ in 0..3 {
        alice.send("general", "ok", None).await.unwrap();
    }
    for _ in 0..4 {
        assert_eq!(
            server_code(alice.send("general", "too fast", None).await.unwrap_err()),
            ErrorCode::RateLimited
        );
    }
    // The fifth strike closes the connection with 4429.
    let e = alice.send("general", "too fast", None).await.unwrap_err();
    assert_eq!(server_code(e), ErrorCode::RateLimited);
    let closed = loop {
        match alice.recv_timeout(WAIT).await {
            Ok(_) => continue,
            Err(e) => break e,
        }
    };
    assert_eq!(closed.close_code(), Some(close::RATE_LIMITED), "{closed}");
}

#[tokio::test]
async fn rest_register_login_and_errors() {
    let node = TestNode::start().await;
    let base = node.http();
    let reg = http::register(&base, "alice", "correct horse")
        .await
        .unwrap();
    assert_eq!(reg.user.name, "alice");
    let e = http::register(&base, "alice", "another pw")
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            ClientError::Http {
                status: 409,
                code: Some(ErrorCode::Conflict),
                ..
            }
        ),
        "{e}"
    );
    let login = http::login(&base, "alice", "correct horse").await.unwrap();
    // The issued token works on the WebSocket.
    let mut c = Connection::connect(&node.ws_url()).await.unwrap();
    assert_eq!(c.hello(&login.token).await.unwrap().user, "alice");

    let e = http::login(&base, "alice", "wrong horse")
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            ClientError::Http {
                status: 401,
                code: Some(ErrorCode::Unauthorized),
                ..
            }
        ),
        "{e}"
    );
    let e = http::login(&base, "nobody", "whatever1").await.unwrap_err();
    assert!(matches!(e, ClientError::Http { status: 401, .. }), "{e}");
    for (user, pw) in [
        ("bad name", "password1"),
        ("", "password1"),
        ("ok", "short"),
        ("ok", &"p".repeat(257)),
    ] {
        let e = http::register(&base, user, pw).await.unwrap_err();
        assert!(
            matches!(
                e,
                ClientError::Http {
                    status: 400,
                    code: Some(ErrorCode::BadRequest),
                    ..
                }
            ),
            "{user}: {e}"
        );
    }
    // Malformed JSON bodies get Parley's error format. A body is a JSON
    // object: the array of the fields in order, which serde alone would take,
    // is refused too (found by fuzz/, regressions/rest_bodies).
    let array = br#"["alice","correct horse battery"]"#;
    for path in ["/api/auth/login", "/api/auth/register"] {
        for body in [&b"{not json"[..], b"[]", b"{\"username\":1}", b"", array] {
            let r = http::request(&base, "POST", path, None, Some(body.to_vec()))
                .await
                .unwrap();
            assert_eq!(r.status, 400, "{path}: {}", r.text());
            let e = r.ok().unwrap_err();
            assert_eq!(e.code(), Some(ErrorCode::BadRequest));
        }
    }
    let r = http::request(
        &base,
        "POST",
        "/api/rooms/general/messages",
        Some(&token("alice")),
        Some(br#"["hello"]"#.to_vec()),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 400, "{}", r.text());
    // Oversized body.
    let big = vec![b'a'; 100 * 1024];
    let r = http::request(&base, "POST", "/api/auth/login", None, Some(big))
        .await
        .unwrap();
    assert_eq!(r.status, 413);
}

#[tokio::test]
async fn rest_rooms_messages_and_send() {
    let node = TestNode::start().await;
    let base = node.http();
    let alice_token = token("alice");
    let mut alice = node.connect("alice").await;
    alice.join("general", None).await.unwrap();
    for i in 1..=3 {
        alice.send("general", &format!("m{i}"), None).await.unwrap();
    }
    let rooms = http::rooms(&base, &alice_token).await.unwrap();
    let general = rooms
        .iter()
        .find(|r| r.room == "general")
        .expect("general listed");
    assert_eq!((general.last_seq, general.members_online), (3, 1));

    let page = http::messages(&base, &alice_token, "general", None, None, None)
        .await
        .unwrap();
    assert_eq!(
        page.messages.iter().map(|m| m.seq()).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    let page = http::messages(&base, &alice_token, "general", Some(3), None, Some(1))
        .await
        .unwrap();
    assert_eq!(
        page.messages.iter().map(|m| m.seq()).collect::<Vec<_>>(),
        vec![2]
    );
    assert!(page.more);
    let page = http::messages(&base, &alice_token, "general", None, Some(1), None)
        .await
        .unwrap();
    assert_eq!(
        page.messages.iter().map(|m| m.seq()).collect::<Vec<_>>(),
        vec![2, 3]
    );

    // REST send is stored and delivered live like a WebSocket send.
    let bob_token = token("bob");
    let m = http::post_message(&base, &bob_token, "general", "via REST", Some("r1"))
        .await
        .unwrap();
    assert_eq!((m.seq, m.from.as_str()), (4, "bob"));
    let pushed = loop {
        let pushed = alice.next_message(WAIT).await.unwrap();
        if pushed.seq == m.seq {
            break pushed;
        }
    };
    assert_eq!(pushed, m);
    let again = http::post_message(&base, &bob_token, "general", "via REST", Some("r1"))
        .await
        .unwrap();
    assert_eq!(again.seq, 4, "nonce is idempotent over REST too");

    // Errors.
    let e = http::messages(&base, &alice_token, "nowhere", None, None, None)
        .await
        .unwrap_err();
    assert!(matches!(e, ClientError::Http { status: 404, .. }), "{e}");
    let e = http::post_message(&base, &alice_token, "nowhere", "x", None)
        .await
        .unwrap_err();
    assert!(matches!(e, ClientError::Http { status: 404, .. }), "{e}");
    let e = http::post_message(&base, &alice_token, "general", &"x".repeat(5000), None)
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            ClientError::Http {
                status: 413,
                code: Some(ErrorCode::TooLarge),
                ..
            }
        ),
        "{e}"
    );
    let e = http::rooms(&base, "garbage").await.unwrap_err();
    assert!(matches!(e, ClientError::Http { status: 401, .. }), "{e}");
    let r = http::request(&base, "GET", "/api/rooms", None, None)
        .await
        .unwrap();
    assert_eq!(r.status, 401);
    let r = http::request(
        &base,
        "GET",
        "/api/rooms/general/messages?limit=abc",
        Some(&alice_token),
        None,
    )
    .await
    .unwrap();
    assert_eq!(r.status, 400);
    let r = http::request(&base, "GET", "/no/such/thing", None, None)
        .await
        .unwrap();
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn health_readiness_metrics_and_web_ui() {
    let node = TestNode::start().await;
    let base = node.http();
    let r = http::request(&base, "GET", "/healthz", None, None)
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    let r = http::request(&base, "GET", "/readyz", None, None)
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    // Some traffic so the counters exist.
    let mut alice = node.connect("alice").await;
    alice.join("general", None).await.unwrap();
    alice.send("general", "count me", None).await.unwrap();
    alice.next_message(WAIT).await.unwrap();
    let r = http::request(&base, "GET", "/metrics", None, None)
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    let text = r.text();
    for name in [
        "parley_connections ",
        "parley_messages_received_total",
        "parley_messages_delivered_total",
        "parley_store_append_seconds_bucket",
        "parley_rooms_active",
    ] {
        assert!(
            text.contains(name),
            "metric {name} missing from /metrics:\n{text}"
        );
    }
    let r = http::request(&base, "GET", "/", None, None).await.unwrap();
    assert_eq!(r.status, 200);
    assert!(r.text().contains("<html"), "the web UI is served at /");
    let csp = r
        .headers
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    for asset in ["/app.js", "/style.css"] {
        assert_eq!(
            http::request(&base, "GET", asset, None, None)
                .await
                .unwrap()
                .status,
            200,
            "{asset}"
        );
    }
}

/// `PARLEY_METRICS_LISTEN`: the metrics move to their own listener, and
/// the public one no longer shows them.
#[tokio::test]
async fn metrics_can_have_a_listener_of_their_own() {
    let node =
        TestNode::start_with(|c| c.metrics_listen = Some("127.0.0.1:0".parse().unwrap())).await;
    let metrics = format!("http://{}", node.server().metrics_addr().unwrap());
    let r = http::request(&metrics, "GET", "/metrics", None, None)
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert!(r.text().contains("parley_connections "), "{}", r.text());
    let r = http::request(&node.http(), "GET", "/metrics", None, None)
        .await
        .unwrap();
    assert_eq!(r.status, 404, "the public listener hides /metrics");
    // Only /metrics is served on the metrics listener.
    for path in ["/", "/api/rooms", "/healthz"] {
        let r = http::request(&metrics, "GET", path, None, None)
            .await
            .unwrap();
        assert_eq!(r.status, 404, "{path}");
    }
    assert!(TestNode::start().await.server().metrics_addr().is_none());
}

#[tokio::test]
async fn hello_is_required_within_the_timeout() {
    let node = TestNode::start_with(|c| c.hello_timeout = Duration::from_millis(300)).await;
    let mut c = Connection::connect(&node.ws_url()).await.unwrap();
    // Frames before hello are refused, not obeyed.
    let id = c.next_id();
    let e = c
        .request(
            id,
            &ClientFrame::Join {
                id: Some(id),
                room: "general".into(),
                since: None,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(server_code(e), ErrorCode::Unauthorized);
    let closed = loop {
        match c.recv_timeout(WAIT).await {
            Ok(ServerFrame::Error { code, .. }) => assert_eq!(code, ErrorCode::Unauthorized),
            Ok(other) => panic!("unexpected {other:?}"),
            Err(e) => break e,
        }
    };
    assert_eq!(closed.close_code(), Some(close::UNAUTHORIZED), "{closed}");
}

#[tokio::test]
async fn silent_peers_are_closed_after_two_heartbeats() {
    let node = TestNode::start_with(|c| c.heartbeat = Duration::from_millis(200)).await;
    let alice = connect(&node.ws_url(), "alice").await;
    // Our client library answers pings automatically only while it reads; by
    // not reading at all this connection stays silent — until the node says
    // it gave up on it. (Metrics are per process; no other test's node has a
    // heartbeat short enough to time a peer out meanwhile.)
    eventually("the node to time the silent peer out", WAIT, || async {
        let timeouts = metric(&node.http(), "parley_heartbeat_timeouts_total").await;
        timeouts.is_some_and(|n| n >= 1.0).then_some(())
    })
    .await;
    let mut alice = alice;
    let closed = loop {
        match alice.recv_timeout(WAIT).await {
            Ok(_) => continue,
            Err(e) => break e,
        }
    };
    assert!(
        matches!(
            closed,
            ClientError::Closed { .. } | ClientError::WebSocket(_)
        ),
        "{closed}"
    );
}
