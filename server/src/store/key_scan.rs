//! Record ids read from an embedded store's keys, without the records, and
//! records read by id without a statement.
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
use std::sync::{Arc, OnceLock};

use surrealdb_catalog::providers::{CachePolicy, DatabaseProvider, TableProvider};
use surrealdb_catalog::val::{Array, Number, RecordId, RecordIdKey, TableName, Value};
use surrealdb_catalog::{DatabaseId, NamespaceId};
use surrealdb_datastore::Transaction;
use surrealdb_datastore::key::schema::{RecordKey, RecordPrefix};
use surrealdb_engine_local::Datastore;
use surrealdb_kvs::key::KVKeyDecode;
use surrealdb_kvs::key::Resumable;
use surrealdb_kvs::{Direction, TransactionType};

use super::record_json::record_json;
use super::{DATABASE, NAMESPACE, StoreError};

/// The embedded store's keys, read directly.
#[derive(Clone)]
pub(super) struct KeyScan {
    datastore: Arc<Datastore>,
    /// idm's namespace and database ids, once they exist: idmd never
    /// removes its database, so they hold for the process's life, and a
    /// read need not look them up by name (a sixth of a `GetObject`'s read).
    database: Arc<OnceLock<(NamespaceId, DatabaseId)>>,
}

impl KeyScan {
    pub(super) fn new(datastore: Arc<Datastore>) -> Self {
        KeyScan {
            datastore,
            database: Arc::default(),
        }
    }

    pub(super) fn datastore(&self) -> &Datastore {
        &self.datastore
    }

    /// Runs `read` in a read transaction of idm's database (`empty` when it
    /// does not exist yet: nothing stored), then cancels the transaction:
    /// a read holds nothing to keep.
    async fn in_read<T>(
        &self,
        what: &str,
        empty: T,
        read: impl AsyncFnOnce(&Transaction, NamespaceId, DatabaseId) -> anyhow::Result<T>,
    ) -> Result<T, StoreError> {
        let failed = |e: anyhow::Error| StoreError::Query(format!("reading {what}: {e:#}"));
        let tx = self
            .datastore
            .transaction(TransactionType::Read)
            .await
            .map_err(failed)?;
        let result = match self.database_ids(&tx).await {
            Ok(Some((ns, db))) => read(&tx, ns, db).await,
            Ok(None) => Ok(empty),
            Err(e) => Err(e),
        };
        let _ = tx.cancel().await;
        result.map_err(failed)
    }

    /// idm's namespace and database ids: remembered once they exist, looked
    /// up by name in `tx` until then (`None`: nothing stored yet).
    pub(super) async fn database_ids(
        &self,
        tx: &Transaction,
    ) -> anyhow::Result<Option<(NamespaceId, DatabaseId)>> {
        if let Some(&ids) = self.database.get() {
            return Ok(Some(ids));
        }
        let found = tx.get_db_by_name(NAMESPACE, DATABASE, None).await?;
        Ok(found.map(|db| {
            *self
                .database
                .get_or_init(|| (db.namespace_id, db.database_id))
        }))
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
        let limit = u32::try_from(limit).unwrap_or(u32::MAX);
        let tails = self
            .in_read(&format!("{table} keys"), Vec::new(), async |tx, ns, db| {
                let after = after.map(|after| Value::String(after.into()));
                ids_under(tx, ns, db, table, prefix, after, limit).await
            })
            .await?;
        tails
            .into_iter()
            .map(|tail| match <[String; 1]>::try_from(tail) {
                Ok([id]) => Ok(id),
                Err(_) => Err(StoreError::Query(format!(
                    "reading {table} keys: an id under {prefix:?} is not [{prefix:?}, id]"
                ))),
            })
            .collect()
    }

    /// For each of `ids`, the values the record `table:[prefix, id]` holds
    /// at `paths` (field names from the record's top), as JSON: `None` for
    /// a record that does not exist, and inside, `None` for an absent
    /// field. Each record is decoded once, without the query layer's
    /// evaluation of every field it projects (a search sorting 3,000
    /// matches by one property spent ~65 µs a record in `SELECT`).
    pub(super) async fn fields(
        &self,
        table: &str,
        prefix: &str,
        ids: &[String],
        paths: &[Vec<&str>],
    ) -> Result<Vec<Option<Vec<Option<serde_json::Value>>>>, StoreError> {
        let what = format!("{table} records");
        self.in_read(&what, vec![None; ids.len()], async |tx, ns, db| {
            let keys = ids.iter().map(|id| [prefix, id.as_str()]);
            let mut found = Vec::with_capacity(ids.len());
            read_records(tx, ns, db, table, keys, |record| {
                // A missing record comes back empty, not as an object.
                let Value::Object(fields) = record else {
                    found.push(None);
                    return Ok(());
                };
                let mut values = Vec::with_capacity(paths.len());
                for path in paths {
                    values.push(match at_path(fields, path) {
                        None | Some(Value::None) => None,
                        Some(value) => Some(to_json(value)?),
                    });
                }
                found.push(Some(values));
                Ok(())
            })
            .await?;
            Ok(found)
        })
        .await
    }

    /// For each of `keys`, the record `table:[key…]` (string parts) as JSON,
    /// as `SELECT *` reads it but for its `id` (the caller named it, and
    /// writing a record id out as text cost as much as the rest of a link),
    /// or `None` where there is none: in the order asked, in one read
    /// transaction, without a statement (a recon's batch of links and
    /// target objects through `SELECT … FROM $ids` was over a quarter of a
    /// no-change re-recon's CPU).
    pub(super) async fn records<const N: usize>(
        &self,
        table: &str,
        keys: &[[&str; N]],
    ) -> Result<Vec<Option<serde_json::Value>>, StoreError> {
        let what = format!("{table} records");
        self.in_read(&what, vec![None; keys.len()], async |tx, ns, db| {
            let table = TableName::from(table);
            let mut found = Vec::with_capacity(keys.len());
            for chunk in keys.chunks(RECORDS_A_READ) {
                let keys: Vec<RecordKey<'_>> = chunk
                    .iter()
                    .map(|parts| {
                        RecordKey::new(ns, db, Cow::Borrowed(&table), Cow::Owned(string_key(parts)))
                    })
                    .collect();
                for bytes in tx.getm_raw(keys, None).await? {
                    // A missing record comes back empty.
                    found.push(match bytes {
                        Some(bytes) => record_json(&bytes, |name| name != "id")?,
                        None => None,
                    });
                }
            }
            Ok(found)
        })
        .await
    }

    /// The record `table:[prefix, id]` as JSON, as `SELECT * FROM ONLY`
    /// returns it, or `None`; with `under: (table, key)`, in the same
    /// transaction, the rest of every id `[key, …]` of that table (string
    /// parts), in key order, as a record-id range `SELECT` lists them. A
    /// read by id needs no statement parsed, planned and evaluated: that
    /// was about a third of idmd's CPU a `GetObject`.
    pub(super) async fn record_and_ids_under(
        &self,
        table: &str,
        [prefix, id]: [&str; 2],
        under: Option<(&str, &str)>,
    ) -> Result<Option<(serde_json::Value, Vec<Vec<String>>)>, StoreError> {
        let what = format!("a {table} record");
        self.in_read(&what, None, async |tx, ns, db| {
            let key = id_key(Value::String(prefix.into()), Value::String(id.into()));
            let record = tx
                .get_record(ns, db, &TableName::from(table), &key, None)
                .await?;
            if !matches!(record.data, Value::Object(_)) {
                return Ok(None); // a missing record comes back empty
            }
            let tails = match under {
                Some((under, key)) => ids_under(tx, ns, db, under, key, None, u32::MAX).await?,
                None => Vec::new(),
            };
            Ok(Some((to_json(&record.data)?, tails)))
        })
        .await
    }
}

/// The rest of every id `[prefix, …]` of `table` (string parts), in key
/// order: at most `limit`, after `[prefix, after]` when given. Pages of keys
/// are read up to the first id with another prefix (cheaper than encoding
/// an upper bound; at most one page past the last id).
async fn ids_under(
    tx: &Transaction,
    ns: NamespaceId,
    db: DatabaseId,
    table: &str,
    prefix: &str,
    after: Option<Value>,
    limit: u32,
) -> anyhow::Result<Vec<Vec<String>>> {
    let table = TableName::from(table);
    let start = match after {
        None => Bound::Included(id_key(Value::String(prefix.into()), Value::None)),
        Some(after) => Bound::Excluded(id_key(Value::String(prefix.into()), after)),
    };
    let mut range = RecordPrefix {
        ns,
        db,
        tb: Cow::Borrowed(&table),
    }
    .range_where((start, Bound::<Cow<'_, RecordIdKey>>::Unbounded))?;
    let mut tails = Vec::new();
    loop {
        let left = limit.saturating_sub(u32::try_from(tails.len()).unwrap_or(u32::MAX));
        if left == 0 {
            return Ok(tails);
        }
        let page = IDS_A_READ.min(left);
        let keys = tx.keys_raw(range.clone(), page, 0, None).await?;
        for raw in &keys {
            let record = RecordKey::decode_key(raw)?;
            let RecordIdKey::Array(Array(parts)) = record.id.as_ref() else {
                return Ok(tails);
            };
            match parts.split_first() {
                Some((Value::String(first), rest)) if first.as_str() == prefix => {
                    let mut tail = Vec::with_capacity(rest.len());
                    for part in rest {
                        let Value::String(part) = part else {
                            anyhow::bail!("an id under {prefix:?} is not all strings");
                        };
                        tail.push(part.as_str().to_string());
                    }
                    tails.push(tail);
                }
                _ => return Ok(tails),
            }
        }
        match keys.last() {
            Some(last) if keys.len() == page as usize => {
                range = range.resume_after(last, Direction::Forward);
            }
            _ => return Ok(tails),
        }
    }
}

/// Reads the records `table:[key…]` (string parts) in multi-gets of
/// [`RECORDS_A_READ`], handing each record's data to `each` in the order
/// asked (a missing record's data is not an object).
async fn read_records<'k, const N: usize>(
    tx: &Transaction,
    ns: NamespaceId,
    db: DatabaseId,
    table: &str,
    keys: impl ExactSizeIterator<Item = [&'k str; N]>,
    mut each: impl FnMut(&Value) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let table = TableName::from(table);
    let rids: Vec<RecordId> = keys
        .map(|parts| RecordId {
            table: table.clone(),
            key: string_key(&parts),
        })
        .collect();
    for chunk in rids.chunks(RECORDS_A_READ) {
        let records = tx
            .get_records(ns, db, chunk, None, CachePolicy::ReadOnly)
            .await?;
        for record in records {
            each(&record.data)?;
        }
    }
    Ok(())
}

/// A stored value as JSON, as SurrealDB's own conversion gives it (through
/// its public value), but without copying the value first for the plain
/// values idm stores: converting whole records that way was a tenth of a
/// no-change re-recon's CPU. Other kinds (record ids, datetimes, …) take
/// SurrealDB's way.
pub(super) fn to_json(value: &Value) -> anyhow::Result<serde_json::Value> {
    use serde_json::Value as Json;
    Ok(match value {
        Value::None | Value::Null => Json::Null,
        Value::Bool(b) => Json::Bool(*b),
        Value::Number(Number::Int(i)) => Json::from(*i),
        Value::Number(Number::Float(f)) => {
            serde_json::Number::from_f64(*f).map_or(Json::Null, Json::Number)
        }
        Value::String(s) => Json::String(s.as_str().to_string()),
        Value::Array(items) => {
            Json::Array(items.iter().map(to_json).collect::<anyhow::Result<_>>()?)
        }
        Value::Object(fields) => object_to_json(fields, |_| true)?,
        other => {
            surrealdb_catalog::val::convert_value_to_public_value(other.clone())?.into_json_value()
        }
    })
}

/// The fields of `fields` that `keep` names, as a JSON object ([`to_json`]).
pub(super) fn object_to_json(
    fields: &surrealdb_catalog::val::Object,
    keep: impl Fn(&str) -> bool,
) -> anyhow::Result<serde_json::Value> {
    let mut map = serde_json::Map::with_capacity(fields.len());
    for (name, field) in fields.iter() {
        if keep(name.as_str()) {
            map.insert(name.as_str().to_string(), to_json(field)?);
        }
    }
    Ok(serde_json::Value::Object(map))
}

/// Ids read in one key scan.
const IDS_A_READ: u32 = 1_000;

/// Records fetched in one multi-get.
const RECORDS_A_READ: usize = 1_000;

fn at_path<'v>(fields: &'v surrealdb_catalog::val::Object, path: &[&str]) -> Option<&'v Value> {
    let (first, rest) = path.split_first()?;
    let mut value = fields.get(first)?;
    for name in rest {
        match value {
            Value::Object(inner) => value = inner.get(name)?,
            _ => return None,
        }
    }
    Some(value)
}

/// The record id key `[part, …]` of string parts.
fn string_key(parts: &[&str]) -> RecordIdKey {
    RecordIdKey::Array(Array(
        parts
            .iter()
            .map(|part| Value::String((*part).into()))
            .collect(),
    ))
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

    /// An object read by id through the keys is what the statement reads:
    /// every kind of value, its referrers past one page of keys and none of
    /// a target whose reference extends its own; a missing one is `None`.
    #[tokio::test]
    async fn objects_read_through_the_keys_are_what_the_statement_reads() {
        let (dir, embedded, by_statement) = embedded_and_by_statement("idm-key-read-").await;
        let referrers: Vec<String> = (0..1_005).map(|n| format!("managed/group/g{n}")).collect();
        for store in [&embedded, &by_statement] {
            store
                .execute(
                    "CREATE object:['user', 'u1'] CONTENT { type: 'user', oid: 'u1', rev: 3, \
                     created: '2025-01-01T00:00:00.000000Z', modified: '2025-01-02T00:00:00.000000Z', \
                     data: { userName: 'Jön', n: 42, big: 12345678901234, f: 1.5, t: true, \
                     none: null, list: ['a', 1, { x: [] }], nested: { a: { b: 'c' } }, '': 'e' }, \
                     keys: [['userName', 'jön']] };
                     CREATE object:['user', 'u10'] CONTENT { type: 'user', oid: 'u10', rev: 1, \
                     created: '2025-01-01T00:00:00.000000Z', modified: '2025-01-01T00:00:00.000000Z', \
                     data: {}, keys: [] };
                     FOR $g IN $groups { \
                         CREATE type::record('referrer', ['managed/user/u1', 'members', $g]); };
                     CREATE referrer:['managed/user/u10', 'members', 'managed/group/x'];
                     CREATE referrer:['managed/user/u1', 'manager', 'managed/user/u10'];",
                    json!({ "groups": referrers }),
                )
                .await
                .unwrap();
        }
        let as_json = |o: crate::store::StoredObject| {
            json!({ "type": o.type_name, "oid": o.oid, "rev": o.rev, "created": o.created,
                    "modified": o.modified, "data": o.data, "keys": o.keys })
        };
        let read = async |store: &Store, oid: &str| {
            let plain = store.get_object("user", oid).await.unwrap();
            let with = store.get_object_with_referrers("user", oid).await.unwrap();
            let with = with.map(|(object, rows)| {
                let rows: Vec<_> = rows
                    .into_iter()
                    .map(|r| (r.source, r.property, r.target))
                    .collect();
                (as_json(object), rows)
            });
            (plain.map(as_json), with)
        };
        for oid in ["u1", "u10", "nobody"] {
            let (plain, with) = read(&embedded, oid).await;
            assert_eq!(
                (plain.clone(), with.clone()),
                read(&by_statement, oid).await,
                "{oid}"
            );
            if oid == "u1" {
                let (object, rows) = with.unwrap();
                assert_eq!(plain.unwrap(), object);
                assert_eq!(object["data"]["big"], json!(12345678901234_i64));
                assert_eq!(object["data"]["nested"]["a"]["b"], "c");
                assert_eq!(rows.len(), 1_006, "every referrer, past a page of keys");
                assert!(
                    rows.iter()
                        .all(|(_, _, target)| target == "managed/user/u1")
                );
            }
        }
        embedded.close(std::time::Duration::from_secs(10)).await;
        let _ = std::fs::remove_dir_all(dir);
    }

    /// Batches read by id (a recon's target objects, its links, its
    /// correlation by unique value) through the keys are what the
    /// statement reads: past a multi-get's worth of ids, with ids that
    /// exist and ids that do not interleaved, in the order asked.
    #[tokio::test]
    async fn batches_read_through_the_keys_are_what_the_statement_reads() {
        let (dir, embedded, by_statement) = embedded_and_by_statement("idm-key-batch-").await;
        // Every other id of 0..2,500 exists; 'u7' also under another type.
        let ids: Vec<String> = (0..2_500).map(|n| format!("u{n}")).collect();
        let existing: Vec<&String> = ids.iter().step_by(2).collect();
        for store in [&embedded, &by_statement] {
            store
                .execute(
                    "FOR $id IN $ids { \
                         CREATE type::record('object', ['user', $id]) CONTENT { type: 'user', \
                         oid: $id, rev: 2, created: '2025-01-01T00:00:00.000000Z', \
                         modified: '2025-01-02T00:00:00.000000Z', \
                         data: { userName: $id, n: 7, list: [$id, { x: null }] }, \
                         keys: [['userName', $id]] }; \
                         CREATE type::record('unique_key', ['user', 'userName', $id]) \
                         CONTENT { oid: $id }; \
                         CREATE type::record('link', ['m', 's-' + $id]) \
                         CONTENT { mapping: 'm', source: 's-' + $id, target: $id }; \
                     }; \
                     CREATE object:['role', 'u7'] CONTENT { type: 'role', oid: 'u7', rev: 1, \
                     created: '2025-01-01T00:00:00.000000Z', \
                     modified: '2025-01-01T00:00:00.000000Z', data: {}, keys: [] };",
                    json!({ "ids": existing }),
                )
                .await
                .unwrap();
        }
        let sources: Vec<String> = ids.iter().map(|id| format!("s-{id}")).collect();
        let read = async |store: &Store| {
            let mut objects: Vec<_> = store
                .get_objects("user", &ids)
                .await
                .unwrap()
                .into_iter()
                .map(|o| {
                    json!({ "type": o.type_name, "oid": o.oid, "rev": o.rev,
                            "created": o.created, "modified": o.modified,
                            "data": o.data, "keys": o.keys })
                })
                .collect();
            objects.sort_by_key(|o| o["oid"].as_str().unwrap().to_string());
            let mut links = store.links_of_sources("m", &sources).await.unwrap();
            links.sort_by(|a, b| a.source.cmp(&b.source));
            let holders = store
                .lookup_unique_many("user", "userName", &ids)
                .await
                .unwrap();
            (objects, links, holders)
        };
        let (objects, links, holders) = read(&embedded).await;
        let by_statement = read(&by_statement).await;
        assert_eq!(
            (&objects, &links, &holders),
            (&by_statement.0, &by_statement.1, &by_statement.2)
        );
        assert_eq!(objects.len(), 1_250, "the users, not the role");
        assert_eq!(objects[0]["data"]["list"], json!(["u0", { "x": null }]));
        assert_eq!(links.len(), 1_250);
        assert_eq!(holders.len(), ids.len(), "one answer an id, in order");
        for (n, holder) in holders.iter().enumerate() {
            let expected = (n % 2 == 0).then(|| format!("u{n}"));
            assert_eq!(holder, &expected, "u{n}");
        }
        embedded.close(std::time::Duration::from_secs(10)).await;
        let _ = std::fs::remove_dir_all(dir);
    }

    /// Stored values become the JSON SurrealDB's own conversion gives, for
    /// the kinds converted directly and for those left to SurrealDB.
    #[test]
    fn stored_values_read_as_surrealdb_converts_them() {
        use surrealdb::types::SurrealValue;
        use surrealdb_catalog::val::{
            Datetime, Number, Object, Value, convert_public_value_to_internal,
            convert_value_to_public_value,
        };
        let plain = convert_public_value_to_internal(
            json!({
                "s": "Ünïcødé\u{0}", "i": -7, "big": i64::MAX, "f": 2.5, "whole": 3.0,
                "t": true, "n": null, "a": [1, "x", [null, { "k": [] }]], "o": {},
            })
            .into_value(),
        );
        let mut fields = Object::default();
        fields.insert("plain", plain);
        fields.insert("none", Value::None);
        fields.insert("nan", Value::Number(Number::Float(f64::NAN)));
        fields.insert(
            "decimal",
            Value::Number(Number::Decimal("1.50".parse().unwrap())),
        );
        fields.insert("when", Value::Datetime(Datetime::MIN_UTC));
        fields.insert("uuid", Value::Uuid(uuid::Uuid::nil().into()));
        let value = Value::Object(fields);
        let expected = convert_value_to_public_value(value.clone())
            .unwrap()
            .into_json_value();
        assert_eq!(super::to_json(&value).unwrap(), expected);
        assert_eq!(expected["plain"]["whole"], json!(3.0));
    }

    /// An embedded store (read through its keys) in a new directory under
    /// `label`, and a `mem://` one (read by statement), to compare.
    async fn embedded_and_by_statement(label: &str) -> (std::path::PathBuf, Store, Store) {
        let dir = std::env::temp_dir().join(format!("{label}{}", uuid::Uuid::new_v4()));
        let embedded = Store::open(&format!("surrealkv://{}", dir.display()))
            .await
            .unwrap();
        let by_statement = Store::open("mem://").await.unwrap();
        assert!(embedded.key_scan.is_some() && by_statement.key_scan.is_none());
        (dir, embedded, by_statement)
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
