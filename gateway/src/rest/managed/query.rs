//! A query's parameters (`_queryFilter`, `_queryId`, `_fields`, `_pageSize`,
//! `_pagedResultsOffset`, `_pagedResultsCookie`, `_sortKeys`,
//! `_totalPagedResultsPolicy`) checked and turned into the core's terms; and
//! Wren's query reply.

use serde_json::{Value, json};

use crate::rest::query_filter::{self, Selection, is_name};
use crate::rest::{Params, RestError};

/// The most sort keys and fields accepted.
const MAX_SORT_KEYS: usize = 8;
const MAX_FIELDS: usize = 64;
/// The longest `_pagedResultsCookie` passed to the core.
const MAX_COOKIE: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CountPolicy {
    None,
    Exact,
    Estimate,
}

impl CountPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            CountPolicy::None => "NONE",
            CountPolicy::Exact => "EXACT",
            CountPolicy::Estimate => "ESTIMATE",
        }
    }
}

/// A query, in the core's terms.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    pub selection: Selection,
    /// Field names for the core's read mask; empty: every field.
    pub fields: Vec<String>,
    /// The core's `order_by` (`sn desc, givenName asc`).
    pub order_by: String,
    /// `None`: unpaged (every match, up to the gateway's cap).
    pub page_size: Option<u32>,
    pub offset: u32,
    pub cookie: String,
    pub count_policy: CountPolicy,
}

impl Query {
    /// Reads a query from the parameters; `max_page_size` clamps
    /// `_pageSize`.
    pub fn from_params(params: &Params, max_page_size: u64) -> Result<Query, RestError> {
        let bad = |e: String| RestError::bad_request(e);
        let (selection, mut fields) = match (params.get("_queryFilter"), params.get("_queryId")) {
            (Some(filter), None) => (
                query_filter::parse(filter).map_err(|e| bad(e.to_string()))?,
                fields(params.get("_fields"))?,
            ),
            (None, Some("query-all-ids")) => (Selection::All, vec!["_id".to_string()]),
            (None, Some(other)) => {
                return Err(bad(format!(
                    "_queryId={other} is not supported (query-all-ids is; use _queryFilter)"
                )));
            }
            (Some(_), Some(_)) => {
                return Err(bad("give _queryFilter or _queryId, not both".into()));
            }
            (None, None) => {
                if params.get("_queryExpression").is_some() {
                    return Err(RestError::forbidden(
                        "_queryExpression is not supported; use _queryFilter",
                    ));
                }
                return Err(bad(
                    "a query needs _queryFilter (for example _queryFilter=true) or _queryId".into(),
                ));
            }
        };
        fields.dedup();
        let page_size = match number(params, "_pageSize")? {
            0 => None,
            n => Some(u32::try_from(n.min(max_page_size.max(1))).unwrap_or(u32::MAX)),
        };
        let offset = u32::try_from(number(params, "_pagedResultsOffset")?)
            .map_err(|_| bad("_pagedResultsOffset is too large".into()))?;
        let cookie = params
            .get("_pagedResultsCookie")
            .unwrap_or_default()
            .to_string();
        if cookie.len() > MAX_COOKIE {
            return Err(bad("_pagedResultsCookie is not one this server gave".into()));
        }
        let count_policy = match params.get("_totalPagedResultsPolicy") {
            None | Some("NONE") => CountPolicy::None,
            Some("EXACT") => CountPolicy::Exact,
            Some("ESTIMATE") => CountPolicy::Estimate,
            Some(other) => {
                return Err(bad(format!(
                    "_totalPagedResultsPolicy={other}: expected NONE, EXACT or ESTIMATE"
                )));
            }
        };
        Ok(Query {
            selection,
            fields,
            order_by: sort_keys(params.get("_sortKeys"))?,
            page_size,
            offset,
            cookie,
            count_policy,
        })
    }
}

fn number(params: &Params, name: &str) -> Result<u64, RestError> {
    match params.get(name) {
        None | Some("") => Ok(0),
        Some(text) => text
            .parse()
            .map_err(|_| RestError::bad_request(format!("{name}={text}: expected a whole number"))),
    }
}

/// A field of `_fields` or `_sortKeys`: `/a/b`, `a/b` or `a.b` → `a.b`.
fn field(text: &str) -> Result<String, RestError> {
    let text = text.trim();
    let trimmed = text.strip_prefix('/').unwrap_or(text);
    let segments: Vec<&str> = trimmed.split(['/', '.']).collect();
    if segments.len() > 2 || !segments.iter().all(|s| is_name(s)) {
        return Err(RestError::bad_request(format!("{text:?} is not a field")));
    }
    Ok(segments.join("."))
}

/// `_fields`: a comma list; `*` (or nothing) means every field.
pub fn fields(param: Option<&str>) -> Result<Vec<String>, RestError> {
    let Some(param) = param.filter(|p| !p.trim().is_empty()) else {
        return Ok(Vec::new());
    };
    let names: Vec<&str> = param.split(',').map(str::trim).collect();
    if names.len() > MAX_FIELDS {
        return Err(RestError::bad_request(format!(
            "_fields names more than {MAX_FIELDS} fields"
        )));
    }
    if names.contains(&"*") {
        return Ok(Vec::new());
    }
    names.into_iter().map(field).collect()
}

/// `_sortKeys=-sn,givenName` → `sn desc, givenName asc`.
fn sort_keys(param: Option<&str>) -> Result<String, RestError> {
    let Some(param) = param.filter(|p| !p.trim().is_empty()) else {
        return Ok(String::new());
    };
    let keys: Vec<&str> = param.split(',').collect();
    if keys.len() > MAX_SORT_KEYS {
        return Err(RestError::bad_request(format!(
            "_sortKeys has more than {MAX_SORT_KEYS} keys"
        )));
    }
    let mut order = Vec::new();
    for key in keys {
        let key = key.trim();
        let (direction, name) = match key.strip_prefix('-') {
            Some(name) => ("desc", name),
            None => ("asc", key.strip_prefix('+').unwrap_or(key)),
        };
        order.push(format!("{} {direction}", field(name)?));
    }
    Ok(order.join(", "))
}

/// Wren's query reply.
pub fn reply(
    result: Vec<Value>,
    cookie: Option<String>,
    policy: CountPolicy,
    total: Option<u64>,
) -> Value {
    let total = match policy {
        CountPolicy::None => -1,
        _ => total.map_or(-1, |t| i64::try_from(t).unwrap_or(i64::MAX)),
    };
    json!({
        "result": result,
        "resultCount": result.len(),
        "pagedResultsCookie": cookie,
        "totalPagedResultsPolicy": policy.as_str(),
        "totalPagedResults": total,
        "remainingPagedResults": -1,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn query(pairs: &[(&str, &str)]) -> Result<Query, RestError> {
        let params = Params(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<HashMap<_, _>>(),
        );
        Query::from_params(&params, 1000)
    }

    #[test]
    fn wrens_parameters() {
        let q = query(&[
            ("_queryFilter", "/sn sw \"J\""),
            ("_fields", "userName,/name/familyName"),
            ("_sortKeys", "-sn,+givenName,mail"),
            ("_pageSize", "5000"),
            ("_pagedResultsOffset", "10"),
            ("_totalPagedResultsPolicy", "EXACT"),
        ])
        .unwrap();
        assert_eq!(q.selection.core_filter().unwrap(), "sn sw \"J\"");
        assert_eq!(q.fields, vec!["userName", "name.familyName"]);
        assert_eq!(q.order_by, "sn desc, givenName asc, mail asc");
        assert_eq!(q.page_size, Some(1000));
        assert_eq!(q.offset, 10);
        assert_eq!(q.count_policy, CountPolicy::Exact);
        let ids = query(&[("_queryId", "query-all-ids")]).unwrap();
        assert_eq!(
            (ids.selection, ids.fields, ids.page_size),
            (Selection::All, vec!["_id".to_string()], None)
        );
    }

    #[test]
    fn bad_parameters_are_400() {
        for bad in [
            vec![],
            vec![("_queryId", "credential-query")],
            vec![("_queryFilter", "true"), ("_queryId", "query-all-ids")],
            vec![("_queryFilter", "true"), ("_pageSize", "-1")],
            vec![("_queryFilter", "true"), ("_sortKeys", "a;b")],
            vec![("_queryFilter", "true"), ("_fields", "a b")],
            vec![
                ("_queryFilter", "true"),
                ("_totalPagedResultsPolicy", "ALL"),
            ],
        ] {
            assert_eq!(query(&bad).unwrap_err().code, 400, "{bad:?}");
        }
        assert_eq!(
            query(&[("_queryExpression", "select *")]).unwrap_err().code,
            403
        );
    }

    #[test]
    fn the_reply_is_wrens() {
        let r = reply(vec![json!({"_id": "a"})], None, CountPolicy::None, Some(9));
        assert_eq!(
            r,
            json!({"result": [{"_id": "a"}], "resultCount": 1, "pagedResultsCookie": null,
                   "totalPagedResultsPolicy": "NONE", "totalPagedResults": -1,
                   "remainingPagedResults": -1})
        );
        let r = reply(vec![], Some("c".into()), CountPolicy::Exact, Some(9));
        assert_eq!(
            (&r["totalPagedResults"], &r["pagedResultsCookie"]),
            (&json!(9), &json!("c"))
        );
    }
}
