//! Reading a JSON request body, shared by SCIM and Wren's REST API: the
//! content type checked before a byte is read, the size limit (the router's
//! `DefaultBodyLimit`) enforced while reading. Each room turns a refusal into
//! its own error shape.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::http::header;

/// Why a body was not read.
#[derive(Debug)]
pub enum BodyRefused {
    /// A content type that is not JSON (`application/json`,
    /// `application/scim+json`, …); lower-cased.
    NotJson(String),
    /// Past the size limit.
    TooLarge,
    /// Anything else axum refused (a broken or timed-out body).
    Other { status: u16, message: String },
}

/// The body's bytes, if its content type is JSON or absent.
pub async fn json_bytes<S: Send + Sync>(request: Request, state: &S) -> Result<Bytes, BodyRefused> {
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|h| h.to_str().ok())
        .map(str::to_ascii_lowercase);
    if let Some(content_type) = content_type
        && !content_type.contains("json")
    {
        return Err(BodyRefused::NotJson(content_type));
    }
    Bytes::from_request(request, state)
        .await
        .map_err(|rejection| match rejection.status() {
            StatusCode::PAYLOAD_TOO_LARGE => BodyRefused::TooLarge,
            status => BodyRefused::Other {
                status: status.as_u16(),
                message: rejection.body_text(),
            },
        })
}

/// What a client is told when the body is too large, in either room.
pub const TOO_LARGE: &str = "the request body is larger than this server accepts";
