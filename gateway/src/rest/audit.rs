//! `/openidm/audit/{topic}`: idm's audit trail (`AuditService.QueryAudit`)
//! under Wren's four topics, each entry shown in that topic's shape.
//!
//! | topic | holds here |
//! |---|---|
//! | `activity` | object writes and admin actions: every entry but logins, logouts, password checks and reconciliation starts and cancels |
//! | `recon` | reconciliation starts and cancels, and the writes a reconciliation made (actor `recon/<id>`) |
//! | `authentication` | logins (`auth.login`), logouts and password checks |
//! | `access` | every audited call, with its outcome |
//!
//! `_queryFilter` names Wren's fields (`timestamp`, `userId`, `objectId`,
//! `operation`, `status`, …), translated to the core's audit fields; values of
//! `operation`/`action` (`CREATE`, `UPDATE`…) and `status`/`result`
//! (`SUCCESS`, `SUCCESSFUL`) are translated too. `_sortKeys` (`-timestamp`),
//! `_pageSize`, `_pagedResultsCookie` and `_totalPagedResultsPolicy` apply.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use idm_proto::filter::{AttrPath, Filter, Value as Literal};
use idm_proto::v1::audit_service_client::AuditServiceClient;
use idm_proto::v1::{AuditEntry, QueryAuditRequest};
use serde_json::{Value, json};

use super::core_call;
use super::listing::{WrenFilter, page_size, query_result};
use super::{Caller, Params, RestError, RestState, json_response};

pub fn routes() -> Router<RestState> {
    Router::new().route("/audit/{topic}", get(query))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Topic {
    Activity,
    Recon,
    Authentication,
    Access,
}

impl Topic {
    fn of(name: &str) -> Result<Self, RestError> {
        match name {
            "activity" => Ok(Topic::Activity),
            "recon" => Ok(Topic::Recon),
            "authentication" => Ok(Topic::Authentication),
            "access" => Ok(Topic::Access),
            other => Err(RestError::not_found(format!("audit/{other} not found"))),
        }
    }

    /// The entries of the topic, in the core's filter language.
    fn condition(self) -> Option<&'static str> {
        const AUTH: &str = r#"operation sw "auth." or operation eq "password.verify""#;
        match self {
            Topic::Activity => Some(concat!(
                r#"not (operation sw "auth." or operation eq "password.verify" "#,
                r#"or operation sw "recon.")"#
            )),
            Topic::Recon => Some(r#"operation sw "recon." or actor sw "recon/""#),
            Topic::Authentication => Some(AUTH),
            Topic::Access => None,
        }
    }
}

/// A Wren field name as the core's audit field.
fn core_field(name: &str) -> &str {
    match name {
        "timestamp" => "time",
        "userId" | "principal" | "runAs" => "actor",
        "objectId" | "targetObjectId" | "sourceObjectId" => "object",
        "action" | "eventName" => "operation",
        "changedFields" => "changedProperties",
        "revision" => "revisionAfter",
        "status" | "result" => "outcome",
        "message" => "detail",
        "transactionId" => "requestId",
        other => other,
    }
}

/// Wren's value for a core field as the core writes it.
fn core_value(field: &str, value: &Literal) -> Literal {
    let Literal::String(text) = value else {
        return value.clone();
    };
    let mapped = match field {
        "operation" => match text.as_str() {
            "CREATE" => "create".to_string(),
            "UPDATE" => "replace".to_string(),
            "PATCH" => "patch".to_string(),
            "DELETE" => "delete".to_string(),
            _ => text.clone(),
        },
        "outcome" => match text.as_str() {
            "SUCCESS" | "SUCCESSFUL" => "success".to_string(),
            _ => text.clone(),
        },
        _ => text.clone(),
    };
    Literal::String(mapped)
}

/// The filter with Wren's names and values in the core's terms. Follows
/// only the parser-bounded nesting.
fn translate(filter: Filter) -> Filter {
    let rename = |path: AttrPath| AttrPath {
        attr: core_field(&path.attr).to_string(),
        ..path
    };
    match filter {
        Filter::And(operands) => Filter::And(operands.into_iter().map(translate).collect()),
        Filter::Or(operands) => Filter::Or(operands.into_iter().map(translate).collect()),
        Filter::Not(inner) => Filter::Not(Box::new(translate(*inner))),
        Filter::Present(path) => Filter::Present(rename(path)),
        Filter::Compare(path, op, value) => {
            let path = rename(path);
            let value = core_value(&path.attr, &value);
            Filter::Compare(path, op, value)
        }
        Filter::ValuePath(path, inner) => Filter::ValuePath(rename(path), inner),
    }
}

/// `_sortKeys=-timestamp,userId` → `time desc, actor`.
fn order_by(params: &Params) -> Result<String, RestError> {
    let Some(keys) = params.get("_sortKeys") else {
        return Ok(String::new());
    };
    let mut order = Vec::new();
    for key in keys.split(',').map(str::trim).filter(|k| !k.is_empty()) {
        let (descending, name) = match key.strip_prefix('-') {
            Some(name) => (true, name),
            None => (false, key.strip_prefix('+').unwrap_or(key)),
        };
        let name = name.trim_start_matches('/');
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(RestError::bad_request(format!("_sortKeys: {key}")));
        }
        let field = core_field(name);
        order.push(if descending {
            format!("{field} desc")
        } else {
            field.to_string()
        });
    }
    Ok(order.join(", "))
}

fn status(outcome: &str) -> &'static str {
    if outcome.is_empty() || outcome == "success" || outcome == "valid" {
        "SUCCESS"
    } else {
        "FAILURE"
    }
}

fn wren_operation(operation: &str) -> String {
    match operation {
        "create" => "CREATE".into(),
        "replace" => "UPDATE".into(),
        "patch" => "PATCH".into(),
        "delete" => "DELETE".into(),
        other => other.to_string(),
    }
}

/// One entry in the topic's shape.
fn entry(topic: Topic, e: &AuditEntry) -> Value {
    let id = e.name.strip_prefix("audit/").unwrap_or(&e.name);
    let timestamp = e.time.as_ref().map(ToString::to_string).unwrap_or_default();
    // Wren's transaction id is the request's: the X-Request-Id of the call
    // that caused the entry; the entry's own id when it has none.
    let transaction = if e.request_id.is_empty() {
        id
    } else {
        e.request_id.as_str()
    };
    match topic {
        Topic::Activity => json!({
            "_id": id, "timestamp": timestamp, "eventName": "activity",
            "transactionId": transaction, "userId": e.actor, "runAs": e.actor,
            "objectId": e.object, "operation": wren_operation(&e.operation),
            "revision": e.revision_after.to_string(), "changedFields": e.changed_properties,
            "passwordChanged": e.changed_properties.iter().any(|p| p.to_ascii_lowercase().contains("password")),
            "status": status(&e.outcome), "message": e.detail,
        }),
        Topic::Recon => {
            let (entry_type, recon_id) = match e.operation.as_str() {
                "recon.start" => (
                    "start",
                    e.object.strip_prefix("recon/").unwrap_or(&e.object),
                ),
                "recon.cancel" => (
                    "cancel",
                    e.object.strip_prefix("recon/").unwrap_or(&e.object),
                ),
                _ => ("entry", e.actor.strip_prefix("recon/").unwrap_or(&e.actor)),
            };
            json!({
                "_id": id, "timestamp": timestamp, "eventName": "recon",
                "transactionId": transaction, "userId": e.actor, "reconId": recon_id,
                "entryType": entry_type, "action": wren_operation(&e.operation),
                "targetObjectId": e.object, "status": status(&e.outcome),
                "message": e.detail,
            })
        }
        Topic::Authentication => {
            let ok = status(&e.outcome) == "SUCCESS";
            json!({
                "_id": id, "timestamp": timestamp, "eventName": "authentication",
                "transactionId": transaction, "userId": e.actor, "principal": [e.actor],
                "result": if ok { "SUCCESSFUL" } else { "FAILED" },
                "method": if e.operation == "password.verify" { "MANAGED_USER" } else { "INTERNAL_USER" },
                "entries": [{"moduleId": e.operation, "result": if ok { "SUCCESSFUL" } else { "FAILED" },
                             "info": {"detail": e.detail}}],
            })
        }
        Topic::Access => json!({
            "_id": id, "timestamp": timestamp, "eventName": "access",
            "transactionId": transaction, "userId": e.actor,
            "request": {"protocol": "gRPC", "operation": e.operation},
            "response": {"status": if status(&e.outcome) == "SUCCESS" { "SUCCESSFUL" } else { "FAILED" },
                         "statusCode": if e.outcome.is_empty() { "success" } else { e.outcome.as_str() },
                         "detail": e.detail},
            "objectId": e.object,
        }),
    }
}

async fn query(
    State(state): State<RestState>,
    caller: Caller,
    Path(topic): Path<String>,
    params: Params,
) -> Result<Response, RestError> {
    let topic = Topic::of(&topic)?;
    let asked = params
        .get("_queryFilter")
        .ok_or_else(|| RestError::bad_request("an audit query needs _queryFilter"))?;
    let asked = match WrenFilter::parse(asked)? {
        WrenFilter::All => None,
        WrenFilter::Nothing => {
            return Ok(json_response(
                StatusCode::OK,
                &query_result(Vec::new(), None, Some(0)),
            ));
        }
        WrenFilter::Where(f) => Some(translate(f)),
    };
    let scope = topic
        .condition()
        .map(idm_proto::filter::parse)
        .transpose()
        .map_err(|e| RestError::internal(format!("audit topic filter: {e}")))?;
    let filter = match (scope, asked) {
        (None, None) => String::new(),
        (Some(f), None) | (None, Some(f)) => f.to_string(),
        (Some(scope), Some(asked)) => scope.and(asked).to_string(),
    };
    let request = QueryAuditRequest {
        filter,
        order_by: order_by(&params)?,
        page_size: page_size(&params, state.limits.max_page_size)?,
        page_token: params
            .get("_pagedResultsCookie")
            .unwrap_or_default()
            .to_string(),
    };
    let counted = matches!(
        params.get("_totalPagedResultsPolicy"),
        Some("EXACT" | "ESTIMATE")
    );
    let page = core_call!(
        &state,
        &caller,
        AuditServiceClient.query_audit(request.clone())
    )
    .await?;
    let result = page.entries.iter().map(|e| entry(topic, e)).collect();
    Ok(json_response(
        StatusCode::OK,
        &query_result(
            result,
            Some(page.next_page_token),
            counted.then_some(page.total_size),
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wren_names_and_values_become_the_core_s() {
        let f = idm_proto::filter::parse(
            r#"userId eq "openidm-admin" and operation eq "UPDATE" and status eq "SUCCESS" and timestamp gt "2026""#,
        )
        .unwrap();
        assert_eq!(
            translate(f).to_string(),
            r#"actor eq "openidm-admin" and operation eq "replace" and outcome eq "success" and time gt "2026""#
        );
    }

    #[test]
    fn every_topic_condition_parses() {
        for topic in [Topic::Activity, Topic::Recon, Topic::Authentication] {
            idm_proto::filter::parse(topic.condition().unwrap()).unwrap();
        }
    }
}
