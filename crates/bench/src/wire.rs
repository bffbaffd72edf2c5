//! The bench's view of the wire: a cheap parse of server frames, the client
//! frames it sends, and the text of its messages.
//!
//! A connection in a busy room receives hundreds of `message` pushes a
//! second, so they are parsed into borrowed fields without allocating; only
//! the rare frames (welcome, joined, history, error) allocate. A frame the
//! fast parse cannot read (escaped strings, say) goes through the protocol
//! crate's full parser instead.
//!
//! A message's text starts with the Unix time of its send in microseconds:
//! `"<sent_us> <conn>-<n> xxxx…"`, so any receiver, in any worker process on
//! the machine, can compute its end-to-end latency.

use parley_protocol::{ClientFrame, ServerFrame, parse_server_frame};
use serde::Deserialize;

/// What the bench needs of one server frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A pushed message: its seq and the send time embedded in its text.
    Message {
        seq: u64,
        sent_us: Option<u64>,
    },
    Ack {
        re: Option<u64>,
        seq: u64,
    },
    Welcome {
        node: String,
    },
    Joined {
        re: Option<u64>,
        last_seq: u64,
        more: bool,
        history: Vec<(u64, Option<u64>)>,
    },
    History {
        re: Option<u64>,
        more: bool,
        messages: Vec<(u64, Option<u64>)>,
    },
    Error {
        re: Option<u64>,
        code: String,
    },
    /// Presence, typing, pong, left, and frame types added later.
    Other,
}

#[derive(Deserialize)]
struct Raw<'a> {
    #[serde(rename = "type", borrow)]
    kind: &'a str,
    re: Option<u64>,
    seq: Option<u64>,
    #[serde(borrow)]
    text: Option<&'a str>,
    #[serde(borrow)]
    node: Option<&'a str>,
    #[serde(borrow)]
    code: Option<&'a str>,
    last_seq: Option<u64>,
    more: Option<bool>,
    #[serde(borrow)]
    history: Option<Vec<RawItem<'a>>>,
    #[serde(borrow)]
    messages: Option<Vec<RawItem<'a>>>,
}

/// An element of a history list: any event of the room's log (a deleted
/// or reaction event has no text).
#[derive(Deserialize)]
struct RawItem<'a> {
    seq: u64,
    #[serde(borrow)]
    text: Option<&'a str>,
}

fn items(list: Option<Vec<RawItem<'_>>>) -> Vec<(u64, Option<u64>)> {
    list.unwrap_or_default()
        .iter()
        .map(|m| (m.seq, m.text.and_then(sent_us_of)))
        .collect()
}

/// Parses one text frame from a node.
pub fn parse(text: &str) -> Result<Frame, String> {
    match serde_json::from_str::<Raw<'_>>(text) {
        Ok(raw) => from_raw(raw),
        Err(_) => parse_slow(text),
    }
}

fn from_raw(raw: Raw<'_>) -> Result<Frame, String> {
    let missing = |field: &str| format!("{} frame without {field}", raw.kind);
    Ok(match raw.kind {
        "message" => Frame::Message {
            seq: raw.seq.ok_or_else(|| missing("seq"))?,
            sent_us: raw.text.and_then(sent_us_of),
        },
        "ack" => Frame::Ack {
            re: raw.re,
            seq: raw.seq.ok_or_else(|| missing("seq"))?,
        },
        "welcome" => Frame::Welcome {
            node: raw.node.ok_or_else(|| missing("node"))?.to_string(),
        },
        "joined" => Frame::Joined {
            re: raw.re,
            last_seq: raw.last_seq.ok_or_else(|| missing("last_seq"))?,
            more: raw.more.unwrap_or(false),
            history: items(raw.history),
        },
        "history" => Frame::History {
            re: raw.re,
            more: raw.more.unwrap_or(false),
            messages: items(raw.messages),
        },
        "error" => Frame::Error {
            re: raw.re,
            code: raw.code.unwrap_or("unknown").to_string(),
        },
        _ => Frame::Other,
    })
}

/// The full parser, for frames with escaped strings.
fn parse_slow(text: &str) -> Result<Frame, String> {
    let frame = match parse_server_frame(text) {
        Ok(frame) => frame,
        // A frame type this version does not know: ignore it, as the
        // protocol asks of clients.
        Err(_) if is_json_object_with_type(text) => return Ok(Frame::Other),
        Err(e) => return Err(format!("unparseable frame: {e}")),
    };
    let list = |events: &[parley_protocol::RoomEvent]| {
        events
            .iter()
            .map(|e| (e.seq(), e.as_message().and_then(|m| sent_us_of(&m.text))))
            .collect::<Vec<_>>()
    };
    Ok(match frame {
        ServerFrame::Message(m) => Frame::Message {
            seq: m.seq,
            sent_us: sent_us_of(&m.text),
        },
        ServerFrame::Ack { re, seq, .. } => Frame::Ack { re, seq },
        ServerFrame::Welcome { node, .. } => Frame::Welcome { node },
        ServerFrame::Joined {
            re,
            last_seq,
            more,
            history,
            ..
        } => Frame::Joined {
            re,
            last_seq,
            more,
            history: list(&history),
        },
        ServerFrame::History {
            re, more, messages, ..
        } => Frame::History {
            re,
            more,
            messages: list(&messages),
        },
        ServerFrame::Error { re, code, .. } => Frame::Error {
            re,
            code: code.as_str().to_string(),
        },
        _ => Frame::Other,
    })
}

fn is_json_object_with_type(text: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(text)
        .ok()
        .is_some_and(|v| v.get("type").is_some_and(|t| t.is_string()))
}

/// The text of message `n` of connection `conn`, `size` bytes long at least
/// as long as its header needs.
pub fn message_text(sent_us: u64, conn: usize, n: u64, size: usize) -> String {
    let mut text = format!("{sent_us} {conn}-{n} ");
    if text.len() < size {
        text.extend(std::iter::repeat_n('x', size - text.len()));
    }
    text
}

/// The send time embedded at the start of a bench message's text.
pub fn sent_us_of(text: &str) -> Option<u64> {
    let end = text.find(' ').unwrap_or(text.len());
    text[..end].parse().ok()
}

fn to_json(frame: &ClientFrame) -> String {
    // Plain data, serialisation cannot fail.
    serde_json::to_string(frame).unwrap_or_default()
}

pub fn join(id: u64, room: &str, since: Option<u64>) -> String {
    to_json(&ClientFrame::Join {
        id: Some(id),
        room: room.to_string(),
        since,
    })
}

pub fn history_after(id: u64, room: &str, after: u64, limit: u32) -> String {
    to_json(&ClientFrame::History {
        id: Some(id),
        room: room.to_string(),
        before: None,
        after: Some(after),
        limit: Some(limit),
    })
}

pub fn send(id: u64, room: &str, text: &str, nonce: Option<&str>) -> String {
    to_json(&ClientFrame::Send {
        id: Some(id),
        room: Some(room.to_string()),
        to: None,
        text: text.to_string(),
        nonce: nonce.map(str::to_string),
        reply_to: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_pushes_parse_fast() {
        let f = parse(
            r#"{"type":"message","room":"r","seq":58,"from":"a","text":"1700000000123456 4-7 xx","ts":"t"}"#,
        )
        .unwrap();
        assert_eq!(
            f,
            Frame::Message {
                seq: 58,
                sent_us: Some(1_700_000_000_123_456)
            }
        );
    }

    #[test]
    fn escaped_strings_fall_back_to_the_full_parser() {
        let f = parse(
            r#"{"type":"message","room":"r","seq":3,"from":"a","text":"12 \"quoted\"","ts":"t"}"#,
        )
        .unwrap();
        assert_eq!(
            f,
            Frame::Message {
                seq: 3,
                sent_us: Some(12)
            }
        );
        let f = parse(r#"{"type":"error","re":4,"code":"forbidden","message":"join \"r\" first"}"#)
            .unwrap();
        assert_eq!(
            f,
            Frame::Error {
                re: Some(4),
                code: "forbidden".into()
            }
        );
    }

    #[test]
    fn replies_and_unknown_frames() {
        let f = parse(r#"{"type":"ack","re":3,"room":"g","seq":58,"ts":"t"}"#).unwrap();
        assert_eq!(
            f,
            Frame::Ack {
                re: Some(3),
                seq: 58
            }
        );
        let f =
            parse(r#"{"type":"welcome","user":"u","node":"n1","session":"s","heartbeat_s":25}"#)
                .unwrap();
        assert_eq!(f, Frame::Welcome { node: "n1".into() });
        let f = parse(
            r#"{"type":"joined","re":1,"room":"g","last_seq":9,"more":true,"members":["a"],
               "history":[{"type":"message","room":"g","seq":9,"from":"a","text":"5 x","ts":"t"}]}"#,
        )
        .unwrap();
        assert_eq!(
            f,
            Frame::Joined {
                re: Some(1),
                last_seq: 9,
                more: true,
                history: vec![(9, Some(5))]
            }
        );
        let f =
            parse(r#"{"type":"history","re":2,"room":"g","messages":[],"more":false}"#).unwrap();
        assert_eq!(
            f,
            Frame::History {
                re: Some(2),
                more: false,
                messages: vec![]
            }
        );
        assert_eq!(parse(r#"{"type":"pong","re":6}"#).unwrap(), Frame::Other);
        assert_eq!(
            parse(r#"{"type":"teleport","x":"\n"}"#).unwrap(),
            Frame::Other
        );
        assert!(parse("not json").is_err());
        assert!(parse(r#"{"type":"ack","re":1}"#).is_err());
    }

    #[test]
    fn message_texts_carry_their_send_time() {
        let t = message_text(1_700_000_000_000_001, 12, 3, 64);
        assert_eq!(t.len(), 64);
        assert!(t.starts_with("1700000000000001 12-3 x"));
        assert_eq!(sent_us_of(&t), Some(1_700_000_000_000_001));
        assert_eq!(message_text(5, 1, 1, 0), "5 1-1 ");
        assert_eq!(sent_us_of("hello world"), None);
        assert_eq!(sent_us_of("42"), Some(42));
    }

    #[test]
    fn outgoing_frames_are_protocol_frames() {
        let v: serde_json::Value = serde_json::from_str(&send(3, "r", "hi", Some("n1"))).unwrap();
        assert_eq!(v["type"], "send");
        assert_eq!(v["id"], 3);
        assert_eq!(v["nonce"], "n1");
        let v: serde_json::Value = serde_json::from_str(&join(1, "r", None)).unwrap();
        assert!(v.get("since").is_none());
        let v: serde_json::Value = serde_json::from_str(&history_after(2, "r", 40, 500)).unwrap();
        assert_eq!(v["after"], 40);
    }
}
