//! idmd, the idm core: managed identities in SurrealDB behind a gRPC API.
//! See ARCHITECTURE.md at the repository root for the map of rooms.

pub mod accounts;
pub mod api;
pub mod backup;
pub mod conf_watch;
pub mod config;
pub mod connector;
pub mod hashed_ids;
pub mod health;
pub mod keys;
pub mod managed;
pub mod metrics;
pub mod request_id;
pub mod retention;
pub mod scheduler;
#[cfg(test)]
pub(crate) mod scratch;
pub mod script;
pub mod secrets;
pub mod store;
pub mod supervise;
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
    /// `--store-memory`: what an embedded SurrealKV store may keep in memory.
    pub store_memory: store::StoreMemory,
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
            .field("store_memory", &self.store_memory)
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

/// The whole shutdown, from the signal to the store closed: in-flight calls,
/// scheduled runs, the outbox batch in hand and the store's close share this
/// one deadline (each step gets what is left); idle client connections do
/// not hold idmd up beyond it.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// The last part of the grace, kept for the store's close: the steps before
/// it end this much before the deadline, so a slow drain never leaves the
/// store no time to close cleanly.
const STORE_CLOSE_RESERVE: Duration = Duration::from_secs(1);

/// What an execution cut short by a stop or a crash says.
const STOPPED_DURING_RUN: &str = scheduler::runtime::STOPPED;

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
    let store = Store::open_with(&settings.store_url, settings.store_memory).await?;
    // Before anything is written: a store sealed under another key stops here.
    let keys = Arc::new(
        keys::KeyManager::open(
            store.clone(),
            &settings.key_file,
            settings.encryption_key.as_deref(),
        )
        .await?,
    );
    // A node without `--conf` runs what the store holds (applying the
    // empty conf would delete the file documents another node applied).
    let changed = match settings.conf {
        Some(_) => config::apply(&store, &conf, &keys.secrets()).await?,
        None => 0,
    };
    // Runs and executions a stop or a crash cut short. An embedded store
    // has one process: all that is unfinished at its start was cut short.
    // On a shared store, only those whose node's heartbeat expired; other
    // nodes' live runs stay, and a supervised sweep below goes on looking.
    let embedded = is_embedded(&settings.store_url);
    let (interrupted, cut_short) = if embedded {
        (
            store.fail_unfinished_runs(STOPPED_DURING_RUN).await?,
            store.fail_unfinished_executions(STOPPED_DURING_RUN).await?,
        )
    } else {
        (
            store.fail_expired_runs(sync::recon::NODE_STOPPED).await?,
            store.fail_expired_executions(STOPPED_DURING_RUN).await?,
        )
    };
    if interrupted > 0 {
        tracing::warn!(
            runs = interrupted,
            "reconciliations cut short by the last stop are marked FAILED"
        );
    }
    if cut_short > 0 {
        tracing::warn!(
            executions = cut_short,
            "scheduled runs cut short by the last stop are marked FAILED"
        );
    }
    let (health, health_service) = health::Health::new().await;
    // Background tasks stop when this turns true (after the calls drained).
    let (stop_tasks, tasks_stopped) = watch::channel(false);
    let probe = {
        let (store, for_health) = (store.clone(), health.clone());
        let stopped = tasks_stopped.clone();
        supervise::spawn(
            supervise::Task::new("store-probe", Some(health::STORE)),
            &health,
            tasks_stopped.clone(),
            move || health::probe_store(store.clone(), for_health.clone(), stopped.clone()),
        )
    };
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
    let refresh = {
        let (tokens, stopped, for_tokens) =
            (Arc::clone(&tokens), tasks_stopped.clone(), health.clone());
        supervise::spawn(
            supervise::Task::new("token-refresh", Some(health::TOKENS)),
            &health,
            tasks_stopped.clone(),
            move || Arc::clone(&tokens).run_poll(for_tokens.clone(), stopped.clone()),
        )
    };
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
    // A KeyManager holds a store handle: only the core keeps it, so the
    // store can close once the core is gone.
    let secrets = keys.secrets();
    let objects = ManagedObjects::new(Arc::new(conf.schema), store.clone(), Arc::clone(&secrets))
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
    // Unique per process: ticks, run leases, recon runs and outbox objects
    // are claimed in its name.
    let node = format!(
        "idmd-{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    );
    let reconciler = sync::recon::Reconciler::new(store.clone(), objects.clone(), conf_dir.clone())
        .with_node(node.clone());
    // Runs and executions whose node stopped, on a store nodes share.
    let sweeper = (!embedded).then(|| {
        let (store, stopped) = (store.clone(), tasks_stopped.clone());
        supervise::spawn(
            supervise::Task::new("expiry-sweeper", None),
            &health,
            tasks_stopped.clone(),
            move || sweep_expired(store.clone(), stopped.clone()),
        )
    });
    let implicit = Arc::new(
        sync::outbox::ImplicitSync::start_with(
            store.clone(),
            objects.clone(),
            conf_dir.clone(),
            &health,
            supervise::Backoff::default(),
            if embedded {
                sync::outbox::Claims::sole(node.clone())
            } else {
                sync::outbox::Claims::new(node.clone())
            },
        )
        .await?,
    );
    // A write that finds the conf changed on another node reloads first.
    implicit.follow_conf();
    let scheduler = scheduler::Scheduler::start(
        store.clone(),
        objects.clone(),
        reconciler.clone(),
        conf_dir.clone(),
        node,
        &health,
    )
    .await?;
    // Conf changes made on other nodes.
    let conf_follower = {
        let follower =
            conf_watch::ConfFollower::new(store.clone(), Arc::clone(&implicit), scheduler.clone());
        let stopped = tasks_stopped.clone();
        // Under `idm.scheduler`: while the loop is down, the node's writes
        // still follow the conf (they check it themselves) but its
        // schedules do not.
        supervise::spawn(
            supervise::Task::new("conf-follower", Some(health::SCHEDULER)),
            &health,
            tasks_stopped.clone(),
            move || follower.clone().run(stopped.clone()),
        )
    };
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
    // History past its age goes in the background (retention.rs).
    let pruner = {
        let (store, retention) = (store.clone(), settings.retention);
        let stopped = tasks_stopped.clone();
        supervise::spawn(
            supervise::Task::new("retention", None),
            &health,
            tasks_stopped.clone(),
            move || retention::run(store.clone(), retention, stopped.clone()),
        )
    };
    // Passwords written sealed get their argon2 hashes here (managed/hashing.rs).
    let hasher = {
        let (store, secrets, stopped) = (store.clone(), secrets, tasks_stopped.clone());
        supervise::spawn(
            supervise::Task::new("password-hasher", None),
            &health,
            tasks_stopped.clone(),
            move || managed::hashing::run(store.clone(), Arc::clone(&secrets), stopped.clone()),
        )
    };
    // The outbox gauges, only when metrics are served.
    let sampler = settings.metrics.map(|_| {
        let (store, stopped) = (store.clone(), tasks_stopped.clone());
        supervise::spawn(
            supervise::Task::new("outbox-sampler", None),
            &health,
            tasks_stopped.clone(),
            move || metrics::run_outbox_sampler(store.clone(), stopped.clone()),
        )
    });
    let (stop_serving, serving_stopped) = watch::channel(false);
    let mut serve = Box::pin(api::serve(
        core,
        settings.grpc,
        identity.as_ref(),
        health_service,
        wait_for_stop(serving_stopped),
    ));
    tokio::select! {
        served = &mut serve => {
            // The listener ended without a signal: only an error does that.
            served?;
        }
        () = shutdown => {}
    }
    // One deadline for the whole shutdown; each step gets what is left, the
    // store's close the last STORE_CLOSE_RESERVE of it at least.
    let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
    let work_deadline = deadline - STORE_CLOSE_RESERVE;
    let left = || work_deadline.saturating_duration_since(tokio::time::Instant::now());
    // First: every health service NOT_SERVING, so that a load balancer
    // watching stops sending calls here.
    health.drain().await;
    tracing::info!("health NOT_SERVING; draining calls and stopping scheduled runs");
    let _ = stop_serving.send(true);
    // No new ticks; runs in flight are cancelled and awaited (scripts are
    // interrupted; reconciliations end CANCELED rather than be cut off
    // mid-batch) while the calls drain.
    // Not before: a conf change seen now must not restart schedules.
    conf_follower.abort();
    let _ = conf_follower.await;
    scheduler.shutdown();
    let calls = async {
        match tokio::time::timeout_at(work_deadline, &mut serve).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "the gRPC server stopped with an error"),
            Err(_) => tracing::warn!(
                "calls still going at the end of the shutdown grace ({SHUTDOWN_GRACE:?}); stopping anyway"
            ),
        }
    };
    let runs = async {
        futures::join!(
            scheduler.finish_runs(work_deadline),
            reconciler.shutdown(left())
        )
    };
    futures::join!(calls, runs);
    drop(serve);
    // A reconciliation started by a call that was still draining.
    reconciler.shutdown(left()).await;
    // Deliveries in hand finish; the rest wait in the outbox for the next start.
    implicit.shutdown(left()).await;
    let _ = stop_tasks.send(true);
    for task in [
        Some(probe),
        Some(refresh),
        Some(pruner),
        Some(hasher),
        sweeper,
        sampler,
    ]
    .into_iter()
    .flatten()
    {
        let abort = task.abort_handle();
        if tokio::time::timeout_at(work_deadline, task).await.is_err() {
            abort.abort();
        }
    }
    // Every store handle goes before the store closes (it closes with the last).
    drop(reconciler);
    drop(implicit);
    drop(scheduler);
    store
        .close(deadline.saturating_duration_since(tokio::time::Instant::now()))
        .await;
    tracing::info!("idmd stopped");
    Ok(())
}

/// Whether the store lives in this process (`mem://`, `surrealkv://`), so
/// that no other node can share it.
fn is_embedded(store_url: &str) -> bool {
    store_url.starts_with("mem:") || store_url.starts_with("surrealkv:")
}

/// How often a node looks for runs and executions whose node stopped.
const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// Marks FAILED, every [`SWEEP_EVERY`] until `stop`, the recon runs and
/// scheduled executions of any node whose heartbeat expired.
async fn sweep_expired(store: Store, mut stop: watch::Receiver<bool>) {
    let mut every = tokio::time::interval(SWEEP_EVERY);
    loop {
        if *stop.borrow() {
            return;
        }
        tokio::select! {
            _ = every.tick() => {
                match store.fail_expired_runs(sync::recon::NODE_STOPPED).await {
                    Ok(0) => {}
                    Ok(runs) => tracing::warn!(runs, "reconciliations whose node stopped are marked FAILED"),
                    Err(e) => tracing::warn!(error = %e, "looking for runs whose node stopped failed"),
                }
                match store.fail_expired_executions(STOPPED_DURING_RUN).await {
                    Ok(0) => {}
                    Ok(executions) => tracing::warn!(executions, "scheduled runs whose node stopped are marked FAILED"),
                    Err(e) => tracing::warn!(error = %e, "looking for executions whose node stopped failed"),
                }
            }
            changed = stop.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
    }
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
            store_memory: store::StoreMemory::DEFAULT,
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
