//! Key rotation, online and crash-safe:
//!
//! 1. the new key is written to `<key file>.new` (0600, flushed);
//! 2. `meta:key` records the rotation (old → new fingerprint);
//! 3. the `SecretBox` switches: new seals use the new key, opens try both;
//! 4. every sealed value (`credential.sealed`, `{"$sealed": …}` in conf
//!    documents) still under the old key is re-sealed, in batches, each write
//!    a compare-and-set so a concurrent change is never overwritten; passes
//!    repeat until one finds nothing left;
//! 5. the new key file is renamed over the old one (atomic), and `meta:key`
//!    records the new fingerprint.
//!
//! A stop before 5 leaves the old key file, the new one beside it and the
//! rotation recorded: the next start resumes from 3. A stop between the
//! rename and the record: the next start finds the new key and records it.

use std::path::{Path, PathBuf};

use crate::secrets::{KeyMaterial, KeySource, SealedWith, sync_dir};
use crate::store::{Reseal, StoreError};

use super::walk::reseal_values;
use super::{KeyError, KeyManager, pending_path};

/// Credentials read and re-sealed per transaction.
const BATCH: usize = 500;
/// Full passes before a rotation gives up (resumable) on values that keep
/// changing under it.
const MAX_PASSES: u32 = 5;

/// What a finished rotation did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rotation {
    pub previous_fingerprint: String,
    pub fingerprint: String,
    /// Private property values (`credential.sealed`) re-sealed.
    pub credentials: u64,
    /// `{"$sealed": …}` values in conf documents re-sealed.
    pub config_values: u64,
    /// Values neither key opens (left as they were; they were lost before).
    pub unreadable: u64,
    /// The key file now holding the new key.
    pub key_file: PathBuf,
}

/// One pass's counts.
#[derive(Debug, Default)]
pub(super) struct Pass {
    credentials: u64,
    config_values: u64,
    unreadable: u64,
    /// Re-sealed values a concurrent write replaced first.
    missed: u64,
}

impl KeyManager {
    /// Rotates to a new key, or finishes a rotation under way. Only for a key
    /// kept in a key file.
    #[tracing::instrument(skip_all)]
    pub async fn rotate(&self) -> Result<Rotation, KeyError> {
        let _running = self.rotation.try_lock().map_err(|_| KeyError::Busy)?;
        let KeySource::File(key_file) = self.secrets.source().clone() else {
            return Err(KeyError::FromEnv);
        };
        let pending = pending_path(&key_file);
        let record = self.store.key_record().await?;
        let from = record
            .as_ref()
            .map(|r| r.fingerprint.clone())
            .unwrap_or_default();
        let to = match record.and_then(|r| r.rotating_to) {
            // Resumed: at start, or after a rotation that failed midway.
            Some(to)
                if self.secrets.fingerprint() == to
                    && self.secrets.previous_fingerprint().as_deref() == Some(from.as_str()) =>
            {
                tracing::info!(from = %from, to = %to, "resuming the key rotation");
                to
            }
            Some(to) => {
                // Another node's rotation, or a state this process cannot
                // continue: the start-up check sorts it out.
                return Err(KeyError::Interrupted {
                    from,
                    to,
                    path: key_file.display().to_string(),
                    pending: pending.display().to_string(),
                    reason: "this idmd does not hold both keys".into(),
                });
            }
            None => self.begin(&key_file, &pending, &from).await?,
        };
        let pass = self.reseal_everything().await?;
        install(&key_file, &pending, &to)?;
        if !self.store.finish_key_rotation(&from, &to).await? {
            tracing::warn!("the key record changed during the rotation");
        }
        self.secrets.forget_previous();
        tracing::info!(
            from = %from,
            to = %to,
            credentials = pass.credentials,
            config_values = pass.config_values,
            unreadable = pass.unreadable,
            "encryption key rotated"
        );
        Ok(Rotation {
            previous_fingerprint: from,
            fingerprint: to,
            credentials: pass.credentials,
            config_values: pass.config_values,
            unreadable: pass.unreadable,
            key_file,
        })
    }

    /// Steps 1–3: the new key on disk, the rotation recorded, the switch.
    pub(super) async fn begin(
        &self,
        key_file: &Path,
        pending: &Path,
        from: &str,
    ) -> Result<String, KeyError> {
        if self.secrets.fingerprint() != from {
            return Err(KeyError::Mismatch {
                origin: self.secrets.source().to_string(),
                found: self.secrets.fingerprint(),
                expected: from.to_string(),
            });
        }
        // A `.new` left by a rotation that never got recorded holds a key
        // nothing was sealed with.
        match std::fs::remove_file(pending) {
            Ok(()) => tracing::info!(path = %pending.display(), "removed an unused new key file"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(file_error(pending, &e)),
        }
        let next = KeyMaterial::generate();
        let to = next.fingerprint();
        next.write_new_file(pending)?;
        if !self.store.begin_key_rotation(from, &to).await? {
            let _ = std::fs::remove_file(pending);
            return Err(KeyError::Busy);
        }
        self.secrets.switch_to(&next).await;
        tracing::info!(key_file = %key_file.display(), from = %from, to = %to, "key rotation begun: new seals use the new key");
        Ok(to)
    }

    /// Step 4, until a pass finds nothing under the old key.
    pub(super) async fn reseal_everything(&self) -> Result<Pass, KeyError> {
        let mut total = Pass::default();
        for pass in 1..=MAX_PASSES {
            let done = self.reseal_pass().await?;
            tracing::debug!(
                pass,
                credentials = done.credentials,
                config_values = done.config_values,
                missed = done.missed,
                "re-seal pass"
            );
            total.credentials += done.credentials;
            total.config_values += done.config_values;
            total.unreadable = done.unreadable;
            if done.credentials + done.config_values + done.missed == 0 {
                return Ok(total);
            }
        }
        let last = self.reseal_pass().await?;
        if last.credentials + last.config_values + last.missed == 0 {
            total.unreadable = last.unreadable;
            return Ok(total);
        }
        Err(KeyError::Incomplete {
            remaining: last.missed,
            passes: MAX_PASSES + 1,
        })
    }

    async fn reseal_pass(&self) -> Result<Pass, KeyError> {
        let mut pass = Pass::default();
        let keys = self.store.credential_keys().await?;
        for batch in keys.chunks(BATCH) {
            let sealed = self.store.sealed_credentials(batch).await?;
            let mut updates = Vec::new();
            for (key, sealed) in batch.iter().zip(sealed) {
                let Some(sealed) = sealed else { continue };
                match self.secrets.open_with(&sealed) {
                    Ok((_, SealedWith::Current)) => {}
                    Ok((plain, SealedWith::Previous)) => updates.push(Reseal {
                        key: key.clone(),
                        new: self.secrets.seal(&plain)?,
                        old: sealed,
                    }),
                    Err(_) => pass.unreadable += 1,
                }
            }
            // A batch that kept colliding with password writes is missed
            // this pass, like a value changed under it; the next pass reads
            // it again.
            let written = match self.store.reseal_credentials(&updates).await {
                Err(StoreError::Contention) => {
                    tracing::debug!(
                        credentials = updates.len(),
                        "re-seal batch contended; next pass"
                    );
                    0
                }
                written => written?,
            };
            pass.credentials += written;
            pass.missed += updates.len() as u64 - written.min(updates.len() as u64);
        }
        for document in self.store.all_config().await? {
            let mut body = document.body.clone();
            let mut unreadable = 0;
            let replaced =
                reseal_values(&mut body, |sealed| match self.secrets.open_with(sealed) {
                    Ok((_, SealedWith::Current)) => Ok(None),
                    Ok((plain, SealedWith::Previous)) => self.secrets.seal(&plain).map(Some),
                    Err(_) => {
                        unreadable += 1;
                        Ok(None)
                    }
                })?;
            pass.unreadable += unreadable;
            if replaced == 0 {
                continue;
            }
            if self
                .store
                .reseal_config(&document.kind, &document.name, &document.body, &body)
                .await?
            {
                pass.config_values += replaced;
            } else {
                pass.missed += replaced;
            }
        }
        Ok(pass)
    }
}

/// Step 5's file half: the new key file replaces the old one, unless that
/// already happened (a resumed rotation).
fn install(key_file: &Path, pending: &Path, to: &str) -> Result<(), KeyError> {
    if pending.exists() {
        std::fs::rename(pending, key_file).map_err(|e| file_error(pending, &e))?;
        let dir = key_file
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        sync_dir(dir).map_err(|e| file_error(dir, &e))?;
        return Ok(());
    }
    match KeyMaterial::read_file(key_file)? {
        Some(key) if key.fingerprint() == to => Ok(()),
        _ => Err(KeyError::File {
            path: pending.display().to_string(),
            reason: "the new key file is gone and the key file does not hold the new key".into(),
        }),
    }
}

fn file_error(path: &Path, error: &std::io::Error) -> KeyError {
    KeyError::File {
        path: path.display().to_string(),
        reason: error.to_string(),
    }
}
