//! API tokens (`/admin/tokens`, admin only): the list with scope,
//! description, expiry and whether revoked; create; revoke.
//!
//! A new token's secret is shown exactly once: in the page answering the
//! POST that created it (200, `no-store`), never in a redirect, a cookie,
//! a log line or any later page. Over `TokenService` only.

use askama::Template;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use idm_proto::v1::token_service_client::TokenServiceClient;
use idm_proto::v1::{CreateTokenRequest, ListTokensRequest, RevokeTokenRequest, Scope, Token};
use serde::Deserialize;

use super::{Refusal, keep_status, parse_scope, refusal, scope_name};
use crate::console::page::{timestamp, url_part};
use crate::console::{
    Chrome, ConsoleError, ConsoleState, Form, Nav, Viewer, console_call, render, see_other,
};

/// The longest lifetime offered, in days (the core's limit is 100 years).
const MAX_TTL_DAYS: i64 = 36_500;

pub fn routes() -> Router<ConsoleState> {
    Router::new()
        .route("/tokens", get(show).post(create))
        .route("/tokens/{id}/revoke", post(revoke))
}

/// The scopes a token may have, as the form offers them.
const SCOPES: &[(&str, &str)] = &[
    ("read", "read: reads everything but tokens"),
    ("scim", "scim: also writes managed objects (a SCIM client)"),
    ("admin", "admin: everything"),
    (
        "verify-password",
        "verify-password: checks passwords only (a login front end)",
    ),
];

pub struct TokenRow {
    pub id: String,
    pub scope: &'static str,
    pub description: String,
    pub created: String,
    pub expires: String,
    pub revoked: bool,
}

fn token_row(token: &Token) -> TokenRow {
    TokenRow {
        id: token.id.clone(),
        scope: scope_name(token.scope()),
        description: token.description.clone(),
        created: timestamp(token.create_time.as_ref()),
        expires: match &token.expire_time {
            Some(at) => timestamp(Some(at)),
            None => "never".into(),
        },
        revoked: token.revoked,
    }
}

/// The token just created, with its secret: only ever in the answer to
/// its creation.
pub struct Created {
    pub id: String,
    pub scope: &'static str,
    pub expires: String,
    pub secret: String,
}

/// The create form as posted.
#[derive(Default)]
pub struct NewToken {
    pub scope: String,
    pub description: String,
    pub ttl_days: String,
    pub problem: Option<(String, String)>,
}

impl NewToken {
    /// Whether the scope select shows `scope` (read when none was chosen).
    fn selects(&self, scope: &str) -> bool {
        self.scope == scope || (self.scope.is_empty() && scope == "read")
    }

    fn problem_of(&self, field: &str) -> Option<&str> {
        self.problem
            .as_ref()
            .filter(|(f, _)| f == field)
            .map(|(_, m)| m.as_str())
    }
}

#[derive(Template)]
#[template(path = "console/accounts/tokens.html")]
struct TokensPage {
    chrome: Chrome,
    tokens: Vec<TokenRow>,
    created: Option<Created>,
    new: NewToken,
    notice: Option<String>,
    problem: Option<String>,
    scopes: &'static [(&'static str, &'static str)],
}

#[derive(Debug, Default, Deserialize)]
pub struct RevokedQuery {
    revoked: Option<String>,
}

async fn page(
    state: &ConsoleState,
    viewer: &Viewer,
    new: NewToken,
) -> Result<TokensPage, ConsoleError> {
    let (chrome, listed) = tokio::join!(
        Chrome::new(state, viewer, Nav::Accounts, "API tokens"),
        console_call!(
            state,
            viewer,
            TokenServiceClient.list_tokens(ListTokensRequest {
                include_revoked: true
            })
        )
    );
    let mut tokens: Vec<TokenRow> = listed?.tokens.iter().map(token_row).collect();
    // Live ones first, each group newest first.
    tokens.sort_by(|a, b| a.revoked.cmp(&b.revoked).then(b.created.cmp(&a.created)));
    Ok(TokensPage {
        chrome,
        tokens,
        created: None,
        new,
        notice: None,
        problem: None,
        scopes: SCOPES,
    })
}

pub async fn show(
    State(state): State<ConsoleState>,
    viewer: Viewer,
    Query(query): Query<RevokedQuery>,
) -> Result<Response, ConsoleError> {
    viewer.require_change()?;
    let mut page = page(&state, &viewer, NewToken::default()).await?;
    page.notice = query
        .revoked
        .filter(|id| id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric()))
        .map(|id| format!("Token {id} revoked."));
    Ok(render(&page))
}

/// `ttl_days` → the token's lifetime; empty: never expires.
fn ttl(days: &str) -> Result<Option<prost_types::Duration>, String> {
    let days = days.trim();
    if days.is_empty() {
        return Ok(None);
    }
    match days.parse::<i64>() {
        Ok(n) if (1..=MAX_TTL_DAYS).contains(&n) => Ok(Some(prost_types::Duration {
            seconds: n * 86_400,
            nanos: 0,
        })),
        _ => Err(format!(
            "a whole number of days from 1 to {MAX_TTL_DAYS}, or empty for never"
        )),
    }
}

/// `POST /admin/tokens`: `scope`, `description`, `ttl_days`. Answers with
/// the tokens page showing the new secret, once.
pub async fn create(
    State(state): State<ConsoleState>,
    form: Form,
) -> Result<Response, ConsoleError> {
    form.viewer.require_change()?;
    let mut new = NewToken {
        scope: form.get("scope").unwrap_or_default().to_string(),
        description: form
            .get("description")
            .unwrap_or_default()
            .trim()
            .to_string(),
        ttl_days: form.get("ttl_days").unwrap_or_default().trim().to_string(),
        problem: None,
    };
    let ttl = match ttl(&new.ttl_days) {
        Ok(ttl) => ttl,
        Err(message) => {
            new.problem = Some(("ttl_days".into(), message.clone()));
            let mut page = page(&state, &form.viewer, new).await?;
            page.problem = Some(format!("Lifetime: {message}"));
            return Ok(with_status(render(&page), StatusCode::BAD_REQUEST));
        }
    };
    let scope = parse_scope(&new.scope).unwrap_or(Scope::Unspecified);
    let request = CreateTokenRequest {
        scope: scope.into(),
        description: new.description.clone(),
        ttl,
    };
    let created = match keep_status!(
        &state,
        &form.viewer,
        TokenServiceClient.create_token(request)
    )
    .await
    {
        Ok(created) => created,
        Err(status) => {
            let (code, message) = match refusal(status)? {
                Refusal::Field { field, message } => {
                    let shown = format!("{field}: {message}");
                    new.problem = Some((field, message));
                    (StatusCode::BAD_REQUEST, shown)
                }
                Refusal::Form { message, status } => (status, message),
            };
            let mut page = page(&state, &form.viewer, new).await?;
            page.problem = Some(message);
            return Ok(with_status(render(&page), code));
        }
    };
    let token = created.token.unwrap_or_default();
    let mut page = page(&state, &form.viewer, NewToken::default()).await?;
    page.created = Some(Created {
        id: token.id.clone(),
        scope: scope_name(token.scope()),
        expires: match &token.expire_time {
            Some(at) => timestamp(Some(at)),
            None => "never".into(),
        },
        secret: created.secret,
    });
    Ok(render(&page))
}

/// `POST /admin/tokens/{id}/revoke`. Revoking a revoked or unknown token
/// succeeds.
pub async fn revoke(
    State(state): State<ConsoleState>,
    Path(id): Path<String>,
    form: Form,
) -> Result<Response, ConsoleError> {
    form.viewer.require_change()?;
    let revoked = console_call!(
        &state,
        &form.viewer,
        TokenServiceClient.revoke_token(RevokeTokenRequest {
            name: format!("tokens/{id}"),
        })
    )
    .await?;
    Ok(see_other(&format!(
        "/admin/tokens?revoked={}",
        url_part(&revoked.id)
    )))
}

fn with_status(mut response: Response, status: StatusCode) -> Response {
    *response.status_mut() = status;
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes_are_whole_days_or_never() {
        assert_eq!(ttl(" ").unwrap(), None);
        assert_eq!(ttl("30").unwrap().unwrap().seconds, 30 * 86_400);
        for bad in ["0", "-1", "1.5", "36501", "ten"] {
            assert!(ttl(bad).is_err(), "{bad}");
        }
    }
}
