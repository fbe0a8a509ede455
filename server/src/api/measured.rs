//! gRPC calls counted and timed for `--metrics`: a tower layer around every
//! service records, once a call has its answer's headers, its method and
//! status code (`idm_grpc_requests_total`) and how long it took
//! (`idm_grpc_request_duration_seconds`).
//!
//! The method label is the call's path only when it names a served RPC;
//! anything else a client sends is `unknown`, so labels stay bounded. The
//! code is the `grpc-status` of a failure (answered "trailers only", in the
//! headers); a call whose headers carry none answered OK. A server stream
//! that fails after its first message counts as OK, and its time is the time
//! to its first headers.

use std::collections::HashSet;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::Instant;

use tonic::codegen::{Service, http};

/// Served RPCs outside `idm.v1`.
const OTHER_METHODS: &[&str] = &[
    "grpc.health.v1.Health/Check",
    "grpc.health.v1.Health/Watch",
    "grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
];

/// Every RPC idmd serves, as `package.Service/Method`.
fn methods() -> &'static HashSet<&'static str> {
    static METHODS: OnceLock<HashSet<&'static str>> = OnceLock::new();
    METHODS.get_or_init(|| {
        let mut methods: HashSet<&'static str> = OTHER_METHODS.iter().copied().collect();
        let set = <prost_types::FileDescriptorSet as prost::Message>::decode(
            idm_proto::FILE_DESCRIPTOR_SET,
        );
        match set {
            Ok(set) => {
                for file in &set.file {
                    for service in &file.service {
                        for method in &service.method {
                            // Built once from the fixed descriptors: a bounded set.
                            let name: &'static str = Box::leak(
                                format!("{}.{}/{}", file.package(), service.name(), method.name())
                                    .into_boxed_str(),
                            );
                            methods.insert(name);
                        }
                    }
                }
            }
            Err(e) => tracing::error!(error = %e, "the gRPC descriptors do not decode"),
        }
        methods
    })
}

/// The method label of a request path: `idm.v1.ObjectService/GetObject`,
/// or `unknown` for a path that names no served RPC.
pub fn method_label(path: &str) -> &'static str {
    let name = path.strip_prefix('/').unwrap_or(path);
    methods().get(name).copied().unwrap_or("unknown")
}

/// The status code of an answer: its `grpc-status` header, else OK
/// (UNKNOWN for a header that is no code).
pub fn code_of(headers: &http::HeaderMap) -> tonic::Code {
    match headers.get("grpc-status") {
        None => tonic::Code::Ok,
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<i32>().ok())
            .map_or(tonic::Code::Unknown, tonic::Code::from_i32),
    }
}

#[derive(Clone, Copy)]
pub struct MeasuredLayer;

impl<S> tower_layer::Layer<S> for MeasuredLayer {
    type Service = Measured<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Measured { inner }
    }
}

#[derive(Clone)]
pub struct Measured<S> {
    inner: S,
}

type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send + 'static>>;

impl<S, B, R> Service<http::Request<B>> for Measured<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let method = method_label(request.uri().path());
        let started = Instant::now();
        let answer = self.inner.call(request);
        Box::pin(async move {
            let response = answer.await;
            let code = match &response {
                Ok(response) => code_of(response.headers()),
                Err(_) => tonic::Code::Unknown,
            };
            crate::metrics::grpc_answered(method, code, started.elapsed());
            response
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn served_methods_are_their_own_label_and_anything_else_is_unknown() {
        assert_eq!(
            method_label("/idm.v1.ObjectService/GetObject"),
            "idm.v1.ObjectService/GetObject"
        );
        assert_eq!(
            method_label("/grpc.health.v1.Health/Check"),
            "grpc.health.v1.Health/Check"
        );
        assert_eq!(
            method_label("/idm.v1.AuthService/Login"),
            "idm.v1.AuthService/Login"
        );
        for path in [
            "/idm.v1.ObjectService/NoSuchMethod",
            "/idm.v1.ObjectService/GetObject/extra",
            "/managed/user/bjensen",
            "",
            "/",
        ] {
            assert_eq!(method_label(path), "unknown", "{path}");
        }
    }

    #[test]
    fn the_code_is_the_grpc_status_header_or_ok() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(code_of(&headers), tonic::Code::Ok);
        tonic::Status::not_found("x")
            .add_header(&mut headers)
            .unwrap();
        assert_eq!(code_of(&headers), tonic::Code::NotFound);
        headers.insert("grpc-status", http::HeaderValue::from_static("999"));
        assert_eq!(code_of(&headers), tonic::Code::Unknown);
        headers.insert("grpc-status", http::HeaderValue::from_static("nope"));
        assert_eq!(code_of(&headers), tonic::Code::Unknown);
    }
}
