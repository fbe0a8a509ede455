//! The cookbook's scheduling scenario: a reconciliation and a greeting
//! script every 15 seconds; a row appended to hr.csv becomes a managed user
//! within one tick.

use std::io::Write;
use std::time::{Duration, Instant};

use idm_proto::v1::execution::Outcome;
use idm_proto::v1::{
    CreateScheduleRequest, DeleteScheduleRequest, ListExecutionsRequest, ListSchedulesRequest,
    PauseScheduleRequest, ResumeScheduleRequest, RunScheduleRequest, Schedule,
};
use idm_tests::{Clients, Idmd, IdmdOptions, attrs, idm_conf};
use serde_json::json;
use tonic::Code;

use crate::{expect_code, violated_field};

async fn exists(clients: &mut Clients, id: &str) -> bool {
    crate::managed_object(clients, "user", id).await.is_some()
}

/// Waits until `id` is a managed user; returns how long it took.
async fn until_user(clients: &mut Clients, id: &str, limit: Duration) -> Duration {
    let start = Instant::now();
    while !exists(clients, id).await {
        assert!(
            start.elapsed() < limit,
            "managed/user/{id} did not appear within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    start.elapsed()
}

#[tokio::test]
async fn the_scheduler_sample_imports_an_appended_row_within_one_tick_and_greets_every_tick() {
    let conf = idm_conf("scheduler");
    let idmd = Idmd::start_with(IdmdOptions {
        conf: Some(conf.path().to_path_buf()),
        ..Default::default()
    })
    .await;
    let mut c = idmd.clients().await;

    // The first tick (at most 15 s away) imports the one row there is.
    until_user(&mut c, "123", Duration::from_secs(25)).await;

    let mut hr = std::fs::OpenOptions::new()
        .append(true)
        .open(conf.path().join("data/hr.csv"))
        .unwrap();
    writeln!(hr, "456,John,Doe,5554567").unwrap();
    drop(hr);
    // One tick later (plus the run itself) it is a managed user.
    until_user(&mut c, "456", Duration::from_secs(25)).await;

    let log = idmd.log();
    let greetings = log
        .matches("Hi, this is automatically triggered script!")
        .count();
    assert!(greetings >= 2, "the greeting every tick:\n{log}");
    assert!(log.contains("Timestamp: \""), "{log}");
}

fn every_second(name: &str, schedule: &str) -> CreateScheduleRequest {
    CreateScheduleRequest {
        schedule_id: name.into(),
        schedule: Some(Schedule {
            enabled: true,
            r#type: "cron".into(),
            schedule: schedule.into(),
            invoke_service: "script".into(),
            invoke_context: attrs(json!({"script": {"type": "text/javascript", "source": "'ok'"}})),
            ..Default::default()
        }),
    }
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

#[tokio::test]
async fn schedules_are_managed_at_runtime_paused_resumed_run_now_and_their_history_kept() {
    let idmd = Idmd::start().await;
    let mut c = idmd.clients().await;

    let refused = expect_code(
        c.schedules
            .create_schedule(every_second("bad", "0 0 25 * * ?"))
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_field(&refused), "schedule.hours");

    let created = c
        .schedules
        .create_schedule(every_second("tick", "* * * * * ?"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(created.name, "schedules/tick");
    assert!(created.next_fire_time.is_some());
    let listed = c
        .schedules
        .list_schedules(ListSchedulesRequest {})
        .await
        .unwrap()
        .into_inner()
        .schedules;
    assert_eq!(listed.len(), 1);

    tokio::time::sleep(Duration::from_millis(3200)).await;
    let fired = executions(&mut c, "tick").await;
    assert!(fired.len() >= 2, "{fired:?}");

    let paused = c
        .schedules
        .pause_schedule(PauseScheduleRequest {
            name: "schedules/tick".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(paused.paused && paused.next_fire_time.is_none());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let at_pause = executions(&mut c, "tick").await.len();
    tokio::time::sleep(Duration::from_millis(2200)).await;
    assert_eq!(executions(&mut c, "tick").await.len(), at_pause, "paused");

    let ran = c
        .schedules
        .run_schedule(RunScheduleRequest {
            name: "schedules/tick".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ran.outcome(), Outcome::Running);
    c.schedules
        .resume_schedule(ResumeScheduleRequest {
            name: "schedules/tick".into(),
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let history = executions(&mut c, "tick").await;
    assert!(
        history.len() >= at_pause + 2,
        "run-now and resumed ticks: {history:?}"
    );
    assert!(
        history
            .iter()
            .any(|e| e.outcome() == Outcome::Success && e.duration.is_some())
    );

    let deleted = c
        .schedules
        .delete_schedule(DeleteScheduleRequest {
            name: "schedules/tick".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(deleted.existed);
    let after = executions(&mut c, "tick").await.len();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        executions(&mut c, "tick").await.len() <= after + 1,
        "deleted schedules stop"
    );
}

#[tokio::test]
async fn idmctl_manages_schedules_in_wren_json() {
    let idmd = Idmd::start().await;
    let body = r#"{"enabled": true, "type": "cron", "schedule": "0 0 2 ? * MON-FRI", "timeZone": "Europe/Paris",
        "invokeService": "script", "invokeContext": {"script": {"type": "text/javascript", "source": "1"}}}"#;
    let created = idmd.idmctl_with(
        &idmd.admin_token,
        &["schedules", "create", "nightly", "--data", "@-"],
        Some(body),
    );
    assert!(created.status.success(), "{created:?}");
    let shown = idmd.idmctl(&["--output", "json", "schedules", "show", "nightly"]);
    assert!(shown.status.success(), "{shown:?}");
    let shown: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(shown["schedule"], "0 0 2 ? * MON-FRI");
    assert_eq!(shown["timeZone"], "Europe/Paris");
    assert!(shown["nextFireTime"].is_string(), "{shown}");

    let bad = idmd.idmctl_with(
        &idmd.admin_token,
        &["schedules", "create", "broken", "--data", "@-"],
        Some(r#"{"schedule": "0 0 2 ? * 9", "invokeService": "script", "invokeContext": {"script": {"type": "text/javascript", "source": "1"}}}"#),
    );
    assert_eq!(bad.status.code(), Some(1));
    let said = String::from_utf8_lossy(&bad.stderr);
    assert!(
        said.contains("INVALID_ARGUMENT") && said.contains("dayOfWeek"),
        "{said}"
    );

    let paused = idmd.idmctl(&["schedules", "pause", "nightly"]);
    assert!(
        String::from_utf8_lossy(&paused.stdout).contains("paused"),
        "{paused:?}"
    );
    let listed = idmd.idmctl(&["schedules", "list"]);
    assert!(
        String::from_utf8_lossy(&listed.stdout).contains("nightly"),
        "{listed:?}"
    );
    let ran = idmd.idmctl(&["schedules", "run", "nightly"]);
    assert!(ran.status.success(), "{ran:?}");
    let history = idmd.idmctl(&["--output", "json", "schedules", "history", "nightly"]);
    let history: serde_json::Value = serde_json::from_slice(&history.stdout).unwrap();
    assert_eq!(history["result"].as_array().unwrap().len(), 1, "{history}");
    let deleted = idmd.idmctl(&["schedules", "delete", "nightly"]);
    assert!(deleted.status.success(), "{deleted:?}");
}

#[tokio::test]
async fn ticks_missed_while_idmd_was_down_follow_the_misfire_policy() {
    let conf = idm_tests::TempDir::new("misfire");
    for (name, policy) in [("proceed", "fireAndProceed"), ("nothing", "doNothing")] {
        std::fs::write(
            conf.path().join(format!("schedule-{name}.json")),
            json!({"schedule": "0/3 * * * * ?", "misfirePolicy": policy, "invokeService": "script",
                   "invokeContext": {"script": {"type": "text/javascript", "source": "'ran'"}}})
            .to_string(),
        )
        .unwrap();
    }
    let store_dir = idm_tests::TempDir::new("misfire-store");
    let options = IdmdOptions {
        conf: Some(conf.path().to_path_buf()),
        store: Some(format!(
            "surrealkv://{}",
            store_dir.path().join("db").display()
        )),
        ..Default::default()
    };
    let mut first = Idmd::start_with(options.clone()).await;
    let mut c = first.clients().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while executions(&mut c, "proceed").await.is_empty()
        || executions(&mut c, "nothing").await.is_empty()
    {
        assert!(Instant::now() < deadline, "no first tick");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (token, key) = (first.admin_token.clone(), first.encryption_key.clone());
    // Closed first, so idmd does not wait out its grace period for this
    // client (the blocking terminate below would keep it open).
    drop(c);
    tokio::time::sleep(Duration::from_millis(100)).await;
    first.terminate();
    drop(first);
    // Down across two ticks: misfires whatever the 3 s ticks' phase.
    tokio::time::sleep(Duration::from_millis(7000)).await;
    let restarted_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i128;
    let second = Idmd::spawn(options, idm_tests::TempDir::new("idmd"), token, key)
        .await
        .unwrap_or_else(|log| panic!("idmd did not start again:\n{log}"));
    let mut c = second.clients().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before_restart = |list: &[idm_proto::v1::Execution]| {
        list.iter()
            // Due before the restart began: not a tick of the new process,
            // but one missed while down (fireAndProceed runs the latest, which
            // may be due a moment before the restart).
            .filter(|e| {
                e.fire_time.is_some_and(|t| {
                    i128::from(t.seconds) * 1_000_000_000 + i128::from(t.nanos) < restarted_at
                })
            })
            .map(|e| e.outcome())
            .collect::<Vec<_>>()
    };
    let proceed = executions(&mut c, "proceed").await;
    let nothing = executions(&mut c, "nothing").await;
    assert!(
        before_restart(&proceed)
            .iter()
            .filter(|o| **o == Outcome::Success)
            .count()
            >= 2,
        "the missed tick ran at start: {proceed:?}"
    );
    assert!(
        before_restart(&nothing).contains(&Outcome::SkippedMisfire),
        "the missed tick was recorded as skipped: {nothing:?}"
    );
}
