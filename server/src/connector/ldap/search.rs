//! Reads: one entry by DN or naming value, and paged subtree searches
//! streamed an entry at a time.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use futures::StreamExt;
use futures::stream::BoxStream;
use ldap3::adapters::PagedResults;
use ldap3::{LdapError, Scope, SearchEntry, SearchOptions, SearchStream};
use serde_json::{Map, Value};
use tracing::Instrument;

use super::connection::{Retry, connection_lost};
use super::dn::{looks_like_dn, same_dn};
use super::filter::escape_filter_value;
use super::{LdapConnector, LdapType};
use crate::connector::{ConnectorError, ConnectorObject, SourceItem};

type EntryStream = SearchStream<'static, &'static str, Vec<&'static str>>;

/// Every user attribute; the bind DN decides what it may read.
const ALL_ATTRIBUTES: &str = "*";

impl LdapConnector {
    pub(super) async fn read_one(
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
            let by = self
                .uid_attribute
                .as_deref()
                .unwrap_or(&ldap_type.naming_attribute);
            let naming = format!("({by}={})", escape_filter_value(uid));
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
                        .search(&base, scope, &filter, self.requested())
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
                .map(|entry| to_object(ldap_type, self.uid_attribute.as_deref(), entry))),
            _ => Err(self.rejected(
                &object,
                format!(
                    "more than one entry has {}={uid} under {}",
                    self.uid_attribute
                        .as_deref()
                        .unwrap_or(&ldap_type.naming_attribute),
                    ldap_type.base_dn
                ),
            )),
        }
    }

    /// Every entry under the type's base matching `filter`, a page at a time.
    pub(super) fn paged_search<'a>(
        &'a self,
        object_type: &'a str,
        filter: String,
    ) -> BoxStream<'a, Result<SourceItem, ConnectorError>> {
        let ldap_type = match self.ldap_type(object_type) {
            Ok(t) => t,
            Err(e) => return futures::stream::once(async { Err(e) }).boxed(),
        };
        // The filter holds values (a name, a mail): at debug only.
        let span = tracing::info_span!("ldap.search", connector = %self.name, object_type);
        tracing::debug!(parent: &span, %filter, "LDAP search");
        let state = Paging {
            stream: None,
            generation: 0,
            yielded: 0,
            retried: false,
            done: false,
            started: std::time::Instant::now(),
        };
        let object = format!(
            "system/{}/{object_type} under {}",
            self.name, ldap_type.base_dn
        );
        futures::stream::unfold(state, move |mut state| {
            let (filter, object) = (filter.clone(), object.clone());
            async move {
                let was_done = state.done;
                let item = self
                    .next_entry(ldap_type, &object, &filter, &mut state)
                    .await;
                // The whole search, once, when it ends (whole or failed).
                if state.done && !was_done {
                    let ok = !matches!(item, Some(Err(_)));
                    crate::metrics::ldap_operation(&self.name, "search", state.started, ok);
                }
                Some((item?, state))
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
                    return Some(Ok(SourceItem::Object(to_object(
                        ldap_type,
                        self.uid_attribute.as_deref(),
                        entry,
                    ))));
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
                self.requested(),
            )
            .await
            .map(|stream| (generation, stream))
            .map_err(|e| OpenError::Search(generation, e))
    }
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
    /// When the search began, for its latency.
    started: std::time::Instant,
}

impl LdapConnector {
    /// The attributes a read asks for: every user attribute, and the uid
    /// attribute (`entryUUID` is operational: only returned when named).
    fn requested(&self) -> Vec<&'static str> {
        match self.uid_attribute.as_deref() {
            None => vec![ALL_ATTRIBUTES],
            Some(uid) => vec![ALL_ATTRIBUTES, uid_attribute_name(uid)],
        }
    }
}

/// The uid attribute as the `'static` name ldap3's streaming search wants:
/// the common ones without allocating, another leaked once per name.
fn uid_attribute_name(name: &str) -> &'static str {
    const KNOWN: &[&str] = &[
        "entryUUID",
        "nsUniqueId",
        "objectGUID",
        "GUID",
        "uid",
        "ipaUniqueID",
    ];
    if let Some(known) = KNOWN.iter().find(|k| k.eq_ignore_ascii_case(name)) {
        return known;
    }
    static LEAKED: std::sync::Mutex<Vec<&'static str>> = std::sync::Mutex::new(Vec::new());
    let mut leaked = LEAKED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(found) = leaked.iter().find(|l| **l == name) {
        return found;
    }
    let made: &'static str = Box::leak(name.to_string().into_boxed_str());
    leaked.push(made);
    made
}

/// An entry as a connector object: one value → a string, several → an array,
/// `objectClass` always an array; the placeholder member is left out. With a
/// uid attribute, its value is the uid and the DN is the `dn` attribute.
fn to_object(
    ldap_type: &LdapType,
    uid_attribute: Option<&str>,
    entry: SearchEntry,
) -> ConnectorObject {
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
    let uid = match uid_attribute {
        None => entry.dn,
        Some(uid_attribute) => {
            let value = map
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(uid_attribute))
                .and_then(|(_, v)| v.as_str())
                .map(str::to_string);
            map.insert("dn".into(), Value::String(entry.dn.clone()));
            // An entry the bind DN may not read the uid of: named by its DN,
            // which `get` also accepts.
            value.unwrap_or(entry.dn)
        }
    };
    ConnectorObject {
        uid,
        attributes: map,
        line: None,
    }
}
