//! Implicit sync: delivering the outbox. Managed writes commit outbox entries
//! (store/outbox.rs); this dispatcher reads due entries oldest first, hands
//! each mapping's objects to its [`Provisioner`], and settles an object's
//! entries only after the target confirmed. A failed delivery is tried again
//! with exponential backoff: without limit while the target is unreachable
//! (an outage delays changes, never drops them), and up to
//! [`MAX_ATTEMPTS`] when the target refuses, after which the entries wait as
//! `failed` for an operator's retry or discard.
//!
//! Delivery is state-based (see `provision.rs`), so an object's entries are
//! delivered together and in order, and delivering one again after a crash
//! changes nothing.
//!
//! Nodes sharing a store share the outbox: a dispatcher claims the objects
//! of a batch before delivering it ([`Claims`]), renews its claims while
//! they are in flight and releases them once the batch is recorded; other
//! nodes' reads leave those objects out. A node that dies leaves its claims
//! to expire after [`CLAIM_TTL`]; another node then delivers the entries.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use futures::future::LocalBoxFuture;
use tokio::sync::watch;

use super::mapping::{Endpoint, Mapping};
use super::provision::{Change, Provisioner, Referrer};
use crate::connector;
use crate::health::{self, Health};
use crate::managed::ManagedObjects;
use crate::store::{
    ClaimKey, OutboxEntry, Reschedule, Store, StoreError, format_timestamp, now_timestamp,
};
use crate::supervise::{self, Backoff, Task};

mod claims;

pub use claims::{CLAIM_TTL, Claims};
use claims::{Held, Renewer, release};

/// Objects per batch.
const BATCH: usize = 500;
/// Batches' worth of due entries read at once.
const READ_AHEAD: usize = 8;
/// Deliveries the target refused are given up after this many attempts.
pub const MAX_ATTEMPTS: u32 = 3;
/// The longest wait between two attempts while a target is unreachable.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How often the dispatcher looks for entries when nothing wakes it
/// (another node's writes, entries falling due).
const IDLE_POLL: Duration = Duration::from_secs(2);
/// How often the dispatcher looks again while every due entry belongs to
/// objects other nodes hold.
const HELD_POLL: Duration = Duration::from_millis(500);

/// The enableSync mappings that provision managed objects into a connector,
/// by source type, from the stored mapping documents.
pub async fn load_sync_mappings(
    store: &Store,
    objects: &ManagedObjects,
    conf_dir: &std::path::Path,
) -> Result<Vec<Mapping>, StoreError> {
    let mut mappings = Vec::new();
    for document in store.list_config("mapping").await? {
        match Mapping::from_json(&document.name, &document.body, conf_dir, objects.schema()) {
            Ok(mapping) if is_implicit(&mapping) => mappings.push(mapping),
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(mapping = %document.name, error = %e, "mapping not usable for implicit sync")
            }
        }
    }
    Ok(mappings)
}

fn is_implicit(mapping: &Mapping) -> bool {
    mapping.enable_sync
        && matches!(mapping.source, Endpoint::Managed { .. })
        && matches!(mapping.target, Endpoint::System { .. })
}

/// Type → mapping names, for [`Store::set_sync_subscriptions`].
pub fn subscriptions(mappings: &[Mapping]) -> BTreeMap<String, Vec<String>> {
    let mut by_type: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for mapping in mappings {
        if let Endpoint::Managed { type_name } = &mapping.source {
            by_type
                .entry(type_name.clone())
                .or_default()
                .push(mapping.name.clone());
        }
    }
    by_type
}

/// The mappings whose properties translate references through `mapping`'s links.
pub fn referrers(mappings: &[Mapping], mapping: &str) -> Vec<Referrer> {
    let mut found = Vec::new();
    for other in mappings {
        let Endpoint::Managed { type_name } = &other.source else {
            continue;
        };
        for property in &other.properties {
            if property.reference_mapping.as_deref() == Some(mapping)
                && let Some(source) = &property.source
            {
                found.push(Referrer {
                    mapping: other.name.clone(),
                    source_type: type_name.clone(),
                    property: source.clone(),
                });
            }
        }
    }
    found
}

/// The running dispatcher.
pub struct ImplicitSync {
    store: Store,
    objects: ManagedObjects,
    conf_dir: PathBuf,
    /// The current enableSync mappings, handed to the dispatcher.
    reload: watch::Sender<Arc<Vec<Mapping>>>,
    stop: watch::Sender<bool>,
    /// The dispatcher's supervisor.
    task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// The stuck-dispatcher watchdog's supervisor.
    watchdog: tokio::task::JoinHandle<()>,
    /// One reload at a time (a conf change seen by the watcher and by
    /// several stale writes at once).
    reloading: tokio::sync::Mutex<()>,
}

impl ImplicitSync {
    /// Subscribes the enableSync mappings' source types to the outbox and
    /// starts delivering (entries left by an earlier run included), on a
    /// health of its own (benches, tests).
    pub async fn start(
        store: Store,
        objects: ManagedObjects,
        conf_dir: PathBuf,
    ) -> Result<Self, StoreError> {
        let (health, _) = Health::new().await;
        let node = format!("idmd-{}", uuid::Uuid::new_v4().simple());
        Self::start_with(
            store,
            objects,
            conf_dir,
            &health,
            Backoff::default(),
            Claims::new(node),
        )
        .await
    }

    /// [`ImplicitSync::start`] under supervision: a dispatcher that dies is
    /// restarted after `backoff` (`idm.outbox` NOT_SERVING meanwhile) and
    /// delivers what was queued; a watchdog turns `idm.outbox` NOT_SERVING
    /// while the dispatcher is stuck (see [`crate::health::watch_outbox`]).
    /// Objects are claimed in the name of `claims.node`.
    pub async fn start_with(
        store: Store,
        objects: ManagedObjects,
        conf_dir: PathBuf,
        health: &Health,
        backoff: Backoff,
        claims: Claims,
    ) -> Result<Self, StoreError> {
        let version = store.conf_version().await?;
        let mappings = Arc::new(load_sync_mappings(&store, &objects, &conf_dir).await?);
        store.set_sync_subscriptions_at(subscriptions(&mappings), version);
        let (reload, _) = watch::channel(Arc::clone(&mappings));
        let (stop, stopped) = watch::channel(false);
        let handle = tokio::runtime::Handle::current();
        let (for_store, for_objects, for_dir) = (store.clone(), objects.clone(), conf_dir.clone());
        let (reloads, for_health, for_stop) = (reload.clone(), health.clone(), stopped.clone());
        // Provisioners own script engines (single-threaded): one thread for all.
        let task = supervise::spawn_blocking(
            Task::new("outbox-dispatcher", Some(health::OUTBOX)).with_backoff(backoff),
            health,
            stopped.clone(),
            move || {
                let mut reloads = reloads.subscribe();
                let (store, objects, conf_dir, health) = (
                    for_store.clone(),
                    for_objects.clone(),
                    for_dir.clone(),
                    for_health.clone(),
                );
                let (handle, stopped) = (handle.clone(), for_stop.clone());
                let claims = claims.clone();
                move || {
                    let dispatcher = Dispatcher {
                        claims,
                        held: Held::default(),
                        held_elsewhere: false,
                        store,
                        objects,
                        conf_dir,
                        mappings: Arc::clone(&reloads.borrow_and_update()),
                        provisioners: HashMap::new(),
                        queued: VecDeque::new(),
                        unfinished: HashSet::new(),
                        health,
                    };
                    handle.block_on(dispatcher.run(reloads, stopped));
                }
            },
        );
        let (watched, stuck_after) = (store.clone(), health::OUTBOX_STUCK_AFTER);
        let watchdog = supervise::spawn(
            Task::new("outbox-watchdog", Some(health::OUTBOX)).with_backoff(backoff),
            health,
            stopped.clone(),
            {
                let (health, stopped) = (health.clone(), stopped);
                move || {
                    health::watch_outbox(
                        watched.clone(),
                        health.clone(),
                        stuck_after,
                        stopped.clone(),
                    )
                }
            },
        );
        Ok(ImplicitSync {
            store,
            objects,
            conf_dir,
            reload,
            stop,
            task: std::sync::Mutex::new(Some(task)),
            watchdog,
            reloading: tokio::sync::Mutex::new(()),
        })
    }

    /// Makes a managed write that finds the stored conf newer than its
    /// subscriptions reload through `self` before it is made again (see
    /// [`Store::set_sync_subscriptions_at`]). Held weakly: once implicit
    /// sync is dropped, stale writes only stop checking.
    pub fn follow_conf(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        self.store.on_conf_stale(Arc::new(move || {
            let weak = weak.clone();
            Box::pin(async move {
                match weak.upgrade() {
                    Some(implicit) => implicit.reload().await,
                    None => Ok(()),
                }
            })
        }));
    }

    /// Re-reads the mappings after a conf change: writes from now on feed
    /// the new set of outboxes, and deliveries use the new mappings.
    ///
    /// The version is read before the mappings: a change committed between
    /// the two leaves the subscriptions tagged older than what they hold, and
    /// the next write or watcher poll reloads again (never the reverse).
    pub async fn reload(&self) -> Result<(), StoreError> {
        let _one = self.reloading.lock().await;
        let version = self.store.conf_version().await?;
        let mappings = load_sync_mappings(&self.store, &self.objects, &self.conf_dir).await?;
        self.store
            .set_sync_subscriptions_at(subscriptions(&mappings), version);
        self.reload.send_replace(Arc::new(mappings));
        Ok(())
    }

    /// The mappings handed to the dispatcher, as they change.
    #[cfg(test)]
    pub(crate) fn watch_mappings(&self) -> watch::Receiver<Arc<Vec<Mapping>>> {
        self.reload.subscribe()
    }

    /// The conf version the current mappings were read at.
    pub fn conf_version(&self) -> Option<u64> {
        self.store.sync_subscriptions_version()
    }

    /// Stops after the batch in hand (waiting at most `grace`); undelivered
    /// entries stay in the store for the next start.
    pub async fn shutdown(&self, grace: Duration) {
        let _ = self.stop.send(true);
        self.watchdog.abort();
        let task = self
            .task
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(task) = task
            && tokio::time::timeout(grace, task).await.is_err()
        {
            tracing::warn!("implicit sync still delivering after {grace:?}; stopping anyway");
        }
    }
}

struct Dispatcher {
    claims: Claims,
    /// The objects this dispatcher has claimed and not yet released.
    held: Held,
    /// Whether the last read left out due entries other nodes hold.
    held_elsewhere: bool,
    store: Store,
    objects: ManagedObjects,
    conf_dir: PathBuf,
    mappings: Arc<Vec<Mapping>>,
    provisioners: HashMap<String, Provisioner>,
    /// Batches read ahead, waiting for their turn.
    queued: VecDeque<Batch>,
    /// Claimed objects whose earlier delivery stopped unrecorded
    /// ([`crate::store::Claim::unfinished`]), until their batch is prepared.
    unfinished: HashSet<ClaimKey>,
    /// Told of progress (the stuck-dispatcher watchdog's heartbeat).
    health: Health,
}

/// One mapping's objects and their entries, in order.
type Batch = (String, Vec<(String, Vec<OutboxEntry>)>);

/// A batch on its way through a stage: its objects, which are not handed
/// out again until it is done, and the work left.
struct InFlight<T> {
    objects: HashSet<(String, String)>,
    work: LocalBoxFuture<'static, T>,
}

/// A batch whose targets are being written; it turns into its recording.
type Applying = InFlight<Recording>;
/// A batch whose links and outbox entries are being written.
type Recording = InFlight<()>;

impl Dispatcher {
    /// Three batches move at once: one is prepared (store reads, scripts),
    /// one applied (the target's round trips), one recorded (links, settled
    /// entries), so neither the target nor the store waits for the other.
    async fn run(
        mut self,
        mut reloads: watch::Receiver<Arc<Vec<Mapping>>>,
        mut stopped: watch::Receiver<bool>,
    ) {
        let signal = self.store.outbox_signal();
        // Stops (aborts) with the dispatcher, a panic included: the claims
        // then expire unless a restarted dispatcher takes them again.
        let _renewer = self.claims.shared.then(|| {
            Renewer::start(
                self.store.clone(),
                self.claims.clone(),
                Arc::clone(&self.held),
            )
        });
        let mut applying: Option<Applying> = None;
        let mut recording: Option<Recording> = None;
        loop {
            if *stopped.borrow() || reloads.has_changed().unwrap_or(false) {
                if let Some(batch) = applying.take() {
                    batch.work.await.work.await;
                }
                if let Some(batch) = recording.take() {
                    batch.work.await;
                }
                if *stopped.borrow() {
                    return;
                }
                self.take_mappings(&mut reloads);
            }
            let busy = [
                &applying.as_ref().map(|a| &a.objects),
                &recording.as_ref().map(|r| &r.objects),
            ];
            let next = match self.next_batch(&busy).await {
                Ok(next) => next,
                Err(e) => {
                    tracing::warn!(error = %e, "implicit sync could not read the outbox; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            #[cfg(test)]
            #[allow(clippy::panic)]
            if next
                .as_ref()
                .is_some_and(|(mapping, _)| mapping == faults::PANICS_ONCE)
                && faults::PANIC_ON_NEXT_BATCH.swap(false, std::sync::atomic::Ordering::SeqCst)
            {
                panic!("fault injected: the dispatcher dies with a batch in hand");
            }
            if next.is_none() && applying.is_none() && recording.is_none() {
                self.health.outbox_progress();
                let wait = self.idle_wait().await;
                tokio::select! {
                    () = signal.notified() => {}
                    () = tokio::time::sleep(wait) => {}
                    _ = stopped.changed() => {}
                    // `changed` marks the new mappings seen, so the check at the
                    // top of the loop would miss them: take them here.
                    _ = reloads.changed() => self.take_mappings(&mut reloads),
                }
                continue;
            }
            let (to_apply, to_record) = (applying.take(), recording.take());
            let (prepared, applied, ()) = futures::join!(
                async {
                    match next {
                        Some((mapping, objects)) => Some(self.prepare(&mapping, objects).await),
                        None => None,
                    }
                },
                async {
                    match to_apply {
                        Some(batch) => Some(batch.work.await),
                        None => None,
                    }
                },
                async {
                    if let Some(batch) = to_record {
                        batch.work.await;
                    }
                },
            );
            applying = prepared;
            recording = applied;
            self.health.outbox_progress();
        }
    }

    /// New mappings: provisioners are rebuilt from them on first use, and
    /// entries read under the old ones are read again.
    fn take_mappings(&mut self, reloads: &mut watch::Receiver<Arc<Vec<Mapping>>>) {
        self.mappings = Arc::clone(&reloads.borrow_and_update());
        self.provisioners.clear();
        self.queued.clear();
    }

    /// How long to sleep when nothing is due: until the next entry is, at most [`IDLE_POLL`].
    async fn idle_wait(&self) -> Duration {
        if self.held_elsewhere {
            return HELD_POLL;
        }
        let Ok(Some(next)) = self.store.next_due().await else {
            return IDLE_POLL;
        };
        let next =
            time::OffsetDateTime::parse(&next, &time::format_description::well_known::Rfc3339);
        match next {
            Ok(next) => {
                let until = next - time::OffsetDateTime::now_utc();
                Duration::try_from(until)
                    .unwrap_or(Duration::ZERO)
                    .min(IDLE_POLL)
            }
            Err(_) => IDLE_POLL,
        }
    }

    /// The next batch: due entries of one mapping, oldest first, grouped by
    /// object. Due entries are read [`READ_AHEAD`] batches at a time (one
    /// scan of the outbox instead of one per batch), leaving out objects
    /// still in flight in a later stage and objects other nodes hold; a batch
    /// holds one mapping's objects. A batch is claimed when it is taken:
    /// objects another node claimed meanwhile, or whose entries changed
    /// since the read, are dropped from it (the next read sees them again).
    async fn next_batch(
        &mut self,
        busy: &[&Option<&HashSet<(String, String)>>],
    ) -> Result<Option<Batch>, StoreError> {
        loop {
            let Some((mapping, objects)) = self.next_unclaimed(busy).await? else {
                return Ok(None);
            };
            if !self.claims.shared {
                return Ok(Some((mapping, objects)));
            }
            let firsts: Vec<&OutboxEntry> = objects
                .iter()
                .filter_map(|(_, entries)| entries.first())
                .collect();
            let mut claimed: HashSet<ClaimKey> = HashSet::new();
            for claim in self
                .store
                .claim_objects(&self.claims.node, self.claims.ttl, &firsts)
                .await?
            {
                if claim.unfinished {
                    self.unfinished.insert(claim.key.clone());
                }
                claimed.insert(claim.key);
            }
            let objects: Vec<(String, Vec<OutboxEntry>)> = objects
                .into_iter()
                .filter(|(_, entries)| {
                    entries
                        .first()
                        .is_some_and(|e| claimed.contains(&e.claim_key()))
                })
                .collect();
            if objects.is_empty() {
                continue;
            }
            let now = std::time::Instant::now();
            self.held
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend(claimed.into_iter().map(|key| (key, now)));
            return Ok(Some((mapping, objects)));
        }
    }

    /// The next batch read, before it is claimed.
    async fn next_unclaimed(
        &mut self,
        busy: &[&Option<&HashSet<(String, String)>>],
    ) -> Result<Option<Batch>, StoreError> {
        if self.queued.is_empty() {
            let (now, limit) = (now_timestamp(), READ_AHEAD * BATCH);
            let due = if self.claims.shared {
                let due = self
                    .store
                    .due_entries_for(&self.claims.node, &now, limit)
                    .await?;
                self.held_elsewhere = due.held_elsewhere > 0;
                due.entries
            } else {
                self.store.due_entries(&now, limit).await?
            };
            let mut batches: Vec<Batch> = Vec::new();
            let mut placed: HashMap<(String, String), (usize, usize)> = HashMap::new();
            for entry in due {
                let key = (entry.mapping.clone(), entry.oid.clone());
                if busy.iter().any(|b| b.is_some_and(|b| b.contains(&key))) {
                    continue;
                }
                if let Some(&(b, o)) = placed.get(&key) {
                    batches[b].1[o].1.push(entry);
                    continue;
                }
                let open = batches
                    .iter()
                    .rposition(|(m, objects)| *m == entry.mapping && objects.len() < BATCH);
                let b = open.unwrap_or_else(|| {
                    batches.push((entry.mapping.clone(), Vec::new()));
                    batches.len() - 1
                });
                placed.insert(key, (b, batches[b].1.len()));
                batches[b].1.push((entry.oid.clone(), vec![entry]));
            }
            self.queued = batches.into();
        }
        Ok(self.queued.pop_front())
    }

    /// Prepares one batch (steps 1 to 3, on this thread's script engine) and
    /// returns the rest of its way: its target writes, then its recording.
    /// The batch's claims are released once it is recorded.
    async fn prepare(
        &mut self,
        mapping: &str,
        objects: Vec<(String, Vec<OutboxEntry>)>,
    ) -> Applying {
        let keys: Vec<ClaimKey> = if self.claims.shared {
            objects
                .iter()
                .filter_map(|(_, entries)| entries.first().map(OutboxEntry::claim_key))
                .collect()
        } else {
            Vec::new()
        };
        #[cfg(test)]
        let watched = faults::begin(&self.claims.node, mapping, &objects);
        let applying = self.prepare_batch(mapping, objects).await;
        let (store, node, held) = (
            self.store.clone(),
            self.claims.node.clone(),
            Arc::clone(&self.held),
        );
        Applying {
            objects: applying.objects,
            work: Box::pin(async move {
                let recording = applying.work.await;
                Recording {
                    objects: recording.objects,
                    work: Box::pin(async move {
                        recording.work.await;
                        #[cfg(test)]
                        faults::end(watched);
                        release(&store, &node, &held, &keys).await;
                    }),
                }
            }),
        }
    }

    #[tracing::instrument(skip_all, fields(mapping = %mapping, objects = objects.len()))]
    async fn prepare_batch(
        &mut self,
        mapping: &str,
        objects: Vec<(String, Vec<OutboxEntry>)>,
    ) -> Applying {
        let store = self.store.clone();
        let keys: HashSet<(String, String)> = objects
            .iter()
            .map(|(oid, _)| (mapping.to_string(), oid.clone()))
            .collect();
        let failed = |keys: HashSet<(String, String)>, message: String, transient: bool| {
            let store = store.clone();
            let failures: Vec<Reschedule> = objects
                .iter()
                .flat_map(|(_, entries)| entries)
                .map(|entry| reschedule(entry, &message, transient))
                .collect();
            let recording = Recording {
                objects: keys.clone(),
                work: Box::pin(async move { reschedule_all(&store, &failures).await }),
            };
            Applying {
                objects: keys,
                work: Box::pin(async move { recording }),
            }
        };
        let changes: Vec<Change> = objects
            .iter()
            .map(|(oid, entries)| Change {
                oid: oid.clone(),
                snapshot: entries.iter().rev().find_map(|e| e.snapshot.clone()),
                maybe_delivered: entries
                    .first()
                    .is_some_and(|e| self.unfinished.remove(&e.claim_key())),
            })
            .collect();
        // While this node has not followed a conf change made on another
        // node (a mapping made enableSync there, whose entries that node's
        // writes feed), a mapping it does not know is not a refusal: it is
        // tried again without giving up.
        if let Err(message) = self.provisioner(mapping).await.map(|_| ()) {
            let behind = self.conf_behind().await;
            return failed(keys, message, behind);
        }
        let provisioner = match self.provisioner(mapping).await {
            Ok(provisioner) => provisioner,
            Err(message) => return failed(keys, message, false),
        };
        let prepared = match provisioner.prepare(changes).await {
            Ok(prepared) => prepared,
            Err(e) => {
                tracing::warn!(error = %e, "implicit sync batch failed; it will be delivered again");
                return failed(keys, e.to_string(), true);
            }
        };
        let (applier, recorder) = (provisioner.applier(), provisioner.recorder());
        let mapping_name = mapping.to_string();
        Applying {
            objects: keys.clone(),
            work: Box::pin(async move {
                let delivery = applier.apply(prepared).await;
                let mut settled = Vec::new();
                let mut failures = Vec::new();
                for ((oid, mut entries), result) in objects.into_iter().zip(&delivery.provisioned) {
                    match &result.result {
                        Ok(()) => settled.append(&mut entries),
                        Err(failure) => {
                            // The object and the target's message (a DN, a
                            // value) at debug; the sync queue keeps both.
                            tracing::info!(mapping = %mapping_name, situation = %result.situation,
                                transient = failure.transient, "delivery failed; will retry");
                            tracing::debug!(object = %oid, error = %failure.message, "delivery failed");
                            failures.extend(
                                entries
                                    .iter()
                                    .map(|e| reschedule(e, &failure.message, failure.transient)),
                            );
                        }
                    }
                }
                tracing::debug!(
                    delivered = settled.len(),
                    failed = failures.len(),
                    "implicit sync batch"
                );
                Recording {
                    objects: keys,
                    work: Box::pin(async move {
                        let settled: Vec<&OutboxEntry> = settled.iter().collect();
                        match recorder.record(&delivery, &settled).await {
                            Ok(_) => crate::metrics::outbox_delivered(&mapping_name, settled.len()),
                            // The targets are written; the next delivery finds and links them.
                            Err(e) => {
                                tracing::warn!(error = %e, "recording an implicit sync batch failed; it will be delivered again")
                            }
                        }
                        reschedule_all(&store, &failures).await;
                    }),
                }
            }),
        }
    }

    /// The mapping's provisioner, built on first use.
    /// Whether the stored conf is newer than the mappings this node runs
    /// (one point read per batch; the conf follower catches up within
    /// `conf_watch::CONF_POLL`).
    async fn conf_behind(&self) -> bool {
        match (
            self.store.conf_version().await,
            self.store.sync_subscriptions_version(),
        ) {
            (Ok(stored), Some(followed)) => stored != followed,
            (Err(_), _) => true,
            (Ok(_), None) => false,
        }
    }

    async fn provisioner(&mut self, name: &str) -> Result<&mut Provisioner, String> {
        if !self.provisioners.contains_key(name) {
            let mapping = self
                .mappings
                .iter()
                .find(|m| m.name == name)
                .cloned()
                .ok_or_else(|| format!("mapping {name} no longer exists or has no enableSync"))?;
            let Endpoint::System { connector, .. } = &mapping.target else {
                return Err(format!("mapping {name} does not target a connector"));
            };
            let document = self
                .store
                .get_config("connector", connector)
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| {
                    format!("mapping {name}: connector {connector} is not configured")
                })?;
            let built = connector::build(
                connector,
                &document.body,
                &self.conf_dir,
                self.objects.secrets(),
            )
            .map_err(|e| e.to_string())?;
            let referrers = referrers(&self.mappings, name);
            let provisioner = Provisioner::new(
                Arc::new(mapping),
                built,
                self.store.clone(),
                self.objects.clone(),
                referrers,
            )
            .map_err(|e| e.to_string())?;
            self.provisioners.insert(name.to_string(), provisioner);
        }
        self.provisioners
            .get_mut(name)
            .ok_or_else(|| format!("mapping {name} has no provisioner"))
    }
}

/// Faults tests inject into the dispatcher.
#[cfg(test)]
pub(crate) mod faults {
    use std::sync::atomic::AtomicBool;

    /// The dispatcher panics when it next has a batch of the mapping named
    /// [`PANICS_ONCE`] in hand (only that name: tests in one process do not
    /// disturb each other).
    pub static PANIC_ON_NEXT_BATCH: AtomicBool = AtomicBool::new(false);
    pub const PANICS_ONCE: &str = "fault_panics_once";

    /// One batch's delivery of one object: by which node, which entries.
    #[derive(Debug, Clone)]
    pub struct Delivered {
        pub node: String,
        pub mapping: String,
        pub oid: String,
        pub seqs: Vec<String>,
    }

    /// Every delivery recorded, in the order the batches were recorded.
    pub static DELIVERED: Mutex<Vec<Delivered>> = Mutex::new(Vec::new());
    /// (mapping, oid) being delivered now, by node.
    static IN_FLIGHT: Mutex<Vec<(String, String, String)>> = Mutex::new(Vec::new());
    /// Objects a node began delivering while another node was: (mapping, oid).
    pub static OVERLAPS: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());

    use std::sync::Mutex;

    use crate::store::OutboxEntry;

    /// A batch begins: notes objects another node is delivering now.
    pub fn begin(
        node: &str,
        mapping: &str,
        objects: &[(String, Vec<OutboxEntry>)],
    ) -> Vec<Delivered> {
        let mut in_flight = IN_FLIGHT.lock().unwrap_or_else(|e| e.into_inner());
        let mut started = Vec::new();
        for (oid, entries) in objects {
            if in_flight
                .iter()
                .any(|(n, m, o)| n != node && m == mapping && o == oid)
            {
                OVERLAPS
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((mapping.to_string(), oid.clone()));
            }
            in_flight.push((node.to_string(), mapping.to_string(), oid.clone()));
            started.push(Delivered {
                node: node.to_string(),
                mapping: mapping.to_string(),
                oid: oid.clone(),
                seqs: entries.iter().map(|e| e.seq.clone()).collect(),
            });
        }
        started
    }

    /// A batch is recorded.
    pub fn end(batch: Vec<Delivered>) {
        let mut in_flight = IN_FLIGHT.lock().unwrap_or_else(|e| e.into_inner());
        for d in &batch {
            if let Some(i) = in_flight
                .iter()
                .position(|(n, m, o)| *n == d.node && *m == d.mapping && *o == d.oid)
            {
                in_flight.swap_remove(i);
            }
        }
        DELIVERED
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(batch);
    }
}

async fn reschedule_all(store: &Store, failures: &[Reschedule]) {
    crate::metrics::outbox_failed(failures);
    if let Err(e) = store.reschedule_entries(failures).await {
        tracing::warn!(error = %e, "recording failed deliveries failed; they will be tried again at once");
    }
}

/// The next attempt of a failed entry: exponential backoff from one second,
/// capped; refused deliveries give up after [`MAX_ATTEMPTS`].
fn reschedule(entry: &OutboxEntry, error: &str, transient: bool) -> Reschedule {
    let attempts = entry.attempts.saturating_add(1);
    let backoff = Duration::from_secs(1u64 << attempts.min(16).saturating_sub(1)).min(MAX_BACKOFF);
    let jitter = Duration::from_millis(rand::random_range(0..=backoff.as_millis() as u64 / 4));
    let due = time::OffsetDateTime::now_utc() + backoff + jitter;
    Reschedule {
        entry: entry.clone(),
        attempts,
        due: format_timestamp(due),
        failed: !transient && attempts >= MAX_ATTEMPTS,
        error: error.to_string(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn entry(attempts: u32) -> OutboxEntry {
        OutboxEntry {
            seq: "s".into(),
            mapping: "m".into(),
            type_name: "user".into(),
            oid: "u".into(),
            operation: "update".into(),
            rev: 2,
            snapshot: None,
            created: now_timestamp(),
            due: now_timestamp(),
            attempts,
            state: crate::store::PENDING.into(),
            last_error: None,
        }
    }

    fn wait_of(r: &Reschedule) -> Duration {
        let due =
            time::OffsetDateTime::parse(&r.due, &time::format_description::well_known::Rfc3339)
                .unwrap();
        Duration::try_from(due - time::OffsetDateTime::now_utc()).unwrap_or(Duration::ZERO)
    }

    /// The LDAP entry `uid=<uid>` as the directory holds it, if any.
    async fn ldap_entry(slapd: &idm_testkit::Slapd, uid: &str) -> bool {
        let (connection, mut ldap) = ldap3::LdapConnAsync::new(&slapd.url()).await.unwrap();
        tokio::spawn(connection.drive());
        ldap.simple_bind(slapd.admin_dn(), slapd.admin_password())
            .await
            .unwrap();
        let (entries, _) = ldap
            .search(
                slapd.base_dn(),
                ldap3::Scope::Subtree,
                &format!("(uid={uid})"),
                vec!["uid"],
            )
            .await
            .unwrap()
            .success()
            .unwrap();
        !entries.is_empty()
    }

    /// Adds an inetOrgPerson straight to the directory.
    async fn ldap_add_person(slapd: &idm_testkit::Slapd, dn: &str, uid: &str, sn: &str) {
        let (connection, mut ldap) = ldap3::LdapConnAsync::new(&slapd.url()).await.unwrap();
        tokio::spawn(connection.drive());
        ldap.simple_bind(slapd.admin_dn(), slapd.admin_password())
            .await
            .unwrap();
        let object_classes =
            HashSet::from(["top", "person", "organizationalPerson", "inetOrgPerson"]);
        ldap.add(
            dn,
            vec![
                ("objectClass", object_classes),
                ("uid", HashSet::from([uid])),
                ("cn", HashSet::from([uid])),
                ("sn", HashSet::from([sn])),
            ],
        )
        .await
        .unwrap()
        .success()
        .unwrap();
    }

    /// The `sn` of the LDAP entry `uid=<uid>`, if there is one.
    async fn ldap_sn(slapd: &idm_testkit::Slapd, uid: &str) -> Option<String> {
        let (connection, mut ldap) = ldap3::LdapConnAsync::new(&slapd.url()).await.unwrap();
        tokio::spawn(connection.drive());
        ldap.simple_bind(slapd.admin_dn(), slapd.admin_password())
            .await
            .unwrap();
        let (entries, _) = ldap
            .search(
                slapd.base_dn(),
                ldap3::Scope::Subtree,
                &format!("(uid={uid})"),
                vec!["sn"],
            )
            .await
            .unwrap()
            .success()
            .unwrap();
        entries.into_iter().next().and_then(|e| {
            ldap3::SearchEntry::construct(e)
                .attrs
                .get("sn")
                .and_then(|v| v.first().cloned())
        })
    }

    /// A store with an LDAP connector on `slapd` and an enableSync mapping
    /// `mapping` of users to it.
    async fn ldap_sync_store(
        slapd: &idm_testkit::Slapd,
        mapping: &str,
    ) -> (Store, ManagedObjects, PathBuf) {
        use serde_json::json;
        let store = Store::open("mem://").await.unwrap();
        let dir = std::env::temp_dir().join(format!("idm-outbox-{}", uuid::Uuid::new_v4()));
        let secrets =
            crate::secrets::SecretBox::load_or_create(&dir.join("idm.key"), None).unwrap();
        let objects = ManagedObjects::new(
            Arc::new(crate::managed::ManagedSchema::builtin().unwrap()),
            store.clone(),
            Arc::new(secrets),
        );
        let connector = json!({
            "connectorType": "ldap", "url": slapd.url(), "baseDn": slapd.base_dn(),
            "bindDn": slapd.admin_dn(), "bindPassword": slapd.admin_password(),
            "startTls": false, "timeoutSeconds": 10,
            "objectTypes": {"account": {"namingAttribute": "uid",
                "objectClasses": ["top", "person", "organizationalPerson", "inetOrgPerson"]}}
        });
        let body = json!({
            "name": mapping,
            "source": "managed/user", "target": "system/ldap/account", "enableSync": true,
            "properties": [{"source": "userName", "target": "uid"},
                           {"source": "userName", "target": "cn"},
                           {"source": "sn", "target": "sn"}],
            "policies": [{"situation": "MISSING", "action": "CREATE"},
                         {"situation": "CONFIRMED", "action": "UPDATE"},
                         {"situation": "FOUND", "action": "UPDATE"}]
        });
        for (kind, name, body) in [("connector", "ldap", connector), ("mapping", mapping, body)] {
            store
                .put_config(&crate::store::ConfigDocument {
                    kind: kind.into(),
                    name: name.into(),
                    body: body.as_object().cloned().unwrap(),
                    source: "test".into(),
                })
                .await
                .unwrap();
        }
        (store, objects, dir)
    }

    fn user_body(name: &str, sn: &str) -> serde_json::Map<String, serde_json::Value> {
        serde_json::json!({"userName": name, "sn": sn})
            .as_object()
            .cloned()
            .unwrap()
    }

    /// Waits until the mapping's queue is empty.
    async fn drained(store: &Store, mapping: &str) -> bool {
        for _ in 0..600 {
            let queues = store.queue_counts().await.unwrap();
            if !queues
                .iter()
                .any(|q| q.mapping == mapping && q.pending + q.failed > 0)
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_nodes_deliver_every_change_once_and_in_order_per_object() {
        const MAPPING: &str = "two_nodes_once";
        const USERS: usize = 30;
        const ROUNDS: usize = 4;
        let slapd = idm_testkit::Slapd::start().unwrap();
        let (store, objects, dir) = ldap_sync_store(&slapd, MAPPING).await;
        let mut nodes = Vec::new();
        for node in ["node-a", "node-b"] {
            let (health, _) = Health::new().await;
            nodes.push(
                ImplicitSync::start_with(
                    store.clone(),
                    objects.clone(),
                    dir.clone(),
                    &health,
                    Backoff::default(),
                    Claims::new(node),
                )
                .await
                .unwrap(),
            );
        }
        // Writes while both deliver: each user created, then changed ROUNDS times.
        let name = |u: usize| format!("twonodes{u}");
        for u in 0..USERS {
            objects
                .create("test", "user", Some(name(u)), user_body(&name(u), "v0"))
                .await
                .unwrap();
        }
        for round in 1..=ROUNDS {
            for u in 0..USERS {
                objects
                    .replace(
                        "test",
                        "user",
                        &name(u),
                        user_body(&name(u), &format!("v{round}")),
                        None,
                    )
                    .await
                    .unwrap();
            }
        }
        assert!(drained(&store, MAPPING).await, "the outbox drained");
        for u in 0..USERS {
            assert_eq!(
                ldap_sn(&slapd, &name(u)).await.as_deref(),
                Some(format!("v{ROUNDS}").as_str()),
                "{} holds the last change",
                name(u)
            );
        }
        for node in &nodes {
            node.shutdown(Duration::from_secs(5)).await;
        }

        let overlaps: Vec<_> = faults::OVERLAPS
            .lock()
            .unwrap()
            .iter()
            .filter(|(m, _)| m == MAPPING)
            .cloned()
            .collect();
        assert!(
            overlaps.is_empty(),
            "objects delivered by two nodes at once: {overlaps:?}"
        );
        let delivered: Vec<faults::Delivered> = faults::DELIVERED
            .lock()
            .unwrap()
            .iter()
            .filter(|d| d.mapping == MAPPING)
            .cloned()
            .collect();
        let mut seen = HashSet::new();
        let mut last: HashMap<&str, &str> = HashMap::new();
        for d in &delivered {
            for seq in &d.seqs {
                assert!(
                    seen.insert(seq.clone()),
                    "entry {seq} of {} delivered twice",
                    d.oid
                );
                if let Some(before) = last.insert(&d.oid, seq) {
                    assert!(
                        before < seq.as_str(),
                        "{}: {seq} delivered after {before}",
                        d.oid
                    );
                }
            }
        }
        assert_eq!(
            seen.len(),
            USERS * (ROUNDS + 1),
            "every change delivered once"
        );
        let by_node = |node: &str| delivered.iter().filter(|d| d.node == node).count();
        eprintln!(
            "deliveries: node-a {}, node-b {}",
            by_node("node-a"),
            by_node("node-b")
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dead_nodes_claim_holds_its_object_back_until_it_expires() {
        const MAPPING: &str = "dead_node_claim";
        let slapd = idm_testkit::Slapd::builder()
            .log_operations()
            .start()
            .unwrap();
        let (store, objects, dir) = ldap_sync_store(&slapd, MAPPING).await;
        store.set_sync_subscriptions(BTreeMap::from([(
            "user".to_string(),
            vec![MAPPING.to_string()],
        )]));
        objects
            .create(
                "test",
                "user",
                Some("held".into()),
                user_body("held", "Held"),
            )
            .await
            .unwrap();
        // A node claimed it and died: its claim is never renewed nor released.
        let ttl = Duration::from_secs(5);
        let due = store.due_entries(&now_timestamp(), 10).await.unwrap();
        // Before the claim: it expires no sooner than `ttl` after this.
        let claimed_at = std::time::Instant::now();
        let claimed = store
            .claim_objects("dead-node", ttl, &[&due[0]])
            .await
            .unwrap();
        assert_eq!(claimed.len(), 1);
        // Its create reached the directory; its recording never happened.
        let held_dn = format!("uid=held,{}", slapd.base_dn());
        ldap_add_person(&slapd, &held_dn, "held", "Stale").await;

        let (health, _) = Health::new().await;
        let sync = ImplicitSync::start_with(
            store.clone(),
            objects.clone(),
            dir.clone(),
            &health,
            Backoff::default(),
            Claims::new("live-node"),
        )
        .await
        .unwrap();
        objects
            .create(
                "test",
                "user",
                Some("free".into()),
                user_body("free", "Free"),
            )
            .await
            .unwrap();
        let mut free_seen = false;
        for _ in 0..300 {
            if ldap_sn(&slapd, "free").await.is_some() {
                free_seen = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(free_seen, "the live node delivers objects nobody holds");
        // What the directory held at some moment of the search, before this.
        let held_now = ldap_sn(&slapd, "held").await;
        if claimed_at.elapsed() < ttl {
            assert_eq!(
                held_now.as_deref(),
                Some("Stale"),
                "the dead node's object waits for its claim to expire"
            );
        }
        let mut held_seen = false;
        for _ in 0..600 {
            if ldap_sn(&slapd, "held").await.as_deref() == Some("Held") {
                held_seen = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            held_seen,
            "the live node delivers it once the claim expired"
        );
        assert!(
            claimed_at.elapsed() >= ttl,
            "delivered {:?} after the claim of {ttl:?}",
            claimed_at.elapsed()
        );
        assert!(drained(&store, MAPPING).await);
        // The batch is noted delivered just after its recording commits.
        let delivered = || -> Vec<faults::Delivered> {
            faults::DELIVERED
                .lock()
                .unwrap()
                .iter()
                .filter(|d| d.mapping == MAPPING)
                .cloned()
                .collect()
        };
        for _ in 0..100 {
            if delivered().iter().any(|d| d.oid == "held") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let delivered = delivered();
        assert!(delivered.iter().all(|d| d.node == "live-node"));
        assert_eq!(
            delivered.iter().filter(|d| d.oid == "held").count(),
            1,
            "{delivered:?}"
        );
        // The live node read the entry the dead one may have made before
        // creating it: no second ADD, however the mapping creates.
        let adds = slapd.operations("ADD");
        assert_eq!(
            adds.iter()
                .filter(|dn| dn.eq_ignore_ascii_case(&held_dn))
                .count(),
            1,
            "{adds:?}"
        );
        sync.shutdown(Duration::from_secs(5)).await;
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dispatcher_that_panics_is_restarted_and_delivers_what_was_queued() {
        use serde_json::json;
        let slapd = idm_testkit::Slapd::start().unwrap();
        let store = Store::open("mem://").await.unwrap();
        let dir = std::env::temp_dir().join(format!("idm-outbox-{}", uuid::Uuid::new_v4()));
        let secrets =
            crate::secrets::SecretBox::load_or_create(&dir.join("idm.key"), None).unwrap();
        let objects = ManagedObjects::new(
            Arc::new(crate::managed::ManagedSchema::builtin().unwrap()),
            store.clone(),
            Arc::new(secrets),
        );
        let connector = json!({
            "connectorType": "ldap", "url": slapd.url(), "baseDn": slapd.base_dn(),
            "bindDn": slapd.admin_dn(), "bindPassword": slapd.admin_password(),
            "startTls": false, "timeoutSeconds": 10,
            "objectTypes": {"account": {"namingAttribute": "uid",
                "objectClasses": ["top", "person", "organizationalPerson", "inetOrgPerson"]}}
        });
        let mapping = json!({
            "name": faults::PANICS_ONCE,
            "source": "managed/user", "target": "system/ldap/account", "enableSync": true,
            "properties": [{"source": "userName", "target": "uid"},
                           {"source": "userName", "target": "cn"},
                           {"source": "sn", "target": "sn"}],
            "policies": [{"situation": "MISSING", "action": "CREATE"}]
        });
        for (kind, name, body) in [
            ("connector", "ldap", connector),
            ("mapping", faults::PANICS_ONCE, mapping),
        ] {
            store
                .put_config(&crate::store::ConfigDocument {
                    kind: kind.into(),
                    name: name.into(),
                    body: body.as_object().cloned().unwrap(),
                    source: "test".into(),
                })
                .await
                .unwrap();
        }
        let (health, _) = Health::new().await;
        // Long enough to see idm.outbox NOT_SERVING while the dispatcher is down.
        let backoff = Backoff {
            first: Duration::from_secs(2),
            ..Backoff::default()
        };
        faults::PANIC_ON_NEXT_BATCH.store(true, std::sync::atomic::Ordering::SeqCst);
        let sync = ImplicitSync::start_with(
            store.clone(),
            objects.clone(),
            dir.clone(),
            &health,
            backoff,
            Claims::new("test-node"),
        )
        .await
        .unwrap();
        let mut changes = health.watch();
        objects
            .create(
                "test",
                "user",
                Some("1".into()),
                json!({"userName": "jdoe", "sn": "Doe"})
                    .as_object()
                    .cloned()
                    .unwrap(),
            )
            .await
            .unwrap();
        let patience = Duration::from_secs(60);
        tokio::time::timeout(patience, changes.wait_for(|c| !c[health::OUTBOX]))
            .await
            .expect("idm.outbox NOT_SERVING after the dispatcher died")
            .unwrap();
        assert_eq!(
            health.check(health::OUTBOX).await.unwrap(),
            tonic_health::ServingStatus::NotServing,
            "Check names the component down"
        );
        assert!(!health.is_up(""), "overall is down with the dispatcher");
        assert!(
            !ldap_entry(&slapd, "jdoe").await,
            "nothing was delivered by the dispatcher that died"
        );
        tokio::time::timeout(patience, changes.wait_for(|c| c[health::OUTBOX]))
            .await
            .expect("idm.outbox SERVING again")
            .unwrap();
        // The restarted dispatcher delivers the entry the dead one had in hand.
        let mut delivered = false;
        for _ in 0..300 {
            if ldap_entry(&slapd, "jdoe").await {
                delivered = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(delivered, "the queued change reached the directory");
        sync.shutdown(Duration::from_secs(5)).await;
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_mapping_unknown_while_the_node_is_behind_the_stored_conf_is_not_given_up() {
        use serde_json::json;
        let store = Store::open("mem://").await.unwrap();
        let dir = std::env::temp_dir().join(format!("idm-outbox-{}", uuid::Uuid::new_v4()));
        let secrets =
            crate::secrets::SecretBox::load_or_create(&dir.join("idm.key"), None).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        let objects = ManagedObjects::new(
            Arc::new(crate::managed::ManagedSchema::builtin().unwrap()),
            store.clone(),
            Arc::new(secrets),
        );
        let mapping = json!({"name": "users", "source": "managed/user",
            "target": "system/ldap/account", "enableSync": true,
            "properties": [{"source": "userName", "target": "uid"}]});
        store
            .put_config(&crate::store::ConfigDocument {
                kind: "mapping".into(),
                name: "users".into(),
                body: mapping.as_object().cloned().unwrap(),
                source: "api".into(),
            })
            .await
            .unwrap();
        let version = store.conf_version().await.unwrap();
        // Node A follows the new mapping; its write queues an entry.
        store.set_sync_subscriptions_at(
            BTreeMap::from([("user".into(), vec!["users".into()])]),
            version,
        );
        objects
            .create(
                "test",
                "user",
                Some("u".into()),
                json!({"userName": "u"}).as_object().cloned().unwrap(),
            )
            .await
            .unwrap();
        let mut entry = store.due_entries("9999", 10).await.unwrap().remove(0);
        // Its last attempt before a refusal gives up.
        entry.attempts = MAX_ATTEMPTS - 1;
        // Node B's dispatcher does not know the mapping.
        let b = store.another_node();
        let (health, _) = Health::new().await;
        let mut dispatcher = Dispatcher {
            claims: Claims::sole("node-b"),
            held: Held::default(),
            held_elsewhere: false,
            store: b.clone(),
            objects: objects.clone(),
            conf_dir: PathBuf::from("."),
            mappings: Arc::new(Vec::new()),
            provisioners: HashMap::new(),
            queued: VecDeque::new(),
            unfinished: HashSet::new(),
            health,
        };
        let failed = |summary: Vec<crate::store::QueueSummary>| {
            summary.iter().map(|s| s.failed).sum::<u64>()
        };
        // Behind the store: retried as an outage.
        b.set_sync_subscriptions_at(BTreeMap::new(), version - 1);
        let batch = vec![("u".to_string(), vec![entry.clone()])];
        dispatcher
            .prepare("users", batch.clone())
            .await
            .work
            .await
            .work
            .await;
        assert_eq!(failed(store.queue_summary().await.unwrap()), 0);
        // Up to date: a mapping it does not know is a refusal, given up.
        b.set_sync_subscriptions_at(BTreeMap::new(), version);
        dispatcher
            .prepare("users", batch)
            .await
            .work
            .await
            .work
            .await;
        assert_eq!(failed(store.queue_summary().await.unwrap()), 1);
    }

    #[test]
    fn outages_back_off_without_giving_up_and_refusals_give_up() {
        let first = reschedule(&entry(0), "down", true);
        assert_eq!(first.attempts, 1);
        assert!(wait_of(&first) <= Duration::from_millis(1300), "{first:?}");
        let later = reschedule(&entry(4), "down", true);
        assert!(wait_of(&later) >= Duration::from_secs(15), "{later:?}");
        let capped = reschedule(&entry(40), "down", true);
        assert!(!capped.failed, "an outage never gives up");
        assert!(wait_of(&capped) <= MAX_BACKOFF + MAX_BACKOFF / 4 + Duration::from_secs(1));

        let refused = reschedule(&entry(MAX_ATTEMPTS - 2), "objectClassViolation", false);
        assert!(!refused.failed);
        let given_up = reschedule(&entry(MAX_ATTEMPTS - 1), "objectClassViolation", false);
        assert!(given_up.failed);
        assert_eq!(given_up.error, "objectClassViolation");
    }
}
