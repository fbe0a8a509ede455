//! Who is looking: the session cookie, the [`Viewer`] every page extracts
//! first, and the [`Form`] every change is posted with.
//!
//! The cookie holds the core's session token (`AuthService.Login`), so the
//! core decides everything about it: its idle timeout, its end, its role,
//! and revocation (logout, a new password, a disabled account). Each page
//! asks the core who the token stands for (`WhoAmI`), which also counts as
//! the session's use.
//!
//! CSRF: every form carries `_csrf`, a hash of the session token under a
//! fixed label. A page of another site cannot read it (it never sees the
//! token, which is `HttpOnly`), and the cookie is `SameSite=Strict` too.
//! The login form, which has no session yet, pairs a random value in a
//! short-lived cookie with the same value in the form.

use std::time::Duration;

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use base64::Engine;
use idm_proto::v1::auth_service_client::AuthServiceClient;
use idm_proto::v1::{Scope, WhoAmIRequest};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tonic::Code;

use super::error::ConsoleError;
use super::{ConsoleState, MAX_FORM};
use crate::core::{Bearer, Core};

/// The session cookie.
pub const COOKIE: &str = "idm_console";
/// The login form's CSRF cookie, before there is a session.
pub const LOGIN_COOKIE: &str = "idm_console_login";
/// The hidden field every form carries.
pub const CSRF_FIELD: &str = "_csrf";
/// idm's session tokens are about 70 bytes.
const MAX_TOKEN: usize = 1024;
/// The most fields read from a posted form.
const MAX_FIELDS: usize = 500;

/// The signed-in person looking at a page.
pub struct Viewer {
    pub bearer: Bearer,
    pub username: String,
    pub role: Scope,
    /// The value of every form's `_csrf` field.
    pub csrf: String,
    /// The request came from htmx for the main block only (`HX-Request` and
    /// `HX-Target: main`): answer with the block, not the whole page.
    pub fragment: bool,
}

impl Viewer {
    /// Whether the viewer may change things: an admin. Read accounts see
    /// everything and change nothing (the core refuses them anyway).
    pub fn can_change(&self) -> bool {
        self.role == Scope::Admin
    }

    /// 403 unless the viewer [can change](Self::can_change) things.
    pub fn require_change(&self) -> Result<(), ConsoleError> {
        if self.can_change() {
            Ok(())
        } else {
            Err(ConsoleError::Forbidden(
                "Your account can read but not change anything.".into(),
            ))
        }
    }
}

/// The value of cookie `name` in the request, if it has one.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter(|value| value.len() <= 8 * 1024)
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// The `_csrf` value of the session `token`.
pub fn csrf_for(token: &str) -> String {
    let mut hash = Sha256::new();
    hash.update(b"idm console csrf v1\0");
    hash.update(token.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(hash.finalize())
}

/// Whether two secrets are equal, in time independent of where they differ.
pub fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// `Set-Cookie` for a session token that ends in `max_age`.
pub fn session_cookie(token: &str, max_age: Duration) -> HeaderValue {
    cookie_header(COOKIE, token, max_age.as_secs())
}

/// `Set-Cookie` ending a cookie.
pub fn cleared_cookie(name: &str) -> HeaderValue {
    cookie_header(name, "", 0)
}

/// `Set-Cookie` for `name=value`, scoped to the console, never readable by
/// scripts, never sent by another site.
pub fn cookie_header(name: &str, value: &str, max_age: u64) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/admin; Max-Age={max_age}; HttpOnly; Secure; SameSite=Strict"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("idm_console=; Path=/admin; Max-Age=0"))
}

/// Whether the request came from htmx for the main block only.
pub fn wants_fragment(headers: &HeaderMap) -> bool {
    let is = |name: &str, value: &str| {
        headers
            .get(name)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(value.as_bytes()))
    };
    is("hx-request", "true") && is("hx-target", "main") && !is("hx-history-restore-request", "true")
}

/// Whether the request came from htmx at all (a redirect to the login page
/// is then `HX-Redirect`, which htmx follows with a full page load).
pub fn from_htmx(headers: &HeaderMap) -> bool {
    headers
        .get("hx-request")
        .is_some_and(|v| v.as_bytes() == b"true")
}

impl FromRequestParts<ConsoleState> for Viewer {
    type Rejection = ConsoleError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &ConsoleState,
    ) -> Result<Self, ConsoleError> {
        let login_required = || ConsoleError::LoginRequired {
            next: parts
                .uri
                .path_and_query()
                .filter(|_| parts.method == axum::http::Method::GET)
                .map(|p| format!("/admin{p}")),
            htmx: from_htmx(&parts.headers),
        };
        let token = cookie(&parts.headers, COOKIE)
            .filter(|token| !token.is_empty() && token.len() <= MAX_TOKEN)
            .ok_or_else(login_required)?;
        let bearer = Bearer(token.to_string());
        let request = Core::authorized(&bearer, WhoAmIRequest {}).map_err(|_| login_required())?;
        let me = match AuthServiceClient::new(state.core.channel())
            .who_am_i(request)
            .await
        {
            Ok(reply) => reply.into_inner(),
            Err(status) if status.code() == Code::Unauthenticated => {
                return Err(login_required());
            }
            Err(status) => return Err(status.into()),
        };
        Ok(Viewer {
            csrf: csrf_for(&bearer.0),
            bearer,
            role: me.scope(),
            username: me.username,
            fragment: wants_fragment(&parts.headers),
        })
    }
}

/// A posted form (`application/x-www-form-urlencoded`, at most
/// [`MAX_FORM`] bytes and 500 fields) from a signed-in viewer, refused
/// (403) unless its `_csrf` is the session's.
pub struct Form {
    pub viewer: Viewer,
    fields: Vec<(String, String)>,
}

impl Form {
    /// The first value of field `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// Every value of field `name` (checkboxes, multiple selects).
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.fields
            .iter()
            .filter(move |(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// Every field but `_csrf`, in the order posted.
    pub fn fields(&self) -> impl Iterator<Item = (&str, &str)> {
        self.fields
            .iter()
            .filter(|(key, _)| key != CSRF_FIELD)
            .map(|(key, value)| (key.as_str(), value.as_str()))
    }
}

/// The fields of a urlencoded body, bounded; shared with the login form.
pub async fn form_fields(request: Request) -> Result<Vec<(String, String)>, ConsoleError> {
    let is_form = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';').next().is_some_and(|t| {
                t.trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            })
        });
    if !is_form {
        return Err(ConsoleError::BadRequest(
            "Send the form as application/x-www-form-urlencoded.".into(),
        ));
    }
    let bytes = axum::body::to_bytes(request.into_body(), MAX_FORM)
        .await
        .map_err(|_| ConsoleError::BadRequest("The form is too large.".into()))?;
    if bytes.iter().filter(|b| **b == b'&').count() >= MAX_FIELDS {
        return Err(ConsoleError::BadRequest(
            "The form has too many fields.".into(),
        ));
    }
    serde_urlencoded::from_bytes::<Vec<(String, String)>>(&bytes)
        .map_err(|_| ConsoleError::BadRequest("The form could not be read.".into()))
}

impl FromRequest<ConsoleState> for Form {
    type Rejection = ConsoleError;

    async fn from_request(request: Request, state: &ConsoleState) -> Result<Self, ConsoleError> {
        let (mut parts, body) = request.into_parts();
        let viewer = Viewer::from_request_parts(&mut parts, state).await?;
        let fields = form_fields(Request::from_parts(parts, body)).await?;
        let sent = fields
            .iter()
            .find(|(key, _)| key == CSRF_FIELD)
            .map(|(_, value)| value.as_str())
            .unwrap_or_default();
        if !same_secret(sent, &viewer.csrf) {
            return Err(ConsoleError::Forbidden(
                "This form is out of date or did not come from this console. Reload the page and try again."
                    .into(),
            ));
        }
        Ok(Form { viewer, fields })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_by_exact_name() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("idm_console_login=a; idm_console=b=c"),
        );
        assert_eq!(cookie(&headers, COOKIE), Some("b=c"));
        assert_eq!(cookie(&headers, LOGIN_COOKIE), Some("a"));
        assert_eq!(cookie(&headers, "other"), None);
    }

    #[test]
    fn csrf_tokens_differ_per_session_and_compare_exactly() {
        assert_ne!(csrf_for("idm_a_1"), csrf_for("idm_a_2"));
        assert!(same_secret(&csrf_for("x"), &csrf_for("x")));
        assert!(!same_secret(&csrf_for("x"), ""));
    }

    #[test]
    fn fragments_are_htmx_requests_for_main() {
        let mut headers = HeaderMap::new();
        headers.insert("hx-request", HeaderValue::from_static("true"));
        assert!(!wants_fragment(&headers));
        headers.insert("hx-target", HeaderValue::from_static("main"));
        assert!(wants_fragment(&headers));
        headers.insert(
            "hx-history-restore-request",
            HeaderValue::from_static("true"),
        );
        assert!(!wants_fragment(&headers));
    }
}
