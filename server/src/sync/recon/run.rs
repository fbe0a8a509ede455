//! One reconciliation run: the shared tally, the source phase pipeline (a
//! reader streaming the connector into batches, `taskThreads` workers taking
//! them) and the target phase.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::Value;
use tokio::sync::{mpsc, watch};

use super::ReconError;
use super::worker::Worker;
use crate::connector::{Connector, ConnectorObject, SourceItem};
use crate::hashed_ids::{HashedIds, hash_id};
use crate::managed::ManagedObjects;
use crate::store::{ReconFailureRecord, ReconRunRecord, Store};
use crate::sync::{Action, Mapping, Situation};

/// Source records per batch: one links read, one targets read and at most
/// one create transaction per batch.
pub(super) const BATCH: usize = 500;
/// Ids read from the store at a time when a run walks every link or object
/// of a mapping (its target phase): bounded memory, few round trips.
pub(super) const PAGE: usize = 5_000;

/// What a run times, by Wren's names for these tasks of a reconciliation
/// (its `durationSummary`). Each is timed per piece of work, never per record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ReconTask {
    /// Reading the source: each batch read from the connector (inbound), each
    /// page of managed ids (outbound).
    SourceQuery,
    /// Reconciling each batch of source records.
    SourcePhase,
    /// Each read of the mapping's links.
    LinkQuery,
    /// Each page of target ids the target phase reads (inbound).
    TargetQuery,
    /// The whole target phase, once.
    TargetPhase,
}

impl ReconTask {
    pub fn name(self) -> &'static str {
        match self {
            ReconTask::SourceQuery => "sourceQuery",
            ReconTask::SourcePhase => "sourcePhase",
            ReconTask::LinkQuery => "linkQuery",
            ReconTask::TargetQuery => "targetQuery",
            ReconTask::TargetPhase => "targetPhase",
        }
    }
}

/// A change a dry run would make.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedChange {
    pub source_id: Option<String>,
    pub target_id: Option<String>,
    pub situation: Situation,
    pub action: Action,
    pub properties: Vec<PropertyChange>,
}

/// One property's value before and after (private values are masked).
#[derive(Debug, Clone, PartialEq)]
pub struct PropertyChange {
    pub property: String,
    pub before: Value,
    pub after: Value,
}

/// What a dry run found.
#[derive(Debug, Clone, Default)]
pub struct PlanOutcome {
    pub changes: Vec<PlannedChange>,
    pub situations: BTreeMap<String, i64>,
    pub actions: BTreeMap<String, i64>,
    pub failures: Vec<ReconFailureRecord>,
    pub failure_count: i64,
}

/// Everything the workers of one run share.
pub(super) struct Recon {
    pub mapping: Arc<Mapping>,
    pub target_type: String,
    pub objects: ManagedObjects,
    pub store: Store,
    /// The audit actor of the run's writes: `recon/<id>`.
    pub actor: String,
    /// `Some(limit)`: a dry run listing at most `limit` changes.
    pub plan: Option<usize>,
    cancelled: AtomicBool,
    /// Wakes a source read waiting on a slow connector when the run is cancelled.
    cancel_signal: tokio::sync::Notify,
    /// Source records that failed without a uid: their sources' absence
    /// from the read is then no proof that they are gone.
    pub unread_sources: AtomicU64,
    state: Mutex<RunState>,
    // Ids by 64-bit hash: about 8 bytes per id however long, so a million-row
    // run stays small. A collision can only make the target phase skip an
    // object (never act on one wrongly), at odds of about 1 in 10^7 per
    // million ids.
    seen_sources: Mutex<HashedIds>,
    seen_targets: Mutex<HashedIds>,
}

struct RunState {
    record: ReconRunRecord,
    planned: Vec<PlannedChange>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Recon {
    pub fn new(
        mapping: Arc<Mapping>,
        target_type: String,
        objects: ManagedObjects,
        store: Store,
        record: ReconRunRecord,
        plan: Option<usize>,
    ) -> Self {
        Recon {
            actor: format!("recon/{}", record.rid),
            mapping,
            target_type,
            objects,
            store,
            plan,
            cancelled: AtomicBool::new(false),
            cancel_signal: tokio::sync::Notify::new(),
            unread_sources: AtomicU64::new(0),
            state: Mutex::new(RunState {
                record,
                planned: Vec::new(),
            }),
            seen_sources: Mutex::new(HashedIds::new()),
            seen_targets: Mutex::new(HashedIds::new()),
        }
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
    }

    /// Stops the run: the source read at once, workers after the batch in hand.
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::Relaxed);
        self.cancel_signal.notify_waiters();
    }

    pub fn snapshot(&self) -> ReconRunRecord {
        lock(&self.state).record.clone()
    }

    pub fn update(&self, change: impl FnOnce(&mut ReconRunRecord)) {
        change(&mut lock(&self.state).record);
    }

    pub fn count_situation(&self, situation: Situation) {
        *lock(&self.state)
            .record
            .situations
            .entry(situation.name().to_string())
            .or_default() += 1;
    }

    pub fn count_action(&self, action: Action) {
        *lock(&self.state)
            .record
            .actions
            .entry(action.name().to_string())
            .or_default() += 1;
    }

    /// Adds one timing of a task to the run's record.
    pub fn record_time(&self, task: ReconTask, elapsed: Duration) {
        lock(&self.state)
            .record
            .durations
            .entry(task.name().to_string())
            .or_default()
            .add(elapsed);
    }

    /// Runs `work` and records how long it took as one timing of `task`.
    pub async fn timed<T>(&self, task: ReconTask, work: impl std::future::Future<Output = T>) -> T {
        let started = Instant::now();
        let outcome = work.await;
        self.record_time(task, started.elapsed());
        outcome
    }

    pub fn fail(&self, failure: ReconFailureRecord) {
        lock(&self.state).record.record_failure(failure);
    }

    /// Keeps a dry run's change while under its limit.
    pub fn planned(&self, change: PlannedChange) {
        let mut state = lock(&self.state);
        if self.plan.is_some_and(|limit| state.planned.len() < limit) {
            state.planned.push(change);
        }
    }

    pub fn mark_sources<'a>(&self, ids: impl IntoIterator<Item = &'a String>) {
        lock(&self.seen_sources).extend(ids.into_iter().map(|id| hash_id(id)));
    }

    pub fn mark_targets<'a>(&self, ids: impl IntoIterator<Item = &'a String>) {
        lock(&self.seen_targets).extend(ids.into_iter().map(|id| hash_id(id)));
    }

    pub fn source_seen(&self, id: &str) -> bool {
        lock(&self.seen_sources).contains(hash_id(id))
    }

    pub fn target_seen(&self, id: &str) -> bool {
        lock(&self.seen_targets).contains(hash_id(id))
    }

    pub fn outcome(&self) -> PlanOutcome {
        let state = lock(&self.state);
        PlanOutcome {
            changes: state.planned.clone(),
            situations: state.record.situations.clone(),
            actions: state.record.actions.clone(),
            failures: state.record.failures.clone(),
            failure_count: state.record.failure_count,
        }
    }
}

/// Reads the source: `only` restricts the run to these source ids (reconById).
pub(super) async fn reconcile(
    recon: Arc<Recon>,
    connector: Arc<dyn Connector>,
    object_type: String,
    only: Option<HashSet<String>>,
) -> Result<(), ReconError> {
    recon.update(|r| r.stage = "ACTIVE_RECONCILING_SOURCE".into());
    let totals = tokio::spawn(count_existing(
        Arc::clone(&recon),
        Arc::clone(&connector),
        object_type.clone(),
        only.as_ref().map(HashSet::len),
    ));

    let threads = recon.mapping.task_threads;
    let (batches, receiver) = mpsc::channel::<Vec<ConnectorObject>>(threads);
    let receiver = Arc::new(tokio::sync::Mutex::new(receiver));
    let mut workers = Vec::with_capacity(threads);
    for _ in 0..threads {
        let recon = Arc::clone(&recon);
        let receiver = Arc::clone(&receiver);
        workers.push(on_worker_thread(recon, move |mut worker| async move {
            loop {
                let batch = receiver.lock().await.recv().await;
                let Some(batch) = batch else { return Ok(()) };
                if worker.recon().is_cancelled() {
                    continue;
                }
                let started = Instant::now();
                let result = worker.source_batch(batch).await;
                worker
                    .recon()
                    .record_time(ReconTask::SourcePhase, started.elapsed());
                if result.is_err() {
                    // Stop the reader; the run fails with this error.
                    worker.recon().cancel();
                    return result;
                }
            }
        }));
    }

    // Only the workers hold the receiver: if they all stop, the reader's
    // sends fail instead of waiting forever.
    drop(receiver);
    let read = read_source(&recon, &connector, &object_type, only.as_ref(), batches).await;
    let mut outcome = read;
    for worker in workers {
        let result = worker.await;
        if outcome.is_ok() {
            outcome = result;
        }
    }
    totals.abort();
    outcome?;
    if recon.is_cancelled() {
        return Ok(());
    }
    recon.update(|r| {
        r.source.total = r.source.processed;
        r.source.existing = r.source.processed;
    });
    if let Some(ids) = only {
        // Asked-for ids the source no longer has: their link decides.
        let missing: Vec<String> = ids
            .into_iter()
            .filter(|id| !recon.source_seen(id))
            .collect();
        if !missing.is_empty() {
            let absent = on_worker_thread(Arc::clone(&recon), |mut worker| async move {
                worker.absent_sources(missing).await
            });
            recon.timed(ReconTask::SourcePhase, absent).await?;
        }
        return Ok(());
    }
    if recon.mapping.run_target_phase {
        recon.update(|r| r.stage = "ACTIVE_RECONCILING_TARGET".into());
        recon
            .timed(ReconTask::TargetPhase, target_phase(&recon))
            .await?;
    }
    Ok(())
}

/// Links whose source is gone, then targets no source reached. With more
/// than one task thread both walks run side by side (the targets' walk waits
/// for the links' once it meets an unseen target; see
/// [`Worker::unreached_targets_walk`]): a run that changed nothing reads
/// every link id and every target id, and no longer one walk after the other.
async fn target_phase(recon: &Arc<Recon>) -> Result<(), ReconError> {
    if recon.mapping.task_threads < 2 {
        return on_worker_thread(Arc::clone(recon), |mut worker| async move {
            worker.orphaned_links_walk().await?;
            worker.unreached_targets_walk(None).await
        })
        .await;
    }
    let (walked, links_walked) = watch::channel(false);
    let links = on_worker_thread(Arc::clone(recon), |mut worker| async move {
        let result = worker.orphaned_links_walk().await;
        if result.is_err() {
            // The targets' walk stops rather than act on a half-walked phase.
            worker.recon().cancel();
        }
        let _ = walked.send(true);
        result
    });
    let targets = on_worker_thread(Arc::clone(recon), |mut worker| async move {
        worker.unreached_targets_walk(Some(links_walked)).await
    });
    let (links, targets) = tokio::join!(links, targets);
    links.and(targets)
}

/// Streams the connector into batches for the workers.
async fn read_source(
    recon: &Recon,
    connector: &Arc<dyn Connector>,
    object_type: &str,
    only: Option<&HashSet<String>>,
    batches: mpsc::Sender<Vec<ConnectorObject>>,
) -> Result<(), ReconError> {
    let wanted = |uid: &str| only.is_none_or(|ids| ids.contains(uid));
    let mut items = connector.query(object_type);
    let mut batch = Vec::with_capacity(BATCH);
    // Each batch's read is timed, not the wait for a worker to take it.
    let mut reading = Instant::now();
    // A cancel does not wait for the connector's next object.
    let cancelled = recon.cancel_signal.notified();
    tokio::pin!(cancelled);
    cancelled.as_mut().enable();
    loop {
        if recon.is_cancelled() {
            return Ok(());
        }
        let item = tokio::select! {
            item = items.next() => item,
            () = &mut cancelled => return Ok(()),
        };
        let Some(item) = item else { break };
        match item? {
            SourceItem::Object(object) if wanted(&object.uid) => {
                batch.push(object);
                if batch.len() == BATCH {
                    recon.record_time(ReconTask::SourceQuery, reading.elapsed());
                    let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
                    if batches.send(full).await.is_err() {
                        return Ok(());
                    }
                    reading = Instant::now();
                }
            }
            SourceItem::Object(_) => {}
            SourceItem::Bad(bad) => {
                if !bad.uid.as_deref().is_none_or(wanted) {
                    continue;
                }
                match &bad.uid {
                    Some(uid) => recon.mark_sources([uid]),
                    None => {
                        recon.unread_sources.fetch_add(1, Ordering::Relaxed);
                    }
                }
                recon.update(|r| r.source.processed += 1);
                recon.fail(ReconFailureRecord {
                    source_id: bad.uid,
                    line: Some(bad.line),
                    reason: bad.reason,
                    ..ReconFailureRecord::default()
                });
            }
        }
    }
    // The last batch, or the read of the source's end after a full one.
    recon.record_time(ReconTask::SourceQuery, reading.elapsed());
    if !batch.is_empty() {
        let _ = batches.send(batch).await;
    }
    Ok(())
}

/// Fills in the run's totals while it goes: the source's size (when the
/// connector can count), the target's and the links'.
async fn count_existing(
    recon: Arc<Recon>,
    connector: Arc<dyn Connector>,
    object_type: String,
    only: Option<usize>,
) {
    let links = recon.store.count_links(&recon.mapping.name).await;
    let targets = recon.store.count_of_type(&recon.target_type).await;
    recon.update(|r| {
        r.links.existing = links.map_or(0, |n| i64::try_from(n).unwrap_or(i64::MAX));
        r.target.existing = targets.map_or(0, |n| i64::try_from(n).unwrap_or(i64::MAX));
        r.target.total = r.target.existing;
        r.links.total = r.links.existing;
    });
    let sources = match only {
        Some(n) => Some(n as u64),
        None => connector.count(&object_type).await.ok().flatten(),
    };
    if let Some(n) = sources {
        let n = i64::try_from(n).unwrap_or(i64::MAX);
        recon.update(|r| {
            r.source.existing = n;
            r.source.total = n;
        });
    }
}

/// Starts `work` with a fresh [`Worker`] on a thread of its own (at once,
/// not when awaited): the script engine is single-threaded, so a worker and
/// its engine stay on one thread, driving store calls with the runtime's handle.
fn on_worker_thread<F, Fut>(
    recon: Arc<Recon>,
    work: F,
) -> impl std::future::Future<Output = Result<(), ReconError>>
where
    F: FnOnce(Worker) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<(), ReconError>>,
{
    let handle = tokio::runtime::Handle::current();
    let thread = tokio::task::spawn_blocking(move || {
        let worker = Worker::new(recon)?;
        handle.block_on(work(worker))
    });
    async move {
        thread
            .await
            .map_err(|e| ReconError::Internal(format!("a reconciliation worker stopped: {e}")))?
    }
}
