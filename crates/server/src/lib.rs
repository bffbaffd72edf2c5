//! The Parley node.
//!
//! A node is stateless: everything durable lives in the [`store`], and nodes
//! learn about each other's messages through the [`bus`]. Reading order for a
//! newcomer, following one message from socket to socket:
//!
//! 1. [`http`] — the axum router: REST API, WebSocket upgrade, health, metrics, web UI.
//! 2. [`session`] — one connection: parses frames, enforces limits, owns the
//!    bounded outbound queue.
//! 3. [`node`] — the chat rules shared by WebSocket and REST (who may read
//!    or write a room, text limits, rate limits).
//! 4. [`store::group_commit`] — batches appends into one transaction, then
//!    publishes each stored message exactly once on the bus (persist, then publish).
//! 5. [`bus`] — node ↔ node fan-out (in-process by default).
//! 6. [`hub`] — room → local sessions; delivers each room in `seq` order,
//!    filling gaps from the store.
//!
//! [`server`] wires these together and owns start-up and the graceful drain
//! ([`shutdown`]).

pub mod auth;
pub mod bus;
pub mod config;
pub mod error;
pub mod http;
pub mod hub;
pub mod metrics;
pub mod node;
pub mod ratelimit;
pub mod server;
pub mod session;
pub mod shutdown;
pub mod store;

pub use async_trait::async_trait;
pub use config::Config;
pub use server::{RunningServer, Server};
