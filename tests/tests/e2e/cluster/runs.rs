//! Owned recon runs on two idmd nodes over one SurrealDB server: a run of
//! a mapping is refused on the other node, cancelled and watched from it,
//! and ended for both nodes the moment the cancel answers;
//! `kill -9` of the node running a recon leaves the run ACTIVE until its
//! heartbeat expires (10 s after the last renewal, renewed every 1–2 s),
//! then the other node's sweep (every 5 s) marks it FAILED, and a new run
//! completes with exactly one user per row, each in the directory once. Rows: 3 000 (the issue says
//! 20 000; 3 000 keeps a debug build's run past the kill within test time),
//! and the mapping without its `password` default (an argon2 hash per row
//! is what issue 18 takes off the recon path, not what runs prove) and with
//! one worker (`taskThreads: 1`): a cancel lands between batches, and with
//! Wren's ten workers every row of a small file is in flight at once.

use std::time::{Duration, Instant};

use idm_proto::v1::recon_run::State;
use idm_proto::v1::{
    CancelReconRequest, CountObjectsRequest, GetReconRequest, ReconRun, StartReconRequest,
};

use std::collections::BTreeMap;

use idm_tests::directory::{self, Slapd};
use idm_tests::{Clients, TempDir, idm_conf};
use tonic::Code;

use crate::ldap::{drained_within, slapd};

const MAPPING: &str = "csvEmployee_managedUser";
const ROWS: usize = 3_000;

/// The cookbook mapping without its `password` default, on one worker.
fn lean_mapping(conf: &TempDir) {
    let path = conf.path().join("sync.json");
    let mut sync: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let mapping = sync["mappings"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|m| m["name"] == MAPPING)
        .unwrap();
    mapping["properties"]
        .as_array_mut()
        .unwrap()
        .retain(|p| p["target"] != "password");
    mapping["taskThreads"] = 1.into();
    std::fs::write(&path, serde_json::to_string_pretty(&sync).unwrap()).unwrap();
}

fn write_rows(conf: &TempDir, rows: usize) {
    lean_mapping(conf);
    let mut text = String::from("uid,firstName,lastName,telephoneNumber\n");
    for i in 0..rows {
        text.push_str(&format!("{i},First{i},Last{i},555{i}\n"));
    }
    std::fs::write(conf.path().join("data/hr.csv"), text).unwrap();
}

async fn start_run(clients: &mut Clients, wait: bool) -> Result<ReconRun, tonic::Status> {
    clients
        .recon
        .start_recon(StartReconRequest {
            mapping: MAPPING.into(),
            wait,
        })
        .await
        .map(tonic::Response::into_inner)
}

async fn get_run(clients: &mut Clients, name: &str) -> ReconRun {
    clients
        .recon
        .get_recon(GetReconRequest { name: name.into() })
        .await
        .unwrap()
        .into_inner()
}

async fn user_count(clients: &mut Clients) -> i64 {
    clients
        .objects
        .count_objects(CountObjectsRequest {
            parent: "managed/user".into(),
            filter: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .count
}

#[tokio::test]
async fn a_run_is_refused_watched_and_cancelled_from_the_other_node() {
    let conf = idm_conf("sync");
    write_rows(&conf, ROWS);
    let slapd = slapd();
    let cluster = super::two_nodes(&conf, &slapd).await;
    let mut a = cluster.node(0).clients().await;
    let mut b = cluster.node(1).clients().await;

    let run = start_run(&mut a, false).await.unwrap();
    let refused = start_run(&mut b, false).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(refused.message().contains(&run.id), "{refused:?}");

    // B watches A's run (from the store) while B cancels it.
    let mut watch = crate::watch(&mut b, &run.name).await.unwrap();
    let canceled = b
        .recon
        .cancel_recon(CancelReconRequest {
            name: run.name.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(canceled.state(), State::Canceled, "{}", cluster.logs());
    let mut last = None;
    while let Some(snapshot) = watch.message().await.unwrap() {
        last = Some(snapshot);
    }
    assert_eq!(last.unwrap().state(), State::Canceled);
    // Ended for every node at once: the owner does not still show it ACTIVE,
    // and the mapping is free for the next run on either node.
    assert_eq!(get_run(&mut a, &run.name).await.state(), State::Canceled);
    let next = start_run(&mut b, false).await.unwrap();
    assert_ne!(next.id, run.id);
}

#[tokio::test]
async fn a_recon_whose_node_is_killed_fails_after_its_heartbeat_expires_and_a_new_run_completes() {
    let conf = idm_conf("sync");
    write_rows(&conf, ROWS);
    let slapd = Slapd::builder()
        .log_operations()
        .start()
        .unwrap_or_else(|e| panic!("a real slapd is needed for these tests: {e}"));
    let mut cluster = super::two_nodes(&conf, &slapd).await;
    let mut a = cluster.node(0).clients().await;
    let mut b = cluster.node(1).clients().await;

    let run = start_run(&mut a, false).await.unwrap();
    // Some progress saved (the owner saves every second), then kill -9 A.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let seen = get_run(&mut b, &run.name).await;
        assert_eq!(
            seen.state(),
            State::Active,
            "the run ended before the kill: {seen:?}"
        );
        if seen.source.is_some_and(|s| s.processed > 0) {
            break;
        }
        assert!(Instant::now() < deadline, "no progress\n{}", cluster.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(a);
    let killed = cluster.kill(0);
    let killed_at = Instant::now();
    drop(killed);

    // Still A's, and the mapping still held, until the heartbeat expires.
    assert_eq!(get_run(&mut b, &run.name).await.state(), State::Active);
    let refused = start_run(&mut b, false).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);

    // Then B's sweep fails it: not before the expiry (renewed at most 2 s
    // before the kill, so at least 8 s after it), within expiry + a sweep.
    let failed = loop {
        let seen = get_run(&mut b, &run.name).await;
        if seen.state() != State::Active {
            break seen;
        }
        assert!(
            killed_at.elapsed() < Duration::from_secs(60),
            "still ACTIVE a minute after the kill\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(killed_at.elapsed() >= Duration::from_secs(8), "{failed:?}");
    assert_eq!(failed.state(), State::Failed, "{failed:?}");
    assert!(
        failed.error.contains("the node running it stopped"),
        "{failed:?}"
    );

    // A new run on B completes; one user per row, none twice.
    let again = start_run(&mut b, true).await.unwrap();
    assert_eq!(again.state(), State::Success, "{again:?}");
    assert_eq!(user_count(&mut b).await, ROWS as i64);

    // And the directory has each of them once: what A was delivering when
    // it died was left to its claims' expiry and delivered by B.
    // 3,000 LDAP adds from a debug build, behind B's own run's writes.
    drained_within(&mut b, Duration::from_secs(240)).await;
    let accounts = directory::search(&slapd, "(objectClass=inetOrgPerson)");
    assert_eq!(accounts.len(), ROWS, "{}", cluster.logs());
    // Once each, by slapd's own count: a second ADD of an entry (refused by
    // slapd, so never seen in a search) would mean a change delivered twice.
    let mut adds: BTreeMap<String, usize> = BTreeMap::new();
    for dn in slapd.operations("ADD") {
        *adds.entry(dn.to_ascii_lowercase()).or_default() += 1;
    }
    let twice: Vec<_> = adds.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "added more than once: {twice:?}");
    assert_eq!(adds.len(), ROWS, "one ADD per row");
}
