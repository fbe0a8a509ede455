//! Retention: history past its age is pruned in the background while idmd
//! runs (here with ages of seconds, and a pruner pass every second).

use std::time::{Duration, Instant};

use idm_proto::v1::{CreateScheduleRequest, ListExecutionsRequest, Schedule};
use idm_tests::{Clients, Idmd, IdmdOptions, attrs};
use serde_json::{Value, json};

async fn executions(clients: &mut Clients, name: &str) -> usize {
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
        .len()
}

/// What the pruner's log lines say it deleted of `kind`.
fn pruned_of(log: &str, kind: &str) -> u64 {
    log.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| {
            line["fields"]["message"] == "history pruned" && line["fields"]["kind"] == kind
        })
        .map(|line| line["fields"]["deleted"].as_u64().unwrap())
        .sum()
}

#[tokio::test]
async fn claimed_schedule_ticks_stay_bounded_while_a_schedule_fires_every_second() {
    let idmd = Idmd::start_with(IdmdOptions {
        extra_args: [
            "--log-format",
            "json",
            "--retain-schedule-ticks",
            "2s",
            // Every fired tick stays listed, to count the ticks claimed.
            "--retain-executions",
            "forever",
            "--retention-interval",
            "1s",
        ]
        .map(String::from)
        .to_vec(),
        ..Default::default()
    })
    .await;
    let mut c = idmd.clients().await;
    c.schedules
        .create_schedule(CreateScheduleRequest {
            schedule_id: "tick".into(),
            schedule: Some(Schedule {
                enabled: true,
                r#type: "cron".into(),
                schedule: "* * * * * ?".into(),
                invoke_service: "script".into(),
                invoke_context: attrs(
                    json!({"script": {"type": "text/javascript", "source": "'ok'"}}),
                ),
                ..Default::default()
            }),
        })
        .await
        .unwrap();

    // Each fired tick claimed one schedule_tick record and wrote one
    // execution; the pruner deletes claims older than 2 s (but the newest),
    // so those still kept are the last few seconds' worth, however long the
    // schedule has run.
    let start = Instant::now();
    loop {
        let fired = executions(&mut c, "tick").await as u64;
        let log = idmd.log();
        let pruned = pruned_of(&log, "schedule_ticks");
        let kept = fired.saturating_sub(pruned);
        if fired >= 8 && kept <= 4 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{fired} ticks fired, {pruned} pruned:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn an_age_that_is_not_a_duration_or_forever_stops_idmd_at_start() {
    let log = Idmd::start_failure(IdmdOptions {
        extra_args: ["--retain-audit", "soon"].map(String::from).to_vec(),
        ..Default::default()
    })
    .await;
    assert!(log.contains("--retain-audit"), "{log}");
    assert!(log.contains("forever"), "{log}");
}
