//! Compiles `proto/idm/v1/*.proto` with protox (pure Rust, no system `protoc`)
//! and writes the descriptor set that gRPC server reflection serves.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/idm/v1/objects.proto",
        "proto/idm/v1/audit.proto",
        "proto/idm/v1/tokens.proto",
        "proto/idm/v1/config.proto",
        "proto/idm/v1/recon.proto",
        "proto/idm/v1/schedules.proto",
        "proto/idm/v1/sync.proto",
        "proto/idm/v1/keys.proto",
        "proto/idm/v1/auth.proto",
        "proto/idm/v1/system.proto",
    ];
    let descriptors = protox::compile(files, ["proto"])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("idm_descriptor.bin"),
        prost::Message::encode_to_vec(&descriptors),
    )?;
    tonic_prost_build::configure().compile_fds(descriptors)?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
