//! Applying a mapping's `properties` to one source object, as Wren:IDM does:
//! take `source` (one attribute, or the whole object when `source` is empty),
//! skip the property if its `condition` says so, run its `transform`, and fall
//! back to `default` when there is no value. Scripts are compiled once per
//! [`PropertyMapper`] (a reconciliation worker owns one) and reused per record.

use serde_json::{Map, Value};

use super::mapping::{Mapping, PropertyMapping};
use crate::script::{Binding, CompiledId, Limits, ScriptEngine, ScriptError, ScriptSource, Shared};

/// The compiled property scripts of one mapping, on one worker's engine.
pub struct PropertyMapper {
    engine: ScriptEngine,
    properties: Vec<CompiledProperty>,
}

struct CompiledProperty {
    property: PropertyMapping,
    transform: Option<CompiledId>,
    condition: Option<CompiledId>,
}

/// A property that could not be computed; the record fails with it.
#[derive(Debug, thiserror::Error)]
#[error("mapping {mapping}, property {target}: {source}")]
pub struct PropertyError {
    pub mapping: String,
    pub target: String,
    #[source]
    pub source: ScriptError,
}

impl PropertyMapper {
    pub fn new(mapping: &Mapping, limits: Limits) -> Result<Self, PropertyError> {
        let error = |target: &str, source: ScriptError| PropertyError {
            mapping: mapping.name.clone(),
            target: target.to_string(),
            source,
        };
        let mut engine = ScriptEngine::new(limits).map_err(|e| error("(engine)", e))?;
        let mut properties = Vec::with_capacity(mapping.properties.len());
        for property in &mapping.properties {
            let mut compile = |script: &Option<crate::script::ScriptSource>| {
                script
                    .as_ref()
                    .map(|s| engine.compile(s))
                    .transpose()
                    .map_err(|e| error(&property.target, e))
            };
            let transform = compile(&property.transform)?;
            let condition = compile(&property.condition)?;
            properties.push(CompiledProperty {
                property: property.clone(),
                transform,
                condition,
            });
        }
        Ok(PropertyMapper { engine, properties })
    }

    /// The engine the property scripts live in, for the mapping's other
    /// scripts (correlation, policies, hooks) on the same worker.
    pub fn engine(&mut self) -> &mut ScriptEngine {
        &mut self.engine
    }

    /// The target attributes a source object maps to. Properties whose value
    /// comes out null or absent (and have no default) are left out. The
    /// object is converted to JavaScript once for all the properties'
    /// scripts, which see it as one `source`/`object`, as Wren's do.
    pub fn target_values(
        &mut self,
        mapping: &str,
        source: &Value,
    ) -> Result<Map<String, Value>, PropertyError> {
        let properties = &self.properties;
        let scripted = properties
            .iter()
            .any(|p| p.condition.is_some() || p.transform.is_some());
        if !scripted {
            return map_properties(properties, mapping, source, None);
        }
        let shared = self.engine.with_shared(source, |engine, whole| {
            map_properties(properties, mapping, source, Some((engine, whole)))
        });
        shared.map_err(|source| PropertyError {
            mapping: mapping.to_string(),
            target: "(source object)".to_string(),
            source,
        })?
    }
}

/// [`PropertyMapper::target_values`], its scripts run on `scripts` with the
/// source object already converted.
fn map_properties(
    properties: &[CompiledProperty],
    mapping: &str,
    source: &Value,
    mut scripts: Option<(&mut ScriptEngine, &Shared)>,
) -> Result<Map<String, Value>, PropertyError> {
    let mut target = Map::new();
    for compiled in properties {
        let property = &compiled.property;
        let error = |source: ScriptError| PropertyError {
            mapping: mapping.to_string(),
            target: property.target.clone(),
            source,
        };
        let mut run = |id: CompiledId, input: Option<&Value>| -> Result<Value, PropertyError> {
            let Some((engine, whole)) = scripts.as_mut() else {
                return Err(error(ScriptError::UnknownScript));
            };
            let whole = Binding::Shared(whole);
            let input = input.map_or(whole, Binding::Json);
            engine
                .eval_bound(id, &[("source", input), ("object", whole)])
                .map_err(error)
        };
        if let Some(condition) = compiled.condition
            && !truthy(&run(condition, None)?)
        {
            continue;
        }
        let attribute = property
            .source
            .as_ref()
            .map(|name| source.get(name).unwrap_or(&Value::Null));
        let value = match (compiled.transform, attribute) {
            (Some(transform), attribute) => run(transform, attribute)?,
            (None, Some(attribute)) => attribute.clone(),
            (None, None) => Value::Null,
        };
        let value = match (value, &property.default) {
            (Value::Null, Some(default)) => default.clone(),
            (value, _) => value,
        };
        if !value.is_null() {
            target.insert(property.target.clone(), value);
        }
    }
    Ok(target)
}

/// A hook script that may change `target`: its completion value is `target`.
pub(super) fn returning_target(script: &ScriptSource) -> ScriptSource {
    ScriptSource {
        name: script.name.clone(),
        code: format!("{}\n;target", script.code),
    }
}

/// JavaScript truthiness of a script's result.
pub(super) fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0 && !f.is_nan()),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::path::Path;

    use serde_json::json;

    use super::*;
    use crate::managed::ManagedSchema;

    fn cookbook(extra_properties: Value) -> Mapping {
        let text = include_str!("../../../tests/fixtures/idm-sync/sync.json");
        let mut body = serde_json::from_str::<Value>(text).unwrap()["mappings"][0].clone();
        if let (Some(list), Some(extra)) = (
            body["properties"].as_array_mut(),
            extra_properties.as_array(),
        ) {
            list.extend(extra.iter().cloned());
        }
        Mapping::from_json(
            "mappings[0]",
            body.as_object().unwrap(),
            Path::new("."),
            &ManagedSchema::builtin().unwrap(),
        )
        .unwrap()
    }

    fn row(uid: &str, first: &str, last: &str, phone: &str) -> Value {
        json!({"uid": uid, "firstName": first, "lastName": last, "telephoneNumber": phone})
    }

    #[test]
    fn the_cookbook_rows_become_the_cookbook_users() {
        let mapping = cookbook(json!([]));
        let mut mapper = PropertyMapper::new(&mapping, Limits::default()).unwrap();
        let snow = mapper
            .target_values(&mapping.name, &row("123", "Jon", "Snow", "5551234"))
            .unwrap();
        assert_eq!(
            Value::Object(snow),
            json!({"_id": "123", "givenName": "Jon", "sn": "Snow", "telephoneNumber": "5551234",
                   "userName": "snow123", "mail": "jon.snow@example.com", "password": "FooBar123"})
        );
        let jane = mapper
            .target_values(&mapping.name, &row("789", "Jane", "Doe", "5558901"))
            .unwrap();
        assert_eq!(
            (jane["userName"].as_str(), jane["mail"].as_str()),
            (Some("doe789"), Some("jane.doe@example.com"))
        );
        let zoe = mapper
            .target_values(&mapping.name, &row("7", "Zoë", "Ŝtark", ""))
            .unwrap();
        assert_eq!(
            zoe["userName"], "ŝtark7",
            "non-ASCII names go through the scripts intact"
        );
    }

    #[test]
    fn conditions_defaults_and_script_failures() {
        let mapping = cookbook(json!([
            {"source": "telephoneNumber", "target": "accountStatus",
             "condition": {"type": "text/javascript", "source": "object.telephoneNumber !== ''"},
             "transform": {"type": "text/javascript", "source": "'active'"}},
            {"source": "department", "target": "description", "default": "unassigned"}
        ]));
        let mut mapper = PropertyMapper::new(&mapping, Limits::default()).unwrap();
        let with_phone = mapper
            .target_values(&mapping.name, &row("1", "A", "B", "555"))
            .unwrap();
        assert_eq!(
            (
                with_phone["accountStatus"].as_str(),
                with_phone["description"].as_str()
            ),
            (Some("active"), Some("unassigned"))
        );
        let without = mapper
            .target_values(&mapping.name, &row("2", "A", "B", ""))
            .unwrap();
        assert!(
            without.get("accountStatus").is_none(),
            "the condition skipped the property"
        );

        let mut broken = row("3", "A", "B", "");
        broken.as_object_mut().unwrap().remove("lastName");
        let err = mapper
            .target_values(&mapping.name, &broken)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("mapping csvEmployee_managedUser, property userName:"),
            "{err}"
        );
        assert!(
            err.contains("toLowerCase"),
            "the script's own message: {err}"
        );
    }

    /// As in Wren, a record's property scripts see one source object: what
    /// one script sets on it, the next reads; the next record starts afresh.
    #[test]
    fn a_records_property_scripts_share_its_source_object() {
        let mapping = cookbook(json!([
            {"target": "first", "transform": {"type": "text/javascript",
             "source": "var seen = source.marked; source.marked = 'by first'; seen === undefined ? 'unmarked' : seen"}},
            {"source": "uid", "target": "second", "transform": {"type": "text/javascript",
             "source": "object.marked"}}
        ]));
        let mut mapper = PropertyMapper::new(&mapping, Limits::default()).unwrap();
        for uid in ["1", "2"] {
            let values = mapper
                .target_values(&mapping.name, &row(uid, "A", "B", ""))
                .unwrap();
            assert_eq!(
                (values["first"].as_str(), values["second"].as_str()),
                (Some("unmarked"), Some("by first")),
                "record {uid}"
            );
        }
    }

    #[test]
    fn a_runaway_transform_is_stopped_and_the_mapper_goes_on() {
        let mapping = cookbook(json!([
            {"source": "uid", "target": "loop", "transform": {"type": "text/javascript", "source": "while (source === 'spin') {} source"}}
        ]));
        let limits = Limits {
            time: std::time::Duration::from_millis(100),
            ..Limits::default()
        };
        let mut mapper = PropertyMapper::new(&mapping, limits).unwrap();
        let err = mapper
            .target_values(&mapping.name, &row("spin", "A", "B", ""))
            .unwrap_err();
        assert!(matches!(err.source, ScriptError::Timeout { .. }), "{err}");
        assert_eq!(
            mapper
                .target_values(&mapping.name, &row("4", "A", "B", ""))
                .unwrap()["loop"],
            "4"
        );
    }
}
