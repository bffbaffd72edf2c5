//! Search (protocol 1.1 §4): the store's index on both backends — current
//! text only, whole words, the caller's rooms only, paged newest first,
//! upgraded stores indexed — and the endpoint's rules on a real node.

#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

use std::collections::HashSet;
use std::sync::Arc;

use parley_client::http;
use parley_server::store::search::{SearchPage, SearchQuery};
use parley_server::store::{Change, NewMessage, Store, StoreError};
use parley_testkit::services::Postgres;
use parley_testkit::{TestNode, token};

fn msg(room: &str, from: &str, text: &str) -> NewMessage {
    NewMessage {
        room: room.into(),
        from: from.into(),
        text: text.into(),
        ts_ms: parley_protocol::time::now_ms(),
        ..Default::default()
    }
}

fn change(room: &str, from: &str, change: Change, text: &str) -> NewMessage {
    NewMessage {
        change,
        ..msg(room, from, text)
    }
}

async fn search(
    store: &Arc<dyn Store>,
    user: &str,
    q: &str,
    room: Option<&str>,
    before: Option<&str>,
    limit: u32,
) -> Result<SearchPage, StoreError> {
    store
        .search(&SearchQuery {
            user_key: user,
            q,
            room,
            before,
            limit,
            admin: false,
        })
        .await
}

/// (room, seq) of every hit of one page of 100.
async fn found(store: &Arc<dyn Store>, user: &str, q: &str) -> Vec<(String, u64)> {
    let page = search(store, user, q, None, None, 100).await.unwrap();
    assert_eq!(page.next, None, "one page holds it all");
    page.hits.into_iter().map(|h| (h.room, h.seq)).collect()
}

fn at(room: &str, seq: u64) -> (String, u64) {
    (room.to_string(), seq)
}

/// The rules of §4 in the store; `b` is a second handle (another node),
/// which must see the index the first one's writes changed.
async fn search_suite(a: Arc<dyn Store>, b: Arc<dyn Store>) {
    // One append each: results come newest first, in commit order.
    for m in [
        msg("ops", "alice", "Deploy on Friday"),      // ops 1
        msg("ops", "bob", "deployment checklist"),    // ops 2
        msg("dev", "carol", "who broke the deploy?"), // dev 1
        msg("dm:alice:bob", "bob", "deploy secrets are in the vault"), // dm 1
        msg("dm:carol:dave", "dave", "deploy the private thing"), // dm 1
        msg("dev", "dave", "the café is open, don't deploy"), // dev 2
        // A legacy DM spelling nobody may read (kept out of reach by the
        // accounts migration): it passes SQL's bounds for dave, not the rule.
        msg("dm:Bob:dave", "bob", "deploy from the old days"),
    ] {
        a.append_batch(&[m]).await.unwrap();
    }

    // Whole words, any case, newest first, over the caller's rooms only.
    assert_eq!(
        found(&b, "alice", "DEPLOY").await,
        vec![
            at("dev", 2),
            at("dm:alice:bob", 1),
            at("dev", 1),
            at("ops", 1)
        ]
    );
    assert_eq!(
        found(&b, "dave", "deploy").await,
        vec![
            at("dev", 2),
            at("dm:carol:dave", 1),
            at("dev", 1),
            at("ops", 1)
        ]
    );
    assert_eq!(found(&b, "alice", "deployment").await, vec![at("ops", 2)]);
    assert_eq!(found(&b, "alice", "depl").await, vec![], "no prefixes");
    // Every word must match.
    assert_eq!(
        found(&b, "alice", "deploy friday").await,
        vec![at("ops", 1)]
    );
    assert_eq!(found(&b, "alice", "café").await, vec![at("dev", 2)]);
    assert_eq!(found(&b, "alice", "cafe").await, vec![], "accents count");
    // What a user types is never query syntax, and no word finds nothing.
    for q in [
        "\"",
        "deploy\"",
        "NEAR(deploy",
        "deploy*",
        "-deploy",
        "deploy OR x",
        "!!!",
        "a:b",
    ] {
        search(&b, "alice", q, None, None, 10)
            .await
            .unwrap_or_else(|e| panic!("{q:?}: {e}"));
    }
    assert!(found(&b, "alice", "!!!").await.is_empty());

    // Room filter.
    let page = search(&b, "alice", "deploy", Some("dev"), None, 10)
        .await
        .unwrap();
    let hit = &page.hits[1];
    assert_eq!(
        (hit.room.as_str(), hit.seq, hit.from.as_str()),
        ("dev", 1, "carol")
    );
    assert_eq!(hit.text, "who broke the deploy?");
    assert_eq!(page.hits.len(), 2);

    // An edit re-indexes the message (and its own event row is not a
    // result); a delete takes it out; other events are never found.
    let out = a
        .append_batch(&[
            change(
                "ops",
                "alice",
                Change::Edit { target: 1 },
                "Release on Monday",
            ),
            change(
                "dev",
                "carol",
                Change::Delete {
                    target: 1,
                    moderator: false,
                },
                "",
            ),
            change(
                "ops",
                "bob",
                Change::React {
                    target: 1,
                    emoji: "👍".into(),
                    on: true,
                },
                "",
            ),
            change("ops", "bob", Change::Reply { reply_to: 1 }, "monday works"),
        ])
        .await
        .unwrap();
    assert!(out.iter().all(|o| o.message().is_some()), "{out:?}");
    assert_eq!(found(&b, "alice", "friday").await, vec![]);
    assert_eq!(found(&b, "alice", "release").await, vec![at("ops", 1)]);
    assert_eq!(
        found(&b, "alice", "monday").await,
        vec![at("ops", 5), at("ops", 1)]
    );
    assert_eq!(found(&b, "alice", "broke").await, vec![], "deleted");
    let page = search(&b, "alice", "release", None, None, 10)
        .await
        .unwrap();
    assert_eq!(page.hits[0].text, "Release on Monday", "the current text");
    assert_eq!(page.hits[0].from, "alice");

    // Pages: newest first, each result once, the cursor continues.
    let batch: Vec<NewMessage> = (0..25)
        .map(|i| msg("paged", "bob", &format!("needle number {i}")))
        .collect();
    a.append_batch(&batch).await.unwrap();
    let mut seen = Vec::new();
    let mut before: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = search(&b, "alice", "needle", None, before.as_deref(), 10)
            .await
            .unwrap();
        pages += 1;
        seen.extend(page.hits.iter().map(|h| h.seq));
        match page.next {
            Some(next) => before = Some(next),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, (1..=25).rev().collect::<Vec<u64>>());
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 25);

    for bad in ["", "nonsense", "r-1", "k1.2.", "k1.0.general", "12"] {
        let err = search(&b, "alice", "needle", None, Some(bad), 10).await;
        assert!(
            matches!(err, Err(StoreError::Invalid(_))),
            "{bad:?}: {err:?}"
        );
    }
}

async fn sqlite() -> (tempfile::TempDir, String) {
    let dir = tempfile::TempDir::new().unwrap();
    let url = format!("sqlite://{}", dir.path().join("store.db").display());
    (dir, url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_store_searches_current_text() {
    let (_dir, url) = sqlite().await;
    let a = parley_server::store::open(&url, 4).await.unwrap();
    let b = parley_server::store::open(&url, 4).await.unwrap();
    search_suite(a, b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_store_searches_current_text() {
    let pg = tokio::task::spawn_blocking(Postgres::start).await.unwrap();
    let a = parley_server::store::open(&pg.url(), 8).await.unwrap();
    let b = parley_server::store::open(&pg.url(), 8).await.unwrap();
    search_suite(a, b).await;
}

/// Messages stored before the search migration are found after it: the
/// migration indexes what is there (and skips what is deleted).
async fn upgraded_store_is_indexed(url: &str, drop_index: impl AsyncFnOnce()) {
    let store = parley_server::store::open(url, 4).await.unwrap();
    store
        .append_batch(&[
            msg("old", "alice", "ancient wisdom"),
            msg("old", "bob", "ancient secret"),
            change(
                "old",
                "bob",
                Change::Delete {
                    target: 2,
                    moderator: false,
                },
                "",
            ),
        ])
        .await
        .unwrap();
    drop(store);
    drop_index().await;
    let store = parley_server::store::open(url, 4).await.unwrap();
    assert_eq!(found(&store, "carol", "ancient").await, vec![at("old", 1)]);
    store
        .append_batch(&[msg("old", "carol", "ancient news")])
        .await
        .unwrap();
    assert_eq!(
        found(&store, "carol", "ancient").await,
        vec![at("old", 4), at("old", 1)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_upgrade_indexes_stored_messages() {
    let (_dir, url) = sqlite().await;
    let u = url.clone();
    upgraded_store_is_indexed(&url, async move || {
        use sqlx::Connection;
        let mut c = sqlx::SqliteConnection::connect(&u).await.unwrap();
        sqlx::raw_sql(
            "DROP TRIGGER search_on_insert; DROP TRIGGER search_on_update; \
             DROP TRIGGER search_on_delete; DROP TABLE search_text; DROP TABLE search_keys; \
             DELETE FROM parley_migrations WHERE version = 6;",
        )
        .execute(&mut c)
        .await
        .unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_upgrade_indexes_stored_messages() {
    let pg = tokio::task::spawn_blocking(Postgres::start).await.unwrap();
    upgraded_store_is_indexed(&pg.url(), async || {
        pg.psql(
            "ALTER TABLE messages DROP COLUMN search; \
             DELETE FROM parley_migrations WHERE version = 7;",
        );
    })
    .await;
}

/// The status and error code of a raw `GET path` as `user`.
async fn status(node: &TestNode, user: Option<&str>, path: &str) -> (u16, String) {
    let token = user.map(token);
    let resp = http::request(&node.http(), "GET", path, token.as_deref(), None)
        .await
        .unwrap();
    let code = resp
        .json::<serde_json::Value>()
        .ok()
        .and_then(|v| v["error"]["code"].as_str().map(str::to_string))
        .unwrap_or_default();
    (resp.status, code)
}

/// The endpoint on a node: what it answers, and every way to ask wrong.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_endpoint_keeps_the_rules() {
    let node = TestNode::start().await;
    let mut alice = node.connect("alice").await;
    alice.join("general", None).await.unwrap();
    alice.send("general", "lunch at noon?", None).await.unwrap();
    let ack = alice.send("general", "typo lunhc", None).await.unwrap();
    alice
        .edit("general", ack.seq, "lunch for everyone", None)
        .await
        .unwrap();
    alice
        .send_dm("bob", "secret lunch plans", None)
        .await
        .unwrap();

    let base = node.http();
    let page = http::search(&base, &token("bob"), "LUNCH", None, None, None)
        .await
        .unwrap();
    let rooms: Vec<(&str, u64, &str)> = page
        .results
        .iter()
        .map(|r| (r.room.as_str(), r.seq, r.text.as_str()))
        .collect();
    assert_eq!(
        rooms,
        vec![
            ("dm:alice:bob", 1, "secret lunch plans"),
            ("general", 2, "lunch for everyone"),
            ("general", 1, "lunch at noon?"),
        ]
    );
    assert_eq!(page.next, None);
    let ts = &page.results[0].ts;
    assert!(ts.len() == 24 && ts.ends_with('Z'), "RFC 3339, ms: {ts}");
    // Carol is not in the DM; a small page has a cursor that continues.
    let page = http::search(&base, &token("carol"), "lunch", None, Some(1), None)
        .await
        .unwrap();
    assert_eq!(
        (page.results[0].room.as_str(), page.results[0].seq),
        ("general", 2)
    );
    let next = page.next.expect("a second page");
    let page = http::search(&base, &token("carol"), "lunch", None, Some(1), Some(&next))
        .await
        .unwrap();
    assert_eq!(page.results[0].seq, 1);
    assert_eq!(page.next, None);
    assert!(
        http::search(&base, &token("alice"), "lunhc", None, None, None)
            .await
            .unwrap()
            .results
            .is_empty(),
        "the text before the edit is not found"
    );

    let long = "a".repeat(257);
    let cases: Vec<(Option<&str>, String, u16, &str)> = vec![
        (None, "/api/search?q=lunch".into(), 401, "unauthorized"),
        (Some("carol"), "/api/search".into(), 400, "bad_request"),
        (Some("carol"), "/api/search?q=".into(), 400, "bad_request"),
        (
            Some("carol"),
            "/api/search?q=%20%20".into(),
            400,
            "bad_request",
        ),
        (
            Some("carol"),
            format!("/api/search?q={long}"),
            400,
            "bad_request",
        ),
        (
            Some("carol"),
            "/api/search?q=a%00b".into(),
            400,
            "bad_request",
        ),
        (
            Some("carol"),
            "/api/search?q=lunch&limit=0".into(),
            400,
            "bad_request",
        ),
        (
            Some("carol"),
            "/api/search?q=lunch&limit=x".into(),
            400,
            "bad_request",
        ),
        (
            Some("carol"),
            "/api/search?q=lunch&before=zzz".into(),
            400,
            "bad_request",
        ),
        (
            Some("carol"),
            "/api/search?q=lunch&room=Bad%20Room".into(),
            400,
            "bad_request",
        ),
        (
            Some("carol"),
            "/api/search?q=lunch&room=nowhere".into(),
            404,
            "not_found",
        ),
        (
            Some("carol"),
            "/api/search?q=lunch&room=dm%3Aalice%3Abob".into(),
            403,
            "forbidden",
        ),
    ];
    for (user, path, want, code) in cases {
        assert_eq!(
            status(&node, user, &path).await,
            (want, code.to_string()),
            "{path}"
        );
    }
    // 256 bytes is allowed; the room filter works over REST too.
    let q = "é".repeat(128);
    assert_eq!(
        status(
            &node,
            Some("carol"),
            &format!("/api/search?q={}", http::encode_path(&q))
        )
        .await
        .0,
        200
    );
    let page = http::search(
        &base,
        &token("bob"),
        "lunch",
        Some("dm:alice:bob"),
        None,
        None,
    )
    .await
    .unwrap();
    assert_eq!(page.results.len(), 1);
}
