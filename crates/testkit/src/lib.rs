//! Test helpers shared by every test suite: start a node in this process or
//! as a `parley serve` child process (in a temp dir, on a port chosen at run
//! time), mint tokens with the node's secret, connect clients, and wait for
//! conditions ([`eventually`]).
//!
//! Everything a helper starts, it stops when its handle is dropped:
//! - a [`TestNode`] starts its drain, as [`TestNode::stop`] does but without
//!   waiting for it: the drain finishes in the background, or is cut short
//!   when the test's runtime ends;
//! - a [`NodeProcess`] is killed (SIGKILL), and so are the nodes of a
//!   [`Fleet`], before its PostgreSQL and Redis are stopped;
//! - PostgreSQL, Redis and nginx ([`services`]) are stopped.
//!
//! [`faulty::start`] is the exception: it hands out the bare
//! [`RunningServer`], which does not stop on drop; call its `stop`.
//!
//! Nodes get their configuration from the test alone: [`test_config`] ignores
//! `PARLEY_*` environment variables, and `parley serve` child processes do not
//! inherit them.

#![forbid(unsafe_code)]
// Test support: a helper that cannot set up what a test needs panics with a
// message, which is how a test fails (the workspace forbids unwrap/expect
// outside tests).
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod services;
pub mod tls;
pub mod wait;

pub use wait::{eventually, eventually_blocking, poll_until, poll_until_blocking};

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use parley_client::Connection;
use parley_server::{Config, RunningServer, Server};
use tempfile::TempDir;

/// The JWT secret every test node uses, so tests can mint tokens.
pub const SECRET: &str = "parley-test-secret";

/// A configuration for tests: loopback, port 0, generous rate limits, short
/// drain; otherwise the defaults, whatever `PARLEY_*` variables are set.
pub fn test_config(dir: &Path) -> Config {
    let mut config = Config::try_from_args_ignoring_env(["parley"]).expect("the defaults parse");
    config.listen = "127.0.0.1:0".parse().expect("literal address");
    config.database_url = format!("sqlite://{}", dir.join("parley.db").display());
    config.jwt_secret = Some(SECRET.to_string());
    config.node_id = Some("test-node".to_string());
    config.send_rate = 100_000.0;
    config.send_burst = 100_000;
    config.drain_grace = Duration::from_millis(100);
    config.drain_spread = Duration::from_millis(300);
    config.drain_timeout = Duration::from_secs(10);
    config
}

/// Mints a token for `user` with the test secret, valid for an hour.
pub fn token(user: &str) -> String {
    use parley_protocol::token::{Claims, sign};
    let now = parley_protocol::time::now_s();
    sign(
        SECRET.as_bytes(),
        &Claims::issued(user, now, Duration::from_secs(3600)),
    )
}

/// A node running inside the test process. Dropping it starts its drain
/// (see the crate documentation).
pub struct TestNode {
    server: Option<RunningServer>,
    addr: SocketAddr,
    config: Config,
    dir: Option<TempDir>,
}

impl TestNode {
    /// Starts a node with [`test_config`] in a fresh temp dir.
    pub async fn start() -> TestNode {
        Self::start_with(|_| {}).await
    }

    /// Starts a node, letting the test adjust the configuration first.
    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> TestNode {
        let dir = TempDir::new().expect("temp dir");
        let mut config = test_config(dir.path());
        adjust(&mut config);
        Self::start_in(config, Some(dir)).await
    }

    async fn start_in(config: Config, dir: Option<TempDir>) -> TestNode {
        let server = Server::start(config.clone()).await.expect("node starts");
        let addr = server.addr();
        TestNode {
            server: Some(server),
            addr,
            config,
            dir,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    pub fn http(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn server(&self) -> &RunningServer {
        self.server.as_ref().expect("node is running")
    }

    /// Connects and authenticates as `user` (token minted with the test secret).
    pub async fn connect(&self, user: &str) -> Connection {
        connect(&self.ws_url(), user).await
    }

    /// Drains and stops the node, keeping its data directory.
    pub async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.stop().await.expect("clean stop");
        }
    }

    /// Stops the node and starts it again on the same database (and port 0:
    /// the new address is in [`TestNode::addr`]).
    pub async fn restart(mut self) -> TestNode {
        self.stop().await;
        let dir = self.dir.take();
        Self::start_in(self.config.clone(), dir).await
    }
}

impl Drop for TestNode {
    /// Starts the drain that [`TestNode::stop`] would wait for; it goes on in
    /// the background while the runtime runs. (Dropping the bare
    /// `RunningServer` would leave the node serving until the runtime ends.)
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown();
        }
    }
}

/// Connects to a node's WebSocket URL and says hello as `user`.
pub async fn connect(ws_url: &str, user: &str) -> Connection {
    let mut conn = Connection::connect(ws_url)
        .await
        .expect("websocket connects");
    conn.hello(&token(user)).await.expect("hello is welcomed");
    conn
}

/// A `parley serve` child process.
pub struct NodeProcess {
    child: Option<tokio::process::Child>,
    pub addr: SocketAddr,
    pub dir: PathBuf,
    _tmp: Option<TempDir>,
}

/// A free TCP port on 127.0.0.1 (bound and released; good enough for tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Removes every `PARLEY_*` variable this process inherited from a child's
/// environment, so that a developer's settings (`PARLEY_MAX_TEXT_BYTES=7`,
/// …) do not reach the nodes under test; the child gets only what the test
/// sets on `cmd` afterwards.
pub fn without_parley_env(cmd: &mut tokio::process::Command) -> &mut tokio::process::Command {
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("PARLEY_") {
            cmd.env_remove(name);
        }
    }
    cmd
}

/// Where a node's log (its stdout) goes: nowhere, unless `PARLEY_NODE_LOGS`
/// names a directory — then `DIR/node-PORT.log`, appended across restarts.
fn node_log(port: u16) -> Stdio {
    let Some(dir) = std::env::var_os("PARLEY_NODE_LOGS") else {
        return Stdio::null();
    };
    let path = Path::new(&dir).join(format!("node-{port}.log"));
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map(Stdio::from)
        .unwrap_or_else(|e| panic!("node log {}: {e}", path.display()))
}

/// `binary serve` in `dir` on `port`, with the test settings under `env`.
/// A test setting is left out when `env` sets it or its `_FILE` form
/// (`PARLEY_JWT_SECRET_FILE` replaces `PARLEY_JWT_SECRET`, which would
/// conflict with it).
fn serve_command(
    binary: &str,
    dir: &Path,
    port: u16,
    env: &[(&str, &str)],
) -> tokio::process::Command {
    let defaults = [
        ("PARLEY_LISTEN", format!("127.0.0.1:{port}")),
        (
            "PARLEY_DATABASE_URL",
            format!("sqlite://{}", dir.join("parley.db").display()),
        ),
        ("PARLEY_JWT_SECRET", SECRET.to_string()),
        ("PARLEY_NODE_ID", format!("node-{port}")),
        ("PARLEY_SEND_RATE", "100000".to_string()),
        ("PARLEY_SEND_BURST", "100000".to_string()),
        ("PARLEY_LOG", "warn".to_string()),
    ];
    let mut cmd = tokio::process::Command::new(binary);
    without_parley_env(&mut cmd)
        .arg("serve")
        .current_dir(dir)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    for (name, value) in &defaults {
        let file = format!("{name}_FILE");
        if !env.iter().any(|(k, _)| *k == *name || *k == file) {
            cmd.env(name, value);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// Runs `binary serve` with `env` where it must refuse to start: returns
/// its exit code and what it wrote (log and stderr). Panics if it is still
/// running after `limit`.
pub async fn serve_refuses(
    binary: &str,
    env: &[(&str, &str)],
    limit: Duration,
) -> (Option<i32>, String) {
    let tmp = TempDir::new().expect("temp dir");
    let mut cmd = serve_command(binary, tmp.path(), free_port(), env);
    // Into a file, not a pipe: what it said is needed when it hangs too.
    let stderr_path = tmp.path().join("stderr");
    let stderr = std::fs::File::create(&stderr_path).expect("stderr file");
    let log = stderr.try_clone().expect("stderr file");
    cmd.stdout(log).stderr(stderr);
    let mut child = cmd.spawn().expect("parley binary runs");
    let status = tokio::time::timeout(limit, child.wait()).await;
    let said = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    match status {
        Ok(status) => (status.expect("wait").code(), said),
        Err(_) => panic!("the node was still running after {limit:?}; it said:\n{said}"),
    }
}

impl NodeProcess {
    /// Starts `binary serve` in a fresh temp dir with test settings plus
    /// `env`, and waits until `/readyz` answers 200.
    pub async fn start(binary: &str, env: &[(&str, &str)]) -> NodeProcess {
        let tmp = TempDir::new().expect("temp dir");
        let dir = tmp.path().to_path_buf();
        let mut node = Self::spawn(binary, &dir, env).await;
        node._tmp = Some(tmp);
        node
    }

    /// Starts `binary serve` with its database in `dir`.
    pub async fn spawn(binary: &str, dir: &Path, env: &[(&str, &str)]) -> NodeProcess {
        Self::spawn_at(binary, dir, free_port(), env).await
    }

    /// Starts `binary serve` on `port` (e.g. to restart a node where it was).
    pub async fn spawn_at(
        binary: &str,
        dir: &Path,
        port: u16,
        env: &[(&str, &str)],
    ) -> NodeProcess {
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
        let mut cmd = serve_command(binary, dir, port, env);
        cmd.stdout(node_log(port)).stderr(Stdio::inherit());
        let child = cmd.spawn().expect("parley binary starts");
        let mut node = NodeProcess {
            child: Some(child),
            addr,
            dir: dir.to_path_buf(),
            _tmp: None,
        };
        node.wait_ready(Duration::from_secs(20)).await;
        node
    }

    pub fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .and_then(|c| c.id())
            .expect("running child")
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    pub fn http(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Polls `/readyz` until it answers 200.
    pub async fn wait_ready(&mut self, limit: Duration) {
        let (addr, http) = (self.addr, self.http());
        let what = format!("node at {addr} to become ready");
        let child = &mut self.child;
        eventually(&what, limit, || {
            if let Some(Ok(Some(status))) = child.as_mut().map(|c| c.try_wait()) {
                panic!("node at {addr} exited before it was ready: {status}");
            }
            let http = &http;
            async move {
                let r = parley_client::http::request(http, "GET", "/readyz", None, None).await;
                r.is_ok_and(|r| r.status == 200).then_some(())
            }
        })
        .await
    }

    /// Sends a signal (e.g. "TERM", "KILL") to the process.
    pub fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Waits for the process to exit; returns its exit code.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let child = self.child.as_mut().expect("running child");
        let status = tokio::time::timeout(limit, child.wait())
            .await
            .expect("node exits in time")
            .expect("wait");
        self.child = None;
        status.code()
    }

    /// Resident memory of the process in KiB (from /proc).
    pub fn rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .expect("VmRSS line")
    }
}

/// A real store with a switch that makes it fail like a database outage:
/// while `down`, every call returns `Unavailable`.
pub mod faulty {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use parley_server::store::search::{SearchPage, SearchQuery};
    use parley_server::store::{
        Access, Account, AppendOutcome, AuthChanges, BanRow, LoginAttempt, MemberRow, NewMessage,
        RoomListing, Store, StoreError, StoredMessage, Unread,
    };

    pub struct FaultyStore {
        inner: Arc<dyn Store>,
        down: AtomicBool,
    }

    impl FaultyStore {
        pub fn new(inner: Arc<dyn Store>) -> Arc<Self> {
            Arc::new(Self {
                inner,
                down: AtomicBool::new(false),
            })
        }

        pub fn set_down(&self, down: bool) {
            self.down.store(down, Ordering::SeqCst);
        }

        fn check(&self) -> Result<(), StoreError> {
            if self.down.load(Ordering::SeqCst) {
                Err(StoreError::Unavailable("injected outage".into()))
            } else {
                Ok(())
            }
        }
    }

    #[parley_server::async_trait]
    impl Store for FaultyStore {
        async fn append_batch(
            &self,
            batch: &[NewMessage],
        ) -> Result<Vec<AppendOutcome>, StoreError> {
            self.check()?;
            self.inner.append_batch(batch).await
        }
        async fn ensure_room(&self, room: &str) -> Result<u64, StoreError> {
            self.check()?;
            self.inner.ensure_room(room).await
        }
        async fn last_seq(&self, room: &str) -> Result<Option<u64>, StoreError> {
            self.check()?;
            self.inner.last_seq(room).await
        }
        async fn create_room(
            &self,
            room: &str,
            owner: &str,
            private: bool,
            topic: &str,
        ) -> Result<(), StoreError> {
            self.check()?;
            self.inner.create_room(room, owner, private, topic).await
        }
        async fn access(&self, room: &str, user_key: &str) -> Result<Access, StoreError> {
            self.check()?;
            self.inner.access(room, user_key).await
        }
        async fn enter_room(&self, room: &str, user: &str) -> Result<Access, StoreError> {
            self.check()?;
            self.inner.enter_room(room, user).await
        }
        async fn members(&self, room: &str) -> Result<Vec<MemberRow>, StoreError> {
            self.check()?;
            self.inner.members(room).await
        }
        async fn bans(&self, room: &str) -> Result<Vec<BanRow>, StoreError> {
            self.check()?;
            self.inner.bans(room).await
        }
        async fn room_list(
            &self,
            user_key: &str,
            all: bool,
        ) -> Result<Vec<RoomListing>, StoreError> {
            self.check()?;
            self.inner.room_list(user_key, all).await
        }
        async fn last_seqs(
            &self,
            rooms: &[std::sync::Arc<str>],
        ) -> Result<Vec<(String, u64)>, StoreError> {
            self.check()?;
            self.inner.last_seqs(rooms).await
        }
        async fn rooms(&self) -> Result<Vec<(String, u64)>, StoreError> {
            self.check()?;
            self.inner.rooms().await
        }
        async fn mark_read(
            &self,
            user_key: &str,
            room: &str,
            seq: u64,
        ) -> Result<Option<u64>, StoreError> {
            self.check()?;
            self.inner.mark_read(user_key, room, seq).await
        }
        async fn read_positions(&self, user_key: &str) -> Result<Vec<(String, u64)>, StoreError> {
            self.check()?;
            self.inner.read_positions(user_key).await
        }
        async fn unread(&self, user_key: &str, room: &str) -> Result<Unread, StoreError> {
            self.check()?;
            self.inner.unread(user_key, room).await
        }
        async fn unread_many(
            &self,
            user_key: &str,
            rooms: &[(String, u64)],
        ) -> Result<Vec<Unread>, StoreError> {
            self.check()?;
            self.inner.unread_many(user_key, rooms).await
        }
        async fn search(&self, query: &SearchQuery<'_>) -> Result<SearchPage, StoreError> {
            self.check()?;
            self.inner.search(query).await
        }
        async fn range_forward(
            &self,
            room: &str,
            after: u64,
            before: u64,
            limit: u32,
        ) -> Result<Vec<StoredMessage>, StoreError> {
            self.check()?;
            self.inner.range_forward(room, after, before, limit).await
        }
        async fn range_backward(
            &self,
            room: &str,
            before: u64,
            limit: u32,
        ) -> Result<Vec<StoredMessage>, StoreError> {
            self.check()?;
            self.inner.range_backward(room, before, limit).await
        }
        async fn create_user(&self, name: &str, hash: &str) -> Result<(), StoreError> {
            self.check()?;
            self.inner.create_user(name, hash).await
        }
        async fn password_hash(&self, name: &str) -> Result<Option<String>, StoreError> {
            self.check()?;
            self.inner.password_hash(name).await
        }
        async fn setting_or_insert(&self, key: &str, value: &str) -> Result<String, StoreError> {
            self.check()?;
            self.inner.setting_or_insert(key, value).await
        }
        async fn ping(&self) -> Result<(), StoreError> {
            self.check()?;
            self.inner.ping().await
        }
        async fn account(&self, key: &str) -> Result<Option<Account>, StoreError> {
            self.check()?;
            self.inner.account(key).await
        }
        async fn find_account(&self, name: &str) -> Result<Option<Account>, StoreError> {
            self.check()?;
            self.inner.find_account(name).await
        }
        async fn accounts(&self) -> Result<Vec<Account>, StoreError> {
            self.check()?;
            self.inner.accounts().await
        }
        async fn set_password(&self, name: &str, hash: &str) -> Result<Option<i64>, StoreError> {
            self.check()?;
            self.inner.set_password(name, hash).await
        }
        async fn set_disabled(&self, name: &str, disabled: bool) -> Result<bool, StoreError> {
            self.check()?;
            self.inner.set_disabled(name, disabled).await
        }
        async fn set_role(&self, name: &str, role: &str) -> Result<bool, StoreError> {
            self.check()?;
            self.inner.set_role(name, role).await
        }
        async fn name_collisions(&self) -> Result<Vec<Vec<String>>, StoreError> {
            self.check()?;
            self.inner.name_collisions().await
        }
        async fn stray_dm_rooms(&self) -> Result<Vec<String>, StoreError> {
            self.check()?;
            self.inner.stray_dm_rooms().await
        }
        async fn revoke_token(&self, id: &str, key: &str, exp_s: i64) -> Result<(), StoreError> {
            self.check()?;
            self.inner.revoke_token(id, key, exp_s).await
        }
        async fn revoke_user_tokens(&self, key: &str) -> Result<i64, StoreError> {
            self.check()?;
            self.inner.revoke_user_tokens(key).await
        }
        async fn auth_changes(&self, since_ms: Option<i64>) -> Result<AuthChanges, StoreError> {
            self.check()?;
            self.inner.auth_changes(since_ms).await
        }
        async fn login_attempt(
            &self,
            key: &str,
            addr: &str,
            at_ms: i64,
            since_ms: i64,
        ) -> Result<LoginAttempt, StoreError> {
            self.check()?;
            self.inner.login_attempt(key, addr, at_ms, since_ms).await
        }
        async fn forget_login_attempt(&self, id: i64) -> Result<(), StoreError> {
            self.check()?;
            self.inner.forget_login_attempt(id).await
        }
        async fn clear_login_failures(&self, key: &str) -> Result<(), StoreError> {
            self.check()?;
            self.inner.clear_login_failures(key).await
        }
    }

    /// Starts an in-process node on a faulty SQLite store in `dir`.
    pub async fn start(dir: &std::path::Path) -> (parley_server::RunningServer, Arc<FaultyStore>) {
        let config = super::test_config(dir);
        let inner = parley_server::store::open(&config.database_url, 4)
            .await
            .expect("store opens");
        let store = FaultyStore::new(inner);
        let server = parley_server::Server::start_with_store(config, store.clone())
            .await
            .expect("node starts");
        (server, store)
    }
}

/// Every message of a room (in its current state), read over REST page by
/// page (oldest first).
pub async fn fetch_all(http_base: &str, room: &str) -> Vec<parley_protocol::Message> {
    parley_client::messages_of(&fetch_all_events(http_base, room).await)
}

/// Every event of a room's log, read over REST page by page (seq order).
pub async fn fetch_all_events(http_base: &str, room: &str) -> Vec<parley_protocol::RoomEvent> {
    let reader = token("history-reader");
    let mut all: Vec<parley_protocol::RoomEvent> = Vec::new();
    loop {
        let after = all.last().map_or(0, |e| e.seq());
        let page =
            parley_client::http::messages(http_base, &reader, room, None, Some(after), Some(500))
                .await
                .expect("history page");
        all.extend(page.messages);
        if !page.more {
            return all;
        }
    }
}

/// A local fleet: PostgreSQL, Redis and several `parley serve` processes
/// sharing them — what runs behind the Kubernetes Service.
pub struct Fleet {
    // Dropped in this order: the nodes first, then what they use.
    pub nodes: Vec<NodeProcess>,
    pub postgres: services::Postgres,
    /// The synchronous standby of `postgres` ([`Fleet::start_replicated`]).
    pub standby: Option<services::Postgres>,
    pub redis: services::Redis,
    binary: String,
    env: Vec<(String, String)>,
}

/// The environment that runs a process with its wall clock `offset` off
/// (`"-45s"`, `"+90s"`), through Debian's libfaketime: `CLOCK_REALTIME`
/// moves, the monotonic clock (timers, timeouts) does not.
pub fn skewed_clock(offset: &str) -> [(&'static str, String); 3] {
    const LIB: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";
    assert!(
        Path::new(LIB).exists(),
        "{LIB} is missing: install Debian's libfaketime (scripts/test does)"
    );
    [
        ("LD_PRELOAD", LIB.to_string()),
        ("FAKETIME", offset.to_string()),
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1".to_string()),
    ]
}

impl Fleet {
    /// Starts PostgreSQL, Redis and `n` nodes with the fleet settings plus `env`.
    pub async fn start(binary: &str, n: usize, env: &[(&str, &str)]) -> Fleet {
        Self::start_on(binary, n, env, false).await
    }

    /// Like [`Fleet::start`], on a PostgreSQL primary with a synchronous
    /// standby; the nodes get both hosts in one URL
    /// ([`Fleet::database_url`]) and write to whichever is the primary.
    pub async fn start_replicated(binary: &str, n: usize, env: &[(&str, &str)]) -> Fleet {
        Self::start_on(binary, n, env, true).await
    }

    async fn start_on(binary: &str, n: usize, env: &[(&str, &str)], replicated: bool) -> Fleet {
        let (postgres, standby) = tokio::task::spawn_blocking(move || {
            if !replicated {
                return (services::Postgres::start(), None);
            }
            let primary = services::Postgres::start_primary();
            let standby = services::Postgres::start_standby_of(&primary);
            (primary, Some(standby))
        })
        .await
        .expect("postgres task");
        let redis = tokio::task::spawn_blocking(services::Redis::start)
            .await
            .expect("redis task");
        let mut fleet = Fleet {
            postgres,
            standby,
            redis,
            nodes: Vec::new(),
            binary: binary.to_string(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        for _ in 0..n {
            let node = fleet.spawn_node(None).await;
            fleet.nodes.push(node);
        }
        fleet
    }

    fn node_env(&self) -> Vec<(String, String)> {
        let mut env = vec![
            ("PARLEY_DATABASE_URL".to_string(), self.database_url()),
            ("PARLEY_REDIS_URL".to_string(), self.redis.url()),
            ("PARLEY_ANTI_ENTROPY".to_string(), "1s".to_string()),
        ];
        env.extend(self.env.iter().cloned());
        env
    }

    /// The nodes' `PARLEY_DATABASE_URL`: with a standby, both hosts in
    /// libpq's multi-host syntax, primary first.
    pub fn database_url(&self) -> String {
        match &self.standby {
            None => self.postgres.url(),
            Some(standby) => format!(
                "postgres://parley@127.0.0.1:{},127.0.0.1:{}/postgres?target_session_attrs=read-write",
                self.postgres.port, standby.port
            ),
        }
    }

    /// Starts one more node (on `port`, or a free one).
    pub async fn spawn_node(&self, port: Option<u16>) -> NodeProcess {
        self.spawn_node_with(port, &[]).await
    }

    /// Starts one more node with `extra` settings on top of the fleet's
    /// (e.g. a skewed clock through libfaketime, see [`skewed_clock`]).
    pub async fn spawn_node_with(&self, port: Option<u16>, extra: &[(&str, &str)]) -> NodeProcess {
        let mut env = self.node_env();
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let tmp = TempDir::new().expect("temp dir");
        let mut node = NodeProcess::spawn_at(
            &self.binary,
            tmp.path(),
            port.unwrap_or_else(free_port),
            &env,
        )
        .await;
        node._tmp = Some(tmp);
        node
    }

    /// Replaces node `i` with a fresh process on the same port.
    pub async fn restart_node(&mut self, i: usize) {
        let port = self.nodes[i].addr.port();
        let node = self.spawn_node(Some(port)).await;
        self.nodes[i] = node;
    }

    pub fn ws_urls(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.ws_url()).collect()
    }
}

/// The value of metric `name` (a series without labels) in the Prometheus
/// text of `http_base`/metrics; `None` if the node does not report it.
pub async fn metric(http_base: &str, name: &str) -> Option<f64> {
    let text = parley_client::http::request(http_base, "GET", "/metrics", None, None)
        .await
        .unwrap_or_else(|e| panic!("GET {http_base}/metrics: {e}"))
        .text();
    text.lines()
        .filter_map(|line| line.split_once(' '))
        .find(|(series, _)| *series == name)
        .map(|(_, value)| {
            value
                .trim()
                .parse()
                .unwrap_or_else(|e| panic!("metric {name}: {value:?}: {e}"))
        })
}

/// The next `read` push (protocol 1.1 §2) on `conn`, skipping other frames:
/// (room, seq).
pub async fn next_read_push(conn: &mut Connection) -> (String, u64) {
    loop {
        let frame = conn
            .recv_timeout(Duration::from_secs(10))
            .await
            .expect("a read push");
        if let parley_protocol::ServerFrame::Read {
            re: None,
            room,
            seq,
        } = frame
        {
            return (room, seq);
        }
    }
}

/// Asserts that `seqs` is exactly `from..=to`, in order: no gap, no duplicate.
pub fn assert_gapless(seqs: &[u64], from: u64, to: u64) {
    let expected: Vec<u64> = (from..=to).collect();
    assert_eq!(
        seqs,
        expected.as_slice(),
        "expected exactly {from}..={to} in order"
    );
}

/// Reads (and drops) frames until the connection ends; returns how it ended.
pub async fn read_until_closed(conn: &mut Connection) -> parley_client::ClientError {
    loop {
        if let Err(e) = conn.recv_timeout(Duration::from_secs(15)).await {
            return e;
        }
    }
}

/// `parley bench --json` (the `parley` binary at `bin`) against `urls`
/// with the test secret, its output piped for [`bench_report`], killed if
/// dropped; the bench's own environment variables are cleared so that only
/// `args` speak.
pub fn bench_command(bin: &str, urls: &[&str], args: &[&str]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(bin);
    cmd.args(["bench", "--json", "--jwt-secret", SECRET])
        .args(urls.iter().flat_map(|u| ["--url", u]))
        .args(args)
        .env_remove("CONNECTIONS")
        .env_remove("RAMP_UP")
        .env_remove("DURATION")
        .env_remove("MSG_INTERVAL")
        .env_remove("PARLEY_BENCH_URL")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// Waits (at most `limit`) for a bench started by [`bench_command`] and
/// parses its one JSON report; panics, with its output, if it failed.
pub async fn bench_report(child: tokio::process::Child, limit: Duration) -> serde_json::Value {
    let out = tokio::time::timeout(limit, child.wait_with_output())
        .await
        .expect("bench finishes in time")
        .expect("bench runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "bench failed ({}): {stderr}\n{stdout}",
        out.status
    );
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("bench printed no JSON report ({e}): {stdout}\n{stderr}"))
}

/// A count of a bench report.
pub fn report_count(report: &serde_json::Value, field: &str) -> u64 {
    report[field]
        .as_u64()
        .unwrap_or_else(|| panic!("report has no count {field:?}: {report}"))
}

// ------------------------------------- room events and store handles

/// The kind of a room event, as the `type` of its push names it:
/// "message", "edited", "deleted", "reaction", "member" or "topic".
pub fn event_kind(event: &parley_protocol::RoomEvent) -> &'static str {
    use parley_protocol::RoomEvent;
    match event {
        RoomEvent::Message(_) => "message",
        RoomEvent::Edited(_) => "edited",
        RoomEvent::Deleted(_) => "deleted",
        RoomEvent::Reaction(_) => "reaction",
        RoomEvent::Member(_) => "member",
        RoomEvent::Topic(_) => "topic",
    }
}

/// `kind seq` of each event ("message 1", "edited 2", …), for compact
/// assertions on a room's log.
pub fn kinds(events: &[parley_protocol::RoomEvent]) -> Vec<String> {
    events
        .iter()
        .map(|e| format!("{} {}", event_kind(e), e.seq()))
        .collect()
}

/// `n` independent handles on one fresh SQLite file (like `n` nodes), with
/// `pool` connections each; the file lives as long as the `TempDir`.
pub async fn sqlite_stores(n: usize, pool: u32) -> (TempDir, Vec<StoreHandle>) {
    let dir = TempDir::new().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("store.db").display());
    let mut stores = Vec::new();
    for _ in 0..n {
        stores.push(open_store(&url, pool).await);
    }
    (dir, stores)
}

/// `n` independent handles on a fresh PostgreSQL server (like `n` nodes),
/// with `pool` connections each; the server stops when the `Postgres` is
/// dropped.
pub async fn postgres_stores(n: usize, pool: u32) -> (services::Postgres, Vec<StoreHandle>) {
    let pg = tokio::task::spawn_blocking(services::Postgres::start)
        .await
        .expect("postgres task");
    let mut stores = Vec::new();
    for _ in 0..n {
        stores.push(open_store(&pg.url(), pool).await);
    }
    (pg, stores)
}

/// Two handles of [`sqlite_stores`], with 4 connections each.
pub async fn sqlite_pair() -> (TempDir, StoreHandle, StoreHandle) {
    let (dir, stores) = sqlite_stores(2, 4).await;
    let (a, b) = two(stores);
    (dir, a, b)
}

/// Two handles of [`postgres_stores`], with 8 connections each.
pub async fn postgres_pair() -> (services::Postgres, StoreHandle, StoreHandle) {
    let (pg, stores) = postgres_stores(2, 8).await;
    let (a, b) = two(stores);
    (pg, a, b)
}

/// A handle on a store, as a node holds it.
pub type StoreHandle = std::sync::Arc<dyn parley_server::store::Store>;

fn two(stores: Vec<StoreHandle>) -> (StoreHandle, StoreHandle) {
    let [a, b] = <[StoreHandle; 2]>::try_from(stores)
        .ok()
        .expect("two handles");
    (a, b)
}

async fn open_store(url: &str, pool: u32) -> StoreHandle {
    parley_server::store::open(url, pool)
        .await
        .expect("store opens")
}
