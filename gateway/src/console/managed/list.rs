//! `/admin/managed/{type}`: the objects of a type, 50 a page, in columns
//! (the schema's searchable properties), with a search box (`sw` over the
//! columns, OR-ed) and a sort on any column.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use idm_proto::filter::{AttrPath, CompareOp, Filter, Value as FilterValue};
use idm_proto::v1::QueryObjectsRequest;
use idm_proto::v1::object_service_client::ObjectServiceClient;
use serde::Deserialize;

use super::object::attributes_of;
use super::{Prop, TypeSchema, schema_of, shown};
use crate::console::page::{thousands, url_part};
use crate::console::{Chrome, ConsoleError, ConsoleState, Nav, Viewer, console_call, render};

/// Objects on a page.
pub const PAGE_SIZE: i32 = 50;
/// The longest search text taken from the box.
const MAX_SEARCH: usize = 256;

#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    sort: String,
    #[serde(default)]
    page: Option<String>,
}

pub struct Column {
    pub title: String,
    /// The link that sorts by this column (ascending, or descending when
    /// it is sorted ascending already).
    pub sort_href: String,
    /// `ascending`, `descending` or `none` (for `aria-sort`).
    pub sorted: &'static str,
}

pub struct Row {
    pub href: String,
    /// The first cell's text (the id when that property is empty).
    pub label: String,
    pub cells: Vec<String>,
}

#[derive(Template)]
#[template(path = "console/managed/list.html")]
struct ListPage {
    chrome: Chrome,
    type_name: String,
    title: String,
    q: String,
    sort: String,
    columns: Vec<Column>,
    rows: Vec<Row>,
    /// `1–50 of 3,000`.
    range: String,
    previous: Option<String>,
    next: Option<String>,
}

/// Whether `name` is a plain property name (what a filter and an
/// `order_by` may name). Anything else is left out of the search and sort.
pub fn plain_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == '$')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '$' | '-'))
}

/// `col1 sw "text" or col2 sw "text"`: the search text is a string value
/// of the filter tree, printed (quoted and escaped) by the filter's own
/// printer, so no text typed in the box can change the filter's shape.
/// `None` for an empty search.
pub fn search_filter(columns: &[&str], text: &str) -> Option<String> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let text: String = text.chars().take(MAX_SEARCH).collect();
    let mut terms: Vec<Filter> = columns
        .iter()
        .filter(|c| plain_name(c))
        .map(|c| {
            Filter::Compare(
                AttrPath {
                    urn: None,
                    attr: (*c).to_string(),
                    sub_attr: None,
                },
                CompareOp::Sw,
                FilterValue::String(text.clone()),
            )
        })
        .collect();
    let filter = match terms.len() {
        0 => Filter::Compare(
            AttrPath {
                urn: None,
                attr: "_id".into(),
                sub_attr: None,
            },
            CompareOp::Sw,
            FilterValue::String(text),
        ),
        1 => terms.remove(0),
        _ => Filter::Or(terms),
    };
    Some(filter.to_string())
}

/// `?sort=col` or `?sort=-col` → `(col, descending)` when `col` is a column.
pub fn sort_key<'a>(sort: &'a str, columns: &[&str]) -> Option<(&'a str, bool)> {
    let (name, descending) = match sort.strip_prefix('-') {
        Some(name) => (name, true),
        None => (sort, false),
    };
    (columns.contains(&name) && plain_name(name)).then_some((name, descending))
}

/// `?page=` as a 1-based page number no larger than an `i32` offset allows.
fn page_number(page: Option<&str>) -> Result<i32, ConsoleError> {
    let last = i32::MAX / PAGE_SIZE;
    match page.map(str::trim).filter(|p| !p.is_empty()) {
        None => Ok(1),
        Some(text) => match text.parse::<i32>() {
            Ok(n) if (1..=last).contains(&n) => Ok(n),
            _ => Err(ConsoleError::BadRequest(format!(
                "page={text}: give a page number from 1 to {last}"
            ))),
        },
    }
}

/// This list's URL with its search and sort, on page `page`.
fn list_href(type_name: &str, q: &str, sort: &str, page: i32) -> String {
    let mut query = Vec::new();
    if !q.is_empty() {
        query.push(format!("q={}", url_part(q)));
    }
    if !sort.is_empty() {
        query.push(format!("sort={}", url_part(sort)));
    }
    if page > 1 {
        query.push(format!("page={page}"));
    }
    let base = format!("/admin/managed/{}", url_part(type_name));
    if query.is_empty() {
        base
    } else {
        format!("{base}?{}", query.join("&"))
    }
}

/// `1–50 of 3,000` (`of about 17,501` when the core estimated the total);
/// `none` for an empty list.
fn range_text(offset: i64, shown: usize, total: i64, estimated: bool) -> String {
    if shown == 0 {
        return if total > 0 {
            format!("nothing here; {} in all", thousands(total))
        } else {
            "none".into()
        };
    }
    let last = offset + i64::try_from(shown).unwrap_or(0);
    format!(
        "{}–{} of {}{}",
        thousands(offset + 1),
        thousands(last),
        if estimated { "about " } else { "" },
        thousands(total)
    )
}

pub async fn show(
    State(state): State<ConsoleState>,
    Path(type_name): Path<String>,
    Query(query): Query<ListQuery>,
    viewer: Viewer,
) -> Result<Response, ConsoleError> {
    let schema = schema_of(&state, &viewer, &type_name).await?;
    let columns: Vec<&Prop> = schema.columns();
    let names: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
    let page = page_number(query.page.as_deref())?;
    let q = query.q.trim().to_string();
    // By the first column unless asked otherwise: people look for a name,
    // and an ordered page reads the sort keys instead of the whole type.
    let asked = sort_key(&query.sort, &names);
    let sorted = asked.or_else(|| names.first().map(|first| (*first, false)));
    // Links keep only the order asked for: the default needs no parameter.
    let sort = match asked {
        Some((name, true)) => format!("-{name}"),
        Some((name, false)) => name.to_string(),
        None => String::new(),
    };
    let offset = (page - 1) * PAGE_SIZE;
    let reply = console_call!(
        &state,
        &viewer,
        ObjectServiceClient.query_objects(QueryObjectsRequest {
            parent: format!("managed/{}", schema.name),
            filter: search_filter(&names, &q).unwrap_or_default(),
            order_by: sorted
                .map(|(name, descending)| {
                    format!("{name} {}", if descending { "desc" } else { "asc" })
                })
                .unwrap_or_default(),
            page_size: PAGE_SIZE,
            page_token: String::new(),
            offset,
            read_mask: None,
            // A broad search need not count every match to show a page:
            // an upper bound, said as "about".
            estimate_total: true,
        })
    )
    .await?;
    let rows = rows_of(&schema, &columns, &reply.objects);
    let total = reply.total_size;
    let estimated = reply.total_size_estimated;
    let shown_to = i64::from(offset) + i64::try_from(rows.len()).unwrap_or(0);
    let columns = columns
        .iter()
        .map(|c| {
            let (next_sort, sorted_now) = match sorted {
                Some((name, false)) if name == c.name => (format!("-{name}"), "ascending"),
                Some((name, true)) if name == c.name => (name.to_string(), "descending"),
                _ => (c.name.clone(), "none"),
            };
            Column {
                title: c.title.clone(),
                sort_href: list_href(&schema.name, &q, &next_sort, 1),
                sorted: sorted_now,
            }
        })
        .collect();
    let chrome = Chrome::new(
        &state,
        &viewer,
        Nav::Managed(schema.name.clone()),
        &schema.title,
    )
    .await;
    Ok(render(&ListPage {
        chrome,
        range: range_text(i64::from(offset), rows.len(), total, estimated),
        previous: (page > 1).then(|| list_href(&schema.name, &q, &sort, page - 1)),
        // An estimate is an upper bound: a short page is the last one.
        next: (shown_to < total && rows.len() >= usize::try_from(PAGE_SIZE).unwrap_or(50))
            .then(|| list_href(&schema.name, &q, &sort, page + 1)),
        type_name: schema.name.clone(),
        title: schema.title.clone(),
        q,
        sort,
        columns,
        rows,
    }))
}

fn rows_of(
    schema: &TypeSchema,
    columns: &[&Prop],
    objects: &[idm_proto::v1::ManagedObject],
) -> Vec<Row> {
    objects
        .iter()
        .map(|object| {
            let attributes = attributes_of(object);
            let mut cells: Vec<String> = columns
                .iter()
                .map(|c| attributes.get(&c.name).map(shown).unwrap_or_default())
                .collect();
            let first = if cells.is_empty() {
                String::new()
            } else {
                cells.remove(0)
            };
            Row {
                href: format!(
                    "/admin/managed/{}/{}",
                    url_part(&schema.name),
                    url_part(&object.id)
                ),
                label: if first.is_empty() {
                    object.id.clone()
                } else {
                    first
                },
                cells,
            }
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_search_text_is_a_value_whatever_it_holds() {
        assert_eq!(
            search_filter(&["userName", "sn"], "snow").unwrap(),
            r#"userName sw "snow" or sn sw "snow""#
        );
        assert_eq!(search_filter(&["sn"], "  ").as_deref(), None);
        for hostile in [
            r#"x" or true or sn eq ""#,
            r#"\" pr) or (sn pr"#,
            "a\"\\\n\t\u{1}]",
            ") or _id pr or (",
        ] {
            let printed = search_filter(&["userName", "sn"], hostile).unwrap();
            let parsed = idm_proto::filter::parse(&printed).unwrap();
            let Filter::Or(terms) = parsed else {
                panic!("{printed} is not an or of two terms");
            };
            assert_eq!(terms.len(), 2, "{printed}");
            for term in terms {
                let Filter::Compare(_, CompareOp::Sw, FilterValue::String(value)) = term else {
                    panic!("{printed}: not a sw comparison");
                };
                assert_eq!(value, hostile.trim());
            }
        }
        // A name that is not plain is never spliced in.
        assert_eq!(
            search_filter(&["ok", "bad name) or (x"], "a").unwrap(),
            r#"ok sw "a""#
        );
    }

    #[test]
    fn sorting_takes_only_a_column() {
        let columns = ["userName", "sn"];
        assert_eq!(sort_key("sn", &columns), Some(("sn", false)));
        assert_eq!(sort_key("-userName", &columns), Some(("userName", true)));
        assert_eq!(sort_key("password", &columns), None);
        assert_eq!(sort_key("--sn", &columns), None);
        assert_eq!(sort_key("", &columns), None);
    }

    #[test]
    fn pages_and_ranges() {
        assert_eq!(page_number(None).unwrap(), 1);
        assert_eq!(page_number(Some("3")).unwrap(), 3);
        assert!(page_number(Some("0")).is_err());
        assert!(page_number(Some("99999999999")).is_err());
        assert!(page_number(Some("x")).is_err());
        assert_eq!(range_text(0, 50, 3000, false), "1–50 of 3,000");
        assert_eq!(range_text(0, 50, 17501, true), "1–50 of about 17,501");
        assert_eq!(range_text(2950, 50, 3000, false), "2,951–3,000 of 3,000");
        assert_eq!(range_text(0, 0, 0, false), "none");
        assert_eq!(
            list_href("user", "a&b", "-sn", 2),
            "/admin/managed/user?q=a%26b&sort=-sn&page=2"
        );
        assert_eq!(list_href("user", "", "", 1), "/admin/managed/user");
    }
}
