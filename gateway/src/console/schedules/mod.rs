//! `/admin/schedules`: each schedule with its timing in words beside the
//! expression, next and last fire, paused or not; pause, resume, run now;
//! a schedule's page with its execution history (outcome, duration, the
//! reconciliation run it started).
//!
//! - `GET /schedules` (`ScheduleService.ListSchedules`);
//! - `GET /schedules/{name}[?page=token]` (`GetSchedule`, `ListExecutions`,
//!   20 a page);
//! - `POST /schedules/{name}/pause|resume|run` → 303 back to the schedule
//!   (or to the list, when the form says `back=list`).
//!
//! `cron.rs` puts a Quartz expression into words.

pub mod cron;

use askama::Template;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::routing::{get, post};
use idm_proto::json::from_proto_struct;
use idm_proto::v1::execution::Outcome;
use idm_proto::v1::schedule_service_client::ScheduleServiceClient;
use idm_proto::v1::{
    Execution, GetScheduleRequest, ListExecutionsRequest, ListSchedulesRequest,
    PauseScheduleRequest, ResumeScheduleRequest, RunScheduleRequest, Schedule,
};
use serde::Deserialize;

use super::mappings::format::{self, When};
use super::{
    Chrome, ConsoleError, ConsoleState, Form, Nav, Viewer, console_call, render, see_other,
};

/// Executions a schedule page lists at a time.
const HISTORY_PAGE: i32 = 20;

pub fn routes() -> Router<ConsoleState> {
    Router::new()
        .route("/schedules", get(list))
        .route("/schedules/{name}", get(show))
        .route("/schedules/{name}/{action}", post(act))
}

/// A schedule id as a path segment.
fn checked_name(name: &str) -> Result<&str, ConsoleError> {
    if name.is_empty() || name.len() > 256 || name.contains('/') {
        return Err(ConsoleError::NotFound(format!("schedules/{name}")));
    }
    Ok(name)
}

/// One schedule, as the list and its page show it.
pub struct ScheduleView {
    pub id: String,
    /// `id` as a path segment.
    pub url: String,
    pub words: String,
    pub expression: String,
    /// The words are not just the expression again.
    pub said: bool,
    pub time_zone: String,
    pub enabled: bool,
    pub paused: bool,
    pub next_fire: Option<When>,
    pub last_fire: Option<When>,
    /// `sync`, `script`, `liveSync`.
    pub invokes: String,
    /// The mapping a `sync` or `liveSync` schedule reconciles.
    pub mapping: String,
    pub mapping_url: String,
    pub concurrent: bool,
    pub misfire_policy: String,
}

impl ScheduleView {
    pub fn of(schedule: &Schedule) -> ScheduleView {
        let expression = schedule.schedule.clone();
        let words = if schedule.r#type == "simple" {
            cron::period_in_words(&expression)
        } else {
            cron::in_words(&expression)
        };
        let context = schedule
            .invoke_context
            .as_ref()
            .map(from_proto_struct)
            .unwrap_or_default();
        let mapping = context
            .get("mapping")
            .and_then(|m| m.as_str())
            .unwrap_or_default()
            .to_string();
        let id = if schedule.id.is_empty() {
            schedule
                .name
                .strip_prefix("schedules/")
                .unwrap_or(&schedule.name)
                .to_string()
        } else {
            schedule.id.clone()
        };
        ScheduleView {
            url: format::segment(&id),
            mapping_url: format::segment(&mapping),
            id,
            said: words != expression,
            words,
            expression,
            time_zone: if schedule.time_zone.is_empty() {
                "UTC".into()
            } else {
                schedule.time_zone.clone()
            },
            enabled: schedule.enabled,
            paused: schedule.paused,
            next_fire: When::of(schedule.next_fire_time.as_ref()),
            last_fire: When::of(schedule.last_fire_time.as_ref()),
            invokes: schedule.invoke_service.clone(),
            mapping,
            concurrent: schedule.concurrent_execution,
            misfire_policy: schedule.misfire_policy.clone(),
        }
    }
}

pub struct ExecutionRow {
    pub fired: Option<When>,
    pub started: Option<When>,
    pub outcome: &'static str,
    /// The stylesheet's class for the outcome's badge.
    pub class: &'static str,
    pub duration: String,
    pub message: String,
    /// The run's id, for `/admin/runs/{id}`; empty when it started none.
    pub run: String,
}

/// The outcome's word and badge class; a skip's reason is its message.
fn outcome(e: &Execution) -> (&'static str, &'static str) {
    match e.outcome() {
        Outcome::Unspecified => ("UNKNOWN", ""),
        Outcome::Running => ("RUNNING", "running"),
        Outcome::Success => ("SUCCESS", "success"),
        Outcome::Failed => ("FAILED", "failed"),
        Outcome::SkippedConcurrent | Outcome::SkippedMisfire => ("SKIPPED", "paused"),
    }
}

impl ExecutionRow {
    pub fn of(e: &Execution) -> ExecutionRow {
        let (outcome, class) = outcome(e);
        ExecutionRow {
            fired: When::of(e.fire_time.as_ref()),
            started: When::of(e.start_time.as_ref()),
            outcome,
            class,
            duration: format::duration(e.duration.as_ref()),
            message: e.message.clone(),
            run: format::run_id(&e.recon_run).to_string(),
        }
    }
}

#[derive(Template)]
#[template(path = "console/schedules/list.html")]
struct ListPage {
    chrome: Chrome,
    schedules: Vec<ScheduleView>,
}

#[derive(Template)]
#[template(path = "console/schedules/show.html")]
struct ShowPage {
    chrome: Chrome,
    schedule: ScheduleView,
    executions: Vec<ExecutionRow>,
    next_page: Option<String>,
}

async fn list(State(state): State<ConsoleState>, viewer: Viewer) -> Result<Response, ConsoleError> {
    let listed = console_call!(
        &state,
        &viewer,
        ScheduleServiceClient.list_schedules(ListSchedulesRequest {})
    )
    .await?;
    let mut schedules: Vec<ScheduleView> = listed.schedules.iter().map(ScheduleView::of).collect();
    schedules.sort_by(|a, b| a.id.cmp(&b.id));
    let chrome = Chrome::new(&state, &viewer, Nav::Schedules, "Schedules").await;
    Ok(render(&ListPage { chrome, schedules }))
}

#[derive(Deserialize)]
struct HistoryQuery {
    page: Option<String>,
}

async fn show(
    State(state): State<ConsoleState>,
    viewer: Viewer,
    Path(name): Path<String>,
    Query(query): Query<HistoryQuery>,
) -> Result<Response, ConsoleError> {
    let name = format!("schedules/{}", checked_name(&name)?);
    let schedule = console_call!(
        &state,
        &viewer,
        ScheduleServiceClient.get_schedule(GetScheduleRequest { name: name.clone() })
    )
    .await?;
    let page_token = query.page.unwrap_or_default();
    let history = console_call!(
        &state,
        &viewer,
        ScheduleServiceClient.list_executions(ListExecutionsRequest {
            schedule: name.clone(),
            page_size: HISTORY_PAGE,
            page_token: page_token.clone(),
            running: false,
        })
    )
    .await?;
    let view = ScheduleView::of(&schedule);
    let chrome = Chrome::new(&state, &viewer, Nav::Schedules, &view.id).await;
    Ok(render(&ShowPage {
        chrome,
        schedule: view,
        executions: history.executions.iter().map(ExecutionRow::of).collect(),
        next_page: (!history.next_page_token.is_empty()).then_some(history.next_page_token),
    }))
}

/// Where a schedule's button goes back to: its page, or the list.
fn back(form: &Form, id: &str) -> Response {
    match form.get("back") {
        Some("list") => see_other("/admin/schedules"),
        _ => see_other(&format!("/admin/schedules/{}", format::segment(id))),
    }
}

/// Pause, resume or run now: the schedule's buttons.
async fn act(
    State(state): State<ConsoleState>,
    Path((id, action)): Path<(String, String)>,
    form: Form,
) -> Result<Response, ConsoleError> {
    form.viewer.require_change()?;
    let name = format!("schedules/{}", checked_name(&id)?);
    match action.as_str() {
        "pause" => {
            console_call!(
                &state,
                &form.viewer,
                ScheduleServiceClient.pause_schedule(PauseScheduleRequest { name })
            )
            .await?;
        }
        "resume" => {
            console_call!(
                &state,
                &form.viewer,
                ScheduleServiceClient.resume_schedule(ResumeScheduleRequest { name })
            )
            .await?;
        }
        "run" => {
            console_call!(
                &state,
                &form.viewer,
                ScheduleServiceClient.run_schedule(RunScheduleRequest { name })
            )
            .await?;
        }
        _ => return Err(ConsoleError::NotFound("There is no such page.".into())),
    }
    Ok(back(&form, &id))
}
