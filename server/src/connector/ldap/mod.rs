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
//! - An object's uid is its entry's DN, or with `"uidAttribute": "entryUUID"`
//!   (what Wren's provisioner files get, `uid.rs`) that attribute's value, so
//!   a rename keeps it: objects then carry their DN as `dn`. New entries are
//!   named `<namingAttribute>=<value>,<baseDn>` (an object type's `baseDn`
//!   defaults to the connector's), unless the attributes carry a `dn`.
//! - An object type's `searchFilter` (an LDAP filter) narrows its entries.
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

/// The configuration keys that hold secrets: sealed at rest, never shown.
pub const SECRET_FIELDS: &[&str] = &["bindPassword"];

/// The configuration keys that say where and how secrets travel: a kept
/// (redacted) secret is refused when one of them changes.
pub const DESTINATION_FIELDS: &[&str] = &["url", "startTls", "tlsVerify", "tlsCaFile"];

mod connection;
mod dn;
mod filter;
mod password;
mod search;
pub mod transport;
mod uid;
mod write;

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests;

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use idm_proto::filter::Filter;
use serde_json::{Map, Value};
use tokio::sync::Mutex;
use tracing::Instrument;

use self::connection::{Link, tls_config_trusting};
use self::dn::{is_below, normalize_dn, same_dn, tidy_dn};
use self::filter::{escape_filter_value, ldap_filter};
use self::password::verify_password;
use self::write::text_values;
use super::{Capabilities, Connector, ConnectorError, ConnectorObject, ObjectTypeInfo, SourceItem};

pub struct LdapConnector {
    name: String,
    url: String,
    /// The connector's tree: no write creates or moves an entry outside it.
    base_dn: String,
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
    /// The attribute whose value is an object's uid; `None`: the DN is.
    uid_attribute: Option<String>,
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
    /// An LDAP filter (in parentheses) every search of the type adds.
    search_filter: Option<String>,
}

impl LdapType {
    /// The class that picks the type's entries: the most specific one.
    fn structural_class(&self) -> &str {
        self.object_classes.last().map_or("top", String::as_str)
    }

    fn class_filter(&self) -> String {
        let class = format!(
            "(objectClass={})",
            escape_filter_value(self.structural_class())
        );
        match &self.search_filter {
            Some(filter) => format!("(&{class}{filter})"),
            None => class,
        }
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
                tls_config_trusting(&crate::config::resolve_path(conf_dir, &file))
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

        let uid_attribute = match string_field(body, "uidAttribute") {
            Some(a) if !a.trim().is_empty() && !a.eq_ignore_ascii_case("dn") => {
                check_attribute_name(&a).map_err(|m| config_error("uidAttribute", &m))?;
                Some(a)
            }
            _ => None,
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
            let type_base = string_field(decl, "baseDn")
                .filter(|b| !b.trim().is_empty())
                .map_or_else(|| base_dn.clone(), |b| tidy_dn(&b));
            if !same_dn(&type_base, &base_dn) && !is_below(&type_base, &base_dn) {
                return Err(config_error(
                    &at("baseDn"),
                    &format!("\"{type_base}\" is not inside the connector's baseDn \"{base_dn}\""),
                ));
            }
            let ldap_type = LdapType {
                base_dn: type_base,
                naming_attribute,
                object_classes,
                password_attribute: optional_attribute("passwordAttribute")?,
                member_attribute: optional_attribute("memberAttribute")?,
                // "" is a real placeholder (the empty DN); absent means none.
                placeholder_member: string_field(decl, "placeholderMember"),
                search_filter: match string_field(decl, "searchFilter")
                    .map(|f| f.trim().to_string())
                {
                    Some(f) if f.is_empty() => None,
                    Some(f) if f.starts_with('(') && f.ends_with(')') && f.len() <= 4096 => Some(f),
                    Some(_) => {
                        return Err(config_error(
                            &at("searchFilter"),
                            "an LDAP filter in parentheses, at most 4096 bytes",
                        ));
                    }
                    None => None,
                },
            };
            types.insert(type_name.clone(), ldap_type);
        }

        transport::warn_once(
            name,
            transport::risks(
                &url,
                start_tls,
                tls_verify,
                bind_dn.is_some() && !bind_password.is_empty(),
            ),
        );
        Ok(LdapConnector {
            name: name.to_string(),
            url,
            base_dn,
            bind_dn,
            bind_password,
            start_tls,
            tls_verify,
            tls_config,
            timeout: Duration::from_secs_f64(timeout_seconds),
            // Checked above to be a whole number in 1..=1_000_000.
            page_size: i32::try_from(page_size as i64).unwrap_or(500),
            hashing,
            uid_attribute,
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

    /// Runs one operation, its latency and failure counted for `--metrics`.
    async fn measured<T>(
        &self,
        operation: &'static str,
        call: impl std::future::Future<Output = Result<T, ConnectorError>>,
    ) -> Result<T, ConnectorError> {
        let started = std::time::Instant::now();
        let result = call.await;
        crate::metrics::ldap_operation(&self.name, operation, started, result.is_ok());
        result
    }

    fn rejected(&self, object: &str, message: impl Into<String>) -> ConnectorError {
        ConnectorError::Rejected {
            connector: self.name.clone(),
            object: object.to_string(),
            message: message.into(),
        }
    }
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
                uid_attribute: self.uid_attribute.clone().unwrap_or_else(|| "dn".into()),
                attributes: ["objectClass".to_string(), t.naming_attribute.clone()]
                    .into_iter()
                    .chain(t.password_attribute.clone())
                    .chain(t.member_attribute.clone())
                    .collect(),
                display_attribute: self.uid_attribute.as_ref().map(|_| "dn".to_string()),
            })
            .collect()
    }

    fn get<'a>(
        &'a self,
        object_type: &'a str,
        uid: &'a str,
    ) -> BoxFuture<'a, Result<Option<ConnectorObject>, ConnectorError>> {
        // Uids and DNs name people: at debug only (here and below).
        let span = tracing::info_span!("ldap.get", connector = %self.name, object_type);
        tracing::debug!(parent: &span, uid, "LDAP read");
        self.measured("get", async move {
            let ldap_type = self.ldap_type(object_type)?;
            self.read_one(object_type, ldap_type, uid).await
        })
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

    /// Entries whose `modifyTimestamp` (set by the server on every add and
    /// change) is at or after `since`.
    fn changed_since<'a>(
        &'a self,
        object_type: &'a str,
        since: &'a str,
    ) -> BoxFuture<'a, Result<Option<Vec<String>>, ConnectorError>> {
        async move {
            let since: chrono::DateTime<chrono::Utc> = since.parse().map_err(|_| {
                self.rejected(
                    &format!("system/{}/{object_type}", self.name),
                    format!("\"{since}\" is not an RFC 3339 time"),
                )
            })?;
            let generalized = since.format("%Y%m%d%H%M%SZ").to_string();
            let filter = idm_proto::filter::parse(&format!("modifyTimestamp ge \"{generalized}\""))
                .map_err(|e| {
                    self.rejected(&format!("system/{}/{object_type}", self.name), e.message)
                })?;
            let mut uids = Vec::new();
            let mut found = self.search(object_type, &filter);
            while let Some(item) = found.next().await {
                if let SourceItem::Object(object) = item? {
                    uids.push(object.uid);
                }
            }
            Ok(Some(uids))
        }
        .boxed()
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
        let span = tracing::info_span!("ldap.create", connector = %self.name, object_type);
        self.measured("create", self.create_entry(object_type, attributes))
            .instrument(span)
            .boxed()
    }

    fn update<'a>(
        &'a self,
        object_type: &'a str,
        uid: &'a str,
        changes: &'a Map<String, Value>,
    ) -> BoxFuture<'a, Result<String, ConnectorError>> {
        let span = tracing::info_span!("ldap.update", connector = %self.name, object_type);
        tracing::debug!(parent: &span, uid, "LDAP update");
        self.measured("update", self.update_entry(object_type, uid, changes))
            .instrument(span)
            .boxed()
    }

    fn delete<'a>(
        &'a self,
        object_type: &'a str,
        uid: &'a str,
    ) -> BoxFuture<'a, Result<(), ConnectorError>> {
        let span = tracing::info_span!("ldap.delete", connector = %self.name, object_type);
        tracing::debug!(parent: &span, uid, "LDAP delete");
        self.measured("delete", self.delete_entry(object_type, uid))
            .instrument(span)
            .boxed()
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
