//! The node's live connections, so that the heartbeat can ping each of
//! them, a drain can close each of them, and the node can close those whose
//! token expired or was revoked.
//!
//! A connection registers its [`Outbox`] when it opens and leaves when its
//! socket is closed (after the closing handshake: a drain waits for that).
//! Once authenticated it records *what* it authenticated with, as a
//! [`SessionAuth`]: the user, the token's `exp` and `iat`, and the token's
//! [`TokenId`] (a SHA-256 digest; the token's text is not kept).
//!
//! For revocation (logout, logout-all, a disabled user):
//!
//! ```ignore
//! use parley_protocol::{ErrorCode, ServerFrame, close};
//! let revoked = TokenId::of(&token);
//! sessions.close_where(
//!     |auth| auth.token == revoked,
//!     close::UNAUTHORIZED,
//!     &ServerFrame::error(None, ErrorCode::Unauthorized, "token revoked"),
//! );
//! ```
//!
//! Expiry needs no call: the heartbeat task calls
//! [`Registry::close_expired`] every [`EXPIRY_TICK`](super::heartbeat::EXPIRY_TICK).

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::extract::ws::{Message as WsMessage, Utf8Bytes};
use parley_protocol::token::Claims;
use parley_protocol::{ErrorCode, ServerFrame, close};
use sha2::{Digest, Sha256};

use crate::outbox::Outbox;

/// The identity of a token without its text: the SHA-256 of the token as
/// presented (surrounding whitespace trimmed, as verification does).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenId(pub [u8; 32]);

impl TokenId {
    pub fn of(token: &str) -> TokenId {
        TokenId(Sha256::digest(token.trim().as_bytes()).into())
    }

    /// Lowercase hex (64 characters), e.g. to store a revocation.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl std::fmt::Debug for TokenId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TokenId({})", self.to_hex())
    }
}

/// What a live session authenticated with: its latest accepted token (a
/// second `hello` of the same user replaces it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionAuth {
    /// The user (the token's `sub`).
    pub user: Arc<str>,
    /// The token's `exp` (Unix seconds). The session is closed once
    /// `exp + leeway` has passed.
    pub exp: i64,
    /// The token's `iat` (Unix seconds), if it has one.
    pub iat: Option<i64>,
    /// Which token it was.
    pub token: TokenId,
}

impl SessionAuth {
    /// The record of a verified token: `token` is hashed, not kept.
    pub fn new(token: &str, claims: Claims) -> SessionAuth {
        SessionAuth {
            user: Arc::from(claims.sub),
            exp: claims.exp,
            iat: claims.iat,
            token: TokenId::of(token),
        }
    }

    /// Has the token expired at `now_s`, given `leeway_s` of clock skew?
    /// (The rule of `parley_protocol::token::verify`.)
    pub fn expired(&self, now_s: i64, leeway_s: i64) -> bool {
        self.exp.saturating_add(leeway_s) <= now_s
    }
}

struct Entry {
    outbox: Outbox,
    /// `None` until the session is authenticated.
    auth: Option<SessionAuth>,
}

/// The node's live connections.
pub struct Registry {
    next_id: AtomicU64,
    live: Mutex<HashMap<u64, Entry>>,
    /// No authenticated session's `exp` is below this: the expiry sweep
    /// skips the walk until it is reached. (A lower bound: lowered by
    /// [`Registry::authenticate`], recomputed by a sweep.)
    earliest_exp: AtomicI64,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            next_id: AtomicU64::new(0),
            live: Mutex::new(HashMap::new()),
            earliest_exp: AtomicI64::new(i64::MAX),
        }
    }
}

impl Registry {
    fn live(&self) -> MutexGuard<'_, HashMap<u64, Entry>> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a connection (not yet authenticated); returns its session id.
    pub fn register(&self, outbox: Outbox) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let mut live = self.live();
        live.insert(id, Entry { outbox, auth: None });
        metrics::gauge!("parley_connections").set(live.len() as f64);
        metrics::counter!("parley_connections_total").increment(1);
        id
    }

    /// Records (or replaces, on a second `hello`) what session `id`
    /// authenticated with.
    pub fn authenticate(&self, id: u64, auth: SessionAuth) {
        let mut live = self.live();
        if let Some(entry) = live.get_mut(&id) {
            // Under the lock, as the sweep recomputes the bound under it.
            self.earliest_exp.fetch_min(auth.exp, Ordering::AcqRel);
            entry.auth = Some(auth);
        }
    }

    pub fn unregister(&self, id: u64) {
        let mut live = self.live();
        live.remove(&id);
        metrics::gauge!("parley_connections").set(live.len() as f64);
    }

    /// Closes every authenticated session whose [`SessionAuth`] matches
    /// `matches`: `error` is the last frame it gets (what was still queued
    /// for it is dropped, nothing more is queued, pending acks are not
    /// sent), then the close frame with `code` (e.g. `close::UNAUTHORIZED`).
    /// Returns how many sessions this closed; one already closing keeps its
    /// own close.
    ///
    /// Holds the registry's lock while it calls `matches`, which must be
    /// quick and must not block. Does not wait for the sessions to end.
    pub fn close_where(
        &self,
        mut matches: impl FnMut(&SessionAuth) -> bool,
        code: u16,
        error: &ServerFrame,
    ) -> usize {
        let frame = Utf8Bytes::from(error.to_json());
        let mut closed = 0;
        for entry in self.live().values() {
            if entry.auth.as_ref().is_some_and(&mut matches)
                && entry
                    .outbox
                    .close_with_last_words(code, WsMessage::Text(frame.clone()))
            {
                closed += 1;
            }
        }
        if closed > 0 {
            tracing::info!(sessions = closed, code, "closed sessions");
        }
        closed
    }

    /// Closes, with `error unauthorized` and 4401, every session whose token
    /// expired at `now_s` (with `leeway_s`). Cheap while none can have: it
    /// walks the sessions only once the earliest `exp` is reached.
    pub fn close_expired(&self, now_s: i64, leeway_s: i64) -> usize {
        if self
            .earliest_exp
            .load(Ordering::Acquire)
            .saturating_add(leeway_s)
            > now_s
        {
            return 0;
        }
        // The walk recomputes the bound: the earliest `exp` still live. It
        // holds the lock, as `authenticate` does to lower the bound, so no
        // session is missed.
        let error = ServerFrame::error(None, ErrorCode::Unauthorized, "token has expired");
        let frame = Utf8Bytes::from(error.to_json());
        let live = self.live();
        let mut closed = 0;
        let mut earliest = i64::MAX;
        for entry in live.values() {
            let Some(auth) = &entry.auth else { continue };
            if auth.expired(now_s, leeway_s) {
                if entry
                    .outbox
                    .close_with_last_words(close::UNAUTHORIZED, WsMessage::Text(frame.clone()))
                {
                    closed += 1;
                }
            } else {
                earliest = earliest.min(auth.exp);
            }
        }
        self.earliest_exp.store(earliest, Ordering::Release);
        drop(live);
        if closed > 0 {
            metrics::counter!("parley_sessions_expired_total").increment(closed as u64);
            tracing::info!(sessions = closed, "closed sessions whose token expired");
        }
        closed
    }

    /// Calls `f` on the connections whose id falls in `slice` of `slices`,
    /// holding the registry's lock (`f` must not block).
    pub fn for_each_in_slice(&self, slice: u64, slices: u64, mut f: impl FnMut(&Outbox)) {
        let live = self.live();
        for (_, entry) in live.iter().filter(|(id, _)| *id % slices == slice) {
            f(&entry.outbox);
        }
    }

    pub fn snapshot(&self) -> Vec<Outbox> {
        self.live().values().map(|e| e.outbox.clone()).collect()
    }

    pub fn len(&self) -> usize {
        self.live().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::{Wake, outbox};

    fn auth(user: &str, token: &str, exp: i64) -> SessionAuth {
        SessionAuth::new(
            token,
            Claims {
                sub: user.into(),
                exp,
                iat: Some(exp - 60),
                nbf: None,
            },
        )
    }

    #[tokio::test]
    async fn close_where_closes_the_matching_sessions_after_the_error() {
        let registry = Registry::default();
        let (a, mut a_rx) = outbox(8);
        let (b, mut b_rx) = outbox(8);
        let (anon, _anon_rx) = outbox(8);
        let a_id = registry.register(a.clone());
        let b_id = registry.register(b.clone());
        registry.register(anon.clone());
        registry.authenticate(a_id, auth("alice", "t1", 100));
        registry.authenticate(b_id, auth("bob", "t2", 100));
        assert!(a.push("queued before".into()));

        let revoked = TokenId::of(" t1\n");
        let error = ServerFrame::error(None, ErrorCode::Unauthorized, "token revoked");
        let n = registry.close_where(|s| s.token == revoked, close::UNAUTHORIZED, &error);
        assert_eq!(n, 1);
        assert_eq!(a.close_requested(), Some(close::UNAUTHORIZED));
        assert_eq!(b.close_requested(), None);
        assert_eq!(anon.close_requested(), None, "unauthenticated: no match");
        let mut got = Vec::new();
        assert_eq!(
            a_rx.wait(&mut got, 8).await,
            Wake::Close(close::UNAUTHORIZED)
        );
        assert_eq!(
            a_rx.take_last_words(),
            Some(WsMessage::Text(error.to_json().into()))
        );
        assert!(!b_rx.take(&mut got, 8));
        // Closing again matches, but the first close stands.
        assert_eq!(
            registry.close_where(|s| &*s.user == "alice", close::NORMAL, &error),
            0
        );
    }

    #[test]
    fn close_expired_uses_the_leeway_and_skips_until_the_earliest_exp() {
        let registry = Registry::default();
        let (a, _a_rx) = outbox(8);
        let (b, _b_rx) = outbox(8);
        let a_id = registry.register(a.clone());
        let b_id = registry.register(b.clone());
        registry.authenticate(a_id, auth("alice", "t1", 100));
        registry.authenticate(b_id, auth("bob", "t2", 200));
        assert_eq!(registry.close_expired(104, 5), 0);
        assert_eq!(registry.close_expired(105, 5), 1);
        assert_eq!(a.close_requested(), Some(close::UNAUTHORIZED));
        assert_eq!(registry.earliest_exp.load(Ordering::Relaxed), 200);
        // Bob re-authenticates with a later token: not expired at 205.
        registry.authenticate(b_id, auth("bob", "t3", 300));
        assert_eq!(registry.close_expired(205, 5), 0);
        assert_eq!(b.close_requested(), None);
        assert_eq!(registry.close_expired(305, 5), 1);
    }

    #[test]
    fn token_ids_are_sha256_of_the_trimmed_token() {
        assert_eq!(
            TokenId::of("abc").to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(TokenId::of(" abc "), TokenId::of("abc"));
    }
}
