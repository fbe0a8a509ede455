//! Durability is explicit: on `surrealkv://` every acknowledged write
//! survives a `kill -9` of idmd right after it (the default sync mode
//! fsyncs each commit), and a store URL with a sync mode SurrealKV would not
//! understand stops idmd instead of silently falling back.

use idm_proto::v1::{DeleteObjectRequest, PatchObjectRequest, PatchOperation};
use idm_tests::{Idmd, IdmdOptions, TempDir};
use serde_json::json;

use crate::{create_user, managed_object, password_valid};

const USERS: usize = 24;

fn mail(value: &str) -> PatchOperation {
    PatchOperation {
        operation: "replace".into(),
        field: "/mail".into(),
        value: Some(prost_types::Value {
            kind: Some(prost_types::value::Kind::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

#[tokio::test]
async fn every_acknowledged_write_survives_a_kill_9() {
    let site = TempDir::new("durable");
    let options = IdmdOptions {
        store: Some(format!("surrealkv://{}", site.path().join("db").display())),
        ..Default::default()
    };
    let mut idmd = Idmd::start_with(options.clone()).await;
    let mut c = idmd.clients().await;
    // Creates, then updates of a third and deletes of a third, each
    // acknowledged before the next; the kill comes right after the last.
    for i in 0..USERS {
        create_user(
            &mut c,
            &format!("u{i}"),
            json!({"userName": format!("u{i}"), "password": format!("Pass-{i}-word")}),
        )
        .await;
    }
    for i in (0..USERS).filter(|i| i % 3 == 1) {
        let patched = c
            .objects
            .patch_object(PatchObjectRequest {
                name: format!("managed/user/u{i}"),
                operations: vec![mail(&format!("u{i}@example.com"))],
                expected_revision: Some(1),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(patched.revision, 2);
    }
    for i in (0..USERS).filter(|i| i % 3 == 2) {
        let deleted = c
            .objects
            .delete_object(DeleteObjectRequest {
                name: format!("managed/user/u{i}"),
                expected_revision: None,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(deleted.existed);
    }
    drop(c);
    idmd.kill();

    let restarted = Idmd::spawn(
        options,
        TempDir::new("idmd"),
        idmd.admin_token.clone(),
        idmd.encryption_key.clone(),
    )
    .await
    .unwrap_or_else(|log| panic!("idmd did not start on the killed store:\n{log}"));
    let mut c = restarted.clients().await;
    for i in 0..USERS {
        let id = format!("u{i}");
        let found = managed_object(&mut c, "user", &id).await;
        match i % 3 {
            0 => {
                let user = found.unwrap_or_else(|| panic!("{id} was lost"));
                assert_eq!(user["_rev"], json!("1"), "{id}");
            }
            1 => {
                let user = found.unwrap_or_else(|| panic!("{id} was lost"));
                assert_eq!(user["_rev"], json!("2"), "{id}: the update was lost");
                assert_eq!(user["mail"], json!(format!("u{i}@example.com")));
            }
            _ => assert!(found.is_none(), "{id}: the delete was lost"),
        }
        if i % 3 != 2 {
            assert!(
                password_valid(&mut c, &id, &format!("Pass-{i}-word")).await,
                "{id}"
            );
        }
    }
}

#[tokio::test]
async fn a_sync_mode_surrealkv_would_not_understand_stops_idmd() {
    let site = TempDir::new("sync-mode");
    let log = Idmd::start_failure(IdmdOptions {
        store: Some(format!(
            "surrealkv://{}?sync=sometimes",
            site.path().join("db").display()
        )),
        ..Default::default()
    })
    .await;
    assert!(log.contains("sync=sometimes is not a sync mode"), "{log}");
    assert!(!site.path().join("db").exists(), "nothing was opened");
}

#[tokio::test]
async fn the_store_works_in_the_memory_given_and_too_little_stops_idmd() {
    let site = TempDir::new("store-memory");
    let store = format!("surrealkv://{}", site.path().join("db").display());
    let idmd = Idmd::start_with(IdmdOptions {
        store: Some(store.clone()),
        extra_args: ["--store-memory", "64MiB"].map(String::from).to_vec(),
        ..Default::default()
    })
    .await;
    let mut c = idmd.clients().await;
    create_user(
        &mut c,
        "small",
        json!({"userName": "small", "password": "Small-Pass-1"}),
    )
    .await;
    assert!(password_valid(&mut c, "small", "Small-Pass-1").await);
    drop(idmd);

    let log = Idmd::start_failure(IdmdOptions {
        store: Some(store),
        extra_args: ["--store-memory", "4MiB"].map(String::from).to_vec(),
        ..Default::default()
    })
    .await;
    assert!(log.contains("--store-memory"), "{log}");
    assert!(log.contains("below the least"), "{log}");
}

/// jemalloc works in one arena and gives freed pages back within a second
/// (`.cargo/config.toml` builds the settings in): idmd's and the gateway's
/// jemalloc say so when asked to confirm their settings at start.
#[test]
fn idmd_and_the_gateway_give_freed_memory_back_within_a_second() {
    for name in ["idmd", "idm-gateway"] {
        let output = std::process::Command::new(idm_tests::binary(name))
            .arg("--help")
            .env("_RJEM_MALLOC_CONF", "confirm_conf:true")
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&output.stderr);
        for set in ["narenas:1", "dirty_decay_ms:1000", "muzzy_decay_ms:0"] {
            assert!(
                said.contains(&format!("<jemalloc>: -- Set conf value: {set}")),
                "{name}: {said}"
            );
        }
    }
}
