//! The console's schedules pages over HTTP, against the scheduler sample
//! (a recon of `hr.csv` and a greeting script, both `0/15 * * * * ?`):
//! the timing in words beside the expression, next and last fire, pause,
//! resume, run now, the execution history linking the run it started; a
//! read account refused.

use std::time::{Duration, Instant};

use idm_proto::v1::GetScheduleRequest;
use idm_tests::console::{Running, start_with};
use idm_tests::{Idmd, IdmdOptions, wren_sample};

use super::mappings::both_ways;

async fn scheduler_sample() -> Running {
    start_with(IdmdOptions::default(), Some(wren_sample("scheduler"))).await
}

async fn paused(idmd: &Idmd, id: &str) -> bool {
    idmd.clients()
        .await
        .schedules
        .get_schedule(GetScheduleRequest {
            name: format!("schedules/{id}"),
        })
        .await
        .unwrap()
        .into_inner()
        .paused
}

#[tokio::test]
async fn schedules_in_words_paused_resumed_and_run_now_with_their_runs() {
    let running = scheduler_sample().await;
    let (idmd, admin) = (&running.idmd, &running.admin);

    let list = both_ways(admin, "/admin/schedules", "every 15 seconds").await;
    for text in [
        "<code>0/15 * * * * ?</code>",
        "recon",
        "greeting",
        "csvEmployee_managedUser",
        ">Pause<",
        ">Run now<",
    ] {
        assert!(list.body.contains(text), "{text}: {}", list.body);
    }
    let page = both_ways(admin, "/admin/schedules/recon", "every 15 seconds").await;
    assert!(page.body.contains("Next fire"), "{}", page.body);

    // Pause from the list: back to the list, paused, Resume offered.
    let reply = admin
        .post("/admin/schedules/recon/pause", &[("back", "list")])
        .await;
    assert_eq!(
        (reply.status, reply.location().unwrap_or_default()),
        (303, "/admin/schedules"),
        "{}",
        reply.body
    );
    assert!(paused(idmd, "recon").await);
    let page = admin.get("/admin/schedules/recon").await;
    assert!(
        page.body.contains("paused") && page.body.contains(">Resume<"),
        "{}",
        page.body
    );

    // Run now while paused: an execution that started a recon run.
    let reply = admin.post("/admin/schedules/recon/run", &[]).await;
    assert_eq!(
        (reply.status, reply.location().unwrap_or_default()),
        (303, "/admin/schedules/recon"),
        "{}",
        reply.body
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let page = loop {
        let page = admin.get("/admin/schedules/recon").await;
        if page.body.contains(">SUCCESS<") && page.body.contains("href=\"/admin/runs/") {
            break page;
        }
        assert!(
            Instant::now() < deadline,
            "no finished execution: {}",
            page.body
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let at = page.body.find("href=\"/admin/runs/").unwrap() + "href=\"".len();
    let run = &page.body[at..at + page.body[at..].find('"').unwrap()];
    let run_page = admin.get(run).await;
    assert_eq!(run_page.status, 200, "{}", run_page.body);
    assert!(
        run_page.body.contains("schedules/recon"),
        "started by the schedule: {}",
        run_page.body
    );

    // Resume from its page: back to its page, active.
    // (as htmx posts it: the same 303, which htmx follows)
    let reply = admin
        .post_fragment("/admin/schedules/recon/resume", &[])
        .await;
    assert_eq!(
        (reply.status, reply.location().unwrap_or_default()),
        (303, "/admin/schedules/recon")
    );
    assert!(!paused(idmd, "recon").await);
    let page = admin.get("/admin/schedules/recon").await;
    assert!(page.body.contains(">Pause<"), "{}", page.body);

    assert_eq!(admin.get("/admin/schedules/nope").await.status, 404);
    assert_eq!(
        admin.post("/admin/schedules/nope/pause", &[]).await.status,
        404
    );
}

#[tokio::test]
async fn a_read_account_sees_schedules_but_cannot_pause_or_run_them() {
    let running = scheduler_sample().await;
    let idmd = &running.idmd;
    let reader = running.signed_in_as("auditor", "read").await;
    let list = both_ways(&reader, "/admin/schedules", "every 15 seconds").await;
    assert!(
        !list.body.contains(">Pause<") && !list.body.contains(">Run now<"),
        "{}",
        list.body
    );
    let page = both_ways(&reader, "/admin/schedules/recon", "every 15 seconds").await;
    assert!(
        !page.body.contains("<form method=\"post\""),
        "{}",
        page.body
    );
    for action in ["pause", "resume", "run"] {
        let refused = reader
            .post(&format!("/admin/schedules/recon/{action}"), &[])
            .await;
        assert_eq!(refused.status, 403, "{action}: {}", refused.body);
    }
    assert!(!paused(idmd, "recon").await);
}
