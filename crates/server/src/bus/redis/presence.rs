//! The fleet's presence on Redis, sharing the bus's command connection.
//!
//! A sorted set `parley:presence:<room>` holds `"<user> <node>"` members
//! scored by their expiry time. Each node re-adds its own entries every
//! [`PRESENCE_REFRESH`], so the entries of a node that crashed expire on
//! their own within [`PRESENCE_TTL`]. Announcements are counted per (room,
//! user) on this node, and only the first join and the last leave reach
//! Redis; one that cannot be sent now is applied by the next refresh.
//!
//! **One clock.** Expiry times are written and compared by Lua scripts that
//! read Redis's own `TIME`, never a node's wall clock: nodes whose clocks
//! disagree (one 45 s behind, another 90 s ahead) still agree on who is
//! present, and a crashed node's entries expire on time.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;

use super::codec::presence_key;
use super::{COMMAND_TIMEOUT, Shared, lock};
use crate::presence::Presence;

/// How long a presence entry lives without a refresh.
const PRESENCE_TTL: Duration = Duration::from_secs(30);
const PRESENCE_REFRESH: Duration = Duration::from_secs(10);
/// Rooms per refresh script: a script runs atomically, so a large refresh
/// is cut into pieces that do not hold Redis up for long.
const ROOMS_PER_SCRIPT: usize = 100;

/// Adds members with an expiry of Redis's now + TTL, drops expired ones and
/// keeps the key alive. KEYS: the rooms' presence keys. ARGV: TTL in ms,
/// then per key: the number of members, then the members. (Sent with EVAL:
/// a few hundred bytes per refresh, and no script cache to reload after a
/// Redis restart.)
const REFRESH: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[1])
local i = 2
for k = 1, #KEYS do
    local n = tonumber(ARGV[i])
    i = i + 1
    for _ = 1, n do
        redis.call('ZADD', KEYS[k], now + ttl, ARGV[i])
        i = i + 1
    end
    redis.call('ZREMRANGEBYSCORE', KEYS[k], '-inf', now)
    redis.call('PEXPIRE', KEYS[k], ttl * 2)
end
return now
";

/// The members of a room whose expiry is after Redis's now. KEYS: the key.
const MEMBERS: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZRANGEBYSCORE', KEYS[1], now, '+inf')
";

/// The number of distinct users of each room whose entry has not expired.
/// KEYS: the rooms' keys; returns one count per key. Counted inside Redis:
/// a room list of many rooms costs one round trip per [`ROOMS_PER_SCRIPT`],
/// not their member lists.
const COUNTS: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {}
for k = 1, #KEYS do
    local seen, n = {}, 0
    for _, entry in ipairs(redis.call('ZRANGEBYSCORE', KEYS[k], now, '+inf')) do
        local user = string.match(entry, '^[^ ]+')
        if user and not seen[user] then
            seen[user] = true
            n = n + 1
        end
    end
    out[k] = n
end
return out
";

/// The refresh script's call for `rooms` (room, users).
fn refresh_command(rooms: &[(&str, Vec<&str>)], node: &str) -> redis::Cmd {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(REFRESH).arg(rooms.len());
    for (room, _) in rooms {
        cmd.arg(presence_key(room));
    }
    cmd.arg(PRESENCE_TTL.as_millis() as i64);
    for (_, users) in rooms {
        cmd.arg(users.len());
        for user in users {
            cmd.arg(format!("{user} {node}"));
        }
    }
    cmd
}

pub struct RedisPresence {
    shared: Arc<Shared>,
    /// (room, user) → number of local sessions, for refreshes.
    present: Arc<Mutex<HashMap<(String, String), usize>>>,
}

impl RedisPresence {
    pub(super) fn start(shared: Arc<Shared>) -> RedisPresence {
        let present = Arc::new(Mutex::new(HashMap::new()));
        tokio::spawn(refresher(Arc::downgrade(&shared), Arc::downgrade(&present)));
        RedisPresence { shared, present }
    }
}

/// Counts one announcement; true when it changes what Redis should hold
/// (the user's first session in the room on this node, or its last).
fn count(map: &mut HashMap<(String, String), usize>, key: (String, String), present: bool) -> bool {
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
}

#[async_trait]
impl Presence for RedisPresence {
    fn announce(&self, room: &str, user: &str, present: bool) {
        let key = (room.to_string(), user.to_string());
        let changed = count(&mut lock(&self.present), key, present);
        let Some(mut conn) = self.shared.command_connection().filter(|_| changed) else {
            return;
        };
        let (room, user, node) = (room.to_string(), user.to_string(), self.shared.node.clone());
        tokio::spawn(async move {
            let sent = if present {
                let call = refresh_command(&[(&room, vec![&user])], &node);
                tokio::time::timeout(COMMAND_TIMEOUT, call.query_async::<i64>(&mut conn))
                    .await
                    .map(|r| r.map(drop))
            } else {
                let mut zrem = redis::cmd("ZREM");
                zrem.arg(presence_key(&room)).arg(format!("{user} {node}"));
                tokio::time::timeout(COMMAND_TIMEOUT, zrem.query_async::<()>(&mut conn)).await
            };
            if !matches!(sent, Ok(Ok(()))) {
                tracing::debug!(
                    room,
                    user,
                    present,
                    "presence change not sent; the next refresh applies it"
                );
            }
        });
    }

    async fn members(&self, room: &str) -> Option<Vec<String>> {
        let mut conn = self.shared.command_connection()?;
        let mut call = redis::cmd("EVAL");
        call.arg(MEMBERS).arg(1).arg(presence_key(room));
        let entries: Vec<String> =
            match tokio::time::timeout(COMMAND_TIMEOUT, call.query_async(&mut conn)).await {
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

    async fn counts(&self, rooms: &[String]) -> Option<Vec<u64>> {
        let mut conn = self.shared.command_connection()?;
        let mut counts = Vec::with_capacity(rooms.len());
        for chunk in rooms.chunks(ROOMS_PER_SCRIPT) {
            let mut call = redis::cmd("EVAL");
            call.arg(COUNTS).arg(chunk.len());
            for room in chunk {
                call.arg(presence_key(room));
            }
            match tokio::time::timeout(COMMAND_TIMEOUT, call.query_async::<Vec<u64>>(&mut conn))
                .await
            {
                Ok(Ok(part)) if part.len() == chunk.len() => counts.extend(part),
                _ => return None,
            }
        }
        Some(counts)
    }
}

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

/// Refreshes this node's presence entries before they expire; ends with
/// the presence.
async fn refresher(shared: Weak<Shared>, present: Weak<Mutex<HashMap<(String, String), usize>>>) {
    let mut tick = tokio::time::interval(PRESENCE_REFRESH);
    loop {
        tick.tick().await;
        let (Some(s), Some(present)) = (shared.upgrade(), present.upgrade()) else {
            return;
        };
        let Some(mut conn) = s.command_connection() else {
            continue;
        };
        let entries: Vec<(String, String)> = lock(&present).keys().cloned().collect();
        let by_room = present_by_room(entries.iter());
        if by_room.is_empty() {
            continue;
        }
        let rooms: Vec<(&str, Vec<&str>)> = by_room.into_iter().collect();
        for chunk in rooms.chunks(ROOMS_PER_SCRIPT) {
            let call = refresh_command(chunk, &s.node);
            match tokio::time::timeout(COMMAND_TIMEOUT, call.query_async::<i64>(&mut conn)).await {
                Ok(Ok(_)) => {}
                _ => {
                    tracing::debug!("presence refresh failed; retried at the next period");
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_first_join_and_the_last_leave_reach_redis() {
        let mut map = HashMap::new();
        let key = || ("general".to_string(), "alice".to_string());
        assert!(count(&mut map, key(), true));
        assert!(!count(&mut map, key(), true));
        assert!(!count(&mut map, key(), false));
        assert!(count(&mut map, key(), false));
        assert!(
            !count(&mut map, key(), false),
            "a leave never joined changes nothing"
        );
        assert!(map.is_empty());
    }

    #[test]
    fn entries_are_grouped_by_room() {
        let entries = [
            ("b".to_string(), "u1".to_string()),
            ("a".to_string(), "u2".to_string()),
            ("b".to_string(), "u3".to_string()),
        ];
        let by_room = present_by_room(entries.iter());
        assert_eq!(by_room.len(), 2);
        assert_eq!(by_room["a"], vec!["u2"]);
        assert_eq!(by_room["b"], vec!["u1", "u3"]);
    }
}
