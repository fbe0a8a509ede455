//! Quartz expressions. Input: a byte choosing the time zone, four bytes of
//! offset choosing "now" (within 2024-2031, DST changes included), then the
//! expression. Invariants: an expression that parses is shown as written and
//! fires strictly after now, and again strictly after that; an expression that
//! does not names a field Quartz has.

#![no_main]

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use idm_fuzz::quartz::{FIELDS, QuartzCron};
use libfuzzer_sys::fuzz_target;

const ZONES: [Tz; 6] = [
    Tz::UTC,
    Tz::Europe__Paris,
    Tz::America__New_York,
    Tz::Australia__Lord_Howe,
    Tz::Pacific__Chatham,
    Tz::America__Santiago,
];

/// 2024-01-01T00:00:00Z, and eight years of seconds after it.
const BASE: i64 = 1_704_067_200;
const SPAN: u32 = 8 * 366 * 24 * 3600;

fn check<T: TimeZone>(cron: &QuartzCron, now: &DateTime<T>) {
    let Some(next) = cron.next_after(now) else {
        return;
    };
    assert!(next > *now, "{cron}: next {next:?} is not after {now:?}");
    if let Some(then) = cron.next_after(&next) {
        assert!(then > next, "{cron}: then {then:?} is not after {next:?}");
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 5 {
        return;
    }
    let Ok(expression) = std::str::from_utf8(&data[5..]) else {
        return;
    };
    let zone = ZONES[usize::from(data[0]) % ZONES.len()];
    let offset = u32::from_le_bytes([data[1], data[2], data[3], data[4]]) % SPAN;
    let Some(now) = Utc.timestamp_opt(BASE + i64::from(offset), 0).single() else {
        return;
    };
    match QuartzCron::parse(expression) {
        Ok(cron) => {
            assert_eq!(cron.to_string(), expression);
            check(&cron, &now.with_timezone(&zone));
            check(&cron, &now);
        }
        Err(e) => {
            assert!(e.field == "schedule" || FIELDS.contains(&e.field), "{e}");
            assert_eq!(e.expression, expression);
        }
    }
});
