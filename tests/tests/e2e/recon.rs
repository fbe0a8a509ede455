//! Reconciliation end to end: the cookbook's HR file into managed users,
//! re-runs, edits, removals, policies, correlation, bad rows, scripts that
//! misbehave, cancel, plan, and the run records.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use idm_proto::json::{from_proto_value, to_proto_struct};
use idm_proto::v1::recon_run::State;
use idm_proto::v1::{
    CancelReconRequest, CountObjectsRequest, GetReconRequest, ListReconsRequest, Mapping,
    PlanReconRequest, PutMappingRequest, QueryAuditRequest, QueryObjectsRequest, ReconByIdRequest,
    StartReconRequest, VerifyPasswordRequest,
};
use idm_tests::{Clients, Idmd, IdmdOptions, TempDir, idm_conf};
use serde_json::{Value, json};
use tonic::Code;

use crate::{create_user, expect_code, recon};

const MAPPING: &str = "csvEmployee_managedUser";

async fn start(conf: &TempDir) -> Idmd {
    Idmd::start_with(IdmdOptions {
        conf: Some(conf.path().to_path_buf()),
        ..Default::default()
    })
    .await
}

fn write_hr(conf: &TempDir, text: &str) {
    std::fs::write(conf.path().join("data/hr.csv"), text).unwrap();
}

fn counts(map: &HashMap<String, i64>) -> Vec<(String, i64)> {
    let mut list: Vec<(String, i64)> = map.iter().map(|(k, v)| (k.clone(), *v)).collect();
    list.sort();
    list
}

fn pairs(list: &[(&str, i64)]) -> Vec<(String, i64)> {
    let mut list: Vec<(String, i64)> = list.iter().map(|(k, v)| ((*k).into(), *v)).collect();
    list.sort();
    list
}

async fn user(clients: &mut Clients, id: &str) -> Option<Value> {
    crate::managed_object(clients, "user", id).await
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

async fn put_mapping(clients: &mut Clients, conf: &TempDir, change: impl FnOnce(&mut Value)) {
    let text = std::fs::read_to_string(conf.path().join("sync.json")).unwrap();
    let mut body: Value = serde_json::from_str(&text).unwrap();
    let mapping = &mut body["mappings"][0];
    change(mapping);
    clients
        .config
        .put_mapping(PutMappingRequest {
            mapping: Some(Mapping {
                name: format!("mappings/{}", mapping["name"].as_str().unwrap()),
                definition: Some(to_proto_struct(mapping.as_object().unwrap())),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn the_cookbook_file_becomes_users_and_reruns_change_only_what_changed() {
    let conf = idm_conf("sync");
    let idmd = start(&conf).await;
    let mut clients = idmd.clients().await;

    let first = recon(&mut clients, MAPPING).await;
    assert_eq!(first.state(), State::Success, "{first:?}");
    assert_eq!(counts(&first.situation_counts), pairs(&[("ABSENT", 3)]));
    assert_eq!(counts(&first.action_counts), pairs(&[("CREATE", 3)]));
    assert_eq!(first.failure_count, 0, "{:?}", first.failures);
    let source = first.source.unwrap();
    assert_eq!((source.processed, source.total), (3, 3));

    let snow = user(&mut clients, "123").await.unwrap();
    assert_eq!(snow["userName"], "snow123");
    assert_eq!(snow["mail"], "jon.snow@example.com");
    assert_eq!(snow["givenName"], "Jon");
    assert_eq!(snow["telephoneNumber"], "5551234");
    assert!(
        snow.get("password").is_none(),
        "passwords are never returned"
    );
    for (id, user_name, mail) in [
        ("456", "doe456", "john.doe@example.com"),
        ("789", "doe789", "jane.doe@example.com"),
    ] {
        let found = user(&mut clients, id).await.unwrap();
        assert_eq!(
            (found["userName"].as_str(), found["mail"].as_str()),
            (Some(user_name), Some(mail))
        );
    }
    let verified = clients
        .objects
        .verify_password(VerifyPasswordRequest {
            name: "managed/user/123".into(),
            property: "password".into(),
            password: "FooBar123".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(verified.valid, "the default password reached the user");

    let second = recon(&mut clients, MAPPING).await;
    assert_eq!(counts(&second.situation_counts), pairs(&[("CONFIRMED", 3)]));
    for id in ["123", "456", "789"] {
        assert_eq!(
            user(&mut clients, id).await.unwrap()["_rev"],
            "1",
            "{id} untouched by a re-run"
        );
    }

    write_hr(
        &conf,
        "uid,firstName,lastName,telephoneNumber\n123,Jon,Snow,5551234\n456,John,Doe,5550000\n789,Jane,Doe,5558901\n",
    );
    let edited = recon(&mut clients, MAPPING).await;
    assert_eq!(edited.state(), State::Success, "{edited:?}");
    let doe = user(&mut clients, "456").await.unwrap();
    assert_eq!(
        (doe["telephoneNumber"].as_str(), doe["_rev"].as_str()),
        (Some("5550000"), Some("2"))
    );
    assert_eq!(user(&mut clients, "123").await.unwrap()["_rev"], "1");
    assert_eq!(user(&mut clients, "789").await.unwrap()["_rev"], "1");
    let audit = clients
        .audit
        .query_audit(QueryAuditRequest {
            filter: r#"object eq "managed/user/456" and operation eq "patch""#.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(audit.entries.len(), 1);
    assert_eq!(audit.entries[0].changed_properties, ["telephoneNumber"]);
    assert_eq!(audit.entries[0].actor, format!("recon/{}", edited.id));

    // A removed row: SOURCE_MISSING, an exception by default; the user stays.
    write_hr(
        &conf,
        "uid,firstName,lastName,telephoneNumber\n123,Jon,Snow,5551234\n456,John,Doe,5550000\n",
    );
    let removed = recon(&mut clients, MAPPING).await;
    assert_eq!(
        counts(&removed.situation_counts),
        pairs(&[("CONFIRMED", 2), ("SOURCE_MISSING", 1)])
    );
    assert_eq!(removed.action_counts.get("EXCEPTION"), Some(&1));
    let exception = &removed.failures[0];
    assert_eq!(
        (
            exception.source_id.as_str(),
            exception.target_id.as_str(),
            exception.situation.as_str(),
            exception.action.as_str()
        ),
        ("789", "789", "SOURCE_MISSING", "EXCEPTION")
    );
    assert!(user(&mut clients, "789").await.is_some());

    // With a DELETE policy the user goes, and so does its link.
    put_mapping(&mut clients, &conf, |m| {
        m["policies"] = json!([{"situation": "SOURCE_MISSING", "action": "DELETE"}]);
    })
    .await;
    let deleting = recon(&mut clients, MAPPING).await;
    assert_eq!(
        deleting.action_counts.get("DELETE"),
        Some(&1),
        "{deleting:?}"
    );
    assert!(user(&mut clients, "789").await.is_none());
    let after = recon(&mut clients, MAPPING).await;
    assert_eq!(counts(&after.situation_counts), pairs(&[("CONFIRMED", 2)]));
    assert_eq!(after.links.unwrap().existing, 2);
}

#[tokio::test]
async fn correlation_finds_ambiguous_and_already_linked_targets() {
    let conf = idm_conf("sync");
    let idmd = start(&conf).await;
    let mut clients = idmd.clients().await;
    // Correlate on the surname: not unique, so a real query.
    put_mapping(&mut clients, &conf, |m| {
        m["correlationQuery"] = json!({"type": "text/javascript",
            "source": "({ _queryFilter: 'sn eq \"' + source.lastName + '\"' })"});
        m["properties"]
            .as_array_mut()
            .unwrap()
            .retain(|p| p["target"] != "_id");
    })
    .await;
    create_user(
        &mut clients,
        "jon",
        json!({"userName": "jsnow", "sn": "Snow"}),
    )
    .await;
    create_user(&mut clients, "d1", json!({"userName": "d1", "sn": "Doe"})).await;
    create_user(&mut clients, "d2", json!({"userName": "d2", "sn": "Doe"})).await;
    create_user(
        &mut clients,
        "admin",
        json!({"userName": "admin", "sn": "Admin"}),
    )
    .await;

    let run = recon(&mut clients, MAPPING).await;
    assert_eq!(run.state(), State::Success, "{run:?}");
    assert_eq!(
        counts(&run.situation_counts),
        pairs(&[("FOUND", 1), ("AMBIGUOUS", 2), ("UNASSIGNED", 3)])
    );
    let ambiguous: Vec<_> = run
        .failures
        .iter()
        .filter(|f| f.situation == "AMBIGUOUS")
        .collect();
    assert_eq!(ambiguous.len(), 2);
    assert!(
        ambiguous[0].reason.contains("d1") && ambiguous[0].reason.contains("d2"),
        "{:?}",
        ambiguous[0]
    );
    assert_eq!(ambiguous[0].action, "EXCEPTION");
    assert!(
        ambiguous
            .iter()
            .any(|f| f.source_id == "456" && f.line == 3)
    );
    // FOUND → UPDATE: the existing user took the mapped values and is linked.
    let jon = user(&mut clients, "jon").await.unwrap();
    assert_eq!(
        (jon["userName"].as_str(), jon["telephoneNumber"].as_str()),
        (Some("snow123"), Some("5551234"))
    );
    let unassigned: Vec<&str> = run
        .failures
        .iter()
        .filter(|f| f.situation == "UNASSIGNED")
        .map(|f| f.target_id.as_str())
        .collect();
    assert_eq!(unassigned.len(), 3, "{unassigned:?}");
    assert!(unassigned.contains(&"admin"));

    let again = recon(&mut clients, MAPPING).await;
    assert_eq!(
        again.situation_counts.get("CONFIRMED"),
        Some(&1),
        "jon is linked now"
    );
    assert_eq!(user(&mut clients, "jon").await.unwrap()["_rev"], "2");
}

#[tokio::test]
async fn bad_rows_are_reported_by_line_and_the_rest_import() {
    let conf = idm_conf("sync");
    write_hr(
        &conf,
        "\u{feff}uid,firstName,lastName,telephoneNumber\r\n\
         123,Jon,Snow,5551234\r\n\
         124,Too,Few\r\n\
         125,\"Zoë, the \"\"first\"\"\",Ŝtark,\"555\r\n1234\"\r\n\
         ,No,Uid,5550000\r\n\
         126,Ærin,Ødegård,5550001\r\n\
         123,Jon,Again,5559999\r\n",
    );
    let idmd = start(&conf).await;
    let mut clients = idmd.clients().await;
    let run = recon(&mut clients, MAPPING).await;
    assert_eq!(run.state(), State::Success, "{run:?}");
    assert_eq!(run.action_counts.get("CREATE"), Some(&3), "{run:?}");
    let lines: Vec<(i64, &str)> = run
        .failures
        .iter()
        .map(|f| (f.line, f.source_id.as_str()))
        .collect();
    assert_eq!(
        lines,
        [(3, "124"), (6, ""), (8, "123")],
        "{:?}",
        run.failures
    );
    assert!(
        run.failures[0].reason.contains("field"),
        "{:?}",
        run.failures[0]
    );
    assert!(
        run.failures[2].reason.contains("duplicate"),
        "{:?}",
        run.failures[2]
    );

    let zoe = user(&mut clients, "125").await.unwrap();
    assert_eq!(zoe["givenName"], "Zoë, the \"first\"");
    assert_eq!(zoe["telephoneNumber"], "555\r\n1234");
    assert_eq!(zoe["userName"], "ŝtark125");
    let aerin = user(&mut clients, "126").await.unwrap();
    assert_eq!(aerin["mail"], "ærin.ødegård@example.com");
    assert_eq!(
        user(&mut clients, "123").await.unwrap()["sn"],
        "Snow",
        "the first of a duplicate wins"
    );
}

#[tokio::test]
async fn a_runaway_script_fails_its_record_and_the_run_goes_on() {
    let conf = idm_conf("sync");
    let idmd = start(&conf).await;
    let mut clients = idmd.clients().await;
    put_mapping(&mut clients, &conf, |m| {
        m["properties"][4]["transform"]["source"] =
            json!("while (source.uid === '456') {} source.lastName.toLowerCase() + source.uid;");
    })
    .await;
    let started = Instant::now();
    let run = recon(&mut clients, MAPPING).await;
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(run.state(), State::Success, "{run:?}");
    assert_eq!(run.action_counts.get("CREATE"), Some(&2));
    assert_eq!(run.failure_count, 1);
    let failure = &run.failures[0];
    assert_eq!((failure.source_id.as_str(), failure.line), ("456", 3));
    assert!(
        failure.reason.contains(MAPPING)
            && failure.reason.contains("userName")
            && failure.reason.contains("stopped after running"),
        "{failure:?}"
    );
    assert!(user(&mut clients, "456").await.is_none());
    assert!(user(&mut clients, "789").await.is_some());
}

#[tokio::test]
async fn a_plan_shows_the_changes_and_makes_none() {
    let conf = idm_conf("sync");
    let idmd = start(&conf).await;
    let mut clients = idmd.clients().await;
    let plan = clients
        .recon
        .plan_recon(PlanReconRequest {
            mapping: MAPPING.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(counts(&plan.situation_counts), pairs(&[("ABSENT", 3)]));
    assert_eq!(plan.changes.len(), 3);
    let snow = plan.changes.iter().find(|c| c.source_id == "123").unwrap();
    assert_eq!(
        (snow.action.as_str(), snow.target_id.as_str()),
        ("CREATE", "123")
    );
    let after: HashMap<String, Value> = snow
        .properties
        .iter()
        .map(|p| {
            (
                p.property.clone(),
                from_proto_value(p.after.as_ref().unwrap()),
            )
        })
        .collect();
    assert_eq!(after["userName"], "snow123");
    assert_eq!(
        after["password"], "********",
        "a plan never shows a password"
    );
    assert_eq!(user_count(&mut clients).await, 0, "a plan creates nothing");

    recon(&mut clients, MAPPING).await;
    write_hr(
        &conf,
        "uid,firstName,lastName,telephoneNumber\n123,Jon,Snow,5551234\n456,John,Doe,5550000\n789,Jane,Doe,5558901\n",
    );
    let plan = clients
        .recon
        .plan_recon(PlanReconRequest {
            mapping: MAPPING.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(counts(&plan.situation_counts), pairs(&[("CONFIRMED", 3)]));
    assert_eq!(
        plan.changes.len(),
        1,
        "only the edited row changes: {:?}",
        plan.changes
    );
    let change = &plan.changes[0];
    assert_eq!(
        (change.source_id.as_str(), change.action.as_str()),
        ("456", "UPDATE")
    );
    assert_eq!(change.properties.len(), 1);
    let property = &change.properties[0];
    assert_eq!(property.property, "telephoneNumber");
    assert_eq!(
        from_proto_value(property.before.as_ref().unwrap()),
        "5554567"
    );
    assert_eq!(
        from_proto_value(property.after.as_ref().unwrap()),
        "5550000"
    );
    let doe = user(&mut clients, "456").await.unwrap();
    assert_eq!(
        (doe["telephoneNumber"].as_str(), doe["_rev"].as_str()),
        (Some("5554567"), Some("1"))
    );
}

#[tokio::test]
async fn a_plan_names_the_rows_a_run_would_fail_on() {
    let conf = idm_conf("sync");
    write_hr(
        &conf,
        "uid,firstName,lastName,telephoneNumber\n123,Jon,Snow,5551234\n124,Too,Few\n",
    );
    let idmd = start(&conf).await;
    let mut clients = idmd.clients().await;
    let plan = clients
        .recon
        .plan_recon(PlanReconRequest {
            mapping: MAPPING.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(plan.changes.len(), 1, "{plan:?}");
    assert_eq!(plan.failure_count, 1, "{plan:?}");
    let failure = &plan.failures[0];
    assert_eq!((failure.line, failure.source_id.as_str()), (3, "124"));
    assert!(failure.reason.contains("field"), "{failure:?}");
    assert_eq!(user_count(&mut clients).await, 0, "a plan creates nothing");
}

#[tokio::test]
async fn runs_are_records_watched_listed_and_errors_are_clear() {
    let conf = idm_conf("sync");
    let idmd = start(&conf).await;
    let mut clients = idmd.clients().await;

    let started = clients
        .recon
        .start_recon(StartReconRequest {
            mapping: MAPPING.into(),
            wait: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(started.name, format!("recon/{}", started.id));
    assert_eq!(started.state(), State::Active);
    let mut stream = crate::watch(&mut clients, &started.name).await.unwrap();
    let mut last = None;
    while let Some(snapshot) = stream.message().await.unwrap() {
        last = Some(snapshot);
    }
    let last = last.expect("at least one snapshot");
    assert_eq!(
        last.state(),
        State::Success,
        "the stream ends with the final record"
    );

    let stored = clients
        .recon
        .get_recon(GetReconRequest {
            name: started.name.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stored.stage, "COMPLETED_SUCCESS");
    assert_eq!(stored.action_counts.get("CREATE"), Some(&3));
    assert!(stored.end_time.is_some() && stored.duration.is_some());
    assert_eq!(stored.started_by, "bootstrap");

    let by_id = clients
        .recon
        .recon_by_id(ReconByIdRequest {
            mapping: MAPPING.into(),
            source_ids: vec!["456".into(), "999".into()],
            wait: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        counts(&by_id.situation_counts),
        pairs(&[("CONFIRMED", 1), ("ALL_GONE", 1)]),
        "an id the source lacks, with no link, is ALL_GONE"
    );

    let listed = clients
        .recon
        .list_recons(ListReconsRequest {
            filter: format!(r#"mapping eq "{MAPPING}" and state eq "SUCCESS""#),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<&str> = listed.runs.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(
        ids,
        [by_id.id.as_str(), started.id.as_str()],
        "newest first"
    );

    expect_code(
        clients
            .recon
            .list_recons(ListReconsRequest {
                filter: "mapping eq".into(),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
    );
    expect_code(
        clients
            .recon
            .start_recon(StartReconRequest {
                mapping: "nope".into(),
                wait: true,
            })
            .await,
        Code::NotFound,
    );
    expect_code(
        clients
            .recon
            .get_recon(GetReconRequest {
                name: "recon/0000".into(),
            })
            .await,
        Code::NotFound,
    );
    expect_code(
        clients
            .recon
            .cancel_recon(CancelReconRequest {
                name: started.name.clone(),
            })
            .await,
        Code::FailedPrecondition,
    );

    // A missing file fails the run with the file named, not idmd.
    std::fs::remove_file(conf.path().join("data/hr.csv")).unwrap();
    let failed = recon(&mut clients, MAPPING).await;
    assert_eq!(failed.state(), State::Failed);
    assert!(failed.error.contains("hr.csv"), "{}", failed.error);
}

#[tokio::test]
async fn cancelling_a_large_run_stops_it_promptly_and_leaves_the_store_consistent() {
    const ROWS: i64 = 6_000;
    let conf = idm_conf("sync");
    let mut text = String::from("uid,firstName,lastName,telephoneNumber\n");
    for i in 0..ROWS {
        text.push_str(&format!("{i},First{i},Last{i},555{i:07}\n"));
    }
    write_hr(&conf, &text);
    let idmd = start(&conf).await;
    let mut clients = idmd.clients().await;
    // No password: hashing would make the run slow for reasons beside the point.
    put_mapping(&mut clients, &conf, |m| {
        m["properties"]
            .as_array_mut()
            .unwrap()
            .retain(|p| p["target"] != "password");
        m["taskThreads"] = json!(2);
    })
    .await;
    let started = clients
        .recon
        .start_recon(StartReconRequest {
            mapping: MAPPING.into(),
            wait: false,
        })
        .await
        .unwrap()
        .into_inner();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let run = clients
            .recon
            .get_recon(GetReconRequest {
                name: started.name.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        if run.source.is_some_and(|s| s.processed > 0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the run never made progress: {run:?}\n{}",
            idmd.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    expect_code(
        clients
            .recon
            .start_recon(StartReconRequest {
                mapping: MAPPING.into(),
                wait: false,
            })
            .await,
        Code::FailedPrecondition,
    );
    let asked = Instant::now();
    let cancelled = clients
        .recon
        .cancel_recon(CancelReconRequest {
            name: started.name.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    // The run stops after the batch in hand, not at its end (`created <
    // ROWS` below proves that); this bound only catches a cancel that hangs,
    // and is loose because a loaded 2-core CI machine takes 10+ s per batch.
    assert!(
        asked.elapsed() < Duration::from_secs(45),
        "took {:?}",
        asked.elapsed()
    );
    assert_eq!(cancelled.state(), State::Canceled);
    assert_eq!(cancelled.stage, "COMPLETED_CANCELED");
    let created = user_count(&mut clients).await;
    assert!(created > 0 && created < ROWS, "{created} users");

    // Every user created before the cancel has its link: the next run
    // confirms exactly those and creates the rest, without a failure.
    let rest = recon(&mut clients, MAPPING).await;
    assert_eq!(rest.failure_count, 0, "{:?}", rest.failures.first());
    assert_eq!(
        rest.situation_counts.get("CONFIRMED").copied().unwrap_or(0),
        created
    );
    assert_eq!(
        rest.action_counts.get("CREATE").copied().unwrap_or(0),
        ROWS - created
    );
    let check = clients
        .objects
        .query_objects(QueryObjectsRequest {
            parent: "managed/user".into(),
            filter: r#"userName eq "last59995999" and mail eq "first5999.last5999@example.com""#
                .into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(check.total_size, 1);

    // The target phase walks the links a page (5,000) at a time: a source
    // gone from the first page and one gone from the last are both found,
    // and every other link is counted once.
    let kept: String = text
        .lines()
        .filter(|line| !line.starts_with("0,") && !line.starts_with("999,"))
        .map(|line| format!("{line}\n"))
        .collect();
    write_hr(&conf, &kept);
    let after = recon(&mut clients, MAPPING).await;
    assert_eq!(
        counts(&after.situation_counts),
        pairs(&[("CONFIRMED", ROWS - 2), ("SOURCE_MISSING", 2)]),
        "{:?}",
        after.failures.first()
    );
    let mut missing: Vec<String> = after.failures.iter().map(|f| f.source_id.clone()).collect();
    missing.sort();
    assert_eq!(missing, ["0", "999"]);
    let links = after.links.unwrap();
    assert_eq!((links.total, links.processed), (ROWS, ROWS));
    let target = after.target.unwrap();
    assert_eq!((target.total, target.processed), (ROWS, ROWS));
}

#[tokio::test]
async fn idmctl_runs_plans_lists_and_shows_reconciliations() {
    let conf = idm_conf("sync");
    let idmd = start(&conf).await;
    let text = |output: &std::process::Output| {
        (
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };

    let plan = idmd.idmctl(&["recon", "plan", MAPPING]);
    let (out, err) = text(&plan);
    assert!(plan.status.success(), "{err}");
    assert!(
        out.contains("ABSENT") && out.contains("snow123") && out.contains("********"),
        "{out}"
    );
    assert!(err.contains("CREATE 3"), "{err}");

    let started = idmd.idmctl(&["recon", "start", MAPPING, "--wait"]);
    let (out, err) = text(&started);
    assert!(started.status.success(), "{err}");
    assert!(
        out.contains("SUCCESS") && out.contains("CREATE") && out.contains("3/3 rows"),
        "{out}"
    );

    let listed = idmd.idmctl(&["--output", "json", "recon", "list", "--mapping", MAPPING]);
    let (out, err) = text(&listed);
    assert!(listed.status.success(), "{err}");
    let runs: Value = serde_json::from_str(&out).unwrap();
    let id = runs["result"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(runs["result"][0]["actionSummary"]["CREATE"], 3);

    let shown = idmd.idmctl(&["--output", "json", "recon", "show", &id]);
    let (out, _) = text(&shown);
    let run: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (
            run["state"].as_str(),
            run["progress"]["source"]["processed"].as_i64()
        ),
        (Some("SUCCESS"), Some(3))
    );

    write_hr(
        &conf,
        "uid,firstName,lastName,telephoneNumber\n123,Jon,Snow,5551234\n456,John,Doe,x\n789,Jane,Doe,5558901\n",
    );
    let plan = idmd.idmctl(&["recon", "plan", MAPPING]);
    let (out, _) = text(&plan);
    assert!(out.contains("5554567 → x"), "{out}");
    let by_id = idmd.idmctl(&["recon", "by-id", MAPPING, "456", "--wait"]);
    assert!(by_id.status.success(), "{}", text(&by_id).1);
    let plan = idmd.idmctl(&["recon", "plan", MAPPING]);
    assert!(
        text(&plan).0.contains("nothing would change"),
        "{}",
        text(&plan).0
    );

    let missing = idmd.idmctl(&["recon", "cancel", &id]);
    assert!(!missing.status.success());
    assert!(
        text(&missing).1.contains("FAILED_PRECONDITION"),
        "{}",
        text(&missing).1
    );
}
