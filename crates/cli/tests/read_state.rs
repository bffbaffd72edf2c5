//! Protocol 1.1 §2: read positions are stored per (user, room), only move
//! forward, are capped at the room's last seq, reach the user's other
//! connections, and drive `unread` / `mentions` in `joined` and `GET
//! /api/rooms`. (The fleet case — two connections on two nodes — is in
//! fleet.rs; the store's rules on both backends in store.rs.)

#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

use std::time::Duration;

use parley_client::protocol::ErrorCode;
use parley_client::{ClientError, http};
use parley_testkit::{TestNode, next_read_push, token};

#[tokio::test]
async fn read_positions_sync_devices_and_drive_unread_counts() {
    let mut node = TestNode::start().await;
    let mut bob = node.connect("bob").await;
    bob.join("general", None).await.unwrap();
    let first = bob.send("general", "hello @alice", None).await.unwrap();
    bob.send("general", "hi all", None).await.unwrap();
    let gone = bob
        .send("general", "@ALICE look (deleted)", None)
        .await
        .unwrap();
    bob.delete("general", gone.seq, None).await.unwrap();
    bob.send("general", "@alicex is someone else", None)
        .await
        .unwrap();

    let mut phone = node.connect("alice").await;
    let mut laptop = node.connect("Alice").await;
    let joined = phone.join("general", None).await.unwrap();
    assert_eq!(joined.read_seq, 0);
    assert_eq!((joined.unread, joined.mentions), (3, 1), "{joined:?}");
    phone
        .send("general", "mine do not count", None)
        .await
        .unwrap();

    // Reading on one device: answered there, pushed to the other.
    assert_eq!(phone.read("general", first.seq).await.unwrap(), first.seq);
    assert_eq!(
        next_read_push(&mut laptop).await,
        ("general".to_string(), first.seq)
    );
    let j = laptop.join("general", None).await.unwrap();
    assert_eq!((j.read_seq, j.unread, j.mentions), (first.seq, 2, 0));
    // Never backwards; capped at the room's last seq.
    assert_eq!(laptop.read("general", 1).await.unwrap(), first.seq);
    let last = laptop.read("general", 10_000).await.unwrap();
    assert_eq!(
        Some(last),
        node.server()
            .node()
            .store
            .last_seq("general")
            .await
            .unwrap()
    );
    assert_eq!(
        next_read_push(&mut phone).await.1,
        first.seq,
        "the backwards read is pushed as is"
    );
    assert_eq!(next_read_push(&mut phone).await.1, last);
    // The connection that read gets its answer, not a push as well.
    assert!(matches!(
        laptop.recv_timeout(Duration::from_millis(300)).await,
        Err(ClientError::Timeout(_))
    ));

    // GET /api/rooms: the read state of the rooms the user read in.
    let rooms = http::rooms(&node.http(), &token("alice")).await.unwrap();
    let general = rooms.iter().find(|r| r.room == "general").unwrap();
    assert_eq!(
        (
            general.member,
            general.read_seq,
            general.unread,
            general.mentions
        ),
        (Some(true), Some(last), Some(0), Some(0))
    );
    let rooms = http::rooms(&node.http(), &token("carol")).await.unwrap();
    let general = rooms.iter().find(|r| r.room == "general").unwrap();
    assert_eq!(
        (general.member, general.unread),
        (Some(false), None),
        "carol never joined it: not hers, no read state"
    );

    // Errors: unknown rooms, others' DMs, bad names.
    for (room, code) in [
        ("nowhere", ErrorCode::NotFound),
        ("dm:bob:carol", ErrorCode::Forbidden),
        ("Not A Room", ErrorCode::BadRequest),
    ] {
        let e = phone.read(room, 1).await.unwrap_err();
        assert_eq!(e.code(), Some(code), "{room}");
    }

    // Stored: a restarted node knows it.
    drop((phone, laptop, bob));
    node = node.restart().await;
    let mut alice = node.connect("alice").await;
    let j = alice.join("general", None).await.unwrap();
    assert_eq!((j.read_seq, j.unread), (last, 0));
}
