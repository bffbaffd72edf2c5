//! Keeps a node's copy of the revocations fresh ([`super::revocation`]),
//! and closes the live sessions they end: `error unauthorized`, then close
//! 4401.
//!
//! One task per node asks the store what changed every
//! `PARLEY_REVOCATION_REFRESH` (1 s): one query, whatever the number of
//! sessions or requests. Each look starts [`OVERLAP_MS`] before the store's
//! clock at the previous one, so that a change committed late (a long
//! transaction) or by a client whose clock is behind is still seen, and a
//! session that authenticated while a revocation was being applied is
//! looked at again. What a node revokes itself (logout, logout-all, a
//! password change on this node) it applies and closes at once.
//!
//! The one place where authentication meets the live sessions, as the
//! committer is where the store meets the bus.

use std::sync::{Arc, Weak};
use std::time::Duration;

use parley_protocol::{ErrorCode, ServerFrame, close};

use super::Auth;
use super::revocation::{Delta, Refusal};
use crate::session::Registry;
use crate::store::{Store, StoreError};

/// How far back each look reaches before the previous one (ms).
pub const OVERLAP_MS: i64 = 10_000;

/// Loads everything (a node starting); returns the store's clock, where the
/// next look starts.
pub async fn load(auth: &Auth, store: &dyn Store) -> Result<i64, StoreError> {
    let changes = store.auth_changes(None).await?;
    auth.apply(&changes);
    Ok(changes.now_ms)
}

/// Refreshes `auth` from `store` every `period`, closing the sessions of
/// `sessions` that a change ends, until the registry is gone. `seen_ms` is
/// what [`load`] returned.
pub async fn run(
    auth: Auth,
    store: Arc<dyn Store>,
    sessions: Weak<Registry>,
    period: Duration,
    mut seen_ms: i64,
) {
    use tokio::time::{Instant, MissedTickBehavior, interval_at};
    let period = period.max(Duration::from_millis(100));
    let mut ticks = interval_at(Instant::now() + period, period);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        ticks.tick().await;
        let Some(registry) = sessions.upgrade() else {
            return;
        };
        match store
            .auth_changes(Some(seen_ms.saturating_sub(OVERLAP_MS)))
            .await
        {
            Ok(changes) => {
                if failing {
                    tracing::info!("revocations are read from the store again");
                    failing = false;
                }
                seen_ms = changes.now_ms;
                let delta = auth.apply(&changes);
                close_sessions(&auth, &registry, &delta);
            }
            Err(e) => {
                metrics::counter!("parley_auth_refresh_errors_total").increment(1);
                if !failing {
                    tracing::warn!(
                        error = %e,
                        "cannot read revocations from the store; tokens revoked meanwhile \
                         stay valid on this node until it can"
                    );
                    failing = true;
                }
            }
        }
    }
}

/// Closes the sessions that `delta` concerns and that must end now: their
/// token was revoked, their user logged out everywhere after the token was
/// issued, or is disabled. Returns how many it closed.
pub fn close_sessions(auth: &Auth, sessions: &Registry, delta: &Delta) -> usize {
    if delta.is_empty() {
        return 0;
    }
    let mut closed = 0;
    for refusal in [Refusal::Revoked, Refusal::Disabled] {
        let error = ServerFrame::error(None, ErrorCode::Unauthorized, refusal.message());
        closed += sessions.close_where(
            |s| {
                let concerned = delta.tokens.contains(&s.token.0)
                    || delta.users.iter().any(|u| u.eq_ignore_ascii_case(&s.user));
                concerned && auth.refuses_session(&s.token.0, &s.user, s.iat) == Some(refusal)
            },
            close::UNAUTHORIZED,
            &error,
        );
    }
    if closed > 0 {
        metrics::counter!("parley_sessions_revoked_total").increment(closed as u64);
        tracing::info!(sessions = closed, "closed sessions whose token was revoked");
    }
    closed
}
