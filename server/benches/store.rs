//! Store throughput on embedded SurrealDB (surrealkv), in one run:
//!
//! 1. the raw limit: SurrealQL `INSERT` of 1,000-row batches into a table with
//!    one unique index, one writer and two concurrent writers;
//! 2. idm's batched creates of the same users through `ManagedObjects`
//!    (schema checks, unique keys, relations, audit, one transaction a batch);
//! 3. point reads, and filtered queries, against the 100k users.
//!
//! Run: `cargo bench -p idm-server --bench store` (release). `IDM_BENCH_USERS`
//! changes the population (default 100000).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Instant;

use idm_server::managed::{ManagedObjects, ManagedSchema, Query};
use idm_server::secrets::SecretBox;
use idm_server::store::Store;
use serde_json::{Map, Value, json};

mod common;
use common::{peak_rss_mib, rate};

/// idmd's allocator, so the figures are idmd's.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const BATCH: usize = 1000;

fn user(n: usize) -> Map<String, Value> {
    json!({
        "userName": format!("user{n:07}"),
        "givenName": format!("Given{}", n % 977),
        "sn": format!("S{}", n % 100),
        "mail": format!("user{n:07}@example.com"),
        "telephoneNumber": format!("555{n:07}"),
        "accountStatus": if n.is_multiple_of(7) { "inactive" } else { "active" },
    })
    .as_object()
    .cloned()
    .unwrap()
}

/// The raw limit: one `person` record a user, `userName` unique.
async fn raw_insert(dir: &std::path::Path, writers: usize, total: usize) -> f64 {
    common::raw_insert(dir, writers, total, BATCH, "userName", |n| {
        Value::Object(user(n))
    })
    .await
}

fn batches_for(writer: usize, writers: usize, total: usize) -> Vec<std::ops::Range<usize>> {
    common::batches(writer, writers, total, BATCH)
}

/// The same writes idm makes for a user, as plain SurrealQL: the object
/// record, its unique-key record and its audit record, a batch per statement.
async fn raw_model_insert(dir: &std::path::Path, total: usize) -> f64 {
    let db = common::open_raw(dir).await;
    let start = Instant::now();
    for range in batches_for(0, 1, total) {
        let mut objects = Vec::new();
        let mut keys = Vec::new();
        let mut audits = Vec::new();
        for n in range {
            let id = format!("u{n:07}");
            objects.push(
                json!({"id": ["user", id], "type": "user", "oid": id, "rev": 1, "data": user(n)}),
            );
            keys.push(json!({"id": ["user", "username", format!("user{n:07}")], "oid": id}));
            audits.push(json!({"actor": "bench", "operation": "create", "object": id, "changed": ["userName"]}));
        }
        db.query("INSERT INTO object $objects RETURN NONE; INSERT INTO unique_key $keys RETURN NONE; INSERT INTO audit $audits RETURN NONE;")
            .bind(("objects", objects))
            .bind(("keys", keys))
            .bind(("audits", audits))
            .await
            .unwrap()
            .check()
            .unwrap();
    }
    rate(total, start.elapsed())
}

async fn idm_creates(objects: &ManagedObjects, writers: usize, total: usize) -> f64 {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for writer in 0..writers {
        let objects = objects.clone();
        tasks.push(tokio::spawn(async move {
            for range in batches_for(writer, writers, total) {
                let batch = range.map(|n| (Some(format!("u{n:07}")), user(n))).collect();
                objects.create_many("bench", "user", batch).await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    rate(total, start.elapsed())
}

async fn open_objects(dir: &std::path::Path) -> ManagedObjects {
    let store = Store::open(&format!("surrealkv://{}", dir.join("idm").display()))
        .await
        .unwrap();
    let secrets = SecretBox::load_or_create(&dir.join("idm.key"), None).unwrap();
    let objects = ManagedObjects::new(
        Arc::new(ManagedSchema::builtin().unwrap()),
        store,
        Arc::new(secrets),
    );
    common::prepare_indexes(&objects).await;
    objects
}

async fn concurrently<F, Fut>(workers: usize, per_worker: usize, work: F) -> f64
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let start = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..workers {
        let work = work.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..per_worker {
                work(worker * per_worker + i).await;
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    rate(workers * per_worker, start.elapsed())
}

#[tokio::main]
async fn main() {
    let total: usize = std::env::var("IDM_BENCH_USERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let root = std::env::temp_dir().join(format!("idm-bench-{}", std::process::id()));
    std::fs::create_dir_all(&root).unwrap();
    println!(
        "idm store bench: {total} users, batches of {BATCH}, surrealkv in {}",
        root.display()
    );

    let raw1 = raw_insert(&root.join("raw1"), 1, total).await;
    let raw2 = raw_insert(&root.join("raw2"), 2, total).await;
    println!("raw SurrealQL INSERT, 1 writer : {raw1:>9.0} rows/s");
    println!("raw SurrealQL INSERT, 2 writers: {raw2:>9.0} rows/s");

    let model = raw_model_insert(&root.join("model"), total).await;
    println!("raw INSERT of idm's records (object+key+audit): {model:>9.0} users/s");

    let one = open_objects(&root.join("idm1")).await;
    let idm1 = idm_creates(&one, 1, total).await;
    println!(
        "idm batched creates, 1 writer  : {idm1:>9.0} users/s ({:.2} x raw)",
        idm1 / raw1
    );
    let objects = open_objects(&root.join("idm2")).await;
    let idm2 = idm_creates(&objects, 2, total).await;
    println!(
        "idm batched creates, 2 writers : {idm2:>9.0} users/s ({:.2} x raw)",
        idm2 / raw2
    );

    let reads = {
        let objects = objects.clone();
        concurrently(8, 2_500, move |i| {
            let objects = objects.clone();
            async move {
                let n = (i * 7919) % total;
                objects.get("user", &format!("u{n:07}"), &[]).await.unwrap();
            }
        })
        .await
    };
    println!("point reads (get by id, 8 in flight)          : {reads:>9.0} reads/s");

    let by_name = {
        let objects = objects.clone();
        concurrently(4, 250, move |i| {
            let objects = objects.clone();
            async move {
                let n = (i * 104_729) % total;
                let query = Query {
                    filter: format!(r#"userName eq "USER{n:07}""#),
                    ..Query::default()
                };
                let page = objects.query("user", &query).await.unwrap();
                assert_eq!(page.objects.len(), 1);
            }
        })
        .await
    };
    println!("filtered query userName eq (unique, 4 in flight): {by_name:>9.0} queries/s");

    let by_sn = {
        let objects = objects.clone();
        concurrently(2, 10, move |i| {
            let objects = objects.clone();
            async move {
                let query = Query {
                    filter: format!(r#"sn eq "S{}" and accountStatus eq "active""#, i % 100),
                    order_by: "givenName".into(),
                    page_size: 50,
                    ..Query::default()
                };
                let page = objects.query("user", &query).await.unwrap();
                assert!(!page.objects.is_empty(), "no match for {:?}", query.filter);
            }
        })
        .await
    };
    println!("filtered query sn and status, sorted, page of 50: {by_sn:>9.2} queries/s");
    // What a recon that gives every user a default password pays: argon2id per user.
    let with_password = {
        let objects = open_objects(&root.join("idm-pw")).await;
        let start = Instant::now();
        let batch = (0..1_000)
            .map(|n| {
                let mut attributes = user(n);
                attributes.insert("password".into(), json!("FooBar123"));
                (Some(format!("p{n:07}")), attributes)
            })
            .collect();
        objects.create_many("bench", "user", batch).await.unwrap();
        rate(1_000, start.elapsed())
    };
    println!("creates with a password (sealed, hashed later), 1,000: {with_password:>9.0} users/s");
    println!("peak RSS: {:.0} MiB", peak_rss_mib());
    let _ = std::fs::remove_dir_all(&root);
}
