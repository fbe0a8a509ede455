//! The audit trail. Object entries are written by the object transactions
//! (`objects.rs`); admin actions and password checks by `record_action`.
//! Entries hold names, never secret values.

use serde::Deserialize;
use serde_json::{Value, json};

use super::query::{CompiledFilter, SortKey, sort_clauses};
use super::{Store, StoreError};

#[derive(Debug, Clone, Deserialize)]
pub struct AuditRecord {
    pub aid: String,
    pub time: String,
    pub actor: String,
    pub operation: String,
    pub object: String,
    pub rev_before: i64,
    pub rev_after: i64,
    pub changed: Vec<String>,
    /// `success`, a password check's `valid` / `invalid`, or the gRPC code
    /// of a failed call (`PERMISSION_DENIED`). Entries written before schema
    /// version 2 had none; the migration sets `success`.
    #[serde(default)]
    pub outcome: Option<String>,
    #[serde(default)]
    pub detail: Option<String>,
    /// The request id of the call that caused the entry; none for
    /// background work and for entries written before request ids.
    #[serde(default)]
    pub request_id: Option<String>,
}

/// One admin action (or password check) for the audit trail.
#[derive(Debug, Clone)]
pub struct ActionRecord<'a> {
    /// The token id, or `bootstrap`.
    pub actor: &'a str,
    /// `token.create`, `connector.put`, … (see `api/trail.rs`).
    pub action: &'a str,
    /// What it acted on: `tokens/<id>`, `connectors/<name>`, `managed/user/<id>`.
    pub target: &'a str,
    pub outcome: &'a str,
    /// A note without secrets: a token's scope, a document's field names.
    pub detail: Option<&'a str>,
}

pub struct AuditQuery {
    pub filter: CompiledFilter,
    pub sort: Vec<SortKey>,
    pub offset: usize,
    pub limit: usize,
}

impl Store {
    /// Records an admin action (or a password check) in the audit trail,
    /// queryable like object entries (`operation` is the action, `object`
    /// the target).
    pub async fn record_action(&self, action: &ActionRecord<'_>) -> Result<(), StoreError> {
        let aid = uuid::Uuid::now_v7().to_string();
        // The call being audited (see `crate::request_id`).
        let request_id = crate::request_id::current();
        let row = json!({
            "aid": aid, "time": super::now_timestamp(), "actor": action.actor,
            "operation": action.action, "object": action.target, "rev_before": 0,
            "rev_after": 0, "changed": [], "outcome": action.outcome, "detail": action.detail,
            "request_id": request_id,
        });
        self.execute(
            "CREATE type::record('audit', $aid) CONTENT $row RETURN NONE",
            json!({ "aid": aid, "row": row }),
        )
        .await
    }

    pub async fn query_audit(
        &self,
        query: &AuditQuery,
    ) -> Result<(Vec<AuditRecord>, u64), StoreError> {
        let mut params = query.filter.params.clone();
        let (projection, order) = sort_clauses(&query.sort, &mut params, "aid");
        let condition = query.filter.condition();
        params.insert("limit".into(), json!(query.limit));
        params.insert("start".into(), json!(query.offset));
        let select = format!(
            "SELECT aid, time, actor, operation, object, rev_before, rev_after, changed, outcome, detail, \
             request_id{projection} \
             FROM audit WHERE {condition} ORDER BY {order} LIMIT $limit START $start"
        );
        let rows = self
            .query_all(&select, Value::Object(params.clone()))
            .await?;
        let total = self
            .count(
                &format!("SELECT count() AS n FROM audit WHERE {condition} GROUP ALL"),
                Value::Object(params),
            )
            .await?;
        Ok((rows, total))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::query::CompiledFilter;
    use super::*;

    #[tokio::test]
    async fn entries_from_before_outcomes_read_as_success_after_the_migration() {
        let store = Store::open("mem://").await.unwrap();
        store
            .execute(
                "CREATE audit:old CONTENT { aid: 'old', time: '2025-01-01T00:00:00.000000Z', \
                 actor: 'bootstrap', operation: 'create', object: 'managed/user/a', \
                 rev_before: 0, rev_after: 1, changed: ['userName'] }; \
                 UPSERT meta:schema SET version = 1;",
                Value::Null,
            )
            .await
            .unwrap();
        store.migrate().await.unwrap();
        // Written as part of a call: the entry names its request id.
        crate::request_id::scope(
            "req-1".into(),
            store.record_action(&ActionRecord {
                actor: "bootstrap",
                action: "token.create",
                target: "tokens/abc",
                outcome: "INVALID_ARGUMENT",
                detail: Some("scope read"),
            }),
        )
        .await
        .unwrap();
        let query = AuditQuery {
            filter: CompiledFilter::default(),
            sort: Vec::new(),
            offset: 0,
            limit: 10,
        };
        let (mut rows, total) = store.query_audit(&query).await.unwrap();
        assert_eq!(total, 2);
        rows.sort_by(|a, b| a.time.cmp(&b.time));
        assert_eq!(rows[0].outcome.as_deref(), Some("success"));
        assert_eq!(rows[0].changed, ["userName"]);
        assert_eq!(
            (
                rows[1].operation.as_str(),
                rows[1].outcome.as_deref(),
                rows[1].detail.as_deref()
            ),
            ("token.create", Some("INVALID_ARGUMENT"), Some("scope read"))
        );
        // Old entries read without a request id.
        assert_eq!(rows[0].request_id, None);
        assert_eq!(rows[1].request_id.as_deref(), Some("req-1"));
    }
}
