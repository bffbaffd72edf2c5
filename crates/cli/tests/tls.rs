//! TLS to PostgreSQL and Redis, as managed services require it, and
//! secrets read from files, as Kubernetes mounts them: real servers with
//! TLS on, a CA and certificates made for the test (`parley_testkit::tls`).

#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

use std::path::Path;
use std::time::Duration;

use parley_testkit::services::{Postgres, Redis};
use parley_testkit::tls::TestCerts;
use parley_testkit::{NodeProcess, SECRET, connect, eventually, metric, serve_refuses};

const BIN: &str = env!("CARGO_BIN_EXE_parley");
const WAIT: Duration = Duration::from_secs(10);
/// How long a node may take to give up on a refused certificate.
const REFUSAL: Duration = Duration::from_secs(30);

fn pg_url(pg: &Postgres, query: &str) -> String {
    format!("postgres://parley@127.0.0.1:{}/postgres?{query}", pg.port)
}

fn verify_full(pg: &Postgres, ca: &Path) -> String {
    pg_url(
        pg,
        &format!("sslmode=verify-full&sslrootcert={}", ca.display()),
    )
}

fn write_secret(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    // A trailing newline, as `echo … > file` and most editors leave.
    std::fs::write(&path, format!("{text}\n")).unwrap();
    path.display().to_string()
}

/// Two nodes whose database URL, Redis URL and JWT secret come from files,
/// with certificates verified against the test CA, serve a conversation
/// across nodes — and PostgreSQL confirms that their sessions are encrypted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_speaks_tls_to_postgres_and_redis_with_secrets_from_files() {
    let certs = TestCerts::generate();
    let pg = Postgres::start_tls(&certs);
    let redis = Redis::start_tls(&certs);
    assert!(redis.url().starts_with("rediss://"));
    let secrets = tempfile::tempdir().unwrap();
    let db = write_secret(
        secrets.path(),
        "database-url",
        &verify_full(&pg, &certs.ca()),
    );
    let bus = write_secret(secrets.path(), "redis-url", &redis.url());
    let jwt = write_secret(secrets.path(), "jwt-secret", SECRET);
    let ca = certs.ca().display().to_string();
    let env = [
        ("PARLEY_DATABASE_URL_FILE", db.as_str()),
        ("PARLEY_REDIS_URL_FILE", bus.as_str()),
        ("PARLEY_JWT_SECRET_FILE", jwt.as_str()),
        ("PARLEY_REDIS_CA_FILE", ca.as_str()),
        ("PARLEY_ANTI_ENTROPY", "1s"),
    ];
    let nodes = [
        NodeProcess::start(BIN, &env).await,
        NodeProcess::start(BIN, &env).await,
    ];
    for node in &nodes {
        eventually("the node's bus to connect over TLS", WAIT, || async {
            (metric(&node.http(), "parley_bus_connected").await == Some(1.0)).then_some(())
        })
        .await;
    }
    // Tokens signed with the test secret verify: the secret file was read.
    let mut alice = connect(&nodes[0].ws_url(), "alice").await;
    let mut bob = connect(&nodes[1].ws_url(), "bob").await;
    alice.join("tls", None).await.unwrap();
    bob.join("tls", None).await.unwrap();
    let ack = alice.send("tls", "over TLS", None).await.unwrap();
    let m = bob.next_message(WAIT).await.unwrap();
    assert_eq!((m.seq, m.text.as_str()), (ack.seq, "over TLS"));

    let sessions = |ssl: bool| {
        pg.psql(&format!(
            "SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) \
             WHERE application_name = 'parley' AND ssl = {ssl}"
        ))
    };
    assert_ne!(sessions(true), "0", "the nodes' sessions use TLS");
    assert_eq!(sessions(false), "0", "no node session is in clear");
}

/// A certificate the configured CA did not sign stops the node at start,
/// with an error that says so — for PostgreSQL and for Redis — while
/// `sslmode=require` (encrypt, do not verify) connects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_ca_is_refused_at_start_with_a_clear_error() {
    let certs = TestCerts::generate();
    let pg = Postgres::start_tls(&certs);
    let redis = Redis::start_tls(&certs);

    let url = verify_full(&pg, &certs.other_ca());
    let (code, stderr) = serve_refuses(BIN, &[("PARLEY_DATABASE_URL", &url)], REFUSAL).await;
    assert_ne!(code, Some(0));
    assert!(
        stderr.contains("opening the store") && stderr.contains("certificate"),
        "{stderr}"
    );

    let other_ca = certs.other_ca().display().to_string();
    let (code, stderr) = serve_refuses(
        BIN,
        &[
            ("PARLEY_REDIS_URL", &redis.url()),
            ("PARLEY_REDIS_CA_FILE", &other_ca),
        ],
        REFUSAL,
    )
    .await;
    assert_ne!(code, Some(0));
    assert!(
        stderr.contains("TLS handshake with Redis failed")
            && stderr.contains("PARLEY_REDIS_CA_FILE"),
        "{stderr}"
    );

    // A CA for a Redis spoken to in clear is a mistake, not a no-op.
    let plain = Redis::start();
    let (code, stderr) = serve_refuses(
        BIN,
        &[
            ("PARLEY_REDIS_URL", &plain.url()),
            ("PARLEY_REDIS_CA_FILE", &other_ca),
        ],
        REFUSAL,
    )
    .await;
    assert_ne!(code, Some(0));
    assert!(stderr.contains("not rediss://"), "{stderr}");

    // `require` encrypts without verifying: the node serves.
    let url = pg_url(&pg, "sslmode=require");
    let node = NodeProcess::start(BIN, &[("PARLEY_DATABASE_URL", &url)]).await;
    let mut carol = connect(&node.ws_url(), "carol").await;
    carol.join("require", None).await.unwrap();
    carol.send("require", "encrypted", None).await.unwrap();
}
