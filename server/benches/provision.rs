//! Provisioning into a real slapd: implicit sync of N managed users through
//! the outbox (read entries → map → read targets → add → link → settle),
//! against the limit: raw ldap3 adds of the same entries into a fresh slapd,
//! one at a time and pipelined (32 in flight on one connection).
//!
//! `cargo bench -p idm-server --bench provision` (release; needs slapd).
//! `IDM_BENCH_USERS` (default 10000). Users carry no password: argon2id at
//! their creation would dominate the set-up, and the SSHA hash the connector
//! adds per entry is microseconds.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use idm_server::managed::{ManagedObjects, ManagedSchema};
use idm_server::secrets::SecretBox;
use idm_server::store::{ConfigDocument, Store};
use idm_server::sync::outbox::ImplicitSync;
use idm_testkit::Slapd;
use ldap3::{LdapConnAsync, LdapConnSettings};
use serde_json::{Map, Value, json};

mod common;
use common::rate;

const MAPPING: &str = "managedUser_ldapAccount";
const IN_FLIGHT: usize = 32;

fn user(n: usize) -> Map<String, Value> {
    json!({
        "userName": format!("user{n:07}"),
        "givenName": format!("Given{n}"),
        "sn": format!("Family{n}"),
        "mail": format!("user{n:07}@example.com"),
        "telephoneNumber": format!("555{n:07}"),
    })
    .as_object()
    .cloned()
    .unwrap_or_default()
}

/// The entry implicit sync makes of `user(n)`.
fn entry(n: usize) -> Vec<(String, Vec<String>)> {
    let name = format!("user{n:07}");
    vec![
        (
            "objectClass".into(),
            ["top", "person", "organizationalPerson", "inetOrgPerson"]
                .map(String::from)
                .to_vec(),
        ),
        ("uid".into(), vec![name.clone()]),
        ("cn".into(), vec![name.clone()]),
        ("givenName".into(), vec![format!("Given{n}")]),
        ("sn".into(), vec![format!("Family{n}")]),
        ("mail".into(), vec![format!("{name}@example.com")]),
        ("telephoneNumber".into(), vec![format!("555{n:07}")]),
    ]
}

/// Raw ldap3 adds of every entry, `in_flight` at a time on one connection.
async fn raw_adds(slapd: &Slapd, users: usize, in_flight: usize) -> f64 {
    let (connection, mut ldap) =
        LdapConnAsync::with_settings(LdapConnSettings::new(), &slapd.url())
            .await
            .unwrap_or_else(|e| panic!("connect: {e}"));
    ldap3::drive!(connection);
    ldap.simple_bind(slapd.admin_dn(), slapd.admin_password())
        .await
        .and_then(|r| r.success())
        .unwrap_or_else(|e| panic!("bind: {e}"));
    let base = slapd.base_dn().to_string();
    let start = Instant::now();
    futures::stream::iter(0..users)
        .map(|n| {
            let mut ldap = ldap.clone();
            let dn = format!("uid=user{n:07},{base}");
            async move {
                let attributes: Vec<(String, std::collections::HashSet<String>)> = entry(n)
                    .into_iter()
                    .map(|(name, values)| (name, values.into_iter().collect()))
                    .collect();
                ldap.add(&dn, attributes)
                    .await
                    .and_then(|r| r.success())
                    .unwrap_or_else(|e| panic!("add {dn}: {e}"));
            }
        })
        .buffer_unordered(in_flight)
        .collect::<Vec<()>>()
        .await;
    let elapsed = start.elapsed();
    let _ = ldap.unbind().await;
    rate(users, elapsed)
}

fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: f64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

fn count_entries(slapd: &Slapd) -> usize {
    let output = std::process::Command::new("ldapsearch")
        .args(["-x", "-LLL", "-H", &slapd.url(), "-D", slapd.admin_dn()])
        .args(["-w", slapd.admin_password(), "-b", slapd.base_dn()])
        .args([
            "-E",
            "pr=1000/noprompt",
            "(objectClass=inetOrgPerson)",
            "1.1",
        ])
        .output()
        .unwrap_or_else(|e| panic!("ldapsearch: {e}"));
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|l| l.starts_with("dn:"))
        .count()
}

async fn put(store: &Store, kind: &str, name: &str, body: Value) {
    store
        .put_config(&ConfigDocument {
            kind: kind.into(),
            name: name.into(),
            body: body.as_object().cloned().unwrap_or_default(),
            source: "bench".into(),
        })
        .await
        .unwrap_or_else(|e| panic!("conf {name}: {e}"));
}

/// Creates the users with their outbox entries, then times implicit sync
/// from its start until the outbox is empty: users/s, seconds, and the CPU
/// seconds this process spent meanwhile (idm's, and the bench's polling).
async fn implicit_sync(slapd: &Slapd, dir: &Path, users: usize) -> (f64, f64, f64) {
    std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{e}"));
    let store = Store::open(&format!("surrealkv://{}", dir.join("idm").display()))
        .await
        .unwrap_or_else(|e| panic!("store: {e}"));
    let secrets = SecretBox::load_or_create(&dir.join("idm.key"), None)
        .unwrap_or_else(|e| panic!("key: {e}"));
    let schema = ManagedSchema::builtin().unwrap_or_else(|e| panic!("schema: {e}"));
    let objects = ManagedObjects::new(Arc::new(schema), store.clone(), Arc::new(secrets));
    common::prepare_indexes(&objects).await;
    let sample: Value =
        serde_json::from_str(include_str!("../../tests/fixtures/idm-sync/sync.json"))
            .unwrap_or_else(|e| panic!("sync.json: {e}"));
    let mapping = sample["mappings"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["name"] == MAPPING))
        .cloned()
        .unwrap_or_else(|| panic!("{MAPPING} in tests/fixtures/idm-sync/sync.json"));
    let mut connector: Value = serde_json::from_str(include_str!(
        "../../tests/fixtures/idm-sync/connector-ldap.json"
    ))
    .unwrap_or_else(|e| panic!("connector-ldap.json: {e}"));
    connector["url"] = json!(slapd.url());
    connector["baseDn"] = json!(slapd.base_dn());
    connector["bindDn"] = json!(slapd.admin_dn());
    connector["bindPassword"] = json!(slapd.admin_password());
    put(&store, "connector", "ldap", connector).await;
    put(&store, "mapping", MAPPING, mapping).await;

    store.set_sync_subscriptions(BTreeMap::from([(
        "user".to_string(),
        vec![MAPPING.to_string()],
    )]));
    for chunk in (0..users).collect::<Vec<_>>().chunks(500) {
        let batch = chunk
            .iter()
            .map(|n| (Some(format!("u{n}")), user(*n)))
            .collect();
        objects
            .create_many("bench", "user", batch)
            .await
            .unwrap_or_else(|e| panic!("create: {e}"));
    }

    let cpu = cpu_seconds();
    let start = Instant::now();
    let sync = ImplicitSync::start(store.clone(), objects, PathBuf::from("."))
        .await
        .unwrap_or_else(|e| panic!("implicit sync: {e}"));
    // Done when every user is linked: links and settled entries are written
    // in one transaction. A range count reads no records, so watching costs
    // the run next to nothing (a scan of the outbox every few ms would not).
    while store
        .count_links(MAPPING)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        < users as u64
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = start.elapsed();
    let cpu = cpu_seconds() - cpu;
    let queue = store
        .queue_summary()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        queue.iter().all(|q| q.pending == 0 && q.failed == 0),
        "the outbox drained: {queue:?}"
    );
    sync.shutdown(Duration::from_secs(10)).await;
    (rate(users, elapsed), elapsed.as_secs_f64(), cpu)
}

/// The three measurements against one kind of directory.
async fn measure(users: usize, durable: bool, root: &Path) -> [f64; 5] {
    let directory = || {
        let builder = Slapd::builder();
        let builder = if durable { builder.durable() } else { builder };
        builder.start().unwrap()
    };
    let slapd = directory();
    let raw_one = raw_adds(&slapd, users, 1).await;
    drop(slapd);
    let slapd = directory();
    let raw_pipelined = raw_adds(&slapd, users, IN_FLIGHT).await;
    drop(slapd);
    let slapd = directory();
    let (idm, seconds, cpu) = implicit_sync(&slapd, root, users).await;
    assert_eq!(
        count_entries(&slapd),
        users,
        "every user reached the directory"
    );
    let _ = std::fs::remove_dir_all(root);
    [raw_one, raw_pipelined, idm, seconds, cpu]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let users: usize = std::env::var("IDM_BENCH_USERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let root = std::env::temp_dir().join(format!("idm-bench-provision-{}", std::process::id()));
    println!(
        "provision {users} users into slapd (2 tokio workers; idm, slapd and the bench share the machine)"
    );
    let only_durable = std::env::var("IDM_BENCH_DURABLE_ONLY").is_ok();
    for (durable, label) in [
        (
            true,
            "durable slapd (back-mdb syncs every write: a production directory)",
        ),
        (false, "no-sync slapd (olcDbNoSync: idm's own ceiling)"),
    ] {
        if only_durable && !durable {
            continue;
        }
        let [raw_one, raw_pipelined, idm, seconds, cpu] = measure(users, durable, &root).await;
        println!("{label}");
        println!("  raw ldap3 add, one at a time:  {raw_one:>8.0} adds/s");
        println!(
            "  raw ldap3 add, {IN_FLIGHT} in flight:   {raw_pipelined:>8.0} adds/s   (the limit)"
        );
        println!(
            "  idm implicit sync (outbox):    {idm:>8.0} users/s  ({seconds:.1} s, {:.2}x the limit)",
            idm / raw_pipelined
        );
        println!(
            "  idm CPU:                       {:>8.2} ms a user ({cpu:.1} s in {seconds:.1} s; 2 cores shared with slapd)",
            cpu * 1000.0 / users as f64
        );
    }
}
