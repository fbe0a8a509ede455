//! Wren's REST API for operations, as openidm-admin by Basic: `/openidm/recon`
//! (the cookbook's command), `/openidm/scheduler`, `/openidm/system`,
//! `/openidm/config` and `/openidm/audit`.

use std::time::{Duration, Instant};

use idm_proto::v1::Scope;
use idm_testkit::SlapdBuilder;
use idm_tests::rest::{AS_ADMIN, Auth, Rest, start, start_with};
use idm_tests::{IdmdOptions, TempDir, idm_conf, wren_sample};
use serde_json::{Value, json};

const MAPPING: &str = "csvEmployee_managedUser";
const BIND_SECRET: &str = "S3cret-Bind-Pw!";

/// A query-string value, percent-encoded.
fn enc(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn post_empty(rest: &Rest, path: &str) -> idm_tests::scim::Reply {
    rest.send(AS_ADMIN, "POST", path, None, &[]).await
}

/// Polls `GET /recon/{id}` until the run leaves ACTIVE.
async fn ended(rest: &Rest, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let run = rest.get(&format!("/recon/{id}")).await.expect(200).body;
        if run["state"] != "ACTIVE" {
            return run;
        }
        assert!(Instant::now() < deadline, "run {id} still active: {run}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn start_conf(conf: &TempDir) -> (idm_tests::Idmd, Rest) {
    start_with(IdmdOptions {
        conf: Some(conf.path().to_path_buf()),
        env: vec![("IDM_LDAP_BIND_PASSWORD".into(), BIND_SECRET.into())],
        ..Default::default()
    })
    .await
}

#[tokio::test]
async fn the_cookbook_recon_creates_users_and_is_summarised_as_wren_does() {
    let conf = idm_conf("sync");
    let (_idmd, rest) = start_conf(&conf).await;

    // The cookbook's command: POST, no body, `?_action=recon&mapping=…`.
    let started = post_empty(&rest, &format!("/recon?_action=recon&mapping={MAPPING}"))
        .await
        .expect(200)
        .body;
    assert_eq!(started["state"], "ACTIVE", "{started}");
    let id = started["_id"].as_str().unwrap().to_string();
    let run = ended(&rest, &id).await;
    assert_eq!(run["state"], "SUCCESS", "{run}");
    assert_eq!(run["_id"], id.as_str());
    assert_eq!(run["mapping"], MAPPING);
    assert_eq!(run["stage"], "COMPLETED_SUCCESS");
    assert_eq!(run["stageDescription"], "reconciliation completed.");
    assert_eq!(run["situationSummary"]["ABSENT"], 3, "{run}");
    assert_eq!(run["situationSummary"]["CONFIRMED"], 0);
    assert_eq!(run["statusSummary"], json!({"SUCCESS": 3, "FAILURE": 0}));
    assert_eq!(run["progress"]["source"]["existing"]["processed"], 3);
    assert_eq!(
        run["parameters"]["sourceQuery"]["resourceName"],
        "system/csv/employee"
    );
    for field in ["started", "ended"] {
        assert!(
            run[field].as_str().is_some_and(|t| t.len() > 10),
            "{field}: {run}"
        );
    }
    assert!(run["duration"].is_number());
    // Per phase, Wren's six figures in milliseconds.
    let summary = run["durationSummary"].as_object().unwrap();
    for phase in [
        "sourceQuery",
        "sourcePhase",
        "linkQuery",
        "targetQuery",
        "targetPhase",
    ] {
        let stats = summary
            .get(phase)
            .and_then(Value::as_object)
            .unwrap_or_else(|| panic!("{phase}: {run}"));
        let mut keys: Vec<&str> = stats.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            ["count", "max", "mean", "min", "stdDev", "sum"],
            "{phase}"
        );
        let figure = |key: &str| {
            stats[key]
                .as_i64()
                .unwrap_or_else(|| panic!("{phase}.{key}: {run}"))
        };
        assert!(figure("count") >= 1, "{phase}: {run}");
        assert!(
            figure("min") <= figure("mean") && figure("mean") <= figure("max"),
            "{phase}: {run}"
        );
        assert!(
            figure("sum") >= figure("max") && figure("stdDev") >= 0,
            "{phase}: {run}"
        );
    }

    let users = rest
        .get("/managed/user?_queryFilter=true")
        .await
        .expect(200)
        .body;
    assert_eq!(users["resultCount"], 3, "{users}");

    // waitForCompletion answers with the end state.
    let waited = post_empty(
        &rest,
        &format!("/recon?_action=recon&mapping={MAPPING}&waitForCompletion=true"),
    )
    .await
    .expect(200)
    .body;
    assert_eq!(waited["state"], "SUCCESS", "{waited}");
    let second = rest
        .get(&format!("/recon/{}", waited["_id"].as_str().unwrap()))
        .await
        .expect(200)
        .body;
    assert_eq!(second["situationSummary"]["CONFIRMED"], 3, "{second}");

    let by_id = post_empty(
        &rest,
        &format!("/recon?_action=reconById&mapping={MAPPING}&ids=123&waitForCompletion=true"),
    )
    .await
    .expect(200)
    .body;
    assert_eq!(by_id["state"], "SUCCESS", "{by_id}");

    let listed = rest.get("/recon").await.expect(200).body;
    let runs = listed["reconciliations"].as_array().unwrap();
    assert_eq!(runs.len(), 3, "{listed}");
    assert!(runs.iter().all(|r| r["mapping"] == MAPPING));

    // Wren's errors.
    post_empty(&rest, "/recon?_action=recon&mapping=nope")
        .await
        .expect_wren_error(404);
    post_empty(&rest, "/recon?_action=recon")
        .await
        .expect_wren_error(400);
    post_empty(
        &rest,
        "/recon?_action=reconById&mapping=csvEmployee_managedUser",
    )
    .await
    .expect_wren_error(400);
    post_empty(&rest, "/recon?_action=explode&mapping=x")
        .await
        .expect_wren_error(400);
    rest.get("/recon/no-such-run").await.expect_wren_error(404);
}

#[tokio::test]
async fn a_running_recon_is_cancelled() {
    let conf = idm_conf("sync");
    let mut rows = String::from("uid,firstName,lastName,telephoneNumber\n");
    for i in 0..5_000 {
        rows.push_str(&format!("{i},First{i},Last{i},555{i}\n"));
    }
    std::fs::write(conf.path().join("data/hr.csv"), rows).unwrap();
    let (_idmd, rest) = start_conf(&conf).await;
    let started = post_empty(&rest, &format!("/recon?_action=recon&mapping={MAPPING}"))
        .await
        .expect(200)
        .body;
    let id = started["_id"].as_str().unwrap();
    let cancel = post_empty(&rest, &format!("/recon/{id}?_action=cancel"))
        .await
        .expect(200)
        .body;
    assert_eq!(
        cancel,
        json!({"_id": id, "action": "cancel", "status": "INITIATED"})
    );
    // The run stops at the end of the batch in hand.
    let run = ended(&rest, id).await;
    assert_eq!(run["state"], "CANCELED", "{run}");
    assert_eq!(run["stageDescription"], "reconciliation aborted.");
    // Cancelling what ended is refused in Wren's shape.
    let again = post_empty(&rest, &format!("/recon/{id}?_action=cancel")).await;
    assert!(again.status >= 400, "{}", again.body);
    assert!(again.body["code"].is_number());
}

fn nightly() -> Value {
    json!({
        "enabled": true,
        "type": "cron",
        "schedule": "0 0 3 * * ?",
        "timeZone": "Europe/Paris",
        "persisted": true,
        "misfirePolicy": "doNothing",
        "invokeService": "script",
        "invokeContext": {"script": {"type": "text/javascript", "source": "1 + 1"}},
        "invokeLogLevel": "info"
    })
}

#[tokio::test]
async fn schedules_are_created_queried_paused_resumed_and_deleted() {
    let (_idmd, rest) = start().await;

    let created = rest
        .put("/scheduler/job/nightly", &nightly(), &[])
        .await
        .expect(201)
        .body;
    assert_eq!(created["_id"], "nightly");
    assert_eq!(created["schedule"], "0 0 3 * * ?");
    assert_eq!(created["invokeContext"]["script"]["source"], "1 + 1");
    assert!(created["nextRunDate"].is_string(), "{created}");
    rest.put(
        "/scheduler/job/nightly",
        &nightly(),
        &[("If-None-Match", "*")],
    )
    .await
    .expect_wren_error(412);

    let mut changed = rest.get("/scheduler/job/nightly").await.expect(200).body;
    changed["schedule"] = json!("0 30 3 * * ?");
    let updated = rest
        .put("/scheduler/job/nightly", &changed, &[])
        .await
        .expect(200)
        .body;
    assert_eq!(
        updated["schedule"], "0 30 3 * * ?",
        "a read is written back"
    );

    let generated = rest
        .post("/scheduler/job?_action=create", &nightly())
        .await
        .expect(201)
        .body;
    let other = generated["_id"].as_str().unwrap().to_string();
    assert!(!other.is_empty());

    let ids = rest
        .get("/scheduler/job?_queryId=query-all-ids")
        .await
        .expect(200)
        .body;
    let mut listed: Vec<&str> = ids["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["_id"].as_str().unwrap())
        .collect();
    listed.sort();
    let mut expected = vec!["nightly", other.as_str()];
    expected.sort();
    assert_eq!(listed, expected);
    assert_eq!(ids["resultCount"], 2);
    let all = rest
        .get("/scheduler/job?_queryFilter=true")
        .await
        .expect(200)
        .body;
    assert_eq!(all["resultCount"], 2);
    let one = rest
        .get(&format!(
            "/scheduler/job?_queryFilter={}",
            enc(r#"/_id eq "nightly""#)
        ))
        .await
        .expect(200)
        .body;
    assert_eq!(one["resultCount"], 1, "{one}");
    assert_eq!(one["result"][0]["schedule"], "0 30 3 * * ?");

    let paused = post_empty(&rest, "/scheduler/job?_action=pauseJobs")
        .await
        .expect(200)
        .body;
    assert_eq!(paused, json!({"success": true}));
    for id in ["nightly", other.as_str()] {
        let job = rest
            .get(&format!("/scheduler/job/{id}"))
            .await
            .expect(200)
            .body;
        assert_eq!(job["paused"], true, "{job}");
    }
    post_empty(&rest, "/scheduler/job?_action=resumeJobs")
        .await
        .expect(200);
    let job = rest.get("/scheduler/job/nightly").await.expect(200).body;
    assert_eq!(job["paused"], false);
    post_empty(&rest, "/scheduler/job/nightly?_action=pause")
        .await
        .expect(200);
    assert_eq!(
        rest.get("/scheduler/job/nightly").await.body["paused"],
        true
    );
    post_empty(&rest, "/scheduler/job/nightly?_action=resume")
        .await
        .expect(200);

    let running = post_empty(&rest, "/scheduler/job?_action=listCurrentlyExecutingJobs")
        .await
        .expect(200)
        .body;
    assert_eq!(running, json!([]));
    // A job triggered now and busy for a while is listed while it runs.
    let mut busy = nightly();
    busy["invokeContext"]["script"]["source"] =
        json!("const end = Date.now() + 4000; while (Date.now() < end) {} 'done'");
    rest.put("/scheduler/job/busy", &busy, &[])
        .await
        .expect(201);
    let trigger = post_empty(&rest, "/scheduler/job/busy?_action=trigger");
    let watch = async {
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let listed = post_empty(&rest, "/scheduler/job?_action=listCurrentlyExecutingJobs")
                .await
                .expect(200)
                .body;
            if listed
                .as_array()
                .unwrap()
                .iter()
                .any(|j| j["_id"] == "busy")
            {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let (triggered, seen) = tokio::join!(trigger, watch);
    triggered.expect(200);
    assert!(seen, "busy was never listed as executing");

    let deleted = rest
        .delete("/scheduler/job/nightly", &[])
        .await
        .expect(200)
        .body;
    assert_eq!(deleted["_id"], "nightly");
    rest.get("/scheduler/job/nightly")
        .await
        .expect_wren_error(404);
    rest.delete("/scheduler/job/nightly", &[])
        .await
        .expect_wren_error(404);

    // Bad schedules are refused naming the field.
    let mut bad = nightly();
    bad["schedule"] = json!("61 * * * * ?");
    let refused = rest
        .put("/scheduler/job/bad", &bad, &[])
        .await
        .expect_wren_error(400);
    assert!(
        refused.body["message"]
            .as_str()
            .unwrap()
            .contains("schedule"),
        "{}",
        refused.body
    );
    let mut unknown = nightly();
    unknown["frequency"] = json!("daily");
    rest.put("/scheduler/job/bad", &unknown, &[])
        .await
        .expect_wren_error(400);

    for (expression, valid) in [
        ("0/15 * * * * ?", true),
        ("0 0 12 ? * MON-FRI", true),
        ("*/15 * * * *", false),
        ("0 0 25 * * ?", false),
    ] {
        let answer = rest
            .post(
                "/scheduler?_action=validateQuartzCronExpression",
                &json!({"cronExpression": expression}),
            )
            .await
            .expect(200)
            .body;
        assert_eq!(answer, json!({"valid": valid}), "{expression}");
    }
    rest.post(
        "/scheduler?_action=validateQuartzCronExpression",
        &json!({}),
    )
    .await
    .expect_wren_error(400);
}

/// The sample's connectors and one more LDAP connector in idm's own shape,
/// with a literal bind password.
fn conf_with_ldap() -> TempDir {
    let conf = idm_conf("sync");
    std::fs::write(
        conf.path().join("connector-corp.json"),
        json!({
            "connectorType": "ldap",
            "url": "ldap://127.0.0.1:9",
            "baseDn": "dc=corp,dc=example",
            "bindDn": "cn=admin,dc=corp,dc=example",
            "bindPassword": BIND_SECRET,
            "objectTypes": {"account": {"namingAttribute": "uid",
                "objectClasses": ["top", "inetOrgPerson"]}}
        })
        .to_string(),
    )
    .unwrap();
    conf
}

#[tokio::test]
async fn system_objects_are_read_and_queried_and_connectors_tested() {
    let conf = conf_with_ldap();
    let (idmd, rest) = start_conf(&conf).await;

    let jon = rest.get("/system/csv/employee/123").await.expect(200).body;
    assert_eq!(jon["_id"], "123");
    assert_eq!(jon["lastName"], "Snow");
    rest.get("/system/csv/employee/999")
        .await
        .expect_wren_error(404);
    rest.get("/system/nope/employee/123")
        .await
        .expect_wren_error(404);

    let all = rest
        .get("/system/csv/employee?_queryFilter=true")
        .await
        .expect(200)
        .body;
    assert_eq!(all["resultCount"], 3, "{all}");
    assert_eq!(all["result"][0]["firstName"], "Jon");
    let ids = rest
        .get("/system/csv/employee?_queryId=query-all-ids")
        .await
        .expect(200)
        .body;
    assert_eq!(
        ids["result"],
        json!([{"_id": "123"}, {"_id": "456"}, {"_id": "789"}])
    );

    let does = rest
        .get(&format!(
            "/system/csv/employee?_queryFilter={}&_pageSize=1",
            enc(r#"/lastName eq "Doe""#)
        ))
        .await
        .expect(200)
        .body;
    assert_eq!(does["resultCount"], 1, "{does}");
    assert_eq!(does["result"][0]["_id"], "456");
    let cookie = does["pagedResultsCookie"].as_str().unwrap();
    let rest_of = rest
        .get(&format!(
            "/system/csv/employee?_queryFilter={}&_pageSize=1&_pagedResultsCookie={}",
            enc(r#"/lastName eq "Doe""#),
            enc(cookie)
        ))
        .await
        .expect(200)
        .body;
    assert_eq!(rest_of["result"][0]["_id"], "789");
    assert_eq!(rest_of["pagedResultsCookie"], Value::Null);

    let hostile = rest
        .get(&format!(
            "/system/csv/employee?_queryFilter={}",
            enc(r#"lastName eq "Doe\" or \"1\" eq \"1""#)
        ))
        .await
        .expect(200)
        .body;
    assert_eq!(hostile["resultCount"], 0, "{hostile}");
    rest.get(&format!(
        "/system/csv/employee?_queryFilter={}",
        enc("lastName eq")
    ))
    .await
    .expect_wren_error(400);

    let tested = post_empty(&rest, "/system?_action=test")
        .await
        .expect(200)
        .body;
    let text = tested.to_string();
    assert!(!text.contains(BIND_SECRET), "{text}");
    let by_name = |name: &str| {
        tested
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name} in {tested}"))
    };
    let csv = by_name("csv");
    assert_eq!(csv["ok"], true, "{csv}");
    assert_eq!(csv["enabled"], true);
    assert_eq!(csv["objectTypes"], json!(["employee"]));
    assert_eq!(csv["config"], "config/provisioner.openicf/csv");
    assert!(csv["connectorRef"]["connectorName"].is_string());
    assert!(csv["displayName"].is_string());
    let corp = by_name("corp");
    assert_eq!(corp["ok"], false, "{corp}");
    assert!(corp["error"].is_string());
    let one = post_empty(&rest, "/system/csv?_action=test")
        .await
        .expect(200)
        .body;
    assert_eq!(one["ok"], true);

    // A connector reads with its own credentials: admins only.
    let reader = crate::token(&idmd, Scope::Read).await;
    rest.send(
        Auth::Bearer(&reader),
        "GET",
        "/system/csv/employee?_queryFilter=true",
        None,
        &[],
    )
    .await
    .expect_wren_error(403);
}

#[tokio::test]
async fn config_documents_are_read_redacted_and_written_through_the_core_checks() {
    let conf = conf_with_ldap();
    let (_idmd, rest) = start_conf(&conf).await;

    let sync = rest.get("/config/sync").await.expect(200).body;
    assert_eq!(sync["_id"], "sync");
    let names: Vec<&str> = sync["mappings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&MAPPING), "{sync}");

    let managed = rest.get("/config/managed").await.expect(200).body;
    assert!(
        managed["objects"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o["name"] == "user"),
        "{managed}"
    );

    // connector-*.json documents in idm's own shape, at config/connector/{name}.
    let corp = rest.get("/config/connector/corp").await.expect(200).body;
    assert_eq!(corp["_id"], "connector/corp");
    assert_eq!(corp["bindPassword"], json!({"$redacted": true}), "{corp}");
    assert!(!corp.to_string().contains(BIND_SECRET));
    let ldap = rest.get("/config/connector/ldap").await.expect(200).body;
    assert!(!ldap.to_string().contains(BIND_SECRET), "{ldap}");
    rest.get("/config/connector/nope")
        .await
        .expect_wren_error(404);
    rest.get("/config/provisioner.openicf/nope")
        .await
        .expect_wren_error(404);
    rest.get("/config/nothing").await.expect_wren_error(404);
    // Wren's provisioner shape cannot hold corp (its account type has no
    // password attribute): said, naming the type, not shown with it left out.
    let unshown = rest
        .get("/config/provisioner.openicf/corp")
        .await
        .expect_wren_error(501)
        .body;
    let message = unshown["message"].as_str().unwrap();
    assert!(
        message.contains("objectTypes.account") && message.contains("config/connector/corp"),
        "{message}"
    );
    assert!(!message.contains(BIND_SECRET));

    // What was read, written back with a change: the secret is kept.
    let mut changed = corp.clone();
    changed["baseDn"] = json!("dc=corp,dc=example");
    changed["timeoutSeconds"] = json!(5);
    let stored = rest
        .put("/config/connector/corp", &changed, &[])
        .await
        .expect(200)
        .body;
    assert_eq!(stored["timeoutSeconds"], 5);
    assert_eq!(stored["bindPassword"], json!({"$redacted": true}));
    // Moving the connector elsewhere with the redacted secret is refused by the core.
    let mut moved = corp.clone();
    moved["url"] = json!("ldap://elsewhere.example:389");
    rest.put("/config/connector/corp", &moved, &[])
        .await
        .expect_wren_error(400);
    // Each shape at its own path.
    let misplaced = rest
        .put("/config/provisioner.openicf/corp", &changed, &[])
        .await
        .expect_wren_error(400)
        .body;
    assert!(
        misplaced["message"]
            .as_str()
            .unwrap()
            .contains("connectorRef"),
        "{misplaced}"
    );

    // sync: a mapping changed and written back; a bad one refused naming it.
    let mut sync_body = sync.clone();
    sync_body["mappings"][0]["taskThreads"] = json!(2);
    let written = rest
        .put("/config/sync", &sync_body, &[])
        .await
        .expect(200)
        .body;
    assert_eq!(written["mappings"].as_array().unwrap().len(), names.len());
    let mut bad = sync.clone();
    bad["mappings"][0]["target"] = json!("managed/nosuchtype");
    let refused = rest
        .put("/config/sync", &bad, &[])
        .await
        .expect_wren_error(400);
    assert!(
        refused.body["message"]
            .as_str()
            .unwrap()
            .contains("mappings[0]"),
        "{}",
        refused.body
    );
    rest.put("/config/managed", &managed, &[])
        .await
        .expect_wren_error(501);

    // schedule/{name}: created, read, listed.
    rest.put("/config/schedule/nightly", &nightly(), &[])
        .await
        .expect(201);
    let schedule = rest.get("/config/schedule/nightly").await.expect(200).body;
    assert_eq!(schedule["_id"], "schedule/nightly");
    assert_eq!(schedule["schedule"], "0 0 3 * * ?");
    assert!(schedule.get("nextRunDate").is_none());
    let listed = rest.get("/config").await.expect(200).body;
    let ids: Vec<&str> = listed["configurations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["_id"].as_str().unwrap())
        .collect();
    for id in [
        "sync",
        "managed",
        "provisioner.openicf/csv",
        "provisioner.openicf/corp",
        "schedule/nightly",
    ] {
        assert!(ids.contains(&id), "{id} in {listed}");
    }
}

#[tokio::test]
async fn provisioner_documents_are_read_and_written_in_wrens_icf_shape() {
    const WREN_BASE: &str = "dc=wrensecurity,dc=org";
    let redacted = json!({"$redacted": true});
    let slapd = SlapdBuilder::default()
        .base_dn(WREN_BASE)
        .admin_password(BIND_SECRET)
        .start()
        .unwrap_or_else(|e| panic!("a real slapd is needed for this test: {e}"));
    let project = wren_sample("sync");
    let (_idmd, rest) = start_with(IdmdOptions {
        conf: Some(project.path().to_path_buf()),
        env: vec![
            ("IDM_LDAP_HOST".into(), "127.0.0.1".into()),
            ("IDM_LDAP_PORT".into(), slapd.port().to_string()),
            ("IDM_LDAP_BIND_DN".into(), slapd.admin_dn().into()),
            ("IDM_LDAP_BIND_PASSWORD".into(), BIND_SECRET.into()),
        ],
        ..Default::default()
    })
    .await;
    let path = "/config/provisioner.openicf/ldap";

    // The sample's provisioner file, read back in its own shape.
    let ldap = rest.get(path).await.expect(200).body;
    assert_eq!(ldap["_id"], "provisioner.openicf/ldap");
    assert_eq!(ldap["name"], "ldap");
    assert_eq!(
        ldap["connectorRef"]["connectorName"], "org.identityconnectors.ldap.LdapConnector",
        "{ldap}"
    );
    assert!(ldap["connectorRef"]["bundleName"].is_string());
    let properties = &ldap["configurationProperties"];
    assert_eq!(properties["host"], "127.0.0.1", "{ldap}");
    assert_eq!(properties["port"], slapd.port());
    assert_eq!(properties["baseContexts"], json!([WREN_BASE]));
    assert_eq!(properties["principal"], slapd.admin_dn());
    assert_eq!(properties["credentials"], redacted);
    assert_eq!(ldap["objectTypes"]["account"]["nativeType"], "__ACCOUNT__");
    assert!(!ldap.to_string().contains(BIND_SECRET), "{ldap}");
    let own_shape = rest.get("/config/connector/ldap").await.expect(200).body;
    assert_eq!(own_shape["bindPassword"], redacted);
    assert!(!own_shape.to_string().contains(BIND_SECRET));

    // GET, edit, PUT: the edit is read back, the credential kept.
    let mut edited = ldap.clone();
    edited["configurationProperties"]["accountSearchFilter"] = json!("(uid=*)");
    let stored = rest.put(path, &edited, &[]).await.expect(200).body;
    assert_eq!(
        stored["configurationProperties"]["accountSearchFilter"],
        "(uid=*)"
    );
    assert_eq!(stored["configurationProperties"]["credentials"], redacted);
    assert!(!stored.to_string().contains(BIND_SECRET));
    let read_again = rest.get(path).await.expect(200).body;
    assert_eq!(read_again, stored);
    let own_shape = rest.get("/config/connector/ldap").await.expect(200).body;
    assert_eq!(
        own_shape["objectTypes"]["account"]["searchFilter"],
        "(uid=*)"
    );
    // The directory still binds with the kept credential: the recon's users
    // reach it through implicit sync, and read back through the new filter.
    let run = post_empty(
        &rest,
        &format!("/recon?_action=recon&mapping={MAPPING}&waitForCompletion=true"),
    )
    .await
    .expect(200)
    .body;
    assert_eq!(run["state"], "SUCCESS", "{run}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let accounts = rest
            .get("/system/ldap/account?_queryFilter=true")
            .await
            .body;
        if accounts["resultCount"] == 3 {
            break;
        }
        assert!(Instant::now() < deadline, "{accounts}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The core's checks: the redacted credential does not follow the
    // connector elsewhere; a connector idm does not run is refused.
    let mut moved = read_again.clone();
    moved["configurationProperties"]["host"] = json!("elsewhere.example");
    rest.put(path, &moved, &[]).await.expect_wren_error(400);
    let mut unknown = read_again.clone();
    unknown["connectorRef"]["connectorName"] =
        json!("org.forgerock.openicf.connectors.scriptedsql.ScriptedSQLConnector");
    let refused = rest
        .put(path, &unknown, &[])
        .await
        .expect_wren_error(400)
        .body;
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("connectorRef.connectorName"),
        "{refused}"
    );

    // The CSV file connector, and a new connector written in Wren's shape.
    let csv = rest
        .get("/config/provisioner.openicf/csv")
        .await
        .expect(200)
        .body;
    let file = csv["configurationProperties"]["csvFile"].as_str().unwrap();
    assert!(file.ends_with("data/hr.csv"), "{csv}");
    assert_eq!(csv["configurationProperties"]["headerUid"], "uid");
    rest.put("/config/provisioner.openicf/hr", &csv, &[])
        .await
        .expect_wren_error(400);
    let mut hr = csv.clone();
    hr["name"] = json!("hr");
    hr["configurationProperties"]["fieldDelimiter"] = json!(";");
    rest.put("/config/provisioner.openicf/hr", &hr, &[])
        .await
        .expect(200);
    let hr = rest
        .get("/config/provisioner.openicf/hr")
        .await
        .expect(200)
        .body;
    assert_eq!(hr["configurationProperties"]["fieldDelimiter"], ";");
    assert_eq!(hr["configurationProperties"]["csvFile"], file);
}

#[tokio::test]
async fn audit_topics_answer_queries_in_wren_shapes() {
    let conf = idm_conf("sync");
    let (_idmd, rest) = start_conf(&conf).await;
    post_empty(
        &rest,
        &format!("/recon?_action=recon&mapping={MAPPING}&waitForCompletion=true"),
    )
    .await
    .expect(200);

    let creates = rest
        .get(&format!(
            "/audit/activity?_queryFilter={}",
            enc(r#"/operation eq "CREATE" and /objectId sw "managed/user/""#)
        ))
        .await
        .expect(200)
        .body;
    assert_eq!(creates["resultCount"], 3, "{creates}");
    let entry = &creates["result"][0];
    assert_eq!(entry["eventName"], "activity");
    assert_eq!(entry["operation"], "CREATE");
    assert_eq!(entry["status"], "SUCCESS");
    assert!(entry["userId"].as_str().unwrap().starts_with("recon/"));
    assert!(entry["timestamp"].is_string());

    let recon = rest
        .get("/audit/recon?_queryFilter=true&_pageSize=100")
        .await
        .expect(200)
        .body;
    let entries = recon["result"].as_array().unwrap();
    assert!(entries.iter().any(|e| e["entryType"] == "start"), "{recon}");
    assert_eq!(
        entries.iter().filter(|e| e["entryType"] == "entry").count(),
        3
    );

    let logins = rest
        .get(&format!(
            "/audit/authentication?_queryFilter={}",
            enc(r#"/userId eq "openidm-admin""#)
        ))
        .await
        .expect(200)
        .body;
    assert!(logins["resultCount"].as_u64().unwrap() >= 1, "{logins}");
    assert_eq!(logins["result"][0]["result"], "SUCCESSFUL");
    assert_eq!(logins["result"][0]["eventName"], "authentication");

    let page = rest
        .get("/audit/access?_queryFilter=true&_pageSize=1&_totalPagedResultsPolicy=EXACT&_sortKeys=-timestamp")
        .await
        .expect(200)
        .body;
    assert_eq!(page["resultCount"], 1, "{page}");
    assert!(page["totalPagedResults"].as_i64().unwrap() > 1, "{page}");
    assert!(page["pagedResultsCookie"].is_string());
    assert_eq!(page["result"][0]["eventName"], "access");

    let none = rest
        .get("/audit/activity?_queryFilter=false")
        .await
        .expect(200)
        .body;
    assert_eq!(none["resultCount"], 0);
    rest.get("/audit/nope?_queryFilter=true")
        .await
        .expect_wren_error(404);
    rest.get("/audit/activity").await.expect_wren_error(400);
    rest.get(&format!(
        "/audit/activity?_queryFilter={}",
        enc("/userId eq")
    ))
    .await
    .expect_wren_error(400);
}
