//! Quartz cron expressions as Wren:IDM users write them (`0/15 * * * * ?`,
//! `0 0 2 ? * MON-FRI`, `0 0 12 ? * 6#3 2027`), checked field by field and
//! computed with croner (the cron library under tokio-cron-scheduler).
//!
//! Quartz has seconds first, six or seven fields (the year is optional), and
//! numbers the days of the week 1–7 = SUN–SAT; croner numbers them 0–6. So a
//! numeric day of week is translated (`6#3`, the third Friday, becomes `5#3`)
//! and names (`MON-FRI`) pass as they are. Quartz takes a day of the month or
//! a day of the week, not both: one of them is `?` (or `*`).

use std::fmt;

use chrono::{DateTime, TimeZone};
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

/// The fields of a Quartz expression, in order, as errors name them.
pub const FIELDS: [&str; 7] = [
    "seconds",
    "minutes",
    "hours",
    "dayOfMonth",
    "month",
    "dayOfWeek",
    "year",
];

/// Why an expression cannot be used; `field` is one of [`FIELDS`], or
/// `schedule` for the whole expression.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("schedule \"{expression}\": {field}: {message}")]
pub struct QuartzError {
    pub expression: String,
    pub field: &'static str,
    pub message: String,
}

/// A checked Quartz expression.
#[derive(Clone)]
pub struct QuartzCron {
    expression: String,
    cron: Cron,
}

impl fmt::Debug for QuartzCron {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "QuartzCron({:?})", self.expression)
    }
}

impl fmt::Display for QuartzCron {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.expression)
    }
}

/// Seconds required, year optional: Quartz's shape (and tokio-cron-scheduler's
/// settings, should the runtime move onto it).
fn parser() -> CronParser {
    CronParser::builder()
        .seconds(Seconds::Required)
        .year(Year::Optional)
        .build()
}

impl QuartzCron {
    pub fn parse(expression: &str) -> Result<Self, QuartzError> {
        let error = |field: &'static str, message: String| QuartzError {
            expression: expression.to_string(),
            field,
            message,
        };
        let fields: Vec<&str> = expression.split_whitespace().collect();
        match fields.len() {
            6 | 7 => {}
            5 => {
                return Err(error(
                    "schedule",
                    format!(
                        "Quartz expressions start with seconds (6 or 7 fields); this has 5 \
                         (a Unix cron?): for every such minute write \"0 {}\"",
                        fields.join(" ")
                    ),
                ));
            }
            n => {
                return Err(error(
                    "schedule",
                    format!(
                        "expected 6 or 7 fields (seconds minutes hours dayOfMonth month dayOfWeek [year]), got {n}"
                    ),
                ));
            }
        }
        let day_of_month = fields[3];
        let day_of_week = fields[5];
        let unset = |f: &str| f == "?" || f == "*";
        if !unset(day_of_month) && !unset(day_of_week) {
            return Err(error(
                "dayOfWeek",
                "Quartz takes a day of the month or a day of the week, not both: put ? in one"
                    .into(),
            ));
        }
        // croner takes an empty list element (`,`, `1,,2`) as "nothing": an
        // expression that never fires, searched for up to the year 5000.
        if let Some(index) = fields.iter().position(|f| f.split(',').any(str::is_empty)) {
            return Err(error(
                FIELDS[index],
                format!("\"{}\" has an empty list element", fields[index]),
            ));
        }
        if let Some(year) = fields.get(6) {
            check_years(year).map_err(|m| error("year", m))?;
        }
        let mut translated: Vec<String> = fields.iter().map(|f| f.to_string()).collect();
        translated[5] = croner_day_of_week(day_of_week).map_err(|m| error("dayOfWeek", m))?;
        // Quartz fires up to 2099; croner would search an expression that
        // never matches (`30 2`: February 30th) up to the year 5000, seconds
        // of CPU on every call. Bounding the years bounds the search.
        translated.truncate(6);
        translated.push(quartz_years(fields.get(6).copied()));
        // Each field alone, the others left open, names the field at fault.
        let open = ["0", "*", "*", "*", "*", "?", "*"];
        for (index, field) in FIELDS.iter().enumerate().take(translated.len()) {
            let mut probe: Vec<&str> = open[..translated.len()].to_vec();
            probe[index] = &translated[index];
            if index == 5 {
                probe[3] = "?";
            }
            if let Err(e) = parser().parse(&probe.join(" ")) {
                let written = fields.get(index).copied().unwrap_or_default();
                return Err(error(field, describe(&e, written)));
            }
        }
        let pattern = translated.join(" ");
        let cron = parser()
            .parse(&pattern)
            .map_err(|e| error("schedule", describe(&e, expression)))?;
        Ok(QuartzCron {
            expression: expression.to_string(),
            cron,
        })
    }

    /// The first fire time strictly after `after`, in its time zone.
    pub fn next_after<Tz: TimeZone>(&self, after: &DateTime<Tz>) -> Option<DateTime<Tz>> {
        self.cron.find_next_occurrence(after, false).ok()
    }
}

/// Quartz day-of-week → croner: numbers 1–7 become 0–6 wherever they stand
/// (lists, ranges, steps' starts, `n#k`, `nL`); names and `?`, `*`, `L` stay.
fn croner_day_of_week(field: &str) -> Result<String, String> {
    let mut out = String::with_capacity(field.len());
    let mut chars = field.chars().peekable();
    // After '#' or '/', a number is an ordinal or a step, not a day.
    let mut literal_number = false;
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() {
            let mut number = String::from(c);
            while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                number.push(*d);
                chars.next();
            }
            if literal_number {
                out.push_str(&number);
            } else {
                let day: u32 = number
                    .parse()
                    .map_err(|_| format!("\"{number}\" is not a day"))?;
                if !(1..=7).contains(&day) {
                    return Err(format!(
                        "{day} is not a day of the week: Quartz numbers them 1-7 (SUN-SAT), or use SUN, MON, …"
                    ));
                }
                out.push_str(&(day - 1).to_string());
            }
            literal_number = false;
            continue;
        }
        literal_number = c == '#' || c == '/';
        out.push(c);
    }
    Ok(out)
}

/// The year field for croner within Quartz's 1970–2099: none or `*` is the
/// whole range, a step from `*` or a single year (`*/2`, `2027/5`) stops at 2099.
fn quartz_years(field: Option<&str>) -> String {
    let field = match field {
        None | Some("*") | Some("?") => return "1970-2099".to_string(),
        Some(field) => field,
    };
    field
        .split(',')
        .map(|item| match item.split_once('/') {
            Some(("*", step)) => format!("1970-2099/{step}"),
            Some((start, step)) if !start.contains('-') => format!("{start}-2099/{step}"),
            _ => item.to_string(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Quartz accepts the years 1970–2099.
fn check_years(field: &str) -> Result<(), String> {
    let mut number = String::new();
    for c in field.chars().chain(std::iter::once(',')) {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        if !number.is_empty() {
            let year: u32 = number.parse().unwrap_or(0);
            // After '/', the number is a step, not a year.
            if !(1970..=2099).contains(&year) && !field.contains(&format!("/{number}")) {
                return Err(format!("{year} is not a year Quartz accepts (1970-2099)"));
            }
            number.clear();
        }
    }
    Ok(())
}

fn describe(error: &croner::errors::CronError, field: &str) -> String {
    format!("\"{field}\" is not valid here ({error})")
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn next(expression: &str, after: &str) -> String {
        QuartzCron::parse(expression)
            .unwrap()
            .next_after(&at(after))
            .unwrap()
            .to_rfc3339()
    }

    #[test]
    fn the_expressions_wren_users_write_fire_when_quartz_would() {
        // Every 15 seconds.
        assert_eq!(
            next("0/15 * * * * ?", "2026-11-23T10:00:07Z"),
            "2026-11-23T10:00:15+00:00"
        );
        // 02:00 every day.
        assert_eq!(
            next("0 0 2 * * ?", "2026-11-23T10:00:00Z"),
            "2026-11-24T02:00:00+00:00"
        );
        // Weekdays at 02:00, by name: 2026-11-28 is a Saturday.
        assert_eq!(
            next("0 0 2 ? * MON-FRI", "2026-11-27T03:00:00Z"),
            "2026-11-30T02:00:00+00:00"
        );
        // Quartz 6 is Friday: the third Friday of December 2026 is the 18th.
        assert_eq!(
            next("0 0 12 ? * 6#3", "2026-12-01T00:00:00Z"),
            "2026-12-18T12:00:00+00:00"
        );
        // Quartz 1 is Sunday; 2-6 is Monday to Friday.
        assert_eq!(
            next("0 0 9 ? * 1", "2026-11-23T00:00:00Z"),
            "2026-11-29T09:00:00+00:00"
        );
        assert_eq!(
            next("0 0 9 ? * 2-6", "2026-11-28T00:00:00Z"),
            "2026-11-30T09:00:00+00:00"
        );
        // The last day of the month, the weekday nearest the 15th, a year field.
        assert_eq!(
            next("0 0 0 L * ?", "2026-11-23T00:00:00Z"),
            "2026-11-30T00:00:00+00:00"
        );
        assert_eq!(
            next("0 0 0 15W * ?", "2026-11-01T00:00:00Z"),
            "2026-11-16T00:00:00+00:00"
        );
        assert_eq!(
            next("0 0 0 1 1 ? 2028", "2026-11-23T00:00:00Z"),
            "2028-01-01T00:00:00+00:00"
        );
    }

    #[test]
    fn fire_times_follow_the_time_zone() {
        let cron = QuartzCron::parse("0 0 2 * * ?").unwrap();
        let zone: chrono_tz::Tz = "Europe/Paris".parse().unwrap();
        let after = zone.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap();
        let fire = cron.next_after(&after).unwrap();
        assert_eq!(fire.to_rfc3339(), "2026-11-24T02:00:00+01:00");
        assert_eq!(
            fire.with_timezone(&Utc).to_rfc3339(),
            "2026-11-24T01:00:00+00:00"
        );
    }

    #[test]
    fn days_of_week_are_renumbered_for_croner() {
        for (quartz, croner) in [
            ("?", "?"),
            ("*", "*"),
            ("1", "0"),
            ("7", "6"),
            ("2-6", "1-5"),
            ("1,7", "0,6"),
            ("6#3", "5#3"),
            ("6L", "5L"),
            ("2/2", "1/2"),
            ("MON-FRI", "MON-FRI"),
        ] {
            assert_eq!(croner_day_of_week(quartz).unwrap(), croner, "{quartz}");
        }
        let cron = QuartzCron::parse("0 0 12 ? * 6#3").unwrap();
        assert_eq!(cron.to_string(), "0 0 12 ? * 6#3", "shown as written");
    }

    /// Fuzzing (quartz): croner reads `,` as an empty set, so the expression
    /// never fired and every fire-time search ran to the year 5000.
    #[test]
    fn an_empty_list_element_is_refused_naming_the_field() {
        for (expression, field) in [
            ("0 0 , * * ?", "hours"),
            ("0 0 1,,2 * * ?", "hours"),
            ("0, 0 0 * * ?", "seconds"),
            ("0 0 0 ? * MON,", "dayOfWeek"),
            ("0 0 0 * * ? 2027,", "year"),
        ] {
            let error = QuartzCron::parse(expression).unwrap_err();
            assert_eq!(error.field, field, "{expression}: {error}");
            assert!(error.to_string().contains("empty list element"), "{error}");
        }
    }

    /// Fuzzing (quartz): a date that never comes (February 30th) made each
    /// fire-time search walk every day to the year 5000: seconds of CPU.
    /// Quartz stops at 2099, and so does the search now.
    #[test]
    fn an_expression_that_never_fires_is_searched_only_to_2099() {
        // Years end at 2099, steps over them too; a year field still works.
        assert_eq!(
            next("0 0 0 1 1 ? 2089/10", "2026-11-23T00:00:00Z"),
            "2089-01-01T00:00:00+00:00"
        );
        let cron = QuartzCron::parse("0 0 0 1 1 ? 2089/10").unwrap();
        assert_eq!(cron.next_after(&at("2099-06-01T00:00:00Z")), None);
        assert_eq!(
            next("0 0 0 1 1 ? */50", "2026-11-23T00:00:00Z"),
            "2070-01-01T00:00:00+00:00"
        );
        let started = std::time::Instant::now();
        for expression in ["0 0 0 30 2 ?", "0 0 0 31 4,6,9,11 ?", "0 0 0 30W 2 ? *"] {
            let cron = QuartzCron::parse(expression).unwrap();
            assert_eq!(cron.next_after(&at("2026-11-23T00:00:00Z")), None);
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn a_bad_expression_is_refused_naming_the_field() {
        for (expression, field, needle) in [
            ("*/5 * * * *", "schedule", "start with seconds"),
            ("0 0", "schedule", "6 or 7 fields"),
            ("61 * * * * ?", "seconds", "61"),
            ("0 60 * * * ?", "minutes", "60"),
            ("0 0 25 * * ?", "hours", "25"),
            ("0 0 0 32 * ?", "dayOfMonth", "32"),
            ("0 0 0 ? 13 *", "month", "13"),
            ("0 0 0 ? * 0", "dayOfWeek", "1-7"),
            ("0 0 0 ? * 8", "dayOfWeek", "1-7"),
            ("0 0 0 ? * FUNDAY", "dayOfWeek", "FUNDAY"),
            ("0 0 0 15 * MON", "dayOfWeek", "not both"),
            ("0 0 0 * * ? 1800", "year", "1800"),
        ] {
            let Err(error) = QuartzCron::parse(expression) else {
                panic!("{expression} was accepted");
            };
            assert_eq!(error.field, field, "{expression}: {error}");
            assert!(error.to_string().contains(needle), "{expression}: {error}");
        }
    }
}
