//! Reconciling managed objects into a connector (managed users → LDAP):
//! every managed object of the source type, and every link whose object is
//! gone, goes through the same [`Provisioner`] as implicit sync, in batches;
//! then the target phase reads the connector's objects and names the ones
//! no link accounts for (UNASSIGNED). This is what repairs drift: an entry
//! deleted or edited by hand is found MISSING or CONFIRMED-but-different and
//! put back.

use std::collections::HashSet;
use std::sync::Arc;

use futures::StreamExt;

use serde_json::{Value, json};

use super::ReconError;
use super::run::{BATCH, PAGE, PlannedChange, PropertyChange, Recon, ReconTask};
use crate::connector::{Connector, ConnectorObject, SourceItem};
use crate::store::ReconFailureRecord;
use crate::sync::provision::{Change, MASKED, Preview, Provisioner};
use crate::sync::{Action, Situation};

pub(super) async fn reconcile(
    recon: Arc<Recon>,
    mut provisioner: Provisioner,
    only: Option<HashSet<String>>,
) -> Result<(), ReconError> {
    let store = recon.store.clone();
    let mapping = recon.mapping.name.clone();
    let source_type = provisioner.source_type().to_string();
    recon.update(|r| r.stage = "ACTIVE_QUERY_ENTRIES".into());
    let sources = match &only {
        Some(ids) => ids.len() as u64,
        None => store.count_of_type(&source_type).await?,
    };
    let links = store.count_links(&mapping).await?;
    recon.update(|r| {
        r.source.existing = i64::try_from(sources).unwrap_or(i64::MAX);
        r.source.total = r.source.existing;
        r.links.existing = i64::try_from(links).unwrap_or(i64::MAX);
        r.links.total = r.links.existing;
        r.stage = "ACTIVE_RECONCILING_SOURCE".into();
    });

    if let Some(ids) = only {
        let ids: Vec<String> = ids.into_iter().collect();
        for batch in ids.chunks(BATCH) {
            if recon.is_cancelled() {
                return Ok(());
            }
            provision_timed(&recon, &mut provisioner, batch).await?;
        }
        return Ok(());
    }

    // Every object of the source type, a page at a time.
    let mut after: Option<String> = None;
    loop {
        let page = recon
            .timed(
                ReconTask::SourceQuery,
                store.object_ids_page(&source_type, after.as_deref(), PAGE),
            )
            .await?;
        let Some(last) = page.last() else { break };
        after = Some(last.clone());
        for batch in page.chunks(BATCH) {
            if recon.is_cancelled() {
                return Ok(());
            }
            provision_timed(&recon, &mut provisioner, batch).await?;
        }
    }
    // Then the links: those whose object the walk did not meet are
    // reconciled too (SOURCE_MISSING, LINK_ONLY), and every linked target
    // counts as seen even when the run did not touch it.
    let mut after: Option<String> = None;
    loop {
        let page = recon
            .timed(
                ReconTask::LinkQuery,
                store.links_page(&mapping, after.as_deref(), PAGE),
            )
            .await?;
        let Some((last, _)) = page.last() else { break };
        after = Some(last.clone());
        recon.mark_targets(page.iter().map(|(_, target)| target));
        let gone: Vec<String> = page
            .into_iter()
            .map(|(source, _)| source)
            .filter(|source| !recon.source_seen(source))
            .collect();
        recon.update(|r| r.source.total += gone.len() as i64);
        for batch in gone.chunks(BATCH) {
            if recon.is_cancelled() {
                return Ok(());
            }
            provision_timed(&recon, &mut provisioner, batch).await?;
        }
    }

    if !recon.mapping.run_target_phase {
        return Ok(());
    }
    recon.update(|r| r.stage = "ACTIVE_RECONCILING_TARGET".into());
    recon
        .timed(ReconTask::TargetPhase, target_phase(&recon, &provisioner))
        .await
}

/// [`provision`], timed as one batch of the source phase.
async fn provision_timed(
    recon: &Recon,
    provisioner: &mut Provisioner,
    batch: &[String],
) -> Result<(), ReconError> {
    recon
        .timed(ReconTask::SourcePhase, provision(recon, provisioner, batch))
        .await
}

/// Provisions one batch of managed objects through the mapping and counts
/// what happened to each.
async fn provision(
    recon: &Recon,
    provisioner: &mut Provisioner,
    batch: &[String],
) -> Result<(), ReconError> {
    let changes = batch
        .iter()
        .map(|oid| Change {
            oid: oid.clone(),
            snapshot: None,
            maybe_delivered: false,
        })
        .collect();
    if recon.plan.is_some() {
        let previews = provisioner
            .preview(changes)
            .await
            .map_err(|e| ReconError::Internal(e.to_string()))?;
        for preview in previews {
            plan_one(recon, preview);
        }
        recon.update(|r| r.source.processed += batch.len() as i64);
        return Ok(());
    }
    let delivery = provisioner
        .provision(changes)
        .await
        .map_err(|e| ReconError::Internal(e.to_string()))?;
    provisioner
        .recorder()
        .record(&delivery, &[])
        .await
        .map_err(|e| ReconError::Internal(e.to_string()))?;
    for result in &delivery.provisioned {
        recon.count_situation(result.situation);
        recon.count_action(result.action);
        recon.mark_sources([&result.oid]);
        if let Some(target) = &result.target {
            recon.mark_targets([target]);
        }
        if let Err(failure) = &result.result {
            recon.fail(source_failure(
                &result.oid,
                result.target.clone(),
                result.situation,
                result.action,
                failure.message.clone(),
            ));
        }
    }
    recon.update(|r| r.source.processed += batch.len() as i64);
    Ok(())
}

/// A managed object a run (or a plan) fails on.
fn source_failure(
    oid: &str,
    target: Option<String>,
    situation: Situation,
    action: Action,
    reason: String,
) -> ReconFailureRecord {
    ReconFailureRecord {
        source_id: Some(oid.to_string()),
        target_id: target,
        line: None,
        situation: Some(situation.name().to_string()),
        action: Some(action.name().to_string()),
        reason,
    }
}

/// Counts a dry run's object as a run would, and keeps what would change.
fn plan_one(recon: &Recon, preview: Preview) {
    recon.count_situation(preview.situation);
    recon.count_action(preview.action);
    recon.mark_sources([&preview.oid]);
    if let Some(target) = &preview.target {
        recon.mark_targets([target]);
    }
    if let Some(reason) = preview.failure {
        recon.fail(source_failure(
            &preview.oid,
            preview.target,
            preview.situation,
            preview.action,
            reason,
        ));
        return;
    }
    if preview.changes {
        recon.planned(PlannedChange {
            source_id: Some(preview.oid),
            target_id: preview.target,
            situation: preview.situation,
            action: preview.action,
            properties: preview
                .attributes
                .into_iter()
                .map(|(property, before, after)| PropertyChange {
                    property,
                    before,
                    after,
                })
                .collect(),
        });
    }
}

/// Connector objects no link accounts for: UNASSIGNED, and the mapping's
/// policy for it (EXCEPTION by default; DELETE removes them).
async fn target_phase(recon: &Recon, provisioner: &Provisioner) -> Result<(), ReconError> {
    let connector = Arc::clone(provisioner.connector());
    let object_type = provisioner.object_type().to_string();
    let action = recon.mapping.action_for(Situation::Unassigned);
    let mut targets = connector.query(&object_type);
    let mut processed = 0i64;
    while let Some(item) = targets.next().await {
        if recon.is_cancelled() {
            return Ok(());
        }
        let SourceItem::Object(target) = item? else {
            continue;
        };
        processed += 1;
        if recon.target_seen(&target.uid) {
            continue;
        }
        recon.count_situation(Situation::Unassigned);
        recon.count_action(action);
        if recon.plan.is_some() {
            plan_unassigned(recon, &target, action);
        } else {
            act_on_unassigned(recon, connector.as_ref(), &object_type, &target, action).await;
        }
        if processed % 100 == 0 {
            recon.update(|r| r.target.processed = processed);
        }
    }
    recon.update(|r| {
        r.target.processed = processed;
        r.target.total = processed;
        r.target.existing = processed;
    });
    Ok(())
}

/// UNASSIGNED in a dry run: the deletion a run would make, or the
/// exception it would report.
fn plan_unassigned(recon: &Recon, target: &ConnectorObject, action: Action) {
    match action {
        Action::Delete => recon.planned(PlannedChange {
            source_id: None,
            target_id: Some(target.uid.clone()),
            situation: Situation::Unassigned,
            action,
            properties: target
                .attributes
                .iter()
                .map(|(property, before)| PropertyChange {
                    before: if crate::connector::is_password_attribute(property) {
                        json!(MASKED)
                    } else {
                        before.clone()
                    },
                    property: property.clone(),
                    after: Value::Null,
                })
                .collect(),
        }),
        Action::Exception => recon.fail(unassigned_failure(
            target,
            action,
            "UNASSIGNED: no managed object is linked to this target".into(),
        )),
        _ => {}
    }
}

async fn act_on_unassigned(
    recon: &Recon,
    connector: &dyn Connector,
    object_type: &str,
    target: &ConnectorObject,
    action: Action,
) {
    match action {
        Action::Delete => {
            if let Err(e) = connector.delete(object_type, &target.uid).await {
                recon.fail(unassigned_failure(target, action, e.to_string()));
            }
        }
        Action::Exception => recon.fail(unassigned_failure(
            target,
            action,
            "UNASSIGNED: no managed object is linked to this target".into(),
        )),
        _ => {}
    }
}

fn unassigned_failure(
    target: &ConnectorObject,
    action: Action,
    reason: String,
) -> ReconFailureRecord {
    ReconFailureRecord {
        source_id: None,
        target_id: Some(target.uid.clone()),
        line: None,
        situation: Some(Situation::Unassigned.name().to_string()),
        action: Some(action.name().to_string()),
        reason,
    }
}
