//! The gateway's only way to the data: idmd's `ObjectService` over gRPC, with
//! the SCIM client's bearer token passed through so the core alone decides
//! what the caller may do.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use idm_proto::v1::object_service_client::ObjectServiceClient;
use idm_proto::v1::token_service_client::TokenServiceClient;
use idm_proto::v1::{
    CountObjectsRequest, CreateObjectRequest, DeleteObjectRequest, GetCallerRequest,
    GetObjectRequest, ManagedObject, QueryObjectsRequest, QueryObjectsResponse,
    ReplaceObjectRequest,
};
use serde_json::{Map, Value};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

use crate::bearer::{VerifiedBearers, fingerprint};
use crate::scim::error::ScimError;

#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error("--core: {0}")]
    Endpoint(#[from] idm_proto::dial::DialError),
}

tokio::task_local! {
    /// The id of the HTTP request being served (set by the middleware in
    /// `http/mod.rs`), sent with every call to the core.
    static REQUEST_ID: String;
}

/// Runs `work` (one HTTP request's handling) with `id` as the request id
/// every call to the core made within it carries (`x-request-id`).
pub async fn with_request_id<F: Future>(id: String, work: F) -> F::Output {
    REQUEST_ID.scope(id, work).await
}

/// Puts the request id of the HTTP request being served (if any) on every
/// call to the core as `x-request-id` metadata: one place, so no handler
/// has to remember it. A call made from a spawned task has none, and the
/// core makes its own.
#[derive(Clone, Copy, Default)]
pub struct TagRequestId;

impl Interceptor for TagRequestId {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let value = REQUEST_ID
            .try_with(|id| MetadataValue::<Ascii>::try_from(id.as_str()).ok())
            .ok()
            .flatten();
        if let Some(value) = value {
            request
                .metadata_mut()
                .insert(idm_proto::request_id::METADATA_KEY, value);
        }
        Ok(request)
    }
}

/// The connection to the core every client uses: the one HTTP/2 channel,
/// each call tagged with the request id.
pub type CoreChannel = InterceptedService<Channel, TagRequestId>;

/// A cheap handle: clones share one HTTP/2 connection.
#[derive(Clone)]
pub struct Core {
    channel: CoreChannel,
    objects: ObjectServiceClient<CoreChannel>,
    tokens: TokenServiceClient<CoreChannel>,
    verified: Arc<VerifiedBearers>,
}

/// A bearer token from the SCIM request, forwarded as is.
#[derive(Clone)]
pub struct Bearer(pub String);

impl Core {
    /// Connects lazily: the gateway starts (and answers 503) while idmd is down.
    /// `https://` endpoints are verified against the system's roots plus
    /// `ca_pem` (`--core-ca`).
    pub fn connect(
        endpoint: &str,
        ca_pem: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<Self, CoreError> {
        let channel = idm_proto::dial::endpoint(endpoint, ca_pem)?
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .connect_lazy();
        let channel = InterceptedService::new(channel, TagRequestId);
        Ok(Core {
            channel: channel.clone(),
            objects: ObjectServiceClient::new(channel.clone()),
            tokens: TokenServiceClient::new(channel),
            verified: Arc::new(VerifiedBearers::default()),
        })
    }

    /// Whether the core accepts this bearer (`TokenService.GetCaller`),
    /// remembered for a few seconds after it did: called before anything
    /// else of a request is read, so a request without a valid token costs
    /// the gateway no parsing.
    pub async fn check_bearer(&self, bearer: &Bearer) -> Result<(), ScimError> {
        self.verify_bearer(bearer).await.map_err(from_status)
    }

    /// [`Core::check_bearer`] with the core's own status, for front ends
    /// that map it themselves (`rest/`).
    pub async fn verify_bearer(&self, bearer: &Bearer) -> Result<(), Status> {
        let key = fingerprint(&bearer.0);
        if self.verified.is_fresh(&key) {
            return Ok(());
        }
        let request = Self::authorized(bearer, GetCallerRequest {})?;
        self.tokens.clone().get_caller(request).await?;
        self.verified.remember(key);
        Ok(())
    }

    /// The shared connection to the core, for any service's client
    /// (`ReconServiceClient::new(core.channel())`): clients are cheap and
    /// clones multiplex over the one HTTP/2 connection. Every call through
    /// it carries the request id (see [`TagRequestId`]).
    pub fn channel(&self) -> CoreChannel {
        self.channel.clone()
    }

    /// A request carrying `bearer` as `authorization` metadata (marked
    /// sensitive: never printed by a Debug of the request).
    /// UNAUTHENTICATED if the bearer is not ASCII.
    pub fn authorized<T>(bearer: &Bearer, message: T) -> Result<Request<T>, Status> {
        let mut request = Request::new(message);
        let mut value: MetadataValue<Ascii> = format!("Bearer {}", bearer.0)
            .parse()
            .map_err(|_| Status::unauthenticated("the bearer token is not valid ASCII"))?;
        value.set_sensitive(true);
        request.metadata_mut().insert("authorization", value);
        Ok(request)
    }

    fn request<T>(bearer: &Bearer, message: T) -> Result<Request<T>, ScimError> {
        Self::authorized(bearer, message).map_err(from_status)
    }

    pub async fn get(&self, bearer: &Bearer, name: &str) -> Result<ManagedObject, ScimError> {
        let request = Self::request(
            bearer,
            GetObjectRequest {
                name: name.to_string(),
                read_mask: None,
            },
        )?;
        Ok(self
            .objects
            .clone()
            .get_object(request)
            .await
            .map_err(from_status)?
            .into_inner())
    }

    pub async fn create(
        &self,
        bearer: &Bearer,
        collection: &str,
        attributes: &Map<String, Value>,
    ) -> Result<ManagedObject, ScimError> {
        let request = Self::request(
            bearer,
            CreateObjectRequest {
                parent: collection.to_string(),
                object_id: String::new(),
                attributes: Some(idm_proto::json::to_proto_struct(attributes)),
            },
        )?;
        Ok(self
            .objects
            .clone()
            .create_object(request)
            .await
            .map_err(from_status)?
            .into_inner())
    }

    pub async fn replace(
        &self,
        bearer: &Bearer,
        name: &str,
        attributes: &Map<String, Value>,
        expected_revision: i64,
    ) -> Result<ManagedObject, ScimError> {
        let request = Self::request(
            bearer,
            ReplaceObjectRequest {
                name: name.to_string(),
                attributes: Some(idm_proto::json::to_proto_struct(attributes)),
                expected_revision: Some(expected_revision),
            },
        )?;
        Ok(self
            .objects
            .clone()
            .replace_object(request)
            .await
            .map_err(from_status)?
            .into_inner())
    }

    /// `false` if there was nothing to delete.
    pub async fn delete(
        &self,
        bearer: &Bearer,
        name: &str,
        expected_revision: Option<i64>,
    ) -> Result<bool, ScimError> {
        let request = Self::request(
            bearer,
            DeleteObjectRequest {
                name: name.to_string(),
                expected_revision,
            },
        )?;
        Ok(self
            .objects
            .clone()
            .delete_object(request)
            .await
            .map_err(from_status)?
            .into_inner()
            .existed)
    }

    pub async fn query(
        &self,
        bearer: &Bearer,
        query: QueryObjectsRequest,
    ) -> Result<QueryObjectsResponse, ScimError> {
        let request = Self::request(bearer, query)?;
        Ok(self
            .objects
            .clone()
            .query_objects(request)
            .await
            .map_err(from_status)?
            .into_inner())
    }

    pub async fn count(
        &self,
        bearer: &Bearer,
        collection: &str,
        filter: &str,
    ) -> Result<u64, ScimError> {
        let request = Self::request(
            bearer,
            CountObjectsRequest {
                parent: collection.to_string(),
                filter: filter.to_string(),
            },
        )?;
        let count = self
            .objects
            .clone()
            .count_objects(request)
            .await
            .map_err(from_status)?
            .into_inner()
            .count;
        Ok(u64::try_from(count).unwrap_or_default())
    }
}

/// Whether a failed call means the core could not be reached: a connection
/// that broke under a call comes back as Cancelled, or as Unknown with the
/// transport error as its source. Logs why when it is.
pub fn is_unreachable(status: &Status) -> bool {
    let unreachable = match status.code() {
        Code::Unavailable | Code::Cancelled => true,
        Code::Unknown => std::error::Error::source(status).is_some(),
        _ => false,
    };
    if unreachable {
        // The reply says only that; the log says why (refused, or a
        // certificate that did not verify).
        tracing::warn!(reason = %idm_proto::dial::reason(status), "the idm core is unreachable");
    }
    unreachable
}

/// The core's verdict in SCIM's terms.
pub fn from_status(status: Status) -> ScimError {
    let message = status.message().to_string();
    if is_unreachable(&status) {
        return ScimError::unavailable(format!("the idm core is unavailable: {message}"));
    }
    match status.code() {
        Code::NotFound => ScimError::not_found(message),
        Code::AlreadyExists => ScimError::uniqueness(message),
        Code::InvalidArgument | Code::OutOfRange => ScimError::invalid_value(message),
        Code::FailedPrecondition | Code::Aborted => ScimError::precondition_failed(message),
        Code::Unauthenticated => ScimError::unauthorized(message),
        Code::PermissionDenied => ScimError::forbidden(message),
        Code::ResourceExhausted => ScimError::new(429, None, message),
        Code::DeadlineExceeded => ScimError::new(504, None, "the idm core did not answer in time"),
        Code::Unimplemented => ScimError::not_implemented(message),
        _ => {
            tracing::error!(code = ?status.code(), %message, "core call failed");
            ScimError::internal("the idm core failed; see idm-gateway's log")
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_forwarded_bearer_is_sensitive_and_never_printed() {
        let request = Core::request(&Bearer("s3cr3t-token".into()), ()).unwrap();
        let header = request.metadata().get("authorization").unwrap();
        assert!(header.is_sensitive());
        let printed = format!("{request:?}");
        assert!(!printed.contains("s3cr3t-token"), "{printed}");
    }
}
