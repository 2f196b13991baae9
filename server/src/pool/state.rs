//! [`PoolState`]: the pool's shared bookkeeping behind one narrow interface.
//!
//! What several gateway replicas would have to agree on lives here and nowhere else: each
//! account's [`AccountStatus`] (state, cooldown ends, daily counters), the requests in flight on
//! it (leases), the round-robin position, and the account's credential generation. The
//! supervisor is the only caller; it keeps what is local to this process (the account actors'
//! addresses, the refresh schedule, log labels) in its own entries.
//!
//! [`InProcessState`] is the implementation used today: plain maps owned by the supervisor
//! actor, so every operation is exact without locks. A later issue backs the trait with Redis
//! for several replicas; each operation is one that such a store can do atomically (a lease
//! picks *and* counts in one step).

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use business2api_shared::AccountKey;

use super::account_state::{
    AccountState, AccountStatus, Capability, Effects, Event, FailurePolicy, PerCapability, UnixMs,
};
use super::selection::{self, Candidate, Choice, SelectionPolicy};
use crate::store::StateBatch;

/// The operations the supervisor needs on the pool's shared state.
pub trait PoolState: Send + 'static {
    /// Adds an account with `status`, or replaces the status of a known one (its leases in
    /// flight and credential generation are kept).
    fn insert(&mut self, key: AccountKey, status: AccountStatus);

    /// Forgets an account; `false` when it was unknown.
    fn remove(&mut self, key: &AccountKey) -> bool;

    /// The status of an account.
    fn status(&self, key: &AccountKey) -> Option<AccountStatus>;

    /// Requests in flight on an account, per capability.
    fn in_flight(&self, key: &AccountKey) -> PerCapability<u32>;

    /// Feeds one event to the account's pure state machine ([`AccountStatus::apply`]);
    /// `None` when the account is unknown.
    fn apply(
        &mut self,
        key: &AccountKey,
        event: Event,
        now: UnixMs,
        policy: &FailurePolicy,
    ) -> Option<Effects>;

    /// Chooses an account for `cap` ([`selection::select`]) among those `skip` does not rule
    /// out, and counts the lease (in flight + 1, last used = `now`) in the same step. `Err`
    /// says when it is worth trying again.
    fn lease(
        &mut self,
        cap: Capability,
        now: UnixMs,
        policy: &SelectionPolicy,
        skip: &dyn Fn(&AccountKey) -> bool,
    ) -> Result<AccountKey, Duration>;

    /// A lease ended (any outcome): in flight − 1.
    fn release(&mut self, key: &AccountKey, cap: Capability);

    /// The account's credential generation (0 until new credentials first arrive).
    fn credential_generation(&self, key: &AccountKey) -> u64;

    /// New credentials arrived: bumps and returns the account's credential generation.
    fn next_credential_generation(&mut self, key: &AccountKey) -> u64;

    /// What to persist: the statuses changed since the last call (every status with `all`)
    /// and the accounts removed since.
    fn take_changes(&mut self, all: bool) -> StateBatch;
}

#[derive(Debug, Default)]
struct Slot {
    status: AccountStatus,
    in_flight: PerCapability<u32>,
    credential_generation: u64,
}

/// [`PoolState`] in this process's memory, owned by the supervisor actor.
#[derive(Debug, Default)]
pub struct InProcessState {
    /// Key order is the selection order (fill first takes the first e-mail).
    slots: BTreeMap<AccountKey, Slot>,
    cursor: usize,
    dirty: HashSet<AccountKey>,
    deleted: Vec<String>,
}

impl InProcessState {
    pub fn new() -> InProcessState {
        InProcessState::default()
    }
}

impl PoolState for InProcessState {
    fn insert(&mut self, key: AccountKey, status: AccountStatus) {
        self.dirty.insert(key.clone());
        self.deleted.retain(|d| d != key.as_str());
        self.slots.entry(key).or_default().status = status;
    }

    fn remove(&mut self, key: &AccountKey) -> bool {
        if self.slots.remove(key).is_none() {
            return false;
        }
        self.dirty.remove(key);
        self.deleted.push(key.as_str().to_owned());
        true
    }

    fn status(&self, key: &AccountKey) -> Option<AccountStatus> {
        self.slots.get(key).map(|s| s.status.clone())
    }

    fn in_flight(&self, key: &AccountKey) -> PerCapability<u32> {
        self.slots.get(key).map(|s| s.in_flight).unwrap_or_default()
    }

    fn apply(
        &mut self,
        key: &AccountKey,
        event: Event,
        now: UnixMs,
        policy: &FailurePolicy,
    ) -> Option<Effects> {
        let slot = self.slots.get_mut(key)?;
        let fx = slot.status.apply(event, now, policy);
        if fx.changed {
            self.dirty.insert(key.clone());
        }
        Some(fx)
    }

    fn lease(
        &mut self,
        cap: Capability,
        now: UnixMs,
        policy: &SelectionPolicy,
        skip: &dyn Fn(&AccountKey) -> bool,
    ) -> Result<AccountKey, Duration> {
        let candidates: Vec<Candidate<'_>> = self
            .slots
            .iter()
            .map(|(key, slot)| Candidate {
                status: &slot.status,
                in_flight: slot.in_flight,
                excluded: skip(key),
            })
            .collect();
        let i = match selection::select(&candidates, cap, now, policy, &mut self.cursor) {
            Choice::Picked(i) => i,
            Choice::Unavailable { retry_after } => return Err(retry_after),
        };
        let Some((key, slot)) = self.slots.iter_mut().nth(i) else {
            return Err(selection::NO_ACCOUNT_RETRY);
        };
        *slot.in_flight.get_mut(cap) += 1;
        slot.status.last_used = Some(now);
        self.dirty.insert(key.clone());
        Ok(key.clone())
    }

    fn release(&mut self, key: &AccountKey, cap: Capability) {
        if let Some(slot) = self.slots.get_mut(key) {
            let n = slot.in_flight.get_mut(cap);
            *n = n.saturating_sub(1);
        }
    }

    fn credential_generation(&self, key: &AccountKey) -> u64 {
        self.slots.get(key).map_or(0, |s| s.credential_generation)
    }

    fn next_credential_generation(&mut self, key: &AccountKey) -> u64 {
        match self.slots.get_mut(key) {
            Some(slot) => {
                slot.credential_generation += 1;
                slot.credential_generation
            }
            None => 0,
        }
    }

    fn take_changes(&mut self, all: bool) -> StateBatch {
        let states = self
            .slots
            .iter()
            .filter(|(key, _)| all || self.dirty.contains(*key))
            .map(|(key, slot)| {
                let mut status = slot.status.clone();
                if all && status.state == AccountState::RefreshingToken {
                    // A mint does not survive a restart.
                    status.state = AccountState::Ready;
                }
                (key.as_str().to_owned(), status)
            })
            .collect();
        self.dirty.clear();
        StateBatch {
            states,
            deleted: std::mem::take(&mut self.deleted),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Selection;

    fn policy() -> SelectionPolicy {
        SelectionPolicy {
            strategy: Selection::RoundRobin,
            use_cooldown: Duration::ZERO,
            max_concurrent: 1,
            daily_limits: PerCapability::default(),
        }
    }

    #[test]
    fn a_lease_picks_and_counts_in_one_step_and_release_frees_it() {
        let mut s = InProcessState::new();
        let a = AccountKey::new("a@x.com");
        s.insert(a.clone(), AccountStatus::default());
        let got = s.lease(Capability::Text, 1000, &policy(), &|_| false);
        assert_eq!(got, Ok(a.clone()));
        assert_eq!(s.in_flight(&a).text, 1);
        assert_eq!(s.status(&a).and_then(|st| st.last_used), Some(1000));
        // max_concurrent 1: busy.
        assert_eq!(
            s.lease(Capability::Text, 1000, &policy(), &|_| false),
            Err(selection::BUSY_RETRY)
        );
        s.release(&a, Capability::Text);
        assert_eq!(s.in_flight(&a).text, 0);
        assert!(
            s.lease(Capability::Text, 1000, &policy(), &|k| k == &a)
                .is_err()
        );
    }

    #[test]
    fn changes_are_handed_out_once_and_removals_are_reported() {
        let mut s = InProcessState::new();
        let a = AccountKey::new("a@x.com");
        let b = AccountKey::new("b@x.com");
        s.insert(a.clone(), AccountStatus::default());
        s.insert(b.clone(), AccountStatus::default());
        assert_eq!(s.take_changes(false).states.len(), 2);
        assert!(s.take_changes(false).states.is_empty());
        assert!(s.remove(&b));
        let batch = s.take_changes(false);
        assert_eq!(batch.deleted, vec!["b@x.com".to_owned()]);
        assert_eq!(s.take_changes(true).states.len(), 1);
    }

    #[test]
    fn credential_generations_only_grow_and_survive_a_status_replacement() {
        let mut s = InProcessState::new();
        let a = AccountKey::new("a@x.com");
        s.insert(a.clone(), AccountStatus::default());
        assert_eq!(s.credential_generation(&a), 0);
        assert_eq!(s.next_credential_generation(&a), 1);
        s.insert(a.clone(), AccountStatus::default());
        assert_eq!(s.credential_generation(&a), 1);
    }
}
