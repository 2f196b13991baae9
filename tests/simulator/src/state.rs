//! Shared simulator state: accounts, issued keys, sessions, files, scripts and records.
//!
//! Everything lives behind one `std::sync::Mutex` that is never held across an `.await`.
//! Every collection is bounded; the oldest entries are evicted first.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use rand::Rng;
use serde_json::Value;

use crate::gate::Gate;
use crate::login::LoginState;
use crate::mail::Mailbox;
use crate::model::{
    Answer, Endpoint, Fault, FaultRule, FileUris, RecordedRequest, SimAccount, SimStats, Upload,
};

/// Project prefix of full session names (`projects/<number>/locations/global/`).
pub(crate) const PROJECT_PREFIX: &str = "projects/123456789/locations/global/";
/// Prefix of short session names returned by U2.
pub(crate) const SESSION_PREFIX: &str =
    "collections/default_collection/engines/agentspace-engine/sessions/";

/// Issued U1 keys kept (oldest evicted).
const MAX_KEYS: usize = 10_000;
/// Sessions kept (oldest evicted, with their files).
const MAX_SESSIONS: usize = 10_000;
/// Uploaded / generated files kept per session.
const MAX_FILES_PER_SESSION: usize = 1_000;
/// Recorded requests kept per endpoint.
const MAX_RECORDS: usize = 10_000;
/// Upload records kept.
const MAX_UPLOADS: usize = 1_000;
/// Uploads up to this size keep their bytes in the upload record.
const MAX_RECORDED_UPLOAD_BYTES: usize = 1 << 20;

/// A map that keeps at most `cap` entries, evicting the oldest inserted.
pub(crate) struct BoundedMap<K, V> {
    map: HashMap<K, V>,
    order: VecDeque<K>,
    cap: usize,
}

impl<K: Eq + Hash + Clone, V> BoundedMap<K, V> {
    pub(crate) fn new(cap: usize) -> Self {
        BoundedMap {
            map: HashMap::new(),
            order: VecDeque::new(),
            cap,
        }
    }

    pub(crate) fn insert(&mut self, key: K, value: V) {
        if self.map.insert(key.clone(), value).is_none() {
            self.order.push_back(key);
        }
        while self.map.len() > self.cap {
            match self.order.pop_front() {
                Some(old) => {
                    self.map.remove(&old);
                }
                None => break,
            }
        }
    }

    pub(crate) fn get(&self, key: &K) -> Option<&V> {
        self.map.get(key)
    }

    pub(crate) fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        self.map.get_mut(key)
    }

    pub(crate) fn remove(&mut self, key: &K) -> Option<V> {
        let v = self.map.remove(key)?;
        self.order.retain(|k| k != key);
        Some(v)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.map.iter()
    }

    pub(crate) fn clear(&mut self) {
        self.map.clear();
        self.order.clear();
    }

    pub(crate) fn contains_key(&self, key: &K) -> bool {
        self.map.contains_key(key)
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }
}

/// A key issued by U1.
#[derive(Clone)]
pub(crate) struct IssuedKey {
    pub(crate) key: Vec<u8>,
    pub(crate) csesidx: String,
}

/// A file generated into a session by a U4 answer.
#[derive(Clone)]
pub(crate) struct StoredFile {
    pub(crate) file_id: String,
    pub(crate) name: String,
    pub(crate) mime: String,
    pub(crate) bytes: Bytes,
}

/// A session created by U2.
pub(crate) struct SessionState {
    pub(crate) csesidx: String,
    pub(crate) uploaded: VecDeque<String>,
    pub(crate) generated: VecDeque<StoredFile>,
}

/// Everything mutable.
pub(crate) struct Inner {
    pub(crate) accounts: HashMap<String, SimAccount>,
    pub(crate) keys: BoundedMap<String, IssuedKey>,
    pub(crate) sessions: BoundedMap<String, SessionState>,
    pub(crate) faults: Vec<FaultRule>,
    pub(crate) answer: Option<Answer>,
    pub(crate) queued: VecDeque<Answer>,
    pub(crate) hold: Option<Gate>,
    pub(crate) pacing: Duration,
    /// Added before answering each U2–U5 call (a network round trip to Google).
    pub(crate) call_latency: Duration,
    pub(crate) stats: SimStats,
    pub(crate) records: HashMap<Endpoint, VecDeque<RecordedRequest>>,
    pub(crate) last_stream_assist_body: Option<Value>,
    pub(crate) uploads: VecDeque<Upload>,
    /// U1 calls in progress per account.
    pub(crate) mints_in_flight: HashMap<String, u64>,
    /// How U3 treats `fileUri` uploads.
    pub(crate) file_uris: FileUris,
    /// The simulated login: scripts, pending logins, codes, counts.
    pub(crate) login: LoginState,
}

/// Shared state of one simulator.
pub(crate) struct State {
    inner: Mutex<Inner>,
    /// `http://127.0.0.1:PORT`, for `downloadUri`.
    pub(crate) base_url: String,
    /// Where the simulated login delivers its code e-mails.
    pub(crate) mailbox: Mailbox,
}

/// Random lowercase hex string of `n` bytes.
pub(crate) fn random_hex(n: usize) -> String {
    let mut rng = rand::rng();
    (0..n)
        .map(|_| format!("{:02x}", rng.random::<u8>()))
        .collect()
}

impl State {
    pub(crate) fn new(base_url: String, pacing: Duration) -> State {
        State {
            inner: Mutex::new(Inner {
                accounts: HashMap::new(),
                keys: BoundedMap::new(MAX_KEYS),
                sessions: BoundedMap::new(MAX_SESSIONS),
                faults: Vec::new(),
                answer: None,
                queued: VecDeque::new(),
                hold: None,
                pacing,
                call_latency: Duration::ZERO,
                stats: SimStats::default(),
                records: HashMap::new(),
                last_stream_assist_body: None,
                uploads: VecDeque::new(),
                mints_in_flight: HashMap::new(),
                file_uris: FileUris::Accept,
                login: LoginState::default(),
            }),
            base_url,
            mailbox: Mailbox::new(),
        }
    }

    /// Locks the state; a poisoned lock is recovered (the data stays consistent enough for a
    /// test double).
    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn add_account(&self, account: SimAccount) {
        self.lock()
            .accounts
            .insert(account.csesidx.clone(), account);
    }

    pub(crate) fn account(&self, csesidx: &str) -> Option<SimAccount> {
        self.lock().accounts.get(csesidx).cloned()
    }

    /// Issues a new key for `csesidx`: returns `(xsrfToken, keyId)`.
    pub(crate) fn issue_key(&self, csesidx: &str) -> (String, String) {
        let mut key = vec![0u8; 32];
        rand::rng().fill(&mut key[..]);
        let token = URL_SAFE_NO_PAD.encode(&key);
        let kid = format!("sim-{}", random_hex(12));
        self.lock().keys.insert(
            kid.clone(),
            IssuedKey {
                key,
                csesidx: csesidx.to_string(),
            },
        );
        (token, kid)
    }

    pub(crate) fn key(&self, kid: &str) -> Option<IssuedKey> {
        self.lock().keys.get(&kid.to_string()).cloned()
    }

    /// Creates a session owned by `csesidx`; returns its short name.
    pub(crate) fn create_session(&self, csesidx: &str) -> String {
        let mut inner = self.lock();
        let mut rng = rand::rng();
        let name = loop {
            let id: u64 = rng.random_range(1_000_000_000_000_000_000..10_000_000_000_000_000_000);
            let name = format!("{SESSION_PREFIX}{id}");
            if !inner.sessions.contains_key(&name) {
                break name;
            }
        };
        inner.sessions.insert(
            name.clone(),
            SessionState {
                csesidx: csesidx.to_string(),
                uploaded: VecDeque::new(),
                generated: VecDeque::new(),
            },
        );
        name
    }

    /// Whether the short session name exists and belongs to `csesidx`.
    pub(crate) fn owns_session(&self, csesidx: &str, session: &str) -> bool {
        self.lock()
            .sessions
            .get(&session.to_string())
            .is_some_and(|s| s.csesidx == csesidx)
    }

    /// Uploaded fileIds of a session (empty when unknown).
    pub(crate) fn uploaded_ids(&self, session: &str) -> Vec<String> {
        self.lock()
            .sessions
            .get(&session.to_string())
            .map(|s| s.uploaded.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Records an accepted upload and returns its new fileId.
    pub(crate) fn add_upload(&self, mut upload: Upload) -> String {
        let file_id = format!("file-{}", random_hex(8));
        upload.file_id = file_id.clone();
        if upload.byte_len > MAX_RECORDED_UPLOAD_BYTES {
            upload.bytes = None;
        }
        let mut inner = self.lock();
        if let Some(session) = inner.sessions.get_mut(&upload.session) {
            session.uploaded.push_back(file_id.clone());
            while session.uploaded.len() > MAX_FILES_PER_SESSION {
                session.uploaded.pop_front();
            }
        }
        inner.uploads.push_back(upload);
        while inner.uploads.len() > MAX_UPLOADS {
            inner.uploads.pop_front();
        }
        file_id
    }

    /// Stores a generated file in a session; returns its fileId.
    pub(crate) fn add_generated(&self, session: &str, mime: &str, bytes: Bytes) -> String {
        let file_id = format!("gen-{}", random_hex(8));
        let ext = mime.split('/').nth(1).unwrap_or("bin");
        let mut inner = self.lock();
        if let Some(s) = inner.sessions.get_mut(&session.to_string()) {
            let n = s.generated.len() + 1;
            let kind = if mime.starts_with("video/") {
                "video"
            } else {
                "image"
            };
            s.generated.push_back(StoredFile {
                file_id: file_id.clone(),
                name: format!("generated_{kind}_{n}.{ext}"),
                mime: mime.to_string(),
                bytes,
            });
            while s.generated.len() > MAX_FILES_PER_SESSION {
                s.generated.pop_front();
            }
        }
        file_id
    }

    /// Generated files of a session owned by `csesidx` (`None` when not found / not owned).
    pub(crate) fn generated_files(&self, csesidx: &str, session: &str) -> Option<Vec<StoredFile>> {
        self.lock()
            .sessions
            .get(&session.to_string())
            .filter(|s| s.csesidx == csesidx)
            .map(|s| s.generated.iter().cloned().collect())
    }

    /// The first matching fault rule's fault (counting the rule down).
    pub(crate) fn take_fault(
        &self,
        endpoint: Endpoint,
        csesidx: &str,
        prompt: Option<&str>,
    ) -> Option<Fault> {
        let mut inner = self.lock();
        let idx = inner
            .faults
            .iter()
            .position(|r| r.matches(endpoint, csesidx, prompt))?;
        let rule = inner.faults.get_mut(idx)?;
        let fault = rule.fault.clone();
        let exhausted = match rule.times.as_mut() {
            Some(n) => {
                *n = n.saturating_sub(1);
                *n == 0
            }
            None => false,
        };
        if exhausted {
            inner.faults.remove(idx);
        }
        Some(fault)
    }

    pub(crate) fn add_fault(&self, rule: FaultRule) {
        if rule.times == Some(0) {
            return;
        }
        self.lock().faults.push(rule);
    }

    /// The answer for the next U4 stream: a queued one, else the set one, else `None`
    /// (= the default echo answer).
    pub(crate) fn next_answer(&self) -> Option<Answer> {
        let mut inner = self.lock();
        match inner.queued.pop_front() {
            Some(a) => Some(a),
            None => inner.answer.clone(),
        }
    }

    pub(crate) fn count_call(&self, endpoint: Endpoint) {
        *self.lock().stats.calls.entry(endpoint).or_insert(0) += 1;
    }

    pub(crate) fn record(&self, endpoint: Endpoint, rec: RecordedRequest) {
        let mut inner = self.lock();
        let list = inner.records.entry(endpoint).or_default();
        list.push_back(rec);
        while list.len() > MAX_RECORDS {
            list.pop_front();
        }
    }

    /// A U1 call for `csesidx` began; tracks the most seen at once for one account.
    pub(crate) fn mint_started(&self, csesidx: &str) {
        let mut inner = self.lock();
        let n = inner.mints_in_flight.entry(csesidx.to_owned()).or_insert(0);
        *n += 1;
        let n = *n;
        let max = &mut inner.stats.max_concurrent_mints_per_account;
        *max = (*max).max(n);
    }

    pub(crate) fn mint_finished(&self, csesidx: &str) {
        if let Some(n) = self.lock().mints_in_flight.get_mut(csesidx) {
            *n = n.saturating_sub(1);
        }
    }

    pub(crate) fn jwt_rejected(&self) {
        self.lock().stats.jwts_rejected += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_map_evicts_oldest() {
        let mut m = BoundedMap::new(2);
        m.insert(1, "a");
        m.insert(2, "b");
        m.insert(1, "a2");
        m.insert(3, "c");
        assert_eq!(m.len(), 2);
        assert!(m.get(&1).is_none());
        assert_eq!(m.get(&3), Some(&"c"));
    }

    #[test]
    fn fault_rules_count_down() {
        let s = State::new(String::new(), Duration::ZERO);
        s.add_fault(FaultRule::once(Endpoint::StreamAssist, Fault::Unauthorized).times(2));
        s.add_fault(
            FaultRule::always(Endpoint::StreamAssist, Fault::ServerError(503)).for_account("7"),
        );
        assert!(matches!(
            s.take_fault(Endpoint::StreamAssist, "1", None),
            Some(Fault::Unauthorized)
        ));
        assert!(s.take_fault(Endpoint::CreateSession, "1", None).is_none());
        assert!(matches!(
            s.take_fault(Endpoint::StreamAssist, "1", None),
            Some(Fault::Unauthorized)
        ));
        assert!(s.take_fault(Endpoint::StreamAssist, "1", None).is_none());
        assert!(matches!(
            s.take_fault(Endpoint::StreamAssist, "7", None),
            Some(Fault::ServerError(503))
        ));
        assert!(matches!(
            s.take_fault(Endpoint::StreamAssist, "7", None),
            Some(Fault::ServerError(503))
        ));
    }

    #[test]
    fn a_prompt_marker_picks_the_requests_of_every_account_that_carry_it() {
        let s = State::new(String::new(), Duration::ZERO);
        s.add_fault(
            FaultRule::always(Endpoint::StreamAssist, Fault::ServerError(500))
                .when_prompt_contains("POISON"),
        );
        for account in ["1", "7"] {
            assert!(matches!(
                s.take_fault(Endpoint::StreamAssist, account, Some("x POISON y")),
                Some(Fault::ServerError(500))
            ));
            assert!(
                s.take_fault(Endpoint::StreamAssist, account, Some("clean"))
                    .is_none()
            );
        }
        // Without a prompt (other endpoints) a marker rule never matches.
        assert!(s.take_fault(Endpoint::StreamAssist, "1", None).is_none());
        assert!(s.take_fault(Endpoint::CreateSession, "1", None).is_none());
    }
}
