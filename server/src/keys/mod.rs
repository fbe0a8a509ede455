//! The encryption key's lifecycle: which key a store expects (its fingerprint
//! in `meta:key`, checked at every start) and rotation to a new key
//! (`rotate.rs`). The sealing itself is `secrets::SecretBox`.
//!
//! At start: a store without a fingerprint records the key's (a missing key
//! file is generated only then); a different key, or a missing key file,
//! stops idmd with what happened and what to do. A rotation cut short by a
//! stop is finished before idmd serves.

mod rotate;
mod walk;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::secrets::{KEY_ENV, KeyMaterial, KeySource, SecretBox, SecretError};
use crate::store::{Store, StoreError};

pub use rotate::Rotation;

/// How a sealed value inside a conf document is written (shared with the
/// connector-secret sealing): `{"$sealed": "<SecretBox::seal output>"}`.
pub const SEALED_KEY: &str = "$sealed";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{0}")]
    Secret(#[from] SecretError),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error(
        "the encryption key from {origin} (fingerprint {found}) is not the key this store's \
         secrets are sealed under (fingerprint {expected}), so its passwords and connector \
         secrets could not be opened. Restore the original key: the key file from a backup, or \
         {KEY_ENV} as it was. To change keys, start idmd with the original key and run \
         `idmctl keys rotate`"
    )]
    Mismatch {
        origin: String,
        found: String,
        expected: String,
    },
    #[error(
        "the key file {path} is missing, but this store's secrets are sealed under the key with \
         fingerprint {expected}; idmd does not replace it with a new key. Restore the key file \
         from a backup (or set {KEY_ENV} to the original key)"
    )]
    MissingKeyFile { path: String, expected: String },
    #[error(
        "the encryption key from {origin} (fingerprint {found}) does not open the secrets already \
         in this store (it has no key fingerprint yet: it predates the check). Start idmd with \
         the key this store was used with{generated}"
    )]
    DoesNotOpen {
        origin: String,
        found: String,
        /// Says that the key file was missing and nothing was written.
        generated: String,
    },
    #[error(
        "a key rotation from fingerprint {from} to {to} was interrupted, and {reason}. Start idmd \
         with the key file {path} (and without {KEY_ENV}) and its new key {pending}, so the \
         rotation can finish"
    )]
    Interrupted {
        from: String,
        to: String,
        path: String,
        pending: String,
        reason: String,
    },
    #[error(
        "the encryption key comes from {KEY_ENV}, which idmd cannot rewrite. To rotate: stop \
         idmd, write the current key into a key file (mode 0600), start idmd with --key-file \
         and without {KEY_ENV}, run `idmctl keys rotate`, then keep the rotated key file (or \
         set {KEY_ENV} to its contents)"
    )]
    FromEnv,
    #[error("a key rotation is already running")]
    Busy,
    #[error("key file {path}: {reason}")]
    File { path: String, reason: String },
    #[error(
        "{remaining} sealed values were still under the old key after {passes} passes \
         (concurrent writes?); the rotation stays recorded and `idmctl keys rotate` resumes it"
    )]
    Incomplete { remaining: u64, passes: u32 },
}

/// The key in use and its rotations. Shared by the API.
pub struct KeyManager {
    store: Store,
    secrets: Arc<SecretBox>,
    /// One rotation at a time in this process.
    rotation: tokio::sync::Mutex<()>,
}

/// What `GetKey` shows.
#[derive(Debug, Clone)]
pub struct KeyStatus {
    pub fingerprint: String,
    pub source: KeySource,
    /// The key a rotation under way re-seals to.
    pub rotating_to: Option<String>,
}

impl KeyManager {
    /// Loads the key (`IDM_ENCRYPTION_KEY` if set, else the key file) and
    /// checks it against the store's fingerprint; see the module doc.
    #[tracing::instrument(skip_all)]
    pub async fn open(
        store: Store,
        key_file: &Path,
        env_key: Option<&str>,
    ) -> Result<Self, KeyError> {
        let (source, loaded) = match env_key {
            Some(encoded) => (
                KeySource::Env,
                Some(KeyMaterial::from_base64(encoded, KEY_ENV)?),
            ),
            None => (
                KeySource::File(key_file.to_path_buf()),
                KeyMaterial::read_file(key_file)?,
            ),
        };
        let origin = source.to_string();
        let mut resume = false;
        let secrets = match (store.key_record().await?, loaded) {
            (None, loaded) => first_key(&store, source, loaded, key_file).await?,
            (Some(record), None) => {
                return Err(KeyError::MissingKeyFile {
                    path: key_file.display().to_string(),
                    expected: record.fingerprint,
                });
            }
            (Some(record), Some(key)) => {
                let found = key.fingerprint();
                match record.rotating_to {
                    None if found == record.fingerprint => SecretBox::new(source, &key),
                    None => {
                        return Err(KeyError::Mismatch {
                            origin,
                            found,
                            expected: record.fingerprint,
                        });
                    }
                    // The new key was installed: everything had been re-sealed to it.
                    Some(to) if found == to => {
                        store.finish_key_rotation(&record.fingerprint, &to).await?;
                        tracing::info!(fingerprint = %to, "finished an interrupted key rotation");
                        SecretBox::new(source, &key)
                    }
                    Some(to) if found == record.fingerprint => {
                        let pending = pending_path(key_file);
                        let interrupted = |reason: &str| KeyError::Interrupted {
                            from: record.fingerprint.clone(),
                            to: to.clone(),
                            path: key_file.display().to_string(),
                            pending: pending.display().to_string(),
                            reason: reason.to_string(),
                        };
                        if source == KeySource::Env {
                            return Err(interrupted("the key came from IDM_ENCRYPTION_KEY"));
                        }
                        match KeyMaterial::read_file(&pending)? {
                            Some(next) if next.fingerprint() == to => {
                                resume = true;
                                SecretBox::new(source, &next).with_previous(&key)
                            }
                            Some(_) => {
                                return Err(interrupted("the new key file holds another key"));
                            }
                            None => return Err(interrupted("the new key file is missing")),
                        }
                    }
                    Some(to) => {
                        return Err(KeyError::Mismatch {
                            origin,
                            found,
                            expected: format!("{}, or {to} while rotating", record.fingerprint),
                        });
                    }
                }
            }
        };
        tracing::info!(fingerprint = %secrets.fingerprint(), source = %secrets.source(), "encryption key checked against the store");
        let manager = KeyManager {
            store,
            secrets: Arc::new(secrets),
            rotation: tokio::sync::Mutex::new(()),
        };
        if resume {
            tracing::warn!("resuming a key rotation interrupted by the last stop");
            let done = manager.rotate().await?;
            tracing::info!(
                fingerprint = %done.fingerprint,
                credentials = done.credentials,
                config_values = done.config_values,
                "interrupted key rotation finished"
            );
        }
        Ok(manager)
    }

    pub fn secrets(&self) -> Arc<SecretBox> {
        Arc::clone(&self.secrets)
    }

    pub async fn status(&self) -> Result<KeyStatus, KeyError> {
        let record = self.store.key_record().await?;
        Ok(KeyStatus {
            fingerprint: self.secrets.fingerprint(),
            source: self.secrets.source().clone(),
            rotating_to: record.and_then(|r| r.rotating_to),
        })
    }
}

/// A store's first key: the one loaded, else a new one (written to the key
/// file only once it is known to fit the store); its fingerprint recorded.
async fn first_key(
    store: &Store,
    source: KeySource,
    loaded: Option<KeyMaterial>,
    key_file: &Path,
) -> Result<SecretBox, KeyError> {
    let generated = loaded.is_none();
    let key = loaded.unwrap_or_else(KeyMaterial::generate);
    let found = key.fingerprint();
    let secrets = SecretBox::new(source.clone(), &key);
    // A store from before fingerprints: its secrets must open with this key.
    if let Some(sealed) = store.any_sealed_credential().await?
        && secrets.open(&sealed).is_err()
    {
        return Err(KeyError::DoesNotOpen {
            origin: if generated {
                format!("a new key (the key file {} is missing)", key_file.display())
            } else {
                source.to_string()
            },
            found,
            generated: if generated {
                "; no key file was written".to_string()
            } else {
                String::new()
            },
        });
    }
    if generated {
        key.write_new_file(key_file)?;
        tracing::info!(key_file = %key_file.display(), "generated a new encryption key");
    }
    if !store.record_key(&found).await? {
        // Another node recorded its key first.
        let recorded = store.key_record().await?.map(|r| r.fingerprint);
        if recorded.as_deref() != Some(found.as_str()) {
            return Err(KeyError::Mismatch {
                origin: source.to_string(),
                found,
                expected: recorded.unwrap_or_default(),
            });
        }
    }
    tracing::info!(fingerprint = %found, "recorded the encryption key's fingerprint in the store");
    Ok(secrets)
}

/// Where a rotation writes the new key before it replaces the key file:
/// `<key file>.new`, beside it (same directory, so the rename is atomic).
pub fn pending_path(key_file: &Path) -> PathBuf {
    let mut name = key_file
        .file_name()
        .map(std::ffi::OsStr::to_os_string)
        .unwrap_or_else(|| "idm.key".into());
    name.push(".new");
    key_file.with_file_name(name)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests;
