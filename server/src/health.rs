//! What `grpc.health.v1.Health` answers: one named service per component
//! idmd needs, and `""` for the whole.
//!
//! - `idm.store`: the store answers a trivial query ([`probe_store`], every
//!   [`PROBE_EVERY`], each within [`PROBE_TIMEOUT`]).
//! - `idm.outbox`: the implicit-sync dispatcher runs and is not stuck (see
//!   [`Health::outbox_progress`]).
//! - `idm.scheduler`: every schedule's loop runs.
//! - `idm.tokens`: the token refresh runs and has read the store's token
//!   changes lately (else bearers are refused: `api/auth.rs`).
//! - every `idm.v1.*Service`: SERVING while the store is (each of them
//!   needs it).
//! - `""`: SERVING iff every component is.
//!
//! A component is down while any task of it is down: a supervised task
//! marks itself down when it dies and up when it runs again
//! (`supervise.rs`). [`Health::drain`], the first step of shutdown, turns
//! everything NOT_SERVING for good, then ends the `Watch` streams (after
//! they carried NOT_SERVING) so that they do not hold the drain up.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::store::Store;

/// The store answers queries.
pub const STORE: &str = "idm.store";
/// The implicit-sync dispatcher runs and is not stuck.
pub const OUTBOX: &str = "idm.outbox";
/// Every schedule's loop runs.
pub const SCHEDULER: &str = "idm.scheduler";
/// The token refresh runs.
pub const TOKENS: &str = "idm.tokens";
/// The components, in the order the gateway shows them.
pub const COMPONENTS: [&str; 4] = [STORE, OUTBOX, SCHEDULER, TOKENS];

/// The gRPC services of `idm.v1`, each a health service name too.
pub const SERVICES: [&str; 11] = [
    "idm.v1.ObjectService",
    "idm.v1.AuditService",
    "idm.v1.TokenService",
    "idm.v1.KeyService",
    "idm.v1.ConfigService",
    "idm.v1.ReconService",
    "idm.v1.SyncService",
    "idm.v1.ScheduleService",
    "idm.v1.SystemService",
    "idm.v1.AuthService",
    "idm.v1.AccountService",
];

/// How often the store is probed.
pub const PROBE_EVERY: Duration = Duration::from_secs(5);
/// How long a probe may take before the store counts as down.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// How long the dispatcher may go without progress while entries are due
/// before `idm.outbox` is NOT_SERVING.
pub const OUTBOX_STUCK_AFTER: Duration = Duration::from_secs(120);

/// The health of idmd's components; cheap to clone.
#[derive(Clone)]
pub struct Health {
    inner: Arc<Inner>,
}

struct Inner {
    reporter: HealthReporter,
    state: Mutex<State>,
    /// Every component's status, for tests and the outbox watchdog.
    changes: watch::Sender<BTreeMap<&'static str, bool>>,
    /// When the dispatcher last made progress (a batch done, or an idle
    /// look at an outbox with nothing due).
    outbox_beat: Mutex<Instant>,
}

#[derive(Default)]
struct State {
    /// The tasks of each component that are down now.
    down: BTreeMap<&'static str, BTreeSet<String>>,
    draining: bool,
    /// The statuses were withdrawn from the reporter (after the drain began).
    withdrawn: bool,
}

impl State {
    fn up(&self, component: &str) -> bool {
        !self.draining && self.down.get(component).is_none_or(BTreeSet::is_empty)
    }

    fn statuses(&self) -> Vec<(&'static str, bool)> {
        let store = self.up(STORE);
        let mut all: Vec<(&'static str, bool)> =
            COMPONENTS.iter().map(|c| (*c, self.up(c))).collect();
        let overall = all.iter().all(|(_, up)| *up);
        all.extend(SERVICES.iter().map(|s| (*s, store)));
        all.push(("", overall));
        all
    }
}

fn serving(up: bool) -> ServingStatus {
    if up {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    }
}

impl Health {
    /// Every component SERVING; the server half goes to `Server::add_service`.
    pub async fn new() -> (
        Health,
        tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health>,
    ) {
        let (reporter, service) = tonic_health::server::health_reporter();
        let state = State::default();
        let changes = watch::Sender::new(COMPONENTS.iter().map(|c| (*c, true)).collect());
        let health = Health {
            inner: Arc::new(Inner {
                reporter,
                state: Mutex::new(state),
                changes,
                outbox_beat: Mutex::new(Instant::now()),
            }),
        };
        health.publish().await;
        (health, service)
    }

    /// `task` of `component` is down (it died, or its probe failed).
    pub async fn down(&self, component: &'static str, task: &str) {
        self.lock()
            .down
            .entry(component)
            .or_default()
            .insert(task.to_string());
        self.publish().await;
    }

    /// `task` of `component` runs (again).
    pub async fn up(&self, component: &'static str, task: &str) {
        if let Some(tasks) = self.lock().down.get_mut(component) {
            tasks.remove(task);
        }
        self.publish().await;
    }

    /// Forgets a task that is gone on purpose (a deleted schedule's loop).
    pub async fn forget(&self, component: &'static str, task: &str) {
        self.up(component, task).await;
    }

    /// Whether `name` (a component, an `idm.v1` service or `""`) is SERVING now.
    pub fn is_up(&self, name: &str) -> bool {
        self.lock()
            .statuses()
            .into_iter()
            .find(|(n, _)| *n == name)
            .is_some_and(|(_, up)| up)
    }

    /// Every component's status as it changes (`true`: SERVING).
    pub fn watch(&self) -> watch::Receiver<BTreeMap<&'static str, bool>> {
        self.inner.changes.subscribe()
    }

    /// The dispatcher made progress: it finished a batch, or found nothing due.
    pub fn outbox_progress(&self) {
        *self
            .inner
            .outbox_beat
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Instant::now();
    }

    /// How long since the dispatcher last made progress.
    pub fn outbox_silence(&self) -> Duration {
        self.inner
            .outbox_beat
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .elapsed()
    }

    /// The first step of shutdown: everything NOT_SERVING, for good; then
    /// the statuses are withdrawn, which ends every `Watch` stream after it
    /// carried NOT_SERVING (an open Watch would otherwise hold the drain up).
    pub async fn drain(&self) {
        self.lock().draining = true;
        self.publish().await;
        let names: Vec<&'static str> = {
            let mut state = self.lock();
            state.withdrawn = true;
            state.statuses().into_iter().map(|(name, _)| name).collect()
        };
        let mut reporter = self.inner.reporter.clone();
        for name in names {
            reporter.clear_service_status(name).await;
        }
    }

    /// What `grpc.health.v1.Health/Check` answers for `name` (through the
    /// service's own code), for tests.
    #[cfg(test)]
    pub(crate) async fn check(&self, name: &str) -> Result<ServingStatus, tonic::Status> {
        use tonic_health::pb::health_server::Health as _;
        let service =
            tonic_health::server::HealthService::from_health_reporter(self.inner.reporter.clone());
        let answer = service
            .check(tonic::Request::new(tonic_health::pb::HealthCheckRequest {
                service: name.into(),
            }))
            .await?
            .into_inner();
        Ok(if answer.status == ServingStatus::Serving as i32 {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    async fn publish(&self) {
        let (statuses, draining, withdrawn) = {
            let state = self.lock();
            (state.statuses(), state.draining, state.withdrawn)
        };
        for (name, up) in statuses.iter().filter(|_| !withdrawn) {
            self.inner
                .reporter
                .set_service_status(name, serving(*up))
                .await;
        }
        let components: BTreeMap<&'static str, bool> = statuses
            .into_iter()
            .filter(|(name, _)| COMPONENTS.contains(name))
            .collect();
        self.inner.changes.send_if_modified(|seen| {
            let changed = *seen != components;
            *seen = components;
            changed || draining
        });
    }
}

/// Probes the store every [`PROBE_EVERY`] until `stop`: `idm.store` is down
/// while a trivial query fails or takes longer than [`PROBE_TIMEOUT`].
pub async fn probe_store(store: Store, health: Health, mut stop: watch::Receiver<bool>) {
    loop {
        let answered = tokio::time::timeout(PROBE_TIMEOUT, store.ping()).await;
        match answered {
            Ok(Ok(())) => health.up(STORE, "probe").await,
            Ok(Err(e)) => {
                if health.is_up(STORE) {
                    tracing::error!(error = %e, "the store does not answer");
                }
                health.down(STORE, "probe").await;
            }
            Err(_) => {
                if health.is_up(STORE) {
                    tracing::error!("the store did not answer within {PROBE_TIMEOUT:?}");
                }
                health.down(STORE, "probe").await;
            }
        }
        tokio::select! {
            () = tokio::time::sleep(PROBE_EVERY) => {}
            _ = stop.wait_for(|stop| *stop) => return,
        }
    }
}

/// Watches the dispatcher's heartbeat until `stop`: `idm.outbox` is down
/// ("stuck") while entries have been due for longer than `stuck_after` and
/// the dispatcher made no progress in that time. A dispatcher waiting on an
/// unreachable target is not stuck: each failed batch is progress (it is
/// rescheduled with a backoff), only a batch that never ends is not.
pub async fn watch_outbox(
    store: Store,
    health: Health,
    stuck_after: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let every = (stuck_after / 4).max(Duration::from_millis(100));
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            _ = stop.wait_for(|stop| *stop) => return,
        }
        let silent = health.outbox_silence() > stuck_after;
        let due = silent && overdue(&store, stuck_after).await;
        if due {
            if health.is_up(OUTBOX) {
                tracing::error!(
                    silent = ?health.outbox_silence(),
                    "implicit sync is stuck: entries are due and no batch ended"
                );
            }
            health.down(OUTBOX, "progress").await;
        } else {
            health.up(OUTBOX, "progress").await;
        }
    }
}

/// Whether some outbox entry has been due for longer than `by`.
async fn overdue(store: &Store, by: Duration) -> bool {
    let Ok(Some(next)) = store.next_due().await else {
        return false;
    };
    let Ok(next) =
        time::OffsetDateTime::parse(&next, &time::format_description::well_known::Rfc3339)
    else {
        return false;
    };
    time::OffsetDateTime::now_utc() - next > by
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    async fn status(health: &Health, name: &str) -> ServingStatus {
        health.check(name).await.unwrap()
    }

    #[tokio::test]
    async fn a_component_is_down_while_any_of_its_tasks_is_and_overall_follows() {
        let (health, _) = Health::new().await;
        for name in ["", STORE, OUTBOX, SCHEDULER, TOKENS, "idm.v1.ObjectService"] {
            assert_eq!(
                status(&health, name).await,
                ServingStatus::Serving,
                "{name}"
            );
        }
        health.down(SCHEDULER, "schedule a").await;
        health.down(SCHEDULER, "schedule b").await;
        assert_eq!(status(&health, SCHEDULER).await, ServingStatus::NotServing);
        assert_eq!(status(&health, "").await, ServingStatus::NotServing);
        assert_eq!(status(&health, OUTBOX).await, ServingStatus::Serving);
        health.up(SCHEDULER, "schedule a").await;
        assert_eq!(status(&health, SCHEDULER).await, ServingStatus::NotServing);
        health.up(SCHEDULER, "schedule b").await;
        assert_eq!(status(&health, SCHEDULER).await, ServingStatus::Serving);
        assert_eq!(status(&health, "").await, ServingStatus::Serving);

        health.down(STORE, "probe").await;
        assert_eq!(
            status(&health, "idm.v1.AccountService").await,
            ServingStatus::NotServing
        );
    }

    #[tokio::test]
    async fn drain_turns_everything_not_serving_and_ends_watches() {
        let (health, service) = Health::new().await;
        drop(service);
        let reporter = health.inner.reporter.clone();
        let service = tonic_health::server::HealthService::from_health_reporter(reporter);
        use tokio_stream::StreamExt;
        use tonic_health::pb::health_server::Health as _;
        let mut stream = service
            .watch(tonic::Request::new(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            }))
            .await
            .unwrap()
            .into_inner();
        let first = stream.next().await.unwrap().unwrap();
        assert_eq!(first.status, ServingStatus::Serving as i32);
        health.drain().await;
        let second = stream.next().await.unwrap().unwrap();
        assert_eq!(second.status, ServingStatus::NotServing as i32);
        assert!(
            stream.next().await.is_none(),
            "the watch ends after the drain"
        );
        health.up(STORE, "probe").await;
        assert!(!health.is_up(STORE), "nothing comes back up while draining");
    }

    #[tokio::test]
    async fn the_outbox_is_stuck_while_entries_are_overdue_and_no_batch_ends() {
        let (health, _) = Health::new().await;
        let store = Store::open("mem://").await.unwrap();
        let stuck_after = Duration::from_millis(300);
        let (stop, stopped) = watch::channel(false);
        let watchdog = tokio::spawn(watch_outbox(
            store.clone(),
            health.clone(),
            stuck_after,
            stopped,
        ));
        // Nothing due: silence is not stuck.
        let mut changes = health.watch();
        tokio::time::sleep(stuck_after * 3).await;
        assert!(health.is_up(OUTBOX));
        // Due entries and no dispatcher to deliver them.
        store
            .enqueue("m", "user", &["u1".to_string()], "update")
            .await
            .unwrap();
        changes.wait_for(|c| !c[OUTBOX]).await.unwrap();
        assert_eq!(status(&health, OUTBOX).await, ServingStatus::NotServing);
        // A batch ended.
        health.outbox_progress();
        changes.wait_for(|c| c[OUTBOX]).await.unwrap();
        stop.send(true).unwrap();
        watchdog.await.unwrap();
    }

    #[tokio::test]
    async fn the_store_probe_marks_an_answering_store_up_and_stops_when_told() {
        let (health, _) = Health::new().await;
        health.down(STORE, "probe").await;
        let store = Store::open("mem://").await.unwrap();
        let (stop, stopped) = watch::channel(false);
        let probe = tokio::spawn(probe_store(store, health.clone(), stopped));
        let mut changes = health.watch();
        changes.wait_for(|c| c[STORE]).await.unwrap();
        stop.send(true).unwrap();
        probe.await.unwrap();
    }
}
