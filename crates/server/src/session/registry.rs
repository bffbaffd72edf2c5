//! The node's live connections, so that the heartbeat can ping each of
//! them and a drain can close each of them. A connection registers its
//! [`Outbox`] when it opens and leaves when it ends; nothing else about a
//! session is kept here.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::outbox::Outbox;

/// The node's live connections, so that a drain can close each of them.
#[derive(Default)]
pub struct Registry {
    next_id: AtomicU64,
    live: Mutex<HashMap<u64, Outbox>>,
}

impl Registry {
    pub fn register(&self, outbox: Outbox) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        live.insert(id, outbox);
        metrics::gauge!("parley_connections").set(live.len() as f64);
        metrics::counter!("parley_connections_total").increment(1);
        id
    }

    pub fn unregister(&self, id: u64) {
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        live.remove(&id);
        metrics::gauge!("parley_connections").set(live.len() as f64);
    }

    /// Calls `f` on the connections whose id falls in `slice` of `slices`,
    /// holding the registry's lock (`f` must not block).
    pub fn for_each_in_slice(&self, slice: u64, slices: u64, mut f: impl FnMut(&Outbox)) {
        let live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        for (_, outbox) in live.iter().filter(|(id, _)| *id % slices == slice) {
            f(outbox);
        }
    }

    pub fn snapshot(&self) -> Vec<Outbox> {
        self.live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    pub fn len(&self) -> usize {
        self.live.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
