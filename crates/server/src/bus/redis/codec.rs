//! The Redis bus's wire format: channel names and payloads.
//!
//! Channels: `parley:room:<room>` carries a room's stored messages and its
//! presence/typing events; `parley:user:<user>` carries direct messages for
//! that user's connections that have not joined the DM room.
//!
//! Payload: `<kind> <node> <arg> <frame>`, kind `m` (arg = seq), `d` (arg =
//! DM room), `e` (arg = sending user). The frame is the push's JSON text,
//! forwarded unchanged to the receivers. Pure functions, no I/O.

use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;
use bytes::Bytes;

use crate::bus::{Envelope, Event};

pub(super) fn room_channel(room: &str) -> String {
    format!("parley:room:{room}")
}

pub(super) fn user_channel(user: &str) -> String {
    format!("parley:user:{user}")
}

pub(super) fn presence_key(room: &str) -> String {
    format!("parley:presence:{room}")
}

/// Encodes an envelope as (channel, payload).
pub fn encode(node: &str, envelope: &Envelope) -> (String, Vec<u8>) {
    let (channel, kind, arg, frame) = match &envelope.event {
        Event::Message { seq, frame } => {
            (room_channel(&envelope.room), 'm', seq.to_string(), frame)
        }
        Event::Direct { user, frame } => {
            (user_channel(user), 'd', envelope.room.to_string(), frame)
        }
        Event::Ephemeral { from, frame } => {
            (room_channel(&envelope.room), 'e', from.to_string(), frame)
        }
        Event::Disconnect { user, frame } => (user_channel(user), 'x', "-".to_string(), frame),
        Event::ToUser {
            user,
            frame,
            except,
        } => (
            user_channel(user),
            'u',
            format!("{except}:{}", envelope.room),
            frame,
        ),
    };
    let mut payload = Vec::with_capacity(frame.len() + node.len() + arg.len() + 4);
    payload.push(kind as u8);
    payload.push(b' ');
    payload.extend_from_slice(node.as_bytes());
    payload.push(b' ');
    payload.extend_from_slice(arg.as_bytes());
    payload.push(b' ');
    payload.extend_from_slice(frame.as_bytes());
    (channel, payload)
}

/// Decodes a payload received on `channel`: (publishing node, envelope).
pub fn decode(channel: &str, payload: &[u8]) -> Option<(String, Envelope)> {
    let mut parts = payload.splitn(4, |b| *b == b' ');
    let kind = parts.next()?;
    let node = std::str::from_utf8(parts.next()?).ok()?.to_string();
    let arg = std::str::from_utf8(parts.next()?).ok()?;
    let frame = Utf8Bytes::try_from(Bytes::copy_from_slice(parts.next()?)).ok()?;
    let envelope = match kind {
        b"m" => Envelope {
            room: Arc::from(channel.strip_prefix("parley:room:")?),
            event: Event::Message {
                seq: arg.parse().ok()?,
                frame,
            },
        },
        b"d" => Envelope {
            room: Arc::from(arg),
            event: Event::Direct {
                user: Arc::from(channel.strip_prefix("parley:user:")?),
                frame,
            },
        },
        b"e" => Envelope {
            room: Arc::from(channel.strip_prefix("parley:room:")?),
            event: Event::Ephemeral {
                from: Arc::from(arg),
                frame,
            },
        },
        b"u" => {
            let (except, room) = arg.split_once(':')?;
            Envelope {
                room: Arc::from(room),
                event: Event::ToUser {
                    user: Arc::from(channel.strip_prefix("parley:user:")?),
                    frame,
                    except: except.parse().ok()?,
                },
            }
        }
        b"x" => Envelope {
            room: Arc::from(""),
            event: Event::Disconnect {
                user: Arc::from(channel.strip_prefix("parley:user:")?),
                frame,
            },
        },
        _ => return None,
    };
    Some((node, envelope))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_round_trip() {
        let cases = vec![
            Envelope {
                room: Arc::from("general"),
                event: Event::Message {
                    seq: 42,
                    frame: "{\"a\":1}".into(),
                },
            },
            Envelope {
                room: Arc::from("dm:alice:bob"),
                event: Event::Direct {
                    user: Arc::from("bob"),
                    frame: "{\"x\":\"y z\"}".into(),
                },
            },
            Envelope {
                room: Arc::from("general"),
                event: Event::Ephemeral {
                    from: Arc::from("al.ice"),
                    frame: "{}".into(),
                },
            },
            Envelope {
                room: Arc::from(""),
                event: Event::Disconnect {
                    user: Arc::from("alice"),
                    frame: "{\"type\":\"error\"}".into(),
                },
            },
            Envelope {
                room: Arc::from("dm:alice:bob"),
                event: Event::ToUser {
                    user: Arc::from("alice"),
                    frame: "{\"type\":\"read\"}".into(),
                    except: u64::MAX,
                },
            },
        ];
        for env in cases {
            let (channel, payload) = encode("node-1", &env);
            let (node, back) = decode(&channel, &payload).expect("decodes");
            assert_eq!(node, "node-1");
            assert_eq!(back.room, env.room);
            match (back.event, env.event) {
                (Event::Message { seq: a, frame: fa }, Event::Message { seq: b, frame: fb }) => {
                    assert_eq!((a, fa), (b, fb))
                }
                (Event::Direct { user: a, frame: fa }, Event::Direct { user: b, frame: fb }) => {
                    assert_eq!((a, fa), (b, fb))
                }
                (
                    Event::Ephemeral { from: a, frame: fa },
                    Event::Ephemeral { from: b, frame: fb },
                ) => {
                    assert_eq!((a, fa), (b, fb))
                }
                (
                    Event::Disconnect { user: a, frame: fa },
                    Event::Disconnect { user: b, frame: fb },
                ) => {
                    assert_eq!((a, fa), (b, fb))
                }
                (
                    Event::ToUser {
                        user: a,
                        frame: fa,
                        except: ea,
                    },
                    Event::ToUser {
                        user: b,
                        frame: fb,
                        except: eb,
                    },
                ) => {
                    assert_eq!((a, fa, ea), (b, fb, eb))
                }
                _ => panic!("kind changed"),
            }
        }
    }

    #[test]
    fn garbage_payloads_are_rejected() {
        assert!(decode("parley:room:x", b"").is_none());
        assert!(decode("parley:room:x", b"m node notanumber {}").is_none());
        assert!(decode("parley:room:x", b"z node 1 {}").is_none());
        assert!(decode("other", b"m node 1 {}").is_none());
        assert!(decode("parley:room:x", b"m node 1 \xff\xfe").is_none());
    }
}
