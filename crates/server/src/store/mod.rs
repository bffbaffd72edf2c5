//! Storage: the source of truth for users, rooms and messages.
//!
//! Everything durable goes through the [`Store`] trait: [`sqlite::SqliteStore`]
//! (the embedded default) and [`postgres::PgStore`] (a fleet). Appends
//! come from one caller, the group committer ([`crate::commit`]), which
//! batches them into [`Store::append_batch`] and publishes what was stored.
//!
//! This module must not know about sessions, sockets or the bus: it stores
//! and reads, and [`StoredMessage::encode`] turns a row into the JSON text of
//! its `message` push, so that every other layer forwards bytes it never
//! re-serialises.

mod events;
pub mod members;
pub mod pg_hosts;
pub mod postgres;
pub mod search;
pub mod sqlite;

pub(crate) use events::{EventTx, append_event, event_of, runs, with_reactions};

use std::sync::Arc;

use async_trait::async_trait;
use parley_protocol::{
    Deleted, Edited, Member, MemberChange, Message, Reaction, Role, RoomEvent, Topic,
};
use search::{SearchPage, SearchQuery};

/// What an append asks of its room (protocol 1.1 §1: every change to a
/// room is an event with the room's next `seq`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Change {
    /// A new message (`text`).
    #[default]
    Message,
    /// A new message answering `reply_to`: a `message` of the same room,
    /// else the append is refused `not_found`.
    Reply { reply_to: u64 },
    /// Replace the text of `target` with `text`: only its author.
    Edit { target: u64 },
    /// Delete `target`: its author, or `moderator` (a server admin).
    Delete { target: u64, moderator: bool },
    /// Add (`on`) or remove `emoji` from `target`. A reaction that changes
    /// nothing stores nothing: its outcome is the event that set the
    /// current state ([`AppendOutcome::Duplicate`]).
    React {
        target: u64,
        emoji: String,
        on: bool,
    },
    /// A change to `user`'s membership (protocol 1.1 §3): an invite, a
    /// kick (or a part, when `user` is the sender), a ban (`text`: the
    /// reason), an unban, a role (`role`). `admin`: the sender is a server
    /// admin. The rules are [`members::check_member`]'s, checked in the
    /// transaction that stores the event.
    Member {
        user: String,
        change: MemberChange,
        role: Option<Role>,
        admin: bool,
    },
    /// The room's topic becomes `text` (owners and moderators; `admin`:
    /// the sender is a server admin).
    Topic { admin: bool },
}

/// An append; the store assigns `seq`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewMessage {
    pub room: String,
    pub from: String,
    /// The message's text, or an edit's new text; empty otherwise.
    pub text: String,
    pub nonce: Option<String>,
    /// Milliseconds since the Unix epoch, taken when the node accepted it.
    /// Not what is stored: the store stamps `ts` in the commit that assigns
    /// `seq` (see [`Store`]); SQLite takes the later of this and its commit
    /// time, PostgreSQL its own clock.
    pub ts_ms: i64,
    pub change: Change,
}

/// The kind of a stored event, with what only that kind carries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum EventKind {
    #[default]
    Message,
    Edited {
        target: u64,
    },
    Deleted {
        target: u64,
    },
    Reaction {
        target: u64,
        emoji: String,
        on: bool,
    },
    /// `text` is the reason (bans), else `""`.
    Member {
        user: String,
        change: MemberChange,
        role: Option<Role>,
    },
    /// `text` is the new topic.
    Topic,
}

/// The columns an event's kind is stored in (`messages`): what
/// [`EventKind::from_columns`] reads back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct EventColumns {
    pub kind: String,
    pub target: Option<i64>,
    pub emoji: Option<String>,
    pub reaction_on: Option<bool>,
    /// A member event's `user`.
    pub subject: Option<String>,
    /// A member event's `change`.
    pub member_change: Option<String>,
    /// A member event's `role`.
    pub role: Option<String>,
}

impl EventKind {
    /// The name stored in the `kind` column (and the event's wire `type`).
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::Message => "message",
            EventKind::Edited { .. } => "edited",
            EventKind::Deleted { .. } => "deleted",
            EventKind::Reaction { .. } => "reaction",
            EventKind::Member { .. } => "member",
            EventKind::Topic => "topic",
        }
    }

    /// Rebuilds a kind from its stored columns.
    pub(crate) fn from_columns(columns: EventColumns) -> Result<EventKind, StoreError> {
        let EventColumns {
            kind,
            target,
            emoji,
            reaction_on: on,
            subject,
            member_change,
            role,
        } = columns;
        let kind = kind.as_str();
        let target = || {
            target
                .map(|t| t as u64)
                .ok_or_else(|| StoreError::Internal(format!("a {kind} event without target")))
        };
        Ok(match kind {
            "message" => EventKind::Message,
            "edited" => EventKind::Edited { target: target()? },
            "deleted" => EventKind::Deleted { target: target()? },
            "reaction" => EventKind::Reaction {
                target: target()?,
                emoji: emoji.unwrap_or_default(),
                on: on.unwrap_or(false),
            },
            "member" => EventKind::Member {
                user: subject
                    .ok_or_else(|| StoreError::Internal("a member event without user".into()))?,
                change: member_change
                    .as_deref()
                    .and_then(MemberChange::parse)
                    .ok_or_else(|| {
                        StoreError::Internal(format!("a member event's change {member_change:?}"))
                    })?,
                role: role.as_deref().and_then(Role::parse),
            },
            "topic" => EventKind::Topic,
            other => {
                return Err(StoreError::Internal(format!(
                    "unknown event kind {other:?}"
                )));
            }
        })
    }

    /// The stored `target` column.
    pub(crate) fn target(&self) -> Option<i64> {
        match self {
            EventKind::Message | EventKind::Member { .. } | EventKind::Topic => None,
            EventKind::Edited { target }
            | EventKind::Deleted { target }
            | EventKind::Reaction { target, .. } => Some(*target as i64),
        }
    }

    /// The member columns (`subject`, `member_change`, `role`) of an event row.
    pub(crate) fn member_columns(
        &self,
    ) -> (Option<&str>, Option<&'static str>, Option<&'static str>) {
        match self {
            EventKind::Member { user, change, role } => (
                Some(user.as_str()),
                Some(change.as_str()),
                role.map(Role::as_str),
            ),
            _ => (None, None, None),
        }
    }
}

/// An event as stored: a message (in its current state when read back:
/// latest text, `edited_ms`, `deleted`, `reactions`), or an edit, delete or
/// reaction of one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredMessage {
    pub room: String,
    pub seq: u64,
    pub from: String,
    /// A message's current text (`""` once deleted); an edit's new text
    /// (`""` once its message is deleted); `""` for the other kinds.
    pub text: String,
    pub ts_ms: i64,
    pub nonce: Option<String>,
    pub kind: EventKind,
    /// A message's `reply_to`.
    pub reply_to: Option<u64>,
    /// A message's last edit (ms).
    pub edited_ms: Option<i64>,
    pub deleted: bool,
    /// A message's reactions as of the read: emoji → users, sorted. Filled
    /// by history reads only.
    pub reactions: std::collections::BTreeMap<String, Vec<String>>,
}

impl StoredMessage {
    /// The event's push as JSON text: built once by the node that stored it
    /// (the committer) or filled a gap (the hub), then forwarded as the same
    /// bytes to every receiver.
    pub fn encode(&self) -> String {
        self.to_wire().into_frame().to_json()
    }

    pub fn to_wire(&self) -> RoomEvent {
        self.clone().into_wire()
    }

    pub fn into_wire(self) -> RoomEvent {
        let ts = parley_protocol::time::format_millis(self.ts_ms);
        match self.kind {
            EventKind::Message => RoomEvent::Message(Message {
                room: self.room,
                seq: self.seq,
                from: self.from,
                text: self.text,
                ts,
                nonce: self.nonce,
                reply_to: self.reply_to,
                edited: self.edited_ms.map(parley_protocol::time::format_millis),
                deleted: self.deleted,
                reactions: self.reactions,
            }),
            EventKind::Edited { target } => RoomEvent::Edited(Edited {
                room: self.room,
                seq: self.seq,
                from: self.from,
                target,
                text: self.text,
                ts,
                nonce: self.nonce,
            }),
            EventKind::Deleted { target } => RoomEvent::Deleted(Deleted {
                room: self.room,
                seq: self.seq,
                from: self.from,
                target,
                ts,
                nonce: self.nonce,
            }),
            EventKind::Reaction { target, emoji, on } => RoomEvent::Reaction(Reaction {
                room: self.room,
                seq: self.seq,
                from: self.from,
                target,
                emoji,
                on,
                ts,
                nonce: self.nonce,
            }),
            EventKind::Member { user, change, role } => RoomEvent::Member(Member {
                room: self.room,
                seq: self.seq,
                from: self.from,
                user,
                change,
                role,
                reason: (!self.text.is_empty()).then_some(self.text),
                ts,
                nonce: self.nonce,
            }),
            EventKind::Topic => RoomEvent::Topic(Topic {
                room: self.room,
                seq: self.seq,
                from: self.from,
                topic: self.text,
                ts,
                nonce: self.nonce,
            }),
        }
    }
}

/// Why the store refused one append of a batch (the others are unaffected).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The target (or `reply_to`) is not a message of the room, or is deleted.
    NotFound(String),
    /// The user may not do this to the target.
    Forbidden(String),
    /// The change contradicts the room's state (already a member, the last
    /// owner leaving).
    Conflict(String),
}

/// What happened to one append of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppendOutcome {
    /// Newly stored with a fresh `seq`.
    Stored(StoredMessage),
    /// Nothing stored: a repeated (room, sender, nonce) — this is the
    /// original — or a reaction that changed nothing — this is the event
    /// that set the current state.
    Duplicate(StoredMessage),
    /// Nothing stored: the append breaks a rule only the store can check.
    Refused(Refusal),
}

impl AppendOutcome {
    /// The stored (or original) event; `None` when refused.
    pub fn message(&self) -> Option<&StoredMessage> {
        match self {
            AppendOutcome::Stored(m) | AppendOutcome::Duplicate(m) => Some(m),
            AppendOutcome::Refused(_) => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or refused the work; nothing was
    /// stored. Clients get `unavailable` and retry.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// A uniqueness rule was violated (e.g. a taken username).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The request names something the store cannot read (a cursor it did
    /// not hand out): the caller's mistake, answered `bad_request`.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// Anything else: corrupt data, a bug.
    #[error("storage error: {0}")]
    Internal(String),
}

/// The storage contract every backend keeps.
///
/// Guarantees:
/// - **Gapless sequence** (invariant 2): per room, `seq` starts at 1 and grows
///   by exactly 1. The room's `last_seq` is bumped in the same transaction as
///   the insert that takes it, so seq N+1 is only assigned after seq N commits,
///   even with several writers (several nodes) at once.
/// - **Atomic batches**: [`Store::append_batch`] commits all of its stored
///   messages in one transaction or none of them; an `Err` means nothing of the
///   batch is stored. A returned `Ok` means durably committed.
/// - **Idempotence**: a repeated (room, sender, nonce) is stored once; later
///   appends return [`AppendOutcome::Duplicate`] with the original.
/// - **`ts` never goes backwards along `seq`**: the stored `ts` is stamped in
///   the transaction that assigns the seq, from one clock per store (SQLite:
///   the node's at commit time, never below the message's own `ts_ms`;
///   PostgreSQL: the database server's, so one clock for the whole fleet),
///   and is never below the room's `last_ts` — the previous message's ts.
///   The outcome carries the stamped ts.
/// - **The same input on every backend**: a batch holding a string no store
///   can hold ([`parley_protocol::text::storable`]) fails as a whole with
///   `Internal` — a data error, never `Unavailable` — and stores nothing
///   ([`refuse_unstorable`]); the committer then finds the culprit.
/// - Reads return messages oldest first.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Appends messages in order, creating rooms as needed, in one transaction.
    async fn append_batch(&self, batch: &[NewMessage]) -> Result<Vec<AppendOutcome>, StoreError>;

    /// Creates the room if it does not exist; returns its `last_seq`. Every
    /// join calls it, so an existing room must cost one read and no write
    /// (no row lock that would queue behind the room's appends).
    async fn ensure_room(&self, room: &str) -> Result<u64, StoreError>;

    /// The room's `last_seq`, or `None` if the room does not exist.
    async fn last_seq(&self, room: &str) -> Result<Option<u64>, StoreError>;

    // Rooms and members (protocol 1.1 §3). Membership changes made by
    // others are room events ([`Change::Member`], [`Change::Topic`]),
    // appended through [`Store::append_batch`] like messages; these are
    // the reads, and the two writes that are not events: creating a room
    // and joining a public one.

    /// Creates `room` with `owner` (a name as shown; its key is
    /// [`parley_protocol::fold_username`] of it) as its owner. `Conflict`
    /// if the room exists.
    async fn create_room(
        &self,
        room: &str,
        owner: &str,
        private: bool,
        topic: &str,
    ) -> Result<(), StoreError>;

    /// What `user_key` may do in `room`, in one round trip: the hot path's
    /// question when a node's cache ([`crate::access`]) does not know.
    async fn access(&self, room: &str, user_key: &str) -> Result<Access, StoreError>;

    /// A join's write: creates a missing room as public with `user` as its
    /// owner, and makes `user` a member of a public room that has not
    /// banned it. Never adds anyone to a private room. Returns the access
    /// after it. A join by a member costs one read and no write.
    async fn enter_room(&self, room: &str, user: &str) -> Result<Access, StoreError>;

    /// The room's members, owners first, then by name.
    async fn members(&self, room: &str) -> Result<Vec<MemberRow>, StoreError>;

    /// The room's bans, by name.
    async fn bans(&self, room: &str) -> Result<Vec<BanRow>, StoreError>;

    /// The rooms `user_key` may see, by name, with its role in each: every
    /// public room and DM room (the caller filters DMs by name), and the
    /// private rooms it is a member of, but none that banned it — every one
    /// if `all` (a server admin).
    async fn room_list(&self, user_key: &str, all: bool) -> Result<Vec<RoomListing>, StoreError>;

    /// The `last_seq` of each of `rooms` that exists, in one round trip:
    /// a node's anti-entropy sweep asks for all its live rooms at once.
    async fn last_seqs(&self, rooms: &[Arc<str>]) -> Result<Vec<(String, u64)>, StoreError>;

    /// Every room with its `last_seq`, by name.
    async fn rooms(&self) -> Result<Vec<(String, u64)>, StoreError>;

    /// Messages with `after < seq < before`, oldest first, at most `limit`,
    /// taken from the old end (`after` side) of the range.
    async fn range_forward(
        &self,
        room: &str,
        after: u64,
        before: u64,
        limit: u32,
    ) -> Result<Vec<StoredMessage>, StoreError>;

    /// The newest `limit` messages with `seq < before`, returned oldest first.
    async fn range_backward(
        &self,
        room: &str,
        before: u64,
        limit: u32,
    ) -> Result<Vec<StoredMessage>, StoreError>;

    /// Moves `user_key`'s read position in `room` forward to `seq`, capped
    /// at the room's `last_seq`; never back. Returns the stored position,
    /// or `None` if the room does not exist.
    async fn mark_read(
        &self,
        user_key: &str,
        room: &str,
        seq: u64,
    ) -> Result<Option<u64>, StoreError>;

    /// `user_key`'s read positions, by room name.
    async fn read_positions(&self, user_key: &str) -> Result<Vec<(String, u64)>, StoreError>;

    /// `user_key`'s read position in `room` and what is unread after it:
    /// messages of others, not deleted, counted up to
    /// [`parley_protocol::UNREAD_CAP`] (the cost is a capped range of the
    /// room's key, whatever the room's size), and those among them that
    /// mention the user.
    async fn unread(&self, user_key: &str, room: &str) -> Result<Unread, StoreError>;

    /// [`Store::unread`] of many rooms at once, after read positions the
    /// caller holds (`rooms`: room, read seq), in their order: one
    /// statement for all of them (`GET /api/rooms` of a user behind in
    /// hundreds of rooms), each room still a capped range of its key.
    async fn unread_many(
        &self,
        user_key: &str,
        rooms: &[(String, u64)],
    ) -> Result<Vec<Unread>, StoreError>;

    /// Messages whose current text holds every word of the query, newest
    /// first, in the rooms the caller may read (protocol 1.1 §4); a deleted
    /// message is never found, an edited one by its current text only.
    async fn search(&self, query: &SearchQuery<'_>) -> Result<SearchPage, StoreError>;

    /// Stores a new user (role `user`, enabled) under the spelling given,
    /// with [`parley_protocol::fold_username`] of it as its key; `Conflict`
    /// if the name, or another that differs from it only in case, is taken.
    async fn create_user(&self, name: &str, password_hash: &str) -> Result<(), StoreError>;

    /// The password hash of the user named exactly `name`, or `None`.
    async fn password_hash(&self, name: &str) -> Result<Option<String>, StoreError>;

    /// Returns the stored value of `key`, storing `value` first if there is none
    /// (first writer wins, so concurrent callers agree).
    async fn setting_or_insert(&self, key: &str, value: &str) -> Result<String, StoreError>;

    /// Cheap round trip to the database, for readiness.
    async fn ping(&self) -> Result<(), StoreError>;

    // Accounts and tokens (protocol-chat.md §5). Times written for nodes to
    // compare (`changed_ms`, `revoked_ms`, `tokens_after_s`) come from one
    // clock per store: PostgreSQL's own, SQLite's node's.

    /// The account whose key is `key` (a case-folded name): the user that
    /// every spelling of the name is.
    async fn account(&self, key: &str) -> Result<Option<Account>, StoreError>;

    /// The account named exactly `name`, else the one whose key `name`
    /// folds to: what `parley admin` addresses (an exact spelling picks one
    /// of the accounts of an older version that differ only in case).
    async fn find_account(&self, name: &str) -> Result<Option<Account>, StoreError>;

    /// Every account, by name.
    async fn accounts(&self) -> Result<Vec<Account>, StoreError>;

    /// Replaces the password of the account named exactly `name` and, in
    /// the same transaction, revokes every token of its user as
    /// [`Store::revoke_user_tokens`] does. Returns the new `tokens_after_s`
    /// (0 if the account has no key), or `None` without such an account.
    async fn set_password(
        &self,
        name: &str,
        password_hash: &str,
    ) -> Result<Option<i64>, StoreError>;

    /// Disables the account named exactly `name` (revoking every token of
    /// its user) or enables it again. Enabling an account that has no key
    /// gives it its key, or fails with `Conflict` while another account of
    /// the same case-folded name is enabled or holds the key. `false`
    /// without such an account.
    async fn set_disabled(&self, name: &str, disabled: bool) -> Result<bool, StoreError>;

    /// Sets the role (`user`, `admin`) of the account named exactly `name`;
    /// `false` without such an account.
    async fn set_role(&self, name: &str, role: &str) -> Result<bool, StoreError>;

    /// Names of an older version that differ only in case while one of them
    /// is enabled without a key, grouped (each group sorted; the groups by
    /// case-folded name). First gives its key to every enabled account
    /// that is the only one left of its group. Empty: every enabled account
    /// has its key, and a node may serve.
    async fn name_collisions(&self) -> Result<Vec<Vec<String>>, StoreError>;

    /// DM rooms named after spellings that are not case-folded (kept by
    /// the migration because their case-folded name was taken).
    async fn stray_dm_rooms(&self) -> Result<Vec<String>, StoreError>;

    /// Revokes one token (logout): `token_id` is the hex SHA-256 of its
    /// text; `exp_s` its expiry, after which the row may be forgotten.
    async fn revoke_token(
        &self,
        token_id: &str,
        user_key: &str,
        exp_s: i64,
    ) -> Result<(), StoreError>;

    /// Revokes every token of the user `user_key` issued so far (logout-all):
    /// tokens whose `iat` is before the returned `tokens_after_s` are
    /// refused. It is the store's clock plus one second (a token issued in
    /// the same second is refused too), and at least one second past the
    /// previous value (tokens issued since the previous revocation have
    /// `iat` = that value, and are refused too).
    async fn revoke_user_tokens(&self, user_key: &str) -> Result<i64, StoreError>;

    /// What token verification must know that changed since `since_ms`
    /// (store clock), in one round trip; `None`: everything (a node
    /// starting).
    async fn auth_changes(&self, since_ms: Option<i64>) -> Result<AuthChanges, StoreError>;

    /// Records a login attempt for `user_key` from `addr` at `at_ms`,
    /// forgets every attempt before `since_ms` (the throttling window), and
    /// returns the other attempts since then of the same user and of the
    /// same address — under way or failed — in one go.
    async fn login_attempt(
        &self,
        user_key: &str,
        addr: &str,
        at_ms: i64,
        since_ms: i64,
    ) -> Result<LoginAttempt, StoreError>;

    /// Forgets one attempt (it was refused before any password was checked).
    async fn forget_login_attempt(&self, id: i64) -> Result<(), StoreError>;

    /// Forgets every attempt for `user_key` (a login succeeded).
    async fn clear_login_failures(&self, user_key: &str) -> Result<(), StoreError>;
}

/// What one user may do in one room ([`Store::access`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Access {
    /// The room exists (for a missing one the rest is default).
    pub exists: bool,
    pub private: bool,
    pub topic: String,
    /// The user's role; `None`: not a member.
    pub role: Option<Role>,
    pub banned: bool,
}

/// One member of a room ([`Store::members`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberRow {
    /// The name as the member was added or joined with.
    pub user: String,
    pub role: Role,
    pub since_ms: i64,
}

/// One ban of a room ([`Store::bans`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BanRow {
    pub user: String,
    /// Who banned.
    pub by: String,
    /// `""`: no reason given.
    pub reason: String,
    pub at_ms: i64,
}

/// A room as a user's room list shows it ([`Store::room_list`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomListing {
    pub room: String,
    pub last_seq: u64,
    pub private: bool,
    pub topic: String,
    /// The user's role; `None`: not a member.
    pub role: Option<Role>,
}

/// A stored role (`None`: not a member), as both backends read it.
pub(crate) fn role_of(role: Option<String>) -> Result<Option<Role>, StoreError> {
    role.map(|r| {
        Role::parse(&r).ok_or_else(|| StoreError::Internal(format!("unknown member role {r:?}")))
    })
    .transpose()
}

/// A user's read state in one room (protocol 1.1 §2).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Unread {
    pub read_seq: u64,
    pub unread: u64,
    pub mentions: u64,
}

/// Counts the unread messages and mentions among the candidate rows the
/// backends read: `(counted, bodies that contain "@name" in any case)`.
pub(crate) fn unread_of(
    read_seq: u64,
    counted: i64,
    candidates: &[String],
    user_key: &str,
) -> Unread {
    Unread {
        read_seq,
        unread: (counted.max(0) as u64).min(parley_protocol::UNREAD_CAP),
        mentions: candidates
            .iter()
            .filter(|body| parley_protocol::mentions(body, user_key))
            .count() as u64,
    }
}

/// [`Store::unread_many`]'s answer from a backend's rows, one per room in
/// the order asked: how many unread messages the capped range held, and
/// the bodies among them that may mention the user.
pub(crate) fn unread_rows(
    user_key: &str,
    rooms: &[(String, u64)],
    rows: Vec<(i64, Vec<String>)>,
) -> Result<Vec<Unread>, StoreError> {
    if rows.len() != rooms.len() {
        return Err(StoreError::Internal(format!(
            "unread of {} rooms answered {} rows",
            rooms.len(),
            rows.len()
        )));
    }
    Ok(rooms
        .iter()
        .zip(rows)
        .map(|(&(_, read_seq), (counted, candidates))| {
            unread_of(read_seq, counted, &candidates, user_key)
        })
        .collect())
}

/// A registered user, as login and `parley admin` see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// The name as registered: how the user is shown.
    pub name: String,
    /// The case-folded name, unique: the user's identity. `None` only for an
    /// account of an older version whose name differs from another's only
    /// in case ([`Store::name_collisions`]).
    pub key: Option<String>,
    pub password_hash: String,
    /// `user` or `admin`.
    pub role: String,
    pub disabled: bool,
    pub created_ms: i64,
    /// Tokens of the user issued (`iat`) before this are revoked; 0: none.
    pub tokens_after_s: i64,
}

/// What changed for token verification ([`Store::auth_changes`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthChanges {
    /// The store's clock when it answered: where the next look starts.
    pub now_ms: i64,
    /// Accounts: (key, name as registered, disabled). A full look lists only
    /// those whose name is not its key, or that are disabled.
    pub accounts: Vec<(String, String, bool)>,
    /// (user key, tokens_after_s).
    pub user_revocations: Vec<(String, i64)>,
    /// Revoked tokens: (hex SHA-256, exp_s).
    pub tokens: Vec<(String, i64)>,
}

/// A login attempt, and the recent ones that count against it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoginAttempt {
    /// This attempt's row.
    pub id: i64,
    /// When (ms) the other attempts for the same user were made, oldest first.
    pub user: Vec<i64>,
    /// When (ms) the other attempts from the same address were made, oldest first.
    pub addr: Vec<i64>,
}

/// Splits the rows of a login attempt's look-up into its [`LoginAttempt`].
pub(crate) fn login_attempt_of(
    id: i64,
    user_key: &str,
    addr: &str,
    rows: Vec<(String, String, i64)>,
) -> LoginAttempt {
    let mut attempt = LoginAttempt {
        id,
        ..Default::default()
    };
    for (user, from, at) in rows {
        if user == user_key {
            attempt.user.push(at);
        }
        if from == addr {
            attempt.addr.push(at);
        }
    }
    attempt
}

/// Sorts the rows of an [`Store::auth_changes`] query — (kind, key, name,
/// number) with kind `a` (account: number = disabled), `r` (user
/// revocation: number = tokens_after_s) or `t` (token: number = exp_s) —
/// into [`AuthChanges`].
pub(crate) fn auth_changes_of(
    now_ms: i64,
    rows: Vec<(String, String, Option<String>, i64)>,
) -> AuthChanges {
    let mut changes = AuthChanges {
        now_ms,
        ..Default::default()
    };
    for (kind, key, name, number) in rows {
        match kind.as_str() {
            "a" => changes
                .accounts
                .push((key, name.unwrap_or_default(), number != 0)),
            "r" => changes.user_revocations.push((key, number)),
            _ => changes.tokens.push((key, number)),
        }
    }
    changes
}

/// Groups the names of [`Store::name_collisions`]' rows by case-folded name.
pub(crate) fn group_collisions(names: Vec<String>) -> Vec<Vec<String>> {
    let mut groups: std::collections::BTreeMap<String, Vec<String>> =
        std::collections::BTreeMap::new();
    for name in names {
        groups
            .entry(parley_protocol::fold_username(&name))
            .or_default()
            .push(name);
    }
    groups
        .into_values()
        .map(|mut g| {
            g.sort();
            g
        })
        .collect()
}

/// How long a revoked token's row outlives its expiry.
pub(crate) const REVOKED_TOKEN_KEEP_S: i64 = 86_400;

/// How one room's share of a batch is appended, decided before any write:
/// which messages are new, and which repeat a nonce (already stored, or
/// earlier in the same batch). Shared by the backends, so that they agree.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct RoomPlan {
    /// Indices into the batch of the messages to store, in order.
    pub fresh: Vec<usize>,
    /// (index, the stored original) for nonces stored by earlier batches.
    pub known: Vec<(usize, StoredMessage)>,
    /// (index, index of its first occurrence in `fresh`) for nonces repeated
    /// within this batch.
    pub repeats: Vec<(usize, usize)>,
}

/// The (sender, nonce) pairs of a room's share of a batch, to look up.
pub(crate) fn nonce_keys(batch: &[NewMessage], indices: &[usize]) -> Vec<(String, String)> {
    indices
        .iter()
        .filter_map(|&i| {
            batch[i]
                .nonce
                .as_ref()
                .map(|n| (batch[i].from.clone(), n.clone()))
        })
        .collect()
}

/// Plans a room's appends given the already stored messages with the same
/// (sender, nonce).
pub(crate) fn plan_room(
    batch: &[NewMessage],
    indices: &[usize],
    stored: &std::collections::HashMap<(String, String), StoredMessage>,
) -> RoomPlan {
    let mut plan = RoomPlan::default();
    let mut first: std::collections::HashMap<(&str, &str), usize> =
        std::collections::HashMap::new();
    for &i in indices {
        let m = &batch[i];
        if let Some(nonce) = &m.nonce {
            if let Some(original) = stored.get(&(m.from.clone(), nonce.clone())) {
                plan.known.push((i, original.clone()));
                continue;
            }
            if let Some(&f) = first.get(&(m.from.as_str(), nonce.as_str())) {
                plan.repeats.push((i, f));
                continue;
            }
            first.insert((m.from.as_str(), nonce.as_str()), i);
        }
        plan.fresh.push(i);
    }
    plan
}

/// Fills `out` for a planned room once its fresh messages took the seqs
/// `first_seq ..`, all stamped `ts_ms`.
pub(crate) fn apply_plan(
    room: &str,
    batch: &[NewMessage],
    plan: RoomPlan,
    first_seq: u64,
    ts_ms: i64,
    out: &mut [Option<AppendOutcome>],
) {
    for (k, &i) in plan.fresh.iter().enumerate() {
        let m = &batch[i];
        out[i] = Some(AppendOutcome::Stored(StoredMessage {
            room: room.to_string(),
            seq: first_seq + k as u64,
            from: m.from.clone(),
            text: m.text.clone(),
            ts_ms,
            nonce: m.nonce.clone(),
            ..Default::default()
        }));
    }
    for (i, original) in plan.known {
        out[i] = Some(AppendOutcome::Duplicate(original));
    }
    for (i, f) in plan.repeats {
        if let Some(AppendOutcome::Stored(m)) = &out[f] {
            out[i] = Some(AppendOutcome::Duplicate(m.clone()));
        }
    }
}

/// Refuses a batch that holds a string no store can hold, before anything
/// is written, so that every backend refuses the same input the same way
/// (PostgreSQL's `TEXT` would fail the statement on U+0000; SQLite would
/// store it). The node refuses such input at validation already; this keeps
/// the store's contract for any other caller.
pub(crate) fn refuse_unstorable(batch: &[NewMessage]) -> Result<(), StoreError> {
    for (i, m) in batch.iter().enumerate() {
        let fields = [
            ("room", Some(m.room.as_str())),
            ("sender", Some(m.from.as_str())),
            ("text", Some(m.text.as_str())),
            ("nonce", m.nonce.as_deref()),
            (
                "emoji",
                match &m.change {
                    Change::React { emoji, .. } => Some(emoji.as_str()),
                    _ => None,
                },
            ),
            (
                "user",
                match &m.change {
                    Change::Member { user, .. } => Some(user.as_str()),
                    _ => None,
                },
            ),
        ];
        for (field, value) in fields {
            if let Some(Err(e)) = value.map(parley_protocol::text::storable) {
                return Err(StoreError::Internal(format!(
                    "message {i} of the batch: {field} {e}"
                )));
            }
        }
    }
    Ok(())
}

/// Groups a batch by room: rooms in name order (the lock order that keeps
/// concurrent batches from deadlocking), each room's messages in batch order.
pub(crate) fn by_room(batch: &[NewMessage]) -> std::collections::BTreeMap<&str, Vec<usize>> {
    let mut rooms: std::collections::BTreeMap<&str, Vec<usize>> = std::collections::BTreeMap::new();
    for (i, m) in batch.iter().enumerate() {
        rooms.entry(m.room.as_str()).or_default().push(i);
    }
    rooms
}

/// Opens the store named by a database URL and applies its migrations.
pub async fn open(
    url: &str,
    max_connections: u32,
) -> Result<std::sync::Arc<dyn Store>, StoreError> {
    if url.starts_with("sqlite:") {
        Ok(std::sync::Arc::new(sqlite::SqliteStore::open(url).await?))
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        Ok(std::sync::Arc::new(
            postgres::PgStore::open(url, max_connections).await?,
        ))
    } else {
        Err(StoreError::Internal(format!(
            "unsupported database URL {:?}: use sqlite://FILE or postgres://…",
            redact(url)
        )))
    }
}

/// A database URL with any password removed, safe to log.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme && url[scheme + 3..at].contains(':') => {
            let creds = &url[scheme + 3..at];
            let user = creds.split(':').next().unwrap_or("");
            format!("{}{}:***{}", &url[..scheme + 3], user, &url[at..])
        }
        _ => url.to_string(),
    }
}

/// Classifies a sqlx error: connection trouble is `Unavailable` (retry), a
/// unique violation is `Conflict`, the rest is `Internal`.
pub(crate) fn classify(err: sqlx::Error) -> StoreError {
    match &err {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            StoreError::Conflict(db.message().to_string())
        }
        sqlx::Error::Database(db) => {
            // SQLite BUSY/LOCKED and I/O errors are transient; so are
            // PostgreSQL's admin shutdown and connection failure classes.
            let code = db.code().unwrap_or_default();
            let transient = matches!(code.as_ref(), "5" | "6" | "10" | "13" | "261" | "517")
                || code.starts_with("08")
                // read_only_sql_transaction: the server turned standby (a
                // failover); another host takes the writes.
                || code.as_ref() == "25006"
                || code.starts_with("57P")
                || code.starts_with("53");
            if transient {
                StoreError::Unavailable(err.to_string())
            } else {
                StoreError::Internal(err.to_string())
            }
        }
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_) => StoreError::Unavailable(err.to_string()),
        _ => StoreError::Internal(err.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(room: &str, from: &str, nonce: Option<&str>) -> NewMessage {
        NewMessage {
            room: room.into(),
            from: from.into(),
            text: "t".into(),
            nonce: nonce.map(Into::into),
            ts_ms: 0,
            ..Default::default()
        }
    }

    #[test]
    fn plans_fresh_known_and_repeated_nonces() {
        let batch = vec![
            new("r", "a", Some("k1")),
            new("r", "a", None),
            new("r", "a", Some("k2")),
            new("r", "a", Some("k2")),
            new("r", "b", Some("k2")),
        ];
        let original = StoredMessage {
            room: "r".into(),
            seq: 7,
            from: "a".into(),
            text: "o".into(),
            ts_ms: 0,
            nonce: Some("k1".into()),
            ..Default::default()
        };
        let stored = std::collections::HashMap::from([(
            ("a".to_string(), "k1".to_string()),
            original.clone(),
        )]);
        let plan = plan_room(&batch, &[0, 1, 2, 3, 4], &stored);
        assert_eq!(plan.fresh, vec![1, 2, 4]);
        assert_eq!(plan.known, vec![(0, original)]);
        assert_eq!(plan.repeats, vec![(3, 2)]);
        let mut out = vec![None; batch.len()];
        apply_plan("r", &batch, plan, 8, 42, &mut out);
        let seqs: Vec<u64> = out
            .iter()
            .map(|o| o.as_ref().unwrap().message().unwrap().seq)
            .collect();
        assert_eq!(seqs, vec![7, 8, 9, 9, 10]);
        assert!(matches!(out[3], Some(AppendOutcome::Duplicate(_))));
        let ts: Vec<i64> = out
            .iter()
            .map(|o| o.as_ref().unwrap().message().unwrap().ts_ms)
            .collect();
        assert_eq!(ts, vec![0, 42, 42, 42, 42], "fresh ones get the stamp");
    }

    #[test]
    fn stored_events_encode_as_their_pushes() {
        let base = StoredMessage {
            room: "r".into(),
            seq: 9,
            from: "bob".into(),
            ts_ms: 0,
            ..Default::default()
        };
        for (kind, want) in [
            (EventKind::Message, "message"),
            (EventKind::Edited { target: 2 }, "edited"),
            (EventKind::Deleted { target: 2 }, "deleted"),
            (
                EventKind::Reaction {
                    target: 2,
                    emoji: "👍".into(),
                    on: true,
                },
                "reaction",
            ),
        ] {
            let e = StoredMessage {
                kind: kind.clone(),
                ..base.clone()
            };
            let v: serde_json::Value = serde_json::from_str(&e.encode()).unwrap();
            assert_eq!(
                (v["type"].as_str(), v["seq"].as_u64()),
                (Some(want), Some(9))
            );
            assert_eq!(kind.name(), want);
            let back = EventKind::from_columns(EventColumns {
                kind: want.into(),
                target: kind.target(),
                emoji: Some("👍".into()),
                reaction_on: Some(true),
                ..Default::default()
            })
            .unwrap();
            assert_eq!(back, kind);
        }
    }

    #[test]
    fn refuses_nul_in_any_field() {
        assert_eq!(refuse_unstorable(&[new("r", "a", Some("k"))]), Ok(()));
        let mut tabs = new("r", "a", None);
        tabs.text = "tab\tnew\nline\u{1b}".into();
        assert_eq!(refuse_unstorable(&[tabs]), Ok(()));
        for bad in [
            new("r\u{0}", "a", None),
            new("r", "a\u{0}", None),
            new("r", "a", Some("\u{0}")),
            NewMessage {
                text: "x\u{0}".into(),
                ..new("r", "a", None)
            },
        ] {
            let err = refuse_unstorable(&[new("r", "b", None), bad]).unwrap_err();
            assert!(
                matches!(&err, StoreError::Internal(m) if m.starts_with("message 1 ")),
                "{err:?}"
            );
        }
    }

    #[test]
    fn groups_rooms_in_name_order() {
        let batch = vec![
            new("b", "x", None),
            new("a", "x", None),
            new("b", "y", None),
        ];
        let rooms: Vec<(&str, Vec<usize>)> = by_room(&batch).into_iter().collect();
        assert_eq!(rooms, vec![("a", vec![1]), ("b", vec![0, 2])]);
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact("postgres://parley:s3cret@db:5432/parley"),
            "postgres://parley:***@db:5432/parley"
        );
        assert_eq!(redact("sqlite://parley.db"), "sqlite://parley.db");
        // No password: nothing to hide, and no `***` that suggests one.
        assert_eq!(
            redact("postgres://parley@db/parley?sslmode=verify-full"),
            "postgres://parley@db/parley?sslmode=verify-full"
        );
    }
}
