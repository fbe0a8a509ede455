//! The protocol messages of RFC 7644: list and search, PATCH, Bulk and Error.
//! Parsed loosely (clients send `"Replace"`, numbers as strings, a comma list
//! where an array belongs) and serialized precisely.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use super::error::ScimError;
use super::urn;

/// An error body (RFC 7644 §3.12).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody<'a> {
    pub schemas: [&'static str; 1],
    /// The HTTP status, as a string (the RFC's example and what clients parse).
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scim_type: Option<&'static str>,
    pub detail: &'a str,
}

impl<'a> From<&'a ScimError> for ErrorBody<'a> {
    fn from(error: &'a ScimError) -> Self {
        ErrorBody {
            schemas: [urn::ERROR],
            status: error.status.to_string(),
            scim_type: error.scim_type.map(|t| t.as_str()),
            detail: &error.detail,
        }
    }
}

/// A page of resources (RFC 7644 §3.4.2).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ListResponse<T: Serialize> {
    pub schemas: [&'static str; 1],
    pub total_results: u64,
    pub start_index: u64,
    pub items_per_page: u64,
    #[serde(rename = "Resources")]
    pub resources: Vec<T>,
}

impl<T: Serialize> ListResponse<T> {
    pub fn new(total_results: u64, start_index: u64, resources: Vec<T>) -> Self {
        ListResponse {
            schemas: [urn::LIST_RESPONSE],
            total_results,
            start_index,
            items_per_page: resources.len() as u64,
            resources,
        }
    }
}

/// `sortOrder`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SortOrder {
    #[default]
    Ascending,
    Descending,
}

/// What a list or search asks for: the query parameters of `GET /Users` and
/// the body of `POST /.search`, in one form.
#[derive(Debug, Clone, Default)]
pub struct ListRequest {
    pub filter: Option<String>,
    pub sort_by: Option<String>,
    pub sort_order: SortOrder,
    /// 1-based; values below 1 count as 1 (RFC 7644 §3.4.2.4).
    pub start_index: u64,
    /// `None`: the server's default page; 0 asks only for `totalResults`.
    pub count: Option<u64>,
    pub attributes: Vec<String>,
    pub excluded_attributes: Vec<String>,
}

impl ListRequest {
    /// From query parameters; names are matched ignoring case.
    pub fn from_query(params: &[(String, String)]) -> Result<Self, ScimError> {
        let get = |name: &str| {
            params
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        };
        Ok(ListRequest {
            filter: get("filter").map(str::to_string),
            sort_by: get("sortBy").map(str::to_string),
            sort_order: sort_order(get("sortOrder"))?,
            start_index: start_index(get("startIndex").map(number).transpose()?),
            count: get("count").map(number).transpose()?.map(clamp_count),
            attributes: get("attributes").map(comma_list).unwrap_or_default(),
            excluded_attributes: get("excludedAttributes")
                .map(comma_list)
                .unwrap_or_default(),
        })
    }

    /// From a `SearchRequest` body.
    pub fn from_search(body: Value) -> Result<Self, ScimError> {
        let search: SearchRequest = serde_json::from_value(body)
            .map_err(|e| ScimError::invalid_syntax(format!("SearchRequest: {e}")))?;
        Ok(ListRequest {
            filter: search.filter,
            sort_by: search.sort_by,
            sort_order: sort_order(search.sort_order.as_deref())?,
            start_index: start_index(search.start_index.map(|n| n.0)),
            count: search.count.map(|n| clamp_count(n.0)),
            attributes: search.attributes.map(|l| l.0).unwrap_or_default(),
            excluded_attributes: search.excluded_attributes.map(|l| l.0).unwrap_or_default(),
        })
    }

    /// Query parameters only for the attribute lists, as on a single resource.
    pub fn projection(
        params: &[(String, String)],
    ) -> Result<(Vec<String>, Vec<String>), ScimError> {
        let request = ListRequest::from_query(params)?;
        Ok((request.attributes, request.excluded_attributes))
    }
}

fn sort_order(text: Option<&str>) -> Result<SortOrder, ScimError> {
    match text {
        None => Ok(SortOrder::Ascending),
        Some(t) if t.eq_ignore_ascii_case("ascending") => Ok(SortOrder::Ascending),
        Some(t) if t.eq_ignore_ascii_case("descending") => Ok(SortOrder::Descending),
        Some(other) => Err(ScimError::invalid_value(format!(
            "sortOrder: \"{other}\" is neither ascending nor descending"
        ))),
    }
}

fn start_index(value: Option<i64>) -> u64 {
    value.map_or(1, |n| n.max(1) as u64)
}

/// Negative counts mean 0 (RFC 7644 §3.4.2.4).
fn clamp_count(value: i64) -> u64 {
    value.max(0) as u64
}

fn number(text: &str) -> Result<i64, ScimError> {
    text.trim()
        .parse::<i64>()
        .map_err(|_| ScimError::invalid_value(format!("\"{text}\" is not an integer")))
}

fn comma_list(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// `POST /.search` (RFC 7644 §3.4.3).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SearchRequest {
    attributes: Option<NameList>,
    excluded_attributes: Option<NameList>,
    filter: Option<String>,
    sort_by: Option<String>,
    sort_order: Option<String>,
    start_index: Option<LooseInt>,
    count: Option<LooseInt>,
}

/// An attribute list as an array, or as one comma-separated string.
#[derive(Debug)]
struct NameList(Vec<String>);

impl<'de> Deserialize<'de> for NameList {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            One(String),
            Many(Vec<String>),
        }
        Ok(NameList(match Form::deserialize(deserializer)? {
            Form::One(text) => comma_list(&text),
            Form::Many(items) => items.iter().flat_map(|i| comma_list(i)).collect(),
        }))
    }
}

/// An integer, or a string holding one.
#[derive(Debug, Clone, Copy)]
pub struct LooseInt(pub i64);

impl<'de> Deserialize<'de> for LooseInt {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match Value::deserialize(deserializer)? {
            Value::Number(n) => n
                .as_i64()
                .or_else(|| n.as_f64().map(|f| f as i64))
                .map(LooseInt)
                .ok_or_else(|| serde::de::Error::custom("expected an integer")),
            Value::String(s) => s
                .trim()
                .parse()
                .map(LooseInt)
                .map_err(|_| serde::de::Error::custom(format!("\"{s}\" is not an integer"))),
            other => Err(serde::de::Error::custom(format!(
                "expected an integer, got {other}"
            ))),
        }
    }
}

/// `PATCH` (RFC 7644 §3.5.2).
#[derive(Debug, Deserialize)]
pub struct PatchRequest {
    #[serde(default)]
    pub schemas: Vec<String>,
    #[serde(rename = "Operations", alias = "operations")]
    pub operations: Vec<PatchOperation>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PatchOperation {
    pub op: PatchOp,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub value: Option<Value>,
}

/// `add`, `remove` or `replace`, in any case (Entra ID sends `"Replace"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchOp {
    Add,
    Remove,
    Replace,
}

impl<'de> Deserialize<'de> for PatchOp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        match text.to_ascii_lowercase().as_str() {
            "add" => Ok(PatchOp::Add),
            "remove" => Ok(PatchOp::Remove),
            "replace" => Ok(PatchOp::Replace),
            _ => Err(serde::de::Error::custom(format!(
                "op \"{text}\" is not add, remove or replace"
            ))),
        }
    }
}

/// `POST /Bulk` (RFC 7644 §3.7).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BulkRequest {
    #[serde(default)]
    pub schemas: Vec<String>,
    #[serde(default)]
    pub fail_on_errors: Option<LooseInt>,
    #[serde(rename = "Operations", alias = "operations")]
    pub operations: Vec<BulkOperation>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BulkOperation {
    pub method: String,
    #[serde(default)]
    pub bulk_id: Option<String>,
    #[serde(default)]
    pub version: Option<String>,
    pub path: String,
    #[serde(default)]
    pub data: Option<Value>,
}

#[derive(Debug, Serialize)]
pub struct BulkResponse {
    pub schemas: [&'static str; 1],
    #[serde(rename = "Operations")]
    pub operations: Vec<BulkOperationResult>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BulkOperationResult {
    pub method: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bulk_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response: Option<Value>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn list_parameters_are_read_loosely_and_clamped() {
        let params = vec![
            ("STARTINDEX".to_string(), "-4".to_string()),
            ("count".to_string(), "-1".to_string()),
            (
                "attributes".to_string(),
                "userName, name.givenName".to_string(),
            ),
            ("sortOrder".to_string(), "Descending".to_string()),
        ];
        let request = ListRequest::from_query(&params).unwrap();
        assert_eq!(request.start_index, 1);
        assert_eq!(request.count, Some(0));
        assert_eq!(request.attributes, ["userName", "name.givenName"]);
        assert_eq!(request.sort_order, SortOrder::Descending);
        let bad = vec![("count".to_string(), "ten".to_string())];
        assert_eq!(ListRequest::from_query(&bad).unwrap_err().status, 400);
    }

    #[test]
    fn search_bodies_take_strings_for_numbers_and_lists() {
        let request = ListRequest::from_search(json!({
            "schemas": [urn::SEARCH_REQUEST],
            "attributes": "userName,emails",
            "startIndex": "3",
            "count": 10,
            "filter": "userName sw \"b\""
        }))
        .unwrap();
        assert_eq!(request.attributes, ["userName", "emails"]);
        assert_eq!((request.start_index, request.count), (3, Some(10)));
    }

    #[test]
    fn patch_ops_are_case_insensitive() {
        let patch: PatchRequest = serde_json::from_value(json!({
            "schemas": [urn::PATCH_OP],
            "Operations": [{"op": "Replace", "path": "active", "value": "False"},
                           {"op": "REMOVE", "path": "title"}]
        }))
        .unwrap();
        assert_eq!(patch.operations[0].op, PatchOp::Replace);
        assert_eq!(patch.operations[1].op, PatchOp::Remove);
        let bad = serde_json::from_value::<PatchRequest>(json!({"Operations": [{"op": "move"}]}));
        assert!(bad.unwrap_err().to_string().contains("move"));
    }
}
