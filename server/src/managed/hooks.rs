//! Wren's script hooks on managed objects (`onCreate`, `onUpdate`,
//! `onDelete`, `postCreate`, `postUpdate`, `postDelete`).
//!
//! A hook runs when idm has its script: inline `source`, or a `file` found
//! in the conf directory (or its `script/`, or the project's `script/`). One
//! that needs a script of Wren's own (`require('ui/onCreateUser')`, a `file`
//! such as `roles/postOperation-roles.js` that is not there) is named in the
//! start-up warning and not run. Scripts compile at load (a syntax error stops
//! start-up naming the hook) and run in a fresh engine per call, with Wren's
//! bindings: `object` (what `onCreate`/`onUpdate` may change; the value the
//! script leaves in it is written), `oldObject`, `newObject`, `resourceName`.
//! A `post*` hook's failure is logged: the write has happened.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::ManagedError;
use super::schema::{SchemaError, schema_error};
use crate::script::{Limits, ScriptEngine, ScriptSource};

/// Wren's script hooks on a managed object, in the order they run.
pub const HOOKS: &[&str] = &[
    "onCreate",
    "onUpdate",
    "onDelete",
    "postCreate",
    "postUpdate",
    "postDelete",
];

/// A type's runnable hooks, by name (`onCreate`, …).
#[derive(Debug, Clone, Default)]
pub struct Hooks(BTreeMap<&'static str, ScriptSource>);

impl Hooks {
    pub fn get(&self, hook: &str) -> Option<&ScriptSource> {
        self.0.get(hook)
    }
}

/// The type's hooks that can run; the others become warnings.
pub fn load(
    type_name: &str,
    declaration: &Map<String, Value>,
    conf_dir: Option<&Path>,
    at: &str,
    warnings: &mut Vec<String>,
) -> Result<Hooks, SchemaError> {
    let mut hooks = Hooks::default();
    for hook in HOOKS {
        let Some(value) = declaration.get(*hook) else {
            continue;
        };
        let needs = wren_modules(value);
        if !needs.is_empty() {
            warnings.push(format!(
                "{type_name}.{hook}: not run; it needs {}, Wren built-in script(s) idm does not ship",
                needs.join(", ")
            ));
            continue;
        }
        let mut value = value.clone();
        if let Some(file) = value.get("file").and_then(Value::as_str) {
            match conf_dir.and_then(|dir| find_file(dir, file)) {
                Some(path) => value["file"] = Value::String(path.display().to_string()),
                None => {
                    warnings.push(format!(
                        "{type_name}.{hook}: not run; its file {file} is not in the conf directory (a Wren built-in script idm does not ship?)"
                    ));
                    continue;
                }
            }
        }
        let field = format!("{at}.{hook}");
        let source = ScriptSource::from_json(&format!("{type_name}.{hook}"), &value, Path::new(""))
            .map_err(|e| schema_error(&field, e.to_string()))?;
        let wrapped = wrap(hook, &source);
        ScriptEngine::new(Limits::default())
            .and_then(|mut engine| engine.compile(&wrapped).map(|_| ()))
            .map_err(|e| schema_error(&field, e.to_string()))?;
        hooks.0.insert(hook, wrapped);
    }
    Ok(hooks)
}

/// `onCreate`/`onUpdate` hand back the `object` the script changed in place.
fn wrap(hook: &str, source: &ScriptSource) -> ScriptSource {
    if hook == "onCreate" || hook == "onUpdate" {
        ScriptSource {
            name: source.name.clone(),
            code: format!("{}\n;object;", source.code),
        }
    } else {
        source.clone()
    }
}

fn find_file(dir: &Path, file: &str) -> Option<PathBuf> {
    let candidates = [
        dir.join(file),
        dir.join("script").join(file),
        dir.parent()
            .map(|p| p.join("script").join(file))
            .unwrap_or_default(),
    ];
    candidates.into_iter().find(|p| p.is_file())
}

/// The modules an inline hook `require`s (Wren's own, which idm does not ship).
fn wren_modules(declaration: &Value) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    let Some(source) = declaration.get("source").and_then(Value::as_str) else {
        return names;
    };
    let mut rest = source;
    while let Some(start) = rest.find("require(") {
        rest = &rest[start + "require(".len()..];
        let quoted = rest.trim_start();
        let Some(quote) = quoted.chars().next().filter(|c| *c == '\'' || *c == '"') else {
            continue;
        };
        let inner = &quoted[1..];
        if let Some(end) = inner.find(quote) {
            let module = inner[..end].to_string();
            if !names.contains(&module) && names.len() < 8 {
                names.push(module);
            }
        }
    }
    names
}

/// Runs `script` with these bindings in a fresh engine; the completion value
/// (for `onCreate`/`onUpdate`, the `object`).
pub fn run(script: &ScriptSource, bindings: &[(&str, &Value)]) -> Result<Value, ManagedError> {
    let failed = |message: String| ManagedError::Hook {
        script: script.name.clone(),
        message,
    };
    let mut engine = ScriptEngine::new(Limits::default()).map_err(|e| failed(e.to_string()))?;
    let id = engine.compile(script).map_err(|e| failed(e.to_string()))?;
    engine.eval(id, bindings).map_err(|e| failed(e.to_string()))
}

/// Runs an `onCreate`/`onUpdate` hook, if declared, and returns the object it
/// leaves (the input when there is no hook).
pub fn change(
    hooks: &Hooks,
    hook: &str,
    object: Map<String, Value>,
    old: Option<&Map<String, Value>>,
    resource_name: &str,
) -> Result<Map<String, Value>, ManagedError> {
    let Some(script) = hooks.get(hook) else {
        return Ok(object);
    };
    let object = Value::Object(object);
    let old = old.cloned().map(Value::Object).unwrap_or(Value::Null);
    let name = Value::String(resource_name.to_string());
    let out = run(
        script,
        &[
            ("object", &object),
            ("oldObject", &old),
            ("newObject", &object),
            ("resourceName", &name),
        ],
    )?;
    match out {
        Value::Object(map) => Ok(map),
        other => Err(ManagedError::Hook {
            script: script.name.clone(),
            message: format!(
                "left object as {}, not an object",
                super::schema::describe(&other)
            ),
        }),
    }
}

/// Runs an `onDelete` or `post*` hook, if declared; a `post*` failure is logged.
pub fn notify(
    hooks: &Hooks,
    hook: &str,
    old: Option<&Map<String, Value>>,
    new: Option<&Map<String, Value>>,
    resource_name: &str,
) -> Result<(), ManagedError> {
    let Some(script) = hooks.get(hook) else {
        return Ok(());
    };
    let old = old.cloned().map(Value::Object).unwrap_or(Value::Null);
    let new = new.cloned().map(Value::Object).unwrap_or(Value::Null);
    let object = if new.is_null() { &old } else { &new };
    let name = Value::String(resource_name.to_string());
    let result = run(
        script,
        &[
            ("object", object),
            ("oldObject", &old),
            ("newObject", &new),
            ("resourceName", &name),
        ],
    );
    match result {
        Err(e) if hook.starts_with("post") => {
            // The object's id at debug only; its type names the hook.
            let kind = resource_name
                .rsplit_once('/')
                .map_or(resource_name, |(kind, _)| kind);
            tracing::warn!(hook, resource = kind, error = %e, "a post hook failed; the write stands");
            tracing::debug!(hook, resource = resource_name, "the post hook's object");
            Ok(())
        }
        other => other.map(|_| ()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn declaration(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap()
    }

    #[test]
    fn wren_built_ins_are_named_and_not_run() {
        let decl = declaration(json!({
            "onCreate": {"type": "text/javascript",
              "source": "require('ui/onCreateUser').setDefaultFields(object);require(\"roles/conditionalRoles\").x(object);"},
            "postDelete": {"type": "text/javascript", "file": "roles/postOperation-roles.js"}}));
        let mut warnings = Vec::new();
        let hooks = load("user", &decl, None, "objects[0]", &mut warnings).unwrap();
        assert!(hooks.get("onCreate").is_none() && hooks.get("postDelete").is_none());
        assert_eq!(
            warnings[0],
            "user.onCreate: not run; it needs ui/onCreateUser, roles/conditionalRoles, Wren built-in script(s) idm does not ship"
        );
        assert!(
            warnings[1].contains("user.postDelete")
                && warnings[1].contains("roles/postOperation-roles.js")
        );
    }

    #[test]
    fn an_inline_hook_changes_the_object_and_a_syntax_error_names_it() {
        let decl = declaration(json!({"onCreate": {"type": "text/javascript",
            "source": "object.displayName = object.givenName + ' ' + object.sn"}}));
        let mut warnings = Vec::new();
        let hooks = load("user", &decl, None, "objects[0]", &mut warnings).unwrap();
        let out = change(
            &hooks,
            "onCreate",
            declaration(json!({"givenName": "Jon", "sn": "Snow"})),
            None,
            "managed/user/x",
        )
        .unwrap();
        assert_eq!(out["displayName"], "Jon Snow");
        let bad =
            declaration(json!({"onUpdate": {"type": "text/javascript", "source": "object.x = ("}}));
        let err = load("user", &bad, None, "objects[0]", &mut warnings).unwrap_err();
        assert_eq!(err.field, "objects[0].onUpdate");
    }
}
