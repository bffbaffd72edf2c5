//! Parley wire protocol, version 1.
//!
//! This crate owns the *shape* of everything that crosses the wire between a
//! Parley node and its clients: WebSocket frames ([`ClientFrame`],
//! [`ServerFrame`]), REST bodies ([`rest`]), error and close codes, the naming
//! rules for users and rooms, and the HS256 tokens clients present
//! ([`token`]). It performs no I/O and knows nothing about storage or
//! delivery; the server, the client library, the CLI and the load tester all
//! depend on it so that they cannot drift apart.
//!
//! The contract itself is written up in `docs/protocol.md`.

pub mod backoff;
pub mod close;
pub mod names;
pub mod object;
pub mod rest;
pub mod text;
pub mod time;
pub mod token;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use close::{ClientAction, CloseCode};
pub use names::{
    dm_members, dm_room, fold_username, is_dm_room, mentions, same_user, valid_room, valid_username,
};

/// The error codes of `{"type":"error"}` frames and of REST error bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    Conflict,
    TooLarge,
    RateLimited,
    /// Storage is down: the message was NOT stored; retry later.
    Unavailable,
    Internal,
}

impl ErrorCode {
    /// The HTTP status that carries this code on the REST API.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::BadRequest => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::Conflict => 409,
            ErrorCode::TooLarge => 413,
            ErrorCode::RateLimited => 429,
            ErrorCode::Unavailable => 503,
            ErrorCode::Internal => 500,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Conflict => "conflict",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A stored chat message: the payload of a `message` push and an element of
/// every history list. On the wire it always carries `"type":"message"`
/// (the tag of [`ServerFrame::Message`] and [`RoomEvent::Message`]).
///
/// A push carries the message as sent. In a history list it shows the
/// message's state as of the read (protocol 1.1): the latest `text` (`""`
/// once deleted), `edited`, `deleted` and `reactions`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub room: String,
    /// Per-room sequence number assigned by the store: 1, 2, 3, … with no gap.
    pub seq: u64,
    pub from: String,
    pub text: String,
    /// RFC 3339 UTC with millisecond precision.
    pub ts: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    /// The seq of the message of the same room this one answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<u64>,
    /// History only: the ts of the last edit (absent if never edited).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edited: Option<String>,
    /// History only: true once deleted (then `text` is `""`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
    /// History only: emoji → the users who reacted with it, sorted.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub reactions: BTreeMap<String, Vec<String>>,
}

/// An `edited` event: `from` replaced the text of message `target`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Edited {
    pub room: String,
    pub seq: u64,
    pub from: String,
    pub target: u64,
    pub text: String,
    pub ts: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
}

/// A `deleted` event: `from` deleted message `target`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deleted {
    pub room: String,
    pub seq: u64,
    pub from: String,
    pub target: u64,
    pub ts: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
}

/// A `reaction` event: `from` added (`on`) or removed `emoji` on `target`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reaction {
    pub room: String,
    pub seq: u64,
    pub from: String,
    pub target: u64,
    pub emoji: String,
    pub on: bool,
    pub ts: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
}

/// A member's role in a room (protocol 1.1 §3), lowest first: the order
/// is the rank the moderation rules compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Member,
    Moderator,
    Owner,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Member => "member",
            Role::Moderator => "moderator",
            Role::Owner => "owner",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "member" => Some(Role::Member),
            "moderator" => Some(Role::Moderator),
            "owner" => Some(Role::Owner),
            _ => None,
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a `member` event did to its `user` (protocol 1.1 §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberChange {
    /// Invited by an owner or moderator.
    Added,
    /// Kicked (`from` ≠ `user`) or parted (`from` = `user`).
    Removed,
    Banned,
    Unbanned,
    /// Given `role`.
    Role,
}

impl MemberChange {
    pub fn as_str(self) -> &'static str {
        match self {
            MemberChange::Added => "added",
            MemberChange::Removed => "removed",
            MemberChange::Banned => "banned",
            MemberChange::Unbanned => "unbanned",
            MemberChange::Role => "role",
        }
    }

    pub fn parse(s: &str) -> Option<MemberChange> {
        match s {
            "added" => Some(MemberChange::Added),
            "removed" => Some(MemberChange::Removed),
            "banned" => Some(MemberChange::Banned),
            "unbanned" => Some(MemberChange::Unbanned),
            "role" => Some(MemberChange::Role),
            _ => None,
        }
    }
}

/// A `member` event: `from` changed `user`'s membership of the room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub room: String,
    pub seq: u64,
    pub from: String,
    pub user: String,
    pub change: MemberChange,
    /// The role given (`change: "role"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    /// Why, as the moderator said (bans).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub ts: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
}

/// A `topic` event: `from` set the room's topic (`""`: none).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topic {
    pub room: String,
    pub seq: u64,
    pub from: String,
    pub topic: String,
    pub ts: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
}

/// Why a connection was taken out of a room without asking (`left` push).
pub mod left_reason {
    /// An owner or moderator removed the user.
    pub const KICKED: &str = "kicked";
    /// An owner or moderator banned the user.
    pub const BANNED: &str = "banned";
    /// The user parted on another connection.
    pub const PARTED: &str = "parted";
}

/// Longest room topic, in bytes of UTF-8.
pub const MAX_TOPIC_BYTES: usize = 512;
/// Longest ban reason, in bytes of UTF-8.
pub const MAX_REASON_BYTES: usize = 512;

/// One event of a room's log (protocol 1.1 §1): every change to a room's
/// content takes the room's next `seq`. The element of history lists,
/// tagged with `type` as its push is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RoomEvent {
    Message(Message),
    Edited(Edited),
    Deleted(Deleted),
    Reaction(Reaction),
    Member(Member),
    Topic(Topic),
}

impl RoomEvent {
    pub fn seq(&self) -> u64 {
        match self {
            RoomEvent::Message(m) => m.seq,
            RoomEvent::Edited(e) => e.seq,
            RoomEvent::Deleted(e) => e.seq,
            RoomEvent::Reaction(e) => e.seq,
            RoomEvent::Member(e) => e.seq,
            RoomEvent::Topic(e) => e.seq,
        }
    }

    pub fn room(&self) -> &str {
        match self {
            RoomEvent::Message(m) => &m.room,
            RoomEvent::Edited(e) => &e.room,
            RoomEvent::Deleted(e) => &e.room,
            RoomEvent::Reaction(e) => &e.room,
            RoomEvent::Member(e) => &e.room,
            RoomEvent::Topic(e) => &e.room,
        }
    }

    /// The message, if this event is one.
    pub fn as_message(&self) -> Option<&Message> {
        match self {
            RoomEvent::Message(m) => Some(m),
            _ => None,
        }
    }

    /// The push frame of this event.
    pub fn into_frame(self) -> ServerFrame {
        match self {
            RoomEvent::Message(m) => ServerFrame::Message(m),
            RoomEvent::Edited(e) => ServerFrame::Edited(e),
            RoomEvent::Deleted(e) => ServerFrame::Deleted(e),
            RoomEvent::Reaction(e) => ServerFrame::Reaction(e),
            RoomEvent::Member(e) => ServerFrame::Member(e),
            RoomEvent::Topic(e) => ServerFrame::Topic(e),
        }
    }
}

/// The most unread messages counted per room: a room a user never read may
/// hold millions, and counting them all on every join would cost as much.
/// A client shows the cap as "999+".
pub const UNREAD_CAP: u64 = 999;

/// Longest reaction emoji, in bytes of UTF-8.
pub const MAX_EMOJI_BYTES: usize = 32;

/// A reaction's emoji: 1–32 bytes of UTF-8 without whitespace or control
/// characters (protocol 1.1 §1).
pub fn valid_emoji(emoji: &str) -> bool {
    !emoji.is_empty()
        && emoji.len() <= MAX_EMOJI_BYTES
        && !emoji.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// Frames a client sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientFrame {
    Hello {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        token: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client: Option<String>,
    },
    Join {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        room: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        since: Option<u64>,
    },
    Leave {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        room: String,
    },
    /// End one's membership of `room` (protocol 1.1 §3): every connection
    /// of the user gets `left`.
    Part {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        room: String,
    },
    Send {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        room: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        to: Option<String>,
        text: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        nonce: Option<String>,
        /// The seq of a message of the same room this one answers.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reply_to: Option<u64>,
    },
    /// Replace the text of one's own message `target` (protocol 1.1).
    Edit {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        room: String,
        target: u64,
        text: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        nonce: Option<String>,
    },
    /// Delete message `target` (its author, or a server admin).
    Delete {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        room: String,
        target: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        nonce: Option<String>,
    },
    /// Add (`on`) or remove a reaction on message `target`.
    React {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        room: String,
        target: u64,
        emoji: String,
        on: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        nonce: Option<String>,
    },
    /// Move one's read position in `room` forward to `seq` (protocol 1.1 §2).
    Read {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        room: String,
        seq: u64,
    },
    History {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        room: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        before: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<u32>,
    },
    Typing {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        room: String,
    },
    Ping {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
    },
}

impl ClientFrame {
    /// The request id, echoed as `re` in the direct reply.
    pub fn id(&self) -> Option<u64> {
        match self {
            ClientFrame::Hello { id, .. }
            | ClientFrame::Join { id, .. }
            | ClientFrame::Leave { id, .. }
            | ClientFrame::Part { id, .. }
            | ClientFrame::Send { id, .. }
            | ClientFrame::Edit { id, .. }
            | ClientFrame::Delete { id, .. }
            | ClientFrame::React { id, .. }
            | ClientFrame::Read { id, .. }
            | ClientFrame::History { id, .. }
            | ClientFrame::Typing { id, .. }
            | ClientFrame::Ping { id } => *id,
        }
    }
}

/// Why a text frame could not be turned into a [`ClientFrame`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameError {
    /// The request id, when the frame was JSON with a usable `id`.
    pub id: Option<u64>,
    pub message: String,
    /// The frame was a JSON object whose `type` is a string this version
    /// does not know (a newer client's request). It is answered
    /// `bad_request` but is not garbage: it never counts toward the 1008
    /// close (protocol-chat.md §1), so a newer client survives an older node
    /// during a rolling update.
    pub unknown_type: bool,
}

/// Parses one client text frame.
///
/// On failure it still tries to recover the request `id`, so that the error
/// frame can carry `re` and the client can match it to its request.
pub fn parse_client_frame(text: &str) -> Result<ClientFrame, FrameError> {
    // A frame is one JSON object (protocol.md): serde alone would also take
    // an array of the fields in order (`["ping",7]`).
    let object = text.trim_start().starts_with('{');
    match serde_json::from_str::<ClientFrame>(text) {
        Ok(frame) if object => Ok(frame),
        result => {
            let err = match result {
                Err(err) => err.to_string(),
                Ok(_) => "a frame must be a JSON object".to_string(),
            };
            #[derive(Deserialize)]
            struct Envelope {
                #[serde(rename = "type")]
                kind: Option<serde_json::Value>,
                id: Option<u64>,
            }
            let envelope = serde_json::from_str::<Envelope>(text).ok();
            let id = envelope.as_ref().and_then(|e| e.id);
            let mut unknown_type = false;
            let message = match envelope.and_then(|e| e.kind) {
                None if object => "frame has no string field \"type\"".to_string(),
                Some(serde_json::Value::String(kind))
                    if !KNOWN_CLIENT_TYPES.contains(&kind.as_str()) =>
                {
                    unknown_type = object;
                    format!("unknown frame type {kind:?}")
                }
                _ => format!("malformed frame: {err}"),
            };
            Err(FrameError {
                id,
                message,
                unknown_type,
            })
        }
    }
}

const KNOWN_CLIENT_TYPES: &[&str] = &[
    "hello", "join", "leave", "part", "send", "edit", "delete", "react", "read", "history",
    "typing", "ping",
];

/// Presence state carried by `presence` pushes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PresenceState {
    Joined,
    Left,
}

/// Frames the server sends. `re` is set on direct replies, absent on pushes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    Welcome {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        re: Option<u64>,
        user: String,
        node: String,
        session: String,
        heartbeat_s: u64,
    },
    Joined {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        re: Option<u64>,
        room: String,
        last_seq: u64,
        history: Vec<RoomEvent>,
        more: bool,
        members: Vec<String>,
        /// The user's read position in the room (protocol 1.1 §2; 0: none).
        #[serde(default)]
        read_seq: u64,
        /// Messages of others after `read_seq`, not deleted (at most
        /// [`UNREAD_CAP`]).
        #[serde(default)]
        unread: u64,
        /// The unread ones that mention the user.
        #[serde(default)]
        mentions: u64,
        /// The room's topic, if it has one (protocol 1.1 §3).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        topic: Option<String>,
        /// Only members see and join it.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        private: bool,
        /// The user's role in the room (absent: DMs).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        role: Option<Role>,
    },
    /// The answer to `read` (with `re`), and the push to the user's other
    /// connections when the position moved.
    Read {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        re: Option<u64>,
        room: String,
        seq: u64,
    },
    Left {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        re: Option<u64>,
        room: String,
        /// A push only: why the connection is out of the room
        /// ([`left_reason`]: `kicked`, `banned`, `parted`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    Ack {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        re: Option<u64>,
        room: String,
        seq: u64,
        ts: String,
    },
    History {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        re: Option<u64>,
        room: String,
        messages: Vec<RoomEvent>,
        more: bool,
    },
    Presence {
        room: String,
        user: String,
        state: PresenceState,
    },
    Typing {
        room: String,
        user: String,
    },
    Pong {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        re: Option<u64>,
    },
    Error {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        re: Option<u64>,
        code: ErrorCode,
        message: String,
    },
    /// A pushed chat message.
    Message(Message),
    /// Protocol 1.1 event pushes (and [`RoomEvent`]s in history lists).
    Edited(Edited),
    Deleted(Deleted),
    Reaction(Reaction),
    Member(Member),
    Topic(Topic),
}

impl ServerFrame {
    /// Serialises the frame to the JSON text sent on the wire.
    pub fn to_json(&self) -> String {
        // Serialising these plain data types cannot fail: no maps with
        // non-string keys, no custom serialisers that error.
        serde_json::to_string(self).unwrap_or_else(|_| {
            r#"{"type":"error","code":"internal","message":"serialisation failed"}"#.to_string()
        })
    }

    /// The request id this frame answers; `None` for pushes. Exhaustive on
    /// purpose: a new frame type must say whether it answers requests.
    pub fn re(&self) -> Option<u64> {
        match self {
            ServerFrame::Welcome { re, .. }
            | ServerFrame::Joined { re, .. }
            | ServerFrame::Left { re, .. }
            | ServerFrame::Ack { re, .. }
            | ServerFrame::History { re, .. }
            | ServerFrame::Read { re, .. }
            | ServerFrame::Pong { re }
            | ServerFrame::Error { re, .. } => *re,
            ServerFrame::Presence { .. }
            | ServerFrame::Typing { .. }
            | ServerFrame::Message(_)
            | ServerFrame::Edited(_)
            | ServerFrame::Deleted(_)
            | ServerFrame::Reaction(_)
            | ServerFrame::Member(_)
            | ServerFrame::Topic(_) => None,
        }
    }

    pub fn error(re: Option<u64>, code: ErrorCode, message: impl Into<String>) -> Self {
        ServerFrame::Error {
            re,
            code,
            message: message.into(),
        }
    }
}

/// Parses one server text frame (used by clients).
pub fn parse_server_frame(text: &str) -> Result<ServerFrame, serde_json::Error> {
    serde_json::from_str(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(seq: u64) -> Message {
        Message {
            room: "general".into(),
            seq,
            from: "alice".into(),
            text: "hi".into(),
            ts: "2026-11-22T21:00:00.123Z".into(),
            ..Default::default()
        }
    }

    #[test]
    fn message_push_carries_type_message() {
        let json = ServerFrame::Message(msg(58)).to_json();
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["type"], "message");
        assert_eq!(v["seq"], 58);
        assert!(v.get("nonce").is_none());
        assert_eq!(json.matches("\"type\"").count(), 1);
    }

    #[test]
    fn history_elements_are_tagged_messages() {
        let frame = ServerFrame::Joined {
            re: Some(1),
            room: "general".into(),
            last_seq: 2,
            history: vec![RoomEvent::Message(msg(1)), RoomEvent::Message(msg(2))],
            more: false,
            members: vec!["alice".into()],
            read_seq: 0,
            unread: 0,
            mentions: 0,
            topic: None,
            private: false,
            role: None,
        };
        let v: serde_json::Value = serde_json::from_str(&frame.to_json()).unwrap();
        assert_eq!(v["type"], "joined");
        assert_eq!(v["re"], 1);
        assert_eq!(v["history"][1]["type"], "message");
        assert_eq!(v["history"][1]["seq"], 2);
    }

    #[test]
    fn server_frames_round_trip() {
        let frames = vec![
            ServerFrame::Message(msg(3)),
            ServerFrame::Ack {
                re: Some(3),
                room: "general".into(),
                seq: 58,
                ts: "t".into(),
            },
            ServerFrame::Pong { re: Some(6) },
            ServerFrame::error(Some(3), ErrorCode::RateLimited, "slow down"),
            ServerFrame::Presence {
                room: "r".into(),
                user: "bob".into(),
                state: PresenceState::Left,
            },
        ];
        for frame in frames {
            let back = parse_server_frame(&frame.to_json()).unwrap();
            assert_eq!(back, frame);
        }
    }

    #[test]
    fn parses_the_examples_of_the_protocol() {
        let f =
            parse_client_frame(r#"{"type":"join","id":1,"room":"general","since":41}"#).unwrap();
        assert_eq!(
            f,
            ClientFrame::Join {
                id: Some(1),
                room: "general".into(),
                since: Some(41)
            }
        );
        let f = parse_client_frame(r#"{"type":"send","id":4,"to":"bob","text":"hi bob"}"#).unwrap();
        assert_eq!(f.id(), Some(4));
        let f = parse_client_frame(r#"{"type":"ping","id":6}"#).unwrap();
        assert_eq!(f, ClientFrame::Ping { id: Some(6) });
    }

    #[test]
    fn bad_frames_keep_their_id() {
        let e = parse_client_frame(r#"{"type":"teleport","id":9}"#).unwrap_err();
        assert_eq!(e.id, Some(9));
        assert!(e.message.contains("unknown frame type"), "{}", e.message);
        assert!(e.unknown_type);
        // Requests of a later version, extra fields and all, are unknown types.
        let e = parse_client_frame(r#"{"type":"kick","id":2,"room":"r"}"#).unwrap_err();
        assert!(e.unknown_type && e.id == Some(2), "{e:?}");
        let e = parse_client_frame(r#"{"type":"join","id":2}"#).unwrap_err();
        assert_eq!(e.id, Some(2));
        assert!(!e.unknown_type, "a known type with bad fields is malformed");
        let e = parse_client_frame(r#"{"id":3}"#).unwrap_err();
        assert_eq!(e.id, Some(3));
        assert!(e.message.contains("type"));
        assert!(!e.unknown_type);
        let e = parse_client_frame(r#"{"type":42,"id":3}"#).unwrap_err();
        assert!(!e.unknown_type);
        let e = parse_client_frame("not json").unwrap_err();
        assert_eq!(e.id, None);
        assert!(!e.unknown_type);
        // Not JSON, even if it names an unknown type.
        let e = parse_client_frame(r#"{"type":"teleport","id":9"#).unwrap_err();
        assert!(!e.unknown_type);
        let e = parse_client_frame(r#"["teleport",9]"#).unwrap_err();
        assert!(!e.unknown_type);
        // A frame is a JSON object: the array form serde would take is not
        // (found by fuzz/ client_frame, fuzz/regressions/client_frame/seed-array).
        let e = parse_client_frame(r#"["ping",7]"#).unwrap_err();
        assert!(e.message.contains("JSON object"), "{}", e.message);
        assert!(!e.unknown_type);
        assert!(parse_client_frame(r#" ["send",1,"general",null,"hi"]"#).is_err());
        // A number too large for u64 is rejected, not wrapped.
        let e = parse_client_frame(r#"{"type":"ping","id":184467440737095516150}"#).unwrap_err();
        assert_eq!(e.id, None);
    }

    #[test]
    fn deeply_nested_json_is_an_error_not_a_crash() {
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(parse_client_frame(&deep).is_err());
        let deep_obj = format!(
            r#"{{"type":"ping","id":1,"x":{}1{}}}"#,
            "[".repeat(50_000),
            "]".repeat(50_000)
        );
        assert!(parse_client_frame(&deep_obj).is_err());
    }

    #[test]
    fn events_round_trip_and_keep_their_type() {
        let mut m = msg(4);
        m.reply_to = Some(2);
        m.edited = Some("2026-11-22T21:01:00.000Z".into());
        m.reactions
            .insert("👍".into(), vec!["alice".into(), "bob".into()]);
        let events = vec![
            RoomEvent::Message(m),
            RoomEvent::Edited(Edited {
                room: "general".into(),
                seq: 5,
                from: "alice".into(),
                target: 4,
                text: "fixed".into(),
                ts: "t".into(),
                nonce: Some("n".into()),
            }),
            RoomEvent::Deleted(Deleted {
                room: "general".into(),
                seq: 6,
                from: "alice".into(),
                target: 4,
                ts: "t".into(),
                nonce: None,
            }),
            RoomEvent::Reaction(Reaction {
                room: "general".into(),
                seq: 7,
                from: "bob".into(),
                target: 4,
                emoji: "🎉".into(),
                on: false,
                ts: "t".into(),
                nonce: None,
            }),
        ];
        let events = events.into_iter().chain([
            RoomEvent::Member(Member {
                room: "general".into(),
                seq: 8,
                from: "alice".into(),
                user: "carol".into(),
                change: MemberChange::Role,
                role: Some(Role::Moderator),
                reason: None,
                ts: "t".into(),
                nonce: None,
            }),
            RoomEvent::Topic(Topic {
                room: "general".into(),
                seq: 9,
                from: "alice".into(),
                topic: "plans".into(),
                ts: "t".into(),
                nonce: None,
            }),
        ]);
        for event in events {
            let frame = event.clone().into_frame();
            let json = frame.to_json();
            assert_eq!(json.matches("\"type\"").count(), 1, "{json}");
            assert_eq!(parse_server_frame(&json).unwrap(), frame);
            let back: RoomEvent = serde_json::from_str(&json).unwrap();
            assert_eq!(back, event);
        }
        // A plain message stays as version 1 wrote it.
        let v: serde_json::Value =
            serde_json::from_str(&ServerFrame::Message(msg(1)).to_json()).unwrap();
        for field in ["reply_to", "edited", "deleted", "reactions"] {
            assert!(v.get(field).is_none(), "{field}");
        }
    }

    #[test]
    fn the_requests_of_protocol_1_1_parse() {
        let f = parse_client_frame(
            r#"{"type":"send","id":1,"room":"general","text":"agreed","reply_to":57}"#,
        )
        .unwrap();
        assert!(matches!(
            f,
            ClientFrame::Send {
                reply_to: Some(57),
                ..
            }
        ));
        let f = parse_client_frame(
            r#"{"type":"edit","id":2,"room":"general","target":58,"text":"agreed!"}"#,
        )
        .unwrap();
        assert!(matches!(f, ClientFrame::Edit { target: 58, .. }));
        let f =
            parse_client_frame(r#"{"type":"delete","id":3,"room":"general","target":58}"#).unwrap();
        assert_eq!(f.id(), Some(3));
        let f = parse_client_frame(
            r#"{"type":"react","id":4,"room":"general","target":57,"emoji":"👍","on":true}"#,
        )
        .unwrap();
        assert!(matches!(f, ClientFrame::React { on: true, .. }));
        let e = parse_client_frame(r#"{"type":"react","id":4,"room":"general","target":57}"#)
            .unwrap_err();
        assert!(!e.unknown_type && e.id == Some(4));
    }

    #[test]
    fn membership_frames_read_as_the_protocol_writes_them() {
        let f = parse_client_frame(r#"{"type":"part","id":5,"room":"plans"}"#).unwrap();
        assert_eq!(
            f,
            ClientFrame::Part {
                id: Some(5),
                room: "plans".into()
            }
        );
        let v: serde_json::Value = serde_json::from_str(
            &ServerFrame::Left {
                re: None,
                room: "plans".into(),
                reason: Some(left_reason::KICKED.into()),
            }
            .to_json(),
        )
        .unwrap();
        assert_eq!(
            (v["type"].as_str(), v["reason"].as_str()),
            (Some("left"), Some("kicked"))
        );
        let m: RoomEvent = serde_json::from_str(
            r#"{"type":"member","room":"plans","seq":3,"from":"alice","user":"bob","change":"banned","reason":"spam","ts":"t"}"#,
        )
        .unwrap();
        assert!(
            matches!(&m, RoomEvent::Member(m) if m.change == MemberChange::Banned && m.role.is_none())
        );
        assert!(Role::Owner > Role::Moderator && Role::Moderator > Role::Member);
        for role in [Role::Owner, Role::Moderator, Role::Member] {
            assert_eq!(Role::parse(role.as_str()), Some(role));
        }
        for change in [
            MemberChange::Added,
            MemberChange::Removed,
            MemberChange::Banned,
            MemberChange::Unbanned,
            MemberChange::Role,
        ] {
            assert_eq!(MemberChange::parse(change.as_str()), Some(change));
            let json = serde_json::to_string(&change).unwrap();
            assert_eq!(json, format!("\"{}\"", change.as_str()));
        }
    }

    #[test]
    fn emoji_rules() {
        for ok in ["👍", ":+1:", "🇫🇷", "x"] {
            assert!(valid_emoji(ok), "{ok}");
        }
        for bad in ["", " ", "👍 ", "a\tb", "\u{0}", &"x".repeat(33)] {
            assert!(!valid_emoji(bad), "{bad:?}");
        }
        assert!(valid_emoji(&"x".repeat(32)));
    }

    #[test]
    fn error_codes_map_to_http() {
        assert_eq!(ErrorCode::Conflict.http_status(), 409);
        assert_eq!(ErrorCode::Unavailable.http_status(), 503);
        assert_eq!(
            serde_json::to_string(&ErrorCode::TooLarge).unwrap(),
            "\"too_large\""
        );
        assert_eq!(ErrorCode::RateLimited.to_string(), "rate_limited");
    }
}
