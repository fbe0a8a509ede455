//! Conversions between `serde_json` values and protobuf `Struct`/`Value`, and
//! the Wren:IDM JSON form of a managed object (`_id`, `_rev`, attributes at top
//! level) that the CLI, conf files and scripts use.

use prost_types::value::Kind;
use prost_types::{ListValue, Struct, Value};
use serde_json::{Map, Number, Value as Json};

use crate::v1::ManagedObject;

/// What kind of JSON value this is, in words for an error message: "a
/// string", "an object", ….
pub fn describe(value: &Json) -> &'static str {
    match value {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

/// A JSON value as a protobuf `Value`.
pub fn to_proto_value(json: &Json) -> Value {
    let kind = match json {
        Json::Null => Kind::NullValue(0),
        Json::Bool(b) => Kind::BoolValue(*b),
        Json::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        Json::String(s) => Kind::StringValue(s.clone()),
        Json::Array(items) => Kind::ListValue(ListValue {
            values: items.iter().map(to_proto_value).collect(),
        }),
        Json::Object(map) => Kind::StructValue(to_proto_struct(map)),
    };
    Value { kind: Some(kind) }
}

/// A JSON object as a protobuf `Struct`.
pub fn to_proto_struct(map: &Map<String, Json>) -> Struct {
    Struct {
        fields: map
            .iter()
            .map(|(k, v)| (k.clone(), to_proto_value(v)))
            .collect(),
    }
}

/// A protobuf `Value` as JSON. Whole numbers come back as integers, so `5551234`
/// does not turn into `5551234.0` on its way through the wire.
pub fn from_proto_value(value: &Value) -> Json {
    match &value.kind {
        None | Some(Kind::NullValue(_)) => Json::Null,
        Some(Kind::BoolValue(b)) => Json::Bool(*b),
        Some(Kind::NumberValue(n)) => number_to_json(*n),
        Some(Kind::StringValue(s)) => Json::String(s.clone()),
        Some(Kind::ListValue(list)) => {
            Json::Array(list.values.iter().map(from_proto_value).collect())
        }
        Some(Kind::StructValue(s)) => Json::Object(from_proto_struct(s)),
    }
}

/// A protobuf `Struct` as a JSON object, keys sorted (protobuf maps are
/// unordered; prost keeps a `Struct`'s in a `BTreeMap`, which walks them in
/// order).
pub fn from_proto_struct(s: &Struct) -> Map<String, Json> {
    s.fields
        .iter()
        .map(|(k, v)| (k.clone(), from_proto_value(v)))
        .collect()
}

fn number_to_json(n: f64) -> Json {
    // 2^53: the largest range in which every integer is exact in an f64.
    const EXACT: f64 = 9_007_199_254_740_992.0;
    if n.fract() == 0.0 && n.abs() < EXACT {
        Json::Number(Number::from(n as i64))
    } else {
        Number::from_f64(n).map_or(Json::Null, Json::Number)
    }
}

/// The Wren:IDM form of a managed object: `_id`, `_rev` (a string, as Wren
/// writes it), then the attributes, then `_meta` with the timestamps.
pub fn object_to_wren_json(object: &ManagedObject) -> Json {
    let mut out = Map::new();
    out.insert("_id".into(), Json::String(object.id.clone()));
    out.insert("_rev".into(), Json::String(object.revision.to_string()));
    if let Some(attributes) = &object.attributes {
        out.extend(from_proto_struct(attributes));
    }
    let mut meta = Map::new();
    if let Some(t) = &object.create_time {
        meta.insert("created".into(), Json::String(t.to_string()));
    }
    if let Some(t) = &object.update_time {
        meta.insert("lastModified".into(), Json::String(t.to_string()));
    }
    if !meta.is_empty() {
        out.insert("_meta".into(), Json::Object(meta));
    }
    Json::Object(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_survives_the_wire_with_integers_intact() {
        let original = json!({"a": 5551234, "b": [true, null, "x", 1.5], "c": {"d": -3}});
        let back = Json::Object(from_proto_struct(&to_proto_struct(
            original.as_object().unwrap(),
        )));
        assert_eq!(back, original);
    }
}
