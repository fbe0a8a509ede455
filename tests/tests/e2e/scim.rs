//! The SCIM 2.0 gateway end to end: a real idm-gateway process in front of a real
//! idmd, spoken to over HTTP as an app or identity provider would.

use idm_proto::v1::{CreateTokenRequest, Scope};
use idm_tests::Idmd;
use idm_tests::scim::Gateway;
use serde_json::{Value, json};

use crate::create_user;

pub const USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
pub const GROUP: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
pub const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
pub const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

pub async fn setup() -> (Idmd, Gateway) {
    let idmd = Idmd::start().await;
    let gateway = Gateway::start(&idmd).await;
    (idmd, gateway)
}

pub fn barbara() -> Value {
    json!({
        "schemas": [USER, ENTERPRISE],
        "userName": "bjensen",
        "externalId": "701984",
        "name": {"givenName": "Barbara", "familyName": "Jensen", "formatted": "Ms. Barbara J Jensen III"},
        "displayName": "Babs Jensen",
        "emails": [{"value": "bjensen@example.com", "type": "work", "primary": true},
                   {"value": "babs@jensen.org", "type": "home"}],
        "phoneNumbers": [{"value": "555-555-8377", "type": "work"}],
        "active": true,
        "password": "t1meMa$heen",
        ENTERPRISE: {"employeeNumber": "701984", "department": "Tour Operations"}
    })
}

/// Creates a user and returns its representation.
pub async fn create(gateway: &Gateway, body: Value) -> Value {
    gateway.post("/Users", &body).await.expect(201).body
}

pub fn patch_op(operations: Value) -> Value {
    json!({"schemas": [PATCH_OP], "Operations": operations})
}

pub async fn managed(idmd: &Idmd, type_name: &str, id: &str) -> Value {
    crate::managed_object(&mut idmd.clients().await, type_name, id)
        .await
        .unwrap_or_else(|| panic!("managed/{type_name}/{id} does not exist"))
}

/// Whether idmd accepts `password` for the user.
pub async fn password_valid(idmd: &Idmd, id: &str, password: &str) -> bool {
    crate::password_valid(&mut idmd.clients().await, id, password).await
}

#[tokio::test]
async fn discovery_describes_users_groups_and_the_enterprise_extension() {
    let (_idmd, gateway) = setup().await;
    let anonymous = |path: &'static str| gateway.send_as(None, "GET", path, None, &[]);

    let config = anonymous("/ServiceProviderConfig").await.expect(200);
    assert_eq!(config.header("content-type"), Some("application/scim+json"));
    for feature in ["patch", "bulk", "filter", "sort", "etag", "changePassword"] {
        assert_eq!(config.body[feature]["supported"], true, "{feature}");
    }
    assert_eq!(config.body["filter"]["maxResults"], 1000);
    assert_eq!(
        config.body["authenticationSchemes"][0]["type"],
        "oauthbearertoken"
    );

    let types = anonymous("/ResourceTypes").await.expect(200).body;
    assert_eq!(types["totalResults"], 2);
    let user = anonymous("/ResourceTypes/User").await.expect(200).body;
    assert_eq!(user["endpoint"], "/Users");
    assert_eq!(user["schema"], USER);
    assert_eq!(user["schemaExtensions"][0]["schema"], ENTERPRISE);
    assert!(
        user["meta"]["location"]
            .as_str()
            .unwrap()
            .ends_with("/scim/v2/ResourceTypes/User")
    );

    let schemas = anonymous("/Schemas").await.expect(200).body;
    assert_eq!(schemas["totalResults"], 3);
    let user_schema = gateway
        .get(&format!("/Schemas/{USER}"))
        .await
        .expect(200)
        .body;
    let attribute = |name: &str| {
        user_schema["attributes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == name)
            .cloned()
            .unwrap()
    };
    assert_eq!(attribute("userName")["uniqueness"], "server");
    assert_eq!(attribute("userName")["caseExact"], false);
    assert_eq!(attribute("password")["returned"], "never");
    assert_eq!(attribute("password")["mutability"], "writeOnly");
    assert_eq!(
        attribute("emails")["subAttributes"]
            .as_array()
            .unwrap()
            .len(),
        4
    );
    let enterprise = gateway
        .get(&format!("/Schemas/{ENTERPRISE}"))
        .await
        .expect(200)
        .body;
    assert_eq!(enterprise["name"], "EnterpriseUser");

    gateway
        .get("/Schemas/urn:nope")
        .await
        .expect_error(404, None);
    gateway
        .get("/ResourceTypes/Printer")
        .await
        .expect_error(404, None);
    gateway.get("/Me").await.expect_error(501, None);
    gateway.get("/Printers").await.expect_error(404, None);
    let v1 = gateway.base.replace("/scim/v2", "/scim/v1");
    let other_version = gateway.send_as(None, "GET", "", None, &[]).await;
    assert_eq!(other_version.status, 404, "{}", other_version.body);
    let response = gateway
        .client()
        .get(format!("{v1}/Users"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["scimType"], "invalidVers");
    gateway
        .send("PUT", "/Users", None, &[])
        .await
        .expect_error(405, None);
}

#[tokio::test]
async fn a_user_round_trips_through_managed_properties() {
    let (idmd, gateway) = setup().await;
    let created = gateway.post("/Users", &barbara()).await.expect(201);
    let id = created.body["id"].as_str().unwrap().to_string();
    let location = created.body["meta"]["location"].as_str().unwrap();
    assert_eq!(created.header("location"), Some(location));
    assert!(location.ends_with(&format!("/scim/v2/Users/{id}")));
    assert_eq!(
        created.header("etag"),
        created.body["meta"]["version"].as_str()
    );
    assert_eq!(created.body["meta"]["resourceType"], "User");
    assert!(created.body["meta"]["created"].as_str().is_some());
    assert!(
        created.body.get("password").is_none(),
        "password is never returned"
    );
    let mut expected = barbara();
    expected.as_object_mut().unwrap().remove("password");
    for (key, value) in expected.as_object().unwrap() {
        assert_eq!(&created.body[key], value, "{key}");
    }

    // The attribute map put the SCIM attributes where idm keeps them.
    let stored = managed(&idmd, "user", &id).await;
    assert_eq!(stored["userName"], "bjensen");
    assert_eq!(stored["givenName"], "Barbara");
    assert_eq!(stored["sn"], "Jensen");
    assert_eq!(stored["mail"], "bjensen@example.com");
    assert_eq!(stored["telephoneNumber"], "555-555-8377");
    assert_eq!(stored["accountStatus"], "active");
    assert_eq!(stored["department"], "Tour Operations");
    assert!(stored.get("password").is_none());
    assert!(
        password_valid(&idmd, &id, "t1meMa$heen").await,
        "the SCIM password became the managed password"
    );
    let mut clients = idmd.clients().await;

    let fetched = gateway.get(&format!("/Users/{id}")).await.expect(200);
    assert_eq!(fetched.body, created.body);

    // HR (another writer) sets a property SCIM does not own; a PUT keeps it.
    clients
        .objects
        .patch_object(idm_proto::v1::PatchObjectRequest {
            name: format!("managed/user/{id}"),
            operations: vec![idm_proto::v1::PatchOperation {
                operation: "add".into(),
                field: "/employeeType".into(),
                value: Some(idm_proto::json::to_proto_value(&json!("contractor"))),
                ..Default::default()
            }],
            expected_revision: None,
        })
        .await
        .unwrap();
    let replaced = gateway
        .put(
            &format!("/Users/{id}"),
            &json!({"schemas": [USER], "userName": "bjensen", "name": {"givenName": "Barb"}}),
        )
        .await
        .expect(200);
    assert!(replaced.body.get("emails").is_none());
    assert_eq!(replaced.body["name"], json!({"givenName": "Barb"}));
    let stored = managed(&idmd, "user", &id).await;
    assert_eq!(stored["employeeType"], "contractor");
    assert!(stored.get("mail").is_none() && stored.get("sn").is_none());
    assert!(
        password_valid(&idmd, &id, "t1meMa$heen").await,
        "a PUT without password keeps it"
    );

    gateway.delete(&format!("/Users/{id}")).await.expect(204);
    gateway
        .get(&format!("/Users/{id}"))
        .await
        .expect_error(404, None);
    gateway
        .delete(&format!("/Users/{id}"))
        .await
        .expect_error(404, None);
}

#[tokio::test]
async fn changes_made_outside_scim_show_in_scim() {
    let (idmd, gateway) = setup().await;
    let mut clients = idmd.clients().await;
    create_user(
        &mut clients,
        "hr-1",
        json!({"userName": "jdoe", "givenName": "John", "sn": "Doe", "mail": "jdoe@example.com",
               "accountStatus": "inactive", "costCenter": "4130"}),
    )
    .await;
    let user = gateway.get("/Users/hr-1").await.expect(200).body;
    assert_eq!(
        user["name"],
        json!({"givenName": "John", "familyName": "Doe"})
    );
    assert_eq!(
        user["emails"],
        json!([{"value": "jdoe@example.com", "type": "work"}])
    );
    assert_eq!(user["active"], false);
    assert_eq!(user[ENTERPRISE]["costCenter"], "4130");
    assert_eq!(user["schemas"], json!([USER, ENTERPRISE]));
}

#[tokio::test]
async fn user_names_are_unique_ignoring_case() {
    let (_idmd, gateway) = setup().await;
    create(&gateway, json!({"schemas": [USER], "userName": "bjensen"})).await;
    gateway
        .post("/Users", &json!({"schemas": [USER], "userName": "BJensen"}))
        .await
        .expect_error(409, Some("uniqueness"));
    let found = gateway
        .get("/Users?filter=userName%20eq%20%22BJENSEN%22")
        .await
        .expect(200)
        .body;
    assert_eq!(found["totalResults"], 1);
    create(&gateway, json!({"schemas": [USER], "userName": "other"})).await;
    let other = gateway
        .get("/Users?filter=userName%20eq%20%22other%22")
        .await
        .body;
    let id = other["Resources"][0]["id"].as_str().unwrap();
    gateway
        .patch(
            &format!("/Users/{id}"),
            &patch_op(json!([{"op": "replace", "path": "userName", "value": "BJENSEN"}])),
        )
        .await
        .expect_error(409, Some("uniqueness"));
}

#[tokio::test]
async fn bad_requests_get_scim_errors_and_change_nothing() {
    let (_idmd, gateway) = setup().await;
    gateway
        .raw(
            "POST",
            "/Users",
            "application/scim+json",
            b"{\"userName\": ".to_vec(),
        )
        .await
        .expect_error(400, Some("invalidSyntax"));
    gateway
        .post("/Users", &json!([1, 2]))
        .await
        .expect_error(400, Some("invalidSyntax"));
    gateway
        .post(
            "/Users",
            &json!({"schemas": [USER], "name": {"givenName": "No user name"}}),
        )
        .await
        .expect_error(400, Some("invalidValue"));
    let wrong = gateway
        .post("/Users", &json!({"schemas": [USER], "userName": "x", "emails": [{"value": "a", "primary": "perhaps"}]}))
        .await
        .expect_error(400, Some("invalidValue"));
    assert!(
        wrong.body["detail"]
            .as_str()
            .unwrap()
            .contains("emails[0].primary")
    );
    gateway
        .raw("POST", "/Users", "text/xml", b"<user/>".to_vec())
        .await
        .expect_error(415, None);
    let huge = json!({"schemas": [USER], "userName": "big", "title": "x".repeat(1_100_000)});
    gateway.post("/Users", &huge).await.expect_error(413, None);
    gateway
        .get("/Users?filter=nosuch%20eq%20%22x%22")
        .await
        .expect_error(400, Some("invalidFilter"));
    gateway
        .get("/Users?filter=userName%20eq")
        .await
        .expect_error(400, Some("invalidFilter"));
    gateway
        .get("/Users?filter=password%20pr")
        .await
        .expect_error(400, Some("invalidFilter"));
    gateway
        .get("/Users?sortBy=userName&sortOrder=sideways")
        .await
        .expect_error(400, Some("invalidValue"));
    gateway
        .get("/Users?count=many")
        .await
        .expect_error(400, Some("invalidValue"));
    let empty = gateway.get("/Users").await.expect(200).body;
    assert_eq!(
        empty["totalResults"], 0,
        "nothing was created by the bad requests"
    );
}

#[tokio::test]
async fn bearer_tokens_are_passed_to_the_core_which_decides() {
    let (idmd, gateway) = setup().await;
    let missing = gateway
        .send_as(None, "GET", "/Users", None, &[])
        .await
        .expect_error(401, None);
    assert_eq!(
        missing.header("www-authenticate"),
        Some("Bearer realm=\"idm-gateway\"")
    );
    gateway
        .send_as(Some("not-a-token"), "GET", "/Users", None, &[])
        .await
        .expect_error(401, None);
    gateway
        .send_as(
            None,
            "GET",
            "/Users",
            None,
            &[("authorization", "Basic dXNlcjpwdw==")],
        )
        .await
        .expect_error(401, None);

    let clients = idmd.clients().await;
    let token = |scope: Scope| {
        let mut tokens = clients.tokens.clone();
        async move {
            tokens
                .create_token(CreateTokenRequest {
                    scope: scope as i32,
                    description: "scim test".into(),
                    ttl: None,
                })
                .await
                .unwrap()
                .into_inner()
                .secret
        }
    };
    let read = token(Scope::Read).await;
    let scim = token(Scope::Scim).await;
    let body = json!({"schemas": [USER], "userName": "reader"});
    gateway
        .send_as(Some(&read), "GET", "/Users", None, &[])
        .await
        .expect(200);
    gateway
        .send_as(Some(&read), "POST", "/Users", Some(&body), &[])
        .await
        .expect_error(403, None);
    gateway
        .send_as(Some(&scim), "POST", "/Users", Some(&body), &[])
        .await
        .expect(201);
}

#[tokio::test]
async fn lists_filter_sort_page_and_project() {
    let (_idmd, gateway) = setup().await;
    let people = [
        ("alice", "Alice", "Archer", "Sales"),
        ("bob", "Bob", "Baker", "Sales"),
        ("carol", "Carol", "Cooper", "Engineering"),
        ("dave", "Dave", "Dawson", "Engineering"),
        ("erin", "Erin", "Evans", "Support"),
    ];
    for (user, given, family, department) in people {
        create(
            &gateway,
            json!({
                "schemas": [USER, ENTERPRISE],
                "userName": user,
                "name": {"givenName": given, "familyName": family},
                "title": if user < "c" { "Manager" } else { "Engineer" },
                "displayName": format!("{given} {family}"),
                "emails": [{"value": format!("{user}@example.com"), "type": "work"},
                           {"value": format!("{user}@home.example"), "type": "home"}],
                "active": user != "erin",
                ENTERPRISE: {"department": department}
            }),
        )
        .await;
    }
    let names = |reply: &Value| -> Vec<String> {
        reply["Resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["userName"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    let list = |query: &str| {
        let path = format!("/Users?{query}");
        let gateway = &gateway;
        async move { gateway.get(&path).await.expect(200).body }
    };
    let filtered = |filter: &str| {
        let query = format!("filter={}&sortBy=userName", encode(filter));
        let list = &list;
        async move { names(&list(&query).await) }
    };
    assert_eq!(filtered("userName eq \"carol\"").await, ["carol"]);
    assert_eq!(filtered("userName ne \"carol\"").await.len(), 4);
    assert_eq!(
        filtered("name.familyName co \"o\"").await,
        ["carol", "dave"]
    );
    assert_eq!(filtered("name.givenName sw \"A\"").await, ["alice"]);
    assert_eq!(filtered("userName ew \"ol\"").await, ["carol"]);
    assert_eq!(filtered("userName gt \"carol\"").await, ["dave", "erin"]);
    assert_eq!(
        filtered("userName ge \"carol\"").await,
        ["carol", "dave", "erin"]
    );
    assert_eq!(filtered("userName lt \"bob\"").await, ["alice"]);
    assert_eq!(filtered("userName le \"bob\"").await, ["alice", "bob"]);
    assert_eq!(
        filtered("title pr and not (title eq \"Engineer\")").await,
        ["alice", "bob"]
    );
    assert_eq!(filtered("active eq false").await, ["erin"]);
    assert_eq!(
        filtered("userName eq \"alice\" or userName eq \"erin\"").await,
        ["alice", "erin"]
    );
    assert_eq!(
        filtered("emails[type eq \"work\" and value sw \"da\"]").await,
        ["dave"]
    );
    assert_eq!(
        filtered("emails[type eq \"home\" and value sw \"bo\"]").await,
        ["bob"]
    );
    assert_eq!(filtered("emails.value ew \"@home.example\"").await.len(), 5);
    assert_eq!(filtered("emails co \"carol@ex\"").await, ["carol"]);
    assert_eq!(
        filtered(&format!("{ENTERPRISE}:department eq \"Engineering\"")).await,
        ["carol", "dave"]
    );
    assert_eq!(
        filtered("meta.resourceType eq \"User\" and userName sw \"a\"").await,
        ["alice"]
    );
    assert_eq!(
        filtered("meta.lastModified gt \"2000-01-01T00:00:00Z\"")
            .await
            .len(),
        5
    );
    assert_eq!(filtered("USERNAME EQ \"ALICE\"").await, ["alice"]);
    // displayName and emails are caseExact false in SCIM; idm's default user
    // type declares them so, and the core compares them ignoring case.
    assert_eq!(
        filtered("emails.value eq \"BOB@HOME.EXAMPLE\"").await,
        ["bob"]
    );
    assert_eq!(filtered("displayName eq \"dave dawson\"").await, ["dave"]);
    assert_eq!(
        filtered("emails[type eq \"WORK\" and value eq \"Carol@Example.com\"]").await,
        ["carol"]
    );

    let none = list(&format!("filter={}", encode("userName eq \"zed\""))).await;
    assert_eq!(none["totalResults"], 0);
    assert_eq!(none["Resources"], json!([]));

    let sorted = list("sortBy=name.familyName&sortOrder=descending").await;
    assert_eq!(names(&sorted), ["erin", "dave", "carol", "bob", "alice"]);

    let page = list("sortBy=userName&startIndex=2&count=2").await;
    assert_eq!(names(&page), ["bob", "carol"]);
    assert_eq!(
        (
            page["totalResults"].as_u64(),
            page["startIndex"].as_u64(),
            page["itemsPerPage"].as_u64()
        ),
        (Some(5), Some(2), Some(2))
    );
    let clamped = list("sortBy=userName&startIndex=-3&count=1").await;
    assert_eq!(
        (names(&clamped), clamped["startIndex"].as_u64()),
        (vec!["alice".to_string()], Some(1))
    );
    let counted = list("count=0").await;
    assert_eq!(
        (
            counted["totalResults"].as_u64(),
            counted["Resources"].as_array().map(Vec::len)
        ),
        (Some(5), Some(0))
    );
    let negative = list("count=-5").await;
    assert_eq!(negative["itemsPerPage"], 0);
    let beyond = list("startIndex=99").await;
    assert_eq!(
        (
            beyond["totalResults"].as_u64(),
            beyond["itemsPerPage"].as_u64()
        ),
        (Some(5), Some(0))
    );

    let projected = list(&format!(
        "filter={}&attributes=userName,name.familyName",
        encode("userName eq \"bob\"")
    ))
    .await;
    assert_eq!(
        projected["Resources"][0]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        ["schemas", "id", "userName", "name"]
    );
    assert_eq!(
        projected["Resources"][0]["name"],
        json!({"familyName": "Baker"})
    );
    let excluded = list(&format!(
        "filter={}&excludedAttributes=emails,meta,{ENTERPRISE}",
        encode("userName eq \"bob\"")
    ))
    .await;
    let bob = &excluded["Resources"][0];
    assert!(
        bob.get("emails").is_none() && bob.get("meta").is_none() && bob.get(ENTERPRISE).is_none()
    );
    assert_eq!(bob["schemas"], json!([USER]));
    assert_eq!(bob["userName"], "bob");
}

#[tokio::test]
async fn search_posts_work_per_type_and_across_types() {
    let (_idmd, gateway) = setup().await;
    let ann = create(&gateway, json!({"schemas": [USER], "userName": "ann"})).await;
    create(&gateway, json!({"schemas": [USER], "userName": "zoe"})).await;
    gateway
        .post("/Groups", &json!({"schemas": [GROUP], "displayName": "Admins", "members": [{"value": ann["id"]}]}))
        .await
        .expect(201);
    let search = json!({
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
        "filter": "userName sw \"a\"",
        "attributes": ["userName"],
        "startIndex": 1,
        "count": "10"
    });
    let users = gateway
        .post("/Users/.search", &search)
        .await
        .expect(200)
        .body;
    assert_eq!(users["totalResults"], 1);
    assert_eq!(
        users["Resources"][0].as_object().unwrap().len(),
        3,
        "schemas, id, userName"
    );
    let everything = gateway
        .post(
            "/.search",
            &json!({"filter": "userName eq \"ann\" or displayName eq \"Admins\""}),
        )
        .await
        .expect(200)
        .body;
    assert_eq!(everything["totalResults"], 2);
    let kinds: Vec<&str> = everything["Resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["meta"]["resourceType"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["User", "Group"]);
    let groups = gateway
        .post(
            "/Groups/.search",
            &json!({"filter": format!("members.value eq \"{}\"", ann["id"].as_str().unwrap())}),
        )
        .await
        .expect(200)
        .body;
    assert_eq!(groups["Resources"][0]["displayName"], "Admins");
    gateway
        .post("/Users/.search", &json!({"filter": "userName xx \"a\""}))
        .await
        .expect_error(400, Some("invalidFilter"));
}

#[tokio::test]
async fn groups_hold_members_and_users_show_their_groups() {
    let (idmd, gateway) = setup().await;
    let ann = create(&gateway, json!({"schemas": [USER], "userName": "ann"})).await;
    let bob = create(&gateway, json!({"schemas": [USER], "userName": "bob"})).await;
    let (ann_id, bob_id) = (ann["id"].as_str().unwrap(), bob["id"].as_str().unwrap());
    let group = gateway
        .post(
            "/Groups",
            &json!({"schemas": [GROUP], "displayName": "Tour Guides", "externalId": "tg",
                    "members": [{"value": ann_id, "display": "ann"}]}),
        )
        .await
        .expect(201)
        .body;
    let group_id = group["id"].as_str().unwrap();
    assert_eq!(group["members"][0]["value"], ann_id);
    assert_eq!(group["members"][0]["type"], "User");
    assert!(
        group["members"][0]["$ref"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/Users/{ann_id}"))
    );
    let stored = managed(&idmd, "group", group_id).await;
    assert_eq!(stored["name"], "Tour Guides");
    assert_eq!(
        stored["members"],
        json!([{"_ref": format!("managed/user/{ann_id}")}])
    );

    let ann_now = gateway
        .get(&format!("/Users/{ann_id}"))
        .await
        .expect(200)
        .body;
    assert_eq!(ann_now["groups"][0]["value"], group_id);
    assert_eq!(ann_now["groups"][0]["type"], "Group");

    gateway
        .post(
            "/Groups",
            &json!({"schemas": [GROUP], "displayName": "tour guides"}),
        )
        .await
        .expect_error(409, Some("uniqueness"));
    gateway
        .post("/Groups", &json!({"schemas": [GROUP], "members": []}))
        .await
        .expect_error(400, Some("invalidValue"));

    let path = format!("/Groups/{group_id}");
    let added = gateway
        .patch(
            &path,
            &patch_op(json!([{"op": "add", "path": "members", "value": [{"value": bob_id}]}])),
        )
        .await
        .expect(200)
        .body;
    assert_eq!(added["members"].as_array().unwrap().len(), 2);
    let removed = gateway
        .patch(
            &path,
            &patch_op(json!([{"op": "remove", "path": format!("members[value eq \"{ann_id}\"]")}])),
        )
        .await
        .expect(200)
        .body;
    assert_eq!(
        removed["members"],
        json!([{"value": bob_id, "$ref": added["members"][1]["$ref"], "type": "User"}])
    );

    // Deleting a member takes it out of the group.
    gateway
        .delete(&format!("/Users/{bob_id}"))
        .await
        .expect(204);
    let emptied = gateway.get(&path).await.expect(200).body;
    assert!(emptied.get("members").is_none(), "{emptied}");
}

#[tokio::test]
async fn etags_make_writes_conditional() {
    let (_idmd, gateway) = setup().await;
    let user = gateway
        .post("/Users", &json!({"schemas": [USER], "userName": "etag"}))
        .await
        .expect(201);
    let path = format!("/Users/{}", user.body["id"].as_str().unwrap());
    let first = user.header("etag").unwrap().to_string();
    assert_eq!(first, "W/\"1\"");

    let unchanged = gateway
        .send("GET", &path, None, &[("if-none-match", &first)])
        .await;
    assert_eq!(unchanged.status, 304);
    assert_eq!(unchanged.header("etag"), Some(first.as_str()));

    let patched = gateway
        .send(
            "PATCH",
            &path,
            Some(&patch_op(
                json!([{"op": "add", "path": "title", "value": "Tour Guide"}]),
            )),
            &[("if-match", &first)],
        )
        .await
        .expect(200);
    let second = patched.header("etag").unwrap().to_string();
    assert_ne!(second, first);
    assert_eq!(patched.body["meta"]["version"], second);

    let changed = gateway
        .send("GET", &path, None, &[("if-none-match", &first)])
        .await
        .expect(200);
    assert_eq!(changed.body["title"], "Tour Guide");

    let stale = json!({"schemas": [USER], "userName": "etag", "title": "stale"});
    gateway
        .send("PUT", &path, Some(&stale), &[("if-match", &first)])
        .await
        .expect_error(412, None);
    gateway
        .send(
            "PATCH",
            &path,
            Some(&patch_op(json!([{"op": "remove", "path": "title"}]))),
            &[("if-match", &first)],
        )
        .await
        .expect_error(412, None);
    gateway
        .send("DELETE", &path, None, &[("if-match", &first)])
        .await
        .expect_error(412, None);
    assert_eq!(
        gateway.get(&path).await.body["title"],
        "Tour Guide",
        "nothing stale was written"
    );

    gateway
        .send("PUT", &path, Some(&stale), &[("if-match", "*")])
        .await
        .expect(200);
    let current = gateway.get(&path).await.header("etag").unwrap().to_string();
    gateway
        .send("DELETE", &path, None, &[("if-match", &current)])
        .await
        .expect(204);
}

#[tokio::test]
async fn bulk_resolves_bulk_ids_in_any_order_and_honours_fail_on_errors() {
    let (_idmd, gateway) = setup().await;
    let request = json!({
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"],
        "Operations": [
            {"method": "POST", "path": "/Groups", "bulkId": "guides",
             "data": {"schemas": [GROUP], "displayName": "Guides", "members": [{"type": "User", "value": "bulkId:ann"}]}},
            {"method": "POST", "path": "/Users", "bulkId": "ann",
             "data": {"schemas": [USER], "userName": "ann"}},
            {"method": "PATCH", "path": "/Groups/bulkId:guides",
             "data": patch_op(json!([{"op": "add", "path": "members", "value": [{"value": "bulkId:bob"}]}]))},
            {"method": "POST", "path": "/Users", "bulkId": "bob",
             "data": {"schemas": [USER], "userName": "bob"}},
            {"method": "POST", "path": "/Users", "bulkId": "dup",
             "data": {"schemas": [USER], "userName": "ANN"}},
            {"method": "DELETE", "path": "/Users/bulkId:nowhere"}
        ]
    });
    let response = gateway.post("/Bulk", &request).await.expect(200).body;
    assert_eq!(
        response["schemas"][0],
        "urn:ietf:params:scim:api:messages:2.0:BulkResponse"
    );
    let operations = response["Operations"].as_array().unwrap();
    let status = |i: usize| operations[i]["status"].as_str().unwrap().to_string();
    assert_eq!(operations.len(), 6);
    assert_eq!(
        (status(0), status(1), status(2), status(3)),
        ("201".into(), "201".into(), "200".into(), "201".into())
    );
    assert_eq!(status(4), "409");
    assert_eq!(operations[4]["response"]["scimType"], "uniqueness");
    assert_eq!(status(5), "400");
    let group_location = operations[0]["location"].as_str().unwrap();
    let group_path = group_location.split("/scim/v2").nth(1).unwrap();
    let group = gateway.get(group_path).await.expect(200).body;
    let members: Vec<&str> = group["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["value"].as_str().unwrap())
        .collect();
    let ann_id = operations[1]["location"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap();
    let bob_id = operations[3]["location"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap();
    assert_eq!(members, [ann_id, bob_id]);

    let failing = json!({
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"],
        "failOnErrors": 1,
        "Operations": [
            {"method": "POST", "path": "/Users", "bulkId": "x", "data": {"schemas": [USER]}},
            {"method": "POST", "path": "/Users", "bulkId": "y", "data": {"schemas": [USER], "userName": "never"}}
        ]
    });
    let stopped = gateway.post("/Bulk", &failing).await.expect(200).body;
    assert_eq!(stopped["Operations"].as_array().unwrap().len(), 1);
    assert_eq!(stopped["Operations"][0]["status"], "400");
    let never = gateway
        .get(&format!(
            "/Users?filter={}",
            encode("userName eq \"never\"")
        ))
        .await
        .body;
    assert_eq!(never["totalResults"], 0, "failOnErrors stopped the run");

    let too_many: Vec<Value> = (0..1001)
        .map(|i| json!({"method": "DELETE", "path": format!("/Users/u{i}")}))
        .collect();
    gateway
        .post("/Bulk", &json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"], "Operations": too_many}))
        .await
        .expect_error(413, None);
}

/// A query-string value, percent-encoded.
pub fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn the_attribute_map_is_configurable_and_checked_at_start() {
    let idmd = Idmd::start().await;
    let default = std::process::Command::new(idm_tests::binary("idm-gateway"))
        .arg("--print-default-map")
        .output()
        .unwrap();
    let mut map: Value = serde_json::from_slice(&default.stdout).unwrap();
    map["User"]["attributes"]
        .as_array_mut()
        .unwrap()
        .push(json!({"scim": "title", "managed": "jobTitle"}));
    let file = idmd.dir.path().join("scim-map.json");
    std::fs::write(&file, map.to_string()).unwrap();
    let gateway = Gateway::start_with(&idmd, &["--map", file.to_str().unwrap()]).await;
    let user = create(
        &gateway,
        json!({"schemas": [USER], "userName": "mapped", "title": "Curator"}),
    )
    .await;
    let stored = managed(&idmd, "user", user["id"].as_str().unwrap()).await;
    assert_eq!(stored["jobTitle"], "Curator");
    assert!(stored.get("title").is_none());
    let found = gateway
        .get(&format!("/Users?filter={}", encode("title eq \"Curator\"")))
        .await
        .expect(200)
        .body;
    assert_eq!(found["totalResults"], 1);

    map["User"]["attributes"]
        .as_array_mut()
        .unwrap()
        .push(json!({"scim": "emails.value", "managed": "anyMail"}));
    std::fs::write(&file, map.to_string()).unwrap();
    let refused = std::process::Command::new(idm_tests::binary("idm-gateway"))
        .args([
            "--core",
            &idmd.endpoint,
            "--listen",
            "127.0.0.1:0",
            "--no-tls",
            "--map",
            file.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("User.attributes[16]") && stderr.contains("emails"),
        "{stderr}"
    );
}

#[tokio::test]
async fn an_unreachable_core_is_a_503_not_a_hang() {
    let mut idmd = Idmd::start().await;
    let gateway = Gateway::start(&idmd).await;
    create(&gateway, json!({"schemas": [USER], "userName": "before"})).await;
    idmd.kill();
    gateway.get("/Users").await.expect_error(503, None);
    gateway
        .post("/Users", &json!({"schemas": [USER], "userName": "after"}))
        .await
        .expect_error(503, None);
    // Discovery does not need the core.
    gateway.get("/ServiceProviderConfig").await.expect(200);
}
