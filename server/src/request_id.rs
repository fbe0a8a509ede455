//! The request id of the gRPC call being served (see
//! [`idm_proto::request_id`]): set by the API layer (`api/request_id.rs`)
//! around each call, read where the call's audit entries are written
//! (`store/audit.rs`, `store/objects.rs`) without threading it through every
//! signature. Work outside a call (a reconciliation's rows, a schedule's run)
//! has none.

use std::future::Future;

tokio::task_local! {
    static REQUEST_ID: String;
}

/// The id of the call this task serves, if it serves one.
pub fn current() -> Option<String> {
    REQUEST_ID.try_with(Clone::clone).ok()
}

/// Runs `work` as part of the call `id`.
pub async fn scope<F: Future>(id: String, work: F) -> F::Output {
    REQUEST_ID.scope(id, work).await
}

/// Runs `f` (the synchronous half of a service call) as part of the call `id`.
pub fn sync_scope<R>(id: String, f: impl FnOnce() -> R) -> R {
    REQUEST_ID.sync_scope(id, f)
}

/// A new id: a UUIDv7, so ids sort by time in logs and the audit trail.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_id_is_seen_inside_its_scope_only() {
        assert_eq!(current(), None);
        let seen = scope("abc-123".into(), async { current() }).await;
        assert_eq!(seen.as_deref(), Some("abc-123"));
        assert_eq!(current(), None);
        assert_eq!(sync_scope("x".into(), current).as_deref(), Some("x"));
        let made = new_id();
        assert!(idm_proto::request_id::is_valid(&made), "{made}");
    }
}
