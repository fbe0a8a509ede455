//! The sync queue (`/admin/sync`): per mapping, how many changes wait for
//! their target and how many gave up, since when, and why; the entries
//! themselves with their reason, attempts and next attempt; retry and
//! discard, per entry and per mapping (discarding asks first).
//!
//! Over `SyncService` only: `GetSyncQueue`, `ListSyncEntries`,
//! `RetrySyncEntries`, `DiscardSyncEntries`.

use askama::Template;
use axum::Router;
use axum::extract::{Query, State};
use axum::response::Response;
use axum::routing::{get, post};
use idm_proto::v1::sync_entry::State as EntryState;
use idm_proto::v1::sync_service_client::SyncServiceClient;
use idm_proto::v1::{
    DiscardSyncEntriesRequest, GetSyncQueueRequest, ListSyncEntriesRequest,
    RetrySyncEntriesRequest, SyncEntry, SyncQueueSummary,
};
use serde::Deserialize;

use super::audit::object_link;
use super::dashboard::quoted;
use super::page::{ago, thousands, timestamp, url_part};
use super::{
    Chrome, ConsoleError, ConsoleState, Form, Nav, Viewer, console_call, render, see_other,
};

/// Entries on one page.
const PAGE_SIZE: i32 = 50;
/// Most entries one form may name.
const MAX_NAMED: usize = 200;

pub fn routes() -> Router<ConsoleState> {
    Router::new()
        .route("/sync", get(show))
        .route("/sync/retry", post(retry))
        .route("/sync/discard", post(discard))
}

/// `?mapping=&state=&page=`, and the outcome of the last action.
#[derive(Debug, Default, Deserialize)]
pub struct QueueQuery {
    #[serde(default)]
    mapping: String,
    /// `pending`, `failed`, or anything else for both.
    #[serde(default)]
    state: String,
    /// The core's page token.
    #[serde(default)]
    page: String,
    retried: Option<i64>,
    discarded: Option<i64>,
}

/// One mapping's part of the queue, as the queue page and the dashboard
/// show it.
pub struct MappingRow {
    pub mapping: String,
    pub pending: String,
    pub failed: i64,
    pub failed_text: String,
    pub oldest_pending: String,
    pub oldest_failed: String,
    pub last_error: String,
}

impl MappingRow {
    pub fn of(m: SyncQueueSummary) -> MappingRow {
        let age_if = |any: bool, at: Option<&prost_types::Timestamp>| {
            if any { ago(at) } else { "—".into() }
        };
        MappingRow {
            oldest_pending: age_if(m.pending > 0, m.oldest_pending_time.as_ref()),
            oldest_failed: age_if(m.failed > 0, m.oldest_failed_time.as_ref()),
            pending: thousands(m.pending),
            failed_text: thousands(m.failed),
            failed: m.failed,
            mapping: m.mapping,
            last_error: m.last_error,
        }
    }
}

pub struct EntryRow {
    pub name: String,
    pub mapping: String,
    pub operation: String,
    pub object: String,
    /// The object's console page, if it has one.
    pub object_href: Option<String>,
    /// `pending` or `failed`.
    pub state: &'static str,
    pub failed: bool,
    pub reason: String,
    pub attempts: i32,
    pub next_attempt: String,
    pub next_attempt_in: String,
    pub created: String,
    /// `5 min ago`.
    pub queued: String,
}

#[derive(Template)]
#[template(path = "console/sync/queue.html")]
struct QueuePage {
    chrome: Chrome,
    mappings: Vec<MappingRow>,
    entries: Vec<EntryRow>,
    /// The filter shown: mapping (empty: all) and state (`pending`,
    /// `failed`, empty: both).
    mapping: String,
    /// Whether `mapping` is empty or one of `mappings` (else the select
    /// offers it on its own).
    mapping_listed: bool,
    state: String,
    next_page: Option<String>,
    first_page: bool,
    notice: Option<String>,
}

impl QueuePage {
    /// `/admin/sync?…` with this page's filter and `page`.
    fn href(&self, page: &str) -> String {
        queue_href(&self.mapping, &self.state, page)
    }
}

fn queue_href(mapping: &str, state: &str, page: &str) -> String {
    let mut query = Vec::new();
    if !mapping.is_empty() {
        query.push(format!("mapping={}", url_part(mapping)));
    }
    if !state.is_empty() {
        query.push(format!("state={}", url_part(state)));
    }
    if !page.is_empty() {
        query.push(format!("page={}", url_part(page)));
    }
    if query.is_empty() {
        "/admin/sync".to_string()
    } else {
        format!("/admin/sync?{}", query.join("&"))
    }
}

/// The entries' filter for `ListSyncEntries`: every value a JSON string.
fn entries_filter(mapping: &str, state: &str) -> String {
    let mut terms = Vec::new();
    if !mapping.is_empty() {
        terms.push(format!("mapping eq {}", quoted(mapping)));
    }
    if !state.is_empty() {
        terms.push(format!("state eq {}", quoted(state)));
    }
    terms.join(" and ")
}

/// The state filter, as the page offers it.
fn chosen_state(state: &str) -> &'static str {
    match state {
        "pending" => "pending",
        "failed" => "failed",
        _ => "",
    }
}

pub async fn show(
    State(state): State<ConsoleState>,
    viewer: Viewer,
    Query(query): Query<QueueQuery>,
) -> Result<Response, ConsoleError> {
    let notice = match (query.retried, query.discarded) {
        (Some(n), _) => Some(format!("{} made due again.", entries_count(n))),
        (_, Some(n)) => Some(format!(
            "{} discarded; their changes reach the target at the next reconciliation.",
            entries_count(n)
        )),
        _ => None,
    };
    let entry_state = chosen_state(&query.state);
    let filter = entries_filter(&query.mapping, entry_state);
    let summary = console_call!(
        &state,
        &viewer,
        SyncServiceClient.get_sync_queue(GetSyncQueueRequest {})
    );
    let listed = console_call!(
        &state,
        &viewer,
        SyncServiceClient.list_sync_entries(ListSyncEntriesRequest {
            filter: filter.clone(),
            page_size: PAGE_SIZE,
            page_token: query.page.clone(),
        })
    );
    let chrome = Chrome::new(&state, &viewer, Nav::Sync, "Sync queue");
    let (summary, listed, chrome) = tokio::join!(summary, listed, chrome);
    let (summary, listed) = (summary?, listed?);
    let mappings: Vec<MappingRow> = summary.mappings.into_iter().map(MappingRow::of).collect();
    let entries = listed.entries.iter().map(entry_row).collect();
    let mapping_listed = query.mapping.is_empty()
        || mappings
            .iter()
            .any(|m: &MappingRow| m.mapping == query.mapping);
    Ok(render(&QueuePage {
        mapping_listed,
        chrome,
        mappings,
        entries,
        mapping: query.mapping,
        state: entry_state.to_string(),
        next_page: Some(listed.next_page_token).filter(|t| !t.is_empty()),
        first_page: query.page.is_empty(),
        notice,
    }))
}

fn entries_count(n: i64) -> String {
    match n {
        1 => "1 entry".to_string(),
        n => format!("{} entries", thousands(n)),
    }
}

fn entry_row(entry: &SyncEntry) -> EntryRow {
    let failed = entry.state() == EntryState::Failed;
    EntryRow {
        name: entry.name.clone(),
        mapping: entry.mapping.clone(),
        operation: entry.operation.clone(),
        object_href: object_link(&entry.object),
        object: entry.object.clone(),
        state: if failed { "failed" } else { "pending" },
        failed,
        reason: entry.last_error.clone(),
        attempts: entry.attempts,
        // A failed entry waits for a person, not for a time.
        next_attempt: if failed {
            "—".into()
        } else {
            timestamp(entry.next_attempt_time.as_ref())
        },
        next_attempt_in: match ago(entry.next_attempt_time.as_ref()) {
            _ if failed => "after a retry".into(),
            soon if soon.starts_with("in ") => soon,
            _ => "due now".into(),
        },
        created: timestamp(entry.create_time.as_ref()),
        queued: ago(entry.create_time.as_ref()),
    }
}

/// What a retry or discard form names: the mapping, and its entries (none:
/// every failed entry of the mapping), and the queue view to go back to.
struct Chosen {
    mapping: String,
    names: Vec<String>,
    back_mapping: String,
    back_state: String,
}

fn chosen(form: &Form) -> Result<Chosen, ConsoleError> {
    let mapping = form.get("mapping").unwrap_or_default().trim().to_string();
    if mapping.is_empty() {
        return Err(ConsoleError::BadRequest("Choose a mapping.".into()));
    }
    let names: Vec<String> = form
        .all("name")
        .filter(|n| !n.is_empty())
        .map(str::to_string)
        .collect();
    if names.len() > MAX_NAMED {
        return Err(ConsoleError::BadRequest(format!(
            "Choose at most {MAX_NAMED} entries at a time."
        )));
    }
    Ok(Chosen {
        mapping,
        names,
        back_mapping: form.get("back_mapping").unwrap_or_default().to_string(),
        back_state: chosen_state(form.get("back_state").unwrap_or_default()).to_string(),
    })
}

/// `POST /admin/sync/retry`: the named failed entries, or every failed
/// entry of the mapping, due again now.
pub async fn retry(
    State(state): State<ConsoleState>,
    form: Form,
) -> Result<Response, ConsoleError> {
    form.viewer.require_change()?;
    let chosen = chosen(&form)?;
    let reply = console_call!(
        &state,
        &form.viewer,
        SyncServiceClient.retry_sync_entries(RetrySyncEntriesRequest {
            mapping: chosen.mapping.clone(),
            names: chosen.names.clone(),
        })
    )
    .await?;
    Ok(back(&chosen, "retried", reply.count))
}

/// The queue again, with the outcome: `…&retried=3`.
fn back(chosen: &Chosen, done: &str, count: i64) -> Response {
    let href = queue_href(&chosen.back_mapping, &chosen.back_state, "");
    let join = if href.contains('?') { '&' } else { '?' };
    see_other(&format!("{href}{join}{done}={count}"))
}

#[derive(Template)]
#[template(path = "console/sync/confirm.html")]
struct ConfirmPage {
    chrome: Chrome,
    mapping: String,
    names: Vec<String>,
    back_mapping: String,
    back_state: String,
    cancel_href: String,
}

/// `POST /admin/sync/discard`: without `confirm=yes`, a page that asks;
/// with it, the named entries (pending or failed), or every failed entry
/// of the mapping, deleted.
pub async fn discard(
    State(state): State<ConsoleState>,
    form: Form,
) -> Result<Response, ConsoleError> {
    form.viewer.require_change()?;
    let chosen = chosen(&form)?;
    if form.get("confirm") != Some("yes") {
        let chrome = Chrome::new(&state, &form.viewer, Nav::Sync, "Discard sync entries?").await;
        return Ok(render(&ConfirmPage {
            chrome,
            cancel_href: queue_href(&chosen.back_mapping, &chosen.back_state, ""),
            mapping: chosen.mapping,
            names: chosen.names,
            back_mapping: chosen.back_mapping,
            back_state: chosen.back_state,
        }));
    }
    let reply = console_call!(
        &state,
        &form.viewer,
        SyncServiceClient.discard_sync_entries(DiscardSyncEntriesRequest {
            mapping: chosen.mapping.clone(),
            names: chosen.names.clone(),
        })
    )
    .await?;
    Ok(back(&chosen, "discarded", reply.count))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_entries_filter_quotes_what_it_is_given() {
        assert_eq!(entries_filter("", ""), "");
        assert_eq!(
            entries_filter("toLdap", "failed"),
            r#"mapping eq "toLdap" and state eq "failed""#
        );
        let hostile = r#"x" or mapping pr or mapping eq "y"#;
        let filter = entries_filter(hostile, "");
        let parsed = idm_proto::filter::parse(&filter).unwrap();
        assert!(
            matches!(parsed, idm_proto::filter::Filter::Compare(..)),
            "{parsed:?}"
        );
        assert_eq!(chosen_state("failed' or 1"), "");
    }

    #[test]
    fn the_queue_link_keeps_its_filter() {
        assert_eq!(queue_href("", "", ""), "/admin/sync");
        assert_eq!(
            queue_href("a b&c", "failed", "t=1"),
            "/admin/sync?mapping=a%20b%26c&state=failed&page=t%3D1"
        );
    }
}
