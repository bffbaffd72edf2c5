//! Throttling of ephemeral pushes (typing, presence) per user per room, so
//! that one member can never flood the others' queues: a client sending
//! `typing` in a tight loop used to fan out tens of thousands of frames a
//! second and push every member that did not read for a moment into 4408.
//!
//! - **Typing**: at most one per user per room per [`WINDOW`]; the excess is
//!   dropped silently (an indicator that repeats anyway loses nothing).
//! - **Presence** (join/leave churn): at most one per user per room per
//!   window as well, but the *latest* state is never lost: a change inside
//!   the window is held and sent when the window ends (trailing edge), so
//!   member lists end up right however fast someone rejoins.
//!
//! The decision is a pure function of the slot and the time ([`decide`]);
//! the hub publishes what it says.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use tokio::time::Instant;

/// One push per user per room per window, per kind.
pub const WINDOW: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Typing,
    Presence,
}

/// What to do with one ephemeral push.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// Publish it now.
    Send,
    /// Drop it (typing inside the window).
    Drop,
    /// Hold it as the latest state; publish it at the given instant unless a
    /// flush is already scheduled (then the held state is replaced).
    Hold { flush_at: Instant, schedule: bool },
}

#[derive(Debug)]
struct Slot {
    last_sent: Instant,
    /// The latest presence state held for the window's end.
    held: Option<Utf8Bytes>,
}

/// The decision for a push of `kind` at `now`, given when this (room, user,
/// kind) last went out and whether a state is already held.
pub fn decide(kind: Kind, last_sent: Option<Instant>, holding: bool, now: Instant) -> Decision {
    match last_sent {
        Some(last) if now < last + WINDOW => match kind {
            Kind::Typing => Decision::Drop,
            Kind::Presence => Decision::Hold {
                flush_at: last + WINDOW,
                schedule: !holding,
            },
        },
        _ => Decision::Send,
    }
}

type Key = (Arc<str>, Arc<str>, Kind);

/// The throttle's state: one slot per (room, user, kind) seen recently.
#[derive(Default)]
pub struct Throttle {
    slots: Mutex<HashMap<Key, Slot>>,
}

/// Slots kept before stale ones are pruned.
const PRUNE_AT: usize = 4096;

impl Throttle {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Slot>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Decides for one push and records it: a `Send` marks the slot sent
    /// now, a `Hold` keeps `frame` as the state to flush.
    pub fn admit(
        &self,
        room: &Arc<str>,
        user: &Arc<str>,
        kind: Kind,
        frame: &Utf8Bytes,
    ) -> Decision {
        let now = Instant::now();
        let mut slots = self.lock();
        if slots.len() >= PRUNE_AT {
            slots.retain(|_, s| s.held.is_some() || now < s.last_sent + WINDOW);
        }
        let key = (room.clone(), user.clone(), kind);
        let slot = slots.get(&key);
        let decision = decide(
            kind,
            slot.map(|s| s.last_sent),
            slot.is_some_and(|s| s.held.is_some()),
            now,
        );
        match &decision {
            Decision::Send => {
                slots.insert(
                    key,
                    Slot {
                        last_sent: now,
                        held: None,
                    },
                );
            }
            Decision::Hold { .. } => {
                if let Some(slot) = slots.get_mut(&key) {
                    slot.held = Some(frame.clone());
                }
            }
            Decision::Drop => {}
        }
        decision
    }

    /// At the end of a window: the held state to publish, if any (the slot
    /// counts as sent now).
    pub fn take_held(&self, room: &Arc<str>, user: &Arc<str>, kind: Kind) -> Option<Utf8Bytes> {
        let mut slots = self.lock();
        let slot = slots.get_mut(&(room.clone(), user.clone(), kind))?;
        let held = slot.held.take()?;
        slot.last_sent = Instant::now();
        Some(held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_push_goes_out_and_typing_inside_the_window_is_dropped() {
        let now = Instant::now();
        assert_eq!(decide(Kind::Typing, None, false, now), Decision::Send);
        assert_eq!(
            decide(
                Kind::Typing,
                Some(now),
                false,
                now + Duration::from_millis(999)
            ),
            Decision::Drop
        );
        assert_eq!(
            decide(Kind::Typing, Some(now), false, now + WINDOW),
            Decision::Send
        );
    }

    #[test]
    fn presence_inside_the_window_is_held_for_its_end_and_scheduled_once() {
        let now = Instant::now();
        let later = now + Duration::from_millis(300);
        assert_eq!(
            decide(Kind::Presence, Some(now), false, later),
            Decision::Hold {
                flush_at: now + WINDOW,
                schedule: true
            }
        );
        assert_eq!(
            decide(Kind::Presence, Some(now), true, later),
            Decision::Hold {
                flush_at: now + WINDOW,
                schedule: false
            }
        );
    }

    #[test]
    fn a_flood_sends_one_per_window_and_keeps_the_latest_presence() {
        let t = Throttle::default();
        let (room, user): (Arc<str>, Arc<str>) = (Arc::from("general"), Arc::from("mallory"));
        let frame = |s: &str| Utf8Bytes::from(s.to_string());
        let mut sent = 0;
        for i in 0..10_000 {
            if t.admit(&room, &user, Kind::Typing, &frame("t")) == Decision::Send {
                sent += 1;
            }
            let state = if i % 2 == 0 { "joined" } else { "left" };
            t.admit(&room, &user, Kind::Presence, &frame(state));
        }
        assert_eq!(sent, 1, "one typing push per window");
        // The last of the churn was a leave: that is what the flush sends.
        assert_eq!(
            t.take_held(&room, &user, Kind::Presence).as_deref(),
            Some("left")
        );
        assert_eq!(t.take_held(&room, &user, Kind::Presence), None);
        // Another user is not throttled by mallory.
        let other: Arc<str> = Arc::from("alice");
        assert_eq!(
            t.admit(&room, &other, Kind::Typing, &frame("t")),
            Decision::Send
        );
    }
}
