use std::collections::BTreeSet;

use idm_proto::v1::{CountObjectsRequest, GetObjectRequest, QueryObjectsRequest};
use idm_tests::{Clients, Idmd};
use serde_json::json;
use tonic::Code;
use tonic_types::StatusExt;

use crate::{create_user, expect_code};

async fn seed(c: &mut Clients) {
    create_user(c, "snow123", json!({"userName": "snow123", "givenName": "Jon", "sn": "Snow", "mail": "Jon.Snow@Example.com",
        "loginCount": 3, "address": {"locality": "Winterfell"}, "emails": [{"type": "work", "value": "jon@corp.example"}, {"type": "home", "value": "jon@home.example"}]})).await;
    create_user(c, "doe456", json!({"userName": "doe456", "givenName": "John", "sn": "Doe", "mail": "john.doe@example.com",
        "loginCount": 10, "address": {"locality": "Oslo"}, "emails": [{"type": "home", "value": "john@corp.example"}]})).await;
    create_user(
        c,
        "doe789",
        json!({"userName": "doe789", "givenName": "Jane", "sn": "Doe", "telephoneNumber": "5558901",
        "loginCount": 7, "address": {"locality": "Oslo"}}),
    )
    .await;
}

async fn ids(c: &mut Clients, filter: &str) -> BTreeSet<String> {
    c.objects
        .query_objects(QueryObjectsRequest {
            parent: "managed/user".into(),
            filter: filter.into(),
            page_size: 100,
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("{filter}: {e}"))
        .into_inner()
        .objects
        .into_iter()
        .map(|o| o.id)
        .collect()
}

fn set(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn every_operator_matches_scim_semantics() {
    let idmd = Idmd::start().await;
    let mut c = idmd.clients().await;
    seed(&mut c).await;
    let cases: &[(&str, &[&str])] = &[
        (r#"sn eq "Doe""#, &["doe456", "doe789"]),
        (r#"sn ne "Doe""#, &["snow123"]),
        (r#"givenName co "oh""#, &["doe456"]),
        (r#"givenName sw "J""#, &["snow123", "doe456", "doe789"]),
        (r#"userName ew "123""#, &["snow123"]),
        ("telephoneNumber pr", &["doe789"]),
        ("loginCount gt 7", &["doe456"]),
        ("loginCount ge 7", &["doe456", "doe789"]),
        ("loginCount lt 7", &["snow123"]),
        ("loginCount le 7", &["snow123", "doe789"]),
        (r#"givenName gt "Jane""#, &["snow123", "doe456"]),
        (r#"userName eq "SNOW123""#, &["snow123"]),
        (r#"mail co "EXAMPLE.COM""#, &["snow123", "doe456"]),
        (r#"givenName eq "jon""#, &[]),
        (r#"_id eq "doe456""#, &["doe456"]),
        ("_rev ge 1", &["snow123", "doe456", "doe789"]),
        (r#"nothing eq "x""#, &[]),
        // Pinned by a unique value or the id: read directly, still filtered whole.
        (r#"userName eq "Doe456" and sn eq "Doe""#, &["doe456"]),
        (r#"userName eq "doe456" and sn eq "Snow""#, &[]),
        (r#"userName eq "nobody""#, &[]),
        (r#"_id eq "doe789" and loginCount gt 1"#, &["doe789"]),
        (r#"_id eq "nobody" or sn eq "Snow""#, &["snow123"]),
    ];
    for (filter, expected) in cases {
        assert_eq!(ids(&mut c, filter).await, set(expected), "{filter}");
    }
}

#[tokio::test]
async fn logic_sub_attributes_and_value_paths() {
    let idmd = Idmd::start().await;
    let mut c = idmd.clients().await;
    seed(&mut c).await;
    let cases: &[(&str, &[&str])] = &[
        (
            r#"(sn eq "Doe" and not (givenName eq "Jane")) or userName sw "snow""#,
            &["snow123", "doe456"],
        ),
        (
            r#"sn eq "Doe" and (loginCount gt 8 or telephoneNumber pr)"#,
            &["doe456", "doe789"],
        ),
        (r#"not (sn eq "Doe" or loginCount lt 5)"#, &[]),
        (r#"address.locality eq "Oslo""#, &["doe456", "doe789"]),
        (
            r#"emails[type eq "work" and value ew "@corp.example"]"#,
            &["snow123"],
        ),
        (r#"emails[type eq "home"]"#, &["snow123", "doe456"]),
        (r#"emails.value co "corp""#, &["snow123", "doe456"]),
        ("emails pr", &["snow123", "doe456"]),
    ];
    for (filter, expected) in cases {
        assert_eq!(ids(&mut c, filter).await, set(expected), "{filter}");
    }
    let count = c
        .objects
        .count_objects(CountObjectsRequest {
            parent: "managed/user".into(),
            filter: r#"sn eq "Doe""#.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(count.count, 2);
}

#[tokio::test]
async fn sorting_by_several_keys() {
    let idmd = Idmd::start().await;
    let mut c = idmd.clients().await;
    seed(&mut c).await;
    let page = c
        .objects
        .query_objects(QueryObjectsRequest {
            parent: "managed/user".into(),
            order_by: "sn asc, givenName desc".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let order: Vec<String> = page.objects.into_iter().map(|o| o.id).collect();
    assert_eq!(order, ["doe456", "doe789", "snow123"]);
    let page = c
        .objects
        .query_objects(QueryObjectsRequest {
            parent: "managed/user".into(),
            order_by: "loginCount desc".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let order: Vec<String> = page.objects.into_iter().map(|o| o.id).collect();
    assert_eq!(order, ["doe456", "doe789", "snow123"]);
    let bad = c
        .objects
        .query_objects(QueryObjectsRequest {
            parent: "managed/user".into(),
            order_by: "sn sideways".into(),
            ..Default::default()
        })
        .await;
    expect_code(bad, Code::InvalidArgument);
}

#[tokio::test]
async fn bad_filters_are_invalid_argument_with_the_position() {
    let idmd = Idmd::start().await;
    let mut c = idmd.clients().await;
    for (filter, position) in [
        (r#"userName equals "x""#, "9"),
        ("userName eq", "11"),
        (r#"(sn eq "Doe""#, "0"),
    ] {
        let result = c
            .objects
            .query_objects(QueryObjectsRequest {
                parent: "managed/user".into(),
                filter: filter.into(),
                ..Default::default()
            })
            .await;
        let status = expect_code(result, Code::InvalidArgument);
        assert!(
            status.message().contains(&format!("position {position}")),
            "{filter}: {status:?}"
        );
        let info = status
            .get_error_details()
            .error_info()
            .cloned()
            .expect("ErrorInfo");
        assert_eq!(info.reason, "FILTER_SYNTAX");
        assert_eq!(
            info.metadata.get("position").map(String::as_str),
            Some(position)
        );
    }
    for filter in [r#"password eq "x""#, r#"loginCount co 5"#, "groups pr"] {
        let result = c
            .objects
            .query_objects(QueryObjectsRequest {
                parent: "managed/user".into(),
                filter: filter.into(),
                ..Default::default()
            })
            .await;
        expect_code(result, Code::InvalidArgument);
    }
}

#[tokio::test]
async fn injection_attempts_find_nothing_and_harm_nothing() {
    let idmd = Idmd::start().await;
    let mut c = idmd.clients().await;
    seed(&mut c).await;
    // Hostile text as ids and values is stored and read back as plain data.
    let hostile_ids = [
        "x'; DELETE object; --",
        "user:⟨snow123⟩",
        "object:['user', 'doe456']",
        "⟩ OR true",
        "$type",
    ];
    for (n, id) in hostile_ids.iter().enumerate() {
        create_user(
            &mut c,
            id,
            json!({"userName": format!("h{n}\"; REMOVE TABLE object; --")}),
        )
        .await;
        let got = c
            .objects
            .get_object(GetObjectRequest {
                name: format!("managed/user/{id}"),
                read_mask: None,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(&got.id, id);
    }
    let value_attacks = [
        r#"userName eq "x\" OR true OR \"""#,
        r#"userName eq "'; DELETE object; --""#,
        r#"userName eq "snow123' OR type = 'user""#,
        r#"sn eq "⟩; SELECT * FROM credential; ⟨""#,
        r#"_id eq "user:⟨snow123⟩ OR 1=1""#,
        r#"userName co "$type""#,
    ];
    for filter in value_attacks {
        assert!(ids(&mut c, filter).await.is_empty(), "{filter}");
    }
    for filter in [
        "userName) OR (true",
        r#"data eq "x" OR true"#,
        "sn eq true; DELETE object",
    ] {
        let result = c
            .objects
            .query_objects(QueryObjectsRequest {
                parent: "managed/user".into(),
                filter: filter.into(),
                ..Default::default()
            })
            .await;
        if let Ok(page) = result {
            assert!(page.into_inner().objects.is_empty(), "{filter}");
        } else {
            expect_code(result, Code::InvalidArgument);
        }
    }
    let count = c
        .objects
        .count_objects(CountObjectsRequest {
            parent: "managed/user".into(),
            filter: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        count.count,
        3 + hostile_ids.len() as i64,
        "nothing was deleted"
    );
    assert_eq!(
        ids(&mut c, r#"userName eq "h0\"; REMOVE TABLE object; --""#).await,
        set(&[hostile_ids[0]])
    );
}
