//! Real infrastructure for fleet tests and the local fleet launcher:
//! `redis-server`, PostgreSQL and nginx from Debian's packages, each started
//! on a free 127.0.0.1 port in its own temp dir and stopped on drop. Nothing
//! here uses a service that happens to be running on the machine.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use crate::free_port;
use crate::tls::TestCerts;
use crate::wait::{eventually_blocking, poll_until_blocking};

/// Waits until `what` accepts TCP connections on `port`; panics after `limit`.
/// How many ports a server tries before a test gives up.
const PORT_ATTEMPTS: usize = 5;

fn wait_for_port(what: &str, port: u16, limit: Duration) {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    eventually_blocking(&format!("{what} to listen on {addr}"), limit, || {
        TcpStream::connect_timeout(&addr, Duration::from_millis(200))
            .ok()
            .map(drop)
    });
}

fn find_binary(name: &str, extra_dirs: &[PathBuf]) -> PathBuf {
    for dir in extra_dirs {
        let p = dir.join(name);
        if p.exists() {
            return p;
        }
    }
    if let Ok(path) = std::env::var("PATH") {
        for dir in std::env::split_paths(&path) {
            let p = dir.join(name);
            if p.exists() {
                return p;
            }
        }
    }
    panic!("{name} not found: install it (scripts/test installs the Debian packages it needs)");
}

/// The processes whose parent is `pid` (`/proc/N/stat`, field 4).
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|child| {
            std::fs::read_to_string(format!("/proc/{child}/stat"))
                .ok()
                .and_then(|stat| {
                    // After the command name, which may hold spaces: ") S PPID".
                    let after = &stat[stat.rfind(')')? + 1..];
                    after.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(pid)
        })
        .collect()
}

fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// A `redis-server` on a free port, without persistence.
pub struct Redis {
    child: Option<Child>,
    pub port: u16,
    dir: TempDir,
    /// With TLS: its certificate, key and CA; the plain port is off.
    tls: Option<[PathBuf; 3]>,
}

impl Redis {
    pub fn start() -> Redis {
        Self::start_with(None)
    }

    /// A Redis that speaks only TLS, with the server certificate of `certs`
    /// (as managed Redis services do); clients need no certificate.
    pub fn start_tls(certs: &TestCerts) -> Redis {
        Self::start_with(Some([certs.server_cert(), certs.server_key(), certs.ca()]))
    }

    fn start_with(tls: Option<[PathBuf; 3]>) -> Redis {
        let dir = TempDir::new().expect("temp dir");
        let mut redis = Redis {
            child: None,
            port: free_port(),
            dir,
            tls,
        };
        redis.launch();
        redis
    }

    /// Starts the server on a port nobody else took: [`free_port`] only
    /// says the port was free a moment ago, and another test process may
    /// bind it first — then this server exits, and the one listening there
    /// is someone else's. Tries another port then.
    fn launch(&mut self) {
        for _ in 0..PORT_ATTEMPTS {
            if self.run() {
                return;
            }
            self.port = free_port();
        }
        panic!("redis-server could not get a port of its own in {PORT_ATTEMPTS} attempts");
    }

    /// Starts the server on `self.port`; false if it exited (its port was taken).
    fn run(&mut self) -> bool {
        let bin = find_binary("redis-server", &[]);
        let port = self.port.to_string();
        let mut cmd = Command::new(bin);
        match &self.tls {
            None => cmd.args(["--port", &port]),
            Some([cert, key, ca]) => cmd
                .args([
                    "--port",
                    "0",
                    "--tls-port",
                    &port,
                    "--tls-auth-clients",
                    "no",
                ])
                .arg("--tls-cert-file")
                .arg(cert)
                .arg("--tls-key-file")
                .arg(key)
                .arg("--tls-ca-cert-file")
                .arg(ca),
        };
        let child = cmd
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        wait_for_port("redis-server", self.port, Duration::from_secs(10));
        // A server that could not bind exits at once: look again after the
        // port answered (it may be another process's).
        std::thread::sleep(Duration::from_millis(200));
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://127.0.0.1:{}/", self.port)
    }

    /// Kills the server (like a crash: SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill(&mut c);
        }
    }

    /// Starts it again on the same port.
    pub fn restart(&mut self) {
        self.kill();
        assert!(
            self.run(),
            "redis-server could not take its port {} back",
            self.port
        );
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A PostgreSQL cluster created with `initdb` in a temp dir, on a free port.
/// As root it runs as the `postgres` user (PostgreSQL refuses root).
pub struct Postgres {
    child: Option<Child>,
    pub port: u16,
    dir: TempDir,
    bin: PathBuf,
    as_postgres: bool,
    /// With TLS (`ssl=on`): its certificate and key, inside `dir`.
    tls: Option<(PathBuf, PathBuf)>,
    /// More `-c name=value` settings of this server (replication).
    settings: Vec<String>,
}

fn pg_bin_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.path().join("bin"))
                .collect()
        })
        .unwrap_or_default();
    dirs.sort();
    dirs.reverse();
    dirs
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

impl Postgres {
    pub fn start() -> Postgres {
        Self::start_with(None, Vec::new())
    }

    /// A PostgreSQL with `ssl=on` and the server certificate of `certs`;
    /// clients choose with `sslmode` whether to use and verify it.
    pub fn start_tls(certs: &TestCerts) -> Postgres {
        Self::start_with(Some(certs), Vec::new())
    }

    fn start_with(certs: Option<&TestCerts>, settings: Vec<String>) -> Postgres {
        let dirs = pg_bin_dirs();
        let initdb = find_binary("initdb", &dirs);
        let bin = initdb.parent().expect("bin dir").to_path_buf();
        let dir = TempDir::new().expect("temp dir");
        // PostgreSQL reads its key as its own user, and refuses a key others may read.
        let tls = certs.map(|c| c.install_server_pair(dir.path()));
        let as_postgres = is_root();
        if as_postgres {
            let status = Command::new("chown")
                .arg("-R")
                .arg("postgres:postgres")
                .arg(dir.path())
                .status();
            assert!(
                status.map(|s| s.success()).unwrap_or(false),
                "chown of the PostgreSQL dir failed"
            );
        }
        let data = dir.path().join("data");
        let out = Self::command(as_postgres, &initdb)
            .arg("-D")
            .arg(&data)
            .args(["-U", "parley", "--auth", "trust", "--no-sync", "-E", "UTF8"])
            .output()
            .expect("initdb runs");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut pg = Postgres {
            child: None,
            port: free_port(),
            dir,
            bin,
            as_postgres,
            tls,
            settings,
        };
        pg.launch();
        pg
    }

    /// A primary that acks a commit only once a synchronous standby has it
    /// (`synchronous_standby_names = '*'`, `synchronous_commit = on`): start
    /// its standby with [`Postgres::start_standby_of`]. Until one is
    /// connected, commits wait.
    pub fn start_primary() -> Postgres {
        Self::start_with(
            None,
            vec![
                "synchronous_standby_names=*".into(),
                "synchronous_commit=on".into(),
                // initdb's defaults already allow it (wal_level=replica,
                // walsenders, replication from 127.0.0.1 trusted); said
                // here because the failover tests depend on them.
                "wal_level=replica".into(),
                "max_wal_senders=5".into(),
            ],
        )
    }

    /// A streaming standby of `primary` (`pg_basebackup -R`: a copy of its
    /// data plus `standby.signal` and `primary_conninfo`), running and
    /// confirmed by the primary as its synchronous standby. It has no
    /// synchronous standby of its own: promoted, it writes alone.
    pub fn start_standby_of(primary: &Postgres) -> Postgres {
        let dir = TempDir::new().expect("temp dir");
        if primary.as_postgres {
            let status = Command::new("chown")
                .arg("postgres:postgres")
                .arg(dir.path())
                .status();
            assert!(
                status.map(|s| s.success()).unwrap_or(false),
                "chown of the standby's dir failed"
            );
        }
        let data = dir.path().join("data");
        let out = Self::command(primary.as_postgres, &primary.bin.join("pg_basebackup"))
            .args(["-h", "127.0.0.1", "-p", &primary.port.to_string()])
            .args(["-U", "parley", "-R", "-X", "stream", "--no-sync", "-D"])
            .arg(&data)
            .output()
            .expect("pg_basebackup runs");
        assert!(
            out.status.success(),
            "pg_basebackup failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut standby = Postgres {
            child: None,
            port: free_port(),
            dir,
            bin: primary.bin.clone(),
            as_postgres: primary.as_postgres,
            tls: None,
            // The walreceiver's application_name (what the primary's
            // synchronous_standby_names and pg_stat_replication show).
            settings: vec!["cluster_name=standby".into()],
        };
        standby.launch();
        eventually_blocking(
            "the standby to be the primary's synchronous standby",
            Duration::from_secs(20),
            || (primary.psql("SELECT sync_state FROM pg_stat_replication") == "sync").then_some(()),
        );
        standby
    }

    /// Whether the server is a standby (in recovery).
    pub fn in_recovery(&self) -> bool {
        self.psql("SELECT pg_is_in_recovery()") == "t"
    }

    /// Promotes a standby to primary (`pg_ctl promote`, waiting until it
    /// accepts writes), as an operator or Patroni/CloudNativePG does.
    pub fn promote(&self) {
        let data = self.dir.path().join("data");
        let out = Self::command(self.as_postgres, &self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(&data)
            .args(["-w", "-t", "30", "promote"])
            .output()
            .expect("pg_ctl promote runs");
        assert!(
            out.status.success(),
            "pg_ctl promote failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Kills the server like a lost machine: SIGKILL to the postmaster and
    /// to every process it started (no shutdown checkpoint, connections
    /// reset). [`Postgres::restart`] starts it again (crash recovery).
    pub fn kill9(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        self.signal_all("-KILL");
        kill(&mut child);
        // The ports and the socket are free once the processes are gone.
        let addr: SocketAddr = ([127, 0, 0, 1], self.port).into();
        let _ = poll_until_blocking(Duration::from_secs(10), || {
            TcpStream::connect_timeout(&addr, Duration::from_millis(100))
                .is_err()
                .then_some(())
        });
    }

    /// Stops the server and its processes with SIGSTOP, as a network
    /// partition looks to its clients: connections stay open, nothing
    /// answers, no reset. [`Postgres::kill9`] (or drop) ends it.
    pub fn freeze(&self) {
        self.signal_all("-STOP");
    }

    /// Sends `signal` (a `kill` flag) to the postmaster and its children
    /// (by id, from /proc, so none is missed).
    fn signal_all(&self, signal: &str) {
        let pid_file = self.dir.path().join("data").join("postmaster.pid");
        let postmaster = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|s| s.lines().next().and_then(|l| l.trim().parse::<u32>().ok()));
        if let Some(pid) = postmaster {
            let children = children_of(pid);
            let _ = Command::new("kill")
                .arg(signal)
                .arg(pid.to_string())
                .args(children.iter().map(u32::to_string))
                .status();
        }
    }

    fn command(as_postgres: bool, bin: &Path) -> Command {
        if as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(bin);
            c
        } else {
            Command::new(bin)
        }
    }

    /// Starts the server on a port nobody else took (see [`Redis::launch`]):
    /// ready only once the server answering on the port says it serves
    /// this data directory.
    fn launch(&mut self) {
        for _ in 0..PORT_ATTEMPTS {
            if self.run() {
                return;
            }
            self.port = free_port();
        }
        panic!("postgres could not get a port of its own in {PORT_ATTEMPTS} attempts");
    }

    /// Starts the server on `self.port`; false if it exited (its port was
    /// taken) or another server answers there.
    fn run(&mut self) -> bool {
        let data = self.dir.path().join("data");
        let child = Self::command(self.as_postgres, &self.bin.join("postgres"))
            .arg("-D")
            .arg(&data)
            .args([
                "-p",
                &self.port.to_string(),
                "-c",
                "listen_addresses=127.0.0.1",
            ])
            .arg("-c")
            .arg(format!(
                "unix_socket_directories={}",
                self.dir.path().display()
            ))
            .args(["-c", "max_connections=200", "-c", "shared_buffers=64MB"])
            .args(self.settings.iter().flat_map(|s| ["-c", s.as_str()]))
            .args(self.tls.iter().flat_map(|(cert, key)| {
                [
                    "-c".to_string(),
                    "ssl=on".to_string(),
                    "-c".to_string(),
                    format!("ssl_cert_file={}", cert.display()),
                    "-c".to_string(),
                    format!("ssl_key_file={}", key.display()),
                ]
            }))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("postgres starts");
        self.child = Some(child);
        // Accepting TCP is not accepting queries: wait for the database,
        // and for it to be this one.
        let psql = self.bin.join("psql");
        let (port, mine) = (self.port.to_string(), data.display().to_string());
        let child = self.child.as_mut().expect("just started");
        eventually_blocking(
            "postgres to accept queries",
            Duration::from_secs(20),
            || {
                if child.try_wait().ok().flatten().is_some() {
                    return Some(false);
                }
                let out = Command::new(&psql)
                    .args(["-h", "127.0.0.1", "-p", &port, "-U", "parley"])
                    .args(["-d", "postgres", "-tAc", "SHOW data_directory"])
                    .stderr(Stdio::null())
                    .output()
                    .ok()
                    .filter(|o| o.status.success())?;
                Some(String::from_utf8_lossy(&out.stdout).trim() == mine)
            },
        )
    }

    /// Runs `sql` with `psql` as the superuser; returns its unaligned output.
    pub fn psql(&self, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", "parley", "-d", "postgres", "-tAc", sql])
            .output()
            .expect("psql runs");
        assert!(
            out.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// URL of database `postgres` (creating others is the caller's business).
    pub fn url(&self) -> String {
        format!("postgres://parley@127.0.0.1:{}/postgres", self.port)
    }

    /// Stops the server (fast shutdown: clients are disconnected at once).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // `runuser` does not forward signals: ask pg_ctl, which signals
            // the postmaster by the pid in its data directory.
            let data = self.dir.path().join("data");
            let _ = Self::command(self.as_postgres, &self.bin.join("pg_ctl"))
                .arg("-D")
                .arg(&data)
                .args(["-m", "fast", "-w", "-t", "20", "stop"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            // pg_ctl waits itself; give the postmaster (or `runuser`) a
            // moment more to exit, else kill it.
            let exited =
                poll_until_blocking(Duration::from_secs(10), || c.try_wait().ok().flatten());
            if exited.is_none() {
                kill(&mut c);
            }
        }
    }

    /// Starts it again on the same port and data.
    pub fn restart(&mut self) {
        self.stop();
        assert!(
            self.run(),
            "postgres could not take its port {} back",
            self.port
        );
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if self.child.is_some() {
            // A frozen server (a test that failed before its kill9) would
            // hold its stop signal for ever.
            self.signal_all("-CONT");
        }
        self.stop();
    }
}

/// nginx in front of several nodes: `ip_hash` stands in for the Kubernetes
/// Service's ClientIP affinity; WebSocket upgrades pass through.
pub struct Nginx {
    child: Option<Child>,
    pub port: u16,
    _dir: TempDir,
}

/// The nginx configuration for a set of upstream nodes.
pub fn nginx_conf(port: u16, upstreams: &[SocketAddr], dir: &Path) -> String {
    let servers: String = upstreams
        .iter()
        .map(|a| format!("        server {a} max_fails=1 fail_timeout=2s;\n"))
        .collect();
    format!(
        r#"daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 20000; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}
    upstream parley {{
        ip_hash;
{servers}    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://parley;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_read_timeout 3600s;
            proxy_send_timeout 3600s;
            proxy_next_upstream error timeout http_502 http_503;
        }}
    }}
}}
"#,
        dir = dir.display()
    )
}

impl Nginx {
    pub fn start(upstreams: &[SocketAddr]) -> Nginx {
        let dir = TempDir::new().expect("temp dir");
        let port = free_port();
        let conf = dir.path().join("nginx.conf");
        std::fs::write(&conf, nginx_conf(port, upstreams, dir.path())).expect("write nginx.conf");
        let bin = find_binary("nginx", &[PathBuf::from("/usr/sbin")]);
        let child = Command::new(bin)
            .arg("-c")
            .arg(&conf)
            .arg("-p")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("nginx starts");
        // Owned before waiting, so that a panic below stops it too.
        let nginx = Nginx {
            child: Some(child),
            port,
            _dir: dir,
        };
        wait_for_port("nginx", port, Duration::from_secs(10));
        nginx
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/ws", self.port)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill(&mut c);
        }
    }
}
