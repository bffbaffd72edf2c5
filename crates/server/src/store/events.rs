//! The rules of room events (protocol 1.1 §1), once for every backend:
//! which appends are checked one by one ([`runs`]), what an edit, delete,
//! reaction or reply may target ([`check_target`]), what a reaction that
//! changes nothing answers, and the event and state changes an accepted one
//! makes ([`append_event`]).
//!
//! A backend provides the statements ([`EventTx`], inside the transaction
//! of the batch, whose rooms it holds); this module decides. It must not
//! know SQL dialects, and must not be called outside a batch's transaction:
//! the checks are only true while the room is held.

use async_trait::async_trait;

use parley_protocol::Role;

use super::members::{Effect, Facts, check_member};
use super::{AppendOutcome, Change, EventKind, NewMessage, Refusal, StoreError, StoredMessage};

/// The statements [`append_event`] needs, run inside the batch's
/// transaction. Seqs and stamps are the backend's: SQLite's from the node's
/// clock, PostgreSQL's from the database server's.
#[async_trait]
pub(crate) trait EventTx: Send {
    /// The event `from` appended to `room` with `nonce`, if any.
    async fn by_nonce(
        &mut self,
        room: &str,
        from: &str,
        nonce: &str,
    ) -> Result<Option<StoredMessage>, StoreError>;

    /// The event `seq` of `room`, if any.
    async fn by_seq(&mut self, room: &str, seq: u64) -> Result<Option<StoredMessage>, StoreError>;

    /// `user_key`'s state for `emoji` on `target`: (on, the seq that set it).
    async fn reaction_state(
        &mut self,
        room: &str,
        target: u64,
        emoji: &str,
        user_key: &str,
    ) -> Result<Option<(bool, i64)>, StoreError>;

    /// Takes the room's next seq and its stamp (never below the room's last
    /// ts); `accepted_ms` is when the node accepted the append.
    async fn next_seq(&mut self, room: &str, accepted_ms: i64) -> Result<(u64, i64), StoreError>;

    /// Inserts the event's row.
    async fn insert(&mut self, event: &StoredMessage) -> Result<(), StoreError>;

    /// Sets the current text of message `target`, edited at `ts_ms`.
    async fn set_text(
        &mut self,
        room: &str,
        target: u64,
        text: &str,
        ts_ms: i64,
    ) -> Result<(), StoreError>;

    /// Marks message `target` deleted: its text, the text of its edits and
    /// its reactions go.
    async fn set_deleted(&mut self, room: &str, target: u64) -> Result<(), StoreError>;

    /// Records `user`'s current state for `emoji` on `target`, set by `seq`.
    async fn set_reaction(
        &mut self,
        room: &str,
        target: u64,
        emoji: &str,
        user: &str,
        on: bool,
        seq: u64,
    ) -> Result<(), StoreError>;

    // Membership (protocol 1.1 §3), for [`Change::Member`] and
    // [`Change::Topic`].

    /// How many owners `room` has; `None` if the room does not exist.
    async fn owners(&mut self, room: &str) -> Result<Option<u64>, StoreError>;

    /// `user_key`'s role in `room` (`None`: not a member), and whether it
    /// is banned from it.
    async fn member_state(
        &mut self,
        room: &str,
        user_key: &str,
    ) -> Result<(Option<Role>, bool), StoreError>;

    /// Makes `user` (a name as shown; its key is the case-folded name) a
    /// member with `role`; an existing member keeps its `since_ms`.
    async fn set_member(
        &mut self,
        room: &str,
        user: &str,
        role: Role,
        since_ms: i64,
    ) -> Result<(), StoreError>;

    /// Ends `user_key`'s membership (if any).
    async fn remove_member(&mut self, room: &str, user_key: &str) -> Result<(), StoreError>;

    /// Bans `user` (a name as shown): `by` banned it at `at_ms` for `reason`.
    async fn set_ban(
        &mut self,
        room: &str,
        user: &str,
        by: &str,
        reason: &str,
        at_ms: i64,
    ) -> Result<(), StoreError>;

    /// Lifts `user_key`'s ban (if any).
    async fn remove_ban(&mut self, room: &str, user_key: &str) -> Result<(), StoreError>;

    /// Sets the room's topic.
    async fn set_topic(&mut self, room: &str, topic: &str) -> Result<(), StoreError>;
}

/// Appends one event (an edit, delete, reaction, or a reply) after the
/// checks only the store can make; a refused one, or a reaction that
/// changes nothing, stores nothing. The target's current state is updated
/// in the same transaction.
pub(crate) async fn append_event(
    tx: &mut impl EventTx,
    room: &str,
    m: &NewMessage,
) -> Result<AppendOutcome, StoreError> {
    if let Some(nonce) = &m.nonce
        && let Some(original) = tx.by_nonce(room, &m.from, nonce).await?
    {
        return Ok(AppendOutcome::Duplicate(original));
    }
    if matches!(m.change, Change::Member { .. } | Change::Topic { .. }) {
        return append_member_event(tx, room, m).await;
    }
    // A room's owners and moderators delete any message of the room, as a
    // server admin does anywhere: read in the transaction, like the rules.
    let mut moderated;
    let mut m = m;
    if let Change::Delete {
        target,
        moderator: false,
    } = m.change
    {
        let (role, _) = tx
            .member_state(room, &parley_protocol::fold_username(&m.from))
            .await?;
        if role.is_some_and(|r| r >= Role::Moderator) {
            moderated = m.clone();
            moderated.change = Change::Delete {
                target,
                moderator: true,
            };
            m = &moderated;
        }
    }
    let target = match target_of(&m.change) {
        Some(seq) => tx.by_seq(room, seq).await?,
        None => None,
    };
    let facts = target
        .as_ref()
        .map(|t| (t.kind.name(), t.from.as_str(), t.deleted));
    if let Err(refusal) = check_target(&m.change, &m.from, facts) {
        return Ok(AppendOutcome::Refused(refusal));
    }
    let user_key = parley_protocol::fold_username(&m.from);
    if let Change::React {
        target: t, emoji, ..
    } = &m.change
    {
        let state = tx.reaction_state(room, *t, emoji, &user_key).await?;
        if !reaction_changes(&m.change, state) {
            // Nothing changes: the answer is the event that set this state
            // (the message itself for a reaction never added).
            let setter = match state {
                Some((_, seq)) => tx.by_seq(room, seq as u64).await?,
                None => target,
            };
            return setter
                .map(AppendOutcome::Duplicate)
                .ok_or_else(|| StoreError::Internal("a reaction's state lost its event".into()));
        }
    }
    let (seq, stamp) = tx.next_seq(room, m.ts_ms).await?;
    let event = event_of(room, m, seq, stamp);
    tx.insert(&event).await?;
    match &m.change {
        Change::Edit { target } => tx.set_text(room, *target, &m.text, stamp).await?,
        Change::Delete { target, .. } => tx.set_deleted(room, *target).await?,
        Change::React { target, emoji, on } => {
            tx.set_reaction(room, *target, emoji, &m.from, *on, seq)
                .await?
        }
        Change::Message | Change::Reply { .. } | Change::Member { .. } | Change::Topic { .. } => {}
    }
    Ok(AppendOutcome::Stored(event))
}

/// Appends a membership or topic event after [`check_member`]'s rules,
/// read in this transaction, and applies its [`Effect`].
async fn append_member_event(
    tx: &mut impl EventTx,
    room: &str,
    m: &NewMessage,
) -> Result<AppendOutcome, StoreError> {
    let Some(owners) = tx.owners(room).await? else {
        return Ok(AppendOutcome::Refused(Refusal::NotFound(format!(
            "room {room:?} does not exist"
        ))));
    };
    let from_key = parley_protocol::fold_username(&m.from);
    let (actor, _) = tx.member_state(room, &from_key).await?;
    let (admin, user) = match &m.change {
        Change::Member { admin, user, .. } => (*admin, Some(user.as_str())),
        Change::Topic { admin } => (*admin, None),
        _ => (false, None),
    };
    let user_key = user.map(parley_protocol::fold_username);
    let (target, target_banned) = match &user_key {
        Some(key) if *key == from_key => (actor, false),
        Some(key) => tx.member_state(room, key).await?,
        None => (None, false),
    };
    let facts = Facts {
        actor,
        admin,
        target,
        target_banned,
        owners,
    };
    let effect = match check_member(&m.from, &m.change, &facts) {
        Ok(effect) => effect,
        Err(refusal) => return Ok(AppendOutcome::Refused(refusal)),
    };
    let (seq, stamp) = tx.next_seq(room, m.ts_ms).await?;
    let event = event_of(room, m, seq, stamp);
    tx.insert(&event).await?;
    let (user, key) = (user.unwrap_or_default(), user_key.unwrap_or_default());
    match effect {
        Effect::SetMember(role) => tx.set_member(room, user, role, stamp).await?,
        Effect::RemoveMember => tx.remove_member(room, &key).await?,
        Effect::Ban => {
            tx.remove_member(room, &key).await?;
            tx.set_ban(room, user, &m.from, &m.text, stamp).await?;
        }
        Effect::Unban => tx.remove_ban(room, &key).await?,
        Effect::Topic => tx.set_topic(room, &m.text).await?,
    }
    Ok(AppendOutcome::Stored(event))
}

/// Validates an event against its target, the way every backend must: the
/// target's row is `(kind, sender, deleted)`, or `None` if the room has no
/// such seq. Pure, so both backends share (and unit tests pin) the rules.
pub(crate) fn check_target(
    change: &Change,
    from: &str,
    target: Option<(&str, &str, bool)>,
) -> Result<(), Refusal> {
    let (seq, needs_live) = match change {
        Change::Message | Change::Member { .. } | Change::Topic { .. } => return Ok(()),
        Change::Reply { reply_to } => (*reply_to, false),
        Change::Edit { target } | Change::Delete { target, .. } => (*target, true),
        Change::React { target, .. } => (*target, true),
    };
    let Some((_, author, deleted)) = target.filter(|(kind, _, _)| *kind == "message") else {
        return Err(Refusal::NotFound(format!("no message {seq} in this room")));
    };
    if needs_live && deleted {
        return Err(Refusal::NotFound(format!("message {seq} was deleted")));
    }
    match change {
        Change::Edit { .. } if !parley_protocol::same_user(author, from) => Err(
            Refusal::Forbidden("only its author may edit a message".into()),
        ),
        Change::Delete { moderator, .. }
            if !*moderator && !parley_protocol::same_user(author, from) =>
        {
            Err(Refusal::Forbidden(
                "only its author or a server admin may delete a message".into(),
            ))
        }
        _ => Ok(()),
    }
}

/// The seq an event names (its target, or the message a reply answers).
pub(crate) fn target_of(change: &Change) -> Option<u64> {
    match change {
        Change::Message | Change::Member { .. } | Change::Topic { .. } => None,
        Change::Reply { reply_to } => Some(*reply_to),
        Change::Edit { target } | Change::Delete { target, .. } => Some(*target),
        Change::React { target, .. } => Some(*target),
    }
}

/// Whether a reaction changes anything, given the user's current state for
/// that emoji (`(on, seq of the event that set it)`, none if never set).
pub(crate) fn reaction_changes(change: &Change, state: Option<(bool, i64)>) -> bool {
    match change {
        Change::React { on, .. } => state.is_some_and(|(current, _)| current) != *on,
        _ => true,
    }
}

/// The event an accepted append stores, once it has its seq and stamp.
pub(crate) fn event_of(room: &str, m: &NewMessage, seq: u64, ts_ms: i64) -> StoredMessage {
    let (kind, reply_to) = match &m.change {
        Change::Message => (EventKind::Message, None),
        Change::Reply { reply_to } => (EventKind::Message, Some(*reply_to)),
        Change::Edit { target } => (EventKind::Edited { target: *target }, None),
        Change::Delete { target, .. } => (EventKind::Deleted { target: *target }, None),
        Change::React { target, emoji, on } => (
            EventKind::Reaction {
                target: *target,
                emoji: emoji.clone(),
                on: *on,
            },
            None,
        ),
        Change::Member {
            user, change, role, ..
        } => (
            EventKind::Member {
                user: user.clone(),
                change: *change,
                role: *role,
            },
            None,
        ),
        Change::Topic { .. } => (EventKind::Topic, None),
    };
    StoredMessage {
        room: room.to_string(),
        seq,
        from: m.from.clone(),
        text: m.text.clone(),
        ts_ms,
        nonce: m.nonce.clone(),
        kind,
        reply_to,
        ..Default::default()
    }
}

impl StoredMessage {
    /// The reaction columns (`emoji`, `reaction_on`) of an event row.
    pub(crate) fn reaction_columns(&self) -> (Option<&str>, Option<bool>) {
        match &self.kind {
            EventKind::Reaction { emoji, on, .. } => (Some(emoji.as_str()), Some(*on)),
            _ => (None, None),
        }
    }
}

/// Splits one room's share of a batch, in order, into runs of plain
/// messages (`Ok`, appended together) and single events (`Err(index)`,
/// appended one by one: each is checked against the state the ones before
/// it left).
pub(crate) fn runs<'a>(
    batch: &[NewMessage],
    indices: &'a [usize],
) -> Vec<Result<&'a [usize], usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    for (k, &i) in indices.iter().enumerate() {
        if batch[i].change != Change::Message {
            if start < k {
                out.push(Ok(&indices[start..k]));
            }
            out.push(Err(i));
            start = k + 1;
        }
    }
    if start < indices.len() {
        out.push(Ok(&indices[start..]));
    }
    out
}

/// Puts `(target, emoji, user)` rows (sorted by target, then emoji) into
/// the page's messages.
pub(crate) fn with_reactions(
    mut page: Vec<StoredMessage>,
    rows: Vec<(u64, String, String)>,
) -> Vec<StoredMessage> {
    let mut rows = rows.into_iter().peekable();
    for m in page.iter_mut() {
        while let Some((target, emoji, user)) = rows.next_if(|(t, _, _)| *t <= m.seq) {
            if target == m.seq && m.kind == EventKind::Message {
                m.reactions.entry(emoji).or_default().push(user);
            }
        }
    }
    for users in page.iter_mut().flat_map(|m| m.reactions.values_mut()) {
        users.sort_by_key(|u| parley_protocol::fold_username(u));
    }
    page
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_rules() {
        let live = Some(("message", "Alice", false));
        let gone = Some(("message", "alice", true));
        let edit = Change::Edit { target: 3 };
        let delete = |moderator| Change::Delete {
            target: 3,
            moderator,
        };
        let react = Change::React {
            target: 3,
            emoji: "👍".into(),
            on: true,
        };
        let reply = Change::Reply { reply_to: 3 };
        // The author (any spelling) edits and deletes; others may not.
        assert_eq!(check_target(&edit, "alice", live), Ok(()));
        assert!(matches!(
            check_target(&edit, "bob", live),
            Err(Refusal::Forbidden(_))
        ));
        assert_eq!(check_target(&delete(false), "ALICE", live), Ok(()));
        assert!(matches!(
            check_target(&delete(false), "bob", live),
            Err(Refusal::Forbidden(_))
        ));
        assert_eq!(
            check_target(&delete(true), "bob", live),
            Ok(()),
            "a server admin"
        );
        assert_eq!(check_target(&react, "bob", live), Ok(()));
        // Unknown, not a message, or deleted: not_found (a reply may answer a
        // deleted message: it was said).
        for change in [&edit, &delete(true), &react, &reply] {
            assert!(matches!(
                check_target(change, "alice", None),
                Err(Refusal::NotFound(_))
            ));
            let not_a_message = Some(("reaction", "alice", false));
            assert!(matches!(
                check_target(change, "alice", not_a_message),
                Err(Refusal::NotFound(_))
            ));
        }
        for change in [&edit, &delete(true), &react] {
            assert!(matches!(
                check_target(change, "alice", gone),
                Err(Refusal::NotFound(_))
            ));
        }
        assert_eq!(check_target(&reply, "bob", gone), Ok(()));
        assert_eq!(check_target(&Change::Message, "bob", None), Ok(()));
    }
}
