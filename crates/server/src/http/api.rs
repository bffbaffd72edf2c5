//! REST handlers under `/api`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use parley_protocol::rest::{
    AuthReply, Credentials, MessagesPage, PostMessage, RoomInfo, UserInfo,
};
use parley_protocol::{ErrorCode, dm_members, is_dm_room, valid_username};
use serde::Deserialize;

use super::{ApiJson, AuthUser};
use crate::error::ChatError;
use crate::node::Node;

const MIN_PASSWORD: usize = 8;
const MAX_PASSWORD: usize = 256;

fn check_credentials(c: &Credentials) -> Result<(), ChatError> {
    if !valid_username(&c.username) {
        return Err(ChatError::bad_request(
            "username must be 1–32 characters of A–Z, a–z, 0–9, _ . -",
        ));
    }
    if !(MIN_PASSWORD..=MAX_PASSWORD).contains(&c.password.len()) {
        return Err(ChatError::bad_request(format!(
            "password must be {MIN_PASSWORD}–{MAX_PASSWORD} bytes"
        )));
    }
    Ok(())
}

pub async fn register(
    State(node): State<Arc<Node>>,
    ApiJson(creds): ApiJson<Credentials>,
) -> Result<impl IntoResponse, ChatError> {
    check_credentials(&creds)?;
    let hash = crate::auth::hash_password(creds.password).await?;
    node.store.create_user(&creds.username, &hash).await?;
    tracing::info!(user = %creds.username, "user registered");
    let reply = AuthReply {
        token: node.auth.issue(&creds.username),
        user: UserInfo {
            name: creds.username,
        },
    };
    Ok((StatusCode::CREATED, Json(reply)))
}

pub async fn login(
    State(node): State<Arc<Node>>,
    ApiJson(creds): ApiJson<Credentials>,
) -> Result<Json<AuthReply>, ChatError> {
    if !valid_username(&creds.username) || creds.password.len() > MAX_PASSWORD {
        return Err(ChatError::unauthorized("wrong username or password"));
    }
    let stored = node.store.password_hash(&creds.username).await?;
    if !crate::auth::verify_password(creds.password, stored).await {
        return Err(ChatError::unauthorized("wrong username or password"));
    }
    Ok(Json(AuthReply {
        token: node.auth.issue(&creds.username),
        user: UserInfo {
            name: creds.username,
        },
    }))
}

/// Public rooms, and the DM rooms of the caller.
pub async fn rooms(
    State(node): State<Arc<Node>>,
    AuthUser(user): AuthUser,
) -> Result<Json<Vec<RoomInfo>>, ChatError> {
    let online = node.hub.online_counts();
    let rooms = node
        .store
        .rooms()
        .await?
        .into_iter()
        .filter(|(room, _)| {
            !is_dm_room(room) || dm_members(room).is_some_and(|(a, b)| a == user || b == user)
        })
        .map(|(room, last_seq)| RoomInfo {
            members_online: online.get(&room).copied().unwrap_or(0),
            room,
            last_seq,
        })
        .collect();
    Ok(Json(rooms))
}

#[derive(Debug, Deserialize)]
pub struct PageQuery {
    before: Option<u64>,
    after: Option<u64>,
    limit: Option<u32>,
}

pub async fn messages(
    State(node): State<Arc<Node>>,
    AuthUser(user): AuthUser,
    Path(room): Path<String>,
    query: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<MessagesPage>, ChatError> {
    let Query(q) = query.map_err(|e| ChatError::bad_request(e.body_text()))?;
    node.check_read(&user, &room)?;
    node.existing_room(&room).await?;
    let page = node.history(&room, q.before, q.after, q.limit).await?;
    Ok(Json(MessagesPage {
        room,
        messages: page.messages.into_iter().map(|m| m.into_wire()).collect(),
        more: page.more,
    }))
}

pub async fn post_message(
    State(node): State<Arc<Node>>,
    AuthUser(user): AuthUser,
    Path(room): Path<String>,
    ApiJson(body): ApiJson<PostMessage>,
) -> Result<impl IntoResponse, ChatError> {
    node.check_read(&user, &room)?;
    node.existing_room(&room).await?;
    let pending = node.submit(&user, &room, body.text, body.nonce).await?;
    let outcome = pending
        .await
        .map_err(|_| ChatError::new(ErrorCode::Unavailable, "node is shutting down; retry"))??;
    Ok((StatusCode::CREATED, Json(outcome.message().to_wire())))
}
