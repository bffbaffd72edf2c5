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
//! the machine, can compute its end-to-end latency (an edit's new text
//! too; a delete or a reaction has no text, and no latency sample).
//!
//! Member and topic events (protocol 1.1 §3) are room events too: they
//! take the room's next `seq`, so the gapless-seq accounting counts them
//! like the rest; the bench never makes one, so they have no [`Kind`].

use parley_protocol::{ClientFrame, RoomEvent, ServerFrame, parse_server_frame};
use serde::Deserialize;

use crate::mix::Kind;

/// One event of a history list: its seq, the send time in its text, and
/// its kind (None: a member or topic event, which the bench never makes).
pub type Item = (u64, Option<u64>, Option<Kind>);

/// What the bench needs of one server frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A pushed room event (message, reply, edit, delete, reaction, member,
    /// topic): its seq, the send time embedded in its text, and its kind
    /// (None: member and topic events).
    Message {
        seq: u64,
        sent_us: Option<u64>,
        kind: Option<Kind>,
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
        history: Vec<Item>,
    },
    History {
        re: Option<u64>,
        more: bool,
        messages: Vec<Item>,
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
    reply_to: Option<u64>,
    more: Option<bool>,
    #[serde(borrow)]
    history: Option<Vec<RawItem<'a>>>,
    #[serde(borrow)]
    messages: Option<Vec<RawItem<'a>>>,
}

/// An element of a history list: any event of the room's log (a deleted,
/// reaction or member event has no text; a topic event's is `topic`).
#[derive(Deserialize)]
struct RawItem<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<&'a str>,
    seq: u64,
    #[serde(borrow)]
    text: Option<&'a str>,
    reply_to: Option<u64>,
}

fn items(list: Option<Vec<RawItem<'_>>>) -> Vec<Item> {
    list.unwrap_or_default()
        .iter()
        .map(|m| {
            let kind = match m.kind.unwrap_or("message") {
                MEMBER_TYPE | TOPIC_TYPE => None,
                other => Some(Kind::of_event(other, m.reply_to).unwrap_or(Kind::Message)),
            };
            (m.seq, m.text.and_then(sent_us_of), kind)
        })
        .collect()
}

/// Parses one text frame from a node.
pub fn parse(text: &str) -> Result<Frame, String> {
    match serde_json::from_str::<Raw<'_>>(text) {
        Ok(raw) => from_raw(raw),
        Err(_) => parse_slow(text),
    }
}

/// The frame types of the room events the bench never makes.
const MEMBER_TYPE: &str = "member";
const TOPIC_TYPE: &str = "topic";

fn from_raw(raw: Raw<'_>) -> Result<Frame, String> {
    let missing = |field: &str| format!("{} frame without {field}", raw.kind);
    let kind = match raw.kind {
        MEMBER_TYPE | TOPIC_TYPE => Some(None),
        other => Kind::of_event(other, raw.reply_to).map(Some),
    };
    if let Some(kind) = kind {
        return Ok(Frame::Message {
            seq: raw.seq.ok_or_else(|| missing("seq"))?,
            // A topic's text is not a bench text: no latency sample.
            sent_us: kind.and(raw.text).and_then(sent_us_of),
            kind,
        });
    }
    Ok(match raw.kind {
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
    let list = |events: &[RoomEvent]| events.iter().map(item_of).collect::<Vec<_>>();
    Ok(match frame {
        ServerFrame::Message(m) => frame_of(&RoomEvent::Message(m)),
        ServerFrame::Edited(e) => frame_of(&RoomEvent::Edited(e)),
        ServerFrame::Deleted(e) => frame_of(&RoomEvent::Deleted(e)),
        ServerFrame::Reaction(e) => frame_of(&RoomEvent::Reaction(e)),
        ServerFrame::Member(e) => frame_of(&RoomEvent::Member(e)),
        ServerFrame::Topic(e) => frame_of(&RoomEvent::Topic(e)),
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
        ServerFrame::Read { .. }
        | ServerFrame::Left { .. }
        | ServerFrame::Presence { .. }
        | ServerFrame::Typing { .. }
        | ServerFrame::Pong { .. } => Frame::Other,
    })
}

/// A room event as a history item.
fn item_of(e: &RoomEvent) -> Item {
    match e {
        RoomEvent::Message(m) => (
            m.seq,
            sent_us_of(&m.text),
            Some(if m.reply_to.is_some() {
                Kind::Reply
            } else {
                Kind::Message
            }),
        ),
        RoomEvent::Edited(e) => (e.seq, sent_us_of(&e.text), Some(Kind::Edit)),
        RoomEvent::Deleted(e) => (e.seq, None, Some(Kind::Delete)),
        RoomEvent::Reaction(e) => (e.seq, None, Some(Kind::React)),
        RoomEvent::Member(e) => (e.seq, None, None),
        RoomEvent::Topic(e) => (e.seq, None, None),
    }
}

fn frame_of(e: &RoomEvent) -> Frame {
    let (seq, sent_us, kind) = item_of(e);
    Frame::Message { seq, sent_us, kind }
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
    request(
        id,
        room,
        &Op::Send {
            text: text.to_string(),
            reply_to: None,
        },
        nonce,
    )
}

/// The emoji of the bench's reactions.
pub const EMOJI: &str = "👍";

/// One operation of a sender (see [`crate::mix`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// A message, or with `reply_to` a reply.
    Send {
        text: String,
        reply_to: Option<u64>,
    },
    Edit {
        target: u64,
        text: String,
    },
    Delete {
        target: u64,
    },
    /// Adds (`on`) or removes the bench's [`EMOJI`] on `target`.
    React {
        target: u64,
        on: bool,
    },
}

impl Op {
    /// The same operation without its text: what a `chat` sender keeps of
    /// an operation in flight (it never resends).
    pub fn without_text(self) -> Op {
        match self {
            Op::Send { reply_to, .. } => Op::Send {
                text: String::new(),
                reply_to,
            },
            Op::Edit { target, .. } => Op::Edit {
                target,
                text: String::new(),
            },
            other => other,
        }
    }

    pub fn kind(&self) -> Kind {
        match self {
            Op::Send { reply_to: None, .. } => Kind::Message,
            Op::Send { .. } => Kind::Reply,
            Op::Edit { .. } => Kind::Edit,
            Op::Delete { .. } => Kind::Delete,
            Op::React { .. } => Kind::React,
        }
    }
}

/// The request frame of an operation.
pub fn request(id: u64, room: &str, op: &Op, nonce: Option<&str>) -> String {
    let (id, room, nonce) = (Some(id), room.to_string(), nonce.map(str::to_string));
    to_json(&match op.clone() {
        Op::Send { text, reply_to } => ClientFrame::Send {
            id,
            room: Some(room),
            to: None,
            text,
            nonce,
            reply_to,
        },
        Op::Edit { target, text } => ClientFrame::Edit {
            id,
            room,
            target,
            text,
            nonce,
        },
        Op::Delete { target } => ClientFrame::Delete {
            id,
            room,
            target,
            nonce,
        },
        Op::React { target, on } => ClientFrame::React {
            id,
            room,
            target,
            emoji: EMOJI.to_string(),
            on,
            nonce,
        },
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
                sent_us: Some(1_700_000_000_123_456),
                kind: Some(Kind::Message),
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
                sent_us: Some(12),
                kind: Some(Kind::Message),
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
                history: vec![(9, Some(5), Some(Kind::Message))]
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
    fn every_event_type_is_a_room_event() {
        let f = |text: &str| parse(text).unwrap();
        assert_eq!(
            f(
                r#"{"type":"message","room":"r","seq":4,"from":"a","text":"9 x","ts":"t","reply_to":2}"#
            ),
            Frame::Message {
                seq: 4,
                sent_us: Some(9),
                kind: Some(Kind::Reply)
            }
        );
        assert_eq!(
            f(
                r#"{"type":"edited","room":"r","seq":5,"from":"a","target":2,"text":"10 x","ts":"t"}"#
            ),
            Frame::Message {
                seq: 5,
                sent_us: Some(10),
                kind: Some(Kind::Edit)
            }
        );
        assert_eq!(
            f(r#"{"type":"deleted","room":"r","seq":6,"from":"a","target":2,"ts":"t"}"#),
            Frame::Message {
                seq: 6,
                sent_us: None,
                kind: Some(Kind::Delete)
            }
        );
        // Escaped: the full parser gives the same answer.
        assert_eq!(
            f(
                r#"{"type":"reaction","room":"r","seq":7,"from":"a\u0062","target":2,"emoji":"\ud83d\udc4d","on":true,"ts":"t"}"#
            ),
            Frame::Message {
                seq: 7,
                sent_us: None,
                kind: Some(Kind::React)
            }
        );
        let h = f(
            r#"{"type":"history","re":2,"room":"g","more":false,"messages":[
                {"type":"message","room":"g","seq":1,"from":"a","text":"","ts":"t","deleted":true},
                {"type":"message","room":"g","seq":2,"from":"a","text":"3 x","ts":"t","reply_to":1},
                {"type":"edited","room":"g","seq":3,"from":"a","target":1,"text":"","ts":"t"},
                {"type":"reaction","room":"g","seq":4,"from":"a","target":2,"emoji":"x","on":false,"ts":"t"},
                {"type":"deleted","room":"g","seq":5,"from":"a","target":1,"ts":"t"}]}"#,
        );
        assert_eq!(
            h,
            Frame::History {
                re: Some(2),
                more: false,
                messages: vec![
                    (1, None, Some(Kind::Message)),
                    (2, Some(3), Some(Kind::Reply)),
                    (3, None, Some(Kind::Edit)),
                    (4, None, Some(Kind::React)),
                    (5, None, Some(Kind::Delete)),
                ]
            }
        );
    }

    #[test]
    fn member_and_topic_events_take_their_seq_without_a_kind() {
        let f = |text: &str| parse(text).unwrap();
        assert_eq!(
            f(
                r#"{"type":"member","room":"r","seq":8,"from":"a","user":"b","change":"role","role":"moderator","ts":"t"}"#
            ),
            Frame::Message {
                seq: 8,
                sent_us: None,
                kind: None
            }
        );
        // A topic that looks like a bench text is no latency sample.
        assert_eq!(
            f(r#"{"type":"topic","room":"r","seq":9,"from":"a","topic":"12 x","ts":"t"}"#),
            Frame::Message {
                seq: 9,
                sent_us: None,
                kind: None
            }
        );
        // Escaped (the fast parse cannot borrow it): the full parser agrees.
        assert_eq!(
            f(
                r#"{"type":"memb\u0065r","room":"r","seq":10,"from":"a","user":"b","change":"banned","reason":"\"spam\"","ts":"t"}"#
            ),
            Frame::Message {
                seq: 10,
                sent_us: None,
                kind: None
            }
        );
        assert!(parse(r#"{"type":"topic","room":"r","from":"a","topic":"x","ts":"t"}"#).is_err());
        let h = f(
            r#"{"type":"joined","re":1,"room":"g","last_seq":3,"more":false,"members":[],"history":[
                {"type":"topic","room":"g","seq":1,"from":"a","topic":"5 x","ts":"t"},
                {"type":"member","room":"g","seq":2,"from":"a","user":"b","change":"added","ts":"t"},
                {"type":"message","room":"g","seq":3,"from":"a","text":"7 x","ts":"t"}]}"#,
        );
        assert_eq!(
            h,
            Frame::Joined {
                re: Some(1),
                last_seq: 3,
                more: false,
                history: vec![
                    (1, None, None),
                    (2, None, None),
                    (3, Some(7), Some(Kind::Message))
                ]
            }
        );
        // Left pushes (a kick) are not room events.
        assert_eq!(
            f(r#"{"type":"left","room":"g","reason":"kicked"}"#),
            Frame::Other
        );
    }

    #[test]
    fn operations_are_protocol_requests() {
        let v = |op: Op| -> serde_json::Value {
            serde_json::from_str(&request(9, "r", &op, Some("n9"))).unwrap()
        };
        let reply = v(Op::Send {
            text: "1 x".into(),
            reply_to: Some(4),
        });
        assert_eq!(reply["type"], "send");
        assert_eq!(reply["reply_to"], 4);
        let edit = v(Op::Edit {
            target: 4,
            text: "2 y".into(),
        });
        assert_eq!(edit["type"], "edit");
        assert_eq!(edit["target"], 4);
        assert_eq!(v(Op::Delete { target: 4 })["type"], "delete");
        let react = v(Op::React {
            target: 4,
            on: false,
        });
        assert_eq!(react["type"], "react");
        assert_eq!(react["emoji"], EMOJI);
        assert_eq!(react["on"], false);
        assert_eq!(react["nonce"], "n9");
        assert_eq!(
            Op::React {
                target: 1,
                on: true
            }
            .kind(),
            Kind::React
        );
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
