//! Loose input, canonical output. Real clients send attribute names in any
//! case, `"False"` for false, `null` for "no value", a lone object where an
//! array belongs, read-only attributes copied back from a GET, and schema URNs
//! nobody here knows. This module turns a body into the canonical form the rest
//! of the gateway works on: canonical attribute names, extension attributes
//! under their schema URN, no nulls, no empty arrays, values of the declared
//! type, and nothing read-only.

use serde_json::{Map, Number, Value};

use super::error::ScimError;
use super::schema::{Attribute, AttributeType, ResourceType};
use super::urn;

/// Whether values come from a client (type errors are the client's, read-only
/// attributes are ignored) or from stored data (a value of the wrong shape is
/// left out rather than failing the read).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Write,
    Read,
}

/// A resource body in canonical form. `id`, `meta` and `schemas` are not kept:
/// the server owns them.
pub fn resource(
    resource_type: &ResourceType,
    body: &Value,
    mode: Mode,
) -> Result<Map<String, Value>, ScimError> {
    let Value::Object(fields) = body else {
        return Err(ScimError::invalid_syntax(
            "the body must be a JSON object (a SCIM resource)",
        ));
    };
    let mut out = Map::new();
    for (key, value) in fields {
        if key.eq_ignore_ascii_case("schemas") {
            continue;
        }
        if let Some(extension) = resource_type.extension(key) {
            let Value::Object(inner) = value else {
                if value.is_null() {
                    continue;
                }
                return Err(ScimError::invalid_value(format!(
                    "{}: an extension's attributes must be an object",
                    extension.id
                )));
            };
            let mut attributes = Map::new();
            for (name, value) in inner {
                let Some(located) = resource_type.attribute(Some(&extension.id), name) else {
                    continue;
                };
                put(&mut attributes, located.attribute, value, mode, name)?;
            }
            if !attributes.is_empty() {
                out.insert(extension.id.clone(), Value::Object(attributes));
            }
            continue;
        }
        if key.starts_with(urn::PREFIX) {
            // An unknown extension, or a core attribute written with its URN.
            let Some((schema, name)) = split_urn(resource_type, key) else {
                tracing::debug!(key, "ignoring an attribute of an unknown schema");
                continue;
            };
            if let Some(located) = resource_type.attribute(Some(schema), name) {
                match located.extension {
                    Some(extension) => {
                        let slot = out
                            .entry(extension.id.clone())
                            .or_insert_with(|| Value::Object(Map::new()));
                        if let Value::Object(attributes) = slot {
                            put(attributes, located.attribute, value, mode, key)?;
                        }
                    }
                    None => put(&mut out, located.attribute, value, mode, key)?,
                }
            }
            continue;
        }
        match resource_type.attribute(None, key) {
            Some(located) => put(&mut out, located.attribute, value, mode, key)?,
            None => tracing::debug!(key, "ignoring an attribute no schema declares"),
        }
    }
    out.retain(|_, v| !matches!(v, Value::Object(m) if m.is_empty()));
    Ok(out)
}

/// Every required attribute of the core schema has a value (`userName`,
/// a group's `displayName`).
pub fn required_present(
    resource_type: &ResourceType,
    attributes: &Map<String, Value>,
) -> Result<(), ScimError> {
    match resource_type
        .core
        .attributes
        .iter()
        .find(|a| a.required && !attributes.contains_key(&a.name))
    {
        Some(missing) => Err(ScimError::invalid_value(format!(
            "{} is required",
            missing.name
        ))),
        None => Ok(()),
    }
}

/// Splits `urn:…:User:name` into the schema URN the type knows and the rest.
pub fn split_urn<'a>(resource_type: &ResourceType, key: &'a str) -> Option<(&'a str, &'a str)> {
    resource_type.schema_urns().find_map(|schema| {
        let prefix = key.get(..schema.len())?;
        let rest = key.get(schema.len()..)?;
        (prefix.eq_ignore_ascii_case(schema) && rest.starts_with(':')).then(|| (prefix, &rest[1..]))
    })
}

fn put(
    into: &mut Map<String, Value>,
    attribute: &Attribute,
    value: &Value,
    mode: Mode,
    path: &str,
) -> Result<(), ScimError> {
    if mode == Mode::Write && attribute.is_read_only() {
        return Ok(());
    }
    match self::value(attribute, value, mode, path)? {
        Some(value) => into.insert(attribute.name.clone(), value),
        None => into.remove(&attribute.name),
    };
    Ok(())
}

/// One attribute's value in canonical form; `None` when it holds no value.
pub fn value(
    attribute: &Attribute,
    value: &Value,
    mode: Mode,
    path: &str,
) -> Result<Option<Value>, ScimError> {
    if !attribute.multi_valued {
        return single(attribute, value, mode, path);
    }
    let items: Vec<&Value> = match value {
        Value::Null => return Ok(None),
        Value::Array(items) => items.iter().collect(),
        one => vec![one],
    };
    let mut out = Vec::with_capacity(items.len());
    for (index, item) in items.into_iter().enumerate() {
        if let Some(item) = single(attribute, item, mode, &format!("{path}[{index}]"))?
            && !out.contains(&item)
        {
            out.push(item);
        }
    }
    Ok((!out.is_empty()).then_some(Value::Array(out)))
}

/// One value of an attribute (one element of a multi-valued one).
pub fn single(
    attribute: &Attribute,
    value: &Value,
    mode: Mode,
    path: &str,
) -> Result<Option<Value>, ScimError> {
    if value.is_null() {
        return Ok(None);
    }
    match coerce(attribute, value, mode, path) {
        Ok(value) => Ok(value),
        Err(_) if mode == Mode::Read => Ok(None),
        Err(error) => Err(error),
    }
}

fn coerce(
    attribute: &Attribute,
    value: &Value,
    mode: Mode,
    path: &str,
) -> Result<Option<Value>, ScimError> {
    let wrong = |expected: &str| {
        ScimError::invalid_value(format!(
            "{path}: expected {expected}, got {}",
            idm_proto::json::describe(value)
        ))
    };
    Ok(Some(match attribute.kind {
        AttributeType::Complex => {
            // Entra ID sends a manager as its bare id: a lone value is the `value`.
            if !matches!(value, Value::Object(_) | Value::Array(_))
                && let Some(sub) = attribute.sub("value")
            {
                let mut fields = Map::new();
                fields.insert(sub.name.clone(), value.clone());
                return single(attribute, &Value::Object(fields), mode, path);
            }
            let Value::Object(fields) = value else {
                return Err(wrong("an object"));
            };
            let mut out = Map::new();
            for (name, inner) in fields {
                let Some(sub) = attribute.sub(name) else {
                    continue;
                };
                if mode == Mode::Write && sub.is_read_only() {
                    continue;
                }
                if let Some(inner) = single(sub, inner, mode, &format!("{path}.{}", sub.name))? {
                    out.insert(sub.name.clone(), inner);
                }
            }
            if out.is_empty() {
                return Ok(None);
            }
            Value::Object(out)
        }
        AttributeType::Boolean => match value {
            Value::Bool(b) => Value::Bool(*b),
            Value::String(s) if s.eq_ignore_ascii_case("true") => Value::Bool(true),
            Value::String(s) if s.eq_ignore_ascii_case("false") => Value::Bool(false),
            _ => return Err(wrong("a boolean")),
        },
        AttributeType::String | AttributeType::Reference | AttributeType::Binary => match value {
            Value::String(s) => Value::String(s.clone()),
            Value::Number(n) => Value::String(n.to_string()),
            Value::Bool(b) => Value::String(b.to_string()),
            _ => return Err(wrong("a string")),
        },
        AttributeType::Integer => match value {
            Value::Number(n) if n.is_i64() || n.is_u64() => Value::Number(n.clone()),
            Value::String(s) => s
                .trim()
                .parse::<i64>()
                .map(|n| Value::Number(n.into()))
                .map_err(|_| wrong("an integer"))?,
            _ => return Err(wrong("an integer")),
        },
        AttributeType::Decimal => match value {
            Value::Number(n) => Value::Number(n.clone()),
            Value::String(s) => s
                .trim()
                .parse::<f64>()
                .ok()
                .and_then(Number::from_f64)
                .map(Value::Number)
                .ok_or_else(|| wrong("a decimal number"))?,
            _ => return Err(wrong("a decimal number")),
        },
        AttributeType::DateTime => match value {
            Value::String(s)
                if time::OffsetDateTime::parse(
                    s,
                    &time::format_description::well_known::Rfc3339,
                )
                .is_ok() =>
            {
                Value::String(s.clone())
            }
            _ => return Err(wrong("an RFC 3339 date-time")),
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scim::schema::Registry;
    use serde_json::json;

    #[test]
    fn sloppy_bodies_become_canonical() {
        let registry = Registry::builtin().unwrap();
        let body = json!({
            "schemas": [urn::USER, "urn:example:unknown"],
            "id": "client-chosen",
            "meta": {"resourceType": "User"},
            "USERNAME": "bjensen",
            "Active": "False",
            "name": {"GivenName": "Barbara", "familyName": null},
            "emails": {"value": "b@example.com", "type": "work"},
            "phoneNumbers": [],
            "groups": [{"value": "g1"}],
            "nickName": null,
            "urn:example:unknown": {"shoeSize": 9},
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"EmployeeNumber": 701984},
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department": "Tour Operations",
            "unheardOf": 1
        });
        let canonical = resource(&registry.user, &body, Mode::Write).unwrap();
        assert_eq!(
            Value::Object(canonical),
            json!({
                "userName": "bjensen",
                "active": false,
                "name": {"givenName": "Barbara"},
                "emails": [{"value": "b@example.com", "type": "work"}],
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {
                    "employeeNumber": "701984",
                    "department": "Tour Operations"
                }
            })
        );
    }

    #[test]
    fn a_value_of_the_wrong_type_names_the_attribute() {
        let registry = Registry::builtin().unwrap();
        let error = resource(
            &registry.user,
            &json!({"userName": "x", "emails": [{"value": "a"}, {"primary": "perhaps"}]}),
            Mode::Write,
        )
        .unwrap_err();
        assert_eq!(error.status, 400);
        assert!(
            error.detail.contains("emails[1].primary"),
            "{}",
            error.detail
        );
        let lenient = resource(
            &registry.user,
            &json!({"userName": "x", "active": {"nested": 1}}),
            Mode::Read,
        )
        .unwrap();
        assert!(!lenient.contains_key("active"));
    }
}
