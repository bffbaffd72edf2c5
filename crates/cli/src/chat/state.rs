//! What the chat client knows: connection state, rooms, members, the
//! messages it holds (each room folded from its event log by
//! [`RoomState`]: edits, deletes, reactions, replies; the topic, the
//! members' roles, bans), unread counts and read positions, who is
//! typing, requests not yet acknowledged.
//!
//! Pure state updates: [`ChatState::apply`] turns a client [`Event`] into the
//! [`Output`]s to show; no I/O happens here. What must be sent because of
//! the state (a `read` for the room being looked at) is handed out by
//! [`ChatState::take_reads`].

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use parley_client::Event;
use parley_client::protocol::rest::MemberInfo;
use parley_client::protocol::{
    ClientAction, CloseCode, Member, MemberChange, Message, PresenceState, Role, RoomEvent,
    UNREAD_CAP, dm_members, dm_room, left_reason, same_user,
};
use parley_client::room_state::{Applied, RoomState};

use super::format::{member_text, taken_out, topic_text};

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

/// A message as shown: its current state, and for a reply the message it
/// answers (when held).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shown {
    pub message: Message,
    pub quote: Option<Quote>,
}

/// The message a reply answers, as quoted under it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quote {
    pub seq: u64,
    /// None when the client does not hold it (older than what it holds).
    pub from: Option<String>,
    pub text: String,
    pub deleted: bool,
}

/// Something to show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// A message new to the client: shown once per seq.
    Message(Box<Shown>),
    /// A message shown before changed (edited, deleted, reacted to): `what`
    /// says who did what (`bob reacted 👍`); the TUI redraws the message in
    /// place, line mode prints a status line.
    Changed { what: String, shown: Box<Shown> },
    /// A member or topic event of a room, with its seq (line mode: `*
    /// [room] #seq text`).
    Event(Box<EventLine>),
    /// A status line (shown as `* text` in line mode).
    Status(String),
}

/// A member or topic event as shown: `text` says who did what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventLine {
    pub room: String,
    pub seq: u64,
    pub ts: String,
    pub text: String,
}

impl Output {
    /// A message shown without a quote (an older page's message the
    /// client cannot hold).
    pub fn message(message: Message) -> Output {
        Output::Message(Box::new(Shown {
            message,
            quote: None,
        }))
    }
}

/// Unread messages of a room, as the room list shows them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Unread {
    pub unread: u64,
    pub mentions: u64,
}

/// Results of background work (REST calls), handed back to the state:
/// one per call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    Status(Vec<String>),
    /// `/create` made the room: it is joined next.
    Created {
        room: String,
        private: bool,
        topic: Option<String>,
    },
    /// The members of `room` with their roles (`/members`).
    Members {
        room: String,
        members: Vec<MemberInfo>,
    },
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
    /// Every room's messages in their current state.
    rooms: BTreeMap<String, RoomState>,
    /// Unread counts per joined room (0 for the one being looked at, at
    /// its end).
    unread: BTreeMap<String, Unread>,
    /// The read position stored (or asked for) per room.
    read: BTreeMap<String, u64>,
    /// Per room, the last seq the unread counts of its join covered.
    counted: BTreeMap<String, u64>,
    typing: BTreeMap<(String, String), Instant>,
    /// Requests waiting for their ack: nonce → what it is ("message",
    /// "edit", …), for the status line if it fails.
    pending: BTreeMap<String, &'static str>,
    /// Rooms asked to join and not joined yet.
    awaiting: BTreeSet<String>,
    /// Rooms asked to part and not answered yet.
    parting: BTreeSet<String>,
    /// Per room, the `member` event that took the user out (kick, ban),
    /// until the `left` that follows it.
    ejected: BTreeMap<String, Member>,
    /// Background REST calls whose [`Notice`] has not come yet.
    rest_calls: usize,
    /// Rooms to join because of a [`Notice`] (a room just created).
    to_join: Vec<String>,
    /// The user sees the newest of the room looked at (the front end says:
    /// a pane scrolled up into history does not). Only then is what
    /// arrives there read at once; else it counts as unread, like any
    /// other room's, until the end is seen again.
    pub seeing_end: bool,
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
            rooms: BTreeMap::new(),
            unread: BTreeMap::new(),
            read: BTreeMap::new(),
            counted: BTreeMap::new(),
            typing: BTreeMap::new(),
            pending: BTreeMap::new(),
            awaiting: BTreeSet::new(),
            parting: BTreeSet::new(),
            ejected: BTreeMap::new(),
            rest_calls: 0,
            to_join: Vec::new(),
            seeing_end: true,
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
            Event::Joined {
                room,
                members,
                last_seq,
                read_seq,
                unread,
                mentions,
                topic,
                private,
                role,
            } => {
                let me = self.me.clone();
                self.room_mut(&room).joined(topic, private, &me, role);
                self.ejected.remove(&room);
                // The join's counts cover everything up to its last seq,
                // including the history that follows it.
                self.counted.insert(room.clone(), last_seq);
                self.members
                    .insert(room.clone(), members.into_iter().collect());
                self.unread
                    .insert(room.clone(), Unread { unread, mentions });
                let read = self.read.entry(room.clone()).or_default();
                *read = (*read).max(read_seq);
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
            Event::Left { room, reason } => {
                let Some(reason) = reason else {
                    self.forget(&room);
                    return status(format!("left {room}"));
                };
                // The membership ended: the room goes, and typed text goes
                // elsewhere.
                let before = self.target.clone();
                self.leaving(&room);
                self.forget(&room);
                self.room_mut(&room).mark_left(&reason);
                let by = self.ejected.remove(&room);
                let asked = self.parting.remove(&room);
                let mut out = vec![Output::Status(match reason.as_str() {
                    left_reason::PARTED if asked => format!("you parted #{room}"),
                    reason => taken_out(&room, reason, by.as_ref()),
                })];
                if before.as_ref().is_some_and(|t| t.room() == room) {
                    out.push(Output::Status(match &self.target {
                        Some(t) => format!("now talking in {}", t.label()),
                        None => "not in a room now; /join ROOM or /dm USER".into(),
                    }));
                }
                out
            }
            Event::JoinFailed {
                room,
                code,
                message,
            } => {
                let before = self.target.clone();
                self.leaving(&room);
                self.forget(&room);
                let mut out = vec![Output::Status(format!(
                    "cannot join {room} ({code}): {message}"
                ))];
                if before.as_ref().is_some_and(|t| t.room() == room)
                    && let Some(t) = &self.target
                {
                    out.push(Output::Status(format!("now talking in {}", t.label())));
                }
                out
            }
            Event::PartFailed {
                room,
                code,
                message,
            } => {
                self.parting.remove(&room);
                status(format!("part {room} failed ({code}): {message}"))
            }
            Event::Message(m) => {
                // The client hands out each message once per room, in order,
                // except that a DM pushed before its room was joined comes
                // again in the join's history: the room state shows each seq
                // once.
                self.typing.remove(&(m.room.clone(), m.from.clone()));
                let room = m.room.clone();
                let (from, text) = (m.from.clone(), m.text.clone());
                match self.room_mut(&room).apply(&RoomEvent::Message(m)) {
                    Applied::Message(seq) => {
                        self.count_unread(&room, seq, &from, &text);
                        self.shown(&room, seq)
                            .map(Output::Message)
                            .into_iter()
                            .collect()
                    }
                    _ => Vec::new(),
                }
            }
            Event::Change(event) => self.change(event),
            Event::Acked { nonce, .. } => {
                self.pending.remove(&nonce);
                Vec::new()
            }
            Event::SendFailed {
                nonce,
                code,
                message,
            } => {
                let what = self.pending.remove(&nonce).unwrap_or("message");
                status(format!("{what} not sent ({code}): {message}"))
            }
            Event::Read { room, seq } => {
                let read = self.read.entry(room.clone()).or_default();
                *read = (*read).max(seq);
                self.recount(&room);
                Vec::new()
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
        self.rest_calls = self.rest_calls.saturating_sub(1);
        match notice {
            Notice::Status(lines) => lines.into_iter().map(Output::Status).collect(),
            Notice::Created {
                room,
                private,
                topic,
            } => {
                let mut line = format!("created room {room}");
                if private {
                    line.push_str(" (private)");
                }
                if let Some(topic) = topic {
                    line.push_str(&format!(", topic: {topic}"));
                }
                self.target = Some(Target::Room(room.clone()));
                if !self.is_joined(&room) {
                    self.joining(&room);
                    self.to_join.push(room);
                }
                vec![Output::Status(line)]
            }
            Notice::Members { room, members } => {
                let state = self.room_mut(&room);
                state.set_members(members.iter().map(|m| (m.user.as_str(), m.role)));
                let n = members.len();
                let list: Vec<String> = state
                    .members()
                    .into_iter()
                    .map(|(user, role)| format!("{user} ({role})"))
                    .collect();
                vec![Output::Status(format!(
                    "{n} member{} of {room}: {}",
                    if n == 1 { "" } else { "s" },
                    list.join(", ")
                ))]
            }
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
                    let (room, seq) = (m.room.clone(), m.seq);
                    self.room_mut(&room).insert_older(m.clone());
                    out.push(match self.shown(&room, seq) {
                        Some(shown) => Output::Message(shown),
                        None => Output::message(m),
                    });
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

    fn room_mut(&mut self, room: &str) -> &mut RoomState {
        self.rooms
            .entry(room.to_string())
            .or_insert_with(|| RoomState::with_limit(room, LOG_LIMIT))
    }

    /// The folded state of `room`, if the client holds any of it.
    pub fn room(&self, room: &str) -> Option<&RoomState> {
        self.rooms.get(room)
    }

    /// Message `seq` of `room` as shown, with its quote.
    fn shown(&self, room: &str, seq: u64) -> Option<Box<Shown>> {
        let state = self.rooms.get(room)?;
        let message = state.get(seq)?.clone();
        let quote = message.reply_to.map(|target| match state.get(target) {
            Some(q) => Quote {
                seq: target,
                from: Some(q.from.clone()),
                text: q.text.clone(),
                deleted: q.deleted,
            },
            None => Quote {
                seq: target,
                from: None,
                text: String::new(),
                deleted: false,
            },
        });
        Some(Box::new(Shown { message, quote }))
    }

    /// A member or topic event: shown once, with its seq. A kick or ban of
    /// the user is kept to say who did it when the `left` follows.
    fn room_event(&mut self, event: RoomEvent) -> Vec<Output> {
        let (room, seq) = (event.room().to_string(), event.seq());
        let (ts, text) = match &event {
            RoomEvent::Member(m) => (m.ts.clone(), member_text(m)),
            RoomEvent::Topic(t) => (t.ts.clone(), topic_text(t)),
            _ => return Vec::new(),
        };
        if self.room_mut(&room).apply(&event) != Applied::Room(seq) {
            return Vec::new();
        }
        if let RoomEvent::Member(m) = event
            && matches!(m.change, MemberChange::Removed | MemberChange::Banned)
        {
            // Out of the room: no longer in it (no presence push says so).
            if let Some(online) = self.members.get_mut(&room) {
                online.retain(|u| !same_user(u, &m.user));
            }
            if same_user(&m.user, &self.me) && !same_user(&m.from, &self.me) {
                self.ejected.insert(room.clone(), m);
            }
        }
        vec![Output::Event(Box::new(EventLine {
            room,
            seq,
            ts,
            text,
        }))]
    }

    /// An edit, delete or reaction: the message it changed, shown again.
    fn change(&mut self, event: RoomEvent) -> Vec<Output> {
        let what = match &event {
            RoomEvent::Message(_) => return Vec::new(),
            RoomEvent::Member(_) | RoomEvent::Topic(_) => return self.room_event(event),
            RoomEvent::Edited(e) => format!("{} edited", e.from),
            RoomEvent::Deleted(e) => format!("{} deleted", e.from),
            RoomEvent::Reaction(r) if r.on => format!("{} reacted {}", r.from, r.emoji),
            RoomEvent::Reaction(r) => format!("{} took back {}", r.from, r.emoji),
        };
        let room = event.room().to_string();
        let deleted = matches!(event, RoomEvent::Deleted(_));
        match self.room_mut(&room).apply(&event) {
            Applied::Changed(seq) => {
                if deleted {
                    // A deleted message no longer counts as unread.
                    self.recount(&room);
                }
                self.shown(&room, seq)
                    .map(|shown| Output::Changed { what, shown })
                    .into_iter()
                    .collect()
            }
            _ => Vec::new(),
        }
    }

    /// A new message of `room` counts as unread unless it is one's own or
    /// the room is the one being looked at, at its end (it is read at once).
    fn count_unread(&mut self, room: &str, seq: u64, from: &str, text: &str) {
        if same_user(from, &self.me)
            || (self.looking_at(room) && self.seeing_end)
            || seq <= self.read.get(room).copied().unwrap_or(0)
            || seq <= self.counted.get(room).copied().unwrap_or(0)
        {
            return;
        }
        let mention = mentions(text, &self.me);
        let unread = self.unread.entry(room.to_string()).or_default();
        unread.unread = (unread.unread + 1).min(UNREAD_CAP);
        if mention {
            unread.mentions = (unread.mentions + 1).min(UNREAD_CAP);
        }
    }

    /// Counts again what is unread in `room` after its read position moved
    /// (or a message was deleted), from the messages held — when they reach
    /// back to the read position; otherwise only "all read" is certain.
    fn recount(&mut self, room: &str) {
        let read = self.read.get(room).copied().unwrap_or(0);
        let Some(state) = self.rooms.get(room) else {
            return;
        };
        if read >= state.last_seq() {
            self.unread.insert(room.to_string(), Unread::default());
            return;
        }
        if state.oldest().is_some_and(|oldest| oldest <= read + 1) {
            let mut counted = Unread::default();
            for m in state.messages().filter(|m| m.seq > read) {
                if m.deleted || same_user(&m.from, &self.me) {
                    continue;
                }
                counted.unread += 1;
                if mentions(&m.text, &self.me) {
                    counted.mentions += 1;
                }
            }
            self.unread.insert(room.to_string(), counted);
        }
    }

    /// Whether `room` is the one being looked at (where typed text goes).
    fn looking_at(&self, room: &str) -> bool {
        self.target.as_ref().is_some_and(|t| t.room() == room)
    }

    /// The `read` requests due: the room being looked at, at its end
    /// ([`ChatState::seeing_end`]), read up to its last event, when that is
    /// past the position stored. Noted as read at once, so each position is
    /// asked for once.
    pub fn take_reads(&mut self) -> Vec<(String, u64)> {
        if !self.seeing_end {
            return Vec::new();
        }
        let Some(room) = self.target.as_ref().map(|t| t.room().to_string()) else {
            return Vec::new();
        };
        if !self.is_joined(&room) {
            return Vec::new();
        }
        let last = self.rooms.get(&room).map_or(0, RoomState::last_seq);
        let read = self.read.entry(room.clone()).or_default();
        if last <= *read {
            return Vec::new();
        }
        *read = last;
        self.unread.insert(room.clone(), Unread::default());
        vec![(room, last)]
    }

    /// The unread counts of a joined room.
    pub fn unread(&self, room: &str) -> Unread {
        self.unread.get(room).copied().unwrap_or_default()
    }

    /// The joined rooms with what is unread in each, for the room list.
    pub fn room_list(&self) -> Vec<(String, Unread)> {
        self.joined
            .iter()
            .map(|room| {
                let label = Target::of_room(room, &self.me).label();
                (label, self.unread(room))
            })
            .collect()
    }

    /// Notes a send that waits for its ack.
    pub fn sent(&mut self, nonce: String) {
        self.request(nonce, "message");
    }

    /// Notes a request (`what`: "message", "reply", "edit", "delete",
    /// "reaction") that waits for its ack.
    pub fn request(&mut self, nonce: String, what: &'static str) {
        self.pending.insert(nonce, what);
    }

    /// Sends not acknowledged (nor refused) yet.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Notes a join asked for.
    pub fn joining(&mut self, room: &str) {
        self.awaiting.insert(room.to_string());
    }

    /// Whether every send is acknowledged, every join and part asked for
    /// done and every REST call answered: quitting need not wait.
    pub fn settled(&self) -> bool {
        self.pending.is_empty()
            && self.awaiting.is_empty()
            && self.parting.is_empty()
            && self.rest_calls == 0
    }

    /// Notes a part asked for (its `left`, or refusal, is waited for).
    pub fn parting(&mut self, room: &str) {
        self.parting.insert(room.to_string());
    }

    /// Notes a background REST call started; its [`Notice`] ends it.
    pub fn rest_started(&mut self) {
        self.rest_calls += 1;
    }

    /// The rooms to join because of background results (a room created).
    pub fn take_joins(&mut self) -> Vec<String> {
        std::mem::take(&mut self.to_join)
    }

    /// Forgets what is known of `room` as a joined room (its messages stay).
    fn forget(&mut self, room: &str) {
        self.joined.remove(room);
        self.awaiting.remove(room);
        self.resuming.remove(room);
        self.members.remove(room);
        self.unread.remove(room);
    }

    /// The topic of `room`, if it has one.
    pub fn topic(&self, room: &str) -> Option<&str> {
        self.rooms.get(room).and_then(RoomState::topic)
    }

    /// The user's role in `room`, if known (None in DMs).
    pub fn my_role(&self, room: &str) -> Option<Role> {
        self.rooms.get(room).and_then(|r| r.role_of(&self.me))
    }

    /// Whether `room` is private, as its join said.
    pub fn is_private(&self, room: &str) -> bool {
        self.rooms.get(room).is_some_and(RoomState::is_private)
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
        let held: Vec<u64> = self
            .rooms
            .get(room)
            .map(|state| state.messages().map(|m| m.seq).collect())
            .unwrap_or_default();
        let mut out = vec![Output::Status(format!(
            "{} messages of {room} held here (/history N fetches older ones):",
            held.len()
        ))];
        out.extend(
            held.into_iter()
                .filter_map(|seq| self.shown(room, seq))
                .map(Output::Message),
        );
        out
    }

    /// The oldest seq held for `room`.
    pub fn oldest(&self, room: &str) -> Option<u64> {
        self.rooms.get(room).and_then(RoomState::oldest)
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

/// Whether `text` mentions `user` as `@user`, a whole name in any case
/// (`@bob.` counts; `@bobby` and `bob@example.org` do not), as the server
/// counts mentions.
pub fn mentions(text: &str, user: &str) -> bool {
    let name_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
    let bytes = text.as_bytes();
    text.match_indices('@').any(|(at, _)| {
        let before_ok = at == 0 || !name_char(char::from(bytes[at - 1]));
        let rest = &text[at + 1..];
        let name_len = rest.find(|c: char| !name_char(c)).unwrap_or(rest.len());
        // A trailing dot ends a sentence, not the name.
        let name = rest[..name_len].trim_end_matches('.');
        before_ok && same_user(name, user)
    })
}

/// A room in the room list: `general`, `random 3`, `@bob 2 (1@)`.
pub fn room_label(label: &str, unread: Unread) -> String {
    let count = |n: u64| {
        if n >= UNREAD_CAP {
            format!("{UNREAD_CAP}+")
        } else {
            n.to_string()
        }
    };
    match unread {
        Unread { unread: 0, .. } => label.to_string(),
        Unread {
            unread,
            mentions: 0,
        } => format!("{label} {}", count(unread)),
        Unread { unread, mentions } => {
            format!("{label} {} ({}@)", count(unread), count(mentions))
        }
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
                Output::Message(m) => format!("message #{}", m.message.seq),
                Output::Changed { what, shown } => {
                    format!("{what} #{}", shown.message.seq)
                }
                Output::Event(e) => format!("[{}] #{} {}", e.room, e.seq, e.text),
            })
            .collect()
    }

    fn joined(room: &str, members: &[&str]) -> Event {
        Event::Joined {
            room: room.into(),
            members: members.iter().map(|m| m.to_string()).collect(),
            last_seq: 0,
            read_seq: 0,
            unread: 0,
            mentions: 0,
            topic: None,
            private: false,
            role: None,
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
            assert_eq!(out, vec![Output::message(msg("general", seq, "bob"))]);
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
        s.apply(
            Event::Left {
                room: "x".into(),
                reason: None,
            },
            now,
        );
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
        s.apply(
            Event::Left {
                room: "a".into(),
                reason: None,
            },
            now,
        );
        s.leaving("dm:alice:bob");
        assert_eq!(s.target, None);
        // The first room joined becomes the target when there is none.
        s.apply(joined("c", &[]), now);
        assert_eq!(s.target, Some(Target::Room("c".into())));
    }

    fn change(event: RoomEvent) -> Event {
        Event::Change(event)
    }

    fn edited(seq: u64, target: u64, text: &str) -> RoomEvent {
        RoomEvent::Edited(parley_client::protocol::Edited {
            room: "general".into(),
            seq,
            from: "bob".into(),
            target,
            text: text.into(),
            ts: "t".into(),
            nonce: None,
        })
    }

    fn reaction(seq: u64, target: u64, from: &str, on: bool) -> RoomEvent {
        RoomEvent::Reaction(parley_client::protocol::Reaction {
            room: "general".into(),
            seq,
            from: from.into(),
            target,
            emoji: "👍".into(),
            on,
            ts: "t".into(),
            nonce: None,
        })
    }

    #[test]
    fn changes_show_the_message_again_in_its_new_state() {
        let now = Instant::now();
        let mut s = ChatState::new("alice", Some(Target::Room("general".into())));
        s.apply(Event::Message(msg("general", 1, "bob")), now);
        let mut reply = msg("general", 2, "alice");
        reply.reply_to = Some(1);
        let out = s.apply(Event::Message(reply), now);
        let Output::Message(shown) = &out[0] else {
            panic!("{out:?}")
        };
        assert_eq!(
            shown.quote,
            Some(Quote {
                seq: 1,
                from: Some("bob".into()),
                text: "text 1".into(),
                deleted: false
            })
        );
        assert_eq!(
            statuses(s.apply(change(edited(3, 1, "fixed")), now)),
            ["bob edited #1"]
        );
        assert_eq!(
            statuses(s.apply(change(reaction(4, 1, "alice", true)), now)),
            ["alice reacted 👍 #1"]
        );
        let held = s.room("general").unwrap().get(1).unwrap();
        assert_eq!(held.text, "fixed");
        assert!(held.edited.is_some());
        assert!(s.room("general").unwrap().has_reacted(1, "👍", "alice"));
        assert_eq!(
            statuses(s.apply(change(reaction(5, 1, "alice", false)), now)),
            ["alice took back 👍 #1"]
        );
        let deleted = RoomEvent::Deleted(parley_client::protocol::Deleted {
            room: "general".into(),
            seq: 6,
            from: "bob".into(),
            target: 1,
            ts: "t".into(),
            nonce: None,
        });
        assert_eq!(statuses(s.apply(change(deleted), now)), ["bob deleted #1"]);
        // The reply quotes what is left of it; /history shows the state.
        let history = s.history();
        let Output::Message(reply) = &history[2] else {
            panic!("{history:?}")
        };
        assert!(reply.quote.as_ref().unwrap().deleted);
        let Output::Message(first) = &history[1] else {
            panic!("{history:?}")
        };
        assert!(first.message.deleted);
        // A change of a message not held shows nothing.
        assert!(s.apply(change(edited(7, 99, "x")), now).is_empty());
        // A failed edit says what failed.
        s.request("n1".into(), "edit");
        let out = s.apply(
            Event::SendFailed {
                nonce: "n1".into(),
                code: ErrorCode::Forbidden,
                message: "not yours".into(),
            },
            now,
        );
        assert_eq!(statuses(out), ["edit not sent (forbidden): not yours"]);
    }

    #[test]
    fn unread_counts_and_reading_the_current_room() {
        let now = Instant::now();
        let mut s = ChatState::new("alice", Some(Target::Room("general".into())));
        let join = |room: &str, last_seq, read_seq, unread, mentions| Event::Joined {
            room: room.into(),
            members: vec![],
            last_seq,
            read_seq,
            unread,
            mentions,
            topic: None,
            private: false,
            role: None,
        };
        s.apply(join("general", 4, 1, 3, 0), now);
        s.apply(join("random", 10, 8, 2, 1), now);
        // The history of the join is counted by the join already.
        for seq in 1..=4 {
            s.apply(Event::Message(msg("general", seq, "bob")), now);
        }
        assert_eq!(s.unread("general").unread, 3);
        // Looking at general reads it up to its last event, once.
        assert_eq!(s.take_reads(), [("general".to_string(), 4)]);
        assert!(s.take_reads().is_empty());
        assert_eq!(s.unread("general"), Unread::default());
        // New messages elsewhere count; one's own and those of the current
        // room do not.
        let mut hey = msg("random", 11, "bob");
        hey.text = "hey @Alice.".into();
        s.apply(Event::Message(hey), now);
        s.apply(Event::Message(msg("random", 12, "alice")), now);
        s.apply(Event::Message(msg("general", 5, "bob")), now);
        assert_eq!(
            s.unread("random"),
            Unread {
                unread: 3,
                mentions: 2
            }
        );
        assert_eq!(s.unread("general"), Unread::default());
        assert_eq!(s.take_reads(), [("general".to_string(), 5)]);
        assert_eq!(
            s.room_list(),
            [
                ("general".to_string(), Unread::default()),
                (
                    "random".to_string(),
                    Unread {
                        unread: 3,
                        mentions: 2
                    }
                )
            ]
        );
        // Another device read random.
        s.apply(
            Event::Read {
                room: "random".into(),
                seq: 12,
            },
            now,
        );
        assert_eq!(s.unread("random"), Unread::default());
        // Switching to random reads nothing new; its next message is read.
        s.target = Some(Target::Room("random".into()));
        assert!(s.take_reads().is_empty());
        s.apply(Event::Message(msg("random", 13, "bob")), now);
        assert_eq!(s.take_reads(), [("random".to_string(), 13)]);
        // Scrolled up into history, what arrives is not read: it counts,
        // until the end is seen again.
        s.seeing_end = false;
        let mut ping = msg("random", 14, "bob");
        ping.text = "@alice look".into();
        s.apply(Event::Message(ping), now);
        s.apply(Event::Message(msg("random", 15, "bob")), now);
        assert!(s.take_reads().is_empty());
        let behind = Unread {
            unread: 2,
            mentions: 1,
        };
        assert_eq!(s.unread("random"), behind);
        s.seeing_end = true;
        assert_eq!(s.take_reads(), [("random".to_string(), 15)]);
        assert_eq!(s.unread("random"), Unread::default());
        assert_eq!(room_label("random", Unread::default()), "random");
        assert_eq!(
            room_label(
                "@bob",
                Unread {
                    unread: 999,
                    mentions: 1
                }
            ),
            "@bob 999+ (1@)"
        );
    }

    fn member_event(seq: u64, from: &str, user: &str, change: MemberChange) -> RoomEvent {
        RoomEvent::Member(Member {
            room: "plans".into(),
            seq,
            from: from.into(),
            user: user.into(),
            change,
            role: None,
            reason: None,
            ts: "2026-11-22T21:00:00.123Z".into(),
            nonce: None,
        })
    }

    fn joined_plans(role: Option<Role>) -> Event {
        Event::Joined {
            room: "plans".into(),
            members: vec!["alice".into()],
            last_seq: 0,
            read_seq: 0,
            unread: 0,
            mentions: 0,
            topic: Some("lunch".into()),
            private: true,
            role,
        }
    }

    #[test]
    fn member_and_topic_events_are_lines_with_their_seq_once() {
        let now = Instant::now();
        let mut s = ChatState::new("carol", Some(Target::Room("plans".into())));
        s.apply(joined_plans(Some(Role::Member)), now);
        assert_eq!(s.topic("plans"), Some("lunch"));
        assert!(s.is_private("plans"));
        assert_eq!(s.my_role("plans"), Some(Role::Member));
        let mut promote = member_event(3, "alice", "carol", MemberChange::Role);
        if let RoomEvent::Member(m) = &mut promote {
            m.role = Some(Role::Moderator);
        }
        assert_eq!(
            statuses(s.apply(Event::Change(promote.clone()), now)),
            ["[plans] #3 alice made carol moderator"]
        );
        assert_eq!(s.my_role("plans"), Some(Role::Moderator));
        // A repeat (a history page after a re-join) is not shown again.
        assert!(s.apply(Event::Change(promote), now).is_empty());
        let topic = RoomEvent::Topic(parley_client::protocol::Topic {
            room: "plans".into(),
            seq: 4,
            from: "alice".into(),
            topic: String::new(),
            ts: "t".into(),
            nonce: None,
        });
        assert_eq!(
            statuses(s.apply(Event::Change(topic), now)),
            ["[plans] #4 alice cleared the topic"]
        );
        assert_eq!(s.topic("plans"), None);
        // Room events move the read position like any event.
        assert_eq!(s.take_reads(), [("plans".to_string(), 4)]);
    }

    #[test]
    fn a_kick_drops_the_room_and_says_by_whom() {
        let now = Instant::now();
        let mut s = ChatState::new("carol", Some(Target::Room("plans".into())));
        s.apply(joined("general", &[]), now);
        s.apply(joined_plans(Some(Role::Member)), now);
        s.apply(
            Event::Presence {
                room: "plans".into(),
                user: "dave".into(),
                state: PresenceState::Joined,
            },
            now,
        );
        let kick_dave = member_event(4, "bob", "Dave", MemberChange::Removed);
        s.apply(Event::Change(kick_dave), now);
        assert_eq!(s.members("plans"), ["alice"], "dave is out");
        let kick = member_event(5, "bob", "carol", MemberChange::Removed);
        assert_eq!(
            statuses(s.apply(Event::Change(kick), now)),
            ["[plans] #5 bob kicked carol"]
        );
        let out = s.apply(
            Event::Left {
                room: "plans".into(),
                reason: Some("kicked".into()),
            },
            now,
        );
        assert_eq!(
            statuses(out),
            [
                "you were kicked from #plans by bob",
                "now talking in general"
            ]
        );
        assert!(!s.is_joined("plans"));
        assert_eq!(s.room("plans").and_then(RoomState::left), Some("kicked"));
        assert_eq!(s.room_list().len(), 1);
        // Joined again (re-invited): in the room again.
        s.apply(joined_plans(Some(Role::Member)), now);
        assert_eq!(s.room("plans").and_then(RoomState::left), None);
        // A ban with its reason, while looking at another room.
        s.target = Some(Target::Room("general".into()));
        let mut ban = member_event(7, "bob", "Carol", MemberChange::Banned);
        if let RoomEvent::Member(m) = &mut ban {
            m.reason = Some("spam".into());
        }
        s.apply(Event::Change(ban), now);
        let out = s.apply(
            Event::Left {
                room: "plans".into(),
                reason: Some("banned".into()),
            },
            now,
        );
        assert_eq!(statuses(out), ["you were banned from #plans by bob: spam"]);
        assert_eq!(s.target, Some(Target::Room("general".into())));
    }

    #[test]
    fn a_refused_join_is_no_room() {
        let now = Instant::now();
        let mut s = ChatState::new("carol", Some(Target::Room("general".into())));
        s.apply(joined("general", &[]), now);
        s.joining("plans");
        s.target = Some(Target::Room("plans".into()));
        let out = s.apply(
            Event::JoinFailed {
                room: "plans".into(),
                code: ErrorCode::Forbidden,
                message: "plans is private".into(),
            },
            now,
        );
        assert_eq!(
            statuses(out),
            [
                "cannot join plans (forbidden): plans is private",
                "now talking in general"
            ]
        );
        assert!(s.settled());
        assert!(!s.is_joined("plans"));
    }

    #[test]
    fn parts_end_with_left_or_a_refusal() {
        let now = Instant::now();
        let mut s = ChatState::new("alice", Some(Target::Room("plans".into())));
        s.apply(joined_plans(Some(Role::Owner)), now);
        s.parting("plans");
        assert!(!s.settled(), "a part is waited for");
        let out = s.apply(
            Event::PartFailed {
                room: "plans".into(),
                code: ErrorCode::Conflict,
                message: "the last owner cannot leave".into(),
            },
            now,
        );
        assert_eq!(
            statuses(out),
            ["part plans failed (conflict): the last owner cannot leave"]
        );
        assert!(s.settled());
        assert!(s.is_joined("plans"));
        s.parting("plans");
        let out = s.apply(
            Event::Left {
                room: "plans".into(),
                reason: Some("parted".into()),
            },
            now,
        );
        assert_eq!(
            statuses(out),
            [
                "you parted #plans",
                "not in a room now; /join ROOM or /dm USER"
            ]
        );
        assert!(s.settled());
        // A part on another device.
        s.apply(joined_plans(Some(Role::Member)), now);
        let out = s.apply(
            Event::Left {
                room: "plans".into(),
                reason: Some("parted".into()),
            },
            now,
        );
        assert_eq!(
            statuses(out)[0],
            "you parted #plans (on another connection)"
        );
    }

    #[test]
    fn rest_results_end_their_call_and_a_created_room_is_joined() {
        let now = Instant::now();
        let mut s = ChatState::new("alice", Some(Target::Room("general".into())));
        s.rest_started();
        s.rest_started();
        assert!(!s.settled());
        let out = s.apply_notice(Notice::Created {
            room: "plans".into(),
            private: true,
            topic: Some("lunch".into()),
        });
        assert_eq!(
            statuses(out),
            ["created room plans (private), topic: lunch"]
        );
        assert_eq!(s.target, Some(Target::Room("plans".into())));
        assert_eq!(s.take_joins(), ["plans"]);
        assert!(s.take_joins().is_empty());
        assert!(!s.settled(), "the join is waited for");
        s.apply(joined_plans(Some(Role::Owner)), now);
        let out = s.apply_notice(Notice::Members {
            room: "plans".into(),
            members: [
                ("bob", Role::Moderator),
                ("alice", Role::Owner),
                ("carol", Role::Member),
            ]
            .into_iter()
            .map(|(user, role)| MemberInfo {
                user: user.into(),
                role,
                since: "t".into(),
            })
            .collect(),
        });
        assert_eq!(
            statuses(out),
            ["3 members of plans: alice (owner), bob (moderator), carol (member)"]
        );
        assert!(s.settled());
        assert_eq!(
            s.room("plans").unwrap().role_of("BOB"),
            Some(Role::Moderator)
        );
    }

    #[test]
    fn mentions_are_whole_names() {
        assert!(mentions("hi @bob", "bob"));
        assert!(mentions("@BOB: look", "bob"));
        assert!(mentions("thanks @bob.", "bob"));
        assert!(mentions("(@bob)", "bob"));
        assert!(!mentions("hi @bobby", "bob"));
        assert!(!mentions("mail bob@example.org", "bob"));
        assert!(!mentions("hi bob", "bob"));
        assert!(mentions("@bob.smith here", "bob.smith"));
        assert!(!mentions("@bob.smith here", "bob"));
        assert!(mentions("é@bob", "bob"));
    }
}
