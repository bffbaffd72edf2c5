//! Authentication: accounts (register/login) and tokens.
//!
//! A token is an HS256 JWT whose `sub` is the username. Parley issues them on
//! register/login, and accepts any token signed with the same secret — which
//! is how an operator's own backend signs in its users without calling
//! register. Owns the secret; knows nothing about sessions or rooms. Signing
//! and verifying are `parley_protocol::token`'s, shared with every client.

pub mod password;

use std::sync::Arc;
use std::time::Duration;

use parley_protocol::time::now_s;
use parley_protocol::token::{self, Claims};
use parley_protocol::valid_username;

use crate::error::ChatError;
use crate::store::{Store, StoreError};

/// Key of the generated secret in the store's settings.
const SECRET_SETTING: &str = "jwt_secret";

/// Clock skew tolerated between the operator's backend and this node.
pub const LEEWAY_S: i64 = 30;

#[derive(Clone)]
pub struct Auth {
    secret: Arc<[u8]>,
    ttl: Duration,
}

impl Auth {
    pub fn new(secret: &[u8], ttl: Duration) -> Self {
        Self {
            secret: Arc::from(secret),
            ttl,
        }
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
        token::sign(&self.secret, &Claims::issued(user, now_s(), self.ttl))
    }

    /// The username a token speaks for.
    pub fn verify(&self, token: &str) -> Result<String, ChatError> {
        let claims = token::verify(&self.secret, token.trim(), now_s(), LEEWAY_S)
            .map_err(|e| ChatError::unauthorized(e.to_string()))?;
        if !valid_username(&claims.sub) {
            return Err(ChatError::unauthorized(
                "token subject is not a valid username",
            ));
        }
        Ok(claims.sub)
    }
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

    #[test]
    fn issues_tokens_it_accepts() {
        let auth = Auth::new(b"k", Duration::from_secs(60));
        assert_eq!(auth.verify(&auth.issue("alice")).unwrap(), "alice");
        let other = Auth::new(b"other", Duration::from_secs(60));
        assert_eq!(
            other.verify(&auth.issue("alice")).unwrap_err().code,
            parley_protocol::ErrorCode::Unauthorized
        );
    }

    #[test]
    fn rejects_invalid_subjects() {
        let auth = Auth::new(b"k", Duration::from_secs(60));
        let t = token::sign(b"k", &Claims::new("no spaces allowed", now_s() + 60));
        assert!(auth.verify(&t).is_err());
    }
}
