//! Accounts for people and their logins: an account logs in for a session
//! with its role's scope; sessions end when idle, at their lifetime, on
//! logout and when the account is disabled, deleted or re-set; failed logins
//! are throttled per name and per source, answer alike for every failure,
//! and are audited; `openidm-admin` comes from IDM_ADMIN_PASSWORD only; and
//! no password ever shows in a reply, the audit trail or idmd's log.
//!
//! `logins.rs`: throttling and the trail of logins, the bootstrap admin;
//! `cli.rs`: idmctl login / whoami / logout / accounts; `roles.rs`: a new
//! role, and the last enabled admin account that cannot lose its role.

mod cli;
mod logins;
mod roles;

use std::time::Duration;

use idm_proto::v1::{
    Account, CallerKind, CreateAccountRequest, CreateObjectRequest, DeleteAccountRequest,
    GetAccountRequest, ListAccountsRequest, ListTokensRequest, LoginRequest, LoginResponse,
    LogoutRequest, QueryAuditRequest, QueryObjectsRequest, Scope, SetAccountEnabledRequest,
    SetAccountPasswordRequest, WhoAmIRequest,
};
use idm_tests::{Clients, Idmd, IdmdOptions, TempDir, attrs};
use tonic::Code;

use crate::{expect_code, violated_field};

const ADMIN_PASSWORD: &str = "Bootstrap-Pass-1";
const REFUSED: &str = "invalid username or password";
const LOCKED: &str = "too many failed logins; try again later";

async fn idmd_with(args: &[&str], env: &[(&str, &str)]) -> Idmd {
    Idmd::start_with(IdmdOptions {
        extra_args: args.iter().map(|a| a.to_string()).collect(),
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    })
    .await
}

async fn create(c: &mut Clients, name: &str, password: &str, role: Scope) -> Account {
    c.accounts
        .create_account(CreateAccountRequest {
            name: name.into(),
            password: password.into(),
            role: role.into(),
        })
        .await
        .unwrap_or_else(|e| panic!("create {name}: {e}"))
        .into_inner()
}

async fn login_from(
    idmd: &Idmd,
    name: &str,
    password: &str,
    source: &str,
) -> Result<LoginResponse, tonic::Status> {
    // No bearer at all: Login is the one call that needs none.
    let mut anonymous = idmd.clients_with(None).await;
    anonymous
        .auth
        .login(LoginRequest {
            username: name.into(),
            password: password.into(),
            client_address: source.into(),
        })
        .await
        .map(|r| r.into_inner())
}

async fn login(idmd: &Idmd, name: &str, password: &str) -> Result<LoginResponse, tonic::Status> {
    login_from(idmd, name, password, "").await
}

/// The clients of a session.
async fn as_session(idmd: &Idmd, session: &LoginResponse) -> Clients {
    idmd.clients_with(Some(session.session_token.clone())).await
}

async fn can_read(c: &mut Clients) -> Result<(), tonic::Status> {
    c.objects
        .query_objects(QueryObjectsRequest {
            parent: "managed/user".into(),
            ..Default::default()
        })
        .await
        .map(|_| ())
}

async fn audit_of(c: &mut Clients, filter: &str) -> Vec<idm_proto::v1::AuditEntry> {
    c.audit
        .query_audit(QueryAuditRequest {
            filter: filter.into(),
            order_by: "time asc".into(),
            page_size: 500,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .entries
}

/// No password used by the test in idmd's log or in the whole audit trail.
async fn assert_never_shown(idmd: &Idmd, passwords: &[&str]) {
    let mut admin = idmd.clients().await;
    let trail = format!("{:?}", audit_of(&mut admin, "").await);
    let log = idmd.log();
    for password in passwords {
        assert!(!log.contains(password), "{password} in the idmd log");
        assert!(!trail.contains(password), "{password} in the audit trail");
    }
}

fn base64_key() -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>())
}

#[tokio::test]
async fn an_account_logs_in_for_a_session_with_the_scope_of_its_role() {
    let idmd = Idmd::start().await;
    let mut admin = idmd.clients().await;
    let created = create(&mut admin, "alice", "Alice-Pass-1", Scope::Read).await;
    assert_eq!(
        (created.name.as_str(), created.id.as_str(), created.enabled),
        ("internal/user/alice", "alice", true)
    );
    assert_eq!(created.role, i32::from(Scope::Read));
    assert!(created.last_login_time.is_none());
    create(&mut admin, "bob", "Bob-Pass-12", Scope::Admin).await;

    let session = login(&idmd, "alice", "Alice-Pass-1").await.unwrap();
    assert!(
        session.session_token.starts_with("idm_"),
        "an API token's form"
    );
    assert_eq!(
        (session.username.as_str(), session.scope),
        ("alice", i32::from(Scope::Read))
    );
    assert_eq!(
        session.idle_timeout.unwrap().seconds,
        1800,
        "30 min by default"
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let lifetime = session.expire_time.unwrap().seconds - now;
    assert!(
        (8 * 3600 - 60..=8 * 3600).contains(&lifetime),
        "8 h: {lifetime}"
    );

    // A read session reads, and may not write.
    let mut alice = as_session(&idmd, &session).await;
    can_read(&mut alice).await.unwrap();
    let write = alice
        .objects
        .create_object(CreateObjectRequest {
            parent: "managed/user".into(),
            object_id: "x".into(),
            attributes: attrs(serde_json::json!({"userName": "x", "givenName": "X", "sn": "X"})),
        })
        .await;
    expect_code(write, Code::PermissionDenied);
    expect_code(
        alice.accounts.list_accounts(ListAccountsRequest {}).await,
        Code::PermissionDenied,
    );
    let me = alice
        .auth
        .who_am_i(WhoAmIRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(me.kind, i32::from(CallerKind::Session));
    assert_eq!(
        (me.username.as_str(), me.scope),
        ("alice", i32::from(Scope::Read))
    );
    assert_eq!(me.expire_time, session.expire_time);
    assert_eq!(me.idle_timeout.unwrap().seconds, 1800);
    let token = admin
        .auth
        .who_am_i(WhoAmIRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (token.kind, token.token_id.as_str(), token.username.as_str()),
        (i32::from(CallerKind::Token), "bootstrap", "")
    );

    // An admin session writes, and the trail names the account.
    let bob_session = login(&idmd, "bob", "Bob-Pass-12").await.unwrap();
    let mut bob = as_session(&idmd, &bob_session).await;
    crate::create_user(
        &mut bob,
        "snow",
        serde_json::json!({"userName": "snow", "givenName": "Jon", "sn": "Snow"}),
    )
    .await;
    let writes = audit_of(&mut admin, r#"operation eq "create""#).await;
    assert_eq!(writes.last().unwrap().actor, "bob");

    // Sessions are not API tokens.
    let tokens = admin
        .tokens
        .list_tokens(ListTokensRequest {
            include_revoked: true,
        })
        .await
        .unwrap()
        .into_inner()
        .tokens;
    assert!(tokens.iter().all(|t| t.id != me.token_id), "{tokens:?}");

    let listed = admin
        .accounts
        .list_accounts(ListAccountsRequest {})
        .await
        .unwrap()
        .into_inner()
        .accounts;
    let names: Vec<&str> = listed.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(names, ["alice", "bob"]);
    let alice_now = admin
        .accounts
        .get_account(GetAccountRequest {
            name: "internal/user/alice".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(alice_now.last_login_time.is_some());
    expect_code(
        admin
            .accounts
            .get_account(GetAccountRequest {
                name: "nobody".into(),
            })
            .await,
        Code::NotFound,
    );
    let replies = format!("{created:?}{listed:?}{alice_now:?}{session:?}{me:?}");
    for password in ["Alice-Pass-1", "Bob-Pass-12", "argon2"] {
        assert!(!replies.contains(password), "{password} in a reply");
    }
    assert_never_shown(&idmd, &["Alice-Pass-1", "Bob-Pass-12"]).await;
}

#[tokio::test]
async fn a_session_ends_when_idle_and_at_its_lifetime() {
    // Margins of a second or more: a loaded CI machine can hold a call back
    // for a good part of one. The lifetime outlasts the idle test's 7.5 s.
    let idmd = idmd_with(
        &["--session-idle-timeout", "3", "--session-lifetime", "9"],
        &[],
    )
    .await;
    let mut admin = idmd.clients().await;
    create(&mut admin, "alice", "Alice-Pass-1", Scope::Read).await;

    // Used every second it lives on past its idle timeout…
    let session = login(&idmd, "alice", "Alice-Pass-1").await.unwrap();
    assert_eq!(session.idle_timeout.unwrap().seconds, 3);
    let mut alice = as_session(&idmd, &session).await;
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        can_read(&mut alice).await.unwrap();
    }
    // …and ends after 3 s without a call.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let idle = expect_code(can_read(&mut alice).await, Code::Unauthenticated);
    assert!(idle.message().contains("idle too long"), "{idle:?}");

    // Even in use, a session ends at its lifetime.
    let start = std::time::Instant::now();
    let session = login(&idmd, "alice", "Alice-Pass-1").await.unwrap();
    let mut alice = as_session(&idmd, &session).await;
    while start.elapsed() < Duration::from_millis(7500) {
        can_read(&mut alice).await.unwrap();
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    tokio::time::sleep_until((start + Duration::from_millis(9500)).into()).await;
    let ended = expect_code(can_read(&mut alice).await, Code::Unauthenticated);
    assert!(ended.message().contains("expired"), "{ended:?}");
    assert!(!ended.message().contains("idle"), "{ended:?}");
}

#[tokio::test]
async fn logout_disable_delete_and_a_new_password_end_sessions() {
    let idmd = Idmd::start().await;
    let mut admin = idmd.clients().await;
    create(&mut admin, "alice", "Alice-Pass-1", Scope::Admin).await;
    // Another enabled admin, so that alice may be disabled and deleted.
    create(&mut admin, "bob", "Bob-Pass-12", Scope::Admin).await;

    // Logout revokes the calling session only.
    let first = login(&idmd, "alice", "Alice-Pass-1").await.unwrap();
    let second = login(&idmd, "alice", "Alice-Pass-1").await.unwrap();
    let mut one = as_session(&idmd, &first).await;
    let mut two = as_session(&idmd, &second).await;
    one.auth.logout(LogoutRequest {}).await.unwrap();
    expect_code(can_read(&mut one).await, Code::Unauthenticated);
    can_read(&mut two).await.unwrap();
    // An API token has no session to end.
    expect_code(
        admin.auth.logout(LogoutRequest {}).await,
        Code::FailedPrecondition,
    );

    // Disabled: its sessions end, and the right password answers like a wrong one.
    let disabled = admin
        .accounts
        .set_account_enabled(SetAccountEnabledRequest {
            name: "alice".into(),
            enabled: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!disabled.enabled);
    expect_code(can_read(&mut two).await, Code::Unauthenticated);
    let refused = expect_code(
        login(&idmd, "alice", "Alice-Pass-1").await,
        Code::Unauthenticated,
    );
    assert_eq!(refused.message(), REFUSED);
    admin
        .accounts
        .set_account_enabled(SetAccountEnabledRequest {
            name: "alice".into(),
            enabled: true,
        })
        .await
        .unwrap();

    // A new password: sessions end, the old password fails, the new one works.
    let third = login(&idmd, "alice", "Alice-Pass-1").await.unwrap();
    let mut three = as_session(&idmd, &third).await;
    admin
        .accounts
        .set_account_password(SetAccountPasswordRequest {
            name: "alice".into(),
            password: "Alice-Pass-2".into(),
        })
        .await
        .unwrap();
    expect_code(can_read(&mut three).await, Code::Unauthenticated);
    expect_code(
        login(&idmd, "alice", "Alice-Pass-1").await,
        Code::Unauthenticated,
    );
    let fourth = login(&idmd, "alice", "Alice-Pass-2").await.unwrap();
    let mut four = as_session(&idmd, &fourth).await;

    // The account itself, through its own session, shows in the trail by name.
    four.accounts
        .delete_account(DeleteAccountRequest {
            name: "alice".into(),
        })
        .await
        .unwrap();
    expect_code(can_read(&mut four).await, Code::Unauthenticated);
    expect_code(
        login(&idmd, "alice", "Alice-Pass-2").await,
        Code::Unauthenticated,
    );
    // Deleting what is gone succeeds; the rest of what is gone is NOT_FOUND.
    admin
        .accounts
        .delete_account(DeleteAccountRequest {
            name: "alice".into(),
        })
        .await
        .unwrap();
    expect_code(
        admin
            .accounts
            .set_account_password(SetAccountPasswordRequest {
                name: "alice".into(),
                password: "Alice-Pass-3".into(),
            })
            .await,
        Code::NotFound,
    );

    let trail: Vec<(String, String, String, String)> = audit_of(
        &mut admin,
        r#"(operation sw "account." and object eq "internal/user/alice") or operation eq "auth.logout""#,
    )
    .await
    .into_iter()
    .map(|e| (e.actor, e.operation, e.object, e.outcome))
    .collect();
    let entry = |actor: &str, action: &str, outcome: &str| {
        (
            actor.to_string(),
            action.to_string(),
            "internal/user/alice".to_string(),
            outcome.to_string(),
        )
    };
    assert_eq!(
        trail,
        [
            entry("bootstrap", "account.create", "success"),
            entry("alice", "auth.logout", "success"),
            (
                "bootstrap".to_string(),
                "auth.logout".to_string(),
                "tokens/bootstrap".to_string(),
                "FAILED_PRECONDITION".to_string()
            ),
            entry("bootstrap", "account.disable", "success"),
            entry("bootstrap", "account.enable", "success"),
            entry("bootstrap", "account.set-password", "success"),
            entry("alice", "account.delete", "success"),
            entry("bootstrap", "account.delete", "success"),
            entry("bootstrap", "account.set-password", "NOT_FOUND"),
        ]
    );
    assert_never_shown(&idmd, &["Alice-Pass-1", "Alice-Pass-2", "Alice-Pass-3"]).await;
}

#[tokio::test]
async fn weak_passwords_bad_names_and_non_admins_are_refused_with_the_reason() {
    let idmd = Idmd::start().await;
    let mut admin = idmd.clients().await;
    let create_with = |name: &str, password: &str, role: Scope| CreateAccountRequest {
        name: name.into(),
        password: password.into(),
        role: role.into(),
    };
    let weak = expect_code(
        admin
            .accounts
            .create_account(create_with("alice", "Sh0rt!", Scope::Read))
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_field(&weak), "password");
    assert!(weak.message().contains("at least 8 characters"), "{weak:?}");
    assert!(!format!("{weak:?}").contains("Sh0rt!"));
    let long = "x".repeat(1025);
    let too_long = expect_code(
        admin
            .accounts
            .create_account(create_with("alice", &long, Scope::Read))
            .await,
        Code::InvalidArgument,
    );
    assert!(
        too_long.message().contains("at most 1024 bytes"),
        "{too_long:?}"
    );
    for bad in ["a b", "", "x/y", &"n".repeat(65)] {
        let status = expect_code(
            admin
                .accounts
                .create_account(create_with(bad, "Long-Enough-1", Scope::Read))
                .await,
            Code::InvalidArgument,
        );
        assert_eq!(violated_field(&status), "name", "{bad}");
    }
    let role = expect_code(
        admin
            .accounts
            .create_account(create_with("alice", "Long-Enough-1", Scope::VerifyPassword))
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_field(&role), "role");
    create(&mut admin, "alice", "Long-Enough-1", Scope::Scim).await;
    expect_code(
        admin
            .accounts
            .create_account(create_with("alice", "Long-Enough-2", Scope::Read))
            .await,
        Code::AlreadyExists,
    );
    let weak_reset = expect_code(
        admin
            .accounts
            .set_account_password(SetAccountPasswordRequest {
                name: "alice".into(),
                password: "1234567".into(),
            })
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_field(&weak_reset), "password");

    // Only admins manage accounts; without a bearer only Login answers.
    let scim = crate::token(&idmd, Scope::Scim).await;
    let mut scim = idmd.clients_with(Some(scim)).await;
    expect_code(
        scim.accounts
            .create_account(create_with("eve", "Long-Enough-1", Scope::Admin))
            .await,
        Code::PermissionDenied,
    );
    let mut anonymous = idmd.clients_with(None).await;
    expect_code(
        anonymous
            .accounts
            .list_accounts(ListAccountsRequest {})
            .await,
        Code::Unauthenticated,
    );
    expect_code(
        anonymous.auth.who_am_i(WhoAmIRequest {}).await,
        Code::Unauthenticated,
    );
    expect_code(
        anonymous.auth.logout(LogoutRequest {}).await,
        Code::Unauthenticated,
    );
    login(&idmd, "alice", "Long-Enough-1").await.unwrap();
}

#[tokio::test]
async fn a_sessions_last_use_outlives_a_restart() {
    let site = TempDir::new("session-site");
    let key = base64_key();
    let options = IdmdOptions {
        store: Some(format!("surrealkv://{}", site.path().join("db").display())),
        extra_args: vec!["--session-idle-timeout".into(), "8".into()],
        ..Default::default()
    };
    let mut first = Idmd::spawn(
        options.clone(),
        TempDir::new("idmd"),
        "t1".into(),
        key.clone(),
    )
    .await
    .unwrap();
    create(
        &mut first.clients().await,
        "alice",
        "Alice-Pass-1",
        Scope::Read,
    )
    .await;
    let session = login(&first, "alice", "Alice-Pass-1").await.unwrap();
    let logged_in = std::time::Instant::now();
    let mut alice = as_session(&first, &session).await;
    // Used past its first idle deadline (login + 8 s); each use is written
    // within a quarter of the idle timeout (2 s).
    while logged_in.elapsed() < Duration::from_secs(9) {
        can_read(&mut alice).await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Open channels would hold the stop up for its grace period.
    // (a blocking terminate would keep this runtime from closing it).
    drop(alice);
    tokio::time::sleep(Duration::from_millis(100)).await;
    first.terminate();
    drop(first);
    let second = Idmd::spawn(options, TempDir::new("idmd"), "t2".into(), key)
        .await
        .unwrap();
    // The restarted node knows the session was used, not only that it began.
    assert!(
        logged_in.elapsed() < Duration::from_secs(14),
        "the restart took too long to tell"
    );
    let mut alice = as_session(&second, &session).await;
    can_read(&mut alice).await.unwrap();
}
