//! Documents of the conf directory (connectors, mappings, schedules), kept in
//! the store so they can also be managed at runtime.
//!
//! Every write or delete of a document bumps `meta:conf {version}` in the
//! same transaction, so every node sharing the store can tell, with one point
//! read, that the conf changed and reload it (`conf_watch.rs`), and a managed
//! write can check, inside its own transaction, that the outbox
//! subscriptions it used are the current ones (`store/objects.rs`).

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{Store, StoreError};

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ConfigDocument {
    /// `connector`, `mapping` or `schedule`.
    pub kind: String,
    pub name: String,
    pub body: Map<String, Value>,
    /// The conf file it came from, or `api`.
    pub source: String,
}

/// Bumps the conf version; part of every document write's transaction.
const BUMP_CONF_VERSION: &str = "UPSERT meta:conf SET version = (version ?? 0) + 1 RETURN NONE;";

/// The stored conf version (NONE before the first document write).
pub(super) const CONF_VERSION: &str = "RETURN meta:conf.version ?? 0;";

impl Store {
    /// Creates or replaces a document; returns whether it changed.
    pub async fn put_config(&self, document: &ConfigDocument) -> Result<bool, StoreError> {
        let current = self.get_config(&document.kind, &document.name).await?;
        if current.as_ref().is_some_and(|c| c.body == document.body) {
            return Ok(false);
        }
        self.execute(
            &format!(
                "BEGIN TRANSACTION; \
                 UPSERT type::record('config', [$kind, $name]) CONTENT {{ kind: $kind, name: $name, body: $body, source: $source }} RETURN NONE; \
                 {BUMP_CONF_VERSION} COMMIT TRANSACTION;"
            ),
            json!({ "kind": document.kind, "name": document.name, "body": document.body, "source": document.source }),
        )
        .await?;
        Ok(true)
    }

    pub async fn get_config(
        &self,
        kind: &str,
        name: &str,
    ) -> Result<Option<ConfigDocument>, StoreError> {
        self.query_one(
            "SELECT kind, name, body, source FROM ONLY type::record('config', [$kind, $name])",
            json!({ "kind": kind, "name": name }),
        )
        .await
    }

    pub async fn list_config(&self, kind: &str) -> Result<Vec<ConfigDocument>, StoreError> {
        self.query_all(
            "SELECT kind, name, body, source FROM config WHERE kind = $kind ORDER BY name",
            json!({ "kind": kind }),
        )
        .await
    }

    pub async fn delete_config(&self, kind: &str, name: &str) -> Result<bool, StoreError> {
        let existed = self.get_config(kind, name).await?.is_some();
        self.execute(
            &format!(
                "BEGIN TRANSACTION; DELETE type::record('config', [$kind, $name]) RETURN NONE; \
                 {BUMP_CONF_VERSION} COMMIT TRANSACTION;"
            ),
            json!({ "kind": kind, "name": name }),
        )
        .await?;
        Ok(existed)
    }

    /// The conf version: bumped by every document write or delete; 0 before
    /// the first. One point read.
    pub async fn conf_version(&self) -> Result<u64, StoreError> {
        let version: Option<u64> = self.query_one(CONF_VERSION, json!({})).await?;
        Ok(version.unwrap_or(0))
    }
}
