//! The one declared map between SCIM resources and idm's managed objects.
//!
//! Each rule ties a SCIM path to a managed property: `name.givenName` ↔
//! `givenName`, `emails[type eq "work"].value` ↔ `mail`, `active` ↔
//! `accountStatus` (with the values it stands for), `members` ↔ `members`
//! (references). Every other attribute of the schemas that no rule covers is
//! kept on the managed object under its SCIM name (`displayName`, `title`, the
//! non-work `emails`, …), so what a client writes comes back. The managed
//! properties are the truth for what the rules cover: when HR changes `mail`,
//! the SCIM view shows the new work email.
//!
//! The same rules rewrite filters and sort keys (`filter.rs`).

mod filter;

use std::path::Path;

use idm_proto::filter::{CompareOp, Filter};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::scim::error::ScimError;
use crate::scim::normalize::{self, Mode};
use crate::scim::path::{self, PatchPath};
use crate::scim::schema::{Attribute, Kind, Registry, ResourceType, Returned};

pub use filter::{Rewritten, Unknown};

/// The built-in map: idm's default `managed/user` and `managed/group`.
pub const DEFAULT_MAP_JSON: &str = include_str!("scim-map-default.json");

#[derive(Debug)]
pub struct AttributeMap {
    pub user: TypeMap,
    pub group: TypeMap,
}

/// How one resource type maps onto one managed collection.
#[derive(Debug)]
pub struct TypeMap {
    pub kind: Kind,
    /// `managed/user`.
    pub collection: String,
    rules: Vec<Rule>,
    passthrough: Vec<Passthrough>,
    /// Every managed property the SCIM view owns; a PUT replaces these and
    /// leaves the object's other properties (set by HR, say) alone.
    owned: Vec<String>,
}

#[derive(Debug)]
struct Rule {
    scim: ScimPath,
    managed: String,
    transform: Transform,
    /// Computed by the core (a user's `groups`): read, never written.
    read_only: bool,
    /// Never sent back (`password`).
    write_only: bool,
}

/// A SCIM location a rule covers.
#[derive(Debug, Clone)]
struct ScimPath {
    extension: Option<String>,
    attribute: String,
    /// `emails[type eq "work"]`: the sub-attribute and literal that pick the element.
    selector: Option<(String, Value)>,
    sub: Option<String>,
}

#[derive(Debug)]
enum Transform {
    Copy,
    /// `active` true/false ↔ these managed values.
    Boolean {
        on_true: Value,
        on_false: Value,
    },
    /// SCIM `[{value, $ref, type}]` ↔ managed `[{_ref: "managed/<type>/<id>"}]`.
    References {
        default: Kind,
    },
}

/// An attribute no rule covers, stored under its own name.
#[derive(Debug)]
struct Passthrough {
    extension: Option<String>,
    attribute: String,
}

#[derive(Debug, thiserror::Error)]
#[error("{source_name}: {field}: {message}")]
pub struct MapError {
    pub source_name: String,
    pub field: String,
    pub message: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MapFile {
    #[serde(rename = "User")]
    user: TypeDecl,
    #[serde(rename = "Group")]
    group: TypeDecl,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TypeDecl {
    collection: String,
    attributes: Vec<RuleDecl>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleDecl {
    scim: String,
    managed: String,
    #[serde(default)]
    values: Option<BooleanValues>,
    #[serde(default)]
    references: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BooleanValues {
    #[serde(rename = "true")]
    on_true: Value,
    #[serde(rename = "false")]
    on_false: Value,
}

impl AttributeMap {
    pub fn builtin(registry: &Registry) -> Result<Self, MapError> {
        Self::from_json(registry, DEFAULT_MAP_JSON, "the built-in attribute map")
    }

    pub fn from_file(registry: &Registry, file: &Path) -> Result<Self, MapError> {
        let name = file.display().to_string();
        let text = std::fs::read_to_string(file).map_err(|e| MapError {
            source_name: name.clone(),
            field: String::new(),
            message: e.to_string(),
        })?;
        Self::from_json(registry, &text, &name)
    }

    pub fn from_json(registry: &Registry, text: &str, source_name: &str) -> Result<Self, MapError> {
        let error = |field: String, message: String| MapError {
            source_name: source_name.to_string(),
            field,
            message,
        };
        let file: MapFile =
            serde_json::from_str(text).map_err(|e| error(String::new(), e.to_string()))?;
        let user = TypeMap::new(&registry.user, file.user)
            .map_err(|(field, message)| error(format!("User.{field}"), message))?;
        let group = TypeMap::new(&registry.group, file.group)
            .map_err(|(field, message)| error(format!("Group.{field}"), message))?;
        Ok(AttributeMap { user, group })
    }

    pub fn for_kind(&self, kind: Kind) -> &TypeMap {
        match kind {
            Kind::User => &self.user,
            Kind::Group => &self.group,
        }
    }

    /// The resource type whose collection holds `managed/<type>/<id>`, and the id.
    fn resolve_ref<'r>(&self, reference: &'r str) -> Option<(Kind, &'r str)> {
        [&self.user, &self.group].into_iter().find_map(|map| {
            let id = reference.strip_prefix(&map.collection)?.strip_prefix('/')?;
            Some((map.kind, id))
        })
    }
}

impl TypeMap {
    fn new(resource_type: &ResourceType, decl: TypeDecl) -> Result<Self, (String, String)> {
        if !decl.collection.starts_with("managed/") || decl.collection.len() <= "managed/".len() {
            return Err(("collection".into(), "expected managed/<type>".into()));
        }
        let mut rules = Vec::new();
        for (index, rule) in decl.attributes.into_iter().enumerate() {
            let field = format!("attributes[{index}]");
            rules.push(Rule::new(resource_type, rule).map_err(|m| (field, m))?);
        }
        let mut owned: Vec<String> = rules
            .iter()
            .filter(|r| !r.read_only)
            .map(|r| r.managed.clone())
            .collect();
        let targets: Vec<&str> = rules.iter().map(|r| r.managed.as_str()).collect();
        let mut passthrough = Vec::new();
        for located in resource_type.all_attributes() {
            let attribute = located.attribute;
            let extension = located.extension.map(|e| e.id.clone());
            let whole = rules.iter().any(|r| {
                r.scim.extension == extension
                    && r.scim.attribute == attribute.name
                    && r.scim.sub.is_none()
                    && r.scim.selector.is_none()
            });
            let server_owned =
                matches!(attribute.name.as_str(), "id" | "meta") && extension.is_none();
            if whole
                || server_owned
                || attribute.is_read_only()
                || targets.contains(&attribute.name.as_str())
            {
                continue;
            }
            owned.push(attribute.name.clone());
            passthrough.push(Passthrough {
                extension,
                attribute: attribute.name.clone(),
            });
        }
        Ok(TypeMap {
            kind: resource_type.kind,
            collection: decl.collection,
            rules,
            passthrough,
            owned,
        })
    }

    /// `user` in `managed/user`.
    pub fn managed_type(&self) -> &str {
        self.collection.trim_start_matches("managed/")
    }

    /// A managed object's attributes as a SCIM resource in canonical form
    /// (without `id`, `meta` and `schemas`).
    pub fn to_scim(
        &self,
        maps: &AttributeMap,
        resource_type: &ResourceType,
        managed: &Map<String, Value>,
        base: &str,
    ) -> Map<String, Value> {
        let mut raw = Map::new();
        for passthrough in &self.passthrough {
            if let Some(value) = managed.get(&passthrough.attribute)
                && let Some(holder) = holder(&mut raw, passthrough.extension.as_deref())
            {
                holder.insert(passthrough.attribute.clone(), value.clone());
            }
        }
        let mut resource =
            normalize::resource(resource_type, &Value::Object(raw), Mode::Read).unwrap_or_default();
        for rule in &self.rules {
            if rule.write_only {
                continue;
            }
            let value = managed
                .get(&rule.managed)
                .and_then(|v| rule.transform.to_scim(v, maps, base))
                .and_then(|v| rule.sanitize(resource_type, v));
            rule.scim.set(&mut resource, value);
        }
        resource.retain(|_, v| !matches!(v, Value::Object(m) if m.is_empty()));
        resource
    }

    /// The managed properties a canonical SCIM resource stands for. Rules whose
    /// SCIM value is absent are left out, so merging over the stored object
    /// after removing `owned()` clears them.
    pub fn to_managed(
        &self,
        maps: &AttributeMap,
        resource: &Map<String, Value>,
    ) -> Result<Map<String, Value>, ScimError> {
        let mut rest = resource.clone();
        let mut managed = Map::new();
        for rule in &self.rules {
            let value = rule.scim.take(&mut rest);
            if rule.read_only {
                continue;
            }
            if let Some(value) = value {
                managed.insert(
                    rule.managed.clone(),
                    rule.transform.to_managed(value, maps)?,
                );
            }
        }
        for passthrough in &self.passthrough {
            let value = holder(&mut rest, passthrough.extension.as_deref())
                .and_then(|h| h.remove(&passthrough.attribute));
            if let Some(value) = value {
                managed.insert(passthrough.attribute.clone(), value);
            }
        }
        Ok(managed)
    }

    /// The stored object's properties with the SCIM-owned ones replaced.
    pub fn merge(
        &self,
        stored: &Map<String, Value>,
        scim: Map<String, Value>,
    ) -> Map<String, Value> {
        let mut merged: Map<String, Value> = stored
            .iter()
            .filter(|(k, _)| !self.owned.contains(k) && !self.is_computed(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        merged.extend(scim);
        merged
    }

    fn is_computed(&self, name: &str) -> bool {
        self.rules.iter().any(|r| r.read_only && r.managed == name)
    }
}

/// The object an attribute lives in: the resource, or its extension's object
/// (made if missing). `None` only if that slot holds something else and
/// cannot be used.
fn holder<'m>(
    resource: &'m mut Map<String, Value>,
    extension: Option<&str>,
) -> Option<&'m mut Map<String, Value>> {
    let Some(urn) = extension else {
        return Some(resource);
    };
    resource
        .entry(urn.to_string())
        .or_insert_with(|| Value::Object(Map::new()))
        .as_object_mut()
}

impl Rule {
    fn new(resource_type: &ResourceType, decl: RuleDecl) -> Result<Self, String> {
        let PatchPath::Attribute(path) =
            path::parse(resource_type, &decl.scim).map_err(|e| e.detail)?
        else {
            return Err(format!(
                "scim: \"{}\" is a whole schema, not an attribute",
                decl.scim
            ));
        };
        if decl.managed.is_empty()
            || decl.managed.starts_with('_')
            || decl.managed.contains(['.', '/'])
        {
            return Err(format!(
                "managed: \"{}\" is not a property name",
                decl.managed
            ));
        }
        let selector = match &path.filter {
            None => None,
            Some(Filter::Compare(p, CompareOp::Eq, literal)) if p.sub_attr.is_none() => {
                let sub = path
                    .attribute
                    .sub(&p.attr)
                    .map(|s| s.name.clone())
                    .ok_or_else(|| format!("scim: {} has no {}", path.attribute.name, p.attr))?;
                if path.sub.is_none() {
                    return Err("scim: a filtered path names the sub-attribute it maps, e.g. emails[type eq \"work\"].value".into());
                }
                Some((sub, literal.to_json()))
            }
            Some(_) => {
                return Err("scim: only [subAttribute eq \"literal\"] selects an element".into());
            }
        };
        if path.attribute.multi_valued && path.sub.is_some() && selector.is_none() {
            return Err(format!(
                "scim: {} has many values; pick one, e.g. {}[type eq \"work\"].value",
                path.attribute.name, path.attribute.name
            ));
        }
        let transform = match (decl.values, decl.references) {
            (Some(_), Some(_)) => return Err("values and references exclude each other".into()),
            (Some(values), None) => Transform::Boolean {
                on_true: values.on_true,
                on_false: values.on_false,
            },
            (None, Some(kind)) => {
                if !path.attribute.multi_valued || path.sub.is_some() {
                    return Err(
                        "references: only a whole multi-valued attribute holds references".into(),
                    );
                }
                Transform::References {
                    default: Kind::from_name(&kind)
                        .ok_or_else(|| format!("references: \"{kind}\" is not User or Group"))?,
                }
            }
            (None, None) => Transform::Copy,
        };
        let attribute = path.sub.unwrap_or(path.attribute);
        Ok(Rule {
            read_only: path.attribute.is_read_only(),
            write_only: attribute.returned == Returned::Never,
            scim: ScimPath {
                extension: path.extension.map(|e| e.id.clone()),
                attribute: path.attribute.name.clone(),
                selector,
                sub: path.sub.map(|s| s.name.clone()),
            },
            managed: decl.managed,
            transform,
        })
    }

    /// The definition of what the rule maps (the sub-attribute, if any).
    fn definition<'r>(&self, resource_type: &'r ResourceType) -> Option<&'r Attribute> {
        let attribute = resource_type
            .attribute(self.scim.extension.as_deref(), &self.scim.attribute)?
            .attribute;
        match &self.scim.sub {
            Some(sub) => attribute.sub(sub),
            None => Some(attribute),
        }
    }

    /// A stored value of the wrong shape is left out of the view, not an error.
    fn sanitize(&self, resource_type: &ResourceType, value: Value) -> Option<Value> {
        let definition = self.definition(resource_type)?;
        normalize::value(definition, &value, Mode::Read, &definition.name)
            .ok()
            .flatten()
    }
}

impl Transform {
    fn to_scim(&self, value: &Value, maps: &AttributeMap, base: &str) -> Option<Value> {
        match self {
            Transform::Copy => Some(value.clone()),
            Transform::Boolean { on_true, on_false } => {
                if same_value(value, on_true) {
                    Some(Value::Bool(true))
                } else if same_value(value, on_false) {
                    Some(Value::Bool(false))
                } else {
                    None
                }
            }
            Transform::References { .. } => {
                let items: Vec<Value> = value
                    .as_array()?
                    .iter()
                    .filter_map(|item| item.get("_ref")?.as_str())
                    .filter_map(|reference| maps.resolve_ref(reference))
                    .map(|(kind, id)| {
                        serde_json::json!({
                            "value": id,
                            "$ref": format!("{base}{}/{id}", kind.endpoint()),
                            "type": kind.name(),
                        })
                    })
                    .collect();
                (!items.is_empty()).then_some(Value::Array(items))
            }
        }
    }

    fn to_managed(&self, value: Value, maps: &AttributeMap) -> Result<Value, ScimError> {
        match self {
            Transform::Copy => Ok(value),
            Transform::Boolean { on_true, on_false } => match value {
                Value::Bool(true) => Ok(on_true.clone()),
                Value::Bool(false) => Ok(on_false.clone()),
                other => Err(ScimError::invalid_value(format!(
                    "expected a boolean, got {other}"
                ))),
            },
            Transform::References { default } => {
                let mut references = Vec::new();
                for item in value.as_array().cloned().unwrap_or_default() {
                    let Some(id) = item.get("value").and_then(Value::as_str) else {
                        return Err(ScimError::invalid_value("a member needs a value (the id)"));
                    };
                    let kind = item
                        .get("type")
                        .and_then(Value::as_str)
                        .and_then(Kind::from_name)
                        .unwrap_or(*default);
                    references.push(serde_json::json!({
                        "_ref": format!("{}/{id}", maps.for_kind(kind).collection)
                    }));
                }
                Ok(Value::Array(references))
            }
        }
    }
}

/// Stored values compare as the SCIM literal would: strings ignoring case.
fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::String(x), Value::String(y)) => x.eq_ignore_ascii_case(y),
        _ => a == b,
    }
}

impl ScimPath {
    fn element_matches(&self, element: &Value) -> bool {
        let Some((sub, literal)) = &self.selector else {
            return true;
        };
        element.get(sub).is_some_and(|v| same_value(v, literal))
    }

    /// Writes (or, with `None`, clears) the covered value in a resource.
    fn set(&self, resource: &mut Map<String, Value>, value: Option<Value>) {
        let Some(holder) = holder(resource, self.extension.as_deref()) else {
            return;
        };
        match (&self.selector, &self.sub) {
            (None, None) => {
                match value {
                    Some(value) => holder.insert(self.attribute.clone(), value),
                    None => holder.remove(&self.attribute),
                };
            }
            (None, Some(sub)) => {
                let mut object = holder
                    .remove(&self.attribute)
                    .and_then(|v| v.as_object().cloned())
                    .unwrap_or_default();
                match value {
                    Some(value) => object.insert(sub.clone(), value),
                    None => object.remove(sub),
                };
                if !object.is_empty() {
                    holder.insert(self.attribute.clone(), Value::Object(object));
                }
            }
            (Some((key, literal)), Some(sub)) => {
                let mut elements = match holder.remove(&self.attribute) {
                    Some(Value::Array(items)) => items,
                    _ => Vec::new(),
                };
                let position = elements.iter().position(|e| self.element_matches(e));
                match (position, value) {
                    (Some(index), Some(value)) => {
                        if let Some(element) = elements[index].as_object_mut() {
                            element.insert(sub.clone(), value);
                        }
                    }
                    (None, Some(value)) => {
                        let mut element = Map::new();
                        element.insert(sub.clone(), value);
                        element.insert(key.clone(), literal.clone());
                        elements.insert(0, Value::Object(element));
                    }
                    (Some(index), None) => {
                        elements.remove(index);
                    }
                    (None, None) => {}
                }
                if !elements.is_empty() {
                    holder.insert(self.attribute.clone(), Value::Array(elements));
                }
            }
            (Some(_), None) => {}
        }
        drop_empty_extension(resource, self.extension.as_deref());
    }

    /// Removes the covered value from a resource and returns it. An element a
    /// selector picked stays behind without the mapped sub-attribute when it
    /// says more than the selector (`primary`, `display`).
    fn take(&self, resource: &mut Map<String, Value>) -> Option<Value> {
        let taken = self.take_from(resource);
        drop_empty_extension(resource, self.extension.as_deref());
        taken
    }

    fn take_from(&self, resource: &mut Map<String, Value>) -> Option<Value> {
        let holder = holder(resource, self.extension.as_deref())?;
        match (&self.selector, &self.sub) {
            (None, None) => holder.remove(&self.attribute),
            (None, Some(sub)) => {
                let object = holder.get_mut(&self.attribute)?.as_object_mut()?;
                let value = object.remove(sub);
                if object.is_empty() {
                    holder.remove(&self.attribute);
                }
                value
            }
            (Some((key, _)), Some(sub)) => {
                let elements = holder.get_mut(&self.attribute)?.as_array_mut()?;
                let index = elements.iter().position(|e| self.element_matches(e))?;
                let element = elements[index].as_object_mut()?;
                let value = element.remove(sub);
                if element.keys().all(|k| k == key) {
                    elements.remove(index);
                }
                if elements.is_empty() {
                    holder.remove(&self.attribute);
                }
                value
            }
            (Some(_), None) => None,
        }
    }
}

fn drop_empty_extension(resource: &mut Map<String, Value>, extension: Option<&str>) {
    if let Some(urn) = extension
        && resource
            .get(urn)
            .and_then(Value::as_object)
            .is_some_and(Map::is_empty)
    {
        resource.remove(urn);
    }
}

#[cfg(test)]
mod tests;
