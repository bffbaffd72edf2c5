//! What a node knows, in memory, to verify a token without asking the store:
//! revoked tokens, users whose tokens were revoked up to a time (logout-all,
//! a password change) or who are disabled, and the registered spelling of
//! names.
//!
//! The store is the truth. Every node loads all of it when it starts, then
//! reads what changed every `PARLEY_REVOCATION_REFRESH` (one query per node,
//! [`crate::store::Store::auth_changes`]; see [`super::watch`]); the node
//! that revokes applies its own change at once. So a revocation is refused
//! everywhere within a refresh period plus a query.
//!
//! Pure data, no I/O: [`Revocations::apply`] takes what the store said and
//! returns the [`Delta`] whose live sessions must be closed.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::store::AuthChanges;

/// A token's identity: the SHA-256 of its text (surrounding whitespace
/// trimmed), as the session registry keeps it
/// ([`crate::session::TokenId`]) and the store keeps revocations (hex).
pub type TokenDigest = [u8; 32];

/// The digest of a token as presented.
pub fn digest(token: &str) -> TokenDigest {
    Sha256::digest(token.trim().as_bytes()).into()
}

/// Lowercase hex of a digest (how the store keeps it).
pub fn to_hex(digest: &TokenDigest) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// A digest from its hex form; `None` if it is not 64 hex digits.
pub fn from_hex(hex: &str) -> Option<TokenDigest> {
    let bytes = hex.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks(2).enumerate() {
        let text = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(text, 16).ok()?;
    }
    Some(out)
}

/// What is known of one user (by case-folded name).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UserState {
    /// Tokens issued (`iat`) before this (Unix seconds) are revoked; 0: none.
    pub tokens_after_s: i64,
    /// Every token of the user is refused, and login too.
    pub disabled: bool,
}

impl UserState {
    /// Why a token issued at `iat` (none: unknown, so before anything) is
    /// refused, if it is.
    pub fn refuses(&self, iat: Option<i64>) -> Option<Refusal> {
        if self.disabled {
            Some(Refusal::Disabled)
        } else if self.tokens_after_s > 0 && iat.is_none_or(|iat| iat < self.tokens_after_s) {
            Some(Refusal::Revoked)
        } else {
            None
        }
    }
}

/// Why a valid token is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Logged out (this token, or all of the user's), or a password change.
    Revoked,
    /// The user is disabled.
    Disabled,
}

impl Refusal {
    /// What the client is told.
    pub fn message(self) -> &'static str {
        match self {
            Refusal::Revoked => "token has been revoked; log in again",
            Refusal::Disabled => "this account is disabled",
        }
    }
}

/// What changed: the sessions to look at again.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delta {
    /// Tokens revoked.
    pub tokens: HashSet<TokenDigest>,
    /// Users (case-folded) whose state changed.
    pub users: HashSet<String>,
}

impl Delta {
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty() && self.users.is_empty()
    }
}

/// The node's copy of the store's revocations.
#[derive(Debug, Default)]
pub struct Revocations {
    /// Revoked tokens, with their `exp` (forgotten once expired anyway).
    tokens: HashMap<TokenDigest, i64>,
    users: HashMap<String, UserState>,
    /// Registered names seen (by case-folded name), with their spelling.
    names: HashMap<String, Arc<str>>,
    /// Names known not to be registered, by [`name_hash`]: 8 bytes each, as
    /// a load test's 100,000 token-only users all land here. Names in
    /// neither are looked up in the store once
    /// ([`super::Auth::verify_claims`]).
    unregistered: HashSet<u64>,
}

/// Most names remembered of either kind; past it, what was learned is
/// forgotten (and looked up again when needed).
const MAX_NAMES: usize = 1_000_000;

/// A name's hash in [`Revocations::unregistered`] (fixed keys: the same in
/// every run; a collision would only show a registered name folded).
fn name_hash(key: &str) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    BuildHasherDefault::<DefaultHasher>::default().hash_one(key)
}

impl Revocations {
    /// Applies what the store said changed; `now_s` and `leeway_s` decide
    /// which revoked tokens have expired anyway (and are forgotten).
    pub fn apply(&mut self, changes: &AuthChanges, now_s: i64, leeway_s: i64) -> Delta {
        let mut delta = Delta::default();
        for (key, name, disabled) in &changes.accounts {
            self.learned(key, Some(name));
            let state = self.users.entry(key.clone()).or_default();
            state.disabled = *disabled;
            delta.users.insert(key.clone());
        }
        for (key, after) in &changes.user_revocations {
            let state = self.users.entry(key.clone()).or_default();
            state.tokens_after_s = state.tokens_after_s.max(*after);
            delta.users.insert(key.clone());
        }
        for (hex, exp) in &changes.tokens {
            if let Some(d) = from_hex(hex) {
                self.tokens.insert(d, *exp);
                delta.tokens.insert(d);
            }
        }
        self.users.retain(|_, s| *s != UserState::default());
        let horizon = now_s.saturating_sub(leeway_s);
        self.tokens.retain(|_, exp| *exp >= horizon);
        delta
    }

    /// Revokes one token here at once (the node that logged it out).
    pub fn revoke_token(&mut self, token: TokenDigest, exp: i64) -> Delta {
        self.tokens.insert(token, exp);
        Delta {
            tokens: HashSet::from([token]),
            users: HashSet::new(),
        }
    }

    /// Revokes a user's tokens issued before `tokens_after_s` here at once.
    pub fn revoke_user(&mut self, key: &str, tokens_after_s: i64) -> Delta {
        let state = self.users.entry(key.to_string()).or_default();
        state.tokens_after_s = state.tokens_after_s.max(tokens_after_s);
        Delta {
            tokens: HashSet::new(),
            users: HashSet::from([key.to_string()]),
        }
    }

    /// Records an account as the store has it now (a login read it).
    pub fn seen_account(&mut self, key: &str, name: &str, disabled: bool, tokens_after_s: i64) {
        self.learned(key, Some(name));
        let state = self.users.entry(key.to_string()).or_default();
        state.disabled = disabled;
        state.tokens_after_s = state.tokens_after_s.max(tokens_after_s);
        if *state == UserState::default() {
            self.users.remove(key);
        }
    }

    /// Records what the store said of a name: registered as `name`, or
    /// (`None`) not registered. What a look-up found out does not overwrite
    /// a registration the refresh brought meanwhile.
    pub fn learned(&mut self, key: &str, name: Option<&str>) {
        match name {
            Some(name) => {
                if self.names.len() >= MAX_NAMES {
                    self.names.clear();
                }
                self.unregistered.remove(&name_hash(key));
                self.names.insert(key.to_string(), Arc::from(name));
            }
            None if !self.names.contains_key(key) => {
                if self.unregistered.len() >= MAX_NAMES {
                    self.unregistered.clear();
                }
                self.unregistered.insert(name_hash(key));
            }
            None => {}
        }
    }

    /// Why a token (its digest, its user's case-folded name, its `iat`) is
    /// refused, if it is.
    pub fn refuses(&self, token: &str, key: &str, iat: Option<i64>) -> Option<Refusal> {
        if !self.tokens.is_empty() && self.tokens.contains_key(&digest(token)) {
            return Some(Refusal::Revoked);
        }
        self.users.get(key).and_then(|s| s.refuses(iat))
    }

    /// Whether a live session (its token's digest, user, `iat`) must end.
    pub fn refuses_session(
        &self,
        token: &TokenDigest,
        key: &str,
        iat: Option<i64>,
    ) -> Option<Refusal> {
        if self.tokens.contains_key(token) {
            return Some(Refusal::Revoked);
        }
        self.users.get(key).and_then(|s| s.refuses(iat))
    }

    pub fn user(&self, key: &str) -> UserState {
        self.users.get(key).copied().unwrap_or_default()
    }

    /// What is known of a name: `Some(Some(spelling))` registered,
    /// `Some(None)` not registered, `None` unknown.
    pub fn name(&self, key: &str) -> Option<Option<Arc<str>>> {
        match self.names.get(key) {
            Some(name) => Some(Some(name.clone())),
            None => self.unregistered.contains(&name_hash(key)).then_some(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn changes(
        accounts: &[(&str, &str, bool)],
        users: &[(&str, i64)],
        tokens: &[(&str, i64)],
    ) -> AuthChanges {
        AuthChanges {
            now_ms: 0,
            accounts: accounts
                .iter()
                .map(|(k, n, d)| (k.to_string(), n.to_string(), *d))
                .collect(),
            user_revocations: users.iter().map(|(k, a)| (k.to_string(), *a)).collect(),
            tokens: tokens.iter().map(|(t, e)| (t.to_string(), *e)).collect(),
        }
    }

    #[test]
    fn hex_round_trips() {
        let d = digest(" abc \n");
        assert_eq!(
            to_hex(&d),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(from_hex(&to_hex(&d)), Some(d));
        assert_eq!(from_hex("xyz"), None);
        assert_eq!(from_hex(&"g".repeat(64)), None);
    }

    #[test]
    fn revoked_tokens_users_and_disabled_users_are_refused() {
        let mut r = Revocations::default();
        let t1 = to_hex(&digest("t1"));
        let delta = r.apply(
            &changes(
                &[("bob", "Bob", false), ("eve", "eve", true)],
                &[("alice", 100)],
                &[(&t1, 500)],
            ),
            0,
            30,
        );
        assert_eq!(delta.tokens, HashSet::from([digest("t1")]));
        assert_eq!(delta.users.len(), 3);
        assert_eq!(r.refuses("t1", "carol", Some(1)), Some(Refusal::Revoked));
        assert_eq!(r.refuses("t2", "carol", Some(1)), None);
        assert_eq!(r.refuses("t2", "alice", Some(99)), Some(Refusal::Revoked));
        assert_eq!(r.refuses("t2", "alice", None), Some(Refusal::Revoked));
        assert_eq!(r.refuses("t2", "alice", Some(100)), None);
        assert_eq!(r.refuses("t2", "eve", Some(1_000)), Some(Refusal::Disabled));
        assert_eq!(r.name("bob"), Some(Some(Arc::from("Bob"))));
        assert_eq!(r.name("eve"), Some(Some(Arc::from("eve"))));
        assert_eq!(r.name("zed"), None, "unknown");
        // Enabling again; tokens_after never goes back; expired tokens go.
        r.apply(
            &changes(&[("eve", "eve", false)], &[("alice", 50)], &[]),
            1_000,
            30,
        );
        assert_eq!(r.refuses("t2", "eve", Some(1)), None);
        assert_eq!(r.user("alice").tokens_after_s, 100);
        assert_eq!(r.refuses("t1", "carol", Some(1)), None, "expired anyway");
        assert!(!r.users.contains_key("eve"), "nothing left to know of eve");
    }

    #[test]
    fn local_revocations_apply_at_once() {
        let mut r = Revocations::default();
        let d = r.revoke_token(digest("t"), 10);
        assert!(d.tokens.contains(&digest("t")));
        assert_eq!(
            r.refuses_session(&digest("t"), "x", Some(1)),
            Some(Refusal::Revoked)
        );
        r.revoke_user("alice", 7);
        r.revoke_user("alice", 5);
        assert_eq!(r.user("alice").tokens_after_s, 7);
        r.learned("zed", None);
        assert_eq!(r.name("zed"), Some(None));
        r.learned("zed", Some("Zed"));
        r.learned("zed", None);
        assert_eq!(
            r.name("zed"),
            Some(Some(Arc::from("Zed"))),
            "not overwritten"
        );
    }
}
