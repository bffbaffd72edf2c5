//! The operation mix (`--mix edit=5,react=10,delete=1,reply=5`): which
//! share of a sender's operations are room events other than plain
//! messages, and the per-type counts of a run.
//!
//! Every operation, whatever its type, takes the room's next `seq` and is
//! pushed to every member (protocol 1.1 §1), so the loss accounting
//! ([`crate::accounting`]) covers them all by `(room, seq)`; this module
//! only says what to send and counts by type what was sent, acked and
//! received.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// The type of one operation (and of the event it makes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A plain `send`.
    Message,
    /// A `send` with `reply_to`.
    Reply,
    Edit,
    Delete,
    React,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::Message,
        Kind::Reply,
        Kind::Edit,
        Kind::Delete,
        Kind::React,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Message => "message",
            Kind::Reply => "reply",
            Kind::Edit => "edit",
            Kind::Delete => "delete",
            Kind::React => "react",
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    /// The kind of a room event by its frame `type` (a `message` with
    /// `reply_to` is a reply).
    pub fn of_event(frame_type: &str, reply_to: Option<u64>) -> Option<Kind> {
        match frame_type {
            "message" if reply_to.is_some() => Some(Kind::Reply),
            "message" => Some(Kind::Message),
            "edited" => Some(Kind::Edit),
            "deleted" => Some(Kind::Delete),
            "reaction" => Some(Kind::React),
            _ => None,
        }
    }
}

/// Percent of operations per kind; plain messages are the rest.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Mix {
    percent: [u8; 5],
}

impl Mix {
    /// Parses `edit=5,react=10,delete=1,reply=5` (any subset, any order;
    /// `none` or empty: plain messages only). The shares add up to at
    /// most 100.
    pub fn parse(text: &str) -> Result<Mix, String> {
        let text = text.trim();
        let mut mix = Mix::default();
        if text.is_empty() || text == "none" {
            return Ok(mix);
        }
        let mut seen = Vec::new();
        for part in text.split(',') {
            let (name, value) = part
                .split_once('=')
                .ok_or_else(|| format!("{part:?}: give KIND=PERCENT, e.g. edit=5"))?;
            let kind = match name.trim() {
                "reply" => Kind::Reply,
                "edit" => Kind::Edit,
                "delete" => Kind::Delete,
                "react" => Kind::React,
                other => {
                    return Err(format!(
                        "{other:?} is not an operation of the mix (reply, edit, delete, react)"
                    ));
                }
            };
            if seen.contains(&kind) {
                return Err(format!("{} is given twice", kind.name()));
            }
            seen.push(kind);
            let percent: u8 = value
                .trim()
                .parse()
                .ok()
                .filter(|p| *p <= 100)
                .ok_or_else(|| format!("{value:?} is not a percentage (0–100)"))?;
            mix.percent[kind.index()] = percent;
        }
        let total: u32 = mix.percent.iter().map(|&p| u32::from(p)).sum();
        if total > 100 {
            return Err(format!("the mix adds up to {total}%, over 100%"));
        }
        Ok(mix)
    }

    /// Whether every operation is a plain message.
    pub fn is_none(&self) -> bool {
        self.percent.iter().all(|&p| p == 0)
    }

    pub fn percent(&self, kind: Kind) -> u8 {
        self.percent[kind.index()]
    }

    /// The kind of the operation whose roll (0..100) this is.
    pub fn choose(&self, roll: u32) -> Kind {
        let mut upto = 0u32;
        for kind in [Kind::Reply, Kind::Edit, Kind::Delete, Kind::React] {
            upto += u32::from(self.percent(kind));
            if roll < upto {
                return kind;
            }
        }
        Kind::Message
    }

    /// The flag's text, as parsed (for the command line of a worker).
    pub fn flag(&self) -> String {
        let parts: Vec<String> = [Kind::Reply, Kind::Edit, Kind::Delete, Kind::React]
            .into_iter()
            .filter(|&k| self.percent(k) > 0)
            .map(|k| format!("{}={}", k.name(), self.percent(k)))
            .collect();
        if parts.is_empty() {
            "none".into()
        } else {
            parts.join(",")
        }
    }
}

/// The counts of one kind of operation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KindCounts {
    /// Operations sent (a resend is not counted again).
    pub sent: u64,
    /// Distinct events acked (stored).
    pub acked: u64,
    /// Distinct deliveries to members (live or from history).
    pub received: u64,
}

impl KindCounts {
    pub fn add(&mut self, other: &KindCounts) {
        self.sent += other.sent;
        self.acked += other.acked;
        self.received += other.received;
    }
}

/// Live per-kind counters shared by the connection tasks of one process.
#[derive(Debug, Default)]
pub struct KindCounters {
    sent: [AtomicU64; 5],
    acked: [AtomicU64; 5],
    received: [AtomicU64; 5],
}

impl KindCounters {
    pub fn sent(&self, kind: Kind) {
        self.sent[kind.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub fn acked(&self, kind: Kind) {
        self.acked[kind.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub fn received(&self, kind: Kind) {
        self.received[kind.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// The counts by kind name; kinds with nothing counted are left out.
    pub fn snapshot(&self) -> BTreeMap<String, KindCounts> {
        Kind::ALL
            .into_iter()
            .map(|k| {
                let i = k.index();
                let counts = KindCounts {
                    sent: self.sent[i].load(Ordering::Relaxed),
                    acked: self.acked[i].load(Ordering::Relaxed),
                    received: self.received[i].load(Ordering::Relaxed),
                };
                (k.name().to_string(), counts)
            })
            .filter(|(_, c)| *c != KindCounts::default())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixes_parse_and_choose_by_their_shares() {
        let mix = Mix::parse("edit=5,react=10,delete=1,reply=5").unwrap();
        assert_eq!(mix.percent(Kind::Edit), 5);
        assert_eq!(mix.percent(Kind::Message), 0);
        let mut got = BTreeMap::new();
        for roll in 0..100 {
            *got.entry(mix.choose(roll)).or_insert(0) += 1;
        }
        assert_eq!(got[&Kind::Reply], 5);
        assert_eq!(got[&Kind::Edit], 5);
        assert_eq!(got[&Kind::Delete], 1);
        assert_eq!(got[&Kind::React], 10);
        assert_eq!(got[&Kind::Message], 79);
        assert_eq!(mix.flag(), "reply=5,edit=5,delete=1,react=10");
        assert_eq!(Mix::parse(&mix.flag()).unwrap(), mix);
        assert!(Mix::parse("none").unwrap().is_none());
        assert!(Mix::parse("").unwrap().is_none());
        assert_eq!(Mix::default().flag(), "none");
        assert_eq!(Mix::parse("react=100").unwrap().choose(99), Kind::React);
    }

    #[test]
    fn bad_mixes_say_why() {
        for (text, why) in [
            ("edit", "KIND=PERCENT"),
            ("edit=x", "not a percentage"),
            ("edit=101", "not a percentage"),
            ("edit=-1", "not a percentage"),
            ("shout=5", "not an operation"),
            ("message=5", "not an operation"),
            ("edit=5,edit=6", "twice"),
            ("edit=60,react=50", "over 100%"),
        ] {
            let err = Mix::parse(text).unwrap_err();
            assert!(err.contains(why), "{text}: {err}");
        }
    }

    #[test]
    fn event_types_map_to_kinds() {
        assert_eq!(Kind::of_event("message", None), Some(Kind::Message));
        assert_eq!(Kind::of_event("message", Some(3)), Some(Kind::Reply));
        assert_eq!(Kind::of_event("edited", None), Some(Kind::Edit));
        assert_eq!(Kind::of_event("deleted", None), Some(Kind::Delete));
        assert_eq!(Kind::of_event("reaction", None), Some(Kind::React));
        assert_eq!(Kind::of_event("presence", None), None);
    }

    #[test]
    fn counters_snapshot_by_name() {
        let c = KindCounters::default();
        c.sent(Kind::Edit);
        c.acked(Kind::Edit);
        c.received(Kind::Edit);
        c.received(Kind::Edit);
        c.sent(Kind::Message);
        let s = c.snapshot();
        assert_eq!(
            s["edit"],
            KindCounts {
                sent: 1,
                acked: 1,
                received: 2
            }
        );
        assert_eq!(s["message"].sent, 1);
        assert!(!s.contains_key("react"));
    }
}
