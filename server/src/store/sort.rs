//! Sort keys: ordered pages and prefix searches over the properties a type
//! declares `searchable` (Wren: "indexed in the repository"), without
//! reading the whole type.
//!
//! One table per indexed property, `sort:<type>:<property>`, one empty
//! record per object with the id `[rank, value, oid]`: the record ids are
//! the index, kept in key order by the store, written in the object's own
//! transaction. `rank` orders values the way `ORDER BY` orders them (absent,
//! then null, then booleans, then strings); `value` is the string
//! lower-cased for a `caseExact: false` property, as queries compare it.
//! A table scan reads ids in that order, forward or backward, with `LIMIT`
//! and `START` pushed down to the key-value scan; a record-id range of it is
//! a prefix search.
//!
//! SurrealDB has no index on an expression (`string::lowercase`), cannot
//! scan a record-id range backward, and sorts in memory whenever ties must
//! be broken by another field, so the store keeps these keys itself
//! (like `unique_key`). Numbers and other non-string values in a declared
//! string property are possible only in data written before its schema
//! said so; they get the rank [`UNORDERED`], and a query that meets one
//! falls back to reading the type.
//!
//! The set of indexed properties is fixed at start (`prepare_sort_indexes`,
//! before anything writes): a property newly declared searchable is
//! backfilled from its objects, one no longer declared is dropped.
//! `sort_index:[type, property]` records which exist and how they fold.
//! Nodes sharing a store must declare the same searchable properties (as
//! they must declare the same schema): a node that does not know a
//! property is indexed writes objects without its keys.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, PoisonError, RwLock};

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::objects::StoredObject;
use super::query::{CompiledFilter, SearchTerm};
use super::{Store, StoreError, seek};

/// A property kept in sort keys; `fold` when it is compared lower-cased.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SortIndex {
    pub property: String,
    pub fold: bool,
}

/// Which properties of each type have sort keys, shared by every clone of
/// a [`Store`]: those written by every write, and those complete enough
/// for queries to use.
#[derive(Clone, Default)]
pub struct SortIndexes(Arc<RwLock<Indexed>>);

/// Swapped whole, so a write sees one consistent set.
pub(super) type Indexed = Arc<IndexedSet>;

#[derive(Debug, Default)]
pub(super) struct IndexedSet {
    written: BTreeMap<String, Vec<SortIndex>>,
    ready: BTreeSet<(String, String)>,
}

impl IndexedSet {
    pub(super) fn of(&self, type_name: &str) -> &[SortIndex] {
        self.written.get(type_name).map_or(&[], Vec::as_slice)
    }

    fn ready(&self, type_name: &str, property: &str) -> Option<&SortIndex> {
        if !self
            .ready
            .contains(&(type_name.to_string(), property.to_string()))
        {
            return None;
        }
        self.of(type_name).iter().find(|i| i.property == property)
    }
}

impl SortIndexes {
    pub(super) fn snapshot(&self) -> Indexed {
        Arc::clone(&self.0.read().unwrap_or_else(PoisonError::into_inner))
    }

    fn set(&self, set: IndexedSet) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(set);
    }
}

const ABSENT: i64 = 0;
const NULL: i64 = 1;
const BOOLEAN: i64 = 2;
const STRING: i64 = 4;
/// Numbers, arrays, objects: kept, so the index stays complete, but not
/// ordered the way `ORDER BY` orders them.
const UNORDERED: i64 = 5;

/// `sort:<type>:<property>`, or `None` for a name that could not be
/// written into a query as an escaped table name (the schema allows none).
pub(super) fn table(type_name: &str, property: &str) -> Option<String> {
    let plain = |name: &str| {
        !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    };
    (plain(type_name) && plain(property)).then(|| format!("sort:{type_name}:{property}"))
}

/// `[rank, value]` of a property value, as the key orders it.
fn ranked(value: Option<&Value>, fold: bool) -> (i64, Value) {
    match value {
        None => (ABSENT, Value::Null),
        Some(Value::Null) => (NULL, Value::Null),
        Some(Value::Bool(b)) => (BOOLEAN, Value::Bool(*b)),
        Some(Value::String(s)) if fold => (STRING, Value::String(s.to_lowercase())),
        Some(Value::String(s)) => (STRING, Value::String(s.clone())),
        Some(_) => (UNORDERED, Value::Null),
    }
}

/// How one sort property orders matches sorted in memory.
#[derive(Debug, Clone, Copy)]
pub(super) struct InMemoryOrder {
    pub fold: bool,
    pub descending: bool,
}

/// `rows` (an oid and its values of the sort properties, `None` when
/// absent) ordered as `ORDER BY <properties>, oid ASC` orders them, which
/// is the order of the sort keys; `None` when a value is one the keys do
/// not order (a number, an array, …), so the store must sort.
pub(super) fn in_sort_order(
    rows: Vec<(String, Vec<Option<Value>>)>,
    orders: &[InMemoryOrder],
) -> Option<Vec<String>> {
    let mut ranked_rows = Vec::with_capacity(rows.len());
    for (oid, values) in rows {
        let mut keys = Vec::with_capacity(orders.len());
        for (value, order) in values.iter().zip(orders) {
            let key = ranked(value.as_ref(), order.fold);
            if key.0 == UNORDERED {
                return None;
            }
            keys.push(key);
        }
        ranked_rows.push((keys, oid));
    }
    ranked_rows.sort_by(|(a, a_oid), (b, b_oid)| {
        a.iter()
            .zip(b)
            .zip(orders)
            .map(|((a, b), order)| {
                let by_value = a.0.cmp(&b.0).then_with(|| match (&a.1, &b.1) {
                    (Value::String(a), Value::String(b)) => a.cmp(b),
                    (Value::Bool(a), Value::Bool(b)) => a.cmp(b),
                    _ => std::cmp::Ordering::Equal,
                });
                if order.descending {
                    by_value.reverse()
                } else {
                    by_value
                }
            })
            .find(|o| o.is_ne())
            .unwrap_or(std::cmp::Ordering::Equal)
            .then_with(|| a_oid.cmp(b_oid))
    });
    Some(ranked_rows.into_iter().map(|(_, oid)| oid).collect())
}

/// The sort keys of one object: `(table, [rank, value, oid])`.
pub(super) fn keys_of(
    type_name: &str,
    oid: &str,
    data: &Map<String, Value>,
    indexes: &[SortIndex],
) -> Vec<(String, Value)> {
    indexes
        .iter()
        .filter_map(|index| {
            let table = table(type_name, &index.property)?;
            let (rank, value) = ranked(data.get(&index.property), index.fold);
            Some((table, json!([rank, value, oid])))
        })
        .collect()
}

/// The rows `keys` are, by table: `{ id }`, empty records.
pub(super) fn key_rows(keys: Vec<(String, Value)>) -> BTreeMap<String, Vec<Value>> {
    let mut by_table: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for (table, id) in keys {
        by_table.entry(table).or_default().push(json!({ "id": id }));
    }
    by_table
}

/// `INSERT` statements for [`key_rows`], one per table, and their
/// parameters (`$sort0`, `$sort1`, …).
pub(super) fn insert_keys(
    by_table: BTreeMap<String, Vec<Value>>,
    params: &mut Map<String, Value>,
) -> String {
    let mut sql = String::new();
    for (n, (table, rows)) in by_table.into_iter().enumerate() {
        // `table` holds only [A-Za-z0-9_-:] (see `table`): safe between backticks.
        sql.push_str(&format!("INSERT INTO `{table}` $sort{n} RETURN NONE;"));
        params.insert(format!("sort{n}"), Value::Array(rows));
    }
    sql
}

/// What an update changes: keys to delete (`[table, id]`) and to insert.
pub(super) fn changed_keys(
    current: &StoredObject,
    updated: Option<&StoredObject>,
    indexes: &[SortIndex],
) -> (Vec<Value>, Vec<(String, Value)>) {
    let before = keys_of(&current.type_name, &current.oid, &current.data, indexes);
    let after = updated.map_or_else(Vec::new, |u| {
        keys_of(&u.type_name, &u.oid, &u.data, indexes)
    });
    let removed = before
        .iter()
        .filter(|k| !after.contains(k))
        .map(|(table, id)| json!([table, id]))
        .collect();
    let added = after.into_iter().filter(|k| !before.contains(k)).collect();
    (removed, added)
}

/// Deletes the keys `changed_keys` removed.
pub(super) const DELETE_KEYS: &str =
    "FOR $k IN $unsorted { DELETE type::record($k[0], $k[1]) RETURN NONE; };";

/// The smallest string greater than every string starting with `prefix`,
/// or `None` when there is none (every string starts with "").
fn after_prefix(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let next = (u32::from(last) + 1..=u32::from(char::MAX)).find_map(char::from_u32);
        if let Some(next) = next {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

/// What the sort keys know about a search.
#[derive(Debug, Clone, PartialEq)]
pub enum Candidates {
    /// Every object that can match (the filter decides which do).
    Ids(Vec<String>),
    /// Exactly the objects that match: the terms were the whole filter.
    Matches(Vec<String>),
    /// More than the cap: about this many (the terms' keys counted, an
    /// upper bound).
    Many(u64),
}

/// Keys read, at most, walking an index in order for one page of a broad
/// search before giving up and scanning the type.
#[cfg(not(test))]
const WALK_BUDGET: usize = 20_000;
#[cfg(not(test))]
const WALK_CHUNK: usize = 1_000;
// Small enough for the tests' few objects to take several chunks.
#[cfg(test)]
const WALK_BUDGET: usize = 40;
#[cfg(test)]
const WALK_CHUNK: usize = 7;

/// The ids of `keys[offset..offset + limit]`. Keys read backward come in
/// descending value order but with ties by descending id: each value's ids
/// are put in ascending order (every value's keys are all there, the last
/// one's being its lowest ids).
fn page_of(keys: Vec<Key>, descending: bool, offset: usize, limit: usize) -> Vec<String> {
    let mut groups: Vec<Vec<Key>> = Vec::new();
    for key in keys {
        match groups.last_mut() {
            Some(group) if descending && group[0].0 == key.0 && group[0].1 == key.1 => {
                group.push(key)
            }
            _ => groups.push(vec![key]),
        }
    }
    groups
        .into_iter()
        .flat_map(|mut group| {
            group.sort_by(|a, b| a.2.cmp(&b.2));
            group
        })
        .skip(offset)
        .take(limit)
        .map(|(_, _, oid)| oid)
        .collect()
}

/// A term's keys, `[$r0, $v0]` up to `[$r1, $v1]` (a shorter array sorts
/// before every longer one it begins).
/// `{table}` is spliced in (only [A-Za-z0-9_-:], see `table`, between
/// backticks): a literal record-id range seeks to its start, while
/// `type::record($table, range)` scans the whole table.
fn key_range(table: &str) -> String {
    format!("`{table}`:[$r0, $v0]..[$r1, $v1]")
}

/// From the first key of value `[$rank, $value]` to the end.
fn from_value(table: &str) -> String {
    format!("`{table}`:[$rank, $value]..[6]")
}

type Key = (i64, Value, String);

impl Store {
    /// Makes `wanted` the indexed properties of each type: backfills the
    /// keys of those not (or differently) indexed before, drops those no
    /// longer wanted. Runs at start, before anything writes.
    pub async fn prepare_sort_indexes(
        &self,
        wanted: BTreeMap<String, Vec<SortIndex>>,
    ) -> Result<(), StoreError> {
        #[derive(Deserialize)]
        struct Marker {
            key: (String, String),
            fold: bool,
        }
        let wanted: BTreeMap<String, Vec<SortIndex>> = wanted
            .into_iter()
            .map(|(t, indexes)| {
                let kept = indexes
                    .into_iter()
                    .filter(|i| table(&t, &i.property).is_some())
                    .collect();
                (t, kept)
            })
            .collect();
        // Writes keep the wanted keys from now on; queries wait for the backfill.
        self.sorts.set(IndexedSet {
            written: wanted.clone(),
            ready: BTreeSet::new(),
        });
        let markers: Vec<Marker> = self
            .query_all(
                "SELECT record::id(id) AS key, fold FROM sort_index",
                Value::Null,
            )
            .await?;
        let mut have: BTreeMap<(String, String), bool> =
            markers.into_iter().map(|m| (m.key, m.fold)).collect();
        let mut ready = BTreeSet::new();
        for (type_name, indexes) in &wanted {
            for index in indexes {
                let key = (type_name.clone(), index.property.clone());
                if have.remove(&key) != Some(index.fold) {
                    self.rebuild_sort_index(type_name, index).await?;
                }
                ready.insert(key);
            }
        }
        for (type_name, property) in have.into_keys() {
            tracing::info!(%type_name, %property, "dropping the sort keys of a property no longer searchable");
            self.drop_sort_index(&type_name, &property).await?;
        }
        self.sorts.set(IndexedSet {
            written: wanted,
            ready,
        });
        Ok(())
    }

    async fn drop_sort_index(&self, type_name: &str, property: &str) -> Result<(), StoreError> {
        let Some(table) = table(type_name, property) else {
            return Ok(());
        };
        self.execute(
            &format!(
                "REMOVE TABLE IF EXISTS `{table}`; DELETE type::record('sort_index', [$type, $property]);"
            ),
            json!({ "type": type_name, "property": property }),
        )
        .await
    }

    async fn rebuild_sort_index(
        &self,
        type_name: &str,
        index: &SortIndex,
    ) -> Result<(), StoreError> {
        const PAGE: usize = 5_000;
        let started = std::time::Instant::now();
        self.drop_sort_index(type_name, &index.property).await?;
        // The table exists even while no object has a key in it: reading
        // a table that does not exist is an error, not an empty answer.
        if let Some(table) = table(type_name, &index.property) {
            self.execute(
                &format!("DEFINE TABLE IF NOT EXISTS `{table}` SCHEMALESS;"),
                Value::Null,
            )
            .await?;
        }
        let mut objects = 0;
        let mut after: Option<String> = None;
        loop {
            let rows: Vec<(String, Map<String, Value>)> = self
                .range_page("[oid, data]", "object", type_name, after.as_deref(), PAGE)
                .await?;
            let Some((last, _)) = rows.last() else { break };
            after = Some(last.clone());
            objects += rows.len();
            let keys = rows
                .iter()
                .flat_map(|(oid, data)| keys_of(type_name, oid, data, std::slice::from_ref(index)))
                .collect();
            let mut params = Map::new();
            // IGNORE: another node's write may have put a key there already.
            let sql = insert_keys(key_rows(keys), &mut params)
                .replace("INSERT INTO", "INSERT IGNORE INTO");
            self.execute(&sql, Value::Object(params)).await?;
        }
        self.execute(
            "UPSERT type::record('sort_index', [$type, $property]) CONTENT { fold: $fold } RETURN NONE",
            json!({ "type": type_name, "property": index.property, "fold": index.fold }),
        )
        .await?;
        tracing::info!(
            type_name, property = %index.property, objects,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "built the sort keys of a searchable property"
        );
        Ok(())
    }

    /// The index of a property if queries can use it: complete, folding as
    /// `fold` says, and holding no value it cannot order.
    async fn usable_index(
        &self,
        type_name: &str,
        property: &str,
        fold: bool,
    ) -> Result<Option<String>, StoreError> {
        let indexed = self.sorts.snapshot();
        let Some(index) = indexed.ready(type_name, property) else {
            return Ok(None);
        };
        let Some(table) = table(type_name, property).filter(|_| index.fold == fold) else {
            return Ok(None);
        };
        // Any key of rank UNORDERED (a range read: a backward scan of the
        // table for its last key costs as much as reading it all).
        let unordered: Vec<Key> = self
            .query_all(
                &format!(
                    "SELECT VALUE record::id(id) FROM `{table}`:[{UNORDERED}]..[{}] LIMIT 1",
                    UNORDERED + 1
                ),
                Value::Null,
            )
            .await?;
        if !unordered.is_empty() {
            return Ok(None);
        }
        Ok(Some(table))
    }

    /// The ids of one page of a type's objects in the order of one indexed
    /// property (ties by id, as `ORDER BY … , oid ASC`), or `None` when the
    /// property has no usable index.
    pub(super) async fn sorted_page(
        &self,
        type_name: &str,
        property: &str,
        fold: bool,
        descending: bool,
        offset: usize,
        limit: usize,
    ) -> Result<Option<Vec<String>>, StoreError> {
        let Some(table) = self.usable_index(type_name, property, fold).await? else {
            return Ok(None);
        };
        if !descending {
            let keys: Vec<Key> = self
                .query_all(
                    "SELECT VALUE record::id(id) FROM type::table($table) LIMIT $limit START $start",
                    json!({ "table": table, "limit": limit, "start": offset }),
                )
                .await?;
            return Ok(Some(keys.into_iter().map(|(_, _, oid)| oid).collect()));
        }
        // Backward, values come in order but ties by descending id: read the
        // page and everything before it, then the lowest ids of the last
        // value (its group may go on past what was read), and put every
        // group's ids in ascending order.
        let wanted = offset + limit;
        let mut keys: Vec<Key> = self
            .query_all(
                "SELECT VALUE record::id(id) FROM type::table($table) ORDER BY id DESC LIMIT $limit",
                json!({ "table": table, "limit": wanted }),
            )
            .await?;
        if keys.len() == wanted
            && let Some((rank, value, _)) = keys.last().cloned()
        {
            let in_last = keys
                .iter()
                .filter(|(r, v, _)| *r == rank && *v == value)
                .count();
            keys.truncate(keys.len() - in_last);
            let lowest: Vec<Key> = self
                .query_all(
                    &format!(
                        "SELECT VALUE record::id(id) FROM {} LIMIT $limit",
                        seek(&from_value(&table))
                    ),
                    json!({ "table": table, "rank": rank, "value": value, "limit": in_last }),
                )
                .await?;
            keys.extend(lowest);
        }
        Ok(Some(page_of(keys, true, offset, limit)))
    }

    /// The ids of objects that may match `terms` OR-ed (a superset: the
    /// caller's filter decides), read from the sort keys; `None` when a
    /// term's property has no usable index or more than `cap` ids would
    /// come back.
    pub async fn search_candidates(
        &self,
        type_name: &str,
        terms: &[SearchTerm],
        cap: usize,
    ) -> Result<Option<Candidates>, StoreError> {
        let mut ids = BTreeSet::new();
        let mut ranges = Vec::with_capacity(terms.len());
        for term in terms {
            let fold = match self.sorts.snapshot().ready(type_name, &term.property) {
                Some(index) => index.fold,
                None => return Ok(None),
            };
            let Some(table) = self.usable_index(type_name, &term.property, fold).await? else {
                return Ok(None);
            };
            let value = term.as_keyed(fold);
            let end = if term.prefix {
                after_prefix(&value)
            } else {
                Some(format!("{value}\0"))
            };
            let range = match end {
                Some(end) => json!([[STRING, value, Value::Null], [STRING, end, Value::Null]]),
                None => json!([
                    [STRING, value, Value::Null],
                    [UNORDERED, Value::Null, Value::Null]
                ]),
            };
            ranges.push((table, range));
        }
        let started = std::time::Instant::now();
        for (table, range) in &ranges {
            // A literal range, not `seek`: a term's range is read whole or
            // nearly (up to `cap`), where the plain scan costs less a key
            // (console bench: "snow" 179 ms against 241 ms through `seek`).
            let keys: Vec<Key> = self
                .query_all(
                    &format!(
                        "SELECT VALUE record::id(id) FROM {} LIMIT $limit",
                        key_range(table)
                    ),
                    json!({ "r0": range[0][0], "v0": range[0][1], "r1": range[1][0], "v1": range[1][1], "limit": cap + 1 }),
                )
                .await?;
            ids.extend(keys.into_iter().map(|(_, _, oid)| oid));
            if ids.len() > cap {
                let mut estimate = 0;
                for (table, range) in &ranges {
                    estimate += self
                        .count(
                            &format!("SELECT count() AS n FROM {} GROUP ALL", key_range(table)),
                            json!({ "r0": range[0][0], "v0": range[0][1], "r1": range[1][0], "v1": range[1][1] }),
                        )
                        .await?;
                }
                return Ok(Some(Candidates::Many(estimate)));
            }
        }
        tracing::debug!(
            ranges_us = started.elapsed().as_micros() as u64,
            ids = ids.len(),
            "search keys read"
        );
        Ok(Some(Candidates::Ids(ids.into_iter().collect())))
    }

    /// The objects of `keys` that match `filter` (which is `terms` OR-ed,
    /// when given), in the order of `keys`.
    async fn matching(
        &self,
        type_name: &str,
        filter: &CompiledFilter,
        terms: Option<&[SearchTerm]>,
        keys: Vec<Key>,
    ) -> Result<Vec<Key>, StoreError> {
        if let (Some(scan), Some(terms)) = (&self.key_scan, terms) {
            // How each term's property folds; a property whose keys are not
            // ready is left to the filter.
            let indexed = self.sorts.snapshot();
            let folds: Option<Vec<bool>> = terms
                .iter()
                .map(|t| indexed.ready(type_name, &t.property).map(|i| i.fold))
                .collect();
            if let Some(folds) = folds {
                return Self::matching_terms(scan, type_name, terms, &folds, keys).await;
            }
        }
        let mut params = filter.params.clone();
        params.insert("type".into(), json!(type_name));
        params.insert(
            "oids".into(),
            json!(keys.iter().map(|(_, _, oid)| oid).collect::<Vec<_>>()),
        );
        let matched: BTreeSet<String> = self
            .query_all::<String>(
                &format!(
                    "SELECT VALUE oid FROM array::map($oids, |$o| type::record('object', [$type, $o])) WHERE {}",
                    filter.condition()
                ),
                Value::Object(params),
            )
            .await?
            .into_iter()
            .collect();
        Ok(keys
            .into_iter()
            .filter(|(_, _, oid)| matched.contains(oid))
            .collect())
    }

    /// The objects of `keys` that match any of `terms` (`folds`: whether
    /// each term's property folds), checked on their values read through
    /// the key layer as the terms' key ranges hold them (a string,
    /// lower-cased where the property folds): the same matches as the
    /// filter, without evaluating it on each whole record (a broad search's
    /// first page read ~1,000 records that way).
    async fn matching_terms(
        scan: &super::key_scan::KeyScan,
        type_name: &str,
        terms: &[SearchTerm],
        folds: &[bool],
        keys: Vec<Key>,
    ) -> Result<Vec<Key>, StoreError> {
        let checks: Vec<(bool, String, bool)> = terms
            .iter()
            .zip(folds)
            .map(|(term, fold)| (*fold, term.as_keyed(*fold), term.prefix))
            .collect();
        let paths: Vec<Vec<&str>> = terms
            .iter()
            .map(|term| vec!["data", term.property.as_str()])
            .collect();
        let oids: Vec<String> = keys.iter().map(|(_, _, oid)| oid.clone()).collect();
        let values = scan.fields("object", type_name, &oids, &paths).await?;
        Ok(keys
            .into_iter()
            .zip(values)
            .filter(|(_, values)| {
                values.as_ref().is_some_and(|values| {
                    values
                        .iter()
                        .zip(&checks)
                        .any(|(value, (fold, term, prefix))| {
                            let Some(Value::String(value)) = value else {
                                return false;
                            };
                            let value = if *fold {
                                std::borrow::Cow::Owned(value.to_lowercase())
                            } else {
                                std::borrow::Cow::Borrowed(value.as_str())
                            };
                            if *prefix {
                                value.starts_with(term.as_str())
                            } else {
                                *value == **term
                            }
                        })
                })
            })
            .map(|(key, _)| key)
            .collect())
    }

    /// One page of the objects matching `filter` in the order of an indexed
    /// property (ties by id), walking its keys in order and checking the
    /// filter a chunk at a time: for filters that match many objects, where
    /// a page is found long before the end. `None` when the property has no
    /// usable index or the walk read [`WALK_BUDGET`] keys without filling
    /// the page.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn walked_page(
        &self,
        type_name: &str,
        property: &str,
        fold: bool,
        descending: bool,
        filter: &CompiledFilter,
        terms: Option<&[SearchTerm]>,
        offset: usize,
        limit: usize,
    ) -> Result<Option<Vec<String>>, StoreError> {
        let Some(table) = self.usable_index(type_name, property, fold).await? else {
            return Ok(None);
        };
        let wanted = offset + limit;
        let order = if descending { "ORDER BY id DESC" } else { "" };
        let mut found: Vec<Key> = Vec::new();
        let mut start = 0;
        while found.len() < wanted {
            if start >= WALK_BUDGET {
                return Ok(None);
            }
            let keys: Vec<Key> = self
                .query_all(
                    &format!(
                        "SELECT VALUE record::id(id) FROM type::table($table) {order} LIMIT $limit START $start"
                    ),
                    json!({ "table": table, "limit": WALK_CHUNK, "start": start }),
                )
                .await?;
            start += keys.len();
            let ended = keys.len() < WALK_CHUNK;
            found.extend(self.matching(type_name, filter, terms, keys).await?);
            if ended {
                break;
            }
        }
        found.truncate(wanted);
        if descending && found.len() == wanted {
            // As in `sorted_page`: the last value's lowest matching ids.
            if let Some((rank, value, _)) = found.last().cloned() {
                let in_last = found
                    .iter()
                    .filter(|(r, v, _)| *r == rank && *v == value)
                    .count();
                found.truncate(found.len() - in_last);
                let mut lowest = Vec::new();
                let mut start = 0;
                while lowest.len() < in_last {
                    if start >= WALK_BUDGET {
                        return Ok(None);
                    }
                    let keys: Vec<Key> = self
                        .query_all(
                            &format!(
                                "SELECT VALUE record::id(id) FROM {} LIMIT $limit START $start",
                                seek(&from_value(&table))
                            ),
                            json!({ "table": table, "rank": rank, "value": value, "limit": WALK_CHUNK, "start": start }),
                        )
                        .await?;
                    start += keys.len();
                    let last = keys.len() < WALK_CHUNK;
                    lowest.extend(self.matching(type_name, filter, terms, keys).await?);
                    if last {
                        break;
                    }
                }
                lowest.truncate(in_last);
                found.extend(lowest);
            }
        }
        Ok(Some(page_of(found, descending, offset, limit)))
    }
}

#[cfg(test)]
impl Store {
    /// The ids of a property's sort keys, in key order.
    pub async fn sort_keys(&self, type_name: &str, property: &str) -> Vec<Value> {
        let Some(table) = table(type_name, property) else {
            return Vec::new();
        };
        self.query_all(
            "SELECT VALUE record::id(id) FROM type::table($table)",
            json!({ "table": table }),
        )
        .await
        .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn after_prefix_bounds_every_string_with_the_prefix() {
        assert_eq!(after_prefix("snow").as_deref(), Some("snox"));
        assert_eq!(after_prefix("").as_deref(), None);
        assert_eq!(after_prefix("a\u{10FFFF}").as_deref(), Some("b"));
        assert_eq!(after_prefix("\u{D7FF}").as_deref(), Some("\u{E000}"));
        for s in ["snow", "snowy", "snow\u{10FFFF}\u{10FFFF}"] {
            assert!(s < "snox");
        }
    }

    #[test]
    fn only_plain_names_make_tables() {
        assert_eq!(table("user", "sn").as_deref(), Some("sort:user:sn"));
        for (t, p) in [("us`er", "sn"), ("user", "s:n"), ("user", ""), ("a b", "c")] {
            assert!(table(t, p).is_none(), "{t} {p}");
        }
    }

    /// The search reads keys, not objects: its candidates come back, and
    /// more than the cap come back as an estimate.
    #[tokio::test]
    #[allow(clippy::unwrap_used)]
    async fn searches_read_their_candidates_from_the_keys() {
        use crate::store::{NewObject, Write};
        let store = Store::open("mem://").await.unwrap();
        store
            .prepare_sort_indexes(BTreeMap::from([(
                "user".to_string(),
                vec![SortIndex {
                    property: "sn".into(),
                    fold: true,
                }],
            )]))
            .await
            .unwrap();
        let objects: Vec<NewObject> = ["Snow", "snowden", "Stark", "SNOW", "Doe"]
            .iter()
            .enumerate()
            .map(|(n, sn)| NewObject {
                oid: format!("u{n}"),
                write: Write {
                    data: json!({ "sn": sn }).as_object().cloned().unwrap(),
                    ..Write::default()
                },
            })
            .collect();
        store
            .create_objects("test", "user", &objects, &[])
            .await
            .unwrap();
        let term = |value: &str, prefix| SearchTerm {
            property: "sn".into(),
            value: value.into(),
            prefix,
        };
        let ids = |oids: &[&str]| {
            Some(Candidates::Ids(
                oids.iter().map(|o| o.to_string()).collect(),
            ))
        };
        assert_eq!(
            store
                .search_candidates("user", &[term("sNoW", true)], 10)
                .await
                .unwrap(),
            ids(&["u0", "u1", "u3"])
        );
        assert_eq!(
            store
                .search_candidates("user", &[term("snow", false), term("d", true)], 10)
                .await
                .unwrap(),
            ids(&["u0", "u3", "u4"])
        );
        assert_eq!(
            store
                .search_candidates("user", &[term("", true)], 3)
                .await
                .unwrap(),
            Some(Candidates::Many(5))
        );
        assert_eq!(
            store
                .search_candidates("user", &[term("x", true)], 3)
                .await
                .unwrap(),
            ids(&[])
        );
    }

    /// An exact search's matches sorted in memory (an embedded store reads
    /// their sort values through the key layer) come in the order the
    /// store's `ORDER BY` gives a server store: folded and exact, both
    /// directions, absent, null, booleans, ties broken by id, pages; and a
    /// number sends the sort back to the store.
    #[tokio::test]
    #[allow(clippy::unwrap_used)]
    async fn matches_sorted_in_memory_come_in_the_stores_order() {
        use crate::store::query::{QueryPlan, ResolvedField, SortKey};
        use crate::store::{Identifier, NewObject, Write};
        let values = [
            json!("Snow"),
            json!("snow"),
            json!("SNOW"),
            json!("snöw"),
            json!("Ärger"),
            json!("a"),
            json!(""),
            json!(null),
            json!(true),
            json!(false),
            json!("b\u{0}c"),
            json!("Zed"),
            json!("zed"),
        ];
        let mut objects: Vec<NewObject> = values
            .iter()
            .enumerate()
            .map(|(n, value)| NewObject {
                oid: format!("u{:02}", 20 - n),
                write: Write {
                    data: json!({ "sn": value, "mixed": value })
                        .as_object()
                        .cloned()
                        .unwrap(),
                    ..Write::default()
                },
            })
            .collect();
        objects.push(NewObject {
            oid: "u99".into(),
            write: Write {
                data: json!({ "mixed": 7 }).as_object().cloned().unwrap(),
                ..Write::default()
            },
        });
        let dir = crate::scratch::Scratch::new("idm-sorted");
        let embedded = Store::open(&format!("surrealkv://{}", dir.join("store").display()))
            .await
            .unwrap();
        let server_like = Store::open("mem://").await.unwrap();
        assert!(embedded.key_scan.is_some() && server_like.key_scan.is_none());
        for store in [&embedded, &server_like] {
            store
                .create_objects("test", "user", &objects, &[])
                .await
                .unwrap();
        }
        let mut only: Vec<String> = objects.iter().map(|o| o.oid.clone()).collect();
        only.push("gone".into());
        for property in ["sn", "mixed"] {
            for case_exact in [false, true] {
                for descending in [false, true] {
                    for (offset, limit) in [(0, 100), (3, 4)] {
                        let plan = QueryPlan {
                            only: Some(only.clone()),
                            only_exact: true,
                            sort: vec![SortKey {
                                field: ResolvedField::Property {
                                    name: Identifier::new(property).unwrap(),
                                    case_exact,
                                },
                                descending,
                            }],
                            offset,
                            limit,
                            ..QueryPlan::default()
                        };
                        let oids = |page: crate::store::QueryPage<StoredObject>| {
                            page.rows.into_iter().map(|o| o.oid).collect::<Vec<_>>()
                        };
                        let in_memory = oids(embedded.query_objects("user", &plan).await.unwrap());
                        let by_store =
                            oids(server_like.query_objects("user", &plan).await.unwrap());
                        assert_eq!(
                            in_memory, by_store,
                            "{property} exact {case_exact} desc {descending} from {offset}"
                        );
                        assert_eq!(in_memory.len(), limit.min(objects.len()));
                    }
                }
            }
        }
        embedded.close(std::time::Duration::from_secs(10)).await;
    }
}
