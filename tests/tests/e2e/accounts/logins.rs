//! Failed logins: one answer for every failure, locks per name and per
//! source (the right password refused during one), the trail of every
//! attempt; and the bootstrap admin from IDM_ADMIN_PASSWORD.

use std::time::Duration;

use idm_proto::v1::{ListAccountsRequest, Scope, SetAccountEnabledRequest};
use idm_tests::{Idmd, IdmdOptions, TempDir};
use tonic::Code;

use super::{
    ADMIN_PASSWORD, LOCKED, REFUSED, as_session, assert_never_shown, audit_of, base64_key,
    can_read, create, idmd_with, login, login_from,
};
use crate::expect_code;

#[tokio::test]
async fn failed_logins_answer_alike_are_throttled_and_audited() {
    let idmd = Idmd::start().await;
    let mut admin = idmd.clients().await;
    create(&mut admin, "alice", "Alice-Pass-1", Scope::Read).await;
    create(&mut admin, "bob", "Bob-Pass-12", Scope::Read).await;

    // A wrong password and an unknown name: one answer.
    let wrong = expect_code(
        login_from(&idmd, "alice", "not-her-password", "10.0.0.1").await,
        Code::Unauthenticated,
    );
    let unknown = expect_code(
        login_from(&idmd, "nobody", "Alice-Pass-1", "10.0.0.2").await,
        Code::Unauthenticated,
    );
    assert_eq!((wrong.message(), unknown.message()), (REFUSED, REFUSED));
    assert_eq!(
        format!("{:?}", wrong.details()),
        format!("{:?}", unknown.details())
    );

    // Five failures for a name (from five sources) lock it, the right password too.
    for i in 3..=6 {
        login_from(&idmd, "alice", "not-her-password", &format!("10.0.0.{i}"))
            .await
            .unwrap_err();
    }
    let locked = expect_code(
        login_from(&idmd, "alice", "Alice-Pass-1", "10.0.0.7").await,
        Code::ResourceExhausted,
    );
    assert_eq!(locked.message(), LOCKED);
    // An unknown name is locked alike.
    for i in 1..=5 {
        login_from(&idmd, "ghost", "whatever-1", &format!("10.0.1.{i}"))
            .await
            .unwrap_err();
    }
    let ghost = expect_code(
        login_from(&idmd, "ghost", "whatever-1", "10.0.1.9").await,
        Code::ResourceExhausted,
    );
    assert_eq!(ghost.message(), LOCKED);

    // Five failures from one source on any names lock the source.
    for name in ["carol", "dave", "erin", "frank", "grace"] {
        login_from(&idmd, name, "guess-guess", "192.0.2.50")
            .await
            .unwrap_err();
    }
    let source = expect_code(
        login_from(&idmd, "bob", "Bob-Pass-12", "192.0.2.50").await,
        Code::ResourceExhausted,
    );
    assert_eq!(source.message(), LOCKED);
    login_from(&idmd, "bob", "Bob-Pass-12", "192.0.2.51")
        .await
        .unwrap();

    // Every attempt is in the trail: the name tried, the outcome, the source.
    let logins = audit_of(&mut admin, r#"operation eq "auth.login""#).await;
    let of = |actor: &str, outcome: &str| {
        logins
            .iter()
            .filter(|e| e.actor == actor && e.outcome == outcome)
            .count()
    };
    assert_eq!(of("alice", "UNAUTHENTICATED"), 5);
    assert_eq!(of("alice", "RESOURCE_EXHAUSTED"), 1);
    assert_eq!(of("nobody", "UNAUTHENTICATED"), 1);
    assert_eq!(of("bob", "RESOURCE_EXHAUSTED"), 1);
    assert_eq!(of("bob", "success"), 1);
    let first = &logins[0];
    assert_eq!(
        (first.object.as_str(), first.detail.as_str()),
        ("internal/user/alice", "from 10.0.0.1 via 127.0.0.1")
    );
    let ok = logins.iter().find(|e| e.outcome == "success").unwrap();
    assert!(
        ok.detail
            .starts_with("from 192.0.2.51 via 127.0.0.1; session "),
        "{ok:?}"
    );
    assert_never_shown(
        &idmd,
        &[
            "Alice-Pass-1",
            "Bob-Pass-12",
            "not-her-password",
            "guess-guess",
        ],
    )
    .await;
}

#[tokio::test]
async fn a_lock_ends_after_its_delay_and_a_disabled_login_is_audited_as_such() {
    let idmd = idmd_with(
        &["--login-failures", "2", "--login-failure-window", "2"],
        &[],
    )
    .await;
    let mut admin = idmd.clients().await;
    create(&mut admin, "alice", "Alice-Pass-1", Scope::Read).await;
    for _ in 0..2 {
        login(&idmd, "alice", "wrong-password").await.unwrap_err();
    }
    expect_code(
        login(&idmd, "alice", "Alice-Pass-1").await,
        Code::ResourceExhausted,
    );
    tokio::time::sleep(Duration::from_millis(2300)).await;
    login(&idmd, "alice", "Alice-Pass-1").await.unwrap();

    admin
        .accounts
        .set_account_enabled(SetAccountEnabledRequest {
            name: "alice".into(),
            enabled: false,
        })
        .await
        .unwrap();
    let refused = expect_code(
        login(&idmd, "alice", "Alice-Pass-1").await,
        Code::Unauthenticated,
    );
    assert_eq!(refused.message(), REFUSED);
    let last = audit_of(&mut admin, r#"operation eq "auth.login""#)
        .await
        .pop()
        .unwrap();
    assert_eq!(
        (last.outcome.as_str(), last.detail.as_str()),
        ("UNAUTHENTICATED", "from 127.0.0.1; account disabled")
    );
}

#[tokio::test]
async fn openidm_admin_comes_from_idm_admin_password_and_only_from_it() {
    // Without the variable there is no password account.
    let idmd = Idmd::start().await;
    let mut admin = idmd.clients().await;
    let none = admin
        .accounts
        .list_accounts(ListAccountsRequest {})
        .await
        .unwrap();
    assert!(none.into_inner().accounts.is_empty());
    expect_code(
        login(&idmd, "openidm-admin", "openidm-admin").await,
        Code::Unauthenticated,
    );
    drop(idmd);

    // A weak value stops the start, saying why without saying it.
    let refused = Idmd::spawn(
        IdmdOptions {
            env: vec![("IDM_ADMIN_PASSWORD".into(), "Weak-1".into())],
            ..Default::default()
        },
        TempDir::new("weak-admin"),
        "t".into(),
        base64_key(),
    )
    .await
    .err()
    .expect("idmd started with a weak IDM_ADMIN_PASSWORD");
    assert!(
        refused.contains("IDM_ADMIN_PASSWORD: a password must be at least 8 characters"),
        "{refused}"
    );
    assert!(!refused.contains("Weak-1"), "{refused}");

    // With it: openidm-admin is an admin; a restart with another value re-sets it.
    let site = TempDir::new("bootstrap-site");
    let key = base64_key();
    let options = |password: &str| IdmdOptions {
        store: Some(format!("surrealkv://{}", site.path().join("db").display())),
        env: vec![("IDM_ADMIN_PASSWORD".into(), password.into())],
        ..Default::default()
    };
    let mut first = Idmd::spawn(
        options(ADMIN_PASSWORD),
        TempDir::new("idmd"),
        "t1".into(),
        key.clone(),
    )
    .await
    .unwrap();
    let session = login(&first, "openidm-admin", ADMIN_PASSWORD)
        .await
        .unwrap();
    assert_eq!(session.scope, i32::from(Scope::Admin));
    let mut root = as_session(&first, &session).await;
    create(&mut root, "alice", "Alice-Pass-1", Scope::Read).await;
    // Closed before the stop, which would otherwise wait for it.
    drop(root);
    tokio::time::sleep(Duration::from_millis(100)).await;
    first.terminate();
    let first_log = first.log();
    drop(first);

    let second = Idmd::spawn(
        options("Another-Pass-2"),
        TempDir::new("idmd"),
        "t2".into(),
        key,
    )
    .await
    .unwrap();
    expect_code(
        login(&second, "openidm-admin", ADMIN_PASSWORD).await,
        Code::Unauthenticated,
    );
    let mut old = as_session(&second, &session).await;
    expect_code(can_read(&mut old).await, Code::Unauthenticated);
    login(&second, "openidm-admin", "Another-Pass-2")
        .await
        .unwrap();
    login(&second, "alice", "Alice-Pass-1").await.unwrap();
    for log in [first_log, second.log()] {
        assert!(!log.contains(ADMIN_PASSWORD) && !log.contains("Another-Pass-2"));
    }
}
