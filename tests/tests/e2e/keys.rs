//! The encryption key: idmd refuses a store sealed under another key (or a
//! lost key file), `idmctl keys rotate` re-seals everything so passwords
//! still verify and still provision to a real directory, across a restart;
//! and argon2's memory stays bounded under a burst of password writes.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use idm_proto::v1::CreateObjectRequest;
use idm_tests::directory::{self, Slapd};
use idm_tests::{Idmd, IdmdOptions, TempDir, attrs, binary, free_port, idm_conf};
use serde_json::{Value, json};

use crate::ldap::{eventually, ldap_env};
use crate::{create_user, password_valid, recon};

const USERS: &str = "managedUser_ldapAccount";

/// An embedded store and a key file that outlive one idmd.
struct Site {
    dir: TempDir,
}

impl Site {
    fn new() -> Self {
        Site {
            dir: TempDir::new("keys"),
        }
    }
    fn store(&self) -> String {
        format!("surrealkv://{}", self.dir.path().join("db").display())
    }
    fn key_file(&self) -> PathBuf {
        self.dir.path().join("idm.key")
    }
    fn options(&self) -> IdmdOptions {
        IdmdOptions {
            store: Some(self.store()),
            key_file: Some(self.key_file()),
            ..Default::default()
        }
    }
}

fn random_key() -> String {
    base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>())
}

/// Runs an idmd that is expected to refuse to start; its exit status and log.
fn refused_start(store: &str, key_file: &Path, env_key: Option<&str>) -> (ExitStatus, String) {
    let scratch = TempDir::new("refused");
    let log_path = scratch.path().join("idmd.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut command = Command::new(binary("idmd"));
    command
        .arg("--store")
        .arg(store)
        .arg("--grpc")
        .arg(format!("127.0.0.1:{}", free_port()))
        .arg("--key-file")
        .arg(key_file)
        .env("IDM_ADMIN_TOKEN", "t")
        .env_remove("IDM_ENCRYPTION_KEY")
        .env_remove("IDM_CONF")
        .stdout(Stdio::null())
        .stderr(log);
    if let Some(key) = env_key {
        command.env("IDM_ENCRYPTION_KEY", key);
    }
    let mut child = command.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "idmd kept running:\n{}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (status, std::fs::read_to_string(&log_path).unwrap())
}

async fn start(options: IdmdOptions, admin_token: &str) -> Idmd {
    Idmd::spawn(
        options,
        TempDir::new("idmd"),
        admin_token.into(),
        String::new(),
    )
    .await
    .unwrap_or_else(|log| panic!("idmd did not start:\n{log}"))
}

fn key_on_disk(site: &Site) -> String {
    std::fs::read_to_string(site.key_file())
        .unwrap()
        .trim()
        .to_string()
}

fn idmctl_json(idmd: &Idmd, args: &[&str]) -> Value {
    let mut all = vec!["--output", "json"];
    all.extend_from_slice(args);
    let out = idmd.idmctl(&all);
    assert!(
        out.status.success(),
        "idmctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test]
async fn idmd_refuses_a_store_sealed_under_another_key() {
    let site = Site::new();
    let mut first = Idmd::start_with(site.options()).await;
    let mut c = first.clients().await;
    create_user(
        &mut c,
        "kim",
        json!({ "userName": "kim", "sn": "Kim", "password": "Sealed-1" }),
    )
    .await;
    let fingerprint = idmctl_json(&first, &["keys", "show"])["fingerprint"]
        .as_str()
        .unwrap()
        .to_string();
    let token = first.admin_token.clone();
    drop(c);
    assert!(first.terminate().success());
    let original = key_on_disk(&site);

    // Another key from the environment.
    let other = random_key();
    let (status, log) = refused_start(&site.store(), &site.key_file(), Some(&other));
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(
        log.contains("is not the key this store's secrets are sealed under"),
        "{log}"
    );
    assert!(log.contains(&fingerprint), "names the expected key: {log}");
    assert!(log.contains("IDM_ENCRYPTION_KEY"), "{log}");
    assert!(log.contains("idmctl keys rotate"), "{log}");
    assert!(!log.contains(&other) && !log.contains(&original), "{log}");

    // Another key file.
    let elsewhere = site.dir.path().join("other.key");
    std::fs::write(&elsewhere, format!("{}\n", random_key())).unwrap();
    let (status, log) = refused_start(&site.store(), &elsewhere, None);
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("other.key"), "says which key it got: {log}");

    // The right key still works, and nothing was lost.
    let again = start(site.options(), &token).await;
    let mut c = again.clients().await;
    assert!(password_valid(&mut c, "kim", "Sealed-1").await);
}

#[tokio::test]
async fn a_lost_key_file_is_not_replaced_by_a_new_one() {
    let site = Site::new();
    let mut first = Idmd::start_with(site.options()).await;
    let mut c = first.clients().await;
    create_user(
        &mut c,
        "lee",
        json!({ "userName": "lee", "sn": "Lee", "password": "Sealed-2" }),
    )
    .await;
    drop(c);
    assert!(first.terminate().success());
    std::fs::remove_file(site.key_file()).unwrap();

    let (status, log) = refused_start(&site.store(), &site.key_file(), None);
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("is missing"), "{log}");
    assert!(log.contains("Restore the key file"), "{log}");
    assert!(!site.key_file().exists(), "no new key file was created");
}

#[tokio::test]
async fn a_key_from_the_environment_is_not_rotated_and_idmd_says_how() {
    let idmd = Idmd::start().await;
    let out = idmd.idmctl(&["keys", "rotate"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("FAILED_PRECONDITION"), "{stderr}");
    assert!(stderr.contains("key file"), "{stderr}");
    assert!(!stderr.contains(&idmd.encryption_key), "{stderr}");
    let shown = idmctl_json(&idmd, &["keys", "show"]);
    assert_eq!(shown["source"], "IDM_ENCRYPTION_KEY");
    assert!(!shown.to_string().contains(&idmd.encryption_key));
}

#[tokio::test]
async fn rotated_passwords_still_verify_and_provision_across_a_restart() {
    let slapd = Slapd::start().unwrap_or_else(|e| panic!("a real slapd is needed: {e}"));
    let conf = idm_conf("sync");
    let site = Site::new();
    let options = IdmdOptions {
        conf: Some(conf.path().to_path_buf()),
        env: ldap_env(&slapd),
        ..site.options()
    };
    let mut first = Idmd::start_with(options.clone()).await;
    let mut c = first.clients().await;
    for (uid, password) in [("rot1", "Before-Rotation-1"), ("rot2", "Before-Rotation-2")] {
        create_user(
            &mut c,
            uid,
            json!({ "userName": uid, "sn": "Rot", "password": password }),
        )
        .await;
    }
    let entry = eventually("rot1 in the directory", || {
        directory::account(&slapd, "rot1")
    })
    .await;
    eventually("rot1's password", || {
        directory::can_bind(&slapd, &entry.dn, "Before-Rotation-1").then_some(())
    })
    .await;
    let old_key = key_on_disk(&site);

    let rotated = idmctl_json(&first, &["keys", "rotate"]);
    assert_eq!(rotated["credentialsResealed"], 2, "{rotated}");
    assert_eq!(rotated["unreadable"], 0, "{rotated}");
    let new_key = key_on_disk(&site);
    assert_ne!(new_key, old_key, "the key file holds the new key");
    assert!(
        !rotated.to_string().contains(&new_key),
        "no key material in replies"
    );
    assert_eq!(
        idmctl_json(&first, &["keys", "show"])["fingerprint"],
        rotated["fingerprint"]
    );
    assert!(password_valid(&mut c, "rot1", "Before-Rotation-1").await);
    let audited = c
        .audit
        .query_audit(idm_proto::v1::QueryAuditRequest {
            filter: r#"operation eq "key.rotate""#.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(audited.entries.len(), 1, "{audited:?}");
    let entry_seen = &audited.entries[0];
    assert_eq!(entry_seen.object, "keys/encryption");
    assert_eq!(entry_seen.outcome, "success");
    assert_eq!(entry_seen.actor, "bootstrap");
    assert!(
        entry_seen
            .detail
            .contains(rotated["fingerprint"].as_str().unwrap())
    );
    assert!(
        !format!("{audited:?}").contains(&new_key),
        "no key material in the audit"
    );

    // The directory loses the entry; a reconciliation puts it back with the
    // password opened from its copy sealed under the new key.
    directory::delete(&slapd, &entry.dn);
    let run = recon(&mut c, USERS).await;
    assert_eq!(run.state, 3, "SUCCESS: {run:?}");
    assert!(directory::can_bind(&slapd, &entry.dn, "Before-Rotation-1"));
    // A password set after the rotation reaches the directory too.
    create_user(
        &mut c,
        "rot3",
        json!({ "userName": "rot3", "sn": "Rot", "password": "After-Rotation-3" }),
    )
    .await;
    let third = eventually("rot3 in the directory", || {
        directory::account(&slapd, "rot3")
    })
    .await;
    eventually("rot3's password", || {
        directory::can_bind(&slapd, &third.dn, "After-Rotation-3").then_some(())
    })
    .await;

    // Restarted on the rotated key file: starts, verifies, provisions.
    let token = first.admin_token.clone();
    drop(c);
    assert!(first.terminate().success());
    let second = start(options, &token).await;
    let mut c = second.clients().await;
    assert!(password_valid(&mut c, "rot2", "Before-Rotation-2").await);
    let rot2 = directory::account(&slapd, "rot2").unwrap();
    directory::delete(&slapd, &rot2.dn);
    let run = recon(&mut c, USERS).await;
    assert_eq!(run.state, 3, "SUCCESS: {run:?}");
    assert!(directory::can_bind(&slapd, &rot2.dn, "Before-Rotation-2"));

    // And the old key is no longer accepted by this store.
    drop(c);
    drop(second);
    let old_file = site.dir.path().join("old.key");
    std::fs::write(&old_file, format!("{old_key}\n")).unwrap();
    let (status, log) = refused_start(&site.store(), &old_file, None);
    assert_eq!(status.code(), Some(1), "{log}");
}

/// VmHWM (peak resident set) of a process, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmHWM in {status}"))
}

/// 200 concurrent password creates, then 200 concurrent checks of those
/// passwords: every argon2 verification waits for a permit of the one
/// process-wide semaphore and works in a pooled buffer, so the burst costs a
/// few buffers, not 200 of 19 MiB.
#[tokio::test]
async fn two_hundred_concurrent_password_creates_and_checks_stay_under_300_mib() {
    const USERS: usize = 200;
    const LIMIT_KIB: u64 = 300 * 1024;
    let idmd = Idmd::start().await;
    let before = peak_rss_kib(idmd.pid());
    // Several connections, so the burst is not serialised by one HTTP/2
    // connection's stream limit.
    let mut connections = Vec::new();
    for _ in 0..8 {
        connections.push(idmd.clients().await);
    }
    let mut creates = Vec::new();
    for n in 0..USERS {
        let mut objects = connections[n % 8].objects.clone();
        creates.push(tokio::spawn(async move {
            objects
                .create_object(CreateObjectRequest {
                    parent: "managed/user".into(),
                    object_id: format!("burst{n}"),
                    attributes: attrs(json!({
                        "userName": format!("burst{n}"),
                        "sn": "Burst",
                        "password": format!("Burst-Password-{n}")
                    })),
                })
                .await
        }));
    }
    for task in creates {
        task.await.unwrap().unwrap();
    }
    let after_creates = peak_rss_kib(idmd.pid());

    // Four login front ends (verify-password tokens), each within its
    // per-caller allowance of attempts in flight.
    let mut front_ends = Vec::new();
    for _ in 0..4 {
        let secret = connections[0]
            .tokens
            .create_token(idm_proto::v1::CreateTokenRequest {
                scope: idm_proto::v1::Scope::VerifyPassword.into(),
                description: "login front end".into(),
                ttl: None,
            })
            .await
            .unwrap()
            .into_inner()
            .secret;
        front_ends.push(idmd.clients_with(Some(secret)).await);
    }
    let mut checks = Vec::new();
    for n in 0..USERS {
        let mut objects = front_ends[n % 4].objects.clone();
        checks.push(tokio::spawn(async move {
            objects
                .verify_password(idm_proto::v1::VerifyPasswordRequest {
                    name: format!("managed/user/burst{n}"),
                    property: String::new(),
                    password: format!("Burst-Password-{n}"),
                })
                .await
                .map(|r| r.into_inner().valid)
        }));
    }
    for (n, task) in checks.into_iter().enumerate() {
        assert!(task.await.unwrap().unwrap(), "burst{n}'s password");
    }
    let peak = peak_rss_kib(idmd.pid());
    eprintln!(
        "idmd peak RSS {} MiB before, {} MiB after {USERS} concurrent creates, {} MiB after {USERS} concurrent checks",
        before / 1024,
        after_creates / 1024,
        peak / 1024
    );
    assert!(
        peak < LIMIT_KIB,
        "peak RSS {} MiB (before the bursts {} MiB, after the creates {} MiB), limit 300 MiB",
        peak / 1024,
        before / 1024,
        after_creates / 1024
    );
}
