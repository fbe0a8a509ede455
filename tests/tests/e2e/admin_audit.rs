//! Admin actions land in the audit trail next to object writes: who, what,
//! on what, how it ended (refusals included), queryable through QueryAudit,
//! and never with a secret.

use idm_proto::v1::{
    CancelReconRequest, Connector, CreateScheduleRequest, CreateTokenRequest,
    DeleteConnectorRequest, DeleteMappingRequest, DeleteScheduleRequest, DiscardSyncEntriesRequest,
    GetCallerRequest, Mapping, PauseScheduleRequest, PutConnectorRequest, PutMappingRequest,
    QueryAuditRequest, RetrySyncEntriesRequest, RevokeTokenRequest, Schedule, Scope,
    StartReconRequest,
};
use idm_tests::{Idmd, attrs};
use serde_json::json;
use tonic::Code;

use crate::expect_code;

const SECRET: &str = "s3cr3t-bind-password";

#[tokio::test]
async fn admin_actions_are_audited_with_actor_action_target_and_outcome() {
    let idmd = Idmd::start().await;
    let mut admin = idmd.clients().await;

    // Tokens: created, refused (a read token; a lifetime past any date), revoked.
    let created = admin
        .tokens
        .create_token(CreateTokenRequest {
            scope: Scope::Read.into(),
            description: "reporting".into(),
            ttl: None,
        })
        .await
        .unwrap()
        .into_inner();
    let reader_id = created.token.clone().unwrap().id;
    let mut reader = idmd.clients_with(Some(created.secret.clone())).await;
    expect_code(
        reader
            .tokens
            .create_token(CreateTokenRequest {
                scope: Scope::Admin.into(),
                description: String::new(),
                ttl: None,
            })
            .await,
        Code::PermissionDenied,
    );
    expect_code(
        admin
            .tokens
            .create_token(CreateTokenRequest {
                scope: Scope::Read.into(),
                description: String::new(),
                ttl: Some(prost_types::Duration {
                    seconds: i64::MAX,
                    nanos: 0,
                }),
            })
            .await,
        Code::InvalidArgument,
    );

    // Conf: a connector with a password, then gone; a mapping refused and deleted.
    admin
        .config
        .put_connector(PutConnectorRequest {
            connector: Some(Connector {
                name: "connectors/hr".into(),
                connector_type: "ldap".into(),
                configuration: attrs(json!({
                    "url": "ldap://127.0.0.1:9", "baseDn": "dc=example,dc=org",
                    "bindDn": "cn=admin,dc=example,dc=org", "bindPassword": SECRET,
                    "objectTypes": {"account": {"namingAttribute": "uid",
                                                "objectClasses": ["inetOrgPerson"]}}
                })),
            }),
        })
        .await
        .unwrap();
    admin
        .config
        .delete_connector(DeleteConnectorRequest { name: "hr".into() })
        .await
        .unwrap();
    expect_code(
        admin
            .config
            .put_mapping(PutMappingRequest {
                mapping: Some(Mapping {
                    name: "mappings/broken".into(),
                    definition: attrs(json!({"source": "nowhere"})),
                    ..Default::default()
                }),
            })
            .await,
        Code::InvalidArgument,
    );
    admin
        .config
        .delete_mapping(DeleteMappingRequest {
            name: "mappings/broken".into(),
        })
        .await
        .unwrap();

    // Schedules, reconciliations, the sync queue.
    admin
        .schedules
        .create_schedule(CreateScheduleRequest {
            schedule_id: "nightly".into(),
            schedule: Some(Schedule {
                enabled: true,
                r#type: "cron".into(),
                schedule: "0 0 3 * * ?".into(),
                invoke_service: "script".into(),
                invoke_context: attrs(
                    json!({"script": {"type": "text/javascript", "source": "'ok'"}}),
                ),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    admin
        .schedules
        .pause_schedule(PauseScheduleRequest {
            name: "schedules/nightly".into(),
        })
        .await
        .unwrap();
    expect_code(
        reader
            .schedules
            .delete_schedule(DeleteScheduleRequest {
                name: "nightly".into(),
            })
            .await,
        Code::PermissionDenied,
    );
    admin
        .schedules
        .delete_schedule(DeleteScheduleRequest {
            name: "nightly".into(),
        })
        .await
        .unwrap();
    expect_code(
        admin
            .recon
            .start_recon(StartReconRequest {
                mapping: "nosuchmapping".into(),
                wait: false,
            })
            .await,
        Code::NotFound,
    );
    let _ = admin
        .recon
        .cancel_recon(CancelReconRequest {
            name: "recon/0190f0f0-0000-7000-8000-000000000000".into(),
        })
        .await;
    admin
        .sync
        .retry_sync_entries(RetrySyncEntriesRequest {
            mapping: "managedUser_systemLdapAccounts".into(),
            names: Vec::new(),
        })
        .await
        .unwrap();
    admin
        .sync
        .discard_sync_entries(DiscardSyncEntriesRequest {
            mapping: "managedUser_systemLdapAccounts".into(),
            names: Vec::new(),
        })
        .await
        .unwrap();
    admin
        .tokens
        .revoke_token(RevokeTokenRequest {
            name: format!("tokens/{reader_id}"),
        })
        .await
        .unwrap();
    // Reads are not admin actions; unauthenticated calls have no known caller.
    admin.tokens.get_caller(GetCallerRequest {}).await.unwrap();
    let mut anonymous = idmd.clients_with(Some("bogus".into())).await;
    let _ = anonymous
        .tokens
        .revoke_token(RevokeTokenRequest {
            name: "tokens/abc".into(),
        })
        .await;

    let trail = admin
        .audit
        .query_audit(QueryAuditRequest {
            // Admin actions are `<thing>.<verb>`; object writes one word.
            filter: r#"operation co ".""#.into(),
            order_by: "time asc".into(),
            page_size: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let seen: Vec<(String, String, String, String)> = trail
        .entries
        .iter()
        .map(|e| {
            (
                e.actor.clone(),
                e.operation.clone(),
                e.object.clone(),
                e.outcome.clone(),
            )
        })
        .collect();
    let entry = |actor: &str, action: &str, target: &str, outcome: &str| {
        (
            actor.to_string(),
            action.to_string(),
            target.to_string(),
            outcome.to_string(),
        )
    };
    let reader_token = format!("tokens/{reader_id}");
    assert_eq!(
        seen,
        [
            entry("bootstrap", "token.create", &reader_token, "success"),
            entry(&reader_id, "token.create", "tokens/", "PERMISSION_DENIED"),
            entry("bootstrap", "token.create", "tokens/", "INVALID_ARGUMENT"),
            entry("bootstrap", "connector.put", "connectors/hr", "success"),
            entry("bootstrap", "connector.delete", "connectors/hr", "success"),
            entry(
                "bootstrap",
                "mapping.put",
                "mappings/broken",
                "INVALID_ARGUMENT"
            ),
            entry("bootstrap", "mapping.delete", "mappings/broken", "success"),
            entry(
                "bootstrap",
                "schedule.create",
                "schedules/nightly",
                "success"
            ),
            entry(
                "bootstrap",
                "schedule.pause",
                "schedules/nightly",
                "success"
            ),
            entry(
                &reader_id,
                "schedule.delete",
                "schedules/nightly",
                "PERMISSION_DENIED"
            ),
            entry(
                "bootstrap",
                "schedule.delete",
                "schedules/nightly",
                "success"
            ),
            entry(
                "bootstrap",
                "recon.start",
                "mappings/nosuchmapping",
                "NOT_FOUND"
            ),
            entry(
                "bootstrap",
                "recon.cancel",
                "recon/0190f0f0-0000-7000-8000-000000000000",
                "NOT_FOUND"
            ),
            entry(
                "bootstrap",
                "sync.retry",
                "mappings/managedUser_systemLdapAccounts",
                "success"
            ),
            entry(
                "bootstrap",
                "sync.discard",
                "mappings/managedUser_systemLdapAccounts",
                "success"
            ),
            entry("bootstrap", "token.revoke", &reader_token, "success"),
        ]
    );
    assert_eq!(trail.entries[0].detail, "scope read");
    assert!(trail.entries.iter().all(|e| e.time.is_some()));
    assert!(
        !format!("{trail:?}").contains(SECRET),
        "a connector put records names, not values"
    );

    // Queryable like object entries.
    let refusals = admin
        .audit
        .query_audit(QueryAuditRequest {
            filter: format!(r#"actor eq "{reader_id}" and outcome eq "PERMISSION_DENIED""#),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(refusals.total_size, 2);
    let cli = idmd.idmctl(&[
        "--output",
        "json",
        "audit",
        "query",
        "--filter",
        r#"operation sw "token.""#,
    ]);
    assert!(cli.status.success(), "{cli:?}");
    let listed: serde_json::Value = serde_json::from_slice(&cli.stdout).unwrap();
    assert_eq!(
        listed["result"].as_array().map(Vec::len),
        Some(4),
        "{listed}"
    );
}

#[tokio::test]
async fn object_entries_still_read_and_say_success() {
    let idmd = Idmd::start().await;
    let mut admin = idmd.clients().await;
    crate::create_user(&mut admin, "doe", json!({"userName": "doe"})).await;
    let trail = admin
        .audit
        .query_audit(QueryAuditRequest {
            filter: r#"object eq "managed/user/doe" and outcome eq "success""#.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(trail.entries.len(), 1);
    assert_eq!(trail.entries[0].operation, "create");
}
