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
    ///
    /// `rediss://` URLs connect with TLS (rustls), verifying the server's
    /// certificate against `ca_pem` when given, else the public web roots;
    /// `rediss://host/#insecure` is refused rather than honoured.
    pub fn start(
        url: &str,
        ca_pem: Option<&[u8]>,
        node: &str,
    ) -> Result<(Self, RedisPresence), BusError> {
        // TCP_NODELAY: the multiplexed connection carries publish pipelines,
        // presence scripts and member queries at once; a small write must not
        // wait for the previous one's ACK (redis-rs leaves Nagle on).
        let info = redis::IntoConnectionInfo::into_connection_info(url)
            .map_err(|e| BusError(format!("bad Redis URL: {e}")))?
            .set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true));
        let client = match (&info.addr(), ca_pem) {
            (redis::ConnectionAddr::TcpTls { insecure: true, .. }, _) => {
                return Err(BusError(
                    "a rediss:// URL with #insecure would not verify the server: \
                     give its CA in PARLEY_REDIS_CA_FILE instead"
                        .into(),
                ));
            }
            (redis::ConnectionAddr::TcpTls { .. }, Some(ca)) => redis::Client::build_with_tls(
                info,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(ca.to_vec()),
                },
            )
            .map_err(|e| BusError(format!("bad PARLEY_REDIS_CA_FILE: {e}")))?,
            (_, Some(_)) => {
                return Err(BusError(
                    "PARLEY_REDIS_CA_FILE is set but the Redis URL is not rediss://".into(),
                ));
            }
            (_, None) => {
                redis::Client::open(info).map_err(|e| BusError(format!("bad Redis URL: {e}")))?
            }
        };
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

impl RedisBus {
    /// For a `rediss://` URL, connects once and fails if the TLS handshake
    /// does: a certificate the configured CA did not sign, or one for
    /// another host name, is a configuration error that retrying will not
    /// fix. Anything else (Redis down, a timeout) only logs: the node serves
    /// while Redis is away, as it does without TLS.
    pub async fn check_tls(&self) -> Result<(), BusError> {
        if !matches!(
            self.shared.client.get_connection_info().addr(),
            redis::ConnectionAddr::TcpTls { .. }
        ) {
            return Ok(());
        }
        let attempt = tokio::time::timeout(
            Duration::from_secs(5),
            self.shared.client.get_multiplexed_async_connection(),
        )
        .await;
        match attempt {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) if is_tls_failure(&e) => Err(BusError(format!(
                "the TLS handshake with Redis failed: {e} \
                 (is PARLEY_REDIS_CA_FILE the CA that signed its certificate?)"
            ))),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "Redis is not reachable yet; serving without it");
                Ok(())
            }
            Err(_) => {
                tracing::warn!("Redis did not answer within 5 s; serving without it");
                Ok(())
            }
        }
    }
}

/// rustls reports a refused certificate (and every other handshake
/// failure) as an I/O error of kind `InvalidData`; a refused or reset
/// connection has another kind. redis-rs keeps the I/O error behind an
/// `Arc`, so both shapes are looked for along the chain.
fn is_tls_failure(error: &redis::RedisError) -> bool {
    use std::error::Error;
    let mut source: Option<&(dyn Error + 'static)> = Some(error);
    while let Some(e) = source {
        let io = e.downcast_ref::<std::io::Error>().or_else(|| {
            e.downcast_ref::<Arc<dyn Error + Send + Sync>>()
                .and_then(|inner| inner.downcast_ref::<std::io::Error>())
        });
        if let Some(io) = io {
            return io.kind() == std::io::ErrorKind::InvalidData;
        }
        source = e.source();
    }
    false
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_certificate_is_told_from_an_unreachable_server() {
        use std::io::{Error, ErrorKind};
        let tls = redis::RedisError::from(Error::new(ErrorKind::InvalidData, "UnknownIssuer"));
        assert!(is_tls_failure(&tls));
        for kind in [ErrorKind::ConnectionRefused, ErrorKind::TimedOut] {
            assert!(!is_tls_failure(&redis::RedisError::from(Error::from(kind))));
        }
    }
}
