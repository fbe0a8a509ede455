//! The audit page: the trail newest first, filtered by object, actor,
//! operation and time (values that cannot change the filter's shape),
//! paged by the core's token, objects linked to their pages.

use idm_tests::console::{self, Page};
use serde_json::json;

/// The `href` of the link marked `rel="next"`, unescaped.
fn next_href(page: &Page) -> Option<String> {
    let end = page.body.find(r#"" rel="next""#)?;
    let start = page.body[..end].rfind("href=\"")? + "href=\"".len();
    Some(unescape(&page.body[start..end]))
}

fn unescape(html: &str) -> String {
    html.replace("&amp;", "&")
        .replace("&#38;", "&")
        .replace("&#x2f;", "/")
        .replace("&#47;", "/")
        .replace("&quot;", "\"")
        .replace("&#34;", "\"")
}

/// `text` percent-encoded as a query value.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// The entries on a page: its rows' time cells.
fn rows(page: &Page) -> usize {
    page.body.matches(r#"<td class="mono nowrap">"#).count()
}

#[tokio::test]
async fn the_trail_is_filtered_by_object_actor_operation_and_time_and_paged() {
    let running = console::start().await;
    let admin = &running.admin;
    let mut clients = running.idmd.clients().await;
    for i in 0..55 {
        crate::create_user(
            &mut clients,
            &format!("u{i:02}"),
            json!({"userName": format!("u{i:02}"), "givenName": "U", "sn": "Ser"}),
        )
        .await;
    }

    let whole = admin.get("/admin/audit").await.expect(200);
    assert!(whole.is_whole_page());
    let fragment = admin.get_fragment("/admin/audit").await.expect(200);
    assert!(!fragment.is_whole_page());
    assert!(fragment.contains(r#"name="operation""#));
    // Newest first: the console's own login is older than the users.
    assert_eq!(rows(&whole), 50);
    assert!(whole.contains("managed/user/u54"));
    assert!(!whole.contains(">auth.login<"));

    // By object: exactly, or everything under a prefix ending in `/`.
    let one = admin
        .get("/admin/audit?object=managed%2Fuser%2Fu07")
        .await
        .expect(200)
        .shows(r#"<a href="/admin/managed/user/u07">managed/user/u07</a>"#)
        .shows("1 entry.");
    assert_eq!(rows(&one), 1);
    let under = admin
        .get("/admin/audit?object=managed%2Fuser%2F")
        .await
        .expect(200)
        .shows("55 entries.");
    assert_eq!(rows(&under), 50);

    // Paged with the core's token, the filter kept.
    let next = next_href(&under).expect("a next page");
    assert!(
        next.starts_with("/admin/audit?object=managed%2Fuser%2F&page="),
        "{next}"
    );
    let second = admin.get(&next).await.expect(200);
    assert_eq!(rows(&second), 5);
    assert!(second.contains("managed/user/u00") && !second.contains("managed/user/u54"));
    assert!(next_href(&second).is_none());
    let second_fragment = admin.get_fragment(&next).await.expect(200);
    assert_eq!(rows(&second_fragment), 5);
    // A page token of another filter is refused, on the page.
    let replayed = next.replace("object=managed%2Fuser%2F", "actor=bootstrap");
    admin.get(&replayed).await.expect(400);

    // By actor and operation (a family ends in `.`).
    let logins = admin
        .get("/admin/audit?actor=openidm-admin&operation=auth.")
        .await
        .expect(200)
        .shows(">auth.login<");
    assert_eq!(rows(&logins), 1);
    admin
        .get("/admin/audit?actor=bootstrap&operation=create")
        .await
        .expect(200)
        .shows("55 entries.");

    // A value is a value: text that would widen the filter matches nothing.
    for hostile in [
        r#"x" or actor pr or actor eq "y"#,
        r#"bootstrap" or true or actor eq ""#,
        "\\\" or object pr",
    ] {
        let query = encode(hostile);
        let page = admin
            .get(&format!("/admin/audit?actor={query}"))
            .await
            .expect(200)
            .shows("0 entries.");
        assert_eq!(rows(&page), 0);
    }

    // By time: from (inclusive) and before, read as UTC.
    admin
        .get("/admin/audit?object=managed%2Fuser%2F&from=2000-01-01T00%3A00&to=2999-01-01")
        .await
        .expect(200)
        .shows("55 entries.");
    admin
        .get("/admin/audit?from=2999-01-01T00%3A00%3A00")
        .await
        .expect(200)
        .shows("0 entries.");
    admin
        .get("/admin/audit?to=2000-01-01")
        .await
        .expect(200)
        .shows("0 entries.");
    let bad = admin
        .get("/admin/audit?from=yesterday&actor=bootstrap")
        .await
        .expect(400)
        .shows(r#"id="audit-from-problem""#)
        .shows(r#"value="bootstrap""#);
    assert_eq!(rows(&bad), 0);

    // A read account reads the trail too.
    let reader = running.signed_in_as("auditor", "read").await;
    reader
        .get("/admin/audit?operation=account.create")
        .await
        .expect(200)
        .shows("internal/user/auditor");
}
