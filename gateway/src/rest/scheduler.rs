//! `/openidm/scheduler`: Wren's scheduler service over `ScheduleService`.
//!
//! - `GET /scheduler/job/{id}`; `PUT` creates or replaces (`If-None-Match: *`
//!   only creates), `DELETE` answers the job it deleted; `POST
//!   ?_action=pause|resume|trigger` on one job.
//! - `GET /scheduler/job?_queryId=query-all-ids` or `?_queryFilter=…`;
//!   `POST /scheduler/job?_action=create` (an id is generated),
//!   `pauseJobs`, `resumeJobs` (`{"success": true}`),
//!   `listCurrentlyExecutingJobs` (the jobs with a run still going).
//! - `POST /scheduler?_action=validateQuartzCronExpression` with
//!   `{"cronExpression": …}` → `{"valid": true|false}`.
//!
//! A job is Wren's schedule JSON: `enabled`, `type`, `schedule`,
//! `repeatInterval` (simple, milliseconds), `timeZone`, `startTime`,
//! `endTime`, `concurrentExecution`, `misfirePolicy`, `invokeService`,
//! `invokeContext`; Wren's `persisted`, `recoverable`, `invokeLogLevel` and
//! `repeatCount` are accepted and not kept, and what a read adds (`_id`,
//! `nextRunDate`, `previousRunDate`, idm's `paused`) is ignored, so a job
//! read can be written back. Any other key is refused by name.

use std::collections::BTreeSet;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use axum::routing::{get, post};
use idm_proto::json::{from_proto_struct, to_proto_struct};
use idm_proto::v1::schedule_service_client::ScheduleServiceClient;
use idm_proto::v1::{
    CreateScheduleRequest, DeleteScheduleRequest, GetScheduleRequest, ListExecutionsRequest,
    ListSchedulesRequest, PauseScheduleRequest, ResumeScheduleRequest, RunScheduleRequest,
    Schedule, UpdateScheduleRequest, ValidateCronExpressionRequest,
};
use serde_json::{Value, json};

use super::core_call;
use super::listing::{Query, WrenFilter, query_result};
use super::{Caller, JsonBody, Params, RestError, RestState, json_response};

pub fn routes() -> Router<RestState> {
    Router::new()
        .route("/scheduler", post(scheduler_action))
        .route("/scheduler/job", get(query).post(jobs_action))
        .route(
            "/scheduler/job/{id}",
            get(read).put(put).delete(delete).post(job_action),
        )
}

/// Keys a read shows or Wren accepts that idm does not keep.
const IGNORED_KEYS: [&str; 9] = [
    "_id",
    "persisted",
    "recoverable",
    "invokeLogLevel",
    "repeatCount",
    "nextRunDate",
    "previousRunDate",
    "paused",
    "triggers",
];

/// The most running executions looked at by `listCurrentlyExecutingJobs`.
const MAX_RUNNING: i32 = 1000;

fn name_of(id: &str) -> Result<String, RestError> {
    if id.is_empty() || id.contains('/') || id.len() > 256 {
        return Err(RestError::not_found(format!(
            "scheduler/job/{id} not found"
        )));
    }
    Ok(format!("schedules/{id}"))
}

/// A job as Wren shows it.
pub fn job(schedule: &Schedule) -> Value {
    let time = |t: &Option<prost_types::Timestamp>| {
        t.as_ref()
            .map_or(Value::Null, |t| Value::String(t.to_string()))
    };
    json!({
        "_id": schedule.id,
        "enabled": schedule.enabled,
        "persisted": true,
        "type": schedule.r#type,
        "schedule": schedule.schedule,
        "timeZone": schedule.time_zone,
        "startTime": time(&schedule.start_time),
        "endTime": time(&schedule.end_time),
        "concurrentExecution": schedule.concurrent_execution,
        "misfirePolicy": schedule.misfire_policy,
        "invokeService": schedule.invoke_service,
        "invokeContext": schedule
            .invoke_context
            .as_ref()
            .map_or(Value::Null, |c| Value::Object(from_proto_struct(c))),
        "nextRunDate": time(&schedule.next_fire_time),
        "previousRunDate": time(&schedule.last_fire_time),
        "paused": schedule.paused,
    })
}

/// Wren's schedule JSON as the proto's fields; 400 naming a bad key.
pub fn schedule_of(body: &Value) -> Result<Schedule, RestError> {
    let object = body
        .as_object()
        .ok_or_else(|| RestError::bad_request("a schedule is a JSON object"))?;
    let bad = |key: &str, want: &str| RestError::bad_request(format!("{key}: expected {want}"));
    let text = |key: &str| -> Result<String, RestError> {
        match object.get(key) {
            None | Some(Value::Null) => Ok(String::new()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(bad(key, "a string")),
        }
    };
    let flag = |key: &str, default: bool| -> Result<bool, RestError> {
        match object.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(bad(key, "true or false")),
        }
    };
    let time = |key: &str| -> Result<Option<prost_types::Timestamp>, RestError> {
        let given = text(key)?;
        if given.is_empty() {
            return Ok(None);
        }
        given
            .parse()
            .map(Some)
            .map_err(|_| bad(key, "an RFC 3339 time such as 2026-12-01T00:00:00Z"))
    };
    let known = [
        "enabled",
        "type",
        "schedule",
        "repeatInterval",
        "timeZone",
        "startTime",
        "endTime",
        "concurrentExecution",
        "misfirePolicy",
        "invokeService",
        "invokeContext",
    ];
    if let Some(unknown) = object
        .keys()
        .find(|k| !known.contains(&k.as_str()) && !IGNORED_KEYS.contains(&k.as_str()))
    {
        return Err(RestError::bad_request(format!(
            "{unknown}: not a schedule setting idm supports"
        )));
    }
    let r#type = text("type")?;
    let mut schedule = text("schedule")?;
    if schedule.is_empty() && r#type == "simple" {
        match object.get("repeatInterval") {
            None | Some(Value::Null) => {}
            Some(Value::Number(ms)) if ms.as_u64().is_some_and(|ms| ms > 0) => {
                schedule = format!("{ms}ms");
            }
            Some(_) => return Err(bad("repeatInterval", "a number of milliseconds above 0")),
        }
    }
    let invoke_context = match object.get("invokeContext") {
        None | Some(Value::Null) => None,
        Some(Value::Object(context)) => Some(to_proto_struct(context)),
        Some(_) => return Err(bad("invokeContext", "an object")),
    };
    Ok(Schedule {
        enabled: flag("enabled", true)?,
        r#type,
        schedule,
        time_zone: text("timeZone")?,
        start_time: time("startTime")?,
        end_time: time("endTime")?,
        concurrent_execution: flag("concurrentExecution", false)?,
        misfire_policy: text("misfirePolicy")?,
        invoke_service: text("invokeService")?,
        invoke_context,
        ..Schedule::default()
    })
}

async fn get_job(state: &RestState, caller: &Caller, name: &str) -> Result<Schedule, RestError> {
    core_call!(
        state,
        caller,
        ScheduleServiceClient.get_schedule(GetScheduleRequest {
            name: name.to_string()
        })
    )
    .await
}

async fn all_jobs(state: &RestState, caller: &Caller) -> Result<Vec<Schedule>, RestError> {
    let listed = core_call!(
        state,
        caller,
        ScheduleServiceClient.list_schedules(ListSchedulesRequest {})
    )
    .await?;
    Ok(listed.schedules)
}

async fn read(
    State(state): State<RestState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, RestError> {
    let schedule = get_job(&state, &caller, &name_of(&id)?).await?;
    Ok(json_response(StatusCode::OK, &job(&schedule)))
}

async fn create(
    state: &RestState,
    caller: &Caller,
    id: &str,
    schedule: Schedule,
) -> Result<Response, RestError> {
    let created = core_call!(
        state,
        caller,
        ScheduleServiceClient.create_schedule(CreateScheduleRequest {
            schedule_id: id.to_string(),
            schedule: Some(schedule.clone()),
        })
    )
    .await?;
    Ok(json_response(StatusCode::CREATED, &job(&created)))
}

async fn put(
    State(state): State<RestState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> Result<Response, RestError> {
    let name = name_of(&id)?;
    let mut schedule = schedule_of(&body)?;
    let only_create = headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == b"*");
    let exists = match get_job(&state, &caller, &name).await {
        Ok(_) => true,
        Err(e) if e.code == 404 => false,
        Err(e) => return Err(e),
    };
    if !exists {
        return create(&state, &caller, &id, schedule).await;
    }
    if only_create {
        return Err(RestError::precondition_failed(format!(
            "scheduler/job/{id} already exists"
        )));
    }
    schedule.name = name;
    let updated = core_call!(
        &state,
        &caller,
        ScheduleServiceClient.update_schedule(UpdateScheduleRequest {
            schedule: Some(schedule.clone()),
        })
    )
    .await?;
    Ok(json_response(StatusCode::OK, &job(&updated)))
}

async fn delete(
    State(state): State<RestState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, RestError> {
    let name = name_of(&id)?;
    let before = get_job(&state, &caller, &name).await?;
    core_call!(
        &state,
        &caller,
        ScheduleServiceClient.delete_schedule(DeleteScheduleRequest { name: name.clone() })
    )
    .await?;
    Ok(json_response(StatusCode::OK, &job(&before)))
}

async fn job_action(
    State(state): State<RestState>,
    caller: Caller,
    Path(id): Path<String>,
    params: Params,
) -> Result<Response, RestError> {
    let name = name_of(&id)?;
    match params.action()? {
        "pause" => {
            core_call!(
                &state,
                &caller,
                ScheduleServiceClient.pause_schedule(PauseScheduleRequest { name: name.clone() })
            )
            .await?;
        }
        "resume" => {
            core_call!(
                &state,
                &caller,
                ScheduleServiceClient.resume_schedule(ResumeScheduleRequest { name: name.clone() })
            )
            .await?;
        }
        "trigger" => {
            core_call!(
                &state,
                &caller,
                ScheduleServiceClient.run_schedule(RunScheduleRequest { name: name.clone() })
            )
            .await?;
        }
        other => return Err(RestError::unknown_action(other)),
    }
    Ok(json_response(StatusCode::OK, &json!({"success": true})))
}

async fn query(
    State(state): State<RestState>,
    caller: Caller,
    params: Params,
) -> Result<Response, RestError> {
    let query = Query::of(&params)?;
    let jobs = all_jobs(&state, &caller).await?;
    let result: Vec<Value> = match query {
        Query::AllIds => jobs.iter().map(|s| json!({"_id": s.id})).collect(),
        Query::Filter(text) => {
            let filter = WrenFilter::parse(&text)?;
            jobs.iter()
                .map(job)
                .filter(|j| j.as_object().is_some_and(|o| filter.matches(o, None)))
                .collect()
        }
    };
    Ok(json_response(
        StatusCode::OK,
        &query_result(result, None, None),
    ))
}

async fn jobs_action(
    State(state): State<RestState>,
    caller: Caller,
    params: Params,
    JsonBody(body): JsonBody,
) -> Result<Response, RestError> {
    match params.action()? {
        "create" => create(&state, &caller, "", schedule_of(&body)?).await,
        action @ ("pauseJobs" | "resumeJobs") => {
            for schedule in all_jobs(&state, &caller).await? {
                let name = schedule.name;
                let done = if action == "pauseJobs" {
                    core_call!(
                        &state,
                        &caller,
                        ScheduleServiceClient
                            .pause_schedule(PauseScheduleRequest { name: name.clone() })
                    )
                    .await
                } else {
                    core_call!(
                        &state,
                        &caller,
                        ScheduleServiceClient
                            .resume_schedule(ResumeScheduleRequest { name: name.clone() })
                    )
                    .await
                };
                match done {
                    Ok(_) => {}
                    // Deleted since it was listed.
                    Err(e) if e.code == 404 => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(json_response(StatusCode::OK, &json!({"success": true})))
        }
        "listCurrentlyExecutingJobs" => {
            let running = core_call!(
                &state,
                &caller,
                ScheduleServiceClient.list_executions(ListExecutionsRequest {
                    running: true,
                    page_size: MAX_RUNNING,
                    ..Default::default()
                })
            )
            .await?;
            let names: BTreeSet<String> =
                running.executions.into_iter().map(|e| e.schedule).collect();
            let mut jobs = Vec::with_capacity(names.len());
            for name in names {
                match get_job(&state, &caller, &name).await {
                    Ok(schedule) => jobs.push(job(&schedule)),
                    Err(e) if e.code == 404 => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(json_response(StatusCode::OK, &Value::Array(jobs)))
        }
        other => Err(RestError::unknown_action(other)),
    }
}

/// The longest cron expression sent to the core.
const MAX_CRON_LEN: usize = 1024;

async fn scheduler_action(
    State(state): State<RestState>,
    caller: Caller,
    params: Params,
    JsonBody(body): JsonBody,
) -> Result<Response, RestError> {
    match params.action()? {
        "validateQuartzCronExpression" => {
            let expression = body
                .get("cronExpression")
                .and_then(Value::as_str)
                .ok_or_else(|| RestError::bad_request("the body needs cronExpression, a string"))?
                .to_string();
            if expression.len() > MAX_CRON_LEN {
                return Ok(json_response(StatusCode::OK, &json!({"valid": false})));
            }
            let answer = core_call!(
                &state,
                &caller,
                ScheduleServiceClient.validate_cron_expression(ValidateCronExpressionRequest {
                    cron_expression: expression.clone(),
                })
            )
            .await?;
            Ok(json_response(
                StatusCode::OK,
                &json!({"valid": answer.valid}),
            ))
        }
        other => Err(RestError::unknown_action(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_read_can_be_written_back() {
        let body = json!({
            "enabled": true, "persisted": true, "type": "cron",
            "schedule": "0/15 * * * * ?", "timeZone": null,
            "invokeService": "org.forgerock.openidm.sync",
            "invokeContext": {"action": "reconcile", "mapping": "m"},
            "invokeLogLevel": "info"
        });
        let schedule = schedule_of(&body).unwrap();
        assert_eq!(schedule.schedule, "0/15 * * * * ?");
        assert_eq!(schedule.invoke_service, "org.forgerock.openidm.sync");
        let shown = job(&Schedule {
            id: "s".into(),
            ..schedule
        });
        assert_eq!(shown["invokeContext"]["mapping"], "m");
        assert!(schedule_of(&shown).is_ok(), "{shown}");
    }

    #[test]
    fn wren_simple_schedules_and_unknown_keys() {
        let simple = schedule_of(&json!({"type": "simple", "repeatInterval": 1500})).unwrap();
        assert_eq!(simple.schedule, "1500ms");
        let error = schedule_of(&json!({"schedule": "* * * * * ?", "cron": 1})).unwrap_err();
        assert_eq!(error.code, 400);
        assert!(error.message.starts_with("cron:"), "{}", error.message);
        assert_eq!(
            schedule_of(&json!({"startTime": "yesterday"}))
                .unwrap_err()
                .code,
            400
        );
    }
}
