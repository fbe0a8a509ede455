//! What the scheduler keeps besides the schedule documents themselves (those
//! are conf documents of kind `schedule`): per-schedule state, the execution
//! history, and the two guards that make several nodes on one store behave
//! as one scheduler.
//!
//! - `schedule_tick:[schedule, fire time]`: created by the node that fires
//!   that tick. A second node's create collides on the record id, so a tick
//!   runs once however many nodes see it.
//! - `schedule_lease:[schedule]`: held (node, expiry) by the node running a
//!   schedule whose `concurrentExecution` is false; taken only when free or
//!   expired (compare-and-set), renewed while the run goes on.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use std::time::Duration;

use super::{Store, StoreError, with_retry};

/// A schedule's runtime state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ScheduleState {
    pub paused: bool,
    /// The last tick fired (by any node).
    pub last_fire: Option<String>,
    /// liveSync's mark: the source's change token at the last run, or the
    /// time the last run started.
    #[serde(default)]
    pub live_mark: Option<String>,
}

/// One firing of a schedule.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ExecutionRecord {
    /// UUIDv7.
    pub eid: String,
    pub schedule: String,
    pub fire_time: String,
    pub start: String,
    pub end: Option<String>,
    /// RUNNING, SUCCESS, FAILED, SKIPPED_CONCURRENT or SKIPPED_MISFIRE.
    pub outcome: String,
    pub message: String,
    /// `recon/<id>` for sync schedules.
    pub recon_run: Option<String>,
    pub node: String,
}

impl Store {
    pub async fn schedule_state(&self, schedule: &str) -> Result<ScheduleState, StoreError> {
        let state: Option<ScheduleState> = self
            .query_one(
                "SELECT paused ?? false AS paused, last_fire, live_mark FROM ONLY type::record('schedule_state', $schedule)",
                json!({ "schedule": schedule }),
            )
            .await?;
        Ok(state.unwrap_or_default())
    }

    /// Merges `fields` into a schedule's state. The schedule's own tick
    /// writes that record too: a conflict is retried.
    async fn merge_schedule_state(&self, schedule: &str, fields: Value) -> Result<(), StoreError> {
        let params = json!({ "schedule": schedule, "fields": fields });
        with_retry(|| {
            self.execute(
                "UPSERT type::record('schedule_state', $schedule) MERGE $fields RETURN NONE",
                params.clone(),
            )
        })
        .await
    }

    pub async fn set_paused(&self, schedule: &str, paused: bool) -> Result<(), StoreError> {
        self.merge_schedule_state(schedule, json!({ "paused": paused }))
            .await
    }

    pub async fn set_live_mark(&self, schedule: &str, mark: &str) -> Result<(), StoreError> {
        self.merge_schedule_state(schedule, json!({ "live_mark": mark }))
            .await
    }

    /// Claims a tick for this node; `false` if another node claimed it first.
    pub async fn claim_tick(
        &self,
        schedule: &str,
        fire_time: &str,
        node: &str,
    ) -> Result<bool, StoreError> {
        // A write conflict is retried: then the create either collides (the
        // other node's claim committed) or goes through.
        let params = json!({ "schedule": schedule, "fire": fire_time, "node": node });
        let claimed = with_retry(|| {
            self.execute(
                "CREATE type::record('schedule_tick', [$schedule, $fire]) SET node = $node RETURN NONE",
                params.clone(),
            )
        })
        .await;
        match claimed {
            Ok(()) => {}
            Err(StoreError::Query(message)) if message.contains("already exists") => {
                return Ok(false);
            }
            Err(e) => return Err(e),
        }
        // Only the claimant writes it, so ticks of one schedule never race here.
        with_retry(|| {
            self.execute(
                "UPSERT type::record('schedule_state', $schedule) MERGE { last_fire: $fire } RETURN NONE",
                params.clone(),
            )
        })
        .await?;
        Ok(true)
    }

    /// Takes or renews the run lease of a schedule until `until`; `false`
    /// while another node holds an unexpired one. Compare-and-set: the
    /// write applies only if the lease is still what was read.
    pub async fn take_lease(
        &self,
        schedule: &str,
        node: &str,
        now: &str,
        until: &str,
    ) -> Result<bool, StoreError> {
        #[derive(Deserialize)]
        struct Lease {
            node: String,
            until: String,
        }
        let params = json!({ "schedule": schedule, "node": node, "until": until });
        let current: Option<Lease> = self
            .query_one(
                "SELECT node, until FROM ONLY type::record('schedule_lease', $schedule)",
                params.clone(),
            )
            .await?;
        let taken = match current {
            None => {
                self.execute(
                    "CREATE type::record('schedule_lease', $schedule) CONTENT { node: $node, until: $until } RETURN NONE",
                    params,
                )
                .await
                .map(|()| true)
            }
            Some(lease) if lease.node != node && lease.until.as_str() >= now => Ok(false),
            Some(lease) => {
                let holder: Option<String> = self
                    .query_one(
                        "UPDATE type::record('schedule_lease', $schedule) SET node = $node, until = $until \
                         WHERE node = $old_node AND until = $old_until RETURN VALUE node",
                        json!({
                            "schedule": schedule, "node": node, "until": until,
                            "old_node": lease.node, "old_until": lease.until,
                        }),
                    )
                    .await?;
                Ok(holder.as_deref() == Some(node))
            }
        };
        match taken {
            // Another node won the race (a collision or a write conflict).
            Err(StoreError::Query(message))
                if message.contains("already exists") || message.contains("can be retried") =>
            {
                Ok(false)
            }
            other => other,
        }
    }

    /// Gives a lease back (only if this node holds it).
    pub async fn release_lease(&self, schedule: &str, node: &str) -> Result<(), StoreError> {
        self.execute(
            "LET $lease = type::record('schedule_lease', $schedule); \
             IF $lease.node == $node { DELETE $lease RETURN NONE; };",
            json!({ "schedule": schedule, "node": node }),
        )
        .await
    }

    pub async fn save_execution(&self, execution: &ExecutionRecord) -> Result<(), StoreError> {
        let mut row =
            serde_json::to_value(execution).map_err(|e| StoreError::Decode(e.to_string()))?;
        row["id"] = json!(execution.eid);
        // MERGE: the heartbeat (`until`) a RUNNING execution carries stays.
        self.execute(
            "UPSERT type::record('execution', $row.id) MERGE $row RETURN NONE",
            json!({ "row": row }),
        )
        .await
    }

    /// Records an execution RUNNING on `execution.node` with a heartbeat of
    /// `ttl` (the store's clock), which that node renews while it runs
    /// ([`Store::beat_execution`]); once it expired, any node may mark the
    /// execution FAILED ([`Store::fail_expired_executions`]).
    pub async fn start_execution(
        &self,
        execution: &ExecutionRecord,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let mut row =
            serde_json::to_value(execution).map_err(|e| StoreError::Decode(e.to_string()))?;
        row["id"] = json!(execution.eid);
        self.execute(
            "BEGIN TRANSACTION; \
             UPSERT type::record('execution', $row.id) MERGE $row RETURN NONE; \
             UPDATE type::record('execution', $row.id) SET until = time::now() + <duration> $ttl RETURN NONE; \
             COMMIT TRANSACTION;",
            json!({ "row": row, "ttl": format!("{}ms", ttl.as_millis().max(1)) }),
        )
        .await
    }

    /// Renews the heartbeat of an execution still RUNNING on `node`; `false`
    /// if it is no longer (another node failed it after it expired).
    pub async fn beat_execution(
        &self,
        eid: &str,
        node: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let beat: Option<String> = self
            .query_one(
                "UPDATE type::record('execution', $eid) SET until = time::now() + <duration> $ttl \
                 WHERE node = $node AND outcome = 'RUNNING' RETURN VALUE eid",
                json!({ "eid": eid, "node": node, "ttl": format!("{}ms", ttl.as_millis().max(1)) }),
            )
            .await?;
        Ok(beat.is_some())
    }

    /// Marks FAILED, with `reason`, the executions still RUNNING whose
    /// heartbeat expired (their node stopped; those without one, from
    /// before executions had one, count as expired). Any node may call it;
    /// live executions of any node stay. Returns how many.
    pub async fn fail_expired_executions(&self, reason: &str) -> Result<usize, StoreError> {
        let params = json!({ "reason": reason, "end": super::now_timestamp() });
        let failed: Vec<String> = with_retry(|| {
            self.query_all(
                // The RUNNING ones through the outcome index, then those records.
                "UPDATE (SELECT VALUE id FROM execution WHERE outcome = 'RUNNING' \
                 AND (until == NONE OR until < time::now())) \
                 SET outcome = 'FAILED', end = $end, message = $reason \
                 WHERE outcome = 'RUNNING' RETURN VALUE eid",
                params.clone(),
            )
        })
        .await?;
        Ok(failed.len())
    }

    /// Executions, newest first: of one schedule, or of all when `schedule` is empty.
    pub async fn list_executions(
        &self,
        schedule: &str,
        limit: usize,
        offset: usize,
    ) -> Result<Vec<ExecutionRecord>, StoreError> {
        self.list_executions_where(schedule, false, limit, offset)
            .await
    }

    /// [`Store::list_executions`], only those still `RUNNING` if `running`.
    pub async fn list_executions_where(
        &self,
        schedule: &str,
        running: bool,
        limit: usize,
        offset: usize,
    ) -> Result<Vec<ExecutionRecord>, StoreError> {
        self.query_all(
            "SELECT eid, schedule, fire_time, start, end, outcome, message, recon_run, node \
             FROM execution WHERE ($schedule = '' OR schedule = $schedule) \
             AND (!$running OR outcome = 'RUNNING') \
             ORDER BY eid DESC LIMIT $limit START $start",
            json!({ "schedule": schedule, "running": running, "limit": limit, "start": offset }),
        )
        .await
    }

    /// Marks every execution still RUNNING as FAILED with `reason`: at the
    /// start of the one process an embedded store has, those are runs a
    /// crash cut short (like [`Store::fail_unfinished_runs`] for
    /// reconciliations). A store shared by several nodes uses
    /// [`Store::fail_expired_executions`]. Returns how many there were.
    pub async fn fail_unfinished_executions(&self, reason: &str) -> Result<usize, StoreError> {
        let unfinished: Vec<ExecutionRecord> = self
            .query_all(
                "SELECT eid, schedule, fire_time, start, end, outcome, message, recon_run, node \
                 FROM execution WHERE outcome = 'RUNNING'",
                json!({}),
            )
            .await?;
        let end = super::now_timestamp();
        for mut execution in unfinished.iter().cloned() {
            execution.outcome = "FAILED".into();
            execution.end = Some(end.clone());
            execution.message = reason.to_string();
            self.save_execution(&execution).await?;
        }
        Ok(unfinished.len())
    }

    /// Forgets a deleted schedule's state, lease and claimed ticks (its
    /// execution history stays).
    pub async fn forget_schedule(&self, schedule: &str) -> Result<(), StoreError> {
        self.execute(
            "DELETE type::record('schedule_state', $schedule) RETURN NONE; \
             DELETE type::record('schedule_lease', $schedule) RETURN NONE; \
             DELETE schedule_tick:[$schedule, NONE]..[$schedule, ..] RETURN NONE;",
            json!({ "schedule": schedule }),
        )
        .await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn executions_left_running_are_failed_and_finished_ones_kept() {
        let store = Store::open("mem://").await.unwrap();
        let execution = |eid: &str, outcome: &str| ExecutionRecord {
            eid: eid.into(),
            schedule: "nightly".into(),
            fire_time: "2026-11-23T10:00:00.000000Z".into(),
            start: "2026-11-23T10:00:00.100000Z".into(),
            end: (outcome != "RUNNING").then(|| "2026-11-23T10:00:01.000000Z".into()),
            outcome: outcome.into(),
            message: "done".into(),
            recon_run: None,
            node: "idmd-1".into(),
        };
        store
            .save_execution(&execution("e1", "SUCCESS"))
            .await
            .unwrap();
        store
            .save_execution(&execution("e2", "RUNNING"))
            .await
            .unwrap();
        assert_eq!(
            store
                .fail_unfinished_executions("idmd stopped during the run")
                .await
                .unwrap(),
            1
        );
        let all = store.list_executions("nightly", 10, 0).await.unwrap();
        let e2 = all.iter().find(|e| e.eid == "e2").unwrap();
        assert_eq!(
            (e2.outcome.as_str(), e2.message.as_str()),
            ("FAILED", "idmd stopped during the run")
        );
        assert!(e2.end.is_some());
        let e1 = all.iter().find(|e| e.eid == "e1").unwrap();
        assert_eq!(
            (e1.outcome.as_str(), e1.message.as_str()),
            ("SUCCESS", "done")
        );
    }

    #[tokio::test]
    async fn a_tick_is_claimed_once_however_many_nodes_try() {
        let store = Store::open("mem://").await.unwrap();
        let fire = "2026-11-23T10:00:15.000000Z";
        assert!(store.claim_tick("recon", fire, "node-a").await.unwrap());
        assert!(!store.claim_tick("recon", fire, "node-b").await.unwrap());
        assert!(!store.claim_tick("recon", fire, "node-a").await.unwrap());
        assert!(
            store
                .claim_tick("recon", "2026-11-23T10:00:30.000000Z", "node-b")
                .await
                .unwrap()
        );
        assert!(
            store.claim_tick("greeting", fire, "node-b").await.unwrap(),
            "ticks are per schedule"
        );
        let state = store.schedule_state("recon").await.unwrap();
        assert_eq!(
            state.last_fire.as_deref(),
            Some("2026-11-23T10:00:30.000000Z")
        );
        assert!(!state.paused);

        store.forget_schedule("recon").await.unwrap();
        assert!(store.claim_tick("recon", fire, "node-b").await.unwrap());
    }

    #[tokio::test]
    async fn only_executions_whose_heartbeat_expired_are_failed_by_another_node() {
        let store = Store::open("mem://").await.unwrap();
        let execution = |eid: &str, node: &str| ExecutionRecord {
            eid: eid.into(),
            schedule: "nightly".into(),
            fire_time: "2026-11-23T10:00:00.000000Z".into(),
            start: "2026-11-23T10:00:00.100000Z".into(),
            outcome: "RUNNING".into(),
            node: node.into(),
            ..ExecutionRecord::default()
        };
        let hour = Duration::from_secs(3600);
        let live = execution("live", "node-a");
        store.start_execution(&live, hour).await.unwrap();
        // A save while it runs (its recon run id) keeps the heartbeat.
        let mut with_run = live.clone();
        with_run.recon_run = Some("recon/1".into());
        store.save_execution(&with_run).await.unwrap();
        // Ended long ago: its expired heartbeat does not matter.
        let mut old = execution("old", "node-c");
        store
            .start_execution(&old, Duration::from_millis(1))
            .await
            .unwrap();
        old.outcome = "SUCCESS".into();
        old.message = "done".into();
        store.save_execution(&old).await.unwrap();
        let dead = execution("dead", "node-c");
        store
            .start_execution(&dead, Duration::from_millis(1))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;

        // Node b's sweep: only the expired one.
        assert_eq!(store.fail_expired_executions("gone").await.unwrap(), 1);
        let all = store.list_executions("nightly", 10, 0).await.unwrap();
        let outcome = |eid: &str| {
            let e = all.iter().find(|e| e.eid == eid).unwrap();
            (e.outcome.clone(), e.message.clone(), e.recon_run.clone())
        };
        assert_eq!(outcome("dead"), ("FAILED".into(), "gone".into(), None));
        assert_eq!(outcome("old"), ("SUCCESS".into(), "done".into(), None));
        assert_eq!(
            outcome("live"),
            ("RUNNING".into(), String::new(), Some("recon/1".into()))
        );
        // Its owner renews it; a dead node, back, finds it is no longer its.
        assert!(store.beat_execution("live", "node-a", hour).await.unwrap());
        assert!(!store.beat_execution("live", "node-b", hour).await.unwrap());
        assert!(!store.beat_execution("dead", "node-c", hour).await.unwrap());
    }

    #[tokio::test]
    async fn a_run_lease_is_held_by_one_node_until_it_expires_or_is_released() {
        let store = Store::open("mem://").await.unwrap();
        let (t0, t1, t2) = (
            "2026-11-23T10:00:00.000000Z",
            "2026-11-23T10:00:30.000000Z",
            "2026-11-23T10:01:00.000000Z",
        );
        assert!(store.take_lease("recon", "a", t0, t1).await.unwrap());
        assert!(!store.take_lease("recon", "b", t0, t1).await.unwrap());
        assert!(
            store.take_lease("recon", "a", t0, t2).await.unwrap(),
            "renewed"
        );
        assert!(
            store
                .take_lease(
                    "recon",
                    "b",
                    "2026-11-23T10:02:00.000000Z",
                    "2026-11-23T10:03:00.000000Z"
                )
                .await
                .unwrap(),
            "expired leases are taken over"
        );
        store.release_lease("recon", "a").await.unwrap();
        assert!(
            !store.take_lease("recon", "a", t2, t2).await.unwrap(),
            "not a's to release"
        );
        store.release_lease("recon", "b").await.unwrap();
        assert!(store.take_lease("recon", "a", t2, t2).await.unwrap());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn racing_nodes_get_one_tick_and_one_lease() {
        let store = Store::open("mem://").await.unwrap();
        let race = |f: fn(Store, String) -> futures::future::BoxFuture<'static, bool>| {
            let store = store.clone();
            async move {
                let tries = (0..8).map(|n| tokio::spawn(f(store.clone(), format!("node-{n}"))));
                futures::future::join_all(tries)
                    .await
                    .into_iter()
                    .filter(|won| *won.as_ref().unwrap())
                    .count()
            }
        };
        let ticks = race(|store, node| {
            Box::pin(async move {
                store
                    .claim_tick("recon", "2026-11-23T10:00:15.000000Z", &node)
                    .await
                    .unwrap()
            })
        })
        .await;
        assert_eq!(ticks, 1);
        let leases = race(|store, node| {
            Box::pin(async move {
                store
                    .take_lease(
                        "recon",
                        &node,
                        "2026-11-23T10:00:00.000000Z",
                        "2026-11-23T10:01:00.000000Z",
                    )
                    .await
                    .unwrap()
            })
        })
        .await;
        assert_eq!(leases, 1);
    }

    #[tokio::test]
    async fn pause_state_and_execution_history() {
        let store = Store::open("mem://").await.unwrap();
        store.set_paused("recon", true).await.unwrap();
        assert!(store.schedule_state("recon").await.unwrap().paused);
        store.set_paused("recon", false).await.unwrap();
        assert!(!store.schedule_state("recon").await.unwrap().paused);

        for (schedule, outcome) in [
            ("recon", "SUCCESS"),
            ("greeting", "FAILED"),
            ("recon", "SKIPPED_CONCURRENT"),
        ] {
            store
                .save_execution(&ExecutionRecord {
                    eid: uuid::Uuid::now_v7().to_string(),
                    schedule: schedule.into(),
                    outcome: outcome.into(),
                    node: "a".into(),
                    ..ExecutionRecord::default()
                })
                .await
                .unwrap();
        }
        let recon = store.list_executions("recon", 10, 0).await.unwrap();
        let outcomes: Vec<&str> = recon.iter().map(|e| e.outcome.as_str()).collect();
        assert_eq!(outcomes, ["SKIPPED_CONCURRENT", "SUCCESS"], "newest first");
        assert_eq!(store.list_executions("", 10, 0).await.unwrap().len(), 3);
        assert!(
            store
                .list_executions_where("", true, 10, 0)
                .await
                .unwrap()
                .is_empty(),
            "none is running"
        );
        assert_eq!(
            store.list_executions("", 1, 1).await.unwrap()[0].outcome,
            "FAILED"
        );
    }
}
