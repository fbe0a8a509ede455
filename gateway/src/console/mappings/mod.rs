//! `/admin/mappings`: each mapping with its source, target, implicit sync
//! and last run; a mapping's page with Reconcile now, Plan and its run
//! history. Runs themselves are `runs.rs`'s (`/admin/runs/{id}`).
//!
//! - `GET /mappings` (`ConfigService.ListMappings`, then one
//!   `ReconService.ListRecons` of page size 1 per mapping for its last run);
//! - `GET /mappings/{name}[?page=token]` (`GetMapping`, `ListRecons` filtered
//!   on the mapping, 20 a page);
//! - `POST /mappings/{name}/reconcile` (`StartRecon`) → 303 to the run;
//! - `GET /mappings/{name}/plan` (`PlanRecon`: what a run would change,
//!   changing nothing) — `plan.rs`.

pub mod format;
mod plan;

use askama::Template;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::routing::{get, post};
use idm_proto::json::from_proto_struct;
use idm_proto::v1::config_service_client::ConfigServiceClient;
use idm_proto::v1::recon_service_client::ReconServiceClient;
use idm_proto::v1::{
    GetMappingRequest, ListMappingsRequest, ListReconsRequest, Mapping, ReconRun, StartReconRequest,
};
use serde::Deserialize;

use self::format::When;

use super::{
    Chrome, ConsoleError, ConsoleState, Form, Nav, Viewer, console_call, page, render, see_other,
};

/// Runs a mapping page lists at a time.
const HISTORY_PAGE: i32 = 20;
/// Mapping names longer than this are not asked of the core.
const MAX_NAME: usize = 256;

pub fn routes() -> Router<ConsoleState> {
    Router::new()
        .route("/mappings", get(list))
        .route("/mappings/{name}", get(show))
        .route("/mappings/{name}/reconcile", post(reconcile))
        .route("/mappings/{name}/plan", get(plan::plan))
}

/// A mapping name as a path segment: what the core could hold, nothing that
/// would change the path.
pub(super) fn checked_name(name: &str) -> Result<&str, ConsoleError> {
    if name.is_empty() || name.len() > MAX_NAME || name.contains('/') {
        return Err(ConsoleError::NotFound(format!("mappings/{name}")));
    }
    Ok(name)
}

/// A filter naming one mapping, its name quoted for the filter grammar.
fn mapping_filter(name: &str) -> String {
    let quoted = serde_json::Value::String(name.to_string()).to_string();
    format!("mapping eq {quoted}")
}

/// One run as a row of a table.
pub struct RunRow {
    pub id: String,
    pub mapping: String,
    pub mapping_url: String,
    pub state: &'static str,
    pub started: Option<When>,
    pub duration: String,
    pub processed: String,
    pub situations: String,
    pub actions: String,
    pub failures: String,
    pub started_by: String,
}

impl RunRow {
    pub fn of(run: &ReconRun) -> RunRow {
        RunRow {
            id: run.id.clone(),
            mapping: run.mapping.clone(),
            mapping_url: format::segment(&run.mapping),
            state: format::run_state(run),
            started: When::of(run.start_time.as_ref()),
            duration: format::duration(run.duration.as_ref()),
            processed: page::thousands(run.source.as_ref().map_or(0, |p| p.processed)),
            situations: format::inline(&format::situations(&run.situation_counts)),
            actions: format::inline(&format::actions(&run.action_counts)),
            failures: page::thousands(run.failure_count),
            started_by: run.started_by.clone(),
        }
    }
}

struct MappingRow {
    name: String,
    /// `name` as a path segment.
    url: String,
    source: String,
    target: String,
    enable_sync: bool,
    last_run: Option<RunRow>,
}

#[derive(Template)]
#[template(path = "console/mappings/list.html")]
struct ListPage {
    chrome: Chrome,
    mappings: Vec<MappingRow>,
}

fn short_name(mapping: &Mapping) -> String {
    mapping
        .name
        .strip_prefix("mappings/")
        .unwrap_or(&mapping.name)
        .to_string()
}

async fn last_run(
    state: &ConsoleState,
    viewer: &Viewer,
    mapping: &str,
) -> Result<Option<ReconRun>, ConsoleError> {
    let filter = mapping_filter(mapping);
    let listed = console_call!(
        state,
        viewer,
        ReconServiceClient.list_recons(ListReconsRequest {
            filter: filter.clone(),
            page_size: 1,
            page_token: String::new(),
        })
    )
    .await?;
    Ok(listed.runs.into_iter().next())
}

async fn list(State(state): State<ConsoleState>, viewer: Viewer) -> Result<Response, ConsoleError> {
    let listed = console_call!(
        &state,
        &viewer,
        ConfigServiceClient.list_mappings(ListMappingsRequest {})
    )
    .await?;
    let mut mappings = Vec::with_capacity(listed.mappings.len());
    for mapping in &listed.mappings {
        let name = short_name(mapping);
        let last = last_run(&state, &viewer, &name).await?;
        mappings.push(MappingRow {
            source: mapping.source.clone(),
            target: mapping.target.clone(),
            enable_sync: mapping.enable_sync,
            last_run: last.as_ref().map(RunRow::of),
            url: format::segment(&name),
            name,
        });
    }
    let chrome = Chrome::new(&state, &viewer, Nav::Mappings, "Mappings").await;
    Ok(render(&ListPage { chrome, mappings }))
}

/// One property rule of the mapping, as the page lists them.
struct PropertyRow {
    source: String,
    target: String,
    how: String,
}

#[derive(Template)]
#[template(path = "console/mappings/show.html")]
struct ShowPage {
    chrome: Chrome,
    name: String,
    url: String,
    source: String,
    target: String,
    enable_sync: bool,
    properties: Vec<PropertyRow>,
    runs: Vec<RunRow>,
    next_page: Option<String>,
}

/// The rules of `properties`: source → target, and whether a transform,
/// condition or default takes part (their scripts are not shown).
fn property_rows(mapping: &Mapping) -> Vec<PropertyRow> {
    let Some(definition) = mapping.definition.as_ref() else {
        return Vec::new();
    };
    let definition = from_proto_struct(definition);
    let Some(properties) = definition.get("properties").and_then(|p| p.as_array()) else {
        return Vec::new();
    };
    properties
        .iter()
        .map(|rule| {
            let text = |key: &str| {
                rule.get(key)
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
                    .to_string()
            };
            let how: Vec<&str> = [
                ("transform", "transform"),
                ("condition", "condition"),
                ("default", "default"),
            ]
            .into_iter()
            .filter(|(key, _)| rule.get(*key).is_some_and(|v| !v.is_null()))
            .map(|(_, word)| word)
            .collect();
            let source = text("source");
            PropertyRow {
                // An empty source: the whole source object goes to the script.
                source: if source.is_empty() {
                    "(the object)".into()
                } else {
                    source
                },
                target: text("target"),
                how: how.join(", "),
            }
        })
        .collect()
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
    let name = checked_name(&name)?.to_string();
    let mapping = console_call!(
        &state,
        &viewer,
        ConfigServiceClient.get_mapping(GetMappingRequest {
            name: format!("mappings/{name}"),
        })
    )
    .await?;
    let filter = mapping_filter(&name);
    let page_token = query.page.unwrap_or_default();
    let history = console_call!(
        &state,
        &viewer,
        ReconServiceClient.list_recons(ListReconsRequest {
            filter: filter.clone(),
            page_size: HISTORY_PAGE,
            page_token: page_token.clone(),
        })
    )
    .await?;
    let chrome = Chrome::new(&state, &viewer, Nav::Mappings, &name).await;
    Ok(render(&ShowPage {
        chrome,
        properties: property_rows(&mapping),
        source: mapping.source,
        target: mapping.target,
        enable_sync: mapping.enable_sync,
        runs: history.runs.iter().map(RunRow::of).collect(),
        next_page: (!history.next_page_token.is_empty()).then_some(history.next_page_token),
        url: format::segment(&name),
        name,
    }))
}

async fn reconcile(
    State(state): State<ConsoleState>,
    Path(name): Path<String>,
    form: Form,
) -> Result<Response, ConsoleError> {
    form.viewer.require_change()?;
    let name = checked_name(&name)?.to_string();
    let run = console_call!(
        &state,
        &form.viewer,
        ReconServiceClient.start_recon(StartReconRequest {
            mapping: name.clone(),
            wait: false,
        })
    )
    .await?;
    Ok(see_other(&format!("/admin/runs/{}", run.id)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mapping_name_is_quoted_in_the_filter() {
        assert_eq!(
            mapping_filter("csvEmployee_managedUser"),
            r#"mapping eq "csvEmployee_managedUser""#
        );
        assert_eq!(mapping_filter(r#"a" or "1"#), r#"mapping eq "a\" or \"1""#);
        idm_proto::filter::parse(&mapping_filter(r#"a" or "1"#)).unwrap();
    }

    #[test]
    fn names_that_would_change_the_path_are_not_found() {
        assert!(checked_name("csvEmployee_managedUser").is_ok());
        assert!(checked_name("").is_err());
        assert!(checked_name("a/b").is_err());
        assert!(checked_name(&"x".repeat(MAX_NAME + 1)).is_err());
    }
}
