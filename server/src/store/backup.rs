//! The store's side of backup and restore: SurrealDB's own export (every
//! table's definitions and records, read in one read transaction, so one
//! snapshot, while writes go on) and import, whether a store is new, and
//! what a restored store holds.

use std::path::Path;
use std::pin::Pin;

use futures::Stream;
use serde_json::Value;

use super::{Store, StoreError};

/// The export's bytes, as SurrealDB produces them (a statement or a batch of
/// records at a time); it ends after the last, or with an error.
pub type ExportStream = Pin<Box<dyn Stream<Item = Result<Vec<u8>, StoreError>> + Send>>;

/// What a restored store holds, by kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoredCounts {
    pub objects: u64,
    pub credentials: u64,
    pub relations: u64,
    pub links: u64,
    pub config: u64,
    pub accounts: u64,
    pub tokens: u64,
    pub schedule_states: u64,
    pub audit: u64,
}

/// The tables whose rows make a store not new, with what to call them.
const DATA_TABLES: &[(&str, &str)] = &[
    ("object", "managed objects"),
    ("config", "conf documents"),
    ("account", "accounts"),
    ("meta", "a key fingerprint"),
];

impl Store {
    /// Starts SurrealDB's export of the store's database. SurrealDB reads it
    /// in one read transaction on a task of its own, and hands over one piece
    /// at a time (a channel of one): a reader that stops reading stops it.
    pub async fn export(&self) -> Result<ExportStream, StoreError> {
        use futures::StreamExt;
        let backup = self.db.shared().export().await?;
        Ok(Box::pin(
            backup.map(|piece| piece.map_err(StoreError::from)),
        ))
    }

    /// Replays an export (a SurrealQL file) into this store.
    pub(crate) async fn import(&self, file: &Path) -> Result<(), StoreError> {
        self.db.shared().import(file).await?;
        Ok(())
    }

    /// What a store that should be new already holds: the tables it defines,
    /// and which of managed objects, conf documents, accounts and a key
    /// fingerprint have rows. Empty when the store is new.
    pub(crate) async fn existing_contents(&self) -> Result<Vec<String>, StoreError> {
        let mut response = self.db.shared().query("INFO FOR DB").await?;
        let info: surrealdb::types::Value = response.take(0)?;
        let info = info.into_json_value();
        let tables: Vec<String> = info
            .get("tables")
            .and_then(Value::as_object)
            .map(|tables| tables.keys().cloned().collect())
            .unwrap_or_default();
        let mut found = Vec::new();
        for (table, what) in DATA_TABLES {
            if !tables.iter().any(|t| t == table) {
                continue;
            }
            // Fixed table names, never input.
            let rows = self
                .count(
                    &format!("SELECT count() AS n FROM {table} GROUP ALL"),
                    Value::Null,
                )
                .await?;
            if rows > 0 {
                found.push((*what).to_string());
            }
        }
        if found.is_empty() && !tables.is_empty() {
            found.push(format!("{} tables", tables.len()));
        }
        Ok(found)
    }

    /// Counts what a store holds, by kind (after a restore).
    pub(crate) async fn restored_counts(&self) -> Result<RestoredCounts, StoreError> {
        let count = |table: &'static str| async move {
            self.count(
                &format!("SELECT count() AS n FROM {table} GROUP ALL"),
                Value::Null,
            )
            .await
        };
        Ok(RestoredCounts {
            objects: count("object").await?,
            credentials: count("credential").await?,
            relations: count("relation").await?,
            links: count("link").await?,
            config: count("config").await?,
            accounts: count("account").await?,
            tokens: count("token").await?,
            schedule_states: count("schedule_state").await?,
            audit: count("audit").await?,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use futures::StreamExt;
    use serde_json::json;

    use super::*;

    #[tokio::test]
    async fn an_export_replayed_into_a_new_store_holds_the_same_records() {
        let dir = std::env::temp_dir().join(format!("idm-export-{}", rand::random::<u64>()));
        let source = Store::open("mem://").await.unwrap();
        source
            .execute(
                "CREATE object:['user', 'alice'] CONTENT { type: 'user', oid: 'alice', rev: 3, data: { n: 'é\\n' } }; \
                 CREATE credential:['user', 'alice', 'password'] CONTENT { hash: 'h', sealed: 's' }; \
                 CREATE meta:key CONTENT { fingerprint: 'f' }; \
                 CREATE type::record('sort:user:userName', [0, 'alice', 'alice']);",
                Value::Null,
            )
            .await
            .unwrap();
        let mut export = source.export().await.unwrap();
        let mut sql = Vec::new();
        while let Some(piece) = export.next().await {
            sql.extend(piece.unwrap());
        }
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("export.surql");
        std::fs::write(&file, &sql).unwrap();

        let target = Store::connect("mem://", crate::store::StoreMemory::default())
            .await
            .unwrap();
        assert!(target.existing_contents().await.unwrap().is_empty());
        target.import(&file).await.unwrap();
        target.migrate().await.unwrap();
        let found = target.existing_contents().await.unwrap();
        assert!(found.contains(&"managed objects".to_string()), "{found:?}");
        let object: Option<Value> = target
            .query_one(
                "SELECT type, oid, rev, data FROM ONLY object:['user', 'alice']",
                Value::Null,
            )
            .await
            .unwrap();
        assert_eq!(
            object.unwrap(),
            json!({"type": "user", "oid": "alice", "rev": 3, "data": {"n": "é\n"}})
        );
        let counts = target.restored_counts().await.unwrap();
        assert_eq!((counts.objects, counts.credentials), (1, 1));
        let sorted = target
            .count(
                "SELECT count() AS n FROM type::table('sort:user:userName') GROUP ALL",
                Value::Null,
            )
            .await
            .unwrap();
        assert_eq!(sorted, 1);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
