//! How every client of idmd (idmctl, the gateway, the tests) reaches it:
//! `http://` in clear, `https://` over rustls with the system's roots plus an
//! optional CA of your own. One place, so each client fails the same way.

use std::time::Duration;

use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

#[derive(Debug, thiserror::Error)]
pub enum DialError {
    #[error("endpoint {url}: expected http://HOST:PORT or https://HOST:PORT")]
    Scheme { url: String },
    #[error("endpoint {url}: {reason}")]
    Invalid { url: String, reason: String },
}

/// The endpoint for `url` (`host:port` alone means `http://host:port`).
/// `ca_pem`: extra trusted roots for `https://` (PEM), besides the system's.
pub fn endpoint(url: &str, ca_pem: Option<&[u8]>) -> Result<Endpoint, DialError> {
    let url = if url.contains("://") {
        url.to_string()
    } else {
        format!("http://{url}")
    };
    let lower = url.to_ascii_lowercase();
    let tls = if lower.starts_with("https://") {
        true
    } else if lower.starts_with("http://") {
        false
    } else {
        return Err(DialError::Scheme { url });
    };
    let invalid = |e: tonic::transport::Error| DialError::Invalid {
        url: url.clone(),
        reason: reason(&e),
    };
    let mut endpoint = Endpoint::from_shared(url.clone()).map_err(invalid)?;
    if tls {
        let mut config = ClientTlsConfig::new().with_native_roots();
        if let Some(pem) = ca_pem {
            config = config.ca_certificate(Certificate::from_pem(pem));
        }
        endpoint = endpoint.tls_config(config).map_err(invalid)?;
    }
    Ok(endpoint.connect_timeout(Duration::from_secs(10)))
}

/// The innermost causes of a transport error ("transport error" alone says
/// nothing): `tcp connect error: Connection refused (os error 111)`, or
/// `invalid peer certificate: UnknownIssuer`.
pub fn reason(error: &(dyn std::error::Error + 'static)) -> String {
    let mut causes: Vec<String> = Vec::new();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !causes.contains(&text) {
            causes.push(text);
        }
        source = cause.source();
    }
    if causes.is_empty() {
        error.to_string()
    } else {
        causes.join(": ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes() {
        assert!(endpoint("127.0.0.1:50051", None).is_ok());
        assert!(endpoint("http://idm.example:50051", None).is_ok());
        assert!(endpoint("https://idm.example:50051", None).is_ok());
        assert!(matches!(
            endpoint("ftp://idm.example", None),
            Err(DialError::Scheme { .. })
        ));
    }
}
