//! Persisting messages: `Store::append_batch` and the group committer.
//!
//! - `append_batch/N`: one `Store::append_batch` of N messages (one
//!   transaction, one fsync) on SQLite as the node opens it
//!   (`store::open("sqlite://…")`: WAL, `synchronous=FULL`), in a temp dir
//!   under the target dir (a real disk, not tmpfs). Throughput is in
//!   messages, so `elem/s` is stored messages per second.
//! - `appender/S`: `commit::Appender` (batch limit 512, the node's
//!   default) with S tasks each appending and awaiting its ack in a loop,
//!   S sends in flight at most. Time per iteration = time per acked message.
//!
//! - `roundtrip/last_seq`: one `Store::last_seq` (one indexed SELECT), for
//!   the cost of a single statement through the store.
//!
//! Messages are ~100 bytes, spread over 20 rooms, each with a unique nonce
//! (clients send one, so every append also runs the duplicate check).
//!
//! Set `PARLEY_BENCH_POSTGRES_URL=postgres://…` to run the same cases on
//! PostgreSQL as well (the database must be disposable: messages are added
//! to rooms named `bench-…`).
//!
//! Run: `cargo bench -p parley-server --bench store` (see docs/microbenchmarks.md).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::runtime;
use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use parley_server::bus::Bus;
use parley_server::bus::local::LocalBus;
use parley_server::commit::Appender;
use parley_server::hub::Hub;
use parley_server::store::{self, NewMessage, Store};
use tokio::runtime::Runtime;

mod common;

const ROOMS: u64 = 20;
/// The node's default `commit_batch`.
const COMMIT_BATCH: usize = 512;
const TEXT: &str =
    "Deploy of v2.14 is done, canary looks fine; rolling out to the rest of the fleet now.";

/// Unique nonces across every case of one run (same database).
static NEXT: AtomicU64 = AtomicU64::new(0);

/// Builds the message a sender appends next.
type MakeMessage = fn(u64) -> NewMessage;

fn message(sender: u64) -> NewMessage {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    NewMessage {
        room: format!("bench-{:02}", n % ROOMS),
        from: format!("user{sender}"),
        text: TEXT.to_string(),
        nonce: Some(format!("n-{n}")),
        ts_ms: 1_790_000_000_000 + n as i64,
        ..Default::default()
    }
}

fn message_in_one_room(sender: u64) -> NewMessage {
    NewMessage {
        room: "bench-one".to_string(),
        ..message(sender)
    }
}

fn message_without_nonce(sender: u64) -> NewMessage {
    NewMessage {
        nonce: None,
        ..message(sender)
    }
}

/// The backends to measure: SQLite always, PostgreSQL when asked for.
fn backends(rt: &Runtime) -> Vec<(&'static str, Arc<dyn Store>, Option<tempfile::TempDir>)> {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("store.db").display());
    let sqlite = rt.block_on(store::open(&url, 4)).expect("open SQLite");
    let mut out = vec![("sqlite", sqlite, Some(dir))];
    if let Ok(url) = std::env::var("PARLEY_BENCH_POSTGRES_URL") {
        let pg = rt.block_on(store::open(&url, 8)).expect("open PostgreSQL");
        out.push(("postgres", pg, None));
    }
    out
}

fn append_batch(c: &mut Criterion) {
    let rt = runtime();
    for (backend, store, _dir) in backends(&rt) {
        let mut g = c.benchmark_group(format!("append_batch_{backend}"));
        // Each iteration is at least one fsync: few, long samples.
        g.sample_size(10);
        g.sampling_mode(SamplingMode::Flat);
        // (label, batch size, message maker)
        let cases: [(&str, usize, MakeMessage); 5] = [
            ("1", 1, message),
            ("32", 32, message),
            ("256", 256, message),
            // Without a nonce there is no duplicate check.
            ("256_no_nonce", 256, message_without_nonce),
            // Every message in the same room instead of 20 (the PostgreSQL
            // store runs its statements per room of a batch).
            ("256_one_room", 256, message_in_one_room),
        ];
        for (label, size, make) in cases {
            g.throughput(Throughput::Elements(size as u64));
            g.bench_function(BenchmarkId::from_parameter(label), |b| {
                b.iter_custom(|iters| {
                    rt.block_on(async {
                        let mut spent = Duration::ZERO;
                        for i in 0..iters {
                            let batch: Vec<NewMessage> =
                                (0..size as u64).map(|k| make(i + k)).collect();
                            let started = Instant::now();
                            let out = store.append_batch(&batch).await.expect("append");
                            spent += started.elapsed();
                            assert_eq!(out.len(), size);
                        }
                        spent
                    })
                })
            });
        }
        g.finish();
    }
}

/// One statement through the store's connection pools, for scale: the
/// floor of what each statement of an append costs.
fn roundtrip(c: &mut Criterion) {
    let rt = runtime();
    for (backend, store, _dir) in backends(&rt) {
        rt.block_on(store.ensure_room("bench-00")).expect("room");
        let mut g = c.benchmark_group(format!("roundtrip_{backend}"));
        g.bench_function("last_seq", |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let started = Instant::now();
                    for _ in 0..iters {
                        store.last_seq("bench-00").await.expect("last_seq");
                    }
                    started.elapsed()
                })
            })
        });
        g.finish();
    }
}

fn appender(c: &mut Criterion) {
    let rt = runtime();
    for (backend, store, _dir) in backends(&rt) {
        let _guard = rt.enter();
        let bus: Arc<dyn Bus> = Arc::new(LocalBus::new());
        // A hub with no joined room: the committer's publish goes through
        // the real bus → hub path and stops at the room lookup.
        let _hub = Hub::new(
            store.clone(),
            bus.clone(),
            Arc::new(parley_server::presence::LocalPresence),
            Duration::from_secs(3),
            500,
            1024,
        );
        let (appender, _task) = Appender::spawn(store, bus, COMMIT_BATCH);
        let mut g = c.benchmark_group(format!("appender_{backend}"));
        g.sample_size(10);
        g.sampling_mode(SamplingMode::Flat);
        g.throughput(Throughput::Elements(1));
        for submitters in [1u64, 16, 256] {
            g.bench_function(BenchmarkId::from_parameter(submitters), |b| {
                b.iter_custom(|iters| {
                    rt.block_on(async {
                        let started = Instant::now();
                        let mut tasks = Vec::with_capacity(submitters as usize);
                        for s in 0..submitters {
                            // Spread `iters` appends over the submitters.
                            let count = iters / submitters + u64::from(s < iters % submitters);
                            let appender = appender.clone();
                            tasks.push(tokio::spawn(async move {
                                for _ in 0..count {
                                    appender.append(message(s)).await.expect("append");
                                }
                            }));
                        }
                        for t in tasks {
                            t.await.expect("submitter");
                        }
                        started.elapsed()
                    })
                })
            });
        }
        g.finish();
        appender.close();
    }
}

criterion_group!(benches, roundtrip, append_batch, appender);
criterion_main!(benches);
