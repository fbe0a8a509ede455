//! The request id layer: every gRPC call gets an id (the caller's
//! `x-request-id` metadata if valid, else a new UUIDv7), recorded on the
//! call's `grpc` span (so every log line of the call carries it), put in the
//! request's extensions ([`RequestId`]) and in the task-local
//! [`crate::request_id`] the audit trail reads. Each call ends with one log
//! line at info (its path and status code); health checks at debug, so a
//! prober polling every second does not fill the log.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use idm_proto::code_name;
use idm_proto::request_id::{METADATA_KEY, accept_or};
use tonic::codegen::{Service, http};

use crate::request_id::{new_id, scope, sync_scope};

/// The id of the call, in the request's extensions.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

#[derive(Clone, Copy, Default)]
pub struct RequestIdLayer;

impl<S> tower_layer::Layer<S> for RequestIdLayer {
    type Service = WithRequestId<S>;

    fn layer(&self, inner: S) -> Self::Service {
        WithRequestId { inner }
    }
}

#[derive(Clone)]
pub struct WithRequestId<S> {
    inner: S,
}

type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send + 'static>>;

/// Calls logged at debug, not info: probes.
fn quiet(path: &str) -> bool {
    path.starts_with("/grpc.health.v1.Health/") || path.starts_with("/grpc.reflection.")
}

impl<S, B, R> Service<http::Request<B>> for WithRequestId<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
    R: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let incoming = request
            .headers()
            .get(METADATA_KEY)
            .and_then(|v| v.to_str().ok());
        let id = accept_or(incoming, new_id);
        request.extensions_mut().insert(RequestId(id.clone()));
        let quiet = quiet(request.uri().path());
        let answer = sync_scope(id.clone(), || self.inner.call(request));
        Box::pin(async move {
            // Polled inside the `grpc` span `trace_fn` made (api/mod.rs).
            tracing::Span::current().record("request_id", id.as_str());
            let started = Instant::now();
            let response = scope(id, answer).await?;
            // A failure answers "trailers only": its status is in the
            // headers; a stream's end status is not known here.
            let code = response
                .headers()
                .get("grpc-status")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<i32>().ok())
                .map_or(tonic::Code::Ok, tonic::Code::from_i32);
            let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            if quiet {
                tracing::debug!(code = code_name(code), elapsed_ms, "answered");
            } else {
                tracing::info!(code = code_name(code), elapsed_ms, "answered");
            }
            Ok(response)
        })
    }
}
