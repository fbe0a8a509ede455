//! The cookbook's sync scenario, part 2, end to end with a real slapd: managed
//! users reach the directory through implicit sync (create, modify, rename,
//! delete, groups), an outage or a crash delays changes without losing one,
//! a reconciliation repairs hand-made drift, and the directory can be a
//! reconciliation source too.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use idm_proto::json::{from_proto_value, to_proto_struct};
use idm_proto::v1::{
    CreateObjectRequest, CreateScheduleRequest, DeleteObjectRequest, GetSyncQueueRequest,
    ListExecutionsRequest, Mapping, PatchObjectRequest, PatchOperation, PlanReconRequest,
    PlannedChange, PutMappingRequest, QueryObjectsRequest, ReconRun, Schedule, SyncQueueSummary,
};
use idm_tests::directory::{self, Slapd};
use idm_tests::{Clients, Idmd, IdmdOptions, TempDir, attrs, idm_conf, json_of};
use serde_json::{Value, json};

use crate::{create_user, recon};

const USERS: &str = "managedUser_ldapAccount";
/// Long enough for a retry after backoff on a loaded CI machine.
const PATIENCE: Duration = Duration::from_secs(60);

pub fn slapd() -> Slapd {
    Slapd::start().unwrap_or_else(|e| panic!("a real slapd is needed for these tests: {e}"))
}

pub fn ldap_env(slapd: &Slapd) -> Vec<(String, String)> {
    vec![
        ("IDM_LDAP_URL".into(), slapd.url()),
        ("IDM_LDAP_BASE_DN".into(), slapd.base_dn().into()),
        ("IDM_LDAP_BIND_DN".into(), slapd.admin_dn().into()),
        (
            "IDM_LDAP_BIND_PASSWORD".into(),
            slapd.admin_password().into(),
        ),
    ]
}

async fn idmd(slapd: &Slapd, conf: &TempDir) -> Idmd {
    Idmd::start_with(IdmdOptions {
        conf: Some(conf.path().to_path_buf()),
        env: ldap_env(slapd),
        ..Default::default()
    })
    .await
}

fn dn(slapd: &Slapd, uid: &str) -> String {
    format!("uid={uid},{}", slapd.base_dn())
}

/// Polls `check` until it returns `Some`, or fails naming `what`.
pub async fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn queue(clients: &mut Clients) -> Vec<SyncQueueSummary> {
    clients
        .sync
        .get_sync_queue(GetSyncQueueRequest {})
        .await
        .unwrap()
        .into_inner()
        .mappings
}

/// Waits until no entry of any mapping is pending or failed.
pub async fn drained(clients: &mut Clients) {
    drained_within(clients, PATIENCE).await;
}

/// [`drained`], for a queue of thousands on a debug build.
pub async fn drained_within(clients: &mut Clients, patience: Duration) {
    let deadline = Instant::now() + patience;
    loop {
        let left = queue(clients).await;
        if left.iter().all(|s| s.pending == 0 && s.failed == 0) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the outbox did not drain: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub fn op(operation: &str, field: &str, value: Value) -> PatchOperation {
    PatchOperation {
        operation: operation.into(),
        field: field.into(),
        value: Some(idm_proto::json::to_proto_value(&value)),
        ..Default::default()
    }
}

pub async fn patch(clients: &mut Clients, name: &str, operations: Vec<PatchOperation>) {
    clients
        .objects
        .patch_object(PatchObjectRequest {
            name: name.into(),
            operations,
            expected_revision: None,
        })
        .await
        .unwrap_or_else(|e| panic!("patch {name}: {e}"));
}

async fn delete(clients: &mut Clients, name: &str) {
    clients
        .objects
        .delete_object(DeleteObjectRequest {
            name: name.into(),
            expected_revision: None,
        })
        .await
        .unwrap_or_else(|e| panic!("delete {name}: {e}"));
}

/// Whether any delivery found its target already made (a create repeated).
fn applied_twice(idmd: &Idmd) -> bool {
    let log = idmd.log();
    log.contains("the target existed already") || log.contains("already exists")
}

fn count(run: &ReconRun, situation: &str) -> i64 {
    run.situation_counts.get(situation).copied().unwrap_or(0)
}

#[tokio::test]
async fn cookbook_users_reach_the_directory_and_follow_every_change() {
    let slapd = slapd();
    let conf = idm_conf("sync");
    let idmd = idmd(&slapd, &conf).await;
    let mut c = idmd.clients().await;

    let run = recon(&mut c, "csvEmployee_managedUser").await;
    assert_eq!(count(&run, "ABSENT"), 3, "{run:?}");
    let snow = eventually("snow123 in the directory", || {
        directory::account(&slapd, "snow123")
    })
    .await;
    eventually("all three accounts", || {
        (directory::search(&slapd, "(objectClass=inetOrgPerson)").len() == 3).then_some(())
    })
    .await;
    assert_eq!(snow.dn, dn(&slapd, "snow123"));
    assert_eq!(snow.get("cn"), Some("snow123"));
    assert_eq!(snow.get("givenName"), Some("Jon"));
    assert_eq!(snow.get("sn"), Some("Snow"));
    assert_eq!(snow.get("mail"), Some("jon.snow@example.com"));
    assert_eq!(snow.get("telephoneNumber"), Some("5551234"));
    let mut classes = snow.values("objectClass");
    classes.sort();
    assert_eq!(
        classes,
        ["inetOrgPerson", "organizationalPerson", "person", "top"]
    );
    let stored = snow.get("userPassword").unwrap_or_default();
    assert!(stored.starts_with("{SSHA}"), "hashed by idm: {stored}");
    assert!(directory::can_bind(&slapd, &snow.dn, "FooBar123"));
    assert!(!directory::can_bind(&slapd, &snow.dn, "wrong"));
    drained(&mut c).await;

    // A change of one attribute is a modify of that attribute.
    let csn_before = snow.get("entryCSN").unwrap_or_default().to_string();
    patch(
        &mut c,
        "managed/user/123",
        vec![op("replace", "/telephoneNumber", json!("5550000"))],
    )
    .await;
    let changed = eventually("the new phone number", || {
        directory::account(&slapd, "snow123")
            .filter(|e| e.get("telephoneNumber") == Some("5550000"))
    })
    .await;
    assert_eq!(changed.get("mail"), Some("jon.snow@example.com"));
    assert_ne!(changed.get("entryCSN").unwrap_or_default(), csn_before);
    // The unchanged password was not rewritten: the same hash, still valid.
    assert_eq!(changed.get("userPassword"), snow.get("userPassword"));

    // A new password reaches the directory and replaces the old one.
    patch(
        &mut c,
        "managed/user/456",
        vec![op("replace", "/password", json!("Winter1s-coming"))],
    )
    .await;
    eventually("doe456's new password", || {
        directory::can_bind(&slapd, &dn(&slapd, "doe456"), "Winter1s-coming").then_some(())
    })
    .await;
    assert!(!directory::can_bind(
        &slapd,
        &dn(&slapd, "doe456"),
        "FooBar123"
    ));

    // A new userName renames the entry (modrdn); the account keeps its password.
    patch(
        &mut c,
        "managed/user/123",
        vec![op("replace", "/userName", json!("stark123"))],
    )
    .await;
    // The rename and the modify of cn are two operations: wait for both.
    let renamed = eventually("uid=stark123 with cn=stark123", || {
        directory::account(&slapd, "stark123").filter(|e| e.get("cn") == Some("stark123"))
    })
    .await;
    assert_eq!(renamed.dn, dn(&slapd, "stark123"));
    assert!(directory::account(&slapd, "snow123").is_none());
    assert!(directory::can_bind(&slapd, &renamed.dn, "FooBar123"));

    // A delete is a delete.
    delete(&mut c, "managed/user/789").await;
    eventually("doe789 gone", || {
        directory::account(&slapd, "doe789").is_none().then_some(())
    })
    .await;
    drained(&mut c).await;
    assert_eq!(
        directory::search(&slapd, "(objectClass=inetOrgPerson)").len(),
        2
    );
    // Nothing was applied twice: no delivery ever met an entry it had already made.
    assert!(!applied_twice(&idmd), "{}", idmd.log());
}

#[tokio::test]
async fn groups_follow_membership_renames_and_deletes() {
    let slapd = slapd();
    let conf = idm_conf("sync");
    let idmd = idmd(&slapd, &conf).await;
    let mut c = idmd.clients().await;
    recon(&mut c, "csvEmployee_managedUser").await;
    drained(&mut c).await;

    c.objects
        .create_object(CreateObjectRequest {
            parent: "managed/group".into(),
            object_id: "admins".into(),
            attributes: attrs(json!({
                "name": "admins",
                "description": "People who can break things",
                "members": ["managed/user/456", "managed/user/789"],
            })),
        })
        .await
        .unwrap();
    let group_dn = format!("cn=admins,{}", slapd.base_dn());
    let members = |slapd: &Slapd| -> Vec<String> {
        let mut found = directory::search(slapd, "(&(objectClass=groupOfNames)(cn=admins))");
        let Some(group) = found.pop() else {
            return vec!["(no group)".into()];
        };
        assert_eq!(group.dn, group_dn);
        let mut members = group.values("member");
        members.sort();
        members
    };
    let want = |uids: &[&str]| -> Vec<String> {
        let mut dns: Vec<String> = uids.iter().map(|u| dn(&slapd, u)).collect();
        dns.sort();
        dns
    };
    let both = want(&["doe456", "doe789"]);
    eventually("the group with two members", || {
        (members(&slapd) == both).then_some(())
    })
    .await;

    // A member added in idm is a member in the directory.
    patch(
        &mut c,
        "managed/group/admins",
        vec![op("add", "/members/-", json!("managed/user/123"))],
    )
    .await;
    let three = want(&["doe456", "doe789", "snow123"]);
    eventually("a third member", || {
        (members(&slapd) == three).then_some(())
    })
    .await;

    // A renamed member is renamed in the group too.
    patch(
        &mut c,
        "managed/user/456",
        vec![op("replace", "/userName", json!("roe456"))],
    )
    .await;
    let renamed = want(&["doe789", "roe456", "snow123"]);
    eventually("the renamed member's new DN", || {
        (members(&slapd) == renamed).then_some(())
    })
    .await;

    // A deleted user leaves the group.
    delete(&mut c, "managed/user/789").await;
    let two = want(&["roe456", "snow123"]);
    eventually("the deleted member gone", || {
        (members(&slapd) == two).then_some(())
    })
    .await;

    // An emptied group stays valid in the directory (groupOfNames needs a member).
    patch(
        &mut c,
        "managed/group/admins",
        vec![op("replace", "/members", json!([]))],
    )
    .await;
    // groupOfNames must have a member: the directory keeps the empty DN as placeholder.
    eventually("an empty group", || {
        let left = members(&slapd);
        assert!(left.len() <= 3, "{left:?}");
        (left == [""]).then_some(())
    })
    .await;

    delete(&mut c, "managed/group/admins").await;
    eventually("the group gone", || {
        (members(&slapd) == ["(no group)"]).then_some(())
    })
    .await;
    drained(&mut c).await;
}

#[tokio::test]
async fn an_outage_delays_changes_and_loses_none() {
    let mut slapd = slapd();
    let conf = idm_conf("sync");
    let idmd = idmd(&slapd, &conf).await;
    let mut c = idmd.clients().await;

    let tested = idmd.idmctl(&["connectors", "test", "ldap"]);
    assert!(tested.status.success(), "{tested:?}");
    assert!(
        String::from_utf8_lossy(&tested.stdout).starts_with("ok: ldap answered for account, group")
    );

    slapd.stop();
    let tested = idmd.idmctl(&["connectors", "test", "ldap"]);
    assert_eq!(tested.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&tested.stderr).contains("unavailable"),
        "{tested:?}"
    );
    for n in 0..100 {
        create_user(
            &mut c,
            &format!("u{n}"),
            json!({ "userName": format!("user{n}"), "sn": format!("Number {n}"), "password": "Outage-2026" }),
        )
        .await;
    }
    // While the directory is down the changes wait, counted and explained.
    let deadline = Instant::now() + PATIENCE;
    let summary = loop {
        let summary = queue(&mut c).await;
        let users = summary.into_iter().find(|s| s.mapping == USERS);
        if let Some(users) = users.filter(|s| !s.last_error.is_empty()) {
            break users;
        }
        assert!(Instant::now() < deadline, "no delivery attempt recorded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(summary.pending, 100, "{summary:?}");
    assert_eq!(summary.failed, 0, "an outage never gives up: {summary:?}");
    assert!(summary.oldest_pending_time.is_some());
    assert!(
        summary.last_error.contains("unavailable"),
        "{}",
        summary.last_error
    );
    let listed = idmd.idmctl(&["sync", "queue"]);
    assert!(listed.status.success());
    let text = String::from_utf8_lossy(&listed.stdout);
    assert!(text.contains(USERS) && text.contains("100"), "{text}");

    slapd.restart().unwrap();
    eventually("all 100 accounts", || {
        (directory::search(&slapd, "(objectClass=inetOrgPerson)").len() == 100).then_some(())
    })
    .await;
    drained(&mut c).await;
    assert!(directory::can_bind(
        &slapd,
        &dn(&slapd, "user42"),
        "Outage-2026"
    ));
    assert!(!applied_twice(&idmd), "none applied twice");
}

#[tokio::test]
async fn pending_changes_survive_an_idmd_crash() {
    let mut slapd = slapd();
    let conf = idm_conf("sync");
    let store_dir = TempDir::new("store");
    let store = format!("surrealkv://{}", store_dir.path().join("db").display());
    let options = IdmdOptions {
        conf: Some(conf.path().to_path_buf()),
        store: Some(store),
        env: ldap_env(&slapd),
        ..Default::default()
    };
    let mut first = Idmd::start_with(options.clone()).await;
    let mut c = first.clients().await;
    slapd.stop();
    for uid in ["crash1", "crash2", "crash3"] {
        create_user(
            &mut c,
            uid,
            json!({ "userName": uid, "sn": "Crash", "password": "Survived-1" }),
        )
        .await;
    }
    let pending = queue(&mut c).await;
    assert_eq!(
        pending
            .iter()
            .find(|s| s.mapping == USERS)
            .map(|s| s.pending),
        Some(3)
    );
    let (token, key) = (first.admin_token.clone(), first.encryption_key.clone());
    first.kill();
    drop(c);
    drop(first);

    slapd.restart().unwrap();
    let second = Idmd::spawn(options, TempDir::new("idmd"), token, key)
        .await
        .unwrap_or_else(|log| panic!("idmd did not start again:\n{log}"));
    let mut c = second.clients().await;
    for uid in ["crash1", "crash2", "crash3"] {
        let entry = eventually(uid, || directory::account(&slapd, uid)).await;
        assert!(directory::can_bind(&slapd, &entry.dn, "Survived-1"));
    }
    drained(&mut c).await;
}

#[tokio::test]
async fn recon_repairs_drift_and_reports_unassigned() {
    let slapd = slapd();
    let conf = idm_conf("sync");
    let idmd = idmd(&slapd, &conf).await;
    let mut c = idmd.clients().await;
    recon(&mut c, "csvEmployee_managedUser").await;
    eventually("three accounts", || {
        (directory::search(&slapd, "(objectClass=inetOrgPerson)").len() == 3).then_some(())
    })
    .await;
    drained(&mut c).await;

    // Hands in the directory: one entry deleted, one edited, one added.
    directory::delete(&slapd, &dn(&slapd, "snow123"));
    directory::modify(
        &slapd,
        &format!(
            "dn: {}\nchangetype: modify\nreplace: mail\nmail: hacked@example.com\n-\ndelete: telephoneNumber\n",
            dn(&slapd, "doe456")
        ),
    );
    directory::modify(
        &slapd,
        &format!(
            "dn: {}\nchangetype: add\nobjectClass: inetOrgPerson\nuid: stray\ncn: stray\nsn: Stray\n",
            dn(&slapd, "stray")
        ),
    );

    // A plan first: what the run will do, with nothing written.
    let plan = c
        .recon
        .plan_recon(PlanReconRequest {
            mapping: USERS.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(plan.situation_counts.get("MISSING"), Some(&1), "{plan:?}");
    assert_eq!(plan.situation_counts.get("CONFIRMED"), Some(&2), "{plan:?}");
    assert_eq!(
        plan.situation_counts.get("UNASSIGNED"),
        Some(&1),
        "{plan:?}"
    );
    let planned = |source: &str| {
        plan.changes
            .iter()
            .find(|change| {
                change.source_id == format!("managed/user/{source}") || change.source_id == source
            })
            .unwrap_or_else(|| panic!("no change for {source}: {:?}", plan.changes))
    };
    let values = |change: &PlannedChange| -> BTreeMap<String, (Value, Value)> {
        change
            .properties
            .iter()
            .map(|p| {
                let value = |v: &Option<prost_types::Value>| {
                    v.as_ref().map_or(Value::Null, from_proto_value)
                };
                (p.property.clone(), (value(&p.before), value(&p.after)))
            })
            .collect()
    };
    let snow = planned("123");
    assert_eq!(snow.action, "CREATE", "{snow:?}");
    let created = values(snow);
    assert_eq!(created["mail"].1, "jon.snow@example.com");
    for (attribute, (_, after)) in &created {
        if attribute.to_ascii_lowercase().contains("password") {
            assert_eq!(after, "********", "a plan never shows {attribute}");
        }
    }
    let doe = planned("456");
    assert_eq!(doe.action, "UPDATE", "{doe:?}");
    let updated = values(doe);
    assert_eq!(
        updated["mail"],
        (json!("hacked@example.com"), json!("john.doe@example.com"))
    );
    assert_eq!(updated["telephoneNumber"], (Value::Null, json!("5554567")));
    assert_eq!(
        plan.changes.len(),
        2,
        "the entry in line changes nothing: {:?}",
        plan.changes
    );
    assert!(
        directory::account(&slapd, "snow123").is_none(),
        "a plan writes nothing"
    );
    assert_eq!(
        directory::account(&slapd, "doe456").unwrap().get("mail"),
        Some("hacked@example.com")
    );

    let run = recon(&mut c, USERS).await;
    assert_eq!(run.state, 3, "SUCCESS: {run:?}");
    assert_eq!(count(&run, "MISSING"), 1, "{run:?}");
    assert_eq!(count(&run, "CONFIRMED"), 2, "{run:?}");
    assert_eq!(count(&run, "UNASSIGNED"), 1, "{run:?}");
    assert_eq!(run.action_counts.get("CREATE"), Some(&1));
    assert_eq!(run.action_counts.get("UPDATE"), Some(&2));

    let back = directory::account(&slapd, "snow123").expect("put back");
    assert_eq!(back.get("mail"), Some("jon.snow@example.com"));
    assert!(directory::can_bind(&slapd, &back.dn, "FooBar123"));
    let repaired = directory::account(&slapd, "doe456").unwrap();
    assert_eq!(repaired.get("mail"), Some("john.doe@example.com"));
    assert_eq!(repaired.get("telephoneNumber"), Some("5554567"));
    assert!(
        directory::account(&slapd, "stray").is_some(),
        "REPORT leaves it"
    );

    // Nothing drifted since: a second run changes nothing.
    let csn = repaired.get("entryCSN").unwrap_or_default().to_string();
    let again = recon(&mut c, USERS).await;
    assert_eq!(count(&again, "CONFIRMED"), 3, "{again:?}");
    assert_eq!(
        directory::account(&slapd, "doe456")
            .unwrap()
            .get("entryCSN")
            .unwrap_or_default(),
        csn,
        "an entry in line is not rewritten"
    );
}

/// `ldapAccount_managedUser`: directory accounts into managed users,
/// correlated by userName.
async fn put_directory_source_mapping(c: &mut Clients) {
    let mapping = json!({
        "source": "system/ldap/account",
        "target": "managed/user",
        "properties": [
            { "source": "uid", "target": "userName" },
            { "source": "givenName", "target": "givenName" },
            { "source": "sn", "target": "sn" },
            { "source": "mail", "target": "mail" }
        ],
        "correlationQuery": { "type": "text/javascript", "source": "({ _queryFilter: 'userName eq \"' + source.uid + '\"' })" }
    });
    c.config
        .put_mapping(PutMappingRequest {
            mapping: Some(Mapping {
                name: "mappings/ldapAccount_managedUser".into(),
                definition: Some(to_proto_struct(mapping.as_object().unwrap())),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn the_directory_can_be_a_recon_source() {
    let slapd = slapd();
    // Twelve people already in the directory.
    for n in 0..12 {
        directory::modify(
            &slapd,
            &format!(
                "dn: uid=p{n},{}\nchangetype: add\nobjectClass: inetOrgPerson\nuid: p{n}\ncn: Person {n}\nsn: Person\ngivenName: P{n}\nmail: p{n}@example.org\n",
                slapd.base_dn()
            ),
        );
    }
    let conf = idm_conf("sync");
    let idmd = idmd(&slapd, &conf).await;
    let mut c = idmd.clients().await;
    put_directory_source_mapping(&mut c).await;
    // Read in pages (the connector's page size is 500; the directory's
    // default size limit is 500 as well, so this goes through paging code).
    let run = recon(&mut c, "ldapAccount_managedUser").await;
    assert_eq!(run.state, 3, "{run:?}");
    assert_eq!(count(&run, "ABSENT"), 12, "{run:?}");
    let users = c
        .objects
        .query_objects(QueryObjectsRequest {
            parent: "managed/user".into(),
            filter: "userName sw \"p\"".into(),
            page_size: 50,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(users.objects.len(), 12);
    let p3 = users
        .objects
        .iter()
        .map(json_of)
        .find(|u| u["userName"] == "p3")
        .unwrap();
    assert_eq!(p3["mail"], "p3@example.org");
    assert_eq!(p3["givenName"], "P3");
    // Their implicit sync back finds the very same entries (FOUND → linked), adds nothing.
    drained(&mut c).await;
    assert!(
        applied_twice(&idmd),
        "the existing entries were found, not re-added"
    );
    assert_eq!(
        directory::search(&slapd, "(objectClass=inetOrgPerson)").len(),
        12
    );
}

#[tokio::test]
async fn refused_changes_fail_visibly_and_operators_retry_or_discard_them() {
    let slapd = slapd();
    let conf = idm_conf("sync");
    let idmd = idmd(&slapd, &conf).await;
    let mut c = idmd.clients().await;

    // inetOrgPerson needs sn: the directory refuses, whatever the retries.
    create_user(&mut c, "nosn", json!({ "userName": "nosn" })).await;
    let deadline = Instant::now() + PATIENCE;
    let summary = loop {
        let summary = queue(&mut c).await;
        if let Some(users) = summary
            .into_iter()
            .find(|s| s.mapping == USERS && s.failed == 1)
        {
            break users;
        }
        assert!(Instant::now() < deadline, "the refused change never failed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        summary.last_error.to_lowercase().contains("objectclass"),
        "{summary:?}"
    );
    let entries = idmd.idmctl(&["sync", "entries", "--failed", "--output", "json"]);
    assert!(entries.status.success());
    let listed: Value = serde_json::from_slice(&entries.stdout).unwrap();
    assert_eq!(listed["result"][0]["object"], "managed/user/nosn");
    assert_eq!(listed["result"][0]["state"], "failed");
    let bad = idmd.idmctl(&["sync", "entries", "--filter", "colour eq \"red\""]);
    assert_eq!(bad.status.code(), Some(1));
    let said = String::from_utf8_lossy(&bad.stderr);
    assert!(
        said.contains("INVALID_ARGUMENT") && said.contains("colour"),
        "{said}"
    );

    // Retried as it is, it fails again; fixed in idm, the next change carries it through.
    let retried = idmd.idmctl(&["sync", "retry", USERS]);
    assert!(retried.status.success());
    assert_eq!(
        String::from_utf8_lossy(&retried.stdout).trim(),
        "1 entries retried"
    );
    patch(
        &mut c,
        "managed/user/nosn",
        vec![op("add", "/sn", json!("Now"))],
    )
    .await;
    eventually("nosn in the directory", || {
        directory::account(&slapd, "nosn")
    })
    .await;
    drained(&mut c).await;

    // Discarded, a change never reaches the target.
    create_user(&mut c, "nosn2", json!({ "userName": "nosn2" })).await;
    let deadline = Instant::now() + PATIENCE;
    while !queue(&mut c)
        .await
        .iter()
        .any(|s| s.mapping == USERS && s.failed == 1)
    {
        assert!(Instant::now() < deadline, "nosn2 never failed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let discarded = idmd.idmctl(&["sync", "discard", USERS]);
    assert!(discarded.status.success());
    assert_eq!(
        String::from_utf8_lossy(&discarded.stdout).trim(),
        "1 entries discarded"
    );
    drained(&mut c).await;
    assert!(directory::account(&slapd, "nosn2").is_none());
}

#[tokio::test]
async fn live_sync_picks_up_directory_entries_changed_since_the_last_run() {
    let slapd = slapd();
    for n in 0..3 {
        directory::modify(
            &slapd,
            &format!(
                "dn: uid=l{n},{}\nchangetype: add\nobjectClass: inetOrgPerson\nuid: l{n}\ncn: L {n}\nsn: Live\nmail: l{n}@example.org\n",
                slapd.base_dn()
            ),
        );
    }
    let conf = idm_conf("sync");
    let idmd = idmd(&slapd, &conf).await;
    let mut c = idmd.clients().await;
    put_directory_source_mapping(&mut c).await;
    c.schedules
        .create_schedule(CreateScheduleRequest {
            schedule_id: "live".into(),
            schedule: Some(Schedule {
                enabled: true,
                r#type: "cron".into(),
                schedule: "* * * * * ?".into(),
                invoke_service: "liveSync".into(),
                invoke_context: idm_tests::attrs(json!({"mapping": "ldapAccount_managedUser"})),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    let mail_of = |c: &mut Clients, uid: &'static str| {
        let mut objects = c.objects.clone();
        async move {
            let page = objects
                .query_objects(QueryObjectsRequest {
                    parent: "managed/user".into(),
                    filter: format!("userName eq \"{uid}\""),
                    page_size: 1,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            page.objects.first().map(|o| json_of(o)["mail"].clone())
        }
    };
    let deadline = Instant::now() + PATIENCE;
    while mail_of(&mut c, "l2").await.is_none() {
        assert!(Instant::now() < deadline, "the first liveSync never ran");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The users it created flow back to the directory (the sample's
    // managedUser_ldapAccount syncs implicitly, mail included); an update
    // still queued would put the old mail back over the change below.
    drained(&mut c).await;
    // Changed by hand in the directory: the next run reconciles just that entry.
    directory::modify(
        &slapd,
        &format!(
            "dn: uid=l1,{}\nchangetype: modify\nreplace: mail\nmail: moved@example.org\n",
            slapd.base_dn()
        ),
    );
    let deadline = Instant::now() + PATIENCE;
    while mail_of(&mut c, "l1").await != Some(json!("moved@example.org")) {
        assert!(
            Instant::now() < deadline,
            "liveSync did not pick up the change"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Once the directory settles, ticks find nothing to do.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let history = c
        .schedules
        .list_executions(ListExecutionsRequest {
            schedule: "schedules/live".into(),
            page_size: 100,
            page_token: String::new(),
            running: false,
        })
        .await
        .unwrap()
        .into_inner()
        .executions;
    assert!(
        history.iter().any(|e| e.message.contains("no change")),
        "quiet ticks reconcile nothing: {history:?}"
    );
    assert!(
        history.iter().filter(|e| !e.recon_run.is_empty()).count() >= 2,
        "{history:?}"
    );
}
