//! REST handlers for rooms and their members (protocol 1.1 §3): the room
//! list, creating a room, its topic, members, roles and bans.
//!
//! Every change here is a room event, stored through the committer and
//! pushed to the room like a message; the handler answers with the stored
//! event. Who may do what is decided in the store's transaction
//! ([`crate::store::members`]); who may see the room, by
//! [`crate::access`]. Handlers only extract and map.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use parley_protocol::rest::{
    AddMember, BanInfo, BansPage, CreateRoom, MemberInfo, MembersPage, NewBan, PatchRoom, RoomInfo,
    SetRole,
};
use parley_protocol::{
    ErrorCode, MemberChange, Role, RoomEvent, dm_members, fold_username, is_dm_room, same_user,
};

use super::{ApiJson, AuthUser};
use crate::commit::PendingAppend;
use crate::error::ChatError;
use crate::node::Node;

/// `GET /api/rooms`: public rooms, the caller's private rooms and DMs
/// (every room for a server admin), with the caller's role and read state
/// in the rooms it belongs to.
pub async fn list(
    State(node): State<Arc<Node>>,
    AuthUser(user): AuthUser,
) -> Result<Json<Vec<RoomInfo>>, ChatError> {
    let admin = node.is_admin(&user).await?;
    let visible: Vec<_> = node
        .store
        .room_list(&fold_username(&user), admin)
        .await?
        .into_iter()
        .filter(|r| {
            !is_dm_room(&r.room)
                || dm_members(&r.room)
                    .is_some_and(|(a, b)| same_user(a, &user) || same_user(b, &user))
        })
        .collect();
    let names: Vec<String> = visible.iter().map(|r| r.room.clone()).collect();
    let online = node.hub.online_counts(&names).await;
    let read: std::collections::HashMap<String, u64> = node
        .store
        .read_positions(&fold_username(&user))
        .await?
        .into_iter()
        .collect();
    // The rooms the user belongs to carry their read state: those read to
    // their end (most of them; clients poll this list) need no count, the
    // others are counted together, in one store statement.
    let is_member = |r: &crate::store::RoomListing| r.role.is_some() || is_dm_room(&r.room);
    let read_seq = |room: &str| read.get(room).copied().unwrap_or(0);
    let behind: Vec<(String, u64)> = visible
        .iter()
        .filter(|r| is_member(r) && read_seq(&r.room) < r.last_seq)
        .map(|r| (r.room.clone(), read_seq(&r.room)))
        .collect();
    let counted = node
        .store
        .unread_many(&fold_username(&user), &behind)
        .await?;
    let mut counted: std::collections::HashMap<String, crate::store::Unread> = behind
        .into_iter()
        .map(|(room, _)| room)
        .zip(counted)
        .collect();
    let mut rooms = Vec::with_capacity(visible.len());
    for (r, members_online) in visible.into_iter().zip(online) {
        let member = is_member(&r);
        let state = match member {
            true => Some(counted.remove(&r.room).unwrap_or(crate::store::Unread {
                read_seq: read_seq(&r.room),
                ..Default::default()
            })),
            false => None,
        };
        rooms.push(RoomInfo {
            members_online,
            member: Some(member),
            read_seq: state.map(|s| s.read_seq),
            unread: state.map(|s| s.unread),
            mentions: state.map(|s| s.mentions),
            private: r.private,
            topic: Some(r.topic).filter(|t| !t.is_empty()),
            role: r.role,
            room: r.room,
            last_seq: r.last_seq,
        });
    }
    Ok(Json(rooms))
}

/// `POST /api/rooms`: creates a room owned by the caller. `409` if it exists.
pub async fn create(
    State(node): State<Arc<Node>>,
    AuthUser(user): AuthUser,
    ApiJson(body): ApiJson<CreateRoom>,
) -> Result<(StatusCode, Json<RoomInfo>), ChatError> {
    let private = body.private.unwrap_or(false);
    let topic = body.topic.unwrap_or_default();
    node.create_room(&user, &body.room, private, &topic).await?;
    tracing::info!(room = %body.room, %user, private, "room created");
    Ok((
        StatusCode::CREATED,
        Json(RoomInfo {
            room: body.room,
            members_online: 0,
            last_seq: 0,
            member: Some(true),
            read_seq: Some(0),
            unread: Some(0),
            mentions: Some(0),
            private,
            topic: Some(topic).filter(|t| !t.is_empty()),
            role: Some(Role::Owner),
        }),
    ))
}

/// Waits for a moderation event to be stored; the event, or why not.
pub(super) async fn stored(pending: PendingAppend) -> Result<Json<RoomEvent>, ChatError> {
    let outcome = pending
        .await
        .map_err(|_| ChatError::new(ErrorCode::Unavailable, "node is shutting down; retry"))??;
    Ok(Json(Node::answer(&outcome)?.to_wire()))
}

/// `PATCH /api/rooms/{room}`: sets the topic (owners and moderators).
pub async fn patch(
    State(node): State<Arc<Node>>,
    AuthUser(user): AuthUser,
    Path(room): Path<String>,
    ApiJson(body): ApiJson<PatchRoom>,
) -> Result<Json<RoomEvent>, ChatError> {
    stored(node.set_topic(&user, &room, body.topic).await?).await
}

/// `GET /api/rooms/{room}/members`: members with their roles, to whoever
/// may see the room. A DM room lists its two users.
pub async fn members(
    State(node): State<Arc<Node>>,
    AuthUser(user): AuthUser,
    Path(room): Path<String>,
) -> Result<Json<MembersPage>, ChatError> {
    node.check_read(&user, &room).await?;
    let members = match dm_members(&room) {
        Some((a, b)) => [a, b]
            .into_iter()
            .map(|u| MemberInfo {
                user: u.to_string(),
                role: Role::Member,
                since: parley_protocol::time::format_millis(0),
            })
            .collect(),
        None => node
            .store
            .members(&room)
            .await?
            .into_iter()
            .map(|m| MemberInfo {
                user: m.user,
                role: m.role,
                since: parley_protocol::time::format_millis(m.since_ms),
            })
            .collect(),
    };
    Ok(Json(MembersPage { room, members }))
}

/// `POST /api/rooms/{room}/members`: adds a member (owners and moderators).
pub async fn add_member(
    State(node): State<Arc<Node>>,
    AuthUser(user): AuthUser,
    Path(room): Path<String>,
    ApiJson(body): ApiJson<AddMember>,
) -> Result<(StatusCode, Json<RoomEvent>), ChatError> {
    let pending = node
        .moderate(&user, &room, &body.user, MemberChange::Added, None, None)
        .await?;
    Ok((StatusCode::CREATED, stored(pending).await?))
}

/// `PUT /api/rooms/{room}/members/{user}`: gives a role (owners).
pub async fn set_role(
    State(node): State<Arc<Node>>,
    AuthUser(user): AuthUser,
    Path((room, target)): Path<(String, String)>,
    ApiJson(body): ApiJson<SetRole>,
) -> Result<Json<RoomEvent>, ChatError> {
    let pending = node
        .moderate(
            &user,
            &room,
            &target,
            MemberChange::Role,
            Some(body.role),
            None,
        )
        .await?;
    stored(pending).await
}

/// `DELETE /api/rooms/{room}/members/{user}`: kicks a member (owners and
/// moderators), or parts when `user` is the caller.
pub async fn remove_member(
    State(node): State<Arc<Node>>,
    AuthUser(user): AuthUser,
    Path((room, target)): Path<(String, String)>,
) -> Result<Json<RoomEvent>, ChatError> {
    let pending = node
        .moderate(&user, &room, &target, MemberChange::Removed, None, None)
        .await?;
    stored(pending).await
}

/// `GET /api/rooms/{room}/bans`: the room's bans (owners, moderators and
/// server admins).
pub async fn bans(
    State(node): State<Arc<Node>>,
    AuthUser(user): AuthUser,
    Path(room): Path<String>,
) -> Result<Json<BansPage>, ChatError> {
    if is_dm_room(&room) {
        return Err(ChatError::bad_request("direct-message rooms have no bans"));
    }
    let allowed = node.check_read(&user, &room).await?;
    let moderator = allowed.role().is_some_and(|r| r >= Role::Moderator)
        || allowed.as_admin
        || node.is_admin(&user).await?;
    if !moderator {
        return Err(ChatError::forbidden(
            "only an owner or moderator may see the bans",
        ));
    }
    let bans = node
        .store
        .bans(&room)
        .await?
        .into_iter()
        .map(|b| BanInfo {
            user: b.user,
            by: b.by,
            reason: Some(b.reason).filter(|r| !r.is_empty()),
            ts: parley_protocol::time::format_millis(b.at_ms),
        })
        .collect();
    Ok(Json(BansPage { room, bans }))
}

/// `POST /api/rooms/{room}/bans`: bans a user (owners and moderators).
pub async fn ban(
    State(node): State<Arc<Node>>,
    AuthUser(user): AuthUser,
    Path(room): Path<String>,
    ApiJson(body): ApiJson<NewBan>,
) -> Result<(StatusCode, Json<RoomEvent>), ChatError> {
    let pending = node
        .moderate(
            &user,
            &room,
            &body.user,
            MemberChange::Banned,
            None,
            body.reason,
        )
        .await?;
    Ok((StatusCode::CREATED, stored(pending).await?))
}

/// `DELETE /api/rooms/{room}/bans/{user}`: lifts a ban.
pub async fn unban(
    State(node): State<Arc<Node>>,
    AuthUser(user): AuthUser,
    Path((room, target)): Path<(String, String)>,
) -> Result<Json<RoomEvent>, ChatError> {
    let pending = node
        .moderate(&user, &room, &target, MemberChange::Unbanned, None, None)
        .await?;
    stored(pending).await
}
