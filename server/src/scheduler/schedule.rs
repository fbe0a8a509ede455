//! A schedule (`conf/schedule-<name>.json`) in Wren:IDM's shape, checked when
//! it is loaded or written: a bad schedule is refused naming the field.
//!
//! ```json
//! {"enabled": true, "type": "cron", "schedule": "0/15 * * * * ?", "timeZone": "Europe/Paris",
//!  "startTime": "2026-12-01T00:00:00Z", "endTime": null,
//!  "concurrentExecution": false, "misfirePolicy": "fireAndProceed",
//!  "invokeService": "sync", "invokeContext": {"action": "reconcile", "mapping": "csvEmployee_managedUser"}}
//! ```
//!
//! `type: simple` takes a period instead (`"schedule": "15s"`, or Wren's
//! `"repeatInterval"` in milliseconds). `invokeService` is `sync` (`action`
//! `reconcile` or `recon`, and a `mapping`), `script` (`{"script": {"type":
//! "text/javascript", "source" | "file": …}}`) or `liveSync` (a `mapping`
//! whose source is reconciled only when it changed). Wren's long service
//! names (`org.forgerock.openidm.sync`, …) are accepted too.

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde_json::{Map, Value};

use super::quartz::QuartzCron;
use crate::script::ScriptSource;

/// Why a schedule cannot be used; `field` is its JSON name.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ScheduleError {
    pub field: String,
    pub message: String,
}

fn error(field: &str, message: impl Into<String>) -> ScheduleError {
    ScheduleError {
        field: field.to_string(),
        message: message.into(),
    }
}

#[derive(Debug, Clone)]
pub enum Timing {
    Cron(Box<QuartzCron>),
    /// Every period, counted from the start time (or from when it was loaded).
    Simple(Duration),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MisfirePolicy {
    /// Ticks missed while idmd was down run once at start.
    FireAndProceed,
    /// Missed ticks are skipped (and recorded as skipped).
    DoNothing,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Invoke {
    /// A reconciliation of the mapping.
    Sync {
        mapping: String,
    },
    Script(ScriptSource),
    /// A reconciliation only when the mapping's source changed.
    LiveSync {
        mapping: String,
    },
}

#[derive(Debug, Clone)]
pub struct Schedule {
    pub enabled: bool,
    pub timing: Timing,
    pub time_zone: Tz,
    pub start_time: Option<DateTime<Utc>>,
    pub end_time: Option<DateTime<Utc>>,
    pub concurrent_execution: bool,
    pub misfire_policy: MisfirePolicy,
    pub invoke: Invoke,
}

impl Schedule {
    /// Reads a stored schedule document: its `$env` references resolved,
    /// then [`Schedule::from_json`]. An error names a value that came from
    /// `$env` by its reference, never the value.
    pub fn from_document(
        name: &str,
        body: &Map<String, Value>,
        conf_dir: &Path,
    ) -> Result<Self, ScheduleError> {
        let mut hidden = Vec::new();
        let resolved = crate::config::resolve_env(&Value::Object(body.clone()), &mut hidden);
        let resolved = resolved.as_object().cloned().unwrap_or_default();
        Self::from_json(name, &resolved, conf_dir).map_err(|e| ScheduleError {
            field: e.field,
            message: crate::config::scrub_text(e.message, &hidden),
        })
    }

    /// Reads a schedule; `name` names its scripts, script files are relative to `conf_dir`.
    pub fn from_json(
        name: &str,
        body: &Map<String, Value>,
        conf_dir: &Path,
    ) -> Result<Self, ScheduleError> {
        let text = |key: &str| -> Result<Option<&str>, ScheduleError> {
            match body.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.as_str())),
                Some(other) => Err(error(key, format!("expected a string, got {other}"))),
            }
        };
        let flag = |key: &str, default: bool| -> Result<bool, ScheduleError> {
            match body.get(key) {
                None | Some(Value::Null) => Ok(default),
                Some(Value::Bool(b)) => Ok(*b),
                // `$env` values and some hand-written files carry text.
                Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(true),
                Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Ok(false),
                Some(other) => Err(error(key, format!("expected true or false, got {other}"))),
            }
        };
        let time = |key: &str| -> Result<Option<DateTime<Utc>>, ScheduleError> {
            text(key)?
                .filter(|s| !s.is_empty())
                .map(|s| {
                    DateTime::parse_from_rfc3339(s)
                        .map(|t| t.with_timezone(&Utc))
                        .map_err(|e| error(key, format!("\"{s}\" is not an RFC 3339 time ({e})")))
                })
                .transpose()
        };

        let schedule_text = text("schedule")?;
        let timing = match text("type")?.unwrap_or("cron") {
            "cron" => {
                let expression =
                    schedule_text.ok_or_else(|| error("schedule", "required for type cron"))?;
                Timing::Cron(Box::new(QuartzCron::parse(expression).map_err(|e| {
                    let field = if e.field == "schedule" {
                        "schedule".to_string()
                    } else {
                        format!("schedule.{}", e.field)
                    };
                    ScheduleError {
                        field,
                        message: format!("\"{expression}\": {}", e.message),
                    }
                })?))
            }
            "simple" => Timing::Simple(simple_period(schedule_text, body.get("repeatInterval"))?),
            other => {
                return Err(error("type", format!("\"{other}\" is not cron or simple")));
            }
        };
        let time_zone = match text("timeZone")?.filter(|s| !s.is_empty()) {
            None => Tz::UTC,
            Some(zone) => zone.parse::<Tz>().map_err(|_| {
                error(
                    "timeZone",
                    format!("\"{zone}\" is not an IANA time zone (such as Europe/Paris or UTC)"),
                )
            })?,
        };
        let start_time = time("startTime")?;
        let end_time = time("endTime")?;
        if let (Some(start), Some(end)) = (start_time, end_time)
            && end <= start
        {
            return Err(error("endTime", "must be after startTime"));
        }
        let misfire_policy = match text("misfirePolicy")?.unwrap_or("fireAndProceed") {
            "fireAndProceed" => MisfirePolicy::FireAndProceed,
            "doNothing" => MisfirePolicy::DoNothing,
            other => {
                return Err(error(
                    "misfirePolicy",
                    format!("\"{other}\" is not fireAndProceed or doNothing"),
                ));
            }
        };
        let context = match body.get("invokeContext") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(map)) => map.clone(),
            Some(other) => {
                return Err(error(
                    "invokeContext",
                    format!("expected an object, got {other}"),
                ));
            }
        };
        let mapping = |what: &str| -> Result<String, ScheduleError> {
            context
                .get("mapping")
                .and_then(Value::as_str)
                .filter(|m| !m.is_empty())
                .map(str::to_string)
                .ok_or_else(|| {
                    error(
                        "invokeContext.mapping",
                        format!("required for {what}: the mapping to reconcile"),
                    )
                })
        };
        let service = text("invokeService")?
            .ok_or_else(|| error("invokeService", "required: sync, script or liveSync"))?;
        let invoke = match service {
            "sync" | "org.forgerock.openidm.sync" => {
                match context.get("action").and_then(Value::as_str) {
                    None | Some("reconcile" | "recon") => {}
                    Some(other) => {
                        return Err(error(
                            "invokeContext.action",
                            format!("\"{other}\" is not reconcile (or recon)"),
                        ));
                    }
                }
                Invoke::Sync {
                    mapping: mapping("sync")?,
                }
            }
            "script" | "org.forgerock.openidm.script" => {
                let script = context.get("script").ok_or_else(|| {
                    error(
                        "invokeContext.script",
                        "required: {\"type\": \"text/javascript\", \"source\" | \"file\": …}",
                    )
                })?;
                Invoke::Script(
                    ScriptSource::from_json(&format!("schedule {name}"), script, conf_dir)
                        .map_err(|e| error("invokeContext.script", e.to_string()))?,
                )
            }
            "liveSync" | "provisioner" | "org.forgerock.openidm.provisioner" => Invoke::LiveSync {
                mapping: mapping("liveSync")?,
            },
            other => {
                return Err(error(
                    "invokeService",
                    format!("\"{other}\" is not sync, script or liveSync"),
                ));
            }
        };
        Ok(Schedule {
            enabled: flag("enabled", true)?,
            timing,
            time_zone,
            start_time,
            end_time,
            concurrent_execution: flag("concurrentExecution", false)?,
            misfire_policy,
            invoke,
        })
    }

    /// The first fire time strictly after `after` within the schedule's
    /// window (start and end times), if it fires again at all.
    pub fn next_fire_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        use chrono::{DurationRound, TimeDelta};
        let from = match self.start_time {
            // A start in the future: the first tick may be the start itself.
            Some(start) if start > after => start - TimeDelta::seconds(1),
            _ => after,
        };
        // Ticks fall on whole seconds; croner keeps a fraction it is given.
        let from = from.duration_trunc(TimeDelta::seconds(1)).unwrap_or(from);
        let next = match &self.timing {
            Timing::Cron(cron) => cron
                .next_after(&from.with_timezone(&self.time_zone))?
                .with_timezone(&Utc),
            Timing::Simple(period) => {
                let period = chrono::Duration::from_std(*period).ok()?;
                match self.start_time {
                    // Ticks fall on start + k·period.
                    Some(start) if from >= start => {
                        let elapsed = (from - start).num_milliseconds();
                        let step = period.num_milliseconds().max(1);
                        start + chrono::Duration::milliseconds((elapsed / step + 1) * step)
                    }
                    Some(start) => start,
                    None => from + period,
                }
            }
        };
        match self.end_time {
            Some(end) if next > end => None,
            _ => Some(next),
        }
    }
}

/// A simple schedule's period: `"15s"`, `"500ms"`, `"5m"`, `"1h"`, or
/// Wren's `repeatInterval` in milliseconds.
fn simple_period(
    schedule: Option<&str>,
    repeat_interval: Option<&Value>,
) -> Result<Duration, ScheduleError> {
    if let Some(ms) = repeat_interval.filter(|v| !v.is_null()) {
        return ms
            .as_u64()
            .filter(|ms| *ms > 0)
            .map(Duration::from_millis)
            .ok_or_else(|| error("repeatInterval", "a whole number of milliseconds above 0"));
    }
    let text = schedule
        .ok_or_else(|| error("schedule", "required for type simple: a period such as 15s"))?
        .trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let amount: u64 = number.parse().map_err(|_| {
        error(
            "schedule",
            format!("\"{text}\" is not a period such as 15s"),
        )
    })?;
    let period = match unit {
        "ms" => Duration::from_millis(amount),
        "s" | "" => Duration::from_secs(amount),
        "m" => Duration::from_secs(amount * 60),
        "h" => Duration::from_secs(amount * 3600),
        _ => {
            return Err(error(
                "schedule",
                format!("\"{text}\": the unit is one of ms, s, m, h"),
            ));
        }
    };
    if period.is_zero() {
        return Err(error("schedule", "the period must be above 0"));
    }
    Ok(period)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;
    use serde_json::json;

    fn load(body: Value) -> Result<Schedule, ScheduleError> {
        Schedule::from_json("test", body.as_object().unwrap(), Path::new("."))
    }

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    /// The cookbook's two schedules, as DESIGN.md quotes them.
    #[test]
    fn the_cookbook_schedules_load() {
        let recon = load(
            json!({"enabled": true, "type": "cron", "schedule": "0/15 * * * * ?",
            "concurrentExecution": false, "invokeService": "sync",
            "invokeContext": {"action": "reconcile", "mapping": "csvEmployee_managedUser"}}),
        )
        .unwrap();
        assert!(recon.enabled && !recon.concurrent_execution);
        assert_eq!(recon.misfire_policy, MisfirePolicy::FireAndProceed);
        assert_eq!(
            recon.invoke,
            Invoke::Sync {
                mapping: "csvEmployee_managedUser".into()
            }
        );
        assert_eq!(
            recon.next_fire_after(at("2026-11-23T10:00:07Z")),
            Some(at("2026-11-23T10:00:15Z"))
        );

        let greeting = load(json!({"enabled": true, "type": "cron", "schedule": "0/15 * * * * ?",
            "invokeService": "script", "invokeContext": {"script": {"type": "text/javascript",
            "source": "console.log('Timestamp: \"' + new Date().toISOString() + '\" – Hi, this is automatically triggered script!');"}}}))
        .unwrap();
        assert!(matches!(greeting.invoke, Invoke::Script(_)));
    }

    #[test]
    fn time_zones_windows_and_simple_periods() {
        let paris = load(
            json!({"schedule": "0 0 2 * * ?", "timeZone": "Europe/Paris",
            "invokeService": "sync", "invokeContext": {"mapping": "m"}}),
        )
        .unwrap();
        assert_eq!(
            paris.next_fire_after(at("2026-11-23T12:00:00Z")),
            Some(at("2026-11-24T01:00:00Z"))
        );

        // Daylight saving starts in Paris on 2027-03-28: 01:30 local is 00:30Z
        // before and 23:30Z (the day before) after; a fixed offset would drift.
        let nightly = load(
            json!({"schedule": "0 30 1 * * ?", "timeZone": "Europe/Paris",
            "invokeService": "sync", "invokeContext": {"mapping": "m"}}),
        )
        .unwrap();
        assert_eq!(
            nightly.next_fire_after(at("2027-03-26T12:00:00Z")),
            Some(at("2027-03-27T00:30:00Z"))
        );
        assert_eq!(
            nightly.next_fire_after(at("2027-03-28T12:00:00Z")),
            Some(at("2027-03-28T23:30:00Z"))
        );

        let window = load(json!({"schedule": "0 0 * * * ?", "startTime": "2026-12-01T00:00:00Z",
            "endTime": "2026-12-01T02:30:00Z", "invokeService": "sync", "invokeContext": {"mapping": "m"}}))
        .unwrap();
        assert_eq!(
            window.next_fire_after(at("2026-11-23T12:00:00Z")),
            Some(at("2026-12-01T00:00:00Z")),
            "the start itself is the first tick"
        );
        assert_eq!(
            window.next_fire_after(at("2026-12-01T01:00:00Z")),
            Some(at("2026-12-01T02:00:00Z"))
        );
        assert_eq!(window.next_fire_after(at("2026-12-01T02:00:00Z")), None);

        let simple = load(
            json!({"type": "simple", "schedule": "15s", "startTime": "2026-11-23T10:00:00Z",
            "invokeService": "sync", "invokeContext": {"mapping": "m"}}),
        )
        .unwrap();
        assert_eq!(
            simple.next_fire_after(at("2026-11-23T10:00:20Z")),
            Some(at("2026-11-23T10:00:30Z"))
        );
        let wren = load(json!({"type": "simple", "repeatInterval": 500,
            "invokeService": "sync", "invokeContext": {"mapping": "m"}}))
        .unwrap();
        assert!(matches!(wren.timing, Timing::Simple(p) if p == Duration::from_millis(500)));
    }

    #[test]
    fn mistakes_name_the_field() {
        let sync = json!({"invokeService": "sync", "invokeContext": {"mapping": "m"}});
        let cases: Vec<(Value, &str, &str)> = vec![
            (
                json!({"schedule": "*/5 * * * *"}),
                "schedule",
                "start with seconds",
            ),
            (json!({"schedule": "0 0 25 * * ?"}), "schedule.hours", "25"),
            (
                json!({"schedule": "0 0 0 ? * 9"}),
                "schedule.dayOfWeek",
                "1-7",
            ),
            (
                json!({"schedule": "0 * * * * ?", "type": "hourly"}),
                "type",
                "hourly",
            ),
            (
                json!({"schedule": "0 * * * * ?", "timeZone": "Mars/Olympus"}),
                "timeZone",
                "Mars/Olympus",
            ),
            (
                json!({"schedule": "0 * * * * ?", "startTime": "tomorrow"}),
                "startTime",
                "RFC 3339",
            ),
            (
                json!({"schedule": "0 * * * * ?", "startTime": "2026-12-02T00:00:00Z", "endTime": "2026-12-01T00:00:00Z"}),
                "endTime",
                "after",
            ),
            (
                json!({"schedule": "0 * * * * ?", "misfirePolicy": "smart"}),
                "misfirePolicy",
                "smart",
            ),
            (
                json!({"schedule": "0 * * * * ?", "enabled": "yes"}),
                "enabled",
                "true or false",
            ),
            (
                json!({"schedule": "0 * * * * ?", "invokeService": "email"}),
                "invokeService",
                "email",
            ),
            (
                json!({"schedule": "0 * * * * ?", "invokeContext": {"action": "delete", "mapping": "m"}}),
                "invokeContext.action",
                "delete",
            ),
            (
                json!({"schedule": "0 * * * * ?", "invokeContext": {}}),
                "invokeContext.mapping",
                "required",
            ),
            (
                json!({"schedule": "0 * * * * ?", "invokeService": "script", "invokeContext": {"script": {"type": "groovy", "source": "1"}}}),
                "invokeContext.script",
                "groovy",
            ),
            (
                json!({"type": "simple", "schedule": "15 fortnights"}),
                "schedule",
                "unit",
            ),
            (
                json!({"type": "simple", "schedule": "0s"}),
                "schedule",
                "above 0",
            ),
        ];
        for (patch, field, needle) in cases {
            let mut body = sync.clone();
            for (key, value) in patch.as_object().unwrap() {
                body[key] = value.clone();
            }
            let Err(error) = load(body.clone()) else {
                panic!("{body} was accepted");
            };
            assert_eq!(error.field, field, "{body}: {error}");
            assert!(error.to_string().contains(needle), "{body}: {error}");
        }
    }
}
