//! `/admin/runs/{id}`: one reconciliation run — state, stage, duration,
//! progress (source, target, links), situations and actions as they grow,
//! and its failures (the CSV line and the reason).
//!
//! - `GET /runs/{id}` (`ReconService.GetRecon`). While the run is active the
//!   live part polls `GET /runs/{id}/progress` every second with htmx, and
//!   the page carries `<meta http-equiv="refresh" content="2">` for a
//!   browser without JavaScript; both stop once the run has ended.
//! - `GET /runs/{id}/progress`: that live part alone (always a fragment).
//! - `POST /runs/{id}/cancel` (`CancelRecon`) → 303 to the run.

use std::time::Duration;

use askama::Template;
use axum::Router;
use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::{get, post};
use idm_proto::v1::recon_service_client::ReconServiceClient;
use idm_proto::v1::{CancelReconRequest, GetReconRequest, ReconFailure, ReconProgress, ReconRun};

use super::mappings::format::{self, Count, When};
use super::page;
use super::{
    Chrome, ConsoleError, ConsoleState, Form, Nav, Viewer, console_call, render, see_other,
};

/// How long a cancel waits for the core's answer before showing the run.
const CANCEL_ANSWER: Duration = Duration::from_secs(1);

pub fn routes() -> Router<ConsoleState> {
    Router::new()
        .route("/runs/{id}", get(show))
        .route("/runs/{id}/progress", get(progress))
        .route("/runs/{id}/cancel", post(cancel))
}

/// A run id as a path segment (the core's are UUIDs).
fn checked_id(id: &str) -> Result<&str, ConsoleError> {
    let plain = |c: char| c.is_ascii_alphanumeric() || c == '-';
    if id.is_empty() || id.len() > 64 || !id.chars().all(plain) {
        return Err(ConsoleError::NotFound(format!("recon/{id}")));
    }
    Ok(id)
}

/// `processed / total` of one side, the total `?` while unknown.
pub struct Side {
    pub name: &'static str,
    pub processed: String,
    pub total: String,
    pub existing: String,
    /// `(processed, total)` for a `<progress>` bar, once the total is known.
    pub bar: Option<(i64, i64)>,
}

fn side(name: &'static str, p: Option<&ReconProgress>) -> Side {
    let p = p.cloned().unwrap_or_default();
    let known = p.total > 0;
    Side {
        name,
        processed: page::thousands(p.processed),
        total: if known {
            page::thousands(p.total)
        } else {
            "?".into()
        },
        existing: page::thousands(p.existing),
        bar: known.then_some((p.processed.clamp(0, p.total), p.total)),
    }
}

pub struct FailureRow {
    pub line: String,
    pub source_id: String,
    pub target_id: String,
    pub situation: String,
    pub action: String,
    pub reason: String,
}

impl FailureRow {
    pub fn of(f: &ReconFailure) -> FailureRow {
        FailureRow {
            line: if f.line > 0 {
                f.line.to_string()
            } else {
                String::new()
            },
            source_id: f.source_id.clone(),
            target_id: f.target_id.clone(),
            situation: f.situation.clone(),
            action: f.action.clone(),
            reason: f.reason.clone(),
        }
    }
}

/// What the run page and its progress fragment show.
pub struct RunView {
    pub id: String,
    pub mapping: String,
    pub mapping_url: String,
    pub state: &'static str,
    pub active: bool,
    pub stage: String,
    pub started: Option<When>,
    pub ended: Option<When>,
    pub duration: String,
    pub started_by: String,
    pub error: String,
    pub sides: Vec<Side>,
    pub situations: Vec<Count>,
    pub actions: Vec<Count>,
    pub failures: Vec<FailureRow>,
    pub failure_count: i64,
    /// Only the first failures are kept and shown.
    pub failures_capped: bool,
}

impl RunView {
    pub fn of(run: &ReconRun) -> RunView {
        RunView {
            id: run.id.clone(),
            mapping: run.mapping.clone(),
            mapping_url: format::segment(&run.mapping),
            state: format::run_state(run),
            active: format::run_active(run),
            stage: stage_in_words(&run.stage),
            started: When::of(run.start_time.as_ref()),
            ended: When::of(run.end_time.as_ref()),
            duration: format::duration(run.duration.as_ref()),
            started_by: run.started_by.clone(),
            error: run.error.clone(),
            sides: vec![
                side("source", run.source.as_ref()),
                side("target", run.target.as_ref()),
                side("links", run.links.as_ref()),
            ],
            situations: format::situations(&run.situation_counts),
            actions: format::actions(&run.action_counts),
            failures: run.failures.iter().map(FailureRow::of).collect(),
            failure_count: run.failure_count,
            failures_capped: usize::try_from(run.failure_count)
                .is_ok_and(|count| count > run.failures.len()),
        }
    }
}

#[derive(Template)]
#[template(path = "console/mappings/run.html")]
struct RunPage {
    chrome: Chrome,
    run: RunView,
}

#[derive(Template)]
#[template(path = "console/mappings/run_progress.html")]
struct ProgressFragment {
    run: RunView,
    csrf: String,
    can_change: bool,
}

async fn get_run(
    state: &ConsoleState,
    viewer: &Viewer,
    id: &str,
) -> Result<ReconRun, ConsoleError> {
    let name = format!("recon/{}", checked_id(id)?);
    console_call!(
        state,
        viewer,
        ReconServiceClient.get_recon(GetReconRequest { name: name.clone() })
    )
    .await
}

async fn show(
    State(state): State<ConsoleState>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> Result<Response, ConsoleError> {
    let run = get_run(&state, &viewer, &id).await?;
    let chrome = Chrome::new(&state, &viewer, Nav::Mappings, &format!("Run {id}")).await;
    Ok(render(&RunPage {
        chrome,
        run: RunView::of(&run),
    }))
}

async fn progress(
    State(state): State<ConsoleState>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> Result<Response, ConsoleError> {
    let run = get_run(&state, &viewer, &id).await?;
    Ok(render(&ProgressFragment {
        run: RunView::of(&run),
        csrf: viewer.csrf.clone(),
        can_change: viewer.can_change(),
    }))
}

async fn cancel(
    State(state): State<ConsoleState>,
    Path(id): Path<String>,
    form: Form,
) -> Result<Response, ConsoleError> {
    form.viewer.require_change()?;
    let name = format!("recon/{}", checked_id(&id)?);
    // The core answers once the run has stopped, which can take longer than
    // a page should (a batch ends first): a refusal comes at once, and a
    // cancel still under way shows on the run's page.
    let asked = console_call!(
        &state,
        &form.viewer,
        ReconServiceClient.cancel_recon(CancelReconRequest { name })
    );
    let mut asked = tokio::spawn(asked);
    match tokio::time::timeout(CANCEL_ANSWER, &mut asked).await {
        Ok(Ok(answer)) => {
            answer?;
        }
        Ok(Err(e)) => {
            return Err(ConsoleError::Internal(format!(
                "the cancel call failed: {e}"
            )));
        }
        Err(_) => {}
    }
    Ok(see_other(&format!("/admin/runs/{id}")))
}

/// Wren's stage names (`ACTIVE_RECONCILING_SOURCE`, …) as people read them;
/// an unknown one as it is.
fn stage_in_words(stage: &str) -> String {
    match stage {
        "ACTIVE_INITIALIZED" => "starting",
        "ACTIVE_QUERY_ENTRIES" => "reading the source",
        "ACTIVE_RECONCILING_SOURCE" => "reconciling source objects",
        "ACTIVE_RECONCILING_TARGET" => "reconciling target objects",
        "COMPLETED_SUCCESS" => "completed",
        "COMPLETED_FAILED" => "stopped by an error",
        "COMPLETED_CANCELED" => "canceled",
        other => other,
    }
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_are_plain() {
        assert!(checked_id("019ad3c4-5b6e-7f00-8000-0123456789ab").is_ok());
        for bad in ["", "../x", "a/b", "a b", &"a".repeat(65)] {
            assert!(checked_id(bad).is_err(), "{bad}");
        }
    }
}
