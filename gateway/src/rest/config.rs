//! `/openidm/config`: Wren's configuration documents, read from and written
//! through the core's own services, so a REST write passes the same checks
//! as a gRPC one and secrets come back as `{"$redacted": true}`.
//!
//! | document | read | write (`PUT`) |
//! |---|---|---|
//! | `sync` | `{"mappings": […]}` (`ConfigService.ListMappings`) | each mapping `PutMapping`, then the ones left out deleted |
//! | `managed` | `{"objects": […]}` (`ObjectService.ListObjectTypes`) | 501: `managed.json` is read at start |
//! | `provisioner.openicf/{name}` | the connector in Wren's ICF shape (`GetConnector`, provisioner view) | `PutConnector` with an ICF body |
//! | `connector/{name}` | the connector in idm's own shape (`GetConnector`) | `PutConnector` |
//! | `schedule/{name}` | the schedule (`GetSchedule`) | `CreateSchedule` / `UpdateSchedule` |
//!
//! `GET /config` lists them (`{"configurations": [{"_id", "pid", "factoryPid"}]}`),
//! each connector once, as `provisioner.openicf/{name}`. The core stores a
//! connector in idm's shape only and translates Wren's both ways, so both
//! paths show the one document.
//! A `sync` write is not one transaction: mappings are written in order and
//! the first refused one stops it (those before it stay written).

use std::collections::BTreeSet;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use idm_proto::json::{from_proto_struct, to_proto_struct};
use idm_proto::v1::config_service_client::ConfigServiceClient;
use idm_proto::v1::object_service_client::ObjectServiceClient;
use idm_proto::v1::schedule_service_client::ScheduleServiceClient;
use idm_proto::v1::{
    Connector, ConnectorView, CreateScheduleRequest, DeleteMappingRequest, GetConnectorRequest,
    GetScheduleRequest, ListConnectorsRequest, ListMappingsRequest, ListObjectTypesRequest,
    ListSchedulesRequest, Mapping, PutConnectorRequest, PutMappingRequest, Schedule,
    UpdateScheduleRequest,
};
use serde_json::{Map, Value, json};

use super::core_call;
use super::scheduler::{job, schedule_of};
use super::{Caller, JsonBody, RestError, RestState, json_response};

/// The most mappings one `PUT /config/sync` takes.
const MAX_MAPPINGS: usize = 1000;

pub fn routes() -> Router<RestState> {
    Router::new()
        .route("/config", get(list))
        .route("/config/{name}", get(read_one).put(write_one))
        .route("/config/{kind}/{name}", get(read_two).put(write_two))
}

fn plain(name: &str) -> Result<&str, RestError> {
    if name.is_empty() || name.contains('/') || name.len() > 256 {
        return Err(RestError::not_found(format!("config/{name} not found")));
    }
    Ok(name)
}

fn with_id(id: &str, body: Map<String, Value>) -> Value {
    let mut shown = Map::new();
    shown.insert("_id".into(), Value::String(id.to_string()));
    shown.extend(body.into_iter().filter(|(k, _)| k != "_id"));
    Value::Object(shown)
}

/// The two shapes a connector is read and written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// Wren's: `connectorRef`, `configurationProperties`, `objectTypes`, ….
    Provisioner,
    /// idm's own: what `connector-<name>.json` holds.
    Idm,
}

impl Shape {
    fn of(kind: &str) -> Option<Shape> {
        match kind {
            "provisioner.openicf" => Some(Shape::Provisioner),
            "connector" => Some(Shape::Idm),
            _ => None,
        }
    }

    fn kind(self) -> &'static str {
        match self {
            Shape::Provisioner => "provisioner.openicf",
            Shape::Idm => "connector",
        }
    }

    fn view(self) -> ConnectorView {
        match self {
            Shape::Provisioner => ConnectorView::Provisioner,
            Shape::Idm => ConnectorView::Unspecified,
        }
    }

    /// A body in the other shape is refused naming where it belongs: the
    /// core takes either, but would answer in the one it was given.
    fn check_body(self, name: &str, configuration: &Map<String, Value>) -> Result<(), RestError> {
        match (self, configuration.contains_key("connectorRef")) {
            (Shape::Provisioner, false) => Err(RestError::bad_request(format!(
                "connectorRef: required in Wren's provisioner shape \
                 (idm's own connector shape is written at config/connector/{name})"
            ))),
            (Shape::Idm, true) => Err(RestError::bad_request(format!(
                "connectorRef: Wren's provisioner shape is written at \
                 config/provisioner.openicf/{name}"
            ))),
            _ => Ok(()),
        }
    }
}

fn connector_document(connector: &Connector, shape: Shape, name: &str) -> Value {
    let body = connector
        .configuration
        .as_ref()
        .map(from_proto_struct)
        .unwrap_or_default();
    with_id(&format!("{}/{name}", shape.kind()), body)
}

async fn read_connector(
    state: &RestState,
    caller: &Caller,
    shape: Shape,
    name: &str,
) -> Result<Value, RestError> {
    let connector = core_call!(
        state,
        caller,
        ConfigServiceClient.get_connector(GetConnectorRequest {
            name: format!("connectors/{name}"),
            view: shape.view().into(),
        })
    )
    .await
    .map_err(|mut e| {
        // The core cannot show this connector in Wren's shape.
        if e.code == 501 {
            e.message = format!(
                "{}; read and write it in idm's shape at config/connector/{name}",
                e.message
            );
        }
        e
    })?;
    Ok(connector_document(&connector, shape, name))
}

async fn write_connector(
    state: &RestState,
    caller: &Caller,
    shape: Shape,
    name: &str,
    body: &Value,
) -> Result<Value, RestError> {
    let mut configuration = body
        .as_object()
        .cloned()
        .ok_or_else(|| RestError::bad_request("a connector is a JSON object"))?;
    configuration.remove("_id");
    shape.check_body(name, &configuration)?;
    let connector_type = configuration
        .get("connectorType")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let stored = core_call!(
        state,
        caller,
        ConfigServiceClient.put_connector(PutConnectorRequest {
            connector: Some(Connector {
                name: format!("connectors/{name}"),
                connector_type: connector_type.clone(),
                configuration: Some(to_proto_struct(&configuration)),
            }),
        })
    )
    .await?;
    Ok(connector_document(&stored, shape, name))
}

/// A schedule as its conf document: what a read adds at runtime left out.
fn schedule_document(schedule: &Schedule) -> Value {
    let mut body = match job(schedule) {
        Value::Object(body) => body,
        _ => Map::new(),
    };
    for runtime in ["nextRunDate", "previousRunDate", "paused", "persisted"] {
        body.remove(runtime);
    }
    with_id(&format!("schedule/{}", schedule.id), body)
}

async fn sync_document(state: &RestState, caller: &Caller) -> Result<Value, RestError> {
    let listed = core_call!(
        state,
        caller,
        ConfigServiceClient.list_mappings(ListMappingsRequest {})
    )
    .await?;
    let mappings: Vec<Value> = listed
        .mappings
        .iter()
        .map(|m| {
            Value::Object(
                m.definition
                    .as_ref()
                    .map(from_proto_struct)
                    .unwrap_or_default(),
            )
        })
        .collect();
    Ok(json!({"_id": "sync", "mappings": mappings}))
}

async fn managed_document(state: &RestState, caller: &Caller) -> Result<Value, RestError> {
    let listed = core_call!(
        state,
        caller,
        ObjectServiceClient.list_object_types(ListObjectTypesRequest {})
    )
    .await?;
    let objects: Vec<Value> = listed
        .types
        .iter()
        .map(|t| Value::Object(t.schema.as_ref().map(from_proto_struct).unwrap_or_default()))
        .collect();
    Ok(json!({"_id": "managed", "objects": objects}))
}

async fn list(State(state): State<RestState>, caller: Caller) -> Result<Response, RestError> {
    let entry = |id: String, factory: Option<&str>| {
        let pid = id.replacen('/', ".", 1);
        json!({"_id": id, "pid": pid, "factoryPid": factory})
    };
    let mut configurations = vec![entry("sync".into(), None), entry("managed".into(), None)];
    let connectors = core_call!(
        &state,
        &caller,
        ConfigServiceClient.list_connectors(ListConnectorsRequest {})
    )
    .await?;
    for c in &connectors.connectors {
        let name = c.name.strip_prefix("connectors/").unwrap_or(&c.name);
        configurations.push(entry(
            format!("provisioner.openicf/{name}"),
            Some("provisioner.openicf"),
        ));
    }
    let schedules = core_call!(
        &state,
        &caller,
        ScheduleServiceClient.list_schedules(ListSchedulesRequest {})
    )
    .await?;
    for s in &schedules.schedules {
        configurations.push(entry(format!("schedule/{}", s.id), Some("schedule")));
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({"_id": "", "configurations": configurations}),
    ))
}

async fn read_one(
    State(state): State<RestState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Response, RestError> {
    let body = match name.as_str() {
        "sync" => sync_document(&state, &caller).await?,
        "managed" => managed_document(&state, &caller).await?,
        other => return Err(RestError::not_found(format!("config/{other} not found"))),
    };
    Ok(json_response(StatusCode::OK, &body))
}

async fn read_two(
    State(state): State<RestState>,
    caller: Caller,
    Path((kind, name)): Path<(String, String)>,
) -> Result<Response, RestError> {
    let name = plain(&name)?.to_string();
    if let Some(shape) = Shape::of(&kind) {
        let body = read_connector(&state, &caller, shape, &name).await?;
        return Ok(json_response(StatusCode::OK, &body));
    }
    let body = match kind.as_str() {
        "schedule" => {
            let schedule = core_call!(
                &state,
                &caller,
                ScheduleServiceClient.get_schedule(GetScheduleRequest {
                    name: format!("schedules/{name}"),
                })
            )
            .await?;
            schedule_document(&schedule)
        }
        other => {
            return Err(RestError::not_found(format!(
                "config/{other}/{name} not found"
            )));
        }
    };
    Ok(json_response(StatusCode::OK, &body))
}

async fn write_one(
    State(state): State<RestState>,
    caller: Caller,
    Path(name): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Response, RestError> {
    match name.as_str() {
        "sync" => {
            write_sync(&state, &caller, &body).await?;
            Ok(json_response(
                StatusCode::OK,
                &sync_document(&state, &caller).await?,
            ))
        }
        "managed" => Err(RestError::not_supported(
            "managed.json is read when idmd starts: edit the file and restart idmd",
        )),
        other => Err(RestError::not_found(format!("config/{other} not found"))),
    }
}

/// Every mapping of `{"mappings": […]}` written (`PutMapping`, the same checks
/// as at start-up), then the stored ones it does not name deleted.
async fn write_sync(state: &RestState, caller: &Caller, body: &Value) -> Result<(), RestError> {
    let mappings = body
        .get("mappings")
        .and_then(Value::as_array)
        .ok_or_else(|| RestError::bad_request("mappings: expected an array"))?;
    if mappings.len() > MAX_MAPPINGS {
        return Err(RestError::bad_request(format!(
            "mappings: at most {MAX_MAPPINGS}"
        )));
    }
    let mut kept = BTreeSet::new();
    for (at, mapping) in mappings.iter().enumerate() {
        let definition = mapping
            .as_object()
            .ok_or_else(|| RestError::bad_request(format!("mappings[{at}]: expected an object")))?;
        let name = definition
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty() && !n.contains('/'))
            .ok_or_else(|| RestError::bad_request(format!("mappings[{at}].name: required")))?
            .to_string();
        let full = format!("mappings/{name}");
        core_call!(
            state,
            caller,
            ConfigServiceClient.put_mapping(PutMappingRequest {
                mapping: Some(Mapping {
                    name: full.clone(),
                    definition: Some(to_proto_struct(definition)),
                    ..Default::default()
                }),
            })
        )
        .await
        .map_err(|mut e| {
            e.message = format!("mappings[{at}] ({name}): {}", e.message);
            e
        })?;
        kept.insert(full);
    }
    let stored = core_call!(
        state,
        caller,
        ConfigServiceClient.list_mappings(ListMappingsRequest {})
    )
    .await?;
    for old in stored.mappings.iter().filter(|m| !kept.contains(&m.name)) {
        core_call!(
            state,
            caller,
            ConfigServiceClient.delete_mapping(DeleteMappingRequest {
                name: old.name.clone(),
            })
        )
        .await?;
    }
    Ok(())
}

async fn write_two(
    State(state): State<RestState>,
    caller: Caller,
    Path((kind, name)): Path<(String, String)>,
    JsonBody(body): JsonBody,
) -> Result<Response, RestError> {
    let name = plain(&name)?.to_string();
    if let Some(shape) = Shape::of(&kind) {
        let stored = write_connector(&state, &caller, shape, &name, &body).await?;
        return Ok(json_response(StatusCode::OK, &stored));
    }
    match kind.as_str() {
        "schedule" => {
            let mut schedule = schedule_of(&body)?;
            let full = format!("schedules/{name}");
            let exists = match core_call!(
                &state,
                &caller,
                ScheduleServiceClient.get_schedule(GetScheduleRequest { name: full.clone() })
            )
            .await
            {
                Ok(_) => true,
                Err(e) if e.code == 404 => false,
                Err(e) => return Err(e),
            };
            let (status, stored) = if exists {
                schedule.name = full;
                let updated = core_call!(
                    &state,
                    &caller,
                    ScheduleServiceClient.update_schedule(UpdateScheduleRequest {
                        schedule: Some(schedule.clone()),
                    })
                )
                .await?;
                (StatusCode::OK, updated)
            } else {
                let created = core_call!(
                    &state,
                    &caller,
                    ScheduleServiceClient.create_schedule(CreateScheduleRequest {
                        schedule_id: name.clone(),
                        schedule: Some(schedule.clone()),
                    })
                )
                .await?;
                (StatusCode::CREATED, created)
            };
            Ok(json_response(status, &schedule_document(&stored)))
        }
        other => Err(RestError::not_found(format!(
            "config/{other}/{name} not found"
        ))),
    }
}
