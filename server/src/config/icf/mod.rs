//! Wren's provisioner files (`provisioner.openicf-<name>.json`, the OpenICF
//! shape: `name`, `connectorRef`, `configurationProperties`, `objectTypes`,
//! `operationOptions`, pool and timeout blocks) read as idm connectors: the
//! CSV file connector and the LDAP connector become idm's `csv` and `ldap`
//! connector documents (what a `connector-<name>.json` holds), so everything
//! after loading (sealing, building, the API) sees one shape.
//!
//! Nothing is dropped silently: a setting idm does not act on is listed in
//! [`Translated::ignored`] (the loader logs them in one warning naming the
//! file); a `connectorRef` naming a connector idm does not run stops
//! start-up naming the file. A Wren-encrypted value (`{"$crypto": …}`)
//! cannot be read without Wren's keystore: it is reported, not guessed.
//!
//! [`provisioner_of`] goes the other way, for Wren's REST API: idm's document
//! stays the one stored, and a provisioner document is shown translated back
//! from it, so it holds exactly what idm acts on. An idm document that shape
//! cannot hold (a setting with no ICF key, per-type settings that differ) is
//! refused naming the settings rather than shown with them left out, so a
//! read, edited and written back, never changes what it did not edit.

mod csv;
mod ldap;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests;

use std::path::Path;

use serde_json::{Map, Value, json};

use super::{ConfError, invalid};

/// A provisioner file as an idm connector document.
#[derive(Debug, Clone, PartialEq)]
pub struct Translated {
    /// The connector's name (`system/<name>/…`): the file's `name`, else the
    /// one in its file name.
    pub name: String,
    pub body: Map<String, Value>,
    /// Settings idm does not support, each as `key (why)`.
    pub ignored: Vec<String>,
    /// Keys holding a Wren-encrypted value idm cannot read.
    pub unreadable: Vec<String>,
}

/// What Wren's provisioner shape cannot hold of an idm connector document,
/// each as `key (why)`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Wren's provisioner shape cannot hold {}", .0.join("; "))]
pub struct NotExpressible(pub Vec<String>);

/// Which of idm's connectors a `connectorRef` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Csv,
    Ldap,
}

fn kind_of(connector_name: &str) -> Option<Kind> {
    let lower = connector_name.to_ascii_lowercase();
    if lower.contains("csvfile") && lower.ends_with(".csvfileconnector") {
        Some(Kind::Csv)
    } else if lower.contains(".ldap") && lower.ends_with(".ldapconnector") {
        Some(Kind::Ldap)
    } else {
        None
    }
}

/// Settings read from a provisioner file, and what idm will not do of them.
pub(super) struct Reader<'a> {
    file: &'a Path,
    ignored: Vec<String>,
    unreadable: Vec<String>,
}

impl Reader<'_> {
    fn invalid(&self, field: impl Into<String>, message: impl Into<String>) -> ConfError {
        invalid(self.file, field, message)
    }

    fn ignore(&mut self, key: impl Into<String>, why: &str) {
        self.ignored.push(format!("{} ({why})", key.into()));
    }

    /// A string setting (`null` and absent as `None`).
    fn string(
        &self,
        map: &Map<String, Value>,
        at: &str,
        key: &str,
    ) -> Result<Option<String>, ConfError> {
        match map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(self.invalid(join(at, key), "expected a string")),
        }
    }

    /// A boolean, or its text (what a `&{…}` substitution gives).
    fn flag(
        &self,
        map: &Map<String, Value>,
        at: &str,
        key: &str,
    ) -> Result<Option<bool>, ConfError> {
        flag(map.get(key)).map_err(|()| self.invalid(join(at, key), "expected true or false"))
    }

    /// A whole number, or its text.
    fn number(
        &self,
        map: &Map<String, Value>,
        at: &str,
        key: &str,
    ) -> Result<Option<u64>, ConfError> {
        whole_number(map.get(key))
            .map_err(|()| self.invalid(join(at, key), "expected a whole number"))
    }

    /// A list of strings (a lone string counts as one).
    fn strings(
        &self,
        map: &Map<String, Value>,
        at: &str,
        key: &str,
    ) -> Result<Option<Vec<String>>, ConfError> {
        match map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(vec![s.clone()])),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| v.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .map(Some)
                .ok_or_else(|| self.invalid(join(at, key), "expected an array of strings")),
            Some(_) => Err(self.invalid(join(at, key), "expected an array of strings")),
        }
    }

    /// Notes every key of `map` not in `handled` whose value asks for
    /// something: `null` asks nothing, nor does a value equal to the
    /// connector's own default in `inert`.
    fn ignore_rest(
        &mut self,
        at: &str,
        map: &Map<String, Value>,
        handled: &[&str],
        inert: &[(&str, Value)],
        why: &str,
    ) {
        for (key, value) in map {
            if handled.contains(&key.as_str()) || value.is_null() {
                continue;
            }
            if inert
                .iter()
                .any(|(k, default)| k == key && default == value)
            {
                continue;
            }
            self.ignore(join(at, key), why);
        }
    }
}

/// Reads a provisioner file. `file_name` is its name without
/// `provisioner.openicf-` and `.json`. `None` for a connector with
/// `"enabled": false`.
pub fn translate(
    file: &Path,
    file_name: &str,
    icf: &Map<String, Value>,
) -> Result<Option<Translated>, ConfError> {
    let mut reader = Reader {
        file,
        ignored: Vec::new(),
        unreadable: Vec::new(),
    };
    if reader.flag(icf, "", "enabled")? == Some(false) {
        return Ok(None);
    }
    let name = reader
        .string(icf, "", "name")?
        .filter(|n| !n.trim().is_empty())
        .unwrap_or_else(|| file_name.to_string());
    let connector_ref = icf
        .get("connectorRef")
        .and_then(Value::as_object)
        .ok_or_else(|| {
            reader.invalid(
                "connectorRef",
                "required: {\"connectorName\": …, \"bundleName\": …, \"bundleVersion\": …}",
            )
        })?;
    let connector_name = reader
        .string(connector_ref, "connectorRef", "connectorName")?
        .ok_or_else(|| reader.invalid("connectorRef.connectorName", "required"))?;
    let kind = kind_of(&connector_name).ok_or_else(|| {
        reader.invalid(
            "connectorRef.connectorName",
            format!(
                "idm does not run the connector \"{connector_name}\": it runs the CSV file connector \
                 (org.forgerock.openicf.csvfile.CSVFileConnector) and the LDAP connector \
                 (org.identityconnectors.ldap.LdapConnector)"
            ),
        )
    })?;
    let empty = Map::new();
    let properties = match icf.get("configurationProperties") {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(map)) => map,
        Some(_) => return Err(reader.invalid("configurationProperties", "expected an object")),
    };
    let types = match icf.get("objectTypes") {
        Some(Value::Object(map)) if !map.is_empty() => map,
        _ => {
            return Err(reader.invalid(
                "objectTypes",
                "required: {\"<type>\": {\"nativeType\": \"__ACCOUNT__\", \"properties\": {…}}}",
            ));
        }
    };
    let body = match kind {
        Kind::Csv => csv::translate(&mut reader, properties, types)?,
        Kind::Ldap => ldap::translate(&mut reader, properties, types)?,
    };
    top_level(&mut reader, icf)?;
    Ok(Some(Translated {
        name,
        body,
        ignored: reader.ignored,
        unreadable: reader.unreadable,
    }))
}

/// idm's connector document `body` (as stored, or as a read shows it) as
/// Wren's provisioner document for the connector `name`: [`translate`] gives
/// `body` back from it. Secret values (or the `{"$redacted": true}` a read
/// shows for them) are carried over as they are.
pub fn provisioner_of(
    name: &str,
    body: &Map<String, Value>,
) -> Result<Map<String, Value>, NotExpressible> {
    let mut gaps = Gaps::default();
    let (connector_ref, (properties, types)) =
        match body.get("connectorType").and_then(Value::as_str) {
            Some("csv") => (csv::connector_ref(), csv::to_provisioner(body, &mut gaps)),
            Some("ldap") => (ldap::connector_ref(), ldap::to_provisioner(body, &mut gaps)),
            _ => {
                gaps.note("connectorType", "only csv and ldap have an ICF connector");
                return Err(NotExpressible(gaps.0));
            }
        };
    if !gaps.0.is_empty() {
        return Err(NotExpressible(gaps.0));
    }
    let mut icf = Map::new();
    icf.insert("name".into(), json!(name));
    icf.insert("enabled".into(), json!(true));
    icf.insert("connectorRef".into(), connector_ref);
    icf.insert("configurationProperties".into(), Value::Object(properties));
    icf.insert("objectTypes".into(), Value::Object(types));
    icf.insert("operationOptions".into(), json!({}));
    Ok(icf)
}

/// The settings of an idm document the provisioner shape cannot hold.
#[derive(Default)]
pub(super) struct Gaps(Vec<String>);

impl Gaps {
    fn note(&mut self, key: impl Into<String>, why: &str) {
        self.0.push(format!("{} ({why})", key.into()));
    }

    /// The object types an idm document declares; noted as a gap when none.
    fn declared_types<'a>(
        &mut self,
        body: &'a Map<String, Value>,
    ) -> Option<&'a Map<String, Value>> {
        let declared = body
            .get("objectTypes")
            .and_then(Value::as_object)
            .filter(|types| !types.is_empty());
        if declared.is_none() {
            self.note("objectTypes", "required");
        }
        declared
    }

    /// Notes every key of `map` (at `at`) that is not one of `known`.
    fn unknown_keys(&mut self, at: &str, map: &Map<String, Value>, known: &[&str], why: &str) {
        for key in map.keys().filter(|k| !known.contains(&k.as_str())) {
            self.note(join(at, key), why);
        }
    }
}

/// An ICF object type: JSON schema boilerplate around its `nativeType`. idm
/// reads every attribute the system returns, so no `properties` are listed.
fn object_type(native_type: &str) -> Value {
    json!({
        "$schema": "http://json-schema.org/draft-03/schema",
        "id": native_type,
        "type": "object",
        "nativeType": native_type,
        "properties": {}
    })
}

/// A boolean, or its text; absent and `null` as `None`, `Err` for anything else.
fn flag(value: Option<&Value>) -> Result<Option<bool>, ()> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(Some(true)),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Ok(Some(false)),
        Some(_) => Err(()),
    }
}

/// A whole number, or its text; absent and `null` as `None`, `Err` for
/// anything else.
fn whole_number(value: Option<&Value>) -> Result<Option<u64>, ()> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n.as_u64().map(Some).ok_or(()),
        Some(Value::String(s)) => s.trim().parse().map(Some).map_err(|_| ()),
        Some(_) => Err(()),
    }
}

/// Keeps the first type's settings in `shared`; a later type with other
/// ones is noted, since the provisioner shape has one set for every type.
fn keep_shared<'a, T: PartialEq>(
    shared: &mut Option<(&'a str, T)>,
    type_name: &'a str,
    this: T,
    at: &str,
    gaps: &mut Gaps,
) {
    match shared {
        None => *shared = Some((type_name, this)),
        Some((first, settings)) if *settings != this => gaps.note(
            at,
            &format!(
                "set unlike objectTypes.{first}: the provisioner shape has one setting for all"
            ),
        ),
        Some(_) => {}
    }
}

/// A non-empty string value; `Err` for anything else but absent or `null`.
fn text(map: &Map<String, Value>, key: &str) -> Result<Option<String>, ()> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(()),
    }
}

/// The blocks beside `configurationProperties`: idm manages its own
/// connections, timeouts and retries, so each is fine at Wren's defaults and
/// noted where it asks for something else.
fn top_level(reader: &mut Reader<'_>, icf: &Map<String, Value>) -> Result<(), ConfError> {
    const HANDLED: &[&str] = &[
        "name",
        "enabled",
        "connectorRef",
        "configurationProperties",
        "objectTypes",
        "operationOptions",
        "poolConfigOption",
        "operationTimeout",
        "syncFailureHandler",
        "resultsHandlerConfig",
    ];
    reader.ignore_rest("", icf, HANDLED, &[], "not a setting idm knows");
    let blocks: [(&str, Value, &str); 4] = [
        (
            "poolConfigOption",
            json!({"maxObjects": 10, "maxIdle": 10, "maxWait": 150000, "minEvictableIdleTimeMillis": 120000, "minIdle": 1}),
            "idm keeps one connection per connector",
        ),
        (
            "operationTimeout",
            json!({"CREATE": -1, "VALIDATE": -1, "TEST": -1, "SCRIPT_ON_CONNECTOR": -1, "SCHEMA": -1, "DELETE": -1,
                   "UPDATE": -1, "SYNC": -1, "AUTHENTICATE": -1, "GET": -1, "SCRIPT_ON_RESOURCE": -1, "SEARCH": -1}),
            "idm times every call out after the connector's own limit",
        ),
        (
            "syncFailureHandler",
            json!({"maxRetries": 5, "postRetryAction": "logged-ignore"}),
            "idm retries implicit sync with backoff and keeps failures in the outbox",
        ),
        (
            "resultsHandlerConfig",
            json!({"enableNormalizingResultsHandler": true, "enableFilteredResultsHandler": false,
                   "enableCaseInsensitiveFilter": false, "enableAttributesToGetSearchResultsHandler": true}),
            "idm filters in the directory",
        ),
    ];
    for (block, defaults, why) in blocks {
        match icf.get(block) {
            None | Some(Value::Null) => {}
            Some(Value::Object(map)) => {
                let inert: Vec<(&str, Value)> = defaults
                    .as_object()
                    .map(|d| d.iter().map(|(k, v)| (k.as_str(), v.clone())).collect())
                    .unwrap_or_default();
                reader.ignore_rest(block, map, &[], &inert, why);
            }
            Some(_) => reader.ignore(block, why),
        }
    }
    if let Some(options) = icf.get("operationOptions").and_then(Value::as_object) {
        for (operation, option) in options {
            if option.get("denied").and_then(Value::as_bool) == Some(true) {
                reader.ignore(
                    format!("operationOptions.{operation}.denied"),
                    "idm does not deny operations per connector; a mapping's policies decide",
                );
            }
        }
    }
    Ok(())
}

/// What a property is called in the system: `nativeName`, else its own name.
fn native_name<'a>(name: &'a str, declaration: &'a Value) -> &'a str {
    declaration
        .get("nativeName")
        .and_then(Value::as_str)
        .unwrap_or(name)
}

/// The keys of an object type read as description (idm reads every
/// attribute the system returns).
const TYPE_KEYS: &[&str] = &[
    "$schema",
    "id",
    "type",
    "nativeType",
    "properties",
    "description",
    "title",
];

/// Checks an object type's properties: each must be called what the system
/// calls it (after `native` maps ICF's `__NAME__`, `__UID__`,
/// `__PASSWORD__`), as idm reads and writes attributes by their native names.
fn check_properties(
    reader: &mut Reader<'_>,
    type_name: &str,
    declaration: &Map<String, Value>,
    native: impl Fn(&str) -> Option<String>,
) {
    let at = format!("objectTypes.{type_name}");
    reader.ignore_rest(&at, declaration, TYPE_KEYS, &[], "not a setting idm knows");
    let Some(properties) = declaration.get("properties").and_then(Value::as_object) else {
        return;
    };
    for (property, value) in properties {
        let native_name = native_name(property, value);
        let resolved = if native_name.starts_with("__") && native_name.ends_with("__") {
            match native(native_name) {
                Some(resolved) => resolved,
                None => {
                    reader.ignore(
                        format!("{at}.properties.{property}.nativeName"),
                        &format!("idm has no {native_name}"),
                    );
                    continue;
                }
            }
        } else {
            native_name.to_string()
        };
        if !resolved.eq_ignore_ascii_case(property) {
            reader.ignore(
                format!("{at}.properties.{property}.nativeName"),
                &format!(
                    "idm reads and writes the attribute as \"{resolved}\"; name the property \"{resolved}\" in sync.json"
                ),
            );
        }
    }
}

fn join(at: &str, key: &str) -> String {
    if at.is_empty() {
        key.to_string()
    } else {
        format!("{at}.{key}")
    }
}
