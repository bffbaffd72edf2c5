//! The node's heartbeat: pings every connection once per period and closes
//! those whose peer has sent nothing for two periods (a half-open TCP
//! connection, a client that froze).
//!
//! One task per node walks the live connections in slices, rather than a
//! timer per connection: a timer cost every idle connection about 150 bytes
//! and a timer-wheel entry (docs/benchmarks.md), and slices spread the pings
//! over the period instead of sending 20,000 at once.
//!
//! It only queues: a ping or an urgent close goes through the connection's
//! outbox like everything else, in order, and never waits.
//!
//! The same task closes sessions whose token expired (`exp` plus the
//! leeway): every [`EXPIRY_TICK`] it asks the [`Registry`], which keeps each
//! session's `exp` in its entry and walks them only once the earliest one
//! is due ([`Registry::close_expired`]). No timer per connection either.

use std::sync::Weak;
use std::time::Duration;

use axum::extract::ws::Message as WsMessage;
use parley_protocol::close;

use super::Registry;
use crate::outbox::Outbox;

/// Parts the connections are split into; one part is visited per tick.
const SLICES: u64 = 16;
/// The shortest period honoured (tests use short ones).
const MIN_PERIOD: Duration = Duration::from_millis(100);
/// How often expired tokens are looked for: a session outlives its token's
/// `exp` plus the leeway by this much at most.
pub const EXPIRY_TICK: Duration = Duration::from_millis(250);

/// What a heartbeat does to one connection.
#[derive(Debug, PartialEq, Eq)]
pub enum Beat {
    Ping,
    /// Silent for two periods: close it.
    Close,
}

/// The heartbeat's decision for a peer silent for `silent`.
pub fn beat(silent: Duration, period: Duration) -> Beat {
    if silent > period * 2 {
        Beat::Close
    } else {
        Beat::Ping
    }
}

fn apply(outbox: &Outbox, period: Duration) {
    match beat(outbox.silent_for(), period) {
        Beat::Ping => {
            outbox.push_message(WsMessage::Ping(Default::default()));
        }
        Beat::Close => {
            if outbox.request_close(close::NORMAL) {
                tracing::debug!("peer silent for two heartbeats; closing");
                metrics::counter!("parley_heartbeat_timeouts_total").increment(1);
            }
        }
    }
}

/// Pings the registry's connections every `period`, and closes those whose
/// token expired (`leeway_s` after its `exp`); runs until the registry is
/// gone.
pub async fn run(sessions: Weak<Registry>, period: Duration, leeway_s: i64) {
    use tokio::time::{Instant, MissedTickBehavior, interval_at};
    let period = period.max(MIN_PERIOD);
    let tick = period / SLICES as u32;
    let mut pings = interval_at(Instant::now() + tick, tick);
    let mut expiry = interval_at(Instant::now() + EXPIRY_TICK, EXPIRY_TICK);
    pings.set_missed_tick_behavior(MissedTickBehavior::Delay);
    expiry.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut slice = 0;
    loop {
        let ping = tokio::select! {
            _ = pings.tick() => true,
            _ = expiry.tick() => false,
        };
        let Some(sessions) = sessions.upgrade() else {
            return;
        };
        if ping {
            sessions.for_each_in_slice(slice, SLICES, |outbox| apply(outbox, period));
            slice = (slice + 1) % SLICES;
        } else {
            sessions.close_expired(parley_protocol::time::now_s(), leeway_s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pings_until_two_periods_of_silence() {
        let period = Duration::from_secs(25);
        assert_eq!(beat(Duration::ZERO, period), Beat::Ping);
        assert_eq!(beat(Duration::from_secs(50), period), Beat::Ping);
        assert_eq!(beat(Duration::from_millis(50_001), period), Beat::Close);
    }

    #[tokio::test]
    async fn a_silent_connection_is_closed_and_a_live_one_pinged() {
        let (live, live_rx) = crate::outbox::outbox(8);
        let (silent, _silent_rx) = crate::outbox::outbox(8);
        live_rx.touch();
        apply(&live, Duration::from_secs(25));
        assert_eq!(live.close_requested(), None);
        // Two periods of 1 ms have passed by the time of the check.
        tokio::time::sleep(Duration::from_millis(5)).await;
        apply(&silent, Duration::from_millis(1));
        assert_eq!(silent.close_requested(), Some(close::NORMAL));
    }
}
