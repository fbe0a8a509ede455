//! `idm.v1.SyncService`: the implicit-sync outbox, for operators.

use idm_proto::v1::sync_entry::State;
use idm_proto::v1::sync_service_server::SyncService;
use idm_proto::v1::{
    DiscardSyncEntriesRequest, DiscardSyncEntriesResponse, GetSyncQueueRequest,
    GetSyncQueueResponse, ListSyncEntriesRequest, ListSyncEntriesResponse, RetrySyncEntriesRequest,
    RetrySyncEntriesResponse, Scope, SyncEntry, SyncQueueSummary,
};
use tonic::{Request, Response, Status};

use super::auth::caller;
use super::paging::Page;
use super::timestamp;
use super::trail;
use crate::managed::compile_filter;
use crate::store::{Columns, FAILED, OutboxEntry, Store};

pub struct SyncApi {
    pub store: Store,
}

/// An entry's attributes, as the filter language names them.
const ENTRY_FIELDS: Columns = Columns {
    kind: "sync entry",
    columns: &[
        ("mapping", "mapping"),
        ("object", "object"),
        ("state", "state"),
        ("operation", "operation"),
    ],
};

fn entry_to_proto(entry: &OutboxEntry) -> SyncEntry {
    SyncEntry {
        name: format!("sync/{}", entry.seq),
        mapping: entry.mapping.clone(),
        object: entry.object(),
        operation: entry.operation.clone(),
        state: if entry.state == FAILED {
            State::Failed
        } else {
            State::Pending
        } as i32,
        attempts: i32::try_from(entry.attempts).unwrap_or(i32::MAX),
        last_error: entry.last_error.clone().unwrap_or_default(),
        create_time: timestamp(&entry.created),
        next_attempt_time: timestamp(&entry.due),
    }
}

/// `sync/<seq>` names → seqs.
fn seqs(names: &[String]) -> Result<Vec<String>, Status> {
    names
        .iter()
        .map(|name| {
            name.strip_prefix("sync/")
                .filter(|seq| !seq.is_empty())
                .map(str::to_string)
                .ok_or_else(|| {
                    Status::invalid_argument(format!("names: expected sync/<id>, got {name:?}"))
                })
        })
        .collect()
}

/// A retry's or discard's caller (admin scope) and entries: every failed one
/// of the mapping, or the named ones.
fn chosen<T>(
    request: &Request<T>,
    mapping: &str,
    names: &[String],
) -> Result<(String, Vec<String>), Status> {
    let caller = caller(request)?;
    trail::target_named(request, "mappings/", mapping);
    let chose = match names.len() {
        0 => "every failed entry".to_string(),
        n => format!("{n} named entries"),
    };
    trail::detail(request, &chose);
    caller.require(Scope::Admin)?;
    if mapping.is_empty() {
        return Err(Status::invalid_argument("mapping: required"));
    }
    Ok((caller.actor().to_string(), seqs(names)?))
}

fn as_count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[tonic::async_trait]
impl SyncService for SyncApi {
    async fn get_sync_queue(
        &self,
        request: Request<GetSyncQueueRequest>,
    ) -> Result<Response<GetSyncQueueResponse>, Status> {
        caller(&request)?.require(Scope::Read)?;
        let mappings = self
            .store
            .queue_summary()
            .await?
            .into_iter()
            .map(|s| SyncQueueSummary {
                mapping: s.mapping,
                pending: as_count(s.pending),
                failed: as_count(s.failed),
                oldest_pending_time: s.oldest_pending.as_deref().and_then(timestamp),
                oldest_failed_time: s.oldest_failed.as_deref().and_then(timestamp),
                last_error: s.last_error.unwrap_or_default(),
            })
            .collect();
        Ok(Response::new(GetSyncQueueResponse { mappings }))
    }

    async fn list_sync_entries(
        &self,
        request: Request<ListSyncEntriesRequest>,
    ) -> Result<Response<ListSyncEntriesResponse>, Status> {
        caller(&request)?.require(Scope::Read)?;
        let request = request.into_inner();
        let page = Page::of(
            request.page_size,
            &request.page_token,
            &["sync", &request.filter],
        )?;
        let filter = compile_filter(&request.filter, &ENTRY_FIELDS)?;
        // One more than asked tells whether another page follows.
        let mut entries = self
            .store
            .list_entries(&filter, page.limit + 1, page.offset)
            .await?;
        let next_page_token = page.trim(&mut entries);
        Ok(Response::new(ListSyncEntriesResponse {
            entries: entries.iter().map(entry_to_proto).collect(),
            next_page_token,
        }))
    }

    async fn retry_sync_entries(
        &self,
        request: Request<RetrySyncEntriesRequest>,
    ) -> Result<Response<RetrySyncEntriesResponse>, Status> {
        let (actor, seqs) = chosen(
            &request,
            &request.get_ref().mapping,
            &request.get_ref().names,
        )?;
        let mapping = &request.get_ref().mapping;
        let count = self.store.retry_entries(mapping, &seqs).await?;
        tracing::info!(%actor, %mapping, count, "sync entries retried");
        Ok(Response::new(RetrySyncEntriesResponse {
            count: as_count(count),
        }))
    }

    async fn discard_sync_entries(
        &self,
        request: Request<DiscardSyncEntriesRequest>,
    ) -> Result<Response<DiscardSyncEntriesResponse>, Status> {
        let (actor, seqs) = chosen(
            &request,
            &request.get_ref().mapping,
            &request.get_ref().names,
        )?;
        let mapping = &request.get_ref().mapping;
        let count = self.store.discard_entries(mapping, &seqs).await?;
        tracing::warn!(%actor, %mapping, count, "sync entries discarded; their changes wait for the next recon");
        Ok(Response::new(DiscardSyncEntriesResponse {
            count: as_count(count),
        }))
    }
}
