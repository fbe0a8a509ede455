//! Signing in and out. The login form trades a name and a password for the
//! core's session token (`AuthService.Login`, throttled and audited by the
//! core), kept in the session cookie until the session's absolute end.

use std::time::Duration;

use askama::Template;
use axum::Extension;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use idm_proto::v1::auth_service_client::AuthServiceClient;
use idm_proto::v1::{LoginRequest, LogoutRequest, WhoAmIRequest};
use rand::RngCore;
use serde::Deserialize;
use tonic::Code;

use super::error::{ConsoleError, is_local_page};
use super::session::{
    COOKIE, CSRF_FIELD, Form, LOGIN_COOKIE, cleared_cookie, cookie, cookie_header, form_fields,
    same_secret, session_cookie,
};
use super::{ConsoleState, render, see_other};
use crate::core::{Bearer, Core};
use crate::http::origin::ClientAddress;

/// How long a login form may stay open before it must be reloaded.
const LOGIN_FORM_LIFE: u64 = 30 * 60;
/// Longest name and password read from the form (the core's own limits
/// are 64 characters and 1024 bytes).
const MAX_USERNAME: usize = 256;
const MAX_PASSWORD: usize = 1024;

#[derive(Template)]
#[template(path = "console/login.html")]
struct LoginPage {
    csrf: String,
    username: String,
    next: String,
    notice: Option<&'static str>,
    problem: Option<String>,
}

#[derive(Deserialize)]
pub struct LoginQuery {
    next: Option<String>,
    signed_out: Option<String>,
}

pub async fn form(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    Query(query): Query<LoginQuery>,
) -> Response {
    let next = query.next.filter(|n| is_local_page(n)).unwrap_or_default();
    if has_live_session(&state, &headers).await {
        return see_other(if next.is_empty() { "/admin/" } else { &next });
    }
    let notice = query.signed_out.map(|_| "You are signed out.");
    login_page(StatusCode::OK, String::new(), next, notice, None)
}

/// The form, with a fresh CSRF pair: the value in the form and in a cookie.
fn login_page(
    status: StatusCode,
    username: String,
    next: String,
    notice: Option<&'static str>,
    problem: Option<String>,
) -> Response {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let csrf = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let mut response = render(&LoginPage {
        csrf: csrf.clone(),
        username,
        next,
        notice,
        problem,
    });
    *response.status_mut() = status;
    response.headers_mut().append(
        header::SET_COOKIE,
        cookie_header(LOGIN_COOKIE, &csrf, LOGIN_FORM_LIFE),
    );
    response
}

async fn has_live_session(state: &ConsoleState, headers: &HeaderMap) -> bool {
    let Some(token) = cookie(headers, COOKIE).filter(|t| !t.is_empty() && t.len() <= 1024) else {
        return false;
    };
    // Asked each time, not from the gateway's cache of bearers: a session
    // ended a moment ago must not bounce between here and the dashboard.
    let Ok(request) = Core::authorized(&Bearer(token.to_string()), WhoAmIRequest {}) else {
        return false;
    };
    AuthServiceClient::new(state.core.channel())
        .who_am_i(request)
        .await
        .is_ok()
}

pub async fn submit(
    State(state): State<ConsoleState>,
    address: Option<Extension<ClientAddress>>,
    request: Request,
) -> Result<Response, ConsoleError> {
    let expected = cookie(request.headers(), LOGIN_COOKIE).map(str::to_string);
    let fields = form_fields(request).await?;
    let field = |name: &str| {
        fields
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
            .unwrap_or_default()
    };
    let username = field("username").trim().to_string();
    let password = field("password");
    let next = Some(field("next"))
        .filter(|n| is_local_page(n))
        .unwrap_or_default()
        .to_string();
    let form_is_ours = expected.is_some_and(|expected| same_secret(field(CSRF_FIELD), &expected));
    if !form_is_ours {
        return Ok(login_page(
            StatusCode::FORBIDDEN,
            username,
            next,
            None,
            Some("This form expired. Sign in again.".into()),
        ));
    }
    if username.is_empty() || password.is_empty() {
        return Ok(login_page(
            StatusCode::BAD_REQUEST,
            username,
            next,
            None,
            Some("Enter your name and your password.".into()),
        ));
    }
    if username.len() > MAX_USERNAME || password.len() > MAX_PASSWORD {
        return Ok(invalid(username, next));
    }
    let client_address = address
        .map(|Extension(ClientAddress(ip))| ip.to_string())
        .unwrap_or_default();
    let reply = AuthServiceClient::new(state.core.channel())
        .login(LoginRequest {
            username: username.clone(),
            password: password.to_string(),
            client_address,
        })
        .await;
    let session = match reply {
        Ok(reply) => reply.into_inner(),
        Err(status) if status.code() == Code::Unauthenticated => {
            return Ok(invalid(username, next));
        }
        Err(status) if status.code() == Code::ResourceExhausted => {
            return Ok(login_page(
                StatusCode::TOO_MANY_REQUESTS,
                username,
                next,
                None,
                Some("Too many failed sign-ins. Try again later.".into()),
            ));
        }
        Err(status) => return Err(status.into()),
    };
    let remaining = session
        .expire_time
        .map(|end| end.seconds - time::OffsetDateTime::now_utc().unix_timestamp())
        .unwrap_or(8 * 3600)
        .clamp(0, 7 * 86400);
    tracing::info!(username = %session.username, "console sign-in");
    let mut response = see_other(if next.is_empty() { "/admin/" } else { &next });
    let headers = response.headers_mut();
    headers.append(
        header::SET_COOKIE,
        session_cookie(
            &session.session_token,
            Duration::from_secs(remaining.unsigned_abs()),
        ),
    );
    headers.append(header::SET_COOKIE, cleared_cookie(LOGIN_COOKIE));
    Ok(response)
}

fn invalid(username: String, next: String) -> Response {
    login_page(
        StatusCode::UNAUTHORIZED,
        username,
        next,
        None,
        Some("Invalid username or password.".into()),
    )
}

/// Ends the session at the core, forgets the cookie, and asks the browser
/// to drop what it kept of the console's pages.
pub async fn logout(State(state): State<ConsoleState>, form: Form) -> Response {
    if let Ok(request) = Core::authorized(&form.viewer.bearer, LogoutRequest {})
        && let Err(status) = AuthServiceClient::new(state.core.channel())
            .logout(request)
            .await
    {
        tracing::warn!(code = ?status.code(), "console sign-out: the core did not end the session");
    }
    let mut response = see_other("/admin/login?signed_out=1");
    let headers = response.headers_mut();
    headers.append(header::SET_COOKIE, cleared_cookie(COOKIE));
    headers.insert(
        "clear-site-data",
        HeaderValue::from_static("\"cache\", \"storage\""),
    );
    response.into_response()
}
