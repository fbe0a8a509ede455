//! SCIM PATCH end to end: every writable attribute (enterprise ones by URN
//! path), atomicity, the error types, what Microsoft Entra ID and Okta really
//! send, and a SCIM write reaching LDAP through implicit sync.

use idm_tests::directory::{self, Slapd};
use idm_tests::scim::Gateway;
use idm_tests::{Idmd, IdmdOptions, idm_conf};
use serde_json::{Value, json};

use crate::ldap::{eventually, ldap_env};
use crate::scim::{
    ENTERPRISE, GROUP, USER, barbara, create, encode, password_valid, patch_op, setup,
};

/// Applies one operation and returns the user afterwards.
async fn patched(gateway: &Gateway, id: &str, operation: Value) -> Value {
    let reply = gateway
        .patch(
            &format!("/Users/{id}"),
            &patch_op(json!([operation.clone()])),
        )
        .await;
    assert_eq!(reply.status, 200, "{operation}: {}", reply.body);
    let fetched = gateway.get(&format!("/Users/{id}")).await.expect(200).body;
    assert_eq!(fetched, reply.body, "the PATCH response is the resource");
    fetched
}

#[tokio::test]
async fn every_writable_attribute_can_be_patched() {
    let (idmd, gateway) = setup().await;
    let user = create(&gateway, barbara()).await;
    let id = user["id"].as_str().unwrap();
    let cases: Vec<(Value, &str, Value)> = vec![
        (
            json!({"op": "replace", "path": "userName", "value": "bjensen2"}),
            "/userName",
            json!("bjensen2"),
        ),
        (
            json!({"op": "replace", "path": "name.givenName", "value": "Barb"}),
            "/name/givenName",
            json!("Barb"),
        ),
        (
            json!({"op": "replace", "path": "name.familyName", "value": "Jensen-Smith"}),
            "/name/familyName",
            json!("Jensen-Smith"),
        ),
        (
            json!({"op": "replace", "path": "name.middleName", "value": "Jane"}),
            "/name/middleName",
            json!("Jane"),
        ),
        (
            json!({"op": "replace", "path": "name.honorificPrefix", "value": "Dr."}),
            "/name/honorificPrefix",
            json!("Dr."),
        ),
        (
            json!({"op": "remove", "path": "name.formatted"}),
            "/name/formatted",
            Value::Null,
        ),
        (
            json!({"op": "replace", "path": "displayName", "value": "Barb J"}),
            "/displayName",
            json!("Barb J"),
        ),
        (
            json!({"op": "add", "path": "nickName", "value": "Babs"}),
            "/nickName",
            json!("Babs"),
        ),
        (
            json!({"op": "add", "path": "profileUrl", "value": "https://login.example.com/bjensen"}),
            "/profileUrl",
            json!("https://login.example.com/bjensen"),
        ),
        (
            json!({"op": "add", "path": "title", "value": "Tour Guide"}),
            "/title",
            json!("Tour Guide"),
        ),
        (
            json!({"op": "add", "path": "userType", "value": "Employee"}),
            "/userType",
            json!("Employee"),
        ),
        (
            json!({"op": "add", "path": "preferredLanguage", "value": "en-US"}),
            "/preferredLanguage",
            json!("en-US"),
        ),
        (
            json!({"op": "add", "path": "locale", "value": "en-US"}),
            "/locale",
            json!("en-US"),
        ),
        (
            json!({"op": "add", "path": "timezone", "value": "America/Los_Angeles"}),
            "/timezone",
            json!("America/Los_Angeles"),
        ),
        (
            json!({"op": "replace", "path": "active", "value": false}),
            "/active",
            json!(false),
        ),
        (
            json!({"op": "replace", "path": "externalId", "value": "ext-2"}),
            "/externalId",
            json!("ext-2"),
        ),
        (
            json!({"op": "replace", "path": "emails[type eq \"work\"].value", "value": "barb@example.com"}),
            "/emails/0/value",
            json!("barb@example.com"),
        ),
        (
            json!({"op": "add", "path": "emails", "value": [{"value": "b@other.org", "type": "other"}]}),
            "/emails/2/value",
            json!("b@other.org"),
        ),
        (
            json!({"op": "remove", "path": "emails[type eq \"home\"]"}),
            "/emails/1/value",
            json!("b@other.org"),
        ),
        (
            json!({"op": "replace", "path": "phoneNumbers[type eq \"work\"].value", "value": "555-0100"}),
            "/phoneNumbers/0/value",
            json!("555-0100"),
        ),
        (
            json!({"op": "add", "path": "phoneNumbers", "value": [{"value": "555-0199", "type": "mobile"}]}),
            "/phoneNumbers/1/type",
            json!("mobile"),
        ),
        (
            json!({"op": "add", "path": "ims", "value": [{"value": "bjensen", "type": "xmpp"}]}),
            "/ims/0/value",
            json!("bjensen"),
        ),
        (
            json!({"op": "add", "path": "photos", "value": [{"value": "https://photos.example.com/b.jpg", "type": "photo"}]}),
            "/photos/0/type",
            json!("photo"),
        ),
        (
            json!({"op": "add", "path": "addresses", "value": [{"type": "work", "streetAddress": "100 Universal City Plaza", "locality": "Hollywood", "postalCode": "91608", "country": "US"}]}),
            "/addresses/0/locality",
            json!("Hollywood"),
        ),
        (
            json!({"op": "replace", "path": "addresses[type eq \"work\"].postalCode", "value": "91609"}),
            "/addresses/0/postalCode",
            json!("91609"),
        ),
        (
            json!({"op": "add", "path": "entitlements", "value": [{"value": "vpn"}]}),
            "/entitlements/0/value",
            json!("vpn"),
        ),
        (
            json!({"op": "add", "path": "roles", "value": [{"value": "guide", "primary": true}]}),
            "/roles/0/primary",
            json!(true),
        ),
        (
            json!({"op": "add", "path": "x509Certificates", "value": [{"value": "MIIDQzCCAqygAwIBAgICEAAwDQYJKoZIhvcNAQEFBQAw"}]}),
            "/x509Certificates/0/value",
            json!("MIIDQzCCAqygAwIBAgICEAAwDQYJKoZIhvcNAQEFBQAw"),
        ),
        (
            json!({"op": "replace", "path": format!("{ENTERPRISE}:employeeNumber"), "value": "1001"}),
            "/urn:ietf:params:scim:schemas:extension:enterprise:2.0:User/employeeNumber",
            json!("1001"),
        ),
        (
            json!({"op": "add", "path": format!("{ENTERPRISE}:costCenter"), "value": "4130"}),
            "/urn:ietf:params:scim:schemas:extension:enterprise:2.0:User/costCenter",
            json!("4130"),
        ),
        (
            json!({"op": "add", "path": format!("{ENTERPRISE}:organization"), "value": "Universal Studios"}),
            "/urn:ietf:params:scim:schemas:extension:enterprise:2.0:User/organization",
            json!("Universal Studios"),
        ),
        (
            json!({"op": "add", "path": format!("{ENTERPRISE}:division"), "value": "Theme Park"}),
            "/urn:ietf:params:scim:schemas:extension:enterprise:2.0:User/division",
            json!("Theme Park"),
        ),
        (
            json!({"op": "replace", "path": format!("{ENTERPRISE}:department"), "value": "Guest Services"}),
            "/urn:ietf:params:scim:schemas:extension:enterprise:2.0:User/department",
            json!("Guest Services"),
        ),
        (
            json!({"op": "add", "path": format!("{ENTERPRISE}:manager.value"), "value": "26118915-6090-4610-87e4-49d8ca9f808d"}),
            "/urn:ietf:params:scim:schemas:extension:enterprise:2.0:User/manager/value",
            json!("26118915-6090-4610-87e4-49d8ca9f808d"),
        ),
        (
            json!({"op": "add", "path": ENTERPRISE, "value": {"costCenter": "4131"}}),
            "/urn:ietf:params:scim:schemas:extension:enterprise:2.0:User/costCenter",
            json!("4131"),
        ),
        (
            json!({"op": "remove", "path": format!("{ENTERPRISE}:division")}),
            "/urn:ietf:params:scim:schemas:extension:enterprise:2.0:User/division",
            Value::Null,
        ),
        (
            json!({"op": "remove", "path": "nickName"}),
            "/nickName",
            Value::Null,
        ),
        (
            json!({"op": "remove", "path": "phoneNumbers[type eq \"mobile\"]"}),
            "/phoneNumbers/1",
            Value::Null,
        ),
    ];
    for (operation, pointer, expected) in cases {
        let user = patched(&gateway, id, operation.clone()).await;
        assert_eq!(
            user.pointer(pointer).cloned().unwrap_or(Value::Null),
            expected,
            "{operation}"
        );
    }
    // The mapped attributes landed on the managed properties.
    let stored = crate::scim::managed(&idmd, "user", id).await;
    assert_eq!(stored["userName"], "bjensen2");
    assert_eq!(stored["givenName"], "Barb");
    assert_eq!(stored["sn"], "Jensen-Smith");
    assert_eq!(stored["mail"], "barb@example.com");
    assert_eq!(stored["telephoneNumber"], "555-0100");
    assert_eq!(stored["accountStatus"], "inactive");
    assert_eq!(stored["externalId"], "ext-2");
    assert_eq!(stored["employeeNumber"], "1001");
    assert_eq!(stored["costCenter"], "4131");
    assert_eq!(stored["department"], "Guest Services");
    assert_eq!(stored["manager"], "26118915-6090-4610-87e4-49d8ca9f808d");
    assert!(stored.get("division").is_none());

    // password: write-only, checked through the core.
    let after = patched(
        &gateway,
        id,
        json!({"op": "replace", "path": "password", "value": "n3wPassw0rd!"}),
    )
    .await;
    assert!(after.get("password").is_none());
    assert!(password_valid(&idmd, id, "n3wPassw0rd!").await);
}

#[tokio::test]
async fn a_patch_is_all_or_nothing_and_names_what_is_wrong() {
    let (_idmd, gateway) = setup().await;
    let user = create(&gateway, barbara()).await;
    let path = format!("/Users/{}", user["id"].as_str().unwrap());
    let cases = [
        (
            json!([{"op": "replace", "path": "title", "value": "x"}, {"op": "replace", "path": "nosuch", "value": 1}]),
            "invalidPath",
        ),
        (
            json!([{"op": "replace", "path": "title", "value": "x"}, {"op": "remove"}]),
            "noTarget",
        ),
        (
            json!([{"op": "replace", "path": "title", "value": "x"}, {"op": "replace", "path": "id", "value": "y"}]),
            "mutability",
        ),
        (
            json!([{"op": "replace", "path": "title", "value": "x"}, {"op": "replace", "path": "meta.created", "value": "2020-01-01T00:00:00Z"}]),
            "mutability",
        ),
        (
            json!([{"op": "replace", "path": "title", "value": "x"}, {"op": "replace", "path": "active", "value": "maybe"}]),
            "invalidValue",
        ),
        (
            json!([{"op": "replace", "path": "title", "value": "x"}, {"op": "remove", "path": "userName"}]),
            "invalidValue",
        ),
        (
            json!([{"op": "replace", "path": "title", "value": "x"}, {"op": "replace", "path": "emails[type eq ", "value": "y"}]),
            "invalidPath",
        ),
        (
            json!([{"op": "replace", "path": "title", "value": "x"}, {"op": "replace", "path": "emails[value co \"zzz\"].type", "value": "y"}]),
            "noTarget",
        ),
    ];
    for (operations, scim_type) in cases {
        gateway
            .patch(&path, &patch_op(operations.clone()))
            .await
            .expect_error(400, Some(scim_type));
    }
    gateway
        .patch(&path, &json!({"schemas": [crate::scim::PATCH_OP], "Operations": [{"op": "move", "path": "title"}]}))
        .await
        .expect_error(400, Some("invalidSyntax"));
    let after = gateway.get(&path).await.expect(200).body;
    assert!(
        after.get("title").is_none(),
        "no operation of a failed PATCH was applied"
    );
    assert_eq!(after["meta"]["version"], user["meta"]["version"]);
    gateway
        .patch(
            "/Users/nobody",
            &patch_op(json!([{"op": "add", "path": "title", "value": "x"}])),
        )
        .await
        .expect_error(404, None);
}

#[tokio::test]
async fn what_entra_id_sends_is_understood() {
    let (_idmd, gateway) = setup().await;
    // Entra's create: booleans as strings, nulls, empty arrays, extension attributes.
    let user = gateway
        .post(
            "/Users",
            &json!({
                "schemas": [USER, ENTERPRISE, "urn:ietf:params:scim:schemas:extension:custom:2.0:User"],
                "externalId": "0a21f0f2-8d2a-4f8e-bf98-7a2f3a9d2d90",
                "userName": "Test_User_ab6490ee-1e48-479e-a20b-2d77186b5dd1",
                "active": "True",
                "displayName": "Test User",
                "emails": [{"primary": true, "type": "work", "value": "Test_User_fd0ea19b@testuser.com"}],
                "meta": {"resourceType": "User"},
                "name": {"formatted": "givenName familyName", "familyName": "familyName", "givenName": "givenName"},
                "roles": [],
                "nickName": null,
                ENTERPRISE: {"department": "Engineering", "manager": null},
                "urn:ietf:params:scim:schemas:extension:custom:2.0:User": {"badge": "42"}
            }),
        )
        .await
        .expect(201)
        .body;
    assert_eq!(user["active"], true);
    assert!(user.get("roles").is_none() && user.get("nickName").is_none());
    assert_eq!(user["schemas"], json!([USER, ENTERPRISE]));
    let id = user["id"].as_str().unwrap();

    // Entra looks users up by userName and externalId before creating them.
    let by_name = gateway
        .get(&format!(
            "/Users?filter={}",
            encode("userName eq \"test_user_ab6490ee-1e48-479e-a20b-2d77186b5dd1\"")
        ))
        .await
        .expect(200)
        .body;
    assert_eq!(by_name["totalResults"], 1);
    let by_external = gateway
        .get(&format!(
            "/Users?filter={}",
            encode("externalId eq \"0a21f0f2-8d2a-4f8e-bf98-7a2f3a9d2d90\"")
        ))
        .await
        .expect(200)
        .body;
    assert_eq!(by_external["totalResults"], 1);
    let none = gateway
        .get(&format!(
            "/Users?filter={}",
            encode("userName eq \"nobody@example.com\"")
        ))
        .await
        .expect(200)
        .body;
    assert_eq!(
        (
            none["totalResults"].as_u64(),
            none["Resources"].as_array().map(Vec::len)
        ),
        (Some(0), Some(0))
    );

    // Entra's update: capitalised ops, "False", path-less replace with dotted and URN keys.
    let updated = gateway
        .patch(
            &format!("/Users/{id}"),
            &patch_op(json!([
                {"op": "Replace", "path": "active", "value": "False"},
                {"op": "Add", "path": "emails[type eq \"work\"].value", "value": "updated@testuser.com"},
                {"op": "Replace", "value": {
                    "displayName": "Updated",
                    "name.familyName": "Family",
                    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department": "Sales",
                    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager": {"value": "m-1"}
                }},
                {"op": "Add", "path": "phoneNumbers[type eq \"work\"].value", "value": "+1 555 0100"},
                {"op": "Remove", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber"},
                {"op": "Add", "path": "roles", "value": [{"primary": "False", "type": "WindowsAzureActiveDirectoryRole", "value": "Admin"}]}
            ])),
        )
        .await
        .expect(200)
        .body;
    assert_eq!(updated["active"], false);
    assert_eq!(updated["emails"][0]["value"], "updated@testuser.com");
    assert_eq!(updated["emails"][0]["primary"], true);
    assert_eq!(updated["displayName"], "Updated");
    assert_eq!(updated["name"]["familyName"], "Family");
    assert_eq!(updated[ENTERPRISE]["department"], "Sales");
    assert_eq!(updated[ENTERPRISE]["manager"]["value"], "m-1");
    assert_eq!(updated["roles"][0]["primary"], false);
    assert_eq!(
        updated["phoneNumbers"],
        json!([{"value": "+1 555 0100", "type": "work"}])
    );

    // Entra sets a manager by its bare id.
    let managed = gateway
        .patch(
            &format!("/Users/{id}"),
            &patch_op(
                json!([{"op": "Add", "path": format!("{ENTERPRISE}:manager"), "value": "m-2"}]),
            ),
        )
        .await
        .expect(200)
        .body;
    assert_eq!(managed[ENTERPRISE]["manager"], json!({"value": "m-2"}));

    // Entra's group membership changes: add, then remove with a value array.
    let other = create(&gateway, json!({"schemas": [USER], "userName": "second"})).await;
    let group = gateway
        .post("/Groups", &json!({"schemas": [GROUP], "displayName": "Entra Group", "externalId": "e-1", "members": []}))
        .await
        .expect(201)
        .body;
    let group_path = format!("/Groups/{}", group["id"].as_str().unwrap());
    gateway
        .patch(&group_path, &patch_op(json!([{"op": "Add", "path": "members", "value": [{"value": id}, {"value": other["id"]}]}])))
        .await
        .expect(200);
    let after = gateway
        .patch(
            &group_path,
            &patch_op(json!([{"op": "Remove", "path": "members", "value": [{"value": id}]}])),
        )
        .await
        .expect(200)
        .body;
    assert_eq!(after["members"].as_array().unwrap().len(), 1);
    assert_eq!(after["members"][0]["value"], other["id"]);
    // Entra probes a group's membership with a filter and excludedAttributes.
    let probe = gateway
        .get(&format!(
            "/Groups?filter={}&excludedAttributes=members",
            encode(&format!(
                "id eq \"{}\" and members[value eq \"{}\"]",
                group["id"].as_str().unwrap(),
                other["id"].as_str().unwrap()
            ))
        ))
        .await
        .expect(200)
        .body;
    assert_eq!(probe["totalResults"], 1);
    assert!(probe["Resources"][0].get("members").is_none());
    // Entra renames a group path-lessly.
    let renamed = gateway
        .patch(
            &group_path,
            &patch_op(
                json!([{"op": "Replace", "value": {"id": "ignored", "displayName": "Renamed"}}]),
            ),
        )
        .await
        .expect(200)
        .body;
    assert_eq!(renamed["displayName"], "Renamed");
    // Entra's soft delete then hard delete.
    gateway.delete(&format!("/Users/{id}")).await.expect(204);
}

#[tokio::test]
async fn what_okta_sends_is_understood() {
    let (_idmd, gateway) = setup().await;
    // Okta's create, application/json and a full user.
    let user = gateway
        .raw(
            "POST",
            "/Users",
            "application/json; charset=utf-8",
            json!({
                "schemas": [USER],
                "userName": "isabella@example.com",
                "name": {"givenName": "Isabella", "familyName": "Garcia"},
                "emails": [{"primary": true, "value": "isabella@example.com", "type": "work"}],
                "displayName": "Isabella Garcia",
                "locale": "en-US",
                "externalId": "00u1dhhb1fkIGP7RL1d8",
                "groups": [],
                "password": "1mz050nq",
                "active": true
            })
            .to_string()
            .into_bytes(),
        )
        .await
        .expect(201)
        .body;
    let path = format!("/Users/{}", user["id"].as_str().unwrap());
    // Okta's lookups: startIndex and count always sent.
    let page = gateway
        .get(&format!(
            "/Users?filter={}&startIndex=1&count=100",
            encode("userName eq \"isabella@example.com\"")
        ))
        .await
        .expect(200)
        .body;
    assert_eq!(page["Resources"][0]["id"], user["id"]);
    // Okta deactivates with a path-less replace, and sends PUT with the full user.
    let deactivated = gateway
        .patch(
            &path,
            &patch_op(json!([{"op": "replace", "value": {"active": false}}])),
        )
        .await
        .expect(200)
        .body;
    assert_eq!(deactivated["active"], false);
    let mut full = deactivated.clone();
    full["name"]["givenName"] = json!("Bella");
    full["meta"] = json!({"resourceType": "User", "version": "W/\"999\""});
    let put = gateway.put(&path, &full).await.expect(200).body;
    assert_eq!(put["name"]["givenName"], "Bella");
    assert_eq!(put["id"], user["id"], "the id in a PUT body is ignored");

    // Okta's group push: create with members, then remove one by filter, replace the name.
    let group = gateway
        .post(
            "/Groups",
            &json!({"schemas": [GROUP], "displayName": "Okta Push", "members": [{"value": user["id"], "display": "isabella@example.com"}]}),
        )
        .await
        .expect(201)
        .body;
    let group_path = format!("/Groups/{}", group["id"].as_str().unwrap());
    let emptied = gateway
        .patch(
            &group_path,
            &patch_op(json!([
                {"op": "remove", "path": format!("members[value eq \"{}\"]", user["id"].as_str().unwrap())},
                {"op": "replace", "value": {"id": group["id"], "displayName": "Okta Push 2"}}
            ])),
        )
        .await
        .expect(200)
        .body;
    assert!(emptied.get("members").is_none());
    assert_eq!(emptied["displayName"], "Okta Push 2");
    let replaced = gateway
        .put(&group_path, &json!({"schemas": [GROUP], "displayName": "Okta Push 3", "members": [{"value": user["id"]}]}))
        .await
        .expect(200)
        .body;
    assert_eq!(replaced["members"][0]["value"], user["id"]);
}

#[tokio::test]
async fn a_scim_write_reaches_ldap_through_implicit_sync() {
    let slapd = Slapd::start().unwrap_or_else(|e| panic!("a real slapd is needed: {e}"));
    let conf = idm_conf("sync");
    let idmd = Idmd::start_with(IdmdOptions {
        conf: Some(conf.path().to_path_buf()),
        env: ldap_env(&slapd),
        ..Default::default()
    })
    .await;
    let gateway = Gateway::start(&idmd).await;
    let user = create(
        &gateway,
        json!({
            "schemas": [USER],
            "userName": "scim1",
            "name": {"givenName": "Sam", "familyName": "Cimmer"},
            "emails": [{"value": "scim1@example.com", "type": "work"}],
            "password": "Sc1mPassw0rd"
        }),
    )
    .await;
    let entry = eventually("the SCIM user in LDAP", || {
        directory::account(&slapd, "scim1")
    })
    .await;
    assert_eq!(entry.get("mail"), Some("scim1@example.com"));
    assert_eq!(entry.get("sn"), Some("Cimmer"));
    let dn = format!("uid=scim1,{}", slapd.base_dn());
    assert!(directory::can_bind(&slapd, &dn, "Sc1mPassw0rd"));

    gateway
        .patch(
            &format!("/Users/{}", user["id"].as_str().unwrap()),
            &patch_op(json!([{"op": "replace", "path": "name.familyName", "value": "Changed"}])),
        )
        .await
        .expect(200);
    eventually("the PATCH in LDAP", || {
        directory::account(&slapd, "scim1").filter(|e| e.get("sn") == Some("Changed"))
    })
    .await;
    gateway
        .delete(&format!("/Users/{}", user["id"].as_str().unwrap()))
        .await
        .expect(204);
    eventually("the DELETE in LDAP", || {
        directory::account(&slapd, "scim1").is_none().then_some(())
    })
    .await;
}
