//! The loop both front ends share: client events, background results and
//! user input in, [`Output`]s out; typed lines carried out against the
//! [`Client`] (messages, replies, edits, deletes, reactions, read
//! positions) and the REST API (room list, older history, search).

use std::time::Duration;

use anyhow::bail;
use parley_client::protocol::same_user;
use parley_client::{Client, Event, http};
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
            Input::Command(Command::Who) => vec![state.who()],
            Input::Command(Command::Rooms) => {
                self.list_rooms();
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
                self.search(words);
                Vec::new()
            }
            Input::Command(Command::History(Some(limit))) => match &state.target {
                None => status("not in a room; /join ROOM or /dm USER".into()),
                Some(target) => {
                    let room = target.room().to_string();
                    self.fetch_older(room.clone(), state.oldest(&room), limit);
                    Vec::new()
                }
            },
        };
        (out, false)
    }

    /// `GET /api/rooms` in the background.
    fn list_rooms(&self) {
        let (base, token, notices) = (self.http.clone(), self.token.clone(), self.notices.clone());
        tokio::spawn(async move {
            let lines = match http::rooms(&base, &token).await {
                Ok(rooms) if rooms.is_empty() => vec!["no rooms yet".to_string()],
                Ok(rooms) => {
                    let n = rooms.len();
                    let mut lines = vec![format!("{n} room{}:", if n == 1 { "" } else { "s" })];
                    lines.extend(rooms.iter().map(|r| {
                        let mut line = format!(
                            "room {}: {} online, {} messages",
                            r.room, r.members_online, r.last_seq
                        );
                        // Only for rooms the user has read in (protocol 1.1 §2).
                        if let Some(unread) = r.unread {
                            line.push_str(&format!(", {unread} unread"));
                            match r.mentions.unwrap_or(0) {
                                0 => {}
                                1 => line.push_str(", 1 mention"),
                                n => line.push_str(&format!(", {n} mentions")),
                            }
                        }
                        line
                    }));
                    lines
                }
                Err(e) => vec![format!("listing the rooms failed: {e}")],
            };
            let _ = notices.send(Notice::Status(lines));
        });
    }

    /// `GET /api/search?q=…` in the background: one status line per hit,
    /// `[room] #seq from: text`, newest first.
    fn search(&self, words: String) {
        let (base, token, notices) = (self.http.clone(), self.token.clone(), self.notices.clone());
        tokio::spawn(async move {
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
                    Err(e) => vec![format!("search failed: {e}")],
                };
            let _ = notices.send(Notice::Status(lines));
        });
    }

    /// Sends the `read` requests the state says are due (the room looked
    /// at has new events).
    pub fn flush_reads(&self, state: &mut ChatState) {
        for (room, seq) in state.take_reads() {
            self.client.read(&room, seq);
        }
    }

    /// `GET /api/rooms/{room}/messages?before=…` in the background.
    fn fetch_older(&self, room: String, before: Option<u64>, limit: u32) {
        let (base, token, notices) = (self.http.clone(), self.token.clone(), self.notices.clone());
        tokio::spawn(async move {
            let notice = match http::messages(&base, &token, &room, before, None, Some(limit)).await
            {
                Ok(page) => Notice::Older {
                    room,
                    messages: parley_client::messages_of(&page.messages),
                    more: page.more,
                },
                Err(e) => {
                    Notice::Status(vec![format!("fetching the history of {room} failed: {e}")])
                }
            };
            let _ = notices.send(notice);
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
                let out = state.apply(event, std::time::Instant::now());
                frontend.show(state, out)?;
                if let Some(why) = &state.fatal {
                    bail!("{why}");
                }
                session.flush_reads(state);
            }
            Some(notice) = notices.recv() => {
                let out = state.apply_notice(notice);
                frontend.show(state, out)?;
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
                        // Switching rooms reads the one switched to.
                        session.flush_reads(state);
                        quit
                    }
                };
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
