//! The audit trail. Entries are written by the object transactions
//! (`objects.rs`); this is the read side.

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
}

pub struct AuditQuery {
    pub filter: CompiledFilter,
    pub sort: Vec<SortKey>,
    pub offset: usize,
    pub limit: usize,
}

impl Store {
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
            "SELECT aid, time, actor, operation, object, rev_before, rev_after, changed{projection} \
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
