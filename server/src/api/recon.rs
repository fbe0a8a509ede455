//! `idm.v1.ReconService`: reconciliation runs over gRPC.

use std::pin::Pin;

use futures::Stream;
use idm_proto::json::to_proto_value;
use idm_proto::v1::recon_run::State;
use idm_proto::v1::recon_service_server::ReconService;
use idm_proto::v1::{
    CancelReconRequest, DurationStats, GetReconRequest, ListLinksRequest, ListLinksResponse,
    ListReconsRequest, ListReconsResponse, PlanReconRequest, PlanReconResponse, PlannedChange,
    PropertyChange, ReconByIdRequest, ReconFailure, ReconProgress, ReconRun, Scope,
    StartReconRequest, WatchReconRequest,
};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status};

use super::auth::caller;
use super::paging::Page;
use super::timestamp;
use super::trail;
use crate::managed::compile_filter;
use crate::store::{Columns, PhaseTiming, Progress, ReconFailureRecord, ReconRunRecord};
use crate::sync::recon::{ReconError, Reconciler};

pub struct ReconApi {
    pub reconciler: Reconciler,
}

/// Changes listed by a plan when the request does not say.
const DEFAULT_PLAN_CHANGES: usize = 100;
const MAX_PLAN_CHANGES: usize = 10_000;

impl From<ReconError> for Status {
    fn from(error: ReconError) -> Self {
        let message = error.to_string();
        match error {
            ReconError::UnknownMapping(_) | ReconError::UnknownRun(_) => Status::not_found(message),
            ReconError::UnknownConnector { .. }
            | ReconError::AlreadyRunning { .. }
            | ReconError::Ended { .. }
            | ReconError::Mapping { .. }
            | ReconError::Connector(_) => Status::failed_precondition(message),
            ReconError::Unsupported(_) => Status::unimplemented(message),
            ReconError::Store(e) => e.into(),
            ReconError::Managed(e) => e.into(),
            ReconError::Internal(_) => {
                tracing::error!(error = %message, "reconciliation failed");
                Status::internal(message)
            }
        }
    }
}

/// The run record's attributes, as the filter language names them.
const RUN_FIELDS: Columns = Columns {
    kind: "recon",
    columns: &[
        ("mapping", "mapping"),
        ("state", "state"),
        ("startTime", "started"),
        ("endTime", "ended"),
        ("startedBy", "started_by"),
    ],
};

fn run_id(name: &str) -> Result<&str, Status> {
    name.strip_prefix("recon/")
        .filter(|id| !id.is_empty())
        .ok_or_else(|| Status::invalid_argument(format!("name: expected recon/<id>, got {name:?}")))
}

fn progress(p: &Progress) -> Option<ReconProgress> {
    Some(ReconProgress {
        existing: p.existing,
        processed: p.processed,
        total: p.total,
    })
}

fn failure(f: &ReconFailureRecord) -> ReconFailure {
    ReconFailure {
        source_id: f.source_id.clone().unwrap_or_default(),
        target_id: f.target_id.clone().unwrap_or_default(),
        line: f
            .line
            .and_then(|l| i64::try_from(l).ok())
            .unwrap_or_default(),
        situation: f.situation.clone().unwrap_or_default(),
        action: f.action.clone().unwrap_or_default(),
        reason: f.reason.clone(),
    }
}

fn duration_stats(timing: &PhaseTiming) -> DurationStats {
    let ms = |us: f64| us / 1000.0;
    DurationStats {
        count: i64::try_from(timing.count).unwrap_or(i64::MAX),
        min_ms: ms(timing.min_us as f64),
        max_ms: ms(timing.max_us as f64),
        mean_ms: ms(timing.mean_us()),
        sum_ms: ms(timing.total_us as f64),
        std_dev_ms: ms(timing.std_dev_us()),
    }
}

pub fn run_to_proto(run: &ReconRunRecord) -> ReconRun {
    let state = match run.state.as_str() {
        "PENDING" => State::Pending,
        "ACTIVE" => State::Active,
        "SUCCESS" => State::Success,
        "FAILED" => State::Failed,
        "CANCELED" => State::Canceled,
        _ => State::Unspecified,
    };
    let parse = |text: &str| OffsetDateTime::parse(text, &Rfc3339).ok();
    let end = run
        .ended
        .as_deref()
        .and_then(parse)
        .unwrap_or_else(OffsetDateTime::now_utc);
    let duration = parse(&run.started)
        .and_then(|start| std::time::Duration::try_from(end - start).ok())
        .and_then(|d| prost_types::Duration::try_from(d).ok());
    ReconRun {
        name: format!("recon/{}", run.rid),
        id: run.rid.clone(),
        mapping: run.mapping.clone(),
        state: state as i32,
        stage: run.stage.clone(),
        source: progress(&run.source),
        target: progress(&run.target),
        links: progress(&run.links),
        situation_counts: run.situations.clone().into_iter().collect(),
        action_counts: run.actions.clone().into_iter().collect(),
        failures: run.failures.iter().map(failure).collect(),
        failure_count: run.failure_count,
        start_time: timestamp(&run.started),
        end_time: run.ended.as_deref().and_then(timestamp),
        duration,
        started_by: run.started_by.clone(),
        error: run.error.clone().unwrap_or_default(),
        duration_summary: run
            .durations
            .iter()
            .map(|(phase, timing)| (phase.clone(), duration_stats(timing)))
            .collect(),
    }
}

fn source_ids(ids: Vec<String>) -> Result<Vec<String>, Status> {
    if ids.is_empty() || ids.iter().any(String::is_empty) {
        return Err(Status::invalid_argument(
            "source_ids: give one or more non-empty source ids",
        ));
    }
    Ok(ids)
}

impl ReconApi {
    /// A started run: as it is now, or as it ended when the caller waits.
    async fn answer(&self, run: ReconRunRecord, wait: bool) -> Result<Response<ReconRun>, Status> {
        let run = if wait {
            self.reconciler.wait(&run.rid).await?
        } else {
            run
        };
        Ok(Response::new(run_to_proto(&run)))
    }
}

type WatchResponse = Pin<Box<dyn Stream<Item = Result<ReconRun, Status>> + Send>>;

#[tonic::async_trait]
impl ReconService for ReconApi {
    async fn start_recon(
        &self,
        request: Request<StartReconRequest>,
    ) -> Result<Response<ReconRun>, Status> {
        let who = caller(&request)?;
        trail::target_named(&request, "mappings/", &request.get_ref().mapping);
        who.require(Scope::Admin)?;
        let run = self
            .reconciler
            .start(&request.get_ref().mapping, None, who.actor())
            .await?;
        trail::detail(&request, &format!("recon/{}", run.rid));
        let request = request.into_inner();
        self.answer(run, request.wait).await
    }

    async fn recon_by_id(
        &self,
        request: Request<ReconByIdRequest>,
    ) -> Result<Response<ReconRun>, Status> {
        let who = caller(&request)?;
        trail::target_named(&request, "mappings/", &request.get_ref().mapping);
        trail::detail(&request, "by source id");
        who.require(Scope::Admin)?;
        let request = request.into_inner();
        let ids = source_ids(request.source_ids)?;
        let run = self
            .reconciler
            .start(&request.mapping, Some(ids), who.actor())
            .await?;
        self.answer(run, request.wait).await
    }

    async fn get_recon(
        &self,
        request: Request<GetReconRequest>,
    ) -> Result<Response<ReconRun>, Status> {
        caller(&request)?.require(Scope::Read)?;
        let rid = run_id(&request.get_ref().name)?;
        let run = self.reconciler.get(rid).await?;
        Ok(Response::new(run_to_proto(&run)))
    }

    async fn list_recons(
        &self,
        request: Request<ListReconsRequest>,
    ) -> Result<Response<ListReconsResponse>, Status> {
        caller(&request)?.require(Scope::Read)?;
        let request = request.into_inner();
        let page = Page::of(
            request.page_size,
            &request.page_token,
            &["recon", &request.filter],
        )?;
        let filter = compile_filter(&request.filter, &RUN_FIELDS)?;
        let (runs, total) = self
            .reconciler
            .store()
            .query_runs(&filter, page.offset, page.limit)
            .await?;
        let next_page_token = page.next_of_total(runs.len(), total);
        let mut listed = Vec::with_capacity(runs.len());
        for run in runs {
            // An active run's stored copy lags; show the live one.
            let run = match self.reconciler.watch(&run.rid).await {
                Some(updates) => updates.borrow().clone(),
                None => run,
            };
            listed.push(run_to_proto(&run));
        }
        Ok(Response::new(ListReconsResponse {
            runs: listed,
            next_page_token,
        }))
    }

    async fn cancel_recon(
        &self,
        request: Request<CancelReconRequest>,
    ) -> Result<Response<ReconRun>, Status> {
        trail::target_named(&request, "recon/", &request.get_ref().name);
        caller(&request)?.require(Scope::Admin)?;
        let rid = run_id(&request.get_ref().name)?;
        let run = self.reconciler.cancel(rid).await?;
        Ok(Response::new(run_to_proto(&run)))
    }

    type WatchReconStream = WatchResponse;

    async fn watch_recon(
        &self,
        request: Request<WatchReconRequest>,
    ) -> Result<Response<Self::WatchReconStream>, Status> {
        caller(&request)?.require(Scope::Read)?;
        let rid = run_id(&request.get_ref().name)?;
        // Unknown runs are NOT_FOUND before the stream starts.
        self.reconciler.get(rid).await?;
        // Snapshots until the final one, inclusive: live on the node running
        // it, read from the store on the others.
        let stream = self
            .reconciler
            .follow(rid)
            .await
            .map(|run| run.map(|run| run_to_proto(&run)).map_err(Status::from));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn list_links(
        &self,
        request: Request<ListLinksRequest>,
    ) -> Result<Response<ListLinksResponse>, Status> {
        caller(&request)?.require(Scope::Read)?;
        let links = super::links::list_links(&self.reconciler, request.into_inner()).await?;
        Ok(Response::new(links))
    }

    async fn plan_recon(
        &self,
        request: Request<PlanReconRequest>,
    ) -> Result<Response<PlanReconResponse>, Status> {
        caller(&request)?.require(Scope::Admin)?;
        let request = request.into_inner();
        let only = if request.source_ids.is_empty() {
            None
        } else {
            Some(source_ids(request.source_ids)?)
        };
        let limit = match usize::try_from(request.page_size) {
            Ok(0) => DEFAULT_PLAN_CHANGES,
            Ok(n) if n <= MAX_PLAN_CHANGES => n,
            _ => {
                return Err(Status::invalid_argument(format!(
                    "page_size must be from 0 to {MAX_PLAN_CHANGES}"
                )));
            }
        };
        let outcome = self.reconciler.plan(&request.mapping, only, limit).await?;
        let changes = outcome
            .changes
            .into_iter()
            .map(|c| PlannedChange {
                source_id: c.source_id.unwrap_or_default(),
                target_id: c.target_id.unwrap_or_default(),
                situation: c.situation.name().to_string(),
                action: c.action.name().to_string(),
                properties: c
                    .properties
                    .into_iter()
                    .map(|p| PropertyChange {
                        property: p.property,
                        before: Some(to_proto_value(&p.before)),
                        after: Some(to_proto_value(&p.after)),
                    })
                    .collect(),
            })
            .collect();
        Ok(Response::new(PlanReconResponse {
            changes,
            situation_counts: outcome.situations.into_iter().collect(),
            action_counts: outcome.actions.into_iter().collect(),
            failures: outcome.failures.iter().map(failure).collect(),
            failure_count: outcome.failure_count,
        }))
    }
}
