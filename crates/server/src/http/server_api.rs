//! The server API (`/api/server/...`): what the application's backend does
//! through Parley — publish as a bot or system user, disconnect a user,
//! read a room's members, revoke a user's tokens, create users and rooms,
//! and manage who is a member of a room (with which role) and who is
//! banned from it.
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
use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRef, FromRequestParts, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header::AUTHORIZATION, request::Parts};
use axum::response::IntoResponse;
use parley_protocol::rest::{
    APP_ACTOR, AppBan, AppMember, Credentials, NewRoom, Publish, UserInfo,
};
use parley_protocol::{
    ErrorCode, MemberChange, Role, RoomEvent, ServerFrame, close, fold_username, is_dm_room,
    same_user, valid_room,
};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::api::{check_password, check_username};
use super::rooms::stored;
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

/// `POST /api/server/rooms`: makes sure a room exists. `201` when it was
/// created, `200` when it existed (and is left as it was); both say its
/// `last_seq`, whether it is `private`, and its `topic`. With `owner`, a
/// room created now is owned by that user (registered or not) and may be
/// `private` with a `topic`; without, it is public and ownerless, as a
/// first join of version 1 made it.
pub async fn create_room(
    State(node): State<Arc<Node>>,
    _key: ServerKey,
    ApiJson(body): ApiJson<NewRoom>,
) -> Result<impl IntoResponse, ChatError> {
    check_managed_room(&body.room)?;
    let private = body.private.unwrap_or(false);
    let topic = body.topic.unwrap_or_default();
    let owner = match &body.owner {
        Some(owner) => Some(node.member_name(owner).await?),
        None if private || !topic.is_empty() => {
            return Err(ChatError::bad_request(
                "a private room or a topic needs an owner (\"owner\": a username)",
            ));
        }
        None => None,
    };
    let mut created = false;
    if node.store.last_seq(&body.room).await?.is_none() {
        created = match &owner {
            Some(owner) => match node.create_room(owner, &body.room, private, &topic).await {
                Ok(()) => true,
                // Another request created it first: it exists.
                Err(e) if e.code == ErrorCode::Conflict => false,
                Err(e) => return Err(e),
            },
            None => {
                node.store.ensure_room(&body.room).await?;
                true
            }
        };
        if created {
            tracing::info!(room = %body.room, owner = ?owner, private, "room created by the server API");
        }
    }
    let access = node.store.access(&body.room, "").await?;
    let last_seq = node.store.last_seq(&body.room).await?.unwrap_or(0);
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let mut room = json!({"room": body.room, "last_seq": last_seq, "private": access.private});
    if !access.topic.is_empty() {
        room["topic"] = json!(access.topic);
    }
    Ok((status, Json(room)))
}

/// A room with members and roles: a valid room name, not a DM's.
fn check_managed_room(room: &str) -> Result<(), ChatError> {
    if valid_room(room) && !is_dm_room(room) {
        return Ok(());
    }
    Err(ChatError::bad_request(format!(
        "{room:?} is not a valid room name ([a-z0-9][a-z0-9_-]{{0,63}})"
    )))
}

/// Whom the log names for a membership change (`by`, else [`APP_ACTOR`]).
fn actor(by: Option<&str>) -> Result<&str, ChatError> {
    let by = by.unwrap_or(APP_ACTOR);
    check_username(by).map_err(|_| {
        ChatError::bad_request("by must be a username: 1–32 characters of A–Z, a–z, 0–9, _ . -")
    })?;
    Ok(by)
}

/// `PUT /api/server/rooms/{room}/members/{user}`: makes `user` a member of
/// `room` with `role` (default `member`): an `added` event if they were
/// not a member, a `role` event if their role differs — none if both hold
/// already. `201` when added, else `200`; the events it stored. The room's
/// rules hold as for a server admin: a banned user is not added (`409`),
/// the last owner keeps the role.
pub async fn put_member(
    State(node): State<Arc<Node>>,
    _key: ServerKey,
    Path((room, user)): Path<(String, String)>,
    ApiJson(body): ApiJson<AppMember>,
) -> Result<impl IntoResponse, ChatError> {
    path_user(&user)?;
    check_managed_room(&room)?;
    let by = actor(body.by.as_deref())?;
    node.existing_room(&room).await?;
    let want = body.role.unwrap_or(Role::Member);
    let had = node.store.access(&room, &fold_username(&user)).await?.role;
    let mut events = Vec::new();
    if had.is_none() {
        let added = node
            .moderate_as_app(by, &room, &user, MemberChange::Added, None, None)
            .await?;
        events.push(stored(added).await?.0);
    }
    if had.unwrap_or(Role::Member) != want {
        let role = node
            .moderate_as_app(by, &room, &user, MemberChange::Role, Some(want), None)
            .await?;
        events.push(stored(role).await?.0);
    }
    let status = match had {
        None => StatusCode::CREATED,
        Some(_) => StatusCode::OK,
    };
    Ok((
        status,
        Json(json!({"room": room, "user": user, "role": want, "events": events})),
    ))
}

/// The query of the server API's DELETEs of a member or a ban.
#[derive(Debug, Deserialize)]
pub struct ByQuery {
    by: Option<String>,
}

/// A DELETE of the server API: `change` (a removal, an unban) of `user` in
/// `room`, as `?by=`; the stored `member` event.
async fn undo(
    node: &Node,
    room: &str,
    user: &str,
    query: Result<Query<ByQuery>, QueryRejection>,
    change: MemberChange,
) -> Result<Json<RoomEvent>, ChatError> {
    let Query(q) = query.map_err(|e| ChatError::bad_request(e.body_text()))?;
    path_user(user)?;
    check_managed_room(room)?;
    let by = actor(q.by.as_deref())?;
    node.existing_room(room).await?;
    let pending = node
        .moderate_as_app(by, room, user, change, None, None)
        .await?;
    stored(pending).await
}

/// `DELETE /api/server/rooms/{room}/members/{user}?by=NAME`: removes a
/// member (their connections get `left` with reason `kicked`); the stored
/// `member` event. Not a member: `404`; an owner: `403` (make them a
/// member first).
pub async fn remove_member(
    State(node): State<Arc<Node>>,
    _key: ServerKey,
    Path((room, user)): Path<(String, String)>,
    query: Result<Query<ByQuery>, QueryRejection>,
) -> Result<Json<RoomEvent>, ChatError> {
    undo(&node, &room, &user, query, MemberChange::Removed).await
}

/// `POST /api/server/rooms/{room}/bans`: bans `user` (a trust-and-safety
/// backend's decision): out of the room at once on every node (`left` with
/// reason `banned`), and kept out until unbanned. `201` and the stored
/// `member` event. An owner: `403`; banned already: `409`.
pub async fn ban(
    State(node): State<Arc<Node>>,
    _key: ServerKey,
    Path(room): Path<String>,
    ApiJson(body): ApiJson<AppBan>,
) -> Result<(StatusCode, Json<RoomEvent>), ChatError> {
    path_user(&body.user)?;
    check_managed_room(&room)?;
    let by = actor(body.by.as_deref())?;
    node.existing_room(&room).await?;
    let pending = node
        .moderate_as_app(
            by,
            &room,
            &body.user,
            MemberChange::Banned,
            None,
            body.reason,
        )
        .await?;
    Ok((StatusCode::CREATED, stored(pending).await?))
}

/// `DELETE /api/server/rooms/{room}/bans/{user}?by=NAME`: lifts a ban; the
/// stored `member` event. Not banned: `404`.
pub async fn unban(
    State(node): State<Arc<Node>>,
    _key: ServerKey,
    Path((room, user)): Path<(String, String)>,
    query: Result<Query<ByQuery>, QueryRejection>,
) -> Result<Json<RoomEvent>, ChatError> {
    undo(&node, &room, &user, query, MemberChange::Unbanned).await
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
