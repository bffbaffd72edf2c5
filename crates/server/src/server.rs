//! Start-up and shutdown of a node.
//!
//! [`Server::start`] opens the store (applying migrations), builds the bus,
//! presence, hub and group committer, binds the listener and serves. A node stops only
//! by draining (invariant 6), triggered by [`RunningServer::shutdown`] (the
//! CLI calls it on SIGTERM/SIGINT):
//!
//! 1. `/readyz` turns 503 at once, so the load balancer stops sending traffic;
//! 2. after `drain_grace` the listener stops accepting;
//! 3. sessions are closed with 1001, spread evenly over `drain_spread` so
//!    their reconnects do not arrive at the other nodes all at once; each
//!    session first delivers the acks of its in-flight sends, and leaves the
//!    registry only once its closing handshake is over (the peer's close
//!    frame, or a short timeout: `session::socket`) — the drain waits for
//!    that, so the process never exits under a socket still closing (which
//!    reset busy clients instead of sending them 1001);
//! 4. the group committer commits what is queued, then the process may exit.
//!
//! Everything is bounded by `drain_timeout`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::serve::ListenerExt;
use parley_protocol::close;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::auth::Auth;
use crate::bus::Bus;
use crate::bus::local::LocalBus;
use crate::commit::Appender;
use crate::config::Config;
use crate::http::AppState;
use crate::hub::Hub;
use crate::node::Node;
use crate::presence::{LocalPresence, Presence};
use crate::ratelimit::RateLimiter;
use crate::session::Registry;
use crate::shutdown::{Drain, Phase};
use crate::store::Store;

pub struct Server;

/// A node that is serving.
pub struct RunningServer {
    addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    node: Arc<Node>,
    sessions: Arc<Registry>,
    trigger: Arc<Notify>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Server {
    /// Opens everything and starts serving in the background.
    pub async fn start(mut config: Config) -> anyhow::Result<RunningServer> {
        config.read_secret_files()?;
        let store = crate::store::open(&config.database_url, config.database_pool)
            .await
            .with_context(|| {
                format!(
                    "opening the store at {}",
                    crate::store::redact(&config.database_url)
                )
            })?;
        Self::start_with_store(config, store).await
    }

    /// Starts a node on a store opened by the caller (tests wrap the real
    /// store to inject faults).
    pub async fn start_with_store(
        mut config: Config,
        store: Arc<dyn Store>,
    ) -> anyhow::Result<RunningServer> {
        config.read_secret_files()?;
        // Before anything records: a metric set while no recorder is
        // installed is lost (the bus's first "connected" was, when Redis
        // answered before the node had finished starting).
        let metrics = crate::metrics::install();
        crate::auth::check_usernames(store.as_ref()).await?;
        let node_id = config.node_id();
        let (bus, presence): (Arc<dyn Bus>, Arc<dyn Presence>) = match &config.redis_url {
            None => (Arc::new(LocalBus::new()), Arc::new(LocalPresence)),
            Some(url) => {
                anyhow::ensure!(
                    config.jwt_secret.as_deref().is_some_and(|s| !s.is_empty()),
                    "PARLEY_JWT_SECRET is required when clustered (PARLEY_REDIS_URL is set): \
                     every node must verify the tokens of every other"
                );
                let ca = match &config.redis_ca_file {
                    Some(path) => Some(std::fs::read(path).with_context(|| {
                        format!("reading PARLEY_REDIS_CA_FILE {}", path.display())
                    })?),
                    None => None,
                };
                let (bus, presence) =
                    crate::bus::redis::RedisBus::start(url, ca.as_deref(), &node_id)
                        .context("configuring the Redis bus")?;
                // A certificate Redis's CA did not sign will not get better
                // by retrying: refuse to start, rather than serve without a bus.
                bus.check_tls()
                    .await
                    .context("connecting to Redis over TLS")?;
                (Arc::new(bus), Arc::new(presence))
            }
        };
        let auth = Auth::from_config(
            config.jwt_secret.as_deref(),
            store.as_ref(),
            config.token_ttl,
        )
        .await
        .context("loading the JWT secret")?
        .with_leeway(config.token_leeway)
        .with_store(store.clone());
        let auth_seen = crate::auth::watch::load(&auth, store.as_ref())
            .await
            .context("loading the revoked tokens")?;
        let hub = Hub::new(
            store.clone(),
            bus.clone(),
            presence,
            config.anti_entropy,
            config.history_max.max(1),
            config.outbound_queue,
        );
        let (appender, committer) =
            Appender::spawn(store.clone(), bus.clone(), config.commit_batch);
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        let addr = listener.local_addr().context("reading the bound address")?;
        let metrics_listener = match config.metrics_listen {
            Some(at) => Some(
                TcpListener::bind(at)
                    .await
                    .with_context(|| format!("binding the metrics listener {at}"))?,
            ),
            None => None,
        };

        let node = Arc::new(Node {
            limiter: RateLimiter::new(config.send_rate, config.send_burst),
            config,
            node_id,
            store,
            hub,
            appender,
            auth,
            drain: Drain::new(),
            metrics,
        });
        let sessions = Arc::new(Registry::default());
        crate::metrics::register_defaults(node.hub.bus_kind());
        crate::metrics::spawn_upkeep(node.metrics.clone());
        tokio::spawn(crate::session::heartbeat::run(
            Arc::downgrade(&sessions),
            node.config.heartbeat,
            node.auth.leeway_s(),
        ));
        tokio::spawn(crate::auth::watch::run(
            node.auth.clone(),
            node.store.clone(),
            Arc::downgrade(&sessions),
            node.config.revocation_refresh,
            auth_seen,
        ));
        tracing::info!(
            node = %node.node_id,
            %addr,
            store = %crate::store::redact(&node.config.database_url),
            bus = node.hub.bus_kind(),
            version = env!("CARGO_PKG_VERSION"),
            "parley node serving"
        );

        let trigger = Arc::new(Notify::new());
        let state = AppState {
            node: node.clone(),
            sessions: sessions.clone(),
        };
        let metrics_addr = match &metrics_listener {
            Some(l) => Some(l.local_addr().context("reading the metrics address")?),
            None => None,
        };
        let task = tokio::spawn(lifecycle(
            listener,
            metrics_listener,
            state,
            trigger.clone(),
            committer,
        ));
        Ok(RunningServer {
            addr,
            metrics_addr,
            node,
            sessions,
            trigger,
            task,
        })
    }
}

impl RunningServer {
    /// The address the node listens on (useful with port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address of the separate metrics listener, when there is one.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }

    /// The node's live WebSocket sessions.
    pub fn sessions(&self) -> &Arc<Registry> {
        &self.sessions
    }

    /// Starts the drain; returns at once.
    pub fn shutdown(&self) {
        self.trigger.notify_one();
    }

    /// Waits until the node has drained and stopped.
    pub async fn wait(self) -> anyhow::Result<()> {
        self.task.await.context("server task panicked")?
    }

    /// Drains and waits.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown();
        self.wait().await
    }
}

async fn lifecycle(
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    state: AppState,
    trigger: Arc<Notify>,
    committer: JoinHandle<()>,
) -> anyhow::Result<()> {
    let AppState { node, sessions } = state.clone();
    let router = crate::http::router(state.clone(), metrics_listener.is_none());
    // The metrics listener serves until the node has stopped: a scrape
    // during the drain shows the drain.
    let metrics_server = metrics_listener.map(|listener| {
        tokio::spawn(async move { axum::serve(listener, crate::http::metrics_router(state)).await })
    });
    let drain = node.drain.clone();
    let stop_accepting = {
        let drain = drain.clone();
        async move { drain.reached(Phase::Closing).await }
    };
    let serve = tokio::spawn(async move {
        axum::serve(
            listener.tap_io(tune_socket),
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(stop_accepting)
        .await
    });

    trigger.notified().await;
    let config = &node.config;
    let deadline = Instant::now() + config.drain_timeout;
    tracing::info!(sessions = sessions.len(), "draining: readiness is now 503");
    drain.advance(Phase::Draining);
    metrics::gauge!("parley_draining").set(1.0);
    tokio::time::sleep(config.drain_grace.min(config.drain_timeout)).await;

    drain.advance(Phase::Closing);
    close_sessions_spread(&sessions, config.drain_spread, deadline).await;
    // A session is registered until its socket is closed, handshake included.
    while !sessions.is_empty() && Instant::now() < deadline {
        // Late arrivals (upgrades that were in flight) are closed too.
        for outbox in sessions.snapshot() {
            outbox.request_close(close::GOING_AWAY);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if !sessions.is_empty() {
        tracing::warn!(left = sessions.len(), "drain timeout: sessions still open");
    }

    node.appender.close();
    let remaining = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_secs(1));
    if tokio::time::timeout(remaining, committer).await.is_err() {
        tracing::error!("drain timeout: pending appends were not all committed");
    }
    match tokio::time::timeout(Duration::from_secs(2), serve).await {
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "HTTP server ended with an error"),
        Ok(Err(e)) => tracing::warn!(error = %e, "HTTP server task failed"),
        _ => {}
    }
    if let Some(task) = metrics_server {
        task.abort();
    }
    tracing::info!("drained; stopping");
    Ok(())
}

/// Asks every session to close with 1001, evenly spread over `spread`.
async fn close_sessions_spread(sessions: &Registry, spread: Duration, deadline: Instant) {
    let sessions = sessions.snapshot();
    let n = sessions.len().max(1) as u32;
    let start = Instant::now();
    for (i, outbox) in sessions.into_iter().enumerate() {
        let at = (start + spread * i as u32 / n).min(deadline);
        tokio::time::sleep_until(at).await;
        outbox.request_close(close::GOING_AWAY);
    }
}

/// Socket options of every accepted connection. `TCP_NODELAY`: a chat server
/// writes small frames and waits for the answer; with Nagle's algorithm on,
/// an ack written right behind the sender's own `message` push waited for
/// the client's delayed ACK — 40 ms on Linux — before leaving (issue 15).
fn tune_socket(stream: &mut TcpStream) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, "could not set TCP_NODELAY on an accepted connection");
    }
}
