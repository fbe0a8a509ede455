//! VerifyPassword: its own scope, one answer for every way a check can fail,
//! throttled per object and per caller, and audited without the password.

use std::time::{Duration, Instant};

use idm_proto::v1::{
    CreateTokenRequest, GetCallerRequest, GetObjectRequest, QueryAuditRequest, QueryObjectsRequest,
    Scope, VerifyPasswordRequest, VerifyPasswordResponse,
};
use idm_tests::{Clients, Idmd, IdmdOptions};
use serde_json::json;
use tonic::Code;
use tonic_types::StatusExt;

use crate::{create_user, expect_code};

const PASSWORD: &str = "Corr3ct-Horse";

/// A token of `scope` and its id.
async fn token(idmd: &Idmd, scope: Scope) -> (String, String) {
    let created = idmd
        .clients()
        .await
        .tokens
        .create_token(CreateTokenRequest {
            scope: scope.into(),
            description: String::new(),
            ttl: None,
        })
        .await
        .unwrap()
        .into_inner();
    (created.secret, created.token.unwrap().id)
}

async fn check(
    c: &mut Clients,
    name: &str,
    property: &str,
    password: &str,
) -> Result<VerifyPasswordResponse, tonic::Status> {
    c.objects
        .verify_password(VerifyPasswordRequest {
            name: name.into(),
            property: property.into(),
            password: password.into(),
        })
        .await
        .map(tonic::Response::into_inner)
}

async fn with_user(options: IdmdOptions) -> Idmd {
    let idmd = Idmd::start_with(options).await;
    create_user(
        &mut idmd.clients().await,
        "snow123",
        json!({"userName": "snow123", "sn": "Snow", "password": PASSWORD}),
    )
    .await;
    idmd
}

#[tokio::test]
async fn an_unknown_user_property_or_type_answers_like_a_wrong_password() {
    let idmd = with_user(IdmdOptions::default()).await;
    let (secret, _) = token(&idmd, Scope::VerifyPassword).await;
    let mut c = idmd.clients_with(Some(secret)).await;

    let wrong = check(&mut c, "managed/user/snow123", "", "wrong").await;
    assert!(matches!(wrong, Ok(VerifyPasswordResponse { valid: false })));
    for (name, property) in [
        ("managed/user/nobody", ""),
        ("managed/user/snow123", "sn"),
        ("managed/user/snow123", "noSuchProperty"),
        ("managed/nosuchtype/snow123", "password"),
    ] {
        let answer = check(&mut c, name, property, "wrong").await;
        assert_eq!(
            format!("{answer:?}"),
            format!("{wrong:?}"),
            "{name} {property}: the same answer as a wrong password"
        );
    }
    assert!(
        check(&mut c, "managed/user/snow123", "password", PASSWORD)
            .await
            .unwrap()
            .valid
    );

    // And about the same time: an unknown user costs a whole argon2 check.
    let start = Instant::now();
    check(&mut c, "managed/user/snow123", "", "wrong")
        .await
        .unwrap();
    let real = start.elapsed();
    let start = Instant::now();
    check(&mut c, "managed/user/ghost", "", "wrong")
        .await
        .unwrap();
    let unknown = start.elapsed();
    assert!(
        unknown * 4 >= real,
        "an unknown user answered in {unknown:?}, a real one in {real:?}"
    );
}

#[tokio::test]
async fn only_admin_and_verify_password_tokens_check_passwords_and_the_latter_nothing_else() {
    let idmd = with_user(IdmdOptions::default()).await;
    for scope in [Scope::Read, Scope::Scim] {
        let (secret, _) = token(&idmd, scope).await;
        let mut c = idmd.clients_with(Some(secret)).await;
        let denied = expect_code(
            check(&mut c, "managed/user/snow123", "", PASSWORD).await,
            Code::PermissionDenied,
        );
        assert!(denied.message().contains("verify-password"), "{denied:?}");
        // An unknown user is refused alike: the scope is checked first.
        expect_code(
            check(&mut c, "managed/user/nobody", "", PASSWORD).await,
            Code::PermissionDenied,
        );
    }

    let (secret, _) = token(&idmd, Scope::VerifyPassword).await;
    let mut verifier = idmd.clients_with(Some(secret)).await;
    assert!(
        check(&mut verifier, "managed/user/snow123", "", PASSWORD)
            .await
            .unwrap()
            .valid
    );
    let me = verifier
        .tokens
        .get_caller(GetCallerRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(me.scope, i32::from(Scope::VerifyPassword));
    expect_code(
        verifier
            .objects
            .get_object(GetObjectRequest {
                name: "managed/user/snow123".into(),
                read_mask: None,
            })
            .await,
        Code::PermissionDenied,
    );
    expect_code(
        verifier
            .objects
            .query_objects(QueryObjectsRequest {
                parent: "managed/user".into(),
                ..Default::default()
            })
            .await,
        Code::PermissionDenied,
    );
    expect_code(
        verifier
            .audit
            .query_audit(QueryAuditRequest::default())
            .await,
        Code::PermissionDenied,
    );

    let mut admin = idmd.clients().await;
    assert!(
        check(&mut admin, "managed/user/snow123", "", PASSWORD)
            .await
            .unwrap()
            .valid
    );

    // idmctl makes such a token.
    let made = idmd.idmctl(&[
        "--output",
        "json",
        "tokens",
        "create",
        "--scope",
        "verify-password",
    ]);
    assert!(made.status.success(), "{made:?}");
    let made: serde_json::Value = serde_json::from_slice(&made.stdout).unwrap();
    assert_eq!(made["token"]["scope"], "verify-password");
}

#[tokio::test]
async fn failed_checks_are_throttled_per_object_and_per_caller_whether_it_exists_or_not() {
    let idmd = with_user(IdmdOptions {
        extra_args: [
            "--password-failures-per-object",
            "3",
            "--password-failures-per-caller",
            "8",
        ]
        .map(String::from)
        .to_vec(),
        ..Default::default()
    })
    .await;
    let (secret, _) = token(&idmd, Scope::VerifyPassword).await;
    let mut c = idmd.clients_with(Some(secret)).await;

    // Successes do not count.
    for _ in 0..5 {
        assert!(
            check(&mut c, "managed/user/snow123", "", PASSWORD)
                .await
                .unwrap()
                .valid
        );
    }
    let mut refusals = Vec::new();
    for name in ["managed/user/snow123", "managed/user/nobody"] {
        for _ in 0..3 {
            assert!(!check(&mut c, name, "", "guess").await.unwrap().valid);
        }
        let refused = expect_code(
            check(&mut c, name, "", PASSWORD).await,
            Code::ResourceExhausted,
        );
        let retry = refused
            .get_error_details()
            .retry_info()
            .and_then(|r| r.retry_delay)
            .expect("retry info");
        assert!(retry > Duration::ZERO && retry <= Duration::from_secs(900));
        refusals.push(refused.message().replace(char::is_numeric, "#"));
    }
    assert_eq!(
        refusals[0], refusals[1],
        "a refusal tells nothing about existence"
    );

    // The caller has 6 failures; 2 more on other objects use its budget up.
    for name in ["managed/user/a", "managed/user/b"] {
        assert!(!check(&mut c, name, "", "guess").await.unwrap().valid);
    }
    expect_code(
        check(&mut c, "managed/user/c", "", "guess").await,
        Code::ResourceExhausted,
    );
    // Another caller is not held up by this one's failures.
    let mut admin = idmd.clients().await;
    assert!(
        !check(&mut admin, "managed/user/c", "", "guess")
            .await
            .unwrap()
            .valid
    );
    assert_eq!(idmd.health().await, Ok(1));
}

#[tokio::test]
async fn every_check_is_audited_with_actor_object_and_outcome_but_never_the_password() {
    let idmd = with_user(IdmdOptions::default()).await;
    let (secret, verifier_id) = token(&idmd, Scope::VerifyPassword).await;
    let mut verifier = idmd.clients_with(Some(secret)).await;
    let (read_secret, reader_id) = token(&idmd, Scope::Read).await;
    let mut reader = idmd.clients_with(Some(read_secret)).await;

    check(&mut verifier, "managed/user/snow123", "", PASSWORD)
        .await
        .unwrap();
    check(&mut verifier, "managed/user/snow123", "", "Wr0ng-Guess")
        .await
        .unwrap();
    check(&mut verifier, "managed/user/nobody", "", "Wr0ng-Guess")
        .await
        .unwrap();
    let _ = check(&mut reader, "managed/user/snow123", "", "Wr0ng-Guess").await;

    let trail = idmd
        .clients()
        .await
        .audit
        .query_audit(QueryAuditRequest {
            filter: r#"operation eq "password.verify""#.into(),
            order_by: "time asc".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let seen: Vec<(&str, &str, &str)> = trail
        .entries
        .iter()
        .map(|e| (e.actor.as_str(), e.object.as_str(), e.outcome.as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            (verifier_id.as_str(), "managed/user/snow123", "valid"),
            (verifier_id.as_str(), "managed/user/snow123", "invalid"),
            (verifier_id.as_str(), "managed/user/nobody", "invalid"),
            (
                reader_id.as_str(),
                "managed/user/snow123",
                "PERMISSION_DENIED"
            ),
        ]
    );
    let printed = format!("{trail:?}");
    assert!(!printed.contains(PASSWORD) && !printed.contains("Wr0ng-Guess"));
    assert!(!idmd.log().contains("Wr0ng-Guess"));
}
