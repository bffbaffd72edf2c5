//! One simulated client: a task that owns one WebSocket connection at a
//! time, driven directly on tokio-tungstenite (one task per connection, no
//! channels, no per-message allocation on the receive path).
//!
//! A connection: dials (bound to its source address), authenticates with a
//! bearer token at upgrade time, waits for `welcome`, joins its room, then
//! loops: it records every pushed room event and ack, and — if it is a
//! sender, in the run phase — sends one operation every MSG_INTERVAL: a
//! message, or as `--mix` says a reply (to the room's latest message), an
//! edit, a delete or a reaction (to one of its own messages, which only it
//! may edit or delete, so no other sender's delete can make it fail).
//!
//! In `resume` a lost connection comes back as its close code's
//! [`ClientAction`] says — at once after 1001/4408, with backoff after a
//! lost connection or 4429, never after 4401 or 1002–1009 — to another
//! `--url`, picked at random (as a load balancer moves the clients of a
//! draining node to the others), re-joins with `since` = the last seq seen,
//! pages forward with `history` while `more`, and resends unacked sends with
//! their nonce. A send answered `unavailable` (the database is out of reach:
//! a failover) is resent too, with its nonce, after [`RETRY_UNAVAILABLE`],
//! as the protocol asks of a client: the node may not know whether a commit
//! cut short by a lost database connection was stored, and the nonce makes
//! the resend safe. It still counts in `send_errors` each time it is refused.
//! In `hold` and `chat` a lost connection stays lost, and a lost member stops
//! expecting messages from then on (see [`crate::accounting`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use parley_protocol::backoff::Backoff;
use parley_protocol::{ClientAction, CloseCode};
use rand::Rng;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderValue, header::AUTHORIZATION};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message as WsMessage};

use std::collections::{HashSet, VecDeque};

use crate::accounting::MemberLog;
use crate::mix::Kind;
use crate::plan::Scenario;
use crate::report::Counters;
use crate::shared::{Phase, Shared};
use crate::wire::{self, Frame, Op};

type Ws = WebSocketStream<TcpStream>;

/// Largest history page asked for when resuming.
const PAGE: u32 = 500;
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// How long a polite close may take at the end.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// Own messages a sender remembers as targets of its edits, deletes and
/// reactions (the newest).
const OWN_TARGETS: usize = 64;
/// Wait before resending sends refused with `unavailable` (`resume`).
const RETRY_UNAVAILABLE: Duration = Duration::from_millis(500);

/// Who this connection is.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Index over the whole run.
    pub conn: usize,
    pub token: String,
    pub room: Option<usize>,
    pub sender: bool,
}

/// What a connection hands back at the end.
#[derive(Debug, Default)]
pub struct Outcome {
    /// `welcome.node` of its last session.
    pub node: Option<String>,
    pub member: Option<MemberLog>,
    /// Welcomed at least once.
    pub connected: bool,
    pub open_at_end: bool,
    pub first_send_us: Option<u64>,
    pub last_delivery_us: Option<u64>,
}

/// Why a session ended.
enum End {
    /// The run is over; we closed.
    Stopped,
    /// Could not connect, authenticate or join.
    Failed(Why),
    /// An established session broke.
    Lost(Why),
}

/// What ended a session: the kind of error (as counted in the report), and
/// the server's close code if it closed the connection.
struct Why {
    kind: String,
    close: Option<u16>,
}

impl Why {
    fn closed(code: u16) -> Why {
        Why {
            kind: format!("closed: {code}"),
            close: Some(code),
        }
    }
}

impl From<String> for Why {
    fn from(kind: String) -> Why {
        Why { kind, close: None }
    }
}

impl From<&str> for Why {
    fn from(kind: &str) -> Why {
        Why::from(kind.to_string())
    }
}

struct Pending {
    id: u64,
    sent_at: Instant,
    /// What was asked, kept for a resend (a text only in `resume`).
    op: Op,
    nonce: Option<String>,
}

struct Client {
    spec: Spec,
    shared: Arc<Shared>,
    resume: bool,
    room_name: Option<String>,
    member: Option<MemberLog>,
    /// Last seq seen on this session's live stream (None: not known yet).
    last_live: Option<u64>,
    /// No longer counted in `shared.waiting`.
    done: bool,
    settled: bool,
    pending: Vec<Pending>,
    /// Unacked sends of a lost session, or refused `unavailable`, to
    /// resend with their nonce.
    retry: Vec<Pending>,
    /// When to resend the sends refused with `unavailable`.
    retry_at: Option<Instant>,
    next_id: u64,
    sent_n: u64,
    next_send: Option<Instant>,
    /// Own messages acked and not deleted (nor asked to be): what edits,
    /// deletes and reactions target.
    own: VecDeque<u64>,
    /// Own messages that carry this connection's reaction now.
    reacted: HashSet<u64>,
    /// The room's latest message seen: what replies answer.
    last_message: Option<u64>,
    /// Offset of this connection's target: the session after a loss dials another node.
    hops: usize,
    out: Outcome,
}

/// Runs one connection until the run stops.
pub async fn run(spec: Spec, shared: Arc<Shared>) -> Outcome {
    let plan = shared.plan.clone();
    let mut client = Client {
        room_name: spec.room.map(|r| plan.room_name(r)),
        resume: plan.scenario == Scenario::Resume,
        spec,
        shared,
        member: None,
        last_live: None,
        done: false,
        settled: false,
        pending: Vec::new(),
        retry: Vec::new(),
        retry_at: None,
        next_id: 0,
        sent_n: 0,
        next_send: None,
        own: VecDeque::new(),
        reacted: HashSet::new(),
        last_message: None,
        hops: 0,
        out: Outcome::default(),
    };
    client.main().await;
    client.out.member = client.member.take();
    client.out
}

impl Client {
    async fn main(&mut self) {
        let mut phase = self.shared.phase_watch();
        // Doubling up to MAX_BACKOFF, each wait up to twice the base.
        let mut backoff = Backoff::new(MIN_BACKOFF, MAX_BACKOFF).with_jitter(1.0);
        loop {
            let end = self.session(&mut phase).await;
            self.settle();
            let why = match end {
                End::Stopped => {
                    self.out.open_at_end = true;
                    return;
                }
                End::Failed(why) => {
                    self.shared.error(&why.kind);
                    why
                }
                End::Lost(why) => {
                    Counters::bump(&self.shared.counters.disconnected);
                    self.shared.error(&why.kind);
                    self.retry.append(&mut self.pending);
                    // The session was up: start the backoff afresh.
                    backoff.reset();
                    why
                }
            };
            let action = ClientAction::after_close(why.close);
            if !self.resume || action == ClientAction::Stop || self.shared.phase() == Phase::Stop {
                self.give_up();
                return;
            }
            // Like a load balancer: the next session goes to another node,
            // picked at random (in turn would herd every client of a rolling
            // restart onto the node restarted first).
            let targets = self.shared.plan.targets.len();
            if targets > 1 {
                self.hops += rand::thread_rng().gen_range(1..targets);
            }
            let wait = match action {
                ClientAction::ReconnectNow => jitter(Duration::from_millis(250)),
                _ => backoff.next_delay(rand::thread_rng().r#gen()).max(
                    why.close
                        .and_then(CloseCode::from_u16)
                        .map_or(Duration::ZERO, CloseCode::min_delay),
                ),
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = phase.wait_for(|p| *p == Phase::Stop) => {}
            }
            if self.shared.phase() == Phase::Stop {
                self.give_up();
                return;
            }
        }
    }

    /// The first attempt is decided: the ramp may move on.
    fn settle(&mut self) {
        if !self.settled {
            self.settled = true;
            self.shared.settled.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// This connection will not come back: stop waiting for it, forget its
    /// unanswered sends, and (a member) expect nothing acked from now on.
    fn give_up(&mut self) {
        if let (Some(member), Some(room)) = (self.member.as_mut(), self.spec.room)
            && member.end.is_none()
            && !self.done
        {
            member.end = Some(self.shared.rooms[room].max_acked.load(Ordering::SeqCst));
        }
        self.finish_waiting();
        let unanswered = (self.pending.len() + self.retry.len()) as i64;
        self.pending.clear();
        self.retry.clear();
        self.shared.inflight.fetch_sub(unanswered, Ordering::SeqCst);
    }

    fn finish_waiting(&mut self) {
        if !self.done {
            self.done = true;
            if self.spec.room.is_some() {
                self.shared.waiting.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }

    /// In the drain phase: has this member got everything acked in its room?
    fn check_caught_up(&mut self) {
        if self.done || self.shared.phase() != Phase::Drain {
            return;
        }
        let (Some(member), Some(room)) = (self.member.as_ref(), self.spec.room) else {
            return;
        };
        // inflight first: once it is 0 in the drain, no ack can raise max_acked.
        if self.shared.inflight.load(Ordering::SeqCst) == 0
            && member.contiguous >= self.shared.rooms[room].max_acked.load(Ordering::SeqCst)
        {
            self.finish_waiting();
        }
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    async fn session(&mut self, phase: &mut watch::Receiver<Phase>) -> End {
        if self.shared.phase() == Phase::Stop {
            return End::Stopped;
        }
        let plan = self.shared.plan.clone();
        let target = plan.target_of(self.spec.conn + self.hops);
        let limit = plan.connect_timeout;
        let dial = connect(
            &target.url,
            target.addr,
            plan.source_ip_of(self.spec.conn),
            &self.spec.token,
        );
        let mut ws = match tokio::time::timeout(limit, dial).await {
            Err(_) => return End::Failed("connect: timeout".into()),
            Ok(Err(kind)) => return End::Failed(kind.into()),
            Ok(Ok(ws)) => ws,
        };
        self.shared.open.fetch_add(1, Ordering::Relaxed);
        let end = self.serve(&mut ws, phase).await;
        self.shared.open.fetch_sub(1, Ordering::Relaxed);
        if matches!(end, End::Stopped) {
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, ws.close(None)).await;
        }
        end
    }

    /// Welcome, join, then the live loop.
    async fn serve(&mut self, ws: &mut Ws, phase: &mut watch::Receiver<Phase>) -> End {
        let node = match self.until(ws, Want::Welcome).await {
            Ok(Frame::Welcome { node }) => node,
            Ok(_) => return End::Failed("hello: unexpected reply".into()),
            Err(end) => return self.failed_before_joined(end, "hello"),
        };
        self.out.node = Some(node);
        if self.room_name.is_some()
            && let Err(end) = self.join(ws).await
        {
            return self.failed_before_joined(end, "join");
        }
        if self.out.connected {
            Counters::bump(&self.shared.counters.reconnects);
        } else {
            self.out.connected = true;
            Counters::bump(&self.shared.counters.connected);
        }
        self.settle();
        if let Err(end) = self.resend(ws).await {
            return end;
        }
        self.live(ws, phase).await
    }

    /// Maps an end before the session was set up to a failed attempt.
    fn failed_before_joined(&self, end: End, step: &str) -> End {
        match end {
            End::Lost(why) | End::Failed(why) => End::Failed(Why {
                kind: format!("{step}: {}", why.kind),
                close: why.close,
            }),
            End::Stopped => End::Stopped,
        }
    }

    /// Joins the room (with `since` on a rejoin) and pages forward.
    async fn join(&mut self, ws: &mut Ws) -> Result<(), End> {
        let (Some(room), Some(name)) = (self.spec.room, self.room_name.clone()) else {
            return Ok(());
        };
        let since = self.member.as_ref().map(|m| m.max_seen);
        let id = self.id();
        send_text(ws, wire::join(id, &name, since)).await?;
        let Frame::Joined {
            last_seq,
            more,
            history,
            ..
        } = self.until(ws, Want::Reply(id)).await?
        else {
            return Err(End::Lost("unexpected reply".into()));
        };
        let Some(since) = since else {
            // First join: expect everything after the room's last seq now.
            self.member = Some(MemberLog::new(room, last_seq));
            self.last_live = Some(last_seq);
            return Ok(());
        };
        let mut cursor = since;
        for &(seq, sent_us, kind) in &history {
            self.deliver(seq, sent_us, kind, false);
            cursor = cursor.max(seq);
        }
        if !more {
            self.last_live = self.member.as_ref().map(|m| m.max_seen.max(cursor));
            return Ok(());
        }
        // Live pushes resume after the last history message; everything
        // before them is paged forward. Overlaps are deduplicated by seq.
        self.last_live = None;
        loop {
            let id = self.id();
            send_text(ws, wire::history_after(id, &name, cursor, PAGE)).await?;
            let Frame::History { more, messages, .. } = self.until(ws, Want::Reply(id)).await?
            else {
                return Err(End::Lost("unexpected reply".into()));
            };
            for &(seq, sent_us, kind) in &messages {
                self.deliver(seq, sent_us, kind, false);
                cursor = cursor.max(seq);
            }
            if !more || messages.is_empty() {
                return Ok(());
            }
        }
    }

    /// Sends again, with their nonce, the sends a lost session left unacked.
    async fn resend(&mut self, ws: &mut Ws) -> Result<(), End> {
        let Some(room) = self.room_name.clone() else {
            return Ok(());
        };
        let mut retry = std::mem::take(&mut self.retry);
        // In the order first sent: an edit must not overtake the delete
        // of its message, nor a message the edit of it.
        retry.sort_by_key(|p| p.id);
        for mut p in retry {
            p.id = self.id();
            let frame = wire::request(p.id, &room, &p.op, p.nonce.as_deref());
            self.pending.push(p);
            send_text(ws, frame).await?;
        }
        Ok(())
    }

    /// Reads frames until the wanted reply, handling everything else.
    async fn until(&mut self, ws: &mut Ws, want: Want) -> Result<Frame, End> {
        let limit = self.shared.plan.connect_timeout;
        let deadline = Instant::now() + limit;
        loop {
            let next = tokio::time::timeout_at(deadline, ws.next()).await;
            let msg = match next {
                Err(_) => return Err(End::Lost("timeout".into())),
                Ok(msg) => msg,
            };
            let frame = match read(msg)? {
                Some(frame) => frame,
                None => continue,
            };
            match (&want, frame) {
                (Want::Welcome, f @ Frame::Welcome { .. }) => return Ok(f),
                (Want::Welcome, Frame::Error { code, .. }) => {
                    return Err(End::Lost(code.into()));
                }
                (Want::Reply(id), f @ (Frame::Joined { re, .. } | Frame::History { re, .. }))
                    if re == Some(*id) =>
                {
                    return Ok(f);
                }
                (Want::Reply(id), Frame::Error { re, code }) if re == Some(*id) => {
                    return Err(End::Lost(format!("error {code}").into()));
                }
                (_, frame) => self.on_frame(frame),
            }
        }
    }

    /// The established session: receive, send, and follow the phases.
    async fn live(&mut self, ws: &mut Ws, phase: &mut watch::Receiver<Phase>) -> End {
        let interval = self.shared.plan.msg_interval;
        let mut drain_tick = tokio::time::interval(Duration::from_millis(50));
        loop {
            self.check_caught_up();
            let now_phase = *phase.borrow_and_update();
            if now_phase == Phase::Stop {
                return End::Stopped;
            }
            if self.spec.sender && now_phase == Phase::Run && self.next_send.is_none() {
                // Spread the senders evenly over one interval.
                self.next_send = Some(Instant::now() + jitter(interval));
            }
            let send_at = self
                .next_send
                .filter(|_| self.spec.sender && now_phase == Phase::Run);
            tokio::select! {
                biased;
                changed = phase.changed() => {
                    if changed.is_err() {
                        return End::Stopped;
                    }
                }
                msg = ws.next() => match read(msg) {
                    Ok(Some(frame)) => self.on_frame(frame),
                    Ok(None) => {}
                    Err(end) => return end,
                },
                _ = sleep_until_opt(send_at) => {
                    if let Err(end) = self.send_new(ws).await {
                        return end;
                    }
                    let now = Instant::now();
                    let mut next = send_at.unwrap_or(now) + interval;
                    if next + interval < now {
                        next = now; // far behind: catch up once, do not burst
                    }
                    self.next_send = Some(next);
                }
                _ = sleep_until_opt(self.retry_at) => {
                    self.retry_at = None;
                    if let Err(end) = self.resend(ws).await {
                        return end;
                    }
                }
                _ = drain_tick.tick(), if now_phase == Phase::Drain => {}
            }
        }
    }

    async fn send_new(&mut self, ws: &mut Ws) -> Result<(), End> {
        let shared = self.shared.clone();
        // Counted before the phase check: a member that sees inflight == 0 in
        // the drain can then trust that no send is on its way.
        shared.inflight.fetch_add(1, Ordering::SeqCst);
        if shared.phase() != Phase::Run {
            shared.inflight.fetch_sub(1, Ordering::SeqCst);
            return Ok(());
        }
        let Some(room) = self.room_name.clone() else {
            shared.inflight.fetch_sub(1, Ordering::SeqCst);
            return Ok(());
        };
        self.sent_n += 1;
        let id = self.id();
        let now_us = parley_protocol::time::now_us();
        let text = wire::message_text(now_us, self.spec.conn, self.sent_n, shared.plan.msg_size);
        let nonce = self
            .resume
            .then(|| format!("{}-{}-{}", shared.plan.run_id, self.spec.conn, self.sent_n));
        let op = self.next_op(text);
        let frame = wire::request(id, &room, &op, nonce.as_deref());
        shared.by_kind.sent(op.kind());
        self.pending.push(Pending {
            id,
            sent_at: Instant::now(),
            op: if self.resume { op } else { op.without_text() },
            nonce,
        });
        Counters::bump(&shared.counters.sent);
        self.out.first_send_us.get_or_insert(now_us);
        send_text(ws, frame).await
    }

    /// The next operation, as the mix says: one that needs a target it
    /// does not have (no own message yet) is a plain message instead.
    fn next_op(&mut self, text: String) -> Op {
        let mix = self.shared.plan.mix;
        if mix.is_none() {
            return Op::Send {
                text,
                reply_to: None,
            };
        }
        let mut rng = rand::thread_rng();
        let own = (!self.own.is_empty()).then(|| rng.gen_range(0..self.own.len()));
        match (mix.choose(rng.gen_range(0..100)), own) {
            (Kind::Reply, _) if self.last_message.is_some() => Op::Send {
                text,
                reply_to: self.last_message,
            },
            (Kind::Edit, Some(i)) => Op::Edit {
                target: self.own[i],
                text,
            },
            (Kind::Delete, Some(i)) => {
                // Forgotten at once: nothing later may target it.
                let target = self.own.remove(i).unwrap_or_default();
                self.reacted.remove(&target);
                Op::Delete { target }
            }
            (Kind::React, Some(i)) => {
                let target = self.own[i];
                // A toggle, so that every reaction changes something and
                // stores an event (one that changes nothing stores none).
                let on = self.reacted.insert(target);
                if !on {
                    self.reacted.remove(&target);
                }
                Op::React { target, on }
            }
            _ => Op::Send {
                text,
                reply_to: None,
            },
        }
    }

    fn take_pending(&mut self, re: Option<u64>) -> Option<Pending> {
        let re = re?;
        let i = self.pending.iter().position(|p| p.id == re)?;
        Some(self.pending.swap_remove(i))
    }

    fn on_frame(&mut self, frame: Frame) {
        match frame {
            Frame::Message { seq, sent_us, kind } => self.deliver(seq, sent_us, kind, true),
            Frame::Ack { re, seq } => {
                let Some(p) = self.take_pending(re) else {
                    return;
                };
                let shared = &self.shared;
                shared
                    .ack_latency
                    .record(self.spec.conn, p.sent_at.elapsed().as_micros() as u64);
                if let Some(room) = self.spec.room
                    && shared.rooms[room].ack(seq)
                {
                    Counters::bump(&shared.counters.acked);
                    let kind = p.op.kind();
                    shared.by_kind.acked(kind);
                    // A new message of one's own: a target from now on.
                    if matches!(kind, Kind::Message | Kind::Reply) && !shared.plan.mix.is_none() {
                        self.own.push_back(seq);
                        if self.own.len() > OWN_TARGETS
                            && let Some(old) = self.own.pop_front()
                        {
                            self.reacted.remove(&old);
                        }
                    }
                }
                // After the ack is recorded, so max_acked is final when this hits 0.
                shared.inflight.fetch_sub(1, Ordering::SeqCst);
            }
            Frame::Error { re, code } => match self.take_pending(re) {
                Some(p) => {
                    Counters::bump(&self.shared.counters.send_errors);
                    self.shared.error(&format!("send: {code}"));
                    if self.resume && code == "unavailable" {
                        // Still in flight: the drain waits for its ack.
                        self.retry.push(p);
                        self.retry_at
                            .get_or_insert(Instant::now() + RETRY_UNAVAILABLE);
                    } else {
                        self.shared.inflight.fetch_sub(1, Ordering::SeqCst);
                    }
                }
                None => self.shared.error(&format!("error: {code}")),
            },
            Frame::Welcome { .. } | Frame::Joined { .. } | Frame::History { .. } | Frame::Other => {
            }
        }
    }

    /// An event of the room arrived (pushed live, or from history).
    /// `kind` is None for member and topic events, which the bench never
    /// makes: they count toward the room's seq like any event.
    fn deliver(&mut self, seq: u64, sent_us: Option<u64>, kind: Option<Kind>, live: bool) {
        if matches!(kind, Some(Kind::Message | Kind::Reply)) {
            self.last_message = self.last_message.max(Some(seq));
        }
        let Some(member) = self.member.as_mut() else {
            return;
        };
        let counters = &self.shared.counters;
        if live {
            if let Some(last) = self.last_live {
                if seq <= last {
                    Counters::bump(&counters.duplicates);
                    return;
                }
                if seq > last + 1 {
                    counters
                        .seq_gaps
                        .fetch_add(seq - last - 1, Ordering::Relaxed);
                }
            }
            self.last_live = Some(seq);
        }
        if member.receive(seq) {
            Counters::bump(&counters.received);
            if let Some(kind) = kind {
                self.shared.by_kind.received(kind);
            }
            let now = parley_protocol::time::now_us();
            if let Some(sent) = sent_us {
                self.shared
                    .e2e_latency
                    .record(self.spec.conn, now.saturating_sub(sent));
            }
            self.out.last_delivery_us = Some(now);
        }
    }
}

enum Want {
    Welcome,
    Reply(u64),
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// A random duration in `0..max`.
fn jitter(max: Duration) -> Duration {
    let ms = max.as_millis().max(1) as u64;
    Duration::from_millis(rand::thread_rng().gen_range(0..ms))
}

/// One WebSocket read: a frame, nothing of interest, or the end.
fn read(msg: Option<Result<WsMessage, tungstenite::Error>>) -> Result<Option<Frame>, End> {
    match msg {
        None => Err(End::Lost("connection ended".into())),
        Some(Err(e)) => Err(End::Lost(ws_error("read", &e).into())),
        Some(Ok(WsMessage::Text(text))) => match wire::parse(text.as_str()) {
            Ok(frame) => Ok(Some(frame)),
            Err(_) => Err(End::Lost("protocol: unparseable frame".into())),
        },
        Some(Ok(WsMessage::Close(frame))) => Err(End::Lost(match frame {
            Some(f) => Why::closed(u16::from(f.code)),
            None => "closed".into(),
        })),
        Some(Ok(_)) => Ok(None),
    }
}

async fn send_text(ws: &mut Ws, text: String) -> Result<(), End> {
    ws.send(WsMessage::text(text))
        .await
        .map_err(|e| End::Lost(ws_error("write", &e).into()))
}

/// A short, low-cardinality name for a WebSocket error.
fn ws_error(step: &str, e: &tungstenite::Error) -> String {
    match e {
        tungstenite::Error::Http(resp) => format!("{step}: HTTP {}", resp.status().as_u16()),
        tungstenite::Error::Io(io) => format!("{step}: {:?}", io.kind()),
        tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => {
            format!("{step}: connection closed")
        }
        tungstenite::Error::Protocol(p) => format!("{step}: protocol: {p}"),
        tungstenite::Error::Capacity(_) => format!("{step}: frame too large"),
        _ => format!("{step}: websocket error"),
    }
}

/// Dials `addr` (from `local` if given) and upgrades to WebSocket with a
/// bearer token.
async fn connect(
    url: &str,
    addr: SocketAddr,
    local: Option<std::net::IpAddr>,
    token: &str,
) -> Result<Ws, String> {
    let io = |step: &str, e: std::io::Error| format!("{step}: {:?}", e.kind());
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(|e| io("socket", e))?;
    if let Some(ip) = local {
        socket
            .bind(SocketAddr::new(ip, 0))
            .map_err(|e| io("bind", e))?;
    }
    let stream = socket.connect(addr).await.map_err(|e| io("connect", e))?;
    stream.set_nodelay(true).map_err(|e| io("connect", e))?;
    let mut request = url
        .into_client_request()
        .map_err(|e| ws_error("upgrade", &e))?;
    let bearer = HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|_| "upgrade: token is not a valid header".to_string())?;
    request.headers_mut().insert(AUTHORIZATION, bearer);
    let config = WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .max_message_size(Some(64 << 20));
    let (ws, _) = tokio_tungstenite::client_async_with_config(request, stream, Some(config))
        .await
        .map_err(|e| ws_error("upgrade", &e))?;
    Ok(ws)
}
