//! Wren:IDM's REST API at `/openidm`, beside SCIM's `/scim/v2` on the same
//! listener: Wren's own paths, parameters and JSON shapes, over the core's
//! gRPC services like every other front end.
//!
//! - `mod.rs`: [`RestState`], [`router`], and the small shared helpers
//!   ([`json_response`], [`JsonBody`], [`Params`]).
//! - `error.rs`: [`RestError`], Wren's error body, and the one mapping of
//!   gRPC status codes to HTTP statuses (`?` on a `tonic::Status` does it).
//! - `auth.rs`: the [`Caller`] extractor (Basic, `X-OpenIDM-*`, Bearer; the
//!   CSRF rule); `sessions.rs`: the sessions opened for a name and password.
//! - `info.rs`: `info/ping`, `info/login`, `authentication?_action=logout`.
//! - `policy.rs`: `policy/managed/{type}[/{id}]?_action=validateObject`.
//! - `managed/`: `managed/{type}[/{id}]` (read, query, create, replace,
//!   patch, delete); `query_filter.rs`: Wren's `_queryFilter` → the core's
//!   filter.
//!
//! ## Adding an endpoint module
//!
//! 1. Add `rest/<name>.rs` with a `pub fn routes() -> Router<RestState>`
//!    whose paths are relative to `/openidm` (`/recon`, `/recon/{id}`), and
//!    list it in `router` below with `.merge(<name>::routes())`.
//! 2. A handler takes `State(state): State<RestState>` and `caller: Caller`
//!    (authentication runs first; nothing is parsed for a refused request),
//!    then `Params`/`JsonBody` as needed, and returns
//!    `Result<Response, RestError>`.
//! 3. Call the core with [`core_call!`] (or [`Caller::call`] when a call needs
//!    more than one method):
//!    ```ignore
//!    let run = core_call!(&state, &caller,
//!        ReconServiceClient.get_recon(GetReconRequest { name: name.clone() })).await?;
//!    Ok(json_response(StatusCode::OK, &wren_summary(&run)))
//!    ```
//!    A failed call becomes Wren's error (`NOT_FOUND` → 404, …) by itself.
//! 4. `_action=…` dispatch: `match params.action()? { "recon" => …, other =>
//!    Err(RestError::unknown_action(other)) }`.
//! 5. E2E tests in `tests/tests/e2e/rest/<name>.rs`, with the helpers of
//!    `tests/src/rest.rs`.

mod audit;
pub mod auth;
mod config;
pub mod error;
mod info;
mod listing;
pub mod managed;
mod policy;
pub mod query_filter;
mod recon;
mod scheduler;
pub mod sessions;
mod system;

/// One call of a core service with the caller's bearer, Wren's error on
/// failure: `core_call!(&state, &caller, ReconServiceClient.get_recon(request))`.
/// The request expression is evaluated per attempt (a cached session the
/// core forgot is replaced once), so it clones what it takes.
macro_rules! core_call {
    ($state:expr, $caller:expr, $client:ident . $method:ident ( $request:expr )) => {
        $caller.call($state, |bearer| {
            let mut client = $client::new($state.core.channel());
            let request = $request;
            async move {
                Ok(client
                    .$method(crate::core::Core::authorized(&bearer, request)?)
                    .await?
                    .into_inner())
            }
        })
    };
}
pub(crate) use core_call;

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Request};
use axum::http::header::{self, HeaderValue};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

pub use self::auth::Caller;
pub use self::error::RestError;
use self::sessions::SessionCache;
use crate::core::Core;
use crate::http::body::{self, BodyRefused};

/// Bounds of the REST API.
#[derive(Debug, Clone, Copy)]
pub struct RestLimits {
    /// Largest request body.
    pub max_body: usize,
    /// Largest `_pageSize` served (a larger one is clamped).
    pub max_page_size: u64,
}

impl Default for RestLimits {
    fn default() -> Self {
        RestLimits {
            max_body: 1024 * 1024,
            max_page_size: 1000,
        }
    }
}

/// What every REST handler shares; cheap to clone.
#[derive(Clone)]
pub struct RestState {
    pub core: Core,
    pub sessions: Arc<SessionCache>,
    pub limits: RestLimits,
}

impl RestState {
    pub fn new(core: Core, limits: RestLimits) -> Self {
        RestState {
            core,
            sessions: Arc::new(SessionCache::default()),
            limits,
        }
    }
}

/// The routes under `/openidm` (mount with `nest_service("/openidm", …)`).
pub fn router(state: RestState) -> Router {
    let max_body = state.limits.max_body;
    Router::new()
        .merge(info::routes())
        .merge(managed::routes())
        .merge(recon::routes())
        .merge(scheduler::routes())
        .merge(system::routes())
        .merge(config::routes())
        .merge(audit::routes())
        .merge(policy::routes())
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(axum::middleware::from_fn(crate::metrics::mark_route))
        .with_state(state)
}

async fn not_found() -> RestError {
    RestError::not_found("Resource not found")
}

async fn method_not_allowed(method: Method) -> RestError {
    RestError::method_not_allowed(format!("{method} is not allowed here"))
}

/// A JSON reply.
pub fn json_response(status: StatusCode, body: &impl serde::Serialize) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => {
            let mut response = (status, bytes).into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json; charset=UTF-8"),
            );
            response
        }
        Err(e) => RestError::internal(format!("the reply did not serialize: {e}")).into_response(),
    }
}

/// The query string's parameters (`_action`, `_queryFilter`, …). A name
/// given twice is refused: Wren takes single values.
pub struct Params(pub HashMap<String, String>);

/// The most parameters read from a query string.
const MAX_PARAMS: usize = 64;

impl Params {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// `_action`, required.
    pub fn action(&self) -> Result<&str, RestError> {
        self.get("_action")
            .ok_or_else(|| RestError::bad_request("the _action parameter is required"))
    }

    /// A boolean parameter (`true`/`false`), `false` when absent.
    pub fn flag(&self, name: &str) -> Result<bool, RestError> {
        match self.get(name) {
            None => Ok(false),
            Some(v) if v.eq_ignore_ascii_case("true") => Ok(true),
            Some(v) if v.eq_ignore_ascii_case("false") => Ok(false),
            Some(v) => Err(RestError::bad_request(format!(
                "{name}={v}: expected true or false"
            ))),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = RestError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, RestError> {
        let query = parts.uri.query().unwrap_or_default();
        let mut params = HashMap::new();
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            if params.len() >= MAX_PARAMS {
                return Err(RestError::bad_request("too many query parameters"));
            }
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let name = decode_query_part(name)?;
            let value = decode_query_part(value)?;
            if params.insert(name.clone(), value).is_some() {
                return Err(RestError::bad_request(format!(
                    "the parameter {name} is given more than once"
                )));
            }
        }
        Ok(Params(params))
    }
}

fn decode_query_part(part: &str) -> Result<String, RestError> {
    let plus_as_space = part.replace('+', " ");
    percent_encoding::percent_decode_str(&plus_as_space)
        .decode_utf8()
        .map(|text| text.into_owned())
        .map_err(|_| RestError::bad_request("the query string is not UTF-8"))
}

/// A JSON request body (`application/json`, or no content type), within
/// [`RestLimits::max_body`]. An empty body reads as `{}`.
pub struct JsonBody(pub Value);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = RestError;

    async fn from_request(request: Request, state: &S) -> Result<Self, RestError> {
        let bytes = body::json_bytes(request, state)
            .await
            .map_err(|refused| match refused {
                BodyRefused::NotJson(content_type) => RestError::unsupported_media_type(format!(
                    "content type {content_type}: send application/json"
                )),
                BodyRefused::TooLarge => RestError::payload_too_large(body::TOO_LARGE),
                BodyRefused::Other { status, message } => RestError::new(status, message),
            })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(JsonBody(Value::Object(serde_json::Map::new())));
        }
        let value = body::parse_json(&bytes).map_err(RestError::bad_request)?;
        Ok(JsonBody(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn params(query: &str) -> Result<Params, RestError> {
        let request = axum::http::Request::builder()
            .uri(format!("/x?{query}"))
            .body(())
            .unwrap();
        let (mut parts, ()) = request.into_parts();
        Params::from_request_parts(&mut parts, &()).await
    }

    #[tokio::test]
    async fn params_are_decoded_and_single() {
        let p = params("_action=recon&mapping=csv%20A&_queryFilter=a+eq+%22x%22")
            .await
            .unwrap();
        assert_eq!(p.action().unwrap(), "recon");
        assert_eq!(p.get("mapping"), Some("csv A"));
        assert_eq!(p.get("_queryFilter"), Some("a eq \"x\""));
        assert_eq!(params("a=1&a=2").await.err().unwrap().code, 400);
        assert_eq!(params("a=%FF").await.err().unwrap().code, 400);
        let many: Vec<String> = (0..100).map(|i| format!("p{i}=1")).collect();
        assert_eq!(params(&many.join("&")).await.err().unwrap().code, 400);
        assert!(!params("").await.unwrap().flag("waitForCompletion").unwrap());
    }
}
