//! Prometheus metrics (`--metrics ADDR`) of idmd and the gateway: scraped
//! over HTTP, they move when the work they count happens (a recon, SCIM and
//! REST calls through the gateway, deliveries to a directory that is down, a
//! failed login, a schedule fire); their labels name routes, methods and
//! conf names, never a raw path; without `--metrics` nothing is served, and
//! an address in use stops the start.

use std::process::Command;
use std::time::{Duration, Instant};

use idm_proto::v1::{CreateScheduleRequest, LoginRequest, RunScheduleRequest, Schedule};
use idm_tests::scim::Gateway;
use idm_tests::{Idmd, IdmdOptions, attrs, binary, free_port, idm_conf};
use serde_json::json;

use crate::recon;

/// The text of `http://<addr>/metrics`.
async fn scrape(addr: &str) -> String {
    let response = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.text().await.unwrap()
}

/// The sum of the samples of `name` carrying every one of `labels`.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, rest) = match series.split_once('{') {
                Some((metric, rest)) => (metric, rest),
                None => (series, ""),
            };
            (metric == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\""))))
            .then(|| value.parse::<f64>().ok())
            .flatten()
        })
        .sum()
}

/// The TCP ports process `pid` listens on (Linux: its socket inodes
/// looked up among the LISTEN rows of /proc/net/tcp and tcp6).
fn listening_ports(pid: u32) -> Vec<u16> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter_map(|target| {
            let target = target.to_string_lossy().into_owned();
            Some(
                target
                    .strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .to_string(),
            )
        })
        .collect();
    let mut ports = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for row in text.lines().skip(1) {
            let fields: Vec<&str> = row.split_whitespace().collect();
            // local_address is field 1 (ADDR:PORT in hex), st field 3, inode field 9.
            if fields.len() > 9 && fields[3] == "0A" && inodes.iter().any(|i| i == fields[9]) {
                let port = fields[1].rsplit_once(':').unwrap().1;
                ports.push(u16::from_str_radix(port, 16).unwrap());
            }
        }
    }
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// Scrapes until `check` holds (the outbox gauges are sampled every few
/// seconds, deliveries retried in the background); panics with the last
/// scrape after `limit`.
async fn until(addr: &str, limit: Duration, what: &str, check: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + limit;
    loop {
        let text = scrape(addr).await;
        if check(&text) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{what} within {limit:?}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn idmd_and_gateway_metrics_move_with_the_work_they_count() {
    let conf = idm_conf("sync");
    let metrics = format!("127.0.0.1:{}", free_port());
    // The harness points the LDAP connector at port 9, which refuses:
    // implicit sync to managedUser_ldapAccount fails and retries.
    let idmd = Idmd::start_with(IdmdOptions {
        conf: Some(conf.path().to_path_buf()),
        extra_args: vec!["--metrics".into(), metrics.clone()],
        ..Default::default()
    })
    .await;
    assert!(
        idmd.log().contains(&format!(
            "serving Prometheus metrics at http://{metrics}/metrics"
        )),
        "{}",
        idmd.log()
    );
    let metrics_port: u16 = metrics.rsplit_once(':').unwrap().1.parse().unwrap();
    assert!(listening_ports(idmd.pid()).contains(&metrics_port));
    let before = scrape(&metrics).await;
    assert!(before.contains("# HELP idm_store_operation_duration_seconds"));
    assert!(before.contains("# TYPE idm_store_operation_duration_seconds histogram"));
    assert!(sample(&before, "idm_store_operation_duration_seconds_count", &[]) > 0.0);
    let mut c = idmd.clients().await;

    // A recon: its rows, situations, actions and run duration.
    let mapping = ("mapping", "csvEmployee_managedUser");
    let run = recon(&mut c, mapping.1).await;
    assert_eq!(run.state(), idm_proto::v1::recon_run::State::Success);
    let text = scrape(&metrics).await;
    assert_eq!(sample(&text, "idm_recon_rows_total", &[mapping]), 3.0);
    assert_eq!(
        sample(
            &text,
            "idm_recon_situations_total",
            &[mapping, ("situation", "ABSENT")]
        ),
        3.0
    );
    assert_eq!(
        sample(
            &text,
            "idm_recon_actions_total",
            &[mapping, ("action", "CREATE")]
        ),
        3.0
    );
    assert_eq!(
        sample(
            &text,
            "idm_recon_run_duration_seconds_count",
            &[mapping, ("state", "SUCCESS")]
        ),
        1.0
    );
    assert!(text.contains("idm_recon_run_duration_seconds_bucket{"));
    assert_eq!(
        sample(
            &text,
            "idm_grpc_requests_total",
            &[("method", "idm.v1.ReconService/StartRecon"), ("code", "OK")]
        ),
        1.0
    );
    assert!(
        sample(
            &text,
            "idm_grpc_request_duration_seconds_count",
            &[("method", "idm.v1.ReconService/StartRecon")]
        ) >= 1.0
    );

    // A server stream is counted once it has ended: a watch of the finished
    // run (its final snapshot, then the end) and one of no run at all.
    let mut stream = crate::watch(&mut c, &run.name).await.unwrap();
    while stream.message().await.unwrap().is_some() {}
    let missing = crate::watch(&mut c, "recon/no-such-run").await;
    crate::expect_code(missing.map(|_| ()), tonic::Code::NotFound);
    let text = scrape(&metrics).await;
    let watch = ("method", "idm.v1.ReconService/WatchRecon");
    assert_eq!(
        sample(&text, "idm_grpc_requests_total", &[watch, ("code", "OK")]),
        1.0,
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "idm_grpc_requests_total",
            &[watch, ("code", "NOT_FOUND")]
        ),
        1.0
    );
    assert_eq!(
        sample(
            &text,
            "idm_grpc_requests_total",
            &[watch, ("code", "CANCELLED")]
        ),
        0.0
    );

    // The three new users wait for a directory that is down.
    let ldap = ("mapping", "managedUser_ldapAccount");
    let text = until(
        &metrics,
        Duration::from_secs(30),
        "failed deliveries and a pending queue",
        |text| {
            sample(
                text,
                "idm_outbox_deliveries_total",
                &[ldap, ("outcome", "retry")],
            ) >= 3.0
                && sample(text, "idm_outbox_pending", &[ldap]) >= 3.0
        },
    )
    .await;
    assert_eq!(
        sample(
            &text,
            "idm_outbox_deliveries_total",
            &[ldap, ("outcome", "delivered")]
        ),
        0.0
    );
    assert_eq!(sample(&text, "idm_outbox_failed", &[ldap]), 0.0);
    assert!(sample(&text, "idm_outbox_oldest_pending_age_seconds", &[ldap]) >= 0.0);
    assert!(
        text.contains("idm_outbox_oldest_pending_age_seconds{mapping=\"managedUser_ldapAccount\"}")
    );

    // The recon gave the three users the mapping's default password, sealed;
    // the background hasher writes their hashes, and the queue empties.
    until(
        &metrics,
        Duration::from_secs(60),
        "the three passwords hashed",
        |text| {
            sample(text, "idm_password_hashes_total", &[]) >= 3.0
                && text.contains("\nidm_password_hashes_pending ")
                && sample(text, "idm_password_hashes_pending", &[]) == 0.0
        },
    )
    .await;
    assert!(
        sample(
            &text,
            "idm_ldap_errors_total",
            &[("connector", "ldap"), ("operation", "connect")]
        ) >= 1.0
    );
    assert!(
        sample(
            &text,
            "idm_ldap_operation_duration_seconds_count",
            &[("connector", "ldap")]
        ) >= 1.0
    );

    // A failed login, over gRPC; its name is no label.
    let failed = c
        .auth
        .login(LoginRequest {
            username: "mallory-the-guesser".into(),
            password: "not-the-password".into(),
            client_address: String::new(),
        })
        .await;
    assert!(failed.is_err());
    let text = scrape(&metrics).await;
    assert_eq!(
        sample(&text, "idm_logins_total", &[("outcome", "failed")]),
        1.0
    );
    assert_eq!(
        sample(
            &text,
            "idm_grpc_requests_total",
            &[
                ("method", "idm.v1.AuthService/Login"),
                ("code", "UNAUTHENTICATED")
            ]
        ),
        1.0,
        "{}",
        text.lines()
            .filter(|l| l.contains("AuthService"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(!text.contains("mallory"));

    // A schedule fire.
    c.schedules
        .create_schedule(CreateScheduleRequest {
            schedule_id: "nightly".into(),
            schedule: Some(Schedule {
                enabled: true,
                r#type: "cron".into(),
                schedule: "0 0 3 * * ?".into(),
                invoke_service: "script".into(),
                invoke_context: attrs(
                    json!({"script": {"type": "text/javascript", "source": "'ok'"}}),
                ),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    c.schedules
        .run_schedule(RunScheduleRequest {
            name: "schedules/nightly".into(),
        })
        .await
        .unwrap();
    until(
        &metrics,
        Duration::from_secs(20),
        "a schedule fire",
        |text| {
            sample(
                text,
                "idm_schedule_fires_total",
                &[("schedule", "nightly"), ("outcome", "SUCCESS")],
            ) >= 1.0
        },
    )
    .await;

    // Through the gateway: HTTP by route template; gRPC in the core.
    let gateway_metrics = format!("127.0.0.1:{}", free_port());
    let gateway = Gateway::start_with(&idmd, &["--metrics", &gateway_metrics]).await;
    let gateway_metrics_port: u16 = gateway_metrics.rsplit_once(':').unwrap().1.parse().unwrap();
    assert_eq!(listening_ports(gateway.pid()), {
        let mut both = vec![gateway.port, gateway_metrics_port];
        both.sort_unstable();
        both
    });
    assert!(gateway.log().contains(&format!(
        "serving Prometheus metrics at http://{gateway_metrics}/metrics"
    )));
    let core_before = scrape(&metrics).await;
    let object_calls = |text: &str| -> f64 {
        text.lines()
            .filter(|l| {
                l.starts_with("idm_grpc_requests_total{")
                    && l.contains("method=\"idm.v1.ObjectService/")
            })
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum()
    };
    gateway.get("/Users").await.expect(200);
    gateway.get("/Users/123").await.expect(200);
    gateway.get("/Users/no-such-user-4711").await.expect(404);
    let outside = gateway
        .client()
        .get(format!(
            "https://127.0.0.1:{}/secret-probe-path",
            gateway.port
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(outside.status(), 404);
    gateway.get("/Bulk").await.expect(405);
    // Wren's REST API, nested under /openidm: a wrong password is a failed
    // login in the core.
    let rest_login = gateway
        .client()
        .get(format!(
            "https://127.0.0.1:{}/openidm/info/login",
            gateway.port
        ))
        .header("X-OpenIDM-Username", "openidm-admin")
        .header("X-OpenIDM-Password", "wrong-password")
        .send()
        .await
        .unwrap();
    assert_eq!(rest_login.status(), 401);
    // The load balancer's probe counts under its own route, not `unmatched`.
    let health = gateway
        .client()
        .get(format!("https://127.0.0.1:{}/health", gateway.port))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);

    let http = scrape(&gateway_metrics).await;
    assert!(http.contains("# HELP idm_http_requests_total"));
    let users = ("route", "/scim/v2/{resource}");
    let user = ("route", "/scim/v2/{resource}/{id}");
    assert_eq!(
        sample(
            &http,
            "idm_http_requests_total",
            &[users, ("status", "200")]
        ),
        1.0
    );
    assert_eq!(
        sample(&http, "idm_http_requests_total", &[user, ("status", "200")]),
        1.0
    );
    assert_eq!(
        sample(&http, "idm_http_requests_total", &[user, ("status", "404")]),
        1.0
    );
    assert_eq!(
        sample(
            &http,
            "idm_http_requests_total",
            &[("route", "unmatched"), ("status", "404")]
        ),
        1.0
    );
    assert_eq!(
        sample(
            &http,
            "idm_http_requests_total",
            &[("route", "/openidm/info/login"), ("status", "401")]
        ),
        1.0,
        "{http}"
    );
    assert_eq!(
        sample(
            &http,
            "idm_http_requests_total",
            &[("route", "/scim/v2/Bulk"), ("status", "405")]
        ),
        1.0
    );
    assert_eq!(
        sample(
            &http,
            "idm_http_requests_total",
            &[("route", "/health"), ("status", "200")]
        ),
        1.0,
        "{http}"
    );
    assert!(sample(&http, "idm_http_request_duration_seconds_count", &[user]) >= 2.0);
    assert!(http.contains("idm_http_request_duration_seconds_bucket{"));
    // Never a raw path or an id.
    for raw in ["secret-probe-path", "no-such-user-4711", "/Users", "123"] {
        assert!(
            !http.lines().filter(|l| !l.starts_with('#')).any(|l| l
                .split_once(' ')
                .is_some_and(|(series, _)| series.contains(raw))),
            "{raw} in\n{http}"
        );
    }

    let core_after = scrape(&metrics).await;
    assert!(
        object_calls(&core_after) >= object_calls(&core_before) + 3.0,
        "{core_after}"
    );
    assert_eq!(
        sample(&core_after, "idm_logins_total", &[("outcome", "failed")]),
        2.0
    );
}

#[tokio::test]
async fn without_metrics_nothing_is_served_and_a_port_in_use_stops_the_start() {
    let idmd = Idmd::start().await;
    let gateway = Gateway::start(&idmd).await;
    assert!(!idmd.log().contains("Prometheus"), "{}", idmd.log());
    assert!(!gateway.log().contains("Prometheus"), "{}", gateway.log());
    // Each listens on its own port only.
    let grpc: u16 = idmd.endpoint.rsplit_once(':').unwrap().1.parse().unwrap();
    assert_eq!(listening_ports(idmd.pid()), vec![grpc]);
    assert_eq!(listening_ports(gateway.pid()), vec![gateway.port]);

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let log = Idmd::start_failure(IdmdOptions {
        extra_args: vec!["--metrics".into(), addr.clone()],
        ..Default::default()
    })
    .await;
    assert!(log.contains(&format!("--metrics {addr}: ")), "{log}");

    let gateway = Command::new(binary("idm-gateway"))
        .args(["--core", &idmd.endpoint, "--no-tls", "--listen"])
        .arg(format!("127.0.0.1:{}", free_port()))
        .args(["--metrics", &addr])
        .output()
        .unwrap();
    assert!(!gateway.status.success());
    let stderr = String::from_utf8_lossy(&gateway.stderr);
    assert!(stderr.contains(&format!("--metrics {addr}: ")), "{stderr}");

    let bad = Command::new(binary("idmd"))
        .args(["--metrics", "not-an-address"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(stderr.contains("--metrics"), "{stderr}");
}
