//! `idm-scim --core URL --listen ADDR`: serves SCIM 2.0 at `/scim/v2` and
//! reaches idmd only over gRPC.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use idm_gateway::core::Core;
use idm_gateway::http::{self, App};
use idm_gateway::mapping::AttributeMap;
use idm_gateway::scim::discovery::Limits;
use idm_gateway::scim::schema::Registry;
use idm_gateway::service::Scim;
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "idm-scim",
    version,
    about = "SCIM 2.0 gateway over the idm gRPC core"
)]
struct Args {
    /// The idmd gRPC endpoint.
    #[arg(long, env = "IDM_CORE", default_value = "http://127.0.0.1:50051")]
    core: String,
    /// Address to serve SCIM on.
    #[arg(long, env = "IDM_SCIM_LISTEN", default_value = "127.0.0.1:8080")]
    listen: String,
    /// The SCIM ↔ managed attribute map (JSON); the built-in one maps idm's
    /// default managed/user and managed/group.
    #[arg(long, env = "IDM_SCIM_MAP")]
    map: Option<PathBuf>,
    /// The externally visible URL of `/scim/v2` (`https://idm.example.org/scim/v2`),
    /// for `meta.location` and `Location`. Default: `http://<listen address>/scim/v2`;
    /// a request's `Host` header is never used.
    #[arg(long, env = "IDM_SCIM_PUBLIC_URL")]
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
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    if args.print_default_map {
        print!("{}", idm_gateway::mapping::DEFAULT_MAP_JSON);
        return ExitCode::SUCCESS;
    }
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            tracing::error!("{message}");
            eprintln!("idm-scim: {message}");
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
    let core = Core::connect(&args.core, Duration::from_secs(args.core_timeout))
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
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let address = listener.local_addr().map_err(|e| e.to_string())?;
    if args.public_url.is_none() && address.ip().is_unspecified() {
        tracing::warn!(%address, "without --public-url, resource locations name the listen address, which clients cannot reach");
    }
    let app = App {
        scim: Scim {
            registry,
            maps,
            core,
            limits,
        },
        base_url: http::base_url(args.public_url.as_deref(), address),
    };
    tracing::info!(%address, core = %args.core, "serving SCIM 2.0 at /scim/v2");
    axum::serve(listener, http::router(app))
        .with_graceful_shutdown(shutdown())
        .await
        .map_err(|e| e.to_string())
}

async fn shutdown() {
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
}
