//! People's accounts (`/admin/accounts`) and API tokens (`/admin/tokens`,
//! in `tokens.rs`): admin only. A read or scim account gets 403 here, sees
//! no link to these pages, and the core refuses its calls anyway.
//!
//! Accounts: the list with role, enabled and last login; create (name,
//! password, role); change the role; disable and enable; delete after a
//! confirmation. Over `AccountService` only. A password typed into a form
//! is sent to the core and never rendered back, logged or kept.

mod tokens;

use askama::Template;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use idm_proto::v1::account_service_client::AccountServiceClient;
use idm_proto::v1::{
    Account, CreateAccountRequest, DeleteAccountRequest, ListAccountsRequest, Scope,
    SetAccountEnabledRequest, SetAccountRoleRequest,
};
use serde::Deserialize;
use tonic::Status;
use tonic_types::StatusExt;

use super::page::{timestamp, url_part};
use super::{
    Chrome, ConsoleError, ConsoleState, Form, Nav, Viewer, console_call, render, see_other,
};

pub fn routes() -> Router<ConsoleState> {
    Router::new()
        .route("/accounts", get(show).post(create))
        .route("/accounts/{name}/role", post(set_role))
        .route("/accounts/{name}/enabled", post(set_enabled))
        .route("/accounts/{name}/delete", post(delete))
        .merge(tokens::routes())
}

/// The roles an account may have, as the forms offer them.
pub const ROLES: &[(&str, &str)] = &[
    ("read", "read: sees everything, changes nothing"),
    ("scim", "scim: also writes managed objects"),
    ("admin", "admin: everything"),
];

pub fn scope_name(scope: Scope) -> &'static str {
    match scope {
        Scope::Read => "read",
        Scope::Scim => "scim",
        Scope::Admin => "admin",
        Scope::VerifyPassword => "verify-password",
        Scope::Unspecified => "none",
    }
}

pub fn parse_scope(name: &str) -> Option<Scope> {
    match name {
        "read" => Some(Scope::Read),
        "scim" => Some(Scope::Scim),
        "admin" => Some(Scope::Admin),
        "verify-password" => Some(Scope::VerifyPassword),
        _ => None,
    }
}

/// What the core refused a form for: a field's problem (its `BadRequest`
/// detail) or a message for the whole form; anything else is an error page.
pub enum Refusal {
    Field { field: String, message: String },
    Form { message: String, status: StatusCode },
}

/// Sorts a failed core call into a [`Refusal`] the form shows, or the error
/// page (no session, no core, no permission).
pub fn refusal(status: Status) -> Result<Refusal, ConsoleError> {
    if let Some(violation) = status
        .get_error_details()
        .bad_request()
        .and_then(|b| b.field_violations.first().cloned())
    {
        return Ok(Refusal::Field {
            field: violation.field,
            message: violation.description,
        });
    }
    match ConsoleError::from(status) {
        error @ (ConsoleError::Invalid { .. }
        | ConsoleError::BadRequest(_)
        | ConsoleError::Conflict(_)
        | ConsoleError::NotFound(_)) => Ok(Refusal::Form {
            status: error.status(),
            message: error.message(),
        }),
        other => Err(other),
    }
}

/// One core call with the viewer's session that keeps the core's `Status`
/// (for [`refusal`]): `keep_status!(&state, &viewer, Client.method(request))`.
macro_rules! keep_status {
    ($state:expr, $viewer:expr, $client:ident . $method:ident ( $request:expr )) => {{
        let mut client = $client::new($state.core.channel());
        let request = crate::core::Core::authorized(&$viewer.bearer, $request);
        async move { Ok::<_, tonic::Status>(client.$method(request?).await?.into_inner()) }
    }};
}
pub(super) use keep_status;

pub struct AccountRow {
    pub id: String,
    pub role: &'static str,
    pub enabled: bool,
    pub last_login: String,
    pub created: String,
    /// The viewer's own account.
    pub is_me: bool,
}

fn account_row(account: &Account, me: &str) -> AccountRow {
    AccountRow {
        id: account.id.clone(),
        role: scope_name(account.role()),
        enabled: account.enabled,
        last_login: match &account.last_login_time {
            Some(at) => timestamp(Some(at)),
            None => "never".into(),
        },
        created: timestamp(account.create_time.as_ref()),
        is_me: account.id == me,
    }
}

/// The create form as it was posted (never its password).
#[derive(Default)]
pub struct NewAccount {
    pub name: String,
    pub role: String,
    /// The field the core refused (`name`, `password`, `role`) and why.
    pub problem: Option<(String, String)>,
}

impl AccountRow {
    fn has_role(&self, role: &str) -> bool {
        self.role == role
    }
}

impl NewAccount {
    /// Whether the role select shows `role` (read when none was chosen).
    fn selects(&self, role: &str) -> bool {
        self.role == role || (self.role.is_empty() && role == "read")
    }

    fn problem_of(&self, field: &str) -> Option<&str> {
        self.problem
            .as_ref()
            .filter(|(f, _)| f == field)
            .map(|(_, m)| m.as_str())
    }
}

#[derive(Template)]
#[template(path = "console/accounts/list.html")]
struct AccountsPage {
    chrome: Chrome,
    accounts: Vec<AccountRow>,
    new: NewAccount,
    notice: Option<String>,
    problem: Option<String>,
    roles: &'static [(&'static str, &'static str)],
}

#[derive(Debug, Default, Deserialize)]
pub struct DoneQuery {
    done: Option<String>,
    name: Option<String>,
}

/// What the last change did, in words (only known kinds are shown).
fn notice(query: &DoneQuery) -> Option<String> {
    let name = query.name.as_deref().unwrap_or_default();
    let done = match query.done.as_deref()? {
        "created" => "created",
        "role" => "given its new role; its sessions ended",
        "disabled" => "disabled; its sessions ended",
        "enabled" => "enabled",
        "deleted" => "deleted",
        _ => return None,
    };
    Some(format!("Account {name} {done}."))
}

fn done(kind: &str, name: &str) -> Response {
    see_other(&format!(
        "/admin/accounts?done={kind}&name={}",
        url_part(name)
    ))
}

async fn page(
    state: &ConsoleState,
    viewer: &Viewer,
    new: NewAccount,
    notice: Option<String>,
    problem: Option<String>,
) -> Result<AccountsPage, ConsoleError> {
    let (chrome, listed) = tokio::join!(
        Chrome::new(state, viewer, Nav::Accounts, "Accounts"),
        console_call!(
            state,
            viewer,
            AccountServiceClient.list_accounts(ListAccountsRequest {})
        )
    );
    Ok(AccountsPage {
        chrome,
        accounts: listed?
            .accounts
            .iter()
            .map(|a| account_row(a, &viewer.username))
            .collect(),
        new,
        notice,
        problem,
        roles: ROLES,
    })
}

pub async fn show(
    State(state): State<ConsoleState>,
    viewer: Viewer,
    Query(query): Query<DoneQuery>,
) -> Result<Response, ConsoleError> {
    viewer.require_change()?;
    let page = page(&state, &viewer, NewAccount::default(), notice(&query), None).await?;
    Ok(render(&page))
}

/// The accounts page again with the core's refusal shown.
async fn refused(
    state: &ConsoleState,
    viewer: &Viewer,
    mut new: NewAccount,
    status: Status,
) -> Result<Response, ConsoleError> {
    let (code, problem) = match refusal(status)? {
        Refusal::Field { field, message } => {
            let shown = format!("{field}: {message}");
            new.problem = Some((field, message));
            (StatusCode::BAD_REQUEST, Some(shown))
        }
        Refusal::Form { message, status } => (status, Some(message)),
    };
    let page = page(state, viewer, new, None, problem).await?;
    let mut response = render(&page);
    *response.status_mut() = code;
    Ok(response)
}

/// `POST /admin/accounts`: `name`, `password`, `role`.
pub async fn create(
    State(state): State<ConsoleState>,
    form: Form,
) -> Result<Response, ConsoleError> {
    form.viewer.require_change()?;
    let name = form.get("name").unwrap_or_default().trim().to_string();
    let role_text = form.get("role").unwrap_or_default().to_string();
    let new = NewAccount {
        name: name.clone(),
        role: role_text.clone(),
        problem: None,
    };
    let role = parse_scope(&role_text).unwrap_or(Scope::Unspecified);
    let request = CreateAccountRequest {
        name: name.clone(),
        password: form.get("password").unwrap_or_default().to_string(),
        role: role.into(),
    };
    match keep_status!(
        &state,
        &form.viewer,
        AccountServiceClient.create_account(request)
    )
    .await
    {
        Ok(created) => Ok(done("created", &created.id)),
        Err(status) => refused(&state, &form.viewer, new, status).await,
    }
}

/// `POST /admin/accounts/{name}/role`: `role`. The account's sessions end
/// (the viewer's own too, when it is theirs).
pub async fn set_role(
    State(state): State<ConsoleState>,
    Path(name): Path<String>,
    form: Form,
) -> Result<Response, ConsoleError> {
    form.viewer.require_change()?;
    let role = parse_scope(form.get("role").unwrap_or_default()).unwrap_or(Scope::Unspecified);
    let request = SetAccountRoleRequest {
        name: name.clone(),
        role: role.into(),
    };
    match keep_status!(
        &state,
        &form.viewer,
        AccountServiceClient.set_account_role(request)
    )
    .await
    {
        Ok(account) => Ok(done("role", &account.id)),
        Err(status) => refused(&state, &form.viewer, NewAccount::default(), status).await,
    }
}

/// `POST /admin/accounts/{name}/enabled`: `enabled=true|false`.
pub async fn set_enabled(
    State(state): State<ConsoleState>,
    Path(name): Path<String>,
    form: Form,
) -> Result<Response, ConsoleError> {
    form.viewer.require_change()?;
    let enabled = match form.get("enabled") {
        Some("true") => true,
        Some("false") => false,
        _ => return Err(ConsoleError::BadRequest("enabled: true or false".into())),
    };
    let request = SetAccountEnabledRequest {
        name: name.clone(),
        enabled,
    };
    match keep_status!(
        &state,
        &form.viewer,
        AccountServiceClient.set_account_enabled(request)
    )
    .await
    {
        Ok(account) => Ok(done(
            if enabled { "enabled" } else { "disabled" },
            &account.id,
        )),
        Err(status) => refused(&state, &form.viewer, NewAccount::default(), status).await,
    }
}

#[derive(Template)]
#[template(path = "console/accounts/confirm_delete.html")]
struct ConfirmDelete {
    chrome: Chrome,
    name: String,
}

/// `POST /admin/accounts/{name}/delete`: without `confirm=yes` a page that
/// asks; with it, the account deleted and its sessions ended.
pub async fn delete(
    State(state): State<ConsoleState>,
    Path(name): Path<String>,
    form: Form,
) -> Result<Response, ConsoleError> {
    form.viewer.require_change()?;
    if form.get("confirm") != Some("yes") {
        let chrome = Chrome::new(&state, &form.viewer, Nav::Accounts, "Delete account?").await;
        return Ok(render(&ConfirmDelete { chrome, name }));
    }
    let request = DeleteAccountRequest { name: name.clone() };
    match keep_status!(
        &state,
        &form.viewer,
        AccountServiceClient.delete_account(request)
    )
    .await
    {
        Ok(_) => Ok(done("deleted", &name)),
        Err(status) => refused(&state, &form.viewer, NewAccount::default(), status).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_read_both_ways() {
        for (name, _) in ROLES {
            assert_eq!(scope_name(parse_scope(name).unwrap()), *name);
        }
        assert_eq!(parse_scope("root"), None);
    }

    #[test]
    fn notices_name_only_known_changes() {
        let q = |done: &str| DoneQuery {
            done: Some(done.into()),
            name: Some("alice".into()),
        };
        assert_eq!(
            notice(&q("created")).as_deref(),
            Some("Account alice created.")
        );
        assert_eq!(notice(&q("<script>")), None);
    }
}
