//! A schedule's timing in words, for people: `0/15 * * * * ?` is "every 15
//! seconds", `0 0 9 ? * MON-FRI` is "at 09:00, Monday to Friday".
//!
//! Pure and bounded: an expression longer than [`MAX_LEN`] or with more than
//! [`MAX_ITEMS`] list items in a field is not read, nothing recurses, and each
//! field becomes a set of at most 130 values (a `u128`). What this cannot say
//! plainly and correctly (wrapped ranges, steps within restricted hours, a
//! value out of range, anything Quartz itself would refuse) comes back as
//! `None`, and [`in_words`] falls back to the expression itself: never a
//! sentence that is wrong. The core checks expressions; this only reads them.

/// Longer expressions are not put into words.
pub const MAX_LEN: usize = 256;
/// List items per field read at most.
pub const MAX_ITEMS: usize = 64;
/// Lists of values are spelled out up to this many; longer ones fall back.
const MAX_LISTED: usize = 8;

const DAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];
const DAY_NAMES: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];
const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const MONTH_NAMES: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const ORDINALS: [&str; 5] = ["first", "second", "third", "fourth", "fifth"];

/// A Quartz cron expression in words, or the expression itself when it
/// cannot be said plainly.
pub fn in_words(expression: &str) -> String {
    describe(expression).unwrap_or_else(|| expression.to_string())
}

/// A `type: simple` schedule's period (`15s`, `500ms`, `5m`, `1h`) in
/// words, or the text itself.
pub fn period_in_words(period: &str) -> String {
    let text = period.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let unit = match unit.trim() {
        "ms" => ("millisecond", "milliseconds"),
        "s" => ("second", "seconds"),
        "m" => ("minute", "minutes"),
        "h" => ("hour", "hours"),
        _ => return period.to_string(),
    };
    match number.parse::<u64>() {
        Ok(1) => format!("every {}", unit.0),
        Ok(n) if n > 1 && number.len() <= 9 => format!("every {n} {}", unit.1),
        _ => period.to_string(),
    }
}

/// A field's bounds and the names it accepts (month and day names).
#[derive(Clone, Copy)]
struct Bounds {
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

const SECONDS: Bounds = Bounds {
    min: 0,
    max: 59,
    names: &[],
};
const MINUTES: Bounds = SECONDS;
const HOURS: Bounds = Bounds {
    min: 0,
    max: 23,
    names: &[],
};
const DAYS_OF_MONTH: Bounds = Bounds {
    min: 1,
    max: 31,
    names: &[],
};
const MONTHS_OF_YEAR: Bounds = Bounds {
    min: 1,
    max: 12,
    names: &MONTH_NAMES,
};
const DAYS_OF_WEEK: Bounds = Bounds {
    min: 1,
    max: 7,
    names: &DAY_NAMES,
};
const YEARS: Bounds = Bounds {
    min: 1970,
    max: 2099,
    names: &[],
};

/// The values a field allows: bit `v - min` for value `v` (years have 130).
#[derive(Clone, Copy, PartialEq, Debug)]
struct Set {
    bits: [u128; 2],
    bounds_min: u32,
    bounds_max: u32,
}

impl Set {
    fn empty(b: Bounds) -> Self {
        Set {
            bits: [0; 2],
            bounds_min: b.min,
            bounds_max: b.max,
        }
    }

    fn full(b: Bounds) -> Self {
        let mut set = Set::empty(b);
        for v in b.min..=b.max {
            set.insert(v);
        }
        set
    }

    fn insert(&mut self, v: u32) {
        let bit = v - self.bounds_min;
        self.bits[(bit / 128) as usize % 2] |= 1u128 << (bit % 128);
    }

    fn contains(&self, v: u32) -> bool {
        let bit = v - self.bounds_min;
        self.bits[(bit / 128) as usize % 2] & (1u128 << (bit % 128)) != 0
    }

    fn is_empty(&self) -> bool {
        self.bits == [0; 2]
    }

    fn is_full(&self) -> bool {
        let size = self.bounds_max - self.bounds_min + 1;
        self.bits[0].count_ones() + self.bits[1].count_ones() == size
    }

    fn values(&self) -> Vec<u32> {
        (self.bounds_min..=self.bounds_max)
            .filter(|&v| self.contains(v))
            .collect()
    }

    fn single(&self) -> Option<u32> {
        match self.values()[..] {
            [v] => Some(v),
            _ => None,
        }
    }

    /// `(first, last)` when the values are one run without gaps (two or more).
    fn range(&self) -> Option<(u32, u32)> {
        let values = self.values();
        let (first, last) = (*values.first()?, *values.last()?);
        (values.len() >= 2 && values.len() as u32 == last - first + 1).then_some((first, last))
    }

    /// `(start, step)` when the values are every `step` from `start` round
    /// the whole cycle (`0,15,30,45` of 60): "every 15 …".
    fn cycle(&self) -> Option<(u32, u32)> {
        let values = self.values();
        if values.len() < 2 {
            return None;
        }
        let size = self.bounds_max - self.bounds_min + 1;
        let step = values[1] - values[0];
        let start = values[0] - self.bounds_min;
        let even = values.windows(2).all(|w| w[1] - w[0] == step);
        (even && size.is_multiple_of(step) && start < step && values.len() as u32 == size / step)
            .then_some((values[0], step))
    }
}

/// What a field holds, read.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Field {
    /// `*` or `?`.
    Any,
    Values(Set),
    /// Day of month: `L`, `L-n` (n days before the last).
    LastDay(u32),
    /// Day of month: `LW`.
    LastWeekday,
    /// Day of month: `nW`.
    NearestWeekday(u32),
    /// Day of week: `nL`, the last such day of the month.
    LastOfMonth(u32),
    /// Day of week: `n#k`, the k-th such day of the month.
    Nth(u32, u32),
}

fn number(text: &str, b: Bounds) -> Option<u32> {
    if let Some(index) = b.names.iter().position(|n| n.eq_ignore_ascii_case(text)) {
        return u32::try_from(index).ok().map(|i| i + b.min);
    }
    if text.is_empty() || text.len() > 4 || !text.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    text.parse().ok().filter(|v| (b.min..=b.max).contains(v))
}

/// Which `L`/`W`/`#` forms a field takes.
#[derive(Clone, Copy, PartialEq)]
enum Specials {
    None,
    DayOfMonth,
    DayOfWeek,
}

/// One field: a list of `*`, `v`, `a-b`, `a/n`, `*/n`, `a-b/n` (names where
/// the field has them), or one of the `L`/`W`/`#` forms on its own.
fn field(text: &str, b: Bounds, specials: Specials) -> Option<Field> {
    if text == "*" || text == "?" {
        return Some(Field::Any);
    }
    let special = match specials {
        Specials::None => None,
        Specials::DayOfMonth => day_of_month_special(text),
        Specials::DayOfWeek => day_of_week_special(text),
    };
    if special.is_some() {
        return special;
    }
    let items: Vec<&str> = text.split(',').collect();
    if items.len() > MAX_ITEMS {
        return None;
    }
    let mut set = Set::empty(b);
    for item in items {
        let (span, step) = match item.split_once('/') {
            Some((span, step)) => (span, Some(number(step, STEPS)?)),
            None => (item, None),
        };
        let (first, last) = match span.split_once('-') {
            _ if span == "*" => (b.min, b.max),
            Some((a, z)) => (number(a, b)?, number(z, b)?),
            None => {
                let v = number(span, b)?;
                (v, if step.is_some() { b.max } else { v })
            }
        };
        if first > last {
            return None; // a range round the end (`22-2`, `FRI-MON`): said as written
        }
        let step = step.unwrap_or(1);
        let mut v = first;
        while v <= last {
            set.insert(v);
            v += step;
        }
    }
    (!set.is_empty()).then_some(Field::Values(set))
}

/// Steps may be any count up to a field's size (the year's is the largest).
const STEPS: Bounds = Bounds {
    min: 1,
    max: 130,
    names: &[],
};

/// `L`, `L-n`, `LW`, `nW`.
fn day_of_month_special(text: &str) -> Option<Field> {
    let upper = text.to_ascii_uppercase();
    if upper == "L" {
        return Some(Field::LastDay(0));
    }
    if upper == "LW" {
        return Some(Field::LastWeekday);
    }
    if let Some(offset) = upper.strip_prefix("L-") {
        let before = Bounds {
            min: 1,
            max: 30,
            names: &[],
        };
        return Some(Field::LastDay(number(offset, before)?));
    }
    let day = upper.strip_suffix('W')?;
    Some(Field::NearestWeekday(number(day, DAYS_OF_MONTH)?))
}

/// `L` (Saturday, the last day of the week), `nL`, `n#k`.
fn day_of_week_special(text: &str) -> Option<Field> {
    let upper = text.to_ascii_uppercase();
    if upper == "L" {
        let mut saturday = Set::empty(DAYS_OF_WEEK);
        saturday.insert(7);
        return Some(Field::Values(saturday));
    }
    if let Some(day) = upper.strip_suffix('L') {
        return Some(Field::LastOfMonth(number(day, DAYS_OF_WEEK)?));
    }
    let (day, nth) = upper.split_once('#')?;
    let nth = number(
        nth,
        Bounds {
            min: 1,
            max: 5,
            names: &[],
        },
    )?;
    Some(Field::Nth(number(day, DAYS_OF_WEEK)?, nth))
}

fn values_of(f: Field) -> Option<Set> {
    match f {
        Field::Values(set) => Some(set),
        _ => None,
    }
}

/// "a", "a and b", "a, b and c".
fn listed(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

fn ordinal(n: u32) -> String {
    let suffix = match (n % 10, n % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

fn clock(hour: u32, minute: u32, second: u32) -> String {
    if second == 0 {
        format!("{hour:02}:{minute:02}")
    } else {
        format!("{hour:02}:{minute:02}:{second:02}")
    }
}

fn plural(n: u32, one: &str, many: &str) -> String {
    if n == 1 {
        format!("every {one}")
    } else {
        format!("every {n} {many}")
    }
}

/// How often, for the finest field that varies ("every 15 seconds", "at
/// seconds 0 and 45"); `unit` is "second" or "minute".
fn frequency(set: Set, unit: &str, units: &str) -> Option<String> {
    if set.is_full() {
        return Some(format!("every {unit}"));
    }
    if let Some((start, step)) = set.cycle() {
        let every = plural(step, unit, units);
        return Some(if start == 0 {
            every
        } else {
            format!("{every}, from {unit} {start}")
        });
    }
    if let Some((first, last)) = set.range() {
        return Some(format!("every {unit} from {unit} {first} to {last}"));
    }
    let values = set.values();
    (values.len() <= MAX_LISTED).then(|| {
        let numbers: Vec<String> = values.iter().map(u32::to_string).collect();
        format!("at {units} {}", listed(&numbers))
    })
}

/// The hours a finer frequency runs in: "" for all of them.
fn within_hours(hours: Set) -> Option<String> {
    if hours.is_full() {
        return Some(String::new());
    }
    if let Some(h) = hours.single() {
        return Some(format!(", from {} to {}", clock(h, 0, 0), clock(h, 59, 0)));
    }
    if let Some((first, last)) = hours.range() {
        return Some(format!(
            ", from {} to {}",
            clock(first, 0, 0),
            clock(last, 59, 0)
        ));
    }
    let values = hours.values();
    (values.len() <= MAX_LISTED).then(|| {
        let hours: Vec<String> = values.iter().map(|h| format!("{h:02}")).collect();
        format!(", in hours {}", listed(&hours))
    })
}

/// The time of day part, and whether it names times of day ("at 02:30"),
/// which then take "every day" when no date narrows them.
fn time_of_day(seconds: Set, minutes: Set, hours: Set) -> Option<(String, bool)> {
    let (s, m) = (seconds.single(), minutes.single());
    match (s, m) {
        (None, _) => {
            if !minutes.is_full() {
                return None;
            }
            let often = frequency(seconds, "second", "seconds")?;
            Some((format!("{often}{}", within_hours(hours)?), false))
        }
        (Some(s), None) => {
            let often = frequency(minutes, "minute", "minutes")?;
            let second = if s == 0 {
                String::new()
            } else {
                format!(", at second {s}")
            };
            Some((format!("{often}{second}{}", within_hours(hours)?), false))
        }
        (Some(s), Some(m)) => hourly(s, m, hours),
    }
}

/// Seconds and minute fixed: once an hour, at some hours, or once a day.
fn hourly(s: u32, m: u32, hours: Set) -> Option<(String, bool)> {
    if hours.is_full() {
        let past = match (m, s) {
            (0, 0) => "on the hour".to_string(),
            (m, 0) => format!("at minute {m}"),
            (m, s) => format!("at minute {m}, second {s}"),
        };
        return Some((format!("every hour, {past}"), false));
    }
    if let Some(h) = hours.single() {
        return Some((format!("at {}", clock(h, m, s)), true));
    }
    let values = hours.values();
    let times: Vec<String> = values.iter().map(|&h| clock(h, m, s)).collect();
    if values.len() <= 4 {
        return Some((format!("at {}", listed(&times)), true));
    }
    if let Some((start, step)) = hours.cycle() {
        return Some((
            format!("every {step} hours from {}", clock(start, m, s)),
            false,
        ));
    }
    if let Some((first, last)) = hours.range() {
        return Some((
            format!(
                "every hour from {} to {}",
                clock(first, m, s),
                clock(last, m, s)
            ),
            false,
        ));
    }
    (values.len() <= MAX_LISTED).then(|| (format!("at {}", listed(&times)), true))
}

fn days_of_month(f: Field) -> Option<Option<String>> {
    Some(Some(match f {
        Field::Any => return Some(None),
        Field::LastDay(0) => "on the last day of the month".into(),
        Field::LastDay(1) => "the day before the last day of the month".into(),
        Field::LastDay(n) => format!("{n} days before the last day of the month"),
        Field::LastWeekday => "on the last weekday of the month".into(),
        Field::NearestWeekday(d) => {
            format!("on the weekday nearest the {} of the month", ordinal(d))
        }
        Field::Values(set) => {
            if set.is_full() {
                return Some(None);
            }
            if let Some((first, last)) = set.range() {
                format!(
                    "from the {} to the {} of the month",
                    ordinal(first),
                    ordinal(last)
                )
            } else {
                let values = set.values();
                if values.len() > MAX_LISTED {
                    return None;
                }
                let days: Vec<String> = values.into_iter().map(ordinal).collect();
                format!("on the {} of the month", listed(&days))
            }
        }
        Field::LastOfMonth(_) | Field::Nth(..) => return None,
    }))
}

fn day_name(d: u32) -> &'static str {
    DAYS[(d as usize).saturating_sub(1) % 7]
}

fn days_of_week(f: Field) -> Option<Option<String>> {
    Some(Some(match f {
        Field::Any => return Some(None),
        Field::LastOfMonth(d) => format!("on the last {} of the month", day_name(d)),
        Field::Nth(d, k) => format!(
            "on the {} {} of the month",
            ORDINALS[(k as usize).saturating_sub(1) % 5],
            day_name(d)
        ),
        Field::Values(set) => {
            if set.is_full() {
                return Some(None);
            }
            if let Some((first, last)) = set.range().filter(|(a, z)| z - a >= 2) {
                format!("{} to {}", day_name(first), day_name(last))
            } else {
                let days: Vec<String> = set
                    .values()
                    .into_iter()
                    .map(|d| format!("{}s", day_name(d)))
                    .collect();
                format!("on {}", listed(&days))
            }
        }
        Field::LastDay(_) | Field::LastWeekday | Field::NearestWeekday(_) => return None,
    }))
}

fn months(set: Set) -> Option<Option<String>> {
    if set.is_full() {
        return Some(None);
    }
    let name = |m: u32| MONTHS[(m as usize).saturating_sub(1) % 12].to_string();
    if let Some((first, last)) = set.range().filter(|(a, z)| z - a >= 2) {
        return Some(Some(format!("from {} to {}", name(first), name(last))));
    }
    let names: Vec<String> = set.values().into_iter().map(name).collect();
    Some(Some(format!("in {}", listed(&names))))
}

fn years(f: Option<Field>) -> Option<Option<String>> {
    let set = match f {
        None | Some(Field::Any) => return Some(None),
        Some(f) => values_of(f)?,
    };
    if set.is_full() {
        return Some(None);
    }
    if let Some((first, last)) = set.range().filter(|(a, z)| z - a >= 2) {
        return Some(Some(format!("from {first} to {last}")));
    }
    let values = set.values();
    if values.len() > MAX_LISTED {
        return None;
    }
    let numbers: Vec<String> = values.iter().map(u32::to_string).collect();
    Some(Some(format!("in {}", listed(&numbers))))
}

/// The expression in words, or `None` when it cannot be said plainly.
pub fn describe(expression: &str) -> Option<String> {
    if expression.len() > MAX_LEN || !expression.is_ascii() {
        return None;
    }
    let fields: Vec<&str> = expression.split_whitespace().collect();
    if !(6..=7).contains(&fields.len()) {
        return None;
    }
    let plain =
        |index: usize, b: Bounds| values_or_all(field(fields[index], b, Specials::None)?, b);
    let seconds = plain(0, SECONDS)?;
    let minutes = plain(1, MINUTES)?;
    let hours = plain(2, HOURS)?;
    let day_of_month = field(fields[3], DAYS_OF_MONTH, Specials::DayOfMonth)?;
    let month = plain(4, MONTHS_OF_YEAR)?;
    let day_of_week = field(fields[5], DAYS_OF_WEEK, Specials::DayOfWeek)?;
    let year = match fields.get(6) {
        Some(text) => Some(field(text, YEARS, Specials::None)?),
        None => None,
    };
    let month_day = days_of_month(day_of_month)?;
    let week_day = days_of_week(day_of_week)?;
    if month_day.is_some() && week_day.is_some() {
        return None; // Quartz takes one or the other
    }
    let (time, at_times) = time_of_day(seconds, minutes, hours)?;
    let dates: Vec<String> = [month_day, week_day, months(month)?, years(year)?]
        .into_iter()
        .flatten()
        .collect();
    Some(if dates.is_empty() {
        if at_times {
            format!("{time} every day")
        } else {
            time
        }
    } else {
        format!("{time}, {}", dates.join(", "))
    })
}

/// `*` as every value; the `L`/`W`/`#` forms never reach here.
fn values_or_all(f: Field, b: Bounds) -> Option<Set> {
    match f {
        Field::Any => Some(Set::full(b)),
        Field::Values(set) => Some(set),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn says(expression: &str, words: &str) {
        assert_eq!(in_words(expression), words, "{expression}");
    }

    #[test]
    fn the_briefs_examples() {
        says("0/15 * * * * ?", "every 15 seconds");
        says("0 0 * * * ?", "every hour, on the hour");
        says("0 30 2 * * ?", "at 02:30 every day");
        says("0 0 9 ? * MON-FRI", "at 09:00, Monday to Friday");
    }

    #[test]
    fn seconds_and_minutes() {
        says("* * * * * ?", "every second");
        says("*/15 * * * * ?", "every 15 seconds");
        says("0,15,30,45 * * * * ?", "every 15 seconds");
        says("5/15 * * * * ?", "every 15 seconds, from second 5");
        says("0/45 * * * * ?", "at seconds 0 and 45");
        says("10-20 * * * * ?", "every second from second 10 to 20");
        says("0 * * * * ?", "every minute");
        says("0 0/5 * * * ?", "every 5 minutes");
        says("30 0/5 * * * ?", "every 5 minutes, at second 30");
        says("0 0,20,45 * * * ?", "at minutes 0, 20 and 45");
        says(
            "0 0/10 9-17 ? * MON-FRI",
            "every 10 minutes, from 09:00 to 17:59, Monday to Friday",
        );
        says("0 * 9 * * ?", "every minute, from 09:00 to 09:59");
        says("0 * 9,12,17 * * ?", "every minute, in hours 09, 12 and 17");
        says("0 30 * * * ?", "every hour, at minute 30");
        says("15 30 * * * ?", "every hour, at minute 30, second 15");
    }

    #[test]
    fn hours() {
        says("0 0 9,17 * * ?", "at 09:00 and 17:00 every day");
        says(
            "0 0 0/6 * * ?",
            "at 00:00, 06:00, 12:00 and 18:00 every day",
        );
        says("0 30 0/2 * * ?", "every 2 hours from 00:30");
        says("0 0 9-17 * * ?", "every hour from 09:00 to 17:00");
        says("15 30 2 * * ?", "at 02:30:15 every day");
    }

    #[test]
    fn days_months_and_years() {
        says("0 0 12 1 * ?", "at 12:00, on the 1st of the month");
        says(
            "0 0 12 1,15 * ?",
            "at 12:00, on the 1st and 15th of the month",
        );
        says(
            "0 0 12 1-7 * ?",
            "at 12:00, from the 1st to the 7th of the month",
        );
        says("0 0 12 L * ?", "at 12:00, on the last day of the month");
        says(
            "0 0 12 L-3 * ?",
            "at 12:00, 3 days before the last day of the month",
        );
        says(
            "0 0 12 LW * ?",
            "at 12:00, on the last weekday of the month",
        );
        says(
            "0 0 12 15W * ?",
            "at 12:00, on the weekday nearest the 15th of the month",
        );
        says("0 0 12 ? * 6L", "at 12:00, on the last Friday of the month");
        says(
            "0 0 12 ? * 6#3",
            "at 12:00, on the third Friday of the month",
        );
        says(
            "0 0 12 ? * FRI#1 2027",
            "at 12:00, on the first Friday of the month, in 2027",
        );
        says("0 0 12 ? * 2", "at 12:00, on Mondays");
        says(
            "0 0 12 ? * MON,WED,FRI",
            "at 12:00, on Mondays, Wednesdays and Fridays",
        );
        says("0 0 12 ? * SAT,SUN", "at 12:00, on Sundays and Saturdays");
        says("0 0 12 ? * L", "at 12:00, on Saturdays");
        says(
            "0 0 0 1 JAN ?",
            "at 00:00, on the 1st of the month, in January",
        );
        says(
            "0 0 0 ? JAN-MAR MON",
            "at 00:00, on Mondays, from January to March",
        );
        says(
            "0 0 0 1 1/3 ?",
            "at 00:00, on the 1st of the month, in January, April, July and October",
        );
        says(
            "0 0 0 1 1 ? 2027-2030",
            "at 00:00, on the 1st of the month, in January, from 2027 to 2030",
        );
        says("0 0 12 * * ? *", "at 12:00 every day");
        says("0 0 12 ? * mon-fri", "at 12:00, Monday to Friday");
    }

    #[test]
    fn what_it_cannot_say_is_the_expression() {
        for expression in [
            "",
            "0 0 * * *",          // Unix, five fields
            "0 0 0 * * ? 2027 x", // eight
            "60 * * * * ?",       // out of range
            "0 0 24 * * ?",
            "0 0 0 32 * ?",
            "0 0 0 ? * 8",
            "0 0 22-2 * * ?", // round midnight
            "0 0 0 ? * FRI-MON",
            "0 0 0 1 * MON",   // both days
            "0/0 * * * * ?",   // no step
            "0/5 0/5 * * * ?", // seconds within some minutes
            "0 0 0 ? * 6#6",
            "0 0 0 L-31 * ?",
            "a b c d e f",
            "0 0 12 ? * 2 1969",
            "0 0 0 1,3,5,7,9,11,13,15,17 * ?",
            "0 0 0 1W-3 * ?",
            "0 0 0 * * ?\u{e9}",
            "0 0 1,2,3,4,5,7,9,11,13,15 * * ?",
        ] {
            assert_eq!(describe(expression), None, "{expression}");
            assert_eq!(in_words(expression), expression);
        }
    }

    #[test]
    fn hostile_input_is_bounded() {
        let long = format!("0 0 0 * * ? {}", "1".repeat(MAX_LEN));
        assert_eq!(in_words(&long), long);
        let items = vec!["1"; MAX_ITEMS + 1].join(",");
        assert_eq!(describe(&format!("{items} * * * * ?")), None);
        let many = vec!["0-59/1"; 30].join(","); // every value 30 times over
        assert_eq!(
            describe(&format!("{many} * * * * ?")).as_deref(),
            Some("every second")
        );
        assert_eq!(describe("99999999999999999999 * * * * ?"), None);
        assert_eq!(describe("0/99999 * * * * ?"), None);
    }

    #[test]
    fn simple_periods() {
        assert_eq!(period_in_words("15s"), "every 15 seconds");
        assert_eq!(period_in_words("1m"), "every minute");
        assert_eq!(period_in_words("500ms"), "every 500 milliseconds");
        assert_eq!(period_in_words("2h"), "every 2 hours");
        assert_eq!(period_in_words("15 fortnights"), "15 fortnights");
        assert_eq!(period_in_words("0s"), "0s");
        assert_eq!(period_in_words(""), "");
    }
}
