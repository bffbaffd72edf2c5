//! Presence: which users are in a room across the whole fleet, for
//! `joined.members`.
//!
//! The hub knows the users of its own sessions; a [`Presence`] adds those of
//! the other nodes. It is ephemeral and best effort by design — nothing here
//! is stored and nothing may block a join or a leave:
//! - [`Presence::announce`] never waits and never fails the caller; an
//!   announcement that cannot reach the shared state now is applied by the
//!   next refresh (each implementation refreshes its node's entries).
//! - [`Presence::members`] may be stale by up to one refresh period, and the
//!   entries of a node that died without leaving disappear on their own
//!   within a bounded time (the implementation's TTL).
//! - `None` from [`Presence::members`] means "no fleet view right now" (a
//!   single node, or the shared state is unreachable): the hub's local list
//!   is then the answer.
//!
//! A single node uses [`LocalPresence`], which tracks nothing: its hub's
//! list is the whole truth. A fleet uses the Redis one
//! ([`crate::bus::redis::RedisPresence`]), which shares the bus's connection.
//!
//! This module must not know about sockets, sessions or storage.

use async_trait::async_trait;

#[async_trait]
pub trait Presence: Send + Sync + 'static {
    /// Records that `user` has (or no longer has) a session in `room` on
    /// this node. Calls are counted per (room, user): the user is listed
    /// until as many `false` as `true` were announced.
    fn announce(&self, room: &str, user: &str, present: bool);

    /// The room's members across the fleet, sorted and without duplicates;
    /// `None` when this presence has no fleet view (see the module docs).
    async fn members(&self, room: &str) -> Option<Vec<String>>;

    /// How many distinct users each of `rooms` has across the fleet, in
    /// the order given (the room list's `members_online`); `None` as for
    /// [`Presence::members`].
    async fn counts(&self, rooms: &[String]) -> Option<Vec<u64>>;
}

/// A single node's presence: nothing beyond the hub's own list.
#[derive(Debug, Default)]
pub struct LocalPresence;

#[async_trait]
impl Presence for LocalPresence {
    fn announce(&self, _room: &str, _user: &str, _present: bool) {}

    async fn members(&self, _room: &str) -> Option<Vec<String>> {
        None
    }

    async fn counts(&self, _rooms: &[String]) -> Option<Vec<u64>> {
        None
    }
}
