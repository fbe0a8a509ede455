//! Failed logins, counted per account name (whether it exists or not), per
//! source address (what the front end says the person connected from, else
//! the gRPC peer) and per gRPC peer with a limit 20 times higher, so a caller
//! that forges source addresses is still bounded. A key with `failures`
//! failures within `window` is locked: for `window` the first time, twice as
//! long each time after (up to `max_lock`), and while it is locked every
//! attempt is refused, the right password too. The escalation is forgotten
//! once a key has been quiet for `max_lock`. Like `managed::PasswordThrottle`,
//! an attempt counts as a failure from the moment it begins, so concurrent
//! guesses cannot slip in before the first one failed; and the maps are
//! bounded (when full of live keys, a new key is refused: fail closed).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How many failed logins a key may have, and how long locks last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginLimits {
    /// Failures within `window` that lock an account name or a source.
    pub failures: usize,
    /// The window of `failures`, and the first lock's length.
    pub window: Duration,
    /// The longest a lock lasts.
    pub max_lock: Duration,
    /// A gRPC peer may fail this many times as often as a source.
    pub peer_factor: usize,
    /// The most keys remembered per kind.
    pub max_tracked: usize,
}

impl Default for LoginLimits {
    fn default() -> Self {
        LoginLimits {
            failures: 5,
            window: Duration::from_secs(60),
            max_lock: Duration::from_secs(15 * 60),
            peer_factor: 20,
            max_tracked: 65_536,
        }
    }
}

impl LoginLimits {
    fn lock_for(&self, locks: u32) -> Duration {
        let longest = self.max_lock.max(self.window);
        self.window
            .checked_mul(1 << locks.saturating_sub(1).min(16))
            .map_or(longest, |d| d.min(longest))
    }
}

#[derive(Debug, Default)]
struct Key {
    /// Attempts not (yet) known to have succeeded, within the window.
    failures: VecDeque<Instant>,
    locked_until: Option<Instant>,
    /// Locks so far, for the escalation.
    locks: u32,
    last_event: Option<Instant>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Account,
    Source,
    Peer,
}

#[derive(Default)]
struct Maps {
    accounts: HashMap<String, Key>,
    sources: HashMap<String, Key>,
    peers: HashMap<String, Key>,
}

impl Maps {
    fn of(&mut self, kind: Kind) -> &mut HashMap<String, Key> {
        match kind {
            Kind::Account => &mut self.accounts,
            Kind::Source => &mut self.sources,
            Kind::Peer => &mut self.peers,
        }
    }
}

pub struct LoginThrottle {
    limits: LoginLimits,
    maps: Mutex<Maps>,
}

/// One login in flight: a failure until it is known to have succeeded.
#[derive(Debug)]
pub struct Attempt {
    keys: [(Kind, String); 3],
    at: Instant,
}

impl LoginThrottle {
    pub fn new(limits: LoginLimits) -> Self {
        LoginThrottle {
            limits,
            maps: Mutex::new(Maps::default()),
        }
    }

    fn limit(&self, kind: Kind) -> usize {
        match kind {
            Kind::Peer => self.limits.failures.saturating_mul(self.limits.peer_factor),
            Kind::Account | Kind::Source => self.limits.failures,
        }
    }

    /// Reserves a login of `account` from `source` through `peer`, or says
    /// how long the longest lock on them still lasts.
    pub fn begin(&self, account: &str, source: &str, peer: &str) -> Result<Attempt, Duration> {
        let now = Instant::now();
        let keys = [
            (Kind::Account, account.to_string()),
            (Kind::Source, source.to_string()),
            (Kind::Peer, peer.to_string()),
        ];
        let mut maps = self.maps.lock().map_err(|_| self.limits.max_lock)?;
        let waits: Vec<Duration> = keys
            .iter()
            .filter_map(|(kind, key)| self.wait(maps.of(*kind), key, self.limit(*kind), now))
            .collect();
        if let Some(longest) = waits.into_iter().max() {
            return Err(longest);
        }
        for (kind, key) in &keys {
            let entry = maps.of(*kind).entry(key.clone()).or_default();
            entry.failures.push_back(now);
            entry.last_event = Some(now);
        }
        Ok(Attempt { keys, at: now })
    }

    /// How long `key` must wait, if at all; forgets what is stale.
    fn wait(
        &self,
        map: &mut HashMap<String, Key>,
        key: &str,
        limit: usize,
        now: Instant,
    ) -> Option<Duration> {
        let limits = self.limits;
        let stale = |k: &mut Key| {
            k.failures
                .retain(|t| now.duration_since(*t) < limits.window);
            let quiet = k
                .last_event
                .is_none_or(|t| now.duration_since(t) >= limits.max_lock.max(limits.window));
            let unlocked = k.locked_until.is_none_or(|until| until <= now);
            k.failures.is_empty() && unlocked && quiet
        };
        if let Some(entry) = map.get_mut(key) {
            if let Some(until) = entry.locked_until.filter(|until| *until > now) {
                return Some(until - now);
            }
            entry
                .failures
                .retain(|t| now.duration_since(*t) < limits.window);
            // Attempts still in flight fill the budget: wait for them.
            return match entry.failures.front() {
                Some(oldest) if entry.failures.len() >= limit => {
                    Some(limits.window.saturating_sub(now.duration_since(*oldest)))
                }
                _ => None,
            };
        }
        if limit == 0 {
            return Some(limits.window);
        }
        if map.len() >= limits.max_tracked {
            map.retain(|_, k| !stale(k));
            if map.len() >= limits.max_tracked {
                return Some(limits.window);
            }
        }
        None
    }

    /// The login failed: keys that reached their limit are locked.
    pub fn failed(&self, attempt: Attempt) {
        let now = Instant::now();
        let Ok(mut maps) = self.maps.lock() else {
            return;
        };
        for (kind, key) in &attempt.keys {
            let limit = self.limit(*kind);
            let Some(entry) = maps.of(*kind).get_mut(key) else {
                continue;
            };
            entry.last_event = Some(now);
            let unlocked = entry.locked_until.is_none_or(|until| until <= now);
            if unlocked && entry.failures.len() >= limit {
                entry.locks = entry.locks.saturating_add(1);
                entry.locked_until = Some(now + self.limits.lock_for(entry.locks));
                entry.failures.clear();
            }
        }
    }

    /// The login succeeded: it does not count, and the account's escalation
    /// starts over.
    pub fn succeeded(&self, attempt: Attempt) {
        let Ok(mut maps) = self.maps.lock() else {
            return;
        };
        for (kind, key) in &attempt.keys {
            let map = maps.of(*kind);
            if let Some(entry) = map.get_mut(key) {
                if let Some(i) = entry.failures.iter().position(|t| *t == attempt.at) {
                    entry.failures.remove(i);
                }
                if *kind == Kind::Account {
                    entry.locks = 0;
                }
                if entry.failures.is_empty() && entry.locks == 0 && entry.locked_until.is_none() {
                    map.remove(key);
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn throttle(failures: usize, window_ms: u64) -> LoginThrottle {
        LoginThrottle::new(LoginLimits {
            failures,
            window: Duration::from_millis(window_ms),
            max_lock: Duration::from_millis(window_ms * 3),
            peer_factor: 20,
            max_tracked: 100,
        })
    }

    fn fail(t: &LoginThrottle, account: &str, source: &str, peer: &str) {
        let attempt = t.begin(account, source, peer).unwrap();
        t.failed(attempt);
    }

    #[test]
    fn an_account_is_locked_after_its_failures_even_for_the_right_password() {
        let t = throttle(3, 60_000);
        for i in 0..3 {
            fail(&t, "alice", &format!("10.0.0.{i}"), "127.0.0.1");
        }
        let wait = t.begin("alice", "10.0.0.9", "127.0.0.1").unwrap_err();
        assert!(
            wait > Duration::from_secs(50) && wait <= Duration::from_secs(60),
            "{wait:?}"
        );
        // Another name is not locked (whether it exists or not).
        t.begin("bob", "10.0.0.9", "127.0.0.1").unwrap();
    }

    #[test]
    fn a_source_is_locked_after_failures_on_any_names() {
        let t = throttle(3, 60_000);
        for name in ["a", "b", "c"] {
            fail(&t, name, "10.0.0.1", "127.0.0.1");
        }
        assert!(t.begin("d", "10.0.0.1", "127.0.0.1").is_err());
        t.begin("d", "10.0.0.2", "127.0.0.1").unwrap();
    }

    #[test]
    fn a_peer_forging_sources_is_bounded_twenty_times_higher() {
        let t = throttle(2, 60_000);
        for i in 0..40 {
            fail(&t, &format!("user{i}"), &format!("10.0.{i}.1"), "192.0.2.7");
        }
        assert!(t.begin("new", "10.9.9.9", "192.0.2.7").is_err());
        t.begin("new", "10.9.9.9", "192.0.2.8").unwrap();
    }

    #[test]
    fn locks_grow_and_end() {
        let t = throttle(1, 200);
        fail(&t, "alice", "s", "p");
        let first = t.begin("alice", "s2", "p").unwrap_err();
        assert!(first <= Duration::from_millis(200), "{first:?}");
        std::thread::sleep(first + Duration::from_millis(20));
        fail(&t, "alice", "s3", "p");
        let second = t.begin("alice", "s4", "p").unwrap_err();
        assert!(second > Duration::from_millis(200), "doubled: {second:?}");
        assert!(second <= Duration::from_millis(400), "{second:?}");
        assert_eq!(
            LoginLimits::default().lock_for(9),
            Duration::from_secs(15 * 60),
            "capped"
        );
    }

    #[test]
    fn a_success_does_not_count_and_clears_the_accounts_escalation() {
        let t = throttle(2, 60_000);
        for _ in 0..5 {
            let attempt = t.begin("alice", "s", "p").unwrap();
            t.succeeded(attempt);
        }
        fail(&t, "alice", "s", "p");
        let attempt = t.begin("alice", "s", "p").unwrap();
        t.succeeded(attempt);
        t.begin("alice", "s", "p").unwrap();
    }

    #[test]
    fn concurrent_attempts_fill_the_budget() {
        let t = throttle(2, 60_000);
        let _a = t.begin("alice", "s1", "p").unwrap();
        let _b = t.begin("alice", "s2", "p").unwrap();
        assert!(t.begin("alice", "s3", "p").is_err());
    }

    #[test]
    fn the_maps_stay_bounded_and_fail_closed_when_full() {
        let t = LoginThrottle::new(LoginLimits {
            max_tracked: 3,
            ..LoginLimits::default()
        });
        for name in ["a", "b", "c"] {
            fail(&t, name, "s", "p");
        }
        assert!(t.begin("d", "s", "p").is_err());
        t.begin("a", "s", "p").unwrap();
        assert_eq!(t.maps.lock().unwrap().accounts.len(), 3);
    }
}
