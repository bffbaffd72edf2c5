//! The text the client shows: message lines (with their edits, deletes,
//! reactions and quoted replies), the lines of member and topic events,
//! status lines, clock times.
//!
//! Pure functions; both the line mode and the TUI build on them.

use parley_client::protocol::{Member, MemberChange, Message, Role, Topic, left_reason, same_user};
use parley_client::room_state::reaction_counts;

use super::state::{EventLine, Quote, Shown};

/// Characters of a quoted message shown under a reply.
const QUOTE_CHARS: usize = 40;

/// One message as a line of line mode: `[room] #seq from: ` and its
/// [`body`].
///
/// Control characters of any field are escaped (see [`escape`]), so the line
/// is always exactly one line and a peer cannot send terminal escapes.
pub fn message_line(shown: &Shown) -> String {
    let m = &shown.message;
    format!(
        "[{}] #{} {}: {}",
        escape(&m.room),
        m.seq,
        escape(&m.from),
        body(shown)
    )
}

/// What follows `from: `: the text (`[deleted]` once deleted), then
/// ` (edited)`, the quoted message of a reply ` (↪ #4 alice: lunch?)`,
/// and the reactions ` · 👍 2 🎉 1`. A message never changed and not a
/// reply is its text alone.
pub fn body(shown: &Shown) -> String {
    let m = &shown.message;
    let mut out = if m.deleted {
        "[deleted]".to_string()
    } else {
        escape(&m.text)
    };
    if m.edited.is_some() && !m.deleted {
        out.push_str(" (edited)");
    }
    if let Some(q) = &shown.quote {
        out.push_str(&format!(" (↪ {})", quote(q)));
    }
    if let Some(r) = reactions(m) {
        out.push_str(" · ");
        out.push_str(&r);
    }
    out
}

/// A quoted message: `#4 alice: lunch?`, shortened; `#4` alone when the
/// client does not hold it.
pub fn quote(q: &Quote) -> String {
    let Some(from) = &q.from else {
        return format!("#{}", q.seq);
    };
    let text = if q.deleted {
        "[deleted]".to_string()
    } else if q.text.chars().count() > QUOTE_CHARS {
        let cut: String = q.text.chars().take(QUOTE_CHARS - 1).collect();
        format!("{}…", escape(cut.trim_end()))
    } else {
        escape(&q.text)
    };
    format!("#{} {}: {text}", q.seq, escape(from))
}

/// The reactions of a message, `👍 2 🎉 1`; None without any.
pub fn reactions(m: &Message) -> Option<String> {
    let counts = reaction_counts(m);
    if counts.is_empty() {
        return None;
    }
    Some(
        counts
            .iter()
            .map(|r| format!("{} {}", escape(r.emoji), r.count))
            .collect::<Vec<_>>()
            .join(" "),
    )
}

/// A member or topic event as a status line of line mode, with its seq
/// like a message: `* [plans] #5 alice made bob moderator`.
pub fn event_line(e: &EventLine) -> String {
    status_line(&format!("[{}] #{} {}", e.room, e.seq, e.text))
}

/// What a `member` event did: `alice added bob`, `bob kicked carol`,
/// `bob banned carol: spam`, `bob unbanned carol`, `alice made bob
/// moderator`, `carol parted`.
pub fn member_text(m: &Member) -> String {
    let (from, user) = (&m.from, &m.user);
    match m.change {
        MemberChange::Added => format!("{from} added {user}"),
        MemberChange::Removed if same_user(from, user) => format!("{user} parted"),
        MemberChange::Removed => format!("{from} kicked {user}"),
        MemberChange::Banned => match m.reason.as_deref().filter(|r| !r.is_empty()) {
            Some(reason) => format!("{from} banned {user}: {reason}"),
            None => format!("{from} banned {user}"),
        },
        MemberChange::Unbanned => format!("{from} unbanned {user}"),
        MemberChange::Role => match m.role {
            Some(role) => format!("{from} made {user} {role}"),
            None => format!("{from} changed the role of {user}"),
        },
    }
}

/// What a `topic` event did: `alice set the topic: lunch plans`, or
/// `alice cleared the topic`.
pub fn topic_text(t: &Topic) -> String {
    if t.topic.is_empty() {
        format!("{} cleared the topic", t.from)
    } else {
        format!("{} set the topic: {}", t.from, t.topic)
    }
}

/// What the user is told when the server took them out of `room`:
/// `you were kicked from #plans by bob`, `you were banned from #plans by
/// bob: spam`. `by` is the member event that did it, when it came first.
pub fn taken_out(room: &str, reason: &str, by: Option<&Member>) -> String {
    let by_whom = by.map(|m| format!(" by {}", m.from)).unwrap_or_default();
    match reason {
        left_reason::KICKED => format!("you were kicked from #{room}{by_whom}"),
        left_reason::BANNED => {
            let why = by
                .and_then(|m| m.reason.as_deref())
                .filter(|r| !r.is_empty())
                .map(|r| format!(": {r}"))
                .unwrap_or_default();
            format!("you were banned from #{room}{by_whom}{why}")
        }
        left_reason::PARTED => format!("you parted #{room} (on another connection)"),
        other => format!("you are out of #{room} ({other})"),
    }
}

/// A room's traits as `/rooms` and the TUI header show them: `private,
/// you are owner`; empty for a public room one has no role in.
pub fn room_traits(private: bool, role: Option<Role>) -> String {
    let mut traits = Vec::new();
    if private {
        traits.push("private".to_string());
    }
    if let Some(role) = role {
        traits.push(format!("you are {role}"));
    }
    traits.join(", ")
}

/// A status line of line mode: `* text`.
pub fn status_line(text: &str) -> String {
    format!("* {}", escape(text))
}

/// The UTC wall-clock time `HH:MM:SS` of a wire timestamp
/// (`YYYY-MM-DDTHH:MM:SS.mmmZ`), or `--:--:--` when it has another shape.
pub fn clock(ts: &str) -> &str {
    let time = ts.get(11..19);
    let well_formed = ts.as_bytes().get(10) == Some(&b'T')
        && time.is_some_and(|t| {
            t.bytes().enumerate().all(|(i, b)| {
                if i % 3 == 2 {
                    b == b':'
                } else {
                    b.is_ascii_digit()
                }
            })
        });
    match time {
        Some(t) if well_formed => t,
        _ => "--:--:--",
    }
}

/// Escapes control characters: newline, carriage return and tab as `\n`,
/// `\r`, `\t`, every other one as `\u{..}`. Everything else is unchanged
/// (a backslash typed by a user is shown as it is).
pub fn escape(text: &str) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.extend(c.escape_unicode()),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(text: &str) -> Message {
        Message {
            room: "general".into(),
            seq: 58,
            from: "alice".into(),
            text: text.into(),
            ts: "2026-11-22T21:00:00.123Z".into(),
            nonce: None,
            ..Default::default()
        }
    }

    fn msg(text: &str) -> Shown {
        Shown {
            message: message(text),
            quote: None,
        }
    }

    #[test]
    fn edits_deletes_reactions_and_replies_decorate_the_text() {
        let mut m = message("lunch?");
        m.edited = Some("t".into());
        m.reactions
            .insert("👍".into(), vec!["bob".into(), "carol".into()]);
        m.reactions.insert("🎉".into(), vec!["bob".into()]);
        let mut shown = Shown {
            message: m,
            quote: None,
        };
        assert_eq!(
            message_line(&shown),
            "[general] #58 alice: lunch? (edited) · 🎉 1 👍 2"
        );
        shown.quote = Some(Quote {
            seq: 4,
            from: Some("bob".into()),
            text: "where\nto go for lunch today, any ideas at all?".into(),
            deleted: false,
        });
        assert_eq!(
            body(&shown),
            "lunch? (edited) (↪ #4 bob: where\\nto go for lunch today, any ideas…) · 🎉 1 👍 2"
        );
        shown.message.deleted = true;
        shown.message.text.clear();
        shown.message.reactions.clear();
        shown.quote = Some(Quote {
            seq: 4,
            from: None,
            text: String::new(),
            deleted: false,
        });
        assert_eq!(
            message_line(&shown),
            "[general] #58 alice: [deleted] (↪ #4)"
        );
        let q = Quote {
            seq: 2,
            from: Some("bob".into()),
            text: String::new(),
            deleted: true,
        };
        assert_eq!(quote(&q), "#2 bob: [deleted]");
    }

    #[test]
    fn message_lines_have_the_documented_shape() {
        assert_eq!(message_line(&msg("hello")), "[general] #58 alice: hello");
        assert_eq!(message_line(&msg("")), "[general] #58 alice: ");
        assert_eq!(
            message_line(&msg("a: b [c] #1")),
            "[general] #58 alice: a: b [c] #1"
        );
    }

    #[test]
    fn control_characters_never_break_the_line() {
        assert_eq!(
            message_line(&msg("one\ntwo\r\tthree")),
            "[general] #58 alice: one\\ntwo\\r\\tthree"
        );
        let line = message_line(&msg("\u{1b}[2Jboom\u{7}"));
        assert_eq!(line, "[general] #58 alice: \\u{1b}[2Jboom\\u{7}");
        assert!(!line.chars().any(char::is_control));
        assert_eq!(escape("héllo wörld ✓"), "héllo wörld ✓");
    }

    fn member(from: &str, user: &str, change: MemberChange) -> Member {
        Member {
            room: "plans".into(),
            seq: 5,
            from: from.into(),
            user: user.into(),
            change,
            role: None,
            reason: None,
            ts: "2026-11-22T21:00:00.123Z".into(),
            nonce: None,
        }
    }

    #[test]
    fn member_and_topic_events_say_who_did_what() {
        use MemberChange::{Added, Banned, Removed, Unbanned};
        assert_eq!(
            member_text(&member("alice", "bob", Added)),
            "alice added bob"
        );
        assert_eq!(
            member_text(&member("bob", "carol", Removed)),
            "bob kicked carol"
        );
        assert_eq!(
            member_text(&member("Carol", "carol", Removed)),
            "carol parted"
        );
        let mut ban = member("bob", "carol", Banned);
        assert_eq!(member_text(&ban), "bob banned carol");
        ban.reason = Some("spam".into());
        assert_eq!(member_text(&ban), "bob banned carol: spam");
        assert_eq!(
            member_text(&member("bob", "carol", Unbanned)),
            "bob unbanned carol"
        );
        let mut role = member("alice", "bob", MemberChange::Role);
        role.role = Some(Role::Moderator);
        assert_eq!(member_text(&role), "alice made bob moderator");
        let mut topic = Topic {
            room: "plans".into(),
            seq: 6,
            from: "alice".into(),
            topic: "lunch\nplans".into(),
            ts: "t".into(),
            nonce: None,
        };
        assert_eq!(topic_text(&topic), "alice set the topic: lunch\nplans");
        let line = EventLine {
            room: "plans".into(),
            seq: 6,
            ts: "t".into(),
            text: topic_text(&topic),
        };
        // Escaped like every line: one line, whatever the topic holds.
        assert_eq!(
            event_line(&line),
            "* [plans] #6 alice set the topic: lunch\\nplans"
        );
        topic.topic.clear();
        assert_eq!(topic_text(&topic), "alice cleared the topic");
    }

    #[test]
    fn being_taken_out_says_by_whom_and_why() {
        let mut ban = member("bob", "carol", MemberChange::Banned);
        ban.reason = Some("spam".into());
        assert_eq!(
            taken_out(
                "plans",
                "kicked",
                Some(&member("bob", "carol", MemberChange::Removed))
            ),
            "you were kicked from #plans by bob"
        );
        assert_eq!(
            taken_out("plans", "kicked", None),
            "you were kicked from #plans"
        );
        assert_eq!(
            taken_out("plans", "banned", Some(&ban)),
            "you were banned from #plans by bob: spam"
        );
        assert_eq!(
            taken_out("plans", "parted", None),
            "you parted #plans (on another connection)"
        );
        assert_eq!(
            taken_out("plans", "closed", None),
            "you are out of #plans (closed)"
        );
        assert_eq!(
            room_traits(true, Some(Role::Owner)),
            "private, you are owner"
        );
        assert_eq!(room_traits(false, Some(Role::Member)), "you are member");
        assert_eq!(room_traits(false, None), "");
    }

    #[test]
    fn status_lines_start_with_a_star() {
        assert_eq!(status_line("joined general"), "* joined general");
        assert_eq!(status_line("bad\nthing"), "* bad\\nthing");
    }

    #[test]
    fn clock_takes_the_utc_time_of_day() {
        assert_eq!(clock("2026-11-22T21:07:09.123Z"), "21:07:09");
        assert_eq!(clock("2026-11-22T21:07:09Z"), "21:07:09");
        assert_eq!(clock("garbage"), "--:--:--");
        assert_eq!(clock(""), "--:--:--");
        assert_eq!(clock("2026-11-22 21:07:09"), "--:--:--");
        assert_eq!(clock("2026-11-22Tab:cd:efZ"), "--:--:--");
        // Multi-byte characters where the time should be do not panic.
        assert_eq!(clock("2026-11-22Téé:éé:éé"), "--:--:--");
    }
}
