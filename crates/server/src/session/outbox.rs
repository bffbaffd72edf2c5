//! The bounded outbound queue of one connection, and its close signal.
//!
//! Everything a connection is sent — replies, pushes, the final close frame —
//! goes through its [`Outbox`], so frames leave in the order they were queued.
//! The queue is bounded (invariant 5): a client that stops reading fills it,
//! and the next push closes the connection with 4408 instead of growing the
//! node's memory. Pushing never waits, so one slow client cannot stall a
//! room's delivery to everyone else.
//!
//! It is a `VecDeque` behind a mutex rather than a tokio channel: an idle
//! connection's queue then holds no memory at all (a channel preallocates a
//! block of slots per connection), and the writer takes everything queued in
//! one lock.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::extract::ws::{Message as WsMessage, Utf8Bytes};
use parley_protocol::close;
use tokio::sync::{Notify, watch};

/// Capacity a drained queue keeps; beyond it, the memory is given back.
const KEEP_CAPACITY: usize = 16;

struct Shared {
    frames: Mutex<VecDeque<WsMessage>>,
    capacity: usize,
    /// Wakes the writer: a frame was queued, or the last sender went away.
    ready: Notify,
    senders: AtomicUsize,
    close: watch::Sender<Option<u16>>,
}

impl Shared {
    fn frames(&self) -> MutexGuard<'_, VecDeque<WsMessage>> {
        self.frames.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The sending side, cloned into the hub for every room the session joined.
pub struct Outbox {
    shared: Arc<Shared>,
}

impl Clone for Outbox {
    fn clone(&self) -> Self {
        self.shared.senders.fetch_add(1, Ordering::Relaxed);
        Outbox {
            shared: self.shared.clone(),
        }
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        if self.shared.senders.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.shared.ready.notify_one();
        }
    }
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("queued", &self.shared.frames().len())
            .finish()
    }
}

/// The receiving side, owned by the connection's writer task.
pub struct OutboxReceiver {
    pub frames: FrameReceiver,
    pub close: watch::Receiver<Option<u16>>,
}

/// The frames half of the receiving side.
pub struct FrameReceiver {
    shared: Arc<Shared>,
}

/// Creates a queue holding at most `capacity` frames.
pub fn outbox(capacity: usize) -> (Outbox, OutboxReceiver) {
    let (close_tx, close) = watch::channel(None);
    let shared = Arc::new(Shared {
        frames: Mutex::new(VecDeque::new()),
        capacity: capacity.max(1),
        ready: Notify::new(),
        senders: AtomicUsize::new(1),
        close: close_tx,
    });
    (
        Outbox {
            shared: shared.clone(),
        },
        OutboxReceiver {
            frames: FrameReceiver { shared },
            close,
        },
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
        {
            let mut frames = self.shared.frames();
            if frames.len() >= self.shared.capacity {
                drop(frames);
                if self.request_close(close::SLOW_CONSUMER) {
                    metrics::counter!("parley_queue_overflows_total").increment(1);
                }
                return false;
            }
            if self
                .close_requested()
                .is_some_and(|c| c != close::GOING_AWAY)
            {
                return false;
            }
            frames.push_back(message);
        }
        self.shared.ready.notify_one();
        true
    }

    /// Asks the connection to close with `code`. The first request wins;
    /// returns whether this one was it.
    pub fn request_close(&self, code: u16) -> bool {
        self.shared.close.send_if_modified(|current| {
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
        *self.shared.close.borrow()
    }

    /// A receiver of close requests, for the connection's reader.
    pub fn close_watch(&self) -> watch::Receiver<Option<u16>> {
        self.shared.close.subscribe()
    }
}

impl FrameReceiver {
    /// Moves up to `max` queued frames into `out`, waiting for at least one.
    /// False once every sender is gone and the queue is empty. Cancel-safe.
    pub async fn recv_batch(&mut self, out: &mut Vec<WsMessage>, max: usize) -> bool {
        loop {
            {
                let mut frames = self.shared.frames();
                if !frames.is_empty() {
                    let n = frames.len().min(max);
                    out.extend(frames.drain(..n));
                    if frames.is_empty() && frames.capacity() > KEEP_CAPACITY {
                        frames.shrink_to(KEEP_CAPACITY);
                    }
                    return true;
                }
                if self.shared.senders.load(Ordering::Acquire) == 0 {
                    return false;
                }
            }
            self.shared.ready.notified().await;
        }
    }

    /// Like `tokio::sync::mpsc::Receiver::recv_many`: moves up to `max`
    /// frames into `out`; 0 once every sender is gone and the queue is empty.
    pub async fn recv_many(&mut self, out: &mut Vec<WsMessage>, max: usize) -> usize {
        let before = out.len();
        if self.recv_batch(out, max).await {
            out.len() - before
        } else {
            0
        }
    }

    /// The next frame; `None` once every sender is gone and the queue is empty.
    pub async fn recv(&mut self) -> Option<WsMessage> {
        let mut one = Vec::with_capacity(1);
        self.recv_batch(&mut one, 1)
            .await
            .then(|| one.pop())
            .flatten()
    }

    /// Drops everything queued and refuses further frames (the connection is closing).
    pub fn discard(&mut self) {
        let mut frames = self.shared.frames();
        frames.clear();
        frames.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn overflow_requests_4408_once() {
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
        let mut got = Vec::new();
        assert!(rx.frames.recv_batch(&mut got, 10).await);
        assert_eq!(
            got,
            vec![WsMessage::Text("a".into()), WsMessage::Text("b".into())]
        );
        assert!(
            !out.push("d".into()),
            "nothing is queued after a slow-consumer close"
        );
    }

    #[tokio::test]
    async fn receiver_ends_when_every_sender_is_gone() {
        let (out, mut rx) = outbox(4);
        let second = out.clone();
        assert!(second.push("x".into()));
        drop(out);
        drop(second);
        let mut got = Vec::new();
        assert!(
            rx.frames.recv_batch(&mut got, 10).await,
            "queued frames are still handed out"
        );
        assert!(!rx.frames.recv_batch(&mut got, 10).await);
    }

    #[tokio::test]
    async fn batches_are_bounded_and_ordered() {
        let (out, mut rx) = outbox(100);
        for i in 0..10 {
            assert!(out.push(i.to_string().into()));
        }
        let mut got = Vec::new();
        assert!(rx.frames.recv_batch(&mut got, 4).await);
        assert_eq!(got.len(), 4);
        assert!(rx.frames.recv_batch(&mut got, 100).await);
        let texts: Vec<String> = got
            .iter()
            .map(|m| m.to_text().unwrap().to_string())
            .collect();
        assert_eq!(texts, (0..10).map(|i| i.to_string()).collect::<Vec<_>>());
    }
}
