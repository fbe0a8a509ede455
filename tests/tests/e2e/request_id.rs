//! Request ids: one id follows a call from the client through the gateway
//! (echoed on its response, on its log line) to idmd (its log line) and the
//! audit entries of what the call wrote. A client's id is kept only if it is
//! short and plain; otherwise, or without one, a fresh UUIDv7 is used. At
//! info level neither log holds a filter value, a user name, a mail address
//! or an object id.

use idm_proto::v1::{
    AuditEntry, CreateObjectRequest, CreateTokenRequest, QueryAuditRequest, Scope,
};
use idm_tests::scim::{Gateway, GatewayOptions};
use idm_tests::{Clients, Idmd, IdmdOptions, attrs};
use serde_json::{Value, json};

use crate::scim::barbara;

/// Both processes at info, logging JSON.
async fn start_json_at_info() -> (Idmd, Gateway) {
    let idmd = Idmd::start_with(IdmdOptions {
        extra_args: vec!["--log-format".into(), "json".into()],
        env: vec![("RUST_LOG".into(), "info".into())],
        ..IdmdOptions::default()
    })
    .await;
    let gateway = Gateway::start_opts(
        &idmd,
        GatewayOptions {
            args: vec!["--log-format".into(), "json".into()],
            env: vec![("RUST_LOG".into(), "info".into())],
            ..GatewayOptions::default()
        },
    )
    .await;
    (idmd, gateway)
}

/// Every line of a JSON log, parsed (a line that is not JSON fails the test).
fn json_lines(log: &str) -> Vec<Value> {
    log.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"))
        })
        .collect()
}

/// The lines logged within a span whose `request_id` is `id`.
fn lines_of(lines: &[Value], id: &str) -> Vec<Value> {
    lines
        .iter()
        .filter(|line| {
            line["span"]["request_id"] == id
                || line["spans"]
                    .as_array()
                    .is_some_and(|spans| spans.iter().any(|s| s["request_id"] == id))
        })
        .cloned()
        .collect()
}

/// `xxxxxxxx-xxxx-7xxx-xxxx-xxxxxxxxxxxx`, lower-case hex.
fn is_uuid_v7(id: &str) -> bool {
    let bytes = id.as_bytes();
    id.len() == 36
        && [8, 13, 18, 23].iter().all(|&i| bytes[i] == b'-')
        && bytes[14] == b'7'
        && id
            .bytes()
            .enumerate()
            .all(|(i, b)| [8, 13, 18, 23].contains(&i) || b.is_ascii_hexdigit())
}

async fn audit_of(clients: &mut Clients, request_id: &str) -> Vec<AuditEntry> {
    clients
        .audit
        .query_audit(QueryAuditRequest {
            filter: format!("requestId eq \"{request_id}\""),
            ..QueryAuditRequest::default()
        })
        .await
        .unwrap()
        .into_inner()
        .entries
}

#[tokio::test]
async fn a_scim_write_carries_its_request_id_through_both_logs_into_the_audit() {
    let (idmd, gateway) = start_json_at_info().await;
    let created = gateway
        .send(
            "POST",
            "/Users",
            Some(&barbara()),
            &[("X-Request-Id", "abc-123")],
        )
        .await
        .expect(201);
    assert_eq!(created.header("x-request-id"), Some("abc-123"));
    let user_id = created.body["id"].as_str().unwrap().to_string();

    // A search by a filter value, and a read by id.
    let filter = "userName eq \"filter-needle-42\"";
    let searched = gateway
        .send(
            "GET",
            &format!(
                "/Users?filter={}",
                filter.replace(' ', "%20").replace('"', "%22")
            ),
            None,
            &[("X-Request-Id", "search-1")],
        )
        .await
        .expect(200);
    assert_eq!(searched.body["totalResults"], 0);
    assert_eq!(searched.header("x-request-id"), Some("search-1"));
    gateway
        .send("GET", &format!("/Users/{user_id}"), None, &[])
        .await
        .expect(200);

    // The write's audit entry, queried over gRPC, names the request.
    let mut clients = idmd.clients().await;
    let entries = audit_of(&mut clients, "abc-123").await;
    assert!(
        entries
            .iter()
            .any(|e| e.operation == "create" && e.object == format!("managed/user/{user_id}")),
        "{entries:?}"
    );
    assert!(entries.iter().all(|e| e.request_id == "abc-123"));

    // The gateway's line for the request, and idmd's for the gRPC calls it
    // made, carry the id; every line of both logs is JSON.
    let gateway_lines = json_lines(&gateway.log());
    let idmd_lines = json_lines(&idmd.log());
    let at_gateway = lines_of(&gateway_lines, "abc-123");
    assert!(
        at_gateway
            .iter()
            .any(|l| l["level"] == "INFO" && l["fields"]["status"] == 201),
        "no gateway line for abc-123:\n{}",
        gateway.log()
    );
    let at_idmd = lines_of(&idmd_lines, "abc-123");
    assert!(
        at_idmd.iter().any(|l| l["level"] == "INFO"
            && l["span"]["path"] == "/idm.v1.ObjectService/CreateObject"
            && l["fields"]["code"] == "OK"),
        "no idmd line for abc-123:\n{}",
        idmd.log()
    );
    assert!(!lines_of(&idmd_lines, "search-1").is_empty());

    // At info, neither log holds the filter's value, the user's name, mail
    // addresses, password or object id.
    for (name, log) in [("idm-gateway", gateway.log()), ("idmd", idmd.log())] {
        for secret in [
            "filter-needle-42",
            "bjensen",
            "babs@jensen.org",
            "t1meMa$heen",
            user_id.as_str(),
        ] {
            assert!(!log.contains(secret), "{name}'s log holds {secret}:\n{log}");
        }
    }
}

#[tokio::test]
async fn a_bad_or_missing_request_id_is_replaced_by_a_fresh_uuid_v7() {
    let (idmd, gateway) = start_json_at_info().await;
    let too_long = "x".repeat(65);
    for bad in [too_long.as_str(), "bad id", "a/b", "semi;colon"] {
        let reply = gateway
            .send("GET", "/Users", None, &[("X-Request-Id", bad)])
            .await
            .expect(200);
        let echoed = reply.header("x-request-id").unwrap();
        assert!(is_uuid_v7(echoed), "{bad:?} → {echoed}");
    }
    let sixty_four = "y".repeat(64);
    let reply = gateway
        .send("GET", "/Users", None, &[("X-Request-Id", &sixty_four)])
        .await;
    assert_eq!(reply.header("x-request-id"), Some(sixty_four.as_str()));

    // Without one: every response has one, errors and 401s included, each
    // its own.
    let plain = gateway.get("/Users").await.expect(200);
    let unauthorized = gateway.send_as(None, "GET", "/Users", None, &[]).await;
    assert_eq!(unauthorized.status, 401);
    let missing = gateway.get("/Users/no-such-user").await.expect(404);
    let wrong_route = gateway.get("/Nothing/here/at/all").await;
    let ids: Vec<&str> = [&plain, &unauthorized, &missing, &wrong_route]
        .iter()
        .map(|r| r.header("x-request-id").unwrap())
        .collect();
    assert!(ids.iter().all(|id| is_uuid_v7(id)), "{ids:?}");
    assert!(ids.windows(2).all(|w| w[0] != w[1]), "{ids:?}");
    let unauthorized_with = gateway
        .send_as(None, "GET", "/Users", None, &[("X-Request-Id", "who-1")])
        .await;
    assert_eq!(unauthorized_with.header("x-request-id"), Some("who-1"));

    // Wren's REST API, the console and paths outside every router too.
    let origin = gateway.base.trim_end_matches("/scim/v2");
    for path in [
        "/openidm/info/ping",
        "/openidm/managed/user",
        "/admin/login",
        "/elsewhere",
    ] {
        let response = gateway
            .client()
            .get(format!("{origin}{path}"))
            .header("X-Request-Id", "front-1")
            .send()
            .await
            .unwrap();
        assert_eq!(
            response
                .headers()
                .get("x-request-id")
                .and_then(|v| v.to_str().ok()),
            Some("front-1"),
            "{path}: {}",
            response.status()
        );
    }

    // The fresh id made for a bad one is the one the core records.
    let created = gateway
        .send(
            "POST",
            "/Users",
            Some(&barbara()),
            &[("X-Request-Id", "not valid!")],
        )
        .await
        .expect(201);
    let made = created.header("x-request-id").unwrap();
    assert!(is_uuid_v7(made), "{made}");
    let entries = audit_of(&mut idmd.clients().await, made).await;
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0].operation, "create");
}

#[tokio::test]
async fn grpc_callers_name_their_calls_with_x_request_id_metadata() {
    let idmd = Idmd::start().await;
    let mut clients = idmd.clients().await;

    // An admin action and a managed write, each with the caller's id.
    let mut request = tonic::Request::new(CreateTokenRequest {
        scope: Scope::Read.into(),
        description: "with an id".into(),
        ttl: None,
    });
    request
        .metadata_mut()
        .insert("x-request-id", "grpc-token-1".parse().unwrap());
    clients.tokens.create_token(request).await.unwrap();
    let entries = audit_of(&mut clients, "grpc-token-1").await;
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0].operation, "token.create");

    let mut request = tonic::Request::new(CreateObjectRequest {
        parent: "managed/user".into(),
        object_id: "grpc-user".into(),
        attributes: attrs(json!({"userName": "grpc-user"})),
    });
    request
        .metadata_mut()
        .insert("x-request-id", "grpc-write-1".parse().unwrap());
    clients.objects.create_object(request).await.unwrap();
    let entries = audit_of(&mut clients, "grpc-write-1").await;
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(
        (entries[0].operation.as_str(), entries[0].object.as_str()),
        ("create", "managed/user/grpc-user")
    );

    // An id that is not plain is replaced; a call without one gets one.
    let mut request = tonic::Request::new(CreateTokenRequest {
        scope: Scope::Read.into(),
        description: "bad id".into(),
        ttl: None,
    });
    request
        .metadata_mut()
        .insert("x-request-id", "bad id here".parse().unwrap());
    clients.tokens.create_token(request).await.unwrap();
    assert!(audit_of(&mut clients, "bad id here").await.is_empty());
    let newest = clients
        .audit
        .query_audit(QueryAuditRequest {
            filter: "operation eq \"token.create\"".into(),
            page_size: 1,
            ..QueryAuditRequest::default()
        })
        .await
        .unwrap()
        .into_inner()
        .entries;
    assert!(is_uuid_v7(&newest[0].request_id), "{newest:?}");
    assert!(
        idmd.log()
            .contains(&format!("request_id={}", newest[0].request_id))
            || idmd.log().contains(&newest[0].request_id),
        "{}",
        idmd.log()
    );
}

#[tokio::test]
async fn directory_work_at_info_names_no_person() {
    let mut slapd = crate::ldap::slapd();
    let conf = idm_tests::idm_conf("sync");
    let mut env = crate::ldap::ldap_env(&slapd);
    env.push(("RUST_LOG".into(), "info".into()));
    let idmd = Idmd::start_with(IdmdOptions {
        conf: Some(conf.path().to_path_buf()),
        env,
        ..IdmdOptions::default()
    })
    .await;
    let mut c = idmd.clients().await;
    // Users from the CSV file reach the directory (adds), one changes (a
    // read and a modify by uid), and a reconciliation compares every account
    // (searches).
    crate::recon(&mut c, "csvEmployee_managedUser").await;
    crate::ldap::drained(&mut c).await;
    // The directory goes down under a change: its delivery fails (and is
    // logged) until it comes back.
    slapd.stop();
    c.objects
        .patch_object(idm_proto::v1::PatchObjectRequest {
            name: "managed/user/123".into(),
            operations: vec![idm_proto::v1::PatchOperation {
                operation: "replace".into(),
                field: "/telephoneNumber".into(),
                value: Some(idm_proto::json::to_proto_value(&json!("5550000"))),
                ..Default::default()
            }],
            expected_revision: None,
        })
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !idmd.log().contains("delivery failed") {
        assert!(std::time::Instant::now() < deadline, "{}", idmd.log());
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    slapd.restart().unwrap();
    crate::ldap::drained(&mut c).await;
    crate::recon(&mut c, "managedUser_ldapAccount").await;
    let log = idmd.log();
    assert!(log.contains("reconciliation"), "{log}");
    // managed/user/123 is "object=123" in a text line.
    for person in [
        "snow123",
        "jon.snow",
        "Snow",
        "5550000",
        "object=123",
        "=123 ",
    ] {
        assert!(!log.contains(person), "idmd's log holds {person}:\n{log}");
    }
}

#[tokio::test]
async fn one_idmctl_run_is_one_request_id() {
    let idmd = Idmd::start().await;
    let home = idm_tests::TempDir::new("idmctl-home");
    let home = home.path().to_str().unwrap();
    let created = idmd.idmctl_env(
        &[
            "--token",
            &idmd.admin_token,
            "tokens",
            "create",
            "--scope",
            "read",
        ],
        &[
            ("IDM_REQUEST_ID", "cli-run-1"),
            ("HOME", home),
            ("XDG_CONFIG_HOME", home),
        ],
        None,
    );
    assert!(created.status.success(), "{created:?}");
    let entries = audit_of(&mut idmd.clients().await, "cli-run-1").await;
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0].operation, "token.create");

    // Without IDM_REQUEST_ID each run makes one; the audit output shows both.
    let again = idmd.idmctl(&["tokens", "create", "--scope", "read"]);
    assert!(again.status.success(), "{again:?}");
    let listed = idmd.idmctl(&[
        "--output",
        "json",
        "audit",
        "query",
        "--filter",
        "operation eq \"token.create\"",
        "--sort",
        "time asc",
    ]);
    assert!(listed.status.success(), "{listed:?}");
    let page: Value = serde_json::from_slice(&listed.stdout).unwrap();
    let ids: Vec<&str> = page["result"]
        .as_array()
        .unwrap_or_else(|| panic!("{page}"))
        .iter()
        .map(|e| e["requestId"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 2, "{page}");
    assert_eq!(ids[0], "cli-run-1");
    assert!(is_uuid_v7(ids[1]), "{ids:?}");
    let table = idmd.idmctl(&["audit", "query"]);
    assert!(
        String::from_utf8_lossy(&table.stdout).contains("cli-run-1"),
        "{table:?}"
    );
}
