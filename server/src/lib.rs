//! idmd, the idm core: managed identities in SurrealDB behind a gRPC API.
//! See ARCHITECTURE.md at the repository root for the map of rooms.

pub mod accounts;
pub mod api;
pub mod backup;
pub mod config;
pub mod connector;
pub mod keys;
pub mod managed;
pub mod request_id;
pub mod retention;
pub mod metrics;
pub mod scheduler;
pub mod script;
pub mod secrets;
pub mod store;
pub mod sync;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use api::auth::TokenRegistry;
use managed::ManagedObjects;
use store::Store;

/// How idmd was asked to run.
#[derive(Clone)]
pub struct Settings {
    pub conf: Option<PathBuf>,
    pub store_url: String,
    pub grpc: SocketAddr,
    /// `--tls-cert` and `--tls-key`; without them the listener is plaintext.
    pub tls: Option<api::tls::TlsFiles>,
    /// Plaintext on a non-loopback address (a TLS-terminating proxy in front).
    pub allow_plaintext: bool,
    pub key_file: PathBuf,
    /// Secret: never printed (see the `Debug` impl).
    pub encryption_key: Option<String>,
    /// Secret: never printed (see the `Debug` impl).
    pub admin_token: Option<String>,
    /// `IDM_ADMIN_PASSWORD`: creates or re-sets `openidm-admin`. Secret:
    /// never printed (see the `Debug` impl).
    pub admin_password: Option<String>,
    /// Failed logins per account name and source before a lock.
    pub login_limits: accounts::LoginLimits,
    /// Session idle timeout and lifetime.
    pub sessions: accounts::SessionPolicy,
    /// How many failed password checks an object and a caller may have.
    pub password_throttle: managed::ThrottleLimits,
    /// `$env` names a document sent over the API may use (`IDM_CONF_ENV_ALLOW`).
    pub conf_env_allow: Vec<String>,
    /// Directories besides the conf directory that files named by documents
    /// sent over the API may be in (`--allow-path`, `IDM_CONF_PATHS`).
    pub allow_paths: Vec<PathBuf>,
    /// How long each kind of history is kept (`--retain-*`).
    pub retention: retention::Retention,
    /// `--metrics`: where Prometheus metrics are served; none by default.
    pub metrics: Option<SocketAddr>,
}

/// By hand, so the key and the admin token never reach a log line.
impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redacted = |secret: &Option<String>| secret.as_ref().map(|_| "<redacted>");
        f.debug_struct("Settings")
            .field("conf", &self.conf)
            .field("store_url", &self.store_url)
            .field("grpc", &self.grpc)
            .field("tls", &self.tls)
            .field("allow_plaintext", &self.allow_plaintext)
            .field("key_file", &self.key_file)
            .field("encryption_key", &redacted(&self.encryption_key))
            .field("admin_token", &redacted(&self.admin_token))
            .field("admin_password", &redacted(&self.admin_password))
            .field("login_limits", &self.login_limits)
            .field("sessions", &self.sessions)
            .field("password_throttle", &self.password_throttle)
            .field("conf_env_allow", &self.conf_env_allow)
            .field("allow_paths", &self.allow_paths)
            .field("retention", &self.retention)
            .field("metrics", &self.metrics)
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Tls(#[from] api::tls::TlsError),
    #[error("conf: {0}")]
    Conf(#[from] config::ConfError),
    #[error("{0}")]
    Store(#[from] store::StoreError),
    #[error("{0}")]
    Secret(#[from] secrets::SecretError),
    #[error("{0}")]
    Key(#[from] keys::KeyError),
    #[error("{0}")]
    Serve(#[from] api::ServeError),
    #[error("scheduler: {0}")]
    Scheduler(#[from] scheduler::SchedulerError),
    #[error("{0}")]
    Account(#[from] accounts::AccountError),
    #[error("{0}")]
    Metrics(#[from] metrics::MetricsError),
}

/// How long in-flight calls get to finish after a shutdown signal; idle
/// client connections do not hold idmd up beyond it.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Starts idmd and serves until `shutdown` resolves.
pub async fn run(
    settings: Settings,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    // How the listener is exposed is settled before anything is opened.
    let identity = settings
        .tls
        .as_ref()
        .map(api::tls::ServerIdentity::load)
        .transpose()?;
    match api::tls::exposure(settings.grpc, identity.is_some(), settings.allow_plaintext)? {
        api::tls::Exposure::Tls => tracing::info!(addr = %settings.grpc, "gRPC over TLS"),
        api::tls::Exposure::PlaintextLoopback => {
            tracing::info!(addr = %settings.grpc, "gRPC in plaintext, on a loopback address only");
        }
        api::tls::Exposure::PlaintextAllowed => tracing::warn!(
            addr = %settings.grpc,
            "gRPC in plaintext on a non-loopback address (--allow-plaintext): \
             tokens and passwords cross the network in clear unless a TLS-terminating proxy is in front"
        ),
    }
    // A port in use stops the start before anything is opened.
    if let Some(addr) = settings.metrics {
        metrics::install(addr)?;
    }
    let conf = config::read(settings.conf.as_deref())?;
    connector::warn_insecure_documents(&conf.documents);
    let store = Store::open(&settings.store_url).await?;
    // Before anything is written: a store sealed under another key stops here.
    let keys = Arc::new(
        keys::KeyManager::open(
            store.clone(),
            &settings.key_file,
            settings.encryption_key.as_deref(),
        )
        .await?,
    );
    let changed = config::apply(&store, &conf, &keys.secrets()).await?;
    let interrupted = store
        .fail_unfinished_runs("idmd stopped during the run")
        .await?;
    if interrupted > 0 {
        tracing::warn!(
            runs = interrupted,
            "reconciliations cut short by the last stop are marked FAILED"
        );
    }
    tracing::info!(
        types = conf.schema.types().count(),
        documents = conf.documents.len(),
        changed,
        "conf loaded"
    );
    let tokens = TokenRegistry::load(store.clone(), settings.admin_token.as_deref()).await?;
    if !tokens.has_bootstrap() {
        tracing::warn!("IDM_ADMIN_TOKEN is not set: only tokens created earlier can call idmd");
    }
    let refresh = tokens.spawn_refresh();
    let accounts = accounts::Accounts::new(
        store.clone(),
        Arc::clone(&tokens),
        settings.login_limits,
        settings.sessions,
    );
    match settings.admin_password.as_deref().filter(|p| !p.is_empty()) {
        Some(password) => accounts.bootstrap_admin(password).await?,
        None => tracing::info!(
            "{} is not set: no password account is made at start",
            accounts::ADMIN_PASSWORD_ENV
        ),
    }
    let objects = ManagedObjects::new(Arc::new(conf.schema), store.clone(), keys.secrets())
        .with_password_throttle(settings.password_throttle);
    // Before anything writes: the sort keys of searchable properties.
    objects.prepare_indexes().await?;
    // Where paths in documents start: a Wren project directory, or the flat conf directory.
    let conf_dir = config::project_dir(settings.conf.as_deref());
    let policy = Arc::new(config::ApiDocumentPolicy::new(
        &conf_dir,
        &settings.conf_env_allow,
        &settings.allow_paths,
    ));
    let reconciler = sync::recon::Reconciler::new(store.clone(), objects.clone(), conf_dir.clone());
    let implicit = Arc::new(
        sync::outbox::ImplicitSync::start(store.clone(), objects.clone(), conf_dir.clone()).await?,
    );
    // Unique per process: ticks and run leases are claimed in its name.
    let node = format!(
        "idmd-{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    );
    let scheduler = scheduler::Scheduler::start(
        store.clone(),
        objects.clone(),
        reconciler.clone(),
        conf_dir.clone(),
        node,
    )
    .await?;
    let core = api::Core {
        store: store.clone(),
        objects,
        tokens,
        accounts,
        keys,
        reconciler: reconciler.clone(),
        implicit: Arc::clone(&implicit),
        scheduler: scheduler.clone(),
        conf_dir,
        policy,
    };
    let (stop, stopped) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop.send(true);
    });
    // History past its age goes in the background (retention.rs).
    let mut pruner = tokio::spawn(retention::run(
        store.clone(),
        settings.retention,
        stopped.clone(),
    ));
    // The outbox gauges; it ends when `stop` turns true.
    let sampler = settings
        .metrics
        .map(|_| tokio::spawn(metrics::run_outbox_sampler(store.clone(), stopped.clone())));
    let drain = wait_for_stop(stopped.clone());
    let deadline = async move {
        wait_for_stop(stopped).await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        served = api::serve(core, settings.grpc, identity.as_ref(), drain) => served?,
        () = deadline => tracing::warn!("connections still open after {SHUTDOWN_GRACE:?}; stopping anyway"),
    }
    // No new ticks; then runs still going end CANCELED rather than be cut
    // off mid-batch.
    scheduler.shutdown();
    reconciler.shutdown(SHUTDOWN_GRACE).await;
    // Deliveries in hand finish; the rest wait in the outbox for the next start.
    implicit.shutdown(SHUTDOWN_GRACE).await;
    // Every store handle goes before the store closes (it closes with the last).
    drop(reconciler);
    drop(implicit);
    drop(scheduler);
    // It stops at its next batch; its store handle must go before the close.
    if tokio::time::timeout(SHUTDOWN_GRACE, &mut pruner)
        .await
        .is_err()
    {
        pruner.abort();
        let _ = pruner.await;
    }
    refresh.abort();
    let _ = refresh.await;
    if let Some(sampler) = sampler {
        let _ = sampler.await;
    }
    store.close(SHUTDOWN_GRACE).await;
    tracing::info!("idmd stopped");
    Ok(())
}

async fn wait_for_stop(mut stopped: watch::Receiver<bool>) {
    let _ = stopped.wait_for(|stop| *stop).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_debug_never_prints_the_key_the_admin_token_or_password() {
        let settings = Settings {
            conf: None,
            store_url: "mem://".into(),
            grpc: SocketAddr::from(([127, 0, 0, 1], 50051)),
            tls: Some(api::tls::TlsFiles {
                cert: PathBuf::from("tls/idmd.crt"),
                key: PathBuf::from("tls/idmd.key"),
            }),
            allow_plaintext: false,
            key_file: PathBuf::from("data/idm.key"),
            encryption_key: Some("c2VjcmV0LWtleS1ieXRlcw==".into()),
            admin_token: Some("admin-s3cr3t".into()),
            admin_password: Some("Pa55word-s3cr3t".into()),
            login_limits: accounts::LoginLimits::default(),
            sessions: accounts::SessionPolicy::default(),
            password_throttle: managed::ThrottleLimits::default(),
            conf_env_allow: Vec::new(),
            allow_paths: Vec::new(),
            retention: retention::Retention::default(),
            metrics: None,
        };
        for shown in [format!("{settings:?}"), format!("{settings:#?}")] {
            assert!(!shown.contains("c2VjcmV0"), "{shown}");
            assert!(!shown.contains("s3cr3t"), "{shown}");
            assert!(!shown.contains("Pa55word"), "{shown}");
            assert!(shown.contains("<redacted>"), "{shown}");
            assert!(shown.contains("mem://"), "{shown}");
            assert!(shown.contains("tls/idmd.key"), "{shown}");
        }
    }
}
