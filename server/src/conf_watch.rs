//! Conf is cluster-wide: every node follows conf changes made on any node.
//!
//! Every document write bumps `meta:conf {version}` in its transaction
//! (`store/config.rs`). Each node polls that version every [`CONF_POLL`]
//! (one point read) and, when it moved, reloads what the node that made the
//! change reloaded at once: implicit sync's mappings and outbox
//! subscriptions (its delivery provisioners, built from the mappings'
//! connectors, are rebuilt with them) and, if schedule documents changed,
//! the scheduler's schedules (a reload restarts every loop). Recon
//! runs read their mapping and connector from the store when they start, so
//! nothing else is cached.
//!
//! Managed writes do not wait for the poll: each checks the version inside
//! its own transaction and reloads first if it moved (see
//! `store/objects.rs`, `conf_guard`), so a write on node B after a mapping
//! was made `enableSync` on node A always feeds the new mapping's outbox.
//! The poll is for what no write triggers: schedules, and deliveries with
//! the new mappings and connectors.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::scheduler::{Scheduler, SchedulerError};
use crate::store::{Store, StoreError};
use crate::sync::outbox::ImplicitSync;

/// How often each node reads the conf version.
pub const CONF_POLL: Duration = Duration::from_millis(500);

#[derive(Debug, thiserror::Error)]
pub enum ConfWatchError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("scheduler: {0}")]
    Scheduler(#[from] SchedulerError),
}

/// What a node reloads when the stored conf changes.
#[derive(Clone)]
pub struct ConfFollower {
    store: Store,
    implicit: Arc<ImplicitSync>,
    scheduler: Scheduler,
}

impl ConfFollower {
    pub fn new(store: Store, implicit: Arc<ImplicitSync>, scheduler: Scheduler) -> Self {
        ConfFollower {
            store,
            implicit,
            scheduler,
        }
    }
    /// Reloads if the stored conf version is not `seen`; returns the version
    /// now followed. `None` reloads whatever the version (a restarted loop
    /// does not know what the last one saw).
    #[tracing::instrument(skip_all)]
    pub async fn catch_up(&self, seen: Option<u64>) -> Result<u64, ConfWatchError> {
        let version = self.store.conf_version().await?;
        if seen == Some(version) {
            return Ok(version);
        }
        tracing::info!(version, "conf changed in the store; reloading");
        // Implicit sync may already be there (a write that found its
        // subscriptions stale reloaded them); reloading again is harmless.
        if self.implicit.conf_version() != Some(version) || seen.is_none() {
            self.implicit.reload().await?;
        }
        self.scheduler.reload_if_changed().await?;
        Ok(version)
    }

    /// Polls until `stopped`; a failed poll or reload is logged and tried
    /// again at the next poll (the node keeps the conf it has meanwhile).
    /// The first poll reloads whatever the version: what changed between
    /// the node's start (or the loop's last run) and now is not missed.
    pub async fn run(self, mut stopped: watch::Receiver<bool>) {
        let mut seen = None;
        loop {
            tokio::select! {
                () = tokio::time::sleep(CONF_POLL) => {}
                _ = stopped.changed() => {}
            }
            if *stopped.borrow() {
                return;
            }
            match self.catch_up(seen).await {
                Ok(version) => seen = Some(version),
                Err(e) => {
                    tracing::warn!(error = %e, "could not follow the stored conf; trying again");
                    seen = None;
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::health::Health;
    use crate::managed::{ManagedObjects, ManagedSchema};
    use crate::secrets::SecretBox;
    use crate::store::ConfigDocument;
    use crate::sync::recon::Reconciler;
    use serde_json::{Map, Value, json};
    use std::path::PathBuf;

    /// One node: its own store handle (subscriptions, conf reload), implicit
    /// sync and scheduler over the shared database.
    struct Node {
        store: Store,
        objects: ManagedObjects,
        follower: ConfFollower,
    }

    async fn node(store: Store, secrets: &Arc<SecretBox>, name: &str) -> Node {
        let objects = ManagedObjects::new(
            Arc::new(ManagedSchema::builtin().unwrap()),
            store.clone(),
            Arc::clone(secrets),
        );
        let implicit = Arc::new(
            ImplicitSync::start(store.clone(), objects.clone(), PathBuf::from("."))
                .await
                .unwrap(),
        );
        implicit.follow_conf();
        let reconciler = Reconciler::new(store.clone(), objects.clone(), PathBuf::from("."));
        let scheduler = Scheduler::start(
            store.clone(),
            objects.clone(),
            reconciler,
            PathBuf::from("."),
            name.into(),
            &Health::new().await.0,
        )
        .await
        .unwrap();
        Node {
            store: store.clone(),
            objects,
            follower: ConfFollower::new(store, implicit, scheduler),
        }
    }

    async fn two_nodes() -> (Node, Node) {
        let store = Store::open("mem://").await.unwrap();
        let dir = std::env::temp_dir().join(format!("idm-conf-{}", uuid::Uuid::new_v4()));
        let secrets = Arc::new(SecretBox::load_or_create(&dir.join("idm.key"), None).unwrap());
        let _ = std::fs::remove_dir_all(&dir);
        let b = store.another_node();
        (
            node(store, &secrets, "a").await,
            node(b, &secrets, "b").await,
        )
    }

    fn object(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap()
    }

    async fn put(store: &Store, kind: &str, name: &str, body: Value) {
        store
            .put_config(&ConfigDocument {
                kind: kind.into(),
                name: name.into(),
                body: object(body),
                source: "api".into(),
            })
            .await
            .unwrap();
    }

    /// A mapping to an LDAP server no one listens on: entries stay queued.
    fn mapping(enable_sync: bool) -> Value {
        json!({
            "name": "users", "source": "managed/user", "target": "system/ldap/account",
            "enableSync": enable_sync,
            "properties": [{"source": "userName", "target": "uid"}],
            "policies": [{"situation": "MISSING", "action": "CREATE"}]
        })
    }

    async fn shutdown(nodes: [&Node; 2]) {
        for node in nodes {
            node.follower.scheduler.shutdown();
            node.follower
                .implicit
                .shutdown(Duration::from_secs(5))
                .await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_mapping_made_enable_sync_on_one_node_feeds_the_outbox_from_the_other_nodes_next_write()
     {
        let (a, b) = two_nodes().await;
        let connector = json!({"connectorType": "ldap", "url": "ldap://127.0.0.1:1",
            "baseDn": "dc=example,dc=org", "bindDn": "cn=admin", "bindPassword": "x",
            "objectTypes": {"account": {"namingAttribute": "uid", "objectClasses": ["inetOrgPerson"]}}});
        put(&a.store, "connector", "ldap", connector).await;
        put(&a.store, "mapping", "users", mapping(false)).await;
        a.follower.implicit.reload().await.unwrap();
        b.follower.implicit.reload().await.unwrap();
        b.objects
            .create(
                "test",
                "user",
                Some("before".into()),
                object(json!({"userName": "before"})),
            )
            .await
            .unwrap();
        assert_eq!(a.store.count_for_tests("outbox").await, 0, "not synced yet");

        // Node A's API path: the document stored, A's implicit sync reloaded.
        put(&a.store, "mapping", "users", mapping(true)).await;
        a.follower.implicit.reload().await.unwrap();
        // B has not polled: its write finds its subscriptions stale in its
        // own transaction, reloads, and is made again under the new mapping.
        let version = b.store.conf_version().await.unwrap();
        assert_ne!(b.follower.implicit.conf_version(), Some(version));
        b.objects
            .create(
                "test",
                "user",
                Some("after".into()),
                object(json!({"userName": "after"})),
            )
            .await
            .unwrap();
        assert_eq!(
            b.store.count_for_tests("outbox").await,
            1,
            "B's write queued for the new mapping"
        );
        assert_eq!(b.follower.implicit.conf_version(), Some(version));
        // An update and a delete on B after A switched the mapping off again
        // queue nothing more (the guard is on those paths too).
        put(&a.store, "mapping", "users", mapping(false)).await;
        a.follower.implicit.reload().await.unwrap();
        b.objects
            .delete("test", "user", "before", None)
            .await
            .unwrap();
        assert_eq!(b.store.count_for_tests("outbox").await, 1);
        // And on again: B's patch queues.
        put(&a.store, "mapping", "users", mapping(true)).await;
        b.objects
            .patch(
                "test",
                "user",
                "after",
                vec![crate::managed::PatchOp::new("replace", "/sn", Some(json!("X"))).unwrap()],
                None,
            )
            .await
            .unwrap();
        assert_eq!(b.store.count_for_tests("outbox").await, 2);
        shutdown([&a, &b]).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_schedule_created_on_one_node_fires_on_the_other_once_per_tick() {
        let (a, b) = two_nodes().await;
        let seen = b.follower.catch_up(None).await.unwrap();
        let body = json!({"type": "cron", "schedule": "* * * * * ?", "concurrentExecution": true,
            "invokeService": "script",
            "invokeContext": {"script": {"type": "text/javascript", "source": "1"}}});
        // Created through A, which then stops: only B can fire it.
        a.follower
            .scheduler
            .put("tick", object(body))
            .await
            .unwrap();
        a.follower.scheduler.shutdown();
        assert_ne!(b.follower.catch_up(Some(seen)).await.unwrap(), seen);
        let on_b = loop {
            let executions = b.store.list_executions("tick", 1000, 0).await.unwrap();
            let on_b: Vec<_> = executions
                .into_iter()
                .filter(|e| e.node == "b" && e.outcome == "SUCCESS")
                .collect();
            if on_b.len() >= 2 {
                break on_b;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let mut ticks: Vec<&str> = on_b.iter().map(|e| e.fire_time.as_str()).collect();
        let all = ticks.len();
        ticks.sort_unstable();
        ticks.dedup();
        assert_eq!(ticks.len(), all, "a tick ran twice: {on_b:?}");
        shutdown([&a, &b]).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_schedule_deleted_on_one_node_stops_on_the_other() {
        let (a, b) = two_nodes().await;
        let body = json!({"type": "cron", "schedule": "0 0 0 1 1 ? 2099",
            "invokeService": "script",
            "invokeContext": {"script": {"type": "text/javascript", "source": "1"}}});
        a.follower
            .scheduler
            .put("later", object(body))
            .await
            .unwrap();
        let seen = b.follower.catch_up(None).await.unwrap();
        assert_eq!(b.follower.scheduler.list().await.unwrap().len(), 1);
        assert!(b.follower.scheduler.is_running("later"));
        // A mapping changed: B follows it, and its schedule loops go on as they were.
        let running = b.follower.scheduler.loop_id("later");
        put(&a.store, "mapping", "users", mapping(false)).await;
        let seen = b.follower.catch_up(Some(seen)).await.unwrap();
        assert_eq!(b.follower.implicit.conf_version(), Some(seen));
        assert_eq!(b.follower.scheduler.loop_id("later"), running);
        a.follower.scheduler.delete("later").await.unwrap();
        // Nothing changed since: no reload.
        let moved = b.follower.catch_up(Some(seen)).await.unwrap();
        assert_ne!(moved, seen);
        assert!(!b.follower.scheduler.is_running("later"));
        assert_eq!(b.follower.catch_up(Some(moved)).await.unwrap(), moved);
        shutdown([&a, &b]).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_connector_deleted_on_one_node_is_gone_from_the_others_deliveries() {
        let (a, b) = two_nodes().await;
        put(
            &a.store,
            "connector",
            "ldap",
            json!({"connectorType": "ldap", "url": "ldap://127.0.0.1:1",
            "baseDn": "dc=example,dc=org", "objectTypes": {}}),
        )
        .await;
        put(&a.store, "mapping", "users", mapping(true)).await;
        let seen = b.follower.catch_up(None).await.unwrap();
        let mut reloads = b.follower.implicit.watch_mappings();
        reloads.borrow_and_update();
        a.store.delete_config("mapping", "users").await.unwrap();
        a.store.delete_config("connector", "ldap").await.unwrap();
        a.follower.implicit.reload().await.unwrap();
        b.follower.catch_up(Some(seen)).await.unwrap();
        assert!(
            reloads.has_changed().unwrap(),
            "B's dispatcher was handed new mappings"
        );
        assert!(
            reloads.borrow_and_update().is_empty(),
            "and the deleted ones are gone"
        );
        assert_eq!(
            b.store.sync_subscriptions_version(),
            Some(b.store.conf_version().await.unwrap())
        );
        shutdown([&a, &b]).await;
    }

    #[tokio::test]
    async fn a_second_node_starting_with_the_conf_directory_changes_nothing_and_keeps_api_edits() {
        let dir = std::env::temp_dir().join(format!("idm-conf-apply-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let schedule = |source: &str| {
            json!({"type": "cron", "schedule": "0 0 0 1 1 ? 2099", "invokeService": "script",
                   "invokeContext": {"script": {"type": "text/javascript", "source": source}}})
            .to_string()
        };
        std::fs::write(dir.join("schedule-nightly.json"), schedule("'file'")).unwrap();
        std::fs::write(dir.join("schedule-weekly.json"), schedule("'file'")).unwrap();
        let conf = crate::config::read(Some(&dir)).unwrap();
        let secrets = SecretBox::load_or_create(&dir.join("idm.key"), None).unwrap();
        let store = Store::open("mem://").await.unwrap();
        // The first node applies the directory, the second finds it there.
        assert_eq!(
            crate::config::apply(&store, &conf, &secrets).await.unwrap(),
            2
        );
        let version = store.conf_version().await.unwrap();
        assert_eq!(
            crate::config::apply(&store, &conf, &secrets).await.unwrap(),
            0
        );
        assert_eq!(
            store.conf_version().await.unwrap(),
            version,
            "nothing rewritten"
        );
        // An operator's edit through the API, then a node (re)starts with the directory.
        put(
            &store,
            "schedule",
            "nightly",
            serde_json::from_str(&schedule("'api'")).unwrap(),
        )
        .await;
        assert_eq!(
            crate::config::apply(&store, &conf, &secrets).await.unwrap(),
            0
        );
        let kept = store
            .get_config("schedule", "nightly")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(kept.source, "api");
        assert_eq!(kept.body["invokeContext"]["script"]["source"], "'api'");
        // A changed file still applies to the documents it owns.
        std::fs::write(dir.join("schedule-weekly.json"), schedule("'file v2'")).unwrap();
        let conf = crate::config::read(Some(&dir)).unwrap();
        assert_eq!(
            crate::config::apply(&store, &conf, &secrets).await.unwrap(),
            1
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_follower_loop_picks_up_a_change_no_write_triggered() {
        let (a, b) = two_nodes().await;
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(b.follower.clone().run(stopped));
        put(&a.store, "mapping", "users", mapping(true)).await;
        let version = a.store.conf_version().await.unwrap();
        let mut mappings = b.follower.implicit.watch_mappings();
        tokio::time::timeout(
            Duration::from_secs(30),
            mappings.wait_for(|m| m.iter().any(|m| m.name == "users")),
        )
        .await
        .expect("B's dispatcher was handed the new mapping")
        .unwrap();
        assert_eq!(b.follower.implicit.conf_version(), Some(version));
        stop.send(true).unwrap();
        task.await.unwrap();
        shutdown([&a, &b]).await;
    }
}
