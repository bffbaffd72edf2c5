//! Who may see, join and moderate a room (protocol 1.1 §3), for the
//! WebSocket sessions and the REST API alike.
//!
//! A room is public or private; a user is a member with a role, or not, and
//! may be banned. [`refusal`] is the rule (pure): a private room is
//! invisible to non-members exactly as a DM is to third parties, a banned
//! user may not read or write, and a server admin passes both. The node
//! asks the store only when its cache (kept per live room by the hub, and
//! corrected by the room's own membership events) does not know: a send to
//! a room the session joined costs no database round trip.
//!
//! Moderation is submitted here as room events ([`Change::Member`],
//! [`Change::Topic`]); whether the sender may do it is decided by the
//! store's transaction ([`crate::store::members`]), not by this cache.
//!
//! This module must not touch sockets or SQL.

use parley_protocol::{
    ErrorCode, MAX_REASON_BYTES, MAX_TOPIC_BYTES, MemberChange, Role, fold_username, is_dm_room,
    valid_username,
};

use axum::extract::ws::Utf8Bytes;

use crate::bus::{Envelope, Event};
use crate::commit::PendingAppend;
use crate::error::ChatError;
use crate::node::{Limit, Node};
use crate::store::{Access, Change, EventKind, StoredMessage};

/// Why `access` does not let its user see `room`; `None`: it does. A
/// server admin is let through anyway (the caller asks only on refusal,
/// which costs a read).
pub fn refusal(room: &str, access: &Access) -> Option<ChatError> {
    if !access.exists {
        Some(ChatError::not_found(format!(
            "room {room:?} does not exist"
        )))
    } else if access.banned {
        Some(ChatError::forbidden(format!(
            "you are banned from room {room:?}"
        )))
    } else if access.private && access.role.is_none() {
        Some(ChatError::forbidden(format!(
            "room {room:?} is private: only its members may see it"
        )))
    } else {
        None
    }
}

/// What the user a stored membership event is about hears of it on the
/// connections that are not subscribed to the room (those hear it in the
/// room, and leave it there): the event itself — they were invited, given
/// a role, unbanned — or, when it takes them out, `left` with the reason,
/// so that every device drops the room. Best effort, like a DM's
/// [`Event::Direct`] (a device that misses it sees its room list at the
/// next look).
pub fn notice(m: &StoredMessage, frame: &Utf8Bytes) -> Option<Envelope> {
    let EventKind::Member { user, change, .. } = &m.kind else {
        return None;
    };
    let frame = match crate::store::members::ejects(&m.from, user, *change) {
        Some(reason) => Utf8Bytes::from(
            parley_protocol::ServerFrame::Left {
                re: None,
                room: m.room.clone(),
                reason: Some(reason.to_string()),
            }
            .to_json(),
        ),
        None => frame.clone(),
    };
    Some(Envelope {
        room: m.room.as_str().into(),
        event: Event::Direct {
            user: fold_username(user).into(),
            frame,
        },
    })
}

/// Counts and logs a stored membership event (an audit line for the log
/// store; the event itself is in the room's log).
pub fn record(m: &StoredMessage) {
    if let EventKind::Member { user, change, role } = &m.kind {
        metrics::counter!("parley_membership_changes_total", "change" => change.as_str())
            .increment(1);
        tracing::info!(
            room = %m.room,
            seq = m.seq,
            by = %m.from,
            user = %user,
            change = change.as_str(),
            role = role.map(Role::as_str),
            "membership changed"
        );
    }
}

/// Who changes a membership: a user, whose place in the room decides what
/// they may do and whose sends are rate limited; or the application's
/// backend through the server API, named as it asks, with a server admin's
/// rights.
#[derive(Debug, Clone, Copy)]
enum Actor<'a> {
    User(&'a str),
    App(&'a str),
}

/// What a caller may do in a room it was let into.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allowed {
    /// The room's state and the caller's place in it; `None` for a DM room.
    pub access: Option<Access>,
    /// Let in as a server admin (the room would have refused the user).
    pub as_admin: bool,
}

impl Allowed {
    pub fn role(&self) -> Option<Role> {
        self.access.as_ref().and_then(|a| a.role)
    }
}

/// A text a moderator typed (topic, ban reason): at most `max` bytes a
/// store can hold.
fn check_text(what: &str, text: &str, max: usize) -> Result<(), ChatError> {
    if text.len() > max {
        return Err(ChatError::new(
            ErrorCode::TooLarge,
            format!("{what} is {} bytes; the limit is {max}", text.len()),
        ));
    }
    parley_protocol::text::storable(text).map_err(|e| ChatError::bad_request(format!("{what} {e}")))
}

impl Node {
    /// `user`'s access to the non-DM `room`: from the cache of a room live
    /// on this node, else one store read (cached if the room is live).
    pub async fn access_of(&self, user: &str, room: &str) -> Result<Access, ChatError> {
        let key = fold_username(user);
        if let Some(access) = self.hub.cached_access(room, &key) {
            metrics::counter!("parley_access_checks_total", "source" => "cache").increment(1);
            return Ok(access);
        }
        metrics::counter!("parley_access_checks_total", "source" => "store").increment(1);
        let generation = self.hub.access_generation(room);
        let access = self.store.access(room, &key).await?;
        if let Some(generation) = generation {
            self.hub
                .remember_access(room, &key, access.clone(), generation);
        }
        Ok(access)
    }

    /// May `user` read (and write) `room`? The name rules, DM privacy, then
    /// the room's: it exists (else `not_found`), is not private to others,
    /// has not banned the user — or the user is a server admin.
    pub async fn check_read(&self, user: &str, room: &str) -> Result<Allowed, ChatError> {
        self.check_name(user, room)?;
        if is_dm_room(room) {
            return Ok(Allowed::default());
        }
        let access = self.access_of(user, room).await?;
        self.let_in(user, room, access).await
    }

    /// Lets `user` in with `access`, or as a server admin, or refuses.
    async fn let_in(&self, user: &str, room: &str, access: Access) -> Result<Allowed, ChatError> {
        match refusal(room, &access) {
            None => Ok(Allowed {
                access: Some(access),
                as_admin: false,
            }),
            // A missing room is missing for admins too.
            Some(e) if e.code == ErrorCode::NotFound => Err(e),
            Some(e) => match self.is_admin(user).await? {
                true => Ok(Allowed {
                    access: Some(access),
                    as_admin: true,
                }),
                false => Err(e),
            },
        }
    }

    /// A join's access: a DM room is made to exist; any other room is
    /// entered ([`crate::store::Store::enter_room`]: a first join creates a
    /// public room owned by the joiner, a public room makes the joiner a
    /// member) unless the cache knows the user is a member already.
    ///
    /// A `resume` (a join with `since`: a client re-subscribing after a
    /// reconnect) reads and never makes a member: a device that was away
    /// while its user was kicked from a public room, or parted it on
    /// another device, resumes reading it as anyone may, without putting
    /// the room back among the user's rooms. Only a missing room is still
    /// created, as a first join would.
    pub async fn enter(&self, user: &str, room: &str, resume: bool) -> Result<Allowed, ChatError> {
        self.check_name(user, room)?;
        if is_dm_room(room) {
            self.open_room(room).await?;
            return Ok(Allowed::default());
        }
        let key = fold_username(user);
        let access = match self.hub.cached_access(room, &key) {
            Some(a) if a.role.is_some() && !a.banned => a,
            Some(a) if resume && a.exists => a,
            _ if resume => match self.access_of(user, room).await? {
                a if a.exists => a,
                _ => self.store.enter_room(room, user).await?,
            },
            _ => {
                // Cached only if the room was live before the read: its
                // events since then are known to have reached the cache.
                let generation = self.hub.access_generation(room);
                let access = self.store.enter_room(room, user).await?;
                if let Some(generation) = generation {
                    self.hub
                        .remember_access(room, &key, access.clone(), generation);
                }
                access
            }
        };
        self.let_in(user, room, access).await
    }

    /// `user` (an owner, a moderator or a server admin) changes `target`'s
    /// membership of `room`: `Added`, `Removed` (a kick; a part when
    /// `target` is `user`), `Banned` (with `reason`), `Unbanned`, `Role`.
    /// A room event, through the committer like a message.
    pub async fn moderate(
        &self,
        user: &str,
        room: &str,
        target: &str,
        change: MemberChange,
        role: Option<Role>,
        reason: Option<String>,
    ) -> Result<PendingAppend, ChatError> {
        let actor = Actor::User(user);
        self.change_member(actor, room, target, change, role, reason)
            .await
    }

    /// The application's backend (the server API) changes `target`'s
    /// membership of the existing `room`, recorded as done by `by`: with a
    /// server admin's rights, so the room's rules still hold (an owner is
    /// not kicked; the last owner keeps the role). No rate limit, as for
    /// the server API's messages.
    pub async fn moderate_as_app(
        &self,
        by: &str,
        room: &str,
        target: &str,
        change: MemberChange,
        role: Option<Role>,
        reason: Option<String>,
    ) -> Result<PendingAppend, ChatError> {
        let actor = Actor::App(by);
        self.change_member(actor, room, target, change, role, reason)
            .await
    }

    async fn change_member(
        &self,
        actor: Actor<'_>,
        room: &str,
        target: &str,
        change: MemberChange,
        role: Option<Role>,
        reason: Option<String>,
    ) -> Result<PendingAppend, ChatError> {
        self.check_managed(room)?;
        let reason = reason.unwrap_or_default();
        check_text("reason", &reason, MAX_REASON_BYTES)?;
        let user = self.member_name(target).await?;
        let (from, admin, limit) = match actor {
            Actor::User(from) => {
                self.check_read(from, room).await?;
                (from, self.is_admin(from).await?, Limit::PerUser)
            }
            Actor::App(by) => {
                self.check_name(by, room)?;
                (by, true, Limit::None)
            }
        };
        let change = Change::Member {
            user,
            change,
            role,
            admin,
        };
        self.submit_as(from, room, change, reason, None, limit)
            .await
    }

    /// The name a membership change records for `target`: a registered
    /// user as registered, whatever the spelling typed; a name only tokens
    /// know (an operator's backend mints them) as typed.
    pub(crate) async fn member_name(&self, target: &str) -> Result<String, ChatError> {
        if !valid_username(target) {
            return Err(ChatError::bad_request(format!(
                "{target:?} is not a valid username"
            )));
        }
        Ok(match self.store.account(&fold_username(target)).await? {
            Some(account) => account.name,
            None => target.to_string(),
        })
    }

    /// `user` (an owner, a moderator or a server admin) sets the topic.
    pub async fn set_topic(
        &self,
        user: &str,
        room: &str,
        topic: String,
    ) -> Result<PendingAppend, ChatError> {
        self.check_managed(room)?;
        check_text("topic", &topic, MAX_TOPIC_BYTES)?;
        self.check_read(user, room).await?;
        let change = Change::Topic {
            admin: self.is_admin(user).await?,
        };
        self.submit_as(user, room, change, topic, None, Limit::PerUser)
            .await
    }

    /// Creates `room` owned by `user` (`POST /api/rooms`).
    pub async fn create_room(
        &self,
        user: &str,
        room: &str,
        private: bool,
        topic: &str,
    ) -> Result<(), ChatError> {
        self.check_managed(room)?;
        self.check_name(user, room)?;
        check_text("topic", topic, MAX_TOPIC_BYTES)?;
        self.store
            .create_room(room, user, private, topic)
            .await
            .map_err(|e| match e {
                crate::store::StoreError::Conflict(_) => {
                    ChatError::new(ErrorCode::Conflict, format!("room {room:?} already exists"))
                }
                other => other.into(),
            })
    }

    /// Rooms with members and roles: any valid room name but a DM's.
    fn check_managed(&self, room: &str) -> Result<(), ChatError> {
        if is_dm_room(room) {
            return Err(ChatError::bad_request(
                "direct-message rooms have two members and no roles",
            ));
        }
        if !parley_protocol::valid_room(room) {
            return Err(ChatError::bad_request(format!(
                "{room:?} is not a valid room name ([a-z0-9][a-z0-9_-]{{0,63}})"
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_user_of_a_member_event_hears_of_it() {
        let event = |from: &str, change| StoredMessage {
            room: "plans".into(),
            seq: 4,
            from: from.into(),
            kind: EventKind::Member {
                user: "Bob".into(),
                change,
                role: None,
            },
            ..Default::default()
        };
        let frame = Utf8Bytes::from("{\"type\":\"member\"}");
        let heard = |m: &StoredMessage| match notice(m, &frame) {
            Some(Envelope {
                event: Event::Direct { user, frame },
                room,
            }) => {
                assert_eq!((&*user, &*room), ("bob", "plans"), "to the user's key");
                frame.to_string()
            }
            other => panic!("{other:?}"),
        };
        assert_eq!(heard(&event("alice", MemberChange::Added)), frame.as_str());
        assert_eq!(heard(&event("alice", MemberChange::Role)), frame.as_str());
        for (from, change, reason) in [
            ("alice", MemberChange::Removed, "kicked"),
            ("alice", MemberChange::Banned, "banned"),
            ("bob", MemberChange::Removed, "parted"),
        ] {
            let v: serde_json::Value = serde_json::from_str(&heard(&event(from, change))).unwrap();
            assert_eq!(
                (v["type"].as_str(), v["reason"].as_str()),
                (Some("left"), Some(reason))
            );
        }
        let message = StoredMessage::default();
        assert!(
            notice(&message, &frame).is_none(),
            "messages are not notices"
        );
    }

    #[test]
    fn who_sees_a_room() {
        let public = Access {
            exists: true,
            ..Default::default()
        };
        assert!(refusal("r", &public).is_none(), "anyone sees a public room");
        let code = |a: &Access| refusal("r", a).map(|e| e.code);
        assert_eq!(code(&Access::default()), Some(ErrorCode::NotFound));
        let private = Access {
            private: true,
            ..public.clone()
        };
        assert_eq!(code(&private), Some(ErrorCode::Forbidden));
        let member = Access {
            role: Some(Role::Member),
            ..private.clone()
        };
        assert_eq!(code(&member), None);
        for room in [&public, &member] {
            let banned = Access {
                banned: true,
                role: None,
                ..room.clone()
            };
            assert_eq!(code(&banned), Some(ErrorCode::Forbidden));
        }
    }
}
