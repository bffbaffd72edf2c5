//! Ephemeral events (typing, presence) under floods: faults other chat
//! servers shipped (issue 12, fault 5), as minimal inputs against a real node.

#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

use std::time::Duration;

use parley_client::Connection;
use parley_client::protocol::{PresenceState, ServerFrame};
use parley_testkit::TestNode;

const WAIT: Duration = Duration::from_secs(5);

/// Reads what reached `conn` until it is quiet for `quiet`: (typing pushes,
/// presence pushes of `user`, the last presence state of `user`). Panics if
/// the connection was closed (e.g. 4408).
async fn drain_ephemeral(
    conn: &mut Connection,
    user: &str,
    quiet: Duration,
) -> (usize, usize, Option<PresenceState>) {
    let (mut typing, mut presence, mut last) = (0, 0, None);
    loop {
        match conn.recv_timeout(quiet).await {
            Ok(ServerFrame::Typing { .. }) => typing += 1,
            Ok(ServerFrame::Presence { user: u, state, .. }) if u == user => {
                presence += 1;
                last = Some(state);
            }
            Ok(_) => {}
            Err(e) if e.close_code().is_some() => panic!("the reader was closed: {e}"),
            Err(_) => return (typing, presence, last),
        }
    }
}

/// Fault 5: `typing` in a tight loop used to fan out every frame, and a
/// member that did not read for that moment overflowed its queue (4408).
/// Now one typing push per user per room per second reaches the room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_typing_flood_reaches_others_once_a_second_and_closes_nobody() {
    let node = TestNode::start_with(|c| c.outbound_queue = 32).await;
    let mut bob = node.connect("bob").await;
    bob.join("general", None).await.unwrap();
    let mut mallory = node.connect("mallory").await;
    mallory.join("general", None).await.unwrap();
    // bob does not read while 5,000 typing frames arrive (his queue holds 32).
    for _ in 0..5_000 {
        mallory
            .send_text(r#"{"type":"typing","room":"general"}"#)
            .await
            .unwrap();
    }
    mallory.ping().await.unwrap(); // every frame before it was handled
    let (typing, _, _) = drain_ephemeral(&mut bob, "mallory", Duration::from_millis(1500)).await;
    assert!(
        (1..=3).contains(&typing),
        "{typing} typing pushes reached bob; the throttle allows one per second"
    );
    // bob is still connected and served.
    bob.ping().await.unwrap();
}

/// Fault 5, presence: join/leave churn made one presence push per change.
/// Now at most one per user per room per second goes out, and the last
/// state is always delivered (here: left).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_leave_churn_is_throttled_and_ends_in_the_right_state() {
    let node = TestNode::start_with(|c| c.outbound_queue = 32).await;
    let mut bob = node.connect("bob").await;
    bob.join("general", None).await.unwrap();
    let mut carol = node.connect("carol").await;
    for _ in 0..200 {
        carol.join("general", None).await.unwrap();
        carol.leave("general").await.unwrap();
    }
    let (_, presence, last) = drain_ephemeral(&mut bob, "carol", Duration::from_millis(2500)).await;
    assert!(
        (1..=8).contains(&presence),
        "{presence} presence pushes for 400 changes; the throttle allows about one per second"
    );
    assert_eq!(
        last,
        Some(PresenceState::Left),
        "the final state is delivered"
    );
    bob.ping().await.unwrap();
    let _ = WAIT;
}
