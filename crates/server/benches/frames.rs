//! Frame parsing and serialisation: the per-frame CPU cost on both ends of a
//! session.
//!
//! - `parse/*`: `parley_protocol::parse_client_frame`, which every inbound
//!   text frame goes through (a `send`, a `join`, and the error path).
//! - `serialise/*`: `ServerFrame::Message(..).to_json()` (serde only) and
//!   `StoredMessage::encode` (what the group committer runs once
//!   per stored message: `StoredMessage::to_wire` + `to_json` + `Utf8Bytes`).
//!
//! Run: `cargo bench -p parley-server --bench frames` (see docs/microbenchmarks.md).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use parley_protocol::{RoomEvent, parse_client_frame};
use parley_server::store::StoredMessage;

/// The committer's encoding: the push's JSON text, as the bytes every
/// receiver is handed.
fn encode_message(m: &StoredMessage) -> axum::extract::ws::Utf8Bytes {
    axum::extract::ws::Utf8Bytes::from(m.encode())
}

/// A chat line of exactly `len` bytes (ASCII, with the odd quote that JSON
/// must escape, as real text has).
fn text_of(len: usize) -> String {
    const LINE: &str = "Deploy of v2.14 is done, \"canary\" looks fine; rolling out to the rest of the fleet now. ";
    LINE.chars().cycle().take(len).collect()
}

fn parse(c: &mut Criterion) {
    let send = format!(
        r#"{{"type":"send","id":4242,"room":"general","text":"{}","nonce":"c7f3a9e1-4242"}}"#,
        text_of(100).replace('"', "\\\"")
    );
    let join = r#"{"type":"join","id":17,"room":"general","since":41}"#.to_string();
    // Well-formed JSON, known type, missing field: the error path parses
    // twice (frame, then the id-recovery envelope) and formats a message.
    let malformed = r#"{"type":"send","id":9,"room":"general"}"#.to_string();
    let not_json = "hello? is this thing on".to_string();

    let mut g = c.benchmark_group("parse");
    for (name, frame, ok) in [
        ("send_100B", &send, true),
        ("join", &join, true),
        ("malformed_missing_text", &malformed, false),
        ("not_json", &not_json, false),
    ] {
        assert_eq!(parse_client_frame(frame).is_ok(), ok, "{name}: {frame}");
        g.throughput(Throughput::Bytes(frame.len() as u64));
        g.bench_function(name, |b| {
            b.iter(|| parse_client_frame(black_box(frame.as_str())))
        });
    }
    g.finish();
}

fn stored(text_len: usize) -> StoredMessage {
    StoredMessage {
        room: "general".to_string(),
        seq: 123_456,
        from: "alice".to_string(),
        text: text_of(text_len),
        ts_ms: 1_790_000_000_123,
        nonce: Some("c7f3a9e1-4242".to_string()),
        ..Default::default()
    }
}

fn serialise(c: &mut Criterion) {
    let mut g = c.benchmark_group("serialise");
    for (label, len) in [("100B", 100), ("4KiB", 4096)] {
        let m = stored(len);
        let frame = m.to_wire().into_frame();
        let out_len = frame.to_json().len() as u64;
        assert_eq!(encode_message(&m).as_str(), frame.to_json());
        g.throughput(Throughput::Bytes(out_len));
        g.bench_with_input(BenchmarkId::new("to_json", label), &frame, |b, f| {
            b.iter(|| black_box(f).to_json())
        });
        g.bench_with_input(BenchmarkId::new("encode_message", label), &m, |b, m| {
            b.iter(|| encode_message(black_box(m)))
        });
        // The part of encode_message that is not serialisation: copying the
        // stored message into a wire `Message` (four String clones and the
        // RFC 3339 timestamp).
        g.bench_with_input(BenchmarkId::new("to_wire_only", label), &m, |b, m| {
            b.iter(|| -> RoomEvent { black_box(m).to_wire() })
        });
    }
    g.finish();
}

criterion_group!(benches, parse, serialise);
criterion_main!(benches);
