//! Reconciliation throughput on embedded SurrealDB (surrealkv), in one run,
//! for HR files of 100k and 1M rows (the cookbook's columns):
//!
//! 1. the raw limit: SurrealQL `INSERT` of the rows in 1,000-row batches into
//!    a table with one unique index, with as many writers as the recon has;
//! 2. the initial recon of the cookbook mapping (CSV → managed/user, every row
//!    ABSENT → CREATE), `taskThreads` = the same number of writers;
//! 3. a no-change re-recon (every row CONFIRMED, nothing written);
//! 4. the process's peak RSS during each recon (reset between phases).
//!
//! The mapping is the cookbook's without the default password: argon2id
//! hashing (~14 ms a core, on purpose) would be the whole measurement.
//!
//! Run: `cargo bench -p idm-server --bench recon` (release).
//! `IDM_BENCH_ROWS=100000,1000000` and `IDM_BENCH_WRITERS=2` change the runs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use idm_server::managed::{ManagedObjects, ManagedSchema};
use idm_server::secrets::SecretBox;
use idm_server::store::{ConfigDocument, Store};
use idm_server::sync::recon::Reconciler;
use serde_json::{Value, json};
use surrealdb::engine::any::connect;

const RAW_BATCH: usize = 1000;

fn rate(count: usize, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64()
}

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Resets the peak-RSS mark, so each phase reports its own.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn row(n: usize) -> [String; 4] {
    [
        n.to_string(),
        format!("First{}", n % 9973),
        format!("Last{n}"),
        format!("555{n:07}"),
    ]
}

fn write_csv(path: &Path, rows: usize) {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    writeln!(out, "uid,firstName,lastName,telephoneNumber").unwrap();
    for n in 0..rows {
        writeln!(out, "{}", row(n).join(",")).unwrap();
    }
    out.flush().unwrap();
}

async fn raw_insert(dir: &Path, writers: usize, total: usize) -> f64 {
    let db = connect(format!("surrealkv://{}", dir.display()))
        .await
        .unwrap();
    db.use_ns("bench").use_db("bench").await.unwrap();
    db.query("DEFINE TABLE person SCHEMALESS; DEFINE INDEX person_uid ON person FIELDS uid UNIQUE;")
        .await
        .unwrap()
        .check()
        .unwrap();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for writer in 0..writers {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            let batches = (0..total.div_ceil(RAW_BATCH)).filter(|b| b % writers == writer);
            for batch in batches {
                let rows: Vec<Value> = (batch * RAW_BATCH..((batch + 1) * RAW_BATCH).min(total))
                    .map(|n| {
                        let [uid, first, last, phone] = row(n);
                        json!({"uid": uid, "firstName": first, "lastName": last, "telephoneNumber": phone})
                    })
                    .collect();
                loop {
                    let result = db
                        .query("INSERT INTO person $rows RETURN NONE")
                        .bind(("rows", rows.clone()))
                        .await;
                    match result.and_then(|r| r.check()) {
                        Ok(_) => break,
                        Err(e) if e.to_string().contains("can be retried") => continue,
                        Err(e) => panic!("raw insert: {e}"),
                    }
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    rate(total, start.elapsed())
}

async fn reconciler(dir: &Path, csv: &Path, writers: usize) -> Reconciler {
    std::fs::create_dir_all(dir).unwrap();
    let store = Store::open(&format!("surrealkv://{}", dir.join("idm").display()))
        .await
        .unwrap();
    let secrets = SecretBox::load_or_create(&dir.join("idm.key"), None).unwrap();
    let objects = ManagedObjects::new(
        Arc::new(ManagedSchema::builtin().unwrap()),
        store.clone(),
        Arc::new(secrets),
    );
    let sample: Value =
        serde_json::from_str(include_str!("../../samples/sync/sync.json")).unwrap();
    let mut mapping = sample["mappings"][0].clone();
    mapping["properties"]
        .as_array_mut()
        .unwrap()
        .retain(|p| p["target"] != "password");
    mapping["taskThreads"] = json!(writers);
    let connector = json!({
        "connectorType": "csv",
        "file": csv,
        "objectTypes": {"employee": {"uidColumn": "uid"}},
    });
    for (kind, name, body) in [
        ("connector", "csv", connector),
        ("mapping", "csvEmployee_managedUser", mapping),
    ] {
        store
            .put_config(&ConfigDocument {
                kind: kind.into(),
                name: name.into(),
                body: body.as_object().cloned().unwrap(),
                source: "bench".into(),
            })
            .await
            .unwrap();
    }
    Reconciler::new(store, objects, PathBuf::from("."))
}

/// One recon to its end: rows per second and the phase's peak RSS.
async fn recon(reconciler: &Reconciler, rows: usize, expect: &str) -> (f64, f64) {
    reset_peak_rss();
    let start = Instant::now();
    let run = reconciler
        .start("csvEmployee_managedUser", None, "bench")
        .await
        .unwrap();
    let run = reconciler.wait(&run.rid).await.unwrap();
    let elapsed = start.elapsed();
    assert_eq!(run.state, "SUCCESS", "{run:?}");
    assert_eq!(run.failure_count, 0, "{:?}", run.failures.first());
    assert_eq!(
        run.situations.get(expect).copied(),
        Some(rows as i64),
        "{:?}",
        run.situations
    );
    (rate(rows, elapsed), peak_rss_mib())
}

#[tokio::main]
async fn main() {
    let sizes: Vec<usize> = std::env::var("IDM_BENCH_ROWS")
        .unwrap_or_else(|_| "100000,1000000".into())
        .split(',')
        .map(|n| n.trim().parse().unwrap())
        .collect();
    let writers: usize = std::env::var("IDM_BENCH_WRITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let root = std::env::temp_dir().join(format!("idm-recon-bench-{}", std::process::id()));
    std::fs::create_dir_all(&root).unwrap();
    println!(
        "idm recon bench: {sizes:?} rows, {writers} writers / taskThreads, surrealkv in {}",
        root.display()
    );
    for rows in sizes {
        let csv = root.join(format!("hr-{rows}.csv"));
        write_csv(&csv, rows);
        let raw = raw_insert(&root.join(format!("raw-{rows}")), writers, rows).await;
        println!("{rows:>8} rows  raw INSERT limit      : {raw:>8.0} rows/s");
        let reconciler = reconciler(&root.join(format!("idm-{rows}")), &csv, writers).await;
        let (initial, initial_rss) = recon(&reconciler, rows, "ABSENT").await;
        println!(
            "{rows:>8} rows  initial recon (CREATE): {initial:>8.0} rows/s  {:.2} x raw  peak RSS {initial_rss:.0} MiB",
            initial / raw
        );
        let (again, again_rss) = recon(&reconciler, rows, "CONFIRMED").await;
        println!(
            "{rows:>8} rows  no-change re-recon     : {again:>8.0} rows/s  {:.2} x initial  peak RSS {again_rss:.0} MiB",
            again / initial
        );
    }
    let _ = std::fs::remove_dir_all(&root);
}
