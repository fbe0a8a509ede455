//! The console's Manage → User list over many users (issue 15): the queries
//! its list page sends, timed at the domain call `ManagedObjects::query`,
//! which is the whole of `ObjectService.QueryObjects` but for decoding the
//! request and encoding 50 objects.
//!
//! 1. seed `IDM_BENCH_USERS` (default 100000) cookbook-shaped users through
//!    the batched create path (2 writers, 1,000 a batch), timed;
//! 2. the first page (`userName asc`), a search (`sw "snow"` over the
//!    searchable columns, OR-ed), a sort (`sn desc`/`sn asc`, pages 1 and 2):
//!    median and worst of `IDM_BENCH_RUNS` (default 9) runs each, with the
//!    total each answered.
//!
//! Run: `cargo bench -p idm-server --bench console` (release).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use idm_server::managed::{ManagedObjects, ManagedSchema, Query};
use idm_server::secrets::SecretBox;
use idm_server::store::Store;
use serde_json::{Map, Value, json};

mod common;
use common::{peak_rss_mib, rate};

const BATCH: usize = 1000;
const WRITERS: usize = 2;

/// The cookbook's user type as `samples/sync/conf/managed.json` declares it:
/// its five list columns `searchable`, as in Wren's managed.json.
const MANAGED: &str = r#"{"objects": [{"name": "user", "schema": {"properties": {
  "userName": { "type": "string", "required": true, "unique": true, "caseExact": false, "searchable": true },
  "givenName": { "type": "string", "searchable": true },
  "sn": { "type": "string", "searchable": true },
  "mail": { "type": "string", "caseExact": false, "searchable": true },
  "telephoneNumber": { "type": "string", "searchable": true },
  "accountStatus": { "type": "string" },
  "password": { "type": "string", "private": true }
}}}]}"#;

const GIVEN: &[&str] = &[
    "Jon",
    "Jane",
    "John",
    "Arya",
    "Sansa",
    "Robb",
    "Bran",
    "Rickon",
    "Catelyn",
    "Eddard",
    "Tyrion",
    "Cersei",
    "Jaime",
    "Tywin",
    "Daenerys",
    "Viserys",
    "Samwell",
    "Gilly",
    "Brienne",
    "Davos",
    "Stannis",
    "Renly",
    "Margaery",
    "Olenna",
    "Petyr",
    "Varys",
    "Sandor",
    "Gregor",
    "Theon",
    "Yara",
    "Ygritte",
    "Tormund",
    "Jorah",
    "Missandei",
    "Podrick",
    "Bronn",
    "Gendry",
    "Hodor",
    "Oberyn",
    "Ellaria",
];

const FAMILY: &[&str] = &[
    "Stark",
    "Lannister",
    "Targaryen",
    "Baratheon",
    "Tyrell",
    "Martell",
    "Greyjoy",
    "Tully",
    "Arryn",
    "Bolton",
    "Frey",
    "Mormont",
    "Tarly",
    "Clegane",
    "Seaworth",
    "Baelish",
    "Snow",
    "Sand",
    "Rivers",
    "Stone",
    "Hill",
    "Flowers",
    "Pyke",
    "Waters",
    "Storm",
    "Doe",
    "Smith",
    "Jones",
    "Brown",
    "Taylor",
    "Wilson",
    "Evans",
    "Thomas",
    "Roberts",
    "Johnson",
    "Walker",
    "Wright",
    "Robinson",
    "Thompson",
    "White",
    "Hughes",
    "Edwards",
    "Green",
    "Hall",
    "Wood",
    "Harris",
    "Lewis",
    "Martin",
    "Jackson",
    "Clarke",
    "Clark",
    "Turner",
    "Scott",
    "Cooper",
    "Hill",
    "Ward",
    "Morris",
    "Moore",
    "King",
    "Watson",
    "Baker",
    "Harrison",
    "Morgan",
    "Patel",
    "Young",
    "Allen",
    "Mitchell",
    "James",
    "Anderson",
    "Phillips",
    "Lee",
    "Bell",
    "Parker",
    "Davis",
    "Snowden",
    "Snowball",
    "Kelly",
    "Bennett",
    "Carter",
    "Price",
    "Shaw",
    "Lloyd",
    "Jenkins",
    "Griffiths",
    "Adams",
    "Marshall",
    "Ellis",
    "Campbell",
    "Richardson",
    "Collins",
    "Stewart",
    "Cook",
    "Owen",
    "Murphy",
    "Chapman",
    "Graham",
    "Webb",
    "Palmer",
    "Rogers",
    "Mason",
];

/// User `n` as the cookbook's mapping makes them: `snow42` / Jon / Snow /
/// `jon.snow42@example.com`.
fn user(n: usize) -> Map<String, Value> {
    let given = GIVEN[(n * 7) % GIVEN.len()];
    let family = FAMILY[(n * 13 + n / 977) % FAMILY.len()];
    json!({
        "userName": format!("{}{n}", family.to_lowercase()),
        "givenName": given,
        "sn": family,
        "mail": format!("{}.{}{n}@example.com", given.to_lowercase(), family.to_lowercase()),
        "telephoneNumber": format!("555{n:07}"),
        "accountStatus": if n.is_multiple_of(7) { "inactive" } else { "active" },
    })
    .as_object()
    .cloned()
    .unwrap()
}

async fn seed(objects: &ManagedObjects, total: usize) -> f64 {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for writer in 0..WRITERS {
        let objects = objects.clone();
        tasks.push(tokio::spawn(async move {
            for range in common::batches(writer, WRITERS, total, BATCH) {
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

/// What the console's search box sends: `sw` over every searchable column.
fn search(term: &str) -> String {
    ["userName", "givenName", "sn", "mail", "telephoneNumber"]
        .iter()
        .map(|p| format!("{p} sw \"{term}\""))
        .collect::<Vec<_>>()
        .join(" or ")
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Issue 15's target: each list query answers within this, server time.
const TARGET_MS: f64 = 150.0;

/// Times `query`; returns its median in milliseconds.
async fn time_query(objects: &ManagedObjects, runs: usize, label: &str, query: Query) -> f64 {
    // One untimed run: the page cache, as on a console someone uses.
    let first = objects.query("user", &query).await.unwrap();
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        let page = objects.query("user", &query).await.unwrap();
        times.push(start.elapsed());
        assert_eq!(page.total, first.total);
    }
    times.sort();
    let median = times[times.len() / 2];
    let worst = times[times.len() - 1];
    let names: Vec<String> = first
        .objects
        .iter()
        .take(3)
        .map(|o| {
            o.attributes
                .get("userName")
                .and_then(Value::as_str)
                .unwrap_or("?")
                .to_string()
        })
        .collect();
    println!(
        "{label:<40} median {:>7.1} ms  worst {:>7.1} ms  rows {:>3}  total {:>6}{}  ({}…)",
        millis(median),
        millis(worst),
        first.objects.len(),
        first.total,
        if first.estimated { "~" } else { " " },
        names.join(", ")
    );
    millis(median)
}

#[tokio::main]
async fn main() {
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .init();
    }
    let total: usize = std::env::var("IDM_BENCH_USERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let runs: usize = std::env::var("IDM_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(9);
    let root = std::env::temp_dir().join(format!("idm-bench-console-{}", std::process::id()));
    std::fs::create_dir_all(&root).unwrap();
    println!(
        "idm console list bench: {total} users, surrealkv in {}",
        root.display()
    );
    let store = Store::open(&format!("surrealkv://{}", root.join("idm").display()))
        .await
        .unwrap();
    let secrets = SecretBox::load_or_create(&root.join("idm.key"), None).unwrap();
    let objects = ManagedObjects::new(
        Arc::new(ManagedSchema::from_json(MANAGED).unwrap()),
        store,
        Arc::new(secrets),
    );
    common::prepare_indexes(&objects).await;
    let created = seed(&objects, total).await;
    println!("seeded: batched creates, {WRITERS} writers: {created:>9.0} users/s");

    let page = |filter: String, order_by: &str, offset: usize| Query {
        filter,
        order_by: order_by.into(),
        page_size: 50,
        offset,
        // What the console's list asks for: an estimate beats a count of
        // every match of a broad search.
        estimate_total: true,
        ..Query::default()
    };
    let cases = [
        (
            "first page: userName asc",
            page(String::new(), "userName asc", 0),
        ),
        (
            "search \"snow\", userName asc",
            page(search("snow"), "userName asc", 0),
        ),
        (
            "search \"snow\", page 2",
            page(search("snow"), "userName asc", 50),
        ),
        ("sort sn desc, page 1", page(String::new(), "sn desc", 0)),
        ("sort sn desc, page 2", page(String::new(), "sn desc", 50)),
        ("sort sn asc, page 1", page(String::new(), "sn asc", 0)),
        ("sort sn asc, page 2", page(String::new(), "sn asc", 50)),
        (
            "search \"j\" (broad), userName asc",
            page(search("j"), "userName asc", 0),
        ),
        (
            "search \"snow\", sn desc",
            page(search("snow"), "sn desc", 0),
        ),
        (
            "first page, page 200 (offset 9950)",
            page(String::new(), "userName asc", 9950),
        ),
        ("no order, page 1", page(String::new(), "", 0)),
    ];
    let mut over = Vec::new();
    for (label, query) in cases {
        let median = time_query(&objects, runs, label, query).await;
        if median > TARGET_MS {
            over.push(format!("{label} ({median:.0} ms)"));
        }
    }
    if over.is_empty() {
        println!("verdict: every query's median within {TARGET_MS} ms: met");
    } else {
        println!("verdict: over {TARGET_MS} ms: {}: not met", over.join("; "));
    }
    println!("peak RSS: {:.0} MiB", peak_rss_mib());
    drop(objects);
    let _ = std::fs::remove_dir_all(&root);
}
