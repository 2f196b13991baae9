//! [`LiveConfig`]: the running configuration behind an atomic pointer swap.
//!
//! Everything that may change while the gateway runs reads it *at use*
//! (`live.load().pool.max_backoff`), never from a copy taken at start. A reload builds and
//! validates a whole new [`Settings`] first and then swaps it in at once, so a reader sees either
//! the old or the new configuration, never a mix. Keys that need a restart keep their running
//! value in the swapped settings (see [`super::reload`]).

use std::sync::Arc;

use arc_swap::ArcSwap;

use super::Settings;

/// A cheap-to-clone handle on the running configuration.
#[derive(Clone)]
pub struct LiveConfig {
    current: Arc<ArcSwap<Settings>>,
}

impl LiveConfig {
    pub fn new(settings: Settings) -> LiveConfig {
        LiveConfig {
            current: Arc::new(ArcSwap::from_pointee(settings)),
        }
    }

    /// The configuration in force now. Hold the `Arc` for the duration of one decision, not
    /// longer: a later call may return a newer configuration.
    pub fn load(&self) -> Arc<Settings> {
        self.current.load_full()
    }

    /// Replaces the running configuration (the reload path; validate first).
    pub fn store(&self, settings: Settings) {
        self.current.store(Arc::new(settings));
    }
}

impl std::fmt::Debug for LiveConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `Settings`' Debug redacts every secret.
        f.debug_tuple("LiveConfig").field(&*self.load()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_one_value_and_a_store_is_seen_by_all() {
        let live = LiveConfig::new(Settings::defaults());
        let other = live.clone();
        let before = live.load();
        let mut next = Settings::defaults();
        next.pool.max_fail_count = 9;
        other.store(next);
        assert_eq!(live.load().pool.max_fail_count, 9);
        assert_eq!(
            before.pool.max_fail_count, 3,
            "a loaded Arc keeps its value"
        );
    }
}
