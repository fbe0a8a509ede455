//! idmctl login / whoami / logout and accounts, as a person runs them: no
//! token in the environment, the session kept in the config directory.

use idm_proto::v1::SetAccountPasswordRequest;
use idm_tests::TempDir;
use tonic::Code;

use super::{ADMIN_PASSWORD, assert_never_shown, can_read, idmd_with};
use crate::expect_code;

#[tokio::test]
async fn idmctl_logs_in_keeps_the_session_private_and_logs_out() {
    use std::os::unix::fs::PermissionsExt;
    let idmd = idmd_with(&[], &[("IDM_ADMIN_PASSWORD", ADMIN_PASSWORD)]).await;
    let home = TempDir::new("home");
    let config = home.path().join("config");
    let home_path = home.path().to_str().unwrap().to_string();
    let config_path = config.to_str().unwrap().to_string();
    let env = [
        ("HOME", home_path.as_str()),
        ("XDG_CONFIG_HOME", config_path.as_str()),
    ];
    let run = |args: &[&str], stdin: Option<&str>| {
        let out = idmd.idmctl_env(args, &env, stdin);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let mut printed = String::new();

    let (ok, _, err) = run(&["login", "openidm-admin"], Some("wrong-password\n"));
    assert!(!ok);
    assert!(
        err.contains("UNAUTHENTICATED: invalid username or password"),
        "{err}"
    );
    printed.push_str(&err);

    let (ok, out, err) = run(
        &["login", "openidm-admin"],
        Some(&format!("{ADMIN_PASSWORD}\n")),
    );
    assert!(ok, "{err}");
    assert!(
        out.contains("logged in") && out.contains("openidm-admin"),
        "{out}"
    );
    printed.push_str(&out);
    printed.push_str(&err);
    let file = config.join("idm").join("session.json");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let dir_mode = std::fs::metadata(config.join("idm"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(dir_mode, 0o700);
    let kept: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(kept["endpoint"], idmd.endpoint.as_str());
    assert_eq!(kept["username"], "openidm-admin");
    assert!(kept["token"].as_str().unwrap().starts_with("idm_"));

    // Later commands use the stored session.
    let (ok, out, err) = run(&["whoami"], None);
    assert!(
        ok && out.contains("openidm-admin") && out.contains("session"),
        "{out}{err}"
    );
    let (ok, _, err) = run(
        &["accounts", "create", "alice", "--role", "read"],
        Some("Alice-Pass-1\n"),
    );
    assert!(ok, "{err}");
    let (ok, _, err) = run(
        &["accounts", "create", "bob", "--role", "read"],
        Some("short\n"),
    );
    assert!(!ok && err.contains("at least 8 characters"), "{err}");
    printed.push_str(&err);
    let (ok, out, err) = run(&["accounts", "list"], None);
    assert!(
        ok && out.contains("alice") && out.contains("openidm-admin"),
        "{out}{err}"
    );
    printed.push_str(&out);
    let (ok, out, _) = run(&["--output", "json", "accounts", "list"], None);
    let listed: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(ok);
    assert_eq!(listed["result"][0]["id"], "alice");
    assert_eq!(listed["result"][0]["role"], "read");
    let (ok, out, _) = run(&["accounts", "disable", "alice"], None);
    assert!(ok && out.contains("\"enabled\": false"), "{out}");
    let (ok, out, _) = run(
        &["accounts", "set-password", "alice"],
        Some("Alice-Pass-2\n"),
    );
    assert!(ok, "{out}");
    let (ok, out, _) = run(&["accounts", "show", "alice"], None);
    assert!(ok && out.contains("internal/user/alice"), "{out}");
    printed.push_str(&out);

    // Logout ends the session and deletes the file; then nothing is stored.
    let session_token = kept["token"].as_str().unwrap().to_string();
    let (ok, out, err) = run(&["logout"], None);
    assert!(ok && out.contains("logged out"), "{out}{err}");
    assert!(err.contains("removed"), "{err}");
    assert!(!file.exists());
    let mut gone = idmd.clients_with(Some(session_token)).await;
    expect_code(can_read(&mut gone).await, Code::Unauthenticated);
    let (ok, _, err) = run(&["whoami"], None);
    assert!(!ok && err.contains("idmctl login"), "{err}");
    let (ok, _, err) = run(&["logout"], None);
    assert!(ok && err.contains("not logged in"), "{err}");

    // A session that ended already: logout still removes the file.
    let (ok, _, err) = run(
        &["login", "openidm-admin"],
        Some(&format!("{ADMIN_PASSWORD}\n")),
    );
    assert!(ok, "{err}");
    let mut admin = idmd.clients().await;
    admin
        .accounts
        .set_account_password(SetAccountPasswordRequest {
            name: "openidm-admin".into(),
            password: "Another-Pass-2".into(),
        })
        .await
        .unwrap();
    let (ok, _, err) = run(&["accounts", "list"], None);
    assert!(!ok && err.contains("run `idmctl login` again"), "{err}");
    let (ok, out, err) = run(&["logout"], None);
    assert!(ok && out.contains("already ended"), "{out}{err}");
    assert!(!file.exists());

    for password in [
        ADMIN_PASSWORD,
        "Alice-Pass-1",
        "Alice-Pass-2",
        "Another-Pass-2",
        "wrong-password",
    ] {
        assert!(!printed.contains(password), "{password} printed");
    }
    assert_never_shown(
        &idmd,
        &[
            ADMIN_PASSWORD,
            "Alice-Pass-1",
            "Alice-Pass-2",
            "Another-Pass-2",
        ],
    )
    .await;
}
