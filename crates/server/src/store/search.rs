//! Full-text search over messages (protocol 1.1 §4), the parts every
//! backend shares: what a search asks ([`SearchQuery`]), what it answers
//! ([`SearchPage`]), how typed words become a query, which rooms a user may
//! find messages in, and the page cursors.
//!
//! The indexes themselves are the backends': SQLite keeps an FTS5 table
//! filled by triggers on `messages` (migrations/sqlite/0006), PostgreSQL a
//! generated `tsvector` column with a GIN index (migrations/postgres/0007).
//! Either way the index changes in the transaction that changes the message
//! — an append, an edit, a delete — so a search never finds text a history
//! page would not show. This module must not know SQL dialects beyond the
//! parameters it hands them.

use super::StoreError;

/// One search, as the HTTP layer checked it.
#[derive(Debug, Clone)]
pub struct SearchQuery<'a> {
    /// The caller's case-folded name: DM rooms are searched only if theirs.
    pub user_key: &'a str,
    /// What was typed: 1–256 bytes a store can hold.
    pub q: &'a str,
    /// Only this room (the caller may read it: checked before).
    pub room: Option<&'a str>,
    /// The `next` of the previous page.
    pub before: Option<&'a str>,
    /// At most this many results (≥ 1).
    pub limit: u32,
    /// The caller is a server admin: every private room is searched too
    /// (DMs stay their two users'). Otherwise a private room is searched
    /// only if the caller is a member, and no room that banned the caller
    /// is searched (protocol 1.1 §3).
    pub admin: bool,
}

/// One message found, in its current state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchHit {
    pub room: String,
    pub seq: u64,
    pub from: String,
    pub text: String,
    pub ts_ms: i64,
}

/// A hit as both backends select it: room, seq, sender, text, ts.
pub type HitRow = (String, i64, String, String, i64);

impl From<HitRow> for SearchHit {
    fn from((room, seq, from, text, ts_ms): HitRow) -> Self {
        SearchHit {
            room,
            seq: seq as u64,
            from,
            text,
            ts_ms,
        }
    }
}

/// A page of results, newest first; `next` continues after the last one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SearchPage {
    pub hits: Vec<SearchHit>,
    pub next: Option<String>,
}

/// The words of `q` as an FTS5 query: every word must match, each quoted
/// so that nothing typed is read as FTS5 syntax (`AND`, `NEAR`, `*`, `"`).
/// Words are runs of letters and digits — what FTS5's `unicode61`
/// tokenizer indexes — so `don't` looks for `don` and `t`, as it was
/// indexed. `None` when `q` holds no word at all: nothing can match.
pub fn fts5_match(q: &str) -> Option<String> {
    let words: Vec<String> = q
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| format!("\"{w}\""))
        .collect();
    (!words.is_empty()).then(|| words.join(" "))
}

/// The two spellings of the caller's DM rooms that a search may read:
/// `dm:<key>:` starts the rooms where the caller sorts first, `:<key>`
/// ends the ones where it sorts second. Usernames hold no `:`, so no other
/// room matches either ([`parley_protocol::dm_members`]).
pub fn dm_bounds(user_key: &str) -> (String, String) {
    (format!("dm:{user_key}:"), format!(":{user_key}"))
}

/// Whether `user_key` may read the hits of `room`: public rooms, and the
/// canonical DM rooms of which the user is one of the two. The SQL filter
/// ([`dm_bounds`]) is the indexed, coarse part; this is the exact rule,
/// the one every other read applies ([`parley_protocol::dm_members`]): a
/// DM room that is not canonical (a legacy spelling the accounts migration
/// kept out of reach) passes the bounds but is nobody's.
pub fn may_read(user_key: &str, room: &str) -> bool {
    !parley_protocol::is_dm_room(room)
        || parley_protocol::dm_members(room).is_some_and(|(a, b)| a == user_key || b == user_key)
}

/// A page from the rows a backend fetched (one more than the page holds:
/// whether it comes tells whether there is a next page). The cursor
/// continues after the page's last row, kept or not, so a page from which
/// [`may_read`] removed hits may be short but never skips or repeats one.
pub fn page_of<R>(
    mut rows: Vec<R>,
    query: &SearchQuery<'_>,
    cursor_of: impl Fn(&R) -> String,
    hit_of: impl Fn(R) -> SearchHit,
) -> SearchPage {
    let more = rows.len() > query.limit as usize;
    rows.truncate(query.limit as usize);
    let next = more.then(|| rows.last().map(&cursor_of)).flatten();
    let hits = rows
        .into_iter()
        .map(hit_of)
        .filter(|h| may_read(query.user_key, &h.room))
        .collect();
    SearchPage { hits, next }
}

/// SQLite's cursor: the FTS rowid of the last result (rowids grow in commit
/// order, so "before this rowid" is "older than this result").
pub fn parse_rowid_cursor(cursor: &str) -> Result<i64, StoreError> {
    cursor
        .strip_prefix('r')
        .and_then(|n| n.parse::<i64>().ok())
        .filter(|n| *n > 0)
        .ok_or_else(|| bad_cursor(cursor))
}

pub fn rowid_cursor(rowid: i64) -> String {
    format!("r{rowid}")
}

/// PostgreSQL's cursor: the (ts, room, seq) key of the last result, the
/// order results come in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyCursor {
    pub ts_ms: i64,
    pub room: String,
    pub seq: i64,
}

pub fn parse_key_cursor(cursor: &str) -> Result<KeyCursor, StoreError> {
    let parse = || {
        let rest = cursor.strip_prefix('k')?;
        let mut parts = rest.splitn(3, '.');
        let ts_ms = parts.next()?.parse::<i64>().ok()?;
        let seq = parts.next()?.parse::<i64>().ok()?;
        // Any stored name: a room named by older rules is still a result.
        let room = parts.next()?;
        (!room.is_empty() && seq > 0).then(|| KeyCursor {
            ts_ms,
            room: room.to_string(),
            seq,
        })
    };
    parse().ok_or_else(|| bad_cursor(cursor))
}

pub fn key_cursor((room, seq, _, _, ts_ms): &HitRow) -> String {
    format!("k{ts_ms}.{seq}.{room}")
}

fn bad_cursor(cursor: &str) -> StoreError {
    StoreError::Invalid(format!(
        "{cursor:?} is not a search cursor (pass the `next` of a previous page)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_become_quoted_terms() {
        assert_eq!(fts5_match("hello"), Some("\"hello\"".into()));
        assert_eq!(
            fts5_match("  Deploy   the\tbuild "),
            Some("\"Deploy\" \"the\" \"build\"".into())
        );
        // FTS5 syntax typed by a user is only words.
        assert_eq!(
            fts5_match("a* OR \"b\" NEAR(c) -d"),
            Some("\"a\" \"OR\" \"b\" \"NEAR\" \"c\" \"d\"".into())
        );
        assert_eq!(fts5_match("don't"), Some("\"don\" \"t\"".into()));
        assert_eq!(fts5_match("café 日本"), Some("\"café\" \"日本\"".into()));
        assert_eq!(fts5_match(" !?* \"\" "), None);
        assert_eq!(fts5_match(""), None);
    }

    #[test]
    fn dm_bounds_match_only_the_callers_rooms() {
        let (prefix, suffix) = dm_bounds("bob");
        let readable = |room: &str| {
            !room.starts_with("dm:") || room.starts_with(&prefix) || room.ends_with(&suffix)
        };
        assert!(readable("general"));
        assert!(readable("dm:alice:bob"));
        assert!(readable("dm:bob:carol"));
        assert!(!readable("dm:alice:carol"));
        assert!(!readable("dm:alice:xbob"));
        assert!(!readable("dm:bobby:carol"));
        assert!(!readable("dm:alice:bobby"));
    }

    fn row(room: &str, seq: i64) -> HitRow {
        (room.into(), seq, "x".into(), "t".into(), 1)
    }

    fn query(limit: u32) -> SearchQuery<'static> {
        SearchQuery {
            user_key: "bob",
            q: "t",
            room: None,
            before: None,
            limit,
            admin: false,
        }
    }

    fn page(rows: Vec<HitRow>, limit: u32) -> (Vec<(String, u64)>, Option<String>) {
        let p = page_of(rows, &query(limit), key_cursor, SearchHit::from);
        (
            p.hits.into_iter().map(|h| (h.room, h.seq)).collect(),
            p.next,
        )
    }

    #[test]
    fn pages_know_whether_more_follow_and_keep_only_readable_rooms() {
        let at = |room: &str, seq| (room.to_string(), seq);
        let (hits, next) = page(vec![row("a", 3), row("a", 2), row("a", 1)], 2);
        assert_eq!(
            (hits, next.as_deref()),
            (vec![at("a", 3), at("a", 2)], Some("k1.2.a"))
        );
        assert_eq!(page(vec![row("a", 2)], 2), (vec![at("a", 2)], None));
        // A stray DM spelling passes SQL's bounds, not the rule; the cursor
        // still continues after it.
        let (hits, next) = page(
            vec![row("dm:alice:bob", 5), row("dm:Zed:bob", 4), row("x", 1)],
            2,
        );
        assert_eq!(
            (hits, next.as_deref()),
            (vec![at("dm:alice:bob", 5)], Some("k1.4.dm:Zed:bob"))
        );
    }

    #[test]
    fn only_canonical_dm_rooms_of_the_user_are_readable() {
        assert!(may_read("bob", "general"));
        assert!(may_read("bob", "dm:alice:bob"));
        assert!(may_read("bob", "dm:bob:carol"));
        for stray in [
            "dm:Alice:bob",
            "dm:carol:bob",
            "dm:bob:bob",
            "dm:alice:carol",
            "dm:bob",
        ] {
            assert!(!may_read("bob", stray), "{stray}");
        }
    }

    #[test]
    fn cursors_round_trip_and_refuse_garbage() {
        assert_eq!(parse_rowid_cursor(&rowid_cursor(42)).ok(), Some(42));
        for bad in ["", "r", "r0", "r-3", "42", "rx", "k1.2.general"] {
            assert!(
                matches!(parse_rowid_cursor(bad), Err(StoreError::Invalid(_))),
                "{bad:?}"
            );
        }
        let hit: HitRow = (
            "dm:alice:bob".into(),
            7,
            "alice".into(),
            "hi".into(),
            1_700_000_000_000,
        );
        assert_eq!(
            parse_key_cursor(&key_cursor(&hit)).ok(),
            Some(KeyCursor {
                ts_ms: hit.4,
                room: hit.0.clone(),
                seq: 7
            })
        );
        // A room named by older rules still continues.
        assert!(parse_key_cursor("k1.2.Old Room.x").is_ok());
        for bad in [
            "",
            "k",
            "k1.2",
            "k1.x.general",
            "kx.2.general",
            "k1.0.general",
            "k1.2.",
            "r5",
        ] {
            assert!(
                matches!(parse_key_cursor(bad), Err(StoreError::Invalid(_))),
                "{bad:?}"
            );
        }
    }
}
