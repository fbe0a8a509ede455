//! Loading a conf directory: `managed.json` (object types), `connector-*.json`
//! and Wren's `provisioner.openicf-*.json` (`icf/`), `sync.json` (mappings)
//! and `schedule-*.json`, from a flat directory or a Wren project (`project.rs`),
//! `&{property}` substituted (`properties.rs`). Loading is idempotent: an
//! unchanged file writes nothing, and documents whose file is gone are removed.
//! A bad file stops start-up with an error naming the file and the field.

mod icf;
mod policy;
mod project;
mod properties;
mod sealing;

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

pub use self::icf::{
    NotExpressible, Translated, provisioner_of, translate as translate_provisioner,
};
pub use self::policy::{ApiDocumentPolicy, PolicyViolation};
pub use self::project::{Layout, project_dir, resolve as resolve_path};
pub use self::properties::Properties;
pub use self::sealing::{
    REDACTED, SEALED, SealError, check_kept_secrets, find_sealed, note_secrets, open_sealed,
    redact, restore_redacted, scrub_text, seal,
};
use crate::managed::ManagedSchema;
use crate::scheduler::Schedule;
use crate::secrets::SecretBox;
use crate::store::{ConfigDocument, Store, StoreError};
use crate::sync::Mapping;

#[derive(Debug, thiserror::Error)]
pub enum ConfError {
    #[error("{file}: {field}: {message}")]
    Invalid {
        file: String,
        field: String,
        message: String,
    },
    #[error("{file}: {message}")]
    Read { file: String, message: String },
    #[error("loading conf into the store: {0}")]
    Store(#[from] StoreError),
    #[error("{file}: {source}")]
    Seal { file: String, source: SealError },
}

/// What the conf directory declares.
pub struct Conf {
    pub schema: ManagedSchema,
    /// `(kind, name, file, body)` for connectors, mappings and schedules.
    pub documents: Vec<ConfigDocument>,
}

/// One warning naming every setting of `managed.json` idm does not act on.
fn warn_unsupported(file: &Path, warnings: &[String]) {
    if !warnings.is_empty() {
        tracing::warn!(
            file = %file.display(),
            unsupported = %warnings.join("; "),
            "{}: {} setting(s) idm does not support are ignored: {}",
            file.display(),
            warnings.len(),
            warnings.join("; ")
        );
    }
}

pub(crate) fn invalid(
    file: &Path,
    field: impl Into<String>,
    message: impl Into<String>,
) -> ConfError {
    ConfError::Invalid {
        file: file.display().to_string(),
        field: field.into(),
        message: message.into(),
    }
}

/// Reads and checks a conf directory; `None` gives the built-in types only.
pub fn read(dir: Option<&Path>) -> Result<Conf, ConfError> {
    let Some(dir) = dir else {
        let schema = ManagedSchema::builtin()
            .map_err(|e| invalid(Path::new("<built-in managed.json>"), e.field, e.message))?;
        return Ok(Conf {
            schema,
            documents: Vec::new(),
        });
    };
    if !dir.is_dir() {
        return Err(ConfError::Read {
            file: dir.display().to_string(),
            message: "not a directory".into(),
        });
    }
    let layout = Layout::of(dir);
    let project = layout.project.as_path();
    let properties = Properties::load(project, &layout.files)?;
    let managed_file = layout.files.join("managed.json");
    let schema = if managed_file.exists() {
        let mut text = read_text(&managed_file)?;
        if text.contains("&{") {
            let mut value = read_object(&managed_file).map(Value::Object)?;
            properties.substitute(&managed_file, &mut value)?;
            text = value.to_string();
        }
        let schema = ManagedSchema::from_json_in(&text, Some(&layout.files))
            .map_err(|e| invalid(&managed_file, e.field, e.message))?;
        warn_unsupported(&managed_file, &schema.warnings);
        schema
    } else {
        ManagedSchema::builtin().map_err(|e| invalid(&managed_file, e.field, e.message))?
    };
    let read_substituted = |file: &Path| -> Result<Map<String, Value>, ConfError> {
        let mut value = Value::Object(read_object(file)?);
        properties.substitute(file, &mut value)?;
        Ok(match value {
            Value::Object(map) => map,
            _ => Map::new(),
        })
    };
    let mut documents = Vec::new();
    for file in files(&layout.files)? {
        let Some(file_name) = file
            .file_name()
            .and_then(|n| n.to_str())
            .map(str::to_string)
        else {
            continue;
        };
        if let Some(name) = file_name
            .strip_prefix("connector-")
            .and_then(|n| n.strip_suffix(".json"))
        {
            let body = read_substituted(&file)?;
            push_connector(&mut documents, document("connector", name, &file, body))?;
        } else if let Some(name) = file_name
            .strip_prefix("provisioner.openicf-")
            .and_then(|n| n.strip_suffix(".json"))
        {
            let body = read_substituted(&file)?;
            let Some(translated) = icf::translate(&file, name, &body)? else {
                tracing::info!(file = %file.display(), "connector disabled (\"enabled\": false): not loaded");
                continue;
            };
            warn_about_translation(&file, &translated);
            push_connector(
                &mut documents,
                document("connector", &translated.name, &file, translated.body),
            )?;
        } else if let Some(name) = file_name
            .strip_prefix("schedule-")
            .and_then(|n| n.strip_suffix(".json"))
        {
            let body = read_substituted(&file)?;
            Schedule::from_document(name, &body, project)
                .map_err(|e| invalid(&file, e.field, e.message))?;
            documents.push(document("schedule", name, &file, body));
        } else if file_name == "sync.json" {
            let body = read_substituted(&file)?;
            let mappings = body
                .get("mappings")
                .and_then(Value::as_array)
                .ok_or_else(|| invalid(&file, "mappings", "expected an array of mappings"))?;
            for (index, mapping) in mappings.iter().enumerate() {
                let field = format!("mappings[{index}]");
                let mapping = mapping
                    .as_object()
                    .ok_or_else(|| invalid(&file, &field, "expected an object"))?;
                let checked = Mapping::from_json(&field, mapping, project, &schema)
                    .map_err(|e| invalid(&file, e.field, e.message))?;
                let name = checked.name.as_str();
                if documents
                    .iter()
                    .any(|d: &ConfigDocument| d.kind == "mapping" && d.name == name)
                {
                    return Err(invalid(
                        &file,
                        format!("{field}.name"),
                        format!("mapping \"{name}\" is declared twice"),
                    ));
                }
                documents.push(document("mapping", name, &file, mapping.clone()));
            }
        }
    }
    for doc in &documents {
        check_env_references(Path::new(&doc.source), "", &Value::Object(doc.body.clone()))?;
    }
    Ok(Conf { schema, documents })
}

/// Writes the conf documents into the store, their secrets sealed, removing
/// file-sourced documents whose file no longer declares them. Sealing is
/// randomized, so a document counts as unchanged when the stored one, opened,
/// equals the file's: an unchanged file writes nothing.
///
/// Several nodes may start with the conf directory: applying is idempotent,
/// so the first applies it and the others find it there. A document last
/// written through the API is kept (a node starting, or restarting in a
/// rolling upgrade, does not undo an operator's change made on another
/// node); deleting it through the API lets the file's apply at the next start.
pub async fn apply(store: &Store, conf: &Conf, secrets: &SecretBox) -> Result<usize, ConfError> {
    let mut changed = 0;
    for doc in &conf.documents {
        let current = store.get_config(&doc.kind, &doc.name).await?;
        if current.as_ref().is_some_and(|c| c.source == "api") {
            tracing::warn!(
                kind = %doc.kind,
                name = %doc.name,
                file = %doc.source,
                "kept the version written through the API; the file's is not applied (delete the document through the API to go back to the file)"
            );
            continue;
        }
        let unchanged = current.is_some_and(|c| {
            c.source == doc.source
                && sealing::open_sealed(&c.body, secrets).is_ok_and(|opened| opened == doc.body)
        });
        if unchanged {
            continue;
        }
        let body =
            sealing::seal(&doc.kind, &doc.body, secrets).map_err(|source| ConfError::Seal {
                file: doc.source.clone(),
                source,
            })?;
        let sealed = ConfigDocument {
            body,
            ..doc.clone()
        };
        if store.put_config(&sealed).await? {
            changed += 1;
        }
    }
    for kind in ["connector", "mapping", "schedule"] {
        for stale in store.list_config(kind).await? {
            let declared = conf
                .documents
                .iter()
                .any(|d| d.kind == stale.kind && d.name == stale.name);
            if !declared && stale.source != "api" {
                store.delete_config(&stale.kind, &stale.name).await?;
                changed += 1;
            }
        }
    }
    Ok(changed)
}

/// Resolves `{"$env": "NAME", "default": "…"}` values, recursively, adding
/// every value it put in to `hidden` with the reference it came from
/// (`$env:NAME`), so messages can be scrubbed of it; longest value first.
pub fn resolve_env(value: &Value, hidden: &mut Vec<(String, String)>) -> Value {
    let resolved = resolve(value, hidden);
    hidden.sort_by_key(|h| std::cmp::Reverse(h.0.len()));
    resolved
}

fn resolve(value: &Value, hidden: &mut Vec<(String, String)>) -> Value {
    match value {
        Value::Object(map) if map.contains_key("$env") => {
            let name = map.get("$env").and_then(Value::as_str).unwrap_or_default();
            let (resolved, label) = match std::env::var(name) {
                Ok(set) => (Value::String(set), format!("$env:{name}")),
                Err(_) => (
                    map.get("default").cloned().unwrap_or(Value::Null),
                    format!("$env:{name} (default)"),
                ),
            };
            // A flag or a number says nothing and would garble messages
            // (a secret field's value is noted by `note_secrets` whatever it is).
            if let Value::String(text) = &resolved
                && !matches!(text.as_str(), "true" | "false")
                && text.parse::<f64>().is_err()
            {
                hidden.push((text.clone(), label));
            }
            resolved
        }
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), resolve(v, hidden)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(|v| resolve(v, hidden)).collect()),
        other => other.clone(),
    }
}

fn check_env_references(file: &Path, at: &str, value: &Value) -> Result<(), ConfError> {
    match value {
        Value::Object(map) if map.contains_key("$env") => {
            if !map.get("$env").is_some_and(Value::is_string)
                || map.keys().any(|k| k != "$env" && k != "default")
            {
                return Err(invalid(
                    file,
                    at,
                    "an environment reference is {\"$env\": \"NAME\", \"default\": \"…\"}",
                ));
            }
            Ok(())
        }
        Value::Object(map) => map
            .iter()
            .try_for_each(|(k, v)| check_env_references(file, &join(at, k), v)),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .try_for_each(|(i, v)| check_env_references(file, &format!("{at}[{i}]"), v)),
        _ => Ok(()),
    }
}

/// Adds a connector document; two files declaring one name stop start-up.
fn push_connector(
    documents: &mut Vec<ConfigDocument>,
    doc: ConfigDocument,
) -> Result<(), ConfError> {
    if let Some(first) = documents
        .iter()
        .find(|d| d.kind == "connector" && d.name == doc.name)
    {
        return Err(invalid(
            Path::new(&doc.source),
            "name",
            format!(
                "connector \"{}\" is declared by {} already",
                doc.name, first.source
            ),
        ));
    }
    documents.push(doc);
    Ok(())
}

/// One warning per provisioner file for the settings idm does not act on,
/// and one for each value only Wren can decrypt.
fn warn_about_translation(file: &Path, translated: &Translated) {
    if !translated.ignored.is_empty() {
        tracing::warn!(
            file = %file.display(),
            connector = %translated.name,
            settings = %translated.ignored.join("; "),
            "settings of a Wren provisioner file that idm does not support are ignored"
        );
    }
    for key in &translated.unreadable {
        tracing::warn!(
            file = %file.display(),
            key = %key,
            "{}: {key} is encrypted by Wren ({{\"$crypto\": …}}) and idm cannot decrypt it; \
             write the password in the file, as &{{property}} or as {{\"$env\": \"NAME\"}} \
             (idm seals it at rest); until then the connector binds without it",
            file.display()
        );
    }
}

fn join(at: &str, key: &str) -> String {
    if at.is_empty() {
        key.to_string()
    } else {
        format!("{at}.{key}")
    }
}

fn document(kind: &str, name: &str, file: &Path, body: Map<String, Value>) -> ConfigDocument {
    ConfigDocument {
        kind: kind.into(),
        name: name.into(),
        body,
        source: file.display().to_string(),
    }
}

fn files(dir: &Path) -> Result<Vec<PathBuf>, ConfError> {
    let entries = std::fs::read_dir(dir).map_err(|e| ConfError::Read {
        file: dir.display().to_string(),
        message: e.to_string(),
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    Ok(files)
}

fn read_text(file: &Path) -> Result<String, ConfError> {
    std::fs::read_to_string(file).map_err(|e| ConfError::Read {
        file: file.display().to_string(),
        message: e.to_string(),
    })
}

fn read_object(file: &Path) -> Result<Map<String, Value>, ConfError> {
    let text = read_text(file)?;
    match serde_json::from_str(&text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(invalid(file, "(top level)", "expected a JSON object")),
        Err(e) => Err(invalid(
            file,
            format!("line {} column {}", e.line(), e.column()),
            e.to_string(),
        )),
    }
}
