//! Issue 12, item 1: no filter hurts idmd or idm-gateway. Long `and`/`or`
//! chains are refused with the limit named (not a crash, not INTERNAL),
//! filters up to the limits answer, and idm-gateway refuses a request without a
//! valid token before it parses anything.

use std::collections::BTreeSet;

use idm_proto::filter::{MAX_TERMS, extremes};
use idm_proto::v1::{
    CountObjectsRequest, CreateTokenRequest, ListReconsRequest, ListSyncEntriesRequest,
    QueryAuditRequest, QueryObjectsRequest, Scope,
};
use idm_tests::{Clients, Idmd};
use serde_json::json;
use tonic::Code;

use crate::scim::{USER, create, encode, patch_op, setup};
use crate::{create_user, expect_code};

/// `term` repeated `n` times, joined by `op`.
fn chain(term: &str, op: &str, n: usize) -> String {
    vec![term; n].join(&format!(" {op} "))
}

/// The longest chains that fit the 8 KiB filter length limit: 1,000 `or`
/// terms, and as many `and` terms as fit (" and " is a byte longer). Both
/// are far past the term limit, and today's left-deep tree of either
/// overflowed the stack of idmd and idm-gateway.
fn attacks() -> [String; 2] {
    let and_terms = (idm_proto::filter::MAX_FILTER_LEN + 5) / "a pr and ".len();
    [chain("a pr", "or", 1000), chain("a pr", "and", and_terms)]
}

async fn token(clients: &Clients, scope: Scope) -> String {
    clients
        .tokens
        .clone()
        .create_token(CreateTokenRequest {
            scope: scope as i32,
            description: "filter limits".into(),
            ttl: None,
        })
        .await
        .unwrap()
        .into_inner()
        .secret
}

async fn query(c: &mut Clients, filter: &str) -> Result<BTreeSet<String>, tonic::Status> {
    Ok(c.objects
        .query_objects(QueryObjectsRequest {
            parent: "managed/user".into(),
            filter: filter.into(),
            order_by: "sn desc, givenName".into(),
            page_size: 100,
            ..Default::default()
        })
        .await?
        .into_inner()
        .objects
        .into_iter()
        .map(|o| o.id)
        .collect())
}

fn set(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn idmd_refuses_thousand_term_chains_and_keeps_serving() {
    let idmd = Idmd::start().await;
    let admin = idmd.clients().await;
    let read = token(&admin, Scope::Read).await;
    let mut c = idmd.clients_with(Some(read)).await;
    let mut admin = admin;
    create_user(&mut admin, "u1", json!({"userName": "u1", "sn": "One"})).await;

    let [or_chain, and_chain] = attacks();
    for filter in [&or_chain, &and_chain] {
        assert!(filter.len() <= idm_proto::filter::MAX_FILTER_LEN);
        let status = expect_code(query(&mut c, filter).await, Code::InvalidArgument);
        assert!(
            status
                .message()
                .contains(&format!("more than {MAX_TERMS} terms")),
            "{status:?}"
        );
        let count = c
            .objects
            .count_objects(CountObjectsRequest {
                parent: "managed/user".into(),
                filter: filter.clone(),
            })
            .await;
        expect_code(count, Code::InvalidArgument);
    }
    // Every RPC that takes a filter answers the same, with its own attributes.
    let over = chain("state pr", "or", MAX_TERMS + 1);
    let audit = admin
        .audit
        .query_audit(QueryAuditRequest {
            filter: chain("actor pr", "or", MAX_TERMS + 1),
            ..Default::default()
        })
        .await;
    let status = expect_code(audit, Code::InvalidArgument);
    assert!(status.message().contains("terms"), "{status:?}");
    let recons = admin
        .recon
        .list_recons(ListReconsRequest {
            filter: over.clone(),
            ..Default::default()
        })
        .await;
    expect_code(recons, Code::InvalidArgument);
    let entries = admin
        .sync
        .list_sync_entries(ListSyncEntriesRequest {
            filter: over,
            ..Default::default()
        })
        .await;
    expect_code(entries, Code::InvalidArgument);
    // Too deep is refused the same way.
    let deep = extremes::nots(idm_proto::filter::MAX_DEPTH + 1, "sn pr");
    let status = expect_code(query(&mut c, &deep).await, Code::InvalidArgument);
    assert!(status.message().contains("nested too deeply"), "{status:?}");

    // Still alive and serving.
    assert_eq!(query(&mut c, "sn pr").await.unwrap(), set(&["u1"]));
    assert!(idmd.health().await.is_ok());
}

#[tokio::test]
async fn filters_up_to_the_limits_answer_without_internal() {
    let idmd = Idmd::start().await;
    let mut c = idmd.clients().await;
    create_user(&mut c, "snow", json!({"userName": "snow", "givenName": "Jon", "sn": "Snow", "mail": "jon@example.com",
        "loginCount": 3, "address": {"locality": "Winterfell"}, "emails": [{"type": "work", "value": "jon@corp.example"}]})).await;
    create_user(
        &mut c,
        "doe",
        json!({"userName": "doe", "givenName": "Jane", "sn": "Doe", "loginCount": 7}),
    )
    .await;

    // Declared properties, undeclared ones (compiled to `data[$p]`),
    // sub-attributes, value filters, `ne`, `pr` and ranges, mixed.
    let terms = [
        r#"sn pr"#,
        r#"givenName sw "J""#,
        r#"userName ne "nobody""#,
        r#"loginCount ge 1"#,
        r#"nothing.here ne "x""#,
        r#"undeclared ne 5"#,
        r#"mail ne "x@y""#,
        r#"sn co "o""#,
    ];
    for n in [100, MAX_TERMS] {
        let all: Vec<&str> = (0..n).map(|i| terms[i % terms.len()]).collect();
        let and_chain = all.join(" and ");
        assert_eq!(
            query(&mut c, &and_chain).await.unwrap(),
            set(&["snow", "doe"]),
            "{n} terms"
        );
        // The value filter holds two of the `n` terms.
        let mut or_terms: Vec<String> = (0..n - 2)
            .map(|i| format!(r#"userName eq "nobody{i}""#))
            .collect();
        or_terms.push(r#"emails[type eq "work" and value co "corp"]"#.into());
        assert_eq!(
            query(&mut c, &or_terms.join(" or ")).await.unwrap(),
            set(&["snow"]),
            "{n} terms"
        );
    }
    // The one past the limit is refused, naming it.
    let over = chain("sn pr", "and", MAX_TERMS + 1);
    let status = expect_code(query(&mut c, &over).await, Code::InvalidArgument);
    assert!(
        status
            .message()
            .contains(&format!("more than {MAX_TERMS} terms")),
        "{status:?}"
    );
    // Every accepted extreme shape runs against the real store.
    for filter in extremes::accepted() {
        if let Err(status) = query(&mut c, &filter).await {
            panic!("{filter}: {status:?}");
        }
    }
}

#[tokio::test]
async fn idm_gateway_refuses_without_a_token_before_parsing_and_survives() {
    let (idmd, gateway) = setup().await;
    create(
        &gateway,
        json!({"schemas": [USER], "userName": "alice", "name": {"familyName": "Archer"}}),
    )
    .await;
    let attacks = attacks();
    for filter in &attacks {
        let path = format!("/Users?filter={}", encode(filter));
        for token in [Some("bogus"), None] {
            gateway
                .send_as(token, "GET", &path, None, &[])
                .await
                .expect_error(401, None);
            let search = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"], "filter": filter});
            for endpoint in ["/Users/.search", "/.search"] {
                gateway
                    .send_as(token, "POST", endpoint, Some(&search), &[])
                    .await
                    .expect_error(401, None);
            }
        }
    }
    // A bearer too long to be idm's is refused without asking the core
    // (sent on, it would break the call: a 500): 401 from the gateway, or
    // 431 from the HTTP layer when the connection is HTTP/2 (whose header
    // list is capped before any handler runs).
    let oversized = "x".repeat(60_000);
    let refused = gateway
        .send_as(Some(&oversized), "GET", "/Users", None, &[])
        .await;
    assert!(
        [401, 431].contains(&refused.status),
        "{}: {}",
        refused.status,
        refused.body
    );
    // Nothing of the request is read before the token: a bad filter, a
    // body that is not JSON, a PATCH of nothing get 401 too.
    gateway
        .send_as(
            Some("bogus"),
            "GET",
            "/Users?filter=userName%20eq",
            None,
            &[],
        )
        .await
        .expect_error(401, None);
    let unauthenticated = gateway
        .client()
        .post(format!("{}/Users", gateway.base))
        .bearer_auth("bogus")
        .header("content-type", "application/scim+json")
        .body("{\"userName\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(unauthenticated.status(), 401);

    // With a valid token, over the limit is 400 invalidFilter naming it.
    for filter in &attacks {
        let reply = gateway
            .get(&format!("/Users?filter={}", encode(filter)))
            .await
            .expect_error(400, Some("invalidFilter"));
        let detail = reply.body["detail"].as_str().unwrap();
        assert!(
            detail.contains(&format!("more than {MAX_TERMS} terms")),
            "{detail}"
        );
        let search = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"], "filter": filter});
        gateway
            .post("/Users/.search", &search)
            .await
            .expect_error(400, Some("invalidFilter"));
    }
    // The filter of a PATCH path goes through the same parser.
    let users = gateway.get("/Users").await.expect(200).body;
    let id = users["Resources"][0]["id"].as_str().unwrap().to_string();
    let path = format!(
        "emails[{}].value",
        chain(r#"type eq "work""#, "or", MAX_TERMS + 1)
    );
    let reply = gateway
        .patch(
            &format!("/Users/{id}"),
            &patch_op(json!([{"op": "replace", "path": path, "value": "x@y"}])),
        )
        .await
        .expect_error(400, Some("invalidFilter"));
    assert!(
        reply.body["detail"].as_str().unwrap().contains("terms"),
        "{}",
        reply.body
    );

    // Still up, and idmd too.
    let listed = gateway.get("/Users").await.expect(200).body;
    assert_eq!(listed["totalResults"], 1);
    assert!(idmd.health().await.is_ok());
}

#[tokio::test]
async fn idm_gateway_answers_filters_at_the_limit() {
    let (idmd, gateway) = setup().await;
    for user in ["alice", "bob"] {
        create(
            &gateway,
            json!({"schemas": [USER], "userName": user, "name": {"familyName": "Archer"}}),
        )
        .await;
    }
    // A read token works too: it is the core that decides what it may do.
    let read = token(&idmd.clients().await, Scope::Read).await;
    for n in [100, MAX_TERMS] {
        let mut terms: Vec<String> = (0..n - 1)
            .map(|i| format!(r#"userName eq "nobody{i}""#))
            .collect();
        terms.push(r#"userName eq "bob""#.into());
        let path = format!("/Users?filter={}", encode(&terms.join(" or ")));
        let reply = gateway
            .send_as(Some(&read), "GET", &path, None, &[])
            .await
            .expect(200);
        assert_eq!(reply.body["totalResults"], 1, "{n} terms");
        assert_eq!(reply.body["Resources"][0]["userName"], "bob");

        let and_chain = chain(r#"name.familyName eq "Archer""#, "and", n);
        let search = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"], "filter": and_chain});
        let reply = gateway.post("/Users/.search", &search).await.expect(200);
        assert_eq!(reply.body["totalResults"], 2, "{n} terms");
    }
}

/// The bearer check is remembered briefly, so it does not double the cost
/// of every request; a token revoked in the core stops working through the
/// gateway (the core still checks every forwarded call).
#[tokio::test]
async fn a_revoked_token_stops_working_through_idm_gateway() {
    let (idmd, gateway) = setup().await;
    let admin = idmd.clients().await;
    let created = admin
        .tokens
        .clone()
        .create_token(CreateTokenRequest {
            scope: Scope::Scim as i32,
            description: "revoked soon".into(),
            ttl: None,
        })
        .await
        .unwrap()
        .into_inner();
    for _ in 0..3 {
        gateway
            .send_as(Some(&created.secret), "GET", "/Users", None, &[])
            .await
            .expect(200);
    }
    let name = created.token.map(|t| t.name).unwrap_or_default();
    admin
        .tokens
        .clone()
        .revoke_token(idm_proto::v1::RevokeTokenRequest { name })
        .await
        .unwrap();
    // The core's own token table refreshes within seconds; then the gateway
    // answers 401 too.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let reply = gateway
            .send_as(Some(&created.secret), "GET", "/Users", None, &[])
            .await;
        if reply.status == 401 {
            break;
        }
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert!(std::time::Instant::now() < deadline, "still accepted");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}
