//! `idm.v1.AuditService`.

use idm_proto::v1::audit_service_server::AuditService;
use idm_proto::v1::{AuditEntry, QueryAuditRequest, QueryAuditResponse, Scope};
use tonic::{Request, Response, Status};

use super::auth::caller;
use super::paging::Page;
use super::timestamp;
use crate::managed::{compile_filter, parse_order_by};
use crate::store::{AuditQuery, Columns, Store};

pub struct AuditApi {
    pub store: Store,
}

/// The audit entry's attributes, as the filter language names them.
const AUDIT_FIELDS: Columns = Columns {
    kind: "audit",
    columns: &[
        ("actor", "actor"),
        ("operation", "operation"),
        ("object", "object"),
        ("time", "time"),
        ("revisionBefore", "rev_before"),
        ("revisionAfter", "rev_after"),
        ("changedProperties", "changed"),
        ("outcome", "outcome"),
        ("detail", "detail"),
        ("requestId", "request_id"),
    ],
};

#[tonic::async_trait]
impl AuditService for AuditApi {
    async fn query_audit(
        &self,
        request: Request<QueryAuditRequest>,
    ) -> Result<Response<QueryAuditResponse>, Status> {
        caller(&request)?.require(Scope::Read)?;
        let request = request.into_inner();
        let order_by = if request.order_by.trim().is_empty() {
            "time desc".to_string()
        } else {
            request.order_by
        };
        let page = Page::of(
            request.page_size,
            &request.page_token,
            &["audit", &request.filter, &order_by],
        )?;
        let query = AuditQuery {
            filter: compile_filter(&request.filter, &AUDIT_FIELDS)?,
            sort: parse_order_by(&order_by, &AUDIT_FIELDS)?,
            offset: page.offset,
            limit: page.limit,
        };
        let (records, total) = self.store.query_audit(&query).await?;
        let next_page_token = page.next_of_total(records.len(), total);
        let entries = records
            .into_iter()
            .map(|r| AuditEntry {
                name: format!("audit/{}", r.aid),
                time: timestamp(&r.time),
                actor: r.actor,
                operation: r.operation,
                object: r.object,
                revision_before: r.rev_before,
                revision_after: r.rev_after,
                changed_properties: r.changed,
                outcome: r.outcome.unwrap_or_else(|| "success".into()),
                detail: r.detail.unwrap_or_default(),
                request_id: r.request_id.unwrap_or_default(),
            })
            .collect();
        Ok(Response::new(QueryAuditResponse {
            entries,
            next_page_token,
            total_size: i64::try_from(total).unwrap_or(i64::MAX),
        }))
    }
}
