//! Login rate limiting per client address: [`MAX_FAILURES`] failed attempts in a
//! [`WINDOW`] block that address until the window ends. Pure state (times are passed in), bounded
//! to [`MAX_ADDRESSES`] addresses: memory does not grow with the number of clients.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Failed attempts allowed per address and window.
pub const MAX_FAILURES: u32 = 5;
/// The window, counted from an address's first failure.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Addresses remembered at most; the oldest window is forgotten first.
pub const MAX_ADDRESSES: usize = 4096;

#[derive(Debug, Clone, Copy)]
struct Entry {
    started: Instant,
    failures: u32,
}

/// The failures of each address in its current window.
#[derive(Debug)]
pub struct RateLimiter {
    entries: HashMap<IpAddr, Entry>,
    max_failures: u32,
    window: Duration,
    capacity: usize,
}

impl Default for RateLimiter {
    fn default() -> Self {
        RateLimiter::new(MAX_FAILURES, WINDOW, MAX_ADDRESSES)
    }
}

impl RateLimiter {
    pub fn new(max_failures: u32, window: Duration, capacity: usize) -> RateLimiter {
        RateLimiter {
            entries: HashMap::new(),
            max_failures: max_failures.max(1),
            window,
            capacity: capacity.max(1),
        }
    }

    /// `Err(wait)` when `ip` is blocked now, for `wait` more (at least one second).
    pub fn check(&mut self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        let Some(entry) = self.entries.get(&ip).copied() else {
            return Ok(());
        };
        let ends = entry.started + self.window;
        if now >= ends {
            self.entries.remove(&ip);
            return Ok(());
        }
        if entry.failures >= self.max_failures {
            return Err((ends - now).max(Duration::from_secs(1)));
        }
        Ok(())
    }

    /// Counts a failed attempt of `ip`.
    pub fn fail(&mut self, ip: IpAddr, now: Instant) {
        if !self.entries.contains_key(&ip) && self.entries.len() >= self.capacity {
            let window = self.window;
            self.entries.retain(|_, e| now < e.started + window);
            if self.entries.len() >= self.capacity
                && let Some(oldest) = self
                    .entries
                    .iter()
                    .min_by_key(|(_, e)| e.started)
                    .map(|(ip, _)| *ip)
            {
                self.entries.remove(&oldest);
            }
        }
        let window = self.window;
        let entry = self.entries.entry(ip).or_insert(Entry {
            started: now,
            failures: 0,
        });
        if now >= entry.started + window {
            *entry = Entry {
                started: now,
                failures: 0,
            };
        }
        entry.failures = entry.failures.saturating_add(1);
    }

    /// Forgets `ip`'s failures (a successful login).
    pub fn succeed(&mut self, ip: IpAddr) {
        self.entries.remove(&ip);
    }

    /// Addresses remembered now.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u32) -> IpAddr {
        IpAddr::from(n.to_be_bytes())
    }

    #[test]
    fn five_failures_block_until_the_window_ends() {
        let mut l = RateLimiter::default();
        let t0 = Instant::now();
        for i in 0..MAX_FAILURES {
            assert!(l.check(ip(1), t0).is_ok(), "attempt {i}");
            l.fail(ip(1), t0 + Duration::from_secs(u64::from(i)));
        }
        let wait = l.check(ip(1), t0 + Duration::from_secs(10)).unwrap_err();
        assert_eq!(wait, Duration::from_secs(50));
        assert!(l.check(ip(2), t0).is_ok(), "another address is not blocked");
        assert!(l.check(ip(1), t0 + WINDOW).is_ok(), "the window ended");
        assert!(l.is_empty());
    }

    #[test]
    fn success_forgets_the_failures() {
        let mut l = RateLimiter::default();
        let t0 = Instant::now();
        for _ in 0..MAX_FAILURES - 1 {
            l.fail(ip(1), t0);
        }
        l.succeed(ip(1));
        l.fail(ip(1), t0);
        assert!(l.check(ip(1), t0).is_ok());
    }

    #[test]
    fn memory_is_bounded() {
        let mut l = RateLimiter::new(5, WINDOW, 100);
        let t0 = Instant::now();
        for n in 0..10_000 {
            l.fail(ip(n), t0 + Duration::from_millis(u64::from(n)));
        }
        assert!(l.len() <= 100);
        // The newest addresses are the ones remembered.
        l.fail(ip(9_999), t0 + Duration::from_secs(11));
        assert!(l.len() <= 100);
    }
}
