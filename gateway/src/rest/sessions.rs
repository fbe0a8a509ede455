//! Sessions the gateway opened for a name and password (HTTP Basic or
//! `X-OpenIDM-*`), kept briefly so a script's thousand calls cost one
//! `AuthService.Login` (one argon2 hash), not a thousand.
//!
//! The key is the SHA-256 of the name and password, never the password. An
//! entry lives at most [`TTL`] and never beyond the session's idle timeout or
//! end; the map holds at most [`CAPACITY`] entries. The core still checks the
//! session on every call: a session revoked meanwhile (logout, password
//! change, disabled account) is answered UNAUTHENTICATED, and the caller then
//! drops the entry and logs in once more (`Caller::call`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::core::Bearer;

pub const TTL: Duration = Duration::from_secs(60);
pub const CAPACITY: usize = 1024;

pub type LoginKey = [u8; 32];

/// The cache key of a name and password: their SHA-256, the name's length
/// first so `("ab", "c")` and `("a", "bc")` differ.
pub fn login_key(username: &str, password: &str) -> LoginKey {
    let mut hash = Sha256::new();
    hash.update((username.len() as u64).to_be_bytes());
    hash.update(username.as_bytes());
    hash.update(password.as_bytes());
    hash.finalize().into()
}

struct Entry {
    session: String,
    until: Instant,
}

pub struct SessionCache {
    ttl: Duration,
    capacity: usize,
    entries: Mutex<HashMap<LoginKey, Entry>>,
    /// One login at a time per name and password, so parallel first calls
    /// of a script cost one argon2 hash, not one each.
    logins: Mutex<HashMap<LoginKey, Arc<tokio::sync::Mutex<()>>>>,
}

/// The turn to log in for one name and password; the next waiter's turn
/// starts when it is dropped.
pub struct LoginTurn<'a> {
    cache: &'a SessionCache,
    key: LoginKey,
    lock: Arc<tokio::sync::Mutex<()>>,
    _guard: tokio::sync::OwnedMutexGuard<()>,
}

impl Drop for LoginTurn<'_> {
    fn drop(&mut self) {
        let Ok(mut logins) = self.cache.logins.lock() else {
            return;
        };
        // Nobody else waits (the map's handle, this turn's, and the
        // guard's own): the entry goes, so the map holds only logins in
        // progress.
        if Arc::strong_count(&self.lock) <= 3 {
            logins.remove(&self.key);
        }
    }
}

impl std::fmt::Debug for SessionCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionCache")
            .field("ttl", &self.ttl)
            .field("len", &self.len())
            .finish()
    }
}

impl Default for SessionCache {
    fn default() -> Self {
        Self::new(TTL, CAPACITY)
    }
}

impl SessionCache {
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        SessionCache {
            ttl,
            capacity: capacity.max(1),
            entries: Mutex::new(HashMap::new()),
            logins: Mutex::new(HashMap::new()),
        }
    }

    /// Waits for the turn to log in with this name and password. Check the
    /// cache again once it comes: the previous turn may have filled it.
    pub async fn login_turn(&self, key: &LoginKey) -> LoginTurn<'_> {
        let lock = match self.logins.lock() {
            Ok(mut logins) => logins.entry(*key).or_default().clone(),
            // A poisoned map: no queueing, only more logins.
            Err(_) => Arc::default(),
        };
        let guard = lock.clone().lock_owned().await;
        LoginTurn {
            cache: self,
            key: *key,
            lock,
            _guard: guard,
        }
    }

    /// How many names and passwords are being logged in for now.
    pub fn logins_in_progress(&self) -> usize {
        self.logins.lock().map_or(0, |logins| logins.len())
    }

    /// The session opened for this name and password, if still fresh.
    pub fn get(&self, key: &LoginKey) -> Option<Bearer> {
        let entries = self.entries.lock().ok()?;
        entries
            .get(key)
            .filter(|entry| Instant::now() < entry.until)
            .map(|entry| Bearer(entry.session.clone()))
    }

    /// Keeps a session for at most the TTL and at most `lifetime` (the
    /// session's idle timeout or remaining life, whichever is shorter).
    /// When full, expired entries go first, then everything.
    pub fn put(&self, key: LoginKey, session: &Bearer, lifetime: Duration) {
        let keep = self.ttl.min(lifetime);
        if keep.is_zero() {
            return;
        }
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        if entries.len() >= self.capacity && !entries.contains_key(&key) {
            let now = Instant::now();
            entries.retain(|_, entry| now < entry.until);
            if entries.len() >= self.capacity {
                entries.clear();
            }
        }
        entries.insert(
            key,
            Entry {
                session: session.0.clone(),
                until: Instant::now() + keep,
            },
        );
    }

    pub fn forget(&self, key: &LoginKey) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.remove(key);
        }
    }

    /// Drops every entry holding this session (after a logout by bearer).
    pub fn forget_session(&self, session: &Bearer) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.retain(|_, entry| entry.session != session.0);
        }
    }

    pub fn len(&self) -> usize {
        self.entries.lock().map_or(0, |entries| entries.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_a_session_for_the_shorter_of_ttl_and_lifetime() {
        let cache = SessionCache::new(Duration::from_secs(60), 8);
        let key = login_key("alice", "pw");
        cache.put(key, &Bearer("s1".into()), Duration::from_millis(40));
        assert_eq!(cache.get(&key).map(|b| b.0), Some("s1".to_string()));
        std::thread::sleep(Duration::from_millis(50));
        assert!(cache.get(&key).is_none());
    }

    #[test]
    fn a_different_password_is_a_different_key() {
        assert_ne!(login_key("alice", "pw1"), login_key("alice", "pw2"));
        assert_ne!(login_key("ab", "c"), login_key("a", "bc"));
    }

    #[test]
    fn stays_within_capacity_and_forgets() {
        let cache = SessionCache::new(Duration::from_secs(60), 16);
        for i in 0..1000 {
            cache.put(
                login_key(&format!("u{i}"), "pw"),
                &Bearer(format!("s{i}")),
                Duration::from_secs(60),
            );
            assert!(cache.len() <= 16);
        }
        let key = login_key("u999", "pw");
        assert!(cache.get(&key).is_some());
        cache.forget_session(&Bearer("s999".into()));
        assert!(cache.get(&key).is_none());
    }

    #[tokio::test]
    async fn logins_for_one_key_take_turns_and_leave_nothing_behind() {
        let cache = Arc::new(SessionCache::default());
        let key = login_key("alice", "pw");
        let first = cache.login_turn(&key).await;
        let waiter = {
            let cache = cache.clone();
            tokio::spawn(async move {
                let _turn = cache.login_turn(&key).await;
                cache.get(&key).map(|b| b.0)
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        // Another key is not held up.
        drop(cache.login_turn(&login_key("bob", "pw")).await);
        cache.put(key, &Bearer("s1".into()), TTL);
        drop(first);
        assert_eq!(waiter.await.unwrap().as_deref(), Some("s1"));
        assert_eq!(cache.logins_in_progress(), 0);
    }

    #[test]
    fn keeps_no_secret_in_clear() {
        let cache = SessionCache::default();
        cache.put(
            login_key("alice", "s3cr3t-pw"),
            &Bearer("s3cr3t-session".into()),
            TTL,
        );
        let printed = format!("{cache:?}");
        assert!(!printed.contains("s3cr3t"), "{printed}");
    }
}
