//! Wren's REST API at `/openidm`: authentication (Basic, `X-OpenIDM-*`,
//! Bearer, the session cache, the CSRF rule), Wren's error shape, and the
//! info endpoints. Endpoint modules add their own files here.

mod managed;

use idm_proto::v1::{CreateAccountRequest, QueryAuditRequest, Scope};
use idm_tests::rest::{ADMIN, ADMIN_PASSWORD, AS_ADMIN, Auth, start};
use serde_json::json;

async fn logins_of(idmd: &idm_tests::Idmd, name: &str) -> Vec<idm_proto::v1::AuditEntry> {
    let mut admin = idmd.clients().await;
    admin
        .audit
        .query_audit(QueryAuditRequest {
            filter: format!(r#"operation eq "auth.login" and actor eq "{name}""#),
            order_by: "time asc".into(),
            page_size: 500,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .entries
}

#[tokio::test]
async fn ping_answers_without_credentials() {
    let (_idmd, rest) = start().await;
    let ping = rest
        .send(Auth::None, "GET", "/info/ping", None, &[])
        .await
        .expect(200);
    assert_eq!(
        ping.body,
        json!({"_id": "", "state": "ACTIVE_READY", "shortDesc": "OpenIDM ready"})
    );
    assert!(
        ping.header("content-type")
            .unwrap()
            .starts_with("application/json")
    );
}

#[tokio::test]
async fn info_login_by_basic_headers_and_bearer() {
    let (idmd, rest) = start().await;
    let expected = json!({
        "_id": "login",
        "authenticationId": ADMIN,
        "authorization": {"id": ADMIN, "roles": ["openidm-admin", "openidm-authorized"],
                          "component": "internal/user", "moduleId": "INTERNAL_USER"},
    });
    let basic = rest.get("/info/login").await.expect(200);
    assert_eq!(basic.body, expected);
    let headers = rest
        .send(
            Auth::Headers(ADMIN, ADMIN_PASSWORD),
            "GET",
            "/info/login",
            None,
            &[],
        )
        .await
        .expect(200);
    assert_eq!(headers.body, expected);
    // RFC 5987: a non-ASCII password, percent-encoded UTF-8.
    let mut admin = idmd.clients().await;
    admin
        .accounts
        .create_account(CreateAccountRequest {
            name: "jurgen.reader".into(),
            password: "Pässwörd-€-1".into(),
            role: Scope::Read.into(),
        })
        .await
        .unwrap();
    let encoded = rest
        .send(
            Auth::Headers(
                "UTF-8''jurgen.reader",
                "UTF-8''P%C3%A4ssw%C3%B6rd-%E2%82%AC-1",
            ),
            "GET",
            "/info/login",
            None,
            &[],
        )
        .await
        .expect(200);
    assert_eq!(encoded.body["authenticationId"], "jurgen.reader");
    assert_eq!(
        encoded.body["authorization"]["roles"],
        json!(["openidm-authorized"])
    );
    // An API token passes through as a bearer.
    let token = crate::token(&idmd, Scope::Read).await;
    let bearer = rest
        .send(Auth::Bearer(&token), "GET", "/info/login", None, &[])
        .await
        .expect(200);
    assert_eq!(bearer.body["authorization"]["component"], "internal/token");
    assert_eq!(
        bearer.body["authorization"]["roles"],
        json!(["openidm-authorized"])
    );
}

#[tokio::test]
async fn refused_credentials_are_wrens_401() {
    let (_idmd, rest) = start().await;
    let wren_401 = json!({"code": 401, "reason": "Unauthorized", "message": "Access Denied"});
    let headers = rest
        .send(
            Auth::Headers(ADMIN, "wrong-password"),
            "GET",
            "/info/login",
            None,
            &[],
        )
        .await
        .expect_wren_error(401);
    assert_eq!(headers.body, wren_401);
    // No challenge for a script's X-OpenIDM request, as Wren.
    assert_eq!(headers.header("www-authenticate"), None);
    let basic = rest
        .send(
            Auth::Basic(ADMIN, "wrong-password"),
            "GET",
            "/info/login",
            None,
            &[],
        )
        .await
        .expect_wren_error(401);
    assert_eq!(basic.body, wren_401);
    assert_eq!(
        basic.header("www-authenticate"),
        Some("Basic realm=\"openidm\"")
    );
    let none = rest
        .send(Auth::None, "GET", "/info/login", None, &[])
        .await
        .expect_wren_error(401);
    assert_eq!(none.body, wren_401);
    let bearer = rest
        .send(Auth::Bearer("not-a-token"), "GET", "/info/login", None, &[])
        .await;
    assert_eq!(bearer.expect_wren_error(401).body, wren_401);
    // An unknown path is Wren's 404.
    rest.get("/no/such/endpoint").await.expect_wren_error(404);
}

#[tokio::test]
async fn a_state_changing_request_with_only_a_cookie_is_refused() {
    let (_idmd, rest) = start().await;
    let cookie = [("cookie", "session-jwt=abc")];
    for method in ["POST", "PUT", "PATCH", "DELETE"] {
        let refused = rest
            .send(
                Auth::None,
                method,
                "/authentication?_action=logout",
                Some(&json!({})),
                &cookie,
            )
            .await;
        // POST reaches the endpoint's extractor; other methods are not
        // routed there, but none of them succeeds.
        assert!(
            refused.status == 403 || refused.status == 405,
            "{method}: {}",
            refused.body
        );
    }
    rest.send(
        Auth::None,
        "POST",
        "/authentication?_action=logout",
        None,
        &cookie,
    )
    .await
    .expect_wren_error(403);
    // A read with only a cookie is simply unauthenticated.
    rest.send(Auth::None, "GET", "/info/login", None, &cookie)
        .await
        .expect_wren_error(401);

    // Managed objects too: every write with only the cookie is Wren's 403,
    // before anything is read or written.
    rest.put(
        "/managed/user/bjensen",
        &json!({"userName": "bjensen", "sn": "Jensen"}),
        &[("if-none-match", "*")],
    )
    .await
    .expect(201);
    let before = rest.get("/managed/user/bjensen").await.expect(200).body;
    let writes = [
        (
            "POST",
            "/managed/user?_action=create",
            Some(json!({"_id": "mallory", "userName": "mallory"})),
        ),
        (
            "PUT",
            "/managed/user/bjensen",
            Some(json!({"userName": "bjensen", "sn": "Mallory"})),
        ),
        (
            "PATCH",
            "/managed/user/bjensen",
            Some(json!([{"operation": "replace", "field": "/sn", "value": "Mallory"}])),
        ),
        ("DELETE", "/managed/user/bjensen", None),
    ];
    for (method, path, body) in writes {
        let refused = rest
            .send(Auth::None, method, path, body.as_ref(), &cookie)
            .await
            .expect_wren_error(403);
        assert_eq!(refused.body["reason"], "Forbidden", "{method} {path}");
        assert!(
            refused.body["message"]
                .as_str()
                .is_some_and(|m| m.contains("a cookie alone is refused")),
            "{method} {path}: {}",
            refused.body
        );
    }
    assert_eq!(
        rest.get("/managed/user/bjensen").await.expect(200).body,
        before
    );
    rest.get("/managed/user/mallory")
        .await
        .expect_wren_error(404);
    let all = rest
        .get("/managed/user?_queryFilter=true")
        .await
        .expect(200);
    assert_eq!(all.body["resultCount"], 1, "{}", all.body);
}

#[tokio::test]
async fn basic_calls_share_one_login_and_logout_ends_it() {
    let (idmd, rest) = start().await;
    // 20 at once (they wait for the first one's login), then 30 more.
    let rest = std::sync::Arc::new(rest);
    let mut parallel = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let rest = rest.clone();
        parallel.spawn(async move { rest.get("/info/login").await.status });
    }
    while let Some(status) = parallel.join_next().await {
        assert_eq!(status.unwrap(), 200);
    }
    for _ in 0..30 {
        rest.get("/info/login").await.expect(200);
    }
    let logins = logins_of(&idmd, ADMIN).await;
    assert_eq!(logins.len(), 1, "{logins:?}");
    assert_eq!(logins[0].outcome, "success");

    // Logout ends the session and forgets it: the next call logs in again.
    rest.send(
        AS_ADMIN,
        "POST",
        "/authentication?_action=logout",
        None,
        &[],
    )
    .await
    .expect(200);
    rest.get("/info/login").await.expect(200);
    assert_eq!(logins_of(&idmd, ADMIN).await.len(), 2);
    rest.send(
        AS_ADMIN,
        "POST",
        "/authentication?_action=nothing",
        None,
        &[],
    )
    .await
    .expect_wren_error(400);
}

#[tokio::test]
async fn a_cached_session_revoked_elsewhere_is_replaced_once() {
    let (idmd, rest) = start().await;
    rest.get("/info/login").await.expect(200);
    // Revoke every session of the account: setting its password again does.
    let mut admin = idmd.clients().await;
    admin
        .accounts
        .set_account_password(idm_proto::v1::SetAccountPasswordRequest {
            name: ADMIN.into(),
            password: ADMIN_PASSWORD.into(),
        })
        .await
        .unwrap();
    rest.get("/info/login").await.expect(200);
    assert_eq!(logins_of(&idmd, ADMIN).await.len(), 2);
}

#[tokio::test]
async fn an_unreachable_core_is_503() {
    let (idmd, _rest) = start().await;
    let dead = format!("http://127.0.0.1:{}", idm_tests::free_port());
    let gateway = idm_tests::scim::Gateway::start_opts(
        &idmd,
        idm_tests::scim::GatewayOptions {
            core: Some(dead),
            ..Default::default()
        },
    )
    .await;
    let rest = idm_tests::rest::Rest::new(gateway);
    rest.get("/managed/user/anyone")
        .await
        .expect_wren_error(503);
    let ping = rest
        .send(Auth::None, "GET", "/info/ping", None, &[])
        .await
        .expect(200);
    assert_eq!(ping.body["state"], "ACTIVE_NOT_READY");
}

/// Behind a trusted proxy, logins are throttled by the address the proxy
/// forwarded for, not the proxy's own: one person's failures do not lock out
/// everyone behind it, and a forged `X-Forwarded-For` from anyone else counts
/// for nothing.
#[tokio::test]
async fn behind_a_trusted_proxy_logins_are_throttled_per_forwarded_client() {
    use idm_tests::scim::{Gateway, GatewayOptions, GatewayTls};
    let mut options = idm_tests::IdmdOptions::default();
    options
        .env
        .push(("IDM_ADMIN_PASSWORD".into(), ADMIN_PASSWORD.into()));
    let idmd = idm_tests::Idmd::start_with(options).await;
    let gateway = Gateway::start_opts(
        &idmd,
        GatewayOptions {
            tls: GatewayTls::Plain,
            args: vec!["--trusted-proxy".into(), "127.0.0.1".into()],
            ..GatewayOptions::default()
        },
    )
    .await;
    let rest = idm_tests::rest::Rest::new(gateway);
    let from = |client: &'static str| [("X-Forwarded-For", client)];
    let guesser = "198.51.100.66";
    for _ in 0..5 {
        rest.send(
            Auth::Basic("mallory", "guess"),
            "GET",
            "/info/login",
            None,
            &from(guesser),
        )
        .await
        .expect_wren_error(401);
    }
    // That client is locked out, whatever the name...
    rest.send(
        Auth::Basic("mallory", "guess"),
        "GET",
        "/info/login",
        None,
        &from(guesser),
    )
    .await
    .expect_wren_error(429);
    rest.send(AS_ADMIN, "GET", "/info/login", None, &from(guesser))
        .await
        .expect_wren_error(429);
    // ...and nobody else is (through the same proxy).
    let me = rest
        .send(AS_ADMIN, "GET", "/info/login", None, &from("192.0.2.7"))
        .await
        .expect(200);
    assert_eq!(me.body["authenticationId"], ADMIN, "{}", me.body);

    // The audit names the forwarded client, not the proxy.
    let mut c = idmd.clients().await;
    let entries = c
        .audit
        .query_audit(QueryAuditRequest {
            filter: r#"operation eq "auth.login""#.into(),
            page_size: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .entries;
    let text = format!("{entries:?}");
    assert!(text.contains(guesser), "{text}");
    assert!(text.contains("192.0.2.7"), "{text}");
}
