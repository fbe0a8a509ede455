//! How the mappings, runs and schedules pages write times, durations,
//! counts and values: small pure functions, so a template only prints strings.

use std::collections::HashMap;

use idm_proto::v1::ReconRun;
use idm_proto::v1::recon_run::State as RunState;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::console::page;

/// Situations in the order of the design's table (most common first), so
/// every page lists them alike; unknown names follow, sorted.
const SITUATION_ORDER: [&str; 15] = [
    "CONFIRMED",
    "FOUND",
    "FOUND_ALREADY_LINKED",
    "ABSENT",
    "AMBIGUOUS",
    "MISSING",
    "UNQUALIFIED",
    "SOURCE_IGNORED",
    "TARGET_IGNORED",
    "UNASSIGNED",
    "SOURCE_MISSING",
    "LINK_ONLY",
    "ALL_GONE",
    "TARGET_CHANGED",
    "SOURCE_TARGET_CONFLICT",
];
const ACTION_ORDER: [&str; 10] = [
    "CREATE",
    "UPDATE",
    "DELETE",
    "LINK",
    "UNLINK",
    "EXCEPTION",
    "IGNORE",
    "REPORT",
    "NOREPORT",
    "ASYNC",
];

/// A moment as people read it (`2026-12-01 18:51:03 UTC`, `5 min ago`)
/// and as a machine does (RFC 3339, for `<time datetime>`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct When {
    pub text: String,
    pub ago: String,
    pub iso: String,
}

impl When {
    pub fn of(timestamp: Option<&prost_types::Timestamp>) -> Option<When> {
        let at = timestamp?;
        let nanos = i128::from(at.seconds) * 1_000_000_000 + i128::from(at.nanos);
        let iso = OffsetDateTime::from_unix_timestamp_nanos(nanos)
            .ok()?
            .format(&Rfc3339)
            .ok()?;
        Some(When {
            text: page::timestamp(Some(at)),
            ago: page::ago(Some(at)),
            iso,
        })
    }
}

/// `850 ms`, `42 s`, `5 min 3 s` (the console's words); empty for none.
pub fn duration(d: Option<&prost_types::Duration>) -> String {
    match d {
        Some(d) if d.seconds >= 0 && d.nanos >= 0 => page::duration(Some(d)),
        _ => String::new(),
    }
}

/// One named count.
#[derive(Debug, Clone, PartialEq)]
pub struct Count {
    pub name: String,
    pub count: i64,
    /// `count` with thousands separators.
    pub text: String,
}

fn ordered(counts: &HashMap<String, i64>, order: &[&str], zeros: bool) -> Vec<Count> {
    let mut known: Vec<Count> = order
        .iter()
        .filter_map(|name| {
            let count = counts.get(*name).copied().unwrap_or(0);
            (zeros || count != 0).then(|| Count {
                name: (*name).to_string(),
                count,
                text: page::thousands(count),
            })
        })
        .collect();
    let mut other: Vec<Count> = counts
        .iter()
        .filter(|(name, count)| !order.contains(&name.as_str()) && (zeros || **count != 0))
        .map(|(name, count)| Count {
            name: name.clone(),
            count: *count,
            text: page::thousands(*count),
        })
        .collect();
    other.sort_by(|a, b| a.name.cmp(&b.name));
    known.extend(other);
    known
}

/// The situations met (count above 0), in the table's order.
pub fn situations(counts: &HashMap<String, i64>) -> Vec<Count> {
    ordered(counts, &SITUATION_ORDER, false)
}

/// The actions taken (count above 0), in the table's order.
pub fn actions(counts: &HashMap<String, i64>) -> Vec<Count> {
    ordered(counts, &ACTION_ORDER, false)
}

/// `ABSENT 3 · CONFIRMED 2`, or `none`.
pub fn inline(counts: &[Count]) -> String {
    if counts.is_empty() {
        return "none".into();
    }
    counts
        .iter()
        .map(|c| format!("{} {}", c.name, c.text))
        .collect::<Vec<_>>()
        .join(" · ")
}

/// A run's state as a word (`ACTIVE`, `SUCCESS`, …).
pub fn run_state(run: &ReconRun) -> &'static str {
    match run.state() {
        RunState::Unspecified => "UNKNOWN",
        RunState::Pending => "PENDING",
        RunState::Active => "ACTIVE",
        RunState::Success => "SUCCESS",
        RunState::Failed => "FAILED",
        RunState::Canceled => "CANCELED",
    }
}

/// Still going: the page polls and offers Cancel.
pub fn run_active(run: &ReconRun) -> bool {
    matches!(run.state(), RunState::Pending | RunState::Active)
}

/// The id in `recon/<id>`, for `/admin/runs/<id>`.
pub fn run_id(name: &str) -> &str {
    name.strip_prefix("recon/").unwrap_or(name)
}

/// A name as one path segment of a link (`/admin/mappings/{segment}`).
pub fn segment(name: &str) -> String {
    page::url_part(name)
}

/// A property value as compact JSON (`"Snow"`, `["a","b"]`); empty for
/// no value (absent or null).
pub fn value(v: Option<&prost_types::Value>) -> String {
    match v.map(idm_proto::json::from_proto_value) {
        None | Some(serde_json::Value::Null) => String::new(),
        Some(serde_json::Value::String(s)) => s,
        Some(other) => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_times() {
        let d = |seconds, nanos| duration(Some(&prost_types::Duration { seconds, nanos }));
        assert_eq!(d(0, 850_000_000), "850 ms");
        assert_eq!(d(184, 0), "3 min 4 s");
        assert_eq!(d(-1, 0), "");
        assert_eq!(duration(None), "");
        let when = When::of(Some(&prost_types::Timestamp {
            seconds: 1_795_000_000,
            nanos: 5,
        }))
        .unwrap();
        assert_eq!(when.text, "2026-11-18 11:06:40 UTC");
        assert_eq!(when.iso, "2026-11-18T11:06:40.000000005Z");
        assert_eq!(When::of(None), None);
    }

    #[test]
    fn counts_in_the_tables_order_zeros_left_out() {
        let counts: HashMap<String, i64> = [
            ("ABSENT", 3),
            ("CONFIRMED", 2000),
            ("MISSING", 0),
            ("NEW", 1),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        assert_eq!(
            inline(&situations(&counts)),
            "CONFIRMED 2,000 · ABSENT 3 · NEW 1"
        );
        assert_eq!(inline(&actions(&HashMap::new())), "none");
    }

    #[test]
    fn names_in_links_are_one_segment() {
        assert_eq!(
            segment("csvEmployee_managedUser"),
            "csvEmployee_managedUser"
        );
        assert_eq!(segment("a b/c?d#e"), "a%20b%2Fc%3Fd%23e");
    }

    #[test]
    fn values_as_compact_text() {
        let v = |j: serde_json::Value| value(Some(&idm_proto::json::to_proto_value(&j)));
        assert_eq!(v(serde_json::json!("Snow")), "Snow");
        assert_eq!(v(serde_json::json!(["a", 1])), r#"["a",1]"#);
        assert_eq!(v(serde_json::Value::Null), "");
        assert_eq!(value(None), "");
    }
}
