//! Rooms, members, roles and bans (protocol 1.1 §3) in the store, one
//! suite run against both backends: creating and joining rooms, the access
//! question, membership events and their rules (checked in the transaction
//! that appends them, gapless), a room moderator's delete, room lists,
//! search's private rooms and bans, and the upgrade that makes readers
//! members.

#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

use std::sync::Arc;

use parley_protocol::{MemberChange, Role, RoomEvent};
use parley_server::store::search::{SearchPage, SearchQuery};
use parley_server::store::{
    Access, AppendOutcome, BanRow, Change, EventKind, NewMessage, Refusal, RoomListing, Store,
    StoreError, StoredMessage,
};
use parley_testkit::services::Postgres;
use parley_testkit::{postgres_pair, postgres_stores, sqlite_pair, sqlite_stores};

fn msg(room: &str, from: &str, text: &str) -> NewMessage {
    NewMessage {
        room: room.into(),
        from: from.into(),
        text: text.into(),
        ts_ms: parley_protocol::time::now_ms(),
        ..Default::default()
    }
}

/// A membership change of `user` by `from` (`text`: a ban's reason).
fn member(
    room: &str,
    from: &str,
    user: &str,
    change: MemberChange,
    role: Option<Role>,
    text: &str,
) -> NewMessage {
    NewMessage {
        change: Change::Member {
            user: user.into(),
            change,
            role,
            admin: false,
        },
        ..msg(room, from, text)
    }
}

fn topic(room: &str, from: &str, text: &str) -> NewMessage {
    NewMessage {
        change: Change::Topic { admin: false },
        ..msg(room, from, text)
    }
}

fn delete(room: &str, from: &str, target: u64) -> NewMessage {
    NewMessage {
        change: Change::Delete {
            target,
            moderator: false,
        },
        ..msg(room, from, "")
    }
}

async fn one(store: &Arc<dyn Store>, m: NewMessage) -> AppendOutcome {
    let mut out = store.append_batch(&[m]).await.unwrap();
    assert_eq!(out.len(), 1);
    out.pop().unwrap()
}

/// The seq of a stored event; panics on anything else.
#[track_caller]
fn stored(o: &AppendOutcome) -> u64 {
    match o {
        AppendOutcome::Stored(m) => m.seq,
        other => panic!("expected a stored event, got {other:?}"),
    }
}

/// The kind of refusal ("forbidden", "not_found", "conflict"); panics if
/// the append was not refused.
#[track_caller]
fn refused(o: &AppendOutcome) -> &'static str {
    match o {
        AppendOutcome::Refused(Refusal::Forbidden(_)) => "forbidden",
        AppendOutcome::Refused(Refusal::NotFound(_)) => "not_found",
        AppendOutcome::Refused(Refusal::Conflict(_)) => "conflict",
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// (user, role) of the room's members, in the store's order.
async fn members(store: &Arc<dyn Store>, room: &str) -> Vec<(String, Role)> {
    store
        .members(room)
        .await
        .unwrap()
        .into_iter()
        .map(|m| (m.user, m.role))
        .collect()
}

fn who(list: &[(&str, Role)]) -> Vec<(String, Role)> {
    list.iter().map(|(u, r)| (u.to_string(), *r)).collect()
}

fn access(private: bool, topic: &str, role: Option<Role>, banned: bool) -> Access {
    Access {
        exists: true,
        private,
        topic: topic.into(),
        role,
        banned,
    }
}

async fn history(store: &Arc<dyn Store>, room: &str) -> Vec<StoredMessage> {
    store.range_forward(room, 0, u64::MAX, 1000).await.unwrap()
}

/// Every seq of the room from 1 to its `last_seq`, once: refused appends
/// took none.
async fn assert_gapless(store: &Arc<dyn Store>, room: &str) {
    let last = store.last_seq(room).await.unwrap().unwrap();
    let seqs: Vec<u64> = history(store, room).await.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, (1..=last).collect::<Vec<_>>(), "{room} is gapless");
}

// ---------------------------------------------------------------- rooms

/// Creating, joining, the access question, the members list and the room
/// list. `b` is another handle (another node).
async fn rooms_suite(a: Arc<dyn Store>, b: Arc<dyn Store>) {
    // create_room: the creator owns it; a second create is a conflict and
    // changes nothing.
    a.create_room("lab", "Alice", true, "secrets")
        .await
        .unwrap();
    for (store, owner, private) in [(&a, "bob", false), (&b, "ALICE", true)] {
        let again = store.create_room("lab", owner, private, "other").await;
        assert!(matches!(again, Err(StoreError::Conflict(_))), "{again:?}");
    }
    assert_eq!(members(&b, "lab").await, who(&[("Alice", Role::Owner)]));
    assert_eq!(b.last_seq("lab").await.unwrap(), Some(0));
    assert_eq!(
        b.access("lab", "alice").await.unwrap(),
        access(true, "secrets", Some(Role::Owner), false)
    );
    assert_eq!(
        b.access("lab", "bob").await.unwrap(),
        access(true, "secrets", None, false)
    );
    assert_eq!(b.access("nowhere", "bob").await.unwrap(), Access::default());

    // enter_room never adds anyone to a private room, owner or not.
    assert_eq!(
        a.enter_room("lab", "Bob").await.unwrap(),
        access(true, "secrets", None, false)
    );
    assert_eq!(
        b.enter_room("lab", "alice").await.unwrap(),
        access(true, "secrets", Some(Role::Owner), false)
    );
    assert_eq!(members(&a, "lab").await, who(&[("Alice", Role::Owner)]));

    // enter_room creates a missing room, public, with its first user as
    // owner; others join it as members; a member joins again unchanged.
    assert_eq!(
        a.enter_room("town", "Carol").await.unwrap(),
        access(false, "", Some(Role::Owner), false)
    );
    assert_eq!(b.last_seq("town").await.unwrap(), Some(0));
    assert_eq!(
        b.enter_room("town", "dave").await.unwrap(),
        access(false, "", Some(Role::Member), false)
    );
    let before = b.members("town").await.unwrap();
    assert!(before.iter().all(|m| m.since_ms > 0), "{before:?}");
    assert_eq!(
        a.enter_room("town", "DAVE").await.unwrap(),
        access(false, "", Some(Role::Member), false),
        "any spelling is the same user"
    );
    assert_eq!(
        a.enter_room("town", "carol").await.unwrap(),
        access(false, "", Some(Role::Owner), false)
    );
    assert_eq!(
        b.members("town").await.unwrap(),
        before,
        "a member's join changes nothing (not even its spelling or since)"
    );
    assert_eq!(
        members(&a, "town").await,
        who(&[("Carol", Role::Owner), ("dave", Role::Member)])
    );

    // A room created without an owner (older versions, a DM) is joined as
    // a member.
    a.ensure_room("legacy").await.unwrap();
    assert_eq!(
        a.access("legacy", "erin").await.unwrap(),
        access(false, "", None, false)
    );
    assert_eq!(
        b.enter_room("legacy", "erin").await.unwrap(),
        access(false, "", Some(Role::Member), false)
    );

    // Members: owners, moderators, members, each by name whatever its case.
    a.create_room("order", "zed", false, "").await.unwrap();
    for user in ["bob", "Yann", "amy", "Carl", "Bea"] {
        a.enter_room("order", user).await.unwrap();
    }
    for (user, role) in [("Carl", Role::Moderator), ("Yann", Role::Owner)] {
        stored(
            &one(
                &a,
                member("order", "zed", user, MemberChange::Role, Some(role), ""),
            )
            .await,
        );
    }
    assert_eq!(
        members(&b, "order").await,
        who(&[
            ("Yann", Role::Owner),
            ("zed", Role::Owner),
            ("Carl", Role::Moderator),
            ("amy", Role::Member),
            ("Bea", Role::Member),
            ("bob", Role::Member),
        ])
    );
    assert!(b.members("nowhere").await.unwrap().is_empty());

    // Room lists: public rooms and DM rooms for everyone (the caller
    // filters DMs by name), private ones for their members, all of them for
    // a server admin; with the caller's role.
    for dm in ["dm:alice:bob", "dm:carol:dave"] {
        a.ensure_room(dm).await.unwrap();
    }
    one(&a, msg("town", "carol", "hello town")).await;
    let listing = |room: &str, last_seq, private, topic: &str, role| RoomListing {
        room: room.into(),
        last_seq,
        private,
        topic: topic.into(),
        role,
    };
    let public = |role_in_town, role_in_order| {
        vec![
            listing("dm:alice:bob", 0, false, "", None),
            listing("dm:carol:dave", 0, false, "", None),
        ]
        .into_iter()
        .chain([listing("legacy", 0, false, "", None)])
        .chain([listing("order", 2, false, "", role_in_order)])
        .chain([listing("town", 1, false, "", role_in_town)])
        .collect::<Vec<_>>()
    };
    let lab = |role| listing("lab", 0, true, "secrets", role);
    let mut alice = public(None, None);
    alice.insert(2, lab(Some(Role::Owner)));
    assert_eq!(b.room_list("alice", false).await.unwrap(), alice);
    assert_eq!(b.room_list("alice", true).await.unwrap(), alice);
    assert_eq!(
        b.room_list("dave", false).await.unwrap(),
        public(Some(Role::Member), None),
        "an outsider does not see a private room"
    );
    let mut admin = public(None, None);
    admin.insert(2, lab(None));
    assert_eq!(b.room_list("root", true).await.unwrap(), admin);
    assert_eq!(
        a.room_list("yann", false).await.unwrap(),
        public(None, Some(Role::Owner))
    );
}

// ----------------------------------------------------------- moderation

/// Membership events: the rules, what each one changes, refusals that take
/// no seq, a room moderator's delete, and history reading them back.
async fn moderation_suite(a: Arc<dyn Store>, b: Arc<dyn Store>) {
    use MemberChange::{Added, Banned, Removed, Unbanned};
    let room = "mod";
    a.create_room(room, "Olivia", false, "").await.unwrap();
    for user in ["mike", "uma"] {
        b.enter_room(room, user).await.unwrap();
    }
    assert_eq!(stored(&one(&a, msg(room, "Olivia", "hello")).await), 1);

    // Invites: owners and moderators only, not twice.
    let invite = |from: &str, user: &str| member(room, from, user, Added, None, "");
    assert_eq!(refused(&one(&a, invite("mike", "Nina")).await), "forbidden");
    assert_eq!(refused(&one(&a, invite("zoe", "Nina")).await), "forbidden");
    assert_eq!(stored(&one(&a, invite("Olivia", "Nina")).await), 2);
    assert_eq!(
        refused(&one(&b, invite("olivia", "NINA")).await),
        "conflict"
    );
    assert_eq!(
        b.access(room, "nina").await.unwrap().role,
        Some(Role::Member)
    );

    // Roles: owners only.
    let give =
        |from: &str, user: &str, role| member(room, from, user, MemberChange::Role, Some(role), "");
    assert_eq!(
        stored(&one(&a, give("Olivia", "mike", Role::Moderator)).await),
        3
    );
    assert_eq!(
        refused(&one(&a, give("mike", "uma", Role::Moderator)).await),
        "forbidden"
    );
    assert_eq!(
        refused(&one(&a, give("Olivia", "mike", Role::Moderator)).await),
        "conflict"
    );
    assert_eq!(
        refused(&one(&a, give("Olivia", "stranger", Role::Moderator)).await),
        "not_found"
    );
    assert_eq!(
        b.access(room, "mike").await.unwrap().role,
        Some(Role::Moderator)
    );

    // A room moderator deletes another's message; a plain member may not.
    assert_eq!(stored(&one(&a, msg(room, "uma", "buy my stuff")).await), 4);
    assert_eq!(
        refused(&one(&a, delete(room, "nina", 4)).await),
        "forbidden"
    );
    let out = one(&b, delete(room, "mike", 4)).await;
    assert_eq!(stored(&out), 5);
    assert_eq!(
        out.message().unwrap().kind,
        EventKind::Deleted { target: 4 }
    );
    // A moderator deleting someone's message elsewhere is no moderator there.
    a.create_room("other", "uma", false, "").await.unwrap();
    b.enter_room("other", "mike").await.unwrap();
    one(&a, msg("other", "uma", "mine")).await;
    assert_eq!(
        refused(&one(&a, delete("other", "mike", 1)).await),
        "forbidden"
    );

    // Kicks: never an owner, never by a member; twice is not_found.
    let kick = |from: &str, user: &str| member(room, from, user, Removed, None, "");
    assert_eq!(refused(&one(&a, kick("mike", "Olivia")).await), "forbidden");
    assert_eq!(refused(&one(&a, kick("uma", "nina")).await), "forbidden");
    assert_eq!(stored(&one(&a, kick("mike", "nina")).await), 6);
    assert_eq!(refused(&one(&a, kick("mike", "nina")).await), "not_found");
    assert_eq!(b.access(room, "nina").await.unwrap().role, None);

    // A ban ends the membership, keeps its reason, and bars joining.
    let ban = |from: &str, user: &str, why: &str| member(room, from, user, Banned, None, why);
    assert_eq!(refused(&one(&a, ban("uma", "mike", "")).await), "forbidden");
    assert_eq!(
        refused(&one(&a, ban("mike", "mike", "")).await),
        "forbidden"
    );
    assert_eq!(stored(&one(&a, ban("mike", "Uma", "flooding")).await), 7);
    assert_eq!(
        b.access(room, "uma").await.unwrap(),
        access(false, "", None, true)
    );
    let bans = b.bans(room).await.unwrap();
    assert_eq!(bans.len(), 1);
    let BanRow {
        user,
        by,
        reason,
        at_ms,
    } = &bans[0];
    assert_eq!(
        (user.as_str(), by.as_str(), reason.as_str()),
        ("Uma", "mike", "flooding")
    );
    assert!(*at_ms > 0);
    assert_eq!(
        a.enter_room(room, "UMA").await.unwrap(),
        access(false, "", None, true),
        "a banned user does not join"
    );
    assert!(
        !members(&a, room)
            .await
            .iter()
            .any(|(u, _)| u == "uma" || u == "Uma")
    );
    assert_eq!(refused(&one(&a, ban("mike", "uma", "")).await), "conflict");
    assert_eq!(refused(&one(&a, invite("mike", "uma")).await), "conflict");
    // A ban needs no membership: an outsider is barred before joining.
    assert_eq!(stored(&one(&a, ban("Olivia", "troll", "")).await), 8);
    assert_eq!(
        b.enter_room(room, "troll").await.unwrap(),
        access(false, "", None, true)
    );

    // The topic: owners and moderators.
    assert_eq!(
        refused(&one(&a, topic(room, "nina", "nope")).await),
        "forbidden"
    );
    assert_eq!(
        stored(&one(&a, topic(room, "mike", "Rules: be nice")).await),
        9
    );
    assert_eq!(
        b.access(room, "nina").await.unwrap().topic,
        "Rules: be nice"
    );

    // Unban: the user may join again.
    let unban = |from: &str, user: &str| member(room, from, user, Unbanned, None, "");
    assert_eq!(refused(&one(&a, unban("mike", "nina")).await), "not_found");
    assert_eq!(stored(&one(&a, unban("mike", "uma")).await), 10);
    assert_eq!(b.bans(room).await.unwrap().len(), 1, "troll's stays");
    assert_eq!(
        b.enter_room(room, "uma").await.unwrap(),
        access(false, "Rules: be nice", Some(Role::Member), false)
    );

    // Parting: the last owner must hand over first.
    let part = |user: &str| member(room, user, user, Removed, None, "");
    assert_eq!(refused(&one(&a, part("Olivia")).await), "conflict");
    assert_eq!(
        refused(&one(&a, give("Olivia", "Olivia", Role::Member)).await),
        "conflict"
    );
    assert_eq!(
        stored(&one(&a, give("Olivia", "mike", Role::Owner)).await),
        11
    );
    assert_eq!(stored(&one(&a, part("olivia")).await), 12);
    assert_eq!(refused(&one(&a, part("olivia")).await), "not_found");
    assert_eq!(
        members(&b, room).await,
        who(&[("mike", Role::Owner), ("uma", Role::Member)])
    );

    // A server admin acts in a room it is not a member of.
    let by_admin = NewMessage {
        change: Change::Member {
            user: "mike".into(),
            change: MemberChange::Role,
            role: Some(Role::Moderator),
            admin: true,
        },
        ..msg(room, "root", "")
    };
    assert_eq!(
        refused(&one(&a, by_admin.clone()).await),
        "conflict",
        "the last owner"
    );
    let crown = NewMessage {
        change: Change::Member {
            user: "uma".into(),
            change: MemberChange::Role,
            role: Some(Role::Owner),
            admin: true,
        },
        ..by_admin.clone()
    };
    assert_eq!(stored(&one(&a, crown).await), 13);
    assert_eq!(stored(&one(&a, by_admin).await), 14);
    let admin_topic = NewMessage {
        change: Change::Topic { admin: true },
        ..msg(room, "root", "")
    };
    assert_eq!(stored(&one(&a, admin_topic).await), 15);

    // A room that does not exist: not_found (and no room is made).
    assert_eq!(
        refused(&one(&a, member("ghost", "Olivia", "x", Added, None, "")).await),
        "not_found"
    );
    assert_eq!(
        refused(&one(&a, topic("ghost", "Olivia", "t")).await),
        "not_found"
    );
    assert_eq!(a.last_seq("ghost").await.unwrap(), None);

    // A repeated nonce is the original, whatever the state now.
    let with_nonce = NewMessage {
        nonce: Some("k1".into()),
        ..topic(room, "mike", "again")
    };
    let first = one(&a, with_nonce.clone()).await;
    assert_eq!(stored(&first), 16);
    let again = one(&b, with_nonce).await;
    assert!(
        matches!(&again, AppendOutcome::Duplicate(m) if m.seq == 16),
        "{again:?}"
    );

    // One batch, refusals between stored events and messages: the stored
    // ones take consecutive seqs, in submission order.
    let out = a
        .append_batch(&[
            invite("zoe", "p1"),
            msg(room, "uma", "m1"),
            invite("mike", "p1"),
            invite("mike", "p1"),
            kick("zoe", "p1"),
            msg(room, "p1", "m2"),
            kick("mike", "p1"),
        ])
        .await
        .unwrap();
    let kinds: Vec<String> = out
        .iter()
        .map(|o| match o {
            AppendOutcome::Stored(m) => m.seq.to_string(),
            other => refused(other).to_string(),
        })
        .collect();
    assert_eq!(
        kinds,
        ["forbidden", "17", "18", "conflict", "forbidden", "19", "20"]
    );
    assert_gapless(&a, room).await;
    assert_gapless(&b, room).await;
    assert_eq!(b.last_seq(room).await.unwrap(), Some(20));

    // History holds every event with its fields, from either handle.
    let events = history(&b, room).await;
    let at = |seq: u64| events.iter().find(|m| m.seq == seq).unwrap().clone();
    let member_kind = |user: &str, change, role| EventKind::Member {
        user: user.into(),
        change,
        role,
    };
    assert_eq!(at(2).kind, member_kind("Nina", Added, None));
    assert_eq!((at(2).from.as_str(), at(2).text.as_str()), ("Olivia", ""));
    assert_eq!(
        at(3).kind,
        member_kind("mike", MemberChange::Role, Some(Role::Moderator))
    );
    assert_eq!(at(6).kind, member_kind("nina", Removed, None));
    assert_eq!(at(7).kind, member_kind("Uma", Banned, None));
    assert_eq!(at(7).text, "flooding", "a ban's reason");
    assert_eq!(at(9).kind, EventKind::Topic);
    assert_eq!(at(9).text, "Rules: be nice");
    assert_eq!(at(10).kind, member_kind("uma", Unbanned, None));
    assert_eq!(at(12).kind, member_kind("olivia", Removed, None));
    assert_eq!(at(12).from, "olivia");
    assert_eq!(at(14).from, "root");
    assert_eq!(at(4).kind, EventKind::Message);
    assert!(at(4).deleted, "a moderator's delete applies");
    assert_eq!(at(4).text, "");
    // As pushed: a ban carries its reason, a topic its text.
    match at(7).into_wire() {
        RoomEvent::Member(m) => {
            assert_eq!(
                (m.user.as_str(), m.change, m.reason.as_deref()),
                ("Uma", Banned, Some("flooding"))
            );
        }
        other => panic!("{other:?}"),
    }
    match at(9).into_wire() {
        RoomEvent::Topic(t) => assert_eq!(t.topic, "Rules: be nice"),
        other => panic!("{other:?}"),
    }
    // Backward pages read them too.
    let back = a.range_backward(room, 10, 3).await.unwrap();
    assert_eq!(
        back.iter().map(|m| m.kind.name()).collect::<Vec<_>>(),
        ["member", "member", "topic"]
    );

    // Membership and topic events are not messages: never unread, never
    // found by their reason or topic.
    let unread = b.unread("newcomer", room).await.unwrap();
    assert_eq!(unread.unread, 3, "hello, m1 and m2: {unread:?}");
    for q in ["flooding", "rules", "nice", "again"] {
        let page = search(&b, query("mike", q)).await;
        assert!(page.hits.is_empty(), "{q}: {page:?}");
    }
}

// --------------------------------------------------------------- search

/// `q` for `user` (no server admin), a first page of 10 in every room.
fn query<'a>(user: &'a str, q: &'a str) -> SearchQuery<'a> {
    SearchQuery {
        user_key: user,
        q,
        room: None,
        before: None,
        limit: 10,
        admin: false,
    }
}

async fn search(store: &Arc<dyn Store>, query: SearchQuery<'_>) -> SearchPage {
    store.search(&query).await.unwrap()
}

/// The rooms of the hits for "needle".
async fn found(store: &Arc<dyn Store>, user: &str, admin: bool, limit: u32) -> Vec<String> {
    let query = SearchQuery {
        admin,
        limit,
        ..query(user, "needle")
    };
    let page = search(store, query).await;
    page.hits.into_iter().map(|h| h.room).collect()
}

/// Search reads only the rooms the caller may read: private rooms of its
/// own (all of them for a server admin), no room that banned it; DMs stay
/// their two users'. Left out by the query itself: a page is full whenever
/// there is more to find.
async fn search_suite(a: Arc<dyn Store>, b: Arc<dyn Store>) {
    use MemberChange::{Added, Banned, Removed, Unbanned};
    a.create_room("open", "alice", false, "").await.unwrap();
    a.create_room("secret", "alice", true, "").await.unwrap();
    a.create_room("barred", "alice", false, "").await.unwrap();
    let by_alice = |room, user, change| member(room, "alice", user, change, None, "");
    stored(&one(&a, by_alice("secret", "Bob", Added)).await);
    stored(&one(&a, by_alice("barred", "carol", Banned)).await);
    // Oldest first; the newest are where an outsider may not look.
    for room in ["open", "dm:alice:bob", "barred", "secret", "secret"] {
        if room.starts_with("dm:") {
            a.ensure_room(room).await.unwrap();
        }
        one(&a, msg(room, "alice", &format!("a needle in {room}"))).await;
    }
    assert_eq!(
        found(&b, "carol", false, 10).await,
        ["open"],
        "an outsider, banned from barred"
    );
    assert_eq!(
        found(&b, "carol", false, 1).await,
        ["open"],
        "the page is full: the hidden rooms are left out by the query"
    );
    assert_eq!(
        found(&b, "dave", false, 10).await,
        ["barred", "open"],
        "an outsider not banned"
    );
    assert_eq!(
        found(&b, "bob", false, 10).await,
        ["secret", "secret", "barred", "dm:alice:bob", "open"],
        "a member of the private room (and of the DM)"
    );
    assert_eq!(
        found(&b, "root", true, 10).await,
        ["secret", "secret", "barred", "open"],
        "a server admin: every private room, no one's DMs"
    );
    assert_eq!(
        found(&b, "carol", true, 10).await,
        ["secret", "secret", "barred", "open"],
        "a server admin's bans do not hide rooms"
    );
    let only = |user, room| {
        let b = b.clone();
        async move {
            let query = SearchQuery {
                room: Some(room),
                ..query(user, "needle")
            };
            search(&b, query).await.hits.len()
        }
    };
    assert_eq!(only("dave", "secret").await, 0);
    assert_eq!(only("carol", "barred").await, 0);
    assert_eq!(only("bob", "secret").await, 2);

    // Membership changes apply at once: a kicked member no longer finds
    // the private room; an unbanned user finds the room again.
    stored(&one(&a, by_alice("secret", "bob", Removed)).await);
    stored(&one(&a, by_alice("barred", "Carol", Unbanned)).await);
    assert_eq!(
        found(&b, "bob", false, 10).await,
        ["barred", "dm:alice:bob", "open"]
    );
    assert_eq!(found(&b, "carol", false, 10).await, ["barred", "open"]);
}

// ---------------------------------------------------------- concurrency

/// Several nodes joining the same new rooms at once: each room gets
/// exactly one owner, everyone else is a member.
async fn concurrent_joins(stores: Vec<Arc<dyn Store>>) {
    let rooms = ["race-1", "race-2", "race-3"];
    let mut joins = Vec::new();
    for (i, store) in stores.iter().enumerate() {
        for room in rooms {
            for k in 0..3 {
                let store = store.clone();
                let user = format!("user{i}-{k}");
                joins.push(tokio::spawn(async move {
                    store.enter_room(room, &user).await.unwrap()
                }));
            }
        }
    }
    let mut owners_seen = 0;
    for join in joins {
        let access = join.await.unwrap();
        assert!(access.exists && !access.private && !access.banned);
        assert!(access.role.is_some(), "{access:?}");
        if access.role == Some(Role::Owner) {
            owners_seen += 1;
        }
    }
    assert_eq!(owners_seen, rooms.len(), "one creator per room");
    for room in rooms {
        let list = stores[0].members(room).await.unwrap();
        assert_eq!(list.len(), stores.len() * 3, "{room}: {list:?}");
        let owners = list.iter().filter(|m| m.role == Role::Owner).count();
        assert_eq!(owners, 1, "{room}: {list:?}");
        assert_eq!(list[0].role, Role::Owner);
    }
}

// ------------------------------------------------------------- backends

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_rooms_have_owners_members_and_lists() {
    let (_dir, a, b) = sqlite_pair().await;
    rooms_suite(a, b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_rooms_have_owners_members_and_lists() {
    let (_pg, a, b) = postgres_pair().await;
    rooms_suite(a, b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_member_events_keep_the_rules() {
    let (_dir, a, b) = sqlite_pair().await;
    moderation_suite(a, b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_member_events_keep_the_rules() {
    let (_pg, a, b) = postgres_pair().await;
    moderation_suite(a, b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_search_keeps_private_rooms_private() {
    let (_dir, a, b) = sqlite_pair().await;
    search_suite(a, b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_search_keeps_private_rooms_private() {
    let (_pg, a, b) = postgres_pair().await;
    search_suite(a, b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_concurrent_joins_make_one_owner() {
    let (_dir, stores) = sqlite_stores(3, 4).await;
    concurrent_joins(stores).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_concurrent_joins_make_one_owner() {
    let (_pg, stores) = postgres_stores(4, 4).await;
    concurrent_joins(stores).await;
}

// -------------------------------------------------------------- upgrade

/// What a store of the previous schema holds: users (one of them
/// registered as `Alice`), rooms, a DM, messages and read positions.
const LEGACY_ROWS: &str = "\
    INSERT INTO users (name, password_hash, created_ms, name_key) VALUES ('Alice', 'x', 0, 'alice');
    INSERT INTO rooms (name, last_seq, created_ms, last_ts) VALUES
        ('general', 2, 0, 2000), ('quiet', 0, 0, 0), ('dm:alice:bob', 1, 0, 1000);
    INSERT INTO messages (room, seq, sender, body, ts_ms) VALUES
        ('general', 1, 'Alice', 'old news', 1000), ('general', 2, 'bob', 'older views', 2000),
        ('dm:alice:bob', 1, 'bob', 'psst', 1000);
    INSERT INTO read_state (user_key, room, seq) VALUES
        ('alice', 'general', 2), ('bob', 'general', 1), ('alice', 'dm:alice:bob', 1);";

/// What makes a database a store of the previous schema, in order: the
/// migrations table `table` (marking them applied), the `migrations`
/// themselves, and [`LEGACY_ROWS`].
fn previous_schema(table: &'static str, migrations: &[&'static str]) -> Vec<&'static str> {
    let mut all = vec![table];
    all.extend_from_slice(migrations);
    all.push(LEGACY_ROWS);
    all
}

/// After the upgrade: readers of a room are its members (no owner), under
/// their registered spelling; DMs get none; old rows read back.
async fn check_upgraded(store: Arc<dyn Store>) {
    assert_eq!(
        members(&store, "general").await,
        who(&[("Alice", Role::Member), ("bob", Role::Member)])
    );
    assert!(store.members("quiet").await.unwrap().is_empty());
    assert!(store.members("dm:alice:bob").await.unwrap().is_empty());
    assert_eq!(
        store.access("general", "alice").await.unwrap(),
        access(false, "", Some(Role::Member), false)
    );
    let old = history(&store, "general").await;
    assert_eq!(
        old.iter()
            .map(|m| (m.seq, m.kind.clone()))
            .collect::<Vec<_>>(),
        [(1, EventKind::Message), (2, EventKind::Message)]
    );
    // An ownerless room: nobody but a server admin moderates it.
    let kick = member("general", "alice", "bob", MemberChange::Removed, None, "");
    assert_eq!(refused(&one(&store, kick).await), "forbidden");
    // New rooms work as usual.
    store.enter_room("fresh", "bob").await.unwrap();
    assert_eq!(members(&store, "fresh").await, who(&[("bob", Role::Owner)]));
    assert_eq!(
        store.room_list("bob", false).await.unwrap()[0],
        RoomListing {
            room: "dm:alice:bob".into(),
            last_seq: 1,
            private: false,
            topic: String::new(),
            role: None
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_upgrade_makes_readers_members() {
    use sqlx::Connection as _;
    const TABLE: &str = "CREATE TABLE parley_migrations (version INTEGER PRIMARY KEY, applied_ms INTEGER NOT NULL); \
         INSERT INTO parley_migrations VALUES (1, 0), (2, 0), (3, 0), (4, 0), (5, 0), (6, 0);";
    const PREVIOUS: [&str; 6] = [
        include_str!("../../server/migrations/sqlite/0001_init.sql"),
        include_str!("../../server/migrations/sqlite/0002_room_last_ts.sql"),
        include_str!("../../server/migrations/sqlite/0003_accounts.sql"),
        include_str!("../../server/migrations/sqlite/0004_events.sql"),
        include_str!("../../server/migrations/sqlite/0005_read_state.sql"),
        include_str!("../../server/migrations/sqlite/0006_search.sql"),
    ];
    let dir = tempfile::TempDir::new().unwrap();
    let url = format!("sqlite://{}", dir.path().join("old.db").display());
    let options = url
        .parse::<sqlx::sqlite::SqliteConnectOptions>()
        .unwrap()
        .create_if_missing(true);
    let mut conn = sqlx::SqliteConnection::connect_with(&options)
        .await
        .unwrap();
    for sql in previous_schema(TABLE, &PREVIOUS) {
        sqlx::raw_sql(sql).execute(&mut conn).await.unwrap();
    }
    conn.close().await.unwrap();
    let store = parley_server::store::open(&url, 4).await.unwrap();
    check_upgraded(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_upgrade_makes_readers_members() {
    use sqlx::Connection as _;
    const TABLE: &str = "CREATE TABLE parley_migrations (version BIGINT PRIMARY KEY, applied_ms BIGINT NOT NULL); \
         INSERT INTO parley_migrations VALUES (1, 0), (2, 0), (3, 0), (4, 0), (5, 0), (6, 0), (7, 0);";
    const PREVIOUS: [&str; 7] = [
        include_str!("../../server/migrations/postgres/0001_init.sql"),
        include_str!("../../server/migrations/postgres/0002_append_function.sql"),
        include_str!("../../server/migrations/postgres/0003_room_last_ts.sql"),
        include_str!("../../server/migrations/postgres/0004_accounts.sql"),
        include_str!("../../server/migrations/postgres/0005_events.sql"),
        include_str!("../../server/migrations/postgres/0006_read_state.sql"),
        include_str!("../../server/migrations/postgres/0007_search.sql"),
    ];
    let pg = tokio::task::spawn_blocking(Postgres::start).await.unwrap();
    let mut conn = sqlx::PgConnection::connect(&pg.url()).await.unwrap();
    for sql in previous_schema(TABLE, &PREVIOUS) {
        sqlx::raw_sql(sql).execute(&mut conn).await.unwrap();
    }
    conn.close().await.unwrap();
    let store = parley_server::store::open(&pg.url(), 4).await.unwrap();
    check_upgraded(store).await;
}
