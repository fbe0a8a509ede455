//! Accounts and API tokens in the console (admin only): create, change the
//! role, disable and enable, delete after a confirmation; a token's secret
//! shown once, in the answer to its creation; revoke. A read account gets
//! 403 and no link; a form without its CSRF token changes nothing.

use idm_proto::v1::{QueryObjectsRequest, Scope};
use idm_tests::console::{self, Console, Page};
use tonic::Code;

use crate::expect_code;

/// The `value` of the element with `id` (the new token's secret field has
/// an id and no name: it is never posted back).
fn value_of_id(html: &str, id: &str) -> Option<String> {
    let at = html.find(&format!("id=\"{id}\""))?;
    let rest = &html[at..];
    let start = rest.find("value=\"")? + "value=\"".len();
    let end = rest[start..].find('"')?;
    Some(rest[start..start + end].to_string())
}

fn shows_whole_and_fragment(whole: &Page, fragment: &Page, text: &str) {
    assert!(whole.is_whole_page(), "{}", whole.body);
    assert!(!fragment.is_whole_page(), "{}", fragment.body);
    assert!(whole.contains(text), "{text} not in {}", whole.body);
    assert!(fragment.contains(text), "{text} not in {}", fragment.body);
}

#[tokio::test]
async fn accounts_are_created_given_roles_disabled_and_deleted_after_a_confirmation() {
    let running = console::start().await;
    let admin = &running.admin;
    let whole = admin.get("/admin/accounts").await.expect(200);
    let fragment = admin.get_fragment("/admin/accounts").await.expect(200);
    shows_whole_and_fragment(&whole, &fragment, "Create an account");
    assert!(whole.contains("openidm-admin"));
    assert!(whole.contains(r#"<span class="badge">you</span>"#));
    // No button locks you out of your own console.
    assert!(!whole.contains(r#"aria-label="Disable openidm-admin""#));
    assert!(!whole.contains(r#"aria-label="Delete openidm-admin""#));
    assert!(whole.contains("Another admin can disable or delete your account."));

    // Create; the answer is a redirect to the list, which says so.
    admin
        .post(
            "/admin/accounts",
            &[
                ("name", "alice"),
                ("password", "Alice-Pass-1"),
                ("role", "read"),
            ],
        )
        .await
        .expect_redirect("/admin/accounts?done=created&name=alice");
    admin
        .get("/admin/accounts?done=created&name=alice")
        .await
        .expect(200)
        .shows("Account alice created.")
        .shows("never");
    let alice = Console::login(&running.gateway, "alice", "Alice-Pass-1").await;
    alice.get("/admin/").await.expect(200).shows("read only");

    // Refusals come back beside their field, the name kept, the password never.
    let weak = admin
        .post(
            "/admin/accounts",
            &[("name", "bob"), ("password", "Sh0rt!"), ("role", "scim")],
        )
        .await
        .expect(400)
        .shows("at least 8 characters")
        .shows(r#"id="new-password-problem""#)
        .shows(r#"value="bob""#);
    assert!(!weak.contains("Sh0rt!"));
    admin
        .post_fragment(
            "/admin/accounts",
            &[
                ("name", "a b"),
                ("password", "Long-Enough-1"),
                ("role", "read"),
            ],
        )
        .await
        .expect(400)
        .shows(r#"id="new-name-problem""#);
    admin
        .post(
            "/admin/accounts",
            &[
                ("name", "alice"),
                ("password", "Long-Enough-1"),
                ("role", "read"),
            ],
        )
        .await
        .expect(409)
        .shows("already exists");

    // A new role ends alice's session; her next one has it.
    admin
        .post("/admin/accounts/alice/role", &[("role", "scim")])
        .await
        .expect_redirect("/admin/accounts?done=role&name=alice");
    alice.get("/admin/").await.expect_redirect("/admin/login");
    let row = admin.get("/admin/accounts").await.expect(200);
    assert!(
        row.contains(r#"<option value="scim" selected>scim</option>"#),
        "{}",
        row.body
    );

    // Disabled: it cannot sign in; enabled again, it can.
    admin
        .post_fragment("/admin/accounts/alice/enabled", &[("enabled", "false")])
        .await
        .expect_redirect("/admin/accounts?done=disabled&name=alice");
    Console::new(&running.gateway)
        .try_login("alice", "Alice-Pass-1")
        .await
        .expect(401);
    admin
        .post("/admin/accounts/alice/enabled", &[("enabled", "true")])
        .await
        .expect_redirect("/admin/accounts?done=enabled&name=alice");
    Console::login(&running.gateway, "alice", "Alice-Pass-1").await;

    // The last enabled admin keeps its role, and is not disabled or deleted.
    for (path, field) in [
        ("/admin/accounts/openidm-admin/role", ("role", "read")),
        (
            "/admin/accounts/openidm-admin/enabled",
            ("enabled", "false"),
        ),
        ("/admin/accounts/openidm-admin/delete", ("confirm", "yes")),
    ] {
        admin
            .post(path, &[field])
            .await
            .expect(409)
            .shows("last enabled admin account");
    }

    // Delete asks first; only the confirmed form deletes.
    let asked = admin
        .post("/admin/accounts/alice/delete", &[])
        .await
        .expect(200)
        .shows("Delete account alice?")
        .shows(r#"name="confirm" value="yes""#);
    assert!(asked.is_whole_page());
    admin
        .post_fragment("/admin/accounts/alice/delete", &[])
        .await
        .expect(200)
        .shows("Delete account alice?");
    admin.get("/admin/accounts").await.shows(">alice");
    admin
        .post("/admin/accounts/alice/delete", &[("confirm", "yes")])
        .await
        .expect_redirect("/admin/accounts?done=deleted&name=alice");
    let after = admin.get("/admin/accounts").await.expect(200);
    assert!(!after.contains(">alice"), "{}", after.body);

    // No CSRF token, no change.
    admin
        .post_exactly(
            "/admin/accounts",
            &[
                ("name", "mallory"),
                ("password", "Mallory-Pass-1"),
                ("role", "admin"),
            ],
        )
        .await
        .expect(403);
    admin
        .post_exactly("/admin/accounts/openidm-admin/role", &[("role", "read")])
        .await
        .expect(403);
    let list = admin.get("/admin/accounts").await;
    assert!(!list.contains("mallory"));

    // The trail has every change, by the admin, and no password.
    let trail = admin
        .get("/admin/audit?operation=account.")
        .await
        .expect(200);
    for operation in [
        "account.create",
        "account.set-role",
        "account.disable",
        "account.enable",
        "account.delete",
    ] {
        assert!(trail.contains(operation), "{operation}: {}", trail.body);
    }
    for password in ["Alice-Pass-1", "Sh0rt!", "Mallory-Pass-1"] {
        assert!(!trail.contains(password));
        assert!(!running.gateway.log().contains(password));
    }
}

#[tokio::test]
async fn a_new_tokens_secret_is_shown_once_and_a_revoked_token_stops_working() {
    let running = console::start().await;
    let admin = &running.admin;
    let whole = admin.get("/admin/tokens").await.expect(200);
    let fragment = admin.get_fragment("/admin/tokens").await.expect(200);
    shows_whole_and_fragment(&whole, &fragment, "Create a token");

    let created = admin
        .post(
            "/admin/tokens",
            &[
                ("scope", "read"),
                ("description", "Reporting <job>"),
                ("ttl_days", "30"),
            ],
        )
        .await
        .expect(200);
    assert!(created.is_whole_page());
    let secret = value_of_id(&created.body, "new-secret").expect("the secret is shown");
    assert!(secret.starts_with("idm_"), "{secret}");
    assert!(created.location().is_none());
    assert!(
        created.set_cookies().iter().all(|c| !c.contains(&secret)),
        "{:?}",
        created.set_cookies()
    );
    assert_eq!(created.header("cache-control"), Some("no-store"));
    assert!(
        created.contains("Reporting &#60;job&#62;") && !created.contains("<job>"),
        "escaped"
    );
    assert_eq!(created.body.matches(&secret).count(), 1);

    // The secret works, and is never shown again.
    let mut reader = running.idmd.clients_with(Some(secret.clone())).await;
    reader
        .objects
        .query_objects(QueryObjectsRequest {
            parent: "managed/user".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    for page in [
        admin.get("/admin/tokens").await,
        admin.get_fragment("/admin/tokens").await,
        admin.get("/admin/audit").await,
        admin.get("/admin/").await,
    ] {
        assert!(!page.contains(&secret));
    }
    let listed = admin.get("/admin/tokens").await.expect(200);
    assert!(listed.contains("Reporting &#60;job&#62;") && listed.contains(">read<"));
    let id = secret.split('_').nth(1).unwrap().to_string();
    assert!(listed.contains(&id), "{}", listed.body);

    // From htmx: the fragment, with the secret, once.
    let from_htmx = admin
        .post_fragment("/admin/tokens", &[("scope", "scim"), ("description", "")])
        .await
        .expect(200);
    assert!(!from_htmx.is_whole_page());
    let second = value_of_id(&from_htmx.body, "new-secret").unwrap();
    assert_ne!(second, secret);
    assert!(from_htmx.contains("expires never"), "{}", from_htmx.body);

    // Refusals beside their field.
    admin
        .post("/admin/tokens", &[("scope", "read"), ("ttl_days", "ten")])
        .await
        .expect(400)
        .shows("a whole number of days");
    let no_scope = admin
        .post("/admin/tokens", &[("scope", "root"), ("ttl_days", "")])
        .await;
    assert_eq!(no_scope.status, 400, "{}", no_scope.body);
    assert!(value_of_id(&no_scope.body, "new-secret").is_none());

    // Revoke: the token stops working, the list says so.
    admin
        .post(&format!("/admin/tokens/{id}/revoke"), &[])
        .await
        .expect_redirect(&format!("/admin/tokens?revoked={id}"));
    admin
        .get(&format!("/admin/tokens?revoked={id}"))
        .await
        .expect(200)
        .shows(&format!("Token {id} revoked."))
        .shows("revoked</span>");
    expect_code(
        reader
            .objects
            .query_objects(QueryObjectsRequest {
                parent: "managed/user".into(),
                ..Default::default()
            })
            .await,
        Code::Unauthenticated,
    );
    // Without the form token nothing is created or revoked.
    admin
        .post_exactly("/admin/tokens", &[("scope", "admin")])
        .await
        .expect(403);
    let mut admin_clients = running.idmd.clients().await;
    let tokens = admin_clients
        .tokens
        .list_tokens(idm_proto::v1::ListTokensRequest {
            include_revoked: true,
        })
        .await
        .unwrap()
        .into_inner()
        .tokens;
    assert_eq!(tokens.len(), 2, "{tokens:?}");
    assert!(tokens.iter().all(|t| t.scope() != Scope::Admin));

    // Nothing of either secret in the gateway's log.
    let log = running.gateway.log();
    assert!(!log.contains(&secret) && !log.contains(&second));
}

#[tokio::test]
async fn a_read_account_gets_no_accounts_or_tokens_page_and_changes_nothing() {
    let running = console::start().await;
    let reader = running.signed_in_as("auditor", "read").await;
    let dashboard = reader.get("/admin/").await.expect(200);
    assert!(!dashboard.contains("/admin/accounts"));
    for path in ["/admin/accounts", "/admin/tokens"] {
        reader.get(path).await.expect(403);
        reader.get_fragment(path).await.expect(403);
    }
    for (path, fields) in [
        (
            "/admin/accounts",
            vec![
                ("name", "eve"),
                ("password", "Eve-Pass-12"),
                ("role", "admin"),
            ],
        ),
        ("/admin/accounts/auditor/role", vec![("role", "admin")]),
        (
            "/admin/accounts/openidm-admin/enabled",
            vec![("enabled", "false")],
        ),
        (
            "/admin/accounts/openidm-admin/delete",
            vec![("confirm", "yes")],
        ),
        ("/admin/tokens", vec![("scope", "admin")]),
        ("/admin/tokens/x/revoke", vec![]),
    ] {
        reader.post(path, &fields).await.expect(403);
    }
    // The core refuses it anyway, and the admin sees nothing changed.
    let mut session = running.idmd.clients_with(Some(reader.session())).await;
    expect_code(
        session
            .accounts
            .list_accounts(idm_proto::v1::ListAccountsRequest {})
            .await,
        Code::PermissionDenied,
    );
    let list = running.admin.get("/admin/accounts").await.expect(200);
    assert!(!list.contains(">eve<"));
    assert!(list.contains(r#"<option value="read" selected>read</option>"#));
}
