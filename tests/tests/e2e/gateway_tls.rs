//! Issue 13, item 3: the gateway serves HTTPS. Its own self-signed
//! certificate (made once, kept under `--data`, key 0600), your PEM files,
//! `--no-tls` behind a proxy whose `X-Forwarded-Proto` counts only from a
//! `--trusted-proxy`, and the gateway → core link over TLS.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use idm_tests::pki::TestCa;
use idm_tests::scim::{Gateway, GatewayOptions, GatewayTls, client_trusting, self_signed_cert};
use idm_tests::{Idmd, IdmdOptions, TempDir, TlsOptions, binary};
use serde_json::json;

use crate::scim::{USER, setup};

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn the_self_signed_certificate_is_made_once_and_kept_across_restarts() {
    let (idmd, mut gateway) = setup().await;
    let cert_path = self_signed_cert(&gateway.data);
    let key_path = gateway.data.join("tls").join("key.pem");
    assert_eq!(mode(&key_path), 0o600);
    assert_eq!(mode(&gateway.data.join("tls")), 0o700);
    let first = std::fs::read(&cert_path).unwrap();
    let log = gateway.log();
    assert!(log.contains("made a self-signed certificate"), "{log}");
    assert!(log.contains("fingerprint"), "{log}");
    let key = std::fs::read_to_string(&key_path).unwrap();
    for line in key.lines().filter(|l| !l.starts_with("-----")) {
        assert!(!log.contains(line), "the key is in the log");
    }

    // SCIM through it, with a client that trusts only that certificate.
    let created = gateway
        .post(
            "/Users",
            &json!({"schemas": [USER], "userName": "tls-alice"}),
        )
        .await
        .expect(201);
    let location = created.header("location").unwrap().to_string();
    assert!(
        location.starts_with(&format!(
            "https://127.0.0.1:{}/scim/v2/Users/",
            gateway.port
        )),
        "{location}"
    );
    assert_eq!(
        created.header("strict-transport-security"),
        Some("max-age=31536000")
    );
    // The certificate is also good for `localhost` (the cookbook's URL).
    let by_name = client_trusting(&first)
        .get(format!(
            "https://localhost:{}/scim/v2/ServiceProviderConfig",
            gateway.port
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(by_name.status(), 200);

    gateway.kill();
    let again = Gateway::start_opts(
        &idmd,
        GatewayOptions {
            data: Some(gateway.data.clone()),
            ..GatewayOptions::default()
        },
    )
    .await;
    assert_eq!(std::fs::read(&cert_path).unwrap(), first);
    let log = again.log();
    assert!(
        log.contains("serving the kept self-signed certificate"),
        "{log}"
    );
    let found = again
        .get("/Users?filter=userName%20eq%20%22tls-alice%22")
        .await
        .expect(200);
    assert_eq!(found.body["totalResults"], 1);
}

#[tokio::test]
async fn your_own_certificate_is_served_and_none_is_made() {
    let idmd = Idmd::start().await;
    let ca = TestCa::new("gateway test CA");
    let files = ca.write_issued(idmd.dir.path(), "gateway", &["localhost", "127.0.0.1"]);
    let gateway = Gateway::start_opts(
        &idmd,
        GatewayOptions {
            tls: GatewayTls::Own {
                cert: files.cert.clone(),
                key: files.key.clone(),
                ca_pem: ca.pem(),
            },
            ..GatewayOptions::default()
        },
    )
    .await;
    // The harness's client trusts only the CA.
    gateway
        .post("/Users", &json!({"schemas": [USER], "userName": "tls-bob"}))
        .await
        .expect(201);
    assert!(!self_signed_cert(&gateway.data).exists());
    assert!(gateway.log().contains("serving your certificate"));

    // And a gateway with its self-signed certificate does not pass for the CA's.
    let self_signed = Gateway::start(&idmd).await;
    let refused = client_trusting(ca.pem().as_bytes())
        .get(format!("{}/ServiceProviderConfig", self_signed.base))
        .send()
        .await;
    assert!(refused.is_err());
}

#[tokio::test]
async fn a_plain_http_request_to_the_tls_port_fails() {
    let (_idmd, gateway) = setup().await;
    let plain = reqwest::Client::new()
        .get(format!(
            "http://127.0.0.1:{}/scim/v2/ServiceProviderConfig",
            gateway.port
        ))
        .send()
        .await;
    assert!(plain.is_err(), "{plain:?}");
}

/// A gateway with `--no-tls` and these extra arguments.
async fn plain(idmd: &Idmd, args: &[&str]) -> Gateway {
    Gateway::start_opts(
        idmd,
        GatewayOptions {
            tls: GatewayTls::Plain,
            args: args.iter().map(|a| a.to_string()).collect(),
            ..GatewayOptions::default()
        },
    )
    .await
}

/// The `Location` of a user created with these extra headers.
async fn location(gateway: &Gateway, name: &str, headers: &[(&str, &str)]) -> String {
    let created = gateway
        .send(
            "POST",
            "/Users",
            Some(&json!({"schemas": [USER], "userName": name})),
            headers,
        )
        .await
        .expect(201);
    assert_eq!(created.header("strict-transport-security"), None);
    created.header("location").unwrap().to_string()
}

#[tokio::test]
async fn no_tls_serves_http_and_forwarded_proto_counts_only_from_a_trusted_proxy() {
    let idmd = Idmd::start().await;
    let forwarded = [("x-forwarded-proto", "https")];

    let behind_proxy = plain(&idmd, &["--trusted-proxy", "192.0.2.1,127.0.0.1"]).await;
    assert!(behind_proxy.base.starts_with("http://"));
    let authority = format!("127.0.0.1:{}", behind_proxy.port);
    assert!(
        location(&behind_proxy, "via-proxy", &forwarded)
            .await
            .starts_with(&format!("https://{authority}/scim/v2/Users/"))
    );
    assert!(
        location(&behind_proxy, "direct", &[])
            .await
            .starts_with(&format!("http://{authority}/scim/v2/Users/"))
    );

    // The header from a peer that is not a trusted proxy changes nothing.
    for args in [&[][..], &["--trusted-proxy", "10.0.0.0/8"][..]] {
        let open = plain(&idmd, args).await;
        let name = format!("untrusted-{}", open.port);
        assert!(
            location(&open, &name, &forwarded)
                .await
                .starts_with(&format!("http://127.0.0.1:{}/scim/v2/Users/", open.port))
        );
    }
}

/// Runs the gateway with these arguments and expects it to refuse to start.
fn refused(idmd: &Idmd, args: &[&str]) -> (i32, String) {
    let output = Command::new(binary("idm-gateway"))
        .args([
            "--core",
            &idmd.endpoint,
            "--listen",
            "127.0.0.1:0",
            "--data",
        ])
        .arg(idmd.dir.path().join("refused-data"))
        .args(args)
        .output()
        .unwrap();
    assert!(!output.status.success());
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn tls_flags_are_checked_at_start() {
    let idmd = Idmd::start().await;
    let ca = TestCa::new("flags CA");
    let files = ca.write_issued(idmd.dir.path(), "gw", &["localhost"]);
    let (cert, key) = (files.cert.to_str().unwrap(), files.key.to_str().unwrap());

    // Usage errors: one of the pair alone, or a pair with --no-tls.
    assert_eq!(refused(&idmd, &["--tls-cert", cert]).0, 2);
    assert_eq!(refused(&idmd, &["--tls-key", key]).0, 2);
    assert_eq!(
        refused(&idmd, &["--tls-cert", cert, "--tls-key", key, "--no-tls"]).0,
        2
    );

    // A missing file, or a key that is not one, is named; its bytes are not shown.
    let missing = idmd.dir.path().join("nowhere.crt");
    let (_, stderr) = refused(
        &idmd,
        &["--tls-cert", missing.to_str().unwrap(), "--tls-key", key],
    );
    assert!(stderr.contains("nowhere.crt"), "{stderr}");
    let garbled = idmd.dir.path().join("garbled.key");
    std::fs::write(&garbled, "s3cr3t-not-a-key").unwrap();
    let (_, stderr) = refused(
        &idmd,
        &["--tls-cert", cert, "--tls-key", garbled.to_str().unwrap()],
    );
    assert!(stderr.contains("garbled.key"), "{stderr}");
    assert!(!stderr.contains("s3cr3t"), "{stderr}");

    // Another certificate's key.
    let other = ca.write_issued(idmd.dir.path(), "other", &["localhost"]);
    let (_, stderr) = refused(
        &idmd,
        &["--tls-cert", cert, "--tls-key", other.key.to_str().unwrap()],
    );
    assert!(stderr.contains("do not go together"), "{stderr}");

    // --core-ca that cannot be read.
    let (_, stderr) = refused(&idmd, &["--no-tls", "--core-ca", missing.to_str().unwrap()]);
    assert!(
        stderr.contains("--core-ca") && stderr.contains("nowhere.crt"),
        "{stderr}"
    );
}

#[tokio::test]
async fn gateway_reaches_the_core_over_tls() {
    let pki = TempDir::new("core-pki");
    let ca = TestCa::new("core CA");
    let ca_file = ca.write_ca(pki.path());
    let idmd = Idmd::start_with(IdmdOptions {
        tls: Some(TlsOptions::issued_by(&ca, pki.path())),
        ..IdmdOptions::default()
    })
    .await;
    let port = idmd.endpoint.rsplit(':').next().unwrap().to_string();
    let core = format!("https://localhost:{port}");

    let gateway = Gateway::start_opts(
        &idmd,
        GatewayOptions {
            core: Some(core.clone()),
            args: vec!["--core-ca".into(), ca_file.display().to_string()],
            ..GatewayOptions::default()
        },
    )
    .await;
    let created = gateway
        .post(
            "/Users",
            &json!({"schemas": [USER], "userName": "over-tls"}),
        )
        .await
        .expect(201);
    let id = created.body["id"].as_str().unwrap();
    gateway.get(&format!("/Users/{id}")).await.expect(200);

    // Without the CA the core's certificate does not verify: 503, and the log
    // says why.
    let untrusting = Gateway::start_opts(
        &idmd,
        GatewayOptions {
            core: Some(core),
            ..GatewayOptions::default()
        },
    )
    .await;
    untrusting.get("/Users").await.expect_error(503, None);
    let log = untrusting.log();
    assert!(log.to_lowercase().contains("certificate"), "{log}");
}
