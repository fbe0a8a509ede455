//! The Common REST query reply shared by the operations endpoints (scheduler,
//! system objects, audit): `{result, resultCount, pagedResultsCookie,
//! totalPagedResultsPolicy, totalPagedResults, remainingPagedResults}`.

use idm_proto::filter::Filter;
use serde_json::{Map, Value, json};

use super::query_filter::Selection;
use super::{Params, RestError};

/// A page of results. `cookie` is the core's next page token (absent on the
/// last page); `total` the count of every match, when the core gives one.
pub fn query_result(result: Vec<Value>, cookie: Option<String>, total: Option<i64>) -> Value {
    let count = result.len();
    let (policy, total_shown) = match total {
        Some(total) => ("EXACT", total),
        None => ("NONE", -1),
    };
    json!({
        "result": result,
        "resultCount": count,
        "pagedResultsCookie": cookie.filter(|c| !c.is_empty()),
        "totalPagedResultsPolicy": policy,
        "totalPagedResults": total_shown,
        "remainingPagedResults": -1,
    })
}

/// Which query a request asks for: Wren's `_queryId=query-all-ids`, or a
/// `_queryFilter` (its text; `true` is every object).
pub enum Query {
    AllIds,
    Filter(String),
}

impl Query {
    pub fn of(params: &Params) -> Result<Self, RestError> {
        match (params.get("_queryId"), params.get("_queryFilter")) {
            (Some("query-all-ids"), None) => Ok(Query::AllIds),
            (Some(other), None) => Err(RestError::bad_request(format!(
                "_queryId {other} is not supported here (query-all-ids is)"
            ))),
            (None, Some(filter)) => Ok(Query::Filter(filter.to_string())),
            (Some(_), Some(_)) => Err(RestError::bad_request(
                "give one of _queryId and _queryFilter",
            )),
            (None, None) => Err(RestError::bad_request(
                "a query needs _queryFilter or _queryId",
            )),
        }
    }
}

/// A `_queryFilter`: `true`, `false`, or a condition in the core's filter
/// language.
pub enum WrenFilter {
    All,
    Nothing,
    Where(Filter),
}

impl WrenFilter {
    /// Parsed with Wren's grammar ([`super::query_filter`]).
    pub fn parse(text: &str) -> Result<Self, RestError> {
        match super::query_filter::parse(text) {
            Ok(Selection::All) => Ok(WrenFilter::All),
            Ok(Selection::Nothing) => Ok(WrenFilter::Nothing),
            Ok(Selection::Matching(filter)) => Ok(WrenFilter::Where(filter)),
            Err(e) => Err(RestError::bad_request(e.to_string())),
        }
    }

    /// Whether a JSON object matches (for lists the gateway filters itself).
    pub fn matches(&self, object: &Map<String, Value>, id: Option<&str>) -> bool {
        match self {
            WrenFilter::All => true,
            WrenFilter::Nothing => false,
            WrenFilter::Where(f) => idm_proto::filter_match::matches(f, object, id),
        }
    }
}

/// `_pageSize` (0 when absent: the core's default), clamped to `max`.
pub fn page_size(params: &Params, max: u64) -> Result<i32, RestError> {
    match params.get("_pageSize") {
        None | Some("") => Ok(0),
        Some(text) => {
            let size: i64 = text.parse().map_err(|_| {
                RestError::bad_request(format!("_pageSize={text}: expected a number"))
            })?;
            let size = u64::try_from(size.max(0)).unwrap_or(0).min(max);
            Ok(i32::try_from(size).unwrap_or(i32::MAX))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reply_has_wren_fields() {
        let body = query_result(vec![json!({"_id": "a"})], Some(String::new()), None);
        assert_eq!(body["resultCount"], 1);
        assert_eq!(body["pagedResultsCookie"], Value::Null);
        assert_eq!(body["totalPagedResultsPolicy"], "NONE");
        assert_eq!(body["totalPagedResults"], -1);
        let body = query_result(Vec::new(), Some("t".into()), Some(7));
        assert_eq!(body["pagedResultsCookie"], "t");
        assert_eq!(body["totalPagedResults"], 7);
    }
}
