//! Wren:IDM patch operations (`add`, `remove`, `replace`, `increment`) on
//! `field` paths such as `/sn`, `/name/givenName`, `/members/-`, `/members/0`.

use serde_json::{Map, Value};

use super::ManagedError;

#[derive(Debug, Clone, PartialEq)]
pub enum Operation {
    Add,
    Remove,
    Replace,
    Increment,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PatchOp {
    pub operation: Operation,
    pub field: String,
    pub value: Option<Value>,
}

impl PatchOp {
    pub fn new(operation: &str, field: &str, value: Option<Value>) -> Result<Self, ManagedError> {
        let operation = match operation.to_ascii_lowercase().as_str() {
            "add" => Operation::Add,
            "remove" => Operation::Remove,
            "replace" => Operation::Replace,
            "increment" => Operation::Increment,
            other => {
                return Err(ManagedError::invalid(
                    "operation",
                    format!(
                        "unknown patch operation \"{other}\" (add, remove, replace, increment)"
                    ),
                ));
            }
        };
        if !field.starts_with('/') || field.len() < 2 {
            return Err(ManagedError::invalid(
                "field",
                format!("\"{field}\" is not a field path such as /sn"),
            ));
        }
        Ok(PatchOp {
            operation,
            field: field.to_string(),
            value,
        })
    }

    /// The top-level property this operation touches.
    pub fn property(&self) -> &str {
        self.segments().next().unwrap_or_default()
    }

    fn segments(&self) -> impl Iterator<Item = &str> {
        self.field[1..].split('/')
    }

    /// Applies the operation to `doc`.
    pub fn apply(&self, doc: &mut Map<String, Value>) -> Result<(), ManagedError> {
        let segments: Vec<String> = self.segments().map(unescape).collect();
        let (last, parents) = segments
            .split_last()
            .ok_or_else(|| self.error("empty path"))?;
        let mut container = Container::Object(doc);
        for segment in parents {
            container = container.child(segment, self)?;
        }
        let value = self.value.clone().unwrap_or(Value::Null);
        match self.operation {
            Operation::Replace | Operation::Add if value.is_null() => container.remove(last, None),
            Operation::Replace => container.set(last, value, false, self),
            Operation::Add => container.set(last, value, true, self),
            Operation::Remove => container.remove(last, self.value.as_ref()),
            Operation::Increment => {
                let by = value
                    .as_f64()
                    .ok_or_else(|| self.error("increment needs a number"))?;
                let current = container.get(last).cloned().unwrap_or(Value::from(0));
                let sum = match (current.as_i64(), value.as_i64()) {
                    (Some(a), Some(b)) => Value::from(a.saturating_add(b)),
                    _ => {
                        let a = current.as_f64().ok_or_else(|| {
                            self.error("increment of a value that is not a number")
                        })?;
                        serde_json::Number::from_f64(a + by)
                            .map(Value::Number)
                            .unwrap_or(Value::Null)
                    }
                };
                container.set(last, sum, false, self)
            }
        }
    }

    fn error(&self, message: &str) -> ManagedError {
        ManagedError::invalid(self.property(), format!("{}: {message}", self.field))
    }
}

/// JSON-pointer escapes: `~1` is `/`, `~0` is `~`.
fn unescape(segment: &str) -> String {
    segment.replace("~1", "/").replace("~0", "~")
}

enum Container<'a> {
    Object(&'a mut Map<String, Value>),
    Array(&'a mut Vec<Value>),
}

impl<'a> Container<'a> {
    fn child(self, segment: &str, op: &PatchOp) -> Result<Container<'a>, ManagedError> {
        let slot = match self {
            Container::Object(map) => map
                .entry(segment.to_string())
                .or_insert_with(|| Value::Object(Map::new())),
            Container::Array(items) => {
                let index = index(segment, items.len(), false)
                    .ok_or_else(|| op.error("no such array element"))?;
                &mut items[index]
            }
        };
        match slot {
            Value::Object(map) => Ok(Container::Object(map)),
            Value::Array(items) => Ok(Container::Array(items)),
            Value::Null => {
                *slot = Value::Object(Map::new());
                match slot {
                    Value::Object(map) => Ok(Container::Object(map)),
                    _ => Err(op.error("cannot descend")),
                }
            }
            _ => Err(op.error("cannot descend into a value that is not an object or array")),
        }
    }

    fn get(&self, segment: &str) -> Option<&Value> {
        match self {
            Container::Object(map) => map.get(segment),
            Container::Array(items) => {
                index(segment, items.len(), false).and_then(|i| items.get(i))
            }
        }
    }

    fn set(
        self,
        segment: &str,
        value: Value,
        insert: bool,
        op: &PatchOp,
    ) -> Result<(), ManagedError> {
        match self {
            Container::Object(map) => {
                map.insert(segment.to_string(), value);
            }
            Container::Array(items) => {
                let len = items.len();
                let position =
                    index(segment, len, insert).ok_or_else(|| op.error("no such array element"))?;
                if insert {
                    items.insert(position, value);
                } else {
                    items[position] = value;
                }
            }
        }
        Ok(())
    }

    fn remove(self, segment: &str, matching: Option<&Value>) -> Result<(), ManagedError> {
        match self {
            Container::Object(map) => match (map.get_mut(segment), matching) {
                (Some(Value::Array(items)), Some(wanted)) if !wanted.is_null() => {
                    let wanted: Vec<&Value> = match wanted {
                        Value::Array(many) => many.iter().collect(),
                        one => vec![one],
                    };
                    items.retain(|item| !wanted.contains(&item));
                }
                _ => {
                    map.remove(segment);
                }
            },
            Container::Array(items) => {
                if let Some(i) = index(segment, items.len(), false) {
                    items.remove(i);
                }
            }
        }
        Ok(())
    }
}

/// An array position: a number below `len` (or equal, when inserting), or `-`
/// for the end when inserting.
fn index(segment: &str, len: usize, insert: bool) -> Option<usize> {
    if segment == "-" {
        return insert.then_some(len);
    }
    let i: usize = segment.parse().ok()?;
    (i < len || (insert && i == len)).then_some(i)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn patch(doc: Value, ops: &[(&str, &str, Value)]) -> Value {
        let mut map = doc.as_object().unwrap().clone();
        for (op, field, value) in ops {
            PatchOp::new(op, field, Some(value.clone()))
                .unwrap()
                .apply(&mut map)
                .unwrap();
        }
        Value::Object(map)
    }

    #[test]
    fn wren_operations() {
        let doc = json!({"sn": "Snow", "n": 1, "members": ["a"]});
        assert_eq!(
            patch(
                doc,
                &[
                    ("replace", "/sn", json!("Stark")),
                    ("add", "/members/-", json!("b")),
                    ("add", "/name/givenName", json!("Jon")),
                    ("increment", "/n", json!(2)),
                    ("remove", "/members", json!("a")),
                ]
            ),
            json!({"sn": "Stark", "n": 3, "members": ["b"], "name": {"givenName": "Jon"}})
        );
    }

    #[test]
    fn bad_paths_are_refused() {
        assert!(PatchOp::new("replace", "sn", None).is_err());
        assert!(PatchOp::new("frobnicate", "/sn", None).is_err());
        let mut doc = json!({"members": []}).as_object().unwrap().clone();
        assert!(
            PatchOp::new("replace", "/members/3", Some(json!(1)))
                .unwrap()
                .apply(&mut doc)
                .is_err()
        );
    }
}
