//! The SCIM schemas (RFC 7643 §7, §8.7.1) and resource types this gateway
//! serves. `schemas.json` is the one definition: `/Schemas` serves it, and input
//! parsing, PATCH, filters and projection all look attributes up here.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::urn;

/// A schema as RFC 7643 §7 writes it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Schema {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub attributes: Vec<Attribute>,
}

/// One attribute definition with its characteristics.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attribute {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: AttributeType,
    pub multi_valued: bool,
    #[serde(default)]
    pub description: String,
    pub required: bool,
    #[serde(default)]
    pub case_exact: bool,
    pub mutability: Mutability,
    pub returned: Returned,
    #[serde(default)]
    pub uniqueness: Uniqueness,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub canonical_values: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reference_types: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sub_attributes: Vec<Attribute>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum AttributeType {
    String,
    Boolean,
    Decimal,
    Integer,
    DateTime,
    Reference,
    Complex,
    Binary,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Mutability {
    ReadOnly,
    ReadWrite,
    Immutable,
    WriteOnly,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Returned {
    Always,
    Never,
    Default,
    Request,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Uniqueness {
    #[default]
    None,
    Server,
    Global,
}

impl Attribute {
    /// A sub-attribute by name, ignoring case (SCIM names are case-insensitive).
    pub fn sub(&self, name: &str) -> Option<&Attribute> {
        self.sub_attributes
            .iter()
            .find(|a| a.name.eq_ignore_ascii_case(name))
    }

    pub fn is_complex(&self) -> bool {
        self.kind == AttributeType::Complex
    }

    /// Clients may send it: neither computed by the server nor fixed.
    pub fn is_read_only(&self) -> bool {
        self.mutability == Mutability::ReadOnly
    }
}

/// The attributes every resource has (RFC 7643 §3.1), which the schemas
/// themselves do not list.
const COMMON_ATTRIBUTES: &str = r#"[
  {"name": "id", "type": "string", "multiValued": false, "required": false, "caseExact": true,
   "mutability": "readOnly", "returned": "always", "uniqueness": "server"},
  {"name": "externalId", "type": "string", "multiValued": false, "required": false,
   "caseExact": true, "mutability": "readWrite", "returned": "default", "uniqueness": "none"},
  {"name": "meta", "type": "complex", "multiValued": false, "required": false,
   "mutability": "readOnly", "returned": "default", "subAttributes": [
    {"name": "resourceType", "type": "string", "multiValued": false, "required": false,
     "caseExact": true, "mutability": "readOnly", "returned": "default"},
    {"name": "created", "type": "dateTime", "multiValued": false, "required": false,
     "mutability": "readOnly", "returned": "default"},
    {"name": "lastModified", "type": "dateTime", "multiValued": false, "required": false,
     "mutability": "readOnly", "returned": "default"},
    {"name": "location", "type": "reference", "multiValued": false, "required": false,
     "caseExact": true, "mutability": "readOnly", "returned": "default"},
    {"name": "version", "type": "string", "multiValued": false, "required": false,
     "caseExact": true, "mutability": "readOnly", "returned": "default"}
  ]}
]"#;

/// Which kind of resource: the two this gateway serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    User,
    Group,
}

impl Kind {
    pub const ALL: [Kind; 2] = [Kind::User, Kind::Group];

    pub fn name(self) -> &'static str {
        match self {
            Kind::User => "User",
            Kind::Group => "Group",
        }
    }

    /// The endpoint under `/scim/v2`, e.g. `/Users`.
    pub fn endpoint(self) -> &'static str {
        match self {
            Kind::User => "/Users",
            Kind::Group => "/Groups",
        }
    }

    pub fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL
            .into_iter()
            .find(|k| k.name().eq_ignore_ascii_case(name))
    }
}

/// A resource type: its core schema and its extensions.
#[derive(Debug)]
pub struct ResourceType {
    pub kind: Kind,
    pub core: Schema,
    pub extensions: Vec<Schema>,
    pub common: Vec<Attribute>,
}

/// Where an attribute lives in a resource: at top level (core and common
/// attributes) or inside an extension's object.
#[derive(Debug, Clone, Copy)]
pub struct Located<'a> {
    /// `None` for the core schema and common attributes.
    pub extension: Option<&'a Schema>,
    pub attribute: &'a Attribute,
}

impl ResourceType {
    /// Every schema URN of the type, core first.
    pub fn schema_urns(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.core.id.as_str()).chain(self.extensions.iter().map(|s| s.id.as_str()))
    }

    /// The extension with this URN, ignoring case.
    pub fn extension(&self, urn: &str) -> Option<&Schema> {
        self.extensions
            .iter()
            .find(|s| s.id.eq_ignore_ascii_case(urn))
    }

    /// Looks an attribute up by optional schema URN and name, ignoring case.
    /// Without a URN the core schema and common attributes are searched.
    pub fn attribute(&self, urn: Option<&str>, name: &str) -> Option<Located<'_>> {
        fn find<'a>(attributes: &'a [Attribute], name: &str) -> Option<&'a Attribute> {
            attributes
                .iter()
                .find(|a| a.name.eq_ignore_ascii_case(name))
        }
        match urn {
            None => find(&self.core.attributes, name)
                .or_else(|| find(&self.common, name))
                .map(|attribute| Located {
                    extension: None,
                    attribute,
                }),
            Some(urn) if urn.eq_ignore_ascii_case(&self.core.id) => {
                find(&self.core.attributes, name)
                    .or_else(|| find(&self.common, name))
                    .map(|attribute| Located {
                        extension: None,
                        attribute,
                    })
            }
            Some(urn) => {
                let extension = self.extension(urn)?;
                find(&extension.attributes, name).map(|attribute| Located {
                    extension: Some(extension),
                    attribute,
                })
            }
        }
    }

    /// Every attribute with where it lives: core, common, then extensions.
    pub fn all_attributes(&self) -> impl Iterator<Item = Located<'_>> {
        self.core
            .attributes
            .iter()
            .chain(self.common.iter())
            .map(|attribute| Located {
                extension: None,
                attribute,
            })
            .chain(self.extensions.iter().flat_map(|extension| {
                extension.attributes.iter().map(move |attribute| Located {
                    extension: Some(extension),
                    attribute,
                })
            }))
    }
}

/// The schemas and resource types, loaded once.
#[derive(Debug)]
pub struct Registry {
    pub schemas: Vec<Schema>,
    pub user: ResourceType,
    pub group: ResourceType,
}

#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("schemas.json: {0}")]
    Parse(#[from] serde_json::Error),
    #[error("schemas.json: schema {0} is missing")]
    Missing(&'static str),
}

impl Registry {
    pub fn builtin() -> Result<Arc<Registry>, SchemaError> {
        let schemas: Vec<Schema> = serde_json::from_str(include_str!("schemas.json"))?;
        let common: Vec<Attribute> = serde_json::from_str(COMMON_ATTRIBUTES)?;
        let find = |id: &'static str| {
            schemas
                .iter()
                .find(|s| s.id == id)
                .cloned()
                .ok_or(SchemaError::Missing(id))
        };
        Ok(Arc::new(Registry {
            user: ResourceType {
                kind: Kind::User,
                core: find(urn::USER)?,
                extensions: vec![find(urn::ENTERPRISE_USER)?],
                common: common.clone(),
            },
            group: ResourceType {
                kind: Kind::Group,
                core: find(urn::GROUP)?,
                extensions: Vec::new(),
                common,
            },
            schemas,
        }))
    }

    pub fn resource_type(&self, kind: Kind) -> &ResourceType {
        match kind {
            Kind::User => &self.user,
            Kind::Group => &self.group,
        }
    }

    pub fn schema(&self, id: &str) -> Option<&Schema> {
        self.schemas.iter().find(|s| s.id.eq_ignore_ascii_case(id))
    }
}

/// A schema's JSON with the `schemas` and `meta` that `/Schemas` adds.
pub fn schema_document(schema: &Schema, base: &str) -> Value {
    let mut document = serde_json::json!({
        "schemas": [urn::SCHEMA],
        "id": schema.id,
        "name": schema.name,
        "description": schema.description,
        "attributes": schema.attributes,
    });
    if let Some(map) = document.as_object_mut() {
        map.insert(
            "meta".into(),
            serde_json::json!({
                "resourceType": "Schema",
                "location": format!("{base}/Schemas/{}", schema.id),
            }),
        );
    }
    document
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_schemas_load_with_their_characteristics() {
        let registry = Registry::builtin().unwrap();
        let user = &registry.user;
        let user_name = user.attribute(None, "USERNAME").unwrap().attribute;
        assert_eq!(user_name.name, "userName");
        assert!(user_name.required && !user_name.case_exact);
        assert_eq!(user_name.uniqueness, Uniqueness::Server);
        let password = user.attribute(None, "password").unwrap().attribute;
        assert_eq!(password.returned, Returned::Never);
        assert_eq!(password.mutability, Mutability::WriteOnly);
        let department = user
            .attribute(Some(urn::ENTERPRISE_USER), "department")
            .unwrap();
        assert_eq!(department.extension.unwrap().id, urn::ENTERPRISE_USER);
        assert!(user.attribute(None, "id").unwrap().attribute.is_read_only());
        let members = registry.group.attribute(None, "members").unwrap().attribute;
        assert!(members.multi_valued && members.sub("VALUE").is_some());
        assert!(registry.group.attribute(None, "userName").is_none());
    }
}
