//! Bearer-token authentication. Tokens live in the store (hashed); a copy is
//! kept in memory so the interceptor checks a request without a store round
//! trip. Several nodes share one store:
//! - every create and revocation carries a change number (store/tokens.rs),
//!   and each node reads `changed > n` every [`Timing::poll_every`], so a
//!   revocation, a logout or a disabled account's sessions are refused
//!   everywhere within a poll;
//! - a bearer a node has not seen yet (made on another node a moment ago) is
//!   read by id before the interceptor decides ([`LookupLayer`]), within a
//!   rate limit and with a memory of misses, so a flood of bogus bearers
//!   costs a bounded number of point reads, never a scan; a session that
//!   looks idle too long here is read again the same way (another node may
//!   have used it);
//! - past [`Timing::stale_after`] without a successful read of the changes,
//!   a node refuses every token but the bootstrap one rather than honour
//!   revoked ones.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use idm_proto::v1::Scope;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tonic::{Request, Status};

use super::sessions::{LastUses, Touch};
use crate::store::{
    AccountSecret, Store, StoreError, TokenKind, TokenRecord, format_timestamp, now_timestamp,
};

mod gate;

pub use gate::{Authenticate, LookupLayer, OPEN_METHOD, OpenLogin};

/// The actor name of the bootstrap token from `IDM_ADMIN_TOKEN`.
pub const BOOTSTRAP_ACTOR: &str = "bootstrap";

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

/// How the registry keeps up with the other nodes; [`Timing::default`] in
/// idmd, shorter in tests.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// How often the store's changes are read (`changed > n`).
    pub poll_every: Duration,
    /// How long the registry answers from memory without a successful read
    /// of the changes; past it, every token but the bootstrap one is refused
    /// (UNAVAILABLE) and `idm.tokens` is NOT_SERVING.
    pub stale_after: Duration,
    /// Point reads of bearers this node does not know, per second (a token
    /// bucket), so a flood of bogus bearers costs at most this many reads.
    pub lookups_per_second: f64,
    /// The bucket's size: reads allowed at once after a quiet time.
    pub lookup_burst: f64,
    /// How long a bearer id found missing is not read again.
    pub miss_ttl: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            poll_every: Duration::from_millis(250),
            stale_after: Duration::from_secs(5),
            lookups_per_second: 20.0,
            lookup_burst: 20.0,
            miss_ttl: Duration::from_secs(10),
        }
    }
}

/// A poll that takes longer than this counts as failed.
const POLL_TIMEOUT: Duration = Duration::from_secs(2);
/// The most changes read in one query (a poll reads on until it has all).
const POLL_LIMIT: usize = 500;
/// How long between deletes of ended sessions in the store and forgetting
/// ended ones in memory.
const PURGE_EVERY: Duration = Duration::from_secs(60);
/// The most bearer ids remembered as missing.
const MAX_MISSES: usize = 4096;
/// The health task name under `idm.tokens` while the registry is stale.
const STALE_TASK: &str = "token-changes";

/// The tokens this node knows, and how far it has read the store's changes.
#[derive(Default)]
struct Known {
    tokens: HashMap<String, TokenRecord>,
    /// Every change up to this number is in `tokens`.
    cursor: i64,
}

impl Known {
    /// Takes in what the store said of a record. A revocation is final and
    /// a last use only moves forward, whatever order the answers come in.
    fn merge(&mut self, record: TokenRecord) {
        match self.tokens.get_mut(&record.tid) {
            None => {
                self.tokens.insert(record.tid.clone(), record);
            }
            Some(held) => {
                let revoked = held.revoked || record.revoked;
                let last_used = held.last_used.clone().max(record.last_used.clone());
                let changed = held.changed.max(record.changed);
                if record.changed >= held.changed {
                    *held = record;
                }
                held.revoked = revoked;
                held.last_used = last_used;
                held.changed = changed;
            }
        }
    }
}

/// The rate limit and memory of point reads of unknown bearers.
struct Lookups {
    /// Reads the bucket holds now.
    tokens: f64,
    refilled: Instant,
    /// Bearer ids read and found missing (or ended), and when.
    misses: HashMap<String, Instant>,
}

/// What a point read of a bearer came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// The store holds it; now known here.
    Found,
    /// The store has no such bearer (or it has ended).
    Missing,
    /// Not read: the rate limit is spent.
    Skipped,
    /// The read failed.
    Failed,
}

pub struct TokenRegistry {
    store: Store,
    bootstrap_hash: Option<[u8; 32]>,
    timing: Timing,
    known: RwLock<Known>,
    /// Sessions' last uses, kept apart from `known`'s records.
    last_uses: LastUses,
    /// When the last successful read of the changes began.
    confirmed: Mutex<Instant>,
    /// Whether the registry is marked stale (logged, `idm.tokens` down).
    stale_marked: AtomicBool,
    lookups: Mutex<Lookups>,
    /// Point reads made of bearers (for tests and the curious).
    reads: AtomicU64,
}

impl TokenRegistry {
    pub async fn load(
        store: Store,
        bootstrap_token: Option<&str>,
    ) -> Result<Arc<Self>, StoreError> {
        Self::load_with(store, bootstrap_token, Timing::default()).await
    }

    /// Reads every token once (so that clients of a restarted node need no
    /// point reads), then follows the changes.
    pub async fn load_with(
        store: Store,
        bootstrap_token: Option<&str>,
        timing: Timing,
    ) -> Result<Arc<Self>, StoreError> {
        let started = Instant::now();
        let all = store.list_tokens().await?;
        let mut known = Known::default();
        for record in all {
            known.cursor = known.cursor.max(record.changed.unwrap_or(0));
            known.merge(record);
        }
        Ok(Arc::new(TokenRegistry {
            store,
            bootstrap_hash: bootstrap_token.filter(|t| !t.is_empty()).map(sha256),
            timing,
            known: RwLock::new(known),
            last_uses: LastUses::default(),
            confirmed: Mutex::new(started),
            stale_marked: AtomicBool::new(false),
            lookups: Mutex::new(Lookups {
                tokens: timing.lookup_burst,
                refilled: started,
                misses: HashMap::new(),
            }),
            reads: AtomicU64::new(0),
        }))
    }

    /// Reads the store's changes since the last read (one index range per
    /// [`POLL_LIMIT`] changes) and takes them in; returns how many.
    pub async fn poll(&self) -> Result<usize, StoreError> {
        let started = Instant::now();
        let mut count = 0;
        loop {
            let since = self.known.read().map_or(i64::MAX, |k| k.cursor);
            let rows = self.store.changed_tokens(since, POLL_LIMIT).await?;
            let more = rows.len() == POLL_LIMIT;
            count += rows.len();
            if let Ok(mut known) = self.known.write() {
                for record in rows {
                    known.cursor = known.cursor.max(record.changed.unwrap_or(0));
                    known.merge(record);
                }
            }
            if !more {
                break;
            }
        }
        if let Ok(mut confirmed) = self.confirmed.lock() {
            *confirmed = (*confirmed).max(started);
        }
        Ok(count)
    }

    /// Whether the last successful read of the changes is too old to answer
    /// from memory.
    fn stale(&self) -> bool {
        self.confirmed
            .lock()
            .map_or(true, |at| at.elapsed() > self.timing.stale_after)
    }

    /// Reads the changes every [`Timing::poll_every`] until `stop`; deletes
    /// ended sessions now and then. Past [`Timing::stale_after`] without a
    /// successful read it says so (log, `idm.tokens` NOT_SERVING) while
    /// [`TokenRegistry::authenticate`] refuses. Run under the supervisor.
    pub async fn run_poll(
        self: Arc<Self>,
        health: crate::health::Health,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut purged = Instant::now();
        let mut failing = false;
        loop {
            tokio::select! {
                () = tokio::time::sleep(self.timing.poll_every) => {}
                _ = stop.wait_for(|stop| *stop) => return,
            }
            if purged.elapsed() >= PURGE_EVERY {
                purged = Instant::now();
                if let Err(e) = self.store.purge_sessions(&now_timestamp()).await {
                    tracing::warn!(error = %e, "deleting ended sessions failed");
                }
                self.forget_ended();
            }
            let answer = match tokio::time::timeout(POLL_TIMEOUT, self.poll()).await {
                Ok(answer) => answer,
                Err(_) => Err(StoreError::Query(format!(
                    "no answer within {}s",
                    POLL_TIMEOUT.as_secs()
                ))),
            };
            match answer {
                Ok(_) => {
                    failing = false;
                    if self.stale_marked.swap(false, Ordering::SeqCst) {
                        tracing::info!("token changes read again: bearer tokens are accepted");
                        health.up(crate::health::TOKENS, STALE_TASK).await;
                    }
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %e, "reading token changes failed");
                        failing = true;
                    }
                    if self.stale() && !self.stale_marked.swap(true, Ordering::SeqCst) {
                        tracing::error!(
                            error = %e,
                            after_secs = self.timing.stale_after.as_secs(),
                            "token changes unread too long: refusing every bearer token but \
                             the bootstrap one until the store answers"
                        );
                        health.down(crate::health::TOKENS, STALE_TASK).await;
                    }
                }
            }
        }
    }

    /// Forgets records that can only be refused now (past their expiry,
    /// revoked sessions: the store deletes them); presented again, they cost
    /// a (rate-limited) point read.
    fn forget_ended(&self) {
        let now = format_timestamp(time::OffsetDateTime::now_utc());
        if let Ok(mut known) = self.known.write() {
            known.tokens.retain(|_, record| {
                let expired = record.expires.as_deref().is_some_and(|e| e <= now.as_str());
                let ended_session = record.kind == TokenKind::Session && record.revoked;
                !(expired || ended_session)
            });
            let tokens = &known.tokens;
            self.last_uses.retain(|tid| tokens.contains_key(tid));
        }
    }

    /// The id of a bearer this node should read from the store before
    /// deciding: one it has never seen (nor found missing lately), or a
    /// session that looks idle too long here but may have been used on
    /// another node. `None` when memory answers (or the secret is no token).
    pub fn wants_lookup(&self, secret: &str) -> Option<String> {
        if self.is_bootstrap(&sha256(secret)) {
            return None;
        }
        let tid = token_id(secret).filter(|tid| well_formed_id(tid))?;
        {
            let known = self.known.read().ok()?;
            if let Some(record) = known.tokens.get(tid) {
                let idle = record.kind == TokenKind::Session
                    && !record.revoked
                    && self.last_uses.idle(record, time::OffsetDateTime::now_utc());
                if !idle {
                    return None;
                }
            }
        }
        let lookups = self.lookups.lock().ok()?;
        match lookups.misses.get(tid) {
            Some(at) if at.elapsed() < self.timing.miss_ttl => None,
            _ => Some(tid.to_string()),
        }
    }

    /// Reads one bearer by id, within the rate limit, and takes it in.
    pub async fn look_up(&self, tid: &str) -> Lookup {
        let outcome = self.look_up_counted(tid).await;
        crate::metrics::token_lookup(match outcome {
            Lookup::Found => "found",
            Lookup::Missing => "missing",
            Lookup::Skipped => "skipped",
            Lookup::Failed => "failed",
        });
        outcome
    }

    async fn look_up_counted(&self, tid: &str) -> Lookup {
        if !well_formed_id(tid) || !self.take_read() {
            return Lookup::Skipped;
        }
        self.reads.fetch_add(1, Ordering::Relaxed);
        match self.store.get_token(tid).await {
            Ok(Some(record)) => {
                let now = time::OffsetDateTime::now_utc();
                let idle = record.kind == TokenKind::Session && self.last_uses.idle(&record, now);
                let alive = !(record.revoked || idle);
                if let Ok(mut known) = self.known.write() {
                    known.merge(record);
                }
                if alive {
                    Lookup::Found
                } else {
                    self.note_miss(tid);
                    Lookup::Missing
                }
            }
            Ok(None) => {
                self.note_miss(tid);
                Lookup::Missing
            }
            Err(e) => {
                tracing::debug!(error = %e, "reading a bearer token failed");
                Lookup::Failed
            }
        }
    }

    /// Takes one read from the bucket; `false` when it is empty.
    fn take_read(&self) -> bool {
        let Ok(mut lookups) = self.lookups.lock() else {
            return false;
        };
        let now = Instant::now();
        let elapsed = now.duration_since(lookups.refilled).as_secs_f64();
        lookups.tokens = (lookups.tokens + elapsed * self.timing.lookups_per_second)
            .min(self.timing.lookup_burst);
        lookups.refilled = now;
        if lookups.tokens >= 1.0 {
            lookups.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn note_miss(&self, tid: &str) {
        let Ok(mut lookups) = self.lookups.lock() else {
            return;
        };
        let ttl = self.timing.miss_ttl;
        if lookups.misses.len() >= MAX_MISSES {
            lookups.misses.retain(|_, at| at.elapsed() < ttl);
        }
        if lookups.misses.len() < MAX_MISSES {
            lookups.misses.insert(tid.to_string(), Instant::now());
        }
    }

    /// How many point reads of bearers this node has made.
    pub fn point_reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }

    pub fn has_bootstrap(&self) -> bool {
        self.bootstrap_hash.is_some()
    }

    fn is_bootstrap(&self, presented: &[u8; 32]) -> bool {
        self.bootstrap_hash
            .as_ref()
            .is_some_and(|bootstrap| bool::from(presented.ct_eq(bootstrap)))
    }

    /// The caller a bearer secret stands for, from memory (see
    /// [`LookupLayer`] for bearers memory does not hold).
    pub fn authenticate(&self, secret: &str) -> Result<Caller, Status> {
        let presented = sha256(secret);
        if self.is_bootstrap(&presented) {
            return Ok(Caller {
                token_id: BOOTSTRAP_ACTOR.into(),
                scope: Scope::Admin,
                account: None,
            });
        }
        if self.stale() {
            return Err(Status::unavailable(
                "idmd cannot confirm bearer tokens now (the store has not answered); retry later",
            ));
        }
        let unknown = || Status::unauthenticated("invalid bearer token");
        let tid = token_id(secret).ok_or_else(unknown)?;
        let known = self
            .known
            .read()
            .map_err(|_| Status::internal("token registry unavailable"))?;
        let record = known.tokens.get(tid).ok_or_else(unknown)?;
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
        self.known.read().ok()?.tokens.get(tid).cloned()
    }

    /// A record this node has just written to the store.
    fn remember(&self, record: TokenRecord) {
        if let Ok(mut known) = self.known.write() {
            known.merge(record);
        }
    }

    /// Opens a login session for `account`; returns its record and secret.
    /// With `seen` (the account as the login checked it), `None` if the
    /// account has changed since (disabled, deleted, another role or
    /// password).
    pub async fn create_session(
        &self,
        account: &str,
        scope: Scope,
        lifetime: Duration,
        idle: Duration,
        seen: Option<&AccountSecret>,
    ) -> Result<Option<(TokenRecord, String)>, StoreError> {
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
            changed: None,
        };
        let record = match seen {
            Some(seen) => match self.store.insert_session(&record, seen).await? {
                Some(record) => record,
                None => return Ok(None),
            },
            None => self.store.insert_token(&record).await?,
        };
        self.remember(record.clone());
        Ok(Some((record, secret)))
    }

    /// Ends every session of `account` (disabled, deleted, new password).
    pub async fn revoke_sessions(&self, account: &str) -> Result<usize, StoreError> {
        let revoked = self.store.revoke_sessions(account).await?;
        let count = revoked.len();
        for record in revoked {
            self.remember(record);
        }
        Ok(count)
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
            changed: None,
        };
        let record = self.store.insert_token(&record).await?;
        self.remember(record.clone());
        Ok((record, secret))
    }

    pub async fn revoke(&self, tid: &str) -> Result<Option<TokenRecord>, StoreError> {
        let revoked = self.store.revoke_token(tid).await?;
        if let Some(record) = &revoked {
            self.remember(record.clone());
        }
        Ok(revoked)
    }

    pub async fn list(&self) -> Result<Vec<TokenRecord>, StoreError> {
        self.store.list_tokens().await
    }
}

/// A bearer id as [`new_secret`] makes them: 16 lowercase hex digits. Only
/// such ids are ever read from the store.
fn well_formed_id(tid: &str) -> bool {
    tid.len() == 16 && tid.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Two nodes: two registries over one store, each polled by hand.
    async fn two_nodes(timing: Timing) -> (Store, Arc<TokenRegistry>, Arc<TokenRegistry>) {
        let store = Store::open("mem://").await.unwrap();
        let a = TokenRegistry::load_with(store.clone(), None, timing)
            .await
            .unwrap();
        let b = TokenRegistry::load_with(store.clone(), None, timing)
            .await
            .unwrap();
        (store, a, b)
    }

    /// What the lookup layer and the interceptor do for one call on `node`.
    async fn call(node: &TokenRegistry, secret: &str) -> Result<Caller, Status> {
        let mut unconfirmed = false;
        if let Some(tid) = node.wants_lookup(secret) {
            unconfirmed = matches!(node.look_up(&tid).await, Lookup::Skipped | Lookup::Failed);
        }
        match node.authenticate(secret) {
            Err(e) if unconfirmed && e.code() == tonic::Code::Unauthenticated => {
                Err(Status::unavailable("unconfirmed"))
            }
            answer => answer,
        }
    }

    #[tokio::test]
    async fn a_token_made_on_one_node_works_on_the_other_at_once() {
        let (_store, a, b) = two_nodes(Timing::default()).await;
        let (record, secret) = a.create(Scope::Scim, "ci".into(), None).await.unwrap();
        // No poll on B: one point read by id.
        let caller = call(&b, &secret).await.unwrap();
        assert_eq!(caller.token_id, record.tid);
        assert_eq!(caller.scope, Scope::Scim);
        assert_eq!(b.point_reads(), 1);
        // Known now: later calls read nothing.
        call(&b, &secret).await.unwrap();
        assert_eq!(b.point_reads(), 1);
        // A session made on A too.
        let hour = Duration::from_secs(3600);
        let (_, session) = a
            .create_session("alice", Scope::Read, hour, hour, None)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            call(&b, &session).await.unwrap().account.as_deref(),
            Some("alice")
        );
    }

    #[tokio::test]
    async fn a_revocation_on_one_node_is_refused_by_the_other_after_one_poll() {
        let (_store, a, b) = two_nodes(Timing::default()).await;
        let (record, secret) = a.create(Scope::Read, String::new(), None).await.unwrap();
        let (_, kept) = a.create(Scope::Read, String::new(), None).await.unwrap();
        b.poll().await.unwrap();
        call(&b, &secret).await.unwrap();
        a.revoke(&record.tid).await.unwrap();
        assert_eq!(b.poll().await.unwrap(), 1, "one change: the revocation");
        let refused = call(&b, &secret).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unauthenticated);
        assert!(refused.message().contains("revoked"), "{refused:?}");
        assert!(call(&b, &kept).await.is_ok());
        // Nothing changed since: the next poll reads nothing.
        assert_eq!(b.poll().await.unwrap(), 0);
        assert_eq!(b.point_reads(), 0, "the poll, not point reads, carried it");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_changes_on_two_nodes_all_reach_a_third_polling_meanwhile() {
        let (store, a, b) = two_nodes(Timing::default()).await;
        let c = TokenRegistry::load(store.clone(), None).await.unwrap();
        let mut writers = Vec::new();
        for node in [&a, &b] {
            let node = Arc::clone(node);
            writers.push(tokio::spawn(async move {
                let mut made = Vec::new();
                for i in 0..20 {
                    let (record, secret) =
                        node.create(Scope::Read, String::new(), None).await.unwrap();
                    if i % 2 == 0 {
                        node.revoke(&record.tid).await.unwrap();
                    }
                    made.push((secret, i % 2 == 0));
                }
                made
            }));
        }
        let polling = {
            let c = Arc::clone(&c);
            tokio::spawn(async move {
                for _ in 0..50 {
                    c.poll().await.unwrap();
                    tokio::task::yield_now().await;
                }
            })
        };
        let mut made = Vec::new();
        for writer in writers {
            made.extend(writer.await.unwrap());
        }
        polling.await.unwrap();
        c.poll().await.unwrap();
        for (secret, revoked) in &made {
            // From memory alone: no point read.
            assert_eq!(c.authenticate(secret).is_err(), *revoked);
        }
        assert_eq!(c.point_reads(), 0);
    }

    #[tokio::test]
    async fn an_older_answer_never_undoes_a_revocation() {
        let (store, a, b) = two_nodes(Timing::default()).await;
        let (record, secret) = a.create(Scope::Read, String::new(), None).await.unwrap();
        let before = store.get_token(&record.tid).await.unwrap().unwrap();
        a.revoke(&record.tid).await.unwrap();
        b.poll().await.unwrap();
        // A point read that began before the revocation answers late.
        b.known.write().unwrap().merge(before);
        assert!(call(&b, &secret).await.is_err());
        assert!(b.record(&record.tid).unwrap().revoked);
    }

    #[tokio::test]
    async fn a_disabled_or_deleted_accounts_sessions_are_refused_by_the_other_node() {
        let (store, a, b) = two_nodes(Timing::default()).await;
        let hour = Duration::from_secs(3600);
        let (_, alice) = a
            .create_session("alice", Scope::Read, hour, hour, None)
            .await
            .unwrap()
            .unwrap();
        let (_, bob) = a
            .create_session("bob", Scope::Read, hour, hour, None)
            .await
            .unwrap()
            .unwrap();
        call(&b, &alice).await.unwrap();
        call(&b, &bob).await.unwrap();
        // What `Accounts::set_enabled(false)` and `delete` do on node A.
        let accounts = crate::accounts::Accounts::new(
            store.clone(),
            Arc::clone(&a),
            crate::accounts::LoginLimits::default(),
            crate::accounts::SessionPolicy::default(),
        );
        accounts
            .create("alice", "Correct-Horse-1", Scope::Read)
            .await
            .unwrap();
        accounts.set_enabled("alice", false).await.unwrap();
        accounts.delete("bob").await.unwrap();
        b.poll().await.unwrap();
        for secret in [&alice, &bob] {
            let refused = call(&b, secret).await.unwrap_err();
            assert!(refused.message().contains("revoked"), "{refused:?}");
        }
    }

    #[tokio::test]
    async fn no_session_is_made_for_an_account_changed_since_the_login_checked_it() {
        let (store, a, b) = two_nodes(Timing::default()).await;
        let accounts = crate::accounts::Accounts::new(
            store.clone(),
            Arc::clone(&b),
            crate::accounts::LoginLimits::default(),
            crate::accounts::SessionPolicy::default(),
        );
        accounts
            .create("alice", "Correct-Horse-1", Scope::Read)
            .await
            .unwrap();
        let hour = Duration::from_secs(3600);
        let seen = store.account_secret("alice").await.unwrap().unwrap();
        // As the login on A saw it: a session.
        let made = a
            .create_session("alice", Scope::Read, hour, hour, Some(&seen))
            .await
            .unwrap();
        assert!(made.is_some());
        // Disabled on B after A's check, before A makes the session: none.
        accounts.set_enabled("alice", false).await.unwrap();
        let made = a
            .create_session("alice", Scope::Read, hour, hour, Some(&seen))
            .await
            .unwrap();
        assert!(made.is_none());
        // Enabled again with another password: the old check is stale too.
        accounts.set_enabled("alice", true).await.unwrap();
        accounts
            .set_password("alice", "Battery-Staple-2")
            .await
            .unwrap();
        let made = a
            .create_session("alice", Scope::Read, hour, hour, Some(&seen))
            .await
            .unwrap();
        assert!(made.is_none());
    }

    #[tokio::test]
    async fn a_flood_of_bogus_bearers_costs_a_bounded_number_of_point_reads() {
        let timing = Timing {
            lookups_per_second: 0.0,
            lookup_burst: 5.0,
            ..Timing::default()
        };
        let (_store, a, b) = two_nodes(timing).await;
        // Malformed ones are never read.
        for bogus in ["nope", "idm_x_y", "idm_../../_z", "idm_0123456789ABCDEF_z"] {
            assert!(call(&b, bogus).await.is_err());
        }
        assert_eq!(b.point_reads(), 0);
        // One well-formed id presented again and again: one read.
        for _ in 0..100 {
            let refused = call(&b, "idm_00000000000000aa_secret").await.unwrap_err();
            assert_eq!(refused.code(), tonic::Code::Unauthenticated);
        }
        assert_eq!(b.point_reads(), 1);
        // A thousand distinct ids: the bucket's reads, then none.
        for i in 0..1000u32 {
            let refused = call(&b, &format!("idm_{i:016x}_secret")).await.unwrap_err();
            assert_ne!(refused.code(), tonic::Code::Ok);
        }
        assert_eq!(b.point_reads(), 5, "the burst, no more");
        // Meanwhile a token made on A and polled by B works on B.
        let (_, secret) = a.create(Scope::Read, String::new(), None).await.unwrap();
        let refused = call(&b, &secret).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unavailable, "not read: retry");
        b.poll().await.unwrap();
        assert!(call(&b, &secret).await.is_ok());
        assert_eq!(b.point_reads(), 5);
    }

    #[tokio::test]
    async fn a_wrong_secret_for_a_real_id_is_refused_after_one_read() {
        let (_store, a, b) = two_nodes(Timing::default()).await;
        let (record, _) = a.create(Scope::Admin, String::new(), None).await.unwrap();
        let forged = format!("idm_{}_forged", record.tid);
        for _ in 0..10 {
            assert_eq!(
                call(&b, &forged).await.unwrap_err().code(),
                tonic::Code::Unauthenticated
            );
        }
        assert_eq!(b.point_reads(), 1);
    }

    #[tokio::test]
    async fn a_session_used_on_one_node_stays_alive_on_the_other() {
        let (store, a, b) = two_nodes(Timing::default()).await;
        let idle = Duration::from_secs(60);
        let (record, secret) = a
            .create_session("alice", Scope::Read, Duration::from_secs(3600), idle, None)
            .await
            .unwrap()
            .unwrap();
        call(&a, &secret).await.unwrap();
        // Ninety seconds ago it was made; B used it (and wrote so) just now.
        let long_ago = time::OffsetDateTime::now_utc() - time::Duration::seconds(90);
        for node in [&a, &b] {
            let mut known = node.known.write().unwrap();
            let mut old = record.clone();
            old.created = format_timestamp(long_ago);
            known.tokens.insert(record.tid.clone(), old);
        }
        a.last_uses.retain(|_| false);
        store
            .touch_session(&record.tid, &now_timestamp())
            .await
            .unwrap();
        // A's memory says idle too long; it reads the record before refusing.
        assert!(a.wants_lookup(&secret).is_some());
        assert!(call(&a, &secret).await.is_ok());
        assert_eq!(a.point_reads(), 1);
    }

    #[tokio::test]
    async fn a_node_that_cannot_read_the_changes_refuses_after_the_bound() {
        let timing = Timing {
            stale_after: Duration::from_secs(5),
            ..Timing::default()
        };
        let store = Store::open("mem://").await.unwrap();
        let node = TokenRegistry::load_with(store.clone(), Some("boot"), timing)
            .await
            .unwrap();
        let (_, secret) = node.create(Scope::Read, String::new(), None).await.unwrap();
        assert!(node.authenticate(&secret).is_ok());
        // The last successful read of the changes was six seconds ago (the
        // polls since failed).
        *node.confirmed.lock().unwrap() =
            Instant::now().checked_sub(Duration::from_secs(6)).unwrap();
        let refused = node.authenticate(&secret).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unavailable);
        // The bootstrap token does not depend on the store.
        assert!(node.authenticate("boot").is_ok());
        // The loop says so in health, and lifts it once a read succeeds.
        let (health, _service) = crate::health::Health::new().await;
        store.break_tokens_for_tests().await.unwrap();
        assert!(node.poll().await.is_err(), "the store cannot answer");
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let looping = tokio::spawn(Arc::clone(&node).run_poll(health.clone(), stopped));
        let mut changes = health.watch();
        changes
            .wait_for(|c| c.get(crate::health::TOKENS) == Some(&false))
            .await
            .unwrap();
        assert!(node.authenticate(&secret).is_err());
        stop.send(true).unwrap();
        looping.await.unwrap();
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
