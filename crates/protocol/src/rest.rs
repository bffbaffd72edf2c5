//! Bodies of the REST API (`/api/...`).

use serde::{Deserialize, Serialize};

use crate::{ErrorCode, Role, RoomEvent};

/// `POST /api/auth/register` and `POST /api/auth/login`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

/// `POST /api/auth/password`: the current password and the new one.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PasswordChange {
    pub old: String,
    pub new: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserInfo {
    pub name: String,
    /// A server admin (protocol 1.1 §5): sees and moderates every room.
    /// Said by login and a password change, so that a client can offer an
    /// admin the tools of a room it has no role in; the server decides.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub admin: bool,
}

/// Reply to register, login and a password change.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuthReply {
    pub token: String,
    pub user: UserInfo,
}

/// One element of `GET /api/rooms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomInfo {
    pub room: String,
    pub members_online: u64,
    pub last_seq: u64,
    /// Protocol 1.1 §2, for the rooms the caller has read in (until rooms
    /// have stored members, issue 14): `member`, `read_seq`, `unread`,
    /// `mentions`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_seq: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unread: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mentions: Option<u64>,
    /// Protocol 1.1 §3: only members see a private room.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub private: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// The caller's role, in the rooms it is a member of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
}

/// `POST /api/rooms`: a room to create, owned by the caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRoom {
    pub room: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private: Option<bool>,
}

/// `PATCH /api/rooms/{room}`: the new topic (`""` clears it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchRoom {
    pub topic: String,
}

/// `POST /api/rooms/{room}/members`: the user to add.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddMember {
    pub user: String,
}

/// `PUT /api/rooms/{room}/members/{user}`: the role to give.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetRole {
    pub role: Role,
}

/// `POST /api/rooms/{room}/bans`: the user to ban, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewBan {
    pub user: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// One element of `GET /api/rooms/{room}/members`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    pub user: String,
    pub role: Role,
    /// When the user became a member (RFC 3339).
    pub since: String,
}

/// `GET /api/rooms/{room}/members`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembersPage {
    pub room: String,
    pub members: Vec<MemberInfo>,
}

/// One element of `GET /api/rooms/{room}/bans`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BanInfo {
    pub user: String,
    pub by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub ts: String,
}

/// `GET /api/rooms/{room}/bans` (owners and moderators).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BansPage {
    pub room: String,
    pub bans: Vec<BanInfo>,
}

/// `GET /api/rooms/{room}/messages`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MessagesPage {
    pub room: String,
    pub messages: Vec<RoomEvent>,
    #[serde(default)]
    pub more: bool,
}

/// One hit of `GET /api/search` (protocol 1.1 §4): a message, by its
/// current text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SearchResult {
    pub room: String,
    pub seq: u64,
    pub from: String,
    pub text: String,
    /// RFC 3339 UTC with millisecond precision, as in messages.
    pub ts: String,
}

/// `GET /api/search`: newest first; `next` is the cursor of the following
/// page (`before=`), `null` on the last one. The cursor is opaque.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SearchPage {
    pub results: Vec<SearchResult>,
    #[serde(default)]
    pub next: Option<String>,
}

/// The largest `q` of `GET /api/search`, in bytes.
pub const MAX_SEARCH_QUERY_BYTES: usize = 256;

/// `POST /api/rooms/{room}/messages`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PostMessage {
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
}

/// Every REST error: `{"error":{"code","message"}}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub code: ErrorCode,
    pub message: String,
}

/// `POST /api/server/rooms/{room}/messages`: a message the application's
/// backend publishes as `from`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Publish {
    pub from: String,
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
}

/// `POST /api/server/rooms`: a room to make sure exists. Without `owner`
/// a room created now is public and ownerless (as a first join of version 1
/// made it); with `owner` it is owned by that user, and may be `private`
/// and have a `topic` (both need an `owner`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewRoom {
    pub room: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
}

/// `PUT /api/server/rooms/{room}/members/{user}`: the role the user is to
/// have (default `member`), and whom the room's log names as having done
/// it (default [`APP_ACTOR`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppMember {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

/// `POST /api/server/rooms/{room}/bans`: the user to ban, why, and whom
/// the room's log names as having done it (default [`APP_ACTOR`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppBan {
    pub user: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

/// Whom a membership change made through the server API is recorded as
/// done by (its `member` event's `from`) when the request names no `by`.
pub const APP_ACTOR: &str = "server-api";
