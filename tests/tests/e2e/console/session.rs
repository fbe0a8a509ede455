//! Signing in and out, the session cookie, CSRF, the security headers, the
//! read-only role, and the dashboard.

use idm_tests::console::{self, Console};
use idm_tests::rest::{ADMIN, ADMIN_PASSWORD};

#[tokio::test]
async fn a_page_without_a_session_sends_people_to_the_login_page_and_back() {
    let running = console::start().await;
    let anonymous = Console::new(&running.gateway);
    anonymous
        .get("/admin/managed/user?q=snow")
        .await
        .expect_redirect("/admin/login?next=%2Fadmin%2Fmanaged%2Fuser%3Fq%3Dsnow");
    // htmx follows HX-Redirect with a whole page load rather than swapping
    // the login page into the middle of another.
    let fragment = anonymous.get_fragment("/admin/").await.expect(204);
    assert_eq!(
        fragment.header("hx-redirect"),
        Some("/admin/login?next=%2Fadmin%2F")
    );
    // A made-up session is no session.
    anonymous.set_session("idm_0000000000000000_forged");
    anonymous
        .get("/admin/")
        .await
        .expect_redirect("/admin/login");

    // Signing in from there lands on the page asked for; a `next` naming
    // another site lands on the dashboard instead.
    let form = anonymous
        .get("/admin/login?next=%2Fadmin%2Fmappings")
        .await
        .expect(200);
    assert_eq!(
        idm_tests::console::input_value(&form.body, "next").as_deref(),
        Some("/admin/mappings")
    );
    let to_mappings = login_with_next(&running.gateway, "/admin/mappings").await;
    assert_eq!(to_mappings.headers()["location"], "/admin/mappings");
    for elsewhere in [
        "//evil.example/admin",
        "https://evil.example/",
        "/admin//evil.example",
    ] {
        let response = login_with_next(&running.gateway, elsewhere).await;
        assert_eq!(response.status(), 303);
        assert_eq!(
            response.headers()["location"],
            "/admin/",
            "next={elsewhere}"
        );
    }
}

/// The login form posted with `next`, as the browser would post it.
async fn login_with_next(gateway: &idm_tests::scim::Gateway, next: &str) -> reqwest::Response {
    let console = Console::new(gateway);
    let form = console.get("/admin/login").await;
    let pair = idm_tests::console::cookie_value(&form.set_cookies(), "idm_console_login").unwrap();
    let client = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    client
        .post(console.url("/admin/login"))
        .header("cookie", format!("idm_console_login={pair}"))
        .form(&[
            ("_csrf", form.csrf().unwrap().as_str()),
            ("username", ADMIN),
            ("password", ADMIN_PASSWORD),
            ("next", next),
        ])
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn the_session_cookie_is_strict_and_logout_ends_the_session_at_the_core() {
    let running = console::start().await;
    let console = Console::new(&running.gateway);
    let page = console
        .try_login(ADMIN, ADMIN_PASSWORD)
        .await
        .expect_redirect("/admin/");
    let cookie = page
        .set_cookies()
        .into_iter()
        .find(|c| c.starts_with("idm_console="))
        .unwrap();
    for attribute in [
        "HttpOnly",
        "Secure",
        "SameSite=Strict",
        "Path=/admin",
        "Max-Age=",
    ] {
        assert!(cookie.contains(attribute), "{cookie} lacks {attribute}");
    }
    let token = console.session();
    assert!(
        token.starts_with("idm_"),
        "the cookie holds the core's session token"
    );
    console.get("/admin/").await.expect(200).shows(ADMIN);

    let bye = console
        .logout()
        .await
        .expect_redirect("/admin/login?signed_out");
    assert_eq!(
        bye.header("clear-site-data"),
        Some("\"cache\", \"storage\"")
    );
    assert!(
        bye.set_cookies()
            .iter()
            .any(|c| c.starts_with("idm_console=;") && c.contains("Max-Age=0")),
        "the cookie is cleared: {:?}",
        bye.set_cookies()
    );
    // The token itself is dead, not just forgotten by the browser.
    console.set_session(&token);
    console.get("/admin/").await.expect_redirect("/admin/login");
    let scim = running
        .gateway
        .send_as(Some(&token), "GET", "/Users", None, &[])
        .await;
    assert_eq!(scim.status, 401, "the session no longer works anywhere");
    Console::new(&running.gateway)
        .get("/admin/login?signed_out=1")
        .await
        .expect(200)
        .shows("You are signed out.");
}

#[tokio::test]
async fn a_wrong_password_is_refused_without_saying_which_part_was_wrong() {
    let running = console::start().await;
    let console = Console::new(&running.gateway);
    let refused = console
        .try_login(ADMIN, "Not-The-Password-1")
        .await
        .expect(401)
        .shows("Invalid username or password.");
    assert!(
        !refused.contains("Not-The-Password-1"),
        "the password is never echoed"
    );
    assert!(
        refused
            .set_cookies()
            .iter()
            .all(|c| !c.starts_with("idm_console="))
    );
    console
        .try_login("nobody-here", "Not-The-Password-1")
        .await
        .expect(401)
        .shows("Invalid username or password.");
    // The name typed is kept in the form, escaped.
    console
        .try_login("<b>x</b>", "whatever-1")
        .await
        .expect(401)
        .shows("value=\"&#60;b&#62;x&#60;/b&#62;\"");
}

#[tokio::test]
async fn forms_need_their_token_and_the_login_form_its_cookie() {
    let running = console::start().await;
    let admin = &running.admin;
    // Logout without the form token: refused, and the session lives on.
    admin
        .post_exactly("/admin/logout", &[])
        .await
        .expect(403)
        .shows("did not come from this console");
    admin
        .post_exactly("/admin/logout", &[("_csrf", "forged")])
        .await
        .expect(403);
    admin.get("/admin/").await.expect(200);
    // Another session's token does not fit this one.
    let other = Console::login(&running.gateway, ADMIN, ADMIN_PASSWORD).await;
    assert_ne!(other.csrf(), admin.csrf());
    admin
        .post_exactly("/admin/logout", &[("_csrf", other.csrf().as_str())])
        .await
        .expect(403);
    // The login form without its cookie (a login posted from another site).
    let anonymous = Console::new(&running.gateway);
    let form = anonymous.get("/admin/login").await;
    let posted = anonymous
        .post_exactly(
            "/admin/login",
            &[
                ("_csrf", form.csrf().unwrap().as_str()),
                ("username", ADMIN),
                ("password", ADMIN_PASSWORD),
            ],
        )
        .await
        .expect(403)
        .shows("This form expired");
    assert!(
        posted
            .set_cookies()
            .iter()
            .all(|c| !c.starts_with("idm_console="))
    );
    // Not a form at all.
    let json = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap()
        .post(admin.url("/admin/logout"))
        .header("cookie", format!("idm_console={}", admin.session()))
        .json(&serde_json::json!({"_csrf": admin.csrf()}))
        .send()
        .await
        .unwrap();
    assert_eq!(json.status(), 400);
}

#[tokio::test]
async fn every_console_response_carries_the_security_headers() {
    let running = console::start().await;
    let admin = &running.admin;
    let anonymous = Console::new(&running.gateway);
    let pages = [
        admin.get("/admin/").await,
        admin.get_fragment("/admin/").await,
        admin.get("/admin/no/such/page").await,
        anonymous.get("/admin/login").await,
        anonymous.get("/admin/").await,
        anonymous.get("/admin/static/console.css").await,
    ];
    for page in &pages {
        let csp = page.header("content-security-policy").unwrap_or_default();
        assert!(csp.contains("default-src 'self'"), "{csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert_eq!(page.header("x-frame-options"), Some("DENY"));
        assert_eq!(page.header("x-content-type-options"), Some("nosniff"));
    }
    for page in &pages[..5] {
        assert_eq!(
            page.header("cache-control"),
            Some("no-store"),
            "{}",
            page.body
        );
        // No inline script or style: CSP would block it anyway.
        assert!(!page.body.contains("<script>"), "{}", page.body);
        assert!(!page.body.contains("style="), "{}", page.body);
    }
    assert_eq!(pages[2].status, 404);
    assert!(pages[2].is_whole_page());
    // Asked for by htmx, an error is the main block's worth: not a whole
    // document swapped into the page.
    let missing = admin.get_fragment("/admin/no/such/page").await.expect(404);
    assert!(!missing.is_whole_page(), "{}", missing.body);
    assert!(missing.contains("<h1>Not Found</h1>"));
    assert!(missing.contains("There is no such page."));
    assert_eq!(missing.header("cache-control"), Some("no-store"));
    let htmx = anonymous
        .get("/admin/static/htmx-2.0.11.min.js")
        .await
        .expect(200);
    assert!(htmx.body.starts_with("var htmx="));
    assert_eq!(
        htmx.header("cache-control"),
        Some("public, max-age=31536000, immutable")
    );
    assert!(
        htmx.header("content-type")
            .unwrap()
            .starts_with("text/javascript")
    );
}

#[tokio::test]
async fn the_dashboard_counts_objects_and_lists_mappings_whole_or_as_a_fragment() {
    let running = console::start().await;
    let admin = &running.admin;
    let whole = admin.get("/admin/").await.expect(200);
    assert!(whole.is_whole_page());
    let whole = whole
        .shows("<h1>Dashboard</h1>")
        .shows("href=\"/admin/managed/user\"")
        .shows("csvEmployee_managedUser")
        .shows("never run")
        .shows("Nothing waiting")
        .shows("href=\"/admin/accounts\"");
    assert!(whole.contains("aria-current=\"page\">Dashboard"));

    // After a run the mapping shows its last run and the users are counted.
    let run = running
        .idmd
        .idmctl(&["recon", "start", "csvEmployee_managedUser", "--wait"]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let after = admin.get("/admin/").await.expect(200);
    assert!(
        after.contains("<span class=\"state succeeded\">succeeded</span>"),
        "{}",
        after.body
    );
    assert!(after.contains("<td>ABSENT 3</td>"), "{}", after.body);

    // htmx asks for the main block: no document around it, the menu out of
    // band, the title for the tab.
    let fragment = admin.get_fragment("/admin/").await.expect(200);
    assert!(!fragment.is_whole_page());
    assert!(fragment.contains("<h1>Dashboard</h1>"));
    assert!(fragment.contains("<title>Dashboard · idm</title>"));
    assert!(fragment.contains("hx-swap-oob=\"true\""));
    assert!(!fragment.contains("<html"));
    assert_eq!(fragment.header("vary"), Some("HX-Request, HX-Target"));
}

#[tokio::test]
async fn a_read_account_sees_the_console_but_not_the_admin_parts() {
    let running = console::start().await;
    let reader = running.signed_in_as("auditor", "read").await;
    let page = reader.get("/admin/").await.expect(200).shows("read only");
    assert!(!page.contains("href=\"/admin/accounts\""));
    // Its own sign-out form still works (a read account may end its session).
    reader
        .logout()
        .await
        .expect_redirect("/admin/login?signed_out");
}
