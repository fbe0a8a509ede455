//! What the benches share: rates, peak RSS, batching, and the raw SurrealQL
//! baseline they measure idm against.
#![allow(dead_code)] // each bench uses its own part

use std::ops::Range;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use surrealdb::Surreal;
use surrealdb::engine::any::{Any, connect};

pub fn rate(count: usize, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64()
}

/// The process's peak resident set, in MiB.
pub fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Splits 0..total into `writers` interleaved runs of whole batches.
pub fn batches(writer: usize, writers: usize, total: usize, batch: usize) -> Vec<Range<usize>> {
    (0..total.div_ceil(batch))
        .filter(|b| b % writers == writer)
        .map(|b| b * batch..((b + 1) * batch).min(total))
        .collect()
}

/// A fresh embedded SurrealDB, outside idm.
pub async fn open_raw(dir: &Path) -> Surreal<Any> {
    let db = connect(format!("surrealkv://{}", dir.display()))
        .await
        .unwrap();
    db.use_ns("bench").use_db("bench").await.unwrap();
    db
}

/// Runs statements with their bindings, again while SurrealDB reports a
/// retryable conflict; panics on anything else.
pub async fn execute_retrying(db: &Surreal<Any>, sql: &str, bindings: &[(&str, &Value)]) {
    loop {
        let mut query = db.query(sql);
        for (name, value) in bindings {
            query = query.bind((name.to_string(), (*value).clone()));
        }
        let errors: Vec<String> = match query.await {
            Ok(mut response) => response
                .take_errors()
                .into_values()
                .map(|e| e.to_string())
                .collect(),
            Err(e) => vec![e.to_string()],
        };
        if errors.is_empty() {
            return;
        }
        if !errors.iter().any(|e| e.contains("can be retried")) {
            panic!("raw insert: {errors:?}");
        }
    }
}

/// The raw limit: `INSERT` of one record per row, in batches, into a table
/// with one unique index on `unique_field`, with `writers` concurrent writers.
pub async fn raw_insert(
    dir: &Path,
    writers: usize,
    total: usize,
    batch: usize,
    unique_field: &str,
    row: fn(usize) -> Value,
) -> f64 {
    let db = open_raw(dir).await;
    db.query(format!(
        "DEFINE TABLE person SCHEMALESS; DEFINE INDEX person_unique ON person FIELDS {unique_field} UNIQUE;"
    ))
    .await
    .unwrap()
    .check()
    .unwrap();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for writer in 0..writers {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            for range in batches(writer, writers, total, batch) {
                let rows = Value::Array(range.map(row).collect());
                execute_retrying(
                    &db,
                    "INSERT INTO person $rows RETURN NONE",
                    &[("rows", &rows)],
                )
                .await;
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    rate(total, start.elapsed())
}

/// What idmd does at start: sort keys for the schema's searchable
/// properties (store/sort.rs), unless `IDM_BENCH_SORT_KEYS=0` (to measure
/// what they cost).
pub async fn prepare_indexes(objects: &idm_server::managed::ManagedObjects) {
    if std::env::var("IDM_BENCH_SORT_KEYS").as_deref() != Ok("0") {
        objects.prepare_indexes().await.unwrap();
    }
}
