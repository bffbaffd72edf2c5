//! Text a store can hold: the one rule every string that reaches storage
//! keeps — message text, nonces, room names, usernames — so that SQLite and
//! PostgreSQL accept exactly the same input and a client hears `bad_request`
//! before anything is queued for a commit.
//!
//! A Rust `String` is valid UTF-8 (a lone surrogate cannot occur in it), and
//! both stores hold every Unicode scalar value but one: PostgreSQL's `TEXT`
//! refuses U+0000 (`invalid byte sequence for encoding "UTF8": 0x00`), where
//! SQLite would store it. So U+0000 is refused everywhere.
//!
//! Every other character is allowed, control characters included: tab, line
//! feed and carriage return are ordinary in messages, and the others (ESC,
//! BEL, C1 controls, …) are stored and delivered as sent — a client escapes
//! them when it displays text (`parley chat` shows `\u{1b}`), exactly as it
//! must for text that arrives from any other source.

use std::fmt;

/// Why a string cannot be stored: the first character no store can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unstorable {
    /// Byte offset of the character in the string.
    pub offset: usize,
    pub ch: char,
}

impl fmt::Display for Unstorable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "contains U+{:04X} at byte {}, which cannot be stored",
            u32::from(self.ch),
            self.offset
        )
    }
}

impl std::error::Error for Unstorable {}

/// Checks that a store can hold `text` (see the module documentation).
pub fn storable(text: &str) -> Result<(), Unstorable> {
    match text.find('\u{0}') {
        Some(offset) => Err(Unstorable {
            offset,
            ch: '\u{0}',
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_nul_only() {
        assert_eq!(storable(""), Ok(()));
        assert_eq!(storable("hello"), Ok(()));
        assert_eq!(storable("tab\there\nnew line\r\n"), Ok(()));
        assert_eq!(storable("\u{1b}[2J \u{7} \u{7f} \u{9b} \u{feff}"), Ok(()));
        assert_eq!(storable("é ✓ 𝄞 \u{10ffff}"), Ok(()));
        assert_eq!(
            storable("a\u{0}b"),
            Err(Unstorable {
                offset: 1,
                ch: '\u{0}'
            })
        );
        assert_eq!(
            storable("\u{0}").map_err(|e| e.to_string()),
            Err("contains U+0000 at byte 0, which cannot be stored".to_string())
        );
    }
}
