//! The server API (`/api/server/...`): what the application's backend does
//! through Parley — publish as a bot or system user, disconnect a user,
//! read a room's members, revoke a user's tokens, create users and rooms.
//!
//! **Authentication.** Every request carries one of the keys of
//! `PARLEY_API_KEYS` (comma-separated, so that keys can be rotated: all are
//! valid at once) as `Authorization: Bearer <key>` or `X-Parley-Api-Key:
//! <key>`. Keys are compared in constant time (SHA-256 of each side, then
//! every byte of every configured key is looked at) and never logged. With
//! no key configured the server API does not exist: every endpoint answers
//! `404 not_found`. A missing or wrong key is `401 unauthorized`.
//!
//! The same rules as a user's send hold for a published message (validated
//! by [`Node::validate_message`], stored through the committer, gapless,
//! idempotent with `nonce`), except the per-user rate limit
//! ([`Node::submit_unlimited`]).

use std::sync::Arc;

use axum::Json;
use axum::extract::{FromRef, FromRequestParts, Path, State};
use axum::http::{HeaderMap, StatusCode, header::AUTHORIZATION, request::Parts};
use axum::response::IntoResponse;
use parley_protocol::rest::{Credentials, NewRoom, Publish, UserInfo};
use parley_protocol::{
    ErrorCode, ServerFrame, close, fold_username, is_dm_room, same_user, valid_room,
};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::api::{check_password, check_username};
use super::{ApiJson, AppState};
use crate::auth::watch;
use crate::error::ChatError;
use crate::node::Node;

/// The header that may carry an API key instead of `Authorization`.
pub const API_KEY_HEADER: &str = "x-parley-api-key";

/// Whether `presented` is one of `keys`, in time that depends only on the
/// number of keys: each side is hashed to 32 bytes, and every configured
/// key's digest is compared byte by byte, whatever matched before.
pub fn key_matches(keys: &[String], presented: &str) -> bool {
    let presented: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
    let mut found = 0u8;
    for key in keys {
        let key: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        let diff = key
            .iter()
            .zip(presented.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        // 1 when equal, else 0, without a branch on the secret.
        found |= u8::from(diff == 0);
    }
    found == 1
}

/// The configured keys, blanks left out (`PARLEY_API_KEYS=""` or `"a,,b"`).
fn configured(node: &Node) -> Vec<String> {
    node.config
        .api_keys
        .iter()
        .map(|k| k.trim())
        .filter(|k| !k.is_empty())
        .map(str::to_string)
        .collect()
}

/// The key a request presents: `X-Parley-Api-Key`, else `Authorization: Bearer`.
fn presented(headers: &HeaderMap) -> Option<&str> {
    if let Some(value) = headers.get(API_KEY_HEADER) {
        return value.to_str().ok().map(str::trim).filter(|k| !k.is_empty());
    }
    headers.get(AUTHORIZATION)?;
    super::bearer(headers)
}

/// A request authenticated with one of `PARLEY_API_KEYS`.
pub struct ServerKey;

impl<S> FromRequestParts<S> for ServerKey
where
    Arc<Node>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ChatError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let node = Arc::<Node>::from_ref(state);
        let keys = configured(&node);
        if keys.is_empty() {
            return Err(ChatError::not_found(
                "the server API is disabled (set PARLEY_API_KEYS)",
            ));
        }
        let Some(key) = presented(&parts.headers) else {
            return Err(ChatError::unauthorized(
                "missing API key (Authorization: Bearer <key> or X-Parley-Api-Key)",
            ));
        };
        if key_matches(&keys, key) {
            Ok(ServerKey)
        } else {
            Err(ChatError::unauthorized("wrong API key"))
        }
    }
}

/// A user named in a path: a valid username.
fn path_user(user: &str) -> Result<(), ChatError> {
    check_username(user)
}

/// `POST /api/server/rooms/{room}/messages`: stores a message from `from`
/// (any valid username; a bot need not be registered) and answers like an
/// ack. The room must exist; in a DM room `from` must be one of its users.
pub async fn publish(
    State(node): State<Arc<Node>>,
    _key: ServerKey,
    Path(room): Path<String>,
    ApiJson(body): ApiJson<Publish>,
) -> Result<impl IntoResponse, ChatError> {
    check_username(&body.from).map_err(|_| {
        ChatError::bad_request("from must be a username: 1–32 characters of A–Z, a–z, 0–9, _ . -")
    })?;
    node.check_name(&body.from, &room)?;
    node.existing_room(&room).await?;
    let pending = node
        .submit_unlimited(&body.from, &room, body.text, body.nonce)
        .await?;
    let outcome = pending
        .await
        .map_err(|_| ChatError::new(ErrorCode::Unavailable, "node is shutting down; retry"))??;
    let m = Node::answer(&outcome)?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "room": m.room,
            "seq": m.seq,
            "ts": parley_protocol::time::format_millis(m.ts_ms),
        })),
    ))
}

/// `POST /api/server/users/{user}/disconnect`: closes the user's WebSocket
/// connections with `error unauthorized` and 4401 — this node's at once
/// (`closed` counts them), the other nodes' through the bus within moments.
/// Not a revocation: the user may connect again.
pub async fn disconnect(
    State(AppState { node, sessions }): State<AppState>,
    _key: ServerKey,
    Path(user): Path<String>,
) -> Result<Json<serde_json::Value>, ChatError> {
    path_user(&user)?;
    let error = ServerFrame::error(
        None,
        ErrorCode::Unauthorized,
        "disconnected by the application",
    );
    let closed = sessions.close_where(|s| same_user(&s.user, &user), close::UNAUTHORIZED, &error);
    // The other nodes (and any session of this one that authenticated
    // meanwhile) hear it from the bus.
    node.hub.disconnect_user(&user, error.to_json().into());
    tracing::info!(user = %user, sessions = closed, "disconnected by the server API");
    Ok(Json(json!({"user": user, "closed": closed})))
}

/// `GET /api/server/rooms/{room}/presence`: the room's members, fleet-wide.
pub async fn presence(
    State(node): State<Arc<Node>>,
    _key: ServerKey,
    Path(room): Path<String>,
) -> Result<Json<serde_json::Value>, ChatError> {
    check_room_name(&node, &room)?;
    node.existing_room(&room).await?;
    let members = node.hub.members(&room).await;
    Ok(Json(json!({"room": room, "members": members})))
}

/// A valid public or DM room name (no user's privacy applies here).
fn check_room_name(node: &Node, room: &str) -> Result<(), ChatError> {
    if let Some((a, _)) = parley_protocol::dm_members(room) {
        return node.check_name(a, room);
    }
    node.check_name("", room)
}

/// `POST /api/server/users/{user}/revoke`: what the user's logout-all does —
/// every token issued so far is refused, on every node, and their
/// connections closed (4401; other nodes within `PARLEY_REVOCATION_REFRESH`).
pub async fn revoke(
    State(AppState { node, sessions }): State<AppState>,
    _key: ServerKey,
    Path(user): Path<String>,
) -> Result<Json<serde_json::Value>, ChatError> {
    path_user(&user)?;
    let key = fold_username(&user);
    let after = node.store.revoke_user_tokens(&key).await?;
    let delta = node.auth.revoked_user(&key, after);
    let closed = watch::close_sessions(&node.auth, &sessions, &delta);
    tracing::info!(user = %user, "tokens revoked by the server API");
    Ok(Json(
        json!({"user": user, "tokens_after_s": after, "closed": closed}),
    ))
}

/// `POST /api/server/users`: registers an account (as register does,
/// without issuing a token).
pub async fn create_user(
    State(node): State<Arc<Node>>,
    _key: ServerKey,
    ApiJson(creds): ApiJson<Credentials>,
) -> Result<impl IntoResponse, ChatError> {
    check_username(&creds.username)?;
    check_password("password", &creds.password)?;
    let hash = crate::auth::hash_password(creds.password).await?;
    node.store.create_user(&creds.username, &hash).await?;
    node.auth.registered(&creds.username);
    tracing::info!(user = %creds.username, "user created by the server API");
    Ok((
        StatusCode::CREATED,
        Json(json!({"user": UserInfo { name: creds.username, admin: false }})),
    ))
}

/// `POST /api/server/rooms`: makes sure a public room exists. `201` when
/// it was created, `200` when it existed; both say its `last_seq`.
pub async fn create_room(
    State(node): State<Arc<Node>>,
    _key: ServerKey,
    ApiJson(body): ApiJson<NewRoom>,
) -> Result<impl IntoResponse, ChatError> {
    if !valid_room(&body.room) || is_dm_room(&body.room) {
        return Err(ChatError::bad_request(format!(
            "{:?} is not a valid room name ([a-z0-9][a-z0-9_-]{{0,63}})",
            body.room
        )));
    }
    let existed = node.store.last_seq(&body.room).await?;
    let last_seq = match existed {
        Some(seq) => seq,
        None => node.store.ensure_room(&body.room).await?,
    };
    let status = if existed.is_some() {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((
        status,
        Json(json!({"room": body.room, "last_seq": last_seq})),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_match_exactly_and_any_configured_key_works() {
        let keys = vec!["old-key".to_string(), "new-key".to_string()];
        assert!(key_matches(&keys, "old-key"));
        assert!(key_matches(&keys, "new-key"));
        assert!(!key_matches(&keys, "new-ke"));
        assert!(!key_matches(&keys, "new-key "));
        assert!(!key_matches(&keys, ""));
        assert!(!key_matches(&[], "old-key"));
    }

    #[test]
    fn a_key_comes_from_either_header() {
        let mut h = HeaderMap::new();
        assert_eq!(presented(&h), None);
        h.insert(AUTHORIZATION, "Bearer k1".parse().unwrap());
        assert_eq!(presented(&h), Some("k1"));
        h.insert(API_KEY_HEADER, "k2".parse().unwrap());
        assert_eq!(presented(&h), Some("k2"), "the dedicated header wins");
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, "Basic xyz".parse().unwrap());
        assert_eq!(presented(&h), None);
    }
}
