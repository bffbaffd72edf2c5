//! Hub fan-out: one stored message, already serialised, delivered to every
//! local subscriber of its room.
//!
//! Each case builds the real thing: a `SqliteStore` in a temp dir, a
//! `LocalBus`, a `Hub`, and N sessions (`outbox(1024)` + `SessionRef`) joined
//! with `Hub::join` and activated. A message is published the way the group
//! committer does it (`Envelope::for_message` + `Bus::publish`); the room's
//! delivery task pushes the same bytes into every outbox.
//!
//! Two ways of draining the outboxes:
//! - `tasks/*`: one task per session, like the session writer task, taking
//!   whatever is queued (`recv_batch`, 64 at most). Time is measured from the
//!   first publish until every receiver has taken every frame — it includes
//!   waking N tasks, the cost a real node pays (minus the socket write).
//! - `inline/*`: the benchmark itself drains every receiver after the room
//!   task has pushed (single-threaded runtime): the hub's own cost, without
//!   task wake-ups.
//!
//! Throughput is in frames (messages × receivers), so criterion's
//! `elem/s` is frames per second.
//!
//! Run: `cargo bench -p parley-server --bench fanout` (see docs/microbenchmarks.md).
//! `PARLEY_BENCH_NO_METRICS=1` skips installing the Prometheus recorder
//! (installed by default, as on a real node).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::extract::ws::Utf8Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use parley_server::bus::local::LocalBus;
use parley_server::bus::{Bus, Envelope};
use parley_server::hub::{Hub, SessionRef};
use parley_server::outbox::{OutboxReceiver, outbox};
use parley_server::presence::LocalPresence;
use parley_server::store::{self, StoredMessage};
use tokio::runtime::Runtime;
use tokio::sync::Notify;

/// The node's default `outbound_queue`.
const OUTBOX: usize = 1024;

fn install_metrics() {
    if std::env::var_os("PARLEY_BENCH_NO_METRICS").is_none() {
        let _ = parley_server::metrics::install();
    }
}

/// A ~100-byte chat message, serialised once as the committer does.
fn frame() -> Utf8Bytes {
    Utf8Bytes::from(StoredMessage {
        room: "room-00".to_string(),
        seq: 1,
        from: "alice".to_string(),
        text:
            "Deploy of v2.14 is done, canary looks fine; rolling out to the rest of the fleet now."
                .to_string(),
        ts_ms: 1_790_000_000_123,
        nonce: Some("c7f3a9e1-4242".to_string()),
        ..Default::default()
    }
    .encode())
}

struct Node {
    _dir: tempfile::TempDir,
    hub: Arc<Hub>,
    bus: Arc<dyn Bus>,
    /// (room, last published seq)
    rooms: Vec<(String, u64)>,
}

impl Node {
    /// A hub with `rooms` rooms of `per_room` joined, activated sessions.
    async fn start(rooms: usize, per_room: usize) -> (Node, Vec<OutboxReceiver>) {
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("fanout.db").display());
        let store = store::open(&url, 4).await.expect("open SQLite store");
        let bus: Arc<dyn Bus> = Arc::new(LocalBus::new());
        let hub = Hub::new(
            store,
            bus.clone(),
            Arc::new(LocalPresence),
            Duration::from_secs(3),
            500,
            OUTBOX,
        );
        let mut receivers = Vec::with_capacity(rooms * per_room);
        let mut names = Vec::with_capacity(rooms);
        for r in 0..rooms {
            let room = format!("room-{r:02}");
            for i in 0..per_room {
                let id = (r * per_room + i) as u64;
                let (out, rx) = outbox(OUTBOX);
                let session = SessionRef {
                    id,
                    tag: id,
                    user: Arc::from(format!("user{id}")),
                    outbox: out,
                };
                assert!(hub.join(&room, &session).await, "join {room}");
                hub.activate(&room, id, 0);
                receivers.push(rx);
            }
            names.push((room, 0));
        }
        let node = Node {
            _dir: dir,
            hub,
            bus,
            rooms: names,
        };
        (node, receivers)
    }

    /// Publishes the next `burst` messages of every room, as the committer does.
    fn publish(&mut self, frame: &Utf8Bytes, burst: usize) {
        for (room, seq) in &mut self.rooms {
            for _ in 0..burst {
                *seq += 1;
                for envelope in Envelope::for_message(room, *seq, frame.clone()) {
                    self.bus.publish(envelope);
                }
            }
        }
    }
}

/// Frames still to be taken by the drainer tasks, and the signal that they are.
struct Countdown {
    remaining: AtomicUsize,
    done: Notify,
}

/// One drainer task per receiver, standing in for the session writer task.
fn spawn_drainers(rt: &Runtime, receivers: Vec<OutboxReceiver>, countdown: &Arc<Countdown>) {
    for mut rx in receivers {
        let countdown = countdown.clone();
        rt.spawn(async move {
            let mut batch = Vec::with_capacity(64);
            loop {
                batch.clear();
                if !rx.recv_batch(&mut batch, 64).await {
                    break;
                }
                let n = batch.len();
                if countdown.remaining.fetch_sub(n, Ordering::AcqRel) == n {
                    countdown.done.notify_one();
                }
            }
        });
    }
}

fn tasks(c: &mut Criterion) {
    install_metrics();
    // Two workers, like the two cores of the reference machine.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let frame = frame();
    let mut g = c.benchmark_group("fanout_tasks");
    // (label, rooms, sessions per room, messages per room per iteration)
    for (label, rooms, per_room, burst) in [
        ("1room", 1, 100, 1),
        ("1room", 1, 1000, 1),
        ("1room_burst32", 1, 100, 32),
        ("1room_burst32", 1, 1000, 32),
        ("20rooms", 20, 100, 1),
    ] {
        let (mut node, receivers) = rt.block_on(Node::start(rooms, per_room));
        let countdown = Arc::new(Countdown {
            remaining: AtomicUsize::new(0),
            done: Notify::new(),
        });
        spawn_drainers(&rt, receivers, &countdown);
        let frames_per_iter = rooms * per_room * burst;
        g.throughput(Throughput::Elements(frames_per_iter as u64));
        g.bench_function(BenchmarkId::new(label, rooms * per_room), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let started = Instant::now();
                    for _ in 0..iters {
                        countdown
                            .remaining
                            .store(frames_per_iter, Ordering::Release);
                        node.publish(&frame, burst);
                        countdown.done.notified().await;
                    }
                    started.elapsed()
                })
            })
        });
        // Leaving every room stops the room tasks; dropping the hub closes
        // the outboxes, which ends the drainer tasks.
        for (r, (room, _)) in node.rooms.iter().enumerate() {
            for i in 0..per_room {
                node.hub.leave(room, (r * per_room + i) as u64);
            }
        }
        drop(node);
    }
    g.finish();
}

fn inline(c: &mut Criterion) {
    install_metrics();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let frame = frame();
    let mut g = c.benchmark_group("fanout_inline");
    for per_room in [100, 1000] {
        let (mut node, mut receivers) = rt.block_on(Node::start(1, per_room));
        let mut buf = Vec::with_capacity(64);
        g.throughput(Throughput::Elements(per_room as u64));
        g.bench_function(BenchmarkId::new("1room", per_room), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let started = Instant::now();
                    for _ in 0..iters {
                        node.publish(&frame, 1);
                        // The first await yields to the room task, which
                        // pushes to every outbox in one pass.
                        for rx in &mut receivers {
                            buf.clear();
                            assert!(rx.recv_batch(&mut buf, 64).await);
                        }
                    }
                    started.elapsed()
                })
            })
        });
    }
    g.finish();
}

criterion_group!(benches, tasks, inline);
criterion_main!(benches);
