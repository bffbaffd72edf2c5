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
//! On shutdown [`Appender::close`] stops new submissions; everything already
//! queued is still committed and answered before the task ends.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use axum::extract::ws::Utf8Bytes;

use crate::bus::{Bus, Envelope};
use crate::store::{AppendOutcome, NewMessage, Store, StoreError};

type Reply = oneshot::Sender<Result<AppendOutcome, StoreError>>;

/// The answer to one submitted append: resolves once the batch holding it
/// has committed (or failed).
pub type PendingAppend = oneshot::Receiver<Result<AppendOutcome, StoreError>>;

#[derive(Clone)]
pub struct Appender {
    tx: mpsc::Sender<(NewMessage, Reply)>,
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
            .send((message, reply))
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
    mut rx: mpsc::Receiver<(NewMessage, Reply)>,
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
        let Some((message, reply)) = first else { break };
        messages.push(message);
        replies.push(reply);
        while messages.len() < max_batch {
            match rx.try_recv() {
                Ok((message, reply)) => {
                    messages.push(message);
                    replies.push(reply);
                }
                Err(_) => break,
            }
        }

        let started = Instant::now();
        let result = store.append_batch(&messages).await;
        metrics::histogram!("parley_store_append_seconds").record(started.elapsed().as_secs_f64());
        metrics::histogram!("parley_store_batch_size").record(messages.len() as f64);

        match result {
            Ok(outcomes) => {
                for outcome in &outcomes {
                    if let AppendOutcome::Stored(m) = outcome {
                        for envelope in
                            Envelope::for_message(&m.room, m.seq, Utf8Bytes::from(m.encode()))
                        {
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
                for (reply, outcome) in replies.drain(..).zip(outcomes) {
                    let _ = reply.send(Ok(outcome));
                }
            }
            Err(err) => {
                metrics::counter!("parley_store_append_errors_total").increment(1);
                tracing::warn!(error = %err, batch = messages.len(), "append batch failed; nothing of it was stored");
                for reply in replies.drain(..) {
                    let _ = reply.send(Err(err.clone()));
                }
            }
        }
        messages.clear();
        replies.clear();
    }
    tracing::debug!("group committer stopped");
}
