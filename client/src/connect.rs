//! The gRPC channel to idmd and the interceptor that puts the bearer token on
//! every call.

use idm_proto::v1::account_service_client::AccountServiceClient;
use idm_proto::v1::audit_service_client::AuditServiceClient;
use idm_proto::v1::auth_service_client::AuthServiceClient;
use idm_proto::v1::config_service_client::ConfigServiceClient;
use idm_proto::v1::key_service_client::KeyServiceClient;
use idm_proto::v1::object_service_client::ObjectServiceClient;
use idm_proto::v1::recon_service_client::ReconServiceClient;
use idm_proto::v1::schedule_service_client::ScheduleServiceClient;
use idm_proto::v1::sync_service_client::SyncServiceClient;
use idm_proto::v1::system_service_client::SystemServiceClient;
use idm_proto::v1::token_service_client::TokenServiceClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};

use crate::output::{CliError, Format};

/// Replies can be large (a page of 1000 objects); tonic's default is 4 MiB.
const MAX_REPLY_BYTES: usize = 64 * 1024 * 1024;

/// What every command needs: where idmd is, who we are, how to print.
pub struct Context {
    pub endpoint: String,
    token: Option<String>,
    pub format: Format,
    /// `--ca`/`IDM_CA`, read: extra roots for https:// endpoints.
    ca: Option<Vec<u8>>,
    /// Sent as `x-request-id` with every call of this invocation, so one
    /// command can be found in idmd's log and audit trail: `IDM_REQUEST_ID`
    /// if set (and plain: 1–64 of `[A-Za-z0-9._:-]`), else a new UUIDv7.
    request_id: String,
}

/// Names the calls of one idmctl run (see [`Context`]'s `request_id`).
pub const REQUEST_ID_ENV: &str = "IDM_REQUEST_ID";

/// A CA file is read whole; a bundle of roots fits well within this.
const MAX_CA_BYTES: u64 = 1024 * 1024;

/// Reads `--ca` before any dialing; a file that cannot be read is a usage
/// error naming it.
pub fn read_ca(path: &std::path::Path) -> Result<Vec<u8>, CliError> {
    use std::io::Read;
    let unreadable =
        |e: std::io::Error| CliError::input(format!("--ca {}: cannot read: {e}", path.display()));
    let mut pem = Vec::new();
    std::fs::File::open(path)
        .map_err(unreadable)?
        .take(MAX_CA_BYTES + 1)
        .read_to_end(&mut pem)
        .map_err(unreadable)?;
    if pem.len() as u64 > MAX_CA_BYTES {
        return Err(CliError::input(format!(
            "--ca {}: larger than 1 MiB; not a PEM CA certificate",
            path.display()
        )));
    }
    if !pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") {
        return Err(CliError::input(format!(
            "--ca {}: no PEM CERTIFICATE block in it",
            path.display()
        )));
    }
    Ok(pem)
}

/// Whether a connection failed on the server's certificate (rustls' reason).
pub fn is_certificate_error(reason: &str) -> bool {
    reason.contains("certificate")
}

impl Context {
    pub fn new(endpoint: String, token: Option<String>, format: Format) -> Self {
        Self {
            endpoint,
            token: token.filter(|t| !t.is_empty()),
            format,
            ca: None,
            request_id: idm_proto::request_id::accept_or(
                std::env::var(REQUEST_ID_ENV).ok().as_deref(),
                || uuid::Uuid::now_v7().to_string(),
            ),
        }
    }

    pub fn with_ca(mut self, ca: Option<Vec<u8>>) -> Self {
        self.ca = ca;
        self
    }

    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// Dials idmd. Commands read their local input first, so a bad `--data`
    /// fails before any network traffic.
    pub async fn connect(&self) -> Result<Connection, CliError> {
        let auth = BearerAuth::new(self.token.as_deref(), &self.request_id)?;
        let channel = endpoint(&self.endpoint, self.ca.as_deref())?
            .connect()
            .await
            .map_err(|e| CliError::Connect {
                endpoint: self.endpoint.clone(),
                reason: idm_proto::dial::reason(&e),
            })?;
        Ok(Connection { channel, auth })
    }
}

/// Parses the endpoint URL; `host:port` alone means `http://host:port`.
fn endpoint(url: &str, ca: Option<&[u8]>) -> Result<Endpoint, CliError> {
    idm_proto::dial::endpoint(url, ca).map_err(|e| CliError::input(e.to_string()))
}

/// Adds `authorization: Bearer <token>` to every request when there is a token.
/// Without one the call still goes out: the server decides. Adds the run's
/// `x-request-id` too.
#[derive(Clone)]
pub struct BearerAuth(Option<MetadataValue<Ascii>>, Option<MetadataValue<Ascii>>);

impl BearerAuth {
    fn new(token: Option<&str>, request_id: &str) -> Result<Self, CliError> {
        let value = match token {
            None => None,
            Some(token) => {
                // The error would quote the value; say what is wrong without it.
                let mut value =
                    MetadataValue::try_from(format!("Bearer {token}")).map_err(|_| {
                        CliError::input("the token has characters a header cannot carry")
                    })?;
                value.set_sensitive(true);
                Some(value)
            }
        };
        Ok(Self(value, MetadataValue::try_from(request_id).ok()))
    }
}

impl Interceptor for BearerAuth {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        if let Some(id) = &self.1 {
            request
                .metadata_mut()
                .insert(idm_proto::request_id::METADATA_KEY, id.clone());
        }
        Ok(request)
    }
}

pub type AuthChannel = InterceptedService<Channel, BearerAuth>;

/// An open channel; hands out authenticated clients.
pub struct Connection {
    channel: Channel,
    auth: BearerAuth,
}

impl Connection {
    pub fn objects(&self) -> ObjectServiceClient<AuthChannel> {
        ObjectServiceClient::with_interceptor(self.channel.clone(), self.auth.clone())
            .max_decoding_message_size(MAX_REPLY_BYTES)
    }

    pub fn audit(&self) -> AuditServiceClient<AuthChannel> {
        AuditServiceClient::with_interceptor(self.channel.clone(), self.auth.clone())
            .max_decoding_message_size(MAX_REPLY_BYTES)
    }

    pub fn tokens(&self) -> TokenServiceClient<AuthChannel> {
        TokenServiceClient::with_interceptor(self.channel.clone(), self.auth.clone())
    }

    pub fn auth(&self) -> AuthServiceClient<AuthChannel> {
        AuthServiceClient::with_interceptor(self.channel.clone(), self.auth.clone())
    }

    pub fn accounts(&self) -> AccountServiceClient<AuthChannel> {
        AccountServiceClient::with_interceptor(self.channel.clone(), self.auth.clone())
    }

    pub fn keys(&self) -> KeyServiceClient<AuthChannel> {
        KeyServiceClient::with_interceptor(self.channel.clone(), self.auth.clone())
    }

    pub fn recon(&self) -> ReconServiceClient<AuthChannel> {
        ReconServiceClient::with_interceptor(self.channel.clone(), self.auth.clone())
            .max_decoding_message_size(MAX_REPLY_BYTES)
    }

    pub fn sync(&self) -> SyncServiceClient<AuthChannel> {
        SyncServiceClient::with_interceptor(self.channel.clone(), self.auth.clone())
            .max_decoding_message_size(MAX_REPLY_BYTES)
    }

    pub fn schedules(&self) -> ScheduleServiceClient<AuthChannel> {
        ScheduleServiceClient::with_interceptor(self.channel.clone(), self.auth.clone())
            .max_decoding_message_size(MAX_REPLY_BYTES)
    }

    pub fn system(&self) -> SystemServiceClient<AuthChannel> {
        SystemServiceClient::with_interceptor(self.channel.clone(), self.auth.clone())
    }

    pub fn config(&self) -> ConfigServiceClient<AuthChannel> {
        ConfigServiceClient::with_interceptor(self.channel.clone(), self.auth.clone())
            .max_decoding_message_size(MAX_REPLY_BYTES)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn bearer_header_is_added_only_with_a_token() {
        let mut auth = BearerAuth::new(Some("s3cret"), "run-1").unwrap();
        let request = auth.call(Request::new(())).unwrap();
        assert_eq!(
            request.metadata().get("authorization").unwrap(),
            "Bearer s3cret"
        );
        assert_eq!(request.metadata().get("x-request-id").unwrap(), "run-1");
        let mut none = BearerAuth::new(None, "run-2").unwrap();
        let request = none.call(Request::new(())).unwrap();
        assert!(request.metadata().get("authorization").is_none());
    }

    #[test]
    fn endpoints_default_to_http() {
        assert!(endpoint("127.0.0.1:50051", None).is_ok());
        assert!(endpoint("http://idm.example:50051", None).is_ok());
        assert!(endpoint("https://idm.example:50051", None).is_ok());
        assert!(endpoint("ftp://idm.example", None).is_err());
    }
}
