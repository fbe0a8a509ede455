//! `idm-gateway --core URL --listen ADDR`: serves SCIM 2.0 at `/scim/v2` over
//! HTTPS (its own certificate, or a self-signed one it keeps under `--data`)
//! and reaches idmd only over gRPC.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use axum_server::tls_rustls::RustlsConfig;
use clap::{Parser, ValueEnum};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto::Builder as AutoBuilder;
use idm_gateway::console::ConsoleState;
use idm_gateway::core::Core;
use idm_gateway::http::origin::{Cidr, Origin};
use idm_gateway::http::{self, App};
use idm_gateway::mapping::AttributeMap;
use idm_gateway::rest::{RestLimits, RestState};
use idm_gateway::scim::discovery::Limits;
use idm_gateway::scim::schema::Registry;
use idm_gateway::service::Scim;
use idm_gateway::tls::{self, Kept};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "idm-gateway",
    version,
    about = "The idm gateway: SCIM 2.0 over HTTPS in front of the idm gRPC core"
)]
struct Args {
    /// The idmd gRPC endpoint (`http://` or `https://`).
    #[arg(long, env = "IDM_CORE", default_value = "http://127.0.0.1:50051")]
    core: String,
    /// A CA certificate (PEM) to trust for an `https://` core, besides the
    /// system's roots.
    #[arg(long, env = "IDM_CORE_CA")]
    core_ca: Option<PathBuf>,
    /// Address to serve on.
    #[arg(long, env = "IDM_GATEWAY_LISTEN", default_value = "127.0.0.1:8443")]
    listen: String,
    /// Where the gateway keeps its state (the self-signed certificate, in
    /// `tls/`).
    #[arg(long, env = "IDM_GATEWAY_DATA", default_value = "data/gateway")]
    data: PathBuf,
    /// Your certificate chain (PEM), leaf first. Without it (and `--tls-key`)
    /// the gateway makes a self-signed one for localhost on first start and
    /// keeps it under `--data`.
    #[arg(long, env = "IDM_GATEWAY_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key (PEM) of `--tls-cert`.
    #[arg(long, env = "IDM_GATEWAY_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Serve plain HTTP, for a proxy in front that terminates TLS.
    #[arg(long, conflicts_with_all = ["tls_cert", "tls_key"])]
    no_tls: bool,
    /// With `--no-tls`: the proxies (IP addresses or networks, repeatable or
    /// comma-separated) whose `X-Forwarded-Proto: https` makes locations
    /// https. From anyone else the header is ignored.
    #[arg(
        long,
        env = "IDM_GATEWAY_TRUSTED_PROXY",
        value_delimiter = ',',
        requires = "no_tls"
    )]
    trusted_proxy: Vec<Cidr>,
    /// The SCIM ↔ managed attribute map (JSON); the built-in one maps idm's
    /// default managed/user and managed/group.
    #[arg(long, env = "IDM_SCIM_MAP")]
    map: Option<PathBuf>,
    /// The externally visible URL of `/scim/v2` (`https://idm.example.org/scim/v2`),
    /// for `meta.location` and `Location`. Default: `<scheme>://<listen
    /// address>/scim/v2`; a request's `Host` header is never used.
    #[arg(long, env = "IDM_GATEWAY_PUBLIC_URL")]
    public_url: Option<String>,
    /// How long one call to the core may take, in seconds.
    #[arg(long, default_value_t = 10)]
    core_timeout: u64,
    /// Largest page a list returns.
    #[arg(long, default_value_t = 1000)]
    max_results: u64,
    /// Print the built-in attribute map (a start for `--map`) and exit.
    #[arg(long)]
    print_default_map: bool,
    /// Log lines as text, or as one JSON object per line (for a log
    /// collector). Each request's line carries its `request_id`.
    #[arg(long, env = "IDM_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Serve Prometheus metrics at http://ADDR/metrics (plain HTTP; keep it
    /// on a loopback or private address). Off by default.
    #[arg(long, env = "IDM_GATEWAY_METRICS", value_name = "ADDR")]
    metrics: Option<SocketAddr>,
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
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        );
    match args.log_format {
        // Colours only for a person at a terminal, not in a log file.
        LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => logs.json().init(),
    }
    if args.print_default_map {
        print!("{}", idm_gateway::mapping::DEFAULT_MAP_JSON);
        return ExitCode::SUCCESS;
    }
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            tracing::error!("{message}");
            eprintln!("idm-gateway: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), String> {
    let registry = Registry::builtin().map_err(|e| e.to_string())?;
    let maps = match &args.map {
        Some(file) => AttributeMap::from_file(&registry, file),
        None => AttributeMap::builtin(&registry),
    }
    .map_err(|e| e.to_string())?;
    let core_ca = match &args.core_ca {
        Some(path) => {
            tls::read_certificates(path).map_err(|e| format!("--core-ca {e}"))?;
            Some(std::fs::read(path).map_err(|e| format!("--core-ca {}: {e}", path.display()))?)
        }
        None => None,
    };
    let core = Core::connect(
        &args.core,
        core_ca.as_deref(),
        Duration::from_secs(args.core_timeout),
    )
    .map_err(|e| e.to_string())?;
    let limits = Limits {
        max_results: args.max_results.clamp(1, 1000),
        bulk_max_operations: 1000,
        bulk_max_payload: 1024 * 1024,
    };
    if let Some(url) = &args.public_url {
        let lower = url.to_ascii_lowercase();
        if !(lower.starts_with("http://") || lower.starts_with("https://"))
            || url.contains(char::is_whitespace)
        {
            return Err(format!(
                "--public-url {url:?}: expected an http:// or https:// URL"
            ));
        }
    }
    let tls = if args.no_tls {
        None
    } else {
        Some(server_tls(&args)?)
    };
    if let Some(addr) = args.metrics {
        idm_gateway::metrics::install(addr)?;
    }
    let listener = std::net::TcpListener::bind(&args.listen)
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let address = listener.local_addr().map_err(|e| e.to_string())?;
    if args.public_url.is_none() && address.ip().is_unspecified() {
        tracing::warn!(%address, "without --public-url, resource locations name the listen address, which clients cannot reach");
    }
    if tls.is_none() && !address.ip().is_loopback() {
        tracing::warn!(%address, "--no-tls on a non-loopback address: bearer tokens and passwords cross the network in clear unless a TLS-terminating proxy is the only way in");
    }
    let rest = RestState::new(
        core.clone(),
        RestLimits {
            max_page_size: limits.max_results,
            ..RestLimits::default()
        },
    );
    let app = App {
        rest,
        console: ConsoleState::new(core.clone()),
        scim: Scim {
            registry,
            maps,
            core,
            limits,
        },
        origin: Origin::new(
            args.public_url.as_deref(),
            address,
            tls.is_some(),
            args.trusted_proxy.clone(),
        ),
    };
    let service = http::router(app).into_make_service_with_connect_info::<SocketAddr>();
    let handle = axum_server::Handle::new();
    tokio::spawn(shutdown(handle.clone()));
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(%address, core = %args.core, "serving SCIM 2.0 at {scheme}://{address}/scim/v2 and Wren's REST API at {scheme}://{address}/openidm");
    let served = match tls {
        Some(config) => {
            let mut server =
                axum_server::from_tcp_rustls(listener, RustlsConfig::from_config(config))
                    .map_err(|e| e.to_string())?
                    .handle(handle);
            bound_slow_clients(server.http_builder());
            server.serve(service).await
        }
        None => {
            let mut server = axum_server::from_tcp(listener)
                .map_err(|e| e.to_string())?
                .handle(handle);
            bound_slow_clients(server.http_builder());
            server.serve(service).await
        }
    };
    served.map_err(|e| e.to_string())
}

/// The rustls configuration: `--tls-cert`/`--tls-key`, else the self-signed
/// certificate under `--data` (made on first start, then reused).
fn server_tls(args: &Args) -> Result<Arc<rustls::ServerConfig>, String> {
    let cert = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            let cert = tls::load(cert, key).map_err(|e| e.to_string())?;
            tracing::info!(
                cert = %cert.cert_path.display(),
                fingerprint = %cert.fingerprint(),
                "serving your certificate"
            );
            cert
        }
        _ => {
            let (cert, kept) = tls::self_signed(&args.data).map_err(|e| e.to_string())?;
            let (cert_path, fingerprint) = (cert.cert_path.display(), cert.fingerprint());
            match kept {
                Kept::Reused => tracing::info!(
                    cert = %cert_path,
                    %fingerprint,
                    "serving the kept self-signed certificate"
                ),
                Kept::Made(reason) => tracing::info!(
                    cert = %cert_path,
                    %fingerprint,
                    names = ?tls::self_signed_names(),
                    %reason,
                    "made a self-signed certificate; clients must trust it (or use curl -k)"
                ),
            }
            cert
        }
    };
    cert.server_config().map_err(|e| e.to_string())
}

/// On Ctrl-C or SIGTERM: stop accepting, let requests in flight finish
/// (up to 30 s).
/// A connection that has not sent a whole request head within this time is
/// closed: without it, anyone could hold connections open forever by sending
/// nothing (or a header a byte at a time), before any credential is checked.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

fn bound_slow_clients(builder: &mut AutoBuilder<TokioExecutor>) {
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    // HTTP/2 pings an idle client and drops it when the ping goes unanswered.
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(HEADER_READ_TIMEOUT)
        .keep_alive_timeout(HEADER_READ_TIMEOUT);
}

async fn shutdown(handle: axum_server::Handle<SocketAddr>) {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
    tracing::info!("shutting down");
    handle.graceful_shutdown(Some(Duration::from_secs(30)));
}
