//! The credentials whose argon2 hash is still to come: a write stores the
//! sealed value and a `hash_queue` entry in one transaction (`objects.rs`),
//! and the background hasher (`managed/hashing.rs`) reads the queue here and
//! writes the hashes back. The queue is in the store, so a restart loses none.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{CredentialKey, Store, StoreError, with_retry};

/// One queued credential and its sealed value (`None`: the credential is gone).
#[derive(Debug, Clone, Deserialize)]
pub struct PendingHash {
    pub key: CredentialKey,
    pub sealed: Option<String>,
}

/// The hash of the value sealed as `sealed`.
#[derive(Debug, Clone, Serialize)]
pub struct ComputedHash {
    pub key: CredentialKey,
    pub sealed: String,
    pub hash: String,
}

impl Store {
    /// Woken after a write queued passwords for hashing.
    pub fn hash_signal(&self) -> std::sync::Arc<tokio::sync::Notify> {
        std::sync::Arc::clone(&self.hash_signal)
    }

    /// Tells the background hasher that a write queued passwords.
    pub fn announce_hashes(&self) {
        self.hash_signal.notify_one();
    }

    /// Up to `limit` queued credentials, in key order.
    pub async fn pending_hashes(&self, limit: usize) -> Result<Vec<PendingHash>, StoreError> {
        self.query_all(
            "SELECT record::id(id) AS key, type::record('credential', record::id(id)).sealed AS sealed \
             FROM hash_queue LIMIT $limit",
            json!({ "limit": limit }),
        )
        .await
    }

    /// How many credentials wait for their hash.
    pub async fn pending_hash_count(&self) -> Result<u64, StoreError> {
        self.count("SELECT count() AS n FROM hash_queue GROUP ALL", Value::Null)
            .await
    }

    /// In one transaction: writes each hash where the credential still holds
    /// the value it was computed from, and takes it off the queue (a value
    /// changed meanwhile, by a new password or a key rotation's re-seal,
    /// stays queued for the next pass); and takes the `gone` keys off the
    /// queue if their credential is still gone.
    pub async fn record_hashes(
        &self,
        done: &[ComputedHash],
        gone: &[CredentialKey],
    ) -> Result<(), StoreError> {
        if done.is_empty() && gone.is_empty() {
            return Ok(());
        }
        let params = json!({ "done": done, "gone": gone });
        with_retry(|| {
            self.execute(
                "BEGIN;
                 FOR $d IN $done {
                     IF type::record('credential', $d.key).sealed = $d.sealed {
                         UPDATE type::record('credential', $d.key) SET hash = $d.hash RETURN NONE;
                         DELETE type::record('hash_queue', $d.key) RETURN NONE;
                     };
                 };
                 FOR $k IN $gone {
                     IF type::record('credential', $k).sealed = NONE {
                         DELETE type::record('hash_queue', $k) RETURN NONE;
                     };
                 };
                 COMMIT;",
                params.clone(),
            )
        })
        .await
    }
}
