//! A mapping (one entry of `sync.json`'s `mappings`) in Wren:IDM's shape,
//! checked when the conf is loaded: a bad mapping stops start-up naming the
//! field, and every script is compiled once so a syntax error is found then,
//! not on the first record of a night's run.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Map, Value};

use super::situation::{Action, Situation};
use crate::managed::ManagedSchema;
use crate::script::{Limits, ScriptEngine, ScriptError, ScriptSource};

/// Wren's default for `taskThreads`.
pub const DEFAULT_TASK_THREADS: usize = 10;

#[derive(Debug, Clone, PartialEq)]
pub struct Mapping {
    pub name: String,
    pub source: Endpoint,
    pub target: Endpoint,
    pub properties: Vec<PropertyMapping>,
    /// A script returning the query that finds a source's target (`{"_queryFilter": "…"}`).
    pub correlation_query: Option<ScriptSource>,
    pub valid_source: Option<ScriptSource>,
    pub valid_target: Option<ScriptSource>,
    /// Overrides of the default policy table.
    pub policies: BTreeMap<Situation, Policy>,
    pub on_create: Option<ScriptSource>,
    pub on_update: Option<ScriptSource>,
    pub on_link: Option<ScriptSource>,
    /// Implicit sync: managed writes reach the target through the outbox.
    pub enable_sync: bool,
    pub run_target_phase: bool,
    pub task_threads: usize,
}

/// One side of a mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `managed/<type>`
    Managed { type_name: String },
    /// `system/<connector>/<objectType>`
    System {
        connector: String,
        object_type: String,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct PropertyMapping {
    /// The source attribute; `None` (Wren's `""` or no `source`) hands the
    /// transform the whole source object.
    pub source: Option<String>,
    pub target: String,
    pub transform: Option<ScriptSource>,
    pub condition: Option<ScriptSource>,
    /// Used when the source has no value (or there is no source attribute).
    pub default: Option<Value>,
    /// The value holds references to managed objects (`{"_ref": …}`) that
    /// this other mapping links to targets: the target gets their linked
    /// target ids instead (a group's `members` → member DNs). References not
    /// linked yet are left out until they are.
    pub reference_mapping: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub action: Action,
    pub condition: Option<ScriptSource>,
    pub post_action: Option<ScriptSource>,
}

/// Why a mapping cannot be used; `field` is a path into `sync.json`.
#[derive(Debug, thiserror::Error)]
#[error("{field}: {message}")]
pub struct MappingError {
    pub field: String,
    pub message: String,
}

fn error(field: impl Into<String>, message: impl Into<String>) -> MappingError {
    MappingError {
        field: field.into(),
        message: message.into(),
    }
}

impl Endpoint {
    fn parse(text: &str, field: &str, schema: &ManagedSchema) -> Result<Self, MappingError> {
        let parts: Vec<&str> = text.split('/').collect();
        match parts.as_slice() {
            ["managed", type_name] => {
                schema
                    .get(type_name)
                    .map_err(|e| error(field, e.to_string()))?;
                Ok(Endpoint::Managed {
                    type_name: (*type_name).to_string(),
                })
            }
            ["system", connector, object_type]
                if !connector.is_empty() && !object_type.is_empty() =>
            {
                Ok(Endpoint::System {
                    connector: (*connector).to_string(),
                    object_type: (*object_type).to_string(),
                })
            }
            _ => Err(error(
                field,
                format!("\"{text}\" is neither managed/<type> nor system/<connector>/<objectType>"),
            )),
        }
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Managed { type_name } => write!(f, "managed/{type_name}"),
            Endpoint::System {
                connector,
                object_type,
            } => write!(f, "system/{connector}/{object_type}"),
        }
    }
}

impl Mapping {
    /// Reads a mapping; `at` locates it in the file (`mappings[0]`), script
    /// files are relative to `conf_dir`, managed types must be in `schema`.
    pub fn from_json(
        at: &str,
        body: &Map<String, Value>,
        conf_dir: &Path,
        schema: &ManagedSchema,
    ) -> Result<Self, MappingError> {
        let text = |key: &str| -> Result<String, MappingError> {
            body.get(key)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .ok_or_else(|| error(format!("{at}.{key}"), "required, a string"))
        };
        let name = text("name")?;
        let script = |key: &str,
                      value: Option<&Value>|
         -> Result<Option<ScriptSource>, MappingError> {
            let field = format!("{at}.{key}");
            match value {
                None | Some(Value::Null) => Ok(None),
                Some(value) => ScriptSource::from_json(&format!("{name}.{key}"), value, conf_dir)
                    .map(Some)
                    .map_err(|e| error(field, script_message(e))),
            }
        };
        let flag = |key: &str, default: bool| -> Result<bool, MappingError> {
            match body.get(key) {
                None => Ok(default),
                Some(Value::Bool(b)) => Ok(*b),
                Some(_) => Err(error(format!("{at}.{key}"), "expected true or false")),
            }
        };

        let mut properties = Vec::new();
        if let Some(list) = body.get("properties") {
            let list = list
                .as_array()
                .ok_or_else(|| error(format!("{at}.properties"), "expected an array"))?;
            for (index, property) in list.iter().enumerate() {
                let field = format!("{at}.properties[{index}]");
                let property = property
                    .as_object()
                    .ok_or_else(|| error(&field, "expected an object"))?;
                let target = property
                    .get("target")
                    .and_then(Value::as_str)
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| error(format!("{field}.target"), "required, a string"))?
                    .to_string();
                let source = match property.get("source") {
                    None | Some(Value::Null) => None,
                    Some(Value::String(s)) if s.is_empty() => None,
                    Some(Value::String(s)) => Some(s.clone()),
                    Some(_) => return Err(error(format!("{field}.source"), "expected a string")),
                };
                let property_script = |key: &str| -> Result<Option<ScriptSource>, MappingError> {
                    match property.get(key) {
                        None | Some(Value::Null) => Ok(None),
                        Some(value) => ScriptSource::from_json(
                            &format!("{name}.properties[{index}].{key} ({target})"),
                            value,
                            conf_dir,
                        )
                        .map(Some)
                        .map_err(|e| error(format!("{field}.{key}"), script_message(e))),
                    }
                };
                let transform = property_script("transform")?;
                let condition = property_script("condition")?;
                let default = property.get("default").cloned();
                let reference_mapping = match property.get("referenceMapping") {
                    None | Some(Value::Null) => None,
                    Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
                    Some(_) => {
                        return Err(error(
                            format!("{field}.referenceMapping"),
                            "expected a mapping name",
                        ));
                    }
                };
                if source.is_none() && transform.is_none() && default.is_none() {
                    return Err(error(&field, "needs a source, a transform or a default"));
                }
                properties.push(PropertyMapping {
                    source,
                    target,
                    transform,
                    condition,
                    default,
                    reference_mapping,
                });
            }
        }

        let mut policies = BTreeMap::new();
        if let Some(list) = body.get("policies") {
            let list = list
                .as_array()
                .ok_or_else(|| error(format!("{at}.policies"), "expected an array"))?;
            for (index, policy) in list.iter().enumerate() {
                let field = format!("{at}.policies[{index}]");
                let policy = policy
                    .as_object()
                    .ok_or_else(|| error(&field, "expected an object"))?;
                let situation_name = policy
                    .get("situation")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let situation = Situation::parse(situation_name).ok_or_else(|| {
                    let known: Vec<&str> = Situation::ALL.iter().map(|s| s.name()).collect();
                    error(
                        format!("{field}.situation"),
                        format!("\"{situation_name}\" is not one of {}", known.join(", ")),
                    )
                })?;
                let action = match policy.get("action") {
                    Some(Value::String(name)) => Action::parse(name).ok_or_else(|| {
                        let known: Vec<&str> = Action::ALL.iter().map(|a| a.name()).collect();
                        error(
                            format!("{field}.action"),
                            format!("\"{name}\" is not one of {}", known.join(", ")),
                        )
                    })?,
                    Some(Value::Object(_)) => {
                        return Err(error(
                            format!("{field}.action"),
                            "scripted actions are not supported; use a condition",
                        ));
                    }
                    _ => return Err(error(format!("{field}.action"), "required, an action name")),
                };
                let policy_script = |key: &str| -> Result<Option<ScriptSource>, MappingError> {
                    match policy.get(key) {
                        None | Some(Value::Null) => Ok(None),
                        Some(value) => ScriptSource::from_json(
                            &format!("{name}.policies[{index}].{key} ({situation})"),
                            value,
                            conf_dir,
                        )
                        .map(Some)
                        .map_err(|e| error(format!("{field}.{key}"), script_message(e))),
                    }
                };
                let parsed = Policy {
                    action,
                    condition: policy_script("condition")?,
                    post_action: policy_script("postAction")?,
                };
                if policies.insert(situation, parsed).is_some() {
                    return Err(error(
                        format!("{field}.situation"),
                        format!("{situation} has two policies"),
                    ));
                }
            }
        }

        let task_threads = match body.get("taskThreads") {
            None => DEFAULT_TASK_THREADS,
            Some(value) => value
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .filter(|n| (1..=256).contains(n))
                .ok_or_else(|| {
                    error(format!("{at}.taskThreads"), "a whole number from 1 to 256")
                })?,
        };
        let mapping = Mapping {
            source: Endpoint::parse(&text("source")?, &format!("{at}.source"), schema)?,
            target: Endpoint::parse(&text("target")?, &format!("{at}.target"), schema)?,
            properties,
            correlation_query: script("correlationQuery", body.get("correlationQuery"))?,
            valid_source: script("validSource", body.get("validSource"))?,
            valid_target: script("validTarget", body.get("validTarget"))?,
            policies,
            on_create: script("onCreate", body.get("onCreate"))?,
            on_update: script("onUpdate", body.get("onUpdate"))?,
            on_link: script("onLink", body.get("onLink"))?,
            enable_sync: flag("enableSync", false)?,
            run_target_phase: flag("runTargetPhase", true)?,
            task_threads,
            name,
        };
        mapping.compile_scripts(at)?;
        Ok(mapping)
    }

    /// The action for a situation when no policy condition intervenes.
    pub fn action_for(&self, situation: Situation) -> Action {
        self.policies
            .get(&situation)
            .map_or_else(|| situation.default_action(), |p| p.action)
    }

    /// Every script of the mapping.
    pub fn scripts(&self) -> impl Iterator<Item = &ScriptSource> {
        let properties = self
            .properties
            .iter()
            .flat_map(|p| [&p.transform, &p.condition]);
        let policies = self
            .policies
            .values()
            .flat_map(|p| [&p.condition, &p.post_action]);
        [
            &self.correlation_query,
            &self.valid_source,
            &self.valid_target,
            &self.on_create,
            &self.on_update,
            &self.on_link,
        ]
        .into_iter()
        .chain(properties)
        .chain(policies)
        .flatten()
    }

    fn compile_scripts(&self, at: &str) -> Result<(), MappingError> {
        let mut engine =
            ScriptEngine::new(Limits::default()).map_err(|e| error(at, e.to_string()))?;
        for script in self.scripts() {
            engine
                .compile(script)
                .map_err(|e| error(at, script_message(e)))?;
        }
        Ok(())
    }
}

fn script_message(error: ScriptError) -> String {
    error.to_string()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn load(body: Value) -> Result<Mapping, MappingError> {
        let schema = ManagedSchema::builtin().unwrap();
        Mapping::from_json(
            "mappings[0]",
            body.as_object().unwrap(),
            Path::new("."),
            &schema,
        )
    }

    fn cookbook() -> Value {
        let text = include_str!("../../../tests/fixtures/idm-sync/sync.json");
        serde_json::from_str::<Value>(text).unwrap()["mappings"][0].clone()
    }

    #[test]
    fn the_cookbook_mapping_loads() {
        let mapping = load(cookbook()).unwrap();
        assert_eq!(mapping.name, "csvEmployee_managedUser");
        assert_eq!(
            mapping.source,
            Endpoint::System {
                connector: "csv".into(),
                object_type: "employee".into()
            }
        );
        assert_eq!(mapping.target.to_string(), "managed/user");
        assert_eq!(mapping.properties.len(), 7);
        let user_name = &mapping.properties[4];
        assert_eq!(
            (user_name.source.as_deref(), user_name.target.as_str()),
            (None, "userName")
        );
        assert!(user_name.transform.is_some());
        assert_eq!(mapping.properties[6].default, Some(json!("FooBar123")));
        assert_eq!(mapping.action_for(Situation::Absent), Action::Create);
        assert_eq!(
            mapping.action_for(Situation::SourceMissing),
            Action::Exception
        );
        assert!(
            (
                mapping.run_target_phase,
                mapping.enable_sync,
                mapping.task_threads
            ) == (true, false, DEFAULT_TASK_THREADS)
        );
    }

    #[test]
    fn policies_override_the_default_table() {
        let mut body = cookbook();
        body["policies"] = json!([{"situation": "SOURCE_MISSING", "action": "DELETE"}, {"situation": "AMBIGUOUS", "action": "IGNORE"}]);
        let mapping = load(body).unwrap();
        assert_eq!(mapping.action_for(Situation::SourceMissing), Action::Delete);
        assert_eq!(mapping.action_for(Situation::Ambiguous), Action::Ignore);
        assert_eq!(mapping.action_for(Situation::Confirmed), Action::Update);
    }

    #[test]
    fn mistakes_name_the_field() {
        let cases: Vec<(Value, &str, &str)> = vec![
            (
                json!({"policies": [{"situation": "CONFIRMD", "action": "UPDATE"}]}),
                "mappings[0].policies[0].situation",
                "CONFIRMD",
            ),
            (
                json!({"policies": [{"situation": "FOUND", "action": "UPSERT"}]}),
                "mappings[0].policies[0].action",
                "UPSERT",
            ),
            (
                json!({"target": "managed/widget"}),
                "mappings[0].target",
                "managed/widget",
            ),
            (
                json!({"source": "csv/employee"}),
                "mappings[0].source",
                "neither",
            ),
            (
                json!({"taskThreads": 0}),
                "mappings[0].taskThreads",
                "1 to 256",
            ),
            (
                json!({"properties": [{"source": "uid"}]}),
                "mappings[0].properties[0].target",
                "required",
            ),
            (
                json!({"properties": [{"target": "x", "transform": {"type": "groovy", "source": "1"}}]}),
                "mappings[0].properties[0].transform",
                "groovy",
            ),
            (
                json!({"properties": [{"target": "userName", "transform": {"type": "text/javascript", "source": "source.uid +"}}]}),
                "mappings[0]",
                "properties[0].transform (userName)",
            ),
        ];
        for (patch, field, needle) in cases {
            let mut body = cookbook();
            for (key, value) in patch.as_object().unwrap() {
                body[key] = value.clone();
            }
            let err = load(body).unwrap_err();
            assert_eq!(err.field, field, "{err}");
            assert!(err.message.contains(needle), "{err}");
        }
    }
}
