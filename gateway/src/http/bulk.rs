//! `POST /Bulk` (RFC 7644 §3.7): operations run one by one through the same
//! service calls as the single-resource endpoints. `bulkId:<id>` anywhere in
//! an operation's data or path stands for the resource another operation of
//! the request creates; an operation waits until the ones it refers to ran,
//! whatever their order. `failOnErrors` stops the run after that many errors.

use std::collections::HashMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::Value;

use super::{Caller, ScimBody, Shared, scim_response};
use crate::scim::error::ScimError;
use crate::scim::messages::{
    BulkOperation, BulkOperationResult, BulkRequest, BulkResponse, ErrorBody, PatchRequest,
};
use crate::scim::schema::Kind;
use crate::scim::urn;
use crate::service::{Precondition, Resource};

const BULK_ID: &str = "bulkId:";

pub async fn bulk(
    State(app): State<Shared>,
    caller: Caller,
    body: ScimBody,
) -> Result<Response, ScimError> {
    let request: BulkRequest = serde_json::from_value(body.0)
        .map_err(|e| ScimError::invalid_syntax(format!("BulkRequest: {e}")))?;
    let limit = app.scim.limits.bulk_max_operations;
    if request.operations.len() > limit {
        return Err(ScimError::payload_too_large(format!(
            "{} operations; the maximum is {limit}",
            request.operations.len()
        )));
    }
    let fail_on_errors = request.fail_on_errors.map(|n| n.0).filter(|n| *n > 0);
    let declared: Vec<&str> = request
        .operations
        .iter()
        .filter_map(|o| o.bulk_id.as_deref())
        .collect();
    let mut created: HashMap<String, String> = HashMap::new();
    let mut results: Vec<Option<BulkOperationResult>> =
        request.operations.iter().map(|_| None).collect();
    let mut pending: Vec<usize> = (0..request.operations.len()).collect();
    let mut errors = 0;
    'passes: while !pending.is_empty() {
        let mut progressed = false;
        let mut waiting = Vec::new();
        for index in pending {
            let operation = &request.operations[index];
            let refs = references(operation);
            let result =
                if let Some(undeclared) = refs.iter().find(|r| !declared.contains(&r.as_str())) {
                    Err(ScimError::invalid_value(format!(
                        "bulkId:{undeclared} is not the bulkId of any operation"
                    )))
                } else if refs.iter().any(|r| !created.contains_key(r)) {
                    if refs
                        .iter()
                        .any(|r| failed(&request.operations, &results, r))
                    {
                        Err(ScimError::new(
                            409,
                            Some(crate::scim::error::ScimType::InvalidValue),
                            "an operation it refers to by bulkId failed",
                        ))
                    } else {
                        waiting.push(index);
                        continue;
                    }
                } else {
                    run(&app, &caller, operation, &created).await
                };
            progressed = true;
            let outcome = match result {
                Ok((status, resource)) => {
                    if let (Some(bulk_id), Some(resource)) = (&operation.bulk_id, &resource) {
                        created.insert(bulk_id.clone(), resource.id.clone());
                    }
                    success(operation, status, resource.as_ref())
                }
                Err(error) => {
                    errors += 1;
                    failure(operation, &error)
                }
            };
            results[index] = Some(outcome);
            if fail_on_errors.is_some_and(|limit| errors >= limit) {
                break 'passes;
            }
        }
        if !progressed {
            for index in waiting {
                results[index] = Some(failure(
                    &request.operations[index],
                    &ScimError::new(
                        409,
                        Some(crate::scim::error::ScimType::InvalidValue),
                        "circular bulkId references",
                    ),
                ));
            }
            break;
        }
        pending = waiting;
    }
    Ok(scim_response(
        StatusCode::OK,
        &BulkResponse {
            schemas: [urn::BULK_RESPONSE],
            operations: results.into_iter().flatten().collect(),
        },
    ))
}

/// Whether the operation that declares `bulk_id` ran and failed.
fn failed(
    operations: &[BulkOperation],
    results: &[Option<BulkOperationResult>],
    bulk_id: &str,
) -> bool {
    operations.iter().zip(results).any(|(operation, result)| {
        operation.bulk_id.as_deref() == Some(bulk_id)
            && result.as_ref().is_some_and(|r| !r.status.starts_with('2'))
    })
}

async fn run(
    app: &Shared,
    caller: &Caller,
    operation: &BulkOperation,
    created: &HashMap<String, String>,
) -> Result<(StatusCode, Option<Resource>), ScimError> {
    let path = substitute_text(&operation.path, created);
    let data = operation.data.clone().map(|d| substitute(d, created));
    let (kind, id) = target(&path)?;
    let scim = &app.scim;
    let base = &caller.base;
    let version = operation.version.as_deref().map(Precondition::parse);
    let data_or_error = || {
        data.clone().ok_or_else(|| {
            ScimError::invalid_syntax(format!("{} {path} needs data", operation.method))
        })
    };
    let method = operation.method.to_ascii_uppercase();
    match (method.as_str(), id) {
        ("POST", None) => {
            if operation.bulk_id.is_none() {
                return Err(ScimError::invalid_value(
                    "a POST in a bulk request needs a bulkId",
                ));
            }
            let resource = scim
                .create(&caller.bearer, kind, &data_or_error()?, base)
                .await?;
            Ok((StatusCode::CREATED, Some(resource)))
        }
        ("PUT", Some(id)) => {
            let resource = scim
                .replace(
                    &caller.bearer,
                    kind,
                    id,
                    &data_or_error()?,
                    version.as_ref(),
                    base,
                )
                .await?;
            Ok((StatusCode::OK, Some(resource)))
        }
        ("PATCH", Some(id)) => {
            let patch: PatchRequest = serde_json::from_value(data_or_error()?)
                .map_err(|e| ScimError::invalid_syntax(format!("PatchOp: {e}")))?;
            let resource = scim
                .patch(&caller.bearer, kind, id, &patch, version.as_ref(), base)
                .await?;
            Ok((StatusCode::OK, Some(resource)))
        }
        ("DELETE", Some(id)) => {
            scim.delete(&caller.bearer, kind, id, version.as_ref())
                .await?;
            Ok((StatusCode::NO_CONTENT, None))
        }
        _ => Err(ScimError::invalid_syntax(format!(
            "{} {path}: expected POST /Users, or PUT, PATCH or DELETE /Users/<id> (or /Groups)",
            operation.method
        ))),
    }
}

/// `/Users` or `/Groups/<id>`.
fn target(path: &str) -> Result<(Kind, Option<&str>), ScimError> {
    let trimmed = path.trim_start_matches('/');
    let (collection, id) = match trimmed.split_once('/') {
        Some((collection, id)) => (collection, Some(id)),
        None => (trimmed, None),
    };
    let kind = Kind::ALL
        .into_iter()
        .find(|k| {
            k.endpoint()
                .trim_start_matches('/')
                .eq_ignore_ascii_case(collection)
        })
        .ok_or_else(|| ScimError::invalid_path(format!("{path} is not /Users or /Groups")))?;
    Ok((kind, id.filter(|i| !i.is_empty())))
}

/// Every `bulkId:<id>` an operation names.
fn references(operation: &BulkOperation) -> Vec<String> {
    fn walk(value: &Value, into: &mut Vec<String>) {
        match value {
            Value::String(s) => {
                if let Some(id) = s.strip_prefix(BULK_ID) {
                    into.push(id.to_string());
                }
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, into)),
            Value::Object(map) => map.values().for_each(|v| walk(v, into)),
            _ => {}
        }
    }
    let mut refs = Vec::new();
    if let Some(data) = &operation.data {
        walk(data, &mut refs);
    }
    if let Some((_, id)) = operation.path.split_once(BULK_ID) {
        refs.push(id.to_string());
    }
    refs
}

fn substitute(value: Value, created: &HashMap<String, String>) -> Value {
    match value {
        Value::String(s) => Value::String(substitute_text(&s, created)),
        Value::Array(items) => {
            Value::Array(items.into_iter().map(|v| substitute(v, created)).collect())
        }
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (k, substitute(v, created)))
                .collect(),
        ),
        other => other,
    }
}

fn substitute_text(text: &str, created: &HashMap<String, String>) -> String {
    match text.split_once(BULK_ID) {
        Some((head, id)) => match created.get(id) {
            Some(real) => format!("{head}{real}"),
            None => text.to_string(),
        },
        None => text.to_string(),
    }
}

fn success(
    operation: &BulkOperation,
    status: StatusCode,
    resource: Option<&Resource>,
) -> BulkOperationResult {
    BulkOperationResult {
        method: operation.method.clone(),
        bulk_id: operation.bulk_id.clone(),
        version: resource.map(Resource::etag),
        location: resource.and_then(|r| r.location()).map(str::to_string),
        status: status.as_u16().to_string(),
        response: None,
    }
}

fn failure(operation: &BulkOperation, error: &ScimError) -> BulkOperationResult {
    BulkOperationResult {
        method: operation.method.clone(),
        bulk_id: operation.bulk_id.clone(),
        version: None,
        location: None,
        status: error.status.to_string(),
        response: serde_json::to_value(ErrorBody::from(error)).ok(),
    }
}
