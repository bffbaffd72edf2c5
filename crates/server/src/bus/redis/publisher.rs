//! The publishing half: envelopes queued by [`super::RedisBus`] are sent in
//! pipelines of `PUBLISH`es on the command connection. It never blocks a
//! publisher: while Redis is down or slow, what cannot be sent is dropped and
//! counted (`parley_bus_publish_dropped_total`) — the store has the message,
//! and the receiving hubs fill the gap from it.
//!
//! `parley_bus_publish_seconds`: from `publish` to Redis acknowledging the
//! pipeline that carried it (queue wait + round trip), for the oldest
//! envelope of each pipeline.

use std::sync::Weak;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{COMMAND_TIMEOUT, Shared};

/// An envelope waiting to be published: channel, payload, when it was queued.
pub(super) type Queued = (String, Vec<u8>, Instant);

/// Publishes sent to Redis in one pipeline at most.
const PIPELINE: usize = 512;

/// Publishes queued envelopes in pipelines; drops them while Redis is down.
pub(super) async fn publisher(shared: Weak<Shared>, mut rx: mpsc::Receiver<Queued>) {
    let mut batch = Vec::with_capacity(PIPELINE);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < PIPELINE {
            match rx.try_recv() {
                Ok(item) => batch.push(item),
                Err(_) => break,
            }
        }
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let Some(mut conn) = shared.command_connection() else {
            metrics::counter!("parley_bus_publish_dropped_total").increment(batch.len() as u64);
            batch.clear();
            continue;
        };
        let mut pipe = redis::pipe();
        for (channel, payload, _) in &batch {
            pipe.cmd("PUBLISH")
                .arg(channel)
                .arg(payload.as_slice())
                .ignore();
        }
        let result = tokio::time::timeout(COMMAND_TIMEOUT, pipe.query_async::<()>(&mut conn)).await;
        if matches!(result, Ok(Ok(()))) {
            if let Some((_, _, queued)) = batch.first() {
                metrics::histogram!("parley_bus_publish_seconds")
                    .record(queued.elapsed().as_secs_f64());
            }
        } else {
            metrics::counter!("parley_bus_publish_dropped_total").increment(batch.len() as u64);
        }
        batch.clear();
    }
}
