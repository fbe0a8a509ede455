//! `ReconService.ListLinks` and what the console's object pages read from
//! `ListObjectTypes`: a user of the Wren sync sample is linked to the CSV row
//! it came from and to the LDAP entry implicit sync made for it; the entry's
//! id is its `entryUUID`, and the call names it by its DN for people.

use std::time::{Duration, Instant};

use idm_proto::v1::object_link::Side;
use idm_proto::v1::{ListLinksRequest, ListLinksResponse, ListObjectTypesRequest, Scope};
use idm_testkit::SlapdBuilder;
use idm_tests::directory::{self, Slapd};
use idm_tests::{Clients, Idmd, IdmdOptions, TempDir, wren_sample};
use serde_json::json;
use tonic::Code;

use crate::{create_user, expect_code, recon, token};

const BASE: &str = "dc=wrensecurity,dc=org";

fn wren_slapd() -> Slapd {
    SlapdBuilder::default()
        .base_dn(BASE)
        .start()
        .unwrap_or_else(|e| panic!("a real slapd is needed for these tests: {e}"))
}

fn ldap_env(slapd: &Slapd) -> Vec<(String, String)> {
    vec![
        ("IDM_LDAP_HOST".into(), "127.0.0.1".into()),
        ("IDM_LDAP_PORT".into(), slapd.port().to_string()),
        ("IDM_LDAP_BIND_DN".into(), slapd.admin_dn().into()),
        (
            "IDM_LDAP_BIND_PASSWORD".into(),
            slapd.admin_password().into(),
        ),
    ]
}

async fn links(c: &mut Clients, object: &str, resolve_names: bool) -> ListLinksResponse {
    c.recon
        .list_links(ListLinksRequest {
            object: object.into(),
            resolve_names,
        })
        .await
        .unwrap_or_else(|e| panic!("list links of {object}: {e}"))
        .into_inner()
}

#[tokio::test]
async fn a_synced_user_is_linked_to_its_csv_row_and_its_ldap_entry_named_by_dn() {
    let mut slapd = wren_slapd();
    let project = wren_sample("sync");
    let idmd = Idmd::start_with(IdmdOptions {
        conf: Some(project.path().to_path_buf()),
        env: ldap_env(&slapd),
        ..Default::default()
    })
    .await;
    let mut admin = idmd.clients().await;
    // The user page shows groups: the type says which property holds them.
    let types = admin
        .objects
        .list_object_types(ListObjectTypesRequest {})
        .await
        .unwrap()
        .into_inner()
        .types;
    let user = types.iter().find(|t| t.name == "managed/user").unwrap();
    let reverse: Vec<_> = user
        .reverse_properties
        .iter()
        .map(|r| {
            (
                r.name.as_str(),
                r.source_collection.as_str(),
                r.source_property.as_str(),
            )
        })
        .collect();
    assert_eq!(reverse, [("groups", "managed/group", "members")]);
    assert_eq!(
        user.property_order,
        [
            "userName",
            "givenName",
            "sn",
            "mail",
            "telephoneNumber",
            "accountStatus",
            "password"
        ]
    );

    recon(&mut admin, "csvEmployee_managedUser").await;
    let entry = {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(entry) = directory::account(&slapd, "snow123") {
                break entry;
            }
            assert!(Instant::now() < deadline, "uid=snow123 never reached LDAP");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let uuid = entry.get("entryUUID").unwrap().to_string();

    // A read token sees the links; the LDAP link holds the entryUUID.
    let mut reader = idmd
        .clients_with(Some(token(&idmd, Scope::Read).await))
        .await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let found = loop {
        let found = links(&mut reader, "managed/user/123", false).await;
        if found.links.iter().all(|l| !l.linked_id.is_empty()) {
            break found;
        }
        assert!(
            Instant::now() < deadline,
            "the LDAP link never came: {found:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let summary: Vec<_> = found
        .links
        .iter()
        .map(|l| {
            (
                l.mapping.as_str(),
                l.side(),
                l.other_collection.as_str(),
                l.linked_id.as_str(),
                l.linked.as_str(),
                l.display_name.as_str(),
            )
        })
        .collect();
    let csv = (
        "csvEmployee_managedUser",
        Side::Target,
        "system/csv/employee",
        "123",
        "system/csv/employee/123",
        "",
    );
    let ldap_name = format!("system/ldap/account/{uuid}");
    let ldap = (
        "managedUser_ldapAccount",
        Side::Source,
        "system/ldap/account",
        uuid.as_str(),
        ldap_name.as_str(),
        "",
    );
    assert_eq!(summary, [csv, ldap]);

    // Named for people: the DN of the entry, read through the connector.
    let named = links(&mut reader, "managed/user/123", true).await;
    let names: Vec<_> = named
        .links
        .iter()
        .map(|l| (l.display_name.as_str(), l.name_error.as_str()))
        .collect();
    let dn = format!("uid=snow123,{BASE}");
    assert_eq!(names, [("123", ""), (dn.as_str(), "")]);

    // The other direction: the entry's and the row's links name the user.
    let from_ldap = links(&mut reader, &ldap_name, false).await;
    assert_eq!(from_ldap.links.len(), 1, "{from_ldap:?}");
    assert_eq!(from_ldap.links[0].side(), Side::Target);
    assert_eq!(from_ldap.links[0].linked, "managed/user/123");
    let from_csv = links(&mut reader, "system/csv/employee/123", false).await;
    assert_eq!(from_csv.links[0].linked, "managed/user/123");

    // A user no mapping touched yet: each mapping listed, no link.
    slapd.stop();
    create_user(
        &mut admin,
        "lonely",
        json!({"userName": "lonely1", "givenName": "Lo", "sn": "Nely", "mail": "l@example.com"}),
    )
    .await;
    let none = links(&mut reader, "managed/user/lonely", true).await;
    assert_eq!(none.links.len(), 2, "{none:?}");
    assert!(
        none.links
            .iter()
            .all(|l| l.linked.is_empty() && l.display_name.is_empty()),
        "{none:?}"
    );
    // An unreachable directory costs the name, not the call.
    let down = links(&mut reader, "managed/user/123", true).await;
    assert_eq!(down.links[1].linked_id, uuid);
    assert!(down.links[1].display_name.is_empty(), "{down:?}");
    assert!(
        down.links[1].name_error.contains("ldap"),
        "names the connector: {down:?}"
    );

    expect_code(
        reader
            .recon
            .list_links(ListLinksRequest {
                object: "managed/user".into(),
                resolve_names: false,
            })
            .await,
        Code::InvalidArgument,
    );
    expect_code(
        reader
            .recon
            .list_links(ListLinksRequest {
                object: "managed/nosuchtype/1".into(),
                resolve_names: false,
            })
            .await,
        Code::NotFound,
    );
    expect_code(
        idmd.clients_with(None)
            .await
            .recon
            .list_links(ListLinksRequest {
                object: "managed/user/123".into(),
                resolve_names: false,
            })
            .await,
        Code::Unauthenticated,
    );
}

#[tokio::test]
async fn object_types_list_their_properties_in_schema_order() {
    let conf = TempDir::new("links");
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/wren6/managed.json"),
        conf.path().join("managed.json"),
    )
    .unwrap();
    let idmd = Idmd::start_with(IdmdOptions {
        conf: Some(conf.path().to_path_buf()),
        ..Default::default()
    })
    .await;
    let mut c = idmd
        .clients_with(Some(token(&idmd, Scope::Read).await))
        .await;
    let types = c
        .objects
        .list_object_types(ListObjectTypesRequest {})
        .await
        .unwrap()
        .into_inner()
        .types;
    // The types as the file declares them (not alphabetically).
    let names: Vec<&str> = types.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        names,
        ["managed/user", "managed/role", "managed/assignment"]
    );
    let user = types.iter().find(|t| t.name == "managed/user").unwrap();
    // Wren's `schema.order` first (the file writes `_id`, `password`,
    // `kbaInfo`, … in another order), then what it leaves out.
    assert_eq!(
        user.property_order[..6],
        ["_id", "userName", "password", "givenName", "sn", "mail"]
    );
    let declared = user
        .schema
        .as_ref()
        .unwrap()
        .fields
        .get("schema")
        .and_then(|s| match &s.kind {
            Some(prost_types::value::Kind::StructValue(s)) => s.fields.get("properties"),
            _ => None,
        })
        .and_then(|p| match &p.kind {
            Some(prost_types::value::Kind::StructValue(p)) => Some(p.fields.len()),
            _ => None,
        })
        .unwrap();
    assert_eq!(user.property_order.len(), declared, "every property once");
}
