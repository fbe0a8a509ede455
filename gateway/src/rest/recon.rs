//! `/openidm/recon`: Wren's reconciliation service over `ReconService`.
//!
//! - `POST /recon?_action=recon&mapping=…[&waitForCompletion=true]` →
//!   `{"_id", "state"}` (with `waitForCompletion`, the state it ended in);
//! - `POST /recon?_action=reconById&mapping=…&ids=a,b` (or `&id=a`);
//! - `GET /recon` → `{"reconciliations": [summary, …]}`, newest first;
//! - `GET /recon/{id}` → Wren's summary of one run;
//! - `POST /recon/{id}?_action=cancel` → `{"_id", "action": "cancel", "status": "INITIATED"}`.
//!
//! A wait polls the run (every call is short, so the gateway's core timeout
//! never cuts a long reconciliation); a client that hangs up stops the wait,
//! not the run.

use std::collections::HashMap;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use idm_proto::v1::config_service_client::ConfigServiceClient;
use idm_proto::v1::recon_run::State as RunState;
use idm_proto::v1::recon_service_client::ReconServiceClient;
use idm_proto::v1::{
    CancelReconRequest, DurationStats, GetMappingRequest, GetReconRequest, ListReconsRequest,
    ReconByIdRequest, ReconProgress, ReconRun, StartReconRequest,
};
use serde_json::{Map, Value, json};

use super::{Caller, Params, RestError, RestState, core_call, json_response};
use crate::core::Core;

/// The most runs `GET /recon` lists (the newest).
const MAX_LISTED: i32 = 1000;
/// How long a cancel waits for the core's answer before it is INITIATED.
const CANCEL_ANSWER: Duration = Duration::from_secs(1);
/// The most ids one `reconById` takes.
const MAX_IDS: usize = 1000;

/// Wren's situation names, all shown (0 when none was met).
const SITUATIONS: [&str; 14] = [
    "SOURCE_IGNORED",
    "TARGET_CHANGED",
    "SOURCE_TARGET_CONFLICT",
    "TARGET_IGNORED",
    "UNASSIGNED",
    "FOUND_ALREADY_LINKED",
    "MISSING",
    "ALL_GONE",
    "FOUND",
    "AMBIGUOUS",
    "UNQUALIFIED",
    "CONFIRMED",
    "SOURCE_MISSING",
    "ABSENT",
];

pub fn routes() -> Router<RestState> {
    Router::new()
        .route("/recon", get(list).post(action))
        .route("/recon/{id}", get(read).post(run_action))
}

fn state_name(run: &ReconRun) -> &'static str {
    match run.state() {
        RunState::Pending | RunState::Active | RunState::Unspecified => "ACTIVE",
        RunState::Success => "SUCCESS",
        RunState::Failed => "FAILED",
        RunState::Canceled => "CANCELED",
    }
}

fn ended(run: &ReconRun) -> bool {
    !matches!(
        run.state(),
        RunState::Pending | RunState::Active | RunState::Unspecified
    )
}

/// Wren's words for its stages.
fn stage_description(stage: &str) -> &'static str {
    match stage {
        "ACTIVE_INITIALIZED" => "initialized",
        "ACTIVE_QUERY_ENTRIES" => "querying all entries",
        "ACTIVE_RECONCILING_SOURCE" => "reconciling source entries",
        "ACTIVE_RECONCILING_TARGET" => "reconciling target entries",
        "ACTIVE_LINK_CLEANUP" => "checking for orphan links",
        "ACTIVE_PROCESSING_RESULTS" => "processing reconciliation results",
        "ACTIVE_CANCELING" => "cancelling reconciliation",
        "COMPLETED_SUCCESS" => "reconciliation completed.",
        "COMPLETED_CANCELED" => "reconciliation aborted.",
        "COMPLETED_FAILED" => "reconciliation failed.",
        _ => "",
    }
}

/// `{"existing": {"processed", "total"}}`; Wren writes the total as text,
/// `"?"` while it is not known.
fn progress(p: Option<&ReconProgress>, created: Option<i64>) -> Value {
    let p = p.cloned().unwrap_or_default();
    let total = if p.total > 0 || p.processed == 0 && p.existing == 0 {
        p.total.max(0).to_string()
    } else {
        "?".to_string()
    };
    let mut body = json!({"existing": {"processed": p.processed, "total": total}});
    if let (Some(created), Some(object)) = (created, body.as_object_mut()) {
        object.insert("created".into(), json!(created));
    }
    body
}

fn millis(duration: Option<&prost_types::Duration>) -> i64 {
    duration.map_or(0, |d| {
        d.seconds
            .saturating_mul(1000)
            .saturating_add(i64::from(d.nanos / 1_000_000))
    })
}

/// Wren's `durationSummary`: per phase, its timings in whole milliseconds.
fn duration_summary(run: &ReconRun) -> Value {
    let whole = |ms: f64| ms.round() as i64;
    let phase = |stats: &DurationStats| {
        json!({
            "count": stats.count,
            "min": whole(stats.min_ms),
            "max": whole(stats.max_ms),
            "mean": whole(stats.mean_ms),
            "sum": whole(stats.sum_ms),
            "stdDev": whole(stats.std_dev_ms),
        })
    };
    Value::Object(
        run.duration_summary
            .iter()
            .map(|(name, stats)| (name.clone(), phase(stats)))
            .collect(),
    )
}

/// Wren's summary of a run. `mapping` (the definition's `source` and
/// `target`), when known, fills `parameters`.
pub fn summary(run: &ReconRun, mapping: Option<&(String, String)>) -> Value {
    let mut situations = Map::new();
    for name in SITUATIONS {
        situations.insert(name.into(), json!(0));
    }
    for (name, count) in &run.situation_counts {
        situations.insert(name.clone(), json!(count));
    }
    // Every record reconciled met one situation.
    let processed: i64 = run.situation_counts.values().sum();
    let failures = run.failure_count;
    let created = run.action_counts.get("CREATE").copied().unwrap_or(0);
    let parameters = match mapping {
        Some((source, target)) => json!({
            "sourceQuery": {"resourceName": source, "queryId": "query-all-ids"},
            "targetQuery": {"resourceName": target, "queryId": "query-all-ids"},
        }),
        None => json!({}),
    };
    json!({
        "_id": run.id,
        "mapping": run.mapping,
        "state": state_name(run),
        "stage": run.stage,
        "stageDescription": stage_description(&run.stage),
        "progress": {
            "source": progress(run.source.as_ref(), None),
            "target": progress(run.target.as_ref(), Some(created)),
            "links": progress(run.links.as_ref(), Some(created)),
        },
        "situationSummary": situations,
        "statusSummary": {
            "SUCCESS": processed.saturating_sub(failures).max(0),
            "FAILURE": failures,
        },
        "durationSummary": duration_summary(run),
        "parameters": parameters,
        "started": run.start_time.as_ref().map(ToString::to_string).unwrap_or_default(),
        "ended": run.end_time.as_ref().map(ToString::to_string).unwrap_or_default(),
        "duration": millis(run.duration.as_ref()),
    })
}

fn plain_id(id: &str) -> Result<&str, RestError> {
    if id.is_empty() || id.contains('/') || id.len() > 128 {
        return Err(RestError::not_found(format!("recon/{id} not found")));
    }
    Ok(id)
}

async fn get_run(state: &RestState, caller: &Caller, id: &str) -> Result<ReconRun, RestError> {
    let name = format!("recon/{id}");
    core_call!(
        state,
        caller,
        ReconServiceClient.get_recon(GetReconRequest { name: name.clone() })
    )
    .await
}

/// The mapping's source and target, or `None` if it cannot be read (deleted
/// since the run, or the caller may not read mappings).
async fn mapping_ends(state: &RestState, caller: &Caller, name: &str) -> Option<(String, String)> {
    let mapping = core_call!(
        state,
        caller,
        ConfigServiceClient.get_mapping(GetMappingRequest {
            name: format!("mappings/{name}"),
        })
    )
    .await
    .ok()?;
    Some((mapping.source, mapping.target))
}

async fn read(
    State(state): State<RestState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, RestError> {
    let id = plain_id(&id)?;
    let run = get_run(&state, &caller, id).await?;
    let ends = mapping_ends(&state, &caller, &run.mapping).await;
    Ok(json_response(StatusCode::OK, &summary(&run, ends.as_ref())))
}

async fn list(State(state): State<RestState>, caller: Caller) -> Result<Response, RestError> {
    let runs = core_call!(
        &state,
        &caller,
        ReconServiceClient.list_recons(ListReconsRequest {
            page_size: MAX_LISTED,
            ..Default::default()
        })
    )
    .await?
    .runs;
    let mut ends: HashMap<String, Option<(String, String)>> = HashMap::new();
    let mut shown = Vec::with_capacity(runs.len());
    for run in &runs {
        if !ends.contains_key(&run.mapping) {
            let found = mapping_ends(&state, &caller, &run.mapping).await;
            ends.insert(run.mapping.clone(), found);
        }
        let mapping = ends.get(&run.mapping).and_then(Option::as_ref);
        shown.push(summary(run, mapping));
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({ "reconciliations": shown }),
    ))
}

/// `ids=a,b,c` (Wren) or `id=a`.
fn source_ids(params: &Params) -> Result<Vec<String>, RestError> {
    let given = params
        .get("ids")
        .or_else(|| params.get("id"))
        .ok_or_else(|| RestError::bad_request("reconById needs the ids parameter"))?;
    let ids: Vec<String> = given
        .split(',')
        .map(str::trim)
        .filter(|id| !id.is_empty())
        .map(str::to_string)
        .collect();
    if ids.is_empty() {
        return Err(RestError::bad_request("reconById needs at least one id"));
    }
    if ids.len() > MAX_IDS {
        return Err(RestError::bad_request(format!(
            "reconById takes at most {MAX_IDS} ids"
        )));
    }
    Ok(ids)
}

async fn action(
    State(state): State<RestState>,
    caller: Caller,
    params: Params,
) -> Result<Response, RestError> {
    let action = params.action()?;
    if action != "recon" && action != "reconById" {
        return Err(RestError::unknown_action(action));
    }
    let mapping = params
        .get("mapping")
        .filter(|m| !m.is_empty())
        .ok_or_else(|| RestError::bad_request("the mapping parameter is required"))?
        .to_string();
    let wait = params.flag("waitForCompletion")?;
    let ids = if action == "reconById" {
        Some(source_ids(&params)?)
    } else {
        None
    };
    let started = caller
        .call(&state, |bearer| {
            let mut recon = ReconServiceClient::new(state.core.channel());
            let mapping = mapping.clone();
            let ids = ids.clone();
            async move {
                let run = match ids {
                    None => {
                        let request = StartReconRequest {
                            mapping,
                            wait: false,
                        };
                        recon
                            .start_recon(Core::authorized(&bearer, request)?)
                            .await?
                    }
                    Some(source_ids) => {
                        let request = ReconByIdRequest {
                            mapping,
                            source_ids,
                            wait: false,
                        };
                        recon
                            .recon_by_id(Core::authorized(&bearer, request)?)
                            .await?
                    }
                };
                Ok(run.into_inner())
            }
        })
        .await?;
    let run = if wait {
        wait_for_end(&state, &caller, started).await?
    } else {
        started
    };
    Ok(json_response(
        StatusCode::OK,
        &json!({"_id": run.id, "state": state_name(&run)}),
    ))
}

/// Polls the run until it ends: 50 ms at first, then up to every second.
async fn wait_for_end(
    state: &RestState,
    caller: &Caller,
    mut run: ReconRun,
) -> Result<ReconRun, RestError> {
    let mut pause = Duration::from_millis(50);
    while !ended(&run) {
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(1));
        run = get_run(state, caller, &run.id).await?;
    }
    Ok(run)
}

async fn run_action(
    State(state): State<RestState>,
    caller: Caller,
    Path(id): Path<String>,
    params: Params,
) -> Result<Response, RestError> {
    let id = plain_id(&id)?.to_string();
    match params.action()? {
        "cancel" => {
            caller
                .call(&state, |bearer| {
                    let mut recon = ReconServiceClient::new(state.core.channel());
                    let request = CancelReconRequest {
                        name: format!("recon/{id}"),
                    };
                    async move {
                        let request = Core::authorized(&bearer, request)?;
                        // The core answers when the run has stopped, which may
                        // take longer than a call may: a refusal comes at once,
                        // and a cancel still under way is Wren's INITIATED.
                        let mut asked =
                            tokio::spawn(async move { recon.cancel_recon(request).await });
                        match tokio::time::timeout(CANCEL_ANSWER, &mut asked).await {
                            Ok(Ok(answer)) => answer.map(|_| ()),
                            Ok(Err(e)) => Err(tonic::Status::internal(format!(
                                "the cancel call failed: {e}"
                            ))),
                            Err(_) => Ok(()),
                        }
                    }
                })
                .await?;
            Ok(json_response(
                StatusCode::OK,
                &json!({"_id": id, "action": "cancel", "status": "INITIATED"}),
            ))
        }
        other => Err(RestError::unknown_action(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_finished_run_reads_as_wren_summarises_it() {
        let run = ReconRun {
            id: "r1".into(),
            mapping: "csvEmployee_managedUser".into(),
            state: RunState::Success as i32,
            stage: "COMPLETED_SUCCESS".into(),
            source: Some(ReconProgress {
                existing: 3,
                processed: 3,
                total: 3,
            }),
            situation_counts: HashMap::from([("ABSENT".to_string(), 3)]),
            action_counts: HashMap::from([("CREATE".to_string(), 3)]),
            duration: Some(prost_types::Duration {
                seconds: 1,
                nanos: 250_000_000,
            }),
            duration_summary: HashMap::from([(
                "sourcePhase".to_string(),
                DurationStats {
                    count: 2,
                    min_ms: 10.4,
                    max_ms: 30.6,
                    mean_ms: 20.5,
                    sum_ms: 41.0,
                    std_dev_ms: 10.1,
                },
            )]),
            ..Default::default()
        };
        let ends = (
            "system/csv/employee".to_string(),
            "managed/user".to_string(),
        );
        let body = summary(&run, Some(&ends));
        assert_eq!(body["state"], "SUCCESS");
        assert_eq!(body["stageDescription"], "reconciliation completed.");
        assert_eq!(body["situationSummary"]["ABSENT"], 3);
        assert_eq!(body["situationSummary"]["CONFIRMED"], 0);
        assert_eq!(body["statusSummary"], json!({"SUCCESS": 3, "FAILURE": 0}));
        assert_eq!(body["progress"]["source"]["existing"]["total"], "3");
        assert_eq!(body["progress"]["target"]["created"], 3);
        assert_eq!(body["duration"], 1250);
        assert_eq!(
            body["durationSummary"],
            json!({"sourcePhase": {"count": 2, "min": 10, "max": 31, "mean": 21, "sum": 41, "stdDev": 10}})
        );
        assert_eq!(
            body["parameters"]["sourceQuery"]["resourceName"],
            "system/csv/employee"
        );
    }
}
