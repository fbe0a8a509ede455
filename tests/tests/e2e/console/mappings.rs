//! The console's mappings and runs pages over HTTP, against the sync sample
//! running for real (its CSV file, a real slapd for the implicit sync):
//! the list, a mapping's page, Reconcile now to SUCCESS with 3 created on
//! the run page, Plan after editing `hr.csv` (that row's change, nothing
//! changed), a long run polled and cancelled, a read account refused.

use std::time::{Duration, Instant};

use idm_proto::v1::{GetObjectRequest, ListReconsRequest};
use idm_testkit::{Slapd, SlapdBuilder};
use idm_tests::console::{Console, Page, Running, start_with};
use idm_tests::{IdmdOptions, TempDir, wren_sample};

const MAPPING: &str = "csvEmployee_managedUser";
const BASE: &str = "dc=wrensecurity,dc=org";

/// The sync sample with a real slapd for its implicit sync to LDAP, the
/// console signed in as `openidm-admin`.
async fn sync_sample() -> (Running, Slapd) {
    let slapd = SlapdBuilder::default()
        .base_dn(BASE)
        .start()
        .unwrap_or_else(|e| panic!("a real slapd is needed for this test: {e}"));
    let running = start_with(
        IdmdOptions {
            env: vec![
                ("IDM_LDAP_HOST".into(), "127.0.0.1".into()),
                ("IDM_LDAP_PORT".into(), slapd.port().to_string()),
            ],
            ..IdmdOptions::default()
        },
        Some(wren_sample("sync")),
    )
    .await;
    (running, slapd)
}

fn project(running: &Running) -> &TempDir {
    running.conf.as_ref().unwrap()
}

fn write_hr(project: &TempDir, text: &str) {
    std::fs::write(project.path().join("data/hr.csv"), text).unwrap();
}

/// A page asked for whole and as htmx's `main` fragment: both 200, the
/// fragment without the layout, both with `needle`.
pub async fn both_ways(console: &Console, path: &str, needle: &str) -> Page {
    let whole = console.get(path).await.expect(200);
    assert!(whole.is_whole_page(), "{path}: the whole page");
    assert!(
        whole.contains(needle),
        "{path} lacks {needle:?}: {}",
        whole.body
    );
    let fragment = console.get_fragment(path).await.expect(200);
    assert!(
        !fragment.is_whole_page(),
        "{path}: only main: {}",
        fragment.body
    );
    assert!(!fragment.contains("<html"), "{path}: only main");
    assert!(fragment.contains(needle), "{path} (htmx) lacks {needle:?}");
    whole
}

/// The run's page until its state is `state`.
async fn run_page_until(console: &Console, run: &str, state: &str) -> Page {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let page = console.get(run).await;
        assert_eq!(page.status, 200, "{}", page.body);
        if page.body.contains(&format!(">{state}<")) {
            return page;
        }
        assert!(
            Instant::now() < deadline,
            "{run} never reached {state}: {}",
            page.body
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The count `name` shows in a page's situations or actions
/// (`<dt>name</dt><dd>1,234</dd>`).
fn count_of(body: &str, name: &str) -> Option<i64> {
    let tag = format!("<dt>{name}</dt><dd>");
    let start = body.find(&tag)? + tag.len();
    let end = body[start..].find('<')? + start;
    body[start..end].replace(',', "").parse().ok()
}

#[tokio::test]
async fn reconcile_now_shows_the_run_to_three_created_and_the_plan_changes_nothing() {
    let (sample, _slapd) = sync_sample().await;
    let admin = &sample.admin;

    let list = both_ways(admin, "/admin/mappings", MAPPING).await;
    assert!(
        list.body.contains("managedUser_ldapAccount"),
        "{}",
        list.body
    );
    assert!(list.body.contains("system/csv/employee"), "{}", list.body);
    assert!(list.body.contains("never run"), "{}", list.body);

    let path = format!("/admin/mappings/{MAPPING}");
    let page = both_ways(admin, &path, "Reconcile now").await;
    assert!(
        page.body.contains("telephoneNumber"),
        "the property map: {}",
        page.body
    );
    assert!(page.body.contains("No runs yet"), "{}", page.body);

    // Reconcile now: POST, 303 to the run's page.
    let started = admin.post(&format!("{path}/reconcile"), &[]).await;
    assert_eq!(started.status, 303, "{}", started.body);
    let run = started.location().unwrap().to_string();
    assert!(run.starts_with("/admin/runs/"), "{run}");
    let done = run_page_until(admin, &run, "SUCCESS").await;
    assert_eq!(count_of(&done.body, "CREATE"), Some(3), "{}", done.body);
    assert_eq!(count_of(&done.body, "ABSENT"), Some(3), "{}", done.body);
    assert!(
        !done.body.contains("http-equiv=\"refresh\""),
        "an ended run does not refresh"
    );
    assert!(!done.body.contains("hx-trigger"), "nor poll");
    assert!(!done.body.contains(">Cancel<"), "nor offer Cancel");
    let progress = admin.get_fragment(&format!("{run}/progress")).await;
    assert_eq!(progress.status, 200);
    assert_eq!(
        count_of(&progress.body, "CREATE"),
        Some(3),
        "{}",
        progress.body
    );
    both_ways(admin, &run, "Failures (0)").await;

    // The list and the history show the run.
    let list = admin.get("/admin/mappings").await;
    assert!(
        list.body.contains("SUCCESS") && list.body.contains("ABSENT 3"),
        "{}",
        list.body
    );
    let history = admin.get(&path).await;
    let id = run.trim_start_matches("/admin/runs/");
    assert!(history.body.contains(id), "{}", history.body);

    // Plan after editing hr.csv: John Doe's number would change; nothing does.
    write_hr(
        project(&sample),
        "uid,firstName,lastName,telephoneNumber\n123,Jon,Snow,5551234\n456,John,Doe,5550000\n789,Jane,Doe,5558901\n124,Too,Few\n",
    );
    let plan = both_ways(admin, &format!("{path}/plan"), "Nothing has been changed").await;
    assert_eq!(count_of(&plan.body, "CONFIRMED"), Some(3), "{}", plan.body);
    assert_eq!(count_of(&plan.body, "UPDATE"), Some(3), "{}", plan.body);
    assert_eq!(
        plan.body.matches(r#"<section class="change">"#).count(),
        1,
        "{}",
        plan.body
    );
    assert!(plan.body.contains("<code>456</code>"), "{}", plan.body);
    assert!(
        !plan.body.contains("<code>123</code>"),
        "unchanged rows are not listed"
    );
    for text in [
        "telephoneNumber",
        r#"<td class="change-before">5554567</td>"#,
        r#"<td class="change-after">5550000</td>"#,
    ] {
        assert!(plan.body.contains(text), "{text}: {}", plan.body);
    }
    assert!(
        plan.body.contains("would fail on (1)")
            && plan
                .body
                .contains("<tr><td>5</td><td><code>124</code></td>"),
        "the bad row, by its line: {}",
        plan.body
    );
    let only = admin.get(&format!("{path}/plan?source=789")).await;
    assert!(
        only.body.contains("A run would change nothing"),
        "{}",
        only.body
    );
    let doe = sample
        .idmd
        .clients()
        .await
        .objects
        .get_object(GetObjectRequest {
            name: "managed/user/456".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        idm_tests::json_of(&doe)["telephoneNumber"],
        "5554567",
        "the plan changed nothing"
    );
    assert_eq!(doe.revision, 1);

    // Managed users into LDAP plan too: each entry read, nothing written,
    // and no password shown.
    let outbound = admin
        .get("/admin/mappings/managedUser_ldapAccount/plan")
        .await
        .expect(200);
    assert!(
        outbound.contains("Plan of managedUser_ldapAccount") && !outbound.contains("FooBar123"),
        "{}",
        outbound.body
    );

    // Unknown names are the error page, not a crash.
    assert_eq!(admin.get("/admin/mappings/nope").await.status, 404);
    assert_eq!(admin.get("/admin/runs/nope").await.status, 404);
    assert_eq!(admin.get("/admin/runs/a%2Fb").await.status, 404);
}

#[tokio::test]
async fn a_read_account_sees_mappings_and_runs_but_changes_nothing() {
    let (sample, _slapd) = sync_sample().await;
    let admin = &sample.admin;
    let path = format!("/admin/mappings/{MAPPING}");
    // Posted as htmx posts it: the same 303.
    let started = admin
        .post_fragment(&format!("{path}/reconcile"), &[])
        .await
        .expect_redirect("/admin/runs/");
    let run = started.location().unwrap().to_string();
    run_page_until(admin, &run, "SUCCESS").await;

    let reader = sample.signed_in_as("auditor", "read").await;
    let list = both_ways(&reader, "/admin/mappings", MAPPING).await;
    assert!(list.body.contains("SUCCESS"), "{}", list.body);
    let page = both_ways(&reader, &path, "system/csv/employee").await;
    assert!(
        !page.body.contains("Reconcile now"),
        "no buttons: {}",
        page.body
    );
    assert!(!page.body.contains("/plan"), "no Plan: {}", page.body);
    both_ways(&reader, &run, "SUCCESS").await;

    // The server refuses anyway.
    let refused = reader.post(&format!("{path}/reconcile"), &[]).await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert_eq!(reader.get(&format!("{path}/plan")).await.status, 403);
    let refused = reader.post(&format!("{run}/cancel"), &[]).await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    let runs = sample
        .idmd
        .clients()
        .await
        .recon
        .list_recons(ListReconsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .runs;
    assert_eq!(runs.len(), 1, "the reader started nothing");

    // And a form without its CSRF token is refused, even an admin's.
    let forged = admin.post_exactly(&format!("{path}/reconcile"), &[]).await;
    assert_eq!(forged.status, 403, "{}", forged.body);
}

#[tokio::test]
async fn a_long_run_is_polled_live_and_can_be_canceled() {
    // The scheduler sample (no LDAP, no schedules) with 30,000 rows and no
    // default password (an argon2 hash per user would make a batch, which a
    // cancel lets finish, take minutes): a run of seconds.
    let project = wren_sample("scheduler");
    let sync = project.path().join("conf/sync.json");
    let mut mappings: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&sync).unwrap()).unwrap();
    mappings["mappings"][0]["properties"]
        .as_array_mut()
        .unwrap()
        .retain(|rule| rule["target"] != "password");
    std::fs::write(&sync, mappings.to_string()).unwrap();
    let mut rows = String::from("uid,firstName,lastName,telephoneNumber\n");
    for i in 0..30_000 {
        rows.push_str(&format!("{i},First{i},Last{i},555{i}\n"));
    }
    std::fs::write(project.path().join("data/hr.csv"), rows).unwrap();
    for schedule in ["schedule-recon.json", "schedule-greeting.json"] {
        std::fs::remove_file(project.path().join("conf").join(schedule)).unwrap();
    }
    let running = start_with(IdmdOptions::default(), Some(project)).await;
    let admin = &running.admin;

    let started = admin
        .post(&format!("/admin/mappings/{MAPPING}/reconcile"), &[])
        .await;
    assert_eq!(started.status, 303, "{}", started.body);
    let run = started.location().unwrap().to_string();
    let live = admin.get(&run).await;
    assert!(live.body.contains(">ACTIVE<"), "still going: {}", live.body);
    assert!(
        live.body
            .contains(r#"<noscript><meta http-equiv="refresh" content="2"></noscript>"#),
        "refreshes without JavaScript: {}",
        live.body
    );
    assert!(
        live.body.contains(&format!(r#"hx-get="{run}/progress""#))
            && live.body.contains(r#"hx-trigger="every 1s""#),
        "polls with htmx: {}",
        live.body
    );
    assert!(live.body.contains(">Cancel<"), "{}", live.body);
    let progress = admin.get_fragment(&format!("{run}/progress")).await;
    assert!(
        progress
            .body
            .trim_start()
            .starts_with(r#"<div id="run-live""#),
        "{}",
        progress.body
    );
    assert!(progress.body.contains(r#"hx-trigger="every 1s""#));

    let canceled = admin.post(&format!("{run}/cancel"), &[]).await;
    assert_eq!(canceled.status, 303, "{}", canceled.body);
    assert_eq!(canceled.location(), Some(run.as_str()));
    let ended = run_page_until(admin, &run, "CANCELED").await;
    assert!(!ended.body.contains("hx-trigger"), "{}", ended.body);
    let progress = admin.get_fragment(&format!("{run}/progress")).await;
    assert!(
        !progress.body.contains("hx-trigger"),
        "polling stops: {}",
        progress.body
    );
    // Cancelling what has ended is a conflict, said on the page.
    let again = admin.post(&format!("{run}/cancel"), &[]).await;
    assert_eq!(again.status, 409, "{}", again.body);
}
