//! The background hasher. A write stores a password sealed (AES-256-GCM,
//! microseconds) and queues it (`store/hashing.rs`); this task computes the
//! argon2id hashes afterwards, one at a time, on the low-priority thread of
//! [`secrets::hash_password_when_idle`], so a reconciliation that gives
//! 100,000 users a default password is not held to argon2's ~25 ms a user.
//! Until a password's hash exists, `verify_password` checks the sealed copy.

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use tokio::sync::{Notify, watch};

use crate::secrets::{self, SecretBox, SecretError};
use crate::store::{ComputedHash, Store, StoreError};

/// Passwords read from the queue at a time (and written back together).
pub const BATCH: usize = 32;

/// How often an idle hasher looks at the queue anyway: writes on other
/// nodes do not wake it.
const POLL: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum HashingError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Secret(#[from] SecretError),
}

/// What one pass over a batch did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    /// Queue entries read.
    pub seen: usize,
    /// Hashes computed (written unless the value changed meanwhile), and
    /// entries of deleted credentials dropped.
    pub settled: usize,
}

/// When the hasher yields to writes that are queueing passwords.
#[derive(Debug, Clone, Copy)]
pub struct Pacing {
    /// While writes keep queueing passwords (a reconciliation giving every
    /// user a default password), the hasher waits for them to pause this
    /// long: argon2's CPU and 19 MiB of memory traffic slowed a 100k-row
    /// recon by 8% even from an idle-priority thread.
    pub quiet: Duration,
    /// It never waits longer than this, so a steady trickle of writes still
    /// gets its hashes (a batch, then it yields again).
    pub max_defer: Duration,
}

impl Default for Pacing {
    fn default() -> Self {
        Pacing {
            quiet: Duration::from_millis(500),
            max_defer: Duration::from_secs(30),
        }
    }
}

/// Hashes queued passwords until `stop`; sleeps while the queue is empty.
pub async fn run(store: Store, secrets: Arc<SecretBox>, stop: watch::Receiver<bool>) {
    run_paced(store, secrets, stop, Pacing::default()).await;
}

/// [`run`], yielding to writes as `pacing` says.
pub async fn run_paced(
    store: Store,
    secrets: Arc<SecretBox>,
    mut stop: watch::Receiver<bool>,
    pacing: Pacing,
) {
    let signal = store.hash_signal();
    let mut written = false;
    while !*stop.borrow() {
        // A write since the last look (its wake-up still pending, or what
        // woke this loop): let the writes finish first.
        if written || signal.notified().now_or_never().is_some() {
            until_writes_pause(&signal, &mut stop, pacing).await;
        }
        let pass = match hash_batch(&store, &secrets, &stop).await {
            Ok(pass) => pass,
            Err(e) => {
                tracing::warn!(error = %e, "hashing queued passwords failed; trying again later");
                Pass::default()
            }
        };
        metrics::counter!("idm_password_hashes_total").increment(pass.settled as u64);
        written = false;
        // A full batch that settled something: there may be more right away.
        if pass.seen == BATCH && pass.settled > 0 {
            continue;
        }
        tokio::select! {
            () = signal.notified() => written = true,
            () = tokio::time::sleep(POLL) => {}
            _ = stop.changed() => {}
        }
    }
}

/// Returns once no write has queued a password for `pacing.quiet`, or
/// `pacing.max_defer` after it was called, or at `stop`.
async fn until_writes_pause(signal: &Notify, stop: &mut watch::Receiver<bool>, pacing: Pacing) {
    let deadline = tokio::time::Instant::now() + pacing.max_defer;
    loop {
        tokio::select! {
            () = signal.notified() => {}
            () = tokio::time::sleep(pacing.quiet) => return,
            () = tokio::time::sleep_until(deadline) => return,
            _ = stop.changed() => return,
        }
    }
}

/// Hashes one batch of queued passwords and records them.
#[tracing::instrument(skip_all)]
pub async fn hash_batch(
    store: &Store,
    secrets: &SecretBox,
    stop: &watch::Receiver<bool>,
) -> Result<Pass, HashingError> {
    let pending = store.pending_hashes(BATCH).await?;
    let seen = pending.len();
    let mut done = Vec::new();
    let mut gone = Vec::new();
    for entry in pending {
        if *stop.borrow() {
            break;
        }
        let Some(sealed) = entry.sealed else {
            gone.push(entry.key);
            continue;
        };
        // Sealed under a key this node no longer holds: a rotation re-seals
        // it, and a later pass reads the new value.
        let Ok(plain) = secrets.open(&sealed) else {
            tracing::debug!("a queued password is sealed under another key; left for later");
            continue;
        };
        let hash = secrets::hash_password_when_idle(plain).await?;
        done.push(ComputedHash {
            key: entry.key,
            sealed,
            hash,
        });
    }
    store.record_hashes(&done, &gone).await?;
    Ok(Pass {
        seen,
        settled: done.len() + gone.len(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::{Map, Value, json};

    use super::*;
    use crate::managed::{ManagedObjects, ManagedSchema, PatchOp};

    fn objects(store: &Store, secrets: &Arc<SecretBox>) -> ManagedObjects {
        ManagedObjects::new(
            Arc::new(ManagedSchema::builtin().unwrap()),
            store.clone(),
            Arc::clone(secrets),
        )
    }

    fn user(name: &str, password: &str) -> Map<String, Value> {
        json!({ "userName": name, "givenName": name, "sn": "Doe", "mail": format!("{name}@example.com"), "password": password })
            .as_object()
            .cloned()
            .unwrap()
    }

    async fn verifies(objects: &ManagedObjects, id: &str, password: &str) -> bool {
        objects
            .verify_password("test", "user", id, "password", password)
            .await
            .unwrap()
    }

    fn running() -> watch::Receiver<bool> {
        watch::channel(false).1
    }

    #[tokio::test]
    async fn a_password_verifies_from_its_sealed_copy_until_the_hasher_writes_its_hash() {
        let store = Store::open("mem://").await.unwrap();
        let secrets = Arc::new(SecretBox::ephemeral());
        let objects = objects(&store, &secrets);
        let alice = objects
            .create("test", "user", None, user("alice", "FooBar123"))
            .await
            .unwrap();
        let stored = store
            .get_secret("user", &alice.id, "password")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored.hash, None, "no argon2 on the write path");
        assert_eq!(secrets.open(&stored.sealed).unwrap(), "FooBar123");
        assert_eq!(store.pending_hash_count().await.unwrap(), 1);
        assert!(verifies(&objects, &alice.id, "FooBar123").await);
        assert!(!verifies(&objects, &alice.id, "FooBar124").await);
        assert!(!verifies(&objects, &alice.id, "").await);

        let pass = hash_batch(&store, &secrets, &running()).await.unwrap();
        assert_eq!(
            pass,
            Pass {
                seen: 1,
                settled: 1
            }
        );
        assert_eq!(store.pending_hash_count().await.unwrap(), 0);
        let stored = store
            .get_secret("user", &alice.id, "password")
            .await
            .unwrap()
            .unwrap();
        let hash = stored.hash.unwrap();
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(secrets::verify_password("FooBar123".into(), hash).await);
        assert!(verifies(&objects, &alice.id, "FooBar123").await);
        assert!(!verifies(&objects, &alice.id, "FooBar124").await);
    }

    #[tokio::test]
    async fn a_password_changed_while_its_hash_was_computed_is_hashed_again() {
        let store = Store::open("mem://").await.unwrap();
        let secrets = Arc::new(SecretBox::ephemeral());
        let objects = objects(&store, &secrets);
        let bob = objects
            .create("test", "user", None, user("bob", "Old-Pass-1"))
            .await
            .unwrap();
        // The hasher read the old value, then the password changed.
        let read = store.pending_hashes(BATCH).await.unwrap();
        let old = read[0].sealed.clone().unwrap();
        let stale = ComputedHash {
            key: read[0].key.clone(),
            sealed: old,
            hash: secrets::hash_password("Old-Pass-1".into()).await.unwrap(),
        };
        let change = PatchOp::new("replace", "/password", Some(json!("New-Pass-2"))).unwrap();
        objects
            .patch("test", "user", &bob.id, vec![change], None)
            .await
            .unwrap();
        store.record_hashes(&[stale], &[]).await.unwrap();
        let stored = store
            .get_secret("user", &bob.id, "password")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored.hash, None, "the old password's hash is not written");
        assert_eq!(store.pending_hash_count().await.unwrap(), 1);
        assert!(!verifies(&objects, &bob.id, "Old-Pass-1").await);

        hash_batch(&store, &secrets, &running()).await.unwrap();
        assert_eq!(store.pending_hash_count().await.unwrap(), 0);
        assert!(verifies(&objects, &bob.id, "New-Pass-2").await);
        assert!(!verifies(&objects, &bob.id, "Old-Pass-1").await);
        // A hashed password changed again goes back to the queue, and the
        // old hash stops answering at once.
        let change = PatchOp::new("replace", "/password", Some(json!("Third-3"))).unwrap();
        objects
            .patch("test", "user", &bob.id, vec![change], None)
            .await
            .unwrap();
        assert_eq!(store.pending_hash_count().await.unwrap(), 1);
        assert!(!verifies(&objects, &bob.id, "New-Pass-2").await);
        assert!(verifies(&objects, &bob.id, "Third-3").await);
    }

    #[tokio::test]
    async fn the_queue_survives_a_restart_and_a_deleted_user_leaves_nothing_queued() {
        let dir = crate::scratch::Scratch::new("idm-hashing");
        let url = format!("surrealkv://{}", dir.join("store").display());
        let secrets = Arc::new(SecretBox::load_or_create(&dir.join("idm.key"), None).unwrap());
        let ids: Vec<String> = {
            let store = Store::open(&url).await.unwrap();
            let objects = objects(&store, &secrets);
            let created = objects
                .create_many(
                    "test",
                    "user",
                    (0..3)
                        .map(|i| (None, user(&format!("u{i}"), &format!("Pass-{i}"))))
                        .collect(),
                )
                .await
                .unwrap();
            objects
                .delete("test", "user", &created[2].id, None)
                .await
                .unwrap();
            drop(objects);
            store.close(Duration::from_secs(10)).await;
            created.into_iter().map(|view| view.id).collect()
        };
        let store = Store::open(&url).await.unwrap();
        assert_eq!(store.pending_hash_count().await.unwrap(), 2);
        let pass = hash_batch(&store, &secrets, &running()).await.unwrap();
        assert_eq!(pass.settled, 2);
        assert_eq!(store.pending_hash_count().await.unwrap(), 0);
        let objects = objects(&store, &secrets);
        for (i, id) in ids.iter().take(2).enumerate() {
            let stored = store.get_secret("user", id, "password").await.unwrap();
            assert!(stored.unwrap().hash.is_some());
            assert!(verifies(&objects, id, &format!("Pass-{i}")).await);
        }
        drop(objects);
        store.close(Duration::from_secs(10)).await;
    }

    #[tokio::test]
    async fn the_hasher_waits_for_writes_to_pause_then_drains_the_queue() {
        let store = Store::open("mem://").await.unwrap();
        let secrets = Arc::new(SecretBox::ephemeral());
        let objects = objects(&store, &secrets);
        let (stop, stopped) = watch::channel(false);
        let pacing = Pacing {
            quiet: Duration::from_secs(3),
            max_defer: Duration::from_secs(60),
        };
        let task = tokio::spawn(run_paced(
            store.clone(),
            Arc::clone(&secrets),
            stopped,
            pacing,
        ));
        // Writes back to back for a second, each queueing a password.
        let writing = tokio::time::Instant::now() + Duration::from_secs(1);
        let mut written: u64 = 0;
        while tokio::time::Instant::now() < writing {
            let id = format!("p{written}");
            objects
                .create("test", "user", Some(id.clone()), user(&id, "FooBar123"))
                .await
                .unwrap();
            written += 1;
        }
        assert_eq!(
            store.pending_hash_count().await.unwrap(),
            written,
            "nothing hashed while the writes went on"
        );
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        while store.pending_hash_count().await.unwrap() > 0 {
            assert!(tokio::time::Instant::now() < deadline, "the queue drains");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for i in [0, written - 1] {
            assert!(verifies(&objects, &format!("p{i}"), "FooBar123").await);
        }
        stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn the_running_hasher_drains_what_writes_queue() {
        let store = Store::open("mem://").await.unwrap();
        let secrets = Arc::new(SecretBox::ephemeral());
        let objects = objects(&store, &secrets);
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(run(store.clone(), Arc::clone(&secrets), stopped));
        objects
            .create_many(
                "test",
                "user",
                (0..BATCH + 3)
                    .map(|i| (None, user(&format!("w{i}"), "FooBar123")))
                    .collect(),
            )
            .await
            .unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        while store.pending_hash_count().await.unwrap() > 0 {
            assert!(tokio::time::Instant::now() < deadline, "the queue drains");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .unwrap()
            .unwrap();
    }
}
