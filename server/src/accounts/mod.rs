//! Accounts of people (`internal/user/<name>`) and their logins: create,
//! re-set, enable, disable and delete accounts; check a name and password
//! into a session (throttled, one answer and one cost for every failure);
//! the bootstrap admin from `IDM_ADMIN_PASSWORD`. Sessions are bearer records
//! in the token registry, so every front end authenticates them as it does
//! API tokens. A password is never returned, logged or audited.

pub mod rules;
pub mod throttle;

use std::sync::Arc;
use std::time::Duration;

use idm_proto::v1::Scope;

use crate::api::auth::{TokenRegistry, parse_scope, scope_name};
use crate::secrets::{self, SecretError};
use crate::store::{
    AccountChange, AccountChanged, AccountRecord, Store, StoreError, TokenRecord, now_timestamp,
};
pub use rules::Violation;
pub use throttle::{LoginLimits, LoginThrottle};

/// The account `IDM_ADMIN_PASSWORD` creates or re-sets.
pub const BOOTSTRAP_ACCOUNT: &str = "openidm-admin";
/// The environment variable with the bootstrap admin's password.
pub const ADMIN_PASSWORD_ENV: &str = "IDM_ADMIN_PASSWORD";
/// How much of a tried name is kept for throttling and the audit trail.
pub const MAX_TRIED_NAME: usize = 128;

/// How long sessions last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionPolicy {
    /// A session ends after this long without a call.
    pub idle_timeout: Duration,
    /// A session ends this long after the login, used or not.
    pub lifetime: Duration,
}

impl Default for SessionPolicy {
    fn default() -> Self {
        SessionPolicy {
            idle_timeout: Duration::from_secs(30 * 60),
            lifetime: Duration::from_secs(8 * 3600),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("{}: {}", .0.field, .0.message)]
    Invalid(Violation),
    #[error("internal/user/{0} does not exist")]
    NotFound(String),
    #[error("internal/user/{0} already exists")]
    AlreadyExists(String),
    /// The change would leave no enabled admin account.
    #[error(
        "internal/user/{0} is the last enabled admin account; make another account an admin first"
    )]
    LastAdmin(String),
    /// A wrong password, an unknown name or a disabled account: one answer.
    #[error("invalid username or password")]
    LoginRefused {
        /// For the audit trail only, never the reply.
        disabled: bool,
    },
    #[error("too many failed logins; try again later")]
    Throttled { retry_after: Duration },
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Secret(#[from] SecretError),
}

impl From<Violation> for AccountError {
    fn from(v: Violation) -> Self {
        AccountError::Invalid(v)
    }
}

/// A session opened by a login.
#[derive(Debug)]
pub struct Session {
    pub record: TokenRecord,
    /// The bearer secret: handed to the caller once, never logged.
    pub secret: String,
    pub scope: Scope,
    pub idle_timeout: Duration,
}

/// Where a login came from.
#[derive(Debug, Clone)]
pub struct LoginSource {
    /// What the front end says the person connected from, else the peer.
    pub address: String,
    /// The gRPC peer's IP.
    pub peer: String,
}

#[derive(Clone)]
pub struct Accounts {
    store: Store,
    sessions: Arc<TokenRegistry>,
    throttle: Arc<LoginThrottle>,
    policy: SessionPolicy,
}

impl Accounts {
    pub fn new(
        store: Store,
        sessions: Arc<TokenRegistry>,
        limits: LoginLimits,
        policy: SessionPolicy,
    ) -> Self {
        Accounts {
            store,
            sessions,
            throttle: Arc::new(LoginThrottle::new(limits)),
            policy,
        }
    }

    #[tracing::instrument(skip_all, fields(account = %name))]
    pub async fn create(
        &self,
        name: &str,
        password: &str,
        role: Scope,
    ) -> Result<AccountRecord, AccountError> {
        let name = rules::account_name(name)?;
        let role = role_name(role)?;
        rules::new_password(password)?;
        let hash = secrets::hash_password(password.to_string()).await?;
        let account = AccountRecord {
            name: name.to_string(),
            role: role.into(),
            enabled: true,
            created: now_timestamp(),
            last_login: None,
        };
        self.store
            .insert_account(&account, &hash)
            .await
            .map_err(|e| match e {
                StoreError::AlreadyExists(_) => AccountError::AlreadyExists(name.into()),
                other => other.into(),
            })?;
        tracing::info!(role, "account created");
        Ok(account)
    }

    pub async fn list(&self) -> Result<Vec<AccountRecord>, AccountError> {
        Ok(self.store.list_accounts().await?)
    }

    pub async fn get(&self, name: &str) -> Result<AccountRecord, AccountError> {
        let name = rules::account_name(name)?;
        self.store
            .get_account(name)
            .await?
            .ok_or_else(|| AccountError::NotFound(name.into()))
    }

    /// A new password; the account's sessions end.
    #[tracing::instrument(skip_all, fields(account = %name))]
    pub async fn set_password(
        &self,
        name: &str,
        password: &str,
    ) -> Result<AccountRecord, AccountError> {
        let name = rules::account_name(name)?;
        rules::new_password(password)?;
        let hash = secrets::hash_password(password.to_string()).await?;
        let account = self
            .store
            .set_account_hash(name, &hash)
            .await?
            .ok_or_else(|| AccountError::NotFound(name.into()))?;
        self.end_sessions(name).await?;
        tracing::info!("account password set");
        Ok(account)
    }

    /// A new role; if it changed, the account's sessions end (a session
    /// carries the role it was opened with). The last enabled admin keeps
    /// its role.
    #[tracing::instrument(skip_all, fields(account = %name))]
    pub async fn set_role(&self, name: &str, role: Scope) -> Result<AccountRecord, AccountError> {
        let name = rules::account_name(name)?;
        let role = role_name(role)?;
        let (before, after) = self
            .change(name, &AccountChange::Role(role.to_string()))
            .await?;
        if before.role != role {
            self.end_sessions(name).await?;
            tracing::info!(from = %before.role, to = role, "account role set");
        }
        Ok(after.unwrap_or(before))
    }

    /// Enables or disables; disabling ends the account's sessions. The last
    /// enabled admin cannot be disabled.
    #[tracing::instrument(skip_all, fields(account = %name, enabled))]
    pub async fn set_enabled(
        &self,
        name: &str,
        enabled: bool,
    ) -> Result<AccountRecord, AccountError> {
        let name = rules::account_name(name)?;
        let (before, after) = self.change(name, &AccountChange::Enabled(enabled)).await?;
        if !enabled {
            self.end_sessions(name).await?;
        }
        tracing::info!("account {}", if enabled { "enabled" } else { "disabled" });
        Ok(after.unwrap_or(before))
    }

    /// Deletes an account (an unknown one too) and ends its sessions. The
    /// last enabled admin cannot be deleted.
    #[tracing::instrument(skip_all, fields(account = %name))]
    pub async fn delete(&self, name: &str) -> Result<(), AccountError> {
        let name = rules::account_name(name)?;
        let existed = match self.change(name, &AccountChange::Delete).await {
            Ok(_) => true,
            Err(AccountError::NotFound(_)) => false,
            Err(e) => return Err(e),
        };
        self.end_sessions(name).await?;
        if existed {
            tracing::info!("account deleted");
        }
        Ok(())
    }

    /// One guarded change: the account before and after it.
    async fn change(
        &self,
        name: &str,
        change: &AccountChange,
    ) -> Result<(AccountRecord, Option<AccountRecord>), AccountError> {
        match self.store.change_account(name, change).await? {
            AccountChanged::Done { before, after } => Ok((*before, after.map(|a| *a))),
            AccountChanged::Missing => Err(AccountError::NotFound(name.into())),
            AccountChanged::LastAdmin => Err(AccountError::LastAdmin(name.into())),
        }
    }

    async fn end_sessions(&self, name: &str) -> Result<(), AccountError> {
        let ended = self.sessions.revoke_sessions(name).await?;
        if ended > 0 {
            tracing::info!(sessions = ended, "sessions of the account ended");
        }
        Ok(())
    }

    /// Creates `openidm-admin` (admin, enabled) with `password`, or re-sets
    /// it if it differs in password, role or enabled flag (then its sessions
    /// end). A weak password stops here with the rule, never the value.
    pub async fn bootstrap_admin(&self, password: &str) -> Result<(), AccountError> {
        rules::new_password(password).map_err(|v| {
            AccountError::Invalid(Violation {
                field: ADMIN_PASSWORD_ENV,
                message: v.message,
            })
        })?;
        if let Some(current) = self.store.account_secret(BOOTSTRAP_ACCOUNT).await?
            && current.enabled
            && current.role == scope_name(Scope::Admin)
            && secrets::verify_password(password.to_string(), current.hash).await
        {
            tracing::info!(
                account = BOOTSTRAP_ACCOUNT,
                "bootstrap admin account unchanged"
            );
            return Ok(());
        }
        let hash = secrets::hash_password(password.to_string()).await?;
        self.store
            .upsert_account(
                BOOTSTRAP_ACCOUNT,
                &hash,
                scope_name(Scope::Admin),
                &now_timestamp(),
            )
            .await?;
        self.end_sessions(BOOTSTRAP_ACCOUNT).await?;
        tracing::info!(
            account = BOOTSTRAP_ACCOUNT,
            "bootstrap admin account set from {ADMIN_PASSWORD_ENV}"
        );
        Ok(())
    }

    /// Checks `name` and `password` and opens a session. Every failure
    /// costs one argon2 verification and answers `LoginRefused`; a locked
    /// name or source answers `Throttled` without looking.
    #[tracing::instrument(skip_all, fields(source = %from.address))]
    pub async fn login(
        &self,
        name: &str,
        password: &str,
        from: &LoginSource,
    ) -> Result<Session, AccountError> {
        let result = self.check_login(name, password, from).await;
        crate::metrics::login(login_outcome(&result));
        result
    }

    async fn check_login(
        &self,
        name: &str,
        password: &str,
        from: &LoginSource,
    ) -> Result<Session, AccountError> {
        let tried = tried_name(name);
        let attempt = self
            .throttle
            .begin(&tried, &from.address, &from.peer)
            .map_err(|retry_after| AccountError::Throttled { retry_after })?;
        let stored = match rules::account_name(name) {
            Ok(valid) if valid == name => self.store.account_secret(name).await?,
            _ => None,
        };
        let hash = match &stored {
            Some(secret) => secret.hash.clone(),
            None => crate::managed::dummy_hash().await,
        };
        // Longer than any password can be: not worth hashing.
        let matched = password.len() <= rules::MAX_PASSWORD_BYTES
            && secrets::verify_password(password.to_string(), hash).await;
        let account = match stored {
            Some(secret) if matched && secret.enabled => secret,
            Some(_) if matched => {
                self.throttle.failed(attempt);
                return Err(AccountError::LoginRefused { disabled: true });
            }
            _ => {
                self.throttle.failed(attempt);
                return Err(AccountError::LoginRefused { disabled: false });
            }
        };
        let scope = parse_scope(&account.role)
            .filter(|s| *s != Scope::VerifyPassword)
            .ok_or_else(|| {
                StoreError::Decode(format!("internal/user/{name}: role \"{}\"", account.role))
            })?;
        self.throttle.succeeded(attempt);
        let created = self
            .sessions
            .create_session(
                name,
                scope,
                self.policy.lifetime,
                self.policy.idle_timeout,
                Some(&account),
            )
            .await?;
        // Disabled, deleted, or given another role or password since the check.
        let Some((record, secret)) = created else {
            return Err(AccountError::LoginRefused { disabled: false });
        };
        if let Err(e) = self.store.set_last_login(name, &record.created).await {
            tracing::warn!(error = %e, "recording the last login failed");
        }
        tracing::info!(account = %name, session = %record.tid, "logged in");
        Ok(Session {
            record,
            secret,
            scope,
            idle_timeout: self.policy.idle_timeout,
        })
    }
}

/// The `outcome` label of a login's `idm_logins_total`.
fn login_outcome<T>(result: &Result<T, AccountError>) -> &'static str {
    match result {
        Ok(_) => "success",
        Err(AccountError::LoginRefused { .. }) => "failed",
        Err(AccountError::Throttled { .. }) => "throttled",
        Err(_) => "error",
    }
}

/// A role given over the API: one of the ranked scopes.
fn role_name(role: Scope) -> Result<&'static str, Violation> {
    match role {
        Scope::Read | Scope::Scim | Scope::Admin => Ok(scope_name(role)),
        Scope::Unspecified | Scope::VerifyPassword => Err(Violation {
            field: "role",
            message: "a role is one of read, scim, admin".into(),
        }),
    }
}

/// The name tried, bounded, as the throttle and the audit trail keep it.
pub fn tried_name(name: &str) -> String {
    match name.char_indices().nth(MAX_TRIED_NAME) {
        Some((end, _)) => format!("{}…", &name[..end]),
        None => name.to_string(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    async fn accounts(limits: LoginLimits) -> Accounts {
        let store = Store::open("mem://").await.unwrap();
        let registry = TokenRegistry::load(store.clone(), None).await.unwrap();
        Accounts::new(store, registry, limits, SessionPolicy::default())
    }

    fn from(address: &str) -> LoginSource {
        LoginSource {
            address: address.into(),
            peer: "127.0.0.1".into(),
        }
    }

    #[tokio::test]
    async fn a_login_opens_a_session_with_the_accounts_role() {
        let accounts = accounts(LoginLimits::default()).await;
        accounts
            .create("alice", "Correct-Horse-1", Scope::Read)
            .await
            .unwrap();
        let session = accounts
            .login("alice", "Correct-Horse-1", &from("a"))
            .await
            .unwrap();
        assert_eq!(session.scope, Scope::Read);
        let caller = accounts.sessions.authenticate(&session.secret).unwrap();
        assert_eq!((caller.actor(), caller.scope), ("alice", Scope::Read));
        let got = accounts.get("internal/user/alice").await.unwrap();
        assert_eq!(
            got.last_login.as_deref(),
            Some(session.record.created.as_str())
        );
        // A new password ends it.
        accounts
            .set_password("alice", "Battery-Staple-2")
            .await
            .unwrap();
        assert!(accounts.sessions.authenticate(&session.secret).is_err());
    }

    #[tokio::test]
    async fn a_new_role_ends_sessions_and_the_last_admin_keeps_its_role() {
        let accounts = accounts(LoginLimits::default()).await;
        accounts
            .create("alice", "Correct-Horse-1", Scope::Admin)
            .await
            .unwrap();
        let session = accounts
            .login("alice", "Correct-Horse-1", &from("a"))
            .await
            .unwrap();
        let last = accounts.set_role("alice", Scope::Read).await.unwrap_err();
        assert!(matches!(last, AccountError::LastAdmin(_)), "{last}");
        assert!(accounts.sessions.authenticate(&session.secret).is_ok());
        // Unchanged: the session goes on.
        accounts.set_role("alice", Scope::Admin).await.unwrap();
        assert!(accounts.sessions.authenticate(&session.secret).is_ok());
        accounts
            .create("bob", "Correct-Horse-2", Scope::Admin)
            .await
            .unwrap();
        let read = accounts.set_role("alice", Scope::Read).await.unwrap();
        assert_eq!(read.role, "read");
        assert!(accounts.sessions.authenticate(&session.secret).is_err());
        let session = accounts
            .login("alice", "Correct-Horse-1", &from("a"))
            .await
            .unwrap();
        assert_eq!(session.scope, Scope::Read);
        let bad = accounts
            .set_role("alice", Scope::VerifyPassword)
            .await
            .unwrap_err();
        assert!(bad.to_string().starts_with("role: "), "{bad}");
        assert!(matches!(
            accounts.set_role("nobody", Scope::Read).await,
            Err(AccountError::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn every_failure_answers_alike_and_disabled_is_told_only_to_the_audit() {
        let accounts = accounts(LoginLimits::default()).await;
        accounts
            .create("alice", "Correct-Horse-1", Scope::Scim)
            .await
            .unwrap();
        let wrong = accounts
            .login("alice", "wrong-password", &from("a"))
            .await
            .unwrap_err();
        let unknown = accounts
            .login("nobody", "Correct-Horse-1", &from("b"))
            .await
            .unwrap_err();
        accounts.set_enabled("alice", false).await.unwrap();
        let disabled = accounts
            .login("alice", "Correct-Horse-1", &from("c"))
            .await
            .unwrap_err();
        for e in [&wrong, &unknown, &disabled] {
            assert_eq!(e.to_string(), "invalid username or password");
        }
        assert!(matches!(
            disabled,
            AccountError::LoginRefused { disabled: true }
        ));
        assert!(matches!(
            wrong,
            AccountError::LoginRefused { disabled: false }
        ));
    }

    #[tokio::test]
    async fn a_weak_or_missing_role_is_refused_with_the_reason() {
        let accounts = accounts(LoginLimits::default()).await;
        let weak = accounts
            .create("alice", "short", Scope::Read)
            .await
            .unwrap_err();
        assert_eq!(
            weak.to_string(),
            "password: a password must be at least 8 characters"
        );
        let role = accounts
            .create("alice", "long-enough", Scope::VerifyPassword)
            .await
            .unwrap_err();
        assert!(role.to_string().starts_with("role: "), "{role}");
        let boot = accounts.bootstrap_admin("1234567").await.unwrap_err();
        assert_eq!(
            boot.to_string(),
            "IDM_ADMIN_PASSWORD: a password must be at least 8 characters"
        );
    }

    #[test]
    fn login_outcomes_are_success_failed_throttled_or_error() {
        let ok: Result<(), AccountError> = Ok(());
        assert_eq!(login_outcome(&ok), "success");
        let refused: Result<(), _> = Err(AccountError::LoginRefused { disabled: true });
        assert_eq!(login_outcome(&refused), "failed");
        let throttled: Result<(), _> = Err(AccountError::Throttled {
            retry_after: Duration::from_secs(1),
        });
        assert_eq!(login_outcome(&throttled), "throttled");
        let broken: Result<(), _> = Err(AccountError::Store(StoreError::Contention));
        assert_eq!(login_outcome(&broken), "error");
    }
}
