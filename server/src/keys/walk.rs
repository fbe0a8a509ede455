//! Finding `{"$sealed": "…"}` values anywhere in a conf document, without
//! recursion (a document's depth is whatever its sender made it).

use serde_json::{Map, Value};

use super::SEALED_KEY;

/// Calls `reseal` with every sealed value in `body` (an object whose only
/// member is a `$sealed` string); where it returns a new value, that replaces
/// the old one. Returns how many were replaced.
pub fn reseal_values<E>(
    body: &mut Map<String, Value>,
    mut reseal: impl FnMut(&str) -> Result<Option<String>, E>,
) -> Result<u64, E> {
    let mut replaced = 0;
    let mut stack: Vec<&mut Value> = body.values_mut().collect();
    while let Some(value) = stack.pop() {
        match value {
            Value::Object(members) => {
                if let Some(Value::String(sealed)) = sealed_member(members) {
                    if let Some(new) = reseal(sealed)? {
                        *sealed = new;
                        replaced += 1;
                    }
                } else {
                    stack.extend(members.values_mut());
                }
            }
            Value::Array(items) => stack.extend(items.iter_mut()),
            _ => {}
        }
    }
    Ok(replaced)
}

fn sealed_member(members: &mut Map<String, Value>) -> Option<&mut Value> {
    if members.len() != 1 {
        return None;
    }
    members
        .get_mut(SEALED_KEY)
        .filter(|v| matches!(v, Value::String(_)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn sealed_values_are_found_at_any_depth_and_nothing_else_changes() {
        let mut body = json!({
            "bindPassword": { "$sealed": "a" },
            "nested": [{ "deep": { "x": [{ "$sealed": "b" }] } }],
            "notSealed": { "$sealed": "c", "other": 1 },
            "number": { "$sealed": 3 },
            "plain": "$sealed"
        })
        .as_object()
        .unwrap()
        .clone();
        let mut seen = Vec::new();
        let replaced = reseal_values::<()>(&mut body, |sealed| {
            seen.push(sealed.to_string());
            Ok((sealed == "a").then(|| "A".to_string()))
        })
        .unwrap();
        seen.sort();
        assert_eq!(seen, ["a", "b"]);
        assert_eq!(replaced, 1);
        assert_eq!(body["bindPassword"], json!({ "$sealed": "A" }));
        assert_eq!(body["nested"][0]["deep"]["x"][0], json!({ "$sealed": "b" }));
        assert_eq!(body["notSealed"], json!({ "$sealed": "c", "other": 1 }));
    }

    #[test]
    fn a_very_deep_document_does_not_overflow_the_stack() {
        let mut value = json!({ "$sealed": "x" });
        for _ in 0..10_000 {
            value = Value::Array(vec![value]);
        }
        let mut body = Map::new();
        body.insert("deep".into(), value);
        let replaced = reseal_values::<()>(&mut body, |_| Ok(Some("y".to_string()))).unwrap();
        assert_eq!(replaced, 1);
        // serde_json's own Drop is recursive: leak the test value instead.
        std::mem::forget(body);
    }
}
