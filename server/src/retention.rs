//! Retention: how long each kind of history is kept, and the background
//! pruner that deletes what is older (`store/retention.rs` does the deleting).
//!
//! The pruner wakes every [`Retention::interval`] (and once soon after start)
//! and, for each kind with an age, deletes batch by batch (one short
//! transaction each, a pause between them) until nothing older is left or
//! the pass's budget is spent; the rest waits for the next pass. So history
//! never holds a long transaction against the writers, and a store that
//! piled up years of history is worked down over a few passes.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::watch;

use crate::store::{PRUNE_BATCH, Store, StoreError};

const DAY: Duration = Duration::from_secs(86_400);

/// How long a kind of history is kept: a duration, or forever (`None`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Age(pub Option<Duration>);

impl Age {
    pub const FOREVER: Age = Age(None);

    pub fn days(days: u64) -> Age {
        Age(Some(DAY * u32::try_from(days).unwrap_or(u32::MAX)))
    }
}

#[derive(Debug, thiserror::Error)]
#[error("expected a duration such as 90d, 12h or 30m, or `forever`: {0}")]
pub struct AgeError(String);

impl FromStr for Age {
    type Err = AgeError;

    /// `forever`, or a positive humantime duration (`90d`, `1y`, `36h`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("forever") {
            return Ok(Age::FOREVER);
        }
        match humantime::parse_duration(s) {
            Ok(d) if d.is_zero() => Err(AgeError("0 would delete history as it is written".into())),
            // Beyond any timestamp idm writes: the same as forever.
            Ok(d) if d > DAY * 365 * 10_000 => Ok(Age::FOREVER),
            Ok(d) => Ok(Age(Some(d))),
            Err(e) => Err(AgeError(e.to_string())),
        }
    }
}

impl fmt::Display for Age {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            None => f.write_str("forever"),
            // Whole days as days: humantime would say 90d is "2months 29days 7h 34m 48s".
            Some(d) if d.as_secs() % DAY.as_secs() == 0 && d.subsec_nanos() == 0 => {
                write!(f, "{}d", d.as_secs() / DAY.as_secs())
            }
            Some(d) => write!(f, "{}", humantime::format_duration(d)),
        }
    }
}

/// How long each kind of history is kept (`--retain-*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Claimed schedule ticks (`schedule_tick`); each schedule's newest stays.
    pub schedule_ticks: Age,
    /// Schedule execution history; RUNNING ones stay.
    pub executions: Age,
    /// Recon run records with their kept failures; PENDING/ACTIVE ones stay.
    pub recon_runs: Age,
    /// The audit trail.
    pub audit: Age,
    /// Outbox entries that failed for good, counted from their last attempt.
    pub failed_sync: Age,
    /// How often the pruner runs.
    pub interval: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            schedule_ticks: Age::days(1),
            executions: Age::days(90),
            recon_runs: Age::days(90),
            audit: Age::days(365),
            failed_sync: Age::days(30),
            interval: Duration::from_secs(300),
        }
    }
}

/// The kinds of history, in the order a pass prunes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    ScheduleTicks,
    Executions,
    ReconRuns,
    Audit,
    FailedSync,
}

impl Kind {
    const ALL: [Kind; 5] = [
        Kind::ScheduleTicks,
        Kind::Executions,
        Kind::ReconRuns,
        Kind::Audit,
        Kind::FailedSync,
    ];

    fn name(self) -> &'static str {
        match self {
            Kind::ScheduleTicks => "schedule_ticks",
            Kind::Executions => "executions",
            Kind::ReconRuns => "recon_runs",
            Kind::Audit => "audit",
            Kind::FailedSync => "failed_sync",
        }
    }

    fn age(self, retention: &Retention) -> Age {
        match self {
            Kind::ScheduleTicks => retention.schedule_ticks,
            Kind::Executions => retention.executions,
            Kind::ReconRuns => retention.recon_runs,
            Kind::Audit => retention.audit,
            Kind::FailedSync => retention.failed_sync,
        }
    }

    async fn prune(
        self,
        store: &Store,
        before: OffsetDateTime,
        limit: usize,
    ) -> Result<u64, StoreError> {
        match self {
            Kind::ScheduleTicks => store.prune_schedule_ticks(before, limit).await,
            Kind::Executions => store.prune_executions(before, limit).await,
            Kind::ReconRuns => store.prune_recon_runs(before, limit).await,
            Kind::Audit => store.prune_audit(before, limit).await,
            Kind::FailedSync => store.prune_failed_sync(before, limit).await,
        }
    }
}

/// How a pass goes: rows per batch, batches per kind per pass, the pause between batches.
#[derive(Debug, Clone, Copy)]
struct Pace {
    batch: usize,
    budget: usize,
    pause: Duration,
}

const PACE: Pace = Pace {
    batch: PRUNE_BATCH,
    // 100 batches: 50,000 rows of a kind per pass, 14 million a day at 5 minutes.
    budget: 100,
    pause: Duration::from_millis(50),
};

/// The first pass waits this long after start (or the interval, if shorter),
/// so a start's own work goes first.
const FIRST_PASS: Duration = Duration::from_secs(30);

/// Prunes history every `retention.interval` until `stop` turns true.
/// A plain loop (no task of its own), for a supervisor to run.
pub async fn run(store: Store, retention: Retention, mut stop: watch::Receiver<bool>) {
    if Kind::ALL
        .iter()
        .all(|kind| kind.age(&retention) == Age::FOREVER)
    {
        tracing::info!("retention: every kind of history is kept forever");
        let _ = stop.wait_for(|stop| *stop).await;
        return;
    }
    // Never a busy loop, whatever the (hidden) flag says.
    let interval = retention.interval.max(Duration::from_millis(100));
    let mut wait = FIRST_PASS.min(interval);
    loop {
        if !pause(&mut stop, wait).await {
            return;
        }
        prune_pass(&store, &retention, PACE, &mut stop).await;
        wait = interval;
    }
}

/// Sleeps `wait`; false if asked to stop meanwhile (or the sender is gone).
async fn pause(stop: &mut watch::Receiver<bool>, wait: Duration) -> bool {
    if *stop.borrow() {
        return false;
    }
    let stopped = tokio::select! {
        () = tokio::time::sleep(wait) => false,
        _ = stop.wait_for(|stop| *stop) => true,
    };
    !stopped
}

/// One pass over every kind; what it deleted, per kind (in [`Kind::ALL`] order).
async fn prune_pass(
    store: &Store,
    retention: &Retention,
    pace: Pace,
    stop: &mut watch::Receiver<bool>,
) -> [u64; 5] {
    let mut pruned = [0; 5];
    for (slot, kind) in pruned.iter_mut().zip(Kind::ALL) {
        let Age(Some(age)) = kind.age(retention) else {
            continue;
        };
        let before = OffsetDateTime::now_utc() - age;
        for batch in 0..pace.budget {
            if batch > 0 && !pause(stop, pace.pause).await {
                return pruned;
            }
            match kind.prune(store, before, pace.batch).await {
                Ok(n) => {
                    *slot += n;
                    if n < pace.batch as u64 {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(kind = kind.name(), error = %e, "pruning history failed; trying again next pass");
                    break;
                }
            }
        }
        if *slot > 0 {
            tracing::info!(
                kind = kind.name(),
                deleted = *slot,
                older_than = %Age(Some(age)),
                "history pruned"
            );
        }
    }
    pruned
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::store::ExecutionRecord;

    #[test]
    fn ages_read_durations_or_forever() {
        assert_eq!("90d".parse::<Age>().unwrap(), Age::days(90));
        assert_eq!(
            "1y".parse::<Age>().unwrap().0,
            Some(Duration::from_secs(31_557_600))
        );
        assert_eq!("2s".parse::<Age>().unwrap().0, Some(Duration::from_secs(2)));
        assert_eq!("forever".parse::<Age>().unwrap(), Age::FOREVER);
        assert_eq!(" Forever ".parse::<Age>().unwrap(), Age::FOREVER);
        assert!("0s".parse::<Age>().is_err());
        assert!("soon".parse::<Age>().is_err());
        assert!("-1d".parse::<Age>().is_err());
        assert_eq!(Age::days(90).to_string(), "90d");
        assert_eq!("36h".parse::<Age>().unwrap().to_string(), "1day 12h");
        assert_eq!(Age::FOREVER.to_string(), "forever");
        let defaults = Retention::default();
        assert_eq!(
            [
                defaults.schedule_ticks,
                defaults.executions,
                defaults.recon_runs,
                defaults.audit,
                defaults.failed_sync
            ],
            [
                Age::days(1),
                Age::days(90),
                Age::days(90),
                Age::days(365),
                Age::days(30)
            ]
        );
    }

    fn v7_days_ago(days: u64) -> String {
        let t = OffsetDateTime::now_utc() - DAY * u32::try_from(days).unwrap();
        let nanos = t.unix_timestamp_nanos();
        let ts = uuid::Timestamp::from_unix(
            uuid::NoContext,
            u64::try_from(nanos / 1_000_000_000).unwrap(),
            u32::try_from(nanos % 1_000_000_000).unwrap(),
        );
        uuid::Uuid::new_v7(ts).to_string()
    }

    /// A store with 250 audit entries and 250 executions from 400 days ago,
    /// and one of each from today.
    async fn store_with_history() -> Store {
        let store = Store::open("mem://").await.unwrap();
        for days in std::iter::repeat_n(400, 250).chain([0]) {
            store
                .save_execution(&ExecutionRecord {
                    eid: v7_days_ago(days),
                    schedule: "s".into(),
                    outcome: "SUCCESS".into(),
                    ..ExecutionRecord::default()
                })
                .await
                .unwrap();
            let aid = v7_days_ago(days);
            store
                .execute_for_tests(
                    "CREATE type::record('audit', $aid) SET aid = $aid",
                    json!({ "aid": aid }),
                )
                .await;
        }
        store
    }

    async fn left(store: &Store) -> (usize, usize) {
        let executions = store.list_executions("", 1000, 0).await.unwrap().len();
        let audit = store.count_for_tests("audit").await;
        (executions, audit)
    }

    #[tokio::test]
    async fn a_pass_prunes_every_kind_over_batches_and_forever_prunes_nothing() {
        let store = store_with_history().await;
        let (_stop, mut stopped) = watch::channel(false);
        let pace = Pace {
            batch: 100,
            budget: 100,
            pause: Duration::ZERO,
        };
        let forever = Retention {
            schedule_ticks: Age::FOREVER,
            executions: Age::FOREVER,
            recon_runs: Age::FOREVER,
            audit: Age::FOREVER,
            failed_sync: Age::FOREVER,
            ..Retention::default()
        };
        assert_eq!(
            prune_pass(&store, &forever, pace, &mut stopped).await,
            [0; 5]
        );
        assert_eq!(left(&store).await, (251, 251));

        let pruned = prune_pass(&store, &Retention::default(), pace, &mut stopped).await;
        assert_eq!(pruned, [0, 250, 0, 250, 0]);
        assert_eq!(left(&store).await, (1, 1), "today's stay");
    }

    #[tokio::test]
    async fn a_pass_stops_at_its_budget_and_the_next_goes_on() {
        let store = store_with_history().await;
        let (_stop, mut stopped) = watch::channel(false);
        let pace = Pace {
            batch: 100,
            budget: 2,
            pause: Duration::ZERO,
        };
        let retention = Retention::default();
        assert_eq!(
            prune_pass(&store, &retention, pace, &mut stopped).await,
            [0, 200, 0, 200, 0]
        );
        assert_eq!(
            prune_pass(&store, &retention, pace, &mut stopped).await,
            [0, 50, 0, 50, 0]
        );
        assert_eq!(left(&store).await, (1, 1));
    }

    #[tokio::test]
    async fn the_loop_prunes_soon_after_start_and_ends_when_told() {
        let store = store_with_history().await;
        let (stop, stopped) = watch::channel(false);
        let retention = Retention {
            interval: Duration::from_millis(10),
            ..Retention::default()
        };
        let pruner = tokio::spawn(run(store.clone(), retention, stopped));
        while left(&store).await != (1, 1) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(10), pruner)
            .await
            .unwrap()
            .unwrap();
    }
}
