use idm_proto::v1::{
    CreateTokenRequest, DeleteObjectRequest, PatchObjectRequest, PatchOperation, QueryAuditRequest,
    Scope,
};
use idm_tests::Idmd;
use serde_json::json;
use tonic::Code;

use crate::{create_user, expect_code};

#[tokio::test]
async fn every_managed_write_is_audited_with_actor_revisions_and_changed_properties() {
    let idmd = Idmd::start().await;
    let mut admin = idmd.clients().await;
    let scim_token = admin
        .tokens
        .create_token(CreateTokenRequest {
            scope: Scope::Scim.into(),
            description: "app".into(),
            ttl: None,
        })
        .await
        .unwrap()
        .into_inner();
    let mut app = idmd.clients_with(Some(scim_token.secret)).await;
    create_user(
        &mut app,
        "doe456",
        json!({"userName": "doe456", "givenName": "John"}),
    )
    .await;
    app.objects
        .patch_object(PatchObjectRequest {
            name: "managed/user/doe456".into(),
            operations: vec![
                PatchOperation {
                    operation: "replace".into(),
                    field: "/givenName".into(),
                    value: Some(idm_proto::json::to_proto_value(&json!("Johnny"))),
                    ..Default::default()
                },
                PatchOperation {
                    operation: "add".into(),
                    field: "/sn".into(),
                    value: Some(idm_proto::json::to_proto_value(&json!("Doe"))),
                    ..Default::default()
                },
            ],
            expected_revision: None,
        })
        .await
        .unwrap();
    admin
        .objects
        .delete_object(DeleteObjectRequest {
            name: "managed/user/doe456".into(),
            expected_revision: None,
        })
        .await
        .unwrap();

    let trail = admin
        .audit
        .query_audit(QueryAuditRequest {
            filter: r#"object eq "managed/user/doe456""#.into(),
            order_by: "time asc".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let summary: Vec<(String, String, i64, i64, Vec<String>)> = trail
        .entries
        .iter()
        .map(|e| {
            (
                e.operation.clone(),
                e.actor.clone(),
                e.revision_before,
                e.revision_after,
                e.changed_properties.clone(),
            )
        })
        .collect();
    let app_id = scim_token.token.unwrap().id;
    assert_eq!(
        summary,
        vec![
            (
                "create".into(),
                app_id.clone(),
                0,
                1,
                vec!["givenName".into(), "userName".into()]
            ),
            (
                "patch".into(),
                app_id.clone(),
                1,
                2,
                vec!["givenName".into(), "sn".into()]
            ),
            ("delete".into(), "bootstrap".into(), 2, 0, vec![]),
        ]
    );
    let patches = admin
        .audit
        .query_audit(QueryAuditRequest {
            filter: format!(
                r#"actor eq "{app_id}" and operation eq "patch" and changedProperties eq "sn""#
            ),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(patches.total_size, 1);
    expect_code(
        admin
            .audit
            .query_audit(QueryAuditRequest {
                filter: "password pr".into(),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
    );
}
