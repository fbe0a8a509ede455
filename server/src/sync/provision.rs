//! Provisioning: bringing a connector's objects in line with managed
//! objects, for a mapping whose source is `managed/<type>` and whose target
//! is `system/<connector>/<objectType>` (managed users → LDAP accounts).
//!
//! Implicit sync (the outbox) and reconciliation both hand a batch of managed
//! ids to [`Provisioner::provision`]. Delivery is state-based: whatever
//! changes led here, the target is made to match the object as it is now, so
//! delivering twice changes nothing the second time. A batch goes through
//! five steps, so that the connector calls of many objects are in flight
//! together while scripts run on this thread only:
//!
//! 1. read the objects, their links and mapped private values in bulk, and
//!    map each to its target attributes (scripts);
//! 2. read the linked or correlated targets (connector, concurrently);
//! 3. work out situation and action, run policy conditions and
//!    `onCreate`/`onUpdate`, and diff against the target (scripts);
//! 4. create, update, rename or delete targets (connector, concurrently);
//! 5. write the links that changed, in one store call.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use futures::StreamExt;
use idm_proto::filter::{self, Filter};
use serde_json::{Map, Value, json};

use super::mapping::{Endpoint, Mapping};
use super::situation::{Action, Situation};
use super::transform::{PropertyMapper, returning_target, truthy};
use crate::connector::{Connector, ConnectorError, ConnectorObject, SourceItem};
use crate::managed::{ManagedError, ManagedObjects};
use crate::script::{CompiledId, Limits, ScriptSource};
use crate::store::{Link, OutboxEntry, Store, StoreError, StoredObject, split_ref};

/// Connector calls in flight at once: ldap3 pipelines them on one connection.
pub const IN_FLIGHT: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error("mapping {mapping}: {message}")]
    Mapping { mapping: String, message: String },
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Managed(#[from] ManagedError),
}

/// One managed object to provision.
#[derive(Debug, Clone)]
pub struct Change {
    pub oid: String,
    /// The attributes of a deleted object, when known.
    pub snapshot: Option<Map<String, Value>>,
    /// An earlier delivery of the object stopped before it was recorded (its
    /// node died): it may have created the target, so the target is read
    /// before anything is created, even where creates go unread.
    pub maybe_delivered: bool,
}

/// What happened to one object.
#[derive(Debug, Clone)]
pub struct Provisioned {
    pub oid: String,
    pub situation: Situation,
    pub action: Action,
    /// The target's uid afterwards (or the one acted on), if any.
    pub target: Option<String>,
    pub result: Result<(), Failure>,
}

/// Why an object could not be provisioned.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub message: String,
    /// The target system was unreachable or slow: the same delivery may work later.
    pub transient: bool,
}

impl Failure {
    fn permanent(message: impl Into<String>) -> Self {
        Failure {
            message: message.into(),
            transient: false,
        }
    }
}

impl From<ConnectorError> for Failure {
    fn from(error: ConnectorError) -> Self {
        Failure {
            transient: error.is_transient(),
            message: error.to_string(),
        }
    }
}

/// An enableSync mapping whose property refers to this mapping's links
/// (`referenceMapping`): when a link here changes, its objects must follow.
#[derive(Debug, Clone, PartialEq)]
pub struct Referrer {
    pub mapping: String,
    pub source_type: String,
    pub property: String,
}

/// Compiled scripts of the mapping other than properties.
#[derive(Default)]
struct Scripts {
    correlation: Option<CompiledId>,
    valid_source: Option<CompiledId>,
    on_create: Option<CompiledId>,
    on_update: Option<CompiledId>,
    conditions: BTreeMap<Situation, CompiledId>,
}

/// Step 1's result for one object.
struct Mapped {
    oid: String,
    /// The managed object as scripts see it (`_id` included); null if gone.
    source: Value,
    exists: bool,
    valid: bool,
    /// Target attributes the mapping wants; a null value removes one.
    wanted: Map<String, Value>,
    link: Option<String>,
    /// A correlation query's filter, when the mapping has one.
    correlation: Option<Filter>,
    /// A failure found while mapping.
    failure: Option<Failure>,
    /// See [`Change::maybe_delivered`].
    maybe_delivered: bool,
}

/// Step 2's result.
struct Found {
    mapped: Mapped,
    target: Option<ConnectorObject>,
    situation: Situation,
    failure: Option<Failure>,
}

/// Step 3's result: what step 4 does.
enum Operation {
    Create(Map<String, Value>),
    Update {
        uid: String,
        changes: Map<String, Value>,
    },
    Delete(String),
    Link(String),
    Unlink,
    Nothing,
}

struct Planned {
    oid: String,
    situation: Situation,
    action: Action,
    linked: Option<String>,
    target: Option<String>,
    operation: Operation,
    failure: Option<Failure>,
    /// What the target holds now (moved here, not copied, once step 3 is
    /// done with it): a plan shows it beside the new values.
    current: Map<String, Value>,
}

/// What provisioning one object would do, changing nothing: a plan's line.
#[derive(Debug, Clone)]
pub struct Preview {
    pub oid: String,
    pub target: Option<String>,
    pub situation: Situation,
    pub action: Action,
    /// Whether the target or the link would change at all.
    pub changes: bool,
    /// Each attribute's value before and after; private ones masked.
    pub attributes: Vec<(String, Value, Value)>,
    pub failure: Option<String>,
}

/// How a plan shows a private value.
pub const MASKED: &str = "********";

/// Provisions one mapping's target. Owns a script engine, so it stays on
/// the thread that made it.
pub struct Provisioner {
    mapping: Arc<Mapping>,
    source_type: String,
    object_type: String,
    connector: Arc<dyn Connector>,
    store: Store,
    objects: ManagedObjects,
    referrers: Vec<Referrer>,
    mapper: PropertyMapper,
    scripts: Scripts,
    /// Mapped source attributes that are private (passwords).
    private_sources: Vec<String>,
    /// An unlinked object is created without reading first: the target is
    /// found by the uid the connector derives (no correlation script), the
    /// policy creates ABSENT and updates FOUND without conditions or
    /// `onUpdate`, so a collision (the entry was there) can turn into that
    /// update. Halves the directory round trips of a first provisioning.
    optimistic_create: bool,
}

impl Provisioner {
    pub fn new(
        mapping: Arc<Mapping>,
        connector: Arc<dyn Connector>,
        store: Store,
        objects: ManagedObjects,
        referrers: Vec<Referrer>,
    ) -> Result<Self, ProvisionError> {
        let error = |message: String| ProvisionError::Mapping {
            mapping: mapping.name.clone(),
            message,
        };
        let (source_type, object_type) = match (&mapping.source, &mapping.target) {
            (Endpoint::Managed { type_name }, Endpoint::System { object_type, .. }) => {
                (type_name.clone(), object_type.clone())
            }
            (source, target) => {
                return Err(error(format!(
                    "provisions managed objects into a connector, not {source} into {target}"
                )));
            }
        };
        let mut mapper =
            PropertyMapper::new(&mapping, Limits::default()).map_err(|e| error(e.to_string()))?;
        let engine = mapper.engine();
        let mut compile = |script: Option<&ScriptSource>| {
            script
                .map(|s| engine.compile(s))
                .transpose()
                .map_err(|e| error(e.to_string()))
        };
        let mut scripts = Scripts {
            correlation: compile(mapping.correlation_query.as_ref())?,
            valid_source: compile(mapping.valid_source.as_ref())?,
            on_create: compile(mapping.on_create.as_ref().map(returning_target).as_ref())?,
            on_update: compile(mapping.on_update.as_ref().map(returning_target).as_ref())?,
            ..Scripts::default()
        };
        for (situation, policy) in &mapping.policies {
            if let Some(id) = compile(policy.condition.as_ref())? {
                scripts.conditions.insert(*situation, id);
            }
        }
        let object_type_schema = objects.schema().get(&source_type)?;
        let private_sources = mapping
            .properties
            .iter()
            .filter_map(|p| p.source.clone())
            .filter(|s| {
                object_type_schema
                    .properties
                    .get(s)
                    .is_some_and(|p| p.private)
            })
            .collect();
        let optimistic_create = mapping.correlation_query.is_none()
            && mapping.on_update.is_none()
            && mapping.action_for(Situation::Absent) == Action::Create
            && mapping.action_for(Situation::Found) == Action::Update
            && !scripts.conditions.contains_key(&Situation::Absent)
            && !scripts.conditions.contains_key(&Situation::Found);
        Ok(Provisioner {
            optimistic_create,
            mapping,
            source_type,
            object_type,
            connector,
            store,
            objects,
            referrers,
            mapper,
            scripts,
            private_sources,
        })
    }

    pub fn connector(&self) -> &Arc<dyn Connector> {
        &self.connector
    }

    pub fn object_type(&self) -> &str {
        &self.object_type
    }

    /// The managed type provisioned.
    pub fn source_type(&self) -> &str {
        &self.source_type
    }

    /// Brings the targets of these managed objects in line with them. A
    /// store error fails the whole batch (nothing is lost: the caller
    /// delivers it again); anything else fails one object.
    ///
    /// The targets are written when this returns; the links that changed are
    /// not, until [`Recorder::record`] (which the outbox joins with
    /// settling its entries, in one transaction). A crash in between loses
    /// nothing: the next delivery finds the targets by their uids.
    pub async fn provision(&mut self, changes: Vec<Change>) -> Result<Delivery, ProvisionError> {
        let prepared = self.prepare(changes).await?;
        Ok(self.applier().apply(prepared).await)
    }

    /// Steps 1 to 3: everything up to the target writes. The outbox runs
    /// them for the next batch while [`Applier::apply`] writes this one.
    #[tracing::instrument(skip_all, fields(mapping = %self.mapping.name, count = changes.len()))]
    pub async fn prepare(&mut self, changes: Vec<Change>) -> Result<Prepared, ProvisionError> {
        let mapped = self.map_sources(changes).await?;
        let found = self.find_targets(mapped).await;
        Ok(Prepared(found.into_iter().map(|f| self.plan(f)).collect()))
    }

    /// What writes this provisioner's targets (step 4); it owns what it needs.
    pub fn applier(&self) -> Applier {
        Applier {
            connector: Arc::clone(&self.connector),
            object_type: self.object_type.clone(),
            store: self.store.clone(),
            mapping: self.mapping.name.clone(),
            optimistic_create: self.optimistic_create,
        }
    }

    /// What records this provisioner's deliveries; it owns what it needs, so
    /// a recording can run while the next batch is provisioned.
    pub fn recorder(&self) -> Recorder {
        Recorder {
            store: self.store.clone(),
            mapping: self.mapping.name.clone(),
            source_type: self.source_type.clone(),
            referrers: self.referrers.clone(),
        }
    }

    fn eval(&mut self, id: CompiledId, bindings: &[(&str, &Value)]) -> Result<Value, Failure> {
        self.mapper
            .engine()
            .eval(id, bindings)
            .map_err(|e| Failure::permanent(format!("mapping {}: {e}", self.mapping.name)))
    }

    /// Step 1: bulk reads and property mapping.
    async fn map_sources(&mut self, changes: Vec<Change>) -> Result<Vec<Mapped>, ProvisionError> {
        let oids: Vec<String> = changes.iter().map(|c| c.oid.clone()).collect();
        let (objects, links) = futures::try_join!(
            self.store.get_objects(&self.source_type, &oids),
            self.store.links_of_sources(&self.mapping.name, &oids),
        )?;
        let mut objects: HashMap<String, StoredObject> =
            objects.into_iter().map(|o| (o.oid.clone(), o)).collect();
        let mut links: HashMap<String, String> =
            links.into_iter().map(|l| (l.source, l.target)).collect();
        let mut private: Vec<(String, Vec<Option<String>>)> = Vec::new();
        for property in &self.private_sources {
            let values = self
                .objects
                .private_values(&self.source_type, property, &oids)
                .await?;
            private.push((property.clone(), values));
        }
        let references = self.references(&objects).await?;

        let mut mapped = Vec::with_capacity(changes.len());
        for (index, change) in changes.into_iter().enumerate() {
            let link = links.remove(&change.oid);
            let Some(object) = objects.remove(&change.oid) else {
                // Gone: deletes need the link (or the last attributes to find it).
                let mut source = change.snapshot.unwrap_or_default();
                source.insert("_id".into(), json!(change.oid));
                let wanted = self
                    .map_values(&Value::Object(source), &references)
                    .unwrap_or_default();
                mapped.push(Mapped {
                    oid: change.oid,
                    source: Value::Null,
                    exists: false,
                    valid: false,
                    wanted,
                    link,
                    correlation: None,
                    failure: None,
                    maybe_delivered: change.maybe_delivered,
                });
                continue;
            };
            let mut source = object.data;
            for (property, values) in &private {
                if let Some(Some(value)) = values.get(index) {
                    source.insert(property.clone(), json!(value));
                }
            }
            source.insert("_id".into(), json!(change.oid));
            let source_value = Value::Object(source);
            let mut failure = None;
            let valid = match self.scripts.valid_source {
                Some(script) => match self.eval(script, &[("source", &source_value)]) {
                    Ok(v) => truthy(&v),
                    Err(f) => {
                        failure = Some(f);
                        false
                    }
                },
                None => true,
            };
            let wanted = match self.map_values(&source_value, &references) {
                Ok(wanted) => wanted,
                Err(f) => {
                    failure = failure.or(Some(f));
                    Map::new()
                }
            };
            let correlation = match (&link, self.scripts.correlation, &failure) {
                (None, Some(script), None) => {
                    match self.correlation_filter(script, &source_value) {
                        Ok(filter) => Some(filter),
                        Err(f) => {
                            failure = Some(f);
                            None
                        }
                    }
                }
                _ => None,
            };
            mapped.push(Mapped {
                oid: change.oid,
                source: source_value,
                exists: true,
                valid,
                wanted,
                link,
                correlation,
                failure,
                maybe_delivered: change.maybe_delivered,
            });
        }
        Ok(mapped)
    }

    /// The target attributes for a source: every mapped attribute present
    /// (null where the source has no value, so a cleared value is removed),
    /// references turned into linked target ids.
    fn map_values(
        &mut self,
        source: &Value,
        references: &HashMap<(String, String), String>,
    ) -> Result<Map<String, Value>, Failure> {
        let mut wanted = self
            .mapper
            .target_values(&self.mapping.name, source)
            .map_err(|e| Failure::permanent(e.to_string()))?;
        for property in &self.mapping.properties {
            let entry = wanted.entry(property.target.clone()).or_insert(Value::Null);
            if let Some(via) = &property.reference_mapping {
                *entry = linked_targets(entry, via, references);
            }
        }
        Ok(wanted)
    }

    /// For every property with a `referenceMapping`, the linked target id of
    /// each referenced object: `(mapping, managed ref)` → target id.
    async fn references(
        &self,
        objects: &HashMap<String, StoredObject>,
    ) -> Result<HashMap<(String, String), String>, ProvisionError> {
        let mut wanted: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for property in &self.mapping.properties {
            let (Some(via), Some(source)) = (&property.reference_mapping, &property.source) else {
                continue;
            };
            let ids = wanted.entry(via.as_str()).or_default();
            for object in objects.values() {
                for reference in references_in(object.data.get(source)) {
                    if let Some((_, id)) = split_ref(&reference) {
                        ids.push(id.to_string());
                    }
                }
            }
        }
        let mut found = HashMap::new();
        for (via, mut ids) in wanted {
            ids.sort();
            ids.dedup();
            for link in self.store.links_of_sources(via, &ids).await? {
                found.insert((via.to_string(), link.source), link.target);
            }
        }
        Ok(found)
    }

    fn correlation_filter(
        &mut self,
        script: CompiledId,
        source: &Value,
    ) -> Result<Filter, Failure> {
        let query = self.eval(script, &[("source", source)])?;
        let text = query
            .get("_queryFilter")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                Failure::permanent(format!(
                    "mapping {}: correlationQuery must return {{\"_queryFilter\": \"…\"}}, got {query}",
                    self.mapping.name
                ))
            })?;
        filter::parse(text).map_err(|e| {
            Failure::permanent(format!(
                "mapping {}: correlationQuery filter \"{text}\": {} at {}",
                self.mapping.name, e.message, e.position
            ))
        })
    }

    /// Step 2: read targets, concurrently, and name each situation.
    async fn find_targets(&self, mapped: Vec<Mapped>) -> Vec<Found> {
        futures::stream::iter(mapped)
            .map(|m| self.find_target(m))
            .buffered(IN_FLIGHT)
            .collect()
            .await
    }

    async fn find_target(&self, mapped: Mapped) -> Found {
        let found = |mapped, target, situation, failure| Found {
            mapped,
            target,
            situation,
            failure,
        };
        if let Some(failure) = mapped.failure.clone() {
            let situation = if mapped.exists {
                Situation::Absent
            } else {
                Situation::AllGone
            };
            return found(mapped, None, situation, Some(failure));
        }
        let connector = &self.connector;
        let object_type = self.object_type.as_str();
        if let Some(uid) = &mapped.link {
            let target = match connector.get(object_type, uid).await {
                Ok(target) => target,
                Err(e) => return found(mapped, None, Situation::Confirmed, Some(e.into())),
            };
            let situation = match (mapped.exists, mapped.valid, target.is_some()) {
                (true, true, true) => Situation::Confirmed,
                (true, true, false) => Situation::Missing,
                (true, false, _) => Situation::Unqualified,
                (false, _, true) => Situation::SourceMissing,
                (false, _, false) => Situation::LinkOnly,
            };
            return found(mapped, target, situation, None);
        }
        if !mapped.exists {
            return found(mapped, None, Situation::AllGone, None);
        }
        if self.optimistic_create && mapped.valid && !mapped.maybe_delivered {
            return found(mapped, None, Situation::Absent, None);
        }
        let candidates = match self.correlate(&mapped).await {
            Ok(candidates) => candidates,
            Err(e) => return found(mapped, None, Situation::Absent, Some(e.into())),
        };
        if !mapped.valid {
            let situation = if candidates.is_empty() {
                Situation::SourceIgnored
            } else {
                Situation::Unqualified
            };
            return found(mapped, candidates.into_iter().next(), situation, None);
        }
        if candidates.len() > 1 {
            return found(mapped, None, Situation::Ambiguous, None);
        }
        let Some(target) = candidates.into_iter().next() else {
            return found(mapped, None, Situation::Absent, None);
        };
        let situation = match self
            .store
            .links_to_targets(&self.mapping.name, std::slice::from_ref(&target.uid))
            .await
        {
            Ok(links) if links.iter().any(|l| l.source != mapped.oid) => {
                Situation::FoundAlreadyLinked
            }
            Ok(_) => Situation::Found,
            Err(e) => {
                return found(
                    mapped,
                    None,
                    Situation::Found,
                    Some(Failure::permanent(e.to_string())),
                );
            }
        };
        found(mapped, Some(target), situation, None)
    }

    /// The targets a source without a link correlates to (at most two are
    /// read: two already make it AMBIGUOUS).
    async fn correlate(&self, mapped: &Mapped) -> Result<Vec<ConnectorObject>, ConnectorError> {
        let connector = &self.connector;
        let object_type = self.object_type.as_str();
        let Some(filter) = &mapped.correlation else {
            return match connector.uid_for(object_type, &without_nulls(&mapped.wanted)) {
                Some(uid) => Ok(connector
                    .get(object_type, &uid)
                    .await?
                    .into_iter()
                    .collect()),
                None => Ok(Vec::new()),
            };
        };
        let mut hits = Vec::new();
        let mut stream = connector.search(object_type, filter);
        while let Some(item) = stream.next().await {
            if let SourceItem::Object(object) = item? {
                hits.push(object);
            }
            if hits.len() > 1 {
                break;
            }
        }
        Ok(hits)
    }

    /// Step 3: the action, its scripts and the exact change.
    fn plan(&mut self, found: Found) -> Planned {
        let Found {
            mapped,
            target,
            situation,
            failure,
        } = found;
        let target_value = target.as_ref().map_or(Value::Null, |t| {
            let mut object = t.attributes.clone();
            object.insert("_id".into(), json!(t.uid));
            Value::Object(object)
        });
        let mut planned = Planned {
            oid: mapped.oid.clone(),
            situation,
            action: Action::Exception,
            linked: mapped.link.clone(),
            target: target
                .as_ref()
                .map(|t| t.uid.clone())
                .or(mapped.link.clone()),
            operation: Operation::Nothing,
            failure,
            current: Map::new(),
        };
        if planned.failure.is_some() {
            return planned;
        }
        let mut action = self.mapping.action_for(situation);
        if let Some(condition) = self.scripts.conditions.get(&situation).copied() {
            match self.eval(
                condition,
                &[
                    ("source", &mapped.source),
                    ("target", &target_value),
                    ("situation", &json!(situation.name())),
                ],
            ) {
                Ok(v) if truthy(&v) => {}
                Ok(_) => action = situation.default_action(),
                Err(f) => {
                    planned.failure = Some(f);
                    return planned;
                }
            }
        }
        planned.action = action;
        let result = match (action, &target) {
            (Action::Create, None) if mapped.exists => self
                .hook(
                    self.scripts.on_create,
                    &mapped.source,
                    without_nulls(&mapped.wanted),
                )
                .map(Operation::Create),
            (Action::Update, Some(target)) if mapped.exists => self
                .hook(
                    self.scripts.on_update,
                    &mapped.source,
                    mapped.wanted.clone(),
                )
                .map(|wanted| Operation::Update {
                    uid: target.uid.clone(),
                    changes: changes(self.connector.as_ref(), &self.object_type, target, &wanted),
                }),
            (Action::Delete, Some(target)) => Ok(Operation::Delete(target.uid.clone())),
            (Action::Link, Some(target)) if mapped.exists => {
                Ok(Operation::Link(target.uid.clone()))
            }
            (Action::Unlink, _) if mapped.link.is_some() => Ok(Operation::Unlink),
            (Action::Exception, _) => Err(Failure::permanent(format!(
                "{situation}: the mapping's policy is EXCEPTION"
            ))),
            (
                Action::Create | Action::Update | Action::Delete | Action::Link | Action::Unlink,
                _,
            ) => Err(Failure::permanent(format!(
                "{situation}: {} does not apply here",
                action.name()
            ))),
            _ => Ok(Operation::Nothing),
        };
        match result {
            Ok(operation) => planned.operation = operation,
            Err(f) => planned.failure = Some(f),
        }
        if let Some(target) = target {
            planned.current = target.attributes;
        }
        planned
    }

    /// Steps 1 to 3 without step 4: what provisioning `changes` would do,
    /// reading every target (no optimistic create: a plan must know
    /// whether the entry is there), writing nothing.
    pub async fn preview(&mut self, changes: Vec<Change>) -> Result<Vec<Preview>, ProvisionError> {
        let optimistic = std::mem::replace(&mut self.optimistic_create, false);
        let prepared = self.prepare(changes).await;
        self.optimistic_create = optimistic;
        let private_targets: Vec<&str> = self
            .mapping
            .properties
            .iter()
            .filter(|p| {
                p.source
                    .as_ref()
                    .is_some_and(|s| self.private_sources.contains(s))
            })
            .map(|p| p.target.as_str())
            .collect();
        let shown = |attribute: &str, value: Value| {
            let private = private_targets.contains(&attribute)
                || crate::connector::is_password_attribute(attribute);
            if private && !value.is_null() {
                json!(MASKED)
            } else {
                value
            }
        };
        Ok(prepared?
            .0
            .into_iter()
            .map(|planned| {
                let mut current = planned.current;
                let (changes, attributes) = match planned.operation {
                    Operation::Create(values) => (
                        true,
                        values
                            .into_iter()
                            .map(|(k, after)| (k, Value::Null, after))
                            .collect(),
                    ),
                    Operation::Update { changes, .. } => (
                        !changes.is_empty() || planned.linked.is_none(),
                        changes
                            .into_iter()
                            .map(|(k, after)| {
                                let was = current.remove(&k).unwrap_or(Value::Null);
                                (k, was, after)
                            })
                            .collect(),
                    ),
                    Operation::Delete(_) => (
                        true,
                        current
                            .into_iter()
                            .map(|(k, was)| (k, was, Value::Null))
                            .collect(),
                    ),
                    Operation::Link(_) => (planned.linked != planned.target, Vec::new()),
                    Operation::Unlink => (true, Vec::new()),
                    Operation::Nothing => (false, Vec::new()),
                };
                Preview {
                    oid: planned.oid,
                    target: planned.target,
                    situation: planned.situation,
                    action: planned.action,
                    changes,
                    attributes: attributes
                        .into_iter()
                        .map(|(k, was, after)| {
                            let (was, after) = (shown(&k, was), shown(&k, after));
                            (k, was, after)
                        })
                        .collect(),
                    failure: planned.failure.map(|f| f.message),
                }
            })
            .collect())
    }

    /// Runs `onCreate`/`onUpdate`, which may change `target`.
    fn hook(
        &mut self,
        script: Option<CompiledId>,
        source: &Value,
        target: Map<String, Value>,
    ) -> Result<Map<String, Value>, Failure> {
        let Some(script) = script else {
            return Ok(target);
        };
        let changed = self.eval(
            script,
            &[("source", source), ("target", &Value::Object(target))],
        )?;
        match changed {
            Value::Object(map) => Ok(map),
            other => Err(Failure::permanent(format!(
                "mapping {}: onCreate/onUpdate left target as {other}",
                self.mapping.name
            ))),
        }
    }
}

/// A batch planned by [`Provisioner::prepare`], for [`Applier::apply`].
pub struct Prepared(Vec<Planned>);

/// Step 4, apart from the provisioner: the target writes of a batch.
#[derive(Clone)]
pub struct Applier {
    connector: Arc<dyn Connector>,
    object_type: String,
    store: Store,
    mapping: String,
    optimistic_create: bool,
}

impl Applier {
    /// The attributes whose value differs from what the target holds.
    fn changes(&self, target: &ConnectorObject, wanted: &Map<String, Value>) -> Map<String, Value> {
        changes(self.connector.as_ref(), &self.object_type, target, wanted)
    }

    /// Step 4: the connector calls, concurrently.
    pub async fn apply(self, prepared: Prepared) -> Delivery {
        let done: Vec<(Provisioned, LinkChange)> = futures::stream::iter(prepared.0)
            .map(|p| self.apply_one(p))
            .buffered(IN_FLIGHT)
            .collect()
            .await;
        let mut delivery = Delivery::default();
        for (provisioned, change) in done {
            match change {
                LinkChange::Put(target) => delivery.put.push(self.link(&provisioned, target)),
                LinkChange::Move(target) => delivery.moved.push(self.link(&provisioned, target)),
                LinkChange::Remove => delivery.removed.push(provisioned.oid.clone()),
                LinkChange::Keep => {}
            }
            delivery.provisioned.push(provisioned);
        }
        delivery
    }

    fn link(&self, provisioned: &Provisioned, target: String) -> Link {
        Link {
            mapping: self.mapping.clone(),
            source: provisioned.oid.clone(),
            target,
        }
    }

    async fn apply_one(&self, planned: Planned) -> (Provisioned, LinkChange) {
        let connector = &self.connector;
        let object_type = self.object_type.as_str();
        let mut situation = planned.situation;
        let mut action = planned.action;
        let outcome: Result<(Option<String>, LinkChange), Failure> =
            match (planned.failure, planned.operation) {
                (Some(failure), _) => Err(failure),
                (None, Operation::Create(attributes)) => {
                    match connector.create(object_type, &attributes).await {
                        Ok(uid) => Ok((Some(uid.clone()), LinkChange::Put(uid))),
                        Err(ConnectorError::AlreadyExists { .. }) if self.optimistic_create => {
                            // Created unread (see `optimistic_create`): it was there after all.
                            situation = Situation::Found;
                            action = Action::Update;
                            self.update_found(&planned.oid, &attributes).await
                        }
                        Err(e) => Err(e.into()),
                    }
                }
                (None, Operation::Update { uid, changes }) => {
                    let after = if changes.is_empty() {
                        Ok(uid)
                    } else {
                        connector.update(object_type, &uid, &changes).await
                    };
                    after
                        .map(|after| {
                            let link = if planned.linked.as_deref() == Some(after.as_str()) {
                                LinkChange::Keep
                            } else {
                                LinkChange::Put(after.clone())
                            };
                            (Some(after), link)
                        })
                        .map_err(Failure::from)
                }
                (None, Operation::Delete(uid)) => connector
                    .delete(object_type, &uid)
                    .await
                    .map(|()| (Some(uid), LinkChange::Remove))
                    .map_err(Failure::from),
                (None, Operation::Link(uid)) => Ok((Some(uid.clone()), LinkChange::Put(uid))),
                (None, Operation::Unlink) => Ok((planned.target.clone(), LinkChange::Remove)),
                (None, Operation::Nothing) => Ok((planned.target.clone(), LinkChange::Keep)),
            };
        let (target, link, result) = match outcome {
            Ok((target, link)) => (target, link, Ok(())),
            Err(failure) => (planned.target, LinkChange::Keep, Err(failure)),
        };
        let link = match (link, &planned.linked) {
            (LinkChange::Put(target), Some(_)) => LinkChange::Move(target),
            (link, _) => link,
        };
        (
            Provisioned {
                oid: planned.oid,
                situation,
                action,
                target,
                result,
            },
            link,
        )
    }

    /// FOUND after an optimistic create collided: the entry that exists is
    /// brought in line and linked, unless another object is linked to it.
    async fn update_found(
        &self,
        oid: &str,
        attributes: &Map<String, Value>,
    ) -> Result<(Option<String>, LinkChange), Failure> {
        let object_type = self.object_type.as_str();
        let uid = self.connector.uid_for(object_type, attributes);
        let target = match uid {
            Some(uid) => self.connector.get(object_type, &uid).await?,
            None => None,
        }
        .ok_or_else(|| Failure::permanent("the target exists but cannot be read back"))?;
        let linked = self
            .store
            .links_to_targets(&self.mapping, std::slice::from_ref(&target.uid))
            .await
            .map_err(|e| Failure::permanent(e.to_string()))?;
        if linked.iter().any(|l| l.source != oid) {
            return Err(Failure::permanent(format!(
                "{}: {} is linked to another object",
                Situation::FoundAlreadyLinked,
                target.uid
            )));
        }
        tracing::debug!(object = %oid, target = %target.uid, "the target existed already: FOUND, updating and linking it");
        let changes = self.changes(&target, attributes);
        let after = if changes.is_empty() {
            target.uid
        } else {
            self.connector
                .update(object_type, &target.uid, &changes)
                .await?
        };
        Ok((Some(after.clone()), LinkChange::Put(after)))
    }
}

/// The attributes whose value differs from what the target holds.
fn changes(
    connector: &dyn Connector,
    object_type: &str,
    target: &ConnectorObject,
    wanted: &Map<String, Value>,
) -> Map<String, Value> {
    wanted
        .iter()
        .filter(|(attribute, value)| {
            if attribute.as_str() == "dn" {
                // The entry's DN: its uid, unless the connector names objects
                // by another attribute and reads the DN as `dn`.
                let current = target
                    .attributes
                    .get("dn")
                    .and_then(Value::as_str)
                    .unwrap_or(&target.uid);
                return value
                    .as_str()
                    .is_some_and(|dn| !dn.eq_ignore_ascii_case(current));
            }
            !connector.same_value(
                object_type,
                attribute,
                target.attributes.get(attribute.as_str()),
                value,
            )
        })
        .map(|(a, v)| (a.clone(), v.clone()))
        .collect()
}

/// Step 5, apart from the provisioner: writes a delivery's link changes.
#[derive(Clone)]
pub struct Recorder {
    store: Store,
    mapping: String,
    source_type: String,
    referrers: Vec<Referrer>,
}

impl Recorder {
    /// Writes a delivery's link changes, settling `settled` outbox entries in
    /// the same transaction, then queues the objects that refer to moved links.
    pub async fn record(
        &self,
        delivery: &Delivery,
        settled: &[&OutboxEntry],
    ) -> Result<(), ProvisionError> {
        self.store
            .record_delivery(
                &self.mapping,
                &delivery.put,
                &delivery.moved,
                &delivery.removed,
                settled,
            )
            .await?;
        let moved: Vec<String> = delivery
            .put
            .iter()
            .chain(&delivery.moved)
            .map(|l| &l.source)
            .chain(&delivery.removed)
            .map(|oid| crate::store::object_ref(&self.source_type, oid))
            .collect();
        self.notify_referrers(&moved).await
    }

    /// Objects whose targets name these objects' targets (groups naming
    /// member DNs) are provisioned again through their own outbox.
    async fn notify_referrers(&self, moved: &[String]) -> Result<(), ProvisionError> {
        if self.referrers.is_empty() || moved.is_empty() {
            return Ok(());
        }
        let relations = self.store.relations_to(moved).await?;
        for referrer in &self.referrers {
            let mut holders: Vec<String> = relations
                .iter()
                .filter(|r| r.property == referrer.property)
                .filter_map(|r| split_ref(&r.source))
                .filter(|(type_name, _)| *type_name == referrer.source_type)
                .map(|(_, id)| id.to_string())
                .collect();
            holders.sort();
            holders.dedup();
            self.store
                .enqueue(&referrer.mapping, &referrer.source_type, &holders, "update")
                .await?;
        }
        Ok(())
    }
}

/// What a batch did: per object, and the link changes still to record.
#[derive(Debug, Default)]
pub struct Delivery {
    pub provisioned: Vec<Provisioned>,
    /// Links of objects that had none.
    put: Vec<Link>,
    /// Links that now point elsewhere (a renamed or re-created target).
    moved: Vec<Link>,
    removed: Vec<String>,
}

/// How a provisioned object's link changes.
#[derive(Debug, Clone, PartialEq)]
enum LinkChange {
    Keep,
    /// A link where there was none.
    Put(String),
    /// The link points to another target now.
    Move(String),
    Remove,
}

fn without_nulls(wanted: &Map<String, Value>) -> Map<String, Value> {
    wanted
        .iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The `managed/<type>/<id>` references in a relationship value.
fn references_in(value: Option<&Value>) -> Vec<String> {
    let one = |v: &Value| {
        v.get("_ref")
            .and_then(Value::as_str)
            .or_else(|| v.as_str())
            .map(str::to_string)
    };
    match value {
        Some(Value::Array(items)) => items.iter().filter_map(one).collect(),
        Some(other) => one(other).into_iter().collect(),
        None => Vec::new(),
    }
}

/// A relationship value with each reference replaced by its linked target id.
fn linked_targets(value: &Value, via: &str, links: &HashMap<(String, String), String>) -> Value {
    let target_of = |reference: &str| {
        split_ref(reference)
            .and_then(|(_, id)| links.get(&(via.to_string(), id.to_string())).cloned())
    };
    match value {
        Value::Array(_) => Value::Array(
            references_in(Some(value))
                .iter()
                .filter_map(|r| target_of(r))
                .map(Value::String)
                .collect(),
        ),
        Value::Null => Value::Null,
        other => references_in(Some(other))
            .first()
            .and_then(|r| target_of(r))
            .map_or(Value::Null, Value::String),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn references_become_the_linked_targets_and_unlinked_ones_wait() {
        let links = HashMap::from([
            (
                ("users".to_string(), "a".to_string()),
                "uid=a,dc=x".to_string(),
            ),
            (
                ("users".to_string(), "b".to_string()),
                "uid=b,dc=x".to_string(),
            ),
            (
                ("other".to_string(), "c".to_string()),
                "uid=c,dc=x".to_string(),
            ),
        ]);
        let members =
            json!([{"_ref": "managed/user/a"}, "managed/user/c", {"_ref": "managed/user/b"}]);
        assert_eq!(
            linked_targets(&members, "users", &links),
            json!(["uid=a,dc=x", "uid=b,dc=x"])
        );
        assert_eq!(
            linked_targets(&json!({"_ref": "managed/user/b"}), "users", &links),
            json!("uid=b,dc=x")
        );
        assert_eq!(
            linked_targets(&json!({"_ref": "managed/user/zz"}), "users", &links),
            Value::Null
        );
        assert_eq!(linked_targets(&json!([]), "users", &links), json!([]));
    }
}
