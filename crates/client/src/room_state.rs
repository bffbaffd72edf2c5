//! A room folded from its event log: each message in its current state.
//!
//! The server sends a room as a log of events (protocol 1.1 §1): messages,
//! and the `edited`, `deleted` and `reaction` events that change them, all
//! in one gapless `seq` order. [`RoomState`] owns the fold of that log —
//! what a chat view shows: every message held with its latest text, whether
//! and when it was edited, whether it was deleted, and who reacted with
//! what. It holds a bounded window of the newest messages.
//!
//! The room itself is folded too (protocol 1.1 §3): its topic (from the
//! join, then `topic` events), whether it is private, the members whose
//! role it has heard of (the user's own from the join, the others from
//! `member` events or a members list), who is banned, and — once the
//! server took the user out — why (`left` reason).
//!
//! History lists already show each message in its state as of the read,
//! and the events after it follow in the same list; applying those events
//! again is harmless, because each one sets a state (a text, a flag, a user
//! in or out of a set) rather than toggling it.

use std::collections::BTreeMap;

use parley_protocol::{Member, MemberChange, Message, Role, RoomEvent, fold_username, same_user};

/// Messages held by default (the oldest are dropped first).
pub const DEFAULT_LIMIT: usize = 2000;

/// What applying one event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// A message new to this state, held under its seq.
    Message(u64),
    /// The message with this seq changed (edited, deleted, reacted to).
    Changed(u64),
    /// The room itself changed: a `member` or `topic` event with this seq.
    Room(u64),
    /// Nothing: an event already applied, or one that changes a message
    /// this state does not hold (older than its window).
    Nothing,
}

/// One reaction of a message, as shown: `👍 2`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReactionCount<'a> {
    pub emoji: &'a str,
    pub count: usize,
    /// Who reacted, sorted.
    pub users: &'a [String],
}

/// The folded state of one room.
#[derive(Debug, Clone)]
pub struct RoomState {
    room: String,
    messages: BTreeMap<u64, Message>,
    /// The highest seq applied from the log (any event type).
    last_seq: u64,
    limit: usize,
    topic: Option<String>,
    private: bool,
    /// Members whose role is known, by case-folded name: (name, role).
    members: BTreeMap<String, (String, Role)>,
    /// Users banned by the events seen, by case-folded name.
    banned: BTreeMap<String, String>,
    /// Why the server took the user out of the room (`kicked`, `banned`,
    /// `parted`); None while in it.
    left: Option<String>,
}

impl RoomState {
    pub fn new(room: &str) -> Self {
        Self::with_limit(room, DEFAULT_LIMIT)
    }

    /// A state that holds at most `limit` messages (at least one).
    pub fn with_limit(room: &str, limit: usize) -> Self {
        Self {
            room: room.to_string(),
            messages: BTreeMap::new(),
            last_seq: 0,
            limit: limit.max(1),
            topic: None,
            private: false,
            members: BTreeMap::new(),
            banned: BTreeMap::new(),
            left: None,
        }
    }

    pub fn room(&self) -> &str {
        &self.room
    }

    /// The highest seq applied from the log (0: none yet).
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Applies the next event of the log. Events at or below the last seq
    /// applied are repeats and change nothing; an event of another room is
    /// ignored.
    pub fn apply(&mut self, event: &RoomEvent) -> Applied {
        if event.room() != self.room || event.seq() <= self.last_seq {
            return Applied::Nothing;
        }
        self.last_seq = event.seq();
        match event {
            RoomEvent::Message(m) => {
                self.hold(m.clone());
                Applied::Message(m.seq)
            }
            RoomEvent::Edited(e) => self.change(e.target, |m| {
                // A deleted message stays deleted: the log keeps its edits
                // with their text removed.
                if !m.deleted {
                    m.text = e.text.clone();
                    m.edited = Some(e.ts.clone());
                }
            }),
            RoomEvent::Deleted(e) => self.change(e.target, |m| {
                m.deleted = true;
                m.text.clear();
                m.reactions.clear();
            }),
            RoomEvent::Reaction(r) => self.change(r.target, |m| {
                if m.deleted {
                    return;
                }
                let users = m.reactions.entry(r.emoji.clone()).or_default();
                let at = users.iter().position(|u| same_user(u, &r.from));
                match (r.on, at) {
                    (true, None) => {
                        users.push(r.from.clone());
                        users.sort();
                    }
                    (false, Some(i)) => {
                        users.remove(i);
                    }
                    _ => {}
                }
                if users.is_empty() {
                    m.reactions.remove(&r.emoji);
                }
            }),
            RoomEvent::Member(e) => {
                self.member(e);
                Applied::Room(e.seq)
            }
            RoomEvent::Topic(t) => {
                self.topic = Some(t.topic.clone()).filter(|t| !t.is_empty());
                Applied::Room(t.seq)
            }
        }
    }

    /// Folds a `member` event into the members and bans known.
    fn member(&mut self, e: &Member) {
        let key = fold_username(&e.user);
        match e.change {
            MemberChange::Added => {
                self.banned.remove(&key);
                self.members
                    .entry(key)
                    .or_insert_with(|| (e.user.clone(), Role::Member));
            }
            MemberChange::Removed => {
                self.members.remove(&key);
            }
            MemberChange::Banned => {
                self.members.remove(&key);
                self.banned.insert(key, e.user.clone());
            }
            MemberChange::Unbanned => {
                self.banned.remove(&key);
            }
            MemberChange::Role => {
                // A role event without a role changes nothing known.
                if let Some(role) = e.role {
                    self.members.insert(key, (e.user.clone(), role));
                }
            }
        }
    }

    /// The room's topic (None: none set).
    pub fn topic(&self) -> Option<&str> {
        self.topic.as_deref()
    }

    /// Whether only members see the room.
    pub fn is_private(&self) -> bool {
        self.private
    }

    /// What a `joined` says of the room: its topic and privacy, and the
    /// joining user's role. The user is back in the room.
    pub fn joined(&mut self, topic: Option<String>, private: bool, me: &str, role: Option<Role>) {
        self.topic = topic.filter(|t| !t.is_empty());
        self.private = private;
        self.left = None;
        match role {
            Some(role) => self.set_role(me, role),
            None => {
                self.members.remove(&fold_username(me));
            }
        }
    }

    /// Notes `user`'s role (from a members list, or the join).
    pub fn set_role(&mut self, user: &str, role: Role) {
        self.members
            .insert(fold_username(user), (user.to_string(), role));
    }

    /// Replaces the members known by a full list (`GET …/members`).
    pub fn set_members<'a>(&mut self, members: impl IntoIterator<Item = (&'a str, Role)>) {
        self.members = members
            .into_iter()
            .map(|(user, role)| (fold_username(user), (user.to_string(), role)))
            .collect();
    }

    /// `user`'s role, if known (None: not a member, or not heard of).
    pub fn role_of(&self, user: &str) -> Option<Role> {
        self.members
            .get(&fold_username(user))
            .map(|(_, role)| *role)
    }

    /// The members whose role is known, highest role first, then by name.
    pub fn members(&self) -> Vec<(&str, Role)> {
        let mut members: Vec<(&str, Role)> = self
            .members
            .values()
            .map(|(user, role)| (user.as_str(), *role))
            .collect();
        members.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        members
    }

    /// Whether the events seen ban `user` (and no later one lifted it).
    pub fn is_banned(&self, user: &str) -> bool {
        self.banned.contains_key(&fold_username(user))
    }

    /// The server took the user out of the room (`left` push): why.
    pub fn mark_left(&mut self, reason: &str) {
        self.left = Some(reason.to_string());
    }

    /// Why the server took the user out (`kicked`, `banned`, `parted`);
    /// None while in the room.
    pub fn left(&self) -> Option<&str> {
        self.left.as_deref()
    }

    /// Applies a page of the log, in order; returns what each event did.
    pub fn apply_all<'a>(
        &mut self,
        events: impl IntoIterator<Item = &'a RoomEvent>,
    ) -> Vec<Applied> {
        events.into_iter().map(|e| self.apply(e)).collect()
    }

    /// Adds a message from an older history page (already in its current
    /// state) unless it is held; it does not move the log position.
    pub fn insert_older(&mut self, m: Message) -> bool {
        if m.room != self.room || self.messages.contains_key(&m.seq) {
            return false;
        }
        // Older than the whole window while the window is full: it would
        // be the first to go.
        if self.messages.len() >= self.limit
            && self
                .messages
                .keys()
                .next()
                .is_some_and(|&first| m.seq < first)
        {
            return false;
        }
        self.hold(m);
        true
    }

    fn hold(&mut self, m: Message) {
        self.messages.insert(m.seq, m);
        while self.messages.len() > self.limit {
            self.messages.pop_first();
        }
    }

    fn change(&mut self, target: u64, f: impl FnOnce(&mut Message)) -> Applied {
        match self.messages.get_mut(&target) {
            Some(m) => {
                f(m);
                Applied::Changed(target)
            }
            None => Applied::Nothing,
        }
    }

    /// The message with this seq, in its current state.
    pub fn get(&self, seq: u64) -> Option<&Message> {
        self.messages.get(&seq)
    }

    /// The message a reply answers, if it is held.
    pub fn quoted(&self, reply: &Message) -> Option<&Message> {
        reply.reply_to.and_then(|seq| self.get(seq))
    }

    /// The messages held, oldest first.
    pub fn messages(&self) -> impl Iterator<Item = &Message> {
        self.messages.values()
    }

    pub fn len(&self) -> usize {
        self.messages.len()
    }

    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    /// The oldest seq held.
    pub fn oldest(&self) -> Option<u64> {
        self.messages.keys().next().copied()
    }

    /// Whether `user` has reacted to message `seq` with `emoji` (what a
    /// toggle decides between adding and removing on).
    pub fn has_reacted(&self, seq: u64, emoji: &str, user: &str) -> bool {
        self.get(seq)
            .and_then(|m| m.reactions.get(emoji))
            .is_some_and(|users| users.iter().any(|u| same_user(u, user)))
    }
}

/// The reactions of a message with their counts, by emoji.
pub fn reaction_counts(m: &Message) -> Vec<ReactionCount<'_>> {
    m.reactions
        .iter()
        .filter(|(_, users)| !users.is_empty())
        .map(|(emoji, users)| ReactionCount {
            emoji,
            count: users.len(),
            users,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use parley_protocol::{Deleted, Edited, Reaction};

    use super::*;

    fn msg(seq: u64, from: &str, text: &str) -> RoomEvent {
        RoomEvent::Message(Message {
            room: "general".into(),
            seq,
            from: from.into(),
            text: text.into(),
            ts: format!("t{seq}"),
            ..Default::default()
        })
    }

    fn edit(seq: u64, target: u64, text: &str) -> RoomEvent {
        RoomEvent::Edited(Edited {
            room: "general".into(),
            seq,
            from: "alice".into(),
            target,
            text: text.into(),
            ts: format!("t{seq}"),
            nonce: None,
        })
    }

    fn delete(seq: u64, target: u64) -> RoomEvent {
        RoomEvent::Deleted(Deleted {
            room: "general".into(),
            seq,
            from: "alice".into(),
            target,
            ts: format!("t{seq}"),
            nonce: None,
        })
    }

    fn react(seq: u64, target: u64, from: &str, emoji: &str, on: bool) -> RoomEvent {
        RoomEvent::Reaction(Reaction {
            room: "general".into(),
            seq,
            from: from.into(),
            target,
            emoji: emoji.into(),
            on,
            ts: format!("t{seq}"),
            nonce: None,
        })
    }

    fn member(
        seq: u64,
        from: &str,
        user: &str,
        change: MemberChange,
        role: Option<Role>,
    ) -> RoomEvent {
        RoomEvent::Member(Member {
            room: "general".into(),
            seq,
            from: from.into(),
            user: user.into(),
            change,
            role,
            reason: None,
            ts: format!("t{seq}"),
            nonce: None,
        })
    }

    fn topic(seq: u64, text: &str) -> RoomEvent {
        RoomEvent::Topic(parley_protocol::Topic {
            room: "general".into(),
            seq,
            from: "alice".into(),
            topic: text.into(),
            ts: format!("t{seq}"),
            nonce: None,
        })
    }

    #[test]
    fn member_and_topic_events_fold_into_the_room() {
        use MemberChange::{Added, Banned, Removed, Unbanned};
        let mut s = RoomState::new("general");
        s.joined(Some("old".into()), true, "Alice", Some(Role::Owner));
        assert_eq!((s.topic(), s.is_private()), (Some("old"), true));
        assert_eq!(s.role_of("alice"), Some(Role::Owner));
        let log = [
            msg(1, "alice", "hi"),
            topic(2, "lunch plans"),
            member(3, "alice", "bob", Added, None),
            member(4, "alice", "carol", Added, None),
            member(5, "alice", "Bob", MemberChange::Role, Some(Role::Moderator)),
            member(6, "bob", "carol", Removed, None),
            member(7, "bob", "dave", Banned, None),
        ];
        assert_eq!(
            s.apply_all(&log),
            [
                Applied::Message(1),
                Applied::Room(2),
                Applied::Room(3),
                Applied::Room(4),
                Applied::Room(5),
                Applied::Room(6),
                Applied::Room(7),
            ]
        );
        assert_eq!(s.topic(), Some("lunch plans"));
        assert_eq!(
            s.members(),
            [("Alice", Role::Owner), ("Bob", Role::Moderator)]
        );
        assert_eq!(s.role_of("carol"), None);
        assert!(s.is_banned("DAVE"));
        assert_eq!(s.last_seq(), 7, "room events move the log too");
        // A repeat changes nothing; an unban and a cleared topic do.
        assert_eq!(
            s.apply(&member(5, "alice", "bob", Removed, None)),
            Applied::Nothing
        );
        assert_eq!(s.role_of("bob"), Some(Role::Moderator));
        s.apply(&member(8, "bob", "dave", Unbanned, None));
        s.apply(&topic(9, ""));
        assert!(!s.is_banned("dave"));
        assert_eq!(s.topic(), None);
        // An invite keeps a known role; a members list replaces what is known.
        s.apply(&member(10, "alice", "bob", Added, None));
        assert_eq!(s.role_of("bob"), Some(Role::Moderator));
        s.set_members([("erin", Role::Member), ("Alice", Role::Owner)]);
        assert_eq!(
            s.members(),
            [("Alice", Role::Owner), ("erin", Role::Member)]
        );
    }

    #[test]
    fn being_taken_out_is_noted_until_joined_again() {
        let mut s = RoomState::new("general");
        s.apply(&msg(1, "bob", "bye"));
        assert_eq!(s.left(), None);
        s.mark_left("kicked");
        assert_eq!(s.left(), Some("kicked"));
        assert_eq!(s.len(), 1, "what was shown stays");
        s.joined(None, false, "alice", Some(Role::Member));
        assert_eq!(s.left(), None);
        assert_eq!(s.role_of("alice"), Some(Role::Member));
        // A DM has no roles.
        s.joined(None, false, "alice", None);
        assert_eq!(s.role_of("alice"), None);
    }

    #[test]
    fn edits_replace_the_text_and_mark_it() {
        let mut s = RoomState::new("general");
        assert_eq!(s.apply(&msg(1, "alice", "helo")), Applied::Message(1));
        assert_eq!(s.apply(&edit(2, 1, "hello")), Applied::Changed(1));
        assert_eq!(s.apply(&edit(3, 1, "hello!")), Applied::Changed(1));
        let m = s.get(1).unwrap();
        assert_eq!(m.text, "hello!");
        assert_eq!(m.edited.as_deref(), Some("t3"));
        assert_eq!(s.last_seq(), 3);
    }

    #[test]
    fn reactions_count_users_once_and_go_away_when_removed() {
        let mut s = RoomState::new("general");
        s.apply(&msg(1, "alice", "hi"));
        s.apply(&react(2, 1, "bob", "👍", true));
        s.apply(&react(3, 1, "carol", "👍", true));
        s.apply(&react(4, 1, "Bob", "👍", true)); // the same user, another spelling
        s.apply(&react(5, 1, "alice", "🎉", true));
        let m = s.get(1).unwrap();
        let counts: Vec<(&str, usize)> = reaction_counts(m)
            .iter()
            .map(|r| (r.emoji, r.count))
            .collect();
        assert_eq!(counts, [("🎉", 1), ("👍", 2)]);
        assert_eq!(m.reactions["👍"], ["bob", "carol"]);
        assert!(s.has_reacted(1, "👍", "BOB"));
        assert!(!s.has_reacted(1, "👍", "alice"));
        s.apply(&react(6, 1, "alice", "🎉", false));
        s.apply(&react(7, 1, "bob", "👍", false));
        let m = s.get(1).unwrap();
        assert_eq!(m.reactions.len(), 1);
        assert_eq!(m.reactions["👍"], ["carol"]);
    }

    #[test]
    fn a_delete_clears_text_and_reactions_and_sticks() {
        let mut s = RoomState::new("general");
        s.apply(&msg(1, "alice", "oops"));
        s.apply(&react(2, 1, "bob", "👍", true));
        assert_eq!(s.apply(&delete(3, 1)), Applied::Changed(1));
        // What a resume replays after the delete changes nothing.
        s.apply(&edit(4, 1, ""));
        s.apply(&react(5, 1, "bob", "👍", true));
        let m = s.get(1).unwrap();
        assert!(m.deleted);
        assert_eq!(m.text, "");
        assert!(m.reactions.is_empty());
        assert_eq!(m.edited, None);
    }

    #[test]
    fn repeats_other_rooms_and_unknown_targets_change_nothing() {
        let mut s = RoomState::new("general");
        s.apply(&msg(1, "alice", "one"));
        assert_eq!(s.apply(&msg(1, "alice", "again")), Applied::Nothing);
        assert_eq!(s.get(1).unwrap().text, "one");
        let mut other = msg(2, "bob", "elsewhere");
        if let RoomEvent::Message(m) = &mut other {
            m.room = "random".into();
        }
        assert_eq!(s.apply(&other), Applied::Nothing);
        assert_eq!(s.apply(&edit(5, 99, "nope")), Applied::Nothing);
        assert_eq!(s.last_seq(), 5, "the log moved on all the same");
        assert_eq!(s.apply(&edit(4, 1, "late")), Applied::Nothing);
    }

    #[test]
    fn a_history_page_in_current_state_folds_to_the_same_state() {
        // A joined.history: message 1 already shows the edit and the
        // reaction that follow it in the same page.
        let mut shown = Message {
            room: "general".into(),
            seq: 1,
            from: "alice".into(),
            text: "hello!".into(),
            ts: "t1".into(),
            edited: Some("t2".into()),
            ..Default::default()
        };
        shown.reactions.insert("👍".into(), vec!["bob".into()]);
        let page = [
            RoomEvent::Message(shown.clone()),
            edit(2, 1, "hello!"),
            react(3, 1, "bob", "👍", true),
        ];
        let mut s = RoomState::new("general");
        assert_eq!(
            s.apply_all(&page),
            [
                Applied::Message(1),
                Applied::Changed(1),
                Applied::Changed(1)
            ]
        );
        assert_eq!(s.get(1), Some(&shown));
    }

    #[test]
    fn replies_quote_their_target() {
        let mut s = RoomState::new("general");
        s.apply(&msg(1, "alice", "lunch?"));
        let mut reply = msg(2, "bob", "yes");
        if let RoomEvent::Message(m) = &mut reply {
            m.reply_to = Some(1);
        }
        s.apply(&reply);
        let r = s.get(2).unwrap();
        assert_eq!(s.quoted(r).map(|q| q.text.as_str()), Some("lunch?"));
        assert_eq!(s.quoted(s.get(1).unwrap()), None);
    }

    #[test]
    fn the_window_is_bounded_and_older_pages_fill_in() {
        let mut s = RoomState::with_limit("general", 3);
        for seq in 1..=5 {
            s.apply(&msg(seq, "alice", "x"));
        }
        assert_eq!(s.len(), 3);
        assert_eq!(s.oldest(), Some(3));
        // Full: an older message would be dropped at once.
        let RoomEvent::Message(old) = msg(2, "alice", "old") else {
            unreachable!()
        };
        assert!(!s.insert_older(old.clone()));
        let mut roomy = RoomState::with_limit("general", 10);
        roomy.apply(&msg(5, "alice", "x"));
        assert!(roomy.insert_older(old.clone()));
        assert!(!roomy.insert_older(old), "held already");
        assert_eq!(roomy.oldest(), Some(2));
        assert_eq!(roomy.last_seq(), 5);
        assert_eq!(roomy.messages().map(|m| m.seq).collect::<Vec<_>>(), [2, 5]);
    }
}
