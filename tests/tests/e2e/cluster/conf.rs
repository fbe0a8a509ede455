//! Conf is cluster-wide (issue 17 item 2): a mapping made `enableSync`
//! through node A makes node B's writes reach the directory, at once (B's
//! write checks the conf version in its own transaction) and without B
//! being told anything.

use idm_proto::json::{from_proto_struct, to_proto_struct};
use idm_proto::v1::{GetMappingRequest, Mapping, PutMappingRequest};
use idm_tests::directory;
use idm_tests::idm_conf;
use serde_json::{Value, json};

use crate::create_user;
use crate::ldap::{eventually, slapd};

const USERS: &str = "managedUser_ldapAccount";

#[tokio::test]
async fn a_mapping_made_enable_sync_on_node_a_makes_node_b_writes_reach_ldap() {
    let slapd = slapd();
    let conf = idm_conf("sync");
    // The directory's users mapping starts switched off.
    let file = conf.path().join("sync.json");
    let mut sync: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    for mapping in sync["mappings"].as_array_mut().unwrap() {
        if mapping["name"] == USERS {
            mapping["enableSync"] = json!(false);
        }
    }
    std::fs::write(&file, serde_json::to_vec_pretty(&sync).unwrap()).unwrap();
    let cluster = super::two_nodes(&conf, &slapd).await;
    let mut a = cluster.node(0).clients().await;
    let mut b = cluster.node(1).clients().await;
    create_user(&mut b, "before", json!({"userName": "before", "sn": "B"})).await;

    // Through A: the mapping switched on.
    let stored = a
        .config
        .get_mapping(GetMappingRequest {
            name: format!("mappings/{USERS}"),
        })
        .await
        .unwrap()
        .into_inner();
    let mut definition = from_proto_struct(stored.definition.as_ref().unwrap());
    definition.insert("enableSync".into(), json!(true));
    a.config
        .put_mapping(PutMappingRequest {
            mapping: Some(Mapping {
                name: format!("mappings/{USERS}"),
                definition: Some(to_proto_struct(&definition)),
                ..Default::default()
            }),
        })
        .await
        .unwrap();

    // At once, through B: no wait for B's conf poll.
    create_user(&mut b, "after", json!({"userName": "after", "sn": "B"})).await;
    eventually("B's user in the directory", || {
        directory::account(&slapd, "after")
    })
    .await;
    assert!(
        directory::account(&slapd, "before").is_none(),
        "a write made before the mapping was on is not delivered by implicit sync"
    );
    assert!(
        !cluster.logs().contains("not usable for implicit sync"),
        "{}",
        cluster.logs()
    );
}
