//! Bearers the core has recently accepted, so the gateway can refuse an
//! unauthenticated request before it parses anything (a filter, a body) and
//! still not ask the core twice for every request.
//!
//! Only the SHA-256 of a bearer is kept, only successful checks are
//! remembered, each for [`TTL`], and at most [`CAPACITY`] of them. The core
//! still authorizes every call the gateway forwards with the bearer, so the
//! cache decides only whether the gateway does any work: a token revoked a
//! moment ago costs at most a parse, never access.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// How long an accepted bearer is trusted without asking the core again;
/// the core itself re-reads its token table as often.
pub const TTL: Duration = Duration::from_secs(5);

/// The most bearers remembered at once.
pub const CAPACITY: usize = 4096;

pub type Fingerprint = [u8; 32];

pub fn fingerprint(bearer: &str) -> Fingerprint {
    Sha256::digest(bearer.as_bytes()).into()
}

#[derive(Debug)]
pub struct VerifiedBearers {
    ttl: Duration,
    capacity: usize,
    accepted: Mutex<HashMap<Fingerprint, Instant>>,
}

impl Default for VerifiedBearers {
    fn default() -> Self {
        Self::new(TTL, CAPACITY)
    }
}

impl VerifiedBearers {
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        VerifiedBearers {
            ttl,
            capacity: capacity.max(1),
            accepted: Mutex::new(HashMap::new()),
        }
    }

    /// Whether the core accepted this bearer less than the TTL ago.
    pub fn is_fresh(&self, bearer: &Fingerprint) -> bool {
        let Ok(accepted) = self.accepted.lock() else {
            return false;
        };
        accepted
            .get(bearer)
            .is_some_and(|at| at.elapsed() < self.ttl)
    }

    /// Remembers that the core accepted this bearer just now. When full,
    /// expired entries go first, then everything: the cost of a full cache
    /// is one more check per bearer, never a wrong answer.
    pub fn remember(&self, bearer: Fingerprint) {
        let Ok(mut accepted) = self.accepted.lock() else {
            return;
        };
        if accepted.len() >= self.capacity && !accepted.contains_key(&bearer) {
            let ttl = self.ttl;
            accepted.retain(|_, at| at.elapsed() < ttl);
            if accepted.len() >= self.capacity {
                accepted.clear();
            }
        }
        accepted.insert(bearer, Instant::now());
    }

    pub fn len(&self) -> usize {
        self.accepted.lock().map_or(0, |accepted| accepted.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_for_the_ttl_only() {
        let cache = VerifiedBearers::new(Duration::from_millis(50), 8);
        let key = fingerprint("secret");
        assert!(!cache.is_fresh(&key));
        cache.remember(key);
        assert!(cache.is_fresh(&key));
        assert!(!cache.is_fresh(&fingerprint("other")));
        std::thread::sleep(Duration::from_millis(60));
        assert!(!cache.is_fresh(&key));
    }

    #[test]
    fn stays_within_capacity() {
        let cache = VerifiedBearers::new(Duration::from_secs(60), 16);
        for i in 0..1000 {
            cache.remember(fingerprint(&format!("token-{i}")));
            assert!(cache.len() <= 16);
        }
        assert!(cache.is_fresh(&fingerprint("token-999")));
    }

    #[test]
    fn keeps_no_bearer_in_clear() {
        let cache = VerifiedBearers::default();
        cache.remember(fingerprint("s3cr3t-bearer"));
        assert!(!format!("{cache:?}").contains("s3cr3t"));
    }
}
