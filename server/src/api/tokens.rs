//! `idm.v1.TokenService`.

use std::sync::Arc;

use idm_proto::v1::token_service_server::TokenService;
use idm_proto::v1::{
    CreateTokenRequest, CreateTokenResponse, GetCallerRequest, ListTokensRequest,
    ListTokensResponse, RevokeTokenRequest, Scope, Token,
};
use tonic::{Request, Response, Status};

use super::auth::{BOOTSTRAP_ACTOR, TokenRegistry, caller, parse_scope};
use super::timestamp;
use crate::store::{TokenRecord, format_timestamp};

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

#[tonic::async_trait]
impl TokenService for TokenApi {
    async fn create_token(
        &self,
        request: Request<CreateTokenRequest>,
    ) -> Result<Response<CreateTokenResponse>, Status> {
        caller(&request)?.require(Scope::Admin)?;
        let request = request.into_inner();
        let scope = Scope::try_from(request.scope)
            .ok()
            .filter(|s| *s != Scope::Unspecified)
            .ok_or_else(|| Status::invalid_argument("scope: one of read, scim, admin"))?;
        let expires = match request.ttl {
            Some(ttl) if ttl.seconds <= 0 => {
                return Err(Status::invalid_argument("ttl must be positive"));
            }
            Some(ttl) => Some(format_timestamp(
                time::OffsetDateTime::now_utc() + time::Duration::seconds(ttl.seconds),
            )),
            None => None,
        };
        let (record, secret) = self
            .registry
            .create(scope, request.description, expires)
            .await?;
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
            .filter(|t| include_revoked || !t.revoked)
            .map(to_proto)
            .collect();
        Ok(Response::new(ListTokensResponse { tokens }))
    }

    async fn revoke_token(
        &self,
        request: Request<RevokeTokenRequest>,
    ) -> Result<Response<Token>, Status> {
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
