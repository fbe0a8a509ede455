//! Recon run records: what a reconciliation did, kept as history. The engine
//! saves the whole record as it progresses; readers get the latest copy.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::query::CompiledFilter;
use super::{Store, StoreError, now_timestamp};

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
                           failure_count, started, ended, started_by, error";

impl Store {
    /// Creates or replaces a run record.
    pub async fn save_run(&self, run: &ReconRunRecord) -> Result<(), StoreError> {
        self.execute(
            "UPSERT type::record('recon_run', $run.rid) CONTENT $run RETURN NONE",
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

    /// Marks runs that were PENDING or ACTIVE when idmd stopped as FAILED, so
    /// the history never shows a run as running forever. Returns how many.
    pub async fn fail_unfinished_runs(&self, reason: &str) -> Result<usize, StoreError> {
        let unfinished: Vec<ReconRunRecord> = self
            .query_all(
                &format!(
                    "SELECT {RUN_COLUMNS} FROM recon_run WHERE state IN ['PENDING', 'ACTIVE']"
                ),
                json!({}),
            )
            .await?;
        for mut run in unfinished.iter().cloned() {
            run.state = "FAILED".into();
            run.stage = "COMPLETED_FAILED".into();
            run.ended = Some(now_timestamp());
            run.error = Some(reason.to_string());
            self.save_run(&run).await?;
        }
        Ok(unfinished.len())
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
                .fail_unfinished_runs("idmd stopped during the run")
                .await
                .unwrap(),
            1
        );
        let interrupted = store.get_run("0003").await.unwrap().unwrap();
        assert_eq!(
            (interrupted.state.as_str(), interrupted.error.as_deref()),
            ("FAILED", Some("idmd stopped during the run"))
        );
        assert!(interrupted.ended.is_some());
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
