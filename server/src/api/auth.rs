//! Bearer-token authentication. Tokens live in the store (hashed); a copy is
//! kept in memory so the interceptor checks a request without a store round
//! trip, refreshed from the store every few seconds for other nodes' changes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use idm_proto::v1::Scope;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tonic::{Request, Status};

use super::sessions::{LastUses, Touch};
use crate::store::{Store, StoreError, TokenKind, TokenRecord, format_timestamp, now_timestamp};

/// The actor name of the bootstrap token from `IDM_ADMIN_TOKEN`.
pub const BOOTSTRAP_ACTOR: &str = "bootstrap";
const REFRESH_EVERY: Duration = Duration::from_secs(5);
/// Every how many refreshes ended sessions are deleted from the store.
const PURGE_EVERY_REFRESHES: u32 = 12;

/// Who is calling, put into the request's extensions by the interceptor.
#[derive(Debug, Clone)]
pub struct Caller {
    pub token_id: String,
    pub scope: Scope,
    /// The account of a login session; `None` for an API token.
    pub account: Option<String>,
}

impl Caller {
    /// Who the audit trail names: the account of a session, else the token id.
    pub fn actor(&self) -> &str {
        self.account.as_deref().unwrap_or(&self.token_id)
    }

    /// PERMISSION_DENIED unless the caller's scope covers `needed`.
    pub fn require(&self, needed: Scope) -> Result<(), Status> {
        if covers(self.scope, needed) {
            Ok(())
        } else {
            Err(Status::permission_denied(format!(
                "this needs {} scope; the token has {}",
                scope_name(needed),
                scope_name(self.scope)
            )))
        }
    }
}

/// Whether a token of scope `have` may do what needs `needed`. `read` <
/// `scim` < `admin` are ranked; `verify-password` stands apart: it grants
/// only VerifyPassword, which of the others only `admin` may call.
fn covers(have: Scope, needed: Scope) -> bool {
    match (have, needed) {
        (Scope::Unspecified, _) => false,
        (Scope::Admin, _) => true,
        (Scope::VerifyPassword, needed) => needed == Scope::VerifyPassword,
        (_, Scope::VerifyPassword) => false,
        (have, needed) => rank(have) >= rank(needed),
    }
}

fn rank(scope: Scope) -> u8 {
    match scope {
        Scope::Unspecified | Scope::VerifyPassword => 0,
        Scope::Read => 1,
        Scope::Scim => 2,
        Scope::Admin => 3,
    }
}

pub fn scope_name(scope: Scope) -> &'static str {
    match scope {
        Scope::Unspecified => "no",
        Scope::Read => "read",
        Scope::Scim => "scim",
        Scope::Admin => "admin",
        Scope::VerifyPassword => "verify-password",
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

/// The caller the interceptor attached to a request.
pub fn caller<T>(request: &Request<T>) -> Result<Caller, Status> {
    request
        .extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| Status::unauthenticated("missing bearer token"))
}

pub struct TokenRegistry {
    store: Store,
    bootstrap_hash: Option<[u8; 32]>,
    tokens: RwLock<HashMap<String, TokenRecord>>,
    /// Sessions' last uses, kept apart from `tokens` so a refresh keeps them.
    last_uses: LastUses,
    /// This node's own writes, so a refresh whose read began before one of
    /// them does not undo it (a login not yet known, a logout forgotten).
    local: Mutex<LocalWrites>,
}

/// Records this node wrote to the store, numbered in order.
#[derive(Default)]
struct LocalWrites {
    next: u64,
    records: Vec<(u64, TokenRecord)>,
}

impl TokenRegistry {
    pub async fn load(
        store: Store,
        bootstrap_token: Option<&str>,
    ) -> Result<Arc<Self>, StoreError> {
        let registry = Arc::new(TokenRegistry {
            store,
            bootstrap_hash: bootstrap_token.filter(|t| !t.is_empty()).map(sha256),
            tokens: RwLock::new(HashMap::new()),
            last_uses: LastUses::default(),
            local: Mutex::default(),
        });
        registry.refresh().await?;
        Ok(registry)
    }

    async fn refresh(&self) -> Result<(), StoreError> {
        let mark = self.local.lock().map_or(0, |local| local.next);
        let tokens = self.store.list_tokens().await?;
        self.install(tokens, mark);
        Ok(())
    }

    /// Replaces the in-memory table with what the store held when a read
    /// began at `mark`, plus this node's writes since (written to the store
    /// before they were remembered, so earlier ones are in the read).
    fn install(&self, tokens: Vec<TokenRecord>, mark: u64) {
        let mut map: HashMap<String, TokenRecord> =
            tokens.into_iter().map(|t| (t.tid.clone(), t)).collect();
        if let Ok(mut local) = self.local.lock() {
            local.records.retain(|(n, _)| *n >= mark);
            for (_, record) in &local.records {
                map.insert(record.tid.clone(), record.clone());
            }
        }
        self.last_uses.retain(|tid| map.contains_key(tid));
        if let Ok(mut guard) = self.tokens.write() {
            *guard = map;
        }
    }

    /// A record this node has just written to the store.
    fn remember(&self, record: &TokenRecord) {
        if let Ok(mut local) = self.local.lock() {
            let n = local.next;
            local.next += 1;
            local.records.push((n, record.clone()));
        }
        if let Ok(mut guard) = self.tokens.write() {
            guard.insert(record.tid.clone(), record.clone());
        }
    }

    /// Keeps the in-memory copy in step with the store: re-reads the token
    /// table every few seconds (and deletes ended sessions now and then)
    /// until `stop`. Run under the supervisor (`idm.tokens`).
    pub async fn run_refresh(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        for round in 1u32.. {
            tokio::select! {
                () = tokio::time::sleep(REFRESH_EVERY) => {}
                _ = stop.wait_for(|stop| *stop) => return,
            }
            if round % PURGE_EVERY_REFRESHES == 0
                && let Err(e) = self.store.purge_sessions(&now_timestamp()).await
            {
                tracing::warn!(error = %e, "deleting ended sessions failed");
            }
            if let Err(e) = self.refresh().await {
                tracing::warn!(error = %e, "refreshing API tokens failed");
            }
        }
    }

    pub fn has_bootstrap(&self) -> bool {
        self.bootstrap_hash.is_some()
    }

    /// The caller a bearer secret stands for.
    pub fn authenticate(&self, secret: &str) -> Result<Caller, Status> {
        let presented = sha256(secret);
        if let Some(bootstrap) = &self.bootstrap_hash
            && bool::from(presented.ct_eq(bootstrap))
        {
            return Ok(Caller {
                token_id: BOOTSTRAP_ACTOR.into(),
                scope: Scope::Admin,
                account: None,
            });
        }
        let unknown = || Status::unauthenticated("invalid bearer token");
        let tid = token_id(secret).ok_or_else(unknown)?;
        let guard = self
            .tokens
            .read()
            .map_err(|_| Status::internal("token registry unavailable"))?;
        let record = guard.get(tid).ok_or_else(unknown)?;
        let stored = hex_decode(&record.hash).ok_or_else(unknown)?;
        if !bool::from(presented.as_slice().ct_eq(stored.as_slice())) {
            return Err(unknown());
        }
        let what = match record.kind {
            TokenKind::Token => "token",
            TokenKind::Session => "session",
        };
        if record.revoked {
            return Err(Status::unauthenticated(format!("the {what} was revoked")));
        }
        let now = time::OffsetDateTime::now_utc();
        if record
            .expires
            .as_deref()
            .is_some_and(|e| e <= format_timestamp(now).as_str())
        {
            return Err(Status::unauthenticated(format!("the {what} has expired")));
        }
        let scope = parse_scope(&record.scope).ok_or_else(unknown)?;
        if record.kind == TokenKind::Session {
            match self.last_uses.touch(record, now) {
                Touch::Expired => {
                    return Err(Status::unauthenticated(
                        "the session has expired (idle too long)",
                    ));
                }
                Touch::Alive => {}
                Touch::Write(at) => self.write_last_use(&record.tid, at),
            }
        }
        Ok(Caller {
            token_id: record.tid.clone(),
            scope,
            account: record
                .account
                .clone()
                .filter(|_| record.kind == TokenKind::Session),
        })
    }

    /// Writes a session's last use in the background: the interceptor does
    /// not wait for the store.
    fn write_last_use(&self, tid: &str, at: String) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let store = self.store.clone();
        let tid = tid.to_string();
        runtime.spawn(async move {
            if let Err(e) = store.touch_session(&tid, &at).await {
                tracing::warn!(error = %e, session = %tid, "writing a session's last use failed");
            }
        });
    }

    /// The record behind a caller (its expiry, idle timeout); `None` for the
    /// bootstrap token.
    pub fn record(&self, tid: &str) -> Option<TokenRecord> {
        self.tokens.read().ok()?.get(tid).cloned()
    }

    /// Opens a login session for `account`; returns its record and secret.
    pub async fn create_session(
        &self,
        account: &str,
        scope: Scope,
        lifetime: Duration,
        idle: Duration,
    ) -> Result<(TokenRecord, String), StoreError> {
        let now = time::OffsetDateTime::now_utc();
        let expires = now
            .checked_add(time::Duration::try_from(lifetime).unwrap_or(time::Duration::DAY))
            .map(format_timestamp);
        let (tid, secret, hash) = new_secret();
        let record = TokenRecord {
            tid,
            scope: scope_name(scope).into(),
            description: format!("login session of {account}"),
            hash,
            created: format_timestamp(now),
            expires,
            revoked: false,
            kind: TokenKind::Session,
            account: Some(account.to_string()),
            idle_timeout: Some(i64::try_from(idle.as_secs()).unwrap_or(i64::MAX).max(1)),
            last_used: None,
        };
        self.store.insert_token(&record).await?;
        self.remember(&record);
        Ok((record, secret))
    }

    /// Ends every session of `account` (disabled, deleted, new password).
    pub async fn revoke_sessions(&self, account: &str) -> Result<usize, StoreError> {
        let revoked = self.store.revoke_sessions(account).await?;
        for record in &revoked {
            self.remember(record);
        }
        Ok(revoked.len())
    }

    /// Creates a token; returns its record and the secret, shown once.
    pub async fn create(
        &self,
        scope: Scope,
        description: String,
        expires: Option<String>,
    ) -> Result<(TokenRecord, String), StoreError> {
        let (tid, secret, hash) = new_secret();
        let record = TokenRecord {
            tid,
            scope: scope_name(scope).into(),
            description,
            hash,
            created: now_timestamp(),
            expires,
            revoked: false,
            kind: TokenKind::Token,
            account: None,
            idle_timeout: None,
            last_used: None,
        };
        self.store.insert_token(&record).await?;
        self.remember(&record);
        Ok((record, secret))
    }

    pub async fn revoke(&self, tid: &str) -> Result<Option<TokenRecord>, StoreError> {
        let revoked = self.store.revoke_token(tid).await?;
        if let Some(record) = &revoked {
            self.remember(record);
        }
        Ok(revoked)
    }

    pub async fn list(&self) -> Result<Vec<TokenRecord>, StoreError> {
        self.store.list_tokens().await
    }
}

/// A new id, bearer secret `idm_<id>_<random>` and the hex SHA-256 kept of it.
fn new_secret() -> (String, String, String) {
    let tid = hex(&rand::random::<[u8; 8]>());
    let secret = format!(
        "idm_{tid}_{}",
        URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
    );
    let hash = hex(&sha256(&secret));
    (tid, secret, hash)
}

/// `idm_<id>_<secret>` → `<id>`.
fn token_id(secret: &str) -> Option<&str> {
    secret
        .strip_prefix("idm_")?
        .split_once('_')
        .map(|(id, _)| id)
}

fn sha256(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hex_decode(text: &str) -> Option<Vec<u8>> {
    (0..text.len())
        .step_by(2)
        .map(|i| {
            text.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect()
}

/// The one RPC callable without a bearer: logging in is how a person gets one.
pub const OPEN_METHOD: &str = "/idm.v1.AuthService/Login";

/// Marks a request to [`OPEN_METHOD`] for the interceptor. Set by
/// [`OpenLogin`] from the request path; a client cannot set extensions.
#[derive(Clone, Copy)]
struct OpenCall;

/// Wraps the (intercepted) AuthService so that Login passes the interceptor
/// without a bearer; its other methods need one like every other call.
#[derive(Clone)]
pub struct OpenLogin<S>(pub S);

impl<S: tonic::server::NamedService> tonic::server::NamedService for OpenLogin<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> tonic::codegen::Service<tonic::codegen::http::Request<B>> for OpenLogin<S>
where
    S: tonic::codegen::Service<tonic::codegen::http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, mut request: tonic::codegen::http::Request<B>) -> Self::Future {
        if request.uri().path() == OPEN_METHOD {
            request.extensions_mut().insert(OpenCall);
        }
        self.0.call(request)
    }
}

/// The tonic interceptor: every call but health and Login carries a valid
/// bearer token.
#[derive(Clone)]
pub struct Authenticate(pub Arc<TokenRegistry>);

impl tonic::service::Interceptor for Authenticate {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if request.extensions().get::<OpenCall>().is_some() {
            return Ok(request);
        }
        let header = request
            .metadata()
            .get("authorization")
            .ok_or_else(|| Status::unauthenticated("missing authorization: Bearer <token>"))?;
        let value = header
            .to_str()
            .map_err(|_| Status::unauthenticated("malformed authorization header"))?;
        let secret = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .ok_or_else(|| Status::unauthenticated("authorization must be \"Bearer <token>\""))?;
        let caller = self.0.authenticate(secret.trim())?;
        super::trail::actor(request.extensions(), caller.actor());
        request.extensions_mut().insert(caller);
        Ok(request)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_refresh_that_read_before_a_local_write_does_not_undo_it() {
        let store = Store::open("mem://").await.unwrap();
        let registry = TokenRegistry::load(store.clone(), None).await.unwrap();
        let (_, kept) = registry
            .create(Scope::Read, String::new(), None)
            .await
            .unwrap();
        let (revoked, _) = registry
            .create(Scope::Read, String::new(), None)
            .await
            .unwrap();
        let hour = Duration::from_secs(3600);
        // A refresh reads the store…
        let mark = registry.local.lock().unwrap().next;
        let read = store.list_tokens().await.unwrap();
        // …this node logs in and revokes meanwhile…
        let (_, session) = registry
            .create_session("alice", Scope::Read, hour, hour)
            .await
            .unwrap();
        registry.revoke(&revoked.tid).await.unwrap();
        // …and the refresh installs its older read.
        registry.install(read, mark);
        assert!(registry.authenticate(&session).is_ok(), "the login is kept");
        assert!(registry.authenticate(&kept).is_ok());
        assert!(
            registry.record(&revoked.tid).unwrap().revoked,
            "the revocation is kept"
        );
        // The next refresh reads them from the store and forgets the local copies.
        registry.refresh().await.unwrap();
        assert!(registry.local.lock().unwrap().records.is_empty());
        assert!(registry.authenticate(&session).is_ok());
        assert!(registry.record(&revoked.tid).unwrap().revoked);
    }

    #[test]
    fn verify_password_scope_stands_apart_from_the_ranked_ones() {
        let all = [
            Scope::Read,
            Scope::Scim,
            Scope::Admin,
            Scope::VerifyPassword,
        ];
        for needed in all {
            assert!(covers(Scope::Admin, needed), "admin covers {needed:?}");
            assert!(!covers(Scope::Unspecified, needed));
        }
        assert!(covers(Scope::VerifyPassword, Scope::VerifyPassword));
        for other in [Scope::Read, Scope::Scim, Scope::Admin] {
            assert!(!covers(Scope::VerifyPassword, other), "{other:?}");
        }
        for weaker in [Scope::Read, Scope::Scim] {
            assert!(!covers(weaker, Scope::VerifyPassword), "{weaker:?}");
        }
        assert!(covers(Scope::Scim, Scope::Read));
        assert!(!covers(Scope::Read, Scope::Scim));
        for scope in all {
            assert_eq!(parse_scope(scope_name(scope)), Some(scope));
        }
    }
}
