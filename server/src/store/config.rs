//! Documents of the conf directory (connectors, mappings, schedules), kept in
//! the store so they can also be managed at runtime.

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

impl Store {
    /// Creates or replaces a document; returns whether it changed.
    pub async fn put_config(&self, document: &ConfigDocument) -> Result<bool, StoreError> {
        let current = self.get_config(&document.kind, &document.name).await?;
        if current.as_ref().is_some_and(|c| c.body == document.body) {
            return Ok(false);
        }
        self.execute(
            "UPSERT type::record('config', [$kind, $name]) CONTENT { kind: $kind, name: $name, body: $body, source: $source } RETURN NONE",
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
            "DELETE type::record('config', [$kind, $name])",
            json!({ "kind": kind, "name": name }),
        )
        .await?;
        Ok(existed)
    }
}
