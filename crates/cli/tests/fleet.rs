//! The fleet: several `parley serve` processes sharing one PostgreSQL and one
//! Redis — real ones, started on free ports in temp dirs — behaving like one
//! node to every client, and surviving what Kubernetes does to pods.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use parley_client::protocol::{ErrorCode, PresenceState, ServerFrame};
use parley_client::{Client, ClientConfig, Event, http};
use parley_testkit::{Fleet, assert_gapless, connect, fetch_all, token};
use tokio::sync::mpsc::UnboundedReceiver;

const BIN: &str = env!("CARGO_BIN_EXE_parley");
const WAIT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_dms_presence_and_history_work_across_nodes() {
    let fleet = Fleet::start(BIN, 3, &[]).await;
    let urls = fleet.ws_urls();
    let mut alice = connect(&urls[0], "alice").await;
    let mut bob = connect(&urls[1], "bob").await;
    let mut carol = connect(&urls[2], "carol").await;
    assert_ne!(
        alice.welcome.as_ref().unwrap().node,
        bob.welcome.as_ref().unwrap().node
    );
    alice.join("general", None).await.unwrap();
    // Members are cluster-wide (announcements travel through Redis).
    let deadline = Instant::now() + WAIT;
    loop {
        let j = bob.join("general", None).await.unwrap();
        if j.members.contains(&"alice".to_string()) {
            assert!(j.members.contains(&"bob".to_string()));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "alice never showed up in bob's member list: {:?}",
            j.members
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Alice, on another node, hears that bob joined.
    let presence = loop {
        match alice.recv_timeout(WAIT).await.unwrap() {
            ServerFrame::Presence { user, state, .. } => break (user, state),
            _ => continue,
        }
    };
    assert_eq!(presence, ("bob".to_string(), PresenceState::Joined));
    carol.join("general", None).await.unwrap();

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

/// Collects message events of `room` with their arrival time until `stop`.
fn spawn_collector(
    mut events: UnboundedReceiver<Event>,
    room: &'static str,
) -> tokio::task::JoinHandle<Vec<(u64, String, Instant)>> {
    tokio::spawn(async move {
        let mut got = Vec::new();
        while let Some(e) = events.recv().await {
            match e {
                Event::Message(m) if m.room == room => {
                    got.push((m.seq, m.nonce.unwrap_or_default(), Instant::now()))
                }
                Event::Message(_) | Event::Presence { .. } | Event::Typing { .. } => {}
                other => eprintln!("collector {room}: {other:?} after {} messages", got.len()),
            }
        }
        got
    })
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_refuses_nothing_loses_nothing_and_delays_stay_bounded() {
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

    let redis = &mut fleet.redis as *mut parley_testkit::services::Redis;
    let acked = send_paced(
        &sender,
        &mut sender_events,
        "outage",
        250,
        Duration::from_millis(20),
        |n| {
            // SAFETY: only this closure touches the Redis handle while it runs.
            let redis = unsafe { &mut *redis };
            if n == 50 {
                redis.kill();
            } else if n == 175 {
                redis.restart();
            }
        },
    )
    .await;
    tokio::time::sleep(ANTI_ENTROPY * 3).await;
    sender.stop().await;
    let mut worst = Duration::ZERO;
    for (i, (c, collector)) in receivers.into_iter().enumerate() {
        c.stop().await;
        let got = collector.await.unwrap();
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
        let deadline = Instant::now() + WAIT;
        loop {
            let text = http::request(&node.http(), "GET", "/metrics", None, None)
                .await
                .unwrap()
                .text();
            if text.lines().any(|l| l == "parley_bus_connected 1") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node {} did not reconnect to Redis",
                node.addr
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
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

    tokio::task::spawn_blocking({
        let pg = &mut fleet.postgres as *mut parley_testkit::services::Postgres as usize;
        // SAFETY: the fleet outlives this blocking call, which is awaited at once.
        move || unsafe { (*(pg as *mut parley_testkit::services::Postgres)).stop() }
    })
    .await
    .unwrap();
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

    tokio::task::spawn_blocking({
        let pg = &mut fleet.postgres as *mut parley_testkit::services::Postgres as usize;
        // SAFETY: as above.
        move || unsafe { (*(pg as *mut parley_testkit::services::Postgres)).restart() }
    })
    .await
    .unwrap();
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
    let mut fleet = Fleet::start(BIN, 3, &[]).await;
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
    let victim = &mut fleet.nodes[0] as *mut parley_testkit::NodeProcess;
    let acked = send_paced(
        &sender,
        &mut sender_events,
        "crash",
        300,
        Duration::from_millis(10),
        |n| {
            if n == 100 {
                // SAFETY: only this closure touches node 0 while it runs.
                unsafe { (*victim).signal("KILL") };
            }
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    sender.stop().await;
    for (i, (c, collector)) in receivers.into_iter().enumerate() {
        c.stop().await;
        check_exactly_once(&format!("recv{i}"), &collector.await.unwrap(), &acked);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart_loses_and_duplicates_nothing() {
    let drain = [
        ("PARLEY_DRAIN_GRACE", "200ms"),
        ("PARLEY_DRAIN_SPREAD", "500ms"),
        ("PARLEY_DRAIN_TIMEOUT", "8s"),
    ];
    let mut fleet = Fleet::start(BIN, 3, &drain).await;
    let urls = fleet.ws_urls();
    let mut receivers = Vec::new();
    for i in 0..6 {
        let (c, mut ev) = client(&urls, i, &format!("recv{i}"), "roll");
        wait_joined(&mut ev).await;
        receivers.push((c, spawn_collector(ev, "roll")));
    }
    let (sender, mut sender_events) = client(&urls, 0, "sender", "roll");
    wait_joined(&mut sender_events).await;

    // Restart the nodes one after another while the sender keeps going.
    let (restarted_tx, mut restarted_rx) = tokio::sync::mpsc::unbounded_channel();
    let fleet_ptr = &mut fleet as *mut Fleet as usize;
    let roller = tokio::spawn(async move {
        // SAFETY: the fleet outlives this task, which is awaited before the
        // fleet is used again, and nothing else touches its nodes meanwhile.
        let fleet = unsafe { &mut *(fleet_ptr as *mut Fleet) };
        tokio::time::sleep(Duration::from_millis(500)).await;
        for i in 0..fleet.nodes.len() {
            fleet.nodes[i].signal("TERM");
            let code = fleet.nodes[i].wait_exit(Duration::from_secs(15)).await;
            assert_eq!(code, Some(0), "node {i} drained and exited cleanly");
            fleet.restart_node(i).await;
            let _ = restarted_tx.send(i);
        }
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
    roller.await.unwrap();
    let mut restarted = 0;
    while restarted_rx.try_recv().is_ok() {
        restarted += 1;
    }
    assert_eq!(restarted, 3, "every node was restarted during the run");
    tokio::time::sleep(Duration::from_secs(3)).await;
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
        check_exactly_once(&format!("recv{i}"), &collector.await.unwrap(), &acked);
    }
}
