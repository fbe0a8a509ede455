//! Reconciling managed objects into a connector (managed users → LDAP):
//! every managed object of the source type, and every link whose object is
//! gone, goes through the same [`Provisioner`] as implicit sync, in batches;
//! then the target phase reads the connector's objects and names the ones
//! no link accounts for (UNASSIGNED). This is what repairs drift: an entry
//! deleted or edited by hand is found MISSING or CONFIRMED-but-different and
//! put back.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures::StreamExt;

use super::ReconError;
use super::run::{BATCH, Recon};
use crate::connector::SourceItem;
use crate::store::ReconFailureRecord;
use crate::sync::provision::{Change, Provisioner};
use crate::sync::{Action, Situation};

pub(super) async fn reconcile(
    recon: Arc<Recon>,
    mut provisioner: Provisioner,
    only: Option<HashSet<String>>,
) -> Result<(), ReconError> {
    let store = recon.store.clone();
    let mapping = recon.mapping.name.clone();
    recon.update(|r| r.stage = "ACTIVE_QUERY_ENTRIES".into());
    let links: HashMap<String, String> = store.all_links(&mapping).await?.into_iter().collect();
    let mut ids = match &only {
        Some(ids) => ids.iter().cloned().collect::<Vec<_>>(),
        None => store.all_object_ids(provisioner.source_type()).await?,
    };
    let existing: HashSet<&String> = ids.iter().collect();
    // Links whose object is gone are reconciled too (SOURCE_MISSING, LINK_ONLY).
    let gone: Vec<String> = links
        .keys()
        .filter(|source| !existing.contains(source))
        .filter(|source| only.as_ref().is_none_or(|o| o.contains(*source)))
        .cloned()
        .collect();
    let sources = ids.len() as i64;
    ids.extend(gone);
    let total = ids.len() as i64;
    recon.update(|r| {
        r.source.existing = sources;
        r.source.total = total;
        r.links.existing = links.len() as i64;
        r.links.total = links.len() as i64;
        r.stage = "ACTIVE_RECONCILING_SOURCE".into();
    });

    for batch in ids.chunks(BATCH) {
        if recon.is_cancelled() {
            return Ok(());
        }
        let changes = batch
            .iter()
            .map(|oid| Change {
                oid: oid.clone(),
                snapshot: None,
            })
            .collect();
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
                recon.fail(ReconFailureRecord {
                    source_id: Some(result.oid.clone()),
                    target_id: result.target.clone(),
                    line: None,
                    situation: Some(result.situation.name().to_string()),
                    action: Some(result.action.name().to_string()),
                    reason: failure.message.clone(),
                });
            }
        }
        recon.update(|r| r.source.processed += batch.len() as i64);
    }
    // Targets reached through a link count as seen even when the run did not touch them.
    recon.mark_targets(links.values());

    if only.is_some() || !recon.mapping.run_target_phase {
        return Ok(());
    }
    recon.update(|r| r.stage = "ACTIVE_RECONCILING_TARGET".into());
    target_phase(&recon, &provisioner).await
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
        let failure = |reason: String| ReconFailureRecord {
            source_id: None,
            target_id: Some(target.uid.clone()),
            line: None,
            situation: Some(Situation::Unassigned.name().to_string()),
            action: Some(action.name().to_string()),
            reason,
        };
        match action {
            Action::Delete => {
                if let Err(e) = connector.delete(&object_type, &target.uid).await {
                    recon.fail(failure(e.to_string()));
                }
            }
            Action::Exception => recon.fail(failure(
                "UNASSIGNED: no managed object is linked to this target".into(),
            )),
            _ => {}
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
