//! Pruning history (the store side of `retention.rs`): each call deletes at
//! most `limit` rows older than a cutoff, in one transaction, and says how
//! many went, so the pruner can go batch by batch and never hold a long
//! transaction against the writers.
//!
//! Every scan here reads only what it deletes, in key order:
//! - `audit`, `execution` and `recon_run` ids are UUIDv7 strings, which sort
//!   by creation time, so "older than the cutoff" is the record-id range
//!   `..floor(cutoff)`: SurrealDB 3 answers `type::record(table, ..$upper)`
//!   with a key-range scan that stops at the LIMIT (a `WHERE time < …` would
//!   read the whole table).
//! - `schedule_tick:[schedule, fire time]` sorts by schedule, then time: one
//!   range per schedule, below its newest tick.
//! - failed outbox entries have no key order by age (the outbox is keyed by
//!   object), but every object with one has an `outbox_parked` hint: only
//!   those objects' entries are read, never a backlog of pending ones.

use serde::Deserialize;
use serde_json::{Value, json};
use time::OffsetDateTime;

use super::objects::{Tx, tx_query};
use super::{FAILED, Store, StoreError, decode_rows, format_timestamp, seek, with_retry};

/// Rows deleted per call (and so per transaction) unless told otherwise.
pub const PRUNE_BATCH: usize = 500;

/// The smallest UUIDv7 string of the millisecond `t` falls in: every UUIDv7
/// made before that millisecond sorts below it, none made at or after it does.
fn uuid_v7_floor(t: OffsetDateTime) -> String {
    let ms = u64::try_from(t.unix_timestamp_nanos() / 1_000_000)
        .unwrap_or(0)
        .min((1 << 48) - 1);
    format!(
        "{:08x}-{:04x}-0000-0000-000000000000",
        ms >> 16,
        ms & 0xffff
    )
}

/// Deletes up to `$limit` records of `$table` whose UUIDv7 id is below
/// `$upper` and that match `keep_out` (a condition on fixed columns); the
/// statement is its own transaction.
fn prune_by_id_sql(condition: &str) -> String {
    format!(
        "RETURN array::len((DELETE (SELECT VALUE id FROM type::record($table, ..$upper) \
         WHERE {condition} LIMIT $limit) RETURN VALUE $before.id))"
    )
}

impl Store {
    async fn prune_by_id(
        &self,
        table: &'static str,
        condition: &str,
        before: OffsetDateTime,
        limit: usize,
        params: Value,
    ) -> Result<u64, StoreError> {
        let mut params = params;
        params["table"] = json!(table);
        params["upper"] = json!(uuid_v7_floor(before));
        params["limit"] = json!(limit);
        let sql = prune_by_id_sql(condition);
        let deleted: Option<u64> = with_retry(|| self.query_one(&sql, params.clone())).await?;
        Ok(deleted.unwrap_or(0))
    }

    /// Deletes up to `limit` audit entries written before `before`.
    pub async fn prune_audit(
        &self,
        before: OffsetDateTime,
        limit: usize,
    ) -> Result<u64, StoreError> {
        self.prune_by_id("audit", "true", before, limit, json!({}))
            .await
    }

    /// Deletes up to `limit` executions started before `before`; never a
    /// RUNNING one.
    pub async fn prune_executions(
        &self,
        before: OffsetDateTime,
        limit: usize,
    ) -> Result<u64, StoreError> {
        self.prune_by_id(
            "execution",
            "outcome != $running",
            before,
            limit,
            json!({ "running": "RUNNING" }),
        )
        .await
    }

    /// Deletes up to `limit` recon run records started before `before`
    /// (with them their kept failures, which live in the record); never a
    /// PENDING or ACTIVE one.
    pub async fn prune_recon_runs(
        &self,
        before: OffsetDateTime,
        limit: usize,
    ) -> Result<u64, StoreError> {
        self.prune_by_id(
            "recon_run",
            "state NOTINSIDE $unfinished",
            before,
            limit,
            json!({ "unfinished": ["PENDING", "ACTIVE"] }),
        )
        .await
    }

    /// Deletes up to `limit` claimed ticks that fired before `before`, of
    /// every schedule, except each schedule's newest (its `last_fire`): ticks
    /// are the claims that keep two nodes from firing one tick twice, and
    /// nothing claims a tick at or before the last one fired (catch-up starts
    /// from `last_fire`), so only the newest still guards anything.
    pub async fn prune_schedule_ticks(
        &self,
        before: OffsetDateTime,
        limit: usize,
    ) -> Result<u64, StoreError> {
        #[derive(Deserialize)]
        struct Fired {
            schedule: String,
            last_fire: String,
        }
        let schedules: Vec<Fired> = self
            .query_all(
                "SELECT record::id(id) AS schedule, last_fire FROM schedule_state \
                 WHERE type::is_string(last_fire)",
                json!({}),
            )
            .await?;
        let cutoff = format_timestamp(before);
        let mut deleted = 0;
        for fired in schedules {
            let left = limit.saturating_sub(deleted as usize);
            if left == 0 {
                break;
            }
            // Exclusive: the newest tick (at `last_fire`) stays.
            let until = fired.last_fire.min(cutoff.clone());
            let params = json!({ "schedule": fired.schedule, "until": until, "limit": left });
            let sql = format!(
                "RETURN array::len((DELETE (SELECT VALUE id FROM {} LIMIT $limit) \
                 RETURN VALUE $before.id))",
                seek("schedule_tick:[$schedule, NONE]..[$schedule, $until]")
            );
            let n: Option<u64> = with_retry(|| self.query_one(&sql, params.clone())).await?;
            deleted += n.unwrap_or(0);
        }
        Ok(deleted)
    }

    /// Deletes up to `limit` outbox entries that failed for good (state
    /// `failed`) and whose last attempt was due before `before`; never a
    /// pending one. An object left with no failed entry loses its
    /// `outbox_parked` hint in the same transaction.
    ///
    /// The hints are the index: every failed entry's object has one (it is
    /// written with the failure), so only parked objects' entries are read,
    /// never a backlog of pending ones.
    pub async fn prune_failed_sync(
        &self,
        before: OffsetDateTime,
        limit: usize,
    ) -> Result<u64, StoreError> {
        let cutoff = format_timestamp(before);
        with_retry(|| async {
            let tx = self.db.begin().await?;
            let result = prune_failed_in(&tx, &cutoff, limit).await;
            match result {
                Ok(n) => {
                    self.db.commit(tx).await?;
                    Ok(n)
                }
                Err(e) => {
                    self.db.cancel(tx).await;
                    Err(e)
                }
            }
        })
        .await
    }
}

/// Parked objects read per statement by [`prune_failed_in`].
const PARKED_CHUNK: usize = 100;

async fn prune_failed_in(tx: &Tx, cutoff: &str, limit: usize) -> Result<u64, StoreError> {
    #[derive(Deserialize)]
    struct Parked {
        key: Vec<String>,
        /// `[entry key, due]` of its failed entries, oldest first, at most
        /// `limit + 1`.
        failed: Vec<(Vec<String>, String)>,
    }
    let parked: Vec<Vec<String>> = decode_rows(
        tx_query(
            tx,
            "SELECT VALUE record::id(id) FROM outbox_parked",
            json!({}),
        )
        .await?,
    )?;
    let mut doomed: Vec<Vec<String>> = Vec::new();
    let mut settled: Vec<Vec<String>> = Vec::new();
    for chunk in parked.chunks(PARKED_CHUNK) {
        let rows: Vec<Parked> = decode_rows(
            tx_query(
                tx,
                &format!(
                    "array::map($chunk, |$p| {{ key: $p, failed: (SELECT VALUE [record::id(id), due] \
                     FROM {} WHERE state = $failed LIMIT $cap) }})",
                    seek("outbox:[$p[0], $p[1], $p[2], NONE]..[$p[0], $p[1], $p[2], ..]")
                ),
                json!({ "chunk": chunk, "failed": FAILED, "cap": limit + 1 }),
            )
            .await?,
        )?;
        for row in rows {
            let room = limit - doomed.len();
            let old: Vec<Vec<String>> = row
                .failed
                .iter()
                .filter(|(_, due)| due.as_str() < cutoff)
                .map(|(key, _)| key.clone())
                .take(room)
                .collect();
            // No failed entry left once these go: the hint goes too.
            if old.len() == row.failed.len() {
                settled.push(row.key);
            }
            doomed.extend(old);
            if doomed.len() >= limit {
                break;
            }
        }
        if doomed.len() >= limit {
            break;
        }
    }
    if doomed.is_empty() && settled.is_empty() {
        return Ok(0);
    }
    tx_query(
        tx,
        "DELETE array::map($doomed, |$k| type::record('outbox', $k)) RETURN NONE; \
         DELETE array::map($settled, |$p| type::record('outbox_parked', $p)) RETURN NONE;",
        json!({ "doomed": doomed, "settled": settled }),
    )
    .await?;
    Ok(doomed.len() as u64)
}

/// For the pruner's tests (`crate::retention`), which live outside this module.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
impl Store {
    pub(crate) async fn execute_for_tests(&self, sql: &str, params: Value) {
        self.execute(sql, params).await.unwrap();
    }

    pub(crate) async fn count_for_tests(&self, table: &str) -> usize {
        let n = self
            .count(
                "SELECT count() AS n FROM type::table($table) GROUP ALL",
                json!({ "table": table }),
            )
            .await
            .unwrap();
        usize::try_from(n).unwrap()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use super::*;
    use crate::store::{
        ExecutionRecord, NewObject, ReconRunRecord, Reschedule, Write, now_timestamp,
    };

    fn ago(d: Duration) -> OffsetDateTime {
        OffsetDateTime::now_utc() - d
    }

    const DAY: Duration = Duration::from_secs(86_400);

    /// A UUIDv7 made at `t`.
    fn v7_at(t: OffsetDateTime) -> String {
        let nanos = t.unix_timestamp_nanos();
        let ts = uuid::Timestamp::from_unix(
            uuid::NoContext,
            u64::try_from(nanos / 1_000_000_000).unwrap(),
            u32::try_from(nanos % 1_000_000_000).unwrap(),
        );
        uuid::Uuid::new_v7(ts).to_string()
    }

    async fn ids(store: &Store, sql: &str) -> Vec<String> {
        store.query_all(sql, json!({})).await.unwrap()
    }

    #[test]
    fn the_floor_sorts_between_uuids_made_before_and_after() {
        let t = OffsetDateTime::now_utc();
        let floor = uuid_v7_floor(t);
        for _ in 0..100 {
            assert!(v7_at(t - Duration::from_millis(1)) < floor);
            assert!(v7_at(t) >= floor);
            assert!(uuid::Uuid::now_v7().to_string() >= floor);
        }
    }

    #[tokio::test]
    async fn audit_entries_past_their_age_go_and_the_rest_stay() {
        let store = Store::open("mem://").await.unwrap();
        let rows: Vec<Value> = [400, 366, 364, 1]
            .iter()
            .map(|days| {
                let aid = v7_at(ago(DAY * *days));
                json!({ "id": aid, "aid": aid, "actor": "test", "operation": format!("{days}d") })
            })
            .collect();
        store
            .execute(
                "INSERT INTO audit $rows RETURN NONE",
                json!({ "rows": rows }),
            )
            .await
            .unwrap();
        store
            .record_action(&crate::store::ActionRecord {
                actor: "test",
                action: "now",
                target: "tokens/x",
                outcome: "success",
                detail: None,
            })
            .await
            .unwrap();

        let before = ago(DAY * 365);
        assert_eq!(
            store.prune_audit(before, 1).await.unwrap(),
            1,
            "one per batch"
        );
        assert_eq!(store.prune_audit(before, 500).await.unwrap(), 1);
        assert_eq!(store.prune_audit(before, 500).await.unwrap(), 0);
        let mut left = ids(&store, "SELECT VALUE operation FROM audit").await;
        left.sort();
        assert_eq!(left, ["1d", "364d", "now"]);
    }

    #[tokio::test]
    async fn executions_past_their_age_go_but_never_a_running_one() {
        let store = Store::open("mem://").await.unwrap();
        for (days, outcome) in [
            (120, "SUCCESS"),
            (95, "RUNNING"),
            (91, "FAILED"),
            (89, "SKIPPED_MISFIRE"),
            (0, "RUNNING"),
        ] {
            store
                .save_execution(&ExecutionRecord {
                    eid: v7_at(ago(DAY * days)),
                    schedule: "recon".into(),
                    outcome: outcome.into(),
                    message: format!("{days}d"),
                    ..ExecutionRecord::default()
                })
                .await
                .unwrap();
        }
        assert_eq!(store.prune_executions(ago(DAY * 90), 500).await.unwrap(), 2);
        let left: Vec<String> = store
            .list_executions("recon", 10, 0)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.message)
            .collect();
        assert_eq!(left, ["0d", "89d", "95d"]);
    }

    #[tokio::test]
    async fn recon_runs_past_their_age_go_with_their_failures_but_never_an_active_one() {
        let store = Store::open("mem://").await.unwrap();
        for (days, state) in [
            (100, "SUCCESS"),
            (100, "ACTIVE"),
            (100, "PENDING"),
            (91, "CANCELED"),
            (89, "FAILED"),
        ] {
            let mut run = ReconRunRecord {
                rid: v7_at(ago(DAY * days)),
                mapping: format!("{days}d {state}"),
                state: state.into(),
                ..ReconRunRecord::default()
            };
            run.record_failure(crate::store::ReconFailureRecord {
                reason: "bad row".into(),
                ..Default::default()
            });
            store.save_run(&run).await.unwrap();
        }
        assert_eq!(store.prune_recon_runs(ago(DAY * 90), 500).await.unwrap(), 2);
        let mut left = ids(&store, "SELECT VALUE mapping FROM recon_run").await;
        left.sort();
        assert_eq!(left, ["100d ACTIVE", "100d PENDING", "89d FAILED"]);
    }

    #[tokio::test]
    async fn old_ticks_go_but_each_schedules_newest_stays() {
        let store = Store::open("mem://").await.unwrap();
        let stamp = |d: Duration| format_timestamp(ago(d));
        let hour = Duration::from_secs(3600);
        // `recon` fires every hour and still does; `old` last fired 3 days ago.
        for h in (1..=30).rev() {
            let fire = stamp(hour * h - hour / 2);
            assert!(store.claim_tick("recon", &fire, "n").await.unwrap());
        }
        for d in [5, 4, 3] {
            assert!(store.claim_tick("old", &stamp(DAY * d), "n").await.unwrap());
        }
        assert_eq!(store.prune_schedule_ticks(ago(DAY), 4).await.unwrap(), 4);
        assert_eq!(store.prune_schedule_ticks(ago(DAY), 500).await.unwrap(), 4);
        assert_eq!(store.prune_schedule_ticks(ago(DAY), 500).await.unwrap(), 0);
        let count = |schedule: &str| {
            let store = store.clone();
            let schedule = schedule.to_string();
            async move {
                store
                    .count(
                        "SELECT count() AS n FROM schedule_tick:[$s, NONE]..[$s, ..] GROUP ALL",
                        json!({ "s": schedule }),
                    )
                    .await
                    .unwrap()
            }
        };
        assert_eq!(count("recon").await, 24, "the ticks of the last day");
        assert_eq!(count("old").await, 1, "its newest tick");
        let last = store
            .schedule_state("old")
            .await
            .unwrap()
            .last_fire
            .unwrap();
        assert!(
            !store.claim_tick("old", &last, "m").await.unwrap(),
            "the newest tick is still claimed"
        );
    }

    #[tokio::test]
    async fn failed_sync_entries_past_their_age_go_and_their_parked_hint_with_the_last() {
        let store = Store::open("mem://").await.unwrap();
        store.set_sync_subscriptions(BTreeMap::from([(
            "user".to_string(),
            vec!["toLdap".to_string()],
        )]));
        let user = |oid: &str| NewObject {
            oid: oid.into(),
            write: Write {
                data: json!({ "userName": oid }).as_object().cloned().unwrap(),
                changed: vec!["userName".into()],
                ..Write::default()
            },
        };
        // a: one old failure; b: an old and a recent failure; c: pending since long.
        store
            .create_objects("test", "user", &[user("a"), user("b"), user("c")], &[])
            .await
            .unwrap();
        let first = store.due_entries(&now_timestamp(), 10).await.unwrap();
        let by_oid = |oid: &str| first.iter().find(|e| e.oid == oid).unwrap().clone();
        let fail = |entry, due: OffsetDateTime, failed| Reschedule {
            entry,
            attempts: 8,
            due: format_timestamp(due),
            failed,
            error: "objectClassViolation".into(),
        };
        store
            .reschedule_entries(&[
                fail(by_oid("a"), ago(DAY * 31), true),
                fail(by_oid("b"), ago(DAY * 40), true),
                fail(by_oid("c"), ago(DAY * 40), false),
            ])
            .await
            .unwrap();
        store
            .update_object("test", "patch", "user", "b", &[], |current, _| {
                Ok::<_, StoreError>(crate::store::ObjectChange::Write(Write {
                    data: current.data.clone(),
                    changed: vec!["userName".into()],
                    ..Write::default()
                }))
            })
            .await
            .unwrap();
        let second = store.due_entries(&now_timestamp(), 10).await.unwrap();
        let b2 = second.iter().find(|e| e.oid == "b").unwrap().clone();
        store
            .reschedule_entries(&[fail(b2, ago(DAY * 2), true)])
            .await
            .unwrap();

        // A stale hint: c has no failed entry.
        store
            .execute(
                "UPSERT outbox_parked:['toLdap', 'user', 'c'] RETURN NONE",
                json!({}),
            )
            .await
            .unwrap();

        assert_eq!(store.prune_failed_sync(ago(DAY * 30), 1).await.unwrap(), 1);
        assert_eq!(
            store.prune_failed_sync(ago(DAY * 30), 500).await.unwrap(),
            1
        );
        assert_eq!(
            store.prune_failed_sync(ago(DAY * 30), 500).await.unwrap(),
            0
        );
        let summary = store.queue_summary().await.unwrap();
        assert_eq!(
            (summary[0].pending, summary[0].failed),
            (1, 1),
            "c pending, b's recent failure"
        );
        let mut parked = ids(&store, "SELECT VALUE record::id(id)[2] FROM outbox_parked").await;
        parked.sort();
        assert_eq!(parked, ["b"], "a and c have no failed entry left");
    }

    #[tokio::test]
    async fn more_rows_than_a_batch_go_batch_by_batch() {
        let store = Store::open("mem://").await.unwrap();
        let old = ago(DAY * 400);
        let rows: Vec<Value> = (0..1_200)
            .map(|i| {
                let aid = v7_at(old + Duration::from_millis(i));
                json!({ "id": aid, "aid": aid })
            })
            .collect();
        store
            .execute(
                "INSERT INTO audit $rows RETURN NONE",
                json!({ "rows": rows }),
            )
            .await
            .unwrap();
        let mut batches = Vec::new();
        loop {
            let n = store
                .prune_audit(ago(DAY * 365), PRUNE_BATCH)
                .await
                .unwrap();
            batches.push(n);
            if n < PRUNE_BATCH as u64 {
                break;
            }
        }
        assert_eq!(batches, [500, 500, 200]);
        assert!(ids(&store, "SELECT VALUE aid FROM audit").await.is_empty());
    }
}
