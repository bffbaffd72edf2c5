//! One store test suite, run against both backends: SQLite (a file in a temp
//! dir) and PostgreSQL (a real server started for the test). Each case is
//! written once against the `Store` trait.

#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

use std::sync::Arc;
use std::time::Duration;

use parley_protocol::time::now_ms;
use parley_server::bus::Bus;
use parley_server::bus::local::LocalBus;
use parley_server::commit::Appender;
use parley_server::store::{
    AppendOutcome, Change, EventKind, NewMessage, Refusal, Store, StoreError, Unread,
};
use parley_testkit::services::Postgres;
use parley_testkit::{eventually, postgres_pair, sqlite_pair};

const HOUR_MS: i64 = 3_600_000;

fn msg(room: &str, from: &str, text: &str, nonce: Option<&str>) -> NewMessage {
    NewMessage {
        room: room.into(),
        from: from.into(),
        text: text.into(),
        nonce: nonce.map(Into::into),
        ts_ms: 1_000,
        ..Default::default()
    }
}

/// A message accepted by a node whose clock read `ts_ms`.
fn at(room: &str, from: &str, text: &str, ts_ms: i64) -> NewMessage {
    NewMessage {
        ts_ms,
        ..msg(room, from, text, None)
    }
}

fn seqs(outcomes: &[AppendOutcome]) -> Vec<u64> {
    outcomes.iter().map(|o| o.message().unwrap().seq).collect()
}

async fn suite(a: Arc<dyn Store>, b: Arc<dyn Store>) {
    // Seq starts at 1 per room and is gapless across batches and rooms.
    let out = a
        .append_batch(&[
            msg("r1", "alice", "1", None),
            msg("r2", "alice", "x", None),
            msg("r1", "bob", "2", None),
        ])
        .await
        .unwrap();
    assert_eq!(seqs(&out), vec![1, 1, 2]);
    assert!(out.iter().all(|o| matches!(o, AppendOutcome::Stored(_))));
    let out = b
        .append_batch(&[msg("r1", "carol", "3", None)])
        .await
        .unwrap();
    assert_eq!(
        seqs(&out),
        vec![3],
        "another handle continues the same sequence"
    );
    assert_eq!(a.last_seq("r1").await.unwrap(), Some(3));
    assert_eq!(a.last_seq("nowhere").await.unwrap(), None);

    // Nonces: repeated in a later batch, in the same batch, or by another sender.
    let out = a
        .append_batch(&[msg("r1", "alice", "n", Some("k1"))])
        .await
        .unwrap();
    assert_eq!(seqs(&out), vec![4]);
    let out = a
        .append_batch(&[
            msg("r1", "alice", "n again", Some("k1")),
            msg("r1", "alice", "m", Some("k2")),
            msg("r1", "alice", "m again", Some("k2")),
            msg("r1", "bob", "bob's k1", Some("k1")),
        ])
        .await
        .unwrap();
    assert_eq!(seqs(&out), vec![4, 5, 5, 6]);
    assert!(
        matches!(&out[0], AppendOutcome::Duplicate(m) if m.text == "n"),
        "the original is returned"
    );
    assert!(matches!(out[1], AppendOutcome::Stored(_)));
    assert!(matches!(out[2], AppendOutcome::Duplicate(_)));
    assert!(matches!(out[3], AppendOutcome::Stored(_)));
    let dup = b
        .append_batch(&[msg("r1", "alice", "n", Some("k1"))])
        .await
        .unwrap();
    assert!(matches!(&dup[0], AppendOutcome::Duplicate(m) if m.seq == 4));

    // Reads: forward and backward pages, oldest first.
    let fwd = a.range_forward("r1", 2, u64::MAX, 3).await.unwrap();
    assert_eq!(fwd.iter().map(|m| m.seq).collect::<Vec<_>>(), vec![3, 4, 5]);
    let bounded = a.range_forward("r1", 1, 4, 10).await.unwrap();
    assert_eq!(
        bounded.iter().map(|m| m.seq).collect::<Vec<_>>(),
        vec![2, 3]
    );
    let back = a.range_backward("r1", 6, 2).await.unwrap();
    assert_eq!(back.iter().map(|m| m.seq).collect::<Vec<_>>(), vec![4, 5]);
    let latest = a.range_backward("r1", u64::MAX, 2).await.unwrap();
    assert_eq!(latest.iter().map(|m| m.seq).collect::<Vec<_>>(), vec![5, 6]);
    assert_eq!(latest[1].from, "bob");
    assert_eq!(latest[1].nonce.as_deref(), Some("k1"));

    // Rooms exist once joined; ensure_room keeps last_seq.
    assert_eq!(a.ensure_room("empty").await.unwrap(), 0);
    assert_eq!(a.ensure_room("r1").await.unwrap(), 6);
    let rooms = b.rooms().await.unwrap();
    assert!(rooms.contains(&("empty".to_string(), 0)) && rooms.contains(&("r1".to_string(), 6)));
    // The anti-entropy sweep's batch read: the rooms that exist, with their seq.
    let names: Vec<Arc<str>> = ["r1", "nowhere", "empty", "r2", "a \"quoted\" room"]
        .into_iter()
        .map(Arc::from)
        .collect();
    let mut seqs_now = b.last_seqs(&names).await.unwrap();
    seqs_now.sort();
    assert_eq!(
        seqs_now,
        vec![
            ("empty".to_string(), 0),
            ("r1".to_string(), 6),
            ("r2".to_string(), 1)
        ]
    );
    assert!(b.last_seqs(&[]).await.unwrap().is_empty());

    // Users and settings.
    a.create_user("alice", "hash1").await.unwrap();
    assert!(matches!(
        b.create_user("alice", "hash2").await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        b.password_hash("alice").await.unwrap().as_deref(),
        Some("hash1")
    );
    assert_eq!(a.password_hash("nobody").await.unwrap(), None);
    assert_eq!(a.setting_or_insert("k", "first").await.unwrap(), "first");
    assert_eq!(
        b.setting_or_insert("k", "second").await.unwrap(),
        "first",
        "first writer wins"
    );
    a.ping().await.unwrap();

    // Concurrent writers on two handles: one gapless sequence (invariant 2).
    let mut tasks = Vec::new();
    for w in 0..8 {
        let store = if w % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            for k in 0..25 {
                let batch: Vec<NewMessage> = (0..4)
                    .map(|j| msg("hot", &format!("w{w}"), &format!("{k}-{j}"), None))
                    .collect();
                got.extend(seqs(&store.append_batch(&batch).await.unwrap()));
            }
            got
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        let got = t.await.unwrap();
        assert!(
            got.windows(2).all(|w| w[0] < w[1]),
            "one writer's seqs increase"
        );
        all.extend(got);
    }
    all.sort_unstable();
    assert_eq!(all, (1..=800).collect::<Vec<u64>>());
    let stored = a.range_forward("hot", 0, u64::MAX, 1000).await.unwrap();
    assert_eq!(stored.len(), 800);

    // Batches spanning the same rooms in opposite orders, on two handles at
    // once: no deadlock, and every room stays gapless.
    let mut tasks = Vec::new();
    for w in 0..6 {
        let store = if w % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            let mut rooms = ["x1", "x2", "x3"];
            if w % 2 == 1 {
                rooms.reverse();
            }
            for k in 0..20 {
                let batch: Vec<NewMessage> = rooms
                    .iter()
                    .map(|r| {
                        msg(
                            r,
                            &format!("w{w}"),
                            &format!("{k}"),
                            Some(&format!("{w}-{k}")),
                        )
                    })
                    .collect();
                store.append_batch(&batch).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    for room in ["x1", "x2", "x3"] {
        let stored = b.range_forward(room, 0, u64::MAX, 1000).await.unwrap();
        let seqs: Vec<u64> = stored.iter().map(|m| m.seq).collect();
        assert_eq!(seqs, (1..=120).collect::<Vec<u64>>(), "room {room}");
        assert_eq!(a.last_seq(room).await.unwrap(), Some(120));
    }
}

/// An event request of `from` on `room`.
fn change(room: &str, from: &str, change: Change, text: &str, nonce: Option<&str>) -> NewMessage {
    NewMessage {
        change,
        ..msg(room, from, text, nonce)
    }
}

fn edit(target: u64) -> Change {
    Change::Edit { target }
}

fn delete(target: u64, moderator: bool) -> Change {
    Change::Delete { target, moderator }
}

fn react(target: u64, emoji: &str, on: bool) -> Change {
    Change::React {
        target,
        emoji: emoji.into(),
        on,
    }
}

async fn one(store: &Arc<dyn Store>, m: NewMessage) -> AppendOutcome {
    let mut out = store.append_batch(&[m]).await.unwrap();
    assert_eq!(out.len(), 1);
    out.remove(0)
}

fn stored_seq(o: &AppendOutcome) -> u64 {
    match o {
        AppendOutcome::Stored(m) => m.seq,
        other => panic!("expected Stored, got {other:?}"),
    }
}

/// Protocol 1.1 §1 in the store: edits, deletes, reactions and replies take
/// the room's next seq in the same sequence as messages; the rules only the
/// store can check refuse one append without failing its batch; history
/// reads show each message in its current state; nonces make every kind
/// idempotent. `b` is a second handle (another node).
async fn events_suite(a: Arc<dyn Store>, b: Arc<dyn Store>) {
    let r = "ev";
    let out = a
        .append_batch(&[msg(r, "Alice", "hello", None), msg(r, "bob", "hi", None)])
        .await
        .unwrap();
    assert_eq!(seqs(&out), vec![1, 2]);

    // A batch mixing messages and events keeps submission order for seqs,
    // and each event sees the ones before it.
    let out = a
        .append_batch(&[
            change(r, "alice", edit(1), "hello!", Some("e1")),
            msg(r, "carol", "plain", None),
            change(r, "bob", react(1, "👍", true), "", None),
            change(r, "bob", Change::Reply { reply_to: 1 }, "welcome", None),
            change(r, "bob", edit(1), "hijack", None),
            change(r, "bob", delete(2, false), "", None),
            change(r, "bob", edit(2), "after delete", None),
            change(r, "carol", react(99, "👍", true), "", None),
            msg(r, "carol", "still fine", None),
        ])
        .await
        .unwrap();
    let got: Vec<String> = out
        .iter()
        .map(|o| match o {
            AppendOutcome::Stored(m) => format!("{} {}", m.seq, m.kind.name()),
            AppendOutcome::Duplicate(m) => format!("dup {}", m.seq),
            AppendOutcome::Refused(Refusal::NotFound(_)) => "not_found".into(),
            AppendOutcome::Refused(Refusal::Forbidden(_)) => "forbidden".into(),
            AppendOutcome::Refused(Refusal::Conflict(_)) => "conflict".into(),
        })
        .collect();
    assert_eq!(
        got,
        [
            "3 edited",
            "4 message",
            "5 reaction",
            "6 message",
            "forbidden",
            "7 deleted",
            "not_found",
            "not_found",
            "8 message"
        ]
    );
    assert_eq!(
        b.last_seq(r).await.unwrap(),
        Some(8),
        "refusals take no seq"
    );

    // History: the log, each message in its current state.
    let page = b.range_forward(r, 0, u64::MAX, 100).await.unwrap();
    let seqs: Vec<u64> = page.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, (1..=8).collect::<Vec<u64>>());
    let first = &page[0];
    assert_eq!(first.text, "hello!");
    assert!(first.edited_ms.is_some_and(|e| e >= first.ts_ms));
    assert_eq!(first.reactions.get("👍"), Some(&vec!["bob".to_string()]));
    assert!(page[1].deleted && page[1].text.is_empty(), "{:?}", page[1]);
    assert_eq!(page[2].kind, EventKind::Edited { target: 1 });
    assert_eq!(page[2].text, "hello!");
    assert_eq!(page[5].reply_to, Some(1));
    let backward = a.range_backward(r, u64::MAX, 8).await.unwrap();
    assert_eq!(backward, page, "both directions read the same state");

    // Idempotent: a repeated nonce stores nothing and answers the original.
    let again = one(&b, change(r, "alice", edit(1), "other text", Some("e1"))).await;
    assert!(
        matches!(&again, AppendOutcome::Duplicate(m) if m.seq == 3),
        "{again:?}"
    );
    // A reaction that changes nothing stores nothing: its answer is the
    // event that set the state (the message itself if never set).
    let same = one(&a, change(r, "BOB", react(1, "👍", true), "", None)).await;
    assert!(
        matches!(&same, AppendOutcome::Duplicate(m) if m.seq == 5),
        "{same:?}"
    );
    let never = one(&a, change(r, "carol", react(1, "🎉", false), "", None)).await;
    assert!(
        matches!(&never, AppendOutcome::Duplicate(m) if m.seq == 1),
        "{never:?}"
    );
    let off = one(&a, change(r, "bob", react(1, "👍", false), "", None)).await;
    assert_eq!(stored_seq(&off), 9);
    let page = a.range_forward(r, 0, 2, 10).await.unwrap();
    assert!(page[0].reactions.is_empty(), "{:?}", page[0].reactions);

    // Deleting: the author or a moderator; the text goes from every version.
    let forbidden = one(&a, change(r, "carol", delete(1, false), "", None)).await;
    assert!(matches!(
        forbidden,
        AppendOutcome::Refused(Refusal::Forbidden(_))
    ));
    let by_admin = one(&a, change(r, "carol", delete(1, true), "", None)).await;
    assert_eq!(stored_seq(&by_admin), 10);
    let page = b.range_forward(r, 0, u64::MAX, 100).await.unwrap();
    assert!(page[0].deleted && page[0].text.is_empty());
    assert!(page[2].text.is_empty(), "the edit's text went with it");
    for c in [edit(1), delete(1, true), react(1, "👍", true)] {
        let o = one(&a, change(r, "alice", c, "x", None)).await;
        assert!(
            matches!(o, AppendOutcome::Refused(Refusal::NotFound(_))),
            "{o:?}"
        );
    }
    // A reply may answer a deleted message (it was said); not an event.
    let reply = one(
        &a,
        change(r, "carol", Change::Reply { reply_to: 1 }, "re", None),
    )
    .await;
    assert_eq!(stored_seq(&reply), 11);
    let o = one(
        &a,
        change(r, "carol", Change::Reply { reply_to: 3 }, "re", None),
    )
    .await;
    assert!(
        matches!(o, AppendOutcome::Refused(Refusal::NotFound(_))),
        "{o:?}"
    );
    // Events on a room that does not exist: not_found, nothing created.
    let o = one(&a, change("nowhere", "alice", edit(1), "x", None)).await;
    assert!(
        matches!(o, AppendOutcome::Refused(Refusal::NotFound(_))),
        "{o:?}"
    );
    assert_eq!(a.last_seq("nowhere").await.unwrap(), None);
}

/// Protocol 1.1 §2 in the store: read positions only move forward and are
/// capped at the room's last seq; unread counts others' live messages after
/// the position, capped; mentions are whole names in any case. `b` is a
/// second handle (another node).
async fn read_state_suite(a: Arc<dyn Store>, b: Arc<dyn Store>) {
    assert_eq!(a.mark_read("alice", "nowhere", 5).await.unwrap(), None);
    let batch: Vec<NewMessage> = (0..1_200)
        .map(|i| {
            let text = match i % 100 {
                0 => format!("@Alice see {i}"),
                1 => format!("@alicex {i}"),
                _ => format!("message {i}"),
            };
            msg(
                "big",
                if i % 10 == 9 { "Alice" } else { "bob" },
                &text,
                None,
            )
        })
        .collect();
    a.append_batch(&batch).await.unwrap();
    let u = b.unread("alice", "big").await.unwrap();
    assert_eq!(u.read_seq, 0);
    assert_eq!(
        u.unread,
        parley_protocol::UNREAD_CAP,
        "counted up to the cap"
    );
    // The newest 999 unread of others: mentions at 1101, 1001, … 101.
    assert_eq!(u.mentions, 11);

    assert_eq!(
        a.mark_read("alice", "big", 1_190).await.unwrap(),
        Some(1_190)
    );
    assert_eq!(
        b.mark_read("alice", "big", 10).await.unwrap(),
        Some(1_190),
        "never back"
    );
    let u = a.unread("alice", "big").await.unwrap();
    // 1191..=1200: ten messages, 1200 (i = 1199) is alice's own.
    assert_eq!((u.read_seq, u.unread, u.mentions), (1_190, 9, 0));
    assert_eq!(
        a.mark_read("alice", "big", u64::MAX).await.unwrap(),
        Some(1_200)
    );
    assert_eq!(b.unread("alice", "big").await.unwrap().unread, 0);
    assert_eq!(
        b.read_positions("alice").await.unwrap(),
        vec![("big".to_string(), 1_200)]
    );
    assert!(b.read_positions("bob").await.unwrap().is_empty());

    // Many rooms in one statement (`GET /api/rooms`) count as each room
    // alone does: a room over the cap, one with a deleted mention, an
    // edited one and one's own message, one read to its end, one missing.
    let small = [
        msg("small", "bob", "hi @ALICE.", None),
        msg("small", "bob", "@alice gone", None),
        msg("small", "alice", "@alice me", None),
        msg("small", "carol", "plain", None),
        msg("small", "bob", "later", None),
    ];
    a.append_batch(&small).await.unwrap();
    one(&a, change("small", "bob", delete(2, false), "", None)).await;
    one(&a, change("small", "carol", edit(4), "now @alice", None)).await;
    a.append_batch(&[msg("quiet", "bob", "x", None)])
        .await
        .unwrap();
    a.mark_read("alice", "quiet", 1).await.unwrap();
    a.mark_read("alice", "big", 1_000).await.unwrap();
    let asked: Vec<(String, u64)> = [
        ("small", 0),
        ("big", 0),
        ("quiet", 1),
        ("nowhere", 0),
        ("small", 4),
    ]
    .into_iter()
    .map(|(room, seq)| (room.to_string(), seq))
    .collect();
    let many = b.unread_many("alice", &asked).await.unwrap();
    let small_all = Unread {
        read_seq: 0,
        unread: 3,
        mentions: 2,
    };
    let small_after_4 = Unread {
        read_seq: 4,
        unread: 1,
        mentions: 0,
    };
    let big_all = Unread {
        read_seq: 0,
        unread: parley_protocol::UNREAD_CAP,
        mentions: 11,
    };
    let nothing = |read_seq| Unread {
        read_seq,
        unread: 0,
        mentions: 0,
    };
    assert_eq!(
        many,
        [small_all, big_all, nothing(1), nothing(0), small_after_4]
    );
    // The one-room count, from the stored position, agrees.
    a.mark_read("alice", "small", 4).await.unwrap();
    assert_eq!(a.unread("alice", "small").await.unwrap(), small_after_4);
    assert_eq!(b.unread_many("alice", &[]).await.unwrap(), []);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_store_keeps_read_positions() {
    let (_dir, a, b) = sqlite_pair().await;
    read_state_suite(a, b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_store_keeps_read_positions() {
    let (_pg, a, b) = postgres_pair().await;
    read_state_suite(a, b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_store_keeps_the_event_rules() {
    let (_dir, a, b) = sqlite_pair().await;
    events_suite(a, b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_store_keeps_the_event_rules() {
    let (_pg, a, b) = postgres_pair().await;
    events_suite(a, b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_store_keeps_the_contract() {
    let (_dir, a, b) = sqlite_pair().await;
    suite(a, b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_store_keeps_the_contract() {
    let (_pg, a, b) = postgres_pair().await;
    suite(a, b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_store_reports_an_outage_as_unavailable() {
    let (pg, a, _b) = postgres_pair().await;
    a.append_batch(&[msg("r", "alice", "1", None)])
        .await
        .unwrap();
    // Stopping and restarting block (pg_ctl, psql): the blocking task owns
    // the server meanwhile and hands it back.
    let pg = tokio::task::spawn_blocking(move || {
        let mut pg = pg;
        pg.stop();
        pg
    })
    .await
    .unwrap();
    let err = a
        .append_batch(&[msg("r", "alice", "2", None)])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    assert!(matches!(a.ping().await, Err(StoreError::Unavailable(_))));
    let _pg = tokio::task::spawn_blocking(move || {
        let mut pg = pg;
        pg.restart();
        pg
    })
    .await
    .unwrap();
    let out = eventually(
        "the store to recover by itself",
        Duration::from_secs(10),
        || async { a.append_batch(&[msg("r", "alice", "2", None)]).await.ok() },
    )
    .await;
    assert_eq!(seqs(&out), vec![2]);
}

/// Fault 1, the store's share: input no store can hold (U+0000 in any text
/// field; PostgreSQL's TEXT refuses it) is refused by every backend alike —
/// an error that is not an outage, and nothing of its batch stored.
async fn refuses_what_no_store_can_hold(a: Arc<dyn Store>) {
    let bad = [
        msg("nul", "alice", "a\u{0}b", None),
        msg("nul", "alice", "fine", Some("n\u{0}")),
        msg("nul", "al\u{0}ice", "fine", None),
        msg("n\u{0}ul", "alice", "fine", None),
    ];
    for m in bad {
        let err = a
            .append_batch(&[msg("nul", "bob", "neighbour", None), m.clone()])
            .await
            .expect_err("a store refuses U+0000");
        assert!(
            !matches!(err, StoreError::Unavailable(_)),
            "a data error is not an outage: {err:?} for {m:?}"
        );
    }
    assert!(
        a.range_forward("nul", 0, u64::MAX, 10)
            .await
            .unwrap()
            .is_empty(),
        "a failed batch stores nothing"
    );
}

/// Fault 1, the committer's share: one bad message (its text `bad`) in a
/// group-commit batch fails alone; its neighbours are stored (in order,
/// gapless) and answered.
async fn a_bad_message_fails_alone_in_its_batch(store: Arc<dyn Store>, bad: &str) {
    let bus: Arc<dyn Bus> = Arc::new(LocalBus::new());
    let (appender, task) = Appender::spawn(store.clone(), bus, 64);
    // On this current-thread runtime the committer runs only when the test
    // awaits a reply, so all eight are queued first and make one batch.
    let sends = [
        ("alice", "one"),
        ("bob", "two"),
        ("carol", bad),
        ("dave", "four"),
        ("erin", "five"),
        ("frank", "six"),
        ("grace", "seven"),
        ("heidi", "eight"),
    ];
    let mut pending = Vec::new();
    for (from, text) in sends {
        pending.push(
            appender
                .submit(msg("batch", from, text, None))
                .await
                .unwrap(),
        );
    }
    let mut results = Vec::new();
    for p in pending {
        results.push(p.await.unwrap());
    }
    let mut next = 1;
    for ((from, text), result) in sends.iter().zip(&results) {
        if *text == bad {
            assert!(
                matches!(result, Err(e) if !matches!(e, StoreError::Unavailable(_))),
                "{from}'s bad message: {result:?}"
            );
        } else {
            let outcome = result
                .as_ref()
                .unwrap_or_else(|e| panic!("{from}'s good neighbour failed: {e:?}"));
            assert!(matches!(outcome, AppendOutcome::Stored(_)));
            assert_eq!(
                outcome.message().unwrap().seq,
                next,
                "{from}: seq order kept"
            );
            next += 1;
        }
    }
    let stored = store.range_forward("batch", 0, u64::MAX, 20).await.unwrap();
    let texts: Vec<&str> = stored.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(
        texts,
        ["one", "two", "four", "five", "six", "seven", "eight"]
    );
    appender.close();
    task.await.unwrap();
}

/// Fault 7: `ts` is stamped in the commit that assigns `seq` and never goes
/// below the room's previous `ts`, whatever the submitting node's clock said.
async fn ts_is_non_decreasing_along_seq(a: Arc<dyn Store>, b: Arc<dyn Store>) {
    let now = now_ms();
    // A node's clock stepped back an hour between two sends, on two handles.
    let first = a
        .append_batch(&[at("clock", "alice", "now", now)])
        .await
        .unwrap();
    let second = b
        .append_batch(&[at("clock", "bob", "an hour ago", now - HOUR_MS)])
        .await
        .unwrap();
    assert!(
        second[0].message().unwrap().ts_ms >= first[0].message().unwrap().ts_ms,
        "{first:?} then {second:?}"
    );
    // A clock an hour ahead, then right again.
    a.append_batch(&[at("clock", "carol", "ahead", now + HOUR_MS)])
        .await
        .unwrap();
    a.append_batch(&[at("clock", "carol", "right again", now_ms())])
        .await
        .unwrap();
    // One batch whose own ts go backwards (two rooms interleaved).
    let batch = [
        at("clock", "dave", "b1", now - 10),
        at("clock2", "dave", "c1", now),
        at("clock", "dave", "b2", now - 20_000),
        at("clock2", "dave", "c2", now - 2 * HOUR_MS),
        at("clock", "dave", "b3", now - 2 * HOUR_MS),
    ];
    let out = b.append_batch(&batch).await.unwrap();
    for room in ["clock", "clock2"] {
        let stored = a.range_forward(room, 0, u64::MAX, 100).await.unwrap();
        let ts: Vec<(u64, i64)> = stored.iter().map(|m| (m.seq, m.ts_ms)).collect();
        assert!(
            ts.windows(2).all(|w| w[0].1 <= w[1].1),
            "room {room}: ts goes backwards along seq: {ts:?}"
        );
    }
    // The outcome (the ack, the push) carries the stamped ts.
    for o in &out {
        let m = o.message().unwrap();
        let stored = a
            .range_forward(&m.room, m.seq - 1, m.seq + 1, 1)
            .await
            .unwrap();
        assert_eq!(stored[0].ts_ms, m.ts_ms, "outcome ts is the stored ts");
    }
    // Stamps stay near the store's clock (nothing below what was stored before).
    let last = a.range_backward("clock", u64::MAX, 1).await.unwrap();
    assert!(last[0].ts_ms >= now - 60_000, "{last:?}");
}

#[tokio::test]
async fn sqlite_store_refuses_what_no_store_can_hold() {
    let (_dir, a, _b) = sqlite_pair().await;
    refuses_what_no_store_can_hold(a).await;
}

#[tokio::test]
async fn postgres_store_refuses_what_no_store_can_hold() {
    let (_pg, a, _b) = postgres_pair().await;
    refuses_what_no_store_can_hold(a).await;
}

#[tokio::test]
async fn sqlite_a_bad_message_fails_alone_in_its_batch() {
    let (_dir, a, _b) = sqlite_pair().await;
    a_bad_message_fails_alone_in_its_batch(a, "th\u{0}ree").await;
}

#[tokio::test]
async fn postgres_a_bad_message_fails_alone_in_its_batch() {
    let (_pg, a, _b) = postgres_pair().await;
    a_bad_message_fails_alone_in_its_batch(a, "th\u{0}ree").await;
}

/// A data error only the database knows — here a character outside the
/// encoding of a WIN1252 database, past every check of the node — fails
/// its message alone too, through the database's own refusal.
#[tokio::test]
async fn postgres_a_message_only_the_database_refuses_fails_alone() {
    let pg = tokio::task::spawn_blocking(Postgres::start).await.unwrap();
    psql(
        &pg,
        "CREATE DATABASE latin ENCODING 'WIN1252' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0",
    );
    let url = format!("postgres://parley@127.0.0.1:{}/latin", pg.port);
    let store = parley_server::store::open(&url, 4).await.unwrap();
    let err = store
        .append_batch(&[msg("batch", "x", "\u{2713}", None)])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Internal(_)), "{err:?}");
    a_bad_message_fails_alone_in_its_batch(store, "check \u{2713}").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_ts_is_non_decreasing_along_seq() {
    let (_dir, a, b) = sqlite_pair().await;
    ts_is_non_decreasing_along_seq(a, b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_ts_is_non_decreasing_along_seq() {
    let (_pg, a, b) = postgres_pair().await;
    ts_is_non_decreasing_along_seq(a, b).await;
}

/// `psql` of the PostgreSQL installation the testkit runs.
fn psql(pg: &Postgres, sql: &str) {
    let mut dirs: Vec<std::path::PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .unwrap()
        .map(|e| e.unwrap().path().join("bin/psql"))
        .filter(|p| p.exists())
        .collect();
    dirs.sort();
    let psql = dirs.pop().expect("psql of Debian's postgresql");
    let out = std::process::Command::new(psql)
        .args(["-h", "127.0.0.1", "-p", &pg.port.to_string()])
        .args([
            "-U",
            "parley",
            "-d",
            "postgres",
            "-v",
            "ON_ERROR_STOP=1",
            "-q",
        ])
        .args(["-c", sql])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "psql failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A store made by an older Parley (schema 1 only) gets `last_ts` from its
/// messages: the first message after the upgrade is not stamped below them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_upgrade_keeps_ts_non_decreasing() {
    let pg = tokio::task::spawn_blocking(Postgres::start).await.unwrap();
    let ahead = now_ms() + HOUR_MS;
    let v1 = include_str!("../../server/migrations/postgres/0001_init.sql");
    psql(
        &pg,
        &format!(
            "{v1}\nCREATE TABLE parley_migrations (version BIGINT PRIMARY KEY, applied_ms BIGINT NOT NULL);\n\
             INSERT INTO parley_migrations VALUES (1, 0);\n\
             INSERT INTO rooms VALUES ('old', 2, 0);\n\
             INSERT INTO messages (room, seq, sender, body, ts_ms) VALUES \
             ('old', 1, 'a', 'x', {ahead}), ('old', 2, 'a', 'y', {});",
            ahead - 5
        ),
    );
    let store = parley_server::store::open(&pg.url(), 4).await.unwrap();
    let out = store
        .append_batch(&[at("old", "b", "after the upgrade", now_ms())])
        .await
        .unwrap();
    assert_eq!(out[0].message().unwrap().seq, 3);
    assert!(
        out[0].message().unwrap().ts_ms >= ahead,
        "{out:?} (before: {ahead})"
    );
}
