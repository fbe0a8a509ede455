use idm_proto::v1::{
    GetObjectRequest, PatchObjectRequest, PatchOperation, QueryAuditRequest, QueryObjectsRequest,
    ReplaceObjectRequest,
};
use idm_tests::{Idmd, attrs, json_of};
use serde_json::json;

use crate::create_user;

const PASSWORD: &str = "FooBar123";

async fn verify(c: &mut idm_tests::Clients, password: &str) -> bool {
    crate::password_valid(c, "snow123", password).await
}

#[tokio::test]
async fn passwords_verify_but_never_come_back_from_any_read_audit_or_log() {
    let idmd = Idmd::start().await;
    let mut c = idmd.clients().await;
    let created = create_user(
        &mut c,
        "snow123",
        json!({"userName": "snow123", "password": PASSWORD}),
    )
    .await;
    let mut seen = vec![format!("{created:?}")];
    assert!(json_of(&created).get("password").is_none());
    assert!(verify(&mut c, PASSWORD).await);
    assert!(!verify(&mut c, "foobar123").await);

    let fetched = c
        .objects
        .get_object(GetObjectRequest {
            name: "managed/user/snow123".into(),
            read_mask: None,
        })
        .await
        .unwrap()
        .into_inner();
    seen.push(format!("{fetched:?}"));
    let masked = c
        .objects
        .get_object(GetObjectRequest {
            name: "managed/user/snow123".into(),
            read_mask: Some(prost_types::FieldMask {
                paths: vec!["password".into()],
            }),
        })
        .await
        .unwrap()
        .into_inner();
    seen.push(format!("{masked:?}"));
    let queried = c
        .objects
        .query_objects(QueryObjectsRequest {
            parent: "managed/user".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    seen.push(format!("{queried:?}"));

    // Same password again: nothing changes, not even the revision.
    let same = c
        .objects
        .replace_object(ReplaceObjectRequest {
            name: "managed/user/snow123".into(),
            attributes: attrs(json!({"userName": "snow123", "password": PASSWORD})),
            expected_revision: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(same.revision, 1);
    // A replace without the password keeps it.
    c.objects
        .replace_object(ReplaceObjectRequest {
            name: "managed/user/snow123".into(),
            attributes: attrs(json!({"userName": "snow123", "sn": "Snow"})),
            expected_revision: None,
        })
        .await
        .unwrap();
    assert!(verify(&mut c, PASSWORD).await);
    let changed = c
        .objects
        .patch_object(PatchObjectRequest {
            name: "managed/user/snow123".into(),
            operations: vec![PatchOperation {
                operation: "replace".into(),
                field: "/password".into(),
                value: Some(idm_proto::json::to_proto_value(&json!("NewSecret456"))),
                ..Default::default()
            }],
            expected_revision: None,
        })
        .await
        .unwrap()
        .into_inner();
    seen.push(format!("{changed:?}"));
    assert_eq!(changed.revision, 3);
    assert!(verify(&mut c, "NewSecret456").await);

    let audit = c
        .audit
        .query_audit(QueryAuditRequest {
            filter: r#"object eq "managed/user/snow123""#.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        audit
            .entries
            .iter()
            .any(|e| e.changed_properties.contains(&"password".to_string())),
        "the change is recorded by name"
    );
    seen.push(format!("{audit:?}"));

    let cli = idmd.idmctl(&["--output", "json", "objects", "get", "managed/user/snow123"]);
    seen.push(String::from_utf8_lossy(&cli.stdout).into_owned());
    seen.push(idmd.log());
    for text in seen {
        assert!(
            !text.contains(PASSWORD) && !text.contains("NewSecret456"),
            "a password leaked: {text}"
        );
    }
}
