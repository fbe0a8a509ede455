//! Record ids read from an embedded store's keys, without the records.
//!
//! SurrealDB 3.3.5 decodes every record a `SELECT` reads, even one that
//! projects only `record::id(id)` (it reads keys alone only to count them).
//! Walking every object of a type for its ids, as a reconciliation's target
//! phase does, so decoded each user's whole document once more after the
//! source phase had read it: a fifth of a no-change re-recon. An embedded
//! store's `Datastore` is in this process, so its keys can be read through
//! SurrealDB's own key layer (the crates `surrealdb` is built from, pinned
//! with it) in the order a range `SELECT` would return them. A SurrealDB
//! server's store keeps the statement.

use std::borrow::Cow;
use std::ops::Bound;
use std::sync::Arc;

use surrealdb_catalog::providers::DatabaseProvider;
use surrealdb_catalog::val::{Array, RecordIdKey, TableName, Value};
use surrealdb_datastore::key::schema::{RecordKey, RecordPrefix};
use surrealdb_engine_local::Datastore;
use surrealdb_kvs::TransactionType;
use surrealdb_kvs::key::KVKeyDecode;

use super::{DATABASE, NAMESPACE, StoreError};

/// The embedded store's keys, read directly.
#[derive(Clone)]
pub(super) struct KeyScan {
    datastore: Arc<Datastore>,
}

impl KeyScan {
    pub(super) fn new(datastore: Arc<Datastore>) -> Self {
        KeyScan { datastore }
    }

    /// The ids `[prefix, id]` of `table`'s records whose id starts with
    /// `prefix`, in key order: at most `limit`, after `[prefix, after]`.
    /// What `SELECT VALUE record::id(id)[1] FROM table:[prefix, after]>..[prefix, ..]`
    /// returns, for string ids, reading keys only.
    pub(super) async fn ids_page(
        &self,
        table: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let failed = |e: anyhow::Error| StoreError::Query(format!("reading {table} keys: {e:#}"));
        let tx = self
            .datastore
            .transaction(TransactionType::Read)
            .await
            .map_err(failed)?;
        let read = async {
            let Some(db) = tx.get_db_by_name(NAMESPACE, DATABASE, None).await? else {
                return Ok(Vec::new()); // not migrated yet: nothing stored
            };
            let table = TableName::from(table);
            let prefix_value = Value::String(prefix.into());
            let start = match after {
                None => Bound::Included(id_key(prefix_value.clone(), Value::None)),
                Some(after) => {
                    Bound::Excluded(id_key(prefix_value.clone(), Value::String(after.into())))
                }
            };
            // Up to the table's end: the page stops at the first id with
            // another prefix, which is cheaper than encoding an upper bound
            // and reads at most one page past the last id.
            let range = RecordPrefix {
                ns: db.namespace_id,
                db: db.database_id,
                tb: Cow::Borrowed(&table),
            }
            .range_where((start, Bound::<Cow<'_, RecordIdKey>>::Unbounded))?;
            let limit = u32::try_from(limit).unwrap_or(u32::MAX);
            let keys = tx.keys_raw(range, limit, 0, None).await?;
            let mut ids = Vec::with_capacity(keys.len());
            for key in &keys {
                let record = RecordKey::decode_key(key)?;
                match record.id.as_ref() {
                    RecordIdKey::Array(Array(parts)) => match parts.as_slice() {
                        [Value::String(p), Value::String(id)] if p.as_str() == prefix => {
                            ids.push(id.as_str().to_string());
                        }
                        [Value::String(p), _] if p.as_str() == prefix => {
                            anyhow::bail!(
                                "a {} id under {prefix:?} is not a string",
                                table.as_str()
                            )
                        }
                        _ => break,
                    },
                    _ => break,
                }
            }
            Ok(ids)
        };
        let result: anyhow::Result<Vec<String>> = read.await;
        // A read transaction holds nothing to keep; cancelling releases it.
        let _ = tx.cancel().await;
        result.map_err(failed)
    }
}

fn id_key(prefix: Value, last: Value) -> Cow<'static, RecordIdKey> {
    Cow::Owned(RecordIdKey::Array(Array(vec![prefix, last])))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use crate::store::Store;

    /// Every id of a type in SurrealDB's own order, none of another type
    /// (even one whose name extends it) and none deleted, at any page size:
    /// the same walk as the `SELECT` it stands for; a mapping's link sources
    /// likewise.
    #[tokio::test]
    async fn keys_walk_a_type_as_the_select_does() {
        let dir = std::env::temp_dir().join(format!("idm-key-scan-{}", uuid::Uuid::new_v4()));
        let url = format!("surrealkv://{}", dir.display());
        let store = Store::open(&url).await.unwrap();
        assert!(store.key_scan.is_some(), "an embedded store reads its keys");
        assert!(
            store
                .object_ids_page("user", None, 10)
                .await
                .unwrap()
                .is_empty(),
            "no objects yet"
        );
        let odd = [
            "", "a b", "ü", "it's", "x\u{0}y", "10", "9", "0", "[1]", "user",
        ];
        let mut ids: Vec<String> = (0..40).map(|i| format!("u{i}")).collect();
        ids.extend(odd.iter().map(|s| s.to_string()));
        for (type_name, oids) in [
            ("user", ids.clone()),
            ("use", vec!["a".to_string()]),
            ("usera", vec!["a".to_string()]),
            ("user\u{0}", vec!["z".to_string()]),
            ("group", vec!["g".to_string()]),
        ] {
            store
                .execute(
                    "FOR $oid IN $oids { CREATE type::record('object', [$type, $oid]) \
                     CONTENT { type: $type, oid: $oid }; };",
                    json!({ "type": type_name, "oids": oids }),
                )
                .await
                .unwrap();
        }

        store
            .execute("DELETE object:['user', 'u7']", serde_json::Value::Null)
            .await
            .unwrap();
        ids.retain(|id| id != "u7");

        let by_select = walk(&store, "user", 1_000, false).await;
        let mut expected = ids.clone();
        expected.sort();
        let mut sorted = by_select.clone();
        sorted.sort();
        assert_eq!(sorted, expected, "the select walks every user once");
        for page in [1, 7, 1_000] {
            assert_eq!(
                walk(&store, "user", page, true).await,
                by_select,
                "pages of {page}"
            );
        }
        assert_eq!(walk(&store, "use", 7, true).await, ["a"]);
        assert_eq!(walk(&store, "group", 7, true).await, ["g"]);
        assert!(walk(&store, "nobody", 7, true).await.is_empty());

        // A mapping's links: the sources, from the keys.
        store
            .execute(
                "FOR $s IN ['s2', 's1', 's10'] { CREATE type::record('link', ['m', $s]) \
                 CONTENT { mapping: 'm', source: $s, target: 't' }; }; \
                 CREATE link:['m2', 's0'] CONTENT { mapping: 'm2', source: 's0', target: 't' };",
                serde_json::Value::Null,
            )
            .await
            .unwrap();
        assert_eq!(
            store.link_sources_page("m", None, 10).await.unwrap(),
            ["s1", "s10", "s2"]
        );
        assert_eq!(
            store.link_sources_page("m", Some("s1"), 1).await.unwrap(),
            ["s10"]
        );
        store.close(std::time::Duration::from_secs(10)).await;
        let _ = std::fs::remove_dir_all(dir);
    }

    async fn walk(store: &Store, type_name: &str, page: usize, keys: bool) -> Vec<String> {
        let mut walked = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let ids: Vec<String> = if keys {
                let scan = store.key_scan.as_ref().unwrap();
                scan.ids_page("object", type_name, after.as_deref(), page)
                    .await
                    .unwrap()
            } else {
                store
                    .range_page("oid", "object", type_name, after.as_deref(), page)
                    .await
                    .unwrap()
            };
            assert!(ids.len() <= page);
            let Some(last) = ids.last() else { break };
            after = Some(last.clone());
            walked.extend(ids);
        }
        walked
    }
}
