//! Which attributes a response carries (RFC 7643 §2.4 `returned`, RFC 7644
//! §3.9 `attributes` / `excludedAttributes`). Applied to every resource the
//! gateway sends, whatever the method.

use serde_json::{Map, Value};

use super::normalize::split_urn;
use super::schema::{Attribute, ResourceType, Returned};

/// `attributes` and `excludedAttributes`, resolved for one resource type.
/// Names no schema of the type declares are ignored (a root search names
/// attributes of several types).
#[derive(Debug, Default)]
pub struct Projection {
    attributes: Vec<Selector>,
    excluded: Vec<Selector>,
}

#[derive(Debug, PartialEq)]
struct Selector {
    /// Extension URN, `None` for the core schema.
    extension: Option<String>,
    /// Canonical attribute name; `None` selects the whole extension.
    attribute: Option<String>,
    sub: Option<String>,
}

impl Projection {
    pub fn new(resource_type: &ResourceType, attributes: &[String], excluded: &[String]) -> Self {
        let resolve = |names: &[String]| {
            names
                .iter()
                .filter_map(|n| selector(resource_type, n))
                .collect()
        };
        Projection {
            attributes: resolve(attributes),
            excluded: resolve(excluded),
        }
    }

    /// Projects a whole resource (with `schemas`, `id` and `meta`) in place,
    /// keeping the order of what stays.
    pub fn apply(&self, resource_type: &ResourceType, resource: &mut Map<String, Value>) {
        let mut out = Map::new();
        for (key, value) in std::mem::take(resource) {
            if key == "schemas" {
                out.insert(key, value);
                continue;
            }
            if let Some(extension) = resource_type.extension(&key) {
                let Value::Object(inner) = value else {
                    continue;
                };
                let mut kept = Map::new();
                for (name, value) in inner {
                    if let Some(located) = resource_type.attribute(Some(&extension.id), &name)
                        && let Some(value) =
                            self.keep(Some(&extension.id), located.attribute, value)
                    {
                        kept.insert(name, value);
                    }
                }
                if !kept.is_empty() {
                    out.insert(key, Value::Object(kept));
                }
                continue;
            }
            if let Some(located) = resource_type.attribute(None, &key)
                && let Some(value) = self.keep(None, located.attribute, value)
            {
                out.insert(key, value);
            }
        }
        let present: Vec<Value> = resource_type
            .schema_urns()
            .enumerate()
            .filter(|(i, urn)| *i == 0 || out.contains_key(*urn))
            .map(|(_, urn)| Value::String(urn.to_string()))
            .collect();
        out.insert("schemas".into(), Value::Array(present));
        *resource = out;
    }

    fn keep(&self, extension: Option<&str>, attribute: &Attribute, value: Value) -> Option<Value> {
        let on = |s: &&Selector| {
            s.extension.as_deref().map(str::to_ascii_lowercase)
                == extension.map(str::to_ascii_lowercase)
                && s.attribute.as_ref().is_none_or(|a| *a == attribute.name)
        };
        match attribute.returned {
            Returned::Never => return None,
            Returned::Always => return Some(value),
            _ => {}
        }
        if !self.attributes.is_empty() {
            let chosen: Vec<&Selector> = self.attributes.iter().filter(on).collect();
            if chosen.iter().any(|s| s.sub.is_none()) {
                return Some(value);
            }
            if chosen.is_empty() {
                return None;
            }
            let subs: Vec<&str> = chosen.iter().filter_map(|s| s.sub.as_deref()).collect();
            return only_subs(value, |name| subs.contains(&name));
        }
        if attribute.returned == Returned::Request {
            return None;
        }
        let excluded: Vec<&Selector> = self.excluded.iter().filter(on).collect();
        if excluded.iter().any(|s| s.sub.is_none()) {
            return None;
        }
        if excluded.is_empty() {
            return Some(value);
        }
        let subs: Vec<&str> = excluded.iter().filter_map(|s| s.sub.as_deref()).collect();
        only_subs(value, |name| !subs.contains(&name))
    }
}

/// A complex value (or each element of a multi-valued one) with only the
/// sub-attributes `keep` accepts.
fn only_subs(value: Value, keep: impl Fn(&str) -> bool) -> Option<Value> {
    let filter = |element: Value| -> Option<Value> {
        let Value::Object(fields) = element else {
            return Some(element);
        };
        let kept: Map<String, Value> = fields.into_iter().filter(|(k, _)| keep(k)).collect();
        (!kept.is_empty()).then_some(Value::Object(kept))
    };
    match value {
        Value::Array(items) => {
            let kept: Vec<Value> = items.into_iter().filter_map(filter).collect();
            (!kept.is_empty()).then_some(Value::Array(kept))
        }
        other => filter(other),
    }
}

fn selector(resource_type: &ResourceType, name: &str) -> Option<Selector> {
    let name = name.trim();
    if let Some(extension) = resource_type.extension(name) {
        return Some(Selector {
            extension: Some(extension.id.clone()),
            attribute: None,
            sub: None,
        });
    }
    let (urn, rest) = match split_urn(resource_type, name) {
        Some((urn, rest)) => (Some(urn), rest),
        None if name.starts_with(super::urn::PREFIX) => return None,
        None => (None, name),
    };
    let (attr, sub) = match rest.split_once('.') {
        Some((attr, sub)) => (attr, Some(sub)),
        None => (rest, None),
    };
    let located = resource_type.attribute(urn, attr)?;
    let sub = match sub {
        Some(sub) => Some(located.attribute.sub(sub)?.name.clone()),
        None => None,
    };
    Some(Selector {
        extension: located.extension.map(|e| e.id.clone()),
        attribute: Some(located.attribute.name.clone()),
        sub,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scim::schema::Registry;
    use crate::scim::urn;
    use serde_json::json;

    fn resource() -> Map<String, Value> {
        json!({
            "schemas": [urn::USER, urn::ENTERPRISE_USER],
            "id": "42",
            "userName": "bjensen",
            "password": "never shown",
            "name": {"givenName": "Barbara", "familyName": "Jensen"},
            "emails": [{"value": "bj@example.com", "type": "work"}],
            "meta": {"resourceType": "User"},
            urn::ENTERPRISE_USER: {"department": "Sales", "employeeNumber": "7"}
        })
        .as_object()
        .unwrap()
        .clone()
    }

    fn projected(attributes: &[&str], excluded: &[&str]) -> Value {
        let registry = Registry::builtin().unwrap();
        let own = |names: &[&str]| names.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let projection = Projection::new(&registry.user, &own(attributes), &own(excluded));
        let mut resource = resource();
        projection.apply(&registry.user, &mut resource);
        Value::Object(resource)
    }

    #[test]
    fn attributes_keep_what_is_asked_and_what_is_always_returned() {
        assert_eq!(
            projected(
                &[
                    "NAME.familyName",
                    "emails.value",
                    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department"
                ],
                &[]
            ),
            json!({
                "schemas": [urn::USER, urn::ENTERPRISE_USER],
                "id": "42",
                "name": {"familyName": "Jensen"},
                "emails": [{"value": "bj@example.com"}],
                urn::ENTERPRISE_USER: {"department": "Sales"}
            })
        );
    }

    #[test]
    fn excluded_attributes_go_but_id_stays_and_password_never_shows() {
        let out = projected(&[], &["id", "name", "emails.type", urn::ENTERPRISE_USER]);
        assert_eq!(
            out,
            json!({
                "schemas": [urn::USER],
                "id": "42",
                "userName": "bjensen",
                "emails": [{"value": "bj@example.com"}],
                "meta": {"resourceType": "User"}
            })
        );
    }
}
