//! Running the schedules: one task per schedule sleeps until its next fire
//! time (computed by croner in the schedule's own time zone), then fires:
//!
//! 1. paused → nothing; outside `startTime`/`endTime` → nothing;
//! 2. claims the tick in the store: on a store shared by several nodes, the
//!    one whose claim lands runs it, the others skip it silently;
//! 3. `concurrentExecution: false` and the last run still going (here or on
//!    another node: the run lease) → an execution recorded SKIPPED_CONCURRENT;
//! 4. otherwise the invoker runs on its own task (the next tick is not held
//!    up), its execution recorded RUNNING, then SUCCESS or FAILED.
//!
//! At start, a tick missed while idmd was down (the next tick after the
//! recorded last fire is already past) fires once under `fireAndProceed`,
//! and is recorded SKIPPED_MISFIRE under `doNothing`.
//!
//! Not on tokio-cron-scheduler: its jobs take a time zone as the fixed
//! offset of the moment they are made, so a 02:00 Europe/Paris job would
//! fire at 01:00 or 03:00 after a daylight-saving change. croner, which it
//! runs on, computes zoned fire times correctly; this loop uses it directly.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use tokio::sync::watch;

use super::schedule::{Invoke, MisfirePolicy, Schedule};
use crate::health::{self, Health};
use crate::managed::{ManagedError, ManagedObjects, ObjectView, Query};
use crate::script::{HostCall, Limits, ScriptEngine};
use crate::store::{ConfigDocument, ExecutionRecord, Store, StoreError, now_timestamp};
use crate::supervise::{self, Task};
use crate::sync::recon::Reconciler;

/// How long a run lease lasts before it must be renewed.
const LEASE: Duration = Duration::from_secs(60);
/// A RUNNING execution's heartbeat (the store's clock): renewed this often
/// by its node, and expired (any node then marks it FAILED) this long
/// after the last renewal.
const HEARTBEAT_RENEW: Duration = Duration::from_secs(2);
const HEARTBEAT_TTL: Duration = Duration::from_secs(10);
/// A scheduled script may take longer than a transform (1 s): it is a job.
const SCRIPT_LIMITS: Limits = Limits {
    time: Duration::from_secs(300),
    memory_bytes: 64 * 1024 * 1024,
};

#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("schedules/{name}: {field}: {message}")]
    Invalid {
        name: String,
        field: String,
        message: String,
    },
    #[error("schedules/{0} not found")]
    NotFound(String),
}

/// A schedule as the API shows it: its document and its state.
#[derive(Debug, Clone)]
pub struct ScheduleView {
    pub name: String,
    /// Wren's JSON, as stored.
    pub body: Map<String, Value>,
    pub paused: bool,
    pub next_fire: Option<String>,
    pub last_fire: Option<String>,
}

/// The running scheduler; cheap to clone.
#[derive(Clone)]
pub struct Scheduler {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    /// What scripts read through their `idm` object.
    objects: ManagedObjects,
    reconciler: Reconciler,
    conf_dir: PathBuf,
    /// Who claims ticks and leases: unique per process.
    node: String,
    /// Each schedule's loop, under its supervisor (`idm.scheduler`).
    tasks: Mutex<HashMap<String, tokio::task::JoinHandle<()>>>,
    /// The schedule documents of the last reload, as stored.
    loaded: Mutex<Vec<ConfigDocument>>,
    /// Schedules with a run going on this node (the lease covers other nodes).
    running: Mutex<HashSet<String>>,
    /// Runs in flight on this node, by execution id: cancelled and awaited
    /// at shutdown.
    runs: Mutex<HashMap<String, InFlight>>,
    stop: watch::Sender<bool>,
    health: Health,
}

/// A run in flight.
struct InFlight {
    /// Set at shutdown: the run stops (a script is interrupted).
    cancel: Arc<AtomicBool>,
    /// Its execution as it started, to record it FAILED if it does not end in time.
    execution: ExecutionRecord,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// What an execution cut short by a stop says.
pub const STOPPED: &str = "idmd stopped during the run";

/// The supervised task of a schedule's loop.
fn task_name(schedule: &str) -> String {
    format!("schedule {schedule}")
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The store's timestamp form (fixed-width RFC 3339, microseconds, UTC), which sorts as text.
fn stamp(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

impl Scheduler {
    /// Starts every enabled schedule of the store's conf documents.
    pub async fn start(
        store: Store,
        objects: ManagedObjects,
        reconciler: Reconciler,
        conf_dir: PathBuf,
        node: String,
        health: &Health,
    ) -> Result<Self, SchedulerError> {
        let (stop, _) = watch::channel(false);
        let scheduler = Scheduler {
            inner: Arc::new(Inner {
                store,
                objects,
                reconciler,
                conf_dir,
                node,
                tasks: Mutex::new(HashMap::new()),
                loaded: Mutex::new(Vec::new()),
                running: Mutex::new(HashSet::new()),
                runs: Mutex::new(HashMap::new()),
                stop,
                health: health.clone(),
            }),
        };
        scheduler.reload().await?;
        Ok(scheduler)
    }

    /// Whether the schedule's loop runs on this node.
    #[cfg(test)]
    pub(crate) fn is_running(&self, name: &str) -> bool {
        lock(&self.inner.tasks).contains_key(name)
    }

    /// The id of the schedule's loop (a reload starts a new one).
    #[cfg(test)]
    pub(crate) fn loop_id(&self, name: &str) -> Option<tokio::task::Id> {
        lock(&self.inner.tasks).get(name).map(|t| t.id())
    }

    /// Rebuilds the running set from the stored schedule documents. Each
    /// schedule's loop runs under a supervisor: a loop that dies is logged
    /// and restarted, `idm.scheduler` NOT_SERVING meanwhile.
    pub async fn reload(&self) -> Result<(), SchedulerError> {
        let documents = self.inner.store.list_config("schedule").await?;
        self.start_documents(documents).await;
        Ok(())
    }

    /// [`Scheduler::reload`] if the stored schedule documents are not the
    /// ones running (a reload restarts every schedule's loop, so a conf
    /// change elsewhere leaves them be); returns whether it reloaded.
    pub async fn reload_if_changed(&self) -> Result<bool, SchedulerError> {
        let documents = self.inner.store.list_config("schedule").await?;
        if *lock(&self.inner.loaded) == documents {
            return Ok(false);
        }
        self.start_documents(documents).await;
        Ok(true)
    }

    async fn start_documents(&self, documents: Vec<ConfigDocument>) {
        let gone: Vec<String> = {
            let mut tasks = lock(&self.inner.tasks);
            *lock(&self.inner.loaded) = documents.clone();
            self.start_loops(&mut tasks, documents)
        };
        // The loops replaced are not down: they are gone on purpose.
        for name in gone {
            self.inner
                .health
                .forget(health::SCHEDULER, &task_name(&name))
                .await;
        }
    }

    /// Replaces the loops in `tasks`; returns the names of those stopped.
    fn start_loops(
        &self,
        tasks: &mut HashMap<String, tokio::task::JoinHandle<()>>,
        documents: Vec<ConfigDocument>,
    ) -> Vec<String> {
        let mut gone = Vec::new();
        for (name, task) in tasks.drain() {
            task.abort();
            gone.push(name);
        }
        if *self.inner.stop.borrow() {
            return gone;
        }
        for document in documents {
            let schedule = match self.parse(&document.name, &document.body) {
                Ok(schedule) if schedule.enabled => schedule,
                Ok(_) => continue,
                Err(e) => {
                    tracing::warn!(schedule = %document.name, error = %e, "schedule not started");
                    continue;
                }
            };
            let this = self.clone();
            let name = document.name.clone();
            let schedule = Arc::new(schedule);
            let task = supervise::spawn(
                Task::new(task_name(&name), Some(health::SCHEDULER)),
                &self.inner.health,
                self.inner.stop.subscribe(),
                move || {
                    let (this, name, schedule) =
                        (this.clone(), name.clone(), Arc::clone(&schedule));
                    let mut stop = this.inner.stop.subscribe();
                    let span = tracing::info_span!("schedule", name = %name);
                    tracing::Instrument::instrument(
                        async move {
                            this.drive(name, schedule).await;
                            // A schedule past its endTime has nothing left to
                            // do, which is not a death.
                            let _ = stop.wait_for(|stop| *stop).await;
                        },
                        span,
                    )
                },
            );
            tasks.insert(document.name, task);
        }
        gone
    }

    fn parse(&self, name: &str, body: &Map<String, Value>) -> Result<Schedule, SchedulerError> {
        Schedule::from_document(name, body, &self.inner.conf_dir).map_err(|e| {
            SchedulerError::Invalid {
                name: name.to_string(),
                field: e.field,
                message: e.message,
            }
        })
    }

    async fn view(&self, document: ConfigDocument) -> Result<ScheduleView, SchedulerError> {
        let state = self.inner.store.schedule_state(&document.name).await?;
        let next_fire = self
            .parse(&document.name, &document.body)
            .ok()
            .filter(|s| s.enabled && !state.paused)
            .and_then(|s| s.next_fire_after(Utc::now()))
            .map(stamp);
        Ok(ScheduleView {
            name: document.name,
            body: document.body,
            paused: state.paused,
            next_fire,
            last_fire: state.last_fire,
        })
    }

    pub async fn list(&self) -> Result<Vec<ScheduleView>, SchedulerError> {
        let mut views = Vec::new();
        for document in self.inner.store.list_config("schedule").await? {
            views.push(self.view(document).await?);
        }
        Ok(views)
    }

    pub async fn get(&self, name: &str) -> Result<ScheduleView, SchedulerError> {
        let document = self
            .inner
            .store
            .get_config("schedule", name)
            .await?
            .ok_or_else(|| SchedulerError::NotFound(name.to_string()))?;
        self.view(document).await
    }

    /// Creates or replaces a schedule (checked whole first) and restarts the set.
    pub async fn put(
        &self,
        name: &str,
        body: Map<String, Value>,
    ) -> Result<ScheduleView, SchedulerError> {
        if name.is_empty() || name.contains('/') || name.chars().any(char::is_control) {
            return Err(SchedulerError::Invalid {
                name: name.to_string(),
                field: "name".into(),
                message: "1 or more characters, without '/'".into(),
            });
        }
        self.parse(name, &body)?;
        self.inner
            .store
            .put_config(&ConfigDocument {
                kind: "schedule".into(),
                name: name.to_string(),
                body,
                source: "api".into(),
            })
            .await?;
        self.reload().await?;
        self.get(name).await
    }

    /// Deletes a schedule and its state (its history stays); `false` if there was none.
    pub async fn delete(&self, name: &str) -> Result<bool, SchedulerError> {
        let existed = self.inner.store.delete_config("schedule", name).await?;
        self.inner.store.forget_schedule(name).await?;
        self.reload().await?;
        Ok(existed)
    }

    pub async fn set_paused(
        &self,
        name: &str,
        paused: bool,
    ) -> Result<ScheduleView, SchedulerError> {
        self.get(name).await?;
        self.inner.store.set_paused(name, paused).await?;
        self.get(name).await
    }

    /// Fires a schedule now, once, outside its cron (paused or not); returns
    /// its execution as it starts (or as skipped).
    pub async fn run_now(&self, name: &str) -> Result<ExecutionRecord, SchedulerError> {
        let view = self.get(name).await?;
        let schedule = Arc::new(self.parse(name, &view.body)?);
        let tick = Utc::now();
        self.fire(name, &schedule, tick, true)
            .await?
            .ok_or_else(|| SchedulerError::NotFound(name.to_string()))
    }

    pub async fn executions(
        &self,
        name: &str,
        running: bool,
        limit: usize,
        offset: usize,
    ) -> Result<Vec<ExecutionRecord>, SchedulerError> {
        Ok(self
            .inner
            .store
            .list_executions_where(name, running, limit, offset)
            .await?)
    }

    /// Stops firing; runs in progress go on (see [`Scheduler::finish_runs`]).
    pub fn shutdown(&self) {
        let _ = self.inner.stop.send(true);
        for (_, task) in lock(&self.inner.tasks).drain() {
            task.abort();
        }
    }

    /// Cancels the runs in flight on this node (a script is interrupted; a
    /// reconciliation is cancelled by the reconciler's own shutdown) and
    /// waits for them until `deadline`; an execution still RUNNING then is
    /// saved FAILED ([`STOPPED`]).
    pub async fn finish_runs(&self, deadline: tokio::time::Instant) {
        let tasks: Vec<tokio::task::JoinHandle<()>> = {
            let mut runs = lock(&self.inner.runs);
            for run in runs.values() {
                run.cancel.store(true, Ordering::Relaxed);
            }
            runs.values_mut()
                .filter_map(|run| run.task.take())
                .collect()
        };
        if tasks.is_empty() {
            return;
        }
        tracing::info!(runs = tasks.len(), "cancelling scheduled runs in flight");
        let all = futures::future::join_all(tasks);
        if tokio::time::timeout_at(deadline, all).await.is_err() {
            tracing::warn!("scheduled runs still going at the end of the shutdown grace");
        }
        let unfinished: Vec<ExecutionRecord> = lock(&self.inner.runs)
            .drain()
            .map(|(_, run)| run.execution)
            .collect();
        for mut execution in unfinished {
            execution.outcome = "FAILED".into();
            execution.end = Some(now_timestamp());
            execution.message = format!("{STOPPED}: it did not stop within the shutdown grace");
            if let Err(e) = self.inner.store.save_execution(&execution).await {
                tracing::error!(error = %e, schedule = %execution.schedule, "recording a run cut short failed");
            }
        }
    }

    async fn drive(self, name: String, schedule: Arc<Schedule>) {
        #[cfg(test)]
        #[allow(clippy::panic)]
        if name == faults::PANICS_ONCE && faults::PANIC_IN_LOOP.swap(false, Ordering::SeqCst) {
            panic!("fault injected: a schedule's loop dies");
        }
        let mut stop = self.inner.stop.subscribe();
        if let Err(e) = self.catch_up(&name, &schedule).await {
            tracing::warn!(error = %e, "checking for missed ticks failed");
        }
        let mut after = Utc::now();
        while let Some(tick) = schedule.next_fire_after(after) {
            let wait = (tick - Utc::now()).to_std().unwrap_or(Duration::ZERO);
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = stop.changed() => return,
            }
            if let Err(e) = self.fire(&name, &schedule, tick, false).await {
                tracing::warn!(error = %e, tick = %tick, "a tick could not be fired");
            }
            after = tick;
        }
        tracing::info!("schedule has no fire time left (past its endTime)");
    }

    /// A tick missed while idmd was down fires now (fireAndProceed) or is
    /// recorded as skipped (doNothing).
    async fn catch_up(&self, name: &str, schedule: &Arc<Schedule>) -> Result<(), SchedulerError> {
        let state = self.inner.store.schedule_state(name).await?;
        let Some(last) = state
            .last_fire
            .as_deref()
            .and_then(|t| t.parse::<DateTime<Utc>>().ok())
        else {
            return Ok(());
        };
        let now = Utc::now();
        let Some(missed) = schedule.next_fire_after(last).filter(|t| *t < now) else {
            return Ok(());
        };
        // The latest missed tick stands for them all.
        let mut latest = missed;
        while let Some(t) = schedule.next_fire_after(latest).filter(|t| *t < now) {
            latest = t;
        }
        match schedule.misfire_policy {
            MisfirePolicy::FireAndProceed => {
                tracing::info!(tick = %latest, "firing a tick missed while idmd was down");
                self.fire(name, schedule, latest, false).await.map(|_| ())
            }
            MisfirePolicy::DoNothing => {
                if self
                    .inner
                    .store
                    .claim_tick(name, &stamp(latest), &self.inner.node)
                    .await?
                {
                    self.record(
                        name,
                        latest,
                        "SKIPPED_MISFIRE",
                        "missed while idmd was down (misfirePolicy doNothing)",
                    )
                    .await?;
                }
                Ok(())
            }
        }
    }

    /// Fires one tick (see the module docs); `manual` for run-now, which
    /// claims no tick.
    async fn fire(
        &self,
        name: &str,
        schedule: &Arc<Schedule>,
        tick: DateTime<Utc>,
        manual: bool,
    ) -> Result<Option<ExecutionRecord>, SchedulerError> {
        let store = &self.inner.store;
        if *self.inner.stop.borrow() {
            return Ok(None);
        }
        if !manual {
            if store.schedule_state(name).await?.paused {
                return Ok(None);
            }
            if !store
                .claim_tick(name, &stamp(tick), &self.inner.node)
                .await?
            {
                return Ok(None);
            }
        }
        if !schedule.concurrent_execution {
            let until = Utc::now() + chrono::Duration::from_std(LEASE).unwrap_or_default();
            let free_here = lock(&self.inner.running).insert(name.to_string());
            let free = free_here
                && store
                    .take_lease(name, &self.inner.node, &now_timestamp(), &stamp(until))
                    .await
                    .inspect_err(|_| {
                        lock(&self.inner.running).remove(name);
                    })?;
            if !free {
                if free_here {
                    lock(&self.inner.running).remove(name);
                }
                let skipped = self
                    .record(
                        name,
                        tick,
                        "SKIPPED_CONCURRENT",
                        "the previous run is still going (concurrentExecution is false)",
                    )
                    .await?;
                return Ok(Some(skipped));
            }
        }
        let running = match self.record(name, tick, "RUNNING", "").await {
            Ok(running) => running,
            Err(e) => {
                if !schedule.concurrent_execution {
                    lock(&self.inner.running).remove(name);
                    let _ = store.release_lease(name, &self.inner.node).await;
                }
                return Err(e);
            }
        };
        let this = self.clone();
        let (schedule, started) = (Arc::clone(schedule), running.clone());
        let name = name.to_string();
        let cancel = Arc::new(AtomicBool::new(false));
        let eid = running.eid.clone();
        lock(&self.inner.runs).insert(
            eid.clone(),
            InFlight {
                cancel: Arc::clone(&cancel),
                execution: running.clone(),
                task: None,
            },
        );
        // Stopped since the check above: the run is cancelled from the start.
        if *self.inner.stop.borrow() {
            cancel.store(true, Ordering::Relaxed);
        }
        let task = tokio::spawn(async move {
            let mut execution = started;
            let keep_lease = (!schedule.concurrent_execution).then(|| this.keep_lease(&name));
            let heartbeat = this.keep_heartbeat(&execution.eid);
            let outcome = this
                .invoke(&name, &schedule, &mut execution, &cancel)
                .await
                .map_err(|message| {
                    if cancel.load(Ordering::Relaxed) {
                        format!("{STOPPED}: {message}")
                    } else {
                        message
                    }
                });
            heartbeat.abort();
            if let Some(keeper) = keep_lease {
                keeper.abort();
                if let Err(e) = this
                    .inner
                    .store
                    .release_lease(&name, &this.inner.node)
                    .await
                {
                    tracing::warn!(error = %e, "releasing the run lease failed; it expires by itself");
                }
                lock(&this.inner.running).remove(&name);
            }
            execution.end = Some(now_timestamp());
            match outcome {
                Ok(message) => {
                    execution.outcome = "SUCCESS".into();
                    execution.message = message;
                }
                Err(message) => {
                    tracing::warn!(error = %message, "scheduled run failed");
                    execution.outcome = "FAILED".into();
                    execution.message = message;
                }
            }
            crate::metrics::schedule_fired(&name, &execution.outcome);
            if let Err(e) = this.inner.store.save_execution(&execution).await {
                tracing::error!(error = %e, "recording the end of a scheduled run failed");
            }
            lock(&this.inner.runs).remove(&execution.eid);
        });
        if let Some(run) = lock(&self.inner.runs).get_mut(&eid) {
            run.task = Some(task);
        }
        Ok(Some(running))
    }

    /// Renews an execution's heartbeat while it runs.
    fn keep_heartbeat(&self, eid: &str) -> tokio::task::JoinHandle<()> {
        let (this, eid) = (self.clone(), eid.to_string());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(HEARTBEAT_RENEW).await;
                match this
                    .inner
                    .store
                    .beat_execution(&eid, &this.inner.node, HEARTBEAT_TTL)
                    .await
                {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::warn!(
                            eid = %eid,
                            "the execution is no longer RUNNING here (ended, or failed by another node after its heartbeat expired)"
                        );
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(eid = %eid, error = %e, "renewing the execution's heartbeat failed")
                    }
                }
            }
        })
    }

    /// Renews the run lease while a run goes on.
    fn keep_lease(&self, name: &str) -> tokio::task::JoinHandle<()> {
        let (this, name) = (self.clone(), name.to_string());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(LEASE / 3).await;
                let until = Utc::now() + chrono::Duration::from_std(LEASE).unwrap_or_default();
                let renewed = this
                    .inner
                    .store
                    .take_lease(&name, &this.inner.node, &now_timestamp(), &stamp(until))
                    .await;
                if !matches!(renewed, Ok(true)) {
                    tracing::warn!(schedule = %name, "the run lease could not be renewed");
                }
            }
        })
    }

    async fn record(
        &self,
        name: &str,
        tick: DateTime<Utc>,
        outcome: &str,
        message: &str,
    ) -> Result<ExecutionRecord, SchedulerError> {
        let now = now_timestamp();
        let execution = ExecutionRecord {
            eid: uuid::Uuid::now_v7().to_string(),
            schedule: name.to_string(),
            fire_time: stamp(tick),
            end: (outcome != "RUNNING").then(|| now.clone()),
            start: now,
            outcome: outcome.to_string(),
            message: message.to_string(),
            recon_run: None,
            node: self.inner.node.clone(),
        };
        if outcome == "RUNNING" {
            self.inner
                .store
                .start_execution(&execution, HEARTBEAT_TTL)
                .await?;
        } else {
            self.inner.store.save_execution(&execution).await?;
            crate::metrics::schedule_fired(name, outcome);
        }
        Ok(execution)
    }

    /// Runs what the schedule invokes; `Ok` carries a message for the record.
    async fn invoke(
        &self,
        name: &str,
        schedule: &Schedule,
        execution: &mut ExecutionRecord,
        cancel: &Arc<AtomicBool>,
    ) -> Result<String, String> {
        match &schedule.invoke {
            Invoke::Sync { mapping } => self.reconcile(name, mapping, None, execution).await,
            Invoke::Script(script) => {
                let script = script.clone();
                let objects = self.inner.objects.clone();
                let handle = tokio::runtime::Handle::current();
                let cancel = Arc::clone(cancel);
                tokio::task::spawn_blocking(move || {
                    let mut engine = ScriptEngine::new(SCRIPT_LIMITS).map_err(|e| e.to_string())?;
                    engine.set_cancel(cancel);
                    let idm: HostCall =
                        Rc::new(move |method, args| idm_call(&handle, &objects, method, &args));
                    engine
                        .install_host("idm", &["read", "query"], idm)
                        .map_err(|e| e.to_string())?;
                    let id = engine.compile(&script).map_err(|e| e.to_string())?;
                    engine
                        .eval(id, &[])
                        .map(|value| {
                            if value.is_null() {
                                String::new()
                            } else {
                                value.to_string()
                            }
                        })
                        .map_err(|e| e.to_string())
                })
                .await
                .map_err(|e| format!("the script's thread stopped: {e}"))?
            }
            Invoke::LiveSync { mapping } => self.live_sync(name, mapping, execution).await,
        }
    }

    /// A reconciliation of the mapping (only these source ids, if given),
    /// linked from the execution, to its end.
    async fn reconcile(
        &self,
        name: &str,
        mapping: &str,
        only: Option<Vec<String>>,
        execution: &mut ExecutionRecord,
    ) -> Result<String, String> {
        let reconciler = &self.inner.reconciler;
        let run = reconciler
            .start(mapping, only, &format!("schedules/{name}"))
            .await
            .map_err(|e| e.to_string())?;
        execution.recon_run = Some(format!("recon/{}", run.rid));
        if let Err(e) = self.inner.store.save_execution(execution).await {
            tracing::warn!(error = %e, "recording the recon run of an execution failed");
        }
        let done = reconciler.wait(&run.rid).await.map_err(|e| e.to_string())?;
        match done.state.as_str() {
            "SUCCESS" => Ok(format!(
                "recon/{} {}: {} processed",
                done.rid, done.state, done.source.processed
            )),
            state => Err(format!(
                "recon/{} ended {state}{}",
                done.rid,
                done.error.map(|e| format!(": {e}")).unwrap_or_default()
            )),
        }
    }

    /// Reconciles only what changed in the mapping's source: nothing when a
    /// file's size and time are unchanged; for a directory, the entries
    /// modified since the last run (reconById).
    async fn live_sync(
        &self,
        name: &str,
        mapping: &str,
        execution: &mut ExecutionRecord,
    ) -> Result<String, String> {
        let store = &self.inner.store;
        let text = |e: StoreError| e.to_string();
        let document = store
            .get_config("mapping", mapping)
            .await
            .map_err(text)?
            .ok_or_else(|| format!("no mapping named {mapping}"))?;
        let source = document
            .body
            .get("source")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let ["system", connector_name, object_type] = source.split('/').collect::<Vec<_>>()[..]
        else {
            return Err(format!(
                "liveSync reads a connector; {mapping}'s source is {source}"
            ));
        };
        let connector_document = store
            .get_config("connector", connector_name)
            .await
            .map_err(text)?
            .ok_or_else(|| format!("{mapping}: no connector named {connector_name}"))?;
        let connector = crate::connector::build(
            connector_name,
            &connector_document.body,
            &self.inner.conf_dir,
            self.inner.objects.secrets(),
        )
        .map_err(|e| e.to_string())?;
        let mark = store.schedule_state(name).await.map_err(text)?.live_mark;
        let started = now_timestamp();
        if let Some(token) = connector
            .change_token(object_type)
            .await
            .map_err(|e| e.to_string())?
        {
            if mark.as_deref() == Some(token.as_str()) {
                return Ok(format!("{source} has not changed: no reconciliation"));
            }
            let message = self.reconcile(name, mapping, None, execution).await?;
            store.set_live_mark(name, &token).await.map_err(text)?;
            return Ok(message);
        }
        let Some(since) = mark else {
            // First run: everything, then changes from now on.
            let message = self.reconcile(name, mapping, None, execution).await?;
            store.set_live_mark(name, &started).await.map_err(text)?;
            return Ok(message);
        };
        let changed = connector
            .changed_since(object_type, &since)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| {
                format!("connector {connector_name} cannot tell what changed; schedule a reconcile instead")
            })?;
        let message = if changed.is_empty() {
            format!("no change in {source} since {since}")
        } else {
            self.reconcile(name, mapping, Some(changed), execution)
                .await?
        };
        store.set_live_mark(name, &started).await.map_err(text)?;
        Ok(message)
    }
}

/// Faults tests inject into the scheduler.
#[cfg(test)]
pub(crate) mod faults {
    use std::sync::atomic::AtomicBool;

    /// The loop of the schedule named [`PANICS_ONCE`] panics when it next
    /// starts (only that name: tests in one process do not disturb each other).
    pub static PANIC_IN_LOOP: AtomicBool = AtomicBool::new(false);
    pub const PANICS_ONCE: &str = "fault-panics-once";
}

/// A scheduled script's `idm` object: `idm.read("managed/user/123")` (null
/// if there is none) and `idm.query("managed/user", 'sn eq "Doe"')` (up to
/// 1,000 objects). Read only; runs on the script's blocking thread.
fn idm_call(
    handle: &tokio::runtime::Handle,
    objects: &ManagedObjects,
    method: &str,
    args: &[Value],
) -> Result<Value, String> {
    let text = |index: usize| args.get(index).and_then(Value::as_str);
    match method {
        "read" => {
            let reference = text(0).ok_or("idm.read(\"managed/<type>/<id>\")")?;
            let (type_name, id) = crate::store::split_ref(reference)
                .ok_or_else(|| format!("idm.read: \"{reference}\" is not managed/<type>/<id>"))?;
            match handle.block_on(objects.get(type_name, id, &[])) {
                Ok(view) => Ok(view_json(view)),
                Err(ManagedError::NotFound(_)) => Ok(Value::Null),
                Err(e) => Err(format!("idm.read: {e}")),
            }
        }
        "query" => {
            let collection = text(0).ok_or("idm.query(\"managed/<type>\", filter)")?;
            let type_name = collection
                .strip_prefix("managed/")
                .ok_or_else(|| format!("idm.query: \"{collection}\" is not managed/<type>"))?;
            let query = Query {
                filter: text(1).unwrap_or_default().to_string(),
                page_size: 1000,
                ..Query::default()
            };
            let page = handle
                .block_on(objects.query(type_name, &query))
                .map_err(|e| format!("idm.query: {e}"))?;
            Ok(Value::Array(
                page.objects.into_iter().map(view_json).collect(),
            ))
        }
        other => Err(format!("idm.{other} is not a function")),
    }
}

fn view_json(view: ObjectView) -> Value {
    let mut object = view.attributes;
    object.insert("_id".into(), Value::String(view.id));
    object.insert("_rev".into(), Value::String(view.rev.to_string()));
    Value::Object(object)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::managed::{ManagedObjects, ManagedSchema};
    use crate::secrets::SecretBox;
    use crate::store::ConfigDocument;
    use serde_json::{Value, json};

    async fn store_and_reconciler() -> (Store, Reconciler) {
        let (store, _, reconciler) = store_objects_reconciler().await;
        (store, reconciler)
    }

    async fn store_objects_reconciler() -> (Store, ManagedObjects, Reconciler) {
        let store = Store::open("mem://").await.unwrap();
        let secrets = SecretBox::ephemeral();
        let objects = ManagedObjects::new(
            Arc::new(ManagedSchema::builtin().unwrap()),
            store.clone(),
            Arc::new(secrets),
        );
        let reconciler = Reconciler::new(store.clone(), objects.clone(), PathBuf::from("."));
        (store, objects, reconciler)
    }

    async fn put(store: &Store, name: &str, body: Value) {
        store
            .put_config(&ConfigDocument {
                kind: "schedule".into(),
                name: name.into(),
                body: body.as_object().cloned().unwrap(),
                source: "test".into(),
            })
            .await
            .unwrap();
    }

    fn script(schedule: &str, code: &str, concurrent: bool) -> Value {
        json!({"type": "cron", "schedule": schedule, "concurrentExecution": concurrent,
               "invokeService": "script",
               "invokeContext": {"script": {"type": "text/javascript", "source": code}}})
    }

    async fn start(store: &Store, reconciler: &Reconciler, node: &str) -> Scheduler {
        Scheduler::start(
            store.clone(),
            reconciler.objects().clone(),
            reconciler.clone(),
            PathBuf::from("."),
            node.into(),
            &Health::new().await.0,
        )
        .await
        .unwrap()
    }

    async fn outcomes(store: &Store, name: &str) -> Vec<(String, String)> {
        let mut list: Vec<(String, String)> = store
            .list_executions(name, 1000, 0)
            .await
            .unwrap()
            .into_iter()
            .map(|e| (e.fire_time, e.outcome))
            .collect();
        list.sort();
        list
    }

    #[tokio::test]
    async fn a_schedule_loop_that_panics_is_restarted_and_fires_again() {
        let (store, reconciler) = store_and_reconciler().await;
        let tick = faults::PANICS_ONCE;
        put(&store, tick, script("* * * * * ?", "'after'", true)).await;
        let (health, _) = Health::new().await;
        let mut changes = health.watch();
        faults::PANIC_IN_LOOP.store(true, Ordering::SeqCst);
        let scheduler = Scheduler::start(
            store.clone(),
            reconciler.objects().clone(),
            reconciler.clone(),
            PathBuf::from("."),
            "a".into(),
            &health,
        )
        .await
        .unwrap();
        // Down for the backoff's first second, then running again.
        changes.wait_for(|c| !c[health::SCHEDULER]).await.unwrap();
        assert_eq!(
            health.check(health::SCHEDULER).await.unwrap(),
            tonic_health::ServingStatus::NotServing
        );
        assert!(!health.is_up(""));
        changes.wait_for(|c| c[health::SCHEDULER]).await.unwrap();
        loop {
            let seen = outcomes(&store, tick).await;
            if seen.iter().any(|(_, o)| o == "SUCCESS") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        scheduler.shutdown();
    }

    #[tokio::test]
    async fn a_schedule_every_second_fires_every_second() {
        let (store, reconciler) = store_and_reconciler().await;
        put(
            &store,
            "tick",
            script(
                "* * * * * ?",
                "console.log('tick ' + new Date().toISOString()); 42",
                true,
            ),
        )
        .await;
        let scheduler = start(&store, &reconciler, "a").await;
        tokio::time::sleep(Duration::from_millis(4000)).await;
        scheduler.shutdown();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let seen = outcomes(&store, "tick").await;
        let done: Vec<&(String, String)> = seen.iter().filter(|(_, o)| o == "SUCCESS").collect();
        assert!(done.len() >= 3, "{seen:?}");
        let result = store.list_executions("tick", 1, 0).await.unwrap();
        assert_eq!(result[0].message, "42");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn two_schedulers_on_one_store_fire_each_tick_once() {
        let (store, reconciler) = store_and_reconciler().await;
        put(&store, "tick", script("* * * * * ?", "1", true)).await;
        let a = start(&store, &reconciler, "a").await;
        let b = start(&store, &reconciler, "b").await;
        tokio::time::sleep(Duration::from_millis(3500)).await;
        a.shutdown();
        b.shutdown();
        let executions = store.list_executions("tick", 1000, 0).await.unwrap();
        let mut ticks: Vec<&str> = executions.iter().map(|e| e.fire_time.as_str()).collect();
        let all = ticks.len();
        ticks.sort_unstable();
        ticks.dedup();
        assert!(all >= 2, "{executions:?}");
        assert_eq!(ticks.len(), all, "a tick ran twice: {executions:?}");
    }

    #[tokio::test]
    async fn a_slow_run_is_not_overlapped_and_the_skip_is_recorded() {
        let (store, reconciler) = store_and_reconciler().await;
        let busy = "const end = Date.now() + 2500; while (Date.now() < end) {} 'slow'";
        put(&store, "slow", script("* * * * * ?", busy, false)).await;
        let scheduler = start(&store, &reconciler, "a").await;
        tokio::time::sleep(Duration::from_millis(3500)).await;
        scheduler.shutdown();
        let seen = outcomes(&store, "slow").await;
        assert!(
            seen.iter().any(|(_, o)| o == "SKIPPED_CONCURRENT"),
            "{seen:?}"
        );
        // Runs never overlap: each starts after the one before it ended.
        let mut runs: Vec<ExecutionRecord> = store
            .list_executions("slow", 100, 0)
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.outcome == "RUNNING" || e.outcome == "SUCCESS")
            .collect();
        runs.sort_by(|a, b| a.start.cmp(&b.start));
        for pair in runs.windows(2) {
            let ended = pair[0].end.as_deref().unwrap_or("9999");
            assert!(pair[1].start.as_str() >= ended, "overlap: {runs:?}");
        }
    }

    #[tokio::test]
    async fn a_skipped_fire_is_counted_with_its_outcome() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let scraped = recorder.handle();
        // Thread-local; the test's current-thread runtime fires on this thread.
        let _recording = metrics::set_default_local_recorder(&recorder);
        let (store, reconciler) = store_and_reconciler().await;
        // Yearly: the loop does not fire during the test; run-now does.
        put(&store, "busy", script("0 0 0 1 1 ?", "1", false)).await;
        let scheduler = start(&store, &reconciler, "a").await;
        // Node b's run of it is going: b holds the run lease.
        let until = stamp(Utc::now() + chrono::Duration::minutes(1));
        assert!(
            store
                .take_lease("busy", "b", &now_timestamp(), &until)
                .await
                .unwrap()
        );
        let skipped = scheduler.run_now("busy").await.unwrap();
        scheduler.shutdown();
        assert_eq!(skipped.outcome, "SKIPPED_CONCURRENT");
        let text = scraped.render();
        let line = r#"idm_schedule_fires_total{schedule="busy",outcome="SKIPPED_CONCURRENT"} 1"#;
        assert!(text.contains(line), "{line} not in\n{text}");
    }

    #[tokio::test]
    async fn pause_stops_fires_and_resume_restarts_them() {
        let (store, reconciler) = store_and_reconciler().await;
        put(&store, "tick", script("* * * * * ?", "1", true)).await;
        store.set_paused("tick", true).await.unwrap();
        let scheduler = start(&store, &reconciler, "a").await;
        tokio::time::sleep(Duration::from_millis(2200)).await;
        assert!(outcomes(&store, "tick").await.is_empty());
        store.set_paused("tick", false).await.unwrap();
        tokio::time::sleep(Duration::from_millis(2200)).await;
        scheduler.shutdown();
        assert!(!outcomes(&store, "tick").await.is_empty());
    }

    #[tokio::test]
    async fn missed_ticks_follow_the_misfire_policy() {
        let (store, reconciler) = store_and_reconciler().await;
        // Both last fired an hour ago, then idmd was down. Hourly, half an
        // hour from now: one tick was missed, and none falls due while the
        // test runs (a 10-minute schedule did, at every :x0:00).
        let hour_ago = stamp(Utc::now() - chrono::Duration::hours(1));
        let minute = (chrono::Timelike::minute(&Utc::now()) + 30) % 60;
        let hourly = format!("0 {minute} * * * ?");
        for (name, policy) in [("proceed", "fireAndProceed"), ("nothing", "doNothing")] {
            let mut body = script(&hourly, "'ran'", true);
            body["misfirePolicy"] = json!(policy);
            put(&store, name, body).await;
            assert!(store.claim_tick(name, &hour_ago, "earlier").await.unwrap());
        }
        let scheduler = start(&store, &reconciler, "a").await;
        tokio::time::sleep(Duration::from_millis(1000)).await;
        scheduler.shutdown();
        let proceed = outcomes(&store, "proceed").await;
        assert_eq!(proceed.len(), 1, "{proceed:?}");
        assert_eq!(proceed[0].1, "SUCCESS");
        assert!(
            proceed[0].0 < now_timestamp(),
            "the missed tick, in the past"
        );
        let nothing = outcomes(&store, "nothing").await;
        assert_eq!(nothing.len(), 1, "{nothing:?}");
        assert_eq!(nothing[0].1, "SKIPPED_MISFIRE");
    }

    #[tokio::test]
    async fn live_sync_reconciles_a_file_only_when_it_changed() {
        let (store, reconciler) = store_and_reconciler().await;
        let dir = std::env::temp_dir().join(format!("idm-live-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let hr = dir.join("hr.csv");
        std::fs::write(
            &hr,
            "uid,firstName,lastName,telephoneNumber\n123,Jon,Snow,5551234\n",
        )
        .unwrap();
        let sample: Value =
            serde_json::from_str(include_str!("../../../tests/fixtures/idm-sync/sync.json"))
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
            ("mapping", "csvEmployee_managedUser", mapping),
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
        put(
            &store,
            "live",
            json!({"schedule": "* * * * * ?", "invokeService": "liveSync",
            "invokeContext": {"mapping": "csvEmployee_managedUser"}}),
        )
        .await;
        let scheduler = start(&store, &reconciler, "a").await;
        tokio::time::sleep(Duration::from_millis(3300)).await;
        let runs = |list: &[ExecutionRecord]| list.iter().filter(|e| e.recon_run.is_some()).count();
        let first = store.list_executions("live", 100, 0).await.unwrap();
        assert!(first.len() >= 3, "{first:?}");
        assert_eq!(
            runs(&first),
            1,
            "one reconciliation, then nothing changed: {first:?}"
        );
        assert!(
            first.iter().any(|e| e.message.contains("has not changed")),
            "{first:?}"
        );

        std::fs::write(
            &hr,
            "uid,firstName,lastName,telephoneNumber\n123,Jon,Snow,5551234\n456,John,Doe,5554567\n",
        )
        .unwrap();
        tokio::time::sleep(Duration::from_millis(2300)).await;
        scheduler.shutdown();
        let after = store.list_executions("live", 100, 0).await.unwrap();
        assert_eq!(
            runs(&after),
            2,
            "the changed file was reconciled: {after:?}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn scheduled_scripts_read_and_query_managed_objects_through_idm() {
        let (store, objects, reconciler) = store_objects_reconciler().await;
        for (id, name, sn) in [
            ("1", "jdoe", "Doe"),
            ("2", "adoe", "Doe"),
            ("3", "snow", "Snow"),
        ] {
            objects
                .create(
                    "test",
                    "user",
                    Some(id.into()),
                    json!({"userName": name, "sn": sn})
                        .as_object()
                        .cloned()
                        .unwrap(),
                )
                .await
                .unwrap();
        }
        let code = "const one = idm.read('managed/user/3'); \
            const none = idm.read('managed/user/404'); \
            const does = idm.query('managed/user', 'sn eq \"Doe\"').map(u => u.userName).sort(); \
            one.userName + '/' + one._id + '/' + (none === null) + '/' + does.join(',')";
        put(&store, "reader", script("* * * * * ?", code, true)).await;
        put(
            &store,
            "bad",
            script("* * * * * ?", "idm.query('managed/user', 'sn eq')", true),
        )
        .await;
        let scheduler = start(&store, &reconciler, "a").await;
        tokio::time::sleep(Duration::from_millis(2300)).await;
        scheduler.shutdown();
        let read = store.list_executions("reader", 10, 0).await.unwrap();
        let done = read.iter().find(|e| e.outcome == "SUCCESS").unwrap();
        assert_eq!(done.message, "\"snow/3/true/adoe,jdoe\"");
        let bad = store.list_executions("bad", 10, 0).await.unwrap();
        let failed = bad.iter().find(|e| e.outcome == "FAILED").unwrap();
        assert!(
            failed.message.contains("idm.query") && failed.message.contains("filter"),
            "{failed:?}"
        );
    }
}
