//! `idmctl recon …`: reconciliation runs.

use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;
use idm_proto::json::from_proto_value;
use idm_proto::v1::recon_run::State;
use idm_proto::v1::{
    CancelReconRequest, GetReconRequest, ListReconsRequest, PlanReconRequest, PlanReconResponse,
    ReconByIdRequest, ReconProgress, ReconRun, StartReconRequest, WatchReconRequest,
};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value as Json, json};

use crate::connect::Context;
use crate::output::{
    CliError, Format, cell, note, page_footer, page_json, print_json, print_line, table, time_cell,
    time_json,
};

const RECON_EXAMPLES: &str = "\
Examples:
  idmctl recon start csvEmployee_managedUser --wait
  idmctl recon plan csvEmployee_managedUser
  idmctl recon list --filter 'state eq \"FAILED\"'
  idmctl recon show 0193d5e2-…
  idmctl recon cancel 0193d5e2-…";

#[derive(Debug, Subcommand)]
#[command(after_help = RECON_EXAMPLES)]
pub enum ReconCommand {
    /// Start a reconciliation of a mapping.
    ///
    /// Without --wait, prints the run and returns; with it, shows progress
    /// and ends with a summary (exit code 1 unless the run succeeded).
    Start {
        mapping: String,
        /// Follow the run to its end.
        #[arg(long)]
        wait: bool,
    },
    /// Reconcile only some source ids of a mapping (no target phase).
    ById {
        mapping: String,
        /// Source ids (e.g. CSV uids).
        #[arg(required = true)]
        ids: Vec<String>,
        #[arg(long)]
        wait: bool,
    },
    /// Show what a run would do, changing nothing.
    Plan {
        mapping: String,
        /// Plan only these source ids (repeatable).
        #[arg(long = "id", value_name = "ID")]
        ids: Vec<String>,
        /// List at most this many changes (counts cover all).
        #[arg(long, value_name = "N", default_value_t = 100,
              value_parser = clap::value_parser!(i32).range(1..=10_000))]
        limit: i32,
    },
    /// List runs, newest first.
    List {
        /// Only runs of this mapping.
        #[arg(long)]
        mapping: Option<String>,
        /// A SCIM filter over mapping, state, startTime, endTime, startedBy.
        #[arg(long)]
        filter: Option<String>,
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(i32).range(1..))]
        page_size: Option<i32>,
        #[arg(long, value_name = "TOKEN")]
        page_token: Option<String>,
    },
    /// Show a run: progress, counts per situation and action, failures.
    Show { id: String },
    /// Stop a run; it ends CANCELED with every finished batch kept.
    Cancel { id: String },
}

fn run_name(id: &str) -> String {
    if id.starts_with("recon/") {
        id.to_string()
    } else {
        format!("recon/{id}")
    }
}

pub async fn run(ctx: &Context, command: ReconCommand) -> Result<ExitCode, CliError> {
    let connection = ctx.connect().await?;
    let mut client = connection.recon();
    match command {
        ReconCommand::Start { mapping, wait } => {
            let run = client
                .start_recon(StartReconRequest {
                    mapping,
                    wait: false,
                })
                .await?
                .into_inner();
            finish(ctx, &connection, run, wait).await
        }
        ReconCommand::ById { mapping, ids, wait } => {
            let run = client
                .recon_by_id(ReconByIdRequest {
                    mapping,
                    source_ids: ids,
                    wait: false,
                })
                .await?
                .into_inner();
            finish(ctx, &connection, run, wait).await
        }
        ReconCommand::Plan {
            mapping,
            ids,
            limit,
        } => {
            let plan = client
                .plan_recon(PlanReconRequest {
                    mapping,
                    source_ids: ids,
                    page_size: limit,
                })
                .await?
                .into_inner();
            print_plan(ctx.format, &plan)?;
            Ok(ExitCode::SUCCESS)
        }
        ReconCommand::List {
            mapping,
            filter,
            page_size,
            page_token,
        } => {
            let mut clauses = Vec::new();
            if let Some(mapping) = mapping {
                clauses.push(format!("mapping eq {}", json!(mapping)));
            }
            if let Some(filter) = filter {
                clauses.push(format!("({filter})"));
            }
            let page = client
                .list_recons(ListReconsRequest {
                    filter: clauses.join(" and "),
                    page_size: page_size.unwrap_or_default(),
                    page_token: page_token.unwrap_or_default(),
                })
                .await?
                .into_inner();
            match ctx.format {
                Format::Json => {
                    let runs = page.runs.iter().map(run_json).collect::<Vec<_>>();
                    let shown = runs.len() as i64;
                    print_json(&page_json(runs, shown, &page.next_page_token))?;
                }
                Format::Table => {
                    if !page.runs.is_empty() {
                        let mut table = table([
                            "id",
                            "mapping",
                            "state",
                            "started",
                            "duration",
                            "processed",
                            "failures",
                        ]);
                        for run in &page.runs {
                            table.add_row([
                                run.id.clone(),
                                run.mapping.clone(),
                                state_name(run).to_string(),
                                time_cell(run.start_time.as_ref()),
                                duration_text(run),
                                run.source.map_or(0, |s| s.processed).to_string(),
                                run.failure_count.to_string(),
                            ]);
                        }
                        print_line(&table.to_string())?;
                    }
                    note(&page_footer(
                        page.runs.len(),
                        page.runs.len() as i64,
                        &page.next_page_token,
                    ));
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        ReconCommand::Show { id } => {
            let run = client
                .get_recon(GetReconRequest {
                    name: run_name(&id),
                })
                .await?
                .into_inner();
            print_run(ctx.format, &run)?;
            Ok(ExitCode::SUCCESS)
        }
        ReconCommand::Cancel { id } => {
            let run = client
                .cancel_recon(CancelReconRequest {
                    name: run_name(&id),
                })
                .await?
                .into_inner();
            print_run(ctx.format, &run)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Prints a started run, or follows it to its end with a progress bar.
async fn finish(
    ctx: &Context,
    connection: &crate::connect::Connection,
    run: ReconRun,
    wait: bool,
) -> Result<ExitCode, CliError> {
    if !wait {
        match ctx.format {
            Format::Json => print_json(&run_json(&run))?,
            Format::Table => print_line(&format!("{} started ({})", run.name, run.mapping))?,
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut updates = connection
        .recon()
        .watch_recon(WatchReconRequest {
            name: run.name.clone(),
        })
        .await?
        .into_inner();
    // Hidden when stderr is not a terminal.
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} {msg:28} [{bar:30}] {pos}/{len} rows  {per_sec}  eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    let mut last = run;
    while let Some(update) = updates.message().await? {
        let source = update.source.unwrap_or_default();
        bar.set_length(u64::try_from(source.total.max(source.processed)).unwrap_or(0));
        bar.set_position(u64::try_from(source.processed).unwrap_or(0));
        bar.set_message(update.stage.to_lowercase().replace('_', " "));
        last = update;
    }
    bar.finish_and_clear();
    // The stream's last snapshot may predate the final save.
    let last = if is_final(&last) {
        last
    } else {
        connection
            .recon()
            .get_recon(GetReconRequest {
                name: last.name.clone(),
            })
            .await?
            .into_inner()
    };
    print_run(ctx.format, &last)?;
    Ok(if last.state() == State::Success {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn is_final(run: &ReconRun) -> bool {
    matches!(
        run.state(),
        State::Success | State::Failed | State::Canceled
    )
}

fn state_name(run: &ReconRun) -> &'static str {
    match run.state() {
        State::Unspecified => "UNSPECIFIED",
        State::Pending => "PENDING",
        State::Active => "ACTIVE",
        State::Success => "SUCCESS",
        State::Failed => "FAILED",
        State::Canceled => "CANCELED",
    }
}

fn duration_text(run: &ReconRun) -> String {
    run.duration.map_or_else(String::new, |d| {
        crate::output::duration_cell(d.seconds * 1000 + i64::from(d.nanos) / 1_000_000)
    })
}

fn progress_json(p: Option<&ReconProgress>) -> Json {
    let p = p.copied().unwrap_or_default();
    json!({ "existing": p.existing, "processed": p.processed, "total": p.total })
}

fn sorted(map: &std::collections::HashMap<String, i64>) -> Vec<(String, i64)> {
    let mut list: Vec<(String, i64)> = map.iter().map(|(k, v)| (k.clone(), *v)).collect();
    list.sort();
    list
}

/// Counts as a JSON object, keys sorted.
fn counts_json(map: &std::collections::HashMap<String, i64>) -> Json {
    Json::Object(
        sorted(map)
            .into_iter()
            .map(|(k, v)| (k, json!(v)))
            .collect(),
    )
}

fn run_json(run: &ReconRun) -> Json {
    let failures: Vec<Json> = run
        .failures
        .iter()
        .map(|f| {
            json!({
                "sourceId": f.source_id, "targetId": f.target_id, "line": f.line,
                "situation": f.situation, "action": f.action, "reason": f.reason,
            })
        })
        .collect();
    json!({
        "name": run.name,
        "id": run.id,
        "mapping": run.mapping,
        "state": state_name(run),
        "stage": run.stage,
        "progress": {
            "source": progress_json(run.source.as_ref()),
            "target": progress_json(run.target.as_ref()),
            "links": progress_json(run.links.as_ref()),
        },
        "situationSummary": counts_json(&run.situation_counts),
        "actionSummary": counts_json(&run.action_counts),
        "failureCount": run.failure_count,
        "failures": failures,
        "started": time_json(run.start_time.as_ref()),
        "ended": time_json(run.end_time.as_ref()),
        "duration": duration_text(run),
        "startedBy": run.started_by,
        "error": if run.error.is_empty() { Json::Null } else { Json::String(run.error.clone()) },
    })
}

/// A run as a summary: header lines, counts, the first failures.
fn print_run(format: Format, run: &ReconRun) -> Result<(), CliError> {
    if format == Format::Json {
        return print_json(&run_json(run));
    }
    let source = run.source.unwrap_or_default();
    let mut lines = vec![
        format!("{}  {}  {}", run.name, run.mapping, state_name(run)),
        format!(
            "stage {}  started {}  duration {}  by {}",
            run.stage,
            time_cell(run.start_time.as_ref()),
            duration_text(run),
            run.started_by
        ),
        format!(
            "source {}/{} rows  target {} walked  links {} walked",
            source.processed,
            source.total,
            run.target.map_or(0, |t| t.processed),
            run.links.map_or(0, |l| l.processed)
        ),
    ];
    if !run.error.is_empty() {
        lines.push(format!("error: {}", run.error));
    }
    print_line(&lines.join("\n"))?;
    let mut counts = table(["situation", "count", "", "action", "count"]);
    let situations = sorted(&run.situation_counts);
    let actions = sorted(&run.action_counts);
    for row in 0..situations.len().max(actions.len()) {
        let (s, sc) = situations
            .get(row)
            .map(|(k, v)| (k.clone(), v.to_string()))
            .unwrap_or_default();
        let (a, ac) = actions
            .get(row)
            .map(|(k, v)| (k.clone(), v.to_string()))
            .unwrap_or_default();
        counts.add_row([s, sc, String::new(), a, ac]);
    }
    print_line(&counts.to_string())?;
    if run.failure_count > 0 {
        const SHOWN: usize = 20;
        let mut failures = table(["line", "source", "target", "situation", "reason"]);
        for f in run.failures.iter().take(SHOWN) {
            failures.add_row([
                if f.line > 0 {
                    f.line.to_string()
                } else {
                    String::new()
                },
                f.source_id.clone(),
                f.target_id.clone(),
                f.situation.clone(),
                f.reason.clone(),
            ]);
        }
        print_line(&failures.to_string())?;
        let more = run.failure_count - run.failures.len().min(SHOWN) as i64;
        if more > 0 {
            note(&format!(
                "{more} more failures (all kept ones with --output json)"
            ));
        }
    }
    Ok(())
}

fn print_plan(format: Format, plan: &PlanReconResponse) -> Result<(), CliError> {
    if format == Format::Json {
        let changes: Vec<Json> = plan
            .changes
            .iter()
            .map(|c| {
                let properties: Vec<Json> = c
                    .properties
                    .iter()
                    .map(|p| {
                        json!({
                            "property": p.property,
                            "before": p.before.as_ref().map_or(Json::Null, from_proto_value),
                            "after": p.after.as_ref().map_or(Json::Null, from_proto_value),
                        })
                    })
                    .collect();
                json!({
                    "sourceId": c.source_id, "targetId": c.target_id,
                    "situation": c.situation, "action": c.action, "properties": properties,
                })
            })
            .collect();
        return print_json(&json!({
            "changes": changes,
            "situationSummary": counts_json(&plan.situation_counts),
            "actionSummary": counts_json(&plan.action_counts),
        }));
    }
    if plan.changes.is_empty() {
        print_line("nothing would change")?;
    } else {
        let mut changes = table([
            "source",
            "target",
            "situation",
            "action",
            "property",
            "before → after",
        ]);
        for change in &plan.changes {
            if change.properties.is_empty() {
                changes.add_row([
                    change.source_id.clone(),
                    change.target_id.clone(),
                    change.situation.clone(),
                    change.action.clone(),
                    String::new(),
                    String::new(),
                ]);
            }
            for (index, p) in change.properties.iter().enumerate() {
                let value = |v: &Option<prost_types::Value>| {
                    v.as_ref().map_or(Json::Null, from_proto_value)
                };
                let (before, after) = (value(&p.before), value(&p.after));
                let shown = |v: &Json| {
                    if v.is_null() {
                        "—".to_string()
                    } else {
                        cell(v)
                    }
                };
                let first = index == 0;
                changes.add_row([
                    if first {
                        change.source_id.clone()
                    } else {
                        String::new()
                    },
                    if first {
                        change.target_id.clone()
                    } else {
                        String::new()
                    },
                    if first {
                        change.situation.clone()
                    } else {
                        String::new()
                    },
                    if first {
                        change.action.clone()
                    } else {
                        String::new()
                    },
                    p.property.clone(),
                    format!("{} → {}", shown(&before), shown(&after)),
                ]);
            }
        }
        print_line(&changes.to_string())?;
    }
    let summary = |map: &std::collections::HashMap<String, i64>| {
        sorted(map)
            .into_iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    note(&format!(
        "situations: {}\nactions: {}",
        summary(&plan.situation_counts),
        summary(&plan.action_counts)
    ));
    Ok(())
}
