//! Reconciliation throughput on embedded SurrealDB (surrealkv), in one run,
//! for HR files of 100k and 1M rows (the cookbook's columns):
//!
//! 1. the raw limit: SurrealQL `INSERT` of the records a reconciled row
//!    becomes (object, unique key, audit entry, link, reverse link) in
//!    batches of the recon's size, with as many writers as the recon has; and,
//!    for scale, one plain record per row in 1,000-row batches;
//! 2. the initial recon of the cookbook mapping (CSV → managed/user, every row
//!    ABSENT → CREATE), `taskThreads` = the same number of writers;
//! 3. a no-change re-recon (every row CONFIRMED, nothing written);
//! 4. each recon's peak RSS: every phase runs in a child process of its own,
//!    so no phase inherits another's heap.
//!
//! The mapping is the cookbook's without the default password: argon2id
//! hashing (~14 ms a core, on purpose) would be the whole measurement.
//!
//! Run: `cargo bench -p idm-server --bench recon` (release).
//! `IDM_BENCH_ROWS=100000,1000000` and `IDM_BENCH_WRITERS=2` change the runs;
//! `IDM_BENCH_OUTBOX=1` subscribes users to an enableSync mapping (each
//! created or changed user also writes an outbox entry, as in the sample).
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

mod common;
use common::{peak_rss_mib, rate};

const RAW_BATCH: usize = 1000;
/// The recon's batch (`sync::recon` reads and creates 500 rows at a time).
const RECON_BATCH: usize = 500;

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

/// One plain record per row, `uid` unique.
async fn raw_insert(dir: &Path, writers: usize, total: usize) -> f64 {
    common::raw_insert(dir, writers, total, RAW_BATCH, "uid", |n| {
        let [uid, first, last, phone] = row(n);
        json!({"uid": uid, "firstName": first, "lastName": last, "telephoneNumber": phone})
    })
    .await
}

/// The records a reconciled row becomes, as plain SurrealQL inserts.
async fn raw_model_insert(dir: &Path, writers: usize, total: usize, batch: usize) -> f64 {
    let db = common::open_raw(dir).await;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for writer in 0..writers {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            for range in common::batches(writer, writers, total, batch) {
                let (mut objects, mut keys, mut audits, mut links, mut reverse) =
                    (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
                for n in range {
                    let [uid, first, last, phone] = row(n);
                    let user_name = format!("{}{uid}", last.to_lowercase());
                    objects.push(json!({"id": ["user", uid], "type": "user", "oid": uid, "rev": 1,
                        "created": "2026-01-01T00:00:00.000000Z", "modified": "2026-01-01T00:00:00.000000Z",
                        "data": {"givenName": first, "sn": last, "telephoneNumber": phone, "userName": user_name,
                                 "mail": format!("{}.{}@example.com", first.to_lowercase(), last.to_lowercase())},
                        "keys": [["userName", user_name]]}));
                    keys.push(json!({"id": ["user", "userName", user_name], "oid": uid}));
                    audits.push(json!({"id": uuid::Uuid::now_v7().to_string(), "actor": "bench", "operation": "create",
                        "object": format!("managed/user/{uid}"), "rev_before": 0, "rev_after": 1,
                        "changed": ["givenName", "mail", "sn", "telephoneNumber", "userName"]}));
                    links.push(json!({"id": ["m", uid], "mapping": "m", "source": uid, "target": uid}));
                    reverse.push(json!({"id": ["m", uid], "source": uid}));
                }
                let sql = "BEGIN; INSERT INTO object $objects RETURN NONE; INSERT INTO audit $audits RETURN NONE; \
                           INSERT INTO unique_key $keys RETURN NONE; INSERT INTO link $links RETURN NONE; \
                           INSERT INTO link_target $reverse RETURN NONE; COMMIT;";
                let (objects, audits, keys, links, reverse) = (
                    Value::Array(objects),
                    Value::Array(audits),
                    Value::Array(keys),
                    Value::Array(links),
                    Value::Array(reverse),
                );
                let bindings = [
                    ("objects", &objects),
                    ("audits", &audits),
                    ("keys", &keys),
                    ("links", &links),
                    ("reverse", &reverse),
                ];
                common::execute_retrying(&db, sql, &bindings).await;
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
    common::prepare_indexes(&objects).await;
    let sample: Value =
        serde_json::from_str(include_str!("../../tests/fixtures/idm-sync/sync.json")).unwrap();
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
    // IDM_BENCH_OUTBOX=1: users feed an enableSync mapping's outbox, as in the
    // sync sample, so each created user also writes an outbox entry.
    if std::env::var("IDM_BENCH_OUTBOX").is_ok_and(|v| v == "1") {
        store.set_sync_subscriptions(std::collections::BTreeMap::from([(
            "user".to_string(),
            vec!["managedUser_ldapAccount".to_string()],
        )]));
    }
    Reconciler::new(store, objects, PathBuf::from("."))
}

/// One recon to its end: rows per second and the phase's peak RSS.
async fn recon(reconciler: &Reconciler, rows: usize, expect: &str) -> (f64, f64) {
    let start = Instant::now();
    let run = reconciler
        .start("csvEmployee_managedUser", None, "bench")
        .await
        .unwrap();
    let run = reconciler.wait(&run.rid).await.unwrap();
    let elapsed = start.elapsed();
    assert_eq!(run.state, "SUCCESS", "{run:?}");
    assert_eq!(run.failure_count, 0, "{:?}", run.failures.first());
    if run.situations.get(expect).copied() != Some(rows as i64) {
        eprintln!("expected {rows} {expect}, got {:?}", run.situations);
    }
    let users = reconciler.store().count_of_type("user").await.unwrap();
    eprintln!("{users} users in the store at the end of the run");
    (rate(rows, elapsed), peak_rss_mib())
}

/// Runs one phase in a child process and returns its output line.
fn phase(name: &str, rows: usize, writers: usize, root: &Path) -> String {
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .env("IDM_BENCH_PHASE", name)
        .env("IDM_BENCH_ROWS", rows.to_string())
        .env("IDM_BENCH_WRITERS", writers.to_string())
        .env("IDM_BENCH_DIR", root)
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "phase {name} failed: {log}");
    for line in log
        .lines()
        .filter(|l| l.contains("users in the store") || l.starts_with("expected"))
    {
        println!("           ({name}: {line})");
    }
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// One phase, in this (child) process; prints `rate rss`.
async fn run_phase(name: &str, rows: usize, writers: usize, root: &Path) {
    let csv = root.join(format!("hr-{rows}.csv"));
    let (rate, rss) = match name {
        "raw" => (
            raw_insert(&root.join(format!("raw-{rows}")), writers, rows).await,
            peak_rss_mib(),
        ),
        "raw-model" => (
            raw_model_insert(
                &root.join(format!("model-{rows}")),
                writers,
                rows,
                RECON_BATCH,
            )
            .await,
            peak_rss_mib(),
        ),
        "initial" | "again" => {
            let reconciler = reconciler(&root.join(format!("idm-{rows}")), &csv, writers).await;
            let users = reconciler.store().count_of_type("user").await.unwrap();
            eprintln!("{users} users in the store when it opened");
            let expect = if name == "initial" {
                "ABSENT"
            } else {
                "CONFIRMED"
            };
            let measured = recon(&reconciler, rows, expect).await;
            let store = reconciler.store().clone();
            drop(reconciler);
            store.close(Duration::from_secs(60)).await;
            measured
        }
        other => panic!("unknown phase {other}"),
    };
    println!("{rate} {rss}");
}

fn parse(line: &str) -> (f64, f64) {
    let mut parts = line.split_whitespace().map(|p| p.parse::<f64>().unwrap());
    (parts.next().unwrap(), parts.next().unwrap())
}

#[tokio::main]
async fn main() {
    let writers: usize = std::env::var("IDM_BENCH_WRITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    if let Ok(name) = std::env::var("IDM_BENCH_PHASE") {
        let rows: usize = std::env::var("IDM_BENCH_ROWS").unwrap().parse().unwrap();
        let root = PathBuf::from(std::env::var("IDM_BENCH_DIR").unwrap());
        run_phase(&name, rows, writers, &root).await;
        return;
    }
    let sizes: Vec<usize> = std::env::var("IDM_BENCH_ROWS")
        .unwrap_or_else(|_| "100000,1000000".into())
        .split(',')
        .map(|n| n.trim().parse().unwrap())
        .collect();
    let root = std::env::temp_dir().join(format!("idm-recon-bench-{}", std::process::id()));
    std::fs::create_dir_all(&root).unwrap();
    println!(
        "idm recon bench: {sizes:?} rows, {writers} writers / taskThreads, batches of {RECON_BATCH}, surrealkv in {}",
        root.display()
    );
    for rows in sizes {
        write_csv(&root.join(format!("hr-{rows}.csv")), rows);
        let (raw, _) = parse(&phase("raw", rows, writers, &root));
        println!("{rows:>8} rows  raw INSERT, 1 record a row     : {raw:>8.0} rows/s");
        let (model, _) = parse(&phase("raw-model", rows, writers, &root));
        println!(
            "{rows:>8} rows  raw INSERT, a recon's 5 records : {model:>8.0} rows/s  (the limit)"
        );
        let (initial, initial_rss) = parse(&phase("initial", rows, writers, &root));
        println!(
            "{rows:>8} rows  initial recon (CREATE)          : {initial:>8.0} rows/s  {:.2} x limit  peak RSS {initial_rss:.0} MiB",
            initial / model
        );
        let (again, again_rss) = parse(&phase("again", rows, writers, &root));
        println!(
            "{rows:>8} rows  no-change re-recon              : {again:>8.0} rows/s  {:.2} x initial  peak RSS {again_rss:.0} MiB",
            again / initial
        );
    }
    let _ = std::fs::remove_dir_all(&root);
}
