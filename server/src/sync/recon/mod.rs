//! Reconciliation: runs of a mapping from a connector source into managed
//! objects, Wren:IDM's situations and actions, kept as history. The
//! [`Reconciler`] starts, watches, cancels and plans runs; `run.rs` drives
//! one, `worker.rs` decides and applies per record.

mod outbound;
mod run;
mod worker;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::watch;
use tracing::Instrument;

pub use run::{PlanOutcome, PlannedChange, PropertyChange};

use crate::connector::{self, Connector, ConnectorError};
use crate::managed::{ManagedError, ManagedObjects};
use crate::store::{ReconRunRecord, Store, StoreError, now_timestamp};
use crate::sync::provision::Provisioner;
use crate::sync::{Endpoint, Mapping, MappingError};
use run::Recon;

/// How often a running reconciliation publishes progress and saves its record.
const REPORT_EVERY: Duration = Duration::from_millis(250);
const SAVE_EVERY: Duration = Duration::from_secs(1);

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
}

/// Starts and keeps track of reconciliation runs.
#[derive(Clone)]
pub struct Reconciler {
    store: Store,
    objects: ManagedObjects,
    conf_dir: PathBuf,
    active: Arc<Mutex<HashMap<String, ActiveRun>>>,
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
        }
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
                },
            );
        }
        if let Err(e) = self.store.save_run(&record).await {
            self.forget(&record.rid);
            return Err(e.into());
        }
        let this = self.clone();
        let rid = record.rid.clone();
        let only = only.map(|ids| ids.into_iter().collect::<HashSet<String>>());
        let span = tracing::info_span!("recon", rid = %rid, mapping = %mapping);
        tokio::spawn(
            async move {
                this.drive(recon, prepared, only, publish).await;
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
    ) {
        tracing::info!("reconciliation started");
        let started = std::time::Instant::now();
        let work = self.run(Arc::clone(&recon), prepared, only);
        tokio::pin!(work);
        let mut report = tokio::time::interval(REPORT_EVERY);
        let mut last_save = tokio::time::Instant::now();
        let outcome = loop {
            tokio::select! {
                outcome = &mut work => break outcome,
                _ = report.tick() => {
                    let snapshot = recon.snapshot();
                    if last_save.elapsed() >= SAVE_EVERY {
                        last_save = tokio::time::Instant::now();
                        if let Err(e) = self.store.save_run(&snapshot).await {
                            tracing::warn!(error = %e, "saving recon progress failed");
                        }
                    }
                    publish.send_replace(snapshot);
                }
            }
        };
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
        let last = recon.snapshot();
        crate::metrics::recon_ended(&last, started.elapsed());
        if let Err(e) = self.store.save_run(&last).await {
            tracing::error!(error = %e, "saving the final recon record failed");
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

    /// Progress of a run while it is active.
    pub fn watch(&self, rid: &str) -> Option<watch::Receiver<ReconRunRecord>> {
        self.active
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(rid)
            .map(|run| run.updates.clone())
    }

    /// The latest record of a run, live if it is active.
    pub async fn get(&self, rid: &str) -> Result<ReconRunRecord, ReconError> {
        if let Some(updates) = self.watch(rid) {
            return Ok(updates.borrow().clone());
        }
        self.store
            .get_run(rid)
            .await?
            .ok_or_else(|| ReconError::UnknownRun(rid.to_string()))
    }

    /// Waits for a run to end and returns its final record.
    pub async fn wait(&self, rid: &str) -> Result<ReconRunRecord, ReconError> {
        if let Some(mut updates) = self.watch(rid) {
            let _ = updates.wait_for(|r| is_finished(&r.state)).await;
        }
        self.get(rid).await
    }

    /// Asks a run to stop and waits until it has (workers finish the batch in hand).
    pub async fn cancel(&self, rid: &str) -> Result<ReconRunRecord, ReconError> {
        let recon = self
            .active
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(rid)
            .map(|run| Arc::clone(&run.recon));
        match recon {
            Some(recon) => {
                recon.cancelled.store(true, Ordering::Relaxed);
                self.wait(rid).await
            }
            None => {
                let run = self.get(rid).await?;
                Err(ReconError::Ended {
                    rid: run.rid,
                    state: run.state,
                })
            }
        }
    }

    /// Cancels every active run and waits for them, at most `grace`.
    pub async fn shutdown(&self, grace: Duration) {
        let runs: Vec<String> = {
            let active = self.active.lock().unwrap_or_else(PoisonError::into_inner);
            for run in active.values() {
                run.recon.cancelled.store(true, Ordering::Relaxed);
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
        if prepared.outbound {
            return Err(ReconError::Unsupported(format!(
                "mapping {mapping}: a plan of managed objects into a connector is not supported yet"
            )));
        }
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
        run::reconcile(
            Arc::clone(&recon),
            prepared.connector,
            prepared.object_type,
            only.map(|ids| ids.into_iter().collect()),
        )
        .await?;
        Ok(recon.outcome())
    }
}
