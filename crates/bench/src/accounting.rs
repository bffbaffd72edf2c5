//! Exact loss accounting.
//!
//! It keys on `(room, seq)` of every room event, whatever its type: a
//! message, a reply, an edit, a delete and a reaction each take the room's
//! next `seq` and are pushed to every member alike (protocol 1.1 §1), so
//! "acked" and "received" below mean any event; the per-type counts live
//! in [`crate::mix`].
//!
//! Every room keeps the set of `seq`s whose request was acked; every member
//! keeps the set of `seq`s it received above its *base* (the room's
//! `last_seq` when it first joined). After the run:
//!
//! - a member *expects* every acked seq above its base — and, if it left
//!   for good (a `chat` connection that dropped), up to its *end*: the
//!   highest seq acked when it left. A `resume` member never leaves: it
//!   reconnects and resumes with `since`, so it expects everything.
//! - *lost* = expected but never received; *unexpected* = received but not
//!   expected (e.g. stored by the node but never acked to the bench).
//!
//! So `expected` is, for each acked message, the number of members that
//! were joined when it was acked, and `received = expected - lost + unexpected`.

use serde::{Deserialize, Serialize};

/// A set of sequence numbers above a base, as a growable bitmap.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeqSet {
    base: u64,
    words: Vec<u64>,
    len: u64,
}

impl SeqSet {
    /// An empty set of seqs `> base`.
    pub fn above(base: u64) -> Self {
        Self {
            base,
            words: Vec::new(),
            len: 0,
        }
    }

    pub fn base(&self) -> u64 {
        self.base
    }

    /// Adds `seq`; false if it was already there or is not above the base.
    pub fn insert(&mut self, seq: u64) -> bool {
        if seq <= self.base {
            return false;
        }
        let bit = seq - self.base - 1;
        let word = (bit / 64) as usize;
        if word >= self.words.len() {
            self.words.resize(word + 1, 0);
        }
        let mask = 1u64 << (bit % 64);
        if self.words[word] & mask != 0 {
            return false;
        }
        self.words[word] |= mask;
        self.len += 1;
        true
    }

    pub fn contains(&self, seq: u64) -> bool {
        if seq <= self.base {
            return false;
        }
        let bit = seq - self.base - 1;
        self.words
            .get((bit / 64) as usize)
            .is_some_and(|w| w & (1u64 << (bit % 64)) != 0)
    }

    /// Number of seqs in the set.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The largest seq the set could hold without growing (an upper bound
    /// of its largest member).
    pub fn upper_bound(&self) -> u64 {
        self.base + self.words.len() as u64 * 64
    }

    /// The members in increasing order.
    pub fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        self.words.iter().enumerate().flat_map(move |(i, &w)| {
            let base = self.base + 1 + i as u64 * 64;
            (0..64u64)
                .filter(move |b| w & (1u64 << b) != 0)
                .map(move |b| base + b)
        })
    }
}

/// What one member of a room received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberLog {
    /// Index of the room.
    pub room: usize,
    /// Seqs received above the room's `last_seq` at the first join.
    pub got: SeqSet,
    /// Every seq in `base+1 ..= contiguous` was received.
    pub contiguous: u64,
    /// Largest seq received.
    pub max_seen: u64,
    /// Set when the member left for good: the highest seq acked by then.
    pub end: Option<u64>,
}

impl MemberLog {
    pub fn new(room: usize, base: u64) -> Self {
        Self {
            room,
            got: SeqSet::above(base),
            contiguous: base,
            max_seen: base,
            end: None,
        }
    }

    /// Records a received seq; false if it is a repeat (or at/below the base).
    pub fn receive(&mut self, seq: u64) -> bool {
        if !self.got.insert(seq) {
            return false;
        }
        self.max_seen = self.max_seen.max(seq);
        while self.got.contains(self.contiguous + 1) {
            self.contiguous += 1;
        }
        true
    }
}

/// Deliveries of messages to members, summed over members.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deliveries {
    /// For each acked message, the members joined when it was acked.
    pub expected: u64,
    /// Expected deliveries that happened.
    pub delivered: u64,
    /// Expected deliveries that never happened.
    pub lost: u64,
    /// Received messages that were not expected (never acked, or after the
    /// member left).
    pub unexpected: u64,
}

impl Deliveries {
    pub fn add(&mut self, other: &Deliveries) {
        self.expected += other.expected;
        self.delivered += other.delivered;
        self.lost += other.lost;
        self.unexpected += other.unexpected;
    }
}

/// Loss accounting of one member against its room's acked seqs.
pub fn account(acked: &SeqSet, member: &MemberLog) -> Deliveries {
    let base = member.got.base();
    let end = member.end.unwrap_or(u64::MAX);
    let mut d = Deliveries::default();
    for seq in acked.iter().filter(|&s| s > base && s <= end) {
        d.expected += 1;
        if member.got.contains(seq) {
            d.delivered += 1;
        } else {
            d.lost += 1;
        }
    }
    d.unexpected = member.got.len() - d.delivered;
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(base: u64, seqs: &[u64]) -> SeqSet {
        let mut s = SeqSet::above(base);
        for &q in seqs {
            s.insert(q);
        }
        s
    }

    #[test]
    fn seqset_inserts_once_and_iterates_in_order() {
        let mut s = SeqSet::above(10);
        assert!(!s.insert(10), "the base is not above the base");
        assert!(s.insert(11));
        assert!(s.insert(200));
        assert!(!s.insert(200));
        assert!(s.insert(75));
        assert_eq!(s.len(), 3);
        assert!(s.contains(75) && !s.contains(76) && !s.contains(5));
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![11, 75, 200]);
        assert!(s.upper_bound() >= 200);
    }

    #[test]
    fn member_tracks_contiguous_prefix() {
        let mut m = MemberLog::new(0, 5);
        assert!(m.receive(6));
        assert!(m.receive(8));
        assert_eq!(m.contiguous, 6);
        assert!(m.receive(7));
        assert_eq!(m.contiguous, 8);
        assert_eq!(m.max_seen, 8);
        assert!(!m.receive(7), "a repeat");
        assert!(!m.receive(3), "below the base");
    }

    #[test]
    fn everything_received_is_no_loss() {
        let acked = set(0, &[1, 2, 3, 4]);
        let mut m = MemberLog::new(0, 0);
        for s in 1..=4 {
            m.receive(s);
        }
        let d = account(&acked, &m);
        assert_eq!(
            d,
            Deliveries {
                expected: 4,
                delivered: 4,
                lost: 0,
                unexpected: 0
            }
        );
    }

    #[test]
    fn only_acked_seqs_above_the_base_are_expected() {
        // Joined when the room was at 2; seq 5 was stored but never acked.
        let acked = set(0, &[1, 2, 3, 4, 6]);
        let mut m = MemberLog::new(0, 2);
        for s in [3, 5, 6] {
            m.receive(s);
        }
        let d = account(&acked, &m);
        assert_eq!(d.expected, 3, "3, 4, 6");
        assert_eq!(d.delivered, 2);
        assert_eq!(d.lost, 1, "4 never arrived");
        assert_eq!(d.unexpected, 1, "5 was never acked");
    }

    #[test]
    fn a_member_that_left_expects_nothing_after_it_left() {
        let acked = set(0, &[1, 2, 3, 4, 5]);
        let mut m = MemberLog::new(0, 0);
        m.receive(1);
        m.receive(2);
        m.end = Some(3);
        let d = account(&acked, &m);
        assert_eq!((d.expected, d.delivered, d.lost), (3, 2, 1));
    }

    #[test]
    fn deliveries_add_up() {
        let mut a = Deliveries {
            expected: 1,
            delivered: 2,
            lost: 3,
            unexpected: 4,
        };
        a.add(&a.clone());
        assert_eq!(
            (a.expected, a.delivered, a.lost, a.unexpected),
            (2, 4, 6, 8)
        );
    }
}
