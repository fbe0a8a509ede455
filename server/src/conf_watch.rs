//! Conf is cluster-wide: every node follows conf changes made on any node.
//!
//! Every document write bumps `meta:conf {version}` in its transaction
//! (`store/config.rs`). Each node polls that version every [`CONF_POLL`]
//! (one point read) and, when it moved, reloads what the node that made the
//! change reloaded at once: implicit sync's mappings and outbox
//! subscriptions (its delivery provisioners, built from the mappings'
//! connectors, are rebuilt with them) and the scheduler's schedules. Recon
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
    pub store: Store,
    pub implicit: Arc<ImplicitSync>,
    pub scheduler: Scheduler,
}

impl ConfFollower {
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
        self.scheduler.reload().await?;
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
