//! The in-process bus of a single node: publishing is a direct call into
//! the hub. Nothing is lost, so no anti-entropy is needed.

use std::sync::{OnceLock, Weak};

use async_trait::async_trait;

use super::{Bus, BusError, Envelope, Inbox};

#[derive(Default)]
pub struct LocalBus {
    inbox: OnceLock<Weak<dyn Inbox>>,
}

impl LocalBus {
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl Bus for LocalBus {
    fn set_inbox(&self, inbox: Weak<dyn Inbox>) {
        let _ = self.inbox.set(inbox);
    }

    fn publish(&self, envelope: Envelope) {
        if let Some(inbox) = self.inbox.get().and_then(Weak::upgrade) {
            inbox.deliver(envelope);
        }
    }

    async fn subscribe_room(&self, _room: &str) -> Result<(), BusError> {
        Ok(())
    }

    async fn unsubscribe_room(&self, _room: &str) {}

    fn lossy(&self) -> bool {
        false
    }

    fn kind(&self) -> &'static str {
        "local"
    }
}
