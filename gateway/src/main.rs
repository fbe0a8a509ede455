//! `idm-scim`: the SCIM 2.0 gateway. It reaches idmd only over gRPC.
//!
//! Not built yet: the SCIM service provider arrives with its own issue. Until
//! then this binary accepts its final flags and says so plainly instead of
//! pretending to serve.

use std::process::ExitCode;

use clap::Parser;

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
}

fn main() -> ExitCode {
    let args = Args::parse();
    eprintln!(
        "idm-scim: the SCIM gateway is not implemented in this build (would serve {} for {})",
        args.listen, args.core
    );
    ExitCode::from(2)
}
