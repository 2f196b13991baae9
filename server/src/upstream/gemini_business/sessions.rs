//! Ready upstream sessions (`gemini_business.session_prefetch`): creating a session (U2) is a
//! full round trip before every answer; with prefetch on, each account that was just used
//! keeps up to that many sessions created in the background, so its next request goes
//! straight to U3/U4.
//!
//! A shelf belongs to one set of credentials: its key is a SHA-256 over the account's
//! `csesidx`, `config_id` and cookie header, so new credentials (a re-login, an import) find
//! another, empty shelf and never a session made with the old ones. A shelf is emptied when
//! its account's call fails in any way (the account is then cooling down, re-logging or the
//! session is gone), and a session older than `session_prefetch_ttl_sec` is thrown away
//! unused. Sessions being created when a shelf is emptied are dropped when they arrive (the
//! shelf's epoch changed). At most [`MAX_SHELVES`] shelves are kept: the least recently used
//! go first. Nothing here is persisted: a restart starts with empty shelves.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::accounts::Credentials;

/// The most accounts with ready sessions at once.
pub const MAX_SHELVES: usize = 4096;

/// The shelf of one set of credentials.
pub type ShelfKey = [u8; 32];

/// The shelf key of `credentials`.
pub fn shelf_key(credentials: &Credentials) -> ShelfKey {
    let mut h = Sha256::new();
    h.update(credentials.csesidx.as_bytes());
    h.update([0]);
    h.update(credentials.config_id.as_bytes());
    h.update([0]);
    if let Some(cookies) = credentials.cookie_header() {
        h.update(cookies.expose().as_bytes());
    }
    h.finalize().into()
}

#[derive(Debug)]
struct Shelf {
    ready: VecDeque<(String, Instant)>,
    /// Sessions being created for this shelf.
    filling: u32,
    /// Changes when the shelf is emptied: a creation started before then is not shelved.
    epoch: u64,
    used: Instant,
}

#[derive(Debug, Default)]
struct Inner {
    shelves: HashMap<ShelfKey, Shelf>,
    next_epoch: u64,
}

/// Ready sessions per account.
#[derive(Debug, Default)]
pub struct SessionStock {
    inner: Mutex<Inner>,
}

/// Sessions to create in the background for a shelf: `count`, shelved if the shelf still has
/// `epoch` when each arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refill {
    pub key: ShelfKey,
    pub epoch: u64,
    pub count: u32,
}

impl SessionStock {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes a ready session of `key` younger than `ttl` (older ones are dropped), and says
    /// how many to create so that `want` are ready or coming. `want` = 0 empties the shelf.
    pub fn take(
        &self,
        key: &ShelfKey,
        want: u32,
        ttl: Duration,
        now: Instant,
    ) -> (Option<String>, Option<Refill>) {
        let mut inner = self.lock();
        if want == 0 {
            inner.shelves.remove(key);
            return (None, None);
        }
        if !inner.shelves.contains_key(key) {
            if inner.shelves.len() >= MAX_SHELVES {
                evict_oldest(&mut inner.shelves);
            }
            inner.next_epoch += 1;
            let epoch = inner.next_epoch;
            inner.shelves.insert(
                *key,
                Shelf {
                    ready: VecDeque::new(),
                    filling: 0,
                    epoch,
                    used: now,
                },
            );
        }
        let Some(shelf) = inner.shelves.get_mut(key) else {
            return (None, None);
        };
        shelf.used = now;
        shelf
            .ready
            .retain(|(_, made)| now.saturating_duration_since(*made) < ttl);
        let session = shelf.ready.pop_front().map(|(name, _)| name);
        let have = u32::try_from(shelf.ready.len())
            .unwrap_or(u32::MAX)
            .saturating_add(shelf.filling);
        let count = want.saturating_sub(have);
        let refill = (count > 0).then(|| {
            shelf.filling += count;
            Refill {
                key: *key,
                epoch: shelf.epoch,
                count,
            }
        });
        (session, refill)
    }

    /// A session created for `refill` arrived (`Some`) or failed (`None`). Shelved only while
    /// the shelf still has the refill's epoch and is not over `want`.
    pub fn arrived(&self, refill: &Refill, session: Option<String>, want: u32, now: Instant) {
        let mut inner = self.lock();
        let Some(shelf) = inner.shelves.get_mut(&refill.key) else {
            return;
        };
        if shelf.epoch != refill.epoch {
            return;
        }
        shelf.filling = shelf.filling.saturating_sub(1);
        if let Some(name) = session
            && shelf.ready.len() < want as usize
        {
            shelf.ready.push_back((name, now));
        }
    }

    /// Empties the shelf of `key`: its sessions are never handed out, and those being created
    /// are dropped when they arrive.
    pub fn discard(&self, key: &ShelfKey) {
        let mut inner = self.lock();
        inner.next_epoch += 1;
        let epoch = inner.next_epoch;
        if let Some(shelf) = inner.shelves.get_mut(key) {
            shelf.ready.clear();
            shelf.filling = 0;
            shelf.epoch = epoch;
        }
    }
}

fn evict_oldest(shelves: &mut HashMap<ShelfKey, Shelf>) {
    if let Some(oldest) = shelves
        .iter()
        .min_by_key(|(_, shelf)| shelf.used)
        .map(|(key, _)| *key)
    {
        shelves.remove(&oldest);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(60);

    impl SessionStock {
        /// Ready sessions in all shelves.
        fn ready(&self) -> usize {
            self.lock().shelves.values().map(|s| s.ready.len()).sum()
        }
    }

    fn key(n: u8) -> ShelfKey {
        [n; 32]
    }

    #[test]
    fn a_shelf_fills_to_its_size_and_hands_out_in_order() {
        let stock = SessionStock::default();
        let now = Instant::now();
        let (none, refill) = stock.take(&key(1), 2, TTL, now);
        assert_eq!(none, None);
        let refill = refill.unwrap();
        assert_eq!(refill.count, 2);
        // Nothing more is asked while two are coming.
        assert_eq!(stock.take(&key(1), 2, TTL, now), (None, None));
        stock.arrived(&refill, Some("s1".into()), 2, now);
        stock.arrived(&refill, Some("s2".into()), 2, now);
        let (s, again) = stock.take(&key(1), 2, TTL, now);
        assert_eq!(s.as_deref(), Some("s1"));
        assert_eq!(again.map(|r| r.count), Some(1));
        assert_eq!(stock.ready(), 1);
    }

    #[test]
    fn old_sessions_are_never_handed_out() {
        let stock = SessionStock::default();
        let now = Instant::now();
        let refill = stock.take(&key(1), 1, TTL, now).1.unwrap();
        stock.arrived(&refill, Some("old".into()), 1, now);
        let later = now + TTL;
        let (s, refill) = stock.take(&key(1), 1, TTL, later);
        assert_eq!(s, None);
        assert_eq!(refill.map(|r| r.count), Some(1));
    }

    #[test]
    fn a_discarded_shelf_drops_what_was_ready_and_what_was_coming() {
        let stock = SessionStock::default();
        let now = Instant::now();
        let first = stock.take(&key(1), 1, TTL, now).1.unwrap();
        stock.arrived(&first, Some("ready".into()), 1, now);
        let second = stock.take(&key(1), 1, TTL, now).1.unwrap();
        stock.discard(&key(1));
        stock.arrived(&second, Some("late".into()), 1, now);
        assert_eq!(stock.ready(), 0);
        let (s, refill) = stock.take(&key(1), 1, TTL, now);
        assert_eq!(s, None);
        assert_eq!(refill.map(|r| r.count), Some(1), "a new fill starts");
        // Turning prefetch off empties the shelf.
        assert_eq!(stock.take(&key(1), 0, TTL, now), (None, None));
    }

    #[test]
    fn new_credentials_get_another_shelf() {
        let mut a = Credentials {
            cookies: vec![],
            csesidx: "1".into(),
            config_id: "c".into(),
            authorization: business2api_shared::Secret::new(String::new()),
        };
        let before = shelf_key(&a);
        a.csesidx = "2".into();
        assert_ne!(before, shelf_key(&a));
    }

    #[test]
    fn shelves_are_bounded() {
        let stock = SessionStock::default();
        let now = Instant::now();
        for n in 0..=MAX_SHELVES {
            let k: ShelfKey = Sha256::digest(n.to_le_bytes()).into();
            let _ = stock.take(&k, 1, TTL, now + Duration::from_millis(n as u64));
        }
        assert_eq!(stock.lock().shelves.len(), MAX_SHELVES);
    }
}
