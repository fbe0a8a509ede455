//! gRPC over TLS: idmd with a test CA's certificate, clients that trust the
//! CA (and those that do not), the loopback rule for plaintext, the start-up
//! errors, and the warnings about LDAP connectors that expose their password.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use idm_proto::json::to_proto_struct;
use idm_proto::v1::{Connector, PutConnectorRequest};
use idm_tests::pki::TestCa;
use idm_tests::{Idmd, IdmdOptions, TempDir, TlsOptions, binary, free_port};
use serde_json::{Value, json};

use crate::create_user;

/// An idmd serving TLS with a certificate for `localhost` and `127.0.0.1`
/// from a fresh CA; the scratch directory holds the CA as `ca.pem`.
async fn tls_idmd() -> (Idmd, TempDir) {
    let ca = TestCa::new("idm test CA");
    let files = TempDir::new("tls");
    ca.write_ca(files.path());
    let idmd = Idmd::start_with(IdmdOptions {
        tls: Some(TlsOptions::issued_by(&ca, files.path())),
        ..Default::default()
    })
    .await;
    (idmd, files)
}

/// Runs idmctl with exactly these arguments and environment (no `--ca` added).
fn idmctl(idmd: &Idmd, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(binary("idmctl"))
        .args(args)
        .env("IDM_TOKEN", &idmd.admin_token)
        .env_remove("IDM_CA")
        .env_remove("IDM_ENDPOINT")
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn port_of(endpoint: &str) -> &str {
    endpoint.rsplit(':').next().unwrap()
}

#[tokio::test]
async fn grpc_and_idmctl_work_over_tls_with_the_ca() {
    let (idmd, files) = tls_idmd().await;
    assert!(idmd.endpoint.starts_with("https://localhost:"));
    assert!(
        idmd.log().contains("gRPC over TLS"),
        "start-up should say TLS is on:\n{}",
        idmd.log()
    );
    let mut clients = idmd.clients().await;
    create_user(
        &mut clients,
        "tls-alice",
        json!({"userName": "tls-alice", "givenName": "Alice", "sn": "Tls", "mail": "a@example.com"}),
    )
    .await;

    // --ca (the harness passes it)
    let read = idmd.idmctl(&["objects", "get", "managed/user/tls-alice"]);
    assert!(read.status.success(), "{}", stderr(&read));
    assert!(String::from_utf8_lossy(&read.stdout).contains("Alice"));

    // IDM_CA
    let ca = files.path().join("ca.pem");
    let whoami = idmctl(
        &idmd,
        &["--endpoint", &idmd.endpoint, "tokens", "whoami"],
        &[("IDM_CA", ca.to_str().unwrap())],
    );
    assert!(whoami.status.success(), "{}", stderr(&whoami));
}

#[tokio::test]
async fn idmctl_without_the_ca_names_the_endpoint_and_the_verification_error() {
    let (idmd, _files) = tls_idmd().await;
    let refused = idmctl(
        &idmd,
        &["--endpoint", &idmd.endpoint, "tokens", "whoami"],
        &[],
    );
    assert_eq!(refused.status.code(), Some(1), "{}", stderr(&refused));
    let message = stderr(&refused);
    assert!(message.contains(&idmd.endpoint), "{message}");
    assert!(
        message.contains("invalid peer certificate: UnknownIssuer"),
        "{message}"
    );
    assert!(message.contains("--ca FILE or set IDM_CA"), "{message}");
    assert!(!message.contains("transport error\n"), "{message}");
}

#[tokio::test]
async fn an_unreadable_ca_file_is_a_usage_error() {
    let (idmd, files) = tls_idmd().await;
    let missing = files.path().join("no-such-ca.pem");
    let refused = idmctl(
        &idmd,
        &[
            "--endpoint",
            &idmd.endpoint,
            "--ca",
            missing.to_str().unwrap(),
            "tokens",
            "whoami",
        ],
        &[],
    );
    assert_eq!(refused.status.code(), Some(2), "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("no-such-ca.pem"),
        "{}",
        stderr(&refused)
    );
}

#[tokio::test]
async fn a_certificate_for_another_name_fails_verification() {
    let ca = TestCa::new("idm test CA");
    let files = TempDir::new("tls");
    let ca_file = ca.write_ca(files.path());
    // Valid for localhost (the harness dials it) and other.example, not 127.0.0.1.
    let issued = ca.write_issued(files.path(), "idmd", &["localhost", "other.example"]);
    let idmd = Idmd::start_with(IdmdOptions {
        tls: Some(TlsOptions {
            cert: issued.cert,
            key: issued.key,
            ca_pem: ca.pem(),
        }),
        ..Default::default()
    })
    .await;
    let by_address = format!("https://127.0.0.1:{}", port_of(&idmd.endpoint));
    let refused = idmctl(
        &idmd,
        &[
            "--endpoint",
            &by_address,
            "--ca",
            ca_file.to_str().unwrap(),
            "tokens",
            "whoami",
        ],
        &[],
    );
    assert_eq!(refused.status.code(), Some(1), "{}", stderr(&refused));
    let message = stderr(&refused);
    assert!(message.contains(&by_address), "{message}");
    assert!(
        message.contains("certificate not valid for name \"127.0.0.1\""),
        "{message}"
    );
    assert!(
        message.contains("use a name it was issued for"),
        "{message}"
    );
}

#[tokio::test]
async fn a_plaintext_client_is_refused_on_the_tls_port() {
    let (idmd, _files) = tls_idmd().await;
    let plain = format!("http://127.0.0.1:{}", port_of(&idmd.endpoint));
    // The TCP connection opens; the first call fails (no gRPC over clear text).
    let answered = async {
        let channel = idm_proto::dial::endpoint(&plain, None)
            .unwrap()
            .connect()
            .await?;
        let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
        health
            .check(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            })
            .await
            .map_err(|status| -> Box<dyn std::error::Error> { Box::new(status) })?;
        Ok::<(), Box<dyn std::error::Error>>(())
    };
    let outcome = tokio::time::timeout(Duration::from_secs(15), answered)
        .await
        .expect("a plaintext call to the TLS port should fail, not hang");
    assert!(
        outcome.is_err(),
        "a plaintext call to the TLS port succeeded"
    );
    // idmctl says so too.
    let refused = idmctl(&idmd, &["--endpoint", &plain, "tokens", "whoami"], &[]);
    assert_eq!(refused.status.code(), Some(1), "{}", stderr(&refused));
}

#[tokio::test]
async fn reflection_over_tls_lists_health_and_the_idm_services() {
    let (idmd, _files) = tls_idmd().await;
    let names = idmd.reflected_services().await;
    for service in ["grpc.health.v1.Health", "idm.v1.ObjectService"] {
        assert!(
            names.contains(&service.to_string()),
            "{service} missing from {names:?}"
        );
    }
}

/// Runs idmd to its exit (it is expected to refuse to start).
fn idmd_refusing(args: &[&str], scratch: &TempDir) -> Output {
    Command::new(binary("idmd"))
        .args(args)
        .arg("--key-file")
        .arg(scratch.path().join("idm.key"))
        .env_remove("IDM_TLS_CERT")
        .env_remove("IDM_TLS_KEY")
        .env_remove("IDM_ALLOW_PLAINTEXT")
        .env_remove("IDM_GRPC")
        .output()
        .unwrap()
}

#[tokio::test]
async fn plaintext_on_a_non_loopback_address_needs_allow_plaintext() {
    let scratch = TempDir::new("tls");
    let store = scratch.path().join("store");
    let grpc = format!("0.0.0.0:{}", free_port());
    let refused = idmd_refusing(
        &[
            "--grpc",
            &grpc,
            "--store",
            &format!("surrealkv://{}", store.display()),
        ],
        &scratch,
    );
    assert_eq!(refused.status.code(), Some(1), "{}", stderr(&refused));
    let message = stderr(&refused);
    assert!(message.contains(&grpc), "{message}");
    assert!(message.contains("--tls-cert"), "{message}");
    assert!(message.contains("--allow-plaintext"), "{message}");
    assert!(!store.exists(), "the store was opened before the refusal");

    let idmd = Idmd::start_with(IdmdOptions {
        bind: Some([0, 0, 0, 0].into()),
        extra_args: vec!["--allow-plaintext".into()],
        ..Default::default()
    })
    .await;
    assert!(idmd.health().await.is_ok());
    assert!(
        idmd.log().contains("--allow-plaintext"),
        "a warning about plaintext is expected:\n{}",
        idmd.log()
    );
}

#[tokio::test]
async fn bad_tls_files_stop_the_start_naming_the_file() {
    let ca = TestCa::new("idm test CA");
    let scratch = TempDir::new("tls");
    let issued = ca.write_issued(scratch.path(), "idmd", &["localhost"]);
    let missing_key = scratch.path().join("missing.key");
    let cert = issued.cert.to_str().unwrap();
    let grpc = format!("127.0.0.1:{}", free_port());
    let base = ["--grpc", grpc.as_str(), "--store", "mem://"];

    let unreadable = idmd_refusing(
        &[
            &base[..],
            &[
                "--tls-cert",
                cert,
                "--tls-key",
                missing_key.to_str().unwrap(),
            ],
        ]
        .concat(),
        &scratch,
    );
    assert_eq!(unreadable.status.code(), Some(1), "{}", stderr(&unreadable));
    assert!(
        stderr(&unreadable).contains("missing.key"),
        "{}",
        stderr(&unreadable)
    );

    // A key that is not this certificate's: named, contents never shown.
    let other = ca.write_issued(scratch.path(), "other", &["localhost"]);
    let key_text = std::fs::read_to_string(&other.key).unwrap();
    let mismatched = idmd_refusing(
        &[
            &base[..],
            &["--tls-cert", cert, "--tls-key", other.key.to_str().unwrap()],
        ]
        .concat(),
        &scratch,
    );
    assert_eq!(mismatched.status.code(), Some(1), "{}", stderr(&mismatched));
    let message = stderr(&mismatched);
    assert!(message.contains("other.key"), "{message}");
    let key_body = key_text.lines().nth(1).unwrap();
    assert!(!message.contains(key_body), "{message}");

    // One without the other is a usage error.
    let half = idmd_refusing(&[&base[..], &["--tls-cert", cert]].concat(), &scratch);
    assert_eq!(half.status.code(), Some(2), "{}", stderr(&half));
    assert!(stderr(&half).contains("--tls-key"), "{}", stderr(&half));
}

async fn put_ldap_connector(idmd: &Idmd, name: &str, settings: Value) {
    let mut body = json!({
        "connectorType": "ldap",
        "baseDn": "dc=example,dc=org",
        "bindDn": "cn=admin,dc=example,dc=org",
        "bindPassword": "s3cr3t-bind-pw",
        "objectTypes": {"account": {"namingAttribute": "uid", "objectClasses": ["inetOrgPerson"]}}
    });
    for (key, value) in settings.as_object().unwrap() {
        body[key] = value.clone();
    }
    let mut clients = idmd.clients().await;
    clients
        .config
        .put_connector(PutConnectorRequest {
            connector: Some(Connector {
                name: format!("connectors/{name}"),
                connector_type: String::new(),
                configuration: Some(to_proto_struct(body.as_object().unwrap())),
            }),
        })
        .await
        .unwrap_or_else(|e| panic!("put {name}: {e}"));
}

fn warnings_about(log: &str, connector: &str, what: &str) -> usize {
    log.lines()
        .filter(|line| line.contains("WARN") && line.contains(what))
        .filter(|line| line.contains(&format!("connector=\"{connector}\"")))
        .count()
}

#[tokio::test]
async fn ldap_connectors_that_expose_their_password_are_warned_about_once() {
    let idmd = Idmd::start().await;
    const CLEAR: &str = "over plain ldap:// to a non-loopback host";
    const UNVERIFIED: &str = "\"tlsVerify\": false";
    put_ldap_connector(&idmd, "remote", json!({"url": "ldap://ldap.example.org"})).await;
    put_ldap_connector(&idmd, "remote", json!({"url": "ldap://ldap.example.org"})).await;
    put_ldap_connector(&idmd, "local", json!({"url": "ldap://127.0.0.1:9"})).await;
    put_ldap_connector(
        &idmd,
        "secured",
        json!({"url": "ldap://ldap.example.org", "startTls": true}),
    )
    .await;
    put_ldap_connector(
        &idmd,
        "lab",
        json!({"url": "ldaps://ldap.example.org", "tlsVerify": false}),
    )
    .await;

    let deadline = Instant::now() + Duration::from_secs(10);
    let log = loop {
        let log = idmd.log();
        if warnings_about(&log, "lab", UNVERIFIED) > 0 || Instant::now() > deadline {
            break log;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(warnings_about(&log, "remote", CLEAR), 1, "{log}");
    assert_eq!(warnings_about(&log, "lab", UNVERIFIED), 1, "{log}");
    for quiet in ["local", "secured"] {
        assert_eq!(
            log.lines()
                .filter(|l| l.contains("WARN") && l.contains(&format!("connector=\"{quiet}\"")))
                .count(),
            0,
            "{log}"
        );
    }
    assert!(!log.contains("s3cr3t-bind-pw"), "{log}");
}

#[tokio::test]
async fn an_ldap_connector_in_the_conf_directory_is_warned_about_at_start() {
    let conf = TempDir::new("tls-conf");
    std::fs::write(
        conf.path().join("connector-directory.json"),
        json!({
            "connectorType": "ldap",
            "url": "ldap://ldap.example.org:389",
            "baseDn": "dc=example,dc=org",
            "bindDn": "cn=admin,dc=example,dc=org",
            "bindPassword": {"$env": "IDM_TEST_BIND_PASSWORD"},
            "objectTypes": {"account": {"namingAttribute": "uid", "objectClasses": ["inetOrgPerson"]}}
        })
        .to_string(),
    )
    .unwrap();
    let idmd = Idmd::start_with(IdmdOptions {
        conf: Some(conf.path().to_path_buf()),
        env: vec![("IDM_TEST_BIND_PASSWORD".into(), "s3cr3t-env-pw".into())],
        ..Default::default()
    })
    .await;
    let log = idmd.log();
    assert_eq!(
        warnings_about(
            &log,
            "directory",
            "over plain ldap:// to a non-loopback host"
        ),
        1,
        "{log}"
    );
    assert!(!log.contains("s3cr3t-env-pw"), "{log}");
}
