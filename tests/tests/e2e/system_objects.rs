//! `SystemService` (objects of external systems read through their
//! connectors), `ScheduleService.ValidateCronExpression` and
//! `ListExecutions(running)`: what Wren's `/openidm/system`, cron validation
//! and currently executing jobs stand on.

use idm_proto::v1::system_service_client::SystemServiceClient;
use idm_proto::v1::{
    GetSystemObjectRequest, ListExecutionsRequest, QuerySystemObjectsRequest, Scope, SystemObject,
    ValidateCronExpressionRequest,
};
use idm_tests::{Authed, Bearer, Idmd, IdmdOptions, TempDir, idm_conf};
use serde_json::Value;
use tonic::Code;

use crate::expect_code;

async fn start(conf: &TempDir) -> Idmd {
    Idmd::start_with(IdmdOptions {
        conf: Some(conf.path().to_path_buf()),
        ..Default::default()
    })
    .await
}

async fn system(idmd: &Idmd, token: String) -> SystemServiceClient<Authed> {
    SystemServiceClient::with_interceptor(idmd.channel().await, Bearer(Some(token)))
}

fn attributes(object: &SystemObject) -> Value {
    Value::Object(
        object
            .attributes
            .as_ref()
            .map(idm_proto::json::from_proto_struct)
            .unwrap_or_default(),
    )
}

fn query(filter: &str, page_size: i32, page_token: &str) -> QuerySystemObjectsRequest {
    QuerySystemObjectsRequest {
        connector: "csv".into(),
        object_type: "employee".into(),
        filter: filter.into(),
        page_size,
        page_token: page_token.into(),
    }
}

fn ids(objects: &[SystemObject]) -> Vec<&str> {
    objects.iter().map(|o| o.id.as_str()).collect()
}

#[tokio::test]
async fn csv_objects_are_read_queried_and_paged_through_the_connector() {
    let conf = idm_conf("sync");
    let idmd = start(&conf).await;
    let mut admin = system(&idmd, idmd.admin_token.clone()).await;

    let jon = admin
        .get_system_object(GetSystemObjectRequest {
            connector: "csv".into(),
            object_type: "employee".into(),
            id: "123".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(jon.name, "system/csv/employee/123");
    assert_eq!(attributes(&jon)["lastName"], "Snow");

    let all = admin
        .query_system_objects(query("", 0, ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ids(&all.objects), ["123", "456", "789"]);
    assert!(all.next_page_token.is_empty());

    let does = admin
        .query_system_objects(query(r#"lastName eq "Doe""#, 1, ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ids(&does.objects), ["456"]);
    let rest = admin
        .query_system_objects(query(r#"lastName eq "Doe""#, 1, &does.next_page_token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ids(&rest.objects), ["789"]);
    assert!(rest.next_page_token.is_empty());
    // A token is bound to its query.
    expect_code(
        admin
            .query_system_objects(query("", 1, &does.next_page_token))
            .await,
        Code::InvalidArgument,
    );

    let hostile = admin
        .query_system_objects(query(r#"lastName eq "Doe\" or \"1\" eq \"1""#, 0, ""))
        .await
        .unwrap()
        .into_inner();
    assert!(hostile.objects.is_empty());

    for (connector, object_type, id) in [
        ("nope", "employee", "123"),
        ("csv", "nope", "123"),
        ("csv", "employee", "999"),
    ] {
        expect_code(
            admin
                .get_system_object(GetSystemObjectRequest {
                    connector: connector.into(),
                    object_type: object_type.into(),
                    id: id.into(),
                })
                .await,
            Code::NotFound,
        );
    }
    expect_code(
        admin
            .query_system_objects(query("lastName eq", 0, ""))
            .await,
        Code::InvalidArgument,
    );
    expect_code(
        admin
            .query_system_objects(QuerySystemObjectsRequest {
                connector: "../csv".into(),
                ..query("", 0, "")
            })
            .await,
        Code::InvalidArgument,
    );

    // A connector reads with its own credentials: admin scope only.
    let reader = crate::token(&idmd, Scope::Read).await;
    let mut reader = system(&idmd, reader).await;
    expect_code(
        reader.query_system_objects(query("", 0, "")).await,
        Code::PermissionDenied,
    );
}

#[tokio::test]
async fn password_columns_are_never_shown() {
    let conf = idm_conf("sync");
    let connector = conf.path().join("connector-csv.json");
    if connector.exists() {
        let mut body: Value =
            serde_json::from_str(&std::fs::read_to_string(&connector).unwrap()).unwrap();
        body["objectTypes"]["employee"]["properties"]
            .as_array_mut()
            .unwrap()
            .push("userPassword".into());
        std::fs::write(&connector, body.to_string()).unwrap();
    }
    std::fs::write(
        conf.path().join("data/hr.csv"),
        "uid,firstName,lastName,telephoneNumber,userPassword\n123,Jon,Snow,5551234,Secret#123\n",
    )
    .unwrap();
    let idmd = start(&conf).await;
    let mut admin = system(&idmd, idmd.admin_token.clone()).await;
    let all = admin
        .query_system_objects(query("", 0, ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ids(&all.objects), ["123"]);
    let shown = format!("{:?}", all.objects);
    assert!(!shown.contains("Secret#123"), "{shown}");
    assert!(!shown.to_lowercase().contains("password"), "{shown}");
}

#[tokio::test]
async fn cron_expressions_are_validated_and_running_executions_listed() {
    let idmd = Idmd::start().await;
    let mut clients = idmd.clients().await;
    for (expression, valid) in [
        ("0/15 * * * * ?", true),
        ("0 0 12 ? * MON-FRI", true),
        ("0 0 12 * * ? 2030", true),
        ("*/15 * * * *", false),
        ("0 0 25 * * ?", false),
        ("not a cron", false),
        ("", false),
    ] {
        let answer = clients
            .schedules
            .validate_cron_expression(ValidateCronExpressionRequest {
                cron_expression: expression.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(answer.valid, valid, "{expression:?}: {answer:?}");
        assert_eq!(answer.message.is_empty(), valid, "{answer:?}");
    }
    expect_code(
        clients
            .schedules
            .validate_cron_expression(ValidateCronExpressionRequest {
                cron_expression: "0 ".repeat(1000),
            })
            .await,
        Code::InvalidArgument,
    );

    let running = clients
        .schedules
        .list_executions(ListExecutionsRequest {
            running: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(running.executions.is_empty());
}
