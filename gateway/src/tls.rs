//! The gateway's certificate: the operator's PEM files (`--tls-cert`,
//! `--tls-key`), or a self-signed one made on first start and kept under the
//! data directory, so `curl -k https://localhost:8443/...` works out of the
//! box; and the rustls server configuration built from it (ring, h2 and
//! http/1.1).
//!
//! A key's bytes never appear in an error or a log line: errors name the file
//! and say what is wrong with it.

use std::fs::{DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rcgen::{CertificateParams, DnType, KeyPair};
use rustls::ServerConfig;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, DnsName, PrivateKeyDer, ServerName, UnixTime};
use sha2::{Digest, Sha256};

/// How long a generated certificate is valid.
const SELF_SIGNED_LIFETIME: Duration = Duration::from_secs(365 * 24 * 60 * 60);
/// A kept certificate closer than this to its end is made again.
const RENEW_BEFORE: Duration = Duration::from_secs(24 * 60 * 60);

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
    #[error("--tls-cert {} and --tls-key {} do not go together: {reason}", cert.display(), key.display())]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
    #[error("cannot make a self-signed certificate: {0}")]
    Generate(String),
}

/// A certificate chain and its private key, ready to serve.
pub struct ServerCert {
    pub chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
}

impl ServerCert {
    /// The SHA-256 of the leaf certificate, as colon-separated hex (what
    /// browsers and `openssl x509 -fingerprint -sha256` show).
    pub fn fingerprint(&self) -> String {
        self.chain
            .first()
            .map(|leaf| fingerprint(leaf))
            .unwrap_or_default()
    }

    /// The rustls configuration: ring, safe default versions, no client
    /// certificates, ALPN h2 then http/1.1.
    pub fn server_config(self) -> Result<Arc<ServerConfig>, TlsError> {
        let mismatch = |reason: String| TlsError::Mismatch {
            cert: self.cert_path.clone(),
            key: self.key_path.clone(),
            reason,
        };
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| mismatch(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| mismatch(e.to_string()))?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

pub fn fingerprint(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The operator's certificate chain and key (PEM).
pub fn load(cert_path: &Path, key_path: &Path) -> Result<ServerCert, TlsError> {
    let chain = read_certificates(cert_path)?;
    let key = read_key(key_path)?;
    Ok(ServerCert {
        chain,
        key,
        cert_path: cert_path.to_path_buf(),
        key_path: key_path.to_path_buf(),
    })
}

/// The CA certificates in a PEM file (`--core-ca`): at least one.
pub fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let chain = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        // Reported by kind only: the parser's error can quote a line of the
        // file, which might be a key handed over by mistake.
        .map_err(|_| TlsError::Invalid {
            path: path.to_path_buf(),
            reason: "not a PEM certificate file".into(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::Invalid {
            path: path.to_path_buf(),
            reason: "no PEM certificate (-----BEGIN CERTIFICATE-----) in it".into(),
        });
    }
    Ok(chain)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    // The parse error is reported by kind only: it could quote the file.
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|_| TlsError::Invalid {
        path: path.to_path_buf(),
        reason: "no PEM private key (PKCS#8, PKCS#1 or SEC1) in it".into(),
    })
}

/// What became of the self-signed certificate at start.
pub enum Kept {
    /// Made now; the reason why (first start, or what was wrong with the
    /// kept one).
    Made(String),
    Reused,
}

/// `<data>/tls/cert.pem` and `key.pem`: reused while they parse, match and
/// are valid for `localhost` more than a day longer; made again otherwise.
/// The directories are created 0700 and the key file 0600.
pub fn self_signed(data: &Path) -> Result<(ServerCert, Kept), TlsError> {
    let dir = data.join("tls");
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    let reason = if !cert_path.exists() || !key_path.exists() {
        "none kept yet".to_string()
    } else {
        match reusable(&cert_path, &key_path) {
            Ok(cert) => return Ok((cert, Kept::Reused)),
            Err(reason) => reason,
        }
    };
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(|source| TlsError::Write {
            path: dir.clone(),
            source,
        })?;
    let (cert_pem, key_pem) = generate(SystemTime::now())?;
    write_new(&key_path, key_pem.as_bytes(), 0o600)?;
    write_new(&cert_path, cert_pem.as_bytes(), 0o644)?;
    Ok((load(&cert_path, &key_path)?, Kept::Made(reason)))
}

/// The kept pair if it can serve: parses, key matches, and a client that
/// trusts exactly this certificate accepts it for `localhost` now and a day
/// from now. Otherwise why not.
fn reusable(cert_path: &Path, key_path: &Path) -> Result<ServerCert, String> {
    let cert = load(cert_path, key_path).map_err(|e| e.to_string())?;
    let leaf = cert
        .chain
        .first()
        .ok_or_else(|| format!("{}: no certificate", cert_path.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(leaf.clone())
        .map_err(|e| format!("{}: {e}", cert_path.display()))?;
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|e| format!("{}: {e}", cert_path.display()))?;
    let name = ServerName::try_from("localhost").map_err(|e| e.to_string())?;
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    for at in [now, now + RENEW_BEFORE] {
        verifier
            .verify_server_cert(leaf, &[], &name, &[], UnixTime::since_unix_epoch(at))
            .map_err(|e| {
                if at == now {
                    format!("{}: {e}", cert_path.display())
                } else {
                    format!("{}: expires within a day", cert_path.display())
                }
            })?;
    }
    // Fails if the key is not the certificate's.
    ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(cert.chain.clone(), cert.key.clone_key())
        .map_err(|e| {
            format!(
                "{} does not match {}: {e}",
                key_path.display(),
                cert_path.display()
            )
        })?;
    Ok(cert)
}

/// The names a generated certificate covers: `localhost`, `127.0.0.1`,
/// `::1`, and this machine's host name when it is a valid DNS name.
pub fn self_signed_names() -> Vec<String> {
    let mut names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    let host = gethostname::gethostname();
    if let Some(host) = host.to_str().map(str::to_ascii_lowercase)
        && !names.contains(&host)
        && host.parse::<std::net::IpAddr>().is_err()
        && DnsName::try_from(host.as_str()).is_ok()
    {
        names.push(host);
    }
    names
}

/// A self-signed certificate for [`self_signed_names`], valid from an hour
/// ago (clock skew) for [`SELF_SIGNED_LIFETIME`]: `(cert PEM, key PEM)`.
fn generate(now: SystemTime) -> Result<(String, String), TlsError> {
    let fail = |e: rcgen::Error| TlsError::Generate(e.to_string());
    let mut params = CertificateParams::new(self_signed_names()).map_err(fail)?;
    params
        .distinguished_name
        .push(DnType::CommonName, "idm-gateway self-signed");
    let now = time::OffsetDateTime::from(now);
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + SELF_SIGNED_LIFETIME;
    let key = KeyPair::generate().map_err(fail)?;
    let cert = params.self_signed(&key).map_err(fail)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Writes `path` through a fresh sibling created with `mode` (so a key is
/// never readable by others, not even for a moment), then renames it over
/// `path`: a reader sees the old file or the whole new one.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), TlsError> {
    let error = |source| TlsError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut partial = path.as_os_str().to_owned();
    partial.push(".new");
    let partial = PathBuf::from(partial);
    let _ = std::fs::remove_file(&partial);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&partial)
        .map_err(error)?;
    file.write_all(bytes).map_err(error)?;
    file.sync_all().map_err(error)?;
    drop(file);
    std::fs::rename(&partial, path).map_err(error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn scratch(label: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "idm-gateway-tls-{label}-{}-{:?}",
            std::process::id(),
            SystemTime::now()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_self_signed_certificate_is_made_once_and_kept() {
        let data = scratch("kept");
        let (first, kept) = self_signed(&data).unwrap();
        assert!(matches!(kept, Kept::Made(_)));
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&first.key_path), 0o600);
        assert_eq!(mode(&data.join("tls")), 0o700);
        let (second, kept) = self_signed(&data).unwrap();
        assert!(matches!(kept, Kept::Reused));
        assert_eq!(first.fingerprint(), second.fingerprint());
        assert!(second.server_config().is_ok());
        std::fs::remove_dir_all(&data).unwrap();
    }

    #[test]
    fn an_expired_or_garbled_certificate_is_made_again() {
        let data = scratch("expired");
        let (first, _) = self_signed(&data).unwrap();
        let long_ago = SystemTime::now() - 2 * SELF_SIGNED_LIFETIME;
        let (cert, key) = generate(long_ago).unwrap();
        std::fs::write(&first.cert_path, cert).unwrap();
        std::fs::write(&first.key_path, key).unwrap();
        let (_, kept) = self_signed(&data).unwrap();
        assert!(
            matches!(&kept, Kept::Made(why) if why.contains("xpired")),
            "{}",
            match kept {
                Kept::Made(why) => why,
                Kept::Reused => "reused".into(),
            }
        );
        std::fs::write(&first.cert_path, "not a certificate").unwrap();
        let (_, kept) = self_signed(&data).unwrap();
        assert!(matches!(kept, Kept::Made(_)));
        std::fs::remove_dir_all(&data).unwrap();
    }

    #[test]
    fn a_key_of_another_certificate_is_refused_without_quoting_it() {
        let data = scratch("mismatch");
        let (a, _) = self_signed(&data.join("a")).unwrap();
        let (b, _) = self_signed(&data.join("b")).unwrap();
        let error = load(&a.cert_path, &b.key_path)
            .unwrap()
            .server_config()
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("do not go together"), "{error}");
        let key = std::fs::read_to_string(&b.key_path).unwrap();
        let body = key.lines().nth(1).unwrap();
        assert!(!error.contains(body));
        std::fs::write(&b.key_path, "garbage").unwrap();
        let error = load(&a.cert_path, &b.key_path).err().unwrap().to_string();
        assert!(
            error.contains("key.pem") && !error.contains("garbage"),
            "{error}"
        );
        std::fs::remove_dir_all(&data).unwrap();
    }

    #[test]
    fn names_cover_loopback() {
        let names = self_signed_names();
        assert_eq!(&names[..3], ["localhost", "127.0.0.1", "::1"]);
    }
}
