//! A connector whose errors never carry a value that came from the
//! environment or a sealed secret: [`super::build`] wraps every connector
//! built from a document with such values in one, so a URL taken from
//! `$env` or a bind password cannot come back in an error message, whatever
//! the connector (or the library under it) puts in its errors.

use std::sync::Arc;

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use serde_json::{Map, Value};

use super::{Capabilities, Connector, ConnectorError, ObjectTypeInfo, SourceItem};

pub(super) struct Scrubbed {
    pub(super) inner: Arc<dyn Connector>,
    /// `(value, what to print instead)`, longest value first.
    pub(super) hidden: Arc<[(String, String)]>,
}

/// Replaces every hidden value in an error's text by its label.
pub(super) fn scrub(error: ConnectorError, hidden: &[(String, String)]) -> ConnectorError {
    let clean = |text: String| crate::config::scrub_text(text, hidden);
    match error {
        ConnectorError::Config {
            connector,
            field,
            message,
        } => ConnectorError::Config {
            connector,
            field: clean(field),
            message: clean(message),
        },
        ConnectorError::Io {
            connector,
            object,
            message,
        } => ConnectorError::Io {
            connector,
            object: clean(object),
            message: clean(message),
        },
        ConnectorError::Rejected {
            connector,
            object,
            message,
        } => ConnectorError::Rejected {
            connector,
            object: clean(object),
            message: clean(message),
        },
        ConnectorError::Unavailable { connector, message } => ConnectorError::Unavailable {
            connector,
            message: clean(message),
        },
        ConnectorError::Timeout {
            connector,
            object,
            after,
        } => ConnectorError::Timeout {
            connector,
            object: clean(object),
            after,
        },
        ConnectorError::AlreadyExists { connector, object } => ConnectorError::AlreadyExists {
            connector,
            object: clean(object),
        },
        ConnectorError::NotFound { connector, object } => ConnectorError::NotFound {
            connector,
            object: clean(object),
        },
        ConnectorError::Unsupported {
            connector,
            operation,
            object,
        } => ConnectorError::Unsupported {
            connector,
            operation,
            object: clean(object),
        },
        other @ ConnectorError::UnknownObjectType { .. } => other,
    }
}

impl Scrubbed {
    fn clean<T>(&self, result: Result<T, ConnectorError>) -> Result<T, ConnectorError> {
        result.map_err(|e| scrub(e, &self.hidden))
    }

    /// A bad record's reason is scrubbed too.
    fn clean_item(
        &self,
        item: Result<SourceItem, ConnectorError>,
    ) -> Result<SourceItem, ConnectorError> {
        match self.clean(item)? {
            SourceItem::Bad(mut bad) => {
                bad.reason = crate::config::scrub_text(bad.reason, &self.hidden);
                Ok(SourceItem::Bad(bad))
            }
            object => Ok(object),
        }
    }
}

impl Connector for Scrubbed {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    fn object_types(&self) -> Vec<ObjectTypeInfo> {
        self.inner.object_types()
    }

    fn get<'a>(
        &'a self,
        object_type: &'a str,
        uid: &'a str,
    ) -> BoxFuture<'a, Result<Option<super::ConnectorObject>, ConnectorError>> {
        self.inner
            .get(object_type, uid)
            .map(|r| self.clean(r))
            .boxed()
    }

    fn query<'a>(
        &'a self,
        object_type: &'a str,
    ) -> BoxStream<'a, Result<SourceItem, ConnectorError>> {
        self.inner
            .query(object_type)
            .map(|item| self.clean_item(item))
            .boxed()
    }

    fn count<'a>(
        &'a self,
        object_type: &'a str,
    ) -> BoxFuture<'a, Result<Option<u64>, ConnectorError>> {
        self.inner.count(object_type).map(|r| self.clean(r)).boxed()
    }

    fn change_token<'a>(
        &'a self,
        object_type: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, ConnectorError>> {
        self.inner
            .change_token(object_type)
            .map(|r| self.clean(r))
            .boxed()
    }

    fn changed_since<'a>(
        &'a self,
        object_type: &'a str,
        since: &'a str,
    ) -> BoxFuture<'a, Result<Option<Vec<String>>, ConnectorError>> {
        self.inner
            .changed_since(object_type, since)
            .map(|r| self.clean(r))
            .boxed()
    }

    fn search<'a>(
        &'a self,
        object_type: &'a str,
        filter: &'a idm_proto::filter::Filter,
    ) -> BoxStream<'a, Result<SourceItem, ConnectorError>> {
        self.inner
            .search(object_type, filter)
            .map(|item| self.clean_item(item))
            .boxed()
    }

    fn uid_for(&self, object_type: &str, attributes: &Map<String, Value>) -> Option<String> {
        self.inner.uid_for(object_type, attributes)
    }

    fn same_value(
        &self,
        object_type: &str,
        attribute: &str,
        current: Option<&Value>,
        wanted: &Value,
    ) -> bool {
        self.inner
            .same_value(object_type, attribute, current, wanted)
    }

    fn create<'a>(
        &'a self,
        object_type: &'a str,
        attributes: &'a Map<String, Value>,
    ) -> BoxFuture<'a, Result<String, ConnectorError>> {
        self.inner
            .create(object_type, attributes)
            .map(|r| self.clean(r))
            .boxed()
    }

    fn update<'a>(
        &'a self,
        object_type: &'a str,
        uid: &'a str,
        changes: &'a Map<String, Value>,
    ) -> BoxFuture<'a, Result<String, ConnectorError>> {
        self.inner
            .update(object_type, uid, changes)
            .map(|r| self.clean(r))
            .boxed()
    }

    fn delete<'a>(
        &'a self,
        object_type: &'a str,
        uid: &'a str,
    ) -> BoxFuture<'a, Result<(), ConnectorError>> {
        self.inner
            .delete(object_type, uid)
            .map(|r| self.clean(r))
            .boxed()
    }
}
