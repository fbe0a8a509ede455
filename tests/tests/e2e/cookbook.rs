//! The Wren:IDM cookbook's sync article as its reader types it: the sample
//! project as written, `openidm-admin` from `IDM_ADMIN_PASSWORD`, the
//! article's `curl -k -u openidm-admin:openidm-admin -XPOST …recon…` against
//! the gateway (only the port differs), then the article's `ldapsearch` and an
//! `ldapwhoami` as the imported `snow123`.

use std::process::Command;
use std::time::{Duration, Instant};

use idm_testkit::SlapdBuilder;
use idm_tests::directory::Slapd;
use idm_tests::scim::Gateway;
use idm_tests::{Idmd, IdmdOptions, wren_sample};
use serde_json::Value;

const BASE: &str = "dc=wrensecurity,dc=org";

fn curl(args: &[&str]) -> (bool, String) {
    let output = Command::new("curl")
        .args(args)
        .output()
        .expect("curl is installed (.ci/run installs it)");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

fn ldap(tool: &str, slapd: &Slapd, args: &[&str]) -> (bool, String) {
    let url = format!("ldap://127.0.0.1:{}", slapd.port());
    let output = Command::new(tool)
        .args(["-H", &url, "-x"])
        .args(args)
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

#[tokio::test]
async fn the_cookbook_curl_command_imports_the_hr_file_into_ldap() {
    let slapd = SlapdBuilder::default()
        .base_dn(BASE)
        .start()
        .unwrap_or_else(|e| panic!("a real slapd is needed for this test: {e}"));
    let project = wren_sample("sync");
    let idmd = Idmd::start_with(IdmdOptions {
        conf: Some(project.path().to_path_buf()),
        env: vec![
            ("IDM_ADMIN_PASSWORD".into(), "openidm-admin".into()),
            ("IDM_LDAP_HOST".into(), "127.0.0.1".into()),
            ("IDM_LDAP_PORT".into(), slapd.port().to_string()),
        ],
        ..IdmdOptions::default()
    })
    .await;
    let gateway = Gateway::start(&idmd).await;
    let port = gateway.port;

    // The article's command; its URL only moves from 8443 to the test's port.
    let url = format!(
        "https://localhost:{port}/openidm/recon?_action=recon&mapping=csvEmployee_managedUser"
    );
    let (ok, reply) = curl(&["-k", "-u", "openidm-admin:openidm-admin", "-XPOST", &url]);
    assert!(ok, "curl failed: {reply}\n{}", gateway.log());
    let started: Value = serde_json::from_str(&reply).unwrap_or_else(|_| panic!("{reply}"));
    let id = started["_id"].as_str().unwrap_or_else(|| panic!("{reply}"));

    // The run and implicit sync finish in the background; the reader waits
    // a moment and refreshes. Here: until the directory answers for snow123.
    let status_url = format!("https://localhost:{port}/openidm/recon/{id}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, summary) = curl(&["-sk", "-u", "openidm-admin:openidm-admin", &status_url]);
        let summary: Value = serde_json::from_str(&summary).unwrap_or(Value::Null);
        let finished = summary["state"] == "SUCCESS";
        let (bound, _) = ldap(
            "ldapwhoami",
            &slapd,
            &["-D", &format!("uid=snow123,{BASE}"), "-w", "FooBar123"],
        );
        if finished && bound {
            assert_eq!(summary["mapping"], "csvEmployee_managedUser", "{summary}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "snow123 never reached the directory: {summary}\n{}",
            idmd.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let (ok, entries) = ldap(
        "ldapsearch",
        &slapd,
        &[
            "-D",
            &format!("cn=admin,{BASE}"),
            "-w",
            "admin",
            "-b",
            BASE,
            "(objectClass=inetOrgPerson)",
        ],
    );
    assert!(ok, "{entries}");
    for uid in ["snow123", "doe456", "doe789"] {
        assert!(entries.contains(&format!("uid: {uid}")), "{uid}: {entries}");
    }
    // Wrong credentials get Wren's 401, not a recon.
    let (_, refused) = curl(&["-sk", "-u", "openidm-admin:wrong", "-XPOST", &url]);
    let refused: Value = serde_json::from_str(&refused).unwrap_or(Value::Null);
    assert_eq!(refused["code"], 401, "{refused}");
}
