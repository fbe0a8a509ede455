//! Two nodes on one SurrealDB server: both serve the same data, whether they
//! sign in as the server's root or as a database user, and a schedule's
//! ticks run once each across the cluster.

use std::collections::BTreeMap;
use std::time::Duration;

use idm_proto::v1::ListExecutionsRequest;
use idm_tests::cluster::{Cluster, ClusterOptions};
use idm_tests::{Clients, IdmdOptions, idm_conf};
use serde_json::json;

use crate::{create_user, managed_object};

/// A user created on node A reads on node B, and one created on B reads on A.
async fn a_write_on_each_node_reads_on_the_other(cluster: &Cluster) {
    let mut a = cluster.node(0).clients().await;
    let mut b = cluster.node(1).clients().await;
    create_user(&mut a, "from-a", json!({"userName": "froma", "sn": "A"})).await;
    let read = managed_object(&mut b, "user", "from-a")
        .await
        .unwrap_or_else(|| panic!("node B does not see node A's user\n{}", cluster.logs()));
    assert_eq!(read["userName"], "froma");
    create_user(&mut b, "from-b", json!({"userName": "fromb", "sn": "B"})).await;
    let read = managed_object(&mut a, "user", "from-b").await.unwrap();
    assert_eq!(read["userName"], "fromb");
}

#[tokio::test]
async fn two_nodes_signed_in_as_root_share_their_writes() {
    let cluster = Cluster::start(2, ClusterOptions::default()).await;
    a_write_on_each_node_reads_on_the_other(&cluster).await;
}

#[tokio::test]
async fn two_nodes_signed_in_as_a_database_user_share_their_writes() {
    let cluster = Cluster::start(
        2,
        ClusterOptions {
            database_user: true,
            ..Default::default()
        },
    )
    .await;
    a_write_on_each_node_reads_on_the_other(&cluster).await;
}

#[tokio::test]
async fn two_nodes_over_wss_trusting_the_servers_ca_share_their_writes() {
    let cluster = Cluster::start(
        2,
        ClusterOptions {
            tls: true,
            database_user: true,
            ..Default::default()
        },
    )
    .await;
    assert!(cluster.server().url().starts_with("wss://localhost:"));
    a_write_on_each_node_reads_on_the_other(&cluster).await;

    // A node that does not trust the server's CA does not start.
    let server = cluster.server();
    let log = idm_tests::Idmd::start_failure(IdmdOptions {
        store: Some(server.url()),
        env: vec![
            ("IDM_STORE_USERNAME".into(), server.root_user().into()),
            ("IDM_STORE_PASSWORD".into(), server.root_password().into()),
        ],
        ..Default::default()
    })
    .await;
    assert!(log.contains("cannot open the store"), "{log}");
    assert!(!log.contains(server.root_password()), "{log}");
}

#[tokio::test]
async fn a_wrong_store_password_is_refused_without_being_logged() {
    let server = tokio::task::spawn_blocking(idm_testkit::SurrealServer::start)
        .await
        .unwrap()
        .unwrap();
    server
        .define_database_user("idm", "idm", "idmd", "right-pw")
        .unwrap();
    for (auth, user) in [("root", server.root_user()), ("database", "idmd")] {
        let log = idm_tests::Idmd::start_failure(IdmdOptions {
            store: Some(server.url()),
            env: vec![
                ("IDM_STORE_USERNAME".into(), user.into()),
                ("IDM_STORE_PASSWORD".into(), "wrong-pw-7d1e".into()),
                ("IDM_STORE_AUTH".into(), auth.into()),
            ],
            ..Default::default()
        })
        .await;
        assert!(log.contains("sign-in as"), "{auth}: {log}");
        assert!(
            !log.contains("wrong-pw-7d1e"),
            "{auth}: the password is logged:\n{log}"
        );
    }
    let log = idm_tests::Idmd::start_failure(IdmdOptions {
        store: Some(server.url()),
        env: vec![
            ("IDM_STORE_USERNAME".into(), "idmd".into()),
            ("IDM_STORE_PASSWORD".into(), "right-pw".into()),
            ("IDM_STORE_AUTH".into(), "namespace".into()),
        ],
        ..Default::default()
    })
    .await;
    assert!(
        log.contains("IDM_STORE_AUTH=\"namespace\": use root or database"),
        "{log}"
    );
}

async fn executions(clients: &mut Clients, name: &str) -> Vec<idm_proto::v1::Execution> {
    clients
        .schedules
        .list_executions(ListExecutionsRequest {
            schedule: format!("schedules/{name}"),
            page_size: 1000,
            page_token: String::new(),
            running: false,
        })
        .await
        .unwrap()
        .into_inner()
        .executions
}

/// The scheduler sample's greeting, every second instead of every 15, on
/// two nodes started with the same conf: over ~20 s every fire time runs
/// exactly once across the cluster.
#[tokio::test]
async fn a_one_second_schedule_fires_each_tick_once_across_two_nodes() {
    let conf = idm_conf("scheduler");
    std::fs::remove_file(conf.path().join("schedule-recon.json")).unwrap();
    let greeting = conf.path().join("schedule-greeting.json");
    let text = std::fs::read_to_string(&greeting).unwrap();
    assert!(text.contains("0/15 * * * * ?"), "{text}");
    std::fs::write(&greeting, text.replace("0/15 * * * * ?", "* * * * * ?")).unwrap();
    let cluster = Cluster::start(
        2,
        ClusterOptions {
            idmd: IdmdOptions {
                conf: Some(conf.path().to_path_buf()),
                ..Default::default()
            },
            ..Default::default()
        },
    )
    .await;
    let mut a = cluster.node(0).clients().await;

    // Both nodes run their scheduler for ~20 ticks.
    tokio::time::sleep(Duration::from_secs(20)).await;
    let fired = executions(&mut a, "greeting").await;
    let mut by_fire_time: BTreeMap<(i64, i32), Vec<String>> = BTreeMap::new();
    for execution in &fired {
        let at = execution.fire_time.as_ref().unwrap();
        by_fire_time
            .entry((at.seconds, at.nanos))
            .or_default()
            .push(execution.node.clone());
    }
    let twice: Vec<_> = by_fire_time
        .iter()
        .filter(|(_, nodes)| nodes.len() > 1)
        .collect();
    assert!(
        twice.is_empty(),
        "ticks ran more than once: {twice:?}\n{}",
        cluster.logs()
    );
    assert!(
        by_fire_time.len() >= 15,
        "only {} ticks ran in ~20 s: {by_fire_time:?}",
        by_fire_time.len()
    );
    // The other node reads the same history (and what ran since).
    let mut b = cluster.node(1).clients().await;
    assert!(executions(&mut b, "greeting").await.len() >= fired.len());
}

/// idm's backup reads and its restore writes embedded stores only (SurrealDB's
/// SDK exports and imports in-process engines): on a server, both say so and
/// name the server's own tools, before anything is read or written.
#[tokio::test]
async fn backup_and_restore_on_a_server_store_are_refused_naming_the_servers_own_tools() {
    let cluster = Cluster::start(1, ClusterOptions::default()).await;
    let node = cluster.node(0);
    let out = idm_tests::TempDir::new("server-backup");
    let file = out.path().join("idm.backup");
    let refused = node.idmctl(&["backup", "--to", file.to_str().unwrap()]);
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(said.contains("FAILED_PRECONDITION"), "{said}");
    assert!(said.contains("surreal export"), "{said}");
    assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 0, "no file");

    let restored = std::process::Command::new(idm_tests::binary("idmd"))
        .args(["restore", "--from", file.to_str().unwrap(), "--store"])
        .arg(cluster.server().url())
        .env_remove("IDM_STORE")
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&restored.stderr);
    assert!(!restored.status.success());
    assert!(said.contains("surrealkv://"), "{said}");
    assert!(said.contains("surreal import"), "{said}");
    assert!(
        !said.contains("No such file"),
        "refused before the file is read: {said}"
    );
}
