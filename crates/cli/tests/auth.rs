//! Tokens and privacy: forged, expired and wrongly signed tokens are refused
//! everywhere; operator-minted tokens work; DM rooms stay private to their
//! two users over WebSocket and REST; a node's generated secret survives a restart.

#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use parley_client::protocol::{ErrorCode, ServerFrame, close};
use parley_client::{ClientError, Connection, http};
use parley_protocol::time::now_s;
use parley_protocol::token::{Claims, sign};
use parley_testkit::{SECRET, TestNode, token};

const WAIT: Duration = Duration::from_secs(5);
const BIN: &str = env!("CARGO_BIN_EXE_parley");

fn bad_tokens() -> Vec<(&'static str, String)> {
    let expired = sign(SECRET.as_bytes(), &Claims::new("alice", now_s() - 3600));
    let other_secret = sign(b"not-the-secret", &Claims::new("alice", now_s() + 3600));
    let bad_subject = sign(SECRET.as_bytes(), &Claims::new("al ice", now_s() + 3600));
    let good = token("alice");
    let parts: Vec<&str> = good.split('.').collect();
    let forged_payload =
        URL_SAFE_NO_PAD.encode(format!(r#"{{"sub":"mallory","exp":{}}}"#, now_s() + 3600));
    let forged = format!("{}.{}.{}", parts[0], forged_payload, parts[2]);
    let none_header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let alg_none = format!("{}.{}.", none_header, parts[1]);
    vec![
        ("expired", expired),
        ("wrong secret", other_secret),
        ("invalid subject", bad_subject),
        ("forged payload", forged),
        ("alg none", alg_none),
        ("garbage", "garbage".into()),
        ("empty", String::new()),
    ]
}

#[tokio::test]
async fn bad_tokens_are_refused_on_hello_with_4401() {
    let node = TestNode::start().await;
    for (what, bad) in bad_tokens() {
        let mut c = Connection::connect(&node.ws_url()).await.unwrap();
        let e = c.hello(&bad).await.unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::Unauthorized), "{what}: {e}");
        let closed = loop {
            match c.recv_timeout(WAIT).await {
                Ok(ServerFrame::Error { .. }) => {}
                Ok(other) => panic!("{what}: unexpected {other:?}"),
                Err(e) => break e,
            }
        };
        assert_eq!(
            closed.close_code(),
            Some(close::UNAUTHORIZED),
            "{what}: {closed}"
        );
    }
}

#[tokio::test]
async fn bad_tokens_are_refused_on_rest_and_upgrade() {
    let node = TestNode::start().await;
    for (what, bad) in bad_tokens() {
        let e = http::rooms(&node.http(), &bad).await.unwrap_err();
        assert!(
            matches!(
                e,
                ClientError::Http {
                    status: 401,
                    code: Some(ErrorCode::Unauthorized),
                    ..
                }
            ),
            "{what}: {e}"
        );
        if !bad.is_empty() {
            let opts = parley_client::ConnectOptions {
                bearer: Some(bad.clone()),
                ..Default::default()
            };
            assert!(
                Connection::connect_with(&node.ws_url(), &opts)
                    .await
                    .is_err(),
                "{what}: upgrade refused"
            );
        }
    }
}

#[tokio::test]
async fn operator_minted_tokens_work_without_registering() {
    let node = TestNode::start().await;
    // `parley token` is what an operator's backend would do with the shared secret.
    let out = tokio::process::Command::new(BIN)
        .args([
            "token", "--secret", SECRET, "--user", "ops-user", "--ttl", "1h",
        ])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let minted = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let mut c = Connection::connect(&node.ws_url()).await.unwrap();
    assert_eq!(c.hello(&minted).await.unwrap().user, "ops-user");
    assert!(http::rooms(&node.http(), &minted).await.is_ok());
    // An invalid username is refused by the minting tool itself.
    let out = tokio::process::Command::new(BIN)
        .args(["token", "--secret", SECRET, "--user", "no spaces"])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
}

#[tokio::test]
async fn dm_rooms_are_private_to_their_two_users() {
    let node = TestNode::start().await;
    let mut alice = node.connect("alice").await;
    alice.send_dm("bob", "secret plans", None).await.unwrap();
    let room = "dm:alice:bob";

    let mut carol = node.connect("carol").await;
    assert_eq!(
        carol.join(room, None).await.unwrap_err().code(),
        Some(ErrorCode::Forbidden)
    );
    assert_eq!(
        carol
            .history(room, None, None, None)
            .await
            .unwrap_err()
            .code(),
        Some(ErrorCode::Forbidden)
    );
    let id = carol.next_id();
    let send = parley_client::protocol::ClientFrame::Send {
        id: Some(id),
        room: Some(room.into()),
        to: None,
        text: "let me in".into(),
        nonce: None,
        reply_to: None,
    };
    assert_eq!(
        carol.request(id, &send).await.unwrap_err().code(),
        Some(ErrorCode::Forbidden)
    );
    // Carol never received the DM push.
    assert!(
        carol
            .recv_timeout(Duration::from_millis(300))
            .await
            .is_err()
    );

    let carol_token = token("carol");
    let e = http::messages(&node.http(), &carol_token, room, None, None, None)
        .await
        .unwrap_err();
    assert!(matches!(e, ClientError::Http { status: 403, .. }), "{e}");
    let e = http::post_message(&node.http(), &carol_token, room, "x", None)
        .await
        .unwrap_err();
    assert!(matches!(e, ClientError::Http { status: 403, .. }), "{e}");
    let listed = http::rooms(&node.http(), &carol_token).await.unwrap();
    assert!(
        listed.iter().all(|r| r.room != room),
        "carol does not see the DM in the room list"
    );

    // The two members can read it, over both transports.
    let bob_token = token("bob");
    let page = http::messages(&node.http(), &bob_token, room, None, None, None)
        .await
        .unwrap();
    assert_eq!(page.messages[0].as_message().unwrap().text, "secret plans");
    assert!(
        http::rooms(&node.http(), &bob_token)
            .await
            .unwrap()
            .iter()
            .any(|r| r.room == room)
    );
    // A non-canonical DM name is not an alias.
    assert_eq!(
        alice.join("dm:bob:alice", None).await.unwrap_err().code(),
        Some(ErrorCode::BadRequest)
    );
}

#[tokio::test]
async fn generated_secret_survives_a_restart() {
    let node = TestNode::start_with(|c| c.jwt_secret = None).await;
    let reply = http::register(&node.http(), "alice", "long enough")
        .await
        .unwrap();
    let node = node.restart().await;
    let mut c = Connection::connect(&node.ws_url()).await.unwrap();
    assert_eq!(
        c.hello(&reply.token).await.unwrap().user,
        "alice",
        "token still valid after restart"
    );
    let login = http::login(&node.http(), "alice", "long enough")
        .await
        .unwrap();
    assert_eq!(login.user.name, "alice");
    // And it is not the test secret.
    let mut c = Connection::connect(&node.ws_url()).await.unwrap();
    assert!(c.hello(&token("alice")).await.is_err());
}
