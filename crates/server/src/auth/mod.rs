//! Authentication: accounts (register/login) and tokens.
//!
//! A token is an HS256 JWT whose `sub` is the username. Parley issues them on
//! register/login, and accepts any token signed with the same secret — which
//! is how an operator's own backend signs in its users without calling
//! register. Owns the secret; knows nothing about sessions or rooms (except
//! [`watch`], the one bridge that closes the sessions of revoked tokens).
//! Signing and verifying are `parley_protocol::token`'s, shared with every
//! client.
//!
//! **Who a token is.** Names are unique case-insensitively: a token's `sub`
//! is folded ([`parley_protocol::fold_username`]) to the user's key, and the
//! user is shown by the spelling they registered with — or, for a name
//! nobody registered (an operator's backend mints its users' tokens), by
//! the folded name. WebSocket and REST both take the user from
//! [`Auth::verify_claims`], so they agree.
//!
//! **Revocation.** A valid token is still refused when it was revoked
//! (logout), issued before its user's logout-all or password change, or
//! belongs to a disabled user. The node checks an in-memory copy of the
//! store's revocations ([`revocation`]), which [`watch`] keeps fresh — no
//! store round trip per request. [`throttle`] limits failed logins.

pub mod password;
pub mod revocation;
pub mod throttle;
pub mod watch;

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use parley_protocol::token::{self, Claims};
use parley_protocol::{fold_username, valid_username};

use crate::error::ChatError;
use crate::store::{AuthChanges, Store, StoreError};
use revocation::{Delta, Refusal, Revocations, TokenDigest};

/// Key of the generated secret in the store's settings.
const SECRET_SETTING: &str = "jwt_secret";

/// Clock skew tolerated between the operator's backend and this node, by
/// default (`PARLEY_TOKEN_LEEWAY`; see [`Auth::with_leeway`]).
pub const LEEWAY_S: i64 = 30;

#[derive(Clone)]
pub struct Auth {
    secret: Arc<[u8]>,
    ttl: Duration,
    leeway_s: i64,
    shared: Arc<Shared>,
    /// Where a name this node knows nothing of is looked up (once).
    store: Option<Arc<dyn Store>>,
}

/// The claims of a token this node issues.
#[derive(serde::Serialize)]
struct Issued<'a> {
    #[serde(flatten)]
    claims: &'a Claims,
    jti: &'a str,
}

/// What every clone of an [`Auth`] shares: the revocations, and the store's
/// clock.
#[derive(Default)]
struct Shared {
    revocations: RwLock<Revocations>,
    /// The store's clock minus this node's (ms), as last seen: tokens are
    /// issued by the clock their revocations are written with, so that a
    /// node whose clock runs ahead cannot issue tokens that outlive a
    /// logout-all.
    clock_offset_ms: AtomicI64,
}

impl Auth {
    pub fn new(secret: &[u8], ttl: Duration) -> Self {
        Self {
            secret: Arc::from(secret),
            ttl,
            leeway_s: LEEWAY_S,
            shared: Arc::default(),
            store: None,
        }
    }

    /// Looks up in `store` the names it does not know yet (without one, a
    /// name it does not know is shown case-folded).
    pub fn with_store(mut self, store: Arc<dyn Store>) -> Self {
        self.store = Some(store);
        self
    }

    /// Tolerates `leeway` of clock skew on `exp` and `nbf` instead of
    /// [`LEEWAY_S`] (whole seconds).
    pub fn with_leeway(mut self, leeway: Duration) -> Self {
        self.leeway_s = i64::try_from(leeway.as_secs()).unwrap_or(i64::MAX);
        self
    }

    /// The clock skew tolerated on `exp` and `nbf`, in seconds.
    pub fn leeway_s(&self) -> i64 {
        self.leeway_s
    }

    /// The configured secret, or (single node without one) the secret kept in
    /// the store, generated on first start so tokens survive a restart.
    pub async fn from_config(
        secret: Option<&str>,
        store: &dyn Store,
        ttl: Duration,
    ) -> Result<Self, StoreError> {
        match secret {
            Some(s) if !s.is_empty() => Ok(Self::new(s.as_bytes(), ttl)),
            _ => {
                let fresh = random_hex(32);
                let kept = store.setting_or_insert(SECRET_SETTING, &fresh).await?;
                if kept == fresh {
                    tracing::info!("generated a JWT secret and stored it in the database");
                }
                Ok(Self::new(kept.as_bytes(), ttl))
            }
        }
    }

    /// Issues a token for `user` valid for the configured lifetime.
    pub fn issue(&self, user: &str) -> String {
        self.issue_not_before(user, 0)
    }

    /// Issues a token for `user` whose `iat` is at least `tokens_after_s`
    /// (and the user's revocation time as this node knows it): a token
    /// issued right after a logout-all, in the same second, must not count
    /// as one issued before it.
    pub fn issue_not_before(&self, user: &str, tokens_after_s: i64) -> String {
        let known = self.revocations().user(&fold_username(user)).tokens_after_s;
        let iat = self.now_s().max(tokens_after_s).max(known);
        let claims = Claims::issued(user, iat, self.ttl);
        // A random `jti`: two tokens issued for one user in the same second
        // are different tokens, and logging one out leaves the other.
        let jti = random_hex(8);
        token::sign_payload(
            &self.secret,
            &Issued {
                claims: &claims,
                jti: &jti,
            },
        )
    }

    /// Now, by the store's clock as last seen (Unix seconds).
    pub fn now_s(&self) -> i64 {
        let offset = self.shared.clock_offset_ms.load(Ordering::Relaxed);
        parley_protocol::time::now_ms()
            .saturating_add(offset)
            .div_euclid(1000)
    }

    fn revocations(&self) -> RwLockReadGuard<'_, Revocations> {
        self.shared
            .revocations
            .read()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn revocations_mut(&self) -> RwLockWriteGuard<'_, Revocations> {
        self.shared
            .revocations
            .write()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Takes in what the store said changed ([`Store::auth_changes`]), and
    /// its clock; returns what changed, whose sessions must be looked at.
    pub fn apply(&self, changes: &AuthChanges) -> Delta {
        let local = parley_protocol::time::now_ms();
        self.shared
            .clock_offset_ms
            .store(changes.now_ms.saturating_sub(local), Ordering::Relaxed);
        self.revocations_mut()
            .apply(changes, self.now_s(), self.leeway_s)
    }

    /// This node revoked one token (logout): refused here at once.
    pub fn revoked_token(&self, token: &str, exp: i64) -> Delta {
        self.revocations_mut()
            .revoke_token(revocation::digest(token), exp)
    }

    /// This node revoked a user's tokens before `tokens_after_s`: refused
    /// here at once.
    pub fn revoked_user(&self, user_key: &str, tokens_after_s: i64) -> Delta {
        self.revocations_mut().revoke_user(user_key, tokens_after_s)
    }

    /// This node read an account from the store (a login): what it says of
    /// its name and state is known here at once.
    pub fn seen_account(&self, account: &crate::store::Account) {
        if let Some(key) = &account.key {
            self.revocations_mut().seen_account(
                key,
                &account.name,
                account.disabled,
                account.tokens_after_s,
            );
        }
    }

    /// This node registered `name`: its spelling is known here at once.
    pub fn registered(&self, name: &str) {
        self.revocations_mut()
            .learned(&fold_username(name), Some(name));
    }

    /// Why a live session — its token's digest, its user, its token's `iat`
    /// — must end now, if it must.
    pub fn refuses_session(
        &self,
        token: &TokenDigest,
        user: &str,
        iat: Option<i64>,
    ) -> Option<Refusal> {
        self.revocations()
            .refuses_session(token, &fold_username(user), iat)
    }

    /// The username a token speaks for.
    pub async fn verify(&self, token: &str) -> Result<String, ChatError> {
        self.verify_claims(token).await.map(|claims| claims.sub)
    }

    /// The claims of a valid token (`sub` a valid username): what a
    /// WebSocket session records, to be closed when the token expires.
    /// [`Auth::verify`] is this; every check belongs here.
    ///
    /// `sub` comes back as the user the token speaks for: the registered
    /// spelling of its case-folded name, or that name if nobody registered
    /// it. A revoked token, one issued before its user's logout-all, and a
    /// disabled user's are refused.
    ///
    /// Answers from memory, except for the first token of a name this node
    /// knows nothing of: that name is looked up in the store once (if the
    /// store does not answer, the folded name is shown).
    pub async fn verify_claims(&self, token: &str) -> Result<Claims, ChatError> {
        let now_s = parley_protocol::time::now_s();
        let mut claims = token::verify(&self.secret, token.trim(), now_s, self.leeway_s)
            .map_err(|e| ChatError::unauthorized(e.to_string()))?;
        if !valid_username(&claims.sub) {
            return Err(ChatError::unauthorized(
                "token subject is not a valid username",
            ));
        }
        let key = fold_username(&claims.sub);
        let known = {
            let revocations = self.revocations();
            if let Some(refusal) = revocations.refuses(token, &key, claims.iat) {
                return Err(ChatError::unauthorized(refusal.message()));
            }
            revocations.name(&key)
        };
        claims.sub = match known {
            Some(Some(name)) => name.to_string(),
            Some(None) => key,
            None => self.look_up(key).await,
        };
        Ok(claims)
    }

    /// The registered spelling of `key` as the store says, remembered; the
    /// key itself if it is not registered (or the store does not answer).
    async fn look_up(&self, key: String) -> String {
        let Some(store) = &self.store else {
            return key;
        };
        match store.account(&key).await {
            Ok(account) => {
                let name = account.map(|a| a.name);
                self.revocations_mut().learned(&key, name.as_deref());
                name.unwrap_or(key)
            }
            Err(e) => {
                tracing::debug!(error = %e, user = %key, "could not look a name up; shown folded");
                key
            }
        }
    }
}

/// Refuses to serve a store where enabled accounts have names that differ
/// only in case (from a version that told them apart): they would be one
/// user now. Says which, and how to resolve it. Logs DM rooms left under
/// names of other spellings by the migration.
pub async fn check_usernames(store: &dyn Store) -> anyhow::Result<()> {
    let groups = store.name_collisions().await?;
    if !groups.is_empty() {
        anyhow::bail!(collision_message(&groups));
    }
    let stray = store.stray_dm_rooms().await?;
    if !stray.is_empty() {
        tracing::warn!(
            rooms = ?stray,
            "DM rooms named after other spellings of their users' names could not be renamed \
             to the case-folded names (taken): they are kept, but no client can reach them"
        );
    }
    Ok(())
}

/// The error of [`check_usernames`].
pub fn collision_message(groups: &[Vec<String>]) -> String {
    let listed: Vec<String> = groups
        .iter()
        .map(|g| format!("[{}]", g.join(", ")))
        .collect();
    let example = groups
        .first()
        .and_then(|g| g.get(1))
        .map_or("NAME", String::as_str);
    format!(
        "the store holds accounts whose names differ only in case: {}. Usernames are unique \
         case-insensitively now, so each group would be one user. Keep one account of each \
         group and disable the others by their exact spelling, e.g. `parley admin user disable \
         {example}` (with the same --database-url), then start again \
         (docs/operations.md, \"Usernames that differ only in case\")",
        listed.join(", ")
    )
}

/// `n` random bytes as lowercase hex.
pub fn random_hex(n: usize) -> String {
    use rand::RngCore;
    let mut bytes = vec![0u8; n];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Hashes a password on a blocking thread.
pub async fn hash_password(password: String) -> Result<String, ChatError> {
    tokio::task::spawn_blocking(move || password::hash(&password))
        .await
        .map_err(|e| {
            ChatError::new(
                parley_protocol::ErrorCode::Internal,
                format!("hashing task failed: {e}"),
            )
        })?
        .map_err(|e| ChatError::new(parley_protocol::ErrorCode::Internal, e))
}

/// Verifies a password on a blocking thread. With no stored hash (unknown
/// user) it still does the work of a verification, so that response time does
/// not tell which usernames exist.
pub async fn verify_password(password: String, stored: Option<String>) -> bool {
    tokio::task::spawn_blocking(move || match stored {
        Some(hash) => password::verify(&password, &hash),
        None => {
            let _ = password::verify(&password, dummy_hash());
            false
        }
    })
    .await
    .unwrap_or(false)
}

fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| password::hash("parley-dummy-password").unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn issues_tokens_it_accepts() {
        let auth = Auth::new(b"k", Duration::from_secs(60));
        assert_eq!(auth.verify(&auth.issue("alice")).await.unwrap(), "alice");
        let other = Auth::new(b"other", Duration::from_secs(60));
        assert_eq!(
            other.verify(&auth.issue("alice")).await.unwrap_err().code,
            parley_protocol::ErrorCode::Unauthorized
        );
    }

    #[tokio::test]
    async fn subjects_fold_to_the_registered_spelling() {
        let auth = Auth::new(b"k", Duration::from_secs(60));
        assert_eq!(auth.verify(&auth.issue("ALICE")).await.unwrap(), "alice");
        auth.registered("Alice");
        assert_eq!(auth.verify(&auth.issue("aLiCe")).await.unwrap(), "Alice");
    }

    #[tokio::test]
    async fn revoked_tokens_are_refused() {
        let auth = Auth::new(b"k", Duration::from_secs(60));
        let (t1, t2) = (auth.issue("alice"), auth.issue("bob"));
        auth.revoked_token(&t1, parley_protocol::time::now_s() + 60);
        assert_eq!(
            auth.verify(&t1).await.unwrap_err().message,
            Refusal::Revoked.message()
        );
        assert!(auth.verify(&t2).await.is_ok());
        // logout-all: refused if issued before; a token issued after works
        // even within the same second.
        let after = auth.now_s() + 1;
        auth.revoked_user("bob", after);
        assert!(auth.verify(&t2).await.is_err());
        let t3 = auth.issue("Bob");
        assert_eq!(auth.verify(&t3).await.unwrap(), "bob");
    }

    #[tokio::test]
    async fn rejects_invalid_subjects() {
        let auth = Auth::new(b"k", Duration::from_secs(60));
        let t = token::sign(
            b"k",
            &Claims::new("no spaces allowed", parley_protocol::time::now_s() + 60),
        );
        assert!(auth.verify(&t).await.is_err());
    }
}
