//! `idm.v1.ScheduleService`: schedules in Wren's shape, their state and
//! their execution history.

use idm_proto::json::{from_proto_struct, to_proto_struct};
use idm_proto::v1::execution::Outcome;
use idm_proto::v1::schedule_service_server::ScheduleService;
use idm_proto::v1::{
    CreateScheduleRequest, DeleteScheduleRequest, DeleteScheduleResponse, Execution,
    GetScheduleRequest, ListExecutionsRequest, ListExecutionsResponse, ListSchedulesRequest,
    ListSchedulesResponse, PauseScheduleRequest, ResumeScheduleRequest, RunScheduleRequest,
    Schedule, Scope, UpdateScheduleRequest, ValidateCronExpressionRequest,
    ValidateCronExpressionResponse,
};
use serde_json::{Map, Value, json};
use tonic::{Code, Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};

use super::auth::caller;
use super::paging::Page;
use super::short_name;
use super::timestamp;
use super::trail;
use crate::config::{self, ApiDocumentPolicy};
use crate::scheduler::{ScheduleView, Scheduler, SchedulerError};
use crate::store::ExecutionRecord;
use std::sync::Arc;

pub struct ScheduleApi {
    pub scheduler: Scheduler,
    /// What schedules sent here may refer to (`$env` names, script files).
    pub policy: Arc<ApiDocumentPolicy>,
}

impl ScheduleApi {
    /// A schedule a client sent, checked against the operator's policy before
    /// anything reads its script file; `{"$redacted": true}` markers (an
    /// `$env` default read and written back) replaced by the stored values.
    fn admit(
        &self,
        mut body: Map<String, Value>,
        stored: Option<&Map<String, Value>>,
    ) -> Result<Map<String, Value>, Status> {
        let invalid = |field: String, message: String| {
            Status::with_error_details(
                Code::InvalidArgument,
                format!("{field}: {message}"),
                ErrorDetails::with_bad_request_violation(field, message),
            )
        };
        self.policy
            .check(&body, stored)
            .map_err(|e| invalid(e.field, e.message))?;
        config::restore_redacted(&mut body, stored).map_err(|at| {
            invalid(
                at,
                "{\"$redacted\": true} stands for a stored value, and none is stored".into(),
            )
        })?;
        Ok(body)
    }
}

impl From<SchedulerError> for Status {
    fn from(error: SchedulerError) -> Self {
        match error {
            SchedulerError::Store(e) => e.into(),
            SchedulerError::NotFound(_) => Status::not_found(error.to_string()),
            SchedulerError::Invalid {
                ref field,
                ref message,
                ..
            } => Status::with_error_details(
                Code::InvalidArgument,
                error.to_string(),
                ErrorDetails::with_bad_request_violation(field.clone(), message.clone()),
            ),
        }
    }
}

/// The proto's fields as Wren's schedule JSON (empty strings left out).
fn to_body(schedule: &Schedule) -> Map<String, Value> {
    let mut body = Map::new();
    body.insert("enabled".into(), json!(schedule.enabled));
    let mut text = |key: &str, value: &str| {
        if !value.is_empty() {
            body.insert(key.into(), json!(value));
        }
    };
    text("type", &schedule.r#type);
    text("schedule", &schedule.schedule);
    text("timeZone", &schedule.time_zone);
    text("misfirePolicy", &schedule.misfire_policy);
    text("invokeService", &schedule.invoke_service);
    if let Some(start) = &schedule.start_time {
        body.insert("startTime".into(), json!(start.to_string()));
    }
    if let Some(end) = &schedule.end_time {
        body.insert("endTime".into(), json!(end.to_string()));
    }
    body.insert(
        "concurrentExecution".into(),
        json!(schedule.concurrent_execution),
    );
    if let Some(context) = &schedule.invoke_context {
        body.insert(
            "invokeContext".into(),
            Value::Object(from_proto_struct(context)),
        );
    }
    body
}

fn to_proto(view: &ScheduleView) -> Schedule {
    let body = &view.body;
    let text = |key: &str| {
        body.get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let flag = |key: &str, default: bool| body.get(key).and_then(Value::as_bool).unwrap_or(default);
    let time = |key: &str| body.get(key).and_then(Value::as_str).and_then(timestamp);
    Schedule {
        name: format!("schedules/{}", view.name),
        id: view.name.clone(),
        enabled: flag("enabled", true),
        r#type: Some(text("type"))
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| "cron".into()),
        schedule: text("schedule"),
        time_zone: Some(text("timeZone"))
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| "UTC".into()),
        start_time: time("startTime"),
        end_time: time("endTime"),
        concurrent_execution: flag("concurrentExecution", false),
        misfire_policy: Some(text("misfirePolicy"))
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| "fireAndProceed".into()),
        invoke_service: text("invokeService"),
        // `$env` defaults redacted, like connectors'.
        invoke_context: body
            .get("invokeContext")
            .and_then(Value::as_object)
            .map(|context| to_proto_struct(&config::redact("schedule", context))),
        paused: view.paused,
        next_fire_time: view.next_fire.as_deref().and_then(timestamp),
        last_fire_time: view.last_fire.as_deref().and_then(timestamp),
    }
}

fn execution_to_proto(e: &ExecutionRecord) -> Execution {
    let outcome = match e.outcome.as_str() {
        "RUNNING" => Outcome::Running,
        "SUCCESS" => Outcome::Success,
        "FAILED" => Outcome::Failed,
        "SKIPPED_CONCURRENT" => Outcome::SkippedConcurrent,
        "SKIPPED_MISFIRE" => Outcome::SkippedMisfire,
        _ => Outcome::Unspecified,
    };
    let start = timestamp(&e.start);
    let end = e.end.as_deref().and_then(timestamp);
    let duration = match (&start, &end) {
        (Some(s), Some(t)) => {
            let nanos = (i128::from(t.seconds) - i128::from(s.seconds)) * 1_000_000_000
                + i128::from(t.nanos - s.nanos);
            Some(prost_types::Duration {
                seconds: i64::try_from(nanos / 1_000_000_000).unwrap_or(0),
                nanos: i32::try_from(nanos % 1_000_000_000).unwrap_or(0),
            })
        }
        _ => None,
    };
    Execution {
        name: format!("schedules/{}/executions/{}", e.schedule, e.eid),
        schedule: format!("schedules/{}", e.schedule),
        fire_time: timestamp(&e.fire_time),
        start_time: start,
        end_time: end,
        duration,
        outcome: outcome as i32,
        message: e.message.clone(),
        recon_run: e.recon_run.clone().unwrap_or_default(),
        node: e.node.clone(),
    }
}

#[tonic::async_trait]
impl ScheduleService for ScheduleApi {
    async fn create_schedule(
        &self,
        request: Request<CreateScheduleRequest>,
    ) -> Result<Response<Schedule>, Status> {
        let name = match request.get_ref().schedule_id.as_str() {
            "" => uuid::Uuid::new_v4().to_string(),
            given => given.to_string(),
        };
        trail::target_named(&request, "schedules/", &name);
        caller(&request)?.require(Scope::Admin)?;
        let schedule = request
            .into_inner()
            .schedule
            .ok_or_else(|| Status::invalid_argument("schedule: required"))?;
        if self.scheduler.get(&name).await.is_ok() {
            return Err(Status::already_exists(format!(
                "schedules/{name} already exists"
            )));
        }
        let body = self.admit(to_body(&schedule), None)?;
        let view = self.scheduler.put(&name, body).await?;
        Ok(Response::new(to_proto(&view)))
    }

    async fn get_schedule(
        &self,
        request: Request<GetScheduleRequest>,
    ) -> Result<Response<Schedule>, Status> {
        caller(&request)?.require(Scope::Read)?;
        let name = short_name(&request.get_ref().name, "schedules/")?;
        Ok(Response::new(to_proto(&self.scheduler.get(name).await?)))
    }

    async fn update_schedule(
        &self,
        request: Request<UpdateScheduleRequest>,
    ) -> Result<Response<Schedule>, Status> {
        let name = request.get_ref().schedule.as_ref().map(|s| s.name.as_str());
        trail::target_named(&request, "schedules/", name.unwrap_or_default());
        caller(&request)?.require(Scope::Admin)?;
        let schedule = request
            .into_inner()
            .schedule
            .ok_or_else(|| Status::invalid_argument("schedule: required"))?;
        let name = short_name(&schedule.name, "schedules/")?.to_string();
        let stored = self.scheduler.get(&name).await?;
        let body = self.admit(to_body(&schedule), Some(&stored.body))?;
        let view = self.scheduler.put(&name, body).await?;
        Ok(Response::new(to_proto(&view)))
    }

    async fn delete_schedule(
        &self,
        request: Request<DeleteScheduleRequest>,
    ) -> Result<Response<DeleteScheduleResponse>, Status> {
        trail::target_named(&request, "schedules/", &request.get_ref().name);
        caller(&request)?.require(Scope::Admin)?;
        let name = short_name(&request.get_ref().name, "schedules/")?;
        let existed = self.scheduler.delete(name).await?;
        Ok(Response::new(DeleteScheduleResponse { existed }))
    }

    async fn list_schedules(
        &self,
        request: Request<ListSchedulesRequest>,
    ) -> Result<Response<ListSchedulesResponse>, Status> {
        caller(&request)?.require(Scope::Read)?;
        let schedules = self.scheduler.list().await?.iter().map(to_proto).collect();
        Ok(Response::new(ListSchedulesResponse { schedules }))
    }

    async fn pause_schedule(
        &self,
        request: Request<PauseScheduleRequest>,
    ) -> Result<Response<Schedule>, Status> {
        trail::target_named(&request, "schedules/", &request.get_ref().name);
        caller(&request)?.require(Scope::Admin)?;
        let name = short_name(&request.get_ref().name, "schedules/")?;
        Ok(Response::new(to_proto(
            &self.scheduler.set_paused(name, true).await?,
        )))
    }

    async fn resume_schedule(
        &self,
        request: Request<ResumeScheduleRequest>,
    ) -> Result<Response<Schedule>, Status> {
        trail::target_named(&request, "schedules/", &request.get_ref().name);
        caller(&request)?.require(Scope::Admin)?;
        let name = short_name(&request.get_ref().name, "schedules/")?;
        Ok(Response::new(to_proto(
            &self.scheduler.set_paused(name, false).await?,
        )))
    }

    async fn run_schedule(
        &self,
        request: Request<RunScheduleRequest>,
    ) -> Result<Response<Execution>, Status> {
        trail::target_named(&request, "schedules/", &request.get_ref().name);
        caller(&request)?.require(Scope::Admin)?;
        let name = short_name(&request.get_ref().name, "schedules/")?;
        let execution = self.scheduler.run_now(name).await?;
        Ok(Response::new(execution_to_proto(&execution)))
    }

    async fn list_executions(
        &self,
        request: Request<ListExecutionsRequest>,
    ) -> Result<Response<ListExecutionsResponse>, Status> {
        caller(&request)?.require(Scope::Read)?;
        let request = request.into_inner();
        let schedule = if request.schedule.is_empty() {
            ""
        } else {
            short_name(&request.schedule, "schedules/")?
        };
        let running = if request.running { "running" } else { "" };
        let page = Page::of(
            request.page_size,
            &request.page_token,
            &["executions", schedule, running],
        )?;
        let mut executions = self
            .scheduler
            .executions(schedule, request.running, page.limit + 1, page.offset)
            .await?;
        let next_page_token = page.trim(&mut executions);
        Ok(Response::new(ListExecutionsResponse {
            executions: executions.iter().map(execution_to_proto).collect(),
            next_page_token,
        }))
    }

    async fn validate_cron_expression(
        &self,
        request: Request<ValidateCronExpressionRequest>,
    ) -> Result<Response<ValidateCronExpressionResponse>, Status> {
        caller(&request)?.require(Scope::Read)?;
        let expression = &request.get_ref().cron_expression;
        if expression.len() > MAX_CRON_LEN {
            return Err(Status::invalid_argument(format!(
                "cron_expression: at most {MAX_CRON_LEN} bytes"
            )));
        }
        let (valid, message) = match crate::scheduler::quartz::QuartzCron::parse(expression) {
            Ok(_) => (true, String::new()),
            Err(e) => (false, format!("{}: {}", e.field, e.message)),
        };
        Ok(Response::new(ValidateCronExpressionResponse {
            valid,
            message,
        }))
    }
}

/// The longest cron expression [`ScheduleService::validate_cron_expression`] reads.
const MAX_CRON_LEN: usize = 1024;
