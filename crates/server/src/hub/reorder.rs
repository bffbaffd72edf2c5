//! Putting a room's messages from the bus back in `seq` order.
//!
//! Two nodes commit seq 5 and 6 of a room one after the other, then publish
//! them independently: another node may well receive 6 first. Reading the
//! store at once for the "missing" 5 would cost a query under the room's
//! delivery task for a message already on its way; so a message that arrives
//! early is held for up to [`REORDER_WAIT`], and only a gap still open by
//! then is filled from the store (the publish was lost). Pure bookkeeping:
//! the room's task does the waiting and the reading.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

/// How long an early message waits for the ones before it before the gap is
/// read from the store.
pub const REORDER_WAIT: Duration = Duration::from_millis(50);
/// Early messages held at most; beyond, the gap is filled at once.
const MAX_HELD: usize = 1024;

pub struct Reorder<T> {
    /// The last seq delivered.
    cursor: u64,
    held: BTreeMap<u64, T>,
    /// When the oldest open gap was noticed.
    gap_since: Option<Instant>,
}

impl<T> Reorder<T> {
    pub fn new(cursor: u64) -> Self {
        Reorder {
            cursor,
            held: BTreeMap::new(),
            gap_since: None,
        }
    }

    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    /// A message from the bus: returns what can be delivered now, in order
    /// (nothing for a duplicate or an early message, which is held).
    pub fn offer(&mut self, seq: u64, item: T, now: Instant) -> Vec<(u64, T)> {
        if seq <= self.cursor {
            return Vec::new();
        }
        self.held.insert(seq, item);
        let ready = self.release();
        if !self.held.is_empty() && self.gap_since.is_none() {
            self.gap_since = Some(now);
        }
        ready
    }

    /// When the open gap must be filled from the store, if there is one.
    pub fn deadline(&self) -> Option<Instant> {
        let since = self.gap_since?;
        if self.held.len() >= MAX_HELD {
            return Some(since);
        }
        Some(since + REORDER_WAIT)
    }

    /// The last seq of the open gap (the one before the first held message).
    pub fn gap_end(&self) -> Option<u64> {
        self.held.keys().next().map(|first| first - 1)
    }

    /// Everything up to `seq` was delivered from elsewhere (the store):
    /// returns the held messages that now follow on, in order.
    pub fn advance_to(&mut self, seq: u64) -> Vec<(u64, T)> {
        if seq > self.cursor {
            self.cursor = seq;
            self.held = self.held.split_off(&(seq + 1));
        }
        self.release()
    }

    /// A store read failed: wait another [`REORDER_WAIT`] before retrying.
    pub fn retry_later(&mut self, now: Instant) {
        if !self.held.is_empty() {
            self.gap_since = Some(now);
        }
    }

    fn release(&mut self) -> Vec<(u64, T)> {
        let mut ready = Vec::new();
        while let Some(entry) = self.held.first_entry() {
            if *entry.key() != self.cursor + 1 {
                break;
            }
            self.cursor += 1;
            ready.push((self.cursor, entry.remove()));
        }
        if self.held.is_empty() {
            self.gap_since = None;
        }
        ready
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seqs(v: Vec<(u64, &str)>) -> Vec<u64> {
        v.into_iter().map(|(s, _)| s).collect()
    }

    #[test]
    fn in_order_messages_pass_and_duplicates_are_dropped() {
        let now = Instant::now();
        let mut r = Reorder::new(4);
        assert_eq!(seqs(r.offer(5, "a", now)), vec![5]);
        assert_eq!(seqs(r.offer(5, "a", now)), Vec::<u64>::new());
        assert_eq!(seqs(r.offer(3, "old", now)), Vec::<u64>::new());
        assert_eq!(r.deadline(), None);
        assert_eq!(r.cursor(), 5);
    }

    #[test]
    fn an_early_message_waits_for_the_one_before_it() {
        let now = Instant::now();
        let mut r = Reorder::new(4);
        assert!(r.offer(6, "b", now).is_empty());
        assert!(r.offer(7, "c", now).is_empty());
        assert_eq!(r.deadline(), Some(now + REORDER_WAIT));
        assert_eq!(r.gap_end(), Some(5));
        assert_eq!(seqs(r.offer(5, "a", now)), vec![5, 6, 7]);
        assert_eq!(r.deadline(), None, "no gap left");
    }

    #[test]
    fn a_gap_filled_from_the_store_releases_what_follows() {
        let now = Instant::now();
        let mut r = Reorder::new(0);
        assert!(r.offer(3, "c", now).is_empty());
        assert!(r.offer(5, "e", now).is_empty());
        // The store delivered 1..=2: 3 follows; 4 is still missing.
        assert_eq!(seqs(r.advance_to(2)), vec![3]);
        assert_eq!(r.gap_end(), Some(4));
        // The store read up to 5 (including the held one): nothing is repeated.
        assert_eq!(seqs(r.advance_to(5)), Vec::<u64>::new());
        assert_eq!(r.cursor(), 5);
        assert_eq!(r.deadline(), None);
        assert!(r.offer(5, "e", now).is_empty(), "already delivered");
    }

    #[test]
    fn too_many_held_messages_fill_at_once() {
        let now = Instant::now();
        let mut r = Reorder::new(0);
        for seq in 2..(2 + MAX_HELD as u64) {
            assert!(r.offer(seq, "x", now).is_empty());
        }
        assert_eq!(r.deadline(), Some(now));
    }
}
