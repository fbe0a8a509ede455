//! A Wren:IDM project as written: the samples hold only Wren's own files
//! (`conf/provisioner.openicf-*.json`, `sync.json`, `schedule-*.json`,
//! `resolver/boot.properties`, `script/`, `data/`), and idmd runs them: CSV
//! into managed users, managed users into a slapd named by `entryUUID` (a
//! rename keeps the link and moves the entry), schedules with their script
//! files. Unsupported ICF settings are named in one warning; an unknown
//! `connectorRef` or `&{property}` stops start-up naming the file.

use std::time::{Duration, Instant};

use idm_proto::v1::{PatchObjectRequest, PatchOperation};
use idm_testkit::SlapdBuilder;
use idm_tests::directory::{self, Slapd};
use idm_tests::{Idmd, IdmdOptions, wren_sample};
use serde_json::{Value, json};

use crate::{managed_object, recon};

const BASE: &str = "dc=wrensecurity,dc=org";
const PATIENCE: Duration = Duration::from_secs(60);

fn wren_slapd() -> Slapd {
    SlapdBuilder::default()
        .base_dn(BASE)
        .start()
        .unwrap_or_else(|e| panic!("a real slapd is needed for these tests: {e}"))
}

/// What `&{idm.ldap.*}` in the sample's provisioner file resolves to.
fn ldap_env(slapd: &Slapd) -> Vec<(String, String)> {
    vec![
        ("IDM_LDAP_HOST".into(), "127.0.0.1".into()),
        ("IDM_LDAP_PORT".into(), slapd.port().to_string()),
        ("IDM_LDAP_BIND_DN".into(), slapd.admin_dn().into()),
        (
            "IDM_LDAP_BIND_PASSWORD".into(),
            slapd.admin_password().into(),
        ),
    ]
}

async fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn edit(file: &std::path::Path, change: impl FnOnce(&mut Value)) {
    let mut value: Value = serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    change(&mut value);
    std::fs::write(file, serde_json::to_string_pretty(&value).unwrap()).unwrap();
}

async fn start_failure(conf: &std::path::Path) -> String {
    Idmd::start_failure(IdmdOptions {
        conf: Some(conf.to_path_buf()),
        ..Default::default()
    })
    .await
}

fn count(run: &idm_proto::v1::ReconRun, situation: &str) -> i64 {
    run.situation_counts.get(situation).copied().unwrap_or(0)
}

#[tokio::test]
async fn the_sync_sample_runs_as_written_and_a_rename_keeps_the_entry_uuid_link() {
    let slapd = wren_slapd();
    let project = wren_sample("sync");
    let idmd = Idmd::start_with(IdmdOptions {
        conf: Some(project.path().to_path_buf()),
        env: ldap_env(&slapd),
        ..Default::default()
    })
    .await;
    let log = idmd.log();
    assert!(
        !log.contains("that idm does not support"),
        "the sample asks for nothing idm lacks:\n{log}"
    );
    let mut c = idmd.clients().await;

    let run = recon(&mut c, "csvEmployee_managedUser").await;
    assert_eq!(count(&run, "ABSENT"), 3, "{run:?}");
    let snow = managed_object(&mut c, "user", "123").await.unwrap();
    assert_eq!(snow["userName"], "snow123");
    assert_eq!(snow["mail"], "jon.snow@example.com");

    let entry = eventually("uid=snow123 in the directory", || {
        directory::account(&slapd, "snow123")
    })
    .await;
    assert_eq!(entry.dn, format!("uid=snow123,{BASE}"));
    assert!(directory::can_bind(&slapd, &entry.dn, "FooBar123"));
    let uuid = entry.get("entryUUID").unwrap().to_string();
    eventually("all three accounts", || {
        (directory::search(&slapd, "(objectClass=inetOrgPerson)").len() == 3).then_some(())
    })
    .await;

    // A rename in idm: userName names the entry (the mapping's dn and uid).
    c.objects
        .patch_object(PatchObjectRequest {
            name: "managed/user/123".into(),
            operations: vec![PatchOperation {
                operation: "replace".into(),
                field: "/userName".into(),
                value: Some(idm_proto::json::to_proto_value(&json!("jsnow123"))),
                ..Default::default()
            }],
            expected_revision: None,
        })
        .await
        .unwrap();
    // A move (modrdn) and then a modify of the rest: wait for both.
    let moved = eventually("the entry moved to uid=jsnow123 and changed", || {
        directory::account(&slapd, "jsnow123").filter(|e| e.get("cn") == Some("jsnow123"))
    })
    .await;
    assert_eq!(moved.dn, format!("uid=jsnow123,{BASE}"));
    assert_eq!(
        moved.get("entryUUID"),
        Some(uuid.as_str()),
        "the same entry, moved"
    );
    assert_eq!(moved.get("cn"), Some("jsnow123"));
    assert!(directory::account(&slapd, "snow123").is_none());
    assert_eq!(
        directory::search(&slapd, "(objectClass=inetOrgPerson)").len(),
        3
    );
    // The link followed: a reconciliation finds every target linked.
    let run = recon(&mut c, "managedUser_ldapAccount").await;
    assert_eq!(count(&run, "CONFIRMED"), 3, "{run:?}");
    assert_eq!(run.situation_counts.values().sum::<i64>(), 3, "{run:?}");
    assert_eq!(
        directory::search(&slapd, "(objectClass=inetOrgPerson)").len(),
        3
    );
}

#[tokio::test]
async fn the_scheduler_sample_runs_from_its_conf_directory() {
    let project = wren_sample("scheduler");
    // --conf names the project's conf/: script/greeting.js and data/hr.csv
    // are found beside it, as Wren finds them.
    let idmd = Idmd::start_with(IdmdOptions {
        conf: Some(project.path().join("conf")),
        ..Default::default()
    })
    .await;
    let mut c = idmd.clients().await;
    let deadline = Instant::now() + PATIENCE;
    while managed_object(&mut c, "user", "123").await.is_none() {
        assert!(
            Instant::now() < deadline,
            "schedule-recon never ran:\n{}",
            idmd.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    eventually("the greeting script's line", || {
        idmd.log()
            .contains("Hi, this is automatically triggered script!")
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn unsupported_icf_settings_and_wren_encrypted_credentials_are_named_at_start() {
    let project = wren_sample("sync");
    edit(
        &project.path().join("conf/provisioner.openicf-ldap.json"),
        |icf| {
            let props = &mut icf["configurationProperties"];
            props["useBlocks"] = json!(true);
            props["credentials"] = json!({"$crypto": {"type": "x-simple-encryption", "value": {"cipher": "AES/CBC/PKCS5Padding", "data": "c2VjcmV0"}}});
            icf["poolConfigOption"] = json!({"maxObjects": 50});
        },
    );
    let idmd = Idmd::start_with(IdmdOptions {
        conf: Some(project.path().to_path_buf()),
        ..Default::default()
    })
    .await;
    let log = idmd.log();
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("that idm does not support"))
        .collect();
    assert_eq!(warnings.len(), 1, "one warning for the file:\n{log}");
    let warning = warnings[0];
    assert!(
        warning.contains("provisioner.openicf-ldap.json")
            && warning.contains("configurationProperties.useBlocks")
            && warning.contains("poolConfigOption.maxObjects"),
        "{warning}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("provisioner.openicf-ldap.json")
                && l.contains("configurationProperties.credentials")
                && l.contains("$crypto")),
        "{log}"
    );
    assert!(
        !log.contains("c2VjcmV0"),
        "nothing of the encrypted value is logged"
    );
}

#[tokio::test]
async fn an_unknown_connector_ref_or_property_stops_start_up_naming_the_file() {
    let project = wren_sample("scheduler");
    let csv = project.path().join("conf/provisioner.openicf-csv.json");
    let original = std::fs::read_to_string(&csv).unwrap();
    edit(&csv, |icf| {
        icf["connectorRef"]["connectorName"] =
            json!("org.forgerock.openicf.connectors.scriptedsql.ScriptedSQLConnector");
    });
    let log = start_failure(project.path()).await;
    assert!(
        log.contains("provisioner.openicf-csv.json")
            && log.contains("connectorRef.connectorName")
            && log.contains("ScriptedSQLConnector"),
        "{log}"
    );

    std::fs::write(&csv, &original).unwrap();
    edit(&csv, |icf| {
        icf["configurationProperties"]["csvFile"] = json!("&{hr.file.nowhere}");
    });
    let log = start_failure(&project.path().join("conf")).await;
    assert!(
        log.contains("provisioner.openicf-csv.json")
            && log.contains("configurationProperties.csvFile")
            && log.contains("&{hr.file.nowhere}"),
        "{log}"
    );
}
