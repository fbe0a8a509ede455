//! A reconciliation worker: for a batch of source records it reads their
//! links and targets in bulk, runs the mapping's scripts, works out each
//! record's situation and action, and applies them (creates batched in one
//! transaction with their links). The target phase runs on a worker too.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use idm_proto::filter::{self, CompareOp, Filter};
use serde_json::{Map, Value, json};
use tokio::sync::watch;

use super::ReconError;
use super::run::{BATCH, PAGE, PlannedChange, PropertyChange, Recon, ReconTask};
use crate::connector::ConnectorObject;
use crate::managed::{ManagedError, PatchOp, PropertyKind, Query};
use crate::script::{CompiledId, Limits, ScriptSource};
use crate::store::{Link, ReconFailureRecord, StoredObject};
use crate::sync::provision::MASKED;
use crate::sync::transform::{returning_target, truthy};
use crate::sync::{Action, PropertyMapper, Situation};

pub(super) struct Worker {
    recon: Arc<Recon>,
    mapper: PropertyMapper,
    scripts: Scripts,
}

/// The mapping's scripts other than properties, compiled on this worker.
#[derive(Default)]
struct Scripts {
    correlation: Option<CompiledId>,
    valid_source: Option<CompiledId>,
    valid_target: Option<CompiledId>,
    on_create: Option<CompiledId>,
    on_update: Option<CompiledId>,
    on_link: Option<CompiledId>,
    conditions: BTreeMap<Situation, CompiledId>,
    post_actions: BTreeMap<Situation, CompiledId>,
}

/// A source record ready for a decision.
struct SourceRecord {
    uid: String,
    line: Option<u64>,
    /// The record as scripts see it, with `_id`.
    object: Value,
    /// The target attributes its properties map to (empty when not needed).
    values: Map<String, Value>,
}

/// What to do about one source record, link or target.
struct Decision {
    source: Option<SourceRecord>,
    /// The source id a link or a failure refers to.
    source_id: Option<String>,
    situation: Situation,
    action: Action,
    /// The target, when it exists.
    target: Option<StoredObject>,
    /// The linked or correlated target id, existing or not.
    target_id: Option<String>,
    linked: bool,
    /// Why an EXCEPTION was raised.
    detail: String,
}

/// How a correlation query finds its candidates.
enum Lookup {
    Id(String),
    Unique { property: String, key: String },
    Query(String),
}

fn failure(decision: &Decision, reason: impl Into<String>) -> ReconFailureRecord {
    ReconFailureRecord {
        source_id: decision.source_id.clone(),
        target_id: decision.target_id.clone(),
        line: decision.source.as_ref().and_then(|s| s.line),
        situation: Some(decision.situation.name().to_string()),
        action: Some(decision.action.name().to_string()),
        reason: reason.into(),
    }
}

/// Store failures end the run; everything else fails only its record.
fn record_error(error: ManagedError) -> Result<String, ReconError> {
    match error {
        ManagedError::Store(e) => Err(ReconError::Store(e)),
        ManagedError::Secret(e) => Err(ReconError::Internal(e.to_string())),
        other => Ok(other.to_string()),
    }
}

/// The `source` and `target` bindings of a policy or hook script (null when absent).
fn script_objects(source: Option<&SourceRecord>, target: Option<&StoredObject>) -> (Value, Value) {
    (
        source.map_or(Value::Null, |s| s.object.clone()),
        target.map_or(Value::Null, |t| with_id(&t.data, &t.oid)),
    )
}

fn with_id(attributes: &Map<String, Value>, id: &str) -> Value {
    let mut object = attributes.clone();
    object.insert("_id".into(), json!(id));
    Value::Object(object)
}

impl Worker {
    pub fn new(recon: Arc<Recon>) -> Result<Self, ReconError> {
        let mapping = Arc::clone(&recon.mapping);
        let mut mapper = PropertyMapper::new(&mapping, Limits::default())
            .map_err(|e| ReconError::Internal(e.to_string()))?;
        let engine = mapper.engine();
        let mut compile = |script: Option<&ScriptSource>| {
            script
                .map(|s| engine.compile(s))
                .transpose()
                .map_err(|e| ReconError::Internal(e.to_string()))
        };
        let mut scripts = Scripts {
            correlation: compile(mapping.correlation_query.as_ref())?,
            valid_source: compile(mapping.valid_source.as_ref())?,
            valid_target: compile(mapping.valid_target.as_ref())?,
            on_create: compile(mapping.on_create.as_ref().map(returning_target).as_ref())?,
            on_update: compile(mapping.on_update.as_ref().map(returning_target).as_ref())?,
            on_link: compile(mapping.on_link.as_ref())?,
            ..Scripts::default()
        };
        for (situation, policy) in &mapping.policies {
            if let Some(id) = compile(policy.condition.as_ref())? {
                scripts.conditions.insert(*situation, id);
            }
            if let Some(id) = compile(policy.post_action.as_ref())? {
                scripts.post_actions.insert(*situation, id);
            }
        }
        Ok(Worker {
            recon,
            mapper,
            scripts,
        })
    }

    pub fn recon(&self) -> &Recon {
        &self.recon
    }

    fn eval(&mut self, id: CompiledId, bindings: &[(&str, &Value)]) -> Result<Value, String> {
        self.mapper
            .engine()
            .eval(id, bindings)
            .map_err(|e| format!("mapping {}: {e}", self.recon.mapping.name))
    }

    /// The source phase for one batch.
    pub async fn source_batch(&mut self, rows: Vec<ConnectorObject>) -> Result<(), ReconError> {
        let recon = Arc::clone(&self.recon);
        let mapping = &recon.mapping.name;
        let ids: Vec<String> = rows.iter().map(|r| r.uid.clone()).collect();
        recon.mark_sources(&ids);
        let links: HashMap<String, String> = recon
            .timed(
                ReconTask::LinkQuery,
                recon.store.links_of_sources(mapping, &ids),
            )
            .await?
            .into_iter()
            .map(|l| (l.source, l.target))
            .collect();
        let linked_targets: Vec<String> = links.values().cloned().collect();
        recon.mark_targets(&linked_targets);
        let mut targets = self.targets(&linked_targets).await?;

        // Scripts: validity, property values, correlation queries.
        let mut decisions = Vec::with_capacity(rows.len());
        let mut correlating: Vec<(SourceRecord, Lookup)> = Vec::new();
        for row in rows {
            let mut object = row.attributes;
            object.insert("_id".into(), json!(row.uid));
            let object = Value::Object(object);
            let link = links.get(&row.uid).cloned();
            let record = SourceRecord {
                uid: row.uid,
                line: row.line,
                object,
                values: Map::new(),
            };
            let fail_script = |record: &SourceRecord, reason: String| ReconFailureRecord {
                source_id: Some(record.uid.clone()),
                target_id: link.clone(),
                line: record.line,
                reason,
                ..ReconFailureRecord::default()
            };
            let valid = match self.scripts.valid_source {
                Some(id) => {
                    match self.eval(
                        id,
                        &[("source", &record.object), ("object", &record.object)],
                    ) {
                        Ok(v) => truthy(&v),
                        Err(reason) => {
                            recon.fail(fail_script(&record, reason));
                            continue;
                        }
                    }
                }
                None => true,
            };
            if !valid {
                let situation = if link.is_some() {
                    Situation::Unqualified
                } else {
                    Situation::SourceIgnored
                };
                let target = link.as_ref().and_then(|t| targets.remove(t));
                decisions.push(self.decide(Some(record), situation, target, link, "")?);
                continue;
            }
            let mut record = record;
            match self.mapper.target_values(mapping, &record.object) {
                Ok(values) => record.values = values,
                Err(e) => {
                    recon.fail(fail_script(&record, e.to_string()));
                    continue;
                }
            }
            if let Some(target_id) = link {
                let target = targets.remove(&target_id);
                let situation = if target.is_some() {
                    Situation::Confirmed
                } else {
                    Situation::Missing
                };
                let detail = if target.is_none() {
                    format!("the linked target {target_id} is gone")
                } else {
                    String::new()
                };
                decisions.push(self.decide(
                    Some(record),
                    situation,
                    target,
                    Some(target_id),
                    &detail,
                )?);
                continue;
            }
            let Some(correlation) = self.scripts.correlation else {
                decisions.push(self.decide(Some(record), Situation::Absent, None, None, "")?);
                continue;
            };
            let lookup = self
                .eval(
                    correlation,
                    &[("source", &record.object), ("object", &record.object)],
                )
                .and_then(|query| self.lookup(&query));
            match lookup {
                Ok(lookup) => correlating.push((record, lookup)),
                Err(reason) => recon.fail(fail_script(&record, reason)),
            }
        }

        // Correlation, in bulk where the query pins an id or a unique value.
        let (candidates, fetched) = self.correlate(&correlating).await?;
        targets.extend(fetched);
        let found: Vec<String> = candidates
            .iter()
            .filter_map(|c| c.as_ref().ok())
            .filter(|ids| ids.len() == 1)
            .flatten()
            .cloned()
            .collect();
        recon.mark_targets(&found);
        let unread: Vec<String> = found
            .iter()
            .filter(|id| !targets.contains_key(*id))
            .cloned()
            .collect();
        targets.extend(self.targets(&unread).await?);
        let claimed: HashMap<String, String> = recon
            .timed(
                ReconTask::LinkQuery,
                recon.store.links_to_targets(mapping, &found),
            )
            .await?
            .into_iter()
            .map(|l| (l.target, l.source))
            .collect();
        for ((record, _), candidates) in correlating.into_iter().zip(candidates) {
            let ids = match candidates {
                Ok(ids) => ids,
                Err(reason) => {
                    recon.fail(ReconFailureRecord {
                        source_id: Some(record.uid.clone()),
                        line: record.line,
                        reason,
                        ..ReconFailureRecord::default()
                    });
                    continue;
                }
            };
            let decision = match ids.as_slice() {
                [] => self.decide(Some(record), Situation::Absent, None, None, "")?,
                [id] => {
                    let target = targets.get(id).cloned();
                    match claimed.get(id) {
                        Some(other) => {
                            let detail =
                                format!("the target {id} is already linked to source {other}");
                            self.decide(
                                Some(record),
                                Situation::FoundAlreadyLinked,
                                target,
                                Some(id.clone()),
                                &detail,
                            )?
                        }
                        None => self.decide(
                            Some(record),
                            Situation::Found,
                            target,
                            Some(id.clone()),
                            "",
                        )?,
                    }
                }
                many => {
                    let detail = format!(
                        "the correlation query matched {} targets: {}",
                        many.len(),
                        many.join(", ")
                    );
                    self.decide(Some(record), Situation::Ambiguous, None, None, &detail)?
                }
            };
            decisions.push(decision);
        }

        self.settle_private_values(&mut decisions).await?;
        let mut creates = Vec::new();
        for decision in decisions {
            if decision.action == Action::Create && self.applies(&decision) {
                creates.push(decision);
            } else {
                self.act(decision).await?;
            }
        }
        self.create(creates).await?;
        recon.update(|r| r.source.processed += i64::try_from(ids.len()).unwrap_or(i64::MAX));
        Ok(())
    }

    /// The target phase's first walk: links whose source is gone. Links are
    /// walked a page at a time ([`PAGE`] ids), so memory stays bounded
    /// whatever the mapping's size; only the unseen ids of a page are looked
    /// at, in batches.
    pub async fn orphaned_links_walk(&mut self) -> Result<(), ReconError> {
        let recon = Arc::clone(&self.recon);
        let mapping = recon.mapping.name.clone();
        let links = recon.store.count_links(&mapping).await?;
        recon.update(|r| r.links.total = i64::try_from(links).unwrap_or(i64::MAX));
        let mut after: Option<String> = None;
        loop {
            let page = recon
                .timed(
                    ReconTask::LinkQuery,
                    recon
                        .store
                        .link_sources_page(&mapping, after.as_deref(), PAGE),
                )
                .await?;
            let Some(last) = page.last() else { break };
            after = Some(last.clone());
            let read = page.len();
            let orphans: Vec<String> = page
                .into_iter()
                .filter(|source| !recon.source_seen(source))
                .collect();
            let seen = i64::try_from(read - orphans.len()).unwrap_or(i64::MAX);
            recon.update(|r| r.links.processed += seen);
            for chunk in orphans.chunks(BATCH) {
                if recon.is_cancelled() {
                    return Ok(());
                }
                // Only an orphan's link is read whole: its target decides.
                let links: Vec<(String, String)> = recon
                    .timed(
                        ReconTask::LinkQuery,
                        recon.store.links_of_sources(&mapping, chunk),
                    )
                    .await?
                    .into_iter()
                    .map(|l| (l.source, l.target))
                    .collect();
                self.orphaned_links(&links).await?;
                let done = i64::try_from(chunk.len()).unwrap_or(i64::MAX);
                recon.update(|r| r.links.processed += done);
            }
        }
        Ok(())
    }

    /// The target phase's second walk: targets no source reached, a page at
    /// a time like the links. It may run beside [`Self::orphaned_links_walk`]:
    /// an orphaned link's action settles its target (it marks it seen, and
    /// may unlink or delete it), so the first page holding an unseen target
    /// waits for `links_walked` and is filtered again; a run that changed
    /// nothing walks both side by side to the end.
    pub async fn unreached_targets_walk(
        &mut self,
        mut links_walked: Option<watch::Receiver<bool>>,
    ) -> Result<(), ReconError> {
        let recon = Arc::clone(&self.recon);
        let targets = recon.store.count_of_type(&recon.target_type).await?;
        recon.update(|r| r.target.total = i64::try_from(targets).unwrap_or(i64::MAX));
        let mut after: Option<String> = None;
        loop {
            let page = recon
                .timed(
                    ReconTask::TargetQuery,
                    recon
                        .store
                        .object_ids_page(&recon.target_type, after.as_deref(), PAGE),
                )
                .await?;
            let Some(last) = page.last() else { break };
            after = Some(last.clone());
            let read = page.len();
            let mut unseen: Vec<String> = page
                .into_iter()
                .filter(|id| !recon.target_seen(id))
                .collect();
            if !unseen.is_empty()
                && let Some(mut walked) = links_walked.take()
            {
                // An error there fails the run; its sender is then gone.
                let _ = walked.wait_for(|done| *done).await;
                if recon.is_cancelled() {
                    return Ok(());
                }
                unseen.retain(|id| !recon.target_seen(id));
            }
            let seen = i64::try_from(read - unseen.len()).unwrap_or(i64::MAX);
            recon.update(|r| r.target.processed += seen);
            for chunk in unseen.chunks(BATCH) {
                if recon.is_cancelled() {
                    return Ok(());
                }
                self.unseen_targets(chunk).await?;
                let done = i64::try_from(chunk.len()).unwrap_or(i64::MAX);
                recon.update(|r| r.target.processed += done);
            }
        }
        Ok(())
    }

    /// Links whose source the run did not see: their target decides.
    async fn orphaned_links(&mut self, links: &[(String, String)]) -> Result<(), ReconError> {
        let ids: Vec<String> = links.iter().map(|(_, target)| target.clone()).collect();
        self.recon.mark_targets(&ids);
        let mut targets = self.targets(&ids).await?;
        for (source, target_id) in links {
            let target = targets.remove(target_id);
            let decision = self.orphaned_link(source, target_id, target)?;
            self.act(decision).await?;
        }
        Ok(())
    }

    /// Targets the run did not reach: UNASSIGNED unless a link accounts for
    /// them (TARGET_IGNORED when the mapping's `validTarget` says no).
    async fn unseen_targets(&mut self, ids: &[String]) -> Result<(), ReconError> {
        let recon = Arc::clone(&self.recon);
        let linked: HashSet<String> = recon
            .timed(
                ReconTask::LinkQuery,
                recon.store.links_to_targets(&recon.mapping.name, ids),
            )
            .await?
            .into_iter()
            .map(|l| l.target)
            .collect();
        let unassigned: Vec<String> = ids
            .iter()
            .filter(|id| !linked.contains(*id))
            .cloned()
            .collect();
        let mut targets = self.targets(&unassigned).await?;
        for id in unassigned {
            let Some(target) = targets.remove(&id) else {
                continue; // deleted since the ids were read
            };
            let valid = match self.scripts.valid_target {
                Some(script) => {
                    let object = with_id(&target.data, &target.oid);
                    match self.eval(script, &[("target", &object), ("object", &object)]) {
                        Ok(v) => truthy(&v),
                        Err(reason) => {
                            recon.fail(ReconFailureRecord {
                                target_id: Some(id),
                                reason,
                                ..ReconFailureRecord::default()
                            });
                            continue;
                        }
                    }
                }
                None => true,
            };
            let (situation, detail) = if valid {
                (Situation::Unassigned, "no source is linked to this target")
            } else {
                (Situation::TargetIgnored, "")
            };
            let decision = self.decide(None, situation, Some(target), Some(id), detail)?;
            self.act(decision).await?;
        }
        Ok(())
    }

    /// reconById of ids the source does not have: SOURCE_MISSING when the
    /// linked target exists, LINK_ONLY when it does not, ALL_GONE without a link.
    pub async fn absent_sources(&mut self, ids: Vec<String>) -> Result<(), ReconError> {
        let recon = Arc::clone(&self.recon);
        let links: HashMap<String, String> = recon
            .timed(
                ReconTask::LinkQuery,
                recon.store.links_of_sources(&recon.mapping.name, &ids),
            )
            .await?
            .into_iter()
            .map(|l| (l.source, l.target))
            .collect();
        let linked: Vec<String> = links.values().cloned().collect();
        let mut targets = self.targets(&linked).await?;
        for id in ids {
            let decision = match links.get(&id) {
                Some(target_id) => {
                    let target = targets.remove(target_id);
                    self.orphaned_link(&id, target_id, target)?
                }
                None => {
                    let mut decision = self.decide(
                        None,
                        Situation::AllGone,
                        None,
                        None,
                        "no source, link or target",
                    )?;
                    decision.source_id = Some(id);
                    decision
                }
            };
            self.act(decision).await?;
            recon.update(|r| r.source.processed += 1);
        }
        Ok(())
    }

    /// A link whose source is gone: SOURCE_MISSING while its target exists,
    /// LINK_ONLY when that is gone too.
    fn orphaned_link(
        &mut self,
        source: &str,
        target_id: &str,
        target: Option<StoredObject>,
    ) -> Result<Decision, ReconError> {
        let (situation, detail) = if target.is_some() {
            (
                Situation::SourceMissing,
                format!("source {source} is gone; its target is kept"),
            )
        } else {
            (
                Situation::LinkOnly,
                "neither the source nor the target of this link exists".to_string(),
            )
        };
        let mut decision = self.decide(
            None,
            situation,
            target,
            Some(target_id.to_string()),
            &detail,
        )?;
        decision.source_id = Some(source.to_string());
        decision.linked = true;
        Ok(decision)
    }

    /// Existing targets by id.
    async fn targets(&self, ids: &[String]) -> Result<HashMap<String, StoredObject>, ReconError> {
        Ok(self
            .recon
            .store
            .get_objects(&self.recon.target_type, ids)
            .await?
            .into_iter()
            .map(|o| (o.oid.clone(), o))
            .collect())
    }

    /// A correlation script's result (`{"_queryFilter": "…"}` or the filter
    /// text) as a lookup.
    fn lookup(&self, query: &Value) -> Result<Lookup, String> {
        let text = match query {
            Value::String(text) => text.clone(),
            Value::Object(object) => match object.get("_queryFilter") {
                Some(Value::String(text)) => text.clone(),
                _ => {
                    return Err(format!(
                        "mapping {}: correlationQuery returned {query}, not {{\"_queryFilter\": \"…\"}}",
                        self.recon.mapping.name
                    ));
                }
            },
            other => {
                return Err(format!(
                    "mapping {}: correlationQuery returned {other}, not {{\"_queryFilter\": \"…\"}}",
                    self.recon.mapping.name
                ));
            }
        };
        let parsed = filter::parse(&text).map_err(|e| {
            format!(
                "mapping {}: correlationQuery filter {text:?}: {e}",
                self.recon.mapping.name
            )
        })?;
        if let Filter::Compare(path, CompareOp::Eq, filter::Value::String(value)) = &parsed
            && path.urn.is_none()
            && path.sub_attr.is_none()
        {
            if path.attr == "_id" {
                return Ok(Lookup::Id(value.clone()));
            }
            let object_type = self
                .recon
                .objects
                .schema()
                .get(&self.recon.target_type)
                .map_err(|e| e.to_string())?;
            if let Some(property) = object_type.properties.get(&path.attr)
                && property.unique
                && property.kind == PropertyKind::String
            {
                let key = if property.case_exact {
                    value.clone()
                } else {
                    value.to_lowercase()
                };
                return Ok(Lookup::Unique {
                    property: path.attr.clone(),
                    key,
                });
            }
        }
        Ok(Lookup::Query(text))
    }

    /// The target ids each correlation finds, in order, and the targets it
    /// read on the way (those found by `_id`).
    async fn correlate(
        &self,
        correlating: &[(SourceRecord, Lookup)],
    ) -> Result<
        (
            Vec<Result<Vec<String>, String>>,
            HashMap<String, StoredObject>,
        ),
        ReconError,
    > {
        let recon = &self.recon;
        let mut results: Vec<Result<Vec<String>, String>> = Vec::with_capacity(correlating.len());
        let ids: Vec<String> = correlating
            .iter()
            .filter_map(|(_, l)| match l {
                Lookup::Id(id) => Some(id.clone()),
                _ => None,
            })
            .collect();
        let existing = self.targets(&ids).await?;
        let mut by_property: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for (_, lookup) in correlating {
            if let Lookup::Unique { property, key } = lookup {
                by_property.entry(property).or_default().push(key.clone());
            }
        }
        let mut holders: HashMap<(String, String), String> = HashMap::new();
        for (property, keys) in by_property {
            let found = recon
                .store
                .lookup_unique_many(&recon.target_type, property, &keys)
                .await?;
            for (key, oid) in keys.into_iter().zip(found) {
                if let Some(oid) = oid {
                    holders.insert((property.to_string(), key), oid);
                }
            }
        }
        for (_, lookup) in correlating {
            let result = match lookup {
                Lookup::Id(id) => Ok(existing
                    .contains_key(id)
                    .then(|| id.clone())
                    .into_iter()
                    .collect()),
                Lookup::Unique { property, key } => Ok(holders
                    .get(&(property.clone(), key.clone()))
                    .cloned()
                    .into_iter()
                    .collect()),
                Lookup::Query(text) => {
                    let query = Query {
                        filter: text.clone(),
                        page_size: 2,
                        ..Query::default()
                    };
                    match recon.objects.query(&recon.target_type, &query).await {
                        Ok(page) => {
                            let mut ids: Vec<String> =
                                page.objects.into_iter().map(|o| o.id).collect();
                            if page.total > 2 {
                                ids.push(format!("… {} in all", page.total));
                            }
                            Ok(ids)
                        }
                        Err(e) => Err(format!(
                            "mapping {}: correlationQuery {text:?}: {}",
                            recon.mapping.name,
                            record_error(e)?
                        )),
                    }
                }
            };
            results.push(result);
        }
        Ok((results, existing))
    }

    /// Counts the situation and picks the action: the policy's, unless its
    /// condition says no, then the default table's.
    fn decide(
        &mut self,
        source: Option<SourceRecord>,
        situation: Situation,
        target: Option<StoredObject>,
        target_id: Option<String>,
        detail: &str,
    ) -> Result<Decision, ReconError> {
        self.recon.count_situation(situation);
        let mut action = self.recon.mapping.action_for(situation);
        if let Some(condition) = self.scripts.conditions.get(&situation).copied() {
            let (source_object, target_object) = script_objects(source.as_ref(), target.as_ref());
            match self.eval(
                condition,
                &[
                    ("source", &source_object),
                    ("target", &target_object),
                    ("situation", &json!(situation.name())),
                ],
            ) {
                Ok(v) if truthy(&v) => {}
                Ok(_) => action = situation.default_action(),
                Err(reason) => {
                    action = Action::Exception;
                    let decision = Decision {
                        source_id: source.as_ref().map(|s| s.uid.clone()),
                        source,
                        situation,
                        action,
                        target,
                        target_id,
                        linked: false,
                        detail: reason,
                    };
                    return Ok(decision);
                }
            }
        }
        Ok(Decision {
            source_id: source.as_ref().map(|s| s.uid.clone()),
            linked: matches!(
                situation,
                Situation::Confirmed | Situation::Missing | Situation::Unqualified
            ),
            source,
            situation,
            action,
            target,
            target_id,
            detail: detail.to_string(),
        })
    }

    /// Whether the action makes sense for what exists.
    fn applies(&self, decision: &Decision) -> bool {
        let has_source = decision.source.is_some();
        let has_target = decision.target.is_some();
        match decision.action {
            Action::Create => has_source && !has_target,
            Action::Update | Action::Link => has_source && has_target,
            Action::Delete => has_target,
            Action::Unlink => decision.linked,
            _ => true,
        }
    }

    /// Drops mapped private values (passwords) that the target already holds,
    /// so an unchanged password is neither hashed nor counted as a change.
    async fn settle_private_values(&self, decisions: &mut [Decision]) -> Result<(), ReconError> {
        let recon = &self.recon;
        let object_type = recon
            .objects
            .schema()
            .get(&recon.target_type)
            .map_err(|e| ReconError::Internal(e.to_string()))?;
        let private: Vec<&String> = recon
            .mapping
            .properties
            .iter()
            .map(|p| &p.target)
            .filter(|t| object_type.properties.get(*t).is_some_and(|p| p.private))
            .collect();
        for property in private {
            let mut holders = Vec::new();
            let mut candidates = Vec::new();
            for (index, decision) in decisions.iter().enumerate() {
                if let (Some(source), Some(target)) = (&decision.source, &decision.target)
                    && let Some(Value::String(value)) = source.values.get(property)
                {
                    holders.push(index);
                    candidates.push((target.oid.clone(), value.clone()));
                }
            }
            if candidates.is_empty() {
                continue;
            }
            let same = recon
                .objects
                .private_values_match(&recon.target_type, property, &candidates)
                .await
                .map_err(|e| match record_error(e) {
                    Err(fatal) => fatal,
                    Ok(message) => ReconError::Internal(message),
                })?;
            for (index, same) in holders.into_iter().zip(same) {
                if same && let Some(source) = decisions[index].source.as_mut() {
                    source.values.remove(property.as_str());
                }
            }
        }
        Ok(())
    }

    fn is_private(&self, property: &str) -> bool {
        self.recon
            .objects
            .schema()
            .get(&self.recon.target_type)
            .is_ok_and(|t| t.properties.get(property).is_some_and(|p| p.private))
    }

    /// Applies (or, in a dry run, plans) every action except batched creates.
    async fn act(&mut self, decision: Decision) -> Result<(), ReconError> {
        let recon = Arc::clone(&self.recon);
        if !self.applies(&decision) {
            let reason = format!(
                "{} does not apply to {}: {}",
                decision.action,
                decision.situation,
                match (decision.source.is_some(), decision.target.is_some()) {
                    (true, true) => "the source and the target exist",
                    (true, false) => "there is no target",
                    (false, true) => "there is no source",
                    (false, false) => "neither source nor target exists",
                }
            );
            recon.fail(failure(&decision, reason));
            return Ok(());
        }
        match decision.action {
            Action::Exception => {
                recon.count_action(Action::Exception);
                let reason = format!("{}: {}", decision.situation, decision.detail);
                recon.fail(failure(&decision, reason));
                return Ok(());
            }
            Action::Ignore | Action::Report | Action::NoReport | Action::Async => {
                recon.count_action(decision.action);
                return Ok(());
            }
            _ => {}
        }
        if matches!(decision.action, Action::Delete | Action::Unlink)
            && decision.situation == Situation::SourceMissing
        {
            let unread = recon.unread_sources.load(Ordering::Relaxed);
            if unread > 0 {
                let reason = format!(
                    "{} skipped: {unread} source record(s) could not be read, so a missing source may only be unreadable",
                    decision.action
                );
                recon.fail(failure(&decision, reason));
                return Ok(());
            }
        }
        let outcome = match decision.action {
            Action::Update => self.update(&decision).await?,
            Action::Link => self.link(&decision).await?,
            Action::Unlink => self.unlink(&decision).await?,
            Action::Delete => self.delete(&decision).await?,
            _ => Ok(()),
        };
        match outcome {
            Ok(()) => {
                recon.count_action(decision.action);
                self.post_action(&decision);
            }
            Err(reason) => recon.fail(failure(&decision, reason)),
        }
        Ok(())
    }

    fn link_of(&self, decision: &Decision) -> Option<Link> {
        Some(Link {
            mapping: self.recon.mapping.name.clone(),
            source: decision.source_id.clone()?,
            target: decision.target.as_ref()?.oid.clone(),
        })
    }

    async fn link(&mut self, decision: &Decision) -> Result<Result<(), String>, ReconError> {
        if decision.linked && decision.target_id == decision.target.as_ref().map(|t| t.oid.clone())
        {
            return Ok(Ok(()));
        }
        if self.recon.plan.is_some() {
            self.plan(decision, Vec::new());
            return Ok(Ok(()));
        }
        if let Some(link) = self.link_of(decision) {
            self.recon.store.put_links(&[link]).await?;
            self.on_link(decision);
        }
        Ok(Ok(()))
    }

    async fn unlink(&mut self, decision: &Decision) -> Result<Result<(), String>, ReconError> {
        if self.recon.plan.is_some() {
            self.plan(decision, Vec::new());
            return Ok(Ok(()));
        }
        if let Some(source) = &decision.source_id {
            self.recon
                .store
                .delete_links(&self.recon.mapping.name, std::slice::from_ref(source))
                .await?;
        }
        Ok(Ok(()))
    }

    async fn delete(&mut self, decision: &Decision) -> Result<Result<(), String>, ReconError> {
        let Some(target) = &decision.target else {
            return Ok(Ok(()));
        };
        if self.recon.plan.is_some() {
            let properties = target
                .data
                .iter()
                .map(|(k, v)| PropertyChange {
                    property: k.clone(),
                    before: v.clone(),
                    after: Value::Null,
                })
                .collect();
            self.plan(decision, properties);
            return Ok(Ok(()));
        }
        let recon = &self.recon;
        if let Err(e) = recon
            .objects
            .delete(&recon.actor, &recon.target_type, &target.oid, None)
            .await
        {
            return Ok(Err(record_error(e)?));
        }
        if decision.linked
            && let Some(source) = &decision.source_id
        {
            recon
                .store
                .delete_links(&recon.mapping.name, std::slice::from_ref(source))
                .await?;
        }
        Ok(Ok(()))
    }

    /// Writes the mapped values that differ from the target's; a record whose
    /// values all match writes nothing, so its revision stays.
    async fn update(&mut self, decision: &Decision) -> Result<Result<(), String>, ReconError> {
        let (Some(source), Some(target)) = (&decision.source, &decision.target) else {
            return Ok(Ok(()));
        };
        let mut wanted = Cow::Borrowed(&source.values);
        if let Some(script) = self.scripts.on_update {
            let current = with_id(&target.data, &target.oid);
            let mut merged = target.data.clone();
            merged.extend(source.values.clone());
            let merged = Value::Object(merged);
            match self.eval(
                script,
                &[
                    ("source", &source.object),
                    ("target", &merged),
                    ("oldTarget", &current),
                ],
            ) {
                Ok(Value::Object(result)) => wanted = Cow::Owned(result),
                Ok(other) => {
                    return Ok(Err(format!(
                        "mapping {}: onUpdate left target as {other}, not an object",
                        self.recon.mapping.name
                    )));
                }
                Err(reason) => return Ok(Err(reason)),
            }
        }
        let mapped: Vec<&String> = self
            .recon
            .mapping
            .properties
            .iter()
            .map(|p| &p.target)
            .collect();
        let mut names: Vec<&String> = mapped.clone();
        names.extend(wanted.keys().filter(|k| !mapped.contains(k)));
        names.sort();
        names.dedup();
        let mut changes = Vec::new();
        for name in names {
            if name == "_id" || name.starts_with('_') {
                continue;
            }
            let after = wanted.get(name.as_str()).unwrap_or(&Value::Null);
            let before = if self.is_private(name) {
                // Settled earlier: still here means it differs.
                &Value::Null
            } else {
                target.data.get(name.as_str()).unwrap_or(&Value::Null)
            };
            if before != after {
                changes.push(PropertyChange {
                    property: name.clone(),
                    before: before.clone(),
                    after: after.clone(),
                });
            }
        }
        let relink = !decision.linked;
        if changes.is_empty() && !relink {
            return Ok(Ok(()));
        }
        if self.recon.plan.is_some() {
            self.plan(decision, changes);
            return Ok(Ok(()));
        }
        if relink && let Some(link) = self.link_of(decision) {
            self.recon.store.put_links(&[link]).await?;
        }
        if !changes.is_empty() {
            let mut ops = Vec::with_capacity(changes.len());
            for change in &changes {
                let field = format!("/{}", change.property);
                let op = if change.after.is_null() {
                    PatchOp::new("remove", &field, None)
                } else {
                    PatchOp::new("replace", &field, Some(change.after.clone()))
                };
                match op {
                    Ok(op) => ops.push(op),
                    Err(e) => return Ok(Err(e.to_string())),
                }
            }
            let recon = &self.recon;
            if let Err(e) = recon
                .objects
                .patch(&recon.actor, &recon.target_type, &target.oid, ops, None)
                .await
            {
                return Ok(Err(record_error(e)?));
            }
        }
        if relink {
            self.on_link(decision);
        }
        Ok(Ok(()))
    }

    /// Creates targets for a batch's CREATE decisions in one transaction with
    /// their links; if the batch is refused, record by record to find out
    /// which failed and why.
    async fn create(&mut self, decisions: Vec<Decision>) -> Result<(), ReconError> {
        let recon = Arc::clone(&self.recon);
        let mut ready: Vec<(Decision, String, Map<String, Value>)> = Vec::new();
        for decision in decisions {
            let Some(source) = &decision.source else {
                continue;
            };
            let mut values = source.values.clone();
            if let Some(script) = self.scripts.on_create {
                match self.eval(
                    script,
                    &[
                        ("source", &source.object),
                        ("target", &Value::Object(values.clone())),
                    ],
                ) {
                    Ok(Value::Object(result)) => values = result,
                    Ok(other) => {
                        let reason = format!(
                            "mapping {}: onCreate left target as {other}, not an object",
                            recon.mapping.name
                        );
                        recon.fail(failure(&decision, reason));
                        continue;
                    }
                    Err(reason) => {
                        recon.fail(failure(&decision, reason));
                        continue;
                    }
                }
            }
            let id = match values.get("_id") {
                Some(Value::String(id)) => id.clone(),
                _ => uuid::Uuid::now_v7().to_string(),
            };
            values.insert("_id".into(), json!(id));
            ready.push((decision, id, values));
        }
        if ready.is_empty() {
            return Ok(());
        }
        if recon.plan.is_some() {
            for (mut decision, id, values) in ready {
                decision.target_id = Some(id);
                let properties = values
                    .into_iter()
                    .filter(|(k, _)| k != "_id")
                    .map(|(property, after)| PropertyChange {
                        property,
                        before: Value::Null,
                        after,
                    })
                    .collect();
                recon.count_action(Action::Create);
                self.plan(&decision, properties);
            }
            return Ok(());
        }
        let links = |items: &[(Decision, String, Map<String, Value>)]| -> Vec<Link> {
            items
                .iter()
                .filter_map(|(d, id, _)| {
                    Some(Link {
                        mapping: recon.mapping.name.clone(),
                        source: d.source_id.clone()?,
                        target: id.clone(),
                    })
                })
                .collect()
        };
        // A MISSING target re-created: its old link goes first (new links are
        // inserted, not upserted, with the objects).
        let relinked: Vec<String> = ready
            .iter()
            .filter(|(d, _, _)| d.linked)
            .filter_map(|(d, _, _)| d.source_id.clone())
            .collect();
        recon
            .store
            .delete_links(&recon.mapping.name, &relinked)
            .await?;
        let objects: Vec<(Option<String>, Map<String, Value>)> = ready
            .iter()
            .map(|(_, id, values)| (Some(id.clone()), values.clone()))
            .collect();
        let together = recon
            .objects
            .create_linked(&recon.actor, &recon.target_type, objects, &links(&ready))
            .await;
        let failed_together = match together {
            Ok(_) => false,
            Err(e) => {
                record_error(e)?;
                true
            }
        };
        for (mut decision, id, values) in ready {
            if failed_together {
                let one = [(decision, id, values)];
                let result = recon
                    .objects
                    .create_linked(
                        &recon.actor,
                        &recon.target_type,
                        vec![(Some(one[0].1.clone()), one[0].2.clone())],
                        &links(&one),
                    )
                    .await;
                let [(returned, id, _)] = one;
                decision = returned;
                decision.target_id = Some(id);
                if let Err(e) = result {
                    let reason = record_error(e)?;
                    recon.fail(failure(&decision, reason));
                    continue;
                }
            } else {
                decision.target_id = Some(id);
            }
            // The target phase need not look at what the source phase made:
            // a created target is linked to its source.
            if let Some(id) = &decision.target_id {
                recon.mark_targets([id]);
            }
            recon.count_action(Action::Create);
            self.on_link(&decision);
            self.post_action(&decision);
        }
        Ok(())
    }

    /// Records a dry run's change, private values masked.
    fn plan(&self, decision: &Decision, mut properties: Vec<PropertyChange>) {
        for change in &mut properties {
            if self.is_private(&change.property) {
                for value in [&mut change.before, &mut change.after] {
                    if !value.is_null() {
                        *value = json!(MASKED);
                    }
                }
            }
        }
        self.recon.planned(PlannedChange {
            source_id: decision.source_id.clone(),
            target_id: decision
                .target
                .as_ref()
                .map(|t| t.oid.clone())
                .or_else(|| decision.target_id.clone()),
            situation: decision.situation,
            action: decision.action,
            properties,
        });
    }

    /// Runs `onLink`; a failure is reported but does not undo the link.
    fn on_link(&mut self, decision: &Decision) {
        let Some(script) = self.scripts.on_link else {
            return;
        };
        let (source, target) = script_objects(decision.source.as_ref(), decision.target.as_ref());
        if let Err(reason) = self.eval(script, &[("source", &source), ("target", &target)]) {
            self.recon
                .fail(failure(decision, format!("onLink: {reason}")));
        }
    }

    fn post_action(&mut self, decision: &Decision) {
        let Some(script) = self.scripts.post_actions.get(&decision.situation).copied() else {
            return;
        };
        let (source, target) = script_objects(decision.source.as_ref(), decision.target.as_ref());
        if let Err(reason) = self.eval(
            script,
            &[
                ("source", &source),
                ("target", &target),
                ("situation", &json!(decision.situation.name())),
                ("action", &json!(decision.action.name())),
            ],
        ) {
            self.recon
                .fail(failure(decision, format!("postAction: {reason}")));
        }
    }
}
