//! Waiting for a condition instead of sleeping a fixed time: poll it, a
//! little less often as time passes (10 ms, doubling up to 100 ms), until it
//! holds or the time is up.
//!
//! [`eventually`] panics when the time is up, naming what it waited for;
//! [`poll_until`] returns `None` instead, for callers with a fallback or a
//! more telling panic message of their own. [`eventually_blocking`] and
//! [`poll_until_blocking`] are the same for synchronous code (e.g. the
//! services, which start in `spawn_blocking`).

use std::future::Future;
use std::time::{Duration, Instant};

const FIRST_INTERVAL: Duration = Duration::from_millis(10);
const MAX_INTERVAL: Duration = Duration::from_millis(100);

fn next_interval(interval: Duration) -> Duration {
    (interval * 2).min(MAX_INTERVAL)
}

/// Calls `check` until its future gives `Some`, and returns that value;
/// panics if that takes longer than `timeout` (an attempt still running at
/// the deadline is abandoned). `what` completes "timed out … waiting for ".
///
/// ```ignore
/// eventually("the node to reconnect to Redis", WAIT, || async {
///     let connected = metric(&node.http(), "parley_bus_connected").await;
///     (connected == Some(1.0)).then_some(())
/// })
/// .await;
/// ```
///
/// `check` is a closure returning a future rather than an `async` closure:
/// the compiler cannot (yet) prove the futures of an `AsyncFnMut` bound
/// `Send`, which a helper used inside `tokio::spawn` needs. So the future may
/// borrow what the closure borrows, but not the closure itself: state that
/// an attempt changes goes in a `Mutex`, or is changed before the future.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    match poll_until(timeout, check).await {
        Some(value) => value,
        None => panic!("timed out after {timeout:?} waiting for {what}"),
    }
}

/// Calls `check` until its future gives `Some`, and returns that value;
/// `None` if `timeout` passed first (an attempt still running at the
/// deadline is abandoned). `check` runs at least once.
pub async fn poll_until<T, F, Fut>(timeout: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let mut interval = FIRST_INTERVAL;
    loop {
        match tokio::time::timeout_at(deadline, check()).await {
            Ok(Some(value)) => return Some(value),
            Ok(None) => {}
            Err(_elapsed) => return None,
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return None;
        }
        tokio::time::sleep_until((now + interval).min(deadline)).await;
        interval = next_interval(interval);
    }
}

/// [`eventually`] for synchronous code: blocks the thread between attempts.
/// An attempt cannot be interrupted, so one that started before the
/// deadline may end after it.
pub fn eventually_blocking<T>(
    what: &str,
    timeout: Duration,
    check: impl FnMut() -> Option<T>,
) -> T {
    match poll_until_blocking(timeout, check) {
        Some(value) => value,
        None => panic!("timed out after {timeout:?} waiting for {what}"),
    }
}

/// [`poll_until`] for synchronous code: blocks the thread between attempts.
pub fn poll_until_blocking<T>(
    timeout: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> Option<T> {
    let deadline = Instant::now() + timeout;
    let mut interval = FIRST_INTERVAL;
    loop {
        if let Some(value) = check() {
            return Some(value);
        }
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        std::thread::sleep(interval.min(deadline - now));
        interval = next_interval(interval);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn returns_the_first_value_that_holds() {
        let mut calls = 0;
        let got = eventually("the third call", Duration::from_secs(5), || {
            calls += 1;
            std::future::ready((calls == 3).then_some(calls * 10))
        })
        .await;
        assert_eq!((got, calls), (30, 3));
    }

    #[tokio::test]
    #[should_panic(expected = "timed out after 50ms waiting for something that never holds")]
    async fn panics_naming_what_and_the_timeout() {
        eventually(
            "something that never holds",
            Duration::from_millis(50),
            || async { None::<()> },
        )
        .await;
    }

    #[tokio::test]
    async fn abandons_an_attempt_still_running_at_the_deadline() {
        let started = Instant::now();
        let got = poll_until(
            Duration::from_millis(50),
            std::future::pending::<Option<()>>,
        )
        .await;
        assert_eq!(got, None);
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn blocking_variant_polls_and_times_out() {
        let mut calls = 0;
        assert_eq!(
            poll_until_blocking(Duration::from_secs(5), || {
                calls += 1;
                (calls == 2).then_some("done")
            }),
            Some("done")
        );
        assert_eq!(
            poll_until_blocking(Duration::from_millis(30), || None::<()>),
            None
        );
        let r = std::panic::catch_unwind(|| {
            eventually_blocking("never", Duration::from_millis(20), || None::<()>)
        });
        let message = r.unwrap_err();
        let message = message
            .downcast_ref::<String>()
            .expect("a formatted panic message");
        assert_eq!(message, "timed out after 20ms waiting for never");
    }
}
