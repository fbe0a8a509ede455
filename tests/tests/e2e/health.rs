//! Health that means something, and a bounded shutdown: named components on
//! a healthy idmd, NOT_SERVING first at SIGTERM (seen by a Watch on an open
//! connection), scheduled runs cancelled and recorded at shutdown, runs a
//! crash left RUNNING failed at the next start, and the gateway's `/health`.

use std::process::Command;
use std::time::{Duration, Instant};

use idm_proto::v1::execution::Outcome;
use idm_proto::v1::{CreateScheduleRequest, ListExecutionsRequest, RunScheduleRequest, Schedule};
use idm_tests::scim::Gateway;
use idm_tests::{Clients, Idmd, IdmdOptions, TempDir, attrs};
use serde_json::{Value, json};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

const COMPONENTS: [&str; 4] = ["idm.store", "idm.outbox", "idm.scheduler", "idm.tokens"];

async fn status(idmd: &Idmd, service: &str) -> i32 {
    HealthClient::new(idmd.channel().await)
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .unwrap_or_else(|e| panic!("health of {service:?}: {e}"))
        .into_inner()
        .status
}

/// A schedule whose script keeps running (a busy loop of two minutes,
/// far inside the 300 s script limit); its cron (03:00 on 1 January) stays
/// out of the way, it is fired by RunSchedule.
async fn start_slow_run(clients: &mut Clients) -> idm_proto::v1::Execution {
    let code = "const end = Date.now() + 120000; while (Date.now() < end) {} 'slow'";
    clients
        .schedules
        .create_schedule(CreateScheduleRequest {
            schedule_id: "slow".into(),
            schedule: Some(Schedule {
                enabled: true,
                r#type: "cron".into(),
                schedule: "0 0 3 1 1 ?".into(),
                invoke_service: "script".into(),
                invoke_context: attrs(
                    json!({"script": {"type": "text/javascript", "source": code}}),
                ),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    let started = clients
        .schedules
        .run_schedule(RunScheduleRequest {
            name: "schedules/slow".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(started.outcome(), Outcome::Running, "{started:?}");
    started
}

async fn executions(clients: &mut Clients) -> Vec<idm_proto::v1::Execution> {
    clients
        .schedules
        .list_executions(ListExecutionsRequest {
            schedule: "schedules/slow".into(),
            page_size: 100,
            page_token: String::new(),
            running: false,
        })
        .await
        .unwrap()
        .into_inner()
        .executions
}

/// An idmd on a SurrealKV store in `store`, with `token` and `key`, so that
/// a second one opens the first one's data.
async fn idmd_on(store: &TempDir, token: &str, key: &str) -> Idmd {
    let options = IdmdOptions {
        store: Some(format!("surrealkv://{}", store.path().join("db").display())),
        ..Default::default()
    };
    Idmd::spawn(options, TempDir::new("idmd"), token.into(), key.into())
        .await
        .unwrap_or_else(|log| panic!("idmd did not start:\n{log}"))
}

#[tokio::test]
async fn every_named_component_serves_on_a_healthy_idmd() {
    let idmd = Idmd::start().await;
    let serving = ServingStatus::Serving as i32;
    for service in [
        "",
        "idm.store",
        "idm.outbox",
        "idm.scheduler",
        "idm.tokens",
        "idm.v1.ObjectService",
        "idm.v1.ScheduleService",
        "idm.v1.AccountService",
    ] {
        assert_eq!(status(&idmd, service).await, serving, "{service:?}");
    }
}

// Multi-threaded: the clients' connections answer the server's goodbye
// (GOAWAY, PING) while this thread waits for the exit, as a live client would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_sigterm_health_turns_not_serving_first_and_a_running_script_is_cancelled_and_recorded()
{
    let store = TempDir::new("health-store");
    let (token, key) = (
        "admin-health-term",
        "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWY=",
    );
    let mut idmd = idmd_on(&store, token, key).await;
    let mut clients = idmd.clients().await;
    let started = start_slow_run(&mut clients).await;

    // A load balancer's Watch, on a connection opened before the signal.
    let mut watch = HealthClient::new(idmd.channel().await)
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = watch.message().await.unwrap().unwrap();
    assert_eq!(first.status, ServingStatus::Serving as i32);

    let signalled = Instant::now();
    let sent = Command::new("kill")
        .arg("-TERM")
        .arg(idmd.pid().to_string())
        .status()
        .unwrap();
    assert!(sent.success());
    // The next word on the open Watch is NOT_SERVING, sent by an idmd that
    // is still up (the script it runs keeps the shutdown going).
    let next = watch
        .message()
        .await
        .unwrap_or_else(|e| panic!("the Watch broke instead of NOT_SERVING: {e}"))
        .expect("NOT_SERVING before the Watch ends");
    assert_eq!(next.status, ServingStatus::NotServing as i32);
    // Then the Watch ends (cleanly), so that it does not hold the drain up.
    assert!(matches!(watch.message().await, Ok(None)));

    let exit = tokio::task::block_in_place(|| idmd.terminate());
    assert!(exit.success(), "{exit:?}\n{}", idmd.log());
    let took = signalled.elapsed();
    let log = idmd.log();
    let drained = log.find("health NOT_SERVING").expect(&log);
    let stopped = log.find("idmd stopped").expect(&log);
    assert!(drained < stopped, "{log}");
    assert!(
        !log.contains("scheduled runs still going"),
        "the script was cancelled, not waited out:\n{log}"
    );
    assert!(
        !log.contains("calls still going"),
        "the ended Watch does not hold the drain up:\n{log}"
    );

    // The run was cancelled and recorded by idmd itself (not failed at the
    // next start, which says nothing of a cancel).
    let again = idmd_on(&store, token, key).await;
    let mut clients = again.clients().await;
    let runs = executions(&mut clients).await;
    let run = runs
        .iter()
        .find(|e| e.name == started.name)
        .unwrap_or_else(|| panic!("{runs:?}"));
    assert_eq!(run.outcome(), Outcome::Failed, "{run:?}");
    assert!(
        run.message.contains("idmd stopped during the run") && run.message.contains("canceled"),
        "{run:?}"
    );
    assert!(run.end_time.is_some(), "{run:?}");
    // Bounded by the one grace (5 s), with room for a loaded machine.
    assert!(took < Duration::from_secs(12), "shutdown took {took:?}");
}

#[tokio::test]
async fn an_execution_left_running_by_a_crash_is_failed_at_the_next_start() {
    let store = TempDir::new("health-crash");
    let (token, key) = (
        "admin-health-crash",
        "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWY=",
    );
    let mut idmd = idmd_on(&store, token, key).await;
    let mut clients = idmd.clients().await;
    let started = start_slow_run(&mut clients).await;
    // The RUNNING record is stored before RunSchedule answers; then a crash.
    idmd.kill();

    let again = idmd_on(&store, token, key).await;
    let mut clients = again.clients().await;
    let runs = executions(&mut clients).await;
    let run = runs
        .iter()
        .find(|e| e.name == started.name)
        .unwrap_or_else(|| panic!("{runs:?}"));
    assert_eq!(run.outcome(), Outcome::Failed, "{run:?}");
    assert_eq!(run.message, "idmd stopped during the run");
    assert!(run.end_time.is_some(), "{run:?}");
    assert!(
        again
            .log()
            .contains("scheduled runs cut short by the last stop are marked FAILED"),
        "{}",
        again.log()
    );
}

#[tokio::test]
async fn the_gateway_health_is_up_then_503_with_the_core_down_once_idmd_is_killed() {
    let mut idmd = Idmd::start().await;
    let gateway = Gateway::start(&idmd).await;
    let url = format!("{}/health", gateway.base.trim_end_matches("/scim/v2"));
    let ask = || async {
        let response = gateway.client().get(&url).send().await.unwrap();
        let code = response.status().as_u16();
        (code, response.json::<Value>().await.unwrap())
    };
    let (code, body) = ask().await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        body,
        json!({"status": "UP", "components": {"gateway": "UP", "core": "UP",
            "idm.store": "UP", "idm.outbox": "UP", "idm.scheduler": "UP", "idm.tokens": "UP"}})
    );
    for component in COMPONENTS {
        assert_eq!(body["components"][component], "UP");
    }

    idmd.kill();
    // The answer is at most a second old: within a few, the core is DOWN.
    let deadline = Instant::now() + Duration::from_secs(20);
    let (code, body) = loop {
        let (code, body) = ask().await;
        if code != 200 || Instant::now() > deadline {
            break (code, body);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(code, 503, "{body}");
    assert_eq!(body["status"], "DOWN");
    assert_eq!(body["components"]["core"], "DOWN");
    assert_eq!(body["components"]["gateway"], "UP");
    assert_eq!(
        body.as_object().unwrap().len(),
        2,
        "status words only: {body}"
    );
}
