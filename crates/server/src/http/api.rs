//! REST handlers under `/api`.
//!
//! Accounts (protocol-chat.md §5): register, login (throttled,
//! [`crate::auth::throttle`]), password change, logout and logout-all.
//! Names fold case: `Alice` cannot register while `alice` exists, and any
//! spelling logs in as the registered one. A revocation made here is
//! applied to this node at once (its sessions closed with 4401); the other
//! nodes read it from the store within `PARLEY_REVOCATION_REFRESH`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use parley_protocol::rest::{
    AuthReply, Credentials, MessagesPage, PasswordChange, PostMessage, SearchPage, SearchResult,
    UserInfo,
};
use parley_protocol::{ErrorCode, fold_username, valid_username};
use serde::Deserialize;

use super::{ApiJson, AppState, AuthToken, AuthUser, ClientPeer};
use crate::auth::throttle::{Refused, Throttle, client_addr};
use crate::auth::{revocation, watch};
use crate::error::ChatError;
use crate::node::Node;
use crate::store::StoreError;

pub const MIN_PASSWORD: usize = 8;
pub const MAX_PASSWORD: usize = 256;

/// A valid username: 1–32 of `[A-Za-z0-9_.-]`.
pub fn check_username(name: &str) -> Result<(), ChatError> {
    if !valid_username(name) {
        return Err(ChatError::bad_request(
            "username must be 1–32 characters of A–Z, a–z, 0–9, _ . -",
        ));
    }
    Ok(())
}

/// A valid password: 8–256 bytes a store can hold.
pub fn check_password(what: &str, password: &str) -> Result<(), ChatError> {
    if !(MIN_PASSWORD..=MAX_PASSWORD).contains(&password.len()) {
        return Err(ChatError::bad_request(format!(
            "{what} must be {MIN_PASSWORD}–{MAX_PASSWORD} bytes"
        )));
    }
    parley_protocol::text::storable(password)
        .map_err(|e| ChatError::bad_request(format!("{what} {e}")))
}

fn check_credentials(c: &Credentials) -> Result<(), ChatError> {
    check_username(&c.username)?;
    check_password("password", &c.password)
}

/// How an account request fails: an error, or throttled (429 with
/// `Retry-After`).
pub enum AuthFailure {
    Error(ChatError),
    Throttled(u64),
}

impl From<ChatError> for AuthFailure {
    fn from(e: ChatError) -> Self {
        AuthFailure::Error(e)
    }
}

impl From<StoreError> for AuthFailure {
    fn from(e: StoreError) -> Self {
        AuthFailure::Error(e.into())
    }
}

impl From<Refused> for AuthFailure {
    fn from(r: Refused) -> Self {
        match r {
            Refused::Throttled(wait) => AuthFailure::Throttled(wait),
            Refused::Error(e) => AuthFailure::Error(e),
        }
    }
}

impl IntoResponse for AuthFailure {
    fn into_response(self) -> Response {
        match self {
            AuthFailure::Error(e) => e.into_response(),
            AuthFailure::Throttled(wait) => {
                let mut response = ChatError::new(
                    ErrorCode::RateLimited,
                    format!("too many failed logins; retry in {wait} s"),
                )
                .into_response();
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(wait));
                response
            }
        }
    }
}

fn throttle(node: &Node) -> Throttle<'_> {
    Throttle {
        store: node.store.as_ref(),
        window: node.config.login_window,
    }
}

fn wrong_credentials() -> AuthFailure {
    ChatError::unauthorized("wrong username or password").into()
}

pub async fn register(
    State(node): State<Arc<Node>>,
    ApiJson(creds): ApiJson<Credentials>,
) -> Result<impl IntoResponse, ChatError> {
    check_credentials(&creds)?;
    let hash = crate::auth::hash_password(creds.password).await?;
    node.store.create_user(&creds.username, &hash).await?;
    node.auth.registered(&creds.username);
    tracing::info!(user = %creds.username, "user registered");
    let reply = AuthReply {
        token: node.auth.issue(&creds.username),
        user: UserInfo {
            name: creds.username,
            admin: false,
        },
    };
    Ok((StatusCode::CREATED, Json(reply)))
}

pub async fn login(
    State(node): State<Arc<Node>>,
    ClientPeer(peer): ClientPeer,
    headers: HeaderMap,
    ApiJson(creds): ApiJson<Credentials>,
) -> Result<Json<AuthReply>, AuthFailure> {
    if !valid_username(&creds.username) || creds.password.len() > MAX_PASSWORD {
        return Err(wrong_credentials());
    }
    let key = fold_username(&creds.username);
    let addr = client_addr(peer, &headers, node.config.trust_proxy);
    let throttle = throttle(&node);
    // From here on the attempt counts as a failure unless it succeeds.
    let attempt = throttle.begin(&key, &addr).await?;
    let account = match node.store.account(&key).await {
        Ok(account) => account,
        Err(e) => {
            // No password was checked: the attempt does not count.
            let _ = throttle.forget(attempt).await;
            return Err(e.into());
        }
    };
    let stored = account.as_ref().map(|a| a.password_hash.clone());
    let (true, Some(account)) = (
        crate::auth::verify_password(creds.password, stored).await,
        account,
    ) else {
        tracing::info!(user = %key, %addr, "failed login");
        return Err(wrong_credentials());
    };
    node.auth.seen_account(&account);
    if account.disabled {
        return Err(ChatError::forbidden("this account is disabled").into());
    }
    throttle.succeeded(&key).await?;
    Ok(Json(AuthReply {
        token: node
            .auth
            .issue_not_before(&account.name, account.tokens_after_s),
        user: UserInfo {
            admin: account.role == "admin" && !account.disabled,
            name: account.name,
        },
    }))
}

/// `POST /api/auth/password`: checks the old password (a wrong one counts
/// as a failed login), stores the new one, and revokes every token of the
/// user issued before — except the one it returns.
pub async fn change_password(
    State(AppState { node, sessions }): State<AppState>,
    ClientPeer(peer): ClientPeer,
    headers: HeaderMap,
    caller: AuthToken,
    ApiJson(body): ApiJson<PasswordChange>,
) -> Result<Json<AuthReply>, AuthFailure> {
    check_password("new password", &body.new)?;
    let key = fold_username(&caller.claims.sub);
    let addr = client_addr(peer, &headers, node.config.trust_proxy);
    let throttle = throttle(&node);
    let attempt = throttle.begin(&key, &addr).await?;
    let Some(account) = node.store.account(&key).await? else {
        throttle.forget(attempt).await?;
        return Err(ChatError::not_found(format!(
            "{} has no password to change: the name was never registered",
            caller.claims.sub
        ))
        .into());
    };
    let old_ok = body.old.len() <= MAX_PASSWORD
        && crate::auth::verify_password(body.old, Some(account.password_hash.clone())).await;
    if !old_ok {
        return Err(ChatError::forbidden("the old password is wrong").into());
    }
    throttle.succeeded(&key).await?;
    let hash = crate::auth::hash_password(body.new).await?;
    let after = node
        .store
        .set_password(&account.name, &hash)
        .await?
        .ok_or_else(|| ChatError::not_found("the account no longer exists"))?;
    let delta = node.auth.revoked_user(&key, after);
    watch::close_sessions(&node.auth, &sessions, &delta);
    tracing::info!(user = %account.name, "password changed; older tokens revoked");
    Ok(Json(AuthReply {
        token: node.auth.issue_not_before(&account.name, after),
        user: UserInfo {
            admin: account.role == "admin" && !account.disabled,
            name: account.name,
        },
    }))
}

/// `POST /api/auth/logout`: revokes the token of the request.
pub async fn logout(
    State(AppState { node, sessions }): State<AppState>,
    caller: AuthToken,
) -> Result<StatusCode, ChatError> {
    let key = fold_username(&caller.claims.sub);
    let id = revocation::to_hex(&revocation::digest(&caller.token));
    node.store
        .revoke_token(&id, &key, caller.claims.exp)
        .await?;
    let delta = node.auth.revoked_token(&caller.token, caller.claims.exp);
    watch::close_sessions(&node.auth, &sessions, &delta);
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/auth/logout-all`: revokes every token of the caller's user
/// issued so far, on every node.
pub async fn logout_all(
    State(AppState { node, sessions }): State<AppState>,
    caller: AuthToken,
) -> Result<StatusCode, ChatError> {
    let key = fold_username(&caller.claims.sub);
    let after = node.store.revoke_user_tokens(&key).await?;
    let delta = node.auth.revoked_user(&key, after);
    watch::close_sessions(&node.auth, &sessions, &delta);
    tracing::info!(user = %caller.claims.sub, "logged out everywhere");
    Ok(StatusCode::NO_CONTENT)
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
    node.check_read(&user, &room).await?;
    let page = node.history(&room, q.before, q.after, q.limit).await?;
    Ok(Json(MessagesPage {
        room,
        messages: page.messages.into_iter().map(|m| m.into_wire()).collect(),
        more: page.more,
    }))
}

#[derive(Debug, Deserialize)]
pub struct SearchParams {
    q: String,
    room: Option<String>,
    before: Option<String>,
    limit: Option<u32>,
}

/// `GET /api/search`: messages by their current text, newest first, in the
/// rooms the caller may read (protocol 1.1 §4).
pub async fn search(
    State(node): State<Arc<Node>>,
    AuthUser(user): AuthUser,
    query: Result<Query<SearchParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<SearchPage>, ChatError> {
    let Query(p) = query.map_err(|e| ChatError::bad_request(e.body_text()))?;
    let page = node
        .search(&user, &p.q, p.room.as_deref(), p.before.as_deref(), p.limit)
        .await?;
    Ok(Json(SearchPage {
        results: page
            .hits
            .into_iter()
            .map(|h| SearchResult {
                ts: parley_protocol::time::format_millis(h.ts_ms),
                room: h.room,
                seq: h.seq,
                from: h.from,
                text: h.text,
            })
            .collect(),
        next: page.next,
    }))
}

pub async fn post_message(
    State(node): State<Arc<Node>>,
    AuthUser(user): AuthUser,
    Path(room): Path<String>,
    ApiJson(body): ApiJson<PostMessage>,
) -> Result<impl IntoResponse, ChatError> {
    node.check_read(&user, &room).await?;
    let pending = node.submit(&user, &room, body.text, body.nonce).await?;
    let outcome = pending
        .await
        .map_err(|_| ChatError::new(ErrorCode::Unavailable, "node is shutting down; retry"))??;
    Ok((StatusCode::CREATED, Json(Node::answer(&outcome)?.to_wire())))
}
