//! A SCIM filter applied to a JSON object in memory: the core filters the
//! objects of connectors that cannot search (CSV) with it, and the gateway
//! the few documents it lists whole (schedules).
//!
//! Attribute names are matched exactly first and then ignoring case; `_id`
//! is the object's id when one is given apart. Strings compare as written
//! (case-sensitive), numbers as numbers; a multi-valued attribute matches
//! when one of its values does. Recursion follows only the filter's
//! nesting, which the parser bounds (`filter::MAX_DEPTH`).

use serde_json::{Map, Value};
use std::cmp::Ordering;

use crate::filter::{AttrPath, CompareOp, Filter, Value as Literal};

/// Whether `object` matches `filter`; `id`, if given, is what `_id` names
/// (otherwise the object's own `_id`).
pub fn matches(filter: &Filter, object: &Map<String, Value>, id: Option<&str>) -> bool {
    let id = id.map(|id| Value::String(id.to_string()));
    test(filter, &|path: &AttrPath| lookup(path, object, id.as_ref()))
}

fn test<'v>(filter: &Filter, resolve: &dyn Fn(&AttrPath) -> Vec<&'v Value>) -> bool {
    match filter {
        Filter::And(operands) => operands.iter().all(|f| test(f, resolve)),
        Filter::Or(operands) => operands.iter().any(|f| test(f, resolve)),
        Filter::Not(inner) => !test(inner, resolve),
        Filter::Present(path) => resolve(path).into_iter().any(present),
        Filter::Compare(path, op, literal) => {
            let values = resolve(path);
            if *op == CompareOp::Ne {
                // `ne`: no value equals (absent included, as SCIM says).
                return !values.iter().any(|v| compare(v, CompareOp::Eq, literal));
            }
            if values.is_empty() {
                return *op == CompareOp::Eq && *literal == Literal::Null;
            }
            values.iter().any(|v| compare(v, *op, literal))
        }
        Filter::ValuePath(path, inner) => resolve(path).into_iter().any(|element| {
            let Value::Object(fields) = element else {
                return false;
            };
            test(inner, &|sub: &AttrPath| lookup(sub, fields, None))
        }),
    }
}

/// The values at `path`: arrays spread, `attr.sub` read in each element.
fn lookup<'v>(
    path: &AttrPath,
    attributes: &'v Map<String, Value>,
    uid: Option<&'v Value>,
) -> Vec<&'v Value> {
    let top = if path.attr == "_id" && path.sub_attr.is_none() && uid.is_some() {
        uid
    } else {
        field(attributes, &path.attr)
    };
    let Some(top) = top else {
        return Vec::new();
    };
    let spread = |value: &'v Value| -> Vec<&'v Value> {
        match value {
            Value::Array(items) => items.iter().collect(),
            Value::Null => Vec::new(),
            single => vec![single],
        }
    };
    match &path.sub_attr {
        None => spread(top),
        Some(sub) => spread(top)
            .into_iter()
            .filter_map(|element| element.as_object().and_then(|o| field(o, sub)))
            .flat_map(spread)
            .collect(),
    }
}

fn field<'v>(attributes: &'v Map<String, Value>, name: &str) -> Option<&'v Value> {
    attributes.get(name).or_else(|| {
        attributes
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value)
    })
}

fn present(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
        _ => true,
    }
}

fn compare(value: &Value, op: CompareOp, literal: &Literal) -> bool {
    match (value, literal) {
        (Value::String(have), Literal::String(want)) => match op {
            CompareOp::Co => have.contains(want.as_str()),
            CompareOp::Sw => have.starts_with(want.as_str()),
            CompareOp::Ew => have.ends_with(want.as_str()),
            _ => ordered(have.as_str().cmp(want.as_str()), op),
        },
        (Value::Number(have), Literal::Number(want)) => match (have.as_f64(), want.as_f64()) {
            (Some(a), Some(b)) => a.partial_cmp(&b).is_some_and(|o| ordered(o, op)),
            _ => false,
        },
        // A CSV holds text: `age gt 30` compares "42" as a number.
        (Value::String(have), Literal::Number(want)) => {
            match (have.trim().parse::<f64>().ok(), want.as_f64()) {
                (Some(a), Some(b)) => a.partial_cmp(&b).is_some_and(|o| ordered(o, op)),
                _ => false,
            }
        }
        (Value::Bool(have), Literal::Bool(want)) => match op {
            CompareOp::Eq => have == want,
            _ => false,
        },
        (Value::String(have), Literal::Bool(want)) => {
            op == CompareOp::Eq && have.eq_ignore_ascii_case(if *want { "true" } else { "false" })
        }
        (Value::Null, Literal::Null) => op == CompareOp::Eq,
        _ => false,
    }
}

fn ordered(ordering: Ordering, op: CompareOp) -> bool {
    match op {
        CompareOp::Eq => ordering == Ordering::Equal,
        CompareOp::Ne => ordering != Ordering::Equal,
        CompareOp::Gt => ordering == Ordering::Greater,
        CompareOp::Ge => ordering != Ordering::Less,
        CompareOp::Lt => ordering == Ordering::Less,
        CompareOp::Le => ordering != Ordering::Greater,
        CompareOp::Co | CompareOp::Sw | CompareOp::Ew => false,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::filter::parse;
    use serde_json::json;

    fn object() -> Map<String, Value> {
        json!({
                "firstName": "Jon", "lastName": "Snow", "age": "42",
                "mail": ["jon@wall.example", "snow@north.example"],
                "emails": [{"type": "work", "value": "jon@wall.example"}],
                "empty": ""
        })
        .as_object()
        .cloned()
        .unwrap()
    }

    fn check(filter: &str) -> bool {
        matches(&parse(filter).unwrap(), &object(), Some("snow123"))
    }

    #[test]
    fn compares_the_system_attributes_as_written() {
        assert!(check(r#"_id eq "snow123""#));
        assert!(check(r#"firstName eq "Jon""#));
        assert!(check(r#"firstname eq "Jon""#), "names ignore case");
        assert!(!check(r#"firstName eq "jon""#), "values do not");
        assert!(check(r#"lastName sw "Sn" and lastName ew "ow""#));
        assert!(check(r#"mail co "north""#), "any value of a list");
        assert!(check("age gt 30 and age le 42"));
        assert!(check(r#"emails[type eq "work" and value co "wall"]"#));
        assert!(check(r#"emails.value eq "jon@wall.example""#));
        assert!(check(
            "firstName pr and not (empty pr) and not (missing pr)"
        ));
        assert!(check(r#"missing ne "x" and firstName ne "Arya""#));
        assert!(!check(r#"firstName eq "Arya" or lastName eq "Stark""#));
    }

    #[test]
    fn hostile_quoting_is_a_value_like_any_other() {
        assert!(!check(r#"firstName eq "Jon\" or \"1\" eq \"1""#));
    }

    #[test]
    fn without_an_id_apart_the_object_s_own_id_is_read() {
        let job = json!({"_id": "recon", "enabled": true})
            .as_object()
            .cloned()
            .unwrap();
        let f = parse(r#"_id eq "recon" and enabled eq true"#).unwrap();
        assert!(matches(&f, &job, None));
    }
}
