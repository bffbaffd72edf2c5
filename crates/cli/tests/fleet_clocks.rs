//! A fleet whose nodes disagree on the time (issue 12, fault 8): presence
//! must not depend on any node's wall clock. Nodes run under libfaketime
//! with their clocks 45 s behind and 90 s ahead of an honest one.

#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

use std::time::Duration;

use parley_testkit::{Fleet, connect, eventually, skewed_clock};

const BIN: &str = env!("CARGO_BIN_EXE_parley");

fn env<'a>(skew: &'a [(&'static str, String); 3]) -> Vec<(&'static str, &'a str)> {
    skew.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// The members a fresh connection of `user` on `url` is shown on joining.
async fn members_seen(url: &str, user: &str, room: &str) -> Vec<String> {
    let mut c = connect(url, user).await;
    let joined = c.join(room, None).await.unwrap();
    c.close().await;
    joined.members
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_lists_agree_across_skewed_clocks_and_a_dead_node_expires() {
    let mut fleet = Fleet::start(BIN, 1, &[]).await;
    let behind = skewed_clock("-45s");
    let ahead = skewed_clock("+90s");
    let slow = fleet.spawn_node_with(None, &env(&behind)).await;
    let fast = fleet.spawn_node_with(None, &env(&ahead)).await;
    let (honest_url, slow_url, fast_url) =
        (fleet.ws_urls()[0].clone(), slow.ws_url(), fast.ws_url());

    // One member on each node, staying.
    let mut alice = connect(&honest_url, "alice").await;
    alice.join("clocks", None).await.unwrap();
    let mut bob = connect(&slow_url, "bob").await;
    bob.join("clocks", None).await.unwrap();
    let mut carol = connect(&fast_url, "carol").await;
    carol.join("clocks", None).await.unwrap();

    // Whoever joins, on whichever node, is shown all three.
    for (url, who) in [
        (&honest_url, "dave"),
        (&slow_url, "erin"),
        (&fast_url, "frank"),
    ] {
        eventually(
            &format!("{who} (on a node with its own clock) to see alice, bob and carol"),
            Duration::from_secs(10),
            || async {
                let m = members_seen(url, who, "clocks").await;
                ["alice", "bob", "carol"]
                    .iter()
                    .all(|u| m.contains(&u.to_string()))
                    .then_some(())
            },
        )
        .await;
    }

    // The fast node dies without leaving: carol disappears within the
    // presence TTL (30 s) as counted by Redis, not by the dead node's clock
    // (which would have kept her listed 90 s longer).
    drop(carol);
    drop(fast); // SIGKILL: no leave is announced
    eventually(
        "carol (on the killed node) to leave the member list",
        Duration::from_secs(35),
        || async {
            let m = members_seen(&honest_url, "gina", "clocks").await;
            (!m.contains(&"carol".to_string())).then_some(())
        },
    )
    .await;
    let m = members_seen(&slow_url, "hank", "clocks").await;
    assert!(
        m.contains(&"alice".to_string()) && m.contains(&"bob".to_string()),
        "{m:?}"
    );
    drop((alice, bob, slow));
    fleet.nodes.clear();
}
