//! Managed objects, `/openidm/managed/{type}[/{id}]`, as Wren serves them:
//! read (`_fields`), query (`query.rs`), create (`POST ?_action=create`,
//! `PUT` with `If-None-Match: *`), replace (`PUT`, `If-Match`), patch
//! (Wren's operations), delete; `_id`, `_rev` and the `ETag` revision;
//! relationship values as `{"_ref": …, "_refResourceCollection": …,
//! "_refResourceId": …, "_refProperties": {}}`.

pub mod query;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::header::{self, HeaderValue};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;
use idm_proto::v1::object_service_client::ObjectServiceClient;
use idm_proto::v1::{
    CreateObjectRequest, DeleteObjectRequest, GetObjectRequest, ManagedObject, PatchObjectRequest,
    PatchOperation, QueryObjectsRequest, ReplaceObjectRequest,
};
use prost_types::FieldMask;
use serde_json::{Map, Value};
use tonic::Code;

use self::query::Query;
use super::query_filter::is_name;
use super::{Caller, JsonBody, Params, RestError, RestState, core_call, json_response};

/// The most patch operations in one request.
const MAX_PATCH_OPERATIONS: usize = 1000;
/// The most objects an unpaged query returns; past it, ask for pages.
const MAX_UNPAGED: usize = 10_000;

pub fn routes() -> Router<RestState> {
    Router::new()
        .route("/managed/{type}", get(query).post(create))
        .route(
            "/managed/{type}/{id}",
            get(read)
                .put(put)
                .patch(patch)
                .delete(delete)
                .post(action_on_object),
        )
}

pub(crate) fn collection(object_type: &str) -> Result<String, RestError> {
    if !is_name(object_type) {
        return Err(RestError::not_found(format!(
            "managed/{object_type} is not a managed object type"
        )));
    }
    Ok(format!("managed/{object_type}"))
}

pub(crate) fn object_name(object_type: &str, id: &str) -> Result<String, RestError> {
    let collection = collection(object_type)?;
    if id.is_empty() || id.len() > 255 || id.contains('/') || id.chars().any(char::is_control) {
        return Err(RestError::bad_request(format!(
            "{id:?} is not an object id"
        )));
    }
    Ok(format!("{collection}/{id}"))
}

fn mask(fields: &[String]) -> Option<FieldMask> {
    (!fields.is_empty()).then(|| FieldMask {
        paths: fields.to_vec(),
    })
}

/// An object as Wren shows it: `_id`, `_rev`, the attributes, `_meta`
/// (unless `_fields` leaves it out), references decorated.
pub fn wren_object(object: &ManagedObject, fields: &[String]) -> Value {
    let mut json = idm_proto::json::object_to_wren_json(object);
    if let Some(map) = json.as_object_mut() {
        if !fields.is_empty() && !fields.iter().any(|f| f == "_meta") {
            map.remove("_meta");
        }
        for value in map.values_mut() {
            match value {
                Value::Array(items) => items.iter_mut().for_each(decorate_reference),
                other => decorate_reference(other),
            }
        }
    }
    json
}

/// `{"_ref": "managed/user/x"}` → Wren's relationship object.
fn decorate_reference(value: &mut Value) {
    let Some(map) = value.as_object_mut() else {
        return;
    };
    if map.len() != 1 {
        return;
    }
    let Some((collection, id)) = map
        .get("_ref")
        .and_then(Value::as_str)
        .and_then(|r| r.rsplit_once('/'))
        .map(|(c, i)| (c.to_string(), i.to_string()))
    else {
        return;
    };
    map.insert("_refResourceCollection".into(), collection.into());
    map.insert("_refResourceId".into(), id.into());
    map.insert("_refProperties".into(), Value::Object(Map::new()));
}

/// The attributes of a request body: an object, without `_id`, `_rev` and
/// `_meta` (the path and `If-Match` say those).
pub(crate) fn attributes(body: Value) -> Result<Map<String, Value>, RestError> {
    let Value::Object(mut map) = body else {
        return Err(RestError::bad_request("the body must be a JSON object"));
    };
    for reserved in ["_id", "_rev", "_meta"] {
        map.remove(reserved);
    }
    Ok(map)
}

/// `ETag: "<rev>"` on a single object's reply.
fn object_response(status: StatusCode, object: &ManagedObject, fields: &[String]) -> Response {
    let mut response = json_response(status, &wren_object(object, fields));
    if let Ok(etag) = HeaderValue::from_str(&format!("\"{}\"", object.revision)) {
        response.headers_mut().insert(header::ETAG, etag);
    }
    response
}

/// `If-Match`: `None` without one or with `*`; else the one revision.
fn if_match(headers: &HeaderMap) -> Result<Option<i64>, RestError> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| RestError::bad_request("If-Match is not ASCII"))?
        .trim();
    if text == "*" {
        return Ok(None);
    }
    let tag = text.trim_start_matches("W/").trim_matches('"');
    tag.parse::<i64>()
        .map(Some)
        .map_err(|_| RestError::precondition_failed(format!("If-Match {text}: no such revision")))
}

async fn read(
    State(state): State<RestState>,
    caller: Caller,
    Path((object_type, id)): Path<(String, String)>,
    params: Params,
) -> Result<Response, RestError> {
    let name = object_name(&object_type, &id)?;
    let fields = query::fields(params.get("_fields"))?;
    let object = core_call!(
        &state,
        &caller,
        ObjectServiceClient.get_object(GetObjectRequest {
            name: name.clone(),
            read_mask: mask(&fields),
        })
    )
    .await?;
    Ok(object_response(StatusCode::OK, &object, &fields))
}

async fn query(
    State(state): State<RestState>,
    caller: Caller,
    Path(object_type): Path<String>,
    params: Params,
) -> Result<Response, RestError> {
    let parent = collection(&object_type)?;
    let query = Query::from_params(&params, state.limits.max_page_size)?;
    let Some(filter) = query.selection.core_filter() else {
        return Ok(json_response(
            StatusCode::OK,
            &query::reply(Vec::new(), None, query.count_policy, Some(0)),
        ));
    };
    let page_size = query
        .page_size
        .unwrap_or(u32::try_from(state.limits.max_page_size).unwrap_or(1000));
    let mut result = Vec::new();
    let mut cookie = query.cookie.clone();
    let total = loop {
        let request = QueryObjectsRequest {
            parent: parent.clone(),
            filter: filter.clone(),
            order_by: query.order_by.clone(),
            page_size: i32::try_from(page_size).unwrap_or(i32::MAX),
            page_token: cookie.clone(),
            offset: i32::try_from(query.offset).unwrap_or(i32::MAX),
            read_mask: mask(&query.fields),
            estimate_total: false,
        };
        let page = core_call!(
            &state,
            &caller,
            ObjectServiceClient.query_objects(request.clone())
        )
        .await?;
        result.extend(page.objects.iter().map(|o| wren_object(o, &query.fields)));
        cookie = page.next_page_token;
        if query.page_size.is_some() || cookie.is_empty() {
            break u64::try_from(page.total_size).unwrap_or_default();
        }
        if result.len() >= MAX_UNPAGED {
            return Err(RestError::bad_request(format!(
                "more than {MAX_UNPAGED} objects match: page with _pageSize"
            )));
        }
    };
    let cookie = (!cookie.is_empty()).then_some(cookie);
    Ok(json_response(
        StatusCode::OK,
        &query::reply(result, cookie, query.count_policy, Some(total)),
    ))
}

/// `POST /managed/{type}?_action=create` (or no `_action`): the id is the
/// body's `_id` or `?_id=`, else generated.
async fn create(
    State(state): State<RestState>,
    caller: Caller,
    Path(object_type): Path<String>,
    params: Params,
    JsonBody(body): JsonBody,
) -> Result<Response, RestError> {
    let parent = collection(&object_type)?;
    match params.get("_action").unwrap_or("create") {
        "create" => {}
        other => return Err(RestError::unknown_action(other)),
    }
    let id = body
        .get("_id")
        .and_then(Value::as_str)
        .or(params.get("_id"))
        .unwrap_or_default()
        .to_string();
    if !id.is_empty() {
        object_name(&object_type, &id)?;
    }
    let object = create_object(&state, &caller, parent, id, attributes(body)?).await?;
    Ok(object_response(StatusCode::CREATED, &object, &[]))
}

async fn create_object(
    state: &RestState,
    caller: &Caller,
    parent: String,
    object_id: String,
    attributes: Map<String, Value>,
) -> Result<ManagedObject, RestError> {
    let attributes = idm_proto::json::to_proto_struct(&attributes);
    core_call!(
        state,
        caller,
        ObjectServiceClient.create_object(CreateObjectRequest {
            parent: parent.clone(),
            object_id: object_id.clone(),
            attributes: Some(attributes.clone()),
        })
    )
    .await
}

/// `PUT`: with `If-None-Match: *` a create at this id (412 if it exists);
/// with `If-Match` a replace at that revision (`*`: any); with neither, a
/// replace, or a create if there is no such object.
async fn put(
    State(state): State<RestState>,
    caller: Caller,
    Path((object_type, id)): Path<(String, String)>,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> Result<Response, RestError> {
    let name = object_name(&object_type, &id)?;
    let attributes = attributes(body)?;
    if let Some(value) = headers.get(header::IF_NONE_MATCH) {
        if value.as_bytes() != b"*" {
            return Err(RestError::bad_request("If-None-Match supports only *"));
        }
        let object =
            create_object(&state, &caller, collection(&object_type)?, id, attributes).await?;
        return Ok(object_response(StatusCode::CREATED, &object, &[]));
    }
    let expected_revision = if_match(&headers)?;
    let proto = idm_proto::json::to_proto_struct(&attributes);
    let replaced = core_call!(
        &state,
        &caller,
        ObjectServiceClient.replace_object(ReplaceObjectRequest {
            name: name.clone(),
            attributes: Some(proto.clone()),
            expected_revision,
        })
    )
    .await;
    match replaced {
        Ok(object) => Ok(object_response(StatusCode::OK, &object, &[])),
        Err(e) if e.code == 404 && !headers.contains_key(header::IF_MATCH) => {
            let object =
                create_object(&state, &caller, collection(&object_type)?, id, attributes).await?;
            Ok(object_response(StatusCode::CREATED, &object, &[]))
        }
        Err(e) => Err(e),
    }
}

/// Wren's patch operations: `[{"operation": "replace", "field": "/sn",
/// "value": …}, …]` (`add`, `remove`, `replace`, `increment`), and
/// `{"operation": "copy", "from": "/a", "field": "/b"}` (`copy`, `move`).
fn patch_operations(body: Value) -> Result<Vec<PatchOperation>, RestError> {
    let Value::Array(items) = body else {
        return Err(RestError::bad_request(
            "a patch is an array of operations [{\"operation\", \"field\", \"value\"}]",
        ));
    };
    if items.len() > MAX_PATCH_OPERATIONS {
        return Err(RestError::bad_request(format!(
            "more than {MAX_PATCH_OPERATIONS} patch operations"
        )));
    }
    items
        .into_iter()
        .map(|item| {
            let text = |key: &str| item.get(key).and_then(Value::as_str).map(str::to_string);
            let operation = text("operation")
                .ok_or_else(|| RestError::bad_request("a patch operation needs \"operation\""))?;
            check_patch_operation(&operation)?;
            let field = text("field")
                .ok_or_else(|| RestError::bad_request("a patch operation needs \"field\""))?;
            Ok(PatchOperation {
                operation,
                field,
                value: item.get("value").map(idm_proto::json::to_proto_value),
                from: text("from").unwrap_or_default(),
            })
        })
        .collect()
}

fn check_patch_operation(operation: &str) -> Result<(), RestError> {
    const SUPPORTED: &str = "add, remove, replace, increment, copy, move";
    match operation {
        "add" | "remove" | "replace" | "increment" | "copy" | "move" => Ok(()),
        "transform" => Err(RestError::bad_request(format!(
            "patch operation \"transform\" is not supported: it runs a script, and idm runs \
             no scripts in a patch ({SUPPORTED})"
        ))),
        other => Err(RestError::bad_request(format!(
            "patch operation {other:?} is not supported ({SUPPORTED})"
        ))),
    }
}

async fn patch(
    State(state): State<RestState>,
    caller: Caller,
    Path((object_type, id)): Path<(String, String)>,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> Result<Response, RestError> {
    let name = object_name(&object_type, &id)?;
    let operations = patch_operations(body)?;
    let expected_revision = if_match(&headers)?;
    patch_object(&state, &caller, name, operations, expected_revision).await
}

async fn patch_object(
    state: &RestState,
    caller: &Caller,
    name: String,
    operations: Vec<PatchOperation>,
    expected_revision: Option<i64>,
) -> Result<Response, RestError> {
    let object = core_call!(
        state,
        caller,
        ObjectServiceClient.patch_object(PatchObjectRequest {
            name: name.clone(),
            operations: operations.clone(),
            expected_revision,
        })
    )
    .await?;
    Ok(object_response(StatusCode::OK, &object, &[]))
}

/// `POST /managed/{type}/{id}?_action=patch`: the same as `PATCH`.
async fn action_on_object(
    State(state): State<RestState>,
    caller: Caller,
    Path((object_type, id)): Path<(String, String)>,
    params: Params,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> Result<Response, RestError> {
    let name = object_name(&object_type, &id)?;
    match params.action()? {
        "patch" => {
            let operations = patch_operations(body)?;
            patch_object(&state, &caller, name, operations, if_match(&headers)?).await
        }
        other => Err(RestError::unknown_action(other)),
    }
}

/// Answers the object as it was; 404 if there was none.
async fn delete(
    State(state): State<RestState>,
    caller: Caller,
    Path((object_type, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, RestError> {
    let name = object_name(&object_type, &id)?;
    let expected_revision = if_match(&headers)?;
    let deleted = core_call!(
        &state,
        &caller,
        ObjectServiceClient.delete_object(DeleteObjectRequest {
            name: name.clone(),
            expected_revision,
        })
    )
    .await?;
    match deleted.object {
        Some(object) if deleted.existed => Ok(object_response(StatusCode::OK, &object, &[])),
        _ => Err(RestError::from(tonic::Status::new(
            Code::NotFound,
            format!("{name} not found"),
        ))),
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;
    use serde_json::json;

    use super::*;

    #[test]
    fn references_look_like_wrens() {
        let object = ManagedObject {
            id: "admins".into(),
            revision: 3,
            attributes: Some(idm_proto::json::to_proto_struct(
                json!({"name": "admins", "members": [{"_ref": "managed/user/bjensen"}]})
                    .as_object()
                    .unwrap(),
            )),
            ..Default::default()
        };
        assert_eq!(
            wren_object(&object, &[]),
            json!({"_id": "admins", "_rev": "3", "name": "admins", "members": [{
                "_ref": "managed/user/bjensen", "_refResourceCollection": "managed/user",
                "_refResourceId": "bjensen", "_refProperties": {}}]})
        );
    }

    #[test]
    fn if_match_takes_wrens_and_weak_etags() {
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::IF_MATCH, HeaderValue::from_str(value).unwrap());
            if_match(&headers)
        };
        assert_eq!(if_match(&HeaderMap::new()).unwrap(), None);
        assert_eq!(with("*").unwrap(), None);
        assert_eq!(with("\"4\"").unwrap(), Some(4));
        assert_eq!(with("W/\"4\"").unwrap(), Some(4));
        assert_eq!(with("4").unwrap(), Some(4));
        assert_eq!(with("\"abc\"").unwrap_err().code, 412);
    }

    #[test]
    fn patch_operations_are_checked() {
        let ops = patch_operations(json!([
            {"operation": "replace", "field": "/sn", "value": "Jensen"},
            {"operation": "remove", "field": "/mail"},
            {"operation": "move", "from": "/a", "field": "/b"}
        ]))
        .unwrap();
        assert_eq!(ops.len(), 3);
        assert!(ops[1].value.is_none());
        assert_eq!((ops[2].from.as_str(), ops[2].field.as_str()), ("/a", "/b"));
        let transform = patch_operations(json!([
            {"operation": "transform", "field": "/a", "value": {"script": {}}}
        ]))
        .unwrap_err();
        assert!(
            transform.message.contains("runs a script"),
            "{}",
            transform.message
        );
        for bad in [
            json!({"operation": "replace"}),
            json!([{"operation": "frobnicate", "field": "/a"}]),
            json!([{"field": "/a"}]),
            json!([{"operation": "add"}]),
        ] {
            assert_eq!(patch_operations(bad).unwrap_err().code, 400);
        }
        let many = Value::Array(vec![
            json!({"operation": "add", "field": "/a", "value": 1});
            1001
        ]);
        assert_eq!(patch_operations(many).unwrap_err().code, 400);
    }

    #[test]
    fn names_are_checked() {
        assert_eq!(
            object_name("user", "bjensen").unwrap(),
            "managed/user/bjensen"
        );
        assert_eq!(object_name("us er", "x").unwrap_err().code, 404);
        assert_eq!(object_name("user", "a/b").unwrap_err().code, 400);
        assert_eq!(object_name("user", "").unwrap_err().code, 400);
    }
}
