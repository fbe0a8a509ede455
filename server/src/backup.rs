//! Backup and restore of a whole store.
//!
//! A backup is SurrealDB's own export of the store (every table's
//! definitions and records, read in one read transaction: one snapshot,
//! while idmd goes on serving) in idm's envelope (`idm_proto::backup`): a
//! header naming the schema version and the key's fingerprint, and a trailer
//! with the export's length and SHA-256. Secrets stay as stored: argon2
//! hashes, sealed copies (opened only with the same key), tokens' hashes.
//!
//! [`start`] streams it out with back-pressure: SurrealDB hands over one
//! piece at a time, and nothing is read ahead of the client by more than a
//! few chunks, so memory does not grow with the store.
//!
//! [`restore`] checks a file's envelope through to its trailer before it
//! opens the store, refuses a store that is not new, imports, and takes an
//! older schema forward.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt;
use idm_proto::backup::{EnvelopeError, Header, Sealer, Verified, Verifier};
use tokio::sync::mpsc;

use crate::secrets::KeyMaterial;
use crate::store::{self, RestoredCounts, SCHEMA_VERSION, Store, StoreError, StoreMemory};

/// Largest chunk handed to the client.
pub const CHUNK: usize = 64 * 1024;
/// Chunks ready ahead of the client, at most.
const AHEAD: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error(
        "a key rotation to fingerprint {to} is under way, so the store's secrets are sealed \
         under two keys; back up once it has finished"
    )]
    Rotating { to: String },
    #[error("the store has no key fingerprint yet")]
    NoKey,
    #[error(
        "this idmd's store is on a SurrealDB server, and idm's backup reads embedded stores \
         only: back the server up with its own export (`surreal export --namespace idm \
         --database idm FILE`) and keep idmd's encryption key with it"
    )]
    OnServer,
}

/// A backup being read out: the header (already decided) and its bytes.
pub struct Outgoing {
    pub header: Header,
    pub chunks: mpsc::Receiver<Result<Vec<u8>, BackupError>>,
}

/// Starts a backup of `store`: the header now, then the export as it is
/// read, then the trailer. An error mid-way is the last item (no trailer
/// follows, so the file is refused); a receiver dropped stops the export.
#[tracing::instrument(skip_all)]
pub async fn start(store: &Store) -> Result<Outgoing, BackupError> {
    // SurrealDB's SDK exports only from an engine in this process.
    if store.on_server() {
        return Err(BackupError::OnServer);
    }
    let key = store.key_record().await?.ok_or(BackupError::NoKey)?;
    if let Some(to) = key.rotating_to {
        return Err(BackupError::Rotating { to });
    }
    let header = Header::new(
        SCHEMA_VERSION,
        &key.fingerprint,
        &store::now_timestamp(),
        env!("CARGO_PKG_VERSION"),
    );
    let mut export = store.export().await?;
    let (tx, rx) = mpsc::channel(AHEAD);
    let head = Sealer::header_line(&header);
    tokio::spawn(async move {
        let mut sealer = Sealer::new();
        let mut pending: Vec<u8> = Vec::with_capacity(CHUNK);
        let mut sent: u64 = 0;
        if tx.send(Ok(head)).await.is_err() {
            return;
        }
        while let Some(piece) = export.next().await {
            let piece = match piece {
                Ok(piece) => piece,
                Err(e) => {
                    tracing::error!(error = %e, "the backup's export failed");
                    let _ = tx.send(Err(e.into())).await;
                    return;
                }
            };
            sealer.body(&piece);
            pending.extend_from_slice(&piece);
            while pending.len() >= CHUNK {
                let rest = pending.split_off(CHUNK);
                let full = std::mem::replace(&mut pending, rest);
                sent += full.len() as u64;
                if tx.send(Ok(full)).await.is_err() {
                    tracing::info!(sent, "the backup's reader left; export stopped");
                    return;
                }
            }
        }
        sent += pending.len() as u64;
        if !pending.is_empty() && tx.send(Ok(pending)).await.is_err() {
            return;
        }
        let _ = tx.send(Ok(sealer.trailer())).await;
        tracing::info!(bytes = sent, "backup read out");
    });
    Ok(Outgoing { header, chunks: rx })
}

/// What `idmd restore` was asked.
pub struct RestoreRequest {
    pub from: PathBuf,
    pub store_url: String,
    /// The key the restored store will be served with, if given: checked
    /// against the backup's fingerprint before anything is written.
    pub key: Option<KeyMaterial>,
}

/// What a restore did.
#[derive(Debug)]
pub struct Restored {
    pub header: Header,
    pub counts: RestoredCounts,
    /// Bytes of export replayed.
    pub bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("{path}: {reason}")]
    File { path: String, reason: String },
    #[error("{path}: {source}")]
    Envelope { path: String, source: EnvelopeError },
    #[error(
        "{path} holds schema version {found}, newer than this idmd ({SCHEMA_VERSION}); restore \
         it with the idmd that made it, or a newer one"
    )]
    NewerSchema { path: String, found: i64 },
    #[error(
        "the key given ({origin}, fingerprint {given}) is not the key this backup's secrets are \
         sealed under (fingerprint {expected}); give the key of the idmd the backup was made from"
    )]
    KeyMismatch {
        origin: &'static str,
        given: String,
        expected: String,
    },
    #[error(
        "the store at {url} is not empty (it holds {found}); restore into a new store (a new \
         surrealkv:// directory)"
    )]
    NotEmpty { url: String, found: String },
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error(
        "the import stopped part-way ({0}); the store at the URL given is incomplete: delete it \
         before restoring again"
    )]
    Import(StoreError),
    #[error(
        "a restore writes a new embedded store (surrealkv://PATH), not a SurrealDB server: \
         restore into a directory and serve it, or fill a server with its own import \
         (`surreal import --namespace idm --database idm FILE`) of an export made with \
         `surreal export`"
    )]
    OnServer,
}

/// Restores a backup file into a new store. See the module doc.
#[tracing::instrument(skip_all, fields(from = %request.from.display()))]
pub async fn restore(
    request: RestoreRequest,
    key_origin: &'static str,
) -> Result<Restored, RestoreError> {
    // SurrealDB's SDK imports only into an engine in this process; refused
    // before the file is read.
    if store::is_server_url(&request.store_url) {
        return Err(RestoreError::OnServer);
    }
    let path = request.from.display().to_string();
    let scratch = Scratch::new()?;
    let body_path = scratch.0.join("export.surql");
    let verified = {
        let from = request.from.clone();
        let body_path = body_path.clone();
        tokio::task::spawn_blocking(move || unwrap_file(&from, &body_path))
            .await
            .map_err(|e| RestoreError::File {
                path: path.clone(),
                reason: e.to_string(),
            })??
    };
    let header = verified.header;
    if header.schema_version > SCHEMA_VERSION {
        return Err(RestoreError::NewerSchema {
            path,
            found: header.schema_version,
        });
    }
    if let Some(key) = &request.key {
        let given = key.fingerprint();
        if given != header.key_fingerprint {
            return Err(RestoreError::KeyMismatch {
                origin: key_origin,
                given,
                expected: header.key_fingerprint,
            });
        }
    }
    let store = Store::connect(&request.store_url, StoreMemory::default()).await?;
    let found = store.existing_contents().await?;
    if !found.is_empty() {
        store.close(Duration::from_secs(10)).await;
        return Err(RestoreError::NotEmpty {
            url: request.store_url,
            found: found.join(", "),
        });
    }
    tracing::info!(
        bytes = verified.trailer.bytes,
        schema = header.schema_version,
        "backup checked; importing"
    );
    if let Err(e) = store.import(&body_path).await {
        store.close(Duration::from_secs(10)).await;
        return Err(RestoreError::Import(e));
    }
    drop(scratch);
    // An older backup is taken forward as idmd takes an older store.
    store.migrate().await?;
    if let Some(record) = store.key_record().await?
        && record.fingerprint != header.key_fingerprint
    {
        tracing::warn!(
            header = %header.key_fingerprint,
            store = %record.fingerprint,
            "the restored key fingerprint differs from the backup's header"
        );
    }
    let counts = store.restored_counts().await?;
    store.close(Duration::from_secs(30)).await;
    Ok(Restored {
        header,
        counts,
        bytes: verified.trailer.bytes,
    })
}

/// Reads the backup file through, checking its envelope, and writes the
/// export it holds to `body_path` (0600). Nothing else is touched.
fn unwrap_file(from: &Path, body_path: &Path) -> Result<Verified, RestoreError> {
    let path = from.display().to_string();
    let io = |e: std::io::Error| RestoreError::File {
        path: path.clone(),
        reason: e.to_string(),
    };
    let mut file = std::fs::File::open(from).map_err(io)?;
    let mut out = private_file(body_path).map_err(|e| RestoreError::File {
        path: body_path.display().to_string(),
        reason: e.to_string(),
    })?;
    let mut verifier = Verifier::new();
    let mut buffer = vec![0u8; CHUNK];
    let mut body = Vec::with_capacity(CHUNK * 2);
    let envelope = |source| RestoreError::Envelope {
        path: path.clone(),
        source,
    };
    loop {
        let read = file.read(&mut buffer).map_err(io)?;
        if read == 0 {
            break;
        }
        verifier
            .update(&buffer[..read], &mut body)
            .map_err(envelope)?;
        out.write_all(&body).map_err(io)?;
        body.clear();
    }
    let verified = verifier.finish(&mut body).map_err(envelope)?;
    out.write_all(&body).map_err(io)?;
    out.flush().map_err(io)?;
    Ok(verified)
}

/// A new file only its owner can read.
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

/// A private scratch directory for the export, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Result<Self, RestoreError> {
        let dir = std::env::temp_dir().join(format!(
            "idm-restore-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        let mut builder = std::fs::DirBuilder::new();
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            builder.mode(0o700);
        }
        builder.create(&dir).map_err(|e| RestoreError::File {
            path: dir.display().to_string(),
            reason: e.to_string(),
        })?;
        Ok(Scratch(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    async fn backup_of(store: &Store) -> Vec<u8> {
        let mut outgoing = start(store).await.unwrap();
        let mut file = Vec::new();
        while let Some(chunk) = outgoing.chunks.recv().await {
            let chunk = chunk.unwrap();
            assert!(chunk.len() <= CHUNK);
            file.extend(chunk);
        }
        file
    }

    #[tokio::test]
    async fn a_backup_restores_into_a_new_store_and_nowhere_else() {
        let dir = std::env::temp_dir().join(format!("idm-backup-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let source = Store::open("mem://").await.unwrap();
        let key = KeyMaterial::generate();
        source.record_key(&key.fingerprint()).await.unwrap();
        let file = backup_of(&source).await;
        let first_line = file.split(|b| *b == b'\n').next().unwrap();
        let header: Header = serde_json::from_slice(first_line).unwrap();
        assert_eq!(header.key_fingerprint, key.fingerprint());
        assert_eq!(header.schema_version, SCHEMA_VERSION);
        let path = dir.join("idm.backup");
        std::fs::write(&path, &file).unwrap();

        let url = format!("surrealkv://{}", dir.join("restored").display());
        let request = |key: Option<KeyMaterial>| RestoreRequest {
            from: path.clone(),
            store_url: url.clone(),
            key,
        };
        let other = restore(request(Some(KeyMaterial::generate())), "test")
            .await
            .unwrap_err();
        assert!(matches!(other, RestoreError::KeyMismatch { .. }), "{other}");
        assert!(
            !dir.join("restored").exists(),
            "nothing written on a refusal"
        );

        let restored = restore(request(Some(key)), "test").await.unwrap();
        assert_eq!(restored.header, header);
        let again = restore(request(None), "test").await.unwrap_err();
        assert!(matches!(again, RestoreError::NotEmpty { .. }), "{again}");
        assert!(again.to_string().contains("a key fingerprint"), "{again}");
        let reopened = Store::open(&url).await.unwrap();
        assert_eq!(
            reopened.key_record().await.unwrap().unwrap().fingerprint,
            header.key_fingerprint
        );
        reopened.close(Duration::from_secs(10)).await;
        let _ = std::fs::remove_dir_all(&dir);
    }
}
