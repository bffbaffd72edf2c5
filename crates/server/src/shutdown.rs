//! Shutdown signalling and the drain state (invariant 6).
//!
//! [`Drain`] is the one place that knows whether the node is draining.
//! `/readyz` reads it (503 from the first moment), the accept loop waits on it
//! to stop taking connections, and the server's drain sequence drives it.
//! Signals: SIGTERM (Kubernetes) and SIGINT (Ctrl-C) both start a drain.

use std::sync::Arc;

use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    Running,
    /// Readiness is 503; new connections are still accepted for the grace period.
    Draining,
    /// No new connections; sessions are being closed with 1001.
    Closing,
}

#[derive(Clone)]
pub struct Drain {
    tx: Arc<watch::Sender<Phase>>,
}

impl Default for Drain {
    fn default() -> Self {
        Self::new()
    }
}

impl Drain {
    pub fn new() -> Self {
        Self {
            tx: Arc::new(watch::channel(Phase::Running).0),
        }
    }

    pub fn phase(&self) -> Phase {
        *self.tx.borrow()
    }

    pub fn is_draining(&self) -> bool {
        self.phase() != Phase::Running
    }

    /// Moves forward to `phase` (never back).
    pub fn advance(&self, phase: Phase) {
        self.tx.send_if_modified(|p| {
            if phase > *p {
                *p = phase;
                true
            } else {
                false
            }
        });
    }

    /// Resolves once the node has reached `phase`.
    pub async fn reached(&self, phase: Phase) {
        let mut rx = self.tx.subscribe();
        let _ = rx.wait_for(|p| *p >= phase).await;
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("SIGINT received: draining"),
        _ = term => tracing::info!("SIGTERM received: draining"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn phases_only_move_forward() {
        let d = Drain::new();
        assert!(!d.is_draining());
        d.advance(Phase::Closing);
        d.advance(Phase::Draining);
        assert_eq!(d.phase(), Phase::Closing);
        d.reached(Phase::Draining).await;
    }
}
