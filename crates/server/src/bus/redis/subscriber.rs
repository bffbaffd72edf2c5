//! The receiving half and the connection's life: one task keeps the
//! subscriber and command connections up, re-subscribes every counted
//! channel after a reconnect, and asks the hub to resync its rooms against
//! the store (envelopes published meanwhile were lost, not the messages).
//! Subscriptions are counted per channel, so a node subscribes to a room
//! once however many of its sessions joined it.

use std::sync::Weak;
use std::time::Duration;

use futures_util::StreamExt;
use parley_protocol::backoff::Backoff;

use super::codec::decode;
use super::{COMMAND_TIMEOUT, Shared, lock};
use crate::bus::{BusError, Event};

impl Shared {
    pub(super) async fn subscribe_channel(&self, channel: String) -> Result<(), BusError> {
        let first = {
            let mut channels = lock(&self.channels);
            let count = channels.entry(channel.clone()).or_insert(0);
            *count += 1;
            *count == 1
        };
        if !first {
            return Ok(());
        }
        // The subscriber task re-subscribes every counted channel after a
        // reconnect, so a failure here only delays delivery.
        let sink = lock(&self.sink).clone();
        let Some(mut sink) = sink else {
            return Err(BusError("Redis is not connected".into()));
        };
        match tokio::time::timeout(COMMAND_TIMEOUT, sink.subscribe(&channel)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(BusError(e.to_string())),
            Err(_) => Err(BusError("SUBSCRIBE timed out".into())),
        }
    }

    pub(super) async fn unsubscribe_channel(&self, channel: String) {
        let last = {
            let mut channels = lock(&self.channels);
            match channels.get_mut(&channel) {
                Some(count) if *count > 1 => {
                    *count -= 1;
                    false
                }
                Some(_) => {
                    channels.remove(&channel);
                    true
                }
                None => false,
            }
        };
        if last {
            let sink = lock(&self.sink).clone();
            if let Some(mut sink) = sink {
                let _ = tokio::time::timeout(COMMAND_TIMEOUT, sink.unsubscribe(&channel)).await;
            }
        }
    }
}

/// Keeps a subscriber connection (and the command connection) alive,
/// re-subscribing and asking for a resync after every reconnect.
pub(super) async fn subscriber(shared: Weak<Shared>) {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    let mut connected_before = false;
    loop {
        let Some(s) = shared.upgrade() else { return };
        let attempt = async {
            let conn = s.client.get_multiplexed_async_connection().await?;
            let pubsub = s.client.get_async_pubsub().await?;
            Ok::<_, redis::RedisError>((conn, pubsub))
        };
        let (conn, pubsub) = match tokio::time::timeout(Duration::from_secs(3), attempt).await {
            Ok(Ok(pair)) => pair,
            Ok(Err(e)) => {
                let wait = backoff.next_delay(0.0);
                tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "Redis unreachable; delivery between nodes falls back to the store");
                drop(s);
                tokio::time::sleep(wait).await;
                continue;
            }
            Err(_) => {
                tracing::warn!("Redis connect timed out");
                drop(s);
                tokio::time::sleep(backoff.next_delay(0.0)).await;
                continue;
            }
        };
        let (mut sink, mut stream) = pubsub.split();
        let channels: Vec<String> = lock(&s.channels).keys().cloned().collect();
        if !channels.is_empty() && sink.subscribe(&channels).await.is_err() {
            drop(s);
            tokio::time::sleep(backoff.next_delay(0.0)).await;
            continue;
        }
        *lock(&s.sink) = Some(sink);
        *lock(&s.conn) = Some(conn);
        backoff.reset();
        metrics::gauge!("parley_bus_connected").set(1.0);
        if connected_before {
            metrics::counter!("parley_bus_reconnects_total").increment(1);
            tracing::info!(
                channels = channels.len(),
                "Redis reconnected; resyncing joined rooms"
            );
        } else {
            tracing::info!("Redis connected");
        }
        connected_before = true;
        // Whatever was published while we were away is in the store.
        if let Some(inbox) = s.inbox() {
            inbox.resync_all();
        }
        let node = s.node.clone();
        drop(s);

        while let Some(msg) = stream.next().await {
            let Some(s) = shared.upgrade() else { return };
            match decode(msg.get_channel_name(), msg.get_payload_bytes()) {
                Some((from_node, envelope)) => {
                    let own = from_node == node;
                    if own && !matches!(envelope.event, Event::Message { .. }) {
                        continue;
                    }
                    if let Some(inbox) = s.inbox() {
                        inbox.deliver(envelope);
                    }
                }
                None => metrics::counter!("parley_bus_malformed_total").increment(1),
            }
        }
        let Some(s) = shared.upgrade() else { return };
        *lock(&s.sink) = None;
        *lock(&s.conn) = None;
        metrics::gauge!("parley_bus_connected").set(0.0);
        tracing::warn!("Redis connection lost; reconnecting");
    }
}
