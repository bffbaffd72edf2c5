//! One WebSocket connection to a node.
//!
//! Requests carry an id; [`Connection::request`] waits for the frame whose
//! `re` matches and keeps every other frame (pushes, other replies) in an
//! inbox that [`Connection::recv`] hands out first, so nothing is lost
//! while a caller waits for a reply.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use parley_protocol::{ClientFrame, Message, Role, RoomEvent, ServerFrame, parse_server_frame};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message as WsMessage};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::{ClientError, Result};

/// How long a request waits for its reply.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Welcome {
    pub user: String,
    pub node: String,
    pub session: String,
    pub heartbeat_s: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined {
    pub room: String,
    pub last_seq: u64,
    /// The messages of `events`, each in its current state (text, edited,
    /// deleted, reactions): what a chat view shows.
    pub history: Vec<Message>,
    /// The page of the room's event log as sent: messages, edits, deletes,
    /// reactions, member and topic events, in seq order (what resume
    /// accounting counts).
    pub events: Vec<RoomEvent>,
    pub more: bool,
    pub members: Vec<String>,
    /// The user's read position, and what is unread after it (protocol 1.1 §2).
    pub read_seq: u64,
    pub unread: u64,
    pub mentions: u64,
    /// The room's topic, if it has one (protocol 1.1 §3).
    pub topic: Option<String>,
    /// Only members see and join it.
    pub private: bool,
    /// The user's role in the room (None: a DM).
    pub role: Option<Role>,
}

/// The messages of a page of events.
pub fn messages_of(events: &[RoomEvent]) -> Vec<Message> {
    events
        .iter()
        .filter_map(RoomEvent::as_message)
        .cloned()
        .collect()
}

/// The room event a push frame carries (message, edit, delete, reaction,
/// member or topic event); any other frame back as it is (boxed: it is
/// the rarer case). Exhaustive on purpose: a new frame type must say
/// whether it is a room event.
pub fn room_event(frame: ServerFrame) -> std::result::Result<RoomEvent, Box<ServerFrame>> {
    match frame {
        ServerFrame::Message(m) => Ok(RoomEvent::Message(m)),
        ServerFrame::Edited(e) => Ok(RoomEvent::Edited(e)),
        ServerFrame::Deleted(e) => Ok(RoomEvent::Deleted(e)),
        ServerFrame::Reaction(e) => Ok(RoomEvent::Reaction(e)),
        ServerFrame::Member(e) => Ok(RoomEvent::Member(e)),
        ServerFrame::Topic(e) => Ok(RoomEvent::Topic(e)),
        other @ (ServerFrame::Welcome { .. }
        | ServerFrame::Joined { .. }
        | ServerFrame::Read { .. }
        | ServerFrame::Left { .. }
        | ServerFrame::Ack { .. }
        | ServerFrame::History { .. }
        | ServerFrame::Presence { .. }
        | ServerFrame::Typing { .. }
        | ServerFrame::Pong { .. }
        | ServerFrame::Error { .. }) => Err(Box::new(other)),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    pub room: String,
    pub seq: u64,
    pub ts: String,
}

/// How to open a connection.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    /// Source address to bind (127.0.0.x), to get past the ephemeral-port
    /// limit of one source address in load tests.
    pub local_addr: Option<IpAddr>,
    /// Token sent with the upgrade as `Authorization: Bearer` (the session is
    /// then authenticated without a hello).
    pub bearer: Option<String>,
}

pub struct Connection {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    inbox: VecDeque<ServerFrame>,
    pub welcome: Option<Welcome>,
}

impl Connection {
    /// Connects to `url` (`ws://host:port/ws`).
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with(url, &ConnectOptions::default()).await
    }

    pub async fn connect_with(url: &str, options: &ConnectOptions) -> Result<Self> {
        let err = |message: String| ClientError::Connect {
            url: url.to_string(),
            message,
        };
        let uri: tungstenite::http::Uri = url.parse().map_err(|e| err(format!("bad URL: {e}")))?;
        let host = uri
            .host()
            .ok_or_else(|| err("URL has no host".into()))?
            .to_string();
        let port = uri.port_u16().unwrap_or(80);
        let addr = tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|e| err(e.to_string()))?
            .next()
            .ok_or_else(|| err("host did not resolve".into()))?;
        let stream = connect_tcp(addr, options.local_addr)
            .await
            .map_err(|e| err(e.to_string()))?;
        let mut request = tungstenite::client::IntoClientRequest::into_client_request(url)
            .map_err(|e| err(e.to_string()))?;
        if let Some(token) = &options.bearer {
            let value = format!("Bearer {token}")
                .parse()
                .map_err(|_| err("token is not a valid header".into()))?;
            request.headers_mut().insert("authorization", value);
        }
        let config = WebSocketConfig::default()
            .read_buffer_size(8 * 1024)
            .write_buffer_size(0)
            .max_message_size(Some(64 << 20));
        let (ws, _) = tokio_tungstenite::client_async_with_config(
            request,
            MaybeTlsStream::Plain(stream),
            Some(config),
        )
        .await
        .map_err(|e| err(e.to_string()))?;
        Ok(Self {
            ws,
            next_id: 0,
            inbox: VecDeque::new(),
            welcome: None,
        })
    }

    /// A fresh request id.
    pub fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Sends raw text (tests use it for malformed frames).
    pub async fn send_text(&mut self, text: impl Into<String>) -> Result<()> {
        self.ws
            .send(WsMessage::text(text.into()))
            .await
            .map_err(|e| ClientError::WebSocket(e.to_string()))
    }

    /// Sends any WebSocket message (binary, ping …).
    pub async fn send_message(&mut self, message: WsMessage) -> Result<()> {
        self.ws
            .send(message)
            .await
            .map_err(|e| ClientError::WebSocket(e.to_string()))
    }

    pub async fn send_frame(&mut self, frame: &ClientFrame) -> Result<()> {
        let text =
            serde_json::to_string(frame).map_err(|e| ClientError::Protocol(e.to_string()))?;
        self.send_text(text).await
    }

    /// The next frame from the server: what the inbox holds first, then the
    /// socket. A close becomes [`ClientError::Closed`].
    pub async fn recv(&mut self) -> Result<ServerFrame> {
        if let Some(frame) = self.inbox.pop_front() {
            return Ok(frame);
        }
        self.read_frame().await
    }

    /// Like [`Connection::recv`] with a time limit.
    pub async fn recv_timeout(&mut self, limit: Duration) -> Result<ServerFrame> {
        tokio::time::timeout(limit, self.recv())
            .await
            .map_err(|_| ClientError::Timeout("a frame"))?
    }

    /// Frames that arrived while a request waited, not yet handed out.
    pub fn buffered(&self) -> usize {
        self.inbox.len()
    }

    async fn read_frame(&mut self) -> Result<ServerFrame> {
        loop {
            let message = match self.ws.next().await {
                None => {
                    return Err(ClientError::Closed {
                        code: None,
                        reason: "connection ended".into(),
                    });
                }
                Some(Err(e)) => return Err(ClientError::WebSocket(e.to_string())),
                Some(Ok(m)) => m,
            };
            match message {
                WsMessage::Text(text) => {
                    return parse_server_frame(&text).map_err(|e| {
                        ClientError::Protocol(format!("unparseable frame {text:?}: {e}"))
                    });
                }
                WsMessage::Close(frame) => {
                    return Err(ClientError::Closed {
                        code: frame.as_ref().map(|f| u16::from(f.code)),
                        reason: frame.map(|f| f.reason.to_string()).unwrap_or_default(),
                    });
                }
                WsMessage::Binary(_) => {
                    return Err(ClientError::Protocol("binary frame from server".into()));
                }
                _ => continue,
            }
        }
    }

    /// Sends a request and waits for its reply (the frame with `re == id`).
    /// An `error` reply becomes [`ClientError::Server`].
    pub async fn request(&mut self, id: u64, frame: &ClientFrame) -> Result<ServerFrame> {
        self.send_frame(frame).await?;
        let wait = async {
            loop {
                let frame = self.read_frame().await?;
                if reply_to(&frame) == Some(id) {
                    return match frame {
                        ServerFrame::Error { code, message, .. } => {
                            Err(ClientError::Server { code, message })
                        }
                        other => Ok(other),
                    };
                }
                self.inbox.push_back(frame);
            }
        };
        tokio::time::timeout(REQUEST_TIMEOUT, wait)
            .await
            .map_err(|_| ClientError::Timeout("a reply"))?
    }

    /// Authenticates with a token.
    pub async fn hello(&mut self, token: &str) -> Result<Welcome> {
        let id = self.next_id();
        let frame = ClientFrame::Hello {
            id: Some(id),
            token: token.to_string(),
            client: Some(client_name()),
        };
        let reply = self.request(id, &frame).await?;
        self.take_welcome(reply)
    }

    /// Waits for the welcome of a connection authenticated at upgrade time.
    pub async fn await_welcome(&mut self) -> Result<Welcome> {
        let frame = self.recv_timeout(REQUEST_TIMEOUT).await?;
        self.take_welcome(frame)
    }

    fn take_welcome(&mut self, frame: ServerFrame) -> Result<Welcome> {
        match frame {
            ServerFrame::Welcome {
                user,
                node,
                session,
                heartbeat_s,
                ..
            } => {
                let welcome = Welcome {
                    user,
                    node,
                    session,
                    heartbeat_s,
                };
                self.welcome = Some(welcome.clone());
                Ok(welcome)
            }
            other => Err(unexpected("welcome", &other)),
        }
    }

    pub async fn join(&mut self, room: &str, since: Option<u64>) -> Result<Joined> {
        let id = self.next_id();
        match self
            .request(
                id,
                &ClientFrame::Join {
                    id: Some(id),
                    room: room.into(),
                    since,
                },
            )
            .await?
        {
            ServerFrame::Joined {
                room,
                last_seq,
                history,
                more,
                members,
                read_seq,
                unread,
                mentions,
                topic,
                private,
                role,
                ..
            } => Ok(Joined {
                room,
                last_seq,
                history: messages_of(&history),
                events: history,
                more,
                members,
                read_seq,
                unread,
                mentions,
                topic,
                private,
                role,
            }),
            other => Err(unexpected("joined", &other)),
        }
    }

    pub async fn leave(&mut self, room: &str) -> Result<()> {
        let id = self.next_id();
        match self
            .request(
                id,
                &ClientFrame::Leave {
                    id: Some(id),
                    room: room.into(),
                },
            )
            .await?
        {
            ServerFrame::Left { .. } => Ok(()),
            other => Err(unexpected("left", &other)),
        }
    }

    /// Ends the user's membership of `room` (protocol 1.1 §3): the answer
    /// comes once the `member` event is stored, and every connection of
    /// the user in the room gets `left` (reason `parted`). An owner must
    /// hand the room over first (`conflict`).
    pub async fn part(&mut self, room: &str) -> Result<()> {
        let id = self.next_id();
        match self
            .request(
                id,
                &ClientFrame::Part {
                    id: Some(id),
                    room: room.into(),
                },
            )
            .await?
        {
            ServerFrame::Left { .. } => Ok(()),
            other => Err(unexpected("left", &other)),
        }
    }

    /// Sends to a room and waits for the ack (the message is then stored).
    pub async fn send(&mut self, room: &str, text: &str, nonce: Option<&str>) -> Result<Ack> {
        self.send_in(room, text, nonce, None).await
    }

    /// Sends a reply to message `reply_to` of the room; waits for the ack.
    pub async fn reply(
        &mut self,
        room: &str,
        reply_to: u64,
        text: &str,
        nonce: Option<&str>,
    ) -> Result<Ack> {
        self.send_in(room, text, nonce, Some(reply_to)).await
    }

    async fn send_in(
        &mut self,
        room: &str,
        text: &str,
        nonce: Option<&str>,
        reply_to: Option<u64>,
    ) -> Result<Ack> {
        let id = self.next_id();
        let frame = ClientFrame::Send {
            id: Some(id),
            room: Some(room.into()),
            to: None,
            text: text.into(),
            nonce: nonce.map(Into::into),
            reply_to,
        };
        self.ack(id, &frame).await
    }

    /// Replaces the text of one's message `target`; the ack carries the
    /// `edited` event's seq.
    pub async fn edit(
        &mut self,
        room: &str,
        target: u64,
        text: &str,
        nonce: Option<&str>,
    ) -> Result<Ack> {
        let id = self.next_id();
        let frame = ClientFrame::Edit {
            id: Some(id),
            room: room.into(),
            target,
            text: text.into(),
            nonce: nonce.map(Into::into),
        };
        self.ack(id, &frame).await
    }

    /// Deletes message `target`; the ack carries the `deleted` event's seq.
    pub async fn delete(&mut self, room: &str, target: u64, nonce: Option<&str>) -> Result<Ack> {
        let id = self.next_id();
        let frame = ClientFrame::Delete {
            id: Some(id),
            room: room.into(),
            target,
            nonce: nonce.map(Into::into),
        };
        self.ack(id, &frame).await
    }

    /// Adds (`on`) or removes a reaction; the ack carries the `reaction`
    /// event's seq (or, when nothing changed, the one that set the state).
    pub async fn react(
        &mut self,
        room: &str,
        target: u64,
        emoji: &str,
        on: bool,
        nonce: Option<&str>,
    ) -> Result<Ack> {
        let id = self.next_id();
        let frame = ClientFrame::React {
            id: Some(id),
            room: room.into(),
            target,
            emoji: emoji.into(),
            on,
            nonce: nonce.map(Into::into),
        };
        self.ack(id, &frame).await
    }

    /// Sends a direct message to a user and waits for the ack.
    pub async fn send_dm(&mut self, to: &str, text: &str, nonce: Option<&str>) -> Result<Ack> {
        let id = self.next_id();
        let frame = ClientFrame::Send {
            id: Some(id),
            room: None,
            to: Some(to.into()),
            text: text.into(),
            nonce: nonce.map(Into::into),
            reply_to: None,
        };
        self.ack(id, &frame).await
    }

    /// Moves this user's read position in `room` to `seq` (never back);
    /// returns the position stored. The user's other connections get a
    /// `read` push.
    pub async fn read(&mut self, room: &str, seq: u64) -> Result<u64> {
        let id = self.next_id();
        let frame = ClientFrame::Read {
            id: Some(id),
            room: room.into(),
            seq,
        };
        match self.request(id, &frame).await? {
            ServerFrame::Read { seq, .. } => Ok(seq),
            other => Err(unexpected("read", &other)),
        }
    }

    async fn ack(&mut self, id: u64, frame: &ClientFrame) -> Result<Ack> {
        match self.request(id, frame).await? {
            ServerFrame::Ack { room, seq, ts, .. } => Ok(Ack { room, seq, ts }),
            other => Err(unexpected("ack", &other)),
        }
    }

    /// A history page's messages (each in its current state); returns
    /// (messages, more).
    pub async fn history(
        &mut self,
        room: &str,
        before: Option<u64>,
        after: Option<u64>,
        limit: Option<u32>,
    ) -> Result<(Vec<Message>, bool)> {
        let (events, more) = self.history_events(room, before, after, limit).await?;
        Ok((messages_of(&events), more))
    }

    /// A history page as sent: every event (`limit` counts events); returns
    /// (events, more).
    pub async fn history_events(
        &mut self,
        room: &str,
        before: Option<u64>,
        after: Option<u64>,
        limit: Option<u32>,
    ) -> Result<(Vec<RoomEvent>, bool)> {
        let id = self.next_id();
        let frame = ClientFrame::History {
            id: Some(id),
            room: room.into(),
            before,
            after,
            limit,
        };
        match self.request(id, &frame).await? {
            ServerFrame::History { messages, more, .. } => Ok((messages, more)),
            other => Err(unexpected("history", &other)),
        }
    }

    pub async fn ping(&mut self) -> Result<()> {
        let id = self.next_id();
        match self
            .request(id, &ClientFrame::Ping { id: Some(id) })
            .await?
        {
            ServerFrame::Pong { .. } => Ok(()),
            other => Err(unexpected("pong", &other)),
        }
    }

    pub async fn typing(&mut self, room: &str) -> Result<()> {
        self.send_frame(&ClientFrame::Typing {
            id: None,
            room: room.into(),
        })
        .await
    }

    /// Waits for the next pushed `message` (skipping other frames).
    pub async fn next_message(&mut self, limit: Duration) -> Result<Message> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if let ServerFrame::Message(m) = self.recv_timeout(left).await? {
                return Ok(m);
            }
        }
    }

    /// The next pushed room event (message, edit, delete, reaction, member,
    /// topic), skipping other frames.
    pub async fn next_event(&mut self, limit: Duration) -> Result<RoomEvent> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if let Ok(event) = room_event(self.recv_timeout(left).await?) {
                return Ok(event);
            }
        }
    }

    /// Closes the connection politely.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

async fn connect_tcp(addr: SocketAddr, local: Option<IpAddr>) -> std::io::Result<TcpStream> {
    let stream = match local {
        None => TcpStream::connect(addr).await?,
        Some(ip) => {
            let socket = if addr.is_ipv4() {
                TcpSocket::new_v4()?
            } else {
                TcpSocket::new_v6()?
            };
            socket.bind(SocketAddr::new(ip, 0))?;
            socket.connect(addr).await?
        }
    };
    stream.set_nodelay(true)?;
    Ok(stream)
}

fn reply_to(frame: &ServerFrame) -> Option<u64> {
    frame.re()
}

fn unexpected(wanted: &str, got: &ServerFrame) -> ClientError {
    ClientError::Protocol(format!("expected {wanted}, got {got:?}"))
}

fn client_name() -> String {
    format!("parley-client/{}", env!("CARGO_PKG_VERSION"))
}

#[cfg(test)]
mod tests {
    use parley_protocol::{Member, MemberChange, Topic};

    use super::*;

    #[test]
    fn every_event_push_is_a_room_event() {
        let member = Member {
            room: "plans".into(),
            seq: 3,
            from: "alice".into(),
            user: "bob".into(),
            change: MemberChange::Role,
            role: Some(Role::Moderator),
            reason: None,
            ts: "t".into(),
            nonce: None,
        };
        let topic = Topic {
            room: "plans".into(),
            seq: 4,
            from: "alice".into(),
            topic: "lunch".into(),
            ts: "t".into(),
            nonce: None,
        };
        for event in [RoomEvent::Member(member), RoomEvent::Topic(topic)] {
            assert_eq!(room_event(event.clone().into_frame()), Ok(event));
        }
        let left = ServerFrame::Left {
            re: None,
            room: "plans".into(),
            reason: Some("kicked".into()),
        };
        assert_eq!(room_event(left.clone()), Err(Box::new(left)));
    }
}
