//! `GET /ws`: the WebSocket upgrade. A token may come with the upgrade
//! (`Authorization: Bearer`, or `?token=` for clients that cannot set
//! headers); otherwise the session waits for a `hello`.

use axum::extract::{Query, State, WebSocketUpgrade};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use parley_protocol::ErrorCode;
use serde::Deserialize;

use super::{AppState, bearer};
use crate::error::ChatError;
use crate::session::SessionAuth;
use crate::shutdown::Phase;

/// Bytes tungstenite reads from the socket at a time. The buffer is
/// allocated for every connection, idle or not: its default (128 KiB) would
/// dominate a node's memory, and even 1 KiB was a quarter of an idle
/// connection's cost (docs/benchmarks.md). Nothing is lost by a small one:
/// once a frame's header is read, tungstenite grows the buffer to the whole
/// frame, so a frame takes at most two reads.
const READ_BUFFER: usize = 256;
/// Bytes buffered before a write reaches the socket (a flush always writes).
/// The buffer's ceiling stays tungstenite's default (unbounded): it only grows
/// past this size while the socket refuses writes, and the outbox bounds what
/// can be queued behind it. A `joined` with a full page of history can be
/// megabytes, which a smaller ceiling would turn into a dropped connection.
const WRITE_BUFFER: usize = 4 * 1024;

#[derive(Debug, Deserialize)]
pub struct WsQuery {
    token: Option<String>,
}

pub async fn upgrade(
    State(AppState { node, sessions }): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<WsQuery>,
    ws: WebSocketUpgrade,
) -> Response {
    if node.drain.phase() >= Phase::Closing {
        return ChatError::new(
            ErrorCode::Unavailable,
            "node is draining; connect to another node",
        )
        .into_response();
    }
    let token = bearer(&headers).map(str::to_string).or(query.token);
    let preauth = match token {
        Some(token) => match node.auth.verify_claims(&token).await {
            Ok(claims) => Some(SessionAuth::new(&token, claims)),
            Err(e) => return e.into_response(),
        },
        None => None,
    };
    let max_frame = node.config.max_frame_bytes;
    ws.read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_message_size(max_frame)
        .max_frame_size(max_frame)
        .on_upgrade(move |socket| crate::session::run(socket, node, sessions, preauth))
}
