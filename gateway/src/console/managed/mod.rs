//! Manage → User, and every other managed type of `managed.json`: the list
//! (`list.rs`), an object's page and its deletion (`object.rs`), the edit,
//! create and set-password forms and a group's members (`form.rs`).
//!
//! The pages are built from the type's schema as the core declares it
//! (`ObjectService.ListObjectTypes`): the list's columns are the searchable
//! properties, an object shows its viewable ones, a form asks for the
//! scalar ones. Private properties are never shown, only set (the password
//! page and the create form, whose inputs are never filled back in).

mod form;
mod list;
mod object;

use axum::Router;
use axum::routing::{get, post};
use idm_proto::json::from_proto_struct;
use idm_proto::v1::object_service_client::ObjectServiceClient;
use idm_proto::v1::{ListObjectTypesRequest, ObjectType};
use serde_json::{Map, Value};

use super::{ConsoleError, ConsoleState, Viewer, console_call};

/// The routes under `/admin/managed`.
pub fn routes() -> Router<ConsoleState> {
    Router::new()
        .route("/managed/{type}", get(list::show))
        .route("/managed/{type}/new", get(form::new).post(form::create))
        .route("/managed/{type}/{id}", get(object::show))
        .route(
            "/managed/{type}/{id}/edit",
            get(form::edit).post(form::save),
        )
        .route(
            "/managed/{type}/{id}/delete",
            get(object::confirm_delete).post(object::delete),
        )
        .route(
            "/managed/{type}/{id}/password",
            get(form::password).post(form::set_password),
        )
        .route(
            "/managed/{type}/{id}/related/{property}/add",
            post(form::add_related),
        )
        .route(
            "/managed/{type}/{id}/related/{property}/remove",
            post(form::remove_related),
        )
}

/// What a property holds, as far as the pages care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    String,
    Number,
    Integer,
    Boolean,
    /// One reference to another object.
    Relationship,
    /// A list of references (a group's `members`).
    Relationships,
    /// Anything else (lists of values, objects): shown, not edited here.
    Other,
}

impl Kind {
    /// Whether the edit and create forms have an input for it.
    pub fn is_scalar(self) -> bool {
        matches!(
            self,
            Kind::String | Kind::Number | Kind::Integer | Kind::Boolean
        )
    }
}

/// One property of a managed type.
#[derive(Debug, Clone)]
pub struct Prop {
    pub name: String,
    /// `title` of `managed.json`, else the name.
    pub title: String,
    pub description: String,
    pub kind: Kind,
    pub required: bool,
    /// Write-only: never shown, only set.
    pub private: bool,
    pub viewable: bool,
    pub searchable: bool,
    /// Where references point, `managed/user`, for relationships.
    pub collection: Option<String>,
}

/// A property computed from other objects' references (a user's `groups`).
#[derive(Debug, Clone)]
pub struct Reverse {
    pub name: String,
    pub title: String,
}

/// A managed type's schema, as the pages use it.
#[derive(Debug, Clone)]
pub struct TypeSchema {
    /// `user`.
    pub name: String,
    /// `User`.
    pub title: String,
    /// In `managed.json`'s order, `_id` left out.
    pub props: Vec<Prop>,
    pub reverse: Vec<Reverse>,
}

impl TypeSchema {
    pub fn of(declared: &ObjectType) -> TypeSchema {
        let name = declared
            .name
            .strip_prefix("managed/")
            .unwrap_or(&declared.name)
            .to_string();
        let declaration = declared
            .schema
            .as_ref()
            .map(from_proto_struct)
            .unwrap_or_default();
        let schema = declaration
            .get("schema")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let properties = schema
            .get("properties")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let required_list: Vec<&str> = schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let order: Vec<String> = if declared.property_order.is_empty() {
            properties.keys().cloned().collect()
        } else {
            declared.property_order.clone()
        };
        let props = order
            .iter()
            .filter(|name| name.as_str() != "_id")
            .filter_map(|name| {
                let spec = properties.get(name)?.as_object()?;
                Some(prop(name, spec, required_list.contains(&name.as_str())))
            })
            .collect();
        let reverse = declared
            .reverse_properties
            .iter()
            .map(|r| Reverse {
                name: r.name.clone(),
                title: capitalised(&r.name),
            })
            .collect();
        TypeSchema {
            title: text(&schema, "title").unwrap_or_else(|| capitalised(&name)),
            name,
            props,
            reverse,
        }
    }

    pub fn prop(&self, name: &str) -> Option<&Prop> {
        self.props.iter().find(|p| p.name == name)
    }

    /// The list's columns: the searchable properties; when `managed.json`
    /// marks none, the first five viewable strings.
    pub fn columns(&self) -> Vec<&Prop> {
        let shown = |p: &&Prop| !p.private && p.viewable;
        let searchable: Vec<&Prop> = self
            .props
            .iter()
            .filter(shown)
            .filter(|p| p.searchable && p.kind.is_scalar())
            .collect();
        if !searchable.is_empty() {
            return searchable;
        }
        self.props
            .iter()
            .filter(shown)
            .filter(|p| p.kind == Kind::String)
            .take(5)
            .collect()
    }

    /// The properties a form asks for: scalar and not private.
    pub fn editable(&self) -> impl Iterator<Item = &Prop> {
        self.props
            .iter()
            .filter(|p| !p.private && p.kind.is_scalar())
    }

    /// Private strings: set on the password page, never shown.
    pub fn secrets(&self) -> impl Iterator<Item = &Prop> {
        self.props
            .iter()
            .filter(|p| p.private && p.kind == Kind::String)
    }

    /// Lists of references whose members the object page adds and removes.
    pub fn relations(&self) -> impl Iterator<Item = &Prop> {
        self.props
            .iter()
            .filter(|p| p.kind == Kind::Relationships && !p.private)
    }

    /// The name of one object, `managed/<type>/<id>`.
    pub fn object_name(&self, id: &str) -> String {
        format!("managed/{}/{id}", self.name)
    }
}

fn text(map: &Map<String, Value>, key: &str) -> Option<String> {
    map.get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// A property's type name: `"string"`, or the first of `["string", "null"]`.
fn type_name(spec: &Map<String, Value>) -> &str {
    match spec.get("type") {
        Some(Value::String(t)) => t,
        Some(Value::Array(types)) => types
            .iter()
            .filter_map(Value::as_str)
            .find(|t| *t != "null")
            .unwrap_or(""),
        _ => "",
    }
}

/// `resourceCollection` as idm writes it (`"managed/user"`) or Wren 6 does
/// (`[{"path": "managed/user", …}]`).
fn collection(spec: &Map<String, Value>) -> Option<String> {
    match spec.get("resourceCollection")? {
        Value::String(path) => Some(path.clone()),
        Value::Array(list) => list
            .iter()
            .find_map(|c| c.get("path").and_then(Value::as_str))
            .map(str::to_string),
        _ => None,
    }
}

fn prop(name: &str, spec: &Map<String, Value>, listed_required: bool) -> Prop {
    let items = spec.get("items").and_then(Value::as_object);
    let (kind, target) = match type_name(spec) {
        "string" => (Kind::String, None),
        "number" => (Kind::Number, None),
        "integer" => (Kind::Integer, None),
        "boolean" => (Kind::Boolean, None),
        "relationship" => (Kind::Relationship, collection(spec)),
        "array" if items.is_some_and(|i| type_name(i) == "relationship") => {
            (Kind::Relationships, items.and_then(collection))
        }
        _ => (Kind::Other, None),
    };
    let flag = |key: &str, default: bool| spec.get(key).and_then(Value::as_bool).unwrap_or(default);
    Prop {
        name: name.to_string(),
        title: text(spec, "title").unwrap_or_else(|| name.to_string()),
        description: text(spec, "description").unwrap_or_default(),
        kind,
        required: listed_required || flag("required", false),
        private: flag("private", false)
            || spec.get("scope").and_then(Value::as_str) == Some("private"),
        viewable: flag("viewable", true),
        searchable: flag("searchable", false),
        collection: target,
    }
}

pub fn capitalised(name: &str) -> String {
    let mut chars = name.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Every declared managed type's schema.
pub async fn schemas(
    state: &ConsoleState,
    viewer: &Viewer,
) -> Result<Vec<TypeSchema>, ConsoleError> {
    let reply = console_call!(
        state,
        viewer,
        ObjectServiceClient.list_object_types(ListObjectTypesRequest {})
    )
    .await?;
    Ok(reply.types.iter().map(TypeSchema::of).collect())
}

/// The schema of `managed/<type_name>`; 404 when the type is not declared.
pub async fn schema_of(
    state: &ConsoleState,
    viewer: &Viewer,
    type_name: &str,
) -> Result<TypeSchema, ConsoleError> {
    schemas(state, viewer)
        .await?
        .into_iter()
        .find(|t| t.name == type_name)
        .ok_or_else(|| ConsoleError::NotFound(format!("There is no managed type \"{type_name}\".")))
}

/// A value as one line of text: strings as they are, references by id,
/// anything else as compact JSON.
pub fn shown(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        Value::Bool(b) => if *b { "yes" } else { "no" }.into(),
        Value::Number(n) => n.to_string(),
        Value::Object(o) if o.contains_key("_ref") => o
            .get("_ref")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        other => other.to_string(),
    }
}

/// The `_ref`s of a reference or a list of them.
pub fn refs(value: Option<&Value>) -> Vec<String> {
    let one = |v: &Value| v.get("_ref").and_then(Value::as_str).map(str::to_string);
    match value {
        Some(Value::Array(list)) => list.iter().filter_map(one).collect(),
        Some(other) => one(other).into_iter().collect(),
        None => Vec::new(),
    }
}

/// A reference for a page: the console URL of `managed/<type>/<id>`, and
/// the id as its text.
#[derive(Debug, Clone)]
pub struct RefLink {
    pub href: String,
    pub label: String,
    /// The `_ref` itself, `managed/user/123` (what a remove button posts).
    pub reference: String,
}

impl RefLink {
    pub fn of(reference: &str) -> RefLink {
        let mut parts = reference.splitn(3, '/');
        let (href, label) = match (parts.next(), parts.next(), parts.next()) {
            (Some("managed"), Some(type_name), Some(id)) if !id.is_empty() => (
                format!(
                    "/admin/managed/{}/{}",
                    super::page::url_part(type_name),
                    super::page::url_part(id)
                ),
                id.to_string(),
            ),
            _ => (String::new(), reference.to_string()),
        };
        RefLink {
            label,
            href,
            reference: reference.to_string(),
        }
    }

    /// [`RefLink::of`], called by its name in `labels` when it has one.
    pub fn named(reference: &str, labels: &std::collections::HashMap<String, String>) -> RefLink {
        let mut link = RefLink::of(reference);
        if let Some(label) = labels.get(reference) {
            link.label = label.clone();
        }
        link
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use idm_proto::json::to_proto_struct;
    use serde_json::json;

    fn declared(declaration: Value, order: &[&str]) -> ObjectType {
        ObjectType {
            name: "managed/user".into(),
            schema: Some(to_proto_struct(declaration.as_object().unwrap())),
            property_order: order.iter().map(|s| s.to_string()).collect(),
            reverse_properties: vec![idm_proto::v1::ReverseProperty {
                name: "groups".into(),
                source_collection: "managed/group".into(),
                source_property: "members".into(),
            }],
        }
    }

    #[test]
    fn a_schema_reads_kinds_privacy_and_order() {
        let schema = TypeSchema::of(&declared(
            json!({"name": "user", "schema": {"title": "Person", "required": ["sn"], "properties": {
                "_id": {"type": "string", "viewable": false},
                "userName": {"type": "string", "searchable": true, "title": "Username"},
                "sn": {"type": ["string", "null"], "searchable": true},
                "password": {"type": "string", "private": true, "searchable": true},
                "age": {"type": "integer"},
                "active": {"type": "boolean"},
                "manager": {"type": "relationship", "resourceCollection": [{"path": "managed/user"}]},
                "reports": {"type": "array", "items": {"type": "relationship", "resourceCollection": "managed/user"}},
                "prefs": {"type": "object"}}}}),
            &[
                "_id", "sn", "userName", "password", "age", "active", "manager", "reports", "prefs",
            ],
        ));
        assert_eq!(schema.title, "Person");
        let names: Vec<_> = schema.props.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "sn", "userName", "password", "age", "active", "manager", "reports", "prefs"
            ]
        );
        let columns: Vec<_> = schema.columns().iter().map(|p| p.name.as_str()).collect();
        assert_eq!(columns, ["sn", "userName"], "private never a column");
        assert!(schema.prop("sn").unwrap().required);
        assert_eq!(schema.prop("userName").unwrap().title, "Username");
        let editable: Vec<_> = schema.editable().map(|p| p.name.as_str()).collect();
        assert_eq!(editable, ["sn", "userName", "age", "active"]);
        assert_eq!(schema.secrets().count(), 1);
        let manager = schema.prop("manager").unwrap();
        assert_eq!(manager.kind, Kind::Relationship);
        assert_eq!(manager.collection.as_deref(), Some("managed/user"));
        let reports: Vec<_> = schema.relations().map(|p| p.name.as_str()).collect();
        assert_eq!(reports, ["reports"]);
        assert_eq!(schema.reverse[0].title, "Groups");
    }

    #[test]
    fn without_searchable_properties_the_first_strings_are_the_columns() {
        let schema = TypeSchema::of(&declared(
            json!({"name": "user", "schema": {"properties": {
                "userName": {"type": "string"}, "givenName": {"type": "string"},
                "password": {"type": "string", "private": true}, "n": {"type": "number"}}}}),
            &[],
        ));
        assert_eq!(schema.title, "User");
        let columns: Vec<_> = schema.columns().iter().map(|p| p.name.as_str()).collect();
        // No property_order (an older core): the Struct's order, by name.
        assert_eq!(columns, ["givenName", "userName"]);
    }

    #[test]
    fn references_link_to_their_pages() {
        let link = RefLink::of("managed/user/a b");
        assert_eq!(link.href, "/admin/managed/user/a%20b");
        assert_eq!(link.label, "a b");
        assert_eq!(
            refs(Some(
                &json!([{"_ref": "managed/user/1"}, "x", {"_ref": "managed/user/2"}])
            )),
            ["managed/user/1", "managed/user/2"]
        );
    }
}
