//! Recon run records: what a reconciliation did, kept as history. The engine
//! saves the whole record as it progresses; readers get the latest copy.
//!
//! Runs are owned, so that several idmd nodes can share one store:
//! - a run records its `node` and a heartbeat `until` (the store's clock),
//!   renewed by that node while the run goes on; a run still ACTIVE whose
//!   `until` has passed was cut short (its node stopped) and any node marks
//!   it FAILED ([`Store::fail_expired_runs`]);
//! - `recon_lease:[mapping]` (`rid`, `node`, `until`) is held by the run of a
//!   mapping, taken in the run's creating transaction only when free or
//!   expired, renewed with the heartbeat and released at the end: one run per
//!   mapping across the cluster;
//! - `cancel_requested` on the run record is how any node asks the owner to
//!   cancel; the owner reads it back with each progress save.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use std::time::Duration;

use serde_json::{Value, json};

use super::query::CompiledFilter;
use super::{Store, StoreError, bind_all, now_timestamp, with_retry};

/// Failures kept per run record (all are counted in `failure_count`).
pub const MAX_KEPT_FAILURES: usize = 1000;

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ReconRunRecord {
    /// A UUIDv7, so ids order by start time.
    pub rid: String,
    pub mapping: String,
    /// PENDING, ACTIVE, SUCCESS, FAILED or CANCELED.
    pub state: String,
    /// Wren's stage names: ACTIVE_RECONCILING_SOURCE, COMPLETED_SUCCESS, ….
    pub stage: String,
    pub source: Progress,
    pub target: Progress,
    pub links: Progress,
    pub situations: BTreeMap<String, i64>,
    pub actions: BTreeMap<String, i64>,
    pub failures: Vec<ReconFailureRecord>,
    pub failure_count: i64,
    pub started: String,
    pub ended: Option<String>,
    pub started_by: String,
    pub error: Option<String>,
    /// The node running (or that ran) it; empty on runs older than owned runs.
    #[serde(default)]
    pub node: String,
    /// Another node asked the owner to cancel. Read only: the progress saves
    /// never write it, so they never undo a request.
    #[serde(default, skip_serializing)]
    pub cancel_requested: bool,
    /// How long each phase took, by Wren's phase name (`sourceQuery`,
    /// `sourcePhase`, …); empty on runs older than phase timings.
    #[serde(default)]
    pub durations: BTreeMap<String, PhaseTiming>,
}

/// How long one phase of a run took over every time it ran (each batch read
/// or processed, each links read, …), in microseconds: enough to give the
/// count, sum, extremes, mean and standard deviation without keeping samples.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct PhaseTiming {
    pub count: u64,
    pub total_us: u64,
    pub min_us: u64,
    pub max_us: u64,
    /// The sum of the squared durations (µs²), for the standard deviation.
    pub squares_us: f64,
}

impl PhaseTiming {
    pub fn add(&mut self, elapsed: Duration) {
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.min_us = if self.count == 0 {
            us
        } else {
            self.min_us.min(us)
        };
        self.max_us = self.max_us.max(us);
        self.count += 1;
        self.total_us = self.total_us.saturating_add(us);
        self.squares_us += (us as f64) * (us as f64);
    }

    pub fn mean_us(&self) -> f64 {
        if self.count == 0 {
            return 0.0;
        }
        self.total_us as f64 / self.count as f64
    }

    /// The population standard deviation.
    pub fn std_dev_us(&self) -> f64 {
        if self.count == 0 {
            return 0.0;
        }
        let mean = self.mean_us();
        // Rounding can take the variance of equal samples a hair below zero.
        (self.squares_us / self.count as f64 - mean * mean)
            .max(0.0)
            .sqrt()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Progress {
    pub existing: i64,
    pub processed: i64,
    pub total: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ReconFailureRecord {
    pub source_id: Option<String>,
    pub target_id: Option<String>,
    pub line: Option<u64>,
    pub situation: Option<String>,
    pub action: Option<String>,
    pub reason: String,
}

impl ReconRunRecord {
    /// Counts a failure, keeping its details while under the cap.
    pub fn record_failure(&mut self, failure: ReconFailureRecord) {
        self.failure_count += 1;
        if self.failures.len() < MAX_KEPT_FAILURES {
            self.failures.push(failure);
        }
    }
}

const RUN_COLUMNS: &str = "rid, mapping, state, stage, source, target, links, situations, actions, failures, \
                           failure_count, started, ended, started_by, error, node ?? '' AS node, \
                           cancel_requested ?? false AS cancel_requested, durations ?? {} AS durations";

/// What a progress save writes: every field but the heartbeat and the cancel request.
const RUN_SET: &str = "rid = $run.rid, mapping = $run.mapping, state = $run.state, stage = $run.stage, \
                       source = $run.source, target = $run.target, links = $run.links, \
                       situations = $run.situations, actions = $run.actions, failures = $run.failures, \
                       failure_count = $run.failure_count, started = $run.started, ended = $run.ended, \
                       started_by = $run.started_by, error = $run.error, node = $run.node, \
                       durations = $run.durations";

/// The marker of a refused lease in the store's error, followed by the holder's run id.
const LEASE_HELD: &str = "recon-lease-held:";

/// A duration as SurrealQL casts it from a string (`<duration> $ttl`).
fn surreal_duration(d: Duration) -> String {
    format!("{}ms", d.as_millis().max(1))
}

/// What the owner of a run learns when it saves progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStanding {
    /// Still its run; `cancel_requested` if another node asked it to stop.
    Owned { cancel_requested: bool },
    /// No longer ACTIVE under this node: another node marked it FAILED after
    /// its heartbeat expired.
    Lost,
}

impl Store {
    /// Creates or replaces a run record.
    pub async fn save_run(&self, run: &ReconRunRecord) -> Result<(), StoreError> {
        self.execute(
            &format!("UPSERT type::record('recon_run', $run.rid) SET {RUN_SET} RETURN NONE"),
            json!({ "run": run }),
        )
        .await
    }

    pub async fn get_run(&self, rid: &str) -> Result<Option<ReconRunRecord>, StoreError> {
        self.query_one(
            &format!("SELECT {RUN_COLUMNS} FROM ONLY type::record('recon_run', $rid)"),
            json!({ "rid": rid }),
        )
        .await
    }

    /// Runs matching a compiled filter, newest first, and how many match.
    pub async fn query_runs(
        &self,
        filter: &CompiledFilter,
        offset: usize,
        limit: usize,
    ) -> Result<(Vec<ReconRunRecord>, u64), StoreError> {
        let mut params = filter.params.clone();
        params.insert("limit".into(), json!(limit));
        params.insert("start".into(), json!(offset));
        let condition = filter.condition();
        let runs = self
            .query_all(
                &format!(
                    "SELECT {RUN_COLUMNS} FROM recon_run WHERE {condition} ORDER BY rid DESC LIMIT $limit START $start"
                ),
                Value::Object(params.clone()),
            )
            .await?;
        let total = self
            .count(
                &format!("SELECT count() AS n FROM recon_run WHERE {condition} GROUP ALL"),
                Value::Object(params),
            )
            .await?;
        Ok((runs, total))
    }

    /// Creates an owned run: takes the mapping's lease and saves the record
    /// with a heartbeat of `ttl`, in one transaction. `Ok(Err(rid))` when a
    /// live run `rid` (on any node) holds the mapping.
    pub async fn begin_run(
        &self,
        run: &ReconRunRecord,
        ttl: Duration,
    ) -> Result<Result<(), String>, StoreError> {
        let sql = format!(
            "BEGIN TRANSACTION; \
             LET $lease = type::record('recon_lease', $run.mapping); \
             LET $held = $lease.rid; \
             IF $held != NONE AND $lease.until >= time::now() {{ THROW '{LEASE_HELD}' + $held; }}; \
             UPSERT $lease CONTENT {{ mapping: $run.mapping, rid: $run.rid, node: $run.node, \
                until: time::now() + <duration> $ttl }} RETURN NONE; \
             UPSERT type::record('recon_run', $run.rid) SET {RUN_SET}, \
                until = time::now() + <duration> $ttl, cancel_requested = false RETURN NONE; \
             COMMIT TRANSACTION;"
        );
        let params = json!({ "run": run, "ttl": surreal_duration(ttl) });
        with_retry(|| async {
            let mut response =
                bind_all(self.db.shared().query(sql.as_str()), params.clone()).await?;
            let errors = response.take_errors();
            // A refusal fails every statement of the transaction; the THROW says why.
            let messages: Vec<String> = errors.into_values().map(|e| e.to_string()).collect();
            if let Some(held) = messages.iter().find(|m| m.contains(LEASE_HELD)) {
                let holder = held
                    .split(LEASE_HELD)
                    .nth(1)
                    .unwrap_or_default()
                    .chars()
                    .take_while(|c| c.is_ascii_hexdigit() || *c == '-')
                    .collect();
                return Ok(Err(holder));
            }
            match messages
                .into_iter()
                .find(|m| !m.contains("failed transaction"))
            {
                Some(message) => Err(StoreError::Query(message)),
                None => Ok(Ok(())),
            }
        })
        .await
    }

    /// The owner's progress save, which also renews the run's heartbeat and
    /// its mapping's lease by `ttl` and reads back a cancel request. Applies
    /// only while the run is ACTIVE under `run.node` (a final save with the
    /// run's end state included).
    pub async fn save_progress(
        &self,
        run: &ReconRunRecord,
        ttl: Duration,
    ) -> Result<RunStanding, StoreError> {
        let params = json!({ "run": run, "ttl": surreal_duration(ttl) });
        let cancel: Option<bool> = self
            .query_one(
                &format!(
                    "UPDATE type::record('recon_run', $run.rid) SET {RUN_SET}, \
                     until = time::now() + <duration> $ttl \
                     WHERE node = $run.node AND state = 'ACTIVE' RETURN VALUE cancel_requested ?? false"
                ),
                params.clone(),
            )
            .await?;
        let Some(cancel_requested) = cancel else {
            return Ok(RunStanding::Lost);
        };
        // Only a run still owned renews its mapping's lease.
        self.execute(
            "UPDATE type::record('recon_lease', $run.mapping) SET until = time::now() + <duration> $ttl \
             WHERE rid = $run.rid AND node = $run.node RETURN NONE",
            params,
        )
        .await?;
        Ok(RunStanding::Owned { cancel_requested })
    }

    /// The owner's final save: the run's end state and the release of its
    /// mapping's lease, in one transaction, so whoever reads the run as ended
    /// can start the mapping again. `Lost` (and only the lease released) when
    /// another node marked the run FAILED first.
    pub async fn end_run(&self, run: &ReconRunRecord) -> Result<RunStanding, StoreError> {
        let sql = format!(
            "BEGIN TRANSACTION; \
             UPDATE type::record('recon_run', $run.rid) SET {RUN_SET} \
                WHERE node = $run.node AND state = 'ACTIVE' RETURN VALUE rid; \
             DELETE type::record('recon_lease', $run.mapping) WHERE rid = $run.rid RETURN NONE; \
             COMMIT TRANSACTION;"
        );
        let params = json!({ "run": run });
        with_retry(|| async {
            let mut response =
                bind_all(self.db.shared().query(sql.as_str()), params.clone()).await?;
            // Statement 0 is BEGIN.
            let saved: surrealdb::types::Value = response.take(1)?;
            let saved: Vec<String> = super::decode_rows(saved.into_json_value())?;
            Ok(if saved.is_empty() {
                RunStanding::Lost
            } else {
                RunStanding::Owned {
                    cancel_requested: false,
                }
            })
        })
        .await
    }

    /// Asks the owner of an ACTIVE run to cancel it; the run as it is stored
    /// (`None` if there is no such run). A finished run is left as it is.
    pub async fn request_cancel(&self, rid: &str) -> Result<Option<ReconRunRecord>, StoreError> {
        self.execute(
            "UPDATE type::record('recon_run', $rid) SET cancel_requested = true \
             WHERE state IN ['PENDING', 'ACTIVE'] RETURN NONE",
            json!({ "rid": rid }),
        )
        .await?;
        self.get_run(rid).await
    }

    /// Marks FAILED, with `reason`, the runs still PENDING or ACTIVE whose
    /// heartbeat has expired (by the store's clock): their node stopped. Runs
    /// without a heartbeat (written before runs were owned) count as
    /// expired. Any node may call this; a live run of any node is left alone.
    /// Returns how many.
    pub async fn fail_expired_runs(&self, reason: &str) -> Result<usize, StoreError> {
        self.fail_runs(reason, false).await
    }

    /// Marks every run still PENDING or ACTIVE FAILED, live heartbeat or
    /// not: at the start of the one process an embedded store has, they can
    /// only be runs its last stop or crash cut short. Returns how many.
    pub async fn fail_unfinished_runs(&self, reason: &str) -> Result<usize, StoreError> {
        self.fail_runs(reason, true).await
    }

    async fn fail_runs(&self, reason: &str, all: bool) -> Result<usize, StoreError> {
        let params = json!({ "reason": reason, "ended": now_timestamp(), "all": all });
        let failed: Vec<String> = with_retry(|| {
            self.query_all(
                // The unfinished runs through the state index, then those records.
                "UPDATE (SELECT VALUE id FROM recon_run WHERE state IN ['PENDING', 'ACTIVE'] \
                 AND ($all OR until == NONE OR until < time::now())) \
                 SET state = 'FAILED', stage = 'COMPLETED_FAILED', ended = $ended, error = $reason \
                 WHERE state IN ['PENDING', 'ACTIVE'] RETURN VALUE rid",
                params.clone(),
            )
        })
        .await?;
        Ok(failed.len())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn run(rid: &str, mapping: &str, state: &str) -> ReconRunRecord {
        ReconRunRecord {
            rid: rid.into(),
            mapping: mapping.into(),
            state: state.into(),
            stage: "ACTIVE_RECONCILING_SOURCE".into(),
            started: now_timestamp(),
            started_by: "bootstrap".into(),
            ..ReconRunRecord::default()
        }
    }

    #[tokio::test]
    async fn runs_are_history_newest_first_and_crashes_do_not_leave_them_running() {
        let store = Store::open("mem://").await.unwrap();
        let mut first = run("0001", "csvEmployee_managedUser", "SUCCESS");
        first.situations.insert("ABSENT".into(), 3);
        first.record_failure(ReconFailureRecord {
            line: Some(3),
            reason: "expected 4 fields, got 3".into(),
            ..Default::default()
        });
        store.save_run(&first).await.unwrap();
        store
            .save_run(&run("0002", "managedUser_ldapAccount", "SUCCESS"))
            .await
            .unwrap();
        store
            .save_run(&run("0003", "csvEmployee_managedUser", "ACTIVE"))
            .await
            .unwrap();

        assert_eq!(store.get_run("0001").await.unwrap().unwrap(), first);
        assert!(store.get_run("nope").await.unwrap().is_none());
        let rids = |(runs, _): (Vec<ReconRunRecord>, u64)| -> Vec<String> {
            runs.into_iter().map(|r| r.rid).collect()
        };
        let everything = CompiledFilter::default();
        let all = store.query_runs(&everything, 0, 10).await.unwrap();
        assert_eq!(all.1, 3);
        assert_eq!(rids(all), ["0003", "0002", "0001"]);
        let of_csv = CompiledFilter {
            sql: "mapping = $m".into(),
            params: json!({ "m": "csvEmployee_managedUser" })
                .as_object()
                .cloned()
                .unwrap(),
        };
        let csv = store.query_runs(&of_csv, 0, 10).await.unwrap();
        assert_eq!(rids(csv), ["0003", "0001"]);

        assert_eq!(
            store
                .fail_expired_runs("idmd stopped during the run")
                .await
                .unwrap(),
            1,
            "a run without a heartbeat counts as cut short"
        );
        let interrupted = store.get_run("0003").await.unwrap().unwrap();
        assert_eq!(
            (interrupted.state.as_str(), interrupted.error.as_deref()),
            ("FAILED", Some("idmd stopped during the run"))
        );
        assert!(interrupted.ended.is_some());
    }

    fn owned(rid: &str, mapping: &str, node: &str) -> ReconRunRecord {
        ReconRunRecord {
            node: node.into(),
            ..run(rid, mapping, "ACTIVE")
        }
    }

    const LONG: Duration = Duration::from_secs(3600);

    #[tokio::test]
    async fn a_mapping_has_one_live_run_across_nodes_and_only_expired_runs_fail() {
        let store = Store::open("mem://").await.unwrap();
        let a = owned("0001", "m", "node-a");
        assert_eq!(store.begin_run(&a, LONG).await.unwrap(), Ok(()));
        // Node b: the same mapping is refused, naming the live run; another goes.
        assert_eq!(
            store
                .begin_run(&owned("0002", "m", "node-b"), LONG)
                .await
                .unwrap(),
            Err("0001".to_string())
        );
        assert!(store.get_run("0002").await.unwrap().is_none());
        assert_eq!(
            store
                .begin_run(&owned("0003", "other", "node-b"), LONG)
                .await
                .unwrap(),
            Ok(())
        );
        // A cancel request from any node reaches the owner's next save.
        assert_eq!(
            store.save_progress(&a, LONG).await.unwrap(),
            RunStanding::Owned {
                cancel_requested: false
            }
        );
        let asked = store.request_cancel("0001").await.unwrap().unwrap();
        assert!(asked.cancel_requested);
        assert_eq!(
            store.save_progress(&a, LONG).await.unwrap(),
            RunStanding::Owned {
                cancel_requested: true
            }
        );
        assert!(store.request_cancel("nope").await.unwrap().is_none());

        // A run that ended long ago (its heartbeat expired with it) stays as it ended.
        let mut ended = owned("0000", "old", "node-c");
        let short = Duration::from_millis(1);
        assert_eq!(store.begin_run(&ended, short).await.unwrap(), Ok(()));
        ended.state = "SUCCESS".into();
        assert!(matches!(
            store.save_progress(&ended, short).await.unwrap(),
            RunStanding::Owned { .. }
        ));
        tokio::time::sleep(Duration::from_millis(20)).await;
        // Live heartbeats: nothing to fail, whoever looks.
        assert_eq!(store.fail_expired_runs("gone").await.unwrap(), 0);
        assert_eq!(
            store.get_run("0000").await.unwrap().unwrap().state,
            "SUCCESS"
        );
        // A run whose node stopped: its heartbeat (1 ms) is past once we look.
        let dead = owned("0004", "third", "node-c");
        assert_eq!(
            store
                .begin_run(&dead, Duration::from_millis(1))
                .await
                .unwrap(),
            Ok(())
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(store.fail_expired_runs("gone").await.unwrap(), 1);
        let failed = store.get_run("0004").await.unwrap().unwrap();
        assert_eq!(
            (failed.state.as_str(), failed.error.as_deref()),
            ("FAILED", Some("gone"))
        );
        assert_eq!(
            store.get_run("0001").await.unwrap().unwrap().state,
            "ACTIVE"
        );
        assert_eq!(
            store.get_run("0003").await.unwrap().unwrap().state,
            "ACTIVE"
        );
        // Its node, back, finds it is no longer its run and cannot undo that.
        let mut late = dead.clone();
        late.state = "SUCCESS".into();
        assert_eq!(
            store.save_progress(&late, LONG).await.unwrap(),
            RunStanding::Lost
        );
        assert_eq!(store.end_run(&late).await.unwrap(), RunStanding::Lost);
        assert_eq!(
            store.get_run("0004").await.unwrap().unwrap().state,
            "FAILED"
        );
        // Its expired lease is taken over by the next run of the mapping.
        assert_eq!(
            store
                .begin_run(&owned("0005", "third", "node-b"), LONG)
                .await
                .unwrap(),
            Ok(())
        );

        // A finished run gives its mapping back in the same write.
        let mut done = a.clone();
        done.state = "CANCELED".into();
        assert!(matches!(
            store.end_run(&done).await.unwrap(),
            RunStanding::Owned { .. }
        ));
        assert_eq!(
            store.get_run("0001").await.unwrap().unwrap().state,
            "CANCELED"
        );
        assert_eq!(
            store
                .begin_run(&owned("0006", "m", "node-b"), LONG)
                .await
                .unwrap(),
            Ok(())
        );
        // Ending it again changes nothing, and leaves the lease another run holds.
        assert_eq!(store.end_run(&done).await.unwrap(), RunStanding::Lost);
        assert_eq!(
            store
                .begin_run(&owned("0007", "m", "node-a"), LONG)
                .await
                .unwrap(),
            Err("0006".to_string())
        );
    }

    #[test]
    fn a_phase_timing_gives_count_sum_extremes_mean_and_standard_deviation() {
        let mut timing = PhaseTiming::default();
        for ms in [30, 10, 20] {
            timing.add(Duration::from_millis(ms));
        }
        assert_eq!(
            (timing.count, timing.total_us, timing.min_us, timing.max_us),
            (3, 60_000, 10_000, 30_000)
        );
        assert!((timing.mean_us() - 20_000.0).abs() < 1e-6);
        // sqrt(((10 - 20)² + 0 + (30 - 20)²) / 3) ms
        assert!((timing.std_dev_us() - 8_164.966).abs() < 0.01);
        let mut once = PhaseTiming::default();
        once.add(Duration::from_micros(7));
        assert_eq!((once.min_us, once.max_us, once.std_dev_us()), (7, 7, 0.0));
    }

    #[tokio::test]
    async fn timings_are_saved_with_the_run_and_an_older_run_reads_without_them() {
        let store = Store::open("mem://").await.unwrap();
        let mut timed = run("0001", "m", "SUCCESS");
        timed
            .durations
            .entry("sourcePhase".into())
            .or_default()
            .add(Duration::from_micros(1500));
        store.save_run(&timed).await.unwrap();
        assert_eq!(store.get_run("0001").await.unwrap().unwrap(), timed);

        // As a run was stored before runs were timed.
        store
            .execute(
                "CREATE type::record('recon_run', $rid) CONTENT { rid: $rid, mapping: 'm', \
                 state: 'SUCCESS', stage: 'COMPLETED_SUCCESS', source: $progress, \
                 target: $progress, links: $progress, situations: {}, actions: {}, \
                 failures: [], failure_count: 0, started: $started, ended: NONE, \
                 started_by: 'bootstrap', error: NONE } RETURN NONE",
                json!({
                    "rid": "0000",
                    "progress": Progress::default(),
                    "started": now_timestamp(),
                }),
            )
            .await
            .unwrap();
        let older = store.get_run("0000").await.unwrap().unwrap();
        assert!(older.durations.is_empty());
        assert_eq!(older.state, "SUCCESS");
    }

    #[test]
    fn failures_are_all_counted_but_kept_only_up_to_the_cap() {
        let mut record = ReconRunRecord::default();
        for line in 0..(MAX_KEPT_FAILURES as u64 + 5) {
            record.record_failure(ReconFailureRecord {
                line: Some(line),
                ..Default::default()
            });
        }
        assert_eq!(
            (record.failure_count, record.failures.len()),
            (MAX_KEPT_FAILURES as i64 + 5, MAX_KEPT_FAILURES)
        );
    }
}
