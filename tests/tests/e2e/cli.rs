use idm_tests::Idmd;

fn stdout(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test]
async fn the_cli_tour_works_against_a_real_server() {
    let idmd = Idmd::start().await;
    let created = idmd.idmctl(&[
        "objects", "create", "managed/user", "--data",
        r#"{"_id": "snow123", "userName": "snow123", "givenName": "Jon", "sn": "Snow", "password": "FooBar123"}"#,
    ]);
    assert!(created.status.success(), "{}", stderr(&created));
    let object: serde_json::Value = serde_json::from_str(&stdout(&created)).unwrap();
    assert_eq!(
        (object["_id"].as_str(), object["_rev"].as_str()),
        (Some("snow123"), Some("1")),
        "Wren's JSON form"
    );
    assert!(object.get("password").is_none());

    let patched = idmd.idmctl(&[
        "objects",
        "patch",
        "managed/user/snow123",
        "--data",
        r#"[{"operation":"replace","field":"/sn","value":"Stark"}]"#,
    ]);
    assert!(patched.status.success(), "{}", stderr(&patched));
    assert!(stdout(&patched).contains("Stark"));

    let table = idmd.idmctl(&[
        "objects",
        "query",
        "managed/user",
        "--filter",
        r#"sn eq "Stark""#,
        "--sort",
        "userName",
    ]);
    assert!(table.status.success(), "{}", stderr(&table));
    assert!(
        stdout(&table).contains("snow123") && stdout(&table).contains("Stark"),
        "{}",
        stdout(&table)
    );

    let json = idmd.idmctl(&["--output", "json", "objects", "query", "managed/user"]);
    let listed: serde_json::Value = serde_json::from_str(&stdout(&json)).unwrap();
    assert_eq!(listed["result"][0]["_id"], "snow123");
    assert_eq!(listed["totalSize"], 1);

    let valid = idmd.idmctl_with(
        &idmd.admin_token,
        &["objects", "verify-password", "managed/user/snow123"],
        Some("FooBar123\n"),
    );
    assert!(valid.status.success(), "{}", stderr(&valid));

    let audit = idmd.idmctl(&["audit", "query", "--filter", r#"operation eq "patch""#]);
    assert!(
        audit.status.success() && stdout(&audit).contains("managed/user/snow123"),
        "{}",
        stdout(&audit)
    );

    let deleted = idmd.idmctl(&["objects", "delete", "managed/user/snow123"]);
    assert!(deleted.status.success(), "{}", stderr(&deleted));
}

#[tokio::test]
async fn cli_errors_go_to_stderr_with_a_failing_exit_code() {
    let idmd = Idmd::start().await;
    let bad_filter = idmd.idmctl(&[
        "objects",
        "query",
        "managed/user",
        "--filter",
        "userName equals 1",
    ]);
    assert!(!bad_filter.status.success());
    assert!(stdout(&bad_filter).is_empty());
    assert!(
        stderr(&bad_filter).contains("INVALID_ARGUMENT")
            && stderr(&bad_filter).contains("position 9"),
        "{}",
        stderr(&bad_filter)
    );

    let missing = idmd.idmctl(&["objects", "get", "managed/user/nobody"]);
    assert!(
        !missing.status.success() && stderr(&missing).contains("NOT_FOUND"),
        "{}",
        stderr(&missing)
    );

    let unauthenticated =
        idmd.idmctl_with("wrong", &["objects", "get", "managed/user/nobody"], None);
    assert!(
        stderr(&unauthenticated).contains("UNAUTHENTICATED"),
        "{}",
        stderr(&unauthenticated)
    );
}

#[tokio::test]
async fn tokens_made_with_the_cli_work_with_their_scope() {
    let idmd = Idmd::start().await;
    let created = idmd.idmctl(&[
        "--output",
        "json",
        "tokens",
        "create",
        "--scope",
        "read",
        "--description",
        "dashboards",
    ]);
    assert!(created.status.success(), "{}", stderr(&created));
    let body: serde_json::Value = serde_json::from_str(&stdout(&created)).unwrap();
    let secret = body["secret"].as_str().unwrap().to_string();
    let read = idmd.idmctl_with(&secret, &["objects", "query", "managed/user"], None);
    assert!(read.status.success(), "{}", stderr(&read));
    let write = idmd.idmctl_with(
        &secret,
        &[
            "objects",
            "create",
            "managed/user",
            "--data",
            r#"{"userName": "x"}"#,
        ],
        None,
    );
    assert!(
        !write.status.success() && stderr(&write).contains("PERMISSION_DENIED"),
        "{}",
        stderr(&write)
    );
    let listed = idmd.idmctl(&["tokens", "list"]);
    assert!(stdout(&listed).contains("dashboards") && !stdout(&listed).contains(&secret));
    let completions = idmd.idmctl(&["completions", "bash"]);
    assert!(completions.status.success() && stdout(&completions).contains("idmctl"));
}
