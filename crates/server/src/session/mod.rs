//! One WebSocket connection, from `hello` to close.
//!
//! This module is the protocol: it handles the client's frames and answers
//! them, through the chat rules of [`crate::node`] (never the store or the
//! bus directly). [`socket`] moves bytes: one task per connection reads the
//! peer and writes everything queued in the connection's
//! [`Outbox`](crate::outbox). Replies and pushes share that one bounded
//! queue, so a client sees them in order and a slow one is cut off with 4408
//! (invariant 5). [`registry`] lists the live connections for the
//! [`heartbeat`] and the drain.
//!
//! Every log line of a session carries its span: node, session id, user.
//!
//! Sends are pipelined: a `send` is queued for group commit in arrival order,
//! and its ack is written when the commit completes, while the session goes on
//! reading. Only the ack of a stored message is ever sent (invariant 1).
//!
//! A session lives no longer than its token: it records what it
//! authenticated with in the [`Registry`] ([`SessionAuth`]), which closes
//! it with `error unauthorized` and 4401 once `exp` plus the leeway has
//! passed (the [`heartbeat`] task looks every 250 ms) or when its token is
//! revoked ([`Registry::close_where`]). A frame that arrives after the
//! expiry is not handled: the session closes at once. A second `hello`
//! with a valid token of the same user replaces the token (a new expiry);
//! any other second `hello` closes the session like a bad first one.

pub mod heartbeat;
pub mod registry;
pub mod socket;

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message as WsMessage, Utf8Bytes, WebSocket};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use parley_protocol::{
    ClientFrame, ErrorCode, PresenceState, ServerFrame, close, parse_client_frame,
};

use tracing::Instrument;

use crate::error::ChatError;
use crate::hub::SessionRef;
use crate::node::{JoinHistory, Node};
use crate::outbox::{self, Outbox};
use crate::store::{AppendOutcome, Change, StoreError};
pub use registry::{Registry, SessionAuth, TokenId};
use socket::{End, Input, Socket, Step};

/// Malformed frames in a row after which the peer is cut off (1008).
const MAX_BAD_FRAMES: u32 = 10;
/// How long a draining session waits for its pending appends before closing.
const ACK_FLUSH_TIMEOUT: Duration = Duration::from_secs(3);

/// What a committed request is answered with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reply {
    /// `ack` (sends, edits, deletes, reactions).
    Ack,
    /// `left` (a part).
    Left,
}

/// A pending request's answer: (request id, its reply, what the commit
/// returned).
type Answer = (Option<u64>, Reply, Result<AppendOutcome, StoreError>);
type Ack = Pin<Box<dyn Future<Output = Answer> + Send + Sync>>;

/// Serves one upgraded connection. `preauth` is what a token given at
/// upgrade time (header or query) authenticated; otherwise the client must
/// send `hello`.
pub fn run(
    ws: WebSocket,
    node: Arc<Node>,
    sessions: Arc<Registry>,
    preauth: Option<SessionAuth>,
) -> impl Future<Output = ()> + Send {
    let (outbox, rx) = outbox::outbox(node.config.outbound_queue);
    let mut socket = Socket::new(ws, rx);
    let span = tracing::info_span!(
        "session",
        node = %node.node_id,
        session = tracing::field::Empty,
        user = tracing::field::Empty
    );
    // An `async move` block, not an `async fn`: the state of an `async fn`
    // keeps its arguments twice (as arguments, and as the locals they are
    // moved into) — 400 bytes more in every idle connection's task. A block
    // uses what it captures in place.
    async move {
        let id = sessions.register(outbox.clone());
        tracing::Span::current().record("session", id);
        let auth = match preauth {
            Some(auth) => Ok((auth, None)),
            None => Box::pin(authenticate(&node, &outbox, &mut socket)).await,
        };
        let end = match auth {
            Ok((auth, re)) => {
                tracing::Span::current().record("user", &*auth.user);
                let mut session = Session {
                    node: node.clone(),
                    sessions: sessions.clone(),
                    me: SessionRef {
                        id,
                        tag: rand::random(),
                        user: auth.user.clone(),
                        outbox: outbox.clone(),
                    },
                    exp: auth.exp,
                    joined: HashSet::new(),
                    acks: PendingAcks::default(),
                    bad_frames: 0,
                    strikes: 0,
                };
                sessions.authenticate(id, auth);
                session.welcome(re);
                Box::pin(node.hub.add_session(&session.me)).await;
                let end = session.serve(&mut socket).await;
                Box::pin(session.finish(end)).await;
                end
            }
            Err(end) => end,
        };
        drop(outbox);
        // Unregistered only once the socket is closed (closing handshake
        // included): a drain waits for that (see `socket`).
        Box::pin(socket.finish(end)).await;
        sessions.unregister(id);
    }
    .instrument(span)
}

/// Queues a server frame.
fn push(outbox: &Outbox, frame: &ServerFrame) -> bool {
    outbox.push(Utf8Bytes::from(frame.to_json()))
}

/// Queues a close frame behind everything already queued (or, if the queue
/// is full, asks the writer to close at once).
fn close_with(outbox: &Outbox, code: u16) {
    if !outbox.push_message(socket::close_frame(code, socket::reason(code))) {
        outbox.request_close(code);
    }
}

/// Waits for a valid `hello` within the hello timeout; returns what it
/// authenticated and the hello's request id, or how the connection ends
/// (its close queued).
async fn authenticate(
    node: &Node,
    outbox: &Outbox,
    socket: &mut Socket,
) -> Result<(SessionAuth, Option<u64>), End> {
    let deadline = tokio::time::Instant::now() + node.config.hello_timeout;
    let mut bad = 0;
    loop {
        let text = match socket.next(tokio::time::sleep_until(deadline)).await {
            Step::Other(()) => {
                push(
                    outbox,
                    &ServerFrame::error(
                        None,
                        ErrorCode::Unauthorized,
                        "no hello within the time limit",
                    ),
                );
                return Err(closing(outbox, close::UNAUTHORIZED));
            }
            Step::Input(Input::Text(text)) => text,
            Step::Input(Input::Nothing) => continue,
            Step::Input(Input::End(End::Gone)) => return Err(End::Gone),
            Step::Input(Input::End(End::Close(code))) => return Err(closing(outbox, code)),
        };
        match parse_client_frame(&text) {
            Ok(ClientFrame::Hello { id, token, .. }) => match node.auth.verify_claims(&token).await
            {
                Ok(claims) => return Ok((SessionAuth::new(&token, claims), id)),
                Err(e) => {
                    push(
                        outbox,
                        &ServerFrame::error(id, ErrorCode::Unauthorized, e.message),
                    );
                    return Err(closing(outbox, close::UNAUTHORIZED));
                }
            },
            Ok(other) => {
                push(
                    outbox,
                    &ServerFrame::error(
                        other.id(),
                        ErrorCode::Unauthorized,
                        "send hello with a token first",
                    ),
                );
            }
            Err(e) => {
                if !e.unknown_type {
                    bad += 1;
                }
                push(
                    outbox,
                    &ServerFrame::error(e.id, ErrorCode::BadRequest, e.message),
                );
                if bad >= MAX_BAD_FRAMES {
                    return Err(closing(outbox, close::POLICY_VIOLATION));
                }
            }
        }
    }
}

/// Queues the close frame; the connection ends with it.
fn closing(outbox: &Outbox, code: u16) -> End {
    close_with(outbox, code);
    End::Close(code)
}

/// Queues the answer to a send: its ack once stored, or why it was not.
fn send_answer(outbox: &Outbox, (re, reply, result): Answer) {
    let frame = match result {
        Ok(outcome) => match Node::answer(&outcome) {
            Ok(m) if reply == Reply::Left => ServerFrame::Left {
                re,
                room: m.room.clone(),
                reason: None,
            },
            Ok(m) => ServerFrame::Ack {
                re,
                room: m.room.clone(),
                seq: m.seq,
                ts: parley_protocol::time::format_millis(m.ts_ms),
            },
            Err(e) => ServerFrame::error(re, e.code, e.message),
        },
        Err(e) => {
            let e = ChatError::from(e);
            ServerFrame::error(re, e.code, e.message)
        }
    };
    push(outbox, &frame);
}

fn welcome_frame(node: &Node, re: Option<u64>, user: &str) -> ServerFrame {
    ServerFrame::Welcome {
        re,
        user: user.to_string(),
        node: node.node_id.clone(),
        session: crate::auth::random_hex(8),
        heartbeat_s: node.config.heartbeat.as_secs().max(1),
    }
}

/// Answers still to come for pipelined sends. Allocated on a send and freed
/// once empty: an idle connection holds none.
#[derive(Default)]
struct PendingAcks(Option<FuturesUnordered<Ack>>);

impl PendingAcks {
    fn push(&mut self, ack: Ack) {
        self.0.get_or_insert_with(FuturesUnordered::new).push(ack);
    }

    /// The next answer. Pending while none is pending: a push comes from the
    /// session's own task, which polls anew afterwards. Cancel-safe.
    fn poll_answer(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Answer> {
        use std::task::Poll;
        let Some(set) = self.0.as_mut() else {
            return Poll::Pending;
        };
        match set.poll_next_unpin(cx) {
            Poll::Ready(Some(answer)) => {
                if set.is_empty() {
                    self.0 = None;
                }
                Poll::Ready(answer)
            }
            Poll::Ready(None) => {
                self.0 = None;
                Poll::Pending
            }
            Poll::Pending => Poll::Pending,
        }
    }

    /// Every answer still to come, in completion order.
    async fn drain(&mut self, mut each: impl FnMut(Answer)) {
        while let Some(set) = self.0.as_mut() {
            match set.next().await {
                Some(answer) => each(answer),
                None => self.0 = None,
            }
        }
    }
}

struct Session {
    node: Arc<Node>,
    sessions: Arc<Registry>,
    me: SessionRef,
    /// The `exp` of the token the session speaks for (also in its registry
    /// entry, which the expiry sweep reads): checked on every frame.
    exp: i64,
    joined: HashSet<Arc<str>>,
    acks: PendingAcks,
    bad_frames: u32,
    strikes: u32,
}

impl Session {
    fn push(&self, frame: &ServerFrame) -> bool {
        push(&self.me.outbox, frame)
    }

    fn welcome(&self, re: Option<u64>) {
        self.push(&welcome_frame(&self.node, re, &self.me.user));
    }

    fn token_expired(&self) -> bool {
        self.exp.saturating_add(self.node.auth.leeway_s()) <= parley_protocol::time::now_s()
    }

    /// Ends the session with `error unauthorized` (its last frame: nothing
    /// queued behind or still queued is sent, pending acks included) and
    /// 4401, as the registry does for an expired or revoked token.
    fn close_unauthorized(&self, re: Option<u64>, message: impl Into<String>) -> End {
        let error = ServerFrame::error(re, ErrorCode::Unauthorized, message);
        let last = WsMessage::Text(Utf8Bytes::from(error.to_json()));
        if !self
            .me
            .outbox
            .close_with_last_words(close::UNAUTHORIZED, last)
        {
            // Already closing (a drain): say why anyway, behind its acks.
            self.push(&error);
        }
        End::Close(close::UNAUTHORIZED)
    }

    /// A second `hello`: a valid token of the same user replaces the
    /// session's token (its expiry, and which token a revocation must name);
    /// any other token ends the session with 4401.
    async fn rehello(&mut self, id: Option<u64>, token: &str) -> Option<End> {
        match self.node.auth.verify_claims(token).await {
            // The same user: names are compared case-folded (the spelling a
            // user is shown by can change, when a name gets registered).
            Ok(claims) if parley_protocol::same_user(&claims.sub, &self.me.user) => {
                let auth = SessionAuth::new(token, claims);
                self.exp = auth.exp;
                self.sessions.authenticate(self.me.id, auth);
                self.welcome(id);
                None
            }
            Ok(claims) => Some(self.close_unauthorized(
                id,
                format!(
                    "this session is {:?}'s; a token of {:?} needs a new connection",
                    &*self.me.user, claims.sub
                ),
            )),
            Err(e) => Some(self.close_unauthorized(id, e.message)),
        }
    }

    /// The loop of an authenticated session: the client's frames and the
    /// answers of its pending sends. (Pings come from [`heartbeat`].)
    async fn serve(&mut self, socket: &mut Socket) -> End {
        loop {
            let acks = &mut self.acks;
            // A poll function, not an async block: this future lives in every
            // connection's task, and a block would hold an answer's 136 bytes.
            let answer = std::future::poll_fn(|cx| acks.poll_answer(cx));
            match socket.next(answer).await {
                Step::Other(answer) => send_answer(&self.me.outbox, answer),
                Step::Input(Input::Text(text)) => {
                    // Boxed: handling a frame awaits the store, whose futures
                    // are large; kept inline they would sit in every idle
                    // connection's task for its whole life.
                    if let Some(end) = Box::pin(self.handle_text(&text)).await {
                        return end;
                    }
                }
                Step::Input(Input::Nothing) => {}
                Step::Input(Input::End(end)) => return end,
            }
        }
    }

    /// Leaves every room, answers what is still pending, and queues the close.
    async fn finish(&mut self, end: End) {
        if let End::Close(code) = end {
            // Acks of messages already submitted: they are being committed;
            // the client should get them before the close (a drain must not
            // make an acked-but-unannounced message look lost). Unless an
            // urgent close was requested: it sends nothing more.
            let outbox = &self.me.outbox;
            if outbox
                .close_requested()
                .is_none_or(|c| c == close::GOING_AWAY)
            {
                let flush = self.acks.drain(|answer| send_answer(outbox, answer));
                let _ = tokio::time::timeout(ACK_FLUSH_TIMEOUT, flush).await;
                close_with(outbox, code);
            }
            metrics::counter!("parley_sessions_closed_total", "code" => code.to_string())
                .increment(1);
        }
        let rooms: Vec<Arc<str>> = self.joined.drain().collect();
        for room in self.node.hub.remove_session(&self.me, &rooms).await {
            self.publish_presence(&room, PresenceState::Left);
        }
    }

    /// Handles one text frame; `Some` ends the session.
    async fn handle_text(&mut self, text: &str) -> Option<End> {
        if self.token_expired() {
            // The expiry sweep has not come by yet: nothing more is handled.
            return Some(self.close_unauthorized(None, "token has expired"));
        }
        let frame = match parse_client_frame(text) {
            Ok(frame) => {
                self.bad_frames = 0;
                frame
            }
            Err(e) if e.unknown_type => {
                // A newer client's request: an error, but not garbage.
                metrics::counter!("parley_frames_rejected_total", "reason" => "unknown_type")
                    .increment(1);
                self.push(&ServerFrame::error(e.id, ErrorCode::BadRequest, e.message));
                return None;
            }
            Err(e) => {
                metrics::counter!("parley_frames_rejected_total", "reason" => "malformed")
                    .increment(1);
                self.push(&ServerFrame::error(e.id, ErrorCode::BadRequest, e.message));
                self.bad_frames += 1;
                return (self.bad_frames >= MAX_BAD_FRAMES)
                    .then_some(End::Close(close::POLICY_VIOLATION));
            }
        };
        let re = frame.id();
        let result = match frame {
            ClientFrame::Hello { id, token, .. } => return self.rehello(id, &token).await,
            ClientFrame::Ping { id } => {
                self.push(&ServerFrame::Pong { re: id });
                Ok(())
            }
            ClientFrame::Join { id, room, since } => self.join(id, room, since).await,
            ClientFrame::Leave { id, room } => self.leave(id, &room),
            ClientFrame::Part { id, room } => self.part(id, &room).await,
            ClientFrame::Send {
                id,
                room,
                to,
                text,
                nonce,
                reply_to,
            } => self.send(id, room, to, text, nonce, reply_to).await,
            ClientFrame::Edit {
                id,
                room,
                target,
                text,
                nonce,
            } => {
                self.change(id, &room, Change::Edit { target }, text, nonce)
                    .await
            }
            ClientFrame::Delete {
                id,
                room,
                target,
                nonce,
            } => {
                let change = Change::Delete {
                    target,
                    moderator: false,
                };
                self.change(id, &room, change, String::new(), nonce).await
            }
            ClientFrame::React {
                id,
                room,
                target,
                emoji,
                on,
                nonce,
            } => {
                let change = Change::React { target, emoji, on };
                self.change(id, &room, change, String::new(), nonce).await
            }
            ClientFrame::Read { id, room, seq } => self.read(id, &room, seq).await,
            ClientFrame::History {
                id,
                room,
                before,
                after,
                limit,
            } => self.history(id, &room, before, after, limit).await,
            ClientFrame::Typing { room, .. } => self.typing(&room),
        };
        if let Err(e) = result {
            self.push(&ServerFrame::error(re, e.code, e.message));
            if e.code == ErrorCode::RateLimited {
                self.strikes += 1;
                if self.strikes >= self.node.config.rate_limit_strikes {
                    return Some(End::Close(close::RATE_LIMITED));
                }
            }
        }
        None
    }

    /// Join: subscribe first, then read history, then let live messages
    /// through from after the history's end — no gap, no duplicate (invariant 4).
    async fn join(
        &mut self,
        id: Option<u64>,
        room: String,
        since: Option<u64>,
    ) -> Result<(), ChatError> {
        let allowed = self
            .node
            .enter(&self.me.user, &room, since.is_some())
            .await?;
        let room: Arc<str> = Arc::from(room);
        if self.is_joined(&room) {
            // Already subscribed: answer with history only (a catch-up).
            let history = self.node.join_history(&room, since).await?;
            self.push_joined(id, &room, history, &allowed).await;
            return Ok(());
        }
        if !self.node.hub.join(&room, &self.me).await {
            return Err(ChatError::new(
                ErrorCode::Unavailable,
                "room is not available right now; retry",
            ));
        }
        // Asked again now that the room is live here: a ban committed
        // between the check above and the room's start on this node is
        // after that check but before the room's cursor, so no event
        // would take this connection out. (Cached in a room that was
        // live already: no store round trip.)
        if let Err(e) = self.node.check_read(&self.me.user, &room).await {
            self.node.hub.leave_room(&room, &self.me);
            return Err(e);
        }
        let first_here = !self.node.hub.user_in_room(&room, &self.me.user, self.me.id);
        match self.node.join_history(&room, since).await {
            Ok(history) => {
                let tail = history.tail;
                self.push_joined(id, &room, history, &allowed).await;
                self.node.hub.activate(&room, self.me.id, tail);
                self.joined.insert(room.clone());
                if first_here {
                    self.publish_presence(&room, PresenceState::Joined);
                }
                Ok(())
            }
            Err(e) => {
                self.node.hub.leave_room(&room, &self.me);
                Err(e)
            }
        }
    }

    /// Moves the read position; answers with where it is now, and tells
    /// the user's other connections (every node) so their devices agree.
    async fn read(&mut self, id: Option<u64>, room: &str, seq: u64) -> Result<(), ChatError> {
        let seq = self.node.mark_read(&self.me.user, room, seq).await?;
        self.push(&ServerFrame::Read {
            re: id,
            room: room.to_string(),
            seq,
        });
        let push = ServerFrame::Read {
            re: None,
            room: room.to_string(),
            seq,
        };
        self.node
            .hub
            .push_to_user(&self.me.user, room, push.to_json().into(), self.me.tag);
        Ok(())
    }

    /// Whether this connection is subscribed to `room`. A membership event
    /// (kick, ban, part) may have taken it out: the hub's word wins, and
    /// the session forgets the room then.
    fn is_joined(&mut self, room: &str) -> bool {
        if !self.joined.contains(room) {
            return false;
        }
        if self.node.hub.is_subscribed(room, self.me.id) {
            return true;
        }
        self.joined.remove(room);
        // The room may be empty now: let the hub stop it.
        self.node.hub.leave(room, self.me.id);
        false
    }

    /// Part: ends the user's membership (a room event); every connection
    /// of the user subscribed to the room gets `left` (reason `parted`),
    /// and this one its answer, once stored.
    async fn part(&mut self, id: Option<u64>, room: &str) -> Result<(), ChatError> {
        let joined = self.is_joined(room);
        let user = self.me.user.clone();
        let change = parley_protocol::MemberChange::Removed;
        if joined {
            // Its answer says `left`: not the push as well.
            self.node.hub.set_parting(room, self.me.id, true);
        }
        match self
            .node
            .moderate(&user, room, &user, change, None, None)
            .await
        {
            Ok(pending) => {
                let (hub, room, me) = (self.node.hub.clone(), room.to_string(), self.me.id);
                self.acks.push(Box::pin(async move {
                    let result = pending.await.unwrap_or_else(|_| {
                        Err(StoreError::Unavailable("committer stopped".to_string()))
                    });
                    if joined && !matches!(result, Ok(AppendOutcome::Stored(_))) {
                        // Refused or failed: still subscribed, pushes as before.
                        hub.set_parting(&room, me, false);
                    }
                    (id, Reply::Left, result)
                }));
                self.strikes = 0;
                Ok(())
            }
            Err(e) => {
                if joined {
                    self.node.hub.set_parting(room, self.me.id, false);
                }
                Err(e)
            }
        }
    }

    async fn push_joined(
        &self,
        re: Option<u64>,
        room: &str,
        history: JoinHistory,
        allowed: &crate::access::Allowed,
    ) {
        let members = self.node.hub.members(room).await;
        // Best effort: a join is not refused because the count failed.
        let unread = match self.node.unread(&self.me.user, room).await {
            Ok(unread) => unread,
            Err(e) => {
                tracing::warn!(room, error = %e.message, "unread count failed");
                Default::default()
            }
        };
        self.push(&ServerFrame::Joined {
            re,
            room: room.to_string(),
            last_seq: history.last_seq,
            history: history
                .page
                .messages
                .into_iter()
                .map(|m| m.into_wire())
                .collect(),
            more: history.page.more,
            members,
            read_seq: unread.read_seq,
            unread: unread.unread,
            mentions: unread.mentions,
            topic: allowed
                .access
                .as_ref()
                .map(|a| a.topic.clone())
                .filter(|t| !t.is_empty()),
            private: allowed.access.as_ref().is_some_and(|a| a.private),
            role: allowed.role(),
        });
    }

    fn leave(&mut self, id: Option<u64>, room: &str) -> Result<(), ChatError> {
        if !self.joined.remove(room) {
            return Err(ChatError::not_found(format!("not joined to room {room:?}")));
        }
        if self.node.hub.leave_room(room, &self.me) == Some(false) {
            self.publish_presence(room, PresenceState::Left);
        }
        self.push(&ServerFrame::Left {
            re: id,
            room: room.to_string(),
            reason: None,
        });
        Ok(())
    }

    async fn send(
        &mut self,
        id: Option<u64>,
        room: Option<String>,
        to: Option<String>,
        text: String,
        nonce: Option<String>,
        reply_to: Option<u64>,
    ) -> Result<(), ChatError> {
        let room = match (room, to) {
            (Some(room), None) => {
                if !self.is_joined(&room) {
                    // No store read for a frame that cannot succeed.
                    self.node.check_name(&self.me.user, &room)?;
                    return Err(ChatError::forbidden(format!(
                        "join room {room:?} before sending to it"
                    )));
                }
                // A ban or a private room refuses a joined connection too
                // (cached per live room: no store round trip).
                self.node.check_read(&self.me.user, &room).await?;
                room
            }
            (None, Some(to)) => self.node.dm_room_for(&self.me.user, &to)?,
            _ => {
                return Err(ChatError::bad_request(
                    "a send needs exactly one of \"room\" and \"to\"",
                ));
            }
        };
        let change = match reply_to {
            Some(reply_to) => Change::Reply { reply_to },
            None => Change::Message,
        };
        let pending = self
            .node
            .submit_change(&self.me.user, &room, change, text, nonce)
            .await?;
        self.await_ack(id, pending);
        Ok(())
    }

    /// An edit, delete or reaction: allowed to whoever may read the room
    /// (joined or not, like `history`); the store checks the target.
    async fn change(
        &mut self,
        id: Option<u64>,
        room: &str,
        change: Change,
        text: String,
        nonce: Option<String>,
    ) -> Result<(), ChatError> {
        self.node.check_read(&self.me.user, room).await?;
        let pending = self
            .node
            .submit_change(&self.me.user, room, change, text, nonce)
            .await?;
        self.await_ack(id, pending);
        Ok(())
    }

    /// Answers `id` once `pending` is committed (acks may overtake each
    /// other across rooms; each carries its `re`).
    fn await_ack(&mut self, id: Option<u64>, pending: crate::commit::PendingAppend) {
        self.await_reply(id, Reply::Ack, pending);
    }

    fn await_reply(
        &mut self,
        id: Option<u64>,
        reply: Reply,
        pending: crate::commit::PendingAppend,
    ) {
        self.strikes = 0;
        self.acks.push(Box::pin(async move {
            let result = pending
                .await
                .unwrap_or_else(|_| Err(StoreError::Unavailable("committer stopped".to_string())));
            (id, reply, result)
        }));
    }

    async fn history(
        &self,
        id: Option<u64>,
        room: &str,
        before: Option<u64>,
        after: Option<u64>,
        limit: Option<u32>,
    ) -> Result<(), ChatError> {
        self.node.check_read(&self.me.user, room).await?;
        let page = self.node.history(room, before, after, limit).await?;
        self.push(&ServerFrame::History {
            re: id,
            room: room.to_string(),
            messages: page.messages.into_iter().map(|m| m.into_wire()).collect(),
            more: page.more,
        });
        Ok(())
    }

    fn typing(&mut self, room: &str) -> Result<(), ChatError> {
        if !self.is_joined(room) {
            return Err(ChatError::forbidden(format!(
                "join room {room:?} before typing in it"
            )));
        }
        let frame = ServerFrame::Typing {
            room: room.to_string(),
            user: self.me.user.to_string(),
        };
        self.publish_ephemeral(room, &frame);
        Ok(())
    }

    fn publish_presence(&self, room: &str, state: PresenceState) {
        let frame = ServerFrame::Presence {
            room: room.to_string(),
            user: self.me.user.to_string(),
            state,
        };
        self.publish_ephemeral(room, &frame);
    }

    fn publish_ephemeral(&self, room: &str, frame: &ServerFrame) {
        self.node.hub.publish_ephemeral(room, &self.me.user, frame);
    }
}
