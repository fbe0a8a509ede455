//! Tokens and sessions on two nodes of one SurrealDB server: what one node
//! makes works on the other at once; what one node ends (a revocation, a
//! logout, a disabled account), the other refuses within a second.

use std::time::{Duration, Instant};

use idm_proto::v1::{
    CreateAccountRequest, CreateTokenRequest, GetCallerRequest, LoginRequest, LogoutRequest,
    RevokeTokenRequest, Scope, SetAccountEnabledRequest,
};
use idm_tests::Idmd;
use idm_tests::cluster::{Cluster, ClusterOptions};
use tonic::Code;

/// The longest a node may honour what another node ended.
const BOUND: Duration = Duration::from_secs(1);
/// How long to keep asking before giving up (well past the bound, so that a
/// miss reports how late it was).
const GIVE_UP: Duration = Duration::from_secs(10);

/// Calls node with `secret` until it is refused UNAUTHENTICATED; asserts
/// that came at most [`BOUND`] after `since`: when the ending call returned,
/// its change committed in the store (a debug build on a loaded machine can
/// take longer than the bound just to make that call).
async fn refused_within_bound(cluster: &Cluster, node: &Idmd, secret: &str, since: Instant) {
    let mut c = node.clients_with(Some(secret.to_string())).await;
    loop {
        match c.tokens.get_caller(GetCallerRequest {}).await {
            Err(refused) if refused.code() == Code::Unauthenticated => break,
            Ok(_) => {}
            Err(other) => panic!("{other:?}\n{}", cluster.logs()),
        }
        assert!(
            since.elapsed() < GIVE_UP,
            "still accepted after {GIVE_UP:?}\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = since.elapsed();
    assert!(took <= BOUND, "refused only {took:?} after it ended");
}

async fn works(node: &Idmd, secret: &str) -> Result<String, tonic::Status> {
    let mut c = node.clients_with(Some(secret.to_string())).await;
    c.tokens
        .get_caller(GetCallerRequest {})
        .await
        .map(|r| r.into_inner().id)
}

#[tokio::test]
async fn a_token_made_on_one_node_works_on_the_other_at_once_and_its_revocation_within_a_second() {
    let cluster = Cluster::start(2, ClusterOptions::default()).await;
    let (a, b) = (cluster.node(0), cluster.node(1));
    let mut admin_a = a.clients().await;
    for round in 0..3 {
        let made = admin_a
            .tokens
            .create_token(CreateTokenRequest {
                scope: Scope::Read.into(),
                description: format!("round {round}"),
                ttl: None,
            })
            .await
            .unwrap()
            .into_inner();
        // At once: no wait between the create on A and the call on B.
        let caller = works(b, &made.secret)
            .await
            .unwrap_or_else(|e| panic!("B refused A's new token: {e:?}\n{}", cluster.logs()));
        assert_eq!(caller, made.token.as_ref().unwrap().id);
        admin_a
            .tokens
            .revoke_token(RevokeTokenRequest {
                name: format!("tokens/{caller}"),
            })
            .await
            .unwrap();

        let since = Instant::now();
        refused_within_bound(&cluster, b, &made.secret, since).await;
    }
    // A bogus bearer is refused by both.
    for node in [a, b] {
        let refused = works(node, "idm_0011223344556677_forged")
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::Unauthenticated);
    }
}

/// A session of alice's, made on `node`.
async fn login(node: &Idmd) -> String {
    node.clients_with(None)
        .await
        .auth
        .login(LoginRequest {
            username: "alice".into(),
            password: "Alice-Pass-1".into(),
            client_address: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .session_token
}

#[tokio::test]
async fn a_session_made_on_one_node_works_on_the_other_and_ends_there_within_a_second() {
    let cluster = Cluster::start(2, ClusterOptions::default()).await;
    let (a, b) = (cluster.node(0), cluster.node(1));
    let mut admin_a = a.clients().await;
    admin_a
        .accounts
        .create_account(CreateAccountRequest {
            name: "alice".into(),
            password: "Alice-Pass-1".into(),
            role: Scope::Read.into(),
        })
        .await
        .unwrap();
    // Made on A, used on B at once; a logout on A ends it on B.
    let session = login(a).await;
    works(b, &session).await.unwrap();
    a.clients_with(Some(session.clone()))
        .await
        .auth
        .logout(LogoutRequest {})
        .await
        .unwrap();
    let since = Instant::now();
    refused_within_bound(&cluster, b, &session, since).await;

    // Made on B; the account disabled on A ends it on B.
    let session = login(b).await;
    works(b, &session).await.unwrap();
    admin_a
        .accounts
        .set_account_enabled(SetAccountEnabledRequest {
            name: "alice".into(),
            enabled: false,
        })
        .await
        .unwrap();
    let since = Instant::now();
    refused_within_bound(&cluster, b, &session, since).await;
}
