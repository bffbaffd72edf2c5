//! The hub: which local sessions joined which room, and delivery to them.
//!
//! The hub is the bus's [`Inbox`]: every envelope a node receives passes
//! through [`Hub::deliver`]. Each stored message arrives with its frame
//! already serialised, and the same bytes are queued for every receiver
//! (serialise once per message, not once per receiver). Ordering and gap
//! filling per room live in [`room`].
//!
//! The hub does not parse frames, check permissions or write to the store.

pub mod room;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use parley_protocol::ServerFrame;

use crate::bus::{Bus, Envelope, Event, Inbox};
use crate::session::outbox::Outbox;
use crate::store::{Store, StoredMessage};
use room::{Room, RoomDeps, RoomEvent};

/// Serialises a stored message as its `message` push.
pub fn encode_message(message: &StoredMessage) -> Utf8Bytes {
    Utf8Bytes::from(ServerFrame::Message(message.to_wire()).to_json())
}

/// A local session as the hub sees it.
#[derive(Clone, Debug)]
pub struct SessionRef {
    pub id: u64,
    pub user: Arc<str>,
    pub outbox: Outbox,
}

pub struct Hub {
    rooms: Mutex<HashMap<Arc<str>, Arc<Room>>>,
    users: Mutex<HashMap<Arc<str>, Vec<SessionRef>>>,
    store: Arc<dyn Store>,
    bus: Arc<dyn Bus>,
    anti_entropy: Option<Duration>,
    page: u32,
    pending_cap: usize,
}

/// How long a join waits for a new room's delivery task to be ready.
const READY_TIMEOUT: Duration = Duration::from_secs(5);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Hub {
    pub fn new(
        store: Arc<dyn Store>,
        bus: Arc<dyn Bus>,
        anti_entropy: Duration,
        page: u32,
        pending_cap: usize,
    ) -> Arc<Hub> {
        let anti_entropy = bus.lossy().then_some(anti_entropy);
        let hub = Arc::new(Hub {
            rooms: Mutex::new(HashMap::new()),
            users: Mutex::new(HashMap::new()),
            store,
            bus: bus.clone(),
            anti_entropy,
            page,
            pending_cap,
        });
        let inbox: Arc<dyn Inbox> = hub.clone();
        bus.set_inbox(Arc::downgrade(&inbox));
        hub
    }

    pub fn bus(&self) -> &Arc<dyn Bus> {
        &self.bus
    }

    /// Registers a connection for its user's direct messages.
    pub fn add_session(&self, session: &SessionRef) {
        lock(&self.users)
            .entry(session.user.clone())
            .or_default()
            .push(session.clone());
    }

    /// Forgets a connection: leaves every room it joined. Returns the rooms its
    /// user has left entirely on this node (for presence).
    pub fn remove_session(&self, session: &SessionRef, rooms: &[Arc<str>]) -> Vec<Arc<str>> {
        {
            let mut users = lock(&self.users);
            if let Some(list) = users.get_mut(&session.user) {
                list.retain(|s| s.id != session.id);
                if list.is_empty() {
                    users.remove(&session.user);
                }
            }
        }
        rooms
            .iter()
            .filter(|room| self.leave(room, session.id) == Some(false))
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
                        anti_entropy: self.anti_entropy,
                        page: self.page,
                    };
                    Room::start(name.clone(), deps, self.pending_cap)
                })
                .clone();
            // Inserted under the rooms lock, so a concurrent last leave cannot
            // remove the room between lookup and insert.
            handle.add_pending(session.id, session.user.clone(), session.outbox.clone());
            metrics::gauge!("parley_rooms_active").set(rooms.len() as f64);
            handle
        };
        if handle.wait_ready(READY_TIMEOUT).await {
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

    /// Users subscribed to the room on this node.
    pub fn members(&self, room: &str) -> Vec<String> {
        self.room(room).map(|r| r.members()).unwrap_or_default()
    }

    /// Whether `user` has a session in `room` on this node other than `except`.
    pub fn user_in_room(&self, room: &str, user: &str, except: u64) -> bool {
        self.room(room).is_some_and(|r| r.has_user(user, except))
    }

    /// Online member counts of the rooms with local subscribers.
    pub fn online_counts(&self) -> HashMap<String, u64> {
        let rooms: Vec<Arc<Room>> = lock(&self.rooms).values().cloned().collect();
        rooms
            .iter()
            .map(|r| (r.name.to_string(), r.member_count() as u64))
            .collect()
    }

    /// Pushes a DM to its two users' connections that have not joined the
    /// DM room (those get it, in order, through the room).
    fn push_direct(&self, room: &str, frame: &Utf8Bytes) {
        let Some((a, b)) = parley_protocol::dm_members(room) else {
            return;
        };
        let joined = self.room(room);
        let users = lock(&self.users);
        for user in [a, b] {
            for session in users.get(user).into_iter().flatten() {
                if !joined.as_ref().is_some_and(|r| r.contains(session.id)) {
                    session.outbox.push(frame.clone());
                }
            }
        }
    }
}

impl Inbox for Hub {
    fn deliver(&self, envelope: Envelope) {
        match envelope.event {
            Event::Message { seq, frame } => {
                if parley_protocol::is_dm_room(&envelope.room) {
                    self.push_direct(&envelope.room, &frame);
                }
                if let Some(room) = self.room(&envelope.room) {
                    room.send(RoomEvent::Message { seq, frame });
                }
            }
            Event::Ephemeral { from, frame } => {
                if let Some(room) = self.room(&envelope.room) {
                    room.deliver_ephemeral(&from, &frame);
                }
            }
        }
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
