//! Implicit sync from two nodes on one store: both nodes' writes feed one
//! outbox, and each change is delivered by one node at a time (claims in
//! the store), in order per object, so an outage of the directory delays
//! changes made on either node and none arrives twice. slapd logs every
//! operation it serves, which is what "once" is counted against.

use std::collections::BTreeMap;

use idm_tests::directory::{self, Slapd};
use idm_tests::idm_conf;
use serde_json::json;

use crate::create_user;
use crate::ldap::{drained, eventually, op, patch};

const PER_NODE: usize = 20;

#[tokio::test]
async fn changes_made_on_both_nodes_while_ldap_is_down_all_arrive_once_when_it_returns() {
    let mut slapd = Slapd::builder()
        .log_operations()
        .start()
        .unwrap_or_else(|e| panic!("a real slapd is needed for these tests: {e}"));
    let conf = idm_conf("sync");
    let cluster = super::two_nodes(&conf, &slapd).await;
    let mut a = cluster.node(0).clients().await;
    let mut b = cluster.node(1).clients().await;

    slapd.stop();
    // Each node creates its users, then changes the other node's: every
    // object has entries written by both nodes.
    for n in 0..PER_NODE {
        for (clients, prefix) in [(&mut a, "a"), (&mut b, "b")] {
            let id = format!("{prefix}{n}");
            create_user(clients, &id, json!({ "userName": id, "sn": "First" })).await;
        }
    }
    for n in 0..PER_NODE {
        for (clients, prefix) in [(&mut b, "a"), (&mut a, "b")] {
            let name = format!("managed/user/{prefix}{n}");
            patch(clients, &name, vec![op("replace", "/sn", json!("Second"))]).await;
        }
    }

    slapd.restart().unwrap();
    eventually("every account, with its last change", || {
        let entries = directory::search(&slapd, "(objectClass=inetOrgPerson)");
        (entries.len() == 2 * PER_NODE && entries.iter().all(|e| e.get("sn") == Some("Second")))
            .then_some(())
    })
    .await;
    drained(&mut a).await;

    let mut adds: BTreeMap<String, usize> = BTreeMap::new();
    for dn in slapd.operations("ADD") {
        *adds.entry(dn.to_ascii_lowercase()).or_default() += 1;
    }
    assert_eq!(adds.len(), 2 * PER_NODE, "{adds:?}");
    let twice: Vec<_> = adds.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "added more than once: {twice:?}");
    // The change to `sn` arrives once: folded into the ADD (the entry is
    // written as the object is when delivered) or as one MOD, never two.
    let mut mods: BTreeMap<String, usize> = BTreeMap::new();
    for dn in slapd.operations("MOD") {
        *mods.entry(dn.to_ascii_lowercase()).or_default() += 1;
    }
    let modified_twice: Vec<_> = mods.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        modified_twice.is_empty(),
        "modified more than once: {modified_twice:?}"
    );
    let logs = cluster.logs();
    assert!(
        !logs.contains("the target existed already") && !logs.contains("already exists"),
        "{logs}"
    );
}
