//! Manage → User (and groups) over HTTP: the list with its search, sort and
//! pages; an object's page with its groups, linked accounts and audit trail;
//! edit at the revision read (a concurrent change is refused, and said),
//! policy failures beside their fields, create, delete, set password, group
//! members; a read account sees and changes nothing; a form without its
//! CSRF token is refused. Each page asked for whole and as htmx asks for it.

use idm_proto::v1::{
    CreateObjectRequest, PatchObjectRequest, PatchOperation, VerifyPasswordRequest,
};
use idm_tests::console::{self, Console, Page, Running};
use idm_tests::{Clients, attrs};
use serde_json::{Value, json};

use crate::{create_user, managed_object};

/// The `idm-sync` fixture's mapping, with users whose properties carry
/// titles, searchable flags and Wren's policies.
const MANAGED: &str = r#"{"objects": [
  {"name": "user", "schema": {"title": "User",
    "order": ["userName", "givenName", "sn", "mail", "telephoneNumber", "accountStatus", "password"],
    "required": ["userName"],
    "properties": {
      "password": {"type": "string", "private": true, "title": "Password", "policies": [
        {"policyId": "minimum-length", "params": {"minLength": 8}},
        {"policyId": "at-least-X-capitals", "params": {"numCaps": 1}},
        {"policyId": "at-least-X-numbers", "params": {"numNums": 1}}]},
      "userName": {"type": "string", "title": "Username", "searchable": true, "unique": true},
      "givenName": {"type": "string", "title": "First Name", "searchable": true},
      "sn": {"type": "string", "title": "Last Name", "searchable": true},
      "mail": {"type": "string", "title": "Email Address", "searchable": true,
        "policies": [{"policyId": "valid-email-address-format"}]},
      "telephoneNumber": {"type": "string", "title": "Mobile Phone",
        "policies": [{"policyId": "valid-phone-format"}]},
      "accountStatus": {"type": "string", "title": "Status"}}}},
  {"name": "group", "schema": {"properties": {
    "name": {"type": "string", "required": true, "searchable": true},
    "description": {"type": "string"},
    "members": {"type": "array", "title": "Members",
      "items": {"type": "relationship", "resourceCollection": "managed/user"},
      "reverseProperty": "groups"}}}}]}"#;

async fn start() -> Running {
    let conf = idm_tests::idm_conf("sync");
    std::fs::write(conf.path().join("managed.json"), MANAGED).unwrap();
    console::start_with(idm_tests::IdmdOptions::default(), Some(conf)).await
}

fn person(user_name: &str, given: &str, sn: &str) -> Value {
    json!({"userName": user_name, "givenName": given, "sn": sn,
           "mail": format!("{user_name}@example.com"), "telephoneNumber": "555 0100"})
}

async fn jon(c: &mut Clients) {
    create_user(c, "123", person("snow123", "Jon", "Snow")).await;
}

/// The page whole, and as htmx asks for its main block: the same content,
/// the fragment without the document around it.
async fn both(console: &Console, path: &str, status: u16) -> Page {
    let fragment = console.get_fragment(path).await.expect(status);
    // Error pages stand on their own (the lead's error.rs).
    if status == 200 {
        assert!(!fragment.is_whole_page(), "{path} as a fragment");
    }
    let page = console.get(path).await.expect(status);
    assert!(page.is_whole_page(), "{path} whole");
    page
}

/// `text` as a query value, every byte but letters and digits escaped.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The text of the field-problem span of `field` on a form page.
fn problem_of(page: &Page, field: &str) -> Option<String> {
    let at = page.body.find(&format!("id=\"f-{field}-problem\""))?;
    let rest = &page.body[at..];
    let start = rest.find('>')? + 1;
    let end = rest[start..].find('<')?;
    Some(rest[start..start + end].to_string())
}

#[tokio::test]
async fn the_user_list_searches_sorts_and_pages_over_the_searchable_columns() {
    let running = start().await;
    let mut c = running.idmd.clients().await;
    let admin = &running.admin;
    both(admin, "/admin/managed/user", 200)
        .await
        .shows("No User objects yet.");
    jon(&mut c).await;
    for i in 0..119 {
        create_user(
            &mut c,
            &format!("u{i:03}"),
            person(&format!("user{i:03}"), "Ann", &format!("Doe{i:03}")),
        )
        .await;
    }

    let first = both(admin, "/admin/managed/user", 200).await;
    // Columns: the searchable properties in schema order, titled.
    let heads: Vec<usize> = ["Username", "First Name", "Last Name", "Email Address"]
        .iter()
        .map(|t| {
            first
                .body
                .find(&format!(">{t}</a></th>"))
                .or_else(|| first.body.find(&format!(">{t} ▲</a></th>")))
                .unwrap_or_else(|| panic!("column {t}"))
        })
        .collect();
    assert!(heads.windows(2).all(|w| w[0] < w[1]), "in schema order");
    assert!(
        !first.contains(">Mobile Phone<"),
        "not searchable: no column"
    );
    // Sorted by the first column when nothing else is asked for.
    assert!(
        first.contains(
            r#"aria-sort="ascending"><a href="/admin/managed/user?sort=-userName">Username ▲</a>"#
        ),
        "{}",
        first.body
    );
    let first = first
        .shows("1–50 of 120")
        .shows(r#"href="/admin/managed/user?page=2" rel="next""#)
        .shows(r#"href="/admin/managed/user/123">snow123</a>"#);
    assert!(!first.contains("rel=\"prev\""));
    let last = both(admin, "/admin/managed/user?page=3", 200)
        .await
        .shows("101–120 of 120")
        .shows(r#"href="/admin/managed/user?page=2" rel="prev""#);
    assert!(!last.contains("rel=\"next\""));

    // Search: sw over the columns, OR-ed; any case.
    let snow = both(admin, "/admin/managed/user?q=snow", 200)
        .await
        .shows("1–1 of 1")
        .shows("snow123");
    assert!(!snow.contains("user000"));
    // Doe110 … Doe118.
    both(admin, "/admin/managed/user?q=Doe11", 200)
        .await
        .shows("1–9 of 9");
    // The text is a value, never filter syntax.
    for hostile in [
        r#"") or true or (""#,
        r#"x" or userName pr or sn eq "y"#,
        "\\",
    ] {
        both(
            admin,
            &format!("/admin/managed/user?q={}", encode(hostile)),
            200,
        )
        .await
        .shows("Nothing matches");
    }

    // Sort by any column, both ways; the header links say which way next.
    let down = both(admin, "/admin/managed/user?sort=-userName", 200)
        .await
        .shows(r#"aria-sort="descending""#)
        .shows(r#"href="/admin/managed/user?sort=userName""#);
    let order =
        |page: &Page, a: &str, b: &str| page.body.find(a).unwrap() < page.body.find(b).unwrap();
    assert!(order(&down, ">user118<", ">user117<"), "descending");
    assert!(
        !down.contains(">snow123<"),
        "every user… before snow…, descending"
    );
    both(admin, "/admin/managed/user?sort=-userName&page=3", 200)
        .await
        .shows(">snow123<");
    let up = both(admin, "/admin/managed/user?sort=sn", 200).await;
    assert!(order(&up, ">user000<", ">user001<"));
    both(admin, "/admin/managed/user?sort=sn&page=3", 200)
        .await
        .shows("snow123")
        .shows(r#"href="/admin/managed/user?sort=sn&#38;page=2""#);
    both(admin, "/admin/managed/user?page=0", 400).await;
    both(admin, "/admin/managed/nosuchtype", 404).await;
}

#[tokio::test]
async fn a_user_page_shows_properties_groups_linked_accounts_and_the_audit_trail() {
    let running = start().await;
    let mut c = running.idmd.clients().await;
    jon(&mut c).await;
    c.objects
        .create_object(CreateObjectRequest {
            parent: "managed/group".into(),
            object_id: "watch".into(),
            attributes: attrs(json!({"name": "Night's Watch",
                "members": [{"_ref": "managed/user/123"}]})),
        })
        .await
        .unwrap();

    let page = both(&running.admin, "/admin/managed/user/123", 200)
        .await
        .shows("<h1>snow123</h1>")
        .shows("<dt>Mobile Phone</dt>")
        .shows("555 0100")
        // Groups, from the groups' members.
        // Named as their list names them: a group by its name.
        .shows(r#"<a href="/admin/managed/group/watch">Night&#39;s Watch</a>"#)
        // Every mapping of users, linked or not yet.
        .shows("csvEmployee_managedUser")
        .shows("managedUser_ldapAccount")
        .shows("not linked")
        // The audit trail of the object.
        .shows("Audit trail")
        .shows("<td>create</td>")
        .shows(r#"href="/admin/managed/user/123/edit""#)
        .shows(r#"href="/admin/managed/user/123/password""#);
    assert!(!page.contains("Password</dt>"), "private: never shown");

    // A group lists its members, each with a remove button, and an add form.
    both(&running.admin, "/admin/managed/group/watch", 200)
        .await
        .shows("Night&#39;s Watch")
        .shows(r#"<a href="/admin/managed/user/123">snow123</a>"#)
        .shows(r#"action="/admin/managed/group/watch/related/members/remove""#)
        .shows(r#"action="/admin/managed/group/watch/related/members/add""#);
    both(&running.admin, "/admin/managed/user/nobody", 404).await;
}

#[tokio::test]
async fn an_edit_is_saved_at_the_revision_read_and_a_concurrent_change_is_not_overwritten() {
    let running = start().await;
    let mut c = running.idmd.clients().await;
    jon(&mut c).await;
    let admin = &running.admin;

    let form = both(admin, "/admin/managed/user/123/edit", 200)
        .await
        .shows(r#"<label for="f-telephoneNumber">Mobile Phone</label>"#)
        .shows(r#"value="555 0100""#);
    assert!(
        !form.contains("name=\"password\""),
        "no private input on edit"
    );
    let revision = idm_tests::console::input_value(&form.body, "revision").unwrap();

    // Someone else changes the user meanwhile.
    c.objects
        .patch_object(PatchObjectRequest {
            name: "managed/user/123".into(),
            operations: vec![PatchOperation {
                operation: "replace".into(),
                field: "/sn".into(),
                value: Some(idm_proto::json::to_proto_value(&json!("Stark"))),
                ..Default::default()
            }],
            expected_revision: None,
        })
        .await
        .unwrap();
    let fields = |phone: &'static str, revision: &str| -> Vec<(&'static str, String)> {
        vec![
            ("revision", revision.to_string()),
            ("userName", "snow123".into()),
            ("givenName", "Jon".into()),
            ("sn", "Snow".into()),
            ("mail", "snow123@example.com".into()),
            ("telephoneNumber", phone.into()),
            ("accountStatus", String::new()),
        ]
    };
    let post = |fields: Vec<(&'static str, String)>| async move {
        let pairs: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
        admin.post("/admin/managed/user/123/edit", &pairs).await
    };
    post(fields("555 9999", &revision))
        .await
        .expect(409)
        .shows("were <strong>not</strong> saved")
        .shows(r#"value="555 9999""#)
        .shows(r#"href="/admin/managed/user/123/edit""#);
    let now = managed_object(&mut c, "user", "123").await.unwrap();
    assert_eq!(now["sn"], "Stark", "the other change stands");
    assert_eq!(
        now["telephoneNumber"], "555 0100",
        "the stale form changed nothing"
    );

    // From a fresh form: saved, and an emptied field is removed.
    let form = admin.get("/admin/managed/user/123/edit").await.expect(200);
    let revision = idm_tests::console::input_value(&form.body, "revision").unwrap();
    let mut saved = fields("555 1234", &revision);
    saved.retain(|(k, _)| *k != "givenName");
    saved.push(("givenName", String::new()));
    post(saved)
        .await
        .expect_redirect("/admin/managed/user/123?done=saved");
    let now = managed_object(&mut c, "user", "123").await.unwrap();
    assert_eq!(now["telephoneNumber"], "555 1234");
    assert_eq!(now["sn"], "Snow");
    assert!(now.get("givenName").is_none(), "{now}");
    admin
        .get("/admin/managed/user/123?done=saved")
        .await
        .shows("Saved.");

    // As htmx posts it: the same answers.
    let form = admin.get("/admin/managed/user/123/edit").await;
    let revision = idm_tests::console::input_value(&form.body, "revision").unwrap();
    let page = admin
        .post_fragment(
            "/admin/managed/user/123/edit",
            &[
                ("revision", &revision),
                ("userName", "snow123"),
                ("telephoneNumber", "not a phone"),
            ],
        )
        .await
        .expect(400);
    assert!(!page.is_whole_page());
    assert!(
        problem_of(&page, "telephoneNumber").is_some(),
        "{}",
        page.body
    );
}

#[tokio::test]
async fn policy_failures_show_beside_their_fields_and_passwords_are_never_echoed() {
    let running = start().await;
    let mut c = running.idmd.clients().await;
    jon(&mut c).await;
    let admin = &running.admin;
    let form = admin.get("/admin/managed/user/123/edit").await;
    let revision = idm_tests::console::input_value(&form.body, "revision").unwrap();
    let page = admin
        .post(
            "/admin/managed/user/123/edit",
            &[
                ("revision", &revision),
                ("userName", ""),
                ("mail", "not-an-address"),
                ("telephoneNumber", "call me"),
            ],
        )
        .await
        .expect(400)
        .shows(r#"value="call me""#);
    let phone = problem_of(&page, "telephoneNumber").expect("a problem beside the phone");
    assert!(phone.starts_with("Mobile Phone "), "{phone}");
    assert!(problem_of(&page, "mail").is_some(), "{}", page.body);
    assert!(
        problem_of(&page, "userName").is_some(),
        "required: {}",
        page.body
    );
    assert!(page.contains(r#"class="field invalid""#));
    let unchanged = managed_object(&mut c, "user", "123").await.unwrap();
    assert_eq!(unchanged["telephoneNumber"], "555 0100");

    // Set password: a weak one fails its policies, beside the field; the
    // value is never sent back.
    both(admin, "/admin/managed/user/123/password", 200)
        .await
        .shows(r#"type="password""#);
    let weak = admin
        .post(
            "/admin/managed/user/123/password",
            &[("password", "weakling"), ("password.confirm", "weakling")],
        )
        .await
        .expect(400);
    assert!(problem_of(&weak, "password").is_some(), "{}", weak.body);
    assert!(!weak.contains("weakling"), "never echoed");
    let differ = admin
        .post(
            "/admin/managed/user/123/password",
            &[
                ("password", "Winter1sComing"),
                ("password.confirm", "Winter1sC0ming"),
            ],
        )
        .await
        .expect(400);
    assert!(
        problem_of(&differ, "password")
            .unwrap()
            .contains("confirmation")
    );
    assert!(!differ.contains("Winter1s"));
    admin
        .post(
            "/admin/managed/user/123/password",
            &[
                ("password", "Winter1sComing"),
                ("password.confirm", "Winter1sComing"),
            ],
        )
        .await
        .expect_redirect("/admin/managed/user/123?done=password");
    let valid = c
        .objects
        .verify_password(VerifyPasswordRequest {
            name: "managed/user/123".into(),
            property: String::new(),
            password: "Winter1sComing".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .valid;
    assert!(valid);
    let shown = admin.get("/admin/managed/user/123?done=password").await;
    assert!(!shown.contains("Winter1sComing"));
}

#[tokio::test]
async fn create_add_a_member_remove_it_and_delete_behind_a_confirmation() {
    let running = start().await;
    let mut c = running.idmd.clients().await;
    let admin = &running.admin;

    let form = both(admin, "/admin/managed/user/new", 200)
        .await
        .shows(r#"name="_id""#)
        .shows(r#"name="password" type="password""#);
    assert!(form.contains("(required)"));
    // A bad value: the form again with what was typed (but the password).
    let refused = admin
        .post(
            "/admin/managed/user/new",
            &[
                ("_id", "ygritte"),
                ("userName", "ygritte"),
                ("mail", "nope"),
                ("password", "Wildling-99"),
            ],
        )
        .await
        .expect(400)
        .shows(r#"value="ygritte""#);
    assert!(problem_of(&refused, "mail").is_some());
    assert!(!refused.contains("Wildling-99"));
    admin
        .post(
            "/admin/managed/user/new",
            &[
                ("_id", "ygritte"),
                ("userName", "ygritte"),
                ("givenName", "Ygritte"),
                ("mail", "ygritte@example.com"),
                ("password", "Wildling-99"),
            ],
        )
        .await
        .expect_redirect("/admin/managed/user/ygritte?done=created");
    assert_eq!(
        managed_object(&mut c, "user", "ygritte").await.unwrap()["givenName"],
        "Ygritte"
    );
    // The same id again: said beside the id.
    admin
        .post(
            "/admin/managed/user/new",
            &[("_id", "ygritte"), ("userName", "other")],
        )
        .await
        .expect(409);

    // A group, then its members.
    admin
        .post(
            "/admin/managed/group/new",
            &[("_id", "free"), ("name", "Free Folk")],
        )
        .await
        .expect_redirect("/admin/managed/group/free?done=created");
    let group = admin.get("/admin/managed/group/free").await;
    let revision = idm_tests::console::input_value(&group.body, "revision").unwrap();
    admin
        .post(
            "/admin/managed/group/free/related/members/add",
            &[("revision", &revision), ("id", "ygritte")],
        )
        .await
        .expect_redirect("/admin/managed/group/free?done=added");
    let members = managed_object(&mut c, "group", "free").await.unwrap()["members"].clone();
    assert_eq!(members, json!([{"_ref": "managed/user/ygritte"}]));
    // A stale page changes nothing.
    admin
        .post(
            "/admin/managed/group/free/related/members/remove",
            &[("revision", &revision), ("ref", "managed/user/ygritte")],
        )
        .await
        .expect(409);
    admin
        .get("/admin/managed/user/ygritte")
        .await
        .shows(r#"<a href="/admin/managed/group/free">Free Folk</a>"#);
    let group = admin.get("/admin/managed/group/free").await;
    let revision = idm_tests::console::input_value(&group.body, "revision").unwrap();
    admin
        .post(
            "/admin/managed/group/free/related/members/remove",
            &[("revision", &revision), ("ref", "managed/user/ygritte")],
        )
        .await
        .expect_redirect("/admin/managed/group/free?done=removed");
    let members = managed_object(&mut c, "group", "free").await.unwrap()["members"].clone();
    assert!(members.as_array().is_none_or(Vec::is_empty), "{members}");

    // Delete: a confirmation page first, then gone.
    let confirm = both(admin, "/admin/managed/user/ygritte/delete", 200)
        .await
        .shows("Delete User ygritte?");
    let revision = idm_tests::console::input_value(&confirm.body, "revision").unwrap();
    admin
        .post(
            "/admin/managed/user/ygritte/delete",
            &[("revision", &revision)],
        )
        .await
        .expect_redirect("/admin/managed/user");
    assert!(managed_object(&mut c, "user", "ygritte").await.is_none());
}

#[tokio::test]
async fn a_read_account_sees_everything_and_changes_nothing_and_forms_need_their_csrf_token() {
    let running = start().await;
    let mut c = running.idmd.clients().await;
    jon(&mut c).await;
    let reader = running.signed_in_as("watcher", "read").await;

    let list = both(&reader, "/admin/managed/user", 200)
        .await
        .shows("snow123");
    assert!(!list.contains("/admin/managed/user/new"), "no New button");
    let page = both(&reader, "/admin/managed/user/123", 200)
        .await
        .shows("555 0100");
    for button in ["/edit\"", "/password\"", "/delete\""] {
        assert!(!page.contains(button), "no {button} button");
    }
    for path in [
        "/admin/managed/user/new",
        "/admin/managed/user/123/edit",
        "/admin/managed/user/123/password",
        "/admin/managed/user/123/delete",
    ] {
        reader.get(path).await.expect(403);
    }
    let form = running.admin.get("/admin/managed/user/123/edit").await;
    let revision = idm_tests::console::input_value(&form.body, "revision").unwrap();
    reader
        .post(
            "/admin/managed/user/123/edit",
            &[("revision", &revision), ("userName", "hacked")],
        )
        .await
        .expect(403);
    reader
        .post("/admin/managed/user/123/delete", &[("revision", &revision)])
        .await
        .expect(403);
    reader
        .post("/admin/managed/user/new", &[("userName", "mole")])
        .await
        .expect(403);
    assert_eq!(
        managed_object(&mut c, "user", "123").await.unwrap()["userName"],
        "snow123"
    );

    // An admin's form without the token, or with another session's.
    running
        .admin
        .post_exactly(
            "/admin/managed/user/123/edit",
            &[("revision", &revision), ("userName", "forged")],
        )
        .await
        .expect(403);
    running
        .admin
        .post_exactly(
            "/admin/managed/user/123/delete",
            &[("_csrf", &reader.csrf()), ("revision", &revision)],
        )
        .await
        .expect(403);
    assert!(managed_object(&mut c, "user", "123").await.is_some());
}
