//! The SurrealDB store: the only code in idm that writes SurrealQL.
//!
//! Every statement binds its values as parameters. The only names written into
//! query text are fixed columns chosen here and schema-declared property names
//! (validated plain identifiers from `managed.json`, never request text); any
//! other attribute name is bound too (`data[$p0]`). Concurrent write
//! conflicts are retried with backoff, so callers never see them.

mod accounts;
mod audit;
mod config;
mod keys;
mod links;
mod objects;
mod outbox;
mod query;
mod recon;
mod schedules;
mod sort;
mod tokens;

use std::future::Future;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::Value;
use surrealdb::Surreal;
use surrealdb::engine::any::{self, Any};

pub use accounts::{AccountChange, AccountChanged, AccountRecord, AccountSecret};
pub use audit::{ActionRecord, AuditQuery, AuditRecord};
pub use config::ConfigDocument;
pub use keys::{CredentialKey, KeyRecord, Reseal};
pub use links::Link;
pub use objects::{
    NewObject, ObjectChange, Outcome, RelationRef, RelationRow, StoredObject, StoredSecret, Write,
    object_ref, split_ref,
};
pub use outbox::{FAILED, OutboxEntry, PENDING, QueueSummary, Reschedule, SyncSubscriptions};
pub use query::{
    Columns, CompileError, CompiledFilter, FieldResolver, Identifier, QueryPage, QueryPlan,
    ResolvedField, SortKey, compile,
};
pub use recon::{MAX_KEPT_FAILURES, Progress, ReconFailureRecord, ReconRunRecord};
pub use schedules::{ExecutionRecord, ScheduleState};
pub use sort::{Candidates, SearchTerm, SortIndex};
pub use tokens::{TokenKind, TokenRecord};

/// Bumped whenever `schema.surql` changes shape; `migrate` takes older stores forward.
/// 2: `meta:key` holds the encryption key's fingerprint.
/// 3: audit entries have an `outcome` (and admin actions are audited).
/// 4: `account` (people's logins); login sessions in `token` (`kind`,
///    `account`, `idle_timeout`, `last_used`; older tokens read as API tokens).
/// 5: sort keys of searchable properties (`sort:<type>:<property>`,
///    `sort_index`), built at start; an older idmd would write objects
///    without them, so it must not open the store.
pub const SCHEMA_VERSION: i64 = 5;
const SCHEMA: &str = include_str!("schema.surql");
const WRITE_ATTEMPTS: u32 = 8;
/// Root credentials for a `ws://` SurrealDB server.
pub const STORE_USER_ENV: &str = "IDM_STORE_USERNAME";
pub const STORE_PASSWORD_ENV: &str = "IDM_STORE_PASSWORD";

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
}

impl From<surrealdb::Error> for StoreError {
    fn from(e: surrealdb::Error) -> Self {
        StoreError::Query(e.to_string())
    }
}

/// A handle on the database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: Surreal<Any>,
    /// The SurrealKV directory of an embedded store, to know when it closed.
    embedded_dir: Option<std::path::PathBuf>,
    /// Which mappings' outboxes each managed type's writes feed.
    sync: SyncSubscriptions,
    /// Wakes outbox delivery after a write added entries.
    outbox_signal: std::sync::Arc<tokio::sync::Notify>,
    /// Which properties of each type have sort keys (store/sort.rs).
    sorts: sort::SortIndexes,
}

impl Store {
    /// Opens `mem://`, `surrealkv://PATH` or `ws://HOST:PORT` and applies the schema.
    #[tracing::instrument(skip_all, fields(url = %url))]
    pub async fn open(url: &str) -> Result<Self, StoreError> {
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
        let db = any::connect(url).await.map_err(open_error)?;
        // A SurrealDB server wants a sign-in; the embedded engines do not.
        if let (Ok(username), Ok(password)) = (
            std::env::var(STORE_USER_ENV),
            std::env::var(STORE_PASSWORD_ENV),
        ) {
            db.signin(surrealdb::opt::auth::Root { username, password })
                .await
                .map_err(open_error)?;
        }
        db.use_ns("idm").use_db("idm").await.map_err(open_error)?;
        let embedded_dir = url
            .strip_prefix("surrealkv://")
            .map(|p| std::path::PathBuf::from(p.split('?').next().unwrap_or(p)));
        let store = Store {
            db,
            embedded_dir,
            sync: SyncSubscriptions::default(),
            outbox_signal: std::sync::Arc::default(),
            sorts: sort::SortIndexes::default(),
        };
        store.migrate().await?;
        Ok(store)
    }

    /// Closes the store and waits (at most `grace`) until an embedded store
    /// has shut down. The embedded engine shuts down once the last handle is
    /// dropped, so every other clone must be gone by now; and it must finish
    /// before the process exits: the bench lost the last committed batch of
    /// a million-row run when a process exited without this.
    pub async fn close(self, grace: Duration) {
        let Store {
            db, embedded_dir, ..
        } = self;
        drop(db);
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

    async fn migrate(&self) -> Result<(), StoreError> {
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
        self.db.query(SCHEMA).await?.check()?;
        if found.is_some_and(|v| v < 3) {
            // Every entry before version 3 recorded a committed object write.
            self.execute(
                "UPDATE audit SET outcome = 'success' WHERE outcome = NONE RETURN NONE",
                Value::Null,
            )
            .await?;
        }
        self.db
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
        let mut response = bind_all(self.db.query(sql), params).await?;
        let value: surrealdb::types::Value = response.take(0)?;
        decode_optional(value.into_json_value())
    }

    async fn query_all<T: DeserializeOwned>(
        &self,
        sql: &str,
        params: Value,
    ) -> Result<Vec<T>, StoreError> {
        let mut response = bind_all(self.db.query(sql), params).await?;
        let value: surrealdb::types::Value = response.take(0)?;
        decode_rows(value.into_json_value())
    }

    /// The `n` of a `SELECT count() AS n … GROUP ALL`; 0 when nothing matched.
    async fn count(&self, sql: &str, params: Value) -> Result<u64, StoreError> {
        let count: Option<Count> = self.query_one(sql, params).await?;
        Ok(count.map_or(0, |c| c.n))
    }

    async fn execute(&self, sql: &str, params: Value) -> Result<(), StoreError> {
        bind_all(self.db.query(sql), params).await?.check()?;
        Ok(())
    }
}

/// The row of a `SELECT count() AS n … GROUP ALL`.
#[derive(serde::Deserialize)]
struct Count {
    n: u64,
}

fn bind_all<'a, C: surrealdb::Connection>(
    mut query: surrealdb::method::Query<'a, C>,
    params: Value,
) -> surrealdb::method::Query<'a, C> {
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

fn decode_rows<T: DeserializeOwned>(value: Value) -> Result<Vec<T>, StoreError> {
    match value {
        Value::Null => Ok(Vec::new()),
        Value::Array(rows) => rows
            .into_iter()
            .map(|row| serde_json::from_value(row).map_err(|e| StoreError::Decode(e.to_string())))
            .collect(),
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
}

impl AsRetryable for StoreError {
    fn is_retryable(&self) -> bool {
        is_retryable(self)
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

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
