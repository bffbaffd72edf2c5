//! What a typed line means: text to send, or a slash command.
//!
//! Pure parsing; [`super::session`] carries the commands out.

use parley_client::protocol::rest::MAX_SEARCH_QUERY_BYTES;
use parley_client::protocol::{
    MAX_EMOJI_BYTES, MAX_REASON_BYTES, MAX_TOPIC_BYTES, Role, is_dm_room, valid_emoji, valid_room,
    valid_username,
};

/// The largest message text sent (bytes of UTF-8): the protocol's default
/// limit. A larger one would be refused by the node; one over the frame
/// limit would even make it close the connection.
pub const MAX_TEXT_BYTES: usize = 4096;

/// The help text of `/help`, one line per command.
pub const HELP: &[&str] = &[
    "/join ROOM      join ROOM and talk there (and become a member)",
    "/leave [ROOM]   stop showing ROOM here (default: the current room); you stay a member",
    "/part [ROOM]    end your membership of ROOM (default: the current room)",
    "/rooms          list the rooms you may see: private ones, your role, topics",
    "/who            who is in the current room now",
    "/create NAME [--private] [TOPIC]  create room NAME (you own it) and join it",
    "/topic [TEXT]   show the current room's topic, or set it (--clear clears it)",
    "/members        the members of the current room with their roles",
    "/invite USER    add USER to the current room (owners, moderators)",
    "/kick USER      take USER out of the current room (owners, moderators)",
    "/ban USER [REASON]  kick USER and keep them out (owners, moderators)",
    "/unban USER     lift USER's ban",
    "/bans           the current room's bans (owners, moderators)",
    "/role USER owner|moderator|member  give USER a role (owners); /promote USER, /demote USER",
    "/dm USER        talk to USER in private",
    "/history        show again what this client holds of the current room",
    "/history N      fetch the N messages before the oldest one shown",
    "/reply SEQ TEXT answer message #SEQ of the current room",
    "/edit SEQ TEXT  replace the text of your message #SEQ",
    "/delete SEQ     delete message #SEQ",
    "/react SEQ EMOJI  add your EMOJI to message #SEQ, or take it back",
    "/search WORDS   find messages with every word, in every room you may read",
    "/quit           leave the chat (also Ctrl-C in the TUI)",
    "//text          send text that starts with a slash",
];

/// A typed line, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Nothing but white space: ignored.
    Empty,
    /// A message for the current room or DM.
    Text(String),
    Command(Command),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Join(String),
    Leave(Option<String>),
    /// End one's membership of a room (default: the current one).
    Part(Option<String>),
    Rooms,
    /// Create a room (owned by the user) and join it.
    Create {
        room: String,
        private: bool,
        topic: Option<String>,
    },
    /// `None`: show the current room's topic; `Some("")` clears it.
    Topic(Option<String>),
    /// The members of the current room with their roles.
    Members,
    Invite(String),
    Kick(String),
    /// Ban a user from the current room, with a reason.
    Ban(String, Option<String>),
    Unban(String),
    Bans,
    /// Give a user a role in the current room.
    Role(String, Role),
    Who,
    Dm(String),
    /// `None`: re-print the local buffer; `Some(n)`: fetch n older messages.
    History(Option<u32>),
    /// Answer message `seq` of the current room.
    Reply(u64, String),
    /// Replace the text of one's message `seq`.
    Edit(u64, String),
    Delete(u64),
    /// Toggle one's reaction `emoji` on message `seq`.
    React(u64, String),
    /// Full-text search over the rooms one may read.
    Search(String),
    Help,
    Quit,
}

/// Parses one typed line (without its line ending). An `Err` holds the
/// message to show the user.
pub fn parse_input(line: &str) -> Result<Input, String> {
    let line = line.trim_end_matches(['\r', '\n']);
    if line.trim().is_empty() {
        return Ok(Input::Empty);
    }
    if let Some(text) = line.strip_prefix("//") {
        return text_input(format!("/{text}"));
    }
    let Some(rest) = line.strip_prefix('/') else {
        return text_input(line.to_string());
    };
    let mut words = rest.split_whitespace();
    let name = words.next().unwrap_or_default().to_ascii_lowercase();
    let args: Vec<&str> = words.collect();
    // The text after `/name SEQ`, as typed (inner spacing kept).
    let after_seq = || after_words(rest, 2).to_string();
    let command = match (name.as_str(), args.as_slice()) {
        ("part", []) => Command::Part(None),
        ("part", [room]) => Command::Part(Some(room_name(room)?)),
        ("part", _) => return Err("usage: /part [ROOM]".into()),
        ("create" | "mkroom", [_, ..]) => create(rest, &args)?,
        ("create" | "mkroom", []) => return Err("usage: /create NAME [--private] [TOPIC]".into()),
        ("topic", []) => Command::Topic(None),
        ("topic", ["--clear"]) => Command::Topic(Some(String::new())),
        ("topic", _) => {
            let topic = after_words(rest, 1).trim_end();
            if topic.len() > MAX_TOPIC_BYTES {
                return Err(format!(
                    "the topic is {} bytes; the limit is {MAX_TOPIC_BYTES}",
                    topic.len()
                ));
            }
            Command::Topic(Some(topic.to_string()))
        }
        ("members", []) => Command::Members,
        ("bans", []) => Command::Bans,
        ("invite" | "add", [user]) => Command::Invite(username(user)?),
        ("invite" | "add", _) => return Err("usage: /invite USER".into()),
        ("kick" | "remove", [user]) => Command::Kick(username(user)?),
        ("kick" | "remove", _) => return Err("usage: /kick USER".into()),
        ("ban", [user, ..]) => {
            let user = username(user)?;
            let reason = after_words(rest, 2).trim_end();
            if reason.len() > MAX_REASON_BYTES {
                return Err(format!(
                    "the reason is {} bytes; the limit is {MAX_REASON_BYTES}",
                    reason.len()
                ));
            }
            Command::Ban(user, Some(reason.to_string()).filter(|r| !r.is_empty()))
        }
        ("ban", []) => return Err("usage: /ban USER [REASON]".into()),
        ("unban", [user]) => Command::Unban(username(user)?),
        ("unban", _) => return Err("usage: /unban USER".into()),
        ("role", [user, role]) => Command::Role(username(user)?, role_name(role)?),
        ("role", _) => return Err("usage: /role USER owner|moderator|member".into()),
        ("promote" | "op", [user]) => Command::Role(username(user)?, Role::Moderator),
        ("promote" | "op", [user, role]) => Command::Role(username(user)?, role_name(role)?),
        ("promote" | "op", _) => return Err("usage: /promote USER [owner|moderator]".into()),
        ("demote" | "deop", [user]) => Command::Role(username(user)?, Role::Member),
        ("demote" | "deop", _) => return Err("usage: /demote USER".into()),
        ("reply" | "re", [seq, _, ..]) => {
            Command::Reply(parse_seq(seq, "reply")?, message_text(after_seq())?)
        }
        ("reply" | "re", _) => return Err("usage: /reply SEQ TEXT".into()),
        ("edit", [seq, _, ..]) => {
            Command::Edit(parse_seq(seq, "edit")?, message_text(after_seq())?)
        }
        ("edit", _) => return Err("usage: /edit SEQ TEXT".into()),
        ("delete" | "del", [seq]) => Command::Delete(parse_seq(seq, "delete")?),
        ("delete" | "del", _) => return Err("usage: /delete SEQ".into()),
        ("react", [seq, emoji]) => {
            let seq = parse_seq(seq, "react")?;
            if !valid_emoji(emoji) {
                return Err(format!(
                    "{emoji:?} is not a reaction (1–{MAX_EMOJI_BYTES} bytes, no spaces)"
                ));
            }
            Command::React(seq, emoji.to_string())
        }
        ("react", _) => return Err("usage: /react SEQ EMOJI".into()),
        ("search" | "find", [_, ..]) => {
            let q = args.join(" ");
            if q.len() > MAX_SEARCH_QUERY_BYTES {
                return Err(format!(
                    "search words are {} bytes; the limit is {MAX_SEARCH_QUERY_BYTES}",
                    q.len()
                ));
            }
            Command::Search(q)
        }
        ("search" | "find", []) => return Err("usage: /search WORDS".into()),
        ("join" | "j", [room]) => Command::Join(room_name(room)?),
        ("join" | "j", _) => return Err("usage: /join ROOM".into()),
        ("leave", []) => Command::Leave(None),
        ("leave", [room]) => Command::Leave(Some(room.to_string())),
        ("leave", _) => return Err("usage: /leave [ROOM]".into()),
        ("rooms" | "list", []) => Command::Rooms,
        ("who" | "names", []) => Command::Who,
        ("dm" | "msg" | "query", [user]) => Command::Dm(username(user)?),
        ("dm" | "msg" | "query", _) => return Err("usage: /dm USER".into()),
        ("history", []) => Command::History(None),
        ("history", [n]) => match n.parse::<u32>() {
            Ok(n) if (1..=500).contains(&n) => Command::History(Some(n)),
            _ => return Err("usage: /history [N] (N from 1 to 500)".into()),
        },
        ("history", _) => return Err("usage: /history [N]".into()),
        ("help" | "?", _) => Command::Help,
        ("quit" | "exit" | "q", _) => Command::Quit,
        ("rooms" | "list" | "who" | "names" | "members" | "bans", _) => {
            return Err(format!("usage: /{name} (no arguments)"));
        }
        _ => return Err(format!("unknown command /{name}; /help lists the commands")),
    };
    Ok(Input::Command(command))
}

/// `/create NAME [--private] [TOPIC]` (`--private` may come first too).
fn create(rest: &str, args: &[&str]) -> Result<Command, String> {
    let mut private = false;
    let mut room = None;
    // Words taken by the command name, the room and the flags.
    let mut used = 1;
    for word in args {
        match *word {
            "--private" | "-p" => private = true,
            flag if flag.starts_with("--") && room.is_none() => {
                return Err(format!(
                    "/create: unknown option {flag}; usage: /create NAME [--private] [TOPIC]"
                ));
            }
            word if room.is_none() => room = Some(word),
            _ => break,
        }
        used += 1;
    }
    let Some(room) = room else {
        return Err("usage: /create NAME [--private] [TOPIC]".into());
    };
    let room = room_name(room)?;
    if is_dm_room(&room) {
        return Err(format!(
            "{room} is a DM room: /dm USER talks to someone in private"
        ));
    }
    let topic = after_words(rest, used).trim_end();
    if topic.len() > MAX_TOPIC_BYTES {
        return Err(format!(
            "the topic is {} bytes; the limit is {MAX_TOPIC_BYTES}",
            topic.len()
        ));
    }
    Ok(Command::Create {
        room,
        private,
        topic: Some(topic.to_string()).filter(|t| !t.is_empty()),
    })
}

/// What follows the first `n` words of `rest`, as typed (inner and
/// trailing spacing kept).
fn after_words(rest: &str, n: usize) -> &str {
    let mut rest = rest.trim_start();
    for _ in 0..n {
        rest = rest[rest.find(char::is_whitespace).unwrap_or(rest.len())..].trim_start();
    }
    rest
}

/// A room name as typed, checked.
fn room_name(room: &str) -> Result<String, String> {
    if !valid_room(room) {
        return Err(format!(
            "{room:?} is not a room name (a–z 0–9 _ -, starting with a letter or digit, at most 64)"
        ));
    }
    Ok(room.to_string())
}

/// A username as typed, checked.
fn username(user: &str) -> Result<String, String> {
    if !valid_username(user) {
        return Err(format!(
            "{user:?} is not a username (1–32 of A–Z a–z 0–9 _ . -)"
        ));
    }
    Ok(user.to_string())
}

/// `owner`, `moderator` (or `mod`), `member`.
fn role_name(role: &str) -> Result<Role, String> {
    let role = role.to_ascii_lowercase();
    let role = if role == "mod" { "moderator" } else { &role };
    Role::parse(role).ok_or_else(|| format!("{role:?} is not a role: owner, moderator or member"))
}

fn text_input(text: String) -> Result<Input, String> {
    message_text(text).map(Input::Text)
}

/// A message text within the limit.
fn message_text(text: String) -> Result<String, String> {
    if text.len() > MAX_TEXT_BYTES {
        return Err(format!(
            "message not sent: {} bytes, the limit is {MAX_TEXT_BYTES}",
            text.len()
        ));
    }
    Ok(text)
}

/// A message's seq as shown (`12` or `#12`).
fn parse_seq(word: &str, command: &str) -> Result<u64, String> {
    match word.strip_prefix('#').unwrap_or(word).parse::<u64>() {
        Ok(seq) if seq > 0 => Ok(seq),
        _ => Err(format!(
            "/{command}: {word:?} is not a message number (the #SEQ shown before it)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(line: &str) -> Command {
        match parse_input(line) {
            Ok(Input::Command(c)) => c,
            other => panic!("{line:?} parsed as {other:?}"),
        }
    }

    #[test]
    fn text_is_sent_as_typed() {
        assert_eq!(parse_input("hello"), Ok(Input::Text("hello".into())));
        assert_eq!(
            parse_input("  spaced  out \r\n"),
            Ok(Input::Text("  spaced  out ".into()))
        );
        assert_eq!(parse_input("a/b"), Ok(Input::Text("a/b".into())));
        assert_eq!(parse_input("//join x"), Ok(Input::Text("/join x".into())));
        assert_eq!(parse_input(""), Ok(Input::Empty));
        assert_eq!(parse_input("   \t"), Ok(Input::Empty));
    }

    #[test]
    fn text_over_the_limit_is_refused() {
        let max = "x".repeat(MAX_TEXT_BYTES);
        assert_eq!(parse_input(&max), Ok(Input::Text(max.clone())));
        let err = parse_input(&format!("{max}y")).unwrap_err();
        assert!(err.contains("4097 bytes"), "{err}");
        // Bytes, not characters.
        assert!(parse_input(&"é".repeat(MAX_TEXT_BYTES / 2 + 1)).is_err());
    }

    #[test]
    fn commands() {
        assert_eq!(cmd("/join random"), Command::Join("random".into()));
        assert_eq!(cmd("/JOIN  random "), Command::Join("random".into()));
        assert_eq!(cmd("/leave"), Command::Leave(None));
        assert_eq!(cmd("/leave random"), Command::Leave(Some("random".into())));
        assert_eq!(cmd("/rooms"), Command::Rooms);
        assert_eq!(cmd("/who"), Command::Who);
        assert_eq!(cmd("/dm Bob.B"), Command::Dm("Bob.B".into()));
        assert_eq!(cmd("/history"), Command::History(None));
        assert_eq!(cmd("/history 20"), Command::History(Some(20)));
        assert_eq!(cmd("/help"), Command::Help);
        assert_eq!(cmd("/quit"), Command::Quit);
        assert_eq!(cmd("/exit"), Command::Quit);
        assert_eq!(
            cmd("/join dm:alice:bob"),
            Command::Join("dm:alice:bob".into())
        );
    }

    #[test]
    fn message_commands_keep_the_text_as_typed() {
        assert_eq!(
            cmd("/edit 12 fixed  the   typo "),
            Command::Edit(12, "fixed  the   typo ".into())
        );
        assert_eq!(cmd("/edit #12 x"), Command::Edit(12, "x".into()));
        assert_eq!(
            cmd("/reply  7   sounds good: yes"),
            Command::Reply(7, "sounds good: yes".into())
        );
        assert_eq!(cmd("/re 7 ok"), Command::Reply(7, "ok".into()));
        assert_eq!(cmd("/delete 3"), Command::Delete(3));
        assert_eq!(cmd("/del #3"), Command::Delete(3));
        assert_eq!(cmd("/react 3 👍"), Command::React(3, "👍".into()));
        assert_eq!(cmd("/REACT #3 :+1:"), Command::React(3, ":+1:".into()));
        assert_eq!(
            cmd("/search  lunch   plans"),
            Command::Search("lunch plans".into())
        );
        assert_eq!(cmd("/find x"), Command::Search("x".into()));
        // A reply or edit text over the limit is refused like a message.
        let long = format!("/edit 1 {}", "x".repeat(MAX_TEXT_BYTES + 1));
        assert!(parse_input(&long).unwrap_err().contains("limit"));
        let long = format!("/topic {}", "x".repeat(MAX_TOPIC_BYTES + 1));
        assert!(parse_input(&long).unwrap_err().contains("limit"));
        let long = format!("/ban carol {}", "x".repeat(MAX_REASON_BYTES + 1));
        assert!(parse_input(&long).unwrap_err().contains("limit"));
        let long = format!("/create plans {}", "x".repeat(MAX_TOPIC_BYTES + 1));
        assert!(parse_input(&long).unwrap_err().contains("limit"));
    }

    #[test]
    fn room_and_moderation_commands() {
        assert_eq!(cmd("/part"), Command::Part(None));
        assert_eq!(cmd("/part plans"), Command::Part(Some("plans".into())));
        assert_eq!(cmd("/leave plans"), Command::Leave(Some("plans".into())));
        assert_eq!(
            cmd("/create plans"),
            Command::Create {
                room: "plans".into(),
                private: false,
                topic: None
            }
        );
        assert_eq!(
            cmd("/create plans --private lunch  on   friday "),
            Command::Create {
                room: "plans".into(),
                private: true,
                topic: Some("lunch  on   friday".into())
            }
        );
        assert_eq!(
            cmd("/create --private plans"),
            Command::Create {
                room: "plans".into(),
                private: true,
                topic: None
            }
        );
        // Past the topic's first word, `--private` is part of the topic.
        assert_eq!(
            cmd("/create plans about --private rooms"),
            Command::Create {
                room: "plans".into(),
                private: false,
                topic: Some("about --private rooms".into())
            }
        );
        assert_eq!(cmd("/topic"), Command::Topic(None));
        assert_eq!(
            cmd("/topic lunch:  friday, 1pm "),
            Command::Topic(Some("lunch:  friday, 1pm".into()))
        );
        assert_eq!(cmd("/topic --clear"), Command::Topic(Some(String::new())));
        assert_eq!(cmd("/members"), Command::Members);
        assert_eq!(cmd("/bans"), Command::Bans);
        assert_eq!(cmd("/invite Bob.B"), Command::Invite("Bob.B".into()));
        assert_eq!(cmd("/kick carol"), Command::Kick("carol".into()));
        assert_eq!(cmd("/ban carol"), Command::Ban("carol".into(), None));
        assert_eq!(
            cmd("/ban carol  spamming   links"),
            Command::Ban("carol".into(), Some("spamming   links".into()))
        );
        assert_eq!(cmd("/unban carol"), Command::Unban("carol".into()));
        assert_eq!(
            cmd("/role bob moderator"),
            Command::Role("bob".into(), Role::Moderator)
        );
        assert_eq!(
            cmd("/role bob OWNER"),
            Command::Role("bob".into(), Role::Owner)
        );
        assert_eq!(
            cmd("/role bob mod"),
            Command::Role("bob".into(), Role::Moderator)
        );
        assert_eq!(
            cmd("/promote bob"),
            Command::Role("bob".into(), Role::Moderator)
        );
        assert_eq!(
            cmd("/promote bob owner"),
            Command::Role("bob".into(), Role::Owner)
        );
        assert_eq!(
            cmd("/demote bob"),
            Command::Role("bob".into(), Role::Member)
        );
        // Every command is in the help.
        for name in [
            "/part", "/create", "/topic", "/members", "/invite", "/kick", "/ban", "/unban",
            "/bans", "/role", "/promote", "/demote",
        ] {
            assert!(
                HELP.iter().any(|h| h.contains(&format!("{name} "))
                    || h.contains(&format!("{name},"))
                    || h.ends_with(name)),
                "{name} missing from /help"
            );
        }
    }

    #[test]
    fn bad_commands_say_why() {
        for (line, wanted) in [
            ("/join", "usage: /join ROOM"),
            ("/join a b", "usage: /join ROOM"),
            ("/join General", "not a room name"),
            ("/dm", "usage: /dm USER"),
            ("/dm al ice", "usage: /dm USER"),
            ("/dm al:ice", "not a username"),
            ("/history 0", "usage: /history"),
            ("/history many", "usage: /history"),
            ("/who me", "no arguments"),
            ("/teleport", "unknown command /teleport"),
            ("/edit", "usage: /edit SEQ TEXT"),
            ("/edit 3", "usage: /edit SEQ TEXT"),
            ("/edit three x", "not a message number"),
            ("/edit 0 x", "not a message number"),
            ("/reply 5", "usage: /reply SEQ TEXT"),
            ("/reply -1 x", "not a message number"),
            ("/delete", "usage: /delete SEQ"),
            ("/delete 1 2", "usage: /delete SEQ"),
            ("/react 3", "usage: /react SEQ EMOJI"),
            ("/react 3 👍 👎", "usage: /react SEQ EMOJI"),
            ("/react x 👍", "not a message number"),
            (
                "/react 3 0123456789012345678901234567890123",
                "not a reaction",
            ),
            ("/search", "usage: /search WORDS"),
            ("/part a b", "usage: /part [ROOM]"),
            ("/part Plans", "not a room name"),
            ("/create", "usage: /create NAME"),
            ("/create --private", "usage: /create NAME"),
            ("/create --secret plans", "unknown option --secret"),
            ("/create Bad!", "not a room name"),
            ("/create dm:alice:bob", "is a DM room"),
            ("/invite", "usage: /invite USER"),
            ("/invite a b", "usage: /invite USER"),
            ("/kick b:c", "not a username"),
            ("/ban", "usage: /ban USER"),
            ("/unban", "usage: /unban USER"),
            ("/role bob", "usage: /role USER"),
            ("/role bob king", "\"king\" is not a role"),
            ("/promote", "usage: /promote USER"),
            ("/demote a b", "usage: /demote USER"),
            ("/members all", "no arguments"),
            ("/", "unknown command /"),
        ] {
            let err = parse_input(line).unwrap_err();
            assert!(err.contains(wanted), "{line:?}: {err}");
        }
    }
}
