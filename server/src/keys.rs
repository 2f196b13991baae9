//! Named API keys with limits (what LiteLLM users call virtual keys), managed through
//! `/admin/keys` and the panel, next to the configured `api_keys`, which keep working
//! unchanged.
//!
//! - A key is shown once, when created; the store keeps its SHA-256 (table `api_keys`). Keys
//!   are 256 random bits, so a fast hash is enough: nobody can search the key space, and the
//!   lookup by hash does not leak timing about a key (the attacker would need a preimage).
//! - Each key may carry allowed models (exact public names as `/v1/models` lists them),
//!   requests per minute (a sliding minute over the POST requests it made) and tokens per UTC
//!   day (input + output, as the usage of the answers counts them). Over a limit the request
//!   gets the dialect's 429 with `retry-after`; a model outside the list a 403.
//! - Today's counters and the last use are written behind with the usage history (at most a
//!   few seconds are lost in a crash), so a restart does not reset a daily limit.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use actix_web::HttpMessage as _;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore as _;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use crate::error::GatewayError;
use crate::store::{Store, StoreError};

const KEY_SCHEMA_VERSION: u32 = 1;
/// Longest key name.
const MAX_NAME_CHARS: usize = 64;
/// Most keys (each is a row in the panel, a label in the statistics).
pub const MAX_KEYS: usize = 1000;

/// A stored key (never the key itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    pub v: u32,
    pub id: String,
    pub name: String,
    /// Hex SHA-256 of the key.
    pub hash: String,
    /// The first characters of the key, to recognise it.
    pub prefix: String,
    pub models: Option<Vec<String>>,
    pub rpm: Option<u32>,
    pub tokens_per_day: Option<u64>,
    pub created_at: u64,
    pub last_used_at: Option<u64>,
    /// The UTC day (days since the epoch) the counters below are of.
    pub day: u64,
    pub tokens_today: u64,
    pub requests_today: u64,
}

impl KeyRecord {
    fn view(&self, today: u64) -> Value {
        let (requests, tokens) = if self.day == today {
            (self.requests_today, self.tokens_today)
        } else {
            (0, 0)
        };
        json!({
            "id": self.id,
            "name": self.name,
            "prefix": format!("{}…", self.prefix),
            "models": self.models,
            "rpm": self.rpm,
            "tokens_per_day": self.tokens_per_day,
            "created_at": self.created_at,
            "last_used_at": self.last_used_at,
            "requests_today": requests,
            "tokens_today": tokens,
        })
    }
}

/// Who a request is, as far as its key tells.
#[derive(Debug, Clone)]
pub enum Caller {
    /// A key of `api_keys` (or the generated key): its label is a short hash of the key.
    Configured(Arc<str>),
    /// A named key.
    Named(Arc<NamedKey>),
    /// No key needed (`allow_unauthenticated`).
    Open,
}

/// What a request needs of its named key.
#[derive(Debug)]
pub struct NamedKey {
    pub id: String,
    pub name: Arc<str>,
    pub models: Option<Vec<String>>,
}

impl Caller {
    /// The name the usage statistics count this caller under (`None`: no key).
    pub fn label(&self) -> Option<Arc<str>> {
        match self {
            Caller::Configured(label) => Some(Arc::clone(label)),
            Caller::Named(key) => Some(Arc::clone(&key.name)),
            Caller::Open => None,
        }
    }

    /// The caller of a request (set by the API-key middleware).
    pub fn of(req: &actix_web::HttpRequest) -> Option<Caller> {
        req.extensions().get::<Caller>().cloned()
    }
}

/// The label of a configured key: `config-` and the first 8 hex digits of its SHA-256.
pub fn configured_label(key: &str) -> Arc<str> {
    let digest = Sha256::digest(key.as_bytes());
    Arc::from(format!("config-{}", hex8(&digest)).as_str())
}

fn hex8(digest: &[u8]) -> String {
    digest.iter().take(4).map(|b| format!("{b:02x}")).collect()
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether the request's key may use `model` (every model, unless a named key lists some).
pub fn allows(req: &actix_web::HttpRequest, model: &str) -> bool {
    match Caller::of(req) {
        Some(Caller::Named(key)) => key
            .models
            .as_ref()
            .is_none_or(|models| models.iter().any(|m| m == model)),
        _ => true,
    }
}

/// Refuses `model` when the request's named key does not allow it.
pub fn check_model(req: &actix_web::HttpRequest, model: &str) -> Result<(), GatewayError> {
    if allows(req, model) {
        Ok(())
    } else {
        Err(refusal(req, model))
    }
}

/// The refusal of `model` for the request's named key (which does not allow it).
pub fn refusal(req: &actix_web::HttpRequest, model: &str) -> GatewayError {
    let (name, allowed) = match Caller::of(req) {
        Some(Caller::Named(key)) => (
            key.name.to_string(),
            key.models
                .as_ref()
                .map(|m| m.join(", "))
                .unwrap_or_default(),
        ),
        _ => (String::new(), String::new()),
    };
    GatewayError::ModelNotAllowed(format!(
        "the API key \"{name}\" may not use the model `{model}` (allowed: {allowed})"
    ))
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn day_of(ms: u64) -> u64 {
    ms / 86_400_000
}

#[derive(Debug)]
struct Live {
    record: KeyRecord,
    info: Arc<NamedKey>,
    /// Times (unix ms) of the POST requests of the last minute, at most `rpm` of them.
    window: VecDeque<u64>,
}

impl Live {
    fn new(record: KeyRecord) -> Live {
        let info = Arc::new(NamedKey {
            id: record.id.clone(),
            name: Arc::from(record.name.as_str()),
            models: record.models.clone(),
        });
        Live {
            record,
            info,
            window: VecDeque::new(),
        }
    }

    fn roll(&mut self, today: u64) {
        if self.record.day != today {
            self.record.day = today;
            self.record.tokens_today = 0;
            self.record.requests_today = 0;
        }
    }
}

#[derive(Debug, Default)]
struct Ring {
    keys: HashMap<String, Live>,
    by_hash: HashMap<[u8; 32], String>,
    dirty: HashSet<String>,
}

/// What an admin asks for a key (create, or change: a field left out keeps its value).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySpec {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "some")]
    pub models: Option<Option<Vec<String>>>,
    #[serde(default, deserialize_with = "some")]
    pub rpm: Option<Option<u32>>,
    #[serde(default, deserialize_with = "some")]
    pub tokens_per_day: Option<Option<u64>>,
}

/// A present field (even `null`) is `Some`.
fn some<'de, T: Deserialize<'de>, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// Why an admin change was refused.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{0}")]
    Invalid(String),
    #[error("no API key with id {0:?}")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The named keys of the running gateway.
#[derive(Debug)]
pub struct KeyRing {
    ring: Mutex<Ring>,
    store: Arc<Store>,
}

impl KeyRing {
    /// Loads the stored keys. A record that cannot be read is skipped with a warning (its
    /// key stops working; the others keep theirs).
    pub fn load(store: Arc<Store>) -> Result<KeyRing, StoreError> {
        let mut ring = Ring::default();
        for (id, bytes) in store.api_keys()? {
            match serde_json::from_slice::<KeyRecord>(&bytes) {
                Ok(record) => match parse_hash(&record.hash) {
                    Some(hash) => {
                        ring.by_hash.insert(hash, id.clone());
                        ring.keys.insert(id, Live::new(record));
                    }
                    None => tracing::warn!(id = %id, "a stored API key has no valid hash; skipped"),
                },
                Err(e) => {
                    tracing::warn!(id = %id, error = %e, "a stored API key cannot be read; skipped")
                }
            }
        }
        Ok(KeyRing {
            ring: Mutex::new(ring),
            store,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Ring> {
        self.ring
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The named key `presented` is, if any.
    pub fn lookup(&self, presented: &str) -> Option<Arc<NamedKey>> {
        let hash: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let ring = self.lock();
        let id = ring.by_hash.get(&hash)?;
        ring.keys.get(id).map(|l| Arc::clone(&l.info))
    }

    /// Admits one request of `key` now, or says when it may come back. `counts` — whether
    /// the request counts toward the per-minute limit (POST requests do).
    pub fn admit(&self, key: &NamedKey, counts: bool) -> Result<(), GatewayError> {
        self.admit_at(key, counts, now_ms())
    }

    fn admit_at(&self, key: &NamedKey, counts: bool, now: u64) -> Result<(), GatewayError> {
        let mut ring = self.lock();
        let ring = &mut *ring;
        let Some(live) = ring.keys.get_mut(&key.id) else {
            // Deleted since the lookup.
            return Err(GatewayError::InvalidApiKey);
        };
        let today = day_of(now);
        live.roll(today);
        if let Some(limit) = live.record.tokens_per_day
            && live.record.tokens_today >= limit
        {
            let reset = (today + 1) * 86_400_000;
            return Err(GatewayError::KeyLimit {
                message: format!(
                    "the API key \"{}\" has used its {limit} tokens for today; the limit resets at 00:00 UTC",
                    live.record.name
                ),
                retry_after: Duration::from_millis(reset.saturating_sub(now)),
            });
        }
        if !counts {
            return Ok(());
        }
        if let Some(rpm) = live.record.rpm {
            let since = now.saturating_sub(60_000);
            while live.window.front().is_some_and(|t| *t <= since) {
                live.window.pop_front();
            }
            if live.window.len() >= rpm as usize {
                let oldest = live.window.front().copied().unwrap_or(now);
                return Err(GatewayError::KeyLimit {
                    message: format!(
                        "the API key \"{}\" is limited to {rpm} requests per minute",
                        live.record.name
                    ),
                    retry_after: Duration::from_millis((oldest + 60_000).saturating_sub(now)),
                });
            }
            live.window.push_back(now);
        }
        live.record.requests_today += 1;
        live.record.last_used_at = Some(now / 1000);
        ring.dirty.insert(key.id.clone());
        Ok(())
    }

    /// Counts the tokens of a finished answer against the key's day.
    pub fn charge(&self, id: &str, tokens: u64) {
        let now = now_ms();
        let mut ring = self.lock();
        if let Some(live) = ring.keys.get_mut(id) {
            live.roll(day_of(now));
            live.record.tokens_today = live.record.tokens_today.saturating_add(tokens);
            ring.dirty.insert(id.to_owned());
        }
    }

    /// Every key, oldest first.
    pub fn list(&self) -> Vec<Value> {
        let today = day_of(now_ms());
        let ring = self.lock();
        let mut records: Vec<&KeyRecord> = ring.keys.values().map(|l| &l.record).collect();
        records.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        records.iter().map(|r| r.view(today)).collect()
    }

    /// Creates a key from `spec` (`name` required); returns its view and the key, which is
    /// never shown again. `known` says whether a model name exists. Blocking (store write).
    pub fn create(
        &self,
        spec: KeySpec,
        known: impl Fn(&str) -> bool,
    ) -> Result<(Value, String), KeyError> {
        let name = spec
            .name
            .clone()
            .ok_or_else(|| KeyError::Invalid("`name` is required".into()))?;
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        let secret = format!("sk-b2a-{}", URL_SAFE_NO_PAD.encode(bytes));
        let digest: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
        let mut idb = [0u8; 8];
        rand::rng().fill_bytes(&mut idb);
        let now = now_ms();
        let mut record = KeyRecord {
            v: KEY_SCHEMA_VERSION,
            id: format!("key_{}", hex(&idb)),
            name: String::new(),
            hash: hex(&digest),
            prefix: secret.chars().take(11).collect(),
            models: None,
            rpm: None,
            tokens_per_day: None,
            created_at: now / 1000,
            last_used_at: None,
            day: day_of(now),
            tokens_today: 0,
            requests_today: 0,
        };
        let mut ring = self.lock();
        if ring.keys.len() >= MAX_KEYS {
            return Err(KeyError::Invalid(format!(
                "there are already {MAX_KEYS} API keys; delete one first"
            )));
        }
        apply(
            &mut record,
            KeySpec {
                name: Some(name),
                ..spec
            },
            &ring,
            &known,
        )?;
        self.store
            .write_api_keys(&[(record.id.clone(), Some(encode(&record)))])?;
        let view = record.view(record.day);
        ring.by_hash.insert(digest, record.id.clone());
        ring.keys.insert(record.id.clone(), Live::new(record));
        Ok((view, secret))
    }

    /// Changes a key's name or limits. Blocking (store write).
    pub fn update(
        &self,
        id: &str,
        spec: KeySpec,
        known: impl Fn(&str) -> bool,
    ) -> Result<Value, KeyError> {
        let mut ring = self.lock();
        let mut record = ring
            .keys
            .get(id)
            .map(|l| l.record.clone())
            .ok_or_else(|| KeyError::NotFound(id.to_owned()))?;
        apply(&mut record, spec, &ring, &known)?;
        self.store
            .write_api_keys(&[(record.id.clone(), Some(encode(&record)))])?;
        let today = day_of(now_ms());
        let view = record.view(today);
        if let Some(live) = ring.keys.get_mut(id) {
            let window = std::mem::take(&mut live.window);
            *live = Live::new(record);
            live.window = window;
        }
        Ok(view)
    }

    /// Deletes a key: it stops working at once. Blocking (store write).
    pub fn delete(&self, id: &str) -> Result<(), KeyError> {
        let mut ring = self.lock();
        let Some(live) = ring.keys.get(id) else {
            return Err(KeyError::NotFound(id.to_owned()));
        };
        let hash = parse_hash(&live.record.hash);
        self.store.write_api_keys(&[(id.to_owned(), None)])?;
        ring.keys.remove(id);
        ring.dirty.remove(id);
        if let Some(hash) = hash {
            ring.by_hash.remove(&hash);
        }
        Ok(())
    }

    /// The records whose counters changed since the last call (for the usage flusher).
    pub fn take_dirty(&self) -> Vec<(String, Option<Vec<u8>>)> {
        let mut ring = self.lock();
        let dirty = std::mem::take(&mut ring.dirty);
        dirty
            .into_iter()
            .filter_map(|id| {
                let bytes = encode(&ring.keys.get(&id)?.record);
                Some((id, Some(bytes)))
            })
            .collect()
    }

    /// Marks keys to be written again (after a failed flush).
    pub fn mark_dirty(&self, ids: impl IntoIterator<Item = String>) {
        let mut ring = self.lock();
        for id in ids {
            if ring.keys.contains_key(&id) {
                ring.dirty.insert(id);
            }
        }
    }

    /// Writes the changed counters now. Blocking.
    pub fn flush(&self) -> Result<(), StoreError> {
        let dirty = self.take_dirty();
        if dirty.is_empty() {
            return Ok(());
        }
        self.store.write_api_keys(&dirty).inspect_err(|_| {
            self.mark_dirty(dirty.iter().map(|(id, _)| id.clone()));
        })
    }
}

fn encode(record: &KeyRecord) -> Vec<u8> {
    serde_json::to_vec(record).unwrap_or_default()
}

fn parse_hash(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(out)
}

fn apply(
    record: &mut KeyRecord,
    spec: KeySpec,
    ring: &Ring,
    known: &impl Fn(&str) -> bool,
) -> Result<(), KeyError> {
    if let Some(name) = spec.name {
        let name = name.trim().to_owned();
        let valid = !name.is_empty()
            && name.chars().count() <= MAX_NAME_CHARS
            && name
                .chars()
                .all(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_' | '.' | '@'));
        if !valid {
            return Err(KeyError::Invalid(format!(
                "`name` must be 1 to {MAX_NAME_CHARS} letters, digits, spaces or - _ . @"
            )));
        }
        if name.starts_with("config-") {
            return Err(KeyError::Invalid(
                "`name` may not start with \"config-\" (the statistics use it for configured keys)"
                    .into(),
            ));
        }
        if ring
            .keys
            .values()
            .any(|l| l.record.id != record.id && l.record.name == name)
        {
            return Err(KeyError::Invalid(format!(
                "another API key is already named {name:?}"
            )));
        }
        record.name = name;
    }
    if let Some(models) = spec.models {
        if let Some(list) = &models {
            if list.is_empty() {
                return Err(KeyError::Invalid(
                    "`models` must list at least one model, or be null for every model".into(),
                ));
            }
            if let Some(unknown) = list.iter().find(|m| !known(m)) {
                return Err(KeyError::Invalid(format!(
                    "`models` names {unknown:?}, which is not a model of this gateway (see GET /v1/models)"
                )));
            }
        }
        record.models = models;
    }
    if let Some(rpm) = spec.rpm {
        if rpm == Some(0) {
            return Err(KeyError::Invalid(
                "`rpm` must be at least 1, or null for no limit".into(),
            ));
        }
        record.rpm = rpm;
    }
    if let Some(tokens) = spec.tokens_per_day {
        if tokens == Some(0) {
            return Err(KeyError::Invalid(
                "`tokens_per_day` must be at least 1, or null for no limit".into(),
            ));
        }
        record.tokens_per_day = tokens;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring() -> (tempfile::TempDir, Arc<Store>, KeyRing) {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let ring = KeyRing::load(Arc::clone(&store)).unwrap();
        (dir, store, ring)
    }

    fn spec(json: &str) -> KeySpec {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn a_created_key_is_found_by_its_secret_and_stored_only_hashed() {
        let (_dir, store, ring) = ring();
        let (view, secret) = ring
            .create(spec(r#"{"name": "team a", "rpm": 5}"#), |_| true)
            .unwrap();
        assert!(secret.starts_with("sk-b2a-"));
        let found = ring.lookup(&secret).unwrap();
        assert_eq!(found.id, view["id"].as_str().unwrap());
        assert!(ring.lookup("sk-b2a-nope").is_none());
        let stored = store.api_keys().unwrap();
        let text = String::from_utf8(stored[0].1.clone()).unwrap();
        assert!(!text.contains(&secret[11..]), "{text}");
        // Reloaded from the store, the key still works.
        let again = KeyRing::load(store).unwrap();
        assert!(again.lookup(&secret).is_some());
    }

    #[test]
    fn rpm_is_a_sliding_minute_and_says_when_to_come_back() {
        let (_dir, _store, ring) = ring();
        let (_, secret) = ring
            .create(spec(r#"{"name": "k", "rpm": 2}"#), |_| true)
            .unwrap();
        let key = ring.lookup(&secret).unwrap();
        let t0 = 1_000_000_000;
        ring.admit_at(&key, true, t0).unwrap();
        ring.admit_at(&key, false, t0 + 1).unwrap();
        ring.admit_at(&key, true, t0 + 10_000).unwrap();
        let err = ring.admit_at(&key, true, t0 + 20_000).unwrap_err();
        assert_eq!(err.status(), 429);
        assert_eq!(err.retry_after(), Some(Duration::from_secs(40)));
        ring.admit_at(&key, true, t0 + 60_001).unwrap();
    }

    #[test]
    fn tokens_per_day_stop_the_key_until_midnight_utc() {
        let (_dir, _store, ring) = ring();
        let (_, secret) = ring
            .create(spec(r#"{"name": "k", "tokens_per_day": 100}"#), |_| true)
            .unwrap();
        let key = ring.lookup(&secret).unwrap();
        ring.charge(&key.id, 100);
        let now = now_ms();
        let err = ring.admit_at(&key, true, now).unwrap_err();
        assert_eq!(err.status(), 429);
        let left = err.retry_after().unwrap();
        assert!(left <= Duration::from_secs(86_400) && left > Duration::ZERO);
        // The next day it works again.
        ring.admit_at(&key, true, (day_of(now) + 1) * 86_400_000 + 5)
            .unwrap();
    }

    #[test]
    fn specs_are_validated() {
        let (_dir, _store, ring) = ring();
        let known = |m: &str| m == "gemini-2.5-flash";
        for bad in [
            r#"{}"#,
            r#"{"name": ""}"#,
            r#"{"name": "config-x"}"#,
            r#"{"name": "a", "rpm": 0}"#,
            r#"{"name": "a", "models": []}"#,
            r#"{"name": "a", "models": ["gpt-5"]}"#,
        ] {
            assert!(ring.create(spec(bad), known).is_err(), "{bad}");
        }
        assert!(serde_json::from_str::<KeySpec>(r#"{"name": "a", "rmp": 1}"#).is_err());
        let (view, _) = ring
            .create(
                spec(r#"{"name": "a", "models": ["gemini-2.5-flash"]}"#),
                known,
            )
            .unwrap();
        assert!(ring.create(spec(r#"{"name": "a"}"#), known).is_err());
        let id = view["id"].as_str().unwrap();
        let changed = ring
            .update(id, spec(r#"{"models": null, "rpm": 3}"#), known)
            .unwrap();
        assert_eq!(changed["models"], Value::Null);
        assert_eq!(changed["rpm"], 3);
        assert_eq!(changed["name"], "a");
        ring.delete(id).unwrap();
        assert!(matches!(ring.delete(id), Err(KeyError::NotFound(_))));
    }
}
