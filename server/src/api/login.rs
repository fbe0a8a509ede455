//! `idm.v1.AuthService`: Login (the one RPC without a bearer), Logout, WhoAmI.

use std::net::{IpAddr, SocketAddr};

use idm_proto::v1::auth_service_server::AuthService;
use idm_proto::v1::{
    CallerKind, LoginRequest, LoginResponse, LogoutRequest, LogoutResponse, WhoAmIRequest,
    WhoAmIResponse,
};
use tonic::{Request, Response, Status};

use super::auth::{BOOTSTRAP_ACTOR, caller};
use super::{timestamp, trail};
use crate::accounts::{AccountError, Accounts, LoginSource, rules, tried_name};
use crate::store::TokenKind;

pub struct AuthApi {
    pub accounts: Accounts,
    pub registry: std::sync::Arc<super::auth::TokenRegistry>,
}

/// `client_address` as the IP the throttle counts (a port is dropped);
/// empty: the peer.
fn source_address(given: &str, peer: &str) -> Result<String, Status> {
    if given.is_empty() {
        return Ok(peer.to_string());
    }
    // The longest IPv6 socket address with a zone is well under this.
    if given.len() > 128 {
        return Err(Status::invalid_argument(
            "client_address: an IP address, or empty",
        ));
    }
    let given = given.trim();
    given
        .parse::<IpAddr>()
        .or_else(|_| given.parse::<SocketAddr>().map(|a| a.ip()))
        .map(|ip| ip.to_string())
        .map_err(|_| Status::invalid_argument("client_address: an IP address, or empty"))
}

fn duration(d: std::time::Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: 0,
    }
}

#[tonic::async_trait]
impl AuthService for AuthApi {
    async fn login(
        &self,
        request: Request<LoginRequest>,
    ) -> Result<Response<LoginResponse>, Status> {
        let peer = request
            .remote_addr()
            .map_or_else(|| "unknown".to_string(), |a| a.ip().to_string());
        let given = request.get_ref();
        let tried = tried_name(&given.username);
        trail::actor(request.extensions(), &tried);
        trail::target(&request, &format!("{}{tried}", rules::PREFIX));
        let address = source_address(&given.client_address, &peer)?;
        let from = if address == peer {
            format!("from {address}")
        } else {
            format!("from {address} via {peer}")
        };
        trail::detail(&request, &from);
        let source = LoginSource { address, peer };
        let session = match self
            .accounts
            .login(&given.username, &given.password, &source)
            .await
        {
            Ok(session) => session,
            Err(refused @ AccountError::LoginRefused { disabled: true }) => {
                trail::detail(&request, &format!("{from}; account disabled"));
                return Err(refused.into());
            }
            Err(e) => return Err(e.into()),
        };
        trail::detail(&request, &format!("{from}; session {}", session.record.tid));
        Ok(Response::new(LoginResponse {
            session_token: session.secret,
            expire_time: session.record.expires.as_deref().and_then(timestamp),
            idle_timeout: Some(duration(session.idle_timeout)),
            scope: session.scope.into(),
            username: session.record.account.unwrap_or_default(),
        }))
    }

    async fn logout(
        &self,
        request: Request<LogoutRequest>,
    ) -> Result<Response<LogoutResponse>, Status> {
        let caller = caller(&request)?;
        let Some(account) = &caller.account else {
            trail::target(&request, &format!("tokens/{}", caller.token_id));
            return Err(Status::failed_precondition(
                "the bearer is an API token, not a session: revoke tokens with `idmctl tokens revoke`",
            ));
        };
        trail::target(&request, &format!("{}{account}", rules::PREFIX));
        trail::detail(&request, &format!("session {}", caller.token_id));
        self.registry.revoke(&caller.token_id).await?;
        tracing::info!(account = %account, session = %caller.token_id, "logged out");
        Ok(Response::new(LogoutResponse {}))
    }

    async fn who_am_i(
        &self,
        request: Request<WhoAmIRequest>,
    ) -> Result<Response<WhoAmIResponse>, Status> {
        let caller = caller(&request)?;
        let record = (caller.token_id != BOOTSTRAP_ACTOR)
            .then(|| self.registry.record(&caller.token_id))
            .flatten();
        let session = record.as_ref().filter(|r| r.kind == TokenKind::Session);
        Ok(Response::new(WhoAmIResponse {
            kind: if session.is_some() {
                CallerKind::Session
            } else {
                CallerKind::Token
            }
            .into(),
            username: caller.account.clone().unwrap_or_default(),
            token_id: caller.token_id.clone(),
            scope: caller.scope.into(),
            expire_time: record
                .as_ref()
                .and_then(|r| r.expires.as_deref())
                .and_then(timestamp),
            idle_timeout: session
                .and_then(|r| r.idle_timeout)
                .map(|s| prost_types::Duration {
                    seconds: s,
                    nanos: 0,
                }),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_address_is_an_ip_without_its_port() {
        assert_eq!(
            source_address("", "127.0.0.1").ok(),
            Some("127.0.0.1".into())
        );
        assert_eq!(
            source_address("192.0.2.1", "p").ok(),
            Some("192.0.2.1".into())
        );
        assert_eq!(
            source_address("192.0.2.1:5555", "p").ok(),
            Some("192.0.2.1".into())
        );
        assert_eq!(
            source_address("[2001:db8::1]:443", "p").ok(),
            Some("2001:db8::1".into())
        );
        assert!(source_address("evil; drop", "p").is_err());
    }
}
