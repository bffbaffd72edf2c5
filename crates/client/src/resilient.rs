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
//! live stream from history. Unacknowledged sends are sent again with the
//! same nonce, which the server de-duplicates. The application therefore sees
//! every message of a joined room exactly once and in `seq` order.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use parley_protocol::backoff::Backoff;
use parley_protocol::{
    ClientAction, ClientFrame, CloseCode, ErrorCode, Message, PresenceState, RoomEvent, ServerFrame,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::connection::{ConnectOptions, Connection, Welcome};
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
    },
    Left {
        room: String,
    },
    /// A message of a joined room (exactly once, in seq order), or a direct
    /// message pushed for a DM room that was not joined.
    Message(Message),
    /// An edit, delete or reaction of a joined room (protocol 1.1), exactly
    /// once and in seq order with the messages: they share one sequence.
    Change(RoomEvent),
    Acked {
        nonce: String,
        room: String,
        seq: u64,
    },
    /// A send the server refused for good (not retried).
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
    /// Any other error reply.
    Error {
        code: ErrorCode,
        message: String,
    },
}

enum Command {
    Join(String),
    Leave(String),
    Send(Outgoing),
    Typing(String),
    Stop,
}

/// Largest text the server accepts by default (protocol v1); longer sends
/// fail at once instead of being retried forever.
pub const MAX_TEXT_BYTES: usize = 4096;

#[derive(Debug, Clone)]
struct Outgoing {
    nonce: String,
    room: Option<String>,
    to: Option<String>,
    text: String,
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

    /// Tells the room's other members that this user is typing (best effort).
    pub fn typing(&self, room: &str) {
        let _ = self.commands.send(Command::Typing(room.to_string()));
    }

    /// Queues a message for a room; returns its nonce (reported in `Acked`).
    pub fn send(&self, room: &str, text: &str) -> String {
        self.queue(Some(room.to_string()), None, text)
    }

    /// Queues a direct message to a user; returns its nonce.
    pub fn send_dm(&self, to: &str, text: &str) -> String {
        self.queue(None, Some(to.to_string()), text)
    }

    fn queue(&self, room: Option<String>, to: Option<String>, text: &str) -> String {
        let n = self
            .counter
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        let nonce = format!("{}-{n}", self.prefix);
        let _ = self.commands.send(Command::Send(Outgoing {
            nonce: nonce.clone(),
            room,
            to,
            text: text.into(),
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
                    Some(Command::Join(room)) => { self.rooms.entry(room).or_insert(None); }
                    Some(Command::Leave(room)) => { self.rooms.remove(&room); }
                    Some(Command::Send(out)) => {
                        if self.accept_send(&out) {
                            self.unacked.push(out);
                        }
                    }
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
                            if self.rooms.contains_key(&room) {
                                Ok(())
                            } else {
                                self.rooms.insert(room.clone(), None);
                                self.join_room(&mut conn, &room).await
                            }
                        }
                        Some(Command::Leave(room)) => {
                            self.rooms.remove(&room);
                            match conn.leave(&room).await {
                                Ok(()) | Err(ClientError::Server { .. }) => {
                                    self.emit(Event::Left { room });
                                    Ok(())
                                }
                                Err(e) => Err(e),
                            }
                        }
                        Some(Command::Send(out)) => {
                            if self.accept_send(&out) {
                                self.unacked.push(out.clone());
                                self.transmit(&mut conn, &out).await
                            } else {
                                Ok(())
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
                }
            }
        }
    }

    /// Refuses at once what the server would refuse for good on every retry.
    fn accept_send(&self, out: &Outgoing) -> bool {
        if out.text.len() > MAX_TEXT_BYTES {
            self.emit(Event::SendFailed {
                nonce: out.nonce.clone(),
                code: ErrorCode::TooLarge,
                message: format!(
                    "text is {} bytes; the limit is {MAX_TEXT_BYTES}",
                    out.text.len()
                ),
            });
            return false;
        }
        true
    }

    async fn transmit(&mut self, conn: &mut Connection, out: &Outgoing) -> Result<()> {
        let id = conn.next_id();
        self.inflight.insert(id, out.nonce.clone());
        conn.send_frame(&ClientFrame::Send {
            id: Some(id),
            room: out.room.clone(),
            to: out.to.clone(),
            text: out.text.clone(),
            nonce: Some(out.nonce.clone()),
            reply_to: None,
        })
        .await
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
            Ok(j) => j,
            Err(ClientError::Server { code, message }) => {
                self.rooms.remove(room);
                self.emit(Event::Error { code, message });
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        self.emit(Event::Joined {
            room: room.to_string(),
            members: joined.members,
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
                    other => Event::Change(other),
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

    async fn handle(&mut self, conn: &mut Connection, frame: ServerFrame) -> Result<()> {
        match frame {
            ServerFrame::Edited(_) | ServerFrame::Deleted(_) | ServerFrame::Reaction(_) => {
                let event = match frame {
                    ServerFrame::Edited(e) => RoomEvent::Edited(e),
                    ServerFrame::Deleted(e) => RoomEvent::Deleted(e),
                    ServerFrame::Reaction(e) => RoomEvent::Reaction(e),
                    _ => return Ok(()),
                };
                if self.rooms.contains_key(event.room()) {
                    self.accept_or_fill(conn, event).await?;
                }
            }
            ServerFrame::Message(m) => {
                if self.rooms.contains_key(&m.room) {
                    self.accept_or_fill(conn, RoomEvent::Message(m)).await?;
                } else {
                    let seen = self.dm_seen.entry(m.room.clone()).or_insert(0);
                    if m.seq > *seen {
                        *seen = m.seq;
                        self.emit(Event::Message(m));
                    }
                }
            }
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
                if matches!(
                    code,
                    ErrorCode::Unavailable | ErrorCode::RateLimited | ErrorCode::Internal
                ) {
                    self.retry_at
                        .get_or_insert(tokio::time::Instant::now() + Duration::from_secs(1));
                } else {
                    self.unacked.retain(|o| o.nonce != nonce);
                    self.emit(Event::SendFailed {
                        nonce,
                        code,
                        message,
                    });
                }
            }
            ServerFrame::Error { code, message, .. } => self.emit(Event::Error { code, message }),
            ServerFrame::Presence { room, user, state } => {
                self.emit(Event::Presence { room, user, state })
            }
            ServerFrame::Typing { room, user } => self.emit(Event::Typing { room, user }),
            _ => {}
        }
        Ok(())
    }
}
