//! The fleet bus: Redis Pub/Sub between nodes.
//!
//! A node subscribes only to the rooms its sessions joined and the users
//! connected to it, so a message travels only to nodes with receivers. Each
//! message is published once, as the frame bytes the receivers forward
//! unchanged ([`codec`] has the wire format).
//!
//! Pub/Sub is at-most-once, and Redis may be down: this bus never blocks or
//! fails a publisher (an envelope that cannot be published is dropped and
//! counted — the store has the message). What the hub needs to stay correct:
//! - every envelope is also delivered to this node's hub at once, so the
//!   sender's own node never waits for Redis (invariant 8);
//! - after every (re)connect of the subscriber, [`Inbox::resync_all`] makes
//!   each joined room compare itself with the store;
//! - [`Bus::lossy`] is true, so the hub runs its periodic anti-entropy check.
//!
//! Envelopes a node published itself come back to it; `d` and `e` ones are
//! skipped, `m` ones are dropped by the room's seq check.
//!
//! Files by role: [`codec`] (channels and payloads, pure), [`publisher`]
//! (pipelined `PUBLISH`), [`subscriber`] (connections, subscriptions,
//! reconnect and resync), [`presence`] (the fleet's member lists, on the same
//! connection).

mod codec;
mod presence;
mod publisher;
mod subscriber;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{MultiplexedConnection, PubSubSink};
use tokio::sync::mpsc;

use super::{Bus, BusError, Envelope, Inbox};
pub use codec::{decode, encode};
pub use presence::RedisPresence;

/// Envelopes waiting to be published; beyond this they are dropped.
const PUBLISH_QUEUE: usize = 65_536;
/// The longest any one Redis command may take before it counts as failed.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// The connection state shared by the bus's tasks and its presence.
struct Shared {
    node: String,
    client: redis::Client,
    inbox: OnceLock<Weak<dyn Inbox>>,
    /// Channel → number of local subscribers.
    channels: Mutex<HashMap<String, usize>>,
    /// The live subscriber connection, if any.
    sink: Mutex<Option<PubSubSink>>,
    /// The live command connection, if any.
    conn: Mutex<Option<MultiplexedConnection>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    fn inbox(&self) -> Option<Arc<dyn Inbox>> {
        self.inbox.get().and_then(Weak::upgrade)
    }

    fn command_connection(&self) -> Option<MultiplexedConnection> {
        lock(&self.conn).clone()
    }
}

pub struct RedisBus {
    shared: Arc<Shared>,
    publish: mpsc::Sender<publisher::Queued>,
}

impl RedisBus {
    /// Creates the bus and its presence, and starts their connection tasks.
    /// It does not wait for Redis: a node starts and serves while Redis is
    /// down.
    pub fn start(url: &str, node: &str) -> Result<(Self, RedisPresence), BusError> {
        // TCP_NODELAY: the multiplexed connection carries publish pipelines,
        // presence scripts and member queries at once; a small write must not
        // wait for the previous one's ACK (redis-rs leaves Nagle on).
        let info = redis::IntoConnectionInfo::into_connection_info(url)
            .map_err(|e| BusError(format!("bad Redis URL: {e}")))?
            .set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true));
        let client =
            redis::Client::open(info).map_err(|e| BusError(format!("bad Redis URL: {e}")))?;
        let shared = Arc::new(Shared {
            node: node.replace(' ', "_"),
            client,
            inbox: OnceLock::new(),
            channels: Mutex::new(HashMap::new()),
            sink: Mutex::new(None),
            conn: Mutex::new(None),
        });
        let (publish, rx) = mpsc::channel(PUBLISH_QUEUE);
        tokio::spawn(publisher::publisher(Arc::downgrade(&shared), rx));
        tokio::spawn(subscriber::subscriber(Arc::downgrade(&shared)));
        let presence = RedisPresence::start(shared.clone());
        metrics::gauge!("parley_bus_connected").set(0.0);
        Ok((Self { shared, publish }, presence))
    }
}

#[async_trait]
impl Bus for RedisBus {
    fn set_inbox(&self, inbox: Weak<dyn Inbox>) {
        let _ = self.shared.inbox.set(inbox);
    }

    fn publish(&self, envelope: Envelope) {
        let (channel, payload) = codec::encode(&self.shared.node, &envelope);
        // Local delivery first: the sender's node never waits for Redis.
        if let Some(inbox) = self.shared.inbox() {
            inbox.deliver(envelope);
        }
        if self
            .publish
            .try_send((channel, payload, tokio::time::Instant::now()))
            .is_err()
        {
            metrics::counter!("parley_bus_publish_dropped_total").increment(1);
        }
    }

    async fn subscribe_room(&self, room: &str) -> Result<(), BusError> {
        self.shared
            .subscribe_channel(codec::room_channel(room))
            .await
    }

    async fn unsubscribe_room(&self, room: &str) {
        self.shared
            .unsubscribe_channel(codec::room_channel(room))
            .await
    }

    async fn subscribe_user(&self, user: &str) {
        if let Err(e) = self
            .shared
            .subscribe_channel(codec::user_channel(user))
            .await
        {
            tracing::debug!(user, error = %e, "user channel subscription deferred until Redis is back");
        }
    }

    async fn unsubscribe_user(&self, user: &str) {
        self.shared
            .unsubscribe_channel(codec::user_channel(user))
            .await
    }

    fn lossy(&self) -> bool {
        true
    }

    fn kind(&self) -> &'static str {
        "redis"
    }
}
