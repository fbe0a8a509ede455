//! [`ConsoleError`]: what went wrong, as a page a person can read. A failed
//! core call converts with `?`; a form that wants its policy failures beside
//! its fields takes them from [`ConsoleError::Invalid`].

use askama::Template;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde_json::Value;
use tonic::{Code, Status};

/// One property's failed policy, for the form field it belongs to.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldProblem {
    pub property: String,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// No session, or the core no longer knows it: the login page, then
    /// back to `next` (a GET's own path).
    #[error("sign in first")]
    LoginRequired { next: Option<String>, htmx: bool },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    BadRequest(String),
    /// The core refused the values: a message, and the properties whose
    /// policies failed.
    #[error("{message}")]
    Invalid {
        message: String,
        problems: Vec<FieldProblem>,
    },
    /// Someone changed it meanwhile (a stale revision), or it exists.
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    TooMany(String),
    #[error("the idm core is unavailable")]
    Unavailable,
    #[error("{0}")]
    Internal(String),
}

impl From<Status> for ConsoleError {
    fn from(status: Status) -> Self {
        if crate::core::is_unreachable(&status) {
            return ConsoleError::Unavailable;
        }
        let message = status.message().to_string();
        match status.code() {
            Code::InvalidArgument | Code::OutOfRange => {
                let problems = crate::rest::error::policy_failure(&status)
                    .map(|failed| problems_of(&failed))
                    .unwrap_or_default();
                ConsoleError::Invalid { message, problems }
            }
            Code::AlreadyExists => match crate::rest::error::not_unique(&status) {
                Some(failed) => ConsoleError::Invalid {
                    message,
                    problems: problems_of(&failed),
                },
                None => ConsoleError::Conflict(message),
            },
            Code::NotFound => ConsoleError::NotFound(message),
            Code::FailedPrecondition | Code::Aborted => ConsoleError::Conflict(message),
            Code::Unauthenticated => ConsoleError::LoginRequired {
                next: None,
                htmx: false,
            },
            Code::PermissionDenied => ConsoleError::Forbidden(message),
            Code::ResourceExhausted => ConsoleError::TooMany(message),
            Code::Unavailable | Code::Cancelled | Code::DeadlineExceeded => {
                ConsoleError::Unavailable
            }
            _ => {
                tracing::error!(code = ?status.code(), %message, "core call failed");
                ConsoleError::Internal("The idm core failed; see idm-gateway's log.".into())
            }
        }
    }
}

/// Wren's `failedPolicyRequirements` as one line per property.
pub fn problems_of(failed: &Value) -> Vec<FieldProblem> {
    let Some(entries) = failed.as_array() else {
        return Vec::new();
    };
    entries
        .iter()
        .take(64)
        .filter_map(|entry| {
            let property = entry.get("property")?.as_str()?.to_string();
            let requirements: Vec<String> = entry
                .get("policyRequirements")
                .and_then(Value::as_array)
                .map(|list| {
                    list.iter()
                        .take(16)
                        .filter_map(|r| r.get("policyRequirement")?.as_str())
                        .map(requirement_in_words)
                        .collect()
                })
                .unwrap_or_default();
            Some(FieldProblem {
                property,
                message: if requirements.is_empty() {
                    "is not valid".into()
                } else {
                    requirements.join("; ")
                },
            })
        })
        .collect()
}

/// Wren's policy names, as a person reads them.
fn requirement_in_words(name: &str) -> String {
    match name {
        "REQUIRED" => "is required".into(),
        "UNIQUE" => "is already taken".into(),
        "VALID_EMAIL_ADDRESS_FORMAT" => "must be an email address".into(),
        "VALID_PHONE_FORMAT" => "must be a phone number".into(),
        "VALID_NAME_FORMAT" => "must be a name".into(),
        "MIN_LENGTH" => "is too short".into(),
        "MAX_LENGTH" => "is too long".into(),
        "AT_LEAST_X_CAPITAL_LETTERS" => "needs more capital letters".into(),
        "AT_LEAST_X_NUMBERS" => "needs more digits".into(),
        "CANNOT_CONTAIN_OTHERS" => "must not contain other properties' values".into(),
        "VALID_TYPE" => "has the wrong type".into(),
        "MATCH_REGEXP" => "is not in the expected format".into(),
        other => other.to_lowercase().replace('_', " "),
    }
}

impl ConsoleError {
    pub fn status(&self) -> StatusCode {
        match self {
            ConsoleError::LoginRequired { .. } => StatusCode::SEE_OTHER,
            ConsoleError::NotFound(_) => StatusCode::NOT_FOUND,
            ConsoleError::Forbidden(_) => StatusCode::FORBIDDEN,
            ConsoleError::BadRequest(_) | ConsoleError::Invalid { .. } => StatusCode::BAD_REQUEST,
            ConsoleError::Conflict(_) => StatusCode::CONFLICT,
            ConsoleError::TooMany(_) => StatusCode::TOO_MANY_REQUESTS,
            ConsoleError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ConsoleError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The message shown to the person, with the field problems.
    pub fn message(&self) -> String {
        match self {
            ConsoleError::Invalid { message, problems } if !problems.is_empty() => {
                let listed: Vec<String> = problems
                    .iter()
                    .map(|p| format!("{} {}", p.property, p.message))
                    .collect();
                format!("{message}: {}", listed.join(", "))
            }
            ConsoleError::Unavailable => {
                "The idm core is unavailable. Try again in a moment.".into()
            }
            other => other.to_string(),
        }
    }
}

/// The error page: on its own, without the menu (which would need the
/// core, which may be what failed).
#[derive(Template, Clone)]
#[template(path = "console/error.html")]
pub struct ErrorPage {
    status: u16,
    reason: &'static str,
    message: String,
    /// Only the heading and the message, for htmx's `#main` (see
    /// [`fragment_errors`]).
    fragment: bool,
}

/// Middleware: an error answering an htmx request for the main block is
/// the main block's worth of error (the heading and the message), not a
/// whole document inside the page.
pub async fn fragment_errors(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let fragment = super::session::wants_fragment(request.headers());
    let response = next.run(request).await;
    if !fragment {
        return response;
    }
    let Some(page) = response.extensions().get::<ErrorPage>().cloned() else {
        return response;
    };
    let mut fragment = super::page::render(&ErrorPage {
        fragment: true,
        ..page
    });
    *fragment.status_mut() = response.status();
    fragment
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    fragment
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        if let ConsoleError::LoginRequired { next, htmx } = &self {
            let location = match next.as_deref().filter(|n| is_local_page(n)) {
                Some(next) => format!("/admin/login?next={}", encode_component(next)),
                None => "/admin/login".to_string(),
            };
            if *htmx {
                // htmx follows this with a whole page load, not a swap.
                let mut response = StatusCode::NO_CONTENT.into_response();
                if let Ok(value) = HeaderValue::from_str(&location) {
                    response.headers_mut().insert("hx-redirect", value);
                }
                return response;
            }
            return Redirect::to(&location).into_response();
        }
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(status = status.as_u16(), error = %self, "console request failed");
        }
        let page = ErrorPage {
            status: status.as_u16(),
            reason: status.canonical_reason().unwrap_or("Error"),
            message: self.message(),
            fragment: false,
        };
        let mut response = super::page::render(&page);
        response.extensions_mut().insert(page);
        *response.status_mut() = status;
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }
}

/// Whether `path` is a console page of this gateway (never another host:
/// `next` is the client's to forge).
pub fn is_local_page(path: &str) -> bool {
    path.starts_with("/admin")
        && !path.starts_with("/admin/login")
        && !path.contains("//")
        && !path.contains('\\')
        && path.len() <= 2048
        && path.bytes().all(|b| b.is_ascii_graphic())
}

/// A query string component, percent-encoded.
pub fn encode_component(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_is_only_a_console_page() {
        assert!(is_local_page("/admin/managed/user?q=snow"));
        assert!(!is_local_page("//evil.example/admin"));
        assert!(!is_local_page("/admin//evil.example"));
        assert!(!is_local_page("https://evil.example/admin"));
        assert!(!is_local_page("/admin/login?next=/admin"));
        assert!(!is_local_page("/admin\\@evil"));
    }

    #[test]
    fn policy_failures_become_field_problems() {
        let failed = serde_json::json!([
            {"property": "mail", "policyRequirements": [{"policyRequirement": "VALID_EMAIL_ADDRESS_FORMAT"}]},
            {"property": "userName", "policyRequirements": [{"policyRequirement": "REQUIRED"}, {"policyRequirement": "X_Y"}]}
        ]);
        let problems = problems_of(&failed);
        assert_eq!(problems.len(), 2);
        assert_eq!(problems[0].message, "must be an email address");
        assert_eq!(problems[1].message, "is required; x y");
    }
}
