//! `/Users` and `/Groups` (the `{resource}` segment): list, search, read,
//! create, replace, patch, delete. Each handler decodes, calls the service,
//! encodes.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};

use super::{Caller, ScimBody, Shared, scim_response};
use crate::scim::error::ScimError;
use crate::scim::messages::{ListRequest, ListResponse, PatchRequest};
use crate::scim::project::Projection;
use crate::scim::schema::Kind;
use crate::service::{Precondition, Resource};

type Params = Result<Query<Vec<(String, String)>>, QueryRejection>;

fn params(query: Params) -> Result<Vec<(String, String)>, ScimError> {
    query
        .map(|Query(pairs)| pairs)
        .map_err(|e| ScimError::invalid_value(format!("query string: {e}")))
}

fn precondition(headers: &HeaderMap, name: header::HeaderName) -> Option<Precondition> {
    headers
        .get(name)
        .and_then(|h| h.to_str().ok())
        .map(Precondition::parse)
}

/// A resource with its `ETag` (and `Location` on 201), projected as asked.
fn resource_response(
    app: &Shared,
    status: StatusCode,
    resource: Resource,
    query: &[(String, String)],
) -> Result<Response, ScimError> {
    let (attributes, excluded) = ListRequest::projection(query)?;
    let resource_type = app.scim.registry.resource_type(resource.kind);
    let projection = Projection::new(resource_type, &attributes, &excluded);
    let etag = resource.etag();
    let location = resource.location().map(str::to_string);
    let body = resource.projected(&app.scim.registry, &projection)?;
    let mut response = scim_response(status, &body);
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, value);
    }
    if status == StatusCode::CREATED
        && let Some(location) = location.and_then(|l| HeaderValue::from_str(&l).ok())
    {
        headers.insert(header::LOCATION, location);
    }
    Ok(response)
}

/// The `{resource}` segment: `Users` or `Groups`.
fn kind(segment: &str) -> Result<Kind, ScimError> {
    Kind::ALL
        .into_iter()
        .find(|k| k.endpoint()[1..].eq_ignore_ascii_case(segment))
        .ok_or_else(|| ScimError::not_found(format!("no resource type is served at /{segment}")))
}

async fn list_of(
    app: Shared,
    caller: Caller,
    kinds: &[Kind],
    request: ListRequest,
) -> Result<Response, ScimError> {
    let listing = app
        .scim
        .list(&caller.bearer, kinds, &request, &caller.base)
        .await?;
    // One projection a resource type, not one a resource.
    let projections: Vec<(Kind, Projection)> = kinds
        .iter()
        .map(|&kind| {
            let resource_type = app.scim.registry.resource_type(kind);
            let projection = Projection::new(
                resource_type,
                &request.attributes,
                &request.excluded_attributes,
            );
            (kind, projection)
        })
        .collect();
    let resources = listing
        .resources
        .into_iter()
        .map(|resource| {
            let projection = projections
                .iter()
                .find(|(kind, _)| *kind == resource.kind)
                .map(|(_, projection)| projection)
                .ok_or_else(|| ScimError::internal("a resource of a type not listed"))?;
            resource.projected(&app.scim.registry, projection)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(scim_response(
        StatusCode::OK,
        &ListResponse::new(listing.total, listing.start_index, resources),
    ))
}

pub async fn list(
    State(app): State<Shared>,
    caller: Caller,
    Path(resource): Path<String>,
    query: Params,
) -> Result<Response, ScimError> {
    let kind = kind(&resource)?;
    list_of(
        app,
        caller,
        &[kind],
        ListRequest::from_query(&params(query)?)?,
    )
    .await
}

pub async fn search(
    State(app): State<Shared>,
    caller: Caller,
    Path(resource): Path<String>,
    body: ScimBody,
) -> Result<Response, ScimError> {
    let kind = kind(&resource)?;
    list_of(app, caller, &[kind], ListRequest::from_search(body.0)?).await
}

/// `POST /.search`: every resource type, users first.
pub async fn search_all(
    State(app): State<Shared>,
    caller: Caller,
    body: ScimBody,
) -> Result<Response, ScimError> {
    list_of(app, caller, &Kind::ALL, ListRequest::from_search(body.0)?).await
}

pub async fn get_one(
    State(app): State<Shared>,
    caller: Caller,
    Path((resource, id)): Path<(String, String)>,
    headers: HeaderMap,
    query: Params,
) -> Result<Response, ScimError> {
    let kind = kind(&resource)?;
    let query = params(query)?;
    let resource = app
        .scim
        .get(&caller.bearer, kind, &id, &caller.base)
        .await?;
    if let Some(none_match) = precondition(&headers, header::IF_NONE_MATCH)
        && none_match.matches(resource.revision)
    {
        let mut response = StatusCode::NOT_MODIFIED.into_response();
        if let Ok(value) = HeaderValue::from_str(&resource.etag()) {
            response.headers_mut().insert(header::ETAG, value);
        }
        return Ok(response);
    }
    resource_response(&app, StatusCode::OK, resource, &query)
}

pub async fn create(
    State(app): State<Shared>,
    caller: Caller,
    Path(resource): Path<String>,
    query: Params,
    body: ScimBody,
) -> Result<Response, ScimError> {
    let kind = kind(&resource)?;
    let query = params(query)?;
    let resource = app
        .scim
        .create(&caller.bearer, kind, &body.0, &caller.base)
        .await?;
    resource_response(&app, StatusCode::CREATED, resource, &query)
}

pub async fn replace(
    State(app): State<Shared>,
    caller: Caller,
    Path((resource, id)): Path<(String, String)>,
    headers: HeaderMap,
    query: Params,
    body: ScimBody,
) -> Result<Response, ScimError> {
    let kind = kind(&resource)?;
    let query = params(query)?;
    let if_match = precondition(&headers, header::IF_MATCH);
    let resource = app
        .scim
        .replace(
            &caller.bearer,
            kind,
            &id,
            &body.0,
            if_match.as_ref(),
            &caller.base,
        )
        .await?;
    resource_response(&app, StatusCode::OK, resource, &query)
}

pub async fn patch(
    State(app): State<Shared>,
    caller: Caller,
    Path((resource, id)): Path<(String, String)>,
    headers: HeaderMap,
    query: Params,
    body: ScimBody,
) -> Result<Response, ScimError> {
    let kind = kind(&resource)?;
    let query = params(query)?;
    let request: PatchRequest = serde_json::from_value(body.0)
        .map_err(|e| ScimError::invalid_syntax(format!("PatchOp: {e}")))?;
    let if_match = precondition(&headers, header::IF_MATCH);
    let resource = app
        .scim
        .patch(
            &caller.bearer,
            kind,
            &id,
            &request,
            if_match.as_ref(),
            &caller.base,
        )
        .await?;
    resource_response(&app, StatusCode::OK, resource, &query)
}

pub async fn delete(
    State(app): State<Shared>,
    caller: Caller,
    Path((resource, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ScimError> {
    let kind = kind(&resource)?;
    let if_match = precondition(&headers, header::IF_MATCH);
    app.scim
        .delete(&caller.bearer, kind, &id, if_match.as_ref())
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
