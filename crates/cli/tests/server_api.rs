//! The server API (`/api/server/...`, API keys) and the OpenAPI document,
//! against a real node over real sockets: every endpoint's success and
//! error paths, and the document held to the live router.

#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

use std::net::SocketAddr;
use std::time::Duration;

use parley_client::ClientError;
use parley_client::protocol::{ErrorCode, ServerFrame, close};
use parley_testkit::{TestNode, token};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(5);
const OLD_KEY: &str = "old-key-0123456789";
const NEW_KEY: &str = "new-key-abcdefghij";

/// A node whose server API accepts both keys (a rotation in progress).
async fn node() -> TestNode {
    TestNode::start_with(|c| c.api_keys = vec![OLD_KEY.into(), NEW_KEY.into()]).await
}

/// A response: status, body as JSON (`Null` if it is not JSON), raw body.
struct Reply {
    status: u16,
    json: Value,
    text: String,
}

impl Reply {
    fn code(&self) -> &str {
        self.json["error"]["code"].as_str().unwrap_or("")
    }
}

/// One HTTP/1.1 request over a fresh socket, with any headers.
async fn raw(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Reply {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut request = format!("{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    if let Some(body) = body {
        request.push_str(&format!(
            "content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        ));
    } else {
        request.push_str("content-length: 0\r\n\r\n");
    }
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut response))
        .await
        .expect("response in time")
        .unwrap();
    let response = String::from_utf8_lossy(&response).into_owned();
    let (head, text) = response.split_once("\r\n\r\n").expect("a whole response");
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "{head}"
    );
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    Reply {
        status,
        json: serde_json::from_str(text).unwrap_or(Value::Null),
        text: text.to_string(),
    }
}

/// A server API call with `key` as `Authorization: Bearer`.
async fn api(node: &TestNode, method: &str, path: &str, body: Option<Value>) -> Reply {
    let auth = format!("Bearer {NEW_KEY}");
    let body = body.map(|b| b.to_string());
    raw(
        node.addr(),
        method,
        path,
        &[("authorization", &auth)],
        body.as_deref(),
    )
    .await
}

/// A user's REST call with a token.
async fn user_call(node: &TestNode, method: &str, path: &str, token: &str) -> Reply {
    let auth = format!("Bearer {token}");
    raw(node.addr(), method, path, &[("authorization", &auth)], None).await
}

/// Every server API route with a body that would be valid.
fn server_calls() -> Vec<(&'static str, &'static str, Option<Value>)> {
    vec![
        (
            "POST",
            "/api/server/rooms/general/messages",
            Some(json!({"from": "bot", "text": "hi"})),
        ),
        ("GET", "/api/server/rooms/general/presence", None),
        (
            "POST",
            "/api/server/rooms",
            Some(json!({"room": "general"})),
        ),
        (
            "POST",
            "/api/server/users",
            Some(json!({"username": "zed", "password": "correct horse"})),
        ),
        ("POST", "/api/server/users/alice/disconnect", None),
        ("POST", "/api/server/users/alice/revoke", None),
        (
            "PUT",
            "/api/server/rooms/general/members/alice",
            Some(json!({"role": "member"})),
        ),
        ("DELETE", "/api/server/rooms/general/members/alice", None),
        (
            "POST",
            "/api/server/rooms/general/bans",
            Some(json!({"user": "mallory"})),
        ),
        ("DELETE", "/api/server/rooms/general/bans/mallory", None),
    ]
}

#[tokio::test]
async fn without_keys_the_server_api_does_not_exist() {
    let node = TestNode::start().await;
    for (method, path, body) in server_calls() {
        let body = body.map(|b| b.to_string());
        for headers in [
            vec![],
            vec![("authorization", "Bearer anything")],
            vec![("x-parley-api-key", "anything")],
        ] {
            let r = raw(node.addr(), method, path, &headers, body.as_deref()).await;
            assert_eq!((r.status, r.code()), (404, "not_found"), "{method} {path}");
            assert!(r.text.contains("PARLEY_API_KEYS"), "{}", r.text);
        }
    }
    // Blank keys count as none.
    let blank = TestNode::start_with(|c| c.api_keys = vec![String::new(), " ".into()]).await;
    let r = raw(
        blank.addr(),
        "GET",
        "/api/server/rooms/general/presence",
        &[("authorization", "Bearer ")],
        None,
    )
    .await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn keys_are_required_and_every_configured_key_is_valid() {
    let node = node().await;
    for (method, path, body) in server_calls() {
        let body = body.map(|b| b.to_string());
        let body = body.as_deref();
        // No key, a wrong key, a user's token, a key of another scheme.
        let user = format!("Bearer {}", token("alice"));
        for headers in [
            vec![],
            vec![("authorization", "Bearer wrong-key")],
            vec![("x-parley-api-key", "wrong-key")],
            vec![("authorization", user.as_str())],
            vec![("authorization", &format!("Basic {NEW_KEY}") as &str)],
            vec![("x-parley-api-key", &NEW_KEY[..NEW_KEY.len() - 1])],
        ] {
            let r = raw(node.addr(), method, path, &headers, body).await;
            assert_eq!(
                (r.status, r.code()),
                (401, "unauthorized"),
                "{method} {path} with {headers:?}: {}",
                r.text
            );
            assert!(!r.text.contains("wrong-key"), "the key is not echoed");
        }
    }
    // Both keys of a rotation, in either header.
    let mut alice = node.connect("alice").await;
    alice.join("general", None).await.unwrap();
    let old_bearer = format!("Bearer {OLD_KEY}");
    let new_bearer = format!("Bearer {NEW_KEY}");
    for headers in [
        [("authorization", old_bearer.as_str())],
        [("authorization", new_bearer.as_str())],
        [("x-parley-api-key", OLD_KEY)],
        [("x-parley-api-key", NEW_KEY)],
    ] {
        let r = raw(
            node.addr(),
            "GET",
            "/api/server/rooms/general/presence",
            &headers,
            None,
        )
        .await;
        assert_eq!(r.status, 200, "{headers:?}: {}", r.text);
        assert_eq!(r.json["members"], json!(["alice"]));
    }
}

#[tokio::test]
async fn a_published_message_is_stored_with_the_next_seq_and_delivered_live() {
    // A strict rate limit for users: the server API is not subject to it.
    let node = TestNode::start_with(|c| {
        c.api_keys = vec![NEW_KEY.into()];
        c.send_rate = 0.001;
        c.send_burst = 1;
    })
    .await;
    let mut alice = node.connect("alice").await;
    alice.join("general", None).await.unwrap();
    let ack = alice.send("general", "from alice", None).await.unwrap();
    assert_eq!(ack.seq, 1);
    alice.next_message(WAIT).await.unwrap();

    let r = api(
        &node,
        "POST",
        "/api/server/rooms/general/messages",
        Some(json!({"from": "system", "text": "maintenance at noon", "nonce": "n-1"})),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.json["room"], "general");
    assert_eq!(r.json["seq"], 2);
    let ts = r.json["ts"].as_str().unwrap().to_string();
    assert!(ts.ends_with('Z') && ts.len() == 24, "{ts}");
    assert_eq!(r.json.as_object().unwrap().len(), 3, "{}", r.text);

    // Delivered live to the member.
    let m = alice.next_message(WAIT).await.unwrap();
    assert_eq!(
        (m.seq, m.from.as_str(), m.text.as_str(), m.ts.as_str()),
        (2, "system", "maintenance at noon", ts.as_str())
    );
    assert_eq!(m.nonce.as_deref(), Some("n-1"));

    // The same nonce again: the original, stored once, not delivered again.
    let again = api(
        &node,
        "POST",
        "/api/server/rooms/general/messages",
        Some(json!({"from": "system", "text": "maintenance at noon", "nonce": "n-1"})),
    )
    .await;
    assert_eq!(again.status, 201);
    assert_eq!(
        (&again.json["seq"], &again.json["ts"]),
        (&json!(2), &json!(ts))
    );

    // Not rate limited: many in a row (alice's own bucket is empty).
    for i in 0..5 {
        let r = api(
            &node,
            "POST",
            "/api/server/rooms/general/messages",
            Some(json!({"from": "bot", "text": format!("tick {i}")})),
        )
        .await;
        assert_eq!(
            (r.status, &r.json["seq"]),
            (201, &json!(3 + i)),
            "{}",
            r.text
        );
    }
    let refused = alice.send("general", "again", None).await.unwrap_err();
    assert_eq!(refused.code(), Some(ErrorCode::RateLimited));

    // In the history, gapless, after alice's message.
    let page = user_call(
        &node,
        "GET",
        "/api/rooms/general/messages?limit=50",
        &token("alice"),
    )
    .await;
    let seqs: Vec<u64> = page.json["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, (1..=7).collect::<Vec<_>>());
    assert_eq!(page.json["messages"][1]["from"], "system");
    for seq in 3..=7 {
        assert_eq!(alice.next_message(WAIT).await.unwrap().seq, seq);
    }
}

#[tokio::test]
async fn publishing_refuses_bad_input() {
    let node = node().await;
    node.connect("alice")
        .await
        .join("general", None)
        .await
        .unwrap();
    let publish = |room: &'static str, body: Value| {
        let node = &node;
        async move {
            api(
                node,
                "POST",
                &format!("/api/server/rooms/{room}/messages"),
                Some(body),
            )
            .await
        }
    };
    let cases = [
        (
            "nowhere",
            json!({"from": "bot", "text": "x"}),
            404,
            "not_found",
        ),
        (
            "Bad%20Room",
            json!({"from": "bot", "text": "x"}),
            400,
            "bad_request",
        ),
        (
            "general",
            json!({"from": "not a name", "text": "x"}),
            400,
            "bad_request",
        ),
        (
            "general",
            json!({"from": "", "text": "x"}),
            400,
            "bad_request",
        ),
        (
            "general",
            json!({"from": "bot", "text": "   "}),
            400,
            "bad_request",
        ),
        (
            "general",
            json!({"from": "bot", "text": "x", "nonce": ""}),
            400,
            "bad_request",
        ),
        (
            "general",
            json!({"from": "bot", "text": "x", "nonce": "n".repeat(65)}),
            400,
            "bad_request",
        ),
        (
            "general",
            json!({"from": "bot", "text": "nul \u{0} here"}),
            400,
            "bad_request",
        ),
        (
            "general",
            json!({"from": "bot", "text": "x".repeat(4097)}),
            413,
            "too_large",
        ),
        ("general", json!({"from": "bot"}), 400, "bad_request"),
        (
            "general",
            json!({"from": "bot", "text": "x", "extra": 1}),
            400,
            "bad_request",
        ),
        (
            "general",
            json!(["not", "an", "object"]),
            400,
            "bad_request",
        ),
        (
            "dm:alice:bob",
            json!({"from": "carol", "text": "x"}),
            403,
            "forbidden",
        ),
        (
            "dm:bob:alice",
            json!({"from": "alice", "text": "x"}),
            400,
            "bad_request",
        ),
    ];
    for (room, body, status, code) in cases {
        let r = publish(room, body.clone()).await;
        assert_eq!(
            (r.status, r.code()),
            (status, code),
            "{room} {body}: {}",
            r.text
        );
    }
    // Not JSON at all.
    let auth = format!("Bearer {NEW_KEY}");
    let r = raw(
        node.addr(),
        "POST",
        "/api/server/rooms/general/messages",
        &[("authorization", &auth)],
        Some("{not json"),
    )
    .await;
    assert_eq!((r.status, r.code()), (400, "bad_request"));
    // Nothing was stored by any of them; a DM between its users works.
    let r = publish("dm:alice:bob", json!({"from": "Bob", "text": "hi alice"})).await;
    assert_eq!((r.status, &r.json["seq"]), (201, &json!(1)), "{}", r.text);
    let r = publish("general", json!({"from": "bot", "text": "first"})).await;
    assert_eq!(r.json["seq"], 1, "{}", r.text);
}

/// Waits for `error unauthorized` then close 4401 on `conn`.
async fn expect_closed_4401(conn: &mut parley_client::Connection) {
    let mut saw_error = false;
    loop {
        match conn.recv_timeout(WAIT).await {
            Ok(ServerFrame::Error {
                code: ErrorCode::Unauthorized,
                ..
            }) => saw_error = true,
            Ok(_) => {}
            Err(ClientError::Timeout(_)) => panic!("still open"),
            Err(e) => {
                assert!(saw_error, "closed without error unauthorized: {e}");
                assert_eq!(e.close_code(), Some(close::UNAUTHORIZED), "{e}");
                return;
            }
        }
    }
}

#[tokio::test]
async fn disconnect_closes_every_connection_of_the_user_with_4401() {
    let node = node().await;
    let mut a1 = node.connect("alice").await;
    let mut a2 = node.connect("Alice").await;
    let mut bob = node.connect("bob").await;
    a1.join("general", None).await.unwrap();

    let r = api(&node, "POST", "/api/server/users/ALICE/disconnect", None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json, json!({"user": "ALICE", "closed": 2}));
    expect_closed_4401(&mut a1).await;
    expect_closed_4401(&mut a2).await;
    bob.ping().await.unwrap();

    // Not a revocation: alice connects again with the same kind of token.
    let mut again = node.connect("alice").await;
    again.ping().await.unwrap();

    // Nobody connected: nothing closed. A bad name: 400.
    let r = api(&node, "POST", "/api/server/users/nobody/disconnect", None).await;
    assert_eq!((r.status, &r.json["closed"]), (200, &json!(0)));
    let r = api(
        &node,
        "POST",
        "/api/server/users/no%20body/disconnect",
        None,
    )
    .await;
    assert_eq!((r.status, r.code()), (400, "bad_request"));
    // Only POST.
    let r = api(&node, "GET", "/api/server/users/alice/disconnect", None).await;
    assert_eq!(r.status, 405);
}

#[tokio::test]
async fn presence_lists_the_members_of_a_room() {
    let node = node().await;
    let mut alice = node.connect("alice").await;
    let mut bob = node.connect("bob").await;
    alice.join("general", None).await.unwrap();
    bob.join("general", None).await.unwrap();
    let r = api(&node, "GET", "/api/server/rooms/general/presence", None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.json,
        json!({"room": "general", "members": ["alice", "bob"]})
    );
    bob.leave("general").await.unwrap();
    let r = api(&node, "GET", "/api/server/rooms/general/presence", None).await;
    assert_eq!(r.json["members"], json!(["alice"]));

    // A room that exists with nobody in it; one that does not; a bad name.
    let r = api(
        &node,
        "POST",
        "/api/server/rooms",
        Some(json!({"room": "empty"})),
    )
    .await;
    assert_eq!(r.status, 201);
    let r = api(&node, "GET", "/api/server/rooms/empty/presence", None).await;
    assert_eq!((r.status, &r.json["members"]), (200, &json!([])));
    let r = api(&node, "GET", "/api/server/rooms/nowhere/presence", None).await;
    assert_eq!((r.status, r.code()), (404, "not_found"));
    let r = api(&node, "GET", "/api/server/rooms/NOPE/presence", None).await;
    assert_eq!((r.status, r.code()), (400, "bad_request"));
}

#[tokio::test]
async fn revoke_ends_every_token_of_the_user() {
    let node = node().await;
    let (t_alice, t_bob) = (token("alice"), token("bob"));
    let mut alice = parley_testkit::connect(&node.ws_url(), "alice").await;
    assert_eq!(
        user_call(&node, "GET", "/api/rooms", &t_alice).await.status,
        200
    );

    let r = api(&node, "POST", "/api/server/users/Alice/revoke", None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        (&r.json["user"], &r.json["closed"]),
        (&json!("Alice"), &json!(1))
    );
    assert!(r.json["tokens_after_s"].as_i64().unwrap() > 0);
    expect_closed_4401(&mut alice).await;
    let refused = user_call(&node, "GET", "/api/rooms", &t_alice).await;
    assert_eq!((refused.status, refused.code()), (401, "unauthorized"));
    assert_eq!(
        user_call(&node, "GET", "/api/rooms", &t_bob).await.status,
        200
    );

    // A registered user: login works again afterwards.
    let r = api(
        &node,
        "POST",
        "/api/server/users",
        Some(json!({"username": "carol", "password": "correct horse"})),
    )
    .await;
    assert_eq!(r.status, 201);
    let r = api(&node, "POST", "/api/server/users/carol/revoke", None).await;
    assert_eq!(r.status, 200);
    let login = parley_client::http::login(&node.http(), "carol", "correct horse")
        .await
        .unwrap();
    assert_eq!(
        user_call(&node, "GET", "/api/rooms", &login.token)
            .await
            .status,
        200
    );

    let r = api(&node, "POST", "/api/server/users/-bad name-/revoke", None).await;
    assert_eq!(r.status, 400);
}

#[tokio::test]
async fn users_are_created_once() {
    let node = node().await;
    let r = api(
        &node,
        "POST",
        "/api/server/users",
        Some(json!({"username": "Dana", "password": "correct horse"})),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.json, json!({"user": {"name": "Dana"}}));
    let login = parley_client::http::login(&node.http(), "dana", "correct horse")
        .await
        .unwrap();
    assert_eq!(login.user.name, "Dana");

    let cases = [
        (
            json!({"username": "DANA", "password": "correct horse"}),
            409,
            "conflict",
        ),
        (
            json!({"username": "no spaces", "password": "correct horse"}),
            400,
            "bad_request",
        ),
        (
            json!({"username": "erin", "password": "short"}),
            400,
            "bad_request",
        ),
        (json!({"username": "erin"}), 400, "bad_request"),
        (
            json!({"username": "erin", "password": "x".repeat(257)}),
            400,
            "bad_request",
        ),
    ];
    for (body, status, code) in cases {
        let r = api(&node, "POST", "/api/server/users", Some(body.clone())).await;
        assert_eq!((r.status, r.code()), (status, code), "{body}: {}", r.text);
    }
}

#[tokio::test]
async fn rooms_are_created_idempotently() {
    let node = node().await;
    let r = api(
        &node,
        "POST",
        "/api/server/rooms",
        Some(json!({"room": "news"})),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(
        r.json,
        json!({"room": "news", "last_seq": 0, "private": false})
    );
    let r = api(
        &node,
        "POST",
        "/api/server/rooms/news/messages",
        Some(json!({"from": "editor", "text": "extra!"})),
    )
    .await;
    assert_eq!(r.status, 201);
    let r = api(
        &node,
        "POST",
        "/api/server/rooms",
        Some(json!({"room": "news"})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.json,
        json!({"room": "news", "last_seq": 1, "private": false})
    );
    let rooms = user_call(&node, "GET", "/api/rooms", &token("alice")).await;
    assert_eq!(
        rooms.json,
        json!([{"room": "news", "members_online": 0, "last_seq": 1, "member": false}])
    );

    for body in [
        json!({"room": "News"}),
        json!({"room": ""}),
        json!({"room": "dm:alice:bob"}),
        json!({"room": "x".repeat(65)}),
        json!({}),
        json!({"room": 7}),
        // A private room or a topic needs an owner; an owner a username.
        json!({"room": "quiet", "private": true}),
        json!({"room": "quiet", "topic": "shh"}),
        json!({"room": "quiet", "owner": "no spaces"}),
        json!({"room": "quiet", "owner": "alice", "private": "yes"}),
        json!({"room": "quiet", "owner": "alice", "colour": "red"}),
    ] {
        let r = api(&node, "POST", "/api/server/rooms", Some(body.clone())).await;
        assert_eq!(
            (r.status, r.code()),
            (400, "bad_request"),
            "{body}: {}",
            r.text
        );
    }
}

/// The kinds of the events a membership call answered with, as
/// `change user` (`role` changes with the role), and who made them.
fn changes(events: &Value) -> Vec<String> {
    events
        .as_array()
        .expect("an array of events")
        .iter()
        .map(|e| {
            let what = match e["role"].as_str() {
                Some(role) => format!("{} {role}", e["change"].as_str().unwrap()),
                None => e["change"].as_str().unwrap().to_string(),
            };
            format!("{what} {} by {}", e["user"], e["from"])
        })
        .collect()
}

/// The application's backend owns the directory: it creates a private room
/// for a team with an owner, puts people in with roles and takes them out —
/// each change a room event in the log, seen live by the room's members,
/// and the room's rules still hold (an owner is not kicked, a banned user
/// is not added back behind the moderators' backs).
#[tokio::test]
async fn the_application_manages_a_private_room_and_its_members() {
    let node = node().await;
    let r = api(
        &node,
        "POST",
        "/api/server/rooms",
        Some(json!({"room": "team", "owner": "Alice", "private": true, "topic": "plans"})),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(
        r.json,
        json!({"room": "team", "last_seq": 0, "private": true, "topic": "plans"})
    );
    // Asking again changes nothing, and says what the room is.
    let r = api(
        &node,
        "POST",
        "/api/server/rooms",
        Some(json!({"room": "team"})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["private"], true);

    let mut alice = node.connect("Alice").await;
    let joined = alice.join("team", None).await.unwrap();
    assert_eq!(joined.role, Some(parley_client::protocol::Role::Owner));
    let history = "/api/rooms/team/messages";
    let r = user_call(&node, "GET", history, &token("bob")).await;
    assert_eq!((r.status, r.code()), (403, "forbidden"), "{}", r.text);

    // Bob in, as a member (the log names the API unless told whom).
    let bob_path = "/api/server/rooms/team/members/bob";
    let r = api(&node, "PUT", bob_path, Some(json!({}))).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(
        (&r.json["user"], &r.json["role"]),
        (&json!("bob"), &json!("member"))
    );
    assert_eq!(
        changes(&r.json["events"]),
        [r#"added "bob" by "server-api""#]
    );
    let r = api(&node, "PUT", bob_path, Some(json!({"role": "member"}))).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["events"], json!([]), "nothing to change, no event");
    let r = api(
        &node,
        "PUT",
        bob_path,
        Some(json!({"role": "moderator", "by": "hr-bot"})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        changes(&r.json["events"]),
        [r#"role moderator "bob" by "hr-bot""#]
    );
    // Carol in straight as a moderator: two events.
    let r = api(
        &node,
        "PUT",
        "/api/server/rooms/team/members/carol",
        Some(json!({"role": "moderator"})),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(
        changes(&r.json["events"]),
        [
            r#"added "carol" by "server-api""#,
            r#"role moderator "carol" by "server-api""#
        ]
    );
    // Alice watched all four live, in order.
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(alice.next_event(WAIT).await.unwrap().seq());
    }
    assert_eq!(seen, [1, 2, 3, 4]);
    let r = user_call(&node, "GET", history, &token("bob")).await;
    assert_eq!(r.status, 200, "bob reads the room now: {}", r.text);
    assert_eq!(r.json["messages"].as_array().unwrap().len(), 4);

    // Bob out: his connection is taken out of the room at once.
    let mut bob = node.connect("bob").await;
    bob.join("team", None).await.unwrap();
    let r = api(&node, "DELETE", &format!("{bob_path}?by=hr-bot"), None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        (&r.json["change"], &r.json["from"]),
        (&json!("removed"), &json!("hr-bot"))
    );
    loop {
        match bob.recv_timeout(WAIT).await.unwrap() {
            ServerFrame::Left { room, reason, .. } => {
                assert_eq!((room.as_str(), reason.as_deref()), ("team", Some("kicked")));
                break;
            }
            _ => continue,
        }
    }
    let r = user_call(&node, "GET", history, &token("bob")).await;
    assert_eq!((r.status, r.code()), (403, "forbidden"), "{}", r.text);

    // The room's rules hold for the application too.
    let cases = [
        ("DELETE", bob_path.to_string(), None, 404, "not_found"),
        (
            "DELETE",
            "/api/server/rooms/team/members/alice".to_string(),
            None,
            403,
            "forbidden",
        ),
        (
            // The last owner keeps the role.
            "PUT",
            "/api/server/rooms/team/members/alice".to_string(),
            Some(json!({"role": "member"})),
            409,
            "conflict",
        ),
    ];
    for (method, path, body, status, code) in cases {
        let r = api(&node, method, &path, body).await;
        assert_eq!(
            (r.status, r.code()),
            (status, code),
            "{method} {path}: {}",
            r.text
        );
    }
    // A user the moderators banned is not added back.
    let ban = raw(
        node.addr(),
        "POST",
        "/api/rooms/team/bans",
        &[("authorization", &format!("Bearer {}", token("carol")))],
        Some(r#"{"user":"dave","reason":"spam"}"#),
    )
    .await;
    assert_eq!(ban.status, 201, "{}", ban.text);
    let dave = "/api/server/rooms/team/members/dave";
    let r = api(&node, "PUT", dave, Some(json!({}))).await;
    assert_eq!((r.status, r.code()), (409, "conflict"), "{}", r.text);

    // The backend bans and unbans too: a moderator who is banned is out of
    // the room at once, and cannot read it.
    let mut carol = node.connect("carol").await;
    carol.join("team", None).await.unwrap();
    let bans = "/api/server/rooms/team/bans";
    let r = api(
        &node,
        "POST",
        bans,
        Some(json!({"user": "carol", "reason": "spam", "by": "tns-bot"})),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(
        (&r.json["change"], &r.json["reason"], &r.json["from"]),
        (&json!("banned"), &json!("spam"), &json!("tns-bot"))
    );
    loop {
        if let ServerFrame::Left { room, reason, .. } = carol.recv_timeout(WAIT).await.unwrap() {
            assert_eq!((room.as_str(), reason.as_deref()), ("team", Some("banned")));
            break;
        }
    }
    let r = user_call(&node, "GET", history, &token("carol")).await;
    assert_eq!((r.status, r.code()), (403, "forbidden"), "{}", r.text);
    let cases = [
        (
            "POST",
            bans.to_string(),
            Some(json!({"user": "carol"})),
            409,
            "conflict",
        ),
        (
            "POST",
            bans.to_string(),
            Some(json!({"user": "alice"})),
            403,
            "forbidden",
        ),
        ("DELETE", format!("{bans}/erin"), None, 404, "not_found"),
    ];
    for (method, path, body, status, code) in cases {
        let r = api(&node, method, &path, body).await;
        assert_eq!(
            (r.status, r.code()),
            (status, code),
            "{method} {path}: {}",
            r.text
        );
    }
    // Lifting the moderators' ban on dave lets the backend add him back.
    let r = api(&node, "DELETE", &format!("{bans}/dave?by=tns-bot"), None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        (&r.json["change"], &r.json["user"]),
        (&json!("unbanned"), &json!("dave"))
    );
    let r = api(&node, "PUT", dave, Some(json!({}))).await;
    assert_eq!(r.status, 201, "{}", r.text);
}

#[tokio::test]
async fn membership_calls_refuse_bad_input() {
    let node = node().await;
    let r = api(
        &node,
        "POST",
        "/api/server/rooms",
        Some(json!({"room": "team", "owner": "alice"})),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let long = "x".repeat(33);
    let cases: Vec<(&str, String, Option<Value>, u16, &str)> = vec![
        (
            "PUT",
            "/api/server/rooms/nowhere/members/bob".into(),
            Some(json!({})),
            404,
            "not_found",
        ),
        (
            "DELETE",
            "/api/server/rooms/nowhere/members/bob".into(),
            None,
            404,
            "not_found",
        ),
        (
            "PUT",
            "/api/server/rooms/dm:alice:bob/members/bob".into(),
            Some(json!({})),
            400,
            "bad_request",
        ),
        (
            "PUT",
            "/api/server/rooms/Team/members/bob".into(),
            Some(json!({})),
            400,
            "bad_request",
        ),
        (
            "PUT",
            format!("/api/server/rooms/team/members/{long}"),
            Some(json!({})),
            400,
            "bad_request",
        ),
        (
            "PUT",
            "/api/server/rooms/team/members/bob".into(),
            Some(json!({"role": "king"})),
            400,
            "bad_request",
        ),
        (
            "PUT",
            "/api/server/rooms/team/members/bob".into(),
            Some(json!({"by": "no spaces"})),
            400,
            "bad_request",
        ),
        (
            "PUT",
            "/api/server/rooms/team/members/bob".into(),
            Some(json!({"by": ""})),
            400,
            "bad_request",
        ),
        (
            "PUT",
            "/api/server/rooms/team/members/bob".into(),
            Some(json!({"reason": "x"})),
            400,
            "bad_request",
        ),
        (
            "PUT",
            "/api/server/rooms/team/members/bob".into(),
            Some(json!([])),
            400,
            "bad_request",
        ),
        (
            "DELETE",
            "/api/server/rooms/team/members/bob?by=no%20spaces".into(),
            None,
            400,
            "bad_request",
        ),
        (
            "DELETE",
            format!("/api/server/rooms/team/members/{long}"),
            None,
            400,
            "bad_request",
        ),
        (
            "POST",
            "/api/server/rooms/nowhere/bans".into(),
            Some(json!({"user": "bob"})),
            404,
            "not_found",
        ),
        (
            "POST",
            "/api/server/rooms/team/bans".into(),
            Some(json!({})),
            400,
            "bad_request",
        ),
        (
            "POST",
            "/api/server/rooms/team/bans".into(),
            Some(json!({"user": "no spaces"})),
            400,
            "bad_request",
        ),
        (
            "POST",
            "/api/server/rooms/team/bans".into(),
            Some(json!({"user": "bob", "by": "a b"})),
            400,
            "bad_request",
        ),
        (
            "POST",
            "/api/server/rooms/team/bans".into(),
            Some(json!({"user": "bob", "until": 5})),
            400,
            "bad_request",
        ),
        (
            "POST",
            "/api/server/rooms/team/bans".into(),
            Some(json!({"user": "bob", "reason": "x".repeat(513)})),
            413,
            "too_large",
        ),
        (
            "POST",
            "/api/server/rooms/team/bans".into(),
            Some(json!({"user": "bob", "reason": "nul\u{0}"})),
            400,
            "bad_request",
        ),
        (
            "POST",
            "/api/server/rooms/dm:alice:bob/bans".into(),
            Some(json!({"user": "bob"})),
            400,
            "bad_request",
        ),
        (
            "DELETE",
            format!("/api/server/rooms/team/bans/{long}"),
            None,
            400,
            "bad_request",
        ),
        (
            "DELETE",
            "/api/server/rooms/team/bans/bob?by=".into(),
            None,
            400,
            "bad_request",
        ),
    ];
    for (method, path, body, status, code) in cases {
        let r = api(&node, method, &path, body.clone()).await;
        assert_eq!(
            (r.status, r.code()),
            (status, code),
            "{method} {path} {body:?}: {}",
            r.text
        );
    }
    // Nothing of that reached the room's log.
    let r = user_call(&node, "GET", "/api/rooms/team/messages", &token("alice")).await;
    assert_eq!(r.json["messages"], json!([]), "{}", r.text);
}

/// The document served is the embedded one, and the live router agrees with
/// it: every documented (path, method) is routed (no 404 "no such endpoint",
/// no 405), and every other method on those paths is 405. The unit test
/// `http::openapi::tests` checks the document against the router's table;
/// this checks the table's methods against what the router really answers.
#[tokio::test]
async fn the_openapi_document_matches_the_live_router() {
    let node = node().await;
    let r = raw(node.addr(), "GET", "/api/openapi.json", &[], None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json["openapi"], "3.1.0");
    assert_eq!(
        r.json,
        serde_json::from_str::<Value>(parley_server::http::openapi::DOCUMENT).unwrap()
    );
    let documented = parley_server::http::openapi::documented_routes(&r.json);
    assert!(documented.len() >= 19, "{documented:?}");
    let paths: std::collections::BTreeSet<&str> =
        documented.iter().map(|(p, _)| p.as_str()).collect();
    for path in paths {
        let concrete = path.replace("{room}", "general").replace("{user}", "alice");
        for method in ["GET", "POST", "PUT", "DELETE", "PATCH"] {
            let r = raw(node.addr(), method, &concrete, &[], Some("{}")).await;
            if documented.contains(&(path.to_string(), method.to_string())) {
                assert_ne!(r.status, 405, "{method} {path} is documented: {}", r.text);
                assert!(
                    !(r.status == 404 && r.text.contains("no such endpoint")),
                    "{method} {path} is documented but not routed"
                );
            } else {
                assert_eq!(
                    r.status, 405,
                    "{method} {path} is routed but not documented"
                );
            }
        }
    }
    // An /api path nobody documented is the fallback's 404.
    let r = raw(node.addr(), "GET", "/api/server/nothing", &[], None).await;
    assert_eq!((r.status, r.code()), (404, "not_found"));
}
