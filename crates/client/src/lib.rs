//! Parley's async client library, used by `parley chat`, `parley bench` and
//! the test suites — and usable by any Rust bot.
//!
//! - [`http`]: register, login, rooms, history, search and REST send; and
//!   rooms with members (protocol 1.1 §3): create a room, set its topic,
//!   list, add and remove members (a kick, or one's own part), give
//!   roles, ban and unban.
//! - [`Connection`]: one WebSocket connection with typed requests
//!   (`hello`, `join`, `send`, …) that match replies by request id and keep
//!   pushes that arrive meanwhile.
//! - [`Client`]: a connection that survives: it reconnects with backoff,
//!   re-joins every room with `since`, fills gaps from history, retries
//!   unacknowledged requests (sends, replies, edits, deletes, reactions)
//!   with their nonce and read positions until stored, and hands the
//!   application each room event exactly once, in `seq` order. A part
//!   ends a membership for good (it is not re-joined on reconnecting), and
//!   so does a kick or ban (`left` push with its reason).
//! - [`RoomState`]: a room folded from its event log, each message in its
//!   current state (edits, deletes, reactions, replies), with the room's
//!   topic, members' roles and bans.

pub mod connection;
pub mod http;
pub mod resilient;
pub mod room_state;

pub use connection::{Ack, ConnectOptions, Connection, Joined, Welcome, messages_of, room_event};
pub use parley_protocol as protocol;
pub use resilient::{Client, ClientConfig, Event};
pub use room_state::{Applied, RoomState};

use parley_protocol::{ClientAction, CloseCode, ErrorCode};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("connecting to {url}: {message}")]
    Connect { url: String, message: String },
    #[error("websocket: {0}")]
    WebSocket(String),
    #[error("connection closed (code {code:?}: {reason})")]
    Closed { code: Option<u16>, reason: String },
    #[error("server error {code}: {message}")]
    Server { code: ErrorCode, message: String },
    /// An HTTP request that failed before a response arrived in full
    /// (sending it, or reading the body).
    #[error("HTTP request: {0}")]
    Request(String),
    /// An HTTP response with a non-2xx status.
    #[error("HTTP {status}: {message}")]
    Http {
        status: u16,
        code: Option<ErrorCode>,
        message: String,
    },
    #[error("unexpected reply: {0}")]
    Protocol(String),
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
}

impl ClientError {
    /// The close code, if the connection was closed by the server.
    pub fn close_code(&self) -> Option<u16> {
        match self {
            ClientError::Closed { code, .. } => *code,
            _ => None,
        }
    }

    /// The close code this error stands for, if the server sends it: the
    /// close frame's code, or 4401 for a hello refused with `unauthorized`
    /// (the server closes with 4401 right after that error, which the
    /// client no longer reads).
    pub fn close(&self) -> Option<CloseCode> {
        match self {
            ClientError::Closed { code, .. } => code.and_then(CloseCode::from_u16),
            ClientError::Server {
                code: ErrorCode::Unauthorized,
                ..
            } => Some(CloseCode::Unauthorized),
            _ => None,
        }
    }

    /// What a client does after this error ended its connection:
    /// [`CloseCode::action`] of [`ClientError::close`]; with no such code
    /// (connection refused or lost, timeout, …) it reconnects with backoff.
    pub fn action(&self) -> ClientAction {
        self.close()
            .map_or(ClientAction::ReconnectWithBackoff, CloseCode::action)
    }

    /// The protocol error code of a server error.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Server { code, .. } => Some(*code),
            ClientError::Http { code, .. } => *code,
            _ => None,
        }
    }
}

pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// A nonce unique enough for idempotent sends: `prefix-<random>-<counter>`.
pub fn nonce(prefix: &str, counter: u64) -> String {
    use rand::Rng;
    let r: u32 = rand::thread_rng().r#gen();
    format!("{prefix}-{r:08x}-{counter}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_close_codes_and_actions() {
        let closed = |code| ClientError::Closed {
            code,
            reason: String::new(),
        };
        assert_eq!(closed(Some(1001)).action(), ClientAction::ReconnectNow);
        assert_eq!(closed(Some(4408)).action(), ClientAction::ReconnectNow);
        assert_eq!(
            closed(Some(4429)).action(),
            ClientAction::ReconnectWithBackoff
        );
        assert_eq!(closed(Some(4401)).action(), ClientAction::Stop);
        assert_eq!(closed(Some(1009)).close(), Some(CloseCode::TooBig));
        assert_eq!(closed(Some(1006)).close(), None);
        assert_eq!(closed(None).action(), ClientAction::ReconnectWithBackoff);
        // A hello refused with `unauthorized` is followed by close 4401.
        let refused = ClientError::Server {
            code: ErrorCode::Unauthorized,
            message: "token expired".into(),
        };
        assert_eq!(refused.close(), Some(CloseCode::Unauthorized));
        assert_eq!(refused.action(), ClientAction::Stop);
        let unavailable = ClientError::Server {
            code: ErrorCode::Unavailable,
            message: String::new(),
        };
        assert_eq!(unavailable.action(), ClientAction::ReconnectWithBackoff);
        assert_eq!(
            ClientError::Request("reset".into()).action(),
            ClientAction::ReconnectWithBackoff
        );
        assert_eq!(
            ClientError::Request("reset".into()).to_string(),
            "HTTP request: reset"
        );
    }
}
