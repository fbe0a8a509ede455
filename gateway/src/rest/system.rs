//! `/openidm/system`: objects of external systems read through their
//! connectors (`SystemService`), and the connectors' status
//! (`ConfigService.TestConnector`). Read-only: idm writes to a system only
//! through mappings.
//!
//! - `GET /system/{connector}/{type}/{id}` → `{"_id", …attributes}`;
//! - `GET /system/{connector}/{type}?_queryFilter=…|_queryId=query-all-ids`
//!   with `_pageSize` and `_pagedResultsCookie`;
//! - `POST /system?_action=test` → `[{"name", "enabled", "config",
//!   "objectTypes", "connectorRef", "displayName", "ok"}]` (and `error` when
//!   not ok); `POST /system/{connector}?_action=test` for one.
//!
//! Password attributes and the connectors' credentials are never shown (the
//! core leaves them out).

use std::future::Future;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use idm_proto::json::from_proto_struct;
use idm_proto::v1::config_service_client::ConfigServiceClient;
use idm_proto::v1::system_service_client::SystemServiceClient;
use idm_proto::v1::{
    Connector, GetSystemObjectRequest, ListConnectorsRequest, QuerySystemObjectsRequest,
    SystemObject, TestConnectorRequest, TestConnectorResponse,
};
use serde_json::{Value, json};
use tonic::{Code, Status};

use super::core_call;
use super::listing::{Query, WrenFilter, page_size, query_result};
use super::{Caller, Params, RestError, RestState, json_response};
use crate::core::{Bearer, Core};

pub fn routes() -> Router<RestState> {
    Router::new()
        .route("/system", post(system_action))
        .route("/system/{connector}", post(connector_action))
        .route("/system/{connector}/{object_type}", get(query))
        .route("/system/{connector}/{object_type}/{id}", get(read))
}

/// A `SystemService` call; a connector that cannot be reached is a 503
/// naming the connector (not the core, which answered).
async fn system_call<T, F, Fut>(state: &RestState, caller: &Caller, f: F) -> Result<T, RestError>
where
    F: Fn(SystemServiceClient<crate::core::CoreChannel>, Bearer) -> Fut,
    Fut: Future<Output = Result<T, Status>>,
{
    caller
        .call(state, |bearer| {
            let answer = f(SystemServiceClient::new(state.core.channel()), bearer);
            async move {
                match answer.await {
                    Err(status)
                        if matches!(status.code(), Code::Unavailable | Code::DeadlineExceeded)
                            && status.message().starts_with("connector ") =>
                    {
                        Ok(Err(RestError::unavailable(status.message())))
                    }
                    other => other.map(Ok),
                }
            }
        })
        .await?
}

/// An object as Wren shows it: `_id` and the attributes.
fn object(found: &SystemObject) -> Value {
    let mut body = found
        .attributes
        .as_ref()
        .map(from_proto_struct)
        .unwrap_or_default();
    body.insert("_id".into(), Value::String(found.id.clone()));
    Value::Object(body)
}

async fn read(
    State(state): State<RestState>,
    caller: Caller,
    Path((connector, object_type, id)): Path<(String, String, String)>,
) -> Result<Response, RestError> {
    let found = system_call(&state, &caller, |mut client, bearer| {
        let request = GetSystemObjectRequest {
            connector: connector.clone(),
            object_type: object_type.clone(),
            id: id.clone(),
        };
        async move {
            Ok(client
                .get_system_object(Core::authorized(&bearer, request)?)
                .await?
                .into_inner())
        }
    })
    .await?;
    Ok(json_response(StatusCode::OK, &object(&found)))
}

async fn query(
    State(state): State<RestState>,
    caller: Caller,
    Path((connector, object_type)): Path<(String, String)>,
    params: Params,
) -> Result<Response, RestError> {
    let query = Query::of(&params)?;
    let filter = match &query {
        Query::AllIds => String::new(),
        Query::Filter(text) => match WrenFilter::parse(text)? {
            WrenFilter::All => String::new(),
            WrenFilter::Nothing => {
                return Ok(json_response(
                    StatusCode::OK,
                    &query_result(Vec::new(), None, None),
                ));
            }
            WrenFilter::Where(f) => f.to_string(),
        },
    };
    let size = page_size(&params, state.limits.max_page_size)?;
    let cookie = params
        .get("_pagedResultsCookie")
        .unwrap_or_default()
        .to_string();
    let page = system_call(&state, &caller, |mut client, bearer| {
        let request = QuerySystemObjectsRequest {
            connector: connector.clone(),
            object_type: object_type.clone(),
            filter: filter.clone(),
            page_size: size,
            page_token: cookie.clone(),
        };
        async move {
            Ok(client
                .query_system_objects(Core::authorized(&bearer, request)?)
                .await?
                .into_inner())
        }
    })
    .await?;
    let result = page
        .objects
        .iter()
        .map(|found| match query {
            Query::AllIds => json!({"_id": found.id}),
            Query::Filter(_) => object(found),
        })
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &query_result(result, Some(page.next_page_token), None),
    ))
}

/// Wren's `connectorRef` for idm's connector types (the ICF bundles Wren
/// ships for CSV files and LDAP), unless the document carries its own.
fn connector_ref(connector_type: &str, configuration: &Value) -> Value {
    if let Some(given) = configuration.get("connectorRef") {
        return given.clone();
    }
    match connector_type {
        "csv" => json!({
            "bundleName": "org.forgerock.openicf.connectors.csvfile-connector",
            "connectorName": "org.forgerock.openicf.csvfile.CSVFileConnector",
        }),
        "ldap" => json!({
            "bundleName": "org.forgerock.openicf.connectors.ldap-connector",
            "connectorName": "org.identityconnectors.ldap.LdapConnector",
        }),
        other => json!({ "connectorName": other }),
    }
}

fn display_name(connector_type: &str) -> &'static str {
    match connector_type {
        "csv" => "CSV File Connector",
        "ldap" => "LDAP Connector",
        _ => "Connector",
    }
}

/// One connector's status in Wren's shape; never its configuration's values.
fn status(connector: &Connector, tested: &TestConnectorResponse) -> Value {
    let name = connector
        .name
        .strip_prefix("connectors/")
        .unwrap_or(&connector.name);
    let configuration = connector
        .configuration
        .as_ref()
        .map(|c| Value::Object(from_proto_struct(c)))
        .unwrap_or(Value::Null);
    let mut body = json!({
        "name": name,
        "enabled": configuration.get("enabled").and_then(Value::as_bool).unwrap_or(true),
        "config": format!("config/provisioner.openicf/{name}"),
        "objectTypes": tested.object_types,
        "connectorRef": connector_ref(&connector.connector_type, &configuration),
        "displayName": display_name(&connector.connector_type),
        "ok": tested.ok,
    });
    if !tested.ok
        && let Some(object) = body.as_object_mut()
    {
        object.insert("error".into(), Value::String(tested.message.clone()));
    }
    body
}

async fn test(
    state: &RestState,
    caller: &Caller,
    connector: &Connector,
) -> Result<Value, RestError> {
    let tested = core_call!(
        state,
        caller,
        ConfigServiceClient.test_connector(TestConnectorRequest {
            name: connector.name.clone(),
        })
    )
    .await?;
    Ok(status(connector, &tested))
}

async fn connectors(state: &RestState, caller: &Caller) -> Result<Vec<Connector>, RestError> {
    Ok(core_call!(
        state,
        caller,
        ConfigServiceClient.list_connectors(ListConnectorsRequest {})
    )
    .await?
    .connectors)
}

async fn system_action(
    State(state): State<RestState>,
    caller: Caller,
    params: Params,
) -> Result<Response, RestError> {
    match params.action()? {
        "test" => {
            let mut statuses = Vec::new();
            for connector in connectors(&state, &caller).await? {
                statuses.push(test(&state, &caller, &connector).await?);
            }
            Ok(json_response(StatusCode::OK, &Value::Array(statuses)))
        }
        other => Err(RestError::unknown_action(other)),
    }
}

async fn connector_action(
    State(state): State<RestState>,
    caller: Caller,
    Path(name): Path<String>,
    params: Params,
) -> Result<Response, RestError> {
    match params.action()? {
        "test" => {
            let wanted = format!("connectors/{name}");
            let connector = connectors(&state, &caller)
                .await?
                .into_iter()
                .find(|c| c.name == wanted)
                .ok_or_else(|| RestError::not_found(format!("system/{name} not found")))?;
            let body = test(&state, &caller, &connector).await?;
            Ok(json_response(StatusCode::OK, &body))
        }
        other => Err(RestError::unknown_action(other)),
    }
}
