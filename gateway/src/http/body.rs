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

/// The deepest a body may nest objects and arrays. idmd decodes a value
/// through protobuf `Struct`s, two messages a level, and prost stops at 100
/// messages: a body nested ~50 levels passed the JSON parser (128) and came
/// back from the core as an internal error. No managed object needs more.
pub const MAX_NESTING: usize = 32;

/// `bytes` as JSON, or what is wrong with it: not JSON, or nested deeper
/// than [`MAX_NESTING`] (walked without recursion).
pub fn parse_json(bytes: &[u8]) -> Result<serde_json::Value, String> {
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| format!("the body is not valid JSON: {e}"))?;
    let mut pending = vec![(&value, 1)];
    while let Some((value, depth)) = pending.pop() {
        let inner: Box<dyn Iterator<Item = &serde_json::Value>> = match value {
            serde_json::Value::Array(items) => Box::new(items.iter()),
            serde_json::Value::Object(fields) => Box::new(fields.values()),
            _ => continue,
        };
        if depth > MAX_NESTING {
            return Err(format!(
                "the body nests objects and arrays deeper than {MAX_NESTING} levels"
            ));
        }
        pending.extend(inner.map(|item| (item, depth + 1)));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(levels: usize) -> String {
        format!("{}1{}", "{\"a\":".repeat(levels), "}".repeat(levels))
    }

    #[test]
    fn bodies_nest_up_to_the_limit_and_no_deeper() {
        assert!(parse_json(nested(MAX_NESTING).as_bytes()).is_ok());
        let deep = parse_json(nested(MAX_NESTING + 1).as_bytes()).unwrap_err();
        assert!(deep.contains("deeper than 32"), "{deep}");
        let arrays = format!(
            "{}{}",
            "[".repeat(MAX_NESTING + 1),
            "]".repeat(MAX_NESTING + 1)
        );
        assert!(parse_json(arrays.as_bytes()).is_err());
        let beyond_the_parser = format!("{}{}", "[".repeat(20_000), "]".repeat(20_000));
        assert!(
            parse_json(beyond_the_parser.as_bytes())
                .unwrap_err()
                .contains("not valid JSON")
        );
        assert!(parse_json(b"{\"a\": [1, {\"b\": null}], \"c\": \"x\"}").is_ok());
    }
}
