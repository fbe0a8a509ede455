//! PATCH paths (RFC 7644 §3.5.2): `attr`, `attr.sub`, `urn:…:attr`,
//! `attr[filter]` and `attr[filter].sub`, resolved against a resource type,
//! and value filters evaluated on the elements of a multi-valued attribute.

use idm_proto::filter::{self, AttrPath, CompareOp, Filter};
use serde_json::Value;

use super::error::ScimError;
use super::normalize::split_urn;
use super::schema::{Attribute, Mutability, ResourceType, Schema};

/// A resolved PATCH path.
#[derive(Debug)]
pub enum PatchPath<'a> {
    /// An extension's URN alone: its whole object.
    Extension(&'a Schema),
    Attribute(AttributePath<'a>),
}

#[derive(Debug)]
pub struct AttributePath<'a> {
    /// `None` for core and common attributes.
    pub extension: Option<&'a Schema>,
    pub attribute: &'a Attribute,
    /// `emails[type eq "work"]`: which elements.
    pub filter: Option<Filter>,
    /// `name.givenName` or `emails[…].value`.
    pub sub: Option<&'a Attribute>,
}

impl PatchPath<'_> {
    pub fn is_read_only(&self) -> bool {
        match self {
            PatchPath::Extension(_) => false,
            PatchPath::Attribute(path) => {
                path.attribute.is_read_only() || path.sub.is_some_and(Attribute::is_read_only)
            }
        }
    }

    /// Set once, never changed (a member's `value`): a `replace` of it is refused.
    pub fn is_immutable(&self) -> bool {
        match self {
            PatchPath::Extension(_) => false,
            PatchPath::Attribute(path) => {
                path.sub.unwrap_or(path.attribute).mutability == Mutability::Immutable
            }
        }
    }
}

pub fn parse<'a>(resource_type: &'a ResourceType, text: &str) -> Result<PatchPath<'a>, ScimError> {
    let text = text.trim();
    let invalid = |why: &str| ScimError::invalid_path(format!("path \"{text}\": {why}"));
    let (head, filter, tail) = match text.find('[') {
        None => (text, None, None),
        Some(open) => {
            let close = closing_bracket(text, open).ok_or_else(|| invalid("no closing ]"))?;
            let inner = &text[open + 1..close];
            let filter = filter::parse(inner)
                .map_err(|e| ScimError::invalid_filter(format!("path \"{text}\": {e}")))?;
            let rest = &text[close + 1..];
            let tail = match rest {
                "" => None,
                _ => Some(
                    rest.strip_prefix('.')
                        .filter(|s| !s.is_empty())
                        .ok_or_else(|| invalid("only .subAttribute may follow ]"))?,
                ),
            };
            (&text[..open], Some(filter), tail)
        }
    };
    let (schema_urn, name) = if head.starts_with(super::urn::PREFIX) {
        if let Some(extension) = resource_type.extension(head) {
            if filter.is_some() {
                return Err(invalid("a schema cannot be filtered"));
            }
            return Ok(PatchPath::Extension(extension));
        }
        let (urn, name) = split_urn(resource_type, head)
            .ok_or_else(|| invalid("the schema is not one of this resource type's"))?;
        (Some(urn), name)
    } else {
        (None, head)
    };
    let (name, dotted_sub) = match name.split_once('.') {
        Some((attr, sub)) => (attr, Some(sub)),
        None => (name, None),
    };
    if dotted_sub.is_some() && filter.is_some() {
        return Err(invalid("write attr[filter].sub, not attr.sub[filter]"));
    }
    let located = resource_type
        .attribute(schema_urn, name)
        .ok_or_else(|| invalid("no such attribute"))?;
    let attribute = located.attribute;
    if filter.is_some() && !attribute.multi_valued {
        return Err(invalid("only multi-valued attributes take a filter"));
    }
    let sub =
        match dotted_sub.or(tail) {
            None => None,
            Some(sub) => Some(attribute.sub(sub).ok_or_else(|| {
                invalid(&format!("{} has no sub-attribute {sub}", attribute.name))
            })?),
        };
    if let Some(filter) = &filter {
        check_filter(attribute, filter).map_err(|why| invalid(&why))?;
    }
    Ok(PatchPath::Attribute(AttributePath {
        extension: located.extension,
        attribute,
        filter,
        sub,
    }))
}

/// The `]` that closes the `[` at `open`, skipping quoted strings.
fn closing_bracket(text: &str, open: usize) -> Option<usize> {
    let mut in_string = false;
    let mut escaped = false;
    for (index, c) in text[open + 1..].char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if in_string => escaped = true,
            '"' => in_string = !in_string,
            ']' if !in_string => return Some(open + 1 + index),
            _ => {}
        }
    }
    None
}

/// A value filter names sub-attributes of the attribute it filters.
fn check_filter(attribute: &Attribute, filter: &Filter) -> Result<(), String> {
    let mut unknown = None;
    let mut filter = filter.clone();
    filter.walk_attrs_mut(&mut |path: &mut AttrPath| {
        if attribute.sub(&path.attr).is_none() && unknown.is_none() {
            unknown = Some(path.attr.clone());
        }
    });
    match unknown {
        Some(name) => Err(format!("{} has no sub-attribute {name}", attribute.name)),
        None => Ok(()),
    }
}

/// Whether one element of a multi-valued attribute matches a value filter.
pub fn matches(attribute: &Attribute, filter: &Filter, element: &Value) -> bool {
    match filter {
        Filter::And(operands) => operands.iter().all(|f| matches(attribute, f, element)),
        Filter::Or(operands) => operands.iter().any(|f| matches(attribute, f, element)),
        Filter::Not(inner) => !matches(attribute, inner, element),
        Filter::Present(path) => {
            sub_value(attribute, path, element).is_some_and(|(value, _)| !is_empty(value))
        }
        Filter::Compare(path, op, expected) => match sub_value(attribute, path, element) {
            Some((actual, sub)) => compare(Some(sub), actual, *op, &expected.to_json()),
            None => *op == CompareOp::Ne,
        },
        Filter::ValuePath(..) => false,
    }
}

fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(items) => items.is_empty(),
        _ => false,
    }
}

fn sub_value<'v, 'a>(
    attribute: &'a Attribute,
    path: &AttrPath,
    element: &'v Value,
) -> Option<(&'v Value, &'a Attribute)> {
    let sub = attribute.sub(&path.attr)?;
    let value = element.as_object()?.get(&sub.name)?;
    Some((value, sub))
}

/// Compares a stored value with a filter literal as RFC 7644 §3.4.2.2 says.
pub fn compare(sub: Option<&Attribute>, actual: &Value, op: CompareOp, expected: &Value) -> bool {
    let case_exact = sub.is_none_or(|s| s.case_exact);
    match (actual, expected) {
        (Value::String(a), Value::String(e)) => {
            let (a, e) = if case_exact {
                (a.clone(), e.clone())
            } else {
                (a.to_lowercase(), e.to_lowercase())
            };
            match op {
                CompareOp::Eq => a == e,
                CompareOp::Ne => a != e,
                CompareOp::Co => a.contains(&e),
                CompareOp::Sw => a.starts_with(&e),
                CompareOp::Ew => a.ends_with(&e),
                CompareOp::Gt => a > e,
                CompareOp::Ge => a >= e,
                CompareOp::Lt => a < e,
                CompareOp::Le => a <= e,
            }
        }
        (Value::Number(a), Value::Number(e)) => {
            let (a, e) = (
                a.as_f64().unwrap_or(f64::NAN),
                e.as_f64().unwrap_or(f64::NAN),
            );
            match op {
                CompareOp::Eq => a == e,
                CompareOp::Ne => a != e,
                CompareOp::Gt => a > e,
                CompareOp::Ge => a >= e,
                CompareOp::Lt => a < e,
                CompareOp::Le => a <= e,
                _ => false,
            }
        }
        (Value::Bool(a), Value::Bool(e)) => match op {
            CompareOp::Eq => a == e,
            CompareOp::Ne => a != e,
            _ => false,
        },
        // Different types are never equal, and have no order.
        _ => op == CompareOp::Ne,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scim::schema::Registry;
    use serde_json::json;

    #[test]
    fn paths_resolve_with_urns_filters_and_sub_attributes() {
        let registry = Registry::builtin().unwrap();
        let user = &registry.user;
        let PatchPath::Attribute(path) = parse(user, "emails[type eq \"work\"].value").unwrap()
        else {
            panic!("an attribute path");
        };
        assert_eq!(path.attribute.name, "emails");
        assert_eq!(path.sub.unwrap().name, "value");
        let filter = path.filter.unwrap();
        assert!(matches(
            path.attribute,
            &filter,
            &json!({"type": "Work", "value": "a"})
        ));
        assert!(!matches(path.attribute, &filter, &json!({"type": "home"})));

        let PatchPath::Attribute(path) = parse(
            user,
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value",
        )
        .unwrap() else {
            panic!("an attribute path");
        };
        assert!(path.extension.is_some());
        assert_eq!(
            (
                path.attribute.name.as_str(),
                path.sub.unwrap().name.as_str()
            ),
            ("manager", "value")
        );
        assert!(matches!(
            parse(
                user,
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
            )
            .unwrap(),
            PatchPath::Extension(_)
        ));
        assert!(parse(user, "NAME.FamilyName").is_ok());
        assert!(parse(user, "members[value eq \"x\"]").is_err());
        assert!(parse(user, "emails[kind eq \"x\"]").is_err());
        assert!(parse(user, "emails[type eq \"]\"").is_err());
        assert!(parse(user, "userName[value eq \"x\"]").is_err());
        assert!(parse(user, "id").unwrap().is_read_only());
    }
}
