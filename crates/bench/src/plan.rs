//! The shape of a run, derived from the flags: for each connection its URL,
//! source address, user, room, whether it sends, and which worker process
//! runs it.
//!
//! Connection `i` (0-based, over the whole run) goes to room `i % rooms`, so
//! a ramp fills every room evenly. Within a room, the first `senders × members`
//! members send. With `--workers`, whole rooms go to one worker
//! (room `r` to worker `r % workers`): each worker then sees every ack and
//! every delivery of its rooms, so its loss accounting is exact on its own
//! and the parent only adds the workers' counts up.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::mix::Mix;

/// What the connections do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    /// Idle connections: connect, authenticate, hold. Measures connect
    /// success and what an idle connection costs.
    Hold,
    /// Rooms with senders every MSG_INTERVAL; every member of a room expects
    /// every message of the room. A dropped connection is not replaced.
    Chat,
    /// `chat` with auto-reconnect: on a disconnect, reconnect with backoff
    /// to another --url (at random), re-join with `since`, page forward, resend unacked sends with their
    /// nonce. Nodes may be killed or restarted during the run.
    Resume,
}

impl Scenario {
    pub fn has_rooms(self) -> bool {
        !matches!(self, Scenario::Hold)
    }
}

/// One `--url`, resolved once.
#[derive(Debug, Clone)]
pub struct Target {
    pub url: String,
    pub addr: SocketAddr,
}

/// Everything a worker needs to run its share.
#[derive(Debug, Clone)]
pub struct Plan {
    pub scenario: Scenario,
    pub connections: usize,
    /// 0 in `hold`.
    pub rooms: usize,
    /// Share of each room's members that send, 0..=1.
    pub senders: f64,
    pub targets: Vec<Target>,
    pub source_ips: Vec<IpAddr>,
    pub workers: usize,
    /// Set in a worker process: which share it runs.
    pub worker_index: Option<usize>,
    /// Names this run's rooms and users, so runs never share a room.
    pub run_id: String,
    pub ramp_up: Duration,
    pub duration: Duration,
    pub msg_interval: Duration,
    pub msg_size: usize,
    /// Which share of the operations are replies, edits, deletes and
    /// reactions instead of plain messages.
    pub mix: Mix,
    pub drain: Duration,
    pub connect_timeout: Duration,
    pub threads: usize,
}

/// Rooms for `connections` from `--rooms` / `--members-per-room` (100 members
/// per room when neither is given).
pub fn derive_rooms(
    connections: usize,
    rooms: Option<usize>,
    members_per_room: Option<usize>,
) -> Result<usize, String> {
    let rooms = match (rooms, members_per_room) {
        (Some(0), _) | (_, Some(0)) => {
            return Err("--rooms and --members-per-room must be at least 1".into());
        }
        (Some(r), None) => r,
        (None, m) => connections.div_ceil(m.unwrap_or(100)),
        (Some(r), Some(m)) => {
            if r.saturating_mul(m) != connections {
                return Err(format!(
                    "--rooms {r} × --members-per-room {m} is not --connections {connections}; give one of the two"
                ));
            }
            r
        }
    };
    if rooms > connections {
        return Err(format!(
            "{rooms} rooms for {connections} connections would leave rooms empty"
        ));
    }
    Ok(rooms.max(1))
}

/// Resolves a `ws://host:port/path` URL to the socket address to dial.
pub fn resolve(url: &str) -> Result<Target, String> {
    let rest = url
        .strip_prefix("ws://")
        .ok_or_else(|| format!("{url:?}: only ws:// URLs are supported"))?;
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    if authority.is_empty() {
        return Err(format!("{url:?} has no host"));
    }
    let with_port = if authority.starts_with('[') {
        if authority.contains("]:") {
            authority.to_string()
        } else {
            format!("{authority}:80")
        }
    } else if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let addr = with_port
        .to_socket_addrs()
        .map_err(|e| format!("{url:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("{url:?}: host did not resolve"))?;
    Ok(Target {
        url: url.to_string(),
        addr,
    })
}

impl Plan {
    /// The room of connection `conn`.
    pub fn room_of(&self, conn: usize) -> Option<usize> {
        (self.rooms > 0).then(|| conn % self.rooms)
    }

    /// Members of room `room`.
    pub fn members_in_room(&self, room: usize) -> usize {
        if self.rooms == 0 || room >= self.rooms {
            return 0;
        }
        self.connections / self.rooms + usize::from(room < self.connections % self.rooms)
    }

    /// Senders of room `room`.
    pub fn senders_in_room(&self, room: usize) -> usize {
        let members = self.members_in_room(room);
        ((self.senders * members as f64).round() as usize).min(members)
    }

    /// Whether connection `conn` sends.
    pub fn is_sender(&self, conn: usize) -> bool {
        match self.room_of(conn) {
            Some(room) => conn / self.rooms < self.senders_in_room(room),
            None => false,
        }
    }

    pub fn total_senders(&self) -> usize {
        (0..self.rooms).map(|r| self.senders_in_room(r)).sum()
    }

    /// Messages per second the senders try to send.
    pub fn offered_rate(&self) -> f64 {
        if self.msg_interval.is_zero() {
            return 0.0;
        }
        self.total_senders() as f64 / self.msg_interval.as_secs_f64()
    }

    /// The worker process that runs connection `conn`.
    pub fn worker_of(&self, conn: usize) -> usize {
        let workers = self.workers.max(1);
        match self.room_of(conn) {
            Some(room) => room % workers,
            None => conn % workers,
        }
    }

    /// The connections this process runs (all of them without workers).
    pub fn local_connections(&self) -> Vec<usize> {
        match self.worker_index {
            None => (0..self.connections).collect(),
            Some(w) => (0..self.connections)
                .filter(|&c| self.worker_of(c) == w)
                .collect(),
        }
    }

    pub fn room_name(&self, room: usize) -> String {
        format!("bench-{}-{room}", self.run_id)
    }

    pub fn user_name(&self, conn: usize) -> String {
        format!("b{}-{conn}", self.run_id)
    }

    pub fn target_of(&self, conn: usize) -> &Target {
        &self.targets[conn % self.targets.len()]
    }

    pub fn source_ip_of(&self, conn: usize) -> Option<IpAddr> {
        (!self.source_ips.is_empty()).then(|| self.source_ips[conn % self.source_ips.len()])
    }
}

/// A fresh run id: 8 lowercase hex digits (valid in room and user names).
pub fn new_run_id() -> String {
    format!("{:08x}", rand::random::<u32>())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(connections: usize, rooms: usize, senders: f64, workers: usize) -> Plan {
        Plan {
            scenario: if rooms == 0 {
                Scenario::Hold
            } else {
                Scenario::Chat
            },
            connections,
            rooms,
            senders,
            targets: vec![resolve("ws://127.0.0.1:8080/ws").unwrap()],
            source_ips: vec![],
            workers,
            worker_index: None,
            run_id: "0badcafe".into(),
            ramp_up: Duration::ZERO,
            duration: Duration::from_secs(1),
            msg_interval: Duration::from_millis(500),
            msg_size: 64,
            mix: Mix::default(),
            drain: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(1),
            threads: 1,
        }
    }

    #[test]
    fn rooms_from_flags() {
        assert_eq!(derive_rooms(2000, None, None), Ok(20));
        assert_eq!(derive_rooms(250, None, None), Ok(3));
        assert_eq!(derive_rooms(200, Some(10), None), Ok(10));
        assert_eq!(derive_rooms(200, None, Some(20)), Ok(10));
        assert_eq!(derive_rooms(200, Some(10), Some(20)), Ok(10));
        assert!(derive_rooms(200, Some(10), Some(10)).is_err());
        assert!(derive_rooms(5, Some(10), None).is_err());
        assert!(derive_rooms(5, Some(0), None).is_err());
    }

    #[test]
    fn members_and_senders() {
        let p = plan(205, 10, 0.1, 1);
        assert_eq!((0..10).map(|r| p.members_in_room(r)).sum::<usize>(), 205);
        assert_eq!(p.members_in_room(0), 21);
        assert_eq!(p.members_in_room(9), 20);
        assert_eq!(p.senders_in_room(0), 2);
        let senders: Vec<usize> = (0..205).filter(|&c| p.is_sender(c)).collect();
        assert_eq!(senders.len(), p.total_senders());
        assert_eq!(senders.len(), 20);
        // The first members of each room: 0..10 and 10..20.
        assert_eq!(senders, (0..20).collect::<Vec<_>>());
        assert!((p.offered_rate() - 40.0).abs() < 1e-9);
        let all = plan(10, 2, 1.0, 1);
        assert!((0..10).all(|c| all.is_sender(c)));
        let none = plan(10, 2, 0.0, 1);
        assert!((0..10).all(|c| !none.is_sender(c)));
    }

    #[test]
    fn workers_get_whole_rooms() {
        let mut p = plan(100, 10, 1.0, 3);
        let mut seen = 0;
        for w in 0..3 {
            p.worker_index = Some(w);
            let mine = p.local_connections();
            assert!(mine.iter().all(|&c| p.room_of(c).unwrap() % 3 == w));
            seen += mine.len();
        }
        assert_eq!(seen, 100);
        let mut hold = plan(10, 0, 0.0, 4);
        hold.worker_index = Some(1);
        assert_eq!(hold.local_connections(), vec![1, 5, 9]);
    }

    #[test]
    fn names_are_valid() {
        let p = plan(1_000_000, 1000, 1.0, 1);
        assert!(parley_protocol::valid_room(&p.room_name(999)));
        assert!(parley_protocol::valid_username(&p.user_name(999_999)));
        assert!(parley_protocol::valid_room(&format!(
            "bench-{}-1",
            new_run_id()
        )));
    }

    #[test]
    fn urls_resolve() {
        let t = resolve("ws://127.0.0.1:9000/ws").unwrap();
        assert_eq!(t.addr, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(resolve("ws://127.0.0.2/ws").unwrap().addr.port(), 80);
        assert_eq!(
            resolve("ws://[::1]:81/ws").unwrap().addr,
            "[::1]:81".parse().unwrap()
        );
        assert!(resolve("http://127.0.0.1/ws").is_err());
        assert!(resolve("wss://127.0.0.1/ws").is_err());
        assert!(resolve("ws:///ws").is_err());
    }
}
