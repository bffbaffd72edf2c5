//! Client frame parsing: `parley_protocol::parse_client_frame` on arbitrary
//! bytes (as UTF-8; invalid UTF-8 is tried lossily converted, as a WebSocket
//! text frame is always UTF-8), and structured frames round-tripping.
//!
//! Asserts: no panic; an accepted frame is valid JSON, re-serialises and
//! parses back to the same frame; `unknown_type` only for a JSON object whose
//! `type` is a string this version does not know; a recovered `id` only from
//! a JSON object or array; every error has a message; any frame built from
//! arbitrary fields survives serialise → parse unchanged.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use parley_protocol::{ClientFrame, parse_client_frame};

const KNOWN: &[&str] = &[
    "hello", "join", "leave", "part", "send", "edit", "delete", "react", "read", "history",
    "typing", "ping",
];

/// A mirror of `ClientFrame` that `arbitrary` can build.
#[derive(Debug, Arbitrary)]
enum Frame {
    Hello {
        id: Option<u64>,
        token: String,
        client: Option<String>,
    },
    Join {
        id: Option<u64>,
        room: String,
        since: Option<u64>,
    },
    Leave {
        id: Option<u64>,
        room: String,
    },
    Part {
        id: Option<u64>,
        room: String,
    },
    Send {
        id: Option<u64>,
        room: Option<String>,
        to: Option<String>,
        text: String,
        nonce: Option<String>,
        reply_to: Option<u64>,
    },
    Edit {
        id: Option<u64>,
        room: String,
        target: u64,
        text: String,
        nonce: Option<String>,
    },
    Delete {
        id: Option<u64>,
        room: String,
        target: u64,
        nonce: Option<String>,
    },
    React {
        id: Option<u64>,
        room: String,
        target: u64,
        emoji: String,
        on: bool,
        nonce: Option<String>,
    },
    Read {
        id: Option<u64>,
        room: String,
        seq: u64,
    },
    History {
        id: Option<u64>,
        room: String,
        before: Option<u64>,
        after: Option<u64>,
        limit: Option<u32>,
    },
    Typing {
        id: Option<u64>,
        room: String,
    },
    Ping {
        id: Option<u64>,
    },
}

impl From<Frame> for ClientFrame {
    fn from(f: Frame) -> Self {
        match f {
            Frame::Hello { id, token, client } => ClientFrame::Hello { id, token, client },
            Frame::Join { id, room, since } => ClientFrame::Join { id, room, since },
            Frame::Leave { id, room } => ClientFrame::Leave { id, room },
            Frame::Part { id, room } => ClientFrame::Part { id, room },
            Frame::Send {
                id,
                room,
                to,
                text,
                nonce,
                reply_to,
            } => ClientFrame::Send {
                id,
                room,
                to,
                text,
                nonce,
                reply_to,
            },
            Frame::Edit {
                id,
                room,
                target,
                text,
                nonce,
            } => ClientFrame::Edit {
                id,
                room,
                target,
                text,
                nonce,
            },
            Frame::Delete {
                id,
                room,
                target,
                nonce,
            } => ClientFrame::Delete {
                id,
                room,
                target,
                nonce,
            },
            Frame::React {
                id,
                room,
                target,
                emoji,
                on,
                nonce,
            } => ClientFrame::React {
                id,
                room,
                target,
                emoji,
                on,
                nonce,
            },
            Frame::Read { id, room, seq } => ClientFrame::Read { id, room, seq },
            Frame::History {
                id,
                room,
                before,
                after,
                limit,
            } => ClientFrame::History {
                id,
                room,
                before,
                after,
                limit,
            },
            Frame::Typing { id, room } => ClientFrame::Typing { id, room },
            Frame::Ping { id } => ClientFrame::Ping { id },
        }
    }
}

fn check_text(text: &str) {
    match parse_client_frame(text) {
        Ok(frame) => {
            assert!(
                serde_json::from_str::<serde_json::Value>(text).is_ok(),
                "accepted a frame that is not JSON: {text:?}"
            );
            assert!(
                text.trim_start().starts_with('{'),
                "accepted a frame that is not a JSON object: {text:?}"
            );
            let json = serde_json::to_string(&frame).expect("a ClientFrame serialises");
            let back = parse_client_frame(&json).expect("a serialised frame parses");
            assert_eq!(back, frame, "round trip changed the frame (json {json})");
            assert_eq!(back.id(), frame.id());
        }
        Err(e) => {
            assert!(!e.message.is_empty(), "error without a message");
            // `None` also for JSON nested deeper than serde_json's recursion
            // limit, which the id recovery (skipping unknown fields without
            // recursion) still reads: that is valid JSON, only deep.
            let value = serde_json::from_str::<serde_json::Value>(text).ok();
            let trimmed = text.trim_start();
            if e.id.is_some() {
                assert!(
                    trimmed.starts_with('{') || trimmed.starts_with('['),
                    "id {:?} recovered from something that is not JSON: {text:?}",
                    e.id
                );
            }
            if e.unknown_type {
                assert!(
                    trimmed.starts_with('{'),
                    "unknown_type for a non-object: {text:?}"
                );
                if let Some(value) = &value {
                    let Some(serde_json::Value::String(kind)) = value.get("type") else {
                        panic!("unknown_type without a string type: {text:?}");
                    };
                    assert!(
                        !KNOWN.contains(&kind.as_str()),
                        "known type {kind:?} flagged unknown"
                    );
                }
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    // The input itself is the frame text, so that regression files are
    // literal frames.
    match std::str::from_utf8(data) {
        Ok(text) => check_text(text),
        Err(_) => check_text(&String::from_utf8_lossy(data)),
    }
    // The same bytes, read as arbitrary fields, build a frame that must
    // survive serialise → parse.
    if let Ok(f) = Frame::arbitrary(&mut Unstructured::new(data)) {
        let frame = ClientFrame::from(f);
        let json = serde_json::to_string(&frame).expect("a ClientFrame serialises");
        match parse_client_frame(&json) {
            Ok(back) => assert_eq!(back, frame, "round trip changed the frame (json {json})"),
            Err(e) => panic!("a serialised frame was refused: {json} → {e:?}"),
        }
    }
});
