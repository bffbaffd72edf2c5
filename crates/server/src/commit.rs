//! The group committer: persist, then publish, then answer (invariant 1).
//!
//! Sessions and REST handlers [`Appender::submit`] messages; one committer
//! task collects whatever is queued (up to a batch limit) while the previous
//! transaction runs, commits the batch with [`Store::append_batch`],
//! publishes every newly stored message on the bus in `seq` order, and only
//! then answers each submitter. The fsync cost is paid once per batch instead
//! of once per message, without delaying a lone message: a batch is whatever
//! queued up during the previous commit.
//!
//! This is the only place where the store and the bus meet, and the only
//! writer of messages: the store knows nothing of the bus, the bus nothing of
//! the store. It does not validate (that is [`crate::node`]) and does not
//! deliver (the bus hands every envelope to the hub).
//!
//! A batch is atomic in the store, but its messages come from many users:
//! one message the store refuses (a data error, anything but
//! [`StoreError::Unavailable`]) must not fail the others. Such a batch is
//! split in halves and each half appended again, left first (so seq order
//! stays submission order), down to the message(s) at fault: they alone get
//! the error and count in `parley_store_rejected_total`; everyone else is
//! stored, published and acked as usual. Only `Unavailable` — the database
//! cannot be reached — fails the rest of the batch at once and counts in
//! `parley_store_append_errors_total`, the outage signal.
//!
//! On shutdown [`Appender::close`] stops new submissions; everything already
//! queued is still committed and answered before the task ends.

use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use axum::extract::ws::Utf8Bytes;

use crate::bus::{Bus, Envelope};
use crate::store::{AppendOutcome, NewMessage, Store, StoreError};

type Reply = oneshot::Sender<Result<AppendOutcome, StoreError>>;
/// A submitted append: the message, its submitter, when it was queued.
type Queued = (NewMessage, Reply, Instant);

/// The answer to one submitted append: resolves once the batch holding it
/// has committed (or failed).
pub type PendingAppend = oneshot::Receiver<Result<AppendOutcome, StoreError>>;

#[derive(Clone)]
pub struct Appender {
    tx: mpsc::Sender<Queued>,
    closer: Arc<tokio::sync::Notify>,
}

impl Appender {
    /// Starts the committer task.
    pub fn spawn(
        store: Arc<dyn Store>,
        bus: Arc<dyn Bus>,
        max_batch: usize,
    ) -> (Appender, JoinHandle<()>) {
        let max_batch = max_batch.max(1);
        let (tx, rx) = mpsc::channel(max_batch * 4);
        let closer = Arc::new(tokio::sync::Notify::new());
        let task = tokio::spawn(run(rx, store, bus, max_batch, closer.clone()));
        (Appender { tx, closer }, task)
    }

    /// Queues a message, in submission order (waiting for room in the queue
    /// if the committer is behind: back-pressure to the sender).
    pub async fn submit(&self, message: NewMessage) -> Result<PendingAppend, StoreError> {
        let (reply, pending) = oneshot::channel();
        self.tx
            .send((message, reply, Instant::now()))
            .await
            .map_err(|_| StoreError::Unavailable("node is shutting down".to_string()))?;
        Ok(pending)
    }

    /// Submits and waits for the commit.
    pub async fn append(&self, message: NewMessage) -> Result<AppendOutcome, StoreError> {
        let pending = self.submit(message).await?;
        pending
            .await
            .unwrap_or_else(|_| Err(StoreError::Unavailable("committer stopped".to_string())))
    }

    /// Stops accepting submissions; queued ones are still committed.
    pub fn close(&self) {
        self.closer.notify_one();
    }
}

async fn run(
    mut rx: mpsc::Receiver<Queued>,
    store: Arc<dyn Store>,
    bus: Arc<dyn Bus>,
    max_batch: usize,
    closer: Arc<tokio::sync::Notify>,
) {
    let mut closed = false;
    let mut messages = Vec::with_capacity(max_batch);
    let mut replies = Vec::with_capacity(max_batch);
    loop {
        let first = if closed {
            rx.recv().await
        } else {
            tokio::select! {
                biased;
                item = rx.recv() => item,
                _ = closer.notified() => {
                    closed = true;
                    rx.close();
                    continue;
                }
            }
        };
        let Some((message, reply, queued)) = first else {
            break;
        };
        // The oldest of the batch: how long a message waited for a commit.
        metrics::histogram!("parley_commit_queue_seconds").record(queued.elapsed().as_secs_f64());
        messages.push(message);
        replies.push(reply);
        while messages.len() < max_batch {
            match rx.try_recv() {
                Ok((message, reply, _)) => {
                    messages.push(message);
                    replies.push(reply);
                }
                Err(_) => break,
            }
        }

        commit(&*store, &*bus, &messages, &mut replies).await;
        messages.clear();
        replies.clear();
    }
    tracing::debug!("group committer stopped");
}

/// Appends one batch and answers each of its submitters: persist, then
/// publish (in seq order), then answer. A data error is narrowed down by
/// bisection to the message(s) at fault (see the module documentation).
async fn commit(
    store: &dyn Store,
    bus: &dyn Bus,
    messages: &[NewMessage],
    replies: &mut Vec<Reply>,
) {
    // Taken as they are answered: each submitter is answered once.
    let mut replies: Vec<Option<Reply>> = replies.drain(..).map(Some).collect();
    // Parts still to append, the next one last: the whole batch first.
    let mut todo: Vec<Range<usize>> = Vec::with_capacity(16);
    todo.push(0..messages.len());
    while let Some(part) = todo.pop() {
        let started = Instant::now();
        let result = store.append_batch(&messages[part.clone()]).await;
        metrics::histogram!("parley_store_append_seconds").record(started.elapsed().as_secs_f64());
        metrics::histogram!("parley_store_batch_size").record(part.len() as f64);

        match result {
            Ok(outcomes) => {
                for outcome in &outcomes {
                    if let AppendOutcome::Stored(m) = outcome {
                        let frame = Utf8Bytes::from(m.encode());
                        if let Some(notice) = crate::access::notice(m, &frame) {
                            crate::access::record(m);
                            bus.publish(notice);
                        }
                        for envelope in Envelope::for_message(&m.room, m.seq, frame) {
                            bus.publish(envelope);
                        }
                    }
                }
                metrics::counter!("parley_messages_stored_total").increment(
                    outcomes
                        .iter()
                        .filter(|o| matches!(o, AppendOutcome::Stored(_)))
                        .count() as u64,
                );
                for (reply, outcome) in replies[part].iter_mut().zip(outcomes) {
                    if let Some(reply) = reply.take() {
                        let _ = reply.send(Ok(outcome));
                    }
                }
            }
            Err(err @ StoreError::Unavailable(_)) => {
                // The database is out of reach: nothing more of the batch is
                // tried, and all that is left of it is refused (clients retry).
                metrics::counter!("parley_store_append_errors_total").increment(1);
                let left = replies.iter().filter(|r| r.is_some()).count();
                tracing::warn!(error = %err, batch = left, "append batch failed; nothing of it was stored");
                fail(&mut replies, &err);
                todo.clear();
            }
            Err(err) if part.len() == 1 => {
                // The store refused this very message (which validation
                // should have refused first): it alone fails.
                metrics::counter!("parley_store_rejected_total").increment(1);
                let m = &messages[part.start];
                tracing::error!(error = %err, room = %m.room, from = %m.from, "the store refused a message; the rest of its batch is stored");
                fail(&mut replies[part], &err);
            }
            Err(err) => {
                tracing::debug!(error = %err, batch = part.len(), "append batch refused; appending its halves");
                let mid = part.start + part.len() / 2;
                todo.push(mid..part.end);
                todo.push(part.start..mid);
            }
        }
    }
}

/// Answers every submitter of `replies` not answered yet with `err`.
fn fail(replies: &mut [Option<Reply>], err: &StoreError) {
    for reply in replies.iter_mut().filter_map(Option::take) {
        let _ = reply.send(Err(err.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::local::LocalBus;
    use crate::store::sqlite::SqliteStore;

    fn message(i: usize, bad: bool, nonce: Option<&str>) -> NewMessage {
        NewMessage {
            room: "r".into(),
            from: format!("user{}", i % 3),
            text: if bad {
                format!("{i}\u{0}")
            } else {
                format!("{i}")
            },
            nonce: nonce.map(Into::into),
            ts_ms: 0,
            ..Default::default()
        }
    }

    /// Bad messages anywhere in a batch (first, last, side by side) fail
    /// alone; the rest are stored in submission order, and a nonce repeated
    /// across the halves is still one message.
    #[tokio::test]
    async fn bad_messages_fail_alone_and_the_rest_keep_their_order() {
        let dir = tempfile::TempDir::new().unwrap();
        let url = format!("sqlite://{}", dir.path().join("commit.db").display());
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&url).await.unwrap());
        let (appender, task) = Appender::spawn(store.clone(), Arc::new(LocalBus::new()), 64);
        let bad = [0, 5, 6, 15];
        // Message 14 repeats message 2 (same sender, same nonce).
        let nonce = |i: usize| (i == 2 || i == 14).then_some("again");
        // Queued before the committer runs (this runtime has one thread):
        // one batch of 16.
        let mut pending = Vec::new();
        for i in 0..16 {
            let m = message(i, bad.contains(&i), nonce(i));
            pending.push(appender.submit(m).await.unwrap());
        }
        let mut seqs = Vec::new();
        for (i, p) in pending.into_iter().enumerate() {
            match p.await.unwrap() {
                Err(StoreError::Internal(_)) if bad.contains(&i) => {}
                Ok(AppendOutcome::Duplicate(m)) if i == 14 => assert_eq!(m.text, "2"),
                Ok(AppendOutcome::Stored(m)) if !bad.contains(&i) => {
                    assert_eq!(m.text, i.to_string());
                    seqs.push(m.seq);
                }
                other => panic!("message {i}: {other:?}"),
            }
        }
        assert_eq!(seqs, (1..=11).collect::<Vec<u64>>());
        let stored = store.range_forward("r", 0, u64::MAX, 100).await.unwrap();
        let texts: Vec<&str> = stored.iter().map(|m| m.text.as_str()).collect();
        assert_eq!(
            texts,
            ["1", "2", "3", "4", "7", "8", "9", "10", "11", "12", "13"]
        );
        appender.close();
        task.await.unwrap();
    }
}
