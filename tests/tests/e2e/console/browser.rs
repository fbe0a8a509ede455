//! The console in a real browser: Debian's chromium, headless, driven
//! through chromedriver (`idm_tests::browser`), against real idmd and
//! idm-gateway processes. Each page visited is saved as a screenshot under
//! `$CARGO_TARGET_DIR/console-screenshots/`.

use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};

use idm_testkit::SlapdBuilder;
use idm_tests::browser::Browser;
use idm_tests::directory::{self, Slapd};
use idm_tests::scim::Gateway;
use idm_tests::{Idmd, IdmdOptions, TempDir, wren_sample};

use crate::managed_object;

const BASE: &str = "dc=wrensecurity,dc=org";
const ADMIN: &str = "openidm-admin";
/// The sample's recon schedule fires every 15 s.
const SCHEDULE_PATIENCE: Duration = Duration::from_secs(45);

/// The processes with `needle` on their command line.
fn running(needle: &str) -> Vec<String> {
    let output = Command::new("pgrep")
        .args(["-af", needle])
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Waits (5 s at most) until no process names `needle`; chromium's crash
/// handlers run in their own process groups and leave when it has gone.
async fn assert_none_left(needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = running(needle);
        if left.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "left running: {left:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The harness itself: a page over the gateway's self-signed HTTPS, a form
/// filled by label and sent by its button text, screenshots at both widths,
/// and nothing left running afterwards.
#[tokio::test]
async fn the_browser_harness_drives_chromium_and_leaves_nothing_running() {
    let idmd = Idmd::start().await;
    let gateway = Gateway::start(&idmd).await;
    let mut browser = Browser::start().await;
    let scratch = browser.scratch().display().to_string();
    assert!(
        !running(&scratch).is_empty(),
        "chromium runs with {scratch}"
    );

    browser
        .goto(&format!(
            "https://localhost:{}/scim/v2/ServiceProviderConfig",
            gateway.port
        ))
        .await;
    browser.wait_for_text("ServiceProviderConfig").await;
    let shot = browser.screenshot("harness-scim").await;
    let png = std::fs::read(&shot).unwrap();
    assert_eq!(&png[1..4], b"PNG", "{}", shot.display());

    // A form found by its labels, sent by its button's text (the page
    // writes what it was sent).
    browser
        .goto(
            "data:text/html,<title>form</title>\
             <form onsubmit=\"document.getElementById('o').textContent = \
               'sent ' + this.name.value + ' ' + this.tel.value; return false\">\
             <label for=n>Display name</label><input id=n name=name>\
             <label>Telephone <input name=tel></label>\
             <button>Save it</button></form><p id=o></p>",
        )
        .await;
    browser.fill("Display name", "Jon Snow").await;
    browser.fill("Telephone", "555-0100").await;
    assert_eq!(browser.value("tel").await, "555-0100");
    browser.phone().await;
    browser.screenshot("harness-form-390").await;
    browser.desktop().await;
    browser.click("Save it").await;
    browser.wait_for_text("sent Jon Snow 555-0100").await;

    browser.close().await;
    assert_none_left(&scratch).await;

    // Dropping without close (a failing test) ends everything too.
    let browser = Browser::start().await;
    let scratch = browser.scratch().display().to_string();
    drop(browser);
    assert_none_left(&scratch).await;
}

/// The cookbook's sync sample running for real: slapd, idmd on the sample
/// project with `openidm-admin`, and the gateway in front.
struct Sample {
    slapd: Option<Slapd>,
    project: TempDir,
    idmd: Idmd,
    gateway: Gateway,
}

impl Sample {
    async fn sync() -> Self {
        let slapd = SlapdBuilder::default()
            .base_dn(BASE)
            .start()
            .unwrap_or_else(|e| panic!("a real slapd is needed for this test: {e}"));
        let project = wren_sample("sync");
        let idmd = Idmd::start_with(IdmdOptions {
            conf: Some(project.path().to_path_buf()),
            env: vec![
                ("IDM_ADMIN_PASSWORD".into(), ADMIN.into()),
                ("IDM_LDAP_HOST".into(), "127.0.0.1".into()),
                ("IDM_LDAP_PORT".into(), slapd.port().to_string()),
            ],
            ..IdmdOptions::default()
        })
        .await;
        let gateway = Gateway::start(&idmd).await;
        Sample {
            slapd: Some(slapd),
            project,
            idmd,
            gateway,
        }
    }

    /// The scheduler sample: its recon schedule imports `data/hr.csv`
    /// every 15 s (no directory).
    async fn scheduler() -> Self {
        let project = wren_sample("scheduler");
        let idmd = Idmd::start_with(IdmdOptions {
            conf: Some(project.path().join("conf")),
            env: vec![("IDM_ADMIN_PASSWORD".into(), ADMIN.into())],
            ..IdmdOptions::default()
        })
        .await;
        let gateway = Gateway::start(&idmd).await;
        Sample {
            slapd: None,
            project,
            idmd,
            gateway,
        }
    }

    /// `https://localhost:<port><path>`: the name the self-signed
    /// certificate carries, as the article's reader types it.
    fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.gateway.port)
    }

    fn hr_csv(&self) -> std::path::PathBuf {
        self.project.path().join("data/hr.csv")
    }

    /// What went wrong on the server side, for a failing step.
    fn logs(&self) -> String {
        format!(
            "--- idmd\n{}\n--- gateway\n{}",
            tail(&self.idmd.log()),
            tail(&self.gateway.log())
        )
    }
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// Signs in as openidm-admin from the page `path` (which sends the browser
/// to the login form first), and waits for `path`'s page.
async fn sign_in(browser: &Browser, sample: &Sample, path: &str, shot: &str) {
    browser.goto(&sample.url(path)).await;
    browser.wait_for_url("/admin/login").await;
    browser.wait_for_text("Sign in").await;
    browser.screenshot(shot).await;
    browser.fill("Username", ADMIN).await;
    browser.fill("Password", ADMIN).await;
    browser.click("Sign in").await;
    browser.wait_for_text("Sign out").await;
}

/// The rows of the page's main table (cells joined by spaces).
async fn rows(browser: &Browser) -> Vec<String> {
    browser.texts("main table tbody tr").await
}

/// Goes to Manage → User through the menu and waits for its table (or its
/// empty state).
async fn open_users(browser: &Browser) {
    browser.follow_in("#nav", "User").await;
    browser.wait_for_url("/admin/managed/user").await;
    browser.wait_for_heading("User").await;
}

/// Reloads Manage → User until `ready(rows)` (the scheduler's runs land in
/// the background; a person presses reload).
async fn users_until(
    browser: &Browser,
    sample: &Sample,
    what: &str,
    ready: impl Fn(&[String]) -> bool,
) -> Vec<String> {
    let deadline = Instant::now() + SCHEDULE_PATIENCE;
    loop {
        browser.goto(&sample.url("/admin/managed/user")).await;
        browser.wait_for_heading("User").await;
        let rows = rows(browser).await;
        if ready(&rows) {
            return rows;
        }
        assert!(
            Instant::now() < deadline,
            "Manage → User never showed {what}: {rows:#?}\n{}",
            sample.logs()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The cookbook's sync article in a browser: sign in, an empty user list,
/// Reconcile now with its progress, the imported users, search, an edit
/// that reaches LDAP, a policy failure next to its field, a plan that
/// changes nothing, and sign out.
#[tokio::test]
async fn the_sync_sample_in_a_real_browser() {
    let sample = Sample::sync().await;
    let slapd = sample.slapd.as_ref().unwrap();
    let mut browser = Browser::start().await;

    // Signing in.
    sign_in(&browser, &sample, "/admin/", "sync-01-login").await;
    browser.wait_for_heading("Dashboard").await;
    browser.screenshot("sync-02-dashboard").await;

    // Manage → User: nobody yet.
    open_users(&browser).await;
    let before = rows(&browser).await;
    assert!(
        before.iter().all(|r| !r.contains("Snow")),
        "users before any run: {before:#?}"
    );
    browser.screenshot("sync-03-users-empty").await;

    // Mappings → csvEmployee_managedUser → Reconcile now.
    browser.follow_in("#nav", "Mappings").await;
    browser.wait_for_heading("Mappings").await;
    browser.screenshot("sync-04-mappings").await;
    browser.follow("csvEmployee_managedUser").await;
    browser.wait_for_heading("csvEmployee_managedUser").await;
    browser.screenshot("sync-05-mapping").await;
    browser.click("Reconcile now").await;
    browser.wait_for_url("/admin/runs/").await;
    browser.wait_for_text("Progress").await;
    browser.screenshot("sync-06-run-progress").await;
    // Until the run ends with three CREATEs.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        // The live part's words, whatever the markup: "… Actions CREATE 3 …".
        let counts = browser.texts("#run-live").await.join(" ");
        let words: Vec<&str> = counts.split_whitespace().collect();
        let created = words.windows(2).any(|w| w == ["CREATE", "3"]);
        if created && words.contains(&"SUCCESS") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the run never showed 3 created: {counts}\n{}",
            sample.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    browser.screenshot("sync-07-run-done").await;
    browser.phone().await;
    browser.screenshot("sync-07-run-done-390").await;
    browser.desktop().await;

    // The list shows the three.
    open_users(&browser).await;
    let users = rows(&browser).await;
    for name in [["Jon", "Snow"], ["John", "Doe"], ["Jane", "Doe"]] {
        assert!(
            users
                .iter()
                .any(|r| r.contains(name[0]) && r.contains(name[1])),
            "{name:?} not listed: {users:#?}"
        );
    }
    assert_eq!(users.len(), 3, "{users:#?}");
    browser.screenshot("sync-08-users").await;
    browser.phone().await;
    browser.screenshot("sync-08-users-390").await;
    browser.desktop().await;

    // Search "snow": one.
    browser.fill("Search", "snow").await;
    browser.enter("Search").await;
    browser.wait_for_url("q=snow").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let found = loop {
        let found = rows(&browser).await;
        if found.len() == 1 || Instant::now() >= deadline {
            break found;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(found[0].contains("Snow"), "{found:#?}");
    browser.screenshot("sync-09-search-snow").await;

    // Jon's page, then Edit: a new telephone number reaches LDAP.
    browser
        .click_xpath("//main//table//tbody//tr[contains(., 'Snow')]//a")
        .await;
    browser.wait_for_url("/admin/managed/user/123").await;
    browser.wait_for_text("5551234").await;
    browser.screenshot("sync-10-user").await;
    browser.phone().await;
    browser.screenshot("sync-10-user-390").await;
    browser.desktop().await;
    browser.follow("Edit").await;
    browser.wait_for_url("/edit").await;
    assert_eq!(browser.value("telephoneNumber").await, "5551234");
    browser.screenshot("sync-11-edit").await;
    browser.fill("telephoneNumber", "5550100").await;
    browser.click("Save").await;
    browser.wait_for_text("5550100").await;
    let url = browser.url().await;
    assert!(!url.ends_with("/edit"), "still editing at {url}");
    browser.screenshot("sync-12-saved").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let entry = directory::account(slapd, "snow123");
        if entry
            .as_ref()
            .and_then(|e| e.get("telephoneNumber"))
            .is_some_and(|t| t == "5550100")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "LDAP never got the new number: {entry:?}\n{}",
            sample.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A policy failure shows next to its field: userName is required
    // (the form leaves the checking to the server: novalidate).
    browser.follow("Edit").await;
    browser.wait_for_url("/edit").await;
    browser.fill("userName", "").await;
    browser.click("Save").await;
    let message = field_problem(&browser, "userName").await;
    assert!(!message.is_empty(), "no message by userName");
    browser.screenshot("sync-13-policy-failure").await;
    browser.phone().await;
    browser.screenshot("sync-13-policy-failure-390").await;
    browser.desktop().await;
    let mut clients = sample.idmd.clients().await;
    let jon = managed_object(&mut clients, "user", "123").await.unwrap();
    assert_eq!(jon["userName"], "snow123", "{jon}");

    // Plan after editing hr.csv: Jane's new number, and nothing changed.
    let csv = std::fs::read_to_string(sample.hr_csv()).unwrap();
    std::fs::write(sample.hr_csv(), csv.replace("5558901", "5559999")).unwrap();
    browser
        .goto(&sample.url("/admin/mappings/csvEmployee_managedUser"))
        .await;
    browser.wait_for_heading("csvEmployee_managedUser").await;
    browser.follow("Plan").await;
    browser.wait_for_url("/plan").await;
    let plan = browser.wait_for_text("5559999").await;
    assert!(plan.contains("5558901"), "the old value too: {plan}");
    assert!(plan.contains("789"), "Jane's row: {plan}");
    let changes = browser.texts("main section.change").await;
    assert!(
        changes
            .iter()
            .any(|c| c.contains("789") && c.contains("5559999")),
        "{changes:#?}"
    );
    assert!(
        !changes.iter().any(|c| c.contains("456")),
        "John's row is unchanged: {changes:#?}"
    );
    browser.screenshot("sync-14-plan").await;
    browser.phone().await;
    browser.screenshot("sync-14-plan-390").await;
    browser.desktop().await;
    let jane = managed_object(&mut clients, "user", "789").await.unwrap();
    assert_eq!(
        jane["telephoneNumber"], "5558901",
        "the plan changed Jane: {jane}"
    );

    // The other rooms as they stand after all this.
    browser.follow_in("#nav", "Sync queue").await;
    browser.wait_for_heading("Sync queue").await;
    browser.screenshot("sync-15-sync-queue").await;
    browser.follow_in("#nav", "Audit").await;
    browser.wait_for_heading("Audit").await;
    browser.wait_for_text("openidm-admin").await;
    browser.screenshot("sync-16-audit").await;
    browser.phone().await;
    browser.screenshot("sync-16-audit-390").await;
    browser.desktop().await;
    browser.follow_in("#nav", "Accounts").await;
    browser.wait_for_heading("Accounts").await;
    browser.screenshot("sync-17-accounts").await;

    // The pages the journey above did not need, as a person finds them.
    for (path, heading, shot) in [
        ("/admin/managed/group", "Group", "sync-17a-groups"),
        ("/admin/managed/user/new", "New", "sync-17b-user-new"),
        (
            "/admin/managed/user/123/password",
            "Set the password of",
            "sync-17c-set-password",
        ),
        (
            "/admin/managed/user/123/delete",
            "Delete",
            "sync-17d-delete-confirm",
        ),
        ("/admin/tokens", "API tokens", "sync-17e-tokens"),
        (
            "/admin/mappings/managedUser_ldapAccount/plan",
            "Plan of managedUser_ldapAccount",
            "sync-17f-plan-ldap",
        ),
    ] {
        visit(&browser, &sample, path, heading, shot).await;
    }
    let plan = browser.text().await;
    assert!(plan.contains("CONFIRMED"), "every entry is in line: {plan}");

    // Sign out; the back button shows no data.
    sign_out_and_back(
        &browser,
        &["Jon", "Snow", "5559999", "5558901", "5550100"],
        "sync-18",
    )
    .await;
    browser.close().await;
}

/// Opens `path`, waits for a heading that starts with `heading`, and saves
/// the page.
async fn visit(browser: &Browser, sample: &Sample, path: &str, heading: &str, shot: &str) {
    browser.goto(&sample.url(path)).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let shown = browser.heading().await;
        if shown.starts_with(heading) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{path}: the heading is {shown:?}, not {heading:?}…:\n{}",
            browser.text().await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    browser.screenshot(shot).await;
}

/// Signs out, then presses Back: the browser shows the login page again,
/// not the page before (no-store), and none of `private`.
async fn sign_out_and_back(browser: &Browser, private: &[&str], shot: &str) {
    browser.click("Sign out").await;
    browser.wait_for_url("/admin/login").await;
    browser.wait_for_text("You are signed out").await;
    browser.screenshot(&format!("{shot}-signed-out")).await;
    browser.back().await;
    let page = browser
        .wait_until(
            "the login page after Back",
            Duration::from_secs(15),
            |page| page.contains("Sign in to the identity console"),
        )
        .await;
    let source = browser.source().await;
    for private in private {
        assert!(!page.contains(private), "{private} after sign-out: {page}");
        assert!(
            !source.contains(private),
            "{private} in the page source after sign-out: {source}"
        );
    }
    browser
        .screenshot(&format!("{shot}-back-after-sign-out"))
        .await;
}

/// Signing in shows the dashboard; signing out and pressing Back shows the
/// login form, not the dashboard (at 1280 and 390 px).
#[tokio::test]
async fn signing_in_and_out_in_a_real_browser() {
    let sample = Sample::scheduler().await;
    let mut browser = Browser::start().await;
    browser.phone().await;
    sign_in(&browser, &sample, "/admin/", "session-01-login-390").await;
    browser.wait_for_heading("Dashboard").await;
    browser.screenshot("session-02-dashboard-390").await;
    browser.desktop().await;
    let dashboard = browser.text().await;
    assert!(dashboard.contains("csvEmployee_managedUser"), "{dashboard}");
    sign_out_and_back(
        &browser,
        &["csvEmployee_managedUser", "Mappings"],
        "session-03",
    )
    .await;
    // And a page asked for directly sends the browser to sign in again.
    browser.goto(&sample.url("/admin/mappings")).await;
    browser.wait_for_url("/admin/login?next=").await;
    browser.close().await;
}

/// The problem shown next to the field named `name`: the text of the
/// elements its `aria-describedby` names that sit beside it (in the
/// field's own container).
async fn field_problem(browser: &Browser, name: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let found = browser
            .client
            .execute(
                "const f = document.querySelector(`main [name='${arguments[0]}']`); \
                 if (!f) return ''; \
                 const ids = (f.getAttribute('aria-describedby') || '').split(/\\s+/); \
                 const texts = ids.map(id => id && document.getElementById(id)) \
                   .filter(e => e && f.parentElement.contains(e)) \
                   .map(e => e.innerText.trim()); \
                 return texts.join(' ');",
                vec![serde_json::json!(name)],
            )
            .await
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        if !found.is_empty() {
            return found;
        }
        if Instant::now() >= deadline {
            panic!(
                "no problem described for the field {name} (aria-describedby) at {}:\n{}",
                browser.url().await,
                browser.text().await
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The scheduler sample: pause its recon schedule, append a row, see that
/// nothing is imported while paused, resume, and see the row as a user.
#[tokio::test]
async fn the_scheduler_sample_paused_and_resumed_in_a_real_browser() {
    let sample = Sample::scheduler().await;
    let browser = Browser::start().await;
    sign_in(&browser, &sample, "/admin/schedules", "schedule-01-login").await;
    browser.wait_for_heading("Schedules").await;
    browser.screenshot("schedule-02-schedules").await;

    // The schedule imports Jon within a period or two.
    users_until(&browser, &sample, "Jon Snow", |rows| {
        rows.iter().any(|r| r.contains("Snow"))
    })
    .await;
    browser.screenshot("schedule-03-users-jon").await;

    browser.follow_in("#nav", "Schedules").await;
    browser.wait_for_heading("Schedules").await;
    browser.follow("recon").await;
    browser.wait_for_heading("recon").await;
    browser.screenshot("schedule-04-recon").await;
    browser.click("Pause").await;
    browser.wait_for(".actions button").await;
    browser
        .wait_until("the schedule paused", Duration::from_secs(15), |page| {
            page.contains("paused")
        })
        .await;
    browser.screenshot("schedule-05-paused").await;

    // A row appended while paused stays out for more than a period.
    std::fs::OpenOptions::new()
        .append(true)
        .open(sample.hr_csv())
        .unwrap()
        .write_all(b"456,John,Doe,5554567\n")
        .unwrap();
    let mut clients = sample.idmd.clients().await;
    let quiet_until = Instant::now() + Duration::from_secs(17);
    while Instant::now() < quiet_until {
        assert!(
            managed_object(&mut clients, "user", "456").await.is_none(),
            "a paused schedule imported John\n{}",
            sample.logs()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    browser.click("Resume").await;
    browser
        .wait_until("the schedule active", Duration::from_secs(15), |page| {
            page.contains("active")
        })
        .await;
    browser.screenshot("schedule-06-resumed").await;
    users_until(&browser, &sample, "John Doe", |rows| {
        rows.iter().any(|r| r.contains("John") && r.contains("Doe"))
    })
    .await;
    browser.screenshot("schedule-07-users-john").await;
    browser.close().await;
}
