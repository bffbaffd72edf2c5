//! The Parley node.
//!
//! A node is stateless: everything durable lives in the [`store`], and nodes
//! learn about each other's messages through the [`bus`]. Reading order for a
//! newcomer, following one message from socket to socket — each layer calls
//! only the ones below it:
//!
//! 1. [`http`] — the axum router: REST API, WebSocket upgrade, health, metrics, web UI.
//! 2. [`session`] — one WebSocket connection: parses frames, answers them,
//!    writes its [`outbox`] (the bounded per-connection queue) to the socket.
//! 3. [`node`] — the chat rules shared by WebSocket and REST (text limits,
//!    rate limits, history); [`access`] — who may see, join and moderate a
//!    room (members, roles, bans, private rooms).
//! 4. [`commit`] — **where a message is stored, then fanned out**: batches
//!    appends into one [`store`] transaction, then publishes each stored
//!    message exactly once on the [`bus`] (persist, then publish).
//! 5. [`bus`] — node ↔ node fan-out (in-process by default, Redis in a
//!    fleet); [`presence`] — who is in a room across the fleet.
//! 6. [`hub`] — **where a message is delivered**: room → local sessions, in
//!    `seq` order, filling gaps from the store, into each session's [`outbox`].
//!
//! [`server`] wires these together and owns start-up and the graceful drain
//! ([`shutdown`]). [`auth`], [`ratelimit`], [`config`], [`metrics`] and
//! [`error`] serve every layer.

pub mod access;
pub mod auth;
pub mod bus;
pub mod commit;
pub mod config;
pub mod error;
pub mod http;
pub mod hub;
pub mod metrics;
pub mod node;
pub mod outbox;
pub mod presence;
pub mod ratelimit;
pub mod server;
pub mod session;
pub mod shutdown;
pub mod store;

pub use async_trait::async_trait;
pub use config::Config;
pub use server::{RunningServer, Server};
