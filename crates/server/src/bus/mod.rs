//! The bus: node ↔ node fan-out of stored messages and ephemeral events.
//!
//! Every node publishes what it stored and receives what any node stored, for
//! the rooms its sessions have joined. The bus only makes delivery *fast*: it
//! may lose envelopes (Redis Pub/Sub is at-most-once), so correctness never
//! depends on it — the hub fills gaps from the store (invariants 3 and 8).
//!
//! Who is in a room across the fleet is not the bus's business: that is
//! [`crate::presence`], whose Redis implementation shares the connection.
//!
//! This module must not know about sockets or storage.

pub mod local;
pub mod redis;

use std::sync::{Arc, Weak};

use async_trait::async_trait;
use axum::extract::ws::Utf8Bytes;

/// What travels on the bus.
#[derive(Debug, Clone)]
pub struct Envelope {
    pub room: Arc<str>,
    pub event: Event,
}

#[derive(Debug, Clone)]
pub enum Event {
    /// A stored message: `frame` is its `message` push, serialised once by
    /// the node that stored it and forwarded as is to every receiver.
    Message { seq: u64, frame: Utf8Bytes },
    /// A stored direct message, for the connections of `user` that have not
    /// joined its DM room (those that have get it, in order, as a `Message`).
    /// Best effort: a client that must not miss DMs joins the DM room.
    Direct { user: Arc<str>, frame: Utf8Bytes },
    /// Presence and typing: not stored, not ordered, best effort. Delivered to
    /// the room's joined sessions except those of `from`.
    Ephemeral { from: Arc<str>, frame: Utf8Bytes },
    /// Close every connection of `user` (a user key) on every node, with
    /// `frame` as last words and 4401: the server API's disconnect. Best
    /// effort like `Direct` (a node that misses it while Redis is away keeps
    /// the connections; revocation is the guaranteed way). The envelope's
    /// room is empty.
    Disconnect { user: Arc<str>, frame: Utf8Bytes },
    /// A frame for every connection of `user` (a user key) on every node
    /// but the one whose [`SessionRef::tag`](crate::hub::SessionRef) is
    /// `except` (the connection that caused it): read positions reaching
    /// the user's other devices. Best effort like `Direct`: a connection
    /// that misses it catches up at its next join. The room is the one it
    /// concerns.
    ToUser {
        user: Arc<str>,
        frame: Utf8Bytes,
        except: u64,
    },
}

impl Envelope {
    /// The envelopes that announce one stored message: the room's, plus one
    /// per participant of a DM room.
    pub fn for_message(room: &str, seq: u64, frame: Utf8Bytes) -> Vec<Envelope> {
        let room: Arc<str> = Arc::from(room);
        let mut out = Vec::with_capacity(3);
        if let Some((a, b)) = parley_protocol::dm_members(&room) {
            for user in [a, b] {
                out.push(Envelope {
                    room: room.clone(),
                    event: Event::Direct {
                        user: Arc::from(user),
                        frame: frame.clone(),
                    },
                });
            }
        }
        out.push(Envelope {
            room,
            event: Event::Message { seq, frame },
        });
        out
    }
}

/// Where a bus hands what it receives (the hub).
pub trait Inbox: Send + Sync + 'static {
    fn deliver(&self, envelope: Envelope);

    /// The bus (re)connected after envelopes may have been lost: every
    /// joined room must be checked against the store.
    fn resync_all(&self);
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("bus unavailable: {0}")]
pub struct BusError(pub String);

/// Guarantees a bus gives:
/// - [`Bus::publish`] never blocks and never fails the caller: a bus that
///   cannot reach its peers drops the envelope (the store has the message).
/// - Envelopes published by one node arrive at each subscribed node in the
///   order that node published them, unless lost.
/// - After [`Bus::subscribe_room`] returns `Ok`, envelopes published for that
///   room are received (until lost or unsubscribed).
/// - [`Bus::lossy`] says whether envelopes may be lost; the hub then runs a
///   periodic anti-entropy check against the store.
#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Registers the receiver of incoming envelopes. Held weakly: the hub owns the bus.
    fn set_inbox(&self, inbox: Weak<dyn Inbox>);

    /// Hands an envelope to every subscribed node, this one included.
    fn publish(&self, envelope: Envelope);

    /// Starts receiving a room's envelopes on this node. Calls are counted:
    /// each needs its own [`Bus::unsubscribe_room`].
    async fn subscribe_room(&self, room: &str) -> Result<(), BusError>;

    /// Stops receiving a room's envelopes on this node.
    async fn unsubscribe_room(&self, room: &str);

    /// Starts receiving the direct messages of a user connected to this node
    /// (counted, like rooms).
    async fn subscribe_user(&self, _user: &str) {}

    /// Stops receiving a user's direct messages.
    async fn unsubscribe_user(&self, _user: &str) {}

    /// Whether envelopes can be lost, so that the hub must check the store periodically.
    fn lossy(&self) -> bool;

    /// A short description for logs and metrics (`local`, `redis`).
    fn kind(&self) -> &'static str;
}
