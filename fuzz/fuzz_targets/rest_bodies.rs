//! REST JSON bodies: every request body the REST API accepts, deserialised
//! from the input bytes exactly as the server's `ApiJson` extractor does
//! (`serde_json::from_slice`), and the validators their fields go through.
//!
//! Bodies: `Credentials` (register, login, server API user create),
//! `PasswordChange` (`/api/auth/password`), `PostMessage`
//! (`/api/rooms/{room}/messages`), and the server API's `Publish` and
//! `NewRoom`, all from `parley_protocol::rest`, each read through
//! `parley_protocol::object::Object` as `ApiJson` does (a JSON object only).
//!
//! Asserts: no panic; an accepted body reads the same from bytes and (when
//! UTF-8) from text, re-serialises
//! and parses back to the same fields; `deny_unknown_fields` bodies refuse an
//! added field; and for every string field: `storable` refuses exactly the
//! strings with U+0000, at the first one's offset; `valid_username` is
//! exactly 1–32 of `[A-Za-z0-9_.-]`, `fold_username` keeps a valid name valid,
//! is idempotent and `same_user`; `valid_room` is exactly the public pattern
//! or a canonical DM name, never holds U+0000, and DM names round-trip
//! through `dm_members`/`dm_room`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use parley_protocol::object::Object;
use parley_protocol::rest::{Credentials, NewRoom, PasswordChange, PostMessage, Publish};
use parley_protocol::text::storable;
use parley_protocol::{
    dm_members, dm_room, fold_username, is_dm_room, same_user, valid_room, valid_username,
};
use serde::{Deserialize, Serialize};

fn spec_username(s: &str) -> bool {
    (1..=32).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

fn spec_public_room(s: &str) -> bool {
    let b = s.as_bytes();
    (1..=64).contains(&b.len())
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b[1..]
            .iter()
            .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_' || c == b'-')
}

/// The validators every string field of a body may go through.
fn check_string(s: &str) {
    match storable(s) {
        Ok(()) => assert!(!s.contains('\0')),
        Err(e) => {
            assert_eq!(e.ch, '\0');
            assert_eq!(Some(e.offset), s.find('\0'));
            assert!(!e.to_string().is_empty());
        }
    }

    let valid = valid_username(s);
    assert_eq!(valid, spec_username(s), "valid_username({s:?})");
    let folded = fold_username(s);
    assert_eq!(folded.len(), s.len());
    assert_eq!(fold_username(&folded), folded, "fold is idempotent");
    assert!(same_user(s, &folded));
    if valid {
        assert!(valid_username(&folded));
        assert!(storable(s).is_ok());
        assert!(!folded.bytes().any(|b| b.is_ascii_uppercase()));
    }

    let room = valid_room(s);
    let members = dm_members(s);
    assert_eq!(
        room,
        spec_public_room(s) || members.is_some(),
        "valid_room({s:?})"
    );
    if room {
        assert!(
            storable(s).is_ok(),
            "a valid room name the store cannot hold: {s:?}"
        );
    }
    if let Some((a, b)) = members {
        assert!(is_dm_room(s));
        assert!(a < b && valid_username(a) && valid_username(b));
        assert_eq!(fold_username(a), a);
        assert_eq!(fold_username(b), b);
        assert_eq!(dm_room(a, b), s, "DM name not canonical");
        assert_eq!(dm_room(b, a), s);
    }
}

fn check_pair(a: &str, b: &str) {
    if valid_username(a) && valid_username(b) {
        let room = dm_room(a, b);
        assert_eq!(room, dm_room(b, a));
        assert!(is_dm_room(&room));
        if same_user(a, b) {
            assert!(
                dm_members(&room).is_none(),
                "a DM room with oneself: {room}"
            );
        } else {
            assert!(
                valid_room(&room),
                "dm_room({a:?}, {b:?}) = {room:?} is not valid"
            );
            let (x, y) = dm_members(&room).expect("members of a valid DM room");
            let (fa, fb) = (fold_username(a), fold_username(b));
            assert_eq!((x, y), if fa < fb { (&*fa, &*fb) } else { (&*fb, &*fa) });
        }
    }
}

/// `T` accepted from `data` must have come from UTF-8 and round-trip.
fn body<T>(data: &[u8]) -> Option<T>
where
    T: Serialize + for<'de> Deserialize<'de>,
{
    let Object(value) = serde_json::from_slice::<Object<T>>(data).ok()?;
    assert!(
        data.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{'),
        "only a JSON object is accepted"
    );
    // serde_json skips an unknown field's string without checking its UTF-8
    // (fuzz/regressions/rest_bodies/invalid-utf8-in-unknown-field): such a
    // body is accepted, its bytes discarded. Bodies that are UTF-8 read the
    // same as text as as bytes.
    if let Ok(text) = std::str::from_utf8(data) {
        let Object(as_text) =
            serde_json::from_str::<Object<T>>(text).expect("from_str agrees with from_slice");
        assert_eq!(
            serde_json::to_vec(&as_text).expect("serialises"),
            serde_json::to_vec(&value).expect("serialises")
        );
    }
    let json = serde_json::to_vec(&value).expect("a body serialises");
    let back: T = serde_json::from_slice(&json).expect("a serialised body parses");
    assert_eq!(
        serde_json::to_vec(&back).expect("serialises"),
        json,
        "round trip changed the body"
    );
    Some(value)
}

/// A `deny_unknown_fields` body with one field more is refused.
fn refuses_extra<T: Serialize + for<'de> Deserialize<'de>>(value: &T) {
    let mut v = serde_json::to_value(value).expect("serialises");
    if let Some(map) = v.as_object_mut() {
        map.insert("zz_extra".into(), serde_json::Value::Bool(true));
        assert!(
            serde_json::from_value::<T>(v).is_err(),
            "unknown field accepted"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    if let Some(c) = body::<Credentials>(data) {
        check_string(&c.username);
        check_string(&c.password);
        check_pair(&c.username, &c.password);
    }
    if let Some(p) = body::<PasswordChange>(data) {
        check_string(&p.old);
        check_string(&p.new);
    }
    if let Some(m) = body::<PostMessage>(data) {
        check_string(&m.text);
        if let Some(n) = &m.nonce {
            check_string(n);
        }
    }
    if let Some(p) = body::<Publish>(data) {
        refuses_extra(&p);
        check_string(&p.from);
        check_string(&p.text);
        if let Some(n) = &p.nonce {
            check_string(n);
        }
        check_pair(&p.from, &p.text);
    }
    if let Some(r) = body::<NewRoom>(data) {
        refuses_extra(&r);
        check_string(&r.room);
    }
    // Every input, even one no body accepts, is also a candidate name.
    let s = String::from_utf8_lossy(data);
    check_string(&s);
    if let Some((a, b)) = s.split_once('\n') {
        check_pair(a, b);
    }
});
