//! The node's shared state, and the chat rules that the WebSocket sessions
//! and the REST API have in common: the naming rules of rooms, what a
//! valid message is, the rate limit, history paging, and submitting an
//! append. Keeping them here is what makes REST and WebSocket behave alike.
//! Who may see, join and moderate a room is [`crate::access`]'s.
//!
//! Sessions and REST handlers call in here; the node calls the store (reads,
//! and `ensure_room`), the committer (every message write) and the hub. It
//! knows nothing of sessions or sockets.

use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;
use parley_protocol::rest::MAX_SEARCH_QUERY_BYTES;
use parley_protocol::{
    ErrorCode, dm_members, dm_room, is_dm_room, same_user, valid_room, valid_username,
};

use crate::auth::Auth;
use crate::commit::{Appender, PendingAppend};
use crate::config::Config;
use crate::error::ChatError;
use crate::hub::Hub;
use crate::ratelimit::RateLimiter;
use crate::shutdown::Drain;
use crate::store::search::{SearchPage, SearchQuery};
use crate::store::{AppendOutcome, Change, NewMessage, Refusal, Store, StoredMessage};

/// Longest accepted nonce, in bytes.
pub const MAX_NONCE_LEN: usize = 64;

pub struct Node {
    pub config: Config,
    pub node_id: String,
    pub store: Arc<dyn Store>,
    pub hub: Arc<Hub>,
    pub appender: Appender,
    pub auth: Auth,
    pub limiter: RateLimiter,
    pub drain: Drain,
    pub metrics: PrometheusHandle,
}

/// A page of history and whether more exists in the direction asked.
pub struct Page {
    pub messages: Vec<StoredMessage>,
    pub more: bool,
}

/// Whether a submit counts against the sender's rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Limit {
    PerUser,
    None,
}

/// What a join sends in `joined`, and where its live stream takes over.
pub struct JoinHistory {
    pub page: Page,
    /// The room's `last_seq` as `joined` announces it.
    pub last_seq: u64,
    /// The seq after which live messages must be pushed (invariant 4).
    pub tail: u64,
}

/// `bad_request` unless a store can hold `value` (the shared rule,
/// [`parley_protocol::text::storable`]).
fn storable(field: &str, value: &str) -> Result<(), ChatError> {
    parley_protocol::text::storable(value)
        .map_err(|e| ChatError::bad_request(format!("{field} {e}")))
}

impl Node {
    /// The naming rules of `room`, and DM privacy: a DM room names its two
    /// users. What a room's membership allows is
    /// [`Node::check_read`](crate::access)'s.
    pub fn check_name(&self, user: &str, room: &str) -> Result<(), ChatError> {
        if is_dm_room(room) {
            let (a, b) = dm_members(room).ok_or_else(|| {
                ChatError::bad_request(format!(
                    "{room:?} is not a direct-message room name (dm:<a>:<b>, two valid usernames, sorted)"
                ))
            })?;
            if !same_user(user, a) && !same_user(user, b) {
                return Err(ChatError::forbidden(
                    "direct-message rooms are private to their two users",
                ));
            }
            Ok(())
        } else if valid_room(room) {
            Ok(())
        } else {
            Err(ChatError::bad_request(format!(
                "{room:?} is not a valid room name ([a-z0-9][a-z0-9_-]{{0,63}})"
            )))
        }
    }

    /// Makes sure a room exists before a session subscribes to it (a first
    /// join creates a public room). Rooms are never deleted, so one live on
    /// this node costs no store round trip.
    pub async fn open_room(&self, room: &str) -> Result<(), ChatError> {
        if self.hub.room(room).is_none() {
            self.store.ensure_room(room).await?;
        }
        Ok(())
    }

    /// The history of a join: with `since`, everything after it up to the
    /// room's `last_seq` (at most `history_max`); without, the newest page.
    pub async fn join_history(
        &self,
        room: &str,
        since: Option<u64>,
    ) -> Result<JoinHistory, ChatError> {
        match since {
            Some(since) => {
                let limit = self.config.history_max.max(1);
                // The room's last_seq first, then history up to it: `joined`
                // then says exactly what it covers. (Read the other way round,
                // a message committed between the two reads was announced in
                // `last_seq` but missing from `history`, and then came live.)
                let last_seq = self.store.last_seq(room).await?.unwrap_or(0);
                let mut messages = if since < last_seq {
                    self.store
                        .range_forward(room, since, last_seq + 1, limit + 1)
                        .await?
                } else {
                    Vec::new()
                };
                let more = messages.len() > limit as usize;
                messages.truncate(limit as usize);
                let tail = messages.last().map_or(since.min(last_seq), |m| m.seq);
                Ok(JoinHistory {
                    page: Page { messages, more },
                    last_seq,
                    tail,
                })
            }
            None => {
                let page = self.config.history_page.max(1);
                let messages = self.store.range_backward(room, u64::MAX, page).await?;
                let more = messages.first().is_some_and(|m| m.seq > 1);
                let tail = messages.last().map_or(0, |m| m.seq);
                Ok(JoinHistory {
                    page: Page { messages, more },
                    last_seq: tail,
                    tail,
                })
            }
        }
    }

    /// The DM room for a send `to` another user, named after the two
    /// case-folded names (any spelling of `to` is the same user).
    pub fn dm_room_for(&self, user: &str, to: &str) -> Result<String, ChatError> {
        if !valid_username(to) {
            return Err(ChatError::bad_request(format!(
                "{to:?} is not a valid username"
            )));
        }
        if same_user(to, user) {
            return Err(ChatError::bad_request(
                "cannot send a direct message to yourself",
            ));
        }
        Ok(dm_room(user, to))
    }

    /// The room's `last_seq`; `not_found` if nobody ever joined it.
    /// DM rooms exist implicitly (they are created by their first message).
    pub async fn existing_room(&self, room: &str) -> Result<u64, ChatError> {
        match self.store.last_seq(room).await? {
            Some(seq) => Ok(seq),
            None if is_dm_room(room) => Ok(0),
            None => Err(ChatError::not_found(format!(
                "room {room:?} does not exist (join it to create it)"
            ))),
        }
    }

    /// Checks a send's text and nonce: size, not blank, and — like every
    /// string that reaches the store — text a store can hold
    /// ([`parley_protocol::text::storable`]: no U+0000; tabs, newlines and
    /// other control characters are allowed). Refused here, a message is
    /// `bad_request` on every backend alike, before it joins a batch.
    pub fn validate_message(&self, text: &str, nonce: Option<&str>) -> Result<(), ChatError> {
        if text.len() > self.config.max_text_bytes {
            return Err(ChatError::new(
                ErrorCode::TooLarge,
                format!(
                    "text is {} bytes; the limit is {}",
                    text.len(),
                    self.config.max_text_bytes
                ),
            ));
        }
        if text.trim().is_empty() {
            return Err(ChatError::bad_request("text is empty"));
        }
        storable("text", text)?;
        self.validate_nonce(nonce)
    }

    /// A nonce is 1–64 bytes a store can hold.
    pub fn validate_nonce(&self, nonce: Option<&str>) -> Result<(), ChatError> {
        if let Some(nonce) = nonce {
            if nonce.is_empty() || nonce.len() > MAX_NONCE_LEN {
                return Err(ChatError::bad_request(format!(
                    "nonce must be 1–{MAX_NONCE_LEN} bytes"
                )));
            }
            storable("nonce", nonce)?;
        }
        Ok(())
    }

    /// Counts a send against the user's rate limit.
    pub fn check_rate(&self, user: &str) -> Result<(), ChatError> {
        if self.limiter.allow(user) {
            Ok(())
        } else {
            metrics::counter!("parley_rate_limited_total").increment(1);
            Err(ChatError::new(
                ErrorCode::RateLimited,
                "too many messages; slow down",
            ))
        }
    }

    /// Validates and queues a message for group commit. The returned handle
    /// resolves when it is durably stored (then the ack may be sent).
    pub async fn submit(
        &self,
        user: &str,
        room: &str,
        text: String,
        nonce: Option<String>,
    ) -> Result<PendingAppend, ChatError> {
        self.submit_as(user, room, Change::Message, text, nonce, Limit::PerUser)
            .await
    }

    /// Validates and queues any change to a room (protocol 1.1 §1): a
    /// message or reply, an edit, a delete, a reaction. Each takes the
    /// room's next seq through the same committer as messages, with the
    /// same nonce rule and rate limit. What only the store can check (the
    /// target exists, is a live message, and the user may change it) comes
    /// back as [`AppendOutcome::Refused`]; see [`Node::answer`].
    pub async fn submit_change(
        &self,
        user: &str,
        room: &str,
        change: Change,
        text: String,
        nonce: Option<String>,
    ) -> Result<PendingAppend, ChatError> {
        let change = match change {
            // Whether the deleter is a server admin: one read, only on deletes.
            Change::Delete { target, .. } => Change::Delete {
                target,
                moderator: self.is_admin(user).await?,
            },
            other => other,
        };
        self.submit_as(user, room, change, text, nonce, Limit::PerUser)
            .await
    }

    /// Moves `user`'s read position in `room` forward to `seq` (capped at
    /// the room's last seq, never back; protocol 1.1 §2); returns the
    /// stored position. Not a room event: it is the user's, not the room's.
    pub async fn mark_read(&self, user: &str, room: &str, seq: u64) -> Result<u64, ChatError> {
        self.check_read(user, room).await?;
        let key = parley_protocol::fold_username(user);
        match self.store.mark_read(&key, room, seq).await? {
            Some(position) => Ok(position),
            None if is_dm_room(room) => Ok(0),
            None => Err(ChatError::not_found(format!(
                "room {room:?} does not exist"
            ))),
        }
    }

    /// `user`'s read position in `room` and what is unread after it.
    pub async fn unread(&self, user: &str, room: &str) -> Result<crate::store::Unread, ChatError> {
        let key = parley_protocol::fold_username(user);
        Ok(self.store.unread(&key, room).await?)
    }

    /// Searches the messages `user` may read (protocol 1.1 §4): `q` must
    /// hold 1–256 bytes a store can hold; `room`, if given, must be one the
    /// user may read and that exists; `limit` follows history's rules.
    pub async fn search(
        &self,
        user: &str,
        q: &str,
        room: Option<&str>,
        before: Option<&str>,
        limit: Option<u32>,
    ) -> Result<SearchPage, ChatError> {
        if q.trim().is_empty() || q.len() > MAX_SEARCH_QUERY_BYTES {
            return Err(ChatError::bad_request(format!(
                "q must hold 1–{MAX_SEARCH_QUERY_BYTES} bytes of words"
            )));
        }
        parley_protocol::text::storable(q).map_err(|e| ChatError::bad_request(format!("q {e}")))?;
        if let Some(room) = room {
            self.check_read(user, room).await?;
        }
        let limit = self.page_limit(limit, "results")?;
        let key = parley_protocol::fold_username(user);
        let query = SearchQuery {
            user_key: &key,
            q,
            room,
            before,
            limit,
            admin: self.is_admin(user).await?,
        };
        Ok(self.store.search(&query).await?)
    }

    /// A page's size: `history_page` by default, at most `history_max`
    /// (a larger one is lowered); 0 is `bad_request`. History and search
    /// page alike.
    fn page_limit(&self, limit: Option<u32>, what: &str) -> Result<u32, ChatError> {
        let max = self.config.history_max.max(1);
        if limit == Some(0) {
            return Err(ChatError::bad_request(format!(
                "limit must be 1 or more (at most {max} {what} are returned)"
            )));
        }
        Ok(limit.unwrap_or(self.config.history_page).clamp(1, max))
    }

    /// Whether `user` is a server admin (`parley admin user promote`).
    pub async fn is_admin(&self, user: &str) -> Result<bool, ChatError> {
        let key = parley_protocol::fold_username(user);
        Ok(self
            .store
            .account(&key)
            .await?
            .is_some_and(|a| a.role == "admin" && !a.disabled))
    }

    /// What a committed append answers: the stored (or original) event, or
    /// the store's refusal as `not_found` / `forbidden`.
    pub fn answer(outcome: &AppendOutcome) -> Result<&StoredMessage, ChatError> {
        match outcome {
            AppendOutcome::Stored(m) | AppendOutcome::Duplicate(m) => Ok(m),
            AppendOutcome::Refused(Refusal::NotFound(why)) => {
                Err(ChatError::not_found(why.clone()))
            }
            AppendOutcome::Refused(Refusal::Forbidden(why)) => {
                Err(ChatError::forbidden(why.clone()))
            }
            AppendOutcome::Refused(Refusal::Conflict(why)) => {
                Err(ChatError::new(ErrorCode::Conflict, why.clone()))
            }
        }
    }

    /// [`Node::submit`] for the server API (`POST /api/server/rooms/{room}/messages`):
    /// the same validation, committer, seq and nonce rules, but no rate
    /// limit — the application's backend is trusted, and its bots would
    /// otherwise share one bucket.
    pub async fn submit_unlimited(
        &self,
        user: &str,
        room: &str,
        text: String,
        nonce: Option<String>,
    ) -> Result<PendingAppend, ChatError> {
        self.submit_as(user, room, Change::Message, text, nonce, Limit::None)
            .await
    }

    pub(crate) async fn submit_as(
        &self,
        user: &str,
        room: &str,
        change: Change,
        text: String,
        nonce: Option<String>,
        limit: Limit,
    ) -> Result<PendingAppend, ChatError> {
        match &change {
            Change::Message | Change::Reply { .. } | Change::Edit { .. } => {
                self.validate_message(&text, nonce.as_deref())?
            }
            Change::Delete { .. }
            | Change::React { .. }
            | Change::Member { .. }
            | Change::Topic { .. } => {
                self.validate_nonce(nonce.as_deref())?;
                if let Change::React { emoji, .. } = &change
                    && !parley_protocol::valid_emoji(emoji)
                {
                    return Err(ChatError::bad_request(format!(
                        "emoji must be 1–{} bytes of UTF-8 without whitespace or control characters",
                        parley_protocol::MAX_EMOJI_BYTES
                    )));
                }
            }
        }
        // Callers checked both names (`check_read`, `dm_room_for`, the
        // token's `sub`); the store's rule holds for them all the same.
        storable("room name", room)?;
        storable("username", user)?;
        if limit == Limit::PerUser {
            self.check_rate(user)?;
        }
        metrics::counter!("parley_messages_received_total").increment(1);
        let message = NewMessage {
            room: room.to_string(),
            from: user.to_string(),
            text,
            nonce,
            ts_ms: parley_protocol::time::now_ms(),
            change,
        };
        Ok(self.appender.submit(message).await?)
    }

    /// A page of history. `after` pages forward (oldest first from `after`),
    /// otherwise backward from `before` (or from the newest message).
    /// `limit` defaults to `history_page`; 0 is `bad_request`, and one above
    /// `history_max` is lowered to it (docs/protocol.md).
    pub async fn history(
        &self,
        room: &str,
        before: Option<u64>,
        after: Option<u64>,
        limit: Option<u32>,
    ) -> Result<Page, ChatError> {
        let limit = self.page_limit(limit, "messages")?;
        match after {
            Some(after) => {
                let mut messages = self
                    .store
                    .range_forward(room, after, before.unwrap_or(u64::MAX), limit + 1)
                    .await?;
                let more = messages.len() > limit as usize;
                messages.truncate(limit as usize);
                Ok(Page { messages, more })
            }
            None => {
                let messages = self
                    .store
                    .range_backward(room, before.unwrap_or(u64::MAX), limit)
                    .await?;
                let more = messages.first().is_some_and(|m| m.seq > 1);
                Ok(Page { messages, more })
            }
        }
    }
}
