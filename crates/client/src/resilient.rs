//! A client that survives disconnects — what the protocol's delivery
//! guarantee asks of a client.
//!
//! [`Client`] runs one background task that owns the [`Connection`]. When the
//! connection breaks (node drained with 1001, slow-consumer 4408, crash), it
//! does what [`CloseCode::action`] says: reconnect at once (1001/4408), with
//! exponential backoff and jitter (a lost connection, 1000, 4429), or not at
//! all (4401, a refused token; 1002–1009, a frame the server refuses) — and
//! on reconnecting re-joins every room with `since` = the last `seq` it handed
//! out, pages forward while `more` is true, and fills any gap it sees in the
//! live stream from history. Unacknowledged requests — sends, replies,
//! edits, deletes, reactions — are sent again with the same nonce, which the
//! server de-duplicates (one nonce namespace for every kind, protocol 1.1
//! §1), so a retry after a reconnect never applies twice. Read positions
//! are resent too: `read` only moves forward, so a repeat is harmless. The
//! application therefore sees every event of a joined room exactly once and
//! in `seq` order, and every request it queued is carried out once.
//!
//! Membership (protocol 1.1 §3): [`Client::part`] ends the user's
//! membership of a room; the room is not re-joined after a reconnect, and a
//! part asked while disconnected is carried out on reconnecting. A `left`
//! push (the user was kicked or banned, or parted on another connection)
//! takes the room out of the set the client re-joins, and is reported as
//! [`Event::Left`] with its reason.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use parley_protocol::backoff::Backoff;
use parley_protocol::{
    ClientAction, ClientFrame, CloseCode, ErrorCode, MAX_EMOJI_BYTES, Message, PresenceState, Role,
    RoomEvent, ServerFrame, left_reason, valid_emoji,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::connection::{ConnectOptions, Connection, Welcome, room_event};
use crate::{ClientError, Result};

#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `ws://host:port/ws`.
    pub url: String,
    /// Other nodes to try, in turn, when a connection fails or is lost.
    pub fallback_urls: Vec<String>,
    pub token: String,
    /// Rooms to join at start.
    pub rooms: Vec<String>,
    pub connect: ConnectOptions,
    /// Longest base wait between reconnect attempts (jitter adds up to half).
    pub max_backoff: Duration,
    /// Prefix of generated nonces.
    pub nonce_prefix: String,
}

impl ClientConfig {
    pub fn new(url: impl Into<String>, token: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            fallback_urls: Vec::new(),
            token: token.into(),
            rooms: Vec::new(),
            connect: ConnectOptions::default(),
            max_backoff: Duration::from_secs(5),
            nonce_prefix: "c".into(),
        }
    }
}

/// What the client reports to the application.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Connected(Welcome),
    /// The connection ended, or a connection attempt failed.
    Disconnected {
        /// The close code: the close frame's, or 4401 for a hello refused
        /// with `unauthorized` (the server closes with 4401 right after).
        code: Option<u16>,
        reason: String,
        /// What the client does now ([`ClientError::action`]); after
        /// [`ClientAction::Stop`] it ends and sends no more events.
        action: ClientAction,
    },
    Joined {
        room: String,
        members: Vec<String>,
        /// The room's last seq at the join.
        last_seq: u64,
        /// The user's stored read position (0: never read), and what is
        /// unread after it (protocol 1.1 §2).
        read_seq: u64,
        unread: u64,
        mentions: u64,
        /// The room's topic, if it has one (protocol 1.1 §3).
        topic: Option<String>,
        /// Only members see and join it.
        private: bool,
        /// The user's role in the room (None: a DM).
        role: Option<Role>,
    },
    /// The client is out of `room` and no longer re-joins it.
    Left {
        room: String,
        /// None: this client asked to leave (the user stays a member).
        /// Otherwise why the membership ended ([`left_reason`]): `parted`
        /// (a part of this client, or of another connection of the
        /// user), `kicked` or `banned` (an owner or moderator; the room's
        /// `member` event saying who came just before).
        reason: Option<String>,
    },
    /// A message of a joined room (exactly once, in seq order), or a direct
    /// message pushed for a DM room that was not joined.
    Message(Message),
    /// Any other event of a joined room — an edit, delete, reaction,
    /// member or topic event (protocol 1.1) — exactly once and in seq
    /// order with the messages: they share one sequence.
    Change(RoomEvent),
    /// A queued request (send, reply, edit, delete, reaction) was stored:
    /// `seq` is its event's (or, for a reaction that changed nothing, the
    /// event that set the current state).
    Acked {
        nonce: String,
        room: String,
        seq: u64,
    },
    /// A queued request the server refused for good (not retried).
    SendFailed {
        nonce: String,
        code: ErrorCode,
        message: String,
    },
    Presence {
        room: String,
        user: String,
        state: PresenceState,
    },
    Typing {
        room: String,
        user: String,
    },
    /// The user's read position in `room` is now `seq`: the answer to
    /// [`Client::read`], or a push because another device of the user read.
    Read {
        room: String,
        seq: u64,
    },
    /// The server refused to join `room` (a private room one is not a
    /// member of, a ban, …): it is not joined, nor re-joined. Also after a
    /// reconnect, for a room the user was taken out of meanwhile.
    JoinFailed {
        room: String,
        code: ErrorCode,
        message: String,
    },
    /// The server refused to end the membership of `room` (the last
    /// owner must hand the room over first, say): it stays joined.
    PartFailed {
        room: String,
        code: ErrorCode,
        message: String,
    },
    /// Any other error reply.
    Error {
        code: ErrorCode,
        message: String,
    },
}

enum Command {
    Join(String),
    Leave(String),
    Part(String),
    Send(Outgoing),
    Read { room: String, seq: u64 },
    Typing(String),
    Stop,
}

/// Largest text the server accepts by default (protocol v1); longer sends
/// fail at once instead of being retried forever.
pub const MAX_TEXT_BYTES: usize = 4096;

/// A queued request, kept until the server answers it for good.
#[derive(Debug, Clone)]
struct Outgoing {
    nonce: String,
    request: Request,
}

/// What a queued request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Request {
    Send {
        room: Option<String>,
        to: Option<String>,
        text: String,
        reply_to: Option<u64>,
    },
    Edit {
        room: String,
        target: u64,
        text: String,
    },
    Delete {
        room: String,
        target: u64,
    },
    React {
        room: String,
        target: u64,
        emoji: String,
        on: bool,
    },
}

impl Outgoing {
    fn frame(&self, id: u64) -> ClientFrame {
        let nonce = Some(self.nonce.clone());
        match self.request.clone() {
            Request::Send {
                room,
                to,
                text,
                reply_to,
            } => ClientFrame::Send {
                id: Some(id),
                room,
                to,
                text,
                nonce,
                reply_to,
            },
            Request::Edit { room, target, text } => ClientFrame::Edit {
                id: Some(id),
                room,
                target,
                text,
                nonce,
            },
            Request::Delete { room, target } => ClientFrame::Delete {
                id: Some(id),
                room,
                target,
                nonce,
            },
            Request::React {
                room,
                target,
                emoji,
                on,
            } => ClientFrame::React {
                id: Some(id),
                room,
                target,
                emoji,
                on,
                nonce,
            },
        }
    }

    /// Why the server would refuse it on every retry, if it would.
    fn refused(&self) -> Option<(ErrorCode, String)> {
        match &self.request {
            Request::Send { text, .. } | Request::Edit { text, .. }
                if text.len() > MAX_TEXT_BYTES =>
            {
                Some((
                    ErrorCode::TooLarge,
                    format!(
                        "text is {} bytes; the limit is {MAX_TEXT_BYTES}",
                        text.len()
                    ),
                ))
            }
            Request::React { emoji, .. } if !valid_emoji(emoji) => Some((
                ErrorCode::BadRequest,
                format!("{emoji:?} is not a reaction (1–{MAX_EMOJI_BYTES} bytes, no spaces)"),
            )),
            _ => None,
        }
    }
}

pub struct Client {
    commands: mpsc::UnboundedSender<Command>,
    task: JoinHandle<()>,
    prefix: String,
    counter: std::sync::atomic::AtomicU64,
}

impl Client {
    /// Starts the client; events arrive on the returned receiver.
    pub fn start(config: ClientConfig) -> (Client, mpsc::UnboundedReceiver<Event>) {
        let (commands, rx) = mpsc::unbounded_channel();
        let (events, events_rx) = mpsc::unbounded_channel();
        let prefix = format!("{}-{:08x}", config.nonce_prefix, rand::random::<u32>());
        let rooms = config.rooms.iter().map(|r| (r.clone(), None)).collect();
        let task = Task {
            config,
            events,
            commands: rx,
            rooms,
            dm_seen: HashMap::new(),
            unacked: Vec::new(),
            inflight: HashMap::new(),
            reads: BTreeMap::new(),
            reads_inflight: HashMap::new(),
            parts: BTreeMap::new(),
            here: BTreeSet::new(),
            retry_at: None,
            attempt: 0,
        };
        let task = tokio::spawn(task.run());
        (
            Client {
                commands,
                task,
                prefix,
                counter: Default::default(),
            },
            events_rx,
        )
    }

    pub fn join(&self, room: &str) {
        let _ = self.commands.send(Command::Join(room.to_string()));
    }

    pub fn leave(&self, room: &str) {
        let _ = self.commands.send(Command::Leave(room.to_string()));
    }

    /// Ends the user's membership of `room` (protocol 1.1 §3): the client
    /// stops re-joining it at once, and asks the server until it answers
    /// (on reconnecting, if disconnected). Done: [`Event::Left`] with
    /// reason `parted`; refused (the last owner, say):
    /// [`Event::PartFailed`], and the room stays joined.
    pub fn part(&self, room: &str) {
        let _ = self.commands.send(Command::Part(room.to_string()));
    }

    /// Tells the room's other members that this user is typing (best effort).
    pub fn typing(&self, room: &str) {
        let _ = self.commands.send(Command::Typing(room.to_string()));
    }

    /// Queues a message for a room; returns its nonce (reported in `Acked`).
    pub fn send(&self, room: &str, text: &str) -> String {
        self.send_to(Some(room.to_string()), None, text)
    }

    /// Queues a direct message to a user; returns its nonce.
    pub fn send_dm(&self, to: &str, text: &str) -> String {
        self.send_to(None, Some(to.to_string()), text)
    }

    /// Queues a reply to message `reply_to` of a room; returns its nonce.
    pub fn reply(&self, room: &str, reply_to: u64, text: &str) -> String {
        self.queue(Request::Send {
            room: Some(room.to_string()),
            to: None,
            text: text.into(),
            reply_to: Some(reply_to),
        })
    }

    /// Queues an edit of one's message `target`; returns its nonce.
    pub fn edit(&self, room: &str, target: u64, text: &str) -> String {
        self.queue(Request::Edit {
            room: room.to_string(),
            target,
            text: text.into(),
        })
    }

    /// Queues the delete of message `target`; returns its nonce.
    pub fn delete(&self, room: &str, target: u64) -> String {
        self.queue(Request::Delete {
            room: room.to_string(),
            target,
        })
    }

    /// Queues adding (`on`) or removing a reaction; returns its nonce.
    pub fn react(&self, room: &str, target: u64, emoji: &str, on: bool) -> String {
        self.queue(Request::React {
            room: room.to_string(),
            target,
            emoji: emoji.to_string(),
            on,
        })
    }

    /// Moves the user's read position in `room` to `seq` (never back); the
    /// stored position comes back as [`Event::Read`]. Kept until answered,
    /// and sent again after a reconnect.
    pub fn read(&self, room: &str, seq: u64) {
        let _ = self.commands.send(Command::Read {
            room: room.to_string(),
            seq,
        });
    }

    fn send_to(&self, room: Option<String>, to: Option<String>, text: &str) -> String {
        self.queue(Request::Send {
            room,
            to,
            text: text.into(),
            reply_to: None,
        })
    }

    fn queue(&self, request: Request) -> String {
        let n = self
            .counter
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        let nonce = format!("{}-{n}", self.prefix);
        let _ = self.commands.send(Command::Send(Outgoing {
            nonce: nonce.clone(),
            request,
        }));
        nonce
    }

    /// Closes the connection and ends the background task.
    pub async fn stop(self) {
        let _ = self.commands.send(Command::Stop);
        let _ = self.task.await;
    }
}

struct Task {
    config: ClientConfig,
    events: mpsc::UnboundedSender<Event>,
    commands: mpsc::UnboundedReceiver<Command>,
    /// Joined rooms → the last seq handed to the application (None: none yet).
    rooms: BTreeMap<String, Option<u64>>,
    /// Direct-message rooms not joined → last seq seen, to drop repeats.
    dm_seen: HashMap<String, u64>,
    /// Sends not acknowledged yet, in order.
    unacked: Vec<Outgoing>,
    /// Request id → nonce of sends on the current connection.
    inflight: HashMap<u64, String>,
    /// Read positions asked for and not answered yet, per room (the
    /// highest asked).
    reads: BTreeMap<String, u64>,
    /// Request id → (room, seq asked) of `read` requests on the current
    /// connection.
    reads_inflight: HashMap<u64, (String, u64)>,
    /// Rooms to part, until the server answers → their entry in `rooms`
    /// before the part (`Some(last)`: they were joined), to be joined
    /// again as they were if the server refuses.
    parts: BTreeMap<String, Option<Option<u64>>>,
    /// The rooms the current connection is subscribed to.
    here: BTreeSet<String>,
    retry_at: Option<tokio::time::Instant>,
    /// Connection attempts that failed or ended: picks the next URL.
    attempt: usize,
}

/// Why a connection ended.
enum Ended {
    Stop,
    Lost(ClientError),
}

impl Task {
    /// Whether a refusal with `code` is worth another try (the server was
    /// busy or briefly without its store): if so, the queue goes again in
    /// about a second.
    fn retry_soon(&mut self, code: ErrorCode) -> bool {
        let transient = matches!(
            code,
            ErrorCode::Unavailable | ErrorCode::RateLimited | ErrorCode::Internal
        );
        if transient {
            self.retry_at
                .get_or_insert(tokio::time::Instant::now() + Duration::from_secs(1));
        }
        transient
    }

    fn emit(&self, event: Event) {
        let _ = self.events.send(event);
    }

    async fn run(mut self) {
        // 200 ms doubling up to `max_backoff`, plus up to half as much again;
        // afresh after every connection that got through hello and joins.
        let mut backoff =
            Backoff::new(Duration::from_millis(200), self.config.max_backoff).with_jitter(0.5);
        loop {
            let error = match self.connect().await {
                Ok(conn) => {
                    backoff.reset();
                    match self.serve(conn).await {
                        Ended::Stop => return,
                        Ended::Lost(e) => e,
                    }
                }
                Err(e) => e,
            };
            let action = error.action();
            self.attempt += 1;
            self.emit(Event::Disconnected {
                code: error.close_code().or(error.close().map(CloseCode::code)),
                reason: error.to_string(),
                action,
            });
            self.inflight.clear();
            self.here.clear();
            self.reads_inflight.clear();
            let wait = match action {
                // A bad token or a refused frame does not get better by retrying.
                ClientAction::Stop => return,
                // At once: 50 ms plus up to 25 ms, to spread a drained node's crowd.
                ClientAction::ReconnectNow => {
                    Duration::from_millis(50 + rand::random::<u64>() % 26)
                }
                ClientAction::ReconnectWithBackoff => backoff
                    .next_delay(rand::random())
                    .max(error.close().map_or(Duration::ZERO, CloseCode::min_delay)),
            };
            if self.idle(wait).await {
                return;
            }
        }
    }

    /// Waits while disconnected, still taking commands. True on Stop.
    async fn idle(&mut self, wait: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return false,
                cmd = self.commands.recv() => match cmd {
                    None | Some(Command::Stop) => return true,
                    Some(Command::Join(room)) => {
                        // Joining again takes back a part not carried out
                        // yet: the room resumes where it was.
                        let last = self.parts.remove(&room).flatten().flatten();
                        self.rooms.entry(room).or_insert(last);
                    }
                    Some(Command::Leave(room)) => { self.rooms.remove(&room); }
                    Some(Command::Part(room)) => self.want_part(room),
                    Some(Command::Send(out)) => {
                        if self.accept_send(&out) {
                            self.unacked.push(out);
                        }
                    }
                    Some(Command::Read { room, seq }) => self.want_read(room, seq),
                    Some(Command::Typing(_)) => {}
                },
            }
        }
    }

    async fn connect(&mut self) -> Result<Connection> {
        let urls = 1 + self.config.fallback_urls.len();
        let url = match self.attempt % urls {
            0 => &self.config.url,
            i => &self.config.fallback_urls[i - 1],
        };
        let mut conn = Connection::connect_with(url, &self.config.connect).await?;
        let welcome = conn.hello(&self.config.token).await?;
        self.emit(Event::Connected(welcome));
        let rooms: Vec<String> = self.rooms.keys().cloned().collect();
        for room in rooms {
            self.join_room(&mut conn, &room).await?;
        }
        for out in self.unacked.clone() {
            self.transmit(&mut conn, &out).await?;
        }
        for (room, seq) in self.reads.clone() {
            self.transmit_read(&mut conn, &room, seq).await?;
        }
        for room in self.parts.keys().cloned().collect::<Vec<_>>() {
            self.part_room(&mut conn, &room).await?;
        }
        Ok(conn)
    }

    async fn serve(&mut self, mut conn: Connection) -> Ended {
        loop {
            let retry = self.retry_at;
            tokio::select! {
                cmd = self.commands.recv() => {
                    let result = match cmd {
                        None | Some(Command::Stop) => {
                            conn.close().await;
                            return Ended::Stop;
                        }
                        Some(Command::Join(room)) => {
                            // Takes back a part not carried out yet.
                            let last = self.parts.remove(&room).flatten().flatten();
                            if self.rooms.contains_key(&room) {
                                Ok(())
                            } else {
                                self.rooms.insert(room.clone(), last);
                                self.join_room(&mut conn, &room).await
                            }
                        }
                        Some(Command::Leave(room)) => {
                            self.rooms.remove(&room);
                            self.here.remove(&room);
                            match conn.leave(&room).await {
                                Ok(()) | Err(ClientError::Server { .. }) => {
                                    self.emit(Event::Left { room, reason: None });
                                    Ok(())
                                }
                                Err(e) => Err(e),
                            }
                        }
                        Some(Command::Part(room)) => {
                            self.want_part(room.clone());
                            self.part_room(&mut conn, &room).await
                        }
                        Some(Command::Send(out)) => {
                            if self.accept_send(&out) {
                                self.unacked.push(out.clone());
                                self.transmit(&mut conn, &out).await
                            } else {
                                Ok(())
                            }
                        }
                        Some(Command::Read { room, seq }) => {
                            self.want_read(room.clone(), seq);
                            // One read in flight per room: a busy room read
                            // as it scrolls by asks again when it is answered.
                            if self.read_inflight(&room) {
                                Ok(())
                            } else {
                                self.transmit_read(&mut conn, &room, seq).await
                            }
                        }
                        Some(Command::Typing(room)) => {
                            conn.typing(&room).await
                        }
                    };
                    if let Err(e) = result {
                        return Ended::Lost(e);
                    }
                }
                frame = conn.recv() => {
                    let result = match frame {
                        Ok(frame) => self.handle(&mut conn, frame).await,
                        Err(e) => Err(e),
                    };
                    if let Err(e) = result {
                        return Ended::Lost(e);
                    }
                }
                _ = async { match retry { Some(at) => tokio::time::sleep_until(at).await, None => std::future::pending().await } } => {
                    self.retry_at = None;
                    let waiting: Vec<Outgoing> = self
                        .unacked
                        .iter()
                        .filter(|o| !self.inflight.values().any(|n| *n == o.nonce))
                        .cloned()
                        .collect();
                    for out in waiting {
                        if let Err(e) = self.transmit(&mut conn, &out).await {
                            return Ended::Lost(e);
                        }
                    }
                    let reads: Vec<(String, u64)> = self
                        .reads
                        .iter()
                        .filter(|(room, _)| !self.read_inflight(room))
                        .map(|(r, s)| (r.clone(), *s))
                        .collect();
                    for (room, seq) in reads {
                        if let Err(e) = self.transmit_read(&mut conn, &room, seq).await {
                            return Ended::Lost(e);
                        }
                    }
                    for room in self.parts.keys().cloned().collect::<Vec<_>>() {
                        if let Err(e) = self.part_room(&mut conn, &room).await {
                            return Ended::Lost(e);
                        }
                    }
                }
            }
        }
    }

    /// Refuses at once what the server would refuse for good on every retry.
    fn accept_send(&self, out: &Outgoing) -> bool {
        if let Some((code, message)) = out.refused() {
            self.emit(Event::SendFailed {
                nonce: out.nonce.clone(),
                code,
                message,
            });
            return false;
        }
        true
    }

    async fn transmit(&mut self, conn: &mut Connection, out: &Outgoing) -> Result<()> {
        let id = conn.next_id();
        self.inflight.insert(id, out.nonce.clone());
        conn.send_frame(&out.frame(id)).await
    }

    fn read_inflight(&self, room: &str) -> bool {
        self.reads_inflight.values().any(|(r, _)| r == room)
    }

    /// Notes a read position to store; only the highest asked matters.
    fn want_read(&mut self, room: String, seq: u64) {
        let at = self.reads.entry(room).or_insert(seq);
        *at = (*at).max(seq);
    }

    async fn transmit_read(&mut self, conn: &mut Connection, room: &str, seq: u64) -> Result<()> {
        let id = conn.next_id();
        self.reads_inflight.insert(id, (room.to_string(), seq));
        conn.send_frame(&ClientFrame::Read {
            id: Some(id),
            room: room.to_string(),
            seq,
        })
        .await
    }

    /// Notes a part to carry out: the room is no longer joined, nor
    /// re-joined on reconnecting, until the server refuses the part.
    fn want_part(&mut self, room: String) {
        let last = self.rooms.remove(&room);
        self.parts.entry(room).or_insert(last);
    }

    /// Asks the server to end the membership of `room` (noted in `parts`),
    /// and settles it by the answer: done; refused for good, when the room
    /// is joined again as it was (re-joined with `since` if this
    /// connection is not in it); or kept for a retry (busy, lost
    /// connection).
    async fn part_room(&mut self, conn: &mut Connection, room: &str) -> Result<()> {
        let done = match conn.part(room).await {
            Ok(()) => Ok(()),
            // Not a member (any more): a part whose answer a lost
            // connection took, or one from another device.
            Err(ClientError::Server {
                code: ErrorCode::NotFound,
                ..
            }) => Ok(()),
            Err(ClientError::Server { code, message }) => Err((code, message)),
            Err(e) => return Err(e),
        };
        match done {
            Ok(()) => {
                self.parts.remove(room);
                self.here.remove(room);
                self.reads.remove(room);
                self.emit(Event::Left {
                    room: room.to_string(),
                    reason: Some(left_reason::PARTED.to_string()),
                });
            }
            Err((code, _)) if self.retry_soon(code) => {}
            Err((code, message)) => {
                self.emit(Event::PartFailed {
                    room: room.to_string(),
                    code,
                    message,
                });
                if let Some(Some(last)) = self.parts.remove(room) {
                    // Still a member: the room goes on.
                    self.rooms.insert(room.to_string(), last);
                    if !self.here.contains(room) {
                        self.join_room(conn, room).await?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Joins (or re-joins with `since`) and hands out what was missed.
    async fn join_room(&mut self, conn: &mut Connection, room: &str) -> Result<()> {
        // A DM room whose pushes were already handed out resumes after them.
        let since = self
            .rooms
            .get(room)
            .copied()
            .flatten()
            .or_else(|| self.dm_seen.get(room).copied());
        if let Some(seq) = since {
            self.rooms.insert(room.to_string(), Some(seq));
        }
        let joined = match conn.join(room, since).await {
            Ok(j) => {
                self.here.insert(room.to_string());
                j
            }
            Err(ClientError::Server { code, message }) => {
                self.rooms.remove(room);
                self.emit(Event::JoinFailed {
                    room: room.to_string(),
                    code,
                    message,
                });
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        self.emit(Event::Joined {
            room: room.to_string(),
            members: joined.members,
            last_seq: joined.last_seq,
            read_seq: joined.read_seq,
            unread: joined.unread,
            mentions: joined.mentions,
            topic: joined.topic,
            private: joined.private,
            role: joined.role,
        });
        for e in joined.events {
            self.accept(e);
        }
        if joined.more && since.is_some() {
            self.fill(conn, room, u64::MAX).await?;
        }
        Ok(())
    }

    /// Hands out a room event if it is the next one; returns false on a
    /// gap. Every event counts, not only messages: they share the room's
    /// sequence, so a message after an edit is the next one, not a gap.
    fn accept(&mut self, e: RoomEvent) -> bool {
        let Some(last) = self.rooms.get_mut(e.room()) else {
            return true;
        };
        match *last {
            Some(l) if e.seq() <= l => true,
            Some(l) if e.seq() > l + 1 => false,
            _ => {
                *last = Some(e.seq());
                let event = match e {
                    RoomEvent::Message(m) => Event::Message(m),
                    e @ (RoomEvent::Edited(_)
                    | RoomEvent::Deleted(_)
                    | RoomEvent::Reaction(_)
                    | RoomEvent::Member(_)
                    | RoomEvent::Topic(_)) => Event::Change(e),
                };
                let _ = self.events.send(event);
                true
            }
        }
    }

    /// Pages forward from the last handed-out seq until `upto` (or the end).
    async fn fill(&mut self, conn: &mut Connection, room: &str, upto: u64) -> Result<()> {
        loop {
            let Some(Some(last)) = self.rooms.get(room).copied() else {
                return Ok(());
            };
            if last >= upto {
                return Ok(());
            }
            let page = conn.history_events(room, None, Some(last), Some(500)).await;
            let (events, more) = match page {
                Ok(page) => page,
                Err(ClientError::Server { .. }) => return Ok(()),
                Err(e) => return Err(e),
            };
            let progressed = !events.is_empty();
            for e in events {
                self.accept(e);
            }
            if !more || !progressed {
                return Ok(());
            }
        }
    }

    /// Hands out a pushed event of a joined room; after a gap, pages in
    /// what is missing first.
    async fn accept_or_fill(&mut self, conn: &mut Connection, e: RoomEvent) -> Result<()> {
        if !self.accept(e.clone()) {
            let (room, seq) = (e.room().to_string(), e.seq());
            self.fill(conn, &room, seq - 1).await?;
            self.accept(e);
        }
        Ok(())
    }

    /// A pushed room event: handed out in order if its room is joined; a
    /// direct message of a DM room not joined is handed out once.
    async fn handle_event(&mut self, conn: &mut Connection, event: RoomEvent) -> Result<()> {
        if self.rooms.contains_key(event.room()) {
            return self.accept_or_fill(conn, event).await;
        }
        if let RoomEvent::Message(m) = event {
            let seen = self.dm_seen.entry(m.room.clone()).or_insert(0);
            if m.seq > *seen {
                *seen = m.seq;
                self.emit(Event::Message(m));
            }
        }
        Ok(())
    }

    async fn handle(&mut self, conn: &mut Connection, frame: ServerFrame) -> Result<()> {
        let frame = match room_event(frame) {
            Ok(event) => return self.handle_event(conn, event).await,
            Err(frame) => *frame,
        };
        match frame {
            // The server took this connection out of the room: kicked,
            // banned, or parted on another connection. Not re-joined.
            ServerFrame::Left {
                re: None,
                room,
                reason,
            } => self.taken_out(room, reason),
            ServerFrame::Ack {
                re: Some(id),
                room,
                seq,
                ..
            } => {
                if let Some(nonce) = self.inflight.remove(&id) {
                    self.unacked.retain(|o| o.nonce != nonce);
                    self.emit(Event::Acked { nonce, room, seq });
                }
            }
            ServerFrame::Error {
                re: Some(id),
                code,
                message,
            } if self.inflight.contains_key(&id) => {
                let nonce = self.inflight.remove(&id).unwrap_or_default();
                if !self.retry_soon(code) {
                    self.unacked.retain(|o| o.nonce != nonce);
                    self.emit(Event::SendFailed {
                        nonce,
                        code,
                        message,
                    });
                }
            }
            ServerFrame::Read {
                re: Some(id),
                room,
                seq,
            } if self.reads_inflight.contains_key(&id) => {
                // Answered for the highest position asked: done (the
                // answer may be lower, capped at the room's last seq).
                let asked = self.reads_inflight.remove(&id).map_or(0, |(_, s)| s);
                match self.reads.get(&room).copied() {
                    Some(want) if want <= asked.max(seq) => {
                        self.reads.remove(&room);
                    }
                    // Asked further meanwhile.
                    Some(want) => self.transmit_read(conn, &room, want).await?,
                    None => {}
                }
                self.emit(Event::Read { room, seq });
            }
            // Another device of the user read further.
            ServerFrame::Read {
                re: None,
                room,
                seq,
            } => self.emit(Event::Read { room, seq }),
            ServerFrame::Error {
                re: Some(id),
                code,
                message,
            } if self.reads_inflight.contains_key(&id) => {
                let (room, _) = self.reads_inflight.remove(&id).unwrap_or_default();
                if !self.retry_soon(code) {
                    self.reads.remove(&room);
                    self.emit(Event::Error { code, message });
                }
            }
            ServerFrame::Error { code, message, .. } => self.emit(Event::Error { code, message }),
            ServerFrame::Presence { room, user, state } => {
                self.emit(Event::Presence { room, user, state })
            }
            ServerFrame::Typing { room, user } => self.emit(Event::Typing { room, user }),
            // Answers to requests no longer waited for, and frames that
            // come only as answers (welcome, joined, history, pong).
            _ => {}
        }
        Ok(())
    }

    /// A `left` push: the room is no longer joined nor re-joined, and what
    /// was queued for it stays queued only to be refused.
    fn taken_out(&mut self, room: String, reason: Option<String>) {
        // A part still to be carried out is moot now.
        let parting = self.parts.remove(&room).is_some();
        self.here.remove(&room);
        self.reads.remove(&room);
        // Once: a part of this client was reported with its answer.
        if self.rooms.remove(&room).is_some() || parting {
            self.emit(Event::Left { room, reason });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(request: Request) -> Outgoing {
        Outgoing {
            nonce: "c-1".into(),
            request,
        }
    }

    #[test]
    fn every_request_carries_its_nonce() {
        let requests = [
            Request::Send {
                room: Some("general".into()),
                to: None,
                text: "yes".into(),
                reply_to: Some(4),
            },
            Request::Edit {
                room: "general".into(),
                target: 4,
                text: "yes!".into(),
            },
            Request::Delete {
                room: "general".into(),
                target: 4,
            },
            Request::React {
                room: "general".into(),
                target: 4,
                emoji: "👍".into(),
                on: true,
            },
        ];
        let kinds: Vec<String> = requests
            .into_iter()
            .map(|r| {
                let v = serde_json::to_value(out(r).frame(7)).unwrap();
                assert_eq!(v["nonce"], "c-1", "{v}");
                assert_eq!(v["id"], 7, "{v}");
                assert_eq!(v["room"], "general", "{v}");
                v["type"].as_str().unwrap().to_string()
            })
            .collect();
        assert_eq!(kinds, ["send", "edit", "delete", "react"]);
        let v = serde_json::to_value(
            out(Request::Send {
                room: Some("general".into()),
                to: None,
                text: "yes".into(),
                reply_to: Some(4),
            })
            .frame(1),
        )
        .unwrap();
        assert_eq!(v["reply_to"], 4);
    }

    #[test]
    fn hopeless_requests_are_refused_before_sending() {
        let long = "x".repeat(MAX_TEXT_BYTES + 1);
        let edit = out(Request::Edit {
            room: "r".into(),
            target: 1,
            text: long,
        });
        assert_eq!(edit.refused().map(|r| r.0), Some(ErrorCode::TooLarge));
        let react = |emoji: &str| {
            out(Request::React {
                room: "r".into(),
                target: 1,
                emoji: emoji.into(),
                on: true,
            })
        };
        assert_eq!(
            react("a b").refused().map(|r| r.0),
            Some(ErrorCode::BadRequest)
        );
        assert_eq!(
            react("").refused().map(|r| r.0),
            Some(ErrorCode::BadRequest)
        );
        assert_eq!(react("👍").refused(), None);
        let delete = out(Request::Delete {
            room: "r".into(),
            target: 1,
        });
        assert_eq!(delete.refused(), None);
    }
}
