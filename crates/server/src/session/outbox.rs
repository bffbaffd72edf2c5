//! The bounded outbound queue of one connection, and its close signal.
//!
//! Everything a connection is sent — replies, pushes, the final close frame —
//! goes through its [`Outbox`], so frames leave in the order they were queued.
//! The queue is bounded (invariant 5): a client that stops reading fills it,
//! and the next push closes the connection with 4408 instead of growing the
//! node's memory. Pushing never waits, so one slow client cannot stall a
//! room's delivery to everyone else.

use std::sync::Arc;

use axum::extract::ws::{Message as WsMessage, Utf8Bytes};
use parley_protocol::close;
use tokio::sync::{mpsc, watch};

/// The sending side, cloned into the hub for every room the session joined.
#[derive(Clone, Debug)]
pub struct Outbox {
    tx: mpsc::Sender<WsMessage>,
    close: Arc<watch::Sender<Option<u16>>>,
}

/// The receiving side, owned by the connection's writer task.
pub struct OutboxReceiver {
    pub frames: mpsc::Receiver<WsMessage>,
    pub close: watch::Receiver<Option<u16>>,
}

/// Creates a queue holding at most `capacity` frames.
pub fn outbox(capacity: usize) -> (Outbox, OutboxReceiver) {
    let (tx, frames) = mpsc::channel(capacity.max(1));
    let (close_tx, close) = watch::channel(None);
    (
        Outbox {
            tx,
            close: Arc::new(close_tx),
        },
        OutboxReceiver { frames, close },
    )
}

impl Outbox {
    /// Queues a text frame. Returns false if it was not queued: the
    /// connection is closing, or the queue was full — then the connection is
    /// told to close with 4408.
    pub fn push(&self, frame: Utf8Bytes) -> bool {
        self.push_message(WsMessage::Text(frame))
    }

    pub fn push_message(&self, message: WsMessage) -> bool {
        match self.tx.try_send(message) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                if self.request_close(close::SLOW_CONSUMER) {
                    metrics::counter!("parley_queue_overflows_total").increment(1);
                }
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// Asks the connection to close with `code`. The first request wins;
    /// returns whether this one was it.
    pub fn request_close(&self, code: u16) -> bool {
        self.close.send_if_modified(|current| {
            if current.is_none() {
                *current = Some(code);
                true
            } else {
                false
            }
        })
    }

    /// The close code requested so far, if any.
    pub fn close_requested(&self) -> Option<u16> {
        *self.close.borrow()
    }

    /// A receiver of close requests, for the connection's reader.
    pub fn close_watch(&self) -> watch::Receiver<Option<u16>> {
        self.close.subscribe()
    }

    /// Whether both handles belong to the same connection.
    pub fn same_as(&self, other: &Outbox) -> bool {
        self.tx.same_channel(&other.tx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overflow_requests_4408_once() {
        let (out, mut rx) = outbox(2);
        assert!(out.push("a".into()));
        assert!(out.push("b".into()));
        assert!(!out.push("c".into()));
        assert_eq!(out.close_requested(), Some(close::SLOW_CONSUMER));
        assert!(
            !out.request_close(close::GOING_AWAY),
            "first close request wins"
        );
        assert_eq!(*rx.close.borrow_and_update(), Some(close::SLOW_CONSUMER));
        assert_eq!(rx.frames.try_recv().ok(), Some(WsMessage::Text("a".into())));
    }
}
