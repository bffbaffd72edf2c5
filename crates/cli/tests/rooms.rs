//! Rooms with members, roles and bans (protocol-chat.md §3) and server
//! admins (§5), end to end over real sockets, on one node and on a fleet
//! (PostgreSQL + Redis, actors on different nodes):
//!
//! - the issue's scenario: a private room, invitations, a moderator who
//!   kicks and bans, every step a room event pushed live in the room's one
//!   gapless sequence and replayed exactly once on resume;
//! - an outsider (and a banned user) walks every endpoint and frame and is
//!   refused everywhere, without a byte of the room leaking;
//! - the permission rules (members, moderators, owners, server admins);
//! - a node's membership cache converges through anti-entropy when Redis
//!   is down;
//! - `part` across connections and nodes, and version-1 clients;
//! - bad input is `bad_request` / `too_large` / `not_found`, never a panic.

#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

use std::sync::Arc;
use std::time::Duration;

use parley_client::protocol::rest::RoomInfo;
use parley_client::protocol::{
    ClientFrame, ErrorCode, Member, MemberChange, Role, RoomEvent, ServerFrame,
};
use parley_client::{ClientError, Connection, http};
use parley_server::store::Store;
use parley_testkit::{Fleet, TestNode, assert_gapless, connect, eventually, kinds, metric, token};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_parley");
/// How long a push or a reply may take, bus hops between nodes included.
const WAIT: Duration = Duration::from_secs(10);

// ------------------------------------------------------------- helpers

/// Where clients reach one node.
struct Site {
    http: String,
    ws: String,
}

/// One node (both sites are the same node) or a fleet of two (site 0 and
/// site 1 are different nodes), so that a scenario runs on both.
struct Cluster {
    sites: [Site; 2],
    _node: Option<TestNode>,
    _fleet: Option<Fleet>,
}

impl Cluster {
    async fn one_node() -> Cluster {
        let node = TestNode::start().await;
        let site = || Site {
            http: node.http(),
            ws: node.ws_url(),
        };
        Cluster {
            sites: [site(), site()],
            _node: Some(node),
            _fleet: None,
        }
    }

    async fn fleet() -> Cluster {
        let fleet = Fleet::start(BIN, 2, &[]).await;
        let site = |i: usize| Site {
            http: fleet.nodes[i].http(),
            ws: fleet.nodes[i].ws_url(),
        };
        Cluster {
            sites: [site(0), site(1)],
            _node: None,
            _fleet: Some(fleet),
        }
    }
}

/// A REST answer.
#[derive(Debug)]
struct Answer {
    status: u16,
    body: Value,
    text: String,
    what: String,
}

impl Answer {
    /// The body, after checking the status.
    fn ok(self, status: u16) -> Value {
        assert_eq!(self.status, status, "{}: {}", self.what, self.text);
        self.body
    }

    fn code(&self) -> Option<&str> {
        self.body["error"]["code"].as_str()
    }

    /// Checks that the request was refused with `status` and `code`.
    fn refused(&self, status: u16, code: &str) {
        assert_eq!(
            (self.status, self.code()),
            (status, Some(code)),
            "{}: {}",
            self.what,
            self.text
        );
    }
}

/// `method base+path` as `user` (a token minted with the test secret), with
/// `body` sent as is (it may be malformed on purpose).
async fn rest(base: &str, method: &str, path: &str, user: &str, body: Option<&str>) -> Answer {
    let what = format!("{user}: {method} {path} {}", body.unwrap_or(""));
    let r = http::request(
        base,
        method,
        path,
        Some(token(user).as_str()),
        body.map(|b| b.as_bytes().to_vec()),
    )
    .await
    .unwrap_or_else(|e| panic!("{what}: {e}"));
    let text = r.text();
    Answer {
        status: r.status,
        body: serde_json::from_str(&text).unwrap_or(Value::Null),
        text,
        what,
    }
}

async fn rest_json(base: &str, method: &str, path: &str, user: &str, body: Value) -> Answer {
    rest(base, method, path, user, Some(body.to_string().as_str())).await
}

/// `/api/rooms/{room}{tail}`.
fn at(room: &str, tail: &str) -> String {
    format!("/api/rooms/{}{tail}", http::encode_path(room))
}

/// `POST /api/rooms` as `user`.
async fn create(base: &str, user: &str, body: Value) -> Answer {
    rest_json(base, "POST", "/api/rooms", user, body).await
}

/// `by` adds `user` to `room`: `POST /api/rooms/{room}/members`.
async fn invite(base: &str, by: &str, room: &str, user: &str) -> Answer {
    let body = json!({"user": user});
    rest_json(base, "POST", &at(room, "/members"), by, body).await
}

/// `by` gives `user` a `role` in `room`: `PUT /api/rooms/{room}/members/{user}`.
async fn set_role(base: &str, by: &str, room: &str, user: &str, role: &str) -> Answer {
    let path = at(room, &format!("/members/{user}"));
    rest_json(base, "PUT", &path, by, json!({"role": role})).await
}

/// `by` sets the topic of `room`: `PATCH /api/rooms/{room}`.
async fn set_topic(base: &str, by: &str, room: &str, topic: &str) -> Answer {
    rest_json(base, "PATCH", &at(room, ""), by, json!({"topic": topic})).await
}

/// `by` bans `user` from `room`, giving no reason: `POST /api/rooms/{room}/bans`.
async fn ban(base: &str, by: &str, room: &str, user: &str) -> Answer {
    rest_json(base, "POST", &at(room, "/bans"), by, json!({"user": user})).await
}

/// `user` sends `text` to `room` over REST: `POST /api/rooms/{room}/messages`.
async fn post(base: &str, user: &str, room: &str, text: &str) -> Answer {
    let body = json!({"text": text});
    rest_json(base, "POST", &at(room, "/messages"), user, body).await
}

/// The room event a REST call answered with.
fn event_of(v: &Value) -> RoomEvent {
    serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("not a room event ({e}): {v}"))
}

fn as_member(e: &RoomEvent) -> Member {
    match e {
        RoomEvent::Member(m) => m.clone(),
        other => panic!("expected a member event, got {other:?}"),
    }
}

#[track_caller]
fn code<T: std::fmt::Debug>(r: Result<T, ClientError>) -> ErrorCode {
    match r {
        Ok(v) => panic!("expected a refusal, got {v:?}"),
        Err(e) => e
            .code()
            .unwrap_or_else(|| panic!("expected a server error, got {e}")),
    }
}

/// Checks that a request over WS was refused with `forbidden`.
#[track_caller]
fn assert_forbidden<T: std::fmt::Debug>(r: Result<T, ClientError>) {
    assert_eq!(code(r), ErrorCode::Forbidden);
}

/// What `joined` said that these tests look at (the reply parsed here,
/// so that a field the client library drops cannot hide a bug).
#[derive(Debug)]
struct Joined {
    last_seq: u64,
    events: Vec<RoomEvent>,
    topic: Option<String>,
    private: bool,
    role: Option<Role>,
}

async fn join(
    conn: &mut Connection,
    room: &str,
    since: Option<u64>,
) -> Result<Joined, ClientError> {
    let id = conn.next_id();
    let frame = ClientFrame::Join {
        id: Some(id),
        room: room.into(),
        since,
    };
    match conn.request(id, &frame).await? {
        ServerFrame::Joined {
            last_seq,
            history,
            topic,
            private,
            role,
            ..
        } => Ok(Joined {
            last_seq,
            events: history,
            topic,
            private,
            role,
        }),
        other => panic!("expected joined, got {other:?}"),
    }
}

async fn part(conn: &mut Connection, room: &str) -> Result<ServerFrame, ClientError> {
    let id = conn.next_id();
    let frame = ClientFrame::Part {
        id: Some(id),
        room: room.into(),
    };
    conn.request(id, &frame).await
}

/// A push in one room: an event, or `left` (with its reason).
#[derive(Debug)]
enum Push {
    Event(RoomEvent),
    Left(Option<String>),
}

/// The next push of `room` on `conn` (skipping presence, typing, reads and
/// other rooms).
async fn next_push(conn: &mut Connection, room: &str, who: &str) -> Push {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let frame = conn
            .recv_timeout(left)
            .await
            .unwrap_or_else(|e| panic!("{who}: no push in {room:?} within {WAIT:?}: {e}"));
        let event = match frame {
            ServerFrame::Message(m) => RoomEvent::Message(m),
            ServerFrame::Edited(e) => RoomEvent::Edited(e),
            ServerFrame::Deleted(e) => RoomEvent::Deleted(e),
            ServerFrame::Reaction(e) => RoomEvent::Reaction(e),
            ServerFrame::Member(e) => RoomEvent::Member(e),
            ServerFrame::Topic(e) => RoomEvent::Topic(e),
            ServerFrame::Left {
                re: None,
                room: r,
                reason,
            } if r == room => return Push::Left(reason),
            _ => continue,
        };
        if event.room() == room {
            return Push::Event(event);
        }
    }
}

/// One connection subscribed to one room, checking that the room's events
/// reach it live, each exactly once, in one gapless sequence.
struct Watch {
    who: String,
    conn: Connection,
    room: String,
    /// The last seq this connection has seen (live or in a history).
    last: u64,
}

impl Watch {
    /// Connects to `ws` as `user` and joins `room`.
    async fn join(ws: &str, user: &str, room: &str) -> (Watch, Joined) {
        let mut conn = connect(ws, user).await;
        let j = join(&mut conn, room, None)
            .await
            .unwrap_or_else(|e| panic!("{user} joins {room} at {ws}: {e}"));
        let watch = Watch {
            who: format!("{user}@{ws}"),
            conn,
            room: room.into(),
            last: j.last_seq,
        };
        (watch, j)
    }

    /// The next event: it must be the one after the last seen.
    async fn event(&mut self) -> RoomEvent {
        match next_push(&mut self.conn, &self.room, &self.who).await {
            Push::Event(e) => {
                assert_eq!(
                    e.seq(),
                    self.last + 1,
                    "{}: not the next event of {:?}: {e:?}",
                    self.who,
                    self.room
                );
                self.last = e.seq();
                e
            }
            Push::Left(reason) => panic!("{}: left ({reason:?}) instead of an event", self.who),
        }
    }

    /// The next event: a `member` event `change` of `user` at `seq`.
    async fn member(&mut self, seq: u64, change: MemberChange, user: &str) -> Member {
        let m = as_member(&self.event().await);
        assert_eq!(
            (m.seq, m.change, m.user.as_str()),
            (seq, change, user),
            "{}: {m:?}",
            self.who
        );
        m
    }

    /// The next push must be the notice of a `member` event about this
    /// connection's user, which it gets while not subscribed to the room
    /// (invited, unbanned: `access::notice`). Out of band: it does not move
    /// the connection's place in the room's sequence.
    async fn notice(&mut self, seq: u64, change: MemberChange, user: &str) -> Member {
        match next_push(&mut self.conn, &self.room, &self.who).await {
            Push::Event(RoomEvent::Member(m)) => {
                assert_eq!(
                    (m.seq, m.change, m.user.as_str()),
                    (seq, change, user),
                    "{}: {m:?}",
                    self.who
                );
                m
            }
            other => panic!(
                "{}: expected the notice of event {seq}, got {other:?}",
                self.who
            ),
        }
    }

    /// The next push must be `left`; returns its reason.
    async fn left(&mut self) -> Option<String> {
        match next_push(&mut self.conn, &self.room, &self.who).await {
            Push::Left(reason) => reason,
            Push::Event(e) => panic!("{}: expected left, got {e:?}", self.who),
        }
    }

    /// The next event is a `member` event that takes this connection's
    /// user out of the room (`change` of `user` at `seq`), and then comes
    /// `left` with `reason`.
    async fn taken_out(&mut self, seq: u64, change: MemberChange, user: &str, reason: &str) {
        self.member(seq, change, user).await;
        let left = self.left().await;
        assert_eq!(left.as_deref(), Some(reason), "{}", self.who);
    }

    /// Joins again with `since` = the last seen: the history must be
    /// exactly what was missed.
    /// Joins without `since` (the user choosing the room, which makes a
    /// member of a public one); the watch goes on from the room's end.
    async fn choose(&mut self) -> Joined {
        let j = join(&mut self.conn, &self.room, None)
            .await
            .unwrap_or_else(|e| panic!("{} joins: {e}", self.who));
        self.last = j.last_seq;
        j
    }

    async fn rejoin(&mut self) -> Joined {
        let j = join(&mut self.conn, &self.room, Some(self.last))
            .await
            .unwrap_or_else(|e| panic!("{} rejoins: {e}", self.who));
        let seqs: Vec<u64> = j.events.iter().map(RoomEvent::seq).collect();
        assert_gapless(&seqs, self.last + 1, j.last_seq);
        self.last = j.last_seq;
        j
    }
}

/// `room` as `user` sees it in `GET /api/rooms`, if listed.
async fn listed(base: &str, user: &str, room: &str) -> Option<RoomInfo> {
    http::rooms(base, &token(user))
        .await
        .unwrap_or_else(|e| panic!("GET /api/rooms as {user}: {e}"))
        .into_iter()
        .find(|r| r.room == room)
}

/// (user, role) of `GET /api/rooms/{room}/members`.
async fn members(base: &str, user: &str, room: &str) -> Vec<(String, String)> {
    let page = rest(base, "GET", &at(room, "/members"), user, None)
        .await
        .ok(200);
    page["members"]
        .as_array()
        .unwrap_or_else(|| panic!("no members list: {page}"))
        .iter()
        .map(|m| {
            (
                m["user"].as_str().unwrap().to_string(),
                m["role"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(u, r)| (u.to_string(), r.to_string()))
        .collect()
}

/// The rooms of `GET /api/search?q=…` hits for `user`.
async fn search_rooms(base: &str, user: &str, q: &str) -> Vec<String> {
    let page = rest(base, "GET", &format!("/api/search?q={q}"), user, None)
        .await
        .ok(200);
    page["results"]
        .as_array()
        .unwrap_or_else(|| panic!("no results: {page}"))
        .iter()
        .map(|h| h["room"].as_str().unwrap().to_string())
        .collect()
}

/// Makes `name` a server admin (as `parley admin user promote` does).
async fn make_admin(store: &Arc<dyn Store>, name: &str) {
    store.create_user(name, "not-a-hash").await.unwrap();
    assert!(store.set_role(name, "admin").await.unwrap());
}

// ------------------------------------------------- 1. the issue's scenario

/// Alice creates a private room, invites bob and carol, makes bob a
/// moderator; bob kicks carol, invites her again and bans her; she is out
/// of everything until unbanned and invited. Site 0 and site 1 are
/// different nodes in the fleet.
async fn the_issues_scenario(c: &Cluster) {
    use MemberChange::{Added, Banned, Removed, Unbanned};
    let [a, b] = &c.sites;
    let room = "plans";
    let secret = "carol's zebra plan";

    let created = create(
        &a.http,
        "alice",
        json!({"room": room, "topic": "Q3 plans", "private": true}),
    )
    .await
    .ok(201);
    assert_eq!(
        (
            created["room"].as_str(),
            created["private"].as_bool(),
            created["topic"].as_str(),
            created["role"].as_str()
        ),
        (Some(room), Some(true), Some("Q3 plans"), Some("owner")),
        "{created}"
    );
    create(&b.http, "dave", json!({"room": room}))
        .await
        .refused(409, "conflict");
    for site in [a, b] {
        let mine = listed(&site.http, "alice", room).await.expect("listed");
        assert_eq!(
            (mine.private, mine.topic.as_deref(), mine.role, mine.member),
            (true, Some("Q3 plans"), Some(Role::Owner), Some(true))
        );
        assert_eq!(listed(&site.http, "bob", room).await, None, "not yet bob's");
    }

    let (mut alice, j) = Watch::join(&a.ws, "alice", room).await;
    assert_eq!(
        (j.last_seq, j.private, j.topic.as_deref(), j.role),
        (0, true, Some("Q3 plans"), Some(Role::Owner))
    );
    // Alice's other device, which goes offline after the invitations and
    // resumes at the end.
    let (mut alice_b, _) = Watch::join(&b.ws, "alice", room).await;

    // Invitations: events 1 and 2, pushed to every member connection.
    for (seq, user) in [(1, "bob"), (2, "carol")] {
        let v = invite(&a.http, "alice", room, user).await.ok(201);
        let m = as_member(&event_of(&v));
        assert_eq!(
            (
                m.seq,
                m.from.as_str(),
                m.user.as_str(),
                m.change,
                m.room.as_str()
            ),
            (seq, "alice", user, Added, room)
        );
        for w in [&mut alice, &mut alice_b] {
            w.member(seq, Added, user).await;
        }
    }
    let resume_from = alice_b.last;
    alice_b.conn.close().await;

    let (mut bob, j) = Watch::join(&b.ws, "bob", room).await;
    assert_eq!(
        (j.last_seq, j.private, j.topic.as_deref(), j.role),
        (2, true, Some("Q3 plans"), Some(Role::Member))
    );
    assert_eq!(
        kinds(&j.events),
        ["member 1", "member 2"],
        "the log shows who came in"
    );
    let (mut carol1, _) = Watch::join(&a.ws, "carol", room).await;
    let (mut carol2, _) = Watch::join(&b.ws, "carol", room).await;

    // Bob becomes a moderator (3), carol says something (4), bob sets the topic (5).
    let v = set_role(&b.http, "alice", room, "bob", "moderator")
        .await
        .ok(200);
    let m = as_member(&event_of(&v));
    assert_eq!(
        (m.seq, m.change, m.role),
        (3, MemberChange::Role, Some(Role::Moderator))
    );
    for w in [&mut alice, &mut bob, &mut carol1, &mut carol2] {
        assert_eq!(
            w.member(3, MemberChange::Role, "bob").await.role,
            Some(Role::Moderator)
        );
    }
    let ack = carol1.conn.send(room, secret, None).await.unwrap();
    assert_eq!(ack.seq, 4);
    for w in [&mut alice, &mut bob, &mut carol1, &mut carol2] {
        match w.event().await {
            RoomEvent::Message(m) => {
                assert_eq!((m.from.as_str(), m.text.as_str()), ("carol", secret))
            }
            other => panic!("{}: expected carol's message, got {other:?}", w.who),
        }
    }
    let v = set_topic(&b.http, "bob", room, "Q4 plans").await.ok(200);
    match event_of(&v) {
        RoomEvent::Topic(t) => assert_eq!(
            (t.seq, t.from.as_str(), t.topic.as_str()),
            (5, "bob", "Q4 plans")
        ),
        other => panic!("expected a topic event, got {other:?}"),
    }
    for w in [&mut alice, &mut bob, &mut carol1, &mut carol2] {
        match w.event().await {
            RoomEvent::Topic(t) => assert_eq!(t.topic, "Q4 plans"),
            other => panic!("{}: expected the topic, got {other:?}", w.who),
        }
    }

    // Bob kicks carol (6): every connection of hers sees why, then leaves.
    let v = rest(&b.http, "DELETE", &at(room, "/members/carol"), "bob", None)
        .await
        .ok(200);
    let m = as_member(&event_of(&v));
    assert_eq!(
        (m.seq, m.from.as_str(), m.user.as_str(), m.change),
        (6, "bob", "carol", Removed)
    );
    for w in [&mut alice, &mut bob] {
        w.member(6, Removed, "carol").await;
    }
    for w in [&mut carol1, &mut carol2] {
        w.taken_out(6, Removed, "carol", "kicked").await;
    }
    for (site, w) in [(a, &mut carol1), (b, &mut carol2)] {
        assert_forbidden(join(&mut w.conn, room, None).await);
        assert_forbidden(w.conn.send(room, "still here?", None).await);
        post(&site.http, "carol", room, "hello?")
            .await
            .refused(403, "forbidden");
    }

    // Bob invites her again (7): she comes back where she was.
    let v = invite(&b.http, "bob", room, "carol").await.ok(201);
    assert_eq!(as_member(&event_of(&v)).seq, 7);
    for w in [&mut alice, &mut bob] {
        w.member(7, Added, "carol").await;
    }
    for w in [&mut carol1, &mut carol2] {
        // Out of the room, her connections hear that she was invited...
        w.notice(7, Added, "carol").await;
        // ... and the room's log has it once, when she comes back.
        let j = w.rejoin().await;
        assert_eq!(kinds(&j.events), ["member 7"], "{}", w.who);
        assert_eq!(j.role, Some(Role::Member));
    }

    // Bob bans her (8), with a reason.
    let v = rest_json(
        &b.http,
        "POST",
        &at(room, "/bans"),
        "bob",
        json!({"user": "carol", "reason": "spam, again"}),
    )
    .await
    .ok(201);
    let m = as_member(&event_of(&v));
    assert_eq!(
        (m.seq, m.from.as_str(), m.change, m.reason.as_deref()),
        (8, "bob", Banned, Some("spam, again"))
    );
    for w in [&mut alice, &mut bob] {
        assert_eq!(
            w.member(8, Banned, "carol").await.reason.as_deref(),
            Some("spam, again")
        );
    }
    for w in [&mut carol1, &mut carol2] {
        w.taken_out(8, Banned, "carol", "banned").await;
    }

    // Banned: nothing of the room, anywhere.
    for (site, w) in [(a, &mut carol1), (b, &mut carol2)] {
        assert_forbidden(join(&mut w.conn, room, None).await);
        let mut fresh = connect(&site.ws, "carol").await;
        assert_forbidden(join(&mut fresh, room, Some(0)).await);
        assert_forbidden(w.conn.history_events(room, None, None, None).await);
        assert_forbidden(w.conn.send(room, "let me in", None).await);
        for (method, tail, body) in [
            ("POST", "/messages", Some(r#"{"text":"let me in"}"#)),
            ("GET", "/messages", None),
            ("GET", "/members", None),
            ("GET", "/bans", None),
        ] {
            let r = rest(&site.http, method, &at(room, tail), "carol", body).await;
            r.refused(403, "forbidden");
            assert!(!r.text.contains("zebra"), "{}", r.text);
        }
        assert!(
            !search_rooms(&site.http, "carol", "zebra")
                .await
                .contains(&room.to_string())
        );
        rest(
            &site.http,
            "GET",
            &format!("/api/search?q=zebra&room={room}"),
            "carol",
            None,
        )
        .await
        .refused(403, "forbidden");
        assert_eq!(listed(&site.http, "carol", room).await, None);
    }
    // ... which the others still have (the checks above could fail).
    assert!(
        search_rooms(&a.http, "bob", "zebra")
            .await
            .contains(&room.to_string())
    );
    let bans = rest(&a.http, "GET", &at(room, "/bans"), "bob", None)
        .await
        .ok(200);
    assert_eq!(bans["bans"].as_array().map(Vec::len), Some(1), "{bans}");
    assert_eq!(
        (
            bans["bans"][0]["user"].as_str(),
            bans["bans"][0]["by"].as_str(),
            bans["bans"][0]["reason"].as_str()
        ),
        (Some("carol"), Some("bob"), Some("spam, again"))
    );
    // A banned user cannot be invited, until unbanned (9).
    invite(&a.http, "alice", room, "carol")
        .await
        .refused(409, "conflict");
    let v = rest(&a.http, "DELETE", &at(room, "/bans/carol"), "alice", None)
        .await
        .ok(200);
    assert_eq!(as_member(&event_of(&v)).change, Unbanned);
    for w in [&mut alice, &mut bob] {
        w.member(9, Unbanned, "carol").await;
    }
    for w in [&mut carol1, &mut carol2] {
        w.notice(9, Unbanned, "carol").await;
    }
    let bans = rest(&b.http, "GET", &at(room, "/bans"), "alice", None)
        .await
        .ok(200);
    assert_eq!(bans["bans"], json!([]));
    // Unbanned is not invited: the room is still private to her.
    assert_forbidden(join(&mut carol2.conn, room, None).await);
    invite(&b.http, "alice", room, "carol").await.ok(201);
    for w in [&mut alice, &mut bob] {
        w.member(10, Added, "carol").await;
    }
    for w in [&mut carol1, &mut carol2] {
        w.notice(10, Added, "carol").await;
        let j = w.rejoin().await;
        assert_eq!(kinds(&j.events), ["member 9", "member 10"], "{}", w.who);
        assert_eq!(
            (j.role, j.topic.as_deref()),
            (Some(Role::Member), Some("Q4 plans"))
        );
    }
    let hi = alice.conn.send(room, "welcome back", None).await.unwrap();
    assert_eq!(hi.seq, 11);
    for w in [&mut alice, &mut bob, &mut carol1, &mut carol2] {
        assert_eq!(w.event().await.seq(), 11);
    }
    assert_eq!(
        members(&b.http, "carol", room).await,
        pairs(&[
            ("alice", "owner"),
            ("bob", "moderator"),
            ("carol", "member")
        ])
    );

    // Resume: alice's other device gets every event it missed exactly
    // once, in order, membership and topic events included...
    let mut conn = connect(&b.ws, "alice").await;
    let j = join(&mut conn, room, Some(resume_from)).await.unwrap();
    assert_eq!(
        kinds(&j.events),
        [
            "member 3",
            "message 4",
            "topic 5",
            "member 6",
            "member 7",
            "member 8",
            "member 9",
            "member 10",
            "message 11"
        ]
    );
    let page = rest(
        &a.http,
        "GET",
        &at(room, &format!("/messages?after={resume_from}")),
        "alice",
        None,
    )
    .await
    .ok(200);
    let rest_events: Vec<RoomEvent> = serde_json::from_value(page["messages"].clone()).unwrap();
    assert_eq!(rest_events, j.events, "WS and REST replay the same log");
    // ... and then live, nothing twice.
    let mut alice_b = Watch {
        who: "alice (resumed)".into(),
        conn,
        room: room.into(),
        last: j.last_seq,
    };
    set_topic(&a.http, "alice", room, "").await.ok(200);
    for w in [&mut alice_b, &mut alice, &mut bob, &mut carol1, &mut carol2] {
        match w.event().await {
            RoomEvent::Topic(t) => assert_eq!((t.seq, t.topic.as_str()), (12, "")),
            other => panic!("{}: expected the cleared topic, got {other:?}", w.who),
        }
    }
    let mine = listed(&b.http, "bob", room).await.expect("bob's room");
    assert_eq!((mine.topic, mine.role), (None, Some(Role::Moderator)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_issues_scenario_on_one_node() {
    the_issues_scenario(&Cluster::one_node().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_issues_scenario_across_a_fleet() {
    the_issues_scenario(&Cluster::fleet().await).await;
}

// ------------------------------------------------------ 2. outsider walk

/// One thing an outsider may try. In paths, bodies and frames `{room}`,
/// `{me}`, `{member}`, `{owner}`, `{seq}` (a message of the room: the
/// outsider's own, when it has one) and `{id}` are filled in.
enum Try {
    Rest(&'static str, &'static str, Option<&'static str>),
    Ws(&'static str),
}

/// Every endpoint and frame that names a room. Each must be refused with
/// `forbidden`, and show nothing of the room. Adding an endpoint or a
/// frame type: one line here.
const WALK: &[Try] = &[
    Try::Rest("GET", "/api/rooms/{room}/messages", None),
    Try::Rest("GET", "/api/rooms/{room}/messages?after=0&limit=5", None),
    Try::Rest(
        "POST",
        "/api/rooms/{room}/messages",
        Some(r#"{"text":"let me in"}"#),
    ),
    Try::Rest("GET", "/api/rooms/{room}/members", None),
    Try::Rest(
        "POST",
        "/api/rooms/{room}/members",
        Some(r#"{"user":"{me}"}"#),
    ),
    Try::Rest(
        "POST",
        "/api/rooms/{room}/members",
        Some(r#"{"user":"friend"}"#),
    ),
    Try::Rest(
        "PUT",
        "/api/rooms/{room}/members/{me}",
        Some(r#"{"role":"owner"}"#),
    ),
    Try::Rest(
        "PUT",
        "/api/rooms/{room}/members/{member}",
        Some(r#"{"role":"member"}"#),
    ),
    Try::Rest("DELETE", "/api/rooms/{room}/members/{member}", None),
    Try::Rest("DELETE", "/api/rooms/{room}/members/{owner}", None),
    Try::Rest("DELETE", "/api/rooms/{room}/members/{me}", None),
    Try::Rest("GET", "/api/rooms/{room}/bans", None),
    Try::Rest(
        "POST",
        "/api/rooms/{room}/bans",
        Some(r#"{"user":"{member}","reason":"revenge"}"#),
    ),
    Try::Rest("DELETE", "/api/rooms/{room}/bans/{me}", None),
    Try::Rest("DELETE", "/api/rooms/{room}/bans/{member}", None),
    Try::Rest("PATCH", "/api/rooms/{room}", Some(r#"{"topic":"pwned"}"#)),
    Try::Rest("GET", "/api/search?q=zebra&room={room}", None),
    Try::Ws(r#"{"type":"join","id":{id},"room":"{room}"}"#),
    Try::Ws(r#"{"type":"join","id":{id},"room":"{room}","since":0}"#),
    Try::Ws(r#"{"type":"history","id":{id},"room":"{room}"}"#),
    Try::Ws(r#"{"type":"history","id":{id},"room":"{room}","after":0,"limit":5}"#),
    Try::Ws(r#"{"type":"send","id":{id},"room":"{room}","text":"let me in"}"#),
    Try::Ws(r#"{"type":"send","id":{id},"room":"{room}","text":"re","reply_to":{seq}}"#),
    Try::Ws(r#"{"type":"edit","id":{id},"room":"{room}","target":{seq},"text":"pwned"}"#),
    Try::Ws(r#"{"type":"delete","id":{id},"room":"{room}","target":{seq}}"#),
    Try::Ws(r#"{"type":"react","id":{id},"room":"{room}","target":{seq},"emoji":"👀","on":true}"#),
    Try::Ws(r#"{"type":"read","id":{id},"room":"{room}","seq":{seq}}"#),
    Try::Ws(r#"{"type":"typing","id":{id},"room":"{room}"}"#),
    Try::Ws(r#"{"type":"part","id":{id},"room":"{room}"}"#),
];

/// Who walks which room, and what must not leak.
struct Walker<'a> {
    me: &'a str,
    room: &'a str,
    owner: &'a str,
    member: &'a str,
    seq: u64,
    /// Texts of the room (messages, topic, a member not named in any
    /// request) that no answer may hold.
    secrets: &'a [&'a str],
}

impl Walker<'_> {
    fn fill(&self, s: &str, id: u64) -> String {
        s.replace("{room}", self.room)
            .replace("{me}", self.me)
            .replace("{owner}", self.owner)
            .replace("{member}", self.member)
            .replace("{seq}", &self.seq.to_string())
            .replace("{id}", &id.to_string())
    }

    fn no_secret(&self, what: &str, text: &str) {
        for secret in self.secrets {
            assert!(!text.contains(secret), "{what} leaked {secret:?}: {text}");
        }
    }

    /// Walks [`WALK`] on `node` over REST and over `conn`; returns the
    /// frames `conn` got besides the replies.
    async fn walk(&self, node: &TestNode, conn: &mut Connection) -> Vec<ServerFrame> {
        let mut pushes = Vec::new();
        for (i, step) in WALK.iter().enumerate() {
            let id = 1000 + i as u64;
            match step {
                Try::Rest(method, path, body) => {
                    let path = self.fill(path, id);
                    let body = body.map(|b| self.fill(b, id));
                    let r = rest(&node.http(), method, &path, self.me, body.as_deref()).await;
                    r.refused(403, "forbidden");
                    self.no_secret(&r.what, &r.text);
                }
                Try::Ws(frame) => {
                    let frame = self.fill(frame, id);
                    conn.send_text(frame.clone()).await.unwrap();
                    let reply = loop {
                        let f = conn
                            .recv_timeout(WAIT)
                            .await
                            .unwrap_or_else(|e| panic!("{}: no reply to {frame}: {e}", self.me));
                        if f.re() == Some(id) {
                            break f;
                        }
                        pushes.push(f);
                    };
                    match &reply {
                        ServerFrame::Error {
                            code: ErrorCode::Forbidden,
                            message,
                            ..
                        } => self.no_secret(&frame, message),
                        other => panic!("{}: {frame} was answered {other:?}", self.me),
                    }
                }
            }
        }
        pushes
    }
}

/// (events, members, bans, topic) of `room` as its owner sees them.
async fn state_of(
    node: &TestNode,
    owner: &str,
    room: &str,
) -> (Value, Value, Value, Option<String>) {
    let events = rest(&node.http(), "GET", &at(room, "/messages"), owner, None)
        .await
        .ok(200);
    let members = rest(&node.http(), "GET", &at(room, "/members"), owner, None)
        .await
        .ok(200);
    let bans = rest(&node.http(), "GET", &at(room, "/bans"), owner, None)
        .await
        .ok(200);
    let topic = listed(&node.http(), owner, room)
        .await
        .expect("listed")
        .topic;
    (
        events["messages"].clone(),
        members["members"].clone(),
        bans["bans"].clone(),
        topic,
    )
}

/// Frames about `room` among `frames`.
fn about<'a>(frames: &'a [ServerFrame], room: &str) -> Vec<&'a ServerFrame> {
    let room = format!("\"room\":\"{room}\"");
    frames
        .iter()
        .filter(|f| f.to_json().contains(&room))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outsiders_and_banned_users_are_refused_everywhere_and_see_nothing() {
    let node = TestNode::start().await;
    let http = node.http();

    // A private room eve is not in, with content.
    create(
        &http,
        "alice",
        json!({"room": "secret", "private": true, "topic": "the walrus topic"}),
    )
    .await
    .ok(201);
    for user in ["bob", "carol"] {
        invite(&http, "alice", "secret", user).await.ok(201);
    }
    let mut alice = connect(&node.ws_url(), "alice").await;
    join(&mut alice, "secret", None).await.unwrap();
    let hidden = alice
        .send("secret", "zebra crossing at noon", None)
        .await
        .unwrap();
    // Eve could search for it if she could read the room: alice can.
    assert!(
        search_rooms(&http, "alice", "zebra")
            .await
            .contains(&"secret".to_string())
    );

    // A public room mallory was in, posted to, and got banned from.
    let mut mallory = connect(&node.ws_url(), "mallory").await;
    let (mut lobby, _) = Watch::join(&node.ws_url(), "alice", "lobby").await;
    join(&mut mallory, "lobby", None).await.unwrap();
    let own = mallory
        .send("lobby", "zebra stripes, by mallory", None)
        .await
        .unwrap();
    for user in ["bob", "carol"] {
        let mut c = connect(&node.ws_url(), user).await;
        join(&mut c, "lobby", None).await.unwrap();
    }
    set_topic(&http, "alice", "lobby", "the walrus lobby")
        .await
        .ok(200);
    assert!(
        search_rooms(&http, "mallory", "zebra")
            .await
            .contains(&"lobby".to_string())
    );
    ban(&http, "alice", "lobby", "mallory").await.ok(201);
    // Her connection is taken out of the room.
    loop {
        match next_push(&mut mallory, "lobby", "mallory").await {
            Push::Left(reason) => {
                assert_eq!(reason.as_deref(), Some("banned"));
                break;
            }
            Push::Event(_) => continue,
        }
    }
    while lobby.event().await.seq() < own.seq + 2 {}

    let walks = [
        (
            Walker {
                me: "eve",
                room: "secret",
                owner: "alice",
                member: "bob",
                seq: hidden.seq,
                secrets: &["zebra", "walrus", "carol"],
            },
            connect(&node.ws_url(), "eve").await,
        ),
        (
            Walker {
                me: "mallory",
                room: "lobby",
                owner: "alice",
                member: "bob",
                seq: own.seq,
                secrets: &["walrus", "carol"],
            },
            mallory,
        ),
    ];
    let mut listed_to_outsiders = Vec::new();
    for (walker, mut conn) in walks {
        let room = walker.room;
        let before = state_of(&node, "alice", room).await;
        let mut pushes = walker.walk(&node, &mut conn).await;

        // Nothing changed in the room...
        assert_eq!(
            state_of(&node, "alice", room).await,
            before,
            "{} changed {room}",
            walker.me
        );
        // ... nothing of it is found ...
        let found = search_rooms(&http, walker.me, "zebra").await;
        assert!(
            !found.contains(&room.to_string()),
            "{}: {found:?}",
            walker.me
        );
        // ... or listed, like in search: neither a private room she is not
        // in, nor a public one that banned her. (Checked at the end, so that
        // a failure here does not hide the rest.)
        if let Some(entry) = listed(&http, walker.me, room).await {
            listed_to_outsiders.push(entry);
        }
        // ... and nothing of it is pushed to her: a message sent now does
        // not reach her (the pong comes after anything queued for her).
        post(&http, "alice", room, "zebra after the walk")
            .await
            .ok(201);
        let id = conn.next_id();
        let pong = conn
            .request(id, &ClientFrame::Ping { id: Some(id) })
            .await
            .unwrap();
        assert_eq!(pong, ServerFrame::Pong { re: Some(id) });
        while conn.buffered() > 0 {
            pushes.push(conn.recv().await.unwrap());
        }
        assert!(
            about(&pushes, room).is_empty(),
            "{} got pushes of {room}: {:?}",
            walker.me,
            about(&pushes, room)
        );
    }
    assert!(
        listed_to_outsiders.is_empty(),
        "GET /api/rooms lists rooms to users refused everything in them: {listed_to_outsiders:?}"
    );
}

// ------------------------------------------------- 3. permission rules

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_moderators_owners_and_server_admins() {
    use MemberChange::Removed;
    let node = TestNode::start().await;
    let http = node.http();
    let room = "perm";
    create(&http, "alice", json!({"room": room, "private": true}))
        .await
        .ok(201);
    for user in ["bob", "carol", "dave"] {
        invite(&http, "alice", room, user).await.ok(201);
    }
    set_role(&http, "alice", room, "bob", "moderator")
        .await
        .ok(200);

    // A member moderates nothing.
    let member_may_not: &[(&str, &str, Option<Value>)] = &[
        ("POST", "/members", Some(json!({"user": "erin"}))),
        ("DELETE", "/members/dave", None),
        ("POST", "/bans", Some(json!({"user": "dave"}))),
        ("DELETE", "/bans/dave", None),
        ("PATCH", "", Some(json!({"topic": "mine now"}))),
        ("PUT", "/members/dave", Some(json!({"role": "moderator"}))),
        ("PUT", "/members/carol", Some(json!({"role": "owner"}))),
        ("GET", "/bans", None),
    ];
    for (method, tail, body) in member_may_not {
        let body = body.as_ref().map(Value::to_string);
        rest(&http, method, &at(room, tail), "carol", body.as_deref())
            .await
            .refused(403, "forbidden");
    }
    // A moderator moderates members, but never an owner, and gives no roles.
    for (method, tail, body) in [
        ("DELETE", "/members/alice", None),
        ("POST", "/bans", Some(json!({"user": "alice"}))),
        ("PUT", "/members/carol", Some(json!({"role": "moderator"}))),
        ("PUT", "/members/bob", Some(json!({"role": "owner"}))),
        ("PUT", "/members/alice", Some(json!({"role": "member"}))),
    ] {
        let body = body.as_ref().map(Value::to_string);
        rest(&http, method, &at(room, tail), "bob", body.as_deref())
            .await
            .refused(403, "forbidden");
    }
    rest(&http, "GET", &at(room, "/bans"), "bob", None)
        .await
        .ok(200);
    set_topic(&http, "bob", room, "by bob").await.ok(200);
    assert_eq!(
        members(&http, "carol", room).await,
        pairs(&[
            ("alice", "owner"),
            ("bob", "moderator"),
            ("carol", "member"),
            ("dave", "member")
        ])
    );

    // A moderator deletes anyone's message in the room; a member only her own.
    let mut carol = connect(&node.ws_url(), "carol").await;
    join(&mut carol, room, None).await.unwrap();
    let first = carol.send(room, "carol's first", None).await.unwrap();
    let second = carol.send(room, "carol's second", None).await.unwrap();
    let mut dave = connect(&node.ws_url(), "dave").await;
    assert_forbidden(dave.delete(room, first.seq, None).await);
    assert_forbidden(dave.edit(room, first.seq, "dave was here", None).await);
    let mut bob = connect(&node.ws_url(), "bob").await;
    bob.delete(room, first.seq, None).await.unwrap();
    assert_forbidden(bob.edit(room, second.seq, "bob was here", None).await);

    // The last owner can neither leave nor step down...
    rest(&http, "DELETE", &at(room, "/members/alice"), "alice", None)
        .await
        .refused(409, "conflict");
    set_role(&http, "alice", room, "alice", "moderator")
        .await
        .refused(409, "conflict");
    let mut alice = connect(&node.ws_url(), "alice").await;
    join(&mut alice, room, None).await.unwrap();
    assert_eq!(code(part(&mut alice, room).await), ErrorCode::Conflict);
    // ... until there is another owner. Owners cannot kick or ban owners.
    set_role(&http, "alice", room, "bob", "owner").await.ok(200);
    for (user, target) in [("alice", "bob"), ("bob", "alice")] {
        rest(
            &http,
            "DELETE",
            &at(room, &format!("/members/{target}")),
            user,
            None,
        )
        .await
        .refused(403, "forbidden");
        ban(&http, user, room, target)
            .await
            .refused(403, "forbidden");
    }
    let v = set_role(&http, "alice", room, "alice", "moderator")
        .await
        .ok(200);
    let m = as_member(&event_of(&v));
    assert_eq!(
        (m.change, m.user.as_str(), m.role),
        (MemberChange::Role, "alice", Some(Role::Moderator))
    );
    set_role(&http, "alice", room, "dave", "moderator")
        .await
        .refused(403, "forbidden");
    // A moderator now, she can be kicked by an owner; her connection, whose
    // part failed above, is told like any other (the failed part left no
    // trace on it).
    let v = rest(&http, "DELETE", &at(room, "/members/alice"), "bob", None)
        .await
        .ok(200);
    let kick = as_member(&event_of(&v));
    let mut saw_kick = false;
    loop {
        match next_push(&mut alice, room, "alice").await {
            Push::Event(RoomEvent::Member(m)) if m.seq == kick.seq => {
                assert_eq!((m.change, m.user.as_str()), (Removed, "alice"));
                saw_kick = true;
            }
            Push::Event(e) => assert!(e.seq() < kick.seq, "after the kick: {e:?}"),
            Push::Left(reason) => {
                assert!(saw_kick, "left before the event that caused it");
                assert_eq!(reason.as_deref(), Some("kicked"));
                break;
            }
        }
    }
    assert_eq!(
        listed(&http, "alice", room).await,
        None,
        "private, and no longer hers"
    );
    assert_forbidden(join(&mut alice, room, None).await);
    rest(&http, "DELETE", &at(room, "/members/bob"), "bob", None)
        .await
        .refused(409, "conflict");

    // A server admin sees, reads and joins every room, moderates it, and
    // deletes any message — but kicks or bans no owner.
    let store = node.server().node().store.clone();
    make_admin(&store, "root").await;
    let seen = listed(&http, "root", room)
        .await
        .expect("an admin sees private rooms");
    assert!(
        seen.private && seen.member != Some(true) && seen.role.is_none(),
        "{seen:?}"
    );
    let page = rest(&http, "GET", &at(room, "/messages"), "root", None)
        .await
        .ok(200);
    assert!(page.to_string().contains("carol's second"), "{page}");
    assert!(
        search_rooms(&http, "root", "second")
            .await
            .contains(&room.to_string())
    );
    let mut root = connect(&node.ws_url(), "root").await;
    let j = join(&mut root, room, None).await.unwrap();
    assert!(j.private && j.role.is_none(), "{j:?}");
    root.delete(room, second.seq, None).await.unwrap();
    rest(&http, "GET", &at(room, "/bans"), "root", None)
        .await
        .ok(200);
    rest(&http, "GET", &at(room, "/members"), "root", None)
        .await
        .ok(200);
    set_topic(&http, "root", room, "admin was here")
        .await
        .ok(200);
    let v = rest(&http, "DELETE", &at(room, "/members/dave"), "root", None)
        .await
        .ok(200);
    assert_eq!(as_member(&event_of(&v)).change, Removed);
    rest(&http, "DELETE", &at(room, "/members/bob"), "root", None)
        .await
        .refused(403, "forbidden");
    ban(&http, "root", room, "bob")
        .await
        .refused(403, "forbidden");
    // Not an admin any more: an outsider again.
    assert!(store.set_role("root", "user").await.unwrap());
    rest(&http, "GET", &at(room, "/messages"), "root", None)
        .await
        .refused(403, "forbidden");
    assert_eq!(listed(&http, "root", room).await, None);
}

// ----------------------------------- 4. the access cache and a Redis outage

/// Bob is in a public room on node B, whose cache knows him (he has sent).
/// Redis goes down; alice bans bob on node A. Without the bus, node B
/// learns of the ban through anti-entropy (the room's event log): bob's
/// connection there gets the event and `left`, and his next send is refused
/// — long before the cache's own expiry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ban_reaches_another_nodes_cache_while_redis_is_down() {
    use MemberChange::{Banned, Unbanned};
    /// The fleet's anti-entropy period is 1 s; the access cache's own
    /// expiry is 60 s. This is between.
    const CONVERGED: Duration = Duration::from_secs(15);
    let mut fleet = Fleet::start(BIN, 2, &[]).await;
    let (a, b) = (&fleet.nodes[0], &fleet.nodes[1]);
    let (a_http, b_http, b_ws) = (a.http(), b.http(), b.ws_url());
    let room = "outage";
    let (mut alice, _) = Watch::join(&a.ws_url(), "alice", room).await;
    let (mut bob, j) = Watch::join(&b_ws, "bob", room).await;
    assert_eq!(
        j.role,
        Some(Role::Member),
        "a public room's joiner is a member"
    );
    for text in ["one", "two"] {
        bob.conn.send(room, text, None).await.unwrap();
        alice.event().await;
        bob.event().await;
    }
    assert_eq!(
        members(&a_http, "alice", room).await,
        pairs(&[("alice", "owner"), ("bob", "member")])
    );

    fleet.redis.kill();
    let v = ban(&a_http, "alice", room, "bob").await.ok(201);
    let ban = as_member(&event_of(&v));
    assert_eq!(ban.seq, 3);
    tokio::time::timeout(CONVERGED, bob.taken_out(ban.seq, Banned, "bob", "banned"))
        .await
        .expect("node B took bob out without the bus");
    assert_forbidden(bob.conn.send(room, "three", None).await);
    assert_forbidden(join(&mut bob.conn, room, None).await);
    post(&b_http, "bob", room, "three")
        .await
        .refused(403, "forbidden");
    alice.member(ban.seq, Banned, "bob").await;

    // Redis is back: delivery through it resumes, and so does bob once unbanned.
    fleet.redis.restart();
    for node in &fleet.nodes {
        let what = format!("node {} to reconnect to Redis", node.addr);
        eventually(&what, WAIT, || async {
            (metric(&node.http(), "parley_bus_connected").await == Some(1.0)).then_some(())
        })
        .await;
    }
    rest(&a_http, "DELETE", &at(room, "/bans/bob"), "alice", None)
        .await
        .ok(200);
    alice.member(4, Unbanned, "bob").await;
    bob.notice(4, Unbanned, "bob").await;
    let j = bob.rejoin().await;
    assert_eq!(kinds(&j.events), ["member 4"]);
    // A resume reads and writes the public room again, without making a
    // member (only choosing the room does: `a_resume_does_not_undo_a_kick`).
    assert_eq!(j.role, None);
    let sent = bob.conn.send(room, "back", None).await.unwrap();
    assert_eq!(sent.seq, 5);
    for w in [&mut alice, &mut bob] {
        assert_eq!(w.event().await.seq(), 5);
    }
    alice.conn.send(room, "welcome back", None).await.unwrap();
    for w in [&mut alice, &mut bob] {
        assert_eq!(w.event().await.seq(), 6);
    }
}

// ----------------------------------------- 5. part, and version-1 clients

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn part_ends_membership_on_every_connection_and_node() {
    use MemberChange::Removed;
    let c = Cluster::fleet().await;
    let [a, b] = &c.sites;
    let room = "party";
    let (mut alice, j) = Watch::join(&a.ws, "alice", room).await;
    assert_eq!(
        j.role,
        Some(Role::Owner),
        "the first joiner of a new room owns it"
    );
    let (mut bob1, _) = Watch::join(&a.ws, "bob", room).await;
    let (mut bob2, j) = Watch::join(&b.ws, "bob", room).await;
    assert_eq!(j.role, Some(Role::Member));
    let hi = bob2.conn.send(room, "hi", None).await.unwrap();
    for w in [&mut alice, &mut bob1, &mut bob2] {
        assert_eq!(w.event().await.seq(), hi.seq);
    }

    // Bob parts on node A: the answer there, the push on node B.
    match part(&mut bob1.conn, room).await.unwrap() {
        ServerFrame::Left {
            re: Some(_),
            room: r,
            reason,
        } => {
            assert_eq!((r.as_str(), reason), (room, None));
        }
        other => panic!("expected the answer left, got {other:?}"),
    }
    let m = alice.member(hi.seq + 1, Removed, "bob").await;
    assert_eq!(m.from, "bob", "a part is a removal by oneself");
    bob2.taken_out(hi.seq + 1, Removed, "bob", "parted").await;
    // The asker has its answer; no second `left` follows it (the pong comes
    // after anything queued for it by the same delivery as alice's event).
    bob1.conn.ping().await.unwrap();
    let mut extra = Vec::new();
    while bob1.conn.buffered() > 0 {
        extra.push(bob1.conn.recv().await.unwrap());
    }
    // Checked at the end, so that a failure here does not hide the rest.
    let asker_lefts: Vec<ServerFrame> = extra
        .into_iter()
        .filter(|f| matches!(f, ServerFrame::Left { .. }))
        .collect();
    for w in [&mut bob1, &mut bob2] {
        assert_forbidden(w.conn.send(room, "still here?", None).await);
    }
    for site in [a, b] {
        let entry = listed(&site.http, "bob", room)
            .await
            .expect("a public room is listed");
        assert!(
            entry.member != Some(true) && entry.role.is_none(),
            "{entry:?}"
        );
        assert_eq!(
            members(&site.http, "bob", room).await,
            pairs(&[("alice", "owner")])
        );
    }
    assert_eq!(
        code(part(&mut bob1.conn, room).await),
        ErrorCode::NotFound,
        "not a member"
    );

    // A public room takes him back when he chooses it (a join without
    // `since`); a part over REST (no asking connection) reaches both.
    for w in [&mut bob1, &mut bob2] {
        let j = w.choose().await;
        assert_eq!(j.role, Some(Role::Member));
    }
    let v = rest(&b.http, "DELETE", &at(room, "/members/bob"), "bob", None)
        .await
        .ok(200);
    let seq = as_member(&event_of(&v)).seq;
    alice.member(seq, Removed, "bob").await;
    for w in [&mut bob1, &mut bob2] {
        w.taken_out(seq, Removed, "bob", "parted").await;
    }

    // A version-1 client: joins a brand-new room by name and owns it; its
    // frames and another v1 client's work as before, and a public join
    // adds no event to the log.
    let mut v1 = Connection::connect(&a.ws).await.unwrap();
    v1.send_text(format!(
        r#"{{"type":"hello","id":1,"token":"{}"}}"#,
        token("victor")
    ))
    .await
    .unwrap();
    assert!(matches!(
        v1.recv_timeout(WAIT).await.unwrap(),
        ServerFrame::Welcome { .. }
    ));
    v1.send_text(r#"{"type":"join","id":2,"room":"fresh-v1"}"#)
        .await
        .unwrap();
    match v1.recv_timeout(WAIT).await.unwrap() {
        ServerFrame::Joined {
            re,
            last_seq,
            history,
            ..
        } => {
            assert_eq!((re, last_seq, history.len()), (Some(2), 0, 0));
        }
        other => panic!("expected joined, got {other:?}"),
    }
    v1.send_text(r#"{"type":"send","id":3,"room":"fresh-v1","text":"v1 hello"}"#)
        .await
        .unwrap();
    let mut other = connect(&b.ws, "wendy").await;
    loop {
        match v1.recv_timeout(WAIT).await.unwrap() {
            ServerFrame::Ack {
                re: Some(3), seq, ..
            } => {
                assert_eq!(seq, 1);
                break;
            }
            ServerFrame::Error { .. } => panic!("the v1 send failed"),
            _ => continue,
        }
    }
    let j = join(&mut other, "fresh-v1", None).await.unwrap();
    assert_eq!(kinds(&j.events), ["message 1"]);
    assert_eq!(
        members(&a.http, "wendy", "fresh-v1").await,
        pairs(&[("victor", "owner"), ("wendy", "member")])
    );
    let victor = listed(&b.http, "victor", "fresh-v1").await.expect("listed");
    assert_eq!(
        (victor.role, victor.member, victor.private),
        (Some(Role::Owner), Some(true), false)
    );
    other.send("fresh-v1", "hi victor", None).await.unwrap();
    loop {
        let m = v1.next_message(WAIT).await.unwrap();
        if m.seq == 1 {
            continue; // its own, if it came after the ack
        }
        assert_eq!((m.seq, m.text.as_str()), (2, "hi victor"));
        break;
    }

    assert!(
        asker_lefts.is_empty(),
        "the connection that parted got its answer and also: {asker_lefts:?}"
    );
}

// ---------------------------------------------------------- 6. bad input

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_with_a_clear_error_and_never_panics() {
    let node = TestNode::start().await;
    let http = node.http();
    create(&http, "alice", json!({"room": "real"}))
        .await
        .ok(201);
    invite(&http, "alice", "real", "bob").await.ok(201);
    let long = "x".repeat(513);
    let long_utf8 = "€".repeat(171); // 513 bytes
    let just_fits = "y".repeat(512);
    let topic = |t: &str| json!({"topic": t}).to_string();
    let create_big = |t: &str| json!({"room": "big", "topic": t}).to_string();
    let ban_bob = |r: &str| json!({"user": "bob", "reason": r}).to_string();
    /// How a request is refused: (status, code).
    type Refusal = (u16, &'static str);
    const BAD: Refusal = (400, "bad_request");
    const TOO_LARGE: Refusal = (413, "too_large");
    const NOT_FOUND: Refusal = (404, "not_found");
    const CONFLICT: Refusal = (409, "conflict");
    const FORBIDDEN: Refusal = (403, "forbidden");
    // Every endpoint of a room but its messages, with a body it takes:
    // (method, path after /api/rooms/{room}, body).
    const ROOM_ENDPOINTS: [(&str, &str, Option<&str>); 8] = [
        ("PATCH", "", Some(r#"{"topic":"x"}"#)),
        ("GET", "/members", None),
        ("POST", "/members", Some(r#"{"user":"bob"}"#)),
        ("PUT", "/members/bob", Some(r#"{"role":"member"}"#)),
        ("DELETE", "/members/bob", None),
        ("GET", "/bans", None),
        ("POST", "/bans", Some(r#"{"user":"bob"}"#)),
        ("DELETE", "/bans/bob", None),
    ];

    // (method, path, body, refusal)
    let mut cases: Vec<(&str, String, Option<String>, Refusal)> = Vec::new();
    let mut case = |m: &'static str, p: &str, b: Option<&str>, refusal: Refusal| {
        cases.push((m, p.to_string(), b.map(str::to_string), refusal));
    };
    // Bad room names.
    for body in [
        r#"{"room":"Has Space"}"#,
        r#"{"room":"UPPER"}"#,
        r#"{"room":""}"#,
        r#"{"room":"-dash"}"#,
        r#"{"room":"dm:alice"}"#,
    ] {
        case("POST", "/api/rooms", Some(body), BAD);
    }
    let too_long_name = format!(r#"{{"room":"{}"}}"#, "r".repeat(65));
    case("POST", "/api/rooms", Some(&*too_long_name), BAD);
    for bad in ["UPPER", "has%20space", "bad!"] {
        for (method, tail, body) in ROOM_ENDPOINTS {
            case(method, &format!("/api/rooms/{bad}{tail}"), body, BAD);
        }
    }
    // DM rooms have two members and no roles, bans or topic.
    for dm in ["dm%3Aalice%3Abob", "dm%3Abob%3Aalice"] {
        let create_dm = format!(r#"{{"room":"{}"}}"#, dm.replace("%3A", ":"));
        case("POST", "/api/rooms", Some(&*create_dm), BAD);
        for (method, tail, body) in [
            ("PATCH", "", Some(r#"{"topic":"x"}"#)),
            ("POST", "/members", Some(r#"{"user":"carol"}"#)),
            ("PUT", "/members/bob", Some(r#"{"role":"owner"}"#)),
            ("DELETE", "/members/bob", None),
            ("GET", "/bans", None),
            ("POST", "/bans", Some(r#"{"user":"bob"}"#)),
            ("DELETE", "/bans/bob", None),
        ] {
            case(method, &format!("/api/rooms/{dm}{tail}"), body, BAD);
        }
    }
    // Invalid user names.
    for body in [
        r#"{"user":"has space"}"#,
        r#"{"user":""}"#,
        r#"{"user":"ünïcode"}"#,
    ] {
        case("POST", "/api/rooms/real/members", Some(body), BAD);
        case("POST", "/api/rooms/real/bans", Some(body), BAD);
    }
    let too_long_user = format!(r#"{{"user":"{}"}}"#, "u".repeat(33));
    case(
        "POST",
        "/api/rooms/real/members",
        Some(&*too_long_user),
        BAD,
    );
    for bad in ["has%20space", "bad!", "%C3%BC"] {
        let member = format!("/api/rooms/real/members/{bad}");
        case("PUT", &member, Some(r#"{"role":"member"}"#), BAD);
        case("DELETE", &member, None, BAD);
        case("DELETE", &format!("/api/rooms/real/bans/{bad}"), None, BAD);
    }
    // Topics and reasons over 512 bytes.
    for text in [long.as_str(), long_utf8.as_str()] {
        case("POST", "/api/rooms", Some(&*create_big(text)), TOO_LARGE);
        case("PATCH", "/api/rooms/real", Some(&*topic(text)), TOO_LARGE);
        case(
            "POST",
            "/api/rooms/real/bans",
            Some(&*ban_bob(text)),
            TOO_LARGE,
        );
    }
    // Malformed bodies and unknown roles.
    for body in [
        "{",
        "[]",
        r#"["real"]"#,
        "null",
        r#""real""#,
        "{}",
        r#"{"room":5}"#,
        r#"{"room":"ok","evil":1}"#,
        r#"{"room":"ok","private":"yes"}"#,
    ] {
        case("POST", "/api/rooms", Some(body), BAD);
    }
    for body in [
        "{",
        "{}",
        r#"{"topic":null}"#,
        r#"{"topic":7}"#,
        r#"["x"]"#,
        r#"{"topic":"x","private":true}"#,
    ] {
        case("PATCH", "/api/rooms/real", Some(body), BAD);
    }
    for body in ["{", "{}", r#"{"user":["bob"]}"#, r#"{"reason":"no user"}"#] {
        case("POST", "/api/rooms/real/members", Some(body), BAD);
        case("POST", "/api/rooms/real/bans", Some(body), BAD);
    }
    for body in [
        r#"{"role":"admin"}"#,
        r#"{"role":"Owner"}"#,
        r#"{"role":""}"#,
        r#"{"role":null}"#,
        "{}",
        "{",
        r#"{"role":"member","x":1}"#,
    ] {
        case("PUT", "/api/rooms/real/members/bob", Some(body), BAD);
    }
    // Unknown rooms.
    for (method, tail, body) in ROOM_ENDPOINTS {
        let path = format!("/api/rooms/nowhere{tail}");
        case(method, &path, body, NOT_FOUND);
    }
    case("GET", "/api/rooms/nowhere/messages", None, NOT_FOUND);
    case("GET", "/api/search?q=x&room=nowhere", None, NOT_FOUND);
    // Changes that change nothing, or name no member.
    case("DELETE", "/api/rooms/real/members/nobody", None, NOT_FOUND);
    case(
        "PUT",
        "/api/rooms/real/members/nobody",
        Some(r#"{"role":"moderator"}"#),
        NOT_FOUND,
    );
    case("DELETE", "/api/rooms/real/bans/bob", None, NOT_FOUND);
    case(
        "POST",
        "/api/rooms/real/members",
        Some(r#"{"user":"bob"}"#),
        CONFLICT,
    );
    case(
        "PUT",
        "/api/rooms/real/members/bob",
        Some(r#"{"role":"member"}"#),
        CONFLICT,
    );
    case(
        "POST",
        "/api/rooms/real/bans",
        Some(r#"{"user":"alice"}"#),
        FORBIDDEN,
    );
    case("POST", "/api/rooms", Some(r#"{"room":"real"}"#), CONFLICT);

    for (method, path, body, (status, code)) in &cases {
        rest(&http, method, path, "alice", body.as_deref())
            .await
            .refused(*status, code);
    }

    // Over WS: parts of bad, DM and unknown rooms.
    let mut conn = connect(&node.ws_url(), "alice").await;
    for (room, expected) in [
        ("UPPER", ErrorCode::BadRequest),
        ("dm:alice:bob", ErrorCode::BadRequest),
        ("dm:bob:alice", ErrorCode::BadRequest),
        ("nowhere", ErrorCode::NotFound),
    ] {
        assert_eq!(code(part(&mut conn, room).await), expected, "part {room}");
    }
    conn.send_text(r#"{"type":"part","id":99}"#).await.unwrap();
    match conn.recv_timeout(WAIT).await.unwrap() {
        ServerFrame::Error {
            re: Some(99),
            code: ErrorCode::BadRequest,
            ..
        } => {}
        other => panic!("a part without a room: {other:?}"),
    }

    // Exactly 512 bytes fit; nothing was created or changed by the refusals.
    let v = rest(
        &http,
        "PATCH",
        "/api/rooms/real",
        "alice",
        Some(topic(&just_fits).as_str()),
    )
    .await
    .ok(200);
    match event_of(&v) {
        RoomEvent::Topic(t) => assert_eq!(t.topic, just_fits),
        other => panic!("expected a topic event, got {other:?}"),
    }
    rest(
        &http,
        "POST",
        "/api/rooms",
        "alice",
        Some(create_big(&just_fits).as_str()),
    )
    .await
    .ok(201);
    let events = rest(&http, "GET", "/api/rooms/real/messages", "alice", None)
        .await
        .ok(200);
    let events: Vec<RoomEvent> = serde_json::from_value(events["messages"].clone()).unwrap();
    assert_eq!(
        kinds(&events),
        ["member 1", "topic 2"],
        "refusals store nothing"
    );
    for name in ["ok", "nowhere"] {
        assert_eq!(
            listed(&http, "alice", name).await,
            None,
            "{name} was not created"
        );
    }
    // The node still answers everything.
    let ready = http::request(&http, "GET", "/readyz", None, None)
        .await
        .unwrap();
    assert_eq!(ready.status, 200);
    conn.ping().await.unwrap();
    assert_eq!(
        members(&http, "bob", "real").await,
        pairs(&[("alice", "owner"), ("bob", "member")])
    );
}

// ------------------------------------------------- 7. the hot path's cost

/// Membership checks on the hot path cost no database round trip per
/// message: a connection's sends are checked against the node's cache of
/// its live room (`parley_access_checks_total` counts where each check was
/// answered), so a hundred sends read the store at most once per user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_are_checked_against_the_cache_not_the_store() {
    let node = TestNode::start().await;
    let http = node.http();
    let checks = |source: &'static str| {
        let http = http.clone();
        async move {
            metric(
                &http,
                &format!("parley_access_checks_total{{source=\"{source}\"}}"),
            )
            .await
            .unwrap_or(0.0)
        }
    };
    let mut alice = node.connect("alice").await;
    let mut bob = node.connect("bob").await;
    alice.join("hot", None).await.unwrap();
    bob.join("hot", None).await.unwrap();
    let before = (checks("store").await, checks("cache").await);
    for i in 0..50 {
        alice.send("hot", &format!("a{i}"), None).await.unwrap();
        bob.send("hot", &format!("b{i}"), None).await.unwrap();
    }
    let store = checks("store").await - before.0;
    let cache = checks("cache").await - before.1;
    assert!(
        store <= 2.0,
        "{store} store reads for 100 sends of two users"
    );
    assert!(cache >= 98.0, "{cache} cached checks for 100 sends");
}

/// A member is named as registered, whatever spelling the moderator typed
/// (an unregistered name, one only tokens know, as typed).
#[tokio::test]
async fn members_are_named_as_registered() {
    let node = TestNode::start().await;
    let base = node.http();
    let owner = http::register(&base, "Olga", "correct horse")
        .await
        .unwrap();
    http::register(&base, "Dave2", "battery staple")
        .await
        .unwrap();
    http::create_room(&base, &owner.token, "named", None, true)
        .await
        .unwrap();
    let added = http::add_member(&base, &owner.token, "named", "DAVE2")
        .await
        .unwrap();
    let RoomEvent::Member(m) = added else {
        panic!("{added:?}")
    };
    assert_eq!(m.user, "Dave2");
    let kicked = http::remove_member(&base, &owner.token, "named", "dave2")
        .await
        .unwrap();
    assert!(
        matches!(&kicked, RoomEvent::Member(m) if m.user == "Dave2"),
        "{kicked:?}"
    );
    http::add_member(&base, &owner.token, "named", "Ghost-Only-In-Tokens")
        .await
        .unwrap();
    let page = http::members(&base, &owner.token, "named").await.unwrap();
    let names: Vec<&str> = page.members.iter().map(|m| m.user.as_str()).collect();
    assert_eq!(names, ["Olga", "Ghost-Only-In-Tokens"]);
}

/// A resume (a join with `since`) never makes a member: a device that was
/// away while its user was kicked from a public room reads it again as
/// anyone may, but the room does not come back among the user's rooms; a
/// join without `since` (the user choosing the room) does make a member.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_does_not_undo_a_kick() {
    let node = TestNode::start().await;
    let base = node.http();
    create(&base, "alice", json!({"room": "square"}))
        .await
        .ok(201);
    let mut bob = node.connect("bob").await;
    bob.join("square", None).await.unwrap();
    assert_eq!(
        listed(&base, "bob", "square").await.and_then(|r| r.member),
        Some(true)
    );
    let path = at("square", "/members/bob");
    rest(&base, "DELETE", &path, "alice", None).await.ok(200);
    assert_eq!(
        listed(&base, "bob", "square").await.and_then(|r| r.member),
        Some(false)
    );
    // Bob's other device comes back and resumes where it was.
    let mut away = node.connect("bob").await;
    let resumed = away.join("square", Some(0)).await.unwrap();
    assert_eq!(resumed.last_seq, 1, "the kick is in the room's log");
    assert_eq!(
        listed(&base, "bob", "square").await.and_then(|r| r.member),
        Some(false),
        "a resume made bob a member again"
    );
    // Choosing the room again does.
    node.connect("bob")
        .await
        .join("square", None)
        .await
        .unwrap();
    assert_eq!(
        listed(&base, "bob", "square").await.and_then(|r| r.member),
        Some(true)
    );
    // A resume still creates a room nobody made yet (version 1 clients).
    let fresh = away.join("brand-new", Some(0)).await.unwrap();
    assert_eq!(fresh.last_seq, 0);
    assert_eq!(
        members(&base, "bob", "brand-new").await,
        [("bob".to_string(), "owner".to_string())]
    );
}

/// Every stored membership change is counted by kind (and logged), for
/// the operators' dashboards and audit trail.
#[tokio::test]
async fn membership_changes_are_counted() {
    let node = TestNode::start().await;
    let base = node.http();
    create(&base, "alice", json!({"room": "audit", "private": true}))
        .await
        .ok(201);
    invite(&base, "alice", "audit", "bob").await.ok(201);
    invite(&base, "alice", "audit", "bob")
        .await
        .refused(409, "conflict");
    ban(&base, "alice", "audit", "bob").await.ok(201);
    for (change, want) in [("added", 1.0), ("banned", 1.0), ("role", 0.0)] {
        let name = format!("parley_membership_changes_total{{change=\"{change}\"}}");
        assert_eq!(metric(&base, &name).await.unwrap_or(0.0), want, "{change}");
    }
}
