//! Parley's async client library, used by `parley chat`, `parley bench` and
//! the test suites — and usable by any Rust bot.
//!
//! - [`http`]: register, login, rooms, history and REST send.
//! - [`Connection`]: one WebSocket connection with typed requests
//!   (`hello`, `join`, `send`, …) that match replies by request id and keep
//!   pushes that arrive meanwhile.
//! - [`Client`]: a connection that survives: it reconnects with backoff,
//!   re-joins every room with `since`, fills gaps from history, retries
//!   unacknowledged sends with their nonce, and hands the application each
//!   message exactly once, in `seq` order.

pub mod connection;
pub mod http;
pub mod resilient;

pub use connection::{Ack, ConnectOptions, Connection, Joined, Welcome};
pub use parley_protocol as protocol;
pub use resilient::{Client, ClientConfig, Event};

use parley_protocol::ErrorCode;

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
