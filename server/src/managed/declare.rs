//! One property of `managed.json`, in idm's shape or Wren's: its type (a name
//! or a list such as `["string", "null"]`), relationship, privacy, and the
//! policies it implies or names. What idm does not support is collected as
//! a warning (`type.property.key: why`), never dropped silently.

use serde_json::{Map, Value};

use super::policy::Policy;
use super::schema::{Property, PropertyKind, SchemaError, schema_error};

/// Keys of a property that carry nothing idm acts on but the admin UI's
/// presentation, which Wren keeps for its UI too: accepted silently
/// (`searchable` also gives a string property sort keys: `store/sort.rs`).
const PRESENTATION: &[&str] = &[
    "title",
    "description",
    "viewable",
    "searchable",
    "userEditable",
    "order",
    "label",
    "format",
    "properties",
    "required",
    "minLength",
    "pattern",
    "type",
    "items",
    "unique",
    "private",
    "caseExact",
    "resourceCollection",
    "reverseProperty",
    "reverseRelationship",
    "reversePropertyName",
    "validate",
    "encryption",
    "scope",
    "policies",
    "returnByDefault",
    "$schema",
    "id",
];

pub(super) fn property(
    name: &str,
    raw: &Value,
    in_required_list: bool,
    field: &str,
    warnings: &mut Vec<String>,
) -> Result<Property, SchemaError> {
    let decl = raw
        .as_object()
        .ok_or_else(|| schema_error(field, "expected an object"))?;
    let types = types(decl.get("type"), field)?;
    let mut non_null = types.iter().filter(|t| *t != "null");
    let first = non_null.next().cloned().unwrap_or_else(|| "string".into());
    let mut kind = parse_kind(&first).ok_or_else(|| {
        schema_error(
            format!("{field}.type"),
            format!("unknown type \"{first}\" (string, number, integer, boolean, object, array, relationship, null)"),
        )
    })?;
    for other in non_null {
        parse_kind(other).ok_or_else(|| {
            schema_error(format!("{field}.type"), format!("unknown type \"{other}\""))
        })?;
    }
    let flag = |key: &str| decl.get(key).and_then(Value::as_bool);
    let items = decl.get("items").and_then(Value::as_object);
    let mut multiple = false;
    let mut relationship = decl;
    if kind == PropertyKind::Array
        && let Some(items) = items
        && items.get("type").and_then(Value::as_str) == Some("relationship")
    {
        kind = PropertyKind::Relationship;
        multiple = true;
        relationship = items;
    }
    let mut resource_collection = None;
    let mut reverse_property = decl
        .get("reverseProperty")
        .and_then(Value::as_str)
        .map(str::to_string);
    if kind == PropertyKind::Relationship {
        resource_collection = collection(
            relationship
                .get("resourceCollection")
                .or(decl.get("resourceCollection")),
            field,
            warnings,
        );
        if relationship
            .get("reverseRelationship")
            .and_then(Value::as_bool)
            == Some(true)
        {
            reverse_property = reverse_property.or(relationship
                .get("reversePropertyName")
                .and_then(Value::as_str)
                .map(str::to_string));
        }
        let edge = relationship
            .get("properties")
            .and_then(|p| p.get("_refProperties"))
            .and_then(|p| p.get("properties"))
            .and_then(Value::as_object);
        if let Some(edge) = edge
            && edge.keys().any(|k| k != "_id")
        {
            warnings.push(format!(
                "{field}: relationship properties (_refProperties) are not kept"
            ));
        }
        if resource_collection.is_none() {
            if relationship.contains_key("resourceCollection") {
                warnings.push(format!(
                    "{field}: no managed/ collection among its resourceCollection; kept as plain data"
                ));
                kind = if multiple {
                    PropertyKind::Array
                } else {
                    PropertyKind::Object
                };
                multiple = false;
                reverse_property = None;
            } else {
                return Err(schema_error(
                    format!("{field}.resourceCollection"),
                    "a relationship needs a resourceCollection",
                ));
            }
        }
    }
    let encrypted = decl.contains_key("encryption");
    let scoped_private = decl.get("scope").and_then(Value::as_str) == Some("private");
    let wants_private = flag("private").unwrap_or(false) || encrypted || scoped_private;
    let private = wants_private && kind == PropertyKind::String;
    let hidden = wants_private && !private;
    let unique_policy = policies_named(decl, "unique");
    let mut property = Property {
        kind,
        types: types.clone(),
        required: flag("required").unwrap_or(false) || in_required_list,
        unique: flag("unique").unwrap_or(false) || unique_policy,
        private,
        hidden,
        case_exact: flag("caseExact").unwrap_or(true),
        searchable: flag("searchable").unwrap_or(false),
        resource_collection,
        multiple,
        reverse_property,
        policies: Vec::new(),
    };
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
    if property.private && property.unique {
        return Err(schema_error(
            format!("{field}.private"),
            "private properties cannot be unique",
        ));
    }
    property.policies = policies(decl, &property, &types, field)?;
    if decl.get("returnByDefault").and_then(Value::as_bool) == Some(false) {
        warnings.push(format!(
            "{field}.returnByDefault: idm returns every property (relationships included) by default"
        ));
    }
    for key in decl.keys().filter(|k| !PRESENTATION.contains(&k.as_str())) {
        warnings.push(format!("{field}.{key}: not supported"));
    }
    let _ = name;
    Ok(property)
}

fn types(raw: Option<&Value>, field: &str) -> Result<Vec<String>, SchemaError> {
    match raw {
        None => Ok(vec!["string".into()]),
        Some(Value::String(t)) => Ok(vec![t.clone()]),
        Some(Value::Array(list)) if !list.is_empty() && list.len() <= 8 => list
            .iter()
            .map(|t| t.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| schema_error(format!("{field}.type"), "expected type names")),
        Some(_) => Err(schema_error(
            format!("{field}.type"),
            "expected a type name or a list of 1 to 8 of them",
        )),
    }
}

/// `"managed/user"`, or Wren's list of `{path, label, query}`: the first
/// `managed/` path; any other path is warned about.
fn collection(raw: Option<&Value>, field: &str, warnings: &mut Vec<String>) -> Option<String> {
    match raw? {
        Value::String(path) => Some(path.clone()),
        Value::Array(entries) => {
            let paths: Vec<&str> = entries
                .iter()
                .filter_map(|e| e.get("path").and_then(Value::as_str))
                .collect();
            let managed: Vec<&str> = paths
                .iter()
                .copied()
                .filter(|p| p.starts_with("managed/"))
                .collect();
            for path in paths.iter().filter(|p| managed.first() != Some(*p)) {
                warnings.push(format!(
                    "{field}.resourceCollection: \"{path}\" is not supported (one managed/ collection per relationship)"
                ));
            }
            managed.first().map(|p| p.to_string())
        }
        _ => None,
    }
}

fn policies_named(decl: &Map<String, Value>, id: &str) -> bool {
    decl.get("policies")
        .and_then(Value::as_array)
        .is_some_and(|list| {
            list.iter()
                .any(|p| p.get("policyId").and_then(Value::as_str) == Some(id))
        })
}

/// Wren's order: the schema's `required`, `not-empty` (a type list without
/// `null`, or `minLength` > 0), `minimum-length` and `regexpMatches` for
/// strings, `valid-type`, then the declared `policies`.
fn policies(
    decl: &Map<String, Value>,
    property: &Property,
    types: &[String],
    field: &str,
) -> Result<Vec<Policy>, SchemaError> {
    let mut out = Vec::new();
    if property.required {
        out.push(Policy::required());
    }
    let min_length = match decl.get("minLength") {
        None => None,
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.trim().parse().ok(),
        Some(_) => None,
    };
    if decl.contains_key("minLength") && min_length.is_none() {
        return Err(schema_error(
            format!("{field}.minLength"),
            "expected a whole number",
        ));
    }
    let type_list = matches!(decl.get("type"), Some(Value::Array(_)));
    if (type_list && !types.iter().any(|t| t == "null")) || min_length.is_some_and(|m| m > 0) {
        out.push(Policy::not_empty());
    }
    if types.iter().any(|t| t == "string") {
        if let Some(length) = min_length {
            out.push(Policy::minimum_length(length));
        }
        if let Some(pattern) = decl.get("pattern").and_then(Value::as_str) {
            out.push(
                Policy::pattern(pattern)
                    .map_err(|m| schema_error(format!("{field}.pattern"), m))?,
            );
        }
    }
    if property.kind != PropertyKind::Relationship {
        out.push(Policy::valid_type(types));
    }
    let declared = match decl.get("policies") {
        None => &Vec::new(),
        Some(Value::Array(list)) if list.len() <= 64 => list,
        Some(_) => {
            return Err(schema_error(
                format!("{field}.policies"),
                "expected a list of at most 64 {policyId, params}",
            ));
        }
    };
    for (index, entry) in declared.iter().enumerate() {
        let at = format!("{field}.policies[{index}]");
        let id = entry
            .get("policyId")
            .and_then(Value::as_str)
            .ok_or_else(|| schema_error(format!("{at}.policyId"), "expected a string"))?;
        let params = entry.get("params").cloned().unwrap_or(Value::Null);
        let policy = Policy::from_decl(id, &params)
            .map_err(|m| schema_error(format!("{at}.policyId"), m))?;
        out.push(policy);
    }
    Ok(out)
}

pub(super) fn parse_kind(kind: &str) -> Option<PropertyKind> {
    Some(match kind {
        "string" => PropertyKind::String,
        "number" => PropertyKind::Number,
        "integer" => PropertyKind::Integer,
        "boolean" => PropertyKind::Boolean,
        "object" => PropertyKind::Object,
        "array" => PropertyKind::Array,
        "relationship" => PropertyKind::Relationship,
        "null" => PropertyKind::String,
        _ => return None,
    })
}
