//! Verifying a password against a private property, so that the answer and
//! its cost tell nothing but "valid" or "not": an unknown object, an unknown
//! or non-private property, an object without a value and a wrong password all
//! answer `false` after the same argon2 work (against a dummy hash). Attempts
//! are throttled per object and per caller by a bounded sliding window.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{ManagedError, ManagedObjects};
use crate::secrets;
use crate::store::StoredSecret;

/// How many failed verifications an object and a caller may have within a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottleLimits {
    /// Failures for one object (by the name asked for, whether it exists or not).
    pub per_object: usize,
    /// Failures by one caller (token), over every object.
    pub per_caller: usize,
    pub window: Duration,
    /// The most objects (and, separately, callers) remembered at once.
    pub max_tracked: usize,
}

impl Default for ThrottleLimits {
    fn default() -> Self {
        ThrottleLimits {
            per_object: 5,
            per_caller: 100,
            window: Duration::from_secs(15 * 60),
            max_tracked: 65_536,
        }
    }
}

/// Failure times by key; each list bounded by its limit, the map by `max_tracked`.
#[derive(Default)]
struct Windows {
    objects: HashMap<String, VecDeque<Instant>>,
    callers: HashMap<String, VecDeque<Instant>>,
}

pub struct PasswordThrottle {
    limits: ThrottleLimits,
    windows: Mutex<Windows>,
}

/// One attempt in flight: counted as a failure until it is known to have succeeded.
#[derive(Debug)]
pub(crate) struct Attempt {
    caller: String,
    object: String,
    at: Instant,
}

impl PasswordThrottle {
    pub fn new(limits: ThrottleLimits) -> Self {
        PasswordThrottle {
            limits,
            windows: Mutex::new(Windows::default()),
        }
    }

    /// Reserves an attempt by `caller` on `object`, or says how long to wait.
    /// The attempt counts as a failure from now on (so concurrent guesses
    /// cannot all slip in before the first one failed), unless `succeeded`.
    pub(crate) fn begin(&self, caller: &str, object: &str) -> Result<Attempt, Duration> {
        let now = Instant::now();
        let limits = self.limits;
        let mut windows = self.windows.lock().map_err(|_| limits.window)?;
        let Windows { objects, callers } = &mut *windows;
        let wait_object = wait(objects, object, limits.per_object, limits, now);
        let wait_caller = wait(callers, caller, limits.per_caller, limits, now);
        if let Some(longest) = wait_object.into_iter().chain(wait_caller).max() {
            return Err(longest);
        }
        for (map, key) in [(objects, object), (callers, caller)] {
            map.entry(key.to_string()).or_default().push_back(now);
        }
        Ok(Attempt {
            caller: caller.to_string(),
            object: object.to_string(),
            at: now,
        })
    }

    /// The attempt was right: it no longer counts against either key.
    pub(crate) fn succeeded(&self, attempt: Attempt) {
        let Ok(mut windows) = self.windows.lock() else {
            return;
        };
        let Windows { objects, callers } = &mut *windows;
        for (map, key) in [(objects, &attempt.object), (callers, &attempt.caller)] {
            if let Some(times) = map.get_mut(key) {
                if let Some(i) = times.iter().position(|t| *t == attempt.at) {
                    times.remove(i);
                }
                if times.is_empty() {
                    map.remove(key);
                }
            }
        }
    }
}

/// How long `key` must wait before another attempt, if at all. Forgets
/// failures older than the window; when the map is full and `key` new, it
/// first forgets every expired key, and if still full refuses (fails closed).
fn wait(
    map: &mut HashMap<String, VecDeque<Instant>>,
    key: &str,
    limit: usize,
    limits: ThrottleLimits,
    now: Instant,
) -> Option<Duration> {
    let expired = |t: &Instant| now.duration_since(*t) >= limits.window;
    if let Some(times) = map.get_mut(key) {
        while times.front().is_some_and(expired) {
            times.pop_front();
        }
        return match times.front() {
            Some(oldest) if times.len() >= limit => {
                Some(limits.window.saturating_sub(now.duration_since(*oldest)))
            }
            _ => None,
        };
    }
    if limit == 0 {
        return Some(limits.window);
    }
    if map.len() >= limits.max_tracked {
        map.retain(|_, times| times.back().is_some_and(|t| !expired(t)));
        if map.len() >= limits.max_tracked {
            return Some(limits.window);
        }
    }
    None
}

/// What a password is checked against.
enum Check {
    /// Its argon2 hash.
    Hash,
    /// Its sealed copy: the hash is not there yet.
    Sealed(String),
    /// Nothing: the answer is `false`.
    Nothing,
}

/// An argon2 hash of a random password, made once with the same parameters
/// as every stored hash: checking against it costs what a real check costs.
pub async fn dummy_hash() -> String {
    static DUMMY: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();
    DUMMY
        .get_or_init(|| async {
            let random: [u8; 16] = rand::random();
            secrets::hash_password(format!("{random:?}"))
                .await
                .unwrap_or_default()
        })
        .await
        .clone()
}

impl ManagedObjects {
    /// Whether `password` is the value of the private `property` of
    /// `managed/<type_name>/<id>`. `Ok(false)` for a wrong password and for
    /// every reason there is nothing to check against; `Throttled` when the
    /// object or the caller failed too often lately.
    #[tracing::instrument(skip_all, fields(type_name, id, actor))]
    pub async fn verify_password(
        &self,
        actor: &str,
        type_name: &str,
        id: &str,
        property: &str,
        password: &str,
    ) -> Result<bool, ManagedError> {
        let object = format!("managed/{type_name}/{id}");
        let attempt = self
            .throttle
            .begin(actor, &object)
            .map_err(|retry_after| ManagedError::Throttled { retry_after })?;
        let private = self
            .schema
            .get(type_name)
            .ok()
            .and_then(|t| t.properties.get(property))
            .is_some_and(|p| p.private);
        // The same one store read whatever was asked.
        let stored = self
            .store
            .get_secret(type_name, id, property)
            .await?
            .filter(|_| private);
        // A password whose hash is still to come (hashing.rs) is checked
        // against its sealed copy, after the same argon2 work as any other.
        let (hash, check) = match stored {
            Some(StoredSecret {
                hash: Some(hash), ..
            }) => (hash, Check::Hash),
            Some(StoredSecret { hash: None, sealed }) => {
                (dummy_hash().await, Check::Sealed(sealed))
            }
            None => (dummy_hash().await, Check::Nothing),
        };
        let matched = secrets::verify_password(password.to_string(), hash).await;
        let valid = match check {
            Check::Hash => matched,
            Check::Sealed(sealed) => self
                .secrets
                .open(&sealed)
                .is_ok_and(|stored| secrets::same_password(password, &stored)),
            Check::Nothing => false,
        };
        if valid {
            self.throttle.succeeded(attempt);
        }
        Ok(valid)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn limits(per_object: usize, per_caller: usize, max_tracked: usize) -> ThrottleLimits {
        ThrottleLimits {
            per_object,
            per_caller,
            window: Duration::from_secs(60),
            max_tracked,
        }
    }

    #[test]
    fn an_object_is_refused_after_its_failures_until_the_window_passes() {
        let throttle = PasswordThrottle::new(limits(3, 100, 100));
        for _ in 0..3 {
            throttle.begin("t1", "managed/user/a").unwrap();
        }
        let wait = throttle.begin("t2", "managed/user/a").unwrap_err();
        assert!(wait > Duration::from_secs(50) && wait <= Duration::from_secs(60));
        // Another object is not affected, whether it exists or not.
        throttle.begin("t1", "managed/user/nobody").unwrap();
    }

    #[test]
    fn a_caller_is_refused_after_its_failures_on_any_objects() {
        let throttle = PasswordThrottle::new(limits(100, 2, 100));
        throttle.begin("t1", "managed/user/a").unwrap();
        throttle.begin("t1", "managed/user/b").unwrap();
        assert!(throttle.begin("t1", "managed/user/c").is_err());
        throttle.begin("t2", "managed/user/c").unwrap();
    }

    #[test]
    fn a_success_does_not_count() {
        let throttle = PasswordThrottle::new(limits(2, 2, 100));
        for _ in 0..5 {
            let attempt = throttle.begin("t1", "managed/user/a").unwrap();
            throttle.succeeded(attempt);
        }
        throttle.begin("t1", "managed/user/a").unwrap();
    }

    #[test]
    fn the_maps_stay_bounded_and_fail_closed_when_full() {
        let throttle = PasswordThrottle::new(limits(5, 1000, 3));
        for id in ["a", "b", "c"] {
            throttle.begin("t1", &format!("managed/user/{id}")).unwrap();
        }
        assert!(throttle.begin("t1", "managed/user/d").is_err());
        // A key already tracked still gets its own budget.
        throttle.begin("t1", "managed/user/a").unwrap();
        let windows = throttle.windows.lock().unwrap();
        assert_eq!(windows.objects.len(), 3);
    }

    #[tokio::test]
    async fn the_dummy_hash_costs_what_a_stored_hash_costs() {
        let stored = secrets::hash_password("x".into()).await.unwrap();
        let params = |phc: &str| phc.rsplitn(3, '$').nth(2).unwrap().to_string();
        let dummy = dummy_hash().await;
        assert_eq!(params(&dummy), params(&stored));
        assert!(!secrets::verify_password("x".into(), dummy).await);
    }
}
