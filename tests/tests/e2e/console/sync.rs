//! The sync queue page, against a real slapd that refuses users without a
//! surname: per mapping counts, the entries with why they failed, retry and
//! discard per entry and per mapping (discard after a confirmation).

use std::time::{Duration, Instant};

use idm_proto::v1::{GetSyncQueueRequest, ListSyncEntriesRequest, SyncQueueSummary};
use idm_tests::console;
use idm_tests::directory::Slapd;
use idm_tests::{Clients, IdmdOptions, idm_conf};
use serde_json::json;

const USERS: &str = "managedUser_ldapAccount";

async fn users_queue(clients: &mut Clients) -> SyncQueueSummary {
    clients
        .sync
        .get_sync_queue(GetSyncQueueRequest {})
        .await
        .unwrap()
        .into_inner()
        .mappings
        .into_iter()
        .find(|s| s.mapping == USERS)
        .unwrap_or_default()
}

/// Waits until `failed` of the users' entries have failed.
async fn failed(clients: &mut Clients, failed: i64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let queue = users_queue(clients).await;
        if queue.failed == failed {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "never {failed} failed: {queue:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn failed_entries_show_why_and_are_retried_or_discarded_after_a_confirmation() {
    let slapd = Slapd::start().unwrap_or_else(|e| panic!("a real slapd is needed: {e}"));
    let running = console::start_with(
        IdmdOptions {
            env: crate::ldap::ldap_env(&slapd),
            ..Default::default()
        },
        Some(idm_conf("sync")),
    )
    .await;
    let admin = &running.admin;
    let empty = admin.get("/admin/sync").await.expect(200);
    assert!(empty.is_whole_page());
    assert!(empty.contains("Nothing waiting"), "{}", empty.body);

    // inetOrgPerson needs sn: the directory refuses these, whatever the retries.
    let mut clients = running.idmd.clients().await;
    for id in ["nosn1", "nosn2"] {
        crate::create_user(&mut clients, id, json!({ "userName": id })).await;
    }
    failed(&mut clients, 2).await;

    // The dashboard counts them, with how long the oldest has waited.
    let dashboard = admin.get("/admin/").await.expect(200);
    assert!(
        dashboard.contains(r#"<span class="state failed">2</span>"#),
        "{}",
        dashboard.body
    );
    assert!(dashboard.contains("<th scope=\"col\">Oldest failed</th>"));
    assert!(
        dashboard.contains(" ago</td>\n      </tr>")
            || dashboard.contains("just now</td>\n      </tr>"),
        "the oldest failure's age: {}",
        dashboard.body
    );
    let whole = admin.get("/admin/sync").await.expect(200);
    let fragment = admin.get_fragment("/admin/sync").await.expect(200);
    assert!(whole.is_whole_page() && !fragment.is_whole_page());
    for page in [&whole, &fragment] {
        assert!(page.contains(USERS), "{}", page.body);
        assert!(
            page.contains(r#"<span class="state failed">2</span>"#),
            "{}",
            page.body
        );
        assert!(page.contains(r#"<a href="/admin/managed/user/nosn1">managed/user/nosn1</a>"#));
        assert!(
            page.body.to_lowercase().contains("objectclass"),
            "{}",
            page.body
        );
        assert!(page.contains("Retry all failed") && page.contains("Discard…"));
    }
    let failed_only = admin
        .get(&format!("/admin/sync?mapping={USERS}&state=failed"))
        .await
        .expect(200)
        .shows(r#"<option value="failed" selected>failed</option>"#);
    assert_eq!(failed_only.body.matches(">Retry</button>").count(), 2);
    let entries = clients
        .sync
        .list_sync_entries(ListSyncEntriesRequest {
            filter: "state eq \"failed\"".into(),
            page_size: 10,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .entries;
    let name_of = |object: &str| {
        entries
            .iter()
            .find(|e| e.object == object)
            .map(|e| e.name.clone())
            .unwrap()
    };
    let (first, second) = (name_of("managed/user/nosn1"), name_of("managed/user/nosn2"));
    assert!(failed_only.contains(&first), "{}", failed_only.body);

    // Retry one entry: it is due again now, the page says so.
    admin
        .post(
            "/admin/sync/retry",
            &[
                ("mapping", USERS),
                ("name", first.as_str()),
                ("back_mapping", USERS),
                ("back_state", "failed"),
            ],
        )
        .await
        .expect_redirect(&format!(
            "/admin/sync?mapping={USERS}&state=failed&retried=1"
        ));
    admin
        .get(&format!("/admin/sync?mapping={USERS}&retried=1"))
        .await
        .expect(200)
        .shows("1 entry made due again.");

    // Discard asks first, and changes nothing until confirmed.
    let asked = admin
        .post(
            "/admin/sync/discard",
            &[("mapping", USERS), ("name", second.as_str())],
        )
        .await
        .expect(200)
        .shows("Discard sync entries?")
        .shows("One entry of")
        .shows(r#"name="confirm" value="yes""#);
    assert!(asked.contains(&second));
    admin
        .post_fragment("/admin/sync/discard", &[("mapping", USERS)])
        .await
        .expect(200)
        .shows("Every <strong>failed</strong> entry of");
    assert!(users_queue(&mut clients).await.failed >= 1);
    admin
        .post(
            "/admin/sync/discard",
            &[
                ("mapping", USERS),
                ("name", second.as_str()),
                ("confirm", "yes"),
            ],
        )
        .await
        .expect_redirect("/admin/sync?discarded=1");
    let left = clients
        .sync
        .list_sync_entries(ListSyncEntriesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .entries;
    assert!(left.iter().all(|e| e.name != second), "{left:?}");

    // nosn1 fails again; discarding the mapping's failed entries empties it.
    failed(&mut clients, 1).await;
    admin
        .post(
            "/admin/sync/discard",
            &[("mapping", USERS), ("confirm", "yes")],
        )
        .await
        .expect_redirect("/admin/sync?discarded=1");
    assert_eq!(users_queue(&mut clients).await.failed, 0);

    // No form token, no change; a read account sees no buttons and is refused.
    crate::create_user(&mut clients, "nosn3", json!({ "userName": "nosn3" })).await;
    failed(&mut clients, 1).await;
    admin
        .post_exactly(
            "/admin/sync/discard",
            &[("mapping", USERS), ("confirm", "yes")],
        )
        .await
        .expect(403);
    let reader = running.signed_in_as("auditor", "read").await;
    let seen = reader.get("/admin/sync").await.expect(200);
    assert!(seen.contains("managed/user/nosn3"), "{}", seen.body);
    assert!(
        !seen.contains("Retry") && !seen.contains("Discard…"),
        "{}",
        seen.body
    );
    for path in ["/admin/sync/retry", "/admin/sync/discard"] {
        reader
            .post(path, &[("mapping", USERS), ("confirm", "yes")])
            .await
            .expect(403);
    }
    assert_eq!(users_queue(&mut clients).await.failed, 1);
}
