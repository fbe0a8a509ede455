//! The LDAP connector: reads and writes entries of an LDAP directory
//! (OpenLDAP, 389-ds, Active Directory) over one multiplexed connection.
//!
//! `connector-<name>.json`:
//!
//! ```json
//! { "connectorType": "ldap",
//!   "url": "ldap://127.0.0.1:3389", "baseDn": "dc=example,dc=org",
//!   "bindDn": "cn=admin,dc=example,dc=org", "bindPassword": "admin",
//!   "startTls": false, "tlsVerify": true, "tlsCaFile": null,
//!   "timeoutSeconds": 10, "pageSize": 500,
//!   "passwordHashing": "SSHA",
//!   "objectTypes": {
//!     "account": {"baseDn": null, "namingAttribute": "uid",
//!                 "objectClasses": ["top", "person", "organizationalPerson", "inetOrgPerson"],
//!                 "passwordAttribute": "userPassword"},
//!     "group": {"namingAttribute": "cn", "objectClasses": ["top", "groupOfNames"],
//!               "memberAttribute": "member", "placeholderMember": ""} } }
//! ```
//!
//! - An object's uid is its entry's DN. New entries are named
//!   `<namingAttribute>=<value>,<baseDn>` (an object type's `baseDn` defaults
//!   to the connector's), unless the attributes carry a `dn`.
//! - Objects read back as JSON: one value → a string, several → an array;
//!   `objectClass` is always an array. Binary values are base64.
//! - A type is the entries whose `objectClass` includes the last of its
//!   `objectClasses`.
//! - `passwordAttribute` values are written as `{SSHA}` hashes
//!   (`passwordHashing: "SSHA"`) or as given (`"cleartext"`, for directories
//!   that hash themselves); [`Connector::same_value`] checks a plaintext
//!   against the stored hash.
//! - `memberAttribute` holds DNs; `groupOfNames` requires at least one, so an
//!   emptied group gets `placeholderMember` (the empty DN `""` above), which
//!   is never read back.
//! - Lists and searches page with the Simple Paged Results control
//!   (`pageSize` entries per round trip), so a directory's size limit for
//!   unpaged searches (Active Directory's MaxPageSize) does not cut them.
//!
//! Connection: `ldap://` (optionally StartTLS) or `ldaps://`, opened on the
//! first call and bound as `bindDn` (anonymous without one). TLS checks the
//! server's certificate against the system's CAs, or only against those of
//! `tlsCaFile` (PEM, relative to the conf directory); `tlsVerify: false`
//! checks nothing (a lab only). Every call shares the one connection: ldap3
//! multiplexes operations on it, so concurrent calls are pipelined. A
//! connection found closed (the server restarted) is replaced on the next
//! call. A call that failed because the connection went away is retried once
//! on a fresh one when running it twice is harmless (reads, modifies,
//! deletes); an add or a rename only when it never left, and after a quiet
//! spell they first check the connection with a round trip, so the first
//! write after a server restart does not fail.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use idm_proto::filter::{AttrPath, CompareOp, Filter, Value as FilterValue};
use ldap3::adapters::PagedResults;
use ldap3::{
    LdapConnAsync, LdapConnSettings, LdapError, LdapResult, Mod, Scope, SearchEntry, SearchOptions,
    SearchStream,
};
use serde_json::{Map, Value};
use sha1::{Digest, Sha1};
use subtle::ConstantTimeEq;
use tokio::sync::Mutex;
use tracing::Instrument;

use super::{Capabilities, Connector, ConnectorError, ConnectorObject, ObjectTypeInfo, SourceItem};

type Ldap = ldap3::Ldap;
type EntryStream = SearchStream<'static, &'static str, Vec<&'static str>>;

/// Every user attribute; the bind DN decides what it may read.
const ALL_ATTRIBUTES: &str = "*";

/// How long the connection may go without an answer before an add or a
/// rename first checks it with a round trip. Calls in a steady stream never
/// pay it; one after a pause (in which the server may have restarted) pays
/// one round trip rather than failing with "may or may not have been applied".
const PROBE_WHEN_QUIET_FOR: Duration = Duration::from_millis(100);

pub struct LdapConnector {
    name: String,
    url: String,
    bind_dn: Option<String>,
    /// Never in a message or a log line.
    bind_password: String,
    start_tls: bool,
    tls_verify: bool,
    /// Trusting `tlsCaFile`'s certificates instead of the system's.
    tls_config: Option<Arc<rustls::ClientConfig>>,
    timeout: Duration,
    page_size: i32,
    hashing: PasswordHashing,
    types: BTreeMap<String, LdapType>,
    link: Mutex<Link>,
    epoch: Instant,
    /// When the server last answered, in ms since `epoch`.
    last_answer_ms: AtomicU64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PasswordHashing {
    /// `{SSHA}`: salted SHA-1, which OpenLDAP and 389-ds verify on bind.
    Ssha,
    /// As given: the directory hashes it (or the value already is a hash).
    Cleartext,
}

#[derive(Debug, Clone)]
struct LdapType {
    base_dn: String,
    naming_attribute: String,
    object_classes: Vec<String>,
    password_attribute: Option<String>,
    member_attribute: Option<String>,
    placeholder_member: Option<String>,
}

impl LdapType {
    /// The class that picks the type's entries: the most specific one.
    fn structural_class(&self) -> &str {
        self.object_classes.last().map_or("top", String::as_str)
    }

    fn class_filter(&self) -> String {
        format!(
            "(objectClass={})",
            escape_filter_value(self.structural_class())
        )
    }

    fn is_password(&self, attribute: &str) -> bool {
        self.password_attribute
            .as_deref()
            .is_some_and(|p| p.eq_ignore_ascii_case(attribute))
    }

    fn is_member(&self, attribute: &str) -> bool {
        self.member_attribute
            .as_deref()
            .is_some_and(|m| m.eq_ignore_ascii_case(attribute))
    }
}

/// The shared connection, replaced when found closed. `generation` tells a
/// call that saw its connection fail whether someone replaced it already.
#[derive(Default)]
struct Link {
    generation: u64,
    ldap: Option<Ldap>,
}

/// Whether a call may run again after its connection went away mid-call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Retry {
    /// Reads, replaces and deletes: running twice changes nothing more.
    Always,
    /// Adds and renames: only when the request never reached the socket.
    IfUnsent,
}

impl LdapConnector {
    /// `tlsCaFile`, if given, is relative to `conf_dir`.
    pub fn from_config(
        name: &str,
        body: &Map<String, Value>,
        conf_dir: &Path,
    ) -> Result<Self, ConnectorError> {
        let config_error = |field: &str, message: &str| ConnectorError::Config {
            connector: name.to_string(),
            field: field.to_string(),
            message: message.to_string(),
        };
        let url = string_field(body, "url").ok_or_else(|| {
            config_error("url", "required: ldap://host:port or ldaps://host:port")
        })?;
        let lower_url = url.to_ascii_lowercase();
        if !lower_url.starts_with("ldap://") && !lower_url.starts_with("ldaps://") {
            return Err(config_error(
                "url",
                &format!("\"{url}\" is not an ldap:// or ldaps:// URL"),
            ));
        }
        let base_dn = string_field(body, "baseDn")
            .filter(|b| !b.trim().is_empty())
            .map(|b| tidy_dn(&b))
            .ok_or_else(|| config_error("baseDn", "required, e.g. \"dc=example,dc=org\""))?;
        let bind_dn = string_field(body, "bindDn").filter(|d| !d.trim().is_empty());
        let bind_password = string_field(body, "bindPassword").unwrap_or_default();
        let start_tls =
            bool_field(body, "startTls", false).map_err(|m| config_error("startTls", &m))?;
        if start_tls && lower_url.starts_with("ldaps://") {
            return Err(config_error(
                "startTls",
                "an ldaps:// URL is TLS already; StartTLS is for ldap:// URLs",
            ));
        }
        let tls_verify =
            bool_field(body, "tlsVerify", true).map_err(|m| config_error("tlsVerify", &m))?;
        let tls_config = match string_field(body, "tlsCaFile").filter(|f| !f.is_empty()) {
            Some(file) if tls_verify => Some(
                tls_config_trusting(&conf_dir.join(&file))
                    .map_err(|m| config_error("tlsCaFile", &m))?,
            ),
            Some(_) => {
                return Err(config_error(
                    "tlsCaFile",
                    "tlsVerify is false: nothing would be checked against it",
                ));
            }
            None => None,
        };
        let timeout_seconds = number_field(body, "timeoutSeconds", 10.0)
            .map_err(|m| config_error("timeoutSeconds", &m))?;
        if !(timeout_seconds > 0.0 && timeout_seconds <= 86_400.0) {
            return Err(config_error(
                "timeoutSeconds",
                "a number of seconds above 0 and at most 86400",
            ));
        }
        let page_size =
            number_field(body, "pageSize", 500.0).map_err(|m| config_error("pageSize", &m))?;
        if !(1.0..=1_000_000.0).contains(&page_size) || page_size.fract() != 0.0 {
            return Err(config_error("pageSize", "a whole number from 1 to 1000000"));
        }
        let hashing = match string_field(body, "passwordHashing").as_deref() {
            None => PasswordHashing::Ssha,
            Some(h) if h.eq_ignore_ascii_case("ssha") => PasswordHashing::Ssha,
            Some(h) if h.eq_ignore_ascii_case("cleartext") => PasswordHashing::Cleartext,
            Some(other) => {
                return Err(config_error(
                    "passwordHashing",
                    &format!("\"{other}\" is not SSHA or cleartext"),
                ));
            }
        };

        let declared = body
            .get("objectTypes")
            .and_then(Value::as_object)
            .filter(|types| !types.is_empty())
            .ok_or_else(|| {
                config_error(
                    "objectTypes",
                    "required: {\"<type>\": {\"namingAttribute\": \"uid\", \"objectClasses\": […]}}",
                )
            })?;
        let mut types = BTreeMap::new();
        for (type_name, decl) in declared {
            let at = |field: &str| format!("objectTypes.{type_name}.{field}");
            let decl = decl.as_object().ok_or_else(|| ConnectorError::Config {
                connector: name.to_string(),
                field: format!("objectTypes.{type_name}"),
                message: "expected an object".into(),
            })?;
            let naming_attribute = string_field(decl, "namingAttribute")
                .ok_or_else(|| config_error(&at("namingAttribute"), "required, e.g. \"uid\""))?;
            check_attribute_name(&naming_attribute)
                .map_err(|m| config_error(&at("namingAttribute"), &m))?;
            let object_classes: Vec<String> = match decl.get("objectClasses") {
                Some(Value::Array(classes)) => classes
                    .iter()
                    .map(|c| c.as_str().map(str::to_string))
                    .collect::<Option<_>>()
                    .unwrap_or_default(),
                _ => Vec::new(),
            };
            if object_classes.is_empty() {
                return Err(config_error(
                    &at("objectClasses"),
                    "required: a non-empty array of class names, the most specific last",
                ));
            }
            let optional_attribute = |field: &str| -> Result<Option<String>, ConnectorError> {
                match string_field(decl, field).filter(|a| !a.is_empty()) {
                    None => Ok(None),
                    Some(a) => check_attribute_name(&a)
                        .map(|()| Some(a))
                        .map_err(|m| config_error(&at(field), &m)),
                }
            };
            let ldap_type = LdapType {
                base_dn: string_field(decl, "baseDn")
                    .filter(|b| !b.trim().is_empty())
                    .map_or_else(|| base_dn.clone(), |b| tidy_dn(&b)),
                naming_attribute,
                object_classes,
                password_attribute: optional_attribute("passwordAttribute")?,
                member_attribute: optional_attribute("memberAttribute")?,
                // "" is a real placeholder (the empty DN); absent means none.
                placeholder_member: string_field(decl, "placeholderMember"),
            };
            types.insert(type_name.clone(), ldap_type);
        }

        Ok(LdapConnector {
            name: name.to_string(),
            url,
            bind_dn,
            bind_password,
            start_tls,
            tls_verify,
            tls_config,
            timeout: Duration::from_secs_f64(timeout_seconds),
            // Checked above to be a whole number in 1..=1_000_000.
            page_size: i32::try_from(page_size as i64).unwrap_or(500),
            hashing,
            types,
            link: Mutex::new(Link::default()),
            epoch: Instant::now(),
            last_answer_ms: AtomicU64::new(0),
        })
    }

    fn ldap_type(&self, object_type: &str) -> Result<&LdapType, ConnectorError> {
        self.types
            .get(object_type)
            .ok_or_else(|| ConnectorError::UnknownObjectType {
                connector: self.name.clone(),
                object_type: object_type.to_string(),
            })
    }

    /// How errors name an object: `system/<connector>/<type>/<dn>`.
    fn object_name(&self, object_type: &str, dn: &str) -> String {
        format!("system/{}/{object_type}/{dn}", self.name)
    }

    fn rejected(&self, object: &str, message: impl Into<String>) -> ConnectorError {
        ConnectorError::Rejected {
            connector: self.name.clone(),
            object: object.to_string(),
            message: message.into(),
        }
    }

    // -----------------------------------------------------------------------
    // The connection

    /// The shared connection, opened (and bound) if there is none or the one
    /// there was closed.
    /// Also says whether the connection was opened for this call.
    async fn handle(&self) -> Result<(u64, Ldap, bool), ConnectorError> {
        let mut link = self.link.lock().await;
        let generation = link.generation;
        if let Some(ldap) = link.ldap.as_mut()
            && !ldap.is_closed()
        {
            return Ok((generation, ldap.clone(), false));
        }
        link.ldap = None;
        let ldap = self.connect().await?;
        self.heard_from_server();
        link.generation += 1;
        link.ldap = Some(ldap.clone());
        Ok((link.generation, ldap, true))
    }

    fn heard_from_server(&self) {
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
    async fn forget(&self, generation: u64) {
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
    fn operation_error(&self, object: &str, e: LdapError) -> ConnectorError {
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
    fn result_error(&self, object: &str, result: &LdapResult) -> ConnectorError {
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
    async fn run<T, F, Fut>(&self, object: &str, retry: Retry, call: F) -> Result<T, ConnectorError>
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

    // -----------------------------------------------------------------------
    // Reading

    async fn read_one(
        &self,
        object_type: &str,
        ldap_type: &LdapType,
        uid: &str,
    ) -> Result<Option<ConnectorObject>, ConnectorError> {
        let object = self.object_name(object_type, uid);
        let timeout = self.timeout;
        let (base, scope, filter) = if looks_like_dn(uid) {
            (uid.to_string(), Scope::Base, ldap_type.class_filter())
        } else {
            let naming = format!(
                "({}={})",
                ldap_type.naming_attribute,
                escape_filter_value(uid)
            );
            (
                ldap_type.base_dn.clone(),
                Scope::Subtree,
                format!("(&{}{naming})", ldap_type.class_filter()),
            )
        };
        let (entries, result) = self
            .run(&object, Retry::Always, |mut ldap| {
                let (base, filter) = (base.clone(), filter.clone());
                async move {
                    ldap.with_timeout(timeout)
                        .with_search_options(SearchOptions::new().sizelimit(2))
                        .search(&base, scope, &filter, vec![ALL_ATTRIBUTES])
                        .await
                        .map(|r| (r.0, r.1))
                }
            })
            .await?;
        let entries: Vec<SearchEntry> = entries
            .into_iter()
            .filter(|e| !e.is_ref() && !e.is_intermediate())
            .map(SearchEntry::construct)
            .collect();
        match result.rc {
            0 | 4 | 10 => {}
            32 => return Ok(None),
            _ => return Err(self.result_error(&object, &result)),
        }
        match entries.len() {
            0 => Ok(None),
            1 => Ok(entries
                .into_iter()
                .next()
                .map(|entry| to_object(ldap_type, entry))),
            _ => Err(self.rejected(
                &object,
                format!(
                    "more than one entry has {}={uid} under {}",
                    ldap_type.naming_attribute, ldap_type.base_dn
                ),
            )),
        }
    }

    /// Every entry under the type's base matching `filter`, a page at a time.
    fn paged_search<'a>(
        &'a self,
        object_type: &'a str,
        filter: String,
    ) -> BoxStream<'a, Result<SourceItem, ConnectorError>> {
        let ldap_type = match self.ldap_type(object_type) {
            Ok(t) => t,
            Err(e) => return futures::stream::once(async { Err(e) }).boxed(),
        };
        let span = tracing::info_span!("ldap.search", connector = %self.name, object_type, %filter);
        let state = Paging {
            stream: None,
            generation: 0,
            yielded: 0,
            retried: false,
            done: false,
        };
        let object = format!(
            "system/{}/{object_type} under {}",
            self.name, ldap_type.base_dn
        );
        futures::stream::unfold(state, move |mut state| {
            let (filter, object) = (filter.clone(), object.clone());
            async move {
                let item = self
                    .next_entry(ldap_type, &object, &filter, &mut state)
                    .await?;
                Some((item, state))
            }
            .instrument(span.clone())
        })
        .boxed()
    }

    /// The next item of a paged search; `None` at its end.
    async fn next_entry(
        &self,
        ldap_type: &LdapType,
        object: &str,
        filter: &str,
        state: &mut Paging,
    ) -> Option<Result<SourceItem, ConnectorError>> {
        loop {
            if state.done {
                return None;
            }
            if state.stream.is_none() {
                match self.open_search(ldap_type, filter).await {
                    Ok((generation, stream)) => {
                        state.generation = generation;
                        state.stream = Some(stream);
                    }
                    Err(OpenError::Connect(e)) => {
                        state.done = true;
                        return Some(Err(e));
                    }
                    Err(OpenError::Search(generation, e)) => {
                        if connection_lost(&e) {
                            self.forget(generation).await;
                            if !state.retried {
                                state.retried = true;
                                continue;
                            }
                        }
                        state.done = true;
                        return Some(Err(self.operation_error(object, e)));
                    }
                }
            }
            let stream = state.stream.as_mut()?;
            match stream.next().await {
                Ok(Some(entry)) => {
                    if entry.is_ref() || entry.is_intermediate() {
                        continue;
                    }
                    state.yielded += 1;
                    self.heard_from_server();
                    let entry = SearchEntry::construct(entry);
                    return Some(Ok(SourceItem::Object(to_object(ldap_type, entry))));
                }
                Ok(None) => {
                    let result = stream.finish().await;
                    state.done = true;
                    return match result.rc {
                        0 | 10 => None,
                        _ => Some(Err(self.result_error(object, &result))),
                    };
                }
                Err(e) => {
                    state.stream = None;
                    if connection_lost(&e) {
                        self.forget(state.generation).await;
                        // Nothing was handed out yet: the whole read can start over.
                        if state.yielded == 0 && !state.retried {
                            state.retried = true;
                            continue;
                        }
                    } else if matches!(e, LdapError::Timeout { .. }) {
                        self.forget(state.generation).await;
                    }
                    state.done = true;
                    return Some(Err(self.operation_error(object, e)));
                }
            }
        }
    }

    /// Starts a paged subtree search.
    async fn open_search(
        &self,
        ldap_type: &LdapType,
        filter: &str,
    ) -> Result<(u64, EntryStream), OpenError> {
        let (generation, mut ldap, _) = self.handle().await.map_err(OpenError::Connect)?;
        ldap.with_timeout(self.timeout)
            .streaming_search_with(
                PagedResults::new(self.page_size),
                &ldap_type.base_dn,
                Scope::Subtree,
                filter,
                vec![ALL_ATTRIBUTES],
            )
            .await
            .map(|stream| (generation, stream))
            .map_err(|e| OpenError::Search(generation, e))
    }

    // -----------------------------------------------------------------------
    // Writing

    /// The attributes of a new entry, as LDAP value sets.
    fn entry_attributes(
        &self,
        object: &str,
        ldap_type: &LdapType,
        attributes: &Map<String, Value>,
    ) -> Result<Vec<(String, HashSet<String>)>, ConnectorError> {
        let mut entry = Vec::new();
        if !attributes
            .keys()
            .any(|k| k.eq_ignore_ascii_case("objectClass"))
        {
            entry.push((
                "objectClass".to_string(),
                ldap_type.object_classes.iter().cloned().collect(),
            ));
        }
        for (name, value) in attributes {
            if name.eq_ignore_ascii_case("dn") {
                continue;
            }
            let values = self.ldap_values(object, ldap_type, name, value)?;
            if !values.is_empty() {
                entry.push((name.clone(), values));
            }
        }
        Ok(entry)
    }

    /// One attribute's JSON value as the set of LDAP values to write: the
    /// password hashed, an empty member list as the placeholder.
    fn ldap_values(
        &self,
        object: &str,
        ldap_type: &LdapType,
        name: &str,
        value: &Value,
    ) -> Result<HashSet<String>, ConnectorError> {
        check_attribute_name(name).map_err(|m| self.rejected(object, m))?;
        let mut values: HashSet<String> = text_values(value)
            .map_err(|m| self.rejected(object, format!("{name}: {m}")))?
            .into_iter()
            .collect();
        if ldap_type.is_password(name) && self.hashing == PasswordHashing::Ssha {
            values = values
                .into_iter()
                .map(|v| if is_hashed(&v) { v } else { ssha(&v) })
                .collect();
        }
        if ldap_type.is_member(name)
            && let Some(placeholder) = &ldap_type.placeholder_member
        {
            values.retain(|v| !same_dn(v, placeholder));
            if values.is_empty() {
                values.insert(placeholder.clone());
            }
        }
        Ok(values)
    }

    fn dn_for(
        &self,
        ldap_type: &LdapType,
        attributes: &Map<String, Value>,
    ) -> Result<String, String> {
        if let Some((_, dn)) = attributes
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("dn"))
        {
            return match dn {
                Value::String(dn) if !dn.trim().is_empty() => Ok(dn.clone()),
                _ => Err("dn must be a non-empty string".into()),
            };
        }
        let naming = &ldap_type.naming_attribute;
        let value = attributes
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(naming))
            .map(|(_, v)| v)
            .ok_or_else(|| {
                format!("no dn and no {naming} (the naming attribute) to name the entry")
            })?;
        let value = match text_values(value)?.as_slice() {
            [one] if !one.is_empty() => one.clone(),
            _ => {
                return Err(format!(
                    "{naming} (the naming attribute) needs exactly one value"
                ));
            }
        };
        Ok(format!(
            "{naming}={},{}",
            escape_dn_value(&value),
            ldap_type.base_dn
        ))
    }

    async fn create_entry(
        &self,
        object_type: &str,
        attributes: &Map<String, Value>,
    ) -> Result<String, ConnectorError> {
        let ldap_type = self.ldap_type(object_type)?;
        let dn = self
            .dn_for(ldap_type, attributes)
            .map_err(|m| self.rejected(&format!("system/{}/{object_type}", self.name), m))?;
        tracing::Span::current().record("dn", dn.as_str());
        let object = self.object_name(object_type, &dn);
        let entry = self.entry_attributes(&object, ldap_type, attributes)?;
        let timeout = self.timeout;
        self.run(&object, Retry::IfUnsent, |mut ldap| {
            let (dn, entry) = (dn.as_str(), entry.clone());
            async move {
                ldap.with_timeout(timeout)
                    .add(dn, entry)
                    .await
                    .and_then(LdapResult::success)
            }
        })
        .await?;
        Ok(dn)
    }

    async fn update_entry(
        &self,
        object_type: &str,
        uid: &str,
        changes: &Map<String, Value>,
    ) -> Result<String, ConnectorError> {
        let ldap_type = self.ldap_type(object_type)?;
        if changes.is_empty() {
            return Ok(uid.to_string());
        }
        let timeout = self.timeout;
        let mut dn = uid.to_string();

        if let Some(rename) = self.rename_for(ldap_type, uid, changes)? {
            let object = self.object_name(object_type, uid);
            self.run(&object, Retry::IfUnsent, |mut ldap| {
                let rename = &rename;
                async move {
                    ldap.with_timeout(timeout)
                        .modifydn(uid, &rename.rdn, true, rename.new_superior.as_deref())
                        .await
                        .and_then(LdapResult::success)
                }
            })
            .await?;
            tracing::debug!(from = %uid, to = %rename.dn, "LDAP entry renamed");
            dn = rename.dn;
        }
        tracing::Span::current().record("dn", dn.as_str());

        let object = self.object_name(object_type, &dn);
        let mut mods = Vec::new();
        for (name, value) in changes {
            if name.eq_ignore_ascii_case("dn") {
                continue;
            }
            // An empty set replaces the attribute with nothing: it goes, and
            // an attribute already absent is no error (RFC 4511 §4.6).
            mods.push(Mod::Replace(
                name.clone(),
                self.ldap_values(&object, ldap_type, name, value)?,
            ));
        }
        if !mods.is_empty() {
            self.run(&object, Retry::Always, |mut ldap| {
                let (dn, mods) = (dn.as_str(), mods.clone());
                async move {
                    ldap.with_timeout(timeout)
                        .modify(dn, mods)
                        .await
                        .and_then(LdapResult::success)
                }
            })
            .await?;
        }
        Ok(dn)
    }

    /// The rename `changes` ask for, if any: a `dn` other than `uid`, or a
    /// new value of the naming attribute when it names the entry.
    fn rename_for(
        &self,
        ldap_type: &LdapType,
        uid: &str,
        changes: &Map<String, Value>,
    ) -> Result<Option<Rename>, ConnectorError> {
        let object = || format!("system/{}/{uid}", self.name);
        let (old_rdn, old_parent) = split_dn(uid);
        if let Some((_, new_dn)) = changes.iter().find(|(k, _)| k.eq_ignore_ascii_case("dn")) {
            let Some(new_dn) = new_dn.as_str().filter(|d| !d.trim().is_empty()) else {
                return Err(self.rejected(&object(), "dn must be a non-empty string"));
            };
            if same_dn(new_dn, uid) {
                return Ok(None);
            }
            let (rdn, parent) = split_dn(new_dn);
            return Ok(Some(Rename {
                rdn: rdn.to_string(),
                new_superior: (!same_dn(parent, old_parent)).then(|| parent.to_string()),
                dn: new_dn.to_string(),
            }));
        }
        let naming = &ldap_type.naming_attribute;
        let Some((_, wanted)) = changes.iter().find(|(k, _)| k.eq_ignore_ascii_case(naming)) else {
            return Ok(None);
        };
        let Some((rdn_attribute, rdn_value)) = old_rdn.split_once('=') else {
            return Ok(None);
        };
        if !rdn_attribute.trim().eq_ignore_ascii_case(naming) {
            // The entry is named by another attribute: a plain change.
            return Ok(None);
        }
        let new_value = match text_values(wanted)
            .map_err(|m| self.rejected(&object(), m))?
            .as_slice()
        {
            [one] if !one.is_empty() => one.clone(),
            _ => {
                return Err(self.rejected(
                    &object(),
                    format!("{naming} names the entry: it needs exactly one value"),
                ));
            }
        };
        if unescape_dn_value(rdn_value.trim()).to_lowercase() == new_value.to_lowercase() {
            return Ok(None);
        }
        let rdn = format!("{naming}={}", escape_dn_value(&new_value));
        let dn = if old_parent.is_empty() {
            rdn.clone()
        } else {
            format!("{rdn},{old_parent}")
        };
        Ok(Some(Rename {
            rdn,
            new_superior: None,
            dn,
        }))
    }

    async fn delete_entry(&self, object_type: &str, uid: &str) -> Result<(), ConnectorError> {
        self.ldap_type(object_type)?;
        let object = self.object_name(object_type, uid);
        let timeout = self.timeout;
        self.run(&object, Retry::Always, |mut ldap| async move {
            let result = ldap.with_timeout(timeout).delete(uid).await?;
            if result.rc == 32 {
                // Already gone: what a delete wants.
                return Ok(());
            }
            result.success().map(|_| ())
        })
        .await
    }
}

struct Rename {
    rdn: String,
    new_superior: Option<String>,
    dn: String,
}

/// Why a paged search did not start: no connection, or the search request
/// failed on connection `generation`.
enum OpenError {
    Connect(ConnectorError),
    Search(u64, LdapError),
}

struct Paging {
    stream: Option<EntryStream>,
    generation: u64,
    yielded: u64,
    retried: bool,
    done: bool,
}

impl Connector for LdapConnector {
    fn name(&self) -> &str {
        &self.name
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            read: true,
            create: true,
            update: true,
            delete: true,
        }
    }

    fn object_types(&self) -> Vec<ObjectTypeInfo> {
        self.types
            .iter()
            .map(|(name, t)| ObjectTypeInfo {
                name: name.clone(),
                uid_attribute: "dn".into(),
                attributes: ["objectClass".to_string(), t.naming_attribute.clone()]
                    .into_iter()
                    .chain(t.password_attribute.clone())
                    .chain(t.member_attribute.clone())
                    .collect(),
            })
            .collect()
    }

    fn get<'a>(
        &'a self,
        object_type: &'a str,
        uid: &'a str,
    ) -> BoxFuture<'a, Result<Option<ConnectorObject>, ConnectorError>> {
        let span = tracing::info_span!("ldap.get", connector = %self.name, object_type, uid);
        async move {
            let ldap_type = self.ldap_type(object_type)?;
            self.read_one(object_type, ldap_type, uid).await
        }
        .instrument(span)
        .boxed()
    }

    fn query<'a>(
        &'a self,
        object_type: &'a str,
    ) -> BoxStream<'a, Result<SourceItem, ConnectorError>> {
        match self.ldap_type(object_type) {
            Ok(t) => self.paged_search(object_type, t.class_filter()),
            Err(e) => futures::stream::once(async { Err(e) }).boxed(),
        }
    }

    fn search<'a>(
        &'a self,
        object_type: &'a str,
        filter: &'a Filter,
    ) -> BoxStream<'a, Result<SourceItem, ConnectorError>> {
        let ldap_type = match self.ldap_type(object_type) {
            Ok(t) => t,
            Err(e) => return futures::stream::once(async { Err(e) }).boxed(),
        };
        match ldap_filter(filter) {
            Ok(translated) => self.paged_search(
                object_type,
                format!("(&{}{translated})", ldap_type.class_filter()),
            ),
            Err(message) => {
                let refused = self.rejected(
                    &format!("system/{}/{object_type}", self.name),
                    format!("filter {filter}: {message}"),
                );
                futures::stream::once(async { Err(refused) }).boxed()
            }
        }
    }

    fn uid_for(&self, object_type: &str, attributes: &Map<String, Value>) -> Option<String> {
        let ldap_type = self.types.get(object_type)?;
        self.dn_for(ldap_type, attributes).ok()
    }

    fn same_value(
        &self,
        object_type: &str,
        attribute: &str,
        current: Option<&Value>,
        wanted: &Value,
    ) -> bool {
        let ldap_type = self.types.get(object_type);
        let current = match current.map(text_values) {
            None => Vec::new(),
            Some(Ok(values)) => values,
            Some(Err(_)) => return false,
        };
        let Ok(mut wanted) = text_values(wanted) else {
            return false;
        };
        let is_member = ldap_type.is_some_and(|t| t.is_member(attribute));
        if is_member
            && let Some(placeholder) = ldap_type.and_then(|t| t.placeholder_member.as_ref())
        {
            wanted.retain(|v| !same_dn(v, placeholder));
        }
        if ldap_type.is_some_and(|t| t.is_password(attribute)) {
            return match (current.as_slice(), wanted.as_slice()) {
                ([], []) => true,
                ([stored], [plain]) => stored == plain || verify_password(stored, plain),
                _ => false,
            };
        }
        let normalize = |values: Vec<String>| -> HashSet<String> {
            values
                .into_iter()
                .map(|v| {
                    if is_member {
                        normalize_dn(&v)
                    } else {
                        v.to_lowercase()
                    }
                })
                .collect()
        };
        normalize(current) == normalize(wanted)
    }

    fn create<'a>(
        &'a self,
        object_type: &'a str,
        attributes: &'a Map<String, Value>,
    ) -> BoxFuture<'a, Result<String, ConnectorError>> {
        let span = tracing::info_span!(
            "ldap.create",
            connector = %self.name,
            object_type,
            dn = tracing::field::Empty
        );
        self.create_entry(object_type, attributes)
            .instrument(span)
            .boxed()
    }

    fn update<'a>(
        &'a self,
        object_type: &'a str,
        uid: &'a str,
        changes: &'a Map<String, Value>,
    ) -> BoxFuture<'a, Result<String, ConnectorError>> {
        let span = tracing::info_span!(
            "ldap.update",
            connector = %self.name,
            object_type,
            uid,
            dn = tracing::field::Empty
        );
        self.update_entry(object_type, uid, changes)
            .instrument(span)
            .boxed()
    }

    fn delete<'a>(
        &'a self,
        object_type: &'a str,
        uid: &'a str,
    ) -> BoxFuture<'a, Result<(), ConnectorError>> {
        let span = tracing::info_span!("ldap.delete", connector = %self.name, object_type, uid);
        self.delete_entry(object_type, uid).instrument(span).boxed()
    }
}

// ---------------------------------------------------------------------------
// Helpers: connection errors

/// Errors that mean the connection is gone (closed by the server, reset).
fn connection_lost(e: &LdapError) -> bool {
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
fn tls_config_trusting(file: &Path) -> Result<Arc<rustls::ClientConfig>, String> {
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

// ---------------------------------------------------------------------------
// Helpers: values

/// A JSON value as LDAP text values: strings as they are, numbers in JSON
/// form, booleans as LDAP's `TRUE`/`FALSE`; `null` and `[]` as no value.
fn text_values(value: &Value) -> Result<Vec<String>, String> {
    fn one(value: &Value) -> Result<String, String> {
        match value {
            Value::String(s) => Ok(s.clone()),
            Value::Number(n) => Ok(n.to_string()),
            Value::Bool(true) => Ok("TRUE".into()),
            Value::Bool(false) => Ok("FALSE".into()),
            Value::Null | Value::Array(_) | Value::Object(_) => {
                Err("an LDAP value is a string, a number or a boolean".into())
            }
        }
    }
    match value {
        Value::Null => Ok(Vec::new()),
        Value::Array(items) => items
            .iter()
            .filter(|item| !item.is_null())
            .map(one)
            .collect(),
        other => one(other).map(|v| vec![v]),
    }
}

/// An entry as a connector object: one value → a string, several → an array,
/// `objectClass` always an array; the placeholder member is left out.
fn to_object(ldap_type: &LdapType, entry: SearchEntry) -> ConnectorObject {
    let mut attributes: Vec<(String, Vec<String>)> = entry.attrs.into_iter().collect();
    attributes.extend(entry.bin_attrs.into_iter().map(|(name, values)| {
        let encoded = values.iter().map(|v| BASE64.encode(v)).collect();
        (name, encoded)
    }));
    attributes.sort_by_key(|a| a.0.to_lowercase());
    let mut map = Map::new();
    for (name, mut values) in attributes {
        if ldap_type.is_member(&name)
            && let Some(placeholder) = &ldap_type.placeholder_member
        {
            values.retain(|v| !same_dn(v, placeholder));
        }
        let value = match values.len() {
            0 => continue,
            1 if !name.eq_ignore_ascii_case("objectClass") => {
                Value::String(values.into_iter().next().unwrap_or_default())
            }
            _ => Value::Array(values.into_iter().map(Value::String).collect()),
        };
        map.insert(name, value);
    }
    ConnectorObject {
        uid: entry.dn,
        attributes: map,
        line: None,
    }
}

fn string_field(map: &Map<String, Value>, key: &str) -> Option<String> {
    map.get(key).and_then(Value::as_str).map(str::to_string)
}

/// A boolean, or its text (what an `$env` reference resolves to).
fn bool_field(map: &Map<String, Value>, key: &str, default: bool) -> Result<bool, String> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(true),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Ok(false),
        Some(_) => Err("true or false".into()),
    }
}

/// A number, or its text (what an `$env` reference resolves to).
fn number_field(map: &Map<String, Value>, key: &str, default: f64) -> Result<f64, String> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Number(n)) => n.as_f64().ok_or_else(|| "a number".to_string()),
        Some(Value::String(s)) => s.trim().parse().map_err(|_| "a number".to_string()),
        Some(_) => Err("a number".into()),
    }
}

/// An LDAP attribute description: a name (letter, then letters, digits,
/// hyphens) or a numeric OID, with optional `;options`.
fn check_attribute_name(name: &str) -> Result<(), String> {
    let mut parts = name.split(';');
    let base = parts.next().unwrap_or_default();
    let is_name = base.starts_with(|c: char| c.is_ascii_alphabetic())
        && base.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    let is_oid = !base.is_empty()
        && base
            .split('.')
            .all(|arc| !arc.is_empty() && arc.chars().all(|c| c.is_ascii_digit()));
    let options_ok =
        parts.all(|o| !o.is_empty() && o.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
    if (is_name || is_oid) && options_ok {
        Ok(())
    } else {
        Err(format!("\"{name}\" is not an LDAP attribute name"))
    }
}

// ---------------------------------------------------------------------------
// Helpers: passwords

/// `{SSHA}` of a password: base64(SHA-1(password + salt) + salt), 8 random
/// salt bytes.
fn ssha(password: &str) -> String {
    let salt: [u8; 8] = rand::random();
    let mut hasher = Sha1::new();
    hasher.update(password.as_bytes());
    hasher.update(salt);
    let mut bytes = hasher.finalize().to_vec();
    bytes.extend_from_slice(&salt);
    format!("{{SSHA}}{}", BASE64.encode(bytes))
}

/// Whether a value already is a `{SCHEME}` hash (written as it is).
fn is_hashed(value: &str) -> bool {
    let upper = value
        .get(..7)
        .map(str::to_ascii_uppercase)
        .unwrap_or_default();
    upper.starts_with("{SSHA}")
        || upper.starts_with("{SHA}")
        || upper.starts_with("{CRYPT}")
        || upper.starts_with("{SSHA5")
        || upper.starts_with("{SHA5")
        || upper.starts_with("{ARGON")
        || upper.starts_with("{PBKDF")
}

/// Whether a stored `{SSHA}` / `{SHA}` hash (or cleartext) is this password.
fn verify_password(stored: &str, password: &str) -> bool {
    let scheme_end = stored.find('}').filter(|_| stored.starts_with('{'));
    let Some(end) = scheme_end else {
        return bool::from(stored.as_bytes().ct_eq(password.as_bytes()));
    };
    let scheme = stored[1..end].to_ascii_uppercase();
    let Ok(decoded) = BASE64.decode(stored[end + 1..].trim()) else {
        return false;
    };
    match scheme.as_str() {
        "SSHA" if decoded.len() > 20 => {
            let (digest, salt) = decoded.split_at(20);
            let mut hasher = Sha1::new();
            hasher.update(password.as_bytes());
            hasher.update(salt);
            bool::from(hasher.finalize().as_slice().ct_eq(digest))
        }
        "SHA" if decoded.len() == 20 => {
            bool::from(Sha1::digest(password.as_bytes()).as_slice().ct_eq(&decoded))
        }
        _ => false,
    }
}

// ---------------------------------------------------------------------------
// Helpers: DNs (RFC 4514)

/// Escapes an attribute value for a DN the way OpenLDAP prints DNs back
/// (`\2C` for `,` …), so a uid built here equals the uid read later.
pub(crate) fn escape_dn_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 8);
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        let escape = matches!(c, '"' | '+' | ',' | ';' | '<' | '>' | '\\' | '=')
            || c.is_ascii_control()
            || (i == 0 && (c == ' ' || c == '#'))
            || (i == last && c == ' ');
        if escape {
            let mut buf = [0u8; 4];
            for byte in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("\\{byte:02X}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Undoes `\XX` and `\c` escapes of a DN attribute value.
fn unescape_dn_value(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 1 < bytes.len() {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            match hex {
                Some(byte) => {
                    out.push(byte);
                    i += 3;
                }
                None => {
                    out.push(bytes[i + 1]);
                    i += 2;
                }
            }
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether a uid is a DN (`attribute=value,…`) rather than a naming value
/// (which may contain `=` and `,` too).
fn looks_like_dn(uid: &str) -> bool {
    let (rdn, _) = split_dn(uid);
    rdn.split_once('=')
        .is_some_and(|(attribute, _)| check_attribute_name(attribute.trim()).is_ok())
}

/// Splits a DN at its first unescaped comma: (first RDN, parent DN).
fn split_dn(dn: &str) -> (&str, &str) {
    let mut escaped = false;
    for (i, c) in dn.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            ',' | ';' => return (&dn[..i], dn[i + 1..].trim_start()),
            _ => {}
        }
    }
    (dn, "")
}

/// The RDNs of a DN, each `attribute=value` with value escapes undone.
fn dn_parts(dn: &str) -> Vec<(String, String)> {
    let mut parts = Vec::new();
    let mut rest = dn.trim();
    while !rest.is_empty() {
        let (rdn, parent) = split_dn(rest);
        let (attribute, value) = rdn.split_once('=').unwrap_or((rdn, ""));
        let value = value.trim_start();
        // A trailing space is the value's only if escaped.
        let value = if value.ends_with("\\ ") {
            value
        } else {
            value.trim_end()
        };
        parts.push((attribute.trim().to_string(), unescape_dn_value(value)));
        rest = parent;
    }
    parts
}

/// A DN for comparing: attribute names and values lower-cased, spaces around
/// separators dropped, escapes in one form.
pub(crate) fn normalize_dn(dn: &str) -> String {
    dn_parts(dn)
        .into_iter()
        .map(|(a, v)| {
            format!(
                "{}={}",
                a.to_lowercase(),
                escape_dn_value(&v.to_lowercase())
            )
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn same_dn(a: &str, b: &str) -> bool {
    a == b || normalize_dn(a) == normalize_dn(b)
}

/// A configured DN in the form servers print: no spaces around `,` and `=`,
/// lower-case attribute names (`DC=Example, DC=org` → `dc=Example,dc=org`).
fn tidy_dn(dn: &str) -> String {
    dn_parts(dn)
        .into_iter()
        .map(|(a, v)| format!("{}={}", a.to_lowercase(), escape_dn_value(&v)))
        .collect::<Vec<_>>()
        .join(",")
}

// ---------------------------------------------------------------------------
// Helpers: filters (RFC 4515)

/// Escapes a filter assertion value: `*`, `(`, `)`, `\` and NUL as `\XX`.
pub(crate) fn escape_filter_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 8);
    for c in value.chars() {
        match c {
            '*' => out.push_str("\\2a"),
            '(' => out.push_str("\\28"),
            ')' => out.push_str("\\29"),
            '\\' => out.push_str("\\5c"),
            '\0' => out.push_str("\\00"),
            c => out.push(c),
        }
    }
    out
}

/// A SCIM filter as an LDAP filter; attribute names are the directory's own.
/// Value paths (`emails[…]`), sub-attributes and schema URNs have no LDAP
/// form and are refused.
pub(crate) fn ldap_filter(filter: &Filter) -> Result<String, String> {
    Ok(match filter {
        Filter::And(left, right) => format!("(&{}{})", ldap_filter(left)?, ldap_filter(right)?),
        Filter::Or(left, right) => format!("(|{}{})", ldap_filter(left)?, ldap_filter(right)?),
        Filter::Not(inner) => format!("(!{})", ldap_filter(inner)?),
        Filter::Present(path) => format!("({}=*)", filter_attribute(path)?),
        Filter::ValuePath(path, _) => {
            return Err(format!(
                "value filters ({path}[…]) have no LDAP equivalent: LDAP attributes have no sub-attributes"
            ));
        }
        Filter::Compare(path, op, value) => {
            let attribute = filter_attribute(path)?;
            let value = match value {
                FilterValue::Null => {
                    return match op {
                        CompareOp::Eq => Ok(format!("(!({attribute}=*))")),
                        CompareOp::Ne => Ok(format!("({attribute}=*)")),
                        _ => Err(format!(
                            "{attribute} {op} null: only eq and ne compare with null"
                        )),
                    };
                }
                FilterValue::Bool(true) => "TRUE".to_string(),
                FilterValue::Bool(false) => "FALSE".to_string(),
                FilterValue::Number(n) => n.to_string(),
                FilterValue::String(s) => escape_filter_value(s),
            };
            match op {
                CompareOp::Eq => format!("({attribute}={value})"),
                CompareOp::Ne => format!("(!({attribute}={value}))"),
                // An empty substring matches every value: presence.
                CompareOp::Co | CompareOp::Sw | CompareOp::Ew if value.is_empty() => {
                    format!("({attribute}=*)")
                }
                CompareOp::Co => format!("({attribute}=*{value}*)"),
                CompareOp::Sw => format!("({attribute}={value}*)"),
                CompareOp::Ew => format!("({attribute}=*{value})"),
                CompareOp::Ge => format!("({attribute}>={value})"),
                CompareOp::Le => format!("({attribute}<={value})"),
                CompareOp::Gt => format!("(&({attribute}>={value})(!({attribute}={value})))"),
                CompareOp::Lt => format!("(&({attribute}<={value})(!({attribute}={value})))"),
            }
        }
    })
}

fn filter_attribute(path: &AttrPath) -> Result<&str, String> {
    if path.urn.is_some() {
        return Err(format!("{path}: schema URNs have no LDAP equivalent"));
    }
    if let Some(sub) = &path.sub_attr {
        return Err(format!(
            "{path}: LDAP attributes have no sub-attributes (.{sub})"
        ));
    }
    check_attribute_name(&path.attr)?;
    Ok(&path.attr)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use std::process::Command;
    use std::time::Instant;

    use futures::TryStreamExt;
    use idm_testkit::Slapd;
    use serde_json::json;

    use super::*;

    fn map(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap()
    }

    /// The sample's connector document pointed at a sandbox, with `extra`
    /// top-level fields laid over it.
    fn conf(slapd: &Slapd, extra: Value) -> Map<String, Value> {
        let mut body = map(json!({
            "connectorType": "ldap",
            "url": slapd.url(),
            "baseDn": slapd.base_dn(),
            "bindDn": slapd.admin_dn(),
            "bindPassword": slapd.admin_password(),
            "startTls": false, "tlsVerify": true, "timeoutSeconds": 10, "pageSize": 500,
            "passwordHashing": "SSHA",
            "objectTypes": {
                "account": {"baseDn": null, "namingAttribute": "uid",
                            "objectClasses": ["top", "person", "organizationalPerson", "inetOrgPerson"],
                            "passwordAttribute": "userPassword"},
                "group": {"namingAttribute": "cn", "objectClasses": ["top", "groupOfNames"],
                          "memberAttribute": "member", "placeholderMember": ""},
                "orgUnit": {"namingAttribute": "ou", "objectClasses": ["top", "organizationalUnit"]},
                "person": {"baseDn": format!("ou=people,{}", slapd.base_dn()), "namingAttribute": "uid",
                           "objectClasses": ["top", "inetOrgPerson"], "passwordAttribute": "userPassword"},
                "posixUser": {"namingAttribute": "uid",
                              "objectClasses": ["top", "inetOrgPerson", "posixAccount"]}
            }
        }));
        body.extend(map(extra));
        body
    }

    fn connector(slapd: &Slapd, extra: Value) -> LdapConnector {
        LdapConnector::from_config("ldap", &conf(slapd, extra), Path::new(".")).unwrap()
    }

    fn account(uid: &str) -> Map<String, Value> {
        map(json!({"uid": uid, "cn": format!("User {uid}"), "sn": uid}))
    }

    async fn all(
        stream: BoxStream<'_, Result<SourceItem, ConnectorError>>,
    ) -> Vec<ConnectorObject> {
        stream
            .map_ok(|item| match item {
                SourceItem::Object(object) => object,
                SourceItem::Bad(bad) => panic!("bad record {bad:?}"),
            })
            .try_collect()
            .await
            .unwrap()
    }

    async fn uids(stream: BoxStream<'_, Result<SourceItem, ConnectorError>>) -> Vec<String> {
        let mut uids: Vec<String> = all(stream)
            .await
            .into_iter()
            .map(|o| o.attributes["uid"].as_str().unwrap().to_string())
            .collect();
        uids.sort();
        uids
    }

    fn sorted(values: &Value) -> Vec<String> {
        let mut values: Vec<String> = values
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        values.sort();
        values
    }

    fn ldapwhoami(slapd: &Slapd, dn: &str, password: &str) -> bool {
        Command::new("ldapwhoami")
            .args(["-x", "-H", &slapd.url(), "-D", dn, "-w", password])
            .output()
            .expect("ldapwhoami (apt-get install -y ldap-utils)")
            .status
            .success()
    }

    // -- pure ---------------------------------------------------------------

    #[test]
    fn scim_filters_translate_to_ldap_filters_with_escaped_values() {
        let ldap = |scim: &str| ldap_filter(&idm_proto::filter::parse(scim).unwrap());
        let cases = [
            (r#"uid eq "jdoe""#, "(uid=jdoe)"),
            (r#"uid ne "jdoe""#, "(!(uid=jdoe))"),
            (r#"cn co "oh""#, "(cn=*oh*)"),
            (r#"cn sw "Jo""#, "(cn=Jo*)"),
            (r#"cn ew "hn""#, "(cn=*hn)"),
            ("mail pr", "(mail=*)"),
            (
                "uidNumber gt 1000",
                "(&(uidNumber>=1000)(!(uidNumber=1000)))",
            ),
            ("uidNumber ge 1000", "(uidNumber>=1000)"),
            (
                "uidNumber lt 1000",
                "(&(uidNumber<=1000)(!(uidNumber=1000)))",
            ),
            ("uidNumber le 1000", "(uidNumber<=1000)"),
            ("active eq true", "(active=TRUE)"),
            ("mail eq null", "(!(mail=*))"),
            ("mail ne null", "(mail=*)"),
            (r#"cn co """#, "(cn=*)"),
            (
                r#"uid eq "a" and (cn sw "b" or not (mail pr))"#,
                "(&(uid=a)(|(cn=b*)(!(mail=*))))",
            ),
            (
                r#"description eq "a*(b)\\c""#,
                r"(description=a\2a\28b\29\5cc)",
            ),
            (r#"cn co "*""#, r"(cn=*\2a*)"),
        ];
        for (scim, expected) in cases {
            assert_eq!(ldap(scim).as_deref(), Ok(expected), "{scim}");
        }
        // A NUL cannot come from the parser's strings easily; build it.
        let nul = Filter::Compare(
            AttrPath {
                urn: None,
                attr: "cn".into(),
                sub_attr: None,
            },
            CompareOp::Eq,
            FilterValue::String("a\0b".into()),
        );
        assert_eq!(ldap_filter(&nul).unwrap(), r"(cn=a\00b)");

        for (scim, refusal) in [
            (r#"emails[type eq "work"]"#, "value filters"),
            (r#"name.givenName eq "x""#, "sub-attributes"),
            (
                r#"urn:ietf:params:scim:schemas:core:2.0:User:userName eq "x""#,
                "schema URNs",
            ),
            (r#"_id eq "x""#, "not an LDAP attribute name"),
            ("uid gt null", "only eq and ne"),
        ] {
            let message = ldap(scim).unwrap_err();
            assert!(message.contains(refusal), "{scim}: {message}");
        }
    }

    #[test]
    fn dn_values_are_escaped_as_openldap_prints_them() {
        assert_eq!(escape_dn_value("jdoe"), "jdoe");
        assert_eq!(
            escape_dn_value(r#"a,b+c"d\e<f>g;h=i"#),
            r"a\2Cb\2Bc\22d\5Ce\3Cf\3Eg\3Bh\3Di"
        );
        assert_eq!(escape_dn_value("#lead and trail "), r"\23lead and trail\20");
        assert_eq!(escape_dn_value(" "), r"\20");
        assert_eq!(escape_dn_value("Zoë*(x)"), "Zoë*(x)");
        assert_eq!(escape_dn_value("a\nb"), r"a\0Ab");

        assert_eq!(unescape_dn_value(r"a\2Cb\,c\\d"), r"a,b,c\d");
        assert_eq!(split_dn(r"uid=a\,b,ou=x,dc=y"), (r"uid=a\,b", "ou=x,dc=y"));
        assert_eq!(split_dn("dc=org"), ("dc=org", ""));

        assert!(same_dn(
            "UID=JDoe , DC=Example,dc=org",
            "uid=jdoe,dc=example,dc=org"
        ));
        assert!(same_dn(r"cn=a\,b,dc=x", r"cn=a\2Cb,dc=x"));
        assert!(!same_dn("uid=a,dc=x", "uid=b,dc=x"));
        assert!(!same_dn(r"cn=a\,b,dc=x", "cn=a,b,dc=x"));
        assert_eq!(
            tidy_dn("OU=People, DC=Example , dc=org"),
            "ou=People,dc=Example,dc=org"
        );
    }

    #[test]
    fn ssha_hashes_verify_and_match_slappasswd() {
        let hash = ssha("Secr3t!");
        assert!(hash.starts_with("{SSHA}"));
        assert_ne!(hash, ssha("Secr3t!"), "salted");
        assert!(verify_password(&hash, "Secr3t!"));
        assert!(!verify_password(&hash, "secr3t!"));
        // Made by `slappasswd -h {SSHA} -s secret` / `-h {SHA}`.
        assert!(verify_password(
            "{SSHA}XXsU0ZUUb2BfvTTYmdfYJ1/BXqI0tRcm",
            "secret"
        ));
        assert!(!verify_password(
            "{SSHA}XXsU0ZUUb2BfvTTYmdfYJ1/BXqI0tRcm",
            "secret2"
        ));
        assert!(verify_password(
            "{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=",
            "secret"
        ));
        assert!(verify_password("plain", "plain"));
        assert!(!verify_password("{SSHA}not base64!", "x"));
        assert!(!verify_password("{MD5}Xr4ilOzQ4PCOq3aQ0qbuaQ==", "secret"));
    }

    #[test]
    fn conf_is_checked_and_env_text_is_accepted() {
        let base = json!({"connectorType": "ldap", "url": "ldap://h:389", "baseDn": "dc=x",
            "objectTypes": {"account": {"namingAttribute": "uid", "objectClasses": ["inetOrgPerson"]}}});
        let build = |patch: Value| {
            let mut body = map(base.clone());
            body.extend(map(patch));
            LdapConnector::from_config("dir", &body, Path::new("."))
        };
        let field_of = |patch: Value| match build(patch) {
            Err(ConnectorError::Config { field, .. }) => field,
            Err(other) => panic!("{other}"),
            Ok(_) => panic!("accepted"),
        };
        assert_eq!(field_of(json!({"url": "http://h"})), "url");
        assert_eq!(field_of(json!({"url": null})), "url");
        assert_eq!(field_of(json!({"baseDn": ""})), "baseDn");
        assert_eq!(field_of(json!({"startTls": "maybe"})), "startTls");
        assert_eq!(
            field_of(json!({"url": "ldaps://h", "startTls": true})),
            "startTls"
        );
        assert_eq!(field_of(json!({"pageSize": 0})), "pageSize");
        assert_eq!(field_of(json!({"timeoutSeconds": -1})), "timeoutSeconds");
        assert_eq!(
            field_of(json!({"passwordHashing": "md5"})),
            "passwordHashing"
        );
        assert_eq!(field_of(json!({"objectTypes": {}})), "objectTypes");
        assert_eq!(
            field_of(
                json!({"objectTypes": {"a": {"namingAttribute": "uid", "objectClasses": []}}})
            ),
            "objectTypes.a.objectClasses"
        );
        assert_eq!(
            field_of(
                json!({"objectTypes": {"a": {"namingAttribute": "u id", "objectClasses": ["x"]}}})
            ),
            "objectTypes.a.namingAttribute"
        );

        // What $env references resolve to: text.
        let c = build(
            json!({"startTls": "true", "tlsVerify": "false", "timeoutSeconds": "2.5",
            "pageSize": "50", "baseDn": "DC=Example, DC=org"}),
        )
        .unwrap();
        assert!(c.start_tls && !c.tls_verify);
        assert_eq!(c.timeout, Duration::from_millis(2500));
        assert_eq!(c.page_size, 50);
        assert_eq!(c.types["account"].base_dn, "dc=Example,dc=org");
        assert_eq!(
            c.capabilities(),
            Capabilities {
                read: true,
                create: true,
                update: true,
                delete: true
            }
        );
        assert_eq!(c.object_types()[0].name, "account");
        assert_eq!(c.object_types()[0].uid_attribute, "dn");
    }

    #[test]
    fn uid_for_is_the_dn_create_would_use() {
        let c = LdapConnector::from_config(
            "ldap",
            &map(
                json!({"connectorType": "ldap", "url": "ldap://h", "baseDn": "dc=example,dc=org",
                "objectTypes": {
                    "account": {"namingAttribute": "uid", "objectClasses": ["inetOrgPerson"],
                                "baseDn": "ou=people,dc=example,dc=org"}}}),
            ),
            Path::new("."),
        )
        .unwrap();
        let uid_for = |attrs: Value| c.uid_for("account", &map(attrs));
        assert_eq!(
            uid_for(json!({"uid": "jdoe", "cn": "J"})).as_deref(),
            Some("uid=jdoe,ou=people,dc=example,dc=org")
        );
        assert_eq!(
            uid_for(json!({"uid": ["Doe, J"]})).as_deref(),
            Some(r"uid=Doe\2C J,ou=people,dc=example,dc=org")
        );
        assert_eq!(
            uid_for(json!({"dn": "cn=x,dc=example,dc=org", "uid": "jdoe"})).as_deref(),
            Some("cn=x,dc=example,dc=org")
        );
        assert_eq!(uid_for(json!({"cn": "no uid"})), None);
        assert_eq!(uid_for(json!({"uid": ["a", "b"]})), None);
        assert_eq!(c.uid_for("nope", &map(json!({"uid": "a"}))), None);
    }

    #[test]
    fn same_value_compares_like_the_directory() {
        let c = LdapConnector::from_config(
            "ldap",
            &map(
                json!({"connectorType": "ldap", "url": "ldap://h", "baseDn": "dc=x",
                "objectTypes": {
                    "account": {"namingAttribute": "uid", "objectClasses": ["inetOrgPerson"],
                                "passwordAttribute": "userPassword"},
                    "group": {"namingAttribute": "cn", "objectClasses": ["groupOfNames"],
                              "memberAttribute": "member", "placeholderMember": ""}}}),
            ),
            Path::new("."),
        )
        .unwrap();
        let same = |t: &str, a: &str, current: Option<Value>, wanted: Value| {
            c.same_value(t, a, current.as_ref(), &wanted)
        };
        let hash = json!(ssha("pw"));
        assert!(same(
            "account",
            "userPassword",
            Some(hash.clone()),
            json!("pw")
        ));
        assert!(same(
            "account",
            "USERPASSWORD",
            Some(hash.clone()),
            json!("pw")
        ));
        assert!(!same(
            "account",
            "userPassword",
            Some(hash.clone()),
            json!("other")
        ));
        assert!(!same("account", "userPassword", None, json!("pw")));
        assert!(same(
            "account",
            "userPassword",
            Some(hash.clone()),
            hash.clone()
        ));
        assert!(same(
            "account",
            "userPassword",
            Some(json!("{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=")),
            json!("secret")
        ));
        assert!(same("account", "userPassword", None, Value::Null));

        assert!(same(
            "account",
            "cn",
            Some(json!("John Doe")),
            json!("john doe")
        ));
        assert!(same(
            "account",
            "mail",
            Some(json!(["a@x", "B@x"])),
            json!(["b@x", "A@x"])
        ));
        assert!(!same(
            "account",
            "mail",
            Some(json!(["a@x"])),
            json!(["a@x", "b@x"])
        ));
        assert!(same("account", "mail", None, json!([])));
        assert!(same("account", "mail", None, Value::Null));
        assert!(!same("account", "mail", Some(json!("a@x")), Value::Null));
        assert!(same(
            "account",
            "employeeNumber",
            Some(json!("42")),
            json!(42)
        ));

        assert!(same(
            "group",
            "member",
            Some(json!(["uid=A,dc=x", "uid=b, dc=x"])),
            json!(["UID=b,dc=x", "uid=a,DC=x"])
        ));
        assert!(same("group", "member", None, json!([])));
        assert!(
            same("group", "member", None, json!([""])),
            "the placeholder is no member"
        );
        assert!(!same(
            "group",
            "member",
            Some(json!("uid=a,dc=x")),
            json!([])
        ));
    }

    // -- against a real slapd ------------------------------------------------

    #[tokio::test]
    async fn creates_reads_updates_renames_and_deletes_an_account() {
        let slapd = Slapd::start().unwrap();
        let c = connector(&slapd, json!({}));

        let mut attrs = account("jdoe");
        attrs.insert(
            "mail".into(),
            json!(["jdoe@example.org", "john@example.org"]),
        );
        attrs.insert("description".into(), Value::Null);
        attrs.insert("telephoneNumber".into(), json!([]));
        attrs.insert("employeeNumber".into(), json!(42));
        let dn = c.create("account", &attrs).await.unwrap();
        assert_eq!(dn, "uid=jdoe,dc=example,dc=org");

        let read = c.get("account", &dn).await.unwrap().expect("created entry");
        assert_eq!(read.uid, dn);
        assert_eq!(
            sorted(&read.attributes["objectClass"]),
            ["inetOrgPerson", "organizationalPerson", "person", "top"]
        );
        assert_eq!(read.attributes["uid"], json!("jdoe"));
        assert_eq!(read.attributes["employeeNumber"], json!("42"));
        let mut mail: Vec<_> = read.attributes["mail"].as_array().unwrap().clone();
        mail.sort_by_key(|v| v.to_string());
        assert_eq!(mail, [json!("jdoe@example.org"), json!("john@example.org")]);
        assert!(!read.attributes.contains_key("description"));
        // By naming attribute as well as by DN.
        assert_eq!(c.get("account", "jdoe").await.unwrap().unwrap().uid, dn);
        assert_eq!(c.get("account", "nobody").await.unwrap(), None);
        assert_eq!(
            c.get("account", "uid=nobody,dc=example,dc=org")
                .await
                .unwrap(),
            None
        );
        assert_eq!(
            c.get("account", "uid=x,ou=nowhere,dc=example,dc=org")
                .await
                .unwrap(),
            None
        );
        // An entry of another type is not an account.
        assert_eq!(c.get("group", &dn).await.unwrap(), None);

        match c.create("account", &account("jdoe")).await {
            Err(ConnectorError::AlreadyExists { object, .. }) => {
                assert!(object.contains(&dn), "{object}")
            }
            other => panic!("{other:?}"),
        }

        let changes = map(json!({"mail": "jd@example.org", "employeeNumber": null,
            "description": [], "title": ["Engineer"]}));
        assert_eq!(c.update("account", &dn, &changes).await.unwrap(), dn);
        let read = c.get("account", &dn).await.unwrap().unwrap();
        assert_eq!(read.attributes["mail"], json!("jd@example.org"));
        assert_eq!(read.attributes["title"], json!("Engineer"));
        assert!(!read.attributes.contains_key("employeeNumber"));
        assert_eq!(c.update("account", &dn, &Map::new()).await.unwrap(), dn);

        // A new naming value renames the entry; the old value goes.
        let renamed = c
            .update(
                "account",
                &dn,
                &map(json!({"uid": "john.doe", "cn": "John Doe"})),
            )
            .await
            .unwrap();
        assert_eq!(renamed, "uid=john.doe,dc=example,dc=org");
        assert_eq!(c.get("account", &dn).await.unwrap(), None);
        let read = c.get("account", &renamed).await.unwrap().unwrap();
        assert_eq!(read.uid, renamed);
        assert_eq!(read.attributes["uid"], json!("john.doe"));
        assert_eq!(read.attributes["cn"], json!("John Doe"));
        assert_eq!(read.attributes["mail"], json!("jd@example.org"));
        // Same value in another case: no rename.
        assert_eq!(
            c.update("account", &renamed, &map(json!({"uid": "John.Doe"})))
                .await
                .unwrap(),
            renamed
        );
        // A rename by dn.
        let by_dn = c
            .update(
                "account",
                &renamed,
                &map(json!({"dn": "uid=jd,dc=example,dc=org", "uid": "jd"})),
            )
            .await
            .unwrap();
        assert_eq!(by_dn, "uid=jd,dc=example,dc=org");
        assert!(c.get("account", &by_dn).await.unwrap().is_some());

        match c.update("account", &dn, &map(json!({"title": "x"}))).await {
            Err(ConnectorError::NotFound { object, .. }) => {
                assert!(object.contains(&dn), "{object}")
            }
            other => panic!("{other:?}"),
        }
        match c
            .update("account", &by_dn, &map(json!({"noSuchAttr": "x"})))
            .await
        {
            Err(e @ ConnectorError::Rejected { .. }) => {
                let message = e.to_string();
                assert!(message.contains("undefinedAttributeType (17)"), "{message}");
                assert!(!e.is_transient());
            }
            other => panic!("{other:?}"),
        }
        match c
            .create("account", &map(json!({"uid": "nosn", "cn": "x"})))
            .await
        {
            Err(ConnectorError::Rejected { message, .. }) => {
                assert!(message.contains("objectClassViolation (65)"), "{message}")
            }
            other => panic!("{other:?}"),
        }

        c.delete("account", &by_dn).await.unwrap();
        assert_eq!(c.get("account", &by_dn).await.unwrap(), None);
        c.delete("account", &by_dn).await.unwrap();
        c.delete("account", "uid=never,dc=example,dc=org")
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn entries_live_under_their_types_base_and_names_are_escaped() {
        let slapd = Slapd::start().unwrap();
        let c = connector(&slapd, json!({}));
        // The person type's base does not exist yet.
        match c.create("person", &account("early")).await {
            Err(ConnectorError::NotFound { .. }) => {}
            other => panic!("{other:?}"),
        }
        match c.query("person").try_collect::<Vec<_>>().await {
            Err(ConnectorError::NotFound { object, .. }) => {
                assert!(object.contains("ou=people"), "{object}")
            }
            other => panic!("{other:?}"),
        }
        let ou = c
            .create("orgUnit", &map(json!({"ou": "people"})))
            .await
            .unwrap();
        assert_eq!(ou, "ou=people,dc=example,dc=org");

        let odd = r#"Doe, "J" + <x>; a=b\ *(y) #1 "#;
        let dn = c.create("person", &account(odd)).await.unwrap();
        assert_eq!(
            dn,
            r"uid=Doe\2C \22J\22 \2B \3Cx\3E\3B a\3Db\5C *(y) #1\20,ou=people,dc=example,dc=org"
        );
        assert_eq!(
            c.uid_for("person", &account(odd)).as_deref(),
            Some(dn.as_str())
        );
        // The server names the entry exactly as create did.
        let listed = all(c.query("person")).await;
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].uid, dn);
        assert_eq!(listed[0].attributes["uid"], json!(odd));
        assert_eq!(c.get("person", odd).await.unwrap().unwrap().uid, dn);
        // An account type over the whole tree sees it too; person does not see the ou.
        assert_eq!(all(c.query("account")).await.len(), 1);

        let renamed = c
            .update("person", &dn, &map(json!({"uid": "a,b"})))
            .await
            .unwrap();
        assert_eq!(renamed, r"uid=a\2Cb,ou=people,dc=example,dc=org");
        assert_eq!(all(c.query("person")).await[0].uid, renamed);
        c.delete("person", &renamed).await.unwrap();
        assert!(all(c.query("person")).await.is_empty());
    }

    #[tokio::test]
    async fn query_pages_through_more_entries_than_the_size_limit() {
        // Binds other than the admin get at most 5 entries per unpaged search.
        let slapd = Slapd::builder().size_limit(5).start().unwrap();
        let admin = connector(&slapd, json!({}));
        let mut reader = account("reader");
        reader.insert("userPassword".into(), json!("reader-pw"));
        let reader_dn = admin.create("account", &reader).await.unwrap();
        for i in 0..12 {
            admin
                .create("account", &account(&format!("user{i:02}")))
                .await
                .unwrap();
        }

        let c = connector(
            &slapd,
            json!({"bindDn": reader_dn, "bindPassword": "reader-pw", "pageSize": 5}),
        );
        let mut expected: Vec<String> = (0..12).map(|i| format!("user{i:02}")).collect();
        expected.push("reader".into());
        expected.sort();
        assert_eq!(uids(c.query("account")).await, expected);
        let filter = idm_proto::filter::parse(r#"uid sw "user""#).unwrap();
        assert_eq!(uids(c.search("account", &filter)).await.len(), 12);

        // Without paging the same bind is cut at 5: only paging got all 13.
        let (connection, mut ldap) = LdapConnAsync::new(&slapd.url()).await.unwrap();
        tokio::spawn(connection.drive());
        ldap.simple_bind(&reader_dn, "reader-pw")
            .await
            .unwrap()
            .success()
            .unwrap();
        let unpaged = ldap
            .search(
                slapd.base_dn(),
                Scope::Subtree,
                "(objectClass=inetOrgPerson)",
                vec!["uid"],
            )
            .await
            .unwrap();
        assert_eq!(
            (unpaged.1.rc, unpaged.0.len()),
            (4, 5),
            "sizeLimitExceeded after 5"
        );
    }

    #[tokio::test]
    async fn search_translates_each_operator_against_real_entries() {
        let slapd = Slapd::start().unwrap();
        let c = connector(&slapd, json!({"pageSize": 2}));
        for (i, description) in ["plain", r"a*(b)\c", "a", r"aX(b)\c", "(b)"]
            .iter()
            .enumerate()
        {
            let mut attrs = account(&format!("u{i}"));
            attrs.insert(
                "objectClass".into(),
                json!(["top", "inetOrgPerson", "posixAccount"]),
            );
            attrs.insert("uidNumber".into(), json!(1000 + i));
            attrs.insert("gidNumber".into(), json!(100));
            attrs.insert("homeDirectory".into(), json!(format!("/home/u{i}")));
            attrs.insert("description".into(), json!(description));
            if i % 2 == 0 {
                attrs.insert("mail".into(), json!(format!("u{i}@example.org")));
            }
            c.create("posixUser", &attrs).await.unwrap();
        }
        // One entry of another type that every filter below would match.
        c.create(
            "account",
            &map(
                json!({"uid": "u9", "cn": "x", "sn": "x", "description": "a",
            "mail": "u9@example.org"}),
            ),
        )
        .await
        .unwrap();

        let search = |scim: &str| {
            let filter = idm_proto::filter::parse(scim).unwrap();
            let c = &c;
            async move { uids(c.search("posixUser", &filter)).await }
        };
        assert_eq!(search(r#"uid eq "u1""#).await, ["u1"]);
        assert_eq!(search(r#"uid ne "u1""#).await, ["u0", "u2", "u3", "u4"]);
        assert_eq!(
            search(r#"cn co "ser U""#).await,
            ["u0", "u1", "u2", "u3", "u4"]
        );
        assert_eq!(search(r#"cn sw "User u3""#).await, ["u3"]);
        assert_eq!(search(r#"cn ew "er u4""#).await, ["u4"]);
        assert_eq!(search("mail pr").await, ["u0", "u2", "u4"]);
        assert_eq!(search("uidNumber gt 1002").await, ["u3", "u4"]);
        assert_eq!(search("uidNumber ge 1002").await, ["u2", "u3", "u4"]);
        assert_eq!(search("uidNumber lt 1002").await, ["u0", "u1"]);
        assert_eq!(search("uidNumber le 1002").await, ["u0", "u1", "u2"]);
        assert_eq!(
            search(r#"mail pr and not (uid eq "u2")"#).await,
            ["u0", "u4"]
        );
        assert_eq!(
            search(r#"uid eq "u1" or uidNumber ge 1004"#).await,
            ["u1", "u4"]
        );
        assert_eq!(search("mail eq null").await, ["u1", "u3"]);
        // Special characters are values, not wildcards or structure.
        assert_eq!(search(r#"description eq "a*(b)\\c""#).await, ["u1"]);
        assert_eq!(search(r#"description co "(b)""#).await, ["u1", "u3", "u4"]);
        assert_eq!(search(r#"description co "*""#).await, ["u1"]);
        assert_eq!(search(r#"description eq "a""#).await, ["u2"]);
        assert_eq!(search(r#"description sw "a""#).await, ["u1", "u2", "u3"]);

        let filter = idm_proto::filter::parse(r#"emails[type eq "work"]"#).unwrap();
        match c.search("posixUser", &filter).try_collect::<Vec<_>>().await {
            Err(ConnectorError::Rejected { message, .. }) => {
                assert!(message.contains("value filters"), "{message}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn passwords_are_stored_as_ssha_and_bind() {
        let slapd = Slapd::start().unwrap();
        let c = connector(&slapd, json!({}));
        let mut attrs = account("pat");
        attrs.insert("userPassword".into(), json!("Secr3t! pass"));
        let dn = c.create("account", &attrs).await.unwrap();

        let stored =
            c.get("account", &dn).await.unwrap().unwrap().attributes["userPassword"].clone();
        assert!(stored.as_str().unwrap().starts_with("{SSHA}"), "{stored}");
        assert!(ldapwhoami(&slapd, &dn, "Secr3t! pass"));
        assert!(!ldapwhoami(&slapd, &dn, "wrong"));
        assert!(c.same_value(
            "account",
            "userPassword",
            Some(&stored),
            &json!("Secr3t! pass")
        ));
        assert!(!c.same_value("account", "userPassword", Some(&stored), &json!("wrong")));

        c.update("account", &dn, &map(json!({"userPassword": "n3w"})))
            .await
            .unwrap();
        let stored =
            c.get("account", &dn).await.unwrap().unwrap().attributes["userPassword"].clone();
        assert!(c.same_value("account", "userPassword", Some(&stored), &json!("n3w")));
        assert!(ldapwhoami(&slapd, &dn, "n3w"));
        assert!(!ldapwhoami(&slapd, &dn, "Secr3t! pass"));

        // Cleartext for directories that hash themselves: sent as given.
        let clear = connector(&slapd, json!({"passwordHashing": "cleartext"}));
        let mut attrs = account("clara");
        attrs.insert("userPassword".into(), json!("plain-pw"));
        let dn = clear.create("account", &attrs).await.unwrap();
        let stored =
            clear.get("account", &dn).await.unwrap().unwrap().attributes["userPassword"].clone();
        assert_eq!(stored, json!("plain-pw"));
        assert!(ldapwhoami(&slapd, &dn, "plain-pw"));
    }

    #[tokio::test]
    async fn an_emptied_group_keeps_the_placeholder_member() {
        let slapd = Slapd::start().unwrap();
        let c = connector(&slapd, json!({}));
        let alice = c.create("account", &account("alice")).await.unwrap();
        let bob = c.create("account", &account("bob")).await.unwrap();

        let group = c
            .create(
                "group",
                &map(json!({"cn": "staff", "member": [alice, bob]})),
            )
            .await
            .unwrap();
        assert_eq!(group, "cn=staff,dc=example,dc=org");
        let read = c.get("group", &group).await.unwrap().unwrap();
        assert_eq!(
            sorted(&read.attributes["objectClass"]),
            ["groupOfNames", "top"]
        );
        let members = read.attributes.get("member").cloned();
        assert!(c.same_value(
            "group",
            "member",
            members.as_ref(),
            &json!([bob, alice.to_uppercase()])
        ));

        c.update("group", &group, &map(json!({"member": []})))
            .await
            .unwrap();
        let read = c.get("group", &group).await.unwrap().unwrap();
        assert!(!read.attributes.contains_key("member"), "{read:?}");
        assert!(c.same_value("group", "member", None, &json!([])));
        // The directory holds the placeholder (groupOfNames needs a member).
        let (connection, mut ldap) = LdapConnAsync::new(&slapd.url()).await.unwrap();
        tokio::spawn(connection.drive());
        ldap.simple_bind(slapd.admin_dn(), slapd.admin_password())
            .await
            .unwrap();
        let (entries, _) = ldap
            .search(&group, Scope::Base, "(objectClass=*)", vec!["member"])
            .await
            .unwrap()
            .success()
            .unwrap();
        let raw = SearchEntry::construct(entries.into_iter().next().unwrap());
        assert_eq!(raw.attrs["member"], [""]);

        c.update("group", &group, &map(json!({"member": [alice]})))
            .await
            .unwrap();
        let read = c.get("group", &group).await.unwrap().unwrap();
        assert_eq!(read.attributes["member"], json!(alice));
        c.update("group", &group, &map(json!({"member": null})))
            .await
            .unwrap();
        assert!(
            !c.get("group", &group)
                .await
                .unwrap()
                .unwrap()
                .attributes
                .contains_key("member")
        );

        let empty = c.create("group", &map(json!({"cn": "nobody-yet"}))).await;
        // No member given at all: groupOfNames refuses, as the schema says.
        assert!(
            matches!(empty, Err(ConnectorError::Rejected { .. })),
            "{empty:?}"
        );
        let empty = c
            .create("group", &map(json!({"cn": "empty", "member": []})))
            .await
            .unwrap();
        assert!(
            !c.get("group", &empty)
                .await
                .unwrap()
                .unwrap()
                .attributes
                .contains_key("member")
        );
    }

    #[tokio::test]
    async fn the_connection_survives_a_restart_and_is_unavailable_while_stopped() {
        let mut slapd = Slapd::start().unwrap();
        let c = connector(&slapd, json!({}));
        let dn = c.create("account", &account("before")).await.unwrap();

        slapd.stop();
        for outcome in [
            c.get("account", &dn).await.map(|_| ()),
            c.create("account", &account("during")).await.map(|_| ()),
            c.query("account").try_collect::<Vec<_>>().await.map(|_| ()),
        ] {
            match outcome {
                Err(e @ ConnectorError::Unavailable { .. }) => assert!(e.is_transient()),
                other => panic!("{other:?}"),
            }
        }

        slapd.restart().unwrap();
        assert!(
            c.get("account", &dn).await.unwrap().is_some(),
            "data and connection are back"
        );

        // A write first thing after a restart, on the connection from before
        // it, with no chance for the connection task to notice the close
        // (this thread blocks): the pause makes the connector check first.
        slapd.restart().unwrap();
        std::thread::sleep(PROBE_WHEN_QUIET_FOR);
        let after = c.create("account", &account("after")).await.unwrap();
        slapd.restart().unwrap();
        assert_eq!(uids(c.query("account")).await, ["after", "before"]);
        slapd.restart().unwrap();
        c.delete("account", &after).await.unwrap();
    }

    #[tokio::test]
    async fn tls_by_ldaps_or_starttls_checks_the_certificate() {
        let slapd = Slapd::builder().tls().start().unwrap();
        let ca = slapd.tls_ca().unwrap();
        let ldaps = slapd.ldaps_url().unwrap();
        let trusting = [
            json!({"url": ldaps, "tlsCaFile": ca}),
            json!({"startTls": true, "tlsCaFile": ca}),
            json!({"url": ldaps, "tlsVerify": false}),
            json!({"startTls": true, "tlsVerify": false}),
        ];
        for (i, extra) in trusting.into_iter().enumerate() {
            let c = connector(&slapd, extra.clone());
            let dn = c.create("account", &account(&format!("tls{i}"))).await;
            let dn = dn.unwrap_or_else(|e| panic!("{extra}: {e}"));
            assert!(c.get("account", &dn).await.unwrap().is_some(), "{extra}");
        }

        // The system's CAs do not know the sandbox's CA.
        for extra in [json!({"url": ldaps}), json!({"startTls": true})] {
            match connector(&slapd, extra.clone())
                .get("account", "tls0")
                .await
            {
                Err(e @ ConnectorError::Rejected { .. }) => {
                    let message = e.to_string();
                    assert!(
                        message.contains("TLS") && message.contains("certificate"),
                        "{extra}: {message}"
                    );
                    assert!(!e.is_transient());
                }
                other => panic!("{extra}: {other:?}"),
            }
        }

        let field_of = |extra: Value| match LdapConnector::from_config(
            "ldap",
            &conf(&slapd, extra),
            Path::new("."),
        ) {
            Err(ConnectorError::Config { field, message, .. }) => format!("{field}: {message}"),
            other => panic!("{:?}", other.map(|_| ())),
        };
        assert!(
            field_of(json!({"tlsCaFile": "/nonexistent/ca.pem"}))
                .starts_with("tlsCaFile: /nonexistent/ca.pem")
        );
        assert!(
            field_of(json!({"tlsCaFile": ca, "tlsVerify": false}))
                .starts_with("tlsCaFile: tlsVerify is false")
        );
        let key = ca.with_file_name("key.pem");
        assert!(field_of(json!({"tlsCaFile": key})).contains("no PEM certificate"));
    }

    #[tokio::test]
    async fn a_refused_bind_is_rejected_without_the_password() {
        let slapd = Slapd::start().unwrap();
        let c = connector(&slapd, json!({"bindPassword": "not-the-admin-password"}));
        match c.get("account", "uid=x,dc=example,dc=org").await {
            Err(e @ ConnectorError::Rejected { .. }) => {
                let message = e.to_string();
                assert!(message.contains("invalidCredentials (49)"), "{message}");
                assert!(message.contains(slapd.admin_dn()), "{message}");
                assert!(!message.contains("not-the-admin-password"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn connector_build_makes_an_ldap_connector() {
        let slapd = Slapd::start().unwrap();
        let mut body = conf(&slapd, json!({}));
        body.insert(
            "url".into(),
            json!({"$env": "IDM_TEST_UNSET_LDAP_URL", "default": slapd.url()}),
        );
        let built = super::super::build("dir", &body, std::path::Path::new(".")).unwrap();
        assert_eq!(built.name(), "dir");
        let dn = built.create("account", &account("built")).await.unwrap();
        assert!(built.get("account", &dn).await.unwrap().is_some());
    }

    /// A measurement, not a check: raw ldap3 adds into a fresh sandbox, one
    /// at a time and with 32 in flight on one connection.
    /// `cargo test -p idm-server --lib connector::ldap -- --ignored --nocapture`
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore]
    async fn raw_add_rate() {
        let slapd = Slapd::start().unwrap();
        let (connection, mut ldap) = LdapConnAsync::new(&slapd.url()).await.unwrap();
        tokio::spawn(connection.drive());
        ldap.simple_bind(slapd.admin_dn(), slapd.admin_password())
            .await
            .unwrap();
        let entry = |i: usize| {
            vec![
                (
                    "objectClass".to_string(),
                    HashSet::from(["inetOrgPerson".to_string()]),
                ),
                ("uid".to_string(), HashSet::from([format!("u{i}")])),
                ("cn".to_string(), HashSet::from([format!("User {i}")])),
                ("sn".to_string(), HashSet::from([format!("S{i}")])),
                (
                    "mail".to_string(),
                    HashSet::from([format!("u{i}@example.org")]),
                ),
            ]
        };
        let dn = |i: usize| format!("uid=u{i},{}", slapd.base_dn());

        let n = 2_000;
        let started = Instant::now();
        for i in 0..n {
            ldap.add(&dn(i), entry(i)).await.unwrap().success().unwrap();
        }
        let serial = started.elapsed();

        let m = 10_000;
        let started = Instant::now();
        futures::stream::iter(n..n + m)
            .map(|i| {
                let mut ldap = ldap.clone();
                let (dn, entry) = (dn(i), entry(i));
                async move { ldap.add(&dn, entry).await.unwrap().success().unwrap() }
            })
            .buffer_unordered(32)
            .collect::<Vec<_>>()
            .await;
        let pipelined = started.elapsed();
        println!(
            "raw ldap3: one at a time {n} adds in {serial:?} = {:.0}/s; 32 in flight {m} adds in {pipelined:?} = {:.0}/s",
            n as f64 / serial.as_secs_f64(),
            m as f64 / pipelined.as_secs_f64()
        );

        // The same through the connector (one shared connection, spans, value checks).
        let c = connector(&slapd, json!({}));
        let started = Instant::now();
        for i in 0..n {
            c.create("account", &account(&format!("c{i}")))
                .await
                .unwrap();
        }
        let serial = started.elapsed();
        let started = Instant::now();
        futures::stream::iter(n..n + m)
            .map(|i| {
                let c = &c;
                async move {
                    c.create("account", &account(&format!("c{i}")))
                        .await
                        .unwrap()
                }
            })
            .buffer_unordered(32)
            .collect::<Vec<_>>()
            .await;
        let pipelined = started.elapsed();
        println!(
            "LdapConnector::create: one at a time {n} in {serial:?} = {:.0}/s; 32 in flight {m} in {pipelined:?} = {:.0}/s",
            n as f64 / serial.as_secs_f64(),
            m as f64 / pipelined.as_secs_f64()
        );
    }
}
