//! Connectors: how idm reaches external systems. One [`Connector`] per
//! `conf/connector-<name>.json`; its objects are addressed
//! `system/<connector>/<objectType>`. Calls are async and time-limited, and
//! every error names the connector and the object it was about.

mod csv;
mod ldap;
mod scrubbed;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use serde_json::{Map, Value};

use crate::secrets::SecretBox;

pub use self::csv::CsvConnector;
pub use self::ldap::LdapConnector;

/// How long one connector call may take before it fails as a timeout.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// An object of an external system.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectorObject {
    /// The object's id in its system (a CSV row's uid column, an LDAP DN or uid).
    pub uid: String,
    pub attributes: Map<String, Value>,
    /// Where it was read from, for messages: the line of a CSV file.
    pub line: Option<u64>,
}

/// A record a source could not turn into an object. A reconciliation reports
/// it as a failure with its line and goes on.
#[derive(Debug, Clone, PartialEq)]
pub struct BadRecord {
    pub line: u64,
    pub uid: Option<String>,
    pub reason: String,
}

/// One item of a streaming read.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceItem {
    Object(ConnectorObject),
    Bad(BadRecord),
}

/// What a connector can do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    pub read: bool,
    pub create: bool,
    pub update: bool,
    pub delete: bool,
}

/// An object type a connector offers and the attributes it knows of.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectTypeInfo {
    pub name: String,
    pub uid_attribute: String,
    pub attributes: Vec<String>,
    /// The attribute people know an object by when its uid means nothing to
    /// them: `dn` for LDAP entries whose uid is an `entryUUID`. `None` when
    /// the uid is that name already (a DN, a CSV uid).
    pub display_attribute: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    #[error("connector {connector}: {field}: {message}")]
    Config {
        connector: String,
        field: String,
        message: String,
    },
    #[error("connector {connector} has no object type \"{object_type}\"")]
    UnknownObjectType {
        connector: String,
        object_type: String,
    },
    #[error("connector {connector} cannot {operation} ({object})")]
    Unsupported {
        connector: String,
        operation: &'static str,
        object: String,
    },
    #[error("connector {connector}, {object}: {message}")]
    Io {
        connector: String,
        object: String,
        message: String,
    },
    #[error("connector {connector}, {object}: no answer within {after:?}")]
    Timeout {
        connector: String,
        object: String,
        after: Duration,
    },
    #[error("connector {connector}: {object} already exists")]
    AlreadyExists { connector: String, object: String },
    #[error("connector {connector}: {object} does not exist")]
    NotFound { connector: String, object: String },
    /// The system refused the operation (a schema or constraint violation,
    /// insufficient access, bad credentials): retrying alone will not help.
    #[error("connector {connector}, {object}: refused: {message}")]
    Rejected {
        connector: String,
        object: String,
        message: String,
    },
    /// The system cannot be reached (refused connection, dropped connection,
    /// server busy or unavailable): the same call may succeed later.
    #[error("connector {connector} is unavailable: {message}")]
    Unavailable { connector: String, message: String },
}

impl ConnectorError {
    /// Whether the same call may succeed later without anyone changing
    /// anything: the system was down, busy or slow.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            ConnectorError::Unavailable { .. }
                | ConnectorError::Timeout { .. }
                | ConnectorError::Io { .. }
        )
    }
}

/// Whether a system attribute is a password, by its name (`userPassword`,
/// `__PASSWORD__`): never shown, whatever the caller may see.
pub fn is_password_attribute(attribute: &str) -> bool {
    attribute.to_ascii_lowercase().contains("password")
}

/// The one interface reconciliation and provisioning use for every system.
pub trait Connector: Send + Sync {
    fn name(&self) -> &str;
    fn capabilities(&self) -> Capabilities;
    fn object_types(&self) -> Vec<ObjectTypeInfo>;

    /// The object with this uid, if any.
    fn get<'a>(
        &'a self,
        object_type: &'a str,
        uid: &'a str,
    ) -> BoxFuture<'a, Result<Option<ConnectorObject>, ConnectorError>>;

    /// Every object of a type, streamed: memory stays bounded whatever the size
    /// of the source, and dropping the stream stops the read.
    fn query<'a>(
        &'a self,
        object_type: &'a str,
    ) -> BoxStream<'a, Result<SourceItem, ConnectorError>>;

    /// How many objects a type holds, if the connector can tell cheaply; a
    /// reconciliation uses it as the total of its progress.
    fn count<'a>(
        &'a self,
        _object_type: &'a str,
    ) -> BoxFuture<'a, Result<Option<u64>, ConnectorError>> {
        Box::pin(async { Ok(None) })
    }

    /// A cheap token that changes whenever a type's objects may have changed
    /// (a file's size and modification time); `None` if the connector cannot
    /// tell. liveSync reconciles only when it moved.
    fn change_token<'a>(
        &'a self,
        _object_type: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, ConnectorError>> {
        Box::pin(async { Ok(None) })
    }

    /// The uids of a type's objects changed since `since` (RFC 3339), if the
    /// connector can tell; liveSync reconciles just those.
    fn changed_since<'a>(
        &'a self,
        _object_type: &'a str,
        _since: &'a str,
    ) -> BoxFuture<'a, Result<Option<Vec<String>>, ConnectorError>> {
        Box::pin(async { Ok(None) })
    }

    /// Objects of a type matching a SCIM filter (attribute names are the
    /// system's own), streamed like [`Connector::query`].
    fn search<'a>(
        &'a self,
        object_type: &'a str,
        _filter: &'a idm_proto::filter::Filter,
    ) -> BoxStream<'a, Result<SourceItem, ConnectorError>> {
        let refused = ConnectorError::Unsupported {
            connector: self.name().to_string(),
            operation: "search",
            object: format!("system/{}/{object_type}", self.name()),
        };
        Box::pin(futures::stream::once(async move { Err(refused) }))
    }

    /// The uid an object with these attributes would be created under, if
    /// the connector derives it from them (an LDAP DN from the naming
    /// attribute); provisioning uses it to find a target nobody linked yet.
    fn uid_for(&self, _object_type: &str, _attributes: &Map<String, Value>) -> Option<String> {
        None
    }

    /// Whether a value read from the system already is the value a mapping
    /// wants (`current` is `None` when the attribute is absent). Systems that
    /// store values differently from how they are written (a hashed
    /// password, case-insensitive attributes) answer here, so an unchanged
    /// object is not rewritten.
    fn same_value(
        &self,
        _object_type: &str,
        _attribute: &str,
        current: Option<&Value>,
        wanted: &Value,
    ) -> bool {
        match current {
            None => wanted.is_null(),
            Some(current) => current == wanted,
        }
    }

    /// Creates an object; returns its uid.
    fn create<'a>(
        &'a self,
        object_type: &'a str,
        attributes: &'a Map<String, Value>,
    ) -> BoxFuture<'a, Result<String, ConnectorError>>;

    /// Changes the given attributes of an object (`null` removes one);
    /// returns its uid afterwards, which differs when the change renamed it.
    fn update<'a>(
        &'a self,
        object_type: &'a str,
        uid: &'a str,
        changes: &'a Map<String, Value>,
    ) -> BoxFuture<'a, Result<String, ConnectorError>>;

    /// Deletes an object; deleting what is gone succeeds.
    fn delete<'a>(
        &'a self,
        object_type: &'a str,
        uid: &'a str,
    ) -> BoxFuture<'a, Result<(), ConnectorError>>;
}

/// Where a connector type keeps secrets in its configuration. Each connector
/// module declares its own: paths of keys, dot-separated, `*` standing for any
/// key (`objectTypes.*.password`); everything under a declared path is
/// secret (an ICF `GuardedString` object as a whole). Secrets are sealed at
/// rest, opened only to build the connector, and never shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretFields {
    Declared(&'static [&'static str]),
    /// A type idm does not know: every value but `connectorType` is treated
    /// as a secret.
    Unknown,
}

impl SecretFields {
    /// What the connector type declares; `connectorType` as written in the document.
    pub fn of(connector_type: Option<&str>) -> Self {
        match connector_type {
            Some("csv") => SecretFields::Declared(csv::SECRET_FIELDS),
            Some("ldap") => SecretFields::Declared(ldap::SECRET_FIELDS),
            _ => SecretFields::Unknown,
        }
    }

    /// Of a connector document.
    pub fn of_document(body: &Map<String, Value>) -> Self {
        Self::of(body.get("connectorType").and_then(Value::as_str))
    }

    /// Whether the value at `path` (keys from the document's top) is secret,
    /// or lies under a secret.
    pub fn covers(&self, path: &[&str]) -> bool {
        match self {
            SecretFields::Unknown => path.first().is_some_and(|k| *k != "connectorType"),
            SecretFields::Declared(patterns) => patterns.iter().any(|pattern| {
                let segments: Vec<&str> = pattern.split('.').collect();
                segments.len() <= path.len()
                    && segments
                        .iter()
                        .zip(path)
                        .all(|(want, key)| *want == "*" || want == key)
            }),
        }
    }
}

/// The first configuration key whose value differs between a connector's
/// `stored` document and `body` among those its type declares as saying where
/// and how its secrets travel (for a type idm does not know: any key).
pub fn destination_changed(
    body: &Map<String, Value>,
    stored: &Map<String, Value>,
) -> Option<String> {
    let differs = |key: &str| body.get(key) != stored.get(key);
    let declared = match body.get("connectorType").and_then(Value::as_str) {
        Some("csv") => csv::DESTINATION_FIELDS,
        Some("ldap") => ldap::DESTINATION_FIELDS,
        _ => {
            return body
                .keys()
                .chain(stored.keys())
                .find(|key| differs(key))
                .cloned();
        }
    };
    declared
        .iter()
        .find(|key| differs(key))
        .map(|key| key.to_string())
}

/// Builds the connector a `connector-<name>.json` document declares, as
/// stored: sealed secrets are opened with `secrets`, then `$env` references
/// resolved. Relative paths in it are relative to `conf_dir`. No error carries
/// a value that came from the environment or a sealed secret: such values are
/// replaced by the reference (`$env:NAME`) or the field.
pub fn build(
    name: &str,
    body: &Map<String, Value>,
    conf_dir: &Path,
    secrets: &SecretBox,
) -> Result<Arc<dyn Connector>, ConnectorError> {
    let opened = crate::config::open_sealed(body, secrets).map_err(|e| ConnectorError::Config {
        connector: name.to_string(),
        field: e.field,
        message: "a sealed secret could not be opened (was the encryption key changed?)".into(),
    })?;
    let mut hidden = Vec::new();
    let resolved = crate::config::resolve_env(&Value::Object(opened), &mut hidden);
    let body = resolved.as_object().cloned().unwrap_or_default();
    crate::config::note_secrets(&body, SecretFields::of_document(&body), &mut hidden);
    hidden.sort_by_key(|h| std::cmp::Reverse(h.0.len()));
    let built: Result<Arc<dyn Connector>, ConnectorError> =
        match body.get("connectorType").and_then(Value::as_str) {
            Some("csv") => CsvConnector::from_config(name, &body, conf_dir)
                .map(|c| Arc::new(c) as Arc<dyn Connector>),
            Some("ldap") => LdapConnector::from_config(name, &body, conf_dir)
                .map(|c| Arc::new(c) as Arc<dyn Connector>),
            Some(other) => Err(ConnectorError::Config {
                connector: name.to_string(),
                field: "connectorType".into(),
                message: format!("unknown connector type \"{other}\" (csv, ldap)"),
            }),
            None => Err(ConnectorError::Config {
                connector: name.to_string(),
                field: "connectorType".into(),
                message: "required".into(),
            }),
        };
    let built = built.map_err(|e| scrubbed::scrub(e, &hidden))?;
    if hidden.is_empty() {
        return Ok(built);
    }
    Ok(Arc::new(scrubbed::Scrubbed {
        inner: built,
        hidden: hidden.into(),
    }))
}

/// Logs, once per connector, what a connector document puts at risk on the
/// wire (an LDAP password in clear to another host, TLS that verifies
/// nothing). Called when a document is loaded or stored, so the operator
/// hears of it before the first call; building the connector checks again.
pub fn warn_insecure(name: &str, body: &Map<String, Value>) {
    if body.get("connectorType").and_then(Value::as_str) == Some("ldap") {
        ldap::transport::warn_once(name, ldap::transport::risks_of_document(body));
    }
}

/// [`warn_insecure`] for every connector of a conf directory.
pub fn warn_insecure_documents(documents: &[crate::store::ConfigDocument]) {
    for doc in documents.iter().filter(|d| d.kind == "connector") {
        warn_insecure(&doc.name, &doc.body);
    }
}

/// Runs a connector call under a time limit; the timeout names the connector
/// and the object.
pub async fn time_limited<T>(
    connector: &str,
    object: &str,
    limit: Duration,
    call: impl std::future::Future<Output = Result<T, ConnectorError>>,
) -> Result<T, ConnectorError> {
    tokio::time::timeout(limit, call).await.unwrap_or_else(|_| {
        Err(ConnectorError::Timeout {
            connector: connector.to_string(),
            object: object.to_string(),
            after: limit,
        })
    })
}
