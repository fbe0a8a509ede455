//! Who a REST request is: [`Caller`], the extractor every authenticated
//! handler takes first.
//!
//! Accepted, as Wren accepts them: `X-OpenIDM-Username` + `X-OpenIDM-Password`
//! (plain, or RFC 5987 `UTF-8''%..` encoded), `Authorization: Basic`
//! (RFC 7617, UTF-8), and `Authorization: Bearer <token>` (an idm API token
//! or session, passed through). A name and password are exchanged for a core
//! session with `AuthService.Login` (from the peer's address) and kept in the
//! [`SessionCache`](super::sessions::SessionCache).
//!
//! Wren's CSRF rule: a POST, PUT, PATCH or DELETE must carry one of those
//! headers; a request with only a cookie is refused (403).

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::{ConnectInfo, FromRequestParts};

use crate::http::origin::ClientAddress;
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, header};
use base64::Engine;
use idm_proto::v1::LoginRequest;
use idm_proto::v1::auth_service_client::AuthServiceClient;
use tonic::{Code, Status};

use super::RestState;
use super::error::RestError;
use super::sessions::{LoginKey, login_key};
use crate::core::Bearer;

pub const USERNAME_HEADER: &str = "x-openidm-username";
pub const PASSWORD_HEADER: &str = "x-openidm-password";

/// Longest header values decoded: a name of at most 64 characters and a
/// password of at most 1024 bytes fit with room to spare, even
/// percent-encoded (×3) or base64-encoded (×4/3).
const MAX_USERNAME_HEADER: usize = 1024;
const MAX_PASSWORD_HEADER: usize = 4096;
const MAX_AUTHORIZATION_HEADER: usize = 4096;
/// idm's tokens are about 70 bytes.
const MAX_BEARER: usize = 1024;

/// A name and password from the request. Never printed.
#[derive(Clone, PartialEq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// What the request presented.
#[derive(Debug, Clone, PartialEq)]
pub enum Presented {
    /// `X-OpenIDM-Username` + `X-OpenIDM-Password`.
    Headers(Credentials),
    /// `Authorization: Basic`.
    Basic(Credentials),
    /// `Authorization: Bearer`.
    Bearer(String),
    Nothing,
}

/// Reads the credentials of a request, bounded before anything is decoded.
/// The `X-OpenIDM-*` headers win over `Authorization`, as in Wren (its
/// header module runs first).
pub fn presented(headers: &HeaderMap) -> Result<Presented, RestError> {
    let username = headers.get(USERNAME_HEADER);
    let password = headers.get(PASSWORD_HEADER);
    if username.is_some() || password.is_some() {
        let (Some(username), Some(password)) = (username, password) else {
            return Err(RestError::unauthorized());
        };
        if username.len() > MAX_USERNAME_HEADER || password.len() > MAX_PASSWORD_HEADER {
            return Err(RestError::unauthorized());
        }
        let username = decode_rfc5987(username.as_bytes()).ok_or_else(RestError::unauthorized)?;
        let password = decode_rfc5987(password.as_bytes()).ok_or_else(RestError::unauthorized)?;
        return Ok(Presented::Headers(Credentials { username, password }));
    }
    let Some(authorization) = headers.get(header::AUTHORIZATION) else {
        return Ok(Presented::Nothing);
    };
    if authorization.len() > MAX_AUTHORIZATION_HEADER {
        return Err(RestError::unauthorized());
    }
    let value = authorization
        .to_str()
        .map_err(|_| RestError::unauthorized())?
        .trim();
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("basic") {
        let credentials = decode_basic(rest).ok_or_else(|| RestError {
            basic_challenge: true,
            ..RestError::unauthorized()
        })?;
        Ok(Presented::Basic(credentials))
    } else if scheme.eq_ignore_ascii_case("bearer") && !rest.is_empty() && rest.len() <= MAX_BEARER
    {
        Ok(Presented::Bearer(rest.to_string()))
    } else {
        Err(RestError::unauthorized())
    }
}

/// RFC 7617: base64 of `name:password`, UTF-8; the name ends at the first
/// colon.
pub fn decode_basic(encoded: &str) -> Option<Credentials> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (username, password) = text.split_once(':')?;
    Some(Credentials {
        username: username.to_string(),
        password: password.to_string(),
    })
}

/// An `X-OpenIDM-*` value: RFC 5987 `charset'language'pct-encoded`
/// (`UTF-8''J%C3%BCrgen`; ISO-8859-1 too), else the value as sent (UTF-8).
pub fn decode_rfc5987(raw: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(raw).ok()?;
    let mut parts = text.splitn(3, '\'');
    if let (Some(charset), Some(_language), Some(encoded)) =
        (parts.next(), parts.next(), parts.next())
    {
        let bytes: Vec<u8> = percent_encoding::percent_decode_str(encoded).collect();
        if charset.eq_ignore_ascii_case("utf-8") {
            return String::from_utf8(bytes).ok();
        }
        if charset.eq_ignore_ascii_case("iso-8859-1") {
            return Some(bytes.into_iter().map(char::from).collect());
        }
    }
    Some(text.to_string())
}

fn is_state_changing(method: &Method) -> bool {
    matches!(
        *method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    )
}

/// The authenticated caller: the bearer to pass to the core.
///
/// Make core calls with [`Caller::call`], which re-logs-in once when a
/// cached session was revoked meanwhile.
pub struct Caller {
    pub bearer: Bearer,
    /// The name and password this session was opened for, when the request
    /// carried them; with `cached`, whether the session came from the cache.
    login: Option<(Credentials, LoginKey)>,
    cached: bool,
    basic: bool,
    client_address: String,
}

impl Caller {
    /// Runs one core call with the caller's bearer and maps its failure to
    /// Wren's error. If the call is UNAUTHENTICATED and the bearer came from
    /// the session cache, the entry is dropped and the call tried once more
    /// with a fresh login.
    ///
    /// ```ignore
    /// let run = caller.call(&state, |bearer| {
    ///     let mut client = ReconServiceClient::new(state.core.channel());
    ///     async move {
    ///         let request = Core::authorized(&bearer, GetReconRequest { name })?;
    ///         Ok(client.get_recon(request).await?.into_inner())
    ///     }
    /// }).await?;
    /// ```
    pub async fn call<T, F, Fut>(&self, state: &RestState, call: F) -> Result<T, RestError>
    where
        F: Fn(Bearer) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        match call(self.bearer.clone()).await {
            Err(status) if status.code() == Code::Unauthenticated && self.cached => {
                let Some((credentials, key)) = &self.login else {
                    return Err(self.refused(status.into()));
                };
                let fresh = session(
                    state,
                    credentials,
                    *key,
                    &self.client_address,
                    Some(&self.bearer),
                )
                .await
                .map_err(|e| self.refused(e))?;
                call(fresh.0).await.map_err(|s| self.refused(s.into()))
            }
            result => result.map_err(|s| self.refused(s.into())),
        }
    }

    /// The cache key of the login this session came from, if any.
    pub fn login_key(&self) -> Option<&LoginKey> {
        self.login.as_ref().map(|(_, key)| key)
    }

    fn refused(&self, mut error: RestError) -> RestError {
        error.basic_challenge = error.code == 401 && self.basic;
        error
    }
}

/// The session for a name and password, and whether it came from the
/// cache: the cached one unless it is `stale`, else a login, one at a time
/// per name and password (a login that was waiting finds the session the
/// one before it opened).
async fn session(
    state: &RestState,
    credentials: &Credentials,
    key: LoginKey,
    client_address: &str,
    stale: Option<&Bearer>,
) -> Result<(Bearer, bool), RestError> {
    let fresh = |bearer: &Bearer| stale.is_none_or(|stale| stale.0 != bearer.0);
    if let Some(bearer) = state.sessions.get(&key).filter(fresh) {
        return Ok((bearer, true));
    }
    let _turn = state.sessions.login_turn(&key).await;
    if let Some(bearer) = state.sessions.get(&key).filter(fresh) {
        return Ok((bearer, true));
    }
    if stale.is_some() {
        state.sessions.forget(&key);
    }
    Ok((login(state, credentials, key, client_address).await?, false))
}

/// `AuthService.Login` for a name and password; the session is remembered
/// for the shorter of the cache's TTL, its idle timeout and its remaining
/// life.
async fn login(
    state: &RestState,
    credentials: &Credentials,
    key: LoginKey,
    client_address: &str,
) -> Result<Bearer, RestError> {
    let mut auth = AuthServiceClient::new(state.core.channel());
    let response = auth
        .login(LoginRequest {
            username: credentials.username.clone(),
            password: credentials.password.clone(),
            client_address: client_address.to_string(),
        })
        .await
        .map_err(RestError::from)?
        .into_inner();
    let bearer = Bearer(response.session_token);
    let idle = response
        .idle_timeout
        .and_then(|d| Duration::try_from(d).ok())
        .unwrap_or(Duration::ZERO);
    let remaining = response
        .expire_time
        .and_then(|end| {
            let end = time::OffsetDateTime::from_unix_timestamp(end.seconds).ok()?;
            let left = end - time::OffsetDateTime::now_utc();
            Duration::try_from(left).ok()
        })
        .unwrap_or(Duration::ZERO);
    state.sessions.put(key, &bearer, idle.min(remaining));
    Ok(bearer)
}

impl FromRequestParts<RestState> for Caller {
    type Rejection = RestError;

    async fn from_request_parts(parts: &mut Parts, state: &RestState) -> Result<Self, RestError> {
        let presented = presented(&parts.headers)?;
        // Behind a trusted proxy, the address it forwarded for (logins are
        // throttled and audited by it); else the peer.
        let client_address = match parts.extensions.get::<ClientAddress>() {
            Some(ClientAddress(client)) => client.to_string(),
            None => parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(peer)| peer.ip().to_string())
                .unwrap_or_default(),
        };
        let (credentials, basic) = match presented {
            Presented::Headers(credentials) => (credentials, false),
            Presented::Basic(credentials) => (credentials, true),
            Presented::Bearer(token) => {
                let bearer = Bearer(token);
                state.core.verify_bearer(&bearer).await?;
                return Ok(Caller {
                    bearer,
                    login: None,
                    cached: false,
                    basic: false,
                    client_address,
                });
            }
            Presented::Nothing => {
                if is_state_changing(&parts.method) && parts.headers.contains_key(header::COOKIE) {
                    return Err(RestError::forbidden(
                        "a state-changing request must carry X-OpenIDM-Username and \
                         X-OpenIDM-Password or an Authorization header; a cookie alone is refused",
                    ));
                }
                return Err(RestError::unauthorized());
            }
        };
        let challenge = |mut error: RestError| {
            error.basic_challenge = error.code == 401 && basic;
            error
        };
        let key = login_key(&credentials.username, &credentials.password);
        let (bearer, cached) = session(state, &credentials, key, &client_address, None)
            .await
            .map_err(challenge)?;
        Ok(Caller {
            bearer,
            login: Some((credentials, key)),
            cached,
            basic,
            client_address,
        })
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(
                axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    fn creds(username: &str, password: &str) -> Credentials {
        Credentials {
            username: username.into(),
            password: password.into(),
        }
    }

    #[test]
    fn basic_is_utf8_and_splits_at_the_first_colon() {
        let encoded = base64::engine::general_purpose::STANDARD.encode("jürgen:pa:ss wörd");
        assert_eq!(decode_basic(&encoded), Some(creds("jürgen", "pa:ss wörd")));
        assert_eq!(decode_basic("not base64!"), None);
        let no_colon = base64::engine::general_purpose::STANDARD.encode("nocolon");
        assert_eq!(decode_basic(&no_colon), None);
        let latin1 = base64::engine::general_purpose::STANDARD.encode([0xe9, b':', b'x']);
        assert_eq!(decode_basic(&latin1), None);
    }

    #[test]
    fn rfc5987_values_are_decoded() {
        assert_eq!(
            decode_rfc5987(b"UTF-8''J%C3%BCrgen").as_deref(),
            Some("Jürgen")
        );
        assert_eq!(
            decode_rfc5987(b"utf-8'en'%E2%82%AC%20rates").as_deref(),
            Some("€ rates")
        );
        assert_eq!(
            decode_rfc5987(b"ISO-8859-1''%E9t%E9").as_deref(),
            Some("été")
        );
        assert_eq!(decode_rfc5987(b"UTF-8''%FF%FE"), None);
        assert_eq!(decode_rfc5987(b"plain-pass").as_deref(), Some("plain-pass"));
        // An apostrophe in a plain password is not an encoding.
        assert_eq!(decode_rfc5987(b"it's'mine").as_deref(), Some("it's'mine"));
    }

    #[test]
    fn headers_win_and_both_are_needed() {
        let basic = base64::engine::general_purpose::STANDARD.encode("a:b");
        let map = headers(&[
            ("x-openidm-username", "openidm-admin"),
            ("x-openidm-password", "UTF-8''s%C3%A9cret"),
            ("authorization", &format!("Basic {basic}")),
        ]);
        assert_eq!(
            presented(&map).unwrap(),
            Presented::Headers(creds("openidm-admin", "sécret"))
        );
        let half = headers(&[("x-openidm-username", "openidm-admin")]);
        assert_eq!(presented(&half).unwrap_err().code, 401);
    }

    #[test]
    fn authorization_schemes() {
        let basic = base64::engine::general_purpose::STANDARD.encode("a:b");
        assert_eq!(
            presented(&headers(&[("authorization", &format!("basic {basic}"))])).unwrap(),
            Presented::Basic(creds("a", "b"))
        );
        assert_eq!(
            presented(&headers(&[("authorization", "Bearer tok")])).unwrap(),
            Presented::Bearer("tok".into())
        );
        assert_eq!(presented(&HeaderMap::new()).unwrap(), Presented::Nothing);
        let bad_basic = presented(&headers(&[("authorization", "Basic !!!")])).unwrap_err();
        assert!(bad_basic.basic_challenge);
        assert_eq!(
            presented(&headers(&[("authorization", "Digest x")]))
                .unwrap_err()
                .code,
            401
        );
    }

    #[test]
    fn oversized_headers_are_refused_before_decoding() {
        let long = "a".repeat(MAX_PASSWORD_HEADER + 1);
        let map = headers(&[("x-openidm-username", "u"), ("x-openidm-password", &long)]);
        assert_eq!(presented(&map).unwrap_err().code, 401);
        let long_bearer = format!("Bearer {}", "t".repeat(MAX_BEARER + 1));
        assert_eq!(
            presented(&headers(&[("authorization", &long_bearer)]))
                .unwrap_err()
                .code,
            401
        );
        let long_basic = format!("Basic {}", "Q".repeat(MAX_AUTHORIZATION_HEADER));
        assert_eq!(
            presented(&headers(&[("authorization", &long_basic)]))
                .unwrap_err()
                .code,
            401
        );
    }

    #[test]
    fn credentials_never_print_the_password() {
        let printed = format!("{:?}", creds("alice", "s3cr3t"));
        assert!(!printed.contains("s3cr3t"), "{printed}");
    }
}
