//! Which account serves a request: pure functions over a view of the pool.
//!
//! An account is *eligible* for a capability when its state and cooldowns allow it
//! ([`AccountStatus::usable_for`]), it is below the per-account concurrency limit, and its
//! successes today plus its requests in flight for that capability are below the daily cap — so
//! the cap counts successes only, yet can never be overshot by concurrent requests.
//!
//! Among eligible accounts:
//! - **round robin** (default): the next account after the previous pick that has not been used
//!   within `use_cooldown`; if every eligible account was used within it, the least recently
//!   used one.
//! - **least recently used**: the eligible account used longest ago (never used first).
//! - **fill first**: the first eligible account in e-mail order, until it is capped, full or
//!   cooling (`use_cooldown` does not apply).

use std::time::Duration;

use super::account_state::{AccountStatus, Capability, PerCapability, UnixMs, Usable, day_of};
use crate::config::Selection;

/// When nothing will free up by itself, clients are told to come back after this long.
pub const NO_ACCOUNT_RETRY: Duration = Duration::from_secs(30);
/// A pool that is only busy (concurrency limit) frees up soon.
pub const BUSY_RETRY: Duration = Duration::from_secs(1);

/// The selection knobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SelectionPolicy {
    pub strategy: Selection,
    pub use_cooldown: Duration,
    /// `0` = no limit.
    pub max_concurrent: u32,
    /// `0` = no cap.
    pub daily_limits: PerCapability<u32>,
}

/// What selection needs to know about one account.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    pub status: &'a AccountStatus,
    /// Requests in flight on the account, per capability.
    pub in_flight: PerCapability<u32>,
    /// Already tried by this request.
    pub excluded: bool,
}

impl Candidate<'_> {
    fn total_in_flight(&self) -> u32 {
        self.in_flight.text + self.in_flight.image + self.in_flight.video
    }
}

/// The outcome of a selection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    /// The index of the chosen candidate.
    Picked(usize),
    /// None now; worth trying again after this long.
    Unavailable { retry_after: Duration },
}

/// Why a candidate is not eligible, and until when.
enum Verdict {
    Eligible,
    /// Frees up at this time.
    Until(UnixMs),
    /// Frees up when a request in flight ends.
    Busy,
    Never,
}

fn verdict(c: &Candidate<'_>, cap: Capability, now: UnixMs, p: &SelectionPolicy) -> Verdict {
    if c.excluded {
        return Verdict::Never;
    }
    match c.status.usable_for(cap, now) {
        Usable::Yes => {}
        Usable::After(t) => return Verdict::Until(t),
        Usable::No => return Verdict::Never,
    }
    let limit = *p.daily_limits.get(cap);
    if limit > 0 {
        let used = c.status.counters.daily.on(cap, now);
        if used >= limit {
            // The next UTC midnight.
            let next_day = (u64::from(day_of(now)) + 1) * 86_400_000;
            return Verdict::Until(next_day);
        }
        if used + *c.in_flight.get(cap) >= limit {
            return Verdict::Busy;
        }
    }
    if p.max_concurrent > 0 && c.total_in_flight() >= p.max_concurrent {
        return Verdict::Busy;
    }
    Verdict::Eligible
}

fn recently_used(c: &Candidate<'_>, now: UnixMs, p: &SelectionPolicy) -> bool {
    let window = u64::try_from(p.use_cooldown.as_millis()).unwrap_or(u64::MAX);
    window > 0
        && c.status
            .last_used
            .is_some_and(|t| now.saturating_sub(t) < window)
}

/// Picks an account for `cap`. `cursor` is the round-robin position (updated on a pick).
pub fn select(
    candidates: &[Candidate<'_>],
    cap: Capability,
    now: UnixMs,
    policy: &SelectionPolicy,
    cursor: &mut usize,
) -> Choice {
    let n = candidates.len();
    let mut eligible = Vec::with_capacity(n);
    let mut soonest: Option<UnixMs> = None;
    let mut busy = false;
    for (i, c) in candidates.iter().enumerate() {
        match verdict(c, cap, now, policy) {
            Verdict::Eligible => eligible.push(i),
            Verdict::Until(t) => soonest = Some(soonest.map_or(t, |s| s.min(t))),
            Verdict::Busy => busy = true,
            Verdict::Never => {}
        }
    }
    let lru = |set: &mut dyn Iterator<Item = usize>| {
        set.min_by_key(|&i| {
            candidates
                .get(i)
                .map_or((1, u64::MAX), |c| match c.status.last_used {
                    None => (0, 0),
                    Some(t) => (1, t),
                })
        })
    };
    let picked = match policy.strategy {
        Selection::FillFirst => eligible.first().copied(),
        Selection::LeastRecentlyUsed => lru(&mut eligible.iter().copied()),
        Selection::RoundRobin => {
            let start = if n == 0 { 0 } else { *cursor % n };
            let mut order: Vec<usize> = eligible.clone();
            order.sort_by_key(|&i| (i + n - start) % n.max(1));
            order
                .iter()
                .copied()
                .find(|&i| {
                    candidates
                        .get(i)
                        .is_some_and(|c| !recently_used(c, now, policy))
                })
                .or_else(|| lru(&mut order.iter().copied()))
        }
    };
    match picked {
        Some(i) => {
            *cursor = i + 1;
            Choice::Picked(i)
        }
        None => {
            let retry_after = match (soonest, busy) {
                (_, true) => BUSY_RETRY,
                (Some(t), false) => {
                    let d = t.saturating_sub(now);
                    // Whole seconds, rounded up, at least 1: a Retry-After of 0 invites a
                    // busy loop.
                    Duration::from_secs(d.div_ceil(1000).max(1))
                }
                (None, false) => NO_ACCOUNT_RETRY,
            };
            Choice::Unavailable { retry_after }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::account_state::{AccountState, Cooldown, CooldownReason, DailyCount};
    use proptest::prelude::*;

    const NOW: UnixMs = 1_800_000_000_000;

    fn policy(strategy: Selection) -> SelectionPolicy {
        SelectionPolicy {
            strategy,
            use_cooldown: Duration::ZERO,
            max_concurrent: 0,
            daily_limits: PerCapability::default(),
        }
    }

    fn cands(statuses: &[AccountStatus]) -> Vec<Candidate<'_>> {
        statuses
            .iter()
            .map(|status| Candidate {
                status,
                in_flight: PerCapability::default(),
                excluded: false,
            })
            .collect()
    }

    fn picks(statuses: &[AccountStatus], p: &SelectionPolicy, k: usize) -> Vec<usize> {
        let c = cands(statuses);
        let mut cursor = 0;
        (0..k)
            .map(
                |_| match select(&c, Capability::Text, NOW, p, &mut cursor) {
                    Choice::Picked(i) => i,
                    other => panic!("{other:?}"),
                },
            )
            .collect()
    }

    #[test]
    fn round_robin_visits_every_account_in_turn() {
        let s = vec![AccountStatus::default(); 3];
        assert_eq!(
            picks(&s, &policy(Selection::RoundRobin), 6),
            [0, 1, 2, 0, 1, 2]
        );
    }

    #[test]
    fn fill_first_stays_on_the_first_account() {
        let s = vec![AccountStatus::default(); 3];
        assert_eq!(picks(&s, &policy(Selection::FillFirst), 3), [0, 0, 0]);
    }

    #[test]
    fn least_recently_used_prefers_never_used_then_oldest() {
        let mut s = vec![AccountStatus::default(); 3];
        s[0].last_used = Some(NOW - 10);
        s[1].last_used = Some(NOW - 1000);
        s[2].last_used = None;
        assert_eq!(picks(&s, &policy(Selection::LeastRecentlyUsed), 1), [2]);
        s[2].last_used = Some(NOW);
        assert_eq!(picks(&s, &policy(Selection::LeastRecentlyUsed), 1), [1]);
    }

    #[test]
    fn round_robin_skips_recently_used_accounts_but_falls_back_to_the_least_recent() {
        let mut s = vec![AccountStatus::default(); 3];
        s[0].last_used = Some(NOW - 1_000);
        s[1].last_used = Some(NOW - 20_000);
        s[2].last_used = Some(NOW - 2_000);
        let p = SelectionPolicy {
            use_cooldown: Duration::from_secs(15),
            ..policy(Selection::RoundRobin)
        };
        // 0 and 2 were used within 15 s: 1 is taken although the cursor points at 0.
        assert_eq!(picks(&s, &p, 1), [1]);
        s[1].last_used = Some(NOW - 5_000);
        // All recent: the least recently used.
        assert_eq!(picks(&s, &p, 1), [1]);
    }

    #[test]
    fn excluded_cooling_and_dead_accounts_are_skipped() {
        let mut s = vec![AccountStatus::default(); 4];
        s[0].cooldowns.text = Some(Cooldown {
            until: NOW + 42_000,
            reason: CooldownReason::RateLimited,
        });
        s[1].state = AccountState::NeedsRelogin {
            since: NOW,
            reason: "x".into(),
        };
        s[2].state = AccountState::Disabled { reason: "x".into() };
        let mut c = cands(&s);
        let mut cursor = 0;
        let p = policy(Selection::RoundRobin);
        assert_eq!(
            select(&c, Capability::Text, NOW, &p, &mut cursor),
            Choice::Picked(3)
        );
        // Image is not rate limited on account 0.
        assert_eq!(
            select(&c, Capability::Image, NOW, &p, &mut 0),
            Choice::Picked(0)
        );
        c[3].excluded = true;
        assert_eq!(
            select(&c, Capability::Text, NOW, &p, &mut cursor),
            Choice::Unavailable {
                retry_after: Duration::from_secs(42)
            }
        );
    }

    #[test]
    fn nothing_recoverable_means_the_default_retry() {
        let mut s = vec![AccountStatus::default()];
        s[0].state = AccountState::Disabled { reason: "x".into() };
        assert_eq!(
            select(
                &cands(&s),
                Capability::Text,
                NOW,
                &policy(Selection::RoundRobin),
                &mut 0
            ),
            Choice::Unavailable {
                retry_after: NO_ACCOUNT_RETRY
            }
        );
        assert_eq!(
            select(
                &[],
                Capability::Text,
                NOW,
                &policy(Selection::RoundRobin),
                &mut 0
            ),
            Choice::Unavailable {
                retry_after: NO_ACCOUNT_RETRY
            }
        );
    }

    #[test]
    fn concurrency_limit_counts_requests_in_flight() {
        let s = vec![AccountStatus::default(); 2];
        let mut c = cands(&s);
        let p = SelectionPolicy {
            max_concurrent: 2,
            ..policy(Selection::FillFirst)
        };
        c[0].in_flight.text = 1;
        c[0].in_flight.image = 1;
        assert_eq!(
            select(&c, Capability::Text, NOW, &p, &mut 0),
            Choice::Picked(1)
        );
        c[1].in_flight.video = 2;
        assert_eq!(
            select(&c, Capability::Text, NOW, &p, &mut 0),
            Choice::Unavailable {
                retry_after: BUSY_RETRY
            }
        );
    }

    #[test]
    fn daily_caps_count_successes_and_reserve_requests_in_flight() {
        let mut s = vec![AccountStatus::default(); 2];
        s[0].counters.daily = DailyCount {
            day: day_of(NOW),
            counts: PerCapability {
                text: 0,
                image: 2,
                video: 0,
            },
        };
        let p = SelectionPolicy {
            daily_limits: PerCapability {
                text: 0,
                image: 3,
                video: 1,
            },
            ..policy(Selection::FillFirst)
        };
        let mut c = cands(&s);
        assert_eq!(
            select(&c, Capability::Image, NOW, &p, &mut 0),
            Choice::Picked(0)
        );
        // One image in flight on account 0 would reach its cap: account 1 instead.
        c[0].in_flight.image = 1;
        assert_eq!(
            select(&c, Capability::Image, NOW, &p, &mut 0),
            Choice::Picked(1)
        );
        // Text has no cap.
        assert_eq!(
            select(&c, Capability::Text, NOW, &p, &mut 0),
            Choice::Picked(0)
        );
        // Yesterday's count does not apply today.
        s[0].counters.daily.counts.image = 3;
        s[0].counters.daily.day -= 1;
        let c = cands(&s);
        assert_eq!(
            select(&c, Capability::Image, NOW, &p, &mut 0),
            Choice::Picked(0)
        );
        // A capped account is unavailable until the next UTC day.
        s[0].counters.daily.day += 1;
        s[1].counters.daily = s[0].counters.daily;
        let c = cands(&s);
        let Choice::Unavailable { retry_after } = select(&c, Capability::Image, NOW, &p, &mut 0)
        else {
            panic!()
        };
        assert!(
            retry_after <= Duration::from_secs(86_400) && retry_after >= Duration::from_secs(1)
        );
    }

    proptest! {
        /// Whatever the pool looks like, a pick is eligible, and when nothing is picked no
        /// candidate was eligible.
        #[test]
        fn picks_are_eligible_and_refusals_justified(
            states in proptest::collection::vec((0u8..4, 0u32..4, 0u32..3, proptest::option::of(0u64..30_000), any::<bool>()), 0..8),
            strategy in prop_oneof![Just(Selection::RoundRobin), Just(Selection::LeastRecentlyUsed), Just(Selection::FillFirst)],
            max_concurrent in 0u32..3,
            limit in 0u32..4,
            cursor in 0usize..10,
        ) {
            let statuses: Vec<AccountStatus> = states.iter().map(|&(st, used, _, last, _)| {
                let mut s = AccountStatus {
                    last_used: last.map(|d| NOW - d),
                    ..AccountStatus::default()
                };
                s.counters.daily = DailyCount { day: day_of(NOW), counts: PerCapability { text: used, image: 0, video: 0 } };
                s.state = match st {
                    0 => AccountState::Ready,
                    1 => AccountState::CoolingDown { until: NOW + 5_000, reason: CooldownReason::Transient },
                    2 => AccountState::RefreshingToken,
                    _ => AccountState::Disabled { reason: "x".into() },
                };
                s
            }).collect();
            let c: Vec<Candidate<'_>> = statuses.iter().zip(&states).map(|(status, &(_, _, fl, _, ex))| Candidate {
                status,
                in_flight: PerCapability { text: fl, image: 0, video: 0 },
                excluded: ex,
            }).collect();
            let p = SelectionPolicy {
                strategy,
                use_cooldown: Duration::from_secs(10),
                max_concurrent,
                daily_limits: PerCapability { text: limit, image: 0, video: 0 },
            };
            let mut cur = cursor;
            let eligible = |i: usize| matches!(verdict(&c[i], Capability::Text, NOW, &p), Verdict::Eligible);
            match select(&c, Capability::Text, NOW, &p, &mut cur) {
                Choice::Picked(i) => {
                    prop_assert!(eligible(i));
                    prop_assert!(!c[i].excluded);
                    prop_assert_eq!(cur, i + 1);
                }
                Choice::Unavailable { retry_after } => {
                    prop_assert!((0..c.len()).all(|i| !eligible(i)));
                    prop_assert!(retry_after >= Duration::from_secs(1));
                }
            }
        }
    }
}
