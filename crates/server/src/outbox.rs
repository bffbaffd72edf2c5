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
//! block of slots per connection), and the connection takes everything
//! queued in one lock. The close request is an atomic beside it, and one
//! `Notify` wakes the connection's task for either: one waiter, no channel.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::ws::{Message as WsMessage, Utf8Bytes};
use parley_protocol::close;
use tokio::sync::Notify;

/// Capacity a drained queue keeps; beyond it, the memory is given back.
const KEEP_CAPACITY: usize = 16;
/// `Shared::close` before any close was requested (0 is not a close code).
const NO_CLOSE: u16 = 0;

struct Shared {
    frames: Mutex<VecDeque<WsMessage>>,
    capacity: usize,
    /// Wakes the connection: a frame was queued, a close was requested, or
    /// the last sender went away.
    ready: Notify,
    senders: AtomicUsize,
    /// The requested close code, or [`NO_CLOSE`]. The first request wins.
    close: AtomicU16,
    /// When the peer last sent anything ([`mono_ms`]), for the heartbeat.
    last_seen_ms: AtomicU64,
    /// The close was requested with last words
    /// ([`Outbox::close_with_last_words`]): the last queued frame is sent
    /// before the close frame, the rest is dropped.
    last_words: AtomicBool,
}

/// Milliseconds on a monotonic clock that starts with the process.
fn mono_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

impl Shared {
    fn frames(&self) -> MutexGuard<'_, VecDeque<WsMessage>> {
        self.frames.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn close_code(&self) -> Option<u16> {
        match self.close.load(Ordering::Acquire) {
            NO_CLOSE => None,
            code => Some(code),
        }
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

/// The receiving side, owned by the connection's task.
pub struct OutboxReceiver {
    shared: Arc<Shared>,
    /// The close request was already handed out by [`OutboxReceiver::wait`].
    close_seen: bool,
}

/// What [`OutboxReceiver::wait`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Wake {
    /// Frames were moved into the caller's batch.
    Frames,
    /// A close was requested (reported once).
    Close(u16),
    /// Every sender is gone and nothing is queued.
    Ended,
}

/// Creates a queue holding at most `capacity` frames.
pub fn outbox(capacity: usize) -> (Outbox, OutboxReceiver) {
    let shared = Arc::new(Shared {
        frames: Mutex::new(VecDeque::new()),
        capacity: capacity.max(1),
        ready: Notify::new(),
        senders: AtomicUsize::new(1),
        close: AtomicU16::new(NO_CLOSE),
        last_seen_ms: AtomicU64::new(mono_ms()),
        last_words: AtomicBool::new(false),
    });
    (
        Outbox {
            shared: shared.clone(),
        },
        OutboxReceiver {
            shared,
            close_seen: false,
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
        let first = self
            .shared
            .close
            .compare_exchange(NO_CLOSE, code, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if first {
            self.shared.ready.notify_one();
        }
        first
    }

    /// Asks the connection to close with `code` at once, after one last
    /// frame (`last`: the error that says why, e.g. `unauthorized` before
    /// 4401). Like [`Outbox::request_close`], what is still queued is
    /// dropped and nothing can be queued afterwards: `last` is the only
    /// frame the peer still gets before the close frame. The first close
    /// request wins; returns whether this one was it (if not, `last` is not
    /// queued).
    pub fn close_with_last_words(&self, code: u16, last: WsMessage) -> bool {
        {
            // Under the queue's lock: `push_message` checks the close code
            // under it too, so no frame can be queued behind `last`.
            let mut frames = self.shared.frames();
            if self
                .shared
                .close
                .compare_exchange(NO_CLOSE, code, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
            {
                return false;
            }
            self.shared.last_words.store(true, Ordering::Release);
            // May exceed the capacity by this one frame: still bounded.
            frames.push_back(last);
        }
        self.shared.ready.notify_one();
        true
    }

    /// The close code requested so far, if any.
    pub fn close_requested(&self) -> Option<u16> {
        self.shared.close_code()
    }

    /// How long the peer has not sent anything.
    pub fn silent_for(&self) -> Duration {
        let last = self.shared.last_seen_ms.load(Ordering::Relaxed);
        Duration::from_millis(mono_ms().saturating_sub(last))
    }
}

impl OutboxReceiver {
    /// Records that the peer sent something.
    pub fn touch(&self) {
        self.shared.last_seen_ms.store(mono_ms(), Ordering::Relaxed);
    }

    /// Waits until there is something to do: a close request (reported
    /// once, before any frame), or frames — up to `max` are moved into `out`.
    /// Cancel-safe: frames are only taken in the poll that returns them.
    pub async fn wait(&mut self, out: &mut Vec<WsMessage>, max: usize) -> Wake {
        loop {
            if !self.close_seen
                && let Some(code) = self.shared.close_code()
            {
                self.close_seen = true;
                return Wake::Close(code);
            }
            if self.take(out, max) {
                return Wake::Frames;
            }
            if self.shared.senders.load(Ordering::Acquire) == 0 {
                return Wake::Ended;
            }
            // A stored permit may be stale (its frame was taken already):
            // the loop checks the state again rather than trusting it.
            self.shared.ready.notified().await;
        }
    }

    /// Moves up to `max` queued frames into `out`, waiting for at least one;
    /// false once every sender is gone and the queue is empty. Ignores close
    /// requests (for consumers other than a connection, e.g. benchmarks).
    pub async fn recv_batch(&mut self, out: &mut Vec<WsMessage>, max: usize) -> bool {
        loop {
            if self.take(out, max) {
                return true;
            }
            if self.shared.senders.load(Ordering::Acquire) == 0 {
                return false;
            }
            self.shared.ready.notified().await;
        }
    }

    /// Moves up to `max` queued frames into `out` without waiting; false if
    /// none were queued.
    pub fn take(&mut self, out: &mut Vec<WsMessage>, max: usize) -> bool {
        let mut frames = self.shared.frames();
        if frames.is_empty() {
            return false;
        }
        let n = frames.len().min(max);
        out.extend(frames.drain(..n));
        if frames.is_empty() && frames.capacity() > KEEP_CAPACITY {
            frames.shrink_to(KEEP_CAPACITY);
        }
        true
    }

    /// Resolves with a close code the connection must act on at once, even
    /// in the middle of a write: any but a drain's 1001, which the session
    /// handles in order, behind its pending acks.
    pub async fn urgent_close(&self) -> u16 {
        loop {
            if let Some(code) = self.shared.close_code()
                && code != close::GOING_AWAY
            {
                return code;
            }
            self.shared.ready.notified().await;
        }
    }

    /// A close code requested so far that [`OutboxReceiver::urgent_close`]
    /// would return.
    pub fn urgent_close_now(&self) -> Option<u16> {
        self.shared
            .close_code()
            .filter(|code| *code != close::GOING_AWAY)
    }

    /// The frame to send before an urgent close's close frame, if the close
    /// was requested with [`Outbox::close_with_last_words`] (taken once).
    pub fn take_last_words(&mut self) -> Option<WsMessage> {
        if !self.shared.last_words.swap(false, Ordering::AcqRel) {
            return None;
        }
        self.shared.frames().pop_back()
    }

    /// Drops everything queued (the connection is closing).
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
        let mut got = Vec::new();
        assert_eq!(
            rx.wait(&mut got, 10).await,
            Wake::Close(close::SLOW_CONSUMER),
            "the close comes before the queued frames"
        );
        assert_eq!(rx.urgent_close().await, close::SLOW_CONSUMER);
        assert_eq!(rx.wait(&mut got, 10).await, Wake::Frames);
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
    async fn a_drain_is_reported_once_and_is_not_urgent() {
        let (out, mut rx) = outbox(4);
        assert!(out.request_close(close::GOING_AWAY));
        assert!(
            out.push("still queued".into()),
            "a draining session still answers"
        );
        let mut got = Vec::new();
        assert_eq!(rx.wait(&mut got, 10).await, Wake::Close(close::GOING_AWAY));
        assert_eq!(rx.urgent_close_now(), None);
        assert_eq!(rx.wait(&mut got, 10).await, Wake::Frames);
        assert_eq!(got.len(), 1);
        drop(out);
        assert_eq!(rx.wait(&mut got, 10).await, Wake::Ended);
    }

    #[tokio::test]
    async fn last_words_are_the_last_frame_and_nothing_follows() {
        let (out, mut rx) = outbox(2);
        assert!(out.push("a".into()));
        assert!(out.push("b".into()));
        assert!(
            out.close_with_last_words(close::UNAUTHORIZED, WsMessage::Text("why".into())),
            "queued even with the queue full"
        );
        assert!(!out.push("c".into()), "nothing is queued after them");
        assert!(!out.close_with_last_words(close::NORMAL, WsMessage::Text("x".into())));
        assert!(
            !out.request_close(close::GOING_AWAY),
            "first close request wins"
        );
        let mut got = Vec::new();
        assert_eq!(
            rx.wait(&mut got, 10).await,
            Wake::Close(close::UNAUTHORIZED)
        );
        assert_eq!(rx.urgent_close_now(), Some(close::UNAUTHORIZED));
        assert_eq!(rx.take_last_words(), Some(WsMessage::Text("why".into())));
        assert_eq!(rx.take_last_words(), None, "taken once");
        // Without last words there are none to take.
        let (out, mut rx) = outbox(2);
        assert!(out.push("a".into()));
        assert!(out.request_close(close::SLOW_CONSUMER));
        assert_eq!(rx.take_last_words(), None);
    }

    #[tokio::test]
    async fn wait_wakes_on_a_push_from_another_task() {
        let (out, mut rx) = outbox(4);
        let pusher = tokio::spawn(async move {
            tokio::task::yield_now().await;
            assert!(out.push("x".into()));
            out
        });
        let mut got = Vec::new();
        assert_eq!(rx.wait(&mut got, 10).await, Wake::Frames);
        assert_eq!(got, vec![WsMessage::Text("x".into())]);
        drop(pusher.await.unwrap());
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
            rx.recv_batch(&mut got, 10).await,
            "queued frames are still handed out"
        );
        assert!(!rx.recv_batch(&mut got, 10).await);
    }

    #[tokio::test]
    async fn batches_are_bounded_and_ordered() {
        let (out, mut rx) = outbox(100);
        for i in 0..10 {
            assert!(out.push(i.to_string().into()));
        }
        let mut got = Vec::new();
        assert!(rx.recv_batch(&mut got, 4).await);
        assert_eq!(got.len(), 4);
        assert!(rx.recv_batch(&mut got, 100).await);
        let texts: Vec<String> = got
            .iter()
            .map(|m| m.to_text().unwrap().to_string())
            .collect();
        assert_eq!(texts, (0..10).map(|i| i.to_string()).collect::<Vec<_>>());
    }
}
