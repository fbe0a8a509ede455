//! Managed object types as declared in `managed.json`, and the checks every
//! write passes before it reaches the store.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Map, Value};

use super::hooks::{self, Hooks};
use super::policy::Policy;
use super::{ManagedError, declare};

/// The built-in `managed.json`: `managed/user` and `managed/group`.
pub const DEFAULT_MANAGED_JSON: &str = include_str!("managed-default.json");

/// Every declared type, by name (`user`, `group`, …).
#[derive(Debug, Clone)]
pub struct ManagedSchema {
    types: BTreeMap<String, ObjectType>,
    /// The type names in the order `managed.json` declares them.
    order: Vec<String>,
    /// What the file declares that idm does not act on, one entry each
    /// (`user.actions: not supported`): logged once at start.
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct ObjectType {
    pub name: String,
    pub properties: BTreeMap<String, Property>,
    /// Read-only properties computed from other types' relationships, such as a
    /// user's `groups`.
    pub reverse: Vec<ReverseRelation>,
    /// The policies of a declared `_id` property, checked against a client-chosen id.
    pub id_policies: Vec<Policy>,
    /// The script hooks that run (`onCreate`, …).
    pub hooks: Hooks,
    /// The declaration as written, served by `ListObjectTypes`.
    pub declaration: Map<String, Value>,
}

#[derive(Debug, Clone)]
pub struct Property {
    pub kind: PropertyKind,
    /// The declared type names (`["string", "null"]`), for `valid-type`.
    pub types: Vec<String>,
    pub required: bool,
    pub unique: bool,
    /// Write-only: stored as an argon2 hash and an encrypted copy, never returned.
    pub private: bool,
    /// Wren's `scope: private` on a non-string (such as `lastSync`): stored
    /// as data, never returned or filtered on.
    pub hidden: bool,
    /// False: compared, filtered and kept unique ignoring case.
    pub case_exact: bool,
    /// Wren's "indexed in the repository": a list column of the console.
    /// A string property gets sort keys, for ordered pages and prefix
    /// searches that do not read the whole type (`store/sort.rs`).
    pub searchable: bool,
    /// For relationships (`type: relationship`, or an array of them): the
    /// collection the references point into, e.g. `managed/user`.
    pub resource_collection: Option<String>,
    pub multiple: bool,
    pub reverse_property: Option<String>,
    /// Wren's policies, implied by the schema and declared, in Wren's order.
    pub policies: Vec<Policy>,
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

/// Object keys idm acts on; the hooks are listed apart.
const OBJECT_KEYS: &[&str] = &["name", "schema"];
/// Keys of an object's `schema` that idm reads or that only describe it.
const SCHEMA_KEYS: &[&str] = &[
    "properties",
    "required",
    "order",
    "title",
    "description",
    "viewable",
    "$schema",
    "id",
    "type",
    "icon",
    "mat-icon",
];

/// Why a `managed.json` cannot be used; `field` is a JSON path into the file.
#[derive(Debug, thiserror::Error)]
#[error("{field}: {message}")]
pub struct SchemaError {
    pub field: String,
    pub message: String,
}

pub(super) fn schema_error(field: impl Into<String>, message: impl Into<String>) -> SchemaError {
    SchemaError {
        field: field.into(),
        message: message.into(),
    }
}

/// The most types and properties per type a `managed.json` may declare.
const MAX_TYPES: usize = 256;
const MAX_PROPERTIES: usize = 512;

impl ManagedSchema {
    /// Parses and checks a `managed.json` document (idm's shape or Wren's);
    /// hook files are not looked for.
    pub fn from_json(text: &str) -> Result<Self, SchemaError> {
        Self::from_json_in(text, None)
    }

    /// [`Self::from_json`] for a file of `conf_dir`, where hook files are found.
    pub fn from_json_in(text: &str, conf_dir: Option<&Path>) -> Result<Self, SchemaError> {
        let raw: Value = serde_json::from_str(text)
            .map_err(|e| schema_error(format!("line {}", e.line()), e.to_string()))?;
        let file = raw
            .as_object()
            .ok_or_else(|| schema_error("", "expected an object with \"objects\""))?;
        let mut warnings = Vec::new();
        for key in file.keys().filter(|k| *k != "objects") {
            warnings.push(format!("{key}: not supported"));
        }
        let objects = match file.get("objects") {
            Some(Value::Array(list)) if list.len() <= MAX_TYPES => list,
            _ => {
                return Err(schema_error(
                    "objects",
                    format!("expected a list of at most {MAX_TYPES} object types"),
                ));
            }
        };
        let mut types = BTreeMap::new();
        let mut order = Vec::new();
        for (index, decl) in objects.iter().enumerate() {
            let at = format!("objects[{index}]");
            let object_type = object_type(decl, &at, conf_dir, &mut warnings)?;
            order.push(object_type.name.clone());
            let name = object_type.name.clone();
            if types.insert(name.clone(), object_type).is_some() {
                return Err(schema_error(
                    format!("{at}.name"),
                    format!("type \"{name}\" is declared twice"),
                ));
            }
        }
        let mut schema = ManagedSchema {
            types,
            order: Vec::new(),
            warnings,
        };
        schema.link_relationships(&order)?;
        schema.order = order;
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

    /// Every type, in the order `managed.json` declares them (the
    /// console's menu and ListObjectTypes follow it).
    pub fn types(&self) -> impl Iterator<Item = &ObjectType> {
        self.order.iter().filter_map(|name| self.types.get(name))
    }

    /// Relationships become stored properties and computed reverse ones.
    /// Wren declares both sides of a pair (`user.roles` ↔ `role.members`);
    /// idm stores one, the single-valued side or else the side declared
    /// first, and computes the other (read-only, said in a warning).
    fn link_relationships(&mut self, order: &[String]) -> Result<(), SchemaError> {
        let position = |t: &str| order.iter().position(|o| o == t).unwrap_or(usize::MAX);
        let mut reverse: Vec<(String, ReverseRelation)> = Vec::new();
        let mut demoted: Vec<(String, String)> = Vec::new();
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
                let Some(reverse_name) = &property.reverse_property else {
                    continue;
                };
                let partner = self
                    .types
                    .get(target)
                    .and_then(|t| t.properties.get(reverse_name))
                    .filter(|p| {
                        p.resource_collection.as_deref()
                            == Some(&format!("managed/{}", object_type.name))
                            && p.reverse_property.as_deref() == Some(name)
                    });
                if let Some(partner) = partner {
                    let this_first =
                        (
                            property.multiple,
                            position(&object_type.name),
                            name.as_str(),
                        ) < (partner.multiple, position(target), reverse_name.as_str());
                    if !this_first {
                        continue; // the partner stores the pair
                    }
                    demoted.push((target.to_string(), reverse_name.clone()));
                    self.warnings.push(format!(
                        "{target}.{reverse_name}: read-only here; the relationship is written through {}.{name}",
                        object_type.name
                    ));
                }
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
        for (target, name) in demoted {
            if let Some(object_type) = self.types.get_mut(&target) {
                object_type.properties.remove(&name);
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

fn object_type(
    decl: &Value,
    at: &str,
    conf_dir: Option<&Path>,
    warnings: &mut Vec<String>,
) -> Result<ObjectType, SchemaError> {
    let decl = decl
        .as_object()
        .ok_or_else(|| schema_error(at, "expected an object"))?;
    let name = decl
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| schema_error(format!("{at}.name"), "missing: every type has a name"))?;
    if !is_identifier(name) {
        return Err(schema_error(
            format!("{at}.name"),
            format!(
                "\"{name}\" is not a type name (letters, digits, _ and -, starting with a letter)"
            ),
        ));
    }
    for key in decl.keys() {
        if !OBJECT_KEYS.contains(&key.as_str()) && !hooks::HOOKS.contains(&key.as_str()) {
            warnings.push(format!("{name}.{key}: not supported"));
        }
    }
    let hooks = hooks::load(name, decl, conf_dir, at, warnings)?;
    let empty = Map::new();
    let schema = match decl.get("schema") {
        None => &empty,
        Some(Value::Object(schema)) => schema,
        Some(_) => return Err(schema_error(format!("{at}.schema"), "expected an object")),
    };
    for key in schema.keys().filter(|k| !SCHEMA_KEYS.contains(&k.as_str())) {
        warnings.push(format!("{name}.schema.{key}: not supported"));
    }
    let required: Vec<String> = match schema.get("required") {
        None => Vec::new(),
        Some(Value::Array(list)) => list
            .iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect::<Option<_>>()
            .ok_or_else(|| schema_error(format!("{at}.schema.required"), "expected names"))?,
        Some(_) => {
            return Err(schema_error(
                format!("{at}.schema.required"),
                "expected a list of property names",
            ));
        }
    };
    let declared = match schema.get("properties") {
        None => &empty,
        Some(Value::Object(p)) if p.len() <= MAX_PROPERTIES => p,
        Some(_) => {
            return Err(schema_error(
                format!("{at}.schema.properties"),
                format!("expected an object of at most {MAX_PROPERTIES} properties"),
            ));
        }
    };
    let mut properties = BTreeMap::new();
    let mut id_policies = Vec::new();
    for (property_name, raw) in declared {
        let field = format!("{at}.schema.properties.{property_name}");
        let mut local = Vec::new();
        let in_required = required.contains(property_name);
        if property_name == "_id" {
            let property = declare::property(property_name, raw, false, &field, &mut local)?;
            id_policies = property.policies;
            warnings.extend(local);
            continue;
        }
        if !is_identifier(property_name) {
            return Err(schema_error(
                field,
                "property names start with a letter and hold letters, digits, _ and -",
            ));
        }
        let property = declare::property(property_name, raw, in_required, &field, &mut local)?;
        let prefix = format!("{at}.schema.properties.");
        warnings.extend(
            local
                .into_iter()
                .map(|w| w.replacen(&prefix, &format!("{name}."), 1)),
        );
        properties.insert(property_name.clone(), property);
    }
    for required_name in &required {
        if !properties.contains_key(required_name) {
            return Err(schema_error(
                format!("{at}.schema.required"),
                format!("\"{required_name}\" is required but not declared in properties"),
            ));
        }
    }
    Ok(ObjectType {
        name: name.to_string(),
        properties,
        reverse: Vec::new(),
        id_policies,
        hooks,
        declaration: decl.clone(),
    })
}

impl PropertyKind {
    pub fn describe(self) -> &'static str {
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

    const WREN6: &str = include_str!("../../../tests/fixtures/wren6/managed.json");

    #[test]
    fn wren6_default_loads_and_names_what_idm_does_not_do() {
        let schema = ManagedSchema::from_json(WREN6).unwrap();
        let user = schema.get("user").unwrap();
        assert!(user.properties["password"].private);
        assert!(user.properties["lastSync"].hidden);
        assert!(user.properties["userName"].unique);
        assert!(user.properties["givenName"].required);
        assert!(
            user.id_policies
                .iter()
                .any(|p| p.id == "cannot-contain-characters")
        );
        // user.roles is stored; role.members is its reverse.
        assert!(user.properties["roles"].multiple);
        let role = schema.get("role").unwrap();
        assert!(!role.properties.contains_key("members"));
        assert!(role.reverse.iter().any(|r| r.name == "members"));
        assert!(user.properties.contains_key("manager"));
        assert!(user.reverse.iter().any(|r| r.name == "reports"));
        let warnings = schema.warnings.join("\n");
        for expected in [
            "user.actions: not supported",
            "user.onCreate: not run; it needs ui/onCreateUser",
            "ui/onCreateUser",
            "roles/postOperation-roles.js",
            "user.effectiveRoles.onRetrieve: not supported",
            "user.password.isProtected: not supported",
            "repo/internal/role",
            "role.members: read-only here; the relationship is written through user.roles",
            "role.onSync: not supported",
        ] {
            assert!(
                warnings.contains(expected),
                "{expected} missing from\n{warnings}"
            );
        }
    }

    #[test]
    fn policies_are_checked_at_load_naming_the_property() {
        let err = ManagedSchema::from_json(
            r#"{"objects":[{"name":"user","schema":{"properties":{"mail":{"type":"string","policies":[{"policyId":"no-such-policy"}]}}}}]}"#,
        )
        .unwrap_err();
        assert_eq!(
            err.field,
            "objects[0].schema.properties.mail.policies[0].policyId"
        );
        assert!(err.message.contains("no-such-policy"), "{err}");
        let err = ManagedSchema::from_json(
            r#"{"objects":[{"name":"user","schema":{"properties":{"x":{"type":"string","pattern":"(?<=a)b"}}}}]}"#,
        )
        .unwrap_err();
        assert_eq!(err.field, "objects[0].schema.properties.x.pattern");
        let long = "a".repeat(2000);
        let err = ManagedSchema::from_json(&format!(
            r#"{{"objects":[{{"name":"user","schema":{{"properties":{{"x":{{"type":"string","pattern":"{long}"}}}}}}}}]}}"#
        ))
        .unwrap_err();
        assert!(err.message.contains("at most"), "{err}");
    }
}
