//! What every page shares: [`Chrome`] (the layout's header, menu and
//! form token) and [`render`].

use std::time::Instant;

use askama::Template;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use idm_proto::v1::ListObjectTypesRequest;
use idm_proto::v1::object_service_client::ObjectServiceClient;

use super::session::Viewer;
use super::{ConsoleState, TYPES_TTL};

/// The menu entry a page belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Nav {
    Dashboard,
    /// A managed type: `user`, `group`, …
    Managed(String),
    Mappings,
    Schedules,
    Sync,
    Audit,
    Accounts,
    None,
}

/// A managed type in the menu.
#[derive(Debug, Clone)]
pub struct TypeLink {
    /// `user`.
    pub name: String,
    /// `User`: `managed.json`'s `schema.title`, else the name capitalised.
    pub title: String,
}

/// What the layout needs: who is signed in, what they may do, the form
/// token, the menu, and whether to render the main block alone.
pub struct Chrome {
    pub title: String,
    pub username: String,
    pub can_change: bool,
    pub csrf: String,
    pub nav: Nav,
    pub types: Vec<TypeLink>,
    pub fragment: bool,
}

impl Chrome {
    pub async fn new(state: &ConsoleState, viewer: &Viewer, nav: Nav, title: &str) -> Chrome {
        Chrome {
            title: title.to_string(),
            username: viewer.username.clone(),
            can_change: viewer.can_change(),
            csrf: viewer.csrf.clone(),
            nav,
            types: managed_types(state, viewer).await,
            fragment: viewer.fragment,
        }
    }

    /// `aria-current="page"` for the menu entry of this page.
    pub fn current(&self, entry: &str) -> &'static str {
        let is = match &self.nav {
            Nav::Dashboard => entry == "dashboard",
            Nav::Managed(name) => entry.strip_prefix("managed/") == Some(name.as_str()),
            Nav::Mappings => entry == "mappings",
            Nav::Schedules => entry == "schedules",
            Nav::Sync => entry == "sync",
            Nav::Audit => entry == "audit",
            Nav::Accounts => entry == "accounts",
            Nav::None => false,
        };
        if is { "page" } else { "false" }
    }
}

/// The managed types, cached for [`TYPES_TTL`]; empty when the core cannot
/// say (the menu then lacks them, the page still renders).
async fn managed_types(state: &ConsoleState, viewer: &Viewer) -> Vec<TypeLink> {
    if let Ok(cached) = state.types.lock()
        && let Some((at, types)) = cached.as_ref()
        && at.elapsed() < TYPES_TTL
    {
        return types.clone();
    }
    let call = super::console_call!(
        state,
        viewer,
        ObjectServiceClient.list_object_types(ListObjectTypesRequest {})
    );
    let Ok(reply) = call.await else {
        return Vec::new();
    };
    let types: Vec<TypeLink> = reply
        .types
        .iter()
        .map(|t| {
            let name = t
                .name
                .strip_prefix("managed/")
                .unwrap_or(&t.name)
                .to_string();
            let title = t
                .schema
                .as_ref()
                .and_then(|s| s.fields.get("schema"))
                .and_then(|v| match &v.kind {
                    Some(prost_types::value::Kind::StructValue(schema)) => {
                        schema.fields.get("title")
                    }
                    _ => None,
                })
                .and_then(|v| match &v.kind {
                    Some(prost_types::value::Kind::StringValue(title)) if !title.is_empty() => {
                        Some(title.clone())
                    }
                    _ => None,
                })
                .unwrap_or_else(|| capitalised(&name));
            TypeLink { name, title }
        })
        .collect();
    if let Ok(mut cached) = state.types.lock() {
        *cached = Some((Instant::now(), types.clone()));
    }
    types
}

fn capitalised(name: &str) -> String {
    let mut chars = name.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// A rendered page (`text/html`), or the error page if it did not render.
pub fn render(page: &impl Template) -> Response {
    match page.render() {
        Ok(html) => {
            let mut response = (StatusCode::OK, html).into_response();
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            );
            headers.insert(
                header::VARY,
                HeaderValue::from_static("HX-Request, HX-Target"),
            );
            response
        }
        Err(e) => {
            tracing::error!(error = %e, "a console page did not render");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "The page did not render; see idm-gateway's log.",
            )
                .into_response()
        }
    }
}

/// `text` as one URL path segment or query value (an object id, a
/// filter typed in a search box): in a template,
/// `href="/admin/managed/user/{{ crate::console::page::url_part(id) }}"`.
pub fn url_part(text: &str) -> String {
    const KEEP: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(text, KEEP).to_string()
}

/// A count with thousands separators, `12,345`: in a template,
/// `{{ crate::console::page::thousands(count) }}`.
pub fn thousands(value: i64) -> String {
    let digits = value.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    if value < 0 { format!("-{out}") } else { out }
}

/// A moment as people read it: `2026-12-01 18:42:05 UTC`; `—` when unset.
pub fn timestamp(at: Option<&prost_types::Timestamp>) -> String {
    at.and_then(|at| time::OffsetDateTime::from_unix_timestamp(at.seconds).ok())
        .map(|at| {
            format!(
                "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
                at.year(),
                u8::from(at.month()),
                at.day(),
                at.hour(),
                at.minute(),
                at.second()
            )
        })
        .unwrap_or_else(|| "—".into())
}

/// How long ago a moment was: `just now`, `42 s ago`, `5 min ago`,
/// `3 h ago`, `2 days ago`; `—` when unset.
pub fn ago(at: Option<&prost_types::Timestamp>) -> String {
    let Some(at) = at else {
        return "—".into();
    };
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let seconds = now.saturating_sub(at.seconds);
    if seconds < 0 {
        return format!("in {}", span(seconds.unsigned_abs()));
    }
    if seconds < 2 {
        return "just now".into();
    }
    format!("{} ago", span(seconds.unsigned_abs()))
}

/// A length of time in words: `850 ms`, `42 s`, `5 min 3 s`, `3 h 12 min`.
pub fn duration(length: Option<&prost_types::Duration>) -> String {
    let Some(length) = length else {
        return "—".into();
    };
    if length.seconds < 1 {
        return format!("{} ms", length.nanos.max(0) / 1_000_000);
    }
    span(length.seconds.unsigned_abs())
}

fn span(seconds: u64) -> String {
    match seconds {
        0..60 => format!("{seconds} s"),
        60..3600 => match seconds % 60 {
            0 => format!("{} min", seconds / 60),
            s => format!("{} min {s} s", seconds / 60),
        },
        3600..86400 => format!("{} h {} min", seconds / 3600, seconds % 3600 / 60),
        _ => match seconds / 86400 {
            1 => "1 day".into(),
            days => format!("{days} days"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_are_separated() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(-1234567), "-1,234,567");
    }

    #[test]
    fn times_read_as_words() {
        let at = prost_types::Timestamp {
            seconds: 1_764_614_525,
            nanos: 0,
        };
        assert_eq!(timestamp(Some(&at)), "2025-12-01 18:42:05 UTC");
        assert_eq!(timestamp(None), "—");
        let d = |seconds, nanos| prost_types::Duration { seconds, nanos };
        assert_eq!(duration(Some(&d(0, 850_000_000))), "850 ms");
        assert_eq!(duration(Some(&d(42, 0))), "42 s");
        assert_eq!(duration(Some(&d(303, 0))), "5 min 3 s");
        assert_eq!(duration(Some(&d(11_520, 0))), "3 h 12 min");
        assert_eq!(duration(Some(&d(2 * 86_400 + 5, 0))), "2 days");
    }
}
