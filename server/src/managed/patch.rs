//! Wren:IDM patch operations (`add`, `remove`, `replace`, `increment`,
//! `copy`, `move`) on `field` paths such as `/sn`, `/name/givenName`,
//! `/members/-`, `/members/0`; `copy` and `move` read the value at `from`.

use serde_json::{Map, Value};

use super::ManagedError;

const SUPPORTED: &str = "add, remove, replace, increment, copy, move";

/// The deepest a patch may nest a value (its path's segments and the value's
/// own depth together): a stored object is walked recursively downstream,
/// and repeated moves into deep paths would otherwise nest without bound.
const MAX_DEPTH: usize = 64;
/// The longest field path a patch may name, in bytes.
const MAX_PATH: usize = 1024;

#[derive(Debug, Clone, PartialEq)]
pub enum Operation {
    Add,
    Remove,
    Replace,
    Increment,
    Copy,
    Move,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PatchOp {
    pub operation: Operation,
    pub field: String,
    pub value: Option<Value>,
    /// The source path of a `copy` or `move`; `None` for the others.
    pub from: Option<String>,
}

impl PatchOp {
    pub fn new(operation: &str, field: &str, value: Option<Value>) -> Result<Self, ManagedError> {
        Self::with_from(operation, field, None, value)
    }

    /// An operation with Wren's `from` as well: required by `copy` and
    /// `move`, refused on the others.
    pub fn with_from(
        operation: &str,
        field: &str,
        from: Option<&str>,
        value: Option<Value>,
    ) -> Result<Self, ManagedError> {
        let operation = parse_operation(operation)?;
        check_path("field", field)?;
        let from = match (&operation, from) {
            (Operation::Copy | Operation::Move, Some(from)) => {
                check_path("from", from)?;
                Some(from.to_string())
            }
            (Operation::Copy | Operation::Move, None) => {
                return Err(ManagedError::invalid(
                    "from",
                    format!("{field}: copy and move need \"from\", the path to read"),
                ));
            }
            (_, Some(_)) => {
                return Err(ManagedError::invalid(
                    "from",
                    format!("{field}: \"from\" is only for copy and move"),
                ));
            }
            (_, None) => None,
        };
        if operation == Operation::Move
            && let Some(from) = &from
            && field.starts_with(&format!("{from}/"))
        {
            return Err(ManagedError::invalid(
                "from",
                format!("{from} cannot be moved into itself ({field})"),
            ));
        }
        Ok(PatchOp {
            operation,
            field: field.to_string(),
            value,
            from,
        })
    }

    /// The top-level property this operation writes.
    pub fn property(&self) -> &str {
        top_level(&self.field)
    }

    /// The top-level property a `copy` or `move` reads.
    pub fn source_property(&self) -> Option<&str> {
        self.from.as_deref().map(top_level)
    }

    /// Refuses a `copy` or `move` that reads or writes a private property:
    /// its value is sealed apart from the document, so copying it out would
    /// expose it and copying into it would skip the sealing.
    pub fn refuse_private(&self, is_private: impl Fn(&str) -> bool) -> Result<(), ManagedError> {
        let Some(source) = self.source_property() else {
            return Ok(());
        };
        if is_private(source) {
            return Err(ManagedError::invalid(
                source,
                format!("{source} is private: copying or moving it would expose its value"),
            ));
        }
        let target = self.property();
        if is_private(target) {
            return Err(ManagedError::invalid(
                target,
                format!("{target} is private: set it with replace and its value, not copy or move"),
            ));
        }
        Ok(())
    }

    /// The value a `copy` or `move` would write, read from `doc` as it is now.
    pub fn source_value<'a>(&self, doc: &'a Map<String, Value>) -> Option<&'a Value> {
        self.from
            .as_deref()
            .and_then(|from| value_at(doc, from))
            .filter(|value| !value.is_null())
    }

    /// Applies the operation to `doc`.
    pub fn apply(&self, doc: &mut Map<String, Value>) -> Result<(), ManagedError> {
        match self.operation {
            Operation::Copy => {
                let value = self.read_from(doc)?;
                self.apply_at(doc, Some(value))
            }
            Operation::Move => {
                let value = self.read_from(doc)?;
                self.remove_from(doc)?;
                self.apply_at(doc, Some(value))
            }
            _ => self.apply_at(doc, self.value.clone()),
        }
    }

    /// Applies the operation at `field` with `value` (a `copy` or `move` as
    /// an `add` of the value read).
    fn apply_at(
        &self,
        doc: &mut Map<String, Value>,
        value: Option<Value>,
    ) -> Result<(), ManagedError> {
        let value = value.unwrap_or(Value::Null);
        if self.field.matches('/').count() + depth(&value) > MAX_DEPTH {
            return Err(self.error(&format!(
                "the value would be nested deeper than {MAX_DEPTH} levels"
            )));
        }
        let (container, last) = self.parent_of(&self.field, doc)?;
        match self.operation {
            Operation::Replace | Operation::Add if value.is_null() => container.remove(&last, None),
            Operation::Replace => container.set(&last, value, false, self),
            Operation::Add | Operation::Copy | Operation::Move => {
                container.set(&last, value, true, self)
            }
            Operation::Remove => container.remove(&last, self.value.as_ref()),
            Operation::Increment => {
                let by = value
                    .as_f64()
                    .ok_or_else(|| self.error("increment needs a number"))?;
                let current = container.get(&last).cloned().unwrap_or(Value::from(0));
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
                container.set(&last, sum, false, self)
            }
        }
    }

    fn read_from(&self, doc: &Map<String, Value>) -> Result<Value, ManagedError> {
        self.source_value(doc).cloned().ok_or_else(|| {
            let from = self.from.as_deref().unwrap_or_default();
            ManagedError::invalid(
                top_level(from),
                format!(
                    "{}: there is no value at {from} to {}",
                    self.field,
                    self.verb()
                ),
            )
        })
    }

    fn remove_from(&self, doc: &mut Map<String, Value>) -> Result<(), ManagedError> {
        let from = self.from.as_deref().unwrap_or_default();
        let (container, last) = self.parent_of(from, doc)?;
        container.remove(&last, None)
    }

    /// The container holding the last segment of `path`, and that segment;
    /// missing objects on the way are created.
    fn parent_of<'a>(
        &self,
        path: &str,
        doc: &'a mut Map<String, Value>,
    ) -> Result<(Container<'a>, String), ManagedError> {
        let mut segments = segments(path);
        let last = segments.pop().ok_or_else(|| self.error("empty path"))?;
        let mut container = Container::Object(doc);
        for segment in &segments {
            container = container.child(segment, self)?;
        }
        Ok((container, last))
    }

    fn verb(&self) -> &'static str {
        match self.operation {
            Operation::Move => "move",
            _ => "copy",
        }
    }

    fn error(&self, message: &str) -> ManagedError {
        ManagedError::invalid(self.property(), format!("{}: {message}", self.field))
    }
}

fn parse_operation(operation: &str) -> Result<Operation, ManagedError> {
    match operation.to_ascii_lowercase().as_str() {
        "add" => Ok(Operation::Add),
        "remove" => Ok(Operation::Remove),
        "replace" => Ok(Operation::Replace),
        "increment" => Ok(Operation::Increment),
        "copy" => Ok(Operation::Copy),
        "move" => Ok(Operation::Move),
        "transform" => Err(ManagedError::invalid(
            "operation",
            format!(
                "patch operation \"transform\" is not supported: it runs a script, \
                 and idm runs no scripts in a patch ({SUPPORTED})"
            ),
        )),
        other => Err(ManagedError::invalid(
            "operation",
            format!("unknown patch operation \"{other}\" ({SUPPORTED})"),
        )),
    }
}

fn check_path(name: &str, path: &str) -> Result<(), ManagedError> {
    if path.len() > MAX_PATH || path.matches('/').count() > MAX_DEPTH {
        return Err(ManagedError::invalid(
            name,
            format!("a field path may have at most {MAX_PATH} bytes and {MAX_DEPTH} segments"),
        ));
    }
    if !path.starts_with('/') || path.len() < 2 {
        return Err(ManagedError::invalid(
            name,
            format!("\"{path}\" is not a field path such as /sn"),
        ));
    }
    Ok(())
}

/// How deeply `value` nests arrays and objects (a scalar: 0), walked
/// without recursion.
fn depth(value: &Value) -> usize {
    let mut deepest = 0;
    let mut pending = vec![(value, 0)];
    while let Some((value, level)) = pending.pop() {
        let children: Box<dyn Iterator<Item = &Value>> = match value {
            Value::Array(items) => Box::new(items.iter()),
            Value::Object(map) => Box::new(map.values()),
            _ => continue,
        };
        deepest = deepest.max(level + 1);
        pending.extend(children.map(|child| (child, level + 1)));
    }
    deepest
}

/// The first segment of a checked path: `/name/givenName` → `name`.
fn top_level(path: &str) -> &str {
    path.get(1..)
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_default()
}

fn segments(path: &str) -> Vec<String> {
    path.get(1..)
        .unwrap_or_default()
        .split('/')
        .map(unescape)
        .collect()
}

/// The value at `path` in `doc`, creating nothing on the way.
fn value_at<'a>(doc: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    let segments = segments(path);
    let (first, rest) = segments.split_first()?;
    rest.iter()
        .try_fold(doc.get(first)?, |value, segment| match value {
            Value::Object(map) => map.get(segment),
            Value::Array(items) => items.get(index(segment, items.len(), false)?),
            _ => None,
        })
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
#[allow(clippy::unwrap_used, clippy::expect_used)]
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

    fn relocate(doc: Value, operation: &str, from: &str, field: &str) -> Result<Value, String> {
        let mut map = doc.as_object().unwrap().clone();
        PatchOp::with_from(operation, field, Some(from), None)
            .and_then(|op| op.apply(&mut map))
            .map(|()| Value::Object(map))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn copy_writes_the_value_at_from_to_field_and_keeps_it() {
        let doc = json!({"sn": "Snow", "name": {"givenName": "Jon"}, "members": ["a", "b"]});
        assert_eq!(
            relocate(doc.clone(), "copy", "/sn", "/displayName").unwrap(),
            json!({"sn": "Snow", "displayName": "Snow", "name": {"givenName": "Jon"},
                   "members": ["a", "b"]})
        );
        assert_eq!(
            relocate(doc.clone(), "copy", "/name/givenName", "/nick/first").unwrap()["nick"],
            json!({"first": "Jon"})
        );
        assert_eq!(
            relocate(doc, "copy", "/members/1", "/members/-").unwrap()["members"],
            json!(["a", "b", "b"])
        );
    }

    #[test]
    fn move_writes_the_value_at_from_to_field_and_removes_it() {
        let doc = json!({"sn": "Snow", "members": ["a", "b", "c"]});
        assert_eq!(
            relocate(doc.clone(), "move", "/sn", "/name/familyName").unwrap(),
            json!({"name": {"familyName": "Snow"}, "members": ["a", "b", "c"]})
        );
        assert_eq!(
            relocate(doc.clone(), "move", "/members/0", "/members/-").unwrap()["members"],
            json!(["b", "c", "a"])
        );
        assert_eq!(relocate(doc.clone(), "move", "/sn", "/sn").unwrap(), doc);
    }

    #[test]
    fn copy_or_move_from_a_missing_value_is_refused_naming_from() {
        let doc = json!({"sn": "Snow", "gone": null, "members": []});
        for (operation, from) in [
            ("copy", "/mail"),
            ("move", "/mail"),
            ("copy", "/gone"),
            ("move", "/members/0"),
            ("copy", "/sn/deeper"),
        ] {
            let error = relocate(doc.clone(), operation, from, "/target").unwrap_err();
            assert!(
                error.contains(&format!("there is no value at {from} to {operation}")),
                "{operation} {from}: {error}"
            );
        }
        let mut map = doc.as_object().unwrap().clone();
        let error = PatchOp::with_from("copy", "/a", Some("/mail"), None)
            .unwrap()
            .apply(&mut map)
            .unwrap_err();
        assert!(
            matches!(&error, ManagedError::Invalid { property, .. } if property == "mail"),
            "{error:?}"
        );
        assert_eq!(Value::Object(map), doc, "a refused copy changes nothing");
    }

    #[test]
    fn from_is_required_by_copy_and_move_and_refused_elsewhere() {
        for operation in ["copy", "move"] {
            let error = PatchOp::new(operation, "/a", None).unwrap_err().to_string();
            assert!(error.contains("need \"from\""), "{error}");
            assert!(PatchOp::with_from(operation, "/a", Some("b"), None).is_err());
        }
        let error = PatchOp::with_from("replace", "/a", Some("/b"), Some(json!(1)))
            .unwrap_err()
            .to_string();
        assert!(error.contains("only for copy and move"), "{error}");
        let error = PatchOp::with_from("move", "/a/b", Some("/a"), None)
            .unwrap_err()
            .to_string();
        assert!(error.contains("cannot be moved into itself"), "{error}");
        assert!(PatchOp::with_from("copy", "/a/b", Some("/a"), None).is_ok());
    }

    #[test]
    fn a_private_property_is_not_copied_or_moved() {
        let private = |name: &str| name == "password";
        for operation in ["copy", "move"] {
            let out = PatchOp::with_from(operation, "/description", Some("/password"), None)
                .unwrap()
                .refuse_private(private)
                .unwrap_err();
            assert!(
                matches!(&out, ManagedError::Invalid { property, message }
                    if property == "password" && message.contains("would expose its value")),
                "{out:?}"
            );
            let into = PatchOp::with_from(operation, "/password", Some("/mail"), None)
                .unwrap()
                .refuse_private(private)
                .unwrap_err();
            assert!(
                matches!(&into, ManagedError::Invalid { property, message }
                    if property == "password" && message.contains("set it with replace")),
                "{into:?}"
            );
            let between = PatchOp::with_from(operation, "/b", Some("/a"), None).unwrap();
            assert!(between.refuse_private(private).is_ok());
        }
        let set = PatchOp::new("replace", "/password", Some(json!("New-Pass-1"))).unwrap();
        assert!(set.refuse_private(private).is_ok());
    }

    #[test]
    fn transform_is_refused_because_it_runs_a_script() {
        let error = PatchOp::new("transform", "/sn", Some(json!({"script": {}})))
            .unwrap_err()
            .to_string();
        assert!(error.contains("runs a script"), "{error}");
        assert!(error.contains("copy, move"), "{error}");
    }

    #[test]
    fn nothing_nests_past_the_depth_limit() {
        let deep_path = format!("/{}", vec!["x"; 5000].join("/"));
        let error = PatchOp::new("add", &deep_path, Some(json!(1))).unwrap_err();
        assert!(error.to_string().contains("at most"), "{error}");
        // Moves into paths that are each allowed cannot pile up depth.
        let mut doc = json!({"k0": {"b": 1}}).as_object().cloned().unwrap();
        let mut refused = None;
        for i in 1..10 {
            let field = format!("/k{i}/{}", vec!["x"; 39].join("/"));
            let from = format!("/k{}", i - 1);
            let op = PatchOp::with_from("move", &field, Some(&from), None).unwrap();
            if let Err(e) = op.apply(&mut doc) {
                refused = Some((i, e));
                break;
            }
        }
        let (at, refused) = refused.expect("a move past the limit is refused");
        assert_eq!(
            at, 2,
            "the first move nests 41 deep, the second would nest 81"
        );
        assert!(refused.to_string().contains("deeper than"), "{refused}");
        assert_eq!(depth(&json!({"a": [1, {"b": []}]})), 4);
        assert_eq!(depth(&json!(1)), 0);
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
