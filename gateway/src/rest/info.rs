//! `GET /openidm/info/ping`, `GET /openidm/info/login` and
//! `POST /openidm/authentication?_action=logout`.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use idm_proto::v1::auth_service_client::AuthServiceClient;
use idm_proto::v1::{CallerKind, LogoutRequest, Scope, WhoAmIRequest, WhoAmIResponse};
use serde_json::{Value, json};

use super::{Caller, Params, RestError, RestState, core_call, json_response};
use crate::core::Core;

pub fn routes() -> Router<RestState> {
    Router::new()
        .route("/info/ping", get(ping))
        .route("/info/login", get(login))
        .route("/authentication", post(authentication))
}

/// Answers without credentials, as Wren's anonymous `info/ping` does:
/// `ACTIVE_READY` when the core answers (an anonymous `WhoAmI`, refused
/// without any password hashing), `ACTIVE_NOT_READY` when it cannot be
/// reached.
async fn ping(State(state): State<RestState>) -> Response {
    let mut auth = AuthServiceClient::new(state.core.channel());
    let ready = match auth.who_am_i(WhoAmIRequest {}).await {
        Ok(_) => true,
        Err(status) => !crate::core::is_unreachable(&status),
    };
    let body = if ready {
        json!({"_id": "", "state": "ACTIVE_READY", "shortDesc": "OpenIDM ready"})
    } else {
        json!({"_id": "", "state": "ACTIVE_NOT_READY",
               "shortDesc": "OpenIDM is not ready: the idm core is unreachable"})
    };
    json_response(StatusCode::OK, &body)
}

/// Who the credentials stand for, in Wren's shape.
async fn login(State(state): State<RestState>, caller: Caller) -> Result<Response, RestError> {
    let me = core_call!(
        &state,
        &caller,
        AuthServiceClient.who_am_i(WhoAmIRequest {})
    )
    .await?;
    Ok(json_response(StatusCode::OK, &login_info(&me)))
}

/// Wren's roles for idm's scopes: an admin is `openidm-admin`; everyone who
/// authenticated is `openidm-authorized`.
pub fn roles(scope: Scope) -> Vec<&'static str> {
    match scope {
        Scope::Admin => vec!["openidm-admin", "openidm-authorized"],
        _ => vec!["openidm-authorized"],
    }
}

fn login_info(me: &WhoAmIResponse) -> Value {
    let scope = Scope::try_from(me.scope).unwrap_or(Scope::Unspecified);
    let session = me.kind == CallerKind::Session as i32;
    let id = if session { &me.username } else { &me.token_id };
    json!({
        "_id": "login",
        "authenticationId": id,
        "authorization": {
            "id": id,
            "roles": roles(scope),
            "component": if session { "internal/user" } else { "internal/token" },
            "moduleId": if session { "INTERNAL_USER" } else { "TOKEN" },
        },
    })
}

/// `_action=logout`: ends the session (`AuthService.Logout`) and forgets it.
async fn authentication(
    State(state): State<RestState>,
    caller: Caller,
    params: Params,
) -> Result<Response, RestError> {
    match params.action()? {
        "logout" => {
            caller
                .call(&state, |bearer| {
                    let mut auth = AuthServiceClient::new(state.core.channel());
                    async move {
                        auth.logout(Core::authorized(&bearer, LogoutRequest {})?)
                            .await?;
                        Ok(())
                    }
                })
                .await?;
            if let Some(key) = caller.login_key() {
                state.sessions.forget(key);
            }
            state.sessions.forget_session(&caller.bearer);
            Ok(json_response(StatusCode::OK, &json!({})))
        }
        other => Err(RestError::unknown_action(other)),
    }
}
