//! One store test suite, run against both backends: SQLite (a file in a temp
//! dir) and PostgreSQL (a real server started for the test). Each case is
//! written once against the `Store` trait.

#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

use std::sync::Arc;
use std::time::Duration;

use parley_server::store::{AppendOutcome, NewMessage, Store, StoreError};
use parley_testkit::eventually;
use parley_testkit::services::Postgres;

fn msg(room: &str, from: &str, text: &str, nonce: Option<&str>) -> NewMessage {
    NewMessage {
        room: room.into(),
        from: from.into(),
        text: text.into(),
        nonce: nonce.map(Into::into),
        ts_ms: 1_000,
    }
}

fn seqs(outcomes: &[AppendOutcome]) -> Vec<u64> {
    outcomes.iter().map(|o| o.message().seq).collect()
}

/// Two independent handles on the same database, like two nodes.
async fn sqlite() -> (tempfile::TempDir, Arc<dyn Store>, Arc<dyn Store>) {
    let dir = tempfile::TempDir::new().unwrap();
    let url = format!("sqlite://{}", dir.path().join("store.db").display());
    let a = parley_server::store::open(&url, 4).await.unwrap();
    let b = parley_server::store::open(&url, 4).await.unwrap();
    (dir, a, b)
}

async fn postgres() -> (Postgres, Arc<dyn Store>, Arc<dyn Store>) {
    let pg = tokio::task::spawn_blocking(Postgres::start).await.unwrap();
    let a = parley_server::store::open(&pg.url(), 8).await.unwrap();
    let b = parley_server::store::open(&pg.url(), 8).await.unwrap();
    (pg, a, b)
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_store_keeps_the_contract() {
    let (_dir, a, b) = sqlite().await;
    suite(a, b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_store_keeps_the_contract() {
    let (_pg, a, b) = postgres().await;
    suite(a, b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_store_reports_an_outage_as_unavailable() {
    let (pg, a, _b) = postgres().await;
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
