//! `idmd`: the idm core server.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use std::time::Duration;

use idm_server::accounts::{LoginLimits, SessionPolicy};
use idm_server::managed::ThrottleLimits;
use idm_server::retention::{Age, Retention};
use idm_server::store::StoreMemory;
use idm_server::{Settings, run};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "idmd",
    version,
    about = "idm core: managed identities over gRPC, stored in SurrealDB"
)]
struct Args {
    /// Without a command, idmd serves.
    #[command(subcommand)]
    command: Option<Command>,
    /// Conf directory: managed.json, connector-*.json or provisioner.openicf-*.json,
    /// sync.json, schedule-*.json; or a Wren project directory holding them in conf/.
    /// Without it, the built-in managed/user and managed/group types are used.
    #[arg(long, env = "IDM_CONF")]
    conf: Option<PathBuf>,
    /// surrealkv://PATH (embedded), mem:// (tests) or ws://HOST:PORT (a SurrealDB server).
    #[arg(long, env = "IDM_STORE", default_value = "surrealkv://data/idm")]
    store: String,
    /// Memory an embedded surrealkv:// store keeps (three memtables of an
    /// eighth each, and its block cache): 256MiB, 1GiB… Less reads the disk
    /// more often; the default suits a small VM.
    #[arg(long, env = "IDM_STORE_MEMORY", value_name = "SIZE", default_value_t = StoreMemory::DEFAULT)]
    store_memory: StoreMemory,
    /// gRPC listen address.
    #[arg(long, env = "IDM_GRPC", default_value = "127.0.0.1:50051")]
    grpc: SocketAddr,
    /// PEM certificate chain for gRPC over TLS (with --tls-key). Without TLS,
    /// idmd serves only on a loopback address.
    #[arg(long, env = "IDM_TLS_CERT", value_name = "PEM", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "IDM_TLS_KEY", value_name = "PEM", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Serve plaintext gRPC on a non-loopback address: only behind a proxy
    /// that terminates TLS.
    #[arg(long, env = "IDM_ALLOW_PLAINTEXT")]
    allow_plaintext: bool,
    /// Encryption key file for private properties; created on first start.
    /// IDM_ENCRYPTION_KEY (base64, 32 bytes) takes precedence.
    #[arg(long, env = "IDM_KEY_FILE", default_value = "data/idm.key")]
    key_file: PathBuf,
    /// Environment variables that `$env` references in documents sent over
    /// the API may read (comma-separated); none by default. Conf files keep
    /// every `$env`.
    #[arg(long, env = "IDM_CONF_ENV_ALLOW", value_delimiter = ',')]
    conf_env_allow: Vec<String>,
    /// A directory (besides the conf directory) that files named by documents
    /// sent over the API may be in (a CSV file, `tlsCaFile`, a script);
    /// repeat it, or list them comma-separated in IDM_CONF_PATHS.
    #[arg(long = "allow-path", env = "IDM_CONF_PATHS", value_delimiter = ',')]
    allow_paths: Vec<PathBuf>,
    /// Log lines as text, or as one JSON object per line (for a log
    /// collector). Each gRPC call's lines carry its `request_id`.
    #[arg(long, env = "IDM_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Failed password checks (VerifyPassword) one object may have within
    /// the window before checks of it answer RESOURCE_EXHAUSTED.
    #[arg(long, env = "IDM_PASSWORD_FAILURES_PER_OBJECT", default_value_t = 5)]
    password_failures_per_object: usize,
    /// Failed password checks one token may have within the window, over
    /// every object.
    #[arg(long, env = "IDM_PASSWORD_FAILURES_PER_CALLER", default_value_t = 100)]
    password_failures_per_caller: usize,
    /// The window of those limits, in seconds.
    #[arg(long, env = "IDM_PASSWORD_FAILURE_WINDOW", default_value_t = 900)]
    password_failure_window: u64,
    /// A login session ends after this many seconds without a call.
    #[arg(long, env = "IDM_SESSION_IDLE_TIMEOUT", default_value_t = 1800, value_parser = clap::value_parser!(u64).range(1..))]
    session_idle_timeout: u64,
    /// A login session ends this many seconds after the login, used or not.
    #[arg(long, env = "IDM_SESSION_LIFETIME", default_value_t = 28_800, value_parser = clap::value_parser!(u64).range(1..))]
    session_lifetime: u64,
    /// Failed logins an account name, or a source address, may have within
    /// the window before it is locked (for the window, doubling each time,
    /// up to 15 minutes). A gRPC peer may have 20 times as many.
    #[arg(long, env = "IDM_LOGIN_FAILURES", default_value_t = 5)]
    login_failures: usize,
    /// The window of --login-failures, in seconds; also the first lock's length.
    #[arg(long, env = "IDM_LOGIN_FAILURE_WINDOW", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    login_failure_window: u64,
    /// How long claimed schedule ticks are kept: the records that keep two
    /// idmd nodes from firing one tick twice (each schedule's newest always
    /// stays). A duration (30d, 12h, 1y) or `forever`, like every --retain-*.
    #[arg(
        long,
        env = "IDM_RETAIN_SCHEDULE_TICKS",
        default_value = "1d",
        value_name = "AGE"
    )]
    retain_schedule_ticks: Age,
    /// How long schedule executions (the history ListExecutions shows) are
    /// kept, from their start; a RUNNING one stays.
    #[arg(
        long,
        env = "IDM_RETAIN_EXECUTIONS",
        default_value = "90d",
        value_name = "AGE"
    )]
    retain_executions: Age,
    /// How long reconciliation run records (counts, situations, kept
    /// failures) are kept, from their start; a PENDING or ACTIVE one stays.
    #[arg(
        long,
        env = "IDM_RETAIN_RECON_RUNS",
        default_value = "90d",
        value_name = "AGE"
    )]
    retain_recon_runs: Age,
    /// How long audit entries (object writes, admin actions, password
    /// checks) are kept.
    #[arg(
        long,
        env = "IDM_RETAIN_AUDIT",
        default_value = "365d",
        value_name = "AGE"
    )]
    retain_audit: Age,
    /// How long implicit-sync changes that failed for good (the sync
    /// queue's failed entries, which RetryEntries could still send) are
    /// kept, from their last attempt; pending changes always stay.
    #[arg(
        long,
        env = "IDM_RETAIN_FAILED_SYNC",
        default_value = "30d",
        value_name = "AGE"
    )]
    retain_failed_sync: Age,
    /// How often history past its age is pruned (tests use seconds).
    #[arg(long, env = "IDM_RETENTION_INTERVAL", default_value = "5m", value_parser = humantime::parse_duration, hide = true)]
    retention_interval: Duration,
    /// Serve Prometheus metrics at http://ADDR/metrics (plain HTTP; keep it
    /// on a loopback or private address). Off by default.
    #[arg(long, env = "IDM_METRICS", value_name = "ADDR")]
    metrics: Option<SocketAddr>,
}

#[derive(Subcommand)]
enum Command {
    /// Restore a backup file into a new, empty store, then exit.
    ///
    /// The file (`idmctl backup --to FILE`) is checked whole (header, length,
    /// SHA-256) before the store is opened. Serve the restored store with the
    /// same encryption key: its passwords and connector secrets are sealed
    /// under it.
    Restore {
        /// The backup file.
        #[arg(long, value_name = "FILE")]
        from: PathBuf,
        /// The new store: surrealkv://PATH (a directory that does not exist
        /// yet, or holds an empty store). Not a SurrealDB server: fill one
        /// with `surreal import`.
        #[arg(long, value_name = "URL")]
        store: String,
        /// The key file of the idmd that will serve the store: checked
        /// against the backup's key fingerprint before anything is written
        /// (IDM_ENCRYPTION_KEY, if set, is checked instead). Optional.
        #[arg(long, value_name = "FILE")]
        key_file: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// See the workspace's Cargo.toml for why not the system allocator.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    // surrealkv::lsm at error: its tree warns "No runtime available for
    // closing the store correctly" when it is dropped off the runtime, which
    // happens at every stop *after* the engine's own shutdown has fsynced the
    // WAL and closed the tree (surrealdb-engine-local calls `kvs.shutdown()`);
    // a warning an operator cannot act on at every stop would hide real ones.
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(
            "info,surrealdb=warn,surrealdb_core=warn,surrealkv=warn,surrealkv::lsm=error",
        )
    });
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    match args.log_format {
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => logs.json().init(),
    }
    if let Some(Command::Restore {
        from,
        store,
        key_file,
    }) = args.command
    {
        return restore(from, store, key_file.as_deref()).await;
    }
    let settings = Settings {
        conf: args.conf,
        store_url: args.store,
        store_memory: args.store_memory,
        grpc: args.grpc,
        tls: args
            .tls_cert
            .zip(args.tls_key)
            .map(|(cert, key)| idm_server::api::tls::TlsFiles { cert, key }),
        allow_plaintext: args.allow_plaintext,
        key_file: args.key_file,
        encryption_key: std::env::var(idm_server::secrets::KEY_ENV).ok(),
        admin_token: std::env::var("IDM_ADMIN_TOKEN").ok(),
        admin_password: std::env::var(idm_server::accounts::ADMIN_PASSWORD_ENV).ok(),
        login_limits: LoginLimits {
            failures: args.login_failures,
            window: Duration::from_secs(args.login_failure_window),
            ..LoginLimits::default()
        },
        sessions: SessionPolicy {
            idle_timeout: Duration::from_secs(args.session_idle_timeout),
            lifetime: Duration::from_secs(args.session_lifetime),
        },
        password_throttle: ThrottleLimits {
            per_object: args.password_failures_per_object,
            per_caller: args.password_failures_per_caller,
            window: std::time::Duration::from_secs(args.password_failure_window),
            ..ThrottleLimits::default()
        },
        conf_env_allow: args.conf_env_allow,
        allow_paths: args.allow_paths,
        retention: Retention {
            schedule_ticks: args.retain_schedule_ticks,
            executions: args.retain_executions,
            recon_runs: args.retain_recon_runs,
            audit: args.retain_audit,
            failed_sync: args.retain_failed_sync,
            interval: args.retention_interval,
        },
        metrics: args.metrics,
    };
    match run(settings, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("idmd cannot start: {e}");
            eprintln!("idmd: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `idmd restore`: what was restored, by kind; never a secret.
async fn restore(from: PathBuf, store: String, key_file: Option<&std::path::Path>) -> ExitCode {
    use idm_server::secrets::{KEY_ENV, KeyMaterial};
    let key = match (std::env::var(KEY_ENV).ok(), key_file) {
        (Some(encoded), _) => {
            KeyMaterial::from_base64(&encoded, KEY_ENV).map(|k| Some((k, KEY_ENV)))
        }
        (None, Some(path)) => match KeyMaterial::read_file(path) {
            Ok(Some(key)) => Ok(Some((key, "--key-file"))),
            Ok(None) => {
                eprintln!("idmd restore: key file {}: not found", path.display());
                return ExitCode::FAILURE;
            }
            Err(e) => Err(e),
        },
        (None, None) => Ok(None),
    };
    let (key, origin) = match key {
        Ok(Some((key, origin))) => (Some(key), origin),
        Ok(None) => (None, ""),
        Err(e) => {
            eprintln!("idmd restore: {e}");
            return ExitCode::FAILURE;
        }
    };
    let key_checked = key.is_some();
    let request = idm_server::backup::RestoreRequest {
        from: from.clone(),
        store_url: store.clone(),
        key,
    };
    match idm_server::backup::restore(request, origin).await {
        Ok(done) => {
            let h = &done.header;
            let c = &done.counts;
            println!("restored {} into {store}", from.display());
            println!(
                "  backup made {} by idmd {}, schema version {}{}",
                h.created,
                h.idmd_version,
                h.schema_version,
                if h.schema_version < idm_server::store::SCHEMA_VERSION {
                    format!(" (taken forward to {})", idm_server::store::SCHEMA_VERSION)
                } else {
                    String::new()
                }
            );
            println!("  {} bytes of export replayed", done.bytes);
            println!(
                "  {} managed objects, {} passwords and other private values, {} relationships, \
                 {} links, {} conf documents, {} accounts, {} tokens, {} schedule states, \
                 {} audit entries",
                c.objects,
                c.credentials,
                c.relations,
                c.links,
                c.config,
                c.accounts,
                c.tokens,
                c.schedule_states,
                c.audit
            );
            if key_checked {
                println!("  the key given ({origin}) is the backup's key");
            }
            println!(
                "serve it with the same encryption key (fingerprint {}): the key file or {KEY_ENV} \
                 of the idmd the backup came from; another key cannot open its secrets, and idmd \
                 refuses to start with one",
                h.key_fingerprint
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!("restore failed: {e}");
            eprintln!("idmd restore: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Resolves on ctrl-c or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot listen for ctrl-c");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
    tracing::info!("shutting down");
}
