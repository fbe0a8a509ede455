use idm_proto::v1::{
    CreateObjectRequest, CreateTokenRequest, GetCallerRequest, GetObjectRequest, ListTokensRequest,
    QueryObjectsRequest, RevokeTokenRequest, Scope,
};
use idm_tests::{Idmd, attrs};
use serde_json::json;
use tonic::Code;

use crate::{create_user, expect_code, token};

fn new_user(id: &str) -> CreateObjectRequest {
    CreateObjectRequest {
        parent: "managed/user".into(),
        object_id: id.into(),
        attributes: attrs(json!({"userName": id})),
    }
}

#[tokio::test]
async fn calls_without_a_valid_token_are_unauthenticated_but_health_is_open() {
    let idmd = Idmd::start().await;
    assert_eq!(idmd.health().await.unwrap(), 1, "SERVING without a token");
    let mut anonymous = idmd.clients_with(None).await;
    expect_code(
        anonymous
            .objects
            .query_objects(QueryObjectsRequest {
                parent: "managed/user".into(),
                ..Default::default()
            })
            .await,
        Code::Unauthenticated,
    );
    let mut wrong = idmd.clients_with(Some("not-the-token".into())).await;
    expect_code(
        wrong.objects.create_object(new_user("x")).await,
        Code::Unauthenticated,
    );
    let mut forged = idmd
        .clients_with(Some("idm_0011223344556677_forged".into()))
        .await;
    expect_code(
        forged.tokens.get_caller(GetCallerRequest {}).await,
        Code::Unauthenticated,
    );
}

#[tokio::test]
async fn scopes_limit_what_a_token_may_do() {
    let idmd = Idmd::start().await;
    let mut admin = idmd.clients().await;
    create_user(&mut admin, "snow123", json!({"userName": "snow123"})).await;

    let mut read = idmd
        .clients_with(Some(token(&idmd, Scope::Read).await))
        .await;
    read.objects
        .get_object(GetObjectRequest {
            name: "managed/user/snow123".into(),
            read_mask: None,
        })
        .await
        .unwrap();
    expect_code(
        read.objects.create_object(new_user("r")).await,
        Code::PermissionDenied,
    );
    expect_code(
        read.tokens.list_tokens(ListTokensRequest::default()).await,
        Code::PermissionDenied,
    );

    let mut scim = idmd
        .clients_with(Some(token(&idmd, Scope::Scim).await))
        .await;
    scim.objects.create_object(new_user("s")).await.unwrap();
    let denied = scim
        .tokens
        .create_token(CreateTokenRequest {
            scope: Scope::Admin.into(),
            description: String::new(),
            ttl: None,
        })
        .await;
    expect_code(denied, Code::PermissionDenied);
    let me = scim
        .tokens
        .get_caller(GetCallerRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(me.scope, i32::from(Scope::Scim));
}

#[tokio::test]
async fn revoked_and_expired_tokens_stop_working_and_secrets_are_never_listed() {
    let idmd = Idmd::start().await;
    let mut admin = idmd.clients().await;
    let created = admin
        .tokens
        .create_token(CreateTokenRequest {
            scope: Scope::Read.into(),
            description: "ci".into(),
            ttl: None,
        })
        .await
        .unwrap()
        .into_inner();
    let secret = created.secret.clone();
    let token = created.token.unwrap();
    let mut holder = idmd.clients_with(Some(secret.clone())).await;
    holder.tokens.get_caller(GetCallerRequest {}).await.unwrap();

    let listed = admin
        .tokens
        .list_tokens(ListTokensRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(listed.tokens.iter().any(|t| t.id == token.id));
    assert!(
        !format!("{listed:?}").contains(&secret),
        "the secret is shown once, at creation"
    );

    admin
        .tokens
        .revoke_token(RevokeTokenRequest {
            name: token.name.clone(),
        })
        .await
        .unwrap();
    expect_code(
        holder.tokens.get_caller(GetCallerRequest {}).await,
        Code::Unauthenticated,
    );
    let active = admin
        .tokens
        .list_tokens(ListTokensRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(!active.tokens.iter().any(|t| t.id == token.id));

    let short = admin
        .tokens
        .create_token(CreateTokenRequest {
            scope: Scope::Read.into(),
            description: String::new(),
            ttl: Some(prost_types::Duration {
                seconds: 1,
                nanos: 0,
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let mut expiring = idmd.clients_with(Some(short.secret)).await;
    expiring
        .tokens
        .get_caller(GetCallerRequest {})
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    expect_code(
        expiring.tokens.get_caller(GetCallerRequest {}).await,
        Code::Unauthenticated,
    );
}

#[tokio::test]
async fn a_token_lifetime_past_any_date_is_invalid_and_idmd_serves_on() {
    let idmd = Idmd::start().await;
    let mut admin = idmd.clients().await;
    let create = |seconds: i64| CreateTokenRequest {
        scope: Scope::Read.into(),
        description: String::new(),
        ttl: Some(prost_types::Duration { seconds, nanos: 0 }),
    };
    for seconds in [
        4_000_000 * 86_400,
        i64::MAX,
        101 * 366 * 86_400,
        0,
        -1,
        i64::MIN,
    ] {
        let refused = expect_code(
            admin.tokens.create_token(create(seconds)).await,
            Code::InvalidArgument,
        );
        assert!(refused.message().contains("ttl"), "{refused:?}");
    }
    let cli = idmd.idmctl(&["tokens", "create", "--scope", "read", "--ttl", "4000000d"]);
    assert!(!cli.status.success());
    let stderr = String::from_utf8_lossy(&cli.stderr);
    assert!(stderr.contains("ttl"), "{stderr}");
    assert!(!stderr.contains("CANCELLED"), "{stderr}");

    assert_eq!(idmd.health().await, Ok(1));
    let long = admin
        .tokens
        .create_token(create(99 * 366 * 86_400))
        .await
        .unwrap()
        .into_inner();
    assert!(long.token.unwrap().expire_time.is_some());
    admin.tokens.get_caller(GetCallerRequest {}).await.unwrap();
}
