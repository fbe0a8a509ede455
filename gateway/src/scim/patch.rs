//! PATCH (RFC 7644 §3.5.2) on a resource in canonical form. The operations
//! apply to a copy in order; the caller writes the result only if every one of
//! them succeeded, so a PATCH is all or nothing.
//!
//! Beyond the RFC, what real clients send is accepted: a path-less `add` or
//! `replace` whose keys are paths (`"name.givenName"`, `"urn:…:User:department"`,
//! `"emails[type eq \"work\"].value"`), `remove` of members with a value array,
//! a `replace` through a filter that matches nothing (it creates the element,
//! as Entra ID expects), and `null` as "no value".

use serde_json::{Map, Value};

use super::error::ScimError;
use super::messages::{PatchOp, PatchOperation};
use super::normalize::{self, Mode};
use super::path::{self, AttributePath, PatchPath};
use super::schema::{Attribute, ResourceType};

pub fn apply(
    resource_type: &ResourceType,
    resource: &mut Map<String, Value>,
    operations: &[PatchOperation],
) -> Result<(), ScimError> {
    for (index, operation) in operations.iter().enumerate() {
        apply_one(resource_type, resource, operation).map_err(|e| {
            ScimError::new(
                e.status,
                e.scim_type,
                format!("Operations[{index}]: {}", e.detail),
            )
        })?;
    }
    normalize::required_present(resource_type, resource)
}

fn apply_one(
    resource_type: &ResourceType,
    resource: &mut Map<String, Value>,
    operation: &PatchOperation,
) -> Result<(), ScimError> {
    let value = operation.value.clone().unwrap_or(Value::Null);
    let Some(path_text) = operation.path.as_deref().filter(|p| !p.trim().is_empty()) else {
        if operation.op == PatchOp::Remove {
            return Err(ScimError::no_target("remove needs a path"));
        }
        let Value::Object(fields) = value else {
            return Err(ScimError::invalid_value(
                "without a path, the value must be an object of attributes",
            ));
        };
        for (key, value) in fields {
            if ["schemas", "id", "meta"]
                .iter()
                .any(|k| key.eq_ignore_ascii_case(k))
            {
                continue;
            }
            match path::parse(resource_type, &key) {
                Ok(path) if path.is_read_only() => continue,
                Ok(path) => apply_at(resource, &path, operation.op, value)?,
                // Keys no schema declares are ignored, as in a POST body.
                Err(_) => tracing::debug!(key, "ignoring an unknown attribute in a PATCH value"),
            }
        }
        return Ok(());
    };
    let path = path::parse(resource_type, path_text)?;
    if path.is_read_only() {
        return Err(ScimError::mutability(format!("{path_text} is read-only")));
    }
    if path.is_immutable() && operation.op == PatchOp::Replace {
        return Err(ScimError::mutability(format!(
            "{path_text} is immutable: remove and add it instead"
        )));
    }
    apply_at(resource, &path, operation.op, value)
}

fn apply_at(
    resource: &mut Map<String, Value>,
    path: &PatchPath<'_>,
    op: PatchOp,
    value: Value,
) -> Result<(), ScimError> {
    match path {
        PatchPath::Extension(extension) => {
            if op == PatchOp::Remove {
                resource.remove(&extension.id);
                return Ok(());
            }
            let Value::Object(fields) = value else {
                return Err(ScimError::invalid_value(format!(
                    "{}: expected an object of its attributes",
                    extension.id
                )));
            };
            for (key, value) in fields {
                let Some(attribute) = extension
                    .attributes
                    .iter()
                    .find(|a| a.name.eq_ignore_ascii_case(&key))
                else {
                    continue;
                };
                let path = PatchPath::Attribute(AttributePath {
                    extension: Some(extension),
                    attribute,
                    filter: None,
                    sub: None,
                });
                apply_at(resource, &path, op, value)?;
            }
            Ok(())
        }
        PatchPath::Attribute(path) => {
            let holder = match path.extension {
                None => &mut *resource,
                Some(extension) => {
                    let slot = resource
                        .entry(extension.id.clone())
                        .or_insert_with(|| Value::Object(Map::new()));
                    if !slot.is_object() {
                        *slot = Value::Object(Map::new());
                    }
                    match slot.as_object_mut() {
                        Some(map) => map,
                        None => return Err(ScimError::internal("extension is not an object")),
                    }
                }
            };
            let result = apply_attribute(holder, path, op, value);
            if let Some(extension) = path.extension
                && resource
                    .get(&extension.id)
                    .and_then(Value::as_object)
                    .is_some_and(Map::is_empty)
            {
                resource.remove(&extension.id);
            }
            result
        }
    }
}

fn apply_attribute(
    holder: &mut Map<String, Value>,
    path: &AttributePath<'_>,
    op: PatchOp,
    value: Value,
) -> Result<(), ScimError> {
    let attribute = path.attribute;
    let name = attribute.name.clone();
    match (&path.filter, path.sub) {
        (None, None) => whole(holder, attribute, op, value),
        (None, Some(sub)) if !attribute.multi_valued => {
            let mut object = holder
                .remove(&name)
                .and_then(|v| v.as_object().cloned())
                .unwrap_or_default();
            set_sub(
                &mut object,
                sub,
                op,
                &value,
                &format!("{name}.{}", sub.name),
            )?;
            if !object.is_empty() {
                holder.insert(name, Value::Object(object));
            }
            Ok(())
        }
        (filter, sub) => {
            let mut elements = match holder.remove(&name) {
                Some(Value::Array(items)) => items,
                Some(other) => vec![other],
                None => Vec::new(),
            };
            let selected: Vec<usize> = elements
                .iter()
                .enumerate()
                .filter(|(_, e)| {
                    filter
                        .as_ref()
                        .is_none_or(|f| path::matches(attribute, f, e))
                })
                .map(|(i, _)| i)
                .collect();
            let outcome = if selected.is_empty() && op != PatchOp::Remove {
                create_selected(&mut elements, path, &value)
            } else {
                edit_selected(&mut elements, &selected, path, op, &value)
            };
            elements.retain(|e| e.as_object().is_none_or(|m| !m.is_empty()));
            if !elements.is_empty() {
                holder.insert(name, Value::Array(elements));
            }
            let _ = sub;
            outcome
        }
    }
}

/// `add`, `replace` or `remove` of a whole attribute.
fn whole(
    holder: &mut Map<String, Value>,
    attribute: &Attribute,
    op: PatchOp,
    value: Value,
) -> Result<(), ScimError> {
    let name = attribute.name.clone();
    if op == PatchOp::Remove {
        match (attribute.multi_valued, &value, holder.get_mut(&name)) {
            // Entra ID: {"op": "remove", "path": "members", "value": [{"value": "id"}]}.
            (true, Value::Array(_) | Value::Object(_), Some(Value::Array(existing))) => {
                let doomed = normalize::value(attribute, &value, Mode::Write, &name)?
                    .and_then(|v| v.as_array().cloned())
                    .unwrap_or_default();
                existing.retain(|element| !doomed.iter().any(|d| same_element(d, element)));
                if existing.is_empty() {
                    holder.remove(&name);
                }
            }
            _ => {
                holder.remove(&name);
            }
        }
        return Ok(());
    }
    let Some(value) = normalize::value(attribute, &value, Mode::Write, &name)? else {
        if op == PatchOp::Replace {
            holder.remove(&name);
        }
        return Ok(());
    };
    match (op, value, holder.get_mut(&name)) {
        (PatchOp::Add, Value::Array(new), Some(Value::Array(existing))) => {
            for element in new {
                if is_primary(&element) {
                    existing.iter_mut().for_each(clear_primary);
                }
                if !existing.contains(&element) {
                    existing.push(element);
                }
            }
        }
        (_, Value::Object(new), Some(Value::Object(existing))) if !attribute.multi_valued => {
            existing.extend(new);
        }
        (_, value, _) => {
            holder.insert(name, value);
        }
    }
    Ok(())
}

/// Elements of a multi-valued attribute are the same if their `value`s are,
/// or, without one, if they are equal.
fn same_element(a: &Value, b: &Value) -> bool {
    match (a.get("value"), b.get("value")) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

fn is_primary(element: &Value) -> bool {
    element.get("primary") == Some(&Value::Bool(true))
}

fn clear_primary(element: &mut Value) {
    if let Some(map) = element.as_object_mut() {
        map.remove("primary");
    }
}

fn set_sub(
    object: &mut Map<String, Value>,
    sub: &Attribute,
    op: PatchOp,
    value: &Value,
    path: &str,
) -> Result<(), ScimError> {
    if op == PatchOp::Remove {
        object.remove(&sub.name);
        return Ok(());
    }
    match normalize::single(sub, value, Mode::Write, path)? {
        Some(value) => object.insert(sub.name.clone(), value),
        None => object.remove(&sub.name),
    };
    Ok(())
}

fn edit_selected(
    elements: &mut Vec<Value>,
    selected: &[usize],
    path: &AttributePath<'_>,
    op: PatchOp,
    value: &Value,
) -> Result<(), ScimError> {
    let attribute = path.attribute;
    if let Some(sub) = path.sub {
        for &index in selected {
            if let Some(object) = elements[index].as_object_mut() {
                set_sub(
                    object,
                    sub,
                    op,
                    value,
                    &format!("{}.{}", attribute.name, sub.name),
                )?;
            }
        }
        return Ok(());
    }
    if op == PatchOp::Remove {
        let mut index = 0;
        elements.retain(|_| {
            index += 1;
            !selected.contains(&(index - 1))
        });
        return Ok(());
    }
    let replacement = normalize::single(attribute, value, Mode::Write, &attribute.name)?;
    for &index in selected.iter().rev() {
        match (&replacement, op) {
            (Some(Value::Object(new)), PatchOp::Add) => {
                if let Some(existing) = elements[index].as_object_mut() {
                    existing.extend(new.clone());
                }
            }
            (Some(new), _) => elements[index] = new.clone(),
            (None, _) => {
                elements.remove(index);
            }
        }
    }
    Ok(())
}

/// A filter that matched nothing: when it only says `sub eq "literal"` (and
/// `and`s of that), the element it describes is created with the value.
fn create_selected(
    elements: &mut Vec<Value>,
    path: &AttributePath<'_>,
    value: &Value,
) -> Result<(), ScimError> {
    let attribute = path.attribute;
    let Some(filter) = &path.filter else {
        // `emails.value` on no emails at all: one element with that value.
        let mut element = Map::new();
        if let Some(sub) = path.sub {
            set_sub(&mut element, sub, PatchOp::Add, value, &attribute.name)?;
        }
        if !element.is_empty() {
            elements.push(Value::Object(element));
        }
        return Ok(());
    };
    let mut element = Map::new();
    if !equalities(filter, &mut element) {
        return Err(ScimError::no_target(format!(
            "no value of {} matches [{filter}]",
            attribute.name
        )));
    }
    match path.sub {
        Some(sub) => set_sub(&mut element, sub, PatchOp::Add, value, &attribute.name)?,
        None => {
            if let Some(Value::Object(fields)) =
                normalize::single(attribute, value, Mode::Write, &attribute.name)?
            {
                element.extend(fields);
            }
        }
    }
    let element = normalize::single(
        attribute,
        &Value::Object(element),
        Mode::Write,
        &attribute.name,
    )?;
    if let Some(element) = element {
        if is_primary(&element) {
            elements.iter_mut().for_each(clear_primary);
        }
        elements.push(element);
    }
    Ok(())
}

/// Collects `a eq "x" and b eq "y"` as fields; false for any other filter.
fn equalities(filter: &idm_proto::filter::Filter, into: &mut Map<String, Value>) -> bool {
    use idm_proto::filter::{CompareOp, Filter};
    match filter {
        Filter::And(operands) => operands.iter().all(|f| equalities(f, into)),
        Filter::Compare(path, CompareOp::Eq, value) if path.sub_attr.is_none() => {
            into.insert(path.attr.clone(), value.to_json());
            true
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scim::schema::Registry;
    use serde_json::json;

    fn patched(resource: Value, operations: Value) -> Result<Value, ScimError> {
        let registry = Registry::builtin().unwrap();
        let operations: Vec<PatchOperation> = serde_json::from_value(operations).unwrap();
        let mut resource = resource.as_object().unwrap().clone();
        apply(&registry.user, &mut resource, &operations)?;
        Ok(Value::Object(resource))
    }

    fn barbara() -> Value {
        json!({
            "userName": "bjensen",
            "name": {"givenName": "Barbara", "familyName": "Jensen"},
            "emails": [{"value": "bj@example.com", "type": "work", "primary": true},
                       {"value": "babs@example.org", "type": "home"}]
        })
    }

    #[test]
    fn value_paths_replace_the_matching_element_only() {
        let out = patched(
            barbara(),
            json!([{"op": "replace", "path": "emails[type eq \"work\"].value", "value": "new@example.com"}]),
        )
        .unwrap();
        assert_eq!(out["emails"][0]["value"], "new@example.com");
        assert_eq!(out["emails"][1]["value"], "babs@example.org");
    }

    #[test]
    fn entra_path_less_replace_with_dotted_and_urn_keys() {
        let out = patched(
            barbara(),
            json!([{"op": "Replace", "value": {
                "name.familyName": "Jensen-Smith",
                "active": "False",
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department": "Sales",
                "phoneNumbers[type eq \"work\"].value": "+1 555 0100",
                "id": "ignored", "meta": {"version": "W/\"9\""}
            }}]),
        )
        .unwrap();
        assert_eq!(
            out["name"],
            json!({"givenName": "Barbara", "familyName": "Jensen-Smith"})
        );
        assert_eq!(out["active"], false);
        assert_eq!(
            out["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"]["department"],
            "Sales"
        );
        assert_eq!(
            out["phoneNumbers"],
            json!([{"type": "work", "value": "+1 555 0100"}])
        );
        assert!(out.get("id").is_none());
    }

    #[test]
    fn remove_with_a_value_array_and_by_filter() {
        let out = patched(
            barbara(),
            json!([{"op": "remove", "path": "emails", "value": [{"value": "babs@example.org"}]}]),
        )
        .unwrap();
        assert_eq!(out["emails"].as_array().unwrap().len(), 1);
        let out = patched(
            barbara(),
            json!([{"op": "remove", "path": "emails[type eq \"work\"]"},
                   {"op": "remove", "path": "name.givenName"}]),
        )
        .unwrap();
        assert_eq!(
            out["emails"],
            json!([{"value": "babs@example.org", "type": "home"}])
        );
        assert_eq!(out["name"], json!({"familyName": "Jensen"}));
    }

    #[test]
    fn add_appends_and_keeps_one_primary() {
        let out = patched(
            barbara(),
            json!([{"op": "add", "path": "emails", "value": [{"value": "c@example.com", "type": "other", "primary": "true"}]}]),
        )
        .unwrap();
        let emails = out["emails"].as_array().unwrap();
        assert_eq!(emails.len(), 3);
        assert_eq!(emails.iter().filter(|e| e["primary"] == true).count(), 1);
    }

    #[test]
    fn bad_operations_fail_the_whole_patch_with_the_right_scim_type() {
        let cases = [
            (json!([{"op": "remove"}]), "noTarget"),
            (
                json!([{"op": "replace", "path": "nosuch", "value": 1}]),
                "invalidPath",
            ),
            (
                json!([{"op": "replace", "path": "id", "value": "x"}]),
                "mutability",
            ),
            (
                json!([{"op": "replace", "path": "active", "value": "maybe"}]),
                "invalidValue",
            ),
            (
                json!([{"op": "remove", "path": "userName"}]),
                "invalidValue",
            ),
            (
                json!([{"op": "replace", "path": "emails[value co \"zzz\"].type", "value": "work"}]),
                "noTarget",
            ),
        ];
        for (operations, scim_type) in cases {
            let error = patched(barbara(), operations.clone()).unwrap_err();
            assert_eq!(
                error.scim_type.map(|t| t.as_str()),
                Some(scim_type),
                "{operations}: {error}"
            );
        }
    }

    #[test]
    fn an_immutable_member_value_is_not_replaced() {
        let registry = Registry::builtin().unwrap();
        let mut group = json!({"displayName": "g", "members": [{"value": "u1"}]})
            .as_object()
            .unwrap()
            .clone();
        let operations: Vec<PatchOperation> = serde_json::from_value(json!([
            {"op": "replace", "path": "members[value eq \"u1\"].value", "value": "u2"}
        ]))
        .unwrap();
        let error = apply(&registry.group, &mut group, &operations).unwrap_err();
        assert_eq!(error.scim_type.map(|t| t.as_str()), Some("mutability"));
    }
}
