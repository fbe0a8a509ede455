use idm_proto::v1::{
    CreateObjectRequest, DeleteObjectRequest, GetObjectRequest, PatchObjectRequest, PatchOperation,
    QueryObjectsRequest, ReplaceObjectRequest,
};
use idm_tests::{Idmd, attrs, json_of};
use serde_json::json;
use tonic::Code;

use crate::{create_user, expect_code, violated_field};

fn op(operation: &str, field: &str, value: serde_json::Value) -> PatchOperation {
    PatchOperation {
        operation: operation.into(),
        field: field.into(),
        value: Some(idm_proto::json::to_proto_value(&value)),
        ..Default::default()
    }
}

fn get(name: &str) -> GetObjectRequest {
    GetObjectRequest {
        name: name.into(),
        read_mask: None,
    }
}

#[tokio::test]
async fn user_lifecycle_create_get_replace_patch_delete() {
    let idmd = Idmd::start().await;
    let mut c = idmd.clients().await;
    let created = create_user(
        &mut c,
        "snow123",
        json!({"userName": "snow123", "givenName": "Jon", "sn": "Snow"}),
    )
    .await;
    assert_eq!(created.name, "managed/user/snow123");
    assert_eq!(created.revision, 1);
    assert!(created.create_time.is_some() && created.update_time.is_some());

    let fetched = c
        .objects
        .get_object(get("managed/user/snow123"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(json_of(&fetched)["givenName"], "Jon");
    assert_eq!(
        json_of(&fetched)["groups"],
        json!([]),
        "a user shows its (empty) groups"
    );

    let replaced = c
        .objects
        .replace_object(ReplaceObjectRequest {
            name: "managed/user/snow123".into(),
            attributes: attrs(json!({"userName": "snow123", "givenName": "Jon", "sn": "Stark"})),
            expected_revision: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (replaced.revision, json_of(&replaced)["sn"].clone()),
        (2, json!("Stark"))
    );

    let patched = c
        .objects
        .patch_object(PatchObjectRequest {
            name: "managed/user/snow123".into(),
            operations: vec![
                op("replace", "/sn", json!("Snow")),
                op("add", "/mail", json!("jon.snow@example.com")),
            ],
            expected_revision: Some(2),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(patched.revision, 3);
    assert_eq!(json_of(&patched)["mail"], "jon.snow@example.com");

    let deleted = c
        .objects
        .delete_object(DeleteObjectRequest {
            name: "managed/user/snow123".into(),
            expected_revision: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(deleted.existed);
    assert_eq!(deleted.object.unwrap().revision, 3);
    expect_code(
        c.objects.get_object(get("managed/user/snow123")).await,
        Code::NotFound,
    );
    let again = c
        .objects
        .delete_object(DeleteObjectRequest {
            name: "managed/user/snow123".into(),
            expected_revision: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!again.existed, "deleting what is gone succeeds");
}

#[tokio::test]
async fn ids_are_generated_when_not_given_and_taken_ids_are_refused() {
    let idmd = Idmd::start().await;
    let mut c = idmd.clients().await;
    let generated = create_user(&mut c, "", json!({"userName": "anon"})).await;
    assert_eq!(generated.id.len(), 36, "a UUID: {}", generated.id);
    let from_body = create_user(&mut c, "", json!({"_id": "doe456", "userName": "doe456"})).await;
    assert_eq!(from_body.id, "doe456");
    let taken = c
        .objects
        .create_object(CreateObjectRequest {
            parent: "managed/user".into(),
            object_id: "doe456".into(),
            attributes: attrs(json!({"userName": "other"})),
        })
        .await;
    expect_code(taken, Code::AlreadyExists);
    let contradictory = c
        .objects
        .create_object(CreateObjectRequest {
            parent: "managed/user".into(),
            object_id: "a1".into(),
            attributes: attrs(json!({"_id": "b1", "userName": "ab"})),
        })
        .await;
    assert_eq!(
        violated_field(&expect_code(contradictory, Code::InvalidArgument)),
        "_id"
    );
    let moved = c
        .objects
        .replace_object(ReplaceObjectRequest {
            name: "managed/user/doe456".into(),
            attributes: attrs(json!({"_id": "elsewhere", "userName": "doe456"})),
            expected_revision: None,
        })
        .await;
    expect_code(moved, Code::InvalidArgument);
}

#[tokio::test]
async fn revision_moves_only_on_real_change_and_guards_writes() {
    let idmd = Idmd::start().await;
    let mut c = idmd.clients().await;
    create_user(
        &mut c,
        "doe789",
        json!({"userName": "doe789", "givenName": "Jane"}),
    )
    .await;
    let same = c
        .objects
        .replace_object(ReplaceObjectRequest {
            name: "managed/user/doe789".into(),
            attributes: attrs(json!({"userName": "doe789", "givenName": "Jane"})),
            expected_revision: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(same.revision, 1, "a no-op replace keeps the revision");
    let noop_patch = c
        .objects
        .patch_object(PatchObjectRequest {
            name: "managed/user/doe789".into(),
            operations: vec![op("replace", "/givenName", json!("Jane"))],
            expected_revision: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(noop_patch.revision, 1);

    let stale = c
        .objects
        .patch_object(PatchObjectRequest {
            name: "managed/user/doe789".into(),
            operations: vec![op("replace", "/sn", json!("Doe"))],
            expected_revision: Some(7),
        })
        .await;
    let status = expect_code(stale, Code::FailedPrecondition);
    assert!(status.message().contains("revision 1"), "{status:?}");
    let stale_delete = c
        .objects
        .delete_object(DeleteObjectRequest {
            name: "managed/user/doe789".into(),
            expected_revision: Some(9),
        })
        .await;
    expect_code(stale_delete, Code::FailedPrecondition);
    let fresh = c
        .objects
        .get_object(get("managed/user/doe789"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(fresh.revision, 1, "refused writes change nothing");
}

#[tokio::test]
async fn user_name_is_unique_ignoring_case_and_released_on_rename() {
    let idmd = Idmd::start().await;
    let mut c = idmd.clients().await;
    create_user(&mut c, "a", json!({"userName": "snow123"})).await;
    let clash = c
        .objects
        .create_object(CreateObjectRequest {
            parent: "managed/user".into(),
            object_id: "b".into(),
            attributes: attrs(json!({"userName": "SNOW123"})),
        })
        .await;
    let status = expect_code(clash, Code::AlreadyExists);
    assert_eq!(violated_field(&status), "userName");

    c.objects
        .patch_object(PatchObjectRequest {
            name: "managed/user/a".into(),
            operations: vec![op("replace", "/userName", json!("stark123"))],
            expected_revision: None,
        })
        .await
        .unwrap();
    create_user(&mut c, "b", json!({"userName": "Snow123"})).await;
    let steal = c
        .objects
        .patch_object(PatchObjectRequest {
            name: "managed/user/b".into(),
            operations: vec![op("replace", "/userName", json!("STARK123"))],
            expected_revision: None,
        })
        .await;
    expect_code(steal, Code::AlreadyExists);
}

#[tokio::test]
async fn schema_violations_name_the_property() {
    let idmd = Idmd::start().await;
    let mut c = idmd.clients().await;
    let missing = c
        .objects
        .create_object(CreateObjectRequest {
            parent: "managed/user".into(),
            object_id: String::new(),
            attributes: attrs(json!({"givenName": "Jon"})),
        })
        .await;
    assert_eq!(
        violated_field(&expect_code(missing, Code::InvalidArgument)),
        "userName"
    );
    let wrong_type = c
        .objects
        .create_object(CreateObjectRequest {
            parent: "managed/user".into(),
            object_id: String::new(),
            attributes: attrs(json!({"userName": "x", "givenName": 5})),
        })
        .await;
    let status = expect_code(wrong_type, Code::InvalidArgument);
    assert_eq!(violated_field(&status), "givenName");
    assert!(status.message().contains("expected a string"), "{status:?}");
    let unknown = c
        .objects
        .create_object(CreateObjectRequest {
            parent: "managed/widget".into(),
            object_id: String::new(),
            attributes: attrs(json!({})),
        })
        .await;
    expect_code(unknown, Code::NotFound);
    expect_code(
        c.objects.get_object(get("managed/widget/1")).await,
        Code::NotFound,
    );
    expect_code(
        c.objects.get_object(get("users/1")).await,
        Code::InvalidArgument,
    );
    let bad_patch = c
        .objects
        .patch_object(PatchObjectRequest {
            name: "managed/user/x".into(),
            operations: vec![op("frobnicate", "/sn", json!(1))],
            expected_revision: None,
        })
        .await;
    expect_code(bad_patch, Code::InvalidArgument);
}

#[tokio::test]
async fn group_members_reference_users_and_users_show_their_groups() {
    let idmd = Idmd::start().await;
    let mut c = idmd.clients().await;
    create_user(&mut c, "u1", json!({"userName": "u1"})).await;
    create_user(&mut c, "u2", json!({"userName": "u2"})).await;
    let group = c
        .objects
        .create_object(CreateObjectRequest {
            parent: "managed/group".into(),
            object_id: "staff".into(),
            attributes: attrs(
                json!({"name": "staff", "members": ["u1", {"_ref": "managed/user/u2"}]}),
            ),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        json_of(&group)["members"],
        json!([{"_ref": "managed/user/u1"}, {"_ref": "managed/user/u2"}])
    );
    let u1 = c
        .objects
        .get_object(get("managed/user/u1"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        json_of(&u1)["groups"],
        json!([{"_ref": "managed/group/staff"}])
    );

    let dangling = c
        .objects
        .patch_object(PatchObjectRequest {
            name: "managed/group/staff".into(),
            operations: vec![op("add", "/members/-", json!("ghost"))],
            expected_revision: None,
        })
        .await;
    let status = expect_code(dangling, Code::InvalidArgument);
    assert!(
        status.message().contains("managed/user/ghost"),
        "{status:?}"
    );

    c.objects
        .delete_object(DeleteObjectRequest {
            name: "managed/user/u1".into(),
            expected_revision: None,
        })
        .await
        .unwrap();
    let after = c
        .objects
        .get_object(get("managed/group/staff"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        json_of(&after)["members"],
        json!([{"_ref": "managed/user/u2"}]),
        "a deleted user leaves its groups"
    );
    assert_eq!(after.revision, 2);
    let listed = c
        .objects
        .query_objects(QueryObjectsRequest {
            parent: "managed/user".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        json_of(&listed.objects[0])["groups"],
        json!([{"_ref": "managed/group/staff"}]),
        "queries show groups too"
    );
}

#[tokio::test]
async fn concurrent_patches_of_one_object_all_apply() {
    let idmd = Idmd::start().await;
    let mut c = idmd.clients().await;
    create_user(&mut c, "busy", json!({"userName": "busy", "loginCount": 0})).await;
    let mut tasks = Vec::new();
    for _ in 0..12 {
        let mut objects = c.objects.clone();
        tasks.push(tokio::spawn(async move {
            objects
                .patch_object(PatchObjectRequest {
                    name: "managed/user/busy".into(),
                    operations: vec![op("increment", "/loginCount", json!(1))],
                    expected_revision: None,
                })
                .await
                .unwrap();
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let busy = c
        .objects
        .get_object(get("managed/user/busy"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(json_of(&busy)["loginCount"], 12, "no lost update");
    assert_eq!(busy.revision, 13);
}
