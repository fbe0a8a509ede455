//! The gRPC front: tonic services, the auth interceptor, health and reflection.
//! Handlers only translate; the domain lives in `managed/` and `store/`.

mod accounts;
mod audit;
pub mod auth;
mod bounded;
mod config;
mod error;
mod keys;
mod links;
mod login;
mod measured;
mod objects;
mod paging;
mod recon;
pub mod request_id;
mod schedules;
mod sessions;
mod sync;
mod system;
pub mod tls;
mod tokens;
pub mod trail;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use idm_proto::v1::account_service_server::AccountServiceServer;
use idm_proto::v1::audit_service_server::AuditServiceServer;
use idm_proto::v1::auth_service_server::AuthServiceServer;
use idm_proto::v1::config_service_server::ConfigServiceServer;
use idm_proto::v1::key_service_server::KeyServiceServer;
use idm_proto::v1::object_service_server::ObjectServiceServer;
use idm_proto::v1::recon_service_server::ReconServiceServer;
use idm_proto::v1::schedule_service_server::ScheduleServiceServer;
use idm_proto::v1::sync_service_server::SyncServiceServer;
use idm_proto::v1::system_service_server::SystemServiceServer;
use idm_proto::v1::token_service_server::TokenServiceServer;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Server;

use crate::keys::KeyManager;
use crate::managed::ManagedObjects;
use crate::scheduler::Scheduler;
use crate::store::Store;
use crate::sync::outbox::ImplicitSync;
use crate::sync::recon::Reconciler;
use auth::{Authenticate, OpenLogin, TokenRegistry};

/// Everything the services need.
pub struct Core {
    pub store: Store,
    pub objects: ManagedObjects,
    pub tokens: Arc<TokenRegistry>,
    /// People's accounts and logins.
    pub accounts: crate::accounts::Accounts,
    /// The encryption key: fingerprint, rotation.
    pub keys: Arc<KeyManager>,
    pub reconciler: Reconciler,
    /// Implicit sync, told when mappings change.
    pub implicit: Arc<ImplicitSync>,
    pub scheduler: Scheduler,
    /// The conf directory (relative paths in conf documents start here).
    pub conf_dir: std::path::PathBuf,
    /// What documents sent over the API may refer to.
    pub policy: Arc<crate::config::ApiDocumentPolicy>,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("TLS on the gRPC listener: {0}")]
    Tls(tonic::transport::Error),
    #[error("reflection descriptors: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("gRPC server on {addr}: {source}")]
    Transport {
        addr: SocketAddr,
        source: tonic::transport::Error,
    },
}

/// Serves until `shutdown` resolves, then drains in-flight calls. With an
/// `identity`, every connection is TLS (health and reflection included).
/// `health_service` answers `grpc.health.v1.Health` (see `health.rs`).
pub async fn serve(
    core: Core,
    addr: SocketAddr,
    identity: Option<&tls::ServerIdentity>,
    health_service: tonic_health::pb::health_server::HealthServer<
        impl tonic_health::pb::health_server::Health,
    >,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let auth = Authenticate(Arc::clone(&core.tokens));
    // Health's own descriptors too, so reflection lists grpc.health.v1.Health.
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(idm_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(idm_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;

    let objects = ObjectServiceServer::new(objects::ObjectApi {
        objects: core.objects.clone(),
    });
    let audit = AuditServiceServer::new(audit::AuditApi {
        store: core.store.clone(),
    });
    let token_api = TokenServiceServer::new(tokens::TokenApi {
        registry: Arc::clone(&core.tokens),
    });
    let config = ConfigServiceServer::new(config::ConfigApi {
        objects: core.objects.clone(),
        conf_dir: core.conf_dir.clone(),
        store: core.store.clone(),
        implicit: Arc::clone(&core.implicit),
        policy: Arc::clone(&core.policy),
    });
    let key_api = KeyServiceServer::new(keys::KeyApi {
        keys: Arc::clone(&core.keys),
    });
    let recon = ReconServiceServer::new(recon::ReconApi {
        reconciler: core.reconciler.clone(),
    });

    let sync = SyncServiceServer::new(sync::SyncApi {
        store: core.store.clone(),
    });

    let system = SystemServiceServer::new(system::SystemApi {
        store: core.store.clone(),
        objects: core.objects.clone(),
        conf_dir: core.conf_dir.clone(),
    });

    let schedules = ScheduleServiceServer::new(schedules::ScheduleApi {
        scheduler: core.scheduler.clone(),
        policy: Arc::clone(&core.policy),
    });

    let login = AuthServiceServer::new(login::AuthApi {
        accounts: core.accounts.clone(),
        registry: Arc::clone(&core.tokens),
    });
    let account_api = AccountServiceServer::new(accounts::AccountApi {
        accounts: core.accounts.clone(),
    });

    let mut server = Server::builder();
    if let Some(identity) = identity {
        server = server
            .tls_config(identity.server_config())
            .map_err(ServeError::Tls)?;
    }
    tracing::info!(%addr, tls = identity.is_some(), "idmd serving gRPC");
    server
        // `request_id` is recorded by the RequestIdLayer, which decides it.
        .trace_fn(|request| {
            tracing::info_span!(
                "grpc",
                path = %request.uri().path(),
                request_id = tracing::field::Empty
            )
        })
        .layer(request_id::RequestIdLayer)
        .layer(measured::MeasuredLayer)
        .layer(bounded::BoundedStatusLayer)
        .layer(trail::AuditLayer {
            store: core.store.clone(),
        })
        // Reads bearers this node has not seen (made on another node) before
        // the interceptor checks them.
        .layer(auth::LookupLayer(Arc::clone(&core.tokens)))
        .add_service(health_service)
        .add_service(InterceptedService::new(reflection_v1, auth.clone()))
        .add_service(InterceptedService::new(reflection_v1alpha, auth.clone()))
        .add_service(InterceptedService::new(objects, auth.clone()))
        .add_service(InterceptedService::new(audit, auth.clone()))
        .add_service(InterceptedService::new(token_api, auth.clone()))
        .add_service(InterceptedService::new(key_api, auth.clone()))
        .add_service(InterceptedService::new(config, auth.clone()))
        .add_service(InterceptedService::new(recon, auth.clone()))
        .add_service(InterceptedService::new(sync, auth.clone()))
        .add_service(InterceptedService::new(schedules, auth.clone()))
        .add_service(InterceptedService::new(system, auth.clone()))
        .add_service(OpenLogin(InterceptedService::new(login, auth.clone())))
        .add_service(InterceptedService::new(account_api, auth))
        .serve_with_shutdown(addr, shutdown)
        .await
        .map_err(|source| ServeError::Transport { addr, source })
}

/// `prefix/<name>` or `<name>` → `<name>`; INVALID_ARGUMENT for anything else.
pub(crate) fn short_name<'a>(name: &'a str, prefix: &str) -> Result<&'a str, tonic::Status> {
    let short = name.strip_prefix(prefix).unwrap_or(name);
    if short.is_empty() || short.contains('/') {
        return Err(tonic::Status::invalid_argument(format!(
            "\"{name}\" is not a name such as {prefix}<name>"
        )));
    }
    Ok(short)
}

/// A stored RFC 3339 timestamp as a protobuf `Timestamp`.
pub fn timestamp(text: &str) -> Option<prost_types::Timestamp> {
    text.parse().ok()
}
