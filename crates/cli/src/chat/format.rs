//! The text the client shows: message lines, status lines, clock times.
//!
//! Pure functions; both the line mode and the TUI build on them.

use parley_client::protocol::Message;

/// One message as a line of line mode: `[room] #seq from: text`.
///
/// Control characters of any field are escaped (see [`escape`]), so the line
/// is always exactly one line and a peer cannot send terminal escapes.
pub fn message_line(m: &Message) -> String {
    format!(
        "[{}] #{} {}: {}",
        escape(&m.room),
        m.seq,
        escape(&m.from),
        escape(&m.text)
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

    fn msg(text: &str) -> Message {
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
