//! `idm.v1.TokenService`.

use std::sync::Arc;

use idm_proto::v1::token_service_server::TokenService;
use idm_proto::v1::{
    CreateTokenRequest, CreateTokenResponse, GetCallerRequest, ListTokensRequest,
    ListTokensResponse, RevokeTokenRequest, Scope, Token,
};
use tonic::{Request, Response, Status};

use super::auth::{BOOTSTRAP_ACTOR, TokenRegistry, caller, parse_scope, scope_name};
use super::timestamp;
use super::trail;
use crate::store::{TokenKind, TokenRecord, format_timestamp};

pub struct TokenApi {
    pub registry: Arc<TokenRegistry>,
}

fn to_proto(record: TokenRecord) -> Token {
    Token {
        name: format!("tokens/{}", record.tid),
        scope: parse_scope(&record.scope)
            .unwrap_or(Scope::Unspecified)
            .into(),
        id: record.tid,
        description: record.description,
        create_time: timestamp(&record.created),
        expire_time: record.expires.as_deref().and_then(timestamp),
        revoked: record.revoked,
    }
}

/// The longest lifetime a token may be given: 100 years.
const MAX_TTL_SECONDS: i64 = 100 * 366 * 86_400;

/// When a token created now with `ttl` expires; INVALID_ARGUMENT for a
/// lifetime that is not positive or too long to be a date.
fn expiry(ttl: prost_types::Duration) -> Result<String, Status> {
    if ttl.seconds <= 0 || ttl.nanos < 0 {
        return Err(Status::invalid_argument("ttl must be positive"));
    }
    if ttl.seconds > MAX_TTL_SECONDS {
        return Err(Status::invalid_argument(format!(
            "ttl must be at most {MAX_TTL_SECONDS} seconds (100 years)"
        )));
    }
    time::OffsetDateTime::now_utc()
        .checked_add(time::Duration::seconds(ttl.seconds))
        .map(format_timestamp)
        .ok_or_else(|| Status::invalid_argument("ttl is too long"))
}

#[tonic::async_trait]
impl TokenService for TokenApi {
    async fn create_token(
        &self,
        request: Request<CreateTokenRequest>,
    ) -> Result<Response<CreateTokenResponse>, Status> {
        trail::target(&request, "tokens/");
        caller(&request)?.require(Scope::Admin)?;
        let given = request.get_ref();
        let scope = Scope::try_from(given.scope)
            .ok()
            .filter(|s| *s != Scope::Unspecified)
            .ok_or_else(|| {
                Status::invalid_argument("scope: one of read, scim, admin, verify-password")
            })?;
        trail::detail(&request, &format!("scope {}", scope_name(scope)));
        let expires = given.ttl.map(expiry).transpose()?;
        let (record, secret) = self
            .registry
            .create(scope, given.description.clone(), expires)
            .await?;
        trail::target(&request, &format!("tokens/{}", record.tid));
        tracing::info!(token = %record.tid, scope = %record.scope, "token created");
        Ok(Response::new(CreateTokenResponse {
            token: Some(to_proto(record)),
            secret,
        }))
    }

    async fn list_tokens(
        &self,
        request: Request<ListTokensRequest>,
    ) -> Result<Response<ListTokensResponse>, Status> {
        caller(&request)?.require(Scope::Admin)?;
        let include_revoked = request.get_ref().include_revoked;
        let tokens = self
            .registry
            .list()
            .await?
            .into_iter()
            // Login sessions are not API tokens (see `idmctl accounts`).
            .filter(|t| t.kind == TokenKind::Token)
            .filter(|t| include_revoked || !t.revoked)
            .map(to_proto)
            .collect();
        Ok(Response::new(ListTokensResponse { tokens }))
    }

    async fn revoke_token(
        &self,
        request: Request<RevokeTokenRequest>,
    ) -> Result<Response<Token>, Status> {
        trail::target(&request, &request.get_ref().name);
        caller(&request)?.require(Scope::Admin)?;
        let name = &request.get_ref().name;
        let tid = name.strip_prefix("tokens/").unwrap_or(name);
        if tid.is_empty() || !tid.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(Status::invalid_argument(format!(
                "\"{name}\" is not a token name such as tokens/<id>"
            )));
        }
        let token = match self.registry.revoke(tid).await? {
            Some(record) => {
                tracing::info!(token = %record.tid, "token revoked");
                to_proto(record)
            }
            None => Token {
                name: format!("tokens/{tid}"),
                id: tid.to_string(),
                revoked: true,
                ..Token::default()
            },
        };
        Ok(Response::new(token))
    }

    async fn get_caller(
        &self,
        request: Request<GetCallerRequest>,
    ) -> Result<Response<Token>, Status> {
        let caller = caller(&request)?;
        let description = if caller.token_id == BOOTSTRAP_ACTOR {
            "IDM_ADMIN_TOKEN"
        } else {
            ""
        };
        Ok(Response::new(Token {
            name: format!("tokens/{}", caller.token_id),
            id: caller.token_id,
            scope: caller.scope.into(),
            description: description.into(),
            ..Token::default()
        }))
    }
}
