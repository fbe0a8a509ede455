//! Reconciliation: runs of a mapping from a connector source into managed
//! objects, Wren:IDM's situations and actions, kept as history. The
//! [`Reconciler`] starts, watches, cancels and plans runs; `run.rs` drives
//! one, `worker.rs` decides and applies per record.

mod outbound;
mod run;
mod worker;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::watch;
use tracing::Instrument;

pub use run::{PlanOutcome, PlannedChange, PropertyChange};

use crate::connector::{self, Connector, ConnectorError};
use crate::managed::{ManagedError, ManagedObjects};
use crate::store::{ReconRunRecord, RunStanding, Store, StoreError, now_timestamp};
use crate::sync::provision::Provisioner;
use crate::sync::{Endpoint, Mapping, MappingError};
use run::Recon;

/// How often a running reconciliation publishes progress and saves its record.
const REPORT_EVERY: Duration = Duration::from_millis(250);
/// The owner's save also renews the run's heartbeat and reads back a
/// cancel request from another node, so a cancel takes at most this long.
const SAVE_EVERY: Duration = Duration::from_secs(1);
/// How often a node that is not running a run reads it while it waits or
/// watches.
const POLL_EVERY: Duration = Duration::from_millis(250);
/// What a run whose node stopped heartbeating ends with.
pub const NODE_STOPPED: &str =
    "idmd stopped during the run: the node running it stopped (its heartbeat expired)";

/// How long a run's heartbeat (and its mapping's lease) lasts without renewal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heartbeat {
    /// Renewed this often (with the progress save, at most every [`SAVE_EVERY`]).
    pub renew: Duration,
    /// Expired this long after the last renewal.
    pub ttl: Duration,
}

impl Default for Heartbeat {
    fn default() -> Self {
        Heartbeat {
            renew: Duration::from_secs(2),
            ttl: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReconError {
    #[error("no mapping named \"{0}\"")]
    UnknownMapping(String),
    #[error("mapping {mapping}: no connector named \"{connector}\"")]
    UnknownConnector { mapping: String, connector: String },
    #[error("recon/{0} not found")]
    UnknownRun(String),
    #[error("mapping {mapping} is already being reconciled by recon/{rid}")]
    AlreadyRunning { mapping: String, rid: String },
    #[error("recon/{rid} already ended ({state})")]
    Ended { rid: String, state: String },
    #[error("mapping {mapping}: {source}")]
    Mapping {
        mapping: String,
        source: MappingError,
    },
    #[error("{0}")]
    Unsupported(String),
    #[error("{0}")]
    Connector(#[from] ConnectorError),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Managed(#[from] ManagedError),
    #[error("{0}")]
    Internal(String),
}

/// A mapping ready to run: its connector, the connector's object type and
/// the managed type on the other side.
struct Prepared {
    mapping: Arc<Mapping>,
    connector: Arc<dyn Connector>,
    object_type: String,
    /// The managed type (the target; the source of an outbound mapping).
    target_type: String,
    /// Managed objects into the connector (provisioning), not the reverse.
    outbound: bool,
}

struct ActiveRun {
    mapping: String,
    recon: Arc<Recon>,
    updates: watch::Receiver<ReconRunRecord>,
    /// Set while the final record is saved: the store may already say the
    /// run ended while `updates` still says ACTIVE.
    ending: Arc<AtomicBool>,
}

/// Starts and keeps track of reconciliation runs.
#[derive(Clone)]
pub struct Reconciler {
    store: Store,
    objects: ManagedObjects,
    conf_dir: PathBuf,
    active: Arc<Mutex<HashMap<String, ActiveRun>>>,
    /// Runs are saved in this node's name.
    node: String,
    heartbeat: Heartbeat,
}

pub fn is_finished(state: &str) -> bool {
    matches!(state, "SUCCESS" | "FAILED" | "CANCELED")
}

impl Reconciler {
    pub fn new(store: Store, objects: ManagedObjects, conf_dir: PathBuf) -> Self {
        Reconciler {
            store,
            objects,
            conf_dir,
            active: Arc::new(Mutex::new(HashMap::new())),
            node: format!(
                "idmd-{}-{}",
                std::process::id(),
                uuid::Uuid::new_v4().simple()
            ),
            heartbeat: Heartbeat::default(),
        }
    }

    /// Runs in the name of this node (the process's node id).
    pub fn with_node(mut self, node: impl Into<String>) -> Self {
        self.node = node.into();
        self
    }

    pub fn with_heartbeat(mut self, heartbeat: Heartbeat) -> Self {
        self.heartbeat = heartbeat;
        self
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// Marks FAILED the runs of any node whose heartbeat expired.
    pub async fn fail_expired(&self) -> Result<usize, ReconError> {
        let failed = self.store.fail_expired_runs(NODE_STOPPED).await?;
        if failed > 0 {
            tracing::warn!(
                runs = failed,
                "reconciliations whose node stopped are marked FAILED"
            );
        }
        Ok(failed)
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn objects(&self) -> &ManagedObjects {
        &self.objects
    }

    /// Relative paths in connector documents start here.
    pub fn conf_dir(&self) -> &std::path::Path {
        &self.conf_dir
    }

    async fn prepare(&self, name: &str) -> Result<Prepared, ReconError> {
        let document = self
            .store
            .get_config("mapping", name)
            .await?
            .ok_or_else(|| ReconError::UnknownMapping(name.to_string()))?;
        let mapping =
            Mapping::from_json(name, &document.body, &self.conf_dir, self.objects.schema())
                .map_err(|source| ReconError::Mapping {
                    mapping: name.to_string(),
                    source,
                })?;
        let (connector_name, object_type, target_type, outbound) =
            match (&mapping.source, &mapping.target) {
                (
                    Endpoint::System {
                        connector,
                        object_type,
                    },
                    Endpoint::Managed { type_name },
                ) => (
                    connector.clone(),
                    object_type.clone(),
                    type_name.clone(),
                    false,
                ),
                (
                    Endpoint::Managed { type_name },
                    Endpoint::System {
                        connector,
                        object_type,
                    },
                ) => (
                    connector.clone(),
                    object_type.clone(),
                    type_name.clone(),
                    true,
                ),
                (source, target) => {
                    return Err(ReconError::Unsupported(format!(
                        "mapping {name}: reconciling {source} into {target} is not supported \
                         (one side must be a connector, the other managed objects)"
                    )));
                }
            };
        let connector_doc = self
            .store
            .get_config("connector", &connector_name)
            .await?
            .ok_or_else(|| ReconError::UnknownConnector {
                mapping: name.to_string(),
                connector: connector_name.clone(),
            })?;
        let connector = connector::build(
            &connector_name,
            &connector_doc.body,
            &self.conf_dir,
            self.objects.secrets(),
        )?;
        Ok(Prepared {
            mapping: Arc::new(mapping),
            connector,
            object_type,
            target_type,
            outbound,
        })
    }

    /// Starts a run in the background and returns its first record.
    /// `only` restricts it to these source ids (reconById, no target phase).
    pub async fn start(
        &self,
        mapping: &str,
        only: Option<Vec<String>>,
        started_by: &str,
    ) -> Result<ReconRunRecord, ReconError> {
        let prepared = self.prepare(mapping).await?;
        let record = ReconRunRecord {
            rid: uuid::Uuid::now_v7().to_string(),
            mapping: mapping.to_string(),
            state: "ACTIVE".into(),
            stage: "ACTIVE_INITIALIZED".into(),
            started: now_timestamp(),
            started_by: started_by.to_string(),
            node: self.node.clone(),
            ..ReconRunRecord::default()
        };
        let recon = Arc::new(Recon::new(
            Arc::clone(&prepared.mapping),
            prepared.target_type.clone(),
            self.objects.clone(),
            self.store.clone(),
            record.clone(),
            None,
        ));
        let (publish, updates) = watch::channel(record.clone());
        let ending = Arc::new(AtomicBool::new(false));
        {
            let mut active = self.active.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some((rid, _)) = active.iter().find(|(_, run)| run.mapping == mapping) {
                return Err(ReconError::AlreadyRunning {
                    mapping: mapping.to_string(),
                    rid: rid.clone(),
                });
            }
            active.insert(
                record.rid.clone(),
                ActiveRun {
                    mapping: mapping.to_string(),
                    recon: Arc::clone(&recon),
                    updates,
                    ending: Arc::clone(&ending),
                },
            );
        }
        // One run per mapping across the nodes: the store's lease decides.
        match self.store.begin_run(&record, self.heartbeat.ttl).await {
            Ok(Ok(())) => {}
            Ok(Err(holder)) => {
                self.forget(&record.rid);
                return Err(ReconError::AlreadyRunning {
                    mapping: mapping.to_string(),
                    rid: holder,
                });
            }
            Err(e) => {
                self.forget(&record.rid);
                return Err(e.into());
            }
        }
        let this = self.clone();
        let rid = record.rid.clone();
        let only = only.map(|ids| ids.into_iter().collect::<HashSet<String>>());
        let span = tracing::info_span!("recon", rid = %rid, mapping = %mapping);
        tokio::spawn(
            async move {
                this.drive(recon, prepared, only, publish, ending).await;
                this.forget(&rid);
            }
            .instrument(span),
        );
        Ok(record)
    }

    fn forget(&self, rid: &str) {
        self.active
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(rid);
    }

    /// Runs to the end, publishing progress, and saves the final record.
    async fn drive(
        &self,
        recon: Arc<Recon>,
        prepared: Prepared,
        only: Option<HashSet<String>>,
        publish: watch::Sender<ReconRunRecord>,
        ending: Arc<AtomicBool>,
    ) {
        tracing::info!("reconciliation started");
        let started = std::time::Instant::now();
        // Saved by a task of its own: the heartbeat is renewed on time however
        // long the run's own awaits take.
        let lost = Arc::new(AtomicBool::new(false));
        let saver = tokio::spawn(
            keep_saving(
                self.store.clone(),
                Arc::clone(&recon),
                self.heartbeat,
                Arc::clone(&lost),
            )
            .in_current_span(),
        );
        let work = self.run(Arc::clone(&recon), prepared, only);
        tokio::pin!(work);
        let mut report = tokio::time::interval(REPORT_EVERY.min(self.heartbeat.renew));
        let outcome = loop {
            tokio::select! {
                outcome = &mut work => break outcome,
                _ = report.tick() => {
                    publish.send_replace(recon.snapshot());
                }
            }
        };
        saver.abort();
        let _ = saver.await;
        let mut lost = lost.load(Ordering::SeqCst);
        let cancelled = recon.is_cancelled();
        recon.update(|r| {
            r.ended = Some(now_timestamp());
            let (state, stage) = match (&outcome, cancelled) {
                (Err(e), _) => {
                    r.error = Some(e.to_string());
                    ("FAILED", "COMPLETED_FAILED")
                }
                (Ok(()), true) => ("CANCELED", "COMPLETED_CANCELED"),
                (Ok(()), false) => ("SUCCESS", "COMPLETED_SUCCESS"),
            };
            r.state = state.into();
            r.stage = stage.into();
        });
        let mut last = recon.snapshot();
        crate::metrics::recon_ended(&last, started.elapsed());
        // Readers on this node wait for `publish` from here on: what another
        // node reads from the store as ended, this one never shows as ACTIVE.
        ending.store(true, Ordering::SeqCst);
        match self.store.end_run(&last).await {
            Ok(RunStanding::Owned { .. }) => {}
            Ok(RunStanding::Lost) => {
                if !lost {
                    tracing::error!("the run was marked FAILED by another node before it ended");
                }
                lost = true;
            }
            Err(e) => tracing::error!(error = %e, "saving the final recon record failed"),
        }
        if lost {
            // What the store says stands.
            if let Ok(Some(stored)) = self.store.get_run(&last.rid).await {
                last = stored;
            }
        }
        tracing::info!(
            state = %last.state,
            processed = last.source.processed,
            failures = last.failure_count,
            error = last.error.as_deref().unwrap_or(""),
            "reconciliation ended"
        );
        publish.send_replace(last);
    }

    /// The run itself: connector → managed, or managed → connector.
    async fn run(
        &self,
        recon: Arc<Recon>,
        prepared: Prepared,
        only: Option<HashSet<String>>,
    ) -> Result<(), ReconError> {
        if !prepared.outbound {
            return run::reconcile(recon, prepared.connector, prepared.object_type, only).await;
        }
        let mappings =
            crate::sync::outbox::load_sync_mappings(&self.store, &self.objects, &self.conf_dir)
                .await?;
        let referrers = crate::sync::outbox::referrers(&mappings, &prepared.mapping.name);
        let (store, objects) = (self.store.clone(), self.objects.clone());
        let handle = tokio::runtime::Handle::current();
        // The provisioner's script engine stays on this one thread.
        tokio::task::spawn_blocking(move || {
            let provisioner = Provisioner::new(
                prepared.mapping,
                prepared.connector,
                store,
                objects,
                referrers,
            )
            .map_err(|e| ReconError::Internal(e.to_string()))?;
            handle.block_on(outbound::reconcile(recon, provisioner, only))
        })
        .await
        .map_err(|e| ReconError::Internal(format!("the reconciliation thread stopped: {e}")))?
    }

    /// Progress of a run of this node while it is active; once its final
    /// record is being saved, only after that record is published.
    pub async fn watch(&self, rid: &str) -> Option<watch::Receiver<ReconRunRecord>> {
        let (mut updates, ending) = {
            let active = self.active.lock().unwrap_or_else(PoisonError::into_inner);
            let run = active.get(rid)?;
            (run.updates.clone(), Arc::clone(&run.ending))
        };
        if ending.load(Ordering::SeqCst) {
            // Ends with `publish` (or its drop, should the run's task die).
            let _ = updates.wait_for(|r| is_finished(&r.state)).await;
        }
        Some(updates)
    }

    /// The latest record of a run, live if it is active.
    pub async fn get(&self, rid: &str) -> Result<ReconRunRecord, ReconError> {
        if let Some(updates) = self.watch(rid).await {
            return Ok(updates.borrow().clone());
        }
        self.store
            .get_run(rid)
            .await?
            .ok_or_else(|| ReconError::UnknownRun(rid.to_string()))
    }

    /// Waits for a run to end and returns its final record: a run of this
    /// node through its updates, another node's through the store.
    pub async fn wait(&self, rid: &str) -> Result<ReconRunRecord, ReconError> {
        if let Some(mut updates) = self.watch(rid).await {
            let _ = updates.wait_for(|r| is_finished(&r.state)).await;
            return self.get(rid).await;
        }
        loop {
            let run = self.get(rid).await?;
            if is_finished(&run.state) {
                return Ok(run);
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
    }

    /// The record of a run as it changes, until it ended (inclusive): a run
    /// of this node from its updates, another node's by reading the store.
    pub async fn follow(
        &self,
        rid: &str,
    ) -> futures::stream::BoxStream<'static, Result<ReconRunRecord, ReconError>> {
        use futures::StreamExt;
        if let Some(updates) = self.watch(rid).await {
            let mut finished = false;
            return tokio_stream::wrappers::WatchStream::new(updates)
                .take_while(move |run| {
                    let more = !finished;
                    finished = is_finished(&run.state);
                    futures::future::ready(more)
                })
                .map(Ok)
                .boxed();
        }
        let this = self.clone();
        let rid = rid.to_string();
        // (this, rid, last sent, ended)
        futures::stream::unfold(
            (this, rid, None::<ReconRunRecord>, false),
            |(this, rid, last, ended)| async move {
                if ended {
                    return None;
                }
                loop {
                    if last.is_some() {
                        tokio::time::sleep(POLL_EVERY).await;
                    }
                    match this.get(&rid).await {
                        Err(e) => return Some((Err(e), (this, rid, last, true))),
                        Ok(run) if last.as_ref() == Some(&run) => {}
                        Ok(run) => {
                            let ended = is_finished(&run.state);
                            return Some((Ok(run.clone()), (this, rid, Some(run), ended)));
                        }
                    }
                }
            },
        )
        .boxed()
    }

    /// Asks a run to stop and waits until it has (workers finish the batch in hand).
    pub async fn cancel(&self, rid: &str) -> Result<ReconRunRecord, ReconError> {
        let recon = self
            .active
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(rid)
            .map(|run| Arc::clone(&run.recon));
        if let Some(recon) = recon {
            recon.cancel();
            return self.wait(rid).await;
        }
        // Another node's run: asked through the store, which its owner reads
        // with its next save (a dead owner's run is failed once it expired).
        let run = self
            .store
            .request_cancel(rid)
            .await?
            .ok_or_else(|| ReconError::UnknownRun(rid.to_string()))?;
        if is_finished(&run.state) {
            return Err(ReconError::Ended {
                rid: run.rid,
                state: run.state,
            });
        }
        self.wait(rid).await
    }

    /// Cancels every active run and waits for them, at most `grace`.
    pub async fn shutdown(&self, grace: Duration) {
        let runs: Vec<String> = {
            let active = self.active.lock().unwrap_or_else(PoisonError::into_inner);
            for run in active.values() {
                run.recon.cancel();
            }
            active.keys().cloned().collect()
        };
        let all = futures::future::join_all(runs.iter().map(|rid| self.wait(rid)));
        if tokio::time::timeout(grace, all).await.is_err() {
            tracing::warn!("reconciliations still stopping at shutdown");
        }
    }

    /// What a run would do, changing nothing.
    pub async fn plan(
        &self,
        mapping: &str,
        only: Option<Vec<String>>,
        limit: usize,
    ) -> Result<PlanOutcome, ReconError> {
        let prepared = self.prepare(mapping).await?;
        let record = ReconRunRecord {
            rid: format!("plan-{}", uuid::Uuid::now_v7()),
            mapping: mapping.to_string(),
            ..ReconRunRecord::default()
        };
        let recon = Arc::new(Recon::new(
            Arc::clone(&prepared.mapping),
            prepared.target_type.clone(),
            self.objects.clone(),
            self.store.clone(),
            record,
            Some(limit),
        ));
        self.run(
            Arc::clone(&recon),
            prepared,
            only.map(|ids| ids.into_iter().collect()),
        )
        .await?;
        Ok(recon.outcome())
    }
}

/// Saves the owner's progress every [`SAVE_EVERY`] (at most every
/// `heartbeat.renew`), which renews the run's heartbeat and reads back a
/// cancel request from another node; runs until aborted.
async fn keep_saving(store: Store, recon: Arc<Recon>, heartbeat: Heartbeat, lost: Arc<AtomicBool>) {
    let mut every = tokio::time::interval(SAVE_EVERY.min(heartbeat.renew));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    every.tick().await;
    loop {
        every.tick().await;
        match store.save_progress(&recon.snapshot(), heartbeat.ttl).await {
            Ok(RunStanding::Owned {
                cancel_requested: true,
            }) => {
                if !recon.is_cancelled() {
                    tracing::info!("cancel requested through the store");
                    recon.cancel();
                }
            }
            Ok(RunStanding::Owned { .. }) => {}
            Ok(RunStanding::Lost) => {
                // Our heartbeat lapsed and another node failed the run.
                tracing::error!(
                    "the run was marked FAILED by another node (its heartbeat expired); stopping it"
                );
                lost.store(true, Ordering::SeqCst);
                recon.cancel();
                return;
            }
            Err(e) => tracing::warn!(error = %e, "saving recon progress failed"),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    //! Two nodes are two Reconcilers over one store with different node ids.
    //! The source is a named pipe held open and never written: a run reads
    //! it until the test closes it, so it stays ACTIVE as long as needed.

    use super::*;
    use crate::managed::ManagedSchema;
    use crate::secrets::SecretBox;
    use crate::store::ConfigDocument;
    use futures::StreamExt;
    use serde_json::{Value, json};

    const MAPPING: &str = "csvEmployee_managedUser";
    const LIMIT: Duration = Duration::from_secs(60);

    struct Cluster {
        store: Store,
        objects: ManagedObjects,
        dir: crate::scratch::Scratch,
        /// Both ends of the pipe: while open, readers wait for rows.
        pipe: Option<std::fs::File>,
    }

    impl Cluster {
        /// A source that never ends until the cluster is dropped.
        async fn new() -> Self {
            Self::open(None).await
        }

        /// A source of these CSV rows (header first), read to its end.
        async fn with_rows(csv: &str) -> Self {
            Self::open(Some(csv)).await
        }

        async fn open(csv: Option<&str>) -> Self {
            let store = Store::open("mem://").await.unwrap();
            let dir = crate::scratch::Scratch::new("idm-runs");
            let secrets = SecretBox::ephemeral();
            let objects = ManagedObjects::new(
                Arc::new(ManagedSchema::builtin().unwrap()),
                store.clone(),
                Arc::new(secrets),
            );
            let hr = dir.join("hr.csv");
            let pipe = match csv {
                Some(rows) => {
                    std::fs::write(&hr, rows).unwrap();
                    None
                }
                None => Some(open_pipe(&hr)),
            };
            let sample: Value = serde_json::from_str(include_str!(
                "../../../../tests/fixtures/idm-sync/sync.json"
            ))
            .unwrap();
            let mut mapping = sample["mappings"][0].clone();
            mapping["properties"]
                .as_array_mut()
                .unwrap()
                .retain(|p| p["target"] != "password");
            for (kind, name, body) in [
                (
                    "connector",
                    "csv",
                    json!({"connectorType": "csv", "file": hr, "objectTypes": {"employee": {"uidColumn": "uid"}}}),
                ),
                ("mapping", MAPPING, mapping),
            ] {
                store
                    .put_config(&ConfigDocument {
                        kind: kind.into(),
                        name: name.into(),
                        body: body.as_object().cloned().unwrap(),
                        source: "test".into(),
                    })
                    .await
                    .unwrap();
            }
            Cluster {
                store,
                objects,
                dir,
                pipe,
            }
        }

        fn node(&self, node: &str) -> Reconciler {
            Reconciler::new(
                self.store.clone(),
                self.objects.clone(),
                self.dir.to_path_buf(),
            )
            .with_node(node)
        }
    }

    /// A named pipe at `path`, held open at both ends.
    fn open_pipe(path: &std::path::Path) -> std::fs::File {
        let made = std::process::Command::new("mkfifo")
            .arg(path)
            .status()
            .unwrap();
        assert!(made.success());
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .unwrap()
    }

    impl Drop for Cluster {
        fn drop(&mut self) {
            // End of file for the readers still waiting on the pipe.
            self.pipe.take();
        }
    }

    async fn within<T>(what: impl std::future::Future<Output = T>) -> T {
        tokio::time::timeout(LIMIT, what).await.unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_finished_run_times_each_phase_it_ran_and_any_node_reads_the_timings() {
        let cluster = Cluster::with_rows(
            "uid,firstName,lastName,telephoneNumber\n\
             123,Jon,Snow,5551234\n\
             456,John,Doe,5554567\n",
        )
        .await;
        let (a, b) = (cluster.node("node-a"), cluster.node("node-b"));
        let run = a.start(MAPPING, None, "test").await.unwrap();
        let ended = within(a.wait(&run.rid)).await.unwrap();
        assert_eq!(ended.state, "SUCCESS", "{ended:?}");

        let phases: Vec<&str> = ended.durations.keys().map(String::as_str).collect();
        assert_eq!(
            phases,
            [
                "linkQuery",
                "sourcePhase",
                "sourceQuery",
                "targetPhase",
                "targetQuery"
            ]
        );
        for (phase, timing) in &ended.durations {
            assert!(timing.count >= 1, "{phase}: {timing:?}");
            let (min, mean, max) = (timing.min_us as f64, timing.mean_us(), timing.max_us as f64);
            assert!(min <= mean && mean <= max, "{phase}: {timing:?}");
            assert!(timing.std_dev_us() >= 0.0, "{phase}: {timing:?}");
        }
        // One batch of two rows, one target phase.
        assert_eq!(ended.durations["sourcePhase"].count, 1);
        assert_eq!(ended.durations["targetPhase"].count, 1);
        // The saved record carries them: another node reads the same figures.
        assert_eq!(b.get(&run.rid).await.unwrap().durations, ended.durations);
    }

    /// With several task threads the target phase walks links and targets
    /// side by side; a target whose link lost its source is still decided
    /// once, by its link (SOURCE_MISSING, here UNLINK), never a second time
    /// as UNASSIGNED by the targets' walk, which waits for the links'.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_side_by_side_walks_decide_each_target_once() {
        const ROWS: usize = 600;
        let header = "uid,firstName,lastName,telephoneNumber\n";
        let rows = |n: usize| -> String {
            (0..n)
                .map(|i| format!("{i},First{i},Last{i},555{i:04}\n"))
                .collect()
        };
        let cluster = Cluster::with_rows(&format!("{header}{}", rows(ROWS))).await;
        let node = cluster.node("node-a");
        let run = node.start(MAPPING, None, "test").await.unwrap();
        let first = within(node.wait(&run.rid)).await.unwrap();
        assert_eq!(first.situations.get("ABSENT"), Some(&(ROWS as i64)));

        // Users no source has, whose ids sort first: the targets' walk meets
        // them before the linked ones. (Whether the links' walk has marked
        // its targets by the time the targets' walk filters a page is a race
        // this test does not force; it checks every count either way.)
        const EXTRAS: usize = 200;
        let extras = (0..EXTRAS)
            .map(|i| {
                let attributes = json!({"userName": format!("extra{i}"), "givenName": "E",
                    "sn": format!("X{i}"), "mail": format!("extra{i}@example.com")});
                (
                    Some(format!("-x{i:04}")),
                    attributes.as_object().cloned().unwrap(),
                )
            })
            .collect();
        cluster
            .objects
            .create_many("test", "user", extras)
            .await
            .unwrap();

        // Every other row goes; their users lose their source.
        let kept: String = (0..ROWS)
            .filter(|i| i % 2 == 0)
            .map(|i| format!("{i},First{i},Last{i},555{i:04}\n"))
            .collect();
        std::fs::write(cluster.dir.join("hr.csv"), format!("{header}{kept}")).unwrap();
        let mut mapping = cluster
            .store
            .get_config("mapping", MAPPING)
            .await
            .unwrap()
            .unwrap();
        mapping.body.insert(
            "policies".into(),
            json!([{"situation": "SOURCE_MISSING", "action": "UNLINK"}]),
        );
        assert_eq!(mapping.body.get("taskThreads"), None, "Wren's default, 10");
        cluster.store.put_config(&mapping).await.unwrap();

        let run = node.start(MAPPING, None, "test").await.unwrap();
        let second = within(node.wait(&run.rid)).await.unwrap();
        assert_eq!(second.state, "SUCCESS", "{second:?}");
        let half = (ROWS / 2) as i64;
        let extras = EXTRAS as i64;
        let situations = |pairs: &[(&str, i64)]| -> std::collections::BTreeMap<String, i64> {
            pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
        };
        assert_eq!(
            second.situations,
            situations(&[
                ("CONFIRMED", half),
                ("SOURCE_MISSING", half),
                ("UNASSIGNED", extras)
            ]),
            "{:?}",
            second.failures.first()
        );
        assert_eq!(second.actions.get("UNLINK"), Some(&half));
        let targets = ROWS as i64 + extras;
        assert_eq!(
            (second.target.processed, second.target.total),
            (targets, targets)
        );

        // Now the unlinked users are UNASSIGNED too, each once.
        let run = node.start(MAPPING, None, "test").await.unwrap();
        let third = within(node.wait(&run.rid)).await.unwrap();
        assert_eq!(
            third.situations,
            situations(&[("CONFIRMED", half), ("UNASSIGNED", half + extras)])
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_mapping_runs_once_across_nodes_and_any_node_cancels_it() {
        let cluster = Cluster::new().await;
        let (a, b) = (cluster.node("node-a"), cluster.node("node-b"));
        let run = a.start(MAPPING, None, "test").await.unwrap();
        assert_eq!(
            (run.state.as_str(), run.node.as_str()),
            ("ACTIVE", "node-a")
        );

        // B refuses a second run of the mapping, naming A's.
        match b.start(MAPPING, None, "test").await {
            Err(ReconError::AlreadyRunning { rid, .. }) => assert_eq!(rid, run.rid),
            other => panic!("expected AlreadyRunning, got {other:?}"),
        }
        assert!(matches!(
            a.start(MAPPING, None, "test").await,
            Err(ReconError::AlreadyRunning { .. })
        ));
        // B reads A's run from the store; B's sweep leaves A's live run alone.
        let seen = b.get(&run.rid).await.unwrap();
        assert_eq!(
            (seen.state.as_str(), seen.node.as_str()),
            ("ACTIVE", "node-a")
        );
        assert_eq!(b.fail_expired().await.unwrap(), 0);
        assert_eq!(b.get(&run.rid).await.unwrap().state, "ACTIVE");

        // B's watch follows A's run from the store to its end.
        let mut watched = b.follow(&run.rid).await;
        let first = within(watched.next()).await.unwrap().unwrap();
        assert_eq!(first.state, "ACTIVE");

        // B cancels A's run: A sees the request with its next save and stops.
        let canceled = within(b.cancel(&run.rid)).await.unwrap();
        assert_eq!(canceled.state, "CANCELED");
        assert_eq!(a.get(&run.rid).await.unwrap().state, "CANCELED");
        let mut last = first;
        while let Some(next) = within(watched.next()).await {
            last = next.unwrap();
        }
        assert_eq!(last.state, "CANCELED");
        assert!(matches!(
            b.cancel(&run.rid).await,
            Err(ReconError::Ended { .. })
        ));

        // The mapping is free again: B runs it, A cancels B's run.
        let again = within(async {
            loop {
                match b.start(MAPPING, None, "test").await {
                    // A's lease goes right after its final save.
                    Err(ReconError::AlreadyRunning { .. }) => {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    other => break other.unwrap(),
                }
            }
        })
        .await;
        assert_eq!(again.node, "node-b");
        let canceled = within(a.cancel(&again.rid)).await.unwrap();
        assert_eq!(canceled.state, "CANCELED");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_run_whose_node_stopped_is_failed_by_another_node_once_its_heartbeat_expired() {
        let cluster = Cluster::new().await;
        let b = cluster.node("node-b");
        // Node A runs in a runtime of its own with one worker thread, which
        // the test then blocks for good: nothing of A runs any more (its
        // heartbeat stops, its run never ends), as if A were killed. (Shutting
        // the runtime down instead lets the run see its workers cancelled and
        // end itself, releasing the mapping, before it is dropped.)
        let a = cluster.node("node-a").with_heartbeat(Heartbeat {
            renew: Duration::from_millis(100),
            ttl: Duration::from_secs(3),
        });
        let (node_a, run) = tokio::task::spawn_blocking(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            let run = runtime.block_on(a.start(MAPPING, None, "test")).unwrap();
            (runtime, run)
        })
        .await
        .unwrap();
        node_a.spawn(async { std::thread::sleep(Duration::from_secs(600)) });

        // Until it expires, the run is A's: not failed, the mapping held.
        assert_eq!(b.fail_expired().await.unwrap(), 0);
        assert_eq!(b.get(&run.rid).await.unwrap().state, "ACTIVE");
        let refused = b.start(MAPPING, None, "test").await;
        assert!(
            matches!(refused, Err(ReconError::AlreadyRunning { .. })),
            "{refused:?}"
        );

        // Then any node's sweep fails it, and a new run of the mapping goes.
        within(async {
            while b.fail_expired().await.unwrap() == 0 {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await;
        let failed = b.get(&run.rid).await.unwrap();
        assert_eq!(
            (failed.state.as_str(), failed.error.as_deref()),
            ("FAILED", Some(NODE_STOPPED))
        );
        assert!(failed.ended.is_some());
        let next = b.start(MAPPING, None, "test").await.unwrap();
        assert_eq!(next.node, "node-b");
        let canceled = within(b.cancel(&next.rid)).await.unwrap();
        assert_eq!(canceled.state, "CANCELED");
        node_a.shutdown_background();
    }
}
