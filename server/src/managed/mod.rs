//! Managed objects: the domain rules between the API and the store — schema
//! checks, private properties, revisions, relationships, queries.

mod declare;
mod enforce;
pub mod hashing;
mod hooks;
mod password;
mod patch;
pub mod policy;
mod query;
mod schema;

use std::collections::BTreeMap;
use std::sync::Arc;

use idm_proto::filter;
use serde_json::{Map, Value, json};

use enforce::{check_policies, merge_failures, unique_policy};
pub use password::{PasswordThrottle, ThrottleLimits, dummy_hash};
pub use patch::PatchOp;
pub use policy::{Failure, Failures, Lookup};
use query::{ObjectResolver, compile_parsed, parse_filter};
pub use query::{
    compile_filter, decode_page_token, encode_page_token, fingerprint, page_size, parse_order_by,
};
pub use schema::{
    DEFAULT_MANAGED_JSON, ManagedSchema, ObjectType, Property, PropertyKind, SchemaError,
};

use crate::secrets::{self, SecretBox, SecretError};
use crate::store::{
    AsRetryable, Candidates, Link, NewObject, ObjectChange, Outcome, QueryPage, QueryPlan,
    RelationRef, RelationRow, SearchTerm, SortIndex, Store, StoreError, StoredObject, StoredSecret,
    Write, object_ref, split_ref,
};

pub const DEFAULT_PAGE_SIZE: usize = 50;
pub const MAX_PAGE_SIZE: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum ManagedError {
    #[error("managed/{0} is not a declared object type")]
    UnknownType(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("{property}: {message}")]
    Invalid { property: String, message: String },
    #[error("invalid filter at position {position}: {message}")]
    Filter { position: usize, message: String },
    #[error("{name} is at revision {actual}, not {expected}")]
    RevisionMismatch {
        name: String,
        expected: i64,
        actual: i64,
    },
    #[error("{0} already exists")]
    AlreadyExists(String),
    #[error("{property}: the value is already taken by another object of this type")]
    NotUnique { property: String },
    /// A script hook (`user.onCreate`) failed or refused the write.
    #[error("{script}: {message}")]
    Hook { script: String, message: String },
    /// Wren's policies refused the object; one entry per property.
    #[error("{0}")]
    Policy(Failures),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Secret(#[from] SecretError),
    #[error("too many failed password checks; retry in {}s", .retry_after.as_secs().max(1))]
    Throttled { retry_after: std::time::Duration },
}

impl ManagedError {
    pub fn invalid(property: impl Into<String>, message: impl Into<String>) -> Self {
        ManagedError::Invalid {
            property: property.into(),
            message: message.into(),
        }
    }
}

impl AsRetryable for ManagedError {
    fn is_retryable(&self) -> bool {
        matches!(self, ManagedError::Store(e) if e.is_retryable())
    }
    fn is_conf_stale(&self) -> bool {
        matches!(self, ManagedError::Store(e) if e.is_conf_stale())
    }
}

fn from_store(error: StoreError) -> ManagedError {
    match error {
        StoreError::AlreadyExists(name) => ManagedError::AlreadyExists(name),
        StoreError::NotUnique { property, .. } => ManagedError::NotUnique { property },
        StoreError::MissingReference(target) => {
            ManagedError::invalid("_ref", format!("{target} does not exist"))
        }
        other => ManagedError::Store(other),
    }
}

/// A managed object as the API shows it: private properties left out, reverse
/// relationships filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectView {
    pub type_name: String,
    pub id: String,
    pub rev: i64,
    pub created: String,
    pub modified: String,
    pub attributes: Map<String, Value>,
}

impl ObjectView {
    pub fn name(&self) -> String {
        object_ref(&self.type_name, &self.id)
    }
}

/// One query over a collection.
#[derive(Debug, Clone, Default)]
pub struct Query {
    pub filter: String,
    pub order_by: String,
    pub page_size: usize,
    pub page_token: String,
    pub offset: usize,
    pub fields: Vec<String>,
    /// An estimated total will do when counting would read every match
    /// (the console's list); `Page::estimated` says when it is one.
    pub estimate_total: bool,
}

pub struct Page {
    pub objects: Vec<ObjectView>,
    pub next_page_token: String,
    pub total: u64,
    /// `total` is an upper-bound estimate, not a count.
    pub estimated: bool,
}

/// The managed-object service shared by every front end (gRPC, recon, SCIM).
#[derive(Clone)]
pub struct ManagedObjects {
    schema: Arc<ManagedSchema>,
    store: Store,
    secrets: Arc<SecretBox>,
    throttle: Arc<PasswordThrottle>,
}

/// A validated object, before its passwords are hashed.
#[derive(Clone)]
struct Prepared {
    data: Map<String, Value>,
    unique: Vec<(String, String)>,
    relations: Vec<RelationRef>,
    passwords: BTreeMap<String, String>,
}

impl ManagedObjects {
    pub fn new(schema: Arc<ManagedSchema>, store: Store, secrets: Arc<SecretBox>) -> Self {
        ManagedObjects {
            schema,
            store,
            secrets,
            throttle: Arc::new(PasswordThrottle::new(ThrottleLimits::default())),
        }
    }

    /// Throttles password checks with these limits instead of the defaults.
    pub fn with_password_throttle(mut self, limits: ThrottleLimits) -> Self {
        self.throttle = Arc::new(PasswordThrottle::new(limits));
        self
    }

    pub fn schema(&self) -> &ManagedSchema {
        &self.schema
    }

    /// The server's encryption key (connector secrets are sealed with it too).
    pub fn secrets(&self) -> &SecretBox {
        &self.secrets
    }

    #[tracing::instrument(skip_all, fields(type_name, actor))]
    pub async fn create(
        &self,
        actor: &str,
        type_name: &str,
        id: Option<String>,
        attributes: Map<String, Value>,
    ) -> Result<ObjectView, ManagedError> {
        let created = self
            .create_many(actor, type_name, vec![(id, attributes)])
            .await?;
        created
            .into_iter()
            .next()
            .ok_or_else(|| ManagedError::NotFound(format!("managed/{type_name}")))
    }

    /// Creates many objects of one type in one transaction: all or none.
    pub async fn create_many(
        &self,
        actor: &str,
        type_name: &str,
        objects: Vec<(Option<String>, Map<String, Value>)>,
    ) -> Result<Vec<ObjectView>, ManagedError> {
        self.create_linked(actor, type_name, objects, &[]).await
    }

    /// [`Self::create_many`], writing a reconciliation's links for the new
    /// objects in the same transaction.
    pub async fn create_linked(
        &self,
        actor: &str,
        type_name: &str,
        objects: Vec<(Option<String>, Map<String, Value>)>,
        links: &[Link],
    ) -> Result<Vec<ObjectView>, ManagedError> {
        let object_type = self.schema.get(type_name)?;
        let mut prepared_objects = Vec::with_capacity(objects.len());
        for (id, mut attributes) in objects {
            let body_id = attributes
                .remove("_id")
                .map(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| ManagedError::invalid("_id", "must be a string"))
                })
                .transpose()?;
            if let (Some(given), Some(in_body)) = (&id, &body_id)
                && given != in_body
            {
                return Err(ManagedError::invalid(
                    "_id",
                    format!("the body says \"{in_body}\" but the request names \"{given}\""),
                ));
            }
            let chosen = id.or(body_id);
            let attributes = hooks::change(
                &object_type.hooks,
                "onCreate",
                attributes,
                None,
                &object_ref(type_name, chosen.as_deref().unwrap_or_default()),
            )?;
            let mut failures = self.lookup_failures(object_type, &attributes, None).await?;
            if let Some(chosen) = &chosen {
                let as_object = Map::from_iter([("_id".to_string(), json!(chosen))]);
                failures.check_property(
                    &as_object,
                    "_id",
                    as_object.get("_id"),
                    &object_type.id_policies,
                );
            }
            let prepared = merge_failures(prepare(object_type, attributes, false), failures)?;
            let id = match chosen {
                Some(id) => {
                    check_id(&id)?;
                    id
                }
                None => uuid::Uuid::now_v7().to_string(),
            };
            prepared_objects.push((id, prepared));
        }
        // Sealed and committed under one hold: a key rotation cannot switch
        // keys in between (see `SecretBox::hold`). The hashes come later
        // (hashing.rs).
        let with_passwords = prepared_objects
            .iter()
            .any(|(_, prepared)| !prepared.passwords.is_empty());
        let _hold = self.hold_key(with_passwords).await;
        let sealed = prepared_objects
            .iter()
            .map(|(_, prepared)| self.seal_all(&prepared.passwords))
            .collect::<Result<Vec<_>, _>>()?;
        let new_objects: Vec<NewObject> = prepared_objects
            .into_iter()
            .zip(sealed)
            .map(|((oid, prepared), secrets)| {
                let mut changed: Vec<String> = prepared.data.keys().cloned().collect();
                changed.extend(prepared.passwords.keys().cloned());
                changed.sort();
                NewObject {
                    oid,
                    write: Write {
                        data: prepared.data,
                        unique: prepared.unique,
                        relations: prepared.relations,
                        secrets: secrets.into_iter().map(|(k, v)| (k, Some(v))).collect(),
                        changed,
                    },
                }
            })
            .collect();
        let stored = self
            .store
            .create_objects(actor, type_name, &new_objects, links)
            .await
            .map_err(|e| unique_policy(object_type, from_store(e)))?;
        if with_passwords {
            self.store.announce_hashes();
        }
        // Nothing can refer to an object that did not exist: no reverse lookup.
        let views = assemble_views(object_type, stored, &[], BTreeMap::new());
        for view in &views {
            hooks::notify(
                &object_type.hooks,
                "postCreate",
                None,
                Some(&view.attributes),
                &view.name(),
            )?;
        }
        Ok(views)
    }

    pub async fn get(
        &self,
        type_name: &str,
        id: &str,
        fields: &[String],
    ) -> Result<ObjectView, ManagedError> {
        let object_type = self.schema.get(type_name)?;
        let not_found = || ManagedError::NotFound(object_ref(type_name, id));
        // The object and what refers to it in one query: a second query would
        // cost as much as the read itself.
        let (stored, rows) = if object_type.reverse.is_empty() {
            let stored = self.store.get_object(type_name, id).await?;
            (stored.ok_or_else(not_found)?, Vec::new())
        } else {
            let found = self.store.get_object_with_referrers(type_name, id).await?;
            found.ok_or_else(not_found)?
        };
        let reverse = reverse_properties(object_type, rows);
        assemble_views(object_type, vec![stored], fields, reverse)
            .pop()
            .ok_or_else(not_found)
    }

    /// Replaces all attributes; private properties absent from `attributes` keep their value.
    #[tracing::instrument(skip_all, fields(type_name, id, actor))]
    pub async fn replace(
        &self,
        actor: &str,
        type_name: &str,
        id: &str,
        mut attributes: Map<String, Value>,
        expected_rev: Option<i64>,
    ) -> Result<ObjectView, ManagedError> {
        let object_type = self.schema.get(type_name)?;
        if let Some(in_body) = attributes.remove("_id").filter(|v| v.as_str() != Some(id)) {
            return Err(ManagedError::invalid(
                "_id",
                format!("the body says {in_body} but the request names \"{id}\""),
            ));
        }
        let has_hooks = object_type.hooks.get("onUpdate").is_some()
            || object_type.hooks.get("postUpdate").is_some();
        let old = if has_hooks {
            Some(self.get(type_name, id, &[]).await?.attributes)
        } else {
            None
        };
        let name = object_ref(type_name, id);
        let attributes = hooks::change(
            &object_type.hooks,
            "onUpdate",
            attributes,
            old.as_ref(),
            &name,
        )?;
        let failures = self.lookup_failures(object_type, &attributes, None).await?;
        let prepared = merge_failures(prepare(object_type, attributes, true), failures)?;
        let _hold = self.hold_key(!prepared.passwords.is_empty()).await;
        let sealed = self.seal_all(&prepared.passwords)?;
        let view = self
            .write(actor, "replace", object_type, id, expected_rev, |current| {
                // Hidden properties are never shown, so a replace keeps them.
                let mut prepared = prepared.clone();
                for (name, property) in &object_type.properties {
                    if property.hidden
                        && !prepared.data.contains_key(name)
                        && let Some(value) = current.data.get(name)
                    {
                        prepared.data.insert(name.clone(), value.clone());
                    }
                }
                Ok((prepared, sealed.clone(), Vec::new()))
            })
            .await?;
        if !sealed.is_empty() {
            self.store.announce_hashes();
        }
        hooks::notify(
            &object_type.hooks,
            "postUpdate",
            old.as_ref(),
            Some(&view.attributes),
            &name,
        )?;
        Ok(view)
    }

    /// Applies patch operations atomically.
    #[tracing::instrument(skip_all, fields(type_name, id, actor))]
    pub async fn patch(
        &self,
        actor: &str,
        type_name: &str,
        id: &str,
        ops: Vec<PatchOp>,
        expected_rev: Option<i64>,
    ) -> Result<ObjectView, ManagedError> {
        let object_type = self.schema.get(type_name)?;
        // Private properties are set or cleared by top-level operations only.
        let mut password_ops = BTreeMap::new();
        let mut data_ops = Vec::new();
        let is_private = |name: &str| object_type.properties.get(name).is_some_and(|p| p.private);
        for op in ops {
            op.refuse_private(is_private)?;
            match object_type.properties.get(op.property()) {
                Some(p) if p.private => {
                    if op.field.matches('/').count() != 1 {
                        return Err(ManagedError::invalid(
                            op.property(),
                            "private properties are replaced whole",
                        ));
                    }
                    let value = match &op.value {
                        Some(Value::String(s)) if op.operation != patch::Operation::Remove => {
                            Some(s.clone())
                        }
                        None | Some(Value::Null) => None,
                        _ if op.operation == patch::Operation::Remove => None,
                        Some(other) => {
                            return Err(ManagedError::invalid(
                                op.property(),
                                format!("expected a string, got {}", schema::describe(other)),
                            ));
                        }
                    };
                    password_ops.insert(op.property().to_string(), value);
                }
                _ => data_ops.push(op),
            }
        }
        let passwords: BTreeMap<String, String> = password_ops
            .iter()
            .filter_map(|(k, v)| v.clone().map(|v| (k.clone(), v)))
            .collect();
        // The store-backed policies look at the values this patch writes.
        let mut written = Map::new();
        for op in &data_ops {
            if op.field.matches('/').count() == 1
                && op.operation != patch::Operation::Remove
                && let Some(value) = &op.value
            {
                written.insert(op.property().to_string(), value.clone());
            }
        }
        self.add_copied_values(type_name, id, &data_ops, &mut written)
            .await?;
        let lookups = self.lookup_failures(object_type, &written, None).await?;
        let _hold = self.hold_key(!passwords.is_empty()).await;
        let sealed = self.seal_all(&passwords)?;
        let cleared: Vec<String> = password_ops
            .iter()
            .filter(|(_, v)| v.is_none())
            .map(|(k, _)| k.clone())
            .collect();
        let name = object_ref(type_name, id);
        let old = std::sync::Mutex::new(None);
        let view = self
            .write(actor, "patch", object_type, id, expected_rev, |current| {
                let mut data = current.data.clone();
                for op in &data_ops {
                    op.apply(&mut data)?;
                }
                for (property, plain) in &passwords {
                    data.insert(property.clone(), Value::String(plain.clone()));
                }
                let data = hooks::change(
                    &object_type.hooks,
                    "onUpdate",
                    data,
                    Some(&current.data),
                    &name,
                )?;
                if let Ok(mut old) = old.lock() {
                    *old = Some(current.data.clone());
                }
                let mut prepared =
                    merge_failures(prepare(object_type, data, true), lookups.clone())?;
                prepared.passwords = passwords.clone();
                Ok((prepared, sealed.clone(), cleared.clone()))
            })
            .await?;
        if !sealed.is_empty() {
            self.store.announce_hashes();
        }
        let old = old.lock().ok().and_then(|mut o| o.take());
        hooks::notify(
            &object_type.hooks,
            "postUpdate",
            old.as_ref(),
            Some(&view.attributes),
            &name,
        )?;
        Ok(view)
    }

    /// A `copy` or `move` to a top-level property writes a value the request
    /// does not carry: the patch is tried on the object as it is now, so that
    /// the store-backed policies see what it would write there.
    async fn add_copied_values(
        &self,
        type_name: &str,
        id: &str,
        ops: &[PatchOp],
        written: &mut Map<String, Value>,
    ) -> Result<(), ManagedError> {
        let targets: Vec<&str> = ops
            .iter()
            .filter(|op| op.from.is_some() && op.field.matches('/').count() == 1)
            .map(PatchOp::property)
            .collect();
        if targets.is_empty() {
            return Ok(());
        }
        let Some(current) = self.store.get_object(type_name, id).await? else {
            return Ok(()); // the write answers that it is not found
        };
        let mut after = current.data;
        for op in ops {
            op.apply(&mut after)?;
        }
        for target in targets {
            if let Some(value) = after.get(target) {
                written.insert(target.to_string(), value.clone());
            }
        }
        Ok(())
    }

    /// Shared update path: `build` turns the current object into the wanted
    /// state; the revision is bumped only if something changed.
    async fn write(
        &self,
        actor: &str,
        operation: &str,
        object_type: &ObjectType,
        id: &str,
        expected_rev: Option<i64>,
        build: impl Fn(
            &StoredObject,
        )
            -> Result<(Prepared, BTreeMap<String, StoredSecret>, Vec<String>), ManagedError>,
    ) -> Result<ObjectView, ManagedError> {
        let private = private_properties(object_type);
        let name = object_ref(&object_type.name, id);
        let outcome = self
            .store
            .update_object(
                actor,
                operation,
                &object_type.name,
                id,
                &private,
                |current, current_secrets| {
                    if let Some(expected) = expected_rev.filter(|e| *e != current.rev) {
                        return Err(ManagedError::RevisionMismatch {
                            name: name.clone(),
                            expected,
                            actual: current.rev,
                        });
                    }
                    let (prepared, sealed, cleared) = build(current)?;
                    let mut changed: Vec<String> =
                        changed_properties(&current.data, &prepared.data);
                    let mut secrets = BTreeMap::new();
                    for (property, plain) in &prepared.passwords {
                        let same = current_secrets
                            .get(property)
                            .and_then(|s| self.secrets.open(&s.sealed).ok())
                            .is_some_and(|old| &old == plain);
                        if !same && let Some(secret) = sealed.get(property) {
                            secrets.insert(property.clone(), Some(secret.clone()));
                            changed.push(property.clone());
                        }
                    }
                    for property in cleared.iter().filter(|p| current_secrets.contains_key(*p)) {
                        secrets.insert(property.clone(), None);
                        changed.push(property.clone());
                    }
                    if changed.is_empty() {
                        return Ok(ObjectChange::Unchanged);
                    }
                    changed.sort();
                    Ok(ObjectChange::Write(Write {
                        data: prepared.data,
                        unique: prepared.unique,
                        relations: prepared.relations,
                        secrets,
                        changed,
                    }))
                },
            )
            .await
            .map_err(|e| match e {
                ManagedError::Store(s) => unique_policy(object_type, from_store(s)),
                other => unique_policy(object_type, other),
            })?;
        let stored = match outcome {
            Outcome::NotFound => return Err(ManagedError::NotFound(name)),
            Outcome::Unchanged(stored) | Outcome::Written(stored) => stored,
        };
        let mut views = self.views(object_type, vec![stored], &[]).await?;
        views.pop().ok_or(ManagedError::NotFound(name))
    }

    /// Deletes an object; `None` if it did not exist.
    #[tracing::instrument(skip_all, fields(type_name, id, actor))]
    pub async fn delete(
        &self,
        actor: &str,
        type_name: &str,
        id: &str,
        expected_rev: Option<i64>,
    ) -> Result<Option<ObjectView>, ManagedError> {
        let object_type = self.schema.get(type_name)?;
        let private = private_properties(object_type);
        let name = object_ref(type_name, id);
        let deleted = self
            .store
            .delete_object(
                actor,
                type_name,
                id,
                &private,
                |current| match expected_rev {
                    Some(expected) if expected != current.rev => {
                        Err(ManagedError::RevisionMismatch {
                            name: name.clone(),
                            expected,
                            actual: current.rev,
                        })
                    }
                    _ => hooks::notify(
                        &object_type.hooks,
                        "onDelete",
                        Some(&current.data),
                        None,
                        &name,
                    ),
                },
            )
            .await?;
        match deleted {
            Some(stored) => {
                let view = self.views(object_type, vec![stored], &[]).await?.pop();
                if let Some(view) = &view {
                    hooks::notify(
                        &object_type.hooks,
                        "postDelete",
                        Some(&view.attributes),
                        None,
                        &name,
                    )?;
                }
                Ok(view)
            }
            None => Ok(None),
        }
    }

    pub async fn query(&self, type_name: &str, query: &Query) -> Result<Page, ManagedError> {
        let object_type = self.schema.get(type_name)?;
        let limit = page_size(query.page_size)?;
        let fingerprint = fingerprint(&[type_name, &query.filter, &query.order_by]);
        let offset = if query.page_token.is_empty() {
            query.offset
        } else {
            decode_page_token(&query.page_token, &fingerprint)?
        };
        let parsed = parse_filter(&query.filter)?;
        let started = std::time::Instant::now();
        let (only, only_exact, many) = match self.candidates(object_type, parsed.as_ref()).await? {
            None => (None, false, None),
            Some(Candidates::Ids(ids)) => (Some(ids), false, None),
            Some(Candidates::Matches(ids)) => (Some(ids), true, None),
            Some(Candidates::Many(estimate)) => (None, false, Some(estimate)),
        };
        let plan = QueryPlan {
            filter: compile_parsed(parsed.as_ref(), &ObjectResolver(object_type))?,
            only,
            only_exact,
            sort: parse_order_by(&query.order_by, &ObjectResolver(object_type))?,
            offset,
            limit,
            many,
            estimate_total: query.estimate_total,
            terms: many
                .and(parsed.as_ref())
                .and_then(|filter| search_terms(object_type, filter)),
        };
        let narrowed = started.elapsed();
        let QueryPage {
            rows: stored,
            total,
            estimated,
        } = self.store.query_objects(type_name, &plan).await?;
        tracing::debug!(
            candidates = plan.only.as_ref().map(Vec::len),
            many = plan.many,
            narrowing_us = narrowed.as_micros() as u64,
            store_us = (started.elapsed() - narrowed).as_micros() as u64,
            "query"
        );
        let next = offset + stored.len();
        let next_page_token = if (next as u64) < total && !stored.is_empty() {
            encode_page_token(next, &fingerprint)
        } else {
            String::new()
        };
        let objects = self.views(object_type, stored, &query.fields).await?;
        Ok(Page {
            objects,
            next_page_token,
            total,
            estimated,
        })
    }

    pub async fn count(&self, type_name: &str, filter_text: &str) -> Result<u64, ManagedError> {
        let object_type = self.schema.get(type_name)?;
        let parsed = parse_filter(filter_text)?;
        let only = match self.candidates(object_type, parsed.as_ref()).await? {
            Some(Candidates::Matches(ids)) => return Ok(ids.len() as u64),
            Some(Candidates::Ids(ids)) => Some(ids),
            // Counted exactly: the sort keys only estimate many matches.
            None | Some(Candidates::Many(_)) => None,
        };
        let plan = QueryPlan {
            filter: compile_parsed(parsed.as_ref(), &ObjectResolver(object_type))?,
            only,
            ..QueryPlan::default()
        };
        Ok(self.store.count_objects(type_name, &plan).await?)
    }

    /// The only ids a filter can match when it pins `_id` or a unique string
    /// property with `eq` at its top level (the shape of every correlation
    /// and SCIM lookup), so such queries read records instead of scanning.
    async fn candidates(
        &self,
        object_type: &ObjectType,
        parsed: Option<&filter::Filter>,
    ) -> Result<Option<Candidates>, ManagedError> {
        let Some(parsed) = parsed else {
            return Ok(None);
        };
        let mut many = None;
        let mut conjuncts = vec![parsed];
        while let Some(filter) = conjuncts.pop() {
            match filter {
                filter::Filter::And(operands) => conjuncts.extend(operands.iter().rev()),
                filter::Filter::Compare(
                    path,
                    filter::CompareOp::Eq,
                    filter::Value::String(value),
                ) if path.urn.is_none() && path.sub_attr.is_none() => {
                    if path.attr == "_id" {
                        return Ok(Some(Candidates::Ids(vec![value.clone()])));
                    }
                    let Some(property) = object_type.properties.get(&path.attr) else {
                        continue;
                    };
                    if property.unique && property.kind == PropertyKind::String {
                        let key = if property.case_exact {
                            value.clone()
                        } else {
                            value.to_lowercase()
                        };
                        let found = self
                            .store
                            .lookup_unique(&object_type.name, &path.attr, &key)
                            .await?;
                        return Ok(Some(Candidates::Ids(found.into_iter().collect())));
                    }
                }
                _ => {}
            }
            if let Some(terms) = search_terms(object_type, filter) {
                match self
                    .store
                    .search_candidates(&object_type.name, &terms, SEARCH_CAP)
                    .await?
                {
                    // The terms are the whole filter: the keys found exactly its matches.
                    Some(Candidates::Ids(ids)) if std::ptr::eq(filter, parsed) => {
                        return Ok(Some(Candidates::Matches(ids)));
                    }
                    Some(found @ (Candidates::Ids(_) | Candidates::Matches(_))) => {
                        return Ok(Some(found));
                    }
                    // Another conjunct may still narrow it down.
                    Some(Candidates::Many(estimate)) => many = Some(estimate),
                    None => {}
                }
            }
        }
        Ok(many.map(Candidates::Many))
    }

    /// Gives the `searchable` string properties of every type sort keys
    /// (building those that are new, dropping those no longer declared), so
    /// the console's list pages and searches do not read the whole type.
    /// Call once at start, before anything writes.
    pub async fn prepare_indexes(&self) -> Result<(), StoreError> {
        let wanted = self
            .schema
            .types()
            .map(|t| {
                let indexes = t
                    .properties
                    .iter()
                    .filter(|(_, p)| sorts_by_keys(p))
                    .map(|(name, p)| SortIndex {
                        property: name.clone(),
                        fold: !p.case_exact,
                    })
                    .collect();
                (t.name.clone(), indexes)
            })
            .collect();
        self.store.prepare_sort_indexes(wanted).await
    }

    /// For each `(id, value)`: whether the object's private `property` holds
    /// exactly `value`. Opening sealed copies is cheap, so a reconciliation
    /// can skip unchanged passwords without hashing them.
    pub async fn private_values_match(
        &self,
        type_name: &str,
        property: &str,
        candidates: &[(String, String)],
    ) -> Result<Vec<bool>, ManagedError> {
        let ids: Vec<String> = candidates.iter().map(|(id, _)| id.clone()).collect();
        let sealed = self.store.sealed_secrets(type_name, property, &ids).await?;
        Ok(candidates
            .iter()
            .zip(sealed)
            .map(|((_, wanted), sealed)| {
                sealed
                    .and_then(|s| self.secrets.open(&s).ok())
                    .is_some_and(|current| &current == wanted)
            })
            .collect())
    }

    /// The plain values of one private property of many objects, in order
    /// (`None` where an object has none): provisioning hands them to targets
    /// that keep their own copy, such as a directory's `userPassword`.
    pub async fn private_values(
        &self,
        type_name: &str,
        property: &str,
        oids: &[String],
    ) -> Result<Vec<Option<String>>, ManagedError> {
        let sealed = self.store.sealed_secrets(type_name, property, oids).await?;
        sealed
            .into_iter()
            .map(|s| s.map(|s| self.secrets.open(&s)).transpose())
            .collect::<Result<_, _>>()
            .map_err(ManagedError::from)
    }

    /// The stored form of new passwords: sealed, their hashes to come
    /// (hashing.rs). Call under [`Self::hold_key`].
    fn seal_all(
        &self,
        passwords: &BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, StoredSecret>, ManagedError> {
        passwords
            .iter()
            .map(|(property, plain)| {
                let sealed = self.secrets.seal(plain)?;
                Ok((property.clone(), StoredSecret::sealed(sealed)))
            })
            .collect()
    }

    /// The key hold for a write that seals something (`needed`), else none.
    async fn hold_key(&self, needed: bool) -> Option<secrets::KeyHold<'_>> {
        if needed {
            Some(self.secrets.hold().await)
        } else {
            None
        }
    }

    async fn views(
        &self,
        object_type: &ObjectType,
        stored: Vec<StoredObject>,
        fields: &[String],
    ) -> Result<Vec<ObjectView>, ManagedError> {
        let rows = if !object_type.reverse.is_empty() && !stored.is_empty() {
            let refs: Vec<String> = stored.iter().map(StoredObject::reference).collect();
            self.store.relations_to(&refs).await?
        } else {
            Vec::new()
        };
        Ok(assemble_views(
            object_type,
            stored,
            fields,
            reverse_properties(object_type, rows),
        ))
    }
}

/// Relation rows as the reverse properties they make: object ref → `{groups:
/// [{_ref: …}]}`.
fn reverse_properties(
    object_type: &ObjectType,
    rows: Vec<RelationRow>,
) -> BTreeMap<String, Map<String, Value>> {
    let mut reverse: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    for row in rows {
        let Some((source_type, _)) = split_ref(&row.source) else {
            continue;
        };
        for relation in &object_type.reverse {
            if relation.source_type == source_type && relation.source_property == row.property {
                let entry = reverse.entry(row.target.clone()).or_default();
                if let Value::Array(items) = entry
                    .entry(relation.name.clone())
                    .or_insert_with(|| json!([]))
                {
                    items.push(json!({ "_ref": row.source }));
                }
            }
        }
    }
    reverse
}

/// Stored objects as the API shows them, with reverse relationships (`reverse`:
/// object ref → computed properties) filled in and `fields` applied.
fn assemble_views(
    object_type: &ObjectType,
    stored: Vec<StoredObject>,
    fields: &[String],
    mut reverse: BTreeMap<String, Map<String, Value>>,
) -> Vec<ObjectView> {
    stored
        .into_iter()
        .map(|object| {
            let mut attributes = object.data;
            attributes
                .retain(|name, _| !object_type.properties.get(name).is_some_and(|p| p.hidden));
            for relation in &object_type.reverse {
                attributes.insert(relation.name.clone(), json!([]));
            }
            if let Some(extra) = reverse.remove(&object_ref(&object.type_name, &object.oid)) {
                attributes.extend(extra);
            }
            if !fields.is_empty() {
                attributes.retain(|name, _| {
                    fields
                        .iter()
                        .any(|f| f.split('.').next() == Some(name.as_str()))
                });
            }
            ObjectView {
                type_name: object.type_name,
                id: object.oid,
                rev: object.rev,
                created: object.created,
                modified: object.modified,
                attributes,
            }
        })
        .collect()
}

fn private_properties(object_type: &ObjectType) -> Vec<String> {
    object_type
        .properties
        .iter()
        .filter(|(_, p)| p.private)
        .map(|(n, _)| n.clone())
        .collect()
}

fn check_id(id: &str) -> Result<(), ManagedError> {
    if id.is_empty() || id.len() > 255 || id.contains('/') || id.chars().any(char::is_control) {
        return Err(ManagedError::invalid(
            "_id",
            "ids are 1 to 255 characters, without '/' or control characters",
        ));
    }
    Ok(())
}

/// Validates attributes against the type and splits out what the store keeps apart.
fn prepare(
    object_type: &ObjectType,
    attributes: Map<String, Value>,
    update: bool,
) -> Result<Prepared, ManagedError> {
    let failures = check_policies(object_type, &attributes, update, false);
    if !failures.is_empty() {
        return Err(ManagedError::Policy(failures));
    }
    let mut data = Map::new();
    let mut passwords = BTreeMap::new();
    let mut relations = Vec::new();
    let mut unique = Vec::new();
    for (name, value) in attributes {
        if name == "_rev" || name == "_meta" || object_type.reverse.iter().any(|r| r.name == name) {
            continue; // read-only
        }
        if name.starts_with('_') || name.is_empty() {
            return Err(ManagedError::invalid(
                &name,
                "names starting with _ are reserved",
            ));
        }
        if value.is_null() {
            continue;
        }
        let Some(property) = object_type.properties.get(&name) else {
            data.insert(name, value);
            continue;
        };
        if property.private {
            if let Value::String(plain) = value {
                passwords.insert(name, plain);
            }
            continue;
        }
        let value = if property.kind == schema::PropertyKind::Relationship {
            normalize_references(&name, property, value, &mut relations)?
        } else {
            value
        };
        if property.unique {
            let key = match &value {
                Value::String(s) if !property.case_exact => s.to_lowercase(),
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            unique.push((name.clone(), key));
        }
        data.insert(name, value);
    }
    Ok(Prepared {
        data,
        unique,
        relations,
        passwords,
    })
}

/// Accepts `"id"`, `"managed/user/id"` or `{"_ref": "managed/user/id"}` and
/// stores `{"_ref": "managed/user/id"}`.
fn normalize_references(
    name: &str,
    property: &Property,
    value: Value,
    relations: &mut Vec<RelationRef>,
) -> Result<Value, ManagedError> {
    let collection = property.resource_collection.clone().unwrap_or_default();
    let target_type = collection
        .strip_prefix("managed/")
        .unwrap_or_default()
        .to_string();
    let mut one = |item: Value| -> Result<Value, ManagedError> {
        let reference = match &item {
            Value::String(s) => s.clone(),
            Value::Object(map) => map
                .get("_ref")
                .or_else(|| map.get("value"))
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| {
                    ManagedError::invalid(
                        name,
                        "a reference is {\"_ref\": \"managed/<type>/<id>\"}",
                    )
                })?,
            other => {
                return Err(ManagedError::invalid(
                    name,
                    format!("expected a reference, got {}", schema::describe(other)),
                ));
            }
        };
        let id = match reference.strip_prefix(&format!("{collection}/")) {
            Some(id) => id.to_string(),
            None if !reference.contains('/') => reference.clone(),
            None => {
                return Err(ManagedError::invalid(
                    name,
                    format!("{reference} is not in {collection}"),
                ));
            }
        };
        check_id(&id)
            .map_err(|_| ManagedError::invalid(name, format!("\"{id}\" is not an object id")))?;
        let relation = RelationRef {
            property: name.to_string(),
            target_type: target_type.clone(),
            target_id: id.clone(),
        };
        if relations.contains(&relation) {
            return Ok(Value::Null);
        }
        relations.push(relation);
        Ok(json!({ "_ref": object_ref(&target_type, &id) }))
    };
    if property.multiple {
        let Value::Array(items) = value else {
            return Err(ManagedError::invalid(
                name,
                "expected an array of references",
            ));
        };
        let refs: Result<Vec<Value>, ManagedError> = items.into_iter().map(&mut one).collect();
        Ok(Value::Array(
            refs?.into_iter().filter(|v| !v.is_null()).collect(),
        ))
    } else {
        one(value)
    }
}

fn changed_properties(before: &Map<String, Value>, after: &Map<String, Value>) -> Vec<String> {
    let mut names: Vec<String> = before
        .keys()
        .chain(after.keys())
        .filter(|k| before.get(*k) != after.get(*k))
        .cloned()
        .collect();
    names.sort();
    names.dedup();
    names
}

/// The most candidates a search reads from the sort keys; the filter is
/// checked on each, then they are sorted. Past it, a page is found walking
/// an index in order (`store/sort.rs`).
#[cfg(not(test))]
const SEARCH_CAP: usize = 5_000;
/// Small enough for the tests' few objects to walk.
#[cfg(test)]
const SEARCH_CAP: usize = 6;

/// A property with sort keys: declared searchable, a string, returned.
fn sorts_by_keys(property: &Property) -> bool {
    property.searchable
        && property.kind == PropertyKind::String
        && !property.private
        && !property.hidden
}

/// `p sw "x"` or `p eq "x"` on properties with sort keys, alone or OR-ed
/// (the console's search box): what the sort keys can find candidates for.
fn search_terms(object_type: &ObjectType, filter: &filter::Filter) -> Option<Vec<SearchTerm>> {
    let operands: Vec<&filter::Filter> = match filter {
        filter::Filter::Or(operands) => operands.iter().collect(),
        other => vec![other],
    };
    operands
        .into_iter()
        .map(|operand| match operand {
            filter::Filter::Compare(
                path,
                op @ (filter::CompareOp::Sw | filter::CompareOp::Eq),
                filter::Value::String(value),
            ) if path.urn.is_none()
                && path.sub_attr.is_none()
                && object_type
                    .properties
                    .get(&path.attr)
                    .is_some_and(sorts_by_keys) =>
            {
                Some(SearchTerm {
                    property: path.attr.clone(),
                    value: value.clone(),
                    prefix: *op == filter::CompareOp::Sw,
                })
            }
            _ => None,
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    async fn objects() -> ManagedObjects {
        let secrets = SecretBox::ephemeral();
        let store = Store::open("mem://").await.unwrap();
        ManagedObjects::new(
            Arc::new(ManagedSchema::builtin().unwrap()),
            store,
            Arc::new(secrets),
        )
    }

    fn user(name: &str) -> Map<String, Value> {
        json!({ "userName": name }).as_object().cloned().unwrap()
    }

    #[tokio::test]
    async fn a_batch_is_all_or_nothing_and_names_what_collided() {
        let objects = objects().await;
        let clash_inside = vec![
            (Some("a".into()), user("Snow")),
            (Some("b".into()), user("snow")),
        ];
        let err = objects
            .create_many("test", "user", clash_inside)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, ManagedError::NotUnique { property } if property == "userName"),
            "{err}"
        );
        assert_eq!(
            objects.count("user", "").await.unwrap(),
            0,
            "nothing of the failed batch stays"
        );

        objects
            .create_many("test", "user", vec![(Some("a".into()), user("a"))])
            .await
            .unwrap();
        let taken_id = vec![
            (Some("c".into()), user("c")),
            (Some("a".into()), user("other")),
        ];
        let err = objects
            .create_many("test", "user", taken_id)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, ManagedError::AlreadyExists(name) if name == "managed/user/a"),
            "{err}"
        );
        let taken_name = vec![(Some("d".into()), user("A"))];
        let err = objects
            .create_many("test", "user", taken_name)
            .await
            .unwrap_err();
        assert!(matches!(&err, ManagedError::NotUnique { .. }), "{err}");
        assert_eq!(objects.count("user", "").await.unwrap(), 1);
    }
}

/// Sort keys change how pages are read, never what they hold: the same
/// writes through a store with sort keys and one without answer every query
/// alike, through creates, updates and deletes.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod sort_key_tests {
    use super::*;

    const SCHEMA: &str = r#"{"objects": [{"name": "user", "schema": {"properties": {
        "a": { "type": ["string", "null"], "caseExact": false, "searchable": true },
        "b": { "type": ["string", "null"], "searchable": true },
        "c": { "type": "string" }
    }}}]}"#;

    const VALUES: &[Option<&str>] = &[
        Some(""),
        Some("a"),
        Some("A"),
        Some("ab"),
        Some("Ab"),
        Some("b"),
        Some("B"),
        Some("é"),
        Some("É"),
        Some("z"),
        Some("ß"),
        Some("İx"),
        Some("snow"),
        Some("Snowden"),
        Some("snowy day"),
        Some("a\u{1}"),
        None,
    ];

    async fn pair() -> (ManagedObjects, ManagedObjects) {
        let (indexed, plain, _) = pair_on(false).await;
        (indexed, plain)
    }

    /// An indexed type and a plain one; `embedded`: the indexed one in a
    /// SurrealKV store (in the scratch directory returned, to be kept while
    /// the store is used), whose searches read values through the key layer
    /// (the plain one, in memory, always asks SurrealQL).
    async fn pair_on(
        embedded: bool,
    ) -> (
        ManagedObjects,
        ManagedObjects,
        Option<crate::scratch::Scratch>,
    ) {
        let scratch = embedded.then(|| crate::scratch::Scratch::new("idm-sorted"));
        let mut both = Vec::new();
        for indexed in [true, false] {
            let url = match &scratch {
                Some(dir) if indexed => format!("surrealkv://{}", dir.join("store").display()),
                _ => "mem://".to_string(),
            };
            let objects = ManagedObjects::new(
                Arc::new(ManagedSchema::from_json(SCHEMA).unwrap()),
                Store::open(&url).await.unwrap(),
                Arc::new(SecretBox::ephemeral()),
            );
            if indexed {
                objects.prepare_indexes().await.unwrap();
            }
            both.push(objects);
        }
        let plain = both.pop().unwrap();
        (both.pop().unwrap(), plain, scratch)
    }

    /// `n`'s attributes: a value, a null or nothing for `a` and `b`.
    fn attributes(n: usize, salt: usize) -> Map<String, Value> {
        let mut map = Map::new();
        let pick = |k: usize| VALUES[(n * 7 + k * 3 + salt) % VALUES.len()];
        for (k, property) in ["a", "b"].into_iter().enumerate() {
            match pick(k) {
                Some(value) => {
                    map.insert(property.into(), json!(value));
                }
                None if (n + k).is_multiple_of(2) => {
                    map.insert(property.into(), Value::Null);
                }
                None => {}
            }
        }
        map.insert("c".into(), json!(format!("c{n}")));
        map
    }

    fn oid(n: usize) -> String {
        ["o", "O", "é", "o-"][n % 4].to_string() + &(n * 37 % 101).to_string()
    }

    async fn both(
        indexed: &ManagedObjects,
        plain: &ManagedObjects,
        query: &Query,
    ) -> (Vec<String>, u64) {
        let ids = |page: Page| -> (Vec<String>, u64, bool) {
            (
                page.objects.into_iter().map(|o| o.id).collect(),
                page.total,
                page.estimated,
            )
        };
        let (got, total, estimated) = ids(indexed.query("user", query).await.unwrap());
        let (want, exact, _) = ids(plain.query("user", query).await.unwrap());
        let what = format!(
            "{} / {} / {}+{}",
            query.filter, query.order_by, query.offset, query.page_size
        );
        assert_eq!(got, want, "{what}");
        if estimated {
            assert!(query.estimate_total, "{what}");
            assert!(total >= exact, "{what}: {total} < {exact}");
        } else {
            assert_eq!(total, exact, "{what}");
        }
        (got, total)
    }

    async fn every_query_agrees(indexed: &ManagedObjects, plain: &ManagedObjects) {
        let filters = [
            "",
            r#"a sw "a" or b sw "a""#,
            r#"a sw "SNOW" or b sw "Snow" or c sw "c1""#,
            r#"a sw "é" or b sw "É""#,
            r#"a eq "AB" or b eq "B""#,
            r#"b sw """#,
            r#"a sw "zz""#,
            r#"a sw "s" and c pr"#,
        ];
        for filter in filters {
            for order_by in ["", "a", "a desc", "b desc", "a, b desc"] {
                for (offset, page_size) in [(0, 50), (3, 5), (7, 4), (20, 3)] {
                    let query = Query {
                        filter: filter.into(),
                        order_by: order_by.into(),
                        page_size,
                        offset,
                        estimate_total: offset % 2 == 1,
                        ..Query::default()
                    };
                    both(indexed, plain, &query).await;
                }
            }
            assert_eq!(
                indexed.count("user", filter).await.unwrap(),
                plain.count("user", filter).await.unwrap()
            );
        }
    }

    async fn on_both(
        indexed: &ManagedObjects,
        plain: &ManagedObjects,
        write: impl AsyncFn(&ManagedObjects),
    ) {
        write(indexed).await;
        write(plain).await;
    }

    #[tokio::test]
    async fn pages_and_searches_over_sort_keys_match_a_scan_through_writes() {
        for embedded in [false, true] {
            sort_keys_match_a_scan_through_writes(embedded).await;
        }
    }

    async fn sort_keys_match_a_scan_through_writes(embedded: bool) {
        let (indexed, plain, _scratch) = pair_on(embedded).await;
        let batch: Vec<_> = (0..60).map(|n| (Some(oid(n)), attributes(n, 0))).collect();
        on_both(&indexed, &plain, async |objects| {
            objects
                .create_many("test", "user", batch.clone())
                .await
                .unwrap();
        })
        .await;
        // The index path is taken: one key per object per searchable property.
        for property in ["a", "b"] {
            assert_eq!(indexed.store.sort_keys("user", property).await.len(), 60);
        }
        assert!(plain.store.sort_keys("user", "a").await.is_empty());
        every_query_agrees(&indexed, &plain).await;

        // Updates move keys (a value, a null, a removed property), deletes drop them.
        on_both(&indexed, &plain, async |objects| {
            for n in (0..60).step_by(3) {
                objects
                    .replace("test", "user", &oid(n), attributes(n, 5), None)
                    .await
                    .unwrap();
            }
            for n in (1..60).step_by(7) {
                let op = PatchOp::new("remove", "/b", None).unwrap();
                objects
                    .patch("test", "user", &oid(n), vec![op], None)
                    .await
                    .unwrap();
            }
            for n in (2..60).step_by(5) {
                objects.delete("test", "user", &oid(n), None).await.unwrap();
            }
        })
        .await;
        let left = indexed.count("user", "").await.unwrap();
        assert_eq!(left, 48);
        for property in ["a", "b"] {
            assert_eq!(
                indexed.store.sort_keys("user", property).await.len() as u64,
                left
            );
        }
        every_query_agrees(&indexed, &plain).await;
    }

    #[tokio::test]
    async fn a_start_builds_keys_for_new_searchable_properties_and_drops_old_ones() {
        let (indexed, plain) = pair().await;
        let batch: Vec<_> = (0..30).map(|n| (Some(oid(n)), attributes(n, 1))).collect();
        // Written before the index existed: a store from before version 5.
        let before = ManagedObjects::new(
            Arc::new(ManagedSchema::from_json(SCHEMA).unwrap()),
            plain.store.clone(),
            indexed.secrets.clone(),
        );
        before
            .create_many("test", "user", batch.clone())
            .await
            .unwrap();
        before.prepare_indexes().await.unwrap();
        assert_eq!(plain.store.sort_keys("user", "a").await.len(), 30);
        indexed.create_many("test", "user", batch).await.unwrap();
        // Same answers, now both through sort keys.
        every_query_agrees(&indexed, &before).await;

        // `b` no longer searchable, `a` now case-exact: rebuilt, dropped.
        let changed = SCHEMA
            .replace(
                r#""searchable": true },
        "c""#,
                r#""searchable": false },
        "c""#,
            )
            .replace(r#""caseExact": false, "searchable""#, r#""searchable""#);
        let again = ManagedObjects::new(
            Arc::new(ManagedSchema::from_json(&changed).unwrap()),
            plain.store.clone(),
            indexed.secrets.clone(),
        );
        again.prepare_indexes().await.unwrap();
        assert!(plain.store.sort_keys("user", "b").await.is_empty());
        let keys = plain.store.sort_keys("user", "a").await;
        assert_eq!(keys.len(), 30);
        assert!(
            keys.iter().any(|k| k[1]
                .as_str()
                .is_some_and(|v| v.chars().any(char::is_uppercase))),
            "case-exact keys keep their case: {keys:?}"
        );
    }

    /// A value no key can order (a number in a string property, written
    /// before the schema said so) sends queries back to the scan.
    #[tokio::test]
    async fn values_the_keys_cannot_order_fall_back_to_the_scan() {
        let (indexed, plain) = pair().await;
        let mut batch: Vec<_> = (0..20).map(|n| (Some(oid(n)), attributes(n, 2))).collect();
        batch.truncate(20);
        for objects in [&indexed, &plain] {
            objects
                .create_many("test", "user", batch.clone())
                .await
                .unwrap();
            let write = Write {
                data: json!({"a": 5, "b": [1, 2]}).as_object().cloned().unwrap(),
                ..Write::default()
            };
            objects
                .store
                .create_objects(
                    "test",
                    "user",
                    &[NewObject {
                        oid: "num".into(),
                        write,
                    }],
                    &[],
                )
                .await
                .unwrap();
        }
        every_query_agrees(&indexed, &plain).await;
    }
}
