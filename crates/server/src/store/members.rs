//! The rules of a room's membership (protocol 1.1 §3), once for every
//! backend: who may invite, kick, ban, unban, give a role or set the topic
//! ([`check_member`], pure), and what an accepted change writes besides its
//! event ([`Effect`]).
//!
//! The rules are checked inside the transaction that appends the event, with
//! the room held, so two moderators acting at once cannot together break
//! them (two owners demoting each other still leave one). A node's cache
//! ([`crate::access`]) answers the hot path's questions; it never decides a
//! moderation action.
//!
//! This module must not know SQL: a backend provides the statements
//! ([`super::EventTx`]).

use parley_protocol::{MemberChange, Role, same_user};

use super::{Change, Refusal};

/// What the transaction read before a membership change.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Facts {
    /// The sender's role in the room (`None`: not a member).
    pub actor: Option<Role>,
    /// The sender is a server admin: above every room role.
    pub admin: bool,
    /// The role of the user the change is about.
    pub target: Option<Role>,
    /// That user is banned from the room.
    pub target_banned: bool,
    /// How many owners the room has.
    pub owners: u64,
}

/// What an accepted change writes besides its event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Effect {
    /// The user becomes (or stays, with a new role) a member with this role.
    SetMember(Role),
    /// The user is a member no more.
    RemoveMember,
    /// The user is a member no more and may not come back.
    Ban,
    /// The user may join again.
    Unban,
    /// The room's topic becomes the event's text.
    Topic,
}

/// A rank to compare: a server admin is above every room role.
fn rank(role: Option<Role>, admin: bool) -> u8 {
    match (admin, role) {
        (true, _) => 4,
        (false, Some(Role::Owner)) => 3,
        (false, Some(Role::Moderator)) => 2,
        (false, Some(Role::Member)) => 1,
        (false, None) => 0,
    }
}

/// Checks a [`Change::Member`] or [`Change::Topic`] by `from` against the
/// room's state; the effect it has, or why it is refused.
///
/// - Invite, kick, ban, unban, topic: an owner or moderator (or a server
///   admin), never against a higher role; an owner cannot be kicked or
///   banned (hand ownership over first).
/// - Role: owners (and server admins) only; the last owner cannot give up
///   the role.
/// - Part (a removal of oneself): any member, but the last owner must hand
///   over first.
pub(crate) fn check_member(from: &str, change: &Change, f: &Facts) -> Result<Effect, Refusal> {
    let me = rank(f.actor, f.admin);
    let moderator = me >= rank(Some(Role::Moderator), false);
    let forbidden = |why: &str| Err(Refusal::Forbidden(why.to_string()));
    let (user, change, role) = match change {
        Change::Topic { .. } => {
            return if moderator {
                Ok(Effect::Topic)
            } else {
                forbidden("only an owner or moderator may set the topic")
            };
        }
        Change::Member {
            user, change, role, ..
        } => (user.as_str(), *change, *role),
        _ => return Err(Refusal::Forbidden("not a membership change".into())),
    };
    let myself = same_user(user, from);
    let last_owner = f.target == Some(Role::Owner) && f.owners <= 1;
    let not_member = || Err(Refusal::NotFound(format!("{user} is not a member")));
    let above_me = rank(f.target, false) > me;
    match change {
        MemberChange::Removed if myself => match f.target {
            None => not_member(),
            Some(_) if last_owner => Err(Refusal::Conflict(
                "the last owner cannot leave: make another member owner first".into(),
            )),
            Some(_) => Ok(Effect::RemoveMember),
        },
        _ if !moderator => forbidden("only an owner or moderator may do this"),
        MemberChange::Added => {
            if f.target_banned {
                Err(Refusal::Conflict(format!("{user} is banned: unban first")))
            } else if f.target.is_some() {
                Err(Refusal::Conflict(format!("{user} is already a member")))
            } else {
                Ok(Effect::SetMember(Role::Member))
            }
        }
        MemberChange::Removed => match f.target {
            None => not_member(),
            Some(Role::Owner) => forbidden("an owner cannot be kicked"),
            Some(_) if above_me => forbidden("cannot act against a higher role"),
            Some(_) => Ok(Effect::RemoveMember),
        },
        MemberChange::Banned => {
            if myself {
                forbidden("cannot ban yourself")
            } else if f.target_banned {
                Err(Refusal::Conflict(format!("{user} is already banned")))
            } else if f.target == Some(Role::Owner) {
                forbidden("an owner cannot be banned")
            } else if above_me {
                forbidden("cannot act against a higher role")
            } else {
                Ok(Effect::Ban)
            }
        }
        MemberChange::Unbanned if !f.target_banned => {
            Err(Refusal::NotFound(format!("{user} is not banned")))
        }
        MemberChange::Unbanned => Ok(Effect::Unban),
        MemberChange::Role => {
            let Some(role) = role else {
                return Err(Refusal::NotFound("a role change needs a role".into()));
            };
            if me < rank(Some(Role::Owner), false) {
                forbidden("only an owner may give roles")
            } else if f.target.is_none() {
                not_member()
            } else if f.target == Some(role) {
                Err(Refusal::Conflict(format!("{user} is already {role}")))
            } else if last_owner {
                Err(Refusal::Conflict(
                    "the last owner cannot give up the role: make another member owner first"
                        .into(),
                ))
            } else {
                Ok(Effect::SetMember(role))
            }
        }
    }
}

/// The `left` reason a stored member event gives the connections of its
/// user, if it takes them out of the room.
pub fn ejects(from: &str, user: &str, change: MemberChange) -> Option<&'static str> {
    use parley_protocol::left_reason;
    match change {
        MemberChange::Removed if same_user(from, user) => Some(left_reason::PARTED),
        MemberChange::Removed => Some(left_reason::KICKED),
        MemberChange::Banned => Some(left_reason::BANNED),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(user: &str, change: MemberChange, role: Option<Role>) -> Change {
        Change::Member {
            user: user.into(),
            change,
            role,
            admin: false,
        }
    }

    fn facts(actor: Option<Role>, target: Option<Role>) -> Facts {
        Facts {
            actor,
            target,
            owners: 1,
            ..Default::default()
        }
    }

    const O: Option<Role> = Some(Role::Owner);
    const M: Option<Role> = Some(Role::Moderator);
    const U: Option<Role> = Some(Role::Member);

    fn refused(r: Result<Effect, Refusal>) -> &'static str {
        match r {
            Ok(_) => "ok",
            Err(Refusal::Forbidden(_)) => "forbidden",
            Err(Refusal::NotFound(_)) => "not_found",
            Err(Refusal::Conflict(_)) => "conflict",
        }
    }

    #[test]
    fn moderators_invite_kick_and_ban_but_never_upwards() {
        use MemberChange::{Added, Banned, Removed, Unbanned};
        let kick = member("bob", Removed, None);
        let ban = member("bob", Banned, None);
        let add = member("bob", Added, None);
        // Owner and moderator act on members and moderators.
        for actor in [O, M] {
            for target in [U, M] {
                assert_eq!(
                    refused(check_member("al", &kick, &facts(actor, target))),
                    "ok"
                );
                assert_eq!(
                    refused(check_member("al", &ban, &facts(actor, target))),
                    "ok"
                );
            }
            assert_eq!(
                check_member("al", &add, &facts(actor, None)),
                Ok(Effect::SetMember(Role::Member))
            );
        }
        // Nobody kicks or bans an owner, not even another owner.
        for actor in [O, M] {
            assert_eq!(
                refused(check_member("al", &kick, &facts(actor, O))),
                "forbidden"
            );
            assert_eq!(
                refused(check_member("al", &ban, &facts(actor, O))),
                "forbidden"
            );
        }
        // Members and outsiders moderate nothing.
        for actor in [U, None] {
            for c in [&kick, &ban, &add, &member("bob", Unbanned, None)] {
                assert_eq!(
                    refused(check_member("al", c, &facts(actor, U))),
                    "forbidden"
                );
            }
            assert_eq!(
                refused(check_member(
                    "al",
                    &Change::Topic { admin: false },
                    &facts(actor, None)
                )),
                "forbidden"
            );
        }
        // A server admin is above every role.
        let admin = Facts {
            admin: true,
            ..facts(None, M)
        };
        assert_eq!(check_member("root", &ban, &admin), Ok(Effect::Ban));
    }

    #[test]
    fn what_the_target_must_be() {
        use MemberChange::{Added, Banned, Removed, Unbanned};
        let f = facts(M, None);
        assert_eq!(
            refused(check_member("al", &member("bob", Removed, None), &f)),
            "not_found"
        );
        assert_eq!(
            refused(check_member("al", &member("bob", Unbanned, None), &f)),
            "not_found"
        );
        assert_eq!(
            check_member("al", &member("bob", Banned, None), &f),
            Ok(Effect::Ban),
            "a ban needs no membership"
        );
        let banned = Facts {
            target_banned: true,
            ..f
        };
        assert_eq!(
            refused(check_member("al", &member("bob", Added, None), &banned)),
            "conflict"
        );
        assert_eq!(
            refused(check_member("al", &member("bob", Banned, None), &banned)),
            "conflict"
        );
        assert_eq!(
            check_member("al", &member("bob", Unbanned, None), &banned),
            Ok(Effect::Unban)
        );
        assert_eq!(
            refused(check_member(
                "al",
                &member("bob", Added, None),
                &facts(M, U)
            )),
            "conflict"
        );
        assert_eq!(
            refused(check_member(
                "al",
                &member("al", Banned, None),
                &facts(M, M)
            )),
            "forbidden"
        );
    }

    #[test]
    fn roles_are_given_by_owners_and_the_last_owner_stays() {
        use MemberChange::*;
        let promote = member("bob", Role, Some(parley_protocol::Role::Moderator));
        assert_eq!(
            check_member("al", &promote, &facts(O, U)),
            Ok(Effect::SetMember(parley_protocol::Role::Moderator))
        );
        assert_eq!(
            refused(check_member("al", &promote, &facts(M, U))),
            "forbidden"
        );
        assert_eq!(
            refused(check_member("al", &promote, &facts(O, None))),
            "not_found"
        );
        assert_eq!(
            refused(check_member("al", &promote, &facts(O, M))),
            "conflict"
        );
        // Handing over: make bob owner, then step down.
        let crown = member("bob", Role, O);
        assert_eq!(
            check_member("al", &crown, &facts(O, U)),
            Ok(Effect::SetMember(parley_protocol::Role::Owner))
        );
        let step_down = member("al", Role, U);
        assert_eq!(
            refused(check_member("al", &step_down, &facts(O, O))),
            "conflict"
        );
        let two = Facts {
            owners: 2,
            ..facts(O, O)
        };
        assert_eq!(refused(check_member("al", &step_down, &two)), "ok");
        // Parting: the last owner must hand over; others just go.
        let part = member("al", Removed, None);
        assert_eq!(refused(check_member("al", &part, &facts(O, O))), "conflict");
        assert_eq!(refused(check_member("al", &part, &two)), "ok");
        assert_eq!(
            refused(check_member("AL", &part, &facts(U, U))),
            "ok",
            "any spelling"
        );
        assert_eq!(
            refused(check_member("al", &part, &facts(None, None))),
            "not_found"
        );
    }

    #[test]
    fn which_events_take_connections_out() {
        use parley_protocol::left_reason::*;
        assert_eq!(ejects("al", "bob", MemberChange::Removed), Some(KICKED));
        assert_eq!(ejects("bob", "Bob", MemberChange::Removed), Some(PARTED));
        assert_eq!(ejects("al", "bob", MemberChange::Banned), Some(BANNED));
        for c in [
            MemberChange::Added,
            MemberChange::Unbanned,
            MemberChange::Role,
        ] {
            assert_eq!(ejects("al", "bob", c), None);
        }
    }
}
