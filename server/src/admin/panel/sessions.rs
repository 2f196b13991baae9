//! Panel sessions, in memory: a random session id (the cookie) and a per-session CSRF token.
//! Sessions expire after [`IDLE_TIMEOUT`] without use; at most [`MAX_SESSIONS`] exist (the least
//! recently used goes first). The map is keyed by the SHA-256 of the id, so a lookup compares
//! digests, never the id itself; the CSRF token is compared in constant time.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use business2api_shared::secret::constant_time_eq;
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};

/// A session unused this long is gone.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// Sessions kept at most.
pub const MAX_SESSIONS: usize = 64;

/// 32 random bytes, base64url.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

fn digest(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

#[derive(Debug)]
struct Session {
    csrf: String,
    last_used: Instant,
}

/// The live sessions.
#[derive(Debug)]
pub struct SessionStore {
    sessions: HashMap<[u8; 32], Session>,
    idle: Duration,
    capacity: usize,
}

impl Default for SessionStore {
    fn default() -> Self {
        SessionStore::new(IDLE_TIMEOUT, MAX_SESSIONS)
    }
}

impl SessionStore {
    pub fn new(idle: Duration, capacity: usize) -> SessionStore {
        SessionStore {
            sessions: HashMap::new(),
            idle,
            capacity: capacity.max(1),
        }
    }

    /// A new session: `(id, csrf token)`.
    pub fn create(&mut self, now: Instant) -> (String, String) {
        let idle = self.idle;
        self.sessions
            .retain(|_, s| now.duration_since(s.last_used) < idle);
        while self.sessions.len() >= self.capacity {
            let Some(oldest) = self
                .sessions
                .iter()
                .min_by_key(|(_, s)| s.last_used)
                .map(|(k, _)| *k)
            else {
                break;
            };
            self.sessions.remove(&oldest);
        }
        let id = random_token();
        let csrf = random_token();
        self.sessions.insert(
            digest(&id),
            Session {
                csrf: csrf.clone(),
                last_used: now,
            },
        );
        (id, csrf)
    }

    /// The CSRF token of a live session (and marks it used), `None` when unknown or expired.
    pub fn touch(&mut self, id: &str, now: Instant) -> Option<String> {
        let key = digest(id);
        let session = self.sessions.get_mut(&key)?;
        if now.duration_since(session.last_used) >= self.idle {
            self.sessions.remove(&key);
            return None;
        }
        session.last_used = now;
        Some(session.csrf.clone())
    }

    /// Ends a session.
    pub fn remove(&mut self, id: &str) -> bool {
        self.sessions.remove(&digest(id)).is_some()
    }

    /// Ends every session (the password changed).
    pub fn clear(&mut self) {
        self.sessions.clear();
    }

    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }
}

/// Whether the CSRF token a request presents is the session's (constant time).
pub fn csrf_matches(expected: &str, presented: Option<&str>) -> bool {
    match presented {
        Some(p) if !p.is_empty() => constant_time_eq(expected.as_bytes(), p.as_bytes()),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_live_until_idle_and_end_on_logout() {
        let mut s = SessionStore::new(Duration::from_secs(60), 10);
        let t0 = Instant::now();
        let (id, csrf) = s.create(t0);
        assert_ne!(id, csrf);
        assert_eq!(
            s.touch(&id, t0 + Duration::from_secs(59)),
            Some(csrf.clone())
        );
        // Use keeps it alive.
        assert!(s.touch(&id, t0 + Duration::from_secs(100)).is_some());
        assert!(s.touch(&id, t0 + Duration::from_secs(161)).is_none());
        assert!(s.is_empty());
        let (id, _) = s.create(t0);
        assert!(s.remove(&id));
        assert!(s.touch(&id, t0).is_none());
        assert!(s.touch("made-up", t0).is_none());
    }

    #[test]
    fn the_count_is_bounded() {
        let mut s = SessionStore::new(Duration::from_secs(60), 3);
        let t0 = Instant::now();
        let ids: Vec<String> = (0..5)
            .map(|i| s.create(t0 + Duration::from_millis(i)).0)
            .collect();
        assert_eq!(s.len(), 3);
        assert!(s.touch(&ids[0], t0).is_none(), "the oldest went first");
        assert!(s.touch(&ids[4], t0).is_some());
    }

    #[test]
    fn csrf_tokens_compare_whole() {
        assert!(csrf_matches("abc", Some("abc")));
        assert!(!csrf_matches("abc", Some("abd")));
        assert!(!csrf_matches("abc", Some("ab")));
        assert!(!csrf_matches("abc", Some("")));
        assert!(!csrf_matches("abc", None));
    }
}
