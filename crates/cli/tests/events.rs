//! Protocol 1.1 §1 over real sockets: edits, deletes, reactions and replies
//! are room events in the same gapless sequence as messages — pushed live,
//! replayed exactly once on resume, shown in their current state in every
//! history list — with the permission and error rules of
//! protocol-chat.md §1. (The store-level rules run on both backends in
//! store.rs; the fleet in fleet.rs.)

#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

use std::time::Duration;

use parley_client::protocol::{ErrorCode, RoomEvent, ServerFrame};
use parley_client::{ClientError, http};
use parley_testkit::{TestNode, kinds, token};

const WAIT: Duration = Duration::from_secs(5);

fn code(e: ClientError) -> ErrorCode {
    e.code()
        .unwrap_or_else(|| panic!("expected a server error, got {e}"))
}

#[tokio::test]
async fn edits_deletes_reactions_and_replies_are_room_events() {
    let node = TestNode::start().await;
    let mut alice = node.connect("alice").await;
    let mut bob = node.connect("bob").await;
    alice.join("general", None).await.unwrap();
    bob.join("general", None).await.unwrap();

    let hello = alice.send("general", "helo", None).await.unwrap();
    assert_eq!(bob.next_event(WAIT).await.unwrap().seq(), hello.seq);
    // Each change is acked with its own seq and pushed to every member.
    let edit = alice
        .edit("general", hello.seq, "hello", None)
        .await
        .unwrap();
    let react = bob
        .react("general", hello.seq, "👍", true, None)
        .await
        .unwrap();
    let reply = bob
        .reply("general", hello.seq, "hi alice", None)
        .await
        .unwrap();
    assert_eq!(
        (edit.seq, react.seq, reply.seq),
        (hello.seq + 1, hello.seq + 2, hello.seq + 3)
    );
    match bob.next_event(WAIT).await.unwrap() {
        RoomEvent::Edited(e) => {
            assert_eq!(
                (e.seq, e.target, e.text.as_str()),
                (edit.seq, hello.seq, "hello")
            );
            assert_eq!(e.from, "alice");
        }
        other => panic!("expected edited, got {other:?}"),
    }
    // Alice gets her own events too (her message, her edit) before bob's.
    let mut own = Vec::new();
    for _ in 0..2 {
        own.push(alice.next_event(WAIT).await.unwrap().seq());
    }
    assert_eq!(own, [hello.seq, edit.seq]);
    match alice.next_event(WAIT).await.unwrap() {
        RoomEvent::Reaction(r) => {
            assert_eq!(
                (r.target, r.emoji.as_str(), r.on, r.from.as_str()),
                (hello.seq, "👍", true, "bob")
            );
        }
        other => panic!("expected reaction, got {other:?}"),
    }
    match alice.next_event(WAIT).await.unwrap() {
        RoomEvent::Message(m) => assert_eq!((m.seq, m.reply_to), (reply.seq, Some(hello.seq))),
        other => panic!("expected the reply, got {other:?}"),
    }

    // History: the log, with each message in its current state.
    let (events, more) = bob
        .history_events("general", None, None, None)
        .await
        .unwrap();
    assert!(!more);
    assert_eq!(
        kinds(&events),
        ["message 1", "edited 2", "reaction 3", "message 4"]
    );
    let first = events[0].as_message().unwrap();
    assert_eq!(first.text, "hello");
    assert!(first.edited.is_some());
    assert_eq!(first.reactions.get("👍"), Some(&vec!["bob".to_string()]));
    // The same over REST.
    let page = http::messages(&node.http(), &token("carol"), "general", None, None, None)
        .await
        .unwrap();
    assert_eq!(page.messages, events);

    // Bob's own reaction and reply came back to him as well.
    while bob.next_event(WAIT).await.unwrap().seq() < reply.seq {}
    // Delete: the text goes; later edits and reactions are not_found.
    let deleted = alice.delete("general", hello.seq, None).await.unwrap();
    match bob.next_event(WAIT).await.unwrap() {
        RoomEvent::Deleted(d) => assert_eq!((d.seq, d.target), (deleted.seq, hello.seq)),
        other => panic!("expected deleted, got {other:?}"),
    }
    let joined = bob.join("general", None).await.unwrap();
    let first = joined.history[0].clone();
    assert!(
        first.deleted && first.text.is_empty() && first.reactions.is_empty(),
        "{first:?}"
    );
    assert!(
        joined.events.iter().all(|e| match e {
            RoomEvent::Edited(e) => e.text.is_empty(),
            _ => true,
        }),
        "no version of a deleted text is left: {:?}",
        joined.events
    );
    for result in [
        alice.edit("general", hello.seq, "again", None).await,
        alice.delete("general", hello.seq, None).await,
        bob.react("general", hello.seq, "👍", false, None).await,
    ] {
        assert_eq!(code(result.unwrap_err()), ErrorCode::NotFound);
    }
}

#[tokio::test]
async fn permissions_and_bad_requests() {
    let node = TestNode::start().await;
    let mut alice = node.connect("alice").await;
    let mut bob = node.connect("bob").await;
    alice.join("general", None).await.unwrap();
    let m = alice.send("general", "mine", None).await.unwrap();

    // Only the author edits; only the author or a server admin deletes.
    assert_eq!(
        code(
            bob.edit("general", m.seq, "yours now", None)
                .await
                .unwrap_err()
        ),
        ErrorCode::Forbidden
    );
    assert_eq!(
        code(bob.delete("general", m.seq, None).await.unwrap_err()),
        ErrorCode::Forbidden
    );
    // Any spelling of the author is the author.
    let mut alice2 = node.connect("ALICE").await;
    alice2
        .edit("general", m.seq, "still mine", None)
        .await
        .unwrap();
    let store = node.server().node().store.clone();
    store.create_user("moderator", "x").await.unwrap();
    assert!(store.set_role("moderator", "admin").await.unwrap());
    let mut admin = node.connect("moderator").await;
    admin.delete("general", m.seq, None).await.unwrap();

    // Unknown targets, targets that are not messages, unknown rooms.
    let other = alice.send("general", "other", None).await.unwrap();
    let reaction = bob
        .react("general", other.seq, "🎉", true, None)
        .await
        .unwrap();
    for target in [999, reaction.seq] {
        assert_eq!(
            code(alice.edit("general", target, "x", None).await.unwrap_err()),
            ErrorCode::NotFound,
            "target {target}"
        );
        assert_eq!(
            code(alice.reply("general", target, "x", None).await.unwrap_err()),
            ErrorCode::NotFound
        );
    }
    assert_eq!(
        code(bob.react("nowhere", 1, "👍", true, None).await.unwrap_err()),
        ErrorCode::NotFound
    );
    // Bad input: emoji rules, empty or oversized edits, bad room names, DMs
    // of others.
    for emoji in ["", "two words", &"x".repeat(33), "tab\t"] {
        assert_eq!(
            code(
                bob.react("general", other.seq, emoji, true, None)
                    .await
                    .unwrap_err()
            ),
            ErrorCode::BadRequest,
            "{emoji:?}"
        );
    }
    assert_eq!(
        code(
            alice
                .edit("general", other.seq, "   ", None)
                .await
                .unwrap_err()
        ),
        ErrorCode::BadRequest
    );
    assert_eq!(
        code(
            alice
                .edit("general", other.seq, &"x".repeat(5000), None)
                .await
                .unwrap_err()
        ),
        ErrorCode::TooLarge
    );
    assert_eq!(
        code(alice.delete("Bad Room", 1, None).await.unwrap_err()),
        ErrorCode::BadRequest
    );
    assert_eq!(
        code(
            bob.react("dm:alice:carol", 1, "👍", true, None)
                .await
                .unwrap_err()
        ),
        ErrorCode::Forbidden
    );
    // Nothing of the refused requests took a seq.
    let (events, _) = alice
        .history_events("general", None, None, None)
        .await
        .unwrap();
    assert_eq!(
        kinds(&events),
        [
            "message 1",
            "edited 2",
            "deleted 3",
            "message 4",
            "reaction 5"
        ]
    );
}

#[tokio::test]
async fn every_request_is_idempotent_with_a_nonce() {
    let node = TestNode::start().await;
    let mut alice = node.connect("alice").await;
    alice.join("general", None).await.unwrap();
    let m = alice
        .send("general", "first", Some("n-send"))
        .await
        .unwrap();
    let reply = alice
        .reply("general", m.seq, "re", Some("n-reply"))
        .await
        .unwrap();
    let edit = alice
        .edit("general", m.seq, "first!", Some("n-edit"))
        .await
        .unwrap();
    let react = alice
        .react("general", m.seq, "👍", true, Some("n-react"))
        .await
        .unwrap();
    let del = alice
        .delete("general", reply.seq, Some("n-delete"))
        .await
        .unwrap();
    // A retry after a lost ack: the same seq, nothing stored again —
    // whatever happened since (the edit is answered although the message
    // was edited again meanwhile).
    alice
        .edit("general", m.seq, "first!!", Some("n-edit2"))
        .await
        .unwrap();
    assert_eq!(
        alice
            .reply("general", m.seq, "re", Some("n-reply"))
            .await
            .unwrap()
            .seq,
        reply.seq
    );
    assert_eq!(
        alice
            .edit("general", m.seq, "first!", Some("n-edit"))
            .await
            .unwrap()
            .seq,
        edit.seq
    );
    assert_eq!(
        alice
            .react("general", m.seq, "👍", true, Some("n-react"))
            .await
            .unwrap()
            .seq,
        react.seq
    );
    assert_eq!(
        alice
            .delete("general", reply.seq, Some("n-delete"))
            .await
            .unwrap()
            .seq,
        del.seq
    );
    // A reaction already on, without a nonce: the seq of the event that set it.
    assert_eq!(
        alice
            .react("general", m.seq, "👍", true, None)
            .await
            .unwrap()
            .seq,
        react.seq
    );
    let last = node
        .server()
        .node()
        .store
        .last_seq("general")
        .await
        .unwrap();
    assert_eq!(last, Some(6), "six events stored, no more");
}

/// Resume (`join` with `since`) replays every event missed, exactly once,
/// in seq order — edits, deletes and reactions included — and the live
/// stream continues after them with nothing lost or repeated.
#[tokio::test]
async fn resume_replays_every_missed_event_exactly_once() {
    let node = TestNode::start().await;
    let mut alice = node.connect("alice").await;
    alice.join("general", None).await.unwrap();
    let mut bob = node.connect("bob").await;
    bob.join("general", None).await.unwrap();
    let a = alice.send("general", "a", None).await.unwrap();
    assert_eq!(bob.next_event(WAIT).await.unwrap().seq(), a.seq);
    let seen = a.seq;
    drop(bob);

    let b = alice.send("general", "b", None).await.unwrap();
    alice.edit("general", a.seq, "a2", None).await.unwrap();
    alice
        .react("general", b.seq, "🎉", true, None)
        .await
        .unwrap();
    alice.delete("general", b.seq, None).await.unwrap();
    alice
        .react("general", a.seq, "👀", true, None)
        .await
        .unwrap();

    let mut bob = node.connect("bob").await;
    let joined = bob.join("general", Some(seen)).await.unwrap();
    assert_eq!(
        kinds(&joined.events),
        [
            "message 2",
            "edited 3",
            "reaction 4",
            "deleted 5",
            "reaction 6"
        ]
    );
    assert_eq!(joined.last_seq, 6);
    // Live after the replay: the next event is 7, once.
    let next = alice.send("general", "c", None).await.unwrap();
    assert_eq!(next.seq, 7);
    assert_eq!(bob.next_event(WAIT).await.unwrap().seq(), 7);
    assert!(
        matches!(
            bob.recv_timeout(Duration::from_millis(300)).await,
            Err(ClientError::Timeout(_))
        ),
        "nothing is pushed twice"
    );
    // A plain version-1 frame parser still reads every push as JSON with a type.
    let text = ServerFrame::Reaction(match &joined.events[2] {
        RoomEvent::Reaction(r) => r.clone(),
        other => panic!("{other:?}"),
    })
    .to_json();
    assert!(text.starts_with("{\"type\":\"reaction\""), "{text}");
}

/// The resilient client (what `parley chat` runs on) follows the whole
/// event log: a message after an edit is the next seq, not a gap, and every
/// event is handed out once, in order, live and on a catch-up.
#[tokio::test]
async fn the_resilient_client_hands_out_every_event_in_order() {
    use parley_client::{Client, ClientConfig, Event};
    let node = TestNode::start().await;
    let mut alice = node.connect("alice").await;
    alice.join("general", None).await.unwrap();
    let a = alice.send("general", "before", None).await.unwrap();
    alice.edit("general", a.seq, "before!", None).await.unwrap();

    let mut config = ClientConfig::new(node.ws_url(), token("bob"));
    config.rooms = vec!["general".into()];
    let (client, mut events) = Client::start(config);
    let mut got = Vec::new();
    async fn next(events: &mut tokio::sync::mpsc::UnboundedReceiver<Event>) -> String {
        loop {
            match tokio::time::timeout(WAIT, events.recv())
                .await
                .unwrap()
                .unwrap()
            {
                Event::Message(m) => return format!("message {}", m.seq),
                Event::Change(e) => return format!("change {}", e.seq()),
                _ => continue,
            }
        }
    }
    // The join's history (the default page: the log so far).
    for _ in 0..2 {
        got.push(next(&mut events).await);
    }
    alice
        .react("general", a.seq, "👍", true, None)
        .await
        .unwrap();
    let b = alice.send("general", "after", None).await.unwrap();
    alice.delete("general", b.seq, None).await.unwrap();
    for _ in 0..3 {
        got.push(next(&mut events).await);
    }
    assert_eq!(
        got,
        ["message 1", "change 2", "change 3", "message 4", "change 5"]
    );
    client.stop().await;
}

/// A reply in a DM, sent with `to` (no join needed, like any DM send),
/// answers a message of that DM; a seq that is not one of its messages is
/// `not_found`, as in a room.
#[tokio::test]
async fn a_dm_reply_by_to_answers_a_message_of_that_dm() {
    let node = TestNode::start().await;
    let mut alice = node.connect("alice").await;
    let mut bob = node.connect("bob").await;
    let first = alice.send_dm("Bob", "lunch?", None).await.unwrap();
    assert_eq!(first.room, "dm:alice:bob");
    let dm_reply = |id: u64, reply_to: u64| parley_client::protocol::ClientFrame::Send {
        id: Some(id),
        room: None,
        to: Some("alice".into()),
        text: "yes!".into(),
        nonce: None,
        reply_to: Some(reply_to),
    };
    let id = bob.next_id();
    match bob.request(id, &dm_reply(id, first.seq)).await.unwrap() {
        ServerFrame::Ack { room, seq, .. } => assert_eq!((room.as_str(), seq), ("dm:alice:bob", 2)),
        other => panic!("expected an ack, got {other:?}"),
    }
    let id = bob.next_id();
    match bob.request(id, &dm_reply(id, 99)).await {
        Err(e) => assert_eq!(code(e), ErrorCode::NotFound),
        Ok(other) => panic!("expected not_found, got {other:?}"),
    }
    let events = http::messages(
        &node.http(),
        &token("alice"),
        "dm:alice:bob",
        None,
        None,
        None,
    )
    .await
    .unwrap()
    .messages;
    assert_eq!(kinds(&events), ["message 1", "message 2"]);
    match &events[1] {
        RoomEvent::Message(m) => assert_eq!((m.from.as_str(), m.reply_to), ("bob", Some(1))),
        other => panic!("expected the reply, got {other:?}"),
    }
    // Alice got it live, with its reply_to.
    loop {
        match alice.next_event(WAIT).await.unwrap() {
            RoomEvent::Message(m) if m.seq == 2 => {
                assert_eq!(m.reply_to, Some(1));
                break;
            }
            _ => {}
        }
    }
}
