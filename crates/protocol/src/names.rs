//! Naming rules for users and rooms, and the direct-message room convention.
//!
//! Pure functions only: the server validates with them, clients use them to
//! build DM room names the same way the server does.
//!
//! Usernames are unique case-insensitively: `Alice`, `alice` and `ALICE` are
//! one user. A name keeps the spelling it was registered with for display;
//! wherever a name is an identity it is compared case-folded
//! ([`fold_username`], [`same_user`]), and DM room names are built from the
//! case-folded names, so that one pair of users has exactly one DM room.

/// Usernames: 1–32 chars of `[A-Za-z0-9_.-]`.
pub fn valid_username(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// The case-folded form of a username: the identity of every spelling of
/// it. Usernames are ASCII, so this is ASCII lowercase.
pub fn fold_username(name: &str) -> String {
    name.to_ascii_lowercase()
}

/// Whether `text` mentions `user`: `@` and the name (any case), not inside
/// a longer name — the character before the `@` and the one after the name
/// are not username characters (protocol 1.1 §2, "as a word").
pub fn mentions(text: &str, user: &str) -> bool {
    let name_char = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-');
    let bytes = text.as_bytes();
    let n = user.len();
    if n == 0 {
        return false;
    }
    let mut from = 0;
    while let Some(at) = text[from..].find('@').map(|i| from + i) {
        let start = at + 1;
        let before_ok = at == 0 || !name_char(bytes[at - 1]);
        let name_ok = bytes
            .get(start..start + n)
            .is_some_and(|w| w.eq_ignore_ascii_case(user.as_bytes()));
        // A trailing dot ends a sentence, not the name ("thanks @bob.").
        let after_ok = match bytes.get(start + n) {
            None => true,
            Some(b'.') => !bytes.get(start + n + 1).copied().is_some_and(name_char),
            Some(&b) => !name_char(b),
        };
        if before_ok && name_ok && after_ok {
            return true;
        }
        from = start;
    }
    false
}

/// Whether two usernames are the same user (they differ at most in case).
pub fn same_user(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

/// Room names: `[a-z0-9][a-z0-9_-]{0,63}`, or a well-formed DM room name.
pub fn valid_room(room: &str) -> bool {
    valid_public_room(room) || dm_members(room).is_some()
}

fn valid_public_room(room: &str) -> bool {
    let bytes = room.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 64
        && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
        && bytes[1..]
            .iter()
            .all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// Whether `room` uses the DM prefix (well-formed or not).
pub fn is_dm_room(room: &str) -> bool {
    room.starts_with("dm:")
}

/// The DM room of two users: `dm:<a>:<b>` with the case-folded names
/// sorted, so both sides compute the same name whatever spelling they use.
pub fn dm_room(a: &str, b: &str) -> String {
    let (a, b) = (fold_username(a), fold_username(b));
    let (first, second) = if a <= b { (a, b) } else { (b, a) };
    format!("dm:{first}:{second}")
}

/// The two members of a well-formed DM room: valid, case-folded usernames,
/// distinct, sorted. `None` for anything else (including `dm:b:a` and
/// `dm:Alice:bob`, which are not canonical).
pub fn dm_members(room: &str) -> Option<(&str, &str)> {
    let rest = room.strip_prefix("dm:")?;
    let (a, b) = rest.split_once(':')?;
    let folded = |n: &str| valid_username(n) && !n.bytes().any(|c| c.is_ascii_uppercase());
    (folded(a) && folded(b) && a < b).then_some((a, b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames() {
        assert!(valid_username("alice"));
        assert!(valid_username("A.b-c_9"));
        assert!(valid_username(&"x".repeat(32)));
        assert!(!valid_username(""));
        assert!(!valid_username(&"x".repeat(33)));
        assert!(!valid_username("al ice"));
        assert!(!valid_username("alice:bob"));
        assert!(!valid_username("élise"));
    }

    #[test]
    fn rooms() {
        assert!(valid_room("general"));
        assert!(valid_room("0"));
        assert!(valid_room("a-b_c"));
        assert!(valid_room(&format!("a{}", "b".repeat(63))));
        assert!(!valid_room(&format!("a{}", "b".repeat(64))));
        assert!(!valid_room("-a"));
        assert!(!valid_room("_a"));
        assert!(!valid_room("General"));
        assert!(!valid_room(""));
        assert!(!valid_room("a b"));
    }

    #[test]
    fn dm_rooms_are_canonical() {
        assert_eq!(dm_room("bob", "alice"), "dm:alice:bob");
        assert_eq!(dm_room("alice", "bob"), "dm:alice:bob");
        assert_eq!(dm_members("dm:alice:bob"), Some(("alice", "bob")));
        assert_eq!(dm_members("dm:bob:alice"), None);
        assert_eq!(dm_members("dm:alice:alice"), None);
        assert_eq!(dm_members("dm:alice"), None);
        assert_eq!(dm_members("dm:al ice:bob"), None);
        assert!(valid_room("dm:alice:bob"));
        assert!(!valid_room("dm:bob:alice"));
        assert!(is_dm_room("dm:x"));
    }

    #[test]
    fn names_fold_case() {
        assert_eq!(fold_username("Alice.B-9_"), "alice.b-9_");
        assert!(same_user("alice", "ALICE"));
        assert!(!same_user("alice", "alice2"));
        // One DM room per pair, whatever the spelling.
        assert_eq!(dm_room("Bob", "alice"), "dm:alice:bob");
        assert_eq!(dm_room("ALICE", "bob"), "dm:alice:bob");
        assert_eq!(dm_members("dm:Alice:bob"), None);
        assert_eq!(dm_members("dm:Bob:alice"), None);
        assert!(!valid_room("dm:alice:Bob"));
    }

    #[test]
    fn mentions_are_whole_names_in_any_case() {
        for (text, yes) in [
            ("hi @bob", true),
            ("@Bob: look", true),
            ("thanks @bob.", true),
            ("(@bob)", true),
            ("@bobby", false),
            ("@bob.smith", false),
            ("mail bob@bob.org", false),
            ("bob", false),
            ("@ bob", false),
            ("@bo", false),
            ("x@bob", false),
            ("@alice and @BOB", true),
            ("🎉@bob", true),
        ] {
            assert_eq!(mentions(text, "bob"), yes, "{text:?}");
        }
    }
}
