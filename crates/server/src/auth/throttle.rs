//! Login throttling (protocol-chat.md §5): after [`USER_LIMIT`] failed
//! logins for one username (case-folded) within the window, or
//! [`ADDR_LIMIT`] from one client address, further attempts are refused
//! with 429 and `Retry-After` until the window has passed the failures that
//! count; a successful login forgets the username's failures.
//!
//! The counters are rows in the store (`login_failures`), shared by every
//! node: an attempt first records itself, then counts the others — failed,
//! or still being checked on another node — so concurrent attempts cannot
//! slip past the limit together. An attempt refused here never checked a
//! password, so it deletes its row and does not count: the lock ends when
//! the window has passed, however often someone knocks.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use axum::http::HeaderMap;

use crate::error::ChatError;
use crate::store::{LoginAttempt, Store};

/// Failed logins for one username within the window before the next waits.
pub const USER_LIMIT: usize = 5;
/// Failed logins from one client address within the window before the next waits.
pub const ADDR_LIMIT: usize = 50;

/// An attempt that may go on and check the password; its row counts as a
/// failure unless [`Throttle::succeeded`] is called.
pub struct Attempt {
    pub id: i64,
}

/// Why an attempt may not go on.
#[derive(Debug)]
pub enum Refused {
    /// Throttled: retry after this many seconds.
    Throttled(u64),
    /// The store failed.
    Error(ChatError),
}

impl From<ChatError> for Refused {
    fn from(e: ChatError) -> Self {
        Refused::Error(e)
    }
}

/// Seconds until an attempt is allowed, given the times (ms, oldest first)
/// of the other attempts within the window that count against it; `None`:
/// allowed now.
pub fn wait_s(others: &[i64], limit: usize, window: Duration, now_ms: i64) -> Option<u64> {
    if others.len() < limit {
        return None;
    }
    // Allowed once no more than limit - 1 others are in the window: when
    // the (len - limit + 1)th oldest has left it.
    let window_ms = i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
    let leaves = others[others.len() - limit].saturating_add(window_ms);
    let ms = leaves.saturating_sub(now_ms).max(1);
    Some(u64::try_from(ms).unwrap_or(1).div_ceil(1000))
}

/// The retry delay of an attempt, if it is throttled.
pub fn verdict(attempt: &LoginAttempt, window: Duration, now_ms: i64) -> Option<u64> {
    let user = wait_s(&attempt.user, USER_LIMIT, window, now_ms);
    let addr = wait_s(&attempt.addr, ADDR_LIMIT, window, now_ms);
    user.max(addr)
}

/// Login throttling on the store.
pub struct Throttle<'a> {
    pub store: &'a dyn Store,
    pub window: Duration,
}

impl Throttle<'_> {
    /// Records an attempt for `user_key` from `addr`, or refuses it.
    pub async fn begin(&self, user_key: &str, addr: &str) -> Result<Attempt, Refused> {
        let now = parley_protocol::time::now_ms();
        let window_ms = i64::try_from(self.window.as_millis()).unwrap_or(i64::MAX);
        let attempt = self
            .store
            .login_attempt(user_key, addr, now, now.saturating_sub(window_ms))
            .await
            .map_err(ChatError::from)?;
        match verdict(&attempt, self.window, now) {
            None => Ok(Attempt { id: attempt.id }),
            Some(wait) => {
                self.store
                    .forget_login_attempt(attempt.id)
                    .await
                    .map_err(ChatError::from)?;
                metrics::counter!("parley_logins_throttled_total").increment(1);
                tracing::info!(user = user_key, addr, wait, "login throttled");
                Err(Refused::Throttled(wait))
            }
        }
    }

    /// The password was right: the user's failures are forgotten.
    pub async fn succeeded(&self, user_key: &str) -> Result<(), ChatError> {
        Ok(self.store.clear_login_failures(user_key).await?)
    }

    /// The attempt did not check a password after all: it does not count.
    pub async fn forget(&self, attempt: Attempt) -> Result<(), ChatError> {
        Ok(self.store.forget_login_attempt(attempt.id).await?)
    }
}

/// The client address a login attempt is counted against: the TCP peer, or,
/// with `trust_proxy`, the last address of `X-Forwarded-For` — the one the
/// proxy in front of the node appended (anything before it came from the
/// client and proves nothing).
pub fn client_addr(peer: Option<SocketAddr>, headers: &HeaderMap, trust_proxy: bool) -> String {
    if trust_proxy {
        let forwarded = headers
            .get_all("x-forwarded-for")
            .iter()
            .next_back()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .and_then(|v| v.trim().parse::<IpAddr>().ok());
        if let Some(ip) = forwarded {
            return ip.to_string();
        }
    }
    peer.map_or_else(|| "unknown".to_string(), |p| p.ip().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_secs(900);

    #[test]
    fn allows_up_to_the_limit_then_waits_for_the_window() {
        assert_eq!(wait_s(&[], 5, WINDOW, 0), None);
        assert_eq!(wait_s(&[1, 2, 3, 4], 5, WINDOW, 10), None);
        // Five failures: the sixth waits until the oldest leaves the window.
        let five = [0, 1_000, 2_000, 3_000, 4_000];
        assert_eq!(wait_s(&five, 5, WINDOW, 10_000), Some(890));
        assert_eq!(wait_s(&five, 5, WINDOW, 899_999), Some(1));
        // Seven (concurrent attempts): until only four are left.
        let seven = [0, 1_000, 2_000, 3_000, 4_000, 5_000, 6_000];
        assert_eq!(wait_s(&seven, 5, WINDOW, 10_000), Some(892));
        // Never 0: a client told to wait 0 s would hammer.
        assert_eq!(wait_s(&five, 5, WINDOW, 900_000), Some(1));
    }

    #[test]
    fn the_longer_wait_wins() {
        let attempt = LoginAttempt {
            id: 1,
            user: vec![0, 1, 2, 3, 4],
            addr: (0..50).map(|i| 10_000 + i).collect(),
        };
        assert_eq!(verdict(&attempt, WINDOW, 20_000), Some(890));
        let fine = LoginAttempt {
            id: 1,
            user: vec![0],
            addr: vec![0],
        };
        assert_eq!(verdict(&fine, WINDOW, 20_000), None);
    }

    #[test]
    fn client_address() {
        let peer: SocketAddr = "192.0.2.7:5555".parse().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", "203.0.113.1, 10.0.0.2".parse().unwrap());
        assert_eq!(client_addr(Some(peer), &headers, false), "192.0.2.7");
        assert_eq!(client_addr(Some(peer), &headers, true), "10.0.0.2");
        headers.append("x-forwarded-for", "10.0.0.3".parse().unwrap());
        assert_eq!(client_addr(Some(peer), &headers, true), "10.0.0.3");
        let mut junk = HeaderMap::new();
        junk.insert("x-forwarded-for", "not an address".parse().unwrap());
        assert_eq!(client_addr(Some(peer), &junk, true), "192.0.2.7");
        assert_eq!(client_addr(None, &HeaderMap::new(), false), "unknown");
    }
}
