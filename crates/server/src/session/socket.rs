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
//! A close with last words (4401 for a token that expired or was revoked,
//! [`Outbox::close_with_last_words`](crate::outbox::Outbox::close_with_last_words))
//! is urgent too, but sends its one last frame (the `error` that says why)
//! before the close frame.
//!
//! After the close frame, the socket is not dropped at once: it reads (and
//! discards) what the peer still sends until the peer's own close frame, the
//! end of the stream, or [`CLOSE_HANDSHAKE`]. Dropping a TCP socket with
//! unread bytes in its receive buffer makes the kernel send a reset instead
//! of a FIN, and a reset can destroy what the peer had not read yet — the
//! close frame and the last acks: a client that was sending when it was
//! closed saw a reset (1006) instead of 1001 or 4429 (issue 12, fault 6).
//! The session stays in the [`Registry`](super::Registry) until then, so a
//! drain waits for it.

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
/// How long the closing handshake may take once the close frame is out:
/// the peer's close frame (or the end of its stream) is awaited this long,
/// reading and discarding whatever else it still sends.
pub const CLOSE_HANDSHAKE: Duration = Duration::from_secs(2);

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
            written = write_all(&mut self.ws, &mut self.batch) => {
                return match written {
                    WriteEnd::More => Ok(()),
                    WriteEnd::Closed => {
                        Box::pin(self.await_peer_close()).await;
                        Err(End::Gone)
                    }
                    WriteEnd::Failed => Err(End::Gone),
                };
            }
        };
        Box::pin(self.close_now(code)).await;
        Err(End::Gone)
    }

    /// Drops what is queued and sends the close frame. Callers box it: its
    /// timers would otherwise sit in every connection's future for a path
    /// few connections take.
    async fn close_now(&mut self, code: u16) {
        let last_words = self.rx.take_last_words();
        self.batch.clear();
        self.rx.discard();
        let frame = close_frame(code, reason(code));
        let send = async {
            if let Some(last) = last_words {
                self.ws.feed(last).await?;
            }
            self.ws.send(frame).await
        };
        if let Ok(Ok(())) = tokio::time::timeout(CLOSE_LINGER, send).await {
            self.await_peer_close().await;
        }
    }

    /// After our close frame: reads and discards until the peer's close
    /// frame, the end of its stream or an error, for [`CLOSE_HANDSHAKE`] at
    /// most, then flushes tungstenite's reply (if any). See the module
    /// documentation for why the socket must not be dropped before.
    async fn await_peer_close(&mut self) {
        let ws = &mut self.ws;
        let handshake = async {
            while let Some(Ok(message)) = ws.next().await {
                if matches!(message, WsMessage::Close(_)) {
                    break;
                }
            }
            let _ = ws.close().await;
        };
        if tokio::time::timeout(CLOSE_HANDSHAKE, handshake)
            .await
            .is_err()
        {
            metrics::counter!("parley_close_handshake_timeouts_total").increment(1);
        }
    }

    /// Ends the connection after the session: on `End::Close`, writes what is
    /// still queued — the session's last answers and its close frame — for
    /// [`CLOSE_LINGER`] at most.
    pub async fn finish(mut self, end: End) {
        if end == End::Gone {
            // The peer closed (tungstenite queued the reply to its close
            // frame: flush it), the socket failed, or the handshake is done.
            let _ = tokio::time::timeout(CLOSE_HANDSHAKE, self.ws.close()).await;
            return;
        }
        // Each way out of the loop that wrote a close frame has awaited the
        // peer's (`write_batch`, `close_now`).
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
        let _ = tokio::time::timeout(CLOSE_LINGER + CLOSE_HANDSHAKE, flush).await;
    }
}

/// How [`write_all`] ended.
enum WriteEnd {
    /// Written and flushed; the connection goes on.
    More,
    /// A close frame was written and flushed (frames behind it are dropped).
    Closed,
    /// The socket failed.
    Failed,
}

/// Feeds every frame of `batch` (up to a close frame) and flushes once.
async fn write_all(ws: &mut WebSocket, batch: &mut Vec<WsMessage>) -> WriteEnd {
    let mut closing = false;
    for frame in batch.drain(..) {
        closing = matches!(frame, WsMessage::Close(_));
        if ws.feed(frame).await.is_err() {
            return WriteEnd::Failed;
        }
        if closing {
            break;
        }
    }
    batch.clear();
    match ws.flush().await {
        Err(_) => WriteEnd::Failed,
        Ok(()) if closing => WriteEnd::Closed,
        Ok(()) => WriteEnd::More,
    }
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
