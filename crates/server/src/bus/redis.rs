//! The fleet bus: Redis Pub/Sub between nodes.
//!
//! Channels: `parley:room:<room>` carries a room's stored messages and its
//! presence/typing events; `parley:user:<user>` carries direct messages for
//! that user's connections that have not joined the DM room. A node
//! subscribes only to the rooms its sessions joined and the users connected
//! to it, so a message travels only to nodes with receivers. Each message is
//! published once, as the frame bytes the receivers forward unchanged.
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
//! Wire format of a payload: `<kind> <node> <arg> <frame>`, kind `m` (arg =
//! seq), `d` (arg = DM room), `e` (arg = sending user). Envelopes a node
//! published itself come back to it; `d` and `e` ones are skipped, `m` ones
//! are dropped by the room's seq check.
//!
//! Cluster-wide members: a sorted set `parley:presence:<room>` of
//! `"<user> <node>"` scored by an expiry time, refreshed by each node every
//! few seconds, so the entries of a crashed node expire on their own.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use async_trait::async_trait;
use axum::extract::ws::Utf8Bytes;
use bytes::Bytes;
use futures_util::StreamExt;
use redis::aio::{MultiplexedConnection, PubSubSink};
use tokio::sync::mpsc;

use super::{Bus, BusError, Envelope, Event, Inbox};

/// Envelopes waiting to be published; beyond this they are dropped.
const PUBLISH_QUEUE: usize = 65_536;
/// Publishes sent to Redis in one pipeline at most.
const PIPELINE: usize = 512;
/// How long a presence entry lives without a refresh.
const PRESENCE_TTL: Duration = Duration::from_secs(30);
const PRESENCE_REFRESH: Duration = Duration::from_secs(10);
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

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
    /// (room, user) → number of local sessions, for presence refreshes.
    present: Mutex<HashMap<(String, String), usize>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub struct RedisBus {
    shared: Arc<Shared>,
    publish: mpsc::Sender<(String, Vec<u8>)>,
}

impl RedisBus {
    /// Creates the bus and starts its connection tasks. It does not wait for
    /// Redis: a node starts and serves while Redis is down.
    pub fn start(url: &str, node: &str) -> Result<Self, BusError> {
        let client =
            redis::Client::open(url).map_err(|e| BusError(format!("bad Redis URL: {e}")))?;
        let shared = Arc::new(Shared {
            node: node.replace(' ', "_"),
            client,
            inbox: OnceLock::new(),
            channels: Mutex::new(HashMap::new()),
            sink: Mutex::new(None),
            conn: Mutex::new(None),
            present: Mutex::new(HashMap::new()),
        });
        let (publish, rx) = mpsc::channel(PUBLISH_QUEUE);
        tokio::spawn(publisher(Arc::downgrade(&shared), rx));
        tokio::spawn(subscriber(Arc::downgrade(&shared)));
        tokio::spawn(presence_refresher(Arc::downgrade(&shared)));
        metrics::gauge!("parley_bus_connected").set(0.0);
        Ok(Self { shared, publish })
    }
}

fn room_channel(room: &str) -> String {
    format!("parley:room:{room}")
}

fn user_channel(user: &str) -> String {
    format!("parley:user:{user}")
}

fn presence_key(room: &str) -> String {
    format!("parley:presence:{room}")
}

/// Encodes an envelope as (channel, payload).
pub fn encode(node: &str, envelope: &Envelope) -> (String, Vec<u8>) {
    let (channel, kind, arg, frame) = match &envelope.event {
        Event::Message { seq, frame } => {
            (room_channel(&envelope.room), 'm', seq.to_string(), frame)
        }
        Event::Direct { user, frame } => {
            (user_channel(user), 'd', envelope.room.to_string(), frame)
        }
        Event::Ephemeral { from, frame } => {
            (room_channel(&envelope.room), 'e', from.to_string(), frame)
        }
    };
    let mut payload = Vec::with_capacity(frame.len() + node.len() + arg.len() + 4);
    payload.push(kind as u8);
    payload.push(b' ');
    payload.extend_from_slice(node.as_bytes());
    payload.push(b' ');
    payload.extend_from_slice(arg.as_bytes());
    payload.push(b' ');
    payload.extend_from_slice(frame.as_bytes());
    (channel, payload)
}

/// Decodes a payload received on `channel`: (publishing node, envelope).
pub fn decode(channel: &str, payload: &[u8]) -> Option<(String, Envelope)> {
    let mut parts = payload.splitn(4, |b| *b == b' ');
    let kind = parts.next()?;
    let node = std::str::from_utf8(parts.next()?).ok()?.to_string();
    let arg = std::str::from_utf8(parts.next()?).ok()?;
    let frame = Utf8Bytes::try_from(Bytes::copy_from_slice(parts.next()?)).ok()?;
    let envelope = match kind {
        b"m" => Envelope {
            room: Arc::from(channel.strip_prefix("parley:room:")?),
            event: Event::Message {
                seq: arg.parse().ok()?,
                frame,
            },
        },
        b"d" => Envelope {
            room: Arc::from(arg),
            event: Event::Direct {
                user: Arc::from(channel.strip_prefix("parley:user:")?),
                frame,
            },
        },
        b"e" => Envelope {
            room: Arc::from(channel.strip_prefix("parley:room:")?),
            event: Event::Ephemeral {
                from: Arc::from(arg),
                frame,
            },
        },
        _ => return None,
    };
    Some((node, envelope))
}

impl Shared {
    fn inbox(&self) -> Option<Arc<dyn Inbox>> {
        self.inbox.get().and_then(Weak::upgrade)
    }

    fn command_connection(&self) -> Option<MultiplexedConnection> {
        lock(&self.conn).clone()
    }

    async fn subscribe_channel(&self, channel: String) -> Result<(), BusError> {
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

    async fn unsubscribe_channel(&self, channel: String) {
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

/// Publishes queued envelopes in pipelines; drops them while Redis is down.
async fn publisher(shared: Weak<Shared>, mut rx: mpsc::Receiver<(String, Vec<u8>)>) {
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
        for (channel, payload) in &batch {
            pipe.cmd("PUBLISH")
                .arg(channel)
                .arg(payload.as_slice())
                .ignore();
        }
        let result = tokio::time::timeout(COMMAND_TIMEOUT, pipe.query_async::<()>(&mut conn)).await;
        if !matches!(result, Ok(Ok(()))) {
            metrics::counter!("parley_bus_publish_dropped_total").increment(batch.len() as u64);
        }
        batch.clear();
    }
}

/// Keeps a subscriber connection (and the command connection) alive,
/// re-subscribing and asking for a resync after every reconnect.
async fn subscriber(shared: Weak<Shared>) {
    let mut backoff = Duration::from_millis(100);
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
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "Redis unreachable; delivery between nodes falls back to the store");
                drop(s);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
            Err(_) => {
                tracing::warn!("Redis connect timed out");
                drop(s);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        let (mut sink, mut stream) = pubsub.split();
        let channels: Vec<String> = lock(&s.channels).keys().cloned().collect();
        if !channels.is_empty() && sink.subscribe(&channels).await.is_err() {
            drop(s);
            tokio::time::sleep(backoff).await;
            continue;
        }
        *lock(&s.sink) = Some(sink);
        *lock(&s.conn) = Some(conn);
        backoff = Duration::from_millis(100);
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

/// Refreshes this node's presence entries before they expire.
/// The (room, user) presence entries of this node, grouped by room.
fn present_by_room<'a>(
    entries: impl Iterator<Item = &'a (String, String)>,
) -> BTreeMap<&'a str, Vec<&'a str>> {
    let mut rooms: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (room, user) in entries {
        rooms.entry(room).or_default().push(user);
    }
    rooms
}

async fn presence_refresher(shared: Weak<Shared>) {
    let mut tick = tokio::time::interval(PRESENCE_REFRESH);
    loop {
        tick.tick().await;
        let Some(s) = shared.upgrade() else { return };
        let Some(mut conn) = s.command_connection() else {
            continue;
        };
        let entries: Vec<(String, String)> = lock(&s.present).keys().cloned().collect();
        let by_room = present_by_room(entries.iter());
        if by_room.is_empty() {
            continue;
        }
        let now = parley_protocol::time::now_ms();
        let expiry = now + PRESENCE_TTL.as_millis() as i64;
        // Three commands per room, not per member: a node holding 15,000
        // members in 1,000 rooms sends 3,000 commands per refresh, not 45,000
        // (which kept Redis busy long enough to delay every publish behind it).
        let mut pipe = redis::pipe();
        for (room, users) in &by_room {
            let key = presence_key(room);
            let zadd = pipe.cmd("ZADD").arg(&key);
            for user in users {
                zadd.arg(expiry).arg(format!("{user} {}", s.node));
            }
            zadd.ignore();
            pipe.cmd("ZREMRANGEBYSCORE")
                .arg(&key)
                .arg("-inf")
                .arg(now)
                .ignore();
            pipe.cmd("PEXPIRE")
                .arg(&key)
                .arg(PRESENCE_TTL.as_millis() as i64 * 2)
                .ignore();
        }
        let _ = tokio::time::timeout(COMMAND_TIMEOUT, pipe.query_async::<()>(&mut conn)).await;
    }
}

#[async_trait]
impl Bus for RedisBus {
    fn set_inbox(&self, inbox: Weak<dyn Inbox>) {
        let _ = self.shared.inbox.set(inbox);
    }

    fn publish(&self, envelope: Envelope) {
        let (channel, payload) = encode(&self.shared.node, &envelope);
        // Local delivery first: the sender's node never waits for Redis.
        if let Some(inbox) = self.shared.inbox() {
            inbox.deliver(envelope);
        }
        if self.publish.try_send((channel, payload)).is_err() {
            metrics::counter!("parley_bus_publish_dropped_total").increment(1);
        }
    }

    async fn subscribe_room(&self, room: &str) -> Result<(), BusError> {
        self.shared.subscribe_channel(room_channel(room)).await
    }

    async fn unsubscribe_room(&self, room: &str) {
        self.shared.unsubscribe_channel(room_channel(room)).await
    }

    async fn subscribe_user(&self, user: &str) {
        if let Err(e) = self.shared.subscribe_channel(user_channel(user)).await {
            tracing::debug!(user, error = %e, "user channel subscription deferred until Redis is back");
        }
    }

    async fn unsubscribe_user(&self, user: &str) {
        self.shared.unsubscribe_channel(user_channel(user)).await
    }

    fn announce(&self, room: &str, user: &str, present: bool) {
        let key = (room.to_string(), user.to_string());
        let changed = {
            let mut map = lock(&self.shared.present);
            if present {
                let count = map.entry(key).or_insert(0);
                *count += 1;
                *count == 1
            } else {
                match map.get_mut(&key) {
                    Some(c) if *c > 1 => {
                        *c -= 1;
                        false
                    }
                    Some(_) => {
                        map.remove(&key);
                        true
                    }
                    None => false,
                }
            }
        };
        let Some(mut conn) = self.shared.command_connection().filter(|_| changed) else {
            return;
        };
        let member = format!("{user} {}", self.shared.node);
        let key = presence_key(room);
        tokio::spawn(async move {
            let mut cmd = if present {
                let mut c = redis::cmd("ZADD");
                c.arg(&key)
                    .arg(parley_protocol::time::now_ms() + PRESENCE_TTL.as_millis() as i64)
                    .arg(&member);
                c
            } else {
                let mut c = redis::cmd("ZREM");
                c.arg(&key).arg(&member);
                c
            };
            let _ = tokio::time::timeout(COMMAND_TIMEOUT, cmd.query_async::<()>(&mut conn)).await;
            let _ = &mut cmd;
        });
    }

    async fn members(&self, room: &str) -> Option<Vec<String>> {
        let mut conn = self.shared.command_connection()?;
        let query = redis::cmd("ZRANGEBYSCORE")
            .arg(presence_key(room))
            .arg(parley_protocol::time::now_ms())
            .arg("+inf")
            .to_owned();
        let entries: Vec<String> =
            match tokio::time::timeout(COMMAND_TIMEOUT, query.query_async(&mut conn)).await {
                Ok(Ok(entries)) => entries,
                _ => return None,
            };
        let mut users: Vec<String> = entries
            .iter()
            .filter_map(|e| e.split(' ').next())
            .map(str::to_string)
            .collect();
        users.sort();
        users.dedup();
        Some(users)
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
    fn envelopes_round_trip() {
        let cases = vec![
            Envelope {
                room: Arc::from("general"),
                event: Event::Message {
                    seq: 42,
                    frame: "{\"a\":1}".into(),
                },
            },
            Envelope {
                room: Arc::from("dm:alice:bob"),
                event: Event::Direct {
                    user: Arc::from("bob"),
                    frame: "{\"x\":\"y z\"}".into(),
                },
            },
            Envelope {
                room: Arc::from("general"),
                event: Event::Ephemeral {
                    from: Arc::from("al.ice"),
                    frame: "{}".into(),
                },
            },
        ];
        for env in cases {
            let (channel, payload) = encode("node-1", &env);
            let (node, back) = decode(&channel, &payload).expect("decodes");
            assert_eq!(node, "node-1");
            assert_eq!(back.room, env.room);
            match (back.event, env.event) {
                (Event::Message { seq: a, frame: fa }, Event::Message { seq: b, frame: fb }) => {
                    assert_eq!((a, fa), (b, fb))
                }
                (Event::Direct { user: a, frame: fa }, Event::Direct { user: b, frame: fb }) => {
                    assert_eq!((a, fa), (b, fb))
                }
                (
                    Event::Ephemeral { from: a, frame: fa },
                    Event::Ephemeral { from: b, frame: fb },
                ) => {
                    assert_eq!((a, fa), (b, fb))
                }
                _ => panic!("kind changed"),
            }
        }
    }

    #[test]
    fn garbage_payloads_are_rejected() {
        assert!(decode("parley:room:x", b"").is_none());
        assert!(decode("parley:room:x", b"m node notanumber {}").is_none());
        assert!(decode("parley:room:x", b"z node 1 {}").is_none());
        assert!(decode("other", b"m node 1 {}").is_none());
        assert!(decode("parley:room:x", b"m node 1 \xff\xfe").is_none());
    }
}
