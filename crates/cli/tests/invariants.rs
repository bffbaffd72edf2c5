//! The invariants of docs/architecture.md, each pinned by a test that fails
//! if it breaks. Real sockets, real SQLite files in temp dirs, and for the
//! process-level ones (crash, SIGTERM, memory) the real `parley` binary.

#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use parley_client::protocol::{ClientFrame, ErrorCode, Message, ServerFrame, close};
use parley_client::{Connection, http};
use parley_testkit::services::Postgres;
use parley_testkit::{
    Fleet, NodeProcess, TestNode, assert_gapless, connect, eventually, faulty, fetch_all, metric,
    read_until_closed, skewed_clock, token,
};

const WAIT: Duration = Duration::from_secs(10);
const BIN: &str = env!("CARGO_BIN_EXE_parley");

/// Reads pushed messages of `room` until `seq == last` (or the connection ends).
async fn collect_until(conn: &mut Connection, room: &str, last: u64) -> Vec<Message> {
    let mut got = Vec::new();
    while got.last().map(|m: &Message| m.seq) != Some(last) {
        match conn.recv_timeout(WAIT).await {
            Ok(ServerFrame::Message(m)) if m.room == room => got.push(m),
            Ok(_) => {}
            Err(e) => panic!("stream ended before seq {last}: {e} (got {})", got.len()),
        }
    }
    got
}

/// Sends `n` messages pipelined (all frames first, then the acks); returns acked seqs.
async fn pipelined_sends(conn: &mut Connection, room: &str, n: usize, text: &str) -> Vec<u64> {
    let mut ids = HashSet::new();
    for i in 0..n {
        let id = conn.next_id();
        ids.insert(id);
        let frame = ClientFrame::Send {
            id: Some(id),
            room: Some(room.into()),
            to: None,
            text: format!("{text} {i}"),
            nonce: Some(format!("{id}")),
            reply_to: None,
        };
        conn.send_frame(&frame).await.unwrap();
    }
    let mut seqs = Vec::new();
    while !ids.is_empty() {
        match conn.recv_timeout(WAIT).await.unwrap() {
            ServerFrame::Ack {
                re: Some(id), seq, ..
            } => {
                assert!(ids.remove(&id));
                seqs.push(seq);
            }
            ServerFrame::Error {
                re: Some(id),
                code,
                message,
            } if ids.contains(&id) => {
                panic!("send failed: {code} {message}")
            }
            _ => {}
        }
    }
    seqs
}

/// Invariant 1: an ack means stored — acked messages survive kill -9 and a restart.
#[tokio::test]
async fn acked_messages_survive_a_crash() {
    let mut node = NodeProcess::start(BIN, &[]).await;
    let mut alice = connect(&node.ws_url(), "alice").await;
    alice.join("general", None).await.unwrap();
    let acked = pipelined_sends(&mut alice, "general", 300, "durable").await;
    node.signal("KILL");
    node.wait_exit(WAIT).await;
    let dir = node.dir.clone();
    let node2 = NodeProcess::spawn(BIN, &dir, &[]).await;
    let stored: HashSet<u64> = fetch_all(&node2.http(), "general")
        .await
        .iter()
        .map(|m| m.seq)
        .collect();
    for seq in &acked {
        assert!(stored.contains(seq), "acked seq {seq} lost by the crash");
    }
    drop(node);
}

/// Invariant 1 and 7: with the store down, a send gets `unavailable`, nothing
/// is delivered, readiness is 503; when it is back, seq continues with no gap.
#[tokio::test]
async fn storage_outage_refuses_sends_and_delivers_nothing() {
    let dir = tempfile::TempDir::new().unwrap();
    let (server, store) = faulty::start(dir.path()).await;
    let ws = format!("ws://{}/ws", server.addr());
    let base = format!("http://{}", server.addr());
    let mut alice = connect(&ws, "alice").await;
    let mut bob = connect(&ws, "bob").await;
    alice.join("general", None).await.unwrap();
    bob.join("general", None).await.unwrap();
    assert_eq!(alice.send("general", "before", None).await.unwrap().seq, 1);

    store.set_down(true);
    let e = alice.send("general", "during", None).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Unavailable));
    let e = http::post_message(&base, &token("bob"), "general", "during", None)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Unavailable));
    let r = http::request(&base, "GET", "/readyz", None, None)
        .await
        .unwrap();
    assert_eq!(r.status, 503);
    let r = http::request(&base, "GET", "/healthz", None, None)
        .await
        .unwrap();
    assert_eq!(r.status, 200, "liveness is not readiness");

    store.set_down(false);
    assert_eq!(
        alice.send("general", "after", None).await.unwrap().seq,
        2,
        "no gap after the outage"
    );
    let got = collect_until(&mut bob, "general", 2).await;
    let texts: Vec<&str> = got.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(
        texts,
        vec!["before", "after"],
        "the refused message was never delivered"
    );
    server.stop().await.unwrap();
}

/// Invariant 2: 50 concurrent senders in one room produce a gapless sequence
/// that every member sees identically.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_senders_produce_one_gapless_sequence() {
    const SENDERS: usize = 50;
    const EACH: usize = 20;
    let node = TestNode::start().await;
    let mut observers = Vec::new();
    for i in 0..3 {
        let mut o = node.connect(&format!("observer{i}")).await;
        o.join("busy", None).await.unwrap();
        observers.push(o);
    }
    let mut senders = Vec::new();
    for i in 0..SENDERS {
        let mut c = node.connect(&format!("sender{i}")).await;
        c.join("busy", None).await.unwrap();
        senders.push(c);
    }
    let tasks: Vec<_> = senders
        .into_iter()
        .map(|mut c| tokio::spawn(async move { pipelined_sends(&mut c, "busy", EACH, "hi").await }))
        .collect();
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.unwrap());
    }
    acked.sort_unstable();
    let total = (SENDERS * EACH) as u64;
    assert_gapless(&acked, 1, total);

    let mut seen: Vec<Vec<(u64, String, String)>> = Vec::new();
    for o in observers.iter_mut() {
        let got = collect_until(o, "busy", total).await;
        assert_gapless(&got.iter().map(|m| m.seq).collect::<Vec<_>>(), 1, total);
        seen.push(got.into_iter().map(|m| (m.seq, m.from, m.text)).collect());
    }
    assert!(
        seen.windows(2).all(|w| w[0] == w[1]),
        "every member sees the same sequence"
    );
}

/// Invariant 4: join with `since` while others send: history then live
/// stream, no gap, no duplicate — at many different moments.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_with_since_under_concurrent_sends_has_no_gap_or_duplicate() {
    const TOTAL: u64 = 600;
    let node = TestNode::start().await;
    let mut sender = node.connect("sender").await;
    sender.join("live", None).await.unwrap();
    let send_task = tokio::spawn(async move {
        for i in 0..TOTAL {
            sender.send("live", &format!("m{i}"), None).await.unwrap();
            if i % 50 == 0 {
                // Pacing: short pauses spread the sends over the joiners' start times.
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        sender
    });
    let mut joiners = Vec::new();
    for k in 0..12u64 {
        let url = node.ws_url();
        joiners.push(tokio::spawn(async move {
            // Deliberately staggered: each joiner joins at a different point of the stream.
            tokio::time::sleep(Duration::from_millis(k * 15)).await;
            let mut c = connect(&url, &format!("joiner{k}")).await;
            // Alternate between a since-join (from some point back) and a plain join.
            let since = if k % 2 == 0 { Some(k * 7) } else { None };
            let j = c.join("live", since).await.unwrap();
            let mut seqs: Vec<u64> = j.history.iter().map(|m| m.seq).collect();
            let start = seqs.first().copied().unwrap_or(j.last_seq + 1);
            if let Some(since) = since
                && !seqs.is_empty()
            {
                assert_eq!(start, since + 1, "history starts right after since");
            }
            if j.last_seq < TOTAL {
                let live = collect_until(&mut c, "live", TOTAL).await;
                seqs.extend(live.iter().map(|m| m.seq));
            }
            (start, seqs)
        }));
    }
    send_task.await.unwrap();
    for j in joiners {
        let (start, seqs) = j.await.unwrap();
        assert_gapless(&seqs, start, TOTAL);
    }
}

/// Invariant 5: a client that stops reading is closed with 4408 instead of
/// growing the node's queue; it then resumes with `since` and misses nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumer_is_closed_with_4408_and_resumes() {
    const TOTAL: usize = 6000;
    // The sender pipelines 25 sends at a time: its own pushes and acks (50
    // frames) fit its queue, so only the client that stops reading overflows.
    let node = TestNode::start_with(|c| c.outbound_queue = 64).await;
    let mut slow = node.connect("slow").await;
    slow.join("flood", None).await.unwrap();
    let mut sender = node.connect("sender").await;
    sender.join("flood", None).await.unwrap();
    let text = "x".repeat(3000);
    // The slow client does not read while the flood runs…
    let flood = tokio::spawn(async move {
        for chunk in 0..(TOTAL / 25) {
            pipelined_sends(&mut sender, "flood", 25, &format!("{chunk} {text}")).await;
        }
    });
    // …until the node reports that its queue overflowed; then it reads
    // everything that reached it, which must end with the close frame.
    eventually(
        "the flood to overflow the queue",
        Duration::from_secs(60),
        || async {
            let overflows = metric(&node.http(), "parley_queue_overflows_total").await;
            overflows.is_some_and(|n| n > 0.0).then_some(())
        },
    )
    .await;
    let mut seen = Vec::new();
    let closed = loop {
        match slow.recv_timeout(WAIT).await {
            Ok(ServerFrame::Message(m)) => seen.push(m.seq),
            Ok(_) => {}
            Err(e) => break e,
        }
    };
    assert_eq!(closed.close_code(), Some(close::SLOW_CONSUMER), "{closed}");
    assert!(seen.len() < TOTAL, "it was cut off before the end");
    flood.await.unwrap();
    if let Some(&last) = seen.last() {
        assert_gapless(&seen, 1, last);
    }
    // Resume with since: exactly the rest.
    let last = seen.last().copied().unwrap_or(0);
    let mut again = node.connect("slow").await;
    let j = again.join("flood", Some(last)).await.unwrap();
    let mut seqs: Vec<u64> = j.history.iter().map(|m| m.seq).collect();
    let mut tail = seqs.last().copied().unwrap_or(last);
    let mut more = j.more;
    while more {
        let (page, m) = again
            .history("flood", None, Some(tail), Some(500))
            .await
            .unwrap();
        seqs.extend(page.iter().map(|m| m.seq));
        tail = seqs.last().copied().unwrap_or(tail);
        more = m;
    }
    assert_gapless(&seqs, last + 1, TOTAL as u64);
    let r = http::request(&node.http(), "GET", "/metrics", None, None)
        .await
        .unwrap();
    assert!(
        r.text().contains("parley_queue_overflows_total"),
        "overflow is counted"
    );
}

/// Invariant 5, at process level: many clients that stop reading while a lot
/// is sent do not make the node hold it all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_stays_bounded_with_stuck_clients() {
    const STUCK: usize = 20;
    const MESSAGES: usize = 20_000;
    let node = NodeProcess::start(BIN, &[("PARLEY_OUTBOUND_QUEUE", "64")]).await;
    let mut stuck = Vec::new();
    for i in 0..STUCK {
        let mut c = connect(&node.ws_url(), &format!("stuck{i}")).await;
        c.join("flood", None).await.unwrap();
        stuck.push(c);
    }
    let mut sender = connect(&node.ws_url(), "sender").await;
    sender.join("flood", None).await.unwrap();
    let before = node.rss_kib();
    let text = "y".repeat(3500);
    for chunk in 0..(MESSAGES / 25) {
        pipelined_sends(&mut sender, "flood", 25, &format!("{chunk} {text}")).await;
        // The sender reads its own pushes, so it is not the slow one.
        while let Ok(f) = sender.recv_timeout(Duration::from_millis(1)).await {
            drop(f);
        }
    }
    let after = node.rss_kib();
    let grown_mib = after.saturating_sub(before) / 1024;
    let sent_mib = (MESSAGES * 3500 / (1 << 20)) as u64;
    assert!(
        grown_mib < sent_mib / 2,
        "node grew by {grown_mib} MiB while {sent_mib} MiB were sent to {STUCK} stuck clients"
    );
    drop(stuck);
}

/// Invariant 6: SIGTERM drains — readiness 503 at once, sessions closed with
/// 1001, no acked message lost, exit 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_without_losing_acked_messages() {
    let mut node = NodeProcess::start(
        BIN,
        &[
            ("PARLEY_DRAIN_GRACE", "1s"),
            ("PARLEY_DRAIN_SPREAD", "1s"),
            ("PARLEY_DRAIN_TIMEOUT", "10s"),
        ],
    )
    .await;
    let mut watchers = Vec::new();
    for i in 0..5 {
        let mut c = connect(&node.ws_url(), &format!("watcher{i}")).await;
        c.join("general", None).await.unwrap();
        watchers.push(c);
    }
    let mut sender = connect(&node.ws_url(), "sender").await;
    sender.join("general", None).await.unwrap();
    // Keep sending until the node closes the connection; remember every ack.
    let acks = Arc::new(AtomicUsize::new(0));
    let sender_task = tokio::spawn({
        let acks = acks.clone();
        async move {
            let mut acked = Vec::new();
            for i in 0.. {
                match sender
                    .send("general", &format!("m{i}"), Some(&format!("n{i}")))
                    .await
                {
                    Ok(ack) => {
                        acked.push(ack.seq);
                        acks.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => return (acked, e),
                }
            }
            unreachable!()
        }
    });
    // SIGTERM while messages are flowing.
    eventually("the sender's first acks", WAIT, || async {
        (acks.load(Ordering::Relaxed) >= 10).then_some(())
    })
    .await;
    node.signal("TERM");
    eventually(
        "readiness to turn 503 at once (within 200ms of SIGTERM)",
        Duration::from_millis(200),
        || async {
            let r = http::request(&node.http(), "GET", "/readyz", None, None)
                .await
                .unwrap();
            (r.status == 503).then_some(())
        },
    )
    .await;

    for mut w in watchers {
        let e = read_until_closed(&mut w).await;
        assert_eq!(e.close_code(), Some(close::GOING_AWAY), "{e}");
    }
    let (acked, e) = sender_task.await.unwrap();
    assert_eq!(e.close_code(), Some(close::GOING_AWAY), "{e}");
    assert!(!acked.is_empty());
    // New connections are refused once the grace period is over.
    assert!(
        Connection::connect(&node.ws_url()).await.is_err(),
        "a draining node refuses connections"
    );
    assert_eq!(
        node.wait_exit(Duration::from_secs(15)).await,
        Some(0),
        "clean exit"
    );

    let dir = node.dir.clone();
    let node2 = NodeProcess::spawn(BIN, &dir, &[]).await;
    let stored: HashSet<u64> = fetch_all(&node2.http(), "general")
        .await
        .iter()
        .map(|m| m.seq)
        .collect();
    for seq in &acked {
        assert!(stored.contains(seq), "acked seq {seq} lost by the drain");
    }
}

/// Invariant 7: garbage never panics the node; each gets the specified answer.
#[tokio::test]
async fn garbage_input_gets_errors_not_panics() {
    use tokio_tungstenite::tungstenite::Message as Ws;
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

    let node = TestNode::start().await;
    let mut alice = node.connect("alice").await;
    alice.join("general", None).await.unwrap();
    alice.send("general", "precious", None).await.unwrap();

    let cases: Vec<(String, Option<u64>)> = vec![
        ("not json at all".into(), None),
        ("{".into(), None),
        ("[]".into(), None),
        ("null".into(), None),
        ("{}".into(), None),
        (r#"{"type":42,"id":1}"#.into(), Some(1)),
        (r#"{"type":"teleport","id":2}"#.into(), Some(2)),
        (r#"{"type":"join","id":3}"#.into(), Some(3)),
        (
            r#"{"type":"join","id":4,"room":"general","since":-1}"#.into(),
            Some(4),
        ),
        (
            r#"{"type":"join","id":5,"room":"general","since":99999999999999999999999}"#.into(),
            Some(5),
        ),
        (
            r#"{"type":"send","id":6,"room":"general","text":7}"#.into(),
            Some(6),
        ),
        (
            format!(
                r#"{{"type":"ping","id":7,"deep":{}{}}}"#,
                "[".repeat(5_000),
                "]".repeat(5_000)
            ),
            None,
        ),
        (
            format!("{}{}", "{\"a\":".repeat(2000), "}".repeat(2000)),
            None,
        ),
    ];
    alice.next_message(WAIT).await.unwrap();
    for (text, re) in cases {
        alice.send_text(text.clone()).await.unwrap();
        match alice.recv_timeout(WAIT).await.unwrap() {
            ServerFrame::Error { code, re: got, .. } => {
                assert_eq!(code, ErrorCode::BadRequest, "{text:.60}");
                if re.is_some() {
                    assert_eq!(got, re, "error carries the request id for {text:.60}");
                }
            }
            other => panic!("expected an error for {text:.60}, got {other:?}"),
        }
        alice
            .ping()
            .await
            .expect("the connection survives a bad frame");
    }
    // Invalid room names and unknown rooms.
    for room in [
        "",
        "UPPER",
        "-dash",
        &"a".repeat(65),
        "dm:zed:amy",
        "dm:only",
    ] {
        let e = alice.join(room, None).await.unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::BadRequest), "{room}");
    }

    // Binary frame → 1003.
    let mut c = node.connect("bin").await;
    c.send_message(Ws::binary(vec![0u8, 159, 146, 150]))
        .await
        .unwrap();
    assert_eq!(
        read_until_closed(&mut c).await.close_code(),
        Some(close::UNSUPPORTED_DATA)
    );
    // Invalid UTF-8 in a text frame → 1007.
    let mut c = node.connect("utf8").await;
    let frame = Frame::message(vec![0x7b, 0xff, 0xfe, 0x7d], OpCode::Data(Data::Text), true);
    c.send_message(Ws::Frame(frame)).await.unwrap();
    assert_eq!(
        read_until_closed(&mut c).await.close_code(),
        Some(close::INVALID_PAYLOAD)
    );
    // A frame over 16 KiB → 1009.
    let mut c = node.connect("big").await;
    c.send_text(format!(
        r#"{{"type":"ping","pad":"{}"}}"#,
        "z".repeat(20_000)
    ))
    .await
    .unwrap();
    assert_eq!(
        read_until_closed(&mut c).await.close_code(),
        Some(close::TOO_BIG)
    );
    // A peer that keeps sending garbage is cut off (1008).
    let mut c = node.connect("noisy").await;
    for _ in 0..10 {
        c.send_text("garbage").await.unwrap();
    }
    assert_eq!(
        read_until_closed(&mut c).await.close_code(),
        Some(close::POLICY_VIOLATION)
    );
    // Random printable noise, mutated frames: errors only.
    let mut c = node.connect("fuzz").await;
    let valid = r#"{"type":"send","id":9,"room":"general","text":"hi","nonce":"z"}"#;
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    for i in 0..300 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let cut = (rng as usize) % valid.len();
        let mut s: String = valid.chars().take(cut).collect();
        s.push(char::from(b' ' + (rng >> 32) as u8 % 94));
        c.send_text(s).await.unwrap();
        if i % 5 == 4 {
            c.ping().await.expect("still serving");
        }
    }

    // Nothing stored was lost, the node still serves.
    let page = http::messages(
        &node.http(),
        &token("alice"),
        "general",
        None,
        Some(0),
        None,
    )
    .await
    .unwrap();
    assert_eq!(page.messages[0].as_message().unwrap().text, "precious");
    let r = http::request(&node.http(), "GET", "/healthz", None, None)
        .await
        .unwrap();
    assert_eq!(r.status, 200);
}

/// Messages are delivered in seq order per room even across several rooms.
#[tokio::test]
async fn each_room_is_delivered_in_order() {
    let node = TestNode::start().await;
    let mut reader = node.connect("reader").await;
    let mut writer = node.connect("writer").await;
    for room in ["a", "b", "c"] {
        reader.join(room, None).await.unwrap();
        writer.join(room, None).await.unwrap();
    }
    for i in 0..60 {
        let room = ["a", "b", "c"][i % 3];
        writer.send(room, "x", None).await.unwrap();
    }
    let mut per_room: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    while per_room.values().map(Vec::len).sum::<usize>() < 60 {
        if let ServerFrame::Message(m) = reader.recv_timeout(WAIT).await.unwrap() {
            per_room.entry(m.room).or_default().push(m.seq);
        }
    }
    for seqs in per_room.values() {
        assert_gapless(seqs, 1, 20);
    }
}

/// What a pipelined send got: its ack's (seq, ts), or an error code.
type Answer = Result<(u64, String), ErrorCode>;

/// Sends `frames` (text, nonce) pipelined — all frames first, then the
/// answers — and returns each one's answer, in sending order.
async fn pipelined_answers(
    conn: &mut Connection,
    room: &str,
    frames: Vec<(String, Option<String>)>,
) -> Vec<Answer> {
    let mut ids = Vec::new();
    for (text, nonce) in frames {
        let id = conn.next_id();
        ids.push(id);
        let frame = ClientFrame::Send {
            id: Some(id),
            room: Some(room.into()),
            to: None,
            text,
            nonce,
            reply_to: None,
        };
        conn.send_frame(&frame).await.unwrap();
    }
    let mut answers: BTreeMap<u64, Answer> = BTreeMap::new();
    while answers.len() < ids.len() {
        match conn.recv_timeout(WAIT).await.unwrap() {
            ServerFrame::Ack {
                re: Some(id),
                seq,
                ts,
                ..
            } => assert!(answers.insert(id, Ok((seq, ts))).is_none()),
            ServerFrame::Error {
                re: Some(id), code, ..
            } => assert!(answers.insert(id, Err(code)).is_none()),
            _ => {}
        }
    }
    ids.iter().map(|id| answers.remove(id).unwrap()).collect()
}

/// `(seq, ts)` pairs sorted by seq have non-decreasing `ts` (RFC 3339 with
/// a fixed width: text order is time order).
fn assert_ts_follows_seq(mut acks: Vec<(u64, String)>) {
    acks.sort();
    for w in acks.windows(2) {
        assert!(
            w[0].1 <= w[1].1,
            "ts goes backwards along seq: #{} at {} then #{} at {}",
            w[0].0,
            w[0].1,
            w[1].0,
            w[1].1
        );
    }
}

/// Issue 12, fault 1: text no store can hold (U+0000 in the text or the
/// nonce) is `bad_request` on every backend, and it fails no other user's
/// message committed beside it, nor counts as a storage outage. Several
/// users send at once, so group-commit batches mix them; every good message
/// is acked, gapless, with `ts` non-decreasing along `seq` (fault 7).
async fn unstorable_text_fails_alone(node: &TestNode) {
    const USERS: usize = 6;
    const EACH: usize = 30;
    const COUNTERS: [&str; 2] = [
        "parley_store_append_errors_total",
        "parley_store_rejected_total",
    ];
    let mut before = Vec::new();
    for name in COUNTERS {
        before.push(metric(&node.http(), name).await.unwrap_or(0.0));
    }
    let mut observer = node.connect("observer").await;
    observer.join("general", None).await.unwrap();
    let mut tasks = Vec::new();
    for u in 0..USERS {
        let mut c = node.connect(&format!("user{u}")).await;
        c.join("general", None).await.unwrap();
        tasks.push(tokio::spawn(async move {
            let frames = (0..EACH)
                .map(|i| match (u, i) {
                    (1, 7) => ("a\u{0}b".to_string(), Some(format!("{u}-{i}"))),
                    (4, 11) => ("fine text".to_string(), Some(format!("n\u{0}{i}"))),
                    (2, 20) => ("\u{0}".to_string(), None),
                    _ => (format!("{u}-{i}\tok\n"), Some(format!("{u}-{i}"))),
                })
                .collect();
            (u, pipelined_answers(&mut c, "general", frames).await)
        }));
    }
    let mut acks = Vec::new();
    for t in tasks {
        let (u, answers) = t.await.unwrap();
        // Each user's messages are stored in the order sent; the users'
        // sends interleave in the batches, so only the whole is gapless.
        let own: Vec<u64> = answers
            .iter()
            .filter_map(|a| a.as_ref().ok())
            .map(|(seq, _)| *seq)
            .collect();
        assert!(
            own.windows(2).all(|w| w[0] < w[1]),
            "user{u}'s seqs out of order: {own:?}"
        );
        for (i, answer) in answers.into_iter().enumerate() {
            match (u, i) {
                (1, 7) | (4, 11) | (2, 20) => assert_eq!(
                    answer.map(|_| ()),
                    Err(ErrorCode::BadRequest),
                    "user{u}'s send {i} holds U+0000"
                ),
                _ => acks.push(
                    answer.unwrap_or_else(|code| panic!("user{u}'s send {i} failed: {code}")),
                ),
            }
        }
    }
    let good = (USERS * EACH - 3) as u64;
    let mut seqs: Vec<u64> = acks.iter().map(|(seq, _)| *seq).collect();
    seqs.sort_unstable();
    assert_gapless(&seqs, 1, good);
    assert_ts_follows_seq(acks.clone());

    // REST refuses it alike.
    for (text, nonce) in [("p\u{0}q", None), ("fine", Some("n\u{0}"))] {
        let e = http::post_message(&node.http(), &token("user0"), "general", text, nonce)
            .await
            .unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::BadRequest), "{e}");
    }

    // Everyone sees exactly the good messages; the store holds no U+0000.
    let pushed = collect_until(&mut observer, "general", good).await;
    assert_eq!(pushed.len() as u64, good);
    let stored = fetch_all(&node.http(), "general").await;
    assert_eq!(stored.len() as u64, good);
    assert!(stored.iter().all(|m| !m.text.contains('\u{0}')));
    assert!(stored.iter().all(|m| m.text.ends_with("\tok\n")));
    assert!(
        metric(&node.http(), COUNTERS[0]).await.is_some(),
        "the node reports {}",
        COUNTERS[0]
    );
    for (name, before) in COUNTERS.into_iter().zip(before) {
        assert_eq!(
            metric(&node.http(), name).await.unwrap_or(0.0),
            before,
            "{name}: refused input is neither an outage nor a store rejection"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unstorable_text_fails_alone_on_sqlite() {
    let node = TestNode::start().await;
    unstorable_text_fails_alone(&node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unstorable_text_fails_alone_on_postgres() {
    let pg = tokio::task::spawn_blocking(Postgres::start).await.unwrap();
    let url = pg.url();
    let node = TestNode::start_with(|c| c.database_url = url).await;
    unstorable_text_fails_alone(&node).await;
}

/// Issue 12, fault 7: a node whose wall clock is stepped back an hour
/// between two sends still stamps them in seq order (libfaketime reads the
/// node's clock offset from a file the test rewrites).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ts_follows_seq_when_the_clock_steps_back() {
    const LIB: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";
    let dir = tempfile::TempDir::new().unwrap();
    let offset = dir.path().join("clock-offset");
    std::fs::write(&offset, "+0\n").unwrap();
    let offset_path = offset.display().to_string();
    let node = NodeProcess::start(
        BIN,
        &[
            ("LD_PRELOAD", LIB),
            ("FAKETIME_TIMESTAMP_FILE", &offset_path),
            ("FAKETIME_NO_CACHE", "1"),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ],
    )
    .await;
    let mut alice = connect(&node.ws_url(), "alice").await;
    alice.join("general", None).await.unwrap();
    let mut acks = Vec::new();
    for (i, step) in ["-1h", "-2h", "+0", "-3h"].into_iter().enumerate() {
        let ack = alice.send("general", &format!("m{i}"), None).await.unwrap();
        acks.push((ack.seq, ack.ts));
        std::fs::write(&offset, format!("{step}\n")).unwrap();
    }
    let ack = alice.send("general", "last", None).await.unwrap();
    acks.push((ack.seq, ack.ts));
    assert_ts_follows_seq(acks.clone());
    let stored: Vec<(u64, String)> = fetch_all(&node.http(), "general")
        .await
        .into_iter()
        .map(|m| (m.seq, m.ts))
        .collect();
    assert_eq!(stored, acks, "acks carry the stored ts");
}

/// Issue 12, fault 7: in a fleet whose nodes' clocks are 3 s apart,
/// messages sent alternately through both nodes are stamped in seq order
/// (by the database's clock).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ts_follows_seq_across_nodes_with_skewed_clocks() {
    let mut fleet = Fleet::start(BIN, 1, &[]).await;
    let behind = skewed_clock("-3s");
    let env: Vec<(&str, &str)> = behind.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let slow = fleet.spawn_node_with(None, &env).await;
    let mut alice = connect(&fleet.ws_urls()[0], "alice").await;
    let mut bob = connect(&slow.ws_url(), "bob").await;
    alice.join("skew", None).await.unwrap();
    bob.join("skew", None).await.unwrap();
    let mut acks = Vec::new();
    for i in 0..10 {
        let c = if i % 2 == 0 { &mut alice } else { &mut bob };
        let ack = c.send("skew", &format!("m{i}"), None).await.unwrap();
        acks.push((ack.seq, ack.ts));
    }
    assert_ts_follows_seq(acks);
    drop((alice, bob, slow));
    fleet.nodes.clear();
}
