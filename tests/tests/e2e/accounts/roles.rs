//! SetAccountRole (`idmctl accounts set-role`): a new role ends the
//! account's sessions, is audited, and never leaves the store without an
//! enabled admin account; disabling and deleting keep that rule too.

use idm_proto::v1::{
    DeleteAccountRequest, GetAccountRequest, Scope, SetAccountEnabledRequest, SetAccountRoleRequest,
};
use tonic::Code;

use super::{as_session, audit_of, can_read, create, login};
use crate::{expect_code, violated_field};

fn set_role(name: &str, role: Scope) -> SetAccountRoleRequest {
    SetAccountRoleRequest {
        name: name.into(),
        role: role.into(),
    }
}

#[tokio::test]
async fn a_new_role_ends_the_sessions_and_the_next_login_has_it() {
    let idmd = idm_tests::Idmd::start().await;
    let mut admin = idmd.clients().await;
    create(&mut admin, "alice", "Alice-Pass-1", Scope::Read).await;
    let read = login(&idmd, "alice", "Alice-Pass-1").await.unwrap();
    let mut alice = as_session(&idmd, &read).await;
    can_read(&mut alice).await.unwrap();

    // The same role again: nothing ends.
    admin
        .accounts
        .set_account_role(set_role("alice", Scope::Read))
        .await
        .unwrap();
    can_read(&mut alice).await.unwrap();

    let changed = admin
        .accounts
        .set_account_role(set_role("internal/user/alice", Scope::Admin))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (changed.id.as_str(), changed.role),
        ("alice", i32::from(Scope::Admin))
    );
    expect_code(can_read(&mut alice).await, Code::Unauthenticated);
    let again = login(&idmd, "alice", "Alice-Pass-1").await.unwrap();
    assert_eq!(again.scope, i32::from(Scope::Admin));
    let got = admin
        .accounts
        .get_account(GetAccountRequest {
            name: "alice".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.role, i32::from(Scope::Admin));

    // Refusals: a role that is not one, an unknown account, a non-admin caller.
    let bad = expect_code(
        admin
            .accounts
            .set_account_role(set_role("alice", Scope::VerifyPassword))
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_field(&bad), "role");
    expect_code(
        admin
            .accounts
            .set_account_role(SetAccountRoleRequest {
                name: "alice".into(),
                role: 42,
            })
            .await,
        Code::InvalidArgument,
    );
    expect_code(
        admin
            .accounts
            .set_account_role(set_role("nobody", Scope::Read))
            .await,
        Code::NotFound,
    );
    let scim = crate::token(&idmd, Scope::Scim).await;
    let mut scim = idmd.clients_with(Some(scim)).await;
    expect_code(
        scim.accounts
            .set_account_role(set_role("alice", Scope::Read))
            .await,
        Code::PermissionDenied,
    );

    let trail: Vec<(String, String, String, String)> =
        audit_of(&mut admin, r#"operation eq "account.set-role""#)
            .await
            .into_iter()
            .map(|e| (e.object, e.outcome, e.detail, e.actor))
            .collect();
    let entry = |object: &str, outcome: &str, detail: &str, actor: &str| {
        (
            object.to_string(),
            outcome.to_string(),
            detail.to_string(),
            actor.to_string(),
        )
    };
    assert_eq!(
        trail,
        [
            entry("internal/user/alice", "success", "role read", "bootstrap"),
            entry("internal/user/alice", "success", "role admin", "bootstrap"),
            entry(
                "internal/user/alice",
                "INVALID_ARGUMENT",
                "role verify-password",
                "bootstrap"
            ),
            entry(
                "internal/user/alice",
                "INVALID_ARGUMENT",
                "role no",
                "bootstrap"
            ),
            entry(
                "internal/user/nobody",
                "NOT_FOUND",
                "role read",
                "bootstrap"
            ),
            (
                "internal/user/alice".to_string(),
                "PERMISSION_DENIED".to_string(),
                String::new(),
                trail[5].3.clone()
            ),
        ]
    );
}

#[tokio::test]
async fn the_last_enabled_admin_keeps_its_role_and_cannot_be_disabled_or_deleted() {
    let idmd = idm_tests::Idmd::start().await;
    let mut admin = idmd.clients().await;
    create(&mut admin, "root", "Root-Pass-12", Scope::Admin).await;
    create(&mut admin, "alice", "Alice-Pass-1", Scope::Read).await;
    let session = login(&idmd, "root", "Root-Pass-12").await.unwrap();
    let mut root = as_session(&idmd, &session).await;

    // root, the last enabled admin, acting on itself or by the bootstrap token.
    let demote = expect_code(
        root.accounts
            .set_account_role(set_role("root", Scope::Scim))
            .await,
        Code::FailedPrecondition,
    );
    assert_eq!(
        demote.message(),
        "internal/user/root is the last enabled admin account; make another account an admin first"
    );
    expect_code(
        admin
            .accounts
            .set_account_enabled(SetAccountEnabledRequest {
                name: "root".into(),
                enabled: false,
            })
            .await,
        Code::FailedPrecondition,
    );
    expect_code(
        admin
            .accounts
            .delete_account(DeleteAccountRequest {
                name: "root".into(),
            })
            .await,
        Code::FailedPrecondition,
    );
    // Nothing changed: root's session goes on, as an admin.
    can_read(&mut root).await.unwrap();
    root.accounts
        .list_accounts(idm_proto::v1::ListAccountsRequest {})
        .await
        .unwrap();

    // A disabled admin does not count; an enabled one does.
    root.accounts
        .set_account_role(set_role("alice", Scope::Admin))
        .await
        .unwrap();
    root.accounts
        .set_account_enabled(SetAccountEnabledRequest {
            name: "alice".into(),
            enabled: false,
        })
        .await
        .unwrap();
    expect_code(
        root.accounts
            .set_account_role(set_role("root", Scope::Read))
            .await,
        Code::FailedPrecondition,
    );
    root.accounts
        .set_account_enabled(SetAccountEnabledRequest {
            name: "alice".into(),
            enabled: true,
        })
        .await
        .unwrap();
    let demoted = root
        .accounts
        .set_account_role(set_role("root", Scope::Read))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(demoted.role, i32::from(Scope::Read));
    // Its own session ended with its role.
    expect_code(can_read(&mut root).await, Code::Unauthenticated);
    // Now alice is the last one.
    expect_code(
        admin
            .accounts
            .delete_account(DeleteAccountRequest {
                name: "alice".into(),
            })
            .await,
        Code::FailedPrecondition,
    );

    let outcomes: Vec<(String, String, String)> = audit_of(
        &mut admin,
        r#"operation sw "account." and outcome eq "FAILED_PRECONDITION""#,
    )
    .await
    .into_iter()
    .map(|e| (e.operation, e.object, e.actor))
    .collect();
    let entry = |operation: &str, object: &str, actor: &str| {
        (operation.to_string(), object.to_string(), actor.to_string())
    };
    assert_eq!(
        outcomes,
        [
            entry("account.set-role", "internal/user/root", "root"),
            entry("account.disable", "internal/user/root", "bootstrap"),
            entry("account.delete", "internal/user/root", "bootstrap"),
            entry("account.set-role", "internal/user/root", "root"),
            entry("account.delete", "internal/user/alice", "bootstrap"),
        ]
    );
}

#[tokio::test]
async fn idmctl_sets_a_role() {
    let idmd = idm_tests::Idmd::start().await;
    let mut admin = idmd.clients().await;
    create(&mut admin, "alice", "Alice-Pass-1", Scope::Read).await;
    let out = idmd.idmctl(&["accounts", "set-role", "alice", "scim"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("\"role\": \"scim\""), "{text}");
    let out = idmd.idmctl(&["accounts", "set-role", "alice", "root"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("read, scim, admin"), "{err}");
    let out = idmd.idmctl(&["accounts", "set-role", "nobody", "read"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("NOT_FOUND"), "{err}");
}
