//! gRPC calls counted and timed for `--metrics`: a tower layer around every
//! service records, once a call's answer has ended, its method and status
//! code (`idm_grpc_requests_total`) and how long it took
//! (`idm_grpc_request_duration_seconds`).
//!
//! The method label is the call's path only when it names a served RPC;
//! anything else a client sends is `unknown`, so labels stay bounded. The
//! code is the answer's `grpc-status`: in the headers of a failure answered
//! "trailers only", else in the trailers after the last message, so a
//! server stream (`WatchRecon`, `Backup`) that fails after its first message
//! counts as that failure, and its time runs to its end. An answer whose
//! body is dropped before it ended (the client went away) is CANCELLED.

use std::collections::HashSet;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::Instant;

use http_body::{Body, Frame, SizeHint};
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
    type Response = http::Response<MeasuredBody<R>>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let call = Call {
            method: method_label(request.uri().path()),
            started: Instant::now(),
            record: crate::metrics::grpc_answered,
        };
        let answer = self.inner.call(request);
        Box::pin(async move {
            match answer.await {
                Ok(response) => Ok(call.answered(response)),
                Err(e) => {
                    call.ended(tonic::Code::Unknown);
                    Err(e)
                }
            }
        })
    }
}

/// A call being answered: what to record once its answer ends.
struct Call {
    method: &'static str,
    started: Instant,
    record: fn(&'static str, tonic::Code, std::time::Duration),
}

impl Call {
    fn ended(self, code: tonic::Code) {
        (self.record)(self.method, code, self.started.elapsed());
    }

    /// A failure in the headers ends the call now; otherwise its body decides.
    fn answered<R>(self, response: http::Response<R>) -> http::Response<MeasuredBody<R>> {
        let code = code_of(response.headers());
        let call = if code == tonic::Code::Ok {
            Some(self)
        } else {
            self.ended(code);
            None
        };
        response.map(|inner| MeasuredBody { inner, call })
    }
}

/// An answer's body, passed through; the call is recorded at its trailers,
/// its end, or its drop, whichever comes first.
pub struct MeasuredBody<R> {
    inner: R,
    call: Option<Call>,
}

impl<R> MeasuredBody<R> {
    fn end(&mut self, code: tonic::Code) {
        if let Some(call) = self.call.take() {
            call.ended(code);
        }
    }
}

impl<R: Body + Unpin> Body for MeasuredBody<R> {
    type Data = R::Data;
    type Error = R::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    self.end(code_of(trailers));
                }
            }
            Poll::Ready(Some(Err(_))) => self.end(tonic::Code::Unknown),
            // Ended without trailers: nothing said it failed.
            Poll::Ready(None) => self.end(tonic::Code::Ok),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<R> Drop for MeasuredBody<R> {
    fn drop(&mut self) {
        self.end(tonic::Code::Cancelled);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::cell::RefCell;
    use std::collections::VecDeque;

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

    thread_local! {
        static RECORDED: RefCell<Vec<tonic::Code>> = const { RefCell::new(Vec::new()) };
    }

    fn remember(_method: &'static str, code: tonic::Code, _took: std::time::Duration) {
        RECORDED.with(|r| r.borrow_mut().push(code));
    }

    fn recorded() -> Vec<tonic::Code> {
        RECORDED.with(|r| r.borrow_mut().drain(..).collect())
    }

    /// An answer's body: these frames, then its end.
    struct Frames(VecDeque<Result<Frame<tonic::codegen::Bytes>, &'static str>>);

    impl Body for Frames {
        type Data = tonic::codegen::Bytes;
        type Error = &'static str;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
            Poll::Ready(self.0.pop_front())
        }
    }

    fn message() -> Result<Frame<tonic::codegen::Bytes>, &'static str> {
        Ok(Frame::data(tonic::codegen::Bytes::from_static(b"message")))
    }

    fn trailers(code: tonic::Code) -> Result<Frame<tonic::codegen::Bytes>, &'static str> {
        let mut headers = http::HeaderMap::new();
        tonic::Status::new(code, "")
            .add_header(&mut headers)
            .unwrap();
        Ok(Frame::trailers(headers))
    }

    /// Answers with `headers_code` in the headers and `frames` in the body,
    /// polls the body `polls` times, drops it and says what was recorded.
    fn answer(
        headers_code: Option<tonic::Code>,
        frames: Vec<Result<Frame<tonic::codegen::Bytes>, &'static str>>,
        polls: usize,
    ) -> Vec<tonic::Code> {
        let call = Call {
            method: "idm.v1.SystemService/Backup",
            started: Instant::now(),
            record: remember,
        };
        let mut response = http::Response::new(Frames(frames.into()));
        if let Some(code) = headers_code {
            tonic::Status::new(code, "")
                .add_header(response.headers_mut())
                .unwrap();
        }
        let mut body = call.answered(response).into_body();
        let mut cx = Context::from_waker(std::task::Waker::noop());
        for _ in 0..polls {
            let _ = Pin::new(&mut body).poll_frame(&mut cx);
        }
        drop(body);
        recorded()
    }

    #[test]
    fn a_stream_that_fails_after_its_first_message_counts_as_its_failure() {
        use tonic::Code;
        let failed = vec![message(), message(), trailers(Code::Internal)];
        assert_eq!(answer(None, failed, 4), [Code::Internal]);
        let fine = vec![message(), trailers(Code::Ok)];
        assert_eq!(answer(None, fine, 3), [Code::Ok]);
        // Trailers only: the failure is in the headers, recorded once.
        assert_eq!(answer(Some(Code::NotFound), vec![], 1), [Code::NotFound]);
        // The client went away after the first message.
        let cut = vec![message(), message(), trailers(Code::Ok)];
        assert_eq!(answer(None, cut, 1), [Code::Cancelled]);
        // The body broke, or ended saying nothing.
        assert_eq!(
            answer(None, vec![message(), Err("reset")], 2),
            [Code::Unknown]
        );
        assert_eq!(answer(None, vec![message()], 2), [Code::Ok]);
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
