//! `idmctl schedules …`: schedules in Wren:IDM's JSON shape and their
//! execution history (ScheduleService).

use clap::Subcommand;
use idm_proto::json::{from_proto_struct, to_proto_struct};
use idm_proto::v1::execution::Outcome;
use idm_proto::v1::{
    CreateScheduleRequest, DeleteScheduleRequest, Execution, GetScheduleRequest,
    ListExecutionsRequest, ListSchedulesRequest, PauseScheduleRequest, ResumeScheduleRequest,
    RunScheduleRequest, Schedule, UpdateScheduleRequest,
};
use serde_json::{Map, Value as Json, json};

use crate::connect::Context;
use crate::input::{kind, read_object};
use crate::output::{
    CliError, Format, count_note, cursor_footer, cursor_json, note, print_json, print_line, table,
    time_cell, time_json,
};

const PREFIX: &str = "schedules/";

const SCHEDULES_EXAMPLES: &str = "\
Examples:
  idmctl schedules create recon --data @samples/scheduler/schedule-recon.json
  idmctl schedules update recon --data @schedule-recon.json
  idmctl schedules list
  idmctl schedules show recon
  idmctl schedules pause recon
  idmctl schedules run recon
  idmctl schedules history recon --page-size 20";

#[derive(Debug, Subcommand)]
#[command(after_help = SCHEDULES_EXAMPLES)]
pub enum SchedulesCommand {
    /// List schedules: state, timing, what they invoke, next and last fire.
    List,
    /// Print one as Wren:IDM schedule JSON, with its state and fire times.
    Show {
        /// Its name (with or without the `schedules/` prefix).
        name: String,
    },
    /// Create one from Wren:IDM schedule JSON (admin scope) and print it.
    Create {
        /// Its name (with or without the `schedules/` prefix); generated if left out.
        name: Option<String>,
        /// The schedule: inline JSON, `@file.json`, or `@-` for stdin.
        #[arg(long, value_name = "JSON")]
        data: String,
    },
    /// Replace one's definition with Wren:IDM schedule JSON (admin scope) and print it.
    Update {
        /// Its name (with or without the `schedules/` prefix).
        name: String,
        /// The schedule: inline JSON, `@file.json`, or `@-` for stdin.
        #[arg(long, value_name = "JSON")]
        data: String,
    },
    /// Delete one (admin scope); says whether it existed.
    Delete {
        /// Its name (with or without the `schedules/` prefix).
        name: String,
    },
    /// Stop one firing until it is resumed.
    Pause {
        /// Its name (with or without the `schedules/` prefix).
        name: String,
    },
    /// Let a paused one fire again.
    Resume {
        /// Its name (with or without the `schedules/` prefix).
        name: String,
    },
    /// Fire one now, once, outside its schedule; prints the execution
    /// (exit code 1 if it failed).
    Run {
        /// Its name (with or without the `schedules/` prefix).
        name: String,
    },
    /// List executions, newest first: of one schedule, or of all.
    History {
        /// Only this schedule's (with or without the `schedules/` prefix).
        name: Option<String>,
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(i32).range(1..))]
        page_size: Option<i32>,
        #[arg(long, value_name = "TOKEN")]
        page_token: Option<String>,
    },
}

/// `recon` or `schedules/recon` → `schedules/recon`.
fn full_name(name: &str) -> String {
    if name.starts_with(PREFIX) {
        name.to_string()
    } else {
        format!("{PREFIX}{name}")
    }
}

fn short_name(name: &str) -> &str {
    name.strip_prefix(PREFIX).unwrap_or(name)
}

pub async fn run(ctx: &Context, command: SchedulesCommand) -> Result<(), CliError> {
    // Read and map local input before dialing.
    let body = match &command {
        SchedulesCommand::Create { data, .. } | SchedulesCommand::Update { data, .. } => {
            Some(schedule_from_wren(&read_object(data)?)?)
        }
        _ => None,
    };
    let mut client = ctx.connect().await?.schedules();
    match command {
        SchedulesCommand::List => {
            let schedules = client
                .list_schedules(ListSchedulesRequest {})
                .await?
                .into_inner()
                .schedules;
            match ctx.format {
                Format::Json => print_json(&json!({
                    "result": schedules.iter().map(wren_json).collect::<Vec<_>>()
                })),
                Format::Table => {
                    if !schedules.is_empty() {
                        let mut table = table([
                            "name",
                            "enabled",
                            "paused",
                            "type",
                            "schedule",
                            "time zone",
                            "invoke",
                            "next fire",
                            "last fire",
                        ]);
                        for s in &schedules {
                            table.add_row([
                                short_name(&s.name).to_string(),
                                s.enabled.to_string(),
                                s.paused.to_string(),
                                s.r#type.clone(),
                                s.schedule.clone(),
                                time_zone(s).to_string(),
                                invoke_text(s),
                                time_cell(s.next_fire_time.as_ref()),
                                time_cell(s.last_fire_time.as_ref()),
                            ]);
                        }
                        print_line(&table.to_string())?;
                    }
                    note(&count_note(schedules.len(), "schedule"));
                    Ok(())
                }
            }
        }
        SchedulesCommand::Show { name } => {
            let request = GetScheduleRequest {
                name: full_name(&name),
            };
            print_json(&wren_json(
                &client.get_schedule(request).await?.into_inner(),
            ))
        }
        SchedulesCommand::Create { name, .. } => {
            let request = CreateScheduleRequest {
                schedule_id: name
                    .as_deref()
                    .map(|n| short_name(n).to_string())
                    .unwrap_or_default(),
                schedule: body,
            };
            print_json(&wren_json(
                &client.create_schedule(request).await?.into_inner(),
            ))
        }
        SchedulesCommand::Update { name, .. } => {
            let schedule = body.map(|s| Schedule {
                name: full_name(&name),
                ..s
            });
            let request = UpdateScheduleRequest { schedule };
            print_json(&wren_json(
                &client.update_schedule(request).await?.into_inner(),
            ))
        }
        SchedulesCommand::Delete { name } => {
            let name = full_name(&name);
            let request = DeleteScheduleRequest { name: name.clone() };
            let existed = client.delete_schedule(request).await?.into_inner().existed;
            match ctx.format {
                Format::Json => print_json(&json!({ "existed": existed })),
                Format::Table if existed => print_line(&format!("deleted {name}")),
                Format::Table => print_line(&format!("{name} did not exist; nothing deleted")),
            }
        }
        SchedulesCommand::Pause { name } => {
            let request = PauseScheduleRequest {
                name: full_name(&name),
            };
            print_state(ctx, &client.pause_schedule(request).await?.into_inner())
        }
        SchedulesCommand::Resume { name } => {
            let request = ResumeScheduleRequest {
                name: full_name(&name),
            };
            print_state(ctx, &client.resume_schedule(request).await?.into_inner())
        }
        SchedulesCommand::Run { name } => {
            let request = RunScheduleRequest {
                name: full_name(&name),
            };
            let execution = client.run_schedule(request).await?.into_inner();
            match ctx.format {
                Format::Json => print_json(&execution_json(&execution))?,
                Format::Table => {
                    let mut line =
                        format!("{}  {}", execution.name, execution.outcome().as_str_name());
                    if !execution.recon_run.is_empty() {
                        line.push_str(&format!("  recon run {}", execution.recon_run));
                    }
                    if !execution.message.is_empty() {
                        line.push_str(&format!("  {}", execution.message));
                    }
                    print_line(&line)?;
                }
            }
            if execution.outcome() == Outcome::Failed {
                return Err(CliError::Failed(format!(
                    "{} failed: {}",
                    execution.name, execution.message
                )));
            }
            Ok(())
        }
        SchedulesCommand::History {
            name,
            page_size,
            page_token,
        } => {
            let page = client
                .list_executions(ListExecutionsRequest {
                    schedule: name.as_deref().map(full_name).unwrap_or_default(),
                    page_size: page_size.unwrap_or_default(),
                    page_token: page_token.unwrap_or_default(),
                    running: false,
                })
                .await?
                .into_inner();
            match ctx.format {
                Format::Json => print_json(&cursor_json(
                    page.executions.iter().map(execution_json).collect(),
                    &page.next_page_token,
                )),
                Format::Table => {
                    if !page.executions.is_empty() {
                        let mut table = table([
                            "fire time",
                            "schedule",
                            "outcome",
                            "duration",
                            "recon run",
                            "node",
                            "message",
                        ]);
                        for e in &page.executions {
                            table.add_row([
                                time_cell(e.fire_time.as_ref()),
                                short_name(&e.schedule).to_string(),
                                e.outcome().as_str_name().to_string(),
                                duration_text(e),
                                e.recon_run.clone(),
                                e.node.clone(),
                                e.message.clone(),
                            ]);
                        }
                        print_line(&table.to_string())?;
                    }
                    note(&cursor_footer(
                        &count_note(page.executions.len(), "execution"),
                        &page.next_page_token,
                    ));
                    Ok(())
                }
            }
        }
    }
}

/// Maps a schedule in Wren:IDM's JSON shape onto the proto. Left-out fields
/// take Wren's defaults; the output-only fields `show` prints are ignored, so
/// its output can be edited and sent back.
fn schedule_from_wren(body: &Map<String, Json>) -> Result<Schedule, CliError> {
    const INPUT: &[&str] = &[
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
    // Output only, or Wren settings that mean nothing here.
    const IGNORED: &[&str] = &[
        "_id",
        "paused",
        "nextFireTime",
        "lastFireTime",
        "persisted",
        "recoverable",
        "invokeLogLevel",
    ];
    let bad = |field: &str, message: String| CliError::input(format!("--data: {field}: {message}"));
    if let Some(key) = body
        .keys()
        .find(|k| !INPUT.contains(&k.as_str()) && !IGNORED.contains(&k.as_str()))
    {
        return Err(bad(
            key,
            format!("not a schedule field (these are: {})", INPUT.join(", ")),
        ));
    }
    let value = |key: &str| body.get(key).filter(|v| !v.is_null());
    let text = |key: &str| -> Result<Option<String>, CliError> {
        match value(key) {
            None => Ok(None),
            Some(Json::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(bad(key, format!("expected a string, not {}", kind(other)))),
        }
    };
    let flag = |key: &str, default: bool| -> Result<bool, CliError> {
        match value(key) {
            None => Ok(default),
            Some(Json::Bool(b)) => Ok(*b),
            Some(other) => Err(bad(
                key,
                format!("expected true or false, not {}", kind(other)),
            )),
        }
    };
    let time = |key: &str| -> Result<Option<prost_types::Timestamp>, CliError> {
        text(key)?
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse()
                    .map_err(|e| bad(key, format!("\"{s}\" is not an RFC 3339 time ({e})")))
            })
            .transpose()
    };
    // Wren's `repeatInterval` (milliseconds) is a simple schedule's period.
    let schedule = match (text("schedule")?, value("repeatInterval")) {
        (Some(_), Some(_)) => {
            return Err(bad(
                "repeatInterval",
                "give schedule or repeatInterval, not both".to_string(),
            ));
        }
        (schedule, None) => schedule.unwrap_or_default(),
        (None, Some(ms)) => match ms.as_u64().filter(|ms| *ms > 0) {
            Some(ms) => format!("{ms}ms"),
            None => {
                return Err(bad(
                    "repeatInterval",
                    "expected a whole number of milliseconds above 0".to_string(),
                ));
            }
        },
    };
    let invoke_context = match value("invokeContext") {
        None => None,
        Some(Json::Object(map)) => Some(to_proto_struct(map)),
        Some(other) => {
            return Err(bad(
                "invokeContext",
                format!("expected an object, not {}", kind(other)),
            ));
        }
    };
    Ok(Schedule {
        enabled: flag("enabled", true)?,
        r#type: text("type")?.unwrap_or_else(|| "cron".to_string()),
        schedule,
        time_zone: text("timeZone")?.unwrap_or_default(),
        start_time: time("startTime")?,
        end_time: time("endTime")?,
        concurrent_execution: flag("concurrentExecution", false)?,
        misfire_policy: text("misfirePolicy")?.unwrap_or_else(|| "fireAndProceed".to_string()),
        invoke_service: text("invokeService")?.unwrap_or_default(),
        invoke_context,
        ..Schedule::default()
    })
}

/// A schedule in Wren:IDM's shape, with its state and fire times.
fn wren_json(s: &Schedule) -> Json {
    json!({
        "_id": s.id,
        "enabled": s.enabled,
        "type": s.r#type,
        "schedule": s.schedule,
        "timeZone": time_zone(s),
        "startTime": time_json(s.start_time.as_ref()),
        "endTime": time_json(s.end_time.as_ref()),
        "concurrentExecution": s.concurrent_execution,
        "misfirePolicy": s.misfire_policy,
        "invokeService": s.invoke_service,
        "invokeContext": Json::Object(s.invoke_context.as_ref().map(from_proto_struct).unwrap_or_default()),
        "paused": s.paused,
        "nextFireTime": time_json(s.next_fire_time.as_ref()),
        "lastFireTime": time_json(s.last_fire_time.as_ref()),
    })
}

/// An empty zone is UTC.
fn time_zone(s: &Schedule) -> &str {
    if s.time_zone.is_empty() {
        "UTC"
    } else {
        &s.time_zone
    }
}

/// `sync csvEmployee_managedUser`, `liveSync ldap_managedUser`, `script`.
fn invoke_text(s: &Schedule) -> String {
    let mapping = s
        .invoke_context
        .as_ref()
        .and_then(|c| c.fields.get("mapping"))
        .and_then(|v| match &v.kind {
            Some(prost_types::value::Kind::StringValue(m)) => Some(m.as_str()),
            _ => None,
        });
    match mapping {
        Some(mapping) if s.invoke_service != "script" => {
            format!("{} {mapping}", s.invoke_service)
        }
        _ => s.invoke_service.clone(),
    }
}

/// `schedules/recon  active  next fire …  last fire …`.
fn print_state(ctx: &Context, s: &Schedule) -> Result<(), CliError> {
    if ctx.format == Format::Json {
        return print_json(&wren_json(s));
    }
    let state = match (s.enabled, s.paused) {
        (false, _) => "disabled",
        (true, true) => "paused",
        (true, false) => "active",
    };
    let when = |t: Option<&prost_types::Timestamp>| {
        t.map_or_else(|| "never".to_string(), |t| time_cell(Some(t)))
    };
    print_line(&format!(
        "{}  {state}  next fire {}  last fire {}",
        s.name,
        when(s.next_fire_time.as_ref()),
        when(s.last_fire_time.as_ref())
    ))
}

/// How long an execution took: its duration, else end − start; empty while
/// it runs.
fn duration_text(e: &Execution) -> String {
    let millis = match (e.duration, e.start_time, e.end_time) {
        (Some(d), _, _) => d.seconds * 1000 + i64::from(d.nanos) / 1_000_000,
        (None, Some(start), Some(end)) => {
            (end.seconds - start.seconds) * 1000 + i64::from(end.nanos - start.nanos) / 1_000_000
        }
        _ => return String::new(),
    };
    crate::output::duration_cell(millis)
}

fn execution_json(e: &Execution) -> Json {
    let text = |s: &str| {
        if s.is_empty() { Json::Null } else { json!(s) }
    };
    json!({
        "name": e.name,
        "schedule": e.schedule,
        "outcome": e.outcome().as_str_name(),
        "fireTime": time_json(e.fire_time.as_ref()),
        "startTime": time_json(e.start_time.as_ref()),
        "endTime": time_json(e.end_time.as_ref()),
        "duration": text(&duration_text(e)),
        "reconRun": text(&e.recon_run),
        "node": text(&e.node),
        "message": text(&e.message),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn map(value: Json) -> Map<String, Json> {
        match value {
            Json::Object(map) => map,
            _ => Map::new(),
        }
    }

    #[test]
    fn wren_schedule_json_maps_onto_the_proto() {
        let body = map(json!({
            "enabled": false, "type": "cron", "schedule": "0/15 * * * * ?",
            "timeZone": "Europe/Paris", "startTime": "2026-12-01T00:00:00Z", "endTime": null,
            "concurrentExecution": true, "misfirePolicy": "doNothing", "invokeService": "sync",
            "invokeContext": {"action": "reconcile", "mapping": "csvEmployee_managedUser"},
            "paused": true, "nextFireTime": "2026-12-01T00:00:15Z",
        }));
        let s = schedule_from_wren(&body).unwrap();
        assert!(!s.enabled && s.concurrent_execution && !s.paused);
        assert_eq!(
            (s.r#type.as_str(), s.schedule.as_str(), s.time_zone.as_str()),
            ("cron", "0/15 * * * * ?", "Europe/Paris")
        );
        assert_eq!(s.start_time.unwrap().seconds, 1_796_083_200);
        assert_eq!(s.end_time, None);
        assert_eq!(s.next_fire_time, None);
        assert_eq!(s.misfire_policy, "doNothing");
        assert_eq!(invoke_text(&s), "sync csvEmployee_managedUser");
        // And back: `show` prints what `update` reads.
        let shown = wren_json(&s);
        assert_eq!(shown["invokeContext"]["mapping"], "csvEmployee_managedUser");
        assert_eq!(shown["startTime"], "2026-12-01T00:00:00Z");
    }

    #[test]
    fn left_out_fields_take_wrens_defaults() {
        let body = map(
            json!({"type": "simple", "repeatInterval": 500, "invokeService": "script",
                              "invokeContext": {"script": {"type": "text/javascript", "source": "1"}}}),
        );
        let s = schedule_from_wren(&body).unwrap();
        assert!(s.enabled && !s.concurrent_execution);
        assert_eq!(s.schedule, "500ms");
        assert_eq!(s.misfire_policy, "fireAndProceed");
        assert_eq!(invoke_text(&s), "script");
        let s = schedule_from_wren(&map(json!({"schedule": "0 * * * * ?"}))).unwrap();
        assert_eq!(s.r#type, "cron");
    }

    #[test]
    fn bad_fields_are_named() {
        let error = |body: Json| schedule_from_wren(&map(body)).unwrap_err().to_string();
        let start = error(json!({"startTime": "yesterday"}));
        assert!(
            start.starts_with("--data: startTime: \"yesterday\" is not an RFC 3339 time"),
            "{start}"
        );
        assert_eq!(
            error(json!({"enabled": "yes"})),
            "--data: enabled: expected true or false, not a string"
        );
        assert_eq!(
            error(json!({"invokeContext": "recon"})),
            "--data: invokeContext: expected an object, not a string"
        );
        assert!(
            error(json!({"timezone": "UTC"})).starts_with("--data: timezone: not a schedule field")
        );
    }

    #[test]
    fn names_get_their_prefix_once() {
        assert_eq!(full_name("recon"), "schedules/recon");
        assert_eq!(full_name("schedules/recon"), "schedules/recon");
        assert_eq!(short_name("schedules/recon"), "recon");
    }
}
