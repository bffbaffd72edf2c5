//! The text the client shows: message lines (with their edits, deletes,
//! reactions and quoted replies), status lines, clock times.
//!
//! Pure functions; both the line mode and the TUI build on them.

use parley_client::protocol::Message;
use parley_client::room_state::reaction_counts;

use super::state::{Quote, Shown};

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
