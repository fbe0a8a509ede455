//! Prometheus metrics (`--metrics ADDR`, off by default): the names idmd
//! exports, the exporter's install, and the one-line helpers the work sites
//! call. The `metrics` facade's macros are no-ops until [`install`] sets a
//! recorder, so without `--metrics` the work sites cost a clock read.
//!
//! Labels are bounded: mapping, schedule and connector names come from the
//! conf, gRPC methods from the fixed service paths (anything else is
//! `unknown`), store operations from a fixed list. Never an object id, a
//! filter or a user name.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use metrics::{Unit, counter, describe_counter, describe_gauge, describe_histogram, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

use crate::store::{ReconRunRecord, Reschedule};

/// `{method, code}`: gRPC calls answered.
pub const GRPC_REQUESTS: &str = "idm_grpc_requests_total";
/// `{method}`: time to the answer's headers.
pub const GRPC_DURATION: &str = "idm_grpc_request_duration_seconds";
/// `{mapping}`: source rows a finished run processed (the target phase's
/// objects show in the situations).
pub const RECON_ROWS: &str = "idm_recon_rows_total";
/// `{mapping, situation}`.
pub const RECON_SITUATIONS: &str = "idm_recon_situations_total";
/// `{mapping, action}`.
pub const RECON_ACTIONS: &str = "idm_recon_actions_total";
/// `{mapping, state}`: SUCCESS, FAILED or CANCELED.
pub const RECON_DURATION: &str = "idm_recon_run_duration_seconds";
/// `{mapping}`: outbox entries waiting (sampled).
pub const OUTBOX_PENDING: &str = "idm_outbox_pending";
/// `{mapping}`: outbox entries given up on (sampled).
pub const OUTBOX_FAILED: &str = "idm_outbox_failed";
/// `{mapping}`: age of the oldest waiting entry, 0 when none (sampled).
pub const OUTBOX_OLDEST_AGE: &str = "idm_outbox_oldest_pending_age_seconds";
/// `{mapping, outcome}`: `delivered`, `retry` (tried again later) or
/// `failed` (given up, waits for an operator).
pub const OUTBOX_DELIVERIES: &str = "idm_outbox_deliveries_total";
/// `{schedule, outcome}`: SUCCESS, FAILED, SKIPPED_CONCURRENT, SKIPPED_MISFIRE.
pub const SCHEDULE_FIRES: &str = "idm_schedule_fires_total";
/// `{operation}`: see [`StoreOp`].
pub const STORE_DURATION: &str = "idm_store_operation_duration_seconds";
/// `{connector, operation}`: connect, get, search, create, update, delete.
pub const LDAP_DURATION: &str = "idm_ldap_operation_duration_seconds";
/// `{connector, operation}`.
pub const LDAP_ERRORS: &str = "idm_ldap_errors_total";
/// `{outcome}`: success, failed (wrong password, unknown name, disabled),
/// throttled, error.
pub const LOGINS: &str = "idm_logins_total";
pub const TOKEN_LOOKUPS: &str = "idm_token_lookups_total";
/// `{task}`: background tasks restarted after they died (the supervisor's).
pub const BACKGROUND_RESTARTS: &str = "idm_background_restarts_total";

/// Every metric idmd exports, for the README and the test.
pub const NAMES: &[&str] = &[
    GRPC_REQUESTS,
    GRPC_DURATION,
    RECON_ROWS,
    RECON_SITUATIONS,
    RECON_ACTIONS,
    RECON_DURATION,
    OUTBOX_PENDING,
    OUTBOX_FAILED,
    OUTBOX_OLDEST_AGE,
    OUTBOX_DELIVERIES,
    SCHEDULE_FIRES,
    STORE_DURATION,
    LDAP_DURATION,
    LDAP_ERRORS,
    LOGINS,
    BACKGROUND_RESTARTS,
];

/// Histogram buckets of call latencies (seconds): 1 ms to a minute.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
/// Buckets of reconciliation runs: a second to four hours.
const RUN_BUCKETS: &[f64] = &[
    1.0, 5.0, 15.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0,
];

#[derive(Debug, thiserror::Error)]
#[error("--metrics {addr}: {reason}")]
pub struct MetricsError {
    addr: SocketAddr,
    reason: String,
}

/// Installs the recorder and serves `/metrics` on `addr` (plain HTTP). Fails
/// at once when `addr` cannot be bound. Call once, inside the runtime.
pub fn install(addr: SocketAddr) -> Result<(), MetricsError> {
    let failed = |e: metrics_exporter_prometheus::BuildError| MetricsError {
        addr,
        reason: e.to_string(),
    };
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets(LATENCY_BUCKETS)
        .map_err(failed)?
        .set_buckets_for_metric(Matcher::Full(RECON_DURATION.into()), RUN_BUCKETS)
        .map_err(failed)?
        .install()
        .map_err(failed)?;
    describe();
    tracing::info!(%addr, "serving Prometheus metrics at http://{addr}/metrics");
    if !addr.ip().is_loopback() {
        tracing::warn!(%addr, "--metrics on a non-loopback address: anyone who reaches it reads the metrics (plain HTTP, no authentication)");
    }
    Ok(())
}

fn describe() {
    describe_counter!(
        GRPC_REQUESTS,
        "gRPC calls answered, by method and status code"
    );
    describe_histogram!(
        GRPC_DURATION,
        Unit::Seconds,
        "Time from a gRPC call to its answer's headers"
    );
    describe_counter!(
        RECON_ROWS,
        "Source rows finished reconciliation runs processed"
    );
    describe_counter!(RECON_SITUATIONS, "Situations reconciliation runs found");
    describe_counter!(RECON_ACTIONS, "Actions reconciliation runs took");
    describe_histogram!(
        RECON_DURATION,
        Unit::Seconds,
        "Duration of reconciliation runs, by final state"
    );
    describe_gauge!(OUTBOX_PENDING, "Implicit sync entries waiting for delivery");
    describe_gauge!(OUTBOX_FAILED, "Implicit sync entries given up on");
    describe_gauge!(
        OUTBOX_OLDEST_AGE,
        Unit::Seconds,
        "Age of the oldest implicit sync entry waiting (0 when none)"
    );
    describe_counter!(
        OUTBOX_DELIVERIES,
        "Implicit sync deliveries: delivered, retry (tried again later) or failed (given up)"
    );
    describe_counter!(SCHEDULE_FIRES, "Schedule fires by outcome");
    describe_histogram!(
        STORE_DURATION,
        Unit::Seconds,
        "Store operation latency by operation"
    );
    describe_histogram!(
        LDAP_DURATION,
        Unit::Seconds,
        "LDAP operation latency by connector and operation"
    );
    describe_counter!(LDAP_ERRORS, "LDAP operations that failed");
    describe_counter!(LOGINS, "Password logins by outcome");
    describe_counter!(
        TOKEN_LOOKUPS,
        "Bearers this node did not know, read from the store by id (or not), by outcome"
    );
    describe_counter!(
        BACKGROUND_RESTARTS,
        "Background tasks restarted after they stopped"
    );
}

/// The fixed operation names of store latencies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreOp {
    /// A read of one row or value.
    QueryOne,
    /// A read of rows.
    QueryAll,
    /// A count.
    Count,
    /// A statement without a result (a write, mostly).
    Execute,
    /// A write transaction, its retries included.
    Transaction,
    /// A query page of objects (filter, sort, page).
    Search,
    /// The implicit sync queue's counts.
    OutboxSummary,
}

impl StoreOp {
    pub fn name(self) -> &'static str {
        match self {
            StoreOp::QueryOne => "query_one",
            StoreOp::QueryAll => "query_all",
            StoreOp::Count => "count",
            StoreOp::Execute => "execute",
            StoreOp::Transaction => "transaction",
            StoreOp::Search => "search",
            StoreOp::OutboxSummary => "outbox_summary",
        }
    }
}

/// Records the time from its making to its drop as a store operation's
/// latency (errors and cancelled calls included).
pub struct StoreTimer {
    op: StoreOp,
    started: Instant,
}

pub fn store_timer(op: StoreOp) -> StoreTimer {
    StoreTimer {
        op,
        started: Instant::now(),
    }
}

impl Drop for StoreTimer {
    fn drop(&mut self) {
        histogram!(STORE_DURATION, "operation" => self.op.name()).record(self.started.elapsed());
    }
}

/// A gRPC call answered.
pub fn grpc_answered(method: &'static str, code: tonic::Code, took: Duration) {
    counter!(GRPC_REQUESTS, "method" => method, "code" => idm_proto::code_name(code)).increment(1);
    histogram!(GRPC_DURATION, "method" => method).record(took);
}

/// A reconciliation run ended, as its final record says.
pub fn recon_ended(run: &ReconRunRecord, took: Duration) {
    let mapping = run.mapping.clone();
    counter!(RECON_ROWS, "mapping" => mapping.clone())
        .increment(u64::try_from(run.source.processed).unwrap_or(0));
    for (situation, n) in &run.situations {
        counter!(RECON_SITUATIONS, "mapping" => mapping.clone(), "situation" => situation.clone())
            .increment(u64::try_from(*n).unwrap_or(0));
    }
    for (action, n) in &run.actions {
        counter!(RECON_ACTIONS, "mapping" => mapping.clone(), "action" => action.clone())
            .increment(u64::try_from(*n).unwrap_or(0));
    }
    histogram!(RECON_DURATION, "mapping" => mapping, "state" => run.state.clone()).record(took);
}

/// Entries of `mapping` delivered.
pub fn outbox_delivered(mapping: &str, entries: usize) {
    if entries > 0 {
        counter!(OUTBOX_DELIVERIES, "mapping" => mapping.to_string(), "outcome" => "delivered")
            .increment(entries as u64);
    }
}

/// Entries that failed delivery: tried again later, or given up.
pub fn outbox_failed(failures: &[Reschedule]) {
    for failure in failures {
        let outcome = if failure.failed { "failed" } else { "retry" };
        counter!(OUTBOX_DELIVERIES, "mapping" => failure.entry.mapping.clone(), "outcome" => outcome)
            .increment(1);
    }
}

/// A schedule fired (or skipped a fire) with this outcome.
pub fn schedule_fired(schedule: &str, outcome: &str) {
    counter!(SCHEDULE_FIRES, "schedule" => schedule.to_string(), "outcome" => outcome.to_string())
        .increment(1);
}

/// An LDAP operation of `connector` ended.
pub fn ldap_operation(connector: &str, operation: &'static str, started: Instant, ok: bool) {
    histogram!(LDAP_DURATION, "connector" => connector.to_string(), "operation" => operation)
        .record(started.elapsed());
    if !ok {
        counter!(LDAP_ERRORS, "connector" => connector.to_string(), "operation" => operation)
            .increment(1);
    }
}

/// A password login ended: `success`, `failed`, `throttled` or `error`.
/// A bearer this node did not know was read by id (`found`, `missing`,
/// `failed`) or not (`skipped`: the rate limit was spent).
pub fn token_lookup(outcome: &'static str) {
    counter!(TOKEN_LOOKUPS, "outcome" => outcome).increment(1);
}

pub fn login(outcome: &'static str) {
    counter!(LOGINS, "outcome" => outcome).increment(1);
}

/// For health's supervisor: a background task was restarted.
pub fn background_restarted(task: &'static str) {
    counter!(BACKGROUND_RESTARTS, "task" => task).increment(1);
}

/// How often the outbox sampler reads the queue's counts.
pub const OUTBOX_SAMPLE_EVERY: Duration = Duration::from_secs(5);

/// Samples the outbox gauges every [`OUTBOX_SAMPLE_EVERY`] until `stop`
/// turns true. One grouped count per sample; a mapping whose queue emptied
/// reads 0, not its last value.
pub async fn run_outbox_sampler(
    store: crate::store::Store,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut seen = std::collections::BTreeSet::<String>::new();
    let mut every = tokio::time::interval(OUTBOX_SAMPLE_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            changed = stop.wait_for(|stop| *stop) => {
                let _ = changed;
                return;
            }
        }
        match store.queue_counts().await {
            Ok(queues) => outbox_sampled(&queues, &mut seen, time::OffsetDateTime::now_utc()),
            Err(e) => tracing::debug!(error = %e, "sampling the outbox for metrics failed"),
        }
        match store.pending_hash_count().await {
            Ok(pending) => metrics::gauge!("idm_password_hashes_pending").set(pending as f64),
            Err(e) => tracing::debug!(error = %e, "sampling the password hash queue failed"),
        }
    }
}

fn outbox_sampled(
    queues: &[crate::store::QueueSummary],
    seen: &mut std::collections::BTreeSet<String>,
    now: time::OffsetDateTime,
) {
    use metrics::gauge;
    let mut gone = std::mem::take(seen);
    for queue in queues {
        gone.remove(&queue.mapping);
        seen.insert(queue.mapping.clone());
        let age = oldest_age(queue.oldest_pending.as_deref(), now);
        gauge!(OUTBOX_PENDING, "mapping" => queue.mapping.clone()).set(queue.pending as f64);
        gauge!(OUTBOX_FAILED, "mapping" => queue.mapping.clone()).set(queue.failed as f64);
        gauge!(OUTBOX_OLDEST_AGE, "mapping" => queue.mapping.clone()).set(age);
    }
    for mapping in gone {
        gauge!(OUTBOX_PENDING, "mapping" => mapping.clone()).set(0.0);
        gauge!(OUTBOX_FAILED, "mapping" => mapping.clone()).set(0.0);
        gauge!(OUTBOX_OLDEST_AGE, "mapping" => mapping).set(0.0);
    }
}

/// Seconds since `oldest` (RFC 3339), 0 for none or one in the future.
fn oldest_age(oldest: Option<&str>, now: time::OffsetDateTime) -> f64 {
    use time::format_description::well_known::Rfc3339;
    oldest
        .and_then(|t| time::OffsetDateTime::parse(t, &Rfc3339).ok())
        .map_or(0.0, |t| (now - t).as_seconds_f64().max(0.0))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn names_are_prefixed_unique_and_durations_in_seconds() {
        for (i, name) in NAMES.iter().enumerate() {
            assert!(name.starts_with("idm_"), "{name}");
            assert!(!NAMES[i + 1..].contains(name), "{name} twice");
            if name.contains("duration") || name.contains("age") {
                assert!(name.ends_with("_seconds"), "{name}");
            }
        }
    }

    #[test]
    fn the_oldest_age_is_seconds_since_and_never_negative() {
        let now = time::OffsetDateTime::parse(
            "2026-01-01T00:01:00.000000Z",
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap();
        assert_eq!(oldest_age(Some("2026-01-01T00:00:00.000000Z"), now), 60.0);
        assert_eq!(oldest_age(Some("2026-01-01T00:02:00.000000Z"), now), 0.0);
        assert_eq!(oldest_age(Some("not a time"), now), 0.0);
        assert_eq!(oldest_age(None, now), 0.0);
    }

    #[test]
    fn a_queue_that_emptied_reads_zero_not_its_last_value() {
        use crate::store::QueueSummary;
        let now = time::OffsetDateTime::parse(
            "2026-01-01T00:01:00.000000Z",
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap();
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let mut seen = std::collections::BTreeSet::new();
        metrics::with_local_recorder(&recorder, || {
            outbox_sampled(
                &[
                    QueueSummary {
                        mapping: "toLdap".into(),
                        pending: 3,
                        failed: 1,
                        oldest_pending: Some("2026-01-01T00:00:30.000000Z".into()),
                        ..QueueSummary::default()
                    },
                    QueueSummary {
                        mapping: "toCsv".into(),
                        pending: 2,
                        ..QueueSummary::default()
                    },
                ],
                &mut seen,
                now,
            );
        });
        let text = handle.render();
        for line in [
            r#"idm_outbox_pending{mapping="toLdap"} 3"#,
            r#"idm_outbox_failed{mapping="toLdap"} 1"#,
            r#"idm_outbox_oldest_pending_age_seconds{mapping="toLdap"} 30"#,
            r#"idm_outbox_pending{mapping="toCsv"} 2"#,
        ] {
            assert!(text.contains(line), "{line} not in\n{text}");
        }
        // toLdap's queue emptied: no row for it any more.
        metrics::with_local_recorder(&recorder, || {
            outbox_sampled(
                &[QueueSummary {
                    mapping: "toCsv".into(),
                    pending: 1,
                    ..QueueSummary::default()
                }],
                &mut seen,
                now,
            );
        });
        let text = handle.render();
        for line in [
            r#"idm_outbox_pending{mapping="toLdap"} 0"#,
            r#"idm_outbox_failed{mapping="toLdap"} 0"#,
            r#"idm_outbox_oldest_pending_age_seconds{mapping="toLdap"} 0"#,
            r#"idm_outbox_pending{mapping="toCsv"} 1"#,
        ] {
            assert!(text.contains(line), "{line} not in\n{text}");
        }
    }
}
