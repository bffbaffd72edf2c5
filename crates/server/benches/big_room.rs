//! What reading a room of a million messages costs (issue 13): a join, a
//! history page, a search — on SQLite and, when asked for, PostgreSQL.
//!
//! The store is filled once per run with `PARLEY_BENCH_MESSAGES` messages
//! (default 1,000,000) in one room, `big`, as the node would store them
//! (`append_batch`, batches of 5,000): ten words each from a vocabulary of
//! 2,000, skewed so that low-numbered words are common (`w1` is in ~9% of
//! the messages), plus `rare0` in one message of 1,000 and `needle` in one
//! of 100,000; every 50th message is
//! followed by a reaction and every 200th by an edit, so history pages hold
//! events and current state like a real room's.
//!
//! Cases (each is what the node runs for the request, statement for
//! statement):
//! - `join_never_read`: a `join` without `since`: `last_seq`, the newest
//!   history page (50 events), the unread count (never read: the newest
//!   999 messages of others are counted, the cap).
//! - `join_read_near_end`: the same for a user who has read up to 10
//!   messages before the end.
//! - `history_page_middle`: one page of 50 events before the room's middle
//!   seq (`GET …/messages?before=`).
//! - `search_common_word`: the first page (20) of `w1` (~90,000 matches).
//! - `search_rare_word`: `rare0` (1,000 matches, evenly spread).
//! - `search_needle`: `needle` (10 matches), and `search_two_words`
//!   (`w3 w5`: both required, a few thousand matches).
//!
//! Run: `cargo bench -p parley-server --bench big_room` (add
//! `PARLEY_BENCH_POSTGRES_URL=postgres://…` of a disposable database for
//! PostgreSQL; results in docs/benchmarks.md).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a bench fails by panicking

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::runtime;
use criterion::{Criterion, criterion_group, criterion_main};
use parley_server::store::search::SearchQuery;
use parley_server::store::{self, Change, NewMessage, Store};
use tokio::runtime::Runtime;

mod common;

const ROOM: &str = "big";
const BATCH: u64 = 5_000;
const VOCABULARY: u64 = 2_000;
const PAGE: u32 = 50;

fn messages() -> u64 {
    std::env::var("PARLEY_BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

/// A deterministic pseudo-random sequence (SplitMix64): the same room on
/// every run and backend.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The text of message `i` (0-based): ten words, Zipf-ish (low word numbers
/// are far more frequent), plus the block's rare word and the needle.
fn text(i: u64) -> String {
    let mut words: Vec<String> = (0..10)
        .map(|k| {
            let r = mix(i * 16 + k);
            // The square of a uniform number skews toward 0.
            let u = (r % 10_000) as f64 / 10_000.0;
            format!("w{}", (u * u * VOCABULARY as f64) as u64)
        })
        .collect();
    if i.is_multiple_of(1_000) {
        words.push("rare0".into());
    }
    if i.is_multiple_of(100_000) {
        words.push("needle".into());
    }
    words.join(" ")
}

fn batch(start: u64, n: u64, seq_of_first: u64) -> (Vec<NewMessage>, u64) {
    let mut out = Vec::new();
    let mut seq = seq_of_first;
    for i in start..start + n {
        out.push(NewMessage {
            room: ROOM.into(),
            from: format!("user{}", mix(i) % 500),
            text: text(i),
            ts_ms: 1_790_000_000_000 + i as i64,
            ..Default::default()
        });
        let target = seq;
        seq += 1;
        if i.is_multiple_of(50) {
            out.push(NewMessage {
                room: ROOM.into(),
                from: "reactor".into(),
                change: Change::React {
                    target,
                    emoji: "👍".into(),
                    on: true,
                },
                ts_ms: 1_790_000_000_000 + i as i64,
                ..Default::default()
            });
            seq += 1;
        }
        if i.is_multiple_of(200) {
            let from = format!("user{}", mix(i) % 500);
            out.push(NewMessage {
                room: ROOM.into(),
                from,
                change: Change::Edit { target },
                text: format!("{} edited", text(i)),
                ts_ms: 1_790_000_000_000 + i as i64,
                ..Default::default()
            });
            seq += 1;
        }
    }
    (out, seq)
}

/// Fills the room unless a previous run of the same size did.
async fn fill(store: &Arc<dyn Store>, backend: &str) {
    let n = messages();
    if store.last_seq(ROOM).await.expect("last_seq").unwrap_or(0) > 0 {
        eprintln!("{backend}: room {ROOM} already filled");
        return;
    }
    let started = Instant::now();
    let mut seq = 1;
    let mut i = 0;
    while i < n {
        let count = BATCH.min(n - i);
        let (b, next) = batch(i, count, seq);
        let out = store.append_batch(&b).await.expect("append");
        assert!(out.iter().all(|o| o.message().is_some()));
        seq = next;
        i += count;
    }
    eprintln!(
        "{backend}: filled {n} messages ({} events) in {:.1?}",
        seq - 1,
        started.elapsed()
    );
}

/// SQLite in a file kept under the target dir (filled once, reused), and
/// PostgreSQL when `PARLEY_BENCH_POSTGRES_URL` names one.
fn backends(rt: &Runtime) -> Vec<(&'static str, Arc<dyn Store>)> {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("big_room");
    std::fs::create_dir_all(&dir).expect("bench dir");
    let url = format!(
        "sqlite://{}",
        dir.join(format!("big-{}.db", messages())).display()
    );
    let mut out = vec![("sqlite", rt.block_on(store::open(&url, 4)).expect("SQLite"))];
    if let Ok(url) = std::env::var("PARLEY_BENCH_POSTGRES_URL") {
        out.push((
            "postgres",
            rt.block_on(store::open(&url, 8)).expect("PostgreSQL"),
        ));
    }
    out
}

/// Times `iters` runs of `f`.
fn timed<F, Fut>(rt: &Runtime, iters: u64, f: F) -> Duration
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    rt.block_on(async {
        let started = Instant::now();
        for _ in 0..iters {
            f().await;
        }
        started.elapsed()
    })
}

/// What a `join` without `since` reads from the store.
async fn join(store: &Arc<dyn Store>, user: &str) {
    let last = store.last_seq(ROOM).await.unwrap().unwrap();
    let page = store
        .range_backward(ROOM, last + 1, PAGE + 1)
        .await
        .unwrap();
    assert!(!page.is_empty());
    store.unread(user, ROOM).await.unwrap();
}

async fn search(store: &Arc<dyn Store>, q: &str) -> usize {
    let query = SearchQuery {
        user_key: "reader",
        q,
        room: None,
        before: None,
        limit: 20,
        admin: false,
    };
    store.search(&query).await.unwrap().hits.len()
}

fn big_room(c: &mut Criterion) {
    let rt = runtime();
    for (backend, store) in backends(&rt) {
        rt.block_on(fill(&store, backend));
        let last = rt.block_on(store.last_seq(ROOM)).unwrap().unwrap();
        rt.block_on(store.mark_read("near-end", ROOM, last - 10))
            .unwrap();
        for (q, at_least) in [("w1", 20), ("rare0", 20), ("needle", 1), ("w3 w5", 20)] {
            let found = rt.block_on(search(&store, q));
            assert!(found >= at_least.min(1), "{backend}: {q} found {found}");
        }
        let mut g = c.benchmark_group(format!("big_room_{backend}"));
        g.sample_size(20);
        g.measurement_time(Duration::from_secs(5));
        g.bench_function("join_never_read", |b| {
            b.iter_custom(|n| timed(&rt, n, || join(&store, "never-read")))
        });
        g.bench_function("join_read_near_end", |b| {
            b.iter_custom(|n| timed(&rt, n, || join(&store, "near-end")))
        });
        g.bench_function("history_page_middle", |b| {
            b.iter_custom(|n| {
                timed(&rt, n, || async {
                    let page = store
                        .range_backward(ROOM, last / 2, PAGE + 1)
                        .await
                        .unwrap();
                    assert_eq!(page.len(), PAGE as usize + 1);
                })
            })
        });
        for (name, q) in [
            ("search_common_word", "w1"),
            ("search_rare_word", "rare0"),
            ("search_needle", "needle"),
            ("search_two_words", "w3 w5"),
        ] {
            g.bench_function(name, |b| {
                b.iter_custom(|n| {
                    timed(&rt, n, || async {
                        search(&store, q).await;
                    })
                })
            });
        }
        g.finish();
    }
}

criterion_group!(benches, big_room);
criterion_main!(benches);
