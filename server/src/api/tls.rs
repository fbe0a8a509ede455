//! How idmd's gRPC listener is exposed: TLS from the operator's PEM files,
//! or plaintext on a loopback address only (or anywhere, when the operator
//! says a TLS-terminating proxy sits in front with `--allow-plaintext`).
//! Decided and checked at start, before the store is opened.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Once};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tonic::transport::{Identity, ServerTlsConfig};

/// A PEM file is read whole; a certificate chain and a key fit well within this.
const MAX_PEM_BYTES: u64 = 1024 * 1024;

/// How long a client gets to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// `--tls-cert` and `--tls-key`: paths, not secrets.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{file}: cannot read: {reason}")]
    Read { file: String, reason: String },
    #[error("{file}: {message}")]
    Invalid { file: String, message: String },
    #[error("{cert} and {key}: {reason}")]
    Pair {
        cert: String,
        key: String,
        reason: String,
    },
    #[error(
        "refusing to serve gRPC in plaintext on {addr}, which is not a loopback address: \
         give --tls-cert and --tls-key (IDM_TLS_CERT, IDM_TLS_KEY), or --allow-plaintext \
         (IDM_ALLOW_PLAINTEXT) when a TLS-terminating proxy is in front of idmd"
    )]
    PlaintextExposed { addr: SocketAddr },
}

/// The certificate chain and key idmd presents; the key never printed.
#[derive(Clone)]
pub struct ServerIdentity {
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
}

impl std::fmt::Debug for ServerIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerIdentity(<redacted>)")
    }
}

impl ServerIdentity {
    /// Reads and checks both files: at least one certificate, one private
    /// key, and a key that belongs to the (first) certificate. Errors name
    /// the file, never its contents.
    pub fn load(files: &TlsFiles) -> Result<Self, TlsError> {
        let cert_pem = read_pem(&files.cert)?;
        let key_pem = read_pem(&files.key)?;
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<_, _>>()
            .map_err(|_| invalid(&files.cert, "not a PEM certificate chain"))?;
        if certs.is_empty() {
            return Err(invalid(&files.cert, "no PEM CERTIFICATE block in it"));
        }
        let key = PrivateKeyDer::from_pem_slice(&key_pem)
            .map_err(|_| invalid(&files.key, "no PEM private key in it"))?;
        // The same check rustls makes when tonic builds its acceptor, on the
        // provider named here rather than a process-wide default.
        rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .and_then(|builder| builder.with_no_client_auth().with_single_cert(certs, key))
        .map_err(|e| TlsError::Pair {
            cert: files.cert.display().to_string(),
            key: files.key.display().to_string(),
            reason: e.to_string(),
        })?;
        Ok(ServerIdentity { cert_pem, key_pem })
    }

    pub(crate) fn server_config(&self) -> ServerTlsConfig {
        install_crypto_provider();
        ServerTlsConfig::new()
            .identity(Identity::from_pem(&self.cert_pem, &self.key_pem))
            .timeout(HANDSHAKE_TIMEOUT)
    }
}

/// How the listener will be exposed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exposure {
    Tls,
    /// Plaintext on a loopback address: only this host can reach it.
    PlaintextLoopback,
    /// Plaintext elsewhere, because the operator said so (`--allow-plaintext`).
    PlaintextAllowed,
}

/// The loopback rule: plaintext is refused on any address another host could
/// reach (`0.0.0.0` included), unless allowed explicitly.
pub fn exposure(addr: SocketAddr, tls: bool, allow_plaintext: bool) -> Result<Exposure, TlsError> {
    if tls {
        Ok(Exposure::Tls)
    } else if addr.ip().is_loopback() {
        Ok(Exposure::PlaintextLoopback)
    } else if allow_plaintext {
        Ok(Exposure::PlaintextAllowed)
    } else {
        Err(TlsError::PlaintextExposed { addr })
    }
}

fn read_pem(path: &Path) -> Result<Vec<u8>, TlsError> {
    use std::io::Read;
    let file = path.display().to_string();
    let read_error = |e: std::io::Error| TlsError::Read {
        file: file.clone(),
        reason: e.to_string(),
    };
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .map_err(read_error)?
        .take(MAX_PEM_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if bytes.len() as u64 > MAX_PEM_BYTES {
        return Err(invalid(path, "larger than 1 MiB; not a PEM file"));
    }
    Ok(bytes)
}

fn invalid(path: &Path, message: &str) -> TlsError {
    TlsError::Invalid {
        file: path.display().to_string(),
        message: message.to_string(),
    }
}

/// tonic builds its acceptor with rustls' process-wide provider: make that
/// ring (the provider the tree builds), whatever else ever gets compiled in.
fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn plaintext_only_on_loopback_unless_allowed() {
        for loopback in ["127.0.0.1:50051", "127.1.2.3:1", "[::1]:50051"] {
            assert_eq!(
                exposure(addr(loopback), false, false).unwrap(),
                Exposure::PlaintextLoopback
            );
        }
        for exposed in ["0.0.0.0:50051", "[::]:50051", "192.0.2.7:50051"] {
            let refused = exposure(addr(exposed), false, false).unwrap_err();
            let message = refused.to_string();
            assert!(message.contains("--tls-cert"), "{message}");
            assert!(message.contains("--allow-plaintext"), "{message}");
            assert_eq!(
                exposure(addr(exposed), false, true).unwrap(),
                Exposure::PlaintextAllowed
            );
            assert_eq!(exposure(addr(exposed), true, false).unwrap(), Exposure::Tls);
        }
    }

    #[test]
    fn unreadable_and_invalid_files_are_named_without_their_contents() {
        let dir = std::env::temp_dir().join(format!("idmd-tls-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let cert = dir.join("server.crt");
        let key = dir.join("server.key");
        std::fs::write(&cert, "not a certificate s3cr3t").unwrap();
        std::fs::write(
            &key,
            "-----BEGIN PRIVATE KEY-----\nczNjcjN0\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        let missing = TlsFiles {
            cert: cert.clone(),
            key: dir.join("absent.key"),
        };
        let error = ServerIdentity::load(&missing).unwrap_err().to_string();
        assert!(
            error.contains("absent.key") && error.contains("cannot read"),
            "{error}"
        );
        let garbage = TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
        };
        let error = ServerIdentity::load(&garbage).unwrap_err().to_string();
        assert!(error.contains("server.crt"), "{error}");
        assert!(!error.contains("s3cr3t"), "{error}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
