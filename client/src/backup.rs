//! `idmctl backup --to FILE`: the whole store, streamed from idmd into a file
//! only its owner can read (it holds password hashes and sealed secrets).
//! The file appears only once all of it has arrived and checked out (header,
//! length, SHA-256): a failure part-way leaves no FILE behind.

use std::io::Write;
use std::path::{Path, PathBuf};

use idm_proto::backup::{Verified, Verifier};
use idm_proto::v1::BackupRequest;
use serde_json::json;

use crate::connect::Context;
use crate::output::{CliError, Format, print_json, print_line};

pub async fn run(ctx: &Context, to: &Path, force: bool) -> Result<(), CliError> {
    if !force && std::fs::symlink_metadata(to).is_ok() {
        return Err(CliError::input(format!(
            "{} already exists; pass --force to replace it",
            to.display()
        )));
    }
    let partial = partial_path(to);
    let file = private_file(&partial)
        .map_err(|e| CliError::input(format!("cannot write {}: {e}", partial.display())))?;
    let written = receive(ctx, file, &partial).await;
    let (verified, size) = match written.and_then(|done| keep(&partial, to, force).map(|()| done)) {
        Ok(done) => done,
        Err(error) => {
            let _ = std::fs::remove_file(&partial);
            return Err(error);
        }
    };
    let header = &verified.header;
    match ctx.format {
        Format::Json => print_json(&json!({
            "file": to.display().to_string(),
            "bytes": size,
            "schemaVersion": header.schema_version,
            "keyFingerprint": header.key_fingerprint,
            "created": header.created,
            "idmdVersion": header.idmd_version,
        })),
        Format::Table => {
            print_line(&format!(
                "backup written to {} ({size} bytes)",
                to.display()
            ))?;
            print_line(&format!("schema version:  {}", header.schema_version))?;
            print_line(&format!("key fingerprint: {}", header.key_fingerprint))?;
            print_line(
                "restore it with `idmd restore --from FILE --store URL`; serve the restored \
                 store with the same encryption key",
            )
        }
    }
}

/// Streams the backup into `file`, checking it on the way; synced to disk.
async fn receive(
    ctx: &Context,
    mut file: std::fs::File,
    partial: &Path,
) -> Result<(Verified, u64), CliError> {
    let io = |e: std::io::Error| CliError::input(format!("writing {}: {e}", partial.display()));
    let mut stream = ctx
        .connect()
        .await?
        .system()
        .backup(BackupRequest {})
        .await?
        .into_inner();
    let mut verifier = Verifier::new();
    let mut scratch = Vec::new();
    let mut size: u64 = 0;
    while let Some(chunk) = stream.message().await? {
        verifier
            .update(&chunk.data, &mut scratch)
            .map_err(|e| CliError::Failed(e.to_string()))?;
        scratch.clear();
        file.write_all(&chunk.data).map_err(io)?;
        size += chunk.data.len() as u64;
    }
    let verified = verifier
        .finish(&mut scratch)
        .map_err(|e| CliError::Failed(format!("idmd's backup stream ended early: {e}")))?;
    file.sync_all().map_err(io)?;
    Ok((verified, size))
}

/// Puts the finished file in place: atomically, and without `--force` never
/// over a file that appeared meanwhile.
fn keep(partial: &Path, to: &Path, force: bool) -> Result<(), CliError> {
    let failed = |e: std::io::Error| CliError::input(format!("cannot write {}: {e}", to.display()));
    if force {
        std::fs::rename(partial, to).map_err(failed)?;
    } else {
        std::fs::hard_link(partial, to).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                CliError::input(format!(
                    "{} already exists; pass --force to replace it",
                    to.display()
                ))
            } else {
                failed(e)
            }
        })?;
        std::fs::remove_file(partial).map_err(failed)?;
    }
    // The rename itself durable too.
    if let Some(dir) = to.parent().filter(|d| !d.as_os_str().is_empty())
        && let Ok(dir) = std::fs::File::open(dir)
    {
        let _ = dir.sync_all();
    }
    Ok(())
}

/// `.<name>.partial-<pid>-<nanos>` beside `to`.
fn partial_path(to: &Path) -> PathBuf {
    let name = to
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "backup".into());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    to.with_file_name(format!(".{name}.partial-{}-{nanos}", std::process::id()))
}

/// A new file only its owner can read or write.
fn private_file(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)
}
