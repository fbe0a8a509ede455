//! The implicit-sync outbox. A managed write commits, in its own
//! transaction, one entry per `enableSync` mapping whose source is the
//! written type ([`SyncSubscriptions`]); delivery workers (`sync/outbox.rs`)
//! read due entries, bring the target in line and only then delete them.
//!
//! Record id: `outbox:[mapping, type, oid, seq]` with `seq` a UUIDv7, so an
//! object's entries sit together in seq order: once a delivery brought the
//! target in line with the object, one range delete drops every entry of that
//! object up to the last one the delivery saw (failed ones included). Entries
//! written meanwhile stay and are delivered next.
//!
//! Several nodes share one outbox: a node claims the objects of a batch
//! (`outbox_claim:[mapping, type, oid]`, its node and an `until` on the
//! store's clock) before delivering them, renews the claims while it
//! delivers and releases them once the batch is recorded, so an object's
//! entries are delivered by one node at a time, in order. Other nodes' due
//! reads leave claimed objects out; a dead node's claims expire and another
//! node takes its objects over.

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError, RwLock};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::links::{DELETE_LINKS, INSERT_LINKS, Link, MOVE_LINKS, link_rows};
use super::objects::take_json;
use super::query::CompiledFilter;
use super::{Store, StoreError, bind_all, decode_rows, now_timestamp};

pub const PENDING: &str = "pending";
pub const FAILED: &str = "failed";

/// Which `enableSync` mappings take each managed type's writes:
/// type → mapping names, and the conf version they were read at. Shared by
/// every clone of a [`Store`].
#[derive(Clone, Default)]
pub struct SyncSubscriptions(Arc<RwLock<Versioned>>);

/// Type → mapping names; swapped whole, so a write sees one consistent set.
pub(super) type Subscribed = Arc<BTreeMap<String, Vec<String>>>;

/// The subscriptions and the conf version (`meta:conf`) they were computed
/// from; `None` when no one follows the stored conf (benches, tests), and
/// writes then check nothing.
#[derive(Clone, Default)]
pub(super) struct Versioned {
    pub(super) by_type: Subscribed,
    pub(super) version: Option<u64>,
}

/// How a store re-reads the conf when a write found its subscriptions stale
/// (registered by implicit sync: it owns the mappings).
pub type ConfReload =
    Arc<dyn Fn() -> futures::future::BoxFuture<'static, Result<(), StoreError>> + Send + Sync>;

impl SyncSubscriptions {
    pub fn set(&self, by_type: BTreeMap<String, Vec<String>>) {
        self.set_versioned(by_type, None);
    }

    pub fn set_versioned(&self, by_type: BTreeMap<String, Vec<String>>, version: Option<u64>) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = Versioned {
            by_type: Arc::new(by_type),
            version,
        };
    }

    pub(super) fn snapshot(&self) -> Subscribed {
        Arc::clone(
            &self
                .0
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .by_type,
        )
    }

    pub(super) fn versioned(&self) -> Versioned {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// One change of one object waiting to reach one mapping's target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxEntry {
    pub seq: String,
    pub mapping: String,
    #[serde(rename = "type")]
    pub type_name: String,
    pub oid: String,
    /// `create`, `update` or `delete`.
    pub operation: String,
    /// The object's revision after the write (0 after a delete).
    pub rev: i64,
    /// The attributes of a deleted object, for mappings that need them to
    /// find its target.
    #[serde(default)]
    pub snapshot: Option<Map<String, Value>>,
    pub created: String,
    pub due: String,
    pub attempts: u32,
    pub state: String,
    #[serde(default)]
    pub last_error: Option<String>,
}

impl OutboxEntry {
    /// `managed/<type>/<id>`.
    pub fn object(&self) -> String {
        super::object_ref(&self.type_name, &self.oid)
    }

    fn key(&self) -> Value {
        json!([self.mapping, self.type_name, self.oid, self.seq])
    }

    /// The claim key of the entry's object.
    pub fn claim_key(&self) -> ClaimKey {
        (
            self.mapping.clone(),
            self.type_name.clone(),
            self.oid.clone(),
        )
    }
}

/// An object's claim key, `[mapping, type, oid]`.
pub type ClaimKey = (String, String, String);

/// An object a node claimed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub key: ClaimKey,
    /// An earlier claim on the object was never released: its node died
    /// (or its dispatcher, or the release failed) with a delivery that may
    /// have reached the target without being recorded.
    pub unfinished: bool,
}

/// Due entries as a node sees them: those of objects no other node holds.
#[derive(Debug, Default)]
pub struct DueEntries {
    pub entries: Vec<OutboxEntry>,
    /// Due entries left out because another node holds their object.
    pub held_elsewhere: usize,
}

/// A delivery that did not succeed: when to try again, or that it gave up.
#[derive(Debug, Clone)]
pub struct Reschedule {
    pub entry: OutboxEntry,
    pub attempts: u32,
    pub due: String,
    pub failed: bool,
    pub error: String,
}

/// Pending and failed entries of one mapping.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueueSummary {
    pub mapping: String,
    pub pending: u64,
    pub failed: u64,
    pub oldest_pending: Option<String>,
    /// When the oldest failed entry was written.
    pub oldest_failed: Option<String>,
    pub last_error: Option<String>,
}

/// The outbox rows a write of one object adds, one per subscribed mapping.
pub(super) fn outbox_rows(
    mappings: &[String],
    type_name: &str,
    oid: &str,
    operation: &str,
    rev: i64,
    snapshot: Option<&Map<String, Value>>,
    now: &str,
) -> Vec<Value> {
    mappings
        .iter()
        .map(|mapping| {
            let seq = uuid::Uuid::now_v7().to_string();
            json!({
                "id": [mapping, type_name, oid, seq], "seq": seq, "mapping": mapping,
                "type": type_name, "oid": oid, "object": super::object_ref(type_name, oid),
                "operation": operation, "rev": rev,
                "snapshot": snapshot, "created": now, "due": now, "attempts": 0,
                "state": PENDING,
            })
        })
        .collect()
}

/// Deletes, per range bound as `$ranges`, an object's entries up to a seq.
/// Deletes the delivered entries bound as `$settled` (record keys) and, for
/// objects with parked (failed) entries, every entry up to the newest
/// delivered one (`$newest`): the delivery superseded them.
const SETTLE: &str = "DELETE array::map($settled, |$k| type::record('outbox', $k)) RETURN NONE; \
     FOR $r IN array::filter($newest, |$r| record::exists(type::record('outbox_parked', [$r.m, $r.t, $r.o]))) { \
       DELETE outbox:[$r.m, $r.t, $r.o, NONE]..=[$r.m, $r.t, $r.o, $r.s] RETURN NONE; \
       DELETE type::record('outbox_parked', [$r.m, $r.t, $r.o]) RETURN NONE; \
     };";

/// `$settled` and `$newest` for [`SETTLE`].
fn settle_params(delivered: &[&OutboxEntry]) -> (Vec<Value>, Vec<Value>) {
    let mut newest: BTreeMap<(&str, &str, &str), &str> = BTreeMap::new();
    for e in delivered {
        let seq = newest
            .entry((&e.mapping, &e.type_name, &e.oid))
            .or_insert(&e.seq);
        if *seq < e.seq.as_str() {
            *seq = &e.seq;
        }
    }
    (
        delivered.iter().map(|e| e.key()).collect(),
        newest
            .into_iter()
            .map(|((m, t, o), s)| json!({ "m": m, "t": t, "o": o, "s": s }))
            .collect(),
    )
}

const ENTRY_COLUMNS: &str =
    "seq, mapping, type, oid, operation, rev, snapshot, created, due, attempts, state, last_error";

impl Store {
    /// Sets which mappings receive which types' writes; writes from now on follow it.
    pub fn set_sync_subscriptions(&self, by_type: BTreeMap<String, Vec<String>>) {
        self.sync.set(by_type);
    }

    /// [`Store::set_sync_subscriptions`] as computed from the conf at
    /// `version`: from now on every managed write checks, in its own
    /// transaction, that the stored conf version is still `version`; if it
    /// moved, the write is undone, `reload` (registered with
    /// [`Store::on_conf_stale`]) runs and the write is made again with the
    /// new subscriptions.
    pub fn set_sync_subscriptions_at(&self, by_type: BTreeMap<String, Vec<String>>, version: u64) {
        self.sync.set_versioned(by_type, Some(version));
    }

    /// The conf version the current subscriptions were read at, if any.
    pub fn sync_subscriptions_version(&self) -> Option<u64> {
        self.sync.versioned().version
    }

    /// What a write that found its subscriptions stale runs before it is made again.
    pub fn on_conf_stale(&self, reload: ConfReload) {
        *self
            .conf_reload
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(reload);
    }

    /// Runs the registered reload (none registered: the subscriptions are
    /// unversioned and nothing is stale).
    pub(super) async fn reload_conf(&self) -> Result<(), StoreError> {
        let reload = self
            .conf_reload
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        match reload {
            Some(reload) => reload().await,
            None => {
                self.sync
                    .set_versioned((*self.sync.snapshot()).clone(), None);
                Ok(())
            }
        }
    }

    /// Woken after a write committed outbox entries.
    pub fn outbox_signal(&self) -> Arc<tokio::sync::Notify> {
        Arc::clone(&self.outbox_signal)
    }

    pub(super) fn announce_outbox(&self) {
        self.outbox_signal.notify_one();
    }

    /// Adds entries outside a managed write (a target rename that other
    /// objects' targets refer to), and wakes the workers.
    pub async fn enqueue(
        &self,
        mapping: &str,
        type_name: &str,
        oids: &[String],
        operation: &str,
    ) -> Result<(), StoreError> {
        if oids.is_empty() {
            return Ok(());
        }
        let now = now_timestamp();
        let rows: Vec<Value> = oids
            .iter()
            .flat_map(|oid| {
                outbox_rows(
                    &[mapping.to_string()],
                    type_name,
                    oid,
                    operation,
                    0,
                    None,
                    &now,
                )
            })
            .collect();
        self.execute(
            "INSERT INTO outbox $rows RETURN NONE",
            json!({ "rows": rows }),
        )
        .await?;
        self.announce_outbox();
        Ok(())
    }

    /// Pending entries due by `now`, oldest first.
    pub async fn due_entries(
        &self,
        now: &str,
        limit: usize,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        self.query_all(
            &format!(
                "SELECT {ENTRY_COLUMNS} FROM outbox WHERE state = $pending AND due <= $now \
                 ORDER BY seq LIMIT $limit"
            ),
            json!({ "pending": PENDING, "now": now, "limit": limit }),
        )
        .await
    }

    /// [`Store::due_entries`] as `node` sees them: entries of objects another
    /// node holds a live claim on are left out (one read of the live claims
    /// with the entries, in the same round trip).
    pub async fn due_entries_for(
        &self,
        node: &str,
        now: &str,
        limit: usize,
    ) -> Result<DueEntries, StoreError> {
        let _timer = crate::metrics::store_timer(crate::metrics::StoreOp::QueryAll);
        let mut response = bind_all(
            self.db.shared().query(format!(
                "SELECT {ENTRY_COLUMNS} FROM outbox WHERE state = $pending AND due <= $now \
                 ORDER BY seq LIMIT $limit; \
                 SELECT VALUE record::id(id) FROM outbox_claim WHERE until >= time::now() AND node != $node;"
            )),
            json!({ "pending": PENDING, "now": now, "limit": limit, "node": node }),
        )
        .await?;
        let entries: Vec<OutboxEntry> = decode_rows(take_json(&mut response, 0)?)?;
        let held: Vec<ClaimKey> = decode_rows(take_json(&mut response, 1)?)?;
        if held.is_empty() {
            return Ok(DueEntries {
                entries,
                held_elsewhere: 0,
            });
        }
        let held: std::collections::HashSet<ClaimKey> = held.into_iter().collect();
        let before = entries.len();
        let entries: Vec<OutboxEntry> = entries
            .into_iter()
            .filter(|e| !held.contains(&e.claim_key()))
            .collect();
        Ok(DueEntries {
            held_elsewhere: before - entries.len(),
            entries,
        })
    }

    /// Claims for `node`, until `ttl` from now on the store's clock, the
    /// objects whose oldest read entries are `firsts`, in one transaction;
    /// returns the objects claimed. An object is skipped while another node
    /// holds a live claim on it, and when its oldest entry is no longer as
    /// it was read (delivered, or rescheduled, meanwhile: the read is stale).
    /// A claim taken over from an expired one, or from this node's own
    /// (a restarted dispatcher), is [`Claim::unfinished`]: released claims
    /// are deleted, so one still there was left by a delivery that stopped.
    pub async fn claim_objects(
        &self,
        node: &str,
        ttl: std::time::Duration,
        firsts: &[&OutboxEntry],
    ) -> Result<Vec<Claim>, StoreError> {
        if firsts.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<Value> = firsts.iter().map(|e| e.key()).collect();
        // Every first entry was due when read: one that is not due by the
        // latest of their times was rescheduled since (or retried, or
        // delivered and gone): the read is stale for that object.
        let read = firsts
            .iter()
            .map(|e| e.due.as_str())
            .max()
            .unwrap_or_default();
        #[derive(Deserialize)]
        struct Claimed {
            key: ClaimKey,
            node: String,
            unfinished: bool,
        }
        let _timer = crate::metrics::store_timer(crate::metrics::StoreOp::Execute);
        let response = bind_all(
            self.db.shared().query(
                "BEGIN; \
                 LET $now = time::now(); \
                 LET $until = $now + <duration> $ttl; \
                 LET $live = (SELECT VALUE array::slice(record::id(id), 0, 3) \
                   FROM array::map($firsts, |$k| type::record('outbox', $k)) \
                   WHERE state = $pending AND due <= $read); \
                 INSERT INTO outbox_claim \
                   array::map($live, |$k| { id: type::record('outbox_claim', $k), node: $node, until: $until, unfinished: false }) \
                   ON DUPLICATE KEY UPDATE \
                     unfinished = IF until < $now OR node = $node { true } ELSE { unfinished }, \
                     node = IF until < $now OR node = $node { $node } ELSE { node }, \
                     until = IF until < $now OR node = $node { $until } ELSE { until } \
                   RETURN record::id(id) AS key, node, unfinished = true AS unfinished; \
                 COMMIT;",
            ),
            json!({
                "firsts": keys, "node": node, "pending": PENDING, "read": read,
                "ttl": format!("{}ms", ttl.as_millis().max(1)),
            }),
        )
        .await;
        // The INSERT's result, before COMMIT's. Another node claiming some of
        // the same objects at the same moment makes one of the two commits
        // conflict: that node claimed nothing now, and its next read leaves
        // the other's objects out.
        let claimed = response.map_err(StoreError::from).and_then(|mut response| {
            let at = response.num_statements().saturating_sub(2);
            decode_rows::<Claimed>(take_json(&mut response, at)?)
        });
        let claimed = match claimed {
            Err(StoreError::Query(message))
                if message.contains("failed transaction") || message.contains("conflict") =>
            {
                tracing::debug!(
                    objects = firsts.len(),
                    "outbox claim conflicted with another node's; claimed nothing"
                );
                return Ok(Vec::new());
            }
            other => other?,
        };
        Ok(claimed
            .into_iter()
            .filter(|c| c.node == node)
            .map(|c| Claim {
                key: c.key,
                unfinished: c.unfinished,
            })
            .collect())
    }

    /// Extends `node`'s claims on these objects to `ttl` from now (store clock).
    pub async fn renew_claims(
        &self,
        node: &str,
        ttl: std::time::Duration,
        keys: &[ClaimKey],
    ) -> Result<(), StoreError> {
        if keys.is_empty() {
            return Ok(());
        }
        self.execute(
            "UPDATE array::map($keys, |$k| type::record('outbox_claim', $k)) \
             SET until = time::now() + <duration> $ttl WHERE node = $node RETURN NONE",
            json!({
                "keys": keys, "node": node,
                "ttl": format!("{}ms", ttl.as_millis().max(1)),
            }),
        )
        .await
    }

    /// Drops `node`'s claims on these objects (the batch is recorded).
    pub async fn release_claims(&self, node: &str, keys: &[ClaimKey]) -> Result<(), StoreError> {
        if keys.is_empty() {
            return Ok(());
        }
        self.execute(
            "DELETE array::map($keys, |$k| type::record('outbox_claim', $k)) \
             WHERE node = $node RETURN NONE",
            json!({ "keys": keys, "node": node }),
        )
        .await
    }

    /// When the next pending entry falls due, if any is waiting.
    pub async fn next_due(&self) -> Result<Option<String>, StoreError> {
        let due: Vec<String> = self
            .query_all(
                "SELECT VALUE due FROM outbox WHERE state = $pending ORDER BY due LIMIT 1",
                json!({ "pending": PENDING }),
            )
            .await?;
        Ok(due.into_iter().next())
    }

    /// Records a delivery in one transaction: the links it made (`new`:
    /// their sources had none, so plain inserts) or moved, the links it
    /// removed, and the outbox entries it settled (every entry the delivery
    /// read: the target now matches the object as of the newest of them;
    /// parked, failed entries of those objects up to it go too).
    pub async fn record_delivery(
        &self,
        mapping: &str,
        new: &[Link],
        moved: &[Link],
        removed: &[String],
        settled: &[&OutboxEntry],
    ) -> Result<(), StoreError> {
        let mut sql = String::from("BEGIN;");
        if !new.is_empty() {
            sql.push_str(INSERT_LINKS);
        }
        if !moved.is_empty() {
            sql.push_str(MOVE_LINKS);
        }
        if !removed.is_empty() {
            sql.push_str(DELETE_LINKS);
        }
        if !settled.is_empty() {
            sql.push_str(SETTLE);
        }
        if sql.len() == "BEGIN;".len() {
            return Ok(());
        }
        sql.push_str("COMMIT;");
        let (links, reverse) = link_rows(new);
        let (moved, moved_reverse) = link_rows(moved);
        let (settled, newest) = settle_params(settled);
        self.execute(
            &sql,
            json!({
                "links": links, "reverse": reverse, "moved": moved, "moved_reverse": moved_reverse,
                "mapping": mapping, "sources": removed, "settled": settled, "newest": newest,
            }),
        )
        .await
    }

    /// Records failed deliveries: their attempt count, next due time and
    /// error, or that they gave up (`failed`).
    pub async fn reschedule_entries(&self, failures: &[Reschedule]) -> Result<(), StoreError> {
        if failures.is_empty() {
            return Ok(());
        }
        let rows: Vec<Value> = failures
            .iter()
            .map(|f| {
                json!({
                    "id": f.entry.key(), "attempts": f.attempts, "due": f.due,
                    "state": if f.failed { FAILED } else { PENDING }, "error": f.error,
                    "parked": [f.entry.mapping, f.entry.type_name, f.entry.oid],
                })
            })
            .collect();
        self.execute(
            "BEGIN; FOR $r IN $rows { \
               UPDATE type::record('outbox', $r.id) SET attempts = $r.attempts, due = $r.due, \
                 state = $r.state, last_error = $r.error RETURN NONE; \
               IF $r.state = $failed { UPSERT type::record('outbox_parked', $r.parked) RETURN NONE; }; \
             }; COMMIT;",
            json!({ "rows": rows, "failed": FAILED }),
        )
        .await
    }

    /// Pending and failed entries per mapping, with the oldest pending
    /// entry's time and the latest error.
    pub async fn queue_summary(&self) -> Result<Vec<QueueSummary>, StoreError> {
        #[derive(Deserialize)]
        struct LastError {
            mapping: String,
            last_error: String,
        }
        let mut queues = self.queue_counts().await?;
        let errors: Vec<LastError> = self
            .query_all(
                "SELECT mapping, last_error, due FROM outbox WHERE last_error != NONE \
                 ORDER BY due DESC",
                Value::Null,
            )
            .await?;
        for error in errors {
            if let Some(summary) = queues.iter_mut().find(|q| q.mapping == error.mapping)
                && summary.last_error.is_none()
            {
                summary.last_error = Some(error.last_error);
            }
        }
        Ok(queues)
    }

    /// [`Store::queue_summary`] without the latest errors: one grouped
    /// count, what the metrics sampler reads every few seconds.
    pub async fn queue_counts(&self) -> Result<Vec<QueueSummary>, StoreError> {
        #[derive(Deserialize)]
        struct Group {
            mapping: String,
            state: String,
            n: u64,
            oldest: Option<String>,
        }
        let _timer = crate::metrics::store_timer(crate::metrics::StoreOp::OutboxSummary);
        let mut response = bind_all(
            self.db.shared().query(
                "SELECT mapping, state, count() AS n, array::min(array::group(created)) AS oldest FROM outbox \
                 GROUP BY mapping, state",
            ),
            Value::Null,
        )
        .await?;
        let groups: Vec<Group> = decode_rows(take_json(&mut response, 0)?)?;
        let mut by_mapping: BTreeMap<String, QueueSummary> = BTreeMap::new();
        for group in groups {
            let summary = by_mapping
                .entry(group.mapping.clone())
                .or_insert_with(|| QueueSummary {
                    mapping: group.mapping.clone(),
                    ..QueueSummary::default()
                });
            if group.state == FAILED {
                summary.failed += group.n;
                summary.oldest_failed = group.oldest;
            } else {
                summary.pending += group.n;
                summary.oldest_pending = group.oldest;
            }
        }
        Ok(by_mapping.into_values().collect())
    }

    /// One page of entries matching a compiled filter, oldest first.
    pub async fn list_entries(
        &self,
        filter: &CompiledFilter,
        limit: usize,
        offset: usize,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        let mut params = filter.params.clone();
        params.insert("limit".into(), json!(limit));
        params.insert("start".into(), json!(offset));
        self.query_all(
            &format!(
                "SELECT {ENTRY_COLUMNS} FROM outbox WHERE {} ORDER BY seq LIMIT $limit START $start",
                filter.condition()
            ),
            Value::Object(params),
        )
        .await
    }

    /// Makes failed entries of a mapping (all, or those with these seqs) due now.
    pub async fn retry_entries(&self, mapping: &str, seqs: &[String]) -> Result<u64, StoreError> {
        let retried: Option<u64> = self
            .query_one(
                "RETURN array::len((UPDATE outbox SET state = $pending, attempts = 0, due = $now \
                   WHERE mapping = $mapping AND state = $failed AND ($all OR seq IN $seqs) \
                   RETURN VALUE seq))",
                json!({
                    "pending": PENDING, "failed": FAILED, "now": now_timestamp(),
                    "mapping": mapping, "all": seqs.is_empty(), "seqs": seqs,
                }),
            )
            .await?;
        let retried = retried.unwrap_or(0);
        if retried > 0 {
            self.announce_outbox();
        }
        Ok(retried)
    }

    /// Deletes entries of a mapping: every failed one, or those with these seqs.
    pub async fn discard_entries(&self, mapping: &str, seqs: &[String]) -> Result<u64, StoreError> {
        let discarded: Option<u64> = self
            .query_one(
                "RETURN array::len((DELETE outbox WHERE mapping = $mapping \
                   AND (($all AND state = $failed) OR seq IN $seqs) RETURN BEFORE))",
                json!({ "mapping": mapping, "all": seqs.is_empty(), "seqs": seqs, "failed": FAILED }),
            )
            .await?;
        Ok(discarded.unwrap_or(0))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::store::{NewObject, ObjectChange, Write};

    fn user(oid: &str, name: &str) -> NewObject {
        NewObject {
            oid: oid.into(),
            write: Write {
                data: json!({ "userName": name }).as_object().cloned().unwrap(),
                changed: vec!["userName".into()],
                ..Write::default()
            },
        }
    }

    /// A store whose users feed the `toLdap` outbox.
    async fn subscribed_store() -> Store {
        let store = Store::open("mem://").await.unwrap();
        store.set_sync_subscriptions(BTreeMap::from([(
            "user".to_string(),
            vec!["toLdap".to_string()],
        )]));
        store
    }

    async fn rename(store: &Store, oid: &str, name: &str) {
        store
            .update_object("test", "patch", "user", oid, &[], |current, _| {
                let mut data = current.data.clone();
                data.insert("userName".into(), json!(name));
                Ok::<_, StoreError>(ObjectChange::Write(Write {
                    data,
                    changed: vec!["userName".into()],
                    ..Write::default()
                }))
            })
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn managed_writes_feed_the_outbox_of_subscribed_mappings_only() {
        let store = Store::open("mem://").await.unwrap();
        store
            .create_objects("test", "user", &[user("before", "b")], &[])
            .await
            .unwrap();
        assert!(
            store
                .due_entries(&now_timestamp(), 10)
                .await
                .unwrap()
                .is_empty()
        );

        store.set_sync_subscriptions(BTreeMap::from([(
            "user".to_string(),
            vec!["toLdap".to_string(), "toApp".to_string()],
        )]));
        store
            .create_objects("test", "user", &[user("a", "a"), user("b", "bb")], &[])
            .await
            .unwrap();
        rename(&store, "a", "a2").await;
        store
            .delete_object("test", "user", "b", &[], |_| Ok::<_, StoreError>(()))
            .await
            .unwrap();
        store
            .create_objects("test", "group", &[user("g", "g")], &[])
            .await
            .unwrap();

        let due = store.due_entries(&now_timestamp(), 100).await.unwrap();
        let seen: Vec<(&str, &str, &str)> = due
            .iter()
            .filter(|e| e.mapping == "toLdap")
            .map(|e| (e.oid.as_str(), e.operation.as_str(), e.state.as_str()))
            .collect();
        assert_eq!(
            seen,
            [
                ("a", "create", PENDING),
                ("b", "create", PENDING),
                ("a", "update", PENDING),
                ("b", "delete", PENDING)
            ]
        );
        assert_eq!(due.len(), 8, "one entry per mapping per write");
        let deleted = due.iter().find(|e| e.operation == "delete").unwrap();
        assert_eq!(deleted.snapshot.as_ref().unwrap()["userName"], "bb");

        // Delivering a settles the entries the delivery read.
        let of_a: Vec<&OutboxEntry> = due
            .iter()
            .filter(|e| e.mapping == "toLdap" && e.oid == "a")
            .collect();
        store
            .record_delivery("toLdap", &[], &[], &[], &of_a)
            .await
            .unwrap();
        rename(&store, "a", "a3").await;
        let left: Vec<(String, String, String)> = store
            .due_entries(&now_timestamp(), 100)
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.mapping == "toLdap")
            .map(|e| (e.oid, e.operation, e.state))
            .collect();
        assert_eq!(
            left,
            [
                ("b".into(), "create".into(), PENDING.into()),
                ("b".into(), "delete".into(), PENDING.into()),
                ("a".into(), "update".into(), PENDING.into())
            ],
            "a write after the delivery stays"
        );
    }

    #[tokio::test]
    async fn failures_wait_give_up_and_can_be_retried_or_discarded() {
        let store = subscribed_store().await;
        store
            .create_objects("test", "user", &[user("a", "a"), user("b", "b")], &[])
            .await
            .unwrap();
        let due = store.due_entries(&now_timestamp(), 10).await.unwrap();
        let later = "9999-01-01T00:00:00.000000Z".to_string();
        store
            .reschedule_entries(&[
                Reschedule {
                    entry: due[0].clone(),
                    attempts: 1,
                    due: later.clone(),
                    failed: false,
                    error: "connection refused".into(),
                },
                Reschedule {
                    entry: due[1].clone(),
                    attempts: 8,
                    due: later,
                    failed: true,
                    error: "objectClassViolation".into(),
                },
            ])
            .await
            .unwrap();
        assert!(
            store
                .due_entries(&now_timestamp(), 10)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            store.next_due().await.unwrap().as_deref(),
            Some("9999-01-01T00:00:00.000000Z")
        );
        let summary = store.queue_summary().await.unwrap();
        assert_eq!(summary.len(), 1);
        assert_eq!((summary[0].pending, summary[0].failed), (1, 1));
        assert!(summary[0].oldest_pending.is_some());
        assert!(summary[0].oldest_failed.is_some());
        assert!(summary[0].last_error.is_some());

        assert_eq!(store.retry_entries("other", &[]).await.unwrap(), 0);
        assert_eq!(store.retry_entries("toLdap", &[]).await.unwrap(), 1);
        let due_again = store.due_entries(&now_timestamp(), 10).await.unwrap();
        assert_eq!(due_again.len(), 1);
        assert_eq!((due_again[0].oid.as_str(), due_again[0].attempts), ("b", 0));

        assert_eq!(
            store
                .discard_entries("toLdap", &[due[0].seq.clone()])
                .await
                .unwrap(),
            1
        );
        assert_eq!(store.queue_summary().await.unwrap()[0].pending, 1);
    }

    #[tokio::test]
    async fn a_later_delivery_settles_the_objects_failed_entries() {
        let store = subscribed_store().await;
        store
            .create_objects("test", "user", &[user("a", "a"), user("b", "b")], &[])
            .await
            .unwrap();
        let first = store.due_entries(&now_timestamp(), 10).await.unwrap();
        let failed = first.iter().map(|e| Reschedule {
            entry: e.clone(),
            attempts: 3,
            due: now_timestamp(),
            failed: true,
            error: "objectClassViolation".into(),
        });
        store
            .reschedule_entries(&failed.collect::<Vec<_>>())
            .await
            .unwrap();
        rename(&store, "a", "a2").await;
        let second = store.due_entries(&now_timestamp(), 10).await.unwrap();
        assert_eq!(second.len(), 1);
        store
            .record_delivery("toLdap", &[], &[], &[], &[&second[0]])
            .await
            .unwrap();

        let left = store.queue_summary().await.unwrap();
        assert_eq!(
            (left[0].pending, left[0].failed),
            (0, 1),
            "a's parked create went with its update; b's stays"
        );
    }

    /// The objects claimed, and whether each was left unfinished before.
    fn keys_of(claimed: &[Claim]) -> Vec<(&str, bool)> {
        let mut oids: Vec<(&str, bool)> = claimed
            .iter()
            .map(|c| (c.key.2.as_str(), c.unfinished))
            .collect();
        oids.sort_unstable();
        oids
    }

    #[tokio::test]
    async fn an_object_is_claimed_by_one_node_at_a_time_and_left_out_of_other_nodes_reads() {
        let store = subscribed_store().await;
        store
            .create_objects("test", "user", &[user("a", "a"), user("b", "b")], &[])
            .await
            .unwrap();
        let ttl = std::time::Duration::from_secs(60);
        let read_a = store
            .due_entries_for("A", &now_timestamp(), 10)
            .await
            .unwrap();
        let read_b = store
            .due_entries_for("B", &now_timestamp(), 10)
            .await
            .unwrap();
        assert_eq!((read_a.entries.len(), read_b.entries.len()), (2, 2));
        let of = |read: &DueEntries, oid: &str| -> OutboxEntry {
            read.entries.iter().find(|e| e.oid == oid).unwrap().clone()
        };

        // A claims a; B's claim of a and b gets b only.
        let claimed = store
            .claim_objects("A", ttl, &[&of(&read_a, "a")])
            .await
            .unwrap();
        assert_eq!(keys_of(&claimed), [("a", false)]);
        let claimed = store
            .claim_objects("B", ttl, &[&of(&read_b, "a"), &of(&read_b, "b")])
            .await
            .unwrap();
        assert_eq!(keys_of(&claimed), [("b", false)], "a is A's");
        // A claiming again what it holds (a restarted dispatcher) is fine,
        // and the claim says a delivery of it may have stopped half way.
        assert_eq!(
            keys_of(
                &store
                    .claim_objects("A", ttl, &[&of(&read_a, "a")])
                    .await
                    .unwrap()
            ),
            [("a", true)]
        );

        // Each node's read leaves out what the other holds.
        let seen_by_a = store
            .due_entries_for("A", &now_timestamp(), 10)
            .await
            .unwrap();
        assert_eq!(
            seen_by_a
                .entries
                .iter()
                .map(|e| e.oid.as_str())
                .collect::<Vec<_>>(),
            ["a"]
        );
        assert_eq!(seen_by_a.held_elsewhere, 1);
        store
            .renew_claims("A", ttl, &[of(&read_a, "a").claim_key()])
            .await
            .unwrap();

        // A delivers a and releases it: B's read of a is stale, so its claim
        // is refused; a write after the delivery is claimed from a fresh read.
        let delivered = of(&read_a, "a");
        store
            .record_delivery("toLdap", &[], &[], &[], &[&delivered])
            .await
            .unwrap();
        // B cannot release A's claim.
        store
            .release_claims("B", &[delivered.claim_key()])
            .await
            .unwrap();
        assert_eq!(
            store
                .due_entries_for("B", &now_timestamp(), 10)
                .await
                .unwrap()
                .held_elsewhere,
            0,
            "a's entries are gone; b is B's own"
        );
        store
            .release_claims("A", &[delivered.claim_key()])
            .await
            .unwrap();
        assert!(
            store
                .claim_objects("B", ttl, &[&of(&read_b, "a")])
                .await
                .unwrap()
                .is_empty(),
            "a stale read claims nothing"
        );
        rename(&store, "a", "a2").await;
        let fresh = store
            .due_entries_for("B", &now_timestamp(), 10)
            .await
            .unwrap();
        let a2 = fresh.entries.iter().find(|e| e.oid == "a").unwrap();
        assert_eq!(
            keys_of(&store.claim_objects("B", ttl, &[a2]).await.unwrap()),
            [("a", false)],
            "a released claim leaves nothing unfinished"
        );

        // A reschedule since the read also makes it stale.
        let b = of(&read_b, "b");
        store
            .reschedule_entries(&[Reschedule {
                entry: b.clone(),
                attempts: 1,
                due: now_timestamp(),
                failed: false,
                error: "down".into(),
            }])
            .await
            .unwrap();
        assert!(
            store
                .claim_objects("B", ttl, &[&b])
                .await
                .unwrap()
                .is_empty()
        );
    }

    #[tokio::test]
    async fn an_expired_claim_is_taken_over() {
        let store = subscribed_store().await;
        store
            .create_objects("test", "user", &[user("a", "a")], &[])
            .await
            .unwrap();
        let read = store
            .due_entries_for("B", &now_timestamp(), 10)
            .await
            .unwrap();
        let a = read.entries[0].clone();
        // A dead node's claim, already past its time on the store's clock.
        store
            .claim_objects("dead", std::time::Duration::from_millis(1), &[&a])
            .await
            .unwrap();
        store
            .execute(
                "UPDATE outbox_claim SET until = time::now() - 1s RETURN NONE",
                Value::Null,
            )
            .await
            .unwrap();
        let again = store
            .due_entries_for("B", &now_timestamp(), 10)
            .await
            .unwrap();
        assert_eq!((again.entries.len(), again.held_elsewhere), (1, 0));
        assert_eq!(
            keys_of(
                &store
                    .claim_objects("B", std::time::Duration::from_secs(60), &[&a])
                    .await
                    .unwrap()
            ),
            [("a", true)],
            "the dead node's delivery may have reached the target"
        );
        assert_eq!(
            store
                .due_entries_for("dead", &now_timestamp(), 10)
                .await
                .unwrap()
                .held_elsewhere,
            1,
            "B holds it now"
        );

        // A renewal (B's own only) keeps a claim past its first expiry.
        store
            .execute(
                "UPDATE outbox_claim SET until = time::now() - 1s RETURN NONE",
                Value::Null,
            )
            .await
            .unwrap();
        store
            .renew_claims("dead", std::time::Duration::from_secs(60), &[a.claim_key()])
            .await
            .unwrap();
        let seen = store
            .due_entries_for("dead", &now_timestamp(), 10)
            .await
            .unwrap();
        assert_eq!(
            seen.held_elsewhere, 0,
            "another node's renewal is no renewal"
        );
        store
            .renew_claims("B", std::time::Duration::from_secs(60), &[a.claim_key()])
            .await
            .unwrap();
        let seen = store
            .due_entries_for("dead", &now_timestamp(), 10)
            .await
            .unwrap();
        assert_eq!(seen.held_elsewhere, 1, "B's renewal holds it again");
    }
}
