//! New records written through an embedded store's keys, without a
//! statement: a managed create's batch (its objects, audit entries, unique
//! values, links, sort keys, credentials and outbox entries) in one write
//! transaction.
//!
//! An `INSERT` of a row SurrealDB 3.3.5 has to plan, evaluate and run
//! through its document pipeline (permissions, fields, indexes, events,
//! live queries) cost about twice what storing the row's key costs: a
//! profile of an initial reconciliation put a third of its CPU in that
//! pipeline, for tables idm keeps SCHEMALESS and without indexes, events or
//! live queries (`schema.surql`). Here each row becomes the record an
//! `INSERT` would store (its fields, and its id, bound as JSON and converted
//! the way a bound parameter is) and is put under its key, failing as the
//! `INSERT` fails when the key exists, in the same kind of transaction, so
//! write conflicts are retried as before. A SurrealDB server's store keeps
//! the statements.

use std::sync::Arc;

use surrealdb::types::SurrealValue;
use surrealdb_catalog::Record;
use surrealdb_catalog::providers::TableProvider;
use surrealdb_catalog::val::{
    Number, Object, RecordId, RecordIdKey, TableName, Value, convert_public_value_to_internal,
};
use surrealdb_catalog::{DatabaseId, NamespaceId};
use surrealdb_datastore::Transaction;
use surrealdb_kvs::TransactionType;

use super::StoreError;
use super::key_scan::KeyScan;
use super::objects::CONF_STALE;

/// Rows for one table, each a JSON object with its record id as `id` (a
/// string or an array), as `INSERT INTO table $rows` takes them.
pub(super) struct NewRows<'a> {
    pub table: &'a str,
    pub rows: &'a [serde_json::Value],
    pub if_taken: IfTaken,
}

/// What a row does when its key already holds a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum IfTaken {
    /// Fails the write, as `INSERT` does.
    Refuse,
    /// Cannot happen: the key is made for this write (a new UUIDv7, or the
    /// id of an object the same write creates, whose own row is refused if
    /// taken). Such a row is stored without first reading whether its key
    /// exists: on a store bounded by `--store-memory` that read probes the
    /// bloom filter of every table the key may be in (12 % of the CPU of a
    /// 1M-row initial reconciliation went to such reads).
    CannotBe,
}

/// Whether the rows were written, or must go through the statements (a
/// table not defined yet: an `INSERT` would define it).
#[derive(Debug, PartialEq, Eq)]
pub(super) enum KeyWrite {
    Written,
    UseStatements,
}

impl KeyScan {
    /// Writes every row of `tables` in one write transaction, if
    /// `meta:conf.version` (0 when absent) is `conf` when given: what the
    /// statements `IF (meta:conf.version ?? 0) != $conf { THROW … }` and
    /// `INSERT INTO table $rows RETURN NONE` do, in that order.
    pub(super) async fn insert(
        &self,
        conf: Option<u64>,
        tables: &[NewRows<'_>],
    ) -> Result<KeyWrite, StoreError> {
        let failed = |e: anyhow::Error| StoreError::Query(format!("writing records: {e:#}"));
        let tx = self
            .datastore()
            .transaction(TransactionType::Write)
            .await
            .map_err(failed)?;
        let outcome = match self.database_ids(&tx).await {
            Ok(Some((ns, db))) => put_all(&tx, ns, db, conf, tables).await,
            Ok(None) => Ok(Outcome::UseStatements),
            Err(e) => Err(e),
        };
        if let Ok(Outcome::Put) = outcome {
            tx.commit().await.map_err(failed)?;
            return Ok(KeyWrite::Written);
        }
        let _ = tx.cancel().await;
        match outcome {
            Ok(Outcome::Stale) => Err(StoreError::Query(CONF_STALE.to_string())),
            Ok(_) => Ok(KeyWrite::UseStatements),
            Err(e) => Err(failed(e)),
        }
    }
}

enum Outcome {
    Put,
    Stale,
    UseStatements,
}

async fn put_all(
    tx: &Transaction,
    ns: NamespaceId,
    db: DatabaseId,
    conf: Option<u64>,
    tables: &[NewRows<'_>],
) -> anyhow::Result<Outcome> {
    for NewRows { table, rows, .. } in tables {
        if !rows.is_empty()
            && tx
                .get_tb(ns, db, &TableName::from(*table), None)
                .await?
                .is_none()
        {
            return Ok(Outcome::UseStatements);
        }
    }
    if let Some(expected) = conf
        && conf_version(tx, ns, db).await? != i64::try_from(expected).unwrap_or(i64::MAX)
    {
        return Ok(Outcome::Stale);
    }
    for NewRows {
        table,
        rows,
        if_taken,
    } in tables
    {
        let name = TableName::from(*table);
        for row in *rows {
            let (key, record) = record_of(&name, row)?;
            let record = Arc::new(record);
            match if_taken {
                IfTaken::Refuse => tx.put_record(ns, db, &name, &key, record).await?,
                IfTaken::CannotBe => tx.set_record(ns, db, &name, &key, record).await?,
            }
        }
    }
    Ok(Outcome::Put)
}

/// `meta:conf.version ?? 0`.
async fn conf_version(tx: &Transaction, ns: NamespaceId, db: DatabaseId) -> anyhow::Result<i64> {
    let record = tx
        .get_record(
            ns,
            db,
            &TableName::from("meta"),
            &RecordIdKey::String("conf".into()),
            None,
        )
        .await?;
    Ok(match &record.data {
        Value::Object(fields) => match fields.get("version") {
            Some(Value::Number(Number::Int(version))) => *version,
            Some(Value::None | Value::Null) | None => 0,
            Some(other) => anyhow::bail!("meta:conf.version is not an integer: {other:?}"),
        },
        _ => 0,
    })
}

/// The key and the record `INSERT INTO table [row]` stores for `row`.
fn record_of(table: &TableName, row: &serde_json::Value) -> anyhow::Result<(RecordIdKey, Record)> {
    let serde_json::Value::Object(fields) = row else {
        anyhow::bail!("a {table} row is not an object");
    };
    let Some(id) = fields.get("id") else {
        anyhow::bail!("a {table} row has no id");
    };
    let key = match internal(id.clone()) {
        Value::String(s) => RecordIdKey::String(s),
        Value::Array(parts) => RecordIdKey::Array(parts),
        Value::Number(Number::Int(n)) => RecordIdKey::Number(n),
        other => anyhow::bail!("a {table} row's id is not a string or an array: {other:?}"),
    };
    let mut data = Object::default();
    for (name, value) in fields {
        if name != "id" {
            data.insert(name.as_str(), internal(value.clone()));
        }
    }
    data.insert(
        "id",
        Value::RecordId(RecordId {
            table: table.clone(),
            key: key.clone(),
        }),
    );
    Ok((key, Record::new(Value::Object(data))))
}

/// A JSON value as SurrealDB holds it when it is bound as a parameter.
fn internal(value: serde_json::Value) -> Value {
    convert_public_value_to_internal(value.into_value())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::{Map, Value, json};

    use super::{IfTaken, KeyWrite, NewRows};
    use crate::store::sort::SortIndex;
    use crate::store::{AsRetryable, Link, NewObject, Store, StoreError, StoredSecret, Write};

    /// An embedded store in a new directory, and a second handle on it that
    /// writes through statements, as a SurrealDB server's store does.
    async fn by_keys_and_by_statements(label: &str) -> (std::path::PathBuf, Store, Store) {
        let dir = std::env::temp_dir().join(format!("{label}{}", uuid::Uuid::new_v4()));
        let by_keys = Store::open(&format!("surrealkv://{}", dir.display()))
            .await
            .unwrap();
        assert!(by_keys.key_scan.is_some());
        let mut by_statements = by_keys.clone();
        by_statements.key_scan = None;
        (dir, by_keys, by_statements)
    }

    fn user(oid: &str, name: &str, n: usize) -> NewObject {
        let mut data = Map::new();
        data.insert("userName".into(), json!(name));
        data.insert("sn".into(), json!(format!("Ünïcødé {n} it's")));
        data.insert(
            "givenName".into(),
            if n.is_multiple_of(3) {
                Value::Null
            } else {
                json!(n)
            },
        );
        data.insert("active".into(), json!(n.is_multiple_of(2)));
        data.insert("score".into(), json!(n as f64 + 0.5));
        data.insert(
            "tags".into(),
            json!(["a", { "deep": [1, null, "x\u{0}y"] }]),
        );
        NewObject {
            oid: oid.to_string(),
            write: Write {
                data,
                unique: vec![("userName".into(), name.to_lowercase())],
                secrets: BTreeMap::from([(
                    "password".into(),
                    Some(StoredSecret::sealed(format!("sealed-{n}"))),
                )]),
                changed: vec!["userName".into(), "sn".into()],
                ..Write::default()
            },
        }
    }

    /// Every record of `table` as `SELECT *` reads it, as text: UUIDs and
    /// timestamps (generated) replaced by their kind, and the two runs'
    /// prefixes dropped, so that each run's records compare; sorted.
    async fn dump(store: &Store, table: &str) -> Vec<String> {
        let generated = regex::Regex::new(
            r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|\d{4}-\d\d-\d\dT[0-9:.]+Z|key-|stm-",
        )
        .unwrap();
        let rows: Vec<Value> = store
            .query_all(&format!("SELECT * FROM `{table}`"), Value::Null)
            .await
            .unwrap();
        let mut rows: Vec<String> = rows
            .iter()
            .map(|row| generated.replace_all(&row.to_string(), "<>").into_owned())
            .collect();
        rows.sort();
        rows
    }

    /// A batch written through the keys is, record for record, what the
    /// statements write: objects, audit entries, unique values, links both
    /// ways, sort keys, credentials, their hash queue and outbox entries.
    /// The store then reads it as it reads any other.
    #[tokio::test]
    async fn a_create_through_the_keys_stores_what_the_statements_store() {
        let (dir, by_keys, by_statements) = by_keys_and_by_statements("idm-key-write-").await;
        by_keys
            .prepare_sort_indexes(BTreeMap::from([(
                "user".to_string(),
                vec![
                    SortIndex {
                        property: "givenName".into(),
                        fold: false,
                    },
                    SortIndex {
                        property: "sn".into(),
                        fold: true,
                    },
                    SortIndex {
                        property: "userName".into(),
                        fold: true,
                    },
                ],
            )]))
            .await
            .unwrap();
        by_keys.set_sync_subscriptions(BTreeMap::from([(
            "user".to_string(),
            vec!["managedUser_ldap".to_string()],
        )]));
        for (prefix, store) in [("key-", &by_keys), ("stm-", &by_statements)] {
            let objects: Vec<NewObject> = (0..30)
                .map(|n| user(&format!("{prefix}u{n}"), &format!("{prefix}User{n}"), n))
                .collect();
            let links: Vec<Link> = (0..30)
                .map(|n| Link {
                    mapping: "csv_user".into(),
                    source: format!("{prefix}s{n}"),
                    target: format!("{prefix}u{n}"),
                })
                .collect();
            let created = store
                .create_objects("recon", "user", &objects, &links)
                .await
                .unwrap();
            assert_eq!(created.len(), 30);
        }
        for table in [
            "object",
            "audit",
            "unique_key",
            "credential",
            "hash_queue",
            "outbox",
            "link",
            "link_target",
            "sort:user:givenName",
            "sort:user:sn",
            "sort:user:userName",
        ] {
            let rows = dump(&by_keys, table).await;
            assert_eq!(rows.len(), 60, "{table}: {rows:#?}");
            // Sorted, each record written through the keys sits beside its
            // twin written by statement.
            for pair in rows.chunks(2) {
                assert_eq!(pair[0], pair[1], "{table}");
            }
        }

        let user = by_keys.get_object("user", "key-u4").await.unwrap().unwrap();
        assert_eq!(
            user.data["tags"],
            json!(["a", { "deep": [1, null, "x\u{0}y"] }])
        );
        assert_eq!(
            by_keys
                .lookup_unique("user", "userName", "key-user4")
                .await
                .unwrap(),
            Some("key-u4".to_string())
        );
        assert_eq!(by_keys.pending_hash_count().await.unwrap(), 60);
        drop(by_statements);
        by_keys.close(std::time::Duration::from_secs(10)).await;
        let _ = std::fs::remove_dir_all(dir);
    }

    /// A create through the keys fails as the statements fail, and leaves
    /// nothing: a taken id, a taken unique value (also when concurrent
    /// creates race for it: one wins), two links of one mapping to one new
    /// object, and a conf that moved.
    #[tokio::test]
    async fn a_create_through_the_keys_fails_as_the_statements_do_and_writes_nothing() {
        let (dir, store, _) = by_keys_and_by_statements("idm-key-write-fail-").await;
        store
            .create_objects("t", "user", &[user("u1", "Alice", 1)], &[])
            .await
            .unwrap();
        let taken_id = store
            .create_objects(
                "t",
                "user",
                &[user("u2", "Bob", 2), user("u1", "Carol", 1)],
                &[],
            )
            .await;
        assert!(
            matches!(taken_id, Err(StoreError::AlreadyExists(ref o)) if o == "managed/user/u1"),
            "{taken_id:?}"
        );
        let taken_value = store
            .create_objects(
                "t",
                "user",
                &[user("u3", "Dave", 3), user("u4", "ALICE", 4)],
                &[],
            )
            .await;
        assert!(
            matches!(taken_value, Err(StoreError::NotUnique { ref property, .. }) if property == "userName"),
            "{taken_value:?}"
        );
        assert_eq!(
            store.count_of_type("user").await.unwrap(),
            1,
            "no part of a failed batch"
        );
        assert_eq!(
            store
                .lookup_unique("user", "userName", "bob")
                .await
                .unwrap(),
            None
        );

        let one_target = |source: &str| Link {
            mapping: "csv_user".into(),
            source: source.into(),
            target: "u5".into(),
        };
        let two_links_one_object = store
            .create_objects(
                "t",
                "user",
                &[user("u5", "Eve", 5)],
                &[one_target("s1"), one_target("s2")],
            )
            .await;
        assert!(two_links_one_object.is_err(), "{two_links_one_object:?}");
        assert_eq!(store.get_object("user", "u5").await.unwrap(), None);

        let racers = (0..8).map(|n| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .create_objects("t", "user", &[user(&format!("r{n}"), "Racer", n)], &[])
                    .await
            })
        });
        let mut won = 0;
        for racer in racers {
            let outcome = racer.await.unwrap();
            assert!(
                matches!(outcome, Ok(_) | Err(StoreError::NotUnique { .. })),
                "{outcome:?}"
            );
            won += usize::from(outcome.is_ok());
        }
        assert_eq!(won, 1, "one create takes the value");
        assert_eq!(store.count_of_type("user").await.unwrap(), 2);

        let scan = store.key_scan.as_ref().unwrap();
        let row = [json!({ "id": ["user", "userName", "zed"], "oid": "x" })];
        let rows = [NewRows {
            table: "unique_key",
            rows: &row,
            if_taken: IfTaken::Refuse,
        }];
        let stale = scan.insert(Some(3), &rows).await.unwrap_err();
        assert!(stale.is_conf_stale(), "{stale}");
        let holder = async || {
            store
                .lookup_unique("user", "userName", "zed")
                .await
                .unwrap()
        };
        assert_eq!(holder().await, None);
        assert_eq!(
            scan.insert(Some(0), &rows).await.unwrap(),
            KeyWrite::Written,
            "no conf stored: version 0"
        );
        assert_eq!(holder().await, Some("x".to_string()));
        let undefined = [NewRows {
            table: "never_defined",
            rows: &row,
            if_taken: IfTaken::Refuse,
        }];
        assert_eq!(
            scan.insert(None, &undefined).await.unwrap(),
            KeyWrite::UseStatements
        );
        store.close(std::time::Duration::from_secs(10)).await;
        let _ = std::fs::remove_dir_all(dir);
    }
}
