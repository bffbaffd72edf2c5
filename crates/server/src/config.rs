//! Node configuration: every flag is also a `PARLEY_*` environment variable
//! (12-factor). `parley serve --help` prints this table.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;

use clap::{Args, ValueEnum};

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line: what log shippers (Vector, Fluent Bit) parse.
    Json,
    /// Human-readable, for a terminal.
    Text,
}

/// Configuration of one node.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Address to listen on (HTTP, WebSocket, health, metrics).
    #[arg(long, env = "PARLEY_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,

    /// A separate address for `/metrics` (e.g. `0.0.0.0:9090`), so that it
    /// need not be public: when set, the main listener answers 404 there.
    #[arg(long, env = "PARLEY_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    /// Storage: `sqlite://FILE` (embedded default) or `postgres://…` (fleet).
    #[arg(
        long,
        env = "PARLEY_DATABASE_URL",
        default_value = "sqlite://parley.db"
    )]
    pub database_url: String,

    /// File holding the database URL (a Kubernetes Secret mounted as a
    /// file), instead of `PARLEY_DATABASE_URL`. For TLS to PostgreSQL give
    /// `?sslmode=verify-full&sslrootcert=/path/ca.pem` in the URL.
    #[arg(
        long,
        env = "PARLEY_DATABASE_URL_FILE",
        conflicts_with = "database_url"
    )]
    pub database_url_file: Option<PathBuf>,

    /// Most connections to PostgreSQL held by this node.
    #[arg(long, env = "PARLEY_DATABASE_POOL", default_value_t = 16)]
    pub database_pool: u32,

    /// Redis for node-to-node fan-out (`redis://host:6379`). Unset: a single
    /// node with an in-process bus.
    #[arg(long, env = "PARLEY_REDIS_URL")]
    pub redis_url: Option<String>,

    /// File holding the Redis URL, instead of `PARLEY_REDIS_URL`.
    #[arg(long, env = "PARLEY_REDIS_URL_FILE", conflicts_with = "redis_url")]
    pub redis_url_file: Option<PathBuf>,

    /// PEM file of the certificate authorities that sign the Redis server's
    /// certificate (`rediss://` URLs). Unset: the public web roots, as
    /// managed Redis services (ElastiCache, Upstash, …) use.
    #[arg(long, env = "PARLEY_REDIS_CA_FILE")]
    pub redis_ca_file: Option<PathBuf>,

    /// HS256 secret that signs and verifies tokens. Required for a fleet;
    /// a single node without one generates one and keeps it in its database.
    #[arg(long, env = "PARLEY_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// File holding the JWT secret, instead of `PARLEY_JWT_SECRET`.
    #[arg(long, env = "PARLEY_JWT_SECRET_FILE", conflicts_with = "jwt_secret")]
    pub jwt_secret_file: Option<PathBuf>,

    /// Name of this node in `welcome.node`, logs and metrics (default: the host name,
    /// which is the pod name in Kubernetes).
    #[arg(long, env = "PARLEY_NODE_ID")]
    pub node_id: Option<String>,

    /// Log filter, in `tracing` syntax (e.g. `info,parley_server=debug`).
    #[arg(long, env = "PARLEY_LOG", default_value = "info")]
    pub log: String,

    /// Log format.
    #[arg(long, env = "PARLEY_LOG_FORMAT", value_enum, default_value = "json")]
    pub log_format: LogFormat,

    /// Lifetime of tokens issued by register/login.
    #[arg(long, env = "PARLEY_TOKEN_TTL", default_value = "24h", value_parser = parse_duration)]
    pub token_ttl: Duration,

    /// Clock skew tolerated on a token's `exp` and `nbf` (whole seconds). A
    /// WebSocket session is closed with 4401 once its token's `exp` plus
    /// this has passed.
    #[arg(long, env = "PARLEY_TOKEN_LEEWAY", default_value = "30s", value_parser = parse_duration)]
    pub token_leeway: Duration,

    /// Largest message text, in bytes of UTF-8 (larger: `too_large`).
    #[arg(long, env = "PARLEY_MAX_TEXT_BYTES", default_value_t = 4096)]
    pub max_text_bytes: usize,

    /// Largest WebSocket frame, in bytes (larger: close 1009).
    #[arg(long, env = "PARLEY_MAX_FRAME_BYTES", default_value_t = 16 * 1024)]
    pub max_frame_bytes: usize,

    /// Sustained sends per second allowed to one user on one node.
    #[arg(long, env = "PARLEY_SEND_RATE", default_value_t = 10.0)]
    pub send_rate: f64,

    /// Burst of sends allowed to one user above the sustained rate.
    #[arg(long, env = "PARLEY_SEND_BURST", default_value_t = 30)]
    pub send_burst: u32,

    /// Rejected sends in a row after which the connection is closed with 4429.
    #[arg(long, env = "PARLEY_RATE_LIMIT_STRIKES", default_value_t = 20)]
    pub rate_limit_strikes: u32,

    /// Frames waiting to be written to one connection; overflow closes it with 4408.
    #[arg(long, env = "PARLEY_OUTBOUND_QUEUE", default_value_t = 1024)]
    pub outbound_queue: usize,

    /// Messages in `joined.history` when the client gives no `since`, and
    /// the default page size of `history`.
    #[arg(long, env = "PARLEY_HISTORY_PAGE", default_value_t = 50)]
    pub history_page: u32,

    /// Largest page of history a client may ask for (also caps `since` joins).
    #[arg(long, env = "PARLEY_HISTORY_MAX", default_value_t = 500)]
    pub history_max: u32,

    /// Interval of server pings; a peer silent for two intervals is closed.
    #[arg(long, env = "PARLEY_HEARTBEAT", default_value = "25s", value_parser = parse_duration)]
    pub heartbeat: Duration,

    /// Time a new connection has to authenticate (hello) before close 4401.
    #[arg(long, env = "PARLEY_HELLO_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub hello_timeout: Duration,

    /// Drain: how long after SIGTERM the node still accepts new connections
    /// (while /readyz already says 503 and the load balancer takes it out).
    #[arg(long, env = "PARLEY_DRAIN_GRACE", default_value = "3s", value_parser = parse_duration)]
    pub drain_grace: Duration,

    /// Drain: sessions are closed with 1001 spread over this window, so that
    /// clients do not reconnect all at once.
    #[arg(long, env = "PARLEY_DRAIN_SPREAD", default_value = "5s", value_parser = parse_duration)]
    pub drain_spread: Duration,

    /// Drain: hard limit for the whole drain (keep below Kubernetes'
    /// terminationGracePeriodSeconds).
    #[arg(long, env = "PARLEY_DRAIN_TIMEOUT", default_value = "20s", value_parser = parse_duration)]
    pub drain_timeout: Duration,

    /// Most appends committed in one transaction (group commit).
    #[arg(long, env = "PARLEY_COMMIT_BATCH", default_value_t = 512)]
    pub commit_batch: usize,

    /// Anti-entropy period of a clustered node: how often its live rooms are
    /// checked against the store (one query) for messages the bus lost; a lost
    /// message is delivered within one period (plus a query).
    #[arg(long, env = "PARLEY_ANTI_ENTROPY", default_value = "3s", value_parser = parse_duration)]
    pub anti_entropy: Duration,

    /// How often a node reads the revocations that changed (logouts,
    /// password changes, disabled users: one query per node). A revoked
    /// token is refused everywhere, and its connections closed, within this
    /// plus a query.
    #[arg(long, env = "PARLEY_REVOCATION_REFRESH", default_value = "1s", value_parser = parse_duration)]
    pub revocation_refresh: Duration,

    /// Login throttling window: after 5 failed logins for one username, or
    /// 50 from one client address, within it, further attempts get 429
    /// until it has passed.
    #[arg(long, env = "PARLEY_LOGIN_WINDOW", default_value = "15m", value_parser = parse_duration)]
    pub login_window: Duration,

    /// Take a login's client address from the last `X-Forwarded-For` entry
    /// (what the proxy in front of the nodes appended) instead of the TCP
    /// peer. Only behind a proxy that sets it: otherwise clients choose it.
    #[arg(
        long,
        env = "PARLEY_TRUST_PROXY",
        default_value = "false",
        value_parser = clap::builder::BoolishValueParser::new(),
        action = clap::ArgAction::Set
    )]
    pub trust_proxy: bool,

    /// Keys of the server API (`/api/server/...`, for the application's
    /// backend), comma-separated so that a key can be rotated: every listed
    /// key is accepted. Unset or empty: the server API answers 404.
    #[arg(
        long,
        env = "PARLEY_API_KEYS",
        hide_env_values = true,
        value_delimiter = ','
    )]
    pub api_keys: Vec<String>,

    /// File holding the server API keys, one per line (or comma-separated),
    /// instead of `PARLEY_API_KEYS`.
    #[arg(long, env = "PARLEY_API_KEYS_FILE", conflicts_with = "api_keys")]
    pub api_keys_file: Option<PathBuf>,
}

impl Config {
    /// A configuration with every default, for embedding. `PARLEY_*`
    /// environment variables are honoured, as in `parley serve`; tests use
    /// [`Config::try_from_args_ignoring_env`] instead.
    pub fn with_defaults() -> Self {
        #[derive(clap::Parser)]
        struct Wrapper {
            #[command(flatten)]
            config: Config,
        }
        // Parsing an empty argument list cannot fail: every field has a default.
        // Environment variables are deliberately honoured, as in `parley serve`.
        <Wrapper as clap::Parser>::parse_from(["parley"]).config
    }

    /// Parses `args` (the first is the program name) as `parley serve` does,
    /// except that environment variables are ignored: only `args` and the
    /// defaults count. For tests, which must not depend on the `PARLEY_*`
    /// variables of whoever runs them.
    pub fn try_from_args_ignoring_env<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let command = <Config as Args>::augment_args(clap::Command::new("parley"))
            .mut_args(|arg| arg.env(None::<&'static str>));
        let matches = command.try_get_matches_from(args)?;
        <Config as clap::FromArgMatches>::from_arg_matches(&matches)
    }

    /// Replaces each `*_FILE` setting by the secret in its file (and clears
    /// it, so a second call does nothing). Kubernetes mounts Secrets as
    /// files; keeping secrets out of the environment keeps them out of
    /// `/proc/PID/environ` and of crash reports that dump it.
    pub fn read_secret_files(&mut self) -> anyhow::Result<()> {
        if let Some(path) = self.database_url_file.take() {
            self.database_url = read_secret_file(&path)?;
        }
        if let Some(path) = self.redis_url_file.take() {
            self.redis_url = Some(read_secret_file(&path)?);
        }
        if let Some(path) = self.jwt_secret_file.take() {
            self.jwt_secret = Some(read_secret_file(&path)?);
        }
        if let Some(path) = self.api_keys_file.take() {
            self.api_keys = split_keys(&read_secret_file(&path)?);
        }
        Ok(())
    }

    /// The node id: the configured one, else the host name, else "parley".
    pub fn node_id(&self) -> String {
        if let Some(id) = &self.node_id {
            return id.clone();
        }
        std::env::var("HOSTNAME")
            .ok()
            .filter(|h| !h.is_empty())
            .or_else(|| {
                std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .ok()
                    .map(|h| h.trim().to_string())
                    .filter(|h| !h.is_empty())
            })
            .unwrap_or_else(|| "parley".to_string())
    }
}

/// The secret in `path`: its text without surrounding whitespace (files
/// written with `echo` end in a newline that is not part of the secret).
pub fn read_secret_file(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the secret file {}", path.display()))?;
    let secret = text.trim();
    anyhow::ensure!(
        !secret.is_empty(),
        "the secret file {} is empty",
        path.display()
    );
    Ok(secret.to_string())
}

/// API keys from a file: one per line or comma-separated; blank ones dropped.
fn split_keys(text: &str) -> Vec<String> {
    text.split([',', '\n'])
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(str::to_string)
        .collect()
}

/// Parses durations written the way operators write them: `250ms`, `5s`,
/// `2m`, `1h`, `1d`; a bare number is seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (try 500ms, 5s, 2m)"))?;
    let seconds = match unit.trim() {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        "d" => value * 86_400.0,
        other => {
            return Err(format!(
                "unknown duration unit {other:?} (use ms, s, m, h or d)"
            ));
        }
    };
    if !seconds.is_finite() || seconds < 0.0 {
        return Err(format!("{text:?} is not a valid duration"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("5"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    /// Parses `args` after the program name, whatever the environment says.
    fn parse(args: &[&str]) -> Config {
        Config::try_from_args_ignoring_env(std::iter::once("parley").chain(args.iter().copied()))
            .expect("arguments parse")
    }

    #[test]
    fn defaults_match_the_protocol() {
        let c = parse(&[]);
        assert_eq!(c.max_text_bytes, 4096);
        assert_eq!(c.max_frame_bytes, 16 * 1024);
        assert_eq!(c.hello_timeout, Duration::from_secs(10));
        assert_eq!(c.heartbeat, Duration::from_secs(25));
        assert_eq!(c.token_leeway, Duration::from_secs(30));
        assert_eq!(c.listen, SocketAddr::from(([0, 0, 0, 0], 8080)));
        assert_eq!(c.redis_url, None);
    }

    #[test]
    fn arguments_override_the_defaults() {
        let c = parse(&[
            "--max-text-bytes",
            "7",
            "--listen",
            "1.2.3.4:1",
            "--heartbeat",
            "250ms",
            "--redis-url",
            "redis://cache:6379",
        ]);
        assert_eq!(c.max_text_bytes, 7);
        assert_eq!(c.listen, SocketAddr::from(([1, 2, 3, 4], 1)));
        assert_eq!(c.heartbeat, Duration::from_millis(250));
        assert_eq!(c.redis_url.as_deref(), Some("redis://cache:6379"));
        let e = Config::try_from_args_ignoring_env(["parley", "--heartbeat", "soon"]).unwrap_err();
        assert!(e.to_string().contains("not a duration"), "{e}");
    }

    /// Runs the two tests above again in a child process (this test binary)
    /// whose environment sets the variables they parse: they must not notice.
    #[test]
    fn the_environment_is_ignored() {
        if std::env::var_os("PARLEY_CONFIG_TEST_CHILD").is_some() {
            return;
        }
        let out = std::process::Command::new(std::env::current_exe().expect("test binary"))
            .args(["--exact", "--test-threads", "1"])
            .args([
                "config::tests::defaults_match_the_protocol",
                "config::tests::arguments_override_the_defaults",
            ])
            .env("PARLEY_CONFIG_TEST_CHILD", "1")
            .env("PARLEY_MAX_TEXT_BYTES", "9")
            .env("PARLEY_LISTEN", "10.0.0.1:9")
            .env("PARLEY_HEARTBEAT", "not a duration")
            .env("PARLEY_REDIS_URL", "redis://from-the-environment:1")
            .output()
            .expect("the test binary runs");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("2 passed"),
            "{}\n{stdout}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn api_keys_are_a_comma_separated_list() {
        assert!(parse(&[]).api_keys.is_empty(), "unset: no server API");
        let c = parse(&["--api-keys", "old-key,new-key"]);
        assert_eq!(c.api_keys, ["old-key", "new-key"]);
    }

    #[test]
    fn secrets_are_read_from_files() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path.display().to_string()
        };
        let db = write("db", "postgres://parley:pw@db/parley\n");
        let redis = write("redis", "rediss://cache:6380");
        let jwt = write("jwt", "  a-long-secret-from-a-kubernetes-secret \n");
        let keys = write("keys", "old-key\nnew-key, third\n\n");
        let mut c = parse(&[
            "--database-url-file",
            &db,
            "--redis-url-file",
            &redis,
            "--jwt-secret-file",
            &jwt,
            "--api-keys-file",
            &keys,
        ]);
        c.read_secret_files().unwrap();
        assert_eq!(c.database_url, "postgres://parley:pw@db/parley");
        assert_eq!(c.redis_url.as_deref(), Some("rediss://cache:6380"));
        assert_eq!(
            c.jwt_secret.as_deref(),
            Some("a-long-secret-from-a-kubernetes-secret")
        );
        assert_eq!(c.api_keys, ["old-key", "new-key", "third"]);
        // Read once: the file settings are cleared, a second call keeps the values.
        assert!(c.jwt_secret_file.is_none());
        c.read_secret_files().unwrap();
        assert_eq!(c.api_keys.len(), 3);
    }

    #[test]
    fn a_missing_or_empty_secret_file_is_an_error_that_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").unwrap();
        let mut c = parse(&["--jwt-secret-file", &empty.display().to_string()]);
        let e = c.read_secret_files().unwrap_err().to_string();
        assert!(e.contains("is empty") && e.contains("empty"), "{e}");
        let missing = dir.path().join("nope");
        let mut c = parse(&["--redis-url-file", &missing.display().to_string()]);
        let e = format!("{:#}", c.read_secret_files().unwrap_err());
        assert!(e.contains("nope"), "{e}");
    }

    #[test]
    fn a_secret_and_its_file_conflict() {
        for (value, file) in [
            ("--jwt-secret", "--jwt-secret-file"),
            ("--database-url", "--database-url-file"),
            ("--redis-url", "--redis-url-file"),
            ("--api-keys", "--api-keys-file"),
        ] {
            let e =
                Config::try_from_args_ignoring_env(["parley", value, "x", file, "/f"]).unwrap_err();
            assert!(
                e.to_string().contains("cannot be used with"),
                "{value}: {e}"
            );
        }
        // The database URL's default does not count as given.
        parse(&["--database-url-file", "/f"]);
    }

    /// The README's configuration table lists every variable `parley serve`
    /// reads, so an operator never has to read the source to find one.
    #[test]
    fn the_readme_lists_every_variable() {
        let readme = include_str!("../../../README.md");
        let command = <Config as Args>::augment_args(clap::Command::new("parley"));
        let missing: Vec<String> = command
            .get_arguments()
            .filter_map(|arg| arg.get_env())
            .map(|env| env.to_string_lossy().into_owned())
            .filter(|env| !readme.contains(&format!("`{env}`")))
            .collect();
        assert!(missing.is_empty(), "not in README.md's table: {missing:?}");
    }
}
