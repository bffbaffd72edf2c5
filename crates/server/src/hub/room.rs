//! One room on one node: its local subscribers, and the task that delivers
//! the room's messages to them in `seq` order.
//!
//! The delivery task keeps a cursor — the last `seq` delivered on this node —
//! and is the only code that moves it. A message from the bus with
//! `seq <= cursor` is a duplicate and dropped; `seq > cursor + 1` means the bus
//! reordered two nodes' publishes or lost one: the message is held
//! ([`super::reorder`]) for the missing ones, and a gap still open after a
//! short wait is read from the store and delivered first (invariant 3). On a
//! lossy bus the hub's anti-entropy sweep tells the task the store's
//! `last_seq` periodically ([`RoomEvent::StoreAt`]), and what is missing here
//! is delivered from the store — which bounds how late a lost publish can be.
//!
//! The room also keeps this node's cache of who may do what in it
//! ([`AccessMemo`]). Membership changes are room events, so they pass
//! through [`Room::deliver`] in seq order — from the bus, a gap fill or an
//! anti-entropy repair alike: each `member` or `topic` event empties the
//! cache, and a kick, ban or part takes its user's connections out of the
//! room with a `left` push. The cache therefore converges exactly when
//! delivery does (invariants 3 and 8), even after a bus outage.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use parley_protocol::backoff::Backoff;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::bus::Bus;
use crate::outbox::Outbox;
use crate::presence::Presence;
use crate::store::{Access, Store};

use super::reorder::Reorder;

/// A session's subscription to a room.
struct Sub {
    user: Arc<str>,
    outbox: Outbox,
    /// Live messages with `seq <= after` are not pushed: the session got them
    /// in its `joined` history.
    after: u64,
    /// While the session is joining (reading history), live messages are
    /// parked here instead of its outbox, so that `joined` goes out first.
    pending: Option<Vec<(u64, Utf8Bytes)>>,
    /// The session asked to part: its answer says `left`, so the push
    /// that takes the user's connections out is not sent to it too.
    parting: bool,
}

pub(crate) enum RoomEvent {
    Message {
        seq: u64,
        frame: Utf8Bytes,
        /// When the hub received it (for `parley_hub_delivery_seconds`).
        arrived: Instant,
    },
    /// The store holds the room up to this seq (an anti-entropy sweep):
    /// deliver what is missing.
    StoreAt(u64),
    /// The reorder buffer's wait for a missing seq is over: read the store.
    GapTimeout,
    /// Read the room's `last_seq` from the store, then as `StoreAt`.
    Resync,
    Stop,
}

/// How long a cached [`Access`] is trusted without an event confirming it:
/// a bound on staleness for a change whose event no delivery path
/// carried to this node's cache (e.g. read just before the room went live).
const ACCESS_TTL: Duration = Duration::from_secs(60);
/// Most users whose access one room caches; beyond, it starts over.
const ACCESS_ENTRIES: usize = 50_000;

/// This node's cache of [`Access`] per user key for one room. `generation`
/// grows with every membership event: a store read started before one may
/// not be cached after it ([`Room::remember_access`]).
#[derive(Default)]
struct AccessMemo {
    generation: u64,
    users: HashMap<String, (Access, Instant)>,
}

pub struct Room {
    pub(crate) name: Arc<str>,
    subs: Mutex<HashMap<u64, Sub>>,
    access: Mutex<AccessMemo>,
    events: mpsc::UnboundedSender<RoomEvent>,
    ready: watch::Receiver<bool>,
    /// Most live messages parked for one joining session: they go to its
    /// outbox next, whose bound is the same setting.
    outbound_queue: usize,
    /// Told when an event takes a user out of the room on this node.
    presence: Arc<dyn Presence>,
    /// Where the presence push of a user taken out goes.
    bus: Arc<dyn Bus>,
}

pub(crate) struct RoomDeps {
    pub store: Arc<dyn Store>,
    pub bus: Arc<dyn Bus>,
    pub presence: Arc<dyn Presence>,
    pub page: u32,
}

impl Room {
    /// Creates the room and starts its delivery task.
    pub(crate) fn start(name: Arc<str>, deps: RoomDeps, outbound_queue: usize) -> Arc<Room> {
        let (events, rx) = mpsc::unbounded_channel();
        let (ready_tx, ready) = watch::channel(false);
        let presence = deps.presence.clone();
        let bus = deps.bus.clone();
        let room = Arc::new(Room {
            name,
            subs: Mutex::new(HashMap::new()),
            access: Mutex::new(AccessMemo::default()),
            presence,
            bus,
            events,
            ready,
            outbound_queue,
        });
        tokio::spawn(deliver_loop(
            Arc::downgrade(&room),
            room.name.clone(),
            rx,
            ready_tx,
            deps,
        ));
        room
    }

    fn subs(&self) -> MutexGuard<'_, HashMap<u64, Sub>> {
        // A panic while holding this lock would be a bug in this module; keep
        // serving rather than poisoning every later delivery.
        self.subs.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn send(&self, event: RoomEvent) {
        let _ = self.events.send(event);
    }

    /// Waits until the delivery task is subscribed to the bus and knows the
    /// room's current `seq`; false on timeout.
    pub(crate) async fn wait_ready(&self, timeout: Duration) -> bool {
        let mut ready = self.ready.clone();
        matches!(
            tokio::time::timeout(timeout, ready.wait_for(|r| *r)).await,
            Ok(Ok(_))
        )
    }

    /// Adds a subscriber whose live messages are parked until [`Room::activate`].
    pub(crate) fn add_pending(&self, session: u64, user: Arc<str>, outbox: Outbox) {
        self.subs().insert(
            session,
            Sub {
                user,
                outbox,
                after: 0,
                pending: Some(Vec::new()),
                parting: false,
            },
        );
    }

    /// Ends the joining phase: parked messages newer than `after` go to the
    /// outbox (after `joined`, which the session queued before calling this),
    /// and from now on live messages go straight there.
    pub(crate) fn activate(&self, session: u64, after: u64) {
        let mut subs = self.subs();
        if let Some(sub) = subs.get_mut(&session) {
            sub.after = sub.after.max(after);
            for (seq, frame) in sub.pending.take().unwrap_or_default() {
                if seq > sub.after && !sub.outbox.push(frame) {
                    break;
                }
            }
        }
    }

    /// Removes a subscriber; returns (removed, whether the room is now empty,
    /// whether its user still has another session here).
    pub(crate) fn remove(&self, session: u64) -> (bool, bool, bool) {
        let mut subs = self.subs();
        let removed = subs.remove(&session);
        let user_still_here = removed
            .as_ref()
            .is_some_and(|r| subs.values().any(|s| s.user == r.user));
        (removed.is_some(), subs.is_empty(), user_still_here)
    }

    pub(crate) fn contains(&self, session: u64) -> bool {
        self.subs().contains_key(&session)
    }

    pub(crate) fn has_user(&self, user: &str, except_session: u64) -> bool {
        self.subs()
            .iter()
            .any(|(id, s)| *id != except_session && &*s.user == user)
    }

    /// Distinct users subscribed on this node, sorted.
    pub fn members(&self) -> Vec<String> {
        let mut users: Vec<String> = self.subs().values().map(|s| s.user.to_string()).collect();
        users.sort();
        users.dedup();
        users
    }

    /// Distinct users subscribed on this node.
    pub fn member_count(&self) -> usize {
        self.members().len()
    }

    /// Pushes an ephemeral frame to every active subscriber not of `from`.
    pub(crate) fn deliver_ephemeral(&self, from: &str, frame: &Utf8Bytes) {
        for sub in self.subs().values() {
            if sub.pending.is_none() && &*sub.user != from {
                sub.outbox.push(frame.clone());
            }
        }
    }

    /// The cached access of `user_key`, if fresh.
    pub(crate) fn cached_access(&self, user_key: &str) -> Option<Access> {
        let memo = lock(&self.access);
        memo.users
            .get(user_key)
            .filter(|(_, at)| at.elapsed() < ACCESS_TTL)
            .map(|(a, _)| a.clone())
    }

    /// The cache's generation: take it before reading the store.
    pub(crate) fn access_generation(&self) -> u64 {
        lock(&self.access).generation
    }

    /// Caches `access` read from the store, unless a membership event was
    /// delivered since `generation` was taken (the read may predate it).
    pub(crate) fn remember_access(&self, user_key: &str, access: Access, generation: u64) {
        let mut memo = lock(&self.access);
        if memo.generation != generation {
            return;
        }
        if memo.users.len() >= ACCESS_ENTRIES {
            memo.users.clear();
        }
        memo.users
            .insert(user_key.to_string(), (access, Instant::now()));
    }

    /// A membership or topic event was delivered: what was cached may be
    /// wrong; and if it took a user out, their connections here leave.
    fn membership_changed(&self, frame: &str) {
        {
            let mut memo = lock(&self.access);
            memo.generation += 1;
            memo.users.clear();
        }
        let Some((user, reason)) = ejection(frame) else {
            return;
        };
        let left = Utf8Bytes::from(
            parley_protocol::ServerFrame::Left {
                re: None,
                room: self.name.to_string(),
                reason: Some(reason.to_string()),
            }
            .to_json(),
        );
        let mut gone: Vec<Arc<str>> = Vec::new();
        self.subs().retain(|_, sub| {
            if !parley_protocol::same_user(&sub.user, &user) {
                return true;
            }
            if !sub.parting {
                sub.outbox.push(left.clone());
            }
            gone.push(sub.user.clone());
            false
        });
        // One announcement per subscription taken out, as each join made one.
        for user in &gone {
            self.presence.announce(&self.name, user, false);
        }
        // And the room hears that the user is gone, as after a `leave`.
        if let Some(user) = gone.first() {
            let frame = parley_protocol::ServerFrame::Presence {
                room: self.name.to_string(),
                user: user.to_string(),
                state: parley_protocol::PresenceState::Left,
            };
            self.bus.publish(crate::bus::Envelope {
                room: self.name.clone(),
                event: crate::bus::Event::Ephemeral {
                    from: user.clone(),
                    frame: Utf8Bytes::from(frame.to_json()),
                },
            });
        }
    }

    /// Marks (or unmarks, when the part was refused) a session that asked
    /// to part.
    pub(crate) fn set_parting(&self, session: u64, parting: bool) {
        if let Some(sub) = self.subs().get_mut(&session) {
            sub.parting = parting;
        }
    }

    /// Hands one message to every subscriber. Called by the delivery task
    /// only, in seq order.
    fn deliver(&self, seq: u64, frame: &Utf8Bytes) {
        if frame.starts_with(r#"{"type":"member""#) || frame.starts_with(r#"{"type":"topic""#) {
            // Delivered first: the user being removed sees why.
            self.deliver_to_subs(seq, frame);
            self.membership_changed(frame);
            return;
        }
        self.deliver_to_subs(seq, frame);
    }

    fn deliver_to_subs(&self, seq: u64, frame: &Utf8Bytes) {
        let mut delivered = 0u64;
        for sub in self.subs().values_mut() {
            match &mut sub.pending {
                Some(parked) => {
                    if parked.len() < self.outbound_queue {
                        parked.push((seq, frame.clone()));
                    } else {
                        sub.outbox
                            .request_close(parley_protocol::close::SLOW_CONSUMER);
                    }
                }
                None if seq > sub.after && sub.outbox.push(frame.clone()) => delivered += 1,
                None => {}
            }
        }
        metrics::counter!("parley_messages_delivered_total").increment(delivered);
    }
}

/// The delivery task of one room. Holds the room weakly: the hub owns it.
async fn deliver_loop(
    room: std::sync::Weak<Room>,
    name: Arc<str>,
    mut events: mpsc::UnboundedReceiver<RoomEvent>,
    ready: watch::Sender<bool>,
    deps: RoomDeps,
) {
    // Subscribe first, then read the cursor: whatever is committed after the
    // read is published after it, hence after the subscription, so it reaches
    // this task (or is found by a gap fill).
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
    loop {
        match deps.bus.subscribe_room(&name).await {
            Ok(()) => break,
            Err(e) => {
                tracing::warn!(room = %name, error = %e, "bus subscribe failed; delivery falls back to the store");
                if deps.bus.lossy() {
                    // The anti-entropy check delivers from the store meanwhile.
                    break;
                }
                tokio::time::sleep(backoff.next_delay(0.0)).await;
            }
        }
    }
    let cursor = loop {
        match deps.store.last_seq(&name).await {
            Ok(seq) => break seq.unwrap_or(0),
            Err(e) => {
                tracing::warn!(room = %name, error = %e, "cannot read room cursor; retrying");
                if room.strong_count() == 0 {
                    return;
                }
                tokio::time::sleep(backoff.next_delay(0.0)).await;
            }
        }
    };
    let _ = ready.send(true);

    let mut order = Reorder::new(cursor);
    loop {
        let deadline = order.deadline();
        let event = tokio::select! {
            ev = events.recv() => ev.unwrap_or(RoomEvent::Stop),
            _ = sleep_until_some(deadline) => RoomEvent::GapTimeout,
        };
        let Some(room) = room.upgrade() else { break };
        let cursor = order.cursor();
        match event {
            RoomEvent::Stop => break,
            RoomEvent::Message {
                seq,
                frame,
                arrived,
            } => release(&room, order.offer(seq, (frame, arrived), Instant::now())),
            RoomEvent::GapTimeout => {
                if let Some(upto) = order.gap_end() {
                    metrics::counter!("parley_gap_fills_total").increment(1);
                    let reached = fill(&room, &deps, cursor, upto).await;
                    release(&room, order.advance_to(reached));
                    if reached < upto {
                        order.retry_later(Instant::now());
                    }
                }
            }
            // Repairs at once, even a publish that may still be in flight:
            // the cursor drops its duplicate, and a Redis outage's delay stays
            // within one period (waiting for a second sweep doubled it).
            RoomEvent::StoreAt(last) => {
                let reached = catch_up(&room, &deps, cursor, last).await;
                release(&room, order.advance_to(reached));
            }
            RoomEvent::Resync => match deps.store.last_seq(&name).await {
                Ok(last) => {
                    let reached = catch_up(&room, &deps, cursor, last.unwrap_or(0)).await;
                    release(&room, order.advance_to(reached));
                }
                // The next sweep (lossy bus) or the next gap retries.
                Err(e) => tracing::warn!(room = %name, error = %e, "room cursor check failed"),
            },
        }
    }
    deps.bus.unsubscribe_room(&name).await;
}

/// Delivers messages released by the reorder buffer, recording how long
/// each waited since the hub received it (room queue and reorder hold).
fn release(room: &Room, ready: Vec<(u64, (Utf8Bytes, Instant))>) {
    for (seq, (frame, arrived)) in ready {
        room.deliver(seq, &frame);
        metrics::histogram!("parley_hub_delivery_seconds").record(arrived.elapsed().as_secs_f64());
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The user a `member` event's frame takes out of the room, and why.
fn ejection(frame: &str) -> Option<(String, &'static str)> {
    #[derive(serde::Deserialize)]
    struct Peek {
        from: String,
        user: String,
        change: parley_protocol::MemberChange,
    }
    let peek: Peek = serde_json::from_str(frame).ok()?;
    crate::store::members::ejects(&peek.from, &peek.user, peek.change).map(|r| (peek.user, r))
}

async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Anti-entropy: delivers what the store holds beyond `cursor` (up to
/// `last`) and returns the new cursor; retries shortly if the store failed.
async fn catch_up(room: &Room, deps: &RoomDeps, cursor: u64, last: u64) -> u64 {
    if last <= cursor {
        return cursor;
    }
    metrics::counter!("parley_anti_entropy_repairs_total").increment(1);
    let cursor = fill(room, deps, cursor, last).await;
    if cursor < last {
        schedule_resync(room);
    }
    cursor
}

/// Delivers `cursor+1 ..= upto` from the store; returns the new cursor
/// (short of `upto` if the store failed).
async fn fill(room: &Room, deps: &RoomDeps, mut cursor: u64, upto: u64) -> u64 {
    while cursor < upto {
        match deps
            .store
            .range_forward(&room.name, cursor, upto + 1, deps.page)
            .await
        {
            Ok(batch) if batch.is_empty() => break,
            Ok(batch) => {
                for m in batch {
                    if m.seq != cursor + 1 {
                        tracing::error!(room = %room.name, expected = cursor + 1, got = m.seq, "store returned a gap");
                        return cursor;
                    }
                    room.deliver(m.seq, &Utf8Bytes::from(m.encode()));
                    cursor = m.seq;
                }
            }
            Err(e) => {
                tracing::warn!(room = %room.name, error = %e, "gap fill from the store failed");
                break;
            }
        }
    }
    cursor
}

fn schedule_resync(room: &Room) {
    let events = room.events.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let _ = events.send(RoomEvent::Resync);
    });
}
