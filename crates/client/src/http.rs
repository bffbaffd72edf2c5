//! The REST side of the protocol, over plain HTTP/1.1 (one connection per call).

use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::body::Bytes;
use parley_protocol::rest::{
    AddMember, AuthReply, BansPage, CreateRoom, Credentials, ErrorBody, MembersPage, MessagesPage,
    NewBan, PatchRoom, PostMessage, RoomInfo, SearchPage, SetRole,
};
use parley_protocol::{Message, Role, RoomEvent};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::TcpStream;

use crate::{ClientError, Result};

/// A response: status and body.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub body: Bytes,
    pub headers: hyper::HeaderMap,
}

impl Response {
    pub fn json<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_slice(&self.body)
            .map_err(|e| ClientError::Protocol(format!("bad JSON body: {e}")))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Turns a non-2xx response into [`ClientError::Http`].
    pub fn ok(self) -> Result<Self> {
        if (200..300).contains(&self.status) {
            return Ok(self);
        }
        let (code, message) = match serde_json::from_slice::<ErrorBody>(&self.body) {
            Ok(b) => (Some(b.error.code), b.error.message),
            Err(_) => (None, self.text()),
        };
        Err(ClientError::Http {
            status: self.status,
            code,
            message,
        })
    }
}

/// Sends one request to `base` (`http://host:port`).
pub async fn request(
    base: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Vec<u8>>,
) -> Result<Response> {
    let authority = base
        .strip_prefix("http://")
        .ok_or_else(|| ClientError::Connect {
            url: base.into(),
            message: "only http:// URLs are supported".into(),
        })?
        .trim_end_matches('/');
    let stream = TcpStream::connect(authority)
        .await
        .map_err(|e| ClientError::Connect {
            url: base.into(),
            message: e.to_string(),
        })?;
    let io = hyper_util::rt::TokioIo::new(stream);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| ClientError::Connect {
            url: base.into(),
            message: e.to_string(),
        })?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header("host", authority);
    if let Some(token) = token {
        builder = builder.header("authorization", format!("Bearer {token}"));
    }
    if body.is_some() {
        builder = builder.header("content-type", "application/json");
    }
    let req = builder
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .map_err(|e| ClientError::Protocol(e.to_string()))?;
    let res = sender
        .send_request(req)
        .await
        .map_err(|e| ClientError::Request(e.to_string()))?;
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let body = res
        .into_body()
        .collect()
        .await
        .map_err(|e| ClientError::Request(e.to_string()))?
        .to_bytes();
    Ok(Response {
        status,
        body,
        headers,
    })
}

async fn json_call<B: Serialize, T: DeserializeOwned>(
    base: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&B>,
) -> Result<T> {
    let body = body.map(|b| serde_json::to_vec(b).unwrap_or_default());
    request(base, method, path, token, body).await?.ok()?.json()
}

pub async fn register(base: &str, username: &str, password: &str) -> Result<AuthReply> {
    let creds = Credentials {
        username: username.into(),
        password: password.into(),
    };
    json_call(base, "POST", "/api/auth/register", None, Some(&creds)).await
}

pub async fn login(base: &str, username: &str, password: &str) -> Result<AuthReply> {
    let creds = Credentials {
        username: username.into(),
        password: password.into(),
    };
    json_call(base, "POST", "/api/auth/login", None, Some(&creds)).await
}

pub async fn rooms(base: &str, token: &str) -> Result<Vec<RoomInfo>> {
    json_call::<(), _>(base, "GET", "/api/rooms", Some(token), None).await
}

/// `GET /api/rooms/{room}/messages` with optional `before`, `after`, `limit`.
pub async fn messages(
    base: &str,
    token: &str,
    room: &str,
    before: Option<u64>,
    after: Option<u64>,
    limit: Option<u32>,
) -> Result<MessagesPage> {
    let mut query = Vec::new();
    if let Some(b) = before {
        query.push(format!("before={b}"));
    }
    if let Some(a) = after {
        query.push(format!("after={a}"));
    }
    if let Some(l) = limit {
        query.push(format!("limit={l}"));
    }
    let path = format!(
        "/api/rooms/{}/messages?{}",
        encode_path(room),
        query.join("&")
    );
    json_call::<(), _>(base, "GET", &path, Some(token), None).await
}

/// `GET /api/search`: messages whose current text holds every word of
/// `q`, newest first, over the rooms the caller may read; `room` narrows it
/// to one room, `before` is the `next` of the previous page.
pub async fn search(
    base: &str,
    token: &str,
    q: &str,
    room: Option<&str>,
    limit: Option<u32>,
    before: Option<&str>,
) -> Result<SearchPage> {
    let mut query = vec![format!("q={}", encode_path(q))];
    if let Some(r) = room {
        query.push(format!("room={}", encode_path(r)));
    }
    if let Some(l) = limit {
        query.push(format!("limit={l}"));
    }
    if let Some(b) = before {
        query.push(format!("before={}", encode_path(b)));
    }
    let path = format!("/api/search?{}", query.join("&"));
    json_call::<(), _>(base, "GET", &path, Some(token), None).await
}

pub async fn post_message(
    base: &str,
    token: &str,
    room: &str,
    text: &str,
    nonce: Option<&str>,
) -> Result<Message> {
    let body = PostMessage {
        text: text.into(),
        nonce: nonce.map(Into::into),
    };
    json_call(
        base,
        "POST",
        &format!("/api/rooms/{}/messages", encode_path(room)),
        Some(token),
        Some(&body),
    )
    .await
}

/// `POST /api/rooms`: creates `room`, owned by the caller (409 if it
/// exists); `topic` and `private` as given.
pub async fn create_room(
    base: &str,
    token: &str,
    room: &str,
    topic: Option<&str>,
    private: bool,
) -> Result<RoomInfo> {
    let body = CreateRoom {
        room: room.into(),
        topic: topic.map(Into::into),
        private: private.then_some(true),
    };
    json_call(base, "POST", "/api/rooms", Some(token), Some(&body)).await
}

/// `PATCH /api/rooms/{room}`: sets the topic (`""` clears it; owners and
/// moderators). Returns the stored `topic` event.
pub async fn set_topic(base: &str, token: &str, room: &str, topic: &str) -> Result<RoomEvent> {
    let body = PatchRoom {
        topic: topic.into(),
    };
    json_call(
        base,
        "PATCH",
        &format!("/api/rooms/{}", encode_path(room)),
        Some(token),
        Some(&body),
    )
    .await
}

/// `GET /api/rooms/{room}/members`: the members with their roles.
pub async fn members(base: &str, token: &str, room: &str) -> Result<MembersPage> {
    json_call::<(), _>(base, "GET", &members_path(room, None), Some(token), None).await
}

/// `POST /api/rooms/{room}/members`: adds `user` (owners and moderators;
/// how a private room lets someone in). Returns the stored `member` event.
pub async fn add_member(base: &str, token: &str, room: &str, user: &str) -> Result<RoomEvent> {
    let body = AddMember { user: user.into() };
    json_call(
        base,
        "POST",
        &members_path(room, None),
        Some(token),
        Some(&body),
    )
    .await
}

/// `PUT /api/rooms/{room}/members/{user}`: gives `user` a role (owners).
/// Returns the stored `member` event.
pub async fn set_role(
    base: &str,
    token: &str,
    room: &str,
    user: &str,
    role: Role,
) -> Result<RoomEvent> {
    let body = SetRole { role };
    json_call(
        base,
        "PUT",
        &members_path(room, Some(user)),
        Some(token),
        Some(&body),
    )
    .await
}

/// `DELETE /api/rooms/{room}/members/{user}`: kicks `user` (owners and
/// moderators), or, when `user` is the caller, parts. Every connection of
/// `user` gets `left`. Returns the stored `member` event.
pub async fn remove_member(base: &str, token: &str, room: &str, user: &str) -> Result<RoomEvent> {
    json_call::<(), _>(
        base,
        "DELETE",
        &members_path(room, Some(user)),
        Some(token),
        None,
    )
    .await
}

/// `GET /api/rooms/{room}/bans` (owners and moderators).
pub async fn bans(base: &str, token: &str, room: &str) -> Result<BansPage> {
    json_call::<(), _>(base, "GET", &bans_path(room, None), Some(token), None).await
}

/// `POST /api/rooms/{room}/bans`: bans `user` (owners and moderators): out
/// of the room, and kept out until unbanned. Returns the stored `member`
/// event.
pub async fn ban(
    base: &str,
    token: &str,
    room: &str,
    user: &str,
    reason: Option<&str>,
) -> Result<RoomEvent> {
    let body = NewBan {
        user: user.into(),
        reason: reason.map(Into::into),
    };
    json_call(
        base,
        "POST",
        &bans_path(room, None),
        Some(token),
        Some(&body),
    )
    .await
}

/// `DELETE /api/rooms/{room}/bans/{user}`: lifts a ban. Returns the stored
/// `member` event.
pub async fn unban(base: &str, token: &str, room: &str, user: &str) -> Result<RoomEvent> {
    json_call::<(), _>(
        base,
        "DELETE",
        &bans_path(room, Some(user)),
        Some(token),
        None,
    )
    .await
}

fn members_path(room: &str, user: Option<&str>) -> String {
    sub_path(room, "members", user)
}

fn bans_path(room: &str, user: Option<&str>) -> String {
    sub_path(room, "bans", user)
}

/// `/api/rooms/{room}/{what}` or `/api/rooms/{room}/{what}/{user}`.
fn sub_path(room: &str, what: &str, user: Option<&str>) -> String {
    let mut path = format!("/api/rooms/{}/{what}", encode_path(room));
    if let Some(user) = user {
        path.push('/');
        path.push_str(&encode_path(user));
    }
    path
}

/// Percent-encodes a path segment (room names may hold `:`).
pub fn encode_path(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_and_ban_paths_encode_their_segments() {
        assert_eq!(members_path("plans", None), "/api/rooms/plans/members");
        assert_eq!(
            members_path("dm:a:b", Some("Bob.B")),
            "/api/rooms/dm%3Aa%3Ab/members/Bob.B"
        );
        assert_eq!(
            bans_path("plans", Some("carol")),
            "/api/rooms/plans/bans/carol"
        );
    }

    #[test]
    fn moderation_bodies_are_the_protocol_bodies() {
        let create = CreateRoom {
            room: "plans".into(),
            topic: None,
            private: Some(true),
        };
        assert_eq!(
            serde_json::to_string(&create).unwrap(),
            r#"{"room":"plans","private":true}"#
        );
        let role = SetRole {
            role: Role::Moderator,
        };
        assert_eq!(
            serde_json::to_string(&role).unwrap(),
            r#"{"role":"moderator"}"#
        );
        let ban = NewBan {
            user: "carol".into(),
            reason: None,
        };
        assert_eq!(serde_json::to_string(&ban).unwrap(), r#"{"user":"carol"}"#);
    }
}
