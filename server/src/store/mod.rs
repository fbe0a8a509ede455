//! The SurrealDB store: the only code in idm that writes SurrealQL.
//!
//! Every statement binds its values as parameters. The only names written into
//! query text are fixed columns chosen here and schema-declared property names
//! (validated plain identifiers from `managed.json`, never request text); any
//! other attribute name is bound too (`data[$p0]`). Concurrent write
//! conflicts are retried with backoff, so callers never see them.

mod accounts;
mod audit;
mod backup;
mod config;
mod embedded;
mod hashing;
mod key_scan;
mod key_write;
mod keys;
mod links;
mod objects;
mod outbox;
mod query;
mod recon;
mod record_json;
mod retention;
mod schedules;
mod sessions;
mod sort;
#[cfg(test)]
mod surrealkv_compaction;
mod tokens;

use std::future::Future;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use surrealdb::Surreal;
use surrealdb::engine::any;

pub use accounts::{AccountChange, AccountChanged, AccountRecord, AccountSecret};
pub use audit::{ActionRecord, AuditQuery, AuditRecord};
pub use backup::{ExportStream, RestoredCounts};
pub use config::ConfigDocument;
pub use embedded::{StoreMemory, StoreMemoryError};
pub use hashing::{ComputedHash, PendingHash};
pub use keys::{CredentialKey, KeyRecord, Reseal};
pub use links::Link;
pub use objects::{
    NewObject, ObjectChange, Outcome, RelationRef, RelationRow, StoredObject, StoredSecret, Write,
    object_ref, split_ref,
};
pub use outbox::{
    Claim, ClaimKey, ConfReload, DueEntries, FAILED, OutboxEntry, PENDING, QueueSummary,
    Reschedule, SyncSubscriptions,
};
pub use query::{
    Columns, CompileError, CompiledFilter, FieldResolver, Identifier, QueryPage, QueryPlan,
    ResolvedField, SearchTerm, SortKey, compile,
};
pub use recon::{
    MAX_KEPT_FAILURES, PhaseTiming, Progress, ReconFailureRecord, ReconRunRecord, RunStanding,
};
pub use retention::PRUNE_BATCH;
pub use schedules::{ExecutionRecord, ScheduleState};
pub use sort::{Candidates, SortIndex};
pub use tokens::{TokenKind, TokenRecord};

/// Bumped whenever `schema.surql` changes shape; `migrate` takes older stores forward.
/// 2: `meta:key` holds the encryption key's fingerprint.
/// 3: audit entries have an `outcome` (and admin actions are audited).
/// 4: `account` (people's logins); login sessions in `token` (`kind`,
///    `account`, `idle_timeout`, `last_used`; older tokens read as API tokens).
/// 5: sort keys of searchable properties (`sort:<type>:<property>`,
///    `sort_index`), built at start; an older idmd would write objects
///    without them, so it must not open the store.
/// 6: tokens carry `changed`, a number from `meta:token_seq` bumped by every
///    create and revocation (index `token_changed`), which nodes poll by;
///    older tokens read with none (found by id). An older idmd would revoke
///    without a number, unseen by the other nodes, so it must not open the
///    store.
pub const SCHEMA_VERSION: i64 = 7;
const SCHEMA: &str = include_str!("schema.surql");
const WRITE_ATTEMPTS: u32 = 8;
/// Credentials for a `ws://` SurrealDB server.
pub const STORE_USER_ENV: &str = "IDM_STORE_USERNAME";
pub const STORE_PASSWORD_ENV: &str = "IDM_STORE_PASSWORD";
/// Whom those credentials name: `root` (the default: a root user of the
/// server) or `database` (a user defined `ON DATABASE` of namespace `idm`,
/// database `idm`, which is all idmd needs: role EDITOR or OWNER).
pub const STORE_AUTH_ENV: &str = "IDM_STORE_AUTH";
/// The namespace and database idmd keeps everything in.
pub const NAMESPACE: &str = "idm";
pub const DATABASE: &str = "idm";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the store at {url}: {reason}")]
    Open { url: String, reason: String },
    #[error(
        "the store holds schema version {found}, newer than this idmd ({supported}); upgrade idmd"
    )]
    SchemaTooNew { found: i64, supported: i64 },
    #[error("store query failed: {0}")]
    Query(String),
    #[error("stored data has an unexpected shape: {0}")]
    Decode(String),
    #[error("{0} already exists")]
    AlreadyExists(String),
    #[error("{property} value is already taken by another {type_name}")]
    NotUnique { type_name: String, property: String },
    #[error("{0} does not exist")]
    MissingReference(String),
    #[error("write conflict persisted after {WRITE_ATTEMPTS} attempts")]
    Contention,
    #[error(
        "store URL {url}: sync={value} is not a sync mode; use sync=every (the default: \
         fsync at every commit), sync=never, or an interval above 100ms such as sync=1s"
    )]
    SyncMode { url: String, value: String },
}

impl From<surrealdb::Error> for StoreError {
    fn from(e: surrealdb::Error) -> Self {
        StoreError::Query(e.to_string())
    }
}

/// Whether `url` names a SurrealDB server (`ws://`, `wss://`) rather than
/// an engine in this process (`surrealkv://`, `mem://`).
pub fn is_server_url(url: &str) -> bool {
    url.starts_with("ws://") || url.starts_with("wss://")
}

/// A handle on the database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    /// One shared session, and idle ones for transactions (store/sessions.rs).
    db: sessions::Sessions,
    /// The SurrealKV directory of an embedded store, to know when it closed.
    embedded_dir: Option<std::path::PathBuf>,
    /// A SurrealDB server's (`ws://`, `wss://`), not an engine in this process.
    on_server: bool,
    /// Which mappings' outboxes each managed type's writes feed.
    sync: SyncSubscriptions,
    /// Re-reads the conf when a write finds its subscriptions stale.
    conf_reload: std::sync::Arc<std::sync::RwLock<Option<outbox::ConfReload>>>,
    /// Wakes outbox delivery after a write added entries.
    outbox_signal: std::sync::Arc<tokio::sync::Notify>,
    /// Wakes the background hasher after a write queued passwords.
    hash_signal: std::sync::Arc<tokio::sync::Notify>,
    /// Which properties of each type have sort keys (store/sort.rs).
    sorts: sort::SortIndexes,
    /// An embedded store's keys, read without their records (key_scan.rs).
    key_scan: Option<key_scan::KeyScan>,
}

impl Store {
    /// The same database as another node sees it: its own outbox
    /// subscriptions, conf reload and outbox signal (tests stand for two
    /// nodes with two of these).
    #[cfg(test)]
    pub(crate) fn another_node(&self) -> Store {
        Store {
            db: self.db.clone(),
            embedded_dir: self.embedded_dir.clone(),
            on_server: self.on_server,
            sync: SyncSubscriptions::default(),
            conf_reload: std::sync::Arc::default(),
            outbox_signal: std::sync::Arc::default(),
            hash_signal: std::sync::Arc::default(),
            sorts: self.sorts.clone(),
            key_scan: self.key_scan.clone(),
        }
    }

    /// Whether the store is a SurrealDB server's (see [`is_server_url`]).
    pub fn on_server(&self) -> bool {
        self.on_server
    }

    /// Opens `mem://`, `surrealkv://PATH` or `ws://HOST:PORT` and applies the schema.
    ///
    /// # Durability of `surrealkv://`
    ///
    /// SurrealKV writes every commit to its write-ahead log; its `sync` mode
    /// says when that log is forced to disk (`fsync`), and so what a crash can
    /// take back after a write was acknowledged:
    ///
    /// - `sync=every` (idm's default, and SurrealKV's): a commit returns once
    ///   its log record is on disk (commits arriving together share one
    ///   fsync). Neither a killed process nor a machine that loses power
    ///   loses an acknowledged write.
    /// - `sync=<interval>` (`sync=1s`, above 100ms): a background thread
    ///   fsyncs on that interval. A killed process loses nothing (the log is
    ///   in the OS's page cache); a power loss or kernel crash loses up to the
    ///   last interval of acknowledged writes.
    /// - `sync=never`: the OS writes the log back when it chooses. A killed
    ///   process loses nothing; a power loss or kernel crash may lose
    ///   acknowledged writes from the last ~30 s (the kernel's writeback), the
    ///   outbox entries and audit entries of those writes with them.
    ///
    /// The URL's `?sync=` is passed to SurrealKV as written; without one idm
    /// asks for `every` explicitly. Any other value is refused here (SurrealKV
    /// itself would only log a warning and fall back to its default).
    #[tracing::instrument(skip_all, fields(url = %url))]
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        Self::open_with(url, StoreMemory::default()).await
    }

    /// [`Store::open`], an embedded `surrealkv://` store keeping at most
    /// `memory` in its memtable and block cache (see `embedded.rs`).
    pub async fn open_with(url: &str, memory: StoreMemory) -> Result<Self, StoreError> {
        let store = Self::connect(url, memory).await?;
        store.migrate().await?;
        Ok(store)
    }

    /// Opens the store without applying the schema: `restore` checks that a
    /// new store is empty, imports, and then migrates.
    pub(crate) async fn connect(url: &str, memory: StoreMemory) -> Result<Self, StoreError> {
        let url = &with_sync_mode(url)?;
        let open_error = |e: surrealdb::Error| StoreError::Open {
            url: url.to_string(),
            reason: e.to_string(),
        };
        if let Some(path) = url.strip_prefix("surrealkv://")
            && let Some(parent) = std::path::Path::new(path)
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
        {
            std::fs::create_dir_all(parent).map_err(|e| StoreError::Open {
                url: url.to_string(),
                reason: e.to_string(),
            })?;
        }
        let mut key_scan = None;
        let conn = if url.starts_with("surrealkv://") {
            let (db, datastore) =
                embedded::open_surrealkv(url, memory)
                    .await
                    .map_err(|reason| StoreError::Open {
                        url: url.to_string(),
                        reason,
                    })?;
            db.use_ns(NAMESPACE)
                .use_db(DATABASE)
                .await
                .map_err(open_error)?;
            key_scan = Some(key_scan::KeyScan::new(datastore));
            sessions::Conn::Local(db)
        } else {
            sessions::Conn::Any(Self::connect_any(url).await?)
        };
        let embedded_dir = url
            .strip_prefix("surrealkv://")
            .map(|p| std::path::PathBuf::from(p.split('?').next().unwrap_or(p)));
        let store = Store {
            db: sessions::Sessions::new(conn),
            embedded_dir,
            on_server: is_server_url(url),
            sync: SyncSubscriptions::default(),
            conf_reload: std::sync::Arc::default(),
            outbox_signal: std::sync::Arc::default(),
            hash_signal: std::sync::Arc::default(),
            sorts: sort::SortIndexes::default(),
            key_scan,
        };
        Ok(store)
    }

    /// `mem://`, or a SurrealDB server (`ws://`, `wss://`) signed in to.
    async fn connect_any(url: &str) -> Result<Surreal<any::Any>, StoreError> {
        let open_error = |e: surrealdb::Error| StoreError::Open {
            url: url.to_string(),
            reason: e.to_string(),
        };
        let db = any::connect(url).await.map_err(open_error)?;
        // A SurrealDB server wants a sign-in; the embedded engines do not.
        // The error says who was refused, never the password.
        if let (Ok(username), Ok(password)) = (
            std::env::var(STORE_USER_ENV),
            std::env::var(STORE_PASSWORD_ENV),
        ) {
            let auth = std::env::var(STORE_AUTH_ENV).unwrap_or_default();
            let signin_error = |level: &str, username: &str| {
                let username = username.to_string();
                let level = level.to_string();
                move |e: surrealdb::Error| StoreError::Open {
                    url: url.to_string(),
                    reason: format!("{level} sign-in as {username:?} refused: {e}"),
                }
            };
            match auth.as_str() {
                "" | "root" => {
                    let refused = signin_error("root", &username);
                    db.signin(surrealdb::opt::auth::Root { username, password })
                        .await
                        .map_err(refused)?;
                }
                "database" => {
                    let refused = signin_error("database (idm/idm)", &username);
                    db.signin(surrealdb::opt::auth::Database {
                        namespace: NAMESPACE.into(),
                        database: DATABASE.into(),
                        username,
                        password,
                    })
                    .await
                    .map_err(refused)?;
                }
                other => {
                    return Err(StoreError::Open {
                        url: url.to_string(),
                        reason: format!("{STORE_AUTH_ENV}={other:?}: use root or database"),
                    });
                }
            }
        }
        db.use_ns(NAMESPACE)
            .use_db(DATABASE)
            .await
            .map_err(open_error)?;
        Ok(db)
    }

    /// Closes the store and waits (at most `grace`) until an embedded store
    /// has shut down. The embedded engine shuts down once the last handle is
    /// dropped, so every other clone must be gone by now; and it must finish
    /// before the process exits: the bench lost the last committed batch of
    /// a million-row run when a process exited without this.
    pub async fn close(self, grace: Duration) {
        let Store {
            db,
            embedded_dir,
            key_scan,
            ..
        } = self;
        // The key scan's handle on the datastore goes with the sessions, not
        // at the end of this function, after the wait.
        drop(key_scan);
        db.close();
        let Some(dir) = embedded_dir else { return };
        // SurrealKV holds an OS lock on `LOCK` while open: taking it proves the close.
        let lock = dir.join("LOCK");
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            let released = std::fs::File::open(&lock)
                .map(|file| file.try_lock().is_ok())
                .unwrap_or(true);
            if released {
                tracing::debug!("store closed");
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(dir = %dir.display(), "the store did not close within {grace:?}");
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A trivial bound query: the store answers (the health probe).
    pub async fn ping(&self) -> Result<(), StoreError> {
        let answer: Option<i64> = self
            .query_one("RETURN $one", serde_json::json!({ "one": 1 }))
            .await?;
        match answer {
            Some(1) => Ok(()),
            other => Err(StoreError::Decode(format!("ping answered {other:?}"))),
        }
    }

    /// Applies the schema, taking an older store forward.
    pub(crate) async fn migrate(&self) -> Result<(), StoreError> {
        self.execute("DEFINE TABLE IF NOT EXISTS meta SCHEMALESS", Value::Null)
            .await?;
        let found: Option<i64> = self
            .query_one("SELECT VALUE version FROM ONLY meta:schema", Value::Null)
            .await?;
        if let Some(found) = found.filter(|v| *v > SCHEMA_VERSION) {
            return Err(StoreError::SchemaTooNew {
                found,
                supported: SCHEMA_VERSION,
            });
        }
        self.db.shared().query(SCHEMA).await?.check()?;
        if found.is_some_and(|v| v < 7) {
            // Version 7 reads referrers from their mirror rows.
            self.execute(
                "FOR $r IN (SELECT VALUE record::id(id) FROM relation) {
                     UPSERT type::record('referrer', [$r[2], $r[1], $r[0]]) RETURN NONE;
                 }",
                Value::Null,
            )
            .await?;
        }
        if found.is_some_and(|v| v < 3) {
            // Every entry before version 3 recorded a committed object write.
            self.execute(
                "UPDATE audit SET outcome = 'success' WHERE outcome = NONE RETURN NONE",
                Value::Null,
            )
            .await?;
        }
        self.db
            .shared()
            .query("UPSERT meta:schema SET version = $version")
            .bind(("version", SCHEMA_VERSION))
            .await?
            .check()?;
        tracing::debug!(version = SCHEMA_VERSION, "store schema applied");
        Ok(())
    }

    /// Runs one statement with named parameters (a JSON object) and decodes its
    /// result; `None` for NONE / no row.
    async fn query_one<T: DeserializeOwned>(
        &self,
        sql: &str,
        params: Value,
    ) -> Result<Option<T>, StoreError> {
        let _timer = crate::metrics::store_timer(crate::metrics::StoreOp::QueryOne);
        let mut response = bind_all(self.db.shared().query(sql), params).await?;
        let value: surrealdb::types::Value = response.take(0)?;
        decode_optional(value.into_json_value())
    }

    async fn query_all<T: DeserializeOwned>(
        &self,
        sql: &str,
        params: Value,
    ) -> Result<Vec<T>, StoreError> {
        let _timer = crate::metrics::store_timer(crate::metrics::StoreOp::QueryAll);
        let mut response = bind_all(self.db.shared().query(sql), params).await?;
        let value: surrealdb::types::Value = response.take(0)?;
        decode_rows(value.into_json_value())
    }

    /// The records with these ids (those that exist), each read as `T`
    /// from the fields `projection` names (plain field names, spliced:
    /// never user text). An embedded store reads them through its keys
    /// (`KeyScan::records`) and `T` takes its fields from the whole
    /// record; a server's store binds the ids as SurrealDB record ids, so
    /// the statement reads them without evaluating a closure per id as
    /// `array::map($keys, |$k| type::record(…))` would: a third less time
    /// a record.
    async fn records<'k, T: DeserializeOwned, const N: usize>(
        &self,
        projection: &'static str,
        table: &'static str,
        keys: impl Iterator<Item = [&'k str; N]>,
    ) -> Result<Vec<T>, StoreError> {
        self.record_values(projection, table, keys)
            .await?
            .into_iter()
            .map(decode_json)
            .collect()
    }

    /// [`records`](Self::records) as JSON, for a caller that decodes them
    /// itself.
    async fn record_values<'k, const N: usize>(
        &self,
        projection: &'static str,
        table: &'static str,
        keys: impl Iterator<Item = [&'k str; N]>,
    ) -> Result<Vec<Value>, StoreError> {
        use surrealdb::types::{Array, RecordId, Value as DbValue};
        let _timer = crate::metrics::store_timer(crate::metrics::StoreOp::QueryAll);
        if let Some(scan) = &self.key_scan {
            let keys: Vec<[&str; N]> = keys.collect();
            let found = scan.records(table, &keys).await?;
            return Ok(found.into_iter().flatten().collect());
        }
        let ids: Vec<DbValue> = keys
            .map(|key| {
                let key: Vec<DbValue> = key
                    .iter()
                    .map(|part| DbValue::String(part.to_string()))
                    .collect();
                DbValue::RecordId(RecordId::new(table, Array::from(key)))
            })
            .collect();
        let sql = format!("SELECT {projection} FROM $ids");
        let ids = DbValue::Array(Array::from(ids));
        let mut response = self.db.shared().query(sql).bind(("ids", ids)).await?;
        let value: DbValue = response.take(0)?;
        json_rows(value.into_json_value())
    }

    /// One page of the record-id range `table:[prefix, …]`, in key order:
    /// at most `limit` rows whose second key part comes after `after` (from
    /// the start when `None`), each projected with `projection`. Both are
    /// spliced into the statement, hence `'static`: never user text.
    async fn range_page<T: DeserializeOwned>(
        &self,
        projection: &'static str,
        table: &'static str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<T>, StoreError> {
        self.query_all(
            &range_page_sql(projection, table, after.is_some()),
            json!({ "prefix": prefix, "after": after, "limit": limit }),
        )
        .await
    }

    /// The `n` of a `SELECT count() AS n … GROUP ALL`; 0 when nothing matched.
    async fn count(&self, sql: &str, params: Value) -> Result<u64, StoreError> {
        let _timer = crate::metrics::store_timer(crate::metrics::StoreOp::Count);
        let mut response = bind_all(self.db.shared().query(sql), params).await?;
        let value: surrealdb::types::Value = response.take(0)?;
        let count: Option<Count> = decode_optional(value.into_json_value())?;
        Ok(count.map_or(0, |c| c.n))
    }

    async fn execute(&self, sql: &str, params: Value) -> Result<(), StoreError> {
        let _timer = crate::metrics::store_timer(crate::metrics::StoreOp::Execute);
        bind_all(self.db.shared().query(sql), params)
            .await?
            .check()?;
        Ok(())
    }
}

/// The SurrealKV sync modes `surrealkv://…?sync=` takes (see [`Store::open`]).
const SYNC_EVERY: &str = "every";

/// `url` with its durability made explicit: a `surrealkv://` URL without
/// `sync=` gets `sync=every`; one with a `sync=` SurrealKV would not parse is
/// refused. Other URLs are returned as they are.
fn with_sync_mode(url: &str) -> Result<String, StoreError> {
    if !url.starts_with("surrealkv://") {
        return Ok(url.to_string());
    }
    let (path, query) = match url.split_once('?') {
        Some((path, query)) => (path, query),
        None => (url, ""),
    };
    let mut sync = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        // SurrealKV reads `sync`, or `sync_data` when there is no `sync`.
        if key.eq_ignore_ascii_case("sync") || key.eq_ignore_ascii_case("sync_data") {
            if !is_sync_mode(value) {
                return Err(StoreError::SyncMode {
                    url: url.to_string(),
                    value: value.to_string(),
                });
            }
            sync = Some(value.to_ascii_lowercase());
        }
    }
    match sync {
        Some(mode) => {
            tracing::info!(sync = %mode, "store durability: as the store URL says");
            Ok(url.to_string())
        }
        None => {
            tracing::info!(sync = SYNC_EVERY, "store durability: fsync at every commit");
            let joined = if query.is_empty() {
                format!("{path}?sync={SYNC_EVERY}")
            } else {
                format!("{path}?{query}&sync={SYNC_EVERY}")
            };
            Ok(joined)
        }
    }
}

/// `every`, `never`, or an interval above 100ms SurrealKV parses: whole
/// seconds (`5`), or numbers with `ms`, `s`, `m`, `h`, `d` (`1s`, `1m30s`).
fn is_sync_mode(value: &str) -> bool {
    let value = value.to_ascii_lowercase();
    if value == "every" || value == "never" {
        return true;
    }
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return value.parse::<u64>().is_ok_and(|seconds| seconds >= 1);
    }
    let mut millis: u128 = 0;
    let mut rest = value.as_str();
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || digits > 12 {
            return false;
        }
        let Ok(number) = rest[..digits].parse::<u128>() else {
            return false;
        };
        rest = &rest[digits..];
        let unit = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let per = match &rest[..unit] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return false,
        };
        millis += number * per;
        rest = &rest[unit..];
    }
    millis > 100
}

/// The row of a `SELECT count() AS n … GROUP ALL`.
#[derive(serde::Deserialize)]
struct Count {
    n: u64,
}

fn bind_all(mut query: sessions::Query<'_>, params: Value) -> sessions::Query<'_> {
    if let Value::Object(map) = params {
        for (name, value) in map {
            query = query.bind((name, value));
        }
    }
    query
}

fn decode_optional<T: DeserializeOwned>(value: Value) -> Result<Option<T>, StoreError> {
    let value = match value {
        Value::Array(mut rows) if rows.len() <= 1 => rows.pop().unwrap_or(Value::Null),
        other => other,
    };
    if value.is_null() {
        return Ok(None);
    }
    serde_json::from_value(value)
        .map(Some)
        .map_err(|e| StoreError::Decode(e.to_string()))
}

fn decode_json<T: DeserializeOwned>(value: Value) -> Result<T, StoreError> {
    serde_json::from_value(value).map_err(|e| StoreError::Decode(e.to_string()))
}

fn decode_rows<T: DeserializeOwned>(value: Value) -> Result<Vec<T>, StoreError> {
    json_rows(value)?.into_iter().map(decode_json).collect()
}

/// A statement's result as its rows (none for `NULL`).
fn json_rows(value: Value) -> Result<Vec<Value>, StoreError> {
    match value {
        Value::Null => Ok(Vec::new()),
        Value::Array(rows) => Ok(rows),
        other => Err(StoreError::Decode(format!("expected rows, got {other}"))),
    }
}

/// SurrealDB's optimistic transactions fail with a retryable conflict when two
/// writers touch the same keys; the message is the only signal the SDK gives.
fn is_retryable(error: &StoreError) -> bool {
    matches!(error, StoreError::Query(message)
        if message.contains("can be retried") || message.contains("conflict"))
}

/// Runs a transactional unit of work, retrying write conflicts with jittered
/// exponential backoff.
async fn with_retry<T, E, F, Fut>(mut attempt: F) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: From<StoreError> + AsRetryable,
{
    let _timer = crate::metrics::store_timer(crate::metrics::StoreOp::Transaction);
    let mut delay = Duration::from_millis(2);
    for retry in 1..WRITE_ATTEMPTS {
        match attempt().await {
            Err(e) if e.is_retryable() => {
                tracing::debug!(retry, "store write conflict; retrying the transaction");
                let jitter = rand::random_range(0..=delay.as_micros() as u64);
                tokio::time::sleep(delay + Duration::from_micros(jitter)).await;
                delay = (delay * 2).min(Duration::from_millis(200));
            }
            other => return other,
        }
    }
    match attempt().await {
        Err(e) if e.is_retryable() => Err(StoreError::Contention.into()),
        other => other,
    }
}

/// Errors that may wrap a retryable store conflict.
pub trait AsRetryable {
    fn is_retryable(&self) -> bool;
    /// The write found the conf changed since its subscriptions were read
    /// (see [`Store::set_sync_subscriptions_at`]).
    fn is_conf_stale(&self) -> bool;
}

impl AsRetryable for StoreError {
    fn is_retryable(&self) -> bool {
        is_retryable(self)
    }
    fn is_conf_stale(&self) -> bool {
        matches!(self, StoreError::Query(message) if message.contains(objects::CONF_STALE))
    }
}

/// Now as a fixed-width RFC 3339 UTC string (microseconds), which sorts as text.
pub fn now_timestamp() -> String {
    format_timestamp(time::OffsetDateTime::now_utc())
}

pub fn format_timestamp(t: time::OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.microsecond()
    )
}

/// A record-id range as a `FROM` source that a `LIMIT` stops early.
///
/// SurrealDB 3.3.5 plans a literal record-id range as a scan that reads the
/// whole range before LIMIT applies: a page of 1,000 from a range of 60,000
/// costs as much as all of them, and walking the range page by page is
/// O(n²). A range that an expression yields (`array::first([…])`) is planned
/// as a dynamic scan that takes LIMIT and START down to storage and stops
/// there. `a_range_page_reads_only_its_page` checks that plan, so an upgrade
/// that changes it fails a test. The dynamic scan costs more a row, so a
/// range read whole or nearly keeps the literal; so do counts (SurrealDB
/// counts a literal range's keys without reading a record).
pub(super) fn seek(range: &str) -> String {
    format!("array::first([{range}])")
}

/// The statement behind [`Store::range_page`].
fn range_page_sql(projection: &str, table: &str, after: bool) -> String {
    let from = if after {
        "[$prefix, $after]>.."
    } else {
        "[$prefix, NONE].."
    };
    format!(
        "SELECT VALUE {projection} FROM {} LIMIT $limit",
        seek(&format!("{table}:{from}[$prefix, ..]"))
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_store_from_before_the_referrer_mirror_reads_its_referrers_after_the_migration() {
        let store = Store::open("mem://").await.unwrap();
        store
            .execute(
                "CREATE object:['user', 'u1'] CONTENT { type: 'user', oid: 'u1', rev: 1, \
                 created: '2025-01-01T00:00:00.000000Z', modified: '2025-01-01T00:00:00.000000Z', \
                 data: { userName: 'u1' }, keys: [] };
                 CREATE relation:['managed/group/g1', 'members', 'managed/user/u1'] CONTENT \
                 { source: 'managed/group/g1', property: 'members', target: 'managed/user/u1' };
                 DELETE referrer;
                 UPSERT meta:schema SET version = 6;",
                Value::Null,
            )
            .await
            .unwrap();
        assert!(
            store
                .relations_to(&["managed/user/u1".into()])
                .await
                .unwrap()
                .is_empty()
        );
        store.migrate().await.unwrap();
        let (_, referrers) = store
            .get_object_with_referrers("user", "u1")
            .await
            .unwrap()
            .unwrap();
        let rows = store
            .relations_to(&["managed/user/u1".into()])
            .await
            .unwrap();
        for rows in [referrers, rows] {
            assert_eq!(rows.len(), 1);
            assert_eq!(
                (
                    rows[0].source.as_str(),
                    rows[0].property.as_str(),
                    rows[0].target.as_str()
                ),
                ("managed/group/g1", "members", "managed/user/u1")
            );
        }
    }

    #[tokio::test]
    async fn batch_reads_by_record_id_return_what_exists_and_skip_the_rest() {
        let store = Store::open("mem://").await.unwrap();
        store
            .execute(
                "CREATE object:['user', 'a'] CONTENT { type: 'user', oid: 'a', rev: 1, \
                 created: '2025-01-01T00:00:00.000000Z', modified: '2025-01-01T00:00:00.000000Z', \
                 data: { userName: 'ann' }, keys: [] };
                 CREATE object:['group', 'b'] CONTENT { type: 'group', oid: 'b', rev: 1, \
                 created: '2025-01-01T00:00:00.000000Z', modified: '2025-01-01T00:00:00.000000Z', \
                 data: {}, keys: [] };
                 CREATE unique_key:['user', 'userName', 'ann'] CONTENT { oid: 'a' };
                 CREATE unique_key:['user', 'mail', 'ann'] CONTENT { oid: 'z' };
                 CREATE link:['m', 's1'] CONTENT { mapping: 'm', source: 's1', target: 'a' };
                 CREATE link:['n', 's2'] CONTENT { mapping: 'n', source: 's2', target: 'a' };",
                Value::Null,
            )
            .await
            .unwrap();
        let ids = [
            "a".to_string(),
            "b".into(),
            "it's \"x\"".into(),
            "x']); DELETE object; --".into(),
        ];
        let objects = store.get_objects("user", &ids).await.unwrap();
        let oids: Vec<&str> = objects.iter().map(|o| o.oid.as_str()).collect();
        assert_eq!(
            oids,
            ["a"],
            "only the user a: b is a group, the others are absent (and inert)"
        );
        assert_eq!(objects[0].data["userName"], "ann");

        let holders = store
            .lookup_unique_many("user", "userName", &["nobody".into(), "ann".into()])
            .await
            .unwrap();
        assert_eq!(holders, [None, Some("a".to_string())], "in the order asked");

        let links = store
            .links_of_sources("m", &["s1".into(), "s2".into()])
            .await
            .unwrap();
        let found: Vec<(&str, &str)> = links
            .iter()
            .map(|l| (l.source.as_str(), l.target.as_str()))
            .collect();
        assert_eq!(found, [("s1", "a")], "s2 is linked in another mapping");
    }

    #[tokio::test]
    async fn a_range_page_reads_only_its_page() {
        let store = Store::open("mem://").await.unwrap();
        store
            .execute(
                "FOR $i IN 0..50 { CREATE type::record('object', ['user', <string> $i]) \
                 CONTENT { type: 'user', oid: <string> $i }; }; \
                 CREATE object:['group', 'g'] CONTENT { type: 'group', oid: 'g' };",
                Value::Null,
            )
            .await
            .unwrap();
        let mut walked = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = store
                .object_ids_page("user", after.as_deref(), 7)
                .await
                .unwrap();
            assert!(page.len() <= 7);
            let Some(last) = page.last() else { break };
            after = Some(last.clone());
            walked.extend(page);
        }
        let mut all: Vec<String> = (0..50).map(|i| i.to_string()).collect();
        all.sort();
        assert_eq!(walked, all, "every id once, in order, and no other type's");

        // The limit reaches the scan itself (SurrealDB stops reading there);
        // a literal range would be read whole before a LIMIT on top of it.
        for after in [false, true] {
            let plan: Value = store
                .query_one(
                    &format!("{} EXPLAIN", range_page_sql("oid", "object", after)),
                    json!({ "prefix": "user", "after": "3", "limit": 7 }),
                )
                .await
                .unwrap()
                .unwrap();
            let plan = plan.to_string();
            assert!(plan.contains("DynamicScan"), "{plan}");
            assert!(!plan.contains("RecordIdScan"), "{plan}");
            assert!(!plan.contains("\"operator\":\"Limit\""), "{plan}");
        }
    }

    #[test]
    fn a_surrealkv_url_says_its_sync_mode_and_a_wrong_one_is_refused() {
        assert_eq!(
            with_sync_mode("surrealkv://data/idm").unwrap(),
            "surrealkv://data/idm?sync=every"
        );
        assert_eq!(
            with_sync_mode("surrealkv://data/idm?versioned=false").unwrap(),
            "surrealkv://data/idm?versioned=false&sync=every"
        );
        for kept in [
            "surrealkv://d?sync=never",
            "surrealkv://d?sync=every",
            "surrealkv://d?sync=1s",
            "surrealkv://d?sync=250ms",
            "surrealkv://d?sync=1m30s",
            "surrealkv://d?sync=2",
            "surrealkv://d?SYNC=Never",
            "mem://",
            "ws://127.0.0.1:8000",
        ] {
            assert_eq!(with_sync_mode(kept).unwrap(), kept);
        }
        for refused in [
            "surrealkv://d?sync=",
            "surrealkv://d?sync=always",
            "surrealkv://d?sync=100ms",
            "surrealkv://d?sync=0",
            "surrealkv://d?sync=5x",
            "surrealkv://d?sync=s",
            "surrealkv://d?sync_data=sometimes",
        ] {
            let error = with_sync_mode(refused).unwrap_err();
            assert!(matches!(error, StoreError::SyncMode { .. }), "{refused}");
            assert!(error.to_string().contains("sync=every"), "{error}");
        }
    }

    #[tokio::test]
    async fn a_closed_embedded_store_can_be_opened_again_with_its_data() {
        let dir = std::env::temp_dir().join(format!("idm-close-{}", rand::random::<u64>()));
        let url = format!("surrealkv://{}", dir.join("db").display());
        let store = Store::open(&url).await.unwrap();
        store
            .execute("CREATE meta:probe SET written = true", Value::Null)
            .await
            .unwrap();
        store.close(Duration::from_secs(10)).await;

        let again = Store::open(&url).await.unwrap();
        let written: Option<bool> = again
            .query_one("SELECT VALUE written FROM ONLY meta:probe", Value::Null)
            .await
            .unwrap();
        assert_eq!(written, Some(true));
        again.close(Duration::from_secs(10)).await;
        let _ = std::fs::remove_dir_all(&dir);
    }
}
