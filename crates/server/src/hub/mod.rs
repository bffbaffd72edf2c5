//! The hub: which local sessions joined which room, and delivery to them.
//!
//! The hub is the bus's [`Inbox`]: every envelope a node receives passes
//! through [`Hub::deliver`]. Each stored message arrives with its frame
//! already serialised, and the same bytes are queued for every receiver
//! (serialise once per message, not once per receiver). Ordering and gap
//! filling per room live in [`room`].
//!
//! On a lossy bus (Redis Pub/Sub) the hub also runs the node's anti-entropy
//! sweep: every period, one store query reads the `last_seq` of all the rooms
//! live on this node, and each room delivers what it missed. One query per
//! node per period — not one per room, which at thousands of rooms would
//! occupy the database pool on its own.
//!
//! Ephemeral events (presence, typing) go out through [`Hub::publish_ephemeral`],
//! and fleet-wide member lists come from [`Presence`]: a session talks to the
//! hub, never to the bus.
//!
//! Each live room also caches who may do what in it, kept right by the
//! room's own membership events ([`room`]); the rules that use it are
//! [`crate::node`]'s.
//!
//! The hub does not check permissions or write to the store; the only
//! frames it reads are membership events, to know whom they take out.

pub mod ephemeral;
pub mod reorder;
pub mod room;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;

use axum::extract::ws::Utf8Bytes;
use parley_protocol::ServerFrame;

use crate::bus::{Bus, Envelope, Event, Inbox};
use crate::outbox::Outbox;
use crate::presence::Presence;
use crate::store::{Access, Store};
use ephemeral::{Decision, Kind, Throttle};
use room::{Room, RoomDeps, RoomEvent};

/// A local session as the hub sees it.
#[derive(Clone, Debug)]
pub struct SessionRef {
    pub id: u64,
    /// A random tag that names this connection across the fleet (`id` is
    /// only unique on its node): what [`Event::ToUser`] skips.
    pub tag: u64,
    pub user: Arc<str>,
    pub outbox: Outbox,
}

pub struct Hub {
    rooms: Mutex<HashMap<Arc<str>, Arc<Room>>>,
    users: Mutex<HashMap<Arc<str>, Vec<SessionRef>>>,
    store: Arc<dyn Store>,
    bus: Arc<dyn Bus>,
    presence: Arc<dyn Presence>,
    /// Typing and presence, per user per room ([`ephemeral`]).
    throttle: Arc<Throttle>,
    /// Wakes the anti-entropy sweep early (the bus reconnected).
    sweep_now: Arc<Notify>,
    page: u32,
    outbound_queue: usize,
}

/// How long a join waits for a new room's delivery task to be ready.
const READY_TIMEOUT: Duration = Duration::from_secs(5);
/// Rooms per anti-entropy query.
const SWEEP_CHUNK: usize = 1000;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Hub {
    /// `page`: most messages a gap fill reads at once; `outbound_queue`:
    /// the per-connection queue bound (live messages parked for a joining
    /// session are bounded by it too).
    pub fn new(
        store: Arc<dyn Store>,
        bus: Arc<dyn Bus>,
        presence: Arc<dyn Presence>,
        anti_entropy_period: Duration,
        page: u32,
        outbound_queue: usize,
    ) -> Arc<Hub> {
        let hub = Arc::new(Hub {
            rooms: Mutex::new(HashMap::new()),
            users: Mutex::new(HashMap::new()),
            store,
            bus: bus.clone(),
            presence,
            throttle: Arc::default(),
            sweep_now: Arc::new(Notify::new()),
            page,
            outbound_queue,
        });
        let inbox: Arc<dyn Inbox> = hub.clone();
        bus.set_inbox(Arc::downgrade(&inbox));
        if bus.lossy() {
            tokio::spawn(anti_entropy(
                Arc::downgrade(&hub),
                hub.sweep_now.clone(),
                anti_entropy_period,
            ));
        }
        hub
    }

    /// One anti-entropy pass: tells every live room how far the store holds it.
    async fn sweep(&self) {
        let rooms = self.all_rooms();
        let names: Vec<Arc<str>> = rooms.iter().map(|r| r.name.clone()).collect();
        for chunk in names.chunks(SWEEP_CHUNK) {
            match self.store.last_seqs(chunk).await {
                Ok(seqs) => {
                    for (name, last) in seqs {
                        if let Some(room) = self.room(&name) {
                            room.send(RoomEvent::StoreAt(last));
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, rooms = chunk.len(), "anti-entropy sweep failed");
                    return;
                }
            }
        }
    }

    /// Which bus carries this node's envelopes (`local`, `redis`).
    pub fn bus_kind(&self) -> &'static str {
        self.bus.kind()
    }

    /// Sends a presence or typing push to the room's sessions on every node
    /// except those of `from`. Not stored, not ordered, best effort, and
    /// throttled per user per room ([`ephemeral`]): excess typing is dropped,
    /// a presence change inside the window is sent at its end.
    pub fn publish_ephemeral(&self, room: &str, from: &Arc<str>, frame: &ServerFrame) {
        let kind = match frame {
            ServerFrame::Typing { .. } => Kind::Typing,
            _ => Kind::Presence,
        };
        let room: Arc<str> = Arc::from(room);
        let bytes = Utf8Bytes::from(frame.to_json());
        match self.throttle.admit(&room, from, kind, &bytes) {
            Decision::Send => self.bus.publish(ephemeral_envelope(room, from, bytes)),
            Decision::Drop => {
                metrics::counter!("parley_ephemeral_dropped_total").increment(1);
            }
            Decision::Hold { flush_at, schedule } => {
                if schedule {
                    let (throttle, bus, from) =
                        (self.throttle.clone(), self.bus.clone(), from.clone());
                    tokio::spawn(async move {
                        tokio::time::sleep_until(flush_at).await;
                        if let Some(bytes) = throttle.take_held(&room, &from, kind) {
                            bus.publish(ephemeral_envelope(room, &from, bytes));
                        }
                    });
                }
            }
        }
    }

    /// Registers a connection for its user's direct messages.
    pub async fn add_session(&self, session: &SessionRef) {
        let key = user_key(&session.user);
        let first = {
            let mut users = lock(&self.users);
            let list = users.entry(key.clone()).or_default();
            list.push(session.clone());
            list.len() == 1
        };
        if first {
            self.bus.subscribe_user(&key).await;
        }
    }

    /// Forgets a connection: leaves every room it joined. Returns the rooms its
    /// user has left entirely on this node (for presence).
    pub async fn remove_session(&self, session: &SessionRef, rooms: &[Arc<str>]) -> Vec<Arc<str>> {
        let key = user_key(&session.user);
        let last = {
            let mut users = lock(&self.users);
            match users.get_mut(&key) {
                Some(list) => {
                    list.retain(|s| s.id != session.id);
                    let empty = list.is_empty();
                    if empty {
                        users.remove(&key);
                    }
                    empty
                }
                None => false,
            }
        };
        if last {
            self.bus.unsubscribe_user(&key).await;
        }
        rooms
            .iter()
            .filter(|room| self.leave_room(room, session) == Some(false))
            .cloned()
            .collect()
    }

    /// Subscribes a session to a room in the *joining* state: live messages
    /// are parked until [`Hub::activate`]. Waits until the room's delivery
    /// task is ready; false if it did not get ready in time (storage down).
    pub async fn join(&self, room: &str, session: &SessionRef) -> bool {
        let handle = {
            let mut rooms = lock(&self.rooms);
            let handle = rooms
                .entry(Arc::from(room))
                .or_insert_with_key(|name| {
                    let deps = RoomDeps {
                        store: self.store.clone(),
                        bus: self.bus.clone(),
                        presence: self.presence.clone(),
                        page: self.page,
                    };
                    Room::start(name.clone(), deps, self.outbound_queue)
                })
                .clone();
            // Inserted under the rooms lock, so a concurrent last leave cannot
            // remove the room between lookup and insert.
            handle.add_pending(session.id, session.user.clone(), session.outbox.clone());
            metrics::gauge!("parley_rooms_active").set(rooms.len() as f64);
            handle
        };
        if handle.wait_ready(READY_TIMEOUT).await {
            self.presence.announce(room, &session.user, true);
            true
        } else {
            self.leave(room, session.id);
            false
        }
    }

    /// See [`Room::activate`].
    pub fn activate(&self, room: &str, session: u64, after: u64) {
        if let Some(r) = self.room(room) {
            r.activate(session, after);
        }
    }

    /// Unsubscribes a session. `None` if it was not subscribed, else whether
    /// its user still has another session in the room on this node.
    pub fn leave(&self, room: &str, session: u64) -> Option<bool> {
        let mut rooms = lock(&self.rooms);
        let handle = rooms.get(room)?.clone();
        let (removed, empty, user_still_here) = handle.remove(session);
        if empty {
            rooms.remove(room);
            handle.send(RoomEvent::Stop);
            metrics::gauge!("parley_rooms_active").set(rooms.len() as f64);
        }
        removed.then_some(user_still_here)
    }

    pub fn room(&self, room: &str) -> Option<Arc<Room>> {
        lock(&self.rooms).get(room).cloned()
    }

    /// The room's members: across the cluster when the bus tracks them,
    /// merged with the users subscribed on this node.
    pub async fn members(&self, room: &str) -> Vec<String> {
        let mut members = self.room(room).map(|r| r.members()).unwrap_or_default();
        if let Some(cluster) = self.presence.members(room).await {
            members.extend(cluster);
            members.sort();
            members.dedup();
        }
        members
    }

    /// Unsubscribes a session and keeps the cluster-wide member list in step.
    /// `None` if it was not subscribed, else whether its user still has
    /// another session in the room on this node.
    pub fn leave_room(&self, room: &str, session: &SessionRef) -> Option<bool> {
        let still_here = self.leave(room, session.id)?;
        // One announcement per subscription, as [`Hub::join`] made one per
        // subscription: presence counts them, and lists the user until the
        // last is gone.
        self.presence.announce(room, &session.user, false);
        Some(still_here)
    }

    /// Whether `session` is subscribed to `room` (an event that took its
    /// user out of the room unsubscribed it).
    pub fn is_subscribed(&self, room: &str, session: u64) -> bool {
        self.room(room).is_some_and(|r| r.contains(session))
    }

    /// See [`Room::set_parting`].
    pub fn set_parting(&self, room: &str, session: u64, parting: bool) {
        if let Some(r) = self.room(room) {
            r.set_parting(session, parting);
        }
    }

    /// `user_key`'s access to `room` as this node caches it: only for a
    /// room live here, whose events keep the cache right ([`room`]).
    pub fn cached_access(&self, room: &str, user_key: &str) -> Option<Access> {
        self.room(room)?.cached_access(user_key)
    }

    /// Where a store read of access to `room` starts: `None` if the room
    /// is not live here (nothing will be cached).
    pub fn access_generation(&self, room: &str) -> Option<u64> {
        self.room(room).map(|r| r.access_generation())
    }

    /// Caches a store read of access begun at `generation`.
    pub fn remember_access(&self, room: &str, user_key: &str, access: Access, generation: u64) {
        if let Some(r) = self.room(room) {
            r.remember_access(user_key, access, generation);
        }
    }

    /// Whether `user` has a session in `room` on this node other than `except`.
    pub fn user_in_room(&self, room: &str, user: &str, except: u64) -> bool {
        self.room(room).is_some_and(|r| r.has_user(user, except))
    }

    /// The online member count of each of `rooms`, in order: across the
    /// fleet when presence has a view of it, never below the users
    /// subscribed on this node (whose announcements may not have reached
    /// the fleet view yet).
    pub async fn online_counts(&self, rooms: &[String]) -> Vec<u64> {
        let local: HashMap<String, u64> = {
            let held: Vec<Arc<Room>> = lock(&self.rooms).values().cloned().collect();
            held.iter()
                .map(|r| (r.name.to_string(), r.member_count() as u64))
                .collect()
        };
        let fleet = self.presence.counts(rooms).await;
        rooms
            .iter()
            .enumerate()
            .map(|(i, room)| {
                let here = local.get(room).copied().unwrap_or(0);
                let everywhere = fleet.as_ref().and_then(|f| f.get(i).copied()).unwrap_or(0);
                here.max(everywhere)
            })
            .collect()
    }

    /// Closes every connection of `user` on every node (this one at once, the
    /// others through the bus) with `last_words` and 4401. Best effort on
    /// the other nodes: see [`Event::Disconnect`].
    pub fn disconnect_user(&self, user: &str, last_words: Utf8Bytes) {
        self.bus.publish(Envelope {
            room: Arc::from(""),
            event: Event::Disconnect {
                user: user_key(&Arc::from(user)),
                frame: last_words,
            },
        });
    }

    /// Pushes `frame` to every connection of `user` on every node except
    /// `except` (a [`SessionRef::tag`]); see [`Event::ToUser`].
    pub fn push_to_user(&self, user: &str, room: &str, frame: Utf8Bytes, except: u64) {
        self.bus.publish(Envelope {
            room: Arc::from(room),
            event: Event::ToUser {
                user: user_key(&Arc::from(user)),
                frame,
                except,
            },
        });
    }

    fn close_user(&self, user: &str, last_words: &Utf8Bytes) {
        let users = lock(&self.users);
        for session in users.get(user).into_iter().flatten() {
            session.outbox.close_with_last_words(
                parley_protocol::close::UNAUTHORIZED,
                axum::extract::ws::Message::Text(last_words.clone()),
            );
        }
    }

    /// Pushes a DM to a user's connections that have not joined the DM room
    /// (those get it, in order, through the room).
    fn push_direct(&self, room: &str, user: &str, frame: &Utf8Bytes) {
        let joined = self.room(room);
        let users = lock(&self.users);
        for session in users.get(user).into_iter().flatten() {
            if !joined.as_ref().is_some_and(|r| r.contains(session.id)) {
                session.outbox.push(frame.clone());
            }
        }
    }
}

/// How the hub (and the bus's user channels) name a user for direct
/// messages: the case-folded name, as DM rooms do
/// ([`parley_protocol::dm_members`]), whatever spelling the user is shown by.
fn user_key(user: &Arc<str>) -> Arc<str> {
    if user.bytes().any(|b| b.is_ascii_uppercase()) {
        Arc::from(parley_protocol::fold_username(user))
    } else {
        user.clone()
    }
}

fn ephemeral_envelope(room: Arc<str>, from: &Arc<str>, frame: Utf8Bytes) -> Envelope {
    Envelope {
        room,
        event: Event::Ephemeral {
            from: from.clone(),
            frame,
        },
    }
}

impl Inbox for Hub {
    fn deliver(&self, envelope: Envelope) {
        match envelope.event {
            Event::Message { seq, frame } => {
                if let Some(room) = self.room(&envelope.room) {
                    room.send(RoomEvent::Message {
                        seq,
                        frame,
                        arrived: tokio::time::Instant::now(),
                    });
                }
            }
            Event::Direct { user, frame } => self.push_direct(&envelope.room, &user, &frame),
            Event::Disconnect { user, frame } => self.close_user(&user, &frame),
            Event::ToUser {
                user,
                frame,
                except,
            } => {
                let users = lock(&self.users);
                for session in users.get(&*user).into_iter().flatten() {
                    if session.tag != except {
                        session.outbox.push(frame.clone());
                    }
                }
            }
            Event::Ephemeral { from, frame } => {
                if let Some(room) = self.room(&envelope.room) {
                    room.deliver_ephemeral(&from, &frame);
                }
            }
        }
    }

    fn resync_all(&self) {
        self.sweep_now.notify_one();
    }
}

impl Hub {
    fn all_rooms(&self) -> Vec<Arc<Room>> {
        lock(&self.rooms).values().cloned().collect()
    }
}

/// The anti-entropy task: a sweep every `period`, or at once when the bus asks
/// (after a reconnect). Ends with the hub.
async fn anti_entropy(hub: std::sync::Weak<Hub>, now: Arc<Notify>, period: Duration) {
    let period = period.max(Duration::from_millis(10));
    loop {
        tokio::select! {
            _ = now.notified() => {}
            _ = tokio::time::sleep(period) => {}
        }
        // Hold the hub only while sweeping, so that it can be dropped.
        let Some(hub) = hub.upgrade() else { return };
        hub.sweep().await;
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        for room in lock(&self.rooms).values() {
            room.send(RoomEvent::Stop);
        }
    }
}

#[allow(dead_code)]
fn _assert_send_sync() {
    fn is<T: Send + Sync>() {}
    is::<Hub>();
    is::<Room>();
}
