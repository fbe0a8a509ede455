//! `idmctl sync …`: the implicit-sync outbox (changes waiting to reach targets).

use clap::Subcommand;
use idm_proto::v1::sync_entry::State;
use idm_proto::v1::{
    DiscardSyncEntriesRequest, GetSyncQueueRequest, ListSyncEntriesRequest,
    RetrySyncEntriesRequest, SyncEntry, SyncQueueSummary,
};
use serde_json::{Value as Json, json};

use crate::connect::Context;
use crate::output::{
    CliError, Format, cursor_footer, cursor_json, note, print_json, print_line, table, time_cell,
    time_json,
};

const SYNC_EXAMPLES: &str = "\
Examples:
  idmctl sync queue
  idmctl sync entries --mapping managedUser_ldapAccount --failed
  idmctl sync retry managedUser_ldapAccount
  idmctl sync discard managedUser_ldapAccount sync/0193d5e2-…";

#[derive(Debug, Subcommand)]
#[command(after_help = SYNC_EXAMPLES)]
pub enum SyncCommand {
    /// Pending and failed changes per mapping, the oldest pending one's age
    /// and the last error.
    Queue,
    /// List waiting changes, oldest first.
    Entries {
        /// Only this mapping's.
        #[arg(long)]
        mapping: Option<String>,
        /// Only those that gave up (after the retry limit).
        #[arg(long)]
        failed: bool,
        /// A SCIM filter over mapping, object, state, operation.
        #[arg(long)]
        filter: Option<String>,
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(i32).range(1..))]
        page_size: Option<i32>,
        #[arg(long, value_name = "TOKEN")]
        page_token: Option<String>,
    },
    /// Try failed changes again now: all of a mapping's, or the named ones.
    Retry {
        mapping: String,
        /// Entry names (`sync/<id>`); none means every failed entry.
        names: Vec<String>,
    },
    /// Drop changes: all of a mapping's failed ones, or the named ones. The
    /// target catches up at the next reconciliation.
    Discard { mapping: String, names: Vec<String> },
}

pub async fn run(ctx: &Context, command: SyncCommand) -> Result<(), CliError> {
    let connection = ctx.connect().await?;
    let mut client = connection.sync();
    match command {
        SyncCommand::Queue => {
            let queue = client
                .get_sync_queue(GetSyncQueueRequest {})
                .await?
                .into_inner();
            match ctx.format {
                Format::Json => print_json(&Json::Array(
                    queue.mappings.iter().map(summary_json).collect(),
                ))?,
                Format::Table if queue.mappings.is_empty() => note("nothing waiting"),
                Format::Table => {
                    let mut table = table([
                        "mapping",
                        "pending",
                        "failed",
                        "oldest pending",
                        "last error",
                    ]);
                    for summary in &queue.mappings {
                        table.add_row([
                            summary.mapping.clone(),
                            summary.pending.to_string(),
                            summary.failed.to_string(),
                            age(summary.oldest_pending_time.as_ref()),
                            summary.last_error.clone(),
                        ]);
                    }
                    print_line(&table.to_string())?;
                }
            }
        }
        SyncCommand::Entries {
            mapping,
            failed,
            filter,
            page_size,
            page_token,
        } => {
            let mut clauses = Vec::new();
            if let Some(mapping) = mapping {
                clauses.push(format!("mapping eq {}", json!(mapping)));
            }
            if failed {
                clauses.push("state eq \"failed\"".to_string());
            }
            if let Some(filter) = filter {
                clauses.push(format!("({filter})"));
            }
            let page = client
                .list_sync_entries(ListSyncEntriesRequest {
                    filter: clauses.join(" and "),
                    page_size: page_size.unwrap_or_default(),
                    page_token: page_token.unwrap_or_default(),
                })
                .await?
                .into_inner();
            match ctx.format {
                Format::Json => print_json(&cursor_json(
                    page.entries.iter().map(entry_json).collect(),
                    &page.next_page_token,
                ))?,
                Format::Table => {
                    if !page.entries.is_empty() {
                        let mut table = table([
                            "name",
                            "mapping",
                            "object",
                            "operation",
                            "state",
                            "attempts",
                            "next attempt",
                            "last error",
                        ]);
                        for entry in &page.entries {
                            table.add_row([
                                entry.name.clone(),
                                entry.mapping.clone(),
                                entry.object.clone(),
                                entry.operation.clone(),
                                state_name(entry).to_string(),
                                entry.attempts.to_string(),
                                time_cell(entry.next_attempt_time.as_ref()),
                                entry.last_error.clone(),
                            ]);
                        }
                        print_line(&table.to_string())?;
                    }
                    note(&cursor_footer(
                        &format!("{} entries", page.entries.len()),
                        &page.next_page_token,
                    ));
                }
            }
        }
        SyncCommand::Retry { mapping, names } => {
            let count = client
                .retry_sync_entries(RetrySyncEntriesRequest { mapping, names })
                .await?
                .into_inner()
                .count;
            report(ctx, "retried", count)?;
        }
        SyncCommand::Discard { mapping, names } => {
            let count = client
                .discard_sync_entries(DiscardSyncEntriesRequest { mapping, names })
                .await?
                .into_inner()
                .count;
            report(ctx, "discarded", count)?;
        }
    }
    Ok(())
}

fn report(ctx: &Context, verb: &str, count: i64) -> Result<(), CliError> {
    match ctx.format {
        Format::Json => print_json(&json!({ verb: count })),
        Format::Table => print_line(&format!("{count} entries {verb}")),
    }
}

fn state_name(entry: &SyncEntry) -> &'static str {
    match State::try_from(entry.state) {
        Ok(State::Pending) => "pending",
        Ok(State::Failed) => "failed",
        Ok(State::Done) => "done",
        _ => "unknown",
    }
}

/// How long ago a time was, for the operator: `3s`, `4m12s`, `2h05m`.
fn age(time: Option<&prost_types::Timestamp>) -> String {
    let Some(time) = time else {
        return String::new();
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let seconds = (now - time.seconds).max(0);
    match seconds {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

fn summary_json(summary: &SyncQueueSummary) -> Json {
    json!({
        "mapping": summary.mapping,
        "pending": summary.pending,
        "failed": summary.failed,
        "oldestPendingTime": time_json(summary.oldest_pending_time.as_ref()),
        "lastError": if summary.last_error.is_empty() { Json::Null } else { json!(summary.last_error) },
    })
}

fn entry_json(entry: &SyncEntry) -> Json {
    json!({
        "name": entry.name,
        "mapping": entry.mapping,
        "object": entry.object,
        "operation": entry.operation,
        "state": state_name(entry),
        "attempts": entry.attempts,
        "lastError": if entry.last_error.is_empty() { Json::Null } else { json!(entry.last_error) },
        "createTime": time_json(entry.create_time.as_ref()),
        "nextAttemptTime": time_json(entry.next_attempt_time.as_ref()),
    })
}
