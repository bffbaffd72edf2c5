//! The socket side of a session: one task reads the peer's frames and writes
//! the connection's [`Outbox`](super::outbox), batching whatever is queued
//! into one flush.
//!
//! One task, not a reader and a writer: a second task per connection cost
//! about 0.75 KiB of every idle connection (its future, its task header, and
//! the lock that a split socket shares), see docs/benchmarks.md. The price is
//! that a write blocked on a peer that does not read also stops reading from
//! it — which is what such a peer has earned.
//!
//! [`Socket::next`] is the one place that waits: for a frame from the peer,
//! frames queued in the outbox, a close request, or the caller's own event.
//! It writes queued frames itself before it waits again, so no caller's
//! `select!` can abandon a write halfway (which would lose frames).
//!
//! Closing: an urgent close (4408 for a slow consumer) drops what is queued,
//! abandons a blocked write, and sends the close frame, which then waits
//! behind the bytes already buffered for [`CLOSE_LINGER`] at most — so a
//! client that starts reading again learns why and can resume. A drain
//! (1001) is handed to the session, which answers its pending sends first;
//! [`Socket::finish`] then writes everything queued up to the close frame.

use std::future::Future;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message as WsMessage, Utf8Bytes, WebSocket};
use futures_util::{SinkExt, StreamExt};
use parley_protocol::{CloseCode, close};

use crate::outbox::{OutboxReceiver, Wake};

/// Frames written per flush at most, so one busy room cannot starve reads.
const MAX_BATCH: usize = 64;
/// How long a close frame may wait for a peer that does not read.
pub const CLOSE_LINGER: Duration = Duration::from_secs(10);
/// How long the closing handshake may take once the close frame is out.
const CLOSE_HANDSHAKE: Duration = Duration::from_secs(1);

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The peer went away, the socket failed, or the close frame is already
    /// out: nothing more to write.
    Gone,
    /// The session closes with this code, behind what it still has to say.
    Close(u16),
}

/// What one read produced.
pub enum Input {
    Text(Utf8Bytes),
    /// The connection is ending.
    End(End),
    /// A control frame, or nothing of interest.
    Nothing,
}

/// What [`Socket::next`] returns: the peer's input, or the caller's event.
pub enum Step<T> {
    Input(Input),
    Other(T),
}

pub struct Socket {
    ws: WebSocket,
    rx: OutboxReceiver,
    batch: Vec<WsMessage>,
}

impl Socket {
    pub fn new(ws: WebSocket, rx: OutboxReceiver) -> Socket {
        Socket {
            ws,
            rx,
            batch: Vec::new(),
        }
    }

    /// Writes queued frames until the peer sends something, a close is
    /// requested, or `other` completes. `other` must be cancel-safe: it is
    /// dropped when the peer's input comes first.
    pub async fn next<T>(&mut self, other: impl Future<Output = T>) -> Step<T> {
        let mut other = std::pin::pin!(other);
        loop {
            let wake = tokio::select! {
                wake = self.rx.wait(&mut self.batch, MAX_BATCH) => wake,
                item = self.ws.next() => return Step::Input(self.input(item)),
                out = &mut other => return Step::Other(out),
            };
            match wake {
                Wake::Frames => {
                    // Boxed: a write's state (300 bytes) exists only while
                    // writing, not in every idle connection's future.
                    if let Err(end) = Box::pin(self.write_batch()).await {
                        return Step::Input(Input::End(end));
                    }
                }
                Wake::Close(close::GOING_AWAY) => {
                    return Step::Input(Input::End(End::Close(close::GOING_AWAY)));
                }
                Wake::Close(code) => {
                    Box::pin(self.close_now(code)).await;
                    return Step::Input(Input::End(End::Gone));
                }
                // The session holds an outbox handle while it runs.
                Wake::Ended => return Step::Input(Input::End(End::Gone)),
            }
        }
    }

    fn input(&mut self, item: Option<Result<WsMessage, axum::Error>>) -> Input {
        let Some(item) = item else {
            return Input::End(End::Gone);
        };
        self.rx.touch();
        match item {
            Ok(WsMessage::Text(text)) => Input::Text(text),
            Ok(WsMessage::Binary(_)) => {
                metrics::counter!("parley_frames_rejected_total", "reason" => "binary")
                    .increment(1);
                Input::End(End::Close(close::UNSUPPORTED_DATA))
            }
            Ok(WsMessage::Close(_)) => Input::End(End::Gone),
            Ok(_) => Input::Nothing,
            Err(err) => Input::End(classify_read_error(err)),
        }
    }

    /// Writes the batch and flushes once, unless an urgent close comes first
    /// (then the close is sent instead). `Err` when the connection is done.
    async fn write_batch(&mut self) -> Result<(), End> {
        let code = tokio::select! {
            biased;
            code = self.rx.urgent_close() => code,
            done = write_all(&mut self.ws, &mut self.batch) => {
                return if done { Err(End::Gone) } else { Ok(()) };
            }
        };
        Box::pin(self.close_now(code)).await;
        Err(End::Gone)
    }

    /// Drops what is queued and sends the close frame. Callers box it: its
    /// timers would otherwise sit in every connection's future for a path
    /// few connections take.
    async fn close_now(&mut self, code: u16) {
        self.batch.clear();
        self.rx.discard();
        let frame = close_frame(code, reason(code));
        let _ = tokio::time::timeout(CLOSE_LINGER, self.ws.send(frame)).await;
        let _ = tokio::time::timeout(CLOSE_HANDSHAKE, self.ws.close()).await;
    }

    /// Ends the connection after the session: on `End::Close`, writes what is
    /// still queued — the session's last answers and its close frame — for
    /// [`CLOSE_LINGER`] at most.
    pub async fn finish(mut self, end: End) {
        if end == End::Gone {
            return;
        }
        let flush = async {
            loop {
                if let Some(code) = self.rx.urgent_close_now() {
                    Box::pin(self.close_now(code)).await;
                    return;
                }
                if !self.rx.take(&mut self.batch, MAX_BATCH) {
                    // Nothing left, and the session queued its close frame
                    // (or could not, the queue being full: then it asked for
                    // an urgent close, handled above).
                    return;
                }
                if self.write_batch().await.is_err() {
                    return;
                }
            }
        };
        let _ = tokio::time::timeout(CLOSE_LINGER, flush).await;
        let _ = tokio::time::timeout(CLOSE_HANDSHAKE, self.ws.close()).await;
    }
}

/// Feeds every frame of `batch` and flushes once. True when the connection is
/// done (a close frame was written, or the socket failed).
async fn write_all(ws: &mut WebSocket, batch: &mut Vec<WsMessage>) -> bool {
    let mut closing = false;
    for frame in batch.drain(..) {
        closing = matches!(frame, WsMessage::Close(_));
        if ws.feed(frame).await.is_err() {
            return true;
        }
        if closing {
            break;
        }
    }
    batch.clear();
    ws.flush().await.is_err() || closing
}

fn classify_read_error(err: axum::Error) -> End {
    let inner = err.into_inner();
    match inner.downcast_ref::<tungstenite::Error>() {
        Some(tungstenite::Error::Capacity(_)) => {
            metrics::counter!("parley_frames_rejected_total", "reason" => "too_big").increment(1);
            End::Close(close::TOO_BIG)
        }
        Some(tungstenite::Error::Utf8(_)) => {
            metrics::counter!("parley_frames_rejected_total", "reason" => "utf8").increment(1);
            End::Close(close::INVALID_PAYLOAD)
        }
        Some(tungstenite::Error::Protocol(_)) => {
            metrics::counter!("parley_frames_rejected_total", "reason" => "protocol").increment(1);
            End::Close(close::PROTOCOL_ERROR)
        }
        _ => End::Gone,
    }
}

pub fn close_frame(code: u16, reason: &str) -> WsMessage {
    WsMessage::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }))
}

/// The human reason sent with each close code ([`CloseCode::reason`]).
pub fn reason(code: u16) -> &'static str {
    CloseCode::from_u16(code).map_or("", CloseCode::reason)
}
