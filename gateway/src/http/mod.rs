//! HTTP: the routes under `/scim/v2` (and `/openidm`, from `rest/`), the bearer and body extractors, and the
//! one place a `ScimError` becomes a response.

pub mod body;
mod bulk;
pub mod origin;
mod resources;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, MatchedPath, Request};
use axum::http::header::{self, HeaderName, HeaderValue};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::Value;
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::timeout::RequestBodyTimeoutLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;

use self::body::BodyRefused;
use self::origin::{Origin, Scheme};
use crate::core::Bearer;
use crate::scim::CONTENT_TYPE;
use crate::scim::discovery;
use crate::scim::error::ScimError;
use crate::scim::messages::ErrorBody;
use crate::scim::schema::Kind;
use crate::service::Scim;

/// What every handler shares.
pub struct App {
    pub scim: Scim,
    /// How the gateway is reached, for the base URL of `Location` and
    /// `meta.location`: `--public-url`, else the request's scheme and the
    /// listen address. Never a request's `Host` (the client's to forge, and
    /// it would be echoed into `Location` and `meta.location`).
    pub origin: Origin,
    /// Wren's REST API, served at `/openidm`.
    pub rest: crate::rest::RestState,
    /// The web console, served at `/admin`.
    pub console: crate::console::ConsoleState,
}

pub type Shared = Arc<App>;

pub fn router(app: App) -> Router {
    let body_limit = app.scim.limits.bulk_max_payload;
    let rest = crate::rest::router(app.rest.clone());
    let console = crate::console::router(app.console.clone());
    let health = crate::health::route(Arc::new(crate::health::CoreHealth::new(
        app.scim.core.channel(),
    )));
    let app = Arc::new(app);
    let scim = Router::new()
        .route("/{resource}", get(resources::list).post(resources::create))
        .route("/{resource}/.search", post(resources::search))
        .route(
            "/{resource}/{id}",
            get(resources::get_one)
                .put(resources::replace)
                .patch(resources::patch)
                .delete(resources::delete),
        )
        .route("/.search", post(resources::search_all))
        .route("/Bulk", post(bulk::bulk))
        .route("/Me", axum::routing::any(me))
        .route("/Me/{*rest}", axum::routing::any(me))
        .route("/ServiceProviderConfig", get(service_provider_config))
        .route("/ResourceTypes", get(resource_types))
        .route("/ResourceTypes/{id}", get(resource_type))
        .route("/Schemas", get(schemas))
        .route("/Schemas/{id}", get(schema))
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .layer(axum::middleware::from_fn(crate::metrics::mark_route));
    Router::new()
        .nest("/scim/v2", scim)
        .nest_service("/openidm", rest)
        .nest_service("/admin", console)
        // No auth: status words only (see health.rs).
        .route("/health", health)
        .fallback(outside_v2)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(RequestBodyTimeoutLayer::new(Duration::from_secs(30)))
        // One line per request at info: method, route template, status,
        // latency and request id; never the raw path or query (object ids,
        // filters).
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span)
                .on_request(|request: &Request, _: &tracing::Span| {
                    // The raw path names objects: at debug only.
                    tracing::debug!(path = %request.uri().path(), "request");
                })
                .on_response(DefaultOnResponse::new().level(Level::INFO)),
        )
        // Every request counted under its route template (or `unmatched`).
        .layer(axum::middleware::from_fn(crate::metrics::track))
        // Outside the trace layer, so its span has the id.
        .layer(axum::middleware::from_fn(request_id))
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            origin::mark_scheme,
        ))
        // Outermost: bearers and passwords are marked sensitive before
        // anything could log them.
        .layer(SetSensitiveRequestHeadersLayer::new([
            header::AUTHORIZATION,
            header::HeaderName::from_static(crate::rest::auth::PASSWORD_HEADER),
            header::COOKIE,
        ]))
        .with_state(app)
}

/// The request id of an HTTP request (see [`idm_proto::request_id`]), in
/// its extensions.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

const REQUEST_ID: HeaderName = HeaderName::from_static(idm_proto::request_id::METADATA_KEY);

/// Gives every request an id: the client's `X-Request-Id` if it is 1–64
/// characters of `[A-Za-z0-9._:-]`, else a new UUIDv7. The id goes in the
/// request's extensions (for the trace span), with every call to the core
/// (see [`crate::core::TagRequestId`]) and back on the response, whatever
/// it is (errors and 401s included).
async fn request_id(mut request: Request, next: Next) -> Response {
    let incoming = request
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok());
    let id = idm_proto::request_id::accept_or(incoming, || uuid::Uuid::now_v7().to_string());
    request.extensions_mut().insert(RequestId(id.clone()));
    let header = HeaderValue::from_str(&id).ok();
    let mut response = crate::core::with_request_id(id, next.run(request)).await;
    if let Some(header) = header {
        response.headers_mut().insert(REQUEST_ID, header);
    }
    response
}

/// The span of one HTTP request: the route template (`/scim/v2/{resource}/{id}`),
/// not the path, so no object id or filter reaches an info line.
fn request_span(request: &Request) -> tracing::Span {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("", MatchedPath::as_str);
    let id = request
        .extensions()
        .get::<RequestId>()
        .map_or("", |id| id.0.as_str());
    tracing::info_span!(
        "http",
        method = %request.method(),
        route,
        request_id = id,
    )
}

impl IntoResponse for ScimError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if status.is_server_error() {
            tracing::warn!(status = self.status, detail = %self.detail, "request failed");
        }
        let body = serde_json::to_vec(&ErrorBody::from(&self)).unwrap_or_default();
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"idm-gateway\""),
            );
        }
        response
    }
}

/// A SCIM JSON response.
pub fn scim_response(status: StatusCode, body: &impl serde::Serialize) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => {
            let mut response = (status, bytes).into_response();
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
            response
        }
        Err(e) => ScimError::internal(format!("response did not serialize: {e}")).into_response(),
    }
}

/// The longest bearer passed to the core. idm's tokens are about 70 bytes; a
/// longer one is refused here rather than sent (past the core's header limit
/// the call would fail as a transport error, a 500).
const MAX_BEARER_LEN: usize = 1024;

/// The authenticated caller: the bearer to pass to the core, and the base URL
/// resources are located under.
///
/// Every handler that takes one extracts it first, and extracting it asks
/// the core whether the bearer is valid (see [`crate::core::Core::check_bearer`]):
/// without a valid token a request is answered 401 before its query string
/// or body is parsed.
pub struct Caller {
    pub bearer: Bearer,
    pub base: String,
}

impl FromRequestParts<Shared> for Caller {
    type Rejection = ScimError;

    async fn from_request_parts(parts: &mut Parts, app: &Shared) -> Result<Self, ScimError> {
        let header = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|h| h.to_str().ok())
            .ok_or_else(|| ScimError::unauthorized("Authorization: Bearer <token> is required"))?;
        let token = header
            .split_once(' ')
            .filter(|(scheme, token)| {
                scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty()
            })
            .map(|(_, token)| token.trim().to_string())
            .ok_or_else(|| ScimError::unauthorized("only Bearer authorization is supported"))?;
        if token.len() > MAX_BEARER_LEN {
            return Err(ScimError::unauthorized("invalid bearer token"));
        }
        let bearer = Bearer(token);
        app.scim.core.check_bearer(&bearer).await?;
        let Base(base) = Base::from_request_parts(parts, app).await?;
        Ok(Caller { bearer, base })
    }
}

/// The base URL resources are located under: `--public-url` if given, else
/// `<scheme>://<listen address>/scim/v2` with the scheme the request came by
/// (see [`origin`]).
pub struct Base(pub String);

impl FromRequestParts<Shared> for Base {
    type Rejection = ScimError;

    async fn from_request_parts(parts: &mut Parts, app: &Shared) -> Result<Self, ScimError> {
        let scheme = parts
            .extensions
            .get::<Scheme>()
            .copied()
            .unwrap_or(if app.origin.tls() {
                Scheme::Https
            } else {
                Scheme::Http
            });
        Ok(Base(app.origin.base(scheme)))
    }
}

/// A JSON request body: `application/scim+json` or `application/json` (or no
/// content type at all), within the size limit.
pub struct ScimBody(pub Value);

impl<S: Send + Sync> FromRequest<S> for ScimBody {
    type Rejection = ScimError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ScimError> {
        let bytes = body::json_bytes(request, state)
            .await
            .map_err(|refused| match refused {
                BodyRefused::NotJson(content_type) => ScimError::new(
                    415,
                    None,
                    format!("content type {content_type}: send application/scim+json"),
                ),
                BodyRefused::TooLarge => ScimError::payload_too_large(body::TOO_LARGE),
                BodyRefused::Other { status, message } => ScimError::new(status, None, message),
            })?;
        let value = body::parse_json(&bytes).map_err(ScimError::invalid_syntax)?;
        Ok(ScimBody(value))
    }
}

async fn me() -> ScimError {
    ScimError::not_implemented("/Me is not supported: idm-gateway serves clients, not end users")
}

async fn not_found() -> ScimError {
    ScimError::not_found("no such endpoint under /scim/v2")
}

/// `/scim/v1/…` and the like: a SCIM version this server does not speak.
async fn outside_v2(uri: axum::http::Uri) -> ScimError {
    match uri.path().strip_prefix("/scim/") {
        Some(rest) if !rest.is_empty() => {
            ScimError::invalid_version("only SCIM 2.0 is served, at /scim/v2")
        }
        _ => ScimError::not_found("SCIM 2.0 is served at /scim/v2"),
    }
}

async fn method_not_allowed(method: Method) -> ScimError {
    ScimError::new(405, None, format!("{method} is not allowed here"))
}

// Discovery endpoints answer without a token: a client reads them before it
// has one configured, and they tell nothing about the data.

async fn service_provider_config(
    axum::extract::State(app): axum::extract::State<Shared>,
    Base(base): Base,
) -> Response {
    let base = &base;
    scim_response(
        StatusCode::OK,
        &discovery::service_provider_config(base, app.scim.limits),
    )
}

async fn resource_types(
    axum::extract::State(app): axum::extract::State<Shared>,
    Base(base): Base,
) -> Response {
    let base = &base;
    let types: Vec<Value> = Kind::ALL
        .into_iter()
        .map(|kind| discovery::resource_type(&app.scim.registry, kind, base))
        .collect();
    let total = types.len() as u64;
    scim_response(
        StatusCode::OK,
        &crate::scim::messages::ListResponse::new(total, 1, types),
    )
}

async fn resource_type(
    axum::extract::State(app): axum::extract::State<Shared>,
    Base(base): Base,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    let base = &base;
    match Kind::from_name(&id) {
        Some(kind) => scim_response(
            StatusCode::OK,
            &discovery::resource_type(&app.scim.registry, kind, base),
        ),
        None => ScimError::not_found(format!("no resource type {id}")).into_response(),
    }
}

async fn schemas(
    axum::extract::State(app): axum::extract::State<Shared>,
    Base(base): Base,
) -> Response {
    let base = &base;
    let schemas = discovery::schemas(&app.scim.registry, base);
    let total = schemas.len() as u64;
    scim_response(
        StatusCode::OK,
        &crate::scim::messages::ListResponse::new(total, 1, schemas),
    )
}

async fn schema(
    axum::extract::State(app): axum::extract::State<Shared>,
    Base(base): Base,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    let base = &base;
    match app.scim.registry.schema(&id) {
        Some(schema) => scim_response(
            StatusCode::OK,
            &crate::scim::schema::schema_document(schema, base),
        ),
        None => ScimError::not_found(format!("no schema {id}")).into_response(),
    }
}
