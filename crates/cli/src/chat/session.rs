//! The loop both front ends share: client events, background results and
//! user input in, [`Output`]s out; typed lines carried out against the
//! [`Client`] (messages, replies, edits, deletes, reactions, read
//! positions, joins and parts) and the REST API (room list, older history,
//! search, creating rooms, topics, members, roles, kicks and bans).

use std::future::Future;
use std::time::Duration;

use anyhow::bail;
use parley_client::protocol::{RoomEvent, is_dm_room, same_user};
use parley_client::{Client, ClientError, Event, http};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio::time::Instant;

use super::command::{Command, HELP, Input, parse_input};
use super::state::{ChatState, Notice, Output, Target};

/// How long quitting (or EOF on stdin) waits for sends to be acknowledged
/// and joins to be answered.
pub const ACK_WAIT: Duration = Duration::from_secs(3);

/// Results `/search` shows.
const SEARCH_LIMIT: u32 = 20;

/// The room typed commands act on, or why there is none.
fn current_room(state: &ChatState) -> Result<String, String> {
    match &state.target {
        None => Err("not in a room; /join ROOM or /dm USER".into()),
        Some(t) if !state.is_joined(t.room()) => Err(format!("not joined to {} (yet)", t.room())),
        Some(t) => Ok(t.room().to_string()),
    }
}

/// The room a moderation command acts on: the current one, not a DM.
fn moderated_room(state: &ChatState) -> Result<String, String> {
    let room = current_room(state)?;
    if is_dm_room(&room) {
        return Err(format!(
            "{room} is a DM: it has no members to manage; /join ROOM first"
        ));
    }
    Ok(room)
}

/// A REST call that failed, as a status line: `kick bob failed
/// (forbidden): cannot act against a higher role`.
pub fn failed(what: &str, e: &ClientError) -> String {
    match e {
        ClientError::Http {
            code: Some(code),
            message,
            ..
        } => format!("{what} failed ({code}): {message}"),
        e => format!("{what} failed: {e}"),
    }
}

/// A line of `/rooms`: `room plans: private, you are owner, 2 online, 5
/// messages, 0 unread · topic: lunch`.
pub fn room_line(r: &parley_client::protocol::rest::RoomInfo) -> String {
    let mut line = format!("room {}: ", r.room);
    let traits = super::format::room_traits(r.private, r.role);
    if !traits.is_empty() {
        line.push_str(&traits);
        line.push_str(", ");
    }
    line.push_str(&format!(
        "{} online, {} messages",
        r.members_online, r.last_seq
    ));
    // Only for rooms the user belongs to (protocol 1.1 §2).
    if let Some(unread) = r.unread {
        line.push_str(&format!(", {unread} unread"));
        match r.mentions.unwrap_or(0) {
            0 => {}
            1 => line.push_str(", 1 mention"),
            n => line.push_str(&format!(", {n} mentions")),
        }
    }
    if let Some(topic) = r.topic.as_deref().filter(|t| !t.is_empty()) {
        line.push_str(&format!(" · topic: {topic}"));
    }
    line
}

/// How long stopping the client may take before the process just ends.
const STOP_WAIT: Duration = Duration::from_secs(2);

/// What a front end wants after an input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// A typed line, to send or to carry out.
    Submit(String),
    Quit,
}

/// A way to show the chat and take input: line mode or the TUI.
pub trait Frontend {
    /// What its input thread delivers.
    type Input;
    fn show(&mut self, state: &ChatState, out: Vec<Output>) -> anyhow::Result<()>;
    fn input(&mut self, state: &ChatState, input: Self::Input) -> anyhow::Result<Option<Action>>;
    /// Called every [`Frontend::TICK`] (e.g. to expire the typing indicator).
    fn tick(&mut self, state: &ChatState) -> anyhow::Result<()>;
    const TICK: Option<Duration>;
    /// Whether the user sees the newest of the room: `read` is said only
    /// then, since a reader scrolled up into history has not read what
    /// arrives below (on this device or any other).
    fn at_end(&self) -> bool {
        true
    }
}

/// The connection to the server: the resilient client plus what REST calls need.
pub struct Session {
    client: Client,
    http: String,
    token: String,
    notices: UnboundedSender<Notice>,
}

impl Session {
    pub fn new(
        client: Client,
        http: String,
        token: String,
        notices: UnboundedSender<Notice>,
    ) -> Self {
        Self {
            client,
            http,
            token,
            notices,
        }
    }

    /// Stops the client (closes the connection), waiting a little at most.
    pub async fn stop(self) {
        let _ = tokio::time::timeout(STOP_WAIT, self.client.stop()).await;
    }

    /// Carries out one typed line. Returns what to show at once and whether
    /// the user asked to quit; results of REST calls come later as [`Notice`]s.
    pub fn submit(&self, state: &mut ChatState, line: &str) -> (Vec<Output>, bool) {
        let status = |s: String| vec![Output::Status(s)];
        let input = match parse_input(line) {
            Ok(input) => input,
            Err(e) => return (status(e), false),
        };
        let out = match input {
            Input::Empty => Vec::new(),
            Input::Text(text) => match &state.target {
                None => status("not in a room; /join ROOM or /dm USER".into()),
                Some(Target::Room(room)) => {
                    let nonce = self.client.send(room, &text);
                    state.sent(nonce);
                    Vec::new()
                }
                Some(Target::Dm { user, .. }) => {
                    let nonce = self.client.send_dm(user, &text);
                    state.sent(nonce);
                    Vec::new()
                }
            },
            Input::Command(Command::Quit) => return (Vec::new(), true),
            Input::Command(Command::Help) => {
                HELP.iter().map(|h| Output::Status(h.to_string())).collect()
            }
            Input::Command(Command::Join(room)) => {
                let target = Target::of_room(&room, &state.me);
                state.target = Some(target.clone());
                if state.is_joined(&room) {
                    status(format!("now talking in {}", target.label()))
                } else {
                    state.joining(&room);
                    self.client.join(&room);
                    Vec::new()
                }
            }
            Input::Command(Command::Dm(user)) => {
                if user == state.me {
                    return (status("that is you; /dm needs another user".into()), false);
                }
                let target = Target::dm(&state.me, &user);
                let room = target.room().to_string();
                state.target = Some(target);
                if !state.is_joined(&room) {
                    state.joining(&room);
                    self.client.join(&room);
                }
                status(format!("now talking to @{user} (room {room})"))
            }
            Input::Command(Command::Leave(room)) => {
                let Some(room) =
                    room.or_else(|| state.target.as_ref().map(|t| t.room().to_string()))
                else {
                    return (status("not in a room".into()), false);
                };
                if !state.is_joined(&room) {
                    return (status(format!("not in {room}")), false);
                }
                self.client.leave(&room);
                let before = state.target.clone();
                state.leaving(&room);
                match &state.target {
                    Some(t) if Some(t) != before.as_ref() => {
                        status(format!("now talking in {}", t.label()))
                    }
                    None => status("not in a room now; /join ROOM or /dm USER".into()),
                    _ => Vec::new(),
                }
            }
            Input::Command(Command::Part(room)) => {
                let Some(room) =
                    room.or_else(|| state.target.as_ref().map(|t| t.room().to_string()))
                else {
                    return (status("not in a room".into()), false);
                };
                if is_dm_room(&room) {
                    return (
                        status(format!(
                            "{room} is a DM: it cannot be parted; /leave stops showing it"
                        )),
                        false,
                    );
                }
                // The room goes when the server answers (`left`).
                state.parting(&room);
                self.client.part(&room);
                Vec::new()
            }
            Input::Command(Command::Create {
                room,
                private,
                topic,
            }) => {
                let (base, token) = (self.http.clone(), self.token.clone());
                self.background(state, async move {
                    let what = format!("create {room}");
                    match http::create_room(&base, &token, &room, topic.as_deref(), private).await {
                        Ok(info) => Notice::Created {
                            room: info.room,
                            private: info.private,
                            topic: info.topic,
                        },
                        Err(e) => Notice::Status(vec![failed(&what, &e)]),
                    }
                });
                Vec::new()
            }
            Input::Command(Command::Topic(None)) => match current_room(state) {
                Err(why) => status(why),
                Ok(room) => match state.topic(&room) {
                    Some(topic) => status(format!("topic of {room}: {topic}")),
                    None => status(format!("{room} has no topic; /topic TEXT sets one")),
                },
            },
            Input::Command(Command::Topic(Some(topic))) => {
                let what = if topic.is_empty() {
                    "clearing the topic".to_string()
                } else {
                    "setting the topic".to_string()
                };
                self.moderate(state, what, move |base, token, room| async move {
                    http::set_topic(&base, &token, &room, &topic).await
                })
            }
            Input::Command(Command::Invite(user)) => self.moderate(
                state,
                format!("invite {user}"),
                move |base, token, room| async move {
                    http::add_member(&base, &token, &room, &user).await
                },
            ),
            Input::Command(Command::Kick(user)) if same_user(&user, &state.me) => {
                status("/part ends your own membership".into())
            }
            Input::Command(Command::Kick(user)) => self.moderate(
                state,
                format!("kick {user}"),
                move |base, token, room| async move {
                    http::remove_member(&base, &token, &room, &user).await
                },
            ),
            Input::Command(Command::Ban(user, reason)) => self.moderate(
                state,
                format!("ban {user}"),
                move |base, token, room| async move {
                    http::ban(&base, &token, &room, &user, reason.as_deref()).await
                },
            ),
            Input::Command(Command::Unban(user)) => {
                self.moderate(
                    state,
                    format!("unban {user}"),
                    move |base, token, room| async move {
                        http::unban(&base, &token, &room, &user).await
                    },
                )
            }
            Input::Command(Command::Role(user, role)) => self.moderate(
                state,
                format!("making {user} {role}"),
                move |base, token, room| async move {
                    http::set_role(&base, &token, &room, &user, role).await
                },
            ),
            Input::Command(Command::Members) => match current_room(state) {
                Err(why) => status(why),
                Ok(room) => {
                    let (base, token) = (self.http.clone(), self.token.clone());
                    self.background(state, async move {
                        match http::members(&base, &token, &room).await {
                            Ok(page) => Notice::Members {
                                room: page.room,
                                members: page.members,
                            },
                            Err(e) => Notice::Status(vec![failed(
                                &format!("listing the members of {room}"),
                                &e,
                            )]),
                        }
                    });
                    Vec::new()
                }
            },
            Input::Command(Command::Bans) => match moderated_room(state) {
                Err(why) => status(why),
                Ok(room) => {
                    let (base, token) = (self.http.clone(), self.token.clone());
                    self.background(state, async move {
                        Notice::Status(match http::bans(&base, &token, &room).await {
                            Ok(page) if page.bans.is_empty() => vec![format!("no bans in {room}")],
                            Ok(page) => {
                                let n = page.bans.len();
                                let mut lines = vec![format!(
                                    "{n} ban{} in {room}:",
                                    if n == 1 { "" } else { "s" }
                                )];
                                lines.extend(page.bans.iter().map(|b| {
                                    let mut line =
                                        format!("banned {} by {} at {}", b.user, b.by, b.ts);
                                    if let Some(reason) = &b.reason {
                                        line.push_str(&format!(": {reason}"));
                                    }
                                    line
                                }));
                                lines
                            }
                            Err(e) => vec![failed(&format!("listing the bans of {room}"), &e)],
                        })
                    });
                    Vec::new()
                }
            },
            Input::Command(Command::Who) => vec![state.who()],
            Input::Command(Command::Rooms) => {
                self.list_rooms(state);
                Vec::new()
            }
            Input::Command(Command::History(None)) => state.history(),
            Input::Command(Command::Reply(seq, text)) => match current_room(state) {
                Err(why) => status(why),
                Ok(room) => {
                    let nonce = self.client.reply(&room, seq, &text);
                    state.request(nonce, "reply");
                    Vec::new()
                }
            },
            Input::Command(Command::Edit(seq, text)) => match current_room(state) {
                Err(why) => status(why),
                Ok(room) => {
                    let held = state.room(&room).and_then(|r| r.get(seq));
                    match held {
                        Some(m) if !same_user(&m.from, &state.me) => status(format!(
                            "#{seq} is {}'s message; you can edit only your own",
                            m.from
                        )),
                        Some(m) if m.deleted => status(format!("#{seq} is deleted")),
                        _ => {
                            let nonce = self.client.edit(&room, seq, &text);
                            state.request(nonce, "edit");
                            Vec::new()
                        }
                    }
                }
            },
            Input::Command(Command::Delete(seq)) => match current_room(state) {
                Err(why) => status(why),
                Ok(room) => {
                    let deleted = state
                        .room(&room)
                        .and_then(|r| r.get(seq))
                        .is_some_and(|m| m.deleted);
                    if deleted {
                        status(format!("#{seq} is deleted already"))
                    } else {
                        let nonce = self.client.delete(&room, seq);
                        state.request(nonce, "delete");
                        Vec::new()
                    }
                }
            },
            Input::Command(Command::React(seq, emoji)) => match current_room(state) {
                Err(why) => status(why),
                Ok(room) => {
                    // A toggle: take back a reaction one has, add one one has not.
                    let on = !state
                        .room(&room)
                        .is_some_and(|r| r.has_reacted(seq, &emoji, &state.me));
                    let nonce = self.client.react(&room, seq, &emoji, on);
                    state.request(nonce, "reaction");
                    Vec::new()
                }
            },
            Input::Command(Command::Search(words)) => {
                self.search(state, words);
                Vec::new()
            }
            Input::Command(Command::History(Some(limit))) => match &state.target {
                None => status("not in a room; /join ROOM or /dm USER".into()),
                Some(target) => {
                    let room = target.room().to_string();
                    let before = state.oldest(&room);
                    self.fetch_older(state, room, before, limit);
                    Vec::new()
                }
            },
        };
        (out, false)
    }

    /// Runs a REST call in the background; the [`Notice`] it makes comes
    /// back through the notices channel (and ends the call for
    /// [`ChatState::settled`]).
    fn background(
        &self,
        state: &mut ChatState,
        call: impl Future<Output = Notice> + Send + 'static,
    ) {
        state.rest_started();
        let notices = self.notices.clone();
        tokio::spawn(async move {
            let _ = notices.send(call.await);
        });
    }

    /// A moderation call on the current room (`call(base, token, room)`).
    /// Done, it shows nothing: its event comes live, like everyone's. A
    /// refusal is a status line saying `what` failed and why.
    fn moderate<F, Fut>(&self, state: &mut ChatState, what: String, call: F) -> Vec<Output>
    where
        F: FnOnce(String, String, String) -> Fut,
        Fut: Future<Output = parley_client::Result<RoomEvent>> + Send + 'static,
    {
        let room = match moderated_room(state) {
            Ok(room) => room,
            Err(why) => return vec![Output::Status(why)],
        };
        let call = call(self.http.clone(), self.token.clone(), room);
        self.background(state, async move {
            Notice::Status(match call.await {
                Ok(_) => Vec::new(),
                Err(e) => vec![failed(&what, &e)],
            })
        });
        Vec::new()
    }

    /// `GET /api/rooms` in the background.
    fn list_rooms(&self, state: &mut ChatState) {
        let (base, token) = (self.http.clone(), self.token.clone());
        self.background(state, async move {
            let lines = match http::rooms(&base, &token).await {
                Ok(rooms) if rooms.is_empty() => vec!["no rooms yet".to_string()],
                Ok(rooms) => {
                    let n = rooms.len();
                    let mut lines = vec![format!("{n} room{}:", if n == 1 { "" } else { "s" })];
                    lines.extend(rooms.iter().map(room_line));
                    lines
                }
                Err(e) => vec![failed("listing the rooms", &e)],
            };
            Notice::Status(lines)
        });
    }

    /// `GET /api/search?q=…` in the background: one status line per hit,
    /// `[room] #seq from: text`, newest first.
    fn search(&self, state: &mut ChatState, words: String) {
        let (base, token) = (self.http.clone(), self.token.clone());
        self.background(state, async move {
            let lines =
                match http::search(&base, &token, &words, None, Some(SEARCH_LIMIT), None).await {
                    Ok(page) if page.results.is_empty() => {
                        vec![format!("search {words:?}: nothing found")]
                    }
                    Ok(page) => {
                        let n = page.results.len();
                        let mut lines = vec![format!(
                            "search {words:?}: {n}{} result{}, newest first:",
                            if page.next.is_some() { "+" } else { "" },
                            if n == 1 { "" } else { "s" }
                        )];
                        lines.extend(page.results.iter().map(|r| {
                            format!("found [{}] #{} {}: {}", r.room, r.seq, r.from, r.text)
                        }));
                        if page.next.is_some() {
                            lines.push("more results exist: add words to narrow it".into());
                        }
                        lines
                    }
                    Err(e) => vec![failed("search", &e)],
                };
            Notice::Status(lines)
        });
    }

    /// Carries out what the state says is due: `read` requests (the room
    /// looked at has new events, and its end is in view), joins (a room
    /// just created).
    pub fn flush(&self, state: &mut ChatState) {
        for (room, seq) in state.take_reads() {
            self.client.read(&room, seq);
        }
        for room in state.take_joins() {
            self.client.join(&room);
        }
    }

    /// `GET /api/rooms/{room}/messages?before=…` in the background.
    fn fetch_older(&self, state: &mut ChatState, room: String, before: Option<u64>, limit: u32) {
        let (base, token) = (self.http.clone(), self.token.clone());
        self.background(state, async move {
            match http::messages(&base, &token, &room, before, None, Some(limit)).await {
                Ok(page) => Notice::Older {
                    room,
                    messages: parley_client::messages_of(&page.messages),
                    more: page.more,
                },
                Err(e) => {
                    Notice::Status(vec![failed(&format!("fetching the history of {room}"), &e)])
                }
            }
        });
    }
}

/// Runs a front end until the user quits (or input ends) and the sends are
/// acknowledged or [`ACK_WAIT`] has passed. An error ends the chat: the
/// server refused the token, or the front end failed.
pub async fn drive<F: Frontend>(
    frontend: &mut F,
    state: &mut ChatState,
    session: &Session,
    events: &mut UnboundedReceiver<Event>,
    notices: &mut UnboundedReceiver<Notice>,
    inputs: &mut UnboundedReceiver<F::Input>,
) -> anyhow::Result<()> {
    let mut closing: Option<Instant> = None;
    let mut ticker = tokio::time::interval(F::TICK.unwrap_or(Duration::from_secs(3600)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if let Some(deadline) = closing
            && (state.settled() || Instant::now() >= deadline)
        {
            break;
        }
        tokio::select! {
            event = events.recv() => {
                let Some(event) = event else {
                    bail!("the connection to the server ended for good");
                };
                state.seeing_end = frontend.at_end();
                let out = state.apply(event, std::time::Instant::now());
                frontend.show(state, out)?;
                if let Some(why) = &state.fatal {
                    bail!("{why}");
                }
                session.flush(state);
            }
            Some(notice) = notices.recv() => {
                let out = state.apply_notice(notice);
                frontend.show(state, out)?;
                session.flush(state);
            }
            input = inputs.recv(), if closing.is_none() => {
                let action = match input {
                    None => Some(Action::Quit),
                    Some(input) => frontend.input(state, input)?,
                };
                let quit = match action {
                    None => false,
                    Some(Action::Quit) => true,
                    Some(Action::Submit(line)) => {
                        let (out, quit) = session.submit(state, &line);
                        frontend.show(state, out)?;
                        quit
                    }
                };
                // Switching rooms reads the one switched to; scrolling
                // back down reads what arrived meanwhile.
                state.seeing_end = frontend.at_end();
                session.flush(state);
                if quit {
                    closing = Some(Instant::now() + ACK_WAIT);
                    if !state.settled() {
                        frontend.tick(state)?;
                    }
                }
            }
            _ = ticker.tick(), if F::TICK.is_some() => frontend.tick(state)?,
            _ = async {
                match closing {
                    Some(deadline) => tokio::time::sleep_until(deadline).await,
                    None => std::future::pending().await,
                }
            } => {}
        }
    }
    // What is already queued belongs to what was waited for (the client
    // reports `Joined` before the history of that join).
    while let Ok(event) = events.try_recv() {
        let out = state.apply(event, std::time::Instant::now());
        frontend.show(state, out)?;
    }
    while let Ok(notice) = notices.try_recv() {
        let out = state.apply_notice(notice);
        frontend.show(state, out)?;
    }
    if state.pending() > 0 {
        let n = state.pending();
        frontend.show(
            state,
            vec![Output::Status(format!(
                "{n} message{} not acknowledged by the server; {} may not have been sent",
                if n == 1 { " was" } else { "s were" },
                if n == 1 { "it" } else { "they" }
            ))],
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use parley_client::protocol::rest::RoomInfo;
    use parley_client::protocol::{ErrorCode, Role};

    use super::*;

    fn info(room: &str) -> RoomInfo {
        RoomInfo {
            room: room.into(),
            members_online: 2,
            last_seq: 5,
            member: None,
            read_seq: None,
            unread: None,
            mentions: None,
            private: false,
            topic: None,
            role: None,
        }
    }

    #[test]
    fn room_lines_mark_private_rooms_roles_and_topics() {
        assert_eq!(
            room_line(&info("general")),
            "room general: 2 online, 5 messages"
        );
        let mut plans = info("plans");
        plans.private = true;
        plans.role = Some(Role::Owner);
        plans.unread = Some(1);
        plans.mentions = Some(1);
        plans.topic = Some("lunch".into());
        assert_eq!(
            room_line(&plans),
            "room plans: private, you are owner, 2 online, 5 messages, 1 unread, 1 mention · topic: lunch"
        );
        plans.private = false;
        plans.role = Some(Role::Member);
        plans.topic = None;
        plans.mentions = Some(0);
        assert_eq!(
            room_line(&plans),
            "room plans: you are member, 2 online, 5 messages, 1 unread"
        );
    }

    #[test]
    fn refusals_say_what_failed_and_why() {
        let refused = ClientError::Http {
            status: 403,
            code: Some(ErrorCode::Forbidden),
            message: "cannot act against a higher role".into(),
        };
        assert_eq!(
            failed("kick alice", &refused),
            "kick alice failed (forbidden): cannot act against a higher role"
        );
        let down = ClientError::Request("connection reset".into());
        assert_eq!(
            failed("listing the rooms", &down),
            "listing the rooms failed: HTTP request: connection reset"
        );
    }

    #[test]
    fn moderation_needs_a_joined_room_that_is_not_a_dm() {
        let mut state = ChatState::new("alice", None);
        assert!(
            moderated_room(&state)
                .unwrap_err()
                .contains("not in a room")
        );
        state.target = Some(Target::dm("alice", "bob"));
        assert!(moderated_room(&state).unwrap_err().contains("not joined"));
    }
}
