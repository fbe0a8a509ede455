//! `idmctl audit …`: the audit trail.

use clap::Subcommand;
use idm_proto::v1::{AuditEntry, QueryAuditRequest};
use serde_json::{Value as Json, json};

use crate::connect::Context;
use crate::output::{
    CliError, Format, note, page_footer, page_json, print_json, print_line, table, time_cell,
    time_json,
};

const AUDIT_EXAMPLES: &str = "\
Examples:
  idmctl audit query --filter 'object eq \"managed/user/snow123\"'
  idmctl audit query --filter 'operation eq \"delete\" and time gt \"2025-01-01T00:00:00Z\"'
  idmctl audit query --filter 'changedProperties eq \"password\"' --sort 'time asc'
  idmctl audit query --filter 'operation sw \"token.\" and outcome ne \"success\"'

Filterable: actor, operation, object, time, revisionBefore, revisionAfter, changedProperties,
outcome, detail, requestId (the X-Request-Id of the call that caused the entry).";

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// List audit entries, newest first unless --sort says otherwise.
    ///
    /// One entry per managed write: who, what, which object, the revision
    /// before and after (0 = did not exist), and which properties changed.
    /// One per admin action and password check: who, what, on what, and the
    /// outcome (success, valid / invalid, or the refusal's code).
    #[command(after_help = AUDIT_EXAMPLES)]
    Query {
        /// A SCIM filter over the entries.
        #[arg(long)]
        filter: Option<String>,
        /// Sort keys, such as `time asc` (default `time desc`).
        #[arg(long, value_name = "KEYS")]
        sort: Option<String>,
        /// Entries per page.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(i32).range(1..))]
        page_size: Option<i32>,
        /// Continue from the page token a previous query printed.
        #[arg(long, value_name = "TOKEN")]
        page_token: Option<String>,
    },
}

pub async fn run(ctx: &Context, command: AuditCommand) -> Result<(), CliError> {
    let AuditCommand::Query {
        filter,
        sort,
        page_size,
        page_token,
    } = command;
    let request = QueryAuditRequest {
        filter: filter.unwrap_or_default(),
        order_by: sort.unwrap_or_default(),
        page_size: page_size.unwrap_or_default(),
        page_token: page_token.unwrap_or_default(),
    };
    let page = ctx
        .connect()
        .await?
        .audit()
        .query_audit(request)
        .await?
        .into_inner();
    match ctx.format {
        Format::Json => {
            let entries = page.entries.iter().map(entry_json).collect();
            print_json(&page_json(entries, page.total_size, &page.next_page_token))
        }
        Format::Table => {
            if !page.entries.is_empty() {
                let mut table = table([
                    "time",
                    "actor",
                    "operation",
                    "object",
                    "outcome",
                    "rev",
                    "changed",
                    "request",
                ]);
                for entry in &page.entries {
                    table.add_row([
                        time_cell(entry.time.as_ref()),
                        entry.actor.clone(),
                        entry.operation.clone(),
                        entry.object.clone(),
                        entry.outcome.clone(),
                        format!("{}→{}", entry.revision_before, entry.revision_after),
                        entry.changed_properties.join(", "),
                        entry.request_id.clone(),
                    ]);
                }
                print_line(&table.to_string())?;
            }
            note(&page_footer(
                page.entries.len(),
                page.total_size,
                &page.next_page_token,
            ));
            Ok(())
        }
    }
}

fn entry_json(entry: &AuditEntry) -> Json {
    json!({
        "name": entry.name,
        "time": time_json(entry.time.as_ref()),
        "actor": entry.actor,
        "operation": entry.operation,
        "object": entry.object,
        "revisionBefore": entry.revision_before,
        "revisionAfter": entry.revision_after,
        "changedProperties": entry.changed_properties,
        "outcome": entry.outcome,
        "detail": entry.detail,
        "requestId": entry.request_id,
    })
}
