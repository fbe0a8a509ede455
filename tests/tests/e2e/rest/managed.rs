//! `/openidm/managed/{type}[/{id}]`: Wren's reads, queries, writes,
//! revisions and errors.

use idm_proto::v1::{CreateAccountRequest, Scope};
use idm_tests::rest::{AS_ADMIN, Auth, Rest, start};
use serde_json::{Value, json};

async fn create(rest: &Rest, id: &str, sn: &str, given: &str) -> Value {
    rest.put(
        &format!("/managed/user/{id}"),
        &json!({"userName": id, "sn": sn, "givenName": given, "mail": format!("{id}@example.com"),
                "password": "Secret-Pass-1"}),
        &[("if-none-match", "*")],
    )
    .await
    .expect(201)
    .body
}

fn ids(reply: &Value) -> Vec<String> {
    reply["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["_id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn create_read_replace_patch_delete_with_revisions() {
    let (_idmd, rest) = start().await;
    // POST ?_action=create with the id in the body.
    let created = rest
        .post(
            "/managed/user?_action=create",
            &json!({"_id": "bjensen", "userName": "bjensen", "sn": "Jensen",
                    "password": "Secret-Pass-1"}),
        )
        .await
        .expect(201);
    assert_eq!(created.body["_id"], "bjensen");
    assert_eq!(created.body["_rev"], "1");
    assert_eq!(created.header("etag"), Some("\"1\""));
    assert!(created.body.get("password").is_none(), "{}", created.body);

    // A generated id.
    let generated = rest
        .post("/managed/user?_action=create", &json!({"userName": "anon"}))
        .await
        .expect(201);
    assert!(!generated.body["_id"].as_str().unwrap().is_empty());

    let read = rest.get("/managed/user/bjensen").await.expect(200);
    assert_eq!(read.body["sn"], "Jensen");
    assert_eq!(read.header("etag"), Some("\"1\""));
    assert!(read.body.get("password").is_none());
    let only = rest
        .get("/managed/user/bjensen?_fields=sn")
        .await
        .expect(200);
    assert_eq!(
        only.body,
        json!({"_id": "bjensen", "_rev": "1", "sn": "Jensen"})
    );

    // PUT with If-Match replaces at that revision; a stale one is 412.
    let replaced = rest
        .put(
            "/managed/user/bjensen",
            &json!({"userName": "bjensen", "sn": "Jensen-Smith"}),
            &[("if-match", "\"1\"")],
        )
        .await
        .expect(200);
    assert_eq!(replaced.body["_rev"], "2");
    rest.put(
        "/managed/user/bjensen",
        &json!({"userName": "bjensen", "sn": "Stale"}),
        &[("if-match", "\"1\"")],
    )
    .await
    .expect_wren_error(412);
    // If-None-Match: * on an existing id is 412.
    rest.put(
        "/managed/user/bjensen",
        &json!({"userName": "other"}),
        &[("if-none-match", "*")],
    )
    .await
    .expect_wren_error(412);

    // PATCH with Wren's operations.
    let patched = rest
        .patch(
            "/managed/user/bjensen",
            &json!([
                {"operation": "replace", "field": "/sn", "value": "Jensen"},
                {"operation": "add", "field": "/mail", "value": "b@example.com"},
                {"operation": "remove", "field": "/givenName"}
            ]),
            &[("if-match", "\"2\"")],
        )
        .await
        .expect(200);
    assert_eq!(
        (
            &patched.body["sn"],
            &patched.body["mail"],
            &patched.body["_rev"]
        ),
        (&json!("Jensen"), &json!("b@example.com"), &json!("3"))
    );
    rest.patch(
        "/managed/user/bjensen",
        &json!([{"operation": "replace", "field": "/sn", "value": "x"}]),
        &[("if-match", "\"2\"")],
    )
    .await
    .expect_wren_error(412);
    let by_action = rest
        .post(
            "/managed/user/bjensen?_action=patch",
            &json!([{"operation": "replace", "field": "/sn", "value": "J"}]),
        )
        .await
        .expect(200);
    assert_eq!(by_action.body["sn"], "J");

    // DELETE answers the object as it was; again is 404.
    rest.delete("/managed/user/bjensen", &[("if-match", "\"1\"")])
        .await
        .expect_wren_error(412);
    let deleted = rest
        .delete("/managed/user/bjensen", &[("if-match", "*")])
        .await
        .expect(200);
    assert_eq!(deleted.body["_id"], "bjensen");
    let gone = rest
        .delete("/managed/user/bjensen", &[])
        .await
        .expect_wren_error(404);
    assert_eq!(gone.body["reason"], "Not Found");
    rest.get("/managed/user/bjensen")
        .await
        .expect_wren_error(404);
    rest.get("/managed/nosuchtype/x")
        .await
        .expect_wren_error(404);
    // PUT without preconditions creates, then replaces.
    rest.put("/managed/user/upsert", &json!({"userName": "upsert"}), &[])
        .await
        .expect(201);
    rest.put(
        "/managed/user/upsert",
        &json!({"userName": "upsert", "sn": "U"}),
        &[],
    )
    .await
    .expect(200);
    // A taken unique value is Wren's policy failure.
    let taken = rest
        .post(
            "/managed/user?_action=create",
            &json!({"userName": "UPSERT"}),
        )
        .await
        .expect_wren_error(403);
    assert_eq!(
        taken.body,
        json!({"code": 403, "reason": "Forbidden", "message": "Policy validation failed",
               "detail": {"result": false, "failedPolicyRequirements": [
                   {"property": "userName", "policyRequirements": [{"policyRequirement": "UNIQUE"}]}]}})
    );
    // increment, on a property the schema does not declare.
    rest.patch(
        "/managed/user/upsert",
        &json!([{"operation": "add", "field": "/loginCount", "value": 1}]),
        &[],
    )
    .await
    .expect(200);
    let incremented = rest
        .patch(
            "/managed/user/upsert",
            &json!([{"operation": "increment", "field": "/loginCount", "value": 2}]),
            &[],
        )
        .await
        .expect(200);
    assert_eq!(incremented.body["loginCount"], 3);
    // Bodies are bounded: past 1 MiB, Wren's 413.
    let huge = json!({"userName": "huge", "blob": "x".repeat(1024 * 1024 + 1)});
    rest.post("/managed/user?_action=create", &huge)
        .await
        .expect_wren_error(413);
    // Nested deeper than idmd's protobuf decoding goes: 400, not the core's
    // internal error (it answered 500 before).
    let mut deep = json!("x");
    for _ in 0..60 {
        deep = json!({ "a": deep });
    }
    let refused = rest
        .post(
            "/managed/user?_action=create",
            &json!({"userName": "deep", "nested": deep}),
        )
        .await
        .expect_wren_error(400);
    assert!(
        refused.body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("deeper than")
    );
    // A patch that is not an array is Wren's 400.
    rest.send(
        AS_ADMIN,
        "PATCH",
        "/managed/user/upsert",
        Some(&json!({"not": "an array"})),
        &[],
    )
    .await
    .expect_wren_error(400);
}

#[tokio::test]
async fn patch_copies_and_moves_values_but_never_a_private_one() {
    let (_idmd, rest) = start().await;
    create(&rest, "bjensen", "Jensen", "Barbara").await;
    let patched = rest
        .patch(
            "/managed/user/bjensen",
            &json!([
                {"operation": "copy", "from": "/sn", "field": "/displayName"},
                {"operation": "move", "from": "/givenName", "field": "/nickname"}
            ]),
            &[("if-match", "\"1\"")],
        )
        .await
        .expect(200);
    assert_eq!(patched.body["_rev"], "2");
    assert_eq!(patched.header("etag"), Some("\"2\""));
    let read = rest.get("/managed/user/bjensen").await.expect(200);
    assert_eq!(
        (
            &read.body["sn"],
            &read.body["displayName"],
            &read.body["nickname"]
        ),
        (&json!("Jensen"), &json!("Jensen"), &json!("Barbara"))
    );
    assert!(read.body.get("givenName").is_none(), "{}", read.body);
    assert_eq!(read.body["_rev"], "2");

    // Refused, each a 400 saying why, and nothing written.
    let refusals = [
        (
            json!([{"operation": "copy", "from": "/givenName", "field": "/x"}]),
            "there is no value at /givenName",
        ),
        (
            json!([{"operation": "move", "from": "/password", "field": "/leaked"}]),
            "would expose its value",
        ),
        (
            json!([{"operation": "copy", "from": "/mail", "field": "/password"}]),
            "password is private",
        ),
        (
            json!([{"operation": "copy", "field": "/x"}]),
            "need \"from\"",
        ),
        (
            json!([{"operation": "transform", "field": "/sn", "value": {"script": {}}}]),
            "runs a script",
        ),
    ];
    for (patch, why) in refusals {
        let refused = rest
            .patch("/managed/user/bjensen", &patch, &[])
            .await
            .expect_wren_error(400);
        let message = refused.body["message"].as_str().unwrap_or_default();
        assert!(message.contains(why), "{patch}: {}", refused.body);
    }
    let after = rest.get("/managed/user/bjensen").await.expect(200);
    assert_eq!(after.body, read.body);
}

#[tokio::test]
async fn queries_page_sort_and_count_as_wren() {
    let (_idmd, rest) = start().await;
    for (i, sn) in ["e", "c", "a", "d", "b"].iter().enumerate() {
        create(&rest, &format!("user{i}"), sn, "G").await;
    }
    // Everything, unpaged.
    let all = rest
        .get("/managed/user?_queryFilter=true")
        .await
        .expect(200);
    assert_eq!(all.body["resultCount"], 5);
    assert_eq!(all.body["pagedResultsCookie"], Value::Null);
    assert_eq!(all.body["totalPagedResultsPolicy"], "NONE");
    assert_eq!(all.body["totalPagedResults"], -1);
    assert_eq!(all.body["remainingPagedResults"], -1);
    assert!(all.body["result"][0].get("password").is_none());

    // Sorted descending, two per page, by cookie.
    let mut seen = Vec::new();
    let mut cookie = String::new();
    for page in 0.. {
        let path = format!(
            "/managed/user?_queryFilter=true&_sortKeys=-sn&_pageSize=2&_totalPagedResultsPolicy=EXACT{}",
            if cookie.is_empty() {
                String::new()
            } else {
                format!("&_pagedResultsCookie={}", urlencode(&cookie))
            }
        );
        let reply = rest.get(&path).await.expect(200);
        assert_eq!(reply.body["totalPagedResults"], 5);
        assert_eq!(reply.body["totalPagedResultsPolicy"], "EXACT");
        seen.extend(
            reply.body["result"]
                .as_array()
                .unwrap()
                .iter()
                .map(|o| o["sn"].as_str().unwrap().to_string()),
        );
        match reply.body["pagedResultsCookie"].as_str() {
            Some(next) => cookie = next.to_string(),
            None => break,
        }
        assert!(page < 5);
    }
    assert_eq!(seen, ["e", "d", "c", "b", "a"]);

    // By offset.
    let offset = rest
        .get("/managed/user?_queryFilter=true&_sortKeys=sn&_pageSize=2&_pagedResultsOffset=2&_fields=sn")
        .await
        .expect(200);
    assert_eq!(
        offset.body["result"],
        json!([{"_id": "user1", "_rev": "1", "sn": "c"}, {"_id": "user3", "_rev": "1", "sn": "d"}])
    );
    // ESTIMATE counts too; query-all-ids gives the ids.
    let estimate = rest
        .get("/managed/user?_queryFilter=/sn%20ge%20%22c%22&_totalPagedResultsPolicy=ESTIMATE&_pageSize=1")
        .await
        .expect(200);
    assert_eq!(estimate.body["totalPagedResults"], 3);
    let mut all_ids = ids(&rest
        .get("/managed/user?_queryId=query-all-ids")
        .await
        .expect(200)
        .body);
    all_ids.sort();
    assert_eq!(all_ids, ["user0", "user1", "user2", "user3", "user4"]);
    let ids_only = rest.get("/managed/user?_queryId=query-all-ids").await.body;
    assert!(ids_only["result"][0].get("sn").is_none(), "{ids_only}");

    // Wren's grammar: pointers, bare names, and/or/!, parentheses.
    let q = |filter: &str| {
        format!(
            "/managed/user?_queryFilter={}&_sortKeys=_id",
            urlencode(filter)
        )
    };
    let found = rest
        .get(&q(
            r#"(/sn eq "a" or sn eq "b") and !(/userName eq "user2")"#,
        ))
        .await
        .expect(200);
    assert_eq!(ids(&found.body), ["user4"]);
    let starts = rest.get(&q(r#"/mail sw "user3""#)).await.expect(200);
    assert_eq!(ids(&starts.body), ["user3"]);
    assert_eq!(
        rest.get(&q("false")).await.expect(200).body["resultCount"],
        0
    );

    // Hostile quoting finds nothing and changes nothing.
    for hostile in [
        r#"userName eq "x\" or true or \"""#,
        r#"userName eq "x' OR 1=1 --""#,
        r#"userName eq "x\"; DELETE FROM object; --""#,
        r#"userName eq 'user0\' or userName pr or \''"#,
    ] {
        let reply = rest.get(&q(hostile)).await.expect(200);
        assert_eq!(reply.body["resultCount"], 0, "{hostile}: {}", reply.body);
    }
    assert_eq!(
        rest.get("/managed/user?_queryFilter=true").await.body["resultCount"],
        5
    );
    // Bad filters and parameters are Wren's 400.
    for bad in [
        "/managed/user?_queryFilter=userName%20eq%20bjensen",
        "/managed/user?_queryFilter=(",
        "/managed/user?_queryFilter=true&_pageSize=x",
        "/managed/user?_queryFilter=true&_totalPagedResultsPolicy=ALL",
        "/managed/user",
    ] {
        rest.get(bad).await.expect_wren_error(400);
    }
}

#[tokio::test]
async fn relationships_read_as_wren_shows_them() {
    let (_idmd, rest) = start().await;
    create(&rest, "bjensen", "Jensen", "Barbara").await;
    let group = rest
        .put(
            "/managed/group/admins",
            &json!({"name": "admins", "members": [{"_ref": "managed/user/bjensen"}]}),
            &[("if-none-match", "*")],
        )
        .await
        .expect(201);
    let member = &group.body["members"][0];
    assert_eq!(member["_ref"], "managed/user/bjensen");
    assert_eq!(member["_refResourceCollection"], "managed/user");
    assert_eq!(member["_refResourceId"], "bjensen");
    // The user's reverse side.
    let user = rest.get("/managed/user/bjensen").await.expect(200);
    assert_eq!(user.body["groups"][0]["_ref"], "managed/group/admins");
    assert_eq!(user.body["groups"][0]["_refResourceId"], "admins");
    // A relationship object as read is accepted back as written.
    rest.put("/managed/group/admins", &group.body, &[])
        .await
        .expect(200);
}

#[tokio::test]
async fn a_read_account_reads_but_cannot_write() {
    let (idmd, rest) = start().await;
    create(&rest, "bjensen", "Jensen", "Barbara").await;
    let mut admin = idmd.clients().await;
    admin
        .accounts
        .create_account(CreateAccountRequest {
            name: "auditor".into(),
            password: "Auditor-Pass-1".into(),
            role: Scope::Read.into(),
        })
        .await
        .unwrap();
    let reader = Auth::Headers("auditor", "Auditor-Pass-1");
    rest.send(reader, "GET", "/managed/user/bjensen", None, &[])
        .await
        .expect(200);
    let refused = rest
        .send(
            reader,
            "PUT",
            "/managed/user/bjensen",
            Some(&json!({"userName": "bjensen"})),
            &[],
        )
        .await
        .expect_wren_error(403);
    assert_eq!(refused.body["reason"], "Forbidden");
    rest.send(reader, "DELETE", "/managed/user/bjensen", None, &[])
        .await
        .expect_wren_error(403);
    // A bearer token with write scope can write.
    let token = crate::token(&idmd, Scope::Scim).await;
    rest.send(
        Auth::Bearer(&token),
        "PATCH",
        "/managed/user/bjensen",
        Some(&json!([{"operation": "replace", "field": "/sn", "value": "B"}])),
        &[],
    )
    .await
    .expect(200);
    // Only a cookie: refused before anything is read.
    rest.send(
        Auth::None,
        "DELETE",
        "/managed/user/bjensen",
        None,
        &[("cookie", "session-jwt=x")],
    )
    .await
    .expect_wren_error(403);
    rest.get("/managed/user/bjensen").await.expect(200);
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn the_readme_curl_command_works() {
    let (_idmd, rest) = start().await;
    for (i, sn) in ["Jensen", "Jones", "Smith"].iter().enumerate() {
        create(&rest, &format!("user{i}"), sn, "G").await;
    }
    // README, "Wren's REST API": only the port and the password differ.
    let output = tokio::process::Command::new("curl")
        .args([
            "-s",
            "-k",
            "-u",
            &format!("openidm-admin:{}", idm_tests::rest::ADMIN_PASSWORD),
            "-G",
            &format!("{}/managed/user", rest.base),
            "--data-urlencode",
            r#"_queryFilter=/sn sw "J""#,
            "-d",
            "_pageSize=10",
            "-d",
            "_sortKeys=-sn",
        ])
        .output()
        .await
        .unwrap();
    let reply: Value = serde_json::from_slice(&output.stdout).unwrap();
    let sns: Vec<&str> = reply["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["sn"].as_str().unwrap())
        .collect();
    assert_eq!(sns, ["Jones", "Jensen"], "{reply}");
}
