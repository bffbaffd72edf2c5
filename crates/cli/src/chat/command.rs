//! What a typed line means: text to send, or a slash command.
//!
//! Pure parsing; [`super::session`] carries the commands out.

use parley_client::protocol::rest::MAX_SEARCH_QUERY_BYTES;
use parley_client::protocol::{MAX_EMOJI_BYTES, valid_emoji, valid_room, valid_username};

/// The largest message text sent (bytes of UTF-8): the protocol's default
/// limit. A larger one would be refused by the node; one over the frame
/// limit would even make it close the connection.
pub const MAX_TEXT_BYTES: usize = 4096;

/// The help text of `/help`, one line per command.
pub const HELP: &[&str] = &[
    "/join ROOM      join ROOM and talk there",
    "/leave [ROOM]   leave ROOM (default: the current room)",
    "/rooms          list the rooms of the server",
    "/who            who is in the current room",
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
    Rooms,
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
    let after_seq = || {
        let rest = rest.trim_start();
        let rest = rest[rest.find(char::is_whitespace).unwrap_or(rest.len())..].trim_start();
        let text = &rest[rest.find(char::is_whitespace).unwrap_or(rest.len())..];
        text.trim_start().to_string()
    };
    let command = match (name.as_str(), args.as_slice()) {
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
        ("join" | "j", [room]) => {
            let room = room.to_string();
            if !valid_room(&room) {
                return Err(format!(
                    "{room:?} is not a room name (a–z 0–9 _ -, starting with a letter or digit, at most 64)"
                ));
            }
            Command::Join(room)
        }
        ("join" | "j", _) => return Err("usage: /join ROOM".into()),
        ("leave" | "part", []) => Command::Leave(None),
        ("leave" | "part", [room]) => Command::Leave(Some(room.to_string())),
        ("leave" | "part", _) => return Err("usage: /leave [ROOM]".into()),
        ("rooms" | "list", []) => Command::Rooms,
        ("who" | "names", []) => Command::Who,
        ("dm" | "msg" | "query", [user]) => {
            let user = user.to_string();
            if !valid_username(&user) {
                return Err(format!(
                    "{user:?} is not a username (1–32 of A–Z a–z 0–9 _ . -)"
                ));
            }
            Command::Dm(user)
        }
        ("dm" | "msg" | "query", _) => return Err("usage: /dm USER".into()),
        ("history", []) => Command::History(None),
        ("history", [n]) => match n.parse::<u32>() {
            Ok(n) if (1..=500).contains(&n) => Command::History(Some(n)),
            _ => return Err("usage: /history [N] (N from 1 to 500)".into()),
        },
        ("history", _) => return Err("usage: /history [N]".into()),
        ("help" | "?", _) => Command::Help,
        ("quit" | "exit" | "q", _) => Command::Quit,
        ("rooms" | "list" | "who" | "names", _) => {
            return Err(format!("usage: /{name} (no arguments)"));
        }
        _ => return Err(format!("unknown command /{name}; /help lists the commands")),
    };
    Ok(Input::Command(command))
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
            ("/", "unknown command /"),
        ] {
            let err = parse_input(line).unwrap_err();
            assert!(err.contains(wanted), "{line:?}: {err}");
        }
    }
}
