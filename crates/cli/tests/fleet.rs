//! The fleet: several `parley serve` processes sharing one PostgreSQL and one
//! Redis — real ones, started on free ports in temp dirs — behaving like one
//! node to every client, and surviving what Kubernetes does to pods.

#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use parley_client::protocol::{ErrorCode, PresenceState, ServerFrame};
use parley_client::{Client, ClientConfig, Event, http};
use parley_testkit::{
    Fleet, assert_gapless, connect, eventually, fetch_all, metric, poll_until, token,
};
use tokio::sync::mpsc::UnboundedReceiver;

const BIN: &str = env!("CARGO_BIN_EXE_parley");
const WAIT: Duration = Duration::from_secs(10);
/// After the last ack (and the last restart), every acked message reaches
/// every receiver within this time.
const SETTLE: Duration = Duration::from_secs(3);

/// Counts `room`'s online members as `node`'s room list shows them, until
/// it is `want` (`None` if it never got there within [`WAIT`]).
async fn online_becomes(http_base: &str, room: &str, want: u64) -> Option<()> {
    poll_until(WAIT, || async {
        let rooms = http::rooms(http_base, &token("dave")).await.ok()?;
        let r = rooms.iter().find(|r| r.room == room)?;
        (r.members_online == want).then_some(())
    })
    .await
}

/// A user with two connections in a room on one node is online until the
/// second one goes, on every node: presence counts one announcement per
/// subscription, and takes as many back (a leave once announced only the
/// last one, and the user stayed listed in the fleet view for good).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_with_two_connections_goes_offline_when_both_leave() {
    let fleet = Fleet::start(BIN, 2, &[]).await;
    let urls = fleet.ws_urls();
    let mut alice = connect(&urls[1], "alice").await;
    alice.join("lobby", None).await.unwrap();
    let mut tabs = Vec::new();
    for _ in 0..2 {
        let mut bob = connect(&urls[0], "bob").await;
        bob.join("lobby", None).await.unwrap();
        tabs.push(bob);
    }
    let far = fleet.nodes[1].http();
    assert!(
        online_becomes(&far, "lobby", 2).await.is_some(),
        "alice and bob"
    );
    tabs[0].leave("lobby").await.unwrap();
    assert!(
        online_becomes(&far, "lobby", 2).await.is_some(),
        "bob's other tab is in"
    );
    tabs.pop().unwrap().close().await;
    assert!(
        online_becomes(&far, "lobby", 1).await.is_some(),
        "bob left with both connections but is still online"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_dms_presence_and_history_work_across_nodes() {
    let fleet = Fleet::start(BIN, 3, &[]).await;
    let urls = fleet.ws_urls();
    let mut alice = connect(&urls[0], "alice").await;
    let bob = connect(&urls[1], "bob").await;
    let mut carol = connect(&urls[2], "carol").await;
    assert_ne!(
        alice.welcome.as_ref().unwrap().node,
        bob.welcome.as_ref().unwrap().node
    );
    alice.join("general", None).await.unwrap();
    // Members are cluster-wide (announcements travel through Redis).
    // Bob joins again and again until alice is listed (the closure's futures
    // take turns with him through the mutex).
    let bob_joining = tokio::sync::Mutex::new(bob);
    let last_members = std::sync::Mutex::new(Vec::new());
    let shown = poll_until(WAIT, || async {
        let j = bob_joining
            .lock()
            .await
            .join("general", None)
            .await
            .unwrap();
        let shown = j.members.contains(&"alice".to_string());
        *last_members.lock().unwrap() = j.members;
        shown.then_some(())
    })
    .await;
    let (mut bob, members) = (bob_joining.into_inner(), last_members.into_inner().unwrap());
    assert!(
        shown.is_some(),
        "alice never showed up in bob's member list: {members:?}"
    );
    assert!(members.contains(&"bob".to_string()));
    // Alice, on another node, hears that bob joined.
    let presence = loop {
        match alice.recv_timeout(WAIT).await.unwrap() {
            ServerFrame::Presence { user, state, .. } => break (user, state),
            _ => continue,
        }
    };
    assert_eq!(presence, ("bob".to_string(), PresenceState::Joined));
    carol.join("general", None).await.unwrap();
    // The room list counts who is online in the whole fleet, on every node.
    for node in &fleet.nodes {
        let counted = online_becomes(&node.http(), "general", 3).await;
        assert!(counted.is_some(), "{} never counted 3 online", node.http());
    }

    let ack = alice.send("general", "hello fleet", None).await.unwrap();
    for conn in [&mut bob, &mut carol] {
        let m = conn.next_message(WAIT).await.unwrap();
        assert_eq!((m.seq, m.text.as_str()), (ack.seq, "hello fleet"));
    }
    // A DM from node 2 reaches alice on node 0 without any join.
    carol.send_dm("alice", "psst", None).await.unwrap();
    let m = loop {
        let m = alice.next_message(WAIT).await.unwrap();
        if m.room.starts_with("dm:") {
            break m;
        }
    };
    assert_eq!(
        (m.room.as_str(), m.text.as_str()),
        ("dm:alice:carol", "psst")
    );
    // Every node serves the same history.
    let histories: Vec<Vec<(u64, String)>> = {
        let mut all = Vec::new();
        for node in &fleet.nodes {
            all.push(
                fetch_all(&node.http(), "general")
                    .await
                    .into_iter()
                    .map(|m| (m.seq, m.text))
                    .collect(),
            );
        }
        all
    };
    assert!(histories.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(histories[0].len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_senders_on_three_nodes_make_one_gapless_sequence() {
    const SENDERS: usize = 30;
    const EACH: usize = 20;
    let fleet = Fleet::start(BIN, 3, &[]).await;
    let urls = fleet.ws_urls();
    let mut observers = Vec::new();
    for (i, url) in urls.iter().enumerate() {
        let mut o = connect(url, &format!("observer{i}")).await;
        o.join("busy", None).await.unwrap();
        observers.push(o);
    }
    let mut tasks = Vec::new();
    for i in 0..SENDERS {
        let url = urls[i % urls.len()].clone();
        tasks.push(tokio::spawn(async move {
            let mut c = connect(&url, &format!("sender{i}")).await;
            c.join("busy", None).await.unwrap();
            let mut seqs = Vec::new();
            for k in 0..EACH {
                seqs.push(
                    c.send("busy", &format!("{i}-{k}"), Some(&format!("{i}-{k}")))
                        .await
                        .unwrap()
                        .seq,
                );
            }
            seqs
        }));
    }
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.unwrap());
    }
    acked.sort_unstable();
    let total = (SENDERS * EACH) as u64;
    assert_gapless(&acked, 1, total);
    let mut seen = Vec::new();
    for o in observers.iter_mut() {
        let mut got: Vec<(u64, String)> = Vec::new();
        while got.len() < total as usize {
            match o.recv_timeout(WAIT).await.unwrap() {
                ServerFrame::Message(m) if m.room == "busy" => got.push((m.seq, m.text)),
                _ => {}
            }
        }
        assert_gapless(&got.iter().map(|(s, _)| *s).collect::<Vec<_>>(), 1, total);
        seen.push(got);
    }
    assert!(
        seen.windows(2).all(|w| w[0] == w[1]),
        "every node delivers the same sequence"
    );
}

/// Message events of one room: (seq, nonce, arrival time), in arrival order.
type Arrivals = Vec<(u64, String, Instant)>;

/// Collects the message events of a room until the client stops; what has
/// arrived so far can be looked at meanwhile.
struct Collector {
    got: Arc<Mutex<Arrivals>>,
    task: tokio::task::JoinHandle<()>,
}

fn spawn_collector(mut events: UnboundedReceiver<Event>, room: &'static str) -> Collector {
    let got: Arc<Mutex<Arrivals>> = Arc::default();
    let task = tokio::spawn({
        let got = got.clone();
        async move {
            while let Some(e) = events.recv().await {
                let mut got = got.lock().unwrap();
                match e {
                    Event::Message(m) if m.room == room => {
                        got.push((m.seq, m.nonce.unwrap_or_default(), Instant::now()))
                    }
                    Event::Message(_) | Event::Presence { .. } | Event::Typing { .. } => {}
                    other => eprintln!("collector {room}: {other:?} after {} messages", got.len()),
                }
            }
        }
    });
    Collector { got, task }
}

impl Collector {
    /// Whether every acked message has arrived.
    fn has_all(&self, acked: &HashMap<String, (u64, Instant)>) -> bool {
        let got = self.got.lock().unwrap();
        let seen: HashSet<u64> = got.iter().map(|(seq, _, _)| *seq).collect();
        acked.values().all(|(seq, _)| seen.contains(seq))
    }

    /// Waits until the events end (its client was stopped); returns them.
    async fn finish(self) -> Arrivals {
        self.task.await.unwrap();
        std::mem::take(&mut *self.got.lock().unwrap())
    }
}

/// Waits until every receiver has every acked message, for at most `limit`.
/// It does not fail by itself: the exactly-once checks that follow say what
/// is missing.
async fn wait_delivered(
    receivers: &[(Client, Collector)],
    acked: &HashMap<String, (u64, Instant)>,
    limit: Duration,
) {
    let all = || async {
        receivers
            .iter()
            .all(|(_, c)| c.has_all(acked))
            .then_some(())
    };
    let _ = poll_until(limit, all).await;
}

fn client(
    urls: &[String],
    first: usize,
    user: &str,
    room: &str,
) -> (Client, UnboundedReceiver<Event>) {
    let mut config = ClientConfig::new(urls[first % urls.len()].clone(), token(user));
    config.fallback_urls = (1..urls.len())
        .map(|k| urls[(first + k) % urls.len()].clone())
        .collect();
    config.rooms = vec![room.to_string()];
    config.max_backoff = Duration::from_millis(500);
    Client::start(config)
}

/// Sends `n` messages through a resilient client, one every `every`, and
/// waits until all are acked; returns nonce → (seq, ack time).
async fn send_paced(
    sender: &Client,
    events: &mut UnboundedReceiver<Event>,
    room: &str,
    n: usize,
    every: Duration,
    mut during: impl FnMut(usize),
) -> HashMap<String, (u64, Instant)> {
    let mut acked = HashMap::new();
    let mut sent = 0;
    let mut next = tokio::time::Instant::now();
    let deadline = Instant::now() + Duration::from_secs(120);
    // The sends are paced (one every `every`): the sleeps below are the pace.
    while acked.len() < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} acked",
            acked.len()
        );
        if sent < n {
            tokio::select! {
                _ = tokio::time::sleep_until(next) => {
                    sender.send(room, &format!("m{sent}"));
                    sent += 1;
                    during(sent);
                    next += every;
                    continue;
                }
                e = events.recv() => record_ack(e, &mut acked),
            }
        } else {
            let e = tokio::time::timeout(WAIT, events.recv())
                .await
                .ok()
                .flatten();
            record_ack(e, &mut acked);
        }
    }
    acked
}

fn record_ack(event: Option<Event>, acked: &mut HashMap<String, (u64, Instant)>) {
    match event {
        Some(Event::Acked { nonce, seq, .. }) => {
            acked.insert(nonce, (seq, Instant::now()));
        }
        Some(Event::SendFailed {
            nonce,
            code,
            message,
        }) => panic!("send {nonce} refused: {code} {message}"),
        _ => {}
    }
}

/// Every receiver saw every acked message exactly once, in order.
fn check_exactly_once(
    name: &str,
    got: &[(u64, String, Instant)],
    acked: &HashMap<String, (u64, Instant)>,
) {
    let seqs: Vec<u64> = got.iter().map(|(s, _, _)| *s).collect();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "{name}: seqs not consecutive: {seqs:?}"
    );
    let seen: BTreeSet<u64> = seqs.iter().copied().collect();
    for (nonce, (seq, _)) in acked {
        assert!(
            seen.contains(seq),
            "{name}: acked {nonce} (seq {seq}) never delivered"
        );
    }
}

/// Redis dies mid-run and is replaced by an empty one: the testkit's Redis
/// keeps nothing (`--save "" --appendonly no`), so the restarted server is
/// a new process with no data and no subscribers, as after a failover to a
/// new pod or a Sentinel promotion of a replica that missed the last
/// publishes. The bus needs no replication for correctness (invariant 8):
/// the store is the truth, and nothing is refused, lost or duplicated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_replaced_by_an_empty_one_refuses_nothing_loses_nothing_and_delays_stay_bounded() {
    const ANTI_ENTROPY: Duration = Duration::from_secs(1);
    let mut fleet = Fleet::start(BIN, 3, &[]).await;
    let urls = fleet.ws_urls();
    let mut receivers = Vec::new();
    for i in 0..3 {
        let (c, mut ev) = client(&urls, i, &format!("recv{i}"), "outage");
        wait_joined(&mut ev).await;
        receivers.push((c, spawn_collector(ev, "outage")));
    }
    let (sender, mut sender_events) = client(&urls, 0, "sender", "outage");
    wait_joined(&mut sender_events).await;

    let redis = &mut fleet.redis;
    let acked = send_paced(
        &sender,
        &mut sender_events,
        "outage",
        250,
        Duration::from_millis(20),
        |n| {
            if n == 50 {
                redis.kill();
            } else if n == 175 {
                redis.restart();
            }
        },
    )
    .await;
    wait_delivered(&receivers, &acked, ANTI_ENTROPY * 3).await;
    sender.stop().await;
    let mut worst = Duration::ZERO;
    for (i, (c, collector)) in receivers.into_iter().enumerate() {
        c.stop().await;
        let got = collector.finish().await;
        check_exactly_once(&format!("recv{i}"), &got, &acked);
        let arrival: HashMap<u64, Instant> = got.iter().map(|(s, _, t)| (*s, *t)).collect();
        for (seq, acked_at) in acked.values() {
            worst = worst.max(arrival[seq].saturating_duration_since(*acked_at));
        }
    }
    assert!(
        worst <= ANTI_ENTROPY + Duration::from_secs(1),
        "longest delivery delay during the outage was {worst:?}"
    );
    // Delivery through Redis resumed by itself: every node reports the bus connected.
    for node in &fleet.nodes {
        let what = format!("node {} to reconnect to Redis", node.addr);
        eventually(&what, WAIT, || async {
            let connected = metric(&node.http(), "parley_bus_connected").await;
            (connected == Some(1.0)).then_some(())
        })
        .await;
    }
}

async fn wait_joined(events: &mut UnboundedReceiver<Event>) {
    loop {
        match tokio::time::timeout(WAIT, events.recv())
            .await
            .expect("joined in time")
        {
            Some(Event::Joined { .. }) => return,
            Some(_) => continue,
            None => panic!("client stopped"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_outage_gives_unavailable_then_recovers_without_a_gap() {
    let mut fleet = Fleet::start(BIN, 2, &[]).await;
    let urls = fleet.ws_urls();
    let mut alice = connect(&urls[0], "alice").await;
    alice.join("pg", None).await.unwrap();
    assert_eq!(alice.send("pg", "one", None).await.unwrap().seq, 1);

    // Stopping blocks (pg_ctl waits): block this worker thread, keeping the
    // fleet borrowed instead of sending it to another thread.
    tokio::task::block_in_place(|| fleet.postgres.stop());
    let e = alice.send("pg", "lost?", None).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Unavailable), "{e}");
    for node in &fleet.nodes {
        let r = http::request(&node.http(), "GET", "/readyz", None, None)
            .await
            .unwrap();
        assert_eq!(r.status, 503, "readiness follows the store");
        let r = http::request(&node.http(), "GET", "/healthz", None, None)
            .await
            .unwrap();
        assert_eq!(r.status, 200, "the node itself is fine");
    }
    alice
        .ping()
        .await
        .expect("connections are kept during the outage");

    tokio::task::block_in_place(|| fleet.postgres.restart());
    for node in &mut fleet.nodes {
        node.wait_ready(Duration::from_secs(20)).await;
    }
    let ack = alice.send("pg", "two", None).await.unwrap();
    assert_eq!(ack.seq, 2, "seq continues with no gap");
    let texts: Vec<String> = fetch_all(&fleet.nodes[1].http(), "pg")
        .await
        .into_iter()
        .map(|m| m.text)
        .collect();
    assert_eq!(texts, vec!["one", "two"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_node_clients_resume_elsewhere_exactly_once() {
    let fleet = Fleet::start(BIN, 3, &[]).await;
    let urls = fleet.ws_urls();
    let mut receivers = Vec::new();
    for i in 0..6 {
        let (c, mut ev) = client(&urls, i, &format!("recv{i}"), "crash");
        wait_joined(&mut ev).await;
        receivers.push((c, spawn_collector(ev, "crash")));
    }
    // The sender lives on node 2, which survives.
    let (sender, mut sender_events) = client(&urls, 2, "sender", "crash");
    wait_joined(&mut sender_events).await;
    let victim = &fleet.nodes[0];
    let acked = send_paced(
        &sender,
        &mut sender_events,
        "crash",
        300,
        Duration::from_millis(10),
        |n| {
            if n == 100 {
                victim.signal("KILL");
            }
        },
    )
    .await;
    wait_delivered(&receivers, &acked, SETTLE).await;
    sender.stop().await;
    for (i, (c, collector)) in receivers.into_iter().enumerate() {
        c.stop().await;
        check_exactly_once(&format!("recv{i}"), &collector.finish().await, &acked);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart_loses_and_duplicates_nothing() {
    let drain = [
        ("PARLEY_DRAIN_GRACE", "200ms"),
        ("PARLEY_DRAIN_SPREAD", "500ms"),
        ("PARLEY_DRAIN_TIMEOUT", "8s"),
    ];
    let fleet = Fleet::start(BIN, 3, &drain).await;
    let urls = fleet.ws_urls();
    let mut receivers = Vec::new();
    for i in 0..6 {
        let (c, mut ev) = client(&urls, i, &format!("recv{i}"), "roll");
        wait_joined(&mut ev).await;
        receivers.push((c, spawn_collector(ev, "roll")));
    }
    let (sender, mut sender_events) = client(&urls, 0, "sender", "roll");
    wait_joined(&mut sender_events).await;

    // Restart the nodes one after another while the sender keeps going. The
    // roller owns the fleet meanwhile and hands it back when done (if it
    // panics, the fleet is dropped with it: its processes are stopped).
    let roller = tokio::spawn(async move {
        let mut fleet = fleet;
        let mut restarted = 0;
        // Pacing, not settling: the sender gets going first, so that every
        // restart happens mid-run.
        tokio::time::sleep(Duration::from_millis(500)).await;
        for i in 0..fleet.nodes.len() {
            fleet.nodes[i].signal("TERM");
            let code = fleet.nodes[i].wait_exit(Duration::from_secs(15)).await;
            assert_eq!(code, Some(0), "node {i} drained and exited cleanly");
            fleet.restart_node(i).await;
            restarted += 1;
        }
        (fleet, restarted)
    });
    let acked = send_paced(
        &sender,
        &mut sender_events,
        "roll",
        600,
        Duration::from_millis(15),
        |_| {},
    )
    .await;
    let (fleet, restarted) = roller.await.unwrap();
    assert_eq!(restarted, 3, "every node was restarted during the run");
    wait_delivered(&receivers, &acked, SETTLE).await;
    sender.stop().await;
    // Stored exactly once per nonce.
    let stored = fetch_all(&fleet.nodes[0].http(), "roll").await;
    let mut per_nonce: HashMap<String, usize> = HashMap::new();
    for m in &stored {
        *per_nonce
            .entry(m.nonce.clone().unwrap_or_default())
            .or_default() += 1;
    }
    assert!(
        per_nonce.values().all(|&n| n == 1),
        "a retried send was stored twice"
    );
    assert_eq!(stored.len(), acked.len());
    for (i, (c, collector)) in receivers.into_iter().enumerate() {
        c.stop().await;
        check_exactly_once(&format!("recv{i}"), &collector.finish().await, &acked);
    }
}

/// The server API's disconnect reaches the user's connections on every
/// node, not only on the node that was asked; the user may connect again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_api_disconnect_closes_the_user_on_every_node() {
    const KEY: &str = "fleet-server-api-key-0123456789";
    let fleet = Fleet::start(BIN, 2, &[("PARLEY_API_KEYS", KEY)]).await;
    let urls = fleet.ws_urls();
    let mut here = connect(&urls[0], "alice").await;
    let mut there = connect(&urls[1], "Alice").await;
    let mut bob = connect(&urls[1], "bob").await;
    // The far node subscribes to alice's user channel when she connects;
    // a DM proves that subscription is live before the disconnect is sent.
    bob.send_dm("alice", "ping", None).await.unwrap();
    there.next_message(WAIT).await.unwrap();

    let r = http::request(
        &fleet.nodes[0].http(),
        "POST",
        "/api/server/users/alice/disconnect",
        Some(KEY),
        None,
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    for conn in [&mut here, &mut there] {
        let e = parley_testkit::read_until_closed(conn).await;
        assert_eq!(
            e.close_code(),
            Some(parley_client::protocol::close::UNAUTHORIZED),
            "{e}"
        );
    }
    bob.ping().await.unwrap();
    // Not a revocation.
    let mut again = connect(&urls[1], "alice").await;
    again.ping().await.unwrap();
}

/// Protocol 1.1 events in a fleet: edits, reactions and deletes made on one
/// node reach members on another (PostgreSQL + Redis), and a member whose
/// node is killed gets every event it missed exactly once when it resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_events_cross_nodes_and_resume_through_a_node_kill() {
    use parley_client::protocol::RoomEvent;
    let mut fleet = Fleet::start(BIN, 2, &[]).await;
    let urls = fleet.ws_urls();
    let mut alice = connect(&urls[0], "alice").await;
    let mut bob = connect(&urls[1], "bob").await;
    alice.join("events", None).await.unwrap();
    bob.join("events", None).await.unwrap();
    let first = alice.send("events", "first", None).await.unwrap();
    assert_eq!(bob.next_event(WAIT).await.unwrap().seq(), first.seq);

    let edit = alice
        .edit("events", first.seq, "first!", None)
        .await
        .unwrap();
    match bob.next_event(WAIT).await.unwrap() {
        RoomEvent::Edited(e) => assert_eq!((e.seq, e.text.as_str()), (edit.seq, "first!")),
        other => panic!("expected edited, got {other:?}"),
    }
    let react = bob
        .react("events", first.seq, "👍", true, None)
        .await
        .unwrap();
    loop {
        match alice.next_event(WAIT).await.unwrap() {
            RoomEvent::Reaction(r) => {
                assert_eq!((r.seq, r.from.as_str()), (react.seq, "bob"));
                break;
            }
            e => assert!(e.seq() < react.seq, "out of order: {e:?}"),
        }
    }
    let seen = bob.next_event(WAIT).await.unwrap().seq();
    assert_eq!(seen, react.seq, "bob's own reaction comes back to him");

    // Bob's node dies; alice goes on.
    fleet.nodes[1].signal("KILL");
    fleet.nodes[1].wait_exit(WAIT).await;
    let second = alice.send("events", "second", None).await.unwrap();
    alice
        .react("events", second.seq, "🎉", true, None)
        .await
        .unwrap();
    alice.delete("events", first.seq, None).await.unwrap();
    let last = alice
        .edit("events", second.seq, "second!", None)
        .await
        .unwrap();

    fleet.restart_node(1).await;
    let mut bob = connect(&fleet.ws_urls()[1], "bob").await;
    let joined = bob.join("events", Some(seen)).await.unwrap();
    let got: Vec<u64> = joined.events.iter().map(|e| e.seq()).collect();
    assert_eq!(got, (seen + 1..=last.seq).collect::<Vec<u64>>());
    assert!(
        matches!(joined.events[2], RoomEvent::Deleted(_)),
        "{:?}",
        joined.events
    );
    // The history shows the current state, whichever node reads it.
    let all = fetch_all(&fleet.nodes[1].http(), "events").await;
    assert!(all[0].deleted && all[0].text.is_empty());
    assert_eq!(all[1].text, "second!");
    assert_eq!(all[1].reactions.get("🎉"), Some(&vec!["alice".to_string()]));
}

/// Read positions are one per user across the fleet: a read on one node is
/// pushed to the same user's connection on another (protocol 1.1 §2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_on_one_node_reaches_the_users_devices_on_others() {
    let fleet = Fleet::start(BIN, 2, &[]).await;
    let urls = fleet.ws_urls();
    let mut bob = connect(&urls[0], "bob").await;
    bob.join("reads", None).await.unwrap();
    let m = bob.send("reads", "@alice hi", None).await.unwrap();
    let mut phone = connect(&urls[0], "alice").await;
    let mut laptop = connect(&urls[1], "alice").await;
    let j = laptop.join("reads", None).await.unwrap();
    assert_eq!((j.unread, j.mentions), (1, 1));
    // The far node subscribed to alice's channel when she connected there;
    // a DM proves the subscription is live before the read.
    bob.send_dm("alice", "ping", None).await.unwrap();
    loop {
        if let ServerFrame::Message(d) = laptop.recv_timeout(WAIT).await.unwrap()
            && d.room.starts_with("dm:")
        {
            break;
        }
    }
    assert_eq!(phone.read("reads", m.seq).await.unwrap(), m.seq);
    let pushed = parley_testkit::next_read_push(&mut laptop).await;
    assert_eq!(pushed, ("reads".to_string(), m.seq));
    let j = laptop.join("reads", None).await.unwrap();
    assert_eq!((j.read_seq, j.unread, j.mentions), (m.seq, 0, 0));
}

/// Edits, reactions and deletes made while Redis is down reach a member on
/// another node exactly once, in order, through the store (anti-entropy),
/// like messages do: they share the room's sequence (protocol 1.1 §1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_events_made_during_a_redis_outage_arrive_exactly_once() {
    use parley_client::protocol::RoomEvent;
    let mut fleet = Fleet::start(BIN, 2, &[]).await;
    let urls = fleet.ws_urls();
    let (reader, mut events) = client(&urls, 1, "reader", "ev-outage");
    wait_joined(&mut events).await;
    let mut alice = connect(&urls[0], "alice").await;
    alice.join("ev-outage", None).await.unwrap();
    let mut seqs = Vec::new();
    for text in ["one", "two", "three"] {
        seqs.push(alice.send("ev-outage", text, None).await.unwrap().seq);
    }

    fleet.redis.kill();
    alice
        .edit("ev-outage", seqs[0], "one!", None)
        .await
        .unwrap();
    alice
        .react("ev-outage", seqs[1], "👍", true, None)
        .await
        .unwrap();
    alice.delete("ev-outage", seqs[2], None).await.unwrap();
    let last = alice.send("ev-outage", "four", None).await.unwrap().seq;
    fleet.redis.restart();

    let mut got = Vec::new();
    while got.last().is_none_or(|(seq, _)| *seq < last) {
        let event = tokio::time::timeout(Duration::from_secs(10), events.recv())
            .await
            .expect("every event arrives")
            .expect("client running");
        match event {
            Event::Message(m) => got.push((m.seq, "message")),
            Event::Change(RoomEvent::Edited(e)) => got.push((e.seq, "edited")),
            Event::Change(RoomEvent::Reaction(e)) => got.push((e.seq, "reaction")),
            Event::Change(RoomEvent::Deleted(e)) => got.push((e.seq, "deleted")),
            _ => {}
        }
    }
    let kinds: Vec<&str> = got.iter().map(|(_, k)| *k).collect();
    assert_eq!(
        kinds,
        [
            "message", "message", "message", "edited", "reaction", "deleted", "message"
        ]
    );
    assert_eq!(
        got.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        (1..=last).collect::<Vec<u64>>()
    );
    // Nothing comes twice.
    let extra = tokio::time::timeout(Duration::from_millis(1500), async {
        loop {
            match events.recv().await {
                Some(Event::Message(_) | Event::Change(_)) | None => return,
                Some(_) => continue,
            }
        }
    })
    .await;
    assert!(extra.is_err(), "an event was handed out twice");
    reader.stop().await;
}
