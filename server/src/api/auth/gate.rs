//! The tower layers in front of every service: [`LookupLayer`] reads a
//! bearer this node has not seen from the store, [`OpenLogin`] lets Login
//! through without one, and [`Authenticate`] (the interceptor) checks the
//! bearer against the [`TokenRegistry`] and puts the [`super::Caller`] on the
//! request.

use std::sync::Arc;

use tonic::{Request, Status};

use super::{Lookup, TokenRegistry};

/// Marks a request whose bearer this node could not read from the store
/// (rate limit spent, store error): an unknown bearer is then refused as
/// UNAVAILABLE, not as invalid.
#[derive(Clone, Copy)]
struct Unconfirmed;

/// Reads a bearer this node does not know from the store (by id, rate
/// limited: [`TokenRegistry::wants_lookup`]) before the interceptor checks it
/// from memory.
#[derive(Clone)]
pub struct LookupLayer(pub Arc<TokenRegistry>);

impl<S> tower_layer::Layer<S> for LookupLayer {
    type Service = LookUp<S>;

    fn layer(&self, inner: S) -> Self::Service {
        LookUp {
            inner,
            registry: Arc::clone(&self.0),
        }
    }
}

#[derive(Clone)]
pub struct LookUp<S> {
    inner: S,
    registry: Arc<TokenRegistry>,
}

type BoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'static>>;

impl<S, B> tonic::codegen::Service<tonic::codegen::http::Request<B>> for LookUp<S>
where
    S: tonic::codegen::Service<tonic::codegen::http::Request<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: tonic::codegen::http::Request<B>) -> Self::Future {
        let wanted = request
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(bearer)
            .and_then(|secret| self.registry.wants_lookup(secret));
        let Some(tid) = wanted else {
            return Box::pin(self.inner.call(request));
        };
        // The ready service goes with this call; a clone waits for the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let registry = Arc::clone(&self.registry);
        Box::pin(async move {
            match registry.look_up(&tid).await {
                Lookup::Found | Lookup::Missing => {}
                Lookup::Skipped | Lookup::Failed => {
                    request.extensions_mut().insert(Unconfirmed);
                }
            }
            inner.call(request).await
        })
    }
}

/// `Bearer <secret>` → `<secret>`.
fn bearer(value: &str) -> Option<&str> {
    value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
}

/// The one RPC callable without a bearer: logging in is how a person gets one.
pub const OPEN_METHOD: &str = "/idm.v1.AuthService/Login";

/// Marks a request to [`OPEN_METHOD`] for the interceptor. Set by
/// [`OpenLogin`] from the request path; a client cannot set extensions.
#[derive(Clone, Copy)]
struct OpenCall;

/// Wraps the (intercepted) AuthService so that Login passes the interceptor
/// without a bearer; its other methods need one like every other call.
#[derive(Clone)]
pub struct OpenLogin<S>(pub S);

impl<S: tonic::server::NamedService> tonic::server::NamedService for OpenLogin<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> tonic::codegen::Service<tonic::codegen::http::Request<B>> for OpenLogin<S>
where
    S: tonic::codegen::Service<tonic::codegen::http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, mut request: tonic::codegen::http::Request<B>) -> Self::Future {
        if request.uri().path() == OPEN_METHOD {
            request.extensions_mut().insert(OpenCall);
        }
        self.0.call(request)
    }
}

/// The tonic interceptor: every call but health and Login carries a valid
/// bearer token.
#[derive(Clone)]
pub struct Authenticate(pub Arc<TokenRegistry>);

impl tonic::service::Interceptor for Authenticate {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if request.extensions().get::<OpenCall>().is_some() {
            return Ok(request);
        }
        let header = request
            .metadata()
            .get("authorization")
            .ok_or_else(|| Status::unauthenticated("missing authorization: Bearer <token>"))?;
        let value = header
            .to_str()
            .map_err(|_| Status::unauthenticated("malformed authorization header"))?;
        let secret = bearer(value)
            .ok_or_else(|| Status::unauthenticated("authorization must be \"Bearer <token>\""))?;
        let caller = match self.0.authenticate(secret) {
            Err(refused)
                if refused.code() == tonic::Code::Unauthenticated
                    && request.extensions().get::<Unconfirmed>().is_some() =>
            {
                return Err(Status::unavailable(
                    "idmd cannot check this bearer token now; retry",
                ));
            }
            answer => answer?,
        };
        crate::api::trail::actor(request.extensions(), caller.actor());
        request.extensions_mut().insert(caller);
        Ok(request)
    }
}
