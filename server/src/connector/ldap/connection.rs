//! The one shared connection: opening and binding it (TLS included),
//! replacing it when found closed, running calls on it with their retry
//! rules, and turning ldap3's errors into the ones a caller acts on.

use std::future::Future;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Once};
use std::time::Duration;

use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, LdapError, LdapResult, Scope};
use tracing::Instrument;

use super::LdapConnector;
use crate::connector::ConnectorError;

/// How long the connection may go without an answer before an add or a
/// rename first checks it with a round trip. Calls in a steady stream never
/// pay it; one after a pause (in which the server may have restarted) pays
/// one round trip rather than failing with "may or may not have been applied".
pub(super) const PROBE_WHEN_QUIET_FOR: Duration = Duration::from_millis(100);

/// The shared connection, replaced when found closed. `generation` tells a
/// call that saw its connection fail whether someone replaced it already.
#[derive(Default)]
pub(super) struct Link {
    generation: u64,
    ldap: Option<Ldap>,
}

/// Whether a call may run again after its connection went away mid-call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Retry {
    /// Reads, replaces and deletes: running twice changes nothing more.
    Always,
    /// Adds and renames: only when the request never reached the socket.
    IfUnsent,
}

impl LdapConnector {
    /// The shared connection, opened (and bound) if there is none or the one
    /// there was closed.
    /// Also says whether the connection was opened for this call.
    pub(super) async fn handle(&self) -> Result<(u64, Ldap, bool), ConnectorError> {
        let mut link = self.link.lock().await;
        let generation = link.generation;
        if let Some(ldap) = link.ldap.as_mut()
            && !ldap.is_closed()
        {
            return Ok((generation, ldap.clone(), false));
        }
        link.ldap = None;
        let ldap = self.measured("connect", self.connect()).await?;
        self.heard_from_server();
        link.generation += 1;
        link.ldap = Some(ldap.clone());
        Ok((link.generation, ldap, true))
    }

    pub(super) fn heard_from_server(&self) {
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_answer_ms.store(now, Ordering::Relaxed);
    }

    fn quiet_for(&self) -> Duration {
        self.epoch.elapsed().saturating_sub(Duration::from_millis(
            self.last_answer_ms.load(Ordering::Relaxed),
        ))
    }

    /// A cheap round trip (the root DSE, no attributes): any answer proves
    /// the connection alive.
    async fn probe(&self, mut ldap: Ldap) -> Result<(), LdapError> {
        ldap.with_timeout(self.timeout)
            .search("", Scope::Base, "(objectClass=*)", vec!["1.1"])
            .await
            .map(|_| self.heard_from_server())
    }

    /// Drops the shared connection if it still is the one a call saw fail.
    pub(super) async fn forget(&self, generation: u64) {
        let mut link = self.link.lock().await;
        if link.generation == generation {
            link.ldap = None;
        }
    }

    async fn connect(&self) -> Result<Ldap, ConnectorError> {
        let is_tls = self.start_tls || self.url.to_ascii_lowercase().starts_with("ldaps://");
        if is_tls {
            install_crypto_provider();
        }
        let mut settings = LdapConnSettings::new()
            .set_conn_timeout(self.timeout)
            .set_starttls(self.start_tls)
            .set_no_tls_verify(!self.tls_verify);
        if let Some(config) = &self.tls_config {
            settings = settings.set_config(config.clone());
        }
        let (connection, mut ldap) = LdapConnAsync::with_settings(settings, &self.url)
            .await
            .map_err(|e| self.connection_error(e))?;
        let span = tracing::debug_span!("ldap.connection", connector = %self.name, url = %self.url);
        tokio::spawn(
            async move {
                if let Err(e) = connection.drive().await {
                    tracing::debug!(error = %e, "LDAP connection ended");
                }
            }
            .instrument(span),
        );
        if let Some(bind_dn) = &self.bind_dn {
            let bound = ldap
                .with_timeout(self.timeout)
                .simple_bind(bind_dn, &self.bind_password)
                .await
                .and_then(LdapResult::success);
            if let Err(e) = bound {
                return Err(match e {
                    LdapError::LdapResult { result } => self.rejected(
                        bind_dn,
                        format!("bind refused: {}", describe_result(&result)),
                    ),
                    other => self.connection_error(other),
                });
            }
        }
        tracing::debug!(connector = %self.name, url = %self.url, "LDAP connection open");
        Ok(ldap)
    }

    /// An error while opening the connection.
    fn connection_error(&self, e: LdapError) -> ConnectorError {
        match e {
            LdapError::Timeout { .. } => ConnectorError::Timeout {
                connector: self.name.clone(),
                object: self.url.clone(),
                after: self.timeout,
            },
            LdapError::UrlParsing { .. } | LdapError::UnknownScheme(_) => ConnectorError::Config {
                connector: self.name.clone(),
                field: "url".into(),
                message: e.to_string(),
            },
            LdapError::Rustls { .. } | LdapError::DNSName { .. } => {
                self.rejected(&self.url, format!("TLS: {e}"))
            }
            // A handshake that failed on the certificate: no retry helps.
            LdapError::Io { source }
                if source
                    .get_ref()
                    .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some()) =>
            {
                self.rejected(&self.url, format!("TLS: {source}"))
            }
            other => ConnectorError::Unavailable {
                connector: self.name.clone(),
                message: format!("{}: {other}", self.url),
            },
        }
    }

    /// An error of an operation on `object`.
    pub(super) fn operation_error(&self, object: &str, e: LdapError) -> ConnectorError {
        match e {
            LdapError::LdapResult { result } => self.result_error(object, &result),
            LdapError::Timeout { .. } => ConnectorError::Timeout {
                connector: self.name.clone(),
                object: object.to_string(),
                after: self.timeout,
            },
            e if connection_lost(&e) => ConnectorError::Unavailable {
                connector: self.name.clone(),
                message: format!("{}: connection lost ({object})", self.url),
            },
            LdapError::Io { source } => ConnectorError::Unavailable {
                connector: self.name.clone(),
                message: format!("{}: {source} ({object})", self.url),
            },
            other => ConnectorError::Io {
                connector: self.name.clone(),
                object: object.to_string(),
                message: other.to_string(),
            },
        }
    }

    /// A result code other than success, as the error a caller acts on.
    pub(super) fn result_error(&self, object: &str, result: &LdapResult) -> ConnectorError {
        match result.rc {
            68 => ConnectorError::AlreadyExists {
                connector: self.name.clone(),
                object: object.to_string(),
            },
            32 => ConnectorError::NotFound {
                connector: self.name.clone(),
                object: object.to_string(),
            },
            51 | 52 => ConnectorError::Unavailable {
                connector: self.name.clone(),
                message: format!("{} ({object})", describe_result(result)),
            },
            3 => ConnectorError::Timeout {
                connector: self.name.clone(),
                object: object.to_string(),
                after: self.timeout,
            },
            _ => self.rejected(object, describe_result(result)),
        }
    }

    /// Runs `call` on the shared connection; if the connection went away
    /// under it, forgets it and, when `retry` allows, runs `call` once more
    /// on a fresh one.
    pub(super) async fn run<T, F, Fut>(
        &self,
        object: &str,
        retry: Retry,
        call: F,
    ) -> Result<T, ConnectorError>
    where
        F: Fn(Ldap) -> Fut,
        Fut: Future<Output = Result<T, LdapError>>,
    {
        let mut retried = false;
        loop {
            let (generation, ldap, fresh) = self.handle().await?;
            // A connection quiet for a while may have died unnoticed (the
            // server restarted): before a call that cannot be retried
            // blindly, make sure with a round trip that a lost one costs.
            if retry == Retry::IfUnsent && !fresh && self.quiet_for() >= PROBE_WHEN_QUIET_FOR {
                match self.probe(ldap.clone()).await {
                    Ok(()) => {}
                    Err(e) if connection_lost(&e) => {
                        tracing::debug!(connector = %self.name, "LDAP connection found closed; opening a new one");
                        self.forget(generation).await;
                        continue;
                    }
                    Err(e) => return Err(self.operation_error(object, e)),
                }
            }
            let outcome = call(ldap).await;
            if matches!(outcome, Ok(_) | Err(LdapError::LdapResult { .. })) {
                self.heard_from_server();
            }
            match outcome {
                Ok(value) => return Ok(value),
                Err(e) if connection_lost(&e) => {
                    self.forget(generation).await;
                    let unsent = matches!(e, LdapError::OpSend { .. });
                    if !retried && (retry == Retry::Always || unsent) {
                        tracing::debug!(connector = %self.name, %object, "LDAP connection lost; retrying on a new one");
                        retried = true;
                        continue;
                    }
                    return Err(ConnectorError::Unavailable {
                        connector: self.name.clone(),
                        message: if retry == Retry::IfUnsent && !unsent {
                            format!(
                                "{}: connection lost during the call; it may or may not have been applied ({object})",
                                self.url
                            )
                        } else {
                            format!("{}: connection lost ({object})", self.url)
                        },
                    });
                }
                Err(e @ LdapError::Timeout { .. }) => {
                    // A connection that stopped answering may be half dead:
                    // the next call opens a new one.
                    self.forget(generation).await;
                    return Err(self.operation_error(object, e));
                }
                Err(e) => return Err(self.operation_error(object, e)),
            }
        }
    }
}

/// Errors that mean the connection is gone (closed by the server, reset).
pub(super) fn connection_lost(e: &LdapError) -> bool {
    matches!(
        e,
        LdapError::OpSend { .. }
            | LdapError::ResultRecv { .. }
            | LdapError::IdScrubSend { .. }
            | LdapError::EndOfStream
    )
}

/// `insufficientAccessRights (50): no write access to parent`.
fn describe_result(result: &LdapResult) -> String {
    let name = match result.rc {
        1 => "operationsError",
        2 => "protocolError",
        3 => "timeLimitExceeded",
        4 => "sizeLimitExceeded",
        7 => "authMethodNotSupported",
        8 => "strongerAuthRequired",
        11 => "adminLimitExceeded",
        12 => "unavailableCriticalExtension",
        13 => "confidentialityRequired",
        16 => "noSuchAttribute",
        17 => "undefinedAttributeType",
        18 => "inappropriateMatching",
        19 => "constraintViolation",
        20 => "attributeOrValueExists",
        21 => "invalidAttributeSyntax",
        32 => "noSuchObject",
        34 => "invalidDNSyntax",
        48 => "inappropriateAuthentication",
        49 => "invalidCredentials",
        50 => "insufficientAccessRights",
        51 => "busy",
        52 => "unavailable",
        53 => "unwillingToPerform",
        64 => "namingViolation",
        65 => "objectClassViolation",
        66 => "notAllowedOnNonLeaf",
        67 => "notAllowedOnRDN",
        68 => "entryAlreadyExists",
        69 => "objectClassModsProhibited",
        80 => "other",
        _ => "resultCode",
    };
    if result.text.is_empty() {
        format!("{name} ({})", result.rc)
    } else {
        format!("{name} ({}): {}", result.rc, result.text)
    }
}

/// A TLS client configuration trusting the certificates of a PEM file (an
/// internal CA).
pub(super) fn tls_config_trusting(file: &Path) -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;

    let mut roots = rustls::RootCertStore::empty();
    let certificates =
        CertificateDer::pem_file_iter(file).map_err(|e| format!("{}: {e}", file.display()))?;
    for certificate in certificates {
        let certificate = certificate.map_err(|e| format!("{}: {e}", file.display()))?;
        roots
            .add(certificate)
            .map_err(|e| format!("{}: {e}", file.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("{}: no PEM certificate in it", file.display()));
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Makes rustls use ring (the provider the tree builds) even if another
/// crate ever compiles in a second one, which would leave rustls unable to
/// pick a default.
fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}
