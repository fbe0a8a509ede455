//! `POST /openidm/policy/managed/{type}[/{id}]?_action=validateObject` (and
//! `validateProperty`): Wren's policy service, answered by the core's
//! `ValidateObject`, which checks what a write would check and writes nothing.
//! The id `*` (or none) checks a new object.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::post;
use idm_proto::json::{from_proto_struct, to_proto_struct};
use idm_proto::v1::object_service_client::ObjectServiceClient;
use idm_proto::v1::{ValidateObjectRequest, ValidateObjectResponse};
use serde_json::{Value, json};

use super::managed::{attributes, collection, object_name};
use super::{Caller, JsonBody, Params, RestError, RestState, core_call, json_response};

pub fn routes() -> Router<RestState> {
    Router::new()
        .route("/policy/managed/{object_type}", post(validate_new))
        .route("/policy/managed/{object_type}/{id}", post(validate))
}

async fn validate_new(
    State(state): State<RestState>,
    caller: Caller,
    Path(object_type): Path<String>,
    params: Params,
    body: JsonBody,
) -> Result<Response, RestError> {
    let name = collection(&object_type)?;
    answer(state, caller, name, params, body).await
}

async fn validate(
    State(state): State<RestState>,
    caller: Caller,
    Path((object_type, id)): Path<(String, String)>,
    params: Params,
    body: JsonBody,
) -> Result<Response, RestError> {
    let name = if id == "*" {
        collection(&object_type)?
    } else {
        object_name(&object_type, &id)?
    };
    answer(state, caller, name, params, body).await
}

async fn answer(
    state: RestState,
    caller: Caller,
    name: String,
    params: Params,
    JsonBody(body): JsonBody,
) -> Result<Response, RestError> {
    let properties_only = match params.action()? {
        "validateObject" => false,
        "validateProperty" => true,
        other => return Err(RestError::unknown_action(other)),
    };
    let attributes = to_proto_struct(&attributes(body)?);
    let verdict = core_call!(
        &state,
        &caller,
        ObjectServiceClient.validate_object(ValidateObjectRequest {
            name: name.clone(),
            attributes: Some(attributes.clone()),
            properties_only,
        })
    )
    .await?;
    Ok(json_response(StatusCode::OK, &wren_verdict(&verdict)))
}

/// `{"result": false, "failedPolicyRequirements": [{"property", "policyRequirements"}]}`.
fn wren_verdict(verdict: &ValidateObjectResponse) -> Value {
    let failed: Vec<Value> = verdict
        .failed_policy_requirements
        .iter()
        .map(|failure| {
            let requirements: Vec<Value> = failure
                .policy_requirements
                .iter()
                .map(|r| Value::Object(from_proto_struct(r)))
                .collect();
            json!({"property": failure.property, "policyRequirements": requirements})
        })
        .collect();
    json!({"result": verdict.result, "failedPolicyRequirements": failed})
}
