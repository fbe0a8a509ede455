//! Wren's error body, `{"code": 404, "reason": "Not Found", "message": "…"}`
//! (ForgeRock Common REST), with an optional `detail`; and the one mapping of
//! the core's gRPC status codes to Wren's HTTP statuses.

use axum::http::header::{self, HeaderValue};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tonic::{Code, Status};
use tonic_types::StatusExt;

/// The reason and domain of the core's policy failures (an `ErrorInfo` on an
/// INVALID_ARGUMENT status), and the metadata key holding Wren's array.
pub const POLICY_REASON: &str = "POLICY_VALIDATION_FAILED";
pub const POLICY_DOMAIN: &str = "idm.v1";
pub const POLICY_METADATA_KEY: &str = "failedPolicyRequirements";

/// The largest `failedPolicyRequirements` document parsed from the core.
const MAX_POLICY_DETAIL: usize = 64 * 1024;

/// An error answered in Wren's shape. Build it with the constructors; turn a
/// core status into one with `?` (`From<tonic::Status>`).
#[derive(Debug, Clone, PartialEq)]
pub struct RestError {
    pub code: u16,
    pub message: String,
    pub detail: Option<Value>,
    /// `WWW-Authenticate: Basic` on a 401: only when the client tried Basic.
    /// Wren sends no challenge otherwise, so a browser shows no login box
    /// for a script's `X-OpenIDM-*` request.
    pub basic_challenge: bool,
}

impl RestError {
    pub fn new(code: u16, message: impl Into<String>) -> Self {
        RestError {
            code,
            message: message.into(),
            detail: None,
            basic_challenge: false,
        }
    }

    pub fn with_detail(mut self, detail: Value) -> Self {
        self.detail = Some(detail);
        self
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, message)
    }

    /// Wren says only "Access Denied", whatever failed (unknown name, wrong
    /// password, disabled account, revoked token).
    pub fn unauthorized() -> Self {
        Self::new(401, "Access Denied")
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(403, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(404, message)
    }

    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(405, message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(409, message)
    }

    pub fn precondition_failed(message: impl Into<String>) -> Self {
        Self::new(412, message)
    }

    pub fn payload_too_large(message: impl Into<String>) -> Self {
        Self::new(413, message)
    }

    pub fn unsupported_media_type(message: impl Into<String>) -> Self {
        Self::new(415, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, message)
    }

    pub fn not_supported(message: impl Into<String>) -> Self {
        Self::new(501, message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(503, message)
    }

    /// Wren's 403 for a write that breaks a policy.
    pub fn policy_failed(failed_policy_requirements: Value) -> Self {
        Self::forbidden("Policy validation failed").with_detail(json!({
            "result": false,
            "failedPolicyRequirements": failed_policy_requirements,
        }))
    }

    /// `_action=…` that this endpoint does not have (Wren: 400).
    pub fn unknown_action(action: &str) -> Self {
        Self::bad_request(format!("Action {action} not supported"))
    }

    pub fn reason(&self) -> &'static str {
        reason_phrase(self.code)
    }

    /// The JSON body.
    pub fn body(&self) -> Value {
        let mut body = json!({
            "code": self.code,
            "reason": self.reason(),
            "message": self.message,
        });
        if let (Some(detail), Some(object)) = (&self.detail, body.as_object_mut()) {
            object.insert("detail".into(), detail.clone());
        }
        body
    }
}

/// Common REST's reason phrases.
pub fn reason_phrase(code: u16) -> &'static str {
    match code {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        412 => "Precondition Failed",
        413 => "Request Entity Too Large",
        415 => "Unsupported Media Type",
        428 => "Precondition Required",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Error",
    }
}

impl From<Status> for RestError {
    fn from(status: Status) -> Self {
        if crate::core::is_unreachable(&status) {
            return RestError::unavailable("the idm core is unavailable");
        }
        let message = status.message().to_string();
        match status.code() {
            Code::InvalidArgument => match policy_failure(&status) {
                Some(failed) => RestError::policy_failed(failed),
                None => RestError::bad_request(message),
            },
            Code::OutOfRange => RestError::bad_request(message),
            Code::NotFound => RestError::not_found(message),
            // A unique property's value is taken: Wren's `unique` policy.
            Code::AlreadyExists if not_unique(&status).is_some() => {
                RestError::policy_failed(not_unique(&status).unwrap_or_default())
            }
            // Common REST: a create whose id is taken, and a write whose
            // revision is stale, are both "Precondition Failed".
            Code::AlreadyExists | Code::FailedPrecondition | Code::Aborted => {
                RestError::precondition_failed(message)
            }
            Code::Unauthenticated => RestError::unauthorized(),
            Code::PermissionDenied => RestError::forbidden(message),
            Code::ResourceExhausted => RestError::new(429, message),
            Code::DeadlineExceeded => RestError::new(504, "the idm core did not answer in time"),
            Code::Unimplemented => RestError::not_supported(message),
            Code::Unavailable | Code::Cancelled => {
                RestError::unavailable("the idm core is unavailable")
            }
            _ => {
                tracing::error!(code = ?status.code(), %message, "core call failed");
                RestError::internal("the idm core failed; see idm-gateway's log")
            }
        }
    }
}

/// Wren's `failedPolicyRequirements` array from the core's `ErrorInfo`, if
/// the status carries one. A malformed or oversized one still makes the
/// answer a policy failure (the core said so), with an empty array.
pub(crate) fn policy_failure(status: &Status) -> Option<Value> {
    let details = status.get_error_details();
    let info = details.error_info()?;
    if info.reason != POLICY_REASON || info.domain != POLICY_DOMAIN {
        return None;
    }
    let parsed = info
        .metadata
        .get(POLICY_METADATA_KEY)
        .filter(|text| text.len() <= MAX_POLICY_DETAIL)
        .and_then(|text| serde_json::from_str::<Value>(text).ok())
        .filter(Value::is_array);
    Some(parsed.unwrap_or_else(|| {
        tracing::warn!("the core's failedPolicyRequirements did not parse; answered empty");
        Value::Array(Vec::new())
    }))
}

/// The core answers a taken unique value with ALREADY_EXISTS and a
/// `BadRequest` naming the property; Wren reports it as the `unique` policy.
pub(crate) fn not_unique(status: &Status) -> Option<Value> {
    let details = status.get_error_details();
    let violations = &details.bad_request()?.field_violations;
    let failed: Vec<Value> = violations
        .iter()
        .take(64)
        .map(|violation| {
            json!({
                "property": violation.field,
                "policyRequirements": [{"policyRequirement": "UNIQUE"}],
            })
        })
        .collect();
    (!failed.is_empty()).then_some(Value::Array(failed))
}

impl IntoResponse for RestError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if status.is_server_error() {
            tracing::warn!(code = self.code, message = %self.message, "request failed");
        }
        let mut headers = HeaderMap::new();
        if status == StatusCode::UNAUTHORIZED && self.basic_challenge {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"openidm\""),
            );
        }
        let mut response = super::json_response(status, &self.body());
        response.headers_mut().extend(headers);
        response
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use tonic_types::ErrorDetails;

    use super::*;

    fn code_of(code: Code) -> u16 {
        RestError::from(Status::new(code, "m")).code
    }

    #[test]
    fn every_grpc_code_has_a_wren_status() {
        assert_eq!(code_of(Code::InvalidArgument), 400);
        assert_eq!(code_of(Code::OutOfRange), 400);
        assert_eq!(code_of(Code::NotFound), 404);
        assert_eq!(code_of(Code::AlreadyExists), 412);
        assert_eq!(code_of(Code::FailedPrecondition), 412);
        assert_eq!(code_of(Code::Aborted), 412);
        assert_eq!(code_of(Code::Unauthenticated), 401);
        assert_eq!(code_of(Code::PermissionDenied), 403);
        assert_eq!(code_of(Code::ResourceExhausted), 429);
        assert_eq!(code_of(Code::DeadlineExceeded), 504);
        assert_eq!(code_of(Code::Unimplemented), 501);
        assert_eq!(code_of(Code::Unavailable), 503);
        assert_eq!(code_of(Code::Cancelled), 503);
        assert_eq!(code_of(Code::Internal), 500);
        assert_eq!(code_of(Code::DataLoss), 500);
        assert_eq!(code_of(Code::Unknown), 500);
    }

    #[test]
    fn the_body_is_wrens() {
        let body = RestError::not_found("no such object").body();
        assert_eq!(
            body,
            json!({"code": 404, "reason": "Not Found", "message": "no such object"})
        );
        let unauthorized = RestError::from(Status::unauthenticated("invalid bearer token"));
        assert_eq!(
            unauthorized.body(),
            json!({"code": 401, "reason": "Unauthorized", "message": "Access Denied"})
        );
    }

    fn policy_status(metadata: HashMap<String, String>) -> Status {
        Status::with_error_details(
            Code::InvalidArgument,
            "policy",
            ErrorDetails::with_error_info(POLICY_REASON, POLICY_DOMAIN, metadata),
        )
    }

    #[test]
    fn a_policy_failure_is_wrens_403() {
        let failed = json!([{"property": "password", "policyRequirements": [
            {"policyRequirement": "MIN_LENGTH", "params": {"minLength": 8}}
        ]}]);
        let status = policy_status(HashMap::from([(
            POLICY_METADATA_KEY.to_string(),
            failed.to_string(),
        )]));
        let error = RestError::from(status);
        assert_eq!(
            error.body(),
            json!({"code": 403, "reason": "Forbidden", "message": "Policy validation failed",
                   "detail": {"result": false, "failedPolicyRequirements": failed}})
        );
    }

    #[test]
    fn a_malformed_or_huge_policy_detail_is_an_empty_array() {
        for text in ["not json", "{\"an\": \"object\"}", &"[".repeat(100_000)] {
            let status = policy_status(HashMap::from([(
                POLICY_METADATA_KEY.to_string(),
                text.to_string(),
            )]));
            let error = RestError::from(status);
            assert_eq!(error.code, 403);
            assert_eq!(error.detail.unwrap()["failedPolicyRequirements"], json!([]));
        }
    }

    #[test]
    fn a_taken_unique_value_is_wrens_unique_policy() {
        let status = Status::with_error_details(
            Code::AlreadyExists,
            "userName must be unique",
            ErrorDetails::with_bad_request_violation("userName", "must be unique"),
        );
        let error = RestError::from(status);
        assert_eq!(error.code, 403);
        assert_eq!(
            error.detail.unwrap()["failedPolicyRequirements"],
            json!([{"property": "userName", "policyRequirements": [{"policyRequirement": "UNIQUE"}]}])
        );
        // A taken id stays Common REST's 412.
        assert_eq!(RestError::from(Status::already_exists("exists")).code, 412);
    }

    #[test]
    fn other_error_infos_stay_bad_requests() {
        let status = Status::with_error_details(
            Code::InvalidArgument,
            "bad filter",
            ErrorDetails::with_error_info("FILTER_SYNTAX", POLICY_DOMAIN, HashMap::new()),
        );
        let error = RestError::from(status);
        assert_eq!((error.code, error.message.as_str()), (400, "bad filter"));
    }
}
