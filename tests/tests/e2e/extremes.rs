//! No input makes idmd panic: every RPC of every service, driven with extreme
//! values (huge and odd strings, empty names, i32/i64 extremes for sizes,
//! revisions and lifetimes, timestamps out of range, deeply nested and wide
//! Structs), answers with a status of its own, and idmd serves on.

use std::collections::{BTreeMap, BTreeSet};

use idm_proto::v1::key_service_client::KeyServiceClient;
use idm_proto::v1::system_service_client::SystemServiceClient;
use idm_proto::v1::*;
use idm_tests::{Authed, Bearer, Clients, Idmd};
use prost_types::value::Kind;
use prost_types::{Duration, FieldMask, Struct, Timestamp, Value};
use tonic::{Code, Status};

/// One set of extreme values; every request is built from one.
#[derive(Clone)]
struct Extreme {
    label: &'static str,
    text: String,
    int: i32,
    long: i64,
    flag: bool,
    object: Option<Struct>,
    duration: Option<Duration>,
    time: Option<Timestamp>,
}

fn nested(depth: usize) -> Struct {
    let mut inner = Struct::default();
    for _ in 0..depth {
        let mut outer = Struct::default();
        let list = Value {
            kind: Some(Kind::ListValue(prost_types::ListValue {
                values: vec![Value {
                    kind: Some(Kind::StructValue(inner)),
                }],
            })),
        };
        outer.fields.insert("a".into(), list);
        inner = outer;
    }
    inner
}

fn wide(keys: usize) -> Struct {
    let fields: BTreeMap<String, Value> = (0..keys)
        .map(|i| {
            (
                format!("k{i}"),
                Value {
                    kind: Some(Kind::NumberValue(f64::MAX)),
                },
            )
        })
        .collect();
    Struct { fields }
}

fn odd_struct() -> Struct {
    let mut fields = BTreeMap::new();
    for (key, kind) in [
        ("", Kind::NullValue(0)),
        ("$env", Kind::StringValue("PATH".into())),
        ("_id", Kind::NumberValue(f64::NAN)),
        ("_rev", Kind::NumberValue(f64::INFINITY)),
        ("userName", Kind::NumberValue(-0.0)),
        ("a.b[0]/c", Kind::BoolValue(true)),
        ("\u{0}", Kind::StringValue("\u{0}".into())),
    ] {
        fields.insert(key.to_string(), Value { kind: Some(kind) });
    }
    Struct { fields }
}

fn extremes() -> Vec<Extreme> {
    let huge = "a".repeat(64 * 1024);
    let odd = "managed/user/\u{0}/../../etc/passwd?%s%n${x}'\"\\);--\u{202e}💥/".to_string();
    vec![
        Extreme {
            label: "empty",
            text: String::new(),
            int: 0,
            long: 0,
            flag: false,
            object: None,
            duration: None,
            time: None,
        },
        Extreme {
            label: "negative",
            text: "-1".into(),
            int: -1,
            long: -1,
            flag: true,
            object: Some(Struct::default()),
            duration: Some(Duration {
                seconds: -1,
                nanos: -1,
            }),
            time: Some(Timestamp {
                seconds: -1,
                nanos: -1,
            }),
        },
        Extreme {
            label: "max",
            text: huge.clone(),
            int: i32::MAX,
            long: i64::MAX,
            flag: true,
            object: Some(nested(25)),
            duration: Some(Duration {
                seconds: i64::MAX,
                nanos: 999_999_999,
            }),
            time: Some(Timestamp {
                seconds: i64::MAX,
                nanos: i32::MAX,
            }),
        },
        Extreme {
            label: "min",
            text: odd.clone(),
            int: i32::MIN,
            long: i64::MIN,
            flag: false,
            object: Some(odd_struct()),
            duration: Some(Duration {
                seconds: i64::MIN,
                nanos: i32::MIN,
            }),
            time: Some(Timestamp {
                seconds: i64::MIN,
                nanos: i32::MIN,
            }),
        },
        Extreme {
            label: "deep",
            text: format!("{odd}{huge}"),
            int: 1,
            long: 4_000_000 * 86_400,
            flag: true,
            object: Some(nested(60)),
            duration: Some(Duration {
                seconds: 4_000_000 * 86_400,
                nanos: 0,
            }),
            time: Some(Timestamp {
                seconds: 253_402_300_800,
                nanos: 0,
            }),
        },
        Extreme {
            label: "wide",
            text: "(".repeat(10_000),
            int: 1001,
            long: i64::from(i32::MAX) + 1,
            flag: false,
            object: Some(wide(20_000)),
            duration: Some(Duration {
                seconds: 1,
                nanos: 1_000_000_000,
            }),
            time: Some(Timestamp {
                seconds: -62_135_596_801,
                nanos: 0,
            }),
        },
    ]
}

/// A call's outcome in one line: `OK` or the status code.
fn verdict<T>(result: Result<tonic::Response<T>, Status>) -> Result<(), Status> {
    result.map(|_| ())
}

/// The services `Clients` leaves out.
struct Others {
    keys: KeyServiceClient<Authed>,
    system: SystemServiceClient<Authed>,
}

impl Others {
    async fn of(idmd: &Idmd) -> Self {
        let channel = idmd.channel().await;
        let bearer = Bearer(Some(idmd.admin_token.clone()));
        Self {
            keys: KeyServiceClient::with_interceptor(channel.clone(), bearer.clone()),
            system: SystemServiceClient::with_interceptor(channel, bearer),
        }
    }
}

/// Every RPC with values from `x`, each with a label for the report.
async fn sweep(c: &mut Clients, o: &mut Others, x: &Extreme) -> Vec<(String, Result<(), Status>)> {
    let t = &x.text;
    let mask = Some(FieldMask {
        paths: vec![t.clone(), String::new()],
    });
    let value = x.object.clone().map(|s| Value {
        kind: Some(Kind::StructValue(s)),
    });
    let schedule = Schedule {
        name: format!("schedules/{t}"),
        id: t.clone(),
        enabled: x.flag,
        r#type: t.clone(),
        schedule: t.clone(),
        time_zone: t.clone(),
        start_time: x.time,
        end_time: x.time,
        concurrent_execution: x.flag,
        misfire_policy: t.clone(),
        invoke_service: t.clone(),
        invoke_context: x.object.clone(),
        paused: x.flag,
        next_fire_time: x.time,
        last_fire_time: x.time,
    };
    let valid_schedule = Schedule {
        r#type: "cron".into(),
        schedule: "0 0 * * * ?".into(),
        invoke_service: "sync".into(),
        ..schedule.clone()
    };
    let mut out: Vec<(String, Result<(), Status>)> = Vec::new();
    macro_rules! call {
        ($name:expr, $call:expr) => {
            out.push(($name.to_string(), verdict($call.await)));
        };
    }
    for name in [
        t.clone(),
        format!("managed/user/{t}"),
        format!("managed/{t}/x"),
    ] {
        call!(
            "CreateObject",
            c.objects.create_object(CreateObjectRequest {
                parent: name.clone(),
                object_id: t.clone(),
                attributes: x.object.clone(),
            })
        );
        call!(
            "CreateObject(user)",
            c.objects.create_object(CreateObjectRequest {
                parent: "managed/user".into(),
                object_id: t.clone(),
                attributes: x.object.clone(),
            })
        );
        call!(
            "GetObject",
            c.objects.get_object(GetObjectRequest {
                name: name.clone(),
                read_mask: mask.clone(),
            })
        );
        call!(
            "ReplaceObject",
            c.objects.replace_object(ReplaceObjectRequest {
                name: name.clone(),
                attributes: x.object.clone(),
                expected_revision: Some(x.long),
            })
        );
        call!(
            "PatchObject",
            c.objects.patch_object(PatchObjectRequest {
                name: name.clone(),
                operations: vec![
                    PatchOperation {
                        operation: t.clone(),
                        field: t.clone(),
                        value: value.clone(),
                        ..Default::default()
                    };
                    3
                ],
                expected_revision: Some(x.long),
            })
        );
        for operation in ["add", "replace", "remove", "increment", "transform"] {
            call!(
                "PatchObject(op)",
                c.objects.patch_object(PatchObjectRequest {
                    name: name.clone(),
                    operations: vec![PatchOperation {
                        operation: operation.into(),
                        field: format!("/{t}"),
                        value: value.clone(),
                        ..Default::default()
                    }],
                    expected_revision: None,
                })
            );
        }
        call!(
            "DeleteObject",
            c.objects.delete_object(DeleteObjectRequest {
                name: name.clone(),
                expected_revision: Some(x.long),
            })
        );
        call!(
            "QueryObjects",
            c.objects.query_objects(QueryObjectsRequest {
                parent: name.clone(),
                filter: t.clone(),
                order_by: t.clone(),
                page_size: x.int,
                page_token: t.clone(),
                offset: x.int,
                read_mask: mask.clone(),
                estimate_total: true,
            })
        );
        call!(
            "QueryObjects(user)",
            c.objects.query_objects(QueryObjectsRequest {
                parent: "managed/user".into(),
                filter: String::new(),
                order_by: String::new(),
                page_size: x.int,
                page_token: t.clone(),
                offset: x.int,
                read_mask: None,
                estimate_total: true,
            })
        );
        call!(
            "CountObjects",
            c.objects.count_objects(CountObjectsRequest {
                parent: name.clone(),
                filter: t.clone(),
            })
        );
        call!(
            "VerifyPassword",
            c.objects.verify_password(VerifyPasswordRequest {
                name: name.clone(),
                property: t.clone(),
                password: t.clone(),
            })
        );
    }
    call!(
        "ListObjectTypes",
        c.objects.list_object_types(ListObjectTypesRequest {})
    );

    call!(
        "QueryAudit",
        c.audit.query_audit(QueryAuditRequest {
            filter: t.clone(),
            order_by: t.clone(),
            page_size: x.int,
            page_token: t.clone(),
        })
    );
    call!(
        "QueryAudit(paged)",
        c.audit.query_audit(QueryAuditRequest {
            filter: String::new(),
            order_by: String::new(),
            page_size: x.int,
            page_token: t.clone(),
        })
    );

    for scope in [x.int, 0, 1, 4, 5] {
        call!(
            "CreateToken",
            c.tokens.create_token(CreateTokenRequest {
                scope,
                description: t.clone(),
                ttl: x.duration,
            })
        );
    }
    call!(
        "ListTokens",
        c.tokens.list_tokens(ListTokensRequest {
            include_revoked: x.flag
        })
    );
    call!(
        "RevokeToken",
        c.tokens
            .revoke_token(RevokeTokenRequest { name: t.clone() })
    );
    call!(
        "RevokeToken(prefixed)",
        c.tokens.revoke_token(RevokeTokenRequest {
            name: format!("tokens/{t}"),
        })
    );
    call!("GetCaller", c.tokens.get_caller(GetCallerRequest {}));

    call!(
        "ListConnectors",
        c.config.list_connectors(ListConnectorsRequest {})
    );
    for name in [t.clone(), format!("connectors/{t}")] {
        call!(
            "GetConnector",
            c.config.get_connector(GetConnectorRequest {
                name: name.clone(),
                ..Default::default()
            })
        );
        call!(
            "GetConnector(provisioner)",
            c.config.get_connector(GetConnectorRequest {
                name: name.clone(),
                view: ConnectorView::Provisioner.into(),
            })
        );
        // With a connectorRef: the core translates it as Wren's shape.
        let mut icf = x.object.clone().unwrap_or_default();
        icf.fields.insert(
            "connectorRef".into(),
            Value {
                kind: Some(Kind::StringValue(t.clone())),
            },
        );
        call!(
            "PutConnector(provisioner)",
            c.config.put_connector(PutConnectorRequest {
                connector: Some(Connector {
                    name: name.clone(),
                    connector_type: t.clone(),
                    configuration: Some(icf),
                }),
            })
        );
        call!(
            "PutConnector",
            c.config.put_connector(PutConnectorRequest {
                connector: Some(Connector {
                    name: name.clone(),
                    connector_type: t.clone(),
                    configuration: x.object.clone(),
                }),
            })
        );
        call!(
            "TestConnector",
            c.config
                .test_connector(TestConnectorRequest { name: name.clone() })
        );
        call!(
            "DeleteConnector",
            c.config
                .delete_connector(DeleteConnectorRequest { name: name.clone() })
        );
    }
    for connector_type in ["ldap", "csv"] {
        call!(
            "PutConnector(typed)",
            c.config.put_connector(PutConnectorRequest {
                connector: Some(Connector {
                    name: "extreme".into(),
                    connector_type: connector_type.into(),
                    configuration: x.object.clone(),
                }),
            })
        );
        call!(
            "TestConnector(typed)",
            c.config.test_connector(TestConnectorRequest {
                name: "extreme".into(),
            })
        );
        call!(
            "DeleteConnector(typed)",
            c.config.delete_connector(DeleteConnectorRequest {
                name: "extreme".into(),
            })
        );
    }
    call!(
        "ListMappings",
        c.config.list_mappings(ListMappingsRequest {})
    );
    for name in [t.clone(), format!("mappings/{t}")] {
        call!(
            "GetMapping",
            c.config
                .get_mapping(GetMappingRequest { name: name.clone() })
        );
        call!(
            "PutMapping",
            c.config.put_mapping(PutMappingRequest {
                mapping: Some(Mapping {
                    name: name.clone(),
                    source: t.clone(),
                    target: t.clone(),
                    enable_sync: x.flag,
                    definition: x.object.clone(),
                }),
            })
        );
        call!(
            "DeleteMapping",
            c.config
                .delete_mapping(DeleteMappingRequest { name: name.clone() })
        );

        call!(
            "StartRecon",
            c.recon.start_recon(StartReconRequest {
                mapping: name.clone(),
                wait: x.flag,
            })
        );
        call!(
            "ReconById",
            c.recon.recon_by_id(ReconByIdRequest {
                mapping: name.clone(),
                source_ids: vec![t.clone(); 3],
                wait: x.flag,
            })
        );
        call!(
            "PlanRecon",
            c.recon.plan_recon(PlanReconRequest {
                mapping: name.clone(),
                source_ids: vec![t.clone()],
                page_size: x.int,
            })
        );
        call!(
            "RetrySyncEntries",
            c.sync.retry_sync_entries(RetrySyncEntriesRequest {
                mapping: name.clone(),
                names: vec![t.clone(), format!("sync/{t}")],
            })
        );
        call!(
            "DiscardSyncEntries",
            c.sync.discard_sync_entries(DiscardSyncEntriesRequest {
                mapping: name.clone(),
                names: vec![t.clone(), format!("sync/{t}")],
            })
        );
    }
    for name in [t.clone(), format!("recon/{t}")] {
        call!(
            "GetRecon",
            c.recon.get_recon(GetReconRequest { name: name.clone() })
        );
        call!(
            "CancelRecon",
            c.recon
                .cancel_recon(CancelReconRequest { name: name.clone() })
        );
        call!(
            "WatchRecon",
            c.recon
                .watch_recon(WatchReconRequest { name: name.clone() })
        );
    }
    call!(
        "ListRecons",
        c.recon.list_recons(ListReconsRequest {
            filter: t.clone(),
            page_size: x.int,
            page_token: t.clone(),
        })
    );
    call!(
        "ListRecons(paged)",
        c.recon.list_recons(ListReconsRequest {
            filter: String::new(),
            page_size: x.int,
            page_token: t.clone(),
        })
    );

    for (label, schedule) in [("", &schedule), ("(valid)", &valid_schedule)] {
        call!(
            format!("CreateSchedule{label}"),
            c.schedules.create_schedule(CreateScheduleRequest {
                schedule_id: t.clone(),
                schedule: Some(schedule.clone()),
            })
        );
        call!(
            format!("UpdateSchedule{label}"),
            c.schedules.update_schedule(UpdateScheduleRequest {
                schedule: Some(schedule.clone()),
            })
        );
    }
    for name in [t.clone(), format!("schedules/{t}")] {
        call!(
            "GetSchedule",
            c.schedules
                .get_schedule(GetScheduleRequest { name: name.clone() })
        );
        call!(
            "PauseSchedule",
            c.schedules
                .pause_schedule(PauseScheduleRequest { name: name.clone() })
        );
        call!(
            "ResumeSchedule",
            c.schedules
                .resume_schedule(ResumeScheduleRequest { name: name.clone() })
        );
        call!(
            "RunSchedule",
            c.schedules
                .run_schedule(RunScheduleRequest { name: name.clone() })
        );
        call!(
            "ListExecutions",
            c.schedules.list_executions(ListExecutionsRequest {
                schedule: name.clone(),
                page_size: x.int,
                page_token: t.clone(),
                running: x.flag,
            })
        );
        call!(
            "DeleteSchedule",
            c.schedules
                .delete_schedule(DeleteScheduleRequest { name: name.clone() })
        );
    }
    call!(
        "ListSchedules",
        c.schedules.list_schedules(ListSchedulesRequest {})
    );
    call!(
        "ValidateCronExpression",
        c.schedules
            .validate_cron_expression(ValidateCronExpressionRequest {
                cron_expression: t.clone(),
            })
    );

    call!(
        "GetSyncQueue",
        c.sync.get_sync_queue(GetSyncQueueRequest {})
    );
    call!(
        "ListSyncEntries",
        c.sync.list_sync_entries(ListSyncEntriesRequest {
            filter: t.clone(),
            page_size: x.int,
            page_token: t.clone(),
        })
    );
    call!(
        "ListSyncEntries(paged)",
        c.sync.list_sync_entries(ListSyncEntriesRequest {
            filter: String::new(),
            page_size: x.int,
            page_token: t.clone(),
        })
    );

    let role = Scope::try_from(x.int).unwrap_or(Scope::Read);
    for name in [t.clone(), format!("internal/user/{t}")] {
        call!(
            "CreateAccount",
            c.accounts.create_account(CreateAccountRequest {
                name: name.clone(),
                password: t.clone(),
                role: x.int,
            })
        );
        call!(
            "GetAccount",
            c.accounts
                .get_account(GetAccountRequest { name: name.clone() })
        );
        call!(
            "SetAccountPassword",
            c.accounts.set_account_password(SetAccountPasswordRequest {
                name: name.clone(),
                password: t.clone(),
            })
        );
        call!(
            "SetAccountEnabled",
            c.accounts.set_account_enabled(SetAccountEnabledRequest {
                name: name.clone(),
                enabled: x.flag,
            })
        );
        call!(
            "SetAccountRole",
            c.accounts.set_account_role(SetAccountRoleRequest {
                name: name.clone(),
                role: role.into(),
            })
        );
        call!(
            "Login",
            c.auth.login(LoginRequest {
                username: name.clone(),
                password: t.clone(),
                client_address: t.clone(),
            })
        );
        call!(
            "DeleteAccount",
            c.accounts
                .delete_account(DeleteAccountRequest { name: name.clone() })
        );
    }
    call!(
        "ListAccounts",
        c.accounts.list_accounts(ListAccountsRequest {})
    );
    call!("WhoAmI", c.auth.who_am_i(WhoAmIRequest {}));
    call!("Logout", c.auth.logout(LogoutRequest {}));

    for name in [
        t.clone(),
        format!("managed/user/{t}"),
        "managed/user".to_string(),
    ] {
        call!(
            "ValidateObject",
            c.objects.validate_object(ValidateObjectRequest {
                name: name.clone(),
                attributes: x.object.clone(),
                properties_only: x.flag,
            })
        );
        call!(
            "ListLinks",
            c.recon.list_links(ListLinksRequest {
                object: name.clone(),
                resolve_names: x.flag,
            })
        );
    }
    for connector in [t.clone(), "csv".to_string()] {
        call!(
            "GetSystemObject",
            o.system.get_system_object(GetSystemObjectRequest {
                connector: connector.clone(),
                object_type: t.clone(),
                id: t.clone(),
            })
        );
        call!(
            "QuerySystemObjects",
            o.system.query_system_objects(QuerySystemObjectsRequest {
                connector: connector.clone(),
                object_type: t.clone(),
                filter: t.clone(),
                page_size: x.int,
                page_token: t.clone(),
            })
        );
    }
    call!("GetKey", o.keys.get_key(GetKeyRequest {}));
    call!("RotateKey", o.keys.rotate_key(RotateKeyRequest {}));
    call!("Backup", o.system.backup(BackupRequest {}));
    out
}

/// Every `rpc` the proto files declare.
fn declared_rpcs() -> BTreeSet<String> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../proto/proto/idm/v1");
    let mut rpcs = BTreeSet::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for line in text.lines() {
            if let Some(rest) = line.trim().strip_prefix("rpc ") {
                rpcs.insert(rest.split('(').next().unwrap().trim().to_string());
            }
        }
    }
    rpcs
}

#[tokio::test]
async fn every_rpc_answers_extreme_values_with_a_status_and_idmd_serves_on() {
    let idmd = Idmd::start().await;
    let mut failures = Vec::new();
    let mut swept = BTreeSet::new();
    for x in extremes() {
        let mut c = idmd.clients().await;
        let mut o = Others::of(&idmd).await;
        for (rpc, result) in sweep(&mut c, &mut o, &x).await {
            swept.insert(rpc.split('(').next().unwrap_or_default().to_string());
            let Err(status) = result else { continue };
            // A panicking handler resets the stream (CANCELLED, or UNKNOWN
            // with h2's error); INTERNAL means an input reached a layer that
            // should never have seen it.
            let broken = match status.code() {
                Code::Cancelled | Code::Unknown | Code::Unavailable => true,
                // tonic's own answer to a message past prost's nesting limit.
                Code::Internal => !status.message().starts_with("failed to decode"),
                _ => false,
            };
            if broken {
                failures.push(format!(
                    "{rpc} [{}]: {:?} {}",
                    x.label,
                    status.code(),
                    status.message().chars().take(200).collect::<String>()
                ));
            }
        }
        assert_eq!(
            idmd.health().await,
            Ok(1),
            "idmd stopped serving after the {} values:\n{}",
            x.label,
            idmd.log()
        );
    }
    let unswept: Vec<String> = declared_rpcs().difference(&swept).cloned().collect();
    assert!(
        unswept.is_empty(),
        "RPCs the sweep never calls: {unswept:?}"
    );
    let log = idmd.log();
    let panics: Vec<&str> = log.lines().filter(|l| l.contains("panicked")).collect();
    assert!(
        failures.is_empty() && panics.is_empty(),
        "{}\n{}",
        failures.join("\n"),
        panics.join("\n")
    );
    // Still serving real work afterwards.
    let mut c = idmd.clients().await;
    crate::create_user(
        &mut c,
        "after",
        serde_json::json!({"userName": "after", "password": "Passw0rd!"}),
    )
    .await;
    assert!(crate::password_valid(&mut c, "after", "Passw0rd!").await);
}
