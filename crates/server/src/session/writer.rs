//! The writing half of a connection: drains the [`Outbox`](super::outbox)
//! into the socket, batching whatever is queued into one flush.
//!
//! It stops after writing a close frame, when every sender is gone, or when a
//! close is requested out of band — the slow-consumer case, where the queue
//! is full so the close frame cannot wait in it. A write blocked on a peer
//! that stopped reading is abandoned for the close; the close frame then
//! waits behind the bytes already buffered, for [`CLOSE_LINGER`] at most, so
//! a client that starts reading again learns why (4408) and can resume.

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message as WsMessage, WebSocket};
use futures_util::SinkExt;
use futures_util::stream::SplitSink;
use parley_protocol::close;
use tokio::sync::watch;

use super::outbox::OutboxReceiver;

/// Frames written per flush at most, so one busy room cannot starve the flush.
const MAX_BATCH: usize = 64;
/// How long a close frame may wait for a peer that does not read.
pub const CLOSE_LINGER: Duration = Duration::from_secs(10);

type Sink = SplitSink<WebSocket, WsMessage>;

pub async fn run(mut sink: Sink, mut rx: OutboxReceiver) {
    let mut batch = Vec::new();
    loop {
        let code = tokio::select! {
            biased;
            code = close_requested(&mut rx.close) => code,
            more = rx.frames.recv_batch(&mut batch, MAX_BATCH) => {
                if !more {
                    break;
                }
                tokio::select! {
                    biased;
                    code = close_requested(&mut rx.close) => code,
                    done = write_batch(&mut sink, &mut batch) => {
                        if done { break } else { continue }
                    }
                }
            }
        };
        // Out-of-band close: drop what is still queued and say goodbye.
        rx.frames.discard();
        let _ =
            tokio::time::timeout(CLOSE_LINGER, sink.send(close_frame(code, reason(code)))).await;
        break;
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), sink.close()).await;
}

/// Resolves with a close code that the writer must act on itself. A drain
/// (1001) is not one of them: the reader finishes the session's pending acks
/// and then queues the close frame behind them.
async fn close_requested(close: &mut watch::Receiver<Option<u16>>) -> u16 {
    loop {
        if close.changed().await.is_err() {
            return std::future::pending().await;
        }
        match *close.borrow_and_update() {
            Some(close::GOING_AWAY) | None => continue,
            Some(code) => return code,
        }
    }
}

/// Writes a batch of frames and flushes once. True when the connection is
/// done (a close frame was written, or the socket failed).
async fn write_batch(sink: &mut Sink, batch: &mut Vec<WsMessage>) -> bool {
    let mut closing = false;
    for frame in batch.drain(..) {
        closing = matches!(frame, WsMessage::Close(_));
        if sink.feed(frame).await.is_err() {
            return true;
        }
        if closing {
            break;
        }
    }
    batch.clear();
    sink.flush().await.is_err() || closing
}

pub fn close_frame(code: u16, reason: &str) -> WsMessage {
    WsMessage::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }))
}

/// The human reason sent with each close code.
pub fn reason(code: u16) -> &'static str {
    match code {
        close::GOING_AWAY => "node is draining; reconnect and resume",
        close::UNSUPPORTED_DATA => "binary frames are not supported",
        close::INVALID_PAYLOAD => "invalid UTF-8",
        close::POLICY_VIOLATION => "too many malformed frames",
        close::TOO_BIG => "frame too large",
        close::UNAUTHORIZED => "unauthorized",
        close::SLOW_CONSUMER => "slow consumer: outbound queue overflowed; resume with since",
        close::RATE_LIMITED => "rate limited repeatedly",
        _ => "",
    }
}
