//! Claims: which node delivers an object's outbox entries now. A dispatcher
//! on a shared store claims a batch's objects before delivering them (one
//! round trip, store/outbox.rs), renews what it holds in the background
//! while the batch is in flight, and releases the claims once the batch is
//! recorded; a node that dies leaves its claims to expire.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::store::{ClaimKey, Store};

/// How long a claim on an object lasts unless renewed (store clock).
pub const CLAIM_TTL: Duration = Duration::from_secs(10);
/// How often a dispatcher renews the claims it holds.
pub const CLAIM_RENEW: Duration = Duration::from_secs(2);

/// Who claims the objects a dispatcher delivers, and for how long.
#[derive(Debug, Clone)]
pub struct Claims {
    /// This node's id (`lib.rs`).
    pub node: String,
    pub ttl: Duration,
    pub renew_every: Duration,
    /// Whether other nodes may deliver from this outbox. An embedded store
    /// has one process (SurrealKV locks its directory; `mem://` is the
    /// process's own), so its dispatcher claims nothing: claims would only
    /// cost store round trips per batch.
    pub shared: bool,
}

impl Claims {
    /// `node`'s claims on a store nodes share, with the default expiry and
    /// renewal.
    pub fn new(node: impl Into<String>) -> Self {
        Claims {
            node: node.into(),
            ttl: CLAIM_TTL,
            renew_every: CLAIM_RENEW,
            shared: true,
        }
    }

    /// The only node of an embedded store: nothing to claim.
    pub fn sole(node: impl Into<String>) -> Self {
        Claims {
            shared: false,
            ..Claims::new(node)
        }
    }
}

/// The claims a dispatcher holds, with when each was last claimed or
/// renewed; renewed in the background while held.
pub(super) type Held = Arc<Mutex<HashMap<ClaimKey, std::time::Instant>>>;

/// Every `claims.renew_every`, renews the claims in `held` older than that,
/// until dropped: a claim is renewed at the latest two periods after it was
/// made, well within its expiry, and a batch quicker than one period costs
/// no renewal.
pub(super) struct Renewer(tokio::task::JoinHandle<()>);

impl Renewer {
    pub(super) fn start(store: Store, claims: Claims, held: Held) -> Self {
        Renewer(tokio::spawn(async move {
            loop {
                tokio::time::sleep(claims.renew_every).await;
                let keys: Vec<ClaimKey> = {
                    let mut held = held.lock().unwrap_or_else(PoisonError::into_inner);
                    let now = std::time::Instant::now();
                    held.iter_mut()
                        .filter(|(_, at)| now.duration_since(**at) >= claims.renew_every)
                        .map(|(key, at)| {
                            *at = now;
                            key.clone()
                        })
                        .collect()
                };
                if keys.is_empty() {
                    continue;
                }
                if let Err(e) = store.renew_claims(&claims.node, claims.ttl, &keys).await {
                    tracing::warn!(error = %e, claims = keys.len(), "renewing outbox claims failed; retrying");
                }
            }
        }))
    }
}

impl Drop for Renewer {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Releases a recorded batch's claims. One that fails to go expires.
pub(super) async fn release(store: &Store, node: &str, held: &Held, keys: &[ClaimKey]) {
    if keys.is_empty() {
        return;
    }
    {
        let mut held = held.lock().unwrap_or_else(PoisonError::into_inner);
        for key in keys {
            held.remove(key);
        }
    }
    if let Err(e) = store.release_claims(node, keys).await {
        tracing::warn!(error = %e, "releasing outbox claims failed; they expire");
    }
}
