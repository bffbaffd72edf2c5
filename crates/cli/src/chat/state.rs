//! What the chat client knows: connection state, rooms, members, the
//! messages it holds, who is typing, sends not yet acknowledged.
//!
//! Pure state updates: [`ChatState::apply`] turns a client [`Event`] into the
//! [`Output`]s to show; no I/O happens here.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use parley_client::Event;
use parley_client::protocol::{
    ClientAction, CloseCode, Message, PresenceState, dm_members, dm_room, same_user,
};

/// How long "bob is typing…" stays after bob's last typing push.
pub const TYPING_SHOWN: Duration = Duration::from_secs(5);

/// Messages held per room (the oldest are dropped first).
pub const LOG_LIMIT: usize = 2000;

/// Where typed text goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Room(String),
    /// A direct conversation: sent with `to`, read from its DM room.
    Dm {
        user: String,
        room: String,
    },
}

impl Target {
    /// The target for `room`: a DM room becomes a DM with the other member.
    pub fn of_room(room: &str, me: &str) -> Target {
        match dm_members(room) {
            // DM rooms name users case-folded; `me` is the spelling shown.
            Some((a, b)) if same_user(a, me) || same_user(b, me) => {
                Target::dm(me, if same_user(a, me) { b } else { a })
            }
            _ => Target::Room(room.to_string()),
        }
    }

    pub fn dm(me: &str, user: &str) -> Target {
        Target::Dm {
            user: user.to_string(),
            room: dm_room(me, user),
        }
    }

    /// The room whose messages belong to this target.
    pub fn room(&self) -> &str {
        match self {
            Target::Room(room) | Target::Dm { room, .. } => room,
        }
    }

    /// How the target is shown: `general`, or `@bob` for a DM.
    pub fn label(&self) -> String {
        match self {
            Target::Room(room) => room.clone(),
            Target::Dm { user, .. } => format!("@{user}"),
        }
    }
}

/// The state of the connection, as the status bar shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Conn {
    Connecting,
    Online { node: String },
    Reconnecting { reason: String },
}

/// Something to show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Message(Message),
    /// A status line (shown as `* text` in line mode).
    Status(String),
}

/// Results of background work (REST calls), handed back to the state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    Status(Vec<String>),
    /// A page of older messages of `room` (oldest first).
    Older {
        room: String,
        messages: Vec<Message>,
        more: bool,
    },
}

#[derive(Debug)]
pub struct ChatState {
    /// The user this client speaks for.
    pub me: String,
    /// Where typed text goes (None after leaving the last room).
    pub target: Option<Target>,
    pub conn: Conn,
    /// Set when the session cannot go on: the client stopped reconnecting
    /// ([`ClientAction::Stop`]: the server refuses the token, or a frame).
    pub fatal: Option<String>,
    connected_once: bool,
    joined: BTreeSet<String>,
    /// Rooms joined when the connection broke: their next `Joined` is a resume.
    resuming: BTreeSet<String>,
    members: BTreeMap<String, BTreeSet<String>>,
    logs: BTreeMap<String, BTreeMap<u64, Message>>,
    /// The last seq shown live per room.
    shown: BTreeMap<String, u64>,
    typing: BTreeMap<(String, String), Instant>,
    pending: BTreeSet<String>,
    /// Rooms asked to join and not joined yet.
    awaiting: BTreeSet<String>,
}

impl ChatState {
    pub fn new(me: &str, target: Option<Target>) -> Self {
        Self {
            me: me.to_string(),
            target,
            conn: Conn::Connecting,
            fatal: None,
            connected_once: false,
            joined: BTreeSet::new(),
            resuming: BTreeSet::new(),
            members: BTreeMap::new(),
            logs: BTreeMap::new(),
            shown: BTreeMap::new(),
            typing: BTreeMap::new(),
            pending: BTreeSet::new(),
            awaiting: BTreeSet::new(),
        }
    }

    /// Takes one event of the client; returns what to show.
    pub fn apply(&mut self, event: Event, now: Instant) -> Vec<Output> {
        let status = |s: String| vec![Output::Status(s)];
        match event {
            Event::Connected(welcome) => {
                let verb = if self.connected_once {
                    "reconnected"
                } else {
                    "connected"
                };
                self.connected_once = true;
                self.me = welcome.user.clone();
                self.conn = Conn::Online {
                    node: welcome.node.clone(),
                };
                status(format!(
                    "{verb} to node {} as {}",
                    welcome.node, welcome.user
                ))
            }
            Event::Disconnected {
                code,
                reason,
                action,
            } => {
                let was_online = matches!(self.conn, Conn::Online { .. });
                if was_online {
                    self.resuming.extend(self.joined.iter().cloned());
                }
                self.members.clear();
                self.typing.clear();
                self.conn = Conn::Reconnecting {
                    reason: reason.clone(),
                };
                if action == ClientAction::Stop {
                    let why = stopped_because(code, &reason);
                    self.fatal = Some(why.clone());
                    return status(format!("disconnected: {why}"));
                }
                // Failed attempts while already disconnected stay quiet; the
                // status bar shows the latest reason.
                if was_online || !self.connected_once {
                    status(format!("disconnected: {reason}, reconnecting"))
                } else {
                    Vec::new()
                }
            }
            Event::Joined { room, members } => {
                self.members
                    .insert(room.clone(), members.into_iter().collect());
                self.joined.insert(room.clone());
                self.awaiting.remove(&room);
                if self.target.is_none() {
                    self.target = Some(Target::of_room(&room, &self.me));
                }
                if self.resuming.remove(&room) {
                    status(format!("resumed {room}"))
                } else {
                    status(format!("joined {room}"))
                }
            }
            Event::Left { room } => {
                self.joined.remove(&room);
                self.awaiting.remove(&room);
                self.resuming.remove(&room);
                self.members.remove(&room);
                status(format!("left {room}"))
            }
            Event::Message(m) => {
                // The client hands out each message once per room, in order,
                // except that a DM pushed before its room was joined comes
                // again in the join's history: show each seq once.
                let last = self.shown.entry(m.room.clone()).or_insert(0);
                if m.seq <= *last {
                    return Vec::new();
                }
                *last = m.seq;
                self.typing.remove(&(m.room.clone(), m.from.clone()));
                self.hold(m.clone());
                vec![Output::Message(m)]
            }
            // Edits, deletes and reactions: the terminal shows messages as
            // they were sent for now (issue 13 leaves /edit and friends open).
            Event::Change(_) => Vec::new(),
            Event::Acked { nonce, .. } => {
                self.pending.remove(&nonce);
                Vec::new()
            }
            Event::SendFailed {
                nonce,
                code,
                message,
            } => {
                self.pending.remove(&nonce);
                status(format!("message not sent ({code}): {message}"))
            }
            Event::Presence { room, user, state } => {
                let members = self.members.entry(room.clone()).or_default();
                match state {
                    PresenceState::Joined => {
                        members.insert(user.clone());
                        status(format!("{user} joined {room}"))
                    }
                    PresenceState::Left => {
                        members.remove(&user);
                        self.typing.remove(&(room.clone(), user.clone()));
                        status(format!("{user} left {room}"))
                    }
                }
            }
            Event::Typing { room, user } => {
                if user != self.me {
                    self.typing.insert((room, user), now);
                }
                Vec::new()
            }
            Event::Error { code, message } => status(format!("error ({code}): {message}")),
        }
    }

    /// Takes the result of background work; returns what to show.
    pub fn apply_notice(&mut self, notice: Notice) -> Vec<Output> {
        match notice {
            Notice::Status(lines) => lines.into_iter().map(Output::Status).collect(),
            Notice::Older {
                room,
                messages,
                more,
            } => {
                if messages.is_empty() {
                    return vec![Output::Status(format!("no older messages in {room}"))];
                }
                let mut out = vec![Output::Status(format!(
                    "{} older messages of {room}:",
                    messages.len()
                ))];
                for m in messages {
                    self.hold(m.clone());
                    out.push(Output::Message(m));
                }
                out.push(Output::Status(if more {
                    format!("end of page; /history N fetches more of {room}")
                } else {
                    format!("that is the beginning of {room}")
                }));
                out
            }
        }
    }

    fn hold(&mut self, m: Message) {
        let log = self.logs.entry(m.room.clone()).or_default();
        log.insert(m.seq, m);
        while log.len() > LOG_LIMIT {
            log.pop_first();
        }
    }

    /// Notes a send that waits for its ack.
    pub fn sent(&mut self, nonce: String) {
        self.pending.insert(nonce);
    }

    /// Sends not acknowledged (nor refused) yet.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Notes a join asked for.
    pub fn joining(&mut self, room: &str) {
        self.awaiting.insert(room.to_string());
    }

    /// Whether every send is acknowledged and every join asked for done:
    /// quitting need not wait.
    pub fn settled(&self) -> bool {
        self.pending.is_empty() && self.awaiting.is_empty()
    }

    pub fn is_joined(&self, room: &str) -> bool {
        self.joined.contains(room)
    }

    /// After `/leave room`: the target moves to another joined room, if any.
    pub fn leaving(&mut self, room: &str) {
        if self.target.as_ref().is_some_and(|t| t.room() == room) {
            self.target = self
                .joined
                .iter()
                .find(|r| r.as_str() != room)
                .map(|r| Target::of_room(r, &self.me));
        }
    }

    /// The members of `room` as the client last heard.
    pub fn members(&self, room: &str) -> Vec<&str> {
        self.members
            .get(room)
            .map(|m| m.iter().map(String::as_str).collect())
            .unwrap_or_default()
    }

    /// The answer to `/who`.
    pub fn who(&self) -> Output {
        let Some(target) = &self.target else {
            return Output::Status("not in a room; /join ROOM or /dm USER".into());
        };
        let room = target.room();
        if !self.is_joined(room) {
            return Output::Status(format!("not joined to {room} (yet)"));
        }
        let members = self.members(room);
        Output::Status(format!(
            "{} in {room}: {}",
            members.len(),
            members.join(", ")
        ))
    }

    /// The answer to `/history`: the messages held for the current room.
    pub fn history(&self) -> Vec<Output> {
        let Some(target) = &self.target else {
            return vec![Output::Status(
                "not in a room; /join ROOM or /dm USER".into(),
            )];
        };
        let room = target.room();
        let held: Vec<&Message> = self
            .logs
            .get(room)
            .map(|log| log.values().collect())
            .unwrap_or_default();
        let mut out = vec![Output::Status(format!(
            "{} messages of {room} held here (/history N fetches older ones):",
            held.len()
        ))];
        out.extend(held.into_iter().cloned().map(Output::Message));
        out
    }

    /// The oldest seq held for `room`.
    pub fn oldest(&self, room: &str) -> Option<u64> {
        self.logs
            .get(room)
            .and_then(|log| log.keys().next().copied())
    }

    /// Who is typing in `room` now (most recent last), without `me`.
    pub fn typing(&self, room: &str, now: Instant) -> Vec<&str> {
        let mut users: Vec<(&Instant, &str)> = self
            .typing
            .iter()
            .filter(|((r, _), at)| r == room && now.saturating_duration_since(**at) < TYPING_SHOWN)
            .map(|((_, user), at)| (at, user.as_str()))
            .collect();
        users.sort();
        users.into_iter().map(|(_, u)| u).collect()
    }
}

/// Why the client stopped reconnecting, for a close whose action is
/// [`ClientAction::Stop`]: 4401 (also reported for a hello refused with
/// `unauthorized`) asks for a new login; the others mean this client sent
/// what the server refuses.
pub fn stopped_because(code: Option<u16>, reason: &str) -> String {
    match code.and_then(CloseCode::from_u16) {
        Some(CloseCode::Unauthorized) => {
            format!("the server refused the token ({reason}); log in again")
        }
        _ => format!("the server ended the session for good ({reason}); not reconnecting"),
    }
}

/// "bob is typing…", "bob and carol are typing…", "3 people are typing…".
pub fn typing_text(users: &[&str]) -> Option<String> {
    match users {
        [] => None,
        [one] => Some(format!("{one} is typing…")),
        [a, b] => Some(format!("{a} and {b} are typing…")),
        many => Some(format!("{} people are typing…", many.len())),
    }
}

#[cfg(test)]
mod tests {
    use parley_client::Welcome;
    use parley_client::protocol::ErrorCode;

    use super::*;

    fn welcome(node: &str) -> Event {
        Event::Connected(Welcome {
            user: "alice".into(),
            node: node.into(),
            session: "s".into(),
            heartbeat_s: 25,
        })
    }

    fn msg(room: &str, seq: u64, from: &str) -> Message {
        Message {
            room: room.into(),
            seq,
            from: from.into(),
            text: format!("text {seq}"),
            ts: "2026-11-22T21:00:00.123Z".into(),
            nonce: None,
            ..Default::default()
        }
    }

    fn statuses(out: Vec<Output>) -> Vec<String> {
        out.into_iter()
            .map(|o| match o {
                Output::Status(s) => s,
                Output::Message(m) => format!("message #{}", m.seq),
            })
            .collect()
    }

    fn joined(room: &str, members: &[&str]) -> Event {
        Event::Joined {
            room: room.into(),
            members: members.iter().map(|m| m.to_string()).collect(),
        }
    }

    #[test]
    fn connect_join_disconnect_resume() {
        let now = Instant::now();
        let mut s = ChatState::new("alice", Some(Target::Room("general".into())));
        assert_eq!(
            statuses(s.apply(welcome("n1"), now)),
            ["connected to node n1 as alice"]
        );
        assert_eq!(
            statuses(s.apply(joined("general", &["alice", "bob"]), now)),
            ["joined general"]
        );
        assert_eq!(s.members("general"), ["alice", "bob"]);
        let lost = Event::Disconnected {
            code: Some(1001),
            reason: "node draining".into(),
            action: ClientAction::ReconnectNow,
        };
        assert_eq!(
            statuses(s.apply(lost.clone(), now)),
            ["disconnected: node draining, reconnecting"]
        );
        assert_eq!(
            s.conn,
            Conn::Reconnecting {
                reason: "node draining".into()
            }
        );
        // Further failed attempts are quiet.
        assert!(s.apply(lost, now).is_empty());
        assert!(s.fatal.is_none());
        assert_eq!(
            statuses(s.apply(welcome("n2"), now)),
            ["reconnected to node n2 as alice"]
        );
        assert_eq!(
            statuses(s.apply(joined("general", &["alice"]), now)),
            ["resumed general"]
        );
        assert_eq!(s.conn, Conn::Online { node: "n2".into() });
        assert_eq!(s.members("general"), ["alice"]);
    }

    #[test]
    fn an_unauthorized_disconnect_is_fatal() {
        let now = Instant::now();
        let mut s = ChatState::new("alice", None);
        s.apply(welcome("n1"), now);
        let out = s.apply(
            Event::Disconnected {
                code: Some(4401),
                reason: "server error unauthorized: token expired".into(),
                action: ClientAction::Stop,
            },
            now,
        );
        assert!(s.fatal.is_some());
        assert!(statuses(out)[0].contains("log in again"));
    }

    #[test]
    fn only_a_stop_is_fatal() {
        let now = Instant::now();
        let mut s = ChatState::new("alice", None);
        s.apply(welcome("n1"), now);
        let out = s.apply(
            Event::Disconnected {
                code: Some(4429),
                reason: "rate limited repeatedly".into(),
                action: ClientAction::ReconnectWithBackoff,
            },
            now,
        );
        assert!(s.fatal.is_none());
        assert_eq!(
            statuses(out),
            ["disconnected: rate limited repeatedly, reconnecting"]
        );
        s.apply(
            Event::Disconnected {
                code: Some(1009),
                reason: "frame too large".into(),
                action: ClientAction::Stop,
            },
            now,
        );
        let why = s.fatal.as_deref().unwrap();
        assert!(why.contains("frame too large"), "{why}");
        assert!(why.contains("not reconnecting"), "{why}");
        assert!(!why.contains("log in"), "{why}");
    }

    #[test]
    fn messages_are_shown_and_held_in_seq_order() {
        let now = Instant::now();
        let mut s = ChatState::new("alice", Some(Target::Room("general".into())));
        for seq in [1, 2, 3] {
            let out = s.apply(Event::Message(msg("general", seq, "bob")), now);
            assert_eq!(out, vec![Output::Message(msg("general", seq, "bob"))]);
        }
        s.apply(Event::Message(msg("other", 9, "bob")), now);
        // A repeat (a DM pushed, then in the history of its room) is not shown again.
        assert!(
            s.apply(Event::Message(msg("general", 2, "bob")), now)
                .is_empty()
        );
        let shown = statuses(s.history());
        assert_eq!(shown[1..], ["message #1", "message #2", "message #3"]);
        assert!(shown[0].starts_with("3 messages of general"));
        assert_eq!(s.oldest("general"), Some(1));
        assert_eq!(s.oldest("nowhere"), None);
    }

    #[test]
    fn the_log_is_bounded() {
        let now = Instant::now();
        let mut s = ChatState::new("alice", None);
        for seq in 1..=(LOG_LIMIT as u64 + 10) {
            s.apply(Event::Message(msg("general", seq, "bob")), now);
        }
        assert_eq!(s.oldest("general"), Some(11));
    }

    #[test]
    fn older_pages_merge_into_the_log() {
        let mut s = ChatState::new("alice", Some(Target::Room("general".into())));
        s.apply(Event::Message(msg("general", 5, "bob")), Instant::now());
        let out = s.apply_notice(Notice::Older {
            room: "general".into(),
            messages: vec![msg("general", 3, "bob"), msg("general", 4, "carol")],
            more: true,
        });
        let shown = statuses(out);
        assert_eq!(shown.len(), 4);
        assert_eq!(shown[1..3], ["message #3", "message #4"]);
        assert!(shown[3].contains("/history N"));
        assert_eq!(s.oldest("general"), Some(3));
        let out = s.apply_notice(Notice::Older {
            room: "general".into(),
            messages: vec![],
            more: false,
        });
        assert_eq!(statuses(out), ["no older messages in general"]);
    }

    #[test]
    fn presence_updates_members() {
        let now = Instant::now();
        let mut s = ChatState::new("alice", Some(Target::Room("general".into())));
        s.apply(joined("general", &["alice"]), now);
        let out = s.apply(
            Event::Presence {
                room: "general".into(),
                user: "bob".into(),
                state: PresenceState::Joined,
            },
            now,
        );
        assert_eq!(statuses(out), ["bob joined general"]);
        assert_eq!(s.who(), Output::Status("2 in general: alice, bob".into()));
        s.apply(
            Event::Presence {
                room: "general".into(),
                user: "alice".into(),
                state: PresenceState::Left,
            },
            now,
        );
        assert_eq!(s.who(), Output::Status("1 in general: bob".into()));
    }

    #[test]
    fn who_without_a_room() {
        let s = ChatState::new("alice", None);
        assert!(matches!(s.who(), Output::Status(t) if t.starts_with("not in a room")));
        let s = ChatState::new("alice", Some(Target::Room("x".into())));
        assert!(matches!(s.who(), Output::Status(t) if t.starts_with("not joined")));
    }

    #[test]
    fn settled_once_joins_and_acks_are_done() {
        let now = Instant::now();
        let mut s = ChatState::new("alice", None);
        assert!(s.settled());
        s.joining("general");
        s.joining("x");
        s.sent("n1".into());
        s.apply(joined("general", &[]), now);
        s.apply(Event::Left { room: "x".into() }, now);
        assert!(!s.settled());
        s.apply(
            Event::Acked {
                nonce: "n1".into(),
                room: "general".into(),
                seq: 1,
            },
            now,
        );
        assert!(s.settled());
    }

    #[test]
    fn acks_and_failures_clear_pending_sends() {
        let now = Instant::now();
        let mut s = ChatState::new("alice", None);
        s.sent("n1".into());
        s.sent("n2".into());
        assert_eq!(s.pending(), 2);
        let out = s.apply(
            Event::Acked {
                nonce: "n1".into(),
                room: "general".into(),
                seq: 1,
            },
            now,
        );
        assert!(out.is_empty());
        let out = s.apply(
            Event::SendFailed {
                nonce: "n2".into(),
                code: ErrorCode::Forbidden,
                message: "not a member".into(),
            },
            now,
        );
        assert_eq!(
            statuses(out),
            ["message not sent (forbidden): not a member"]
        );
        assert_eq!(s.pending(), 0);
    }

    #[test]
    fn typing_expires_and_ends_with_a_message() {
        let t0 = Instant::now();
        let mut s = ChatState::new("alice", None);
        let typing = |user: &str| Event::Typing {
            room: "general".into(),
            user: user.into(),
        };
        s.apply(typing("bob"), t0);
        s.apply(typing("alice"), t0);
        s.apply(typing("carol"), t0 + Duration::from_secs(1));
        assert_eq!(
            s.typing("general", t0 + Duration::from_secs(2)),
            ["bob", "carol"]
        );
        assert_eq!(s.typing("other", t0), Vec::<&str>::new());
        assert_eq!(s.typing("general", t0 + TYPING_SHOWN), ["carol"]);
        s.apply(Event::Message(msg("general", 1, "carol")), t0);
        assert_eq!(s.typing("general", t0 + Duration::from_secs(2)), ["bob"]);
        assert_eq!(typing_text(&[]), None);
        assert_eq!(typing_text(&["bob"]).as_deref(), Some("bob is typing…"));
        assert_eq!(
            typing_text(&["bob", "carol"]).as_deref(),
            Some("bob and carol are typing…")
        );
        assert_eq!(
            typing_text(&["a", "b", "c"]).as_deref(),
            Some("3 people are typing…")
        );
    }

    #[test]
    fn targets_and_leaving() {
        assert_eq!(
            Target::of_room("dm:alice:bob", "bob"),
            Target::dm("bob", "alice")
        );
        assert_eq!(Target::dm("bob", "alice").room(), "dm:alice:bob");
        assert_eq!(Target::dm("bob", "alice").label(), "@alice");
        assert_eq!(
            Target::of_room("dm:carol:dave", "bob"),
            Target::Room("dm:carol:dave".into())
        );
        let now = Instant::now();
        let mut s = ChatState::new("alice", Some(Target::Room("a".into())));
        s.apply(joined("a", &[]), now);
        s.apply(joined("dm:alice:bob", &[]), now);
        s.leaving("a");
        assert_eq!(s.target, Some(Target::dm("alice", "bob")));
        s.apply(Event::Left { room: "a".into() }, now);
        s.leaving("dm:alice:bob");
        assert_eq!(s.target, None);
        // The first room joined becomes the target when there is none.
        s.apply(joined("c", &[]), now);
        assert_eq!(s.target, Some(Target::Room("c".into())));
    }
}
