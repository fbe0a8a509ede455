//! Managed object types as declared in `managed.json`, and the checks every
//! write passes before it reaches the store.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Map, Value};

use super::ManagedError;

/// The built-in `managed.json`: `managed/user` and `managed/group`.
pub const DEFAULT_MANAGED_JSON: &str = include_str!("managed-default.json");

/// Every declared type, by name (`user`, `group`, …).
#[derive(Debug, Clone)]
pub struct ManagedSchema {
    types: BTreeMap<String, ObjectType>,
}

#[derive(Debug, Clone)]
pub struct ObjectType {
    pub name: String,
    pub properties: BTreeMap<String, Property>,
    /// Read-only properties computed from other types' relationships, such as a
    /// user's `groups`.
    pub reverse: Vec<ReverseRelation>,
    /// The declaration as written, served by `ListObjectTypes`.
    pub declaration: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Property {
    pub kind: PropertyKind,
    pub required: bool,
    pub unique: bool,
    /// Write-only: stored as an argon2 hash and an encrypted copy, never returned.
    pub private: bool,
    /// False: compared, filtered and kept unique ignoring case.
    pub case_exact: bool,
    /// For relationships (`type: relationship`, or an array of them): the
    /// collection the references point into, e.g. `managed/user`.
    pub resource_collection: Option<String>,
    pub multiple: bool,
    pub reverse_property: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PropertyKind {
    String,
    Number,
    Integer,
    Boolean,
    Object,
    Array,
    Relationship,
}

/// `source_type.property` holds references to this type; shown here as `name`.
#[derive(Debug, Clone, PartialEq)]
pub struct ReverseRelation {
    pub name: String,
    pub source_type: String,
    pub source_property: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ManagedFile {
    objects: Vec<ObjectDecl>,
}

#[derive(Deserialize)]
struct ObjectDecl {
    name: String,
    #[serde(default)]
    schema: SchemaDecl,
}

#[derive(Deserialize, Default)]
struct SchemaDecl {
    #[serde(default)]
    properties: BTreeMap<String, PropertyDecl>,
    /// JSON-schema style list of required properties (Wren writes it this way).
    #[serde(default)]
    required: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PropertyDecl {
    #[serde(rename = "type", default = "default_kind")]
    kind: String,
    #[serde(default)]
    required: bool,
    #[serde(default)]
    unique: bool,
    #[serde(default)]
    private: bool,
    #[serde(default = "default_true")]
    case_exact: bool,
    resource_collection: Option<String>,
    items: Option<Box<PropertyDecl>>,
    reverse_property: Option<String>,
}

fn default_kind() -> String {
    "string".into()
}

fn default_true() -> bool {
    true
}

/// Why a `managed.json` cannot be used; `field` is a JSON path into the file.
#[derive(Debug, thiserror::Error)]
#[error("{field}: {message}")]
pub struct SchemaError {
    pub field: String,
    pub message: String,
}

fn schema_error(field: impl Into<String>, message: impl Into<String>) -> SchemaError {
    SchemaError {
        field: field.into(),
        message: message.into(),
    }
}

impl ManagedSchema {
    /// Parses and checks a `managed.json` document.
    pub fn from_json(text: &str) -> Result<Self, SchemaError> {
        let raw: Value = serde_json::from_str(text)
            .map_err(|e| schema_error(format!("line {}", e.line()), e.to_string()))?;
        let file: ManagedFile = serde_path_to_error::deserialize(&raw).map_err(|e| {
            let field = e.path().to_string();
            schema_error(field, e.into_inner().to_string())
        })?;
        let declarations = raw
            .get("objects")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();

        let mut types = BTreeMap::new();
        for (index, decl) in file.objects.into_iter().enumerate() {
            let at = format!("objects[{index}]");
            if !is_identifier(&decl.name) {
                return Err(schema_error(
                    format!("{at}.name"),
                    format!(
                        "\"{}\" is not a type name (letters, digits, _ and -, starting with a letter)",
                        decl.name
                    ),
                ));
            }
            let mut properties = BTreeMap::new();
            for (name, prop) in decl.schema.properties {
                let field = format!("{at}.schema.properties.{name}");
                if !is_identifier(&name) {
                    return Err(schema_error(
                        field,
                        "property names start with a letter and hold letters, digits, _ and -",
                    ));
                }
                let mut property = Property::from_decl(prop, &field)?;
                property.required |= decl.schema.required.contains(&name);
                properties.insert(name, property);
            }
            for name in &decl.schema.required {
                if !properties.contains_key(name) {
                    return Err(schema_error(
                        format!("{at}.schema.required"),
                        format!("\"{name}\" is required but not declared in properties"),
                    ));
                }
            }
            let declaration = declarations
                .get(index)
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            let object_type = ObjectType {
                name: decl.name.clone(),
                properties,
                reverse: Vec::new(),
                declaration,
            };
            if types.insert(decl.name.clone(), object_type).is_some() {
                return Err(schema_error(
                    format!("{at}.name"),
                    format!("type \"{}\" is declared twice", decl.name),
                ));
            }
        }
        let mut schema = ManagedSchema { types };
        schema.link_relationships()?;
        Ok(schema)
    }

    /// The built-in user and group types.
    pub fn builtin() -> Result<Self, SchemaError> {
        Self::from_json(DEFAULT_MANAGED_JSON)
    }

    pub fn get(&self, type_name: &str) -> Result<&ObjectType, ManagedError> {
        self.types
            .get(type_name)
            .ok_or_else(|| ManagedError::UnknownType(type_name.to_string()))
    }

    pub fn types(&self) -> impl Iterator<Item = &ObjectType> {
        self.types.values()
    }

    fn link_relationships(&mut self) -> Result<(), SchemaError> {
        let mut reverse: Vec<(String, ReverseRelation)> = Vec::new();
        for object_type in self.types.values() {
            for (name, property) in &object_type.properties {
                let Some(collection) = &property.resource_collection else {
                    continue;
                };
                let field = format!("{}.{name}.resourceCollection", object_type.name);
                let target = collection
                    .strip_prefix("managed/")
                    .filter(|t| self.types.contains_key(*t))
                    .ok_or_else(|| {
                        schema_error(
                            &field,
                            format!("\"{collection}\" is not a declared managed collection"),
                        )
                    })?;
                if let Some(reverse_name) = &property.reverse_property {
                    reverse.push((
                        target.to_string(),
                        ReverseRelation {
                            name: reverse_name.clone(),
                            source_type: object_type.name.clone(),
                            source_property: name.clone(),
                        },
                    ));
                }
            }
        }
        for (target, relation) in reverse {
            if let Some(object_type) = self.types.get_mut(&target) {
                if object_type.properties.contains_key(&relation.name) {
                    return Err(schema_error(
                        format!(
                            "{}.{}.reverseProperty",
                            relation.source_type, relation.source_property
                        ),
                        format!("\"{}\" is already a property of {target}", relation.name),
                    ));
                }
                object_type.reverse.push(relation);
            }
        }
        Ok(())
    }
}

impl Property {
    fn from_decl(decl: PropertyDecl, field: &str) -> Result<Self, SchemaError> {
        let kind = parse_kind(&decl.kind).ok_or_else(|| {
            schema_error(
                format!("{field}.type"),
                format!("unknown type \"{}\" (string, number, integer, boolean, object, array, relationship)", decl.kind),
            )
        })?;
        let mut property = Property {
            kind,
            required: decl.required,
            unique: decl.unique,
            private: decl.private,
            case_exact: decl.case_exact,
            resource_collection: decl.resource_collection,
            multiple: false,
            reverse_property: decl.reverse_property,
        };
        if kind == PropertyKind::Array
            && let Some(items) = decl.items
            && items.kind == "relationship"
        {
            property.kind = PropertyKind::Relationship;
            property.multiple = true;
            property.resource_collection =
                items.resource_collection.or(property.resource_collection);
        }
        if property.kind == PropertyKind::Relationship && property.resource_collection.is_none() {
            return Err(schema_error(
                format!("{field}.resourceCollection"),
                "a relationship needs a resourceCollection",
            ));
        }
        if property.unique
            && !matches!(
                property.kind,
                PropertyKind::String | PropertyKind::Integer | PropertyKind::Number
            )
        {
            return Err(schema_error(
                format!("{field}.unique"),
                "only string and number properties can be unique",
            ));
        }
        if property.private && (property.kind != PropertyKind::String || property.unique) {
            return Err(schema_error(
                format!("{field}.private"),
                "private properties are strings and cannot be unique",
            ));
        }
        Ok(property)
    }

    /// Checks a value against the declared type; `null` never reaches here.
    pub fn check(&self, name: &str, value: &Value) -> Result<(), ManagedError> {
        let fits = match self.kind {
            PropertyKind::String => value.is_string(),
            PropertyKind::Number => value.is_number(),
            PropertyKind::Integer => value.is_i64() || value.is_u64(),
            PropertyKind::Boolean => value.is_boolean(),
            PropertyKind::Object => value.is_object(),
            PropertyKind::Array => value.is_array(),
            PropertyKind::Relationship => true,
        };
        if fits {
            Ok(())
        } else {
            Err(ManagedError::invalid(
                name,
                format!("expected {}, got {}", self.kind.describe(), describe(value)),
            ))
        }
    }
}

impl PropertyKind {
    fn describe(self) -> &'static str {
        match self {
            PropertyKind::String => "a string",
            PropertyKind::Number => "a number",
            PropertyKind::Integer => "an integer",
            PropertyKind::Boolean => "a boolean",
            PropertyKind::Object => "an object",
            PropertyKind::Array => "an array",
            PropertyKind::Relationship => "a reference",
        }
    }
}

fn parse_kind(kind: &str) -> Option<PropertyKind> {
    Some(match kind {
        "string" => PropertyKind::String,
        "number" => PropertyKind::Number,
        "integer" => PropertyKind::Integer,
        "boolean" => PropertyKind::Boolean,
        "object" => PropertyKind::Object,
        "array" => PropertyKind::Array,
        "relationship" => PropertyKind::Relationship,
        _ => return None,
    })
}

pub use idm_proto::json::describe;

/// Names the schema, the store and the filter language can all carry safely.
pub fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        && name.len() <= 64
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn builtin_types_are_user_and_group_with_reverse_groups() {
        let schema = ManagedSchema::builtin().unwrap();
        let user = schema.get("user").unwrap();
        assert!(user.properties["userName"].unique && !user.properties["userName"].case_exact);
        assert!(user.properties["password"].private);
        assert_eq!(user.reverse[0].name, "groups");
        let group = schema.get("group").unwrap();
        assert!(group.properties["members"].multiple);
    }

    #[test]
    fn bad_declarations_name_the_field() {
        let err = ManagedSchema::from_json(
            r#"{"objects":[{"name":"user","schema":{"properties":{"x":{"type":"strng"}}}}]}"#,
        )
        .unwrap_err();
        assert_eq!(err.field, "objects[0].schema.properties.x.type");
        let err = ManagedSchema::from_json(
            r#"{"objects":[{"name":"user","schema":{"properties":{"x":{"type":"string","requird":true}}}}]}"#,
        );
        assert!(
            err.is_ok(),
            "unknown keys inside a property are tolerated, as Wren does"
        );
        let err = ManagedSchema::from_json(r#"{"objects":[{"nme":"user"}]}"#).unwrap_err();
        assert!(err.field.starts_with("objects[0]"), "{err}");
    }
}
