//! [`Gate`]: a one-shot latch a test opens to release a held U4 stream.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

/// A latch returned by [`crate::Simulator::hold_last_element`]; opening it releases the held
/// stream's last element. Opening is idempotent; clones share the latch.
#[derive(Clone, Debug)]
pub struct Gate {
    tx: Arc<watch::Sender<bool>>,
}

impl Default for Gate {
    fn default() -> Self {
        Gate::new()
    }
}

impl Gate {
    /// A closed gate.
    pub fn new() -> Gate {
        let (tx, _rx) = watch::channel(false);
        Gate { tx: Arc::new(tx) }
    }

    /// Opens the gate (idempotent).
    pub fn open(&self) {
        self.tx.send_replace(true);
    }

    /// Whether the gate has been opened.
    pub fn is_open(&self) -> bool {
        *self.tx.borrow()
    }

    /// Waits until the gate is open or `limit` has passed.
    pub(crate) async fn wait(&self, limit: Duration) {
        let mut rx = self.tx.subscribe();
        let _ = tokio::time::timeout(limit, rx.wait_for(|open| *open)).await;
    }
}
