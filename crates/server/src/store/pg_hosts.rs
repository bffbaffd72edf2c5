//! Several PostgreSQL servers behind one `PARLEY_DATABASE_URL`: which one a
//! node writes to, and finding the new one after a failover.
//!
//! sqlx's `PgConnectOptions` takes one host; libpq's URLs may name several
//! (`postgres://u@h1:5432,h2:5432/parley?target_session_attrs=read-write`),
//! and with `target_session_attrs` a client connects to the first one that
//! is writable. This module gives the node's pool the same behaviour:
//!
//! - [`PgHosts::parse`] turns such a URL into one set of connect options per
//!   host (pure, unit-tested); a URL with one host and no
//!   `target_session_attrs` is handed to sqlx unchanged.
//! - [`connect`] opens the pool on the first writable host. Every new pool
//!   connection is checked (`after_connect`): a server in recovery (a
//!   standby) or with `default_transaction_read_only` is refused, so a write
//!   never lands on — nor waits for — a read-only server.
//! - With several hosts, a watcher task ([`HostWatch`]) keeps one connection
//!   to the current host and checks it twice a second; when it is lost or
//!   turns read-only, the watcher tries the hosts in order until one is
//!   writable and points the pool's future connections at it. Connections
//!   made before the switch are closed when next taken from the pool, and a
//!   commit still running on the old host is abandoned
//!   ([`HostWatch::switched`]). Until then the pool's connects fail and
//!   appends answer `unavailable` (nothing is stored, nothing is acked):
//!   the failover window.
//!
//! This module must not replicate, promote or fence anything: that is
//! PostgreSQL's (synchronous streaming replication) and its operator's
//! (Patroni, CloudNativePG, a person with `pg_ctl promote`). It only finds
//! the server that is writable now. Read-only targets (`read-only`,
//! `standby`, `prefer-standby`) are refused: a node writes.

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Connection};
use tokio::task::JoinHandle;

use super::{StoreError, classify, redact};

/// How often the watcher checks that the current host is still writable.
const CHECK_EVERY: Duration = Duration::from_millis(500);
/// Longest wait for one host to answer a connect or the check.
const HOST_TIMEOUT: Duration = Duration::from_secs(2);

/// What a server must be for the node to use it (libpq's
/// `target_session_attrs`, the values that allow writing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Whatever server answers first (libpq's default).
    Any,
    /// Not in recovery and not `default_transaction_read_only`.
    ReadWrite,
    /// Not in recovery.
    Primary,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PgHostsError {
    #[error("bad PostgreSQL URL: {0}")]
    BadUrl(String),
    #[error("no writable PostgreSQL server among {hosts}: {last}")]
    NoWritableHost { hosts: String, last: String },
}

impl From<PgHostsError> for StoreError {
    fn from(e: PgHostsError) -> StoreError {
        match e {
            PgHostsError::BadUrl(_) => StoreError::Internal(e.to_string()),
            // A failover in progress, or every server down: retry later.
            PgHostsError::NoWritableHost { .. } => StoreError::Unavailable(e.to_string()),
        }
    }
}

/// The servers of one database URL, in the order they are tried.
#[derive(Debug, Clone)]
pub struct PgHosts {
    /// `host:port` of each server, for logs.
    pub names: Vec<String>,
    /// Connect options of each server (same user, database and parameters).
    pub options: Vec<PgConnectOptions>,
    pub target: Target,
}

/// One `host[:port]` of the authority, IPv6 in brackets.
fn split_host(item: &str) -> Result<(String, Option<u16>), PgHostsError> {
    let bad = |why: &str| PgHostsError::BadUrl(format!("host {item:?}: {why}"));
    let (host, port) = if let Some(v6) = item.strip_prefix('[') {
        let (addr, after) = v6.split_once(']').ok_or_else(|| bad("unclosed ["))?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or_else(|| bad("junk after ]"))?),
        };
        (format!("[{addr}]"), port)
    } else {
        match item.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (item.to_string(), None),
        }
    };
    if host.is_empty() || host == "[]" {
        return Err(bad("empty host (list every host by name or address)"));
    }
    let port = port
        .map(|p| p.parse::<u16>().map_err(|_| bad("bad port")))
        .transpose()?;
    Ok((host, port))
}

impl PgHosts {
    /// Parses a libpq-style URL with one or several comma-separated hosts
    /// in its authority. `target_session_attrs` defaults to `any` for one
    /// host (as libpq) and to `read-write` for several: a node that lands
    /// on a standby could not write.
    pub fn parse(url: &str) -> Result<PgHosts, PgHostsError> {
        let (scheme, rest) = url
            .split_once("://")
            .filter(|(s, _)| matches!(*s, "postgres" | "postgresql"))
            .ok_or_else(|| PgHostsError::BadUrl("expected postgres://…".into()))?;
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        let (userinfo, hostlist) = match authority.rfind('@') {
            Some(at) => authority.split_at(at + 1),
            None => ("", authority),
        };
        let (path, query) = match tail.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (tail, None),
        };
        let mut target = None;
        let mut kept = Vec::new();
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "target_session_attrs" => {
                    target = Some(match value {
                        "any" => Target::Any,
                        "read-write" => Target::ReadWrite,
                        "primary" => Target::Primary,
                        "read-only" | "standby" | "prefer-standby" => {
                            return Err(PgHostsError::BadUrl(format!(
                                "target_session_attrs={value}: a node writes; use read-write"
                            )));
                        }
                        other => {
                            return Err(PgHostsError::BadUrl(format!(
                                "unknown target_session_attrs {other:?}"
                            )));
                        }
                    })
                }
                // libpq may list hosts and ports here too; one place is enough.
                "host" | "hostaddr" | "port" if hostlist.contains(',') => {
                    return Err(PgHostsError::BadUrl(format!(
                        "{key}= with several hosts: give each host:port in the URL's host part"
                    )));
                }
                _ => kept.push(pair),
            }
        }
        if !hostlist.contains(',') && target.is_none() {
            // One host, libpq's defaults: sqlx reads the URL as it always did
            // (unix sockets, `host=` in the query, …).
            let options = PgConnectOptions::from_str(url)
                .map_err(|e| PgHostsError::BadUrl(format!("{}: {e}", redact(url))))?
                .application_name("parley");
            return Ok(PgHosts {
                names: vec![if hostlist.is_empty() {
                    "default".into()
                } else {
                    hostlist.to_string()
                }],
                options: vec![options],
                target: Target::Any,
            });
        }
        let query = if kept.is_empty() {
            String::new()
        } else {
            format!("?{}", kept.join("&"))
        };
        let mut names = Vec::new();
        let mut options = Vec::new();
        for item in hostlist.split(',') {
            let (host, port) = split_host(item)?;
            let name = format!("{host}:{}", port.unwrap_or(5432));
            let port = port.map(|p| format!(":{p}")).unwrap_or_default();
            let one = format!("{scheme}://{userinfo}{host}{port}{path}{query}");
            let mut parsed = PgConnectOptions::from_str(&one)
                .map_err(|e| PgHostsError::BadUrl(format!("{}: {e}", redact(&one))))?
                .application_name("parley");
            // sqlx keeps an IPv6 literal's brackets in the host, and then
            // cannot resolve it: hand it the bare address.
            if let Some(addr) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
                parsed = parsed.host(addr);
            }
            names.push(name);
            options.push(parsed);
        }
        let target = target.unwrap_or(if options.len() > 1 {
            Target::ReadWrite
        } else {
            Target::Any
        });
        Ok(PgHosts {
            names,
            options,
            target,
        })
    }

    fn all_names(&self) -> String {
        self.names.join(",")
    }
}

/// Whether the server behind `conn` is what `target` asks for.
/// For `Any`, a round trip: the watcher must still notice a server that is
/// gone.
pub async fn acceptable(conn: &mut PgConnection, target: Target) -> Result<bool, sqlx::Error> {
    if target == Target::Any {
        conn.ping().await?;
        return Ok(true);
    }
    let (in_recovery, read_only): (bool, String) =
        sqlx::query_as("SELECT pg_is_in_recovery(), current_setting('transaction_read_only')")
            .fetch_one(&mut *conn)
            .await?;
    Ok(!in_recovery && (target == Target::Primary || read_only != "on"))
}

/// Connects to host `i` and checks it; the connection if it fits.
async fn try_host(hosts: &PgHosts, i: usize) -> Result<PgConnection, String> {
    let attempt = async {
        let mut conn = hosts.options[i]
            .connect()
            .await
            .map_err(|e| e.to_string())?;
        match acceptable(&mut conn, hosts.target).await {
            Ok(true) => Ok(conn),
            Ok(false) => {
                let _ = conn.close().await;
                Err("read-only (a standby, or default_transaction_read_only)".to_string())
            }
            Err(e) => Err(e.to_string()),
        }
    };
    tokio::time::timeout(HOST_TIMEOUT, attempt)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {HOST_TIMEOUT:?}")))
}

/// The first host, in URL order, that is writable (per the target), with a
/// connection to it.
pub async fn find_writable(hosts: &PgHosts) -> Result<(usize, PgConnection), PgHostsError> {
    let mut last = String::from("no host");
    for i in 0..hosts.options.len() {
        match try_host(hosts, i).await {
            Ok(conn) => return Ok((i, conn)),
            Err(e) => last = format!("{}: {e}", hosts.names[i]),
        }
    }
    Err(PgHostsError::NoWritableHost {
        hosts: hosts.all_names(),
        last,
    })
}

/// Milliseconds from `base` to the last switch of host: pool connections
/// older than that go to the previous host and are closed.
struct Switched {
    base: Instant,
    at_ms: AtomicU64,
    /// Counts the switches, for [`HostWatch::switched`].
    count: tokio::sync::watch::Sender<u64>,
}

impl Switched {
    fn stale(&self, age: Duration) -> bool {
        let at_ms = self.at_ms.load(Ordering::Relaxed);
        if at_ms == 0 {
            return false;
        }
        let created = Instant::now().checked_sub(age).unwrap_or(self.base);
        let switched = self.base + Duration::from_millis(at_ms);
        created < switched
    }

    fn now(&self) {
        let ms = self.base.elapsed().as_millis().max(1) as u64;
        self.at_ms.store(ms, Ordering::Relaxed);
        self.count.send_modify(|n| *n += 1);
    }
}

/// The watcher of a several-host URL; stops with the store.
pub struct HostWatch {
    task: JoinHandle<()>,
    switches: tokio::sync::watch::Receiver<u64>,
}

impl HostWatch {
    /// Resolves at the next switch of host after the first poll; never if
    /// none comes. A write racing it runs on the host that was given up:
    /// lost, partitioned or read-only — its caller stops waiting for it
    /// (see [`super::postgres`]'s `append_batch`).
    pub fn switched(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut switches = self.switches.clone();
        async move {
            switches.borrow_and_update();
            if switches.changed().await.is_err() {
                // The watcher is gone (the store is closing): no switch comes.
                std::future::pending::<()>().await;
            }
        }
    }
}

impl Drop for HostWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Opens the pool `pool` configures on the writable server of `url` (see
/// the module docs); with several hosts, also the watcher that follows a
/// failover.
pub async fn connect(
    url: &str,
    pool: PgPoolOptions,
) -> Result<(PgPool, Option<HostWatch>), StoreError> {
    let hosts = PgHosts::parse(url)?;
    let target = hosts.target;
    let (count, switches) = tokio::sync::watch::channel(0);
    let switched = Arc::new(Switched {
        base: Instant::now(),
        at_ms: AtomicU64::new(0),
        count,
    });
    let pool = pool
        .after_connect(move |conn, _| {
            Box::pin(async move {
                if acceptable(conn, target).await? {
                    Ok(())
                } else {
                    // Refused like an unreachable server: the pool tries
                    // again (with the watcher's next host) until its timeout.
                    Err(sqlx::Error::Io(std::io::Error::other(
                        "PostgreSQL server is read-only (a standby?)",
                    )))
                }
            })
        })
        .before_acquire({
            let switched = switched.clone();
            move |_, meta| {
                let fresh = !switched.stale(meta.age);
                Box::pin(async move { Ok(fresh) })
            }
        });
    if hosts.options.len() == 1 {
        let pool = pool
            .connect_with(hosts.options[0].clone())
            .await
            .map_err(classify)?;
        return Ok((pool, None));
    }
    let (current, conn) = find_writable(&hosts).await?;
    tracing::info!(host = %hosts.names[current], hosts = %hosts.all_names(), "PostgreSQL: writing to the first writable host");
    let pool = pool
        .connect_with(hosts.options[current].clone())
        .await
        .map_err(classify)?;
    let task = tokio::spawn(watch(pool.clone(), hosts, current, conn, switched));
    Ok((pool, Some(HostWatch { task, switches })))
}

/// Follows the writable host (see the module docs).
async fn watch(
    pool: PgPool,
    hosts: PgHosts,
    mut current: usize,
    conn: PgConnection,
    switched: Arc<Switched>,
) {
    let mut conn = Some(conn);
    let mut lost_at: Option<Instant> = None;
    loop {
        // Pacing, not waiting for something: the check runs twice a second.
        tokio::time::sleep(CHECK_EVERY).await;
        if pool.is_closed() {
            // The store shut down: nothing is left to point anywhere.
            return;
        }
        if let Some(c) = conn.as_mut() {
            let check = tokio::time::timeout(HOST_TIMEOUT, acceptable(c, hosts.target)).await;
            if matches!(check, Ok(Ok(true))) {
                continue;
            }
            tracing::warn!(host = %hosts.names[current], "PostgreSQL: lost the writable host; looking for the new one");
            conn = None;
            lost_at = Some(Instant::now());
        }
        match find_writable(&hosts).await {
            Ok((i, c)) => {
                conn = Some(c);
                if i != current {
                    pool.set_connect_options(hosts.options[i].clone());
                    switched.now();
                }
                let after = lost_at.take().map(|t| t.elapsed());
                tracing::warn!(host = %hosts.names[i], previous = %hosts.names[current], ?after, "PostgreSQL: writing to this host now");
                current = i;
            }
            Err(e) => tracing::debug!(error = %e, "PostgreSQL: no writable host yet"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(url: &str) -> PgHosts {
        PgHosts::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"))
    }

    #[test]
    fn one_host_keeps_libpq_defaults() {
        let h = hosts("postgres://parley:pw@db:5433/chat?sslmode=disable");
        assert_eq!(h.names, ["db:5433"]);
        assert_eq!(h.target, Target::Any);
        let o = &h.options[0];
        assert_eq!(
            (o.get_host(), o.get_port(), o.get_database()),
            ("db", 5433, Some("chat"))
        );
        assert_eq!(o.get_username(), "parley");
    }

    #[test]
    fn several_hosts_each_get_the_same_user_database_and_parameters() {
        let h = hosts(
            "postgresql://u:p%40ss@h1:5432,h2,[::1]:6000/parley?target_session_attrs=read-write&sslmode=prefer&application_name=x",
        );
        assert_eq!(h.names, ["h1:5432", "h2:5432", "[::1]:6000"]);
        assert_eq!(h.target, Target::ReadWrite);
        let got: Vec<(String, u16)> = h
            .options
            .iter()
            .map(|o| (o.get_host().to_string(), o.get_port()))
            .collect();
        assert_eq!(
            got,
            [
                ("h1".to_string(), 5432),
                ("h2".to_string(), 5432),
                // The bare address: with its brackets sqlx cannot resolve it.
                ("::1".to_string(), 6000)
            ]
        );
        for o in &h.options {
            assert_eq!(o.get_username(), "u");
            assert_eq!(o.get_database(), Some("parley"));
        }
    }

    #[test]
    fn several_hosts_default_to_read_write() {
        assert_eq!(hosts("postgres://a,b/db").target, Target::ReadWrite);
        assert_eq!(
            hosts("postgres://a,b/db?target_session_attrs=any").target,
            Target::Any
        );
        assert_eq!(
            hosts("postgres://a/db?target_session_attrs=primary").target,
            Target::Primary
        );
    }

    #[test]
    fn refuses_what_a_writing_node_cannot_use() {
        for url in [
            "postgres://a,b/db?target_session_attrs=read-only",
            "postgres://a,b/db?target_session_attrs=standby",
            "postgres://a,b/db?target_session_attrs=prefer-standby",
            "postgres://a,b/db?target_session_attrs=sometimes",
            "postgres://a,,b/db",
            "postgres://a:x,b/db",
            "postgres://a:99999/db",
            "postgres://[::1/db",
            "postgres://a,b/db?port=5432,5433",
            "mysql://a/db",
        ] {
            assert!(
                matches!(PgHosts::parse(url), Err(PgHostsError::BadUrl(_))),
                "{url} was accepted"
            );
        }
    }

    #[test]
    fn no_writable_host_is_unavailable_not_a_bad_url() {
        let e = PgHostsError::NoWritableHost {
            hosts: "a,b".into(),
            last: "refused".into(),
        };
        assert!(matches!(StoreError::from(e), StoreError::Unavailable(_)));
        let e = PgHostsError::BadUrl("x".into());
        assert!(matches!(StoreError::from(e), StoreError::Internal(_)));
    }

    #[test]
    fn connections_made_before_a_switch_are_stale() {
        let s = Switched {
            base: Instant::now() - Duration::from_secs(10),
            at_ms: AtomicU64::new(0),
            count: tokio::sync::watch::channel(0).0,
        };
        assert!(!s.stale(Duration::from_secs(5)), "no switch yet");
        s.now();
        assert!(s.stale(Duration::from_secs(1)), "made before the switch");
        assert!(!s.stale(Duration::ZERO), "made after it");
    }
}
