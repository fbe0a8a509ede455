//! The console in a real browser: Debian's chromium, headless, driven
//! through chromedriver (`idm_tests::browser`), against real idmd and
//! idm-gateway processes. Each page visited is saved as a screenshot under
//! `$CARGO_TARGET_DIR/console-screenshots/`.

use std::process::Command;
use std::time::{Duration, Instant};

use idm_tests::Idmd;
use idm_tests::browser::Browser;
use idm_tests::scim::Gateway;

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
