use idm_proto::v1::{
    Connector, CreateObjectRequest, GetConnectorRequest, GetMappingRequest, GetObjectRequest,
    ListMappingsRequest, PutConnectorRequest,
};
use idm_tests::{Idmd, IdmdOptions, TempDir, attrs, json_of};
use serde_json::json;
use tonic::Code;

use crate::{create_user, expect_code};

fn write(dir: &TempDir, file: &str, body: &str) {
    std::fs::write(dir.path().join(file), body).unwrap();
}

async fn start_failure(conf: &TempDir) -> String {
    Idmd::start_failure(IdmdOptions {
        conf: Some(conf.path().to_path_buf()),
        ..Default::default()
    })
    .await
}

#[tokio::test]
async fn a_bad_conf_file_stops_start_up_naming_the_file_and_field() {
    let conf = TempDir::new("badconf");
    write(
        &conf,
        "managed.json",
        r#"{"objects": [{"name": "user", "schema": {"properties": {"userName": {"type": "strng"}}}}]}"#,
    );
    let log = start_failure(&conf).await;
    assert!(
        log.contains("managed.json") && log.contains("objects[0].schema.properties.userName.type"),
        "{log}"
    );

    let conf = TempDir::new("badsync");
    write(
        &conf,
        "sync.json",
        r#"{"mappings": [{"name": "csvEmployee_managedUser", "target": "managed/user"}]}"#,
    );
    let log = start_failure(&conf).await;
    assert!(
        log.contains("sync.json") && log.contains("mappings[0].source"),
        "{log}"
    );

    let conf = TempDir::new("badjson");
    write(&conf, "schedule-recon.json", "{\"enabled\": true,");
    let log = start_failure(&conf).await;
    assert!(
        log.contains("schedule-recon.json") && log.contains("line"),
        "{log}"
    );

    // A Quartz expression with an hour 25 names the file, the field and the value.
    let conf = TempDir::new("badcron");
    write(
        &conf,
        "schedule-recon.json",
        r#"{"type": "cron", "schedule": "0 0 25 * * ?", "invokeService": "sync",
            "invokeContext": {"action": "reconcile", "mapping": "csvEmployee_managedUser"}}"#,
    );
    let log = start_failure(&conf).await;
    assert!(
        log.contains("schedule-recon.json") && log.contains("schedule.hours") && log.contains("25"),
        "{log}"
    );
}

#[tokio::test]
async fn conf_declares_types_and_mappings_and_reloads_idempotently_over_a_persistent_store() {
    let conf = TempDir::new("conf");
    write(
        &conf,
        "managed.json",
        r#"{"objects": [
        {"name": "user", "schema": {"required": ["userName"], "properties": {"userName": {"type": "string", "unique": true, "caseExact": false}, "password": {"type": "string", "private": true}}}},
        {"name": "device", "schema": {"properties": {"serial": {"type": "string", "required": true, "unique": true}, "owner": {"type": "relationship", "resourceCollection": "managed/user", "reverseProperty": "devices"}}}}
    ]}"#,
    );
    write(
        &conf,
        "sync.json",
        r#"{"mappings": [{"name": "csvEmployee_managedUser", "source": "system/csv/employee", "target": "managed/user",
        "properties": [{"source": "uid", "target": "_id"}], "bindPassword": {"$env": "NOT_SET_ANYWHERE", "default": "x"}}]}"#,
    );
    let data = TempDir::new("data");
    let store = format!("surrealkv://{}", data.path().join("idm").display());
    let options = IdmdOptions {
        conf: Some(conf.path().to_path_buf()),
        store: Some(store),
        ..Default::default()
    };
    let mut idmd = Idmd::start_with(options.clone()).await;
    let mut c = idmd.clients().await;
    create_user(&mut c, "snow123", json!({"userName": "snow123"})).await;
    let device = c
        .objects
        .create_object(CreateObjectRequest {
            parent: "managed/device".into(),
            object_id: "laptop-1".into(),
            attributes: attrs(json!({"serial": "SN1", "owner": "snow123"})),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        json_of(&device)["owner"],
        json!({"_ref": "managed/user/snow123"})
    );
    let missing_serial = c
        .objects
        .create_object(CreateObjectRequest {
            parent: "managed/device".into(),
            object_id: String::new(),
            attributes: attrs(json!({})),
        })
        .await;
    expect_code(missing_serial, Code::InvalidArgument);
    expect_code(
        c.objects
            .create_object(CreateObjectRequest {
                parent: "managed/group".into(),
                object_id: String::new(),
                attributes: attrs(json!({"name": "g"})),
            })
            .await,
        Code::NotFound,
    );
    let mapping = c
        .config
        .get_mapping(GetMappingRequest {
            name: "mappings/csvEmployee_managedUser".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (mapping.source.as_str(), mapping.target.as_str()),
        ("system/csv/employee", "managed/user")
    );
    assert_eq!(
        idmd.terminate().code(),
        Some(0),
        "SIGTERM stops idmd cleanly"
    );

    // Same conf, same store: the data is there and the conf load changes nothing.
    let idmd = Idmd::spawn(
        options,
        TempDir::new("again"),
        idmd.admin_token.clone(),
        idmd.encryption_key.clone(),
    )
    .await
    .unwrap();
    assert!(idmd.log().contains("changed=0"), "{}", idmd.log());
    let mut c = idmd.clients().await;
    let user = c
        .objects
        .get_object(GetObjectRequest {
            name: "managed/user/snow123".into(),
            read_mask: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        json_of(&user)["devices"],
        json!([{"_ref": "managed/device/laptop-1"}])
    );
    let mappings = c
        .config
        .list_mappings(ListMappingsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(mappings.mappings.len(), 1);
}

#[tokio::test]
async fn a_stock_reflection_client_lists_the_idm_services() {
    let idmd = Idmd::start().await;
    let names = idmd.reflected_services().await;
    for service in [
        "idm.v1.ObjectService",
        "idm.v1.AuditService",
        "idm.v1.TokenService",
        "idm.v1.ReconService",
        "idm.v1.ScheduleService",
        "idm.v1.SyncService",
    ] {
        assert!(
            names.contains(&service.to_string()),
            "{service} missing from {names:?}"
        );
    }
}

#[tokio::test]
async fn json_log_format_writes_one_json_object_per_line() {
    let options = IdmdOptions {
        extra_args: vec!["--log-format".into(), "json".into()],
        ..Default::default()
    };
    let idmd = Idmd::start_with(options).await;
    let log = idmd.log();
    let first = log.lines().next().expect("a log line");
    let parsed: serde_json::Value =
        serde_json::from_str(first).unwrap_or_else(|e| panic!("{e}: {first}"));
    assert!(parsed.get("level").is_some(), "{parsed}");
}

#[tokio::test]
async fn connector_secrets_are_redacted_and_survive_a_read_modify_write() {
    let conf = TempDir::new("conn");
    write(
        &conf,
        "connector-ldap.json",
        r#"{"connectorType": "ldap", "url": "ldap://127.0.0.1:3389",
        "bindPassword": "admin", "bindPasswordFromEnv": {"$env": "IDM_LDAP_BIND_PASSWORD", "default": "admin"}}"#,
    );
    let idmd = Idmd::start_with(IdmdOptions {
        conf: Some(conf.path().to_path_buf()),
        ..Default::default()
    })
    .await;
    let mut c = idmd.clients().await;
    let fetched = c
        .config
        .get_connector(GetConnectorRequest {
            name: "connectors/ldap".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let body = serde_json::Value::Object(
        fetched
            .configuration
            .as_ref()
            .map(idm_proto::json::from_proto_struct)
            .unwrap_or_default(),
    );
    assert_eq!(body["bindPassword"], json!({"$redacted": true}));
    assert_eq!(
        body["bindPasswordFromEnv"]["$env"], "IDM_LDAP_BIND_PASSWORD",
        "env references are not secrets"
    );
    let put = |edited: &serde_json::Map<String, serde_json::Value>| PutConnectorRequest {
        connector: Some(Connector {
            name: "connectors/ldap".into(),
            connector_type: String::new(),
            configuration: Some(idm_proto::json::to_proto_struct(edited)),
        }),
    };
    // A kept secret goes only where it was given for: pointing the connector
    // elsewhere (an admin's own server) needs the secret sent again.
    let mut moved = body.as_object().unwrap().clone();
    moved.insert("url".into(), json!("ldap://127.0.0.1:4389"));
    let refused = expect_code(
        c.config.put_connector(put(&moved)).await,
        Code::InvalidArgument,
    );
    assert!(refused.message().contains("bindPassword"), "{refused:?}");
    assert!(refused.message().contains("\"url\" changed"), "{refused:?}");
    // Another field changes: the marker keeps the stored secret.
    let mut edited = body.as_object().unwrap().clone();
    edited.insert("pageSize".into(), json!(200));
    c.config.put_connector(put(&edited)).await.unwrap();
    // The new url with the secret sent again.
    edited.insert("url".into(), json!("ldap://127.0.0.1:4389"));
    edited.insert("bindPassword".into(), json!("admin"));
    c.config.put_connector(put(&edited)).await.unwrap();
    let after = c
        .config
        .get_connector(GetConnectorRequest {
            name: "connectors/ldap".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let after_body = serde_json::Value::Object(
        after
            .configuration
            .as_ref()
            .map(idm_proto::json::from_proto_struct)
            .unwrap_or_default(),
    );
    assert_eq!(
        (after.connector_type.as_str(), after_body["url"].as_str()),
        ("ldap", Some("ldap://127.0.0.1:4389"))
    );
    assert_eq!(
        after_body["bindPassword"],
        json!({"$redacted": true}),
        "still hidden, and still stored"
    );

    // The marker stands for a stored value; where nothing is stored it is refused
    // rather than saved as the password.
    let fresh = Connector {
        name: "connectors/other".into(),
        connector_type: "ldap".into(),
        configuration: Some(idm_proto::json::to_proto_struct(
            json!({"bindPassword": {"$redacted": true}})
                .as_object()
                .unwrap(),
        )),
    };
    let refused = c
        .config
        .put_connector(PutConnectorRequest {
            connector: Some(fresh),
        })
        .await;
    let status = expect_code(refused, Code::InvalidArgument);
    assert!(status.message().contains("bindPassword"), "{status:?}");
}

#[tokio::test]
async fn mappings_are_checked_whole_at_start_up_and_over_grpc() {
    let conf = TempDir::new("badscript");
    write(
        &conf,
        "sync.json",
        r#"{"mappings": [{"name": "csvEmployee_managedUser", "source": "system/csv/employee", "target": "managed/user",
        "properties": [{"source": "", "target": "userName", "transform": {"type": "text/javascript", "source": "source.lastName.toLowerCase( + source.uid;"}}]}]}"#,
    );
    let log = start_failure(&conf).await;
    assert!(
        log.contains("sync.json")
            && log.contains("properties[0].transform (userName)")
            && log.contains("compile"),
        "{log}"
    );

    let sample = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../samples/sync");
    let idmd = Idmd::start_with(IdmdOptions {
        conf: Some(sample),
        ..Default::default()
    })
    .await;
    let mut c = idmd.clients().await;
    let cookbook = c
        .config
        .get_mapping(GetMappingRequest {
            name: "mappings/csvEmployee_managedUser".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(properties_len(&cookbook), 7);
    for (change, field) in [
        (
            json!({"policies": [{"situation": "SOURCE_GONE", "action": "DELETE"}]}),
            "definition.policies[0].situation",
        ),
        (
            json!({"validSource": {"type": "groovy", "source": "true"}}),
            "definition.validSource",
        ),
        (json!({"target": "managed/widget"}), "definition.target"),
    ] {
        let mut definition = serde_json::Value::Object(
            cookbook
                .definition
                .as_ref()
                .map(idm_proto::json::from_proto_struct)
                .unwrap_or_default(),
        );
        for (key, value) in change.as_object().unwrap() {
            definition[key] = value.clone();
        }
        let put = idm_proto::v1::Mapping {
            name: "mappings/csvEmployee_managedUser".into(),
            definition: Some(idm_proto::json::to_proto_struct(
                definition.as_object().unwrap(),
            )),
            ..Default::default()
        };
        let refused = c
            .config
            .put_mapping(idm_proto::v1::PutMappingRequest { mapping: Some(put) })
            .await;
        assert_eq!(
            crate::violated_field(&expect_code(refused, Code::InvalidArgument)),
            field
        );
    }
}

fn properties_len(mapping: &idm_proto::v1::Mapping) -> usize {
    let definition = mapping
        .definition
        .as_ref()
        .map(idm_proto::json::from_proto_struct)
        .unwrap_or_default();
    definition
        .get("properties")
        .and_then(serde_json::Value::as_array)
        .map_or(0, Vec::len)
}
