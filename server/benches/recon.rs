//! Reconciliation throughput on embedded SurrealDB (surrealkv), in one run,
//! for HR files of 100k and 1M rows (the cookbook's columns):
//!
//! 1. the raw limit: SurrealQL `INSERT` of the records a reconciled row
//!    becomes (object, unique key, audit entry, link, reverse link) in
//!    batches of the recon's size, with as many writers as the recon has;
//!    the same with the four sort keys idm also writes for the user type's
//!    searchable properties (nine records: what idm's create transaction
//!    inserts); and, for scale, one plain record per row in 1,000-row
//!    batches;
//! 2. the initial recon of the cookbook mapping (CSV → managed/user, every row
//!    ABSENT → CREATE), `taskThreads` = the same number of writers;
//! 3. a no-change re-recon (every row CONFIRMED, nothing written);
//! 4. the cookbook mapping as written, with its `password` default
//!    (`FooBar123`): each created user's password sealed and queued, the
//!    background hasher running (as in idmd, at nice 19) beside the recon;
//!    then a sample of the passwords checked;
//! 5. the initial recon again with SurrealKV's own memory sizing (`auto`,
//!    from the machine) instead of `--store-memory`'s bound: the unbounded
//!    rate the bound is measured against; and once without sort keys (a
//!    schema that declares nothing `searchable`: what they cost);
//! 6. each recon's peak RSS: every phase runs in a child process of its own,
//!    so no phase inherits another's heap.
//!
//! Phases 2–3 use the mapping without its password default, as before.
//!
//! Run: `cargo bench -p idm-server --bench recon` (release).
//! `IDM_BENCH_ROWS=100000,1000000` and `IDM_BENCH_WRITERS=2` change the runs;
//! `IDM_BENCH_STORE_MEMORY=192MiB` the store's bound (idmd's default,
//! 256MiB, otherwise); `IDM_BENCH_PASSWORD_ROWS=100000` the largest file the
//! password phase runs for; `IDM_BENCH_OUTBOX=1` subscribes users to an
//! enableSync mapping (each created or changed user also writes an outbox
//! entry, as in the sample); `IDM_BENCH_PAIRS=3` runs the raw five-record
//! insert, the initial recon, the re-recon, the password mapping and the
//! `auto` recon as that many back-to-back rounds (each on new stores) and
//! prints each round's ratios and their medians: on a machine whose speed
//! drifts within a run, the rounds say more than one ratio.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use idm_server::managed::{ManagedObjects, ManagedSchema};
use idm_server::secrets::SecretBox;
use idm_server::store::{ConfigDocument, Store, StoreMemory};
use idm_server::sync::recon::Reconciler;
use serde_json::{Value, json};

mod common;
use common::{peak_rss_mib, rate};

/// idmd's allocator, so the figures are idmd's.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

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

/// The records a reconciled row becomes, as plain SurrealQL inserts; with
/// `sort_keys`, also the four sort keys of the user type's searchable
/// properties, shaped as `store::sort` writes them.
async fn raw_model_insert(
    dir: &Path,
    writers: usize,
    total: usize,
    batch: usize,
    sort_keys: bool,
) -> f64 {
    let db = common::open_raw(dir).await;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for writer in 0..writers {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            for range in common::batches(writer, writers, total, batch) {
                let (mut objects, mut keys, mut audits, mut links, mut reverse) =
                    (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
                let mut sorted: [Vec<Value>; 4] = Default::default();
                for n in range {
                    let [uid, first, last, phone] = row(n);
                    let user_name = format!("{}{uid}", last.to_lowercase());
                    let mail = format!("{}.{}@example.com", first.to_lowercase(), last.to_lowercase());
                    // userName and mail fold case (caseExact: false); givenName and sn do not.
                    for (keys, value) in sorted.iter_mut().zip([&user_name, &first, &last, &mail]) {
                        keys.push(json!({"id": [4, value, uid]}));
                    }
                    objects.push(json!({"id": ["user", uid], "type": "user", "oid": uid, "rev": 1,
                        "created": "2026-01-01T00:00:00.000000Z", "modified": "2026-01-01T00:00:00.000000Z",
                        "data": {"givenName": first, "sn": last, "telephoneNumber": phone, "userName": user_name,
                                 "mail": mail},
                        "keys": [["userName", user_name]]}));
                    keys.push(json!({"id": ["user", "userName", user_name], "oid": uid}));
                    audits.push(json!({"id": uuid::Uuid::now_v7().to_string(), "actor": "bench", "operation": "create",
                        "object": format!("managed/user/{uid}"), "rev_before": 0, "rev_after": 1,
                        "changed": ["givenName", "mail", "sn", "telephoneNumber", "userName"]}));
                    links.push(json!({"id": ["m", uid], "mapping": "m", "source": uid, "target": uid}));
                    reverse.push(json!({"id": ["m", uid], "source": uid}));
                }
                let mut sql = String::from(
                    "BEGIN; INSERT INTO object $objects RETURN NONE; INSERT INTO audit $audits RETURN NONE; \
                     INSERT INTO unique_key $keys RETURN NONE; INSERT INTO link $links RETURN NONE; \
                     INSERT INTO link_target $reverse RETURN NONE;",
                );
                if sort_keys {
                    sql.push_str(
                        "INSERT INTO `sort:user:userName` $sort0 RETURN NONE; \
                         INSERT INTO `sort:user:givenName` $sort1 RETURN NONE; \
                         INSERT INTO `sort:user:sn` $sort2 RETURN NONE; \
                         INSERT INTO `sort:user:mail` $sort3 RETURN NONE;",
                    );
                }
                sql.push_str(" COMMIT;");
                let [sort0, sort1, sort2, sort3] = sorted.map(Value::Array);
                let (objects, audits, keys, links, reverse) = (
                    Value::Array(objects),
                    Value::Array(audits),
                    Value::Array(keys),
                    Value::Array(links),
                    Value::Array(reverse),
                );
                let mut bindings = vec![
                    ("objects", &objects),
                    ("audits", &audits),
                    ("keys", &keys),
                    ("links", &links),
                    ("reverse", &reverse),
                ];
                if sort_keys {
                    bindings.extend([
                        ("sort0", &sort0),
                        ("sort1", &sort1),
                        ("sort2", &sort2),
                        ("sort3", &sort3),
                    ]);
                }
                common::execute_retrying(&db, &sql, &bindings).await;
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    rate(total, start.elapsed())
}

/// The store's bound for this run (`IDM_BENCH_STORE_MEMORY`, else idmd's default).
fn store_memory() -> StoreMemory {
    std::env::var("IDM_BENCH_STORE_MEMORY")
        .ok()
        .map_or(StoreMemory::DEFAULT, |v| v.parse().unwrap())
}

/// What one recon phase runs: the mapping with or without its password
/// default, in a store bounded or not.
struct Setup {
    password: bool,
    memory: StoreMemory,
}

async fn reconciler(
    dir: &Path,
    csv: &Path,
    writers: usize,
    setup: &Setup,
) -> (Reconciler, Arc<SecretBox>) {
    std::fs::create_dir_all(dir).unwrap();
    let store = Store::open_with(
        &format!("surrealkv://{}", dir.join("idm").display()),
        setup.memory,
    )
    .await
    .unwrap();
    let secrets = Arc::new(SecretBox::load_or_create(&dir.join("idm.key"), None).unwrap());
    let objects = ManagedObjects::new(
        Arc::new(ManagedSchema::builtin().unwrap()),
        store.clone(),
        Arc::clone(&secrets),
    );
    common::prepare_indexes(&objects).await;
    let sample: Value =
        serde_json::from_str(include_str!("../../tests/fixtures/idm-sync/sync.json")).unwrap();
    let mut mapping = sample["mappings"][0].clone();
    if !setup.password {
        mapping["properties"]
            .as_array_mut()
            .unwrap()
            .retain(|p| p["target"] != "password");
    }
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
    (Reconciler::new(store, objects, PathBuf::from(".")), secrets)
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
    // The recon's peak, before counting the users (the count reads every
    // user's key, which is the bench's check, not the recon's work).
    let peak = peak_rss_mib();
    let users = reconciler.store().count_of_type("user").await.unwrap();
    eprintln!(
        "{users} users in the store at the end of the run; peak RSS {peak:.0} MiB, {:.0} after counting them",
        peak_rss_mib()
    );
    (rate(rows, elapsed), peak)
}

/// One round's rates: every ratio the bench reports is taken within a
/// round, its phases run back to back.
struct Round {
    limit: f64,
    initial: f64,
    again: f64,
    password: Option<f64>,
    auto: f64,
}

/// Runs `rounds - 1` more rounds after `first`, each phase on a new store,
/// and prints every round's ratios and their medians: on a machine whose
/// speed drifts within a run, one ratio of two phases run minutes apart
/// says little.
fn repeat_rounds(first: Round, rounds: usize, rows: usize, writers: usize, root: &Path) {
    let mut all = vec![first];
    for _ in 1..rounds {
        for dir in ["raw-model", "idm", "password", "auto"] {
            let _ = std::fs::remove_dir_all(root.join(format!("{dir}-{rows}")));
        }
        let (limit, _) = parse(&phase("raw-model", rows, writers, root));
        let (initial, _) = parse(&phase("initial", rows, writers, root));
        let (again, _) = parse(&phase("again", rows, writers, root));
        let password = all[0]
            .password
            .map(|_| parse(&phase("password", rows, writers, root)).0);
        let (auto, _) = parse(&phase("auto", rows, writers, root));
        let round = Round {
            limit,
            initial,
            again,
            password,
            auto,
        };
        println!(
            "{rows:>8} rows  round: limit {limit:>6.0}, initial {initial:>6.0} ({:.2} x limit), re-recon {again:>6.0} ({:.2} x), password {} , auto {auto:>6.0} (bounded {:.2} x)",
            initial / limit,
            again / initial,
            password.map_or("-".into(), |p| format!("{p:.0} ({:.2} x)", p / initial)),
            initial / auto
        );
        all.push(round);
    }
    let median = |ratio: &dyn Fn(&Round) -> Option<f64>| {
        let mut ratios: Vec<f64> = all.iter().filter_map(ratio).collect();
        ratios.sort_by(f64::total_cmp);
        match ratios.as_slice() {
            [] => "-".to_string(),
            [low, .., high] => format!(
                "median {:.2} x ({low:.2}–{high:.2})",
                ratios[ratios.len() / 2]
            ),
            [one] => format!("{one:.2} x"),
        }
    };
    println!("{rows:>8} rows  over {rounds} rounds:");
    println!(
        "           initial ÷ limit  {}",
        median(&|r| Some(r.initial / r.limit))
    );
    println!(
        "           re-recon ÷ initial {}",
        median(&|r| Some(r.again / r.initial))
    );
    println!(
        "           password ÷ initial {}",
        median(&|r| r.password.map(|p| p / r.initial))
    );
    println!(
        "           bounded ÷ auto   {}",
        median(&|r| Some(r.initial / r.auto))
    );
}

/// Runs one phase in a child process, after the disk has taken the last
/// phase's writes (so that a phase does not pay for its predecessor's),
/// and returns its output line.
fn phase(name: &str, rows: usize, writers: usize, root: &Path) -> String {
    let _ = std::process::Command::new("sync").status();
    let mut command = std::process::Command::new(std::env::current_exe().unwrap());
    command
        .env("IDM_BENCH_PHASE", name)
        .env("IDM_BENCH_ROWS", rows.to_string())
        .env("IDM_BENCH_WRITERS", writers.to_string())
        .env("IDM_BENCH_DIR", root);
    if name == "unsorted" {
        command.env("IDM_BENCH_SORT_KEYS", "0");
    }
    let output = command.output().unwrap();
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "phase {name} failed: {log}");
    for line in log.lines().filter(|l| {
        l.contains("users in the store") || l.starts_with("expected") || l.starts_with("passwords:")
    }) {
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
        "raw-model" | "raw-written" => (
            raw_model_insert(
                &root.join(format!("{name}-{rows}")),
                writers,
                rows,
                RECON_BATCH,
                name == "raw-written",
            )
            .await,
            peak_rss_mib(),
        ),
        "initial" | "again" | "password" | "auto" | "unsorted" => {
            let (dir, setup) = match name {
                "unsorted" => (
                    "unsorted",
                    Setup {
                        password: false,
                        memory: store_memory(),
                    },
                ),
                "initial" | "again" => (
                    "idm",
                    Setup {
                        password: false,
                        memory: store_memory(),
                    },
                ),
                "password" => (
                    "password",
                    Setup {
                        password: true,
                        memory: store_memory(),
                    },
                ),
                _ => (
                    "auto",
                    Setup {
                        password: false,
                        memory: StoreMemory::AUTO,
                    },
                ),
            };
            let (reconciler, secrets) =
                reconciler(&root.join(format!("{dir}-{rows}")), &csv, writers, &setup).await;
            let users = reconciler.store().count_of_type("user").await.unwrap();
            eprintln!("{users} users in the store when it opened");
            let expect = if name == "again" {
                "CONFIRMED"
            } else {
                "ABSENT"
            };
            // idmd hashes queued passwords in the background while it works.
            let (stop, stopped) = tokio::sync::watch::channel(false);
            let hasher = setup.password.then(|| {
                tokio::spawn(idm_server::managed::hashing::run(
                    reconciler.store().clone(),
                    secrets,
                    stopped,
                ))
            });
            let measured = recon(&reconciler, rows, expect).await;
            let _ = stop.send(true);
            if let Some(hasher) = hasher {
                hasher.await.unwrap();
                check_passwords(&reconciler, rows).await;
            }
            let store = reconciler.store().clone();
            drop(reconciler);
            store.close(Duration::from_secs(60)).await;
            measured
        }
        other => panic!("unknown phase {other}"),
    };
    println!("{rate} {rss}");
}

/// Every created user has a password, and a sample of them verifies (from
/// the hash where the hasher got to it, else from the sealed copy).
async fn check_passwords(reconciler: &Reconciler, rows: usize) {
    let store = reconciler.store();
    let pending = store.pending_hash_count().await.unwrap();
    let keys = store.credential_keys().await.unwrap();
    assert_eq!(keys.len(), rows, "a password for every user");
    let sample: Vec<String> = keys
        .iter()
        .step_by((rows / 20).max(1))
        .map(|key| key[1].as_str().unwrap().to_string())
        .collect();
    for id in &sample {
        let objects = reconciler.objects();
        let valid = objects
            .verify_password("bench", "user", id, "password", "FooBar123")
            .await
            .unwrap();
        assert!(valid, "user {id}'s password verifies");
    }
    eprintln!(
        "passwords: {rows} stored, {} hashed during the run, {pending} still queued; {} of {} sampled verify",
        rows as u64 - pending,
        sample.len(),
        sample.len()
    );
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
    let password_rows: usize = std::env::var("IDM_BENCH_PASSWORD_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let root = std::env::temp_dir().join(format!("idm-recon-bench-{}", std::process::id()));
    std::fs::create_dir_all(&root).unwrap();
    println!(
        "idm recon bench: {sizes:?} rows, {writers} writers / taskThreads, batches of {RECON_BATCH}, surrealkv in {}, --store-memory {}",
        root.display(),
        store_memory()
    );
    for rows in sizes {
        write_csv(&root.join(format!("hr-{rows}.csv")), rows);
        let (raw, _) = parse(&phase("raw", rows, writers, &root));
        println!("{rows:>8} rows  raw INSERT, 1 record a row     : {raw:>8.0} rows/s");
        let (model, _) = parse(&phase("raw-model", rows, writers, &root));
        println!(
            "{rows:>8} rows  raw INSERT, a recon's 5 records : {model:>8.0} rows/s  (the limit)"
        );
        let (written, _) = parse(&phase("raw-written", rows, writers, &root));
        println!(
            "{rows:>8} rows  raw INSERT, the 9 idm writes    : {written:>8.0} rows/s  {:.2} x limit  (+ 4 sort keys)",
            written / model
        );
        let (initial, initial_rss) = parse(&phase("initial", rows, writers, &root));
        println!(
            "{rows:>8} rows  initial recon (CREATE)          : {initial:>8.0} rows/s  {:.2} x limit  {:.2} x its 9 records  peak RSS {initial_rss:.0} MiB",
            initial / model,
            initial / written
        );
        let (unsorted, unsorted_rss) = parse(&phase("unsorted", rows, writers, &root));
        println!(
            "{rows:>8} rows  initial recon, no sort keys     : {unsorted:>8.0} rows/s  {:.2} x limit  peak RSS {unsorted_rss:.0} MiB",
            unsorted / model
        );
        let (again, again_rss) = parse(&phase("again", rows, writers, &root));
        println!(
            "{rows:>8} rows  no-change re-recon              : {again:>8.0} rows/s  {:.2} x initial  peak RSS {again_rss:.0} MiB",
            again / initial
        );
        let password = (rows <= password_rows).then(|| {
            let (password, password_rss) = parse(&phase("password", rows, writers, &root));
            println!(
                "{rows:>8} rows  cookbook mapping, with password : {password:>8.0} rows/s  {:.2} x without  peak RSS {password_rss:.0} MiB",
                password / initial
            );
            password
        });
        let (auto, auto_rss) = parse(&phase("auto", rows, writers, &root));
        println!(
            "{rows:>8} rows  initial recon, store memory auto: {auto:>8.0} rows/s  bounded {:.2} x auto  peak RSS {auto_rss:.0} MiB",
            initial / auto
        );
        let rounds: usize = std::env::var("IDM_BENCH_PAIRS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1);
        if rounds > 1 {
            let first = Round {
                limit: model,
                initial,
                again,
                password,
                auto,
            };
            repeat_rounds(first, rounds, rows, writers, &root);
        }
    }
    let _ = std::fs::remove_dir_all(&root);
}
