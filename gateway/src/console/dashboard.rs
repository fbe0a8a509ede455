//! The start page: how many objects of each managed type, each mapping
//! with its last run, the sync queue, and the schedules whose last run
//! failed — each linking to its own page.

use askama::Template;
use axum::extract::State;
use axum::response::Response;
use idm_proto::v1::config_service_client::ConfigServiceClient;
use idm_proto::v1::object_service_client::ObjectServiceClient;
use idm_proto::v1::recon_run::State as RunState;
use idm_proto::v1::schedule_service_client::ScheduleServiceClient;
use idm_proto::v1::sync_service_client::SyncServiceClient;
use idm_proto::v1::{
    CountObjectsRequest, GetSyncQueueRequest, ListExecutionsRequest, ListMappingsRequest,
    ListReconsRequest, ListSchedulesRequest, ReconRun, execution,
    recon_service_client::ReconServiceClient,
};

use super::page::{ago, thousands};
use super::sync::MappingRow as QueueRow;
use super::{Chrome, ConsoleError, ConsoleState, Nav, Viewer, console_call, render};

pub struct TypeCount {
    pub name: String,
    pub title: String,
    pub count: String,
}

pub struct MappingRow {
    pub name: String,
    pub source: String,
    pub target: String,
    pub enable_sync: bool,
    pub last_run: Option<RunSummary>,
}

pub struct RunSummary {
    pub id: String,
    pub state: &'static str,
    pub when: String,
    /// `CONFIRMED 3, FOUND 1`.
    pub situations: String,
}

pub struct FailedSchedule {
    pub id: String,
    pub when: String,
    pub message: String,
}

#[derive(Template)]
#[template(path = "console/dashboard.html")]
struct Dashboard {
    chrome: Chrome,
    counts: Vec<TypeCount>,
    mappings: Vec<MappingRow>,
    queue: Vec<QueueRow>,
    failed_schedules: Vec<FailedSchedule>,
}

pub async fn show(
    State(state): State<ConsoleState>,
    viewer: Viewer,
) -> Result<Response, ConsoleError> {
    let chrome = Chrome::new(&state, &viewer, Nav::Dashboard, "Dashboard").await;
    let (counts, mappings, queue, failed_schedules) = tokio::join!(
        counts(&state, &viewer, &chrome),
        mappings(&state, &viewer),
        queue(&state, &viewer),
        failed_schedules(&state, &viewer),
    );
    Ok(render(&Dashboard {
        chrome,
        counts: counts?,
        mappings: mappings?,
        queue: queue?,
        failed_schedules: failed_schedules?,
    }))
}

async fn counts(
    state: &ConsoleState,
    viewer: &Viewer,
    chrome: &Chrome,
) -> Result<Vec<TypeCount>, ConsoleError> {
    let mut counts = Vec::with_capacity(chrome.types.len());
    for t in &chrome.types {
        let reply = console_call!(
            state,
            viewer,
            ObjectServiceClient.count_objects(CountObjectsRequest {
                parent: format!("managed/{}", t.name),
                filter: String::new(),
            })
        )
        .await?;
        counts.push(TypeCount {
            name: t.name.clone(),
            title: t.title.clone(),
            count: thousands(reply.count),
        });
    }
    Ok(counts)
}

async fn mappings(state: &ConsoleState, viewer: &Viewer) -> Result<Vec<MappingRow>, ConsoleError> {
    let list = console_call!(
        state,
        viewer,
        ConfigServiceClient.list_mappings(ListMappingsRequest {})
    )
    .await?;
    let mut rows = Vec::with_capacity(list.mappings.len());
    for mapping in list.mappings {
        let name = mapping
            .name
            .strip_prefix("mappings/")
            .unwrap_or(&mapping.name)
            .to_string();
        let runs = console_call!(
            state,
            viewer,
            ReconServiceClient.list_recons(ListReconsRequest {
                filter: format!("mapping eq {}", quoted(&name)),
                page_size: 1,
                page_token: String::new(),
            })
        )
        .await?;
        rows.push(MappingRow {
            last_run: runs.runs.first().map(run_summary),
            name,
            source: mapping.source,
            target: mapping.target,
            enable_sync: mapping.enable_sync,
        });
    }
    Ok(rows)
}

/// A value in a filter, as a JSON string: the text can never change the
/// filter's shape.
pub fn quoted(text: &str) -> String {
    serde_json::Value::String(text.to_string()).to_string()
}

pub fn run_state(state: RunState) -> &'static str {
    match state {
        RunState::Pending => "pending",
        RunState::Active => "running",
        RunState::Success => "succeeded",
        RunState::Failed => "failed",
        RunState::Canceled => "canceled",
        RunState::Unspecified => "unknown",
    }
}

fn run_summary(run: &ReconRun) -> RunSummary {
    let mut situations: Vec<(&String, &i64)> = run
        .situation_counts
        .iter()
        .filter(|(_, n)| **n > 0)
        .collect();
    situations.sort();
    RunSummary {
        id: run.id.clone(),
        state: run_state(run.state()),
        when: ago(run.start_time.as_ref()),
        situations: situations
            .iter()
            .map(|(name, n)| format!("{name} {n}"))
            .collect::<Vec<_>>()
            .join(", "),
    }
}

async fn queue(state: &ConsoleState, viewer: &Viewer) -> Result<Vec<QueueRow>, ConsoleError> {
    let summary = console_call!(
        state,
        viewer,
        SyncServiceClient.get_sync_queue(GetSyncQueueRequest {})
    )
    .await?;
    Ok(summary.mappings.into_iter().map(QueueRow::of).collect())
}

async fn failed_schedules(
    state: &ConsoleState,
    viewer: &Viewer,
) -> Result<Vec<FailedSchedule>, ConsoleError> {
    let schedules = console_call!(
        state,
        viewer,
        ScheduleServiceClient.list_schedules(ListSchedulesRequest {})
    )
    .await?;
    let mut failed = Vec::new();
    for schedule in schedules.schedules {
        let last = console_call!(
            state,
            viewer,
            ScheduleServiceClient.list_executions(ListExecutionsRequest {
                schedule: schedule.name.clone(),
                page_size: 1,
                page_token: String::new(),
                running: false,
            })
        )
        .await?;
        if let Some(execution) = last
            .executions
            .first()
            .filter(|e| e.outcome() == execution::Outcome::Failed)
        {
            failed.push(FailedSchedule {
                id: schedule.id.clone(),
                when: ago(execution.fire_time.as_ref()),
                message: execution.message.clone(),
            });
        }
    }
    Ok(failed)
}
