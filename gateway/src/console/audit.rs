//! The audit trail (`/admin/audit?object=&actor=&operation=&from=&to=`):
//! newest first, 50 a page, filtered by what the form says. The form's
//! values become a filter tree ([`audit_filter`]) printed by the filter
//! grammar itself, every value a JSON string: no text typed into the form
//! can change the filter's shape.
//!
//! Over `AuditService.QueryAudit` only.

use askama::Template;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use idm_proto::filter::{AttrPath, CompareOp, Filter, Value};
use idm_proto::v1::QueryAuditRequest;
use idm_proto::v1::audit_service_client::AuditServiceClient;
use serde::Deserialize;

use super::page::{thousands, timestamp, url_part};
use super::{Chrome, ConsoleError, ConsoleState, Nav, Viewer, console_call, render};

const PAGE_SIZE: i32 = 50;
/// The longest value read from one field of the form.
const MAX_FIELD: usize = 512;

/// The operations the core records, offered as suggestions.
const OPERATIONS: &[&str] = &[
    "create",
    "replace",
    "patch",
    "delete",
    "password.verify",
    "auth.login",
    "auth.logout",
    "account.",
    "account.create",
    "account.set-password",
    "account.set-role",
    "account.enable",
    "account.disable",
    "account.delete",
    "token.",
    "token.create",
    "token.revoke",
    "connector.put",
    "connector.delete",
    "mapping.put",
    "mapping.delete",
    "schedule.",
    "recon.start",
    "recon.cancel",
    "sync.retry",
    "sync.discard",
    "key.rotate",
];

pub fn routes() -> Router<ConsoleState> {
    Router::new().route("/audit", get(show))
}

/// The form's fields, as the query string carries them.
#[derive(Debug, Default, Clone, Deserialize)]
pub struct AuditQuery {
    #[serde(default)]
    pub object: String,
    #[serde(default)]
    pub actor: String,
    #[serde(default)]
    pub operation: String,
    #[serde(default)]
    pub from: String,
    #[serde(default)]
    pub to: String,
    /// The core's page token.
    #[serde(default)]
    pub page: String,
}

/// A field the form must show a message beside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldProblem {
    pub field: &'static str,
    pub message: String,
}

/// The core's filter for the form: `object` and `operation` match exactly,
/// or as a prefix when they end in `/` or `.` (`managed/user/`,
/// `account.`); `actor` exactly; `time` from `from` (inclusive) to before
/// `to`. Empty fields are left out; no field at all is the empty filter.
pub fn audit_filter(query: &AuditQuery) -> Result<String, Vec<FieldProblem>> {
    let mut terms = Vec::new();
    let mut problems = Vec::new();
    let mut text = |field: &'static str, value: &str, prefix_end: Option<char>| {
        let value = value.trim();
        if value.is_empty() {
            return;
        }
        if value.chars().count() > MAX_FIELD {
            problems.push(FieldProblem {
                field,
                message: format!("at most {MAX_FIELD} characters"),
            });
            return;
        }
        let op = match prefix_end {
            Some(end) if value.ends_with(end) => CompareOp::Sw,
            _ => CompareOp::Eq,
        };
        terms.push(compare(field, op, value.to_string()));
    };
    text("object", &query.object, Some('/'));
    text("actor", &query.actor, None);
    text("operation", &query.operation, Some('.'));
    for (field, given, op) in [
        ("from", &query.from, CompareOp::Ge),
        ("to", &query.to, CompareOp::Lt),
    ] {
        let given = given.trim();
        if given.is_empty() {
            continue;
        }
        match store_time(given) {
            Some(at) => terms.push(compare("time", op, at)),
            None => problems.push(FieldProblem {
                field,
                message: "a date and time such as 2026-12-01T18:30 (UTC)".into(),
            }),
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(match terms.len() {
        0 => String::new(),
        1 => terms.remove(0).to_string(),
        _ => Filter::And(terms).to_string(),
    })
}

fn compare(attr: &str, op: CompareOp, value: String) -> Filter {
    Filter::Compare(
        AttrPath {
            urn: None,
            attr: attr.to_string(),
            sub_attr: None,
        },
        op,
        Value::String(value),
    )
}

/// A time typed in the form (`2026-12-01`, `2026-12-01T18:30`, with
/// seconds, a fraction, a `Z`; a space for the `T`), read as UTC, in the
/// store's fixed-width form (`2026-12-01T18:30:00.000000Z`), which
/// compares as text.
pub fn store_time(given: &str) -> Option<String> {
    let given = given.strip_suffix('Z').unwrap_or(given);
    let (date, clock) = match given.split_once(['T', ' ']) {
        Some((date, clock)) => (date, clock),
        None => (given, "00:00"),
    };
    let mut ymd = date.splitn(3, '-');
    let year: i32 = digits(ymd.next()?, 4)?;
    let month: u8 = digits(ymd.next()?, 2)?;
    let day: u8 = digits(ymd.next()?, 2)?;
    let date =
        time::Date::from_calendar_date(year, time::Month::try_from(month).ok()?, day).ok()?;
    let (clock, fraction) = match clock.split_once('.') {
        Some((clock, fraction)) => (clock, fraction),
        None => (clock, ""),
    };
    let mut hms = clock.split(':');
    let hour: u8 = digits(hms.next()?, 2)?;
    let minute: u8 = digits(hms.next()?, 2)?;
    let second: u8 = match hms.next() {
        Some(s) => digits(s, 2)?,
        None => 0,
    };
    if hms.next().is_some() {
        return None;
    }
    if fraction.len() > 9 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let micro: u32 = format!("{fraction:0<6}")[..6].parse().ok()?;
    let clock = time::Time::from_hms_micro(hour, minute, second, micro).ok()?;
    let at = time::PrimitiveDateTime::new(date, clock);
    Some(format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second(),
        at.microsecond()
    ))
}

/// Exactly `width` ASCII digits as a number.
fn digits<T: std::str::FromStr>(text: &str, width: usize) -> Option<T> {
    (text.len() == width && text.bytes().all(|b| b.is_ascii_digit()))
        .then(|| text.parse().ok())
        .flatten()
}

/// The console page of what an audit entry or a sync entry names, when it
/// has one: a managed object, a mapping, a schedule, a reconciliation run.
pub fn object_link(object: &str) -> Option<String> {
    let mut parts = object.splitn(3, '/');
    match (parts.next()?, parts.next(), parts.next()) {
        ("managed", Some(kind), Some(id)) if !kind.is_empty() && !id.is_empty() => Some(format!(
            "/admin/managed/{}/{}",
            url_part(kind),
            url_part(id)
        )),
        ("mappings", Some(name), None) if !name.is_empty() => {
            Some(format!("/admin/mappings/{}", url_part(name)))
        }
        ("schedules", Some(name), None) if !name.is_empty() => {
            Some(format!("/admin/schedules/{}", url_part(name)))
        }
        ("recon", Some(id), None) if !id.is_empty() => {
            Some(format!("/admin/runs/{}", url_part(id)))
        }
        _ => None,
    }
}

pub struct EntryRow {
    pub time: String,
    pub actor: String,
    pub operation: String,
    pub object: String,
    pub object_href: Option<String>,
    pub outcome: String,
    /// `success`, `failed`: the badge's class.
    pub outcome_class: &'static str,
    /// `2 → 3`; empty for an admin action.
    pub revisions: String,
    pub changed: String,
    pub detail: String,
    /// The X-Request-Id of the call that caused it; empty for background work.
    pub request_id: String,
}

#[derive(Template)]
#[template(path = "console/audit/trail.html")]
struct TrailPage {
    chrome: Chrome,
    query: AuditQuery,
    problems: Vec<FieldProblem>,
    /// The core refused the query (a page token of another filter).
    problem: Option<String>,
    entries: Vec<EntryRow>,
    total: String,
    next_page: Option<String>,
    operations: &'static [&'static str],
}

impl TrailPage {
    /// The problem of `field`, if it has one.
    fn problem_of(&self, field: &str) -> Option<&str> {
        self.problems
            .iter()
            .find(|p| p.field == field)
            .map(|p| p.message.as_str())
    }

    /// This filter's page `page` (empty: the first).
    fn href(&self, page: &str) -> String {
        let q = &self.query;
        let mut parts = Vec::new();
        for (name, value) in [
            ("object", &q.object),
            ("actor", &q.actor),
            ("operation", &q.operation),
            ("from", &q.from),
            ("to", &q.to),
        ] {
            if !value.is_empty() {
                parts.push(format!("{name}={}", url_part(value)));
            }
        }
        if !page.is_empty() {
            parts.push(format!("page={}", url_part(page)));
        }
        if parts.is_empty() {
            "/admin/audit".into()
        } else {
            format!("/admin/audit?{}", parts.join("&"))
        }
    }
}

pub async fn show(
    State(state): State<ConsoleState>,
    viewer: Viewer,
    Query(query): Query<AuditQuery>,
) -> Result<Response, ConsoleError> {
    let chrome = Chrome::new(&state, &viewer, Nav::Audit, "Audit").await;
    let mut page = TrailPage {
        chrome,
        query,
        problems: Vec::new(),
        problem: None,
        entries: Vec::new(),
        total: String::new(),
        next_page: None,
        operations: OPERATIONS,
    };
    let filter = match audit_filter(&page.query) {
        Ok(filter) => filter,
        Err(problems) => {
            page.problems = problems;
            return Ok(with_status(render(&page), StatusCode::BAD_REQUEST));
        }
    };
    let reply = console_call!(
        &state,
        &viewer,
        AuditServiceClient.query_audit(QueryAuditRequest {
            filter,
            order_by: String::new(),
            page_size: PAGE_SIZE,
            page_token: page.query.page.clone(),
        })
    )
    .await;
    let reply = match reply {
        Ok(reply) => reply,
        Err(ConsoleError::Invalid { message, .. }) => {
            page.problem = Some(message);
            return Ok(with_status(render(&page), StatusCode::BAD_REQUEST));
        }
        Err(other) => return Err(other),
    };
    page.total = thousands(reply.total_size);
    page.next_page = Some(reply.next_page_token).filter(|t| !t.is_empty());
    page.entries = reply
        .entries
        .into_iter()
        .map(|e| EntryRow {
            time: timestamp(e.time.as_ref()),
            object_href: object_link(&e.object),
            outcome_class: match e.outcome.as_str() {
                "success" | "valid" => "success",
                _ => "failed",
            },
            revisions: if e.revision_before == 0 && e.revision_after == 0 {
                String::new()
            } else {
                format!("{} → {}", e.revision_before, e.revision_after)
            },
            changed: e.changed_properties.join(", "),
            actor: e.actor,
            operation: e.operation,
            object: e.object,
            outcome: e.outcome,
            detail: e.detail,
            request_id: e.request_id,
        })
        .collect();
    Ok(render(&page))
}

fn with_status(mut response: Response, status: StatusCode) -> Response {
    *response.status_mut() = status;
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(fields: &[(&str, &str)]) -> AuditQuery {
        let mut q = AuditQuery::default();
        for (name, value) in fields {
            let value = value.to_string();
            match *name {
                "object" => q.object = value,
                "actor" => q.actor = value,
                "operation" => q.operation = value,
                "from" => q.from = value,
                "to" => q.to = value,
                _ => unreachable!(),
            }
        }
        q
    }

    #[test]
    fn the_form_becomes_a_filter_of_quoted_values() {
        assert_eq!(audit_filter(&query(&[])).unwrap(), "");
        assert_eq!(
            audit_filter(&query(&[("actor", " bob ")])).unwrap(),
            r#"actor eq "bob""#
        );
        assert_eq!(
            audit_filter(&query(&[
                ("object", "managed/user/"),
                ("operation", "account."),
                ("from", "2026-12-01T18:30"),
                ("to", "2026-12-02"),
            ]))
            .unwrap(),
            r#"object sw "managed/user/" and operation sw "account." and time ge "2026-12-01T18:30:00.000000Z" and time lt "2026-12-02T00:00:00.000000Z""#
        );
    }

    #[test]
    fn no_value_can_change_the_filters_shape() {
        for hostile in [
            r#"x" or actor pr or actor eq "y"#,
            r#"\" or true"#,
            "a\"]) or (b",
            "line\nbreak\u{0}nul",
            r#"managed/user/1" or object sw ""#,
        ] {
            let filter = audit_filter(&query(&[("object", hostile), ("actor", hostile)])).unwrap();
            let parsed = idm_proto::filter::parse(&filter).unwrap();
            let Filter::And(terms) = &parsed else {
                panic!("{filter} is not one and: {parsed:?}")
            };
            assert_eq!(terms.len(), 2, "{filter}");
            for term in terms {
                let Filter::Compare(path, _, Value::String(value)) = term else {
                    panic!("{term:?}")
                };
                assert!(path.attr == "object" || path.attr == "actor");
                assert_eq!(value, hostile.trim());
            }
        }
    }

    #[test]
    fn times_are_read_as_utc_in_the_stores_form() {
        assert_eq!(
            store_time("2026-12-01").as_deref(),
            Some("2026-12-01T00:00:00.000000Z")
        );
        assert_eq!(
            store_time("2026-12-01 18:30:05.25Z").as_deref(),
            Some("2026-12-01T18:30:05.250000Z")
        );
        for bad in [
            "yesterday",
            "2026-13-01",
            "2026-02-30",
            "2026-12-01T25:00",
            "2026-12-1",
            "2026-12-01T18",
            "2026-12-01T18:30:00:00",
            "2026-12-01T18:30\" or true",
        ] {
            assert_eq!(store_time(bad), None, "{bad}");
        }
        let problems = audit_filter(&query(&[("from", "soon"), ("to", "later")])).unwrap_err();
        let fields: Vec<_> = problems.iter().map(|p| p.field).collect();
        assert_eq!(fields, ["from", "to"]);
    }

    #[test]
    fn objects_link_to_their_pages() {
        assert_eq!(
            object_link("managed/user/a b").as_deref(),
            Some("/admin/managed/user/a%20b")
        );
        assert_eq!(
            object_link("mappings/toLdap").as_deref(),
            Some("/admin/mappings/toLdap")
        );
        assert_eq!(object_link("recon/r1").as_deref(), Some("/admin/runs/r1"));
        assert_eq!(object_link("tokens/abc"), None);
        assert_eq!(object_link("managed/user"), None);
        assert_eq!(object_link("internal/user/alice"), None);
    }
}
