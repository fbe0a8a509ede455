//! Secret handling for private properties: an argon2 hash to verify a
//! password, and an AES-256-GCM sealed copy so a later provisioning step (an
//! LDAP `userPassword`) can recover it. Neither form is ever returned by an API.

use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit, OsRng};
use aes_gcm::{AeadCore, Aes256Gcm, Key, Nonce};
use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;

/// Env var holding the base64 of a 32-byte key; wins over the key file.
pub const KEY_ENV: &str = "IDM_ENCRYPTION_KEY";

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("encryption key from {source_name}: {reason}")]
    BadKey { source_name: String, reason: String },
    #[error("key file {path}: {reason}")]
    KeyFile { path: String, reason: String },
    #[error("a sealed secret could not be opened (wrong encryption key?)")]
    Unseal,
    #[error("password hashing failed: {0}")]
    Hash(String),
}

/// The server's encryption key and the operations on secrets.
pub struct SecretBox {
    cipher: Aes256Gcm,
}

impl SecretBox {
    /// Uses `IDM_ENCRYPTION_KEY` if set, else the key file, creating it (mode
    /// 0600) with a fresh random key on first start.
    pub fn load_or_create(key_file: &Path, env_key: Option<&str>) -> Result<Self, SecretError> {
        if let Some(encoded) = env_key {
            return Self::from_base64(encoded, KEY_ENV);
        }
        let shown = key_file.display().to_string();
        match std::fs::read_to_string(key_file) {
            Ok(text) => Self::from_base64(text.trim(), &shown),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = Aes256Gcm::generate_key(OsRng);
                write_private_file(key_file, &BASE64.encode(key)).map_err(|e| {
                    SecretError::KeyFile {
                        path: shown.clone(),
                        reason: e.to_string(),
                    }
                })?;
                tracing::info!(key_file = %shown, "generated a new encryption key");
                Ok(Self {
                    cipher: Aes256Gcm::new(&key),
                })
            }
            Err(e) => Err(SecretError::KeyFile {
                path: shown,
                reason: e.to_string(),
            }),
        }
    }

    fn from_base64(encoded: &str, source_name: &str) -> Result<Self, SecretError> {
        let bad = |reason: &str| SecretError::BadKey {
            source_name: source_name.to_string(),
            reason: reason.to_string(),
        };
        let bytes = BASE64.decode(encoded).map_err(|_| bad("not base64"))?;
        if bytes.len() != 32 {
            return Err(bad("expected 32 bytes (base64 of an AES-256 key)"));
        }
        let key = Key::<Aes256Gcm>::from_slice(&bytes);
        Ok(Self {
            cipher: Aes256Gcm::new(key),
        })
    }

    /// `base64(nonce || ciphertext)`.
    pub fn seal(&self, plaintext: &str) -> Result<String, SecretError> {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let ciphertext = self
            .cipher
            .encrypt(&nonce, plaintext.as_bytes())
            .map_err(|_| SecretError::Unseal)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ciphertext);
        Ok(BASE64.encode(out))
    }

    pub fn open(&self, sealed: &str) -> Result<String, SecretError> {
        let bytes = BASE64.decode(sealed).map_err(|_| SecretError::Unseal)?;
        if bytes.len() < 12 {
            return Err(SecretError::Unseal);
        }
        let (nonce, ciphertext) = bytes.split_at(12);
        let plaintext = self
            .cipher
            .decrypt(Nonce::from_slice(nonce), ciphertext)
            .map_err(|_| SecretError::Unseal)?;
        String::from_utf8(plaintext).map_err(|_| SecretError::Unseal)
    }
}

/// An argon2id hash in PHC string form. CPU-heavy: call from a blocking task.
pub fn hash_password(password: &str) -> Result<String, SecretError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| SecretError::Hash(e.to_string()))
}

/// Constant-time check of a password against a PHC hash. CPU-heavy.
pub fn verify_password(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc)
        .map(|hash| {
            Argon2::default()
                .verify_password(password.as_bytes(), &hash)
                .is_ok()
        })
        .unwrap_or(false)
}

fn write_private_file(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(contents.as_bytes())?;
    file.write_all(b"\n")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn sealed_secrets_open_only_with_the_same_key() {
        let dir = std::env::temp_dir().join(format!("idm-key-{}", uuid::Uuid::new_v4()));
        let key_file = dir.join("idm.key");
        let first = SecretBox::load_or_create(&key_file, None).unwrap();
        let sealed = first.seal("FooBar123").unwrap();
        assert!(!sealed.contains("FooBar123"));
        let again = SecretBox::load_or_create(&key_file, None).unwrap();
        assert_eq!(again.open(&sealed).unwrap(), "FooBar123");
        let other = SecretBox::load_or_create(&dir.join("other.key"), None).unwrap();
        assert!(other.open(&sealed).is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn password_hashes_verify() {
        let hash = hash_password("FooBar123").unwrap();
        assert!(verify_password("FooBar123", &hash));
        assert!(!verify_password("foobar123", &hash));
    }
}
