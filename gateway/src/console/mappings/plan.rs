//! `GET /admin/mappings/{name}/plan[?source=id]`: what a run of the mapping
//! would change, object by object and property by property (before →
//! after), with the situations and actions it would meet — changing nothing
//! (`ReconService.PlanRecon`, a dry run in the core; admin scope there).

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use idm_proto::v1::recon_service_client::ReconServiceClient;
use idm_proto::v1::{PlanReconRequest, PlannedChange};
use serde::Deserialize;
use tonic::Code;

use super::format::{self, Count};
use super::{ConsoleState, checked_name};
use crate::console::runs::FailureRow;
use crate::console::{Chrome, ConsoleError, Nav, Viewer, render};
use crate::core::Core;

/// Changes a plan page lists at most (the counts cover all of them).
pub const PLAN_CHANGES: i32 = 200;
/// A source id asked for is at most this long.
const MAX_SOURCE_ID: usize = 1024;

pub struct PropertyRow {
    pub property: String,
    pub before: String,
    pub after: String,
}

pub struct ChangeRow {
    pub source_id: String,
    pub target_id: String,
    pub situation: String,
    pub action: String,
    pub properties: Vec<PropertyRow>,
}

impl ChangeRow {
    pub fn of(change: &PlannedChange) -> ChangeRow {
        ChangeRow {
            source_id: change.source_id.clone(),
            target_id: change.target_id.clone(),
            situation: change.situation.clone(),
            action: change.action.clone(),
            properties: change
                .properties
                .iter()
                .map(|p| PropertyRow {
                    property: p.property.clone(),
                    before: format::value(p.before.as_ref()),
                    after: format::value(p.after.as_ref()),
                })
                .collect(),
        }
    }
}

#[derive(Template)]
#[template(path = "console/mappings/plan.html")]
struct PlanPage {
    chrome: Chrome,
    name: String,
    url: String,
    source: String,
    situations: Vec<Count>,
    actions: Vec<Count>,
    changes: Vec<ChangeRow>,
    /// Actions a run would take that change no property (an UPDATE of an
    /// object already right): counted above, not listed.
    unchanged: i64,
    failures: Vec<FailureRow>,
    failure_count: i64,
    /// The list stopped at [`PLAN_CHANGES`]: there may be more.
    capped: bool,
    limit: i32,
}

#[derive(Deserialize)]
pub struct PlanQuery {
    source: Option<String>,
}

pub async fn plan(
    State(state): State<ConsoleState>,
    viewer: Viewer,
    Path(name): Path<String>,
    Query(query): Query<PlanQuery>,
) -> Result<Response, ConsoleError> {
    let name = checked_name(&name)?.to_string();
    let source = query
        .source
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    if source.as_ref().is_some_and(|s| s.len() > MAX_SOURCE_ID) {
        return Err(ConsoleError::BadRequest(format!(
            "source: at most {MAX_SOURCE_ID} bytes"
        )));
    }
    let source_ids: Vec<String> = source.iter().cloned().collect();
    let request = Core::authorized(
        &viewer.bearer,
        PlanReconRequest {
            mapping: name.clone(),
            source_ids,
            page_size: PLAN_CHANGES,
        },
    )?;
    // A plan the core cannot make (of managed objects into a connector) is
    // said as the core says it, not as a failure of the console.
    let planned = ReconServiceClient::new(state.core.channel())
        .plan_recon(request)
        .await
        .map_err(|status| match status.code() {
            Code::Unimplemented => ConsoleError::Conflict(status.message().to_string()),
            _ => status.into(),
        })?
        .into_inner();
    let changes: Vec<ChangeRow> = planned.changes.iter().map(ChangeRow::of).collect();
    let actions_taken: i64 = planned
        .action_counts
        .iter()
        .filter(|(action, _)| action.as_str() != "NOACTION" && action.as_str() != "IGNORE")
        .map(|(_, n)| *n)
        .sum();
    let unchanged = actions_taken
        .saturating_sub(i64::try_from(changes.len()).unwrap_or(i64::MAX))
        .max(0);
    let chrome = Chrome::new(&state, &viewer, Nav::Mappings, &format!("Plan of {name}")).await;
    Ok(render(&PlanPage {
        chrome,
        situations: format::situations(&planned.situation_counts),
        actions: format::actions(&planned.action_counts),
        capped: changes.len() >= usize::try_from(PLAN_CHANGES).unwrap_or(usize::MAX),
        limit: PLAN_CHANGES,
        unchanged,
        changes,
        failures: planned.failures.iter().map(FailureRow::of).collect(),
        failure_count: planned.failure_count,
        source: source.unwrap_or_default(),
        url: format::segment(&name),
        name,
    }))
}
