//! Connector secrets and what a conf document sent over the API may reach:
//! secrets are declared by the connector type, sealed at rest, never shown
//! (nor their `$env` defaults) to any token; a read-modify-write keeps them;
//! an API document names only the `$env` variables and the directories the
//! operator allows, and no error echoes a value resolved from the environment.

use idm_proto::json::{from_proto_struct, to_proto_struct};
use idm_proto::v1::{
    Connector, CreateScheduleRequest, GetConnectorRequest, ListConnectorsRequest, Mapping,
    PutConnectorRequest, PutMappingRequest, Schedule, Scope, TestConnectorRequest,
};
use idm_tests::directory::{self, Slapd};
use idm_tests::{Clients, Idmd, IdmdOptions, TempDir, attrs, idm_conf};
use serde_json::{Map, Value, json};
use tonic::Code;

use crate::ldap::{eventually, ldap_env};
use crate::{expect_code, recon, token, violated_field};

fn object(value: Value) -> Map<String, Value> {
    value.as_object().cloned().unwrap()
}

async fn get_connector(c: &mut Clients, name: &str) -> (Connector, Value) {
    let connector = c
        .config
        .get_connector(GetConnectorRequest {
            name: format!("connectors/{name}"),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("get {name}: {e}"))
        .into_inner();
    let body = Value::Object(
        connector
            .configuration
            .as_ref()
            .map(from_proto_struct)
            .unwrap_or_default(),
    );
    (connector, body)
}

async fn put_connector(
    c: &mut Clients,
    name: &str,
    body: Value,
) -> Result<tonic::Response<Connector>, tonic::Status> {
    c.config
        .put_connector(PutConnectorRequest {
            connector: Some(Connector {
                name: format!("connectors/{name}"),
                connector_type: String::new(),
                configuration: Some(to_proto_struct(&object(body))),
            }),
        })
        .await
}

fn write(dir: &TempDir, file: &str, body: &str) {
    std::fs::write(dir.path().join(file), body).unwrap();
}

#[tokio::test]
async fn no_token_ever_sees_a_connector_secret_or_an_env_default() {
    let conf = TempDir::new("secrets");
    write(
        &conf,
        "connector-fromenv.json",
        r#"{"connectorType": "ldap", "url": "ldap://127.0.0.1:9", "baseDn": "dc=example,dc=org",
            "bindPassword": {"$env": "IDM_TEST_NEVER_SET", "default": "s3cr3t-default"},
            "objectTypes": {"account": {"namingAttribute": "uid", "objectClasses": ["inetOrgPerson"]}}}"#,
    );
    write(
        &conf,
        "connector-literal.json",
        r#"{"connectorType": "ldap", "url": "ldap://127.0.0.1:9", "baseDn": "dc=example,dc=org",
            "bindDn": "cn=admin,dc=example,dc=org", "bindPassword": "s3cr3t-literal",
            "passwordHashing": "SSHA",
            "objectTypes": {"account": {"namingAttribute": "uid", "objectClasses": ["inetOrgPerson"],
                                        "passwordAttribute": "userPassword"}}}"#,
    );
    let idmd = Idmd::start_with(IdmdOptions {
        conf: Some(conf.path().to_path_buf()),
        ..Default::default()
    })
    .await;
    let mut admin = idmd.clients().await;
    // A type idm does not know: everything but its type counts as secret,
    // whatever the key is called.
    put_connector(
        &mut admin,
        "custom",
        json!({"connectorType": "rest", "endpoint": "https://api.example", "session": "s3cr3t-session"}),
    )
    .await
    .unwrap();

    let read = token(&idmd, Scope::Read).await;
    for mut c in [admin, idmd.clients_with(Some(read)).await] {
        let mut seen = Vec::new();
        let (_, from_env) = get_connector(&mut c, "fromenv").await;
        assert_eq!(
            from_env["bindPassword"],
            json!({"$env": "IDM_TEST_NEVER_SET", "default": {"$redacted": true}}),
            "the variable's name is shown, its default is not"
        );
        let (_, literal) = get_connector(&mut c, "literal").await;
        assert_eq!(literal["bindPassword"], json!({"$redacted": true}));
        // Names that look secret but are not declared so are shown.
        assert_eq!(literal["passwordHashing"], "SSHA");
        assert_eq!(
            literal["objectTypes"]["account"]["passwordAttribute"],
            "userPassword"
        );
        assert_eq!(literal["bindDn"], "cn=admin,dc=example,dc=org");
        let (custom, custom_body) = get_connector(&mut c, "custom").await;
        assert_eq!(custom.connector_type, "rest");
        assert_eq!(custom_body["session"], json!({"$redacted": true}));
        assert_eq!(custom_body["endpoint"], json!({"$redacted": true}));
        seen.push(format!("{from_env} {literal} {custom_body}"));
        let listed = c
            .config
            .list_connectors(ListConnectorsRequest {})
            .await
            .unwrap()
            .into_inner();
        assert_eq!(listed.connectors.len(), 3);
        seen.push(format!("{listed:?}"));
        for text in seen {
            assert!(!text.contains("s3cr3t"), "{text}");
        }
    }
    assert!(!idmd.log().contains("s3cr3t"), "{}", idmd.log());
}

#[tokio::test]
async fn a_read_modify_write_keeps_the_sealed_bind_password_and_the_directory_still_binds() {
    let slapd = Slapd::start().unwrap_or_else(|e| panic!("a real slapd is needed: {e}"));
    let conf = idm_conf("sync");
    let idmd = Idmd::start_with(IdmdOptions {
        conf: Some(conf.path().to_path_buf()),
        env: ldap_env(&slapd),
        ..Default::default()
    })
    .await;
    let mut c = idmd.clients().await;
    // The sample's connector with literal values: the bind password is sealed at rest.
    let sample: Value = serde_json::from_str(
        &std::fs::read_to_string(conf.path().join("connector-ldap.json")).unwrap(),
    )
    .unwrap();
    let mut literal = sample.as_object().unwrap().clone();
    literal.insert("url".into(), json!(slapd.url()));
    literal.insert("baseDn".into(), json!(slapd.base_dn()));
    literal.insert("bindDn".into(), json!(slapd.admin_dn()));
    literal.insert("bindPassword".into(), json!(slapd.admin_password()));
    let stored = put_connector(&mut c, "ldap", Value::Object(literal))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        from_proto_struct(stored.configuration.as_ref().unwrap())["bindPassword"],
        json!({"$redacted": true})
    );

    // Read, change another field, write back: the password stays.
    let (_, mut body) = get_connector(&mut c, "ldap").await;
    assert_eq!(body["bindPassword"], json!({"$redacted": true}));
    body["pageSize"] = json!(100);
    put_connector(&mut c, "ldap", body).await.unwrap();
    let (_, after) = get_connector(&mut c, "ldap").await;
    assert_eq!(after["pageSize"], 100);
    assert_eq!(after["bindPassword"], json!({"$redacted": true}));

    let tested = c
        .config
        .test_connector(TestConnectorRequest {
            name: "connectors/ldap".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(tested.ok, "{tested:?}");
    assert!(!tested.message.contains(slapd.admin_password()));

    // The cookbook still flows: HR's CSV → managed users → the directory,
    // through the connector built from the sealed document.
    let run = recon(&mut c, "csvEmployee_managedUser").await;
    assert_eq!(run.state, 3, "SUCCESS: {run:?}");
    eventually("three accounts", || {
        (directory::search(&slapd, "(objectClass=inetOrgPerson)").len() == 3).then_some(())
    })
    .await;
    let run = recon(&mut c, "managedUser_ldapAccount").await;
    assert_eq!(run.state, 3, "SUCCESS: {run:?}");
    assert!(!idmd.log().contains(slapd.admin_password()));
}

#[tokio::test]
async fn an_api_document_cannot_make_idmd_print_an_environment_variable() {
    let conf = TempDir::new("envallow");
    let idmd = Idmd::start_with(IdmdOptions {
        conf: Some(conf.path().to_path_buf()),
        env: vec![
            ("IDM_CONF_ENV_ALLOW".into(), "IDM_TEST_ALLOWED_URL".into()),
            (
                "IDM_TEST_ALLOWED_URL".into(),
                "http://allowed-s3cr3t.example".into(),
            ),
        ],
        ..Default::default()
    })
    .await;
    let mut c = idmd.clients().await;
    let key = idmd.encryption_key.clone();

    let refused = expect_code(
        put_connector(
            &mut c,
            "steal",
            json!({"connectorType": "ldap", "url": {"$env": "IDM_ENCRYPTION_KEY"},
                   "baseDn": "dc=example,dc=org",
                   "objectTypes": {"account": {"namingAttribute": "uid", "objectClasses": ["inetOrgPerson"]}}}),
        )
        .await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_field(&refused), "url");
    assert!(
        refused.message().contains("IDM_ENCRYPTION_KEY"),
        "{refused:?}"
    );
    assert!(!format!("{refused:?}").contains(&key));
    let missing = c
        .config
        .test_connector(TestConnectorRequest {
            name: "connectors/steal".into(),
        })
        .await;
    expect_code(missing, Code::NotFound);

    // Mappings and schedules are held to the same rule.
    let mapping = Mapping {
        name: "mappings/steal".into(),
        definition: attrs(
            json!({"source": "system/csv/employee", "target": "managed/user",
            "properties": [{"target": "description", "default": {"$env": "IDM_ADMIN_TOKEN"}}]}),
        ),
        ..Default::default()
    };
    let refused = expect_code(
        c.config
            .put_mapping(PutMappingRequest {
                mapping: Some(mapping),
            })
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_field(&refused), "properties[0].default");
    let schedule = CreateScheduleRequest {
        schedule_id: "steal".into(),
        schedule: Some(Schedule {
            enabled: true,
            r#type: "cron".into(),
            schedule: "0 0 * * * ?".into(),
            invoke_service: "script".into(),
            invoke_context: attrs(
                json!({"script": {"type": "text/javascript", "source": "'x'"},
                                         "input": {"$env": "IDM_ENCRYPTION_KEY"}}),
            ),
            ..Default::default()
        }),
    };
    let refused = expect_code(
        c.schedules.create_schedule(schedule).await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_field(&refused), "invokeContext.input");

    // An allowed name resolves; an error about its value names the reference only.
    put_connector(
        &mut c,
        "allowed",
        json!({"connectorType": "ldap", "url": {"$env": "IDM_TEST_ALLOWED_URL"},
               "baseDn": "dc=example,dc=org",
               "objectTypes": {"account": {"namingAttribute": "uid", "objectClasses": ["inetOrgPerson"]}}}),
    )
    .await
    .unwrap();
    let tested = c
        .config
        .test_connector(TestConnectorRequest {
            name: "connectors/allowed".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!tested.ok);
    assert!(
        tested.message.contains("$env:IDM_TEST_ALLOWED_URL"),
        "{tested:?}"
    );
    assert!(!tested.message.contains("allowed-s3cr3t"), "{tested:?}");
    assert!(!idmd.log().contains(&key));
    assert!(!idmd.log().contains("allowed-s3cr3t"), "{}", idmd.log());
}

#[tokio::test]
async fn an_api_document_cannot_read_files_outside_the_allowed_directories() {
    let conf = idm_conf("sync");
    let elsewhere = TempDir::new("allowed");
    std::fs::write(elsewhere.path().join("hr.csv"), "uid,firstName\nx1,X\n").unwrap();
    std::os::unix::fs::symlink("/etc/passwd", conf.path().join("data/passwd.csv")).unwrap();
    let idmd = Idmd::start_with(IdmdOptions {
        conf: Some(conf.path().to_path_buf()),
        extra_args: vec![
            "--allow-path".into(),
            elsewhere.path().display().to_string(),
        ],
        ..Default::default()
    })
    .await;
    let mut c = idmd.clients().await;
    let csv = |file: &str| {
        json!({"connectorType": "csv", "file": file,
               "objectTypes": {"employee": {"uidColumn": "uid"}}})
    };
    for file in [
        "/etc/passwd",
        "../../../../../../../etc/passwd",
        "data/passwd.csv",
    ] {
        let refused = expect_code(
            put_connector(&mut c, "hr", csv(file)).await,
            Code::InvalidArgument,
        );
        assert_eq!(violated_field(&refused), "file", "{file}");
        assert!(
            refused.message().contains("outside the conf directory"),
            "{file}: {refused:?}"
        );
        assert!(!refused.message().contains("root:"), "{refused:?}");
    }
    let nested = json!({"connectorType": "csv",
        "objectTypes": {"employee": {"uidColumn": "uid", "file": "/etc/passwd"}}});
    let refused = expect_code(
        put_connector(&mut c, "hr", nested).await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_field(&refused), "objectTypes.employee.file");
    let ca = json!({"connectorType": "ldap", "url": "ldaps://127.0.0.1:9", "baseDn": "dc=x",
        "tlsCaFile": "/etc/passwd",
        "objectTypes": {"account": {"namingAttribute": "uid", "objectClasses": ["inetOrgPerson"]}}});
    let refused = expect_code(
        put_connector(&mut c, "dir", ca).await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_field(&refused), "tlsCaFile");

    // A script file, in a mapping and in a schedule.
    let mapping = Mapping {
        name: "mappings/peek".into(),
        definition: attrs(
            json!({"source": "system/csv/employee", "target": "managed/user",
            "properties": [{"source": "uid", "target": "_id"},
                           {"target": "description",
                            "transform": {"type": "text/javascript", "file": "/etc/passwd"}}]}),
        ),
        ..Default::default()
    };
    let refused = expect_code(
        c.config
            .put_mapping(PutMappingRequest {
                mapping: Some(mapping),
            })
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_field(&refused), "properties[1].transform.file");
    assert!(!refused.message().contains("root:"), "{refused:?}");
    let schedule = CreateScheduleRequest {
        schedule_id: "peek".into(),
        schedule: Some(Schedule {
            enabled: true,
            r#type: "cron".into(),
            schedule: "0 0 * * * ?".into(),
            invoke_service: "script".into(),
            invoke_context: attrs(
                json!({"script": {"type": "text/javascript", "file": "../../../../../../etc/passwd"}}),
            ),
            ..Default::default()
        }),
    };
    let refused = expect_code(
        c.schedules.create_schedule(schedule).await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_field(&refused), "invokeContext.script.file");

    // Inside the conf directory, or a directory the operator allowed: fine.
    put_connector(&mut c, "hr", csv("data/hr.csv"))
        .await
        .unwrap();
    let allowed = elsewhere.path().join("hr.csv");
    put_connector(&mut c, "other", csv(allowed.to_str().unwrap()))
        .await
        .unwrap();
    let tested = c
        .config
        .test_connector(TestConnectorRequest {
            name: "connectors/other".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(tested.ok, "{tested:?}");
}
