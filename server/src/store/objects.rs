//! Managed objects in the store. Every write is one transaction holding the
//! object, its unique keys, its relations, its credentials and its audit entry.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::key_write::{IfTaken, KeyWrite, NewRows};
use super::links::{INSERT_LINKS, Link, link_rows};
use super::outbox::{Subscribed, Versioned, outbox_rows};
use super::query::{QueryPage, QueryPlan, ResolvedField, SortKey, sort_clauses};
use super::sort::{self, DELETE_KEYS, IndexedSet, changed_keys, insert_keys, keys_of};
use super::{
    AsRetryable, Count, Store, StoreError, bind_all, decode_optional, decode_rows, now_timestamp,
    seek, with_retry,
};

const OBJECT_COLUMNS: &str = "type, oid, rev, created, modified, data, keys";
const SELECT_ONE: &str = "SELECT type, oid, rev, created, modified, data, keys \
     FROM ONLY type::record('object', [$type, $oid])";

/// `SELECT_ONE` with the ids of the `referrer` rows of the object (see
/// [`Referrer`]).
const SELECT_ONE_WITH_REFERRERS: &str = "SELECT type, oid, rev, created, modified, data, keys, \
     (SELECT VALUE record::id(id) FROM referrer:[$reference, NONE]..[$reference, ..]) AS referrers \
     FROM ONLY type::record('object', [$type, $oid])";

/// The ids of the `referrer` rows of `$target`: one record-id range read.
const REFERRERS_OF_TARGET: &str =
    "SELECT VALUE record::id(id) FROM referrer:[$target, NONE]..[$target, ..]";

/// Removes `$source`'s relations and their mirror rows (record-id ranges:
/// no index).
const DELETE_RELATIONS_OF_SOURCE: &str =
    "FOR $r IN (SELECT VALUE record::id(id) FROM relation:[$source, NONE]..[$source, ..]) {
         DELETE type::record('referrer', [$r[2], $r[1], $r[0]]) RETURN NONE;
     };
     DELETE relation:[$source, NONE]..[$source, ..] RETURN NONE;";

/// Writes `$relations` and their mirror rows `$referrers`.
const INSERT_RELATIONS: &str =
    "INSERT INTO relation $relations RETURN NONE; INSERT INTO referrer $referrers RETURN NONE;";

/// The id of a `referrer` row, the mirror of a `relation` row keyed by its
/// target: `referrer:[target, property, source]`, empty. Reverse properties
/// (`groups`) and a delete's clean-up read a target's referrers as one
/// record-id range, which costs far less than an index lookup.
#[derive(Debug, Clone, Deserialize)]
struct Referrer(String, String, String);

impl From<Referrer> for RelationRow {
    fn from(Referrer(target, property, source): Referrer) -> Self {
        RelationRow {
            source,
            property,
            target,
        }
    }
}

/// An object as stored: `data` never holds private property values.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct StoredObject {
    #[serde(rename = "type")]
    pub type_name: String,
    pub oid: String,
    pub rev: i64,
    pub created: String,
    pub modified: String,
    #[serde(default)]
    pub data: Map<String, Value>,
    /// `[property, normalized value]` pairs this object holds as unique keys.
    #[serde(default)]
    pub keys: Vec<(String, String)>,
}

impl StoredObject {
    /// From a record read whole as JSON, moving its `data` map where
    /// `serde_json::from_value` would rebuild it key by key (a tenth of a
    /// no-change reconciliation's reading of its targets).
    fn from_record(record: Value) -> Result<Self, StoreError> {
        // The messages name what is wrong, never the values (an object's
        // data is the user's).
        let Value::Object(mut fields) = record else {
            return Err(StoreError::Decode(
                "an object record is not an object".into(),
            ));
        };
        let data = match fields.remove("data") {
            Some(Value::Object(data)) => data,
            Some(Value::Null) | None => Map::new(),
            Some(_) => {
                return Err(StoreError::Decode(
                    "an object record's data is not an object".into(),
                ));
            }
        };
        let mut object: StoredObject = super::decode_json(Value::Object(fields))?;
        object.data = data;
        Ok(object)
    }

    /// `managed/<type>/<id>`.
    pub fn reference(&self) -> String {
        object_ref(&self.type_name, &self.oid)
    }
}

pub fn object_ref(type_name: &str, oid: &str) -> String {
    format!("managed/{type_name}/{oid}")
}

/// The sealed copy of one private property value and its argon2 hash,
/// which the background hasher adds after the write (`None` until then:
/// the value has an entry in `hash_queue`, see `store/hashing.rs`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredSecret {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
    pub sealed: String,
}

impl StoredSecret {
    /// A value just sealed, its hash to come.
    pub fn sealed(sealed: String) -> Self {
        StoredSecret { hash: None, sealed }
    }
}

/// The `credential` row of `secret` (without `hash` while there is none).
fn credential_row(type_name: &str, oid: &str, property: &str, secret: &StoredSecret) -> Value {
    let mut row = json!({ "id": [type_name, oid, property], "sealed": secret.sealed });
    if let (Some(hash), Value::Object(row)) = (&secret.hash, &mut row) {
        row.insert("hash".into(), json!(hash));
    }
    row
}

/// The `hash_queue` rows of the secrets among `rows` that have no hash yet.
fn pending_hashes(rows: &[Value]) -> Vec<Value> {
    rows.iter()
        .filter(|row| row.get("hash").is_none())
        .map(|row| json!({ "id": row["id"] }))
        .collect()
}

/// A reference from a property of this object to another managed object.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RelationRef {
    pub property: String,
    /// `managed/<type>/<id>`.
    pub target_type: String,
    pub target_id: String,
}

/// The new state of an object, computed by the domain.
#[derive(Debug, Clone, Default)]
pub struct Write {
    pub data: Map<String, Value>,
    /// `(property, normalized value)` for every unique property the object has.
    pub unique: Vec<(String, String)>,
    pub relations: Vec<RelationRef>,
    /// Private properties to set (`Some`) or clear (`None`); others stay.
    pub secrets: BTreeMap<String, Option<StoredSecret>>,
    /// Property names for the audit entry.
    pub changed: Vec<String>,
}

pub struct NewObject {
    pub oid: String,
    pub write: Write,
}

/// What an update decided after seeing the current object.
pub enum ObjectChange {
    Write(Write),
    Unchanged,
}

/// The result of a write that may turn out to be a no-op.
pub enum Outcome {
    NotFound,
    Unchanged(StoredObject),
    Written(StoredObject),
}

/// A row of the relation table: `source` (`managed/group/g1`) refers to
/// `target` through `property`.
#[derive(Debug, Clone, Deserialize)]
pub struct RelationRow {
    pub source: String,
    pub property: String,
    pub target: String,
}

pub(super) use super::sessions::Tx;

impl Store {
    pub async fn get_object(
        &self,
        type_name: &str,
        oid: &str,
    ) -> Result<Option<StoredObject>, StoreError> {
        if let Some(scan) = &self.key_scan {
            return match scan
                .record_and_ids_under("object", [type_name, oid], None)
                .await?
            {
                Some((record, _)) => decode_optional(record),
                None => Ok(None),
            };
        }
        self.query_one(SELECT_ONE, json!({ "type": type_name, "oid": oid }))
            .await
    }

    /// An object and the relation rows that refer to it, in one query.
    pub async fn get_object_with_referrers(
        &self,
        type_name: &str,
        oid: &str,
    ) -> Result<Option<(StoredObject, Vec<RelationRow>)>, StoreError> {
        #[derive(Deserialize)]
        struct WithReferrers {
            #[serde(flatten)]
            object: StoredObject,
            #[serde(default)]
            referrers: Vec<Referrer>,
        }
        let reference = object_ref(type_name, oid);
        if let Some(scan) = &self.key_scan {
            let found = scan
                .record_and_ids_under("object", [type_name, oid], Some(("referrer", &reference)))
                .await?;
            let Some((record, tails)) = found else {
                return Ok(None);
            };
            let mut referrers = Vec::with_capacity(tails.len());
            for tail in tails {
                let [property, source] = <[String; 2]>::try_from(tail).map_err(|tail| {
                    StoreError::Query(format!("a referrer id of {} parts", tail.len() + 1))
                })?;
                referrers.push(RelationRow::from(Referrer(
                    reference.clone(),
                    property,
                    source,
                )));
            }
            let object = decode_optional(record)?;
            return Ok(object.map(|object| (object, referrers)));
        }
        let row: Option<WithReferrers> = self
            .query_one(
                SELECT_ONE_WITH_REFERRERS,
                json!({ "type": type_name, "oid": oid, "reference": reference }),
            )
            .await?;
        Ok(row.map(|r| {
            let referrers = r.referrers.into_iter().map(RelationRow::from).collect();
            (r.object, referrers)
        }))
    }

    /// The objects of a type with these ids (those that exist), in no order.
    pub async fn get_objects(
        &self,
        type_name: &str,
        oids: &[String],
    ) -> Result<Vec<StoredObject>, StoreError> {
        if oids.is_empty() {
            return Ok(Vec::new());
        }
        self.record_values(
            OBJECT_COLUMNS,
            "object",
            oids.iter().map(|oid| [type_name, oid.as_str()]),
        )
        .await?
        .into_iter()
        .map(StoredObject::from_record)
        .collect()
    }

    /// A page of a type's object ids, in id order: at most `limit`, after
    /// `after` (from the first when `None`).
    pub async fn object_ids_page(
        &self,
        type_name: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        match &self.key_scan {
            Some(keys) => keys.ids_page("object", type_name, after, limit).await,
            None => {
                self.range_page("oid", "object", type_name, after, limit)
                    .await
            }
        }
    }

    /// How many objects a type has: a range count, without decoding them.
    pub async fn count_of_type(&self, type_name: &str) -> Result<u64, StoreError> {
        self.count(
            "SELECT count() AS n FROM object:[$type, NONE]..[$type, ..] GROUP ALL",
            json!({ "type": type_name }),
        )
        .await
    }

    /// The sealed copies of one private property of many objects, by id.
    pub async fn sealed_secrets(
        &self,
        type_name: &str,
        property: &str,
        oids: &[String],
    ) -> Result<Vec<Option<String>>, StoreError> {
        if oids.is_empty() {
            return Ok(Vec::new());
        }
        self.query_all(
            "RETURN array::map($oids, |$o| type::record('credential', [$type, $o, $property]).sealed)",
            json!({ "type": type_name, "property": property, "oids": oids }),
        )
        .await
    }

    pub async fn get_secret(
        &self,
        type_name: &str,
        oid: &str,
        property: &str,
    ) -> Result<Option<StoredSecret>, StoreError> {
        self.query_one(
            "SELECT hash, sealed FROM ONLY type::record('credential', [$type, $oid, $property])",
            json!({ "type": type_name, "oid": oid, "property": property }),
        )
        .await
    }

    /// Relations pointing at any of `targets` (`managed/<type>/<id>`).
    pub async fn relations_to(&self, targets: &[String]) -> Result<Vec<RelationRow>, StoreError> {
        if targets.is_empty() {
            return Ok(Vec::new());
        }
        // One record-id range a target.
        let referrers: Vec<Referrer> = self
            .query_all(
                &format!("array::flatten(array::map($targets, |$target| ({REFERRERS_OF_TARGET})))"),
                json!({ "targets": targets }),
            )
            .await?;
        Ok(referrers.into_iter().map(RelationRow::from).collect())
    }

    /// One page of objects of a type, and the total number of matches.
    pub async fn query_objects(
        &self,
        type_name: &str,
        plan: &QueryPlan,
    ) -> Result<QueryPage<StoredObject>, StoreError> {
        if let Some(page) = self.indexed_query(type_name, plan).await? {
            return Ok(page);
        }
        if let Some(many) = plan.many
            && let Some(rows) = self.walked_query(type_name, plan).await?
        {
            let seen = (plan.offset + rows.len()) as u64;
            if rows.len() < plan.limit && (!rows.is_empty() || plan.offset == 0) {
                // The last page: the count is known.
                return Ok(QueryPage {
                    rows,
                    total: seen,
                    estimated: false,
                });
            }
            let (total, estimated) = if plan.estimate_total {
                let all = self.count_of_type(type_name).await?;
                (many.min(all).max(seen), true)
            } else {
                (self.count_objects(type_name, plan).await?, false)
            };
            return Ok(QueryPage {
                rows,
                total,
                estimated,
            });
        }
        if let Some(only) = plan.only.as_ref().filter(|_| plan.only_exact) {
            return self.page_of_matches(type_name, plan, only.len()).await;
        }
        let mut params = plan.filter.params.clone();
        let (projection, order) = sort_clauses(&plan.sort, &mut params, "oid");
        let condition = plan.filter.condition();
        let (prelude, source, first) = source_of(type_name, plan, &mut params);
        params.insert("limit".into(), json!(plan.limit));
        params.insert("start".into(), json!(plan.offset));
        let exact = plan.only.as_ref().filter(|_| plan.only_exact).map(Vec::len);
        let count = match exact {
            Some(_) => String::new(),
            None => format!(
                "SELECT count() AS n FROM {source} WHERE type = $type AND {condition} GROUP ALL;"
            ),
        };
        let select = format!(
            "{prelude}SELECT {OBJECT_COLUMNS}{projection} FROM {source} WHERE type = $type AND {condition} \
             ORDER BY {order} LIMIT $limit START $start;{count}"
        );
        let _timer = crate::metrics::store_timer(crate::metrics::StoreOp::Search);
        let mut response = bind_all(self.db.shared().query(select), Value::Object(params)).await?;
        let rows = decode_rows(take_json(&mut response, first)?)?;
        let total = match exact {
            Some(n) => n as u64,
            None => take_count(&mut response, first + 1)?,
        };
        Ok(QueryPage {
            rows,
            total,
            estimated: false,
        })
    }

    /// A page of a query whose candidates are exactly its matches (read
    /// from sort keys): no filter to evaluate, so the candidates are sorted
    /// on their sort values alone and only the page's records are read whole
    /// (a search matching 3,000 of 100k users: 258 ms when each match went
    /// through the filter and the sort whole).
    async fn page_of_matches(
        &self,
        type_name: &str,
        plan: &QueryPlan,
        matches: usize,
    ) -> Result<QueryPage<StoredObject>, StoreError> {
        if let Some(scan) = &self.key_scan
            && let Some(ordered) = matches_in_order(scan, type_name, plan).await?
        {
            let page: Vec<String> = ordered
                .into_iter()
                .skip(plan.offset)
                .take(plan.limit)
                .collect();
            return Ok(QueryPage {
                rows: self.in_order(type_name, &page).await?,
                total: matches as u64,
                estimated: false,
            });
        }
        let mut params = Map::new();
        let (projection, order) = sort_clauses(&plan.sort, &mut params, "oid");
        let (prelude, source, first) = source_of(type_name, plan, &mut params);
        params.insert("limit".into(), json!(plan.limit));
        params.insert("start".into(), json!(plan.offset));
        let select = format!(
            "{prelude}SELECT oid{projection} FROM {source} ORDER BY {order} LIMIT $limit START $start;"
        );
        let _timer = crate::metrics::store_timer(crate::metrics::StoreOp::Search);
        let mut response = bind_all(self.db.shared().query(select), Value::Object(params)).await?;
        let oids: Vec<String> = match take_json(&mut response, first)? {
            Value::Array(rows) => rows
                .into_iter()
                .filter_map(|row| row.get("oid").and_then(Value::as_str).map(str::to_string))
                .collect(),
            _ => Vec::new(),
        };
        Ok(QueryPage {
            rows: self.in_order(type_name, &oids).await?,
            total: matches as u64,
            estimated: false,
        })
    }

    /// Objects by id, in the order of `oids` (those that exist).
    async fn in_order(
        &self,
        type_name: &str,
        oids: &[String],
    ) -> Result<Vec<StoredObject>, StoreError> {
        let mut found: BTreeMap<String, StoredObject> = self
            .get_objects(type_name, oids)
            .await?
            .into_iter()
            .map(|o| (o.oid.clone(), o))
            .collect();
        Ok(oids.iter().filter_map(|oid| found.remove(oid)).collect())
    }

    /// A page of a query without a filter, in id order or in the order of
    /// one indexed property (store/sort.rs), and the type's count (its
    /// record ids counted, no record read); `None` when the query needs the
    /// general path.
    async fn indexed_query(
        &self,
        type_name: &str,
        plan: &QueryPlan,
    ) -> Result<Option<QueryPage<StoredObject>>, StoreError> {
        if !plan.filter.sql.is_empty() || plan.only.is_some() {
            return Ok(None);
        }
        let rows = match plan.sort.as_slice() {
            // Record ids are [type, oid]: the type's range is in oid order.
            [] => {
                self.query_all(
                    &format!(
                        "SELECT {OBJECT_COLUMNS} FROM {} LIMIT $limit START $start",
                        seek("object:[$type, NONE]..[$type, ..]")
                    ),
                    json!({ "type": type_name, "limit": plan.limit, "start": plan.offset }),
                )
                .await?
            }
            [
                SortKey {
                    field: ResolvedField::Property { name, case_exact },
                    descending,
                },
            ] => {
                let page = self
                    .sorted_page(
                        type_name,
                        name.as_str(),
                        !case_exact,
                        *descending,
                        plan.offset,
                        plan.limit,
                    )
                    .await?;
                let Some(oids) = page else {
                    return Ok(None);
                };
                self.in_order(type_name, &oids).await?
            }
            _ => return Ok(None),
        };
        let total = self.count_of_type(type_name).await?;
        Ok(Some(QueryPage {
            rows,
            total,
            estimated: false,
        }))
    }

    /// The rows of a page of a filter that matches many objects: read in
    /// id order or walking one indexed property's keys, until the page is
    /// full; `None` when the order needs the general path.
    async fn walked_query(
        &self,
        type_name: &str,
        plan: &QueryPlan,
    ) -> Result<Option<Vec<StoredObject>>, StoreError> {
        match plan.sort.as_slice() {
            [] => {
                let mut params = plan.filter.params.clone();
                params.insert("type".into(), json!(type_name));
                params.insert("limit".into(), json!(plan.limit));
                params.insert("start".into(), json!(plan.offset));
                let rows = self
                    .query_all(
                        // Not the type's range: with a filter, a range scan of it
                        // overflows a debug build's stack on the deepest filters.
                        &format!(
                            "SELECT {OBJECT_COLUMNS} FROM object WHERE type = $type AND {} \
                             LIMIT $limit START $start",
                            plan.filter.condition()
                        ),
                        Value::Object(params),
                    )
                    .await?;
                Ok(Some(rows))
            }
            [
                SortKey {
                    field: ResolvedField::Property { name, case_exact },
                    descending,
                },
            ] => {
                let page = self
                    .walked_page(
                        type_name,
                        name.as_str(),
                        !case_exact,
                        *descending,
                        &plan.filter,
                        plan.terms.as_deref(),
                        plan.offset,
                        plan.limit,
                    )
                    .await?;
                match page {
                    Some(oids) => Ok(Some(self.in_order(type_name, &oids).await?)),
                    None => Ok(None),
                }
            }
            _ => Ok(None),
        }
    }

    pub async fn count_objects(
        &self,
        type_name: &str,
        plan: &QueryPlan,
    ) -> Result<u64, StoreError> {
        if plan.filter.sql.is_empty() && plan.only.is_none() {
            return self.count_of_type(type_name).await;
        }
        let mut params = plan.filter.params.clone();
        let (prelude, source, first) = source_of(type_name, plan, &mut params);
        let count = format!(
            "{prelude}SELECT count() AS n FROM {source} WHERE type = $type AND {} GROUP ALL",
            plan.filter.condition()
        );
        let _timer = crate::metrics::store_timer(crate::metrics::StoreOp::Count);
        let mut response = bind_all(self.db.shared().query(count), Value::Object(params)).await?;
        take_count(&mut response, first)
    }

    /// The object id holding a unique value, if any.
    pub async fn lookup_unique(
        &self,
        type_name: &str,
        property: &str,
        normalized: &str,
    ) -> Result<Option<String>, StoreError> {
        self.query_one(
            "SELECT VALUE oid FROM ONLY type::record('unique_key', [$type, $property, $value])",
            json!({ "type": type_name, "property": property, "value": normalized }),
        )
        .await
    }

    /// The ids holding each of these unique values (normalized), in order.
    pub async fn lookup_unique_many(
        &self,
        type_name: &str,
        property: &str,
        normalized: &[String],
    ) -> Result<Vec<Option<String>>, StoreError> {
        if normalized.is_empty() {
            return Ok(Vec::new());
        }
        if let Some(scan) = &self.key_scan {
            #[derive(Deserialize)]
            struct Key {
                oid: String,
            }
            let keys: Vec<[&str; 3]> = normalized
                .iter()
                .map(|v| [type_name, property, v.as_str()])
                .collect();
            return scan
                .records("unique_key", &keys)
                .await?
                .into_iter()
                .map(|found| {
                    found
                        .map(|key| super::decode_json::<Key>(key).map(|key| key.oid))
                        .transpose()
                })
                .collect();
        }
        #[derive(Deserialize)]
        struct Holder {
            value: String,
            oid: String,
        }
        let holders: Vec<Holder> = self
            .records(
                "record::id(id)[2] AS value, oid",
                "unique_key",
                normalized.iter().map(|v| [type_name, property, v.as_str()]),
            )
            .await?;
        let holders: std::collections::HashMap<String, String> =
            holders.into_iter().map(|h| (h.value, h.oid)).collect();
        Ok(normalized.iter().map(|v| holders.get(v).cloned()).collect())
    }

    /// Runs a write under this node's outbox subscriptions; a write that
    /// another node's conf change made stale (see `conf_guard`) reloads them
    /// and runs again, at most [`CONF_RELOADS`] times.
    async fn under_current_conf<T, E, F, Fut>(&self, mut write: F) -> Result<T, E>
    where
        F: FnMut(Versioned) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: From<StoreError> + AsRetryable,
    {
        let mut reloads = 0;
        loop {
            match write(self.sync.versioned()).await {
                Err(e) if e.is_conf_stale() && reloads < CONF_RELOADS => {
                    reloads += 1;
                    self.reload_conf().await?;
                }
                other => return other,
            }
        }
    }

    /// Creates objects of one type in one transaction: all or none.
    #[tracing::instrument(skip_all, fields(type_name, count = objects.len()))]
    /// `links` (a reconciliation's, for sources not linked yet) are written
    /// in the same transaction.
    pub async fn create_objects(
        &self,
        actor: &str,
        type_name: &str,
        objects: &[NewObject],
        links: &[Link],
    ) -> Result<Vec<StoredObject>, StoreError> {
        let result = self
            .under_current_conf(|subscriptions| async move {
                self.create_once(actor, type_name, objects, links, &subscriptions)
                    .await
            })
            .await;
        match result {
            Err(StoreError::Query(message)) if message.contains("already exists") => Err(self
                .why_taken(type_name, objects)
                .await?
                .unwrap_or(StoreError::Query(message))),
            other => other,
        }
    }

    /// One try of [`Store::create_objects`] under these subscriptions. An
    /// embedded store writes the rows through its keys (`key_write.rs`)
    /// unless they reference other objects, which the statements check.
    async fn create_once(
        &self,
        actor: &str,
        type_name: &str,
        objects: &[NewObject],
        links: &[Link],
        subscriptions: &Versioned,
    ) -> Result<Vec<StoredObject>, StoreError> {
        let outbox = subscriptions
            .by_type
            .get(type_name)
            .map_or(&[][..], Vec::as_slice);
        let conf = subscriptions.version;
        let sorts = self.sorts.snapshot();
        let (stored, rows) = create_rows(actor, type_name, objects, links, outbox, &sorts);
        let by_keys = self.key_scan.as_ref().filter(|_| rows.relations.is_empty());
        with_retry(|| async {
            if let Some(keys) = by_keys
                && keys.insert(conf, &rows.by_table()).await? == KeyWrite::Written
            {
                return Ok(());
            }
            let tx = self.db.begin().await?;
            match create_in(&tx, &rows, conf).await {
                Ok(()) => self.db.commit(tx).await,
                Err(e) => {
                    self.db.cancel(tx).await;
                    Err(e)
                }
            }
        })
        .await?;
        if !outbox.is_empty() {
            self.announce_outbox();
        }
        Ok(stored)
    }

    /// After a create collided: the id or unique value that was taken.
    async fn why_taken(
        &self,
        type_name: &str,
        objects: &[NewObject],
    ) -> Result<Option<StoreError>, StoreError> {
        let mut ids = std::collections::BTreeSet::new();
        for object in objects {
            if !ids.insert(&object.oid) {
                return Ok(Some(StoreError::AlreadyExists(object_ref(
                    type_name,
                    &object.oid,
                ))));
            }
        }
        let ids: Vec<Value> = objects.iter().map(|o| json!([type_name, o.oid])).collect();
        let taken: Vec<(String, String)> = self
            .query_all(
                "array::filter($ids, |$k| record::exists(type::record('object', $k)))",
                json!({ "ids": ids }),
            )
            .await?;
        if let Some((_, oid)) = taken.first() {
            return Ok(Some(StoreError::AlreadyExists(object_ref(type_name, oid))));
        }
        let mut keys = std::collections::BTreeSet::new();
        for (property, value) in objects.iter().flat_map(|o| &o.write.unique) {
            if !keys.insert((property, value)) {
                return Ok(Some(StoreError::NotUnique {
                    type_name: type_name.to_string(),
                    property: property.clone(),
                }));
            }
        }
        let keys: Vec<Value> = keys.iter().map(|(p, v)| json!([type_name, p, v])).collect();
        let taken: Vec<(String, String, String)> = self
            .query_all(
                "array::filter($ids, |$k| record::exists(type::record('unique_key', $k)))",
                json!({ "ids": keys }),
            )
            .await?;
        Ok(taken
            .into_iter()
            .next()
            .map(|(_, property, _)| StoreError::NotUnique {
                type_name: type_name.to_string(),
                property,
            }))
    }

    /// Reads the object, lets `decide` compute its new state, and writes it,
    /// all in one transaction (re-run from the read on a write conflict).
    #[tracing::instrument(skip_all, fields(type_name, oid))]
    pub async fn update_object<E>(
        &self,
        actor: &str,
        operation: &str,
        type_name: &str,
        oid: &str,
        private: &[String],
        decide: impl Fn(&StoredObject, &BTreeMap<String, StoredSecret>) -> Result<ObjectChange, E>,
    ) -> Result<Outcome, E>
    where
        E: From<StoreError> + AsRetryable,
    {
        let decide = &decide;
        self.under_current_conf(|subscriptions| async move {
            let outbox = subscriptions.by_type;
            let sorts = self.sorts.snapshot();
            with_retry(|| async {
                let tx = self.db.begin().await?;
                let hot = Hot {
                    outbox: &outbox,
                    conf: subscriptions.version,
                    sorts: &sorts,
                };
                let result =
                    update_in(&tx, actor, operation, type_name, oid, private, &decide, hot).await;
                match result {
                    Ok(Outcome::Written(object)) => {
                        self.db.commit(tx).await?;
                        if !outbox.is_empty() {
                            self.announce_outbox();
                        }
                        Ok(Outcome::Written(object))
                    }
                    other => {
                        self.db.cancel(tx).await;
                        other
                    }
                }
            })
            .await
        })
        .await
    }

    /// Deletes an object after `check` accepted it, removing references to it
    /// from other objects in the same transaction.
    #[tracing::instrument(skip_all, fields(type_name, oid))]
    pub async fn delete_object<E>(
        &self,
        actor: &str,
        type_name: &str,
        oid: &str,
        private: &[String],
        check: impl Fn(&StoredObject) -> Result<(), E>,
    ) -> Result<Option<StoredObject>, E>
    where
        E: From<StoreError> + AsRetryable,
    {
        let check = &check;
        self.under_current_conf(|subscriptions| async move {
            let outbox = subscriptions.by_type;
            let sorts = self.sorts.snapshot();
            with_retry(|| async {
                let tx = self.db.begin().await?;
                let hot = Hot {
                    outbox: &outbox,
                    conf: subscriptions.version,
                    sorts: &sorts,
                };
                let result = delete_in(&tx, actor, type_name, oid, private, &check, hot).await;
                match result {
                    Ok(Some(object)) => {
                        self.db.commit(tx).await?;
                        if !outbox.is_empty() {
                            self.announce_outbox();
                        }
                        Ok(Some(object))
                    }
                    other => {
                        self.db.cancel(tx).await;
                        other
                    }
                }
            })
            .await
        })
        .await
    }
}

/// What a query reads: the whole type, or only the candidate records.
/// Returns the statement prelude, the FROM source and the index of the first
/// result after the prelude.
/// An exact query's matches (`plan.only`) in the plan's order, sorted in
/// memory on their sort values read through the key layer; `None` when a
/// sort key is not a plain field or a value is one only the store orders.
async fn matches_in_order(
    scan: &super::key_scan::KeyScan,
    type_name: &str,
    plan: &QueryPlan,
) -> Result<Option<Vec<String>>, StoreError> {
    let Some(only) = &plan.only else {
        return Ok(None);
    };
    let mut paths = Vec::with_capacity(plan.sort.len());
    let mut orders = Vec::with_capacity(plan.sort.len());
    for key in &plan.sort {
        let (path, case_exact) = match &key.field {
            ResolvedField::Column { name, case_exact } => (vec![*name], *case_exact),
            ResolvedField::Property { name, case_exact } => {
                (vec!["data", name.as_str()], *case_exact)
            }
            ResolvedField::Data { .. } => return Ok(None),
        };
        paths.push(path);
        orders.push(sort::InMemoryOrder {
            fold: !case_exact,
            descending: key.descending,
        });
    }
    let values = scan.fields("object", type_name, only, &paths).await?;
    let rows = only
        .iter()
        .zip(values)
        .filter_map(|(oid, values)| Some((oid.clone(), values?)))
        .collect();
    Ok(sort::in_sort_order(rows, &orders))
}

fn source_of(
    type_name: &str,
    plan: &QueryPlan,
    params: &mut Map<String, Value>,
) -> (&'static str, &'static str, usize) {
    params.insert("type".into(), json!(type_name));
    match &plan.only {
        // Not `object:[$type, NONE]..[$type, ..]`: with a filter, a range
        // scan overflows a debug build's stack on the deepest filters.
        None => ("", "object", 0),
        Some(ids) => {
            params.insert("only".into(), json!(ids));
            (
                "LET $candidates = array::map($only, |$o| type::record('object', [$type, $o]));",
                "$candidates",
                1,
            )
        }
    }
}

pub(super) fn take_json(
    response: &mut surrealdb::IndexedResults,
    index: usize,
) -> Result<Value, StoreError> {
    let value: surrealdb::types::Value = response.take(index)?;
    Ok(value.into_json_value())
}

fn take_count(response: &mut surrealdb::IndexedResults, index: usize) -> Result<u64, StoreError> {
    let count: Option<Count> = decode_optional(take_json(response, index)?)?;
    Ok(count.map_or(0, |c| c.n))
}

pub(super) async fn tx_query(tx: &Tx, sql: &str, params: Value) -> Result<Value, StoreError> {
    let mut response = bind_all(tx.query(sql), params).await?.check()?;
    take_json(&mut response, 0)
}

/// The rows a create writes, by table.
struct CreateRows {
    objects: Vec<Value>,
    audits: Vec<Value>,
    unique_keys: Vec<Value>,
    relations: Vec<Value>,
    referrers: Vec<Value>,
    credentials: Vec<Value>,
    pending_hashes: Vec<Value>,
    outbox: Vec<Value>,
    links: Vec<Value>,
    link_targets: Vec<Value>,
    /// Whether every link points at an object this create makes, and no two
    /// at the same one for a mapping (a recon's links do), so no
    /// `link_target` row can be taken, in the store or in this batch.
    links_to_new_objects: bool,
    sort_keys: BTreeMap<String, Vec<Value>>,
}

impl CreateRows {
    /// Every table's rows, for the key layer. Only the object, its unique
    /// values and its links can collide with what is stored; every other
    /// key holds a new UUIDv7 or the new object's id (as do the links'
    /// reverse rows, when they point at the new objects). A `hash_queue`
    /// row has its credential's key, `[type, id, property]`, and goes with
    /// it (an object's delete and a cleared secret remove both), so it is
    /// as new as the credential.
    fn by_table(&self) -> Vec<NewRows<'_>> {
        fn rows<'a>(table: &'a str, rows: &'a [Value], if_taken: IfTaken) -> NewRows<'a> {
            NewRows {
                table,
                rows,
                if_taken,
            }
        }
        use IfTaken::{CannotBe, Refuse};
        let mut tables = vec![
            rows("object", &self.objects, Refuse),
            rows("audit", &self.audits, CannotBe),
            rows("unique_key", &self.unique_keys, Refuse),
            rows("relation", &self.relations, CannotBe),
            rows("referrer", &self.referrers, CannotBe),
            rows("credential", &self.credentials, CannotBe),
            rows("hash_queue", &self.pending_hashes, CannotBe),
            rows("outbox", &self.outbox, CannotBe),
            rows("link", &self.links, Refuse),
            rows(
                "link_target",
                &self.link_targets,
                if self.links_to_new_objects {
                    CannotBe
                } else {
                    Refuse
                },
            ),
        ];
        tables.extend(
            self.sort_keys
                .iter()
                .map(|(table, keys)| rows(table.as_str(), keys, CannotBe)),
        );
        tables
    }
}

/// The objects a create stores, and the rows that store them.
fn create_rows(
    actor: &str,
    type_name: &str,
    objects: &[NewObject],
    links: &[Link],
    outbox: &[String],
    sorts: &IndexedSet,
) -> (Vec<StoredObject>, CreateRows) {
    let now = now_timestamp();
    let indexes = sorts.of(type_name);
    let mut sort_keys = Vec::new();
    let mut entries = Vec::new();
    let mut stored = Vec::with_capacity(objects.len());
    let mut rows = Vec::with_capacity(objects.len());
    let mut audits = Vec::with_capacity(objects.len());
    let mut keys = Vec::new();
    let mut relations = Vec::new();
    let mut credentials = Vec::new();
    for object in objects {
        let write = &object.write;
        let record = StoredObject {
            type_name: type_name.to_string(),
            oid: object.oid.clone(),
            rev: 1,
            created: now.clone(),
            modified: now.clone(),
            data: write.data.clone(),
            keys: write.unique.clone(),
        };
        rows.push(object_row(&record));
        keys.extend(unique_rows(type_name, &object.oid, &write.unique));
        sort_keys.extend(keys_of(type_name, &object.oid, &write.data, indexes));
        relations.extend(relation_rows(&record.reference(), &write.relations));
        credentials.extend(write.secrets.iter().filter_map(|(property, secret)| {
            secret
                .as_ref()
                .map(|s| credential_row(type_name, &object.oid, property, s))
        }));
        entries.extend(outbox_rows(
            outbox,
            type_name,
            &object.oid,
            "create",
            1,
            None,
            &now,
        ));
        audits.push(audit_row(
            actor,
            "create",
            &record.reference(),
            0,
            1,
            &write.changed,
            &now,
        ));
        stored.push(record);
    }
    let new_oids: HashSet<&str> = objects.iter().map(|object| object.oid.as_str()).collect();
    let mut reverse_keys = HashSet::new();
    let links_to_new_objects = links.iter().all(|link| {
        new_oids.contains(link.target.as_str())
            && reverse_keys.insert((&link.mapping, &link.target))
    });
    let (links, link_targets) = link_rows(links);
    let rows = CreateRows {
        objects: rows,
        audits,
        unique_keys: keys,
        referrers: referrer_rows(&relations),
        relations,
        pending_hashes: pending_hashes(&credentials),
        credentials,
        outbox: entries,
        links,
        link_targets,
        links_to_new_objects,
        sort_keys: sort::key_rows(sort_keys),
    };
    (stored, rows)
}

/// Writes `rows` in `tx` through statements.
async fn create_in(tx: &Tx, rows: &CreateRows, conf: Option<u64>) -> Result<(), StoreError> {
    check_targets(tx, &rows.relations).await?;
    // Taken ids and unique values make these inserts fail (record ids collide);
    // `create_objects` then works out which one it was.
    let mut params = Map::new();
    let mut sql = conf_guard(conf, &mut params);
    sql.push_str("INSERT INTO object $rows RETURN NONE; INSERT INTO audit $audits RETURN NONE;");
    for (rows_of, statement) in [
        (
            &rows.unique_keys,
            "INSERT INTO unique_key $keys RETURN NONE;",
        ),
        (&rows.relations, INSERT_RELATIONS),
        (
            &rows.credentials,
            "INSERT INTO credential $credentials RETURN NONE;",
        ),
        (
            &rows.pending_hashes,
            "INSERT IGNORE INTO hash_queue $pending RETURN NONE;",
        ),
        (&rows.outbox, "INSERT INTO outbox $outbox RETURN NONE;"),
    ] {
        if !rows_of.is_empty() {
            sql.push_str(statement);
        }
    }
    if !rows.links.is_empty() {
        sql.push_str(INSERT_LINKS);
    }
    sql.push_str(&insert_keys(rows.sort_keys.clone(), &mut params));
    params.extend(
        [
            ("rows", &rows.objects),
            ("keys", &rows.unique_keys),
            ("referrers", &rows.referrers),
            ("relations", &rows.relations),
            ("credentials", &rows.credentials),
            ("pending", &rows.pending_hashes),
            ("audits", &rows.audits),
            ("links", &rows.links),
            ("reverse", &rows.link_targets),
            ("outbox", &rows.outbox),
        ]
        .map(|(name, value)| (name.to_string(), json!(value))),
    );
    tx_query(tx, &sql, Value::Object(params)).await?;
    Ok(())
}

async fn read_in(tx: &Tx, type_name: &str, oid: &str) -> Result<Option<StoredObject>, StoreError> {
    decode_optional(tx_query(tx, SELECT_ONE, json!({ "type": type_name, "oid": oid })).await?)
}

#[allow(clippy::too_many_arguments)]
async fn update_in<E>(
    tx: &Tx,
    actor: &str,
    operation: &str,
    type_name: &str,
    oid: &str,
    private: &[String],
    decide: &impl Fn(&StoredObject, &BTreeMap<String, StoredSecret>) -> Result<ObjectChange, E>,
    hot: Hot<'_>,
) -> Result<Outcome, E>
where
    E: From<StoreError>,
{
    let current = read_in(tx, type_name, oid).await?;
    let Some(current) = current else {
        return Ok(Outcome::NotFound);
    };
    let mut secrets = BTreeMap::new();
    for property in private {
        let secret: Option<StoredSecret> = decode_optional(
            tx_query(
                tx,
                "SELECT hash, sealed FROM ONLY type::record('credential', [$type, $oid, $property])",
                json!({ "type": type_name, "oid": oid, "property": property }),
            )
            .await?,
        )?;
        if let Some(secret) = secret {
            secrets.insert(property.clone(), secret);
        }
    }
    let write = match decide(&current, &secrets)? {
        ObjectChange::Unchanged => return Ok(Outcome::Unchanged(current)),
        ObjectChange::Write(write) => write,
    };
    let now = now_timestamp();
    let updated = StoredObject {
        rev: current.rev + 1,
        modified: now.clone(),
        data: write.data.clone(),
        keys: write.unique.clone(),
        ..current.clone()
    };
    apply_write(tx, actor, operation, &current, &updated, &write, &now, hot).await?;
    Ok(Outcome::Written(updated))
}

/// Writes `updated` over `current`: object, unique keys, relations, secrets,
/// audit, outbox entries.
#[allow(clippy::too_many_arguments)]
async fn apply_write(
    tx: &Tx,
    actor: &str,
    operation: &str,
    current: &StoredObject,
    updated: &StoredObject,
    write: &Write,
    now: &str,
    hot: Hot<'_>,
) -> Result<(), StoreError> {
    let outbox = hot.outbox;
    let type_name = &current.type_name;
    let oid = &current.oid;
    let released: Vec<(String, String)> = current
        .keys
        .iter()
        .filter(|k| !write.unique.contains(k))
        .cloned()
        .collect();
    let claimed: Vec<(String, String)> = write
        .unique
        .iter()
        .filter(|k| !current.keys.contains(k))
        .cloned()
        .collect();
    let claimed_rows = unique_rows(type_name, oid, &claimed);
    check_unique(tx, type_name, &claimed_rows).await?;
    let reference = current.reference();
    let relations = relation_rows(&reference, &write.relations);
    check_targets(tx, &relations).await?;
    let released_ids: Vec<Value> = released
        .iter()
        .map(|(p, v)| json!([type_name, p, v]))
        .collect();
    let set_secrets: Vec<Value> = write
        .secrets
        .iter()
        .filter_map(|(p, s)| s.as_ref().map(|s| credential_row(type_name, oid, p, s)))
        .collect();
    let pending = pending_hashes(&set_secrets);
    let cleared_secrets: Vec<Value> = write
        .secrets
        .iter()
        .filter(|(_, s)| s.is_none())
        .map(|(p, _)| json!([type_name, oid, p]))
        .collect();
    let audit = audit_row(
        actor,
        operation,
        &reference,
        current.rev,
        updated.rev,
        &write.changed,
        now,
    );
    let (unsorted, sorted) = changed_keys(current, Some(updated), hot.sorts.of(type_name));
    let mut params = Map::new();
    let mut sql = conf_guard(hot.conf, &mut params);
    sql.push_str(
        "UPSERT type::record('object', [$type, $oid]) CONTENT $row RETURN NONE;
         FOR $k IN $released { DELETE type::record('unique_key', $k) RETURN NONE; };
         INSERT INTO unique_key $claimed RETURN NONE;
         FOR $k IN $cleared { DELETE type::record('credential', $k), type::record('hash_queue', $k) RETURN NONE; };
         FOR $c IN $secrets { UPSERT type::record('credential', $c.id) CONTENT { hash: $c.hash, sealed: $c.sealed } RETURN NONE; };
         INSERT IGNORE INTO hash_queue $pending RETURN NONE;
         INSERT INTO audit [$audit] RETURN NONE;
         INSERT INTO outbox $outbox RETURN NONE;",
    );
    sql.push_str(DELETE_RELATIONS_OF_SOURCE);
    sql.push_str(INSERT_RELATIONS);
    if !unsorted.is_empty() {
        sql.push_str(DELETE_KEYS);
        params.insert("unsorted".into(), Value::Array(unsorted));
    }
    sql.push_str(&insert_keys(sort::key_rows(sorted), &mut params));
    params.extend(
        [
            ("type", json!(type_name)),
            ("oid", json!(oid)),
            ("referrers", json!(referrer_rows(&relations))),
            ("row", object_content(updated)),
            ("released", json!(released_ids)),
            ("claimed", json!(claimed_rows)),
            ("source", json!(reference)),
            ("relations", json!(relations)),
            ("cleared", json!(cleared_secrets)),
            ("secrets", json!(set_secrets)),
            ("pending", json!(pending)),
            ("audit", audit),
            (
                "outbox",
                json!(outbox_rows(
                    subscribed(outbox, type_name),
                    type_name,
                    oid,
                    "update",
                    updated.rev,
                    None,
                    now
                )),
            ),
        ]
        .map(|(name, value)| (name.to_string(), value)),
    );
    tx_query(tx, &sql, Value::Object(params)).await?;
    Ok(())
}

async fn delete_in<E>(
    tx: &Tx,
    actor: &str,
    type_name: &str,
    oid: &str,
    private: &[String],
    check: &impl Fn(&StoredObject) -> Result<(), E>,
    hot: Hot<'_>,
) -> Result<Option<StoredObject>, E>
where
    E: From<StoreError>,
{
    let current = read_in(tx, type_name, oid).await?;
    let Some(current) = current else {
        return Ok(None);
    };
    check(&current)?;
    let now = now_timestamp();
    let reference = current.reference();
    // Objects that refer to this one lose the reference, as a recorded change.
    let incoming: Vec<Referrer> =
        decode_rows(tx_query(tx, REFERRERS_OF_TARGET, json!({ "target": reference })).await?)?;
    let incoming = incoming.into_iter().map(RelationRow::from);
    let mut by_source: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for row in incoming {
        by_source.entry(row.source).or_default().push(row.property);
    }
    for (source, properties) in by_source {
        let Some((source_type, source_id)) = split_ref(&source) else {
            continue;
        };
        let holder = read_in(tx, source_type, source_id).await?;
        let Some(holder) = holder else { continue };
        let mut data = holder.data.clone();
        for property in &properties {
            remove_reference(&mut data, property, &reference);
        }
        let write = Write {
            relations: current_relations(&data, &reference),
            unique: holder.keys.clone(),
            data,
            secrets: BTreeMap::new(),
            changed: properties,
        };
        let updated = StoredObject {
            rev: holder.rev + 1,
            modified: now.clone(),
            data: write.data.clone(),
            ..holder.clone()
        };
        apply_write(tx, actor, "patch", &holder, &updated, &write, &now, hot).await?;
    }
    let key_ids: Vec<Value> = current
        .keys
        .iter()
        .map(|(p, v)| json!([type_name, p, v]))
        .collect();
    let credential_ids: Vec<Value> = private.iter().map(|p| json!([type_name, oid, p])).collect();
    let audit = audit_row(actor, "delete", &reference, current.rev, 0, &[], &now);
    let (unsorted, _) = changed_keys(&current, None, hot.sorts.of(type_name));
    let mut guard_params = Map::new();
    let guard = conf_guard(hot.conf, &mut guard_params);
    let mut params = json!({
        "type": type_name, "oid": oid, "keys": key_ids, "credentials": credential_ids,
        "source": reference, "audit": audit, "unsorted": unsorted,
        "outbox": outbox_rows(subscribed(hot.outbox, type_name), type_name, oid, "delete", 0, Some(&current.data), &now),
    });
    if let Value::Object(params) = &mut params {
        params.extend(guard_params);
    }
    tx_query(
        tx,
        &format!(
            "{guard}DELETE type::record('object', [$type, $oid]) RETURN NONE;
             FOR $k IN $keys {{ DELETE type::record('unique_key', $k) RETURN NONE; }};
             FOR $k IN $credentials {{ DELETE type::record('credential', $k), type::record('hash_queue', $k) RETURN NONE; }};
             {DELETE_RELATIONS_OF_SOURCE}
             FOR $r IN (SELECT VALUE record::id(id) FROM referrer:[$source, NONE]..[$source, ..]) {{
                 DELETE type::record('relation', [$r[2], $r[1], $r[0]]) RETURN NONE;
             }};
             DELETE referrer:[$source, NONE]..[$source, ..] RETURN NONE;
             INSERT INTO audit [$audit] RETURN NONE;
             INSERT INTO outbox $outbox RETURN NONE;{DELETE_KEYS}"
        ),
        params,
    )
    .await?;
    Ok(Some(current))
}

/// What every write keeps up to date besides the object: the outbox
/// subscriptions and the sort keys in force when it started.
#[derive(Clone, Copy)]
struct Hot<'a> {
    outbox: &'a Subscribed,
    /// The conf version `outbox` was read at (see [`conf_guard`]).
    conf: Option<u64>,
    sorts: &'a IndexedSet,
}

/// What a write that found the conf changed fails with (see [`conf_guard`]).
pub(super) const CONF_STALE: &str = "idm-conf-stale";

/// How many times a write re-reads the conf before it gives up (conf
/// changes faster than the write can be made).
const CONF_RELOADS: usize = 3;

/// The statement a managed write starts with when its outbox subscriptions
/// were read at conf version `conf`: it aborts the write if the stored
/// version moved since. The read is inside the write's own transaction, so a
/// write either commits under the conf its transaction sees (a mapping made
/// `enableSync` by a transaction committed before it began gets its entry)
/// or is undone and made again after a reload. No round trip is added: the
/// check rides on the write's statement batch.
///
/// What remains: a write whose transaction began before the conf change
/// committed is ordered before that change (snapshot isolation), so it feeds
/// the old subscriptions; that is the order a single node gives too (a
/// write in flight while the mapping is switched on).
fn conf_guard(conf: Option<u64>, params: &mut Map<String, Value>) -> String {
    match conf {
        Some(version) => {
            params.insert("conf".into(), json!(version));
            format!("IF (meta:conf.version ?? 0) != $conf {{ THROW \"{CONF_STALE}\" }};")
        }
        None => String::new(),
    }
}

fn subscribed<'a>(outbox: &'a Subscribed, type_name: &str) -> &'a [String] {
    outbox.get(type_name).map_or(&[], Vec::as_slice)
}

/// The relations a holder keeps after losing `removed`: read back from its rows.
fn current_relations(data: &Map<String, Value>, removed: &str) -> Vec<RelationRef> {
    let mut relations = Vec::new();
    for (property, value) in data {
        let values: Vec<&Value> = match value {
            Value::Array(items) => items.iter().collect(),
            other => vec![other],
        };
        for value in values {
            if let Some(target) = value.get("_ref").and_then(Value::as_str)
                && target != removed
                && let Some((target_type, target_id)) = split_ref(target)
            {
                relations.push(RelationRef {
                    property: property.clone(),
                    target_type: target_type.to_string(),
                    target_id: target_id.to_string(),
                });
            }
        }
    }
    relations
}

fn remove_reference(data: &mut Map<String, Value>, property: &str, reference: &str) {
    let is_ref = |v: &Value| v.get("_ref").and_then(Value::as_str) == Some(reference);
    match data.get_mut(property) {
        Some(Value::Array(items)) => items.retain(|v| !is_ref(v)),
        Some(v) if is_ref(v) => {
            data.remove(property);
        }
        _ => {}
    }
}

/// `managed/<type>/<id>` → `(type, id)`; ids may contain `/`.
pub fn split_ref(reference: &str) -> Option<(&str, &str)> {
    reference.strip_prefix("managed/")?.split_once('/')
}

fn object_content(object: &StoredObject) -> Value {
    json!({
        "type": object.type_name, "oid": object.oid, "rev": object.rev,
        "created": object.created, "modified": object.modified,
        "data": object.data, "keys": object.keys,
    })
}

fn object_row(object: &StoredObject) -> Value {
    let mut row = object_content(object);
    row["id"] = json!([object.type_name, object.oid]);
    row
}

fn unique_rows(type_name: &str, oid: &str, keys: &[(String, String)]) -> Vec<Value> {
    keys.iter()
        .map(|(property, value)| json!({ "id": [type_name, property, value], "oid": oid }))
        .collect()
}

/// The `referrer` rows (see [`Referrer`]) of `relation_rows`' rows.
fn referrer_rows(relations: &[Value]) -> Vec<Value> {
    relations
        .iter()
        .map(|r| json!({ "id": [r["target"], r["property"], r["source"]] }))
        .collect()
}

fn relation_rows(source: &str, relations: &[RelationRef]) -> Vec<Value> {
    relations
        .iter()
        .map(|r| {
            let target = object_ref(&r.target_type, &r.target_id);
            json!({ "id": [source, r.property, target], "source": source, "property": r.property, "target": target })
        })
        .collect()
}

pub(super) fn audit_row(
    actor: &str,
    operation: &str,
    object: &str,
    before: i64,
    after: i64,
    changed: &[String],
    now: &str,
) -> Value {
    let aid = uuid::Uuid::now_v7().to_string();
    // The call that caused the write (none for a reconciliation's rows).
    let request_id = crate::request_id::current();
    json!({
        "id": aid, "aid": aid, "time": now, "actor": actor, "operation": operation, "object": object,
        "rev_before": before, "rev_after": after, "changed": changed, "outcome": "success",
        "request_id": request_id,
    })
}

/// NotUnique naming the property if any of `rows` (unique_key rows that one
/// object's update claims) is taken by another object.
async fn check_unique(tx: &Tx, type_name: &str, rows: &[Value]) -> Result<(), StoreError> {
    if rows.is_empty() {
        return Ok(());
    }
    let ids: Vec<&Value> = rows.iter().filter_map(|r| r.get("id")).collect();
    let taken: Vec<(String, String, String)> = decode_rows(
        tx_query(
            tx,
            "array::filter($ids, |$k| record::exists(type::record('unique_key', $k)))",
            json!({ "ids": ids }),
        )
        .await?,
    )?;
    if let Some((_, property, _)) = taken.first() {
        return Err(StoreError::NotUnique {
            type_name: type_name.to_string(),
            property: property.clone(),
        });
    }
    Ok(())
}

/// Every relation target must exist when the write commits.
async fn check_targets(tx: &Tx, relations: &[Value]) -> Result<(), StoreError> {
    let targets: Vec<Value> = relations
        .iter()
        .filter_map(|r| r.get("target").and_then(Value::as_str))
        .filter_map(split_ref)
        .map(|(t, id)| json!([t, id]))
        .collect();
    if targets.is_empty() {
        return Ok(());
    }
    let missing: Vec<(String, String)> = decode_rows(
        tx_query(
            tx,
            "array::filter($ids, |$k| !record::exists(type::record('object', $k)))",
            json!({ "ids": targets }),
        )
        .await?,
    )?;
    match missing.first() {
        Some((t, id)) => Err(StoreError::MissingReference(object_ref(t, id))),
        None => Ok(()),
    }
}
